"""What every config file shares: strict models, the one-line error, reading YAML and ``--set`` overrides."""

from __future__ import annotations

from pathlib import Path

import math
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import PydanticCustomError

from ..errors import UserError
from ..kinds import KIND_NAMES

# The built-in encoders and the presets by name, which configs are checked against (a plug-in's name
# is checked by rnnray.encoders.catalog.check_name without importing it; each encoder's preset values
# are declared on its class, rnnray.encoders.contract)
from ..encoders.catalog import ENCODER_NAMES  # noqa: E402 - the one table of names, torch-free
PRESET_NAMES = ("paper",)
SPLIT_SCHEMES = ("ours", "authors")  # rnnray.emulation.splits: our split by task, or the authors' (SPEC.md 8)
DEFAULT_PRESET = "paper"
# how the emulator is conditioned on a representation (SPEC.md section 6): added to its first (BOS)
# input only, the paper's; or to its input at every step, the authors' code's option (off in the paper)
CONDITIONINGS = ("bos", "every_step")
# over what gradient-norm clipping measures the norm: the encoder's and the emulator's gradients each
# on their own, as the authors' code does (SPEC.md section 6); or both together, one global norm
GRAD_CLIP_SCOPES = ("separate", "global")


class ConfigError(UserError, ValueError):
    """A bad config: the message is one line naming the file and the field."""


class Strict(BaseModel):
    """Every config model: unknown keys are errors, and no float field takes NaN or +-inf (pydantic's
    ``allow_inf_nan=False`` reaches every float a model declares, nested tuples and lists included;
    fields typed ``Any`` are checked by :func:`finite_tree`)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


def finite_tree(value: Any) -> Any:
    """``value`` unchanged if no float anywhere inside it (dicts, lists, tuples) is NaN or +-inf; else
    the error naming where, for the fields a model leaves loosely typed (``Any``, unions with lists):
    use it as a ``mode="before"`` field validator, so the check runs before any union is tried."""

    def walk(v, at: tuple):
        if isinstance(v, float) and not math.isfinite(v):
            raise PydanticCustomError("finite_number", "must be finite, got {got}", {"got": str(v), "at": at})
        if isinstance(v, dict):
            for k, item in v.items():
                walk(item, (*at, k))
        elif isinstance(v, (list, tuple)):
            for i, item in enumerate(v):
                walk(item, (*at, i))

    walk(value, ())
    return value


def ranks_apart(workers: int, gpus_per_worker: float, backend: str) -> None:
    """NCCL cannot run two ranks of one process group on one GPU, and a fractional GPU request lets Ray
    place two of a run's workers on the same one: refused in the file, before Ray schedules anything.
    (Several single-worker trials may share a GPU; so may gloo ranks.)"""
    if workers > 1 and 0 < gpus_per_worker < 1 and backend != "gloo":
        raise PydanticCustomError(
            "ranks_share_gpu",
            "{gpus} GPU per worker lets Ray place two of a run's {workers} DDP workers on one GPU, where NCCL "
            "cannot run two ranks; use gpus_per_worker: 1 (or more), workers: 1, or process_group_backend: gloo",
            {"gpus": f"{gpus_per_worker:g}", "workers": workers, "at": ("gpus_per_worker",)})


def one_of(value: str, names: tuple[str, ...], what: str) -> str:
    """``value`` if it is one of ``names``; else the ValueError a validator reports for the field."""
    if value not in names:
        raise ValueError(f"unknown {what} {value!r}; choose from {', '.join(names)}")
    return value


# the tag of a union member that is a path rather than a model (``zoo:`` in a sweep file): not a field
PATH_TAG = "(a path)"


def _fmt_loc(loc) -> str:
    parts = [str(p) for p in loc if p not in KIND_NAMES and p != PATH_TAG]
    return ".".join(parts) or "(top level)"


def format_validation_error(err: ValidationError, source: str) -> str:
    """One line: the file, the first offending field, and what is wrong with it."""
    first = err.errors()[0]
    loc = _fmt_loc((*first["loc"], *(first.get("ctx") or {}).get("at", ())))
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key (typo?)"
    elif first["type"] == "finite_number":
        msg = f"must be finite, got {(first.get('ctx') or {}).get('got', first.get('input'))}"
    extra = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{source}: {loc}: {msg}{extra}"


def read_yaml(path: str | Path) -> dict:
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{p}: is a folder, not a YAML config file")
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not a text file (not UTF-8), so not a YAML config") from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot be read ({e.strerror})") from None
    if "\x00" in text:
        raise ConfigError(f"{p}: not a text file (it holds NUL bytes), so not a YAML config")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{p}:{where} malformed YAML: {getattr(e, 'problem', e)}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of settings at the top level")
    return data


def apply_overrides(data: dict, overrides: list[str] | None, source: str = "--set") -> dict:
    """Apply ``key.sub=value`` overrides; values are parsed as YAML scalars/lists."""
    data = dict(data)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"{source} {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise ConfigError(f"{source} {item!r}: value is not valid YAML") from None
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.get(part)
            child = dict(child) if isinstance(child, dict) else {}
            node[part] = child
            node = child
        node[parts[-1]] = value
    return data


