"""AutoAttack (Croce & Hein, ICML 2020) in TensorFlow: APGD-CE, APGD-T, FAB-T and Square, l_inf.

Written from the papers:
- APGD: "Reliable evaluation of adversarial robustness with an ensemble of diverse parameter-free attacks"
  (Croce & Hein 2020), Algorithm 1, with the CE and DLR losses of its Section 4.
- FAB: "Minimally distorted adversarial examples with a fast adaptive boundary attack" (Croce & Hein 2020),
  l_inf, targeted (FAB-T: only the boundary between the true and the target class is linearised).
- Square: "Square Attack: a query-efficient black-box adversarial attack via random search"
  (Andriushchenko et al. 2020), l_inf, margin loss, score-based (it never asks for a gradient).

Every attack works on images in [-1, 1] and takes eps in the same units (8/255 on the [0, 1] scale is 16/255
here); the papers' constants are scale-free except the box, which is [-1, 1] here. The classifier is any
form `robgan_tf.attacks.pgd` takes (Keras model, two-head discriminator, SavedModel signature, callable).

APGD and Square return (images, fooled): `fooled` [B] is True where some evaluated point inside the eps-ball was
misclassified, and then `images` is that point; elsewhere it is the attack's best point. FAB-T, a minimum-norm
attack, returns (images, norms): the closest misclassified point found and its l_inf distance. `autoattack` runs the
standard version's four stages, each only on the examples still robust after the previous ones.
docs/AUTOATTACK.md lists where this differs from the reference implementation.
"""
from __future__ import annotations

import fractions
import math
import time

import numpy as np
import tensorflow as tf

from robgan_tf.attacks import class_logits, traces_of
from robgan_tf.losses import class_ce
from robgan_tf.progress import Progress

LOSSES = ("ce", "dlr")
# The standard version (AutoAttack's `version='standard'`): iterations, target classes and queries.
STANDARD = dict(apgd_iterations=100, targets=9, fab_iterations=100, square_queries=5000)
STAGES = ("apgd-ce", "apgd-t", "fab-t", "square")


# ------------------------------------------------------------------------------------------------ losses
def dlr_loss(logits, labels, targets=None):
    """The Difference of Logits Ratio per example (the attacker ascends it; it is scale- and shift-invariant).

    Untargeted: -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3); targeted toward t:
    -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2), with z_pi the logits sorted in decreasing order.
    """
    logits = tf.cast(logits, tf.float32)
    k = logits.shape[-1]
    need = 3 if targets is None else 4
    if k is not None and k < need:
        raise ValueError(f"the DLR loss needs at least {need} classes, the classifier has {k}.")
    top = tf.math.top_k(logits, k=need).values
    onehot = tf.one_hot(tf.cast(labels, tf.int32), tf.shape(logits)[-1])
    z_y = tf.reduce_sum(onehot * logits, -1)
    if targets is None:
        other = tf.reduce_max(logits - 1e9 * onehot, -1)
        return -(z_y - other) / (top[:, 0] - top[:, 2] + 1e-12)
    z_t = tf.reduce_sum(tf.one_hot(tf.cast(targets, tf.int32), tf.shape(logits)[-1]) * logits, -1)
    return -(z_y - z_t) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)


def margin(logits, labels):
    """z_y - max_{i != y} z_i: positive while the example is classified correctly (Square minimises it)."""
    onehot = tf.one_hot(tf.cast(labels, tf.int32), tf.shape(logits)[-1])
    return tf.reduce_sum(onehot * logits, -1) - tf.reduce_max(logits - 1e9 * onehot, -1)


def _objective(loss, logits, labels, targets):
    if loss == "ce":
        return class_ce(logits, labels) if targets is None else -class_ce(logits, targets)
    return dlr_loss(logits, labels, targets)


def _input_gradient(classifier, x, fn):
    """(logits, d sum(fn(logits)) / dx); a classifier whose output does not depend on x gets a zero gradient."""
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(x)
        logits = class_logits(classifier, x)
        total = tf.reduce_sum(fn(logits))
    grad = tape.gradient(total, x, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return logits, tf.ensure_shape(grad, x.shape)


def _wrong(logits, labels):
    return tf.argmax(logits, -1, output_type=tf.int32) != tf.cast(labels, tf.int32)


def _bcast(v):
    return v[:, None, None, None]


# ------------------------------------------------------------------------------------------------ APGD
def apgd_checkpoints(n_iter):
    """The iterations w_j = ceil(p_j * n_iter) at which APGD may halve its step: p_0 = 0, p_1 = 0.22,
    p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06), while p <= 1. Exact fractions, so 0.41 * 100 is 41;
    a checkpoint that rounds onto the previous one (few iterations) is listed once."""
    p = [fractions.Fraction(0), fractions.Fraction(22, 100)]
    while True:
        nxt = p[-1] + max(p[-1] - p[-2] - fractions.Fraction(3, 100), fractions.Fraction(6, 100))
        if nxt > 1:
            break
        p.append(nxt)
    return sorted({math.ceil(q * n_iter) for q in p})


def _check_schedule(n_iter):
    """(is_check, window) for k in 0..n_iter: whether k - 1 is a checkpoint w_j (j >= 1), i.e. the check runs once
    f(x^(w_j + 1)) is known; and w_j - w_{j-1}, the length the increase count is compared with."""
    checks = apgd_checkpoints(n_iter)
    is_check = np.zeros(n_iter + 1, bool)
    window = np.ones(n_iter + 1, np.float32)
    for prev, w in zip(checks, checks[1:]):
        if w + 1 <= n_iter:
            is_check[w + 1], window[w + 1] = True, w - prev
    return tf.constant(is_check), tf.constant(window)


def _apgd_run(classifier, x, labels, eps, seed, *, n_iter, loss, targets, rho, alpha):
    """One APGD run from a random start (Algorithm 1). Returns (images, fooled, step-size trace [n_iter, B])."""
    b = tf.shape(x)[0]
    fn = lambda logits: _objective(loss, logits, labels, targets)  # noqa: E731
    is_check, window = _check_schedule(n_iter)

    def project(z):
        return tf.clip_by_value(tf.clip_by_value(z, x - eps, x + eps), -1.0, 1.0)

    x0 = project(x + tf.random.stateless_uniform(tf.shape(x), seed, -eps, eps))
    logits, grad = _input_gradient(classifier, x0, fn)
    f0 = fn(logits)
    eta = tf.fill([b], 2.0 * eps)
    state = dict(
        k=tf.constant(0), x=x0, x_prev=x0, f=f0, g=grad, eta=eta,
        x_max=x0, f_max=f0, g_max=grad, count=tf.zeros([b]), eta_check=eta, fmax_check=f0,
        fooled=_wrong(logits, labels), x_fooled=x0, trace=tf.TensorArray(tf.float32, size=n_iter))

    def body(s):
        k = s["k"]
        # the step from x^(k) (after any restart at the best point, decided when x^(k) was evaluated)
        s["trace"] = s["trace"].write(k, s["eta"])
        z = project(s["x"] + _bcast(s["eta"]) * tf.sign(s["g"]))
        a = tf.where(k == 0, 1.0, alpha)  # x^(1) is a plain projected step
        x_next = project(s["x"] + a * (z - s["x"]) + (1.0 - a) * (s["x"] - s["x_prev"]))
        logits, g = _input_gradient(classifier, x_next, fn)
        f = fn(logits)
        newly = _wrong(logits, labels) & ~s["fooled"]
        x_fooled = tf.where(_bcast(newly), x_next, s["x_fooled"])
        fooled = s["fooled"] | newly
        better = f > s["f_max"]
        x_max = tf.where(_bcast(better), x_next, s["x_max"])
        g_max = tf.where(_bcast(better), g, s["g_max"])
        f_max = tf.maximum(f, s["f_max"])
        increased = tf.cast(f > s["f"], tf.float32)
        kk = k + 1  # x_next is x^(kk)
        count, eta, eta_check, fmax_check = s["count"], s["eta"], s["eta_check"], s["fmax_check"]

        def checkpoint():
            # the increases counted are those of x^(w_{j-1}+1) .. x^(w_j); x^(kk)'s opens the next window
            cond1 = count < rho * window[kk]
            cond2 = (eta_check == eta) & (fmax_check == f_max)
            halve = cond1 | cond2
            new_eta = tf.where(halve, 0.5 * eta, eta)
            h = _bcast(halve)  # restart from the best point: its gradient and loss replace x^(kk)'s
            return (tf.zeros_like(count) + increased, new_eta, tf.where(h, x_max, x_next), tf.where(h, g_max, g),
                    tf.where(halve, f_max, f), new_eta, f_max)

        def no_checkpoint():
            return count + increased, eta, x_next, g, f, eta_check, fmax_check

        count, eta, x_cur, g_cur, f_cur, eta_check, fmax_check = tf.cond(is_check[kk], checkpoint, no_checkpoint)
        return [dict(k=kk, x=x_cur, x_prev=s["x"], f=f_cur, g=g_cur, eta=eta, x_max=x_max, f_max=f_max,
                     g_max=g_max, count=count, eta_check=eta_check, fmax_check=fmax_check, fooled=fooled,
                     x_fooled=x_fooled, trace=s["trace"])]

    (s,) = tf.while_loop(lambda s: s["k"] < n_iter, body, [state], maximum_iterations=n_iter)
    images = tf.where(_bcast(s["fooled"]), s["x_fooled"], s["x_max"])
    return images, s["fooled"], s["trace"].stack()


def apgd(classifier, images, labels, *, eps, n_iter=100, loss="ce", targets=None, n_restarts=1, seed=0,
         rho=0.75, alpha=0.75, return_trace=False):
    """l_inf APGD (Croce & Hein 2020, Algorithm 1): step 2 * eps, halved at the checkpoints of
    `apgd_checkpoints` when fewer than rho of the steps since the last one raised the loss, or when neither
    the step nor the best loss changed; after a halving it restarts from the best point. Momentum alpha.

    Args:
      loss: "ce" or "dlr". targets: int [B] target classes for the targeted version (CE toward the target, or
        the targeted DLR loss), None for untargeted.
      n_restarts: runs from independent random starts; each example keeps its first success (or last run).
      seed: int; the random starts are stateless, so a seed repeats an attack exactly.
      return_trace: also return the step sizes [n_iter, B] of the last run (each step's eta).

    Returns (images, fooled) -- see the module docstring -- and, with return_trace, the trace.
    """
    if loss not in LOSSES:
        raise ValueError(f"unknown APGD loss {loss!r}; choose one of {LOSSES}.")
    if n_iter < 1 or n_restarts < 1:
        raise ValueError(f"n_iter and n_restarts must be >= 1, got {n_iter} and {n_restarts}.")
    x = tf.stop_gradient(tf.cast(images, tf.float32))
    labels = tf.cast(labels, tf.int32)
    eps = tf.cast(eps, tf.float32)
    best, fooled, trace = None, None, None
    for r in range(n_restarts):
        adv, ok, trace = _apgd_run(classifier, x, labels, eps, tf.stack([tf.cast(seed, tf.int32), r]),
                                   n_iter=n_iter, loss=loss, targets=targets, rho=rho, alpha=alpha)
        if best is None:
            best, fooled = adv, ok
        else:  # keep earlier successes; otherwise take this run's point
            best = tf.where(_bcast(fooled), best, adv)
            fooled |= ok
    return (best, fooled, trace) if return_trace else (best, fooled)


# ------------------------------------------------------------------------------------------------ FAB
def linf_hyperplane_step(x, w, r, lo=-1.0, hi=1.0):
    """The smallest l_inf step d with <w, d> = r and lo <= x + d <= hi, per example ([B, D] tensors, r [B]).

    With the step bounded by tau, the largest reachable <w, d> is sum_i |w_i| min(tau, room_i), room_i being
    the distance to the box in the direction sign(w_i) * sign(r); it is piecewise linear in tau, so sorting the
    rooms gives the smallest tau reaching |r| in closed form. If even tau = infinity falls short (the hyperplane
    lies outside the box), the step goes to the box corner in that direction.
    """
    s = tf.sign(r)[:, None]
    ws = w * s
    a = tf.abs(ws)
    room = tf.where(ws > 0, hi - x, x - lo)
    room = tf.maximum(room, 0.0)
    order = tf.argsort(room, axis=-1)
    room_sorted = tf.gather(room, order, batch_dims=1)
    a_sorted = tf.gather(a, order, batch_dims=1)
    reached = tf.cumsum(a_sorted * room_sorted, axis=-1)  # sum over the coordinates already at their room
    rest = tf.reduce_sum(a, -1, keepdims=True) - tf.cumsum(a_sorted, axis=-1)  # weight still growing with tau
    h = reached + room_sorted * rest  # h(room_(k)): the reachable <w, d> at tau = room_(k)
    need = tf.abs(r)[:, None]
    k = tf.reduce_sum(tf.cast(h < need, tf.int32), -1)  # the first k with h >= need (h is non-decreasing)
    dim = tf.shape(x)[-1]
    feasible = k < dim
    kprev = tf.maximum(k - 1, 0)
    reached_prev = tf.where(k > 0, tf.gather(reached, kprev, batch_dims=1), 0.0)
    rest_prev = tf.where(k > 0, tf.gather(rest, kprev, batch_dims=1), tf.reduce_sum(a, -1))
    tau = tf.math.divide_no_nan(tf.squeeze(need, -1) - reached_prev, rest_prev)
    tau = tf.where(feasible, tau, np.inf)
    return tf.sign(ws) * tf.minimum(tau[:, None], room)  # sign(ws): the direction that moves <w, d> toward r


def _fab_run(classifier, x, labels, targets, *, n_iter, alpha_max, eta, beta):
    """One FAB-T run from the clean point. Returns (smallest-norm misclassified image, its l_inf norm)."""
    shape = tf.shape(x)
    flat = lambda t: tf.reshape(t, [shape[0], -1])  # noqa: E731
    x0 = flat(x)
    num_classes = tf.shape(class_logits(classifier, x))[-1]
    onehot_t = tf.one_hot(targets, num_classes)
    onehot_y = tf.one_hot(labels, num_classes)

    def diff(logits):  # z_t - z_y: positive once the target beats the true class
        return tf.reduce_sum((onehot_t - onehot_y) * logits, -1)

    def body(k, xk, best, best_norm):
        logits, grad = _input_gradient(classifier, tf.reshape(xk, shape), diff)
        g, w = diff(logits), flat(grad)
        d = linf_hyperplane_step(xk, w, -g)  # onto the linearised boundary from the current point
        # ... and from the original point, onto the same hyperplane: <w, x0 + d0 - xk> = -g
        d0 = linf_hyperplane_step(x0, w, -g - tf.reduce_sum(w * (x0 - xk), -1))
        nd = tf.reduce_max(tf.abs(d), -1)
        nd0 = tf.reduce_max(tf.abs(d0), -1)
        a = tf.clip_by_value(tf.math.divide_no_nan(nd, nd + nd0), 0.0, alpha_max)[:, None]
        x_new = tf.clip_by_value((1.0 - a) * (xk + eta * d) + a * (x0 + eta * d0), -1.0, 1.0)
        adv = _wrong(class_logits(classifier, tf.reshape(x_new, shape)), labels)
        norm = tf.reduce_max(tf.abs(x_new - x0), -1)
        improve = adv & (norm < best_norm)
        best = tf.where(improve[:, None], x_new, best)
        best_norm = tf.where(improve, norm, best_norm)
        x_new = tf.where(adv[:, None], (1.0 - beta) * x0 + beta * x_new, x_new)  # back toward the original
        return k + 1, x_new, best, best_norm

    _, _, best, best_norm = tf.while_loop(
        lambda k, *_: k < n_iter, body,
        (tf.constant(0), x0, x0, tf.fill([shape[0]], np.inf)), maximum_iterations=n_iter)
    return tf.reshape(best, shape), best_norm


def fab_targeted(classifier, images, labels, targets, *, n_iter=100, alpha_max=0.1, eta=1.05, beta=0.9):
    """FAB-T, l_inf: the smallest perturbation it finds that makes the example misclassified, linearising
    the boundary between the true class and `targets`. Returns (images, l_inf norms), inf where nothing was
    found; an example is broken at eps when its norm is <= eps."""
    x = tf.stop_gradient(tf.cast(images, tf.float32))
    return _fab_run(classifier, x, tf.cast(labels, tf.int32), tf.cast(targets, tf.int32),
                    n_iter=n_iter, alpha_max=alpha_max, eta=eta, beta=beta)


# ------------------------------------------------------------------------------------------------ Square
def square_p(i, n_queries, p_init=0.8):
    """The fraction of pixels Square changes at query i: p_init halved at the paper's schedule (queries 10,
    50, 200, 500, 1000, 2000, 4000, 6000, 8000 of a 10,000-query budget, rescaled to n_queries)."""
    it = int(i / n_queries * 10000)
    for bound, div in ((8000, 512), (6000, 256), (4000, 128), (2000, 64), (1000, 32), (500, 16), (200, 8), (50, 4),
                       (10, 2)):
        if it > bound:
            return p_init / div
    return p_init


def _square_chunk(classifier, x, labels, delta, best_margin, sizes, seed, eps):
    """len(sizes) Square queries: each replaces one random s x s window of the perturbation by a random
    +-eps per channel and keeps it where the margin falls. Only the logits are used."""
    b, h, w = tf.shape(x)[0], tf.shape(x)[1], tf.shape(x)[2]
    c = x.shape[-1]
    rows = tf.range(h)[None, :, None, None]
    cols = tf.range(w)[None, None, :, None]

    def body(i, delta, best_margin, fooled):
        s = sizes[i]
        key = tf.stack([seed, i])
        corner = tf.random.stateless_uniform([b, 2], key, 0, 1)
        vh = tf.cast(corner[:, 0] * tf.cast(h - s + 1, tf.float32), tf.int32)[:, None, None, None]
        vw = tf.cast(corner[:, 1] * tf.cast(w - s + 1, tf.float32), tf.int32)[:, None, None, None]
        window = (rows >= vh) & (rows < vh + s) & (cols >= vw) & (cols < vw + s)
        signs = tf.sign(tf.random.stateless_uniform([b, 1, 1, c], key + 1, -1.0, 1.0))
        signs = tf.where(signs == 0, 1.0, signs)
        proposal = eps * signs
        # a window already holding exactly this proposal would waste the query: flip it
        same = tf.reduce_all(tf.equal(tf.where(window, delta, proposal), proposal), axis=[1, 2, 3])
        proposal = tf.where(_bcast(same), -proposal, proposal)
        candidate = tf.where(window, proposal, delta)
        logits = class_logits(classifier, tf.clip_by_value(x + candidate, -1.0, 1.0))
        m = margin(logits, labels)
        take = (m < best_margin) & ~fooled
        delta = tf.where(_bcast(take), candidate, delta)
        best_margin = tf.where(take, m, best_margin)
        return i + 1, delta, best_margin, fooled | (take & _wrong(logits, labels))

    fooled0 = tf.zeros([b], tf.bool)
    _, delta, best_margin, fooled = tf.while_loop(
        lambda i, *_: i < tf.shape(sizes)[0], body, (tf.constant(0), delta, best_margin, fooled0))
    return delta, best_margin, fooled


def square_sizes(start, stop, n_queries, p_init, h, w):
    """The window side s of queries start..stop-1: round(sqrt(p * h * w)), between 1 and h - 1."""
    return np.array([min(max(int(round(math.sqrt(square_p(i, n_queries, p_init) * h * w))), 1), h - 1)
                     for i in range(start, stop)], np.int32)


# ------------------------------------------------------------------------------------------------ stages
class _Compiled:
    """The attacks as tf.functions with an open batch dimension, traced once per classifier, image shape and
    setting (loss, iterations), so attacking batches of every size reuses one graph."""

    def __init__(self, classifier, image_shape):
        self.classifier = classifier
        x = tf.TensorSpec([None, *image_shape], tf.float32)
        y = tf.TensorSpec([None], tf.int32)
        self.specs = dict(x=x, y=y, scalar=tf.TensorSpec([], tf.float32), seed=tf.TensorSpec([], tf.int32),
                          sizes=tf.TensorSpec([None], tf.int32), row=tf.TensorSpec([None], tf.float32))
        self.fns = {}
        self.logits = tf.function(lambda x: class_logits(classifier, x), input_signature=[x], autograph=False)

    def _traced(self, key, fn, *specs):
        if key not in self.fns:
            self.fns[key] = tf.function(fn, input_signature=[self.specs[s] for s in specs], autograph=False)
        return self.fns[key]

    def apgd(self, loss, targeted, n_iter, x, y, t, eps, seed):
        fn = self._traced(("apgd", loss, targeted, n_iter), lambda x, y, t, e, s: apgd(
            self.classifier, x, y, eps=e, n_iter=n_iter, loss=loss, targets=t if targeted else None, seed=s),
            "x", "y", "y", "scalar", "seed")
        return fn(x, y, t, tf.constant(eps, tf.float32), tf.constant(seed, tf.int32))

    def fab(self, n_iter, x, y, t):
        fn = self._traced(("fab", n_iter), lambda x, y, t: fab_targeted(self.classifier, x, y, t, n_iter=n_iter),
                          "x", "y", "y")
        return fn(x, y, t)

    def square(self, x, y, delta, best, sizes, seed, eps):
        fn = self._traced(("square",), lambda x, y, d, m, z, s, e: _square_chunk(self.classifier, x, y, d, m, z, s, e),
                          "x", "y", "x", "row", "sizes", "seed", "scalar")
        return fn(x, y, delta, best, sizes, tf.constant(seed, tf.int32), tf.constant(eps, tf.float32))


def compiled(classifier, image_shape):
    """The classifier's compiled attacks, stored on it so they live and die with it (attacks.traces_of)."""
    key = ("autoattack", tuple(image_shape))
    store = traces_of(classifier)
    if key not in store:
        store[key] = _Compiled(classifier, image_shape)
    return store[key]


def _batched(n, batch_size):
    return [np.arange(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


def _square_stage(comp, x, y, eps, n_queries, seed, batch_size, progress, chunk=100, p_init=0.8):
    """Square on x (numpy) in batches, `chunk` queries per compiled call; fooled examples leave the batch."""
    n = len(x)
    out_adv, out_fooled = x.copy(), np.zeros(n, bool)
    h, w = x.shape[1], x.shape[2]
    rng = np.random.default_rng(seed)
    for idx in _batched(n, batch_size):
        xb, yb = x[idx], y[idx]
        stripes = rng.choice([-1.0, 1.0], size=(len(idx), 1, w, x.shape[3])).astype(np.float32)
        delta = np.broadcast_to(eps * stripes, xb.shape).copy()  # the vertical-stripe initialisation
        logits = comp.logits(np.clip(xb + delta, -1, 1)).numpy()
        best = margin(logits, yb).numpy()
        fooled = np.argmax(logits, -1) != yb
        alive = np.flatnonzero(~fooled)
        for start in range(1, n_queries, chunk):  # query 0 was the initialisation
            if not len(alive):
                break
            sizes = square_sizes(start, min(start + chunk, n_queries), n_queries, p_init, h, w)
            d, m, f = comp.square(xb[alive], yb[alive], delta[alive], best[alive], sizes,
                                  int(rng.integers(2**31 - 1)), eps)
            delta[alive], best[alive] = d.numpy(), m.numpy()
            newly = alive[f.numpy()]
            fooled[newly] = True
            alive = alive[~f.numpy()]
            progress.note(left=int(len(alive)))
        out_adv[idx] = np.clip(xb + delta, -1, 1)
        out_fooled[idx] = fooled
        progress.update(1)
    return out_adv, out_fooled


def _white_box_stage(comp, stage, x, y, targets, eps, cfg, seed, batch_size, num_classes, progress):
    """One white-box stage (APGD-CE, APGD-T or FAB-T, one target) on the still-robust examples, batch by batch:
    (adversarial images, fooled)."""
    adv, fooled = np.empty_like(x), np.zeros(len(x), bool)
    for part in _batched(len(x), batch_size):
        if stage == "fab-t":
            a, f = comp.fab(cfg["fab_iterations"], x[part], y[part], targets[part])
            f = f.numpy() <= eps
            a = np.where(f[:, None, None, None], a.numpy(), x[part])
        else:
            # APGD-T's targeted DLR needs 4 classes; with fewer, targeted CE takes its place
            loss, targeted = ("ce", False) if stage == "apgd-ce" else ("dlr" if num_classes >= 4 else "ce", True)
            a, f = comp.apgd(loss, targeted, cfg["apgd_iterations"], x[part], y[part], targets[part], eps, seed)
            a, f = a.numpy(), f.numpy()
        adv[part], fooled[part] = a, f
        progress.update(1)
        progress.note(left=int(len(x) - fooled.sum()))
    return adv, fooled


def autoattack(classifier, images, labels, *, eps, batch_size=200, seed=0, stages=STAGES, settings=None,
               verbose=True):
    """AutoAttack's standard l_inf evaluation on numpy images [N, H, W, C] in [-1, 1] and int labels [N].

    Each stage attacks only the examples still robust after the previous ones (the clean misclassified are
    never attacked). Returns a dict: robust [N] bool, images [N, ...] (the image that decided each example:
    the clean one if it was misclassified, the successful adversarial one, or the input if robust), stages
    (robust accuracy after each stage, examples attacked, seconds), clean accuracy.
    """
    cfg = {**STANDARD, **(settings or {})}
    x = np.asarray(images, np.float32)
    y = np.asarray(labels, np.int32)
    n = len(x)
    comp = compiled(classifier, x.shape[1:])
    logits = np.concatenate([comp.logits(x[i]).numpy() for i in _batched(n, batch_size)]) if n else np.zeros((0, 1))
    robust = np.argmax(logits, -1) == y if n else np.zeros(0, bool)
    decided = x.copy()
    num_classes = logits.shape[-1]
    order = np.argsort(-logits, axis=-1)  # targets: the classes with the highest clean logits, true one aside
    n_targets = min(cfg["targets"], num_classes - 1)
    rows = [{"attack": "clean", "accuracy": float(robust.mean()) if n else 0.0, "attacked": n, "seconds": 0.0}]
    eps = float(eps)
    for stage in stages:
        if stage not in STAGES:
            raise ValueError(f"unknown AutoAttack stage {stage!r}; choose from {STAGES}.")
        t0 = time.time()
        before = np.flatnonzero(robust)
        runs = [None] if stage in ("apgd-ce", "square") else list(range(n_targets))
        progress = Progress(f"autoattack eps {eps:g} {stage}", len(runs) * len(_batched(len(before), batch_size)),
                            unit="batches", enabled=verbose)
        for target_rank in runs:
            idx = np.flatnonzero(robust)
            if not len(idx):
                break
            progress.note(left=int(len(idx)))
            if stage == "square":
                adv, fooled = _square_stage(comp, x[idx], y[idx], eps, cfg["square_queries"], seed, batch_size,
                                            progress)
            else:
                targets = order[idx, target_rank + 1] if target_rank is not None else y[idx]
                adv, fooled = _white_box_stage(comp, stage, x[idx], y[idx], targets.astype(np.int32), eps, cfg,
                                               seed + (target_rank or 0), batch_size, num_classes, progress)
            _check_adversarial(comp, x[idx][fooled], adv[fooled], y[idx][fooled], eps, stage)
            decided[idx[fooled]] = adv[fooled]
            robust[idx[fooled]] = False
        progress.close()
        rows.append({"attack": stage, "accuracy": float(robust.mean()) if n else 0.0, "attacked": int(len(before)),
                     "broken": int(len(before) - robust.sum()), "seconds": round(time.time() - t0, 2)})
    return {"robust": robust, "images": decided, "stages": rows, "clean_accuracy": rows[0]["accuracy"],
            "settings": cfg, "eps": eps}


def _check_adversarial(comp, x, adv, y, eps, stage):
    """Every image an attack reports as successful must be misclassified, in the ball and in the box."""
    if not len(x):
        return
    dist = np.abs(adv - x).reshape(len(x), -1).max(-1)
    wrong = np.argmax(comp.logits(adv).numpy(), -1) != y
    if dist.max() > eps + 1e-5 or adv.min() < -1 - 1e-6 or adv.max() > 1 + 1e-6 or not wrong.all():
        raise AssertionError(f"AutoAttack stage {stage} returned an invalid adversarial example (l_inf "
                             f"{dist.max():.4g} vs eps {eps:.4g}, {int((~wrong).sum())} not misclassified).")


def zero_gradient_fraction(classifier, images, labels, batch_size=200):
    """The fraction of examples whose CE input gradient is exactly zero everywhere (a gradient-masking sign)."""
    zero = []
    for idx in _batched(len(images), batch_size):
        x = tf.constant(images[idx], tf.float32)
        _, g = _input_gradient(classifier, x, lambda logits: class_ce(logits, labels[idx]))
        zero.append(tf.reduce_all(tf.equal(tf.reshape(g, [len(idx), -1]), 0.0), -1).numpy())
    return float(np.concatenate(zero).mean()) if zero else 0.0
