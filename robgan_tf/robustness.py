"""Robust accuracy: accuracy under l_inf PGD by the paper's protocol and a stronger one, as tables.

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

PROTOCOLS = {
    "paper": [dict(loss="ce", steps=20, step_fraction=PAPER_STEP_FRACTION, random_start=False, restarts=1)],
    "strong": [dict(loss="ce", steps=50, step_fraction=None, random_start=True, restarts=10),
               dict(loss="margin", steps=50, step_fraction=None, random_start=True, restarts=10),
               dict(loss="margin", steps=50, step_fraction=None, random_start=False, restarts=1, targets=3)],
}


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


def _protocol_fn(classifier, protocol, clean):
    """correct_under_protocol(x, y, eps) as one tf.function: eps is a tensor argument, so one trace serves
    every eps > 0 (another the clean case)."""
    return tf.function(lambda x, y, e: correct_under_protocol(classifier, x, y, 0.0 if clean else e, protocol),
                       reduce_retracing=True)


def _traces(classifier):
    """A dict of traced functions stored ON the classifier, so they live and die with it (a module-level
    cache would keep every classifier ever evaluated alive); a fresh dict when it takes no attributes."""
    try:
        return classifier.__dict__.setdefault("_robgan_traces", {})
    except (AttributeError, TypeError):
        return {}


def accuracy_under_attack(classifier, source, *, eps, steps, num_examples=None, batch_size=128):
    """Accuracy under the paper protocol's kind of attack -- class-CE PGD, steps of eps/5, no random start --
    with `steps` steps, on the first num_examples of `source` (eps 0 or steps 0: clean accuracy)."""
    steps = int(steps) if eps else 0
    traces = _traces(classifier)
    key = (steps, tuple(source.info.image_shape))
    if key not in traces:  # one trace for every batch size and eps: eps and the step are tensor arguments
        def correct(x, y, eps, step_size):
            adv = pgd(classifier, x, y, eps=eps, steps=steps, step_size=step_size) if steps else x
            return tf.reduce_sum(tf.cast(predict(classifier, adv) == y, tf.int32))

        scalar = tf.TensorSpec([], tf.float32)
        traces[key] = tf.function(correct, input_signature=[
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


def robustness_table(classifier, source, *, eps_grid, protocols=("paper",), num_examples=None, batch_size=200,
                     model_name="", save_examples=None):
    """Accuracy per protocol and eps on `source`; returns the JSON-ready dict of the README's format.

    save_examples: an .npz path for the clean images `x`, labels `y` and, per protocol and eps, the images that
    decided each example (see correct_under_protocol)."""
    t0 = time.time()
    rows, examples = [], {}
    for protocol in protocols:
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {protocol!r}; choose from {sorted(PROTOCOLS)}.")
        fns = {clean: _protocol_fn(classifier, protocol, clean) for clean in (True, False)}
        for eps in eps_grid:
            fn, e = fns[float(eps) == 0], tf.constant(float(eps), tf.float32)
            hits, n, advs = 0, 0, []
            for x, y in data_lib.eval_dataset(source, batch_size, num_examples):
                ok, adv = fn(x, y, e)
                hits += int(tf.reduce_sum(tf.cast(ok, tf.int32)))
                n += int(tf.shape(y)[0])
                if save_examples is not None:
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
