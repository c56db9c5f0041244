"""The authors' released zoos (SPEC.md section 8) as rnnray zoos, and back.

Their release is one folder of NumPy files per zoo, one row per snapshot. :func:`import_npy` reads
it memory-mapped and writes an rnnray zoo (Parquet shards of ``shard_runs`` runs each, then the
manifest), so a 1,000-RNN zoo is never in memory at once; :func:`export_npy` writes an rnnray zoo
in their layout. The mapping, both ways:

* step: their label counts the update just taken, so their ``L`` is rnnray's ``L + 1`` (rnnray's
  step 0 is the initialisation, exported as label -1);
* run id: their run index restarts in each generation job; rows are renumbered 0..R-1 in order of
  appearance, a new run starting where their index changes or the step does not increase. Their
  index is kept in the ``source_run`` column (export writes it back; a zoo without it, ``run_id``);
* zoo A accuracy = their count of 1,000 samples in the language / 1000 (export: x 1000, rounded);
* zoo B accuracy, train_loss, heldout_loss, weight_decay = the columns of ``accuracy_losses.npy``;
  task = ``tasks.npy`` (offsets as int8, or the angle as float32); sequences and outputs keep
  their dtypes (int16 tokens or float16 tiles; float16 log-probabilities or logits).

Every source file's presence, shape and dtype, the row counts, the values (weights and stored outputs
finite, zoo A's token ids in its vocabulary) and the runs' tasks are checked before anything is
written; a bad one is a :class:`~rnnray.zoo.storage.ZooError` naming the file (and the first bad row).
"""

from __future__ import annotations

import json
import shutil
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np

from ..results.atomic import replacing
from ..kinds import zoo_kind
from . import storage
from .storage import ZooError

ACCURACY_SAMPLES = 1000  # zoo A: their accuracy is a count out of this many samples
STEP_OFFSET = 1  # rnnray step = their step label + 1
SOURCE = "the authors' NumPy release (SPEC.md section 8)"
SEQ = None  # stands for the number of stored sequences per row in a shape (any, the same in every file)

# per kind: file -> (shape after the row axis, accepted dtype kinds, the dtype it is described with)
FILES = {
    "formal_languages": {
        "parameters.npy": ((zoo_kind("formal_languages").layout.num_params,), "f", "float32"),
        "sequences.npy": ((SEQ, 42), "iu", "int16"),
        "logits.npy": ((SEQ, 41, 6), "f", "float16"),
        "tasks.npy": ((4,), "iu", "int64"),
        "num_step_correct.npy": ((3,), "iuf", "integer"),
    },
    "mnist": {
        "parameters.npy": ((zoo_kind("mnist").layout.num_params,), "f", "float32"),
        "sequences.npy": ((SEQ, 50, 16), "f", "float16"),
        "logits.npy": ((SEQ, 50, 10), "f", "float16"),
        "tasks.npy": ((1,), "iuf", "float64"),
        "num_step.npy": ((2,), "iuf", "integer"),
        "accuracy_losses.npy": ((4,), "f", "float64"),
    },
}
INDEX_FILE = {"formal_languages": "num_step_correct.npy", "mnist": "num_step.npy"}  # run index, step (, count)
# the rnnray columns the two big files become, with their dtypes
BIG = {"formal_languages": {"sequences.npy": ("sequences", np.int16), "logits.npy": ("logprobs", np.float16)},
       "mnist": {"sequences.npy": ("inputs", np.float16), "logits.npy": ("logits", np.float16)}}


def _kind_files(kind: str) -> dict:
    if kind not in FILES:
        raise ZooError(f"--kind {kind!r}: expected one of {', '.join(FILES)}")
    return FILES[kind]


# ------------------------------------------------------------------------------------------------
# reading their folder


def _open(path: Path, needed: list[str], shape: tuple, kinds: str, described: str) -> np.ndarray:
    """The file memory-mapped, its shape (after the row axis) and dtype checked."""
    if not path.is_file():
        raise ZooError(f"{path}: missing (the authors' zoo folder needs {', '.join(needed)})")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as e:  # not a .npy file, a pickled object array, a truncated header
        raise ZooError(f"{path}: not a readable NumPy .npy file ({e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    want = "(N, " + ", ".join("S" if d is SEQ else str(d) for d in shape) + ")"
    if arr.ndim != 1 + len(shape) or any(d is not SEQ and arr.shape[1 + i] != d for i, d in enumerate(shape)):
        raise ZooError(f"{path}: shape {arr.shape}, expected {want}")
    if arr.dtype.kind not in kinds:
        raise ZooError(f"{path}: dtype {arr.dtype}, expected {described}")
    return arr


def _integral(arr: np.ndarray, path: Path, what: str, low: int, high: int) -> np.ndarray:
    a = np.asarray(arr)
    if a.dtype.kind == "f" and not (np.isfinite(a).all() and (a == np.round(a)).all()):
        raise ZooError(f"{path}: {what} must be whole numbers")
    a = a.astype(np.int64)
    if len(a) and (a.min() < low or a.max() > high):
        raise ZooError(f"{path}: {what} must lie in [{low}, {high}], found {a.min()}..{a.max()}")
    return a


CHECK_BLOCK = 1 << 26  # values checked at a time, so a release of many GB is checked in bounded memory


def _first_bad_row(arr: np.ndarray, bad) -> int | None:
    """The first row of ``arr`` (memory-mapped) holding a value for which ``bad`` is true, or None;
    read a block of rows at a time."""
    per_row = max(1, int(np.prod(arr.shape[1:], dtype=np.int64)))
    step = max(1, CHECK_BLOCK // per_row)
    for lo in range(0, len(arr), step):
        rows = bad(np.asarray(arr[lo:lo + step])).reshape(min(step, len(arr) - lo), -1).any(-1)
        if rows.any():
            return lo + int(np.argmax(rows))
    return None


def _check_values(src: Path, kind: str, arrays: dict) -> None:
    """Weights and stored outputs finite (zoo B's stored inputs too), and zoo A's tokens ids of its
    vocabulary: a ZooError naming the file and the first bad row."""
    def not_finite_as(dtype):  # as stored: a float32 file's 1e5 is +inf in float16
        return lambda a: ~np.isfinite(a.astype(dtype, copy=False))

    stored = {fname: dtype for fname, (_, dtype) in BIG[kind].items()}
    checks = [("parameters.npy", not_finite_as(np.float32), "holds a value that is not finite as float32"),
              ("logits.npy", not_finite_as(stored["logits.npy"]), "holds a value that is not finite as float16")]
    if kind == "formal_languages":
        vocab = zoo_kind(kind).input_size
        checks.append(("sequences.npy", lambda a: (a < 0) | (a >= vocab), f"holds a token id outside [0, {vocab})"))
    else:
        checks.append(("sequences.npy", not_finite_as(stored["sequences.npy"]), "holds a value that is not finite as float16"))
    for name, bad, what in checks:
        arr = arrays[name]
        with np.errstate(invalid="ignore", over="ignore"):
            row = _first_bad_row(arr, bad)
        if row is not None:
            values = np.asarray(arr[row]).reshape(-1)
            with np.errstate(invalid="ignore", over="ignore"):
                first = values[np.argmax(bad(values))]
            raise ZooError(f"{src / name}: {what} (first at row {row}: {first})")


def run_starts(index: np.ndarray, step: np.ndarray) -> np.ndarray:
    """Rows where a run starts: the first, and every row whose run index changes or whose step does
    not increase (their run index restarts at 0 in each generation job)."""
    new = np.ones(len(index), dtype=bool)
    new[1:] = (index[1:] != index[:-1]) | (step[1:] <= step[:-1])
    return np.flatnonzero(new)


def read_source(src_dir, kind: str) -> dict:
    """Every file of their zoo checked and its small columns read; the big ones left memory-mapped."""
    src = Path(src_dir).expanduser()
    files = _kind_files(kind)
    if not src.is_dir():
        raise ZooError(f"{src}: no such folder of the authors' zoo files")
    from ..paths import check_readable

    check_readable(src, "SRC_DIR")
    arrays = {name: _open(src / name, list(files), *spec) for name, spec in files.items()}
    n = len(arrays["parameters.npy"])
    if n == 0:
        raise ZooError(f"{src / 'parameters.npy'}: holds no rows")
    for name, arr in arrays.items():
        if len(arr) != n:
            raise ZooError(f"{src / name}: {len(arr)} rows, but parameters.npy has {n}")
    n_seq = arrays["sequences.npy"].shape[1]
    if arrays["logits.npy"].shape[1] != n_seq:
        raise ZooError(f"{src / 'logits.npy'}: {arrays['logits.npy'].shape[1]} sequences per row, but sequences.npy has {n_seq}")
    if n_seq == 0:
        raise ZooError(f"{src / 'sequences.npy'}: holds no sequences")
    _check_values(src, kind, arrays)

    cols: dict[str, np.ndarray] = {}
    index_file = INDEX_FILE[kind]
    meta = np.asarray(arrays[index_file])
    index = _integral(meta[:, 0], src / index_file, "run indices (column 0)", 0, 2**31 - 1)
    step = _integral(meta[:, 1], src / index_file, "steps (column 1)", -STEP_OFFSET, 2**31 - 2)
    tasks = np.asarray(arrays["tasks.npy"])
    if kind == "formal_languages":
        correct = _integral(meta[:, 2], src / index_file, "counts of samples in the language (column 2)", 0, ACCURACY_SAMPLES)
        tasks = _integral(tasks, src / "tasks.npy", "task offsets", -3, 2)
        if (tasks[:, 0] != 0).any():
            row = int(np.argmax(tasks[:, 0] != 0))
            raise ZooError(f"{src / 'tasks.npy'}: t0 must be 0 (row {row} has {int(tasks[row, 0])})")
        cols["task"] = tasks.astype(np.int8)
        cols["accuracy"] = (correct / ACCURACY_SAMPLES).astype(np.float32)
    else:
        losses = np.asarray(arrays["accuracy_losses.npy"], dtype=np.float64)
        angle = tasks[:, 0].astype(np.float64)
        if not (np.isfinite(angle).all() and np.isfinite(losses).all()):
            raise ZooError(f"{src / ('tasks.npy' if not np.isfinite(angle).all() else 'accuracy_losses.npy')}: holds non-finite values")
        cols["angle"] = angle.astype(np.float32)
        for i, c in enumerate(("accuracy", "train_loss", "heldout_loss", "weight_decay")):
            cols[c] = losses[:, i].astype(np.float32)
    starts = run_starts(index, step)
    mark = np.zeros(n, dtype=np.int64)
    mark[starts] = 1
    run_id = (np.cumsum(mark) - 1).astype(np.int32)
    task = cols[zoo_kind(kind).task_column]
    first = task[starts][run_id]  # the task of each row's run, from its first row
    bad = np.flatnonzero((first != task).reshape(n, -1).any(-1))
    if len(bad):
        r = int(run_id[bad[0]])
        raise ZooError(f"{src / 'tasks.npy'}: run {r} (rows {int(starts[r])}-{int(bad[0])}, their run index {int(index[bad[0]])}) "
                       "changes task within the run")
    cols.update(run_id=run_id, step=(step + STEP_OFFSET).astype(np.int32), source_run=index.astype(np.int32))
    known = set(files)
    others = sorted(p.name for p in src.iterdir() if p.name not in known and not p.name.startswith("."))
    return {"src": src, "kind": kind, "rows": n, "sequences": n_seq, "arrays": arrays, "cols": cols,
            "starts": starts, "their_steps": sorted(set(step.tolist())), "renumbered": not np.array_equal(run_id, index),
            "not_read": others}


# ------------------------------------------------------------------------------------------------
# import


def _refuse_out(out: Path, what: str) -> None:
    """The output folder must be missing or empty (a zoo there, or other files, are refused), inside
    no zoo, sweep or results folder, and writable (tried: :func:`rnnray.paths.check_output_dir`)."""
    from ..paths import check_output_dir

    if out.exists() and not out.is_dir():
        raise ZooError(f"{out}: is a file, not a folder for {what}")
    if (out / storage.MANIFEST).exists() or (out / storage.SHARDS).exists():
        raise ZooError(f"{out}: already holds a zoo; choose another --out")
    if out.is_dir() and any(out.iterdir()):
        raise ZooError(f"{out}: is not empty; choose a new or empty folder for {what}")
    check_output_dir(out, "--out", ("missing", "empty"), owners=("zoo", "sweep", "results"))


@contextmanager
def _whole_or_nothing(out: Path):
    """What an import writes into ``out`` (new or empty, :func:`_refuse_out`) is removed again when it
    fails half-way (a full disk, a folder made read-only): no part-zoo is left to be taken for one,
    and the next import finds the folder as the first did."""
    existed = out.exists()
    try:
        yield
    except BaseException:
        for child in ((list(out.iterdir()) if out.is_dir() else []) if existed else [out]):
            if child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
        raise


def import_npy(src_dir, kind: str, out_dir, shard_runs: int = 64) -> dict:
    """Import their zoo folder ``src_dir`` of ``kind`` as an rnnray zoo in ``out_dir``; its manifest.

    Everything is checked before anything is written; the shards hold ``shard_runs`` runs each
    and are written one after another from memory-mapped slices."""
    if shard_runs < 1:
        raise ZooError(f"shard_runs: must be at least 1, got {shard_runs}")
    out = Path(out_dir).expanduser()
    _kind_files(kind)
    _refuse_out(out, "the imported zoo")
    t0 = time.time()
    src = read_source(src_dir, kind)
    layout = zoo_kind(kind).layout
    starts, n, cols = src["starts"], src["rows"], src["cols"]
    snapshots = sorted(set(cols["step"].tolist()))
    spec = {"kind": kind, "source": "authors-npy", "stored_sequences": src["sequences"], "snapshot_steps": snapshots}
    if kind == "formal_languages":
        spec["seq_len"] = int(src["arrays"]["sequences.npy"].shape[2])
    meta = {"zoo": json.dumps(spec), "kind": kind, "layout": layout.to_json(), "source": SOURCE}
    with _whole_or_nothing(out):  # a failed write (a full disk) leaves no part of a zoo behind
        bounds = list(starts) + [n]
        shards = []
        for c in range(0, len(starts), shard_runs):
            lo, hi = int(bounds[c]), int(bounds[min(c + shard_runs, len(starts))])
            chunk = {name: np.asarray(col[lo:hi]) for name, col in cols.items()}
            chunk["params"] = np.asarray(src["arrays"]["parameters.npy"][lo:hi], dtype=np.float32)
            for fname, (col, dtype) in BIG[kind].items():
                chunk[col] = np.asarray(src["arrays"][fname][lo:hi], dtype=dtype)
            runs = sorted(set(chunk["run_id"].tolist()))
            shards.append(storage.write_shard(storage.to_table(chunk, {**meta, "runs": json.dumps(runs)}),
                                              out / storage.SHARDS, runs))
            del chunk
        index_file = INDEX_FILE[kind]
        manifest = {
            "format": storage.FORMAT,
            "kind": kind,
            "spec": spec,
            "config": None,
            "layout": json.loads(layout.to_json()),
            "runs": len(starts),
            "snapshots": snapshots,
            "rows": n,
            "mnist_source": None,
            "shards": shards,
            "build_seconds": round(time.time() - t0, 2),
            "imported": {
                "source": str(src["src"].resolve()),
                "format": SOURCE,
                "files": list(FILES[kind]),
                "not_read": src["not_read"],
                "step_mapping": {"rnnray_step": "their step + 1", "offset": STEP_OFFSET,
                                 "their_steps": src["their_steps"], "steps": [s + STEP_OFFSET for s in src["their_steps"]]},
                "runs_renumbered": bool(src["renumbered"]),
                "run_rule": f"runs numbered 0..R-1 in order of appearance; a run starts where {index_file} column 0 changes "
                            "or the step does not increase; their run index is the source_run column",
                "accuracy": (f"{index_file} column 2 / {ACCURACY_SAMPLES}" if kind == "formal_languages"
                             else "accuracy_losses.npy columns: accuracy, train_loss, heldout_loss, weight_decay"),
            },
        }
        storage.write_manifest(out, manifest)
    return manifest


# ------------------------------------------------------------------------------------------------
# export


def _column(table, name: str) -> np.ndarray:
    col = table.column(name).combine_chunks()
    return col.to_numpy_ndarray() if hasattr(col, "to_numpy_ndarray") else col.to_numpy(zero_copy_only=False)


def _their_columns(kind: str, t) -> dict[str, np.ndarray]:
    """One shard's rows in their files' layout."""
    run = _column(t, "source_run" if "source_run" in t.column_names else "run_id").astype(np.int64)
    step = _column(t, "step").astype(np.int64) - STEP_OFFSET
    out = {"parameters.npy": _column(t, "params").astype(np.float32)}
    for fname, (col, dtype) in BIG[kind].items():
        out[fname] = _column(t, col).astype(dtype, copy=False)
    acc = _column(t, "accuracy").astype(np.float64)
    if kind == "formal_languages":
        out["tasks.npy"] = _column(t, "task").astype(np.int64).reshape(len(t), 4)
        out["num_step_correct.npy"] = np.stack([run, step, np.rint(acc * ACCURACY_SAMPLES).astype(np.int64)], 1)
    else:
        out["tasks.npy"] = _column(t, "angle").astype(np.float64).reshape(-1, 1)
        out["num_step.npy"] = np.stack([run, step], 1)
        out["accuracy_losses.npy"] = np.stack([acc] + [_column(t, c).astype(np.float64)
                                                       for c in ("train_loss", "heldout_loss", "weight_decay")], 1)
    return out


def export_npy(zoo_dir, out_dir) -> None:
    """Write the rnnray zoo at ``zoo_dir`` in the authors' layout into ``out_dir`` (missing or
    empty): each file filled shard by shard through a memory map under a temporary name, then renamed."""
    manifest, files = storage.shard_paths(zoo_dir, checksums=True)
    kind = manifest["kind"]
    out = Path(out_dir).expanduser()
    _refuse_out(out, "the exported files")
    order = sorted(range(len(files)), key=lambda i: manifest["shards"][i]["runs"][0])
    first = storage.read_shard_table([files[order[0]]])
    n = int(manifest["rows"])
    sample = _their_columns(kind, first.slice(0, 1))
    mapped = {"run_id", "source_run", "step", "params", "accuracy", *(c for c, _ in BIG[kind].values()),
              *(("task",) if kind == "formal_languages" else ("angle", "train_loss", "heldout_loss", "weight_decay"))}
    left = sorted(set(first.column_names) - mapped)
    if left:
        print(f"export-npy: columns with no place in the authors' layout, not exported: {', '.join(left)}")
    out.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        maps = {}
        for fname, a in sample.items():
            tmp = stack.enter_context(replacing(out / fname))
            maps[fname] = np.lib.format.open_memmap(tmp, mode="w+", dtype=a.dtype, shape=(n, *a.shape[1:]))
        row = 0
        for k, i in enumerate(order):
            t = first if k == 0 else storage.read_shard_table([files[i]])
            for fname, a in _their_columns(kind, t).items():
                maps[fname][row:row + len(a)] = a
            row += len(t)
        if row != n:
            raise ZooError(f"{Path(zoo_dir) / storage.MANIFEST}: lists {n} rows, the shards hold {row}")
        while maps:  # each memory map flushed and closed before its file is synced and renamed
            maps.popitem()[1].flush()
