"""A wheel install is a complete rnnray: the shipped sweep and config files resolve without a checkout."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHECK = """
import sys
from pathlib import Path
import rnnray
from rnnray.config import load_train_config, load_zoo_config
from rnnray.job import default_sweep_file
from rnnray.paths import shipped_file
from rnnray.sweep import load_sweep

home = Path(rnnray.__file__).resolve().parent
assert Path(sys.prefix).resolve() in home.parents, home  # the wheel's copy, not the checkout
assert Path(default_sweep_file()).resolve() == home / "sweeps" / "probe.yaml"
assert shipped_file("probe.yaml").resolve() == home / "sweeps" / "probe.yaml"  # a bare name, too
shipped = sorted(p.stem for p in (home / "sweeps").glob("*.yaml"))
assert shipped == sorted(CHECKOUT), shipped  # every sweep file of the checkout is in the wheel
for name in shipped:
    load_sweep(shipped_file(f"sweeps/{name}.yaml"))
load_train_config(shipped_file("configs/train-tiny.yaml"))
load_zoo_config(shipped_file("configs/zoo-tiny.yaml"))
assert (home / "rnn" / "lstm_kernels.c").is_file() and any((home / "data" / "mnist").iterdir())
print("ok", home)
"""


def test_a_wheel_install_in_a_fresh_venv_finds_its_files(tmp_path):
    """Build the wheel, install it (without dependencies: they come from this environment) into a new
    virtual environment, and from a directory with no checkout load every shipped sweep and config,
    the default sweep of ``python -m rnnray.sweep`` among them, and run the ``rnnray`` script."""
    import shutil

    src = tmp_path / "src"  # a copy, so the build writes nothing into the checkout
    anywhere = shutil.ignore_patterns(".venv", ".git", "*.egg-info", "__pycache__", ".pytest_cache")

    def ignore(folder, names):  # the checkout's own outputs, not the package's results/ subpackage
        top = {"results", "zoos", "build"} if Path(folder) == ROOT else set()
        return set(anywhere(folder, names)) | (top & set(names))

    shutil.copytree(ROOT, src, symlinks=True, ignore=ignore)
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels),
                    str(src)], check=True, timeout=900, capture_output=True)
    wheel = next(wheels.glob("rnnray-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=900, capture_output=True)
    py = venv / "bin" / "python"
    subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True, timeout=900,
                   capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": sysconfig.get_paths()["purelib"]}  # torch, ray, pydantic ... from here
    checkout = sorted(p.stem for p in (ROOT / "rnnray" / "sweeps").glob("*.yaml"))
    assert "probe" in checkout and "study" in checkout
    out = subprocess.run([py, "-c", f"CHECKOUT = {checkout!r}\n" + CHECK], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("ok") and str(venv.resolve()) in out.stdout
    version = subprocess.run([venv / "bin" / "rnnray", "--version"], cwd=elsewhere, env=env, capture_output=True,
                             text=True, timeout=900)
    assert version.returncode == 0 and version.stdout.startswith("rnnray "), version.stderr[-2000:]
    helped = subprocess.run([venv / "bin" / "rnnray", "sweep", "--help"], cwd=elsewhere, env=env, capture_output=True,
                            text=True, timeout=900)
    assert helped.returncode == 0 and "--resume" in helped.stdout, helped.stderr[-2000:]
