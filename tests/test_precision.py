"""--precision: what `auto` picks, float32 where the numerics need it under the mixed policies, runs resuming across
float32 and bfloat16, and float32 exports of a bfloat16 run."""
import json
import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from robgan_tf import losses, precision
from robgan_tf.attacks import pgd
from robgan_tf.config import AttackConfig, TrainConfig
from robgan_tf.layers import SpectralNorm
from robgan_tf.models import Discriminator, Generator
from robgan_tf.training import RobGAN, make_optimizers
from tools import TINY, run_tool


@pytest.mark.parametrize("hardware,policy", [
    (dict(cpu_flags={"avx2", "avx512f", "avx512_bf16"}, gpu_capabilities=[], tpus=0), "mixed_bfloat16"),
    (dict(cpu_flags={"avx2", "amx_bf16", "amx_tile"}, gpu_capabilities=[], tpus=0), "mixed_bfloat16"),
    (dict(cpu_flags={"avx2", "avx512f"}, gpu_capabilities=[], tpus=0), "float32"),
    (dict(cpu_flags={"avx512_bf16"}, gpu_capabilities=[(7, 5)], tpus=0), "float32"),  # the GPU computes
    (dict(cpu_flags=set(), gpu_capabilities=[(8, 0), (9, 0)], tpus=0), "mixed_bfloat16"),
    (dict(cpu_flags=set(), gpu_capabilities=[], tpus=8), "mixed_bfloat16"),
])
def test_auto_picks_bfloat16_only_where_it_is_native_and_says_why(hardware, policy):
    chosen, reason = precision.resolve("auto", **hardware)
    assert chosen == policy and reason.startswith("auto: ")
    if policy == "mixed_bfloat16":
        assert "natively" in reason
    assert precision.resolve("mixed_float16", **hardware) == ("mixed_float16", "asked for")
    with pytest.raises(ValueError, match="precision must be one of"):
        precision.resolve("bfloat16")


def _robgan(policy):
    keras.mixed_precision.set_global_policy(policy)
    cfg = TrainConfig(method="robgan", attack=AttackConfig(eps=0.05, steps=2, loss="two_head"), ema_decay=0.9,
                      precision=policy)
    d = Discriminator(4, 16, "tiny", channels=1, norm="batch")
    model = RobGAN(d, Generator(4, 16, "tiny", channels=1, z_dim=8), cfg)
    model.compile(*make_optimizers(cfg))
    return model


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_float32_where_the_numerics_need_it(policy):
    model = _robgan(policy)
    g, d = model.generator, model.discriminator
    assert d.blocks[1].conv1.compute_dtype == policy[len("mixed_"):]  # the layers do compute in low precision
    x = tf.random.uniform([8, 16, 16, 1], -1, 1)
    y = tf.constant([0, 1, 2, 3] * 2)
    model.train_step((x, y))
    # spectral norm: u, the power iteration and sigma
    sn = d.blocks[1].conv1
    assert isinstance(sn, SpectralNorm) and sn.u.dtype == "float32"
    sigma, u = sn.power_iteration(tf.reshape(sn.normalized_kernel(), [-1, sn.layer.kernel.shape[-1]]))
    assert sigma.dtype == u.dtype == tf.float32
    # BN statistics, conditional-BN parameters, every variable, optimizer states, the EMA generator
    assert all(v.dtype == "float32" for v in g.weights + d.weights)
    assert {v.dtype for v in model.d_optimizer.variables + model.g_optimizer.variables} <= {"float32", "int64"}
    assert model.ema_weights and all(v.dtype == "float32" for v in model.ema_weights)
    # logits and losses
    logit, logits = d(x, training=False)
    assert logit.dtype == logits.dtype == tf.float32
    per_example = losses.discriminator_loss(logit, logits, y, logit, logits, y)
    assert per_example.dtype == tf.float32 and np.isfinite(per_example.numpy()).all()
    # the attack: gradients may be low precision, the adversarial images are float32 and exactly inside the ball
    eps = 0.05
    adv = pgd(d, x, y, eps=eps, steps=3, loss="two_head")
    assert adv.dtype == tf.float32
    # inside [x - eps, x + eps] as float32 computes those bounds (|adv - x| itself may round 1 ulp over eps)
    assert bool(tf.reduce_all(adv <= x + eps)) and bool(tf.reduce_all(adv >= x - eps))
    assert float(tf.reduce_max(tf.abs(adv))) <= 1.0
    assert isinstance(model.d_optimizer, keras.optimizers.LossScaleOptimizer) == (policy == "mixed_float16")


def test_float32_copy_holds_the_same_weights_and_computes_in_float32():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    g = Generator(4, 16, "tiny", channels=1, z_dim=8)
    g.build_by_calling()
    z, y = tf.random.normal([3, 8]), tf.constant([0, 2, 3])
    low = g(z, y, training=False)
    copy = precision.float32_copy(g)
    keras.mixed_precision.set_global_policy("float32")
    reference = Generator(4, 16, "tiny", channels=1, z_dim=8)
    reference.build_by_calling()
    reference.set_weights(g.get_weights())
    assert copy.dtype_policy.name == "float32" and copy.blocks[0].conv1.compute_dtype == "float32"
    np.testing.assert_array_equal(copy(z, y, training=False), reference(z, y, training=False))
    np.testing.assert_allclose(copy(z, y, training=False), low, atol=0.05)  # bfloat16 keeps ~3 digits
    assert precision.float32_copy(reference) is reference


@pytest.mark.xdist_group("pipeline_run")
def test_a_float32_run_resumes_in_bfloat16_and_back_and_a_bfloat16_run_exports_float32(pipeline_run, tmp_path):
    logdir = tmp_path / "run"  # the pipeline's float32 training (4 iterations), without its fine-tuning and exports
    skip = {"export", "finetune_checkpoints", "eval"}
    shutil.copytree(pipeline_run[0], logdir, ignore=lambda folder, names: skip & set(names))
    common = [f"--logdir={logdir}", "--finetune_steps=0", *TINY]
    to_bf16 = run_tool("train", *common, "--train_iterations=5", "--precision=mixed_bfloat16")
    assert to_bf16.returncode == 0 and "resuming from" in to_bf16.stdout and "[train] 5/5" in to_bf16.stdout, \
        to_bf16.stderr
    refused = run_tool("train", *common, "--train_iterations=6", "--precision=mixed_float16")
    assert refused.returncode == 2 and "loss-scaled" in refused.stderr
    old = run_tool("train", *common, "--train_iterations=6", "--mixed_precision")  # 0.8's flag
    assert old.returncode == 2 and "deprecated; use --precision=mixed_float16" in old.stderr
    # the export of a bfloat16 run computes in float32 and gives the float32 copy's logits
    exported = run_tool("export", f"--logdir={logdir}")
    assert exported.returncode == 0, exported.stderr
    from robgan_tf import loading

    classifier, provenance = loading.load_classifier(str(logdir / "export"), with_provenance=True)
    keras.mixed_precision.set_global_policy("float32")  # as in a fresh process (the tools above set the run's)
    keras_file = keras.saving.load_model(str(logdir / "export" / "classifier.keras"))
    assert keras_file.dtype_policy.name == "float32"
    x = tf.random.uniform([4, 16, 16, 1], -1, 1)
    np.testing.assert_allclose(classifier(x), keras_file(x, training=False), atol=1e-5)
    assert os.path.isdir(logdir / "export" / "classifier" / "1") and provenance["training_iteration"] == 5
    # evaluation measures the float32 model unless asked otherwise, and says which it measured
    results = {}
    for p in ("float32", "mixed_bfloat16"):
        out = tmp_path / f"eval_{p}.json"
        proc = run_tool("evaluate", f"--model={logdir}", "--eps=0,0.02", "--num_examples=64", "--noprogress",
                        "--stage=trained", f"--precision={p}", f"--json_out={out}")
        assert proc.returncode == 0, proc.stderr
        results[p] = json.load(open(out))
        assert results[p]["precision"] == {"evaluated": p, "trained": "mixed_bfloat16"}
    for a, b in zip(results["float32"]["results"], results["mixed_bfloat16"]["results"]):
        assert a["eps"] == b["eps"] and abs(a["accuracy"] - b["accuracy"]) <= 4 / 64  # bfloat16 logits round
    refused = run_tool("evaluate", f"--model={logdir}/export", "--precision=mixed_bfloat16")
    assert refused.returncode == 2 and "computes in float32" in refused.stderr
    # and the bfloat16 checkpoint resumes in float32
    back = run_tool("train", *common, "--train_iterations=6", "--precision=float32")
    assert back.returncode == 0 and "[train] 6/6" in back.stdout, back.stderr
    changes = [json.loads(line) for line in open(logdir / "history.jsonl")]
    assert [c["changed"]["precision"] for c in changes if "precision" in c.get("changed", {})] == [
        ["float32", "mixed_bfloat16"], ["mixed_bfloat16", "float32"]]  # each change of precision is on record
