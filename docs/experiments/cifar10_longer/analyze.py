"""The longer study's tables, verdicts and plot, from the collected files (study.py --collect=raw).

    python analyze.py raw [--plot=gap_over_training.png]

Works on a partial study: what has not finished is left out and the counts say how many seeds each number has.
The verdicts are mechanical. A paired difference (same seed) is called one way when it has that sign in every seed
and its 95% t-interval over the seeds excludes 0; anything else is "cannot tell", and with fewer than three seeds
nothing is called. With three seeds, one sign in every seed alone would happen by chance a quarter of the time,
hence the interval as well.
"""
import argparse
import glob
import json
import os

import numpy as np

SEEDS = (0, 1, 2)
EPS = (0.0, 0.02, 0.04, 0.08)
POINTS = (2000, 10000)


def _load(path):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def paper_accuracy(raw, name, eps):
    """Paper-protocol accuracy of a fine-tuned copy (paper_NAME.json), or None."""
    result = _load(f"{raw}/paper_{name}.json")
    rows = [r["accuracy"] for r in (result or {}).get("results", []) if abs(r["eps"] - eps) < 1e-6]
    return rows[0] if rows else None


def autoattack_accuracy(raw, name):
    result = _load(f"{raw}/autoattack_{name}.json")
    rows = [r["accuracy"] for r in (result or {}).get("results", []) if r["protocol"] == "autoattack"]
    return rows[0] if rows else None


def curve(raw, run):
    """{d_updates: {eps: accuracy}} of the trained D at every kept checkpoint (curve_RUN.json), or {}."""
    result = _load(f"{raw}/curve_{run}.json")
    out = {}
    for r in (result or {}).get("records", []):
        out[r["d_updates"]] = {e: r.get(f"paper_accuracy_eps{e:g}") for e in EPS}
    return out


def paired(a, b):
    """Per-seed differences a - b (points) where both exist."""
    return [100 * (x - y) for x, y in zip(a, b) if x is not None and y is not None]


T_975 = {2: 4.303, 3: 3.182, 4: 2.776}  # Student's t, 97.5% quantile, by degrees of freedom


def verdict(diffs, up, down):
    if len(diffs) < 3:
        return f"not called ({len(diffs)} seeds)"
    half = T_975[len(diffs) - 1] * np.std(diffs, ddof=1) / np.sqrt(len(diffs))
    interval = f"95% interval {np.mean(diffs) - half:+.1f} to {np.mean(diffs) + half:+.1f}"
    if all(d > 0 for d in diffs) and np.mean(diffs) - half > 0:
        return f"{up} ({interval})"
    if all(d < 0 for d in diffs) and np.mean(diffs) + half < 0:
        return f"{down} ({interval})"
    if all(d > 0 for d in diffs) or all(d < 0 for d in diffs):
        return f"cannot tell (one sign in every seed, but the {interval} includes 0)"
    return f"cannot tell ({interval})"


def fmt(diffs):
    if not diffs:
        return "-"
    spread = f" +- {np.std(diffs, ddof=1):.1f}" if len(diffs) > 1 else ""
    return f"{np.mean(diffs):+.1f}{spread} (n={len(diffs)}: " + ", ".join(f"{d:+.1f}" for d in diffs) + ")"


def classifiers(raw, point, accuracy):
    """Per-seed accuracies of the three fine-tuned classifiers at `point`, via accuracy(raw, name)."""
    return {label: [accuracy(raw, f"{method}_s{s}_at{point}_lam{lam}") for s in SEEDS]
            for label, method, lam in (("advtrain", "advtrain", "0.3"), ("lambda 0.3", "robgan", "0.3"),
                                       ("lambda 0", "robgan", "0"))}


def mean_accuracy(values):
    got = [100 * v for v in values if v is not None]
    return f"{np.mean(got):.1f} (n={len(got)})" if got else "-"


def finetuned_accuracy(raw):
    """Markdown: each fine-tuned classifier's accuracy (%), averaged over the seeds, at each point."""
    lines = ["| point | classifier | " + " | ".join(f"paper eps {e:g}" for e in EPS) + " | AutoAttack 8/255 |",
             "|---|---|" + "---|" * (len(EPS) + 1)]
    for point in POINTS:
        paper = {e: classifiers(raw, point, lambda r, n: paper_accuracy(r, n, e)) for e in EPS}
        aa = classifiers(raw, point, autoattack_accuracy)
        for label in aa:
            lines.append(f"| {point} | {label} | " + " | ".join(mean_accuracy(paper[e][label]) for e in EPS)
                         + f" | {mean_accuracy(aa[label])} |")
    return "\n".join(lines)


def finetuned_gaps(raw):
    """Markdown: advtrain - robgan after fine-tuning and lambda 0.3 - 0, at each point, under each protocol; then
    how the gaps change from 2,000 to 10,000 D updates."""
    measures = [(f"paper eps {e:g}", lambda r, n, e=e: paper_accuracy(r, n, e)) for e in EPS]
    measures.append(("AutoAttack 8/255", autoattack_accuracy))
    lines = ["| point | measure | advtrain - robgan (lambda 0.3) | advtrain - robgan (lambda 0) | lambda 0.3 - 0 | "
             "the fake term |", "|---|---|---|---|---|---|"]
    changes = ["", "How the gaps change from 2,000 to 10,000 D updates (the gap at 10,000 minus the gap at 2,000, "
               "same seed; points):", "", "| measure | advtrain - robgan (lambda 0.3) | advtrain - robgan (lambda 0) | "
               "lambda 0.3 - 0 |", "|---|---|---|---|"]
    for label, accuracy in measures:
        gaps = {}
        for point in POINTS:
            c = classifiers(raw, point, accuracy)
            gaps[point] = [[None if a is None or b is None else 100 * (a - b) for a, b in zip(c[x], c[y])]
                           for x, y in (("advtrain", "lambda 0.3"), ("advtrain", "lambda 0"),
                                        ("lambda 0.3", "lambda 0"))]
            present = [[g for g in gap if g is not None] for gap in gaps[point]]
            lines.append(f"| {point} | {label} | {fmt(present[0])} | {fmt(present[1])} | {fmt(present[2])} | "
                         f"{verdict(present[2], 'helps', 'hurts')} |")
        cells = []
        for early, late, (up, down) in zip(gaps[2000], gaps[10000], [("grows", "shrinks")] * 2
                                           + [("helps more", "hurts more")]):
            change = [b - a for a, b in zip(early, late) if a is not None and b is not None]
            cells.append(f"{fmt(change)}: {verdict(change, up, down)}" if change else "-")
        changes.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines + changes)


def trained_gap_curve(raw):
    """{eps: (d_updates, [per-seed gaps])} of the trained D's: advtrain - robgan at the same D updates."""
    out = {}
    for e in EPS:
        per_seed = {}
        for s in SEEDS:
            a, r = curve(raw, f"advtrain_s{s}"), curve(raw, f"robgan_s{s}")
            for d in sorted(set(a) & set(r)):
                if a[d][e] is not None and r[d][e] is not None:
                    per_seed.setdefault(d, []).append(100 * (a[d][e] - r[d][e]))
        out[e] = per_seed
    return out


EARLY_CHECKPOINTS, LATE_CHECKPOINTS = (1000, 2000), (8000, 9000, 10000)


def trained_gap_change(raw):
    """Markdown: per seed, the trained D's gap averaged over the late checkpoints minus over the early ones (averages
    of a few checkpoints, because one checkpoint's gap moves by a point or two from one to the next)."""
    lines = ["| eps | late - early gap (points) | verdict |", "|---|---|---|"]
    for e in EPS:
        change = []
        for s in SEEDS:
            a, r = curve(raw, f"advtrain_s{s}"), curve(raw, f"robgan_s{s}")
            gap = {d: 100 * (a[d][e] - r[d][e]) for d in set(a) & set(r)
                   if a[d][e] is not None and r[d][e] is not None}
            if all(d in gap for d in EARLY_CHECKPOINTS + LATE_CHECKPOINTS):
                change.append(np.mean([gap[d] for d in LATE_CHECKPOINTS])
                              - np.mean([gap[d] for d in EARLY_CHECKPOINTS]))
        lines.append(f"| {e:g} | {fmt(change)} | {verdict(change, 'grows', 'shrinks')} |")
    return "\n".join(lines)


def masking_checks(raw):
    """One line: how many AutoAttack results exist, how many raised the gradient-masking flag, and how many points
    the gradient-free Square attack broke after the gradient attacks (a sign of masking when > 0)."""
    results = [r for r in (_load(path) for path in sorted(glob.glob(f"{raw}/autoattack_*.json"))) if r]
    if not results:
        return ""
    flagged = [r["model"] for r in results if r.get("sanity", {}).get("possible_gradient_masking")]
    square = sum(r.get("sanity", {}).get("square_broke", 0) for r in results)
    return (f"AutoAttack's gradient-masking checks: {len(flagged)} of {len(results)} results flagged"
            + (f" ({', '.join(flagged)})" if flagged else "") + f"; Square broke {square} points after the "
            "gradient attacks in all of them together.")


def quality_curve(raw):
    """Markdown: robgan's generator over training (reference backend, 1,000 samples), mean +- std over the seeds."""
    per = {}
    for s in SEEDS:
        for row in _rows(f"{raw}/quality_curve_robgan_s{s}.jsonl"):
            per.setdefault(row["d_updates"], []).append(row)
    lines = ["| D updates | FID | IS | label accuracy (%) |", "|---|---|---|---|"]

    def cell(rows, key, scale=1.0):
        v = [scale * r[key] for r in rows]
        return f"{np.mean(v):.1f}" + (f" +- {np.std(v, ddof=1):.1f}" if len(v) > 1 else "") + f" (n={len(v)})"

    for d in sorted(per):
        lines.append(f"| {d} | {cell(per[d], 'fid')} | {cell(per[d], 'inception_score')} | "
                     f"{cell(per[d], 'label_accuracy', 100)} |")
    return "\n".join(lines) if per else ""


def _rows(path):
    """The records of a .jsonl file, or [] if it is missing."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _last_seconds(path, key):
    rows = _rows(path)
    return rows[-1][key] if rows else None


def _intervals(path):
    """Seconds per 250 training iterations, from a run's train_seconds.jsonl (cumulative across resumes)."""
    rows = _rows(path)
    return [(b["train_seconds"] - a["train_seconds"]) * 250 / (b["iteration"] - a["iteration"])
            for a, b in zip(rows, rows[1:])]


def cost(raw):
    """Markdown: the jobs' own clocks by kind (training, fine-tuning, evaluations). Each job ran on one TF thread
    beside one other job; the clocks include any pause of the driver that fell inside them."""
    lines = ["| job | jobs | clock, sum (h) | clock per job, median (min) |", "|---|---|---|---|"]

    def row(label, seconds):
        seconds = [x for x in seconds if x is not None]
        if seconds:
            lines.append(f"| {label} | {len(seconds)} | {sum(seconds) / 3600:.2f} | {np.median(seconds) / 60:.1f} |")
        return sum(seconds)

    total = 0.0
    for method in ("robgan", "advtrain"):
        total += row(f"training {method} to 10,000", [_last_seconds(f"{raw}/train_seconds_{method}_s{s}.jsonl",
                                                                     "train_seconds") for s in SEEDS])
    copies = [f"{m}_s{s}_at{p}_lam{lam}" for p in POINTS for s in SEEDS
              for m, lam in (("advtrain", "0.3"), ("robgan", "0.3"), ("robgan", "0"))]
    total += row("fine-tuning (400 steps)", [_last_seconds(f"{raw}/finetune_seconds_{c}.jsonl", "train_seconds")
                                             for c in copies])
    for kind, label in (("paper", "paper protocol, 1,000 images"), ("autoattack", "AutoAttack, 500 images")):
        total += row(label, [(_load(f"{raw}/{kind}_{c}.json") or {}).get("seconds") for c in copies])
    lines.append(f"| all of the above | | {total / 3600:.2f} | |")
    rates = []
    for method in ("robgan", "advtrain"):
        steps = [x for s in SEEDS for x in _intervals(f"{raw}/train_seconds_{method}_s{s}.jsonl")]
        if steps:
            rates.append(f"{method}: {np.min(steps) / 250:.2f} s per D update at the fastest 250, "
                         f"{np.median(steps) / 250:.2f} s at the median")
    return "\n".join(lines + ([""] + rates if rates else []))


def rebuild_check(raw):
    """The rebuilt jobs' results (RAW/rebuild, from the same archived code on another machine) against the lost
    run's: the fine-tuned classifiers' paper-protocol accuracies, the generator's scores and the reference
    classifier's test accuracy, which must be equal for the rebuild's AutoAttack results to be the lost run's."""
    rebuild = f"{raw}/rebuild"
    if not os.path.isdir(rebuild):
        return ""
    pairs = []  # (what, rebuilt, lost)
    for path in sorted(glob.glob(f"{rebuild}/paper_*.json")):
        name = os.path.basename(path)[len("paper_"):-len(".json")]
        pairs += [(f"paper {name} eps {e:g}", paper_accuracy(rebuild, name, e), paper_accuracy(raw, name, e))
                  for e in EPS]
    for path in sorted(glob.glob(f"{rebuild}/quality_curve_*.jsonl")):
        file = os.path.basename(path)
        lost = {r["d_updates"]: r for r in _rows(f"{raw}/{file}")}
        pairs += [(f"{file} {r['d_updates']} {key}", r[key], lost.get(r["d_updates"], {}).get(key))
                  for r in _rows(path) for key in ("fid", "inception_score", "label_accuracy")]
    rebuilt_reference = _load(f"{rebuild}/cifar10_tiny.keras.json")
    if rebuilt_reference:
        pairs.append(("reference test accuracy", rebuilt_reference.get("test_accuracy"),
                      (_load(f"{raw}/cifar10_tiny.keras.json") or {}).get("test_accuracy")))
    differ = [f"{what}: {a} vs {b}" for what, a, b in pairs if a != b]
    return (f"The rebuild (raw/rebuild) against the lost run: {len(pairs) - len(differ)} of {len(pairs)} numbers "
            "identical" + (": " + "; ".join(differ) if differ else "") + ".")


def _finetuned_markers(ax, raw, accuracy):
    """Advtrain - robgan after fine-tuning at each point, mean +- std over the seeds (n: how many), one marker per
    lambda."""
    for lam, marker, color, shift, label_x in (("0.3", "s", "C1", 0, -30), ("0", "^", "C2", 150, 6)):
        xs, ms, ss, ns = [], [], [], []
        for point in POINTS:
            diffs = paired([accuracy(raw, f"advtrain_s{s}_at{point}_lam0.3") for s in SEEDS],
                           [accuracy(raw, f"robgan_s{s}_at{point}_lam{lam}") for s in SEEDS])
            if diffs:
                xs.append(point + shift)  # side by side, so that the error bars do not overlap
                ms.append(np.mean(diffs))
                ss.append(np.std(diffs, ddof=1) if len(diffs) > 1 else 0.0)
                ns.append(len(diffs))
        if xs:
            ax.errorbar(xs, ms, yerr=ss, fmt=marker, color=color, capsize=4,
                        label=f"after eq. 10 (robgan lambda {lam})")
            for x, m, n in zip(xs, ms, ns):
                ax.annotate(f"n={n}", (x, m), xytext=(label_x, -3), textcoords="offset points", fontsize=7,
                            color=color)


def plot(gaps, raw, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4), sharey=True)
    for ax, e in zip(axes, (0.04, 0.08)):
        d = sorted(gaps[e])
        if d:
            mean = np.array([np.mean(gaps[e][x]) for x in d])
            std = np.array([np.std(gaps[e][x], ddof=1) if len(gaps[e][x]) > 1 else 0.0 for x in d])
            ax.plot(d, mean, "o-", label="trained D (mean over seeds)")
            ax.fill_between(d, mean - std, mean + std, alpha=0.25, label="+- 1 std over seeds")
        _finetuned_markers(ax, raw, lambda r, n, e=e: paper_accuracy(r, n, e))
        ax.set_title(f"paper protocol, eps {e:g}")
    # AutoAttack ran on the fine-tuned classifiers only, not along the training curve.
    _finetuned_markers(axes[2], raw, autoattack_accuracy)
    axes[2].set_title("AutoAttack 8/255, after eq. 10 only")
    for ax in axes:
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xlabel("D updates")
        ax.set_xlim(0, 11000)
    axes[0].set_ylabel("robust accuracy gap, advtrain - robgan (points)")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("raw")
    parser.add_argument("--plot", default="")
    args = parser.parse_args()
    print("### The fine-tuned classifiers' accuracy (%, mean over the seeds; paper protocol on the first 1,000 test "
          "images, AutoAttack on the first 500)\n")
    print(finetuned_accuracy(args.raw))
    print("\n### After fine-tuning: per-seed differences (points)\n")
    print(finetuned_gaps(args.raw))
    for line in (masking_checks(args.raw), rebuild_check(args.raw)):
        if line:
            print("\n" + line)
    gaps = trained_gap_curve(args.raw)
    if any(gaps.values()):
        print("\n### The trained D's gap over training (advtrain - robgan, points)\n")
        print("| D updates | " + " | ".join(f"eps {e:g}" for e in EPS) + " |\n|---|" + "---|" * len(EPS))
        for d in sorted(set().union(*[set(g) for g in gaps.values()])):
            print(f"| {d} | " + " | ".join(fmt(gaps[e].get(d, [])) for e in EPS) + " |")
        print(f"\nThe trained D's gap late in training ({', '.join(map(str, LATE_CHECKPOINTS))} D updates) against "
              f"early ({', '.join(map(str, EARLY_CHECKPOINTS))}), per seed:\n")
        print(trained_gap_change(args.raw))
    quality = quality_curve(args.raw)
    if quality:
        print("\n### Rob-GAN's generator over training (reference backend, 1,000 samples per point)\n")
        print(quality)
    print("\n### Cost (the jobs' clocks; the checkpoint curves and the reference classifier are not in them)\n")
    print(cost(args.raw))
    if args.plot:
        plot(gaps, args.raw, args.plot)


if __name__ == "__main__":
    main()
