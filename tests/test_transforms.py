import numpy as np
import pytest
import tensorflow as tf

from robgan_tf.transforms import augment, dequantize, random_crop, random_flip, random_resized_crop

SEED = tf.constant([3, 4], tf.int64)


def _matches_a_window(out, img, pad, flip):
    padded = np.pad(img, [(pad, pad), (pad, pad), (0, 0)], constant_values=-1.0)
    h, w = img.shape[:2]
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            win = padded[dy:dy + h, dx:dx + w]
            if np.array_equal(out, win) or (flip and np.array_equal(out, win[:, ::-1])):
                return True
    return False


def test_crop_flip_gives_shifted_windows_padded_with_black():
    x = np.random.default_rng(0).uniform(-1, 1, (16, 8, 8, 3)).astype(np.float32)
    out = augment(x, "crop_flip", SEED).numpy()
    assert out.shape == x.shape
    assert all(_matches_a_window(out[i], x[i], 4, True) for i in range(16))
    assert not np.array_equal(out, x)  # something moved
    assert (out == -1.0).any()  # black padding entered some crops
    # stateless: the same seed gives the same batch, another seed another one
    np.testing.assert_array_equal(augment(x, "crop_flip", SEED).numpy(), out)
    assert not np.array_equal(augment(x, "crop_flip", SEED + tf.constant(1, tf.int64)).numpy(), out)
    np.testing.assert_array_equal(augment(x, "none", SEED).numpy(), x)


def test_crop_without_flip_never_mirrors():
    # a left-right ramp: every window of the padded ramp increases to the right, a mirrored one does not
    ramp = np.tile(np.linspace(-0.9, 0.9, 8, dtype=np.float32)[None, :, None], (8, 1, 1))
    out = random_crop(np.stack([ramp] * 32), SEED, pad=2).numpy()
    assert all(_matches_a_window(o, ramp, 2, False) for o in out)
    flipped = random_flip(np.stack([ramp] * 32), SEED).numpy()
    n_flipped = sum(np.array_equal(f, ramp[:, ::-1]) for f in flipped)
    assert 4 <= n_flipped <= 28 and n_flipped + sum(np.array_equal(f, ramp) for f in flipped) == 32


def test_resized_crop_keeps_area_fraction_and_identity_at_scale_one():
    x = np.random.default_rng(1).uniform(-1, 1, (4, 16, 16, 3)).astype(np.float32)
    # scale (1, 1): the box is the whole image, crop_and_resize must return it unchanged
    np.testing.assert_allclose(random_resized_crop(x, SEED, scale=(1.0, 1.0)).numpy(), x, atol=1e-5)
    # a linear ramp image: a crop covering fraction s of the side spans s of the ramp's range
    ramp = np.tile(np.linspace(-1, 1, 64, dtype=np.float32)[None, :, None], (64, 1, 1))
    out = random_resized_crop(np.stack([ramp] * 64), SEED, scale=(0.8, 0.9)).numpy()
    span = (out[:, 0, -1, 0] - out[:, 0, 0, 0]) / 2.0  # fraction of the full [-1, 1] ramp covered
    assert np.all(span >= np.sqrt(0.8) - 0.02) and np.all(span <= np.sqrt(0.9) + 0.02)
    assert span.std() > 0.005  # sizes vary


def test_unknown_augmentation_is_rejected():
    with pytest.raises(ValueError, match="augmentation must be one of"):
        augment(tf.zeros([1, 8, 8, 1]), "cutout", SEED)


def test_dequantize_is_seeded_and_below_one_level():
    x = tf.zeros([4, 8, 8, 1])
    a = dequantize(x, tf.constant([1, 2], tf.int64)).numpy()
    b = dequantize(x, tf.constant([1, 2], tf.int64)).numpy()
    np.testing.assert_array_equal(a, b)
    assert a.min() >= 0 and a.max() < 1 / 128 and a.std() > 1e-3
