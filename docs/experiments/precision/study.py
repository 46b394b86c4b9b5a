"""Does bfloat16 give the results float32 gives? (docs/PERFORMANCE.md, "bfloat16: equal results")

    git archive HEAD | tar -x -C CODE          # the code the study runs, frozen
    python study.py --code=CODE --runs=RUNS --data=PATH/cifar10.npz [--slots=1] [--dry_run]
    python study.py --code=CODE --runs=RUNS --data=PATH/cifar10.npz --collect=raw   # then: python analyze.py raw

Three measurements, each float32 against mixed_bfloat16:
1. the digits default pipeline (`robgan-pipeline`, no flags but the seed and the precision), seeds 0, 1, 2: clean and
   robust accuracy at each eps of the final table, and the independent judge's score of the generator;
2. PGD on one fixed classifier (seed 0's float32 run, fine-tuned), the paper protocol on the whole digits test split,
   with the classifier computing in float32 and in bfloat16 (`robgan-evaluate --precision`);
3. the authors' networks on the real CIFAR-10 at 32 px: their train.py recipe (configs/cifar10_robgan_trainpy.cfg:
   the `authors` preset, batch 64, lr 2e-4, 5 attack steps) with n_dis 1 as in robgan-benchmark's reference
   iteration, 300 iterations, seeds 0 and 1: the logged losses.

Jobs run with the first CIFAR study's resumable scheduler (../cifar10_claims/study.py): subprocesses of the archived
code, one TF thread each; a restarted study skips finished jobs and resumes training from its checkpoints.
"""
import glob
import json
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "cifar10_claims"))
import study as first  # noqa: E402  the scheduler

PRECISIONS = ("float32", "mixed_bfloat16")
DIGITS_SEEDS = (0, 1, 2)
CIFAR_SEEDS = (0, 1)
# The authors' train.py recipe (configs/cifar10_robgan_trainpy.cfg) with n_dis 1, as robgan-benchmark's reference
# iteration, and 300 iterations.
CIFAR = ["--n_dis=1", "--train_iterations=300", "--finetune_steps=0", "--log_every=10", "--checkpoint_every=50",
         "--sample_every=300", "--keep_checkpoint_every=0"]


def jobs(runs, data, code):
    """[(name, dependencies, command)]: the digits pipelines, the fixed-classifier PGD, then CIFAR-10."""
    todo = []
    for seed in DIGITS_SEEDS:
        for p in PRECISIONS:
            todo.append((f"digits_{p}_s{seed}", (), ["robgan_tf.cli.pipeline", f"--logdir={runs}/digits_{p}_s{seed}",
                                                     f"--seed={seed}", f"--precision={p}"]))
    for p in PRECISIONS:
        todo.append((f"pgd_{p}", ("digits_float32_s0",), [
            "robgan_tf.cli.evaluate", f"--model={runs}/digits_float32_s0", "--protocol=paper", "--noprogress",
            f"--precision={p}", f"--json_out={runs}/results/pgd_{p}.json"]))
    for seed in CIFAR_SEEDS:
        for p in PRECISIONS:
            todo.append((f"cifar_{p}_s{seed}", (), ["robgan_tf.cli.train", f"--flagfile={code}/configs/"
                                                    "cifar10_robgan_trainpy.cfg", f"--data_dir={data}", *CIFAR,
                                                    f"--seed={seed}", f"--precision={p}",
                                                    f"--logdir={runs}/cifar_{p}_s{seed}"]))
    return todo


def losses_of(logdir):
    """{tag: [(iteration, value)]} of the scalars a run logged under train/ (TensorBoard event files)."""
    import tensorflow as tf

    out = {}
    for path in sorted(glob.glob(os.path.join(logdir, "train", "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for v in event.summary.value:
                value = v.simple_value if v.HasField("simple_value") else (
                    tf.make_ndarray(v.tensor) if v.HasField("tensor") else None)
                if value is not None and np.asarray(value).dtype.kind == "f" and np.size(value) == 1:
                    # scalars only (not the settings' text table); a resumed run's repeat overwrites
                    out.setdefault(v.tag, {})[int(event.step)] = float(value)
    return {tag: sorted(points.items()) for tag, points in out.items()}


def collect(runs, out):
    """The small files the analysis reads: results and summaries, and each CIFAR run's logged scalars as JSON."""
    os.makedirs(out, exist_ok=True)
    for path in glob.glob(f"{runs}/results/*.json"):
        shutil.copy(path, out)
    for run in sorted(os.listdir(runs)):
        if run.startswith("digits_") and os.path.exists(f"{runs}/done/{run}"):
            for rel in ("eval/robustness.json", "eval/summary.json"):
                shutil.copy(f"{runs}/{run}/{rel}", f"{out}/{run}_{os.path.basename(rel)}")
        if run.startswith("cifar_") and os.path.isdir(f"{runs}/{run}/train"):
            with open(f"{out}/{run}_scalars.json", "w") as f:
                json.dump({"done": os.path.exists(f"{runs}/done/{run}"), "scalars": losses_of(f"{runs}/{run}")}, f)
    first.write_done_list(runs, out)


def main():
    args = first.arguments(__doc__, "Instead of running: copy what the finished jobs wrote into this folder.").parse_args()
    runs, data = os.path.abspath(args.runs), os.path.abspath(args.data)
    if args.collect:
        return collect(runs, args.collect)
    code = os.path.abspath(args.code)
    first.schedule(jobs(runs, data, code), runs, code, args.slots, args.dry_run)


if __name__ == "__main__":
    main()
