"""The independent digits judge: calibrated on real digits, fooled neither by noise nor by one image per class."""
import numpy as np
import tensorflow as tf

from robgan_tf import data, judge


def _real_digit_generator(resolution):
    """A 'generator' that returns real test digits of the asked class (a perfect, fully varied generator)."""
    test = data.load("digits", "test", resolution)
    images = test.images.astype(np.float32) / 127.5 - 1.0

    def generate(z, labels, training=False):
        labels = np.asarray(labels)
        out = []
        for i, k in enumerate(labels):
            pool = np.flatnonzero(test.labels == k)
            out.append(images[pool[i % len(pool)]])
        return np.stack(out)

    return _with_shape(generate)


def _with_shape(fn):
    """A generator callable with the attributes the package reads: 10 classes, 8-d noise."""
    fn.num_classes, fn.z_dim = 10, 8
    return fn


def test_to_8x8_inverts_area_upsampling_exactly():
    rng = np.random.default_rng(0)
    x8 = rng.uniform(0, 16, (3, 8, 8))
    up = np.repeat(np.repeat(x8, 4, axis=1), 4, axis=2)[..., None] / 8.0 - 1.0  # [-1, 1], 32 px
    np.testing.assert_allclose(judge.to_8x8(up), x8.reshape(3, 64), atol=1e-9)


def test_judge_scores_real_digits_high_and_noise_and_collapse_low():
    real = judge.judge_generator(_real_digit_generator(16), 16, n_per_class=20)
    assert real["real_test_accuracy"] > 0.95 and real["accuracy"] > 0.9 and real["diversity"] > 0.8

    def noise(z, labels, training=False):
        return tf.random.stateless_uniform([len(labels), 16, 16, 1], seed=[1, 2], minval=-1, maxval=1)

    assert judge.judge_generator(_with_shape(noise), 16, n_per_class=20)["accuracy"] < 0.3

    one_each = _real_digit_generator(16)

    def collapsed(z, labels, training=False):  # the same first test digit of each class, every time
        return one_each(z, np.asarray(labels), training) * 0 + np.stack(
            [one_each(None, [k])[0] for k in np.asarray(labels)])

    c = judge.judge_generator(_with_shape(collapsed), 16, n_per_class=20)
    assert c["accuracy"] > 0.9 and c["diversity"] < 0.05
