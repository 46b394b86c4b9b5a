"""Fine-tune a trained run's classifier with eq. 10 (real + lambda * fake, both PGD-attacked). Rerunning resumes;
after the run has trained further, it fine-tunes the newer weights and keeps the earlier fine-tuning in
LOGDIR/finetune_checkpoints-from-iteration-N.

    python launch/finetune.py --logdir=runs/c10 --finetune_steps=20000 --finetune_lambda=0.3
"""

from robgan_tf.cli import common
from robgan_tf import loops
from robgan_tf import run as run_lib

common.define_experiment_flags()


def main(argv):
    cfg = common.start_experiment_script(argv)
    if not cfg.finetune_steps:
        common.fail("--finetune_steps must be > 0 to fine-tune.")
    run = common.guarded(lambda: run_lib.Run(cfg, create=False))
    common.guarded(lambda: loops.finetune(run))


def run():
    """The console script's entry point (robgan-finetune)."""
    common.run_tool(main)


if __name__ == "__main__":
    run()
