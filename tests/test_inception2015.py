"""The tf_inception_2015 backend on a stand-in graph with the real file's interface (tests/inception_standin.py)."""
import io
import tarfile

import numpy as np
import pytest
import tensorflow as tf

from inception_standin import reference, standin_graph
from robgan_tf import inception2015, quality


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    g, params = standin_graph()
    path = tmp_path_factory.mktemp("inception") / inception2015.GRAPH_FILE
    path.write_bytes(g.SerializeToString())
    return str(path), params


def test_backend_matches_the_reference_pipeline(standin):
    path, params = standin
    backend = quality.TFInception2015Backend(path, batch_size=2)  # 5 images: batches of 2, 2, 1
    images = np.random.default_rng(1).uniform(-1, 1, (5, 32, 32, 3)).astype(np.float32)
    probs, feats = backend.outputs(images)
    ref_feats, ref_probs = reference(images, params)
    assert feats.shape == (5, 2048) and probs.shape == (5, 1008)
    np.testing.assert_allclose(feats, ref_feats, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(probs, ref_probs, rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    # the check is sharp: half-pixel (TF 2) resizing, or skipping the uint8 quantisation, is far off
    err = np.abs(ref_feats - feats).max()
    assert np.abs(reference(images, params, half_pixel=True)[0] - feats).max() > 100 * err
    assert np.abs(reference(images, params, quantise=False)[0] - feats).max() > 10 * err
    assert backend.sha256 == quality.sha256_of(path) and backend.name == "tf_inception_2015"


def test_grey_images_are_tiled_to_rgb_and_archives_are_read_in_place(standin, tmp_path):
    path, params = standin
    archive = tmp_path / inception2015.ARCHIVE_FILE
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(path, arcname="./" + inception2015.GRAPH_FILE)
        info = tarfile.TarInfo("./LICENSE")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    backend = quality.TFInception2015Backend(str(archive))
    grey = np.random.default_rng(2).uniform(-1, 1, (3, 16, 16, 1)).astype(np.float32)
    np.testing.assert_allclose(backend.features(grey), reference(grey, params)[0], rtol=1e-4, atol=1e-4)
    assert sorted(p.name for p in tmp_path.iterdir()) == [inception2015.ARCHIVE_FILE]  # nothing extracted
    truncated = tmp_path / "truncated.tgz"
    truncated.write_bytes(archive.read_bytes()[:5000])
    with pytest.raises(inception2015.InceptionGraphError, match="damaged archive.*download"):
        quality.TFInception2015Backend(str(truncated))
    empty = tmp_path / "empty.tgz"
    with tarfile.open(empty, "w:gz") as tar:
        tar.addfile(info, io.BytesIO(b"abc"))
    with pytest.raises(inception2015.InceptionGraphError, match="archive without classify_image_graph_def.pb"):
        quality.TFInception2015Backend(str(empty))


def test_upgrade_rewrites_global_normalization_only():
    g, _ = standin_graph()
    up = inception2015.upgrade_graph_def(g)
    ops = {n.name: n.op for n in up.node}
    assert "BatchNormWithGlobalNormalization" not in ops.values()
    assert ops["conv/batchnorm"] == "AddV2"  # the node keeps its name, so consumers still find it
    untouched = {n.name: n for n in g.node if n.op != "BatchNormWithGlobalNormalization"}
    assert all(next(m for m in up.node if m.name == k) == n for k, n in untouched.items())
    g.node.add(name="old", op="BatchNormWithGlobalNormalization_NoSuchOp")
    with pytest.raises(inception2015.InceptionGraphError, match="old.*cannot run"):
        inception2015.upgrade_graph_def(g)


def test_missing_wrong_and_corrupt_files_are_named(standin, tmp_path):
    path, _ = standin
    with pytest.raises(FileNotFoundError, match="classify_image_graph_def.pb.*inception-2015-12-05.tgz.*"
                                                "download.tensorflow.org"):
        quality.make_backend("tf_inception_2015", weights_path=str(tmp_path / "missing.pb"))
    with pytest.raises(ValueError, match="sha256"):
        quality.TFInception2015Backend(path, expected_sha256="0" * 64)
    assert quality.TFInception2015Backend(path, expected_sha256=quality.sha256_of(path).upper()).sha256
    corrupt = tmp_path / "corrupt.pb"
    corrupt.write_bytes(b"\xff\xfe not a protobuf")
    with pytest.raises(inception2015.InceptionGraphError, match="not a TensorFlow GraphDef"):
        quality.TFInception2015Backend(str(corrupt))
    other = tmp_path / "other.pb"  # a valid GraphDef of some other network
    g, _ = standin_graph()
    for n in g.node:
        if n.name == "ResizeBilinear/size":
            n.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(np.array([224, 224], np.int32)))
    other.write_bytes(g.SerializeToString())
    with pytest.raises(inception2015.InceptionGraphError, match="224.*not 299x299"):
        quality.TFInception2015Backend(str(other))
    del g.node[[n.name for n in g.node].index("pool_3")]
    other.write_bytes(g.SerializeToString())
    with pytest.raises(inception2015.InceptionGraphError, match="pool_3"):
        quality.TFInception2015Backend(str(other))
    with pytest.raises(ValueError, match="needs a classifier"):
        quality.make_backend("classifier")
    with pytest.raises(ValueError, match="unknown quality backend"):
        quality.make_backend("inception_v4")
