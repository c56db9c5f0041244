"""Downstream evaluation of a sweep folder and the report, on a small but real results store:
checkpoints trained by ``rnnray.train.train_local`` on the tiny zoo, summaries written by the
sweep's own ``summarise`` / ``write_summary``."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from rnnray import evaluate as evaluate_cli
from rnnray import report
from rnnray.analysis import evaluate, performance
from rnnray.analysis.downstream import PredictorConfig, metric_columns
from rnnray.zoo.trainer import stored_digit_labels

ENCODERS = (("stats", {"width": 16, "depth": 1}), ("flat", {"width": 4, "depth": 1}))
FAST = PredictorConfig(steps=30)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_store(zoo: str, root: Path, encoders=ENCODERS, seeds=(0, 1)) -> Path:
    """A results directory with one sweep folder: sweep.json, trials/<enc>/<trial>/trial.json with
    a real best checkpoint each, and summary.csv / summary.md / best.json from rnnray.sweep."""
    from rnnray import sweep as sw
    from rnnray.config import TrainConfig
    from rnnray.results.atomic import atomic_write_json
    from rnnray.results.loading import write_latest
    from rnnray.report.summary import write_summary_md
    from rnnray.train import train_local

    sweep_dir = root / "tiny-20260101-000000"
    cfg = sw.SweepConfig(name="tiny", results=str(root), zoo=str(zoo), encoders=[e for e, _ in encoders], budget=10000)
    sweep_dir.mkdir(parents=True)
    atomic_write_json(sweep_dir / "sweep.json", {"config": cfg.model_dump(mode="json")})
    records: dict[str, list[dict]] = {}
    for enc, hp in encoders:
        for seed in seeds:
            tid = f"{enc}_{seed:05d}"
            tdir = sweep_dir / "trials" / enc / tid
            tcfg = TrainConfig(zoo=str(zoo), encoder_hparams=hp, steps=4, eval_every=2, batch_size=8, emulator_hidden=16,
                               eval_sequences=2, seed=seed, storage_path=str(tdir), name="train")
            res = train_local(enc, tcfg, save=True)
            rec = {"encoder": enc, "trial_id": tid, "status": "finished", "config": {"lr": tcfg.lr, **hp},
                   "n_params": res.n_params, "best_val_loss": res.best_val_loss, "best_ood_loss": res.best_ood_loss,
                   "best_step": res.best_step, "checkpoint": res.checkpoint_path, "history": res.history}
            atomic_write_json(tdir / "trial.json", rec)
            records.setdefault(enc, []).append(rec)
    rows, best = sw.summarise(sweep_dir, cfg, records)
    sw.write_summary(sweep_dir, rows, best, cfg)
    write_summary_md(sweep_dir)
    write_latest(root, sweep_dir)
    return sweep_dir


@pytest.fixture(scope="module")
def store(tiny_fl_zoo, tmp_path_factory, one_torch_thread_module):
    return make_store(tiny_fl_zoo.path, tmp_path_factory.mktemp("results"))


@pytest.fixture(scope="module")
def evaluated(store, one_torch_thread_module):
    from rnnray.report.summary import write_summary_md

    doc = evaluate.evaluate_sweep(store, config=FAST, progress=False)
    write_summary_md(store)  # what python -m rnnray.evaluate and the main job do next
    return doc


def _read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as f:
        r = csv.DictReader(f)
        return list(r.fieldnames), list(r)


def _md_table(text: str, first_header: str) -> list[list[str]]:
    lines = text.splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith(f"| {first_header} |"))
    out = []
    for l in lines[start:]:
        if not l.startswith("|"):
            break
        out.append([c.strip() for c in l.strip().strip("|").split("|")])
    return [out[0]] + out[2:]


def test_evaluate_sweep_writes_downstream_json_and_summary_columns(store, evaluated):
    doc = json.loads((store / "downstream.json").read_text())
    assert doc == evaluated
    assert doc["format"] == "rnnray-downstream/1" and doc["zoo_kind"] == "formal_languages"
    assert doc["seeds"] == [0, 1, 2] and doc["snapshot_steps"] == [0, 100, 200]
    assert set(doc["encoders"]) == {"stats", "flat"} and set(doc["baselines"]) == {"random", "supervised"}
    best = json.loads((store / "best.json").read_text())
    for name, res in doc["encoders"].items():
        assert res["trial_id"] == best[name]["trial_id"]
        assert Path(res["checkpoint"]).is_dir()
        cell = res["results"]["accuracy"]["ood_test"]["r2"]
        assert len(cell["values"]) == 3 and math.isfinite(cell["mean"])
    assert not doc["skipped"]

    fields, rows = _read_csv(store / "summary.csv")
    assert [r["encoder"] for r in rows] == ["stats", "flat"]
    for col in ("best_val_loss", "best_ood_loss", "n_params", "trials", "failed", "trial_id", "config"):
        assert col in fields  # the sweep's columns are kept
    ds_cols = [c + s for c, *_ in metric_columns("formal_languages") for s in ("", "_std")]
    assert fields[-len(ds_cols) - 1:-1] == ds_cols and fields[-1] == "effective_dim"
    for name, res in doc["encoders"].items():
        assert 1.0 <= res["effective_dim"] <= 16.0
    n_rows = sum(doc["rows"][s] for s in ("fit", "val", "ood_test"))
    from rnnray.analysis.downstream import participation_ratio, random_representations
    # recomputed here; with few rows even random unit vectors fill only part of the 16 directions
    assert doc["baselines"]["random"]["effective_dim"] == pytest.approx(participation_ratio(random_representations(n_rows)))
    for r in rows:
        assert float(r["ds_ood_task_exact_acc"]) == doc["encoders"][r["encoder"]]["results"]["task"]["ood_test"]["exact_acc"]["mean"]
        assert math.isfinite(float(r["ds_val_accuracy_mae"]))
        assert float(r["best_val_loss"]) == pytest.approx(best[r["encoder"]]["best_val_loss"])
        assert float(r["effective_dim"]) == doc["encoders"][r["encoder"]]["effective_dim"]

    md = (store / "summary.md").read_text()
    table = _md_table(md, "encoder")
    assert [r[0] for r in table[1:]] == ["stats", "flat"]
    assert sum(h.startswith("ds ") for h in table[0]) == 3  # task exact acc, accuracy R², accuracy MAE
    assert table[0][-1] == "effective dim" and "Effective dimension of the representations" in md
    baselines = _md_table(md, "representation")
    assert [r[0] for r in baselines[1:]] == ["stats", "flat", "baseline: random", "baseline: supervised stats (end to end)"]

    # idempotent: evaluating again replaces the downstream columns and section, never duplicates them
    from rnnray.report.summary import write_summary_md

    evaluate.update_summary(store, doc)
    write_summary_md(store)
    fields2, rows2 = _read_csv(store / "summary.csv")
    assert fields2 == fields and len(rows2) == 2
    md2 = (store / "summary.md").read_text()
    assert md2 == md and md2.count("<!-- downstream:begin -->") == 1


def test_checkpoint_found_through_the_trial_record(tmp_path):
    tdir = tmp_path / "trials" / "flat" / "t1"
    tdir.mkdir(parents=True)
    (tdir / "trial.json").write_text(json.dumps({"checkpoint_path": "/ckpt/a"}))
    assert evaluate.checkpoint_of({"checkpoint": "/ckpt/b", "trial_dir": str(tdir)}) == "/ckpt/b"
    assert evaluate.checkpoint_of({"checkpoint": None, "trial_dir": str(tdir)}) == "/ckpt/a"
    assert evaluate.checkpoint_of({"checkpoint": None}) is None


def test_report_writes_markdown_and_decodable_figures(store, evaluated):
    from matplotlib.image import imread

    path = report.write_report(store, n_samples=8, max_snapshots=6, device="cpu", progress=False)
    assert path == store / "report.md"
    text = path.read_text()
    names = ["emulation_loss", "emulation_curves", "downstream", "performance_prediction", "pca"]
    for name in names:
        png = store / "figures" / f"{name}.png"
        assert f"figures/{name}.png" in text
        img = imread(png)
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
        assert img[..., :3].std() > 0.01  # something is drawn
    emu = _md_table(text, "encoder")
    assert [r[0] for r in emu[1:]] == ["stats", "flat"]
    assert all(r[1] == "2" for r in emu[1:])  # two trials each
    ds_rows = [r[0] for r in _md_table(text, "representation")[1:]]
    assert ds_rows == ["stats", "flat", "baseline: random", "baseline: supervised stats (end to end)"]
    assert text.count("| baseline: random |") == 2  # OOD-test and validation tables
    budget = json.loads((store / "sweep.json").read_text())["config"]["budget"]
    assert f"| `budget` | {budget:,} | 1,200,000 |" in text  # what differs from the paper, from sweep.json
    assert "`train.steps`" not in text  # the store's sweep keeps the paper's training settings
    assert "Effective dimension of the representations" in text
    pp = _md_table(text, "encoder | Pearson r")
    assert [r[0] for r in pp[1:]] == ["stats", "flat"] and all(r[2] != "—" for r in pp[1:])  # MAE always defined
    assert not list(store.glob("**/.*tmp*"))  # nothing half-written left


def test_report_without_downstream_json_says_so(store, evaluated, tmp_path):
    import shutil

    copy = tmp_path / store.name
    shutil.copytree(store, copy)
    (copy / "downstream.json").unlink()
    text = report.write_report(copy, n_samples=4, max_snapshots=3, evaluate_missing=False, device="cpu", progress=False).read_text()
    assert "No `downstream.json` yet" in text and not (copy / "figures" / "downstream.png").exists()
    assert (copy / "figures" / "pca.png").is_file()


def test_cli_resolves_a_results_directory(store, evaluated, tmp_path, capsys):
    import shutil

    shutil.copytree(store.parent, tmp_path / "results")  # a copy: the other tests keep their downstream.json
    copy = tmp_path / "results" / store.name
    sweep = json.loads((copy / "sweep.json").read_text())
    sweep["config"]["downstream"] = {"steps": 7, "seeds": [0, 1]}  # optional settings in the sweep; flags win
    (copy / "sweep.json").write_text(json.dumps(sweep))
    evaluate_cli.main([str(tmp_path / "results"), "--steps", "5"])
    out = capsys.readouterr().out
    assert str(copy) in out and "baseline: supervised" in out and "downstream.json" in out
    doc = json.loads((copy / "downstream.json").read_text())
    assert doc["predictor"]["steps"] == 5 and doc["seeds"] == [0, 1]
    assert len(doc["encoders"]["flat"]["results"]["task"]["val"]["exact_acc"]["values"]) == 2


def _cli(module: str, *args: str):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=900)


def _files(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_a_report_that_fails_midway_leaves_the_earlier_figures_or_none(store, evaluated, tmp_path):
    """A downstream.json of the wrong form (valid JSON, its zoo_kind lost) breaks the report at its
    fourth figure, after three are drawn: the command says so in one line naming the file (exit 2),
    and figures/ is the earlier report's, byte for byte, or absent when there was none; no temporary
    folder is left."""
    import shutil

    copy = tmp_path / store.name
    shutil.copytree(store, copy)
    shutil.rmtree(copy / "figures", ignore_errors=True)
    report.write_report(copy, n_samples=4, max_snapshots=3, device="cpu", progress=False)
    earlier = _files(copy / "figures")
    assert {"emulation_loss.png", "emulation_curves.png", "downstream.png", "pca.png"} <= set(earlier)
    report_md = (copy / "report.md").read_bytes()
    doc = json.loads((copy / "downstream.json").read_text())
    del doc["zoo_kind"]
    (copy / "downstream.json").write_text(json.dumps(doc))
    for earlier_figures in (True, False):
        r = _cli("rnnray.report", str(copy), "--device", "cpu", "--samples", "4", "--max-snapshots", "3")
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1, r.stderr[-3000:]
        assert lines[0].startswith(f"error: {copy / 'downstream.json'}: not of the form the report reads (KeyError"), lines
        if earlier_figures:
            assert _files(copy / "figures") == earlier
            shutil.rmtree(copy / "figures")
        else:
            assert not (copy / "figures").exists()
        assert (copy / "report.md").read_bytes() == report_md
        assert not [p.name for p in copy.iterdir() if ".tmp-" in p.name]


def test_evaluate_and_report_with_every_checkpoint_gone_do_not_exit_0(store, tmp_path):
    """Every encoder of best.json has lost its checkpoint: evaluating baselines alone, or a report of
    no encoder, would end as if done; both commands give one line naming each skipped encoder and
    exit code 2, and write nothing."""
    import shutil

    copy = tmp_path / store.name
    shutil.copytree(store, copy)
    best = json.loads((copy / "best.json").read_text())
    for name, entry in best.items():  # this copy's checkpoints, then gone
        entry["checkpoint"] = entry["checkpoint"].replace(str(store), str(copy))
        shutil.rmtree(entry["checkpoint"])
    (copy / "best.json").write_text(json.dumps(best))
    (copy / "downstream.json").unlink(missing_ok=True)
    before = {p: p.stat().st_mtime_ns for p in copy.rglob("*")}
    for module in ("rnnray.evaluate", "rnnray.report"):
        r = _cli(module, str(copy), "--device", "cpu")
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1, (module, r.stderr[-3000:])
        assert "every encoder of best.json was skipped" in lines[0] and all(f"{n}: checkpoint" in lines[0] for n in best), lines
    assert {p: p.stat().st_mtime_ns for p in copy.rglob("*")} == before


@pytest.mark.parametrize("module", [evaluate_cli, report])
def test_cli_bad_input_is_one_line_and_exit_2(module, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        module.main([str(tmp_path / "nope")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and "nope" in err
    sweep = tmp_path / "s"
    sweep.mkdir()
    (sweep / "sweep.json").write_text("{}")
    with pytest.raises(SystemExit) as e:
        module.main([str(sweep)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "best.json" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("conditioning", ["bos", "every_step"])
def test_sampled_emulator_tokens_carry_the_emulator_log_probabilities(conditioning, tiny_fl_zoo):
    """Step-by-step sampling (state carried) must give the same distributions as the emulator's
    teacher-forced forward on the sampled strings, the representation entering as the emulator's
    conditioning says (at BOS, or at every step)."""
    from rnnray.emulation.emulator import Emulator
    from rnnray.zoo.languages import BOS

    torch.manual_seed(0)
    emu = Emulator("formal_languages", hidden=16, conditioning=conditioning).eval()
    reps = torch.randn(3, 16)
    tokens, logp = performance.sample_emulator(emu, reps, n_samples=5, length=12, generator=torch.Generator().manual_seed(1),
                                          return_logprobs=True)
    assert tokens.shape == (3, 5, 12) and tokens.min() >= 0 and tokens.max() < 6
    flat = tokens.reshape(15, 12)
    inputs = torch.cat([torch.full((15, 1), BOS), flat[:, :-1]], 1)
    with torch.no_grad():
        ref = torch.log_softmax(emu(reps.repeat_interleave(5, 0), inputs), -1).gather(-1, flat.unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(ref, logp.reshape(15, 12), atol=1e-5)
    other, _ = performance.sample_emulator(emu, -reps, 5, length=12, generator=torch.Generator().manual_seed(1), return_logprobs=True)
    assert not torch.equal(other, tokens)  # the representation conditions the samples


def test_mnist_digit_labels_are_recovered_and_verified(tiny_mnist_zoo):
    from rnnray.zoo import load_table, read_manifest

    manifest = read_manifest(tiny_mnist_zoo.path)
    t = load_table(tiny_mnist_zoo.path, columns=["run_id", "step", "angle", "inputs", "logits", "accuracy"])
    runs, steps, angles = (t.column(c).to_numpy() for c in ("run_id", "step", "angle"))
    inputs = t.column("inputs").combine_chunks().to_numpy_ndarray()
    labels = stored_digit_labels(manifest, runs, steps, angles, inputs, check=len(runs))
    assert labels is not None and labels.shape == inputs.shape[:2] and labels.min() >= 0 and labels.max() <= 9
    # trained snapshots beat chance on their own stored digits with these labels
    logits = t.column("logits").combine_chunks().to_numpy_ndarray()
    acc = (logits[:, :, -1].argmax(-1) == labels).mean(-1)
    last = steps == steps.max()
    assert acc[last].mean() > 0.15
    wrong = {**manifest, "config": {**manifest["config"], "seed": manifest["config"]["seed"] + 1}}
    assert stored_digit_labels(wrong, runs, steps, angles, inputs) is None  # the check catches a bad replay


def test_mnist_performance_prediction_with_an_untrained_model(tiny_mnist_zoo):
    from rnnray.train import build_model
    from rnnray.weights import Layout
    from rnnray.zoo import load_table, read_manifest

    manifest = read_manifest(tiny_mnist_zoo.path)
    layout = Layout.from_dict(manifest["layout"])
    torch.manual_seed(0)
    model = build_model("stats", {"width": 16, "depth": 1}, layout, "mnist", 16).eval()
    table = load_table(tiny_mnist_zoo.path, columns=["run_id", "step", "params", "accuracy", "angle"])
    pp = performance.performance_prediction({"stats": model}, table, manifest, tiny_mnist_zoo.path, 0, max_snapshots=4)
    assert pp["rows"] == 4 and pp["labels"] == "recovered and verified" and pp["quantity"] == "held-out accuracy"
    e = pp["encoders"]["stats"]
    assert len(e["emulated"]) == 4 and all(0.0 <= v <= 1.0 for v in e["emulated"])
    assert np.isclose(e["mae"], np.abs(np.array(e["emulated"]) - np.array(pp["real"])).mean())
    assert set(pp["split"]) <= {"val", "ood"}


def test_the_final_table_names_a_conditioning_that_left_the_papers(tmp_path):
    """With ``conditioning`` searched, each final configuration's row says which it used when it is
    not the paper's ``bos``."""
    from rnnray.results.folder import SweepFolder

    iv = {"mean": 0.05, "low": 0.04, "high": 0.06, "n": 2}
    (tmp_path / "final.json").write_text(json.dumps({"encoders": {"dws": {
        "best": {"source_trial": "t3", "conditioning": "every_step", "seeds": [1, 2], "val_interval": iv, "ood_interval": iv},
        "paper": {"source_trial": "t0", "conditioning": "bos", "seeds": [1, 2], "val_interval": iv, "ood_interval": iv}}}}))
    from rnnray.report.sections import final_table
    from rnnray.results.records import read_final

    lines = final_table(read_final(SweepFolder(tmp_path)), ["dws"])
    assert any(ln.startswith("| dws | best (search trial t3), emulator conditioned `every_step` | 2 |") for ln in lines)
    assert any(ln.startswith("| dws | paper preset | 2 |") for ln in lines)


def test_load_best_names_what_is_broken_in_the_store(store, tmp_path):
    """An unreadable best.json, a missing checkpoint and a truncated one are each the documented
    ResultsError naming the file, never a JSONDecodeError or FileNotFoundError."""
    import shutil

    import rnnray
    from rnnray.results import ResultsError
    from rnnray.train.checkpoint import MODEL_FILE

    sweep = tmp_path / store.name
    shutil.copytree(store, sweep)
    best = json.loads((sweep / "best.json").read_text())
    assert rnnray.load_best("flat", results=sweep).name == "flat"  # the intact store loads (its checkpoints are the fixture's)

    # a truncated model file in a copy of the checkpoint
    ckpt = tmp_path / "ckpt"
    shutil.copytree(best["flat"]["checkpoint"], ckpt)
    (ckpt / MODEL_FILE).write_bytes((ckpt / MODEL_FILE).read_bytes()[:100])
    (sweep / "best.json").write_text(json.dumps({**best, "flat": {**best["flat"], "checkpoint": str(ckpt)}}))
    with pytest.raises(ResultsError, match="cannot be loaded"):
        rnnray.load_best("flat", results=sweep)
    (sweep / "best.json").write_text(json.dumps({**best, "flat": {**best["flat"], "checkpoint": str(tmp_path / "gone")}}))
    with pytest.raises(ResultsError, match="missing"):
        rnnray.load_best("flat", results=sweep)
    (sweep / "best.json").write_text('{"flat": ')
    with pytest.raises(ResultsError, match="best.json: not readable as JSON"):
        rnnray.load_best("flat", results=sweep)


def test_the_final_table_shows_runs_that_are_both_best_and_paper_once(tmp_path):
    """When the best configuration is the paper preset, ``final.json`` lists the same runs under both
    roles; the table gives them one row that says so."""
    from rnnray.report.sections import final_table
    from rnnray.results.folder import SweepFolder
    from rnnray.results.records import read_final

    iv = {"mean": 0.05, "low": 0.04, "high": 0.06, "n": 2}
    entry = {"source_trial": "t0", "seeds": [1, 2], "trial_ids": ["a", "b"], "val_interval": iv, "ood_interval": iv}
    (tmp_path / "final.json").write_text(json.dumps({"encoders": {"flat": {"best": entry, "paper": entry}}}))
    rows = [ln for ln in final_table(read_final(SweepFolder(tmp_path)), ["flat"]) if ln.startswith("| flat |")]
    assert rows == ["| flat | best = paper preset (search trial t0) | 2 | 0.0500 (0.0400, 0.0600) | 0.0500 (0.0400, 0.0600) |"]


def test_encoders_are_compared_pair_by_pair_paired_over_the_seeds_they_share(tmp_path):
    """a and b share seeds 1-4 and b is above a on every seed by a little, so the paired test finds
    it (p 0.0043, scipy.stats.ttest_rel) where Welch's would not (p 0.69); c ran other seeds, so a
    against c is Welch's (p 0.025, scipy.stats.ttest_ind); d has one seed: no test."""
    from rnnray.analysis.pairs import encoder_pairs
    from rnnray.report.sections import pairs_section
    from rnnray.results.folder import SweepFolder

    def best(seeds, losses):
        return {"best": {"seeds": seeds, "val_loss": losses, "source_trial": "t0"}}

    (tmp_path / "final.json").write_text(json.dumps({"encoders": {
        "a": best([1, 2, 3, 4], [0.050, 0.060, 0.055, 0.065]), "b": best([1, 2, 3, 4], [0.052, 0.0615, 0.0575, 0.0665]),
        "c": best([5, 6, 7, 8], [0.070, 0.072, 0.068, 0.071]), "d": best([1], [0.05])}}))
    doc = encoder_pairs(SweepFolder(tmp_path), ["a", "b", "c", "d"])
    by = {(p["a"], p["b"]): p for p in doc["pairs"]}
    assert list(by) == [("a", "b"), ("a", "c"), ("a", "d"), ("b", "c"), ("b", "d"), ("c", "d")]
    ab, ac, ad = by[("a", "b")], by[("a", "c")], by[("a", "d")]
    assert ab["test"] == "paired" and ab["n"] == 4 and ab["p"] == pytest.approx(0.0043321, rel=1e-3) and ab["lower"]
    assert ab["diff"] == pytest.approx(-0.001875)
    assert ac["test"] == "welch" and ac["p"] == pytest.approx(0.0250447, rel=1e-3) and ac["lower"]
    assert ad["p"] is None and not ad["lower"] and not ad["higher"]
    lines = pairs_section(doc)
    assert "| `a` | `b` | -0.0019 | paired, n = 4, p = 0.0043 | `a` lower |" in lines
    assert "| `a` | `d` | — | not applicable (fewer than 2 seeds, or no spread) | — |" in lines
    assert encoder_pairs(SweepFolder(tmp_path), ["a"]) == {} and pairs_section({}) == []
