"""One loader for trained models: `load_generator(path)` and `load_classifier(path)`.

`path` may be a run directory (its --logdir), an export directory (RUN/export), a model's export folder
(RUN/export/classifier: the highest version is taken) or one version folder (RUN/export/classifier/3); exports
from robgan_tf 0.2 (a SavedModel directly in export/classifier) load too. The returned objects keep their
SavedModel alive for as long as they exist, so there is nothing to hold on to besides them.
"""
from __future__ import annotations

import os

import tensorflow as tf


class ModelNotFound(FileNotFoundError):
    """The path holds no model of the asked kind; the message says what was looked for."""


class ExportCorrupt(ValueError):
    """An export's files or model card differ from what was exported; the message names the file."""


def verify_files(saved_model_dir, card):
    """Checks each file of an exported SavedModel against the sha256 its model card records for the model kind of
    its folder (classifier/N or generator/N), before TensorFlow reads any of them."""
    from robgan_tf.export import file_digests

    here = os.path.abspath(saved_model_dir)
    kind = os.path.basename(os.path.dirname(here) if os.path.basename(here).isdigit() else here)
    expected = (card.get("sha256") or {}).get(kind)
    if expected:
        found = file_digests(saved_model_dir)
        for rel, digest in sorted(expected.items()):
            if rel not in found:
                raise ExportCorrupt(f"{os.path.join(saved_model_dir, rel)} is missing (the model card lists it). "
                                    "Copy the export again, or export the run again (robgan-export).")
            if found[rel] != digest:
                raise ExportCorrupt(f"{os.path.join(saved_model_dir, rel)} has sha256 {found[rel][:16]}..., not the "
                                    f"{digest[:16]}... recorded at export: the file is damaged or was replaced. Copy "
                                    "the export again, or export the run again (robgan-export).")


def verify_card(saved_model_dir, loaded, card):
    """Checks the model card against the digest the loaded SavedModel holds (exports before 0.8 hold none)."""
    from robgan_tf.export import card_digest

    stored = getattr(loaded, "model_card_sha256", None)
    if stored is not None and card_digest(card) != stored[0].numpy().decode():
        raise ExportCorrupt(f"the model card of {saved_model_dir} ({card_path(saved_model_dir)}) was edited after "
                            "export: it no longer matches the digest saved in the model. Restore the card from a "
                            "copy of the export, or export the run again.")


def saved_versions(folder):
    """Numbered version folders holding a SavedModel, ascending."""
    if not os.path.isdir(folder):
        return []
    return sorted(int(d) for d in os.listdir(folder)
                  if d.isdigit() and os.path.exists(os.path.join(folder, d, "saved_model.pb")))


def resolve_export(path, kind):
    """The SavedModel directory of `kind` that `path` names (see the module docstring), or ModelNotFound."""
    path = os.path.abspath(path)
    if os.path.exists(os.path.join(path, "saved_model.pb")):
        return path
    versions = saved_versions(path)
    if versions:
        return os.path.join(path, str(versions[-1]))
    for sub in (os.path.join(path, kind), os.path.join(path, "export", kind)):
        if os.path.exists(os.path.join(sub, "saved_model.pb")) or saved_versions(sub):
            return resolve_export(sub, kind)
    raise ModelNotFound(f"{path} holds no exported {kind}: expected saved_model.pb there, numbered version folders "
                        f"(TF Serving's layout), or {kind}/ below it (an export directory, e.g. RUN/export).")


def card_path(saved_model_dir):
    """Where the model card of an exported SavedModel is: its version folder's assets.extra/model_card.json, else
    the export directory's manifest.json (robgan_tf 0.2); None if none."""
    here = os.path.join(saved_model_dir, "assets.extra", "model_card.json")
    up = os.path.dirname(saved_model_dir)
    for c in (here, os.path.join(up, "manifest.json"), os.path.join(os.path.dirname(up), "manifest.json")):
        if os.path.exists(c):
            return c
    return None


def model_card(saved_model_dir):
    """The model card (manifest) describing an exported SavedModel (see card_path); {} if none. A card that is not
    a JSON object is ExportCorrupt."""
    path = card_path(saved_model_dir)
    if path is None:
        return {}
    from robgan_tf.storage import read_json_object

    card = read_json_object(path, ExportCorrupt, "restore the model card from a copy of the export, or export the "
                            "run again.")
    return card


def is_run(path):
    """Whether `path` is a run directory (a --logdir with config.json), not an export."""
    from robgan_tf.layout import RunDir

    return RunDir(path).is_run()


def sibling(saved_model_dir, kind):
    """The other model of the same export: classifier/3 -> generator/3, or classifier -> generator (0.2
    layout); None when it is not there."""
    here = os.path.abspath(saved_model_dir)
    name = os.path.basename(here)
    if name.isdigit():
        path = os.path.join(os.path.dirname(os.path.dirname(here)), kind, name)
    else:
        path = os.path.join(os.path.dirname(here), kind)
    return path if os.path.exists(os.path.join(path, "saved_model.pb")) else None


def export_dir_of(saved_model_dir):
    """The export directory an exported model belongs to (where the statistics caches go)."""
    here = os.path.abspath(saved_model_dir)
    up = os.path.dirname(here)
    return os.path.dirname(up) if os.path.basename(here).isdigit() else up


def _load_saved_model(path):
    try:
        return tf.saved_model.load(path)
    except (OSError, ValueError, tf.errors.OpError) as e:
        raise ExportCorrupt(f"{path} cannot be loaded as a SavedModel ({type(e).__name__}: "
                            f"{str(getattr(e, 'message', e)).splitlines()[0][:200]}). Copy the export again, or "
                            "export the run again (robgan-export).") from None


class ExportedClassifier:
    """An exported classifier as a callable images [N, H, W, C] float32 in [-1, 1] -> logits, differentiable
    (attacks run on it). `.card` is its model card; `.image_shape` and `.class_names` come from it."""

    def __init__(self, path):
        self.path = path
        self.card = model_card(path)
        verify_files(path, self.card)
        self._loaded = _load_saved_model(path)  # held here: the signature alone does not keep the variables
        verify_card(path, self._loaded, self.card)
        self.signature = self._loaded.signatures["serving_default"]
        inputs, outputs = self.signature.structured_input_signature[1], self.signature.structured_outputs
        if list(inputs) != ["images"] or "logits" not in outputs:
            raise ModelNotFound(f"{path} is not a classifier: its serving_default takes {sorted(inputs)} and returns "
                                f"{sorted(outputs)}; a classifier takes 'images' and returns 'logits'.")
        res, ch = self.card.get("resolution"), self.card.get("channels")
        self.image_shape = (res, res, ch) if res and ch else None
        self.class_names = self.card.get("class_names")
        self.num_classes = self.card.get("num_classes")

    def __call__(self, images, training=False):
        del training  # an export is in inference mode
        return self.signature(images=tf.cast(images, tf.float32))["logits"]


class ExportedGenerator:
    """An exported generator as a callable (z, labels, training=False) -> images in [-1, 1], like the Keras
    Generator; `.sample(labels, seed)` draws z itself. `.z_dim`, `.num_classes`, `.card` from its model card."""

    def __init__(self, path):
        self.path = path
        self.card = model_card(path)
        verify_files(path, self.card)
        self._loaded = _load_saved_model(path)
        verify_card(path, self._loaded, self.card)
        self.signature = self._loaded.signatures["serving_default"]
        inputs = self.signature.structured_input_signature[1]
        if set(inputs) != {"z", "labels"}:
            raise ModelNotFound(f"{path} is not a generator: its serving_default takes {sorted(inputs)}, not z and "
                                "labels.")
        self.z_dim = int(inputs["z"].shape[-1])
        self.num_classes = self.card.get("num_classes")
        self.class_names = self.card.get("class_names")

    def __call__(self, z, labels, training=False):
        del training
        return self.signature(z=tf.cast(z, tf.float32), labels=tf.cast(labels, tf.int32))["images"]

    def sample(self, labels, seed=0):
        labels = tf.cast(labels, tf.int32)
        z = tf.random.stateless_normal([tf.shape(labels)[0], self.z_dim], seed=[int(seed), 0])
        return self(z, labels)


def open_run(path, precision="float32"):
    """A run's weights (run.RunWeights: the networks only, nothing written), its runtime set up from its
    config.json; the networks compute in `precision` (float32: the model measured is the one served)."""
    from robgan_tf import run as run_lib
    from robgan_tf import runtime
    from robgan_tf.experiment import spec_of_run

    cfg = spec_of_run(path)
    runtime.setup_runtime(cfg, precision=precision)
    return run_lib.RunWeights(cfg)


def load_classifier(path, *, with_provenance=False):
    """The robust classifier of a run (fine-tuned when the run was) or of an export, as a callable
    images -> logits. with_provenance: also return the training iteration / fine-tuning step of its weights."""
    if is_run(path):
        from robgan_tf import run as run_lib

        classifier, provenance = run_lib.load_final_classifier(open_run(path))
    else:
        classifier = ExportedClassifier(resolve_export(path, "classifier"))
        provenance = classifier.card.get("weights")
    return (classifier, provenance) if with_provenance else classifier


def load_generator(path):
    """The generator of a run (its EMA copy when the run keeps one) or of an export, as a callable
    (z, labels, training=False) -> images in [-1, 1], with .z_dim and .num_classes."""
    if is_run(path):
        run = open_run(path)
        if run.generator is None:
            raise ModelNotFound(f"{path} was trained with --method=advtrain: it has no generator.")
        if not run.restore():
            raise ModelNotFound(f"{path} has no training checkpoint yet: train first (robgan-train --logdir={path}).")
        return run.sampling_generator()
    return ExportedGenerator(resolve_export(path, "generator"))
