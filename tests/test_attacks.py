import keras
import numpy as np
import pytest
import tensorflow as tf

from robgan_tf.attacks import default_step_size, per_example_loss, pgd
from robgan_tf.models import Discriminator


class Linear(keras.Model):
    """Two-class linear model: logits = [0, scale * <w, x>]."""

    def __init__(self, w, scale=1.0):
        super().__init__()
        self.w = tf.constant(w, tf.float32)
        self.scale = scale

    def call(self, x, training=None):
        s = self.scale * tf.reduce_sum(tf.reshape(x, [tf.shape(x)[0], -1]) * tf.reshape(self.w, [1, -1]), 1)
        return tf.stack([tf.zeros_like(s), s], axis=1)


def _linear_case(seed=0):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(4, 4, 1)).astype(np.float32)
    x = rng.uniform(-1, 1, size=(6, 4, 4, 1)).astype(np.float32)
    x[0] = 0.99  # near the top of the range: the projection onto [-1, 1] matters
    return Linear(w), w, x


def test_tensor_eps_gives_the_closed_form_for_every_radius_from_one_trace():
    model, w, x = _linear_case()
    labels = np.ones(6, np.int32)
    fn = tf.function(lambda x, eps, step: pgd(model, x, labels, eps=eps, steps=5, step_size=step))
    for eps in (0.0, 0.02, 0.05):
        adv = fn(tf.constant(x), tf.constant(eps), tf.constant(eps / 2)).numpy()
        np.testing.assert_allclose(adv, np.clip(x - eps * np.sign(w)[None], -1, 1), atol=1e-6)
        np.testing.assert_allclose(adv, pgd(model, x, labels, eps=eps, steps=5, step_size=eps / 2).numpy(), atol=1e-6)
    assert fn.experimental_get_tracing_count() == 1


@pytest.mark.parametrize("steps", [1, 7])
def test_pgd_on_linear_model_reaches_closed_form_worst_case(steps):
    model, w, x = _linear_case()
    eps = 0.05
    adv = pgd(model, x, np.ones(6, np.int32), eps=eps, steps=steps).numpy()
    expected = np.clip(x - eps * np.sign(w)[None], -1, 1)
    np.testing.assert_allclose(adv, expected, atol=1e-6)
    # ... and attacking label 0 pushes the other way
    adv0 = pgd(model, x, np.zeros(6, np.int32), eps=eps, steps=steps).numpy()
    np.testing.assert_allclose(adv0, np.clip(x + eps * np.sign(w)[None], -1, 1), atol=1e-6)


def test_pgd_stays_in_ball_and_range_and_raises_loss():
    d = Discriminator(4, 32, "tiny", channels=1)
    clf = d.classifier()
    x = tf.random.uniform([8, 32, 32, 1], -1, 1)
    x = tf.concat([x[:4], tf.sign(x[4:])], 0)  # half the batch sits on the range's boundary
    y = tf.constant([0, 1, 2, 3, 0, 1, 2, 3])
    eps = 0.1
    adv, adv_loss = pgd(clf, x, y, eps=eps, steps=5, random_start=True, restarts=2, return_loss=True)
    delta = (adv - x).numpy()
    assert np.abs(delta).max() <= eps + 1e-6
    assert adv.numpy().min() >= -1.0 and adv.numpy().max() <= 1.0
    assert np.abs(delta).max() > 0.5 * eps  # it did move
    clean_loss = per_example_loss(clf(x, training=False), y).numpy()
    assert (adv_loss.numpy() >= clean_loss - 1e-5).mean() >= 0.9
    assert adv_loss.numpy().mean() > clean_loss.mean()


def test_restarts_never_lower_the_loss():
    d = Discriminator(3, 32, "tiny", channels=1)
    clf = d.classifier()
    x = tf.random.uniform([8, 32, 32, 1], -1, 1)
    y = tf.constant([0, 1, 2, 0, 1, 2, 0, 1])
    _, one = pgd(clf, x, y, eps=0.05, steps=2, random_start=True, restarts=1,
                 rng=tf.random.Generator.from_seed(7), return_loss=True)
    _, four = pgd(clf, x, y, eps=0.05, steps=2, random_start=True, restarts=4,
                  rng=tf.random.Generator.from_seed(7), return_loss=True)
    assert np.all(four.numpy() >= one.numpy() - 1e-6)


def test_margin_succeeds_where_ce_saturates():
    rng = np.random.default_rng(1)
    w = rng.normal(size=(4, 4, 1)).astype(np.float32)
    x = (0.01 * np.sign(w) / np.abs(w).sum())[None].astype(np.float32)  # <w, x> = 0.01
    model = Linear(w, scale=2e4)  # logit 200: softmax is exactly one-hot in float32, CE grad is 0
    y = np.ones(1, np.int32)
    eps = 0.02
    assert np.argmax(model(x).numpy(), 1)[0] == 1
    ce_adv = pgd(model, x, y, eps=eps, steps=5, loss="ce")
    margin_adv = pgd(model, x, y, eps=eps, steps=5, loss="margin")
    np.testing.assert_array_equal(ce_adv.numpy(), x)  # saturated: no gradient, no movement
    assert np.argmax(model(margin_adv).numpy(), 1)[0] == 0


def test_targeted_attack_moves_toward_target():
    model, w, x = _linear_case()
    adv = pgd(model, x, np.ones(6, np.int32), eps=0.05, steps=3, targeted=True).numpy()
    np.testing.assert_allclose(adv, np.clip(x + 0.05 * np.sign(w)[None], -1, 1), atol=1e-6)


def test_two_head_loss_uses_both_heads():
    logit = tf.constant([0.0, 3.0])
    cls = tf.constant([[0.0, 0.0], [5.0, 0.0]])
    got = per_example_loss((logit, cls), tf.constant([0, 1]), "two_head").numpy()
    sp = np.log1p(np.exp(-np.array([0.0, 3.0])))
    ce = np.array([np.log(2.0), np.log(1 + np.exp(5.0))])
    np.testing.assert_allclose(got, 0.5 * sp + 0.5 * ce, rtol=1e-5)
    with pytest.raises(ValueError, match="two_head"):
        per_example_loss(cls, tf.constant([0, 1]), "two_head")


def test_pgd_only_differentiates_the_input_and_runs_under_xla():
    d = Discriminator(3, 32, "tiny", channels=1)
    x = tf.random.uniform([4, 32, 32, 1], -1, 1)
    y = tf.constant([0, 1, 2, 0])
    eager = pgd(d, x, y, eps=0.05, steps=3, loss="two_head")
    xla = tf.function(lambda a, b: pgd(d, a, b, eps=0.05, steps=3, loss="two_head"), jit_compile=True)(x, y)
    np.testing.assert_allclose(eager.numpy(), xla.numpy(), atol=1e-5)
    with tf.GradientTape() as tape:
        tape.watch(x)
        adv = pgd(d.classifier(), x, y, eps=0.05, steps=1)
    assert tape.gradient(tf.reduce_sum(adv), d.trainable_variables[0]) is None


def test_pgd_on_a_loaded_savedmodel_signature(tmp_path):
    model, w, x = _linear_case()

    class Module(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4, 4, 1], tf.float32)])
        def serve(self, images):
            return {"logits": model(images)}

    m = Module()
    tf.saved_model.save(m, str(tmp_path), signatures={"serving_default": m.serve})
    sig = tf.saved_model.load(str(tmp_path)).signatures["serving_default"]
    adv = pgd(sig, x, np.ones(6, np.int32), eps=0.05, steps=2).numpy()
    np.testing.assert_allclose(adv, np.clip(x - 0.05 * np.sign(w)[None], -1, 1), atol=1e-6)


def test_argument_validation_and_defaults():
    model, _, x = _linear_case()
    y = np.ones(6, np.int32)
    assert default_step_size(0.1, 1) == 0.1 and default_step_size(0.1, 10) == pytest.approx(0.025)
    np.testing.assert_array_equal(pgd(model, x, y, eps=0.0, steps=5).numpy(), x)
    with pytest.raises(ValueError, match="eps"):
        pgd(model, x, y, eps=-0.1, steps=3)
    with pytest.raises(ValueError, match="random_start"):
        pgd(model, x, y, eps=0.1, steps=3, restarts=3)
    with pytest.raises(ValueError, match="attack loss must be one of"):
        pgd(model, x, y, eps=0.1, steps=3, loss="l2")
