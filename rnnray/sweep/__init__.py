"""The sweep of ``python -m rnnray.sweep SWEEP.yaml`` (the main job, :mod:`rnnray.job`): compare encoders
under equal parameter budgets with Ray Tune.

What happens:
1. the sweep file is validated (pydantic; one line and exit 2 for anything wrong);
2. the zoo is built with Ray Data if its directory holds no finished zoo;
3. every encoder's parameter budget is checked once, so an impossible budget fails before any work;
4. the trials, in one Ray Tune experiment (``tune.schedule: one_queue``, the default,
   :mod:`.one_queue`) or one per encoder after the other (``per_encoder``): trial 0 of every
   encoder is its preset (the paper's, SPEC.md 5b; ``paper_config: true`` in its record), then
   Optuna's TPE (one study per encoder) proposes the learning rate, the encoder's structural knobs
   and, when ``search:`` lists it, the emulator's ``conditioning`` (define-by-run), after
   ``startup_trials`` random ones (a quarter of the trials, 1 to 10: Optuna's default of 10 would
   make a small sweep a random search); the body's width is solved from the budget inside the
   trial, so every trial of every encoder has the same parameter count within the tolerance; ASHA
   (one per encoder) stops weak trials; each trial launches a Ray Train ``TorchTrainer``
   (``rnnray.train.fit``);
5. once an encoder's search has ended, its best configuration and its paper preset are retrained
   from scratch with ``final.seeds`` new seeds to the full length (:mod:`.final`; ``final/`` and
   ``final.json``: the seeds' losses, mean and 95 % Student-t interval), and ``best.json`` then
   names the best seed of the best configuration; in the one queue these runs, the other
   encoders' trials and the label oracles share the slots, so none waits while work is runnable;
6. the results store is written: per trial ``trial.json`` (config, the emulator's ``conditioning``
   and ``grad_clip_scope``, parameter count, metrics history, best checkpoint, ``paper_config``), and ``summary.csv``, ``summary.md`` (with trial 0's loss and
   the tuning gain), ``best.json`` for the sweep; ``timeline.json``, when each trial held a slot
   (:mod:`.timeline`: the slot utilisation). Ctrl-C stops the sweep resumable (exit 130).

Resuming (``--resume``): the sweep file must agree with the folder's ``sweep.json`` in everything
that changes what is compared (:mod:`.resume`); recorded work is not run again; an unfinished
experiment is restored with ``Tuner.restore`` (finished trials are kept, unfinished and errored
ones are run again from their last checkpoint, the Optuna searchers' state comes back). Ray Tune
does not restore ASHA's rungs; the one queue keeps them itself (:mod:`.rungs`), so a resumed sweep
stops the trials an uninterrupted one would; the per-encoder schedule's early stopping starts
afresh after a resume.

The package, one job per module: :mod:`.settings` (reading the sweep file; its models are
in :mod:`rnnray.config.sweep`), :mod:`.resume` (a resumed sweep is the sweep it continues), :mod:`.space` (search spaces, trial 0, the budget check), :mod:`.trial`
(one trial, its setup resolved once on the driver, and its record), :mod:`.experiment` (one
encoder's Tune experiment), :mod:`.final` (the seeds after the search), :mod:`.one_queue` with :mod:`.queue`
(the searcher), :mod:`.rungs` (the scheduler), :mod:`.recorder` (the store, as work ends), :mod:`.side` (the
oracles' work, handed in), :mod:`.timeline` (slot time), :mod:`.summary` (the sweep's summaries); the folder's layout is
:mod:`rnnray.results.folder`'s. This module runs them.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from pathlib import Path

from ..results.atomic import atomic_write_json
from ..runtime.console import hide_into
from ..runtime.connect import init_ray
from ..results.folder import TRAIN_RESULT, SweepFolder, write_latest
from . import progress as job_progress
from .experiment import TUNE_METRIC, SweepInterrupted, run_encoder
from .final import final_runs, run_final, summarise_final, write_final
from .live import LiveSweep, running
from .one_queue import run_queue
from .resume import check_same_sweep
from .side import SideRuns
from .timeline import record_phase
from .settings import (DownstreamSettings, Range, SearchValue, SweepConfig, TrialResources, TuneSettings, absolute_paths,
                       check_search, load_sweep, startup_trials, tpe_sampler)
from .space import check_budget, define_by_run, encoder_space, is_paper_config, paper_point
from .summary import collect_trials, summarise, sweep_dir_for, write_summary
from .tracking import check_trackers, tracker_callbacks
from .trial import TrialSetup, run_trial, trial_record

EXIT_INTERRUPTED = 130  # what a shell reports for a command ended by Ctrl-C

__all__ = ["EXIT_INTERRUPTED", "TRAIN_RESULT", "TUNE_METRIC", "DownstreamSettings", "Range", "SearchValue", "SweepConfig",
           "SideRuns", "SweepInterrupted", "TrialResources", "TrialSetup", "TuneSettings", "absolute_paths", "check_budget", "check_search",
           "check_trackers", "tracker_callbacks",
           "collect_trials",
           "define_by_run", "encoder_space", "final_runs", "run_final", "summarise_final", "write_final", "ensure_zoo", "is_paper_config", "load_sweep",
           "paper_point", "run_encoder", "run_sweep", "run_trial", "startup_trials", "summarise", "sweep_dir_for",
           "tpe_sampler", "trial_record", "write_summary"]


def ensure_zoo(cfg: SweepConfig, progress: bool = True) -> dict:
    from .. import zoo

    if isinstance(cfg.zoo, str):
        return zoo.verify(cfg.zoo, checksums=True)
    if not (Path(cfg.zoo.path).expanduser() / "manifest.json").exists():
        print(f"building zoo {cfg.zoo.path} ({cfg.zoo.kind}, {cfg.zoo.runs} RNNs, {cfg.zoo.steps} steps) with Ray Data ...", flush=True)
    return zoo.build(cfg.zoo, progress=progress)


def _http(url: str | None) -> str | None:
    if not url:
        return None
    return url if url.startswith("http") else f"http://{url}"


def encoder_record(cfg: SweepConfig) -> dict[str, dict]:
    """What each encoder of the sweep was when it ran: where its class lives and what it declared
    (kind, invariance), so the report groups a plug-in by its kind without importing it again."""
    from ..encoders.registry import get_spec

    return {n: {"reference": get_spec(n).reference, "kind": get_spec(n).kind, "invariant": get_spec(n).invariant,
                "builtin": get_spec(n).builtin} for n in cfg.encoders}


def run_sweep(cfg: SweepConfig, resume: str | bool = False, progress: bool = True, verbose: int = 1,
              dashboard: str | None = None, side_work: Callable[[SweepConfig], SideRuns | None] | None = None) -> Path:
    """Zoo, budget check, the Tune experiment(s) (``tune.schedule``), results store. Returns the sweep folder.

    Everything that can be checked before work starts is (zoo layout, budget, resources), so bad
    input fails in one line before anything is built or written. ``dashboard``: the Ray
    dashboard's address, printed for the user. ``side_work(cfg)``: work the one queue runs beside the
    trials (the job's label oracles; the per-encoder schedule leaves it to the caller), made once
    the zoo exists (its plan reads the zoo, which this builds if needed). The main
    job (:mod:`rnnray.job`) follows this with the downstream evaluation and the report."""
    import ray

    from ..kinds import zoo_kind as kind_entry
    from ..runtime.resources import cluster_shape, fit_request
    from ..train.plan import ZooPlan
    from ..weights import Layout

    check_search(cfg)
    check_trackers(cfg)
    cfg = absolute_paths(cfg)
    manifest = None
    if isinstance(cfg.zoo, str):  # an existing zoo: verified in full (sizes and checksums) up front
        manifest = ensure_zoo(cfg, progress=progress)
        zoo_kind, layout = manifest["kind"], Layout.from_dict(manifest["layout"])
    else:
        zoo_kind, layout = cfg.zoo.kind, kind_entry(cfg.zoo.kind).layout
    counts = check_budget(cfg, zoo_kind, layout)
    points = {enc: paper_point(cfg, enc, zoo_kind, layout) for enc in cfg.encoders}
    t_zoo = time.time()
    if not ray.is_initialized():
        init_ray(worker_nice=cfg.resources.worker_nice)
    r = cfg.resources
    cpus, gpus = fit_request(r.cpus_per_worker, r.gpus_per_worker, "resources: a training worker", cluster_shape())
    if (cpus, gpus) != (r.cpus_per_worker, r.gpus_per_worker):
        cfg = cfg.model_copy(update={"resources": r.model_copy(update={"cpus_per_worker": cpus, "gpus_per_worker": gpus})})
    if manifest is None:
        manifest = ensure_zoo(cfg, progress=progress)
    zoo_time = (t_zoo, time.time())
    job_progress.phase_done("zoo")
    zoo = ZooPlan.open(cfg.zoo_path, cfg.train.split_seed, manifest=manifest, split=cfg.train.split)  # once, for every trial
    side = side_work(cfg) if side_work is not None and cfg.tune.schedule == "one_queue" else None
    sweep_dir, resumed = sweep_dir_for(cfg, resume)
    if resumed:
        from ..results.atomic import remove_leftovers

        check_same_sweep(SweepFolder(sweep_dir), cfg)  # the job checked it before Ray; the Python API here
        remove_leftovers(sweep_dir, recursive=True)  # left by a killed driver mid-write
    sweep_dir.mkdir(parents=True, exist_ok=True)
    if not resumed:
        atomic_write_json(SweepFolder(sweep_dir).sweep_json, {"config": cfg.model_dump(mode="json"), "zoo_kind": zoo_kind,
                                                     "created": dt.datetime.now().isoformat(timespec="seconds"),
                                                     "default_param_counts": counts, "encoders": encoder_record(cfg)})
    write_latest(Path(cfg.results).expanduser(), sweep_dir)
    folder = SweepFolder(sweep_dir)
    record_phase(folder, "zoo", *zoo_time)
    hide_into(folder.hidden_console)  # with the quiet console on (the CLI's default)
    print(f"sweep folder: {sweep_dir}", flush=True)
    print(f"TensorBoard:  tensorboard --logdir {folder.tune}", flush=True)
    url = _http(dashboard)
    if url:
        print(f"Ray dashboard: {url}", flush=True)
    t0 = time.time()
    with running(LiveSweep(cfg, folder, points, side)):  # what the pickled parts of Tune's experiment ask
        if cfg.tune.schedule == "one_queue":
            print(f"\n=== {', '.join(cfg.encoders)}: {cfg.tune.samples_per_encoder} trials each at {cfg.budget:,} ± "
                  f"{cfg.tolerance:.0%} parameters, their final seeds{' and ' + side.phase if side else ''}, one queue "
                  f"of {cfg.tune.max_concurrent_trials} slots ===", flush=True)
            run_queue(cfg, zoo, folder, resumed, verbose, points, side)
        else:
            _per_encoder(cfg, zoo, sweep_dir, resumed, verbose, points)
    print(f"sweep finished in {time.time() - t0:.0f} s", flush=True)
    return sweep_dir


def _per_encoder(cfg: SweepConfig, zoo, sweep_dir: Path, resumed: bool, verbose: int, points: dict) -> None:
    """``tune.schedule: per_encoder``: per encoder, its search experiment, then its final runs' experiment."""
    folder = SweepFolder(sweep_dir)
    records = {}
    for enc in cfg.encoders:
        print(f"\n=== {enc}: {cfg.tune.samples_per_encoder} trials at {cfg.budget:,} ± {cfg.tolerance:.0%} parameters ===", flush=True)
        records[enc] = run_encoder(cfg, enc, zoo, sweep_dir, resumed, verbose, points[enc])
        if cfg.final.seeds:
            run_final(cfg, enc, zoo, sweep_dir, resumed, verbose, records[enc])
            write_final(folder, cfg.encoders)
        rows, best = summarise(sweep_dir, cfg, records)
        write_summary(sweep_dir, rows, best, cfg)
    rows, best = summarise(sweep_dir, cfg, records)
    write_summary(sweep_dir, rows, best, cfg)
