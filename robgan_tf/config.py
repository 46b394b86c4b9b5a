"""Dataclass configs: the one source of truth for every training hyperparameter.

Launch flags and presets map onto these objects; the library reads only these.
"""
from __future__ import annotations

import dataclasses

from robgan_tf.attacks import LOSSES as ATTACK_LOSSES
from robgan_tf.attacks import PAPER_STEP_FRACTION
from robgan_tf.losses import LossConfig

METHODS = ("robgan", "gan", "advtrain")
LR_SCHEDULES = ("constant", "linear", "halve", "step")
OPTIMIZERS = ("adam", "sgd")


@dataclasses.dataclass(frozen=True)
class AttackConfig:
    """PGD settings. eps and step_size are in [-1, 1] image units (8/255 on [0,1] = 0.0627 here).

    Training defaults follow the authors' code (5 steps, no random start, two-head loss on a two-head
    D), except the step size: the authors fix 0.0078, which never reaches the edge of a 0.0625 ball
    in 5 steps; None uses 2.5 * eps / steps. Set step_size=0.0078 to reproduce them exactly.
    """

    eps: float = 0.0625
    steps: int = 5
    step_size: float | None = None
    random_start: bool = False
    restarts: int = 1
    loss: str = "two_head"

    def __post_init__(self):
        if self.eps < 0:
            raise ValueError(f"attack eps must be >= 0, got {self.eps}.")
        if self.steps < 0:
            raise ValueError(f"attack steps must be >= 0 (0 disables the attack), got {self.steps}.")
        if self.step_size is not None and self.step_size <= 0:
            raise ValueError(f"attack step_size must be > 0, got {self.step_size}.")
        if self.loss not in ATTACK_LOSSES:
            raise ValueError(f"attack loss must be one of {ATTACK_LOSSES}, got {self.loss!r}.")

    @property
    def active(self):
        return self.eps > 0 and self.steps > 0


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Rob-GAN / GAN / adversarial-training hyperparameters (defaults: the authors' code).

    method: "robgan" (generator + attacker), "gan" (no attacker: AC-GAN / SN-GAN), "advtrain" (no
      generator: Madry adversarial training of the classifier, class loss only).
    train_steps counts D updates; G is updated once every n_dis D updates. Every other count
    (halve_every, lr_decay_start, lr_boundaries) is in D updates too.
    lr_schedule: "constant"; "linear" (constant until lr_decay_start, then to 0 at train_steps: SN-GAN);
      "halve" (every halve_every D updates: the authors' "halve every 50 epochs"); "step" (times
      lr_step_factor at each of lr_boundaries: Madry et al.).
    reset_adam: restart Adam's moments and bias correction wherever the halve / step schedule lowers the
      lr (the authors re-create Adam there).
    optimizer: "adam" (beta1, beta2, adam_epsilon) or "sgd" (with `momentum`), for both networks.
    weight_decay: L2 coefficient on D's kernels, added to the loss (Madry et al.: 2e-4 with SGD).
    """

    num_classes: int
    method: str = "robgan"
    z_dim: int = 128
    n_dis: int = 1
    train_steps: int = 1000
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    beta1: float = 0.0
    beta2: float = 0.9
    adam_epsilon: float = 1e-8
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_schedule: str = "constant"
    halve_every: int = 0
    lr_decay_start: int = 0
    lr_boundaries: tuple = ()
    lr_step_factor: float = 0.1
    reset_adam: bool = False
    ema_decay: float | None = None
    # Reuse the last D update's fake batch, and its generator forward pass, in the G update (as many GAN codes
    # do; the authors' code draws a new batch): one generator forward pass fewer per iteration.
    reuse_fake: bool = False
    loss: LossConfig = LossConfig()
    attack: AttackConfig = AttackConfig()
    mixed_precision: bool = False
    seed: int = 0

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}.")
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}.")
        if self.n_dis < 1:
            raise ValueError(f"n_dis must be >= 1, got {self.n_dis}.")
        if self.train_steps < 1:
            raise ValueError(f"train_steps must be >= 1, got {self.train_steps}.")
        if self.lr_g <= 0 or self.lr_d <= 0:
            raise ValueError(f"learning rates must be > 0, got lr_g={self.lr_g}, lr_d={self.lr_d}.")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}.")
        if self.lr_schedule == "halve" and self.halve_every < 1:
            raise ValueError("lr_schedule='halve' needs halve_every >= 1 (D updates between halvings).")
        if self.lr_schedule == "step" and not self.lr_boundaries:
            raise ValueError("lr_schedule='step' needs lr_boundaries (D updates at which the lr drops).")
        if list(self.lr_boundaries) != sorted(set(self.lr_boundaries)) or any(b < 1 for b in self.lr_boundaries):
            raise ValueError(f"lr_boundaries must be increasing positive D-update counts, got {self.lr_boundaries}.")
        if not 0 <= self.lr_decay_start < self.train_steps:
            raise ValueError(f"lr_decay_start must be in [0, train_steps), got {self.lr_decay_start}.")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}.")
        if self.adam_epsilon <= 0 or self.weight_decay < 0 or not 0 <= self.momentum < 1:
            raise ValueError("need adam_epsilon > 0, weight_decay >= 0 and 0 <= momentum < 1; got "
                             f"{self.adam_epsilon}, {self.weight_decay}, {self.momentum}.")
        if self.reset_adam and (self.optimizer != "adam" or self.lr_schedule not in ("halve", "step")):
            raise ValueError("reset_adam restarts Adam where a 'halve' or 'step' schedule lowers the lr; it "
                             "needs optimizer='adam' and one of those schedules.")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1) or None, got {self.ema_decay}.")
        if self.method == "advtrain" and self.attack.loss == "two_head":
            raise ValueError("advtrain trains the classifier only; use attack loss 'ce' or 'margin'.")
        if self.method == "robgan" and not self.attack.active:
            raise ValueError("method 'robgan' needs an attack (eps > 0 and steps > 0); use method 'gan' for none.")

    @property
    def uses_generator(self):
        return self.method != "advtrain"

    @property
    def uses_attack(self):
        return self.method != "gan" and self.attack.active


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    """Eq. 10 fine-tuning: CE(PGD(x_real)) + lam * CE(PGD(G(z, y_f)), y_f), G frozen.

    The authors: lambda 0.3, Adam 1e-3 divided by 10 per stage over 20+20+10+10 epochs (stage
    boundaries at 1/3, 2/3 and 5/6 of the run), Adam re-created for each stage (reset_adam), class-head
    CE attack with step eps/5, 5 steps.
    """

    num_classes: int
    steps: int = 1000
    lam: float = 0.3
    lr: float = 1e-3
    z_dim: int = 128
    attack: AttackConfig = AttackConfig(loss="ce")
    attack_step_fraction: float = PAPER_STEP_FRACTION  # step = eps / 5 when attack.step_size is None
    adam_epsilon: float = 1e-8
    reset_adam: bool = True
    mixed_precision: bool = False
    seed: int = 0

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"finetune steps must be >= 1, got {self.steps}.")
        if self.lam < 0:
            raise ValueError(f"finetune lambda must be >= 0, got {self.lam}.")
        if self.attack.loss == "two_head":
            raise ValueError("fine-tuning attacks the class head only; use attack loss 'ce' or 'margin'.")

    @property
    def attack_step_size(self):
        if self.attack.step_size is not None:
            return self.attack.step_size
        return self.attack.eps * self.attack_step_fraction
