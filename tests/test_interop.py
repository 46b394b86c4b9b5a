"""Reading PyTorch checkpoints without torch (torch_format), and the authors' networks imported (interop): equal to
an independent NumPy forward of their modules on the same weights (tests/authors_numpy.py), and their attack and
losses on those weights.

tests/data/state_dict_{zip,legacy}.pt were written by torch 2.13 (torch.save, and with
_use_new_zipfile_serialization=False for the format the authors' torch 0.4 wrote) from:
    a = arange(6).reshape(2, 3); view = arange(12).reshape(3, 4)[:, 1:3].t(); count = tensor(7);
    bf16 = arange(4, dtype=bfloat16) / 4; empty = zeros(0, 3);
    bn = BatchNorm2d(2) with weight [1.5, -2] and running_var 3.
"""
import os
import pickle

import numpy as np
import pytest
import tensorflow as tf

import authors_numpy as ref
from robgan_tf import interop, losses, models
from robgan_tf.attacks import pgd
from robgan_tf.torch_format import TorchCheckpointError, read_state_dict
from torch_files import save_state_dict, write_pickle_zip

DATA = os.path.join(os.path.dirname(__file__), "data")


@pytest.mark.parametrize("name", ["state_dict_zip.pt", "state_dict_legacy.pt"])
def test_reads_files_written_by_torch(name):
    s = read_state_dict(os.path.join(DATA, name))
    assert list(s) == ["a", "view", "count", "bf16", "empty", "bn.weight", "bn.bias", "bn.running_mean",
                       "bn.running_var", "bn.num_batches_tracked"]
    np.testing.assert_array_equal(s["a"], np.arange(6, dtype=np.float32).reshape(2, 3))
    np.testing.assert_array_equal(s["view"], np.arange(12, dtype=np.float32).reshape(3, 4)[:, 1:3].T)
    assert s["count"].dtype == np.int64 and s["count"] == 7
    np.testing.assert_array_equal(s["bf16"], [0, 0.25, 0.5, 0.75])
    assert s["empty"].shape == (0, 3)
    np.testing.assert_array_equal(s["bn.weight"], [1.5, -2.0])
    np.testing.assert_array_equal(s["bn.running_var"], [3.0, 3.0])
    np.testing.assert_array_equal(s["bn.bias"], [0.0, 0.0])


class _RunsCommand:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_a_pickle_naming_any_other_callable_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran"
    payload = pickle.dumps({"w": _RunsCommand(marker)}, protocol=2)
    path = write_pickle_zip(tmp_path / "evil.pt", payload)
    with pytest.raises(TorchCheckpointError, match=r"names (posix|os|nt)\.system.*refused without calling it"):
        read_state_dict(path)
    assert not marker.exists()
    legacy = tmp_path / "evil_legacy.pt"  # the same inside the legacy format's stream of pickles
    legacy.write_bytes(b"".join(pickle.dumps(o, protocol=2) for o in (0x1950A86A20F9469CFC6C, 1001, {})) + payload)
    with pytest.raises(TorchCheckpointError, match="refused without calling it"):
        read_state_dict(legacy)
    assert not marker.exists()


def test_damaged_or_foreign_files_are_named(tmp_path):
    good = save_state_dict({"w": np.arange(4, dtype=np.float32)}, tmp_path / "good.pt")
    np.testing.assert_array_equal(read_state_dict(good)["w"], np.arange(4))
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[:-40])
    with pytest.raises(TorchCheckpointError, match="cut.pt"):
        read_state_dict(cut)
    with pytest.raises(TorchCheckpointError, match="no such checkpoint"):
        read_state_dict(tmp_path / "missing.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(TorchCheckpointError, match="not a readable PyTorch checkpoint|not a PyTorch checkpoint"):
        read_state_dict(tmp_path / "text.pt")
    with pytest.raises(TorchCheckpointError, match="not a state_dict"):
        read_state_dict(write_pickle_zip(tmp_path / "list.pt", pickle.dumps([1, 2], protocol=2)))


def test_a_stride_reaching_outside_its_storage_is_refused(tmp_path):
    path = save_state_dict({"w": np.arange(4, dtype=np.float32)}, tmp_path / "w.pt")
    import zipfile
    with zipfile.ZipFile(path) as z:
        files = {n: z.read(n) for n in z.namelist()}
    # size (4,) with stride 1 -> stride 2: element 6 of a storage of 4
    pkl = files["archive/data.pkl"]
    assert pkl.count(b"K\x01\x85") == 1  # BININT1 1, TUPLE1: the stride
    files["archive/data.pkl"] = pkl.replace(b"K\x01\x85", b"K\x02\x85")
    with zipfile.ZipFile(path, "w") as z:
        for n, data in files.items():
            z.writestr(n, data)
    with pytest.raises(TorchCheckpointError, match="reaches element 6 of a storage of 4"):
        read_state_dict(path)


# -- the authors' networks ------------------------------------------------------------------------------------

def _nhwc(a):
    return np.transpose(a, (0, 2, 3, 1))


def _nchw(a):
    return np.transpose(np.asarray(a, np.float64), (0, 3, 1, 2))


def _discriminator(tmp_path, resolution, num_classes, prefix=""):
    shapes, downsample = ref.discriminator_shapes(resolution, num_classes)
    state = ref.random_state(shapes, np.random.default_rng(resolution))
    path = save_state_dict({prefix + k: v for k, v in state.items()}, tmp_path / "dis.pth")
    d = interop.from_authors_checkpoint(path, "discriminator", resolution, num_classes)
    return d, {k: v.astype(np.float64) for k, v in state.items()}, downsample


@pytest.mark.parametrize("resolution,num_classes", [(32, 10), (64, 143)])
def test_discriminator_equals_the_numpy_forward_in_both_modes(tmp_path, resolution, num_classes):
    # at 32 px with BN after every conv; DataParallel's "module." prefix, as their train.py saves it
    d, s, downsample = _discriminator(tmp_path, resolution, num_classes, prefix="module.")
    x = np.random.default_rng(1).uniform(-1, 1, (3, resolution, resolution, 3)).astype(np.float32)
    for training in (False, True):
        logit, logits = ref.discriminator(s, _nchw(x), downsample, training)
        ours_logit, ours_logits = d(x, training=training)
        scale = np.abs(logits).max()
        np.testing.assert_allclose(ours_logit, logit, atol=2e-5 * scale, rtol=0)
        np.testing.assert_allclose(ours_logits, logits, atol=2e-5 * scale, rtol=0)


@pytest.mark.parametrize("resolution,num_classes", [(32, 10), (64, 143)])
def test_generator_equals_the_numpy_forward_in_both_modes(tmp_path, resolution, num_classes):
    state = ref.random_state(ref.generator_shapes(resolution, num_classes), np.random.default_rng(2))
    last = 6 if resolution < 128 else 7
    state[f"b{last}.running_var"] *= 1e-4  # small variances: PyTorch's eps 1e-5 is told from Chainer's 2e-5 (by 5%)
    g = interop.from_authors_checkpoint(save_state_dict(state, tmp_path / "gen.pth"), "generator", resolution,
                                        num_classes)
    s = {k: v.astype(np.float64) for k, v in state.items()}
    rng = np.random.default_rng(3)
    z, y = rng.standard_normal((3, 128)).astype(np.float32), np.array([0, num_classes - 1, 5], np.int32)
    moving = [v.numpy() for v in g.non_trainable_weights]
    # the authors' sampling (G never in eval mode): batch statistics, here without touching the moving averages
    np.testing.assert_allclose(models.sampler(g, "batch")(z, y), _nhwc(ref.generator(s, z, y, resolution, True)),
                               atol=5e-5, rtol=0)
    for before, v in zip(moving, g.non_trainable_weights):
        np.testing.assert_array_equal(v.numpy(), before)
    for training in (False, True):  # inference mode first: training mode updates the moving statistics
        images = _nhwc(ref.generator(s, z, y, resolution, training))
        # dividing by sqrt(1e-4) also scales float32's rounding by 100 in inference mode
        np.testing.assert_allclose(g(z, y, training=training), images, atol=5e-5 if training else 5e-4, rtol=0)
    # their CBN passes decay=0.9 as torch's momentum: the running mean moves 0.9 of the way to the batch's
    stem = ref.linear(z.astype(np.float64), s["l1.weight"], s["l1.bias"]).reshape(3, -1, 4, 4)
    np.testing.assert_allclose(g.blocks[0].cbn1.bn.moving_mean, 0.1 * s["block2.b1.avg_mean"]
                               + 0.9 * stem.mean(axis=(0, 2, 3)), atol=1e-5)


def test_preact_resnet18_equals_the_numpy_forward(tmp_path):
    state = ref.random_state(ref.preact_shapes(10), np.random.default_rng(4))
    d = interop.from_authors_checkpoint(save_state_dict(state, tmp_path / "preact.pth"), "preact_resnet18", 32, 10)
    x = np.random.default_rng(5).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    logit, logits = ref.preact_resnet18({k: v.astype(np.float64) for k, v in state.items()}, _nchw(x))
    ours_logit, ours_logits = d(x, training=False)
    np.testing.assert_allclose(ours_logit, logit, atol=1e-5 * np.abs(logits).max(), rtol=0)
    np.testing.assert_allclose(ours_logits, logits, atol=1e-5 * np.abs(logits).max(), rtol=0)


def test_the_authors_training_attack_and_losses_on_imported_weights(tmp_path):
    """Their attack_Linf_PGD (miscs/pgd.py) step by step: D in eval mode, start at the clean image, ascend
    0.5 * BCE(logit, real) + 0.5 * CE (their loss_nll, mean over the batch) by 0.0078 * sign(grad), clamp the
    difference to eps, then the image to [-1, 1]; and their loss_nll for D (split: lam 1 on fakes, --our_loss;
    AC-GAN: lam 0.5) and G (lam 0.5), computed here from the NumPy forward's logits."""
    d, s, downsample = _discriminator(tmp_path, 32, 10)
    rng = np.random.default_rng(6)
    x = rng.uniform(-1, 1, (4, 32, 32, 3)).astype(np.float32)
    y = np.array([0, 3, 7, 9], np.int32)
    eps = 0.0625
    adv = tf.constant(x)
    for _ in range(5):
        with tf.GradientTape() as tape:
            tape.watch(adv)
            logit, logits = d(adv, training=False)
            bce = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(tf.ones_like(logit), logit))
            ce = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
            loss = 0.5 * bce + 0.5 * ce
        step = adv + 0.0078 * tf.sign(tape.gradient(loss, adv))
        adv = tf.clip_by_value(x + tf.clip_by_value(step - x, -eps, eps), -1, 1)
    ours = pgd(d, x, y, eps=eps, steps=5, step_size=0.0078, loss="two_head")
    # the mean (theirs) and our sum give the same signs but for gradients decided by rounding
    assert np.mean(np.abs(ours.numpy() - adv.numpy()) < 1e-6) > 0.999
    assert np.all(np.abs(ours.numpy() - x) <= eps + 1e-7) and np.all(np.abs(ours.numpy()) <= 1)

    def nll(logit, logits, labels, real, lam):  # their loss_nll
        bce = np.mean(np.logaddexp(0, -logit) if real else np.logaddexp(0, logit))
        ce = np.mean(np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
                     - logits[np.arange(len(labels)), labels])
        return lam * bce + (1 - lam) * ce

    x_fake = rng.uniform(-1, 1, x.shape).astype(np.float32)
    y_fake = np.array([1, 1, 2, 8], np.int32)
    r_logit, r_logits = ref.discriminator(s, _nchw(ours.numpy()), downsample, True)
    f_logit, f_logits = ref.discriminator(s, _nchw(x_fake), downsample, True)
    theirs = {"split": nll(r_logit, r_logits, y, True, 0.5) + nll(f_logit, f_logits, y_fake, False, 1.0),
              "acgan": nll(r_logit, r_logits, y, True, 0.5) + nll(f_logit, f_logits, y_fake, False, 0.5),
              "g": nll(f_logit, f_logits, y_fake, True, 0.5)}
    ro, rc = d(ours, training=True)
    fo, fc = d(x_fake, training=True)
    for variant in ("split", "acgan"):
        mine = tf.reduce_mean(losses.discriminator_loss(ro, rc, y, fo, fc, y_fake, losses.LossConfig(variant=variant)))
        np.testing.assert_allclose(float(mine), theirs[variant], rtol=1e-4)
    np.testing.assert_allclose(float(tf.reduce_mean(losses.generator_loss(fo, fc, y_fake))), theirs["g"], rtol=1e-4)


def test_mismatches_name_the_key_and_the_shapes(tmp_path):
    shapes, _ = ref.discriminator_shapes(32, 10)
    state = ref.random_state(shapes, np.random.default_rng(0))
    with pytest.raises(TorchCheckpointError, match=r"l_y.weight has shape \(10, 128\), this network expects \(143, 128\)"):
        interop.from_authors_checkpoint(save_state_dict(state, tmp_path / "d.pth"), "discriminator", 32, 143)
    del state["block2.c1.weight"]
    with pytest.raises(TorchCheckpointError, match=r"missing \['block2.c1.weight'\]"):
        interop.from_authors_checkpoint(save_state_dict(state, tmp_path / "d2.pth"), "discriminator", 32, 10)
    g_state = ref.random_state(ref.generator_shapes(32, 10), np.random.default_rng(0))
    with pytest.raises(TorchCheckpointError, match=r"missing \['block1\..*unexpected \['b6.bias'"):
        interop.from_authors_checkpoint(save_state_dict(g_state, tmp_path / "g.pth"), "discriminator", 32, 10)
    g_state["block2.b1.gamma_"][0] = 2.0
    with pytest.raises(TorchCheckpointError, match="block2.b1.gamma_ is not all 1"):
        interop.from_authors_checkpoint(save_state_dict(g_state, tmp_path / "g2.pth"), "generator", 32, 10)
    with pytest.raises(ValueError, match="network must be one of"):
        interop.from_authors_checkpoint(tmp_path / "g.pth", "critic", 32, 10)


def test_robgan_export_serves_the_authors_checkpoints(tmp_path):
    """robgan-export --authors_discriminator/--authors_generator: the exported classifier's logits and generator's
    images equal the NumPy forward of the authors' networks (inference mode), and the card says where they came
    from."""
    from robgan_tf import loading
    from tools import run_tool

    shapes, downsample = ref.discriminator_shapes(32, 10)
    d_state = ref.random_state(shapes, np.random.default_rng(7))
    g_state = ref.random_state(ref.generator_shapes(32, 10), np.random.default_rng(8))
    d_path = save_state_dict(d_state, tmp_path / "dis_epoch_199.pth")
    g_path = save_state_dict(g_state, tmp_path / "gen_epoch_199.pth")
    out = tmp_path / "export"
    missing = run_tool("export", f"--authors_discriminator={d_path}", "--dataset=cifar10", "--resolution=32")
    assert missing.returncode == 2 and "needs --export_dir" in missing.stderr
    done = run_tool("export", f"--authors_discriminator={d_path}", f"--authors_generator={g_path}",
                    "--dataset=cifar10", "--resolution=32", f"--export_dir={out}")
    assert done.returncode == 0, done.stderr
    classifier, generator = loading.load_classifier(str(out)), loading.load_generator(str(out))
    assert classifier.class_names[0] == "airplane" and classifier.card["dataset"] == "cifar10"
    source = classifier.card["weights"]["imported_from"]
    assert source["discriminator"]["sha256"] == __import__("hashlib").sha256(d_path.read_bytes()).hexdigest()
    x = np.random.default_rng(9).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    _, logits = ref.discriminator({k: v.astype(np.float64) for k, v in d_state.items()}, _nchw(x), downsample, False)
    np.testing.assert_allclose(classifier(x), logits, atol=2e-5 * np.abs(logits).max(), rtol=0)
    z, y = np.random.default_rng(10).standard_normal((2, 128)).astype(np.float32), np.array([2, 9], np.int32)
    images = ref.generator({k: v.astype(np.float64) for k, v in g_state.items()}, z, y, 32, False)
    np.testing.assert_allclose(generator(z, y), _nhwc(images), atol=5e-5, rtol=0)
