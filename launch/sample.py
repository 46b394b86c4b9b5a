"""Write a sample grid PNG (one row per class, shared z per column) from a run or an exported generator.

Kept so that `python launch/sample.py` works from a checkout: the code is robgan_tf/cli/sample.py, installed as
the console script `robgan-sample`.
"""
from robgan_tf.cli.sample import run

if __name__ == "__main__":
    run()
