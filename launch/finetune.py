"""Fine-tune a trained run's classifier with eq. 10 (real + lambda * fake, both PGD-attacked).

Kept so that `python launch/finetune.py` works from a checkout: the code is robgan_tf/cli/finetune.py, installed
as the console script `robgan-finetune`.
"""
from robgan_tf.cli.finetune import run

if __name__ == "__main__":
    run()
