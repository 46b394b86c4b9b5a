"""Sample grids: one row per class, the same fixed z vectors in every row."""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from robgan_tf import storage


def grid_classes(num_classes, rows=10):
    """All classes when K <= rows, else a fixed spread of `rows` classes."""
    if num_classes <= rows:
        return np.arange(num_classes)
    return np.linspace(0, num_classes - 1, rows).round().astype(np.int64)


def sample_grid(generator, num_classes, z_dim, cols=8, seed=1234):
    """uint8 image grid: one row per class, the same fixed z vectors in every row."""
    classes = grid_classes(num_classes)
    z = tf.random.stateless_normal([cols, z_dim], seed=[seed, 0])
    z = tf.tile(z, [len(classes), 1])
    labels = tf.repeat(tf.constant(classes, tf.int32), cols)
    images = generator(z, labels, training=False)
    images = tf.cast(tf.clip_by_value((images + 1.0) * 127.5, 0, 255), tf.uint8).numpy()
    n, h, w, c = images.shape
    grid = images.reshape(len(classes), cols, h, w, c).transpose(0, 2, 1, 3, 4).reshape(len(classes) * h, cols * w, c)
    return grid


def write_png(path, image_u8):
    storage.atomic_write(path, tf.io.encode_png(image_u8).numpy(), mode="wb")
