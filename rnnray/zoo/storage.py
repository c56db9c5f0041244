"""The zoo on disk: Parquet shards plus a manifest, readable without Ray.

Layout of a zoo directory::

    manifest.json          written last: zoo config, parameter layout, rows, runs, shard checksums
    shards/runs-000000-000063.parquet   one file per trained chunk, rows sorted by (run_id, step)

Tensor columns use Arrow's native fixed-shape tensor type, so ``pyarrow.parquet.read_table`` gives
back every shape; the file metadata also holds ``rnnray.shapes`` (column -> shape) for readers
such as pandas that flatten extension types. Every file is written under a temporary name and
renamed, and the manifest is written after every shard it lists, so an interrupted build never
leaves something that looks complete and is not.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..results.atomic import atomic_write_bytes, replacing
from ..errors import UserError
from ..kinds import KIND_NAMES, MNIST_STEPS, zoo_kind

FORMAT = "rnnray-zoo/1"
MANIFEST = "manifest.json"
SHARDS = "shards"


class ZooError(UserError):
    """A missing, incomplete or corrupt zoo: the message is one line naming the file."""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def to_table(cols: dict[str, np.ndarray], meta: dict[str, str]) -> pa.Table:
    """Columns with a leading row axis -> an Arrow table sorted by (run_id, step)."""
    order = np.lexsort((cols["step"], cols["run_id"]))
    arrays, shapes = {}, {}
    for name, arr in cols.items():
        arr = np.ascontiguousarray(arr[order])
        if arr.ndim > 1:
            arrays[name] = pa.FixedShapeTensorArray.from_numpy_ndarray(arr)
            shapes[name] = list(arr.shape[1:])
        else:
            arrays[name] = pa.array(arr)
    table = pa.table(arrays)
    metadata = {f"rnnray.{k}": v for k, v in meta.items()}
    metadata["rnnray.shapes"] = json.dumps(shapes)
    metadata["rnnray.format"] = FORMAT
    return table.replace_schema_metadata(metadata)


def shard_name(run_ids) -> str:
    ids = sorted(int(r) for r in run_ids)
    digest = hashlib.sha1(",".join(map(str, ids)).encode()).hexdigest()[:8]
    return f"runs-{ids[0]:06d}-{ids[-1]:06d}-{digest}.parquet"


def row_bytes(kind: str, num_params: int, sequences: int, seq_len: int = 42) -> int:
    """Bytes of one zoo row in memory (float32 weights; stored sequences and outputs as stored):
    what training holds per snapshot, ``sequences`` of its stored sequences kept."""
    return 4 * num_params + sequences * zoo_kind(kind).sequence_bytes(seq_len)


def write_shard(table: pa.Table, directory: Path, run_ids, parents: bool = True) -> dict:
    """Write one shard atomically; return its manifest entry. ``parents=False``: the folder above
    ``directory`` must exist (it is not created again)."""
    directory.mkdir(parents=parents, exist_ok=True)
    name = shard_name(run_ids)
    final = directory / name
    with replacing(final) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return {
        "file": f"{SHARDS}/{name}",
        "rows": table.num_rows,
        "runs": sorted(int(r) for r in run_ids),
        "bytes": final.stat().st_size,
        "sha256": sha256(final),
    }


def shard_runs(path: Path) -> list[int] | None:
    """Run ids a finished shard holds (from its metadata), or None when it cannot be read."""
    try:
        md = pq.read_schema(path).metadata or {}
        return json.loads(md[b"rnnray.runs"])
    except Exception:
        return None


def shard_config(path: Path) -> dict | None:
    """The zoo config a shard was built with (from its metadata), or None when it has none."""
    md = pq.read_schema(path).metadata or {}
    try:
        spec = json.loads(md[b"rnnray.zoo"])
    except (KeyError, ValueError):
        return None
    return spec if isinstance(spec, dict) else None


# ------------------------------------------------------------------------------------------------
# the form a reader may rely on: the manifest's keys and types, each shard's columns and types

# per kind, every column a shard holds: (Arrow value type, the shape of one row's tensor, () for a
# scalar); in a shape, None is any length (the stored sequences), "P" the layout's parameter count,
# "I" / "O" its input / output size
_F32, _F16 = pa.float32(), pa.float16()
COLUMNS = {
    "formal_languages": {"run_id": (pa.int32(), ()), "step": (pa.int32(), ()), "task": (pa.int8(), (4,)),
                         "params": (_F32, ("P",)), "sequences": (pa.int16(), (None, None)),
                         "logprobs": (_F16, (None, None, "O")), "accuracy": (_F32, ())},
    "mnist": {"run_id": (pa.int32(), ()), "step": (pa.int32(), ()), "angle": (_F32, ()), "weight_decay": (_F32, ()),
              "params": (_F32, ("P",)), "inputs": (_F16, (None, MNIST_STEPS, "I")),
              "logits": (_F16, (None, MNIST_STEPS, "O")), "accuracy": (_F32, ()), "train_loss": (_F32, ()),
              "heldout_loss": (_F32, ())},
}
OPTIONAL_COLUMNS = {"source_run": (pa.int32(), ())}  # an imported zoo's run index in the authors' files

# manifest keys every reader relies on, with the JSON type each must have
_MANIFEST_KEYS = {"kind": str, "layout": dict, "spec": dict, "runs": int, "rows": int, "snapshots": list, "shards": list}
_SHARD_KEYS = {"file": str, "rows": int, "runs": list, "bytes": int, "sha256": str}
_LAYOUT_KEYS = ("input_size", "output_size", "hidden", "num_layers", "num_params")
_JSON_NAMES = {dict: "an object", list: "a list", str: "a string", int: "a whole number", float: "a number",
               bool: "true/false", type(None): "null"}


def _json_name(value) -> str:
    return _JSON_NAMES.get(type(value), type(value).__name__)


def _is(value, typ) -> bool:
    return isinstance(value, typ) and not (typ is int and isinstance(value, bool))


def check_manifest_form(mf: Path, manifest) -> None:
    """ZooError naming ``mf`` unless ``manifest`` (parsed JSON) has every key a reader uses, of the
    right type: an object, this format, a known kind, a layout whose parameter count adds up, and
    shards each with a file inside the zoo, rows, runs, bytes and a checksum."""
    if not isinstance(manifest, dict):
        raise ZooError(f"{mf}: not an rnnray zoo manifest (the file holds {_json_name(manifest)}, not an object)")
    if manifest.get("format") != FORMAT:
        raise ZooError(f"{mf}: not an rnnray zoo manifest (format {manifest.get('format')!r}, expected {FORMAT!r})")
    for key, typ in _MANIFEST_KEYS.items():
        if key not in manifest:
            raise ZooError(f"{mf}: has no {key!r} (an incomplete or hand-edited manifest; rebuild the zoo)")
        if not _is(manifest[key], typ):
            raise ZooError(f"{mf}: {key!r} is {_json_name(manifest[key])}, expected {_JSON_NAMES[typ]}")
    if manifest.get("config") is not None and not isinstance(manifest["config"], dict):
        raise ZooError(f"{mf}: 'config' is {_json_name(manifest['config'])}, expected an object or null")
    if not all(_is(s, int) for s in manifest["snapshots"]):
        raise ZooError(f"{mf}: 'snapshots': expected a list of whole numbers")
    if manifest["kind"] not in KIND_NAMES:
        raise ZooError(f"{mf}: kind {manifest['kind']!r} is not a zoo kind ({', '.join(KIND_NAMES)})")
    layout = manifest["layout"]
    bad = [k for k in _LAYOUT_KEYS if not _is(layout.get(k), int)]
    if bad:
        raise ZooError(f"{mf}: layout.{bad[0]} is missing or not a whole number")
    from ..weights import Layout

    try:
        expected = Layout.from_dict(layout).num_params
    except Exception:
        expected = None
    if expected != layout["num_params"]:
        raise ZooError(f"{mf}: layout.num_params is {layout['num_params']}, but its sizes make {expected}")
    for i, shard in enumerate(manifest["shards"]):
        where = f"{mf}: shards[{i}]"
        if not isinstance(shard, dict):
            raise ZooError(f"{where} is {_json_name(shard)}, expected an object")
        for key, typ in _SHARD_KEYS.items():
            if not _is(shard.get(key), typ):
                raise ZooError(f"{where}.{key} is {'missing' if key not in shard else _json_name(shard[key])}, "
                               f"expected {_JSON_NAMES[typ]}")
        f = Path(shard["file"])
        if f.is_absolute() or ".." in f.parts or f.parts[:1] != (SHARDS,):
            raise ZooError(f"{where}.file {shard['file']!r}: not a file in the zoo's {SHARDS}/ folder")
        if not all(_is(r, int) for r in shard["runs"]):
            raise ZooError(f"{where}.runs: expected a list of whole numbers")


def _describe(typ: pa.DataType) -> str:
    if isinstance(typ, pa.FixedShapeTensorType):
        return f"a tensor of {typ.value_type} with shape {list(typ.shape)}"
    return str(typ)


def check_shard_form(path: str | Path, kind: str, layout: dict) -> None:
    """ZooError naming the shard unless its columns, and each column's type and shape, are those of a
    ``kind`` zoo with ``layout`` (any number of stored sequences, the same in every sequence column)."""
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise ZooError(f"{path}: unreadable shard ({str(e).splitlines()[0]})") from None
    want = COLUMNS[kind]
    names = schema.names
    missing = [c for c in want if c not in names]
    unexpected = [c for c in names if c not in want and c not in OPTIONAL_COLUMNS]
    if missing or unexpected:
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + ([f"unexpected {', '.join(unexpected)}"] if unexpected else [])
        raise ZooError(f"{path}: columns differ from a {kind} zoo's ({'; '.join(parts)})")
    dims = {"P": layout["num_params"], "I": layout["input_size"], "O": layout["output_size"]}
    stored = set()
    for name in names:
        value_type, shape = {**want, **OPTIONAL_COLUMNS}[name]
        typ = schema.field(name).type
        expected = (f"a tensor of {value_type} with shape {[dims.get(d, d) if d is not None else 'S' for d in shape]}"
                    if shape else str(value_type))
        if shape:
            ok = (isinstance(typ, pa.FixedShapeTensorType) and typ.value_type == value_type and len(typ.shape) == len(shape)
                  and all(d is None or typ.shape[i] == dims.get(d, d) for i, d in enumerate(shape)))
            if ok and shape[0] is None:
                stored.add(typ.shape[0])
        else:
            ok = typ == value_type
        if not ok:
            raise ZooError(f"{path}: column {name} is {_describe(typ)}, a {kind} zoo stores {expected}")
    if len(stored) > 1:
        raise ZooError(f"{path}: its sequence columns hold different numbers of stored sequences ({sorted(stored)})")


def write_manifest(root: Path, manifest: dict) -> None:
    atomic_write_bytes(root / MANIFEST, json.dumps(manifest, indent=1).encode())


# manifests this process has read, keyed by the file's identity: a rebuilt zoo writes a new file
# (atomic rename), so its inode, size or mtime changes and the cache reads it afresh
_MANIFESTS: dict[tuple, dict] = {}


def read_manifest(path: str | Path) -> dict:
    """The zoo's manifest, read once per process (a copy: callers may change theirs)."""
    root = Path(path).expanduser()
    mf = root / MANIFEST
    if not root.exists():
        raise ZooError(f"{root}: no zoo here (directory does not exist)")
    if not mf.is_file():
        raise ZooError(f"{mf}: missing; the zoo at {root} is incomplete or was never built (run `python -m rnnray.zoo build`)")
    st = mf.stat()
    key = (str(mf.resolve()), st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _MANIFESTS:
        try:
            manifest = json.loads(mf.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ZooError(f"{mf}: corrupt manifest ({e.__class__.__name__})") from None
        except OSError as e:
            raise ZooError(f"{mf}: cannot be read ({e.strerror})") from None
        check_manifest_form(mf, manifest)
        _MANIFESTS.clear()  # one zoo per process is the rule; keep the cache from growing with many
        _MANIFESTS[key] = manifest
    return copy.deepcopy(_MANIFESTS[key])


def verify(path: str | Path, checksums: bool = True) -> dict:
    """Check that every shard the manifest lists is present, of the right size and checksum, and has
    the columns of the manifest's kind (every reader comes through here, so none meets a surprise)."""
    root = Path(path).expanduser()
    manifest = read_manifest(root)
    for shard in manifest["shards"]:
        f = root / shard["file"]
        if not f.is_file():
            raise ZooError(f"{f}: shard listed in the manifest is missing")
        size = f.stat().st_size
        if size != shard["bytes"]:
            raise ZooError(f"{f}: shard is {size} bytes, the manifest says {shard['bytes']} (truncated or replaced)")
        if checksums and sha256(f) != shard["sha256"]:
            raise ZooError(f"{f}: checksum does not match the manifest (corrupt shard)")
        check_shard_form(f, manifest["kind"], manifest["layout"])
    return manifest


def shard_paths(path: str | Path, checksums: bool = True) -> tuple[dict, list[str]]:
    root = Path(path).expanduser()
    manifest = verify(root, checksums)
    return manifest, [str(root / s["file"]) for s in manifest["shards"]]


def read_shard_table(files: list[str], columns: list[str] | None = None) -> pa.Table:
    """Shards (paths the manifest listed) as one Arrow table."""
    tables = []
    for f in files:
        try:
            tables.append(pq.read_table(f, columns=columns))
        except (pa.ArrowInvalid, OSError) as e:
            raise ZooError(f"{f}: unreadable shard ({str(e).splitlines()[0]})") from None
        if tables[-1].schema.remove_metadata() != tables[0].schema.remove_metadata():  # replaced after it was verified
            raise ZooError(f"{f}: its columns differ from {files[0]}'s")
    return pa.concat_tables(tables)


def load_table(path: str | Path, columns: list[str] | None = None, checksums: bool = True) -> pa.Table:
    """The whole zoo as one Arrow table (verified against the manifest first)."""
    manifest, files = shard_paths(path, checksums)
    table = read_shard_table(files, columns)
    return table.replace_schema_metadata({**(table.schema.metadata or {}), b"rnnray.manifest": json.dumps(manifest).encode()})


def sample_params(path: str | Path, rows: int = 4) -> np.ndarray:
    """A few RNNs' flat weights, float32 (rows, P): rows spread over the zoo's first shard (several
    runs and steps), read without the other columns. What a plug-in encoder is tried on before a
    command starts Ray (:mod:`rnnray.encoders.checks`)."""
    manifest, files = shard_paths(path, checksums=False)
    column = read_shard_table(files[:1], ["params"]).column("params").combine_chunks()
    picks = np.unique(np.linspace(0, len(column) - 1, num=min(rows, len(column))).round().astype(int))
    taken = column.take(pa.array(picks))
    flat = taken.to_numpy_ndarray() if hasattr(taken, "to_numpy_ndarray") else np.stack(taken.to_numpy(zero_copy_only=False))
    return np.array(flat.reshape(len(picks), -1), dtype=np.float32)  # a writable copy
