"""A resumed sweep is the sweep it continues: ``--resume`` with a sweep file that differs from the
folder's ``sweep.json`` in anything that changes what is compared is refused, naming the fields.

Why: the finished encoders keep their trials, the unfinished ones continue, and the report compares
them all as one sweep under the settings ``sweep.json`` records. A new budget, tolerance, encoder,
zoo, split, training setting or search space would train part of the sweep under other rules while
``sweep.json`` still shows the old ones (the equal-budget comparison silently broken). Settings that
change only how the work is run may differ: where results and trackers go, the sweep's name, how
many trials run at once, retries, resources (a resume may land on another cluster), the zoo actors'
shape (a zoo's rows do not depend on it) and whether the downstream evaluation runs at the end.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from pydantic import ValidationError

from ..errors import UsageError
from ..results.folder import SweepFolder, sweep_folder_for
from .settings import SweepConfig, absolute_paths

# dotted fields (and every field below them) a resumed sweep may change
FREE = ("name", "results", "tune.max_concurrent_trials", "tune.max_failures", "train.max_failures", "resources",
        "tracking", "downstream.enabled", "zoo.resources")
SHOWN = 6  # differing fields named in the line; more are counted


def _flat(value, prefix: str = "") -> dict[str, object]:
    """Dotted paths to the leaves of nested mappings (a list is one value; an empty mapping has none)."""
    if isinstance(value, Mapping):
        out: dict[str, object] = {}
        for key, v in value.items():
            out.update(_flat(v, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def _free(path: str) -> bool:
    return any(path == f or path.startswith(f"{f}.") for f in FREE)


def differences(stored: Mapping, current: Mapping) -> list[str]:
    """The dotted fields, outside :data:`FREE`, in which two dumped sweep configs differ (sorted; a
    field that is a value on one side and a section on the other, e.g. ``zoo``, is named once)."""
    a, b = _flat(stored), _flat(current)
    diff = {k for k in set(a) | set(b) if not _free(k) and a.get(k, ...) != b.get(k, ...)}
    return sorted(k for k in diff if not any(k.startswith(f"{d}.") for d in diff))


def _stored_config(folder: SweepFolder) -> dict:
    """``sweep.json``'s config as the sweep file model reads it today (defaults filled in), else as stored."""
    path = folder.sweep_json
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"--resume {folder.path}: {path.name} is not readable as JSON ({e.__class__.__name__})") from None
    stored = record.get("config") if isinstance(record, Mapping) else None
    if not isinstance(stored, Mapping):
        raise UsageError(f"--resume {folder.path}: {path.name} holds no sweep config to continue")
    try:
        return SweepConfig.model_validate(stored).model_dump(mode="json")
    except ValidationError:  # written by an older version: compare what it holds
        return dict(stored)


def check_same_sweep(folder: SweepFolder, cfg: SweepConfig) -> None:
    """UsageError naming the fields when ``cfg`` would not continue the sweep in ``folder``."""
    diff = differences(_stored_config(folder), absolute_paths(cfg).model_dump(mode="json"))
    if diff:
        named = ", ".join(diff[:SHOWN]) + (f" and {len(diff) - SHOWN} more" if len(diff) > SHOWN else "")
        raise UsageError(f"--resume {folder.path}: the sweep file differs from its {folder.sweep_json.name} in {named}; "
                         "a resumed sweep must compare under the same settings (restore them, or start a new sweep "
                         "without --resume)")


def check_resume(cfg: SweepConfig, resume: str | bool) -> Path | None:
    """Before Ray starts: the folder ``--resume`` continues exists, is a sweep folder, and holds this
    sweep (:func:`check_same_sweep`). Returns that folder (None without ``resume``); writes nothing."""
    if not resume:
        return None
    sweep_dir, _ = sweep_folder_for(absolute_paths(cfg).results, cfg.name, resume)
    check_same_sweep(SweepFolder(sweep_dir), cfg)
    return sweep_dir
