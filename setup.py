from setuptools import find_packages, setup

setup(
    name="robgan_tf",
    version="0.2.0",
    description="Rob-GAN (Liu & Hsieh, CVPR 2019) for TensorFlow 2 / Keras 3: GAN training with a PGD attacker.",
    packages=find_packages(include=["robgan_tf", "robgan_tf.*"]),
    python_requires=">=3.10",
    # TensorFlow itself is not listed: the CPU wheel (tensorflow-cpu, pinned in requirements.txt) and
    # the CUDA build (tensorflow[and-cuda]) are different distributions of the same module; pick one.
    install_requires=[
        "keras>=3.3",
        "absl-py",
        "numpy",
        "scikit-learn",
        "matplotlib",
        "tensorflow-datasets",
        "tensorboard",
    ],
)
