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

The figures are drawn by :mod:`rnnray.report.figures`; performance prediction, the science the report
shows, is :mod:`rnnray.analysis.performance` (its docstring gives the choices).
"""

from __future__ import annotations

import argparse
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from ..analysis.evaluate import (check_device, default_device, evaluate_sweep, load_encoders, read_json, require_encoders,
                                 resolve, split_scheme, zoo_and_seed)
from ..analysis.findings import write_findings
from ..analysis.performance import SNAPSHOT_SEED, _np, performance_prediction
from ..cli import UsageError, friendly_errors
from ..kinds import zoo_kind
from ..results.atomic import atomic_write_text, replacing_dir
from ..results.folder import ResultsError, SweepFolder
from ..results.records import read_final, read_oracles, read_trials
from ..sweep.studies import sweep_studies
from .downstream import DOWNSTREAM_FILE, chance_text, downstream_table, effective_dim_lines, final_seeds_lines
from .figures import (PCA_MAX_ROWS, fig_downstream, fig_emulation_curves, fig_emulation_loss, fig_pca, fig_performance,
                      fig_search_history)
from .sections import (FIGURES, departures_section, emulation_table, final_table, oracle_section, pairs_section,
                       performance_section, schedule_lines, search_section, verdict_section)
from .summary import write_summary_md

REPORT_FILE = SweepFolder(Path(".")).report_md.name


def write_report(
    sweep_dir: str | Path,
    *,
    device=None,
    max_snapshots: int = 128,
    n_samples: int = 100,
    evaluate_missing: bool = True,
    progress: bool = True,
) -> Path:
    """Write ``analysis.json``, ``report.md``, ``summary.md`` and ``figures/*.png`` into the sweep
    folder; return the report's path. Runs the downstream evaluation first when ``downstream.json``
    is missing (``evaluate_missing``)."""
    from ..analysis.downstream import representations, split_rows
    from ..zoo import load_table, read_manifest

    # load: the sweep's files, its encoders and the zoo's rows
    t0 = time.time()
    sweep_dir = Path(sweep_dir)
    folder = SweepFolder(sweep_dir)
    sweep = read_json(folder.sweep_json, "not a sweep folder")
    best = read_json(folder.best_json, "no best trials yet: has the sweep finished a trial?")
    device = torch.device(device) if device is not None else default_device()
    doc = read_json(folder.downstream_json, "the downstream evaluation") if folder.downstream_json.is_file() else None
    if doc is None and evaluate_missing:
        if progress:
            print(f"{DOWNSTREAM_FILE} missing: running the downstream evaluation first", flush=True)
        doc = evaluate_sweep(sweep_dir, device=device, progress=progress)
    cfg = sweep.get("config") or {}
    trials = read_trials(folder)
    encoders = list(cfg.get("encoders") or []) or list(best)
    encoders += [e for e in best if e not in encoders]
    models, metas, skipped = load_encoders(best, device)
    require_encoders(models, skipped, folder)
    zoo, split_seed = zoo_and_seed(sweep, metas, sweep_dir)
    scheme = split_scheme(sweep, metas, sweep_dir)
    manifest = read_manifest(zoo)
    kind = manifest["kind"]
    table = load_table(zoo, columns=["run_id", "step", "params", "accuracy", zoo_kind(kind).task_column], checksums=False)
    if progress:
        print(f"report: {len(models)} encoder(s), zoo {zoo} ({kind}, {len(table)} snapshots)", flush=True)

    # compute: the emulator's performance prediction, the representations, everything else the report prints
    pp = performance_prediction(models, table, manifest, zoo, split_seed, max_snapshots=max_snapshots,
                                n_samples=n_samples, device=device, scheme=scheme)
    if progress:
        print(f"  performance prediction on {pp['rows']} snapshots done ({time.time() - t0:.0f} s)", flush=True)
    n = len(table)
    pick = np.arange(n) if n <= PCA_MAX_ROWS else np.sort(np.random.default_rng(SNAPSHOT_SEED).choice(n, PCA_MAX_ROWS, replace=False))
    reps = {name: representations(m.encoder, _np(table, "params")[pick], device=device) for name, m in models.items()}
    rows = split_rows(table, kind, split_seed, scheme)
    found = write_findings(folder, config=cfg, trials=trials, best=best, encoders=encoders, zoo=zoo, kind=kind,
                           scheme=scheme, split_seed=split_seed,
                           split_rows={s: len(rows[s]) for s in ("train", "val", "ood_train", "ood_test")},
                           performance=pp, skipped=skipped)

    # draw, into a temporary folder that replaces figures/ whole once every figure and section is done:
    # a report that fails midway leaves the earlier figures/ (or none), never a mix
    trial_dicts = {enc: [asdict(r) for r in recs] for enc, recs in trials.items()}
    studies = sweep_studies(sweep_dir, encoders)
    tasks = zoo_kind(kind).task
    colour = tasks.colour(_np(table, zoo_kind(kind).task_column)[pick])
    task_label, cmap = tasks.label, tasks.colour_map
    with replacing_dir(folder.figures) as fig_dir:
        figures = {
            "emulation_loss": fig_emulation_loss(trial_dicts, best, encoders, fig_dir / "emulation_loss.png"),
            "emulation_curves": fig_emulation_curves(trial_dicts, best, fig_dir / "emulation_curves.png"),
            "search_history": fig_search_history(studies, fig_dir / "search_history.png"),
        }
        with _reading(folder.downstream_json):
            figures["downstream"] = fig_downstream(doc, fig_dir / "downstream.png") if doc else None
        figures["performance_prediction"] = fig_performance(pp, fig_dir / "performance_prediction.png")
        figures["pca"] = fig_pca(reps, colour, task_label, cmap, _np(table, "accuracy")[pick], fig_dir / "pca.png")

        # sections, from the stored data
        with _reading(folder.downstream_json):
            downstream_lines = _downstream_section(doc, sweep_dir)
        lines = [f"# Report: sweep `{sweep_dir.name}`", "", *verdict_section(found["verdict"]),
                 _zoo_line(found), "", *schedule_lines(found.get("schedule")), *departures_section(found["departures"]),
                 *_emulation_section(found, folder, encoders, figures),
                 "", *search_section(studies, folder),
                 "", *downstream_lines,
                 "", *performance_section(found["performance"], kind),
                 "", "## Representations", ""]
        lines += ([f"2-D PCA of each encoder's representations of {len(pick)} snapshots, coloured by task and by accuracy.",
                   "", f"![pca]({FIGURES}/pca.png)"] if figures["pca"] else ["No loadable encoder checkpoints."])
        if skipped:
            lines += ["", "Skipped encoders: " + "; ".join(f"{k} ({v})" for k, v in skipped.items())]
    path = folder.report_md
    atomic_write_text(path, "\n".join(lines) + "\n")
    write_summary_md(sweep_dir)
    if progress:
        made = [p.name for p in figures.values() if p]
        print(f"report: {path} with {len(made)} figures ({', '.join(made)}) in {time.time() - t0:.0f} s", flush=True)
    return path


@contextmanager
def _reading(source: Path):
    """What drawing or printing from a stored file (``downstream.json``) raises when the file is valid
    JSON of the wrong form becomes one line naming the file (a ResultsError: exit code 2)."""
    try:
        yield
    except (KeyError, TypeError, AttributeError, ValueError, IndexError) as e:
        raise ResultsError(f"{source}: not of the form the report reads ({e.__class__.__name__}: {e}); "
                           "the report was not written (run `python -m rnnray.evaluate` to write the file again)") from e


def _zoo_line(found) -> str:
    rows, budget = found["split_rows"], found.get("budget")
    return (f"Zoo `{found['zoo']}` ({found['zoo_kind']}): {sum(rows.values())} snapshots; "
            + (f"split seed {found['split_seed']}: " if found["split"] == "ours" else "the authors' split: ")
            + ", ".join(f"{s} {rows[s]}" for s in ("train", "val", "ood_train", "ood_test")) + " snapshots. "
            + (f"Budget {budget:,} parameters ± {found.get('tolerance') or 0:.0%}." if budget else ""))


def _emulation_section(found, folder: SweepFolder, encoders, figures) -> list[str]:
    lines = ["## Emulation loss", "",
             "Total variation between the RNN's and the emulator's next-step distributions (lower is better). "
             "'Selected' is each encoder's best-validation trial (its OOD loss at that same checkpoint); the spread is "
             "over the encoder's finished trials.", "",
             *emulation_table(found["emulation"]),
             *final_table(read_final(folder), encoders),
             *oracle_section(read_oracles(folder), found["oracles"]),
             *pairs_section(found.get("pairs")),
             "", f"![emulation loss]({FIGURES}/emulation_loss.png)"]
    if figures["emulation_curves"]:
        lines += ["", f"![emulation curves]({FIGURES}/emulation_curves.png)"]
    return lines


def _downstream_section(doc, sweep_dir) -> list[str]:
    lines = ["## Downstream tasks", ""]
    if not doc:
        return lines + [f"No `{DOWNSTREAM_FILE}` yet: run `python -m rnnray.evaluate {sweep_dir}`."]
    sup = doc.get("baselines", {}).get("supervised", {})
    ents = list(doc.get("encoders", {}).items()) + [
        ("baseline: random", doc.get("baselines", {}).get("random", {})),
        (f"baseline: supervised {sup.get('encoder', '')} (end to end)", sup)]
    return lines + [
        f"A small MLP on frozen, L2-normalised representations, trained on the train split plus half of the OOD "
        f"tasks ({doc['rows'].get('fit')} snapshots), tested on the other OOD half ({doc['rows'].get('ood_test')}) "
        f"and on validation ({doc['rows'].get('val')}); mean ± std over predictor seeds {doc.get('seeds')}. "
        "Baselines: random unit vectors (chance), and an encoder trained end to end on each target.",
        "", *([chance_text(doc), ""] if doc.get("chance") else []),
        "OOD-test half:", "", *downstream_table(doc, ents), "",
        "Validation:", "", *downstream_table(doc, ents, split="val"),
        *effective_dim_lines(doc), *final_seeds_lines(doc), "",
        f"![downstream]({FIGURES}/downstream.png)"]


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
        from ..paths import check_writable

        check_writable(sweep_dir, "results")  # report.md, figures/ (and downstream.json) go into it
        path = write_report(sweep_dir, device=args.device, max_snapshots=args.max_snapshots, n_samples=args.samples,
                            evaluate_missing=not args.no_evaluate)
    print(f"report: {path}")

