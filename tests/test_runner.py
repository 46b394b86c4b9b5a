"""The run lifecycle in-process: fine-tuning resumes with the trained generator, EMA is restored before
fine-tuning uses it, evaluation refuses a missing fine-tuning, and every result names its weights."""
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.framework import config as tf_config

from robgan_tf import runner
from robgan_tf.experiment import ExperimentConfig

SMALL = dict(dataset="digits", batch_size=16, attack_steps=2, z_dim=16, eval_examples=48, train_steps=4,
             finetune_steps=6, checkpoint_every=2, log_every=100, sample_every=100, ema_decay=0.5,
             deterministic=True, seed=3)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A trained (not fine-tuned) run with an EMA generator; tests copy it before changing it."""
    logdir = str(tmp_path_factory.mktemp("trained"))
    cfg = ExperimentConfig(logdir=logdir, **SMALL)
    runner.setup_runtime(cfg)  # enables op determinism for this module; switched off again below
    try:
        runner.train(runner.Run(cfg))
        yield logdir
    finally:
        tf_config.disable_op_determinism()


def _copy(src, dst):
    shutil.copytree(src, dst)
    cfg = json.load(open(os.path.join(dst, "config.json")))
    cfg["logdir"] = str(dst)
    return ExperimentConfig.from_dict(cfg)


class _Killed(Exception):
    pass


def _kill_after(monkeypatch, n_steps):
    """Makes the next loop die after n_steps optimizer steps, like a kill -9 between two checkpoints."""
    real = runner.make_distributed_step

    def patched(*args, **kwargs):
        step, calls = real(*args, **kwargs), [0]

        def dying(iterator):
            if calls[0] == n_steps:
                raise _Killed()
            calls[0] += 1
            return step(iterator)

        return dying

    monkeypatch.setattr(runner, "make_distributed_step", patched)


def test_killed_finetuning_resumes_to_the_uninterrupted_weights(trained, tmp_path, monkeypatch):
    straight = runner.finetune(runner.Run(_copy(trained, tmp_path / "straight")))
    expected = [w.numpy() for w in straight.run.discriminator.weights]

    cfg = _copy(trained, tmp_path / "killed")
    _kill_after(monkeypatch, 3)  # checkpoint at step 2, killed during step 4
    with pytest.raises(_Killed):
        runner.finetune(runner.Run(cfg))
    monkeypatch.undo()
    assert tf.train.latest_checkpoint(str(tmp_path / "killed" / "finetune_checkpoints")).endswith("-2")
    # a new process: every object rebuilt from disk, the generator initialised at random
    resumed = runner.finetune(runner.Run(cfg))
    assert int(resumed.step.numpy()) == 6
    for a, b in zip(resumed.run.discriminator.weights, expected):
        np.testing.assert_array_equal(a.numpy(), b, err_msg=a.path)


def test_finetuning_samples_the_restored_ema_generator(trained, tmp_path):
    run = runner.Run(_copy(trained, tmp_path / "ema"))
    untrained = [w.numpy().copy() for w in run.sampling_generator().weights]
    ft = runner.FinetuneRun(run)  # restores the training checkpoint before taking the generator
    reader = tf.train.load_checkpoint(run.manager.latest_checkpoint)
    saved_ema = [reader.get_tensor(f"ema/w{i}/.ATTRIBUTES/VARIABLE_VALUE") for i in range(len(untrained))]
    for w, saved in zip(ft.tuner.generator.weights, saved_ema):
        np.testing.assert_array_equal(w.numpy(), saved)
    assert any(np.abs(w.numpy() - u).max() > 1e-4 for w, u in zip(ft.tuner.generator.weights, untrained))


def test_evaluation_refuses_a_run_whose_finetuning_never_ran(trained, tmp_path):
    run = runner.Run(_copy(trained, tmp_path / "noft"))
    with pytest.raises(FileNotFoundError, match="has no fine-tuning checkpoint.*launch/finetune.py"):
        runner.load_final_classifier(run)


def test_results_and_exports_name_their_weights(trained, tmp_path):
    from robgan_tf import export

    run = runner.Run(_copy(trained, tmp_path / "prov"))
    ft = runner.finetune(run)
    classifier, provenance = runner.load_final_classifier(runner.Run(run.cfg))
    assert provenance["training_iteration"] == 4 and provenance["finetune_step"] == 6
    assert provenance["finetune_checkpoint"].endswith("finetune_checkpoints/ckpt-6") and provenance["ema_generator"]
    result = runner.evaluate_run(run, ft.classifier, runner.weights_provenance(run, ft))
    assert json.load(open(os.path.join(run.cfg.logdir, "eval", "robustness.json")))["weights"] == provenance
    assert result["weights"]["finetune_steps_planned"] == 6
    paths = export.export_run(run, classifier, provenance)
    assert json.load(open(paths["manifest"]))["weights"] == provenance
