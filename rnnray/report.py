"""``python -m rnnray.report RESULTS_DIR``: ``report.md`` and PNG figures for one sweep.

Written into the sweep folder: ``report.md`` and ``figures/``:

* ``emulation_loss.png`` — best validation and OOD emulation loss of every trial of each encoder:
  bars are the mean over the encoder's finished trials, error bars their standard deviation, dots
  single trials, a black cross the selected (best-validation) trial;
* ``emulation_curves.png`` — validation emulation loss against training step of each best trial;
* ``downstream.png`` — every headline downstream metric, encoders and baselines, validation and
  OOD-test half: mean ± std over predictor seeds, dots single seeds (from ``downstream.json``; the
  evaluation runs first when that file is missing, unless told not to);
* ``performance_prediction.png`` — what the emulator says about an RNN's performance against the
  RNN's real performance, on validation and OOD snapshots (never seen in encoder training);
* ``pca.png`` — 2-D PCA of each encoder's representations, coloured by task and by accuracy.

The figures are drawn by :mod:`rnnray.figures`; performance prediction, the science the report
shows, is :mod:`rnnray.performance` (its docstring gives the choices).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from .cli import UsageError, friendly_errors
from .evaluate import (
    DOWNSTREAM_FILE,
    check_device,
    default_device,
    downstream_table,
    chance_text,
    effective_dim_lines,
    final_seeds_lines,
    evaluate_sweep,
    load_encoders,
    read_json,
    resolve,
)
from .atomic import atomic_write_text
from .kinds import zoo_kind
from .store import SweepFolder
from .figures import (
    PCA_MAX_ROWS,
    _mean_std,
    fig_downstream,
    fig_emulation_curves,
    fig_emulation_loss,
    fig_pca,
    fig_performance,
    fig_search_history,
)
from .sweep.studies import sweep_studies
from .intervals import interval_text
from .verdict import verdict_section
from .departures import departures_section
from .label_oracle import oracle_section
from .performance import SNAPSHOT_SEED, _np, performance_prediction

REPORT_FILE = SweepFolder(Path(".")).report_md.name


FIGURES = SweepFolder(Path(".")).figures.name  # figures are linked relative to report.md


def trial_records(sweep_dir: Path) -> dict[str, list[dict]]:
    """Finished trials per encoder (``trials/<encoder>/<trial>/trial.json``)."""
    out: dict[str, list[dict]] = {}
    for f in SweepFolder(sweep_dir).trial_records():
        try:
            rec = json.loads(f.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        out.setdefault(rec.get("encoder") or f.parent.parent.name, []).append(rec)
    return out


def _f(x, spec=".4f") -> str:
    return "—" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def search_section(studies: Mapping[str, Mapping | None], folder: SweepFolder) -> list[str]:
    """Each encoder's Optuna study: finished trials and the hyperparameter importances (or why there are none)."""
    lines = ["## Hyperparameter search", ""]
    if not any(studies.values()):
        return lines + ["No Optuna study in this sweep folder (a sweep from before studies were stored)."]
    lines += [f"Optuna's studies are in `{folder.optuna_journal.name}` (`optuna-dashboard {folder.optuna_journal}`). "
              "Importances: Optuna's PED-ANOVA evaluator over the finished trials.", "",
              "| encoder | finished trials | best value | importances |", "| --- | --- | --- | --- |"]
    for enc, s in studies.items():
        if not s:
            lines.append(f"| {enc} | — | — | no study |")
            continue
        best = s["history"][-1]["best"] if s["history"] else None
        imp = (", ".join(f"{k} {v:.2f}" for k, v in s["importances"].items()) if s["importances"]
               else s.get("importance_note", "—"))
        lines.append(f"| {enc} | {s['finished']} of {s['trials']} | {_f(best, '.4f')} | {imp} |")
    if any(s and s["history"] for s in studies.values()):
        lines += ["", f"![search history]({FIGURES}/search_history.png)"]
    return lines


def emulation_table(trials: Mapping[str, list[dict]], best: Mapping, encoders: Sequence[str]) -> list[str]:
    lines = ["| encoder | trials | selected: val loss | selected: OOD loss | paper preset (trial 0): val loss | tuning gain "
             "| val loss over trials | OOD loss over trials | parameters |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for enc in encoders:
        recs = trials.get(enc, [])
        b = best.get(enc) or {}
        if b.get("final"):  # best.json names the best final seed: compare the search's own selection here
            b = next((r for r in recs if r.get("trial_id") == b.get("search_trial_id")), {})
        cells = []
        for key in ("best_val_loss", "best_ood_loss"):
            m, s = _mean_std([r.get(key) for r in recs])
            cells.append("—" if not math.isfinite(m) else f"{m:.4f} ± {s:.4f}")
        paper = next((r for r in recs if r.get("paper_config") and r.get("status") != "failed"), None)
        pv, bv = (paper or {}).get("best_val_loss"), b.get("best_val_loss")
        gain = "—" if pv is None or bv is None else ("0 (selected = trial 0)" if b.get("paper_config") else f"{pv - bv:.4f}")
        n = b.get("n_params")
        lines.append(f"| {enc} | {len(recs)} | {_f(bv)} | {_f(b.get('best_ood_loss'))} | {_f(pv)} | {gain} | {cells[0]} | {cells[1]} "
                     f"| {'—' if n is None else f'{int(n):,}'} |")
    return lines


def final_table(folder: SweepFolder, encoders: Sequence[str]) -> list[str]:
    """The final seeds' validation and OOD losses per configuration: mean (95 % interval), seeds."""
    from .sweep.summary import read_final

    final = read_final(folder)
    if not final:
        return []
    lines = ["", "Final runs (`final.json`): the best configuration and the paper preset retrained from scratch with "
                 "new seeds; mean (95 % Student-t interval over seeds).", "",
             "| encoder | configuration | seeds | val loss | OOD loss |", "| --- | --- | --- | --- | --- |"]
    for enc in encoders:
        for role, entry in (final.get(enc) or {}).items():
            what = f"best (search trial {entry.get('source_trial')})" if role == "best" else "paper preset"
            if entry.get("conditioning") not in (None, "bos"):  # a searched conditioning that left the paper's
                what += f", emulator conditioned `{entry['conditioning']}`"
            lines.append(f"| {enc} | {what} "
                         f"| {len(entry.get('seeds', []))} | {interval_text(entry.get('val_interval'))} | {interval_text(entry.get('ood_interval'))} |")
    return lines


def write_report(
    sweep_dir: str | Path,
    *,
    device=None,
    max_snapshots: int = 128,
    n_samples: int = 100,
    evaluate_missing: bool = True,
    progress: bool = True,
) -> Path:
    """Write ``report.md`` and ``figures/*.png`` into the sweep folder; return the report's path.
    Runs the downstream evaluation first when ``downstream.json`` is missing (``evaluate_missing``)."""
    from .downstream import split_rows
    from .evaluate import split_scheme, zoo_and_seed
    from .zoo import load_table, read_manifest
    from .zoo.languages import ALL_TASKS

    t0 = time.time()
    sweep_dir = Path(sweep_dir)
    folder = SweepFolder(sweep_dir)
    sweep = read_json(folder.sweep_json, "not a sweep folder")
    best = read_json(folder.best_json, "no best trials yet: has the sweep finished a trial?")
    device = torch.device(device) if device is not None else default_device()
    fig_dir = folder.figures
    ds_path = folder.downstream_json
    doc = json.loads(ds_path.read_text()) if ds_path.is_file() else None
    if doc is None and evaluate_missing:
        if progress:
            print(f"{ds_path.name} missing: running the downstream evaluation first", flush=True)
        doc = evaluate_sweep(sweep_dir, device=device, progress=progress)
    trials = trial_records(sweep_dir)
    encoders = list((sweep.get("config") or {}).get("encoders") or []) or list(best)
    encoders += [e for e in best if e not in encoders]
    models, metas, skipped = load_encoders(best, device)
    zoo, split_seed = zoo_and_seed(sweep, metas, sweep_dir)
    scheme = split_scheme(sweep, metas, sweep_dir)
    manifest = read_manifest(zoo)
    kind = manifest["kind"]
    cols = ["run_id", "step", "params", "accuracy", zoo_kind(kind).task_column]
    table = load_table(zoo, columns=cols, checksums=False)
    figures: dict[str, Path | None] = {}

    if progress:
        print(f"report: {len(models)} encoder(s), zoo {zoo} ({kind}, {len(table)} snapshots)", flush=True)
    figures["emulation_loss"] = fig_emulation_loss(trials, best, encoders, fig_dir / "emulation_loss.png")
    figures["emulation_curves"] = fig_emulation_curves(trials, best, fig_dir / "emulation_curves.png")
    studies = sweep_studies(sweep_dir, encoders)
    figures["search_history"] = fig_search_history(studies, fig_dir / "search_history.png")
    figures["downstream"] = fig_downstream(doc, fig_dir / "downstream.png") if doc else None

    pp = performance_prediction(models, table, manifest, zoo, split_seed, max_snapshots=max_snapshots,
                                n_samples=n_samples, device=device, scheme=scheme)
    figures["performance_prediction"] = fig_performance(pp, fig_dir / "performance_prediction.png")
    if progress:
        print(f"  performance prediction on {pp['rows']} snapshots done ({time.time() - t0:.0f} s)", flush=True)

    from .downstream import representations

    n = len(table)
    pick = np.arange(n) if n <= PCA_MAX_ROWS else np.sort(np.random.default_rng(SNAPSHOT_SEED).choice(n, PCA_MAX_ROWS, replace=False))
    params = _np(table, "params")[pick]
    reps = {name: representations(m.encoder, params, device=device) for name, m in models.items()}
    acc = _np(table, "accuracy")[pick]
    if kind == "formal_languages":
        index = {tuple(int(v) for v in t): i for i, t in enumerate(ALL_TASKS)}
        colour = np.array([index[tuple(int(v) for v in t)] for t in _np(table, "task")[pick]])
        task_label, cmap = "task (index of t1 t2 t3, base 6)", "turbo"
    else:
        colour, task_label, cmap = _np(table, "angle")[pick], "angle (degrees)", "twilight"
    figures["pca"] = fig_pca(reps, colour, task_label, cmap, acc, fig_dir / "pca.png")

    for name, made in figures.items():  # a figure not drawn this time must not linger from an earlier report
        if made is None:
            (fig_dir / f"{name}.png").unlink(missing_ok=True)
    rows = split_rows(table, kind, split_seed, scheme)
    cfg = sweep.get("config") or {}
    lines = [
        f"# Report: sweep `{sweep_dir.name}`",
        "",
        *verdict_section(folder),
        f"Zoo `{zoo}` ({kind}): {len(table)} snapshots; "
        + (f"split seed {split_seed}: " if scheme == "ours" else "the authors' split: ")
        + ", ".join(f"{s} {len(rows[s])}" for s in ("train", "val", "ood_train", "ood_test")) + " snapshots. "
        + (f"Budget {cfg['budget']:,} parameters ± {cfg.get('tolerance', 0):.0%}." if cfg.get("budget") else ""),
        "",
        *departures_section(cfg),
        "## Emulation loss",
        "",
        "Total variation between the RNN's and the emulator's next-step distributions (lower is better). "
        "'Selected' is each encoder's best-validation trial (its OOD loss at that same checkpoint); the spread is "
        "over the encoder's finished trials.",
        "",
        *emulation_table(trials, best, encoders),
        *final_table(folder, encoders),
        *oracle_section(folder),
        "",
        f"![emulation loss]({FIGURES}/emulation_loss.png)",
    ]
    if figures["emulation_curves"]:
        lines += ["", f"![emulation curves]({FIGURES}/emulation_curves.png)"]
    lines += ["", *search_section(studies, folder)]
    lines += ["", "## Downstream tasks", ""]
    if doc:
        sup = doc.get("baselines", {}).get("supervised", {})
        ents = list(doc.get("encoders", {}).items()) + [
            ("baseline: random", doc.get("baselines", {}).get("random", {})),
            (f"baseline: supervised {sup.get('encoder', '')} (end to end)", sup)]
        lines += [
            f"A small MLP on frozen, L2-normalised representations, trained on the train split plus half of the OOD "
            f"tasks ({doc['rows'].get('fit')} snapshots), tested on the other OOD half ({doc['rows'].get('ood_test')}) "
            f"and on validation ({doc['rows'].get('val')}); mean ± std over predictor seeds {doc.get('seeds')}. "
            "Baselines: random unit vectors (chance), and an encoder trained end to end on each target.",
            "",
            *([chance_text(doc), ""] if doc.get("chance") else []),
            "OOD-test half:",
            "",
            *downstream_table(doc, ents),
            "",
            "Validation:",
            "",
            *downstream_table(doc, ents, split="val"),
            *effective_dim_lines(doc),
            *final_seeds_lines(doc),
            "",
            f"![downstream]({FIGURES}/downstream.png)",
        ]
    else:
        lines.append(f"No `{DOWNSTREAM_FILE}` yet: run `python -m rnnray.evaluate {sweep_dir}`.")
    lines += ["", "## Performance prediction by the emulator", ""]
    if pp["encoders"]:
        lines += [f"Real {pp['quantity']} against the emulator's, on {pp['rows']} validation/OOD snapshots: "
                  f"{pp['method']}.", ""]
        head = "| encoder | Pearson r | MAE |" + (" agreement with RNN |" if kind == "mnist" else "")
        lines += [head, "| --- | --- | --- |" + (" --- |" if kind == "mnist" else "")]
        for enc, e in pp["encoders"].items():
            lines.append(f"| {enc} | {_f(e['pearson'], '.3f')} | {_f(e['mae'], '.3f')} |"
                         + (f" {_f(e.get('agreement'), '.3f')} |" if kind == "mnist" else ""))
        if "rnn_same_digits_pearson" in pp:
            lines += ["", f"Reference: the RNN's own accuracy on the same stored digits correlates with its stored held-out "
                          f"accuracy at r = {_f(pp['rnn_same_digits_pearson'], '.3f')} (the ceiling set by 100 digits)."]
        lines += ["", f"![performance prediction]({FIGURES}/performance_prediction.png)"]
    else:
        lines.append("No loadable encoder checkpoints.")
    lines += ["", "## Representations", ""]
    if figures["pca"]:
        lines += [f"2-D PCA of each encoder's representations of {len(pick)} snapshots, coloured by task and by accuracy.",
                  "", f"![pca]({FIGURES}/pca.png)"]
    else:
        lines.append("No loadable encoder checkpoints.")
    if skipped:
        lines += ["", "Skipped encoders: " + "; ".join(f"{k} ({v})" for k, v in skipped.items())]
    path = SweepFolder(sweep_dir).report_md
    atomic_write_text(path, "\n".join(lines) + "\n")
    if progress:
        made = [p.name for p in figures.values() if p]
        print(f"report: {path} with {len(made)} figures ({', '.join(made)}) in {time.time() - t0:.0f} s", flush=True)
    return path


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m rnnray.report", description="Write report.md and PNG figures for a sweep.")
    p.add_argument("results", help="a sweep folder, or a results directory (its latest sweep)")
    p.add_argument("--max-snapshots", type=int, default=128, help="validation/OOD snapshots for performance prediction")
    p.add_argument("--samples", type=int, default=100, help="emulator samples per snapshot (formal languages)")
    p.add_argument("--no-evaluate", action="store_true", help="do not run the downstream evaluation when downstream.json is missing")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    args = p.parse_args(argv)
    with friendly_errors(args.debug):
        if args.max_snapshots < 1 or args.samples < 1:
            raise UsageError("--max-snapshots and --samples must be at least 1")
        check_device(args.device)
        sweep_dir = resolve(args.results)
        read_json(SweepFolder(sweep_dir).best_json, "no best trials yet: has the sweep finished a trial?")
        path = write_report(sweep_dir, device=args.device, max_snapshots=args.max_snapshots, n_samples=args.samples,
                            evaluate_missing=not args.no_evaluate)
    print(f"report: {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
