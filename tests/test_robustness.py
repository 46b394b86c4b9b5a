import numpy as np
import pytest
import tensorflow as tf

from robgan_tf import robustness
from robgan_tf.data import DatasetInfo, Source


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
    result = robustness.robustness_table(clf, source, eps_grid=grid, protocols=("paper",), batch_size=64)
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
    result = robustness.robustness_table(clf, src, eps_grid=(0.0, 0.05, 0.2), protocols=("paper", "strong"),
                                         batch_size=64)
    acc = {(r["protocol"], r["eps"]): r["accuracy"] for r in result["results"]}
    assert acc[("strong", 0.0)] == acc[("paper", 0.0)] == 1.0
    for eps in (0.05, 0.2):
        assert acc[("strong", eps)] <= acc[("paper", eps)]
    assert acc[("strong", 0.2)] < 1.0  # the attacks do bite
    assert result["sanity"]["strong_le_paper"] and result["sanity"]["strong_monotone_in_eps"]
    assert "strong" in result["attacks"] and len(result["attacks"]["strong"]) == 3
    table = robustness.markdown_table(result)
    assert "| paper |" in table and "| strong |" in table


def test_markdown_and_json(tmp_path):
    result = {"results": [{"protocol": "paper", "eps": 0.0, "eps_01": 0.0, "accuracy": 0.5, "num_examples": 4}],
              "dataset": "d", "split": "test"}
    assert "50.00%" in robustness.markdown_table(result)
    robustness.write_json(result, str(tmp_path / "a" / "r.json"))
    assert (tmp_path / "a" / "r.json").exists()


def test_saved_examples_are_the_images_that_decided_each_example(tmp_path):
    """Under 'strong', a broken example's saved image is the one that broke it, from whichever attack did."""
    source, w, xq = _linear_source(n=64)
    clf = _linear_classifier(w)
    path = tmp_path / "ex.npz"
    result = robustness.robustness_table(clf, source, eps_grid=(0.0, 0.05), protocols=("strong",), batch_size=64,
                                         save_examples=str(path))
    ex = np.load(path, allow_pickle=False)
    x, y, adv = ex["x"], ex["y"], ex["strong_eps0.05"]
    pred = np.argmax(clf(adv).numpy(), 1)
    acc = {r["eps"]: r["accuracy"] for r in result["results"]}
    assert np.abs(adv - x).max() <= 0.05 + 1e-6
    # the saved images reproduce the table: exactly the non-robust examples are misclassified on them
    assert np.mean(pred == y) == pytest.approx(acc[0.05]) and acc[0.05] < 1.0
    np.testing.assert_array_equal(ex["strong_eps0"], x)  # eps 0: the clean images decide


def test_traced_attacks_do_not_keep_a_classifier_alive():
    import gc
    import weakref

    source, w, _ = _linear_source(n=32)
    clf = _linear_classifier(w)
    robustness.accuracy_under_attack(clf, source, eps=0.05, steps=2)
    robustness.accuracy_under_attack(clf, source, eps=0.1, steps=2, batch_size=7)  # other eps and batch sizes
    assert list(clf._robgan_traces) == [(2, (4, 4, 1))]  # one trace serves them all
    assert clf._robgan_traces[(2, (4, 4, 1))].experimental_get_tracing_count() == 1
    ref = weakref.ref(clf)
    del clf
    gc.collect()
    assert ref() is None


def _ten_class_source(n=120, seed=5, quantize=False):
    """A 10-class linear model on 4x4 images, labels = its own clean predictions (so clean accuracy is 1)."""
    rng = np.random.default_rng(seed)
    w = tf.constant(rng.normal(size=(16, 10)).astype(np.float32))
    images = rng.integers(64, 192, size=(n, 4, 4, 1)).astype(np.uint8)

    def clf(x, training=False):
        flat = tf.reshape(x, [tf.shape(x)[0], -1])
        if quantize:  # rounding: every input gradient is zero (gradient masking by construction)
            flat = tf.stop_gradient(tf.round(flat * 100.0) / 100.0)
        return flat @ w

    y = np.argmax(clf(images.astype(np.float32) / 127.5 - 1).numpy(), -1).astype(np.int32)
    return Source(images, y, DatasetInfo("lin10", "test", 10, tuple("abcdefghij"), (4, 4, 1), n, True)), clf


def test_autoattack_protocol_stages_robustbench_block_and_clean_masking_indicators():
    source, clf = _ten_class_source()
    eps = 8 / 255 * 2
    result = robustness.robustness_table(clf, source, eps_grid=(0.0, eps), protocols=("paper", "autoattack"),
                                         batch_size=50, verbose=False)
    rows = {(r["protocol"], r["eps"]): r for r in result["results"]}
    aa_row = rows[("autoattack", eps)]
    assert [s["attack"] for s in aa_row["stages"]] == ["clean", "apgd-ce", "apgd-t", "fab-t", "square"]
    accs = [s["accuracy"] for s in aa_row["stages"]]
    assert accs[0] == 1.0 and accs == sorted(accs, reverse=True) and accs[-1] == aa_row["accuracy"]
    assert 0 < aa_row["accuracy"] < 1 and aa_row["accuracy"] <= rows[("paper", eps)]["accuracy"]
    assert rows[("autoattack", 0.0)]["accuracy"] == 1.0
    assert result["robustbench"] == [{"threat_model": "Linf", "eps": "8/255", "clean_acc": "100.00",
                                      "autoattack_acc": f"{100 * aa_row['accuracy']:.2f}", "n_ex": 120,
                                      "dataset": "lin10", "number_forward_passes": 1}]
    sanity = result["sanity"]
    assert sanity["autoattack_le_paper"] and sanity["autoattack_monotone_in_eps"]
    assert sanity["zero_gradient_fraction"] == 0.0 and sanity["large_eps_accuracy"] == 0.0
    assert not sanity["possible_gradient_masking"] and sanity["square_broke"] == 0
    table = robustness.markdown_table(result)
    assert "| autoattack |" in table and "[8/255]" in table and "gradient masking" not in table
    assert "| eps | clean | apgd-ce | apgd-t | fab-t | square | seconds |" in table


def test_autoattack_protocol_flags_gradient_masking():
    source, clf = _ten_class_source(n=40, quantize=True)
    result = robustness.robustness_table(clf, source, eps_grid=(0.3,), protocols=("autoattack",), batch_size=40,
                                         verbose=False)
    sanity = result["sanity"]
    assert sanity["zero_gradient_fraction"] == 1.0 and sanity["square_broke"] > 0
    assert sanity["possible_gradient_masking"] and len(sanity["masking_reasons"]) >= 2
    assert "possible gradient masking" in robustness.markdown_table(result)
