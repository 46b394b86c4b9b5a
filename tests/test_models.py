import keras
import numpy as np
import pytest
import tensorflow as tf

from robgan_tf.layers import DiscriminatorBlock, PreActBlock, SpectralNorm
from robgan_tf.models import PRESETS, Discriminator, Generator, count_params, get_spec

CASES = [("tiny", 32, 1), ("tiny", 32, 3), ("tiny", 64, 3), ("tiny", 128, 1), ("sngan", 32, 3),
         ("authors", 32, 3)]


@pytest.mark.parametrize("preset,res,ch", CASES)
def test_generator_and_discriminator_shapes_dtypes_range(preset, res, ch):
    g = Generator(5, res, preset, channels=ch, z_dim=16)
    d = Discriminator(5, res, preset, channels=ch)
    z = tf.random.normal([3, 16]) * 10.0  # large z pushes tanh toward its limits
    x = g(z, tf.constant([0, 2, 4]), training=True)
    assert x.shape == (3, res, res, ch) and x.dtype == tf.float32
    assert float(tf.reduce_max(tf.abs(x))) <= 1.0
    logit, cls = d(x, training=True)
    assert logit.shape == (3,) and cls.shape == (3, 5)
    assert logit.dtype == tf.float32 and cls.dtype == tf.float32


@pytest.mark.slow_build
@pytest.mark.parametrize("res", [64, 128])
def test_sngan_presets_build_at_64_and_128(res):
    g = Generator(143, res, "sngan")
    d = Discriminator(143, res, "sngan")
    x = g(tf.random.normal([1, 128]), tf.constant([142]), training=False)
    assert x.shape == (1, res, res, 3)
    logit, cls = d(x, training=False)
    assert cls.shape == (1, 143)
    # final D resolution: 2x2 at 64 px (5 downsamples), 4x4 at 128 px (last block keeps 4x4)
    assert 2 ** sum(down for _, down in d.spec.d_blocks) == res // (2 if res == 64 else 4)


# Trainable parameters of the authors' PyTorch models (train.py --model resnet_32 / resnet_64 / resnet_128,
# dis_models/preact_resnet.py), counted from their code: sum(p.numel() for p in model.parameters()).
AUTHORS_COUNTS = [(32, 10, 12_272_515, 1_056_395), (64, 143, 13_038_595, 10_283_024),
                  (128, 143, 10_606_339, 8_570_896)]


@pytest.mark.slow_build
@pytest.mark.parametrize("res,k,g_params,d_params", AUTHORS_COUNTS)
def test_authors_preset_parameter_counts_equal_theirs(res, k, g_params, d_params):
    g, d = Generator(k, res, "authors"), Discriminator(k, res, "authors")
    g.build_by_calling()
    d.build_by_calling()
    assert count_params(g) == g_params and count_params(d) == d_params
    # the authors' D: no SN, no conv biases; BatchNorm only at 32 px
    assert not d.spectral_norm and not d.use_bias and d.norm == ("batch" if res == 32 else None)
    assert not any(isinstance(layer, SpectralNorm) for layer in d._flatten_layers())
    if res == 32:
        assert PRESETS[("reference", 32)] is PRESETS[("authors", 32)]


def test_preact_resnet18_two_heads_parameter_count_and_padding():
    d = Discriminator(10, 32, "preact_resnet18")
    d.build_by_calling()
    assert count_params(d) == 11_164_875
    logit, cls = d(tf.zeros([2, 32, 32, 3]), training=False)
    assert logit.shape == (2,) and cls.shape == (2, 10)
    with pytest.raises(ValueError, match="discriminator only"):
        Generator(10, 32, "preact_resnet18")
    # A stride-2 3x3 conv pads one pixel on EVERY side (PyTorch's padding=1): with an all-ones kernel on an
    # all-ones map, output (0, 0) sums the 2x2 valid corner of its window (4), where TF's "same" would
    # pad only bottom/right and sum a full 3x3 window (9).
    block = PreActBlock(1, stride=2)
    block.build((1, 8, 8, 1))
    block.conv1.build((1, 10, 10, 1))
    block.conv1.kernel.assign(tf.ones([3, 3, 1, 1]))
    first = block.conv1(tf.pad(tf.ones([1, 8, 8, 1]), [[0, 0], [1, 1], [1, 1], [0, 0]]))
    assert first.shape == (1, 4, 4, 1) and float(first[0, 0, 0, 0]) == 4.0 and float(first[0, 1, 1, 0]) == 9.0


def test_discriminator_block_hidden_width_is_the_input_width():
    for preset, res, k in (("sngan", 64, 143), ("tiny", 32, 10)):
        d = Discriminator(k, res, preset)
        d.build_by_calling()
        widths = [3] + [ch for ch, _ in d.spec.d_blocks]
        for i, block in enumerate(d.blocks):
            conv1 = block.conv1.layer if isinstance(block.conv1, SpectralNorm) else block.conv1
            hidden = widths[i + 1] if block.optimized else widths[i]
            assert conv1.filters == hidden, (preset, i)
    # SN-GAN's 64 px projection-free D (with conv biases and SN): about SN-GAN's 10.3 M parameters
    d = Discriminator(143, 64, "sngan")
    d.build_by_calling()
    assert abs(count_params(d) - 10.3e6) < 0.02e6


def test_authors_block_puts_batchnorm_after_each_conv():
    """The block equals conv-BN-ReLU-conv-BN (+ conv-BN shortcut) written out with its own weights."""
    block = DiscriminatorBlock(6, downsample=True, spectral_norm=False, norm="batch", use_bias=False)
    x = tf.random.normal([2, 8, 8, 4])
    block(x, training=False)
    for bn in (block.bn1, block.bn2, block.bn_sc):  # non-trivial inference statistics and affine terms
        for w in bn.weights:
            w.assign(tf.random.uniform(w.shape, 0.5, 1.5))

    def bn(layer, h):
        g, b, m, v = (w.numpy() for w in (layer.gamma, layer.beta, layer.moving_mean, layer.moving_variance))
        return (h - m) / np.sqrt(v + layer.epsilon) * g + b

    def conv(layer, h):
        return tf.nn.conv2d(h, layer.kernel, 1, "SAME").numpy()

    pool = lambda h: tf.nn.avg_pool2d(h, 2, 2, "VALID").numpy()
    h = np.maximum(bn(block.bn1, conv(block.conv1, np.maximum(x.numpy(), 0))), 0)
    h = pool(bn(block.bn2, conv(block.conv2, h)))
    sc = pool(bn(block.bn_sc, conv(block.shortcut, x.numpy())))
    np.testing.assert_allclose(block(x, training=False).numpy(), h + sc, rtol=1e-4, atol=1e-4)


def test_sngan_discriminator_spectral_norm_everywhere():
    d = Discriminator(10, 32, "sngan")
    d.build_by_calling()
    convs_and_dense = [layer for layer in d._flatten_layers()
                       if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))]
    wrapped = {id(layer.layer) for layer in d._flatten_layers() if isinstance(layer, SpectralNorm)}
    # 8 residual convs, 2 shortcuts (the two downsampling blocks), 2 heads
    assert len(convs_and_dense) == 8 + 2 + 2
    assert all(id(layer) in wrapped for layer in convs_and_dense)
    no_sn = Discriminator(10, 32, "sngan", spectral_norm=False)
    no_sn.build_by_calling()
    assert not any(isinstance(layer, SpectralNorm) for layer in no_sn._flatten_layers())


def test_sngan_initialisation_gains():
    g = Generator(10, 32, "tiny")
    g.build_by_calling()
    block = g.blocks[0]
    for conv, gain2 in ((block.conv1, 2.0), (block.shortcut, 1.0)):
        w = conv.kernel.numpy()
        kh, kw, cin, cout = w.shape
        limit = np.sqrt(6.0 * gain2 / ((cin + cout) * kh * kw))
        assert np.abs(w).max() <= limit + 1e-7
        np.testing.assert_allclose(w.std(), limit / np.sqrt(3.0), rtol=0.08)


def test_generator_is_class_conditional():
    g = Generator(4, 32, "tiny", z_dim=8)
    g.build_by_calling()
    cbn = g.blocks[0].cbn1
    cbn.gamma.assign(tf.random.normal(cbn.gamma.shape) + 1.0)
    z = tf.tile(tf.random.normal([1, 8]), [2, 1])
    x = g(z, tf.constant([0, 3]), training=False)
    assert np.abs(x[0].numpy() - x[1].numpy()).max() > 1e-3


def test_classifier_view_shares_weights_and_matches_class_head():
    d = Discriminator(6, 32, "tiny", channels=1)
    clf = d.classifier()
    x = tf.random.uniform([3, 32, 32, 1], -1, 1)
    np.testing.assert_allclose(clf(x).numpy(), d(x)[1].numpy(), rtol=1e-6)
    assert {id(v) for v in clf.trainable_weights} == {id(v) for v in d.trainable_weights}
    # usable as a plain Keras model: fit changes the shared weights
    clf.compile(optimizer=keras.optimizers.SGD(0.01),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = d.dense_cls.layer.kernel.numpy().copy()
    clf.fit(x, np.array([0, 1, 2]), epochs=1, verbose=0)
    assert np.abs(d.dense_cls.layer.kernel.numpy() - before).max() > 0


def test_projection_head_logit_is_unconditional_plus_class_term():
    d = Discriminator(5, 32, "tiny", head="projection")
    x = tf.random.uniform([3, 32, 32, 3], -1, 1)
    y = tf.constant([4, 0, 2])
    logit, cls = d(x, y, training=False)
    h = d.features(x, training=False)
    psi = d.dense_adv(h, training=False)[:, 0]
    np.testing.assert_allclose(logit.numpy(), (psi + tf.gather(cls, y, batch_dims=1)).numpy(),
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="needs labels"):
        d(x, training=False)


def test_mixed_precision_outputs_float32():
    keras.mixed_precision.set_global_policy("mixed_float16")
    g = Generator(3, 32, "tiny", z_dim=8)
    d = Discriminator(3, 32, "tiny")
    x = g(tf.random.normal([2, 8]), tf.constant([0, 1]), training=True)
    logit, cls = d(x, training=True)
    assert x.dtype == logit.dtype == cls.dtype == tf.float32
    assert all(v.dtype == "float32" for v in g.weights + d.weights)
    assert np.isfinite(cls.numpy()).all()


def test_keras_save_load_round_trip(tmp_path):
    g = Generator(4, 32, "tiny", channels=1, z_dim=8)
    d = Discriminator(4, 32, "tiny", channels=1)
    z, y = tf.random.normal([3, 8]), tf.constant([0, 1, 3])
    for _ in range(2):  # move BN statistics and SN vectors away from their initial values
        d(g(z, y, training=True), training=True)
    clf = d.classifier()
    x = g(z, y, training=False)
    clf(x)
    for model, args in ((g, (z, y)), (d, (x,)), (clf, (x,))):
        path = tmp_path / f"{model.name}.keras"
        model.save(path)
        loaded = keras.saving.load_model(path)
        assert type(loaded) is type(model)
        out, ref = loaded(*args, training=False), model(*args, training=False)
        for a, b in zip(tf.nest.flatten(out), tf.nest.flatten(ref)):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)


def test_bad_arguments_are_rejected_clearly():
    with pytest.raises(ValueError, match="Unknown preset"):
        Generator(10, 32, "biggan")
    with pytest.raises(ValueError, match="no 64px architecture"):
        Discriminator(10, 64, "reference")
    with pytest.raises(ValueError, match="no normalisation and no conv biases"):
        Discriminator(10, 32, "preact_resnet18", norm="batch")
    with pytest.raises(ValueError, match="norm must be"):
        Discriminator(10, 32, "tiny", norm="layer")
    with pytest.raises(ValueError, match="channels"):
        Generator(10, 32, "tiny", channels=2)
    with pytest.raises(ValueError, match="head"):
        Discriminator(10, 32, "tiny", head="film")
    assert get_spec("sngan", 32) is PRESETS[("sngan", 32)]
