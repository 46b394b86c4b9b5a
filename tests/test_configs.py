"""Every flagfile in configs/ parses with the launch scripts' flags, validates, and builds its networks."""
import glob
import os
import re

import pytest
from absl import flags

from robgan_tf.cli import common  # the launch scripts' flag definitions
from robgan_tf.experiment import ExperimentConfig
from robgan_tf.models import count_params
from robgan_tf.training import RobGAN, make_optimizers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.cfg")))
NUM_CLASSES = {"cifar10": 10, "imagenet143": 143}


def _parse(path):
    fv = flags.FlagValues()
    common.define_experiment_flags(fv)
    fv(["prog", f"--flagfile={path}"])
    return ExperimentConfig(**{f: fv[f].value for f in ExperimentConfig.__dataclass_fields__})


def test_there_is_a_flagfile_for_every_experiment_of_the_paper():
    names = {os.path.basename(p) for p in CONFIGS}
    assert {"cifar10_robgan.cfg", "cifar10_advtrain.cfg", "imagenet143_64_robgan.cfg", "imagenet143_128_robgan.cfg",
            "imagenet143_64_gan.cfg", "imagenet143_64_robgan_acgan.cfg", "imagenet143_64_gan_acgan.cfg",
            "imagenet143_64_sngan.cfg"} <= names


@pytest.mark.slow_build
@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_flagfile_parses_validates_and_builds(path):
    text = open(path).read()
    header = text.split("\n--", 1)[0]
    assert header.startswith("# ") and re.search(r"report", header) and re.search(r"GPU-hours", header), \
        "each flagfile opens with what the paper reports and the GPU time it needs"
    cfg = _parse(path).validate()
    k = NUM_CLASSES[cfg.dataset]
    g, d = cfg.build_models(k, cfg.image_resolution, 3)
    train = cfg.train_config(k)
    model = RobGAN(d, g, train)  # builds both networks
    model.compile(*make_optimizers(train))
    assert count_params(d) > 1e6 and (g is None) == (cfg.method == "advtrain")
    if cfg.finetune_steps:
        cfg.finetune_config(k)
    # faithful settings the paper's runs depend on
    if cfg.arch == "authors" and cfg.method != "advtrain":
        assert cfg.attack_step_size == 0.0078 and cfg.reset_adam and cfg.lr_schedule == "halve"
        assert cfg.augmentation == {"cifar10": "crop_flip", "imagenet143": "resized_crop_flip"}[cfg.dataset]


@pytest.mark.parametrize("overrides,message", [
    (dict(attack_eps=-0.1), "attack_eps must be >= 0"),
    (dict(train_iterations=0), "train_iterations must be > 0"),
    (dict(method="robgan", attack_steps=0), "needs an attack"),
    (dict(d_arch="preact_resnet18", resolution=64), "--d_arch=preact_resnet18 --resolution=64: .* no 64px"),
    (dict(d_arch="preact_resnet18", d_norm="batch"), "no BatchNorm and no conv biases"),
    (dict(method="advtrain", d_head="projection"), "projection needs labels"),
    (dict(lr_schedule="step"), "lr_boundaries"),
    (dict(lr_schedule="step", lr_boundaries="10,x"), "comma-separated integers"),
    (dict(reset_adam=True), "reset_adam restarts Adam"),
    (dict(finetune_batch_size=-1), "finetune_batch_size"),
])
def test_flag_combinations_that_cannot_work_are_refused_with_the_flag_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        ExperimentConfig(**overrides).validate()


def test_flags_reach_every_discriminator_option():
    cfg = ExperimentConfig(arch="tiny", d_arch="authors", d_head="projection", d_spectral_norm="on", d_norm="none",
                           d_bias="on", method="gan").validate()
    g, d = cfg.build_models(10, 32, 3)
    assert g.preset == "tiny" and d.preset == "authors" and d.head == "projection"
    assert d.spectral_norm and d.norm is None and d.use_bias
    assert cfg.attack_config().loss == "ce"  # the two-head attack needs the AC-GAN head
    assert ExperimentConfig(dataset="digits").augmentation == "none"  # the 16 px demo: crops hurt, no flips
    assert ExperimentConfig(dataset="imagenet143").augmentation == "resized_crop_flip"


def test_launch_scripts_turn_only_the_packages_errors_into_one_line():
    from robgan_tf.experiment import ConfigError

    with pytest.raises(SystemExit) as exit_info:
        common.guarded(lambda: (_ for _ in ()).throw(ConfigError("--x is wrong")))
    assert exit_info.value.code == 2
    from robgan_tf.quality import WeightsError

    with pytest.raises(SystemExit):  # a wrong weights file is bad input too
        common.guarded(lambda: (_ for _ in ()).throw(WeightsError("x.h5 has sha256 ...")))
    with pytest.raises(ValueError, match="a TensorFlow shape bug"):  # not ours: keeps its traceback
        common.guarded(lambda: (_ for _ in ()).throw(ValueError("a TensorFlow shape bug")))
    with pytest.raises(ValueError, match="finetune lambda must be >= 0"):
        ExperimentConfig(finetune_lambda=-1.0).validate()


def test_flag_counts_are_iterations_and_old_names_still_read():
    cfg = ExperimentConfig(n_dis=5, train_iterations=100, lr_schedule="halve", halve_every=20, method="gan")
    train = cfg.train_config(10)  # the library counts D updates
    assert cfg.iterations == 100 and train.train_steps == 500 and train.halve_every == 100 and train.method == "gan"
    step = ExperimentConfig(n_dis=2, lr_schedule="step", lr_boundaries="10,30").train_config(10)
    assert step.lr_boundaries == (20, 60)
    # a config.json written by 0.1 (mode, train_steps in D updates) still opens
    old = ExperimentConfig.from_dict({"mode": "advtrain", "train_steps": 501, "n_dis": 5})
    assert old.method == "advtrain" and old.train_iterations == 101
