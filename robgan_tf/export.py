"""SavedModel export of the generator and the robust classifier, servable without robgan_tf.

  export/generator/   serving_default(z: float32 [N, z_dim], labels: int32 [N]) -> {"images": [N, H, W, C] in [-1, 1]}
  export/classifier/  serving_default(images: float32 [N, H, W, C] in [-1, 1]) -> {"logits", "probabilities"}
  export/manifest.json

The three are written into a temporary sibling folder and swapped in together, so an export is complete
(generator, classifier, manifest) or the previous complete export is left untouched; folders are world-readable
(0755) like any saved model. The serving functions check their inputs (shape, label range, finiteness) and fail
with a message naming the expected input.
"""
from __future__ import annotations

import os
import shutil
import subprocess

import keras
import tensorflow as tf

from robgan_tf import storage

_TMP, _OLD = ".export-tmp-", ".export-old-"


def _git_commit():
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _write_archive(model, fn, signature, path):
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(name="serving_default", fn=fn, input_signature=signature)
    archive.write_out(path, verbose=False)
    return path


def export_generator(generator, path):
    """Writes a SavedModel: serving_default(z, labels) -> {"images"} (inference mode), inputs checked."""
    z_dim, k = generator.z_dim, generator.num_classes

    def serve(z, labels):
        checks = [
            tf.debugging.assert_equal(tf.shape(z)[1], z_dim, message=f"generator expects z of shape [N, {z_dim}]"),
            tf.debugging.assert_equal(tf.shape(z)[0], tf.shape(labels)[0],
                                      message="generator expects as many labels as z rows"),
            tf.debugging.assert_non_negative(labels, message=f"generator expects labels in [0, {k - 1}]"),
            tf.debugging.assert_less(labels, k, message=f"generator expects labels in [0, {k - 1}]"),
            tf.debugging.assert_all_finite(z, message="generator expects finite z"),
        ]
        with tf.control_dependencies(checks):
            return {"images": tf.cast(generator(tf.identity(z), labels, training=False), tf.float32)}

    signature = [tf.TensorSpec([None, z_dim], tf.float32, name="z"), tf.TensorSpec([None], tf.int32, name="labels")]
    return _write_archive(generator, serve, signature, path)


def export_classifier(classifier, path, image_shape):
    """Writes a SavedModel: serving_default(images) -> {"logits", "probabilities"}; differentiable; checked."""
    shape = [int(d) for d in image_shape]
    expected = f"classifier expects float32 images [N, {shape[0]}, {shape[1]}, {shape[2]}] in [-1, 1]"

    def serve(images):
        checks = [tf.debugging.assert_equal(tf.shape(images)[1:], tf.constant(shape), message=expected),
                  tf.debugging.assert_all_finite(images, message=expected + " (got NaN or inf)")]
        with tf.control_dependencies(checks):
            logits = tf.cast(classifier(tf.identity(images), training=False), tf.float32)
        return {"logits": logits, "probabilities": tf.nn.softmax(logits)}

    # Every size stays open in the signature so a wrong one reaches the check above and gets its message,
    # instead of an opaque graph error (or, for a smaller image, silently some logits).
    signature = [tf.TensorSpec([None, None, None, None], tf.float32, name="images")]
    return _write_archive(classifier, serve, signature, path)


def write_manifest(path, **fields):
    storage.atomic_write_json(path, fields)


def clean_stale(parent):
    """Removes temporary export folders of dead processes; if a crash fell between the two renames of the
    swap, puts the previous complete export back first."""
    final = os.path.join(parent, "export")
    for old in storage.stale_temps(parent, _OLD):
        if not os.path.exists(final):
            os.replace(old, final)
        else:
            shutil.rmtree(old, ignore_errors=True)
    for tmp in storage.stale_temps(parent, _TMP):
        shutil.rmtree(tmp, ignore_errors=True)


def _swap_in(tmp, final):
    """Moves the complete new export `tmp` to `final`, the previous one (if any) out of the way first."""
    old = None
    if os.path.exists(final):
        old = os.path.join(os.path.dirname(final), storage.temp_name(_OLD))
        os.replace(final, old)
    try:
        os.replace(tmp, final)
    except OSError:
        if old:  # put the previous complete export back
            os.replace(old, final)
        raise
    if old:
        shutil.rmtree(old, ignore_errors=True)


def export_run(run, classifier, provenance, out=None):
    """Exports a run's generator (EMA weights when on; none in advtrain), classifier and manifest as one set
    into `out` (default LOGDIR/export); returns the paths.

    `provenance` (run.weights_provenance) records in the manifest which training iteration and
    fine-tuning step the exported weights come from."""
    cfg, info = run.cfg, run.info
    final = os.path.abspath(out or os.path.join(cfg.logdir, "export"))
    parent = os.path.dirname(final)
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as e:
        raise storage.storage_error(e, parent, "Nothing was exported.") from e
    clean_stale(parent)
    tmp = os.path.join(parent, storage.temp_name(_TMP))
    try:
        os.makedirs(tmp)
        export_classifier(classifier, os.path.join(tmp, "classifier"), info.image_shape)
        if run.generator is not None:
            export_generator(run.sampling_generator(), os.path.join(tmp, "generator"))
        write_manifest(
            os.path.join(tmp, "manifest.json"), dataset=info.name, class_names=list(info.class_names),
            num_classes=info.num_classes, resolution=info.image_shape[0], channels=info.image_shape[-1],
            image_range=[-1.0, 1.0], z_dim=cfg.z_dim if run.generator is not None else None,
            ema=bool(cfg.ema_decay), training_flags=cfg.to_dict(), weights=provenance, git_commit=_git_commit(),
            signatures={"generator": "serving_default(z float32 [N, z_dim], labels int32 [N]) -> images",
                        "classifier": "serving_default(images float32 [N, H, W, C]) -> logits, probabilities"})
        storage.make_readable(tmp)
        _swap_in(tmp, final)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError):
            raise storage.storage_error(e, final, "The previous complete export (if any) is untouched.") from e
        raise
    paths = {"classifier": os.path.join(final, "classifier")}
    if run.generator is not None:
        paths["generator"] = os.path.join(final, "generator")
    paths["manifest"] = os.path.join(final, "manifest.json")
    return paths
