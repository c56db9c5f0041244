"""The main job: sweep files, the Tune + Optuna sweep end to end, the results store and load_best."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import PATIENCE

import rnnray
from rnnray.config import ConfigError
from rnnray.encoders import ENCODERS
from rnnray.encoders.registry import PAPER_PARAMS
from rnnray.results import ResultsError, SweepFolder
from rnnray.job import run_job
from rnnray.sweep import encoder_space, load_sweep

ROOT = Path(__file__).resolve().parent.parent
SWEEPS = ROOT / "sweeps"


SHIPPED = ["quick", "probe", "probe-mnist", "study", "study-mnist", "paper", "paper-mnist", "conditioning"]


def test_every_shipped_sweep_is_validated_here():
    assert sorted(p.stem for p in SWEEPS.glob("*.yaml")) == sorted(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_sweep_files_parse_and_validate(name):
    cfg = load_sweep(SWEEPS / f"{name}.yaml")
    assert cfg.encoders and cfg.budget > 0
    kind = cfg.zoo if isinstance(cfg.zoo, str) else cfg.zoo.kind
    for enc in cfg.encoders:
        tc = cfg.train_config(enc, {}, None, "/tmp/x", "t")
        assert tc.zoo == cfg.zoo_path and tc.budget == cfg.budget and tc.preset == "paper"
        space = encoder_space(cfg, enc, kind)
        assert "lr" in space
    if name == "quick":
        assert set(cfg.encoders) == set(ENCODERS)
    if name == "probe-mnist":  # the zoo-B study: both schools, seeds after the search
        assert {"noninteractive", "interactive", "dws", "flat"} <= set(cfg.encoders) and cfg.zoo.kind == "mnist"
        assert cfg.final.seeds >= 3 and cfg.final.paper_preset and cfg.tune.samples_per_encoder >= 3
    if name in ("study", "study-mnist"):  # every built-in at the main job's setting, seeds after the search, both oracles
        assert set(cfg.encoders) == set(ENCODERS)
        assert cfg.zoo.kind == ("mnist" if name == "study-mnist" else "formal_languages")
        assert cfg.train.conditioning == "every_step" and cfg.train.steps >= 1500
        assert cfg.final.seeds >= 4 and cfg.tune.samples_per_encoder >= 2 and set(cfg.oracles.modes) == {"step", "task+step"}
    if name == "probe":  # the main job: a functionalist and a mechanistic encoder read against the step oracle, paired
        assert {"noninteractive", "flat"} <= set(cfg.encoders) and cfg.zoo.kind == "formal_languages"
        assert cfg.train.conditioning == "every_step" and cfg.train.steps >= 1500
        assert cfg.final.seeds >= 3 and "step" in cfg.oracles.modes and cfg.tune.scheduler == "asha"
    if name == "conditioning":  # the four main-job encoders on the main job's zoo, both oracles, seeds that pair
        assert cfg.encoders == ["noninteractive", "interactive", "dws", "flat"] and cfg.train.steps == 1500
        assert cfg.final.seeds >= 3 and set(cfg.oracles.modes) == {"step", "task+step"}
        assert cfg.zoo.model_dump(exclude={"resources"}) == load_sweep(SWEEPS / "probe.yaml").zoo.model_dump(exclude={"resources"})
    if name in ("probe", "study"):  # most of the 216 tasks in the zoo, each equally often
        assert cfg.zoo.runs >= 216 and cfg.zoo.task_assignment == "balanced"
    if name in ("probe-mnist", "study-mnist"):  # the bundled digits: no download on a fresh clone
        assert cfg.zoo.source == "bundled"
    if name == "study-mnist":  # study.yaml's design on zoo B, on probe-mnist's zoo (one build serves both)
        study = load_sweep(SWEEPS / "study.yaml")
        assert cfg.zoo == load_sweep(SWEEPS / "probe-mnist.yaml").zoo
        assert (cfg.train, cfg.tune, cfg.final, cfg.oracles, cfg.budget) == (study.train, study.tune, study.final, study.oracles, study.budget)
    if name in ("paper", "paper-mnist"):
        assert cfg.zoo.kind == ("mnist" if name == "paper-mnist" else "formal_languages")
        paper_six = {n for n in ENCODERS if PAPER_PARAMS.get(n) is not None}  # not dlpg: the paper lacks it
        assert cfg.zoo.runs == 1000 and cfg.budget == 1_200_000 and set(cfg.encoders) == paper_six
        assert cfg.train.steps == 100_000 and cfg.zoo.steps == 20_000
        assert cfg.final.seeds >= 3 and cfg.final.paper_preset
        assert cfg.resources.gpus_per_worker > 0


@pytest.mark.parametrize(
    "override,needle",
    [
        ("encoders=[flat, lstm9]", "unknown encoder 'lstm9'"),
        ("tune.samples_per_encodr=3", "tune.samples_per_encodr: unknown key"),
        ("train.zoo=elsewhere", "set by the sweep itself"),
        ("train.stepz=5", "stepz: unknown key"),
        ("budget=-5", "budget"),
        ("search.dws.heads=[2]", "search.dws.heads: not a searchable"),
        ("search.interactive.depth=[2]", "search.interactive: not one of the sweep's encoders"),
        ("presets.dws=papr", "presets.dws: unknown preset 'papr'"),
        ("presets.stats=paper", "presets.stats: not one of the sweep's encoders"),
        ("train.preset=paper", "set by the sweep itself"),
        # an inline zoo: a typo inside it is named, not reported as "zoo.str: Input should be a valid string"
        ("zoo.runz=3", "quick.yaml: zoo.runz: unknown key"),
        ("zoo.kind=cats", "quick.yaml: zoo: a zoo config needs kind: formal_languages or mnist"),
        ("zoo=5", "quick.yaml: zoo: Input should be a valid string"),
        # no float anywhere is NaN or +-inf, and the line says which
        ("zoo.weight_decay=.inf", "quick.yaml: zoo.weight_decay: must be finite, got inf"),
        ("zoo.lr_points=[[0, 0.01], [100, .nan]]", "quick.yaml: zoo.lr_points.1.1: must be finite, got nan"),
        ("tolerance=.nan", "quick.yaml: tolerance: must be finite, got nan"),
        ("train.lr=-.inf", "quick.yaml: train.lr: must be finite, got -inf"),
        ("train.grad_clip=.inf", "quick.yaml: train.grad_clip: must be finite, got inf"),
        ("train.weight_decay=inf", "quick.yaml: train.weight_decay: must be finite, got inf"),
        ("tune.reduction_factor=.inf", "quick.yaml: tune.reduction_factor: must be finite, got inf"),
        ("resources.cpus_per_worker=.inf", "quick.yaml: resources.cpus_per_worker: must be finite, got inf"),
        ("search.all.lr={low: .nan, high: 0.1, log: true}", "quick.yaml: search.all.lr.low: must be finite, got nan"),
        ("search.flat.lr=[0.001, .inf]", "quick.yaml: search.flat.lr.1: must be finite, got inf"),
        ("search.flat.lr=.nan", "quick.yaml: search.flat.lr: must be finite, got nan"),
    ],
)
def test_bad_sweep_values_are_named(override, needle):
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[").replace("(", r"\(")):
        load_sweep(SWEEPS / "quick.yaml", [override, "encoders=[flat, dws]"] if "encoders" not in override else [override])


def _cli(*args, cwd=ROOT):
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    return subprocess.run([sys.executable, "-m", "rnnray.sweep", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=PATIENCE)


def test_cli_bad_input_exit_2(tmp_path):
    r = _cli(str(SWEEPS / "quick.yaml"), "--set", "encoders=[flat, nope]")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "nope" in r.stderr
    r = _cli(str(tmp_path / "missing.yaml"))
    assert r.returncode == 2 and "missing.yaml" in r.stderr
    r = _cli(str(SWEEPS / "quick.yaml"), "--set", f"zoo={tmp_path / 'no-zoo'}", "--set", f"results={tmp_path / 'r'}")
    assert r.returncode == 2 and "no-zoo" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "r").exists()


def test_a_zoo_to_build_beyond_the_disk_is_refused_before_ray(tmp_path, monkeypatch, capsys):
    """The sweep checks an inline zoo with the zoo build's own check (rnnray.zoo.preflight), before
    Ray starts. The free disk is the one limit given here: this machine's would need a zoo of TBs."""
    import ray

    from rnnray import job
    from rnnray.zoo import preflight

    monkeypatch.setattr(preflight, "free_disk", lambda path: (10**6, tmp_path))
    started = ray.is_initialized()
    with pytest.raises(SystemExit) as e:
        job.main([str(SWEEPS / "quick.yaml"), "--set", f"zoo.path={tmp_path / 'zoo'}", "--set", f"results={tmp_path / 'r'}"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("error: zoo.runs: the zoo would take about") and f"more than the 0.954 MiB free at {tmp_path}" in err, err
    assert list(tmp_path.iterdir()) == [] and ray.is_initialized() == started


def test_infeasible_budget_fails_before_any_trial(ray_session, tiny_fl_zoo, tmp_path):
    cfg = load_sweep(SWEEPS / "quick.yaml", [f"zoo={tiny_fl_zoo.path}", "budget=50", f"results={tmp_path}"])
    from rnnray.encoders import InfeasibleBudget

    with pytest.raises(InfeasibleBudget, match="flat"):
        run_job(cfg, progress=False, verbose=0)
    assert not list(tmp_path.glob("quick-*"))


def test_the_job_builds_its_zoo_before_planning_the_oracles(ray_session, tmp_path):
    """A fresh clone's main job: the zoo is a recipe not yet built, and the label oracles run in the
    one queue. Their plan reads the zoo, so it must be made after the build (it was made before, and
    the job stopped at once with "no zoo here")."""
    from conftest import TINY_FL

    zoo = {**TINY_FL, "path": str(tmp_path / "zoos" / "fresh")}
    cfg = load_sweep(SWEEPS / "quick.yaml", [f"results={tmp_path / 'results'}", "encoders=[flat]", "train.steps=20",
                                              "final.seeds=1", "final.paper_preset=false", "oracles.modes=[step]",
                                              "downstream.steps=20"])
    cfg = cfg.model_copy(update={"zoo": type(cfg.zoo).model_validate(zoo)})
    assert cfg.tune.schedule == "one_queue" and not (tmp_path / "zoos").exists()
    sweep_dir = run_job(cfg, progress=False, verbose=0)
    oracles = json.loads((sweep_dir / "oracles.json").read_text())
    assert (tmp_path / "zoos" / "fresh" / "manifest.json").is_file()
    assert oracles["zoo"] == str((tmp_path / "zoos" / "fresh").resolve()) and len(oracles["modes"]["step"]["runs"]) == 1


def test_load_best_on_an_empty_store(tmp_path):
    with pytest.raises(ResultsError, match="no sweeps here yet"):
        rnnray.load_best("dws", results=tmp_path)


@pytest.fixture(scope="module")
def quick_sweep(ray_session, tiny_fl_zoo, tmp_path_factory):
    """sweeps/quick.yaml end to end on the shared local Ray instance (zoo: the session's tiny one)."""
    results = tmp_path_factory.mktemp("results")
    cfg = load_sweep(SWEEPS / "quick.yaml", [f"zoo={tiny_fl_zoo.path}", f"results={results}", "train.steps=40"])
    sweep_dir = run_job(cfg, progress=False, verbose=0)
    return cfg, results, sweep_dir


def test_quick_sweep_end_to_end_and_load_best(quick_sweep):
    cfg, results, sweep_dir = quick_sweep
    assert (results / "LATEST").read_text().strip() == sweep_dir.name
    best = json.loads((sweep_dir / "best.json").read_text())
    assert set(best) == set(ENCODERS)
    rows = list(csv.DictReader(open(sweep_dir / "summary.csv")))
    assert [r["encoder"] for r in rows] == list(cfg.encoders)
    assert all(float(r["best_val_loss"]) > 0 for r in rows)
    md = (sweep_dir / "summary.md").read_text()
    assert all(f"| {e} |" in md for e in ENCODERS)
    lo, hi = cfg.budget * (1 - cfg.tolerance), cfg.budget * (1 + cfg.tolerance)
    trials = list((sweep_dir / "trials").glob("*/*/trial.json"))
    assert len(trials) == len(ENCODERS) * cfg.tune.samples_per_encoder
    for f in trials:
        t = json.loads(f.read_text())
        assert lo <= t["n_params"] <= hi, (t["encoder"], t["n_params"])
        assert t["history"] and Path(t["checkpoint"]).is_dir()
    flat = torch.randn(7, 13766) * 0.1
    for name in ENCODERS:
        enc = rnnray.load_best(name, results=results)
        z = enc.embed(flat)
        assert z.shape == (7, 16) and torch.allclose(z.norm(dim=-1), torch.ones(7), atol=1e-5)
        assert lo <= enc.metrics["n_params"] <= hi and enc.config["lr"] > 0
        assert isinstance(enc.module, torch.nn.Module)
    # the sweep ends with the downstream evaluation and the report
    ds = json.loads((sweep_dir / "downstream.json").read_text())
    assert set(ds["encoders"]) == set(ENCODERS) and {"random", "supervised"} <= set(ds["baselines"])
    assert "ds_ood_task_exact_acc" in rows[0] or "ds_ood_task_exact_acc" in open(sweep_dir / "summary.csv").readline()
    assert (sweep_dir / "report.md").is_file() and list((sweep_dir / "figures").glob("*.png"))
    # the same, found through the sweep folder and the sweep name
    assert rnnray.load_best("dws", results=sweep_dir).metrics == rnnray.load_best("dws", results=results).metrics


def test_trial_0_is_the_paper_preset(quick_sweep):
    """Every encoder's first trial is its paper preset scaled to the budget, and says so."""
    from rnnray.encoders.registry import resolve_hparams
    from rnnray.weights import FORMAL_LANGUAGES

    cfg, results, sweep_dir = quick_sweep
    md = (sweep_dir / "summary.md").read_text()
    assert "paper preset (trial 0) val loss" in md and "0 (the best is trial 0)" in md
    assert "paper preset (trial 0): val loss" in (sweep_dir / "report.md").read_text()
    for enc in ENCODERS:  # one trial each (samples_per_encoder: 1): trial 0
        (rec,) = [json.loads(p.read_text()) for p in (sweep_dir / "trials" / enc).glob("*/trial.json")]
        assert rec["paper_config"] is True, enc
        preset = resolve_hparams(enc, FORMAL_LANGUAGES, "formal_languages")
        assert rec["config"]["lr"] == 1e-4  # the paper's (quick.yaml leaves train.lr at its default)
        assert all(rec["config"][k] == preset[k] for k in rec["config"] if k != "lr"), (enc, rec["config"])
        tc = json.loads(next((sweep_dir / "trials" / enc).glob("*/train_result.json")).read_text())
        fitted = tc["hparams"]  # the preset, its width (and at this tiny budget its read-out) fitted
        assert all(fitted[k] == preset[k] for k in preset if k not in ("width", "head_width", "head_depth")), enc
        assert json.loads((sweep_dir / "best.json").read_text())[enc]["paper_config"] is True


def test_each_encoders_optuna_study_is_kept_in_the_sweep_folder(quick_sweep):
    """The Optuna journal in the sweep folder holds one study per encoder: its trial 0 is the paper
    point of trial.json and its value the trial's last reported validation loss; the report shows it."""
    from rnnray.results.folder import SweepFolder
    from rnnray.sweep.studies import load_study

    cfg, results, sweep_dir = quick_sweep
    folder = SweepFolder(sweep_dir)
    assert folder.optuna_journal.is_file()
    for enc in ENCODERS:
        study = load_study(folder, enc)
        assert study is not None and len(study.trials) == cfg.tune.samples_per_encoder, enc
        (rec,) = [json.loads(p.read_text()) for p in folder.trial_records(enc)]
        assert study.trials[0].params == rec["config"] and study.trials[0].state.is_finished()
        assert study.trials[0].value == pytest.approx(rec["history"][-1]["val_loss"])
    report = folder.report_md.read_text()
    assert "## Hyperparameter search" in report and "not enough finished trials for importances (1 of 4)" in report
    assert (folder.figures / "search_history.png").is_file()


def test_study_summary_and_a_searcher_restored_from_its_checkpoint(tmp_path):
    """Tune's Optuna searcher with the sweep's journal: trials told before a save and after a
    restore land in the same study; with enough finished trials the importances are computed."""
    import functools

    import optuna
    from ray.tune.search.optuna import OptunaSearch

    from rnnray.config import Range
    from rnnray.results.folder import SweepFolder
    from rnnray.sweep.space import define_by_run
    from rnnray.sweep.studies import journal_storage, load_study, study_summary

    folder = SweepFolder(tmp_path)
    space = functools.partial(define_by_run, space={"lr": Range(low=1e-4, high=1e-2, log=True), "depth": [1, 2, 3]})
    first = OptunaSearch(space=space, metric="val_loss", mode="min", points_to_evaluate=[{"lr": 1e-3, "depth": 2}],
                         sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=1), storage=journal_storage(folder),
                         study_name="dws")
    for i in range(3):
        assert first.suggest(f"t{i}") is not None
        first.on_trial_complete(f"t{i}", {"val_loss": 1.0 / (i + 1)})
    short = study_summary(load_study(folder, "dws"))
    assert short["importances"] is None and "3 of 4" in short["importance_note"]
    first.save(str(tmp_path / "searcher.pkl"))
    again = OptunaSearch(space=space, metric="val_loss", mode="min")
    again.restore(str(tmp_path / "searcher.pkl"))
    for i in range(3, 6):
        assert again.suggest(f"t{i}") is not None
        again.on_trial_complete(f"t{i}", {"val_loss": 1.0 / (i + 1)})
    study = load_study(folder, "dws")
    assert [t.params for t in study.trials][0] == {"lr": 1e-3, "depth": 2}
    full = study_summary(study)
    assert full["finished"] == 6 and [h["best"] for h in full["history"]][-1] == pytest.approx(1 / 6)
    assert set(full["importances"]) == {"lr", "depth"} and sum(full["importances"].values()) == pytest.approx(1.0)
    assert load_study(folder, "flat") is None and load_study(SweepFolder(tmp_path / "nothing"), "dws") is None


def test_a_search_that_leaves_out_the_paper_value_is_named(tiny_fl_zoo, tmp_path):
    from rnnray.sweep import paper_point
    from rnnray.weights import FORMAL_LANGUAGES

    cfg = load_sweep(SWEEPS / "quick.yaml", ["encoders=[dws]", "search.dws.depth=[2, 3]"])
    with pytest.raises(ConfigError, match=r"search.dws.depth: leaves out the paper preset's value 4"):
        paper_point(cfg, "dws", "formal_languages", FORMAL_LANGUAGES)
    cfg = load_sweep(SWEEPS / "quick.yaml", ["encoders=[dws]", "search.dws.depth=[2, 3]", "tune.paper_trial=false"])
    assert paper_point(cfg, "dws", "formal_languages", FORMAL_LANGUAGES) is None
    cfg = load_sweep(SWEEPS / "probe.yaml")  # probe.yaml trains faster than the paper: trial 0 uses its lr
    assert paper_point(cfg, "dws", "formal_languages", FORMAL_LANGUAGES) == {"lr": cfg.train.lr, "depth": 4}


@pytest.mark.parametrize("samples,startup", [(1, 1), (3, 1), (8, 2), (16, 4), (100, 10)])
def test_tpe_start_up_count_follows_the_sweep_size(samples, startup):
    from rnnray.sweep import TuneSettings, startup_trials

    assert startup_trials(TuneSettings(samples_per_encoder=samples)) == startup
    assert startup_trials(TuneSettings(samples_per_encoder=samples, startup_trials=3)) == 3


def test_trials_after_the_start_up_phase_are_proposed_by_tpe():
    """With the sweep's sampler, trial 0 is the enqueued paper point, then the start-up trials are
    drawn at random, and every later one comes from TPE's model of the finished trials: TPE's
    random fallback is never asked for them (counted by wrapping it, the calls still go through)."""
    import optuna

    from rnnray.sweep import TuneSettings, tpe_sampler

    tune = TuneSettings(samples_per_encoder=8, seed=0)  # 2 start-up trials
    sampler = tpe_sampler(tune)
    random_calls = []
    inner = sampler._random_sampler.sample_independent

    def counted(study, trial, name, dist):
        random_calls.append(trial.number)
        return inner(study, trial, name, dist)

    sampler._random_sampler.sample_independent = counted
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=sampler, direction="minimize")
    study.enqueue_trial({"lr": 1e-4, "depth": 4})
    study.optimize(lambda t: (math.log10(t.suggest_float("lr", 1e-5, 1e-2, log=True)) + 3) ** 2
                   + 0.1 * t.suggest_categorical("depth", [2, 3, 4]), n_trials=8)
    assert study.trials[0].params == {"lr": 1e-4, "depth": 4}
    assert sorted(set(random_calls)) == [1]  # trial 0 was given, trial 1 random, trials 2-7 TPE
    tpe = [t.params["lr"] for t in study.trials[2:]]
    assert len(tpe) == 6 and len(set(tpe)) == 6


def test_resume_of_a_finished_sweep_runs_nothing_again(quick_sweep):
    cfg, results, sweep_dir = quick_sweep
    before = {p: p.stat().st_mtime_ns for p in (sweep_dir / "trials").glob("*/*/trial.json")}
    again = run_job(cfg, resume=True, progress=False, verbose=0)
    assert again == sweep_dir
    after = {p: p.stat().st_mtime_ns for p in (sweep_dir / "trials").glob("*/*/trial.json")}
    assert after == before


def _sweep_folder_as_written(cfg, results: Path) -> Path:
    """A sweep folder as a sweep leaves it when stopped after its start: ``sweep.json`` (the validated
    file with absolute paths, as ``run_sweep`` writes it) and the ``LATEST`` pointer."""
    from rnnray.results.atomic import atomic_write_json
    from rnnray.results.folder import write_latest
    from rnnray.sweep import absolute_paths

    sweep_dir = results / f"{cfg.name}-20260101-000000"
    sweep_dir.mkdir(parents=True)
    atomic_write_json(sweep_dir / "sweep.json", {"config": absolute_paths(cfg).model_dump(mode="json"), "zoo_kind": "formal_languages"})
    write_latest(results, sweep_dir)
    return sweep_dir


def _tree(path: Path) -> dict:
    return {str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(path.rglob("*"))}


def test_resume_with_a_sweep_file_that_compares_differently_is_refused_naming_the_fields(tiny_fl_zoo, tmp_path):
    """--resume of a sweep folder with a file whose budget, encoders, training settings or search
    differ: one line naming each field (dotted), exit code 2, before Ray starts (the command's only
    output is that line), nothing written. A missing folder to resume is refused the same way."""
    import yaml

    results = tmp_path / "results"
    base = [f"zoo={tiny_fl_zoo.path}", f"results={results}"]
    sweep_dir = _sweep_folder_as_written(load_sweep(SWEEPS / "quick.yaml", base), results)
    data = yaml.safe_load((SWEEPS / "quick.yaml").read_text())
    data.update(zoo=str(tiny_fl_zoo.path), results=str(results), budget=data["budget"] * 2, encoders=["flat", "stats"])
    data["train"] = {**data.get("train", {}), "steps": 7}
    data["search"] = {"flat": {"lr": 0.01}}
    data["tune"] = {**data.get("tune", {}), "max_concurrent_trials": 1}  # free to differ: not named
    changed = tmp_path / "quick.yaml"
    changed.write_text(yaml.safe_dump(data))
    before = _tree(tmp_path)
    for resume in (["--resume"], ["--resume", str(sweep_dir)]):
        r = _cli(str(changed), *resume)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and r.stdout == "", (r.stdout[-2000:], r.stderr[-2000:])
        assert lines[0].startswith(f"error: --resume {sweep_dir}: the sweep file differs from its sweep.json in "
                                   "budget, encoders, search.flat.lr, train.steps;"), lines
    r = _cli(str(changed), "--resume", str(tmp_path / "gone"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "gone" in r.stderr, r.stderr[-2000:]
    assert _tree(tmp_path) == before


def test_resume_may_change_how_the_sweep_runs_but_not_what_it_compares(tiny_fl_zoo, tmp_path):
    from rnnray.errors import UsageError
    from rnnray.sweep.resume import check_resume

    results = tmp_path / "results"
    base = [f"zoo={tiny_fl_zoo.path}", f"results={results}"]
    sweep_dir = _sweep_folder_as_written(load_sweep(SWEEPS / "quick.yaml", base), results)
    free = ["tune.max_concurrent_trials=1", "tune.max_failures=3", "train.max_failures=0", "resources.workers=2",
            "resources.cpus_per_worker=0.5", "tracking.mlflow={}", "downstream.enabled=false", "name=renamed"]
    assert check_resume(load_sweep(SWEEPS / "quick.yaml", base + free), str(sweep_dir)) == sweep_dir
    assert check_resume(load_sweep(SWEEPS / "quick.yaml", base), True) == sweep_dir
    for change, named in [("tolerance=0.1", "tolerance"), ("train.split_seed=3", "train.split_seed"),
                          (f"zoo={tmp_path}", "zoo"), ("tune.samples_per_encoder=9", "tune.samples_per_encoder"),
                          ("final.seeds=5", "final.seeds"), ("oracles.modes=[step]", "oracles.modes")]:
        with pytest.raises(UsageError, match=f"sweep.json in {named.replace('.', '[.]')};"):
            check_resume(load_sweep(SWEEPS / "quick.yaml", base + [change]), str(sweep_dir))
    (sweep_dir / "sweep.json").write_text("{\"config\": ")
    with pytest.raises(UsageError, match="sweep.json is not readable as JSON"):
        check_resume(load_sweep(SWEEPS / "quick.yaml", base), str(sweep_dir))


# -- resources come from the file; on a CPU-only machine the GPU file still runs -------------------
def test_paper_file_runs_on_a_cpu_only_machine(ray_session, tmp_path, capfd):
    """sweeps/paper.yaml as it is (GPUs per zoo actor and per worker, 2 and 4 CPUs each, 8 actors),
    only shrunk in size: on this 2-CPU, GPU-less Ray instance it runs on CPU."""
    cfg = load_sweep(SWEEPS / "paper.yaml", [
        f"results={tmp_path / 'results'}", f"zoo.path={tmp_path / 'zoo'}", "zoo.runs=8", "zoo.steps=20",
        "zoo.snapshot_steps=[0,10,20]", "zoo.stored_sequences=4", "zoo.resources.chunk=4", "encoders=[flat]",
        "budget=20000", "train.steps=10", "train.eval_every=10", "train.batch_size=8", "train.emulator_hidden=16",
        "train.eval_sequences=2", "tune.samples_per_encoder=1", "downstream.enabled=false", "final.seeds=0",
    ])
    assert cfg.zoo.resources.gpus_per_actor > 0 and cfg.resources.gpus_per_worker > 0  # the file asks for GPUs
    sweep_dir = run_job(cfg, progress=False, verbose=0)
    err = capfd.readouterr().err
    assert "has none: running on CPU" in err and "the largest node has 2" in err
    manifest = json.loads((tmp_path / "zoo" / "manifest.json").read_text())
    assert all(s["device"] == "cpu" and not s["gpu_ids"] for s in manifest["shards"])
    (rec,) = [json.loads(p.read_text()) for p in (sweep_dir / "trials" / "flat").glob("*/trial.json")]
    assert rec["status"] == "finished", rec.get("reason")
    tc = json.loads(next((sweep_dir / "trials" / "flat").glob("*/train_result.json")).read_text())["train_config"]
    assert tc["gpus_per_worker"] == 0 and tc["cpus_per_worker"] == 2


def test_resource_requests_fit_the_cluster():
    from rnnray.runtime.resources import fit_request

    dgx = {"max_node_cpus": 128.0, "gpus": 16.0, "nodes": 2}
    laptop = {"max_node_cpus": 2.0, "gpus": 0.0, "nodes": 1}
    assert fit_request(4, 1, "w", dgx) == (4, 1)  # a cluster that can serve the request gets it unchanged
    assert fit_request(4, 1, "w", laptop) == (2.0, 0.0)
    assert fit_request(1, 0, "w", laptop) == (1, 0)


def test_paper_file_fits_a_node_of_8_gpus():
    """What paper.yaml asks of the cluster at once fits one DGX node (8 GPUs)."""
    cfg = load_sweep(SWEEPS / "paper.yaml")
    z = cfg.zoo.resources
    assert 0 < z.actors * z.gpus_per_actor <= 8  # while the zoo is built
    r = cfg.resources
    assert r.gpus_per_worker > 0 and cfg.tune.max_concurrent_trials * r.workers * r.gpus_per_worker <= 8
    tc = cfg.train_config("dws", {}, None, "/tmp/x", "t")
    assert (tc.gpus_per_worker, tc.cpus_per_worker, tc.workers) == (r.gpus_per_worker, r.cpus_per_worker, r.workers)


def test_relative_paths_are_the_starting_directorys(ray_session, tiny_fl_zoo, tmp_path, monkeypatch):
    """`zoo: zoos/x` and `results: results` mean the directory the sweep was started in, although
    Tune runs every trial in a working directory of its own."""
    import shutil

    from rnnray.job import default_sweep_file

    assert Path(default_sweep_file()).resolve() == (SWEEPS / "probe.yaml").resolve()
    shutil.copytree(tiny_fl_zoo.path, tmp_path / "zoos" / "tiny")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(
        "name: rel\nresults: results\nzoo: zoos/tiny\nencoders: [flat]\nbudget: 20000\n"
        "train: {steps: 10, eval_every: 10, batch_size: 8, emulator_hidden: 16, eval_sequences: 2}\n"
        "tune: {samples_per_encoder: 1, scheduler: none}\nfinal: {seeds: 0}\ndownstream: {enabled: false}\n")
    sweep_dir = run_job(load_sweep("s.yaml"), progress=False, verbose=0)
    assert sweep_dir.parent == (tmp_path / "results").resolve()
    (rec,) = [json.loads(p.read_text()) for p in (sweep_dir / "trials" / "flat").glob("*/trial.json")]
    assert rec["status"] == "finished", rec.get("reason")


def _wandb_offline_records(run_file: Path) -> list:
    """The records of a W&B offline run file (its LevelDB-style log of protobuf ``Record``s)."""
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    data, block, pos, out, part = run_file.read_bytes(), 32768, 7, [], b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 1:
            out.append(chunk)
        elif kind in (2, 3):
            part = (b"" if kind == 2 else part) + chunk
        elif kind == 4:
            out.append(part + chunk)
    records = []
    for raw in out:
        r = pb.Record()
        r.ParseFromString(raw)
        records.append(r)
    return records


def test_trackers_log_every_trial_to_mlflow_and_wandb(ray_session, tiny_fl_zoo, tmp_path):
    """A tiny sweep with ``tracking:`` MLflow (a local file store) and W&B (offline): each trial is a
    run with the encoder, its hyperparameters, parameter count and every evaluation; TensorBoard's
    event files are where the README says."""
    import mlflow

    uri = (tmp_path / "mlruns").as_uri()
    cfg = load_sweep(SWEEPS / "quick.yaml", [f"zoo={tiny_fl_zoo.path}", f"results={tmp_path / 'results'}", "encoders=[flat]",
                                             "train.steps=20", "train.eval_every=10", "downstream.enabled=false",
                                             f"tracking.mlflow.tracking_uri={uri}", "tracking.mlflow.experiment=rnnray-test",
                                             "tracking.wandb.project=rnnray-test"])
    sweep_dir = run_job(cfg, progress=False, verbose=0)
    (rec,) = [json.loads(p.read_text()) for p in (sweep_dir / "trials" / "flat").glob("*/trial.json")]
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("rnnray-test")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.data.tags["encoder"] == "flat" and run.data.tags["sweep"] == cfg.name
    assert {k: float(v) for k, v in run.data.params.items() if k in rec["config"]} == {k: float(v) for k, v in rec["config"].items()}
    assert [m.value for m in client.get_metric_history(run.info.run_id, "val_loss")] == pytest.approx(
        [h["val_loss"] for h in rec["history"]])
    assert run.data.metrics["n_params"] == rec["n_params"]
    (wb,) = list(sweep_dir.glob("wandb/offline-run-*/run-*.wandb"))
    records = _wandb_offline_records(wb)
    (start,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert start.run_group == cfg.name and start.project == "rnnray-test" and "flat" in list(start.tags)
    config = {i.key: json.loads(i.value_json) for i in start.config.update}
    assert all(config[k] == pytest.approx(v) for k, v in rec["config"].items())
    history = [{i.nested_key[0] if i.nested_key else i.key: json.loads(i.value_json) for i in r.history.item}
               for r in records if r.WhichOneof("record_type") == "history"]
    assert [h["val_loss"] for h in history] == pytest.approx([h["val_loss"] for h in rec["history"]]), \
        ([r.WhichOneof("record_type") for r in records], history, wb)
    assert all(h["n_params"] == rec["n_params"] for h in history)
    assert list((sweep_dir / "tune").glob("*/flat_*/events.out.tfevents.*"))  # tensorboard --logdir SWEEP/tune


def test_a_tracker_that_is_not_installed_is_one_line(monkeypatch):
    import importlib.util

    from rnnray.sweep import check_trackers

    cfg = load_sweep(SWEEPS / "quick.yaml", ["tracking.wandb.project=p"])
    check_trackers(cfg)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ConfigError, match=r'tracking.wandb: needs the wandb package \(pip install "rnnray\[wandb\]"\)'):
        check_trackers(cfg)


def _final_sweep_cfg(results: Path, zoo: str, **extra):
    from rnnray.sweep import SweepConfig

    data = {"name": "finals", "results": str(results), "zoo": zoo, "encoders": ["flat", "stats"], "budget": 20000,
            "search": {"all": {"lr": {"low": 3e-4, "high": 3e-3, "log": True}}},
            "train": {"steps": 40, "eval_every": 20, "batch_size": 8, "emulator_hidden": 16, "eval_sequences": 2, "lr": 1e-3},
            "tune": {"samples_per_encoder": 2, "max_concurrent_trials": 2, "scheduler": "none"},
            "final": {"seeds": 2}, "downstream": {"enabled": False}, **extra}
    return SweepConfig.model_validate(data)


FINAL_PROGRESS: list[str] = []  # the job's progress lines during the final_sweep fixture


@pytest.fixture(scope="module")
def final_sweep(ray_session, tiny_fl_zoo, tmp_path_factory):
    from rnnray.bench.estimate import plan_runs
    from rnnray.sweep.progress import JobProgress, reporting

    results = tmp_path_factory.mktemp("finals")
    cfg = _final_sweep_cfg(results, tiny_fl_zoo.path)
    runs = plan_runs(cfg)
    with reporting(JobProgress(runs, {p: 1.0 for p in runs}, out=FINAL_PROGRESS.append)):
        sweep_dir = run_job(cfg, progress=False, verbose=0)
    return cfg, sweep_dir


def test_the_whole_job_reports_every_ended_run(final_sweep):
    """One progress line per ended search trial, final run and label oracle, counted by the Tune
    callbacks and the oracles' loop as they end (the zoo was there already: one line)."""
    import re

    cfg, sweep_dir = final_sweep
    folder = SweepFolder(sweep_dir)
    by_phase = {}
    for line in FINAL_PROGRESS:
        m = re.match(r"\[job\] (\w+): (\d+)/(\d+) runs; all phases (\d+)/(\d+); elapsed \S+, estimated remaining \S+$", line)
        assert m, line
        by_phase.setdefault(m.group(1), []).append(int(m.group(2)))
    n_final = sum(len(folder.final_records(e)) for e in cfg.encoders)
    assert by_phase["zoo"] == [1]
    assert by_phase["search"] == list(range(1, 1 + len(cfg.encoders) * cfg.tune.samples_per_encoder))
    assert len(by_phase["final"]) == n_final
    assert by_phase["oracles"] == list(range(1, 1 + len(cfg.oracles.modes) * cfg.final.seeds))


def test_final_seeds_retrain_the_best_and_the_paper_configuration(final_sweep):
    """After the search, the best configuration and the paper preset are retrained with new seeds
    to the full length; the seeds really differ; the interval is the t interval of their values;
    load_best returns the best seed of the best configuration."""
    from rnnray.analysis.statistics import mean_interval
    from rnnray.results.folder import SweepFolder

    cfg, sweep_dir = final_sweep
    folder = SweepFolder(sweep_dir)
    doc = json.loads(folder.final_json.read_text())["encoders"]
    for enc in ("flat", "stats"):
        search = [json.loads(p.read_text()) for p in folder.trial_records(enc)]
        best_search = min(search, key=lambda r: r["best_val_loss"])
        finals = [json.loads(p.read_text()) for p in folder.final_records(enc)]
        roles = {r["role"] for r in finals}
        assert roles == ({"best+paper"} if best_search["paper_config"] else {"best", "paper"}), roles
        assert len(finals) == 2 * len(roles) and len({r["trial_id"] for r in finals}) == len(finals)
        for r in finals:
            assert r["status"] == "finished" and r["history"][-1]["step"] == cfg.train.steps  # full length, no ASHA
            source = next(t for t in search if t["trial_id"] == r["source_trial"])
            assert r["config"] == source["config"]
            assert ("paper" in r["role"]) == bool(source["paper_config"]) and ("best" in r["role"]) == (source is best_search)
            tc = json.loads((folder.final(enc) / r["trial_id"] / "train_result.json").read_text())["train_config"]
            assert tc["seed"] == r["seed"] and tc["split_seed"] == cfg.train.split_seed  # a new seed, the same split
        best_runs = sorted((r for r in finals if "best" in r["role"]), key=lambda r: r["seed"])
        assert [r["seed"] for r in best_runs] == [1, 2]
        assert best_runs[0]["best_val_loss"] != best_runs[1]["best_val_loss"]  # the seeds really differ
        assert best_runs[0]["history"] != best_runs[1]["history"]
        entry = doc[enc]["best"]
        assert entry["val_loss"] == [r["best_val_loss"] for r in best_runs]
        iv = mean_interval(entry["val_loss"])
        assert entry["val_interval"]["mean"] == pytest.approx(iv.mean) and entry["val_interval"]["low"] == pytest.approx(iv.low)
        assert set(doc[enc]) == {"best", "paper"}  # a best+paper run counts for both
        top = min(best_runs, key=lambda r: r["best_val_loss"])
        best = json.loads(folder.best_json.read_text())[enc]
        assert best["final"] is True and best["seed"] == top["seed"] and best["checkpoint"] == top["checkpoint"]
        assert best["search_trial_id"] == best_search["trial_id"]
        assert rnnray.load_best(enc, results=sweep_dir).metrics["best_val_loss"] == pytest.approx(top["best_val_loss"])
    md = folder.summary_md.read_text()
    assert "final val loss, best config" in md and "2 seeds" in md


def test_the_label_oracles_run_under_the_final_seeds(final_sweep, one_torch_thread):
    """Each oracle is trained under each final seed with the sweep's train settings (in the sweep's
    one queue, beside the trials): its ``constant`` runs retrace the ``constant`` baseline trained
    locally with them."""
    from rnnray.analysis.oracles import sweep_plan
    from rnnray.results.folder import SweepFolder
    from rnnray.train import train_local

    cfg, sweep_dir = final_sweep
    doc = json.loads(SweepFolder(sweep_dir).oracles_json.read_text())
    assert doc["seeds"] == [1, 2] and list(doc["modes"]) == list(cfg.oracles.modes) == ["constant", "step", "task+step"]
    plan = sweep_plan(cfg)
    assert doc["train"] == plan.train.model_dump(mode="json") and doc["train"]["steps"] == cfg.train.steps
    for mode, r in doc["modes"].items():
        assert [run["seed"] for run in r["runs"]] == [1, 2] and r["val_loss"]["n"] == 2
        assert [h["step"] for h in r["runs"][0]["history"]] == [20, 40]
    for run in doc["modes"]["constant"]["runs"]:
        local = train_local("constant", plan.train.model_copy(update={"seed": run["seed"]}))
        assert run["best_val_loss"] == pytest.approx(local.best_val_loss, rel=1e-5)


def test_the_one_queue_runs_every_encoders_work_side_by_side(final_sweep):
    """One Tune experiment held the sweep's work: each encoder's search trials, its final runs once
    its search had ended (planned by the per-encoder rule from its records), the oracles; work of
    different encoders or roles ran at the same time; the timeline gives the utilisation and the
    phases, and summary.md prints them."""
    from rnnray.sweep import final_runs
    from rnnray.sweep.timeline import read, schedule_summary

    cfg, sweep_dir = final_sweep
    folder = SweepFolder(sweep_dir)
    assert cfg.tune.schedule == "one_queue" and [p.name for p in folder.tune.iterdir() if p.is_dir()] == ["queue"]
    runs = read(folder)["runs"]
    n_final = {e: len(final_runs(cfg, [json.loads(p.read_text()) for p in folder.trial_records(e)])) for e in cfg.encoders}
    assert sorted(r["key"] for r in runs) == sorted(
        [f"{e}/search/{i}" for e in cfg.encoders for i in range(cfg.tune.samples_per_encoder)]
        + [f"{e}/final/{i}" for e in cfg.encoders for i in range(n_final[e])]
        + [f"oracle/{i}" for i in range(len(cfg.oracles.modes) * cfg.final.seeds)])
    assert {len(folder.final_records(e)) for e in cfg.encoders} == set(n_final.values())
    for e in cfg.encoders:  # an encoder's seeds start only once its search has ended
        search_end = max(r["end"] for r in runs if r["key"].startswith(f"{e}/search/"))
        assert all(r["start"] >= search_end for r in runs if r["key"].startswith(f"{e}/final/"))
    group = {r["key"]: r["key"].rsplit("/", 1)[0] for r in runs}
    assert any(group[a["key"]] != group[b["key"]] and a["start"] < b["end"] and b["start"] < a["end"]
               for a in runs for b in runs), "no two kinds of work ever ran side by side"
    s = schedule_summary(folder)
    assert s["slots"] == cfg.tune.max_concurrent_trials and s["runs"] == len(runs) and 0 < s["utilisation"] <= 1
    assert {"zoo", "search", "final", "oracles"} <= set(s["phase_seconds"])
    assert f"Schedule: slot utilisation {s['utilisation']:.0%}" in folder.summary_md.read_text()


def test_final_runs_resume_from_their_tune_experiment(final_sweep, tmp_path):
    """A sweep resumed after its final runs ended but before they were recorded restores their Tune
    experiment (nothing is trained again) and records the same runs."""
    import shutil

    from rnnray.results.folder import SweepFolder

    cfg, sweep_dir = final_sweep
    copy = tmp_path / "results" / sweep_dir.name
    shutil.copytree(sweep_dir, copy, symlinks=True)
    folder = SweepFolder(copy)
    before = {p.parent.name: json.loads(p.read_text()) for p in folder.final_records("stats")}
    results_before = {p: p.stat().st_mtime_ns for p in folder.final("stats").glob("*/train_result.json")}
    folder.final_done_marker("stats").unlink()
    for p in folder.final_records("stats"):
        p.unlink()
    folder.final_json.unlink()
    oracles_before = folder.oracles_json.stat().st_mtime_ns
    cfg2 = cfg.model_copy(update={"results": str(tmp_path / "results")})
    run_job(cfg2, resume=str(copy), progress=False, verbose=0)
    assert folder.oracles_json.stat().st_mtime_ns == oracles_before  # the same settings: not trained again
    after = {p.parent.name: json.loads(p.read_text()) for p in folder.final_records("stats")}
    assert set(after) == set(before) and folder.final_done_marker("stats").exists()
    assert all(after[k]["seed"] == before[k]["seed"] and after[k]["best_val_loss"] == before[k]["best_val_loss"] for k in after)
    assert {p: p.stat().st_mtime_ns for p in folder.final("stats").glob("*/train_result.json")} == results_before  # not retrained
    assert json.loads(folder.final_json.read_text())["encoders"]["stats"]["best"]["seeds"] == [1, 2]


def test_the_report_opens_with_the_verdict_computed_from_the_final_seeds(final_sweep):
    from rnnray.report import write_report
    from rnnray.results.folder import SweepFolder
    from rnnray.analysis.verdict import study_from_sweep, verdict_rows

    cfg, sweep_dir = final_sweep
    text = write_report(sweep_dir, n_samples=4, max_snapshots=4, device="cpu", progress=False, evaluate_missing=False).read_text()
    assert text.index("## Verdict: the paper's claims") < text.index("## Emulation loss")
    assert "Final runs (`final.json`)" in text
    flat = json.loads(SweepFolder(sweep_dir).final_json.read_text())["encoders"]["flat"]
    if flat["best"]["trial_ids"] == flat["paper"]["trial_ids"]:  # the search chose the preset: one row says so
        assert "| flat | best = paper preset (search trial" in text and "| flat | paper preset |" not in text
    else:
        assert "| flat | paper preset | 2 |" in text and "| flat | best (search trial" in text
    emu = [ln for ln in text.splitlines() if ln.startswith("| stats | 2 |")]  # the search's table: 2 trials
    search = [json.loads(p.read_text()) for p in SweepFolder(sweep_dir).trial_records("stats")]
    assert emu and f"{min(r['best_val_loss'] for r in search):.4f}" in emu[0]  # the search's selection, not a final seed
    study = study_from_sweep(SweepFolder(sweep_dir))
    assert set(study) == {"formal_languages"} and set(study["formal_languages"]) == {"flat", "stats"}
    rows = verdict_rows(study)
    for r in rows:
        assert f"| {r.claim} | {r.zoo} | {r.numbers} | {r.test} | **{r.verdict}** |" in text
    by = {(r.claim[:3], r.zoo[0]): r.verdict for r in rows}
    assert by[("(a)", "A")] == "not measured"  # no functionalist encoder in this sweep
    assert by[("(b)", "B")] == "not measured"  # no zoo-B results
    (tuning,) = [r for r in rows if r.claim.startswith("Does tuning") and r.zoo.startswith("A")]
    assert tuning.verdict in ("yes", "no", "inconclusive at this power") and tuning.numbers.startswith("tuned: ")
    # the label oracles' table, and each encoder's final seeds against them, the paired test recomputed here
    from rnnray.analysis.statistics import paired

    oracles = json.loads(SweepFolder(sweep_dir).oracles_json.read_text())["modes"]
    assert "| oracle: task+step | 2 |" in text
    finals = json.loads(SweepFolder(sweep_dir).final_json.read_text())["encoders"]
    for enc in ("flat", "stats"):
        (row,) = [ln for ln in text.splitlines() if ln.startswith(f"| {enc} | ") and "training progress" in ln]
        mine = dict(zip(finals[enc]["best"]["seeds"], finals[enc]["best"]["val_loss"]))
        w = paired(mine, {r["seed"]: r["best_val_loss"] for r in oracles["step"]["runs"]})
        if w is None:  # two seeds whose differences happen to agree exactly: no test applies
            assert "not applicable" in row
            continue
        assert f"{'lower' if w.diff < 0 else 'higher'} by {abs(w.diff):.4f}, p = {w.p:.2g} (paired" in row
        assert ("no sign of more than training progress" in row) == (not (w.p < 0.05 and w.diff < 0))


def test_downstream_over_the_final_seeds_nests_the_predictor_seeds(final_sweep):
    """Every final seed's encoder is evaluated; a seed's figure is the mean over predictor seeds
    (checked against an independent evaluation of that seed's checkpoint), and the interval is
    over encoder seeds; chance levels and the table land in the summary and the report."""
    from rnnray.analysis import downstream as ds
    from rnnray.analysis.evaluate import evaluate_sweep
    from rnnray.analysis.statistics import mean_interval
    from rnnray.report import write_report
    from rnnray.results.folder import SweepFolder
    from rnnray.train import load_checkpoint
    from rnnray.zoo import load_table

    cfg, sweep_dir = final_sweep
    folder = SweepFolder(sweep_dir)
    pcfg = ds.PredictorConfig(steps=60)
    doc = evaluate_sweep(sweep_dir, seeds=(0, 1), config=pcfg, progress=False)
    assert doc["chance"]["task.exact_acc"] == pytest.approx(1 / 216) and doc["chance"]["task.head_acc"] == pytest.approx(1 / 6)
    assert set(doc["final"]) == {"flat", "stats"}
    table = load_table(cfg.zoo_path, checksums=False)
    for enc, res in doc["final"].items():
        assert res["seeds"] == [1, 2]
        cells = res["values"]["task.exact_acc"]["ood_test"]
        assert len(cells) == 2 and len(res["effective_dim"]) == 2
        iv = mean_interval(cells)
        assert res["intervals"]["task.exact_acc"]["ood_test"]["mean"] == pytest.approx(iv.mean)
        # seed 2's figure, recomputed from its checkpoint: the mean over the two predictor seeds
        final = json.loads(folder.final_json.read_text())["encoders"][enc]["best"]
        rec = json.loads(folder.final_record(enc, final["trial_ids"][1]).read_text())
        model, _ = load_checkpoint(rec["checkpoint"], device="cpu")
        again = ds.evaluate_representations(ds.representations(model.encoder, table), table, "formal_languages",
                                            cfg.train.split_seed, (0, 1), config=pcfg, targets=["accuracy"])
        assert res["values"]["accuracy.r2"]["val"][1] == pytest.approx(again["results"]["accuracy"]["val"]["r2"]["mean"], abs=1e-6)
    from rnnray.report.summary import write_summary_md

    md = write_summary_md(sweep_dir).read_text()  # what python -m rnnray.evaluate and the main job do next
    assert "Over the final seeds" in md and "| chance | — |" in md and "Chance: task exact acc 0.00463" in md
    text = write_report(sweep_dir, n_samples=4, max_snapshots=4, device="cpu", progress=False, evaluate_missing=False).read_text()
    assert "Over the final seeds" in text and "| chance | — |" in text


# -- the emulator's conditioning is searchable like a hyperparameter ----------------------------------
def test_conditioning_is_searched_like_a_hyperparameter(tiny_fl_zoo, tmp_path):
    """``search: {all: {conditioning: [bos, every_step]}}`` makes it a categorical knob of every
    encoder; trial 0 takes the file's (the paper's ``bos``); a trial's value reaches its run's
    training config, not the encoder's hyperparameters."""
    import optuna

    from rnnray.sweep import TrialSetup, define_by_run, paper_point
    from rnnray.sweep.space import _plain
    from rnnray.train.plan import ZooPlan
    from rnnray.weights import FORMAL_LANGUAGES

    cfg = load_sweep(SWEEPS / "quick.yaml", ["encoders=[dws, flat]", "search.all.conditioning=[bos, every_step]",
                                             f"zoo={tiny_fl_zoo.path}", "budget=20000"])
    for enc in ("dws", "flat"):
        space = encoder_space(cfg, enc, "formal_languages")
        assert space["conditioning"] == ["bos", "every_step"]
        assert paper_point(cfg, enc, "formal_languages", FORMAL_LANGUAGES)["conditioning"] == "bos"
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(12):
        trial = study.ask()
        define_by_run(trial, _plain(encoder_space(cfg, "flat", "formal_languages")))
        seen.add(trial.params["conditioning"])
        study.tell(trial, 0.0)
    assert seen == {"bos", "every_step"}
    assert isinstance(study.trials[0].distributions["conditioning"], optuna.distributions.CategoricalDistribution)

    setup = TrialSetup(encoder="flat", sweep=cfg, zoo=ZooPlan.open(tiny_fl_zoo.path), folder=str(tmp_path))
    plan = setup.plan({"lr": 1e-3, "conditioning": "every_step", "depth": 2}, "t1")
    assert (plan.train.conditioning, plan.train.lr, plan.hparams["depth"]) == ("every_step", 1e-3, 2)
    assert "conditioning" not in plan.hparams and "lr" not in plan.hparams
    assert setup.plan({"lr": 1e-3}, "t0").train.conditioning == "bos"  # not searched: the file's train.conditioning
    with pytest.raises(ConfigError, match=r"search.flat.conditioning: leaves out the paper preset's value 'bos'"):
        paper_point(load_sweep(SWEEPS / "quick.yaml", ["encoders=[flat]", "search.flat.conditioning=[every_step]"]),
                    "flat", "formal_languages", FORMAL_LANGUAGES)


@pytest.mark.parametrize("override,needle", [
    ("search.all.conditioning=[bos, everywhere]", "search.all.conditioning: Input should be 'bos' or 'every_step'"),
    ("search.flat.conditioning=sometimes", "search.flat.conditioning: Input should be 'bos' or 'every_step'"),
    ("search.all.conditioning={low: 0, high: 1}", "search.all.conditioning: a list of choices or one value, not a range"),
    ("train.conditioning=everywhere", "train.conditioning: Input should be 'bos' or 'every_step'"),
    ("train.grad_clip_scope=per_layer", "train.grad_clip_scope: Input should be 'separate' or 'global'"),
])
def test_bad_conditioning_or_clipping_values_are_named(override, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(")) as e:
        load_sweep(SWEEPS / "quick.yaml", [override, "encoders=[flat, dws]"])
    assert len(str(e.value).splitlines()) == 1


def test_a_searched_conditioning_reaches_the_trial_its_record_and_its_checkpoint(ray_session, tiny_fl_zoo, tmp_path):
    """End to end: a sweep whose search fixes ``conditioning: every_step`` for its encoder trains that
    emulator; trial.json, train_result.json, the checkpoint, best.json and load_best all say so, and
    the departures from the paper (computed from sweep.json) list it."""
    from rnnray.analysis.departures import departures
    from rnnray.sweep import SweepConfig

    cfg = SweepConfig.model_validate({
        "name": "cond", "results": str(tmp_path / "results"), "zoo": tiny_fl_zoo.path, "encoders": ["flat"],
        "budget": 20000, "search": {"flat": {"conditioning": "every_step"}},
        "train": {"steps": 10, "eval_every": 10, "batch_size": 8, "emulator_hidden": 16, "eval_sequences": 2},
        "tune": {"samples_per_encoder": 1, "scheduler": "none"}, "final": {"seeds": 0},
        "downstream": {"enabled": False}})
    sweep_dir = run_job(cfg, progress=False, verbose=0)
    (rec,) = [json.loads(p.read_text()) for p in (sweep_dir / "trials" / "flat").glob("*/trial.json")]
    assert rec["status"] == "finished", rec.get("reason")
    assert rec["config"]["conditioning"] == rec["conditioning"] == "every_step" and rec["grad_clip_scope"] == "separate"
    tc = json.loads(next((sweep_dir / "trials" / "flat").glob("*/train_result.json")).read_text())["train_config"]
    assert tc["conditioning"] == "every_step" and tc["grad_clip_scope"] == "separate"
    meta = json.loads((Path(rec["checkpoint"]) / "meta.json").read_text())
    assert meta["emulator"]["conditioning"] == "every_step"
    assert json.loads((sweep_dir / "best.json").read_text())["flat"]["conditioning"] == "every_step"
    assert rnnray.load_best("flat", results=sweep_dir).conditioning == "every_step"
    sweep_json = json.loads((sweep_dir / "sweep.json").read_text())
    assert ("search.flat.conditioning", "every_step", "bos") in departures(sweep_json["config"])
