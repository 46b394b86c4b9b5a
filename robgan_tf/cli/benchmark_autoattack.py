"""Time AutoAttack's attacks against IBM ART's APGD on one fixed classifier and the same examples, in one run.

    python launch/benchmark_autoattack.py --arch=sngan --num_examples=500 --iterations=20

Times, on --num_examples images (synthetic by default; the timing does not depend on their content, and the
labels are the classifier's own predictions so every example is attacked):
- our APGD-CE and ART's AutoProjectedGradientDescent (cross-entropy, one start) running the same --iterations,
  the same batch size, on the same classifier: seconds per attack iteration per example, and their ratio;
- the cost per example of one iteration of APGD-T, FAB-T and one Square query (ours);
- from those, the time a full standard AutoAttack would take on --extrapolate_to examples (the CIFAR-10 test
  set): the worst case, where every example stays robust through every stage, and the case where the stages
  see the fractions given by --stage_fractions.
The classifier is the class head of a randomly initialised discriminator of the preset: its cost per example
is that of a trained one. The processor is printed with the numbers.
"""
import json
import time

from absl import flags

from robgan_tf.cli import common

flags.DEFINE_enum("arch", "sngan", ["sngan", "authors", "reference", "tiny", "preact_resnet18"],
                  "Discriminator preset whose class head is attacked.")
common.define_shape_flags()
flags.DEFINE_integer("num_examples", 500, "Examples attacked.")
flags.DEFINE_integer("batch_size", 250, "Attack batch size (ours and ART's).")
flags.DEFINE_integer("iterations", 100, "APGD iterations for both implementations (AutoAttack: 100).")
flags.DEFINE_integer("unit_iterations", 10, "Iterations / queries timed for the per-stage unit costs.")
flags.DEFINE_float("eps", 16 / 255, "eps in [-1, 1] units (16/255 = 8/255 on the [0, 1] scale).")
flags.DEFINE_bool("art", True, "Also time ART's APGD (needs adversarial-robustness-toolbox).")
flags.DEFINE_integer("extrapolate_to", 10000, "Examples of the full evaluation to extrapolate to.")
flags.DEFINE_list("stage_fractions", ["0.81", "0.45", "0.42", "0.42"],
                  "Fractions of the examples that reach APGD-CE, APGD-T, FAB-T and Square (default: clean 81% "
                  "and about 42-45% robust, the range the paper reports for Rob-GAN on CIFAR-10).")
flags.DEFINE_string("json_out", "", "Write the results here as JSON.")
FLAGS = flags.FLAGS


def _time_art(model, shape, timed):
    """Seconds IBM ART's APGD-CE takes on the same model and examples (timed by the caller's `timed`)."""
    import importlib.util

    import keras
    import numpy as np

    if importlib.util.find_spec("art") is None:
        common.fail("--art needs IBM ART (adversarial-robustness-toolbox): pip install \"robgan_tf[eval]\", or "
                    "pass --noart to time only robgan_tf's attacks.")
    from art.attacks.evasion import AutoProjectedGradientDescent
    from art.estimators.classification import TensorFlowV2Classifier

    est = TensorFlowV2Classifier(model=model, nb_classes=FLAGS.num_classes, input_shape=shape, clip_values=(-1.0, 1.0),
                                 loss_object=keras.losses.SparseCategoricalCrossentropy(from_logits=True))

    def art_run(a, b):
        AutoProjectedGradientDescent(est, norm=np.inf, eps=FLAGS.eps, eps_step=2 * FLAGS.eps,
                                     max_iter=FLAGS.iterations, nb_random_init=1, batch_size=FLAGS.batch_size,
                                     loss_type="cross_entropy", verbose=False).generate(a, b)

    return timed(art_run)


def _extrapolate(per):
    """The standard AutoAttack's hours on --extrapolate_to examples from the measured per-example costs."""
    from robgan_tf import autoattack as aa

    cfg = aa.STANDARD
    costs = [cfg["apgd_iterations"] * per["apgd"], cfg["targets"] * cfg["apgd_iterations"] * per["apgd_t"],
             cfg["targets"] * cfg["fab_iterations"] * per["fab_t"], cfg["square_queries"] * per["square"]]
    fr = [float(f) for f in FLAGS.stage_fractions]
    worst = FLAGS.extrapolate_to * sum(costs)
    typical = FLAGS.extrapolate_to * sum(c * f for c, f in zip(costs, fr))
    print(f"full standard AutoAttack on {FLAGS.extrapolate_to} examples (extrapolated): {worst / 3600:.1f} h if every "
          f"example stays robust to the end; {typical / 3600:.1f} h with stage fractions {fr}")
    return dict(ms_per_example=dict((k, 1e3 * v) for k, v in per.items()),
                full_autoattack_hours={"examples": FLAGS.extrapolate_to, "worst_case": worst / 3600,
                                       "stage_fractions": fr, "with_stage_fractions": typical / 3600,
                                       "per_stage_worst_case_hours": [FLAGS.extrapolate_to * c / 3600 for c in costs]})


def _unit_costs(comp, timed):
    """Seconds per example of one APGD-T (DLR) iteration, one FAB-T iteration and one Square query."""
    import numpy as np

    from robgan_tf import autoattack as aa

    u, eps, classes = FLAGS.unit_iterations, FLAGS.eps, FLAGS.num_classes
    n = FLAGS.num_examples
    per = {"apgd_t": timed(lambda a, b: comp.apgd("dlr", True, u, a, b, (b + 1) % classes, eps, 0)[1].numpy()) / (n * u),
           "fab_t": timed(lambda a, b: comp.fab(u, a, b, (b + 1) % classes)[1].numpy()) / (n * u)}
    sizes = aa.square_sizes(1, 1 + u, 5000, 0.8, FLAGS.resolution, FLAGS.resolution)

    def square(a, b):
        return comp.square(a, b, np.full_like(a, eps), np.full(len(b), 1e9, np.float32), sizes, 0, eps)[2].numpy()

    per["square"] = timed(square) / (n * u)
    print("ours, ms per example: " + ", ".join(f"{k} iteration {1e3 * v:.3f}" for k, v in per.items() if k != "square")
          + f", Square query {1e3 * per['square']:.3f}")
    return per


def main(argv):
    common.quiet_logging()
    import keras
    import numpy as np

    from robgan_tf import autoattack as aa
    from robgan_tf.models import Discriminator
    from robgan_tf.runtime import processor

    keras.utils.set_random_seed(0)
    try:
        d = Discriminator(FLAGS.num_classes, FLAGS.resolution, FLAGS.arch, channels=FLAGS.channels)
    except ValueError as e:
        common.fail(str(e))
    shape = (FLAGS.resolution, FLAGS.resolution, FLAGS.channels)
    inp = keras.Input(shape)
    model = keras.Model(inp, d(inp, training=False)[1])  # the class head as a plain classifier
    n, bs, it, eps = FLAGS.num_examples, FLAGS.batch_size, FLAGS.iterations, FLAGS.eps
    x = np.random.default_rng(0).uniform(-1, 1, size=(n, *shape)).astype(np.float32)
    comp = aa.compiled(model, shape)
    y = np.concatenate([np.argmax(comp.logits(x[i:i + bs]).numpy(), -1) for i in range(0, n, bs)]).astype(np.int32)
    cpu = processor()
    print(f"processor: {cpu['model']}, {cpu['logical_cpus']} logical CPUs, {' '.join(cpu['vector_extensions'])}")

    def timed(fn):
        fn(x[:bs], y[:bs])  # trace and warm up on one batch
        t = time.perf_counter()
        for i in range(0, n, bs):
            fn(x[i:i + bs], y[i:i + bs])
        return time.perf_counter() - t

    per = {}
    ours = timed(lambda a, b: comp.apgd("ce", False, it, a, b, b, eps, 0)[1].numpy())
    per["apgd"] = ours / (n * it)
    result = {"processor": cpu, "arch": FLAGS.arch, "num_examples": n, "batch_size": bs, "iterations": it,
              "ours_apgd_ce_s": ours}
    print(f"ours  APGD-CE: {ours:.2f} s for {n} examples x {it} iterations "
          f"({1e3 * per['apgd']:.3f} ms per example-iteration)")
    if FLAGS.art:
        theirs = _time_art(model, shape, timed)
        result.update(art_apgd_ce_s=theirs, art_per_example_iteration_s=theirs / (n * it),
                      speedup_vs_art=theirs / ours)
        print(f"ART   APGD-CE: {theirs:.2f} s for the same ({1e3 * theirs / (n * it):.3f} ms per example-iteration); "
              f"ours is {theirs / ours:.2f}x faster per attack iteration")
    per.update(_unit_costs(comp, timed))
    result.update(_extrapolate(per))
    if FLAGS.json_out:
        from robgan_tf.storage import atomic_write_json

        atomic_write_json(FLAGS.json_out, result)
        print(f"wrote {FLAGS.json_out}")
    print(json.dumps(result["ms_per_example"]))


def run():
    """The console script's entry point (robgan-benchmark-autoattack)."""
    common.run_tool(main)


if __name__ == "__main__":
    run()
