"""Write a sample grid PNG (one row per class, shared z per column) from a run or an exported generator.

    python launch/sample.py --model=runs/c10 --out=grid.png
    python launch/sample.py --model=runs/c10/export --out=grid.png
"""
from absl import flags

from robgan_tf.cli import common
from robgan_tf import samples

flags.DEFINE_string("model", "runs/robgan", "A run's --logdir, or an export: its directory (RUN/export), the generator's "
                    "folder (RUN/export/generator: the highest version) or one version folder. Default: the demo pipeline's run.")
flags.DEFINE_string("out", "samples.png", "Output PNG path.")
flags.DEFINE_integer("cols", 8, "Samples per class row.")
flags.DEFINE_integer("seed", 1234, "Seed of the fixed z vectors.")
FLAGS = flags.FLAGS


def _generator(path):
    """(callable(z, labels, training) -> images, num_classes, z_dim) from robgan_tf.loading."""
    from robgan_tf import loading

    g = loading.load_generator(path)
    if g.num_classes is None:
        common.fail(f"{getattr(g, 'path', path)} has no model card (assets.extra/model_card.json or the export's "
                    "manifest.json) telling its number of classes; export it again with robgan-export.")
    return g, g.num_classes, g.z_dim


def main(argv):
    common.start_model_script(argv, FLAGS.model)
    generator, num_classes, z_dim = common.guarded(lambda: _generator(FLAGS.model))
    samples.write_png(FLAGS.out, samples.sample_grid(generator, num_classes, z_dim, cols=FLAGS.cols, seed=FLAGS.seed))
    print(f"wrote {FLAGS.out}")


def run():
    """The console script's entry point (robgan-sample)."""
    common.run_tool(main)


if __name__ == "__main__":
    run()
