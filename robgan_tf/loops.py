"""The training and fine-tuning loops: one skeleton (resume, step, non-finite stop, progress and
TensorBoard, in-training evaluation, checkpoints) that both stages run with their own pieces."""
from __future__ import annotations

import math
import signal
import threading
import time

import numpy as np
import tensorflow as tf

from robgan_tf import precision as precision_lib
from robgan_tf import data as data_lib
from robgan_tf import models, quality, storage
from robgan_tf.gap import gap_analysis
from robgan_tf.hooks import Every, Hook, KeepEvery, Profile, Progress
from robgan_tf.hooks import log as _log
from robgan_tf.layout import RunDir
from robgan_tf.robustness import accuracy_under_attack
from robgan_tf.run import FinetuneRun, Run, named_checkpoint
from robgan_tf.spec import ConfigError
from robgan_tf.runtime import distributed_iterator, is_chief
from robgan_tf.samples import sample_grid
from robgan_tf.training import current_lr, make_distributed_step


class TrainingDiverged(RuntimeError):
    """A loss became NaN or inf; nothing was written over the last good checkpoint."""


class Interrupted(RuntimeError):
    """SIGTERM (preemption, a scheduler) or Ctrl-C stopped a loop after its current step, which was checkpointed;
    `signum` is the signal (the process then exits with 128 + signum, as shells expect)."""

    def __init__(self, message, signum):
        super().__init__(message)
        self.signum = signum


class _StopRequests:
    """SIGTERM and the first SIGINT (Ctrl-C) only ask the loop to stop after the step under way; a second Ctrl-C
    interrupts at once. Installed only in the main thread (signal handlers can be set nowhere else)."""

    def __init__(self):
        self.signum, self._previous = None, {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.request(signum)

    def request(self, signum):
        """What the signal does: the loop stops after the step under way (a second Ctrl-C: at once)."""
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        again = " (Ctrl-C again to stop at once, without one)" if signum == signal.SIGINT else ""
        _log(f"[signal] {signal.Signals(signum).name}: stopping after this step and saving a checkpoint{again}")

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class _NonFiniteMarker:
    """Remembers, on the device, the first step whose metrics were not finite, so the loop reads a value back
    only at log and checkpoint steps (no per-step host round trip) and still names the step that diverged."""

    def __init__(self):
        self.first = tf.Variable(-1, dtype=tf.int64, trainable=False)
        self.mark = tf.function(self._mark, reduce_retracing=True, autograph=False)

    def _mark(self, logs, step):
        finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(tf.cast(v, tf.float32))) for v in logs.values()])
        self.first.assign(tf.where(tf.logical_and(tf.logical_not(finite), self.first < 0),
                                   tf.cast(step, tf.int64), self.first))

    def first_bad(self):
        return int(self.first.numpy())


def _weights_finite(variables):
    return bool(tf.reduce_all([tf.reduce_all(tf.math.is_finite(tf.cast(v, tf.float32))) for v in variables]))


def _record_config(cfg, writer):
    with writer.as_default():
        rows = "\n".join(f"| {k} | {v} |" for k, v in sorted(cfg.settings.items()))
        tf.summary.text("config", "| flag | value |\n|---|---|\n" + rows, step=0)


class _RecordConfig(Hook):
    """The settings as a TensorBoard text table, once, when a run starts."""

    chief_only = True

    def before_step(self, loop, step):
        if step == 1:
            _record_config(loop.cfg, loop.writer)


def log_gap(classifier, run, eps, step):
    """TensorBoard scalars of the generalization gap (paper Fig. 2/6): robust accuracy and mean LLV, train vs
    held-out, on --monitor_examples examples of each split. Held-out is the validation split when the run has
    one (then only the final evaluation touches the test split), else the test split; the tags say which
    (gap/val_... or gap/test_...)."""
    held = "val" if run.val_source is not None else "test"
    gap = gap_analysis(classifier, run.train_source, run.monitor_source, eps_grid=(eps,),
                       num_examples=run.cfg.monitor_examples, steps=10, verbose=False)
    tf.summary.scalar("gap/train_robust_accuracy", gap["train_accuracy"][0], step=step)
    tf.summary.scalar(f"gap/{held}_robust_accuracy", gap["test_accuracy"][0], step=step)
    tf.summary.scalar("gap/train_llv_mean", gap["llv_mean"]["train"], step=step)
    tf.summary.scalar(f"gap/{held}_llv_mean", gap["llv_mean"]["test"], step=step)


def clock_path(logdir, stage="train"):
    """Where a stage records its training seconds at each checkpoint: {"iteration", "train_seconds"} lines."""
    return RunDir(logdir).clock(stage)


def clock_records(logdir, stage="train"):
    """The stage's clock records whose iteration is an integer and seconds a number; a damaged line is skipped
    (the clock only feeds the time axes of curves)."""
    return [r for r in storage.read_jsonl(clock_path(logdir, stage), required=("iteration", "train_seconds"))
            if type(r["iteration"]) is int and isinstance(r["train_seconds"], (int, float))
            and not isinstance(r["train_seconds"], bool)]


def train_seconds_at(logdir, step, stage="train"):
    """Seconds spent training up to the checkpoint of `step` (monitoring, scoring and checkpointing excluded,
    summed over resumes), from the stage's clock; None when the run recorded none at or before that step."""
    done = [r for r in clock_records(logdir, stage) if r["iteration"] <= step]
    return max(done, key=lambda r: r["iteration"])["train_seconds"] if done else None


class Loop:
    """One stage's loop, training or fine-tuning: steps from step_var to `total`, resuming where the checkpoint
    left it; what else happens at each step comes from `hooks` (robgan_tf.hooks: progress, monitors, scores,
    sample grids, kept checkpoints, profiling). The loop itself owns what resuming depends on: the checkpoint every
    checkpoint_every steps and at the end, the non-finite stop, the training clock and SIGTERM / Ctrl-C.

    dataset(start) gives the stage's input pipeline from a step; watched are the variables that must be finite
    before a checkpoint; advice() says what to do after a divergence.
    """

    def __init__(self, run, *, name, unit, total, step_var, manager, model, dataset, watched, advice, hooks=()):
        self.run, self.cfg, self.name, self.unit, self.total = run, run.cfg, name, unit, total
        self.step_var, self.manager, self.model, self.dataset = step_var, manager, model, dataset
        self.watched, self.advice = watched, advice
        self.chief = is_chief(run.strategy)
        self.hooks = [h for h in hooks if self.chief or not h.chief_only]
        self.log_dir = RunDir(self.cfg.logdir).logs(name)
        self.start, self.stopping, self.saved_at = int(step_var.numpy()), False, None

    def ensure_finite(self, step, logs):
        """Raises TrainingDiverged naming the first step whose metrics were not finite (one read-back)."""
        bad = self.marker.first_bad()
        if bad >= 0:
            now = {k: float(v) for k, v in logs.items()}
            raise TrainingDiverged(f"non-finite loss at {self.unit} {bad} (at {self.unit} {step}: {now}). "
                                   + self.advice())

    def save(self, manager, step, logs):
        """Checkpoints `step` into `manager` once its metrics and the watched weights are finite."""
        self.ensure_finite(step, logs)
        if not _weights_finite(self.watched):
            raise TrainingDiverged(f"non-finite weights at {self.unit} {step}; not saved. " + self.advice())
        storage.save_checkpoint(manager, step)
        self.saved_at = step

    def train_seconds(self):
        """Seconds spent in training steps up to the end of the current step (hooks and checkpoints excluded),
        summed over resumes."""
        return self.offset + self.step_end - self.t0 - self.overhead

    def run_steps(self):
        """Runs the loop; returns the last step's metrics ({} when there was nothing to do)."""
        cfg = self.cfg
        if self.start >= self.total:
            _log(f"[{self.name}] already at {self.unit} {self.start} of {self.total}; nothing to do")
            return {}
        iterator = distributed_iterator(self.run.strategy, self.dataset(self.start))
        step_fn = make_distributed_step(self.model, self.run.strategy, jit_compile=cfg.jit_compile)
        self.writer = (tf.summary.create_file_writer(self.log_dir) if self.chief else tf.summary.create_noop_writer())
        self.marker = _NonFiniteMarker()
        # The clock goes on from the checkpoint resumed from (time after it, lost to a crash, is not counted).
        self.offset = train_seconds_at(cfg.logdir, self.start, self.name) or 0.0
        self.t0, self.overhead, logs = time.time(), 0.0, {}
        with _StopRequests() as stop:
            self.stop_requests = stop  # hooks may ask for a stop as the signals do
            for s in range(self.start + 1, self.total + 1):
                for hook in self.hooks:
                    hook.before_step(self, s)
                logs = step_fn(iterator)
                self.step_var.assign(s)
                self.marker.mark(logs, tf.constant(s, tf.int64))  # a tensor: a Python int would retrace
                self.step_end = time.time()
                self.stopping = stop.signum is not None
                for hook in self.hooks:
                    hook.after_step(self, s, logs)
                self._checkpoint(s, logs)
                self.overhead += time.time() - self.step_end
                if self.stopping:
                    self._stopped(s, stop.signum)
        self.writer.flush()
        _log(f"[{self.name}] done: {self.total} {self.unit}s in {time.time() - self.t0:.0f}s")
        return {k: float(v) for k, v in logs.items()}

    def _checkpoint(self, s, logs):
        if s % self.cfg.checkpoint_every == 0 or s == self.total or self.stopping:
            self.save(self.manager, s, logs)
        if self.chief and self.saved_at == s:  # the losses too: a divergence's advice skips blown-up checkpoints
            storage.append_jsonl(clock_path(self.cfg.logdir, self.name), {
                "iteration": s, "train_seconds": round(self.train_seconds(), 3),
                "metrics": {k: float(v) for k, v in logs.items()}})

    def _stopped(self, s, signum):
        self.writer.flush()
        how = "Rerun the same command to resume." if self.chief else "The chief's checkpoint is the one to resume."
        raise Interrupted(f"[{self.name}] stopped by {signal.Signals(signum).name} after {self.unit} {s} of "
                          f"{self.total}; checkpoint saved ({self.manager.latest_checkpoint}). {how}", signum)


def quality_scorer(run):
    """fn(iteration, train_seconds) scoring the current generator (EMA copy when on) for --quality_every: IS, FID,
    KID and mean label accuracy under the chosen backend, logged as quality/... and appended to
    LOGDIR/eval/quality_curve.jsonl."""
    cfg = run.cfg
    backend = quality.make_backend(cfg.quality_backend, run.model.classifier, cfg.quality_weights)
    layout = RunDir(cfg.logdir)
    curve = layout.quality_curve
    cache = quality.stats_cache_path(layout.eval, backend.name, cfg.dataset, "train")

    def score(step, seconds):  # an Every hook's fn, with the seconds spent training
        g = models.sampler(precision_lib.float32_copy(run.sampling_generator()), cfg.g_statistics)
        point = quality.curve_point(backend, g, run.train_source, cfg.quality_samples, cache)
        record = {"iteration": step, "d_updates": step * cfg.n_dis, "train_seconds": round(seconds, 2),
                  **point,
                  "num_samples": cfg.quality_samples, "g_statistics": cfg.g_statistics, "backend": backend.name,
                  "weights_sha256": getattr(backend, "sha256", None)}
        for key in ("inception_score", "fid", "kid", "label_accuracy"):
            tf.summary.scalar(f"quality/{key}", record[key])
        storage.append_jsonl(curve, record)

    return score


def sane_checkpoints(logdir, stage, checkpoints):
    """The checkpoints (prefixes ending in -N) whose losses, recorded when they were saved, were finite and within
    10x the median (at least 1) of the same metric over the records before them: the ones worth resuming from after
    a divergence (the last finite checkpoint before a NaN has often blown up already). Checkpoints without a record
    (older runs) count as sane."""
    records = {r["iteration"]: r.get("metrics") for r in clock_records(logdir, stage)}
    history, sane = {}, set()
    for iteration in sorted(records):
        metrics = records[iteration] if isinstance(records[iteration], dict) else {}
        ok = True
        for k, v in metrics.items():
            v = float(v) if isinstance(v, (int, float)) else float("nan")
            past = history.setdefault(k, [])
            if not math.isfinite(v) or (past and abs(v) > 10 * max(1.0, float(np.median(past)))):
                ok = False
            past.append(abs(v) if math.isfinite(v) else float("inf"))
        if ok:
            sane.add(iteration)
    return [c for c in checkpoints if int(c.rsplit("-", 1)[1]) not in records or int(c.rsplit("-", 1)[1]) in sane]


def _advice(manager, logdir, flags, stage):
    sane = sane_checkpoints(logdir, stage, manager.checkpoints)
    last = manager.latest_checkpoint
    if sane:
        where = (f"Nothing was saved over the checkpoints. The newest whose losses were still sane is {sane[-1]}"
                 + ("" if sane[-1] == last else f" (the later {last} had blown up already)")
                 + f": rerun the same command with {flags} --resume_from={sane[-1]} to resume from it")
    elif last:
        where = (f"Every checkpoint kept here had blown-up losses already (newest {last}); start again in a new "
                 f"--logdir with {flags}, or resume from an earlier kept one (--resume_from=LOGDIR/checkpoints/kept/"
                 "ckpt-N)")
    else:
        where = f"No checkpoint had been written yet. Rerun the same command with {flags} to start again"
    return where + f"; the change is recorded in {RunDir(logdir).history}. Check the data too."


def train(run: Run, hooks=()):
    """Trains to cfg.iterations, resuming from the latest checkpoint (or --resume_from); `hooks` (robgan_tf.hooks)
    run besides the stage's own. Returns the final metrics."""
    extra_hooks = hooks
    cfg, model = run.cfg, run.model
    named = named_checkpoint(cfg)
    if named and named[0] != "train":
        raise ConfigError(f"--resume_from={named[1]} is a fine-tuning checkpoint; training resumes from a training "
                          "one (LOGDIR/checkpoints/ or checkpoints/kept/). To continue that fine-tuning, run "
                          "robgan-finetune with it.")
    latest = run.restore()
    if latest:
        _log(f"[train] resuming from {latest} at iteration {int(run.step.numpy())}")

    def learning_rates():
        lrs = {"lr_d": current_lr(model.d_optimizer)}
        if model.g_optimizer is not None:
            lrs["lr_g"] = current_lr(model.g_optimizer)
        return lrs

    def monitor(step):
        if run.generator is not None:
            tf.summary.image("samples", sample_grid(run.sampling_generator())[None],
                             step=step)
        log_gap(model.classifier, run, run.train_config.attack.eps, step)

    hooks = [_RecordConfig(), Progress(cfg.log_every, learning_rates)]
    if cfg.sample_every:
        hooks.append(Every(cfg.sample_every, monitor, at_end=True))
    if cfg.quality_every:
        hooks.append(Every(cfg.quality_every, quality_scorer(run), with_seconds=True))
    if run.kept_manager:
        hooks.append(KeepEvery(cfg.keep_checkpoint_every, run.kept_manager))
    if cfg.profile:
        hooks.append(Profile(*cfg.profile))
    lower = f"lower learning rates (e.g. --lr_d={cfg.train.lr_d / 2:g} --lr_g={cfg.train.lr_g / 2:g})"
    loop = Loop(
        run, name="train", unit="iteration", total=cfg.iterations, step_var=run.step, manager=run.manager,
        model=model, dataset=lambda start: data_lib.train_dataset(
            run.train_source, model.examples_per_step(cfg.batch_size), seed=cfg.seed, start_step=start,
            augment=cfg.augmentation, dequantize=cfg.dequantize),
        watched=run.discriminator.weights + (run.generator.weights if run.generator is not None else []),
        advice=lambda: _advice(run.manager, cfg.logdir, lower, "train"), hooks=[*hooks, *extra_hooks])
    return loop.run_steps()


def finetune(run: Run, hooks=()):
    """Fine-tunes the classifier view (eq. 10), resuming from its latest checkpoint; `hooks` (robgan_tf.hooks) run
    besides the stage's own. Returns the FinetuneRun."""
    cfg = run.cfg
    if not cfg.finetune_steps:
        raise ConfigError("--finetune_steps=0: this run does not fine-tune; give a number of steps.")
    ft = FinetuneRun(run)
    if ft.superseded():  # trained further since: fine-tune the newer weights, keeping the old fine-tuning
        old_base, kept = ft.base_iteration(), ft.set_aside()
        _log(f"[finetune] the run has trained from iteration {old_base} to {int(run.step.numpy())} since the last "
             f"fine-tuning; fine-tuning the newer weights (the earlier fine-tuning is kept in {kept})")
    latest = ft.restore()  # else: start from the trained discriminator FinetuneRun restored
    if latest:
        _log(f"[finetune] resuming from {latest} at step {int(ft.step.numpy())}")
    else:
        ft.record_base()
    eps = ft.config.attack.eps

    split = "val" if run.val_source is not None else "test"

    def monitor(step):
        n = cfg.monitor_examples
        tf.summary.scalar(f"{split}_clean_accuracy", accuracy_under_attack(
            ft.classifier, run.monitor_source, eps=0.0, steps=0, num_examples=n))
        robust = accuracy_under_attack(ft.classifier, run.monitor_source, eps=eps, steps=10, num_examples=n)
        tf.summary.scalar(f"{split}_robust_accuracy_eps{eps:g}", robust)
        if run.val_source is not None and ft.note_validation(step, robust, eps):  # never selects on the test split
            _log(f"[finetune] step {step}: best validation robust accuracy so far, {robust:.2%}; kept in {ft.best_dir}")
        log_gap(ft.classifier, run, eps, step)

    Loop(run, name="finetune", unit="fine-tuning step", total=cfg.finetune_steps, step_var=ft.step,
         manager=ft.manager, model=ft.tuner, dataset=lambda start: data_lib.train_dataset(
             run.train_source, cfg.finetune_batch, seed=cfg.seed + 17, start_step=start, augment=cfg.augmentation),
         watched=run.discriminator.weights,
         advice=lambda: _advice(ft.manager, cfg.logdir, f"a lower --finetune_lr (e.g. {cfg.finetune.lr / 2:g})",
                                "finetune"),
         hooks=[Progress(cfg.log_every, lambda: {"lr": current_lr(ft.tuner.optimizer)}),
                Every(cfg.log_every * 4, monitor, at_end=True), *hooks]).run_steps()
    return ft
