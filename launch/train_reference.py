"""Train the reference classifier the `reference` quality backend scores generators with.

Kept so that `python launch/train_reference.py` works from a checkout: the code is robgan_tf/cli/train_reference.py,
installed as the console script `robgan-train-reference`.
"""
from robgan_tf.cli.train_reference import run

if __name__ == "__main__":
    run()
