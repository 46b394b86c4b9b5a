"""Curves over training: which checkpoints a run holds, the seed summary and the plot's layout, with known answers."""
import numpy as np
from PIL import Image

from robgan_tf import curves


def test_checkpoints_of_unions_the_kept_and_latest_series_by_iteration(tmp_path):
    for sub, its in (("checkpoints/kept", (500, 1000)), ("checkpoints", (1000, 1250, 1500))):
        (tmp_path / sub).mkdir(parents=True, exist_ok=True)
        for i in its:
            (tmp_path / sub / f"ckpt-{i}.index").write_text("")
            (tmp_path / sub / f"ckpt-{i}.data-00000-of-00001").write_text("")
    (tmp_path / "checkpoints" / "ckpt-7_temp.index").write_text("")  # a half-written save is not a checkpoint
    found = curves.checkpoints_of(str(tmp_path))
    assert [i for i, _ in found] == [500, 1000, 1250, 1500]
    assert found[1][1] == str(tmp_path / "checkpoints" / "kept" / "ckpt-1000")  # the never-rotated copy first
    assert curves.checkpoints_of(str(tmp_path / "none")) == []


def test_summarize_groups_seeds_by_iteration_mean_and_sample_std():
    records = [{"iteration": 100, "d_updates": 100, "train_seconds": 10.0, "fid": 50.0},
               {"iteration": 100, "d_updates": 100, "train_seconds": 12.0, "fid": 54.0},
               {"iteration": 200, "d_updates": 200, "train_seconds": 20.0, "fid": 40.0},
               {"iteration": 200, "d_updates": 200, "train_seconds": None, "fid": 44.0}]
    x, mean, std = curves.summarize(records, "d_updates", "fid")
    np.testing.assert_allclose(x, [100, 200])
    np.testing.assert_allclose(mean, [52.0, 42.0])
    np.testing.assert_allclose(std, [np.sqrt(8.0), np.sqrt(8.0)])  # (2^2 + 2^2) / (2 - 1)
    x, mean, std = curves.summarize(records, "train_seconds", "fid")  # a record without seconds is left out
    np.testing.assert_allclose(x, [11.0, 20.0])
    np.testing.assert_allclose(mean, [52.0, 40.0])
    np.testing.assert_allclose(std, [np.sqrt(8.0), 0.0])
    for r in records:
        r["num_samples"] = 50  # an integer: a setting, not a metric
    assert curves.metric_names(records) == ["fid"]


def test_plot_has_a_row_per_metric_and_a_column_per_axis(tmp_path):
    rec = [{"iteration": i, "d_updates": 2 * i, "train_seconds": 1.5 * i, "fid": 100.0 / i, "kid": 1.0 / i}
           for i in (1, 2, 3)]
    curves.plot_curves({"robgan": rec, "gan": rec}, str(tmp_path / "both.png"))
    assert Image.open(tmp_path / "both.png").size == (1000, 600)  # 2 columns x 500 px, 2 rows x 300 px
    old = [{**r, "train_seconds": None} for r in rec]  # a run from before the clock: D updates only
    curves.plot_curves({"old": old}, str(tmp_path / "old.png"), metrics=["fid"])
    assert Image.open(tmp_path / "old.png").size == (500, 300)
