import os

import numpy as np
import pytest
import tensorflow as tf

from robgan_tf import quality
from robgan_tf.data import DatasetInfo, Source


def test_quantize_and_inception_preprocess_known_values():
    x = tf.constant([-1.0, 1.0, 0.0, 1.5, -0.5])
    np.testing.assert_array_equal(quality.quantize(x).numpy(), [0, 255, 128, 255, 64])
    # real data arrive as uint8 / 127.5 - 1: quantising gives back exactly the stored bytes
    u = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(quality.quantize(tf.cast(u, tf.float32) / 127.5 - 1.0).numpy(), u)
    np.testing.assert_array_equal(quality.tf_inception_input(tf.cast(u, tf.float32)[None, :, None, None] / 127.5 - 1.0)
                                  .numpy(), np.repeat(u.astype(np.float32)[None, :, None, None], 3, axis=-1))
    grey = tf.fill([2, 8, 8, 1], 0.0)  # quantises to 128
    out = quality.inception_preprocess(grey)
    assert out.shape == (2, 299, 299, 3)
    np.testing.assert_allclose(out.numpy(), 128 / 127.5 - 1, atol=1e-6)


class _LabelPainter:
    """A 'generator' whose images carry their label as brightness, and a classifier that reads it."""

    num_classes, z_dim = 10, 4

    def __call__(self, z, labels, training=False):
        v = tf.cast(labels, tf.float32)[:, None, None, None] / 10.0 - 0.45
        return tf.tile(v, [1, 4, 4, 1])


def _reader(images, training=False):
    k = tf.cast(tf.round((tf.reduce_mean(images, [1, 2, 3]) + 0.45) * 10.0), tf.int32)
    return 50.0 * tf.one_hot(k, 10)


def test_classifier_backend_inception_score_and_label_accuracy():
    backend = quality.ClassifierBackend(_reader)
    result = quality.generator_metrics(backend, _LabelPainter(), num_samples=2000, splits=10)
    assert 9.5 < result["inception_score"] <= 10.0 + 1e-6  # one-hot and (nearly) uniform labels: IS ~ K
    assert "not comparable" in result["backend_label"] and "fid" not in result
    acc = quality.per_class_label_accuracy(_LabelPainter(), _reader, n_per_class=5)
    assert acc == [1.0] * 10


def test_real_statistics_are_cached_with_metadata(tmp_path):
    rng = np.random.default_rng(0)
    src = Source(rng.integers(0, 256, (40, 4, 4, 1), dtype=np.uint8), rng.integers(0, 10, 40).astype(np.int32),
                 DatasetInfo("tiny", "train", 10, tuple("0123456789"), (4, 4, 1), 40, True))
    backend = quality.ClassifierBackend(lambda x, training=False: tf.reshape(x, [tf.shape(x)[0], -1]))
    cache = str(tmp_path / "stats.npz")
    mu, sigma, kid_real = quality.real_statistics(backend, src, cache, batch_size=16)
    flat = src.images.reshape(40, -1).astype(np.float64) / 127.5 - 1
    np.testing.assert_allclose(kid_real, flat, atol=1e-6)  # fewer than KID_REAL_SAMPLE rows: all of them, in order
    np.testing.assert_allclose(mu, flat.mean(0), atol=1e-6)
    np.testing.assert_allclose(sigma, np.cov(flat, rowvar=False), atol=1e-6)
    assert os.path.exists(cache)
    src.images[:] = 0  # a cache hit does not recompute
    mu2, _, _ = quality.real_statistics(backend, src, cache)
    np.testing.assert_array_equal(mu, mu2)
    # FID of generated images: against the cached statistics, equal to the closed form on the same features
    painter = _LabelPainter()

    class Doubled(_LabelPainter):
        def __call__(self, z, labels, training=False):
            return painter(z, labels) * 2

    out = quality.generator_metrics(backend, Doubled(), source=src, num_samples=300, cache_path=cache, batch_size=64,
                                    seed=3)
    gen = np.concatenate([backend.features(x * 2) for x in quality.generated_batches(painter, 300, 64, 3)])
    np.testing.assert_allclose(out["fid"], quality.frechet_distance(mu, sigma, gen.mean(0), np.cov(gen, rowvar=False)),
                               rtol=1e-6)
    assert out["fid"] > 1.0 and out["fid_reference"] == "tiny/train (40 images)"
    assert (out["kid"], out["kid_std"]) == quality.kernel_inception_distance(kid_real, gen, seed=3)
    assert out["kid"] > 0 and out["comparable_sample_count"] is False


def test_keras_inception_backend_needs_a_local_file_and_checks_sha256(tmp_path):
    with pytest.raises(FileNotFoundError, match=quality.KERAS_INCEPTION_FILE + ".*storage.googleapis"):
        quality.KerasInceptionBackend(str(tmp_path / "missing.h5"))
    fake = tmp_path / "w.h5"
    fake.write_bytes(b"not weights")
    with pytest.raises(ValueError, match="sha256"):
        quality.KerasInceptionBackend(str(fake), expected_sha256="0" * 64)


def test_keras_inception_backend_loads_a_legacy_h5_file(tmp_path):
    """The real file is a legacy Keras .h5; one written from a randomly initialised InceptionV3 stands in."""
    import h5py
    import keras
    from keras.src.legacy.saving import legacy_h5_format

    keras.utils.set_random_seed(0)
    source = keras.applications.InceptionV3(weights=None, include_top=True)
    path = tmp_path / quality.KERAS_INCEPTION_FILE
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, source)
    backend = quality.KerasInceptionBackend(str(path), expected_sha256=quality.sha256_of(str(path)))
    images = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    pooled = keras.Model(source.input, source.get_layer("avg_pool").output)
    ref = pooled(quality.inception_preprocess(images)).numpy()
    np.testing.assert_allclose(backend.features(images), ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(backend.outputs(images)[0], source(quality.inception_preprocess(images)).numpy(),
                               rtol=1e-5, atol=1e-7)
    # the weights themselves were loaded, each into its own layer (outputs alone could match by accident); the
    # two networks' layers have other unique names, so they pair up in order
    assert len(backend.model.weights) == len(source.weights) > 300
    for loaded, saved in zip(backend.model.weights, source.weights):
        np.testing.assert_array_equal(loaded.numpy(), saved.numpy(), err_msg=saved.path)


def test_inception_score_known_answers():
    uniform = np.full((1000, 7), 1 / 7)
    assert quality.inception_score(uniform)[0] == pytest.approx(1.0, abs=1e-6)
    onehot = np.eye(10)[np.arange(1000) % 10]  # one-hot, spread evenly over K = 10 classes in every split
    mean, std = quality.inception_score(onehot, splits=10)
    assert mean == pytest.approx(10.0, rel=1e-6) and std == pytest.approx(0.0, abs=1e-6)


def test_frechet_distance_known_answers():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5000, 4)) @ rng.normal(size=(4, 4))
    mu, sigma = quality.feature_statistics(a)
    assert quality.frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-8)
    # two Gaussians: ||m1 - m2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)); diagonal covariances give a closed form
    m1, m2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    s1, s2 = np.diag([1.0, 4.0, 9.0]), np.diag([4.0, 1.0, 1.0])
    expected = 1 + 0 + 4 + (1 + 4 - 4) + (4 + 1 - 4) + (9 + 1 - 6)
    assert quality.frechet_distance(m1, s1, m2, s2) == pytest.approx(expected, rel=1e-9)
    # a non-diagonal pair against scipy's matrix square root
    from scipy import linalg

    c1 = np.cov(a, rowvar=False)
    c2 = np.cov(rng.normal(size=(5000, 4)) * [1, 2, 3, 4], rowvar=False)
    ref = np.trace(c1 + c2 - 2 * linalg.sqrtm(c1 @ c2).real)
    assert quality.frechet_distance(np.zeros(4), c1, np.zeros(4), c2) == pytest.approx(ref, rel=1e-6)
    # against a feature set: the same number, by the n x n route when there are fewer rows than dimensions (to
    # 1e-7: the d x d route adds the square roots of its zero eigenvalues' rounding noise, the n x n route has none)
    real = rng.normal(size=(400, 64)) @ rng.normal(size=(64, 64))
    m_r, s_r = quality.feature_statistics(real)
    for n in (2, 20, 64, 65, 300):
        fake = rng.normal(1.0, 2.0, size=(n, 64)) @ rng.normal(size=(64, 64))
        assert quality.frechet_distance_to(m_r, s_r, fake) == pytest.approx(
            quality.frechet_distance(m_r, s_r, *quality.feature_statistics(fake)), rel=1e-7), n
    with pytest.raises(ValueError, match="at least 2 feature rows"):
        quality.frechet_distance_to(m_r, s_r, fake[:1])


def _kid_by_loops(x, y):
    """The unbiased MMD^2 written term by term (one subset: all rows)."""
    d = x.shape[1]
    k = lambda a, b: (a @ b / d + 1) ** 3  # noqa: E731
    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_kernel_inception_distance_known_answers():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 5)), rng.normal(size=(30, 5)) + 0.5
    mean, std = quality.kernel_inception_distance(x, y, subsets=3, subset_size=30)
    assert mean == pytest.approx(_kid_by_loops(x, y), rel=1e-10) and std == pytest.approx(0.0, abs=1e-12)
    # unbiased: two samples of one distribution average ~0 (within a few standard errors), a shifted one does not
    a, b = rng.normal(size=(4000, 8)), rng.normal(size=(4000, 8))
    same, same_std = quality.kernel_inception_distance(a, b, subsets=50, subset_size=500)
    shifted, _ = quality.kernel_inception_distance(a, b + 0.3, subsets=50, subset_size=500)
    assert abs(same) < 3 * same_std / np.sqrt(50) + 1e-3 and shifted > 20 * abs(same)
