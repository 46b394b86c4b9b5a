"""Accuracy under l_inf attacks (paper, strong, AutoAttack) for an exported classifier or a run, as a table and JSON.

Kept so that `python launch/evaluate.py` works from a checkout: the code is robgan_tf/cli/evaluate.py, installed
as the console script `robgan-evaluate`.
"""
from robgan_tf.cli.evaluate import run

if __name__ == "__main__":
    run()
