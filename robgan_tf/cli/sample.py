"""Write a sample grid PNG (one row per class, shared z per column) from a run or an exported generator, or
class-balanced samples for external metric tools (torch-fidelity, clean-fid).

    python launch/sample.py --model=runs/c10 --out=grid.png
    python launch/sample.py --model=runs/c10/export --num_samples=50000 --out_dir=samples/ --npz=samples.npz
"""
import os

from absl import flags

from robgan_tf.cli import common
from robgan_tf import samples

flags.DEFINE_string("model", "runs/robgan", "A run's --logdir, or an export: its directory (RUN/export), the generator's "
                    "folder (RUN/export/generator: the highest version) or one version folder. Default: the demo pipeline's run.")
flags.DEFINE_string("out", "samples.png", "Output PNG path.")
flags.DEFINE_integer("cols", 8, "Samples per class row.")
flags.DEFINE_integer("seed", 1234, "Seed of the z vectors (of the grid and of --num_samples).")
flags.DEFINE_integer("num_samples", 0, "Also generate this many class-balanced samples (each class N // K or one more "
                     "times) for --out_dir and/or --npz; 0: only the grid.")
flags.DEFINE_string("out_dir", "", "With --num_samples: a new folder of PNGs, one sub-folder per class "
                    "(NNN_classname/), complete or absent.")
flags.DEFINE_string("npz", "", "With --num_samples: an .npz with uint8 images [N, H, W, C], int32 labels and the "
                    "class names.")
FLAGS = flags.FLAGS


def _generator(path):
    """callable(z, labels, training) -> images, with .num_classes and .z_dim, from robgan_tf.loading."""
    from robgan_tf import loading

    g = loading.load_generator(path)
    if g.num_classes is None:
        common.fail(f"{getattr(g, 'path', path)} has no model card (assets.extra/model_card.json or the export's "
                    "manifest.json) telling its number of classes; export it again with robgan-export.")
    return g


def main(argv):
    common.start_model_script(argv, FLAGS.model)
    if FLAGS.num_samples < 0:
        common.fail(f"--num_samples must be >= 0, got {FLAGS.num_samples}.")
    common.check_positive(cols=FLAGS.cols)
    common.check_output_path(FLAGS.out, "out")
    common.check_output_path(FLAGS.npz, "npz")
    if FLAGS.out_dir:
        common.check_output_path(os.path.join(FLAGS.out_dir, "x"), "out_dir")
    if bool(FLAGS.num_samples) != bool(FLAGS.out_dir or FLAGS.npz):
        common.fail("--num_samples goes with --out_dir and/or --npz (where to write the samples).")
    if FLAGS.out_dir and os.path.exists(FLAGS.out_dir) and os.listdir(FLAGS.out_dir):
        common.fail(f"--out_dir={FLAGS.out_dir} exists and is not empty; choose a new folder.")
    generator = common.guarded(lambda: _generator(FLAGS.model))
    num_classes = generator.num_classes
    samples.write_png(FLAGS.out, samples.sample_grid(generator, cols=FLAGS.cols, seed=FLAGS.seed))
    print(f"wrote {FLAGS.out}")
    if FLAGS.num_samples:
        names = getattr(generator, "class_names", None) or [str(k) for k in range(num_classes)]
        images, labels = samples.generate(generator, FLAGS.num_samples, seed=FLAGS.seed)
        if FLAGS.out_dir:
            common.guarded(lambda: samples.write_folders(FLAGS.out_dir, images, labels, names))
            print(f"wrote {FLAGS.num_samples} PNGs in {num_classes} class folders under {FLAGS.out_dir}")
        if FLAGS.npz:
            common.guarded(lambda: samples.write_npz(FLAGS.npz, images, labels, names))
            print(f"wrote {FLAGS.npz}")


def run():
    """The console script's entry point (robgan-sample)."""
    common.run_tool(main)


if __name__ == "__main__":
    run()
