"""The report's list of settings that differ from the paper's is computed from the sweep's config."""

from __future__ import annotations

from pathlib import Path

from rnnray.analysis.departures import PAPER_BUDGET, departures
from rnnray.report.sections import departures_section as render


def departures_section(cfg):
    return render(departures(cfg))
from rnnray.sweep import load_sweep

SWEEPS = Path(__file__).resolve().parent.parent / "sweeps"


def _cfg(name: str, *overrides: str) -> dict:
    return load_sweep(SWEEPS / f"{name}.yaml", list(overrides)).model_dump(mode="json")


def test_the_paper_scale_sweeps_depart_from_nothing():
    assert departures(_cfg("paper")) == []
    assert departures(_cfg("paper-mnist")) == []  # torchvision's digits are the paper's
    assert departures_section(_cfg("paper"))[0].startswith("Settings: the paper's")


def test_probe_lists_every_lever_it_moved():
    rows = {k: (ours, paper) for k, ours, paper in departures(_cfg("probe"))}
    assert rows["budget"] == ("100,000", f"{PAPER_BUDGET:,}")
    assert rows["train.steps"] == ("1500", "100000") and rows["train.lr"] == ("0.001", "0.0001")
    assert rows["train.conditioning"] == ("every_step", "bos")
    assert rows["train.emulator_hidden"] == ("128", "256")
    assert rows["zoo.runs"] == ("432", "1000") and rows["zoo.task_assignment"] == ("balanced", "uniform")
    assert "train.batch_size" not in rows and "train.eval_every" not in rows  # unchanged / not science
    assert "zoo.path" not in rows and "zoo.resources" not in rows


def test_an_override_shows_up_and_a_zoo_path_lists_no_zoo_settings(tmp_path):
    rows = dict((k, ours) for k, ours, _ in departures(_cfg("paper", "train.batch_size=32")))
    assert rows == {"train.batch_size": "32"}
    assert departures(_cfg("probe-mnist"))[0][0] == "budget"
    assert ("zoo.source", "bundled", "torchvision (60,000 training digits)") in departures(_cfg("probe-mnist"))
    cfg = _cfg("paper")
    cfg["zoo"] = str(tmp_path / "an-existing-zoo")  # a zoo built elsewhere: its recipe is not the sweep's
    assert departures(cfg) == []
    section = departures_section({**_cfg("paper"), "budget": 5000})
    assert "| `budget` | 5,000 | 1,200,000 |" in section


def test_conditioning_and_clipping_that_leave_the_papers_are_listed():
    """``every_step`` conditioning and one global clipping norm depart from the paper (SPEC.md 6),
    set under ``train:`` or, for the conditioning, searched; a sweep.json from before the clipping
    setting existed ran with one global norm, and says so."""
    paper = _cfg("paper")
    assert (paper["train"]["conditioning"], paper["train"]["grad_clip_scope"]) == ("bos", "separate")  # the defaults
    rows = {k: (ours, theirs) for k, ours, theirs in
            departures(_cfg("paper", "train.conditioning=every_step", "train.grad_clip_scope=global"))}
    assert rows == {"train.conditioning": ("every_step", "bos"), "train.grad_clip_scope": ("global", "separate")}
    assert departures(_cfg("paper", "search.all.conditioning=[bos, every_step]")) == [
        ("search.all.conditioning", "[bos, every_step]", "bos")]
    assert departures(_cfg("paper", "search.dws.conditioning=every_step")) == [("search.dws.conditioning", "every_step", "bos")]
    assert departures(_cfg("paper", "search.all.conditioning=[bos]")) == []  # searched, but only the paper's
    old = _cfg("paper")
    del old["train"]["grad_clip_scope"], old["train"]["conditioning"]
    assert departures(old) == [("train.grad_clip_scope", "global", "separate")]
    section = departures_section(_cfg("paper", "train.conditioning=every_step"))
    assert "| `train.conditioning` | every_step | bos |" in section
