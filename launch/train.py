"""Train Rob-GAN (or the gan / advtrain baselines). Rerunning the same command resumes.

Kept so that `python launch/train.py` works from a checkout: the code is robgan_tf/cli/train.py, installed as
the console script `robgan-train`.
"""
from robgan_tf.cli.train import run

if __name__ == "__main__":
    run()
