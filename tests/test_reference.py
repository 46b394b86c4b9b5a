"""The reference classifier: trained by plain supervised learning, saved with its sha256, scoring generators."""
import json
import os

import numpy as np
import pytest

from robgan_tf import data, quality, reference
from robgan_tf.robustness import accuracy_under_attack

# One worker runs this module's tests, so the module's reference classifier is trained once (10 s), not per worker.
pytestmark = pytest.mark.xdist_group("reference_file")


@pytest.fixture(scope="module")
def ref_file(tmp_path_factory):
    """The reference classifier as robgan-train-reference makes it (in this process): (path, sha256, test
    accuracy, the tool's stdout)."""
    from tools import run_tool

    path = str(tmp_path_factory.mktemp("ref") / "ref_digits.keras")
    proc = run_tool("train-reference", "--epochs=10", "--batch_size=32", f"--out={path}")
    assert proc.returncode == 0, proc.stderr
    record = json.load(open(path + ".json"))
    return path, record["sha256"], record["test_accuracy"], proc.stdout


def test_reference_classifier_learns_the_real_digits_and_records_its_digest(ref_file):
    path, digest, acc, _ = ref_file
    assert acc > 0.8
    record = json.load(open(path + ".json"))
    assert record["sha256"] == digest == quality.sha256_of(path) and record["test_accuracy"] == acc
    backend = quality.make_backend("reference", weights_path=path, expected_sha256=digest)
    assert backend.name == "reference" and backend.sha256 == digest and digest[:12] in backend.label
    # the backend's classifier is the saved one: its accuracy on the real test digits is the recorded one
    assert accuracy_under_attack(backend.classifier, data.load("digits", "test"), eps=0.0, steps=0) == pytest.approx(acc)
    x = data.load("digits", "test").images[:8].astype(np.float32) / 127.5 - 1
    probs, feats = backend.outputs(x)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    assert feats.shape[0] == 8 and feats.ndim == 2


def test_a_wrong_or_missing_reference_file_is_refused(ref_file, tmp_path):
    path, _, _, _ = ref_file
    with pytest.raises(quality.WeightsError, match="not the expected"):
        quality.make_backend("reference", weights_path=path, expected_sha256="0" * 64)
    with pytest.raises(quality.WeightsError, match="robgan-train-reference"):
        quality.make_backend("reference", weights_path=str(tmp_path / "none.keras"))
    with pytest.raises(ValueError, match="saved as a .keras file"):
        reference.save(None, str(tmp_path / "x.h5"), {})
    assert not os.path.exists(tmp_path / "x.h5")


def test_the_script_resolves_the_training_flags_sentinels_and_records_its_file(ref_file):
    path, digest, _, stdout = ref_file
    record = json.load(open(path + ".json"))
    assert record["sha256"] == quality.sha256_of(path) and f"sha256 {digest}" in stdout
    # --resolution=0 and --augment=auto mean what they mean for training: digits at 16 px, no augmentation
    assert record["dataset"] == "digits" and record["resolution"] == 16 and record["augment"] == "none"
    assert record["epochs"] == 10 and record["batch_size"] == 32 and record["file"] == os.path.basename(path)
