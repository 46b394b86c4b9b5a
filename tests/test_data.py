import os
import pickle

import numpy as np
import pytest
import tensorflow as tf

from robgan_tf import data
from robgan_tf.data import DataError


def _cifar_like(n, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n)


def _write_py_batches(root, protocol=2):
    os.makedirs(root)
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        x, y = _cifar_like(4, i)
        batch = {b"data": x.transpose(0, 3, 1, 2).reshape(4, 3072), b"labels": [int(v) for v in y],
                 b"batch_label": b"batch", b"filenames": [b"a.png"] * 4}
        with open(os.path.join(root, name), "wb") as f:
            pickle.dump(batch, f, protocol=protocol)


def _write_bin_batches(root):
    os.makedirs(root)
    for i, name in enumerate([f"data_batch_{k}.bin" for k in range(1, 6)] + ["test_batch.bin"]):
        x, y = _cifar_like(3, i)
        rec = np.concatenate([y[:, None].astype(np.uint8), x.transpose(0, 3, 1, 2).reshape(3, 3072)], 1)
        rec.tofile(os.path.join(root, name))


def _png(path, value, size=(12, 9)):
    img = np.full((*size, 3), value, np.uint8)
    tf.io.write_file(path, tf.io.encode_png(img))


def test_digits_default_metadata_range_and_split():
    train, test = data.load("digits"), data.load("digits", "test")
    assert train.info.num_classes == 10 and train.info.image_shape == (16, 16, 1)  # twice the original 8 px
    assert train.info.num_examples + test.info.num_examples == 1797
    assert not train.info.flip_ok
    x, y = next(iter(data.train_dataset(train, 16)))
    assert x.dtype == tf.float32 and y.dtype == tf.int32 and x.shape == (16, 16, 16, 1)
    assert -1.0 <= float(tf.reduce_min(x)) and float(tf.reduce_max(x)) <= 1.0
    # the split is deterministic and disjoint
    again = data.load("digits", "test")
    np.testing.assert_array_equal(again.images, test.images)
    train_keys = {im.tobytes() for im in train.images}
    assert sum(im.tobytes() in train_keys for im in test.images) < 5  # sklearn digits has a few duplicates


def test_train_dataset_is_a_pure_function_of_seed_and_step():
    src = data.load("digits")
    a = [b[1].numpy() for b in data.train_dataset(src, 32, seed=3).take(50)]
    b = [b[1].numpy() for b in data.train_dataset(src, 32, seed=3, start_step=30).take(20)]
    for u, v in zip(a[30:], b):
        np.testing.assert_array_equal(u, v)
    c = [b[1].numpy() for b in data.train_dataset(src, 32, seed=4).take(5)]
    assert any(not np.array_equal(u, v) for u, v in zip(a, c))
    # one epoch visits every example at most once
    epoch = np.concatenate([b for b in a[: len(src.labels) // 32]])
    assert len(epoch) == (len(src.labels) // 32) * 32


def test_dequantisation_noise_is_below_one_level():
    src = data.load("digits")
    plain = next(iter(data.train_dataset(src, 8, seed=0)))[0].numpy()
    noisy = next(iter(data.train_dataset(src, 8, seed=0, dequantize=True)))[0].numpy()
    d = noisy - plain
    assert d.min() >= 0 and d.max() < 1.0 / 128 and d.std() > 1e-3


def test_augmented_pipeline_resumes_bit_identically_and_augments():
    src = data.load("digits")
    full = [b[0].numpy() for b in data.train_dataset(src, 8, seed=3, augment="crop", dequantize=True).take(6)]
    resumed = [b[0].numpy() for b in data.train_dataset(src, 8, seed=3, start_step=4, augment="crop",
                                                        dequantize=True).take(2)]
    for u, v in zip(full[4:], resumed):
        np.testing.assert_array_equal(u, v)
    plain = next(iter(data.train_dataset(src, 8, seed=3)))[0].numpy()
    assert np.abs(full[0] - plain).max() > 0.1  # crops moved pixels, far beyond the 1/128 noise
    with pytest.raises(data.DataError, match="augmentation must be one of"):
        data.train_dataset(src, 8, augment="mixup")


def test_eval_dataset_keeps_order_and_last_partial_batch():
    src = data.load("digits", "test")
    ys = np.concatenate([y.numpy() for _, y in data.eval_dataset(src, 64)])
    np.testing.assert_array_equal(ys, src.labels)
    assert sum(1 for _ in data.eval_dataset(src, 64, num_examples=70)) == 2


def test_cifar_python_batches_with_restricted_unpickler(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    _write_py_batches(str(root))
    src = data.load("cifar10", "train", data_dir=str(tmp_path))
    x0, y0 = _cifar_like(4, 0)
    np.testing.assert_array_equal(src.images[:4], x0)
    np.testing.assert_array_equal(src.labels[:4], y0)
    assert src.info.num_examples == 20 and src.info.class_names[0] == "airplane"
    test = data.load("cifar10", "test", data_dir=str(root))
    np.testing.assert_array_equal(test.images, _cifar_like(4, 5)[0])


def test_malicious_pickle_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    root = tmp_path / "cifar-10-batches-py"
    _write_py_batches(str(root))
    with open(root / "data_batch_1", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": []}, f, protocol=2)
    with pytest.raises(DataError, match="refusing to load global"):
        data.load("cifar10", data_dir=str(tmp_path))
    assert not marker.exists()


def test_cifar_binary_batches_and_truncation(tmp_path):
    root = tmp_path / "cifar-10-batches-bin"
    _write_bin_batches(str(root))
    src = data.load("cifar10", "train", data_dir=str(tmp_path))
    x0, y0 = _cifar_like(3, 0)
    np.testing.assert_array_equal(src.images[:3], x0)
    np.testing.assert_array_equal(src.labels[:3], y0)
    with open(root / "data_batch_2.bin", "ab") as f:
        f.write(b"\x00" * 10)
    with pytest.raises(DataError, match="3073-byte records"):
        data.load("cifar10", data_dir=str(tmp_path))


def test_npz_source_and_its_errors(tmp_path):
    x, _ = _cifar_like(6, 0)
    y = np.array([0, 1, 2, 0, 1, 2])
    good = tmp_path / "good.npz"
    np.savez(good, x_train=x, y_train=y, x_test=x[:2], y_test=y[:2])
    src = data.load("npz", "test", data_dir=str(good))
    np.testing.assert_array_equal(src.images, x[:2])
    assert src.info.num_classes == 3 and src.info.class_names == ("0", "1", "2")
    cifar = data.load("cifar10", data_dir=str(good))
    assert cifar.info.num_classes == 10
    bad_keys = tmp_path / "keys.npz"
    np.savez(bad_keys, images=x, labels=y)
    with pytest.raises(DataError, match="expected keys"):
        data.load("npz", data_dir=str(bad_keys))
    bad_dtype = tmp_path / "dtype.npz"
    np.savez(bad_dtype, x_train=x.astype(np.float32), y_train=y, x_test=x, y_test=y)
    with pytest.raises(DataError, match="uint8"):
        data.load("npz", data_dir=str(bad_dtype))
    pickled = tmp_path / "obj.npz"
    np.savez(pickled, x_train=np.array([object()] * 2, dtype=object), y_train=y, x_test=x, y_test=y)
    with pytest.raises(DataError, match="plain dtypes|Object arrays|pickle"):
        data.load("npz", data_dir=str(pickled))
    truncated = tmp_path / "trunc.npz"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(DataError, match="not a readable"):
        data.load("npz", data_dir=str(truncated))
    with pytest.raises(DataError, match="resolution 64"):
        data.load("npz", resolution=64, data_dir=str(good))


def test_npz_without_class_names_needs_labels_0_to_k_minus_1(tmp_path):
    x, _ = _cifar_like(6, 0)
    path = tmp_path / "stray.npz"
    # one stray label 255 must not silently make a 256-way classifier
    np.savez(path, x_train=x, y_train=np.array([0, 1, 2, 0, 1, 255]), x_test=x[:2], y_test=np.array([0, 1]))
    with pytest.raises(DataError, match=r"\[255\] outside 0..3 and \[3\] missing.*class_names"):
        data.load("npz", data_dir=str(path))
    # declared classes make the same labels a range check instead
    np.savez(path, x_train=x, y_train=np.array([0, 1, 2, 0, 1, 3]), x_test=x[:2], y_test=np.array([0, 1]),
             class_names=np.array(["a", "b", "c", "d", "e"]))
    assert data.load("npz", data_dir=str(path)).info.num_classes == 5
    mixed = tmp_path / "mixed.npz"
    np.savez(mixed, x_train=x, y_train=np.array([0, 1, 2, 0, 1, 2]), x_test=x[:2, :16, :16], y_test=np.array([0, 1]))
    with pytest.raises(DataError, match="same size and channels"):
        data.load("npz", data_dir=str(mixed))


def test_a_rare_label_among_complete_ones_is_warned_about_with_the_fix(tmp_path, capsys):
    # labels 0..9 twenty times each and one stray 10: eleven classes, all present, so no error -- but a warning
    x, _ = _cifar_like(201, 0)
    y = np.concatenate([np.repeat(np.arange(10), 20), [10]])
    path = tmp_path / "stray10.npz"
    np.savez(path, x_train=x, y_train=y, x_test=x[:10], y_test=np.arange(10))
    assert data.load("npz", data_dir=str(path)).info.num_classes == 11
    err = capsys.readouterr().err
    assert "label(s) [10] have only [1] examples against a median of 21" in err and "class_names" in err
    np.savez(path, x_train=x[:200], y_train=y[:200], x_test=x[:10], y_test=np.arange(10))  # balanced: silent
    assert data.load("npz", data_dir=str(path)).info.num_classes == 10 and capsys.readouterr().err == ""


def test_labels_out_of_range_are_rejected(tmp_path):
    x, y = _cifar_like(4, 0)
    y[2] = 10
    path = tmp_path / "c.npz"
    np.savez(path, x_train=x, y_train=y, x_test=x, y_test=y)
    with pytest.raises(DataError, match=r"labels must lie in \[0, 9\], found .*10"):
        data.load("cifar10", data_dir=str(path))
    y[2] = -1
    np.savez(path, x_train=x, y_train=y, x_test=x, y_test=y, class_names=np.array(list("abcdefghij")))
    with pytest.raises(DataError, match="labels must lie"):
        data.load("npz", data_dir=str(path))


def test_folder_source_resizes_labels_and_caches(tmp_path):
    root = tmp_path / "imgs"
    for c, v in (("cat", 10), ("dog", 200)):
        os.makedirs(root / c)
        for i in range(2):
            _png(str(root / c / f"{i}.png"), v)
    cache = tmp_path / "cache"
    src = data.load("folder", resolution=32, data_dir=str(root), cache_dir=str(cache))
    assert src.info.class_names == ("cat", "dog") and src.info.image_shape == (32, 32, 3)
    np.testing.assert_array_equal(src.labels, [0, 0, 1, 1])
    assert int(src.images[0].max()) == 10 and int(src.images[3].min()) == 200
    assert len(list(cache.glob("*.u8"))) == 1
    again = data.load("folder", resolution=32, data_dir=str(root), cache_dir=str(cache))
    np.testing.assert_array_equal(again.images, src.images)
    os.makedirs(root / "empty")
    with pytest.raises(DataError, match="holds no PNG/JPEG"):
        data.load("folder", resolution=32, data_dir=str(root))
    os.rmdir(root / "empty")
    (root / "dog" / "broken.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="cannot decode image .*broken.png"):
        data.load("folder", resolution=32, data_dir=str(root))


def test_imagenet143_folder_maps_wnids_and_center_crops(tmp_path):
    # 1000 WNID-named folders in sorted order; classes 151..293 are the 143 dogs and cats
    wnids = ([f"n0100{i:04d}" for i in range(151)] + [data.IMAGENET143_FIRST_WNID]
             + [f"n0209{k:04d}" for k in range(141)] + [data.IMAGENET143_LAST_WNID]
             + [f"n0300{i:04d}" for i in range(706)])
    assert wnids == sorted(wnids) and len(wnids) == 1000
    assert wnids[151] == data.IMAGENET143_FIRST_WNID and wnids[293] == data.IMAGENET143_LAST_WNID
    root = tmp_path / "train"
    for w in wnids:
        os.makedirs(root / w)
    for k, w in enumerate(wnids[151:294]):
        img = np.zeros((10, 20, 3), np.uint8)
        img[:, 5:15] = 255 if k == 0 else 100  # the centre square; the sides are black
        tf.io.write_file(str(root / w / "a.png"), tf.io.encode_png(img))
    src = data.load("imagenet143", "train", resolution=64, data_dir=str(tmp_path))
    assert src.info.num_classes == 143 and src.info.class_names[0] == "n02085620"
    assert src.labels[0] == 0 and src.labels[-1] == 142
    assert src.images.shape == (143, 64, 64, 3)
    assert src.images[0].min() >= 250 and src.images[1].max() <= 101  # crop removed the black sides
    with pytest.raises(DataError, match="64 or 128"):
        data.load("imagenet143", resolution=32, data_dir=str(tmp_path))


def test_bad_names_and_paths():
    with pytest.raises(DataError, match="unknown dataset"):
        data.load("mnist")
    with pytest.raises(DataError, match="does not exist"):
        data.load("cifar10", data_dir="/nonexistent/path")
    with pytest.raises(DataError, match="resolution 64"):
        data.load("cifar10", resolution=64)
    with pytest.raises(DataError, match="needs --data_dir"):
        data.load("folder", resolution=32)
    with pytest.raises(DataError, match="batch size"):
        data.train_dataset(data.load("digits", "test"), 1000)


@pytest.mark.realdata
def test_real_cifar10():
    """Known pixels and labels of the real CIFAR-10, read from the file $ROBGAN_TF_CIFAR10 names (a cifar10.npz or a
    folder holding one); opt-in, since CI has no CIFAR-10: ROBGAN_TF_CIFAR10=PATH python -m pytest -m realdata"""
    path = os.environ.get("ROBGAN_TF_CIFAR10")
    if not path:
        pytest.fail("set ROBGAN_TF_CIFAR10 to a cifar10.npz (or its folder) to run the real-data tests")
    src = data.load("cifar10", "train", data_dir=path)
    assert src.labels[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
    assert src.images[0, 0, :3].tolist() == [[59, 62, 63], [43, 46, 45], [50, 48, 43]]
    np.testing.assert_allclose(src.images.mean((0, 1, 2)) / 255, [0.4914, 0.4822, 0.4465], atol=1e-4)


def test_imagenet143_from_tensorflow_datasets_imagenet2012(tmp_path):
    """The tfds source, with tfds' mock standing in for prepared imagenet2012 records."""
    import tensorflow_datasets as tfds

    labels = np.array([150, 151, 200, 293, 294, 999])
    images = np.zeros((6, 10, 20, 3), np.uint8)
    images[:, :, 5:15] = (labels[:, None, None, None] % 256).astype(np.uint8)  # centre square; black sides

    def records(builder, **kwargs):
        assert kwargs["split"] == "validation"  # our test split is ImageNet's validation set
        return tf.data.Dataset.from_tensor_slices({"image": images, "label": labels})

    with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE, as_dataset_fn=records):
        src = data.load("imagenet143", "test", resolution=64, data_dir=str(tmp_path))
    np.testing.assert_array_equal(src.labels, [0, 49, 142])  # 151, 200, 293 relabelled; the rest dropped
    assert src.info.num_classes == 143 and src.info.class_names[0] == "n02085620"
    assert src.info.class_names[-1] == "n02130308" and src.images.shape == (3, 64, 64, 3)
    for img, lab in zip(src.images, (151, 200, 293)):
        assert img.min() == img.max() == lab % 256  # the crop kept only the centre square
    # cached: a second load needs no tfds at all
    again = data.load("imagenet143", "test", resolution=64, data_dir=str(tmp_path))
    np.testing.assert_array_equal(again.images, src.images)


def test_imagenet143_without_any_source_names_both_fixes(tmp_path):
    with pytest.raises(DataError, match="WNID class folders nor a prepared tensorflow-datasets"):
        data.load("imagenet143", resolution=64, data_dir=str(tmp_path))


def test_hold_out_is_a_fixed_disjoint_validation_split():
    src = data.load("digits", "train")
    rest, val = data.hold_out(src, 100, seed=3)
    assert val.info.num_examples == len(val.labels) == 100 and rest.info.num_examples == src.info.num_examples - 100
    assert val.info.split == "val" and rest.info.split == "train-minus-val"
    # together they are exactly the original split: every image once (images and labels stay paired)
    joined = np.concatenate([rest.images, val.images]).reshape(src.info.num_examples, -1)
    original = src.images.reshape(src.info.num_examples, -1)
    key = lambda a: np.lexsort(a.T[::-1])  # noqa: E731  (row order)
    np.testing.assert_array_equal(joined[key(joined)], original[key(original)])
    np.testing.assert_array_equal(np.sort(np.concatenate([rest.labels, val.labels])), np.sort(src.labels))
    again = data.hold_out(src, 100, seed=3)[1]
    np.testing.assert_array_equal(again.images, val.images)  # the same choice every time (a resume sees it)
    assert not np.array_equal(data.hold_out(src, 100, seed=4)[1].images, val.images)
    with pytest.raises(DataError, match=r"validation split \(--val_examples / --validation_fraction\) must hold between 1 and"):
        data.hold_out(src, src.info.num_examples)


@pytest.mark.parametrize("split,n,bounds", [
    ("train", 50000, (0, 50000)), ("train[:90%]", 50000, (0, 45000)), ("train[90%:]", 50000, (45000, 50000)),
    ("test[:1000]", 10000, (0, 1000)), ("test[-500:]", 10000, (9500, 10000)), ("train[10%:20%]", 1797, (180, 359)),
    ("train[:50%]", 7, (0, 4)), ("test[:-1%]", 100, (0, 99)), ("test[5:]", 3, (3, 3)),
])
def test_split_strings_in_tfds_notation(split, n, bounds):
    base, fn = data.parse_split(split)
    assert base == split[:split.index("[")] if "[" in split else split
    assert fn(n) == bounds


def test_sliced_splits_partition_the_split_and_bad_ones_are_refused():
    whole = data.load("digits", "train")
    head, tail = data.load("digits", "train[:90%]"), data.load("digits", "train[90%:]")
    cut = int(0.9 * whole.info.num_examples + 0.5)
    assert head.info.num_examples == cut and head.info.split == "train[:90%]"
    np.testing.assert_array_equal(np.concatenate([head.images, tail.images]), whole.images)
    np.testing.assert_array_equal(np.concatenate([head.labels, tail.labels]), whole.labels)
    assert data.load("digits", "test[:100]").info.num_examples == 100
    for bad, message in (("validation", "expected train or test"), ("train[:150%]", "within -100% and 100%"),
                         ("test[500:100]", "is empty")):
        with pytest.raises(DataError, match=message):
            data.load("digits", bad)


def test_cifar10_is_found_in_keras_dataset_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    _write_py_batches(str(tmp_path / "kh" / "datasets" / "cifar-10-batches-py-target" / "cifar-10-batches-py"))
    src = data.load("cifar10", "train")  # no data_dir
    np.testing.assert_array_equal(src.images[:4], _cifar_like(4, 0)[0])
    assert src.info.origin.startswith("Keras' dataset cache: ") and str(tmp_path / "kh") in src.info.origin


def _mock_records(images, labels, expect_split):
    def records(builder, **kwargs):
        assert kwargs["split"] == expect_split
        return tf.data.Dataset.from_tensor_slices({"image": images, "label": labels, "id": ["x"] * len(labels),
                                                   "coarse_label": labels % 20})
    return records


def test_any_tfds_image_classification_set(tmp_path):
    """--dataset=tfds:NAME, with tfds' mock data in place of prepared records (nothing is downloaded)."""
    import tensorflow_datasets as tfds

    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (30, 32, 32, 3), dtype=np.uint8), np.arange(30) * 3 % 100
    with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE,
                                as_dataset_fn=_mock_records(images, labels, "train")):
        src = data.load("tfds:cifar100", "train", data_dir=str(tmp_path))
        part = data.load("tfds:cifar100", "train[:10]", data_dir=str(tmp_path))
        small = data.load("tfds:cifar100", "train", resolution=16, data_dir=str(tmp_path))
        names = tuple(tfds.builder("cifar100", data_dir=str(tmp_path)).info.features["label"].names)
    np.testing.assert_array_equal(src.images, images)
    np.testing.assert_array_equal(src.labels, labels)
    assert src.info.num_classes == 100 and src.info.class_names == names  # the ClassLabel's names
    assert src.info.origin == f"tensorflow-datasets {tfds.__version__}, cifar100/3.0.2, split train"
    np.testing.assert_array_equal(part.images, images[:10])
    expected = tf.image.resize(images.astype(np.float32), [16, 16], method="bilinear", antialias=True).numpy()
    np.testing.assert_array_equal(small.images, np.clip(np.round(expected), 0, 255).astype(np.uint8))
    assert data.slug("tfds:cifar100") == "tfds_cifar100" and data.slug("train[:90%]") == "train_90pc"


def test_tfds_names_that_are_not_image_classification_sets_are_refused():
    with pytest.raises(DataError, match="has no dataset 'no_such_set_xyz'"):
        data.load("tfds:no_such_set_xyz")
    with pytest.raises(DataError, match="not an image-classification set"):
        data.load("tfds:imdb_reviews")
    with pytest.raises(DataError, match="after 'tfds:' comes a tensorflow-datasets name"):
        data.load("tfds:Bad Name!")
