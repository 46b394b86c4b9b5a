"""Export a run's generator and (fine-tuned) classifier as SavedModels into LOGDIR/export.

Kept so that `python launch/export.py` works from a checkout: the code is robgan_tf/cli/export.py, installed as
the console script `robgan-export`.
"""
from robgan_tf.cli.export import run

if __name__ == "__main__":
    run()
