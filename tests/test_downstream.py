"""Downstream tasks: metrics on hand-made inputs, the predictor pipeline on real tiny zoos, and
proof that the pipeline measures something (trivial representations near perfect, random ones
near chance)."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pyarrow as pa
import pytest
import torch
import torch.nn.functional as F

from rnnray.analysis import downstream as ds

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------------------------------
# metrics


def test_exact_task_accuracy_needs_all_three_offsets_right():
    true = np.array([[0, 1, 2], [3, 4, 5], [1, 1, 1], [2, 2, 2]])
    pred = np.array([[0, 1, 2], [3, 4, 0], [1, 1, 1], [0, 2, 2]])
    assert ds.exact_task_accuracy(pred, true) == pytest.approx(0.5)
    assert ds.exact_task_accuracy(true, true) == 1.0
    assert ds.accuracy(pred, true) == pytest.approx(10 / 12)  # per-offset accuracy differs
    with pytest.raises(ValueError):
        ds.exact_task_accuracy(pred[:, :2], true)


def test_r2_perfect_mean_and_known_value():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    assert ds.r2(y, y) == pytest.approx(1.0)
    assert ds.r2(y, np.full(4, y.mean())) == pytest.approx(0.0)
    # SS_res = 4 * 0.25 = 1, SS_tot = 5  ->  0.8
    assert ds.r2(y, y + 0.5) == pytest.approx(0.8)
    assert ds.r2(y, np.full(4, 10.0)) < 0  # worse than the mean
    assert math.isnan(ds.r2(np.ones(3), np.array([1.0, 2.0, 3.0])))  # undefined for constant targets


def test_mae():
    assert ds.mae([0.0, 1.0, 2.0], [1.0, 1.0, 0.0]) == pytest.approx(1.0)
    assert ds.mae([0.5], [0.5]) == 0.0


def test_angle_error_wraps_around():
    assert ds.angle_error_deg([359.0], [1.0]) == pytest.approx(2.0)
    assert ds.angle_error_deg([1.0], [359.0]) == pytest.approx(2.0)
    assert ds.angle_error_deg([10.0, 180.0, 90.0], [350.0, 0.0, 90.0]) == pytest.approx((20 + 180 + 0) / 3)
    assert ds.angle_error_deg([720.5], [0.5]) == pytest.approx(0.0)
    deg = np.array([0.0, 45.0, 135.0, 270.0, 359.0])
    out = np.stack([np.cos(np.radians(deg)), np.sin(np.radians(deg))], 1) * 3.0  # the norm is ignored
    assert np.allclose(ds.cos_sin_to_deg(out), deg, atol=1e-9)


def test_step_accuracy_and_seed_summary():
    assert ds.accuracy(np.array([0, 1, 8, 8]), np.array([0, 2, 8, 7])) == pytest.approx(0.5)
    s = ds.summarise_seeds([0.5, 0.7, 0.9])
    assert s["mean"] == pytest.approx(0.7) and s["std"] == pytest.approx(0.2) and s["values"] == [0.5, 0.7, 0.9]
    assert ds.summarise_seeds([0.4])["std"] == 0.0
    assert ds.jsonable({"a": math.nan, "b": [np.float32(1.5), np.int64(2)]}) == {"a": None, "b": [1.5, 2]}


# ------------------------------------------------------------------------------------------------
# targets and splits


def _fl_table(runs_per_task: int = 1, steps=(0, 100)):
    from rnnray.zoo.languages import ALL_TASKS

    n_tasks = len(ALL_TASKS)
    tasks = np.repeat(ALL_TASKS, runs_per_task * len(steps), axis=0)
    runs = np.repeat(np.arange(n_tasks * runs_per_task), len(steps))
    step = np.tile(np.asarray(steps), n_tasks * runs_per_task)
    acc = np.random.default_rng(1).uniform(0, 1, len(runs)).astype(np.float32)
    return pa.table({"run_id": runs.astype(np.int32), "step": step.astype(np.int32),
                     "task": pa.FixedShapeTensorArray.from_numpy_ndarray(tasks), "accuracy": acc})


def _mnist_table(n_runs: int = 120, steps=(0, 100, 1000, 5000)):
    rng = np.random.default_rng(2)
    angles = np.repeat(rng.uniform(0, 360, n_runs), len(steps)).astype(np.float32)
    runs = np.repeat(np.arange(n_runs), len(steps))
    step = np.tile(np.asarray(steps), n_runs)
    acc = rng.uniform(0.1, 1, len(runs)).astype(np.float32)
    train = rng.uniform(0, 2, len(runs)).astype(np.float32)
    gap = rng.uniform(-0.1, 0.5, len(runs)).astype(np.float32)
    return pa.table({"run_id": runs.astype(np.int32), "step": step.astype(np.int32), "angle": angles, "accuracy": acc,
                     "train_loss": train, "heldout_loss": train + gap})


def test_target_values_use_the_zoo_snapshot_list():
    t = _mnist_table(n_runs=5, steps=(0, 30, 60))
    ys = ds.target_values(t, "mnist", snapshot_steps=[0, 30, 60, 90])
    assert ys["step"].tolist() == [0, 1, 2] * 5
    assert np.allclose(ys["gap"], t.column("heldout_loss").to_numpy() - t.column("train_loss").to_numpy())
    assert [x.n_out for x in ds.targets_for("mnist", [0, 30, 60, 90])] == [2, 1, 1, 4]
    with pytest.raises(ValueError, match="not in the zoo's snapshot list"):
        ds.target_values(t, "mnist", snapshot_steps=[0, 30])
    ya = ds.target_values(_fl_table(), "formal_languages")
    assert ya["task"].min() == 0 and ya["task"].max() == 5 and ya["task"].shape[1] == 3


def test_split_rows_are_rnnray_splits_by_task(tiny_fl_zoo):
    from rnnray.emulation.splits import zoo_splits
    from rnnray.zoo import load_table

    table = load_table(tiny_fl_zoo.path, columns=["run_id", "step", "task"])
    rows = ds.split_rows(table, "formal_languages", split_seed=0)
    runs = table.column("run_id").to_numpy()
    ref = zoo_splits(tiny_fl_zoo.path, seed=0)
    for s in ("train", "val", "ood_train", "ood_test"):
        assert sorted(set(runs[rows[s]].tolist())) == ref.runs(s)
    assert sorted(rows["fit"].tolist()) == sorted(rows["train"].tolist() + rows["ood_train"].tolist())
    assert not set(rows["fit"]) & (set(rows["val"]) | set(rows["ood_test"]))


# ------------------------------------------------------------------------------------------------
# the pipeline measures something


def _trivial_fl(table) -> np.ndarray:
    """Representations that encode the task (t1, t2 one-hot, t3 on a circle) and the accuracy."""
    t = ds.target_values(table, "formal_languages")["task"]
    acc = table.column("accuracy").to_numpy().astype(np.float64)
    r = np.zeros((len(t), 16))
    r[np.arange(len(t)), t[:, 0]] = 1
    r[np.arange(len(t)), 6 + t[:, 1]] = 1
    r[:, 12], r[:, 13] = np.cos(t[:, 2] * np.pi / 3), np.sin(t[:, 2] * np.pi / 3)
    r[:, 14], r[:, 15] = np.cos(acc * np.pi / 2), np.sin(acc * np.pi / 2)
    return (r / np.linalg.norm(r, axis=1, keepdims=True)).astype(np.float32)


def test_trivial_representations_near_perfect_random_near_chance_formal_languages():
    table = _fl_table()
    cfg = ds.PredictorConfig(steps=250)
    good = ds.evaluate_representations(_trivial_fl(table), table, "formal_languages", config=cfg)
    bad = ds.evaluate_representations(ds.random_representations(len(table)), table, "formal_languages", config=cfg)
    assert good["rows"]["ood_test"] > 0 and good["rows"]["ood_train"] > 0
    for split in ("val", "ood_test"):
        g, b = good["results"], bad["results"]
        assert g["task"][split]["exact_acc"]["mean"] >= 0.95
        assert b["task"][split]["exact_acc"]["mean"] <= 0.1  # chance is 1/216
        assert g["accuracy"][split]["r2"]["mean"] >= 0.9
        assert b["accuracy"][split]["r2"]["mean"] <= 0.2
        assert g["accuracy"][split]["mae"]["mean"] < 0.5 * b["accuracy"][split]["mae"]["mean"]
        assert len(g["task"][split]["exact_acc"]["values"]) == 3


def test_trivial_representations_near_perfect_random_near_chance_mnist():
    steps = (0, 100, 1000, 5000)
    table = _mnist_table(steps=steps)
    ys = ds.target_values(table, "mnist", steps)
    a = np.radians(ys["angle"])
    r = np.zeros((len(table), 16))
    r[:, 0], r[:, 1] = np.cos(a), np.sin(a)
    r[np.arange(len(r)), 2 + ys["step"]] = 1
    r[:, 6] = ys["accuracy"]
    r[:, 7] = ys["gap"]
    r /= np.linalg.norm(r, axis=1, keepdims=True)
    cfg = ds.PredictorConfig(steps=150)
    good = ds.evaluate_representations(r, table, "mnist", snapshot_steps=steps, config=cfg)["results"]
    bad = ds.evaluate_representations(ds.random_representations(len(table)), table, "mnist", snapshot_steps=steps, config=cfg)["results"]
    split = "ood_test"
    assert good["angle"][split]["err_deg"]["mean"] < 15
    assert bad["angle"][split]["err_deg"]["mean"] > 40
    assert good["step"][split]["acc"]["mean"] > 0.95
    assert bad["step"][split]["acc"]["mean"] < 0.6  # chance 0.25
    for target in ("accuracy", "gap"):
        assert good[target][split]["r2"]["mean"] > 0.9 and bad[target][split]["r2"]["mean"] < 0.3
        assert good[target][split]["mae"]["mean"] < 0.3 * bad[target][split]["mae"]["mean"]


def test_seeds_train_side_by_side_exactly_as_alone():
    cfg = ds.PredictorConfig(steps=40, batch_size=32)
    x = torch.randn(100, 16)
    y = torch.randint(0, 6, (100, 3))

    def loss(o, t):
        return F.cross_entropy(o.reshape(-1, 6), t.reshape(-1))

    models = []
    for s in (0, 1, 2):
        torch.manual_seed(s)
        models.append(ds.make_head(18, cfg))
    alone = [ds.train_predictor(copy.deepcopy(m), x, y, loss, cfg, seed) for m, seed in zip(models, (7, 8, 9))]
    joint = ds.train_predictors(models, x, y, loss, cfg, (7, 8, 9))
    with torch.no_grad():
        for a, j in zip(alone, joint):
            assert torch.allclose(a(x), j(x), atol=1e-5)
        assert not torch.allclose(joint[0](x), joint[1](x))  # seeds differ


# ------------------------------------------------------------------------------------------------
# real zoos, untrained encoders


def test_representations_are_unit_norm_and_stats_front_is_the_encoder(tiny_fl_zoo):
    from rnnray.encoders import build_encoder
    from rnnray.weights import Layout
    from rnnray.zoo import load_table, read_manifest

    manifest = read_manifest(tiny_fl_zoo.path)
    layout = Layout.from_dict(manifest["layout"])
    table = load_table(tiny_fl_zoo.path, columns=["params"])
    torch.manual_seed(0)
    enc = build_encoder("stats", layout, "formal_languages", width=16, depth=1)
    reps = ds.representations(enc, table, batch_size=5)
    assert reps.shape == (len(table), 16) and reps.dtype == np.float32
    assert np.allclose(np.linalg.norm(reps, axis=1), 1.0, atol=1e-5)
    params = table.column("params").combine_chunks().to_numpy_ndarray()
    feats = ds.stats_features(enc, params)
    with torch.no_grad():
        assert torch.allclose(enc.head(enc.body(torch.as_tensor(feats))), enc(torch.as_tensor(params.copy())), atol=1e-5)
    assert ds.stats_features(build_encoder("flat", layout, "formal_languages", width=2, depth=1), params) is None


@pytest.mark.parametrize("zoo", ["tiny_fl_zoo", "tiny_mnist_zoo"])
def test_pipeline_on_a_tiny_zoo_with_an_untrained_encoder(zoo, request):
    from rnnray.encoders import build_encoder
    from rnnray.weights import Layout
    from rnnray.zoo import load_table, read_manifest

    cfg = request.getfixturevalue(zoo)
    manifest = read_manifest(cfg.path)
    kind, snaps = manifest["kind"], manifest["snapshots"]
    layout = Layout.from_dict(manifest["layout"])
    table = load_table(cfg.path)
    torch.manual_seed(0)
    reps = ds.representations(build_encoder("flat", layout, kind, width=4, depth=1), table)
    out = ds.evaluate_all({"flat": reps}, table, kind, layout, split_seed=0, seeds=(0, 1, 2), snapshot_steps=snaps,
                          config=ds.PredictorConfig(steps=30))
    assert set(out["encoders"]) == {"flat"} and set(out["baselines"]) == {"random", "supervised"}
    expected = {t.name: t.metrics for t in ds.targets_for(kind, snaps)}
    assert set(expected) == ({"task", "accuracy"} if kind == "formal_languages" else {"angle", "accuracy", "gap", "step"})
    for res in (out["encoders"]["flat"], out["baselines"]["random"], out["baselines"]["supervised"]):
        assert set(res["results"]) == set(expected)
        assert res["rows"]["val"] > 0 and res["rows"]["ood_test"] > 0 and res["rows"]["fit"] > 0
        for target, metrics in expected.items():
            for split in ("val", "ood_test"):
                for m in metrics:
                    cell = res["results"][target][split][m]
                    assert len(cell["values"]) == 3
                    assert all(math.isfinite(v) for v in cell["values"]), (target, split, m, cell)
                    assert math.isfinite(cell["mean"]) and math.isfinite(cell["std"])
    assert out["baselines"]["supervised"]["encoder"] == "stats" and out["baselines"]["supervised"]["n_params"] > 0
    flat = ds.flat_metrics(out["encoders"]["flat"], kind, snaps)
    assert set(flat) == {c + s for c, *_ in ds.metric_columns(kind, snaps) for s in ("", "_std")}
    json.dumps(ds.jsonable(out), allow_nan=False)  # strict JSON


def _drawn_fl_table(runs: int, seed: int, steps=(0, 100)):
    """A zoo-A table whose runs draw their tasks as the zoo builder does (uniform offsets)."""
    from rnnray.zoo.languages import draw_task

    rng = np.random.default_rng(seed)
    tasks = np.repeat(np.stack([draw_task(rng) for _ in range(runs)]), len(steps), axis=0)
    run_id = np.repeat(np.arange(runs), len(steps))
    step = np.tile(np.asarray(steps), runs)
    acc = np.random.default_rng(1).uniform(0, 1, len(run_id)).astype(np.float32)
    return pa.table({"run_id": run_id.astype(np.int32), "step": step.astype(np.int32),
                     "task": pa.FixedShapeTensorArray.from_numpy_ndarray(tasks), "accuracy": acc})


def test_an_uninformative_representation_scores_below_chance_per_offset_on_task_splits():
    """Issue 14's anomaly (head_acc under 1/6 for collapsed representations), reproduced and
    explained: with one representation for every RNN the predictor can only learn each offset's most
    frequent value *in its training rows*; the test splits hold other tasks, drawn without
    replacement from the same 216 (validation) or from the most balanced ones (OOD), so that value is
    rarer there than 1/6. The score is exactly its frequency in the test rows, which a label or split
    mix-up would not give (that case is the trivial-representation test above)."""
    table = _drawn_fl_table(324, seed=3)
    constant = np.tile(np.eye(16, dtype=np.float32)[:1], (len(table), 1))
    out = ds.evaluate_representations(constant, table, "formal_languages", config=ds.PredictorConfig(steps=300),
                                      targets=["task"])
    rows = ds.split_rows(table, "formal_languages", 0)
    t = ds.target_values(table, "formal_languages")["task"]
    majority = [np.bincount(t[rows["fit"], j], minlength=6).argmax() for j in range(3)]
    for split in ("val", "ood_test"):
        expected = np.mean([np.mean(t[rows[split], j] == majority[j]) for j in range(3)])
        got = out["results"]["task"][split]["head_acc"]
        assert got["values"] == pytest.approx([expected] * 3, abs=1e-9), split
        assert expected < 1 / 6, (split, expected)  # below chance, with nothing wrong


def test_participation_ratio_on_known_spectra():
    rng = np.random.default_rng(0)
    k3 = np.zeros((3000, 16))
    k3[:, :3] = rng.standard_normal((3000, 3))
    assert ds.participation_ratio(k3 @ np.linalg.qr(rng.standard_normal((16, 16)))[0]) == pytest.approx(3.0, rel=0.03)
    assert ds.participation_ratio(rng.standard_normal((20000, 16))) == pytest.approx(16.0, rel=0.03)
    two_points = np.repeat(np.eye(16)[:2], 50, axis=0)  # initialisation vs trained: one direction
    assert ds.participation_ratio(two_points) == pytest.approx(1.0)
    line = np.outer(rng.standard_normal(100), rng.standard_normal(16))
    assert ds.participation_ratio(line) == pytest.approx(1.0)
    spectrum = np.diag(np.sqrt([4.0, 1.0]))  # variances 4 and 1: (4 + 1)^2 / (16 + 1)
    assert ds.participation_ratio(rng.standard_normal((40000, 2)) @ spectrum) == pytest.approx(25 / 17, rel=0.03)
    assert math.isnan(ds.participation_ratio(np.ones((10, 16))))
    assert ds.COLLAPSED_BELOW == 2.0


def test_a_new_target_is_one_object_attached_to_a_zoo_kind(monkeypatch):
    """A target owns its columns, values, loss, score, chance and label: adding one (the training
    loss of zoo B, as a scalar) is one object in TARGETS, and the evaluation, the chance levels and
    the report's labels pick it up with no other change."""
    from rnnray.analysis.downstream import targets as tg
    from rnnray.report.downstream import headline

    base = tg.TARGETS["mnist"]
    extra = tg.Scalar("train_loss", "training loss", ("train_loss",), 1, ("r2", "mae"), ("r2",), (("r2", 0.0),))
    monkeypatch.setitem(tg.TARGETS, "mnist", lambda steps: (*base(steps), extra))
    table = _mnist_table()
    steps = [0, 100, 1000, 5000]
    res = ds.evaluate_representations(np.random.default_rng(0).standard_normal((len(table), 16)).astype(np.float32), table,
                                      "mnist", 0, (0,), snapshot_steps=steps, config=ds.PredictorConfig(steps=3),
                                      targets=["train_loss"])
    assert set(res["results"]) == {"train_loss"} and set(res["results"]["train_loss"]["val"]) == {"r2", "mae"}
    assert ds.chance_levels("mnist", steps)["train_loss.r2"] == 0.0
    assert ("train_loss", "r2") in headline("mnist", steps) and ("train_loss", "mae") not in headline("mnist", steps)
    assert np.allclose(ds.target_values(table, "mnist", steps)["train_loss"], table.column("train_loss").to_numpy())
    assert extra.label("r2") == "train_loss R²"
