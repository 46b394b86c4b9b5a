"""A run's resolved spec: what everything below the command line reads.

The flags (experiment.ExperimentConfig) carry sentinels -- 0 for "automatic", -1 for "the other flag's value",
"same", "preset", "auto" -- and are checked once, by `experiment.resolve_run` (or `ExperimentConfig.resolve`),
which also merges and checks the run's config.json. The result is this frozen `RunSpec`: every value resolved,
the library's own configs (TrainConfig, FinetuneConfig) built, nothing left to check or to look up.
"""
from __future__ import annotations

import dataclasses
import types
from typing import Mapping

from robgan_tf.config import FinetuneConfig, TrainConfig
from robgan_tf.layout import RunDir
from robgan_tf.models import Discriminator, Generator


class ConfigError(ValueError):
    """A flag value or combination that cannot work; the message names the flag and the fix."""


@dataclasses.dataclass(frozen=True)
class Networks:
    """The networks a run builds, presets resolved: None for a preset's own choice of spectral norm and biases."""

    arch: str  # G's preset
    d_preset: str
    d_head: str
    d_spectral_norm: bool | None
    d_norm: str | None  # "preset", "batch" or None (no normalisation)
    d_bias: bool | None
    z_dim: int
    with_generator: bool  # False for adversarial training

    def build(self, num_classes, resolution, channels):
        """(generator or None, discriminator); call inside the strategy scope."""
        d = Discriminator(num_classes, resolution, self.d_preset, channels=channels, head=self.d_head,
                          spectral_norm=self.d_spectral_norm, norm=self.d_norm, use_bias=self.d_bias)
        g = (Generator(num_classes, resolution, self.arch, channels=channels, z_dim=self.z_dim)
             if self.with_generator else None)
        return g, d


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """Everything a run reads below the command line, resolved and checked (experiment.resolve_run makes it)."""

    logdir: str
    # data
    dataset: str
    data_dir: str | None
    download: bool
    resolution: int | None  # the size asked for; None: the dataset's own
    image_resolution: int  # the networks' size
    load_resolution: int | None  # the size images are loaded at; None: the files' own
    augmentation: str
    dequantize: bool
    val_examples: int
    validation_fraction: float
    # what is trained
    networks: Networks
    train: TrainConfig
    finetune: FinetuneConfig | None  # None: the run does not fine-tune
    finetune_batch: int
    finetune_weights: str  # "latest" or "best"
    g_statistics: str
    batch_size: int
    seed: int
    # when things happen, in iterations (fine-tuning: steps)
    checkpoint_every: int
    keep_checkpoints: int
    keep_checkpoint_every: int  # 0: none kept
    log_every: int
    sample_every: int
    monitor_examples: int
    profile: tuple[int, int] | None
    quality_every: int  # 0: off
    quality_backend: str
    quality_weights: str | None
    quality_samples: int
    # evaluation
    eval_eps: tuple[float, ...]
    eval_examples: int | None  # None: the whole split
    # where it executes
    strategy: str
    cpu_replicas: int
    precision: str  # as asked (auto included)
    policy: str  # the Keras dtype policy it resolved to on this machine
    deterministic: bool
    jit_compile: bool
    resume_from: str | None
    # the flag values as config.json saves them, and the settings changed since config.json was written
    settings: Mapping = dataclasses.field(repr=False)
    changes: Mapping = dataclasses.field(default_factory=dict, repr=False)

    def __post_init__(self):  # frozen all the way down: the mappings too
        object.__setattr__(self, "settings", types.MappingProxyType(dict(self.settings)))
        object.__setattr__(self, "changes", types.MappingProxyType(dict(self.changes)))

    @property
    def layout(self):
        return RunDir(self.logdir)

    @property
    def method(self):
        return self.train.method

    @property
    def n_dis(self):
        return self.train.n_dis

    @property
    def iterations(self):
        """Training iterations (one = n_dis D updates + one G update)."""
        return self.train.train_steps // self.train.n_dis

    @property
    def finetune_steps(self):
        return self.finetune.steps if self.finetune is not None else 0

    @property
    def ema(self):
        return self.train.ema_decay is not None

    def validation_size(self, train_examples):
        """How many training examples the validation split holds (0: none)."""
        if self.validation_fraction:
            return int(self.validation_fraction * train_examples + 0.5)  # round half up, as data.parse_split
        return self.val_examples
