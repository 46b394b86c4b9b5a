"""Export a run's generator and (fine-tuned) classifier as SavedModels into LOGDIR/export.

    python launch/export.py --logdir=runs/c10
"""
from absl import app

import common
from robgan_tf import export, runner

common.define_experiment_flags()


def main(argv):
    cfg = common.start_experiment_script(argv)

    def go():
        run = runner.Run(cfg, need_train_data=False)
        paths = export.export_run(run, *runner.load_final_classifier(run))
        for k, v in paths.items():
            print(f"{k}: {v}")

    common.guarded(go)


if __name__ == "__main__":
    app.run(main)
