"""Everything the report prints that is not already in a stage's own file, computed once and stored
as ``analysis.json`` beside them: the emulation table (each encoder's trials), the verdict rows, each
encoder against the label oracles, the settings that depart from the paper, the emulator's
performance prediction and the split sizes. A notebook reads the numbers here, never in Markdown.

Fields (format ``rnnray-analysis/1``): ``zoo``, ``zoo_kind``, ``split``, ``split_seed``,
``split_rows`` (snapshots per split), ``budget``, ``tolerance``, ``encoders`` (in sweep order),
``emulation`` (encoder -> trials, selected / paper-preset losses, tuning gain, mean and std over
trials, parameters), ``verdict`` (rows: claim, zoo, numbers, test, verdict), ``oracles`` (see
:func:`rnnray.analysis.oracles.oracle_comparisons`), ``pairs`` (each encoder against each other, paired over
seeds: :func:`rnnray.analysis.pairs.encoder_pairs`), ``departures`` (setting, this sweep, the paper),
``performance`` (see :func:`rnnray.analysis.performance.performance_prediction`), ``skipped``,
``schedule`` (slot utilisation and each phase's wall time so far: :func:`rnnray.sweep.timeline.schedule_summary`).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..results.atomic import atomic_write_json
from ..results.folder import SweepFolder
from ..results.records import TrialRecord
from ..sweep.timeline import schedule_summary
from .departures import departures
from .downstream import jsonable
from .oracles import oracle_comparisons
from .pairs import encoder_pairs
from .verdict import study_from_sweep, verdict_rows

FORMAT = "rnnray-analysis/1"


def _mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    v = [float(x) for x in values if x is not None and math.isfinite(float(x))]
    if not v:
        return None, None
    return float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0


def emulation_rows(trials: Mapping[str, list[TrialRecord]], best: Mapping, encoders: Sequence[str]) -> dict[str, dict]:
    """Per encoder: its search's selected trial (best validation loss; with final runs, the search's
    own selection, not the best seed), the paper preset's trial 0, the tuning gain, and the spread
    of the losses over its trials."""
    out = {}
    for enc in encoders:
        recs = trials.get(enc, [])
        b = dict(best.get(enc) or {})
        if b.get("final"):
            sel = next((r for r in recs if r.trial_id == b.get("search_trial_id")), None)
            b = {"best_val_loss": sel.best_val_loss, "best_ood_loss": sel.best_ood_loss, "paper_config": sel.paper_config,
                 "n_params": sel.n_params} if sel else {}
        paper = next((r for r in recs if r.paper_config and r.status != "failed"), None)
        pv, bv = (paper.best_val_loss if paper else None), b.get("best_val_loss")
        val_mean, val_std = _mean_std([r.best_val_loss for r in recs])
        ood_mean, ood_std = _mean_std([r.best_ood_loss for r in recs])
        out[enc] = {"trials": len(recs), "selected_val_loss": bv, "selected_ood_loss": b.get("best_ood_loss"),
                    "paper_val_loss": pv, "selected_is_paper": bool(b.get("paper_config")),
                    "tuning_gain": None if pv is None or bv is None else (0.0 if b.get("paper_config") else pv - bv),
                    "val_loss_mean": val_mean, "val_loss_std": val_std, "ood_loss_mean": ood_mean, "ood_loss_std": ood_std,
                    "n_params": b.get("n_params")}
    return out


def write_findings(folder: SweepFolder, *, config: Mapping[str, Any], trials: Mapping[str, list[TrialRecord]], best: Mapping,
                   encoders: Sequence[str], zoo: str, kind: str, scheme: str, split_seed: int,
                   split_rows: Mapping[str, int], performance: Mapping | None, skipped: Mapping[str, str]) -> dict:
    """Compute what the report prints and write it to ``analysis.json``; returns the document."""
    doc = {
        "format": FORMAT,
        "sweep": folder.path.name,
        "created": dt.datetime.now().isoformat(timespec="seconds"),
        "zoo": str(zoo), "zoo_kind": kind, "split": scheme, "split_seed": split_seed,
        "split_rows": dict(split_rows),
        "budget": config.get("budget"), "tolerance": config.get("tolerance"),
        "encoders": list(encoders),
        "emulation": emulation_rows(trials, best, encoders),
        "verdict": [r.to_dict() for r in verdict_rows(study)] if (study := study_from_sweep(folder)) else [],
        "oracles": oracle_comparisons(folder),
        "pairs": encoder_pairs(folder, encoders),
        "departures": [list(d) for d in departures(config)],
        "performance": performance,
        "skipped": dict(skipped),
        "schedule": schedule_summary(folder),
    }
    doc = jsonable(doc)
    atomic_write_json(folder.analysis_json, doc)
    return doc
