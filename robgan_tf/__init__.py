"""robgan_tf: Rob-GAN (Liu & Hsieh, CVPR 2019) for TensorFlow 2 / Keras 3.

Modules, each with one job:
  layers    spectral norm, conditional BN, SN-GAN ResNet blocks
  models    Generator, Discriminator (AC-GAN or projection head), classifier view, width presets
  attacks   l_inf PGD (FGSM = 1 step) on any classifier
  losses    GAN / classification losses as small pure functions (eq. 8 and 9)
  training  RobGAN keras.Model (robgan | gan | advtrain modes) and the eq. 10 FineTuner
"""
__version__ = "0.1.0"
