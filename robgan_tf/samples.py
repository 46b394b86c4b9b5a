"""Generated images for people and for tools: sample grids (one row per class, the same fixed z vectors in every
row) and class-balanced dumps (PNG folders, .npz) that external metric tools (torch-fidelity, clean-fid) read."""
from __future__ import annotations

import os
import re
import shutil

import numpy as np
import tensorflow as tf

from robgan_tf import storage
from robgan_tf.quality import quantize


def grid_classes(num_classes, rows=10):
    """All classes when K <= rows, else a fixed spread of `rows` classes."""
    if num_classes <= rows:
        return np.arange(num_classes)
    return np.linspace(0, num_classes - 1, rows).round().astype(np.int64)


def sample_grid(generator, cols=8, seed=1234):
    """uint8 image grid: one row per class, the same fixed z vectors in every row. A generator is a callable
    (z, labels, training) -> images with .num_classes and .z_dim."""
    classes = grid_classes(generator.num_classes)
    z = tf.random.stateless_normal([cols, generator.z_dim], seed=[seed, 0])
    z = tf.tile(z, [len(classes), 1])
    labels = tf.repeat(tf.constant(classes, tf.int32), cols)
    images = generator(z, labels, training=False)
    images = quantize(images).numpy()
    n, h, w, c = images.shape
    grid = images.reshape(len(classes), cols, h, w, c).transpose(0, 2, 1, 3, 4).reshape(len(classes) * h, cols * w, c)
    return grid


def write_png(path, image_u8):
    storage.atomic_write(path, tf.io.encode_png(image_u8).numpy(), mode="wb")


def balanced_labels(num_classes, num_samples):
    """num_samples labels, each class num_samples // K or one more times (the first classes), sorted."""
    return np.sort(np.arange(num_samples) % num_classes).astype(np.int32)


def generate(generator, num_samples, seed=0, batch_size=100):
    """(uint8 images [N, H, W, C], int32 labels [N]): class-balanced, z from a stateless normal per batch."""
    labels = balanced_labels(generator.num_classes, num_samples)
    images = []
    for i, start in enumerate(range(0, num_samples, batch_size)):
        y = labels[start:start + batch_size]
        z = tf.random.stateless_normal([len(y), generator.z_dim], seed=[seed, i])
        images.append(quantize(generator(z, tf.constant(y), training=False)).numpy())
    return np.concatenate(images), labels


def _folder_name(name):
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._") or "class"


def write_folders(out_dir, images, labels, class_names):
    """One folder per class (named after it) of PNG files; written beside out_dir and renamed into place, so
    the folder is complete or absent. Refuses an existing non-empty out_dir."""
    out_dir = os.path.abspath(out_dir)
    if os.path.exists(out_dir) and os.listdir(out_dir):
        raise FileExistsError(f"{out_dir} exists and is not empty; choose a new --out_dir (nothing was written).")
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, storage.temp_name(".samples-tmp-"))
    try:
        names = [f"{k:03d}_{_folder_name(n)}" for k, n in enumerate(class_names)]
        for k in np.unique(labels):
            os.makedirs(os.path.join(tmp, names[k]))
        for i, (image, label) in enumerate(zip(images, labels)):
            with open(os.path.join(tmp, names[label], f"{i:06d}.png"), "wb") as f:
                f.write(tf.io.encode_png(image).numpy())
        storage.make_readable(tmp)
        if os.path.exists(out_dir):
            os.rmdir(out_dir)  # empty (checked above)
        os.replace(tmp, out_dir)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError) and not isinstance(e, FileExistsError):
            raise storage.storage_error(e, out_dir, "Nothing was written.") from e
        raise
    return out_dir


def write_npz(path, images, labels, class_names):
    """uint8 images [N, H, W, C], int32 labels and the class names, in one .npz (no pickles)."""
    storage.atomic_save(path, lambda tmp: np.savez(tmp, images=images, labels=labels,
                                                   class_names=np.array([str(n) for n in class_names])))
    return path
