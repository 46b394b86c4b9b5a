"""Export a run's generator and (fine-tuned) classifier into LOGDIR/export, in TF Serving's layout; or the Rob-GAN
authors' PyTorch checkpoints (torch is not needed; nothing in the files is run).

    robgan-export --logdir=runs/c10
    robgan-export --authors_discriminator=dis_epoch_199.pth --authors_generator=gen_epoch_199.pth \
        --dataset=cifar10 --resolution=32 --export_dir=exports/authors_c10
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
flags.DEFINE_string("authors_discriminator", "", "Export the authors' PyTorch discriminator (their train.py's "
                    "dis_epoch_N.pth) or, with --authors_network=preact_resnet18, their PreActResNet18 classifier, "
                    "instead of a run. Needs --export_dir, --resolution and --dataset (cifar10, imagenet143) or "
                    "--class_names.")
flags.DEFINE_string("authors_generator", "", "With --authors_discriminator: also export the authors' generator "
                    "(gen_epoch_N.pth).")
flags.DEFINE_enum("authors_network", "discriminator", ["discriminator", "preact_resnet18"],
                  "What --authors_discriminator holds: their ResNet discriminator (train.py --model resnet_32/64/128) "
                  "or their PreActResNet18 (32 px).")
flags.DEFINE_list("class_names", [], "With --authors_discriminator: the class names, in label order (default: "
                  "--dataset's: cifar10's ten; for imagenet143 the sorted WordNet ids of the data they trained on "
                  "must be given).")
FLAGS = flags.FLAGS


def main(argv):
    cfg = common.start_experiment_script(argv)
    limits = common.guarded(lambda: export.ServingLimits(FLAGS.max_batch, FLAGS.max_image_pixels))
    if FLAGS.export_version < 0:
        common.fail(f"--export_version must be >= 0 (0: the next free one), got {FLAGS.export_version}.")

    def go():
        if FLAGS.authors_discriminator:
            run, classifier, provenance = _authors(cfg)
        else:
            run = run_lib.RunWeights(cfg)
            classifier, provenance = run_lib.load_final_classifier(run)
        paths = export.export_run(run, classifier, provenance, out=FLAGS.export_dir or None,
                                  version=FLAGS.export_version or None, limits=limits)
        for k, v in paths.items():
            print(f"{k}: {v}")

    common.guarded(go)


def _authors(cfg):
    """The authors' checkpoints as an ImportedRun, with the flags checked first."""
    from robgan_tf import interop
    from robgan_tf.data import CIFAR10_CLASSES

    if not FLAGS.export_dir:
        common.fail("--authors_discriminator needs --export_dir (there is no run to export into).")
    if not cfg.resolution:
        common.fail("--authors_discriminator needs --resolution (32, 64 or 128: the authors' --img_width).")
    names = FLAGS.class_names or (list(CIFAR10_CLASSES) if cfg.dataset == "cifar10" else [])
    if not names:
        common.fail(f"--dataset={cfg.dataset}: give the class names in label order with --class_names (the authors' "
                    "ImageFolder labels are the sorted folder names).")
    if FLAGS.authors_network == "preact_resnet18" and FLAGS.authors_generator:
        common.fail("--authors_generator goes with their ResNet discriminator, not with --authors_network=preact_resnet18.")
    return interop.import_for_export(FLAGS.authors_discriminator, FLAGS.authors_generator or None,
                                     FLAGS.authors_network, cfg.resolution, cfg.dataset, names, FLAGS.export_dir)


def run():
    """The console script's entry point (robgan-export)."""
    common.run_tool(main)


if __name__ == "__main__":
    run()
