"""The zoos: task recipes, the Ray Data build, Parquet that reads without Ray, resume, commands, science."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F

from rnnray.config import ConfigError, parse_zoo
from rnnray.weights import FORMAL_LANGUAGES, MNIST
from rnnray.zoo import ZooError, build, languages, load, load_table, mnist, verify
from rnnray.zoo.trainer import train_chunk

from conftest import PATIENCE, torch_threads

ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------------------------------
# zoo A recipe


def test_all_216_tasks_and_draws():
    assert len({tuple(t) for t in languages.ALL_TASKS}) == 216
    rng = np.random.default_rng(0)
    drawn = {tuple(languages.draw_task(rng)) for _ in range(5000)}
    assert drawn == {tuple(t) for t in languages.ALL_TASKS}


def test_training_sequences_follow_the_language():
    tasks = torch.tensor([[0, -1, 2, 0], [0, -3, 1, 2]])
    n = torch.tensor([[1, 4], [3, 9]])
    seqs = languages.make_sequences(tasks, n, 42)
    assert languages.render(seqs[0, 0]).startswith("^acccd$")
    assert languages.render(seqs[0, 1]).startswith("^aaaabbbccccccdddd$")
    assert languages.render(seqs[1, 0]).startswith("^aaaccccddddd$")
    assert seqs.shape == (2, 2, 42) and (seqs[..., 0] == languages.BOS).all()
    assert languages.in_language(seqs[..., 1:], tasks).all()


@pytest.mark.parametrize(
    "string,ok",
    [
        ("abbcd$", False),  # counts: t=(0,1,1,1) needs n+1 b, c, d
        ("abbccdd$", True),
        ("bcd$", True),  # n=0: a^0 b^1 c^1 d^1
        ("bbccdd$", False),  # n=1 would need one a
        ("abbccdd", False),  # no EOS
        ("abcbcdd$", False),  # order broken
        ("abbccdd$a", True),  # anything after the first EOS is ignored
        ("aabbbcccddd$", True),
        ("abbccd^d$", False),  # BOS inside the string
    ],
)
def test_strict_membership(string, ok):
    ids = {c: i for i, c in enumerate("abcd^$")}
    toks = torch.tensor([[[ids[c] for c in string]]])
    task = torch.tensor([[0, 1, 1, 1]])
    assert bool(languages.in_language(toks, task)[0, 0]) is ok


def test_membership_respects_n_min():
    ids = {c: i for i, c in enumerate("abcd^$")}
    task = torch.tensor([[0, -2, 0, 0]])  # n_min = 2
    good = torch.tensor([[[ids[c] for c in "aaccdd$"]]])  # n = 2: a^2 b^0 c^2 d^2
    bad = torch.tensor([[[ids[c] for c in "acd$"]]])  # n = 1 < n_min would need b^-1
    assert languages.in_language(good, task).item() and not languages.in_language(bad, task).item()


# ------------------------------------------------------------------------------------------------
# zoo B recipe


def test_mnist_tiles_rotation_and_split():
    img = torch.arange(784, dtype=torch.float32).view(1, 28, 28)
    rot0 = mnist.rotate(img / 784, torch.zeros(1))
    assert torch.allclose(rot0, img / 784, atol=1e-6)
    rot90 = mnist.rotate(img / 784, torch.full((1,), 90.0))
    assert torch.allclose(rot90[0, 2:-2, 2:-2], torch.rot90(img[0] / 784, 1)[2:-2, 2:-2], atol=1e-5) or torch.allclose(
        rot90[0, 2:-2, 2:-2], torch.rot90(img[0] / 784, -1)[2:-2, 2:-2], atol=1e-5
    )
    u8 = torch.arange(784).remainder(256).to(torch.uint8).view(1, 28, 28)
    seq = mnist.to_sequences(u8, torch.zeros(1))
    assert seq.shape == (1, 50, 16) and (seq[0, 0] == 0).all()
    norm = (u8.float() / 255 - mnist.MEAN) / mnist.STD
    # tile 1 (row 0, col 1) = rows 0..3, columns 4..7, flattened row-major
    assert torch.allclose(seq[0, 2], norm[0, 0:4, 4:8].reshape(-1), atol=1e-5)
    assert torch.allclose(seq[0, 1 + 7], norm[0, 4:8, 0:4].reshape(-1), atol=1e-5)  # second tile row
    mask = mnist.heldout_mask(10000)
    assert abs(mask.mean() - 0.2) < 0.01 and (mnist.heldout_mask(60000)[:10000] == mask).all()
    images, labels, source = mnist.load_digits("bundled")
    assert images.shape == (10000, 28, 28) and labels.max() == 9 and source.startswith("bundled")


def test_mnist_runs_draw_angles_and_weight_decays():
    cfg = parse_zoo({"kind": "mnist", "runs": 40, "steps": 0, "source": "bundled", "eval_digits": 10, "stored_sequences": 2})
    from rnnray.zoo.trainer import MnistRecipe

    r = MnistRecipe(cfg, list(range(40)), torch.device("cpu"))
    assert set(r.wd_np.tolist()) == set(np.float32([0.0, 0.001, 0.01, 0.1]).tolist())
    assert (r.angles_np >= 0).all() and (r.angles_np < 360).all() and np.unique(r.angles_np).size == 40


def test_learning_rate_schedule_and_snapshots():
    cfg = parse_zoo({"kind": "formal_languages"})
    assert cfg.lr(0) == pytest.approx(0.01) and cfg.lr(10000) == pytest.approx(0.003) and cfg.lr(20000) == pytest.approx(0.0003)
    assert cfg.lr(5000) == pytest.approx(0.0065) and cfg.lr(15000) == pytest.approx(0.00165)
    assert cfg.snapshots == (0, 100, 200, 500, 1000, 2000, 5000, 10000, 20000)
    assert cfg.model_copy(update={"steps": 1500}).snapshots == (0, 100, 200, 500, 1000, 1500)


# ------------------------------------------------------------------------------------------------
# the Ray Data build


def _sorted_table(path):
    t = load_table(path)
    return t.sort_by([("run_id", "ascending"), ("step", "ascending")])


def _assert_same_rows(a, b):
    assert a.num_rows == b.num_rows and a.column_names == b.column_names
    for name in a.column_names:
        x, y = a.column(name).combine_chunks(), b.column(name).combine_chunks()
        if hasattr(x, "to_numpy_ndarray"):
            x, y = x.to_numpy_ndarray(), y.to_numpy_ndarray()
        else:
            x, y = x.to_numpy(), y.to_numpy()
        assert np.array_equal(x, y), name


def test_same_zoo_however_chunked_or_spread(ray_session, tmp_path):
    spec = dict(kind="formal_languages", runs=5, steps=40, seed=11, snapshot_steps=[0, 20, 40], accuracy_samples=50, stored_sequences=8)
    a = parse_zoo({**spec, "path": str(tmp_path / "a"), "resources": {"actors": 1, "chunk": 5}})
    b = parse_zoo({**spec, "path": str(tmp_path / "b"), "resources": {"actors": 2, "chunk": 2}})
    ma, mb = build(a, progress=False), build(b, progress=False)
    assert len(ma["shards"]) == 1 and len(mb["shards"]) == 3
    _assert_same_rows(_sorted_table(a.path), _sorted_table(b.path))
    assert ma["rows"] == 15 and set(ma["shards"][0]["runs"]) == set(range(5))
    from rnnray import rnn

    ran = "compiled kernels" if rnn.kernels_available() else "pytorch ops"  # the actors share this machine
    assert [s["lstm"] for s in ma["shards"] + mb["shards"]] == [ran] * 4


def test_manifest_and_ray_dataset(tiny_fl_zoo):
    m = verify(tiny_fl_zoo.path)
    assert m["kind"] == "formal_languages" and m["rows"] == 8 * 3 and m["layout"]["num_params"] == 13766
    assert m["spec"]["seed"] == 3 and all(len(s["sha256"]) == 64 for s in m["shards"])
    ds = load(tiny_fl_zoo.path)
    batch = next(iter(ds.iter_batches(batch_size=4, batch_format="numpy")))
    assert batch["params"].shape == (4, 13766) and batch["logprobs"].shape == (4, 20, 41, 6)


# ------------------------------------------------------------------------------------------------
# readable without Ray, and faithful to the stored parameters


def test_parquet_reads_without_ray_and_pandas(tiny_fl_zoo, tiny_mnist_zoo):
    for cfg, shapes in [
        (tiny_fl_zoo, {"params": (13766,), "sequences": (20, 42), "logprobs": (20, 41, 6), "task": (4,)}),
        (tiny_mnist_zoo, {"params": (15178,), "inputs": (20, 50, 16), "logits": (20, 50, 10)}),
    ]:
        shard = sorted((Path(cfg.path) / "shards").glob("*.parquet"))[0]
        table = pq.read_table(shard)
        for col, shape in shapes.items():
            assert table.column(col).combine_chunks().to_numpy_ndarray().shape[1:] == shape
        meta = json.loads(pq.read_schema(shard).metadata[b"rnnray.shapes"])
        df = table.to_pandas()
        for col, shape in shapes.items():
            assert tuple(meta[col]) == shape
            assert np.asarray(df[col].iloc[0]).reshape(shape).shape == shape
        assert np.array_equal(
            np.asarray(df["params"].iloc[1]), table.column("params").combine_chunks().to_numpy_ndarray()[1]
        )


def test_stored_outputs_reproduce_with_torch_lstm(tiny_fl_zoo, tiny_mnist_zoo):
    t = load_table(tiny_fl_zoo.path)
    params = t.column("params").combine_chunks().to_numpy_ndarray()
    seqs = t.column("sequences").combine_chunks().to_numpy_ndarray()
    logps = t.column("logprobs").combine_chunks().to_numpy_ndarray()
    for row in (0, 5, len(params) - 1):
        lstm, lin = FORMAL_LANGUAGES.to_modules(torch.tensor(params[row]))
        x = F.one_hot(torch.as_tensor(seqs[row][:, :41].astype(np.int64)), 6).float()
        with torch.no_grad():
            ref = torch.log_softmax(lin(lstm(x)[0]), -1)
        assert torch.allclose(ref, torch.tensor(logps[row]).float(), atol=2e-2, rtol=1e-2)
    t = load_table(tiny_mnist_zoo.path)
    params = t.column("params").combine_chunks().to_numpy_ndarray()
    inputs = t.column("inputs").combine_chunks().to_numpy_ndarray()
    logits = t.column("logits").combine_chunks().to_numpy_ndarray()
    for row in (0, len(params) - 1):
        lstm, lin = MNIST.to_modules(torch.tensor(params[row]))
        with torch.no_grad():
            ref = lin(lstm(torch.tensor(inputs[row]).float())[0])
        assert torch.allclose(ref, torch.tensor(logits[row]).float(), atol=2e-2, rtol=1e-2)


def test_stored_sequences_are_sampled_from_the_rnn(tiny_fl_zoo):
    """Trained snapshots put most of their probability on the tokens they emitted."""
    t = load_table(tiny_fl_zoo.path)
    steps = t.column("step").to_numpy()
    seqs = t.column("sequences").combine_chunks().to_numpy_ndarray()[steps == 200]
    logps = t.column("logprobs").combine_chunks().to_numpy_ndarray()[steps == 200].astype(np.float32)
    chosen = np.take_along_axis(logps, seqs[:, :, 1:, None].astype(np.int64), -1)[..., 0]
    assert np.exp(chosen).mean() > 0.5  # far above 1/6 for a uniform model


# ------------------------------------------------------------------------------------------------
# resume and safety


def test_resume_skips_finished_runs_and_discards_partial_files(ray_session, tmp_path):
    spec = dict(kind="formal_languages", runs=4, steps=30, seed=2, snapshot_steps=[0, 30], accuracy_samples=20,
                stored_sequences=4, resources={"actors": 1, "chunk": 2}, path=str(tmp_path / "z"))
    cfg = parse_zoo(spec)
    build(cfg, progress=False)
    full = _sorted_table(cfg.path)
    root = Path(cfg.path)
    shards = sorted((root / "shards").glob("*.parquet"))
    kept, lost = shards
    kept_mtime = kept.stat().st_mtime_ns
    # simulate an interrupted build: no manifest, one shard never renamed, a stray temporary file
    (root / "manifest.json").unlink()
    lost.rename(root / "shards" / f".{lost.name}.tmp-deadbeef")
    with pytest.raises(ZooError, match="manifest.json"):
        load_table(cfg.path)
    build(cfg, progress=False)
    assert kept.stat().st_mtime_ns == kept_mtime  # finished runs were not trained again
    assert not list((root / "shards").glob(".*tmp*"))
    _assert_same_rows(full, _sorted_table(cfg.path))


def test_corrupt_zoos_are_named(ray_session, tiny_fl_zoo, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_fl_zoo.path, copy)
    shard = sorted((copy / "shards").glob("*.parquet"))[0]
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    with pytest.raises(ZooError, match=shard.name):
        load_table(copy)
    shard.write_bytes(data[:-9] + bytes([data[-9] ^ 1]) + data[-8:])  # same size, one bit flipped
    with pytest.raises(ZooError, match="checksum"):
        load_table(copy)
    with pytest.raises(ZooError, match="no zoo here"):
        load_table(tmp_path / "nowhere")


def test_building_over_a_different_zoo_is_refused(ray_session, tiny_fl_zoo):
    other = tiny_fl_zoo.model_copy(update={"seed": 99})
    with pytest.raises(ZooError, match="different"):
        build(other, progress=False)


# ------------------------------------------------------------------------------------------------
# commands


def _run(*args, cwd=None):
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    return subprocess.run([sys.executable, "-m", "rnnray.zoo", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=PATIENCE)


def test_cli_info(tiny_fl_zoo):
    r = _run("info", tiny_fl_zoo.path)
    assert r.returncode == 0, r.stderr
    assert "rows: 24" in r.stdout and "runs: 8" in r.stdout and "accuracy per step" in r.stdout
    lines = [ln.split() for ln in r.stdout.splitlines() if ln.strip().split()[:1] in (["0"], ["100"], ["200"])]
    assert [ln[0] for ln in lines] == ["0", "100", "200"]


@pytest.mark.parametrize(
    "content,sets,needle",
    [
        ("kind: formal_languages\nruns: [3\n", [], "malformed YAML"),
        ("kind: formal_languages\nrunz: 3\n", [], "runz: unknown key"),
        ("kind: formal_languages\nruns: -1\n", [], "runs"),
        ("kind: cats\n", [], "kind"),
        ("kind: formal_languages\n", ["steps=many"], "steps"),
        ("kind: mnist\nresources: {gpus_per_actor: -1}\n", [], "resources.gpus_per_actor"),
    ],
)
def test_cli_bad_configs_exit_2_with_one_line(tmp_path, content, sets, needle):
    cfg = tmp_path / "zoo.yaml"
    cfg.write_text(content + f"path: {tmp_path / 'out'}\n")
    r = _run("build", str(cfg), *sum((["--set", s] for s in sets), []))
    assert r.returncode == 2, r.stderr
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and needle in err[0] and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()


def test_cli_missing_zoo(tmp_path):
    r = _run("info", str(tmp_path / "nope"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "nope" in r.stderr


def test_cli_build(ray_session, tmp_path):
    cfg = tmp_path / "z.yaml"
    cfg.write_text("kind: formal_languages\nruns: 2\nsteps: 10\naccuracy_samples: 10\nstored_sequences: 2\n")
    r = _run("build", str(cfg), "--set", f"path={tmp_path / 'zoo'}", "--set", "resources.actors=1", "--no-progress")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "2 runs" in r.stdout and verify(tmp_path / "zoo")["rows"] == 4


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="snapshot_steps"):
        parse_zoo({"kind": "formal_languages", "snapshot_steps": [5, 1]})


# ------------------------------------------------------------------------------------------------
# the science, at small scale


def test_formal_language_rnns_learn_their_languages():
    cfg = parse_zoo({"kind": "formal_languages", "runs": 4, "steps": 2000, "seed": 7, "snapshot_steps": [0, 2000],
                     "accuracy_samples": 500, "stored_sequences": 2})
    with torch_threads(2):
        out = train_chunk(cfg, [0, 1, 2, 3])
    acc0 = out["accuracy"][out["step"] == 0].mean()
    acc = out["accuracy"][out["step"] == 2000].mean()
    assert acc > 0.6 and acc0 < 0.05, (acc0, acc)


def test_mnist_rnns_classify_unrotated_digits():
    cfg = parse_zoo({"kind": "mnist", "runs": 2, "steps": 2000, "seed": 1, "snapshot_steps": [2000], "source": "bundled",
                     "angle_range": [0.0, 1e-6], "weight_decays": [0.0], "eval_digits": 2000, "stored_sequences": 2})
    with torch_threads(2):
        out = train_chunk(cfg, [0, 1])
    assert out["accuracy"].min() > 0.8, out["accuracy"]
    assert (out["heldout_loss"] > 0).all() and (out["train_loss"] > 0).all()


def test_cli_build_refuses_files_and_paths_it_cannot_use(tmp_path):
    """Before Ray starts: a config that is not text, a zoo path below a file, a results folder as the
    zoo path; one line naming the file or field, exit 2, nothing written."""
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "results" / "s-1").mkdir(parents=True)
    (tmp_path / "results" / "s-1" / "sweep.json").write_text("{}")
    (tmp_path / "zoo.bin").write_bytes(b"kind: formal_languages\n\x00\x01\x02")
    cfg = tmp_path / "z.yaml"
    cfg.write_text("kind: formal_languages\nruns: 2\n")
    cases = [([str(tmp_path / "zoo.bin")], "not a text file"),
             ([str(cfg), "--set", f"path={tmp_path / 'notes.txt' / 'zoo'}"], "path:"),
             ([str(cfg), "--set", f"path={tmp_path / 'results'}"], "is a results folder")]
    for args, needle in cases:
        before = sorted(str(p) for p in tmp_path.rglob("*"))
        r = _run("build", *args)
        err = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(err) == 1 and needle in err[0] and "Traceback" not in r.stderr, r.stderr
        assert sorted(str(p) for p in tmp_path.rglob("*")) == before


def test_manifest_read_once_per_process_and_again_when_rebuilt(tiny_fl_zoo, tmp_path, monkeypatch):
    """Every stage may ask for the manifest; the file is read once per process, and a zoo rewritten
    in place (a new manifest renamed over the old) is read afresh."""
    import json
    import shutil
    from pathlib import Path

    from rnnray.results.atomic import atomic_write_bytes
    from rnnray.zoo import storage

    zoo = tmp_path / "zoo"
    shutil.copytree(tiny_fl_zoo.path, zoo)
    reads = []
    real = Path.read_text

    def counting(self, *a, **k):
        if self.name == storage.MANIFEST:
            reads.append(self)
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "read_text", counting)
    first = storage.read_manifest(zoo)
    storage.verify(zoo, checksums=False)
    storage.load_table(zoo, columns=["run_id"], checksums=False)
    first["rows"] = -1  # a caller's copy: changing it changes nothing for the next
    assert storage.read_manifest(zoo)["rows"] == tiny_fl_zoo.runs * len(tiny_fl_zoo.snapshot_steps)
    assert len(reads) == 1
    changed = {**storage.read_manifest(zoo), "note": "rebuilt"}
    atomic_write_bytes(zoo / storage.MANIFEST, json.dumps(changed).encode())
    assert storage.read_manifest(zoo)["note"] == "rebuilt" and len(reads) == 2


def test_balanced_task_assignment_covers_every_task_equally():
    """`task_assignment: balanced` goes through the 216 tasks in shuffled rounds; `uniform` (the
    paper's, the default) is each run's own draw, as before, and keeps old zoos' content spec."""
    from collections import Counter

    from rnnray.config import FormalLanguagesZoo
    from rnnray.zoo.builder import content_spec
    from rnnray.zoo.languages import ALL_TASKS, draw_task
    from rnnray.zoo.trainer import _TASK, assigned_task, run_rng

    balanced = FormalLanguagesZoo(kind="formal_languages", runs=324, seed=3, task_assignment="balanced")
    counts = Counter(tuple(assigned_task(balanced, r)) for r in range(324))
    assert set(counts) == {tuple(t) for t in ALL_TASKS} and sorted(set(counts.values())) == [1, 2]
    assert Counter(tuple(assigned_task(balanced, r)) for r in range(432)).most_common()[-1][1] == 2  # two full rounds
    first, second = [tuple(assigned_task(balanced, r)) for r in range(216)], [tuple(assigned_task(balanced, r)) for r in range(216, 432)]
    assert first != second  # each round shuffled afresh
    uniform = FormalLanguagesZoo(kind="formal_languages", runs=324, seed=3)
    assert all((assigned_task(uniform, r) == draw_task(run_rng(3, r, _TASK))).all() for r in range(50))
    drawn = {tuple(assigned_task(uniform, r)) for r in range(324)}
    assert 140 < len(drawn) < 195  # uniform draws leave many tasks out (about 166 expected)
    assert "task_assignment" not in content_spec(uniform) and content_spec(balanced)["task_assignment"] == "balanced"


# ------------------------------------------------------------------------------------------------
# refused before anything runs: values that are not finite, sizes that cannot fit


@pytest.mark.parametrize("kind,field,value,needle", [
    ("formal_languages", "weight_decay", float("inf"), "weight_decay: must be finite, got inf"),
    ("formal_languages", "weight_decay", float("nan"), "weight_decay: must be finite, got nan"),
    ("formal_languages", "lr_points", [[0, 0.01], [100, float("nan")]], "lr_points.1.1: must be finite, got nan"),
    ("formal_languages", "resources", {"gpus_per_actor": float("inf")}, "resources.gpus_per_actor: must be finite, got inf"),
    ("mnist", "weight_decays", [0.0, float("inf")], "weight_decays.1: must be finite, got inf"),
    ("mnist", "angle_range", [0.0, float("inf")], "angle_range.1: must be finite, got inf"),
    ("mnist", "weight_decays", [float("-inf")], "weight_decays.0: must be finite, got -inf"),
])
def test_non_finite_floats_are_refused_by_name(kind, field, value, needle):
    with pytest.raises(ConfigError) as e:
        parse_zoo({"kind": kind, field: value})
    assert str(e.value) == f"zoo config: {needle}"


@pytest.mark.parametrize("content,sets,needle", [
    ("kind: formal_languages\nweight_decay: .inf\n", [], "weight_decay: must be finite, got inf"),
    ("kind: mnist\n", ["weight_decays=[0.0, .nan]"], "weight_decays.1: must be finite, got nan"),
    ("kind: formal_languages\n", ["steps=10000000000000"], "steps: Input should be less than or equal to 2147483647"),
    ("kind: mnist\n", ["runs=3000000000"], "runs: Input should be less than or equal to 2147483647"),
    ("kind: mnist\n", ["resources.threads_per_actor=1000000"], "resources.threads_per_actor: Input should be less than or equal to 4096"),
])
def test_cli_non_finite_and_out_of_range_values_exit_2(tmp_path, content, sets, needle):
    test_cli_bad_configs_exit_2_with_one_line(tmp_path, content, sets, needle)


def _small_zoo(tmp_path, **changes):
    return parse_zoo({"kind": "formal_languages", "runs": 10, "steps": 10, "snapshot_steps": [0], "stored_sequences": 5,
                      "accuracy_samples": 20, "path": str(tmp_path / "zoo"), **changes})


def test_a_zoo_beyond_the_disk_or_the_drivers_memory_is_refused_by_name(tmp_path):
    from rnnray.cli import UsageError
    from rnnray.zoo.preflight import RUN_ID_BYTES, check_output, output_bytes

    cfg = _small_zoo(tmp_path)
    row = 4 * FORMAL_LANGUAGES.num_params + 5 * (2 * 42 + 2 * 41 * 6)  # float32 weights, int16 tokens, float16 log-probs
    need = output_bytes(cfg)
    assert need == 10 * 2 * row  # runs x snapshots (0 and the last step) x row
    check_output(cfg, free=need, memory=10 * RUN_ID_BYTES)  # fits exactly: no error
    with pytest.raises(UsageError, match=rf"^runs: the zoo would take about .* on disk \(10 runs x 2 snapshots x {row} bytes "
                                         rf"a row, before compression\), more than the .* free at .*; lower runs$"):
        check_output(cfg, free=need - 1, memory=10**9)
    wide = _small_zoo(tmp_path, stored_sequences=10**5)  # the stored sequences make the size, not the runs
    with pytest.raises(UsageError, match=r"^stored_sequences: the zoo would take"):
        check_output(wide, free=need * 100, memory=10**9)
    with pytest.raises(UsageError, match=rf"^runs: listing 10 runs to train would take .* \({RUN_ID_BYTES} bytes a run\)"):
        check_output(cfg, free=need, memory=10 * RUN_ID_BYTES - 1)
    assert not (tmp_path / "zoo").exists()


@pytest.mark.parametrize("field,value", [("accuracy_samples", 10**9), ("batch_size", 10**8), ("stored_sequences", 10**6),
                                         ("seq_len", 10**8), ("resources.chunk", None)])
def test_a_chunk_beyond_one_nodes_memory_is_refused_by_name(tmp_path, field, value):
    from rnnray.cli import UsageError
    from rnnray.zoo.preflight import actor_bytes, check_actor

    small = _small_zoo(tmp_path)
    limit = 100 * actor_bytes(small)
    check_actor(small, memory=limit)
    if field == "resources.chunk":  # many runs in one chunk: every other size at its default
        big = _small_zoo(tmp_path, runs=10**6, resources={"chunk": 10**6})
    else:
        big = _small_zoo(tmp_path, **{field: value})
    with pytest.raises(UsageError, match=rf"^{field}: one zoo actor would hold about .* more than the .* of memory on one "
                                         rf"node; lower {field}$"):
        check_actor(big, memory=limit)


def test_finished_shards_count_against_the_disk_estimate(tmp_path, one_torch_thread):
    """A resumed build needs room for the runs it has left, not for the whole zoo again."""
    from rnnray.cli import UsageError
    from rnnray.zoo.preflight import check_output, output_bytes

    cfg = _small_zoo(tmp_path, runs=4, resources={"chunk": 2})
    build(cfg, progress=False, in_process="cpu")
    root = Path(cfg.path)
    (root / "manifest.json").unlink()
    sorted((root / "shards").glob("*.parquet"))[1].unlink()  # runs 2, 3 are left to train
    check_output(cfg, free=output_bytes(cfg, 2), memory=10**9)
    with pytest.raises(UsageError, match=r"\(2 runs x 2 snapshots"):
        check_output(cfg, free=output_bytes(cfg, 2) - 1, memory=10**9)


def test_cli_build_refuses_sizes_that_cannot_fit_before_ray_starts(tmp_path):
    """One line naming the field, exit 2, nothing written, and no Ray (which would add its own lines)."""
    cfg = tmp_path / "z.yaml"
    cfg.write_text(f"kind: formal_languages\npath: {tmp_path / 'out' / 'zoo'}\n")
    cases = [(["--set", "runs=2000000000"], "runs: the zoo would take about"),
             (["--set", "accuracy_samples=1000000000000"], "accuracy_samples: one zoo actor would hold about"),
             (["--set", "batch_size=1000000000000"], "batch_size: one zoo actor would hold about")]
    for args, needle in cases:
        before = sorted(str(p) for p in tmp_path.rglob("*"))
        r = _run("build", str(cfg), *args)
        err = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(err) == 1 and needle in err[0] and "Traceback" not in r.stderr, r.stderr
        assert sorted(str(p) for p in tmp_path.rglob("*")) == before


# ------------------------------------------------------------------------------------------------
# a zoo whose RNNs diverge: the runs named, no shard written for their chunk


def test_a_diverging_zoo_stops_naming_its_runs_and_leaves_nothing(tmp_path, one_torch_thread):
    from rnnray.zoo.builder import ZooDiverged

    cfg = _small_zoo(tmp_path, runs=4, steps=20, snapshot_steps=[0, 10, 20], lr_points=[[0, 1e30]],
                     resources={"chunk": 2}, path=str(tmp_path / "new" / "zoo"))
    with pytest.raises(ZooDiverged) as e:
        build(cfg, progress=False, in_process="cpu")
    assert str(e.value) == ("zoo build: runs 0, 1 diverged (non-finite weights at step 10); "
                            "lower lr_points or weight_decay")
    assert not (tmp_path / "new").exists()  # the folders the build created are gone again


def test_only_the_diverged_runs_are_named_and_no_shard_of_the_build_is_kept(tmp_path, one_torch_thread):
    """Zoo B draws each run's weight decay: with decays 0 and 1e10 only the 1e10 runs diverge. The
    healthy first chunk's shard is removed too (the config diverges whatever is resumed), and a
    folder that existed before the build is left as it was."""
    from rnnray.zoo.builder import ZooDiverged
    from rnnray.zoo.trainer import ChunkTrainer

    cfg = parse_zoo(dict(kind="mnist", runs=6, steps=10, seed=18, snapshot_steps=[0, 10], source="bundled", eval_digits=20,
                         stored_sequences=2, weight_decays=[0.0, 1e10], resources={"chunk": 2}, path=str(tmp_path / "zoo")))
    assert ChunkTrainer(cfg, list(range(6))).wd.tolist() == [0.0, 0.0, 0.0, 1e10, 0.0, 0.0]
    (tmp_path / "zoo").mkdir()
    with pytest.raises(ZooDiverged, match=r"^zoo build: run 3 diverged \(non-finite weights at step 10\); "
                                          r"lower lr_points or weight_decays$"):
        build(cfg, progress=False, in_process="cpu")
    assert list((tmp_path / "zoo").iterdir()) == []


def test_stored_outputs_beyond_float16_stop_the_build(tmp_path, one_torch_thread):
    from rnnray.zoo.builder import ZooDiverged, check_finite

    cfg = _small_zoo(tmp_path, runs=3)
    cols = train_chunk(cfg, [0, 1, 2])
    check_finite(cfg, cols)  # a healthy chunk passes
    row = int(np.flatnonzero((cols["run_id"] == 2) & (cols["step"] == 10))[0])
    cols["logprobs"][row, 0, 5, 1] = -np.inf  # a log-probability below float16's range
    with pytest.raises(ZooDiverged, match=r"^zoo build: run 2 diverged \(stored logprobs beyond float16 at step 10\)"):
        check_finite(cfg, cols)


def test_a_diverging_zoo_stops_on_ray_actors_too(ray_session, tmp_path):
    from rnnray.zoo.builder import ZooDiverged

    cfg = _small_zoo(tmp_path, runs=4, steps=20, snapshot_steps=[0, 10, 20], lr_points=[[0, 1e30]],
                     resources={"chunk": 2, "actors": 2})
    with pytest.raises(ZooDiverged, match=r"^zoo build: runs (0, 1|2, 3) diverged \(non-finite weights at step 10\)"):
        build(cfg, progress=False)
    assert not (tmp_path / "zoo").exists()


# ------------------------------------------------------------------------------------------------
# every reader checks the zoo's form: the manifest's keys and types, each shard's columns


@pytest.fixture(scope="module")
def small_zoo(tmp_path_factory, one_torch_thread_module):
    cfg = parse_zoo({"kind": "formal_languages", "runs": 2, "steps": 10, "snapshot_steps": [0], "stored_sequences": 3,
                     "accuracy_samples": 10, "path": str(tmp_path_factory.mktemp("small") / "zoo")})
    build(cfg, progress=False, in_process="cpu")
    return Path(cfg.path)


def _every_reader(zoo: Path):
    """The ways a stage opens a zoo (each must fail with one ZooError naming the file)."""
    from rnnray.emulation.splits import zoo_splits
    from rnnray.train.plan import ZooPlan
    from rnnray.zoo.storage import read_manifest

    return {"read_manifest": lambda: read_manifest(zoo), "verify": lambda: verify(zoo, checksums=False),
            "load_table": lambda: load_table(zoo), "zoo_splits": lambda: zoo_splits(zoo, checksums=False),
            "ZooPlan.open": lambda: ZooPlan.open(zoo)}


@pytest.mark.parametrize("content,needle", [
    ("[]", "not an rnnray zoo manifest (the file holds a list, not an object)"),
    ("null", "not an rnnray zoo manifest (the file holds null, not an object)"),
    ('"zoo"', "the file holds a string"),
    (lambda m: {k: v for k, v in m.items() if k != "shards"}, "has no 'shards'"),
    (lambda m: {k: v for k, v in m.items() if k != "layout"}, "has no 'layout'"),
    (lambda m: {**m, "shards": {"a": 1}}, "'shards' is an object, expected a list"),
    (lambda m: {**m, "shards": [7]}, "shards[0] is a whole number, expected an object"),
    (lambda m: {**m, "shards": [{k: v for k, v in m["shards"][0].items() if k != "sha256"}]}, "shards[0].sha256 is missing"),
    (lambda m: {**m, "shards": [{**m["shards"][0], "file": "../../elsewhere.parquet"}]}, "not a file in the zoo's shards/ folder"),
    (lambda m: {**m, "kind": "cats"}, "kind 'cats' is not a zoo kind"),
    (lambda m: {**m, "runs": "many"}, "'runs' is a string, expected a whole number"),
    (lambda m: {**m, "layout": {**m["layout"], "num_params": 12}}, "layout.num_params is 12"),
    (lambda m: {**m, "config": [1]}, "'config' is a list, expected an object or null"),
    (lambda m: {**m, "snapshots": [0, "ten"]}, "'snapshots': expected a list of whole numbers"),
])
def test_a_manifest_of_the_wrong_form_is_named_by_every_reader(small_zoo, tmp_path, content, needle):
    import shutil

    from rnnray.zoo import ZooError

    zoo = tmp_path / "zoo"
    shutil.copytree(small_zoo, zoo)
    m = json.loads((zoo / "manifest.json").read_text())
    (zoo / "manifest.json").write_text(content if isinstance(content, str) else json.dumps(content(m)))
    for name, read in _every_reader(zoo).items():
        with pytest.raises(ZooError) as e:
            read()
        assert str(e.value).startswith(f"{zoo / 'manifest.json'}: ") and needle in str(e.value), (name, str(e.value))
        assert len(str(e.value).splitlines()) == 1


def _rewrite_shard(zoo: Path, change) -> Path:
    """Replace the zoo's first shard by ``change(table)`` and update the manifest to match (size and
    checksum), as a hand-edited or foreign zoo would be: only the columns can tell."""
    import pyarrow.parquet as pq

    from rnnray.zoo import storage

    m = json.loads((zoo / "manifest.json").read_text())
    entry = m["shards"][0]
    f = zoo / entry["file"]
    table = pq.read_table(f)
    pq.write_table(change(table).replace_schema_metadata(table.schema.metadata), f)
    entry["bytes"], entry["sha256"] = f.stat().st_size, storage.sha256(f)
    (zoo / "manifest.json").write_text(json.dumps(m))
    return f


def _tensor(table, name, array):
    import pyarrow as pa

    i = table.column_names.index(name)
    return table.set_column(i, name, pa.FixedShapeTensorArray.from_numpy_ndarray(np.ascontiguousarray(array)))


def _column(table, name):
    return table.column(name).combine_chunks().to_numpy_ndarray()


@pytest.mark.parametrize("change,needle", [
    (lambda t: t.drop_columns(["accuracy"]), "columns differ from a formal_languages zoo's (missing accuracy)"),
    (lambda t: t.append_column("loss", t.column("accuracy")), "columns differ from a formal_languages zoo's (unexpected loss)"),
    (lambda t: t.rename_columns(["logits" if c == "logprobs" else c for c in t.column_names]),
     "(missing logprobs; unexpected logits)"),
    (lambda t: t.set_column(t.column_names.index("step"), "step", t.column("step").cast("int64")),
     "column step is int64, a formal_languages zoo stores int32"),
    (lambda t: _tensor(t, "params", _column(t, "params").astype(np.float64)),
     f"column params is a tensor of double with shape [{FORMAL_LANGUAGES.num_params}], a formal_languages zoo stores a "
     f"tensor of float with shape [{FORMAL_LANGUAGES.num_params}]"),
    (lambda t: _tensor(t, "params", _column(t, "params")[:, :100]), "column params is a tensor of float with shape [100]"),
    (lambda t: _tensor(t, "sequences", _column(t, "sequences")[:, :2]), "different numbers of stored sequences ([2, 3])"),
    (lambda t: t.set_column(t.column_names.index("params"), "params",
                            __import__("pyarrow").array(list(_column(t, "params").tolist()))),
     "column params is list<element: double>"),
])
def test_a_shard_of_the_wrong_form_is_named_even_with_a_matching_manifest(small_zoo, tmp_path, change, needle):
    import shutil

    from rnnray.zoo import ZooError

    zoo = tmp_path / "zoo"
    shutil.copytree(small_zoo, zoo)
    shard = _rewrite_shard(zoo, change)
    for name, read in _every_reader(zoo).items():
        if name == "read_manifest":
            continue  # the manifest itself is fine
        with pytest.raises(ZooError) as e:
            read()
        assert str(e.value).startswith(f"{shard}: ") and needle in str(e.value), (name, str(e.value))
    r = _run("info", str(zoo))
    err = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(err) == 1 and str(shard) in err[0] and "Traceback" not in r.stderr, r.stderr


def test_a_shard_replaced_after_the_check_is_named_when_read(small_zoo, tmp_path):
    """Workers read the shards a verified manifest listed; one replaced in between is named, not
    concatenated into a table of mixed columns."""
    import shutil

    import pyarrow.parquet as pq

    from rnnray.zoo import ZooError
    from rnnray.zoo.storage import read_shard_table

    zoo = tmp_path / "zoo"
    shutil.copytree(small_zoo, zoo)
    first = sorted((zoo / "shards").glob("*.parquet"))[0]
    other = zoo / "shards" / "other.parquet"
    pq.write_table(pq.read_table(first).drop_columns(["accuracy"]), other)
    assert read_shard_table([str(first), str(first)]).num_rows == 2 * pq.read_metadata(first).num_rows
    with pytest.raises(ZooError, match=f"^{other}: its columns differ from {first}'s$"):
        read_shard_table([str(first), str(other)])


def test_a_foreign_shard_in_a_zoo_being_built_is_named(small_zoo, tmp_path, one_torch_thread):
    """Resuming a build into a folder whose shards/ holds a Parquet file without rnnray's metadata."""
    import pyarrow.parquet as pq

    cfg = _small_zoo(tmp_path, runs=2)
    (tmp_path / "zoo" / "shards").mkdir(parents=True)
    foreign = tmp_path / "zoo" / "shards" / "runs-000000-000001-x.parquet"
    table = pq.read_table(sorted((small_zoo / "shards").glob("*.parquet"))[0])
    pq.write_table(table.replace_schema_metadata({b"rnnray.runs": b"[0, 1]"}), foreign)
    with pytest.raises(ZooError, match=f"^{foreign}: not a shard of an rnnray zoo build"):
        build(cfg, progress=False, in_process="cpu")
