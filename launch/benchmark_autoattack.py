"""Time AutoAttack's attacks against IBM ART's APGD on one fixed classifier and the same examples, in one run.

Kept so that `python launch/benchmark_autoattack.py` works from a checkout: the code is
robgan_tf/cli/benchmark_autoattack.py, installed as the console script `robgan-benchmark-autoattack`.
"""
from robgan_tf.cli.benchmark_autoattack import run

if __name__ == "__main__":
    run()
