"""Opening a run: `Run` (training) and `FinetuneRun` (eq. 10) create or continue it, locked for writing, with
its data, networks, optimizers and checkpoints; `RunWeights` opens it to read its weights only (the networks,
nothing else, nothing written); and `load_final_classifier` says which weights a run's result comes from. The
folder's layout is layout.py's.
"""
from __future__ import annotations

import datetime
import json
import os

import keras
import tensorflow as tf

from robgan_tf import data as data_lib
from robgan_tf import storage
from robgan_tf import layout as layout_lib
from robgan_tf.layout import CHECKPOINT_FOLDERS
from robgan_tf.spec import ConfigError, RunSpec
from robgan_tf.runtime import is_chief, make_strategy, worker_dir
from robgan_tf.training import FineTuner, RobGAN, make_optimizers


def _log(msg):
    print(msg, flush=True)


def model_variables(model):
    """Every variable of a Keras model (trainable, BN statistics, SN vectors) keyed by position.

    tf.train.Checkpoint does not traverse Keras 3's layer lists, so handing it the model would save
    only the variables that sit directly on it (and, through the optimizer, the trainable ones) --
    silently dropping BN statistics and SN vectors. Positional keys also survive Keras' automatic
    layer renaming ("discriminator_1") when several models are built in one process.
    """
    if not model.weights:  # an unbuilt model would checkpoint -- and restore -- nothing, silently
        raise ValueError(f"{model.name} has no variables yet: build it (build_by_calling) before checkpointing it.")
    return {f"v{i:04d}": w for i, w in enumerate(model.weights)}


def _checked_spec(spec):
    if not isinstance(spec, RunSpec):  # the flags stay at the command line; experiment.resolve_run resolves them
        raise TypeError(f"a run opens from a RunSpec (experiment.resolve_run(logdir, flags) or "
                        f"ExperimentConfig.resolve()), not a {type(spec).__name__}.")
    return spec


def _open_existing(spec):
    """The run's layout, after refusing a folder that holds no run."""
    return spec.layout.require_run()


def _test_split(cfg):
    """The test split and what it says about the networks: (source, num_classes, channels, resolution)."""
    source = data_lib.load(cfg.dataset, "test", cfg.load_resolution, cfg.data_dir, download=cfg.download)
    info = source.info
    resolution = info.image_shape[0]
    if resolution != cfg.image_resolution and cfg.resolution:
        raise ConfigError(f"{cfg.dataset} gave {resolution}px images, not --resolution={cfg.resolution}.")
    return source, info.num_classes, info.image_shape[-1], resolution


class RunWeights:
    """A run opened to read its weights (evaluate, export, sample): its networks and a checkpoint of their variables
    and the iteration -- no optimizers, no fine-tuning model -- and nothing is written into the run.

    `restore` reads a training checkpoint (the latest, or the one --resume_from names); with EMA on, the EMA weights
    go straight into a second generator, `sampling_generator()`. `load_final_classifier` reads the fine-tuned one.
    """

    def __init__(self, spec: RunSpec):
        self.cfg = cfg = _checked_spec(spec)
        self.layout = _open_existing(cfg)
        self.strategy = tf.distribute.get_strategy()
        self.restored = None
        self.test_source, self.num_classes, self.channels, self.resolution = _test_split(cfg)
        self.info = self.test_source.info
        self.generator, self.discriminator = cfg.networks.build(self.num_classes, self.resolution, self.channels)
        for network in (self.generator, self.discriminator):
            if network is not None:  # variables exist before the checkpoint lists them
                network.build_by_calling()
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="iteration")
        objects = dict(discriminator=model_variables(self.discriminator), step=self.step)
        self._ema = None
        if self.generator is not None:
            objects["generator"] = model_variables(self.generator)
            if cfg.ema:  # the EMA weights, as RobGAN keeps them: one per G weight
                self._ema = type(self.generator).from_config(self.generator.get_config())
                self._ema.build_by_calling()
                objects["ema"] = {f"w{i}": w for i, w in enumerate(self._ema.weights)}
        self.checkpoint = tf.train.Checkpoint(**objects)
        self.manager = tf.train.CheckpointManager(self.checkpoint, self.layout.checkpoints, max_to_keep=None)

    def restore(self, path=None):
        """Restores training checkpoint `path`, else the one --resume_from names (when it is a training
        checkpoint), else the latest; returns its path or None (no checkpoint yet)."""
        named = named_checkpoint(self.cfg)
        path = path or (named[1] if named and named[0] == "train" else None)
        self.restored = _restore(self.checkpoint, self.manager, path)
        return self.restored

    def sampling_generator(self):
        """The generator to sample and export with: its EMA copy when the run keeps one."""
        return self._ema or self.generator


class Run:
    """A run to train or fine-tune: config, strategy, data, models and optimizers (built in the strategy scope).

    create=False opens an existing run to continue it (fine-tuning), never making a new one. Otherwise the run is
    created or resumed. A writing chief takes the run's lock (one writer per run), saves config.json and records
    any setting changed since the last start in history.jsonl. To read a run's weights, use RunWeights.
    """

    def __init__(self, spec: RunSpec, *, strategy=None, need_train_data=True, create=True):
        self.cfg = cfg = _checked_spec(spec)
        self.layout = _open_existing(cfg) if not create else cfg.layout
        self.lock = None  # held while this process writes the run
        self.restored = None  # the training checkpoint restore() restored
        self.strategy = strategy or make_strategy(cfg)
        self._load_data(need_train_data)  # (and so validate it) before any model is built
        with self.strategy.scope():
            self._build()
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, worker_dir(cfg.logdir, self.strategy, layout_lib.CHECKPOINTS),
            max_to_keep=cfg.keep_checkpoints)
        # --keep_checkpoint_every: a second, never-rotated series for curves over training.
        self.kept_manager = (tf.train.CheckpointManager(
            self.checkpoint, worker_dir(cfg.logdir, self.strategy, layout_lib.KEPT),
            max_to_keep=None) if cfg.keep_checkpoint_every else None)
        if is_chief(self.strategy):
            self._open_for_writing()

    def _load_data(self, need_train_data):
        cfg, res = self.cfg, self.cfg.load_resolution
        self.test_source, self.num_classes, self.channels, self.resolution = _test_split(cfg)
        self.train_source = (data_lib.load(cfg.dataset, "train", res, cfg.data_dir, download=cfg.download)
                             if need_train_data else None)
        self.val_source = None
        held = cfg.validation_size(self.train_source.info.num_examples) if self.train_source is not None else 0
        if held:
            self.train_source, self.val_source = data_lib.hold_out(self.train_source, held, cfg.seed)
        # What in-training monitoring reads: the validation split when there is one, never for selection the test.
        self.monitor_source = self.val_source or self.test_source
        if self.train_source is not None:
            _check_batches_fit(cfg, self.train_source.info.num_examples, held)
        self.info = self.test_source.info

    def _build(self):
        """Networks, the RobGAN model with its optimizers, and the checkpoint of all of them (in the scope)."""
        cfg = self.cfg
        self.generator, self.discriminator = cfg.networks.build(self.num_classes, self.resolution, self.channels)
        self.train_config = cfg.train
        self.model = RobGAN(self.discriminator, self.generator, self.train_config)
        self.model.compile(*make_optimizers(self.train_config))
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="iteration")
        objects = dict(discriminator=model_variables(self.discriminator), d_optimizer=self.model.d_optimizer,
                       rng=self.model.rng, step=self.step)
        if self.generator is not None:
            objects.update(generator=model_variables(self.generator), g_optimizer=self.model.g_optimizer)
        if self.model.ema_weights:
            objects["ema"] = {f"w{i}": w for i, w in enumerate(self.model.ema_weights)}
        self.checkpoint = tf.train.Checkpoint(**objects)

    def _open_for_writing(self):
        """Takes the run's lock, records changed settings, saves config.json and where the data came from."""
        cfg = self.cfg
        try:
            os.makedirs(cfg.logdir, exist_ok=True)
        except OSError as e:
            raise storage.storage_error(e, cfg.logdir, "Nothing was written.") from e
        self.lock = storage.RunLock.hold(cfg.logdir)
        if cfg.changes:
            storage.append_jsonl(self.layout.history, {
                "time": datetime.datetime.now().isoformat(timespec="seconds"),
                "latest_checkpoint": self.manager.latest_checkpoint, "changed": dict(cfg.changes)})
        storage.atomic_write_json(self.layout.config, dict(cfg.settings))
        # Where the data came from (path, or tensorflow-datasets and dataset versions), as of this opening.
        storage.atomic_write_json(self.layout.data, {
            split: {"split": src.info.split, "num_examples": src.info.num_examples, "origin": src.info.origin}
            for split, src in (("train", self.train_source), ("val", self.val_source),
                               ("test", self.test_source)) if src is not None})

    def close(self):
        """Releases the run's lock (also released when the process ends, however it ends)."""
        if self.lock is not None:
            self.lock.release()

    def restore(self, path=None):
        """Restores training checkpoint `path`, else the one --resume_from names (when it is a training
        checkpoint), else the latest; returns its path or None (no checkpoint yet).

        The learning rates are those of the current settings, not of the checkpoint (a resume may lower them)."""
        named = named_checkpoint(self.cfg)
        path = path or (named[1] if named and named[0] == "train" else None)
        self.restored = _restore(self.checkpoint, self.manager, path)
        if self.restored:
            for opt, lr in ((self.model.d_optimizer, self.train_config.lr_d),
                            (self.model.g_optimizer, self.train_config.lr_g)):
                inner = getattr(opt, "inner_optimizer", opt)
                if opt is not None and not isinstance(inner._learning_rate,
                                                      keras.optimizers.schedules.LearningRateSchedule):
                    inner.learning_rate = lr
        return self.restored

    def sampling_generator(self):
        return self.model.sampling_generator() if self.generator is not None else None


def _check_batches_fit(cfg, n, held):
    """Refuses, before anything is written, batches larger than the training examples left."""
    need = {"--batch_size" + (f" x --n_dis={cfg.n_dis}" if cfg.n_dis > 1 else ""): cfg.batch_size * cfg.n_dis}
    if cfg.finetune_steps:
        given = cfg.settings.get("finetune_batch_size")
        need["--finetune_batch_size" if given else "--batch_size (fine-tuning)"] = cfg.finetune_batch
    for what, k in need.items():
        if k > n:
            after = (f" after {held} were held out for validation (--val_examples / --validation_fraction)"
                     if held else "")
            raise ConfigError(f"{what} needs {k} training examples per step, but {cfg.dataset} has {n}{after}; "
                              "use a smaller batch" + (" or hold out fewer." if held else "."))



def named_checkpoint(cfg):
    """("train" | "finetune", path) for --resume_from, None when it is not given. A path that is not a
    checkpoint, or not one of this run's (another run's, say, whose settings this run's could not check), is a
    ConfigError: what is named is restored exactly, or nothing is."""
    path = cfg.resume_from
    if not path:
        return None
    if not os.path.exists(path + ".index"):
        raise ConfigError(f"--resume_from={path}: no such checkpoint ({path}.index does not exist). Name a checkpoint "
                          "by its prefix, e.g. LOGDIR/checkpoints/ckpt-200 (ls LOGDIR/checkpoints).")
    folder = os.path.realpath(os.path.dirname(path))
    for stage, subs in CHECKPOINT_FOLDERS.items():
        if any(folder == os.path.realpath(os.path.join(cfg.logdir, sub)) for sub in subs):
            return stage, path
    raise ConfigError(f"--resume_from={path} is not a checkpoint of the run in {cfg.logdir} (its checkpoints/, "
                      "checkpoints/kept/ or finetune_checkpoints/): a run restores only its own checkpoints. To "
                      "start from another run's weights, copy that run's folder and continue it there.")


def _restore(checkpoint, manager, path=None):
    """Restores `path`, or the manager's latest checkpoint when None. An unreadable checkpoint raises
    CheckpointError naming the newest intact one."""
    path = path or manager.latest_checkpoint
    if path:
        try:
            # expect_partial: a reader's checkpoint holds the networks only, not the optimizers in the file
            checkpoint.restore(path).assert_existing_objects_matched().expect_partial()
        except Exception as e:  # noqa: BLE001 -- a damaged file fails in many ways (OpError, IndexError, ...)
            raise storage.unreadable_checkpoint_error(manager, path, e) from e
    return path


def read_base(path):
    """The record of the training checkpoint a fine-tuning started from ({training_iteration, training_checkpoint,
    chosen}), or None before it starts."""
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            base = json.load(f)
        int(base["training_iteration"])
        return base
    except (ValueError, KeyError, TypeError) as e:
        raise storage.CheckpointError(f"{path} is damaged ({type(e).__name__}: {e}); it records the training "
                                      "checkpoint this fine-tuning started from. Move the finetune_checkpoints "
                                      "folder aside and fine-tune again.") from None


def read_best(layout):
    """The record of a run's best validation fine-tuning checkpoint, or None."""
    if not os.path.exists(layout.best_record):
        return None
    with open(layout.best_record) as f:
        return json.load(f)


def restore_finetuning_base(run, base_file):
    """Restores into `run` the trained weights its fine-tuning starts (or started) from: the training checkpoint
    --resume_from names; else the one the fine-tuning recorded as deliberately chosen (a kept checkpoint, say);
    else the run's latest. Returns whether the checkpoint was chosen. When the chosen one has rotated away since,
    the fine-tuning checkpoint holds D and the frozen G, and the record says which iteration they came from."""
    cfg = run.cfg
    named, base = named_checkpoint(cfg), read_base(base_file)
    start = (named[1] if named and named[0] == "train" else
             base["training_checkpoint"] if base and base.get("chosen") else None)
    gone = bool(start) and not os.path.exists(start + ".index")
    if gone and not tf.train.latest_checkpoint(os.path.dirname(base_file)):
        raise storage.CheckpointError(
            f"the fine-tuning in {os.path.dirname(base_file)} started from training checkpoint {start}, which no "
            "longer exists. Fine-tune afresh from another one: robgan-finetune "
            f"--logdir={cfg.logdir} --resume_from={cfg.logdir}/checkpoints/kept/ckpt-N.")
    if not run.restore(None if gone else start):
        raise FileNotFoundError(f"no training checkpoint in {cfg.logdir}/checkpoints: train first "
                                "(launch/train.py), then fine-tune.")
    if gone:
        run.step.assign(int(base["training_iteration"]))
        run.restored = start
    return bool(start)


def _superseded(base_iteration, latest_finetune_checkpoint, run):
    return (base_iteration is not None and latest_finetune_checkpoint is not None
            and base_iteration != int(run.step.numpy()))


class FinetuneRun:
    """Eq. 10 fine-tuning state: the classifier view of D, frozen G, optimizer, checkpoint.

    The trained run is restored FIRST (G, its EMA and D), so the frozen generator is the trained one
    whatever happens next. The fine-tuning checkpoint holds D, the optimizer, the RNG, the step and the
    frozen generator's weights, so a resumed fine-tuning samples from exactly the generator it started
    with, even if the training checkpoints have rotated since.
    """

    def __init__(self, run: Run):
        cfg = run.cfg
        self.run = run
        # With a validation split: the checkpoint of the best validation robust accuracy, besides the latest.
        self.best_dir = run.layout.best
        self._base_file = os.path.join(worker_dir(cfg.logdir, run.strategy, layout_lib.FINETUNE),
                                       layout_lib.BASE_RECORD)
        self.chosen = restore_finetuning_base(run, self._base_file)
        self.config = cfg.finetune
        with run.strategy.scope():
            self.classifier = run.discriminator.classifier()
            self.generator = run.sampling_generator()  # after the restore: the trained (EMA) weights
            self.tuner = FineTuner(self.classifier, self.generator, self.config)
            self.tuner.compile()
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="finetune_step")
            objects = dict(discriminator=model_variables(run.discriminator), optimizer=self.tuner.optimizer,
                           rng=self.tuner.rng, step=self.step)
            if self.generator is not None:
                objects["generator"] = model_variables(self.generator)
            self.checkpoint = tf.train.Checkpoint(**objects)
        self._open_managers()

    def _open_managers(self):
        # A CheckpointManager lists its folder once, when made: made again after the folder moves (set_aside).
        cfg = self.run.cfg
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, worker_dir(cfg.logdir, self.run.strategy, layout_lib.FINETUNE),
            max_to_keep=cfg.keep_checkpoints)
        self.best_manager = tf.train.CheckpointManager(self.checkpoint, self.best_dir, max_to_keep=1)

    def restore(self):
        """Restores the fine-tuning checkpoint --resume_from names, else the latest; returns it or None."""
        named = named_checkpoint(self.run.cfg)
        return _restore(self.checkpoint, self.manager, named[1] if named and named[0] == "finetune" else None)

    def base_iteration(self):
        """The training iteration this fine-tuning started from; None before it starts (and for runs of
        robgan_tf < 0.6, which did not record it)."""
        base = read_base(self._base_file)
        return None if base is None else int(base["training_iteration"])

    def record_base(self):
        """Notes the training checkpoint a fresh fine-tuning starts from (before its first checkpoint), and whether
        it was chosen (--resume_from) rather than the run's latest."""
        storage.atomic_write_json(self._base_file, {"training_iteration": int(self.run.step.numpy()),
                                                    "training_checkpoint": self.run.restored,
                                                    "chosen": self.chosen})

    def superseded(self):
        """True when this fine-tuning started from other trained weights than those restored now: the run has
        trained on since (or --resume_from names another training checkpoint), so its weights no longer come
        from the trained discriminator and generator restored now."""
        return _superseded(self.base_iteration(), self.manager.latest_checkpoint, self.run)

    def set_aside(self):
        """Moves a superseded fine-tuning (checkpoints, best checkpoint, base.json) to a sibling folder named after
        the iteration it started from, so a new fine-tuning can start here; nothing is deleted. Returns the folder.
        Call it before `restore`: this object then starts afresh from the trained weights it was made with."""
        base, src = self.base_iteration(), self.manager.directory
        dst = f"{src}-from-iteration-{base}"
        n = 2
        while os.path.exists(dst):
            dst = f"{src}-from-iteration-{base}-{n}"
            n += 1
        try:
            os.replace(src, dst)
        except OSError as e:
            raise storage.storage_error(e, dst, "The fine-tuning checkpoints were left where they were.") from e
        self._open_managers()
        return dst

    def best(self):
        """The record of the best validation checkpoint ({finetune_step, val_robust_accuracy, eps, checkpoint}),
        or None."""
        return read_best(self.run.layout)

    def note_validation(self, step, accuracy, eps):
        """Keeps this step's weights as the best checkpoint when its validation robust accuracy beats the best."""
        best = self.best()
        if best is not None and best["val_robust_accuracy"] >= accuracy:
            return False
        saved = storage.save_checkpoint(self.best_manager, step)
        storage.atomic_write_json(self.run.layout.best_record, {
            "finetune_step": int(step), "val_robust_accuracy": float(accuracy), "eps": float(eps),
            "checkpoint": saved})
        return True


def weights_provenance(run, ft: FinetuneRun | None = None):
    """Which weights a result or export comes from: the training iteration and fine-tuning step."""
    step, checkpoint = (int(ft.step.numpy()), ft.manager.latest_checkpoint) if ft is not None else (None, None)
    return _provenance(run, step, checkpoint)


def _provenance(run, finetune_step, finetune_checkpoint):
    cfg = run.cfg
    return {"training_iteration": int(run.step.numpy()), "training_iterations_planned": cfg.iterations,
            "training_checkpoint": run.restored, "ema_generator": cfg.ema,
            "finetune_step": finetune_step, "finetune_steps_planned": cfg.finetune_steps,
            "finetune_checkpoint": finetune_checkpoint}


def load_trained_classifier(run: Run):
    """(classifier, provenance): the classifier view of the latest training checkpoint's D, before any
    fine-tuning (e.g. to measure what eq. 10 adds)."""
    if not run.restore():
        raise FileNotFoundError(f"no checkpoint in {run.cfg.logdir}/checkpoints: train first.")
    return run.discriminator.classifier(), weights_provenance(run)


def load_final_classifier(run):
    """(classifier, provenance): the fine-tuned classifier when the run fine-tunes, else the trained D's. `run` is a
    RunWeights (or a Run); only variables are read: no optimizer or fine-tuning model is built.

    A run configured to fine-tune (finetune_steps > 0) whose fine-tuning has not started is an error, not a
    silent fallback to the un-fine-tuned discriminator. `provenance` says which weights were loaded.
    """
    cfg = run.cfg
    if not cfg.finetune_steps:
        return load_trained_classifier(run)
    folder = run.layout.finetune
    restore_finetuning_base(run, os.path.join(folder, layout_lib.BASE_RECORD))
    base, latest = read_base(os.path.join(folder, layout_lib.BASE_RECORD)), tf.train.latest_checkpoint(folder)
    if _superseded(None if base is None else int(base["training_iteration"]), latest, run):
        raise storage.CheckpointError(
            f"the fine-tuning in {folder} started from training iteration {base['training_iteration']}, but "
            f"the run has trained to iteration {int(run.step.numpy())} since: run launch/finetune.py "
            f"--logdir={cfg.logdir} to fine-tune the newer weights (the earlier fine-tuning is kept aside), or "
            "evaluate the training checkpoint itself with --stage=trained.")
    step = tf.Variable(0, dtype=tf.int64, trainable=False, name="finetune_step")
    objects = dict(discriminator=model_variables(run.discriminator), step=step)
    if run.generator is not None:  # the frozen G it sampled, as saved with it
        objects["generator"] = model_variables(run.sampling_generator())
    checkpoint = tf.train.Checkpoint(**objects)
    manager = tf.train.CheckpointManager(checkpoint, folder, max_to_keep=None)  # reads only: nothing is saved
    if cfg.finetune_weights == "best":
        best = read_best(run.layout)
        if best is None:
            raise FileNotFoundError(f"{cfg.logdir} has no best validation checkpoint: --finetune_weights=best needs "
                                    "a run fine-tuned with --val_examples or --validation_fraction (the best is kept "
                                    "as it fine-tunes).")
        _restore(checkpoint, manager, best["checkpoint"])
        provenance = _provenance(run, int(step.numpy()), best["checkpoint"])
        provenance["selected_by"] = (f"validation robust accuracy {best['val_robust_accuracy']:.4f} at eps "
                                     f"{best['eps']:g}")
        return run.discriminator.classifier(), provenance
    named = named_checkpoint(cfg)
    latest = named[1] if named and named[0] == "finetune" else latest
    if latest is None:
        raise FileNotFoundError(
            f"{cfg.logdir} is set to fine-tune for {cfg.finetune_steps} steps but has no fine-tuning checkpoint "
            f"in {folder}: run launch/finetune.py --logdir={cfg.logdir} first (or "
            "launch/pipeline.py, which resumes where the run stopped).")
    _restore(checkpoint, manager, latest)
    provenance = _provenance(run, int(step.numpy()), latest)
    if provenance["finetune_step"] < cfg.finetune_steps:
        _log(f"[warning] fine-tuning stopped at step {provenance['finetune_step']} of {cfg.finetune_steps}; "
             "using those weights (launch/finetune.py resumes it).")
    return run.discriminator.classifier(), provenance

