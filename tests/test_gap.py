import numpy as np
import tensorflow as tf

from robgan_tf import gap as gap_lib
from test_robustness import _linear_classifier, _linear_source


def test_local_lipschitz_of_a_linear_model_is_closed_form():
    # two-class linear model: d CE / dx = (p1 - y) * w, so ||.||_2 = |p1 - y| * ||w||_2
    source, w, xq = _linear_source(n=16)
    clf = _linear_classifier(w)
    llv = gap_lib.local_lipschitz(clf, xq, source.labels).numpy()
    s = (xq * w).sum((1, 2, 3))
    p1 = 1 / (1 + np.exp(-s))
    np.testing.assert_allclose(llv, np.abs(p1 - source.labels) * np.linalg.norm(w), rtol=1e-4)


def test_gap_analysis_and_plot(tmp_path):
    source, w, _ = _linear_source(n=64)
    other, _, _ = _linear_source(n=64, seed=1)
    clf = _linear_classifier(w)
    gap = gap_lib.gap_analysis(clf, source, other, eps_grid=(0.0, 0.1), num_examples=64)
    assert gap["train_accuracy"][0] == 1.0 and gap["train_accuracy"][1] <= 1.0
    assert len(gap["llv"]["train"]) == 64
    gap_lib.plot_gap(gap, str(tmp_path / "gap.png"))
    assert tf.io.decode_png(tf.io.read_file(str(tmp_path / "gap.png"))).shape[-1] in (3, 4)
