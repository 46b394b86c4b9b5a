"""Accuracy under l_inf attacks (paper, strong, AutoAttack) for an exported classifier or a run, as a table and JSON.

    python launch/evaluate.py --model=runs/c10/export/classifier --protocol=paper,strong --json_out=eval.json
    python launch/evaluate.py --model=runs/c10/export/classifier --protocol=autoattack --eps=8/255
    python launch/evaluate.py --model=runs/c10          # a run's logdir: its (fine-tuned) classifier
    python launch/evaluate.py --model=runs/c10 --quality=tf_inception_2015 --inception_weights=inception-2015-12-05.tgz
                                                        # also IS / FID of its generator (local weights)
"""
import json
import os

from absl import flags

from robgan_tf.cli import common  # first: quiets TF logging before TensorFlow loads
from robgan_tf import data as data_lib
from robgan_tf import models
from robgan_tf import gap as gap_lib
from robgan_tf import robustness
from robgan_tf import run as run_lib
from robgan_tf.experiment import EvaluateConfig, eps_label, parse_eps_grid
from robgan_tf.layout import RunDir

common.define_flags(EvaluateConfig)
FLAGS = flags.FLAGS


def _protocols(values):
    """--protocol's list as protocol names, in order, without repeats (both = paper,strong; none = nothing)."""
    out = []
    for v in values:
        names = {"both": ["paper", "strong"], "none": []}.get(v, [v])
        for name in names:
            if name not in robustness.ALL_PROTOCOLS:
                common.fail(f"--protocol: unknown protocol {v!r}; choose from "
                            f"{', '.join(robustness.ALL_PROTOCOLS)}, both or none (comma-separated).")
            if name not in out:
                out.append(name)
    if "none" in values and out:
        common.fail("--protocol=none cannot be combined with other protocols.")
    return tuple(out)


def _load_model(path):
    """(classifier callable, defaults dict) for a run's logdir or an export (base folder, model folder or
    version folder): one loader, robgan_tf.loading."""
    from robgan_tf import loading

    if loading.is_run(path):
        run = loading.open_run(path, FLAGS.precision)
        cfg = run.cfg
        load = run_lib.load_trained_classifier if FLAGS.stage == "trained" else run_lib.load_final_classifier
        classifier, provenance = load(run)
        stats = _g_statistics(cfg)
        return classifier, {"weights": provenance, "dataset": cfg.dataset, "data_dir": cfg.data_dir,
                            "resolution": run.resolution, "g_statistics": stats,
                            "generator": (models.sampler(run.sampling_generator(), stats)
                                          if run.generator is not None else None),
                            "stats_dir": RunDir(cfg.logdir).eval, "trained_precision": cfg.policy}
    if FLAGS.precision != "float32":
        common.fail(f"--precision={FLAGS.precision}: --model={path} is an export, which computes in float32; evaluate "
                    "the run directory to compute in another precision.")
    if FLAGS.stage != "final":
        common.fail(f"--stage={FLAGS.stage} picks a classifier of a run directory; --model={path} is not one (an "
                    "export holds one classifier: drop --stage).")
    try:
        saved = loading.resolve_export(path, "classifier")
        classifier = loading.ExportedClassifier(saved)
    except loading.ModelNotFound as e:
        common.fail(f"--model={path}: {e} A run directory (config.json) works too.")
    card = classifier.card
    rank = classifier.signature.structured_input_signature[1]["images"].shape.rank
    if rank not in (None, 4):
        common.fail(f"--model={path}: its 'images' input has rank {rank}, not 4 ([N, H, W, C]).")
    print(f"classifier: {saved}")
    defaults = {"dataset": card.get("dataset"), "data_dir": card.get("training_flags", {}).get("data_dir", ""),
                "resolution": card.get("resolution"), "weights": card.get("weights"),
                "stats_dir": loading.export_dir_of(saved), "image_shape": classifier.image_shape,
                "trained_precision": card.get("training_flags", {}).get("precision")}
    g_path = loading.sibling(saved, "generator")
    if card.get("z_dim") and g_path:
        defaults["generator_path"] = g_path  # loaded only for --quality
        if FLAGS.quality != "none" and FLAGS.g_statistics == "batch":
            common.fail(f"--g_statistics=batch: the exported generator beside {saved} samples in inference mode "
                        "(moving statistics) only; use --g_statistics=moving, or evaluate the run directory.")
        defaults["g_statistics"] = "moving"
    return classifier, defaults


def _g_statistics(cfg):
    """--g_statistics for a run: the flag, or with 'run' the run's own setting."""
    return cfg.g_statistics if FLAGS.g_statistics == "run" else FLAGS.g_statistics


def _quality_backend(classifier, defaults):
    """The --quality backend, built before any attack runs so a bad weights file fails at once."""
    if defaults.get("generator_path"):
        from robgan_tf import loading

        defaults["generator"] = loading.ExportedGenerator(defaults["generator_path"])
    if defaults.get("generator") is None:
        common.fail("--quality needs a generator: --model must be a run directory with one, or an exported "
                    "classifier whose export directory also holds generator/ and manifest.json.")
    return _make_backend(classifier)


def _make_backend(classifier):
    """The --quality backend with its weights file (--reference_classifier or --inception_weights)."""
    from robgan_tf import quality

    weights = FLAGS.reference_classifier if FLAGS.quality == "reference" else FLAGS.inception_weights
    return quality.make_backend(FLAGS.quality, classifier, weights or None, FLAGS.inception_sha256 or None)


def _generator_quality(backend, classifier, defaults, dataset, data_dir):
    from robgan_tf import quality

    g = defaults["generator"]
    split = FLAGS.fid_ref_split
    reference = data_lib.load(dataset, split, defaults.get("resolution") or None, data_dir)
    cache = FLAGS.fid_stats or quality.stats_cache_path(defaults["stats_dir"], backend.name, dataset, split)
    # Label accuracy is judged by the backend's classifier when it has one (the reference classifier: independent
    # of the run), else by the run's own.
    judge = getattr(backend, "classifier", None)
    out = {**quality.generator_metrics(backend, g, reference, FLAGS.num_samples, cache_path=cache),
           "fid_statistics_cache": cache, "g_statistics": defaults["g_statistics"],
           "label_accuracy_per_class": quality.per_class_label_accuracy(g, judge or classifier),
           "label_accuracy_judge": backend.name if judge is not None else "the evaluated classifier"}
    print(f"[{backend.label}] IS {out['inception_score']:.3f} +- {out['inception_score_std']:.3f}, "
          f"FID {out['fid']:.3f}, KID {out['kid']:.4f} +- {out['kid_std']:.4f} against {dataset}/{split} "
          f"({FLAGS.num_samples} samples); label accuracy of generated images "
          f"{sum(out['label_accuracy_per_class']) / g.num_classes:.1%}")
    if not out["comparable_sample_count"]:
        print(f"note: {FLAGS.num_samples} samples, fewer than the {quality.PUBLISHED_SAMPLES:,} published IS / FID / "
              "KID use: FID and IS are biased at this size, so these numbers compare only with others made with "
              "the same count, not with published ones.")
    return out


def _check_flags(protocols):
    """Every flag and output path, before the first attack: a typo must not cost an AutoAttack run."""
    common.check_positive(batch_size=FLAGS.batch_size, num_samples=FLAGS.num_samples)
    if FLAGS.num_examples < 0:
        common.fail(f"--num_examples must be >= 0 (0: the whole split), got {FLAGS.num_examples}.")
    try:
        parse_eps_grid(FLAGS.eps, FLAGS.dataset or "digits")
    except ValueError as e:
        common.fail(str(e))
    for flag in ("json_out", "save_examples"):
        common.check_output_path(getattr(FLAGS, flag), flag)
    if FLAGS.analysis == "gap":
        common.check_output_path(FLAGS.plot_out, "plot_out")
    if not protocols and FLAGS.quality == "none" and FLAGS.analysis == "none":
        common.fail("--protocol=none with --quality=none leaves nothing to evaluate; set one of them.")
    if not protocols and FLAGS.save_examples:
        common.fail("--save_examples needs an attack protocol (--protocol=paper, strong or autoattack).")
    if FLAGS.all_checkpoints:
        if FLAGS.quality == "classifier":
            common.fail("--all_checkpoints --quality=classifier: the run's own classifier changes from checkpoint "
                        "to checkpoint, so its scores are not a curve; use --quality=reference (or an Inception "
                        "backend).")
        if FLAGS.analysis != "none" or FLAGS.save_examples or FLAGS.stage != "final":
            common.fail("--all_checkpoints scores training checkpoints with --quality and --protocol only; drop "
                        "--analysis, --save_examples and --stage.")


def _gap(classifier, defaults, dataset, data_dir, source, grid):
    """--analysis=gap: accuracy under attack on train vs test and the local Lipschitz values, plotted."""
    train = data_lib.load(dataset, "train", defaults.get("resolution") or None, data_dir)
    gap = gap_lib.gap_analysis(classifier, train, source, eps_grid=grid, num_examples=FLAGS.num_examples or 1000,
                               batch_size=FLAGS.batch_size)
    gap_lib.plot_gap(gap, FLAGS.plot_out)
    for e, a, b in zip(gap["eps"], gap["train_accuracy"], gap["test_accuracy"]):
        print(f"eps {e:g}: train {100 * a:.2f}%  test {100 * b:.2f}%  gap {100 * (a - b):+.2f}")
    print(f"LLV mean: train {gap['llv_mean']['train']:.4g}  test {gap['llv_mean']['test']:.4g}")
    print(f"wrote {FLAGS.plot_out}")
    if FLAGS.json_out:
        robustness.write_json(gap, FLAGS.json_out)


def _evaluate(protocols):
    classifier, defaults = _load_model(FLAGS.model)
    dataset = FLAGS.dataset or defaults.get("dataset") or "digits"
    data_dir = FLAGS.data_dir or defaults.get("data_dir") or None
    source = data_lib.load(dataset, FLAGS.split, defaults.get("resolution") or None, data_dir)
    shape = defaults.get("image_shape")  # an exported classifier: does the data fit it?
    if shape and tuple(shape) != tuple(source.info.image_shape):
        common.fail(f"--model={FLAGS.model} takes images {list(shape)}, but {dataset} has "
                    f"{list(source.info.image_shape)}; pass the --dataset / --data_dir it was trained on.")
    backend = _quality_backend(classifier, defaults) if FLAGS.quality != "none" else None
    grid = parse_eps_grid(FLAGS.eps, dataset)
    if FLAGS.analysis == "gap":
        return _gap(classifier, defaults, dataset, data_dir, source, grid)
    if not protocols:
        result = {"model": os.path.abspath(FLAGS.model), "dataset": dataset}
    else:
        print("eps: " + ", ".join(f"{e:g} ([0, 1] scale {eps_label(e)})" for e in grid))
        result = robustness.robustness_table(
            classifier, source, eps_grid=grid, protocols=protocols, num_examples=FLAGS.num_examples or None,
            batch_size=FLAGS.batch_size, model_name=os.path.abspath(FLAGS.model),
            save_examples=FLAGS.save_examples or None, seed=FLAGS.attack_seed, verbose=FLAGS.progress)
        print(robustness.markdown_table(result))
        print("sanity:", json.dumps(result["sanity"]))
    result["weights"] = defaults.get("weights")  # training iteration / fine-tuning step, when known
    # float32 unless asked: the model measured is the one served
    result["precision"] = {"evaluated": FLAGS.precision, "trained": defaults.get("trained_precision")}
    if FLAGS.quality != "none":
        result["generator_quality"] = _generator_quality(backend, classifier, defaults, dataset, data_dir)
    if FLAGS.json_out:
        robustness.write_json(result, FLAGS.json_out)
        print(f"wrote {FLAGS.json_out}")


def main(argv):
    common.start_model_script(argv, FLAGS.model)
    protocols = _protocols([p.strip() for p in FLAGS.protocol.split(",") if p.strip()])
    _check_flags(protocols)
    if FLAGS.all_checkpoints:
        return common.guarded(lambda: _all_checkpoints(protocols))
    common.guarded(lambda: _evaluate(protocols))


def _all_checkpoints(protocols):
    """evaluate --all_checkpoints: the curve of a run's training checkpoints."""
    from robgan_tf import curves, loading, quality

    if not loading.is_run(FLAGS.model):
        common.fail(f"--all_checkpoints needs a run directory (its config.json and checkpoints/); --model="
                    f"{FLAGS.model} is not one.")
    run = loading.open_run(FLAGS.model, FLAGS.precision)
    cfg = run.cfg
    dataset, data_dir = FLAGS.dataset or cfg.dataset, FLAGS.data_dir or cfg.data_dir or None
    classifier = run.discriminator.classifier()  # a view: each restore changes its weights
    backend, reference = None, None
    if FLAGS.quality != "none":
        if run.generator is None:
            common.fail(f"--quality: {FLAGS.model} was trained with --method=advtrain and has no generator.")
        backend = _make_backend(classifier)
        reference = data_lib.load(dataset, FLAGS.fid_ref_split, run.resolution, data_dir)
    source = data_lib.load(dataset, FLAGS.split, run.resolution, data_dir)
    grid = parse_eps_grid(FLAGS.eps, dataset)
    cache = FLAGS.fid_stats or quality.stats_cache_path(RunDir(cfg.logdir).eval, FLAGS.quality, dataset,
                                                        FLAGS.fid_ref_split)

    def score(run):
        out = {}
        if backend is not None:
            out.update(quality.curve_point(backend, models.sampler(run.sampling_generator(), _g_statistics(cfg)),
                                           reference, FLAGS.num_samples, cache, classifier))
        if protocols:
            table = robustness.robustness_table(
                classifier, source, eps_grid=grid, protocols=protocols, num_examples=FLAGS.num_examples or None,
                batch_size=FLAGS.batch_size, seed=FLAGS.attack_seed, verbose=False)
            for row in table["results"]:
                out[f"{row['protocol']}_accuracy_eps{row['eps']:g}"] = row["accuracy"]
        return out

    records = curves.score_checkpoints(run, score)
    path = FLAGS.json_out or RunDir(cfg.logdir).checkpoint_curve
    png = os.path.splitext(path)[0] + ".png"
    robustness.write_json({"model": os.path.abspath(FLAGS.model), "dataset": dataset, "split": FLAGS.split,
                           "quality_backend": FLAGS.quality, "num_samples": FLAGS.num_samples if backend else None,
                           "g_statistics": _g_statistics(cfg) if backend else None,
                           "weights_sha256": getattr(backend, "sha256", None), "protocols": list(protocols),
                           "num_examples": FLAGS.num_examples or None, "records": records}, path)
    curves.plot_curves({os.path.basename(os.path.normpath(FLAGS.model)): records}, png)
    if any(r["train_seconds"] is None for r in records):
        print("note: some checkpoints have no training seconds (the run predates the clock, "
              "eval/train_seconds.jsonl); the time panels leave them out.")
    print(f"wrote {path} and {png} ({len(records)} checkpoints)")


def run():
    """The console script's entry point (robgan-evaluate)."""
    common.run_tool(main)


if __name__ == "__main__":
    run()
