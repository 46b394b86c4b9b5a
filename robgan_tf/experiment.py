"""Experiment configuration: every knob of a run in one dataclass, shared by all launch scripts.

`ExperimentConfig` is the single source of truth: the absl flags of `launch/` are generated from its
fields (name, type, default and help), and the library objects (TrainConfig, FinetuneConfig, the
models, the data) are derived from it.
"""
from __future__ import annotations

import dataclasses
import json
import os

from robgan_tf import data as data_lib
from robgan_tf.config import AttackConfig, FinetuneConfig, LR_SCHEDULES, MODES, TrainConfig
from robgan_tf.losses import GAN_LOSSES, VARIANTS, LossConfig
from robgan_tf.models import get_spec

STRATEGIES = ("auto", "default", "mirrored", "multi_worker")
ARCHS = ("sngan", "reference", "tiny")
PAPER_EPS = {"cifar10": (0.0, 0.02, 0.04, 0.08), "imagenet143": (0.0, 0.01, 0.02, 0.03)}
DEFAULT_EPS = (0.0, 0.02, 0.04, 0.08)


def _f(default, help, choices=None):
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices})


@dataclasses.dataclass
class ExperimentConfig:
    # data
    dataset: str = _f("digits", "Dataset.", data_lib.DATASETS)
    data_dir: str = _f("", "Where the dataset lives (see README: Datasets). Empty: the default place.")
    download: bool = _f(False, "Let tensorflow-datasets download CIFAR-10 if no local copy is found.")
    resolution: int = _f(0, "Image size (32, 64, 128). 0: the dataset's own (digits and CIFAR-10: 32).")
    # model
    arch: str = _f("tiny", "Width preset: sngan (SN-GAN), reference (the authors' CIFAR nets), tiny (CPU).", ARCHS)
    z_dim: int = _f(128, "Generator noise dimension.")
    # method
    mode: str = _f("robgan", "robgan: G + D + attacker; gan: no attacker (AC-GAN/SN-GAN); advtrain: no G (Madry).",
                   MODES)
    loss_variant: str = _f("split", "split (eq. 9: D's class loss on reals only) or acgan (eq. 8).", VARIANTS)
    gan_loss: str = _f("bce", "bce (the paper's log-likelihood, non-saturating G) or hinge.", GAN_LOSSES)
    attack_eps: float = _f(0.0625, "PGD l_inf radius during training, in [-1, 1] units (8/255 on [0,1] = 0.0627).")
    attack_steps: int = _f(5, "PGD steps during training and fine-tuning.")
    attack_step_size: float = _f(0.0, "PGD step size in training; 0: 2.5*eps/steps. The authors used 0.0078.")
    attack_random_start: bool = _f(False, "Start PGD at a random point in the ball (the authors: no).")
    n_dis: int = _f(1, "D updates per G update (each on its own real batch).")
    batch_size: int = _f(64, "Global batch size of one D update.")
    lr_g: float = _f(2e-4, "Generator Adam learning rate.")
    lr_d: float = _f(2e-4, "Discriminator Adam learning rate.")
    lr_schedule: str = _f("constant", "constant, linear (to 0, SN-GAN) or halve (every --halve_every D updates).",
                          LR_SCHEDULES)
    halve_every: int = _f(0, "D updates between halvings for --lr_schedule=halve.")
    ema_decay: float = _f(0.0, "Generator weight EMA decay for sampling and export; 0: off.")
    train_steps: int = _f(500, "Training length in D updates.")
    # fine-tuning (eq. 10)
    finetune_steps: int = _f(250, "Fine-tuning steps (eq. 10); 0 skips fine-tuning.")
    finetune_lambda: float = _f(0.3, "Weight of the fake-image term in eq. 10.")
    finetune_lr: float = _f(1e-3, "Fine-tuning Adam learning rate (divided by 10 at 1/3, 2/3 and 5/6).")
    finetune_eps: float = _f(-1.0, "PGD radius during fine-tuning; -1: --attack_eps.")
    # evaluation
    eval_eps: str = _f("", "Comma-separated eps grid for evaluation; empty: the paper's grid for the dataset.")
    eval_examples: int = _f(0, "Test examples to evaluate; 0: the whole test split.")
    # run
    seed: int = _f(0, "Seed for weights, data order and noise.")
    deterministic: bool = _f(False, "Seeds plus TF op determinism: a killed-and-resumed run ends bit-identical.")
    logdir: str = _f("runs/robgan", "Run directory: checkpoints, TensorBoard logs, evaluation, exports.")
    checkpoint_every: int = _f(100, "Save a checkpoint every N training iterations.")
    keep_checkpoints: int = _f(3, "How many recent checkpoints to keep.")
    log_every: int = _f(25, "Log scalars and progress every N iterations.")
    sample_every: int = _f(200, "Log a sample grid every N iterations.")
    strategy: str = _f("auto", "auto (mirrored on >1 GPU or --cpu_replicas>1), default, mirrored, multi_worker.",
                       STRATEGIES)
    cpu_replicas: int = _f(1, "Split the CPU into N logical devices (to exercise distribution without GPUs).")
    mixed_precision: bool = _f(False, "mixed_float16 compute; both optimizers loss-scaled; SN/losses/attack float32.")
    jit_compile: bool = _f(False, "XLA-compile the train step (one replica only; slower than plain TF on CPU).")

    # -- derived values
    @property
    def image_resolution(self):
        return self.resolution or 32

    def validate(self):
        """Checks every value and combination; raises ValueError naming the flag and the fix."""
        for name, field in self.__dataclass_fields__.items():
            choices = field.metadata.get("choices")
            if choices and getattr(self, name) not in choices:
                raise ValueError(f"--{name}={getattr(self, name)!r} is not one of {list(choices)}.")
        if self.resolution not in (0, 32, 64, 128):
            raise ValueError(f"--resolution must be 32, 64 or 128 (or 0 for the dataset's own), got {self.resolution}.")
        try:
            get_spec(self.arch, self.image_resolution)
        except ValueError as e:
            raise ValueError(f"--arch={self.arch} --resolution={self.image_resolution}: {e}") from None
        positive = ("batch_size", "train_steps", "n_dis", "checkpoint_every", "keep_checkpoints", "log_every",
                    "sample_every", "cpu_replicas", "z_dim")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name} must be > 0, got {getattr(self, name)}.")
        for name in ("finetune_steps", "eval_examples", "halve_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name} must be >= 0, got {getattr(self, name)}.")
        if self.attack_eps < 0:
            raise ValueError(f"--attack_eps must be >= 0, got {self.attack_eps}.")
        if self.attack_steps < 0:
            raise ValueError(f"--attack_steps must be >= 0, got {self.attack_steps}.")
        if self.attack_step_size < 0:
            raise ValueError(f"--attack_step_size must be >= 0 (0: automatic), got {self.attack_step_size}.")
        if self.mode == "robgan" and (self.attack_eps == 0 or self.attack_steps == 0):
            raise ValueError("--mode=robgan needs an attack: --attack_eps > 0 and --attack_steps > 0 "
                             "(use --mode=gan to train without one).")
        if self.batch_size % self.cpu_replicas:
            raise ValueError(f"--batch_size={self.batch_size} must divide evenly over --cpu_replicas={self.cpu_replicas}.")
        if self.jit_compile and (self.cpu_replicas > 1 or self.strategy in ("mirrored", "multi_worker")):
            raise ValueError("--jit_compile needs a single replica; drop it or use --strategy=default.")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"--ema_decay must be in [0, 1), got {self.ema_decay}.")
        self.eps_grid()  # parses
        self.train_config(10)  # dataclass-level checks (lr > 0, schedule settings, ...)
        return self

    def eps_grid(self):
        if not self.eval_eps:
            return PAPER_EPS.get(self.dataset, DEFAULT_EPS)
        try:
            grid = tuple(float(v) for v in self.eval_eps.split(","))
        except ValueError:
            raise ValueError(f"--eval_eps must be comma-separated numbers, got {self.eval_eps!r}.") from None
        if any(e < 0 for e in grid):
            raise ValueError(f"--eval_eps values must be >= 0, got {self.eval_eps!r}.")
        return grid

    @property
    def iterations(self):
        """Training iterations (one = n_dis D updates + one G update); train_steps counts D updates."""
        return -(-self.train_steps // self.n_dis)

    def attack_config(self):
        return AttackConfig(eps=self.attack_eps, steps=self.attack_steps,
                            step_size=self.attack_step_size or None, random_start=self.attack_random_start,
                            loss="ce" if self.mode == "advtrain" else "two_head")

    def train_config(self, num_classes):
        return TrainConfig(
            num_classes=num_classes, mode=self.mode, z_dim=self.z_dim, n_dis=self.n_dis,
            train_steps=self.train_steps, lr_g=self.lr_g, lr_d=self.lr_d, lr_schedule=self.lr_schedule,
            halve_every=self.halve_every, ema_decay=self.ema_decay or None,
            loss=LossConfig(gan_loss=self.gan_loss, variant=self.loss_variant),
            attack=self.attack_config(), mixed_precision=self.mixed_precision, seed=self.seed)

    def finetune_config(self, num_classes, flip_ok):
        eps = self.attack_eps if self.finetune_eps < 0 else self.finetune_eps
        return FinetuneConfig(
            num_classes=num_classes, steps=max(self.finetune_steps, 1), lam=self.finetune_lambda,
            lr=self.finetune_lr, z_dim=self.z_dim, attack=AttackConfig(eps=eps, steps=self.attack_steps, loss="ce"),
            flip=flip_ok, mixed_precision=self.mixed_precision, seed=self.seed + 1)

    # -- persistence
    # Changing these under an existing run would silently mix two experiments.
    IDENTITY = ("dataset", "resolution", "arch", "z_dim", "mode", "loss_variant", "gan_loss", "attack_eps",
                "attack_steps", "attack_step_size", "attack_random_start", "n_dis", "batch_size", "lr_g", "lr_d",
                "lr_schedule", "halve_every", "ema_decay", "seed", "mixed_precision")

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d):
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def check_compatible(self, path):
        """Raises if the run at `path` (config.json) was made with different identity settings."""
        if not os.path.exists(path):
            return
        with open(path) as f:
            old = json.load(f)
        diffs = [f"--{k}: run has {old.get(k)!r}, now {getattr(self, k)!r}"
                 for k in self.IDENTITY if k in old and old[k] != getattr(self, k)]
        if diffs:
            raise ValueError(f"--logdir {os.path.dirname(path)} holds a run with other settings ("
                             + "; ".join(diffs) + "). Use a new --logdir, or the run's own settings.")

    def save(self, path):
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.to_dict(), f, indent=2, sort_keys=True)
        os.replace(tmp, path)
