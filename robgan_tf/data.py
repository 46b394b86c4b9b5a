"""Datasets: one entry point, `load(name, split, ...)`, for every source, and tf.data pipelines.

Sources hold uint8 NHWC images and int32 labels (an in-memory array, or a disk memmap for large
sets); the pipelines turn them into float32 images in [-1, 1]. The training pipeline is a pure
function of the step number (epoch permutations come from a stateless RNG), so resuming at step k
reproduces the data order exactly with nothing but k in the checkpoint.

Names: digits (embedded default), cifar10, imagenet143, folder, npz, and tfds:NAME for any tensorflow-datasets
image-classification set. Splits: train, test, or tfds-style slices of them (train[:90%], test[:1000]). Nothing is
downloaded unless `download=True` (tensorflow-datasets then fetches the set).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import re
import sys

import numpy as np
import tensorflow as tf

from robgan_tf import transforms

DATASETS = ("digits", "cifar10", "imagenet143", "folder", "npz")
TFDS_PREFIX = "tfds:"  # --dataset=tfds:NAME[/CONFIG][:VERSION], any tensorflow-datasets image-classification set
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
# Arrays larger than this are read through a memmap instead of being embedded in the graph
# (tf.data cannot hold a constant over 2 GB).
_EMBED_LIMIT = 1 << 30


class DataError(ValueError):
    """A dataset could not be loaded: the message names the problem and the fix."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    name: str
    split: str
    num_classes: int
    class_names: tuple
    image_shape: tuple  # (H, W, C)
    num_examples: int
    flip_ok: bool  # horizontal flips preserve the class (not for digits)
    origin: str = ""  # where the data came from (a path, or the tensorflow-datasets version and dataset version)


@dataclasses.dataclass
class Source:
    images: np.ndarray  # uint8 [N, H, W, C] (possibly a memmap)
    labels: np.ndarray  # int32 [N]
    info: DatasetInfo


def check_name(name):
    """Raises DataError unless `name` is one of DATASETS or tfds:NAME (a tensorflow-datasets builder name)."""
    if name.startswith(TFDS_PREFIX):
        if not re.fullmatch(r"[a-z0-9_]+(/[\w.-]+)?(:[\d.*]+)?", name[len(TFDS_PREFIX):]):
            raise DataError(f"--dataset={name}: after 'tfds:' comes a tensorflow-datasets name, e.g. tfds:cifar100, "
                            "tfds:svhn_cropped, tfds:stl10 (tfds.list_builders() lists them).")
        return
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}, or tfds:NAME for a "
                        "tensorflow-datasets image-classification set.")


def slug(name):
    """A dataset or split name as a file-name part (tfds:cifar100 -> tfds_cifar100, train[:90%] -> train_90pc)."""
    return re.sub(r"[^A-Za-z0-9.-]+", "_", name.replace("%", "pc")).strip("_")


_SPLIT = re.compile(r"(train|test)(?:\[(-?\d+%?)?:(-?\d+%?)?\])?")


def parse_split(split):
    """(base split, bounds): `split` is train or test, or a tensorflow-datasets-style slice of one -- train[:90%],
    train[90%:], test[:1000], test[-500:], train[10%:20%]. bounds(n) gives (start, stop) for a split of n examples;
    percentages round to the closest example, as tensorflow-datasets' default rounding does."""
    m = _SPLIT.fullmatch(split.replace(" ", ""))
    if not m:
        raise DataError(f"split {split!r}: expected train or test, optionally sliced as tensorflow-datasets writes "
                        "it: train[:90%], train[90%:], test[:1000], test[-500:].")
    base, lo, hi = m.groups()

    def bound(text, n, default):
        if text is None:
            return default
        if text.endswith("%"):
            pct = int(text[:-1])
            if abs(pct) > 100:
                raise DataError(f"split {split!r}: a percentage must be within -100% and 100%.")
            k = int(np.floor(abs(pct) * n / 100 + 0.5)) * (1 if pct >= 0 else -1)
        else:
            k = int(text)
        if k < 0:
            k += n
        return min(max(k, 0), n)

    return base, lambda n: (bound(lo, n, 0), bound(hi, n, n))


def _sliced(source, split):
    """`source` (a whole train or test split) cut to the slice `split` names."""
    base, bounds = parse_split(split)
    if split.replace(" ", "") == base:
        return source
    start, stop = bounds(source.info.num_examples)
    if stop <= start:
        raise DataError(f"split {split!r} of {source.info.name} ({source.info.num_examples} {base} examples) is "
                        f"empty: examples {start}..{stop}.")
    info = dataclasses.replace(source.info, split=split.replace(" ", ""), num_examples=stop - start)
    return Source(source.images[start:stop], source.labels[start:stop], info)


def hold_out(source, n, seed=0):
    """(rest, validation): `n` examples of `source` chosen by a seeded permutation, the same on every call, held
    out as a validation split that training never sees (model selection on the test split overfits it)."""
    if not 0 < n < source.info.num_examples:
        raise DataError(f"the validation split (--val_examples / --validation_fraction) must hold between 1 and "
                        f"{source.info.num_examples - 1} examples (the "
                        f"{source.info.name} {source.info.split} split has {source.info.num_examples}), got {n}.")
    order = np.random.default_rng(seed).permutation(source.info.num_examples)
    val_idx, rest_idx = np.sort(order[:n]), np.sort(order[n:])

    def part(idx, split):
        info = dataclasses.replace(source.info, split=split, num_examples=len(idx))
        return Source(source.images[idx], source.labels[idx], info)

    return part(rest_idx, f"{source.info.split}-minus-val"), part(val_idx, "val")


# ----------------------------------------------------------------------------- validation helpers
def _check_arrays(images, labels, num_classes, where):
    if images.dtype != np.uint8:
        raise DataError(f"{where}: images must be uint8, got {images.dtype}. Convert with "
                        "np.clip(x, 0, 255).astype(np.uint8) (images in [0, 255]).")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise DataError(f"{where}: images must be [N, H, W, C] with C in (1, 3), got shape {images.shape}.")
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{where}: labels must be a 1-D integer array, got {labels.dtype} {labels.shape}.")
    if len(labels) != len(images):
        raise DataError(f"{where}: {len(images)} images but {len(labels)} labels.")
    if len(labels) == 0:
        raise DataError(f"{where}: no examples.")
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= num_classes:
        raise DataError(f"{where}: labels must lie in [0, {num_classes - 1}], found {lo}..{hi}.")
    return images, labels.astype(np.int32)


def _check_resolution(name, native, resolution):
    if resolution is not None and int(resolution) != native:
        raise DataError(f"{name} images are {native}x{native}; resolution {resolution} is not available "
                        f"from this source. Use --resolution={native}.")


# ----------------------------------------------------------------------------- digits
DIGITS_RESOLUTIONS = (16, 32, 64, 128)


def digits_8x8(split):
    """scikit-learn's original digits of one split: (images [N, 8, 8] with values 0..16, int32 labels).

    The fixed stratified 80/20 split every use of the digits dataset shares."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    y = d.target.astype(np.int32)
    idx_train, idx_test = train_test_split(np.arange(len(y)), test_size=0.2, stratify=y, random_state=0)
    idx = idx_train if split == "train" else idx_test
    return d.images[idx], y[idx]


def _digits(split, resolution):
    resolution = 16 if resolution is None else int(resolution)
    if resolution not in DIGITS_RESOLUTIONS:
        raise DataError(f"digits is resized to {', '.join(map(str, DIGITS_RESOLUTIONS))} px, not {resolution}.")
    images8, labels = digits_8x8(split)
    x = (images8 * (255.0 / 16.0)).astype(np.float32)[..., None]
    up = tf.image.resize(x, [resolution, resolution], method="bilinear").numpy()
    images = np.clip(np.round(up), 0, 255).astype(np.uint8)
    info = DatasetInfo("digits", split, 10, tuple(str(i) for i in range(10)), images.shape[1:], len(labels), False)
    return Source(images, labels, info)


# ----------------------------------------------------------------------------- cifar10
class RestrictedUnpickler(pickle.Unpickler):
    """Admits only what CIFAR-10's python batches contain: dicts, lists, bytes and numpy arrays.

    Any other global (os.system, builtins.eval, ...) raises before it can run.
    """

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}: not part of a CIFAR-10 batch")


def restricted_pickle_load(path):
    try:
        with open(path, "rb") as f:
            return RestrictedUnpickler(f, encoding="bytes").load()
    except pickle.UnpicklingError as e:
        raise DataError(f"{path}: not a safe CIFAR-10 pickle ({e}). Re-extract cifar-10-python.tar.gz.") from e
    except (EOFError, ValueError, TypeError) as e:
        raise DataError(f"{path}: truncated or corrupt pickle ({e}). Re-extract cifar-10-python.tar.gz.") from e


def _py_batch(path):
    batch = restricted_pickle_load(path)
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DataError(f"{path}: expected a dict with b'data' and b'labels'.")
    data = np.asarray(batch[b"data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{path}: b'data' must be uint8 [N, 3072], got {data.dtype} {data.shape}.")
    return data, np.asarray(batch[b"labels"], dtype=np.int64)


def _bin_batch(path):
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % 3073:
        raise DataError(f"{path}: {raw.size} bytes is not a whole number of 3073-byte records "
                        "(truncated or corrupt). Re-extract cifar-10-binary.tar.gz.")
    rec = raw.reshape(-1, 3073)
    return rec[:, 1:], rec[:, 0].astype(np.int64)


def _cifar_batches(root, split, layout):
    """Reads CIFAR-10's five train batches or its test batch; layout is "py" or "bin"."""
    suffix, archive, read = {"py": ("", "cifar-10-python.tar.gz", _py_batch),
                             "bin": (".bin", "cifar-10-binary.tar.gz", _bin_batch)}[layout]
    files = [f"data_batch_{i}{suffix}" for i in range(1, 6)] if split == "train" else [f"test_batch{suffix}"]
    xs, ys = [], []
    for fname in files:
        path = os.path.join(root, fname)
        if not os.path.exists(path):
            raise DataError(f"{path} is missing from the CIFAR-10 {layout} batches. Re-extract {archive}.")
        flat, labels = read(path)
        xs.append(flat.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))  # stored channel-major
        ys.append(labels)
    return np.concatenate(xs), np.concatenate(ys)


def _classes_from_labels(path, labels):
    """Class names "0".."K-1" when the labels are exactly 0..K-1, all present; else a DataError.

    Taking K from the largest label would let one stray label (255, say) silently build a 256-way classifier.
    """
    found = np.unique(labels)
    if not np.issubdtype(found.dtype, np.integer):
        raise DataError(f"{path}: labels must be integers, got {found.dtype}.")
    k = len(found)
    if np.array_equal(found, np.arange(k)):
        _warn_rare_classes(path, labels, k)
        return tuple(str(i) for i in range(k))
    odd = [int(v) for v in found if not 0 <= v < k]
    missing = sorted(set(range(k)) - {int(v) for v in found})
    raise DataError(f"{path}: without class_names the labels must be exactly 0..K-1, all present; found {k} distinct "
                    f"labels, {odd[:10]} outside 0..{k - 1} and {missing[:10]} missing. Fix the labels, or declare the "
                    "classes by saving class_names (one name per class, labels indexing it) in the .npz.")


def _warn_rare_classes(path, labels, k):
    """A class with under a tenth of the median class's examples is most likely a stray label (10 among 0..9, say),
    which would silently add a class: say so, and how to declare the classes."""
    counts = np.bincount(np.ravel(labels).astype(np.int64), minlength=k)
    rare = [c for c in range(k) if counts[c] < 0.1 * np.median(counts)]
    if rare:
        print(f"warning: {path}: label(s) {rare[:10]} have only {[int(counts[c]) for c in rare[:10]]} examples "
              f"against a median of {int(np.median(counts))} per class, so the data is read as {k} classes. If those "
              "labels are strays, fix them; to fix the classes explicitly, save class_names (one name per class) in "
              "the .npz.",
              file=sys.stderr, flush=True)


def _npz_arrays(path, split, infer_classes=True):
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            expected = {"x_train", "y_train", "x_test", "y_test"}
            if not expected <= keys or keys - expected - {"class_names"}:
                raise DataError(f"{path}: expected keys {sorted(expected)} (and optionally class_names), "
                                f"found {sorted(keys)}.")
            x, y = z[f"x_{split}"], z[f"y_{split}"]
            other = z["x_test" if split == "train" else "x_train"]
            if x.shape[1:] != other.shape[1:]:
                raise DataError(f"{path}: x_train images are {z['x_train'].shape[1:]} but x_test images are "
                                f"{z['x_test'].shape[1:]}; both splits need the same size and channels.")
            if "class_names" in keys:
                names = tuple(str(n) for n in z["class_names"])
            elif not infer_classes:  # the caller knows the classes (cifar10)
                names = None
            else:
                names = _classes_from_labels(path, np.concatenate([np.ravel(z["y_train"]), np.ravel(z["y_test"])]))
    except DataError:
        raise
    except ValueError as e:  # object arrays need pickle: refused
        raise DataError(f"{path}: {e}. Save arrays with plain dtypes (uint8 images, int labels).") from e
    except Exception as e:  # zipfile.BadZipFile, OSError, EOFError: a truncated or foreign file
        raise DataError(f"{path}: not a readable .npz ({type(e).__name__}: {e}).") from e
    return x, y, names


def keras_cifar10_dirs():
    """Where keras.datasets.cifar10.load_data() leaves the python batches: $KERAS_HOME (default ~/.keras)/datasets/
    cifar-10-batches-py-target/cifar-10-batches-py (Keras 3) or datasets/cifar-10-batches-py (Keras 2)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    base = os.path.join(home, "datasets")
    return [os.path.join(base, "cifar-10-batches-py-target", "cifar-10-batches-py"),
            os.path.join(base, "cifar-10-batches-py")]


def _cifar10(split, resolution, data_dir, download):
    """(images, labels, origin) of CIFAR-10's train or test split, from --data_dir, else Keras' dataset cache, else
    tensorflow-datasets."""
    _check_resolution("cifar10", 32, resolution)
    candidates = []
    if not data_dir:
        for c in keras_cifar10_dirs():
            if os.path.exists(os.path.join(c, "data_batch_1")):
                return (*_cifar_batches(c, split, "py"), f"Keras' dataset cache: {c}")
    if data_dir:
        if not os.path.exists(data_dir):
            raise DataError(f"--data_dir {data_dir} does not exist.")
        candidates = [data_dir, os.path.join(data_dir, "cifar-10-batches-py"),
                      os.path.join(data_dir, "cifar-10-batches-bin")]
        if os.path.isfile(data_dir) and data_dir.endswith(".npz"):
            return (*_npz_arrays(data_dir, split, infer_classes=False)[:2], os.path.abspath(data_dir))
        for c in candidates:
            if os.path.exists(os.path.join(c, "data_batch_1")):
                return (*_cifar_batches(c, split, "py"), os.path.abspath(c))
            if os.path.exists(os.path.join(c, "data_batch_1.bin")):
                return (*_cifar_batches(c, split, "bin"), os.path.abspath(c))
        npz = os.path.join(data_dir, "cifar10.npz")
        if os.path.exists(npz):
            return (*_npz_arrays(npz, split, infer_classes=False)[:2], os.path.abspath(npz))
    try:
        x, y, _, origin = _tfds_arrays("cifar10", split, 32, data_dir, download)
        return x, y, origin
    except DataError as e:  # nothing prepared offline
        raise DataError(
            "CIFAR-10 not found. Point --data_dir at one of: a cifar-10-batches-py/ folder (python batches), "
            "a cifar-10-batches-bin/ folder (binary batches), an .npz with x_train, y_train, x_test, y_test, "
            "or a tensorflow-datasets data_dir with cifar10 prepared; or keep keras.datasets.cifar10's copy in "
            f"{keras_cifar10_dirs()[0]}; or pass --download to let tensorflow-datasets fetch it. ({e})") from e


def _square_resize(images, resolution):
    """A batch [N, H, W, C] (or one image) centre-cropped to a square and resized to `resolution` (bilinear with
    antialiasing), as uint8; unchanged when already square at that size or resolution is None and square."""
    images = np.asarray(images)
    h, w = images.shape[-3], images.shape[-2]
    if h == w and resolution in (None, h):
        return images
    side = min(h, w)
    crop = images[..., (h - side) // 2:(h - side) // 2 + side, (w - side) // 2:(w - side) // 2 + side, :]
    size = resolution or side
    out = tf.image.resize(crop.astype(np.float32), [size, size], method="bilinear", antialias=True)
    return np.clip(np.round(out.numpy()), 0, 255).astype(np.uint8)


def _tfds_arrays(spec, split, resolution, data_dir, download):
    """(images, labels, class names, origin) of a tensorflow-datasets image-classification set's train or test
    split (test falls back to validation when the set has no test split)."""
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(spec, data_dir=data_dir or None)
    except Exception as e:  # noqa: BLE001 -- DatasetNotFoundError and friends
        raise DataError(f"tensorflow-datasets has no dataset {spec!r} ({type(e).__name__}: {str(e)[:200]}); "
                        "tfds.list_builders() lists them.") from e
    features = builder.info.features
    label = features["label"] if "label" in features else None
    if "image" not in features or not isinstance(label, tfds.features.ClassLabel):
        raise DataError(f"tfds:{spec} is not an image-classification set: it needs an 'image' feature and a "
                        f"ClassLabel 'label' (its features: {', '.join(features)}).")
    splits = dict(builder.info.splits or {})
    name = split
    if split == "test" and splits and "test" not in splits:
        if "validation" not in splits:
            raise DataError(f"tfds:{spec} has neither a test nor a validation split (it has {', '.join(splits)}).")
        name = "validation"
    try:
        ds = tfds.load(spec, split=name, data_dir=data_dir or None, download=download, as_supervised=True)
    except Exception as e:  # noqa: BLE001 -- tfds raises assorted errors when nothing is prepared offline
        where = data_dir or "the default tensorflow-datasets folder"
        raise DataError(f"tfds:{spec} {name} is not prepared in {where} ({type(e).__name__}: {str(e)[:200]}). "
                        f"Prepare it once (tfds build {spec} --data_dir=DIR, then --data_dir=DIR), or pass "
                        "--download.") from e
    fixed = None not in features["image"].shape
    if fixed:  # one shape: batched decoding
        chunks = [(_square_resize(x, resolution), y) for x, y in tfds.as_numpy(ds.batch(1024))]
        images = np.concatenate([c[0] for c in chunks]) if chunks else np.zeros((0, 1, 1, 1), np.uint8)
        labels = np.concatenate([c[1] for c in chunks]) if chunks else np.zeros((0,), np.int64)
    else:
        if not resolution:
            raise DataError(f"tfds:{spec} has images of varying size: give --resolution (they are centre-cropped "
                            "to a square and resized to it).")
        pairs = [(_square_resize(x, resolution), y) for x, y in tfds.as_numpy(ds)]
        images, labels = np.stack([p[0] for p in pairs]), np.asarray([p[1] for p in pairs])
    origin = f"tensorflow-datasets {tfds.__version__}, {builder.info.full_name}, split {name}"
    return images, labels.astype(np.int32), tuple(label.names), origin


# ----------------------------------------------------------------------------- image folders
def _list_class_folders(root):
    if not os.path.isdir(root):
        raise DataError(f"{root} is not a directory. --data_dir must hold one sub-folder of images per class.")
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))
    if not classes:
        raise DataError(f"{root} has no class sub-folders. Put each class's images in its own folder.")
    return (classes, *_image_files(root, classes))


def _image_files(root, classes):
    """(files, labels) for the given class sub-folders, label = position in `classes`."""
    files, labels = [], []
    for i, c in enumerate(classes):
        names = sorted(f for f in os.listdir(os.path.join(root, c)) if f.lower().endswith(IMAGE_EXTENSIONS))
        if not names:
            raise DataError(f"class folder {os.path.join(root, c)} holds no PNG/JPEG images.")
        files += [os.path.join(root, c, f) for f in names]
        labels += [i] * len(names)
    return files, np.asarray(labels, np.int32)


def _decode_resize(path, resolution, channels, center_crop):
    """Decodes one image file to uint8 [r, r, channels]; clear error for an undecodable file."""
    try:
        img = tf.io.decode_image(tf.io.read_file(path), channels=channels, expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as e:
        raise DataError(f"cannot decode image {path}: {e.message.splitlines()[0]}. Remove or replace it.") from e
    if center_crop:
        h, w = int(img.shape[0]), int(img.shape[1])
        s = min(h, w)
        img = tf.image.crop_to_bounding_box(img, (h - s) // 2, (w - s) // 2, s, s)
    img = tf.image.resize(img, [resolution, resolution], method="bilinear", antialias=True)
    return np.clip(np.round(img.numpy()), 0, 255).astype(np.uint8)


def _cache_path(cache_dir, key):
    return os.path.join(cache_dir, f"robgan_cache_{hashlib.sha256(key.encode()).hexdigest()[:16]}")


def _decode_all(files, resolution, channels, center_crop, cache_dir, key):
    """Decodes every file once into a uint8 memmap cached on disk (written to a temp name, then renamed)."""
    shape = (len(files), resolution, resolution, channels)
    if cache_dir:
        base = _cache_path(cache_dir, key)
        meta_path, data_path = base + ".json", base + ".u8"
        if os.path.exists(meta_path) and os.path.exists(data_path):
            with open(meta_path) as f:
                if tuple(json.load(f)["shape"]) == shape:
                    return np.memmap(data_path, np.uint8, "r", shape=shape)
        os.makedirs(cache_dir, exist_ok=True)
        tmp = data_path + f".tmp{os.getpid()}"
        out = np.memmap(tmp, np.uint8, "w+", shape=shape)
    else:
        out = np.empty(shape, np.uint8)
    for i, path in enumerate(files):
        out[i] = _decode_resize(path, resolution, channels, center_crop)
        if len(files) > 5000 and i % 5000 == 0:
            print(f"decoding images: {i}/{len(files)}", flush=True)
    if cache_dir:
        out.flush()
        del out
        os.replace(tmp, data_path)
        with open(meta_path + ".tmp", "w") as f:
            json.dump({"shape": shape, "key": key}, f)
        os.replace(meta_path + ".tmp", meta_path)
        return np.memmap(data_path, np.uint8, "r", shape=shape)
    return out


def _folder(split, resolution, data_dir, channels, cache_dir):
    if not data_dir:
        raise DataError("dataset 'folder' needs --data_dir: a directory with one sub-folder of images per class "
                        "(optionally train/ and test/ sub-directories, each laid out that way).")
    root = os.path.join(data_dir, split) if os.path.isdir(os.path.join(data_dir, split)) else data_dir
    if resolution is None:
        raise DataError("dataset 'folder' needs --resolution (32, 64 or 128): its images are resized to it.")
    classes, files, labels = _list_class_folders(root)
    key = f"folder|{os.path.abspath(root)}|{resolution}|{channels}|{len(files)}"
    images = _decode_all(files, int(resolution), channels, False, cache_dir, key)
    flip = True
    info = DatasetInfo("folder", split, len(classes), tuple(classes), images.shape[1:], len(files), flip)
    return Source(images, labels, info)


# ----------------------------------------------------------------------------- imagenet143
IMAGENET143_FIRST, IMAGENET143_LAST = 151, 293
IMAGENET143_FIRST_WNID, IMAGENET143_LAST_WNID = "n02085620", "n02130308"


def _imagenet143_wnids_from_folder(root):
    wnids = sorted(d for d in os.listdir(root) if d.startswith("n") and os.path.isdir(os.path.join(root, d)))
    if len(wnids) == 1000:
        chosen = wnids[IMAGENET143_FIRST:IMAGENET143_LAST + 1]
    elif len(wnids) == 143:
        chosen = wnids
    else:
        raise DataError(f"{root}: expected the 1000 ImageNet class folders (WNIDs) or exactly the 143 of "
                        f"ImageNet-143, found {len(wnids)}.")
    if chosen[0] != IMAGENET143_FIRST_WNID or chosen[-1] != IMAGENET143_LAST_WNID:
        raise DataError(f"{root}: ImageNet-143 must run from {IMAGENET143_FIRST_WNID} (class 151) to "
                        f"{IMAGENET143_LAST_WNID} (class 293); found {chosen[0]}..{chosen[-1]}.")
    return chosen


def _is_imagefolder(root):
    return os.path.isdir(root) and any(d.startswith("n") and d[1:].isdigit() and os.path.isdir(os.path.join(root, d))
                                       for d in os.listdir(root))


def _imagenet143_tfds(split, resolution, data_dir, cache_dir):
    """ImageNet-143 from tensorflow-datasets' imagenet2012 prepared in data_dir (labels in sorted-WNID order).

    Returns (uint8 images, labels 0..142, the 143 WNIDs); decoded once into an .npz cache. The first pass
    holds the subset in memory (about 2x 2.2 GB at 64 px for the ~180k training images, 2x 8.8 GB at 128 px).
    """
    import tensorflow_datasets as tfds

    builder = tfds.builder("imagenet2012", data_dir=data_dir)
    names = builder.info.features["label"].names  # packaged with tensorflow-datasets, no download
    if names[IMAGENET143_FIRST] != IMAGENET143_FIRST_WNID or names[IMAGENET143_LAST] != IMAGENET143_LAST_WNID:
        raise DataError("tensorflow-datasets' imagenet2012 labels are not in the expected sorted-WNID order "
                        f"(class 151 is {names[IMAGENET143_FIRST]}, expected {IMAGENET143_FIRST_WNID}).")
    wnids = tuple(names[IMAGENET143_FIRST:IMAGENET143_LAST + 1])
    tfds_split = {"train": "train", "test": "validation"}[split]
    base = _cache_path(cache_dir or os.path.join(data_dir, ".robgan_cache"),
                       f"imagenet143-tfds|{os.path.abspath(data_dir)}|{split}|{resolution}")
    if os.path.exists(base + ".npz"):
        with np.load(base + ".npz", allow_pickle=False) as z:
            return z["images"], z["labels"], wnids
    try:  # preparing from the ILSVRC2012 tars takes hours, so it is the user's explicit step (see below)
        ds = builder.as_dataset(split=tfds_split, as_supervised=True)
    except Exception as e:  # not prepared
        raise DataError(
            f"imagenet143: {data_dir} holds neither WNID class folders nor a prepared tensorflow-datasets "
            "imagenet2012. Either extract ILSVRC2012 into train/ and val/ folders of WNID-named class folders, or "
            "put ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in DATA_DIR/downloads/manual and run "
            "tfds.builder('imagenet2012', data_dir=DATA_DIR).download_and_prepare() once. "
            f"({type(e).__name__}: {str(e)[:200]})") from e
    images, labels = [], []
    for image, label in ds.filter(lambda im, lab: (lab >= IMAGENET143_FIRST) & (lab <= IMAGENET143_LAST)):
        images.append(_square_resize(image.numpy(), resolution))
        labels.append(int(label) - IMAGENET143_FIRST)
    if not images:
        raise DataError(f"imagenet2012 {tfds_split} in {data_dir} has no images of classes 151..293.")
    images, labels = np.stack(images), np.asarray(labels, np.int32)
    os.makedirs(os.path.dirname(base), exist_ok=True)
    np.savez(base + ".tmp.npz", images=images, labels=labels)
    os.replace(base + ".tmp.npz", base + ".npz")
    return images, labels, wnids


def _imagenet143(split, resolution, data_dir, cache_dir):
    if resolution not in (64, 128):
        raise DataError(f"imagenet143 is built at 64 or 128 px, not {resolution}. Use --resolution=64 or 128.")
    if not data_dir or not os.path.isdir(data_dir):
        raise DataError("imagenet143 needs --data_dir: an ImageFolder-style directory of WNID-named class folders "
                        "(train/ and val/ inside, or the class folders directly), or a tensorflow-datasets "
                        "data_dir with imagenet2012 prepared.")
    sub = {"train": "train", "test": "val"}[split]
    root = os.path.join(data_dir, sub) if os.path.isdir(os.path.join(data_dir, sub)) else data_dir
    if _is_imagefolder(root):
        wnids = _imagenet143_wnids_from_folder(root)
        files, labels = _image_files(root, wnids)
        key = f"imagenet143|{os.path.abspath(root)}|{resolution}|{len(files)}"
        images = _decode_all(files, int(resolution), 3, True, cache_dir or os.path.join(data_dir, ".robgan_cache"),
                             key)
    else:
        images, labels, wnids = _imagenet143_tfds(split, int(resolution), data_dir, cache_dir)
    info = DatasetInfo("imagenet143", split, 143, tuple(wnids), images.shape[1:], len(labels), True)
    return Source(images, labels, info)


# ----------------------------------------------------------------------------- entry point
def load(name, split="train", resolution=None, data_dir=None, *, download=False, cache_dir=None, channels=3):
    """Loads a dataset as a `Source` (uint8 images, int32 labels, `DatasetInfo`). Raises DataError.

    name: digits | cifar10 | imagenet143 | folder | npz | tfds:NAME.  split: train or test, or a slice of one in
    tensorflow-datasets' notation (train[:90%], train[90%:], test[:1000]; see parse_split).
    resolution: None keeps the source's size (digits: 32); folders, ImageNet and tfds sets are resized to it.
    """
    check_name(name)
    base, _ = parse_split(split)
    if name == "digits":
        src = _digits(base, resolution)
    elif name == "folder":
        src = _folder(base, resolution, data_dir, channels, cache_dir)
    elif name == "imagenet143":
        src = _imagenet143(base, resolution, data_dir, cache_dir)
    else:
        if name == "npz":
            if not data_dir or not os.path.isfile(data_dir):
                raise DataError(f"dataset 'npz' needs --data_dir pointing at an .npz file; got {data_dir!r}.")
            x, y, names = _npz_arrays(data_dir, base)
            origin = os.path.abspath(data_dir)
        elif name == "cifar10":
            x, y, origin = _cifar10(base, resolution, data_dir, download)
            names = CIFAR10_CLASSES
        else:
            x, y, names, origin = _tfds_arrays(name[len(TFDS_PREFIX):], base, resolution, data_dir, download)
        x, y = np.asarray(x), np.asarray(y)
        if name == "npz":
            if x.ndim == 4 and x.shape[1] != x.shape[2]:
                raise DataError(f"{data_dir}: images must be square, got {x.shape[1]}x{x.shape[2]}.")
            if x.ndim >= 3:
                _check_resolution("npz", x.shape[1], resolution)
        x, y = _check_arrays(x, y, len(names), f"{name} ({base})")
        info = DatasetInfo(name, base, len(names), tuple(names), x.shape[1:], len(y), True, origin)
        src = Source(x, y, info)
    src.images, src.labels = _check_arrays(src.images, src.labels, src.info.num_classes, f"{name} ({base})")
    return _sliced(src, split)


def _float_images(x):
    return tf.cast(x, tf.float32) / 127.5 - 1.0


def _gather_fn(images):
    """A function indices -> uint8 images, embedding small arrays and reading big ones from disk."""
    if images.nbytes <= _EMBED_LIMIT:
        table = tf.constant(np.asarray(images))
        return lambda idx: tf.gather(table, idx)
    shape = images.shape[1:]

    def read(idx):
        order = np.argsort(idx)  # sorted reads are kinder to a memmap
        out = np.empty((len(idx),) + shape, np.uint8)
        out[order] = images[np.sort(idx)]
        return out

    def gather(idx):
        out = tf.numpy_function(read, [idx], tf.uint8)
        return tf.ensure_shape(out, [None, *shape])

    return gather


def train_dataset(source, batch_size, *, seed=0, start_step=0, augment="none", dequantize=False):
    """Infinite batches of (float32 images in [-1, 1], int32 labels), a pure function of the step.

    Batch k comes from epoch k // (N // batch_size) of a permutation drawn with a stateless RNG from
    (seed, epoch); the remainder of each epoch is dropped, so every batch is full (static shapes).
    `augment` (one of transforms.AUGMENTATIONS) and `dequantize` (U(0, 1/128) noise) draw from stateless
    seeds derived from (seed, step) too, so resuming at step k with the same seed replays exactly the
    batches an uninterrupted run would see.
    """
    if augment not in transforms.AUGMENTATIONS:
        raise DataError(f"augmentation must be one of {transforms.AUGMENTATIONS}, got {augment!r}.")
    n = len(source.labels)
    if batch_size > n:
        raise DataError(f"batch size {batch_size} exceeds the {n} examples of {source.info.name}.")
    steps_per_epoch = n // batch_size
    gather = _gather_fn(source.images)
    labels = tf.constant(source.labels)

    def batch(step):
        epoch, i = step // steps_per_epoch, step % steps_per_epoch
        perm = tf.argsort(tf.random.stateless_uniform([n], seed=tf.stack([tf.cast(seed, tf.int64), epoch])))
        idx = perm[i * batch_size:(i + 1) * batch_size]
        x = _float_images(gather(idx))
        if augment != "none":
            x = transforms.augment(x, augment, tf.stack([tf.cast(seed, tf.int64) + 2, step]))
        if dequantize:
            x = transforms.dequantize(x, tf.stack([tf.cast(seed, tf.int64) + 1, step]))
        return x, tf.gather(labels, idx)

    ds = tf.data.Dataset.range(int(start_step), 2**62).map(batch, num_parallel_calls=tf.data.AUTOTUNE,
                                                          deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def eval_dataset(source, batch_size, num_examples=None):
    """The first num_examples (default all) in order, batched; the last batch may be smaller."""
    n = len(source.labels) if num_examples is None else min(int(num_examples), len(source.labels))
    gather = _gather_fn(source.images[:n] if n < len(source.labels) else source.images)
    labels = tf.constant(source.labels[:n])

    def batch(start):
        idx = tf.range(start, tf.minimum(start + batch_size, n))
        return _float_images(gather(tf.cast(idx, tf.int32))), tf.gather(labels, idx)

    return tf.data.Dataset.range(0, n, batch_size).map(batch).prefetch(tf.data.AUTOTUNE)


__all__ = ["load", "train_dataset", "eval_dataset", "DataError", "DatasetInfo", "Source", "DATASETS",
           "RestrictedUnpickler", "restricted_pickle_load"]
