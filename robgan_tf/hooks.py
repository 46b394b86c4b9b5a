"""What a training or fine-tuning loop does besides stepping, as hooks it calls (the loop is loops.Loop).

A hook's `before_step(loop, step)` and `after_step(loop, step, logs)` run around every step; time spent in hooks
is kept out of the training clock. Hooks that read the model call `loop.ensure_finite(step, logs)` first, so a
diverged step is named before anything is logged from it.
Tests and users add their own (`loops.train(run, hooks=[...])`).
"""
from __future__ import annotations

import time

import tensorflow as tf


def log(msg):
    print(msg, flush=True)


class Hook:
    """Called around every step; override what you need. chief_only hooks run on the chief only."""

    chief_only = False

    def before_step(self, loop, step):
        pass

    def after_step(self, loop, step, logs):
        pass


class Every(Hook):
    """fn(step) every `every` steps (and at the last step when at_end), on the chief, inside the stage's
    TensorBoard writer; skipped on a step the loop stops at (SIGTERM / Ctrl-C), where only the checkpoint matters.
    fn(step, train_seconds) when with_seconds: the seconds spent training so far, hooks excluded."""

    chief_only = True

    def __init__(self, every, fn, at_end=False, with_seconds=False):
        self.every, self.fn, self.at_end, self.with_seconds = every, fn, at_end, with_seconds

    def after_step(self, loop, step, logs):
        if loop.stopping or not (step % self.every == 0 or (self.at_end and step == loop.total)):
            return
        loop.ensure_finite(step, logs)
        with loop.writer.as_default(step=step):
            self.fn(step, loop.train_seconds()) if self.with_seconds else self.fn(step)


class Progress(Hook):
    """Prints and logs (step, metrics, learning rates, it/s, ETA) every `every` steps, at the last and at a stop,
    and resets the metrics."""

    def __init__(self, every, learning_rates):
        self.every, self.learning_rates = every, learning_rates

    def before_step(self, loop, step):
        if step == loop.start + 1:
            self.last_t, self.last_step = time.time(), loop.start

    def after_step(self, loop, step, logs):
        if not (step % self.every == 0 or step == loop.total or loop.stopping):
            return
        loop.ensure_finite(step, logs)
        now = time.time()
        rate = (step - self.last_step) / max(now - self.last_t, 1e-9)
        parts = " ".join(f"{k}={float(v):.3f}" for k, v in logs.items())
        eta = time.strftime("%H:%M:%S", time.gmtime(max((loop.total - step) / max(rate, 1e-9), 0)))
        log(f"[{loop.name}] {step}/{loop.total} {parts} | {rate:.2f} it/s | ETA {eta}")
        with loop.writer.as_default(step=step):
            for k, v in {**logs, **self.learning_rates(), "iterations_per_second": rate}.items():
                tf.summary.scalar(k, float(v))
        for m in loop.model.metrics:
            m.reset_state()
        self.last_t, self.last_step = now, step


class Profile(Hook):
    """Traces steps first..last with the TensorFlow profiler into the stage's log folder (TensorBoard's Profile
    tab), each step a named region of the trace viewer."""

    chief_only = True

    def __init__(self, first, last):
        self.first, self.last, self.trace = first, last, None

    def before_step(self, loop, step):
        if step == self.first:
            tf.profiler.experimental.start(loop.log_dir)
        if self.first <= step <= self.last:
            self.trace = tf.profiler.experimental.Trace(loop.name, step_num=step, _r=1)
            self.trace.__enter__()

    def after_step(self, loop, step, logs):
        if self.trace is not None:
            tf.nest.map_structure(lambda t: t.numpy(), logs)  # wait for the step inside its trace
            self.trace.__exit__(None, None, None)
            self.trace = None
        if step == self.last:
            tf.profiler.experimental.stop()
            log(f"[{loop.name}] profiled iterations {self.first}..{self.last}: tensorboard --logdir "
                f"{loop.log_dir} (Profile tab)")


class KeepEvery(Hook):
    """Saves every `every`-th step's checkpoint in a second, never-rotated series (`manager`)."""

    def __init__(self, every, manager):
        self.every, self.manager = every, manager

    def after_step(self, loop, step, logs):
        if step % self.every == 0:
            loop.save(self.manager, step, logs)
