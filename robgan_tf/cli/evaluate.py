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
from robgan_tf.experiment import eps_label, parse_eps_grid
from robgan_tf.layout import RunDir

flags.DEFINE_string("model", "runs/robgan", "A run's --logdir, or an export: its directory (RUN/export), the classifier's "
                    "folder (RUN/export/classifier: the highest version) or one version folder. Default: the demo pipeline's run.")
flags.DEFINE_string("dataset", "", "Dataset; default: the one the model was trained on (its manifest/config).")
flags.DEFINE_string("data_dir", "", "Where the dataset lives; default: the model's.")
flags.DEFINE_enum("stage", "final", ["final", "trained"],
                  "Which classifier of a run: final (the fine-tuned one when the run fine-tunes, as its "
                  "--finetune_weights says; else the trained D's) or trained (the latest training checkpoint's D, "
                  "before fine-tuning: what eq. 10 adds is final minus trained). An export holds one classifier: "
                  "final only.")
flags.DEFINE_string("split", "test", "Split to evaluate: test or train, or a slice in tensorflow-datasets' notation "
                    "(test[:1000], train[90%:]).")
flags.DEFINE_string("eps", "", "Comma-separated eps: plain numbers are in the images' [-1, 1] units (0.0627); "
                    "fractions are on the [0, 1] pixel scale papers use (8/255 = 0.0627 here). Both are printed. "
                    "Default: the paper's grid for the dataset.")
flags.DEFINE_list("protocol", ["paper"],
                  "Comma-separated attack protocols (see robgan_tf.robustness): paper (the paper's PGD, comparable "
                  "with Table 1), strong (PGD with restarts, margin and targeted losses), autoattack (AutoAttack's "
                  "standard l_inf version: the number to quote; minutes to hours), both (= paper,strong); none: no "
                  "robustness table (e.g. only --quality).")
flags.DEFINE_integer("attack_seed", 0, "Seed of AutoAttack's random starts and Square's random search.")
flags.DEFINE_bool("progress", True, "Print a progress line (examples left, elapsed, ETA) on stderr.")
flags.DEFINE_integer("num_examples", 0, "Examples to evaluate; 0: the whole split.")
flags.DEFINE_integer("batch_size", 200, "Evaluation batch size.")
flags.DEFINE_enum("precision", "float32", ["float32", "mixed_bfloat16"],
                  "What a run's networks compute in while evaluated: float32 (the model that is served) or "
                  "mixed_bfloat16 (e.g. to measure what bfloat16 changes in the attack). Exports compute in float32.")
flags.DEFINE_string("json_out", "", "Write the results JSON here (default: print only).")
flags.DEFINE_enum("analysis", "none", ["none", "gap"],
                  "gap: the paper's Fig. 2 analysis -- accuracy under PGD on train vs test over --eps, and the local "
                  "Lipschitz value ||d loss/d x||_2 on both splits; writes --plot_out and, with --json_out, the numbers.")
flags.DEFINE_string("plot_out", "gap.png", "PNG path of the gap plot (--analysis=gap).")
flags.DEFINE_enum("quality", "none", ["none", "classifier", "reference", "keras_inception_v3", "tf_inception_2015"],
                  "Also score the generator (of the run, or the export/generator beside an exported classifier): "
                  "Inception Score, FID and KID against "
                  "--fid_ref_split, with this backend, plus the per-class label accuracy of generated images. "
                  "tf_inception_2015 gives numbers comparable with SN-GAN's (TF-Inception) published ones, not with "
                  "the Rob-GAN paper's (torchvision Inception); reference (--reference_classifier, from "
                  "robgan-train-reference) works offline and compares runs scored with the same file; classifier "
                  "(the run's own) is a sanity check only; keras_inception_v3 is a proxy.")
flags.DEFINE_string("reference_classifier", "", "The .keras file of --quality=reference (robgan-train-reference).")
flags.DEFINE_string("inception_weights", "", "Local weights for the Inception backends (nothing is downloaded): "
                    "classify_image_graph_def.pb or inception-2015-12-05.tgz for --quality=tf_inception_2015; "
                    "inception_v3_weights_tf_dim_ordering_tf_kernels.h5 for --quality=keras_inception_v3.")
flags.DEFINE_string("inception_sha256", "", "Expected sha256 of the weights file (--inception_weights or "
                    "--reference_classifier; checked when given; the "
                    "sha256 actually read is always recorded in the JSON).")
flags.DEFINE_integer("num_samples", 5000, "Generated images for --quality.")
flags.DEFINE_enum("g_statistics", "run", ["run", "batch", "moving"],
                  "How the generator's batch norm normalises its samples for --quality: batch (each sample batch by "
                  "its own statistics, the authors'), moving (inference mode), or run: the run's --g_statistics. An "
                  "export samples with moving statistics only.")
flags.DEFINE_enum("fid_ref_split", "train", ["train", "test"], "The real split FID and KID compare with.")
flags.DEFINE_string("fid_stats", "", "Cache of the reference split's feature statistics for --quality (.npz, "
                    "reused when its metadata match); default: RUN/eval/ or the export directory, "
                    "fid_stats_<backend>_<dataset>_<split>.npz.")
flags.DEFINE_bool("all_checkpoints", False,
                  "Score every training checkpoint a run holds (those kept by --keep_checkpoint_every and the latest "
                  "ones) with --quality (the generator) and --protocol (the trained D's classifier, on --num_examples) "
                  "and write the curve: --json_out (default RUN/eval/checkpoint_curve.json) and a PNG beside it, each "
                  "metric against D updates and training seconds.")
flags.DEFINE_string("save_examples", "", "Write an .npz with the clean images x, labels y and adversarial images.")
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
    protocols = _protocols(FLAGS.protocol)
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
