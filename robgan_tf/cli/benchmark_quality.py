"""Time a generator-quality backend: images per second through its network (one forward pass per image).

IS and FID need tens of thousands of images through Inception at 299x299; this says how long that takes here.

    python launch/benchmark_quality.py --backend=keras_inception_v3            # random weights: same cost
    python launch/benchmark_quality.py --backend=tf_inception_2015 --inception_weights=inception-2015-12-05.tgz
    python launch/benchmark_quality.py --backend=classifier --arch=sngan

Prints the median / min / max seconds per batch (one forward pass), images per second, and the minutes one
pass over 50,000 images takes at that rate.
"""
import statistics
import time

from absl import flags

from robgan_tf.cli import common

flags.DEFINE_enum("backend", "keras_inception_v3", ["keras_inception_v3", "tf_inception_2015", "classifier"],
                  "Backend to time.")
flags.DEFINE_string("inception_weights", "", "Weights file: required for tf_inception_2015; for "
                    "keras_inception_v3 empty means randomly initialised weights (the cost is the same).")
flags.DEFINE_enum("arch", "sngan", ["sngan", "reference", "tiny"], "Discriminator preset for --backend=classifier.")
flags.DEFINE_integer("image_size", 32, "Size of the (generated) images fed to the backend.")
flags.DEFINE_integer("channels", 3, "Channels of the images.")
flags.DEFINE_integer("batch_size", 50, "Images per call.")
flags.DEFINE_integer("batches", 5, "Timed batches.")
flags.DEFINE_integer("warmup", 1, "Untimed batches first (tracing, allocation).")
flags.DEFINE_string("json_out", "", "Write the results here as JSON.")
FLAGS = flags.FLAGS


class _RandomKerasInception:
    """KerasInceptionBackend's network and preprocessing with random weights: the same cost, for timing only."""

    def __init__(self):
        import keras

        base = keras.applications.InceptionV3(weights=None, include_top=True)
        self.model = keras.Model(base.input, base.get_layer("avg_pool").output)

    def features(self, images):
        from robgan_tf.quality import inception_preprocess

        return self.model(inception_preprocess(images), training=False).numpy()


def _backend():
    from robgan_tf import quality

    if FLAGS.backend == "classifier":
        from robgan_tf.models import Discriminator

        d = Discriminator(num_classes=10, resolution=FLAGS.image_size, preset=FLAGS.arch, channels=FLAGS.channels)
        return quality.ClassifierBackend(d.classifier())
    if FLAGS.backend == "keras_inception_v3" and not FLAGS.inception_weights:
        return _RandomKerasInception()
    return quality.make_backend(FLAGS.backend, weights_path=FLAGS.inception_weights)


def main(argv):
    common.quiet_logging()
    if len(argv) > 1:
        common.fail(f"unexpected arguments {argv[1:]}; flags look like --name=value.")
    if FLAGS.batch_size < 1 or FLAGS.batches < 1 or FLAGS.warmup < 0:
        common.fail("--batch_size and --batches must be >= 1 and --warmup >= 0.")

    def go():
        import numpy as np

        from robgan_tf.runtime import processor

        backend = _backend()
        rng = np.random.default_rng(0)
        images = rng.uniform(-1, 1, (FLAGS.batch_size, FLAGS.image_size, FLAGS.image_size, FLAGS.channels))
        images = images.astype(np.float32)

        def one():  # one forward pass (IS and FID each make one per image)
            backend.features(images)

        for _ in range(FLAGS.warmup):
            one()
        times = []
        for _ in range(FLAGS.batches):
            t = time.perf_counter()
            one()
            times.append(time.perf_counter() - t)
        median = statistics.median(times)
        result = {"backend": FLAGS.backend, "weights": FLAGS.inception_weights or "random",
                  "batch_size": FLAGS.batch_size, "image_size": FLAGS.image_size, "batches": FLAGS.batches,
                  "median_s_per_batch": median, "min_s_per_batch": min(times), "max_s_per_batch": max(times),
                  "images_per_s": FLAGS.batch_size / median,
                  "minutes_per_50k_images": 50000 / (FLAGS.batch_size / median) / 60, "processor": processor()}
        cpu = result["processor"]
        print(f"processor: {cpu['model']}, {cpu['logical_cpus']} logical CPUs, {' '.join(cpu['vector_extensions'])}")
        print(f"{FLAGS.backend}: median {median:.3f} s per batch of {FLAGS.batch_size} (min {min(times):.3f}, "
              f"max {max(times):.3f}); {result['images_per_s']:.1f} images/s; one pass over 50,000 images: "
              f"{result['minutes_per_50k_images']:.1f} min (IS + FID of 50k samples against 50k train images "
              "make three such passes)")
        if FLAGS.json_out:
            from robgan_tf.storage import atomic_write_json

            atomic_write_json(FLAGS.json_out, result)

    common.guarded(go)


def run():
    """The console script's entry point (robgan-benchmark-quality)."""
    common.run_tool(main)


if __name__ == "__main__":
    run()
