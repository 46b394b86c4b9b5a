"""Time a generator-quality backend: images per second through its network (one forward pass per image).

Kept so that `python launch/benchmark_quality.py` works from a checkout: the code is
robgan_tf/cli/benchmark_quality.py, installed as the console script `robgan-benchmark-quality`.
"""
from robgan_tf.cli.benchmark_quality import run

if __name__ == "__main__":
    run()
