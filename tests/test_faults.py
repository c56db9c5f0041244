"""Faults injected for real: killed zoo actors and training workers, an interrupted sweep, a
diverging trial, bad input of every kind, and two sweeps sharing one results directory.

Processes are found by their Ray process titles (``ray::MapWorker(...)``, ``ray::RayTrainWorker``)
and killed with SIGKILL, as an out-of-memory killer or a dying node would. Sweeps that must be
interrupted or run side by side are real ``python -m rnnray.sweep`` processes attached to the
session's Ray instance.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import yaml

import rnnray
from rnnray.config import parse_zoo
from rnnray.results import ResultsError
from rnnray.job import run_job
from rnnray.sweep import load_sweep

from conftest import PATIENCE, TINY_FL

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(3 * PATIENCE)


def _procs(title: str) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(title in part for part in (p.info["cmdline"] or [])[:1]):
                out.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return out


def _wait_for(predicate, timeout: float, what: str, every: float = 0.2):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _tree(path: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(path.rglob("*"))}


def _stray_files(path: Path) -> list[str]:
    """Temporary files a writer leaves behind when it dies half-way."""
    return [str(p) for p in path.rglob("*") if ".tmp" in p.name]


def _tiny_sweep(results: Path, zoo: str, **extra) -> dict:
    cfg = {
        "name": "tiny",
        "results": str(results),
        "zoo": zoo,
        "encoders": ["flat"],
        "budget": 20000,
        "train": {"steps": 40, "eval_every": 20, "batch_size": 8, "emulator_hidden": 16, "eval_sequences": 2},
        "tune": {"samples_per_encoder": 1, "max_concurrent_trials": 1, "scheduler": "none"},
        "final": {"seeds": 0},  # the final seeds have their own tests (test_sweep.py)
        "downstream": {"enabled": False},
    }
    for key, value in extra.items():
        cfg[key] = value
    return cfg


def _write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def _sweep_process(config: Path, address: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "rnnray.sweep", str(config), "--address", address, "--quiet", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )


@pytest.fixture(scope="module")
def address(ray_session):
    return ray_session.get_runtime_context().gcs_address


# -- 1. a zoo actor dies mid-build ---------------------------------------------------------------
def test_zoo_build_survives_a_killed_actor(ray_session, tiny_fl_zoo, tmp_path):
    from rnnray.zoo import build, load_table
    from rnnray.zoo.storage import verify

    spec = {**TINY_FL, "resources": {"actors": 2, "chunk": 2}}  # 4 chunks: the pool is busy for a while
    clean = build(parse_zoo({**spec, "path": str(tmp_path / "clean")}), progress=False)
    cfg = parse_zoo({**spec, "path": str(tmp_path / "zoo")})
    outcome = {}
    builder = threading.Thread(target=lambda: outcome.setdefault("manifest", build(cfg, progress=False)))
    builder.start()
    shards = tmp_path / "zoo" / "shards"
    # Both actors start equal chunks together, so when the first shard is in, each actor is at most
    # just starting its next chunk: a whole chunk of training (seconds, against the 50 ms this
    # test takes to see the shard and find the actors) is in flight on any machine. Kill every zoo actor.
    _wait_for(lambda: list(shards.glob("*.parquet")), PATIENCE, "the first shard", every=0.05)
    victims = _procs("ZooTrainer")
    assert victims
    killed = {p.pid for p in victims}
    for p in victims:
        p.send_signal(signal.SIGKILL)
    builder.join(timeout=PATIENCE)
    assert not builder.is_alive() and "manifest" in outcome, "the build did not finish after its actors died"

    manifest = verify(tmp_path / "zoo", checksums=True)
    runs = sorted(r for s in manifest["shards"] for r in s["runs"])
    assert runs == list(range(cfg.runs))  # every run exactly once
    assert [s for s in manifest["shards"] if s["pid"] not in killed]  # ... some trained by restarted actors
    # the killed chunks were trained again by restarted actors: the same shards, byte for byte
    assert [(s["runs"], s["sha256"]) for s in manifest["shards"]] == [(s["runs"], s["sha256"]) for s in clean["shards"]]
    key = [("run_id", "ascending"), ("step", "ascending")]
    assert load_table(tmp_path / "zoo").sort_by(key).equals(load_table(tiny_fl_zoo.path).sort_by(key))
    assert not _stray_files(tmp_path / "zoo")


# -- 2. a Ray Train worker dies mid-trial ----------------------------------------------------------
def test_killed_training_worker_restarts_from_its_checkpoint(ray_session, tiny_fl_zoo, tmp_path):
    results = tmp_path / "results"
    cfg = load_sweep(_write_yaml(tmp_path / "s.yaml", _tiny_sweep(
        results, tiny_fl_zoo.path,
        train={"steps": 1500, "eval_every": 100, "batch_size": 8, "emulator_hidden": 16, "eval_sequences": 2,
               "max_failures": 2},
    )))
    outcome = {}
    sweeper = threading.Thread(target=lambda: outcome.setdefault("dir", run_job(cfg, progress=False, verbose=0)))
    sweeper.start()
    # the checkpoint manager's snapshot is written once a reported checkpoint is registered (step
    # 100); the 1,400 steps left take seconds on any machine, against the ~0.1 s this test needs
    # to see the snapshot and find the worker, so the kill lands mid-trial
    _wait_for(lambda: list(results.glob("tiny-*/trials/flat/*/*/checkpoint_manager_snapshot.json")), PATIENCE,
              "the trial's first registered checkpoint", every=0.05)
    workers = _wait_for(lambda: _procs("RayTrainWorker"), PATIENCE, "the Ray Train worker", every=0.05)
    killed = {p.pid for p in workers}
    for p in workers:
        p.send_signal(signal.SIGKILL)
    sweeper.join(timeout=PATIENCE)
    assert not sweeper.is_alive() and "dir" in outcome, "the sweep did not finish after its worker died"

    (rec_path,) = list((outcome["dir"] / "trials" / "flat").glob("*/trial.json"))
    rec = json.loads(rec_path.read_text())
    assert rec["status"] == "finished", rec.get("reason")
    assert rec["resumed_from_step"] and rec["resumed_from_step"] >= 100  # from a checkpoint, not from step 0
    assert all(w["pid"] not in killed for w in rec["placement"])  # a new worker finished it
    steps = [h["step"] for h in rec["history"] if h.get("step") is not None]
    assert steps[-1] == 1500 and steps == sorted(set(steps))
    assert (outcome["dir"] / "summary.csv").is_file() and not _stray_files(outcome["dir"])


# -- 3. SIGINT, then a hard kill of the driver; --resume finishes ----------------------------------
class _Output:
    """A process's merged stdout/stderr, read as it comes (so a test can wait for a line)."""

    def __init__(self, proc: subprocess.Popen):
        self.lines: list[str] = []
        self._reader = threading.Thread(target=lambda: self.lines.extend(iter(proc.stdout.readline, "")), daemon=True)
        self._reader.start()

    def has(self, text: str) -> bool:
        return any(text in line for line in list(self.lines))

    def text(self) -> str:
        self._reader.join(timeout=PATIENCE)
        return "".join(self.lines)


def _interrupt_at_first_checkpoint(proc: subprocess.Popen, out: _Output, results: Path, encoder: str) -> None:
    """SIGINT the sweep once ``encoder``'s first trial has registered a checkpoint (the checkpoint
    manager's snapshot is written then), then wait for Tune to acknowledge the signal."""
    _wait_for(lambda: list(results.glob(f"tiny-*/trials/{encoder}/*/*/checkpoint_manager_snapshot.json"))
              or proc.poll() is not None, PATIENCE, f"{encoder}'s first registered checkpoint", every=0.05)
    assert proc.poll() is None, out.text()[-3000:]
    os.killpg(proc.pid, signal.SIGINT)
    _wait_for(lambda: out.has("Stop signal received") or proc.poll() is not None, PATIENCE, "Tune to take the SIGINT")


# The interrupted encoder gets two trials, run one at a time, and the SIGINT goes out within 50 ms of
# its first trial's registered checkpoint. Its steps may all be done by then (Ray Train registers
# checkpoints on a 2 s poll, ample time for 400 tiny steps on a fast machine), but the second trial
# can only start after the first has ended and Tune has launched new actors for it, so the encoder
# cannot have finished when the signal lands, on any machine; after the SIGINT Tune starts no step or
# trial, so whether the experiment ended is decided by the code, not the clock.
INTERRUPTED_TRAIN = {"steps": 400, "eval_every": 100, "batch_size": 8, "emulator_hidden": 16, "eval_sequences": 2}


def _interrupted_sweep(tmp_path: Path, zoo: str, address: str, encoder: str, then) -> tuple[Path, Path, _Output, subprocess.Popen]:
    """A flat + stats sweep (two trials each, one at a time) in a driver process, SIGINT at
    ``encoder``'s first registered checkpoint, then ``then(proc)``; the driver never outlives this."""
    results = tmp_path / "results"
    config = _write_yaml(tmp_path / "s.yaml", _tiny_sweep(
        results, zoo, encoders=["flat", "stats"], train=INTERRUPTED_TRAIN,
        tune={"samples_per_encoder": 2, "max_concurrent_trials": 1, "scheduler": "none"},
    ))
    proc = _sweep_process(config, address)
    out = _Output(proc)
    try:
        _interrupt_at_first_checkpoint(proc, out, results, encoder)
        then(proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return results, config, out, proc


def _hard_kill(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)  # a hard kill in the middle of Tune's graceful stop
    proc.wait(timeout=PATIENCE)


def test_interrupted_sweep_resumes_and_keeps_each_trial_once(ray_session, tiny_fl_zoo, tmp_path, address):
    results, config, _, _ = _interrupted_sweep(tmp_path, tiny_fl_zoo.path, address, "stats", _hard_kill)
    (sweep_dir,) = list(results.glob("tiny-*"))
    assert (sweep_dir / "trials" / "flat" / "DONE").exists()
    assert not (sweep_dir / "trials" / "stats" / "DONE").exists()  # it really was cut short

    again = _sweep_process(config, address, "--resume")
    out, _ = again.communicate(timeout=PATIENCE)
    assert again.returncode == 0, out[-3000:]
    assert list(results.glob("tiny-*")) == [sweep_dir]  # continued, not started over
    for enc in ("flat", "stats"):
        recs = [json.loads(p.read_text()) for p in (sweep_dir / "trials" / enc).glob("*/trial.json")]
        assert len(recs) == 2  # each once: neither dropped nor recorded again by the resumed sweep
        assert len({r["trial_id"] for r in recs}) == 2
        assert all(r["status"] == "finished" for r in recs), [r.get("reason") for r in recs]
        for rec in recs:
            steps = [h["step"] for h in rec["history"] if h.get("step") is not None]
            assert steps[-1] == 400 and steps == sorted(set(steps))
    summary = (sweep_dir / "summary.csv").read_text().splitlines()
    assert len(summary) == 3 and all(line.split(",")[4] == "2" for line in summary[1:])  # encoders, each with 2 trials
    assert all(json.loads((sweep_dir / "best.json").read_text())[e]["checkpoint"] for e in ("flat", "stats"))
    assert not _stray_files(sweep_dir)


def test_ctrl_c_stops_the_sweep_resumable_not_finished(ray_session, tiny_fl_zoo, tmp_path, address):
    """Tune answers SIGINT by stopping its trials and returning as if done: the sweep must not take
    that for a finished experiment (no trial records, no DONE, no next encoder) and must exit 130."""
    results, _, out, proc = _interrupted_sweep(tmp_path, tiny_fl_zoo.path, address, "flat",
                                               lambda p: p.wait(timeout=PATIENCE))  # it ends by itself
    text = out.text()
    (sweep_dir,) = list(results.glob("tiny-*"))
    assert proc.returncode == 130, text[-3000:]
    assert f"--resume {sweep_dir}" in text and "flat: " in text and "of 2 trials ended" in text, text[-3000:]
    assert not (sweep_dir / "trials" / "flat" / "DONE").exists()
    assert not list((sweep_dir / "trials" / "flat").glob("*/trial.json"))
    assert not (sweep_dir / "trials" / "stats").exists()  # the next encoder never started
    assert not _stray_files(sweep_dir)


@pytest.mark.parametrize("schedule", ["per_encoder", "one_queue"])
def test_ctrl_c_during_the_only_trial_is_not_taken_for_its_end(ray_session, tiny_fl_zoo, tmp_path, address, schedule):
    """One trial per encoder, SIGINT while it trains: Tune stops it and marks it TERMINATED like a
    trial that ran to its end, so counting ended trials cannot see the interrupt (the sweep went on
    to the final runs with the cut trial recorded as finished). The trial has a million steps to go:
    only the signal can end it. The one queue counts only what Tune said ended (0); the per-encoder
    experiment counts the stopped trial with the ended ones."""
    results = tmp_path / "results"
    config = _write_yaml(tmp_path / "s.yaml", _tiny_sweep(
        results, tiny_fl_zoo.path, encoders=["flat", "stats"], train={**INTERRUPTED_TRAIN, "steps": 10**6},
        tune={"samples_per_encoder": 1, "max_concurrent_trials": 1, "scheduler": "none", "schedule": schedule}))
    proc = _sweep_process(config, address)
    out = _Output(proc)
    try:
        _interrupt_at_first_checkpoint(proc, out, results, "flat")
        # the driver ends (the fix), or records the cut trial as finished and goes on (the bug)
        _wait_for(lambda: proc.poll() is not None or list(results.glob("tiny-*/trials/flat/*/trial.json")),
                  PATIENCE, "the driver to end or to record the cut trial")
        assert not list(results.glob("tiny-*/trials/flat/*/trial.json")), out.text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = out.text()
    (sweep_dir,) = list(results.glob("tiny-*"))
    assert proc.returncode == 130, text[-3000:]
    said = {"per_encoder": "flat: 1 of 1 trials ended or stopped", "one_queue": "flat: 0 of 1 trials ended"}[schedule]
    assert f"--resume {sweep_dir}" in text and said in text, text[-3000:]
    assert "final runs" not in text  # no final runs started on a cut trial
    assert not (sweep_dir / "trials" / "flat" / "DONE").exists()
    assert not list((sweep_dir / "trials" / "flat").glob("*/trial.json"))
    assert not (sweep_dir / "trials" / "stats").exists()


# -- 4. a diverging trial is marked failed; the rest of the sweep completes -------------------------
# Ray's routine lines that the quiet console keeps off the screen (each seen in a default run before)
RAY_ROUTINE = ("core_worker.cc", "Setting up process group", "Reporting training result", "Checkpoint successfully created",
               "Starting execution of Dataset", "Execution plan of Dataset", "Started training worker group",
               "RayDeprecationWarning", "Parquet dataset sampling", "driver_artifacts")


def test_diverging_trial_is_marked_failed_with_its_reason(ray_session, tiny_fl_zoo, tmp_path, address):
    """Run as a user runs it (the CLI, default console): the failure's reason is on the console,
    Tune's table and our step lines are there once each, Ray's routine chatter is not (it is in the
    sweep folder's console-hidden.log)."""
    import re

    results = tmp_path / "results"
    config = _write_yaml(tmp_path / "s.yaml", _tiny_sweep(
        results, tiny_fl_zoo.path, encoders=["flat", "stats"], search={"flat": {"lr": 1e30}},
    ))
    cli = subprocess.run([sys.executable, "-m", "rnnray.sweep", str(config), "--address", address],
                         capture_output=True, text=True, timeout=PATIENCE)
    console = cli.stdout + cli.stderr
    assert cli.returncode == 0, console[-3000:]
    (sweep_dir,) = list(results.glob("tiny-*"))
    failed = re.search(r"^flat: trial (\w+) failed: (.*)$", cli.stderr, re.M)
    assert failed and "diverged: non-finite" in failed.group(2) and "step 20" in failed.group(2), console[-3000:]
    assert "Trial status:" in cli.stdout and "stats_" in cli.stdout  # Tune's progress table
    assert len(re.findall(r"step +40 +train \S+ +val", cli.stdout)) == 1, cli.stdout[-3000:]  # stats' last step, once
    assert f"tensorboard --logdir {sweep_dir / 'tune'}" in cli.stdout
    shown = [needle for needle in RAY_ROUTINE if needle in console]
    assert not shown and not re.search(r"\tINFO \S+\.py:\d+ -- ", console), (shown, console[-3000:])
    hidden = (sweep_dir / "console-hidden.log").read_text()
    assert "Reporting training result" in hidden and "Setting up process group" in hidden  # kept, off screen
    (flat,) = [json.loads(p.read_text()) for p in (sweep_dir / "trials" / "flat").glob("*/trial.json")]
    assert flat["status"] == "failed" and "diverged: non-finite" in flat["reason"] and "step 20" in flat["reason"]
    (stats,) = [json.loads(p.read_text()) for p in (sweep_dir / "trials" / "stats").glob("*/trial.json")]
    assert stats["status"] == "finished"
    best = json.loads((sweep_dir / "best.json").read_text())
    assert set(best) == {"stats"}
    rows = {r.split(",")[0]: r for r in (sweep_dir / "summary.csv").read_text().splitlines()[1:]}
    assert rows["flat"].split(",")[5] == "1"  # failed trials
    with pytest.raises(ResultsError, match="flat"):
        rnnray.load_best("flat", results=sweep_dir)


def test_a_sweep_whose_every_trial_diverges_exits_1_saying_why(ray_session, tiny_fl_zoo, tmp_path, address):
    """No trial of any encoder left a checkpoint: the sweep ends with one line naming each encoder's
    failures and exit code 1, after writing its summary, and runs no evaluation or report."""
    results = tmp_path / "results"
    config = _write_yaml(tmp_path / "s.yaml", _tiny_sweep(results, tiny_fl_zoo.path, search={"flat": {"lr": 1e30}},
                                                          final={"seeds": 1}, downstream={"enabled": True}))
    cli = subprocess.run([sys.executable, "-m", "rnnray.sweep", str(config), "--address", address, "--quiet"],
                         capture_output=True, text=True, timeout=PATIENCE)
    lines = cli.stderr.strip().splitlines()
    assert cli.returncode == 1, (cli.stdout[-2000:], cli.stderr[-3000:])
    assert lines[-1].startswith("error: no trial of any encoder left a usable checkpoint (flat: 1 trial(s), none usable, "
                                "e.g. diverged: non-finite"), lines[-3:]
    assert sum(ln.startswith("error:") for ln in lines) == 1 and not any(ln.startswith("Traceback") for ln in lines)
    (sweep_dir,) = list(results.glob("tiny-*"))
    assert str(sweep_dir) in lines[-1]
    assert json.loads((sweep_dir / "best.json").read_text()) == {}
    assert "flat" in (sweep_dir / "summary.md").read_text()  # the failed trial, for the user to read
    # (the label oracles ran in the one queue beside the trials: they do not depend on the encoders)
    for never in ("downstream.json", "report.md", "figures"):
        assert not (sweep_dir / never).exists(), never
    assert not _stray_files(sweep_dir)


# -- 5. bad input: one line naming the field or file, exit code 2, nothing written ------------------
@pytest.fixture(scope="module")
def broken_zoos(tiny_fl_zoo, tiny_mnist_zoo, tmp_path_factory):
    root = tmp_path_factory.mktemp("broken")
    truncated, flipped = root / "truncated", root / "flipped"
    for d in (truncated, flipped):
        shutil.copytree(tiny_fl_zoo.path, d)
    shard = sorted((truncated / "shards").glob("*.parquet"))[0]
    shard.write_bytes(shard.read_bytes()[:-100])
    shard = sorted((flipped / "shards").glob("*.parquet"))[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    results = root / "results"  # what a sweep leaves: a results folder with one sweep folder in it
    (results / "tiny-20260101-000000").mkdir(parents=True)
    (results / "tiny-20260101-000000" / "sweep.json").write_text("{}")
    (results / "LATEST").write_text("tiny-20260101-000000\n")
    return {"fl": tiny_fl_zoo.path, "mnist": tiny_mnist_zoo.path, "truncated": str(truncated),
            "flipped": str(flipped), "results": str(results), "shard": shard.name}


def _sweep_case(zoo_override=None, **changes):
    def make(tmp: Path, zoos: dict) -> list[str]:
        data = _tiny_sweep(tmp / "results", zoos["fl"])
        for key, value in changes.items():
            data[key] = value
        if zoo_override:
            data["zoo"] = zoo_override(zoos)
        return [str(_write_yaml(tmp / "sweep.yaml", data))]
    return make


BAD_INPUT = {
    "malformed yaml": (lambda tmp, z: [str(_text(tmp / "sweep.yaml", "name: [unclosed\n  budget: 3"))], "sweep.yaml"),
    "unknown key": (_sweep_case(encodrs=["flat"]), "encodrs"),
    "wrong type": (_sweep_case(budget="lots"), "budget"),
    "out of range": (_sweep_case(tolerance=2.0), "tolerance"),
    "unknown encoder": (_sweep_case(encoders=["flat", "dwz"]), "dwz"),
    "infeasible budget": (_sweep_case(budget=10), "budget"),
    "budget below dlpg's generator": (_sweep_case(encoders=["dlpg"], budget=5000), "'dlpg'"),
    "missing zoo path": (_sweep_case(zoo_override=lambda z: "/nonexistent/zoo"), "/nonexistent/zoo"),
    "truncated shard": (_sweep_case(zoo_override=lambda z: z["truncated"]), "truncated"),
    "checksum mismatch": (_sweep_case(zoo_override=lambda z: z["flipped"]), "checksum"),
    "zoo of another layout": (_sweep_case(zoo_override=lambda z: {**TINY_FL, "path": z["mnist"]}), "mnist"),
    # files that are not YAML text, paths that cannot be written, folders of the wrong kind
    "binary sweep file": (lambda tmp, z: [str(_bytes(tmp / "sweep.yaml", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"))],
                          "not a text file"),
    "folder as sweep file": (lambda tmp, z: [str(_folder(tmp / "sweeps"))], "is a folder"),
    "results below a file": (lambda tmp, z: _sweep_case(results=str(_text(tmp / "notes.txt", "x") / "results"))(tmp, z),
                             "cannot be written"),
    "zoo as results folder": (lambda tmp, z: _sweep_case(results=z["fl"])(tmp, z), "is a zoo"),
    "results folder as zoo": (_sweep_case(zoo_override=lambda z: z["results"]), "is a results folder, not a zoo"),
    # work that could not fit this machine's memory
    "zoo rows beyond memory": (_sweep_case(zoo_override=lambda z: {**TINY_FL, "path": z["fl"] + "-huge", "runs": 10**7}),
                               "a training worker would hold"),
    "zoo chunk beyond memory": (_sweep_case(zoo_override=lambda z: {**TINY_FL, "path": z["fl"] + "-huge", "runs": 10**7,
                                                                     "resources": {"chunk": 10**7}}), "zoo.resources.chunk"),
}


def _bytes(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def _folder(path: Path) -> Path:
    path.mkdir()
    return path


def _text(path: Path, content: str) -> Path:
    path.write_text(content)
    return path


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_sweep_input_is_one_line_exit_2_and_writes_nothing(case, ray_session, broken_zoos, tmp_path, capsys):
    from rnnray.job import main

    make, needle = BAD_INPUT[case]
    argv = make(tmp_path, broken_zoos)
    zoos_before = {k: _tree(Path(v)) for k, v in broken_zoos.items() if k != "shard"}
    before = _tree(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err and needle in err, err
    assert _tree(tmp_path) == before  # no results folder, nothing else
    assert {k: _tree(Path(v)) for k, v in broken_zoos.items() if k != "shard"} == zoos_before


def test_load_best_on_an_empty_results_store_names_it(tmp_path, capsys):
    with pytest.raises(ResultsError) as e:
        rnnray.load_best("dws", results=tmp_path)
    assert str(tmp_path) in str(e.value) and len(str(e.value).splitlines()) == 1
    from rnnray.report import main as report_main

    with pytest.raises(SystemExit) as exit_info:
        report_main([str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and str(tmp_path) in err, err
    assert list(tmp_path.iterdir()) == []


# -- 6. two sweeps, one results directory -----------------------------------------------------------
def test_concurrent_sweeps_share_a_results_directory(ray_session, tiny_fl_zoo, tmp_path, address):
    results = tmp_path / "results"
    config = _write_yaml(tmp_path / "s.yaml", _tiny_sweep(results, tiny_fl_zoo.path))
    procs = [_sweep_process(config, address) for _ in range(2)]
    outs = [p.communicate(timeout=PATIENCE)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[-2000:] for o in outs]
    dirs = sorted(results.glob("tiny-*"))
    assert len(dirs) == 2  # one folder each, even when started in the same second
    for d in dirs:
        recs = list((d / "trials" / "flat").glob("*/trial.json"))
        assert len(recs) == 1
        best = json.loads((d / "best.json").read_text())
        assert Path(best["flat"]["trial_dir"]).parent.parent.parent == d.resolve()  # its own trial, not the other's
        assert len((d / "summary.csv").read_text().splitlines()) == 2
        assert not _stray_files(d)
    assert (results / (results / "LATEST").read_text().strip()).resolve() in {d.resolve() for d in dirs}


# -- 7. the disk fills up, or the results folder turns read-only, mid-run ---------------------------
def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_a_disk_that_fills_up_mid_build_stops_naming_the_shard_and_the_next_build_resumes(ray_session, tiny_fl_zoo,
                                                                                         tmp_path, address):
    """Once the first shard has landed, the zoo actors' files may grow no further than half a shard (a
    file-size limit set on the running processes, as a full disk answers: EFBIG). The build stops with
    one line naming the shard it could not write and exit code 1; what it leaves reads as an unfinished
    zoo (no manifest, only whole shards, at most an actor's hidden temporary file); the next build keeps those shards and
    trains only the rest, and the zoo equals the session's reference zoo row for row."""
    import re
    import resource

    import pyarrow.parquet as pq

    from rnnray.zoo import load_table
    from rnnray.zoo.storage import sha256, shard_runs, verify

    zoo = tmp_path / "zoo"
    config = _write_yaml(tmp_path / "zoo.yaml", {**TINY_FL, "resources": {"actors": 2, "chunk": 2}, "path": str(zoo)})
    command = [sys.executable, "-m", "rnnray.zoo", "build", str(config), "--address", address, "--no-progress"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        # 4 chunks on 2 actors: when the first shard is in, at least one chunk has not been written yet
        first = _wait_for(lambda: list((zoo / "shards").glob("*.parquet")) or proc.poll() is not None, PATIENCE,
                          "the first shard", every=0.05)
        assert proc.poll() is None
        limit = first[0].stat().st_size // 2
        actors = _procs("ZooTrainer")
        assert actors
        for p in actors:
            resource.prlimit(p.pid, resource.RLIMIT_FSIZE, (limit, limit))
        out, err = proc.communicate(timeout=PATIENCE)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    # the actors' own log files are on the full disk too: Ray forwards their logging's complaints, under
    # the actor's name and pid; the command's own output is the one line
    own = "\n".join(line for line in err.splitlines() if not re.match(r"(\x1b\[\d+m)?\(.*pid=\d+", line))
    assert proc.returncode == 1 and "Traceback" not in own, err[-3000:]
    (line,) = _error_lines(own)
    assert f"{zoo / 'shards'}/runs-" in line and line.endswith(".parquet: cannot be written (File too large)"), line
    # no manifest; a temporary file only where the other actor was stopped while writing its shard (a
    # hidden name no reader takes for a shard; seen once in CI): the next build removes it
    assert not (zoo / "manifest.json").exists()
    assert all(Path(p).name.startswith(".") and ".tmp-" in Path(p).name for p in _stray_files(zoo)), _stray_files(zoo)
    kept = {f.name: (sha256(f), f.stat().st_mtime_ns) for f in (zoo / "shards").glob("*.parquet")}
    assert 1 <= len(kept) < 4
    for f in (zoo / "shards").glob("*.parquet"):  # each whole: it reads, with the runs its name says
        assert pq.read_table(f).num_rows == 2 * len(TINY_FL["snapshot_steps"]) and len(shard_runs(f)) == 2
    info = subprocess.run([sys.executable, "-m", "rnnray.zoo", "info", str(zoo)], capture_output=True, text=True, timeout=PATIENCE)
    assert info.returncode == 2 and "manifest.json: missing" in info.stderr, info.stderr  # not taken for a zoo

    again = subprocess.run(command, capture_output=True, text=True, timeout=PATIENCE)
    assert again.returncode == 0, again.stderr[-3000:]
    manifest = verify(zoo, checksums=True)
    assert sorted(r for s in manifest["shards"] for r in s["runs"]) == list(range(TINY_FL["runs"]))
    assert {f.name: (sha256(f), f.stat().st_mtime_ns) for f in (zoo / "shards").glob("*.parquet") if f.name in kept} == kept
    assert not _stray_files(zoo)
    key = [("run_id", "ascending"), ("step", "ascending")]
    assert load_table(zoo).sort_by(key).equals(load_table(tiny_fl_zoo.path).sort_by(key))


def test_a_results_folder_made_read_only_mid_sweep_stops_naming_the_file_and_resumes(ray_session, tiny_fl_zoo, tmp_path,
                                                                                   address):
    """Once the first encoder's trial is recorded, the sweep folder is made immutable (``chattr +i``:
    nothing can be added to it, by root either). The sweep stops with one line naming the file it could
    not write and exit code 1, every record it holds is whole, and ``--resume`` (the folder writable
    again) keeps the recorded trial and finishes the rest, each trial once."""
    from conftest import immutable

    results = tmp_path / "results"
    config = _write_yaml(tmp_path / "s.yaml", _tiny_sweep(results, tiny_fl_zoo.path, encoders=["flat", "stats"]))
    proc = _sweep_process(config, address)
    out = _Output(proc)
    try:
        # flat's records are whole once best.json names it (the summary's last file): made immutable
        # earlier, a write in flight could leave its temporary file, which nobody can then remove
        def flat_in_best():
            for best in results.glob("tiny-*/best.json"):
                try:
                    if "flat" in json.loads(best.read_text()):
                        return [best]
                except (OSError, ValueError):
                    pass
            return proc.poll() is not None
        (best,) = _wait_for(flat_in_best, PATIENCE, "flat in best.json", every=0.05)
        sweep_dir = best.parent
        (record,) = list(sweep_dir.glob("trials/flat/*/trial.json"))
        with immutable(sweep_dir):
            proc.wait(timeout=PATIENCE)  # stats still has its whole trial to run: the sweep cannot finish
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = out.text()
    assert proc.returncode == 1 and "Traceback" not in text, text[-3000:]
    (line,) = _error_lines(text)
    assert line.startswith(f"error: {sweep_dir}/") and line.endswith("cannot be written (Operation not permitted)"), line
    assert not _stray_files(sweep_dir)
    assert json.loads(record.read_text())["status"] == "finished"  # whole, as written before the fault
    assert not list(sweep_dir.glob("trials/stats/*/trial.json"))
    recorded = record.read_text()

    again = _sweep_process(config, address, "--resume")
    log, _ = again.communicate(timeout=PATIENCE)
    assert again.returncode == 0, log[-3000:]
    assert list(results.glob("tiny-*")) == [sweep_dir]
    for enc in ("flat", "stats"):
        (rec,) = [json.loads(p.read_text()) for p in sweep_dir.glob(f"trials/{enc}/*/trial.json")]
        assert rec["status"] == "finished"
    assert record.read_text() == recorded  # kept as it was, not trained or recorded again
    assert len((sweep_dir / "summary.csv").read_text().splitlines()) == 3
    assert not _stray_files(sweep_dir)
