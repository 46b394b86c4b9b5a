"""Shared flag handling for the launch scripts: every ExperimentConfig field is a flag.

Flags, defaults and help text come from robgan_tf.experiment.ExperimentConfig (the single source of
truth). When --logdir already holds a run, its config.json is the base and only the flags given on
the command line override it -- so rerunning a command resumes the same run.
"""
import dataclasses
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402
from absl import logging  # noqa: E402

from robgan_tf.experiment import ExperimentConfig  # noqa: E402

FLAGS = flags.FLAGS
_FIELDS = dataclasses.fields(ExperimentConfig)


def define_experiment_flags(flag_values=FLAGS, names=None, defaults=None):
    """Every ExperimentConfig field as a flag; `names`: only these (a tool that needs some of them, e.g. the
    benchmark), `defaults`: other defaults for that tool, said in the help text."""
    define_flags(ExperimentConfig, flag_values, names, defaults)
    if names is None or "precision" in names:  # before 0.9: a boolean for float16
        flags.DEFINE_bool("mixed_precision", None, "Deprecated: --precision=mixed_float16.", **dict(flag_values=flag_values))


def define_flags(config_class, flag_values=FLAGS, names=None, defaults=None):
    """Every field of a dataclass of flags (ExperimentConfig, EvaluateConfig) as an absl flag: its name, type,
    default, help and choices (an enum)."""
    defaults = defaults or {}
    for f in dataclasses.fields(config_class):
        if names is not None and f.name not in names:
            continue
        help_text = f.metadata.get("help", f.name)
        default = defaults.get(f.name, f.default)
        if f.name in defaults:
            help_text = f"{help_text} (This tool's default: {default}.)"
        choices = f.metadata.get("choices")
        kw = dict(flag_values=flag_values)
        if f.type in (bool, "bool"):
            flags.DEFINE_bool(f.name, default, help_text, **kw)
        elif f.type in (int, "int"):
            flags.DEFINE_integer(f.name, default, help_text, **kw)
        elif f.type in (float, "float"):
            flags.DEFINE_float(f.name, default, help_text, **kw)
        elif choices:
            flags.DEFINE_enum(f.name, default, list(choices), help_text, **kw)
        else:
            flags.DEFINE_string(f.name, default, help_text, **kw)


def define_shape_flags():
    """--resolution, --channels, --num_classes: the shape of the synthetic data the benchmarks time (the
    authors' CIFAR setting by default)."""
    flags.DEFINE_integer("resolution", 32, "Image size.")
    flags.DEFINE_integer("channels", 3, "Image channels.")
    flags.DEFINE_integer("num_classes", 10, "Classes.")


def spec_from_flags():
    """The run's RunSpec: its config.json (if any) overridden by the flags given, checked once."""
    from robgan_tf.experiment import resolve_run

    quiet_logging()
    given = {f.name: FLAGS[f.name].value for f in _FIELDS if FLAGS[f.name].present}
    given.update(deprecated_precision(FLAGS))
    try:
        return resolve_run(FLAGS.logdir, given)
    except ValueError as e:
        fail(str(e))


def deprecated_precision(flag_values):
    """{"precision": ...} for the boolean --mixed_precision of 0.8, with a warning; {} when it is not given."""
    if "mixed_precision" not in flag_values or not flag_values["mixed_precision"].present:
        return {}
    old = flag_values.mixed_precision
    new = "mixed_float16" if old else "float32"
    if flag_values["precision"].present and flag_values.precision != new:
        fail(f"--mixed_precision={old} and --precision={flag_values.precision} disagree; --mixed_precision is "
             "deprecated: give --precision only.")
    print(f"warning: --mixed_precision is deprecated; use --precision={new} (mixed_bfloat16 is the fast one on "
          "CPUs and on GPUs from compute capability 8.0).", file=sys.stderr, flush=True)
    return {"precision": new}


def run_tool(main):
    """app.run(main) with parse_flags; --help lists the flags the tool's robgan_tf.cli modules define (absl shows
    only the key flags of sys.argv[0], which is the console script or the launch/ shim, not those modules)."""
    from absl import app

    entry = sys.modules.get("__main__")
    if entry is not None and not getattr(entry, "__doc__", None):  # a console script: show the tool's own doc
        entry.__doc__ = sys.modules[main.__module__].__doc__
    for module, defined in FLAGS.flags_by_module_dict().items():
        if module.startswith("robgan_tf.cli"):
            for flag in defined:
                FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    try:
        app.run(main, flags_parser=parse_flags)
    except KeyboardInterrupt:  # Ctrl-C while starting (importing TensorFlow, reading data): nothing was written
        print("interrupted (Ctrl-C).", file=sys.stderr, flush=True)
        sys.exit(130)


HELP = ("--help", "-help", "-h", "--helpshort", "--helpfull", "--helpxml", "-?")


def parse_flags(argv):
    """app.run's flags_parser: an unparseable or unknown flag is a one-line `error:` and exit 2, like every
    other bad input (absl's own handler prints FATAL and exits 1); asking for --help is a success, exit 0
    (absl exits 1 after printing it)."""
    try:
        return FLAGS(argv)
    except flags.Error as e:
        fail(f"{e} (see --help)")
    except SystemExit:
        if any(a in HELP for a in argv[1:]):
            sys.exit(0)
        raise


def quiet_logging():
    """absl logs TF's INFO chatter (SavedModel writing, ...) by default; keep warnings and our progress."""
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)


def start_model_script(argv, model_path):
    """Common start of the scripts that read a --model: quiet logs, no stray arguments, the path exists."""
    quiet_logging()
    if len(argv) > 1:
        fail(f"unexpected arguments {argv[1:]}; flags look like --name=value.")
    if not os.path.exists(model_path):
        fail(f"--model={model_path} does not exist.")


def check_output_path(path, flag):
    """Fails now, before any work, when the file `path` could not be written later: it is a folder, a parent is a
    file, or the nearest existing folder is not writable. (Missing parent folders are fine: they are made.)"""
    if not path:
        return
    if os.path.isdir(path):
        fail(f"--{flag}={path} is a folder; give a file path.")
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        fail(f"--{flag}={path}: {parent} is a file, not a folder; give a path in a folder.")
    if not os.access(parent, os.W_OK | os.X_OK):
        fail(f"--{flag}={path}: {parent} is not writable; choose another place (nothing was computed yet).")


def check_positive(**values):
    """Fails when a flag that counts something is not > 0."""
    for name, value in values.items():
        if value <= 0:
            fail(f"--{name} must be > 0, got {value}.")


def fail(message):
    """Exit with status 2 and a one-line error, before any work starts."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def start_experiment_script(argv):
    """Common start of the scripts driven by experiment flags: no stray arguments, the run's spec, runtime."""
    if len(argv) > 1:
        fail(f"unexpected arguments {argv[1:]}; flags look like --name=value.")
    spec = spec_from_flags()
    from robgan_tf import runtime

    runtime.setup_runtime(spec)
    return spec


def guarded(fn):
    """Runs fn(); the package's data, config, missing-checkpoint, storage, lock and divergence errors become
    one clear line and exit 2 (a ValueError from TensorFlow, say, is a bug and keeps its traceback)."""
    from robgan_tf.data import DataError
    from robgan_tf.experiment import ConfigError
    from robgan_tf.export import ExportError
    from robgan_tf.inception2015 import InceptionGraphError
    from robgan_tf.loading import ExportCorrupt
    from robgan_tf.loops import Interrupted, TrainingDiverged
    from robgan_tf.quality import WeightsError
    from robgan_tf.storage import CheckpointError, LinkRefused, RunLocked, StorageError
    from robgan_tf.torch_format import TorchCheckpointError

    try:
        return fn()
    # The package's own errors; any other exception keeps its traceback.
    except (DataError, ConfigError, FileNotFoundError, TrainingDiverged, StorageError, RunLocked, LinkRefused,
            CheckpointError, WeightsError, InceptionGraphError, ExportError, ExportCorrupt, TorchCheckpointError) as e:
        fail(str(e))
    except Interrupted as e:  # SIGTERM or Ctrl-C in a loop: checkpointed; the shell's exit status for the signal
        print(str(e), file=sys.stderr, flush=True)
        sys.exit(128 + e.signum)
    except KeyboardInterrupt:  # Ctrl-C outside a loop (or twice in one): nothing half-written, no traceback
        print("interrupted (Ctrl-C); files are written whole or not at all, so nothing is half-written. Rerun the "
              "same command to start again.", file=sys.stderr, flush=True)
        sys.exit(130)
    except OSError as e:  # a write the package did not wrap (a full or read-only disk)
        fail(f"storage error: {e.strerror or e} ({e.filename or 'path unknown'}). Nothing after this point was "
             "written; fix the disk or the permissions and rerun the same command.")
    except Exception as e:  # TF's own file errors (event files, SavedModels) on a full or read-only disk
        import tensorflow as tf

        if isinstance(e, (tf.errors.PermissionDeniedError, tf.errors.ResourceExhaustedError)):
            fail(f"storage error: {e.message.splitlines()[0]}. Fix the disk or the permissions and rerun the same "
                 "command; checkpoints already written are kept.")
        raise
