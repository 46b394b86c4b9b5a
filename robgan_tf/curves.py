"""Metrics over training: every training checkpoint a run holds, scored, as records against D updates and training
seconds, and their plot (the paper's Fig. 8 axes)."""
from __future__ import annotations

import glob
import os
import re

import numpy as np

from robgan_tf import storage
from robgan_tf.layout import RunDir

AXES = (("d_updates", "D updates"), ("train_seconds", "training seconds"))


def checkpoints_of(logdir):
    """[(iteration, checkpoint prefix)] of every training checkpoint in a run, the never-rotated series of
    --keep_checkpoint_every (checkpoints/kept) and the latest ones (checkpoints/), oldest first, one per iteration."""
    found = {}
    layout = RunDir(logdir)
    for folder in (layout.kept, layout.checkpoints):
        for index in glob.glob(os.path.join(folder, "ckpt-*.index")):
            match = re.fullmatch(r"ckpt-(\d+)\.index", os.path.basename(index))
            if match:
                found.setdefault(int(match.group(1)), index[: -len(".index")])
    return sorted(found.items())


def training_seconds(logdir, stage="train"):
    """{iteration: training seconds at its checkpoint} from the stage's clock (the last record of an iteration wins:
    a resumed run that redid an iteration overwrote that checkpoint too)."""
    from robgan_tf.loops import clock_records

    return {r["iteration"]: r["train_seconds"] for r in clock_records(logdir, stage)}


def score_checkpoints(run, score, log=print):
    """Restores each training checkpoint of `run` in turn and returns [record]: iteration, d_updates,
    train_seconds (None for runs older than the clock), checkpoint, and what score(run) returns for it."""
    logdir = run.cfg.logdir
    seconds = training_seconds(logdir)
    points = checkpoints_of(logdir)
    if not points:
        raise FileNotFoundError(f"no training checkpoint in {logdir}/checkpoints: train first.")
    records = []
    for i, (iteration, prefix) in enumerate(points):
        run.checkpoint.restore(prefix).assert_existing_objects_matched()
        record = {"iteration": iteration, "d_updates": iteration * run.cfg.n_dis,
                  "train_seconds": seconds.get(iteration), "checkpoint": prefix, **score(run)}
        log(f"[curve] {i + 1}/{len(points)} iteration {iteration}: " + ", ".join(
            f"{k} {v:.4g}" for k, v in record.items() if isinstance(v, float)))
        records.append(record)
    return records


def metric_names(records):
    """The metrics the records share: their float values other than the axes (integers are counts and settings,
    such as num_samples)."""
    skip = {"iteration", "d_updates", "train_seconds"}
    keys = [k for k, v in records[0].items() if k not in skip and isinstance(v, float)]
    return [k for k in keys if all(isinstance(r.get(k), float) for r in records)]


def plot_curves(curves, path, metrics=None):
    """One row per metric, columns: against D updates and against training seconds. curves: {label: [record]};
    several records per x (seeds) are drawn as their mean with a band of +- one standard deviation. The seconds
    column is left out when no record has them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = next(iter(curves.values()))
    metrics = metrics or metric_names(first)
    axes = [a for a in AXES if any(r.get(a[0]) is not None for rs in curves.values() for r in rs)]
    fig, grid = plt.subplots(len(metrics), len(axes), figsize=(5 * len(axes), 3 * len(metrics)), squeeze=False)
    for row, metric in enumerate(metrics):
        for col, (key, label) in enumerate(axes):
            ax = grid[row][col]
            for name, records in curves.items():
                x, mean, std = summarize(records, key, metric)
                ax.plot(x, mean, "o-", ms=3, label=name)
                if np.any(std > 0):
                    ax.fill_between(x, mean - std, mean + std, alpha=0.2)
            ax.set_xlabel(label)
            ax.set_ylabel(metric)
            ax.grid(alpha=0.3)
    grid[0][0].legend()
    fig.tight_layout()
    storage.atomic_save(path, lambda tmp: fig.savefig(tmp, dpi=100))
    plt.close(fig)


def summarize(records, key, metric):
    """(x, mean, std) of `metric` over records grouped by iteration (several seeds), x the mean of `key` in each
    group (D updates are equal across seeds; training seconds are not)."""
    groups = {}
    for r in records:
        if r.get(key) is not None:
            groups.setdefault(r["iteration"], []).append(r)
    its = sorted(groups)
    x = np.array([np.mean([r[key] for r in groups[i]]) for i in its], dtype=float)
    values = [np.array([r[metric] for r in groups[i]], dtype=float) for i in its]
    return x, np.array([v.mean() for v in values]), np.array([v.std(ddof=1) if len(v) > 1 else 0.0 for v in values])
