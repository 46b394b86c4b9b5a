"""SavedModel export of the generator and the robust classifier, servable without robgan_tf.

  export/generator/   serving_default(z: float32 [N, z_dim], labels: int32 [N]) -> {"images": [N, H, W, C] in [-1, 1]}
  export/classifier/  serving_default(images: float32 [N, H, W, C] in [-1, 1]) -> {"logits", "probabilities"}
  export/manifest.json

Each SavedModel is written into a temporary folder and moved into place, so a failure never leaves a
half-written export.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile

import keras
import tensorflow as tf


def _git_commit():
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _replace_dir(tmp, final):
    """Moves tmp to final; an existing final is swapped out first and removed after."""
    old = None
    if os.path.exists(final):
        old = final + ".old"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def _write_archive(model, fn, signature, final):
    parent = os.path.dirname(os.path.abspath(final))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-" + os.path.basename(final) + "-", dir=parent)
    try:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(name="serving_default", fn=fn, input_signature=signature)
        archive.write_out(tmp, verbose=False)
        _replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def export_generator(generator, path):
    """Writes a SavedModel: serving_default(z, labels) -> {"images"} (inference mode)."""
    z_dim = generator.z_dim

    def serve(z, labels):
        return {"images": tf.cast(generator(z, labels, training=False), tf.float32)}

    signature = [tf.TensorSpec([None, z_dim], tf.float32, name="z"), tf.TensorSpec([None], tf.int32, name="labels")]
    return _write_archive(generator, serve, signature, path)


def export_classifier(classifier, path, image_shape):
    """Writes a SavedModel: serving_default(images) -> {"logits", "probabilities"}; differentiable."""

    def serve(images):
        logits = tf.cast(classifier(images, training=False), tf.float32)
        return {"logits": logits, "probabilities": tf.nn.softmax(logits)}

    signature = [tf.TensorSpec([None, *image_shape], tf.float32, name="images")]
    return _write_archive(classifier, serve, signature, path)


def write_manifest(path, **fields):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(fields, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


def export_run(run, classifier, provenance):
    """Exports a run's generator (EMA weights when on; none in advtrain) and classifier; returns paths.

    `provenance` (runner.weights_provenance) records in the manifest which training iteration and
    fine-tuning step the exported weights come from."""
    cfg, info = run.cfg, run.info
    out = os.path.join(cfg.logdir, "export")
    paths = {"classifier": export_classifier(classifier, os.path.join(out, "classifier"), info.image_shape)}
    if run.generator is not None:
        paths["generator"] = export_generator(run.sampling_generator(), os.path.join(out, "generator"))
    elif os.path.exists(os.path.join(out, "generator")):  # a stale generator from another mode
        shutil.rmtree(os.path.join(out, "generator"))
    paths["manifest"] = os.path.join(out, "manifest.json")
    write_manifest(
        paths["manifest"], dataset=info.name, class_names=list(info.class_names), num_classes=info.num_classes,
        resolution=info.image_shape[0], channels=info.image_shape[-1], image_range=[-1.0, 1.0],
        z_dim=cfg.z_dim if run.generator is not None else None, ema=bool(cfg.ema_decay),
        training_flags=cfg.to_dict(), weights=provenance, git_commit=_git_commit(),
        signatures={"generator": "serving_default(z float32 [N, z_dim], labels int32 [N]) -> images",
                    "classifier": "serving_default(images float32 [N, H, W, C]) -> logits, probabilities"})
    return paths
