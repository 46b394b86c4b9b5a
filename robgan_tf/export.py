"""Exports in TF Serving's layout, servable without robgan_tf, plus .keras files and a model card.

  export/classifier/<version>/   SavedModel, signatures (each returns logits, probabilities, classes, class_names):
      serving_default(images: float32 [N, H, W, C] in [-1, 1])
      classify_uint8(images: uint8 [N, H, W, C], 0..255)
      classify_image_bytes(image_bytes: string [N], encoded PNG / JPEG / BMP / GIF of any size, resized inside)
  export/generator/<version>/    SavedModel, signatures (each returns images in [-1, 1] and images_uint8):
      serving_default(z: float32 [N, z_dim], labels: int32 [N])
      sample(labels: int64 [N], seed: int64 []) and sample_int32(labels: int32 [N], seed: int64 []): z drawn
          inside (stateless normal from the seed), so a client sends only labels
  export/classifier.keras, export/generator.keras   the newest version as Keras files
                                                    (keras.saving.load_model after `import robgan_tf`)
  export/manifest.json                              the newest version's model card (each version folder also
                                                    holds its own in assets.extra/model_card.json)

`<version>` is the next free number (1, 2, ...) unless given; TF Serving serves the highest. A version is
written into a temporary folder and renamed into place, so it appears complete or not at all and earlier
versions are never touched; folders are world-readable (0755). The serving functions check their inputs (shape,
label range, finiteness) and fail with a message naming the expected input.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess

import keras
import tensorflow as tf

from robgan_tf import storage
from robgan_tf.loading import saved_versions
from robgan_tf.quality import quantize

_TMP = ".export-tmp-"
KINDS = ("classifier", "generator")  # also the order versions are placed in


class ExportError(ValueError):
    """An export that cannot be made as asked (e.g. its version exists); the message says what to do."""


def _git_commit():
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _write_archive(model, endpoints, path):
    """endpoints: [(name, fn, input_signature)], the first also becomes serving_default when not named so."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    for name, fn, signature in endpoints:
        archive.add_endpoint(name=name, fn=fn, input_signature=signature)
    archive.write_out(path, verbose=False)
    return path


def export_generator(generator, path):
    """Writes the generator SavedModel (see the module docstring); inference mode, inputs checked."""
    z_dim, k = generator.z_dim, generator.num_classes
    # The network traced once, as a function the three signatures call (see export_classifier).
    images_of = tf.function(lambda z, labels: tf.cast(generator(z, labels, training=False), tf.float32),
                            input_signature=[tf.TensorSpec([None, z_dim], tf.float32), tf.TensorSpec([None], tf.int32)],
                            autograph=False)

    def generate(z, labels):
        labels = tf.cast(labels, tf.int32)
        checks = [
            tf.debugging.assert_equal(tf.shape(z)[1], z_dim, message=f"generator expects z of shape [N, {z_dim}]"),
            tf.debugging.assert_equal(tf.shape(z)[0], tf.shape(labels)[0],
                                      message="generator expects as many labels as z rows"),
            tf.debugging.assert_non_negative(labels, message=f"generator expects labels in [0, {k - 1}]"),
            tf.debugging.assert_less(labels, k, message=f"generator expects labels in [0, {k - 1}]"),
            tf.debugging.assert_all_finite(z, message="generator expects finite z"),
        ]
        with tf.control_dependencies(checks):
            images = images_of(tf.identity(z), tf.identity(labels))  # identities: the checks run first
        return {"images": images, "images_uint8": quantize(images)}

    def sample(labels, seed):
        z = tf.random.stateless_normal([tf.shape(labels)[0], z_dim], seed=tf.stack([tf.cast(seed, tf.int64),
                                                                                    tf.constant(0, tf.int64)]))
        return generate(z, labels)

    seed = tf.TensorSpec([], tf.int64, name="seed")
    return _write_archive(generator, [
        ("serving_default", generate, [tf.TensorSpec([None, z_dim], tf.float32, name="z"),
                                       tf.TensorSpec([None], tf.int32, name="labels")]),
        ("sample", sample, [tf.TensorSpec([None], tf.int64, name="labels"), seed]),
        ("sample_int32", sample, [tf.TensorSpec([None], tf.int32, name="labels"), seed]),
    ], path)


def export_classifier(classifier, path, image_shape, class_names):
    """Writes the classifier SavedModel (see the module docstring); differentiable; inputs checked."""
    shape = [int(d) for d in image_shape]
    h, w, c = shape
    names = tf.constant([str(n) for n in class_names])
    def expected(dtype, range_):
        return f"classifier expects {dtype} images [N, {h}, {w}, {c}] in {range_}"

    # The network traced once, as a function all three signatures call, instead of a copy inlined into each:
    # a third of the tracing when exporting, and of the graph a server loads.
    logits_of = tf.function(lambda images: tf.cast(classifier(images, training=False), tf.float32),
                            input_signature=[tf.TensorSpec([None, None, None, None], tf.float32)], autograph=False)

    def outputs(images):
        logits = logits_of(images)
        classes = tf.argmax(logits, -1)
        return {"logits": logits, "probabilities": tf.nn.softmax(logits), "classes": classes,
                "class_names": tf.gather(names, classes)}

    def checked(images, message):
        return [tf.debugging.assert_equal(tf.shape(images)[1:], tf.constant(shape), message=message)]

    def classify(images):
        message = expected("float32", "[-1, 1]")
        checks = checked(images, message) + [tf.debugging.assert_all_finite(images, message=message + " (got NaN or inf)")]
        with tf.control_dependencies(checks):
            return outputs(tf.identity(images))

    def classify_uint8(images):
        with tf.control_dependencies(checked(images, expected("uint8", "0..255"))):
            return outputs(tf.cast(images, tf.float32) / 127.5 - 1.0)

    def decode(data):
        image = tf.io.decode_image(data, channels=c, expand_animations=False)
        image = tf.image.resize(tf.cast(image, tf.float32), [h, w], method="bilinear", antialias=True)
        return tf.clip_by_value(image, 0.0, 255.0) / 127.5 - 1.0

    def classify_image_bytes(image_bytes):
        images = tf.map_fn(decode, image_bytes, fn_output_signature=tf.TensorSpec([h, w, c], tf.float32))
        return outputs(images)

    # Every size stays open in the signatures so a wrong one reaches the checks above and gets its message,
    # instead of an opaque graph error (or, for a smaller image, silently some logits).
    return _write_archive(classifier, [
        ("serving_default", classify, [tf.TensorSpec([None, None, None, None], tf.float32, name="images")]),
        ("classify_uint8", classify_uint8, [tf.TensorSpec([None, None, None, None], tf.uint8, name="images")]),
        ("classify_image_bytes", classify_image_bytes, [tf.TensorSpec([None], tf.string, name="image_bytes")]),
    ], path)


def file_digests(folder):
    """sha256 of every file below `folder`, by relative path (the model card records them)."""
    out = {}
    for root, _, files in os.walk(folder):
        for name in sorted(files):
            full = os.path.join(root, name)
            rel = os.path.relpath(full, folder)
            if rel.startswith("assets.extra"):
                continue  # the card itself lives there
            h = hashlib.sha256()
            with open(full, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            out[rel] = h.hexdigest()
    return out


def next_version(export_dir):
    """1 + the highest version of either model in `export_dir` (1 for a new one)."""
    return 1 + max([0] + [v for kind in KINDS for v in saved_versions(os.path.join(export_dir, kind))])


def clean_stale(export_dir):
    """Removes temporary export folders of dead processes, and a half-placed version (its classifier moved in,
    its generator not) left by a crash between the two renames."""
    for tmp in storage.stale_temps(export_dir, _TMP):
        for kind in KINDS:
            marker = os.path.join(tmp, f"placed-{kind}")
            if os.path.exists(marker):  # this version's folder was moved in before the crash: take it out
                with open(marker) as f:
                    shutil.rmtree(f.read().strip(), ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)


def model_card(run, provenance, version, robustness=None):
    """What a user of the export needs to know, in one JSON."""
    from robgan_tf import __version__

    cfg, info = run.cfg, run.info
    return {
        "version": version, "robgan_tf": __version__, "tensorflow": tf.__version__, "keras": keras.__version__,
        "git_commit": _git_commit(),
        "dataset": info.name, "class_names": list(info.class_names), "num_classes": info.num_classes,
        "resolution": info.image_shape[0], "channels": info.image_shape[-1],
        "image_range": [-1.0, 1.0],
        "eps_units": "eps is in the images' [-1, 1] units: 8/255 on the [0, 1] scale is 16/255 = 0.0627 here",
        "z_dim": run.generator.z_dim if run.generator is not None else None, "ema": bool(cfg.ema_decay),
        "method": cfg.method, "weights": provenance,
        "robustness": robustness,
        "training_flags": cfg.to_dict(),
        "signatures": {
            "classifier": {
                "serving_default": "images float32 [N, H, W, C] in [-1, 1]",
                "classify_uint8": "images uint8 [N, H, W, C] 0..255",
                "classify_image_bytes": "image_bytes string [N]: encoded PNG / JPEG / BMP / GIF, any size",
                "outputs": "logits, probabilities, classes (int64 index), class_names (string)"},
            "generator": {
                "serving_default": "z float32 [N, z_dim], labels int32 [N]",
                "sample": "labels int64 [N], seed int64 []",
                "sample_int32": "labels int32 [N], seed int64 []",
                "outputs": "images float32 [N, H, W, C] in [-1, 1], images_uint8"}},
        "intended_use": ("Research on adversarially robust classification and conditional image generation with "
                         f"Rob-GAN, on {info.name}-like images at {info.image_shape[0]} px. The classifier's "
                         "robustness holds only for l_inf perturbations of the sizes in `robustness`, measured "
                         "by the protocol named there; it is not a certified or general-purpose defence."),
    }


def _robustness_of(run, provenance):
    """The run's saved robustness table when it was measured on exactly these weights, else None."""
    import json

    path = os.path.join(run.cfg.logdir, "eval", "robustness.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        result = json.load(f)
    if result.get("weights") != provenance:
        return None
    return {"results": result["results"], "attacks": result.get("attacks"), "split": result.get("split"),
            "robustbench": result.get("robustbench")}


def export_run(run, classifier, provenance, out=None, version=None, robustness=None):
    """Exports a run's classifier and generator (EMA weights when on; none in advtrain) as version `version`
    (default: the next free one) of the export directory `out` (default LOGDIR/export); returns the paths.

    `provenance` (run.weights_provenance) records which training iteration and fine-tuning step the weights
    come from; `robustness` (a robustness_table result on these weights) goes into the model card -- by default
    the run's eval/robustness.json when it was measured on these weights."""
    cfg, info = run.cfg, run.info
    final = os.path.abspath(out or os.path.join(cfg.logdir, "export"))
    try:
        os.makedirs(final, exist_ok=True)
    except OSError as e:
        raise storage.storage_error(e, final, "Nothing was exported.") from e
    clean_stale(final)
    version = int(version or next_version(final))
    if version < 1:
        raise ExportError(f"export versions are positive integers, got {version}.")
    kinds = [k for k in KINDS if k == "classifier" or run.generator is not None]
    taken = [os.path.join(final, k, str(version)) for k in kinds if os.path.exists(os.path.join(final, k, str(version)))]
    if taken:
        raise ExportError(f"{taken[0]} exists: export versions are never overwritten. Omit --export_version to "
                          f"take the next free one ({next_version(final)}), or remove that folder.")
    if robustness is None:
        robustness = _robustness_of(run, provenance)
    elif "results" in robustness:
        robustness = {k: robustness.get(k) for k in ("results", "attacks", "split", "robustbench")}
    card = model_card(run, provenance, version, robustness)
    tmp = os.path.join(final, storage.temp_name(_TMP))
    placed = []
    try:
        os.makedirs(tmp)
        export_classifier(classifier, os.path.join(tmp, "classifier"), info.image_shape, info.class_names)
        classifier.save(os.path.join(tmp, "classifier.keras"))
        if run.generator is not None:
            g = run.sampling_generator()
            export_generator(g, os.path.join(tmp, "generator"))
            g.save(os.path.join(tmp, "generator.keras"))
        card["sha256"] = {k: file_digests(os.path.join(tmp, k)) for k in kinds}
        card["sha256"].update({f"{k}.keras": file_digests(tmp)[f"{k}.keras"] for k in kinds})
        for k in kinds:
            storage.atomic_write_json(os.path.join(tmp, k, "assets.extra", "model_card.json"), card)
        storage.make_readable(tmp)
        for k in kinds:  # each version folder appears whole (one rename); the marker lets a crash be undone
            dest = os.path.join(final, k, str(version))
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            storage.atomic_write(os.path.join(tmp, f"placed-{k}"), dest)
            os.replace(os.path.join(tmp, k), dest)
            placed.append(dest)
        for k in kinds:
            os.replace(os.path.join(tmp, f"{k}.keras"), os.path.join(final, f"{k}.keras"))
        storage.atomic_write_json(os.path.join(final, "manifest.json"), card)
        shutil.rmtree(tmp, ignore_errors=True)
    except BaseException as e:
        for dest in placed:  # a version is complete or absent
            shutil.rmtree(dest, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError):
            raise storage.storage_error(e, final, "Earlier export versions are untouched.") from e
        raise
    paths = {k: os.path.join(final, k, str(version)) for k in kinds}
    paths.update({f"{k}_keras": os.path.join(final, f"{k}.keras") for k in kinds})
    paths["manifest"] = os.path.join(final, "manifest.json")
    return paths
