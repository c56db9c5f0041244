"""The sweep's summaries (``summary.md``, ``summary.csv``, ``best.json``), written whole from its trial records."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from ..atomic import atomic_write_json, atomic_write_text
from ..intervals import interval_text
from ..store import SweepFolder, sweep_folder_for
from .settings import SweepConfig


def sweep_dir_for(cfg: SweepConfig, resume: str | bool) -> tuple[Path, bool]:
    """The sweep's folder in the results store (new, or the one to resume) and whether it is resumed."""
    return sweep_folder_for(cfg.results, cfg.name, resume)


def collect_trials(folder: SweepFolder, encoder: str) -> list[dict]:
    return [json.loads(f.read_text()) for f in folder.trial_records(encoder)]


def read_final(folder: SweepFolder) -> dict:
    """``final.json``'s encoders (empty before the final runs, or without them)."""
    return json.loads(folder.final_json.read_text()).get("encoders", {}) if folder.final_json.is_file() else {}


def summarise(sweep_dir: Path, cfg: SweepConfig, records: dict[str, list[dict]]) -> tuple[list[dict], dict]:
    """One row per encoder (its search and, when there are final runs, their intervals) and
    ``best.json``: per encoder the best trial of the search or, once the final runs exist, the best
    seed (lowest validation loss) of the best configuration, the one :func:`rnnray.load_best` returns."""
    final = read_final(SweepFolder(sweep_dir))
    rows, best = [], {}
    for enc in cfg.encoders:
        ok = [r for r in records.get(enc, []) if r.get("status") != "failed" and r.get("best_val_loss") is not None
              and math.isfinite(r["best_val_loss"])]
        failed = len(records.get(enc, [])) - len(ok)
        if not ok:
            rows.append({"encoder": enc, "best_val_loss": None, "best_ood_loss": None, "n_params": None,
                         "trials": len(records.get(enc, [])), "failed": failed, "paper_val_loss": None,
                         "best_is_paper": False, "trial_id": None, "config": None})
            continue
        b = min(ok, key=lambda r: r["best_val_loss"])
        paper = next((r for r in ok if r.get("paper_config")), None)
        rows.append({"encoder": enc, "best_val_loss": b["best_val_loss"], "best_ood_loss": b.get("best_ood_loss"),
                     "n_params": b.get("n_params"), "trials": len(records[enc]), "failed": failed,
                     "paper_val_loss": paper["best_val_loss"] if paper else None,
                     "best_is_paper": bool(b.get("paper_config")),
                     "trial_id": b["trial_id"], "config": b.get("config")})
        best[enc] = {"trial_id": b["trial_id"], "paper_config": bool(b.get("paper_config")), "trial_dir": str(SweepFolder(sweep_dir).trial_dir(enc, b["trial_id"]).resolve()),
                     "checkpoint": b.get("checkpoint"), "best_val_loss": b["best_val_loss"],
                     "best_ood_loss": b.get("best_ood_loss"), "n_params": b.get("n_params"), "config": b.get("config"),
                     "conditioning": b.get("conditioning")}
        fin = final.get(enc, {})
        rows[-1]["final_best"] = (fin.get("best") or {}).get("val_interval")
        rows[-1]["final_paper"] = (fin.get("paper") or {}).get("val_interval")
        top = (fin.get("best") or {}).get("best_seed")
        if top:  # the best seed of the best configuration
            best[enc].update({k: top[k] for k in ("trial_id", "trial_dir", "checkpoint", "best_val_loss", "best_ood_loss", "n_params")},
                             seed=top["seed"], search_trial_id=b["trial_id"], final=True)
    return rows, best


def write_summary(sweep_dir: Path, rows: list[dict], best: dict, cfg: SweepConfig, downstream: dict | None = None) -> None:
    """``summary.csv``, ``summary.md`` and ``best.json``, always whole, from the trial records' rows.

    ``downstream``: the downstream evaluation's columns and section, as data (rendered by
    :func:`rnnray.evaluate.summary_columns`): ``csv_fields`` and ``csv`` (encoder -> field -> value),
    ``md_columns`` and ``md`` (encoder -> cells), ``md_section`` (lines). Without it the files hold
    the sweep's own columns only (the evaluation writes them again, with its columns, when it runs)."""
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
    atomic_write_text(folder.summary_md, markdown_table(rows, cfg, ds))
    atomic_write_json(folder.best_json, best)


def _csv(x) -> str:
    return "" if x is None else repr(float(x))


def _interval(iv: dict | None) -> str:
    return interval_text(iv, 4, with_n=True)


def _fmt(x, spec=".4f"):
    return "—" if x is None else format(x, spec)


def markdown_table(rows: list[dict], cfg: SweepConfig, downstream: dict | None = None) -> str:
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
    ds = downstream or {}
    extra = list(ds.get("md_columns", []))
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
                 *ds.get("md", {}).get(r["encoder"], ["—"] * len(extra))]
        lines.append("| " + " | ".join(cells) + " |")
    lines += list(ds.get("md_section", []))
    return "\n".join(lines) + "\n"
