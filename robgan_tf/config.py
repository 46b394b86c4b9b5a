"""Dataclass configs: the one source of truth for every training hyperparameter and the one place each of
their rules is checked.

Launch flags map onto these objects (robgan_tf.experiment translates the flags and their sentinels and names
the flag when a rule here fails); the library reads only these. What the networks define -- the number of
classes, the noise size -- comes from the networks, not from here.
"""
from __future__ import annotations

import dataclasses
import numbers

from robgan_tf.losses import LossConfig
from robgan_tf.precision import POLICIES

# How G's batch norm normalises when G is sampled outside training (models.sampler): "batch", the authors' (their
# G is never in eval mode), or "moving" (inference mode, what exports serve).
G_STATISTICS = ("batch", "moving")

METHODS = ("robgan", "gan", "advtrain")
ATTACK_LOSSES = ("ce", "margin", "two_head")
# The authors' evaluation and fine-tuning attacks step eps/5 (their `attack_label_Linf_PGD`).
PAPER_STEP_FRACTION = 0.2
LR_SCHEDULES = ("constant", "linear", "halve", "step")
OPTIMIZERS = ("adam", "sgd")


class SettingError(ValueError):
    """A config value or combination breaks a rule; `fields` names the fields at fault (dotted for the attack
    inside a config: "attack.eps"), so the flag layer can name its flags."""

    def __init__(self, message, *fields):
        super().__init__(message)
        self.fields = fields


def check_attack(eps, steps, step_size=None, random_start=False, restarts=1, loss="ce"):
    """The rules of a PGD attack, for AttackConfig and for `attacks.pgd` called directly. eps and step_size may be
    scalar tensors (one trace for every radius); those are not range-checked."""
    def number(v):  # a Python or NumPy number, not None or a tensor
        return isinstance(v, numbers.Real)

    if number(eps) and eps < 0:
        raise SettingError(f"attack eps must be >= 0, got {eps}.", "eps")
    if steps < 0:
        raise SettingError(f"attack steps must be >= 0 (0 disables the attack), got {steps}.", "steps")
    # A zero step is allowed only for a zero radius (no attack): with eps > 0 it would silently never move.
    if number(step_size) and (step_size < 0 or (step_size == 0 and number(eps) and eps > 0)):
        raise SettingError(f"attack step_size must be > 0 (None: automatic), got {step_size}.", "step_size")
    if restarts < 1:
        raise SettingError(f"attack restarts must be >= 1, got {restarts}.", "restarts")
    if restarts > 1 and not random_start:
        raise SettingError("attack restarts > 1 repeat the same deterministic attack; set random_start.",
                           "restarts", "random_start")
    if loss not in ATTACK_LOSSES:
        raise SettingError(f"attack loss must be one of {ATTACK_LOSSES}, got {loss!r}.", "loss")


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
        check_attack(self.eps, self.steps, self.step_size, self.random_start, self.restarts, self.loss)

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

    method: str = "robgan"
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
    precision: str = "float32"  # a Keras policy (precision.POLICIES); 'auto' is resolved before here
    seed: int = 0

    def __post_init__(self):
        rules = [
            (self.method in METHODS, f"method must be one of {METHODS}, got {self.method!r}.", "method"),
            (self.precision in POLICIES, f"precision must be one of {POLICIES}, got {self.precision!r}.", "precision"),
            (self.n_dis >= 1, f"n_dis must be >= 1, got {self.n_dis}.", "n_dis"),
            (self.train_steps >= 1, f"train_steps must be >= 1, got {self.train_steps}.", "train_steps"),
            (self.lr_g > 0, f"lr_g must be > 0, got {self.lr_g}.", "lr_g"),
            (self.lr_d > 0, f"lr_d must be > 0, got {self.lr_d}.", "lr_d"),
            (self.lr_schedule in LR_SCHEDULES, f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}.",
             "lr_schedule"),
            (self.halve_every >= 0, f"halve_every must be >= 0, got {self.halve_every}.", "halve_every"),
            (self.lr_schedule != "halve" or self.halve_every >= 1,
             "lr_schedule='halve' needs halve_every >= 1 (D updates between halvings).", "lr_schedule", "halve_every"),
            (self.lr_schedule != "step" or self.lr_boundaries,
             "lr_schedule='step' needs lr_boundaries (D updates at which the lr drops).", "lr_schedule", "lr_boundaries"),
            (list(self.lr_boundaries) == sorted(set(self.lr_boundaries)) and all(b >= 1 for b in self.lr_boundaries),
             f"lr_boundaries must be increasing positive D-update counts, got {self.lr_boundaries}.", "lr_boundaries"),
            (0 <= self.lr_decay_start < self.train_steps,
             f"lr_decay_start must be in [0, train_steps) (D updates), got {self.lr_decay_start}.", "lr_decay_start"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}.", "optimizer"),
            (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1,
             f"Adam betas must be in [0, 1), got {self.beta1}, {self.beta2}.", "beta1", "beta2"),
            (self.lr_step_factor > 0, f"lr_step_factor must be > 0, got {self.lr_step_factor}.", "lr_step_factor"),
            (self.adam_epsilon > 0, f"adam_epsilon must be > 0, got {self.adam_epsilon}.", "adam_epsilon"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}.", "weight_decay"),
            (0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}.", "momentum"),
            (not self.reset_adam or (self.optimizer == "adam" and self.lr_schedule in ("halve", "step")),
             "reset_adam restarts Adam where a 'halve' or 'step' schedule lowers the lr; it needs optimizer='adam' "
             "and one of those schedules.", "reset_adam", "optimizer", "lr_schedule"),
            (self.ema_decay is None or 0.0 < self.ema_decay < 1.0,
             f"ema_decay must be in (0, 1) or None (off), got {self.ema_decay}.", "ema_decay"),
            (self.method != "advtrain" or self.attack.loss != "two_head",
             "advtrain trains the classifier only; its attack loss is 'ce' or 'margin', not 'two_head'.",
             "method", "attack.loss"),
            (self.method != "robgan" or self.attack.active,
             "method 'robgan' needs an attack (eps > 0 and steps > 0); use method 'gan' for none.",
             "method", "attack.eps", "attack.steps"),
        ]
        for ok, message, *fields in rules:
            if not ok:
                raise SettingError(message, *fields)

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

    steps: int = 1000
    lam: float = 0.3
    lr: float = 1e-3
    attack: AttackConfig = AttackConfig(loss="ce")
    attack_step_fraction: float = PAPER_STEP_FRACTION  # step = eps / 5 when attack.step_size is None
    adam_epsilon: float = 1e-8
    reset_adam: bool = True
    precision: str = "float32"  # a Keras policy (precision.POLICIES); 'auto' is resolved before here
    g_statistics: str = "batch"  # how the frozen G normalises its fakes (G_STATISTICS); the authors': batch
    seed: int = 0

    def __post_init__(self):
        if self.steps < 1:
            raise SettingError(f"finetune steps must be >= 1, got {self.steps}.", "steps")
        if self.g_statistics not in G_STATISTICS:
            raise SettingError(f"g_statistics must be one of {G_STATISTICS}, got {self.g_statistics!r}.",
                               "g_statistics")
        if self.precision not in POLICIES:
            raise SettingError(f"precision must be one of {POLICIES}, got {self.precision!r}.", "precision")
        if self.lam < 0:
            raise SettingError(f"finetune lambda must be >= 0, got {self.lam}.", "lam")
        if self.lr <= 0:
            raise SettingError(f"finetune lr must be > 0, got {self.lr}.", "lr")
        if self.adam_epsilon <= 0:
            raise SettingError(f"adam_epsilon must be > 0, got {self.adam_epsilon}.", "adam_epsilon")
        if not 0 < self.attack_step_fraction <= 1:
            raise SettingError(f"attack_step_fraction must be in (0, 1], got {self.attack_step_fraction}.",
                               "attack_step_fraction")
        if self.attack.loss == "two_head":
            raise SettingError("fine-tuning attacks the class head only; use attack loss 'ce' or 'margin'.",
                               "attack.loss")

    @property
    def attack_step_size(self):
        if self.attack.step_size is not None:
            return self.attack.step_size
        return self.attack.eps * self.attack_step_fraction
