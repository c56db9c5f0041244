"""``downstream.json`` in Markdown: the tables of encoders beside the baselines and chance, the
effective dimensions, and the headline metrics over the final seeds (numbers from the file only)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..analysis.downstream import COLLAPSED_BELOW, targets_for
from ..analysis.downstream.targets import METRIC_LABELS
from ..analysis.statistics import interval_text
from ..results.folder import SweepFolder

DOWNSTREAM_FILE = SweepFolder(Path(".")).downstream_json.name
MD_PREFIX = "ds "
MD_BEGIN, MD_END = "<!-- downstream:begin -->", "<!-- downstream:end -->"


def headline(kind: str, snaps=None) -> list[tuple[str, str]]:
    """(target, metric) pairs shown in markdown tables (each target's ``table_metrics``)."""
    return [(t.name, m) for t in targets_for(kind, snaps) for m in t.table_metrics]


def fmt_cell(cell: Mapping | None, digits: int = 3) -> str:
    if not cell or cell.get("mean") is None:
        return "—"
    std = cell.get("std")
    return f"{cell['mean']:.{digits}f}" + ("" if std is None else f" ± {std:.{digits}f}")


def fmt_dim(value) -> str:
    """An effective dimension for a table cell, flagged when the representation has collapsed."""
    if value is None or not math.isfinite(float(value)):
        return "—"
    return f"{float(value):.2f}" + (" (collapsed)" if float(value) < COLLAPSED_BELOW else "")


def effective_dim_lines(doc: Mapping) -> list[str]:
    """One paragraph: every representation's effective dimension, and what it means."""
    dims = [(n, r.get("effective_dim")) for n, r in doc.get("encoders", {}).items()]
    rnd = doc.get("baselines", {}).get("random", {}).get("effective_dim")
    if not any(d is not None for _, d in dims):
        return []
    text = "; ".join(f"{n} {fmt_dim(d)}" for n, d in dims) + (f"; random baseline {fmt_dim(rnd)}" if rnd is not None else "")
    collapsed = [n for n, d in dims if d is not None and math.isfinite(float(d)) and float(d) < COLLAPSED_BELOW]
    return ["", f"Effective dimension of the representations (participation ratio of their covariance over all "
                f"{sum(doc.get('rows', {}).get(s, 0) for s in ('fit', 'val', 'ood_test'))} snapshots: 1 = one direction, "
                f"16 = spread evenly): {text}."
            + (f" Collapsed (below {COLLAPSED_BELOW:g}): {', '.join(collapsed)}; their downstream scores and any "
               "comparison built on them measure little more than how far training has gone." if collapsed else "")]


def chance_text(doc: Mapping) -> str:
    """The chance levels beside the metrics, in words."""
    chance = doc.get("chance") or {}
    parts = [f"{column_label(*k.split('.'))} {v:.3g}" for k, v in chance.items()]
    return ("Chance: " + ", ".join(parts) + "; for the errors (MAE, angle) the random baseline is the chance level."
            if parts else "")


def final_seeds_lines(doc: Mapping) -> list[str]:
    """The headline metrics over each encoder's final seeds: mean (95 % interval over encoder seeds)."""
    final = doc.get("final") or {}
    if not final:
        return []
    pairs = headline(doc["zoo_kind"], doc.get("snapshot_steps"))
    lines = ["", "Over the final seeds of each encoder's best configuration (OOD-test half): mean (95 % Student-t "
                 "interval over encoder seeds; each seed's figure is the mean over the predictor seeds).", "",
             "| representation | encoder seeds | " + " | ".join(column_label(t, m) for t, m in pairs) + " |",
             "| --- | --- |" + " --- |" * len(pairs)]
    for enc, res in final.items():
        cells = []
        for t, m in pairs:
            iv = (res.get("intervals", {}).get(f"{t}.{m}") or {}).get("ood_test") or {}
            cells.append(interval_text(iv, 3))
        lines.append(f"| {enc} | {len(res.get('seeds', []))} | " + " | ".join(cells) + " |")
    chance = doc.get("chance") or {}
    lines.append("| chance | — | " + " | ".join(f"{chance[f'{t}.{m}']:.3g}" if f"{t}.{m}" in chance else "random baseline"
                                              for t, m in pairs) + " |")
    return lines


def column_label(target: str, metric: str) -> str:
    return f"{target} {METRIC_LABELS.get(metric, metric)}"


def summary_cells(doc: Mapping) -> tuple[list[str], dict[str, list[str]]]:
    """The summary table's downstream columns: headings and each encoder's cells (OOD-test half)."""
    pairs = headline(doc["zoo_kind"], doc.get("snapshot_steps"))
    rows = {name: [fmt_cell(res.get("results", {}).get(t, {}).get("ood_test", {}).get(m)) for t, m in pairs]
            + [fmt_dim(res.get("effective_dim"))] for name, res in doc.get("encoders", {}).items()}
    return [f"{MD_PREFIX}{column_label(t, m)} (OOD)" for t, m in pairs] + ["effective dim"], rows


def downstream_table(doc: Mapping, names: Sequence[tuple[str, Mapping]], split: str = "ood_test") -> list[str]:
    """Markdown table: one row per (label, result), one column per headline metric."""
    pairs = headline(doc["zoo_kind"], doc.get("snapshot_steps"))
    lines = ["| representation | " + " | ".join(column_label(t, m) for t, m in pairs) + " |",
             "| --- |" + " --- |" * len(pairs)]
    for label, res in names:
        cells = [fmt_cell(res.get("results", {}).get(t, {}).get(split, {}).get(m)) for t, m in pairs]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def downstream_section(doc: Mapping) -> list[str]:
    """The summary's downstream section: encoders beside both baselines, OOD-test half and validation."""
    encoders = doc.get("encoders", {})
    n_seeds = len(doc.get("seeds", []))
    sup = doc.get("baselines", {}).get("supervised", {})
    names = [(n, r) for n, r in encoders.items()] + [
        ("baseline: random", doc.get("baselines", {}).get("random", {})),
        (f"baseline: supervised {sup.get('encoder', '')} (end to end)", sup)]
    section = [
        "",
        MD_BEGIN,
        "## Downstream tasks",
        "",
        f"Frozen representations, predictor trained on the train split plus half of the OOD tasks; mean ± std over "
        f"{n_seeds} predictor seeds. `ds` columns above and the tables below: the held-out OOD half; "
        f"details in `{DOWNSTREAM_FILE}`.",
        "",
        *([chance_text(doc), ""] if doc.get("chance") else []),
        "OOD-test half:",
        "",
        *downstream_table(doc, names),
        "",
        "Validation split:",
        "",
        *downstream_table(doc, names, split="val"),
        *effective_dim_lines(doc),
        *final_seeds_lines(doc),
    ]
    if doc.get("skipped"):
        section += ["", "Skipped: " + "; ".join(f"{k} ({v})" for k, v in doc["skipped"].items())]
    section.append(MD_END)
    return section


def summary_lines(doc: Mapping) -> list[str]:
    """What ``python -m rnnray.evaluate`` prints: the OOD-test table, encoders and baselines."""
    return ["", *downstream_table(doc, list(doc["encoders"].items()) + list(
        (f"baseline: {k}", v) for k, v in doc["baselines"].items()))]
