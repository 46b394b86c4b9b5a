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
versions are never touched; folders are world-readable (0755). The serving functions check their inputs (rank,
shape, range, label range in the type sent, finiteness) and fail with a message naming the expected input; each
export has serving limits (ServingLimits: images or labels per request, pixels per encoded image, read from its
header before decoding), recorded in the model card. The card's digest is saved in each SavedModel
(`model_card_sha256`), and the card holds every file's sha256, so loaders can verify both.
"""
from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import shutil
import subprocess

import keras
import tensorflow as tf

from robgan_tf import storage
from robgan_tf.layout import RunDir
from robgan_tf.loading import saved_versions
from robgan_tf.precision import float32_copy
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


def _write_archive(model, endpoints, path, card_digest=None):
    """endpoints: [(name, fn, input_signature)], the first also becomes serving_default when not named so.
    card_digest (card_digest()) is saved inside the SavedModel, so a loader can tell an edited model card."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    if card_digest is not None:  # a loaded model holds it as .model_card_sha256[0]
        archive.add_variable_collection("model_card_sha256", [tf.Variable(card_digest, trainable=False)])
    for name, fn, signature in endpoints:
        archive.add_endpoint(name=name, fn=fn, input_signature=signature)
    archive.write_out(path, verbose=False)
    return path


@dataclasses.dataclass(frozen=True)
class ServingLimits:
    """What one request to an exported model may ask for; recorded in the model card, set at export
    (robgan-export --max_batch, --max_image_pixels). A request over a limit fails with a message naming it,
    before any work: a server must not be brought down by one request."""

    max_batch: int = 1024  # images (or labels) per request, in every signature
    max_image_pixels: int = 4096 * 4096  # width x height of one encoded image, read from its header before decoding

    def __post_init__(self):
        if self.max_batch < 1 or self.max_image_pixels < 1:
            raise ExportError(f"serving limits must be >= 1, got max_batch={self.max_batch}, "
                              f"max_image_pixels={self.max_image_pixels}.")


def _batch_check(n, limits, what):
    return tf.debugging.assert_less_equal(
        tf.cast(n, tf.int64), tf.constant(limits.max_batch, tf.int64),
        message=f"at most {limits.max_batch} {what} per request (the max_batch of this export); split the batch")


def export_generator(generator, path, limits=ServingLimits(), card_digest=None):
    """Writes the generator SavedModel (see the module docstring); inference mode, inputs checked."""
    z_dim, k = generator.z_dim, generator.num_classes
    # The network traced once, as a function the three signatures call (see export_classifier).
    images_of = tf.function(lambda z, labels: tf.cast(generator(z, labels, training=False), tf.float32),
                            input_signature=[tf.TensorSpec([None, z_dim], tf.float32), tf.TensorSpec([None], tf.int32)],
                            autograph=False)

    def generate(z, labels):
        # Labels are checked in the type they came in: an int64 2**32 + 3 must not wrap to class 3.
        checks = [
            tf.debugging.assert_equal(tf.shape(z)[1], z_dim, message=f"generator expects z of shape [N, {z_dim}]"),
            tf.debugging.assert_equal(tf.shape(z)[0], tf.shape(labels)[0],
                                      message="generator expects as many labels as z rows"),
            _batch_check(tf.shape(labels)[0], limits, "labels"),
            tf.debugging.assert_non_negative(labels, message=f"generator expects labels in [0, {k - 1}]"),
            tf.debugging.assert_less(labels, tf.constant(k, labels.dtype),
                                     message=f"generator expects labels in [0, {k - 1}]"),
            tf.debugging.assert_all_finite(z, message="generator expects finite z"),
        ]
        with tf.control_dependencies(checks):
            z, labels = tf.identity(z), tf.cast(labels, tf.int32)  # the checks run first
        empty = tf.zeros([0, generator.resolution, generator.resolution, generator.channels])
        images = tf.cond(tf.shape(z)[0] > 0, lambda: images_of(z, labels), lambda: empty)  # empty request, answer
        return {"images": images, "images_uint8": quantize(images)}

    def sample(labels, seed):
        with tf.control_dependencies([_batch_check(tf.shape(labels)[0], limits, "labels")]):  # before z is drawn
            n = tf.identity(tf.shape(labels)[0])
        z = tf.random.stateless_normal([n, z_dim], seed=tf.stack([tf.cast(seed, tf.int64), tf.constant(0, tf.int64)]))
        return generate(z, labels)

    seed = tf.TensorSpec([], tf.int64, name="seed")
    return _write_archive(generator, [
        ("serving_default", generate, [tf.TensorSpec([None, z_dim], tf.float32, name="z"),
                                       tf.TensorSpec([None], tf.int32, name="labels")]),
        ("sample", sample, [tf.TensorSpec([None], tf.int64, name="labels"), seed]),
        ("sample_int32", sample, [tf.TensorSpec([None], tf.int32, name="labels"), seed]),
    ], path, card_digest)


_MAGIC = {"png": b"\x89PNG\r\n\x1a\n", "gif": b"GIF8", "bmp": b"BM"}


def _declared_pixels(data):
    """(known format, width x height) of one encoded image, read from its header without decoding it: PNG's IHDR,
    GIF's logical screen, BMP's info header, JPEG's frame header."""
    head = tf.strings.substr(tf.strings.join([data, tf.constant(b"\0" * 32)]), 0, 32)
    b = tf.cast(tf.io.decode_raw(head, tf.uint8), tf.int64)

    def uint(at, n, big_endian):
        idx = range(at, at + n)
        return sum(b[i] * 256 ** (at + n - 1 - i if big_endian else i - at) for i in idx)

    is_ = {name: tf.equal(tf.strings.substr(head, 0, len(m)), m) for name, m in _MAGIC.items()}
    is_jpeg = tf.io.is_jpeg(data)
    bmp_h = uint(22, 4, False)
    bmp_h = tf.abs(tf.where(bmp_h >= 2 ** 31, bmp_h - 2 ** 32, bmp_h))  # negative height: a top-down BMP
    jpeg = tf.cond(is_jpeg, lambda: tf.reduce_prod(tf.cast(tf.image.extract_jpeg_shape(data)[:2], tf.int64)),
                   lambda: tf.constant(0, tf.int64))
    pixels = tf.where(is_["png"], uint(16, 4, True) * uint(20, 4, True),
                      tf.where(is_["gif"], uint(6, 2, False) * uint(8, 2, False),
                               tf.where(is_["bmp"], uint(18, 4, False) * bmp_h, jpeg)))
    return is_["png"] | is_["gif"] | is_["bmp"] | is_jpeg, pixels, is_["gif"] | is_["bmp"]


def _shape_checks(images, shape, limits, message):
    """Rank, size and batch checked without a shape error of their own (a rank-3 request gets `message` too)."""
    got = tf.shape(images)
    same = tf.logical_and(tf.equal(tf.size(got), 4),
                          tf.reduce_all(tf.equal(tf.pad(got, [[0, 4]])[1:4], tf.constant(shape))))
    with tf.control_dependencies([tf.debugging.Assert(same, [message + ", got shape", got])]):
        return [_batch_check(got[0], limits, "images")]


def _decode(i, data, shape, limits):
    """Encoded image number i -> float32 [h, w, c] in [-1, 1]: format and pixel count checked from its header first,
    then decoded and resized (antialiased bilinear)."""
    h, w, c = shape
    known, pixels, gif_or_bmp = _declared_pixels(data)
    checks = [tf.debugging.Assert(known, ["image_bytes", i, "is not a PNG, JPEG, GIF or BMP"]),
              tf.debugging.Assert(pixels <= limits.max_image_pixels,
                                  ["image_bytes", i, "has", pixels, "pixels, over the max_image_pixels of this "
                                   "export,", limits.max_image_pixels, "; send it smaller"])]
    with tf.control_dependencies(checks):
        data = tf.identity(data)
    if c == 1:  # GIF and BMP decode only to colour: made grey here, as PNG and JPEG are by their decoders
        image = tf.cond(gif_or_bmp,
                        lambda: tf.image.rgb_to_grayscale(tf.io.decode_image(data, 3, expand_animations=False)),
                        lambda: tf.io.decode_image(data, 1, expand_animations=False))
    else:
        image = tf.io.decode_image(data, channels=c, expand_animations=False)
    image = tf.image.resize(tf.cast(image, tf.float32), [h, w], method="bilinear", antialias=True)
    return tf.clip_by_value(image, 0.0, 255.0) / 127.5 - 1.0


def export_classifier(classifier, path, image_shape, class_names, limits=ServingLimits(), card_digest=None):
    """Writes the classifier SavedModel (see the module docstring); differentiable; inputs checked."""
    shape = [int(d) for d in image_shape]
    h, w, c = shape
    k = len(class_names)
    names = tf.constant([str(n) for n in class_names])

    def expected(dtype, range_):
        return f"classifier expects {dtype} images [N, {h}, {w}, {c}] in {range_}"

    # The network traced once, as a function all three signatures call, instead of a copy inlined into each:
    # a third of the tracing when exporting, and of the graph a server loads.
    logits_of = tf.function(lambda images: tf.cast(classifier(images, training=False), tf.float32),
                            input_signature=[tf.TensorSpec([None, h, w, c], tf.float32)], autograph=False)

    def outputs(images):
        images = tf.ensure_shape(images, [None, h, w, c])
        logits = tf.cond(tf.shape(images)[0] > 0, lambda: logits_of(images),  # an empty request: empty answers
                         lambda: tf.zeros([0, k], tf.float32))
        classes = tf.argmax(logits, -1)
        return {"logits": logits, "probabilities": tf.nn.softmax(logits), "classes": classes,
                "class_names": tf.gather(names, classes)}

    def classify(images):
        message = expected("float32", "[-1, 1]")
        with tf.control_dependencies(_shape_checks(images, shape, limits, message)):
            finite = tf.debugging.assert_all_finite(images, message=message + " (got NaN or inf)")
            in_range = tf.debugging.Assert(
                tf.reduce_all(tf.abs(images) <= 1.0),
                [message + " (got values outside it; uint8 images of 0..255 go to classify_uint8)"])
        with tf.control_dependencies([finite, in_range]):
            return outputs(tf.identity(images))

    def classify_uint8(images):
        with tf.control_dependencies(_shape_checks(images, shape, limits, expected("uint8", "0..255"))):
            return outputs(tf.cast(tf.identity(images), tf.float32) / 127.5 - 1.0)

    def classify_image_bytes(image_bytes):
        n = tf.size(image_bytes)
        with tf.control_dependencies([_batch_check(n, limits, "images")]):
            index = tf.range(tf.identity(n))
        images = tf.map_fn(lambda args: _decode(*args, shape, limits), (index, tf.reshape(image_bytes, [-1])),
                           fn_output_signature=tf.TensorSpec([h, w, c], tf.float32))
        return outputs(images)

    # Every size stays open in the signatures so a wrong one reaches the checks above and gets its message,
    # instead of an opaque graph error (or, for a smaller image, silently some logits).
    return _write_archive(classifier, [
        ("serving_default", classify, [tf.TensorSpec(None, tf.float32, name="images")]),
        ("classify_uint8", classify_uint8, [tf.TensorSpec(None, tf.uint8, name="images")]),
        ("classify_image_bytes", classify_image_bytes, [tf.TensorSpec([None], tf.string, name="image_bytes")]),
    ], path, card_digest)


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
    its generator not) left by a crash between the two renames. A marker is only believed when it names a
    version folder of this export directory (EXPORT/classifier/N or EXPORT/generator/N, no link on the way):
    an export folder may come from elsewhere, and nothing outside it is ever deleted."""
    for tmp in storage.stale_temps(export_dir, _TMP):
        if os.path.islink(tmp):
            os.remove(tmp)
            continue
        for kind in KINDS:
            marker = os.path.join(tmp, f"placed-{kind}")
            if os.path.isfile(marker) and not os.path.islink(marker):
                with open(marker) as f:
                    target = f.read(4096).strip()
                if _is_version_folder(export_dir, kind, target):
                    shutil.rmtree(target, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)


def _is_version_folder(export_dir, kind, path):
    """True when `path` is export_dir/kind/<number>, a real folder (not a link) inside export_dir."""
    name = os.path.basename(path)
    expected = os.path.join(os.path.realpath(export_dir), kind, name)
    return (name.isdigit() and os.path.isdir(path) and not os.path.islink(path)
            and os.path.realpath(path) == expected and storage.inside(path, export_dir))


def card_digest(card):
    """sha256 of a model card without its "sha256" field (the files' digests, computed after the SavedModels that
    hold this digest were written): a loader recomputes it to tell an edited card."""
    facts = {k: v for k, v in card.items() if k != "sha256"}
    return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()


def model_card(run, provenance, version, robustness=None, limits=ServingLimits()):
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
        "z_dim": run.generator.z_dim if run.generator is not None else None, "ema": cfg.ema,
        "method": cfg.method, "weights": provenance,
        "robustness": robustness,
        "serving_limits": dataclasses.asdict(limits),
        "training_flags": dict(cfg.settings),
        "signatures": {
            "classifier": {
                "serving_default": "images float32 [N, H, W, C] in [-1, 1]",
                "classify_uint8": "images uint8 [N, H, W, C] 0..255",
                "classify_image_bytes": "image_bytes string [N]: encoded PNG / JPEG / BMP / GIF, any size up to "
                                        "serving_limits.max_image_pixels",
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

    path = RunDir(run.cfg.logdir).robustness
    if not os.path.exists(path):
        return None
    with open(path) as f:
        result = json.load(f)
    if result.get("weights") != provenance:
        return None
    return {"results": result["results"], "attacks": result.get("attacks"), "split": result.get("split"),
            "robustbench": result.get("robustbench")}


def _refuse_nesting(final):
    """An export directory inside a SavedModel version folder would nest a new export in a served model."""
    here = os.path.realpath(final)
    while True:
        if os.path.exists(os.path.join(here, "saved_model.pb")):
            raise ExportError(f"{final} lies inside the exported SavedModel {here}; export to the export directory "
                              "itself (the folder holding classifier/ and generator/) or a new one.")
        parent = os.path.dirname(here)
        if parent == here:
            return
        here = parent


def _storage_failure(e):
    """TF's own file errors that are the disk's (full, read-only, file size limit), as opposed to bugs."""
    text = str(getattr(e, "message", e))
    return isinstance(e, tf.errors.OpError) and any(
        m in text for m in ("No space left", "Read-only file system", "Permission denied", "File too large",
                            "Disk quota exceeded"))


def _prepare(final, version, kinds):
    """The export folder made, stale temporaries cleaned, and the version to write (checked free)."""
    _refuse_nesting(final)
    try:
        os.makedirs(final, exist_ok=True)
    except OSError as e:
        raise storage.storage_error(e, final, "Nothing was exported.") from e
    clean_stale(final)
    version = int(version or next_version(final))
    if version < 1:
        raise ExportError(f"export versions are positive integers, got {version}.")
    taken = [os.path.join(final, k, str(version)) for k in kinds if os.path.exists(os.path.join(final, k, str(version)))]
    if taken:
        raise ExportError(f"{taken[0]} exists: export versions are never overwritten. Omit --export_version to "
                          f"take the next free one ({next_version(final)}), or remove that folder.")
    return version


def _write_models(run, classifier, tmp, card, kinds, limits):
    """SavedModels, .keras files and the card (with every file's sha256) into the temporary folder."""
    info, digest = run.info, card_digest(card)
    classifier = float32_copy(classifier)  # exports compute in float32 whatever trained them
    export_classifier(classifier, os.path.join(tmp, "classifier"), info.image_shape, info.class_names, limits, digest)
    classifier.save(os.path.join(tmp, "classifier.keras"))
    if run.generator is not None:
        g = float32_copy(run.sampling_generator())
        export_generator(g, os.path.join(tmp, "generator"), limits, digest)
        g.save(os.path.join(tmp, "generator.keras"))
    card["sha256"] = {k: file_digests(os.path.join(tmp, k)) for k in kinds}
    card["sha256"].update({f"{k}.keras": file_digests(tmp)[f"{k}.keras"] for k in kinds})
    for k in kinds:
        storage.atomic_write_json(os.path.join(tmp, k, "assets.extra", "model_card.json"), card)
    storage.make_readable(tmp)


def _place(tmp, final, kinds, version, placed):
    """Each version folder renamed into place whole; `placed` collects them so a failure can take them out."""
    for k in kinds:  # the marker lets a crash between two renames be undone (clean_stale)
        dest = os.path.join(final, k, str(version))
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        storage.atomic_write(os.path.join(tmp, f"placed-{k}"), dest)
        try:
            os.replace(os.path.join(tmp, k), dest)
        except OSError as e:
            if e.errno in (errno.ENOTEMPTY, errno.EEXIST):  # another export took this version meanwhile
                raise ExportError(f"{dest} was written by another export running at the same time; this one "
                                  "placed nothing. Rerun to take the next free version.") from None
            raise
        placed.append(dest)
    for k in kinds:
        os.replace(os.path.join(tmp, f"{k}.keras"), os.path.join(final, f"{k}.keras"))


def export_run(run, classifier, provenance, out=None, version=None, robustness=None, limits=ServingLimits()):
    """Exports a run's classifier and generator (EMA weights when on; none in advtrain) as version `version`
    (default: the next free one) of the export directory `out` (default LOGDIR/export); returns the paths.

    `provenance` (run.weights_provenance) records which training iteration and fine-tuning step the weights
    come from; `robustness` (a robustness_table result on these weights) goes into the model card -- by default
    the run's eval/robustness.json when it was measured on these weights."""
    final = os.path.abspath(out or RunDir(run.cfg.logdir).export)
    kinds = [k for k in KINDS if k == "classifier" or run.generator is not None]
    version = _prepare(final, version, kinds)
    if robustness is None:
        robustness = _robustness_of(run, provenance)
    elif "results" in robustness:
        robustness = {k: robustness.get(k) for k in ("results", "attacks", "split", "robustbench")}
    card = model_card(run, provenance, version, robustness, limits)
    tmp = os.path.join(final, storage.temp_name(_TMP))
    placed = []
    try:
        os.makedirs(tmp)
        _write_models(run, classifier, tmp, card, kinds, limits)
        _place(tmp, final, kinds, version, placed)
        storage.atomic_write_json(os.path.join(final, "manifest.json"), card)
        shutil.rmtree(tmp, ignore_errors=True)
    except BaseException as e:
        for dest in placed:  # a version is complete or absent
            shutil.rmtree(dest, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError) or _storage_failure(e):
            raise storage.storage_error(e, final, "Earlier export versions are untouched.") from e
        raise
    paths = {k: os.path.join(final, k, str(version)) for k in kinds}
    paths.update({f"{k}_keras": os.path.join(final, f"{k}.keras") for k in kinds})
    paths["manifest"] = os.path.join(final, "manifest.json")
    return paths
