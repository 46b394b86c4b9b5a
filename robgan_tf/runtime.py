"""Where a run executes: logical devices, determinism, precision, the tf.distribute strategy, and which
process is the chief."""
from __future__ import annotations

import os

import keras
import tensorflow as tf

from robgan_tf import precision as precision_lib
from robgan_tf.spec import RunSpec


def setup_runtime(cfg: RunSpec, precision=None):
    """Logical CPU devices, determinism, precision policy and seeds; call before any TF op runs. `precision`
    overrides the run's (evaluation and export read runs in float32: they measure the model that is served)."""
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
    policy, reason = precision_lib.resolve(precision or cfg.precision)
    keras.mixed_precision.set_global_policy(policy)
    if (precision or cfg.precision) == "auto":
        print(f"precision: {policy} ({reason})", flush=True)
    return policy


_MIRRORED: dict[tuple, tf.distribute.MirroredStrategy] = {}


def mirrored_strategy(devices):
    """The process's one MirroredStrategy over `devices`. A second MirroredStrategy in one process starts its
    collective instance keys where the first did, and the two then fail each other's all-reduces ("Shape mismatch
    in the collective instance"); so a second run in the same process (a notebook, run_pipeline twice) reuses it."""
    key = tuple(devices)
    if key not in _MIRRORED:
        _MIRRORED[key] = tf.distribute.MirroredStrategy(list(key))
    return _MIRRORED[key]


def make_strategy(cfg: RunSpec):
    if cfg.strategy == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    cpus = tf.config.list_logical_devices("CPU")
    if cfg.strategy == "mirrored" or (cfg.strategy == "auto" and (len(gpus) > 1 or cfg.cpu_replicas > 1)):
        devices = [d.name for d in gpus] if gpus else [d.name for d in cpus[:cfg.cpu_replicas]]
        return mirrored_strategy(devices)
    return tf.distribute.get_strategy()


def is_chief(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    return resolver.task_type in (None, "chief") or (resolver.task_type == "worker" and resolver.task_id == 0
                                                     and "chief" not in resolver.cluster_spec().as_dict())


def worker_dir(logdir, strategy, sub):
    """Non-chief workers write checkpoints to a private scratch folder (TF's multi-worker pattern)."""
    if is_chief(strategy):
        return os.path.join(logdir, sub)
    return os.path.join(logdir, "workers", f"{strategy.cluster_resolver.task_id}", sub)


def distributed_iterator(strategy, dataset):
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        opts = tf.data.Options()
        opts.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        dataset = dataset.with_options(opts)
    return iter(strategy.experimental_distribute_dataset(dataset))


def processor():
    """This machine's processor as benchmarks report it: model name, logical CPUs, vector extensions.

    Machines of one kind can differ in their processors by 3x, so every timing is printed with this."""
    model, flags = precision_lib.cpuinfo()
    if model is None:  # not Linux: the platform's own description
        import platform

        model = platform.processor() or platform.machine() or "unknown"
    vector = [x for x in ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")
              if x in flags]
    return {"model": model, "logical_cpus": os.cpu_count(), "vector_extensions": vector}
