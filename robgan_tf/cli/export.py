"""Export a run's generator and (fine-tuned) classifier into LOGDIR/export, in TF Serving's layout.

    python launch/export.py --logdir=runs/c10
"""
from absl import flags

from robgan_tf.cli import common
from robgan_tf import export
from robgan_tf import run as run_lib

common.define_experiment_flags()
flags.DEFINE_string("export_dir", "", "Where to write the export; default LOGDIR/export. The run itself is only read.")
flags.DEFINE_integer("export_version", 0, "The version folder to write (TF Serving serves the highest); 0: the next "
                     "free number, starting at 1. Versions are never overwritten.")
flags.DEFINE_integer("max_batch", export.ServingLimits.max_batch, "Serving limit: images or labels per request "
                     "in every signature (recorded in the model card).")
flags.DEFINE_integer("max_image_pixels", export.ServingLimits.max_image_pixels, "Serving limit: width x height of one "
                     "image sent to classify_image_bytes, read from its header before decoding (recorded in the "
                     "model card).")
FLAGS = flags.FLAGS


def main(argv):
    cfg = common.start_experiment_script(argv)
    limits = common.guarded(lambda: export.ServingLimits(FLAGS.max_batch, FLAGS.max_image_pixels))
    if FLAGS.export_version < 0:
        common.fail(f"--export_version must be >= 0 (0: the next free one), got {FLAGS.export_version}.")

    def go():
        run = run_lib.Run(cfg, need_train_data=False, read_only=True)
        paths = export.export_run(run, *run_lib.load_final_classifier(run), out=FLAGS.export_dir or None,
                                  version=FLAGS.export_version or None, limits=limits)
        for k, v in paths.items():
            print(f"{k}: {v}")

    common.guarded(go)


def run():
    """The console script's entry point (robgan-export)."""
    common.run_tool(main)


if __name__ == "__main__":
    run()
