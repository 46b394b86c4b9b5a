"""l_inf projected gradient descent (Madry et al.) on images in [-1, 1].

`pgd` works on any callable that maps images to class logits: a Keras classifier (called with
training=False), a Discriminator (its class head is used), or a loaded SavedModel signature
(a dict output with a "logits" key). It differentiates only with respect to the input.
"""
from __future__ import annotations

import keras
import tensorflow as tf

from robgan_tf.config import ATTACK_LOSSES as LOSSES
from robgan_tf.config import check_attack
from robgan_tf.losses import class_ce


def classifier_outputs(model, images):
    """Calls `model` in inference mode and returns its output as float32 (logits or a tuple)."""
    signature = getattr(model, "structured_input_signature", None)
    if signature is not None and signature[1]:  # a SavedModel signature: keyword arguments only
        out = model(**{next(iter(signature[1])): images})
    elif isinstance(model, keras.layers.Layer):
        out = model(images, training=False)
    else:  # any other callable images -> logits
        out = model(images)
    if isinstance(out, dict):
        out = out["logits"]
    return tf.nest.map_structure(lambda t: tf.cast(t, tf.float32), out)


def traces_of(classifier):
    """A dict of traced functions stored ON the classifier, so they live and die with it (a module-level
    cache would keep every classifier ever evaluated alive); a fresh dict when it takes no attributes."""
    try:
        return classifier.__dict__.setdefault("_robgan_traces", {})
    except (AttributeError, TypeError):
        return {}


def _class_logits(out):
    return out[1] if isinstance(out, (tuple, list)) else out


def class_logits(model, images):
    """float32 class logits of any classifier form: Keras model, D (two heads), SavedModel signature, callable."""
    return _class_logits(classifier_outputs(model, images))


def predict(model, images):
    """int32 predicted classes of any classifier form."""
    return tf.argmax(class_logits(model, images), -1, output_type=tf.int32)


def per_example_loss(outputs, labels, loss="ce", targeted=False):
    """The attack objective per example (the attacker ascends it).

    - "ce": cross-entropy of the class logits (targeted: minus the CE toward `labels`).
    - "margin": Carlini-Wagner logit margin max_{j != y} z_j - z_y; unlike CE it does not saturate on
      very confident examples (targeted: z_t - max_{j != t} z_j).
    - "two_head": the Rob-GAN authors' attack inside GAN training, on a two-head discriminator's
      (real/fake logit, class logits): 0.5 * BCE(logit, real) + 0.5 * CE(class logits, y).
    """
    labels = tf.cast(labels, tf.int32)
    if loss == "two_head":
        if not isinstance(outputs, (tuple, list)):
            raise ValueError("loss='two_head' needs a model returning (real/fake logit, class logits).")
        logit, logits = outputs
        return 0.5 * tf.nn.softplus(-logit) + 0.5 * class_ce(logits, labels)
    logits = _class_logits(outputs)
    if loss == "ce":
        ce = class_ce(logits, labels)
        return -ce if targeted else ce
    if loss == "margin":
        onehot = tf.one_hot(labels, tf.shape(logits)[-1], dtype=logits.dtype)
        true = tf.reduce_sum(onehot * logits, axis=-1)
        other = tf.reduce_max(logits - 1e9 * onehot, axis=-1)
        return true - other if targeted else other - true
    raise ValueError(f"Unknown attack loss {loss!r}; choose one of {LOSSES}.")


def default_step_size(eps, steps):
    """2.5 * eps / steps (Madry et al.): enough to cross the ball 1.25 times. FGSM (1 step) gets eps."""
    return eps if steps == 1 else 2.5 * eps / steps


def _project(x_adv, x, eps):
    return tf.clip_by_value(tf.clip_by_value(x_adv, x - eps, x + eps), -1.0, 1.0)


def _one_run(model, x, labels, eps, steps, step_size, random_start, loss, targeted, rng, need_loss):
    if random_start:
        noise = (rng.uniform(tf.shape(x), -eps, eps) if rng is not None
                 else tf.random.uniform(tf.shape(x), -eps, eps))
        x_adv = _project(x + noise, x, eps)
    else:
        x_adv = x

    def body(i, x_adv):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(x_adv)
            objective = tf.reduce_sum(per_example_loss(classifier_outputs(model, x_adv), labels, loss, targeted))
        # A model whose output does not depend on its input through differentiable ops (e.g. it quantises
        # the input) has a zero gradient, not an error: PGD then stays put, as on any masked gradient.
        grad = tape.gradient(objective, x_adv, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        # A loaded signature with open dimensions returns a gradient of unknown shape; the loop needs x's.
        return i + 1, tf.ensure_shape(_project(x_adv + step_size * tf.sign(grad), x, eps), x.shape)

    _, x_adv = tf.while_loop(lambda i, _: i < steps, body, (tf.constant(0), x_adv),
                             maximum_iterations=steps)
    # The final loss costs one more forward pass; only restarts and return_loss need it.
    final_loss = per_example_loss(classifier_outputs(model, x_adv), labels, loss, targeted) if need_loss else None
    return tf.stop_gradient(x_adv), final_loss


def pgd(classifier, images, labels, *, eps, steps, step_size=None, random_start=False, restarts=1,
        loss="ce", targeted=False, rng=None, return_loss=False):
    """l_inf PGD: `steps` sign-gradient ascent steps on the attack loss, projected each step.

    Args:
      classifier: callable images -> class logits (or a two-head discriminator, or a SavedModel
        signature returning {"logits": ...}). Called with training=False when it accepts it.
      images: float tensor [B, H, W, C] in [-1, 1]. The perturbation is computed in float32.
      labels: int [B]; the true labels (or the target labels when targeted=True).
      eps: l_inf radius, in the same [-1, 1] units as the images (8/255 on [0, 1] = 0.0627 here). A Python
        number, or a scalar tensor (then one tf.function trace serves every radius; it is not range-checked).
      steps: number of gradient steps; steps=1 with the default step size is FGSM.
      step_size: per-step size (number or scalar tensor); None means 2.5 * eps / steps (eps for a single step).
      random_start: start from a uniform point in the ball instead of the clean image.
      restarts: independent random starts; per example the result with the highest loss is kept.
      loss: "ce", "margin" or "two_head" (see `per_example_loss`).
      targeted: move toward `labels` instead of away from them ("ce" and "margin").
      rng: optional tf.random.Generator for the random start (reproducible, distribution-aware).
      return_loss: also return the per-example attack loss of the returned images.

    Returns:
      Adversarial images (a tensor, no gradient), always inside the eps-ball around `images` and
      inside [-1, 1]; with return_loss, (images, per-example loss).
    """
    eps = tf.cast(eps, tf.float32) if tf.is_tensor(eps) else float(eps)
    steps = int(steps)
    check_attack(eps, steps, step_size, random_start, int(restarts), loss)
    if step_size is None:
        step_size = default_step_size(eps, max(steps, 1))
    else:
        step_size = tf.cast(step_size, tf.float32) if tf.is_tensor(step_size) else float(step_size)
    x = tf.stop_gradient(tf.cast(images, tf.float32))
    if steps == 0 or (not tf.is_tensor(eps) and eps == 0):
        best = x
        best_loss = per_example_loss(classifier_outputs(classifier, x), labels, loss, targeted) if return_loss else None
    else:
        best, best_loss = None, None
        for _ in range(int(restarts)):
            x_adv, adv_loss = _one_run(classifier, x, labels, eps, steps, step_size, random_start, loss,
                                       targeted, rng, need_loss=restarts > 1 or return_loss)
            if best is None:
                best, best_loss = x_adv, adv_loss
            else:
                better = adv_loss > best_loss
                best = tf.where(better[:, None, None, None], x_adv, best)
                best_loss = tf.maximum(adv_loss, best_loss)
    return (best, best_loss) if return_loss else best
