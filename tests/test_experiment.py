"""Settings: flag values and a run's config.json are checked once, with errors that name the setting and the fix."""
import json
import os

import pytest

from robgan_tf.experiment import ConfigError, ExperimentConfig, resolve_run, spec_of_run


@pytest.mark.parametrize("settings, message", [
    (dict(eval_eps="0,nan"), r"--eval_eps values must be finite and >= 0, got 'nan'"),
    (dict(eval_eps="inf"), r"--eval_eps values must be finite"),
    (dict(attack_eps=float("nan")), r"--attack_eps must be a finite number, got nan"),
    (dict(lr_d=float("inf")), r"--lr_d must be a finite number"),
    (dict(logdir=""), r"--logdir is empty"),
])
def test_non_finite_numbers_and_an_empty_logdir_are_refused(settings, message):
    with pytest.raises(ConfigError, match=message):
        ExperimentConfig(**{"logdir": "runs/x", **settings}).validate()


@pytest.mark.parametrize("content, message", [
    ('["dataset", "digits"]', r"holds a list, not a JSON object"),
    ('{"dataset": "digits", "seed": ', r"is not valid JSON"),
    ('{"seed": "3"}', r"setting 'seed' is '3' \(str\), not a int"),
    ('{"dequantize": 1}', r"setting 'dequantize' is 1 \(int\), not a bool"),
    ('{"lr_d": true}', r"setting 'lr_d' is True \(bool\), not a float"),
])
def test_a_damaged_config_json_is_named_with_the_setting_at_fault(tmp_path, content, message):
    (tmp_path / "config.json").write_text(content)
    with pytest.raises(ConfigError, match=f"config.json.*{message}|{message}"):
        resolve_run(str(tmp_path))
    with pytest.raises(ConfigError, match=message):
        ExperimentConfig.of_run(str(tmp_path))
    with pytest.raises(ConfigError, match=message):
        spec_of_run(str(tmp_path))


def test_a_run_whose_config_json_is_gone_is_not_resumed_under_defaults(tmp_path):
    resolve_run(str(tmp_path))  # an empty folder: a new run, with the defaults
    with pytest.raises(FileNotFoundError, match="no run at"):
        spec_of_run(str(tmp_path))
    os.makedirs(tmp_path / "checkpoints")
    (tmp_path / "checkpoints" / "checkpoint").write_text('model_checkpoint_path: "ckpt-4"')
    with pytest.raises(ConfigError, match=r"holds checkpoints but no config.json.*manifest.json.*training_flags"):
        resolve_run(str(tmp_path))
    with pytest.raises(ConfigError, match=r"holds checkpoints but no config.json"):
        ExperimentConfig(logdir=str(tmp_path)).resolve()
    (tmp_path / "config.json").write_text(json.dumps(ExperimentConfig(logdir=str(tmp_path), seed=5).to_dict()))
    assert resolve_run(str(tmp_path)).seed == 5 and spec_of_run(str(tmp_path)).seed == 5
    assert json.load(open(tmp_path / "config.json"))["seed"] == 5
