"""Paths a user gives, checked before any work starts: that a folder can be written, and that an
existing folder is of the kind the field expects (a zoo where a zoo belongs, a results folder where
results go), so a mistyped path fails in one line instead of writing into the wrong place."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import UsageError
from .results.folder import SweepFolder, is_results_dir
from .zoo.storage import MANIFEST, SHARDS

KIND_NAMES = {"zoo": "a zoo", "sweep": "a sweep folder", "results": "a results folder", "file": "a file",
              "other": "a folder of other files", "empty": "an empty folder", "missing": "missing"}


def folder_kind(path: str | Path) -> str:
    """``missing``, ``file``, ``empty``, ``zoo`` (manifest or shards), ``sweep`` (``sweep.json``),
    ``results`` (``LATEST`` or sweep folders inside) or ``other``."""
    p = Path(path).expanduser()
    if not p.exists():
        return "missing"
    if not p.is_dir():
        return "file"
    if (p / MANIFEST).is_file() or (p / SHARDS).is_dir():
        return "zoo"
    if SweepFolder.holds_sweep(p):
        return "sweep"
    if not any(p.iterdir()):
        return "empty"
    if is_results_dir(p):
        return "results"
    return "other"


def expect_kind(path: str | Path, field: str, allowed: tuple[str, ...]) -> str:
    """The folder's kind, or UsageError naming the field when it is none of ``allowed``."""
    if "://" in str(path):
        return "remote"
    kind = folder_kind(path)
    if kind == "missing" and kind not in allowed:
        raise UsageError(f"{field} {path}: does not exist")
    if kind not in allowed:
        want = " or ".join(KIND_NAMES[k] for k in allowed if k not in ("missing", "empty"))
        raise UsageError(f"{field} {path}: is {KIND_NAMES[kind]}, not {want}")
    return kind


def check_writable(path: str | Path, field: str) -> None:
    """``path`` exists as a writable folder or can be created: its nearest existing ancestor is a
    folder this process may write. Creates nothing."""
    if "://" in str(path):
        return  # remote storage: Ray checks it
    p = Path(path).expanduser().absolute()
    probe = p
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise UsageError(f"{field} {path}: cannot be written ({probe} is a file, not a folder)")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"{field} {path}: cannot be written (no write permission on {probe})")


def check_output_file(path: str | Path, field: str) -> None:
    """A file a command will write at its end (whole, by rename in its folder): not a folder, and its
    folder can be written or created. Checked before the work, so a result that took minutes is never
    lost to a path that could not hold it. Creates nothing."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise UsageError(f"{field} {path}: is a folder, not a file")
    check_writable(p.absolute().parent, field)


SHIPPED = Path(__file__).resolve().parent  # the installed package: its sweeps/ and configs/ folders


def shipped_file(path: str | Path) -> Path:
    """``path`` as given when it exists; else, for ``sweeps/NAME.yaml`` or ``configs/NAME.yaml`` (or a
    bare ``NAME.yaml`` of either), the file shipped inside the package, so the documented commands
    work after a wheel install, from any directory. Otherwise ``path`` unchanged (its reader reports it)."""
    p = Path(path)
    if p.exists() or p.is_absolute():
        return p
    parts = p.parts
    folders = [parts[0]] if len(parts) == 2 and parts[0] in ("sweeps", "configs") else ["sweeps", "configs"] if len(parts) == 1 else []
    for folder in folders:
        candidate = SHIPPED / folder / parts[-1]
        if candidate.is_file():
            return candidate
    return p
