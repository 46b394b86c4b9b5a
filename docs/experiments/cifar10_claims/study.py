"""The CIFAR-10 claims study (README.md beside this file): every run it makes, in one resumable job list.

    git archive HEAD | tar -x -C CODE          # the code the study runs, frozen
    python study.py --code=CODE --runs=RUNS --data=PATH/cifar10.npz [--slots=2] [--dry_run]

Jobs run as subprocesses of the archived code (PYTHONPATH=CODE), --slots at a time, each with one TF thread (two
one-thread runs side by side do 1.4x the work of one two-thread run on the 2-core machine the study was made on).
A job that finished leaves RUNS/done/NAME; a killed study is restarted with the same command: finished jobs are
skipped, jobs still running are adopted, training and fine-tuning resume from their checkpoints, an unfinished
evaluation starts over.
"""
import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time

SEEDS_AC = (0, 1, 2)  # (a) and (c): three seeds
SEEDS_BD = (0, 1)  # (b) and (d): two seeds
ITERATIONS = 2000  # D updates of every training run (n_dis 1): 2.6 epochs of the 49,000 training images
FT_STEPS = 400  # eq. 10 fine-tuning steps at batch 128 (about one epoch), the same for both methods of (c)

RECIPE = [  # the authors' CIFAR recipe (configs/cifar10_robgan.cfg) on the tiny networks, shortened
    "--dataset=cifar10", "--arch=tiny", "--resolution=32", "--batch_size=64", "--n_dis=1",
    "--loss_weights=authors", "--gan_loss=bce", "--augment=crop_flip", "--dequantize",
    "--attack_eps=0.07", "--attack_steps=5", "--attack_step_size=0.0078", "--noattack_random_start",
    "--lr_g=2e-4", "--lr_d=2e-4", "--optimizer=adam", "--adam_epsilon=1e-8",
    "--lr_schedule=halve", f"--halve_every={ITERATIONS // 2}", "--reset_adam",
    f"--train_iterations={ITERATIONS}", "--val_examples=1000",
    "--checkpoint_every=250", "--keep_checkpoint_every=500", "--log_every=50", "--sample_every=1000",
    f"--finetune_steps={FT_STEPS}", "--finetune_batch_size=128", "--finetune_lr=1e-3", "--finetune_eps=0.0625",
    "--finetune_reset_adam",
]


def jobs(runs, data, reference):
    """[(name, dependencies, command or callable)] in priority order."""
    quality = ["--quality_every=250", "--quality_backend=reference", f"--quality_weights={reference}",
               "--quality_samples=1000"]
    out = []

    def train(name, method, seed, extra=()):
        out.append((f"train_{name}", (), ["robgan_tf.cli.train", f"--data_dir={data}", *RECIPE,
                                          f"--method={method}", f"--seed={seed}", f"--logdir={runs}/{name}",
                                          *extra]))

    def evaluate(job, dep, run, *args):
        out.append((job, (dep,), ["robgan_tf.cli.evaluate", f"--model={runs}/{run}", "--noprogress",
                                  f"--json_out={runs}/results/{job}.json", *args]))

    paper = ("--protocol=paper", "--num_examples=1000")
    gen = ("--stage=trained", "--protocol=none", "--quality=reference", f"--reference_classifier={reference}",
           "--num_samples=5000")  # the generator is not fine-tuned; --stage=trained: no need to wait for it
    strong = ("--protocol=strong,autoattack", "--eps=8/255", "--num_examples=500")
    aa = ("--protocol=autoattack", "--eps=8/255", "--num_examples=500")
    for seed in SEEDS_AC:
        for method in ("robgan", "gan", "advtrain"):
            name = f"{method}_s{seed}"
            train(name, method, seed, quality if method != "advtrain" else ())
            if method == "gan":
                evaluate(f"quality_{name}", f"train_{name}", name, *gen)
                continue
            if method == "robgan":
                evaluate(f"quality_{name}", f"train_{name}", name, *gen)
                evaluate(f"paper_{name}_noft", f"train_{name}", name, "--stage=trained", *paper)
                if seed in SEEDS_BD:  # (d): the same trained run fine-tuned with lambda = 0
                    out.append((f"copy_{name}_ft0", (f"train_{name}",), ("copy", name, f"{name}_ft0")))
                    out.append((f"finetune_{name}_ft0", (f"copy_{name}_ft0", f"paper_{name}_noft"),
                                ["robgan_tf.cli.finetune", f"--logdir={runs}/{name}_ft0"]))
                    evaluate(f"paper_{name}_ft0", f"finetune_{name}_ft0", f"{name}_ft0", *paper)
            deps = [f"train_{name}"]
            lam = []
            if method == "robgan":  # after the un-fine-tuned evaluation and the copy, which read the trained D
                deps += [f"paper_{name}_noft"] + ([f"copy_{name}_ft0"] if seed in SEEDS_BD else [])
                lam = ["--finetune_lambda=0.3"]
            out.append((f"finetune_{name}", tuple(deps), ["robgan_tf.cli.finetune", f"--logdir={runs}/{name}", *lam]))
            evaluate(f"paper_{name}", f"finetune_{name}", name, *paper)
            # AutoAttack on every seed; the strong protocol (11 of the 13 minutes on seed 0) on seed 0 only
            evaluate(f"strong_{name}", f"finetune_{name}", name, *(strong if seed == 0 else aa))
            evaluate(f"gap_{name}", f"finetune_{name}", name, "--protocol=none", "--analysis=gap",
                     "--num_examples=500", f"--plot_out={runs}/results/gap_{name}.png")
    for seed in SEEDS_BD:  # (b): the AC-GAN loss (eq. 8) against the split loss (eq. 9) of robgan_s*
        name = f"robgan_acgan_s{seed}"
        train(name, "robgan", seed, ["--loss_variant=acgan", *quality])
        evaluate(f"quality_{name}", f"train_{name}", name, *gen)
    return out


def copy_trained(runs, source, target, finetune_lambda=0.0):
    """The trained run (config, training checkpoints, logs) as a new run directory, before any fine-tuning, set to
    fine-tune with another lambda (a run refuses a changed setting, and training does not depend on this one)."""
    tmp = f"{runs}/{target}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(f"{runs}/{source}", tmp, ignore=shutil.ignore_patterns("finetune_checkpoints", "export", "*.lock"))
    config = json.load(open(f"{tmp}/config.json"))
    config["finetune_lambda"] = finetune_lambda
    json.dump(config, open(f"{tmp}/config.json", "w"), indent=2, sort_keys=True)
    shutil.rmtree(f"{runs}/{target}", ignore_errors=True)
    os.rename(tmp, f"{runs}/{target}")


def arguments(doc, collect_help=None):
    """The drivers' common command line: --code, --runs, --data, --reference, --slots, --dry_run, and with
    `collect_help` --collect (copy the finished jobs' small files into a folder instead of running)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--code", required=True, help="The archived code (git archive of a commit).")
    parser.add_argument("--runs", required=True, help="Where the runs and results go.")
    parser.add_argument("--data", required=True, help="cifar10.npz")
    parser.add_argument("--reference", default="", help="The reference classifier (.keras); default: "
                        "RUNS/reference/cifar10_tiny.keras, trained first if missing.")
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--dry_run", action="store_true")
    if collect_help:
        parser.add_argument("--collect", default="", help=collect_help)
    return parser


def write_done_list(runs, out):
    """OUT/done.txt: every finished job with the time it finished."""
    with open(f"{out}/done.txt", "w") as f:
        for name in sorted(os.listdir(f"{runs}/done")):
            f.write(f"{name} {open(f'{runs}/done/{name}').read().strip()}\n")


def main():
    args = arguments(__doc__).parse_args()
    runs, code = os.path.abspath(args.runs), os.path.abspath(args.code)
    reference = args.reference or f"{runs}/reference/cifar10_tiny.keras"
    # Every training, fine-tuning, paper-protocol, quality and gap job first; the strong + AutoAttack evaluations
    # (15-20 minutes each here) last, so that a session that ends early has (a)-(e) on every seed.
    todo = sorted(jobs(runs, args.data, reference), key=lambda job: job[0].startswith("strong_"))
    schedule(with_reference(todo, reference, args.data), runs, code, args.slots, args.dry_run)


def with_reference(todo, reference, data):
    """The job list with the reference classifier's training first (and every job after it) if it is missing."""
    if os.path.exists(reference):
        return todo
    train = ("reference", (), ["robgan_tf.cli.train_reference", "--dataset=cifar10", f"--data_dir={data}",
                               "--epochs=8", "--augment=crop_flip", "--seed=0", f"--out={reference}"])
    return [train] + [(n, (*d, "reference"), c) for n, d, c in todo]


def schedule(todo, runs, code, slots, dry_run=False):
    """Runs the jobs [(name, dependencies, command)], `slots` at a time, in list order as their dependencies
    finish; a command ("copy", source, target[, lambda]) copies a trained run (copy_trained)."""
    if dry_run:
        for name, deps, command in todo:
            print(name, "<-", ",".join(deps), "\n   ", " ".join(map(str, command)))
        return
    for sub in ("done", "logs", "results", "running", "exit"):
        os.makedirs(f"{runs}/{sub}", exist_ok=True)
    done = lambda name: os.path.exists(f"{runs}/done/{name}")  # noqa: E731
    env = dict(os.environ, PYTHONPATH=code, TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="1",
               TF_CPP_MIN_LOG_LEVEL="2")
    # Jobs run in their own sessions and leave their exit status in RUNS/exit/NAME, so a restarted driver adopts
    # the jobs still running (RUNS/running/NAME holds the pid) instead of starting them twice; a job that died
    # without a status (killed) is started again, and training and fine-tuning resume from their checkpoints.
    running, failed = {}, set()
    ready_jobs = lambda: [(n, c) for n, d, c in todo  # noqa: E731
                          if not done(n) and n not in running and n not in failed and all(map(done, d))]
    for name in os.listdir(f"{runs}/running"):
        pid = int(open(f"{runs}/running/{name}").read())
        if _alive(pid):
            running[name] = pid
            print(f"[study] {time.strftime('%H:%M:%S')} {name} still running (pid {pid}): adopted", flush=True)
        else:
            os.remove(f"{runs}/running/{name}")
    while True:
        for name, pid in list(running.items()):
            status = f"{runs}/exit/{name}"
            if os.path.exists(status):
                code_ = int(open(status).read() or 1)
                os.remove(status)
            elif _alive(pid):
                continue
            else:
                code_ = None  # killed: start it again
            del running[name]
            os.remove(f"{runs}/running/{name}")
            if code_ is None:
                print(f"[study] {name} ended without a status; it will be started again", flush=True)
            elif code_:  # the jobs that need it wait; the others go on
                failed.add(name)
                print(f"[study] {name} failed (exit {code_}); see {runs}/logs/{name}.log", flush=True)
            else:
                open(f"{runs}/done/{name}", "w").write(time.strftime("%Y-%m-%dT%H:%M:%S\n"))
                print(f"[study] {time.strftime('%H:%M:%S')} {name} done", flush=True)
        ready = ready_jobs()
        if not ready and not running:
            left = [n for n, _, _ in todo if not done(n)]
            print(f"[study] failed: {sorted(failed)}; not run: {left}" if left else "[study] all jobs done", flush=True)
            sys.exit(1 if left else 0)
        while ready and len(running) < slots:
            name, command = ready.pop(0)
            if command[0] == "copy":
                copy_trained(runs, *command[1:])
                open(f"{runs}/done/{name}", "w").write(time.strftime("%Y-%m-%dT%H:%M:%S\n"))
                ready = ready_jobs()  # what waited for the copy may come before the rest of the list
                continue
            print(f"[study] {time.strftime('%H:%M:%S')} {name} started", flush=True)
            line = " ".join(shlex.quote(a) for a in [sys.executable, "-m", *command])
            status = shlex.quote(f"{runs}/exit/{name}")
            script = f"{line} >> {shlex.quote(f'{runs}/logs/{name}.log')} 2>&1; echo $? > {status}.tmp && " \
                     f"mv {status}.tmp {status}"
            proc = subprocess.Popen(["sh", "-c", script], env=env, cwd=runs, start_new_session=True)
            running[name] = proc.pid
            open(f"{runs}/running/{name}", "w").write(str(proc.pid))
        time.sleep(5)


def _alive(pid):
    try:
        os.waitpid(pid, os.WNOHANG)  # reap our own finished children; not ours: ChildProcessError
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


if __name__ == "__main__":
    main()
