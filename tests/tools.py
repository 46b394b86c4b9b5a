"""Running the tools in tests: `run_tool` runs a tool of robgan_tf.cli in this process, as its console script would,
for the tests of flag handling and error messages (a subprocess costs a TensorFlow import, about 3 s, per call);
`run_console_script` runs the installed console script, which each script keeps one test of.

The tools define overlapping absl flags (--model, --dataset, ...), so only one can be loaded at a time: each
run_tool call forgets the flags and the module of the tool before it.
"""
import contextlib
import dataclasses
import importlib
import io
import shutil
import subprocess
import sys
import tempfile

from absl import flags


@dataclasses.dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


# Tiny settings for the tools' end-to-end tests on digits. No in-training monitor (sample grids, gap/ scalars):
# the pipeline run (conftest.py) turns it on and its tests check what it logs.
TINY = ["--batch_size=16", "--attack_steps=2", "--log_every=1", "--sample_every=0", "--checkpoint_every=2",
        "--eval_examples=48", "--monitor_examples=32", "--z_dim=16"]


def run_console_script(script, *args, check=True, timeout=300):
    """Runs a tool as an installed user does: its console script (robgan-NAME for NAME.py), from a folder outside
    the checkout. (The launch/ shims run in the kill -9, SIGTERM and multi-worker tests.)"""
    tool = shutil.which("robgan-" + script[:-len(".py")].replace("_", "-"))
    proc = subprocess.run([tool, *args], cwd=tempfile.gettempdir(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def non_finite_in_checkpoint(checkpoint):
    """The names of the floating-point tensors in `checkpoint` that hold a NaN or an inf ([] when all are finite)."""
    import numpy as np
    import tensorflow as tf

    reader = tf.train.load_checkpoint(checkpoint)
    floats = [n for n, dtype in reader.get_variable_to_dtype_map().items() if dtype.is_floating]
    assert floats, f"{checkpoint} holds no floating-point tensor"
    return [n for n in floats if not np.isfinite(reader.get_tensor(n)).all()]


def _forget_tools():
    for name, defined in list(flags.FLAGS.flags_by_module_dict().items()):
        if name.startswith("robgan_tf.cli"):
            for flag in list(defined):  # deleting a flag edits this list
                if flag.name in flags.FLAGS:
                    delattr(flags.FLAGS, flag.name)
    for name in [m for m in sys.modules if m.startswith("robgan_tf.cli.") and m != "robgan_tf.cli.common"]:
        del sys.modules[name]


def run_tool_ok(tool, *args):
    """run_tool for a run that must succeed: its Result, or an AssertionError with the end of its output."""
    result = run_tool(tool, *args)
    if result.returncode != 0:
        raise AssertionError(f"{tool} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def run_tool(tool, *args):
    """robgan-TOOL ARGS in this process: (return code, stdout, stderr), the code 0 or the tool's exit status."""
    _forget_tools()
    module = importlib.import_module(f"robgan_tf.cli.{tool.replace('-', '_')}")
    from robgan_tf.cli import common

    argv = [f"robgan-{tool}", *args]
    out, err, code = io.StringIO(), io.StringIO(), 0
    flags.FLAGS.unparse_flags()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            module.main(common.parse_flags(argv))
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    flags.FLAGS.unparse_flags()
    return Result(code, out.getvalue(), err.getvalue())
