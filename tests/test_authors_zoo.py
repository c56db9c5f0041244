"""The authors' NumPy release (SPEC.md section 8) imported as an rnnray zoo and exported back.

No Ray: small zoos are written in their layout with ``numpy.save``, their stored outputs computed
by ``torch.nn.LSTM`` + ``torch.nn.Linear`` loaded from each row's flat parameters, so re-running a
snapshot after the import checks that weights, sequences and outputs stayed together and in order.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from rnnray.emulation.splits import zoo_splits
from rnnray.weights import FORMAL_LANGUAGES, MNIST
from rnnray.zoo import ZooError, load_table, read_manifest
from rnnray.zoo.authors import export_npy, import_npy

ROOT = Path(__file__).resolve().parent.parent
THEIR_STEPS = [0, 99, 199, 499, 999, 1999, 4999, 9999, 19999]  # their labels: the update just taken
RUN_INDEX = [0, 1, 0, 1]  # two generation jobs of two runs each, concatenated: indices repeat
SEQS = 3  # stored sequences per snapshot (100 in the release)
FL_TASKS = [(0, -3, 1, 2), (0, 0, 0, 0), (0, 2, -1, -2), (0, 1, 1, -3)]
ANGLES = [10.5, 100.25, 200.75, 300.125]
DECAYS = [0.0, 0.001, 0.01, 0.1]


def _outputs(layout, flat: np.ndarray, x: torch.Tensor) -> torch.Tensor:
    lstm, linear = layout.to_modules(torch.from_numpy(np.array(flat)))
    with torch.no_grad():
        return linear(lstm(x)[0])


def _fl_logprobs(flat: np.ndarray, seqs: np.ndarray) -> np.ndarray:
    x = torch.nn.functional.one_hot(torch.as_tensor(seqs[:, :41].astype(np.int64)), 6).float()
    return torch.log_softmax(_outputs(FORMAL_LANGUAGES, flat, x), -1).numpy()


def _mnist_logits(flat: np.ndarray, tiles: np.ndarray) -> np.ndarray:
    return _outputs(MNIST, flat, torch.as_tensor(tiles.astype(np.float32))).numpy()


def write_theirs(folder: Path, kind: str, seed: int = 0) -> dict:
    """A zoo in their layout: len(RUN_INDEX) runs x 9 snapshots; returns what was written."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    n = len(RUN_INDEX) * len(THEIR_STEPS)
    run = np.repeat(RUN_INDEX, len(THEIR_STEPS))
    step = np.tile(THEIR_STEPS, len(RUN_INDEX))
    layout = FORMAL_LANGUAGES if kind == "formal_languages" else MNIST
    params = (rng.standard_normal((n, layout.num_params)) * 0.3).astype(np.float32)
    files = {"parameters.npy": params}
    if kind == "formal_languages":
        seqs = rng.integers(0, 6, size=(n, SEQS, 42)).astype(np.int16)
        seqs[:, :, 0] = 4  # BOS
        files["sequences.npy"] = seqs
        files["logits.npy"] = np.stack([_fl_logprobs(params[i], seqs[i]) for i in range(n)]).astype(np.float16)
        files["tasks.npy"] = np.repeat(np.array(FL_TASKS, dtype=np.int64), len(THEIR_STEPS), 0)
        files["num_step_correct.npy"] = np.stack([run, step, rng.integers(0, 1001, size=n)], 1).astype(np.int64)
    else:
        tiles = rng.standard_normal((n, SEQS, 50, 16)).astype(np.float16)
        tiles[:, :, 0] = 0  # the BOS tile
        files["sequences.npy"] = tiles
        files["logits.npy"] = np.stack([_mnist_logits(params[i], tiles[i]) for i in range(n)]).astype(np.float16)
        files["tasks.npy"] = np.repeat(np.array(ANGLES, dtype=np.float64), len(THEIR_STEPS)).reshape(n, 1)
        files["num_step.npy"] = np.stack([run, step], 1).astype(np.int64)
        files["accuracy_losses.npy"] = np.stack([rng.uniform(0, 1, n), rng.uniform(0, 3, n), rng.uniform(0, 3, n),
                                                 np.repeat(DECAYS, len(THEIR_STEPS))], 1)
    for name, arr in files.items():
        np.save(folder / name, arr)
    return files


def _np(table, name):
    col = table.column(name).combine_chunks()
    return col.to_numpy_ndarray() if hasattr(col, "to_numpy_ndarray") else col.to_numpy()


def _sorted(table: pa.Table) -> pa.Table:
    return table.replace_schema_metadata(None).sort_by([("run_id", "ascending"), ("step", "ascending")]).combine_chunks()


@pytest.fixture(scope="module", params=["formal_languages", "mnist"])
def imported(request, tmp_path_factory):
    kind = request.param
    base = tmp_path_factory.mktemp(kind)
    files = write_theirs(base / "theirs", kind)
    manifest = import_npy(base / "theirs", kind, base / "zoo", shard_runs=3)  # 4 runs: two shards
    return kind, base, files, manifest


def test_rows_columns_and_dtypes(imported):
    kind, base, files, manifest = imported
    table = load_table(base / "zoo")
    n = len(RUN_INDEX) * len(THEIR_STEPS)
    assert table.num_rows == n == manifest["rows"] and manifest["runs"] == 4 and len(manifest["shards"]) == 2
    want = {"run_id": pa.int32(), "step": pa.int32(), "source_run": pa.int32(), "accuracy": pa.float32()}
    if kind == "formal_languages":
        shapes = {"params": (13766,), "task": (4,), "sequences": (SEQS, 42), "logprobs": (SEQS, 41, 6)}
        dtypes = {"params": np.float32, "task": np.int8, "sequences": np.int16, "logprobs": np.float16}
    else:
        want |= {"angle": pa.float32(), "weight_decay": pa.float32(), "train_loss": pa.float32(), "heldout_loss": pa.float32()}
        shapes = {"params": (15178,), "inputs": (SEQS, 50, 16), "logits": (SEQS, 50, 10)}
        dtypes = {"params": np.float32, "inputs": np.float16, "logits": np.float16}
    assert set(table.column_names) == set(want) | set(shapes)
    for c, t in want.items():
        assert table.schema.field(c).type == t, c
    for c, shape in shapes.items():
        a = _np(table, c)
        assert a.shape == (n, *shape) and a.dtype == dtypes[c], c
    # row for row the same values as their files (their rows were already in run order)
    assert np.array_equal(_np(table, "params"), files["parameters.npy"])
    assert np.array_equal(_np(table, "sequences" if kind == "formal_languages" else "inputs"), files["sequences.npy"])
    assert np.array_equal(_np(table, "logprobs" if kind == "formal_languages" else "logits"), files["logits.npy"])
    if kind == "mnist":
        al = files["accuracy_losses.npy"]
        for i, c in enumerate(("accuracy", "train_loss", "heldout_loss", "weight_decay")):
            assert np.array_equal(_np(table, c), al[:, i].astype(np.float32)), c
        assert np.array_equal(_np(table, "angle"), files["tasks.npy"][:, 0].astype(np.float32))
    else:
        assert np.array_equal(_np(table, "task"), files["tasks.npy"].astype(np.int8))


def test_a_stored_snapshot_reruns_to_its_stored_outputs(imported):
    kind, base, _, _ = imported
    table = load_table(base / "zoo")
    for row in (5, 31):  # a snapshot of the first run and one of the last (second shard)
        flat = _np(table, "params")[row]
        if kind == "formal_languages":
            seqs, stored = _np(table, "sequences")[row], _np(table, "logprobs")[row]
            again = _fl_logprobs(flat, seqs)
            assert (seqs[:, 0] == 4).all()
        else:
            again = _mnist_logits(flat, _np(table, "inputs")[row])
            stored = _np(table, "logits")[row]
        np.testing.assert_allclose(stored.astype(np.float32), again, atol=5e-3, rtol=2e-3)


def test_steps_shift_by_one_and_accuracy_is_their_count_over_1000(imported):
    kind, base, files, manifest = imported
    table = load_table(base / "zoo")
    steps = [s + 1 for s in THEIR_STEPS]
    assert manifest["snapshots"] == steps and manifest["spec"]["snapshot_steps"] == steps
    mapping = manifest["imported"]["step_mapping"]
    assert mapping["offset"] == 1 and mapping["their_steps"] == THEIR_STEPS and mapping["steps"] == steps
    assert np.array_equal(_np(table, "step"), np.tile(steps, 4))
    if kind == "formal_languages":
        assert np.array_equal(_np(table, "accuracy"), (files["num_step_correct.npy"][:, 2] / 1000).astype(np.float32))
    assert manifest["config"] is None and manifest["imported"]["source"] == str((base / "theirs").resolve())
    assert set(manifest["imported"]["files"]) == set(files)


def test_repeated_run_indices_are_renumbered(imported):
    _, base, _, manifest = imported
    table = load_table(base / "zoo")
    assert np.array_equal(_np(table, "run_id"), np.repeat([0, 1, 2, 3], 9))
    assert np.array_equal(_np(table, "source_run"), np.repeat(RUN_INDEX, 9))
    assert manifest["imported"]["runs_renumbered"] is True
    assert sorted(r for s in manifest["shards"] for r in s["runs"]) == [0, 1, 2, 3]


def test_round_trip_through_their_layout(imported, tmp_path):
    kind, base, files, _ = imported
    export_npy(base / "zoo", tmp_path / "out")
    for name, arr in files.items():  # their files come back as they were (zoo B's float64 through our float32)
        back = np.load(tmp_path / "out" / name)
        assert back.shape == arr.shape and back.dtype == arr.dtype, name
        assert np.array_equal(back, arr.astype(np.float32).astype(arr.dtype) if arr.dtype == np.float64 else arr), name
    import_npy(tmp_path / "out", kind, tmp_path / "again")
    assert _sorted(load_table(tmp_path / "again")).equals(_sorted(load_table(base / "zoo")))


def test_splits_and_info_work_on_an_imported_zoo(imported):
    kind, base, _, _ = imported
    splits = zoo_splits(base / "zoo")
    assert sorted(splits.run_split) == [0, 1, 2, 3] and len(splits.task_split) == 4
    assert len(splits.runs("train")) >= 1 and len(splits.runs("ood")) >= 1
    r = _cli("info", str(base / "zoo"))
    assert r.returncode == 0, r.stderr
    assert "rows: 36" in r.stdout and "runs: 4" in r.stdout and "imported from" in r.stdout


def test_memory_estimate_reads_an_imported_zoo_without_config(imported):
    from rnnray.config import parse_zoo
    from rnnray.job import memory_estimate

    kind, base, _, _ = imported

    class Cfg:  # what memory_estimate reads of a sweep config
        zoo = str(base / "zoo")
        train = type("T", (), {"eval_sequences": 2})()
        resources = type("R", (), {"workers": 1})()

    got = memory_estimate(Cfg)
    built = Cfg()
    built.zoo = parse_zoo({"kind": kind, "runs": 4, "steps": 20000, "stored_sequences": SEQS})
    assert got["worker"] == memory_estimate(built)["worker"] > 0


# ------------------------------------------------------------------------------------------------
# bad sources: one line naming the file, exit 2, nothing written


def _cli(*args):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "rnnray.zoo", *args], capture_output=True, text=True, env=env, timeout=600)


def _missing(folder):
    (folder / "logits.npy").unlink()
    return "logits.npy"


def _wrong_shape(folder):
    p = np.load(folder / "parameters.npy")
    np.save(folder / "parameters.npy", p[:, :-1])
    return "parameters.npy"


def _disagreeing_rows(folder):
    t = np.load(folder / "tasks.npy")
    np.save(folder / "tasks.npy", t[:-1])
    return "tasks.npy"


@pytest.mark.parametrize("spoil", [_missing, _wrong_shape, _disagreeing_rows])
def test_bad_source_is_one_line_exit_2_and_writes_nothing(tmp_path, spoil):
    write_theirs(tmp_path / "theirs", "formal_languages")
    name = spoil(tmp_path / "theirs")
    out = tmp_path / "zoo"
    r = _cli("import-npy", str(tmp_path / "theirs"), "--kind", "formal_languages", "--out", str(out))
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and name in lines[0] and "Traceback" not in r.stderr, r.stderr
    assert not out.exists()


def test_wrong_dtype_and_mixed_tasks_are_refused_before_writing(tmp_path):
    src = tmp_path / "theirs"
    write_theirs(src, "mnist")
    np.save(src / "logits.npy", np.load(src / "logits.npy").astype(np.int16))
    with pytest.raises(ZooError, match="logits.npy: dtype int16"):
        import_npy(src, "mnist", tmp_path / "zoo")
    write_theirs(tmp_path / "fl", "formal_languages")
    t = np.load(tmp_path / "fl" / "tasks.npy")
    t[3] = (0, 1, 1, 1)  # the fourth snapshot of run 0 has another task
    np.save(tmp_path / "fl" / "tasks.npy", t)
    with pytest.raises(ZooError, match=r"tasks.npy: run 0 .*changes task"):
        import_npy(tmp_path / "fl", "formal_languages", tmp_path / "zoo")
    assert not (tmp_path / "zoo").exists()


def _spoil(name, index, value):
    """Set one value of one of their files (a row, sequence, step and column)."""
    def spoil(folder):
        a = np.load(folder / name)
        a[index] = value
        np.save(folder / name, a)
    return spoil


@pytest.mark.parametrize("kind,spoil,file,needle", [
    ("formal_languages", _spoil("parameters.npy", (7, 3), np.nan), "parameters.npy",
     "holds a value that is not finite as float32 (first at row 7: nan)"),
    ("formal_languages", _spoil("logits.npy", (5, 0, 2, 1), -np.inf), "logits.npy",
     "holds a value that is not finite as float16 (first at row 5: -inf)"),
    ("formal_languages", _spoil("sequences.npy", (11, 1, 9), 6), "sequences.npy",
     "holds a token id outside [0, 6) (first at row 11: 6)"),
    ("formal_languages", _spoil("sequences.npy", (30, 2, 0), -1), "sequences.npy",
     "holds a token id outside [0, 6) (first at row 30: -1)"),
    ("mnist", _spoil("parameters.npy", (35, 0), np.inf), "parameters.npy",
     "holds a value that is not finite as float32 (first at row 35: inf)"),
    ("mnist", _spoil("logits.npy", (0, 1, 49, 9), np.nan), "logits.npy",
     "holds a value that is not finite as float16 (first at row 0: nan)"),
    ("mnist", _spoil("sequences.npy", (20, 2, 3, 4), np.inf), "sequences.npy",
     "holds a value that is not finite as float16 (first at row 20: inf)"),
])
def test_values_that_are_not_finite_or_not_tokens_are_refused_with_the_first_bad_row(tmp_path, kind, spoil, file, needle):
    src, out = tmp_path / "theirs", tmp_path / "zoo"
    write_theirs(src, kind)
    spoil(src)
    with pytest.raises(ZooError) as e:
        import_npy(src, kind, out)
    assert str(e.value) == f"{src / file}: {needle}"
    assert not out.exists()


def test_logits_beyond_float16_and_bad_rows_in_a_later_block_are_found(tmp_path, monkeypatch):
    """Their logits stored as float32 may hold values float16 cannot (stored as +-inf); the check
    reads the files a block of rows at a time, and finds a bad row in any block."""
    from rnnray.zoo import authors

    src = tmp_path / "theirs"
    write_theirs(src, "mnist")
    logits = np.load(src / "logits.npy").astype(np.float32)
    logits[22, 0, 7, 3] = 1e5  # finite in float32, +inf in float16
    np.save(src / "logits.npy", logits)
    monkeypatch.setattr(authors, "CHECK_BLOCK", 3 * 50 * 10 * 4)  # 4 rows of logits a block: row 22 is in the sixth
    with pytest.raises(ZooError, match=r"logits.npy: holds a value that is not finite as float16 \(first at row 22: 100000.0\)$"):
        import_npy(src, "mnist", tmp_path / "zoo")
    assert not (tmp_path / "zoo").exists()


def test_cli_bad_values_are_one_line_exit_2_and_write_nothing(tmp_path):
    write_theirs(tmp_path / "theirs", "formal_languages")
    _spoil("sequences.npy", (3, 0, 5), 9)(tmp_path / "theirs")
    out = tmp_path / "zoo"
    r = _cli("import-npy", str(tmp_path / "theirs"), "--kind", "formal_languages", "--out", str(out))
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "sequences.npy: holds a token id outside [0, 6) (first at row 3: 9)" in lines[0], r.stderr
    assert not out.exists()


def test_an_out_dir_holding_a_zoo_is_refused(imported, tmp_path):
    kind, base, _, _ = imported
    before = json.loads((base / "zoo" / "manifest.json").read_text())
    with pytest.raises(ZooError, match="already holds a zoo"):
        import_npy(base / "theirs", kind, base / "zoo")
    with pytest.raises(ZooError, match="already holds a zoo"):
        export_npy(base / "zoo", base / "zoo")
    assert read_manifest(base / "zoo") == before


def test_cli_import_and_export(tmp_path):
    write_theirs(tmp_path / "theirs", "mnist")
    r = _cli("import-npy", str(tmp_path / "theirs"), "--kind", "mnist", "--out", str(tmp_path / "zoo"))
    assert r.returncode == 0, r.stderr
    assert "36 rows" in r.stdout and "renumbered" in r.stdout
    r = _cli("export-npy", str(tmp_path / "zoo"), "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        ["parameters.npy", "sequences.npy", "logits.npy", "tasks.npy", "num_step.npy", "accuracy_losses.npy"])


def test_a_disk_that_fills_up_mid_import_or_export_stops_naming_the_file_and_leaves_nothing(tmp_path):
    """A file-size limit in the command's process (a full disk answers the same: a write fails,
    SIGXFSZ ignored): the limit lets the pre-flight probe through, then stops the first shard or the
    first exported file. One line naming it, exit code 1, and no part of a zoo or of the files is left
    (the import's --out folder is gone, the export's holds nothing); without the limit both then work."""
    import resource
    import signal

    def small_disk():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}

    def run(*args, full=True):
        return subprocess.run([sys.executable, "-m", "rnnray.zoo", *args], capture_output=True, text=True, env=env,
                              timeout=600, preexec_fn=small_disk if full else None)

    write_theirs(tmp_path / "theirs", "mnist")
    zoo, out = tmp_path / "zoo", tmp_path / "out"
    r = run("import-npy", str(tmp_path / "theirs"), "--kind", "mnist", "--out", str(zoo), "--shard-runs", "1")
    err = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(err) == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert err[0].startswith(f"error: {zoo / 'shards'}/runs-") and err[0].endswith("cannot be written (File too large)"), err
    assert not zoo.exists()
    assert run("import-npy", str(tmp_path / "theirs"), "--kind", "mnist", "--out", str(zoo), full=False).returncode == 0

    r = run("export-npy", str(zoo), "--out", str(out))
    err = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(err) == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert err[0].startswith(f"error: {out}/") and err[0].endswith(".npy: cannot be written (File too large)"), err
    assert list(out.iterdir()) == []
    assert run("export-npy", str(zoo), "--out", str(out), full=False).returncode == 0
