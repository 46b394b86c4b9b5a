"""The conditional generator, the two-head discriminator and its classifier view.

Presets (docs/FIDELITY.md lists every architectural detail and its source):
- `sngan`: SN-GAN's ResNets at 32, 64 and 128 px (spectral norm on every D layer, conv biases).
- `authors`: the networks the Rob-GAN authors' train.py builds for --model resnet_32 / resnet_64 /
  resnet_128: no spectral norm, no conv biases in D; at 32 px a 1024 -> 64 generator and a 128-wide
  discriminator with BatchNorm after every conv; at 64 and 128 px SN-GAN's widths without BN.
  Trainable parameters equal the authors' PyTorch counts exactly (tests/test_models.py).
- `reference`: an alias of `authors` at 32 px.
- `preact_resnet18`: discriminator only (32 px): the authors' two-head PreActResNet18, the paper's
  "ResNet18 (+CIFAR10)" classifier (11,164,875 parameters with 10 classes).
- `tiny`: narrow nets for CPU demos and tests.
"""
from __future__ import annotations

import dataclasses
import math

import keras
import tensorflow as tf
from keras import layers

from robgan_tf.config import G_STATISTICS
from robgan_tf.layers import (
    DiscriminatorBlock,
    GeneratorBlock,
    SpectralNorm,
    PreActBlock,
    _PACKAGE,
    BatchNorm,
    plain_init,
    torch_default_init,
)

RESOLUTIONS = (32, 64, 128)
HEADS = ("acgan", "projection")


@dataclasses.dataclass(frozen=True)
class ArchSpec:
    """Widths of one preset at one resolution.

    g_blocks / d_blocks are (out_channels, resample) pairs: resample means 2x upsample (G) or 2x2
    average-pool downsample (D). The first "resnet" D block is SN-GAN's optimized block.
    d_trunk "preact": d_blocks are (out_channels, stride) of PreActBlocks after a 64-wide 3x3 stem, with
    global AVERAGE pooling (the authors' PreActResNet); g_stem None means no generator.
    """

    g_stem: int | None
    g_blocks: tuple
    d_blocks: tuple
    d_spectral_norm: bool = True
    d_norm: str | None = None
    d_use_bias: bool = True
    d_trunk: str = "resnet"
    g_out_bn_eps: float = 2e-5  # G's last BatchNorm: Chainer's default eps (SN-GAN); PyTorch's is 1e-5 (authors)
    g_cbn_momentum: float = 0.9  # Keras momentum of G's conditional BN statistics (GeneratorBlock)


def _tiny(resolution):
    n_up = int(math.log2(resolution // 4))
    g = tuple((max(64 >> i, 16), True) for i in range(n_up))
    n_down = n_up - 1  # ends at 8x8
    d = tuple((min(32 << i, 128), True) for i in range(n_down)) + ((min(32 << n_down, 128), False),)
    return ArchSpec(g_stem=64, g_blocks=g, d_blocks=d)


_SNGAN_G64 = (1024, ((512, True), (256, True), (128, True), (64, True)))
_SNGAN_G128 = (512, ((512, True), (256, True), (256, True), (128, True), (64, True)))
_SNGAN_D64 = ((64, True), (128, True), (256, True), (512, True), (1024, True))
_SNGAN_D128 = ((64, True), (128, True), (256, True), (256, True), (512, True), (512, False))
_AUTHORS = dict(d_spectral_norm=False, d_use_bias=False, g_out_bn_eps=1e-5, g_cbn_momentum=0.1)

PRESETS = {
    ("sngan", 32): ArchSpec(256, ((256, True),) * 3, ((128, True), (128, True), (128, False), (128, False))),
    ("sngan", 64): ArchSpec(*_SNGAN_G64, _SNGAN_D64),
    ("sngan", 128): ArchSpec(*_SNGAN_G128, _SNGAN_D128),
    # train.py --model resnet_32: gen_models/resnet_32 (ch=64) + dis_models/resnet_32 (ch=64, bn=True)
    ("authors", 32): ArchSpec(1024, ((512, True), (256, True), (128, True), (64, False)),
                              ((128, True), (128, True), (128, False), (128, False)), d_norm="batch", **_AUTHORS),
    # resnet_64: gen_models/resnet_64 + dis_models/resnet_64;  resnet_128: the *_small models
    ("authors", 64): ArchSpec(*_SNGAN_G64, _SNGAN_D64, **_AUTHORS),
    ("authors", 128): ArchSpec(*_SNGAN_G128, _SNGAN_D128, **_AUTHORS),
    ("preact_resnet18", 32): ArchSpec(None, (), ((64, 1), (64, 1), (128, 2), (128, 1), (256, 2), (256, 1),
                                                 (512, 2), (512, 1)), d_spectral_norm=False, d_use_bias=False,
                                      d_trunk="preact"),
    **{("tiny", r): _tiny(r) for r in (16,) + RESOLUTIONS},  # 16 px: the digits demo
}
PRESETS[("reference", 32)] = PRESETS[("authors", 32)]
D_ONLY_PRESETS = ("preact_resnet18",)


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
        "Use preset 'sngan', 'authors' or 'tiny' for other resolutions."
    )


def _check_common(num_classes, channels):
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
    if int(channels) not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}.")


class _BuildByCalling:
    """Builds the model by one eager inference-mode forward pass on zeros: `build`, `build_by_calling` and the
    rebuild after `keras.saving.load_model` all come here.

    Without a `build` of its own, Keras builds a subclassed model on its first call by tracing `call`
    symbolically in a scratch graph first, which made building the tiny D cost 0.13 s of CPU instead of the
    0.05 s it costs now (most of it creating the variables). The eager pass with training=False creates every
    variable (each block and layer builds itself from the shapes it sees) without touching BN statistics or SN
    vectors.
    """

    def build(self, input_shape=None):
        with tf.init_scope():  # eager even when first called inside a tf.function
            self._call_on_zeros()

    def build_by_calling(self):
        """Creates every variable (a no-op once built)."""
        if not self.built:
            self.build()
            self.built = True

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
        if self.spec.g_stem is None:
            raise ValueError(f"Preset {preset!r} defines a discriminator only; choose the generator's preset "
                             "separately (e.g. Generator(..., preset='authors')).")
        self.num_classes, self.resolution, self.preset = int(num_classes), int(resolution), preset
        self.channels, self.z_dim = int(channels), int(z_dim)
        if self.z_dim < 1:
            raise ValueError(f"z_dim must be >= 1, got {z_dim}.")
        ups = sum(up for _, up in self.spec.g_blocks)
        if 4 * 2 ** ups != self.resolution:  # a preset table error, not a user error
            raise AssertionError(f"preset {preset} at {resolution}px upsamples 4 -> {4 * 2 ** ups}")
        s = self.spec
        self.stem = layers.Dense(4 * 4 * s.g_stem, kernel_initializer=plain_init(), name="stem")
        self.blocks = [
            GeneratorBlock(ch, self.num_classes, upsample=up, cbn_momentum=s.g_cbn_momentum, name=f"block{i + 1}")
            for i, (ch, up) in enumerate(s.g_blocks)
        ]
        self.bn_out = BatchNorm(momentum=0.9, epsilon=s.g_out_bn_eps, name="bn_out")
        self.conv_out = layers.Conv2D(self.channels, 3, padding="same", kernel_initializer=plain_init(),
                                      name="conv_out")

    def call(self, z, labels, training=None, batch_statistics=False):
        """Images in [-1, 1]. Outside training, BN uses the moving averages (inference mode, what exports serve),
        or with `batch_statistics=True` each batch's own statistics without updating the averages: how the
        authors sample G (see `sampler`)."""
        h = self.stem(z)
        h = tf.reshape(h, [-1, 4, 4, self.spec.g_stem])
        for block in self.blocks:
            h = block(h, labels, training=training, batch_statistics=batch_statistics)
        h = tf.nn.relu(self.bn_out(h, training=training, batch_statistics=batch_statistics))
        # tanh in float32: under mixed precision the images leave G at full precision.
        return tf.tanh(tf.cast(self.conv_out(h), tf.float32))

    def _call_on_zeros(self):
        self.call(tf.zeros([2, self.z_dim]), tf.zeros([2], tf.int32), training=False)

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

    spectral_norm, norm ("batch" or None) and use_bias default (None / "preset") to the preset's: SN and
    biases everywhere for sngan/tiny; no SN, no conv biases for authors (BN after each conv at 32 px)
    and preact_resnet18. The dense heads always have a bias.
    """

    def __init__(self, num_classes, resolution=32, preset="sngan", channels=3, head="acgan",
                 spectral_norm=None, norm="preset", use_bias=None, **kwargs):
        super().__init__(**kwargs)
        _check_common(num_classes, channels)
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}.")
        s = self.spec = get_spec(preset, resolution)
        self.num_classes, self.resolution, self.preset = int(num_classes), int(resolution), preset
        self.channels, self.head = int(channels), head
        self.spectral_norm = s.d_spectral_norm if spectral_norm is None else bool(spectral_norm)
        self.norm = s.d_norm if norm == "preset" else norm
        self.use_bias = s.d_use_bias if use_bias is None else bool(use_bias)
        if self.norm not in (None, "batch"):
            raise ValueError(f"norm must be None, 'batch' or 'preset', got {norm!r}.")
        sn = self.spectral_norm
        wrap = (lambda layer: SpectralNorm(layer)) if sn else (lambda layer: layer)
        if s.d_trunk == "preact":
            if self.norm or self.use_bias:
                raise ValueError(f"preset {preset!r} has no normalisation and no conv biases (the authors' "
                                 "PreActResNet18); norm='batch' / use_bias=True are not offered for it.")
            self.stem = wrap(layers.Conv2D(64, 3, padding="same", use_bias=False,
                                           kernel_initializer=torch_default_init(), name="stem"))
            self.blocks = [PreActBlock(ch, stride, spectral_norm=sn, name=f"block{i + 1}")
                           for i, (ch, stride) in enumerate(s.d_blocks)]
            head_init = torch_default_init()
        else:
            self.stem = None
            self.blocks = [
                DiscriminatorBlock(ch, downsample=down, optimized=(i == 0), spectral_norm=sn, norm=self.norm,
                                   use_bias=self.use_bias, name=f"block{i + 1}")
                for i, (ch, down) in enumerate(s.d_blocks)
            ]
            head_init = plain_init()
        self.dense_adv = wrap(layers.Dense(1, kernel_initializer=head_init, name="adv"))
        if head == "acgan":
            self.dense_cls = wrap(layers.Dense(self.num_classes, kernel_initializer=head_init, name="cls"))
        else:
            self.embed = wrap(layers.Embedding(self.num_classes, s.d_blocks[-1][0],
                                               embeddings_initializer=plain_init(), name="embed"))

    def features(self, images, training=None):
        """Pooled features [B, C] in float32: the SUM over positions of the ReLU'd last block (SN-GAN,
        the authors' ResNets), or the MEAN of the last block without activation (PreActResNet18)."""
        h = images if self.stem is None else self.stem(images, training=training)
        for block in self.blocks:
            h = block(h, training=training)
        if self.stem is not None:
            return tf.cast(tf.reduce_mean(h, axis=[1, 2]), tf.float32)
        return tf.cast(tf.reduce_sum(tf.nn.relu(h), axis=[1, 2]), tf.float32)

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
        """A Keras model images -> class logits that shares this discriminator's weights; built when this
        discriminator is (its variables are the discriminator's, so there is nothing to create), so it can be
        exported or saved before it is ever called."""
        view = Classifier(self)
        if self.built:
            view.built = True
        return view

    def _call_on_zeros(self):
        self.call(tf.zeros([2, self.resolution, self.resolution, self.channels]), tf.zeros([2], tf.int32),
                  training=False)

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, resolution=self.resolution, preset=self.preset,
                      channels=self.channels, head=self.head, spectral_norm=self.spectral_norm,
                      norm=self.norm, use_bias=self.use_bias)
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

    def _call_on_zeros(self):
        d = self.discriminator
        self.call(tf.zeros([2, d.resolution, d.resolution, d.channels]), training=False)

    def get_config(self):
        config = super().get_config()
        config["discriminator"] = keras.saving.serialize_keras_object(self.discriminator)
        return config


def sampler(generator, statistics):
    """`generator` as a sampler (z, labels, training) -> images whose BN uses `statistics`: 'moving' (inference
    mode; `generator` itself) or 'batch' (each call's batch normalises itself, moving averages untouched -- the
    authors' sampling: their G is never put in eval mode). With 'batch' an image depends on the rest of its batch,
    so it is used for eq. 10's fakes and quality scores, never for serving."""
    if statistics not in G_STATISTICS:
        raise ValueError(f"statistics must be one of {G_STATISTICS}, got {statistics!r}.")
    return generator if statistics == "moving" else _BatchStatisticsSampler(generator)


class _BatchStatisticsSampler:
    def __init__(self, generator):
        self.generator = generator
        self.num_classes, self.z_dim = generator.num_classes, generator.z_dim
        self.resolution, self.channels = generator.resolution, generator.channels

    def __call__(self, z, labels, training=False):
        return self.generator(z, labels, training=training, batch_statistics=True)


def count_params(model, trainable_only=True):
    """Number of (trainable) parameters, like PyTorch's sum(p.numel() for p in parameters())."""
    weights = model.trainable_weights if trainable_only else model.weights
    return int(sum(math.prod(w.shape) for w in weights))
