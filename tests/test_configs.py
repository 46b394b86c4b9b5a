"""Every flagfile in configs/ parses with the launch scripts' flags, validates, and builds its networks."""
import dataclasses
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
    fig8 = {f"imagenet143_{r}_{v}.cfg" for r in (64, 128) for v in ("robgan", "gan", "robgan_acgan", "gan_acgan", "sngan")}
    assert {"cifar10_robgan.cfg", "cifar10_robgan_trainpy.cfg", "cifar10_advtrain.cfg"} | fig8 <= names


@pytest.mark.parametrize("name", [f"imagenet143_{r}_{v}.cfg" for r in (64, 128)
                                  for v in ("robgan", "gan", "robgan_acgan", "gan_acgan", "sngan")])
def test_fig8_flagfiles_record_the_curves(name):
    """Fig. 8 plots Inception Score against epochs: every run of it scores its generator as it trains and keeps
    checkpoints to score again later."""
    cfg = _parse(os.path.join(ROOT, "configs", name))
    assert cfg.quality_every == 2810 and cfg.keep_checkpoint_every == 5620
    assert cfg.quality_weights == f"runs/reference_imagenet143_{cfg.resolution}.keras"


def test_the_two_cifar_recipes_follow_their_sources():
    """train_cifar.py (initial commit): PreActResNet18, n_dis 1, 100 epochs, AC-GAN fake term, eps 0.07;
    train.py at 8a478cf: the BN ResNet D, n_dis 5, 200 epochs, split loss. Both fine-tune at the training eps."""
    cifar = _parse(os.path.join(ROOT, "configs", "cifar10_robgan.cfg"))
    assert (cifar.d_arch, cifar.n_dis, cifar.loss_variant, cifar.attack_eps) == ("preact_resnet18", 1, "acgan", 0.07)
    assert cifar.train_iterations == 100 * 781 and cifar.halve_every == 50 * 781
    train = _parse(os.path.join(ROOT, "configs", "cifar10_robgan_trainpy.cfg"))
    assert (train.d_arch, train.n_dis, train.loss_variant, train.attack_eps) == ("same", 5, "split", 0.07)
    assert train.train_iterations == 200 * 781 // 5 and train.halve_every == 50 * 781 // 5
    assert cifar.finetune_eps == train.finetune_eps == 0.07


@pytest.fixture(scope="module")
def built_networks():
    """(generator, discriminator) by (networks, classes, resolution): the 17 flagfiles use 8 distinct pairs, each
    built once (the 128 px ones take seconds)."""
    return {}


@pytest.mark.slow_build
@pytest.mark.xdist_group("flagfiles")  # one worker, so each pair of networks is built once
@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_flagfile_parses_validates_and_builds(path, tmp_path, built_networks):
    text = open(path).read()
    header = text.split("\n--", 1)[0]
    assert header.startswith("# ") and re.search(r"report", header) and re.search(r"GPU-hours", header), \
        "each flagfile opens with what the paper reports and the GPU time it needs"
    cfg = _parse(path)
    if cfg.quality_every:  # the reference classifier the header says to train first
        assert f"--out={cfg.quality_weights}" in header
        (tmp_path / "reference.keras").write_bytes(b"")
        cfg = dataclasses.replace(cfg, quality_weights=str(tmp_path / "reference.keras"))
    cfg = cfg.validate()
    k = NUM_CLASSES[cfg.dataset]
    key = (cfg.networks(), k, cfg.image_resolution)
    if key not in built_networks:
        built_networks[key] = cfg.networks().build(k, cfg.image_resolution, 3)
    g, d = built_networks[key]
    train = cfg.train_config()
    model = RobGAN(d, g, train)  # builds both networks (once per pair)
    model.compile(*make_optimizers(train))
    assert count_params(d) > 1e6 and (g is None) == (cfg.method == "advtrain")
    if cfg.finetune_steps:
        cfg.finetune_config()
    # faithful settings the paper's runs depend on
    if cfg.arch == "authors" and cfg.method != "advtrain":
        assert cfg.attack_step_size == 0.0078 and cfg.reset_adam and cfg.lr_schedule == "halve"
        assert cfg.augmentation == {"cifar10": "crop_flip", "imagenet143": "resized_crop_flip"}[cfg.dataset]


@pytest.mark.parametrize("overrides,message", [
    # rules of the flag layer itself
    (dict(train_iterations=0), "^--train_iterations must be > 0"),
    (dict(monitor_examples=0), "^--monitor_examples must be > 0"),
    (dict(sample_every=-1), "^--sample_every must be >= 0"),  # 0: no in-training monitor (tests/test_run.py)
    (dict(d_arch="preact_resnet18", resolution=64), "--d_arch=preact_resnet18 --resolution=64: .* no 64px"),
    (dict(d_arch="preact_resnet18", d_norm="batch"), "no BatchNorm and no conv biases"),
    (dict(method="advtrain", d_head="projection"), "projection needs labels"),
    (dict(lr_schedule="step", lr_boundaries="10,x"), "comma-separated integers"),
    (dict(finetune_batch_size=-1), "finetune_batch_size"),
    # rules the config dataclasses own, reported with the flags that set the fields at fault
    (dict(attack_eps=-0.1), "^--attack_eps: attack eps must be >= 0"),
    (dict(attack_step_size=-0.1), r"^--attack_step_size: attack step_size must be > 0 \(None: automatic\)"),
    (dict(method="robgan", attack_steps=0), "^--attack_eps --attack_steps --method: method 'robgan' needs an attack"),
    (dict(n_dis=0), "^--n_dis: n_dis must be >= 1"),
    (dict(lr_schedule="step"), "^--lr_boundaries --lr_schedule: lr_schedule='step' needs lr_boundaries"),
    (dict(halve_every=-1), "^--halve_every: halve_every must be >= 0"),
    (dict(reset_adam=True), "^--lr_schedule --optimizer --reset_adam: reset_adam restarts Adam"),
    (dict(ema_decay=1.5), r"^--ema_decay: ema_decay must be in \(0, 1\)"),
    (dict(adam_beta2=1.0), "^--adam_beta1 --adam_beta2: Adam betas"),
    (dict(finetune_lambda=-1.0), "^--finetune_lambda: finetune lambda must be >= 0"),
    (dict(finetune_eps=-0.5), "^--finetune_eps: attack eps must be >= 0"),
    (dict(finetune_lr=0.0), "^--finetune_lr: finetune lr must be > 0"),
])
def test_flag_combinations_that_cannot_work_are_refused_with_the_flag_named(overrides, message):
    from robgan_tf.experiment import ConfigError

    with pytest.raises(ConfigError, match=message):
        ExperimentConfig(**overrides).validate()


def test_sentinels_resolve_in_one_place_into_a_frozen_run_spec(tmp_path):
    """Below the command line the library reads a RunSpec: every flag sentinel resolved, nothing to look up."""
    logdir = str(tmp_path / "run")
    auto = ExperimentConfig(logdir=logdir, attack_eps=0.05, attack_step_size=0.0, ema_decay=0.0, finetune_eps=-1.0,
                            finetune_batch_size=0, batch_size=48, resolution=0, d_arch="same", arch="tiny",
                            n_dis=2, train_iterations=30).resolve()
    assert auto.train.attack.step_size is None and auto.train.ema_decay is None and not auto.ema  # 0: auto / off
    assert auto.finetune.attack.eps == 0.05 and auto.finetune_batch == 48  # -1 / 0: the other flag's value
    assert auto.resolution is None and auto.image_resolution == 16 and auto.load_resolution == 16  # digits' own
    assert auto.networks.d_preset == "tiny" and auto.augmentation == "none"  # same: --arch; auto: the dataset's
    assert auto.eval_eps == (0.0, 0.02, 0.04, 0.08) and auto.eval_examples is None and auto.profile is None
    assert (auto.data_dir, auto.quality_weights, auto.resume_from) == (None, None, None)  # "": none
    assert auto.train.train_steps == 60 and auto.iterations == 30  # the library counts D updates
    assert auto.settings["finetune_eps"] == -1.0  # config.json keeps the flags as given
    assert ExperimentConfig(logdir=logdir, finetune_steps=0).resolve().finetune is None  # 0: no fine-tuning
    assert ExperimentConfig(logdir=logdir, arch="sngan").resolve().image_resolution == 32  # no 16 px sngan
    assert ExperimentConfig(logdir=logdir, dataset="npz").resolve().load_resolution is None  # a file's own size
    given = ExperimentConfig(logdir=logdir, attack_step_size=0.01, ema_decay=0.99, finetune_eps=0.03,
                             finetune_batch_size=96, eval_eps="8/255", eval_examples=7, profile_steps="2,3").resolve()
    assert given.train.attack.step_size == 0.01 and given.train.ema_decay == 0.99 and given.ema
    assert given.finetune.attack.eps == 0.03 and given.finetune_batch == 96
    assert given.eval_eps == (16 / 255,) and given.eval_examples == 7 and given.profile == (2, 3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        given.seed = 1
    with pytest.raises(TypeError):
        given.settings["seed"] = 1
    assert not os.path.exists(logdir)  # resolving reads the run folder, never writes it


@pytest.mark.parametrize("bad", [dict(eps=-1.0), dict(steps=-1), dict(step_size=0.0), dict(restarts=0),
                                 dict(restarts=2), dict(loss="hinge")])
def test_pgd_and_attack_config_refuse_the_same_settings_with_the_same_words(bad):
    """One authority for the attack's rules: calling pgd directly and building an AttackConfig agree."""
    import numpy as np

    from robgan_tf.attacks import pgd
    from robgan_tf.config import AttackConfig, SettingError

    settings = {"eps": 0.1, "steps": 2, **bad}
    with pytest.raises(SettingError) as from_config:
        AttackConfig(**settings)
    with pytest.raises(SettingError) as from_pgd:
        pgd(lambda x: x[:, 0, 0, :], np.zeros((1, 2, 2, 3), np.float32), [0], **settings)
    assert str(from_config.value) == str(from_pgd.value) and from_config.value.fields == from_pgd.value.fields


def test_flags_reach_every_discriminator_option():
    cfg = ExperimentConfig(arch="tiny", d_arch="authors", d_head="projection", d_spectral_norm="on", d_norm="none",
                           d_bias="on", method="gan").validate()
    g, d = cfg.networks().build(10, 32, 3)
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


def test_flag_counts_are_iterations_and_old_names_still_read():
    cfg = ExperimentConfig(n_dis=5, train_iterations=100, lr_schedule="halve", halve_every=20, method="gan")
    train = cfg.train_config()  # the library counts D updates
    assert cfg.iterations == 100 and train.train_steps == 500 and train.halve_every == 100 and train.method == "gan"
    step = ExperimentConfig(n_dis=2, lr_schedule="step", lr_boundaries="10,30").train_config()
    assert step.lr_boundaries == (20, 60)
    # a config.json written by 0.1 (mode, train_steps in D updates) still opens
    old = ExperimentConfig.from_dict({"mode": "advtrain", "train_steps": 501, "n_dis": 5})
    assert old.method == "advtrain" and old.train_iterations == 101
    # runs saved before g_statistics existed sampled G in inference mode and keep doing so; new ones as the authors
    assert old.g_statistics == "moving" and old.finetune_config().g_statistics == "moving"
    assert ExperimentConfig().finetune_config().g_statistics == "batch"
    assert ExperimentConfig.from_dict(ExperimentConfig(g_statistics="batch").to_dict()).g_statistics == "batch"


def test_evaluate_flags_come_from_their_dataclass_and_share_training_names_and_choices():
    from robgan_tf.experiment import EvaluateConfig

    fv = flags.FlagValues()
    common.define_flags(EvaluateConfig, fv)
    fields = {f.name: f for f in dataclasses.fields(EvaluateConfig)}
    assert set(fields) <= set(fv) and fv["quality"].value == "none" and fv["protocol"].value == "paper"
    fv(["prog", "--protocol=paper,autoattack", "--eps=8/255", "--precision=mixed_bfloat16", "--g_statistics=batch"])
    assert fv.protocol == "paper,autoattack" and fv.precision == "mixed_bfloat16"
    with pytest.raises(flags.IllegalFlagValueError):
        fv(["prog", "--g_statistics=ghost"])
    # a concept both tools have keeps training's name, and evaluation offers a subset of training's values
    training = {f.name: f for f in dataclasses.fields(ExperimentConfig)}
    for name in ("dataset", "data_dir", "precision", "g_statistics"):
        assert name in training
        if fields[name].metadata.get("choices"):
            assert set(fields[name].metadata["choices"]) - {"run"} <= set(training[name].metadata["choices"])
