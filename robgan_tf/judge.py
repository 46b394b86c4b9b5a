"""An independent judge of the digits demo's generator.

The run's own classifier is a biased judge of its generator: it was fine-tuned on those very fakes. This one
is a scikit-learn SVM trained once, only on the original 8x8 training digits; generated images are
area-averaged back to 8x8 (and to the 0..16 scale) before it labels them. Its accuracy on the real test digits,
put through the same up- and down-sampling, is reported beside it as its calibration.

A generator that draws one perfect digit per class would score 100%; `diversity` catches that: the mean
within-class pixel standard deviation of the generated 8x8 images over that of the real test digits (about 1
for a generator as varied as the data, 0 for one image per class).
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from robgan_tf import data as data_lib


def to_8x8(images):
    """[N, R, R, 1] images in [-1, 1] -> [N, 64] area averages on the digits' 0..16 scale."""
    x = np.asarray(images, np.float64)[..., 0]
    n, r = x.shape[0], x.shape[1]
    f = r // 8
    return ((x.reshape(n, 8, f, 8, f).mean(axis=(2, 4)) + 1.0) * 8.0).reshape(n, 64)


class DigitsJudge:
    """SVM (RBF, the scikit-learn digits example's gamma 0.001) trained on the 8x8 training digits."""

    def __init__(self):
        from sklearn.svm import SVC

        images, labels = data_lib.digits_8x8("train")
        self.svm = SVC(gamma=0.001, C=10.0).fit(images.reshape(len(labels), 64), labels)

    def accuracy(self, images, labels):
        return float(np.mean(self.svm.predict(to_8x8(images)) == np.asarray(labels)))


def _within_class_std(images8, labels):
    return float(np.mean([images8[labels == k].std(axis=0).mean() for k in range(10)]))


def judge_generator(generator, resolution, n_per_class=50, seed=0):
    """{"accuracy", "per_class", "real_test_accuracy", "diversity", "num_samples"} of a digits generator."""
    judge = DigitsJudge()
    per_class, fakes = [], []
    for k in range(10):
        z = tf.random.stateless_normal([n_per_class, generator.z_dim], seed=[seed, k])
        images = np.asarray(generator(z, tf.fill([n_per_class], k), training=False))
        per_class.append(judge.accuracy(images, np.full(n_per_class, k)))
        fakes.append(to_8x8(images))
    test = data_lib.load("digits", "test", resolution)
    real_images = test.images.astype(np.float32) / 127.5 - 1.0
    real = judge.accuracy(real_images, test.labels)
    fake_labels = np.repeat(np.arange(10), n_per_class)
    diversity = _within_class_std(np.concatenate(fakes), fake_labels) / _within_class_std(to_8x8(real_images),
                                                                                          test.labels)
    return {"accuracy": float(np.mean(per_class)), "per_class": per_class, "real_test_accuracy": real,
            "diversity": diversity, "num_samples": 10 * n_per_class}
