"""The package as pip installs it: metadata, console scripts, the TensorFlow extras, one version number."""
import importlib
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys

import keras

import robgan_tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = {"robgan-train", "robgan-finetune", "robgan-evaluate", "robgan-export", "robgan-sample", "robgan-pipeline",
           "robgan-benchmark", "robgan-benchmark-quality", "robgan-benchmark-autoattack", "robgan-train-reference"}


def test_one_version_number():
    assert importlib.metadata.version("robgan_tf") == robgan_tf.__version__
    citation = open(os.path.join(ROOT, "CITATION.cff")).read()
    assert f'version: "{robgan_tf.__version__}"' in citation


def test_console_scripts_are_installed_and_run_the_cli_modules(tmp_path):
    eps = {e.name: e for e in importlib.metadata.entry_points(group="console_scripts") if e.name.startswith("robgan-")}
    assert set(eps) == SCRIPTS
    for name, ep in eps.items():
        module, _, attr = ep.value.partition(":")
        assert module == "robgan_tf.cli." + name[len("robgan-"):].replace("-", "_") and attr == "run"
        assert shutil.which(name), f"{name} is not on PATH"
        shim = open(os.path.join(ROOT, "launch", module.rsplit(".", 1)[1] + ".py")).read()
        assert f"from {module} import run" in shim  # python launch/NAME.py runs the same code
    # --help is a success (absl itself exits 1), from a folder outside the checkout: every tool runs through
    # common.run_tool, whose parser makes --help exit 0 and a bad flag a one-line error: (tests/test_launch.py)
    proc = subprocess.run([shutil.which("robgan-sample"), "--help"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert proc.returncode == 0 and "--model" in proc.stdout and "--out" in proc.stdout


def test_importing_without_tensorflow_names_the_two_extras():
    script = (
        "import importlib.abc, sys\n"
        "class NoTF(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] == 'tensorflow':\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, NoTF())\n"
        "import robgan_tf\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: robgan_tf needs TensorFlow") and "robgan_tf[cpu]" in last
    assert "robgan_tf[gpu]" in last


def test_the_tested_keras_is_inside_the_declared_bound():
    pyproject = open(os.path.join(ROOT, "pyproject.toml")).read()
    low, high = re.search(r'"keras>=([\d.]+),<([\d.]+)"', pyproject).groups()
    version = tuple(int(p) for p in keras.__version__.split(".")[:2])
    assert tuple(int(p) for p in low.split(".")[:2]) <= version < tuple(int(p) for p in high.split(".")[:2])


def test_top_level_names_resolve():
    for name in robgan_tf.__all__:
        assert getattr(robgan_tf, name) is not None
    assert robgan_tf.load_generator is importlib.import_module("robgan_tf.loading").load_generator


def test_every_command_in_readme_names_a_real_tool_with_real_flags_and_files():
    """README's commands parse: each robgan-* tool exists, every flag is one of its flags, a --flagfile exists and
    holds valid flags (absl reads it). What each command does is tested with the tool (tests/test_launch.py)."""
    import shlex

    from absl import flags

    from tools import _forget_tools

    text = open(os.path.join(ROOT, "README.md")).read().replace("\\\n", " ")
    commands = [line.split("#")[0].strip() for line in text.splitlines()
                if line.startswith("    robgan-")]
    assert len(commands) >= 8
    for command in commands:
        tool, *args = shlex.split(command)
        assert tool in SCRIPTS, command
        _forget_tools()
        importlib.import_module("robgan_tf.cli." + tool[len("robgan-"):].replace("-", "_"))
        cwd = os.getcwd()
        try:
            os.chdir(ROOT)  # flagfiles are named relative to the checkout
            flags.FLAGS.unparse_flags()
            flags.FLAGS([tool, *args])  # raises on an unknown flag, a bad value or a missing flagfile
        finally:
            flags.FLAGS.unparse_flags()
            os.chdir(cwd)
