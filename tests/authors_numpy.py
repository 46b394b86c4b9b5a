"""An independent NumPy forward pass of the Rob-GAN authors' networks, read from their state_dict (NCHW, torch's
key names and layouts), written from their module definitions (gen_models/resblocks.py, dis_models/resblocks.py,
layers/cat_cond_bn.py, dis_models/preact_resnet.py at xuanqing94/RobGAN 8a478cf), in float64.

`training=True` normalises with the batch's statistics (biased variance), as torch's batch_norm does in train mode;
otherwise with the running statistics. Nothing here imports robgan_tf.
"""
import numpy as np


def conv(x, w, b=None, stride=1, pad=None):
    """torch.nn.functional.conv2d: x [B, C, H, W], w [O, C, k, k], zero padding `pad` (default k // 2)."""
    k = w.shape[-1]
    pad = k // 2 if pad is None else pad
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    windows = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]
    out = np.einsum("bchwij,ocij->bohw", windows, w, optimize=True)
    return out if b is None else out + b[None, :, None, None]


def linear(x, w, b):
    return x @ w.T + b


def relu(x):
    return np.maximum(x, 0)


def lrelu(x):
    return np.where(x > 0, x, 0.2 * x)


def up(x):  # F.upsample(scale 2), nearest
    return x.repeat(2, axis=2).repeat(2, axis=3)


def pool(x):  # F.avg_pool2d(x, 2)
    b, c, h, w = x.shape
    return x.reshape(b, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5))


def normalise(x, mean, var, eps, training):
    if training:
        mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
    return (x - mean[None, :, None, None]) / np.sqrt(var[None, :, None, None] + eps)


def bn(s, p, x, training, eps=1e-5):  # nn.BatchNorm2d
    h = normalise(x, s[p + ".running_mean"], s[p + ".running_var"], eps, training)
    return h * s[p + ".weight"][None, :, None, None] + s[p + ".bias"][None, :, None, None]


def cbn(s, p, x, y, training):  # CatCondBatchNorm2d: eps 2e-5, gamma_ = 1 and beta_ = 0, per-class gamma and beta
    h = normalise(x, s[p + ".avg_mean"], s[p + ".avg_var"], 2e-5, training)
    return h * s[p + ".gammas.weight"][y][:, :, None, None] + s[p + ".betas.weight"][y][:, :, None, None]


def g_block(s, p, x, y, upsample, training):
    h = relu(cbn(s, p + ".b1", x, y, training))
    h = conv(up(h) if upsample else h, s[p + ".c1.weight"], s[p + ".c1.bias"])
    h = relu(cbn(s, p + ".b2", h, y, training))
    h = conv(h, s[p + ".c2.weight"], s[p + ".c2.bias"])
    if p + ".c_sc.weight" in s:
        x = conv(up(x) if upsample else x, s[p + ".c_sc.weight"], s[p + ".c_sc.bias"], pad=0)
    return h + x


def generator(s, z, y, resolution, training):
    """ResNetGenerator: l1, view as [B, C, 4, 4], blocks (each upsampling, but resnet_32's last), BN, ReLU, conv,
    tanh. Returns NCHW images."""
    blocks = sorted({int(k.split(".")[0][5:]) for k in s if k.startswith("block")})
    last = blocks[-1] + 1
    h = linear(z, s["l1.weight"], s["l1.bias"]).reshape(len(z), -1, 4, 4)
    for i in blocks:
        h = g_block(s, f"block{i}", h, y, not (resolution == 32 and i == blocks[-1]), training)
    h = relu(bn(s, f"b{last}", h, training))
    return np.tanh(conv(h, s[f"l{last}.weight"], s[f"l{last}.bias"]))


def d_block(s, p, x, downsample, optimized, training):
    has_bn = p + ".b1.weight" in s

    def norm(name, h):
        return bn(s, f"{p}.{name}", h, training) if has_bn else h

    h = x if optimized else relu(x)
    h = relu(norm("b1", conv(h, s[p + ".c1.weight"])))
    h = norm("b2", conv(h, s[p + ".c2.weight"]))
    if downsample:
        h = pool(h)
    if optimized:
        sc = norm("b_sc", conv(pool(x), s[p + ".c_sc.weight"], pad=0))
    elif p + ".c_sc.weight" in s:
        sc = norm("b_sc", conv(x, s[p + ".c_sc.weight"], pad=0))
        sc = pool(sc) if downsample else sc
    else:
        sc = x
    return h + sc


def discriminator(s, x, downsample, training):
    """ResNetAC: blocks (the first optimized), ReLU, global sum pooling, (real/fake logit [B], class logits)."""
    n = len(downsample)
    h = x
    for i in range(n):
        h = d_block(s, f"block{i + 1}", h, downsample[i], i == 0, training)
    h = relu(h).sum(axis=(2, 3))
    return linear(h, s[f"l{n + 1}.weight"], s[f"l{n + 1}.bias"])[:, 0], linear(h, s["l_y.weight"], s["l_y.bias"])


def preact_resnet18(s, x):
    """PreActResNet18 (no BN; leaky ReLU 0.2): (real/fake logit, class logits)."""
    h = conv(x, s["conv1.weight"])
    for layer, stride in zip((1, 2, 3, 4), (1, 2, 2, 2)):
        for j in (0, 1):
            p = f"layer{layer}.{j}"
            st = stride if j == 0 else 1
            a = lrelu(h)
            sc = conv(a, s[p + ".shortcut.0.weight"], stride=st, pad=0) if p + ".shortcut.0.weight" in s else h
            h = conv(lrelu(conv(a, s[p + ".conv1.weight"], stride=st, pad=1)), s[p + ".conv2.weight"]) + sc
    h = h.mean(axis=(2, 3))  # avg_pool2d(4) on 4 x 4
    return linear(h, s["discriminate.weight"], s["discriminate.bias"])[:, 0], linear(h, s["linear.weight"],
                                                                                     s["linear.bias"])


# The key names and shapes of each network's state_dict, from their constructors (ch = 64).
def generator_shapes(resolution, num_classes, z=128, ch=64):
    """[(key, shape)] of ResNetGenerator at 32 (resnet_32), 64 (resnet_64) or 128 px (resnet_small)."""
    widths = {32: [16, 8, 4, 2, 1], 64: [16, 8, 4, 2, 1], 128: [8, 8, 4, 4, 2, 1]}[resolution]
    widths = [w * ch for w in widths]
    out = [("l1.weight", (16 * widths[0], z)), ("l1.bias", (16 * widths[0],))]
    for i, (cin, cout) in enumerate(zip(widths, widths[1:])):
        p = f"block{i + 2}"
        out += [(p + ".c1.weight", (cout, cin, 3, 3)), (p + ".c1.bias", (cout,)),
                (p + ".c2.weight", (cout, cout, 3, 3)), (p + ".c2.bias", (cout,))]
        for b, c in (("b1", cin), ("b2", cout)):
            out += [(f"{p}.{b}.avg_mean", (c,)), (f"{p}.{b}.avg_var", (c,)), (f"{p}.{b}.gamma_", (c,)),
                    (f"{p}.{b}.beta_", (c,)), (f"{p}.{b}.gammas.weight", (num_classes, c)),
                    (f"{p}.{b}.betas.weight", (num_classes, c))]
        out += [(p + ".c_sc.weight", (cout, cin, 1, 1)), (p + ".c_sc.bias", (cout,))]  # always learnable here
    last = len(widths) + 1
    out += [(f"b{last}.{k}", (ch,)) for k in ("weight", "bias", "running_mean", "running_var")]
    out += [(f"b{last}.num_batches_tracked", ()), (f"l{last}.weight", (3, ch, 3, 3)), (f"l{last}.bias", (3,))]
    return out


def discriminator_shapes(resolution, num_classes, ch=64):
    """[(key, shape)] of ResNetAC: resnet_32 (bn=True), resnet_64, resnet_small (128 px); and which blocks pool."""
    spec = {32: ([2, 2, 2, 2], [True, True, False, False], True),
            64: ([1, 2, 4, 8, 16], [True] * 5, False),
            128: ([1, 2, 4, 4, 8, 8], [True] * 5 + [False], False)}[resolution]
    widths, downsample, with_bn = [w * ch for w in spec[0]], spec[1], spec[2]
    out, cin = [], 3
    for i, (cout, down) in enumerate(zip(widths, downsample)):
        p, hidden = f"block{i + 1}", (cout if i == 0 else cin)
        out += [(p + ".c1.weight", (hidden, cin, 3, 3)), (p + ".c2.weight", (cout, hidden, 3, 3))]
        shortcut = i == 0 or cin != cout or down
        if shortcut:
            out.append((p + ".c_sc.weight", (cout, cin, 1, 1)))
        if with_bn:
            for b, c in [("b1", hidden), ("b2", cout)] + ([("b_sc", cout)] if shortcut else []):
                out += [(f"{p}.{b}.{k}", (c,)) for k in ("weight", "bias", "running_mean", "running_var")]
                out.append((f"{p}.{b}.num_batches_tracked", ()))
        cin = cout
    n = len(widths) + 1
    out += [(f"l{n}.weight", (1, cin)), (f"l{n}.bias", (1,)), ("l_y.weight", (num_classes, cin)),
            ("l_y.bias", (num_classes,))]
    return out, downsample


def preact_shapes(num_classes=10):
    out, cin = [("conv1.weight", (64, 3, 3, 3))], 64
    for layer, (planes, stride) in enumerate(((64, 1), (128, 2), (256, 2), (512, 2)), 1):
        for j in (0, 1):
            p = f"layer{layer}.{j}"
            st = stride if j == 0 else 1
            out += [(p + ".conv1.weight", (planes, cin, 3, 3)), (p + ".conv2.weight", (planes, planes, 3, 3))]
            if st != 1 or cin != planes:
                out.append((p + ".shortcut.0.weight", (planes, cin, 1, 1)))
            cin = planes
    return out + [("linear.weight", (num_classes, 512)), ("linear.bias", (num_classes,)),
                  ("discriminate.weight", (1, 512)), ("discriminate.bias", (1,))]


def random_state(shapes, rng):
    """Random weights for [(key, shape)]: conv / linear weights at He-like scale, BN scales and variances in
    [0.5, 1.5), shifts and means ~ N(0, 0.1^2), gamma_ = 1 and beta_ = 0 as the authors keep them."""
    s = {}
    for key, shape in shapes:
        if key.endswith("num_batches_tracked"):
            s[key] = np.array(7, np.int64)
        elif key.endswith("gamma_"):
            s[key] = np.ones(shape, np.float32)
        elif key.endswith("beta_"):
            s[key] = np.zeros(shape, np.float32)
        elif key.endswith(("running_var", "avg_var", "gammas.weight")) or (key.endswith(".weight") and len(shape) == 1):
            s[key] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        elif len(shape) >= 2 and not key.endswith("betas.weight"):
            fan_in = int(np.prod(shape[1:]))
            s[key] = (rng.standard_normal(shape) * np.sqrt(1.0 / fan_in)).astype(np.float32)
        else:
            s[key] = (0.1 * rng.standard_normal(shape)).astype(np.float32)
    return s
