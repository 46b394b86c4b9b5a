"""In-graph, batched, stateless image transforms for images in [-1, 1] (NHWC).

Every random draw takes a stateless seed (an int tensor of shape [2]), so the training pipeline stays
a pure function of (seed, step): a resumed run sees exactly the augmented batches it would have seen.
"""
from __future__ import annotations

import tensorflow as tf

# The training-stage augmentations, by name. "auto" is resolved per dataset by the experiment config.
AUGMENTATIONS = ("none", "crop", "crop_flip", "resized_crop", "resized_crop_flip")


def _seeds(seed, n):
    return tf.unstack(tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), n))


def random_flip(images, seed):
    """Horizontal flip of each example with probability 1/2."""
    b = tf.shape(images)[0]
    do_flip = tf.random.stateless_uniform([b], seed, 0, 2, dtype=tf.int32) > 0
    return tf.where(do_flip[:, None, None, None], tf.reverse(images, axis=[2]), images)


def random_crop(images, seed, pad=4):
    """Per-example random crop after padding with black (-1), like torchvision's RandomCrop(padding=4)."""
    images = tf.convert_to_tensor(images)
    b = tf.shape(images)[0]
    h, w = images.shape[1], images.shape[2]
    padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]], constant_values=-1.0)
    s_y, s_x = _seeds(seed, 2)
    dy = tf.random.stateless_uniform([b], s_y, 0, 2 * pad + 1, dtype=tf.int32)
    dx = tf.random.stateless_uniform([b], s_x, 0, 2 * pad + 1, dtype=tf.int32)
    rows = dy[:, None] + tf.range(h)[None, :]
    cols = dx[:, None] + tf.range(w)[None, :]
    return tf.gather(tf.gather(padded, rows, axis=1, batch_dims=1), cols, axis=2, batch_dims=1)


def random_resized_crop(images, seed, scale=(0.8, 0.9)):
    """Square crops covering a uniform fraction `scale` of the area, resized back (bilinear).

    torchvision's RandomResizedCrop(size, scale, ratio=(1, 1)) as the authors used it on ImageNet-143,
    applied here to the stored images (which are already at the training resolution).
    """
    images = tf.convert_to_tensor(images)
    b = tf.shape(images)[0]
    h, w = images.shape[1], images.shape[2]
    s_area, s_y, s_x = _seeds(seed, 3)
    side = tf.sqrt(tf.random.stateless_uniform([b], s_area, scale[0], scale[1]))  # fraction of each side
    y0 = tf.random.stateless_uniform([b], s_y) * (1.0 - side)
    x0 = tf.random.stateless_uniform([b], s_x) * (1.0 - side)
    # crop_and_resize puts its first and last samples ON box corners given in units of (size - 1); place
    # them at the centres of the output pixels of a crop [y0, y0 + side] (fractions of the image edge),
    # i.e. half-pixel resizing as torchvision does. A crop touching the border would put its outer samples
    # up to half a pixel outside the image, where crop_and_resize writes zeros: clamp them to the edge.
    def corners(start, size):
        first = start * size + 0.5 * side - 0.5
        last = start * size + (size - 0.5) * side - 0.5
        return (tf.clip_by_value(first / (size - 1), 0.0, 1.0), tf.clip_by_value(last / (size - 1), 0.0, 1.0))

    (y1, y2), (x1, x2) = corners(y0, h), corners(x0, w)
    boxes = tf.stack([y1, x1, y2, x2], axis=1)
    return tf.image.crop_and_resize(images, boxes, tf.range(b), [h, w], method="bilinear")


def augment(images, kind, seed):
    """Applies one of AUGMENTATIONS (a Python string) with a stateless seed."""
    if kind not in AUGMENTATIONS:
        raise ValueError(f"augmentation must be one of {AUGMENTATIONS}, got {kind!r}.")
    images = tf.convert_to_tensor(images)
    s_crop, s_flip = _seeds(seed, 2)
    if kind.startswith("crop"):
        images = random_crop(images, s_crop)
    elif kind.startswith("resized_crop"):
        images = random_resized_crop(images, s_crop)
    if kind.endswith("flip"):
        images = random_flip(images, s_flip)
    return images


def dequantize(images, seed):
    """SN-GAN's dequantisation: add U(0, 1/128) noise to 8-bit images scaled to [-1, 1].

    One 8-bit level is 2/255 ~= 1/128 in [-1, 1] units, so the noise fills the gap between levels.
    `seed` is a stateless seed (shape [2] int tensor): the same seed gives the same noise.
    """
    return images + tf.random.stateless_uniform(tf.shape(images), seed=seed, maxval=1.0 / 128.0)
