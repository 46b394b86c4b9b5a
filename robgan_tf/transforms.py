"""In-graph, batched, XLA-friendly image transforms for images in [-1, 1] (NHWC)."""
from __future__ import annotations

import tensorflow as tf


def _uniform(rng, shape, minval, maxval, dtype=tf.float32):
    if rng is not None:
        return rng.uniform(shape, minval, maxval, dtype=dtype)
    return tf.random.uniform(shape, minval, maxval, dtype=dtype)


def random_crop_flip(images, pad=4, flip=True, rng=None):
    """Per-example random crop after padding with black (-1), then an optional horizontal flip.

    The padding value is -1, i.e. black, like torchvision's RandomCrop(padding=4) on [0, 1] images.
    """
    images = tf.convert_to_tensor(images)
    b = tf.shape(images)[0]
    h, w = images.shape[1], images.shape[2]
    if pad > 0:
        padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]], constant_values=-1.0)
        dy = _uniform(rng, [b], 0, 2 * pad + 1, tf.int32)
        dx = _uniform(rng, [b], 0, 2 * pad + 1, tf.int32)
        rows = dy[:, None] + tf.range(h)[None, :]
        cols = dx[:, None] + tf.range(w)[None, :]
        images = tf.gather(padded, rows, axis=1, batch_dims=1)
        images = tf.gather(images, cols, axis=2, batch_dims=1)
    if flip:
        do_flip = _uniform(rng, [b], 0, 2, tf.int32) > 0
        images = tf.where(do_flip[:, None, None, None], tf.reverse(images, axis=[2]), images)
    return images


def dequantize(images, seed):
    """SN-GAN's dequantisation: add U(0, 1/128) noise to 8-bit images scaled to [-1, 1].

    One 8-bit level is 2/255 ~= 1/128 in [-1, 1] units, so the noise fills the gap between levels.
    `seed` is a stateless seed (shape [2] int tensor): the same seed gives the same noise.
    """
    return images + tf.random.stateless_uniform(tf.shape(images), seed=seed, maxval=1.0 / 128.0)
