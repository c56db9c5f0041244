"""``python -m rnnray.report.compare``: sweeps side by side, computed from their stored files."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rnnray.analysis.statistics import paired
from rnnray.report.compare import compare_table, differing_settings, main, sweep_rows
from rnnray.results.folder import SweepFolder

T_975_DF2 = 4.302652729911275  # Student-t 97.5 % quantile, 2 degrees of freedom (tables)


def _sweep(root: Path, name: str, conditioning: str, enc_vals, step_vals, tstep_vals, dims, head_acc) -> Path:
    folder = root / f"{name}-20260101-000000"
    folder.mkdir(parents=True)
    config = {"name": name, "results": str(root), "zoo": {"path": f"/somewhere/{name}", "runs": 432},
              "budget": 100000, "train": {"steps": 1500, "conditioning": conditioning, "lr": 0.001},
              "tune": {"max_concurrent_trials": 2}}
    (folder / "sweep.json").write_text(json.dumps({"config": config}))
    seeds = [1, 2, 3]
    (folder / "final.json").write_text(json.dumps({"encoders": {"noninteractive": {"best": {
        "seeds": seeds, "val_loss": enc_vals}}}}))
    runs = lambda vals: {"runs": [{"seed": s, "best_val_loss": v} for s, v in zip(seeds, vals)]}  # noqa: E731
    (folder / "oracles.json").write_text(json.dumps({"seeds": seeds, "modes": {"step": runs(step_vals),
                                                                                  "task+step": runs(tstep_vals)}}))
    (folder / "downstream.json").write_text(json.dumps({
        "chance": {"task.head_acc": 1 / 6},
        "final": {"noninteractive": {"seeds": seeds, "effective_dim": dims,
                                     "values": {"task.head_acc": {"val": head_acc, "ood_test": [0, 0, 0]}}}}}))
    return folder


def _cells(table: str) -> tuple[list[str], list[list[str]]]:
    rows = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in table.splitlines() if ln.startswith("| ") and not ln.startswith("| ---")]
    return rows[0], rows[1:]


def test_the_table_names_the_differing_setting_and_recomputes_every_figure(tmp_path):
    every = _sweep(tmp_path, "cond-every", "every_step", [0.0516, 0.0523, 0.0531], [0.0615, 0.0611, 0.0620],
                   [0.0480, 0.0485, 0.0478], [4.3, 4.1, 3.9], [0.30, 0.33, 0.27])
    bos = _sweep(tmp_path, "cond-bos", "bos", [0.0625, 0.0633, 0.0618], [0.0622, 0.0630, 0.0617],
                 [0.0457, 0.0461, 0.0455], [1.1, 1.2, 1.3], [0.20, 0.24, 0.22])
    sweeps = [sweep_rows(SweepFolder(every)), sweep_rows(SweepFolder(bos))]
    # name, results and zoo.path differ too, but they place a sweep, they do not change it
    assert differing_settings([s["config"] for s in sweeps]) == ["train.conditioning"]

    head, rows = _cells(compare_table(sweeps))
    assert head[:3] == ["sweep", "`train.conditioning`", "encoder"]
    assert [r[:3] for r in rows] == [["cond-every", "every_step", "noninteractive"], ["cond-bos", "bos", "noninteractive"]]
    col = {h: i for i, h in enumerate(head)}
    enc = np.array([0.0516, 0.0523, 0.0531])
    half = T_975_DF2 * enc.std(ddof=1) / math.sqrt(3)
    assert rows[0][col["val loss (95 % interval)"]] == f"{enc.mean():.4f} ({enc.mean() - half:.4f}, {enc.mean() + half:.4f})"
    want = paired({1: 0.0516, 2: 0.0523, 3: 0.0531}, {1: 0.0615, 2: 0.0611, 3: 0.0620})
    assert rows[0][col["against the step oracle (same seeds)"]] == f"lower by {abs(want.diff):.4f}, p = {want.p:.2g} (paired, n = 3)"
    assert rows[0][col["effective dimension"]] == "4.1"
    assert rows[1][col["effective dimension"]] == "1.2"
    assert rows[0][col["task.head_acc (val; chance 0.167)"]] == "0.3"
    assert rows[1][col["oracle task+step"]].startswith("0.0458 (")


def test_each_encoder_is_tested_against_itself_in_the_first_sweep(tmp_path, capsys):
    """The conditioning study's question, per encoder: paired over seeds when both sweeps drew the
    same batches for a seed (same zoo recipe and batch size), Welch's test when they did not."""
    from rnnray.analysis.statistics import welch
    from rnnray.report.compare import across_table

    ev, bv = [0.0516, 0.0523, 0.0531], [0.0625, 0.0633, 0.0618]
    every = _sweep(tmp_path, "cond-every", "every_step", ev, [0.0615, 0.0611, 0.0620], [0.0480, 0.0485, 0.0478],
                   [4.3, 4.1, 3.9], [0.30, 0.33, 0.27])
    bos = _sweep(tmp_path, "cond-bos", "bos", bv, [0.0622, 0.0630, 0.0617], [0.0457, 0.0461, 0.0455],
                 [1.1, 1.2, 1.3], [0.20, 0.24, 0.22])
    sweeps = [sweep_rows(SweepFolder(every)), sweep_rows(SweepFolder(bos))]
    head, rows = _cells(across_table(sweeps))
    want = paired(dict(zip([1, 2, 3], bv)), dict(zip([1, 2, 3], ev)))
    assert rows == [["`noninteractive`", "cond-bos", f"{want.diff:+.4f}", f"paired, n = 3, p = {want.p:.2g}",
                     "higher in `cond-bos`"]]
    assert want.p < 0.05

    other = dict(sweeps[1], config={**sweeps[1]["config"], "zoo": {**sweeps[1]["config"]["zoo"], "runs": 864}})
    (row,) = _cells(across_table([sweeps[0], other]))[1]
    w = welch(bv, ev)
    assert row[3] == f"welch, n = 3, p = {w.p:.2g}" and w.p != want.p
    assert across_table(sweeps[:1]) == ""
    assert across_table([sweeps[0], dict(sweeps[1], zoo_kind="mnist")]) == ""  # another zoo kind: not comparable
    # the command prints it under the main table
    capsys.readouterr()
    assert main([str(every), str(bos)]) == 0
    out = capsys.readouterr().out
    assert out.index("| sweep |") < out.index("Each encoder against itself in `cond-every`")


def test_a_setting_one_sweep_did_not_store_is_shown_as_not_recorded(tmp_path):
    """A sweep stored before a setting existed has no value for it: the table must not print
    Python's None as if it were one, and says what the gap means."""
    old = _sweep(tmp_path, "cond-old", "every_step", [0.0516, 0.0523, 0.0531], [0.0615, 0.0611, 0.0620],
                 [0.0480, 0.0485, 0.0478], [4.3, 4.1, 3.9], [0.30, 0.33, 0.27])
    new = _sweep(tmp_path, "cond-new", "every_step", [0.0625, 0.0633, 0.0618], [0.0622, 0.0630, 0.0617],
                 [0.0457, 0.0461, 0.0455], [1.1, 1.2, 1.3], [0.20, 0.24, 0.22])
    doc = json.loads((new / "sweep.json").read_text())
    doc["config"]["tune"]["schedule"] = "one_queue"
    (new / "sweep.json").write_text(json.dumps(doc))
    table = compare_table([sweep_rows(SweepFolder(old)), sweep_rows(SweepFolder(new))])
    head, rows = _cells(table)
    assert head[1] == "`tune.schedule`" and [r[1] for r in rows] == ["not recorded", "one_queue"]
    assert "None" not in table and "stored before the setting existed" in table


def test_the_command_writes_the_table_and_refuses_what_is_not_a_sweep(tmp_path):
    folder = _sweep(tmp_path, "one", "every_step", [0.05, 0.051, 0.052], [0.06, 0.061, 0.062], [0.04, 0.041, 0.042],
                    [2.0, 2.0, 2.0], [0.3, 0.3, 0.3])
    out = tmp_path / "table.md"
    assert main([str(folder), "--out", str(out)]) == 0
    assert out.read_text().startswith("| sweep | encoder |")  # one sweep: no setting differs

    (tmp_path / "empty").mkdir()
    r = subprocess.run([sys.executable, "-m", "rnnray.report.compare", str(tmp_path / "empty"), "--out", str(tmp_path / "x.md")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "empty" in r.stderr
    assert not (tmp_path / "x.md").exists()
    (folder / "final.json").unlink()
    with pytest.raises(Exception, match="no final.json"):
        sweep_rows(SweepFolder(folder))


def _zoo_b_sweep(root: Path) -> Path:
    """A zoo-B sweep: noninteractive below flat on every one of 3 shared seeds."""
    folder = root / "study-mnist-20260101-000000"
    folder.mkdir(parents=True)
    (folder / "sweep.json").write_text(json.dumps({"config": {"name": "study-mnist", "zoo": {"kind": "mnist"}},
                                                   "zoo_kind": "mnist",
                                                   "encoders": {"noninteractive": {"kind": "functionalist"},
                                                                "flat": {"kind": "mechanistic"}}}))
    best = lambda vals: {"best": {"seeds": [1, 2, 3], "val_loss": vals}}  # noqa: E731
    (folder / "final.json").write_text(json.dumps({"encoders": {"noninteractive": best([0.250, 0.262, 0.255]),
                                                                "flat": best([0.300, 0.309, 0.304])}}))
    return folder


def test_the_verdict_over_a_sweep_per_zoo_answers_both_zoos(tmp_path, capsys):
    """``--verdict`` puts a zoo-A sweep and a zoo-B sweep into one verdict: zoo A's rows are the ones
    that sweep's own report computed (its stored analysis.json), and claim (b), "not measured" in every
    single-zoo report, is decided from the zoo-B sweep. Two sweeps on one zoo: one line, exit code 2."""
    zoo_a = Path(__file__).parents[1] / "docs" / "runs" / "conditioning-every_step-2026-12-04"
    zoo_b = _zoo_b_sweep(tmp_path)
    assert main([str(zoo_a), str(zoo_b), "--verdict"]) == 0
    out = capsys.readouterr().out
    rows = {(r[0], r[1]): r for r in _cells(out[out.index("| claim |"):])[1]}
    own = json.loads((zoo_a / "analysis.json").read_text())["verdict"]
    for r in own:
        if r["zoo"].startswith("A"):
            assert rows[(r["claim"], r["zoo"])][2:] == [r["numbers"], r["test"], f"**{r['verdict']}**"]
    b = rows[("(b) the same on zoo B", "B (sequential MNIST)")]
    assert b[4] == "**holds**" and "noninteractive 0.2557" in b[2], b
    assert "Sweeps: formal_languages: conditioning-every_step-2026-12-04; mnist: study-mnist-20260101-000000" in out

    assert main([str(zoo_b), str(_zoo_b_sweep(tmp_path / "again")), "--verdict"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "are both on a mnist zoo; give one sweep per zoo" in err, err
