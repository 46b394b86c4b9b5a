"""Same weights, same inputs: this package's outputs, attacks and losses against the Rob-GAN authors' PyTorch code.

    pip install torch                      # any recent CPU build; nothing of theirs is installed
    git clone https://github.com/xuanqing94/RobGAN AUTHORS   # (tested at 8a478cf)
    python benchmarks/authors_equality.py --authors_code=AUTHORS [--json_out=FILE]

For each network (their resnet_32 G + D with BN at 32 px and 10 classes, resnet_64 at 64 px and 143 classes,
PreActResNet18; resnet_128 with --with_128), the script builds their modules from their sources, gives every BN
and conditional-BN parameter and buffer a random value (so nothing rests on default ones and zeros), saves the
state_dicts with torch.save, imports them with robgan_tf.interop.from_authors_checkpoint, and compares on one
batch:

- D's two heads in inference mode (their .eval()) and in training mode (batch statistics);
- G's images for fixed z and labels in training mode (the authors' G is never in eval mode) and inference mode;
- the training attack: their attack_Linf_PGD (5 steps of 0.0078, two-head loss, no random start) against
  robgan_tf.attacks.pgd(loss="two_head") at eps 0.0625;
- the evaluation attack: their attack_label_Linf_PGD (20 steps of eps/5) against pgd(loss="ce") at eps 0.0625;
- one training iteration's D loss (split: their --our_loss; AC-GAN) and G loss on the same batch, z and labels.

Adaptations (outside their sources, nothing of theirs is changed or copied): CPU instead of .cuda(), no
torchvision (not imported: only their model, loss and attack modules are), random inputs instead of data.
Numbers written to docs/FIDELITY.md come from this script.
"""
import argparse
import json
import os
import sys
import tempfile

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def randomise(module, torch, generator):
    """Every BN weight, bias and running statistic, and every conditional BN's gammas, betas and averages, gets a
    random value (scales in [0.5, 1.5), shifts ~ N(0, 0.1^2))."""
    def scale(t):
        t.copy_(torch.rand(t.shape, generator=generator) + 0.5)

    def shift(t):
        t.copy_(0.1 * torch.randn(t.shape, generator=generator))

    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                scale(m.weight), shift(m.bias), shift(m.running_mean), scale(m.running_var)
            elif hasattr(m, "gammas") and hasattr(m, "avg_var"):  # their CatCondBatchNorm2d
                scale(m.gammas.weight), shift(m.betas.weight), shift(m.avg_mean), scale(m.avg_var)


def diff(ours, theirs):
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    return {"max_abs_diff": float(np.max(np.abs(ours - theirs))), "max_abs": float(np.max(np.abs(theirs)))}


def attack_diff(ours, theirs, clean, eps):
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    same = np.abs(ours - theirs) <= 1e-6
    return {"pixels": int(same.size), "pixels_equal": int(same.sum()), "max_abs_diff": float(np.max(np.abs(ours - theirs))),
            "ours_inside_ball": bool(np.all(np.abs(ours - clean) <= eps + 1e-7))}


def sign_agreement(their_iterates, their_grad, our_grad):
    """At each of their attack's iterates: the share of pixels where our gradient's sign equals theirs, and how
    small their gradient is where the signs differ (|g| over the median |g| of that image; ~1e-6 and below is
    float32 rounding deciding the sign)."""
    steps = []
    their_iterates = list(their_iterates)  # all computed first: their training attack leaves D in train mode
    for x_k in their_iterates:
        g_t, g = their_grad(x_k), our_grad(x_k)
        differ = np.sign(g_t) != np.sign(g)
        median = np.median(np.abs(g_t).reshape(len(g_t), -1), axis=1).reshape(-1, 1, 1, 1)
        rel = np.abs(g_t) / np.maximum(median, 1e-30)
        steps.append({"pixels_differing": int(differ.sum()),
                      "max_relative_gradient_where_differing": float(rel[differ].max()) if differ.any() else 0.0})
    return steps


def nhwc(t):
    return np.transpose(t.detach().numpy(), (0, 2, 3, 1))


def nchw(a, torch):
    return torch.from_numpy(np.ascontiguousarray(np.transpose(np.asarray(a), (0, 3, 1, 2))))


def gradients(dis, d_ours, y, torch, their_loss, our_loss):
    """(their gradient, our gradient) of the attack objective at an NHWC point, both NHWC float64."""
    import tensorflow as tf
    from robgan_tf.attacks import classifier_outputs, per_example_loss
    yt = torch.from_numpy(y.astype(np.int64))

    def theirs(x):
        dis.eval()  # their attacks run D in eval mode (a train-mode forward would also move its BN statistics)
        xt = nchw(x, torch).requires_grad_(True)
        their_loss(dis(xt), yt).backward()
        return nhwc(xt.grad).astype(np.float64)

    def ours(x):
        x = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(per_example_loss(classifier_outputs(d_ours, x), y, our_loss))
        return tape.gradient(loss, x).numpy().astype(np.float64)
    return theirs, ours


def compare_attacks(dis, d_ours, x, y, torch, pgd_mod, loss_mod, eps):
    """Both attacks end to end, and their gradients' signs at each of the authors' iterates."""
    from robgan_tf.attacks import pgd
    xt, yt = nchw(x, torch), torch.from_numpy(y.astype(np.int64))
    ones = torch.ones(len(y))
    out = {}

    def training_attack(steps):  # theirs sets dis.eval() for the attack and dis.train() after
        return nhwc(pgd_mod.attack_Linf_PGD(xt.clone(), ones, yt, dis, loss_mod.loss_nll, steps, eps))

    def evaluation_attack(steps):  # acc_under_attack.py puts dis in eval mode first
        dis.eval()
        return nhwc(pgd_mod.attack_label_Linf_PGD(xt.clone(), yt, dis, steps, eps))

    # the objectives their attacks ascend (their optimizer descends their minus); with their mean over the batch
    # (ours sums: the same signs)
    two_head = lambda o, t: loss_mod.loss_nll(o[0], torch.ones(len(t)), o[1], t, lam=0.5)  # noqa: E731
    ce = lambda o, t: torch.nn.functional.cross_entropy(o[1], t)  # noqa: E731
    for name, attack, steps, step, loss, their_loss in (
            ("training_attack", training_attack, 5, 0.0078, "two_head", two_head),
            ("evaluation_attack", evaluation_attack, 20, eps / 5, "ce", ce)):
        adv = pgd(d_ours, x, y, eps=eps, steps=steps, step_size=step, loss=loss)
        out[name] = attack_diff(adv, attack(steps), x, eps)
        dis.eval()
        theirs, ours = gradients(dis, d_ours, y, torch, their_loss, loss)
        out[name]["gradient_signs"] = sign_agreement([attack(k) for k in range(steps)], theirs, ours)
        dis.train()
    return out


def compare_discriminator(dis, d_ours, x, y, torch):
    """Both heads in both modes; the BN statistics the training-mode pass moved are put back on both sides
    (torch moves the running variance by the unbiased batch variance, Keras by the biased one)."""
    import copy
    xt = nchw(x, torch)
    saved_theirs, saved_ours = copy.deepcopy(dis.state_dict()), d_ours.get_weights()
    out = {}
    for mode in ("eval", "train"):
        getattr(dis, mode)()
        with torch.no_grad():
            bin_t, multi_t = dis(xt)
        logit, logits = d_ours(x, y, training=(mode == "train"))
        out[f"D_{mode}_logit"] = diff(logit, bin_t.numpy())
        out[f"D_{mode}_class_logits"] = diff(logits, multi_t.numpy())
    dis.load_state_dict(saved_theirs)
    d_ours.set_weights(saved_ours)
    dis.train()
    return out


def compare_generator(gen, g_ours, z, y, torch):
    """Inference mode first (the imported running statistics), then training mode (batch statistics; both
    update their running statistics), then inference again: the updated statistics compared."""
    out = {}
    for mode in ("eval", "train", "eval_after_train"):
        getattr(gen, mode.split("_")[0])()
        with torch.no_grad():
            images_t = gen(torch.from_numpy(z), torch.from_numpy(y.astype(np.int64)))
        images = g_ours(z, y, training=(mode == "train"))
        out[f"G_{mode}_images"] = diff(images, nhwc(images_t))
    gen.train()
    return out


def compare_losses(gen, dis, g_ours, d_ours, x, y, z, y_fake, torch, pgd_mod, loss_mod, eps):
    """One iteration's losses, in the authors' order of calls: attack the reals (their attack; both sides then see
    the same attacked batch), D on them, G's fakes, D on the fakes (all in training mode); G's loss on D's verdict
    of those fakes."""
    import tensorflow as tf
    from robgan_tf import losses as L
    xt, yt, zt, yft = (nchw(x, torch), torch.from_numpy(y.astype(np.int64)), torch.from_numpy(z),
                       torch.from_numpy(y_fake.astype(np.int64)))
    ones, zeros = torch.ones(len(y)), torch.zeros(len(y))
    dis.train(), gen.train()
    adv_t = pgd_mod.attack_Linf_PGD(xt.clone(), ones, yt, dis, loss_mod.loss_nll, 5, eps)
    with torch.no_grad():
        real_bin, real_multi = dis(adv_t)
        fake = gen(zt, yft)
        fake_bin, fake_multi = dis(fake)
        theirs = {"split": (loss_mod.loss_nll(real_bin, ones, real_multi, yt, lam=0.5)
                            + loss_mod.loss_nll(fake_bin, zeros, fake_multi, yft, lam=1)).item(),
                  "acgan": (loss_mod.loss_nll(real_bin, ones, real_multi, yt, lam=0.5)
                            + loss_mod.loss_nll(fake_bin, zeros, fake_multi, yft, lam=0.5)).item(),
                  "generator": loss_mod.loss_nll(fake_bin, ones, fake_multi, yft, lam=0.5).item()}
    # the same attacked batch on both sides: the attacks are compared in compare_attacks, the losses here
    r_logit, r_cls = d_ours(nhwc(adv_t), y, training=True)
    x_fake = g_ours(z, y_fake, training=True)
    f_logit, f_cls = d_ours(x_fake, y_fake, training=True)
    ours = {v: float(tf.reduce_mean(L.discriminator_loss(r_logit, r_cls, y, f_logit, f_cls, y_fake,
                                                          L.LossConfig(variant=v)))) for v in ("split", "acgan")}
    ours["generator"] = float(tf.reduce_mean(L.generator_loss(f_logit, f_cls, y_fake)))
    return {f"loss_{k}": {"ours": ours[k], "theirs": theirs[k], "abs_diff": abs(ours[k] - theirs[k])} for k in ours}


def authors_modules(code, model):
    gen_mod = {"resnet_32": "gen_models.resnet_32", "resnet_64": "gen_models.resnet_64",
               "resnet_128": "gen_models.resnet_small"}
    dis_mod = {"resnet_32": "dis_models.resnet_32", "resnet_64": "dis_models.resnet_64",
               "resnet_128": "dis_models.resnet_small"}
    import importlib
    if model == "preact_resnet18":
        return None, importlib.import_module("dis_models.preact_resnet").PreActResNet18
    return (importlib.import_module(gen_mod[model]).ResNetGenerator,
            importlib.import_module(dis_mod[model]).ResNetAC)


def run_case(model, resolution, num_classes, args, torch, tmp):
    from robgan_tf import interop
    import importlib
    pgd_mod, loss_mod = importlib.import_module("miscs.pgd"), importlib.import_module("miscs.loss")
    torch.manual_seed(args.seed)
    gen_cls, dis_cls = authors_modules(args.authors_code, model)
    generator = torch.Generator().manual_seed(args.seed)
    if model == "preact_resnet18":
        dis = dis_cls()
    elif model == "resnet_32":
        dis = dis_cls(ch=64, n_classes=num_classes, bn=True)
    else:
        dis = dis_cls(ch=64, n_classes=num_classes)
    randomise(dis, torch, generator)
    rng = np.random.default_rng(args.seed)
    b = args.batch_size
    x = rng.uniform(-1, 1, (b, resolution, resolution, 3)).astype(np.float32)
    y = rng.integers(0, num_classes, b).astype(np.int32)
    result = {"model": model, "resolution": resolution, "num_classes": num_classes, "batch": b}
    d_path = os.path.join(tmp, f"dis_{model}.pth")
    # DataParallel's prefix, as their train.py saves it, and the legacy format their torch 0.4 wrote
    torch.save({"module." + k: v for k, v in dis.state_dict().items()}, d_path,
               _use_new_zipfile_serialization=False)
    network = "preact_resnet18" if model == "preact_resnet18" else "discriminator"
    d_ours = interop.from_authors_checkpoint(d_path, network, resolution, num_classes)
    result.update(compare_discriminator(dis, d_ours, x, y, torch))
    result.update(compare_attacks(dis, d_ours, x, y, torch, pgd_mod, loss_mod, args.eps))
    if gen_cls is not None:
        gen = gen_cls(ch=64, dim_z=128, bottom_width=4, n_classes=num_classes)
        randomise(gen, torch, generator)
        g_path = os.path.join(tmp, f"gen_{model}.pth")
        torch.save(gen.state_dict(), g_path)
        g_ours = interop.from_authors_checkpoint(g_path, "generator", resolution, num_classes)
        z = rng.standard_normal((b, 128)).astype(np.float32)
        y_fake = rng.integers(0, num_classes, b).astype(np.int32)
        result.update(compare_generator(gen, g_ours, z, y_fake, torch))
        result.update(compare_losses(gen, dis, g_ours, d_ours, x, y, z, y_fake, torch, pgd_mod, loss_mod, args.eps))
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--authors_code", required=True, help="a checkout of xuanqing94/RobGAN")
    parser.add_argument("--json_out", default="", help="also write the results here")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--eps", type=float, default=0.0625)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--with_128", action="store_true", help="also resnet_128 (slow on a CPU)")
    args = parser.parse_args()
    import torch
    import tensorflow as tf
    sys.path.insert(0, os.path.abspath(args.authors_code))  # their gen_models, dis_models, layers, miscs
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    cases = [("resnet_32", 32, 10), ("resnet_64", 64, 143), ("preact_resnet18", 32, 10)]
    if args.with_128:
        cases.append(("resnet_128", 128, 143))
    from robgan_tf.runtime import processor
    report = {"torch": torch.__version__, "tensorflow": tf.__version__, "processor": processor(),
              "eps": args.eps, "seed": args.seed, "cases": []}
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            result = run_case(*case, args, torch, tmp)
            print(json.dumps(result, indent=1))
            report["cases"].append(result)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
