"""Time Rob-GAN training iterations of any configuration on synthetic data.

Kept so that `python launch/benchmark.py` works from a checkout: the code is robgan_tf/cli/benchmark.py,
installed as the console script `robgan-benchmark`.
"""
from robgan_tf.cli.benchmark import run

if __name__ == "__main__":
    run()
