"""A reference classifier for generator quality: trained once, by plain supervised learning on a dataset's
training split, then used by the `reference` quality backend (robgan_tf.quality.ReferenceBackend) to score
every run's generator alike -- unlike a run's own classifier, it never saw generated images.
"""
from __future__ import annotations

import os
import time

import keras
import tensorflow as tf

from robgan_tf import data as data_lib
from robgan_tf import storage
from robgan_tf.losses import class_ce
from robgan_tf.models import Discriminator
from robgan_tf.robustness import accuracy_under_attack


def train_reference_classifier(train, test, *, preset="tiny", epochs=20, batch_size=64, lr=1e-3, augment="none",
                               seed=0, log=print):
    """A classifier (the class head of a `preset` discriminator, as the preset builds it, trained with Adam on
    cross-entropy) fitted to `train`; returns (classifier, test accuracy)."""
    keras.utils.set_random_seed(seed)
    info = train.info
    d = Discriminator(info.num_classes, info.image_shape[0], preset, channels=info.image_shape[-1])
    classifier = d.classifier()
    classifier.build_by_calling()  # a subclassed model has no variables until it is called
    optimizer = keras.optimizers.Adam(lr)
    variables = classifier.trainable_variables

    @tf.function(autograph=False)
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(class_ce(classifier(x, training=True), y))
        grads = tape.gradient(loss, variables)
        optimizer.apply([g for g in grads if g is not None], [v for g, v in zip(grads, variables) if g is not None])
        return loss

    steps_per_epoch = max(info.num_examples // batch_size, 1)
    dataset = iter(data_lib.train_dataset(train, batch_size, seed=seed, augment=augment))
    t0 = time.time()
    for epoch in range(epochs):
        for _ in range(steps_per_epoch):
            x, y = next(dataset)
            loss = step(x, y)
        log(f"[reference] epoch {epoch + 1}/{epochs} loss {float(loss):.3f} ({time.time() - t0:.0f}s)")
    return classifier, accuracy_under_attack(classifier, test, eps=0.0, steps=0)


def save(classifier, path, record):
    """Writes the classifier as a .keras file (whole or absent) and `record` + its sha256 beside it
    (PATH.json); returns the sha256."""
    from robgan_tf.quality import sha256_of

    root, ext = os.path.splitext(path)
    if ext != ".keras":
        raise ValueError(f"the reference classifier is saved as a .keras file, got {path!r}.")
    storage.atomic_save(path, classifier.save)
    digest = sha256_of(path)
    storage.atomic_write_json(path + ".json", {**record, "sha256": digest, "file": os.path.basename(path)})
    return digest
