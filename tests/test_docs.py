"""The README's YAML reference is the one the code generates, and its commands exist."""

from pathlib import Path

from rnnray.reference import reference

ROOT = Path(__file__).resolve().parent.parent


def test_readme_reference_matches_the_models():
    readme = (ROOT / "README.md").read_text()
    start, end = readme.index("<!-- reference:start -->"), readme.index("<!-- reference:end -->")
    assert readme[start + len("<!-- reference:start -->"):end].strip() == reference().strip(), \
        "README reference is stale: regenerate it with `python -m rnnray.reference`"


def test_readme_set_up_commands_match_ci():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'pip install -e ".[test]" && python -m pytest' in readme
    assert 'pip install -e ".[test]"' in ci and "python -m pytest" in ci
    for f in ("sweeps/probe.yaml", "sweeps/probe-mnist.yaml", "sweeps/study.yaml", "sweeps/quick.yaml", "sweeps/paper.yaml", "cluster/dgx.yaml", "cluster/README.md"):
        assert (ROOT / f).is_file(), f


def test_cluster_config_validates_against_rays_schema():
    import yaml
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = yaml.safe_load((ROOT / "cluster" / "dgx.yaml").read_text())
    validate_config(prepare_config(cfg))
    assert cfg["provider"]["type"] == "local" and "<HEAD_NODE_IP>" in cfg["provider"]["head_ip"]
    assert any("--num-gpus=8" in c for c in cfg["head_start_ray_commands"])


def _run(*args, cwd=None):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=cwd, timeout=600)


def test_the_rnnray_command_runs_each_modules_own_cli(tiny_fl_zoo):
    """``rnnray COMMAND`` (the installed script, and ``python -m rnnray``) is each module's own CLI:
    the same output and exit code; ``--version``; an unknown command is one line and exit 2."""
    import shutil
    import subprocess
    import sys

    import rnnray

    version = _run("rnnray", "--version")
    assert (version.returncode, version.stdout.strip()) == (0, f"rnnray {rnnray.__version__}")
    script = shutil.which("rnnray", path=str(Path(sys.executable).parent))
    assert script, "the `rnnray` script is not installed next to this Python (pyproject [project.scripts])"
    direct = subprocess.run([script, "zoo", "info", tiny_fl_zoo.path], capture_output=True, text=True, timeout=600)
    module = _run("rnnray.zoo", "info", tiny_fl_zoo.path)
    assert direct.returncode == module.returncode == 0 and direct.stdout == module.stdout
    assert "runs" in direct.stdout
    bad = _run("rnnray", "sweeep")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "sweep" in bad.stderr
    listing = _run("rnnray", "--help")
    assert listing.returncode == 0 and all(f"  {c}" in listing.stdout for c in ("sweep", "zoo", "train", "evaluate", "report", "bench"))
    missing = _run("rnnray", "train", "no-such.yaml", "--encoder", "dws")
    assert missing.returncode == 2 and "no-such.yaml" in missing.stderr
