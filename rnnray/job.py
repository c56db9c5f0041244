"""The main job, ``python -m rnnray.sweep SWEEP.yaml``: the sweep (zoo if needed, its trials, final
seeds and label oracles in one Tune queue, the results store), then the downstream evaluation of every encoder's best
trial and the report. It sits above every stage it runs, so no stage imports one after it."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from .cli import friendly_errors
from .runtime.console import quiet_console
from .runtime.connect import init_ray
from .results.folder import SweepFolder
from .sweep import EXIT_INTERRUPTED, SweepConfig, SweepInterrupted, check_trackers, load_sweep, run_sweep
from .sweep.preflight import check_sweep, memory_estimate  # noqa: F401  (memory_estimate: its old home)
from .sweep.progress import JobProgress, reporting
from .sweep.resume import check_resume
from .sweep.summary import require_results
from .errors import RunFailed


def after_sweep(sweep_dir: Path, cfg: SweepConfig) -> None:
    """The label oracles (:mod:`rnnray.analysis.oracles`), the downstream evaluation of every encoder's
    best trial, then the report.

    A failure here is reported and leaves the finished sweep intact: both can be re-run with
    ``python -m rnnray.evaluate`` / ``python -m rnnray.report`` on the sweep folder.
    """
    from .analysis.oracles import sweep_oracles
    from .sweep import progress
    from .sweep.timeline import phase

    folder = SweepFolder(sweep_dir)
    try:
        if cfg.oracles.modes and cfg.final.seeds and not folder.oracles_json.is_file():  # not run in the sweep's queue
            with phase(folder, "oracles"):
                sweep_oracles(sweep_dir, cfg)
        else:
            sweep_oracles(sweep_dir, cfg)  # kept when current (the queue ran them, or a resumed sweep)
    except Exception as e:  # the report then has no oracle table; the sweep stays intact
        print(f"warning: the label oracles failed ({e.__class__.__name__}: {e}); run them with "
              f"`python -m rnnray.label_oracle` on the sweep file", file=sys.stderr)
    if not cfg.downstream.enabled:
        return
    from .analysis.downstream import PredictorConfig
    from .analysis.evaluate import evaluate_sweep
    from .report import write_report

    try:
        ds = cfg.downstream
        progress.start("downstream")
        with phase(folder, "downstream"):
            evaluate_sweep(sweep_dir, seeds=tuple(ds.seeds), config=PredictorConfig(steps=ds.steps, hidden=ds.hidden),
                           supervised_encoder=ds.supervised_encoder)
        progress.run_done("downstream")
        progress.start("report")
        with phase(folder, "report"):
            write_report(sweep_dir, evaluate_missing=False)
        progress.run_done("report")
    except Exception as e:  # keep the sweep's results even if the evaluation breaks
        print(f"warning: downstream evaluation / report failed ({e.__class__.__name__}: {e}); "
              f"re-run with `python -m rnnray.evaluate {sweep_dir}` and `python -m rnnray.report {sweep_dir}`", file=sys.stderr)


def preflight(cfg: SweepConfig, resume: str | bool = False) -> None:
    """What can be checked before Ray starts and before anything is written: every path the sweep
    will write (results, the zoo to build, the folder to resume, a local MLflow store) can be written
    (tried), every folder it names is of the expected kind and inside none of another kind, a zoo to
    build is apart from the results and meets no other zoo at its path, a sweep to resume is this one
    (:mod:`rnnray.sweep.resume`), every size and resource request fits the machine, or once connected
    the cluster (:mod:`rnnray.sweep.preflight`), and every plug-in encoder keeps the contract on a few
    of the zoo's RNNs (:mod:`rnnray.sweep.plugins`). One line naming the field or the encoder, or nothing."""
    from .paths import check_apart, check_output_dir, expect_kind
    from .sweep.tracking import tracker_folders

    check_output_dir(cfg.results, "results:", ("missing", "empty", "results", "other"))
    if isinstance(cfg.zoo, str):
        expect_kind(cfg.zoo, "zoo:", ("zoo",))  # read below (memory_estimate): its manifest named if unreadable
    else:
        from .zoo.builder import check_destination

        check_apart(cfg.zoo.path, "zoo.path:", cfg.results, "results:")
        check_destination(cfg.zoo, "zoo.path:")  # writable, and no other zoo there
    if isinstance(resume, str) and resume not in ("latest", "last") and Path(resume).exists():
        check_output_dir(resume, "--resume", ("sweep",))
    for folder, field in tracker_folders(cfg):
        check_output_dir(folder, field, ("missing", "empty", "other"))
    check_resume(cfg, resume)  # the folder to continue holds this sweep: the same budget, encoders, zoo, ...
    check_sweep(cfg, resume=bool(resume))
    from .sweep.plugins import check_plugins

    check_plugins(cfg)  # each plug-in encoder tried once on a few of the zoo's RNNs
    from .sweep.preflight import zoo_kind_of, zoo_layout
    from .sweep.space import check_budget

    check_budget(cfg, zoo_kind_of(cfg), zoo_layout(cfg))  # every encoder sized to the budget: arithmetic only


def run_job(cfg: SweepConfig, resume: str | bool = False, progress: bool = True, verbose: int = 1,
            dashboard: str | None = None, checked: bool = False) -> Path:
    """Sweep, downstream evaluation, report; prints where everything landed. Returns the sweep folder.
    ``checked``: :func:`preflight` already ran (against this machine, before Ray started). A sweep
    none of whose trials left a usable checkpoint raises :class:`rnnray.errors.RunFailed`."""
    t0 = time.time()
    if not checked:
        preflight(cfg, resume)
    from .analysis.oracles import queue_oracles

    # one_queue: the label oracles run in the sweep's queue, in slots it leaves idle (planned once the zoo exists)
    sweep_dir = run_sweep(cfg, resume=resume, progress=progress, verbose=verbose, dashboard=dashboard,
                          side_work=queue_oracles)
    from .report.summary import write_summary_md

    try:
        require_results(sweep_dir, cfg)  # no usable trial at all: RunFailed, exit code 1, no oracles or report
    except RunFailed:
        write_summary_md(sweep_dir)  # the trials' table, failures included, for the user to read
        raise
    after_sweep(sweep_dir, cfg)

    folder = SweepFolder(sweep_dir)
    write_summary_md(sweep_dir)
    print(f"\n{folder.summary_md.read_text()}")
    print(f"results:     {sweep_dir}")
    print(f"summary:     {folder.summary_md}")
    print(f"best trials: {folder.best_json}")
    for enc, b in json.loads(folder.best_json.read_text()).items():
        print(f"  {enc:<15} checkpoint {b['checkpoint']}")
    report = folder.report_md
    if report.exists():
        print(f"report:      {report}")
    if folder.hidden_console.exists():
        print(f"Ray's routine output (hidden; --verbose shows it): {folder.hidden_console}")
    print(f"finished in {time.time() - t0:.0f} s")
    return sweep_dir


def job_plan(cfg: SweepConfig) -> JobProgress | None:
    """Print the job's plan and its estimated duration on this machine (:mod:`rnnray.bench.estimate`);
    returns the progress counter the job reports through. None (and a note) when it cannot be measured."""
    from .bench.estimate import estimate_job, plan_lines
    from .kinds import zoo_kind as kind_entry
    from .zoo.preflight import _runs_left

    try:
        if isinstance(cfg.zoo, str):
            from .zoo.storage import read_manifest

            kind, left = read_manifest(cfg.zoo)["kind"], 0
        else:
            kind, left = cfg.zoo.kind, _runs_left(cfg.zoo) or 0
        est = estimate_job(cfg, left, kind_entry(kind).name, float(os.cpu_count() or 1))
    except Exception as e:  # noqa: BLE001 - an estimate must never stop the job
        print(f"(no time estimate: {e.__class__.__name__}: {e})", flush=True)
        return None
    for line in plan_lines(est, cfg):
        print(line, flush=True)
    return JobProgress(est["runs"], est["seconds"])


def default_sweep_file() -> str:
    """``sweeps/probe.yaml``: in the current directory, else the one shipped inside the package."""
    from .paths import shipped_file

    return str(shipped_file(Path("sweeps") / "probe.yaml"))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m rnnray.sweep", description="Sweep RNN-weight encoders under equal parameter budgets.")
    p.add_argument("config", nargs="?", default=None, help="sweep YAML (default: the built-in sweeps/probe.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a field, e.g. tune.samples_per_encoder=2")
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="SWEEP_DIR",
                   help="continue the latest sweep of this name (or the given sweep folder)")
    p.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS or a new local instance)")
    p.add_argument("--quiet", action="store_true",
                   help="no Tune progress table, and no plan, estimate or progress lines (the estimate times a few "
                        "steps of each encoder first)")
    p.add_argument("--verbose", action="store_true",
                   help="also show Ray's routine output (otherwise kept in the sweep folder's console-hidden.log)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    args = p.parse_args(argv)
    with friendly_errors(args.debug), quiet_console(not args.verbose):
        from .paths import shipped_file

        path = str(shipped_file(args.config)) if args.config else default_sweep_file()
        cfg = load_sweep(path, args.set)
        check_trackers(cfg)  # an optional tracker that is not installed: one line, before Ray starts
        checked = not (args.address or os.environ.get("RAY_ADDRESS"))
        if checked:
            preflight(cfg, args.resume)  # this machine's memory; a cluster's is checked once connected
        plan = job_plan(cfg) if checked and not args.quiet else None
        import ray

        dashboard = None
        if not ray.is_initialized():
            ctx = init_ray(args.address, namespace="rnnray", log_to_driver=not args.quiet,
                           worker_nice=cfg.resources.worker_nice)
            dashboard = getattr(ctx, "dashboard_url", None)
        try:
            with reporting(plan):
                run_job(cfg, resume=args.resume, progress=not args.quiet, verbose=0 if args.quiet else 1,
                        dashboard=dashboard, checked=checked)
        except SweepInterrupted as e:
            print(f"interrupted ({e}); continue with: python -m rnnray.sweep {path} --resume {e.sweep_dir}",
                  file=sys.stderr)
            sys.exit(EXIT_INTERRUPTED)
