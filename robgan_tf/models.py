"""The conditional generator, the two-head discriminator and its classifier view.

Width presets (REFERENCE.md section 2):
- `sngan`: SN-GAN's ResNets at 32, 64 and 128 px (spectral norm on every D layer).
- `reference`: the Rob-GAN authors' CIFAR configuration (32 px): generator 1024 -> 64 (12.27 M
  parameters with 10 classes) and their 128-wide BatchNorm discriminator without SN or conv biases
  (1.06 M). Used to compare speed with their code.
- `tiny`: narrow nets for CPU demos and tests.
"""
from __future__ import annotations

import dataclasses
import math

import keras
import tensorflow as tf
from keras import layers

from robgan_tf.layers import (
    DiscriminatorBlock,
    GeneratorBlock,
    SpectralNorm,
    _PACKAGE,
    batch_norm,
    plain_init,
)

RESOLUTIONS = (32, 64, 128)
HEADS = ("acgan", "projection")


@dataclasses.dataclass(frozen=True)
class ArchSpec:
    """Widths of one preset at one resolution.

    g_blocks / d_blocks are (out_channels, resample) pairs: resample means 2x upsample (G) or 2x2
    average-pool downsample (D). The first D block is SN-GAN's optimized block.
    """

    g_stem: int
    g_blocks: tuple
    d_blocks: tuple
    d_spectral_norm: bool = True
    d_norm: str | None = None
    d_use_bias: bool = True


def _tiny(resolution):
    n_up = int(math.log2(resolution // 4))
    g = tuple((max(64 >> i, 16), True) for i in range(n_up))
    n_down = n_up - 1  # ends at 8x8
    d = tuple((min(32 << i, 128), True) for i in range(n_down)) + ((min(32 << n_down, 128), False),)
    return ArchSpec(g_stem=64, g_blocks=g, d_blocks=d)


PRESETS = {
    ("sngan", 32): ArchSpec(256, ((256, True),) * 3, ((128, True), (128, True), (128, False), (128, False))),
    ("sngan", 64): ArchSpec(
        1024, ((512, True), (256, True), (128, True), (64, True)),
        ((64, True), (128, True), (256, True), (512, True), (1024, True))),
    ("sngan", 128): ArchSpec(
        512, ((512, True), (256, True), (256, True), (128, True), (64, True)),
        ((64, True), (128, True), (256, True), (256, True), (512, True), (512, False))),
    ("reference", 32): ArchSpec(
        1024, ((512, True), (256, True), (128, True), (64, False)),
        ((128, True), (128, True), (128, False), (128, False)),
        d_spectral_norm=False, d_norm="batch", d_use_bias=False),
    **{("tiny", r): _tiny(r) for r in RESOLUTIONS},
}


def get_spec(preset, resolution):
    """The ArchSpec for a preset name and resolution, with a clear error for unknown pairs."""
    if (preset, resolution) in PRESETS:
        return PRESETS[(preset, resolution)]
    names = sorted({p for p, _ in PRESETS})
    if preset not in names:
        raise ValueError(f"Unknown preset {preset!r}; choose one of {names}.")
    have = sorted(r for p, r in PRESETS if p == preset)
    raise ValueError(
        f"Preset {preset!r} has no {resolution}px architecture; it is defined at {have} px. "
        "Use preset 'sngan' or 'tiny' for other resolutions."
    )


def _check_common(num_classes, channels):
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
    if int(channels) not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}.")


class _BuildByCalling:
    """Rebuild variables after `keras.saving.load_model` by one inference-mode forward pass.

    Subclassed models with several inputs cannot be rebuilt from an input shape alone; a dummy call
    with training=False creates every variable without touching BN statistics or SN vectors.
    """

    def get_build_config(self):
        return {"built": True} if self.built else {}

    def build_from_config(self, config):
        if config:
            self.build_by_calling()


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Generator(_BuildByCalling, keras.Model):
    """SN-GAN ResNet generator with categorical conditional BN: (z, labels) -> images in [-1, 1]."""

    def __init__(self, num_classes, resolution=32, preset="sngan", channels=3, z_dim=128, **kwargs):
        super().__init__(**kwargs)
        _check_common(num_classes, channels)
        self.spec = get_spec(preset, resolution)
        self.num_classes, self.resolution, self.preset = int(num_classes), int(resolution), preset
        self.channels, self.z_dim = int(channels), int(z_dim)
        ups = sum(up for _, up in self.spec.g_blocks)
        if 4 * 2 ** ups != self.resolution:  # a preset table error, not a user error
            raise AssertionError(f"preset {preset} at {resolution}px upsamples 4 -> {4 * 2 ** ups}")
        s = self.spec
        self.stem = layers.Dense(4 * 4 * s.g_stem, kernel_initializer=plain_init(), name="stem")
        self.blocks = [
            GeneratorBlock(ch, self.num_classes, upsample=up, name=f"block{i + 1}")
            for i, (ch, up) in enumerate(s.g_blocks)
        ]
        self.bn_out = batch_norm(momentum=0.9, epsilon=2e-5, name="bn_out")
        self.conv_out = layers.Conv2D(self.channels, 3, padding="same", kernel_initializer=plain_init(),
                                      name="conv_out")

    def call(self, z, labels, training=None):
        h = self.stem(z)
        h = tf.reshape(h, [-1, 4, 4, self.spec.g_stem])
        for block in self.blocks:
            h = block(h, labels, training=training)
        h = tf.nn.relu(self.bn_out(h, training=training))
        # tanh in float32: under mixed precision the images leave G at full precision.
        return tf.tanh(tf.cast(self.conv_out(h), tf.float32))

    def build_by_calling(self):
        self(tf.zeros([2, self.z_dim]), tf.zeros([2], tf.int32), training=False)

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, resolution=self.resolution, preset=self.preset,
                      channels=self.channels, z_dim=self.z_dim)
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Discriminator(_BuildByCalling, keras.Model):
    """ResNet discriminator: images -> (real/fake logit [B], class logits [B, K]).

    head="acgan" (Rob-GAN): global SUM pooling of ReLU features, then two dense heads.
    head="projection" (SN-GAN baseline): logit = psi(h) + <embed(y), h>; labels are required for
    the logit, and the class logits are <embed(k), h> for every k (the classifier the projection
    implies, up to a per-example constant).

    spectral_norm / norm default to the preset's (SN everywhere for sngan/tiny; the authors' BN
    discriminator for reference).
    """

    def __init__(self, num_classes, resolution=32, preset="sngan", channels=3, head="acgan",
                 spectral_norm=None, norm="preset", **kwargs):
        super().__init__(**kwargs)
        _check_common(num_classes, channels)
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}.")
        s = self.spec = get_spec(preset, resolution)
        self.num_classes, self.resolution, self.preset = int(num_classes), int(resolution), preset
        self.channels, self.head = int(channels), head
        self.spectral_norm = s.d_spectral_norm if spectral_norm is None else bool(spectral_norm)
        self.norm = s.d_norm if norm == "preset" else norm
        sn = self.spectral_norm
        self.blocks = [
            DiscriminatorBlock(ch, downsample=down, optimized=(i == 0), spectral_norm=sn, norm=self.norm,
                               use_bias=s.d_use_bias, name=f"block{i + 1}")
            for i, (ch, down) in enumerate(s.d_blocks)
        ]
        wrap = (lambda layer: SpectralNorm(layer)) if sn else (lambda layer: layer)
        self.bn_out = batch_norm(momentum=0.9, epsilon=1e-5, name="bn_out") if self.norm else None
        self.dense_adv = wrap(layers.Dense(1, kernel_initializer=plain_init(), name="adv"))
        if head == "acgan":
            self.dense_cls = wrap(layers.Dense(self.num_classes, kernel_initializer=plain_init(), name="cls"))
        else:
            self.embed = wrap(layers.Embedding(self.num_classes, s.d_blocks[-1][0],
                                               embeddings_initializer=plain_init(), name="embed"))

    def features(self, images, training=None):
        """Globally SUM-pooled ReLU features [B, C] in float32."""
        h = images
        for block in self.blocks:
            h = block(h, training=training)
        if self.bn_out is not None:
            h = self.bn_out(h, training=training)
        h = tf.nn.relu(h)
        return tf.cast(tf.reduce_sum(h, axis=[1, 2]), tf.float32)

    def call(self, images, labels=None, training=None):
        h = self.features(images, training=training)
        logit = tf.cast(self.dense_adv(h, training=training), tf.float32)[:, 0]
        if self.head == "acgan":
            class_logits = tf.cast(self.dense_cls(h, training=training), tf.float32)
        else:
            if not self.embed.built:  # used as a table here, never called on ids
                self.embed.build(None)
            table = (self.embed.normalized_kernel(training=bool(training)) if self.spectral_norm
                     else tf.convert_to_tensor(self.embed.embeddings))
            class_logits = tf.matmul(h, tf.cast(table, tf.float32), transpose_b=True)
            if labels is None:
                raise ValueError("The projection discriminator needs labels for its real/fake logit.")
            logit = logit + tf.gather(class_logits, tf.cast(labels, tf.int32), axis=1, batch_dims=1)
        return logit, class_logits

    def classifier(self):
        """A Keras model images -> class logits that shares this discriminator's weights."""
        return Classifier(self)

    def build_by_calling(self):
        shape = [2, self.resolution, self.resolution, self.channels]
        self(tf.zeros(shape), tf.zeros([2], tf.int32), training=False)

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, resolution=self.resolution, preset=self.preset,
                      channels=self.channels, head=self.head, spectral_norm=self.spectral_norm,
                      norm=self.norm)
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Classifier(_BuildByCalling, keras.Model):
    """The classifier view of a Discriminator: images -> class logits (shared weights).

    A plain Keras model: `compile`/`fit`/`evaluate` work, attacks differentiate through it, and it
    exports as a SavedModel.
    """

    def __init__(self, discriminator, **kwargs):
        super().__init__(**kwargs)
        if isinstance(discriminator, dict):  # from_config
            discriminator = keras.saving.deserialize_keras_object(discriminator)
        self.discriminator = discriminator

    def call(self, images, training=None):
        labels = tf.zeros(tf.shape(images)[:1], tf.int32) if self.discriminator.head == "projection" else None
        return self.discriminator(images, labels, training=training)[1]

    def build_by_calling(self):
        d = self.discriminator
        self(tf.zeros([2, d.resolution, d.resolution, d.channels]), training=False)

    def get_config(self):
        config = super().get_config()
        config["discriminator"] = keras.saving.serialize_keras_object(self.discriminator)
        return config


def count_params(model, trainable_only=True):
    """Number of (trainable) parameters, like PyTorch's sum(p.numel() for p in parameters())."""
    weights = model.trainable_weights if trainable_only else model.weights
    return int(sum(math.prod(w.shape) for w in weights))
