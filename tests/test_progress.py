"""The job's plan and progress line, on a clock the test moves (no waiting)."""

from __future__ import annotations

import pytest

from rnnray.bench.estimate import plan_runs
from rnnray.sweep.progress import JobProgress, reporting, run_done
from rnnray.sweep.settings import load_sweep


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_remaining_time_follows_the_plan_scaled_by_the_work_done():
    clock, lines = Clock(), []
    p = JobProgress({"zoo": 1, "search": 4, "final": 2}, {"zoo": 100.0, "search": 400.0, "final": 200.0},
                    out=lines.append, clock=clock)
    assert p.remaining() == pytest.approx(700.0)
    clock.t = 200.0  # the zoo took twice its estimate: the rest is expected to as well
    p.phase_done("zoo")
    assert p.remaining() == pytest.approx(2 * 600.0)
    clock.t = 400.0
    p.run_done("search")  # 1 of 4 search runs: 200 s of plan done in 400 s
    assert p.remaining() == pytest.approx(2 * 500.0)
    assert lines[-1] == "[job] search: 1/4 runs; all phases 2/7; elapsed 6m40s, estimated remaining 16m40s"


def test_the_progress_is_reported_only_while_installed():
    lines = []
    with reporting(JobProgress({"oracles": 2}, {"oracles": 10.0}, out=lines.append)):
        run_done("oracles")
    run_done("oracles")  # outside: nobody listens
    assert len(lines) == 1 and lines[0].startswith("[job] oracles: 1/2 runs")


def test_the_plan_counts_every_run_of_the_main_job():
    cfg = load_sweep("sweeps/probe.yaml")
    runs = plan_runs(cfg)
    n = len(cfg.encoders)
    assert runs["search"] == n * cfg.tune.samples_per_encoder
    configs = 2 if cfg.final.paper_preset else 1  # best, and the paper preset when it is retrained too
    assert runs["final"] == n * configs * cfg.final.seeds
    both = load_sweep("sweeps/study.yaml", ["final.paper_preset=true"])  # the best and the paper preset, 4 seeds each
    assert plan_runs(both)["final"] == len(both.encoders) * 2 * 4
    assert runs["oracles"] == len(cfg.oracles.modes) * cfg.final.seeds


def test_run_start_up_follows_the_two_measured_machines():
    from rnnray.bench.estimate import STARTUP_AT, run_startup_seconds

    for rate, seconds in STARTUP_AT:
        assert run_startup_seconds(rate) == pytest.approx(seconds)
    assert run_startup_seconds(250.0) < run_startup_seconds(154.0)
