"""The benchmark scripts run and write valid JSON (speed itself is measured by the scripts, not here). In this
process (tests/tools.py): the numbers only have to be consistent, and a TensorFlow import per tool is 4 s."""
import json
import os

from tools import run_tool, run_tool_ok as _in_process


def test_benchmark_tiny_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    proc = _in_process("benchmark", "--arch=tiny", "--resolution=16", "--channels=1", "--batch_size=8",
                       "--attack_steps=2", "--iterations=2", "--warmup=1", "--component_iterations=1", "--flops",
                       "--roofline", f"--json_out={out}")
    result = json.loads(out.read_text())
    assert result["iterations"] == 2
    assert result["min_s_per_iter"] <= result["median_s_per_iter"] <= result["max_s_per_iter"]
    assert result["images_per_s"] > 0
    assert set(result["component_median_s"]) == {"attack", "d_update", "g_update"}
    assert result["params"]["generator"] > 0 and result["params"]["discriminator"] > 0
    f = result["flops"]
    assert f["per_iteration_estimate"] == 8 * ((2 * 2 + 8) * f["d_forward_per_example"]
                                               + 4 * f["g_forward_per_example"])
    assert "median" in proc.stdout
    assert result["processor"]["logical_cpus"] == os.cpu_count() and "processor:" in proc.stdout
    peak = max(result["roofline_gflops"].values())
    assert set(result["roofline_gflops"]) == {"matmul_2048", "conv3x3_8px", "conv3x3_16px", "conv3x3_32px"}
    assert result["utilisation_of_best_dense_rate"] == result["achieved_gflops"] / peak
    assert result["achieved_gflops"] == f["per_iteration_estimate"] / result["median_s_per_iter"] / 1e9


def test_quality_benchmark_writes_consistent_json(tmp_path):
    out = tmp_path / "q.json"
    _in_process("benchmark_quality", "--backend=classifier", "--arch=tiny", "--batch_size=8", "--batches=2",
                f"--json_out={out}")
    r = json.loads(out.read_text())
    assert r["batches"] == 2 and r["min_s_per_batch"] <= r["median_s_per_batch"] <= r["max_s_per_batch"]
    assert abs(r["images_per_s"] - 8 / r["median_s_per_batch"]) < 1e-9
    assert abs(r["minutes_per_50k_images"] - 50000 / r["images_per_s"] / 60) < 1e-9
    missing = run_tool("benchmark_quality", "--backend=tf_inception_2015", f"--inception_weights={tmp_path / 'none.pb'}")
    assert missing.returncode == 2 and "classify_image_graph_def.pb" in missing.stderr


def test_autoattack_benchmark_times_both_implementations_and_extrapolates_consistently(tmp_path):
    out = tmp_path / "aa.json"
    proc = _in_process("benchmark_autoattack", "--arch=tiny", "--resolution=16", "--channels=1", "--num_examples=20",
                       "--batch_size=10", "--iterations=2", "--unit_iterations=2", "--extrapolate_to=1000",
                       f"--json_out={out}")
    r = json.loads(out.read_text())
    assert r["speedup_vs_art"] == r["art_apgd_ce_s"] / r["ours_apgd_ce_s"]
    ms = r["ms_per_example"]
    assert ms["apgd"] == 1e3 * r["ours_apgd_ce_s"] / (20 * 2)
    # AutoAttack's standard budget: 100 APGD-CE iterations, 9 x 100 APGD-T, 9 x 100 FAB-T, 5000 Square queries
    worst = 1000 * (100 * ms["apgd"] + 900 * ms["apgd_t"] + 900 * ms["fab_t"] + 5000 * ms["square"]) / 1e3 / 3600
    assert abs(r["full_autoattack_hours"]["worst_case"] - worst) < 1e-9
    assert r["processor"]["logical_cpus"] == os.cpu_count() and "faster per attack iteration" in proc.stdout
