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
    for f in ("sweeps/probe.yaml", "sweeps/quick.yaml", "sweeps/paper.yaml", "cluster/dgx.yaml", "cluster/README.md"):
        assert (ROOT / f).is_file(), f


def test_cluster_config_validates_against_rays_schema():
    import yaml
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = yaml.safe_load((ROOT / "cluster" / "dgx.yaml").read_text())
    validate_config(prepare_config(cfg))
    assert cfg["provider"]["type"] == "local" and "<HEAD_NODE_IP>" in cfg["provider"]["head_ip"]
    assert any("--num-gpus=8" in c for c in cfg["head_start_ray_commands"])
