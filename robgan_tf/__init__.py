"""robgan_tf: Rob-GAN (Liu & Hsieh, CVPR 2019) for TensorFlow 2 / Keras 3.

Modules, each with one job:
  layers      spectral norm, conditional BN, replica-consistent BN, SN-GAN ResNet blocks
  models      Generator, Discriminator (AC-GAN or projection head), classifier view, width presets
  attacks     l_inf PGD (FGSM = 1 step) on any classifier
  losses      GAN / classification losses as small pure functions (eq. 8 and 9)
  config      TrainConfig / AttackConfig / FinetuneConfig dataclasses
  training    RobGAN keras.Model (robgan | gan | advtrain modes) and the eq. 10 FineTuner
  transforms  in-graph crop/flip and dequantisation
  data        every dataset through one load(), step-indexed tf.data pipelines
  robustness  robustness tables (paper / strong protocols) and the images that decided them
  gap         the generalization-gap analysis (Fig. 2 / 6): train vs test robustness, local Lipschitz values
  quality     Inception Score / FID maths and labelled backends
  inception2015  the 2015-12-05 TF Inception graph (local file), upgraded to run in TF 2
  experiment  ExperimentConfig: every flag of the launch scripts
  runtime     logical devices, determinism, precision, the strategy, the chief
  run         opening a run (created and locked, or read-only): data, networks, optimizers, checkpoints
  loops       the training and fine-tuning loops: one skeleton
  samples     sample grids
  pipeline    train -> fine-tune -> evaluate -> export
  storage     atomic writes, the run lock, checkpoint saves and export swaps that fail cleanly
  judge       an independent scikit-learn judge of the digits demo's generator
  export      SavedModels servable without robgan_tf
"""
__version__ = "0.2.0"
