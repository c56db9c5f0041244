"""The one queue's schedule: slot utilisation from the trials' times, ASHA's rungs kept across an
interrupted and resumed sweep (real ``python -m rnnray.sweep`` processes, a SIGINT on an observed
rung), and the schedule benchmark on a simulated GPU node, old schedule against new in one run.
(The one queue's records, final seeds and oracles are checked on ``tests/test_sweep.py``'s
``final_sweep``, which runs it.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import PATIENCE

from test_faults import _Output, _sweep_process, _wait_for, _write_yaml

pytestmark = pytest.mark.timeout(4 * PATIENCE)


def test_utilisation_is_busy_over_available_slot_seconds_per_session():
    """Two slots: 10 s of one trial beside 4 s of another in a 10 s session (14 of 20), and a
    resumed session of 3 s with one trial busy (3 of 6): the gap between sessions is not counted."""
    from rnnray.sweep.timeline import phase_seconds, utilisation

    runs = [{"session": "a", "role": "search", "start": 100.0, "end": 110.0},
            {"session": "a", "role": "final", "start": 102.0, "end": 106.0},
            {"session": "b", "role": "final", "start": 500.0, "end": 503.0}]
    u = utilisation(runs, slots=2)
    assert (u["busy_slot_s"], u["available_slot_s"]) == (17.0, 26.0) and u["utilisation"] == pytest.approx(17 / 26)
    phases = phase_seconds({"runs": runs, "phases": [{"session": "a", "phase": "zoo", "start": 90.0, "end": 99.5}]})
    assert phases == {"zoo": 9.5, "search": 10.0, "final": 7.0}  # final: 4 s in a, 3 s in b


def test_idle_slot_seconds_are_split_at_the_last_start_and_hand_overs_are_timed_from_the_freed_slot():
    """Two slots. A runs 0-10 and B 0-4; C takes B's slot at 7 (a 3 s hand-over: 3 idle slot-seconds
    while work was still ahead) and ends at 12, after A (2 idle slot-seconds in the tail after the last
    start). A resumed session of one 1 s trial adds 1 idle slot-second, all tail."""
    from rnnray.sweep.timeline import idle_split, utilisation

    runs = [{"session": "a", "start": 0.0, "end": 10.0}, {"session": "a", "start": 0.0, "end": 4.0},
            {"session": "a", "start": 7.0, "end": 12.0}]
    u, split = utilisation(runs, slots=2), idle_split(runs, slots=2)
    assert split == {"idle_before_last_start_slot_s": 3.0, "idle_tail_slot_s": 2.0, "handover_slot_s": 3.0,
                     "handover_median_s": 3.0}
    assert u["available_slot_s"] - u["busy_slot_s"] == 5.0  # the two parts add up to all idle time
    runs.append({"session": "b", "start": 100.0, "end": 101.0})  # one slot of two busy in 1 s: all tail
    split = idle_split(runs, slots=2)
    assert (split["idle_before_last_start_slot_s"], split["idle_tail_slot_s"]) == (3.0, 3.0)
    assert idle_split([], slots=2)["handover_median_s"] is None


def test_the_report_says_where_the_idle_slot_seconds_lie():
    from rnnray.report.sections import schedule_lines
    from rnnray.sweep.timeline import idle_split, utilisation

    runs = [{"session": "a", "start": 0.0, "end": 10.0}, {"session": "a", "start": 0.0, "end": 4.0},
            {"session": "a", "start": 7.0, "end": 12.0}]
    s = {"slots": 2, **utilisation(runs, 2), **idle_split(runs, 2), "runs": 3, "phase_seconds": {"search": 12.0}}
    line = schedule_lines(s)[0]
    assert "slot utilisation 79% (19 busy of 24 slot-seconds" in line, line
    assert "Idle: 3 slot-seconds while work was still to start (3 of them freed slots waiting for their next trial, " \
           "median 3.0 s), 2 in the tail after the last start." in line, line
    assert "Idle:" not in schedule_lines({k: v for k, v in s.items() if not k.startswith(("idle", "handover"))})[0]


# -- ASHA's rungs across an interrupt ----------------------------------------------------------------
def _rung_sweep(results: Path, zoo: str) -> dict:
    """One encoder, four trials one at a time, ASHA at rungs 1, 2 and 4 of four evaluations. The
    learning rate is searched among the paper's 1e-4 (trial 0) and six far too small ones, so a
    later trial is stopped at its first rung for being worse than trial 0 there: a decision that
    needs trial 0's rung entries, which a Tune-restored ASHA would not have. (TPE's first proposals
    are random draws: with two small rates, one seed drew 1e-4 three times and nothing was stopped.)"""
    return {"name": "rungs", "results": str(results), "zoo": zoo, "encoders": ["flat"], "budget": 20000,
            "search": {"flat": {"lr": [1e-4, 1e-7, 1e-8, 1e-9, 1e-10, 1e-11, 1e-12]}},
            "train": {"steps": 400, "eval_every": 100, "batch_size": 8, "emulator_hidden": 16, "eval_sequences": 2},
            "tune": {"samples_per_encoder": 4, "max_concurrent_trials": 1, "scheduler": "asha", "grace_period": 1,
                     "reduction_factor": 2, "seed": 3},
            "final": {"seeds": 0}, "downstream": {"enabled": False}}


def _logged(results: Path) -> list[dict]:
    try:
        return json.loads(next(results.glob("rungs-*/rungs.json")).read_text())
    except (StopIteration, json.JSONDecodeError, FileNotFoundError):
        return []


def test_a_resumed_sweep_stops_the_trials_an_uninterrupted_one_stops(ray_session, tiny_fl_zoo, tmp_path):
    from rnnray.sweep.rungs import decisions

    address = ray_session.get_runtime_context().gcs_address
    whole = _write_yaml(tmp_path / "whole.yaml", _rung_sweep(tmp_path / "whole", tiny_fl_zoo.path))
    cut = _write_yaml(tmp_path / "cut.yaml", _rung_sweep(tmp_path / "cut", tiny_fl_zoo.path))
    proc = _sweep_process(whole, address)
    out, _ = proc.communicate(timeout=2 * PATIENCE)
    assert proc.returncode == 0, out[-3000:]
    expected = decisions(next((tmp_path / "whole").glob("rungs-*/rungs.json")))
    assert any(d["stopped_at"] for d in expected.values()), expected  # the test needs a stop to compare

    # the same sweep, SIGINT once trial 0 has passed its first rung and before it ends (it has 3 more
    # evaluations of 100 steps to go, against the ~0.1 s this test needs to see the entry and signal)
    proc = _sweep_process(cut, address)
    text = _Output(proc)
    try:
        _wait_for(lambda: any(e["key"] == "flat/search/0" for e in _logged(tmp_path / "cut")) or proc.poll() is not None,
                  PATIENCE, "trial 0's first rung", every=0.05)
        assert proc.poll() is None, text.text()[-3000:]
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=PATIENCE)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, text.text()[-3000:]
    logged = _logged(tmp_path / "cut")
    assert {e["key"] for e in logged} == {"flat/search/0"} and not any(e["event"] == "complete" for e in logged)

    again = _sweep_process(cut, address, "--resume")
    out, _ = again.communicate(timeout=2 * PATIENCE)
    assert again.returncode == 0, out[-3000:]
    assert decisions(next((tmp_path / "cut").glob("rungs-*/rungs.json"))) == expected
    (sweep_dir,) = list((tmp_path / "cut").glob("rungs-*"))
    recs = [json.loads(p.read_text()) for p in (sweep_dir / "trials" / "flat").glob("*/trial.json")]
    assert len(recs) == 4 and len({r["trial_id"] for r in recs}) == 4  # each trial once
    stopped = sorted(r["status"] == "stopped early" for r in recs)
    assert stopped == sorted(bool(d["stopped_at"]) for d in expected.values())


# -- the benchmark ---------------------------------------------------------------------------------
def test_bench_schedule_refuses_bad_options_in_one_line(tmp_path):
    for args, needle in ((["--fractions", "0"], "--fractions"), (["--encoders", "dwz"], "--encoders: unknown encoder 'dwz'"),
                         (["--samples", "0"], "--samples"), (["--schedules", "one_queue+fast"], "--schedules: unknown modifier 'fast'"),
                         (["--schedules", "one_line"], "--schedules: unknown schedule 'one_line'")):
        p = subprocess.run([sys.executable, "-m", "rnnray.bench", "schedule", *args, "--out", str(tmp_path / "o")],
                           capture_output=True, text=True, timeout=PATIENCE)
        assert p.returncode == 2 and needle in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert not (tmp_path / "o").exists()
    (tmp_path / "LATEST").write_text("s-1\n")  # tmp_path is now a results folder: OUT/zoo would be inside it
    p = subprocess.run([sys.executable, "-m", "rnnray.bench", "schedule", "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=PATIENCE)
    assert p.returncode == 2 and "--out" in p.stderr and "inside a results folder" in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and not (tmp_path / "o").exists(), p.stderr


@pytest.mark.own_cluster
def test_the_one_queue_keeps_a_gpu_nodes_slots_busier_than_per_encoder_experiments(tmp_path):
    """The benchmark, tiny: two encoders of three trials each on a node of one logical GPU shared by
    two trials (gpus_per_worker 0.5, two slots), both schedules in one run. Per encoder, each
    experiment's third trial runs alone (at most 3 of 4 slot-rounds busy, and the gap between
    experiments idle); the one queue runs the six trials in three full rounds. The one queue runs
    with ``+nice``: its training workers lower their priority, the per-encoder ones do not."""
    from rnnray.bench.schedule import bench_schedule, format_schedule

    r = bench_schedule(tmp_path, ["flat", "stats"], samples=3, seeds=0, gpus=1, fractions=[0.5],
                       schedules=["per_encoder", "one_queue+nice"])
    by = {c["schedule"].split("+")[0]: c for c in r["cases"]}
    # as each worker read it, mid-run: Ray's default of 15 per encoder, 19 with +nice (the job's
    # workers start at 0 then, and the training workers lower themselves)
    for case, nice in ((by["per_encoder"], 15), (by["one_queue"], 19)):
        placements = [w for f in Path(case["sweep"]).rglob("train_result.json")
                      for w in json.loads(f.read_text())["placement"]]
        assert placements and {w["nice"] for w in placements} == {nice}, (case["schedule"], placements)
    assert by["one_queue"]["slots"] == by["per_encoder"]["slots"] == 2
    assert by["one_queue"]["trials"] == by["per_encoder"]["trials"] == 6
    # the order of events, not their speed (on 2 loaded cores a trial's hand-over can outweigh the
    # idle slot a tail leaves): only the one queue runs trials of two encoders at the same time
    def mixed(case) -> bool:
        runs = json.loads((Path(case["sweep"]) / "timeline.json").read_text())["runs"]
        return any(a["encoder"] != b["encoder"] and a["start"] < b["end"] and b["start"] < a["end"]
                   for a in runs for b in runs)
    assert mixed(by["one_queue"]) and not mixed(by["per_encoder"]), r
    for c in r["cases"]:  # every idle slot-second is either ahead of the last start or in the tail
        idle = c["available_slot_s"] - c["busy_slot_s"]
        assert c["idle_before_last_start_slot_s"] + c["idle_tail_slot_s"] == pytest.approx(idle, abs=1e-6), c
    assert "hand-over" in format_schedule(r) and "one_queue+nice" in format_schedule(r)


def test_a_worker_yields_the_cpu_on_every_thread_it_has():
    """In a process of its own (a nice value cannot be lowered again): threads started before the
    call are lowered too, a thread started after inherits it, and a lower value never raises it back."""
    code = """
import os, threading
from rnnray.runtime.machine import yield_cpu
stop = threading.Event()
before = threading.Thread(target=stop.wait); before.start()
got = yield_cpu(7)
after = threading.Thread(target=stop.wait); after.start()
again = yield_cpu(3)
nice = {int(t): os.getpriority(os.PRIO_PROCESS, int(t)) for t in os.listdir('/proc/self/task')}
stop.set()
print(got, again, len(nice), sorted(set(nice.values())))
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=PATIENCE)
    assert p.returncode == 0, p.stderr
    got, again, threads, values = p.stdout.split(maxsplit=3)
    assert (int(got), int(again), values.strip()) == (7, 7, "[7]") and int(threads) >= 3, p.stdout
