"""Train the reference classifier the `reference` quality backend scores generators with (IS / FID / KID and
label accuracy): plain supervised learning on a dataset's training split, once; its sha256 goes with every score.

    python launch/train_reference.py --dataset=cifar10 --data_dir=/data/cifar10.npz --out=ref_cifar10.keras
    python launch/evaluate.py --model=runs/c10 --quality=reference --reference_classifier=ref_cifar10.keras
"""
import os

from absl import flags

from robgan_tf.cli import common
from robgan_tf.transforms import AUGMENTATIONS

flags.DEFINE_string("dataset", "digits", "Dataset: digits, cifar10, imagenet143, folder, npz or tfds:NAME.")
flags.DEFINE_string("data_dir", "", "Where the dataset lives (see README: Datasets).")
flags.DEFINE_integer("resolution", 0, "Image size; 0: the dataset's own (digits 16, CIFAR-10 32).")
flags.DEFINE_enum("arch", "tiny", ["tiny", "sngan", "authors", "preact_resnet18"],
                  "The network: the class head of this discriminator preset.")
flags.DEFINE_integer("epochs", 20, "Training epochs.")
flags.DEFINE_integer("batch_size", 64, "Batch size.")
flags.DEFINE_float("lr", 1e-3, "Adam learning rate.")
flags.DEFINE_enum("augment", "auto", ["auto", *AUGMENTATIONS],
                  "Training augmentation; auto: as the dataset's GAN training (digits none, CIFAR-10 crop_flip).")
flags.DEFINE_integer("seed", 0, "Seed.")
flags.DEFINE_string("out", "", "The .keras file to write (a PATH.json beside it records its sha256 and test "
                    "accuracy); default reference_<dataset>.keras.")
FLAGS = flags.FLAGS


def main(argv):
    common.quiet_logging()
    if len(argv) > 1:
        common.fail(f"unexpected arguments {argv[1:]}; flags look like --name=value.")
    if FLAGS.epochs < 1 or FLAGS.batch_size < 1 or FLAGS.lr <= 0:
        common.fail("--epochs and --batch_size must be >= 1 and --lr > 0.")
    from robgan_tf import data as data_lib

    try:
        data_lib.check_name(FLAGS.dataset)
    except data_lib.DataError as e:
        common.fail(f"--dataset: {e}")
    out = FLAGS.out or f"reference_{data_lib.slug(FLAGS.dataset)}.keras"
    if not out.endswith(".keras"):
        common.fail(f"--out={out}: the reference classifier is saved as a .keras file.")

    def go():
        from robgan_tf import reference
        from robgan_tf.experiment import ExperimentConfig

        # The same sentinels as the training flags (--resolution 0, --augment auto), resolved in one place.
        like_training = ExperimentConfig(dataset=FLAGS.dataset, resolution=FLAGS.resolution, augment=FLAGS.augment)
        res, augment = like_training.load_resolution, like_training.augmentation
        train = data_lib.load(FLAGS.dataset, "train", res, FLAGS.data_dir or None)
        test = data_lib.load(FLAGS.dataset, "test", res, FLAGS.data_dir or None)
        classifier, acc = reference.train_reference_classifier(
            train, test, preset=FLAGS.arch, epochs=FLAGS.epochs, batch_size=FLAGS.batch_size, lr=FLAGS.lr,
            augment=augment, seed=FLAGS.seed)
        digest = reference.save(classifier, out, {
            "dataset": FLAGS.dataset, "resolution": train.info.image_shape[0], "arch": FLAGS.arch,
            "epochs": FLAGS.epochs, "batch_size": FLAGS.batch_size, "lr": FLAGS.lr, "augment": augment,
            "seed": FLAGS.seed, "test_accuracy": acc, "test_examples": test.info.num_examples})
        print(f"test accuracy {acc:.2%} ({test.info.num_examples} images)")
        print(f"wrote {os.path.abspath(out)} (sha256 {digest})")

    common.guarded(go)


def run():
    """The console script's entry point (robgan-train-reference)."""
    common.run_tool(main)


if __name__ == "__main__":
    run()
