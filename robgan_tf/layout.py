"""The run directory's layout: every file and folder of a run, named in this one place.

    LOGDIR/
      config.json            the full settings (a rerun with incompatible settings is refused)
      history.jsonl          every setting changed on a resume
      data.json              where each split came from, as of the last opening
      .lock                  held while a process writes the run
      checkpoints/           G, D, EMA weights, both optimizers, RNG state and the iteration
        kept/                every --keep_checkpoint_every-th, never rotated
      finetune_checkpoints/  eq. 10: the classifier, its optimizer, RNG, step and the frozen generator
        base.json            the training checkpoint the fine-tuning started from
        best/                the best validation checkpoint and best.json
      train/ finetune/ eval/ TensorBoard event files
      eval/                  robustness.json, summary.json, quality_curve.jsonl, checkpoint_curve.json,
                             train_seconds.jsonl / finetune_seconds.jsonl (the training clocks), FID statistics
      samples.png            a sample grid
      export/                SavedModels in TF Serving's layout (export.py)
"""
from __future__ import annotations

import dataclasses
import os

CONFIG = "config.json"
HISTORY = "history.jsonl"
DATA = "data.json"
LOCK = ".lock"
CHECKPOINTS = "checkpoints"
KEPT = os.path.join(CHECKPOINTS, "kept")
FINETUNE = "finetune_checkpoints"
BEST = os.path.join(FINETUNE, "best")
BASE_RECORD = "base.json"  # in the fine-tuning folder of the writing process
BEST_RECORD = "best.json"  # in BEST
EVAL = "eval"
EXPORT = "export"
SAMPLES = "samples.png"
# Where each stage's checkpoints live: what --resume_from may name.
CHECKPOINT_FOLDERS = {"train": (CHECKPOINTS, KEPT), "finetune": (FINETUNE, BEST)}


@dataclasses.dataclass(frozen=True)
class RunDir:
    """The paths of the run in `root`."""

    root: str

    def __truediv__(self, rel):
        return os.path.join(self.root, rel)

    config = property(lambda self: self / CONFIG)
    history = property(lambda self: self / HISTORY)
    data = property(lambda self: self / DATA)
    checkpoints = property(lambda self: self / CHECKPOINTS)
    kept = property(lambda self: self / KEPT)
    finetune = property(lambda self: self / FINETUNE)
    best = property(lambda self: self / BEST)
    best_record = property(lambda self: os.path.join(self / BEST, BEST_RECORD))
    eval = property(lambda self: self / EVAL)
    robustness = property(lambda self: os.path.join(self / EVAL, "robustness.json"))
    summary = property(lambda self: os.path.join(self / EVAL, "summary.json"))
    quality_curve = property(lambda self: os.path.join(self / EVAL, "quality_curve.jsonl"))
    checkpoint_curve = property(lambda self: os.path.join(self / EVAL, "checkpoint_curve.json"))
    samples = property(lambda self: self / SAMPLES)
    export = property(lambda self: self / EXPORT)

    def logs(self, stage):
        """The TensorBoard folder of a stage: train, finetune or eval."""
        return self / stage

    def clock(self, stage="train"):
        """The stage's training clock: seconds spent stepping, at each checkpoint."""
        return os.path.join(self / EVAL, f"{stage}_seconds.jsonl")

    def is_run(self):
        """Whether root holds a run (config.json), not an export."""
        return os.path.exists(self.config) and not os.path.exists(self / "saved_model.pb")

    def require_run(self):
        """Itself, after refusing a folder that holds no run (no config.json)."""
        if not os.path.exists(self.config):
            raise FileNotFoundError(f"no run at {self.root} (no config.json): train one there first "
                                    f"(launch/train.py --logdir={self.root}).")
        return self

    def has_checkpoints(self):
        return any(os.path.exists(os.path.join(self / sub, "checkpoint")) for sub in (CHECKPOINTS, FINETUNE))
