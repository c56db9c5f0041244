"""Paths a user gives, checked before any work starts, so a mistyped or impossible path fails in one
line (exit code 2) instead of a traceback after minutes of work, or writing into the wrong place.

One helper per question, and every entry point asks them through these (``zoo build``, ``import-npy``,
``export-npy``, ``sweep``, ``train``, ``label_oracle``, ``evaluate``, ``report``):

* can this folder be written (:func:`check_writable`)? Proven by trying, never with ``os.access``,
  which says yes to root everywhere (under ``/proc``, on a read-only or full disk, in an immutable folder);
* is an existing folder of the kind the field expects (:func:`expect_kind`: a zoo where a zoo belongs,
  a results folder where results go), and does no folder above it belong to a command of another kind
  (:func:`check_not_inside`: nothing is written into a zoo or a sweep folder)?
* all of that for a folder (:func:`check_output_dir`) or a file (:func:`check_output_file`) a
  command will write; and can a path it reads be read (:func:`check_readable`)?
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from .errors import UsageError, os_reason
from .results.folder import SweepFolder, is_results_dir
from .zoo.storage import MANIFEST, SHARDS

KIND_NAMES = {"zoo": "a zoo", "sweep": "a sweep folder", "results": "a results folder", "file": "a file",
              "other": "a folder of other files", "empty": "an empty folder", "missing": "missing"}
PROBE = ".rnnray-probe-"  # the probe's name: this prefix, the pid and a random tag, so no two probes meet
OUTPUT_KINDS = ("missing", "empty", "other")  # what a folder a command fills may be before it starts


def folder_kind(path: str | Path) -> str:
    """``missing``, ``file``, ``empty``, ``zoo`` (manifest or shards), ``sweep`` (``sweep.json``),
    ``results`` (``LATEST`` or sweep folders inside) or ``other``."""
    p = Path(path).expanduser()
    if not os.path.exists(p):  # os.path's answer: False, not an OSError, for a name too long
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
        want = " or ".join(KIND_NAMES[k] for k in allowed if k not in ("missing", "empty", "other"))
        if want:
            raise UsageError(f"{field} {path}: is {KIND_NAMES[kind]}, not {want}")
        if kind == "file":
            raise UsageError(f"{field} {path}: is a file, not a folder")
        raise UsageError(f"{field} {path}: is {KIND_NAMES[kind]}, which another command wrote; choose a folder of its own")
    return kind


def _nearest_existing(p: Path, field: str, path) -> Path:
    """The nearest folder at or above ``p`` that exists; UsageError when a file or a broken link is in the way."""
    base = p
    while not os.path.exists(base):
        if os.path.islink(base):
            raise UsageError(f"{field} {path}: cannot be written ({base} is a broken symbolic link)")
        base = base.parent
    if not base.is_dir():
        raise UsageError(f"{field} {path}: cannot be written ({base} is a file, not a folder)")
    return base


def check_writable(path: str | Path, field: str, shown: str | Path | None = None) -> None:
    """``path`` is a folder this process can create files in, or one it can create: proven by trying.

    An existing folder gets a probe file (a unique name, written, synced and removed at once). For a
    missing one, a probe folder holding a probe file is made in its nearest existing folder and
    removed: the named folders are neither created nor removed here, so two commands checking the
    same new path at once cannot undo each other, and a check that fails later leaves nothing.
    ``shown``: the path the message names (a file to be written in ``path``), default ``path``."""
    if "://" in str(path):
        return  # remote storage: Ray checks it
    p = Path(path).expanduser().absolute()
    path = path if shown is None else shown
    base = _nearest_existing(p, field, path)
    missing = p.relative_to(base).parts
    try:
        longest = os.pathconf(base, "PC_NAME_MAX")
    except (OSError, ValueError):
        longest = 255
    too_long = [n for n in missing if len(os.fsencode(n)) > longest]
    if too_long:
        raise UsageError(f"{field} {path}: cannot be created (the name {too_long[0][:40]}... is longer than {longest} bytes)")
    tag = f"{PROBE}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    folder = base / tag if missing else base
    made: list[Path] = []
    stamp = base.stat()
    try:
        if missing:
            folder.mkdir()
            made.append(folder)
        fd = os.open(folder / tag, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        made.append(folder / tag)
        try:
            os.write(fd, b"x")
            os.fsync(fd)  # a full disk may answer only here (delayed allocation)
        finally:
            os.close(fd)
    except OSError as e:
        what = "cannot be created" if missing else "cannot be written"
        raise UsageError(f"{field} {path}: {what} ({os_reason(e)} in {base})") from None
    finally:
        for made_path in reversed(made):
            try:
                made_path.rmdir() if made_path.is_dir() else made_path.unlink()
            except OSError:
                pass
        if made:  # the probe came and went: the folder's times say it was not written
            try:
                os.utime(base, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
            except OSError:
                pass


def check_not_inside(path: str | Path, field: str, owners: tuple[str, ...] = ("zoo", "sweep")) -> None:
    """No folder above ``path`` is of a kind in ``owners``: a zoo and a sweep folder belong whole to the
    command that wrote them (a results folder too, where a zoo is written), so nothing else goes inside."""
    if "://" in str(path):
        return
    p = Path(path).expanduser().absolute()
    for above in p.parents:
        if not os.path.isdir(above):
            continue
        if (above / MANIFEST).is_file() or (above / SHARDS).is_dir():
            kind = "zoo"
        elif SweepFolder.holds_sweep(above):
            kind = "sweep"
        elif "results" in owners and is_results_dir(above):
            kind = "results"
        else:
            continue
        if kind in owners:
            raise UsageError(f"{field} {path}: is inside {KIND_NAMES[kind]} ({above}); choose a folder outside it")


def check_apart(a: str | Path, field_a: str, b: str | Path, field_b: str) -> None:
    """Neither of two folders a command writes lies inside the other (a zoo inside the results, the
    results inside the zoo): each belongs whole to one writer."""
    if "://" in f"{a}{b}":
        return
    pa, pb = (Path(x).expanduser().resolve() for x in (a, b))
    if pa == pb or pb in pa.parents:
        raise UsageError(f"{field_a} {a}: is inside {field_b} {b}; give each its own folder")
    if pa in pb.parents:
        raise UsageError(f"{field_b} {b}: is inside {field_a} {a}; give each its own folder")


def check_output_dir(path: str | Path, field: str, allowed: tuple[str, ...] = OUTPUT_KINDS,
                     owners: tuple[str, ...] = ("zoo", "sweep")) -> str:
    """Everything about a folder a command will write, before any work: it is of an ``allowed`` kind,
    no folder above it is one of ``owners``, and it can be written (tried). Its kind."""
    kind = expect_kind(path, field, allowed)
    check_not_inside(path, field, owners)
    check_writable(path, field)
    return kind


def check_output_file(path: str | Path, field: str) -> None:
    """A file a command will write (whole, by rename): not a folder, not inside a zoo or a sweep
    folder, and its folder can be written (tried)."""
    p = Path(path).expanduser()
    if os.path.isdir(p):
        raise UsageError(f"{field} {path}: is a folder, not a file")
    check_not_inside(p, field)
    check_writable(p.parent, field, shown=path)


def check_readable(path: str | Path, field: str) -> None:
    """``path`` exists and can be read: a file by reading its first byte, a folder by listing it.
    ``field`` may be empty (the message then names the path alone)."""
    p = Path(path).expanduser()
    path = f"{field} {path}" if field else path
    if not os.path.exists(p):
        raise UsageError(f"{path}: does not exist")
    try:
        if p.is_dir():
            with os.scandir(p) as entries:
                next(entries, None)
        else:
            with open(p, "rb") as f:
                f.read(1)
    except OSError as e:
        raise UsageError(f"{path}: cannot be read ({os_reason(e)})") from None


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
