"""The sweep's summaries as data (``summary.csv``, ``best.json``), written whole from its trial records;
``summary.md`` is their rendering by :mod:`rnnray.report.summary`."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..errors import RunFailed
from ..results.atomic import atomic_write_json, atomic_write_text
from ..results.folder import SweepFolder, sweep_folder_for
from ..results.records import TrialRecord, read_final, read_trials
from .settings import SweepConfig


def sweep_dir_for(cfg: SweepConfig, resume: str | bool) -> tuple[Path, bool]:
    """The sweep's folder in the results store (new, or the one to resume) and whether it is resumed."""
    return sweep_folder_for(cfg.results, cfg.name, resume)


def collect_trials(folder: SweepFolder, encoder: str) -> list[TrialRecord]:
    """The encoder's search trials, read through the store's typed reader."""
    return read_trials(folder, encoder).get(encoder, [])


def summarise(sweep_dir: Path, cfg: SweepConfig, records: Mapping[str, Sequence[TrialRecord | Mapping]]) -> tuple[list[dict], dict]:
    """One row per encoder (its search and, when there are final runs, their intervals) and
    ``best.json``: per encoder the best trial of the search or, once the final runs exist, the best
    seed (lowest validation loss) of the best configuration, the one :func:`rnnray.load_best` returns."""
    final = read_final(SweepFolder(sweep_dir))
    rows, best = [], {}
    for enc in cfg.encoders:
        recs = [r if isinstance(r, TrialRecord) else TrialRecord.from_dict(r, enc) for r in records.get(enc, [])]
        ok = [r for r in recs if r.usable]
        failed = len(recs) - len(ok)
        if not ok:
            rows.append({"encoder": enc, "best_val_loss": None, "best_ood_loss": None, "n_params": None,
                         "trials": len(recs), "failed": failed, "paper_val_loss": None,
                         "best_is_paper": False, "trial_id": None, "config": None})
            continue
        b = min(ok, key=lambda r: r.best_val_loss)
        paper = next((r for r in ok if r.paper_config), None)
        rows.append({"encoder": enc, "best_val_loss": b.best_val_loss, "best_ood_loss": b.best_ood_loss,
                     "n_params": b.n_params, "trials": len(recs), "failed": failed,
                     "paper_val_loss": paper.best_val_loss if paper else None,
                     "best_is_paper": b.paper_config, "trial_id": b.trial_id, "config": b.config or None})
        best[enc] = {"trial_id": b.trial_id, "paper_config": b.paper_config,
                     "trial_dir": str(SweepFolder(sweep_dir).trial_dir(enc, b.trial_id).resolve()),
                     "checkpoint": b.checkpoint, "best_val_loss": b.best_val_loss,
                     "best_ood_loss": b.best_ood_loss, "n_params": b.n_params, "config": b.config or None,
                     "conditioning": b.conditioning}
        fin = final.get(enc, {})
        rows[-1]["final_best"] = fin["best"].val_interval if "best" in fin else None
        rows[-1]["final_paper"] = fin["paper"].val_interval if "paper" in fin else None
        top = fin["best"].best_seed if "best" in fin else None
        if top:  # the best seed of the best configuration
            best[enc].update({k: top[k] for k in ("trial_id", "trial_dir", "checkpoint", "best_val_loss", "best_ood_loss", "n_params")},
                             seed=top["seed"], search_trial_id=b.trial_id, final=True)
    return rows, best


def require_results(sweep_dir: Path, cfg: SweepConfig) -> dict:
    """``best.json``, or :class:`RunFailed` (exit code 1) when it names no encoder: a sweep none of
    whose trials left a usable checkpoint has no result, and says so in one line, with each
    encoder's failed trials and the first reason, instead of ending like a finished sweep."""
    folder = SweepFolder(sweep_dir)
    best = json.loads(folder.best_json.read_text())
    if best:
        return best
    trials = read_trials(folder)
    parts = []
    for enc in cfg.encoders:
        recs = trials.get(enc, [])
        reasons = [r.reason for r in recs if r.reason]
        parts.append(f"{enc}: {len(recs)} trial(s), none usable" + (f", e.g. {reasons[0]}" if reasons else ""))
    raise RunFailed(f"no trial of any encoder left a usable checkpoint ({'; '.join(parts)}); "
                    f"the records are in {folder.path}/trials/*/*/trial.json")


def write_summary(sweep_dir: Path, rows: list[dict], best: dict, cfg: SweepConfig, downstream: dict | None = None) -> None:
    """``summary.csv`` and ``best.json``, always whole, from the trial records' rows.

    ``downstream``: the downstream evaluation's columns, as data
    (:func:`rnnray.analysis.evaluate.summary_csv_columns`): ``csv_fields`` and ``csv`` (encoder ->
    field -> value). Without it the CSV holds the sweep's own columns only (the evaluation writes it
    again, with its columns, when it runs)."""
    ds = downstream or {}
    buf = io.StringIO()
    fields = ["encoder", "best_val_loss", "best_ood_loss", "n_params", "trials", "failed", "paper_val_loss",
              "best_is_paper", "trial_id", "config", "final_val_mean", "final_val_low", "final_val_high", "final_seeds",
              "final_paper_val_mean", "final_paper_val_low", "final_paper_val_high"]
    w = csv.DictWriter(buf, fieldnames=fields + list(ds.get("csv_fields", [])))
    w.writeheader()
    for r in rows:
        extra = ds.get("csv", {}).get(r["encoder"], {})
        fb, fp = r.get("final_best") or {}, r.get("final_paper") or {}
        plain = {k: v for k, v in r.items() if k not in ("final_best", "final_paper")}
        w.writerow({**plain, "config": json.dumps(r["config"]) if r["config"] else "",
                    "final_val_mean": _csv(fb.get("mean")), "final_val_low": _csv(fb.get("low")),
                    "final_val_high": _csv(fb.get("high")), "final_seeds": fb.get("n", ""),
                    "final_paper_val_mean": _csv(fp.get("mean")), "final_paper_val_low": _csv(fp.get("low")),
                    "final_paper_val_high": _csv(fp.get("high")),
                    **{f: extra.get(f, "") for f in ds.get("csv_fields", [])}})
    folder = SweepFolder(sweep_dir)
    atomic_write_text(folder.summary_csv, buf.getvalue())
    atomic_write_json(folder.best_json, best)


def _csv(x) -> str:
    return "" if x is None else repr(float(x))
