import keras
import numpy as np
import pytest
import tensorflow as tf

from robgan_tf.layers import DiscriminatorBlock, GeneratorBlock, SpectralNorm
from robgan_tf.models import PRESETS, Classifier, Discriminator, Generator, count_params, get_spec

CASES = [("tiny", 32, 1), ("tiny", 32, 3), ("tiny", 64, 3), ("tiny", 128, 1), ("sngan", 32, 3),
         ("reference", 32, 3)]


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


def test_reference_preset_parameter_counts():
    g = Generator(10, 32, "reference")
    d = Discriminator(10, 32, "reference")
    g.build_by_calling()
    d.build_by_calling()
    assert abs(count_params(g) - 12.27e6) / 12.27e6 < 0.01
    assert abs(count_params(d) - 1.06e6) / 1.06e6 < 0.02
    # the authors' D: BatchNorm, no SN, no conv biases
    assert d.norm == "batch" and not d.spectral_norm
    assert not any(isinstance(layer, SpectralNorm) for layer in d._flatten_layers())
    assert all(not b.conv1.use_bias for b in d.blocks)


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
    with pytest.raises(ValueError, match="channels"):
        Generator(10, 32, "tiny", channels=2)
    with pytest.raises(ValueError, match="head"):
        Discriminator(10, 32, "tiny", head="film")
    assert get_spec("sngan", 32) is PRESETS[("sngan", 32)]


def test_block_types_used():
    g = Generator(3, 32, "tiny")
    d = Discriminator(3, 32, "tiny")
    assert all(isinstance(b, GeneratorBlock) for b in g.blocks)
    assert all(isinstance(b, DiscriminatorBlock) for b in d.blocks) and d.blocks[0].optimized
    assert isinstance(d.classifier(), Classifier)
