"""Robust accuracy: accuracy under l_inf attacks by three protocols, as tables and JSON.

Protocols (eps in [-1, 1] units):
- paper: class-CE PGD, 20 steps of eps/5, no random start, no restarts (comparable with Table 1).
- strong: per example, the worst case over CE and margin PGD (50 steps of 2.5*eps/50, 10 random
  restarts each) and a targeted margin attack toward each of the 3 most likely wrong classes;
  the clean prediction counts too, so strong accuracy never exceeds clean accuracy.
- autoattack: AutoAttack's standard l_inf version (robgan_tf.autoattack): APGD-CE, APGD-T, FAB-T, Square,
  each on the examples still robust; the number reviewers and RobustBench quote. With it come
  gradient-masking indicators (see `masking_indicators`) and a RobustBench-shaped block.
"""
from __future__ import annotations

import time

import numpy as np
import tensorflow as tf

from robgan_tf import autoattack as autoattack_lib
from robgan_tf import data as data_lib
from robgan_tf import storage
from robgan_tf.attacks import class_logits, pgd, predict, traces_of
from robgan_tf.config import PAPER_STEP_FRACTION
from robgan_tf.experiment import eps_label
from robgan_tf.progress import Progress

PROTOCOLS = {
    "paper": [dict(loss="ce", steps=20, step_fraction=PAPER_STEP_FRACTION, random_start=False, restarts=1)],
    "strong": [dict(loss="ce", steps=50, step_fraction=None, random_start=True, restarts=10),
               dict(loss="margin", steps=50, step_fraction=None, random_start=True, restarts=10),
               dict(loss="margin", steps=50, step_fraction=None, random_start=False, restarts=1, targets=3)],
}
ALL_PROTOCOLS = ("paper", "strong", "autoattack")
# The gradient-masking check's eps: half the pixel range ([0, 1] scale 0.5); accuracy there should be ~0.
LARGE_EPS = 1.0


def _attack_images(classifier, x, y, eps, spec):
    """The adversarial images of one attack spec: one batch, or one per target for a targeted spec."""
    step = eps * spec["step_fraction"] if spec["step_fraction"] else None
    if spec.get("targets"):
        logits = class_logits(classifier, x)
        masked = logits - 1e9 * tf.one_hot(y, tf.shape(logits)[-1])
        k = min(spec["targets"], int(logits.shape[-1]) - 1)  # there are only K - 1 wrong classes
        targets = tf.math.top_k(masked, k=k).indices
        return [pgd(classifier, x, targets[:, t], eps=eps, steps=spec["steps"], step_size=step, loss=spec["loss"],
                    targeted=True) for t in range(k)]
    return [pgd(classifier, x, y, eps=eps, steps=spec["steps"], step_size=step, random_start=spec["random_start"],
                restarts=spec["restarts"], loss=spec["loss"])]


def correct_under_protocol(classifier, x, y, eps, protocol):
    """(correct [B] bool, deciding images): the worst case over the protocol's attacks, the clean prediction
    included. The deciding image of an example is the one that first made it wrong (the clean image if it was
    wrong already), or the last attack's image if nothing did."""
    y = tf.cast(y, tf.int32)
    ok = predict(classifier, x) == y
    chosen = x
    if not tf.is_tensor(eps) and eps == 0:
        return ok, chosen
    for spec in PROTOCOLS[protocol]:
        for adv in _attack_images(classifier, x, y, eps, spec):
            adv_ok = predict(classifier, adv) == y
            take = ok[:, None, None, None]  # still robust before this attack: this image decides (or is latest)
            chosen = tf.where(take, adv, chosen)
            ok &= adv_ok
    return ok, chosen


def _protocol_fn(classifier, protocol, clean, image_shape):
    """correct_under_protocol(x, y, eps) as one tf.function per classifier, protocol and image shape, stored on
    the classifier: eps is a tensor argument and the batch size is open, so one trace serves every eps > 0 and
    every batch (another the clean case)."""
    traces = traces_of(classifier)
    key = ("protocol", protocol, clean, tuple(image_shape))
    if key not in traces:
        traces[key] = tf.function(
            lambda x, y, e: correct_under_protocol(classifier, x, y, 0.0 if clean else e, protocol),
            input_signature=[tf.TensorSpec([None, *image_shape], tf.float32), tf.TensorSpec([None], tf.int32),
                             tf.TensorSpec([], tf.float32)], autograph=False)
    return traces[key]


def accuracy_under_attack(classifier, source, *, eps, steps, num_examples=None, batch_size=128):
    """Accuracy under the paper protocol's kind of attack -- class-CE PGD, steps of eps/5, no random start --
    with `steps` steps, on the first num_examples of `source` (eps 0 or steps 0: clean accuracy)."""
    steps = int(steps) if eps else 0
    traces = traces_of(classifier)
    key = (steps, tuple(source.info.image_shape))
    if key not in traces:  # one trace for every batch size and eps: eps and the step are tensor arguments
        def correct(x, y, eps, step_size):
            adv = pgd(classifier, x, y, eps=eps, steps=steps, step_size=step_size) if steps else x
            return tf.reduce_sum(tf.cast(predict(classifier, adv) == y, tf.int32))

        scalar = tf.TensorSpec([], tf.float32)
        traces[key] = tf.function(correct, autograph=False, input_signature=[
            tf.TensorSpec([None, *source.info.image_shape], tf.float32), tf.TensorSpec([None], tf.int32),
            scalar, scalar])
    correct = traces[key]
    step = eps * PAPER_STEP_FRACTION if steps else 0.0
    eps_t, step_t = tf.constant(eps, tf.float32), tf.constant(step, tf.float32)
    hits, n = 0, 0
    for x, y in data_lib.eval_dataset(source, batch_size, num_examples):
        hits += int(correct(x, y, eps_t, step_t))
        n += int(tf.shape(y)[0])
    return hits / max(n, 1)


def _arrays(source, batch_size, num_examples):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in data_lib.eval_dataset(source, batch_size, num_examples)])
    return np.concatenate(xs), np.concatenate(ys).astype(np.int32)


def _autoattack_rows(classifier, source, x, y, eps_grid, batch_size, seed, verbose, examples):
    """The autoattack protocol's rows and RobustBench blocks, one per eps."""
    rows, robustbench = [], []
    for eps in eps_grid:
        stages = autoattack_lib.STAGES if float(eps) > 0 else ()
        out = autoattack_lib.autoattack(classifier, x, y, eps=float(eps), batch_size=batch_size, seed=seed,
                                        stages=stages, verbose=verbose)
        rows.append({"protocol": "autoattack", "eps": float(eps), "eps_01": float(eps) / 2.0,
                     "accuracy": float(out["robust"].mean()), "num_examples": len(y), "stages": out["stages"]})
        if examples is not None:
            examples[f"autoattack_eps{eps:g}"] = out["images"]
        if float(eps) > 0:
            robustbench.append({"threat_model": "Linf", "eps": eps_label(float(eps)),
                                "clean_acc": f"{100 * out['clean_accuracy']:.2f}",
                                "autoattack_acc": f"{100 * out['robust'].mean():.2f}",
                                "n_ex": len(y), "dataset": source.info.name, "number_forward_passes": 1})
    return rows, robustbench


def _pgd_rows(classifier, source, protocol, eps_grid, num_examples, batch_size, verbose, examples):
    """A PGD protocol's rows (paper or strong), one per eps, batch by batch with a progress line."""
    fns = {clean: _protocol_fn(classifier, protocol, clean, source.info.image_shape) for clean in (True, False)}
    n_batches = -(-min(num_examples or source.info.num_examples, source.info.num_examples) // batch_size)
    rows = []
    for eps in eps_grid:
        fn, e = fns[float(eps) == 0], tf.constant(float(eps), tf.float32)
        hits, n, advs = 0, 0, []
        progress = Progress(f"{protocol} eps {float(eps):g}", n_batches, enabled=verbose)
        for x, y in data_lib.eval_dataset(source, batch_size, num_examples):
            ok, adv = fn(x, y, e)
            hits += int(tf.reduce_sum(tf.cast(ok, tf.int32)))
            n += int(tf.shape(y)[0])
            if examples is not None:
                advs.append(adv.numpy())
            progress.update(1)
        progress.close()
        rows.append({"protocol": protocol, "eps": float(eps), "eps_01": float(eps) / 2.0,
                     "accuracy": hits / max(n, 1), "num_examples": n})
        if advs:
            examples[f"{protocol}_eps{eps:g}"] = np.concatenate(advs)
    return rows


def robustness_table(classifier, source, *, eps_grid, protocols=("paper",), num_examples=None, batch_size=200,
                     model_name="", save_examples=None, seed=0, verbose=True):
    """Accuracy per protocol and eps on `source`; returns the JSON-ready dict of the README's format.

    save_examples: an .npz path for the clean images `x`, labels `y` and, per protocol and eps, the images that
    decided each example (see correct_under_protocol). seed: AutoAttack's random starts and Square's search.
    verbose: a progress line per protocol and eps on stderr."""
    for protocol in protocols:
        if protocol not in ALL_PROTOCOLS:
            raise ValueError(f"unknown protocol {protocol!r}; choose from {ALL_PROTOCOLS}.")
    t0 = time.time()
    rows, robustbench, examples = [], [], {} if save_examples is not None else None
    arrays = []  # the split as arrays, read once when something needs them

    def xy():
        if not arrays:
            arrays.extend(_arrays(source, batch_size, num_examples))
        return arrays

    for protocol in protocols:
        if protocol == "autoattack":
            more, robustbench = _autoattack_rows(classifier, source, *xy(), eps_grid, batch_size, seed, verbose,
                                                 examples)
        else:
            more = _pgd_rows(classifier, source, protocol, eps_grid, num_examples, batch_size, verbose, examples)
        rows += more
    result = {
        "results": rows,
        "attacks": {p: PROTOCOLS.get(p, {"version": "standard", **autoattack_lib.STANDARD}) for p in protocols},
        "model": model_name, "dataset": source.info.name, "split": source.info.split,
    }
    result["sanity"] = sanity_checks(rows)
    if "autoattack" in protocols:
        result["robustbench"] = robustbench
        result["sanity"].update(masking_indicators(classifier, *xy(), rows, batch_size=batch_size, seed=seed))
    result["seconds"] = round(time.time() - t0, 1)
    if save_examples is not None:
        x, y = xy()
        storage.atomic_save(save_examples, lambda tmp: np.savez(tmp, x=x, y=y, **examples))
    return result


def masking_indicators(classifier, x, y, rows, *, batch_size=200, seed=0, max_examples=500):
    """Signs of gradient masking (Athalye et al. 2018; Croce & Hein 2020), reported beside AutoAttack:

    - zero_gradient_fraction: examples whose CE input gradient is exactly zero;
    - square_broke: examples the black-box Square attack broke after every white-box stage had failed;
    - large_eps_accuracy: accuracy under APGD-CE at eps = 1.0 ([0, 1] scale 0.5) on up to max_examples
      examples, which must be near 0 for an unmasked classifier;
    - possible_gradient_masking: whether any of them looks wrong, with the reasons.
    """
    zero = autoattack_lib.zero_gradient_fraction(classifier, x, y, batch_size)
    square = sum(stage.get("broken", 0) for r in rows if r["protocol"] == "autoattack"
                 for stage in r.get("stages", []) if stage["attack"] == "square")
    xs, ys = x[:max_examples], y[:max_examples]
    comp = autoattack_lib.compiled(classifier, x.shape[1:])
    hits = 0
    for i in range(0, len(xs), batch_size):
        xb, yb = xs[i:i + batch_size], ys[i:i + batch_size]
        _, fooled = comp.apgd("ce", False, 100, xb, yb, yb, LARGE_EPS, seed)
        hits += int(((predict(classifier, xb).numpy() == yb) & ~fooled.numpy()).sum())
    large = hits / max(len(xs), 1)
    reasons = []
    if zero > 0.01:
        reasons.append(f"{100 * zero:.1f}% of the examples have an all-zero input gradient")
    if square > 0:
        reasons.append(f"the black-box Square attack broke {square} examples the white-box attacks did not")
    if large > 0.05:
        reasons.append(f"accuracy at eps {LARGE_EPS:g} ({eps_label(LARGE_EPS)}) is {100 * large:.1f}%, not ~0")
    return {"zero_gradient_fraction": zero, "square_broke": int(square), "large_eps": LARGE_EPS,
            "large_eps_accuracy": large, "possible_gradient_masking": bool(reasons), "masking_reasons": reasons}


def sanity_checks(rows):
    """Checks reported beside the table: accuracy falls with eps; strong and autoattack <= paper at every eps."""
    notes = {}
    for protocol in {r["protocol"] for r in rows}:
        accs = [r["accuracy"] for r in sorted((r for r in rows if r["protocol"] == protocol), key=lambda r: r["eps"])]
        notes[f"{protocol}_monotone_in_eps"] = all(a >= b - 1e-9 for a, b in zip(accs, accs[1:]))
    paper = {r["eps"]: r["accuracy"] for r in rows if r["protocol"] == "paper"}
    for other in ("strong", "autoattack"):
        acc = {r["eps"]: r["accuracy"] for r in rows if r["protocol"] == other}
        if paper and acc:
            notes[f"{other}_le_paper"] = all(acc[e] <= paper[e] + 1e-9 for e in acc if e in paper)
    return notes


def markdown_table(result):
    protocols = sorted({r["protocol"] for r in result["results"]})
    eps = sorted({r["eps"] for r in result["results"]})
    acc = {(r["protocol"], r["eps"]): r["accuracy"] for r in result["results"]}
    n = result["results"][0]["num_examples"] if result["results"] else 0
    lines = [f"Accuracy under l_inf attacks on {result['dataset']} ({result['split']}, {n} examples); eps in [-1, 1] "
             "units ([0, 1]-scale eps in brackets)", "",
             "| protocol | " + " | ".join(f"{e:g} [{e / 2 * 255:.1f}/255]" for e in eps) + " |",
             "|---|" + "---|" * len(eps)]
    for p in protocols:
        lines.append(f"| {p} | " + " | ".join(f"{100 * acc[(p, e)]:.2f}%" if (p, e) in acc else "-" for e in eps) + " |")
    staged = [r for r in result["results"] if r.get("stages") and len(r["stages"]) > 1]
    if staged:
        names = [s["attack"] for s in staged[0]["stages"]]
        lines += ["", "AutoAttack, robust accuracy after each stage (each attacks only the examples still robust)", "",
                  "| eps | " + " | ".join(names) + " | seconds |", "|---|" + "---|" * (len(names) + 1)]
        for r in staged:
            lines.append(f"| {r['eps']:g} [{eps_label(r['eps'])}] | "
                         + " | ".join(f"{100 * s['accuracy']:.2f}%" for s in r["stages"])
                         + f" | {sum(s['seconds'] for s in r['stages']):.0f} |")
    masking = result.get("sanity", {})
    if masking.get("possible_gradient_masking"):
        lines += ["", "possible gradient masking: " + "; ".join(masking["masking_reasons"])]
    return "\n".join(lines)


def write_json(result, path):
    storage.atomic_write_json(path, result)
