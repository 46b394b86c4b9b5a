"""Generator quality: Inception Score and FID with a named backend, and label fidelity.

Backends (every result carries its backend's label):
- "classifier": the probabilities and pooled features of a classifier trained by this package on the
  same dataset. Works offline anywhere; NOT comparable with published numbers.
- "keras_inception_v3": keras.applications.InceptionV3 with ImageNet weights from a LOCAL .h5 file
  (nothing is downloaded). A proxy: published TF numbers use the 2015 Inception graph, whose
  weights differ.
- "tf_inception_2015": the 2015-12-05 TF Inception graph from a LOCAL file, run as the original IS and FID
  code ran it (robgan_tf.inception2015): the numbers comparable with SN-GAN's published ones. NOT with the
  Rob-GAN paper's: its authors computed IS with torchvision's Inception-v3 (docs/FIDELITY.md).
"""
from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import tensorflow as tf

from robgan_tf import data as data_lib
from robgan_tf import inception2015
from robgan_tf import storage
from robgan_tf.attacks import class_logits, predict
from robgan_tf.progress import Progress

KERAS_INCEPTION_FILE = "inception_v3_weights_tf_dim_ordering_tf_kernels.h5"
KERAS_INCEPTION_SOURCE = ("https://storage.googleapis.com/tensorflow/keras-applications/inception_v3/"
                          + KERAS_INCEPTION_FILE)


def sha256_of(path, chunk=1 << 20):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def quantize(images):
    """[-1, 1] float images -> the uint8 values an image file would hold (round to nearest)."""
    return tf.cast(tf.round(tf.clip_by_value((tf.cast(images, tf.float32) + 1.0) * 127.5, 0.0, 255.0)), tf.uint8)


def inception_preprocess(images, size=299):
    """Quantise to uint8, grey -> RGB, bilinear resize to size x size, scale to [-1, 1] (Keras' Inception)."""
    x = tf.cast(quantize(images), tf.float32)
    if x.shape[-1] == 1:
        x = tf.tile(x, [1, 1, 1, 3])
    x = tf.image.resize(x, [size, size], method="bilinear")
    return x / 127.5 - 1.0


# ----------------------------------------------------------------------------- IS / FID maths
def inception_score(probs, splits=10):
    """Inception Score from class probabilities [N, K]: mean and std of exp(E[KL(p(y|x) || p(y))]) over splits."""
    probs = np.asarray(probs, np.float64)
    scores = []
    for part in np.array_split(probs, splits):
        marginal = part.mean(axis=0, keepdims=True)
        kl = np.sum(part * (np.log(part + 1e-12) - np.log(marginal + 1e-12)), axis=1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))


def feature_statistics(features):
    features = np.asarray(features, np.float64)
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2):
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)), with the matrix square root from an eigh of a
    symmetric product (stable and real): (S1 S2)^(1/2) has the trace of (S1^(1/2) S2 S1^(1/2))^(1/2)."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    w1, v1 = np.linalg.eigh(sigma1)
    root1 = (v1 * np.sqrt(np.clip(w1, 0, None))) @ v1.T
    w = np.linalg.eigvalsh(root1 @ sigma2 @ root1)
    tr_covmean = np.sum(np.sqrt(np.clip(w, 0, None)))
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)


def frechet_distance_to(mu1, sigma1, features):
    """frechet_distance(mu1, sigma1, *feature_statistics(features)), exactly. With fewer feature rows n than
    dimensions d (a quick score of a few hundred samples against 2048 Inception features) no d x d matrix is
    decomposed: S2 = A^T A for the centred rows A / sqrt(n - 1), and the cross term's nonzero eigenvalues are those
    of the n x n matrix A S1 A^T."""
    features = np.asarray(features, np.float64)
    n, d = features.shape
    if n < 2:
        raise ValueError("FID needs at least 2 feature rows.")
    if n > d:
        return frechet_distance(mu1, sigma1, *feature_statistics(features))
    mu1, sigma1 = np.asarray(mu1, np.float64), np.atleast_2d(sigma1).astype(np.float64)
    mu2 = features.mean(axis=0)
    a = (features - mu2) / np.sqrt(n - 1)
    w = np.linalg.eigvalsh(a @ sigma1 @ a.T)
    tr_covmean = np.sum(np.sqrt(np.clip(w, 0, None)))
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.sum(a * a) - 2.0 * tr_covmean)


def kernel_inception_distance(real, fake, subsets=100, subset_size=1000, seed=0):
    """KID (Binkowski et al. 2018): the unbiased MMD^2 between feature sets under the cubic polynomial kernel
    k(a, b) = (a.b / d + 1)^3, averaged over `subsets` random subsets of `subset_size` rows of each (fewer when
    a set is smaller); returns (mean, std over the subsets). Unlike FID it is unbiased at small sample sizes."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    d = real.shape[1]
    n = min(subset_size, len(real), len(fake))
    if n < 2:
        raise ValueError("KID needs at least 2 feature rows in each set.")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(subsets):
        x = real[rng.choice(len(real), n, replace=False)]
        y = fake[rng.choice(len(fake), n, replace=False)]
        kxx, kyy, kxy = ((a @ b.T / d + 1.0) ** 3 for a, b in ((x, x), (y, y), (x, y)))
        within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (n * (n - 1))
        values.append(within - 2.0 * kxy.mean())
    return float(np.mean(values)), float(np.std(values))


# Published IS / FID / KID use 50,000 generated images; fewer give biased (FID, IS) or noisier (KID) numbers.
PUBLISHED_SAMPLES = 50000
# Real features kept in the statistics cache for KID: a fixed random sample of this many images of the split.
KID_REAL_SAMPLE = 10000


# ----------------------------------------------------------------------------- backends
class ClassifierBackend:
    """IS/FID with a classifier trained by this package (its softmax and its pooled D features)."""

    name = "classifier"
    label = "classifier (trained by robgan_tf on this dataset; not comparable with published numbers)"

    def __init__(self, classifier):
        self.classifier = classifier

    def features(self, images):
        d = getattr(self.classifier, "discriminator", None)
        if d is None:  # any other classifier (an exported one, ...): its logits are the features
            return class_logits(self.classifier, images).numpy()
        return d.features(images, training=False).numpy()

    def outputs(self, images):
        """(probabilities, features)."""
        return tf.nn.softmax(class_logits(self.classifier, images)).numpy(), self.features(images)


class WeightsError(ValueError):
    """A local weights file is not the one expected (its sha256 differs)."""


def _local_weights(path, what, source, expected_sha256):
    """sha256 of a local weights file; clear errors when it is missing or is not the expected file."""
    if not path or not os.path.isfile(path):
        raise FileNotFoundError(
            f"Inception weights not found at {path!r}. This backend needs {what}, available from {source}; "
            "download it on a machine with internet and pass its path. Nothing is downloaded here.")
    digest = sha256_of(path)
    if expected_sha256 and digest != expected_sha256.strip().lower():
        raise WeightsError(f"{path} has sha256 {digest}, expected {expected_sha256}: a different or corrupted file.")
    return digest


class KerasInceptionBackend:
    """keras.applications.InceptionV3 from a local weights file (sha256 reported, checked if given)."""

    name = "keras_inception_v3"
    label = "keras_inception_v3 (proxy: not comparable with TF-Inception-2015 numbers)"

    def __init__(self, weights_path, expected_sha256=None):
        self.sha256 = _local_weights(weights_path, f"the Keras ImageNet weights file {KERAS_INCEPTION_FILE} (with "
                                     "the classification top)", KERAS_INCEPTION_SOURCE, expected_sha256)
        import keras

        base = keras.applications.InceptionV3(weights=weights_path, include_top=True)
        pool = base.get_layer("avg_pool").output
        self.model = keras.Model(base.input, [base.output, pool])

    def outputs(self, images):
        """(probabilities, features) of one forward pass."""
        probs, pool = self.model(inception_preprocess(images), training=False)
        return probs.numpy(), pool.numpy()

    def features(self, images):
        return self.outputs(images)[1]


def tf_inception_input(images):
    """[-1, 1] images -> what the 2015 graph is fed: uint8 values as float32 0..255, RGB (grey tiled)."""
    x = tf.cast(quantize(images), tf.float32)
    return tf.tile(x, [1, 1, 1, 3]) if x.shape[-1] == 1 else x


class TFInception2015Backend:
    """The 2015-12-05 Inception graph from a local file (see robgan_tf.inception2015 for the exact protocol).

    robgan_tf does not pin the file's sha256 (none could be verified offline when this was written): the
    structure is checked instead (input, 299x299 resize, pool_3, 2048x1008 softmax weights), the sha256 is
    reported and recorded with every cached statistic, and `expected_sha256` enforces one you trust.
    """

    name = "tf_inception_2015"
    label = ("tf_inception_2015 (the 2015-12-05 TF Inception graph as the original IS/FID code ran it: "
             "comparable with SN-GAN's and other TF-Inception numbers at the same sample counts; not with the "
             "Rob-GAN paper's torchvision-Inception scores)")

    def __init__(self, graph_path, expected_sha256=None, batch_size=50):
        self.sha256 = _local_weights(
            graph_path, f"{inception2015.GRAPH_FILE} or the archive {inception2015.ARCHIVE_FILE} holding it "
            "(robgan_tf pins no sha256 for it; pass the one of a copy you trust to have it checked)",
            inception2015.SOURCE_URL, expected_sha256)
        graph_def = inception2015.read_graph_def(graph_path)
        inception2015.check_structure(graph_def, graph_path)
        self.net = inception2015.Inception2015(graph_def)
        self.batch_size = batch_size

    def outputs(self, images):
        """(probabilities, features) of one forward pass."""
        x = tf_inception_input(images)
        feats, probs = zip(*(self.net(x[i:i + self.batch_size]) for i in range(0, int(x.shape[0]), self.batch_size)))
        return np.concatenate([p.numpy() for p in probs]), np.concatenate([f.numpy() for f in feats])

    def features(self, images):
        return self.outputs(images)[1]


class ReferenceBackend(ClassifierBackend):
    """IS / FID / KID and label accuracy under a reference classifier: one trained once, by plain supervised
    learning on the dataset's training split (robgan-train-reference), never on generated images, so it judges
    every run alike. Its file's sha256 is recorded with every score: scores are comparable when made with the
    same file, and never with published (Inception) numbers."""

    name = "reference"

    def __init__(self, path, expected_sha256=None):
        import importlib

        import keras

        importlib.import_module("robgan_tf.models")  # registers the layers the file needs

        if not path or not os.path.exists(path):
            raise WeightsError(f"the reference classifier {path!r} does not exist; train one with "
                               "robgan-train-reference --dataset=... --out=FILE.keras (minutes on a CPU).")
        self.sha256 = sha256_of(path)
        if expected_sha256 and self.sha256 != expected_sha256.lower():
            raise WeightsError(f"{path} has sha256 {self.sha256}, not the expected {expected_sha256}.")
        super().__init__(keras.saving.load_model(path))
        self.label = (f"reference classifier {os.path.basename(path)} (sha256 {self.sha256[:12]}..., trained on "
                      "the dataset's training split; comparable only with scores made with the same file, not "
                      "with published numbers)")


BACKENDS = ("classifier", "reference", "keras_inception_v3", "tf_inception_2015")


def make_backend(name, classifier=None, weights_path=None, expected_sha256=None):
    """A backend by name: `classifier` needs `classifier`; `reference` (a .keras file from
    robgan-train-reference) and the Inception backends need a local `weights_path`."""
    if name == "classifier":
        if classifier is None:
            raise ValueError("the classifier backend needs a classifier (a run's, or an exported SavedModel's)")
        return ClassifierBackend(classifier)
    if name == "reference":
        return ReferenceBackend(weights_path, expected_sha256)
    if name == "keras_inception_v3":
        return KerasInceptionBackend(weights_path, expected_sha256)
    if name == "tf_inception_2015":
        return TFInception2015Backend(weights_path, expected_sha256)
    raise ValueError(f"unknown quality backend {name!r}; choose one of {BACKENDS}")


def generated_batches(generator, num_samples, batch_size=100, seed=0):
    """Generator samples with uniformly drawn labels, `batch_size` per call. A generator is a callable (z, labels,
    training) -> images with .num_classes and .z_dim (models.Generator, models.sampler(G, 'batch') -- then each
    batch normalises itself -- or loading.ExportedGenerator)."""
    num_classes, z_dim = generator.num_classes, generator.z_dim
    rng = np.random.default_rng(seed)
    for start in range(0, num_samples, batch_size):
        b = min(batch_size, num_samples - start)
        z = rng.standard_normal((b, z_dim)).astype(np.float32)
        labels = rng.integers(0, num_classes, b).astype(np.int32)
        yield generator(z, labels, training=False)


def real_statistics(backend, source, cache_path=None, batch_size=100, verbose=True):
    """(mean, covariance, a fixed sample of up to KID_REAL_SAMPLE feature rows for KID) of a dataset split,
    cached as .npz with metadata describing them."""
    meta = {"backend": backend.name, "dataset": source.info.name, "split": source.info.split,
            "num_examples": source.info.num_examples, "image_shape": list(source.info.image_shape),
            "weights_sha256": getattr(backend, "sha256", None), "kid_sample": KID_REAL_SAMPLE}
    if cache_path and os.path.exists(cache_path):
        with np.load(cache_path, allow_pickle=False) as z:
            if json.loads(str(z["meta"])) == meta:
                return z["mu"], z["sigma"], z["kid_features"]
    progress = Progress(f"[{backend.name}] features of {source.info.name}/{source.info.split}",
                        source.info.num_examples, unit="images", enabled=verbose)
    feats = []
    for x, _ in data_lib.eval_dataset(source, batch_size):
        feats.append(backend.features(x))
        progress.update(int(x.shape[0]))
    progress.close()
    feats = np.concatenate(feats)
    mu, sigma = feature_statistics(feats)
    keep = np.sort(np.random.default_rng(0).permutation(len(feats))[:KID_REAL_SAMPLE])
    kid_features = feats[keep].astype(np.float32)
    if cache_path:
        storage.atomic_save(cache_path, lambda tmp: np.savez(tmp, mu=mu, sigma=sigma, kid_features=kid_features,
                                                             meta=np.array(json.dumps(meta))))
    return mu, sigma, kid_features


def generator_metrics(backend, generator, source=None, num_samples=5000, splits=10,
                      cache_path=None, batch_size=100, seed=0, verbose=True):
    """Inception Score (mean, std over splits) of generated images under `backend` and, when `source` (the
    reference split) is given, their FID and KID (mean, std over subsets) against its cached features -- all
    from one pass over the samples. `comparable_sample_count` is False below the 50,000 samples published
    numbers use."""
    probs, feats = [], []
    progress = Progress(f"[{backend.name}] generated images", num_samples, unit="images", enabled=verbose)
    for x in generated_batches(generator, num_samples, batch_size, seed):
        p, f = backend.outputs(x)
        probs.append(p)
        feats.append(f)
        progress.update(int(p.shape[0]))
    progress.close()
    mean, std = inception_score(np.concatenate(probs), splits)
    out = {"inception_score": mean, "inception_score_std": std, "num_samples": num_samples, "splits": splits,
           "backend": backend.name, "backend_label": backend.label,
           "weights_sha256": getattr(backend, "sha256", None),
           "comparable_sample_count": num_samples >= PUBLISHED_SAMPLES}
    if source is not None:
        mu_r, sigma_r, real_kid = real_statistics(backend, source, cache_path, batch_size, verbose)
        fake = np.concatenate(feats)
        out["fid"] = frechet_distance_to(mu_r, sigma_r, fake)
        out["kid"], out["kid_std"] = kernel_inception_distance(real_kid, fake, seed=seed)
        out["fid_reference"] = f"{source.info.name}/{source.info.split} ({source.info.num_examples} images)"
    return out


def per_class_label_accuracy(generator, classifier, n_per_class=100, seed=0):
    """Per-class fraction of generated images that `classifier` assigns to their conditioning label."""
    out = []
    for k in range(generator.num_classes):
        z = tf.random.stateless_normal([n_per_class, generator.z_dim], seed=[seed, k])
        labels = tf.fill([n_per_class], k)
        pred = predict(classifier, generator(z, labels, training=False))
        out.append(float(tf.reduce_mean(tf.cast(pred == k, tf.float32))))
    return out


def stats_cache_path(directory, backend_name, dataset, split):
    """Where the real split's feature statistics for a backend are cached."""
    from robgan_tf.data import slug

    return os.path.join(directory, f"fid_stats_{backend_name}_{slug(dataset)}_{split}.npz")


def curve_point(backend, generator, source, num_samples, cache_path, classifier=None):
    """IS, FID, KID and mean label accuracy of one generator: a point of a quality curve. Label accuracy is judged
    by the backend's classifier when it has one (the reference classifier, independent of the run), else by
    `classifier`."""
    m = generator_metrics(backend, generator, source, num_samples, cache_path=cache_path, verbose=False)
    judge = getattr(backend, "classifier", None) or classifier
    label = per_class_label_accuracy(generator, judge, n_per_class=max(num_samples // generator.num_classes, 1))
    return {"inception_score": m["inception_score"], "fid": m["fid"], "kid": m["kid"],
            "label_accuracy": float(np.mean(label))}
