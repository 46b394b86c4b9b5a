"""The longer CIFAR-10 study (README.md beside this file): robgan and advtrain for 10,000 D updates, robust
accuracy at every kept checkpoint, and eq. 10 fine-tuning from the checkpoints at 2,000 and 10,000 D updates.

    git archive HEAD | tar -x -C CODE          # the code the study runs, frozen
    python study.py --code=CODE --runs=RUNS --data=PATH/cifar10.npz [--slots=2] [--only=JOB,...] [--dry_run]

Each run trains in two legs of one schedule (the lr is halved at 5,000 D updates whatever the leg): the first
stops at 2,000 D updates, where a copy of the run is taken for the early fine-tuning; the second resumes the same
run to 10,000. Length is the one setting a run may change on resume, so both legs are one run.

Jobs run as subprocesses of the archived code (PYTHONPATH=CODE), --slots at a time, each with one TF thread. A job
that finished leaves RUNS/done/NAME; a killed study is restarted with the same command: finished jobs are skipped,
jobs still running are adopted, training and fine-tuning resume from their checkpoints, an unfinished evaluation
starts over. The scheduler is the first study's (../cifar10_claims/study.py), imported from there.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "cifar10_claims"))
import study as first  # noqa: E402  the first study's scheduler and run copy

SEEDS = (0, 1, 2)
EARLY, LATE = 2000, 10000  # D updates (n_dis 1): the fine-tuning points
FT_STEPS = 400  # eq. 10 fine-tuning steps at batch 128, the same for both methods, as in the first study

RECIPE = [  # the first study's recipe (the authors' CIFAR settings on the tiny networks), at 5x the length
    "--dataset=cifar10", "--arch=tiny", "--resolution=32", "--batch_size=64", "--n_dis=1",
    "--loss_weights=authors", "--gan_loss=bce", "--augment=crop_flip", "--dequantize",
    "--attack_eps=0.07", "--attack_steps=5", "--attack_step_size=0.0078", "--noattack_random_start",
    "--lr_g=2e-4", "--lr_d=2e-4", "--optimizer=adam", "--adam_epsilon=1e-8",
    "--lr_schedule=halve", f"--halve_every={LATE // 2}", "--reset_adam", "--val_examples=1000",
    "--checkpoint_every=250", "--keep_checkpoint_every=1000", "--log_every=100", "--sample_every=2000",
    f"--finetune_steps={FT_STEPS}", "--finetune_batch_size=128", "--finetune_lr=1e-3", "--finetune_eps=0.0625",
    "--finetune_reset_adam",
]


def jobs(runs, data, reference):
    """[(name, dependencies, command)] in priority order: the early leg, its fine-tunings and their evaluations
    first (a complete 2,000-update point on every seed), then seed by seed the long legs and everything after
    them, AutoAttack last."""
    quality = ["--quality_every=1000", "--quality_backend=reference", f"--quality_weights={reference}",
               "--quality_samples=1000"]
    paper = ("--protocol=paper", "--num_examples=1000")
    aa = ("--protocol=autoattack", "--eps=8/255", "--num_examples=500")
    early, legs, late, attacks = [], [], [], []

    def evaluate(into, job, dep, run, *args):
        into.append((job, (dep,), ["robgan_tf.cli.evaluate", f"--model={runs}/{run}", "--noprogress",
                                   f"--json_out={runs}/results/{job}.json", *args]))

    for seed in SEEDS:
        for method in ("robgan", "advtrain"):
            name = f"{method}_s{seed}"
            train = ["robgan_tf.cli.train", f"--data_dir={data}", *RECIPE, f"--method={method}", f"--seed={seed}",
                     f"--logdir={runs}/{name}", *(quality if method == "robgan" else ())]
            lams = ("0.3", "0") if method == "robgan" else ("0.3",)  # lambda has no effect without a generator
            early.append((f"train_{name}_to{EARLY}", (), train + [f"--train_iterations={EARLY}"]))
            copies = []
            for point in (EARLY, LATE):
                for lam in lams:
                    copy = f"{name}_at{point}_lam{lam}"
                    into = early if point == EARLY else late
                    dep = f"train_{name}_to{point}"
                    into.append((f"copy_{copy}", (dep,), ("copy", name, copy, float(lam))))
                    into.append((f"finetune_{copy}", (f"copy_{copy}",),
                                 ["robgan_tf.cli.finetune", f"--logdir={runs}/{copy}"]))
                    evaluate(into, f"paper_{copy}", f"finetune_{copy}", copy, *paper)
                    evaluate(attacks, f"autoattack_{copy}", f"finetune_{copy}", copy, *aa)
                    if point == EARLY:
                        copies.append(f"copy_{copy}")
            # the long leg resumes the run only after the early copies were taken from it
            legs.append((f"train_{name}_to{LATE}", tuple(copies), train + [f"--train_iterations={LATE}"]))
            evaluate(late, f"curve_{name}", f"train_{name}_to{LATE}", name, "--all_checkpoints", *paper)
    # seed by seed after the early point: a seed's long legs, then everything at 10,000 for it, so that each seed's
    # whole trend is complete before the next one's starts (stable: the order within a seed stays as listed)
    seed_of = lambda job: int(job[0].split("_s")[1].split("_")[0])  # noqa: E731
    return early + sorted(legs + late, key=seed_of) + attacks


def collect(runs, out):
    """Copies the small files the analysis reads (never checkpoints) from RUNS into `out`, flat and prefixed by run."""
    import glob
    import shutil

    os.makedirs(out, exist_ok=True)
    for path in glob.glob(f"{runs}/results/*.json") + glob.glob(f"{runs}/results/*.png"):
        shutil.copy(path, out)
    for run in sorted(os.listdir(runs)):
        for rel in ("config.json", "history.jsonl", "eval/quality_curve.jsonl", "eval/train_seconds.jsonl",
                    "eval/finetune_seconds.jsonl", "finetune_checkpoints/base.json"):
            if os.path.isfile(f"{runs}/{run}/{rel}"):
                shutil.copy(f"{runs}/{run}/{rel}", f"{out}/{rel.replace('/', '_').replace('eval_', '')}_{run}"
                            .replace(".json_", "_").replace(".jsonl_", "_") + os.path.splitext(rel)[1])
    if os.path.isfile(f"{runs}/reference/cifar10_tiny.keras.json"):  # its sha256 and test accuracy
        shutil.copy(f"{runs}/reference/cifar10_tiny.keras.json", out)
    if os.path.isfile(f"{runs}/driver.log"):  # the jobs' start times, the restarts and the pauses
        shutil.copy(f"{runs}/driver.log", out)
    first.write_done_list(runs, out)


def main():
    parser = first.arguments(__doc__, "Instead of running: copy what the finished jobs wrote (results, each run's "
                             "config, quality curve and clock, the jobs' done times, the driver's log) into this folder.")
    parser.add_argument("--only", default="", help="Comma-separated job names: run only these and the jobs they "
                        "need, in this order of priority (to rebuild part of a lost run directory).")
    args = parser.parse_args()
    runs, data = os.path.abspath(args.runs), os.path.abspath(args.data)
    if args.collect:
        return collect(runs, args.collect)
    reference = os.path.abspath(args.reference or f"{runs}/reference/cifar10_tiny.keras")
    todo = first.with_reference(jobs(runs, data, reference), reference, data)
    if args.only:
        todo = only(todo, args.only.split(","), reference)
    first.schedule(todo, runs, os.path.abspath(args.code), args.slots, args.dry_run)


def only(todo, wanted, reference):
    """The jobs named in `wanted` and every job they need, in the priority of `wanted`'s order (a job goes with the
    first wanted job that needs it), for rebuilding part of a lost run directory. The reference classifier stays a
    dependency only of the jobs whose command uses it."""
    uses_reference = lambda command: any(reference in str(arg) for arg in command)  # noqa: E731
    by_name = {name: (tuple(d for d in deps if d != "reference" or uses_reference(command)), command)
               for name, deps, command in todo}
    unknown = [name for name in wanted if name not in by_name]
    if unknown:
        sys.exit(f"--only: no such job: {', '.join(unknown)}; --dry_run lists the jobs")
    priority = {}

    def visit(name, rank):
        if name not in priority:
            priority[name] = rank
            for dep in by_name[name][0]:
                visit(dep, rank)

    for rank, name in enumerate(wanted):
        visit(name, rank)
    # stable: within one wanted job's share, the study's own order
    return sorted(((name, *by_name[name]) for name, _, _ in todo if name in priority),
                  key=lambda job: priority[job[0]])


if __name__ == "__main__":
    main()
