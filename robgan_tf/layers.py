"""Building blocks: spectral norm, conditional batch norm and the SN-GAN ResNet blocks.

Everything here is a plain Keras 3 layer (TensorFlow backend) and serialisable with
`keras.saving`. Images are NHWC.
"""
from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers
# Keras enters an autocast scope for mixed policies even in a layer built with autocast=False (when
# no outer scope exists), and has no public way out; reading variables inside AutocastScope(None)
# gives their true float32 values.
from keras.src.backend import AutocastScope

_PACKAGE = "robgan_tf"


def residual_init():
    """SN-GAN's init for convs inside a residual branch: Glorot-uniform with gain sqrt(2)."""
    # Glorot-uniform has variance 2 / (fan_in + fan_out); gain g multiplies it by g^2.
    return keras.initializers.VarianceScaling(scale=2.0, mode="fan_avg", distribution="uniform")


def plain_init():
    """Glorot-uniform with gain 1: shortcuts, stems and heads."""
    return keras.initializers.GlorotUniform()


def _l2_normalize(x, eps=1e-12):
    # x / max(||x||, eps), as PyTorch's F.normalize; sqrt(sum(x^2)) is tf.norm without its reshapes.
    return x / tf.maximum(tf.sqrt(tf.reduce_sum(tf.square(x))), eps)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SpectralNorm(layers.Wrapper):
    """Spectral normalisation of a Conv2D, Dense or Embedding layer (Miyato et al., 2018).

    The wrapped layer keeps its raw kernel as the trainable variable; the forward pass uses
    W / sigma(W), where sigma = u^T W v is estimated by power iteration. u and v are treated as
    constants in the gradient, so the gradient does flow through sigma (as in SN-GAN and PyTorch's
    `spectral_norm`). The persistent vector u is updated only when `training=True`.

    Unlike `keras.layers.SpectralNormalization`, this never overwrites the kernel, normalises in
    inference too, and keeps u identical across replicas: it is created with MEAN aggregation and
    every replica computes the same update from the same (mirrored) W and u.

    Under mixed precision the power iteration and W / sigma run in float32; only the layer's op
    runs in the compute dtype.
    """

    _SUPPORTED = (layers.Conv2D, layers.Dense, layers.Embedding)

    def __init__(self, layer, power_iterations=1, eps=1e-12, **kwargs):
        if not isinstance(layer, self._SUPPORTED) or isinstance(layer, layers.Conv2DTranspose):
            raise ValueError(
                f"SpectralNorm wraps Conv2D, Dense or Embedding layers, got {type(layer).__name__}."
            )
        if int(power_iterations) < 1:
            raise ValueError(f"power_iterations must be >= 1, got {power_iterations}.")
        super().__init__(layer, **kwargs)
        self.power_iterations = int(power_iterations)
        self.eps = float(eps)

    @property
    def _kernel(self):
        return self.layer.embeddings if isinstance(self.layer, layers.Embedding) else self.layer.kernel

    def build(self, input_shape=None):
        if not self.layer.built:
            self.layer.build(input_shape)
        out_dim = int(self._kernel.shape[-1])
        self.u = self.add_weight(
            name="sn_u",
            shape=(1, out_dim),
            initializer=keras.initializers.RandomNormal(stddev=1.0),
            trainable=False,
            dtype="float32",
            aggregation="mean",
            autocast=False,
        )
        self.built = True

    def power_iteration(self, w_mat):
        """(sigma, u_new) for the float32 kernel matrix [fan_in, out], u and v constant in the gradient.

        The reshape to [fan_in, out] keeps the spectral norm of SN-GAN's [out, fan_in] matrix.
        """
        u = tf.convert_to_tensor(self.u)
        v = None
        for _ in range(self.power_iterations):
            v = _l2_normalize(tf.matmul(u, w_mat, transpose_b=True), self.eps)  # [1, fan_in]
            u = _l2_normalize(tf.matmul(v, w_mat), self.eps)  # [1, out]
        u = tf.stop_gradient(u)
        v = tf.stop_gradient(v)
        sigma = tf.squeeze(tf.matmul(tf.matmul(v, w_mat), u, transpose_b=True))
        return sigma, u

    def normalized_kernel(self, training=False):
        """W / sigma(W) in float32, shaped like the raw kernel. Updates u when training."""
        with AutocastScope(None):
            w = tf.cast(tf.convert_to_tensor(self._kernel), tf.float32)
        sigma, u_new = self.power_iteration(tf.reshape(w, [-1, w.shape[-1]]))
        if training:
            self.u.assign(u_new)
        return w / sigma

    def call(self, inputs, training=None):
        kernel = self.normalized_kernel(training=bool(training))
        layer = self.layer
        dtype = layer.compute_dtype
        kernel = tf.cast(kernel, dtype)
        if isinstance(layer, layers.Embedding):
            return tf.gather(kernel, tf.cast(inputs, tf.int32))
        x = tf.cast(inputs, dtype)
        if isinstance(layer, layers.Dense):  # matmul for a batch of vectors: tensordot adds ~20 reshaping ops
            y = (tf.matmul(x, kernel) if x.shape.rank == 2
                 else tf.tensordot(x, kernel, axes=[[x.shape.rank - 1], [0]]))
        else:  # Conv2D, channels_last
            if layer.data_format != "channels_last":
                raise ValueError("SpectralNorm supports channels_last Conv2D only.")
            y = tf.nn.conv2d(
                x,
                kernel,
                strides=(1, *layer.strides, 1),
                padding=layer.padding.upper(),
                dilations=(1, *layer.dilation_rate, 1),
            )
        if layer.use_bias:
            with AutocastScope(None):
                y = y + tf.cast(layer.bias, dtype)
        if layer.activation is not None:
            y = layer.activation(y)
        return y

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(power_iterations=self.power_iterations, eps=self.eps)
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ConditionalBatchNorm(layers.Layer):
    """Categorical conditional BN: BN without affine, then per-class gamma (init 1) and beta (init 0)."""

    def __init__(self, num_classes, epsilon=2e-5, momentum=0.9, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.epsilon = float(epsilon)
        self.momentum = float(momentum)
        self.bn = BatchNorm(center=False, scale=False, epsilon=self.epsilon, momentum=self.momentum, name="bn")

    def build(self, input_shape):
        channels = int(input_shape[-1])
        self.bn.build(input_shape)
        self.gamma = self.add_weight(
            name="gamma", shape=(self.num_classes, channels), initializer="ones"
        )
        self.beta = self.add_weight(
            name="beta", shape=(self.num_classes, channels), initializer="zeros"
        )
        self.built = True

    def call(self, inputs, labels, training=None, batch_statistics=False):
        x = self.bn(inputs, training=training, batch_statistics=batch_statistics)
        labels = tf.cast(labels, tf.int32)
        shape = [-1, 1, 1, self.gamma.shape[-1]]  # one reshape each; [:, None, None, :] builds several ops
        gamma = tf.reshape(tf.cast(tf.gather(self.gamma, labels), x.dtype), shape)
        beta = tf.reshape(tf.cast(tf.gather(self.beta, labels), x.dtype), shape)
        return gamma * x + beta

    def compute_output_shape(self, input_shape, labels_shape=None):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, epsilon=self.epsilon, momentum=self.momentum)
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class BatchNorm(layers.BatchNormalization):
    """BatchNormalization whose moving statistics stay identical on every replica and worker.

    Keras 3 creates the moving mean/variance without an aggregation, so under tf.distribute each
    replica keeps its own copy and checkpoints record one replica's. Here they are MEAN-aggregated:
    every update writes the mean of the replicas' updates everywhere (what Keras 2 did). Batch
    statistics stay per-replica, as in PyTorch DDP and the authors' code.
    """

    def add_weight(self, *args, **kwargs):
        if kwargs.get("name") in ("moving_mean", "moving_variance"):
            kwargs["aggregation"] = "mean"
        return super().add_weight(*args, **kwargs)

    def call(self, inputs, training=None, mask=None, batch_statistics=False):
        """`batch_statistics=True` outside training normalises with the batch's own mean and (biased) variance
        and leaves the moving averages untouched: how the authors' generator, never put in eval mode, is
        sampled. Unlike training=True it also applies to a frozen layer (trainable=False)."""
        if training or not batch_statistics:
            return super().call(inputs, training=training, mask=mask)
        x = tf.cast(inputs, tf.float32)  # statistics in float32, as Keras computes them under mixed precision
        mean, variance = self._moments(x, mask)
        gamma = tf.cast(self.gamma, tf.float32) if self.scale else None
        beta = tf.cast(self.beta, tf.float32) if self.center else None
        out = tf.nn.batch_normalization(x, mean, variance, beta, gamma, self.epsilon)
        return tf.cast(out, self.compute_dtype)


def _maybe_sn(layer, spectral_norm):
    return SpectralNorm(layer) if spectral_norm else layer


def upsample2x(x):
    """Nearest-neighbour 2x upsampling (NHWC): out[2i + a, 2j + b] = x[i, j].

    Tiling the channels four times and moving them into 2x2 blocks is two graph ops; tf.repeat twice built
    about 40 (with their gradients) and made tracing a generator block several times slower.
    """
    return tf.nn.depth_to_space(tf.tile(x, [1, 1, 1, 4]), 2)


def downsample2x(x):
    """2x2 average pooling (NHWC)."""
    return tf.nn.avg_pool2d(x, ksize=2, strides=2, padding="VALID")


@keras.saving.register_keras_serializable(package=_PACKAGE)
class GeneratorBlock(layers.Layer):
    """SN-GAN generator block: CBN-ReLU-up-conv3x3-CBN-ReLU-conv3x3, plus an (up, 1x1) shortcut.

    cbn_momentum is Keras's (moving = momentum * moving + (1 - momentum) * batch): 0.9 is Chainer's decay in
    SN-GAN; the Rob-GAN authors pass decay=0.9 to PyTorch's batch_norm as its momentum, i.e. Keras's 0.1."""

    def __init__(self, out_channels, num_classes, upsample=True, cbn_momentum=0.9, **kwargs):
        super().__init__(**kwargs)
        self.out_channels = int(out_channels)
        self.num_classes = int(num_classes)
        self.upsample = bool(upsample)
        self.cbn_momentum = float(cbn_momentum)
        self.cbn1 = ConditionalBatchNorm(num_classes, momentum=self.cbn_momentum, name="cbn1")
        self.conv1 = layers.Conv2D(out_channels, 3, padding="same", kernel_initializer=residual_init(), name="conv1")
        self.cbn2 = ConditionalBatchNorm(num_classes, momentum=self.cbn_momentum, name="cbn2")
        self.conv2 = layers.Conv2D(out_channels, 3, padding="same", kernel_initializer=residual_init(), name="conv2")
        self.shortcut = None

    def build(self, input_shape):
        in_ch = int(input_shape[-1])
        if in_ch != self.out_channels or self.upsample:
            self.shortcut = layers.Conv2D(self.out_channels, 1, kernel_initializer=plain_init(), name="shortcut")
        self.built = True

    def call(self, x, labels, training=None, batch_statistics=False):
        h = tf.nn.relu(self.cbn1(x, labels, training=training, batch_statistics=batch_statistics))
        if self.upsample:
            h = upsample2x(h)
            x = upsample2x(x)
        h = self.conv1(h)
        h = tf.nn.relu(self.cbn2(h, labels, training=training, batch_statistics=batch_statistics))
        h = self.conv2(h)
        if self.shortcut is not None:
            x = self.shortcut(x)
        return h + x

    def get_config(self):
        config = super().get_config()
        config.update(out_channels=self.out_channels, num_classes=self.num_classes, upsample=self.upsample,
                      cbn_momentum=self.cbn_momentum)
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class DiscriminatorBlock(layers.Layer):
    """SN-GAN discriminator block (also the Rob-GAN authors' block).

    Residual branch: ReLU-conv3x3(in -> in)-ReLU-conv3x3(in -> out)-[pool]: the hidden width is the
    block's INPUT width, as in SN-GAN and the authors' code. The shortcut is conv1x1-[pool] when the
    shape changes, else the identity.

    optimized=True is SN-GAN's first block, which sees raw pixels: conv3x3(in -> out)-ReLU-conv3x3-pool,
    shortcut pool-conv1x1 (no leading ReLU).

    norm="batch" is the authors' placement: BatchNorm right AFTER each conv, the shortcut conv
    included (conv-BN-ReLU-conv-BN), not before the ReLU as in pre-activation ResNets.
    spectral_norm wraps every conv; use_bias=False drops the conv biases (the authors have none).
    """

    def __init__(self, out_channels, downsample=True, optimized=False, spectral_norm=True,
                 norm=None, use_bias=True, **kwargs):
        super().__init__(**kwargs)
        if norm not in (None, "batch"):
            raise ValueError(f"norm must be None or 'batch', got {norm!r}.")
        self.out_channels = int(out_channels)
        self.downsample = bool(downsample)
        self.optimized = bool(optimized)
        self.spectral_norm = bool(spectral_norm)
        self.norm = norm
        self.use_bias = bool(use_bias)
        self.shortcut = None

    def _conv(self, channels, size, name, init):
        conv = layers.Conv2D(channels, size, padding="same", use_bias=self.use_bias, kernel_initializer=init,
                             name=name)
        return _maybe_sn(conv, self.spectral_norm)

    def _bn(self, name):
        return BatchNorm(momentum=0.9, epsilon=1e-5, name=name) if self.norm else None

    def build(self, input_shape):
        in_ch = int(input_shape[-1])
        hidden = self.out_channels if self.optimized else in_ch
        self.conv1 = self._conv(hidden, 3, "conv1", residual_init())
        self.conv2 = self._conv(self.out_channels, 3, "conv2", residual_init())
        self.bn1, self.bn2 = self._bn("bn1"), self._bn("bn2")
        self.bn_sc = None
        if self.optimized or in_ch != self.out_channels or self.downsample:
            self.shortcut = self._conv(self.out_channels, 1, "shortcut", plain_init())
            self.bn_sc = self._bn("bn_sc")
        self.built = True

    @staticmethod
    def _norm(bn, h, training):
        return h if bn is None else bn(h, training=training)

    def call(self, x, training=None):
        h = x if self.optimized else tf.nn.relu(x)
        h = tf.nn.relu(self._norm(self.bn1, self.conv1(h, training=training), training))
        h = self._norm(self.bn2, self.conv2(h, training=training), training)
        if self.downsample:
            h = downsample2x(h)
        if self.shortcut is not None:
            if self.optimized:  # pool first: the 1x1 conv then runs on 4x fewer pixels (same result)
                x = self._norm(self.bn_sc, self.shortcut(downsample2x(x) if self.downsample else x,
                                                         training=training), training)
            else:
                x = self._norm(self.bn_sc, self.shortcut(x, training=training), training)
                if self.downsample:
                    x = downsample2x(x)
        return h + x

    def get_config(self):
        config = super().get_config()
        config.update(out_channels=self.out_channels, downsample=self.downsample, optimized=self.optimized,
                      spectral_norm=self.spectral_norm, norm=self.norm, use_bias=self.use_bias)
        return config


def torch_default_init():
    """PyTorch's default Conv/Linear weight init (kaiming_uniform, a=sqrt(5)): U(+-1/sqrt(fan_in))."""
    return keras.initializers.VarianceScaling(scale=1.0 / 3.0, mode="fan_in", distribution="uniform")


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PreActBlock(layers.Layer):
    """The Rob-GAN authors' PreActResNet basic block (their CIFAR classifier, BN removed).

    out = conv3x3(lrelu(conv3x3_stride(lrelu(x)))) + shortcut, with leaky ReLU slope 0.2 and no
    normalisation (the authors commented BN out). The shortcut is conv1x1_stride(lrelu(x)) when the shape
    changes, else x itself. Convs have no bias; Kaiming-normal (fan_out) init as the authors set it.
    A strided 3x3 conv pads one pixel on every side (PyTorch's padding=1), not TF's asymmetric "same".
    """

    def __init__(self, out_channels, stride=1, spectral_norm=False, **kwargs):
        super().__init__(**kwargs)
        self.out_channels, self.stride, self.spectral_norm = int(out_channels), int(stride), bool(spectral_norm)
        if self.stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}.")
        kaiming = keras.initializers.VarianceScaling(2.0, mode="fan_out", distribution="untruncated_normal")
        self.conv1 = _maybe_sn(layers.Conv2D(self.out_channels, 3, strides=self.stride, padding="valid",
                                             use_bias=False, kernel_initializer=kaiming, name="conv1"),
                               self.spectral_norm)
        self.conv2 = _maybe_sn(layers.Conv2D(self.out_channels, 3, padding="same", use_bias=False,
                                             kernel_initializer=kaiming, name="conv2"), self.spectral_norm)
        self.shortcut = None

    def build(self, input_shape):
        if self.stride != 1 or int(input_shape[-1]) != self.out_channels:
            self.shortcut = _maybe_sn(layers.Conv2D(self.out_channels, 1, strides=self.stride, use_bias=False,
                                                    kernel_initializer=torch_default_init(), name="shortcut"),
                                      self.spectral_norm)
        self.built = True

    def call(self, x, training=None):
        a = tf.nn.leaky_relu(x, 0.2)
        sc = x if self.shortcut is None else self.shortcut(a, training=training)
        h = self.conv1(tf.pad(a, [[0, 0], [1, 1], [1, 1], [0, 0]]), training=training)
        h = self.conv2(tf.nn.leaky_relu(h, 0.2), training=training)
        return h + sc

    def get_config(self):
        config = super().get_config()
        config.update(out_channels=self.out_channels, stride=self.stride, spectral_norm=self.spectral_norm)
        return config


__all__ = [
    "SpectralNorm", "ConditionalBatchNorm", "BatchNorm", "GeneratorBlock", "DiscriminatorBlock",
    "PreActBlock", "upsample2x", "downsample2x", "residual_init", "plain_init", "torch_default_init",
]
