"""The launch scripts end to end on digits with tiny settings. robgan-pipeline runs as a user runs it (a subprocess
of its console script), and train.py where a process must be killed or signalled; everything else in this process
(tests/tools.py), through the same entry point: that every console script is installed and reaches it is
tests/test_packaging.py's."""
import base64
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.framework import config as tf_config

from inception_standin import standin_graph
from tools import TINY, non_finite_in_checkpoint, run_tool, run_tool_ok as _in_process

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _scalar_tags(event_dir):
    tags = set()
    for name in os.listdir(event_dir):
        if not name.startswith("events.out.tfevents"):
            continue
        for event in tf.compat.v1.train.summary_iterator(os.path.join(event_dir, name)):
            for v in event.summary.value:
                tags.add(v.tag)
    return tags


@pytest.mark.xdist_group("pipeline_run")
def test_pipeline_writes_every_artifact(pipeline_run):
    logdir, stdout = pipeline_run
    for rel in ("config.json", "checkpoints/checkpoint", "finetune_checkpoints/checkpoint", "eval/robustness.json",
                "export/generator/1/saved_model.pb", "export/classifier/1/saved_model.pb", "export/manifest.json",
                "export/classifier.keras", "export/generator.keras",
                "samples.png"):
        assert os.path.exists(os.path.join(logdir, rel)), rel
    result = json.load(open(os.path.join(logdir, "eval", "robustness.json")))
    assert [r["eps"] for r in result["results"]] == [0.0, 0.02, 0.04, 0.08]
    for r in result["results"]:
        assert set(r) == {"protocol", "eps", "eps_01", "accuracy", "num_examples"}
        assert r["eps_01"] == r["eps"] / 2 and r["num_examples"] == 48 and 0 <= r["accuracy"] <= 1
    assert result["dataset"] == "digits" and result["split"] == "test" and "paper" in result["attacks"]
    manifest = json.load(open(os.path.join(logdir, "export", "manifest.json")))
    assert manifest["class_names"] == [str(i) for i in range(10)]
    assert manifest["resolution"] == 16 and manifest["channels"] == 1 and manifest["image_range"] == [-1.0, 1.0]
    assert manifest["training_flags"]["train_iterations"] == 4 and len(manifest["git_commit"]) > 0
    # progress, the table and the paths reach the user
    assert "[train] 4/4" in stdout and "it/s" in stdout and "ETA" in stdout
    assert "| paper |" in stdout and "export/classifier/1" in stdout and "samples.png" in stdout
    assert manifest["robustness"]["results"] == result["results"]  # the model card carries the exported weights' table
    # TensorBoard: every loss/accuracy, learning rates, speed, sample grids, fine-tuning robustness, the table
    train_tags = _scalar_tags(os.path.join(logdir, "train"))
    assert {"d_loss", "g_loss", "real_fake_acc", "real_class_acc", "fake_class_acc", "lr_d", "lr_g",
            "iterations_per_second", "samples", "config"} <= train_tags
    ft_tags = _scalar_tags(os.path.join(logdir, "finetune"))
    # with a validation split, fine-tuning is monitored on it, not on the test split (the final table stays on test)
    assert "val_clean_accuracy" in ft_tags and any(t.startswith("val_robust_accuracy") for t in ft_tags)
    assert not any(t.startswith("test_") for t in ft_tags)
    # the train-vs-held-out gap during training reads the validation split too: the test split is only evaluated
    gap_tags = {"gap/train_robust_accuracy", "gap/val_robust_accuracy", "gap/train_llv_mean", "gap/val_llv_mean"}
    assert gap_tags <= train_tags and gap_tags <= ft_tags
    assert not any(t.startswith("gap/test_") for t in train_tags | ft_tags)
    eval_tags = _scalar_tags(os.path.join(logdir, "eval"))
    assert {"robustness", "paper/accuracy_eps0.02", "generator/label_accuracy",
            "generator/independent_judge_accuracy"} <= eval_tags
    # TensorBoard's HParams table: the run's settings beside those metrics
    from tensorboard.plugins.hparams import plugin_data_pb2

    infos = [plugin_data_pb2.HParamsPluginData.FromString(v.metadata.plugin_data.content).session_start_info
             for name in os.listdir(os.path.join(logdir, "eval")) if name.startswith("events.out")
             for e in tf.compat.v1.train.summary_iterator(os.path.join(logdir, "eval", name))
             for v in e.summary.value if v.tag == "_hparams_/session_start_info"]
    assert infos and infos[0].hparams["method"].string_value == "robgan"
    assert infos[0].hparams["train_iterations"].number_value == 4
    png = tf.io.decode_png(tf.io.read_file(os.path.join(logdir, "samples.png")))
    assert png.shape == (10 * 16, 8 * 16, 1)  # one row per class, 8 samples each


@pytest.mark.xdist_group("pipeline_run")
def test_exports_serve_without_robgan_tf(pipeline_run):
    logdir, _ = pipeline_run
    from robgan_tf import run as run_lib
    from robgan_tf.experiment import ExperimentConfig

    cfg = ExperimentConfig.of_run(logdir)
    run = run_lib.RunWeights(cfg.resolve())
    classifier, provenance = run_lib.load_final_classifier(run)
    # the manifest records the weights the exports come from: the end of training and of fine-tuning
    manifest = json.load(open(os.path.join(logdir, "export", "manifest.json")))
    assert manifest["weights"]["training_iteration"] == provenance["training_iteration"] == 4
    assert manifest["weights"]["finetune_step"] == provenance["finetune_step"] == 5
    x = np.random.default_rng(0).uniform(-1, 1, (4, 16, 16, 1)).astype(np.float32)
    z = np.random.default_rng(1).normal(size=(3, 16)).astype(np.float32)
    labels = np.array([0, 4, 9], np.int32)
    expected_logits = classifier(x, training=False).numpy()
    expected_images = run.sampling_generator()(z, labels, training=False).numpy()
    pixels = np.random.default_rng(2).integers(0, 256, (2, 16, 16, 1)).astype(np.uint8)
    expected_classes = np.argmax(classifier(pixels.astype(np.float32) / 127.5 - 1, training=False).numpy(), -1)
    np.savez(os.path.join(logdir, "inputs.npz"), x=x, z=z, labels=labels)
    # a REST request as TF Serving's REST API takes it: binary inputs as {"b64": ...}
    request = {"signature_name": "classify_image_bytes", "instances": [
        {"image_bytes": {"b64": base64.b64encode(tf.io.encode_png(p).numpy()).decode()}} for p in pixels]}
    with open(os.path.join(logdir, "request.json"), "w") as f:
        json.dump(request, f)
    clf_dir, gen_dir = (os.path.join(logdir, "export", k, "1") for k in ("classifier", "generator"))
    npy, outdir = os.path.join(logdir, "pixels.npy"), os.path.join(logdir, "cli_classify_uint8")
    np.save(npy, pixels)
    script = f"""
import base64, sys, json
sys.modules["robgan_tf"] = None  # any import of the package now fails
import numpy as np, tensorflow as tf
d = np.load({os.path.join(logdir, 'inputs.npz')!r})
clf_model = tf.saved_model.load({clf_dir!r})
gen_model = tf.saved_model.load({gen_dir!r})
clf, gen = clf_model.signatures["serving_default"], gen_model.signatures["serving_default"]
x = tf.constant(d["x"])
with tf.GradientTape() as tape:
    tape.watch(x)
    out = clf(images=x)
    loss = tf.reduce_sum(out["logits"][:, 0])
grad = tape.gradient(loss, x)
img = gen(z=tf.constant(d["z"]), labels=tf.constant(d["labels"]))["images"]
request = json.load(open({os.path.join(logdir, 'request.json')!r}))
fn = clf_model.signatures[request["signature_name"]]
rest = fn(image_bytes=tf.constant([base64.b64decode(i["image_bytes"]["b64"]) for i in request["instances"]]))
sampled = gen_model.signatures["sample"](labels=tf.constant([2, 5], tf.int64), seed=tf.constant(3, tf.int64))
np.savez({os.path.join(logdir, 'outputs.npz')!r}, logits=out["logits"].numpy(), probs=out["probabilities"].numpy(),
         grad=grad.numpy(), images=img.numpy(), rest_classes=rest["classes"].numpy(),
         rest_names=rest["class_names"].numpy().astype(str), sampled=sampled["images_uint8"].numpy())
# TensorFlow's own saved_model_cli feeds a signature from a .npy file (here, to spare a second TF import)
from tensorflow.python.tools import saved_model_cli
sys.argv = ["saved_model_cli", "run", "--tag_set", "serve", "--dir", {clf_dir!r}, "--signature_def", "classify_uint8",
            "--inputs", "images=" + {npy!r}, "--outdir", {outdir!r}]
saved_model_cli.main()  # exits with its status
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = np.load(os.path.join(logdir, "outputs.npz"))
    np.testing.assert_allclose(out["logits"], expected_logits, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out["probs"].sum(1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(out["images"], expected_images, rtol=1e-4, atol=1e-5)
    assert np.abs(out["grad"]).max() > 0  # differentiable after loading: attacks can run on it
    np.testing.assert_array_equal(out["rest_classes"], expected_classes)
    assert out["rest_names"].tolist() == [manifest["class_names"][c] for c in expected_classes]
    assert out["sampled"].shape == (2, 16, 16, 1) and out["sampled"].dtype == np.uint8
    np.testing.assert_array_equal(np.load(os.path.join(outdir, "classes.npy")), expected_classes)


@pytest.mark.xdist_group("pipeline_run")
def test_evaluate_and_sample_scripts_on_the_run(pipeline_run, tmp_path):
    logdir, _ = pipeline_run
    out = tmp_path / "eval.json"
    proc = _in_process("evaluate", f"--model={logdir}/export/classifier", "--eps=0,8/255", "--num_examples=32",
                       "--protocol=paper,autoattack", f"--json_out={out}", f"--save_examples={tmp_path / 'ex.npz'}")
    result = json.load(open(out))
    eps = 16 / 255  # 8/255 on the [0, 1] scale
    assert [(r["protocol"], r["eps"]) for r in result["results"]] == [
        ("paper", 0.0), ("paper", pytest.approx(eps)), ("autoattack", 0.0), ("autoattack", pytest.approx(eps))]
    assert result["results"][0]["num_examples"] == 32
    ex = np.load(tmp_path / "ex.npz")
    assert ex["x"].shape == (32, 16, 16, 1)
    for key in (f"paper_eps{eps:g}", f"autoattack_eps{eps:g}"):
        assert np.abs(ex[key] - ex["x"]).max() <= eps + 1e-6
    block = result["robustbench"][0]
    assert block["eps"] == "8/255" and block["threat_model"] == "Linf" and block["n_ex"] == 32
    assert float(block["autoattack_acc"]) == pytest.approx(100 * result["results"][3]["accuracy"], abs=0.006)
    assert "| paper |" in proc.stdout and "| autoattack |" in proc.stdout and "apgd-t | fab-t | square" in proc.stdout
    assert "0.0627451 ([0, 1] scale 8/255)" in proc.stdout
    q = _in_process("evaluate", f"--model={logdir}", "--eps=0", "--num_examples=16", "--quality=classifier",
                    "--num_samples=200", "--g_statistics=moving", f"--json_out={tmp_path / 'q.json'}")
    gq = json.load(open(tmp_path / "q.json"))["generator_quality"]
    assert gq["g_statistics"] == "moving"
    assert 1.0 <= gq["inception_score"] <= 10.0 and gq["fid"] >= 0 and len(gq["label_accuracy_per_class"]) == 10
    assert gq["backend"] == "classifier" and "not comparable" in q.stdout
    assert gq["kid_std"] >= 0 and "KID" in q.stdout and "fewer than the 50,000 published" in q.stdout
    # the same from the exports alone (generator/ beside the classifier): the same IS and label accuracy
    _in_process("evaluate", f"--model={logdir}/export/classifier", "--protocol=none", "--quality=classifier",
                "--num_samples=200", f"--fid_stats={tmp_path / 'stats.npz'}", f"--json_out={tmp_path / 'qx.json'}")
    gx = json.load(open(tmp_path / "qx.json"))["generator_quality"]
    assert gx["inception_score"] == pytest.approx(gq["inception_score"], rel=1e-4)
    assert gx["label_accuracy_per_class"] == gq["label_accuracy_per_class"]
    assert gx["g_statistics"] == "moving"  # an export samples in inference mode only, and says so when asked otherwise
    refused = run_tool("evaluate", f"--model={logdir}/export/classifier", "--protocol=none", "--quality=classifier",
                       "--g_statistics=batch")
    assert refused.returncode == 2 and "--g_statistics=moving" in refused.stderr
    assert os.path.exists(tmp_path / "stats.npz") and gx["fid_statistics_cache"] == str(tmp_path / "stats.npz")
    assert "results" not in json.load(open(tmp_path / "qx.json"))  # --protocol=none: no attack ran
    # the 2015 Inception backend from a local graph (a stand-in with the real interface), its sha256 recorded
    graph = tmp_path / "classify_image_graph_def.pb"
    graph.write_bytes(standin_graph()[0].SerializeToString())
    q = _in_process("evaluate", f"--model={logdir}", "--eps=0", "--num_examples=16", "--quality=tf_inception_2015",
                    f"--inception_weights={graph}", "--num_samples=100", f"--json_out={tmp_path / 'q15.json'}")
    gq = json.load(open(tmp_path / "q15.json"))["generator_quality"]
    assert gq["g_statistics"] == "batch"  # the run's own setting (the authors' sampling, the default)
    assert gq["backend"] == "tf_inception_2015" and gq["weights_sha256"] == hashlib.sha256(graph.read_bytes()).hexdigest()
    assert 1.0 <= gq["inception_score"] <= 1008 and gq["fid"] >= 0 and "comparable with SN-GAN's" in q.stdout and "not with the Rob-GAN paper's" in q.stdout
    assert os.path.exists(os.path.join(logdir, "eval", "fid_stats_tf_inception_2015_digits_train.npz"))
    # a missing weights file stops before any attack runs, naming the file and where to get it
    bad = run_tool("evaluate", f"--model={logdir}", "--quality=tf_inception_2015", f"--json_out={tmp_path / 'x.json'}",
                   f"--inception_weights={tmp_path / 'nope.pb'}")
    assert bad.returncode == 2 and "inception-2015-12-05.tgz" in bad.stderr and "| paper |" not in bad.stdout
    assert not os.path.exists(tmp_path / "x.json")
    nothing = run_tool("evaluate", f"--model={logdir}", "--protocol=none")
    assert nothing.returncode == 2 and "nothing to evaluate" in nothing.stderr
    _in_process("evaluate", f"--model={logdir}", "--analysis=gap", "--eps=0,0.05", "--num_examples=32",
                f"--plot_out={tmp_path / 'gap.png'}", f"--json_out={tmp_path / 'gap.json'}")
    gap = json.load(open(tmp_path / "gap.json"))
    assert len(gap["train_accuracy"]) == len(gap["test_accuracy"]) == 2 and len(gap["llv"]["test"]) == 32
    assert tf.io.decode_png(tf.io.read_file(str(tmp_path / "gap.png"))).shape[0] > 100
    _in_process("sample", f"--model={logdir}/export/generator", f"--out={tmp_path / 'g.png'}", "--cols=3",
                "--num_samples=25", f"--out_dir={tmp_path / 'dump'}", f"--npz={tmp_path / 'dump.npz'}")
    assert tf.io.decode_png(tf.io.read_file(str(tmp_path / "g.png"))).shape == (160, 48, 1)
    # class-balanced samples for external metric tools: one PNG folder per class, and the same images in an .npz
    dump = np.load(tmp_path / "dump.npz", allow_pickle=False)
    assert dump["images"].shape == (25, 16, 16, 1) and dump["images"].dtype == np.uint8
    assert np.bincount(dump["labels"]).tolist() == [3] * 5 + [2] * 5 and dump["class_names"].tolist() == list("0123456789")
    folders = sorted(os.listdir(tmp_path / "dump"))
    assert folders == [f"{k:03d}_{k}" for k in range(10)]
    first = sorted(os.listdir(tmp_path / "dump" / "000_0"))[0]
    png = tf.io.decode_png(tf.io.read_file(str(tmp_path / "dump" / "000_0" / first))).numpy()
    np.testing.assert_array_equal(png, dump["images"][int(first[:-4])])
    again = run_tool("sample", f"--model={logdir}/export", "--num_samples=5", f"--out_dir={tmp_path / 'dump'}")
    assert again.returncode == 2 and "exists and is not empty" in again.stderr


def _tree(root):
    return {os.path.join(d, f): os.stat(os.path.join(d, f)).st_mtime_ns for d, _, files in os.walk(root) for f in files}


@pytest.mark.xdist_group("pipeline_run")
def test_export_and_finetune_scripts_on_the_run(pipeline_run, tmp_path):
    logdir, _ = pipeline_run
    before = _tree(logdir)
    out = tmp_path / "exported"
    proc = _in_process("export", f"--logdir={logdir}", f"--export_dir={out}", "--export_version=3")
    assert f"classifier: {out / 'classifier' / '3'}" in proc.stdout and (out / "generator" / "3").is_dir()
    pipeline_card = json.load(open(os.path.join(logdir, "export", "manifest.json")))
    assert json.load(open(out / "manifest.json"))["weights"] == pipeline_card["weights"]  # the same final weights
    assert _tree(logdir) == before  # the run itself is only read
    # fine-tuning a copy of the run goes on from its last fine-tuning step
    copy = tmp_path / "more"
    shutil.copytree(logdir, copy)
    proc = _in_process("finetune", f"--logdir={copy}", "--finetune_steps=6")
    assert "resuming from" in proc.stdout and "[finetune] 6/6" in proc.stdout
    assert tf.train.latest_checkpoint(str(copy / "finetune_checkpoints")).endswith("-6")
    nowhere = run_tool("finetune", f"--logdir={tmp_path / 'nowhere'}", "--finetune_steps=3")
    assert nowhere.returncode == 2 and "no run at" in nowhere.stderr and not os.path.exists(tmp_path / "nowhere")


@pytest.mark.xdist_group("pipeline_run")
def test_run_pipeline_from_python_resumes_a_run_and_fine_tunes_its_newer_weights(pipeline_run, tmp_path, capsys):
    """Training past a finished fine-tuning: reading the run refuses the stale fine-tuned weights; the pipeline,
    called from Python on the run, resumes it with its saved settings and fine-tunes the newer weights, keeping
    the earlier fine-tuning aside."""
    import robgan_tf
    from robgan_tf import loops, storage
    from robgan_tf import run as run_lib
    from robgan_tf.experiment import resolve_run

    logdir = str(tmp_path / "more")
    shutil.copytree(pipeline_run[0], logdir)
    cfg = resolve_run(logdir, {"train_iterations": 5})
    run = run_lib.Run(cfg)
    loops.train(run)
    run.close()
    with pytest.raises(storage.CheckpointError, match=r"started from training iteration 4, but the run has trained "
                                                      r"to iteration 5 since: run launch/finetune.py"):
        run_lib.load_final_classifier(run_lib.RunWeights(cfg))
    result, paths, _ = robgan_tf.run_pipeline(logdir=logdir, train_iterations=5)
    saved = json.load(open(os.path.join(logdir, "config.json")))
    assert saved["train_iterations"] == 5 and saved["batch_size"] == 16 and saved["z_dim"] == 16  # the run's own
    assert [r["eps"] for r in result["results"]] == list(cfg.eval_eps) and result["results"][0]["num_examples"] == 48
    assert result["weights"]["training_iteration"] == 5 and result["weights"]["finetune_step"] == 5
    assert paths["classifier"].endswith(os.path.join("classifier", "2"))  # the pipeline's export was version 1
    aside = os.path.join(logdir, "finetune_checkpoints-from-iteration-4")
    assert tf.train.latest_checkpoint(aside).endswith("-5")  # the earlier fine-tuning, kept whole
    assert json.load(open(os.path.join(logdir, "finetune_checkpoints", "base.json")))["training_iteration"] == 5
    assert f"the earlier fine-tuning is kept in {aside}" in capsys.readouterr().out


def _final_weights(logdir):
    reader = tf.train.load_checkpoint(os.path.join(logdir, "checkpoints"))
    names = [n for n in reader.get_variable_to_shape_map() if "generator" in n or "discriminator" in n]
    return {n: reader.get_tensor(n) for n in names}


def test_kill_9_then_resume_is_bit_identical_with_deterministic(tmp_path):
    args = ["--train_iterations=6", "--deterministic", "--finetune_steps=0", *TINY]
    straight = tmp_path / "straight"  # uninterrupted, in this process: the same numbers as a fresh one (asserted)
    try:
        _in_process("train", f"--logdir={straight}", *args)
    finally:
        tf_config.disable_op_determinism()  # --deterministic switched it on for this whole process
    killed = tmp_path / "killed"  # killed in a process of its own, resumed in this one
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "launch", "train.py"), f"--logdir={killed}", *args],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if "[train] 3/6" in line:  # checkpoints every 2 iterations: killed after 2 (or 4), before 6
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    latest = tf.train.latest_checkpoint(str(killed / "checkpoints"))
    assert latest is not None and int(latest.rsplit("-", 1)[1]) in (2, 4)
    tf.train.load_checkpoint(latest)  # loadable
    try:
        resumed = _in_process("train", f"--logdir={killed}", *args)
    finally:
        tf_config.disable_op_determinism()
    assert "resuming from" in resumed.stdout and "[train] 6/6" in resumed.stdout
    a, b = _final_weights(straight), _final_weights(killed)
    assert len(a) > 20 and a.keys() == b.keys()
    for n in a:
        np.testing.assert_array_equal(a[n], b[n], err_msg=n)


def test_sigterm_stops_training_with_a_checkpoint_and_the_signals_exit_status(tmp_path):
    """A real SIGTERM, as a scheduler or a preemption sends it: the step under way finishes, a checkpoint is saved
    there, one line says so, and the process exits 128 + 15."""
    logdir = tmp_path / "term"
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "launch", "train.py"), f"--logdir={logdir}",
                             "--train_iterations=500", "--checkpoint_every=1000", *TINY],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "[train] 3/500" in line:
            os.kill(proc.pid, signal.SIGTERM)
    proc.wait(timeout=120)
    out = "".join(lines)
    assert proc.returncode == 128 + signal.SIGTERM, out[-2000:]
    stopped = re.search(r"stopped by SIGTERM after iteration (\d+) of 500; checkpoint saved \((.*)\)", out)
    assert stopped and "Traceback" not in out, out[-2000:]
    latest = tf.train.latest_checkpoint(str(logdir / "checkpoints"))
    assert latest == stopped.group(2) and latest.endswith(f"ckpt-{stopped.group(1)}")
    assert int(stopped.group(1)) >= 3


def test_two_cpu_replicas_mirrored(tmp_path):
    """Rob-GAN (n_dis 2, an EMA generator) on two logical CPUs through the script: the one end-to-end test of the
    mirrored path (tests/test_training.py checks its numbers against one replica). In this process, beside the
    other MirroredStrategy tests: a process has one MirroredStrategy per device list (a second one's collectives
    would fail the first's with a "shape mismatch")."""
    from robgan_tf import runtime
    from robgan_tf.experiment import ExperimentConfig

    proc = _in_process("train", f"--logdir={tmp_path}", "--train_iterations=2", "--n_dis=2", "--ema_decay=0.9",
                       "--cpu_replicas=2", "--strategy=mirrored", *TINY)
    assert "[train] 2/2" in proc.stdout
    cpus = [d.name for d in tf.config.list_logical_devices("CPU")[:2]]
    cfg = ExperimentConfig.of_run(str(tmp_path))
    assert runtime.make_strategy(cfg) is runtime.mirrored_strategy(cpus)  # the run's strategy, reused
    latest = tf.train.latest_checkpoint(str(tmp_path / "checkpoints"))
    assert latest.endswith("-2")
    reader = tf.train.load_checkpoint(latest)
    assert reader.get_tensor("d_optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE") == 4  # n_dis D updates ...
    assert reader.get_tensor("g_optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE") == 2  # ... per G update
    assert any(n.startswith("ema/") for n in reader.get_variable_to_shape_map())
    assert non_finite_in_checkpoint(latest) == []


# One script, three paths to an error (absl parsing, ExperimentConfig.validate, the data); every other
# flag rule is tested in tests/test_configs.py. An unparseable flag is the tools' parser's (common.parse_flags: a
# one-line error:, exit 2, where absl's own would print FATAL and exit 1); that every console script runs through
# it is test_packaging's `robgan-sample --help` (a success only through that parser).
@pytest.mark.parametrize("args,message", [
    (["--dataset=mnist"], "unknown dataset 'mnist'"),
    (["--batch_size=abc"], "flag --batch_size=abc: invalid literal"),
    (["--arch=reference", "--resolution=64"], "no 64px architecture"),
    (["--dataset=cifar10", "--data_dir=/no/such/dir"], "does not exist"),
])
def test_bad_flags_fail_before_work(tmp_path, args, message):
    proc = run_tool("train", f"--logdir={tmp_path / 'run'}", *args)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "FATAL" not in proc.stderr
    assert message in proc.stderr
    assert not os.path.exists(tmp_path / "run" / "checkpoints")


@pytest.mark.xdist_group("pipeline_run")
def test_all_checkpoints_curve_ends_where_the_trained_stage_is(pipeline_run, tmp_path):
    logdir, _ = pipeline_run
    curve = tmp_path / "curve.json"
    _in_process("evaluate", f"--model={logdir}", "--all_checkpoints", "--protocol=paper", "--eps=0,0.04",
                "--num_examples=32", f"--json_out={curve}")
    records = json.load(open(curve))["records"]
    assert [r["iteration"] for r in records] == [2, 4] and [r["d_updates"] for r in records] == [2, 4]
    assert 0 < records[0]["train_seconds"] < records[1]["train_seconds"]
    assert os.path.getsize(tmp_path / "curve.png") > 0
    last = tmp_path / "trained.json"  # the same attack on the latest training checkpoint, via --stage=trained
    _in_process("evaluate", f"--model={logdir}", "--stage=trained", "--protocol=paper", "--eps=0,0.04",
                "--num_examples=32", f"--json_out={last}")
    result = json.load(open(last))
    assert [r["accuracy"] for r in result["results"]] == [records[-1]["paper_accuracy_eps0"],
                                                          records[-1]["paper_accuracy_eps0.04"]]
    assert result["weights"]["finetune_step"] is None and result["weights"]["training_iteration"] == 4
    proc = run_tool("evaluate", f"--model={logdir}/export", "--stage=trained")
    assert proc.returncode == 2 and "picks a classifier of a run directory" in proc.stderr
    proc = run_tool("evaluate", f"--model={logdir}", "--all_checkpoints", "--quality=classifier")
    assert proc.returncode == 2 and "--quality=reference" in proc.stderr


@pytest.mark.xdist_group("pipeline_run")
def test_reading_scripts_refuse_what_they_cannot_read_before_any_work(pipeline_run, tmp_path):
    logdir, _ = pipeline_run
    # the generator export is not a classifier: refused from its signature, before data or attacks
    proc = run_tool("evaluate", f"--model={logdir}/export/generator")
    assert proc.returncode == 2 and "is not a classifier" in proc.stderr and "'logits'" in proc.stderr
    assert "protocol" not in proc.stdout
    # exporting a run that does not exist creates nothing (a default config.json there would block train.py)
    proc = run_tool("export", f"--logdir={tmp_path / 'nowhere'}")
    assert proc.returncode == 2 and "no run at" in proc.stderr and not os.path.exists(tmp_path / "nowhere")


@pytest.mark.xdist_group("pipeline_run")
def test_logdir_with_incompatible_run_is_refused(pipeline_run):
    logdir, _ = pipeline_run
    proc = run_tool("train", f"--logdir={logdir}", "--method=gan")
    assert proc.returncode == 2 and "holds a run with other settings" in proc.stderr and "--method" in proc.stderr
    gone = run_tool("train", f"--logdir={logdir}", "--mode=gan")  # 0.1's name, deprecated in 0.2, removed in 0.9
    assert gone.returncode == 2 and "mode" in gone.stderr


@pytest.mark.multiworker
def test_multi_worker_training_with_train_script(tmp_path):
    """Two train.py processes on 127.0.0.1 (TF_CONFIG), each reading its own shard: the chief writes the run,
    the other worker its scratch folder, and both end with identical weights."""
    import socket

    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    logdir = tmp_path / "mw"
    procs = []
    for i in range(2):
        env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})}
        procs.append(subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "launch", "train.py"), f"--logdir={logdir}", "--train_iterations=2",
             "--strategy=multi_worker", *TINY], cwd=ROOT, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True))
    outs = []
    try:
        outs = [p.communicate(timeout=240)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
    assert tf.train.latest_checkpoint(str(logdir / "checkpoints")).endswith("-2")
    assert tf.train.latest_checkpoint(str(logdir / "workers" / "1" / "checkpoints")).endswith("-2")
    assert (logdir / "config.json").exists() and (logdir / "train").exists()
    a = tf.train.load_checkpoint(str(logdir / "checkpoints"))
    b = tf.train.load_checkpoint(str(logdir / "workers" / "1" / "checkpoints"))
    for name in a.get_variable_to_shape_map():
        if name.startswith(("discriminator/", "generator/")):
            np.testing.assert_array_equal(a.get_tensor(name), b.get_tensor(name), err_msg=name)


@pytest.mark.xdist_group("pipeline_run")
def test_bad_outputs_and_numbers_are_refused_before_any_attack(pipeline_run, tmp_path):
    logdir, _ = pipeline_run
    a_file = tmp_path / "file"
    a_file.write_text("x")
    locked = tmp_path / "locked"
    os.makedirs(locked)
    os.chmod(locked, 0o500)
    cases = [
        (("evaluate", "--json_out=" + str(a_file / "r.json")), r"--json_out=.*: .*file is a file, not a folder"),
        (("evaluate", "--save_examples=" + str(tmp_path)), r"--save_examples=.* is a folder; give a file path"),
        (("evaluate", "--eps=nan"), r"--eps values must be finite and >= 0, got 'nan'"),
        (("evaluate", "--eps=0,inf"), r"--eps values must be finite"),
        (("evaluate", "--num_examples=-3"), r"--num_examples must be >= 0"),
        (("evaluate", "--batch_size=0"), r"--batch_size must be > 0, got 0"),
        (("sample", "--cols=0"), r"--cols must be > 0, got 0"),
        (("sample", "--out=" + str(a_file / "grid.png")), r"--out=.*file is a file, not a folder"),
        (("train", f"--logdir={tmp_path / 'new'}", "--eval_eps=nan"), r"--eval_eps values must be finite"),
        (("train", "--logdir="), r"--logdir is empty"),
    ]
    if os.geteuid() != 0:  # root writes anywhere
        cases.append((("evaluate", "--json_out=" + str(locked / "r.json")), r"locked is not writable"))
    for (tool, *args), message in cases:
        model = [] if tool == "train" else [f"--model={logdir}"]
        proc = run_tool(tool, *model, *args)
        assert proc.returncode == 2 and re.search(message, proc.stderr), (args, proc.stderr)
        assert "eps:" not in proc.stdout and "wrote" not in proc.stdout  # refused before any work
    assert not os.path.exists(tmp_path / "new")
