"""Time Rob-GAN training iterations of any configuration on synthetic data.

The authors' CIFAR configuration (docs/FIDELITY.md: their 12.3 M generator, their 1.06 M BatchNorm
discriminator, batch 64, 32x32, 5-step PGD, one D and one G step, split loss):

    python launch/benchmark.py --arch=reference --n_dis=1 --batch_size=64 --attack_steps=5

Prints the median / min / max seconds per iteration, images per second, and the split between the attack,
the D update and the G update (each timed alone); --json_out writes them.
"""
import os
import statistics
import time

from absl import flags

from robgan_tf.cli import common  # noqa: F401

# The model and training flags are the training scripts' own (one meaning, one help text); only the defaults
# differ: the benchmark's subject is the authors' CIFAR step.
MODEL_FLAGS = ("arch", "d_arch", "d_head", "d_spectral_norm", "d_norm", "d_bias", "z_dim", "method", "loss_variant",
               "gan_loss", "loss_weights", "batch_size", "n_dis", "attack_eps", "attack_steps", "attack_step_size",
               "optimizer", "jit_compile", "precision", "reuse_fake")
common.define_experiment_flags(names=MODEL_FLAGS, defaults={"arch": "reference", "attack_step_size": 0.0078})
common.define_shape_flags()
flags.DEFINE_integer("iterations", 10, "Timed iterations.")
flags.DEFINE_integer("warmup", 2, "Untimed iterations first (tracing, allocation).")
flags.DEFINE_integer("component_iterations", 3, "Timed repetitions of each component for the split.")
flags.DEFINE_integer("intra_op_threads", 0, "TF intra-op threads (0: TF's default).")
flags.DEFINE_integer("inter_op_threads", 0, "TF inter-op threads (0: TF's default).")
flags.DEFINE_bool("flops", False, "Also count forward FLOPs of G and D (TF profiler) and estimate FLOPs per "
                  "iteration: B * (4 G_fwd + (2 * attack_steps + 8) * D_fwd) with backward ~ 2x forward.")
flags.DEFINE_bool("roofline", False, "Also measure this machine's dense rate in the same run -- tf.matmul of two "
                  "2048x2048 matrices and 3x3 tf.nn.conv2d at 8, 16 and 32 px (--batch_size images, 128 -> 128 "
                  "channels) -- and report the step's FLOP rate as a fraction of the best of them (implies --flops).")
flags.DEFINE_string("json_out", "", "Write the results here as JSON.")
FLAGS = flags.FLAGS


def _time(fn, n):
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def roofline(batch_size, repeats=5):
    """GFLOP/s of plain dense work on this machine: {name: median rate}."""
    import tensorflow as tf

    rates = {}
    a = tf.random.normal([2048, 2048])
    mm = tf.function(lambda x: tf.matmul(x, x))
    mm(a).numpy()
    rates["matmul_2048"] = 2 * 2048 ** 3 / statistics.median(_time(lambda: mm(a).numpy(), repeats)) / 1e9
    k = tf.random.normal([3, 3, 128, 128])
    conv = tf.function(lambda x: tf.nn.conv2d(x, k, 1, "SAME"))
    for size in (8, 16, 32):
        x = tf.random.normal([batch_size, size, size, 128])
        conv(x).numpy()
        flops = 2 * batch_size * size * size * 128 * 128 * 9
        rates[f"conv3x3_{size}px"] = flops / statistics.median(_time(lambda: conv(x).numpy(), repeats)) / 1e9
    return rates


def forward_flops(fn, specs):
    """FLOPs of one call of fn on inputs of the given TensorSpecs (TF profiler on the traced graph)."""
    import tensorflow as tf
    from tensorflow.python.profiler import model_analyzer, option_builder

    graph = tf.function(fn, autograph=False).get_concrete_function(*specs).graph
    opts = option_builder.ProfileOptionBuilder.float_operation()
    opts["output"] = "none"
    return int(model_analyzer.profile(graph, options=opts).total_float_ops)


def _build():
    """(TrainConfig, G or None, D, compiled RobGAN), as training builds them from the same flags."""
    from robgan_tf.experiment import ExperimentConfig
    from robgan_tf.training import RobGAN, make_optimizers

    experiment = ExperimentConfig(resolution=FLAGS.resolution, **{name: FLAGS[name].value for name in MODEL_FLAGS})
    try:
        experiment.validate()
        cfg = experiment.train_config()
        g, d = experiment.networks().build(FLAGS.num_classes, FLAGS.resolution, FLAGS.channels)
    except ValueError as e:
        common.fail(str(e))
    model = RobGAN(d, g, cfg)
    model.compile(*make_optimizers(cfg))
    return cfg, g, d, model


def _sync(out):
    """Waits for the device: reads one value back."""
    import tensorflow as tf

    for v in tf.nest.flatten(out)[:1]:
        v.numpy() if hasattr(v, "numpy") else None


def _components(model, cfg, g, xb, yb):
    """Median seconds of the attack, one D update and one G update, each timed alone."""
    import tensorflow as tf

    jit, n, split = FLAGS.jit_compile, FLAGS.component_iterations, {}
    attack = tf.function(model.attack, jit_compile=jit, autograph=False)
    d_step = tf.function(model.d_step, jit_compile=jit, autograph=False)
    g_step = tf.function(lambda: model.g_step(FLAGS.batch_size), jit_compile=jit, autograph=False)
    if cfg.uses_attack:
        _sync(attack(xb, yb))
        split["attack"] = statistics.median(_time(lambda: _sync(attack(xb, yb)), n))
    _sync(d_step(xb, yb))
    split["d_update"] = statistics.median(_time(lambda: (d_step(xb, yb), _sync(model.d_optimizer.iterations)), n))
    if g is not None:
        g_step()
        split["g_update"] = statistics.median(_time(lambda: (g_step(), _sync(model.g_optimizer.iterations)), n))
    return split


def _flops(cfg, g, d):
    import tensorflow as tf

    r, c = FLAGS.resolution, FLAGS.channels
    d_fwd = forward_flops(lambda im: d(im, training=False), [tf.TensorSpec([1, r, r, c], tf.float32)])
    flops, g_fwd = {"d_forward_per_example": d_fwd}, 0
    if g is not None:
        g_fwd = forward_flops(lambda z, lab: g(z, lab, training=False),
                              [tf.TensorSpec([1, g.z_dim], tf.float32), tf.TensorSpec([1], tf.int32)])
        flops["g_forward_per_example"] = g_fwd
    s = FLAGS.attack_steps if cfg.uses_attack else 0
    flops["per_iteration_estimate"] = FLAGS.batch_size * FLAGS.n_dis * ((2 * s + 8) * d_fwd + 4 * g_fwd)
    return flops


def _report(result, times, n):
    med, flops = result["median_s_per_iter"], result["flops"]
    cpu = result["processor"]
    print(f"processor: {cpu['model']}, {cpu['logical_cpus']} logical CPUs, {' '.join(cpu['vector_extensions'])}")
    print(f"{FLAGS.arch} {FLAGS.resolution}px batch {FLAGS.batch_size} n_dis {FLAGS.n_dis} attack "
          f"{FLAGS.attack_steps} steps, jit={FLAGS.jit_compile} {result['policy']}: median {med:.3f} s/iter "
          f"(min {min(times):.3f}, max {max(times):.3f}), {n / med:.1f} images/s")
    print("components (s, each alone): " + ", ".join(f"{k}={v:.3f}" for k, v in result["component_median_s"].items()))
    if flops:
        achieved = flops["per_iteration_estimate"] / med / 1e9
        result["achieved_gflops"] = achieved
        print("FLOPs: " + ", ".join(f"{k}={v / 1e9:.3f} G" for k, v in flops.items())
              + f"; achieved {achieved:.1f} GFLOP/s")
    if result["roofline_gflops"]:
        peak = max(result["roofline_gflops"].values())
        result["utilisation_of_best_dense_rate"] = achieved / peak
        print("this machine, same run: " + ", ".join(f"{k} {v:.1f}" for k, v in result["roofline_gflops"].items())
              + f" GFLOP/s; the step reaches {100 * achieved / peak:.0f}% of the best")


def main(argv):
    common.quiet_logging()
    import keras
    import tensorflow as tf

    if FLAGS.intra_op_threads:
        tf.config.threading.set_intra_op_parallelism_threads(FLAGS.intra_op_threads)
    if FLAGS.inter_op_threads:
        tf.config.threading.set_inter_op_parallelism_threads(FLAGS.inter_op_threads)
    keras.utils.set_random_seed(0)
    from robgan_tf import precision

    FLAGS.precision = common.deprecated_precision(FLAGS).get("precision", FLAGS.precision)
    policy, reason = precision.resolve(FLAGS.precision)
    keras.mixed_precision.set_global_policy(policy)
    from robgan_tf.models import count_params
    from robgan_tf.runtime import processor

    if FLAGS.iterations < 1 or FLAGS.warmup < 0:
        common.fail("--iterations must be >= 1 and --warmup >= 0.")
    cfg, g, d, model = _build()
    k, r, c = FLAGS.num_classes, FLAGS.resolution, FLAGS.channels
    n = FLAGS.batch_size * FLAGS.n_dis
    x, y = tf.random.uniform([n, r, r, c], -1, 1), tf.random.uniform([n], 0, k, tf.int32)
    step = tf.function(model.train_step, jit_compile=FLAGS.jit_compile, autograph=False)
    t0 = time.perf_counter()
    for _ in range(FLAGS.warmup):
        _sync(step((x, y)))
    warm = time.perf_counter() - t0
    times = _time(lambda: _sync(step((x, y))), FLAGS.iterations)
    split = (_components(model, cfg, g, x[:FLAGS.batch_size], y[:FLAGS.batch_size])
             if FLAGS.component_iterations > 0 else {})
    med = statistics.median(times)
    result = {
        "config": {f: FLAGS[f].value for f in ("arch", "resolution", "channels", "num_classes", "batch_size", "n_dis",
                                               "attack_steps", "attack_eps", "attack_step_size", "method",
                                               "jit_compile", "precision", "reuse_fake", "intra_op_threads",
                                               "inter_op_threads")},
        "policy": policy, "policy_reason": reason,
        "params": {"generator": count_params(g) if g is not None else 0, "discriminator": count_params(d)},
        "median_s_per_iter": med, "min_s_per_iter": min(times), "max_s_per_iter": max(times),
        "images_per_s": n / med, "iterations": FLAGS.iterations, "warmup_s": warm,
        "component_median_s": split, "flops": _flops(cfg, g, d) if FLAGS.flops or FLAGS.roofline else {},
        "attack_share": (FLAGS.n_dis * split["attack"] * 1.0 / med) if "attack" in split else 0.0,
        "roofline_gflops": roofline(FLAGS.batch_size) if FLAGS.roofline else {},
        "tensorflow": tf.__version__, "cpu_count": os.cpu_count(), "processor": processor(),
    }
    _report(result, times, n)
    if FLAGS.json_out:
        from robgan_tf.storage import atomic_write_json

        atomic_write_json(FLAGS.json_out, result)
        print(f"wrote {FLAGS.json_out}")


def run():
    """The console script's entry point (robgan-benchmark)."""
    common.run_tool(main)


if __name__ == "__main__":
    run()
