"""The Rob-GAN authors' PyTorch checkpoints as this package's Keras models.

    g = from_authors_checkpoint("gen_epoch_199.pth", "generator", resolution=32, num_classes=10)
    d = from_authors_checkpoint("dis_epoch_199.pth", "discriminator", resolution=32, num_classes=10)

`network` is "generator" or "discriminator" (their train.py's --model resnet_32 / resnet_64 / resnet_128, i.e. the
`authors` preset at 32 / 64 / 128 px) or "preact_resnet18" (the classifier of their train_cifar.py and
acc_under_attack.py, 32 px). The file is a `torch.save(net.state_dict(), path)`; torch is not needed to read it
and nothing in it is run (torch_format.py). DataParallel's "module." prefix is accepted.

docs/FIDELITY.md ("Importing the authors' checkpoints") lists how each of their tensors maps onto ours and the
measured equality of outputs, attacks and losses on the same weights.
"""
from __future__ import annotations

import numpy as np

from robgan_tf.models import Discriminator, Generator
from robgan_tf.torch_format import TorchCheckpointError, read_state_dict

NETWORKS = ("generator", "discriminator", "preact_resnet18")


def _conv(w):  # torch [out, in, kh, kw] -> Keras [kh, kw, in, out]
    return np.transpose(w, (2, 3, 1, 0))


def _dense(w):  # torch [out, in] -> Keras [in, out]
    return np.transpose(w)


_dense.transposes = True


def _same(w):
    return w


def _stem_kernel(channels):
    """torch's l1 output o = c * 16 + h * 4 + w is viewed NCHW as [C, 4, 4]; ours is reshaped NHWC as
    [4, 4, C], i.e. o' = (h * 4 + w) * C + c: the columns are permuted, then transposed."""
    def convert(w):
        z = w.shape[1]
        return w.reshape(channels, 4, 4, z).transpose(1, 2, 0, 3).reshape(16 * channels, z).T
    convert.transposes = True
    return convert


def _stem_bias(channels):
    return lambda b: b.reshape(channels, 4, 4).transpose(1, 2, 0).reshape(-1)


def _torch_shape(convert, keras_shape):
    """The shape a torch tensor must have to become a Keras variable of keras_shape."""
    if convert is _conv:
        kh, kw, i, o = keras_shape
        return (o, i, kh, kw)
    if getattr(convert, "transposes", False):
        return tuple(reversed(keras_shape))
    return tuple(keras_shape)


def _conv_entries(prefix, layer):
    out = [(f"{prefix}.weight", layer.kernel, _conv)]
    if layer.use_bias:
        out.append((f"{prefix}.bias", layer.bias, _same))
    return out


def _dense_entries(prefix, layer):
    return [(f"{prefix}.weight", layer.kernel, _dense), (f"{prefix}.bias", layer.bias, _same)]


def _bn_entries(prefix, bn):
    return [(f"{prefix}.weight", bn.gamma, _same), (f"{prefix}.bias", bn.beta, _same),
            (f"{prefix}.running_mean", bn.moving_mean, _same), (f"{prefix}.running_var", bn.moving_variance, _same)]


def _cbn_entries(prefix, cbn):
    return [(f"{prefix}.gammas.weight", cbn.gamma, _same), (f"{prefix}.betas.weight", cbn.beta, _same),
            (f"{prefix}.avg_mean", cbn.bn.moving_mean, _same), (f"{prefix}.avg_var", cbn.bn.moving_variance, _same)]


def generator_entries(g):
    """[(torch key, Keras variable, convert)] for the authors' ResNetGenerator (gen_models/resnet_32, resnet_64,
    resnet_small): l1, block2..blockN (c1, c2, c_sc; b1, b2 categorical conditional BN), bN+1, lN+1."""
    ch = g.spec.g_stem
    out = [("l1.weight", g.stem.kernel, _stem_kernel(ch)), ("l1.bias", g.stem.bias, _stem_bias(ch))]
    for i, block in enumerate(g.blocks):
        p = f"block{i + 2}"
        out += _conv_entries(f"{p}.c1", block.conv1) + _conv_entries(f"{p}.c2", block.conv2)
        if block.shortcut is not None:
            out += _conv_entries(f"{p}.c_sc", block.shortcut)
        out += _cbn_entries(f"{p}.b1", block.cbn1) + _cbn_entries(f"{p}.b2", block.cbn2)
    last = len(g.blocks) + 2
    return out + _bn_entries(f"b{last}", g.bn_out) + _conv_entries(f"l{last}", g.conv_out)


def discriminator_entries(d):
    """For the authors' ResNetAC (dis_models/resnet_32 with bn=True, resnet_64, resnet_small): block1..blockN
    (c1, c2, c_sc; b1, b2, b_sc at 32 px), lN+1 (real/fake) and l_y (classes)."""
    out = []
    for i, block in enumerate(d.blocks):
        p = f"block{i + 1}"
        out += _conv_entries(f"{p}.c1", block.conv1) + _conv_entries(f"{p}.c2", block.conv2)
        if block.shortcut is not None:
            out += _conv_entries(f"{p}.c_sc", block.shortcut)
        for name, bn in (("b1", block.bn1), ("b2", block.bn2), ("b_sc", block.bn_sc)):
            if bn is not None:
                out += _bn_entries(f"{p}.{name}", bn)
    return out + _dense_entries(f"l{len(d.blocks) + 1}", d.dense_adv) + _dense_entries("l_y", d.dense_cls)


def preact_entries(d):
    """For the authors' PreActResNet18: conv1, layer1..4 of two PreActBlocks each (conv1, conv2, shortcut.0),
    linear (classes) and discriminate (real/fake)."""
    out = _conv_entries("conv1", d.stem)
    for i, block in enumerate(d.blocks):
        p = f"layer{i // 2 + 1}.{i % 2}"
        out += _conv_entries(f"{p}.conv1", block.conv1) + _conv_entries(f"{p}.conv2", block.conv2)
        if block.shortcut is not None:
            out += _conv_entries(f"{p}.shortcut.0", block.shortcut)
    return out + _dense_entries("linear", d.dense_cls) + _dense_entries("discriminate", d.dense_adv)


def _constant_buffers(state, path):
    """The authors' conditional BN keeps gamma_ = 1 and beta_ = 0 as buffers it never changes; anything else is a
    network this package does not have."""
    for key in [k for k in state if k.endswith((".gamma_", ".beta_"))]:
        want = 1.0 if key.endswith(".gamma_") else 0.0
        if not np.all(state.pop(key) == want):
            raise TorchCheckpointError(f"{path}: {key} is not all {want:g}; the authors' conditional BN keeps it constant, "
                                  "and this package's has no such parameter.")


def _strip_prefix(state):
    if state and all(k.startswith("module.") for k in state):  # saved from torch.nn.DataParallel
        return {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def load_state(model, entries, state, path):
    """Assigns state[key] (converted) to each entry's variable; every mismatch is named."""
    state = _strip_prefix(state)
    _constant_buffers(state, path)
    for key in [k for k in state if k.endswith(".num_batches_tracked")]:  # torch >= 0.4.1 counts BN updates
        del state[key]
    expected = {key for key, _, _ in entries}
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise TorchCheckpointError(
            f"{path} is not this network: " + "; ".join(
                part for part in (f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}" if missing else "",
                                  f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}"
                                  if unexpected else "") if part)
            + ". Check network, resolution and num_classes (and that it is a generator or discriminator file).")
    values = []
    for key, variable, convert in entries:
        want = _torch_shape(convert, tuple(variable.shape))
        found = tuple(state[key].shape)
        if found != want:
            raise TorchCheckpointError(f"{path}: {key} has shape {found}, this network expects {want}. Check resolution "
                                  "and num_classes.")
        values.append((variable, convert(np.asarray(state[key], np.float32))))
    for variable, value in values:  # nothing is assigned unless everything matched
        variable.assign(value)
    return model


def build_network(network, resolution, num_classes):
    """The empty Keras model a checkpoint of `network` loads into (the authors' preset), and its entries."""
    if network == "generator":
        model = Generator(num_classes, resolution, preset="authors")
        model.build_by_calling()
        return model, generator_entries(model)
    if network == "discriminator":
        model = Discriminator(num_classes, resolution, preset="authors")
        model.build_by_calling()
        return model, discriminator_entries(model)
    if network == "preact_resnet18":
        if resolution != 32:
            raise ValueError(f"the authors' PreActResNet18 is a 32 px network, got resolution={resolution}.")
        model = Discriminator(num_classes, 32, preset="preact_resnet18")
        model.build_by_calling()
        return model, preact_entries(model)
    raise ValueError(f"network must be one of {NETWORKS}, got {network!r}.")


def from_authors_checkpoint(path, network, resolution=32, num_classes=10):
    """Our built Keras model (Generator or Discriminator) holding the weights of the authors' state_dict file.

    The discriminator's BatchNorm running statistics and the generator's conditional-BN averages come along;
    evaluation here runs D in inference mode, as the authors' acc_under_attack.py does (dis.eval())."""
    state = read_state_dict(path)
    model, entries = build_network(network, int(resolution), int(num_classes))
    return load_state(model, entries, state, path)


class ImportedRun:
    """What export.export_run reads of a run, for networks imported from the authors' checkpoints: dataset facts,
    the generator (or None), and settings that say where the weights came from (the model card's
    `training_flags` hold `imported_from`)."""

    def __init__(self, info, generator, discriminator, source, out):
        self.info, self.generator, self.discriminator = info, generator, discriminator
        self.source = source
        self.cfg = _ImportedSettings(logdir=out, source=source)

    def sampling_generator(self):
        return self.generator


class _ImportedSettings:
    """The few RunSpec fields an export's model card reads."""

    method = "robgan (imported)"
    ema = False

    def __init__(self, logdir, source):
        self.logdir, self.settings = logdir, {"imported_from": source}


def import_for_export(discriminator_path, generator_path, network, resolution, dataset, class_names, out):
    """(ImportedRun, classifier, provenance) for export.export_run, from the authors' D (or PreActResNet18)
    checkpoint and, optionally, their G checkpoint; `dataset` names the data they were trained on (the model
    card's, which robgan-evaluate reads), `class_names` one name per class."""
    from robgan_tf.data import DatasetInfo
    from robgan_tf.quality import sha256_of

    num_classes = len(class_names)
    d = from_authors_checkpoint(discriminator_path, network, resolution, num_classes)
    g = from_authors_checkpoint(generator_path, "generator", resolution, num_classes) if generator_path else None
    source = {"code": "xuanqing94/RobGAN (PyTorch)", "network": network, "resolution": int(resolution),
              "discriminator": {"path": str(discriminator_path), "sha256": sha256_of(discriminator_path)},
              "generator": ({"path": str(generator_path), "sha256": sha256_of(generator_path)} if generator_path
                            else None)}
    info = DatasetInfo(name=dataset, split="", num_classes=int(num_classes), class_names=tuple(class_names),
                       image_shape=(int(resolution), int(resolution), 3), num_examples=0, flip_ok=True)
    return ImportedRun(info, g, d, source, out), d.classifier(), {"imported_from": source}
