"""Train Rob-GAN (or the gan / advtrain baselines). Rerunning the same command resumes.

    python launch/train.py --dataset=cifar10 --data_dir=/data/cifar10.npz --arch=sngan --logdir=runs/c10
"""

from robgan_tf.cli import common
from robgan_tf import loops
from robgan_tf import run as run_lib

common.define_experiment_flags()


def main(argv):
    cfg = common.start_experiment_script(argv)
    run = common.guarded(lambda: run_lib.Run(cfg))
    common.guarded(lambda: loops.train(run))


def run():
    """The console script's entry point (robgan-train)."""
    common.run_tool(main)


if __name__ == "__main__":
    run()
