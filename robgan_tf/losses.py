"""GAN and classification losses as small pure functions over logits.

All functions return PER-EXAMPLE losses [B]; the train step averages them over the GLOBAL batch
(gradients are summed across replicas). Notation follows the paper (eq. 8 and 9): L_S is the
real/fake log-likelihood, L_C the class log-likelihood.

Named weightings (`LossConfig.named`; docs/FIDELITY.md gives the source of each):
  authors (the default, the authors' train.py):
    D: 0.5 * S(real) + 0.5 * C(real) + [split] 1.0 * S(fake)  |  [acgan] 0.5 * S(fake) + 0.5 * C(fake)
    G: 0.5 * S(fake as real, non-saturating) + 0.5 * C(fake)
  paper: the unweighted sums of eq. 8 / 9 (every weight 1).
  sngan: the adversarial terms only, weight 1 (SN-GAN's projection baseline; no class loss).
"""
from __future__ import annotations

import dataclasses

import tensorflow as tf

GAN_LOSSES = ("bce", "hinge")
VARIANTS = ("split", "acgan")
WEIGHTINGS = ("authors", "paper", "sngan")


def class_ce(class_logits, labels):
    """Cross-entropy of class logits against int labels, per example."""
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.cast(labels, tf.int32),
                                                          logits=tf.cast(class_logits, tf.float32))


def d_real_term(logit, gan_loss="bce"):
    """D's loss for calling a real image real: -log sigmoid(s) (bce) or relu(1 - s) (hinge)."""
    logit = tf.cast(logit, tf.float32)
    return tf.nn.softplus(-logit) if gan_loss == "bce" else tf.nn.relu(1.0 - logit)


def d_fake_term(logit, gan_loss="bce"):
    """D's loss for calling a fake image fake: -log(1 - sigmoid(s)) (bce) or relu(1 + s) (hinge)."""
    logit = tf.cast(logit, tf.float32)
    return tf.nn.softplus(logit) if gan_loss == "bce" else tf.nn.relu(1.0 + logit)


def g_term(logit, gan_loss="bce"):
    """G's adversarial loss: non-saturating -log sigmoid(s) (bce) or -s (hinge, as SN-GAN)."""
    logit = tf.cast(logit, tf.float32)
    return tf.nn.softplus(-logit) if gan_loss == "bce" else -logit


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Which GAN loss, which class-loss variant, and the term weights."""

    gan_loss: str = "bce"
    variant: str = "split"
    d_real_adv: float = 0.5
    d_real_cls: float = 0.5
    d_fake_adv: float | None = None  # None: 1.0 for split, 0.5 for acgan (the authors' code)
    d_fake_cls: float = 0.5  # acgan only; split never puts a class loss on fakes for D
    g_adv: float = 0.5
    g_cls: float = 0.5

    def __post_init__(self):
        if self.gan_loss not in GAN_LOSSES:
            raise ValueError(f"gan_loss must be one of {GAN_LOSSES}, got {self.gan_loss!r}.")
        if self.variant not in VARIANTS:
            raise ValueError(f"loss variant must be one of {VARIANTS}, got {self.variant!r}.")

    @classmethod
    def named(cls, weighting="authors", gan_loss="bce", variant="split"):
        """The LossConfig of a named weighting (see the module docstring)."""
        if weighting == "authors":
            return cls(gan_loss=gan_loss, variant=variant)
        if weighting == "paper":
            return cls(gan_loss, variant, d_real_adv=1.0, d_real_cls=1.0, d_fake_adv=1.0, d_fake_cls=1.0,
                       g_adv=1.0, g_cls=1.0)
        if weighting == "sngan":
            return cls(gan_loss, variant, d_real_adv=1.0, d_real_cls=0.0, d_fake_adv=1.0, d_fake_cls=0.0,
                       g_adv=1.0, g_cls=0.0)
        raise ValueError(f"loss weighting must be one of {WEIGHTINGS}, got {weighting!r}.")

    @property
    def fake_adv_weight(self):
        if self.d_fake_adv is not None:
            return self.d_fake_adv
        return 1.0 if self.variant == "split" else 0.5


def discriminator_loss(real_logit, real_cls, real_labels, fake_logit, fake_cls, fake_labels,
                       config=LossConfig()):
    """D's per-example loss on paired real (attacked) and fake examples.

    split (eq. 9): D maximises L_S + L_C1 -- the class loss sees real images only.
    acgan (eq. 8): D maximises L_S + L_C -- the class loss sees real and fake images.
    """
    loss = (config.d_real_adv * d_real_term(real_logit, config.gan_loss)
            + config.d_real_cls * class_ce(real_cls, real_labels)
            + config.fake_adv_weight * d_fake_term(fake_logit, config.gan_loss))
    if config.variant == "acgan":
        loss += config.d_fake_cls * class_ce(fake_cls, fake_labels)
    return loss


def generator_loss(fake_logit, fake_cls, fake_labels, config=LossConfig()):
    """G's per-example loss (both variants): G maximises L_C2 - L_S, non-saturating form."""
    return config.g_adv * g_term(fake_logit, config.gan_loss) + config.g_cls * class_ce(fake_cls, fake_labels)
