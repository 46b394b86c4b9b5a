"""The tables of docs/PERFORMANCE.md's "bfloat16: equal results" from the collected files (study.py --collect).

    python analyze.py raw        # prints markdown
"""
import json
import os
import sys

import numpy as np

PRECISIONS = ("float32", "mixed_bfloat16")


def _load(path):
    with open(path) as f:
        return json.load(f)


def digits(raw):
    """Per precision and seed: accuracy at each eps of the final table, and the judge's score."""
    rows = {}
    for p in PRECISIONS:
        for seed in range(10):
            table, summary = f"{raw}/digits_{p}_s{seed}_robustness.json", f"{raw}/digits_{p}_s{seed}_summary.json"
            if not os.path.exists(table):
                continue
            acc = {r["eps"]: r["accuracy"] for r in _load(table)["results"] if r["protocol"] == "paper"}
            judge = _load(summary).get("independent_judge", {}).get("accuracy")
            rows.setdefault(p, []).append({"seed": seed, **{f"eps {e:g}": a for e, a in acc.items()},
                                           "judge": judge})
    if not rows:
        return ""
    keys = [k for k in rows[PRECISIONS[0]][0] if k != "seed"]
    lines = ["| precision | seeds | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    stats = {}
    for p, runs in rows.items():
        cells = []
        for k in keys:
            v = np.array([r[k] for r in runs], float) * 100
            stats[(p, k)] = v
            cells.append(f"{v.mean():.1f} +- {v.std(ddof=1) if len(v) > 1 else 0:.1f}")
        lines.append(f"| {p} | {len(runs)} | " + " | ".join(cells) + " |")
    if all(p in rows for p in PRECISIONS):
        cells = []
        for k in keys:
            a, b = stats[(PRECISIONS[0], k)], stats[(PRECISIONS[1], k)]
            spread = max(a.std(ddof=1), b.std(ddof=1)) if min(len(a), len(b)) > 1 else float("nan")
            cells.append(f"{b.mean() - a.mean():+.1f} ({'within' if abs(b.mean() - a.mean()) <= spread else 'outside'}"
                         f" {spread:.1f})")
        lines.append("| bf16 - f32 (vs the larger seed std) | | " + " | ".join(cells) + " |")
    per_seed = ["", "| run | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for p, runs in rows.items():
        for r in runs:
            per_seed.append(f"| {p} s{r['seed']} | " + " | ".join(f"{100 * r[k]:.1f}" for k in keys) + " |")
    return "\n".join(lines + per_seed)


def pgd(raw):
    """Robust accuracy of one classifier under the paper protocol, computing in float32 and in bfloat16."""
    found = {p: _load(f"{raw}/pgd_{p}.json") for p in PRECISIONS if os.path.exists(f"{raw}/pgd_{p}.json")}
    if len(found) < 2:
        return ""
    a, b = (found[p]["results"] for p in PRECISIONS)
    n = a[0].get("num_examples")
    lines = ["| eps | float32 | bfloat16 | difference (points) |", "|---|---|---|---|"]
    for ra, rb in zip(a, b):
        lines.append(f"| {ra['eps']:g} | {100 * ra['accuracy']:.2f} | {100 * rb['accuracy']:.2f} | "
                     f"{100 * (rb['accuracy'] - ra['accuracy']):+.2f} |")
    return f"{n} test examples\n\n" + "\n".join(lines)


def cifar(raw, tags=("d_loss", "g_loss")):
    """Per loss: the mean over iterations of |mean_bf16 - mean_f32| against the seeds' own |s0 - s1| per precision."""
    curves = {}
    for p in PRECISIONS:
        for seed in range(10):
            path = f"{raw}/cifar_{p}_s{seed}_scalars.json"
            if os.path.exists(path):
                got = _load(path)
                if got["done"]:
                    curves.setdefault(p, []).append(got["scalars"])
    if any(len(curves.get(p, [])) < 2 for p in PRECISIONS):
        return ""
    lines = ["| loss | mean abs. gap bf16 - f32 (seed means) | seed gap f32 | seed gap bf16 | last 50 it. f32 | "
             "last 50 it. bf16 |", "|---|---|---|---|---|---|"]
    for tag in [t for t in curves[PRECISIONS[0]][0] if any(t.endswith(x) for x in tags)]:
        series = {p: np.array([[v for _, v in run[tag]] for run in curves[p]]) for p in PRECISIONS}
        n = min(s.shape[1] for s in series.values())
        f, b = series["float32"][:, :n], series["mixed_bfloat16"][:, :n]
        gap = np.abs(b.mean(0) - f.mean(0)).mean()
        lines.append(f"| {tag} | {gap:.4f} | {np.abs(f[0] - f[1]).mean():.4f} | {np.abs(b[0] - b[1]).mean():.4f} | "
                     f"{f[:, -5:].mean():.4f} | {b[:, -5:].mean():.4f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raw = sys.argv[1]
    for title, text in (("digits", digits(raw)), ("PGD on one classifier", pgd(raw)), ("CIFAR-10", cifar(raw))):
        if text:
            print(f"### {title}\n\n{text}\n")
