"""The sweep's own result files read through one typed reader: trial records
(``trials/ENC/ID/trial.json``, ``final/ENC/ID/trial.json``), the final runs (``final.json``) and the
label oracles (``oracles.json``). Fields a file of an earlier version lacks read as None or empty,
so old sweep folders still load; a file that is not JSON is skipped (trials) or named (the rest)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .folder import ResultsError, SweepFolder


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ResultsError(f"{path}: not readable as JSON ({e.__class__.__name__})") from None


def _float(v) -> float | None:
    return None if v is None else float(v)


@dataclass(frozen=True)
class TrialRecord:
    """One trial of the search or one final run (``trial.json``)."""

    encoder: str
    trial_id: str
    status: str
    config: dict
    n_params: int | None
    best_val_loss: float | None
    best_ood_loss: float | None
    best_step: int | None
    checkpoint: str | None
    paper_config: bool
    history: list = field(default_factory=list)
    role: str | None = None  # final runs: best, paper or best+paper
    seed: int | None = None
    source_trial: str | None = None
    conditioning: str | None = None  # the emulator's (None: a record from before the setting, bos)
    grad_clip_scope: str | None = None
    reason: str | None = None  # why a failed trial failed (diverged, an error's last line)

    @property
    def usable(self) -> bool:
        """Not failed, with a finite best validation loss."""
        return self.status != "failed" and self.best_val_loss is not None and math.isfinite(self.best_val_loss)

    @classmethod
    def from_dict(cls, d: Mapping, encoder: str = "") -> "TrialRecord":
        return cls(encoder=d.get("encoder") or encoder, trial_id=str(d.get("trial_id", "")), status=d.get("status") or "finished",
                   config=dict(d.get("config") or {}), n_params=d.get("n_params"), best_val_loss=_float(d.get("best_val_loss")),
                   best_ood_loss=_float(d.get("best_ood_loss")), best_step=d.get("best_step"), checkpoint=d.get("checkpoint"),
                   paper_config=bool(d.get("paper_config")), history=list(d.get("history") or []), role=d.get("role"),
                   seed=d.get("seed"), source_trial=d.get("source_trial"), conditioning=d.get("conditioning"),
                   grad_clip_scope=d.get("grad_clip_scope"), reason=d.get("reason"))


def read_trials(folder: SweepFolder, encoder: str | None = None) -> dict[str, list[TrialRecord]]:
    """The search's trial records per encoder (a record that is not JSON, e.g. torn by a crash of
    an older version, is left out)."""
    out: dict[str, list[TrialRecord]] = {}
    for f in folder.trial_records(encoder):
        try:
            d = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            continue
        rec = TrialRecord.from_dict(d, encoder=f.parent.parent.name)
        out.setdefault(rec.encoder, []).append(rec)
    return out


def read_final_runs(folder: SweepFolder, encoder: str) -> list[TrialRecord]:
    """The encoder's final runs (``final/ENC/ID/trial.json``), in name order; unreadable ones left out."""
    out = []
    for f in folder.final_records(encoder):
        try:
            out.append(TrialRecord.from_dict(json.loads(f.read_text()), encoder=encoder))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            continue
    return out


@dataclass(frozen=True)
class FinalConfig:
    """One configuration's final seeds (``final.json``, per encoder and role ``best`` / ``paper``)."""

    seeds: list
    trial_ids: list
    val_loss: list
    ood_loss: list
    val_interval: dict | None
    ood_interval: dict | None
    source_trial: str | None
    config: dict | None
    best_seed: dict | None
    status: list = field(default_factory=list)
    conditioning: str | None = None

    @property
    def finite_val_losses(self) -> list[float]:
        return [float(v) for v in self.val_loss if v is not None and math.isfinite(float(v))]

    @classmethod
    def from_dict(cls, d: Mapping) -> "FinalConfig":
        return cls(seeds=list(d.get("seeds") or []), trial_ids=list(d.get("trial_ids") or []),
                   val_loss=list(d.get("val_loss") or []), ood_loss=list(d.get("ood_loss") or []),
                   val_interval=d.get("val_interval"), ood_interval=d.get("ood_interval"),
                   source_trial=d.get("source_trial"), config=d.get("config"), best_seed=d.get("best_seed"),
                   status=list(d.get("status") or [None] * len(d.get("seeds") or [])), conditioning=d.get("conditioning"))


def read_final(folder: SweepFolder) -> dict[str, dict[str, FinalConfig]]:
    """``final.json``: encoder -> role (``best``, ``paper``) -> its seeds; empty before the final runs."""
    if not folder.final_json.is_file():
        return {}
    doc = _json(folder.final_json)
    return {enc: {role: FinalConfig.from_dict(entry) for role, entry in (roles or {}).items() if entry}
            for enc, roles in (doc.get("encoders") or {}).items()}


@dataclass(frozen=True)
class OracleMode:
    """One label oracle's runs under the final seeds."""

    runs: list
    val_loss: dict | None  # the interval over seeds
    ood_loss: dict | None

    @property
    def val_losses(self) -> list[float]:
        return [float(r["best_val_loss"]) for r in self.runs if r.get("best_val_loss") is not None]

    def by_seed(self) -> dict | list[float]:
        """seed -> best validation loss where every run names its seed, else the bare values."""
        runs = [r for r in self.runs if r.get("best_val_loss") is not None]
        if runs and all(r.get("seed") is not None for r in runs):
            return {r["seed"]: float(r["best_val_loss"]) for r in runs}
        return [float(r["best_val_loss"]) for r in runs]


@dataclass(frozen=True)
class Oracles:
    modes: dict[str, OracleMode]
    seeds: list
    train: dict


def read_oracles(folder: SweepFolder) -> Oracles:
    """``oracles.json`` (no modes when the sweep ran none)."""
    if not folder.oracles_json.is_file():
        return Oracles({}, [], {})
    doc = _json(folder.oracles_json)
    modes = {m: OracleMode(list(r.get("runs") or []), r.get("val_loss"), r.get("ood_loss"))
             for m, r in (doc.get("modes") or {}).items()}
    return Oracles(modes, list(doc.get("seeds") or []), dict(doc.get("train") or {}))
