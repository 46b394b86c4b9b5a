"""Shared test setup: quiet TF, two logical CPU devices (for MirroredStrategy tests), fixed seeds, and the one
pipeline run the launch and run tests read."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


def pytest_configure(config):
    """Splits the CPU into two logical devices where tests run. Under xdist the controller process only hands
    out tests, so it does not import TensorFlow (3 s of CPU the workers could use)."""
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        return
    import tensorflow as tf

    # Logical devices must be configured before TF initialises the runtime, i.e. before any op runs.
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
    except RuntimeError:  # runtime already initialised by an earlier import; tests needing 2 devices check
        pass


@pytest.fixture(autouse=True)
def _seed():
    import keras

    keras.utils.set_random_seed(1234)
    np.random.seed(1234)
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.fixture(scope="session")  # session: made once per test worker even when its tests are interleaved
def pipeline_run(tmp_path_factory):
    """robgan-pipeline (a subprocess of the console script) on digits with tiny settings: 4 training iterations
    monitored at the last, 5 fine-tuning steps monitored on a 64-image validation split at steps 4 and 5. Tests
    using it are marked xdist_group("pipeline_run") so it is made once, and copy it before changing it.
    (logdir, stdout)"""
    from tools import TINY, run_console_script

    logdir = str(tmp_path_factory.mktemp("pipe"))
    proc = run_console_script("pipeline.py", f"--logdir={logdir}", "--train_iterations=4", "--finetune_steps=5",
                              "--val_examples=64", *TINY, "--sample_every=4")
    return logdir, proc.stdout
