"""Evaluation: accuracy under l_inf PGD (the paper's protocol and a stronger one), and the metric
maths of Inception Score and FID.

Protocols (eps in [-1, 1] units):
- paper: class-CE PGD, 20 steps of eps/5, no random start, no restarts (comparable with Table 1).
- strong: per example, the worst case over CE and margin PGD (50 steps of 2.5*eps/50, 10 random
  restarts each) and a targeted margin attack toward each of the 3 most likely wrong classes;
  the clean prediction counts too, so strong accuracy never exceeds clean accuracy.
"""
from __future__ import annotations

import time

import numpy as np
import tensorflow as tf

from robgan_tf import data as data_lib
from robgan_tf import storage
from robgan_tf.attacks import PAPER_STEP_FRACTION, class_logits, pgd, predict
from robgan_tf.losses import class_ce

PROTOCOLS = {
    "paper": [dict(loss="ce", steps=20, step_fraction=PAPER_STEP_FRACTION, random_start=False, restarts=1)],
    "strong": [dict(loss="ce", steps=50, step_fraction=None, random_start=True, restarts=10),
               dict(loss="margin", steps=50, step_fraction=None, random_start=True, restarts=10),
               dict(loss="margin", steps=50, step_fraction=None, random_start=False, restarts=1, targets=3)],
}


def _attack_batch(classifier, x, y, eps, spec):
    """Per-example 'still correct' after one attack spec (bool [B])."""
    steps = spec["steps"]
    step = eps * spec["step_fraction"] if spec["step_fraction"] else None
    if spec.get("targets"):
        logits = class_logits(classifier, x)
        masked = logits - 1e9 * tf.one_hot(y, tf.shape(logits)[-1])
        targets = tf.math.top_k(masked, k=spec["targets"]).indices
        ok = tf.ones_like(y, tf.bool)
        for t in range(spec["targets"]):
            adv = pgd(classifier, x, targets[:, t], eps=eps, steps=steps, step_size=step, loss=spec["loss"],
                      targeted=True)
            ok &= predict(classifier, adv) == y
        return ok
    adv = pgd(classifier, x, y, eps=eps, steps=steps, step_size=step, random_start=spec["random_start"],
              restarts=spec["restarts"], loss=spec["loss"])
    return predict(classifier, adv) == y


def correct_under_protocol(classifier, x, y, eps, protocol, keep_adv=False):
    """(correct [B] bool, worst adversarial images or None): worst case over the protocol's attacks."""
    y = tf.cast(y, tf.int32)
    clean_ok = predict(classifier, x) == y
    if not tf.is_tensor(eps) and eps == 0:
        return clean_ok, (x if keep_adv else None)
    ok = clean_ok
    for spec in PROTOCOLS[protocol]:
        ok &= _attack_batch(classifier, x, y, eps, spec)
    adv = None
    if keep_adv:  # the paper protocol's adversarial images, for --save_examples
        spec = PROTOCOLS[protocol][0]
        step = eps * spec["step_fraction"] if spec["step_fraction"] else None
        adv = pgd(classifier, x, y, eps=eps, steps=spec["steps"], step_size=step, loss=spec["loss"])
    return ok, adv


_COMPILED = {}


def _compiled(classifier, eps, protocol, keep_adv):
    """correct_under_protocol(x, y) at `eps`: one tf.function per (classifier, protocol) serves every eps > 0
    (eps is a tensor argument), another the clean case."""
    clean = float(eps) == 0
    key = (id(classifier), protocol, keep_adv, clean)
    if key not in _COMPILED:
        _COMPILED[key] = (classifier, tf.function(
            lambda x, y, e: correct_under_protocol(classifier, x, y, 0.0 if clean else e, protocol, keep_adv),
            reduce_retracing=True))
    fn, e = _COMPILED[key][1], tf.constant(float(eps), tf.float32)
    return lambda x, y: fn(x, y, e)


def accuracy_under_attack(classifier, source, *, eps, steps, num_examples=None, batch_size=128):
    """Accuracy under the paper protocol's kind of attack -- class-CE PGD, steps of eps/5, no random start --
    with `steps` steps, on the first num_examples of `source` (eps 0 or steps 0: clean accuracy)."""
    steps = int(steps) if eps else 0
    key = (id(classifier), "single", steps)
    if key not in _COMPILED:  # eps and the step are tensors: one trace serves the whole eps grid
        def correct(x, y, eps, step_size):
            adv = pgd(classifier, x, y, eps=eps, steps=steps, step_size=step_size) if steps else x
            return tf.reduce_sum(tf.cast(predict(classifier, adv) == y, tf.int32))

        _COMPILED[key] = (classifier, tf.function(correct, reduce_retracing=True))
    correct = _COMPILED[key][1]
    step = eps * PAPER_STEP_FRACTION if steps else 0.0
    eps_t, step_t = tf.constant(eps, tf.float32), tf.constant(step, tf.float32)
    hits, n = 0, 0
    for x, y in data_lib.eval_dataset(source, batch_size, num_examples):
        hits += int(correct(x, y, eps_t, step_t))
        n += int(tf.shape(y)[0])
    return hits / max(n, 1)


def robustness_table(classifier, source, *, eps_grid, protocols=("paper",), num_examples=None, batch_size=200,
                     model_name="", save_examples=None):
    """Accuracy per protocol and eps on `source`; returns the JSON-ready dict of the README's format."""
    t0 = time.time()
    rows, examples = [], {}
    for protocol in protocols:
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {protocol!r}; choose from {sorted(PROTOCOLS)}.")
        for eps in eps_grid:
            hits, n, advs = 0, 0, []
            for x, y in data_lib.eval_dataset(source, batch_size, num_examples):
                ok, adv = _compiled(classifier, eps, protocol, save_examples is not None)(x, y)
                hits += int(tf.reduce_sum(tf.cast(ok, tf.int32)))
                n += int(tf.shape(y)[0])
                if adv is not None:
                    advs.append(adv.numpy())
            rows.append({"protocol": protocol, "eps": float(eps), "eps_01": float(eps) / 2.0,
                         "accuracy": hits / max(n, 1), "num_examples": n})
            if advs:
                examples[f"{protocol}_eps{eps:g}"] = np.concatenate(advs)
    result = {
        "results": rows,
        "attacks": {p: PROTOCOLS[p] for p in protocols},
        "model": model_name, "dataset": source.info.name, "split": source.info.split,
        "seconds": round(time.time() - t0, 1),
    }
    result["sanity"] = sanity_checks(rows)
    if save_examples is not None:
        xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in data_lib.eval_dataset(source, batch_size, num_examples)])
        storage.atomic_save(save_examples, lambda tmp: np.savez(tmp, x=np.concatenate(xs), y=np.concatenate(ys),
                                                                **examples))
    return result


def sanity_checks(rows):
    """Checks reported beside the table: accuracy falls with eps; strong <= paper at every eps."""
    notes = {}
    for protocol in {r["protocol"] for r in rows}:
        accs = [r["accuracy"] for r in sorted((r for r in rows if r["protocol"] == protocol), key=lambda r: r["eps"])]
        notes[f"{protocol}_monotone_in_eps"] = all(a >= b - 1e-9 for a, b in zip(accs, accs[1:]))
    paper = {r["eps"]: r["accuracy"] for r in rows if r["protocol"] == "paper"}
    strong = {r["eps"]: r["accuracy"] for r in rows if r["protocol"] == "strong"}
    if paper and strong:
        notes["strong_le_paper"] = all(strong[e] <= paper[e] + 1e-9 for e in strong if e in paper)
    return notes


def markdown_table(result):
    protocols = sorted({r["protocol"] for r in result["results"]})
    eps = sorted({r["eps"] for r in result["results"]})
    acc = {(r["protocol"], r["eps"]): r["accuracy"] for r in result["results"]}
    n = result["results"][0]["num_examples"] if result["results"] else 0
    lines = [f"Accuracy under l_inf PGD on {result['dataset']} ({result['split']}, {n} examples); eps in [-1, 1] "
             "units ([0, 1]-scale eps in brackets)", "",
             "| protocol | " + " | ".join(f"{e:g} [{e / 2 * 255:.1f}/255]" for e in eps) + " |",
             "|---|" + "---|" * len(eps)]
    for p in protocols:
        lines.append(f"| {p} | " + " | ".join(f"{100 * acc[(p, e)]:.2f}%" if (p, e) in acc else "-" for e in eps) + " |")
    return "\n".join(lines)


def write_json(result, path):
    storage.atomic_write_json(path, result)


# ----------------------------------------------------------------------------- IS / FID maths
def inception_score(probs, splits=10):
    """Inception Score from class probabilities [N, K]: mean and std of exp(E[KL(p(y|x) || p(y))]) over splits."""
    probs = np.asarray(probs, np.float64)
    scores = []
    for part in np.array_split(probs, splits):
        marginal = part.mean(axis=0, keepdims=True)
        kl = np.sum(part * (np.log(part + 1e-12) - np.log(marginal + 1e-12)), axis=1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))


def feature_statistics(features):
    features = np.asarray(features, np.float64)
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2):
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)), with the matrix square root from an eigh of a
    symmetric product (stable and real): (S1 S2)^(1/2) has the trace of (S1^(1/2) S2 S1^(1/2))^(1/2)."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    w1, v1 = np.linalg.eigh(sigma1)
    root1 = (v1 * np.sqrt(np.clip(w1, 0, None))) @ v1.T
    w = np.linalg.eigvalsh(root1 @ sigma2 @ root1)
    tr_covmean = np.sum(np.sqrt(np.clip(w, 0, None)))
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)


# ----------------------------------------------------------------------------- the generalization gap (Fig. 2, 6)
def local_lipschitz(classifier, images, labels):
    """Per-example ||d CE(f(x), y) / dx||_2: the paper's local Lipschitz value (LLV)."""
    x = tf.convert_to_tensor(images, tf.float32)
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(x)
        total = tf.reduce_sum(class_ce(class_logits(classifier, x), labels))
    grad = tape.gradient(total, x)
    return tf.norm(tf.reshape(grad, [tf.shape(grad)[0], -1]), axis=1)


def gap_analysis(classifier, train_source, test_source, *, eps_grid, num_examples=1000, steps=20, batch_size=200):
    """Accuracy under PGD (paper protocol) on train vs test over eps, and the LLV on both splits."""
    out = {"eps": [float(e) for e in eps_grid], "train_accuracy": [], "test_accuracy": [], "llv": {}}
    for eps in eps_grid:
        for split, src in (("train", train_source), ("test", test_source)):
            acc = accuracy_under_attack(classifier, src, eps=float(eps), steps=steps, num_examples=num_examples,
                                        batch_size=batch_size)
            out[f"{split}_accuracy"].append(acc)
    for split, src in (("train", train_source), ("test", test_source)):
        values = [local_lipschitz(classifier, x, y).numpy() for x, y in data_lib.eval_dataset(src, batch_size,
                                                                                               num_examples)]
        out["llv"][split] = np.concatenate(values).tolist()
    out["llv_mean"] = {k: float(np.mean(v)) for k, v in out["llv"].items()}
    return out


def plot_gap(gap, path):
    """Two panels: accuracy under attack (train vs test) over eps, and LLV histograms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(gap["eps"], gap["train_accuracy"], "o-", label="train")
    a.plot(gap["eps"], gap["test_accuracy"], "s-", label="test")
    a.set_xlabel("eps ([-1, 1] units)")
    a.set_ylabel("accuracy under PGD")
    a.set_ylim(0, 1)
    a.legend()
    a.set_title("accuracy gap")
    top = max(max(v) for v in gap["llv"].values()) or 1.0
    bins = np.linspace(0, top, 40)
    for split in ("train", "test"):
        b.hist(gap["llv"][split], bins=bins, alpha=0.5, label=f"{split} (mean {gap['llv_mean'][split]:.3g})")
    b.set_xlabel("||d loss / d x||_2")
    b.set_title("local Lipschitz value")
    b.legend()
    fig.tight_layout()
    storage.atomic_save(path, lambda tmp: fig.savefig(tmp, dpi=100))
    plt.close(fig)
