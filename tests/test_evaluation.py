import numpy as np
import pytest
import tensorflow as tf

from robgan_tf import evaluation
from robgan_tf.data import DatasetInfo, Source


def test_inception_score_known_answers():
    uniform = np.full((1000, 7), 1 / 7)
    assert evaluation.inception_score(uniform)[0] == pytest.approx(1.0, abs=1e-6)
    onehot = np.eye(10)[np.arange(1000) % 10]  # one-hot, spread evenly over K = 10 classes in every split
    mean, std = evaluation.inception_score(onehot, splits=10)
    assert mean == pytest.approx(10.0, rel=1e-6) and std == pytest.approx(0.0, abs=1e-6)


def test_frechet_distance_known_answers():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5000, 4)) @ rng.normal(size=(4, 4))
    mu, sigma = evaluation.feature_statistics(a)
    assert evaluation.frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-8)
    # two Gaussians: ||m1 - m2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)); diagonal covariances give a closed form
    m1, m2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    s1, s2 = np.diag([1.0, 4.0, 9.0]), np.diag([4.0, 1.0, 1.0])
    expected = 1 + 0 + 4 + (1 + 4 - 4) + (4 + 1 - 4) + (9 + 1 - 6)
    assert evaluation.frechet_distance(m1, s1, m2, s2) == pytest.approx(expected, rel=1e-9)
    # a non-diagonal pair against scipy's matrix square root
    from scipy import linalg

    c1 = np.cov(a, rowvar=False)
    c2 = np.cov(rng.normal(size=(5000, 4)) * [1, 2, 3, 4], rowvar=False)
    ref = np.trace(c1 + c2 - 2 * linalg.sqrtm(c1 @ c2).real)
    assert evaluation.frechet_distance(np.zeros(4), c1, np.zeros(4), c2) == pytest.approx(ref, rel=1e-6)


def _linear_source(n=200, seed=0):
    """Two classes, a linear classifier logits = [0, <w, x> + b]; known worst case under l_inf PGD."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(4, 4, 1)).astype(np.float32)
    x = rng.uniform(-0.5, 0.5, size=(n, 4, 4, 1)).astype(np.float32)
    images = np.round((x + 1) * 127.5).astype(np.uint8)  # the source stores uint8
    xq = images.astype(np.float32) / 127.5 - 1
    y = ((xq * w).sum((1, 2, 3)) > 0).astype(np.int32)
    info = DatasetInfo("linear", "test", 2, ("neg", "pos"), (4, 4, 1), n, True)
    return Source(images, y, info), w, xq


def _linear_classifier(w):
    wt = tf.constant(w.reshape(1, -1))

    def clf(x, training=False):
        s = tf.reduce_sum(tf.reshape(x, [tf.shape(x)[0], -1]) * wt, 1)
        return tf.stack([tf.zeros_like(s), s], 1)

    return clf


def test_table_on_a_linear_model_matches_the_closed_form():
    source, w, xq = _linear_source()
    clf = _linear_classifier(w)
    grid = (0.0, 0.01, 0.05, 0.2)
    result = evaluation.robustness_table(clf, source, eps_grid=grid, protocols=("paper",), batch_size=64)
    s = (xq * w).sum((1, 2, 3))
    l1 = np.abs(w).sum()
    for r in result["results"]:
        # the worst case moves every pixel by eps against the margin (clipping to [-1, 1] never binds here)
        expected = np.mean(np.abs(s) > r["eps"] * l1)
        assert r["accuracy"] == pytest.approx(expected, abs=1e-9), r
        assert r["eps_01"] == r["eps"] / 2
    assert result["sanity"]["paper_monotone_in_eps"]
    assert result["results"][0]["accuracy"] == 1.0


def test_strong_never_exceeds_paper_and_sanity_is_reported():
    import keras

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (64, 4, 4, 1), dtype=np.uint8)
    labels = np.zeros(64, np.int32)
    src = Source(images, labels, DatasetInfo("rand", "test", 3, ("a", "b", "c"), (4, 4, 1), 64, True))
    keras.utils.set_random_seed(3)
    clf = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(32, "relu"),
                            keras.layers.Dense(3)])
    labels[:] = np.argmax(clf(images.astype(np.float32) / 127.5 - 1).numpy(), 1)  # all correct when clean
    result = evaluation.robustness_table(clf, src, eps_grid=(0.0, 0.05, 0.2), protocols=("paper", "strong"),
                                         batch_size=64)
    acc = {(r["protocol"], r["eps"]): r["accuracy"] for r in result["results"]}
    assert acc[("strong", 0.0)] == acc[("paper", 0.0)] == 1.0
    for eps in (0.05, 0.2):
        assert acc[("strong", eps)] <= acc[("paper", eps)]
    assert acc[("strong", 0.2)] < 1.0  # the attacks do bite
    assert result["sanity"]["strong_le_paper"] and result["sanity"]["strong_monotone_in_eps"]
    assert "strong" in result["attacks"] and len(result["attacks"]["strong"]) == 3
    table = evaluation.markdown_table(result)
    assert "| paper |" in table and "| strong |" in table


def test_markdown_and_json(tmp_path):
    result = {"results": [{"protocol": "paper", "eps": 0.0, "eps_01": 0.0, "accuracy": 0.5, "num_examples": 4}],
              "dataset": "d", "split": "test"}
    assert "50.00%" in evaluation.markdown_table(result)
    evaluation.write_json(result, str(tmp_path / "a" / "r.json"))
    assert (tmp_path / "a" / "r.json").exists()


def test_local_lipschitz_of_a_linear_model_is_closed_form():
    # two-class linear model: d CE / dx = (p1 - y) * w, so ||.||_2 = |p1 - y| * ||w||_2
    source, w, xq = _linear_source(n=16)
    clf = _linear_classifier(w)
    llv = evaluation.local_lipschitz(clf, xq, source.labels).numpy()
    s = (xq * w).sum((1, 2, 3))
    p1 = 1 / (1 + np.exp(-s))
    np.testing.assert_allclose(llv, np.abs(p1 - source.labels) * np.linalg.norm(w), rtol=1e-4)


def test_gap_analysis_and_plot(tmp_path):
    source, w, _ = _linear_source(n=64)
    other, _, _ = _linear_source(n=64, seed=1)
    clf = _linear_classifier(w)
    gap = evaluation.gap_analysis(clf, source, other, eps_grid=(0.0, 0.1), num_examples=64)
    assert gap["train_accuracy"][0] == 1.0 and gap["train_accuracy"][1] <= 1.0
    assert len(gap["llv"]["train"]) == 64
    evaluation.plot_gap(gap, str(tmp_path / "gap.png"))
    assert tf.io.decode_png(tf.io.read_file(str(tmp_path / "gap.png"))).shape[-1] in (3, 4)
