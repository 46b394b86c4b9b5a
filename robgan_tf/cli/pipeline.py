"""train -> fine-tune -> evaluate -> export in one command, into one --logdir.

With no flags: the whole pipeline on the embedded digits dataset (about 1 to 5 minutes on a 2-core CPU).
"""

from robgan_tf.cli import common
from robgan_tf import pipeline

common.define_experiment_flags()


def main(argv):
    cfg = common.start_experiment_script(argv)
    common.guarded(lambda: pipeline.pipeline(cfg))


def run():
    """The console script's entry point (robgan-pipeline)."""
    common.run_tool(main)


if __name__ == "__main__":
    run()
