"""The whole pipeline in one call: train -> fine-tune -> evaluate -> export, and the evaluation of a run."""
from __future__ import annotations

import json
import os
import time

import numpy as np
import tensorflow as tf

from robgan_tf import precision as precision_lib
from robgan_tf import export, quality, robustness, storage
from robgan_tf.layout import RunDir
from robgan_tf.loops import finetune, train
from robgan_tf.run import Run, load_final_classifier, weights_provenance
from robgan_tf.runtime import is_chief
from robgan_tf.spec import RunSpec
from robgan_tf.samples import sample_grid, write_png


def _log(msg):
    print(msg, flush=True)


def hparams_of(cfg: RunSpec):
    """The run's settings as TensorBoard HParams values (bool / number / string; anything else as JSON)."""
    out = {}
    for key, value in cfg.settings.items():
        out[key] = value if isinstance(value, (bool, int, float, str)) else json.dumps(value)
    return out


def log_eval_summaries(run: Run, scalars, text=None):
    """The chief writes `scalars` (tag -> value) into logdir/eval with the run's HParams, so that
    `tensorboard --logdir runs/` lists every run's settings and final metrics in one sortable table."""
    from tensorboard.plugins.hparams import api as hp

    if not is_chief(run.strategy):
        return
    writer = tf.summary.create_file_writer(RunDir(run.cfg.logdir).logs("eval"))
    with writer.as_default(step=int(run.step.numpy())):
        hp.hparams(hparams_of(run.cfg), trial_id=os.path.basename(os.path.abspath(run.cfg.logdir)))
        if text:
            tf.summary.text("robustness", text)
        for tag, value in scalars.items():
            tf.summary.scalar(tag, value)
    writer.flush()


def evaluate_run(run: Run, classifier, provenance, protocols=("paper",), json_out=None):
    """Robustness table on the test split, written to logdir/eval/robustness.json and TensorBoard; measured on the
    float32 copy of the classifier (the model that is served), whatever precision trained it."""
    cfg = run.cfg
    result = robustness.robustness_table(
        precision_lib.float32_copy(classifier), run.test_source, eps_grid=cfg.eval_eps, protocols=protocols,
        num_examples=cfg.eval_examples, model_name=os.path.abspath(cfg.logdir))
    result["weights"] = provenance
    result["precision"] = {"evaluated": "float32", "trained": cfg.policy}
    out = json_out or RunDir(cfg.logdir).robustness
    robustness.write_json(result, out)
    log_eval_summaries(run, {f"{r['protocol']}/accuracy_eps{r['eps']:g}": r["accuracy"] for r in result["results"]},
                       text=robustness.markdown_table(result))
    return result


def pipeline(cfg: RunSpec):
    """train -> fine-tune -> evaluate -> export into cfg.logdir; prints where everything went."""
    run = Run(cfg)
    t0 = time.time()
    train(run)
    if cfg.finetune_steps and cfg.finetune_weights == "latest":
        ft = finetune(run)
        classifier, provenance = ft.classifier, weights_provenance(run, ft)
    elif cfg.finetune_steps:  # the best validation checkpoint, kept while fine-tuning
        finetune(run)
        classifier, provenance = load_final_classifier(run)
    else:
        classifier, provenance = load_final_classifier(run)
    if not is_chief(run.strategy):  # evaluation, exports and samples are the chief's
        return None, {}, {}
    result = evaluate_run(run, classifier, provenance)
    paths = export.export_run(run, classifier, provenance, robustness=result)
    summary = {}
    sample_path = None
    if run.generator is not None:
        g = run.sampling_generator()
        sample_path = RunDir(cfg.logdir).samples
        write_png(sample_path, sample_grid(g))
        per_class = quality.per_class_label_accuracy(g, classifier, n_per_class=50)
        summary["generator_label_accuracy"] = float(np.mean(per_class))
        summary["generator_label_accuracy_per_class"] = per_class
        if cfg.dataset == "digits":
            from robgan_tf import judge

            summary["independent_judge"] = judge.judge_generator(g, run.resolution)
    summary["seconds"] = round(time.time() - t0, 1)
    scalars = {"generator/label_accuracy": summary.get("generator_label_accuracy"),
               "generator/independent_judge_accuracy": summary.get("independent_judge", {}).get("accuracy")}
    log_eval_summaries(run, {k: v for k, v in scalars.items() if v is not None})
    storage.atomic_write_json(RunDir(cfg.logdir).summary, summary)
    _log("\n" + robustness.markdown_table(result))
    if "generator_label_accuracy" in summary:
        _log(f"\nExported classifier labels {summary['generator_label_accuracy']:.1%} of the generator's images "
             "as the class they were generated for (a biased judge: it was fine-tuned on those fakes).")
    if "independent_judge" in summary:
        j = summary["independent_judge"]
        _log(f"An independent judge -- an SVM trained only on the real 8x8 training digits, which recognises "
             f"{j['real_test_accuracy']:.1%} of the real test digits -- recognises {j['accuracy']:.1%} of "
             f"{j['num_samples']} generated digits; their within-class variety is {j['diversity']:.2f} of the real "
             "digits' (1: as varied, 0: one image per class).")
    _log("\nExports:")
    for k, v in paths.items():
        _log(f"  {k}: {v}")
    if sample_path:
        _log(f"Sample grid: {sample_path}")
    _log(f"TensorBoard: tensorboard --logdir {cfg.logdir}")
    return result, paths, summary


def run_pipeline(logdir="runs/robgan", **settings):
    """The whole pipeline from Python, with the command line's defaults: any flag of robgan-pipeline (a field of
    experiment.ExperimentConfig) as a keyword, e.g. run_pipeline(logdir="runs/demo", train_iterations=300, seed=1).
    As on the command line, a logdir that holds a run resumes it with its saved settings under the given ones.

    Returns (robustness result, export paths, summary) -- see `pipeline`.
    """
    from robgan_tf import runtime
    from robgan_tf.experiment import resolve_run

    cfg = resolve_run(logdir, settings)
    runtime.setup_runtime(cfg)
    return pipeline(cfg)
