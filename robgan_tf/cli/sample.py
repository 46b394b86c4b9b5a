"""Write a sample grid PNG (one row per class, shared z per column) from a run or an exported generator.

    python launch/sample.py --model=runs/c10 --out=grid.png
    python launch/sample.py --model=runs/c10/export/generator --out=grid.png
"""
import json
import os

from absl import app, flags

import common
from robgan_tf import run as run_lib
from robgan_tf import runtime
from robgan_tf import samples

flags.DEFINE_string("model", None, "A run's --logdir, or an exported generator SavedModel directory.")
flags.DEFINE_string("out", "samples.png", "Output PNG path.")
flags.DEFINE_integer("cols", 8, "Samples per class row.")
flags.DEFINE_integer("seed", 1234, "Seed of the fixed z vectors.")
flags.mark_flag_as_required("model")
FLAGS = flags.FLAGS


def _generator(path):
    """(callable(z, labels, training) -> images, num_classes, z_dim)."""
    if os.path.exists(os.path.join(path, "saved_model.pb")):
        import tensorflow as tf

        manifest = os.path.join(os.path.dirname(os.path.abspath(path)), "manifest.json")
        if not os.path.exists(manifest):
            common.fail(f"{manifest} is missing; it tells the number of classes and z_dim.")
        with open(manifest) as f:
            m = json.load(f)
        loaded = tf.saved_model.load(path)
        sig = loaded.signatures["serving_default"]

        def generate(z, labels, training=False, _keepalive=loaded):  # the signature alone lets the variables go
            return sig(z=z, labels=labels)["images"]

        return generate, m["num_classes"], m["z_dim"]
    config = os.path.join(path, "config.json")
    if not os.path.exists(config):
        common.fail(f"--model={path} is neither a generator SavedModel nor a run directory.")
    from robgan_tf.experiment import ExperimentConfig

    cfg = ExperimentConfig.of_run(path)
    if cfg.method == "advtrain":
        common.fail(f"{path} was trained with --method=advtrain: it has no generator.")
    runtime.setup_runtime(cfg)
    run = run_lib.Run(cfg, need_train_data=False, read_only=True)
    if not run.restore():
        common.fail(f"no checkpoint in {path}/checkpoints: train first.")
    return run.sampling_generator(), run.num_classes, cfg.z_dim


def main(argv):
    common.start_model_script(argv, FLAGS.model)
    generator, num_classes, z_dim = _generator(FLAGS.model)
    samples.write_png(FLAGS.out, samples.sample_grid(generator, num_classes, z_dim, cols=FLAGS.cols, seed=FLAGS.seed))
    print(f"wrote {FLAGS.out}")


if __name__ == "__main__":
    app.run(main, flags_parser=common.parse_flags)
