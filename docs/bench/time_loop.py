"""Seconds per training iteration of loops.train at --log_every=25 (PERFORMANCE.md: reading metrics back).

    PYTHONPATH=PACKAGE_COPY python docs/bench/time_loop.py tiny 300
    PYTHONPATH=PACKAGE_COPY python docs/bench/time_loop.py reference 15   # needs /tmp/rt/synth.npz: uint8 CIFAR-shaped
"""
import dataclasses, json, os, sys, tempfile, time
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
from robgan_tf import loops, runtime
from robgan_tf import run as run_lib
from robgan_tf.experiment import ExperimentConfig
arch = sys.argv[1]
kw = dict(train_iterations=int(sys.argv[2]), log_every=25, checkpoint_every=10**6, sample_every=10**6, finetune_steps=0)
if arch == "reference":
    kw.update(dataset="npz", data_dir="/tmp/rt/synth.npz", arch="reference", batch_size=64, attack_steps=5, n_dis=1)
spec = ExperimentConfig(logdir=tempfile.mkdtemp(), **kw).resolve()
runtime.setup_runtime(spec)
run = run_lib.Run(spec)
import io, contextlib


def lasting(iterations):  # the same run, trained to `iterations` (the spec is frozen: a changed copy)
    return dataclasses.replace(spec, train=dataclasses.replace(spec.train, train_steps=iterations * spec.n_dis))


run.cfg = lasting(5)
with contextlib.redirect_stdout(io.StringIO()):
    loops.train(run)  # warm-up: tracing
run.cfg = lasting(5 + kw["train_iterations"])
t = time.perf_counter()
with contextlib.redirect_stdout(io.StringIO()):
    loops.train(run)
dt = time.perf_counter() - t
print(json.dumps({"arch": arch, "iterations": kw["train_iterations"], "s_per_iter": dt / kw["train_iterations"]}))
