"""The typed reader of a sweep's own files: every field the report reads, and files written by
earlier versions (fewer fields) still load."""

from __future__ import annotations

import json

import pytest

from rnnray.analysis.findings import emulation_rows
from rnnray.results import ResultsError, SweepFolder
from rnnray.results.records import read_final, read_oracles, read_trials


def _write(path, doc):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))


def test_records_of_an_earlier_version_load(tmp_path):
    """A trial record and a final.json as the first versions wrote them: no paper_config, role,
    status or interval fields."""
    folder = SweepFolder(tmp_path)
    _write(tmp_path / "trials" / "dws" / "dws_0" / "trial.json", {"trial_id": "dws_0", "best_val_loss": 0.06, "config": {"lr": 1e-3}})
    _write(tmp_path / "trials" / "dws" / "dws_1" / "trial.json", {"encoder": "dws", "trial_id": "dws_1", "best_val_loss": 0.05,
                                                                  "paper_config": True, "status": "finished", "n_params": 1000})
    (tmp_path / "trials" / "dws" / "torn" ).mkdir()
    (tmp_path / "trials" / "dws" / "torn" / "trial.json").write_text('{"trial_id": ')  # torn by a crash: left out
    _write(folder.final_json, {"encoders": {"dws": {"best": {"val_loss": [0.05, 0.052], "seeds": [1, 2]}}}})
    trials = read_trials(folder)
    assert [r.trial_id for r in trials["dws"]] == ["dws_0", "dws_1"] and trials["dws"][0].encoder == "dws"
    assert trials["dws"][0].status == "finished" and not trials["dws"][0].paper_config and trials["dws"][0].usable
    final = read_final(folder)
    assert final["dws"]["best"].finite_val_losses == [0.05, 0.052] and final["dws"]["best"].status == [None, None]
    rows = emulation_rows(trials, {"dws": {"trial_id": "dws_1", "best_val_loss": 0.05, "paper_config": True}}, ["dws"])
    assert rows["dws"]["trials"] == 2 and rows["dws"]["tuning_gain"] == 0.0 and rows["dws"]["selected_is_paper"]
    assert rows["dws"]["val_loss_mean"] == pytest.approx(0.055)
    assert read_oracles(folder).modes == {}


def test_a_final_json_that_is_not_json_is_named(tmp_path):
    folder = SweepFolder(tmp_path)
    folder.final_json.write_text("{not json")
    with pytest.raises(ResultsError, match="final.json"):
        read_final(folder)
