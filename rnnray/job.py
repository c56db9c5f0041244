"""The main job, ``python -m rnnray.sweep SWEEP.yaml``: the sweep (zoo if needed, one Tune
experiment per encoder, the results store), then the downstream evaluation of every encoder's best
trial and the report. It sits above every stage it runs, so no stage imports one after it."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from .cli import UsageError, friendly_errors
from .runtime.console import quiet_console
from .results.folder import SweepFolder
from .sweep import EXIT_INTERRUPTED, SweepConfig, SweepInterrupted, check_trackers, load_sweep, run_sweep
from .sweep.progress import JobProgress, reporting


def after_sweep(sweep_dir: Path, cfg: SweepConfig) -> None:
    """The label oracles (:mod:`rnnray.analysis.oracles`), the downstream evaluation of every encoder's
    best trial, then the report.

    A failure here is reported and leaves the finished sweep intact: both can be re-run with
    ``python -m rnnray.evaluate`` / ``python -m rnnray.report`` on the sweep folder.
    """
    from .analysis.oracles import sweep_oracles
    from .sweep import progress

    try:
        sweep_oracles(sweep_dir, cfg)
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
        evaluate_sweep(sweep_dir, seeds=tuple(ds.seeds), config=PredictorConfig(steps=ds.steps, hidden=ds.hidden),
                       supervised_encoder=ds.supervised_encoder)
        progress.run_done("downstream")
        progress.start("report")
        write_report(sweep_dir, evaluate_missing=False)
        progress.run_done("report")
    except Exception as e:  # keep the sweep's results even if the evaluation breaks
        print(f"warning: downstream evaluation / report failed ({e.__class__.__name__}: {e}); "
              f"re-run with `python -m rnnray.evaluate {sweep_dir}` and `python -m rnnray.report {sweep_dir}`", file=sys.stderr)


def machine_memory() -> int:
    """This machine's physical memory in bytes, or the largest node's memory once Ray is running."""
    import ray

    if ray.is_initialized():
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        return int(max((n.get("Resources", {}).get("memory", 0) for n in nodes), default=0))
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def memory_estimate(cfg: SweepConfig) -> dict[str, int]:
    """Bytes one zoo actor and one training worker hold at their peak (a zoo of ``rows`` rows, each
    ``row_bytes``; the Arrow table and the numpy copies side by side count twice)."""
    from .zoo.storage import read_manifest, row_bytes
    from .zoo.builder import layout_for
    from .zoo.preflight import actor_bytes

    if isinstance(cfg.zoo, str):
        m = read_manifest(cfg.zoo)
        # an imported zoo has no build config: its spec holds stored_sequences (and seq_len)
        kind, rows, zcfg = m["kind"], int(m["rows"]), m.get("config") or m.get("spec") or {}
        params, stored, seq_len = int(m["layout"]["num_params"]), int(zcfg.get("stored_sequences", 100)), int(zcfg.get("seq_len", 42))
        actor = 0
    else:
        z = cfg.zoo
        kind, rows, stored, seq_len = z.kind, z.runs * len(z.snapshots), z.stored_sequences, getattr(z, "seq_len", 42)
        params = layout_for(kind).num_params
        actor = actor_bytes(z)
    eval_seqs = min(stored, cfg.train.eval_sequences)
    worker = 2 * (rows * row_bytes(kind, params, stored, seq_len) // cfg.resources.workers
                  + rows * row_bytes(kind, params, eval_seqs, seq_len))
    return {"actor": actor, "worker": worker}


def preflight(cfg: SweepConfig, resume: str | bool = False) -> None:
    """What can be checked before Ray starts and before anything is written: every path the sweep
    will write (results, the zoo to build, the folder to resume, a local MLflow store) can be written
    (tried), every folder it names is of the expected kind and inside none of another kind, a zoo to
    build is apart from the results and meets no other zoo at its path, the zoo's rows fit
    one node's memory in a zoo actor and in a training worker, and a zoo to build fits the disk
    (:mod:`rnnray.zoo.preflight`). One line naming the field, or nothing."""
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
    from .zoo.preflight import check_actor, check_output

    need, have = memory_estimate(cfg), machine_memory()
    gib = 2**30
    if not isinstance(cfg.zoo, str):
        check_actor(cfg.zoo, have, "zoo.")
    if have and need["worker"] > have:
        raise UsageError(f"zoo: a training worker would hold about {need['worker'] / gib:.1f} GiB of zoo rows "
                         f"(runs x snapshots x row size), more than the {have / gib:.1f} GiB of the largest node; "
                         "use fewer runs or stored_sequences, or more resources.workers")
    if not isinstance(cfg.zoo, str):
        check_output(cfg.zoo, prefix="zoo.")  # its shards on the disk, its run ids in this driver's memory


def run_job(cfg: SweepConfig, resume: str | bool = False, progress: bool = True, verbose: int = 1,
            dashboard: str | None = None, checked: bool = False) -> Path:
    """Sweep, downstream evaluation, report; prints where everything landed. Returns the sweep folder.
    ``checked``: :func:`preflight` already ran (against this machine, before Ray started)."""
    t0 = time.time()
    if not checked:
        preflight(cfg, resume)
    sweep_dir = run_sweep(cfg, resume=resume, progress=progress, verbose=verbose, dashboard=dashboard)
    after_sweep(sweep_dir, cfg)
    from .report.summary import write_summary_md

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
    p.add_argument("--quiet", action="store_true", help="no Tune progress table")
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
            ctx = ray.init(address=args.address, namespace="rnnray", log_to_driver=not args.quiet)
            dashboard = getattr(ctx, "dashboard_url", None)
        try:
            with reporting(plan):
                sweep_dir = run_job(cfg, resume=args.resume, progress=not args.quiet, verbose=0 if args.quiet else 1,
                                    dashboard=dashboard, checked=checked)
        except SweepInterrupted as e:
            print(f"interrupted ({e}); continue with: python -m rnnray.sweep {path} --resume {e.sweep_dir}",
                  file=sys.stderr)
            sys.exit(EXIT_INTERRUPTED)
    if not json.loads(SweepFolder(sweep_dir).best_json.read_text()):
        print(f"error: no trial of any encoder finished; the reasons are in {sweep_dir}/trials/*/*/trial.json",
              file=sys.stderr)
        sys.exit(1)
