"""Every file rnnray writes is written here: to a temporary name beside it, flushed to disk, then
renamed onto it, so a reader (another process, a resumed run, a user) sees the old file or the new
one, never half of one, and a failed write leaves nothing behind. A folder written as one piece (the
report's ``figures/``) is filled under a temporary name the same way and swapped in whole
(:func:`replacing_dir`). A write the disk refuses (full, a file-size limit, a folder made read-only) is
:class:`~rnnray.errors.WriteFailed` naming the file."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import WriteFailed, os_reason

TMP_MARK = ".tmp-"  # temporary files are named ".<name>.tmp-<random>"; a crashed writer may leave one


def temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.name}{TMP_MARK}{uuid.uuid4().hex[:8]}")


@contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """A temporary path to write ``path``'s new content to; on success it is synced and renamed
    onto ``path``, on failure removed. An ``OSError`` while writing becomes :class:`WriteFailed` naming ``path``
    (and the file it came from, when that is another one)."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        source = e.filename if e.filename and Path(e.filename) not in (path, tmp) else None
        raise WriteFailed(f"{path}: cannot be written ({os_reason(e)}{f'; {source}' if source else ''})") from e
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:  # a folder made read-only mid-write keeps it: a temporary name is never read as valid
            pass


@contextmanager
def replacing_dir(path: str | Path) -> Iterator[Path]:
    """A temporary folder beside ``path`` to write its new content to; on success the old folder (if
    any) is moved aside and the new one renamed onto ``path``, on failure the temporary folder is
    removed and ``path`` is left as it was. Files the old folder held that the new one lacks are gone."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    tmp.mkdir()
    try:
        yield tmp
        old = temporary_name(path) if path.exists() else None
        if old is not None:
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with replacing(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, default=str) + "\n")


def remove_leftovers(folder, recursive: bool = False) -> None:
    """Delete the temporary files crashed writers left in ``folder`` (never whole, never read)."""
    from pathlib import Path

    pattern = f".*{TMP_MARK}*"
    for tmp in (Path(folder).rglob(pattern) if recursive else Path(folder).glob(pattern)):
        tmp.unlink(missing_ok=True)
