"""Plug-in encoders from outside the package (issue 30): one named by its import path runs a sweep end
to end beside a built-in; one installed with an entry point is found by its name; a plug-in that
breaks the contract stops every command before Ray starts, in one line naming it, writing nothing."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import PATIENCE, PLUGINS

import rnnray
from rnnray.config import ConfigError
from rnnray.encoders import PluginError, needs_augmentation, search_space
from rnnray.encoders.registry import get_spec
from rnnray.job import run_job
from rnnray.sweep import SweepConfig, encoder_space, load_sweep

PLUGIN = "gated_probe:GatedProbe"  # tests/plugins/gated_probe.py
ROOT = Path(__file__).resolve().parent.parent


def _sweep_file(path: Path, zoo: str, results: Path, encoders: list[str], **extra) -> Path:
    data = {"name": "plug", "results": str(results), "zoo": zoo, "encoders": encoders, "budget": 20000,
            "train": {"steps": 20, "eval_every": 10, "batch_size": 8, "emulator_hidden": 16, "eval_sequences": 2, "lr": 1e-3},
            "tune": {"samples_per_encoder": 1, "scheduler": "none"}, **extra}
    path.write_text(json.dumps(data))  # JSON is YAML
    return path


def test_a_plugin_name_is_checked_without_importing_it_and_imported_when_resolved():
    base = {"zoo": "z", "budget": 20000}
    cfg = SweepConfig.model_validate({**base, "encoders": ["flat", "never_imported_mod:Enc"]})
    assert cfg.encoders[1] == "never_imported_mod:Enc" and "never_imported_mod" not in sys.modules
    with pytest.raises(ValueError, match=r"unknown encoder 'lstm9'; choose from flat, .*package.module:Class"):
        SweepConfig.model_validate({**base, "encoders": ["lstm9"]})
    spec = get_spec(PLUGIN)
    assert (spec.kind, spec.invariant, spec.builtin, spec.reference) == ("functionalist", True, False, PLUGIN)
    assert not needs_augmentation(PLUGIN) and needs_augmentation("flat")  # invariant: no augmentation
    assert search_space(PLUGIN) == {"probes": [1, 2, 4]}


@pytest.fixture(scope="module")
def plugin_sweep(ray_session, tiny_fl_zoo, tmp_path_factory):
    """A tiny sweep of ``flat`` and the plug-in, with a final seed, the step oracle and the
    downstream evaluation, on the session's Ray instance and tiny zoo."""
    tmp = tmp_path_factory.mktemp("plugin")
    f = _sweep_file(tmp / "s.yaml", tiny_fl_zoo.path, tmp / "results", ["flat", PLUGIN], final={"seeds": 1},
                    oracles={"modes": ["step"]}, downstream={"steps": 50, "seeds": [0]})
    cfg = load_sweep(f)
    return cfg, tmp / "results", run_job(cfg, progress=False, verbose=0)


def test_a_plugin_runs_a_sweep_beside_a_builtin_and_comes_back_through_load_best(plugin_sweep):
    cfg, results, sweep_dir = plugin_sweep
    lo, hi = cfg.budget * (1 - cfg.tolerance), cfg.budget * (1 + cfg.tolerance)
    (trial,) = [json.loads(p.read_text()) for p in (sweep_dir / "trials" / PLUGIN).glob("*/trial.json")]
    assert trial["status"] == "finished" and trial["paper_config"] is True and lo <= trial["n_params"] <= hi
    assert trial["config"] == {"lr": 1e-3, "probes": 2}  # trial 0: its own declared preset, its own search knob
    fitted = json.loads(next((sweep_dir / "trials" / PLUGIN).glob("*/train_result.json")).read_text())["hparams"]
    assert fitted["steps"] == 6 and fitted["width"] > 32  # the budget scaled its width, nothing else
    declared = json.loads((sweep_dir / "sweep.json").read_text())["encoders"][PLUGIN]
    assert declared == {"reference": PLUGIN, "kind": "functionalist", "invariant": True, "builtin": False}
    rows = {r["encoder"]: r for r in csv.DictReader(open(sweep_dir / "summary.csv"))}
    assert list(rows) == ["flat", PLUGIN] and float(rows[PLUGIN]["final_val_mean"]) > 0
    final = json.loads((sweep_dir / "final.json").read_text())["encoders"]
    assert set(final) == {"flat", PLUGIN}
    analysis = json.loads((sweep_dir / "analysis.json").read_text())
    assert "step" in analysis["oracles"]["encoders"][PLUGIN]["vs"]  # set against the label oracle
    downstream = json.loads((sweep_dir / "downstream.json").read_text())
    assert set(downstream["encoders"]) == {"flat", PLUGIN} and PLUGIN in downstream["final"]
    verdict = {r["claim"][:3]: r for r in analysis["verdict"] if r["zoo"].startswith("A")}
    # grouped by its declared kind: the functionalist side of claim (a), first in its numbers
    assert verdict["(a)"]["numbers"].startswith(f"{PLUGIN} ") and "; flat " in verdict["(a)"]["numbers"]
    assert f"| {PLUGIN} |" in (sweep_dir / "report.md").read_text()
    enc = rnnray.load_best(PLUGIN, results=results)
    z = enc.embed(torch.randn(5, 13766) * 0.1)
    assert z.shape == (5, 16) and torch.allclose(z.norm(dim=-1), torch.ones(5), atol=1e-5)
    assert type(enc.module).__name__ == "GatedProbe" and lo <= enc.metrics["n_params"] <= hi


# -- an installed plug-in, found by the name its entry point registers ------------------------------
MEAN_PROBE = '''
import torch
from torch import nn
from rnnray.encoders import encoder


@encoder(kind="mechanistic", defaults={"width": 16, "depth": 1}, space={"depth": [1, 2]})
class MeanProbe(nn.Module):
    """Every weight tensor's row means through an MLP: the rows follow the hidden neurons' order, so it
    is not invariant and trains with augmentation."""

    def __init__(self, layout, zoo_kind, width, depth):
        super().__init__()
        self.layout = layout
        layers = [nn.Linear(sum(s[0] for s in layout.shapes.values()), width), nn.GELU()]
        for _ in range(depth - 1):
            layers += [nn.Linear(width, width), nn.GELU()]
        self.net = nn.Sequential(*layers, nn.Linear(width, 16))

    def forward(self, flat):
        b = flat.shape[0]
        rows = [t.reshape(b, t.shape[1], -1).mean(-1) for t in self.layout.split(flat).values()]
        return self.net(torch.cat(rows, dim=-1))
'''


def _install(site: Path, dist: str, entry_points: str) -> None:
    """A throwaway installed package: its module and a dist-info folder with a real entry_points.txt,
    which importlib.metadata reads once ``site`` is on sys.path (or PYTHONPATH)."""
    site.mkdir(exist_ok=True)
    (site / "mean_probe_plugin.py").write_text(MEAN_PROBE)
    info = site / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[rnnray.encoders]\n{entry_points}\n")


def test_an_installed_plugin_is_found_by_its_entry_point_name(tiny_fl_zoo, tmp_path, monkeypatch):
    from rnnray.config import TrainConfig
    from rnnray.encoders.catalog import registered_names
    from rnnray.sweep.plugins import check_plugins
    from rnnray.train import train_local

    _install(tmp_path / "site", "mean-probe", "meanprobe = mean_probe_plugin:MeanProbe")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert "meanprobe" in registered_names()
    spec = get_spec("meanprobe")
    assert (spec.reference, spec.kind, spec.builtin) == ("mean_probe_plugin:MeanProbe", "mechanistic", False)
    assert needs_augmentation("meanprobe")  # not declared invariant: trained with permuted hidden neurons
    cfg = load_sweep(_sweep_file(tmp_path / "s.yaml", tiny_fl_zoo.path, tmp_path / "r", ["dws", "meanprobe"]))
    assert encoder_space(cfg, "meanprobe", "formal_languages")["depth"] == [1, 2]
    check_plugins(cfg)  # keeps the contract on the zoo's own RNNs
    with pytest.raises(ConfigError, match=r"unknown encoder 'meanprobx'.*or an installed plug-in: .*meanprobe"):
        load_sweep(tmp_path / "s.yaml", ["encoders=[meanprobx]"])
    res = train_local("meanprobe", TrainConfig(zoo=tiny_fl_zoo.path, budget=20000, steps=4, eval_every=4, batch_size=8,
                                               emulator_hidden=16, eval_sequences=2, storage_path=str(tmp_path / "t")))
    assert res.encoder == "meanprobe" and abs(res.n_params - 20000) <= 1000 and res.hparams["depth"] == 1


def test_an_entry_point_named_like_a_builtin_or_twice_is_refused(tmp_path, monkeypatch):
    site = tmp_path / "site"
    _install(site, "clash-pkg", "dws = mean_probe_plugin:MeanProbe")
    monkeypatch.syspath_prepend(str(site))
    f = _sweep_file(tmp_path / "s.yaml", "z", tmp_path / "r", ["flat", "dws"])
    with pytest.raises(ConfigError, match=r"encoders: .*encoder 'dws': the entry point 'dws' of package 'clash-pkg' .*clashes "
                                          r"with the built-in encoder"):
        load_sweep(f)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ["PYTHONPATH"]])}
    r = subprocess.run([sys.executable, "-m", "rnnray.sweep", str(f)], capture_output=True, text=True, env=env,
                       cwd=tmp_path, timeout=PATIENCE)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "'dws'" in r.stderr, r.stderr
    assert not (tmp_path / "r").exists()
    (site / "clash_pkg-0.1.dist-info" / "entry_points.txt").write_text("[rnnray.encoders]\ntwin = mean_probe_plugin:MeanProbe\n")
    _install(tmp_path / "site2", "other-pkg", "twin = other_module:Other")
    monkeypatch.syspath_prepend(str(tmp_path / "site2"))
    with pytest.raises(PluginError, match="'twin': registered by more than one package"):
        get_spec("twin")


# -- a bad plug-in: one line naming it, exit code 2, before Ray starts, nothing written ---------------
BAD = [
    ("no_such_module_xyz:Enc", "module 'no_such_module_xyz' does not import (ModuleNotFoundError"),
    ("bad_encoders:Missing", "module 'bad_encoders' has no 'Missing'"),
    ("bad_encoders:NotAnEncoder", "is not an encoder (a class with an rnnray_encoder declaration"),
    ("bad_encoders:UnknownKind", "declaration: kind 'cognitive' is none of mechanistic, functionalist"),
    ("rnnray.encoders.dws:DWSEncoder", "is the built-in encoder 'dws'; name it so"),
    ("bad_encoders:RejectsPreset", "its paper preset {'width': 4, 'depth': 0} is rejected by its constructor "
                                   "(ValueError: depth must be at least 1, got 0)"),
    ("bad_encoders:FixedSize", "budget: encoder 'bad_encoders:FixedSize' cannot be sized to 20000 parameters"),
    ("bad_encoders:WrongShape", "returns (4, 8), not (4, 16)"),
    ("bad_encoders:MakesNaN", "returns non-finite values (NaN or inf)"),
    ("bad_encoders:FalselyInvariant", "declares invariant=True, but permuting the hidden neurons of 4 of the zoo's RNNs"),
]


@pytest.mark.parametrize("name,needle", BAD, ids=[b[0].split(":")[-1] for b in BAD])
def test_a_bad_plugin_is_one_line_exit_2_before_ray_and_writes_nothing(name, needle, tiny_fl_zoo, tmp_path, capsys):
    import ray

    from rnnray import job

    f = _sweep_file(tmp_path / "s.yaml", tiny_fl_zoo.path, tmp_path / "r", ["flat", name])
    started = ray.is_initialized()
    with pytest.raises(SystemExit) as e:
        job.main([str(f)])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("error: ") and name in err and needle in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"] and ray.is_initialized() == started


@pytest.mark.parametrize("name", ["no_such_module_xyz:Enc", "bad_encoders:FalselyInvariant"])
def test_a_bad_plugin_through_the_commands_own_process(name, tiny_fl_zoo, tmp_path):
    """The same through ``python -m rnnray.sweep`` and ``python -m rnnray.train``: at load time (it
    does not import) and at the check on the zoo's RNNs (it is not invariant)."""
    f = _sweep_file(tmp_path / "s.yaml", tiny_fl_zoo.path, tmp_path / "r", ["flat", name])
    t = tmp_path / "t.yaml"
    t.write_text(json.dumps({"zoo": tiny_fl_zoo.path, "budget": 20000, "storage_path": str(tmp_path / "runs")}))
    assert PLUGINS in os.environ["PYTHONPATH"]  # the subprocesses import the plug-ins as the sweep's workers would
    for cmd in (["rnnray.sweep", str(f)], ["rnnray.train", str(t), "--encoder", name]):
        r = subprocess.run([sys.executable, "-m", *cmd], capture_output=True, text=True, cwd=tmp_path, timeout=PATIENCE)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, (cmd, r.stderr)
        assert name in r.stderr and "Traceback" not in r.stderr and "Ray" not in r.stdout + r.stderr, (cmd, r.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml", "t.yaml"]


def test_the_readme_plugin_keeps_the_contract(tmp_path, monkeypatch):
    """The README's complete plug-in, as printed, passes every check a sweep makes before Ray starts."""
    from rnnray.encoders.checks import check_encoder, init_like
    from rnnray.weights import FORMAL_LANGUAGES

    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Your own encoder"):]
    code = section[section.index("```python\n") + len("```python\n"):section.index("```\n", section.index("```python"))]
    assert code.startswith("# mylab/encoders.py") and len(code.strip().splitlines()) <= 25
    (tmp_path / "mylab").mkdir()
    (tmp_path / "mylab" / "__init__.py").write_text("")
    (tmp_path / "mylab" / "encoders.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    hp = check_encoder("mylab.encoders:GatedProbe", FORMAL_LANGUAGES, "formal_languages", init_like(FORMAL_LANGUAGES, 4),
                       budget=20000)
    assert hp["probes"] == 2 and get_spec("mylab.encoders:GatedProbe").kind == "functionalist"


def test_the_verdict_groups_plugins_by_their_declared_kind():
    """A plug-in joins the group of the kind it declares: as recorded with the results, else from its
    class; claim (c) sets interactive probing against every other encoder, plug-ins included."""
    from rnnray.analysis.verdict import HOLDS, EncoderSeeds, group, verdict_rows

    low, high = [0.020, 0.021, 0.019], [0.045, 0.046, 0.044]
    study = {"interactive": EncoderSeeds(val_loss=[0.010, 0.011, 0.009]), PLUGIN: EncoderSeeds(val_loss=low),
             "dws": EncoderSeeds(val_loss=high), "elsewhere.mod:Reader": EncoderSeeds(val_loss=high, kind="mechanistic")}
    assert group(study, "functionalist") == ["interactive", PLUGIN]
    assert group(study, "mechanistic") == ["dws", "elsewhere.mod:Reader"]  # its kind as recorded: never imported
    rows = {r.claim[:3]: r for r in verdict_rows({"formal_languages": study}) if r.zoo.startswith("A")}
    assert rows["(a)"].verdict == HOLDS and f"; {PLUGIN} 0.0200" in rows["(a)"].numbers
    assert "elsewhere.mod:Reader 0.0450" in rows["(a)"].numbers
    assert rows["(c)"].verdict == HOLDS and f"{PLUGIN} 0.0200" in rows["(c)"].numbers
