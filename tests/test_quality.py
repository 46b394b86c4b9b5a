import os

import numpy as np
import pytest
import tensorflow as tf

from robgan_tf import quality
from robgan_tf.data import DatasetInfo, Source


def test_quantize_and_inception_preprocess_known_values():
    x = tf.constant([-1.0, 1.0, 0.0, 1.5, -0.5])
    np.testing.assert_array_equal(quality.quantize(x).numpy(), [0, 255, 128, 255, 64])
    grey = tf.fill([2, 8, 8, 1], 0.0)  # quantises to 128
    out = quality.inception_preprocess(grey)
    assert out.shape == (2, 299, 299, 3)
    np.testing.assert_allclose(out.numpy(), 128 / 127.5 - 1, atol=1e-6)


class _LabelPainter:
    """A 'generator' whose images carry their label as brightness, and a classifier that reads it."""

    def __call__(self, z, labels, training=False):
        v = tf.cast(labels, tf.float32)[:, None, None, None] / 10.0 - 0.45
        return tf.tile(v, [1, 4, 4, 1])


def _reader(images, training=False):
    k = tf.cast(tf.round((tf.reduce_mean(images, [1, 2, 3]) + 0.45) * 10.0), tf.int32)
    return 50.0 * tf.one_hot(k, 10)


def test_classifier_backend_inception_score_and_label_accuracy():
    backend = quality.ClassifierBackend(_reader)
    result = quality.score_generator(backend, _LabelPainter(), 10, 4, num_samples=2000, splits=10)
    assert 9.5 < result["inception_score"] <= 10.0 + 1e-6  # one-hot and (nearly) uniform labels: IS ~ K
    assert "not comparable" in result["backend_label"]
    acc = quality.per_class_label_accuracy(_LabelPainter(), _reader, 10, 4, n_per_class=5)
    assert acc == [1.0] * 10


def test_real_statistics_are_cached_with_metadata(tmp_path):
    rng = np.random.default_rng(0)
    src = Source(rng.integers(0, 256, (40, 4, 4, 1), dtype=np.uint8), rng.integers(0, 10, 40).astype(np.int32),
                 DatasetInfo("tiny", "train", 10, tuple("0123456789"), (4, 4, 1), 40, True))
    backend = quality.ClassifierBackend(lambda x, training=False: tf.reshape(x, [tf.shape(x)[0], -1]))
    cache = str(tmp_path / "stats.npz")
    mu, sigma = quality.real_statistics(backend, src, cache, batch_size=16)
    flat = src.images.reshape(40, -1).astype(np.float64) / 127.5 - 1
    np.testing.assert_allclose(mu, flat.mean(0), atol=1e-6)
    np.testing.assert_allclose(sigma, np.cov(flat, rowvar=False), atol=1e-6)
    assert os.path.exists(cache)
    src.images[:] = 0  # a cache hit does not recompute
    mu2, _ = quality.real_statistics(backend, src, cache)
    np.testing.assert_array_equal(mu, mu2)
    # the same generator as the data gives FID ~ 0 against itself
    assert quality.frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-6)


def test_keras_inception_backend_needs_a_local_file_and_checks_sha256(tmp_path):
    with pytest.raises(FileNotFoundError, match=quality.KERAS_INCEPTION_FILE + ".*storage.googleapis"):
        quality.KerasInceptionBackend(str(tmp_path / "missing.h5"))
    fake = tmp_path / "w.h5"
    fake.write_bytes(b"not weights")
    with pytest.raises(ValueError, match="sha256"):
        quality.KerasInceptionBackend(str(fake), expected_sha256="0" * 64)
