"""The run lifecycle in-process: fine-tuning resumes with the trained generator, EMA is restored before
fine-tuning uses it, evaluation refuses a missing fine-tuning, and every result names its weights."""
import io
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.framework import config as tf_config

from robgan_tf import export, hooks, storage
from robgan_tf import loops
from robgan_tf import pipeline
from robgan_tf import run as run_lib
from robgan_tf import runtime
from robgan_tf import samples
from robgan_tf.experiment import ExperimentConfig
from robgan_tf.hooks import Hook
from robgan_tf.layout import RunDir
from robgan_tf.training import current_lr
from tools import non_finite_in_checkpoint, run_tool

SMALL = dict(dataset="digits", batch_size=16, attack_steps=2, z_dim=16, eval_examples=48, train_iterations=4,
             finetune_steps=6, checkpoint_every=2, log_every=100, sample_every=0, monitor_examples=32,
             ema_decay=0.5, deterministic=True, seed=3)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A trained (not fine-tuned) run with an EMA generator; tests copy it before changing it."""
    logdir = str(tmp_path_factory.mktemp("trained"))
    cfg = ExperimentConfig(logdir=logdir, **SMALL)
    runtime.setup_runtime(cfg.resolve())  # enables op determinism for this module; switched off again below
    try:
        loops.train(run_lib.Run(cfg.resolve()))
        yield logdir
    finally:
        tf_config.disable_op_determinism()


def _copy(src, dst):
    shutil.copytree(src, dst)
    return ExperimentConfig.of_run(str(dst))


def _assert_discriminator_is(discriminator, checkpoint):
    """Every variable of `discriminator` equals, bit for bit, the D saved in `checkpoint` (a path or a folder)."""
    reader = tf.train.load_checkpoint(checkpoint)
    weights = run_lib.model_variables(discriminator)
    assert len(weights) > 20
    for key, v in weights.items():
        np.testing.assert_array_equal(v.numpy(), reader.get_tensor(f"discriminator/{key}/.ATTRIBUTES/VARIABLE_VALUE"),
                                      err_msg=v.path)


class _Killed(Exception):
    pass


class _KillAfter(Hook):
    """Dies at the start of the step after n_steps more, like a kill -9 between two checkpoints."""

    def __init__(self, n_steps):
        self.n_steps = n_steps

    def before_step(self, loop, step):
        if step == loop.start + self.n_steps + 1:
            raise _Killed()


@pytest.mark.xdist_group("trained_run")
def test_killed_finetuning_resumes_to_the_uninterrupted_weights(trained, finetuned, tmp_path, monkeypatch):
    # the uninterrupted fine-tuning is the `finetuned` fixture's: the same run, settings and op determinism
    straight = os.path.join(finetuned.logdir, "finetune_checkpoints")
    assert tf.train.load_checkpoint(straight).get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE") == 6

    cfg = _copy(trained, tmp_path / "killed")
    with pytest.raises(_Killed):  # checkpoint at step 2, killed during step 4
        loops.finetune(run_lib.Run(cfg.resolve()), hooks=[_KillAfter(3)])
    storage.RunLock.hold(cfg.logdir).release()  # a killed process holds no lock
    assert tf.train.latest_checkpoint(str(tmp_path / "killed" / "finetune_checkpoints")).endswith("-2")
    # a new process: every object rebuilt from disk, the generator initialised at random
    read = []  # how many examples the monitors read: --monitor_examples of each split
    for name in ("accuracy_under_attack", "gap_analysis"):
        monitor = getattr(loops, name)
        monkeypatch.setattr(loops, name, lambda *a, _f=monitor, **k: read.append(k["num_examples"]) or _f(*a, **k))
    resumed = loops.finetune(run_lib.Run(cfg.resolve()))
    assert int(resumed.step.numpy()) == 6
    assert read == [SMALL["monitor_examples"]] * 3  # at the last step: clean and robust accuracy, then the gap
    _assert_discriminator_is(resumed.run.discriminator, straight)


@pytest.mark.xdist_group("trained_run")
def test_finetuning_samples_the_restored_ema_generator(trained, tmp_path):
    run = run_lib.Run(_copy(trained, tmp_path / "ema").resolve())
    untrained = [w.numpy().copy() for w in run.sampling_generator().weights]
    ft = run_lib.FinetuneRun(run)  # restores the training checkpoint before taking the generator
    reader = tf.train.load_checkpoint(run.manager.latest_checkpoint)
    saved_ema = [reader.get_tensor(f"ema/w{i}/.ATTRIBUTES/VARIABLE_VALUE") for i in range(len(untrained))]
    for w, saved in zip(ft.tuner.generator.weights, saved_ema):
        np.testing.assert_array_equal(w.numpy(), saved)
    assert any(np.abs(w.numpy() - u).max() > 1e-4 for w, u in zip(ft.tuner.generator.weights, untrained))


@pytest.mark.xdist_group("trained_run")
def test_evaluation_refuses_a_run_whose_finetuning_never_ran(trained, tmp_path):
    run = run_lib.Run(_copy(trained, tmp_path / "noft").resolve())
    with pytest.raises(FileNotFoundError, match="has no fine-tuning checkpoint.*launch/finetune.py"):
        run_lib.load_final_classifier(run)


@pytest.mark.xdist_group("trained_run")
def test_the_trained_classifier_is_the_training_checkpoints_d_and_the_final_one_the_finetuned(finetuned):
    run = run_lib.RunWeights(finetuned.resolve())
    trained, before = run_lib.load_trained_classifier(run)
    _assert_discriminator_is(run.discriminator, run.manager.latest_checkpoint)  # the trained D, exactly
    kernel = trained.discriminator.dense_cls.layer.kernel
    assert before["training_iteration"] == 4 and before["finetune_step"] is None
    trained_kernel = kernel.numpy().copy()
    final, after = run_lib.load_final_classifier(run_lib.RunWeights(finetuned.resolve()))
    assert after["finetune_step"] == 6
    assert np.abs(final.discriminator.dense_cls.layer.kernel.numpy() - trained_kernel).max() > 1e-6


@pytest.mark.xdist_group("trained_run")
def test_kept_checkpoints_and_the_training_clock_survive_a_kill(trained, tmp_path):
    from robgan_tf import curves

    cfg = _copy(trained, tmp_path / "kept")
    cfg.train_iterations, cfg.keep_checkpoint_every = 10, 3
    with pytest.raises(_Killed):  # iterations 5, 6, 7 run (checkpoint and kept copy at 6); killed in 8
        loops.train(run_lib.Run(cfg.resolve()), hooks=[_KillAfter(3)])
    storage.RunLock.hold(cfg.logdir).release()
    loops.train(run_lib.Run(cfg.resolve()))  # resumes from 6: checkpoints at 8 and 10, kept copy at 9
    kept = sorted(f for f in os.listdir(tmp_path / "kept" / "checkpoints" / "kept") if f.endswith(".index"))
    assert kept == ["ckpt-6.index", "ckpt-9.index"]
    assert [i for i, _ in curves.checkpoints_of(cfg.logdir)] == [6, 8, 9, 10]  # kept + the 3 latest
    clock = storage.read_jsonl(loops.clock_path(cfg.logdir))
    assert [r["iteration"] for r in clock] == [2, 4, 6, 8, 9, 10]  # the fixture's run, then both processes
    seconds = [r["train_seconds"] for r in clock]
    assert all(a < b for a, b in zip(seconds, seconds[1:]))  # the resumed process continues the clock
    assert loops.train_seconds_at(cfg.logdir, 7) == seconds[2] and loops.train_seconds_at(cfg.logdir, 1) is None


@pytest.mark.xdist_group("trained_run")
def test_results_name_their_weights(finetuned, tmp_path):
    """(The exports' model card names them too: test_serving_signatures_keras_files_model_card_and_loaders.)"""
    run = run_lib.Run(_copy(finetuned.logdir, tmp_path / "prov").resolve())
    ft = loops.finetune(run)  # already fine-tuned: restores the last fine-tuning checkpoint
    classifier, provenance = run_lib.load_final_classifier(run_lib.RunWeights(run.cfg))
    assert provenance["training_iteration"] == 4 and provenance["finetune_step"] == 6
    assert provenance["finetune_checkpoint"].endswith("finetune_checkpoints/ckpt-6") and provenance["ema_generator"]
    result = pipeline.evaluate_run(run, ft.classifier, run_lib.weights_provenance(run, ft))
    assert json.load(open(os.path.join(run.cfg.logdir, "eval", "robustness.json")))["weights"] == provenance
    assert result["weights"]["finetune_steps_planned"] == 6


@pytest.mark.xdist_group("trained_run")
def test_an_unreadable_newest_checkpoint_names_the_intact_one_and_resumes_from_it(trained, tmp_path):
    cfg = _copy(trained, tmp_path / "corrupt")
    ckpts = tmp_path / "corrupt" / "checkpoints"
    data = next(p for p in os.listdir(ckpts) if p.startswith("ckpt-4.data"))
    with open(ckpts / data, "r+b") as f:
        f.truncate(64)
    before = sorted(os.listdir(ckpts))
    with pytest.raises(storage.CheckpointError, match=r"ckpt-4 cannot be restored .* newest intact one is "
                                                      r".*ckpt-2: resume from it with --resume_from=.*ckpt-2"):
        run_lib.RunWeights(cfg.resolve()).restore()
    assert sorted(os.listdir(ckpts)) == before  # nothing deleted or moved
    cfg.resume_from = str(ckpts / "ckpt-2")
    run = run_lib.RunWeights(cfg.resolve())
    assert run.restore().endswith("ckpt-2") and int(run.step.numpy()) == 2


@pytest.mark.xdist_group("trained_run")
def test_a_resume_may_lower_the_learning_rates_and_records_it_but_not_change_the_model(trained, tmp_path):
    cfg = _copy(trained, tmp_path / "lr")
    cfg.lr_d, cfg.lr_g = 1e-4, 5e-5
    run = run_lib.Run(cfg.resolve())
    run.restore()
    assert float(current_lr(run.model.d_optimizer)) == pytest.approx(1e-4)  # not the checkpoint's 1e-3
    assert float(current_lr(run.model.g_optimizer)) == pytest.approx(5e-5)
    history = [json.loads(line) for line in open(tmp_path / "lr" / "history.jsonl")]
    assert history[-1]["changed"] == {"lr_d": [1e-3, 1e-4], "lr_g": [4e-4, 5e-5]}
    assert history[-1]["latest_checkpoint"].endswith("ckpt-4")
    assert json.load(open(tmp_path / "lr" / "config.json"))["lr_d"] == 1e-4
    run.close()
    cfg.arch = "sngan"
    with pytest.raises(ValueError, match=r"--arch: run has 'tiny', now 'sngan'"):
        run_lib.Run(cfg.resolve())


@pytest.mark.xdist_group("trained_run")
def test_a_run_opens_from_a_spec_resolved_once_from_its_config_json(trained, tmp_path, monkeypatch):
    """The flags and config.json are merged and checked once (experiment.resolve_run); Run reads the spec only,
    and refuses the flag object itself."""
    from robgan_tf import experiment

    logdir = str(tmp_path / "once")
    shutil.copytree(trained, logdir)
    reads, read = [], experiment.read_saved
    monkeypatch.setattr(experiment, "read_saved", lambda path: reads.append(path) or read(path))
    spec = experiment.resolve_run(logdir, {"train_iterations": 6, "lr_d": 5e-4})
    run = run_lib.Run(spec)
    steps = []
    loops.train(run, hooks=[hooks.Every(1, steps.append)])  # as docs/GUIDE.md shows it
    run.close()
    assert steps == [5, 6]  # resumed at 4
    assert reads == [os.path.join(logdir, "config.json")]  # once, by resolve_run; never by Run or the loop
    assert dict(spec.changes) == {"train_iterations": [4, 6], "lr_d": [1e-3, 5e-4]}
    history = [json.loads(line) for line in open(os.path.join(logdir, "history.jsonl"))]
    assert history[-1]["changed"] == dict(spec.changes)
    assert json.load(open(os.path.join(logdir, "config.json"))) == dict(spec.settings)
    with pytest.raises(TypeError, match=r"a run opens from a RunSpec .* not a ExperimentConfig"):
        run_lib.Run(ExperimentConfig.of_run(logdir))
    with pytest.raises(TypeError, match="RunSpec"):
        run_lib.RunWeights(ExperimentConfig.of_run(logdir))


def _tree(root):
    return {os.path.join(d, f): (os.stat(os.path.join(d, f)).st_size, os.stat(os.path.join(d, f)).st_mtime_ns)
            for d, _, files in os.walk(root) for f in files}


@pytest.fixture(scope="module")
def finetuned(trained, tmp_path_factory):
    cfg = _copy(trained, tmp_path_factory.mktemp("ft") / "run")
    run = run_lib.Run(cfg.resolve())
    loops.finetune(run)
    run.close()
    return cfg


@pytest.mark.xdist_group("trained_run")
def test_a_finetuning_from_an_older_training_iteration_is_refused_and_set_aside_whole(finetuned, tmp_path):
    cfg = _copy(finetuned.logdir, tmp_path / "stale")
    folder = tmp_path / "stale" / "finetune_checkpoints"
    ft = run_lib.FinetuneRun(run_lib.RunWeights(cfg.resolve()))
    assert ft.base_iteration() == 4 and not ft.superseded()  # fine-tuned from the run's last iteration
    # as if this fine-tuning had started at iteration 2 and the run had trained on to 4 since
    storage.atomic_write_json(str(folder / "base.json"), {"training_iteration": 2, "training_checkpoint": "x"})
    assert ft.superseded()
    with pytest.raises(storage.CheckpointError, match=r"started from training iteration 2, but the run has "
                                                      r"trained to iteration 4 since: run launch/finetune.py"):
        run_lib.load_final_classifier(run_lib.RunWeights(cfg.resolve()))
    files = sorted(os.listdir(folder))
    os.makedirs(tmp_path / "stale" / "finetune_checkpoints-from-iteration-2")  # an earlier set-aside: kept too
    kept = ft.set_aside()
    assert kept == str(tmp_path / "stale" / "finetune_checkpoints-from-iteration-2-2")
    assert sorted(os.listdir(kept)) == files and not folder.exists()  # moved whole, nothing deleted
    assert ft.manager.latest_checkpoint is None and ft.restore() is None  # this object now starts afresh
    assert run_lib.FinetuneRun(run_lib.RunWeights(cfg.resolve())).base_iteration() is None


@pytest.mark.xdist_group("trained_run")
def test_reading_a_run_writes_nothing_into_it(finetuned, tmp_path):
    before = _tree(finetuned.logdir)
    run = run_lib.RunWeights(finetuned.resolve())
    classifier, provenance = run_lib.load_final_classifier(run)
    assert not hasattr(run, "model")  # the networks only: no RobGAN, no optimizers, no fine-tuning model
    assert provenance["finetune_step"] == 6 and provenance["finetune_checkpoint"].endswith("ckpt-6")
    _assert_discriminator_is(run.discriminator, provenance["finetune_checkpoint"])
    saved = tf.train.load_checkpoint(provenance["training_checkpoint"])  # the EMA weights, read straight into G
    for i, w in enumerate(run.sampling_generator().weights):
        np.testing.assert_array_equal(w.numpy(), saved.get_tensor(f"ema/w{i}/.ATTRIBUTES/VARIABLE_VALUE"))
    export.export_run(run, classifier, provenance, out=str(tmp_path / "elsewhere"))
    samples.sample_grid(run.sampling_generator())
    assert _tree(finetuned.logdir) == before
    with pytest.raises(FileNotFoundError, match="no run at .*nowhere .no config.json.: train one there first"):
        run_lib.RunWeights(ExperimentConfig(logdir=str(tmp_path / "nowhere"), **SMALL).resolve())
    assert not os.path.exists(tmp_path / "nowhere")


@pytest.mark.xdist_group("trained_run")
def test_export_versions_appear_whole_are_never_overwritten_and_failures_leave_nothing(finetuned, tmp_path,
                                                                                      monkeypatch):
    run = run_lib.RunWeights(finetuned.resolve())
    classifier, provenance = run_lib.load_final_classifier(run)
    out = tmp_path / "export"
    os.makedirs(out)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = out / f".export-tmp-{dead.pid}-0a"  # left by a killed export that had placed classifier/7 already
    os.makedirs(out / "classifier" / "7")
    os.makedirs(stale)
    (stale / "placed-classifier").write_text(str(out / "classifier" / "7"))
    paths = export.export_run(run, classifier, provenance, out=str(out))
    assert paths["classifier"] == str(out / "classifier" / "1") and paths["generator"] == str(out / "generator" / "1")
    assert sorted(os.listdir(out)) == ["classifier", "classifier.keras", "generator", "generator.keras", "manifest.json"]
    assert os.listdir(out / "classifier") == ["1"] and os.path.exists(out / "generator" / "1" / "saved_model.pb")
    for d, dirs, files in os.walk(out):  # a server running as another user can read it
        assert os.stat(d).st_mode & 0o755 == 0o755
        assert all(os.stat(os.path.join(d, f)).st_mode & 0o644 == 0o644 for f in files)
    v1 = _tree(out / "classifier" / "1")
    assert export.export_run(run, classifier, provenance, out=str(out))["classifier"] == str(out / "classifier" / "2")
    assert _tree(out / "classifier" / "1") == v1
    assert json.load(open(out / "manifest.json"))["version"] == 2
    with pytest.raises(export.ExportError, match=r"classifier/2 exists: export versions are never overwritten.*\(3\)"):
        export.export_run(run, classifier, provenance, out=str(out), version=2)
    manifest = open(out / "manifest.json").read()

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    def quick_savedmodel(model, path, *args, **kwargs):  # the failures below are in the writing around the models
        os.makedirs(path)
        open(os.path.join(path, "saved_model.pb"), "wb").close()

    monkeypatch.setattr(export, "export_classifier", quick_savedmodel)
    monkeypatch.setattr(export, "export_generator", full_disk)  # fails after the classifier was written
    with pytest.raises(storage.StorageError, match="No space left on device. Earlier export versions are untouched"):
        export.export_run(run, classifier, provenance, out=str(out))
    monkeypatch.undo()
    real_replace = os.replace

    def fails_moving_the_generator_in(src, dst):
        if dst.endswith(os.path.join("generator", "3")):
            raise OSError(30, "Read-only file system")
        return real_replace(src, dst)

    monkeypatch.setattr(export, "export_classifier", quick_savedmodel)
    monkeypatch.setattr(export, "export_generator", quick_savedmodel)
    monkeypatch.setattr(os, "replace", fails_moving_the_generator_in)  # after classifier/3 was moved in
    with pytest.raises(storage.StorageError, match="Read-only file system"):
        export.export_run(run, classifier, provenance, out=str(out))
    monkeypatch.undo()
    assert sorted(os.listdir(out / "classifier")) == sorted(os.listdir(out / "generator")) == ["1", "2"]
    assert not [p for p in os.listdir(out) if p.startswith(".")]  # no temporary folder left
    assert open(out / "manifest.json").read() == manifest and _tree(out / "classifier" / "1") == v1


@pytest.fixture(scope="module")
def exported(finetuned, tmp_path_factory):
    """The fine-tuned run opened read-only, its final classifier and provenance, and their export, made once for
    the tests that only read it: (run, classifier, provenance, export folder, export paths)."""
    run = run_lib.RunWeights(finetuned.resolve())
    classifier, provenance = run_lib.load_final_classifier(run)
    out = tmp_path_factory.mktemp("exported") / "export"
    limits = export.ServingLimits(max_batch=4, max_image_pixels=1000)  # small, so the tests can reach them
    return run, classifier, provenance, out, export.export_run(run, classifier, provenance, out=str(out),
                                                               limits=limits)


@pytest.mark.xdist_group("trained_run")
def test_served_models_check_their_inputs(exported):
    paths = exported[4]
    clf = tf.saved_model.load(paths["classifier"]).signatures["serving_default"]
    gen = tf.saved_model.load(paths["generator"]).signatures["serving_default"]
    ok = clf(images=tf.zeros([2, 16, 16, 1]))["logits"]
    assert ok.shape == (2, 10)
    expected = r"classifier expects float32 images \[N, 16, 16, 1\] in \[-1, 1\]"
    for bad in (tf.zeros([2, 28, 28, 1]), tf.zeros([2, 16, 16, 3])):
        with pytest.raises(tf.errors.InvalidArgumentError, match=expected):
            clf(images=bad)
    with pytest.raises(tf.errors.InvalidArgumentError, match=expected + " .got NaN or inf."):
        clf(images=tf.fill([1, 16, 16, 1], float("nan")))
    assert gen(z=tf.zeros([2, 16]), labels=tf.constant([0, 9]))["images"].shape == (2, 16, 16, 1)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"labels in \[0, 9\]"):
        gen(z=tf.zeros([1, 16]), labels=tf.constant([10]))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"z of shape \[N, 16\]"):
        gen(z=tf.zeros([1, 8]), labels=tf.constant([1]))
    # a rank-3 request and floats of 0..255 get the message, not a shape error or silently some logits
    with pytest.raises(tf.errors.InvalidArgumentError, match=expected + r", got shape\] \[16 16 1\]"):
        clf(images=tf.zeros([16, 16, 1]))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"got values outside it; uint8 images of 0..255 go to "
                                                             r"classify_uint8"):
        clf(images=tf.fill([1, 16, 16, 1], 200.0))
    # an int64 label that would wrap to a valid int32 class is refused in its own type
    sample = tf.saved_model.load(exported[4]["generator"]).signatures["sample"]
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"labels in \[0, 9\].*4294967299"):
        sample(labels=tf.constant([2 ** 32 + 3], tf.int64), seed=tf.constant(0, tf.int64))


@pytest.mark.xdist_group("trained_run")
def test_served_models_keep_their_limits_and_answer_empty_requests(exported):
    from PIL import Image

    paths = exported[4]
    clf = tf.saved_model.load(paths["classifier"]).signatures
    gen = tf.saved_model.load(paths["generator"]).signatures
    card = json.load(open(paths["manifest"]))
    assert card["serving_limits"] == {"max_batch": 4, "max_image_pixels": 1000}
    seed = tf.constant(0, tf.int64)
    # an empty request gets an empty answer from every signature
    for name, images in (("serving_default", tf.zeros([0, 16, 16, 1])), ("classify_uint8", tf.zeros([0, 16, 16, 1],
                                                                                                     tf.uint8))):
        assert clf[name](images=images)["logits"].shape == (0, 10)
    assert clf["classify_image_bytes"](image_bytes=tf.zeros([0], tf.string))["class_names"].shape == (0,)
    assert gen["sample"](labels=tf.zeros([0], tf.int64), seed=seed)["images"].shape == (0, 16, 16, 1)
    # over the batch limit: refused before any work, in every signature
    limit = r"at most 4 (images|labels) per request \(the max_batch of this export\)"
    for call in (lambda: clf["serving_default"](images=tf.zeros([5, 16, 16, 1])),
                 lambda: clf["classify_uint8"](images=tf.zeros([5, 16, 16, 1], tf.uint8)),
                 lambda: clf["classify_image_bytes"](image_bytes=tf.constant([_png(np.zeros((4, 4, 1), np.uint8))] * 5)),
                 lambda: gen["sample"](labels=tf.zeros([5], tf.int64), seed=seed),
                 lambda: gen["serving_default"](z=tf.zeros([5, 16]), labels=tf.zeros([5], tf.int32))):
        with pytest.raises(tf.errors.InvalidArgumentError, match=limit):
            call()
    # encoded images: the pixel limit read from the header, the bad image named by its index
    rng = np.random.default_rng(1)
    ok, wide = rng.integers(0, 256, (40, 25, 1)).astype(np.uint8), np.zeros((40, 26, 1), np.uint8)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"\[image_bytes\] \[1\] \[has\] \[1040\] \[pixels, over"):
        clf["classify_image_bytes"](image_bytes=tf.constant([_png(ok), _png(wide)]))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"\[image_bytes\] \[2\] \[is not a PNG, JPEG, GIF or BMP"):
        clf["classify_image_bytes"](image_bytes=tf.constant([_png(ok), _png(ok), b"hello"]))

    def encoded(fmt, array):
        buf = io.BytesIO()
        Image.fromarray(array[..., 0]).save(buf, fmt)
        return buf.getvalue()

    # GIF and BMP are served by a one-channel export too, and read the same grey values as PNG
    got = clf["classify_image_bytes"](image_bytes=tf.constant([encoded(f, ok) for f in ("PNG", "GIF", "BMP")]))
    np.testing.assert_allclose(got["logits"].numpy()[1:], np.repeat(got["logits"].numpy()[:1], 2, 0), atol=2e-3)


@pytest.mark.xdist_group("trained_run")
def test_loaders_verify_the_exported_files_and_card_against_their_digests(exported, tmp_path):
    from robgan_tf import loading

    out = tmp_path / "export"
    shutil.copytree(exported[3], out)
    assert loading.load_classifier(str(out)).num_classes == 10  # intact: loads
    data = out / "classifier" / "1" / "variables" / "variables.data-00000-of-00001"
    original = data.read_bytes()
    data.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    with pytest.raises(loading.ExportCorrupt, match=r"variables.data-00000-of-00001 has sha256 .* not the .* recorded "
                                                    r"at export: the file is damaged or was replaced"):
        loading.load_classifier(str(out))
    data.write_bytes(original)
    card_file = out / "generator" / "1" / "assets.extra" / "model_card.json"
    card = json.load(open(card_file))
    card["num_classes"] = 5  # would silently make robgan-sample draw five classes
    card_file.write_text(json.dumps(card))
    with pytest.raises(loading.ExportCorrupt, match=r"model card of .*generator/1 .*was edited after export"):
        loading.load_generator(str(out))
    card_file.write_text("{not json")
    with pytest.raises(loading.ExportCorrupt, match=r"model_card.json is not valid JSON"):
        loading.load_generator(str(out))
    proc = run_tool("sample", f"--model={out}", f"--out={tmp_path / 'grid.png'}")
    assert proc.returncode == 2 and "model_card.json is not valid JSON" in proc.stderr
    assert not os.path.exists(tmp_path / "grid.png")


@pytest.mark.xdist_group("trained_run")
def test_exports_stay_inside_their_folder_and_say_what_went_wrong(finetuned, exported, tmp_path, monkeypatch):
    run, classifier, provenance, _, paths = exported
    with pytest.raises(export.ExportError, match=r"lies inside the exported SavedModel .*classifier/1"):
        export.export_run(run, classifier, provenance, out=os.path.join(paths["classifier"], "nested"))
    assert not os.path.exists(os.path.join(paths["classifier"], "nested"))
    # stale temporary folders: a marker is believed only for a version folder of this export, never a link
    out = tmp_path / "export"
    precious, linked = tmp_path / "precious", tmp_path / "linked"
    for d in (precious, linked, out / "classifier" / "7", out / "generator"):
        os.makedirs(d)
    (precious / "keep.txt").write_text("x")
    (linked / "keep.txt").write_text("x")
    os.symlink(linked, out / "generator" / "7")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for name, target in (("a", precious), ("b", out / "generator" / "7"), ("c", out / "classifier" / "7")):
        stale = out / f".export-tmp-{dead.pid}-{name}"
        os.makedirs(stale)
        (stale / ("placed-generator" if name == "b" else "placed-classifier")).write_text(str(target))
    export.clean_stale(str(out))
    assert (precious / "keep.txt").exists() and (linked / "keep.txt").exists()
    assert not (out / "classifier" / "7").exists()  # the half-placed version of this export is taken out
    assert sorted(os.listdir(out)) == ["classifier", "generator"]
    # a version taken by another export running at the same time: this one says so and places nothing
    real_replace = os.replace

    def raced(src, dst):
        if dst.endswith(os.path.join("classifier", "1")):
            os.makedirs(os.path.join(dst, "other"))  # the other export got there first
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", raced)
    fresh = tmp_path / "fresh"
    with pytest.raises(export.ExportError, match=r"classifier/1 was written by another export running at the same "
                                                 r"time; this one placed nothing. Rerun"):
        export.export_run(run, classifier, provenance, out=str(fresh))
    monkeypatch.undo()
    assert os.listdir(fresh / "classifier" / "1") == ["other"] and not (fresh / "generator").exists()

    def too_large(*args, **kwargs):  # what TF's writer raises past `ulimit -f`
        raise tf.errors.UnknownError(None, None, "fingerprint.pb; File too large")

    monkeypatch.setattr(export, "export_classifier", too_large)
    with pytest.raises(storage.StorageError, match=r"File too large. Earlier export versions are untouched.*ulimit -f"):
        export.export_run(run, classifier, provenance, out=str(tmp_path / "small_disk"))


def _png(array):
    return tf.io.encode_png(tf.constant(array)).numpy()


@pytest.mark.xdist_group("trained_run")
def test_serving_signatures_keras_files_model_card_and_loaders(finetuned, exported, tmp_path):
    import keras

    import robgan_tf
    from robgan_tf import loading

    run, classifier, provenance, out, paths = exported
    clf = tf.saved_model.load(paths["classifier"])
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (3, 16, 16, 1)).astype(np.uint8)
    x = pixels.astype(np.float32) / 127.5 - 1
    expected = classifier(x, training=False).numpy()
    base = clf.signatures["serving_default"](images=tf.constant(x))
    assert set(base) == {"logits", "probabilities", "classes", "class_names"}
    np.testing.assert_allclose(base["logits"].numpy(), expected, rtol=1e-4, atol=1e-5)
    assert base["class_names"].numpy().tolist() == [str(c).encode() for c in np.argmax(expected, -1)]
    u8 = clf.signatures["classify_uint8"](images=tf.constant(pixels))
    np.testing.assert_allclose(u8["logits"].numpy(), base["logits"].numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"uint8 images \[N, 16, 16, 1\] in 0..255"):
        clf.signatures["classify_uint8"](images=tf.zeros([1, 8, 8, 1], tf.uint8))
    # encoded images of any size: same size decodes to the same pixels; a larger one is resized inside
    big = rng.integers(0, 256, (40, 24, 1)).astype(np.uint8)
    by = clf.signatures["classify_image_bytes"](image_bytes=tf.constant([_png(pixels[0]), _png(big)]))
    resized = tf.image.resize(big[None].astype(np.float32), [16, 16], antialias=True).numpy() / 127.5 - 1
    np.testing.assert_allclose(by["logits"].numpy()[0], u8["logits"].numpy()[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(by["logits"].numpy()[1], classifier(resized, training=False).numpy()[0], rtol=1e-4,
                               atol=1e-5)
    # the generator: a client sends labels (int64 or int32) and a seed; z is drawn inside, statelessly
    gen = tf.saved_model.load(paths["generator"])
    labels = tf.constant([0, 3, 9], tf.int64)
    a = gen.signatures["sample"](labels=labels, seed=tf.constant(7, tf.int64))
    b = gen.signatures["sample_int32"](labels=tf.cast(labels, tf.int32), seed=tf.constant(7, tf.int64))
    np.testing.assert_array_equal(a["images"].numpy(), b["images"].numpy())
    z = tf.random.stateless_normal([3, finetuned.z_dim], seed=tf.constant([7, 0], tf.int64))
    direct = run.sampling_generator()(z, tf.cast(labels, tf.int32), training=False).numpy()
    np.testing.assert_allclose(a["images"].numpy(), direct, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(a["images_uint8"].numpy(),
                                  np.round(np.clip((a["images"].numpy() + 1) * 127.5, 0, 255)).astype(np.uint8))
    # the .keras files load with plain Keras once robgan_tf's layers are registered
    k_clf = keras.saving.load_model(paths["classifier_keras"])
    np.testing.assert_allclose(k_clf(x, training=False).numpy(), expected, rtol=1e-4, atol=1e-5)
    k_gen = keras.saving.load_model(paths["generator_keras"])
    np.testing.assert_allclose(k_gen(z, tf.cast(labels, tf.int32), training=False).numpy(), direct, rtol=1e-4, atol=1e-5)
    # the model card: versions, classes, units, provenance, digests of the files as written, intended use
    card = json.load(open(paths["manifest"]))
    assert card == json.load(open(os.path.join(paths["classifier"], "assets.extra", "model_card.json")))
    assert card["version"] == 1 and card["robgan_tf"] == robgan_tf.__version__ and card["tensorflow"] == tf.__version__
    assert card["keras"] == keras.__version__ and card["class_names"] == [str(i) for i in range(10)]
    assert card["image_range"] == [-1.0, 1.0] and "16/255 = 0.0627" in card["eps_units"]
    assert card["weights"] == provenance and "intended_use" in card
    assert card["sha256"]["classifier"]["saved_model.pb"] == export.file_digests(paths["classifier"])["saved_model.pb"]
    # one loader for every form of path, each keeping its SavedModel alive on its own
    for path in (out, out / "classifier", out / "classifier" / "1"):
        f = robgan_tf.load_classifier(str(path))
        assert f.class_names == card["class_names"] and f.image_shape == (16, 16, 1)
        np.testing.assert_allclose(f(x).numpy(), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(robgan_tf.load_classifier(finetuned.logdir)(x, training=False).numpy(), expected,
                               rtol=1e-5, atol=1e-6)
    g = robgan_tf.load_generator(str(out / "generator"))
    assert g.z_dim == finetuned.z_dim and g.num_classes == 10
    np.testing.assert_allclose(g.sample(labels, seed=7).numpy(), direct, rtol=1e-4, atol=1e-5)
    os.makedirs(tmp_path / "empty")
    with pytest.raises(loading.ModelNotFound, match="holds no exported generator"):
        robgan_tf.load_generator(str(tmp_path / "empty"))


@pytest.mark.xdist_group("trained_run")
def test_profile_steps_trace_those_iterations_with_named_regions(trained, tmp_path):
    cfg = _copy(trained, tmp_path / "prof")
    cfg.train_iterations, cfg.profile_steps = 6, "5,6"
    loops.train(run_lib.Run(cfg.resolve()))
    traces = [os.path.join(d, f) for d, _, files in os.walk(tmp_path / "prof" / "train" / "plugins" / "profile")
              for f in files if f.endswith(".xplane.pb")]
    assert len(traces) == 1
    data = open(traces[0], "rb").read()
    for region in (b"attack", b"d_update", b"g_update"):  # the train step's name scopes reach the trace
        assert region in data
    with pytest.raises(ValueError, match="--profile_steps must be two iterations A,B"):
        ExperimentConfig(logdir=str(tmp_path / "x"), profile_steps="5").validate()


def test_run_pipeline_takes_the_command_line_defaults_and_refuses_unknown_settings(tmp_path, monkeypatch):
    """The settings run_pipeline hands the pipeline (tests/test_launch.py runs it whole on a run it resumes)."""
    import robgan_tf

    handed = []
    monkeypatch.setattr(pipeline, "pipeline", handed.append)
    logdir = str(tmp_path / "py")
    robgan_tf.run_pipeline(logdir=logdir, train_iterations=2, batch_size=8, z_dim=16)
    spec, defaults = handed[0], ExperimentConfig()
    assert (spec.logdir, spec.iterations, spec.batch_size, spec.networks.z_dim) == (logdir, 2, 8, 16)
    untouched = {k: v for k, v in defaults.to_dict().items() if k not in ("logdir", "train_iterations", "batch_size",
                                                                          "z_dim")}
    assert {k: spec.settings[k] for k in untouched} == untouched  # every other setting: the command line's default
    assert not os.path.exists(logdir)  # (the pipeline itself creates the run)
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['no_such_flag'\]"):
        robgan_tf.run_pipeline(logdir=logdir, no_such_flag=1)


@pytest.mark.xdist_group("trained_run")
def test_divergence_is_read_back_only_at_log_steps_and_still_names_the_first_bad_iteration(trained, tmp_path):
    cfg = _copy(trained, tmp_path / "nan")
    cfg.train_iterations, cfg.log_every, cfg.checkpoint_every, cfg.sample_every = 9, 3, 3, 0
    run = run_lib.Run(cfg.resolve())
    good = run.restore()  # iteration 4
    w = run.discriminator.dense_cls.layer.kernel
    w.assign(tf.fill(w.shape, float("nan")))
    run.restore = lambda: None
    # named: the first bad iteration, the intact checkpoint, and advice that can be followed (a resume may lower the
    # learning rates: test_a_resume_may_lower_the_learning_rates_and_records_it_but_not_change_the_model)
    with pytest.raises(loops.TrainingDiverged, match=r"non-finite loss at iteration 5 \(at iteration 6: .*The newest "
                       r"whose losses were still sane is .*" + os.path.basename(good) + r": rerun the same command with "
                       r"lower learning rates \(e.g. --lr_d=0.0005 --lr_g=0.0002\) --resume_from=.*"
                       + os.path.basename(good) + " to resume from it"):
        loops.train(run)
    assert run.manager.latest_checkpoint == good  # nothing saved at iteration 6
    assert non_finite_in_checkpoint(good) == []


@pytest.mark.xdist_group("trained_run")
def test_quality_every_writes_a_curve_against_d_updates_and_training_time(trained, tmp_path):
    from robgan_tf import reference
    from robgan_tf.models import Discriminator

    # any classifier saved as a reference file serves the curve (training one is tests/test_reference.py's)
    classifier = Discriminator(10, 16, "tiny", channels=1).classifier()
    classifier.build_by_calling()
    ref = str(tmp_path / "ref.keras")
    digest = reference.save(classifier, ref, {})
    cfg = _copy(trained, tmp_path / "q")
    cfg.train_iterations, cfg.quality_every, cfg.quality_weights, cfg.quality_samples = 8, 2, ref, 50
    loops.train(run_lib.Run(cfg.resolve()))
    curve = [json.loads(line) for line in open(tmp_path / "q" / "eval" / "quality_curve.jsonl")]
    assert [r["iteration"] for r in curve] == [6, 8] and [r["d_updates"] for r in curve] == [6, 8]  # n_dis 1
    assert 0 < curve[0]["train_seconds"] < curve[1]["train_seconds"]
    assert all(r["backend"] == "reference" and r["weights_sha256"] == digest and r["num_samples"] == 50
               and r["g_statistics"] == "batch" for r in curve)
    assert all(np.isfinite([r["inception_score"], r["fid"], r["kid"]]).all() and 0 <= r["label_accuracy"] <= 1
               for r in curve)
    tags = set()
    for name in os.listdir(tmp_path / "q" / "train"):
        if name.startswith("events.out"):
            for e in tf.compat.v1.train.summary_iterator(str(tmp_path / "q" / "train" / name)):
                tags |= {v.tag for v in e.summary.value}
    assert {"quality/inception_score", "quality/fid", "quality/kid", "quality/label_accuracy"} <= tags
    assert "samples" not in tags and not any(t.startswith("gap/") for t in tags)  # --sample_every=0: no monitor
    bad = ExperimentConfig(logdir=str(tmp_path / "x"), quality_every=5, quality_weights=str(tmp_path / "none.keras"))
    with pytest.raises(ValueError, match="--quality_weights=FILE.keras"):
        bad.validate()


@pytest.mark.xdist_group("pipeline_run")
def test_finetuning_keeps_the_best_validation_checkpoint_and_can_export_it(pipeline_run, tmp_path):
    """The launch tests' pipeline run fine-tuned 5 steps, monitored on its validation split at steps 4 and 5: the
    kept checkpoint is the step of the highest validation robust accuracy it logged (the earlier on a tie), and
    --finetune_weights=best loads exactly that one."""
    cfg = ExperimentConfig.of_run(pipeline_run[0])
    logged = {}
    for name in sorted(os.listdir(os.path.join(cfg.logdir, "finetune"))):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(cfg.logdir, "finetune", name)):
            for v in event.summary.value:
                if v.tag.startswith("val_robust_accuracy"):
                    logged[event.step] = float(tf.make_ndarray(v.tensor))
    assert sorted(logged) == [4, 5]
    best_step = max(sorted(logged), key=lambda s: (logged[s], -s))
    best = run_lib.read_best(RunDir(cfg.logdir))
    assert best["finetune_step"] == best_step and best["checkpoint"].endswith(f"ckpt-{best_step}")
    assert best["val_robust_accuracy"] == pytest.approx(logged[best_step])
    cfg.finetune_weights = "best"
    classifier, provenance = run_lib.load_final_classifier(run_lib.RunWeights(cfg.resolve()))
    assert provenance["finetune_step"] == best_step
    assert provenance["selected_by"].startswith(f"validation robust accuracy {best['val_robust_accuracy']:.4f}")
    _assert_discriminator_is(classifier.discriminator, best["checkpoint"])  # the kept weights, exactly
    with pytest.raises(ValueError, match="needs --val_examples"):
        ExperimentConfig(logdir=str(tmp_path / "x"), finetune_weights="best").validate()


def test_a_tfds_set_trains_with_a_validation_fraction_and_the_run_records_its_origin(tmp_path):
    import tensorflow_datasets as tfds

    rng = np.random.default_rng(1)
    images, labels = rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8), np.arange(40) % 100

    def records(builder, **kwargs):
        return tf.data.Dataset.from_tensor_slices({"image": images, "label": labels, "id": ["x"] * 40,
                                                   "coarse_label": labels % 20})

    cfg = ExperimentConfig(logdir=str(tmp_path / "tfds"), dataset="tfds:cifar100", resolution=16, arch="tiny",
                           batch_size=8, attack_steps=1, z_dim=16, train_iterations=2, finetune_steps=0,
                           checkpoint_every=2, log_every=100, sample_every=0, validation_fraction=0.25)
    with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE, as_dataset_fn=records):
        run = run_lib.Run(cfg.resolve())
        loops.train(run)
    assert run.num_classes == 100 and run.resolution == 16 and cfg.augmentation == "crop"
    assert run.val_source.info.num_examples == 10 and run.train_source.info.num_examples == 30  # 0.25 of 40
    assert int(run.step.numpy()) == 2
    origin = json.load(open(tmp_path / "tfds" / "data.json"))
    assert origin["train"]["origin"] == f"tensorflow-datasets {tfds.__version__}, cifar100/3.0.2, split train"
    assert origin["val"]["num_examples"] == 10 and origin["test"]["num_examples"] == 40
    with pytest.raises(ValueError, match="--validation_fraction and --val_examples both"):
        ExperimentConfig(logdir=str(tmp_path / "x"), val_examples=5, validation_fraction=0.1).validate()


@pytest.mark.xdist_group("trained_run")
def test_a_run_that_never_fine_tunes_exports_its_trained_discriminator(trained, tmp_path):
    cfg = _copy(trained, tmp_path / "noft")
    cfg.finetune_steps = 0  # as the baselines' flagfiles set it
    run = run_lib.RunWeights(cfg.resolve())
    classifier, provenance = run_lib.load_final_classifier(run)
    assert provenance["finetune_step"] is None and provenance["training_checkpoint"].endswith("ckpt-4")
    _assert_discriminator_is(run.discriminator, os.path.join(trained, "checkpoints"))
    paths = export.export_run(run, classifier, provenance, out=str(tmp_path / "export"))
    served = tf.saved_model.load(paths["classifier"]).signatures["serving_default"]
    images = tf.random.stateless_uniform([3, 16, 16, 1], seed=[1, 2], minval=-1.0, maxval=1.0)
    np.testing.assert_allclose(served(images=images)["logits"].numpy(), classifier(images, training=False).numpy(),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.xdist_group("trained_run")
def test_resume_from_restores_exactly_what_it_names_or_refuses(trained, finetuned, tmp_path):
    from robgan_tf.experiment import ConfigError

    cfg = _copy(trained, tmp_path / "named")
    ckpts = tmp_path / "named" / "checkpoints"
    for path, message in ((str(ckpts / "ckpt-3"), r"no such checkpoint \(.*ckpt-3.index does not exist\)"),
                          (os.path.join(trained, "checkpoints", "ckpt-2"), r"is not a checkpoint of the run in"),
                          (os.path.join(finetuned.logdir, "checkpoints", "ckpt-2"), r"is not a checkpoint of the run")):
        cfg.resume_from = path
        with pytest.raises(ConfigError, match=message):
            run_lib.RunWeights(cfg.resolve()).restore()
    cfg.resume_from = str(ckpts / "ckpt-2")
    run = run_lib.RunWeights(cfg.resolve())
    assert run.restore() == str(ckpts / "ckpt-2") and int(run.step.numpy()) == 2  # not the latest, ckpt-4
    _assert_discriminator_is(run.discriminator, str(ckpts / "ckpt-2"))
    # a fine-tuning checkpoint is not resumed by training
    ft_cfg = _copy(finetuned.logdir, tmp_path / "ft")
    ft_cfg.resume_from = tf.train.latest_checkpoint(str(tmp_path / "ft" / "finetune_checkpoints"))
    with pytest.raises(ConfigError, match=r"is a fine-tuning checkpoint; training resumes from a training one"):
        loops.train(run_lib.Run(ft_cfg.resolve()))
    # fine-tuning from a chosen training checkpoint (the authors fine-tune an intermediate epoch): recorded, and
    # what later reads of the run load, although the run's latest training checkpoint is another
    run = run_lib.Run(cfg.resolve(), create=False)
    ft = loops.finetune(run)
    run.close()
    base = json.load(open(tmp_path / "named" / "finetune_checkpoints" / "base.json"))
    assert base == {"training_iteration": 2, "training_checkpoint": str(ckpts / "ckpt-2"), "chosen": True}
    cfg.resume_from = ""
    reread = run_lib.RunWeights(cfg.resolve())
    classifier, provenance = run_lib.load_final_classifier(reread)
    assert provenance["training_iteration"] == 2 and provenance["training_checkpoint"] == str(ckpts / "ckpt-2")
    assert provenance["finetune_step"] == cfg.finetune_steps
    _assert_discriminator_is(reread.discriminator, ft.manager.latest_checkpoint)
    for f in ckpts.glob("ckpt-2.*"):  # the chosen checkpoint rotated away later: the fine-tuning still loads
        f.unlink()
    classifier, provenance = run_lib.load_final_classifier(run_lib.RunWeights(cfg.resolve()))
    assert provenance["training_iteration"] == 2 and provenance["finetune_step"] == cfg.finetune_steps
    _assert_discriminator_is(classifier.discriminator, ft.manager.latest_checkpoint)


@pytest.mark.xdist_group("trained_run")
def test_sigterm_and_ctrl_c_stop_after_the_step_with_a_checkpoint(trained, tmp_path):
    import signal

    from robgan_tf.cli import common

    cfg = _copy(trained, tmp_path / "term")
    cfg.train_iterations, cfg.checkpoint_every = 9, 100  # no regular checkpoint before the end
    for signum, at in ((signal.SIGTERM, 6), (signal.SIGINT, 8)):  # the run starts at iteration 4
        class Signal(Hook):  # during iteration `at`, as the signal would (the handler's own call; a real
            def after_step(self, loop, step, logs, signum=signum, at=at):  # signal: test_launch.py)
                if step == at - 1:
                    loop.stop_requests.request(signum)

        run = run_lib.Run(cfg.resolve())
        with pytest.raises(loops.Interrupted, match=rf"stopped by {signal.Signals(signum).name} after iteration {at} "
                                                    rf"of 9; checkpoint saved \(.*ckpt-{at}\). Rerun the same command"):
            loops.train(run, hooks=[Signal()])
        run.close()
        assert tf.train.latest_checkpoint(str(tmp_path / "term" / "checkpoints")).endswith(f"ckpt-{at}")
    with pytest.raises(SystemExit) as exit_:
        common.guarded(lambda: (_ for _ in ()).throw(loops.Interrupted("stopped", signal.SIGTERM)))
    assert exit_.value.code == 128 + signal.SIGTERM  # what a shell and a scheduler read as "ended by SIGTERM"


@pytest.mark.xdist_group("trained_run")
def test_batches_larger_than_the_data_are_refused_before_the_run_is_written(tmp_path):
    from robgan_tf.experiment import ConfigError

    for settings, message in ((dict(batch_size=2000), r"--batch_size needs 2000 training examples per step, but digits "
                                                      r"has 1437; use a smaller batch"),
                              (dict(val_examples=1430), r"needs 16 training examples per step, but digits has 7 after "
                                                        r"1430 were held out for validation")):
        cfg = ExperimentConfig(logdir=str(tmp_path / "big"), **{**SMALL, **settings})
        with pytest.raises(ConfigError, match=message):
            run_lib.Run(cfg.resolve())
        assert not os.path.exists(tmp_path / "big" / "config.json")  # the corrected command is not a "different run"


def test_after_a_divergence_the_advice_skips_checkpoints_whose_losses_had_blown_up(tmp_path):
    os.makedirs(tmp_path / "eval")
    clock = [(2, {"d_loss": 1.0, "acc": 0.5}), (4, {"d_loss": 1.3, "acc": 0.6}), (6, {"d_loss": 40.0, "acc": 0.1}),
             (8, {"d_loss": 2e6, "acc": 0.1})]
    for iteration, metrics in clock:
        storage.append_jsonl(str(tmp_path / "eval" / "train_seconds.jsonl"),
                             {"iteration": iteration, "train_seconds": iteration / 10, "metrics": metrics})
    ckpts = [str(tmp_path / f"ckpt-{i}") for i in (4, 6, 8)]  # what the manager still holds (ckpt-2 rotated)
    assert loops.sane_checkpoints(str(tmp_path), "train", ckpts) == ckpts[:1]
    assert loops.sane_checkpoints(str(tmp_path), "train", ckpts + [str(tmp_path / "ckpt-10")])[-1].endswith("ckpt-10")

    class Manager:
        checkpoints, latest_checkpoint = ckpts, ckpts[-1]

    advice = loops._advice(Manager, str(tmp_path), "lower learning rates", "train")
    assert (f"The newest whose losses were still sane is {ckpts[0]} (the later {ckpts[-1]} had blown up already): "
            f"rerun the same command with lower learning rates --resume_from={ckpts[0]}") in advice
    Manager.checkpoints = ckpts[1:]
    assert "Every checkpoint kept here had blown-up losses already" in loops._advice(Manager, str(tmp_path), "x",
                                                                                    "train")
