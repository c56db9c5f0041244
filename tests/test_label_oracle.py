"""Label oracles: each sees only its labels, the labels name each row's task and step, the constant
oracle is the constant baseline run for run, and the command gives one line and exit 2 for bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from rnnray.config import TrainConfig
from rnnray.analysis.oracles import LabelRepresentation, load_zoo, task_features, train_oracle
from rnnray.label_oracle import main
from rnnray.emulation.splits import zoo_splits
from rnnray.train.drivers import train_local
from rnnray.train.model import BASELINE
from rnnray.train.plan import plan_run
from rnnray.zoo import load_table


def _cfg(zoo, tmp_path, **over) -> TrainConfig:
    base = dict(zoo=str(zoo), emulator_hidden=32, lr=3e-3, batch_size=16, steps=40, eval_every=20, eval_sequences=4,
                storage_path=str(tmp_path / "results"), max_failures=0)
    return TrainConfig(**{**base, **over})


def test_each_oracle_sees_only_its_labels():
    torch.manual_seed(0)
    task = torch.tensor([[0, 1, 2], [0, 1, 2], [5, 4, 3], [5, 4, 3]])
    step = torch.tensor([0, 2, 0, 2])
    z = {m: LabelRepresentation(m, "formal_languages", n_steps=3)((task, step)) for m in
         ("constant", "step", "task", "task+step")}
    same = lambda a, b: torch.equal(a, b)  # noqa: E731
    assert all(same(z["constant"][0], z["constant"][i]) for i in range(4))
    assert same(z["step"][0], z["step"][2]) and not same(z["step"][0], z["step"][1])  # same step, other task
    assert same(z["task"][0], z["task"][1]) and not same(z["task"][0], z["task"][2])  # same task, other step
    assert len({tuple(r.tolist()) for r in z["task+step"]}) == 4
    # zoo B: the angle enters as (cos, sin), so 0 and 360 degrees are one task
    feats = task_features("mnist", [0.0, 360.0, 90.0])
    assert torch.allclose(feats[0], feats[1], atol=1e-6) and torch.allclose(feats[2], torch.tensor([0.0, 1.0]), atol=1e-6)
    with pytest.raises(ValueError, match="unknown oracle mode"):
        LabelRepresentation("weights", "formal_languages", 3)


def test_labels_name_each_rows_task_and_step(tiny_fl_zoo, tmp_path):
    plan = plan_run(BASELINE, _cfg(tiny_fl_zoo.path, tmp_path))
    splits, labels, n_steps = load_zoo(plan)
    assert n_steps == len(tiny_fl_zoo.snapshot_steps)
    table = load_table(tiny_fl_zoo.path, columns=["run_id", "step", "task"])  # read apart from the oracle's path
    truth = {(int(r), int(s)): np.asarray(t) for r, s, t in
             zip(table["run_id"].to_pylist(), table["step"].to_pylist(), table["task"].to_pylist())}
    seen = 0
    for name, data in splits.items():
        for i, (r, s) in enumerate(zip(data.run_id, data.step)):
            task = truth[(int(r), int(s))]
            assert labels[name].task[i].tolist() == (task[1:] + 3).tolist()
            assert tiny_fl_zoo.snapshot_steps[int(labels[name].step[i])] == int(s)
            seen += 1
    assert seen == table.num_rows
    # the splits stay by task: no validation task is a training task
    sp = zoo_splits(tiny_fl_zoo.path)
    assert not {sp.run_task[int(r)] for r in splits["val"].run_id} & {sp.run_task[int(r)] for r in splits["train"].run_id}


@pytest.mark.parametrize("conditioning,scope,clip", [("bos", "separate", 0.1), ("every_step", "global", 1e-3)])
def test_the_constant_oracle_is_the_constant_baseline(conditioning, scope, clip, tiny_fl_zoo, tmp_path, one_torch_thread):
    """Same seed, batches, sequences, loss, optimiser, clipping, emulator conditioning and evaluation
    as the training loop: the ``constant`` oracle must retrace the ``constant`` baseline's run
    evaluation by evaluation, under either conditioning and either clipping (at a limit the
    gradients exceed, so the clipping acts)."""
    cfg = _cfg(tiny_fl_zoo.path, tmp_path, seed=4, conditioning=conditioning, grad_clip_scope=scope, grad_clip=clip)
    baseline = train_local(BASELINE, cfg)
    plan = plan_run(BASELINE, cfg)
    splits, labels, n_steps = load_zoo(plan)
    oracle = train_oracle("constant", splits, labels, plan.zoo_kind, n_steps, plan.train)
    assert [h["step"] for h in oracle.history] == [h["step"] for h in baseline.history] == [20, 40]
    for mine, theirs in zip(oracle.history, baseline.history):
        assert mine["val_loss"] == pytest.approx(theirs["val_loss"], rel=1e-5, abs=1e-7)
        assert mine["ood_loss"] == pytest.approx(theirs["ood_loss"], rel=1e-5, abs=1e-7)
    assert oracle.best_val_loss == pytest.approx(baseline.best_val_loss, rel=1e-5)
    # and a different oracle is a different run
    step_only = train_oracle("step", splits, labels, plan.zoo_kind, n_steps, plan.train)
    assert step_only.history[-1]["val_loss"] != pytest.approx(baseline.history[-1]["val_loss"], rel=1e-5)


def _sweep_yaml(tmp_path, zoo) -> str:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({
        "name": "oracle", "results": str(tmp_path / "results"), "zoo": str(zoo), "encoders": ["flat"],
        "budget": 20000, "train": {"steps": 20, "eval_every": 10, "batch_size": 16, "emulator_hidden": 16,
                                   "eval_sequences": 4, "lr": 3e-3},
        "final": {"seeds": 2, "first_seed": 5}, "resources": {"workers": 1}}))
    return str(path)


def test_the_command_runs_every_mode_under_the_final_seeds(tiny_fl_zoo, tmp_path, capsys, one_torch_thread):
    sweep = _sweep_yaml(tmp_path, tiny_fl_zoo.path)
    out = tmp_path / "oracle.json"
    assert main([sweep, "--modes", "constant,task+step", "--json", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text())
    assert list(printed["modes"]) == ["constant", "task+step"] and printed["seeds"] == [5, 6]
    for mode in printed["modes"].values():
        assert [r["seed"] for r in mode["runs"]] == [5, 6]
        assert mode["runs"][0]["best_val_loss"] != mode["runs"][1]["best_val_loss"]  # the seeds really differ
        losses = [r["best_val_loss"] for r in mode["runs"]]
        assert mode["val_loss"]["mean"] == pytest.approx(np.mean(losses)) and mode["val_loss"]["n"] == 2
        assert mode["val_loss"]["low"] < mode["val_loss"]["mean"] < mode["val_loss"]["high"]
    assert printed["train"]["steps"] == 20


@pytest.mark.parametrize("args, field", [
    (["--modes", "constant,weights"], "--modes"),
    (["--seeds", "0"], "--seeds"),
    ([], "missing.yaml"),
])
def test_bad_input_is_one_line_and_exit_2(args, field, tiny_fl_zoo, tmp_path, capsys):
    sweep = str(tmp_path / "missing.yaml") if field == "missing.yaml" else _sweep_yaml(tmp_path, tiny_fl_zoo.path)
    out = tmp_path / "oracle.json"
    with pytest.raises(SystemExit) as e:
        main([sweep, "--out", str(out), *args])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and field in err[0]
    assert not out.exists()


def test_an_out_file_that_cannot_be_written_is_refused_before_the_oracles_train(tiny_fl_zoo, tmp_path):
    """``--out`` below a regular file (no one can create it, root included), or an existing folder:
    one line naming --out, exit code 2, from the command itself (a real process), and no oracle
    trained (the command prints a line per oracle run as it goes; its output is empty)."""
    import subprocess
    import sys

    sweep = _sweep_yaml(tmp_path, tiny_fl_zoo.path)
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "folder").mkdir()
    for out, why in ((tmp_path / "notes.txt" / "oracle.json", "cannot be written"), (tmp_path / "folder", "is a folder")):
        r = subprocess.run([sys.executable, "-m", "rnnray.label_oracle", sweep, "--out", str(out)], capture_output=True,
                           text=True, timeout=600)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and r.stdout == "", (r.stdout[-2000:], r.stderr[-2000:])
        assert lines[0].startswith("error: --out ") and why in lines[0], lines  # the path, or its folder in the way
    assert (tmp_path / "notes.txt").read_text() == "x" and list((tmp_path / "folder").iterdir()) == []


def test_the_report_reads_each_encoder_against_the_oracles(tmp_path):
    """Constructed seeds: one encoder clearly below the step oracle and level with task+step, one
    at the step oracle, one below both, one with a single seed."""
    from rnnray.analysis.oracles import oracle_comparisons
    from rnnray.report.sections import oracle_section as render
    from rnnray.results.folder import SweepFolder
    from rnnray.results.records import read_oracles

    def oracle_section(folder):  # the report's lines, from the data the analysis stores
        return render(read_oracles(folder), oracle_comparisons(folder))

    def runs(values):
        return {"runs": [{"seed": i, "best_val_loss": v, "best_ood_loss": v} for i, v in enumerate(values)],
                "val_loss": {"mean": float(np.mean(values)), "low": None, "high": None, "n": len(values)}}

    (tmp_path / "oracles.json").write_text(json.dumps({"modes": {
        "step": runs([0.065, 0.066, 0.064]), "task+step": runs([0.050, 0.0505, 0.0495])}}))
    (tmp_path / "final.json").write_text(json.dumps({"encoders": {
        "wins": {"best": {"val_loss": [0.050, 0.051, 0.049]}},
        "arc": {"best": {"val_loss": [0.0650, 0.0655, 0.0645]}},
        "beyond": {"best": {"val_loss": [0.040, 0.041, 0.039]}},
        "single": {"best": {"val_loss": [0.050]}}}}))
    lines = oracle_section(SweepFolder(tmp_path))
    row = {ln.split(" | ")[0][2:]: ln for ln in lines if ln.startswith("| ") and " | vs " not in ln}
    assert row["wins"].endswith("| more than training progress; not distinguishable from the task+step oracle |")
    assert "lower by 0.0150, p = " in row["wins"] and "(welch, n.s.)" in row["wins"]
    assert row["arc"].endswith("| no sign of more than training progress |")
    assert row["beyond"].endswith("| more than training progress; below the task+step oracle |")
    assert "not applicable" in row["single"] and "no sign of more than training progress" in row["single"]
    assert "| oracle: step | 3 |" in row["oracle: step"]
    assert oracle_section(SweepFolder(tmp_path / "nothing")) == []


def test_zoo_b_oracles_read_the_angle(tiny_mnist_zoo, tmp_path, one_torch_thread):
    """On sequential MNIST the task is the angle: the labels are its (cos, sin), and an oracle trains."""
    plan = plan_run(BASELINE, _cfg(tiny_mnist_zoo.path, tmp_path, steps=10, eval_every=10, batch_size=8))
    splits, labels, n_steps = load_zoo(plan)
    sp = zoo_splits(tiny_mnist_zoo.path)
    for name, data in splits.items():
        angles = np.deg2rad([sp.run_task[int(r)] for r in data.run_id])
        assert np.allclose(labels[name].task.numpy(), np.stack([np.cos(angles), np.sin(angles)], 1), atol=1e-6)
    run = train_oracle("task+step", splits, labels, plan.zoo_kind, n_steps, plan.train)
    assert run.best_step == 10 and np.isfinite(run.best_val_loss) and 0 < run.best_val_loss < 1


def test_encoder_and_oracle_seeds_pair(tmp_path):
    """Encoder seed s and oracle seed s see the same batches: the comparison is paired, and finds a
    consistent difference that Welch's test, blind to the pairing, does not."""
    from rnnray.analysis.oracles import oracle_comparisons
    from rnnray.analysis.statistics import paired, welch
    from rnnray.results.folder import SweepFolder

    oracle = [0.060, 0.066, 0.072]
    enc = [0.0588, 0.0651, 0.0707]  # about 0.0012 below, seed by seed
    (tmp_path / "oracles.json").write_text(json.dumps({"modes": {"step": {"runs": [
        {"seed": s, "best_val_loss": v} for s, v in zip((1, 2, 3), oracle)]}}}))
    (tmp_path / "final.json").write_text(json.dumps({"encoders": {"noninteractive": {"best": {
        "seeds": [1, 2, 3], "val_loss": enc}}}}))
    c = oracle_comparisons(SweepFolder(tmp_path))["encoders"]["noninteractive"]
    want = paired(dict(zip((1, 2, 3), enc)), dict(zip((1, 2, 3), oracle)))
    assert c["vs"]["step"]["test"] == "paired" and c["vs"]["step"]["p"] == pytest.approx(want.p)
    assert c["vs"]["step"]["lower"] and c["reading"] == "more than training progress"
    assert welch(enc, oracle).p > 0.05  # unpaired, the same numbers say nothing


def test_the_oracles_train_with_the_sweeps_conditioning_and_clipping(tiny_fl_zoo, tmp_path, one_torch_thread):
    """A sweep's oracles take its ``train.conditioning`` and ``grad_clip_scope`` (or the conditioning
    its search fixes for every encoder), and each setting changes what an oracle trains."""
    from rnnray.analysis.oracles import oracle_conditioning, sweep_plan
    from rnnray.sweep.settings import load_sweep

    sweep = _sweep_yaml(tmp_path, tiny_fl_zoo.path)
    assert (sweep_plan(load_sweep(sweep)).train.conditioning, sweep_plan(load_sweep(sweep)).train.grad_clip_scope) == (
        "bos", "separate")
    plan = sweep_plan(load_sweep(sweep, ["train.conditioning=every_step", "train.grad_clip_scope=global"]))
    assert (plan.train.conditioning, plan.train.grad_clip_scope) == ("every_step", "global")
    assert sweep_plan(load_sweep(sweep, ["search.all.conditioning=every_step"])).train.conditioning == "every_step"
    assert oracle_conditioning(load_sweep(sweep, ["search.flat.conditioning=[bos, every_step]"])) == "bos"

    splits, labels, n_steps = load_zoo(plan)
    base = plan.train.model_copy(update={"steps": 20, "eval_every": 20, "grad_clip": 1e-3, "conditioning": "bos",
                                         "grad_clip_scope": "separate"})  # a limit the gradients exceed

    def val_loss(**update) -> float:
        run = train_oracle("step", splits, labels, plan.zoo_kind, n_steps, base.model_copy(update=update))
        return run.history[-1]["val_loss"]

    ref = val_loss()
    assert val_loss(conditioning="every_step") != pytest.approx(ref, rel=1e-6)
    assert val_loss(grad_clip_scope="global") != pytest.approx(ref, rel=1e-6)


def test_the_report_flags_an_encoder_conditioned_unlike_the_oracles(tmp_path):
    from rnnray.analysis.oracles import oracle_comparisons
    from rnnray.report.sections import oracle_section as render
    from rnnray.results.folder import SweepFolder
    from rnnray.results.records import read_oracles

    def oracle_section(folder):
        return render(read_oracles(folder), oracle_comparisons(folder))

    runs = {"runs": [{"seed": i, "best_val_loss": v, "best_ood_loss": v} for i, v in enumerate([0.065, 0.066, 0.064])],
            "val_loss": {"mean": 0.065, "low": None, "high": None, "n": 3}}
    (tmp_path / "oracles.json").write_text(json.dumps({"train": {"conditioning": "bos"}, "modes": {"step": runs}}))
    (tmp_path / "final.json").write_text(json.dumps({"encoders": {
        "same": {"best": {"val_loss": [0.05, 0.051, 0.049], "conditioning": "bos"}},
        "other": {"best": {"val_loss": [0.05, 0.051, 0.049], "conditioning": "every_step"}}}}))
    lines = oracle_section(SweepFolder(tmp_path))
    assert any("emulator conditioned `bos`" in ln for ln in lines)
    row = {ln.split(" | ")[0][2:]: ln for ln in lines if ln.startswith("| ")}
    assert "not like for like" not in row["same"]
    assert row["other"].endswith("; not like for like: its emulator conditioned `every_step`, the oracles' `bos` |")
