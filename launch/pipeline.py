"""train -> fine-tune -> evaluate -> export in one command, into one --logdir.

Kept so that `python launch/pipeline.py` works from a checkout: the code is robgan_tf/cli/pipeline.py, installed
as the console script `robgan-pipeline`.
"""
from robgan_tf.cli.pipeline import run

if __name__ == "__main__":
    run()
