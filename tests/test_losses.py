import numpy as np
import pytest

from robgan_tf import losses as L


def softplus(x):
    return np.log1p(np.exp(x))


def ce(logits, label):
    logits = np.asarray(logits, np.float64)
    return np.log(np.exp(logits).sum()) - logits[label]


REAL_LOGIT, FAKE_LOGIT = np.array([1.5, -0.5]), np.array([-2.0, 0.3])
REAL_CLS = np.array([[2.0, 0.0, -1.0], [0.1, 0.2, 0.3]])
FAKE_CLS = np.array([[0.0, 1.0, 0.0], [3.0, -3.0, 0.0]])
REAL_Y, FAKE_Y = np.array([0, 2]), np.array([1, 2])


def _hand_d(gan_loss, variant):
    out = []
    for i in range(2):
        if gan_loss == "bce":
            real, fake = softplus(-REAL_LOGIT[i]), softplus(FAKE_LOGIT[i])
        else:
            real, fake = max(0, 1 - REAL_LOGIT[i]), max(0, 1 + FAKE_LOGIT[i])
        loss = 0.5 * real + 0.5 * ce(REAL_CLS[i], REAL_Y[i])
        if variant == "split":
            loss += 1.0 * fake
        else:
            loss += 0.5 * fake + 0.5 * ce(FAKE_CLS[i], FAKE_Y[i])
        out.append(loss)
    return np.array(out)


@pytest.mark.parametrize("gan_loss", ["bce", "hinge"])
@pytest.mark.parametrize("variant", ["split", "acgan"])
def test_discriminator_loss_matches_hand_computation(gan_loss, variant):
    cfg = L.LossConfig(gan_loss=gan_loss, variant=variant)
    got = L.discriminator_loss(REAL_LOGIT, REAL_CLS, REAL_Y, FAKE_LOGIT, FAKE_CLS, FAKE_Y, cfg).numpy()
    np.testing.assert_allclose(got, _hand_d(gan_loss, variant), rtol=1e-5)


@pytest.mark.parametrize("gan_loss", ["bce", "hinge"])
@pytest.mark.parametrize("variant", ["split", "acgan"])
def test_generator_loss_matches_hand_computation(gan_loss, variant):
    cfg = L.LossConfig(gan_loss=gan_loss, variant=variant)
    got = L.generator_loss(FAKE_LOGIT, FAKE_CLS, FAKE_Y, cfg).numpy()
    adv = softplus(-FAKE_LOGIT) if gan_loss == "bce" else -FAKE_LOGIT
    expected = 0.5 * adv + 0.5 * np.array([ce(FAKE_CLS[i], FAKE_Y[i]) for i in range(2)])
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_split_d_loss_ignores_fake_class_logits():
    cfg = L.LossConfig(variant="split")
    a = L.discriminator_loss(REAL_LOGIT, REAL_CLS, REAL_Y, FAKE_LOGIT, FAKE_CLS, FAKE_Y, cfg)
    b = L.discriminator_loss(REAL_LOGIT, REAL_CLS, REAL_Y, FAKE_LOGIT, FAKE_CLS * 100, FAKE_Y, cfg)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    acg = L.LossConfig(variant="acgan")
    c = L.discriminator_loss(REAL_LOGIT, REAL_CLS, REAL_Y, FAKE_LOGIT, FAKE_CLS * 100, FAKE_Y, acg)
    assert not np.allclose(c.numpy(), L.discriminator_loss(REAL_LOGIT, REAL_CLS, REAL_Y, FAKE_LOGIT,
                                                           FAKE_CLS, FAKE_Y, acg).numpy())


def test_bce_terms_are_log_likelihoods_and_stable():
    # -log sigmoid(s) and -log(1 - sigmoid(s)) without overflow at large |s|
    s = np.array([-100.0, 0.0, 100.0])
    np.testing.assert_allclose(L.d_real_term(s).numpy(), [100.0, np.log(2), 0.0], atol=1e-6)
    np.testing.assert_allclose(L.d_fake_term(s).numpy(), [0.0, np.log(2), 100.0], atol=1e-6)
    # non-saturating G: the gradient stays large when D confidently rejects the fake
    np.testing.assert_allclose(L.g_term(s).numpy(), [100.0, np.log(2), 0.0], atol=1e-6)


def test_custom_weights_and_validation():
    cfg = L.LossConfig(d_real_adv=1.0, d_real_cls=0.0, d_fake_adv=2.0)
    got = L.discriminator_loss(REAL_LOGIT, REAL_CLS, REAL_Y, FAKE_LOGIT, FAKE_CLS, FAKE_Y, cfg).numpy()
    np.testing.assert_allclose(got, softplus(-REAL_LOGIT) + 2.0 * softplus(FAKE_LOGIT), rtol=1e-5)
    assert L.LossConfig(variant="acgan").fake_adv_weight == 0.5
    assert L.LossConfig(variant="split").fake_adv_weight == 1.0
    with pytest.raises(ValueError, match="gan_loss"):
        L.LossConfig(gan_loss="wgan")
    with pytest.raises(ValueError, match="variant"):
        L.LossConfig(variant="both")


def test_named_weightings_give_the_closed_form_sums():
    sr, sf = softplus(-REAL_LOGIT), softplus(FAKE_LOGIT)  # D's real / fake likelihood terms
    cr = np.array([ce(REAL_CLS[i], REAL_Y[i]) for i in range(2)])
    cf = np.array([ce(FAKE_CLS[i], FAKE_Y[i]) for i in range(2)])
    d = lambda cfg: L.discriminator_loss(REAL_LOGIT, REAL_CLS, REAL_Y, FAKE_LOGIT, FAKE_CLS, FAKE_Y, cfg).numpy()
    g = lambda cfg: L.generator_loss(FAKE_LOGIT, FAKE_CLS, FAKE_Y, cfg).numpy()
    # paper: the unweighted sums of eq. 9 (split) and eq. 8 (acgan)
    np.testing.assert_allclose(d(L.LossConfig.named("paper", variant="split")), sr + cr + sf, rtol=1e-5)
    np.testing.assert_allclose(d(L.LossConfig.named("paper", variant="acgan")), sr + cr + sf + cf, rtol=1e-5)
    np.testing.assert_allclose(g(L.LossConfig.named("paper")), softplus(-FAKE_LOGIT) + cf, rtol=1e-5)
    # authors: their 0.5 / 0.5 / 1.0 weights
    np.testing.assert_allclose(d(L.LossConfig.named("authors")), 0.5 * sr + 0.5 * cr + sf, rtol=1e-5)
    np.testing.assert_allclose(g(L.LossConfig.named("authors")), 0.5 * softplus(-FAKE_LOGIT) + 0.5 * cf, rtol=1e-5)
    # sngan: hinge adversarial terms only
    h = L.LossConfig.named("sngan", gan_loss="hinge")
    np.testing.assert_allclose(d(h), np.maximum(0, 1 - REAL_LOGIT) + np.maximum(0, 1 + FAKE_LOGIT), rtol=1e-5)
    np.testing.assert_allclose(g(h), -FAKE_LOGIT, rtol=1e-5)
    with pytest.raises(ValueError, match="weighting"):
        L.LossConfig.named("equal")
