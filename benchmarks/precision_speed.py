"""The default pipeline's wall time in float32 and with --precision=auto, side by side on this machine.

    python benchmarks/precision_speed.py [--repeats=2] [--json_out=F]

Runs `robgan-pipeline` with its defaults (the digits demo) into fresh temporary run folders, alternating the two
precisions, and prints each wall time (TensorFlow's import included), the medians, their ratio, what `auto` chose
and why, and the targets: with native bfloat16 (AVX-512-BF16 or AMX) auto should take at most 0.6x float32's time;
without it auto is float32 and must not be slower. Take it with nothing else running; say the load when reporting.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time


def _pipeline_seconds(logdir, precision):
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "robgan_tf.cli.pipeline", f"--logdir={logdir}", f"--precision={precision}"],
                   check=True, stdout=subprocess.DEVNULL, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json_out", default="")
    args = parser.parse_args()
    from robgan_tf import precision

    chosen, reason = precision.resolve("auto")
    load_before = os.getloadavg()
    times = {"float32": [], "auto": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            for p in ("float32", "auto"):
                times[p].append(_pipeline_seconds(os.path.join(tmp, f"{p}_{i}"), p))
                print(f"{p} run {i + 1}: {times[p][-1]:.1f} s", flush=True)
    f32, auto = statistics.median(times["float32"]), statistics.median(times["auto"])
    ratio = auto / f32
    native = chosen == "mixed_bfloat16"
    limit = 0.6 if native else 1.0
    report = {"float32_s": times["float32"], "auto_s": times["auto"], "median_float32_s": f32, "median_auto_s": auto,
              "ratio_auto_over_float32": ratio, "auto_chose": chosen, "because": reason,
              "target": {"ratio_at_most": limit, "met": ratio <= limit},
              "processor": precision.cpuinfo()[0], "load_before": load_before}
    print(f"auto chose {chosen} ({reason}); median float32 {f32:.1f} s, auto {auto:.1f} s: ratio {ratio:.2f}x; "
          f"target <= {limit}x: {'met' if ratio <= limit else 'NOT met'}")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
