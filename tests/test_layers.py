import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

from robgan_tf.layers import (
    BatchNorm,
    ConditionalBatchNorm,
    DiscriminatorBlock,
    GeneratorBlock,
    SpectralNorm,
    downsample2x,
    upsample2x,
)


def spectral_norm_of(kernel):
    """The exact largest singular value of a kernel reshaped to [fan_in, out]."""
    w = tf.reshape(tf.cast(kernel, tf.float32), [-1, kernel.shape[-1]])
    return float(tf.linalg.svd(w, compute_uv=False)[0])


def _built(layer, x):
    layer(x, training=False)
    return layer


def _wrapped(kind):
    if kind == "dense":
        return SpectralNorm(layers.Dense(7)), tf.random.normal([4, 5])
    if kind == "conv":
        return SpectralNorm(layers.Conv2D(6, 3, padding="same")), tf.random.normal([2, 5, 5, 4])
    return SpectralNorm(layers.Embedding(9, 6)), tf.constant([0, 3, 8])


@pytest.mark.parametrize("kind", ["dense", "conv", "embedding"])
def test_sn_effective_kernel_has_unit_spectral_norm(kind):
    sn, x = _wrapped(kind)
    sn(x, training=False)
    # Make sigma(W) far from 1 so the test would catch a missing normalisation.
    sn._kernel.assign(tf.random.normal(sn._kernel.shape) * 3.0)
    raw_sigma = spectral_norm_of(sn._kernel)
    assert raw_sigma > 2.0
    for _ in range(60):  # power iteration converges over training calls
        sn(x, training=True)
    eff = sn.normalized_kernel(training=False)
    w = tf.reshape(eff, [-1, eff.shape[-1]]).numpy()
    _, s, vt = np.linalg.svd(w, full_matrices=False)
    np.testing.assert_allclose(s[0], 1.0, rtol=1e-3)
    # gain along the raw kernel's top singular direction is 1
    raw = tf.reshape(sn._kernel, [-1, eff.shape[-1]]).numpy()
    u_raw, _, _ = np.linalg.svd(raw, full_matrices=False)
    np.testing.assert_allclose(np.linalg.norm(u_raw[:, 0] @ w), 1.0, rtol=1e-3)
    # the raw kernel is untouched (not overwritten as keras.layers.SpectralNormalization does)
    np.testing.assert_allclose(spectral_norm_of(sn._kernel), raw_sigma, rtol=1e-6)


def test_sn_forward_uses_normalised_kernel():
    sn, x = _wrapped("dense")
    y = sn(x, training=False)
    expected = x @ sn.normalized_kernel(training=False) + sn.layer.bias
    np.testing.assert_allclose(y.numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)
    # in a graph with an unknown batch size (a training step's), a batch of vectors is one MatMul: tensordot's
    # dynamic reshaping was ~20 ops per call
    graph = tf.function(lambda v: sn(v, training=False)).get_concrete_function(tf.TensorSpec([None, 5])).graph
    assert not [op.name for op in graph.get_operations() if "Tensordot" in op.name]
    x3 = tf.random.normal([2, 3, 5])  # rank 3: over the last axis, as Keras' Dense
    np.testing.assert_allclose(sn(x3, training=False), tf.reshape(sn(tf.reshape(x3, [6, 5]), training=False),
                                                                  [2, 3, 7]), rtol=1e-6)


def test_sn_conv_matches_keras_conv_with_normalised_kernel():
    sn, x = _wrapped("conv")
    sn(x, training=False)
    ref = layers.Conv2D(6, 3, padding="same")
    ref.build(x.shape)
    ref.kernel.assign(sn.normalized_kernel(training=False))
    ref.bias.assign(sn.layer.bias)
    np.testing.assert_allclose(sn(x, training=False).numpy(), ref(x).numpy(), rtol=1e-4, atol=1e-5)


def test_sn_u_updates_only_in_training():
    sn, x = _wrapped("dense")
    sn(x, training=False)
    u0 = sn.u.numpy().copy()
    sn(x, training=False)
    sn(x)  # training defaults to inference
    np.testing.assert_array_equal(sn.u.numpy(), u0)
    sn(x, training=True)
    assert not np.allclose(sn.u.numpy(), u0)
    assert sn.u in sn.non_trainable_weights and sn.layer.kernel in sn.trainable_weights


def test_sn_gradient_flows_through_sigma_with_u_v_constant():
    sn, x = _wrapped("dense")
    sn(x, training=False)
    r = tf.random.normal([4, 7])
    kernel = sn.layer.kernel
    u = tf.constant(sn.u.numpy())

    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(sn(x, training=False) * r)
    g_layer = tape.gradient(loss, kernel)

    # Explicit reference: one power iteration from the stored u, u and v constants.
    with tf.GradientTape(persistent=True) as tape:
        w = tf.convert_to_tensor(kernel)
        v = tf.stop_gradient(tf.math.l2_normalize(u @ tf.transpose(w)))
        u1 = tf.stop_gradient(tf.math.l2_normalize(v @ w))
        sigma = tf.squeeze(v @ w @ tf.transpose(u1))
        loss_ref = tf.reduce_sum((x @ (w / sigma) + sn.layer.bias) * r)
        loss_const = tf.reduce_sum((x @ (w / tf.stop_gradient(sigma)) + sn.layer.bias) * r)
    g_ref = tape.gradient(loss_ref, kernel)
    g_const = tape.gradient(loss_const, kernel)
    np.testing.assert_allclose(g_layer.numpy(), g_ref.numpy(), rtol=1e-4, atol=1e-6)
    # ... and that is not the gradient one gets by treating sigma as a constant.
    assert np.abs(g_layer.numpy() - g_const.numpy()).max() > 1e-3


def test_sn_mixed_precision_computes_norm_in_float32():
    keras.mixed_precision.set_global_policy("mixed_float16")
    sn = SpectralNorm(layers.Dense(7))
    x = tf.random.normal([4, 5])
    sn(x, training=True)  # an update under the mixed policy keeps u in float32
    y = sn(x, training=False)
    assert y.dtype == tf.float16
    assert sn.u.dtype == "float32" and sn.layer.kernel.dtype == "float32"
    expected = x @ sn.normalized_kernel(training=False) + sn.layer.bias
    np.testing.assert_allclose(y.numpy().astype(np.float32), expected.numpy(), rtol=1e-2, atol=1e-2)


def test_sn_rejects_unsupported_layers():
    with pytest.raises(ValueError, match="Conv2D, Dense or Embedding"):
        SpectralNorm(layers.LSTM(3))
    with pytest.raises(ValueError, match="power_iterations"):
        SpectralNorm(layers.Dense(3), power_iterations=0)


def test_conditional_bn_is_per_class():
    cbn = ConditionalBatchNorm(3)
    x = tf.random.normal([4, 2, 2, 5]) * 3.0 + 1.0
    cbn(x, tf.zeros([4], tf.int32), training=False)
    gamma = np.ones((3, 5), np.float32)
    beta = np.zeros((3, 5), np.float32)
    gamma[1], beta[1] = 2.0, 0.5
    cbn.gamma.assign(gamma)
    cbn.beta.assign(beta)
    # Same inputs, labels 0 and 1: training-mode BN normalises with batch statistics.
    xb = tf.concat([x[:1], x[:1]], 0)
    xb = tf.concat([xb, x[2:]], 0)
    y = cbn(xb, tf.constant([0, 1, 0, 0]), training=True).numpy()
    mean = xb.numpy().mean(axis=(0, 1, 2))
    var = xb.numpy().var(axis=(0, 1, 2))
    normed = (xb.numpy() - mean) / np.sqrt(var + 2e-5)
    np.testing.assert_allclose(y[0], normed[0], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(y[1], 2.0 * normed[1] + 0.5, rtol=1e-4, atol=1e-4)
    assert cbn.epsilon == 2e-5
    assert np.abs(y[0] - y[1]).max() > 0.1


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_batch_statistics_outside_training_normalise_by_the_batch_and_update_nothing(policy):
    bn = BatchNorm(epsilon=1e-3, momentum=0.9, dtype=policy)
    x = np.random.default_rng(0).normal(2.0, 3.0, (6, 3, 3, 4)).astype(np.float32)
    bn.build(x.shape)
    bn.gamma.assign(np.arange(1, 5, dtype=np.float32))
    bn.beta.assign(np.full(4, 0.5, np.float32))
    bn.moving_mean.assign(np.full(4, 7.0, np.float32))
    bn.trainable = False  # a frozen G (fine-tuning): training=True would fall back to the moving statistics
    out = bn(tf.constant(x), training=False, batch_statistics=True)
    # the biased variance over N, H, W, as torch's batch_norm normalises in training mode
    mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
    expected = (x - mean) / np.sqrt(var + 1e-3) * np.arange(1, 5) + 0.5
    tol = 1e-5 if policy == "float32" else 5e-2  # bfloat16 output: 8 bits of mantissa
    np.testing.assert_allclose(np.asarray(tf.cast(out, tf.float32)), expected, atol=tol * np.abs(expected).max())
    assert out.dtype == bn.compute_dtype
    np.testing.assert_array_equal(bn.moving_mean.numpy(), np.full(4, 7.0))
    np.testing.assert_array_equal(bn.moving_variance.numpy(), np.ones(4))
    # without the flag, inference mode reads the moving statistics
    np.testing.assert_allclose(bn(tf.constant(x), training=False), (x - 7.0) / np.sqrt(1 + 1e-3) * np.arange(1, 5)
                               + 0.5, rtol=1e-5, atol=1e-4 if policy == "float32" else 0.2)


def test_conditional_bn_init_is_identity_affine():
    cbn = ConditionalBatchNorm(4)
    x = tf.random.normal([3, 2, 2, 6])
    cbn(x, tf.constant([0, 1, 3]), training=False)
    np.testing.assert_array_equal(cbn.gamma.numpy(), np.ones((4, 6)))
    np.testing.assert_array_equal(cbn.beta.numpy(), np.zeros((4, 6)))
    assert len(cbn.trainable_weights) == 2  # the inner BN has no affine parameters


def test_resampling_known_answers():
    x = tf.reshape(tf.range(16, dtype=tf.float32), [1, 4, 4, 1])
    down = downsample2x(x)[0, :, :, 0].numpy()
    np.testing.assert_array_equal(down, [[2.5, 4.5], [10.5, 12.5]])
    up = upsample2x(tf.constant([[[[1.0], [2.0]]]]))[0, :, :, 0].numpy()
    np.testing.assert_array_equal(up, [[1, 1, 2, 2], [1, 1, 2, 2]])


def test_generator_block_shapes_and_shortcut():
    x = tf.random.normal([2, 4, 4, 8])
    y = tf.constant([0, 1])
    up = GeneratorBlock(16, 3, upsample=True)
    assert up(x, y, training=True).shape == (2, 8, 8, 16)
    assert up.shortcut is not None
    same = GeneratorBlock(8, 3, upsample=False)
    assert same(x, y, training=True).shape == (2, 4, 4, 8)
    assert same.shortcut is None


def test_generator_block_is_residual():
    """With the residual branch's last conv zeroed, the block is exactly its shortcut."""
    x = tf.random.normal([2, 4, 4, 8])
    block = GeneratorBlock(8, 3, upsample=False)
    block(x, tf.constant([0, 1]), training=False)
    block.conv2.kernel.assign(tf.zeros_like(block.conv2.kernel))
    block.conv2.bias.assign(tf.zeros_like(block.conv2.bias))
    np.testing.assert_allclose(block(x, tf.constant([0, 1]), training=False).numpy(), x.numpy(), atol=1e-6)


@pytest.mark.parametrize("optimized", [True, False])
def test_discriminator_block_shapes_and_residual(optimized):
    x = tf.random.normal([2, 8, 8, 3 if optimized else 16])
    block = DiscriminatorBlock(16, downsample=True, optimized=optimized, spectral_norm=False)
    y = block(x, training=False)
    assert y.shape == (2, 4, 4, 16)
    assert block.shortcut is not None
    # zero the residual branch: output = pooled 1x1 conv of the input (pool and 1x1 conv commute)
    block.conv2.kernel.assign(tf.zeros_like(block.conv2.kernel))
    block.conv2.bias.assign(tf.zeros_like(block.conv2.bias))
    sc = block.shortcut
    expected = downsample2x(tf.nn.conv2d(x, sc.kernel, 1, "VALID") + sc.bias)
    np.testing.assert_allclose(block(x, training=False).numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)


def test_discriminator_block_spectral_norm_wraps_every_conv():
    block = DiscriminatorBlock(16, downsample=True, spectral_norm=True)
    block(tf.random.normal([2, 8, 8, 4]), training=False)
    assert all(isinstance(c, SpectralNorm) for c in (block.conv1, block.conv2, block.shortcut))
    with pytest.raises(ValueError, match="norm"):
        DiscriminatorBlock(8, norm="layer")
