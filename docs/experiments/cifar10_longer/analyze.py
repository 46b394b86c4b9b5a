"""The longer study's tables, verdicts and plot, from the collected files (study.py --collect=raw).

    python analyze.py raw [--plot=gap_over_training.png]

Works on a partial study: what has not finished is left out and the counts say how many seeds each number has.
The verdicts are mechanical: a paired difference (same seed) that has one sign in every seed is called that way,
anything else "cannot tell"; with fewer than three seeds nothing is called.
"""
import argparse
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


def verdict(diffs, up, down):
    if len(diffs) < 3:
        return f"not called ({len(diffs)} seeds)"
    if all(d > 0 for d in diffs):
        return up
    if all(d < 0 for d in diffs):
        return down
    return "cannot tell"


def fmt(diffs):
    if not diffs:
        return "-"
    spread = f" +- {np.std(diffs, ddof=1):.1f}" if len(diffs) > 1 else ""
    return f"{np.mean(diffs):+.1f}{spread} (n={len(diffs)}: " + ", ".join(f"{d:+.1f}" for d in diffs) + ")"


def finetuned_gaps(raw):
    """Markdown: advtrain - robgan after fine-tuning at each point, lambda 0.3 - 0, and their trend."""
    lines = ["| point | eps | advtrain - robgan (lambda 0.3) | advtrain - robgan (lambda 0) | lambda 0.3 - 0 | "
             "the fake term |", "|---|---|---|---|---|---|"]
    gaps = {}
    for point in POINTS:
        for e in EPS:
            at = [paper_accuracy(raw, f"advtrain_s{s}_at{point}_lam0.3", e) for s in SEEDS]
            r03 = [paper_accuracy(raw, f"robgan_s{s}_at{point}_lam0.3", e) for s in SEEDS]
            r0 = [paper_accuracy(raw, f"robgan_s{s}_at{point}_lam0", e) for s in SEEDS]
            gaps[point, e] = (at, r03)
            lines.append(f"| {point} | {e:g} | {fmt(paired(at, r03))} | {fmt(paired(at, r0))} | "
                         f"{fmt(paired(r03, r0))} | {verdict(paired(r03, r0), 'helps', 'hurts')} |")
    aa = ["", "AutoAttack at 8/255 (500 test images):", "",
          "| point | advtrain - robgan (lambda 0.3) | lambda 0.3 - 0 |", "|---|---|---|"]
    for point in POINTS:
        at = [autoattack_accuracy(raw, f"advtrain_s{s}_at{point}_lam0.3") for s in SEEDS]
        r03 = [autoattack_accuracy(raw, f"robgan_s{s}_at{point}_lam0.3") for s in SEEDS]
        r0 = [autoattack_accuracy(raw, f"robgan_s{s}_at{point}_lam0") for s in SEEDS]
        aa.append(f"| {point} | {fmt(paired(at, r03))} | {fmt(paired(r03, r0))} |")
    verdicts = ["", "| eps | the gap after fine-tuning, from 2,000 to 10,000 (change, points) | verdict |",
                "|---|---|---|"]
    for e in EPS:
        change = [g10 - g2 for g2, g10 in zip(paired(*gaps[2000, e]), paired(*gaps[10000, e]))]
        if len(paired(*gaps[2000, e])) == len(paired(*gaps[10000, e])) == len(SEEDS):
            verdicts.append(f"| {e:g} | {fmt(change)} | {verdict(change, 'grows', 'shrinks')} |")
    return "\n".join(lines + aa + (verdicts if len(verdicts) > 3 else []))


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


def plot(gaps, raw, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, e in zip(axes, (0.04, 0.08)):
        d = sorted(gaps[e])
        if d:
            mean = np.array([np.mean(gaps[e][x]) for x in d])
            std = np.array([np.std(gaps[e][x], ddof=1) if len(gaps[e][x]) > 1 else 0.0 for x in d])
            ax.plot(d, mean, "o-", label="trained D (mean over seeds)")
            ax.fill_between(d, mean - std, mean + std, alpha=0.25, label="+- 1 std over seeds")
        for lam, marker in (("0.3", "s"), ("0", "^")):
            xs, ms, ss = [], [], []
            for point in POINTS:
                diffs = paired([paper_accuracy(raw, f"advtrain_s{s}_at{point}_lam0.3", e) for s in SEEDS],
                               [paper_accuracy(raw, f"robgan_s{s}_at{point}_lam{lam}", e) for s in SEEDS])
                if diffs:
                    xs.append(point)
                    ms.append(np.mean(diffs))
                    ss.append(np.std(diffs, ddof=1) if len(diffs) > 1 else 0.0)
            if xs:
                ax.errorbar(xs, ms, yerr=ss, fmt=marker, capsize=4, label=f"after eq. 10 (robgan lambda {lam})")
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_title(f"eps {e:g}: advtrain - robgan (points)")
        ax.set_xlabel("D updates")
    axes[0].set_ylabel("robust accuracy gap, paper protocol")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("raw")
    parser.add_argument("--plot", default="")
    args = parser.parse_args()
    print("### After fine-tuning (paper protocol, 1,000 test images; per-seed differences in points)\n")
    print(finetuned_gaps(args.raw))
    gaps = trained_gap_curve(args.raw)
    if any(gaps.values()):
        print("\n### The trained D's gap over training (advtrain - robgan, points)\n")
        print("| D updates | " + " | ".join(f"eps {e:g}" for e in EPS) + " |\n|---|" + "---|" * len(EPS))
        for d in sorted(set().union(*[set(g) for g in gaps.values()])):
            print(f"| {d} | " + " | ".join(fmt(gaps[e].get(d, [])) for e in EPS) + " |")
    if args.plot:
        plot(gaps, args.raw, args.plot)


if __name__ == "__main__":
    main()
