"""AutoAttack's attacks against closed-form answers on linear classifiers, and Square against gradient masking."""
import numpy as np
import pytest
import tensorflow as tf

from robgan_tf import autoattack as aa
from robgan_tf.attacks import pgd


def linear(w, b, quantize=False):
    """logits = flatten(x) @ w + b; quantize: the input is rounded first, so every input gradient is zero."""
    w, b = tf.constant(w, tf.float32), tf.constant(b, tf.float32)

    def f(x):
        flat = tf.reshape(x, [tf.shape(x)[0], -1])
        if quantize:
            flat = tf.stop_gradient(tf.round(flat * 100.0) / 100.0)
        return flat @ w + b
    return f


def problem(seed, n=64, k=10, shape=(4, 4, 1), spread=0.3):
    rng = np.random.default_rng(seed)
    d = int(np.prod(shape))
    w = rng.normal(size=(d, k)).astype(np.float32)
    b = rng.normal(size=k).astype(np.float32)
    x = rng.uniform(-spread, spread, size=(n, *shape)).astype(np.float32)
    y = np.argmax(x.reshape(n, -1) @ w + b, -1).astype(np.int32)  # every example starts correctly classified
    return w, b, x, y


def closed_form_robust(w, b, x, y, eps):
    """Linear model, box not binding: robust iff z_j - z_y + eps * ||w_j - w_y||_1 < 0 for every j != y."""
    z = x.reshape(len(x), -1) @ w + b
    robust = np.ones(len(x), bool)
    for j in range(w.shape[1]):
        dw = np.abs(w[:, j][None] - w[:, y].T).sum(-1)
        gap = z[:, j] - z[np.arange(len(x)), y] + eps * dw
        robust &= (j == y) | (gap < 0)
    return robust


def closed_form_distance(w, b, x, y):
    """The minimal l_inf perturbation that misclassifies each example (box not binding)."""
    z = x.reshape(len(x), -1) @ w + b
    dist = np.full(len(x), np.inf)
    for j in range(w.shape[1]):
        dw = np.abs(w[:, j][None] - w[:, y].T).sum(-1)
        with np.errstate(invalid="ignore"):  # j == y: 0 / 0, masked below
            d = (z[np.arange(len(x)), y] - z[:, j]) / dw
        dist = np.where(j == y, dist, np.minimum(dist, d))
    return dist


def test_apgd_checkpoints_are_the_papers():
    # p = 0, .22, .41, .57, .70, .80, .87, .93, .99 (Croce & Hein 2020, Sec. 3.2), times 100 iterations
    assert aa.apgd_checkpoints(100) == [0, 22, 41, 57, 70, 80, 87, 93, 99]
    assert aa.apgd_checkpoints(10) == [0, 3, 5, 6, 7, 8, 9, 10]


def test_apgd_step_halves_exactly_after_each_checkpoint():
    # The logits ignore the input: the loss never rises, so condition 1 holds at every checkpoint w_j and the
    # step of iteration w_j + 1 onward is halved once more.
    const = lambda x: tf.zeros([tf.shape(x)[0], 10]) + tf.range(10, dtype=tf.float32)  # noqa: E731
    x = tf.zeros([3, 4, 4, 1])
    eps = 0.1
    _, _, trace = aa.apgd(const, x, tf.zeros([3], tf.int32), eps=eps, n_iter=100, return_trace=True)
    checks = aa.apgd_checkpoints(100)[1:]
    expected = [2 * eps * 0.5 ** sum(w + 1 <= k for w in checks) for k in range(100)]
    np.testing.assert_allclose(trace.numpy(), np.tile(np.array(expected, np.float32)[:, None], (1, 3)), rtol=1e-6)
    assert trace.numpy()[23, 0] == pytest.approx(eps) and trace.numpy()[22, 0] == pytest.approx(2 * eps)


def test_apgd_ce_reaches_the_corner_of_a_binary_linear_classifier():
    # Two classes: CE grows with the logit margin, whose maximum over the ball is x + eps * sign(w_1 - w_0).
    rng = np.random.default_rng(0)
    w = rng.normal(size=(16, 2)).astype(np.float32)
    x = rng.uniform(-0.3, 0.3, size=(20, 4, 4, 1)).astype(np.float32)
    y = np.argmax(x.reshape(20, -1) @ w, -1).astype(np.int32)
    eps = 1e-3  # too small to flip any example here, so the result is the best (highest-loss) point
    assert closed_form_robust(w, np.zeros(2, np.float32), x, y, eps).all()
    adv, fooled = aa.apgd(linear(w, np.zeros(2)), x, y, eps=eps, n_iter=20)
    direction = np.sign(w[:, 1 - y].T - w[:, y].T).reshape(x.shape)
    np.testing.assert_allclose(adv.numpy(), x + eps * direction, atol=1e-6)
    assert not fooled.numpy().any()


@pytest.mark.parametrize("stage_set", [("apgd-t",), ("apgd-ce", "apgd-t")])
def test_apgd_finds_exactly_the_closed_form_non_robust_set(stage_set):
    w, b, x, y = problem(1, n=80)
    eps = 0.05
    out = aa.autoattack(linear(w, b), x, y, eps=eps, stages=stage_set, settings=dict(apgd_iterations=50),
                        verbose=False)
    np.testing.assert_array_equal(out["robust"], closed_form_robust(w, b, x, y, eps))
    assert 0.2 < out["robust"].mean() < 0.8  # a non-trivial case
    accs = [r["accuracy"] for r in out["stages"]]
    assert accs == sorted(accs, reverse=True)


def test_dlr_loss_values():
    logits = tf.constant([[3.0, 1.0, 0.0, -1.0]])
    # untargeted, y = 0: -(3 - 1) / (3 - 0) ; targeted to 1: -(3 - 1) / (3 - (0 + -1) / 2)
    assert float(aa.dlr_loss(logits, [0])[0]) == pytest.approx(-2 / 3)
    assert float(aa.dlr_loss(logits, [0], targets=[1])[0]) == pytest.approx(-2 / 3.5)
    # invariant to shifting and scaling the logits
    assert float(aa.dlr_loss(5 * logits + 7, [2])[0]) == pytest.approx(float(aa.dlr_loss(logits, [2])[0]), rel=1e-5)
    with pytest.raises(ValueError, match="at least 4 classes"):
        aa.dlr_loss(tf.zeros([1, 3]), [0], targets=[1])


def test_linf_hyperplane_step_is_the_linear_programs_optimum():
    from scipy.optimize import linprog

    rng = np.random.default_rng(3)
    for trial in range(20):
        d = 6
        x = rng.uniform(-1, 1, size=d)
        w = rng.normal(size=d) * (rng.uniform(size=d) > 0.2)
        r = rng.normal() * 2
        step = aa.linf_hyperplane_step(tf.constant(x[None], tf.float32), tf.constant(w[None], tf.float32),
                                       tf.constant([r], tf.float32)).numpy()[0]
        # min t  s.t.  <w, d> = r,  -t <= d_i <= t,  -1 <= x_i + d_i <= 1   (variables d_1..d_D, t)
        c = np.r_[np.zeros(d), 1.0]
        a_ub = np.block([[np.eye(d), -np.ones((d, 1))], [-np.eye(d), -np.ones((d, 1))]])
        bounds = [(-1 - xi, 1 - xi) for xi in x] + [(0, None)]
        lp = linprog(c, A_ub=a_ub, b_ub=np.zeros(2 * d), A_eq=np.r_[w, 0.0][None], b_eq=[r], bounds=bounds)
        assert np.all(x + step >= -1 - 1e-6) and np.all(x + step <= 1 + 1e-6)
        if lp.status == 0:  # feasible: the same minimal norm, and on the hyperplane
            assert np.abs(step).max() == pytest.approx(lp.fun, abs=1e-5), trial
            assert w @ step == pytest.approx(r, abs=1e-4), trial
        else:  # the hyperplane lies outside the box: the step goes as far toward it as the box allows
            assert lp.status == 2
            assert abs(w @ step) == pytest.approx(np.abs(w) @ np.where(w * r > 0, 1 - x, 1 + x), rel=1e-5)


@pytest.mark.parametrize("k", [2, 10])
def test_fab_t_finds_the_minimal_linf_perturbation_of_a_linear_classifier(k):
    w, b, x, _ = problem(2, n=40, k=k, spread=0.2)
    w = w * 4.0  # keeps every minimal perturbation well inside the box
    y = np.argmax(x.reshape(len(x), -1) @ w + b, -1).astype(np.int32)
    truth = closed_form_distance(w, b, x, y)
    z = x.reshape(len(x), -1) @ w + b
    order = np.argsort(-z, -1)
    found = np.full(len(x), np.inf)
    # traced once for the k - 1 targets (run eagerly, its loop would cost a Python step per op)
    fab = tf.function(lambda t: aa.fab_targeted(linear(w, b), x, y, t, n_iter=100), autograph=False)
    for rank in range(1, k):
        _, norms = fab(order[:, rank].astype(np.int32))
        found = np.minimum(found, norms.numpy())
    assert np.all(truth + x.reshape(len(x), -1).__abs__().max(-1) < 1)  # the box does not bind
    assert np.all(found >= truth * (1 - 1e-4))
    np.testing.assert_allclose(found, truth, rtol=0.01)


def test_square_breaks_a_zero_gradient_model_that_white_box_attacks_cannot():
    rng = np.random.default_rng(4)
    n, shape = 80, (8, 8, 1)
    w = rng.normal(size=(64, 10)).astype(np.float32)
    x = rng.uniform(-0.5, 0.5, size=(n, *shape)).astype(np.float32)
    model = linear(w, np.zeros(10), quantize=True)
    y = np.argmax(model(x).numpy(), -1).astype(np.int32)
    truth = closed_form_distance(w, np.zeros(10, np.float32), x, y)
    eps = float(np.quantile(truth, 0.9)) * 1.5  # about 90% of the examples can be broken by a wide margin
    # examples a random start cannot break by luck (it would need a ~4-sigma draw)
    keep = truth > 0.4 * eps
    x, y, truth = x[keep], y[keep], truth[keep]
    breakable = ~closed_form_robust(w, np.zeros(10, np.float32), x, y, eps)
    assert aa.zero_gradient_fraction(model, x, y) == 1.0
    adv, fooled = aa.apgd(model, x, y, eps=eps, n_iter=20)
    assert not fooled.numpy().any()  # a zero gradient leaves APGD at its random start
    assert (np.argmax(model(pgd(model, x, y, eps=eps, steps=20)).numpy(), -1) == y).all()
    out = aa.autoattack(model, x, y, eps=eps, settings=dict(apgd_iterations=20, fab_iterations=20, targets=3,
                                                            square_queries=1000), verbose=False)
    stages = {r["attack"]: r for r in out["stages"]}
    assert stages["fab-t"]["accuracy"] == 1.0  # nothing before Square broke anything
    assert stages["square"]["broken"] >= 0.9 * breakable.sum()
    assert not (~out["robust"] & ~breakable).any()  # never beyond the closed-form worst case


def test_apgd_agrees_with_ibm_art_on_an_adversarially_trained_model():
    """An independent implementation: ART's AutoProjectedGradientDescent (TensorFlowV2Classifier) with the same
    eps, step 2 * eps, one start, on the same adversarially trained MLP and 360 test digits: 100 iterations with
    the CE loss, 20 with DLR (ART's DLR loss slices the batch example by example in eager mode: 13 s at 100
    iterations here, 2.8 s at 20; over six training seeds the two differed by at most 0.014 at 20)."""
    import keras
    from art.attacks.evasion import AutoProjectedGradientDescent
    from art.estimators.classification import TensorFlowV2Classifier

    from robgan_tf import data as data_lib

    scale = lambda a: (a / 8.0 - 1.0).astype(np.float32)[..., None]  # noqa: E731  (0..16 -> [-1, 1])
    (xtr, ytr), (xte, yte) = [(scale(a), b) for a, b in map(data_lib.digits_8x8, ("train", "test"))]
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(64, activation="relu"), keras.layers.Dense(10)])
    opt = keras.optimizers.Adam(3e-3)
    eps = 0.25

    @tf.function
    def step(x, y):  # Madry adversarial training, PGD-5
        adv = pgd(model, x, y, eps=eps, steps=5, random_start=True)
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, model(adv, training=True)))
        opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))

    rng = np.random.default_rng(0)
    for _ in range(30):
        order = rng.permutation(len(xtr))
        for i in range(0, len(order), 64):
            step(xtr[order[i:i + 64]], ytr[order[i:i + 64]])
    clean = np.argmax(model(xte).numpy(), -1) == yte
    assert clean.mean() > 0.9
    art_model = TensorFlowV2Classifier(model=model, nb_classes=10, input_shape=(8, 8, 1), clip_values=(-1.0, 1.0),
                                       loss_object=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    for ours, theirs, n_iter in (("ce", "cross_entropy", 100), ("dlr", "difference_logits_ratio", 20)):
        _, fooled = aa.apgd(model, xte, yte, eps=eps, n_iter=n_iter, loss=ours)
        ours_acc = (clean & ~fooled.numpy()).mean()
        attack = AutoProjectedGradientDescent(art_model, norm=np.inf, eps=eps, eps_step=2 * eps, max_iter=n_iter,
                                              nb_random_init=1, batch_size=len(xte), loss_type=theirs, verbose=False)
        art_acc = (np.argmax(model(attack.generate(xte, yte)).numpy(), -1) == yte).mean()
        assert 0.3 < art_acc < 0.95  # a case where the attack matters
        assert abs(ours_acc - art_acc) <= 0.02, (ours, ours_acc, art_acc)
