"""Runs experiments: strategy and runtime setup, the training and fine-tuning loops with checkpoints,
TensorBoard logging and non-finite-loss stops, and the train -> fine-tune -> evaluate -> export pipeline.

A run directory (`--logdir`) holds:
  config.json            the full settings (a rerun with incompatible settings is refused)
  checkpoints/           G, D, EMA weights, both optimizers, RNG state and the iteration counter
  finetune_checkpoints/  the classifier and its optimizer during eq. 10 fine-tuning
  train/, finetune/, eval/   TensorBoard event files (scalars, sample grids, the evaluation table)
  eval/robustness.json   the robustness table;  samples.png   a sample grid;  export/   SavedModels
"""
from __future__ import annotations

import datetime
import math
import os
import time

import keras
import numpy as np
import tensorflow as tf

from robgan_tf import data as data_lib
from robgan_tf import storage
from robgan_tf.experiment import NATIVE_RESOLUTION, ExperimentConfig
from robgan_tf.training import FineTuner, RobGAN, current_lr, make_distributed_step, make_optimizers


class TrainingDiverged(RuntimeError):
    """A loss became NaN or inf; nothing was written over the last good checkpoint."""


# ----------------------------------------------------------------------------- runtime
def setup_runtime(cfg: ExperimentConfig):
    """Logical CPU devices, determinism, precision policy and seeds; call before any TF op runs."""
    if cfg.cpu_replicas > 1:
        cpus = tf.config.list_physical_devices("CPU")
        try:
            tf.config.set_logical_device_configuration(
                cpus[0], [tf.config.LogicalDeviceConfiguration()] * cfg.cpu_replicas)
        except RuntimeError:  # already initialised (e.g. by a caller): keep what exists
            pass
        if len(tf.config.list_logical_devices("CPU")) < cfg.cpu_replicas:
            raise RuntimeError(f"--cpu_replicas={cfg.cpu_replicas}: TensorFlow was initialised before the CPU "
                               "could be split; set it before running any TensorFlow op.")
    keras.utils.set_random_seed(cfg.seed)
    if cfg.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.mixed_precision.set_global_policy("mixed_float16" if cfg.mixed_precision else "float32")


def make_strategy(cfg: ExperimentConfig):
    if cfg.strategy == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    cpus = tf.config.list_logical_devices("CPU")
    if cfg.strategy == "mirrored" or (cfg.strategy == "auto" and (len(gpus) > 1 or cfg.cpu_replicas > 1)):
        devices = [d.name for d in gpus] if gpus else [d.name for d in cpus[:cfg.cpu_replicas]]
        return tf.distribute.MirroredStrategy(devices)
    return tf.distribute.get_strategy()


def is_chief(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    return resolver.task_type in (None, "chief") or (resolver.task_type == "worker" and resolver.task_id == 0
                                                     and "chief" not in resolver.cluster_spec().as_dict())


def _write_dir(logdir, strategy, sub):
    """Non-chief workers write checkpoints to a private scratch folder (TF's multi-worker pattern)."""
    if is_chief(strategy):
        return os.path.join(logdir, sub)
    return os.path.join(logdir, "workers", f"{strategy.cluster_resolver.task_id}", sub)


def model_variables(model):
    """Every variable of a Keras model (trainable, BN statistics, SN vectors) keyed by position.

    tf.train.Checkpoint does not traverse Keras 3's layer lists, so handing it the model would save
    only the variables that sit directly on it (and, through the optimizer, the trainable ones) --
    silently dropping BN statistics and SN vectors. Positional keys also survive Keras' automatic
    layer renaming ("discriminator_1") when several models are built in one process.
    """
    return {f"v{i:04d}": w for i, w in enumerate(model.weights)}


def _log(msg):
    print(msg, flush=True)


# ----------------------------------------------------------------------------- building a run
class Run:
    """Everything one run needs: config, strategy, data and models (built in the strategy scope).

    read_only=True opens an existing run to read it (evaluate, sample, export): it writes nothing into the
    run directory. create=False opens an existing run to continue it (fine-tuning) and never makes a new one. Otherwise the run is created or resumed: the chief takes the run's lock (one writer per
    run), saves config.json and records any setting changed since the last start in history.jsonl.
    """

    def __init__(self, cfg: ExperimentConfig, *, strategy=None, need_train_data=True, read_only=False, create=True):
        self.cfg = cfg.validate()
        config_path = os.path.join(cfg.logdir, "config.json")
        if (read_only or not create) and not os.path.exists(config_path):
            raise FileNotFoundError(f"no run at {cfg.logdir} (no config.json): train one there first "
                                    f"(launch/train.py --logdir={cfg.logdir}).")
        changes = cfg.check_compatible(config_path)
        self.read_only = read_only
        self.strategy = strategy or make_strategy(cfg)
        # Load (and so validate) the data before any model is built.
        res = cfg.resolution or (cfg.image_resolution if cfg.dataset in NATIVE_RESOLUTION else None)
        self.test_source = data_lib.load(cfg.dataset, "test", res, cfg.data_dir or None, download=cfg.download)
        self.train_source = (data_lib.load(cfg.dataset, "train", res, cfg.data_dir or None, download=cfg.download)
                             if need_train_data else None)
        info = self.test_source.info
        self.info = info
        self.num_classes, self.channels = info.num_classes, info.image_shape[-1]
        self.resolution = info.image_shape[0]
        if self.resolution != cfg.image_resolution and cfg.resolution:
            raise ValueError(f"{cfg.dataset} gave {self.resolution}px images, not --resolution={cfg.resolution}.")
        with self.strategy.scope():
            self.generator, self.discriminator = cfg.build_models(self.num_classes, self.resolution, self.channels)
            self.train_config = cfg.train_config(self.num_classes)
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
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, _write_dir(cfg.logdir, self.strategy, "checkpoints"), max_to_keep=cfg.keep_checkpoints)
        if is_chief(self.strategy) and not read_only:
            try:
                os.makedirs(cfg.logdir, exist_ok=True)
            except OSError as e:
                raise storage.storage_error(e, cfg.logdir, "Nothing was written.") from e
            self.lock = storage.RunLock.hold(cfg.logdir)
            if changes:
                storage.append_jsonl(os.path.join(cfg.logdir, "history.jsonl"), {
                    "time": datetime.datetime.now().isoformat(timespec="seconds"),
                    "latest_checkpoint": self.manager.latest_checkpoint, "changed": changes})
            cfg.save(config_path)

    def close(self):
        """Releases the run's lock (also released when the process ends, however it ends)."""
        lock = getattr(self, "lock", None)
        if lock is not None:
            lock.release()

    def restore(self):
        """Restores the latest training checkpoint (or --resume_from); returns its path or None.

        The learning rates are those of the current settings, not of the checkpoint (a resume may lower them)."""
        path = _restore(self.checkpoint, self.manager, self.cfg.resume_from)
        if path:
            for opt, lr in ((self.model.d_optimizer, self.train_config.lr_d),
                            (self.model.g_optimizer, self.train_config.lr_g)):
                inner = getattr(opt, "inner_optimizer", opt)
                if opt is not None and not isinstance(inner._learning_rate,
                                                      keras.optimizers.schedules.LearningRateSchedule):
                    inner.learning_rate = lr
        return path

    def sampling_generator(self):
        return self.model.sampling_generator() if self.generator is not None else None


def _restore(checkpoint, manager, resume_from=""):
    """Restores `resume_from` when it belongs to this manager's directory, else the latest checkpoint.
    An unreadable checkpoint raises CheckpointError naming the newest intact one."""
    mine = resume_from and os.path.realpath(os.path.dirname(resume_from)) == os.path.realpath(manager.directory)
    path = resume_from if mine else manager.latest_checkpoint
    if path:
        try:
            checkpoint.restore(path).assert_existing_objects_matched()
        except Exception as e:  # noqa: BLE001 -- a damaged file fails in many ways (OpError, IndexError, ...)
            raise storage.unreadable_checkpoint_error(manager, path, e) from e
    return path


# ----------------------------------------------------------------------------- sample grids
def grid_classes(num_classes, rows=10):
    """All classes when K <= rows, else a fixed spread of `rows` classes."""
    if num_classes <= rows:
        return np.arange(num_classes)
    return np.linspace(0, num_classes - 1, rows).round().astype(np.int64)


def sample_grid(generator, num_classes, z_dim, cols=8, seed=1234):
    """uint8 image grid: one row per class, the same fixed z vectors in every row."""
    classes = grid_classes(num_classes)
    z = tf.random.stateless_normal([cols, z_dim], seed=[seed, 0])
    z = tf.tile(z, [len(classes), 1])
    labels = tf.repeat(tf.constant(classes, tf.int32), cols)
    images = generator(z, labels, training=False)
    images = tf.cast(tf.clip_by_value((images + 1.0) * 127.5, 0, 255), tf.uint8).numpy()
    n, h, w, c = images.shape
    grid = images.reshape(len(classes), cols, h, w, c).transpose(0, 2, 1, 3, 4).reshape(len(classes) * h, cols * w, c)
    return grid


def write_png(path, image_u8):
    storage.atomic_write(path, tf.io.encode_png(image_u8).numpy(), mode="wb")


# ----------------------------------------------------------------------------- loops
def _finite(logs):
    return all(math.isfinite(float(v)) for v in logs.values())


def _weights_finite(variables):
    return bool(tf.reduce_all([tf.reduce_all(tf.math.is_finite(tf.cast(v, tf.float32))) for v in variables]))


def _distributed_iterator(strategy, dataset):
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        opts = tf.data.Options()
        opts.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        dataset = dataset.with_options(opts)
    return iter(strategy.experimental_distribute_dataset(dataset))


class _Progress:
    """Prints and logs (step, metrics, it/s, ETA) every log_every steps and resets the metrics."""

    def __init__(self, prefix, total, start, writer, metrics):
        self.prefix, self.total, self.writer, self.metrics = prefix, total, writer, metrics
        self.last_t, self.last_step = time.time(), start

    def __call__(self, step, logs, **scalars):
        now = time.time()
        rate = (step - self.last_step) / max(now - self.last_t, 1e-9)
        parts = " ".join(f"{k}={float(v):.3f}" for k, v in logs.items())
        eta = time.strftime("%H:%M:%S", time.gmtime(max((self.total - step) / max(rate, 1e-9), 0)))
        _log(f"[{self.prefix}] {step}/{self.total} {parts} | {rate:.2f} it/s | ETA {eta}")
        with self.writer.as_default(step=step):
            for k, v in {**logs, **scalars, "iterations_per_second": rate}.items():
                tf.summary.scalar(k, float(v))
        for m in self.metrics:
            m.reset_state()
        self.last_t, self.last_step = now, step


def _record_config(cfg, writer):
    with writer.as_default():
        rows = "\n".join(f"| {k} | {v} |" for k, v in sorted(cfg.to_dict().items()))
        tf.summary.text("config", "| flag | value |\n|---|---|\n" + rows, step=0)


def train(run: Run):
    """Trains to cfg.iterations, resuming from the latest checkpoint. Returns the final metrics."""
    cfg, strategy, model = run.cfg, run.strategy, run.model
    latest = run.restore()
    start = int(run.step.numpy())
    total = cfg.iterations
    if latest:
        _log(f"[train] resuming from {latest} at iteration {start}")
    if start >= total:
        _log(f"[train] already at iteration {start} of {total}; nothing to do")
        return {}
    per_step = model.examples_per_step(cfg.batch_size)
    ds = data_lib.train_dataset(run.train_source, per_step, seed=cfg.seed, start_step=start,
                                augment=cfg.augmentation, dequantize=cfg.dequantize)
    iterator = _distributed_iterator(strategy, ds)
    step_fn = make_distributed_step(model, strategy, jit_compile=cfg.jit_compile)
    chief = is_chief(strategy)
    writer = tf.summary.create_file_writer(os.path.join(cfg.logdir, "train")) if chief else tf.summary.create_noop_writer()
    if start == 0:
        _record_config(cfg, writer)
    logs, t0 = {}, time.time()
    progress = _Progress("train", total, start, writer, model.metrics)
    for it in range(start + 1, total + 1):
        logs = step_fn(iterator)
        run.step.assign(it)
        if not _finite(logs):
            bad = {k: float(v) for k, v in logs.items()}
            raise TrainingDiverged(f"non-finite loss at iteration {it} ({bad}). " + _divergence_advice(run))
        if it % cfg.log_every == 0 or it == total:
            lrs = {"lr_d": current_lr(model.d_optimizer)}
            if model.g_optimizer is not None:
                lrs["lr_g"] = current_lr(model.g_optimizer)
            progress(it, logs, **lrs)
        if chief and (it % cfg.sample_every == 0 or it == total):
            with writer.as_default(step=it):
                if run.generator is not None:
                    grid = sample_grid(run.sampling_generator(), run.num_classes, cfg.z_dim)
                    tf.summary.image("samples", grid[None], step=it)
                log_gap(model.classifier, run, cfg.attack_eps, it)
        if it % cfg.checkpoint_every == 0 or it == total:
            variables = run.discriminator.weights + (run.generator.weights if run.generator is not None else [])
            if not _weights_finite(variables):
                raise TrainingDiverged(f"non-finite weights at iteration {it}; not saved. " + _divergence_advice(run))
            storage.save_checkpoint(run.manager, it)
    writer.flush()
    _log(f"[train] done: {total} iterations in {time.time() - t0:.0f}s")
    return {k: float(v) for k, v in logs.items()}


def _divergence_advice(run):
    last = run.manager.latest_checkpoint
    where = (f"Nothing was saved over the last good checkpoint, {last}. Rerun the same command with lower "
             f"learning rates (e.g. --lr_d={run.cfg.lr_d / 2:g} --lr_g={run.cfg.lr_g / 2:g}) to resume from it"
             if last else "No checkpoint had been written yet. Rerun the same command with lower learning rates "
             f"(e.g. --lr_d={run.cfg.lr_d / 2:g} --lr_g={run.cfg.lr_g / 2:g}) to start again")
    return where + f"; the change is recorded in {os.path.join(run.cfg.logdir, 'history.jsonl')}. Check the data too."


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
        if not run.restore():
            raise FileNotFoundError(f"no training checkpoint in {cfg.logdir}/checkpoints: train first "
                                    "(launch/train.py), then fine-tune.")
        self.config = cfg.finetune_config(run.num_classes)
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
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, _write_dir(cfg.logdir, run.strategy, "finetune_checkpoints"),
            max_to_keep=cfg.keep_checkpoints)

    def restore(self):
        return _restore(self.checkpoint, self.manager, self.run.cfg.resume_from)


def weights_provenance(run: Run, ft: FinetuneRun | None = None):
    """Which weights a result or export comes from: the training iteration and fine-tuning step."""
    cfg = run.cfg
    out = {"training_iteration": int(run.step.numpy()), "training_iterations_planned": cfg.iterations,
           "training_checkpoint": run.manager.latest_checkpoint, "ema_generator": bool(cfg.ema_decay),
           "finetune_step": None, "finetune_steps_planned": cfg.finetune_steps, "finetune_checkpoint": None}
    if ft is not None:
        out.update(finetune_step=int(ft.step.numpy()), finetune_checkpoint=ft.manager.latest_checkpoint)
    return out


def log_gap(classifier, run, eps, step, n=256):
    """TensorBoard scalars of the generalization gap (paper Fig. 2/6): robust accuracy and mean LLV,
    train vs test, on n examples of each split."""
    from robgan_tf.gap import gap_analysis

    gap = gap_analysis(classifier, run.train_source, run.test_source, eps_grid=(eps,), num_examples=n, steps=10)
    tf.summary.scalar("gap/train_robust_accuracy", gap["train_accuracy"][0], step=step)
    tf.summary.scalar("gap/test_robust_accuracy", gap["test_accuracy"][0], step=step)
    tf.summary.scalar("gap/train_llv_mean", gap["llv_mean"]["train"], step=step)
    tf.summary.scalar("gap/test_llv_mean", gap["llv_mean"]["test"], step=step)


def finetune(run: Run):
    """Fine-tunes the classifier view (eq. 10), resuming from its latest checkpoint. Returns the tuner."""
    from robgan_tf.robustness import accuracy_under_attack

    cfg = run.cfg
    ft = FinetuneRun(run)
    if cfg.finetune_steps == 0:
        return ft
    latest = ft.restore()  # else: start from the trained discriminator FinetuneRun restored
    start, total = int(ft.step.numpy()), cfg.finetune_steps
    if start >= total:
        _log(f"[finetune] already at step {start} of {total}; nothing to do")
        return ft
    if latest:
        _log(f"[finetune] resuming from {latest} at step {start}")
    ds = data_lib.train_dataset(run.train_source, cfg.finetune_batch, seed=cfg.seed + 17, start_step=start,
                                augment=cfg.augmentation)
    iterator = _distributed_iterator(run.strategy, ds)
    step_fn = make_distributed_step(ft.tuner, run.strategy, jit_compile=cfg.jit_compile)
    chief = is_chief(run.strategy)
    writer = (tf.summary.create_file_writer(os.path.join(cfg.logdir, "finetune")) if chief
              else tf.summary.create_noop_writer())
    progress = _Progress("finetune", total, start, writer, ft.tuner.metrics)
    for s in range(start + 1, total + 1):
        logs = step_fn(iterator)
        ft.step.assign(s)
        if not _finite(logs):
            last = ft.manager.latest_checkpoint
            raise TrainingDiverged(
                f"non-finite fine-tuning loss at step {s}. " + (f"Nothing was saved over {last}; rerun the same "
                "command with a lower --finetune_lr to resume from it." if last else "No fine-tuning checkpoint "
                "had been written yet; rerun the same command with a lower --finetune_lr to start again."))
        if s % cfg.log_every == 0 or s == total:
            progress(s, logs, lr=current_lr(ft.tuner.optimizer))
            if chief and (s % (cfg.log_every * 4) == 0 or s == total):
                eps = ft.config.attack.eps
                with writer.as_default(step=s):
                    tf.summary.scalar("test_clean_accuracy", accuracy_under_attack(
                        ft.classifier, run.test_source, eps=0.0, steps=0, num_examples=256))
                    tf.summary.scalar(f"test_robust_accuracy_eps{eps:g}", accuracy_under_attack(
                        ft.classifier, run.test_source, eps=eps, steps=10, num_examples=256))
                    log_gap(ft.classifier, run, eps, s)
        if s % cfg.checkpoint_every == 0 or s == total:
            if not _weights_finite(run.discriminator.weights):
                raise TrainingDiverged(f"non-finite weights at fine-tuning step {s}; not saved. Rerun the same "
                                       "command with a lower --finetune_lr to resume from the last checkpoint.")
            storage.save_checkpoint(ft.manager, s)
    writer.flush()
    return ft


def load_final_classifier(run: Run):
    """(classifier, provenance): the fine-tuned classifier when the run fine-tunes, else the trained D's.

    A run configured to fine-tune (finetune_steps > 0) whose fine-tuning has not started is an error, not a
    silent fallback to the un-fine-tuned discriminator. `provenance` says which weights were loaded.
    """
    cfg = run.cfg
    if not cfg.finetune_steps:
        if not run.restore():
            raise FileNotFoundError(f"no checkpoint in {cfg.logdir}/checkpoints: train first.")
        return run.discriminator.classifier(), weights_provenance(run)
    ft = FinetuneRun(run)
    if not ft.restore():
        raise FileNotFoundError(
            f"{cfg.logdir} is set to fine-tune for {cfg.finetune_steps} steps but has no fine-tuning checkpoint "
            f"in {cfg.logdir}/finetune_checkpoints: run launch/finetune.py --logdir={cfg.logdir} first (or "
            "launch/pipeline.py, which resumes where the run stopped).")
    provenance = weights_provenance(run, ft)
    if provenance["finetune_step"] < cfg.finetune_steps:
        _log(f"[warning] fine-tuning stopped at step {provenance['finetune_step']} of {cfg.finetune_steps}; "
             "using those weights (launch/finetune.py resumes it).")
    return ft.classifier, provenance


def evaluate_run(run: Run, classifier, provenance, protocols=("paper",), json_out=None):
    """Robustness table on the test split, written to logdir/eval/robustness.json and TensorBoard."""
    from robgan_tf import robustness

    cfg = run.cfg
    result = robustness.robustness_table(
        classifier, run.test_source, eps_grid=cfg.eps_grid(), protocols=protocols,
        num_examples=cfg.eval_examples or None, model_name=os.path.abspath(cfg.logdir))
    result["weights"] = provenance
    out = json_out or os.path.join(cfg.logdir, "eval", "robustness.json")
    robustness.write_json(result, out)
    if is_chief(run.strategy):
        writer = tf.summary.create_file_writer(os.path.join(cfg.logdir, "eval"))
        with writer.as_default(step=int(run.step.numpy())):
            tf.summary.text("robustness", robustness.markdown_table(result))
            for r in result["results"]:
                tf.summary.scalar(f"{r['protocol']}/accuracy_eps{r['eps']:g}", r["accuracy"])
        writer.flush()
    return result


def pipeline(cfg: ExperimentConfig):
    """train -> fine-tune -> evaluate -> export into cfg.logdir; prints where everything went."""
    from robgan_tf import export, quality, robustness

    run = Run(cfg)
    t0 = time.time()
    train(run)
    if cfg.finetune_steps:
        ft = finetune(run)
        classifier, provenance = ft.classifier, weights_provenance(run, ft)
    else:
        classifier, provenance = load_final_classifier(run)
    if not is_chief(run.strategy):  # evaluation, exports and samples are the chief's
        return None, {}, {}
    result = evaluate_run(run, classifier, provenance)
    paths = export.export_run(run, classifier, provenance)
    summary = {}
    sample_path = None
    if run.generator is not None:
        g = run.sampling_generator()
        sample_path = os.path.join(cfg.logdir, "samples.png")
        write_png(sample_path, sample_grid(g, run.num_classes, cfg.z_dim))
        per_class = quality.per_class_label_accuracy(g, classifier, run.num_classes, cfg.z_dim, n_per_class=50)
        summary["generator_label_accuracy"] = float(np.mean(per_class))
        summary["generator_label_accuracy_per_class"] = per_class
        if cfg.dataset == "digits":
            from robgan_tf import judge

            summary["independent_judge"] = judge.judge_generator(g, cfg.z_dim, run.resolution)
    summary["seconds"] = round(time.time() - t0, 1)
    storage.atomic_write_json(os.path.join(cfg.logdir, "eval", "summary.json"), summary)
    _log("\n" + robustness.markdown_table(result))
    if "generator_label_accuracy" in summary:
        _log(f"\nExported classifier labels {summary['generator_label_accuracy']:.1%} of the generator's images "
             "as the class they were generated for (a biased judge: it was fine-tuned on those fakes).")
    if "independent_judge" in summary:
        j = summary["independent_judge"]
        _log(f"An independent judge -- an SVM trained only on the real 8x8 training digits, which recognises "
             f"{j['real_test_accuracy']:.1%} of the real test digits -- recognises {j['accuracy']:.1%} of "
             f"{j['num_samples']} generated digits; their within-class variety is {j['diversity']:.2f} of the real "
             "digits' (1: as varied, 0: one image per class).")
    _log("\nExports:")
    for k, v in paths.items():
        _log(f"  {k}: {v}")
    if sample_path:
        _log(f"Sample grid: {sample_path}")
    _log(f"TensorBoard: tensorboard --logdir {cfg.logdir}")
    return result, paths, summary
