"""``summary.md``: the sweep's one-table overview, rendered from its data (the trial records'
rows, ``final.json`` through them, and ``downstream.json``), always whole."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from ..analysis.evaluate import sweep_config
from ..analysis.statistics import interval_text
from ..results.atomic import atomic_write_text
from ..results.folder import SweepFolder
from ..sweep import collect_trials, summarise
from ..sweep.timeline import schedule_summary
from .downstream import downstream_section, summary_cells
from .sections import schedule_lines


def write_summary_md(sweep_dir: str | Path) -> Path:
    """Render ``summary.md`` from the sweep folder's data; returns its path."""
    folder = SweepFolder(Path(sweep_dir))
    cfg = sweep_config(folder)
    rows, _ = summarise(folder.path, cfg, {enc: collect_trials(folder, enc) for enc in cfg.encoders})
    doc = json.loads(folder.downstream_json.read_text()) if folder.downstream_json.is_file() else None
    schedule = schedule_lines(schedule_summary(folder))  # the report's phase too, when it has been written
    atomic_write_text(folder.summary_md, summary_markdown(rows, cfg, doc) + ("\n" + schedule[0] + "\n" if schedule else ""))
    return folder.summary_md


def _interval(iv: dict | None) -> str:
    return interval_text(iv, 4, with_n=True)


def _fmt(x, spec=".4f"):
    return "—" if x is None else format(x, spec)


def summary_markdown(rows: list[dict], cfg, doc: Mapping | None = None) -> str:
    """The sweep's table (one row per encoder: search, tuning gain, final seeds) and, once there is a
    ``downstream.json`` (``doc``), its headline columns and section."""
    lines = [
        f"# Sweep `{cfg.name}`",
        "",
        f"Zoo: `{cfg.zoo_path}` · budget {cfg.budget:,} parameters ± {cfg.tolerance:.0%} · "
        f"{cfg.tune.samples_per_encoder} trials per encoder",
        "",
        "Trial 0 of each encoder is its paper preset scaled to the budget (`paper_config: true` in its "
        "`trial.json`); tuning gain = its validation loss minus the best trial's.",
        "",
    ]
    extra, ds_cells = summary_cells(doc) if doc else ([], {})
    finals = any(r.get("final_best") for r in rows)
    if finals:
        lines[-1:-1] = ["Final runs: each encoder's best configuration and paper preset retrained with new seeds; "
                        "mean (95 % Student-t interval over seeds) of their best validation loss (`final.json`).", ""]
    head = ["encoder", "best val emulation loss", "its OOD emulation loss", "paper preset (trial 0) val loss",
            "tuning gain", "parameters", "trials (failed)",
            *(["final val loss, best config", "final val loss, paper preset"] if finals else []), *extra]
    lines += ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        n = "—" if r["n_params"] is None else f"{r['n_params']:,}"
        paper, best = r.get("paper_val_loss"), r["best_val_loss"]
        gain = "—" if paper is None or best is None else ("0 (the best is trial 0)" if r.get("best_is_paper") else f"{paper - best:.4f}")
        cells = [r["encoder"], _fmt(best), _fmt(r["best_ood_loss"]), _fmt(paper), gain, n, f"{r['trials']} ({r['failed']})",
                 *([_interval(r.get("final_best")), _interval(r.get("final_paper") or (r.get("final_best") if r.get("best_is_paper") else None))]
                   if finals else []),
                 *ds_cells.get(r["encoder"], ["—"] * len(extra))]
        lines.append("| " + " | ".join(cells) + " |")
    lines += downstream_section(doc) if doc else []
    return "\n".join(lines) + "\n"
