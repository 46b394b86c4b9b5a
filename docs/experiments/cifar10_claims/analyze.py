"""Collects what study.py wrote in RUNS into this folder: raw/ (each result and curve as written), results.json
(per-seed values, mean and sample standard deviation) and the plots; prints the README's tables.

    PYTHONPATH=CODE python analyze.py --runs=RUNS [--out=THIS_FOLDER]

Works on a partial study: what has not finished is reported as missing.
"""
import argparse
import glob
import json
import os
import shutil

import numpy as np

from robgan_tf import curves


METRICS = ["fid", "kid", "inception_score", "label_accuracy"]


def _load(path):
    return json.load(open(path)) if os.path.exists(path) else None


def stats(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    arr = np.asarray(values, float)
    return {"values": [round(float(v), 6) for v in values], "n": len(values), "mean": round(float(arr.mean()), 6),
            "std": round(float(arr.std(ddof=1)), 6) if len(values) > 1 else None}


def fmt(s, scale=1.0, digits=1):
    if s is None:
        return "missing"
    mean = f"{s['mean'] * scale:.{digits}f}"
    spread = f" +- {s['std'] * scale:.{digits}f}" if s["std"] is not None else ""
    return f"{mean}{spread} (n={s['n']})"


def accuracy(result, protocol, eps):
    if result is None:
        return None
    for row in result["results"]:
        if row["protocol"] == protocol and abs(row["eps"] - eps) < 1e-6:
            return row["accuracy"]
    return None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", required=True)
    parser.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    args = parser.parse_args()
    runs, out = args.runs, args.out
    raw = os.path.join(out, "raw")
    os.makedirs(raw, exist_ok=True)
    for path in glob.glob(os.path.join(runs, "results", "*.json")) + glob.glob(os.path.join(runs, "results", "*.png")):
        shutil.copy(path, raw)
    for path in glob.glob(os.path.join(runs, "*", "eval", "quality_curve.jsonl")):
        shutil.copy(path, os.path.join(raw, f"quality_curve_{path.split(os.sep)[-3]}.jsonl"))
    for path in glob.glob(os.path.join(runs, "*", "eval", "train_seconds.jsonl")):
        shutil.copy(path, os.path.join(raw, f"train_seconds_{path.split(os.sep)[-3]}.jsonl"))
    for path in glob.glob(os.path.join(runs, "*", "config.json")):
        shutil.copy(path, os.path.join(raw, f"config_{path.split(os.sep)[-2]}.json"))
    for path in glob.glob(os.path.join(runs, "reference", "*.json")):
        shutil.copy(path, raw)

    result = lambda name: _load(os.path.join(runs, "results", f"{name}.json"))  # noqa: E731
    seeds3, seeds2 = (0, 1, 2), (0, 1)
    summary = {}

    # (a) and (b): generator quality, final (5,000 samples) and over training (1,000 samples per point)
    def curve(run):
        path = os.path.join(runs, run, "eval", "quality_curve.jsonl")
        return [json.loads(line) for line in open(path)] if os.path.exists(path) else []

    groups = {"robgan (split, eq. 9)": [f"robgan_s{s}" for s in seeds3], "gan (split, no attacker)":
              [f"gan_s{s}" for s in seeds3], "robgan (AC-GAN loss, eq. 8)": [f"robgan_acgan_s{s}" for s in seeds2]}
    quality = {}
    for label, names in groups.items():
        finals = [result(f"quality_{n}") for n in names]
        q = [f["generator_quality"] if f else None for f in finals]
        quality[label] = {
            "inception_score": stats([x["inception_score"] if x else None for x in q]),
            "fid": stats([x["fid"] if x else None for x in q]),
            "kid": stats([x["kid"] if x else None for x in q]),
            "label_accuracy": stats([float(np.mean(x["label_accuracy_per_class"])) if x else None for x in q]),
            "training_seconds": stats([(curve(n) or [{}])[-1].get("train_seconds") for n in names
                                       if curve(n) and curve(n)[-1]["iteration"] == 2000]),
        }
    summary["generator_quality_final"] = quality
    trajectories = {label: [r for n in names for r in curve(n)] for label, names in groups.items()}
    summary["quality_curves"] = {label: {
        metric: [{"d_updates": int(x), "mean": round(float(m), 4), "std": round(float(s), 4)}
                 for x, m, s in zip(*curves.summarize(records, "d_updates", metric))]
        for metric in ("inception_score", "fid", "kid", "label_accuracy")} for label, records in trajectories.items()
        if records}
    # Fig. 8's question: D updates (and seconds) each method needs to reach a quality level
    def first_reaching(records, metric, level, key):
        x, mean, _ = curves.summarize(records, key, metric)
        better = mean <= level if metric in ("fid", "kid") else mean >= level
        return float(x[np.argmax(better)]) if better.any() else None

    a, b = trajectories[list(groups)[0]], trajectories[list(groups)[1]]
    if a and b:
        reach = {}
        for metric in ("fid", "inception_score", "label_accuracy"):
            _, gan_mean, _ = curves.summarize(b, "d_updates", metric)
            level = float(gan_mean[-1])  # what the GAN reaches at its end
            reach[metric] = {"level": round(level, 4),  # the GAN's final mean
                             "robgan_d_updates": first_reaching(a, metric, level, "d_updates"),
                             "gan_d_updates": first_reaching(b, metric, level, "d_updates"),
                             "robgan_seconds": first_reaching(a, metric, level, "train_seconds"),
                             "gan_seconds": first_reaching(b, metric, level, "train_seconds")}
        summary["time_to_gan_final_quality"] = reach
        curves.plot_curves({"robgan": a, "gan": b}, os.path.join(out, "quality_robgan_vs_gan.png"), METRICS)
    c = trajectories[list(groups)[2]]
    if a and c:
        split = [r for s in seeds2 for r in curve(f"robgan_s{s}")]  # the same seeds as the AC-GAN runs
        curves.plot_curves({"split (eq. 9)": split, "acgan (eq. 8)": c}, os.path.join(out, "quality_split_vs_acgan.png"),
                           METRICS)

    # (c) and (d): the classifier under attack
    eps_paper = (0.0, 0.02, 0.04, 0.08)
    eps_strong = 16 / 255  # 8/255 on the [0, 1] scale
    robust = {}
    for label, names, suffix in (("robgan + eq. 10 (lambda 0.3)", [f"robgan_s{s}" for s in seeds3], ""),
                                 ("advtrain + the same fine-tuning", [f"advtrain_s{s}" for s in seeds3], ""),
                                 ("robgan before fine-tuning", [f"robgan_s{s}" for s in seeds3], "_noft"),
                                 ("robgan + eq. 10 (lambda 0)", [f"robgan_s{s}" for s in seeds2], "_ft0")):
        entry = {f"paper eps {e:g}": stats([accuracy(result(f"paper_{n}{suffix}"), "paper", e) for n in names])
                 for e in eps_paper}
        if not suffix:
            entry["strong eps 8/255"] = stats([accuracy(result(f"strong_{n}"), "strong", eps_strong) for n in names])
            entry["autoattack eps 8/255"] = stats([accuracy(result(f"strong_{n}"), "autoattack", eps_strong)
                                                   for n in names])
        robust[label] = entry
    summary["robustness"] = robust

    # (d) paired differences (same trained run, seeds 0 and 1)
    paired = {}
    for e in eps_paper:
        d03 = [(accuracy(result(f"paper_robgan_s{s}"), "paper", e) or np.nan) -
               (accuracy(result(f"paper_robgan_s{s}_noft"), "paper", e) or np.nan) for s in seeds3]
        d0 = [(accuracy(result(f"paper_robgan_s{s}"), "paper", e) or np.nan) -
              (accuracy(result(f"paper_robgan_s{s}_ft0"), "paper", e) or np.nan) for s in seeds2]
        paired[f"eps {e:g}"] = {"lambda 0.3 minus no fine-tuning": stats([v for v in d03 if np.isfinite(v)]),
                                "lambda 0.3 minus lambda 0": stats([v for v in d0 if np.isfinite(v)])}
    summary["finetuning_paired_differences"] = paired

    # (e) the generalization gap and the local Lipschitz values
    gap = {}
    for label, names in (("robgan + eq. 10", [f"robgan_s{s}" for s in seeds3]),
                         ("advtrain + fine-tuning", [f"advtrain_s{s}" for s in seeds3])):
        g = [result(f"gap_{n}") for n in names]
        entry = {}
        for i, e in enumerate(eps_paper):
            entry[f"train - test, eps {e:g}"] = stats([x["train_accuracy"][i] - x["test_accuracy"][i] if x else None
                                                      for x in g])
        entry["llv mean train"] = stats([x["llv_mean"]["train"] if x else None for x in g])
        entry["llv mean test"] = stats([x["llv_mean"]["test"] if x else None for x in g])
        gap[label] = entry
    summary["gap"] = gap
    summary["reference_classifier"] = _load(os.path.join(runs, "reference", "cifar10_tiny.keras.json"))
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(summary, f, indent=2, sort_keys=True)

    print("## generator quality (reference classifier, 5,000 samples, after 2,000 D updates)")
    print("| method | IS | FID | KID | label accuracy | training seconds |\n|---|---|---|---|---|---|")
    for label, q in quality.items():
        print(f"| {label} | {fmt(q['inception_score'], 1, 2)} | {fmt(q['fid'])} | {fmt(q['kid'], 1, 2)} | "
              f"{fmt(q['label_accuracy'], 100)} % | {fmt(q['training_seconds'], 1, 0)} |")
    print("\n## D updates and training seconds to reach the GAN's final mean (the first scored point at or past it)")
    print("| metric | level | robgan D updates | gan D updates | robgan seconds | gan seconds |\n|---|---|---|---|---|---|")
    for metric, v in (summary.get("time_to_gan_final_quality") or {}).items():
        print(f"| {metric} | {v['level']:.3f} | {v['robgan_d_updates']} | {v['gan_d_updates']} | "
              f"{v['robgan_seconds']} | {v['gan_seconds']} |")
    print("\n## robust accuracy (%), first 1,000 test images (paper) and first 500 (strong, AutoAttack)")
    cols = [f"paper eps {e:g}" for e in eps_paper] + ["strong eps 8/255", "autoattack eps 8/255"]
    print("| classifier | " + " | ".join(cols) + " |\n|---|" + "---|" * len(cols))
    for label, entry in robust.items():
        print(f"| {label} | " + " | ".join(fmt(entry.get(c), 100) if c in entry else "-" for c in cols) + " |")
    print("\n## fine-tuning, paired by trained run (points of paper-protocol accuracy)")
    print("| eps | lambda 0.3 minus before fine-tuning | lambda 0.3 minus lambda 0 |\n|---|---|---|")
    for k, v in paired.items():
        print(f"| {k[4:]} | " + " | ".join(fmt(b, 100) for b in v.values()) + " |")
    print("\n## train - test accuracy under PGD (points; 500 examples of each) and mean local Lipschitz value")
    keys = [f"train - test, eps {e:g}" for e in eps_paper] + ["llv mean train", "llv mean test"]
    print("| classifier | " + " | ".join(keys) + " |\n|---|" + "---|" * len(keys))
    for label, entry in gap.items():
        print(f"| {label} | " + " | ".join(fmt(entry[k], 100 if "train - test" in k else 1,
                                               1 if "train - test" in k else 4) for k in keys) + " |")


if __name__ == "__main__":
    main()
