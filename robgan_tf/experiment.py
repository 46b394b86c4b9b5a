"""Experiment configuration: every knob of a run in one dataclass, shared by all launch scripts.

`ExperimentConfig` is the single source of truth of the flags: the absl flags of `launch/` are generated from
its fields (name, type, default and help). It stays at the command line: `resolve_run` merges it with the run's
config.json, checks it once and resolves every sentinel into the frozen `spec.RunSpec` that the library reads.
"""
from __future__ import annotations

import dataclasses
import math
import os

from robgan_tf import data as data_lib
from robgan_tf import precision as precision_lib
from robgan_tf.config import G_STATISTICS, METHODS, AttackConfig, FinetuneConfig, LR_SCHEDULES, OPTIMIZERS, SettingError, TrainConfig
from robgan_tf.layout import RunDir
from robgan_tf.losses import GAN_LOSSES, VARIANTS, WEIGHTINGS, LossConfig
from robgan_tf.precision import PRECISIONS
from robgan_tf.models import D_ONLY_PRESETS, HEADS, PRESETS, get_spec
from robgan_tf.spec import ConfigError, Networks, RunSpec
from robgan_tf.transforms import AUGMENTATIONS

STRATEGIES = ("auto", "default", "mirrored", "multi_worker")
ARCHS = ("sngan", "authors", "reference", "tiny")
D_ARCHS = ("same",) + ARCHS + D_ONLY_PRESETS
TRISTATE = ("preset", "on", "off")
# The authors' training-stage augmentation per dataset. The digits demo gets none: its digits fill a 16 px
# frame, where a 4-pixel crop shifts them by a quarter (it halved the independent judge's score of the
# generator: docs/PERFORMANCE.md, "The default pipeline"); and they are not mirror-symmetric.
AUTO_AUGMENT = {"cifar10": "crop_flip", "imagenet143": "resized_crop_flip", "digits": "none",
                "folder": "crop_flip", "npz": "crop_flip"}


def auto_augment(dataset):
    """--augment=auto's choice for a dataset; tfds sets get crops only (a flip changes the class of digit-like
    sets; pass --augment=crop_flip where it does not)."""
    return AUTO_AUGMENT.get(dataset, "crop")


# Image size when --resolution is 0: the dataset's own. Digits (8 px originally) are shown at 16 px to the
# tiny preset, the only one with 16 px networks, and at 32 px to the others.
NATIVE_RESOLUTION = {"digits": 16, "cifar10": 32}
PAPER_EPS = {"cifar10": (0.0, 0.02, 0.04, 0.08), "imagenet143": (0.0, 0.01, 0.02, 0.03)}
DEFAULT_EPS = (0.0, 0.02, 0.04, 0.08)


def parse_eps(token, flag="eps"):
    """One eps in [-1, 1] units: a plain number is in those units; a fraction N/M (as papers write 8/255) is on
    the [0, 1] pixel scale and is doubled (8/255 -> 16/255 = 0.0627)."""
    token = token.strip()
    try:
        if "/" in token:
            num, den = token.split("/")
            value = 2.0 * float(num) / float(den)
        else:
            value = float(token)
    except (ValueError, ZeroDivisionError):
        raise ConfigError(f"--{flag}: {token!r} is neither a number ([-1, 1] units) nor a fraction like 8/255 "
                          "([0, 1] scale).") from None
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"--{flag} values must be finite and >= 0, got {token!r}.")
    return value


def eps_label(eps):
    """eps in [-1, 1] units as papers write it on the [0, 1] scale: '8/255' when it is a whole number of
    255ths, else the decimal."""
    n = eps / 2.0 * 255.0
    return f"{round(n)}/255" if abs(n - round(n)) < 1e-4 else f"{eps / 2.0:g}"


def parse_eps_grid(text, dataset, flag="eps"):
    """A comma-separated eps list in [-1, 1] units (fractions like 8/255 on the [0, 1] scale, see parse_eps);
    empty: the paper's grid for the dataset."""
    if not text.strip():
        return PAPER_EPS.get(dataset, DEFAULT_EPS)
    return tuple(parse_eps(v, flag) for v in text.split(","))


def _f(default, help, choices=None):
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices})


@dataclasses.dataclass
class ExperimentConfig:
    # data
    dataset: str = _f("digits", "Dataset: digits, cifar10, imagenet143, folder, npz, or tfds:NAME for any "
                      "tensorflow-datasets image-classification set (tfds:cifar100, tfds:svhn_cropped, tfds:stl10 "
                      "with --resolution; README: Datasets).")
    data_dir: str = _f("", "Where the dataset lives (see README: Datasets). Empty: the default place.")
    download: bool = _f(False, "Let tensorflow-datasets download the dataset (CIFAR-10 or a tfds: set) if no local "
                        "copy is found.")
    resolution: int = _f(0, "Image size (16 for the tiny preset only, 32, 64, 128). 0: the dataset's own (digits 16 "
                         "with the tiny preset, else 32; CIFAR-10 32).")
    # model
    arch: str = _f("tiny", "Network preset of G and D: sngan (SN-GAN), authors (the Rob-GAN authors' nets at 32/64/"
                   "128 px; reference = authors at 32 px), tiny (CPU demos). See docs/FIDELITY.md.", ARCHS)
    d_arch: str = _f("same", "Discriminator preset when it differs from --arch, e.g. preact_resnet18 (the paper's "
                     "CIFAR ResNet18 with two heads, 32 px only).", D_ARCHS)
    d_head: str = _f("acgan", "acgan (two heads, Rob-GAN) or projection (SN-GAN's projection discriminator).", HEADS)
    d_spectral_norm: str = _f("preset", "Spectral norm on every D layer: preset (sngan/tiny on, authors off), on, off.",
                              TRISTATE)
    d_norm: str = _f("preset", "D normalisation: preset (BatchNorm after each conv for authors at 32 px, else none), "
                     "batch, none.", ("preset", "batch", "none"))
    d_bias: str = _f("preset", "Conv biases in D: preset (sngan/tiny on, authors off), on, off.", TRISTATE)
    z_dim: int = _f(128, "Generator noise dimension.")
    # method
    method: str = _f("robgan", "robgan: G + D + attacker; gan: no attacker (AC-GAN/SN-GAN); advtrain: no G (adversarial "
                     "training).", METHODS)
    loss_variant: str = _f("split", "split (eq. 9: D's class loss on reals only) or acgan (eq. 8).", VARIANTS)
    gan_loss: str = _f("bce", "bce (the paper's log-likelihood, non-saturating G) or hinge.", GAN_LOSSES)
    loss_weights: str = _f("authors", "Loss term weights: authors (D 0.5 S_real + 0.5 C_real + 1.0 S_fake; G 0.5/0.5), "
                           "paper (the unweighted sums of eq. 8/9), sngan (adversarial terms only).", WEIGHTINGS)
    augment: str = _f("auto", "Training and fine-tuning augmentation. auto: the authors' for the dataset (cifar10 "
                      "crop_flip, imagenet143 resized_crop_flip, folder/npz crop_flip; none for the digits demo).",
                      ("auto",) + AUGMENTATIONS)
    dequantize: bool = _f(True, "Add U(0, 1/128) noise to real images in the GAN/adversarial training stage "
                          "(SN-GAN and the authors); never in fine-tuning or evaluation.")
    attack_eps: float = _f(0.0625, "PGD l_inf radius during training, in [-1, 1] units (8/255 on [0,1] = 0.0627).")
    attack_steps: int = _f(5, "PGD steps during training and fine-tuning.")
    attack_step_size: float = _f(0.0, "PGD step size in training; 0: 2.5*eps/steps. The authors used 0.0078.")
    attack_random_start: bool = _f(False, "Start PGD at a random point in the ball (the authors: no).")
    n_dis: int = _f(1, "D updates per G update (each on its own real batch).")
    batch_size: int = _f(64, "Global batch size of one D update.")
    lr_g: float = _f(4e-4, "Generator Adam learning rate (the demo's; the authors: 2e-4, set by configs/).")
    lr_d: float = _f(1e-3, "Discriminator Adam learning rate (the demo's; the authors: 2e-4, set by configs/).")
    optimizer: str = _f("adam", "adam (betas 0, 0.9) or sgd (with --momentum; Madry's recipe), for G and D.",
                        OPTIMIZERS)
    adam_beta1: float = _f(0.0, "Adam beta1 (the authors' and SN-GAN's GAN setting: 0).")
    adam_beta2: float = _f(0.9, "Adam beta2 (the authors' and SN-GAN's GAN setting: 0.9).")
    adam_epsilon: float = _f(1e-8, "Adam epsilon (PyTorch's default, as the authors).")
    momentum: float = _f(0.9, "SGD momentum for --optimizer=sgd.")
    weight_decay: float = _f(0.0, "L2 weight decay on D's kernels, added to the loss (Madry: 2e-4).")
    lr_schedule: str = _f("constant", "constant; linear (to 0 at the end, from --lr_decay_start: SN-GAN); halve "
                          "(every --halve_every iterations: the authors); step (x --lr_step_factor at each of "
                          "--lr_boundaries: Madry).", LR_SCHEDULES)
    halve_every: int = _f(0, "Iterations between halvings for --lr_schedule=halve.")
    lr_decay_start: int = _f(0, "Iterations before the linear decay starts (--lr_schedule=linear).")
    lr_boundaries: str = _f("", "Comma-separated iteration counts where --lr_schedule=step multiplies the lr.")
    lr_step_factor: float = _f(0.1, "Factor applied at each --lr_boundaries count.")
    reset_adam: bool = _f(False, "Restart Adam's moments where the halve/step schedule lowers the lr (the "
                          "authors re-create Adam there).")
    ema_decay: float = _f(0.0, "Generator weight EMA decay for sampling and export; 0: off.")
    val_examples: int = _f(0, "Hold out N training examples (a fixed, seeded choice) as a validation split that training "
                           "and fine-tuning never see; the in-training robust-accuracy monitor then reads it instead "
                           "of the test split (choosing a checkpoint by test robust accuracy overfits the test set: "
                           "Rice et al. 2020). 0: no validation split; the monitor reads the test split.")
    validation_fraction: float = _f(0.0, "Like --val_examples, as a fraction of the training split (0.1: a tenth, "
                                    "rounded to the closest example); give one of the two. 0: off.")
    finetune_weights: str = _f("latest", "Which fine-tuned weights evaluation and export use: latest, or best (the "
                               "highest validation robust accuracy seen while fine-tuning; needs --val_examples or "
                               "--validation_fraction).",
                               ("latest", "best"))
    reuse_fake: bool = _f(False, "The G update reuses the last D update's fake batch and its generator forward pass "
                          "instead of drawing a new one (a departure from the authors' code, which draws a new "
                          "batch; saves one generator forward pass per iteration, see docs/PERFORMANCE.md).")
    train_iterations: int = _f(600, "Training length in iterations; one iteration = --n_dis D updates + one G update. "
                               "Every training count (--checkpoint_every, --log_every, --sample_every, "
                               "--halve_every, --lr_decay_start, --lr_boundaries) is in iterations.")
    # fine-tuning (eq. 10)
    finetune_steps: int = _f(200, "Fine-tuning steps (eq. 10); 0 skips fine-tuning.")
    finetune_lambda: float = _f(0.3, "Weight of the fake-image term in eq. 10.")
    finetune_lr: float = _f(1e-3, "Fine-tuning Adam learning rate (divided by 10 at 1/3, 2/3 and 5/6).")
    finetune_eps: float = _f(-1.0, "PGD radius during fine-tuning; -1: --attack_eps.")
    finetune_batch_size: int = _f(0, "Fine-tuning batch size (the authors: 128 after training at 64); 0: --batch_size.")
    finetune_reset_adam: bool = _f(True, "Restart Adam at each fine-tuning stage (the authors re-create it).")
    g_statistics: str = _f("batch", "How G's batch norm normalises when G is sampled for eq. 10's fakes and for quality "
                           "scores: batch (each sample batch by its own statistics, the authors': their G is never "
                           "in eval mode) or moving (inference mode, what exports serve). Moving averages never "
                           "change either way.", G_STATISTICS)
    # evaluation
    eval_eps: str = _f("", "Comma-separated eps grid for evaluation, in [-1, 1] units (0.0627), or as fractions on "
                       "the [0, 1] scale (8/255, doubled); empty: the paper's grid for the dataset.")
    eval_examples: int = _f(0, "Test examples to evaluate; 0: the whole test split.")
    # run
    seed: int = _f(0, "Seed for weights, data order and noise.")
    deterministic: bool = _f(False, "Seeds plus TF op determinism: a killed-and-resumed run ends bit-identical.")
    logdir: str = _f("runs/robgan", "Run directory: checkpoints, TensorBoard logs, evaluation, exports.")
    resume_from: str = _f("", "Restore exactly this checkpoint of the run instead of the latest: a training one "
                          "(LOGDIR/checkpoints/ckpt-200, checkpoints/kept/ckpt-N) or a fine-tuning one "
                          "(finetune_checkpoints/ckpt-N); a missing path or another run's checkpoint is refused. "
                          "With robgan-finetune, a training checkpoint is the one fine-tuned (recorded in "
                          "finetune_checkpoints/base.json). Not remembered by the run.")
    checkpoint_every: int = _f(100, "Save a checkpoint every N training iterations.")
    keep_checkpoints: int = _f(3, "How many recent checkpoints to keep.")
    keep_checkpoint_every: int = _f(0, "Also keep the training checkpoint of every N-th iteration for good, in "
                                    "LOGDIR/checkpoints/kept (never rotated; what evaluate --all_checkpoints "
                                    "scores). 0: keep only the --keep_checkpoints latest.")
    log_every: int = _f(25, "Log scalars and progress every N iterations.")
    profile_steps: str = _f("", "A,B: trace training iterations A..B with the TensorFlow profiler into LOGDIR/train "
                            "(TensorBoard's Profile tab; needs tensorboard-plugin-profile, the [profile] extra). The "
                            "attack, D updates and G update are named regions. Empty: no profiling.")
    sample_every: int = _f(200, "Log a sample grid and the gap/ scalars every N iterations and at the last one; 0: "
                           "neither (no in-training monitoring, e.g. for timing runs; fine-tuning's monitor is "
                           "unaffected).")
    monitor_examples: int = _f(256, "Examples per split read by the in-training monitors: the gap/ scalars (robust "
                               "accuracy and LLV, train vs held-out) at every sample grid, and fine-tuning's "
                               "held-out clean and robust accuracy (what --finetune_weights=best selects by).")
    quality_every: int = _f(0, "Score the generator (its EMA copy when on) every N training iterations: IS, FID, KID "
                            "and label accuracy under --quality_backend, to TensorBoard (quality/...) and "
                            "LOGDIR/eval/quality_curve.jsonl with D updates and training seconds (quality vs time, "
                            "the paper's Fig. 8). 0: off.")
    quality_backend: str = _f("reference", "Backend of --quality_every: reference (a classifier trained once on the "
                              "train split, --quality_weights; comparable across runs scored with the same file) or "
                              "classifier (the run's own D, which changes as it trains: a sanity check only).",
                              ("reference", "classifier"))
    quality_weights: str = _f("", "The reference classifier (.keras from robgan-train-reference) for --quality_every.")
    quality_samples: int = _f(1000, "Generated images per --quality_every score (published numbers use 50,000).")
    strategy: str = _f("auto", "auto (mirrored on >1 GPU or --cpu_replicas>1), default, mirrored, multi_worker.",
                       STRATEGIES)
    cpu_replicas: int = _f(1, "Split the CPU into N logical devices (to exercise distribution without GPUs).")
    precision: str = _f("float32", "float32; mixed_bfloat16 (compute in bfloat16, no loss scaling); mixed_float16 "
                        "(float16, both optimizers loss-scaled); auto: mixed_bfloat16 where the hardware computes it "
                        "natively (CPU with AVX-512-BF16 or AMX, GPU >= 8.0, TPU), else float32. Variables, BN "
                        "statistics, SN, logits, losses and the attack's images stay float32; evaluation and exports "
                        "run float32 copies. float32 <-> mixed_bfloat16 may change on resume.", PRECISIONS)
    jit_compile: bool = _f(False, "XLA-compile the train step (one replica only; slower than plain TF on CPU).")

    def validate(self):
        """Checks every value and combination; raises ConfigError naming the flag and the fix."""
        self._checked()
        return self

    def _checked(self):
        """The one validation pass; returns the library configs it built (TrainConfig, FinetuneConfig or None)."""
        self._check_values()
        self._check_networks()
        self._check_counts()
        self._check_splits_and_scores()
        return self.train_config(), self.finetune_config()  # the dataclasses' own rules, naming these flags

    def resolve(self):
        """The RunSpec these flags ask for: validated, checked against the run saved in --logdir (if any), every
        sentinel resolved."""
        return self._resolve(saved_settings(self.logdir))

    def _resolve(self, saved):
        """resolve() with the run's saved settings already read (None: a new run)."""
        train, finetune = self._checked()
        changes = self.check_compatible(saved)
        return RunSpec(
            logdir=self.logdir, dataset=self.dataset, data_dir=self.data_dir or None, download=self.download,
            resolution=self.resolution or None, image_resolution=self.image_resolution,
            load_resolution=self.load_resolution, augmentation=self.augmentation, dequantize=self.dequantize,
            val_examples=self.val_examples, validation_fraction=self.validation_fraction,
            networks=self.networks(), train=train, finetune=finetune, finetune_batch=self.finetune_batch,
            finetune_weights=self.finetune_weights, g_statistics=self.g_statistics, batch_size=self.batch_size,
            seed=self.seed, checkpoint_every=self.checkpoint_every, keep_checkpoints=self.keep_checkpoints,
            keep_checkpoint_every=self.keep_checkpoint_every, log_every=self.log_every,
            sample_every=self.sample_every, monitor_examples=self.monitor_examples, profile=self.profile_range(),
            quality_every=self.quality_every, quality_backend=self.quality_backend,
            quality_weights=self.quality_weights or None, quality_samples=self.quality_samples,
            eval_eps=self.eps_grid(), eval_examples=self.eval_examples or None, strategy=self.strategy,
            cpu_replicas=self.cpu_replicas, precision=self.precision, policy=self.policy,
            deterministic=self.deterministic, jit_compile=self.jit_compile, resume_from=self.resume_from or None,
            settings=self.to_dict(), changes=changes)

    def _check_values(self):
        """Finite numbers, a logdir, enum choices, a known dataset and resolution."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type in (float, "float") and not math.isfinite(value):
                raise ConfigError(f"--{f.name} must be a finite number, got {value}.")
        if not self.logdir.strip():
            raise ConfigError("--logdir is empty; name the run's folder (e.g. --logdir=runs/c10).")
        for name, field in self.__dataclass_fields__.items():
            choices = field.metadata.get("choices")
            if choices and getattr(self, name) not in choices:
                raise ConfigError(f"--{name}={getattr(self, name)!r} is not one of {list(choices)}.")
        try:
            data_lib.check_name(self.dataset)
        except data_lib.DataError as e:
            raise ConfigError(f"--dataset: {e}") from None
        if self.resolution not in (0, 16, 32, 64, 128):
            raise ConfigError(f"--resolution must be 16 (tiny preset only), 32, 64 or 128 (or 0 for the dataset's own), "
                             f"got {self.resolution}.")

    def _check_networks(self):
        for flag, preset in (("arch", self.arch), ("d_arch", self.discriminator_preset)):
            try:
                get_spec(preset, self.image_resolution)
            except ValueError as e:
                raise ConfigError(f"--{flag}={preset} --resolution={self.image_resolution}: {e}") from None
        if self.discriminator_preset == "preact_resnet18" and (self.d_norm == "batch" or self.d_bias == "on"):
            raise ConfigError("--d_arch=preact_resnet18 has no BatchNorm and no conv biases (the authors' "
                             "PreActResNet18); drop --d_norm=batch / --d_bias=on.")
        if self.d_head == "projection" and self.method == "advtrain":
            raise ConfigError("--d_head=projection needs labels for its logit and trains as a GAN; advtrain "
                             "trains a classifier: use --d_head=acgan.")

    def _check_counts(self):
        # Flags the library does not see as such (lengths, cadences, the batch); every rule of a training or
        # fine-tuning setting is the config dataclasses' own, checked below by building them.
        positive = ("batch_size", "train_iterations", "checkpoint_every", "keep_checkpoints", "log_every",
                    "monitor_examples", "cpu_replicas", "z_dim")
        if self.finetune_batch_size < 0 or self.finetune_batch_size % self.cpu_replicas:
            raise ConfigError(f"--finetune_batch_size={self.finetune_batch_size} must be >= 0 (0: --batch_size) and "
                             f"divide evenly over --cpu_replicas={self.cpu_replicas}.")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"--{name} must be > 0, got {getattr(self, name)}.")
        for name in ("finetune_steps", "eval_examples", "keep_checkpoint_every", "sample_every"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name} must be >= 0, got {getattr(self, name)}.")
        if self.batch_size % self.cpu_replicas:
            raise ConfigError(f"--batch_size={self.batch_size} must divide evenly over --cpu_replicas={self.cpu_replicas}.")
        if self.jit_compile and (self.cpu_replicas > 1 or self.strategy in ("mirrored", "multi_worker")):
            raise ConfigError("--jit_compile needs a single replica; drop it or use --strategy=default.")

    def _check_splits_and_scores(self):
        self.eps_grid()  # parses
        self.profile_range()
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ConfigError(f"--validation_fraction must be in [0, 1), got {self.validation_fraction}.")
        if self.validation_fraction and self.val_examples:
            raise ConfigError("--validation_fraction and --val_examples both size the validation split; give one.")
        if self.finetune_weights == "best" and not (self.val_examples or self.validation_fraction):
            raise ConfigError("--finetune_weights=best picks by validation robust accuracy: it needs --val_examples=N "
                              "or --validation_fraction=F.")
        if self.quality_every < 0 or self.quality_samples < 10:
            raise ConfigError("--quality_every must be >= 0 and --quality_samples >= 10.")
        if self.quality_every and self.method == "advtrain":
            raise ConfigError("--quality_every scores a generator; --method=advtrain trains none.")
        if self.quality_every and self.quality_backend == "reference" and not os.path.isfile(self.quality_weights):
            raise ConfigError(f"--quality_every with --quality_backend=reference needs --quality_weights=FILE.keras "
                              f"(got {self.quality_weights!r}); train one with robgan-train-reference, or use "
                              "--quality_backend=classifier.")

    def networks(self):
        """The networks these flags ask for (spec.Networks: `.build(num_classes, resolution, channels)`)."""
        tri = {"preset": None, "on": True, "off": False}
        return Networks(arch=self.arch, d_preset=self.discriminator_preset, d_head=self.d_head,
                        d_spectral_norm=tri[self.d_spectral_norm],
                        d_norm={"preset": "preset", "batch": "batch", "none": None}[self.d_norm],
                        d_bias=tri[self.d_bias], z_dim=self.z_dim, with_generator=self.method != "advtrain")

    def profile_range(self):
        """(first, last) iteration to profile, or None."""
        if not self.profile_steps.strip():
            return None
        try:
            first, last = (int(v) for v in self.profile_steps.split(","))
        except ValueError:
            raise ConfigError(f"--profile_steps must be two iterations A,B, got {self.profile_steps!r}.") from None
        if not 1 <= first <= last:
            raise ConfigError(f"--profile_steps={self.profile_steps}: need 1 <= A <= B.")
        return first, last

    def eps_grid(self):
        return parse_eps_grid(self.eval_eps, self.dataset, "eval_eps")

    @property
    def iterations(self):
        """Training iterations (one = n_dis D updates + one G update)."""
        return self.train_iterations

    # -- the flag layer's translations: every sentinel of a flag is resolved here and nowhere else
    # (0 -> automatic / off / the other flag's value), and the library's configs are built from the result.
    # A rule the configs break is reported with the flags that set the fields at fault.
    _TRAIN_FLAG_OF = {"train_steps": "train_iterations", "beta1": "adam_beta1", "beta2": "adam_beta2",
                      "attack.eps": "attack_eps", "attack.steps": "attack_steps",
                      "attack.step_size": "attack_step_size", "attack.loss": "d_head",
                      "attack.random_start": "attack_random_start"}
    _FINETUNE_FLAG_OF = {"steps": "finetune_steps", "lam": "finetune_lambda", "lr": "finetune_lr",
                         "attack.eps": "finetune_eps", "attack.steps": "attack_steps"}

    @property
    def attack_step_size_or_auto(self):
        """--attack_step_size, 0 meaning automatic (None: 2.5 * eps / steps)."""
        return self.attack_step_size or None

    @property
    def ema_decay_or_off(self):
        """--ema_decay, 0 meaning off (None)."""
        return self.ema_decay or None

    @property
    def finetune_attack_eps(self):
        """--finetune_eps, -1 meaning --attack_eps."""
        return self.attack_eps if self.finetune_eps == -1 else self.finetune_eps

    @property
    def finetune_batch(self):
        """--finetune_batch_size, 0 meaning --batch_size."""
        return self.finetune_batch_size or self.batch_size

    @property
    def image_resolution(self):
        """--resolution, 0 meaning the dataset's own (digits: 16 px for the tiny preset, else 32)."""
        if self.resolution:
            return self.resolution
        native = NATIVE_RESOLUTION.get(self.dataset, 32)
        if native == 16 and not all((p, 16) in PRESETS for p in (self.arch, self.discriminator_preset)):
            return 32
        return native

    @property
    def load_resolution(self):
        """The size to load images at: None keeps the dataset's own where this package does not know it (folder,
        npz, tfds sets are loaded at their native size)."""
        if self.resolution or self.dataset in NATIVE_RESOLUTION:
            return self.image_resolution
        return None

    @property
    def discriminator_preset(self):
        """--d_arch, "same" meaning --arch."""
        return self.arch if self.d_arch == "same" else self.d_arch

    @property
    def augmentation(self):
        """--augment, "auto" meaning the authors' choice for the dataset."""
        return auto_augment(self.dataset) if self.augment == "auto" else self.augment

    @staticmethod
    def _built(build, flag_of, prefix=""):
        try:
            return build()
        except SettingError as e:
            names = sorted({flag_of.get(prefix + f, (prefix + f).split(".")[-1]) for f in e.fields})
            raise ConfigError(f"{' '.join('--' + n for n in names)}: {e}") from None

    def attack_config(self):
        two_head = self.method != "advtrain" and self.d_head == "acgan"
        return self._built(lambda: AttackConfig(
            eps=self.attack_eps, steps=self.attack_steps, step_size=self.attack_step_size_or_auto,
            random_start=self.attack_random_start, loss="two_head" if two_head else "ce"),
            self._TRAIN_FLAG_OF, "attack.")

    def lr_boundary_list(self):
        if not self.lr_boundaries.strip():
            return ()
        try:
            return tuple(int(b) for b in self.lr_boundaries.split(","))
        except ValueError:
            raise ConfigError(f"--lr_boundaries must be comma-separated integers, got {self.lr_boundaries!r}.") from None

    def train_config(self):
        # The library counts D updates; the flags count iterations of n_dis D updates each.
        d = self.n_dis
        attack = self.attack_config()
        return self._built(lambda: TrainConfig(
            method=self.method, n_dis=self.n_dis, train_steps=self.train_iterations * d, lr_g=self.lr_g,
            lr_d=self.lr_d, beta1=self.adam_beta1, beta2=self.adam_beta2, adam_epsilon=self.adam_epsilon,
            optimizer=self.optimizer, momentum=self.momentum, weight_decay=self.weight_decay,
            lr_schedule=self.lr_schedule, halve_every=self.halve_every * d, lr_decay_start=self.lr_decay_start * d,
            lr_boundaries=tuple(b * d for b in self.lr_boundary_list()), lr_step_factor=self.lr_step_factor,
            reset_adam=self.reset_adam, ema_decay=self.ema_decay_or_off, reuse_fake=self.reuse_fake,
            loss=LossConfig.named(self.loss_weights, gan_loss=self.gan_loss, variant=self.loss_variant),
            attack=attack, precision=self.policy, seed=self.seed), self._TRAIN_FLAG_OF)

    @property
    def policy(self):
        """The Keras dtype policy --precision resolves to on this machine (auto decided here)."""
        return precision_lib.resolve(self.precision)[0]

    def finetune_config(self):
        """The FinetuneConfig of eq. 10; None when --finetune_steps=0 (no fine-tuning)."""
        if not self.finetune_steps:
            return None
        attack = self._built(lambda: AttackConfig(eps=self.finetune_attack_eps, steps=self.attack_steps, loss="ce"),
                             self._FINETUNE_FLAG_OF, "attack.")
        return self._built(lambda: FinetuneConfig(
            steps=self.finetune_steps, lam=self.finetune_lambda, lr=self.finetune_lr, attack=attack,
            adam_epsilon=self.adam_epsilon, reset_adam=self.finetune_reset_adam,
            precision=self.policy, g_statistics=self.g_statistics, seed=self.seed + 1), self._FINETUNE_FLAG_OF)

    # -- persistence
    # Changing these under an existing run would silently mix two experiments; everything else (learning
    # rates and schedules, lengths, logging cadence, evaluation, distribution) may change when a run resumes,
    # and each change is recorded in LOGDIR/history.jsonl.
    IDENTITY = ("dataset", "resolution", "arch", "d_arch", "d_head", "d_spectral_norm", "d_norm", "d_bias", "z_dim",
                "method", "loss_variant", "gan_loss", "loss_weights", "augment", "dequantize", "attack_eps",
                "attack_steps", "attack_step_size", "attack_random_start", "n_dis", "batch_size", "optimizer",
                "adam_beta1", "adam_beta2", "adam_epsilon", "momentum", "weight_decay", "ema_decay", "reuse_fake", "val_examples",
                "validation_fraction", "seed",
                "finetune_lambda", "finetune_eps", "finetune_batch_size")
    # Run-time requests, not settings of the run: never taken from config.json (resume_from is not even saved;
    # logdir is saved for the record, but the folder a run is opened from is where it is now).
    NOT_STICKY = ("resume_from", "logdir")

    def to_dict(self):
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "resume_from"}

    @staticmethod
    def upgrade(d):
        """A config.json written by 0.1 / early 0.2 read with today's names: mode -> method, and train_steps (D
        updates) -> train_iterations, and mixed_precision (before 0.9) -> precision. (The flags --mode and
        --train_steps are gone; old runs still open.) Runs saved before g_statistics existed sampled G with moving
        statistics and keep doing so."""
        d = dict(d)
        d.setdefault("g_statistics", "moving")  # saved before the flag: G was sampled in inference mode
        if "mixed_precision" in d and "precision" not in d:  # before 0.9
            d["precision"] = "mixed_float16" if d.pop("mixed_precision") else "float32"
        if "mode" in d and "method" not in d:
            d["method"] = d.pop("mode")
        if "train_steps" in d and "train_iterations" not in d:
            d["train_iterations"] = -(-int(d.pop("train_steps")) // int(d.get("n_dis", 1)))
        return d

    @classmethod
    def from_dict(cls, d):
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in cls.upgrade(d).items() if k in known})

    @classmethod
    def of_run(cls, logdir):
        """The flags of the run in `logdir` (its config.json), with logdir where the run is now."""
        return cls.from_dict({**read_saved(RunDir(logdir).config), "logdir": logdir})

    def check_compatible(self, saved):
        """Compares with the run's saved settings (`saved`: its config.json as read_saved reads it, None when the
        folder holds no config.json): raises on a changed identity setting, and returns {flag: [old, new]} for
        the other settings that changed (allowed; Run records them in history.jsonl)."""
        if saved is None:
            if RunDir(self.logdir).has_checkpoints():
                raise ConfigError(
                    f"{self.logdir} holds checkpoints but no config.json, so the settings they were "
                    "trained with are unknown (resuming under other settings would mix two experiments). Restore "
                    "config.json from a copy (an export's manifest.json has them under training_flags), or use a "
                    "new --logdir.")
            return {}
        old = self.upgrade(saved)
        diffs = [f"--{k}: run has {old.get(k)!r}, now {getattr(self, k)!r}"
                 for k in self.IDENTITY if k in old and old[k] != getattr(self, k)]
        # float16's loss-scaled optimizers checkpoint differently; float32 and bfloat16 runs resume in either
        if (old.get("precision") == "mixed_float16") != (self.precision == "mixed_float16"):
            diffs.append(f"--precision: run has {old.get('precision')!r}, now {self.precision!r} (a mixed_float16 "
                         "run's optimizers are loss-scaled: it resumes in mixed_float16 only)")
        if diffs:
            raise ConfigError(f"--logdir {self.logdir} holds a run with other settings ("
                             + "; ".join(diffs) + "). Use a new --logdir, or the run's own settings. (Learning "
                             "rates, schedules, lengths and logging may change on resume; these may not.)")
        return {k: [old[k], v] for k, v in self.to_dict().items() if k in old and old[k] != v and k != "logdir"}



def saved_settings(logdir):
    """The run's config.json in `logdir` as read_saved reads it; None when there is none (a new run)."""
    path = RunDir(logdir).config
    return read_saved(path) if os.path.exists(path) else None


def resolve_run(logdir, overrides=None):
    """The RunSpec a command runs with: the run's config.json when `logdir` holds one (else the defaults), with
    `overrides` (the flags given) on top, NOT_STICKY fields excepted; read once, checked once."""
    fields = {f.name: f.default for f in dataclasses.fields(ExperimentConfig)}
    saved = saved_settings(logdir)
    values = dict(fields)
    if saved is not None:
        values.update({k: v for k, v in ExperimentConfig.upgrade(saved).items()
                       if k in fields and k not in ExperimentConfig.NOT_STICKY})
    values.update(overrides or {})
    values["logdir"] = logdir
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"unknown setting(s) {unknown}; see --help for the flags.")
    return ExperimentConfig(**values)._resolve(saved)


def spec_of_run(logdir):
    """The RunSpec of the run saved in `logdir`, as saved (what evaluate, export and the loaders read)."""
    RunDir(logdir).require_run()
    saved = saved_settings(logdir)
    return ExperimentConfig.from_dict({**saved, "logdir": logdir})._resolve(saved)


def read_saved(path):
    """A run's config.json as a dict, checked: valid JSON, an object, and every known setting of its field's type
    (an int where a float is expected is fine). Anything else is a ConfigError naming the file and the setting."""
    from robgan_tf.storage import read_json_object

    values = read_json_object(path, ConfigError, "it holds the run's settings: restore it from a copy (an export's "
                              "manifest.json has them under training_flags).")
    kinds = {"bool": (bool,), "int": (int,), "float": (int, float), "str": (str,)}
    for f in dataclasses.fields(ExperimentConfig):
        if f.name in values:
            want = kinds[f.type if isinstance(f.type, str) else f.type.__name__]
            value = values[f.name]
            if not isinstance(value, want) or (isinstance(value, bool) and bool not in want):
                raise ConfigError(f"{path}: setting {f.name!r} is {value!r} ({type(value).__name__}), not a "
                                  f"{want[-1].__name__}; correct it (see --help for --{f.name}).")
    return values


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    """Every flag of robgan-evaluate (name, type, default and help), as ExperimentConfig is training's. Values are
    checked by the tool; the shared concepts keep training's names where they mean the same (--dataset,
    --data_dir, --precision, --g_statistics)."""

    model: str = _f("runs/robgan", "A run's --logdir, or an export: its directory (RUN/export), the classifier's "
                                   "folder (RUN/export/classifier: the highest version) or one version folder. "
                                   "Default: the demo pipeline's run.")
    dataset: str = _f("", "Dataset; default: the one the model was trained on (its manifest/config).")
    data_dir: str = _f("", "Where the dataset lives; default: the model's.")
    stage: str = _f("final", "Which classifier of a run: final (the fine-tuned one when the run fine-tunes, as its "
                             "--finetune_weights says; else the trained D's) or trained (the latest training "
                             "checkpoint's D, before fine-tuning: what eq. 10 adds is final minus trained). An "
                             "export holds one classifier: final only.", ("final", "trained"))
    split: str = _f("test", "Split to evaluate: test or train, or a slice in tensorflow-datasets' notation "
                            "(test[:1000], train[90%:]).")
    eps: str = _f("", "Comma-separated eps: plain numbers are in the images' [-1, 1] units (0.0627); fractions are "
                      "on the [0, 1] pixel scale papers use (8/255 = 0.0627 here). Both are printed. Default: the "
                      "paper's grid for the dataset.")
    protocol: str = _f("paper", "Comma-separated attack protocols (see robgan_tf.robustness): paper (the paper's "
                                "PGD, comparable with Table 1), strong (PGD with restarts, margin and targeted "
                                "losses), autoattack (AutoAttack's standard l_inf version: the number to quote; "
                                "minutes to hours), both (= paper,strong); none: no robustness table (e.g. only "
                                "--quality).")
    attack_seed: int = _f(0, "Seed of AutoAttack's random starts and Square's random search.")
    progress: bool = _f(True, "Print a progress line (examples left, elapsed, ETA) on stderr.")
    num_examples: int = _f(0, "Examples to evaluate; 0: the whole split.")
    batch_size: int = _f(200, "Evaluation batch size.")
    precision: str = _f("float32", "What a run's networks compute in while evaluated: float32 (the model that is "
                                   "served) or mixed_bfloat16 (e.g. to measure what bfloat16 changes in the attack)."
                                   " Exports compute in float32.", ("float32", "mixed_bfloat16"))
    json_out: str = _f("", "Write the results JSON here (default: print only).")
    analysis: str = _f("none", "gap: the paper's Fig. 2 analysis -- accuracy under PGD on train vs test over --eps, "
                               "and the local Lipschitz value ||d loss/d x||_2 on both splits; writes --plot_out "
                               "and, with --json_out, the numbers.", ("none", "gap"))
    plot_out: str = _f("gap.png", "PNG path of the gap plot (--analysis=gap).")
    quality: str = _f("none", "Also score the generator (of the run, or the export/generator beside an exported "
                              "classifier): Inception Score, FID and KID against --fid_ref_split, with this backend,"
                              " plus the per-class label accuracy of generated images. tf_inception_2015 gives "
                              "numbers comparable with SN-GAN's (TF-Inception) published ones, not with the Rob-GAN "
                              "paper's (torchvision Inception); reference (--reference_classifier, from "
                              "robgan-train-reference) works offline and compares runs scored with the same file; "
                              "classifier (the run's own) is a sanity check only; keras_inception_v3 is a proxy.",
                              ("none", "classifier", "reference", "keras_inception_v3", "tf_inception_2015"))
    reference_classifier: str = _f("", "The .keras file of --quality=reference (robgan-train-reference).")
    inception_weights: str = _f("", "Local weights for the Inception backends (nothing is downloaded): "
                                    "classify_image_graph_def.pb or inception-2015-12-05.tgz for "
                                    "--quality=tf_inception_2015; inception_v3_weights_tf_dim_ordering_tf_kernels.h5"
                                    " for --quality=keras_inception_v3.")
    inception_sha256: str = _f("", "Expected sha256 of the weights file (--inception_weights or "
                                   "--reference_classifier; checked when given; the sha256 actually read is always "
                                   "recorded in the JSON).")
    num_samples: int = _f(5000, "Generated images for --quality.")
    g_statistics: str = _f("run", "How the generator's batch norm normalises its samples for --quality: batch (each "
                                  "sample batch by its own statistics, the authors'), moving (inference mode), or "
                                  "run: the run's --g_statistics. An export samples with moving statistics only.",
                                  ("run", "batch", "moving"))
    fid_ref_split: str = _f("train", "The real split FID and KID compare with.", ("train", "test"))
    fid_stats: str = _f("", "Cache of the reference split's feature statistics for --quality (.npz, reused when its "
                            "metadata match); default: RUN/eval/ or the export directory, "
                            "fid_stats_<backend>_<dataset>_<split>.npz.")
    all_checkpoints: bool = _f(False, "Score every training checkpoint a run holds (those kept by "
                                      "--keep_checkpoint_every and the latest ones) with --quality (the generator) "
                                      "and --protocol (the trained D's classifier, on --num_examples) and write the "
                                      "curve: --json_out (default RUN/eval/checkpoint_curve.json) and a PNG beside "
                                      "it, each metric against D updates and training seconds.")
    save_examples: str = _f("", "Write an .npz with the clean images x, labels y and adversarial images.")
