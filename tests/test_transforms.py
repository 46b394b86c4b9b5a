import numpy as np
import tensorflow as tf

from robgan_tf.transforms import dequantize, random_crop_flip


def _matches_a_window(out, img, pad, flip):
    padded = np.pad(img, [(pad, pad), (pad, pad), (0, 0)], constant_values=-1.0)
    h, w = img.shape[:2]
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            win = padded[dy:dy + h, dx:dx + w]
            if np.array_equal(out, win) or (flip and np.array_equal(out, win[:, ::-1])):
                return True
    return False


def test_random_crop_flip_gives_shifted_windows_padded_with_black():
    rng = tf.random.Generator.from_seed(0)
    x = np.random.default_rng(0).uniform(-1, 1, (16, 8, 8, 3)).astype(np.float32)
    out = random_crop_flip(x, pad=2, flip=True, rng=rng).numpy()
    assert out.shape == x.shape
    assert all(_matches_a_window(out[i], x[i], 2, True) for i in range(16))
    assert not np.array_equal(out, x)  # something moved
    assert (out == -1.0).any()  # black padding entered some crops
    np.testing.assert_array_equal(random_crop_flip(x, pad=0, flip=False).numpy(), x)


def test_dequantize_is_seeded_and_below_one_level():
    x = tf.zeros([4, 8, 8, 1])
    a = dequantize(x, tf.constant([1, 2], tf.int64)).numpy()
    b = dequantize(x, tf.constant([1, 2], tf.int64)).numpy()
    np.testing.assert_array_equal(a, b)
    assert a.min() >= 0 and a.max() < 1 / 128 and a.std() > 1e-3
