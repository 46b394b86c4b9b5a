"""robgan_tf: Rob-GAN (Liu & Hsieh, CVPR 2019) for TensorFlow 2 / Keras 3.

The main names are importable from the top level (loaded on first use, so `import robgan_tf` stays fast):

    import robgan_tf
    g = robgan_tf.load_generator("runs/robgan")          # a run, an export, or an export version folder
    f = robgan_tf.load_classifier("runs/robgan/export")
    robgan_tf.run_pipeline(logdir="runs/demo")           # train -> fine-tune -> evaluate -> export

Modules, each with one job:
  layers      spectral norm, conditional BN, replica-consistent BN, SN-GAN ResNet blocks
  models      Generator, Discriminator (AC-GAN or projection head), classifier view, width presets
  attacks     l_inf PGD (FGSM = 1 step) on any classifier
  autoattack  AutoAttack in TensorFlow: APGD (CE / DLR, targeted), FAB-T, Square, the standard protocol
  losses      GAN / classification losses as small pure functions (eq. 8 and 9)
  config      TrainConfig / AttackConfig / FinetuneConfig dataclasses
  training    RobGAN keras.Model (robgan | gan | advtrain modes) and the eq. 10 FineTuner
  transforms  in-graph crop/flip and dequantisation
  data        every dataset through one load(), step-indexed tf.data pipelines
  robustness  robustness tables (paper / strong / autoattack protocols), gradient-masking indicators
  gap         the generalization-gap analysis (Fig. 2 / 6): train vs test robustness, local Lipschitz values
  quality     Inception Score / FID maths and labelled backends
  inception2015  the 2015-12-05 TF Inception graph (local file), upgraded to run in TF 2
  experiment  ExperimentConfig: every flag of the launch scripts; resolve_run makes a run's RunSpec from them
  spec        RunSpec: a run's settings resolved and checked once, what everything below the CLI reads
  runtime     logical devices, determinism, precision, the strategy, the chief, the processor
  run         opening a run (created and locked, or read-only): data, networks, optimizers, checkpoints
  loops       the training and fine-tuning loops: one skeleton
  curves      metrics over training: every checkpoint of a run scored, plotted against D updates and seconds
  samples     sample grids
  pipeline    train -> fine-tune -> evaluate -> export
  storage     atomic writes, the run lock, checkpoint saves and export swaps that fail cleanly
  judge       an independent scikit-learn judge of the digits demo's generator
  export      SavedModels in TF Serving's layout, servable without robgan_tf, and .keras files
  loading     load_generator / load_classifier from a run, an export or a version folder
  progress    the progress line of long evaluations
  cli         the command-line tools (robgan-train, robgan-evaluate, ...)
"""
import importlib
import importlib.util

__version__ = "0.9.0"


def _have_tensorflow():
    try:
        return importlib.util.find_spec("tensorflow") is not None
    except (ImportError, ValueError):
        return False


if not _have_tensorflow():
    raise ImportError("robgan_tf needs TensorFlow, which is not installed: pip install \"robgan_tf[cpu]\" "
                      "(tensorflow-cpu) or \"robgan_tf[gpu]\" (tensorflow[and-cuda]).")

_EXPORTS = {
    "Generator": "models", "Discriminator": "models", "Classifier": "models",
    "RobGAN": "training", "FineTuner": "training", "make_optimizers": "training",
    "TrainConfig": "config", "AttackConfig": "config", "FinetuneConfig": "config", "LossConfig": "losses",
    "ExperimentConfig": "experiment", "resolve_run": "experiment", "RunSpec": "spec",
    "pgd": "attacks", "apgd": "autoattack", "fab_targeted": "autoattack",
    "robustness_table": "robustness",
    "load_generator": "loading", "load_classifier": "loading",
    "run_pipeline": "pipeline",
}
__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"robgan_tf.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'robgan_tf' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
