"""Export a run's generator and (fine-tuned) classifier as SavedModels into LOGDIR/export.

    python launch/export.py --logdir=runs/c10
"""
from absl import app, flags

import common
from robgan_tf import export
from robgan_tf import run as run_lib

common.define_experiment_flags()
flags.DEFINE_string("export_dir", "", "Where to write the export; default LOGDIR/export. The run itself is only read.")
FLAGS = flags.FLAGS


def main(argv):
    cfg = common.start_experiment_script(argv)

    def go():
        run = run_lib.Run(cfg, need_train_data=False, read_only=True)
        paths = export.export_run(run, *run_lib.load_final_classifier(run), out=FLAGS.export_dir or None)
        for k, v in paths.items():
            print(f"{k}: {v}")

    common.guarded(go)


if __name__ == "__main__":
    app.run(main, flags_parser=common.parse_flags)
