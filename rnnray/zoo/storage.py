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

from ..atomic import atomic_write_bytes, replacing
from ..errors import UserError
from ..kinds import zoo_kind

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


def shard_config(path: Path) -> dict:
    md = pq.read_schema(path).metadata or {}
    return json.loads(md[b"rnnray.zoo"])


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
        if manifest.get("format") != FORMAT:
            raise ZooError(f"{mf}: not an rnnray zoo manifest (format {manifest.get('format')!r}, expected {FORMAT!r})")
        _MANIFESTS.clear()  # one zoo per process is the rule; keep the cache from growing with many
        _MANIFESTS[key] = manifest
    return copy.deepcopy(_MANIFESTS[key])


def verify(path: str | Path, checksums: bool = True) -> dict:
    """Check that every shard the manifest lists is present, of the right size and checksum."""
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
    return pa.concat_tables(tables)


def load_table(path: str | Path, columns: list[str] | None = None, checksums: bool = True) -> pa.Table:
    """The whole zoo as one Arrow table (verified against the manifest first)."""
    manifest, files = shard_paths(path, checksums)
    table = read_shard_table(files, columns)
    return table.replace_schema_metadata({**(table.schema.metadata or {}), b"rnnray.manifest": json.dumps(manifest).encode()})
