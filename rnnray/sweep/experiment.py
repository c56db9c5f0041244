"""One encoder's Ray Tune experiment: Optuna TPE with the paper preset first, ASHA, resumable."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

from ..results.atomic import atomic_write_json, atomic_write_text
from ..results.folder import SweepFolder
from ..train.plan import ZooPlan
from .settings import SweepConfig, tpe_sampler
from .space import _plain, define_by_run, encoder_space, is_paper_config
from .studies import journal_storage
from .timeline import timeline_callback
from .tracking import tracker_callbacks
from . import progress
from .summary import collect_trials
from .trial import TrialSetup, _trial_name, run_trial, trial_record

TUNE_METRIC = "val_loss"


class SweepInterrupted(Exception):
    """Tune returned from an interrupted experiment (SIGINT): the sweep stops, resumable."""

    def __init__(self, message: str, sweep_dir: Path):
        super().__init__(message)
        self.sweep_dir = sweep_dir


def fit(tuner):
    """``tuner.fit()``, and whether a stop signal (SIGINT, or Tune's SIGUSR1) ended it early.

    On a stop signal Tune stops the running trials and marks them TERMINATED, as if they had run to
    their end, so the trial counts cannot tell an interrupted experiment from a finished one (a
    single running trial, cut at any step, would be recorded as finished). Tune's handler, once it
    fires, puts back the SIGINT handler it replaced; when the experiment ends by itself its own
    handler stays installed (and would swallow the next Ctrl-C), so the one we had is put back here
    either way."""
    import os
    import signal
    import threading

    before = signal.getsignal(signal.SIGINT)
    watched = threading.current_thread() is threading.main_thread() and not int(os.getenv("TUNE_DISABLE_SIGINT_HANDLER", "0"))
    grid = tuner.fit()
    interrupted = watched and signal.getsignal(signal.SIGINT) is before
    if watched:
        signal.signal(signal.SIGINT, before)
    return grid, interrupted


def run_encoder(cfg: SweepConfig, encoder: str, zoo: ZooPlan, sweep_dir: Path, resumed: bool, verbose: int,
                point: dict | None = None):
    """One Ray Tune experiment for one encoder (trial 0: ``point``, its paper preset); returns its trial records."""
    import ray.tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    folder = SweepFolder(sweep_dir)
    exp_dir = folder.tune
    exp_name = encoder
    done_marker = folder.done_marker(encoder)
    if done_marker.exists():
        progress.run_done("search", cfg.tune.samples_per_encoder)
        return collect_trials(folder, encoder)
    progress.start("search")
    space = encoder_space(cfg, encoder, zoo.kind)
    setup = TrialSetup(encoder=encoder, sweep=cfg, zoo=zoo, folder=str(sweep_dir.resolve()))
    trainable = ray.tune.with_parameters(run_trial, setup=setup)
    # The trial itself only coordinates: it reserves no CPU (a little memory, since a bundle cannot be
    # empty), so its Ray Train workers and their Ray Data reads get every CPU; even 0.01 CPU here
    # deadlocks a full machine, where the workers plus one 1-CPU read task need all of them.
    from ray.tune.execution.placement_groups import PlacementGroupFactory

    from ray.tune.trainable.function_trainable import wrap_function

    # a named class, so the dashboard and `ps` list "EmulationTrial" (repr: the encoder) rather than
    # Tune's anonymous "ImplicitFunc"
    trainable = wrap_function(trainable, name=f"EmulationTrial({encoder})")
    trainable = ray.tune.with_resources(trainable, PlacementGroupFactory([{"CPU": 0, "memory": 64 * 2**20}]))
    trainable = type("EmulationTrial", (trainable,), {})
    path = exp_dir / exp_name
    if resumed and ray.tune.Tuner.can_restore(str(path.resolve())):
        tuner = ray.tune.Tuner.restore(str(path.resolve()), trainable, resume_errored=True)
    else:
        searcher = OptunaSearch(
            space=functools.partial(define_by_run, space=_plain(space)),
            metric=TUNE_METRIC,
            mode="min",
            sampler=tpe_sampler(cfg.tune),
            points_to_evaluate=[point] if point else None,
            storage=journal_storage(folder),  # the study outlives the sweep (optuna-dashboard, importances)
            study_name=encoder,
        )
        scheduler = None
        if cfg.tune.scheduler == "asha":
            evals = cfg.train.evaluations
            # max_t one past the last evaluation: a trial that trains to the end returns by itself,
            # so its Ray Train run shuts down cleanly instead of being stopped by the scheduler
            scheduler = ASHAScheduler(
                time_attr="training_iteration",
                max_t=evals + 1,
                grace_period=min(cfg.tune.grace_period, evals),
                reduction_factor=cfg.tune.reduction_factor,
            )
        tuner = ray.tune.Tuner(
            trainable,
            tune_config=ray.tune.TuneConfig(
                metric=TUNE_METRIC,
                mode="min",
                search_alg=searcher,
                scheduler=scheduler,
                num_samples=cfg.tune.samples_per_encoder,
                max_concurrent_trials=cfg.tune.max_concurrent_trials,
                trial_name_creator=functools.partial(_trial_name, encoder),
                trial_dirname_creator=functools.partial(_trial_name, encoder),
            ),
            run_config=ray.tune.RunConfig(
                name=exp_name,
                storage_path=str(exp_dir.resolve()),
                failure_config=ray.tune.FailureConfig(max_failures=cfg.tune.max_failures),
                verbose=verbose,
                callbacks=tracker_callbacks(cfg, encoder, folder) + progress.tune_callback("search")
                + [timeline_callback(folder, cfg.tune.max_concurrent_trials, "search", encoder)],
            ),
        )
    grid, interrupted = fit(tuner)
    # Ctrl-C (SIGINT) makes Tune stop its trials, save its state and return as if it had finished:
    # an interrupted experiment must stay resumable (no records, no DONE), not be taken for a
    # finished one, even when every trial it had started counts as ended
    ended = grid.num_terminated + grid.num_errors
    if interrupted or ended < cfg.tune.samples_per_encoder:
        raise SweepInterrupted(f"{encoder}: {ended} of {cfg.tune.samples_per_encoder} trials ended or stopped", sweep_dir)
    return record_search(folder, cfg, encoder, list(grid), point)


def record_search(folder: SweepFolder, cfg: SweepConfig, encoder: str, results, point: dict | None):
    """Every ended search trial of ``encoder`` (Tune Results) as its ``trial.json``, then the
    encoder's ``DONE`` marker, last; returns the records. Both schedules record through here."""
    for result in results:
        rec = trial_record(result, encoder, cfg)
        rec["paper_config"] = is_paper_config(rec["config"], point)
        own = folder.train_result(encoder, rec["trial_id"])
        if own.is_file():  # where the workers ran; the checkpoint a restarted run continued from
            mine = json.loads(own.read_text())
            rec["placement"] = mine.get("placement", [])
            rec["resumed_from_step"] = mine.get("resumed_from_step")
        atomic_write_json(folder.trial_record(encoder, rec["trial_id"]), rec)
        if rec["status"] == "failed":  # one line of our own, whatever Tune and Ray printed above it
            print(f"{encoder}: trial {rec['trial_id']} failed: {rec.get('reason', 'no reason recorded')}", file=sys.stderr, flush=True)
    atomic_write_text(folder.done_marker(encoder), "finished\n")
    return collect_trials(folder, encoder)
