"""The sweep's work as one Ray Tune experiment (``tune.schedule: one_queue``, the default): every
encoder's search trials, each encoder's final seeds once its search has ended, and the side runs
(the label oracles), in one queue, so no slot waits while any work is runnable.

The parts: :class:`~rnnray.sweep.queue.SweepSearcher` proposes (Optuna per encoder),
:class:`~rnnray.sweep.rungs.EncoderRungs` stops (ASHA per encoder, rungs kept across resume),
:func:`run_queued` runs a trial by its role, :class:`~rnnray.sweep.recorder.Recorder` writes the
results store as work ends, :func:`~rnnray.sweep.timeline.timeline_callback` times the slots.
``--resume`` restores the experiment (``tune/queue``): ended trials are kept, unfinished and
errored ones continue from their last checkpoint, the searcher's state comes back with Tune's.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass

from ..results.folder import SweepFolder
from ..train.plan import ZooPlan
from . import progress
from .experiment import SweepInterrupted, fit
from .final import run_final_trial
from .settings import SweepConfig, tpe_sampler
from .side import SideRuns
from .space import _plain, define_by_run, encoder_space
from .studies import journal_storage
from .tracking import tracker_callbacks
from .timeline import ROLE_PHASE, timeline_callback
from .trial import TrialSetup, params_of, run_trial

QUEUE = "queue"  # the experiment's folder under tune/
COORDINATOR = {"CPU": 0, "memory": 64 * 2**20}  # a search or final trial only coordinates (see experiment.py)


@dataclass(frozen=True)
class QueueSetup:
    """What every trial of the queue shares, resolved once on the driver (sent once, by reference)."""

    sweep: SweepConfig
    zoo: ZooPlan
    folder: str
    side: SideRuns | None

    def trial(self, encoder: str) -> TrialSetup:
        return TrialSetup(encoder=encoder, sweep=self.sweep, zoo=self.zoo, folder=self.folder)


def run_queued(config: dict, setup: QueueSetup) -> None:
    """The queue's Tune function trainable: a search trial, a final run or a side run, by its role."""
    role = config["role"]
    if role == "search":
        return run_trial(params_of(config), setup.trial(config["encoder"]))
    if role == "final":
        return run_final_trial(config, setup.trial(config["encoder"]))
    import ray.tune

    result = setup.side.run(config, setup.side.payload)
    ray.tune.report({"side_result": json.dumps(result), "val_loss": result.get("best_val_loss", math.nan)})


def trial_resources(config: dict, side: dict):
    """A side run holds its own resources; a search or final trial only coordinates its Ray Train workers."""
    from ray.tune.execution.placement_groups import PlacementGroupFactory

    if config.get("role") == "oracle":
        return PlacementGroupFactory([{k: v for k, v in side.items() if v}])
    return PlacementGroupFactory([COORDINATOR])


def trial_name(trial) -> str:
    return f"{trial.config.get('encoder') or trial.config.get('role')}_{trial.trial_id}"


def _trial_repr(trainable) -> str:
    config = getattr(trainable, "config", None) or {}
    return f"EmulationTrial({config.get('encoder') or config.get('role', '')})"


def _role_phase(trial) -> str:
    return ROLE_PHASE[trial.config.get("role", "search")]


def _searcher(cfg: SweepConfig, folder: SweepFolder, zoo_kind: str, points: dict, side: SideRuns | None):
    from ray.tune.search.optuna import OptunaSearch

    from .queue import TUNE_METRIC, SweepSearcher

    optuna = {enc: OptunaSearch(space=functools.partial(define_by_run, space=_plain(encoder_space(cfg, enc, zoo_kind))),
                                metric=TUNE_METRIC, mode="min", sampler=tpe_sampler(cfg.tune),
                                points_to_evaluate=[points[enc]] if points.get(enc) else None,
                                storage=journal_storage(folder), study_name=enc)
              for enc in cfg.encoders}
    return SweepSearcher(cfg, str(folder.path), optuna, side.configs if side else None)


def most_trials(cfg: SweepConfig, side: SideRuns | None) -> int:
    """An upper bound of the queue's trials (the searcher says when it has proposed the last)."""
    configs = 2 if cfg.final.paper_preset else 1
    return len(cfg.encoders) * (cfg.tune.samples_per_encoder + configs * cfg.final.seeds) + (len(side.configs) if side else 0)


def run_queue(cfg: SweepConfig, zoo: ZooPlan, folder: SweepFolder, resumed: bool, verbose: int, points: dict,
              side: SideRuns | None = None) -> None:
    """Run (or resume) the sweep's one Tune experiment until every encoder's search and final runs
    and the side runs are recorded; raises :class:`SweepInterrupted` when Tune returned before (Ctrl-C)."""
    import ray.tune
    from ray.tune.trainable.function_trainable import wrap_function

    from . import recorder as rec
    from .queue import TUNE_METRIC
    from .rungs import EncoderRungs

    recorder = rec.Recorder(cfg, folder, points, side)
    recorder.setup()
    if recorder.unfinished() is None:  # a finished sweep, resumed: nothing to run
        for phase in ("search", "final", "oracles"):
            progress.phase_done(phase)
        return
    setup = QueueSetup(sweep=cfg, zoo=zoo, folder=str(folder.path.resolve()), side=side)
    trainable = wrap_function(ray.tune.with_parameters(run_queued, setup=setup), name="EmulationTrial")
    side_resources = {"CPU": cfg.resources.cpus_per_worker, "GPU": cfg.resources.gpus_per_worker}  # one worker's
    trainable = ray.tune.with_resources(trainable, functools.partial(trial_resources, side=side_resources))
    # one class for every role; its repr (the dashboard's actor name) says which encoder's trial it is
    trainable = type("EmulationTrial", (trainable,), {"__repr__": _trial_repr})
    path = (folder.tune / QUEUE).resolve()
    progress.start("search")
    if resumed and ray.tune.Tuner.can_restore(str(path)):
        tuner = ray.tune.Tuner.restore(str(path), trainable, resume_errored=True)
    else:
        scheduler = EncoderRungs(cfg, str(folder.rungs_json)) if cfg.tune.scheduler == "asha" else None
        tuner = ray.tune.Tuner(
            trainable,
            tune_config=ray.tune.TuneConfig(
                metric=TUNE_METRIC, mode="min", search_alg=_searcher(cfg, folder, zoo.kind, points, side),
                scheduler=scheduler, num_samples=most_trials(cfg, side),
                max_concurrent_trials=cfg.tune.max_concurrent_trials,
                trial_name_creator=trial_name, trial_dirname_creator=trial_name),
            run_config=ray.tune.RunConfig(
                name=QUEUE, storage_path=str(folder.tune.resolve()),
                failure_config=ray.tune.FailureConfig(max_failures=cfg.tune.max_failures), verbose=verbose,
                callbacks=[recorder, timeline_callback(folder, cfg.tune.max_concurrent_trials)]
                + tracker_callbacks(cfg, None, folder) + progress.tune_callback(_role_phase)),
        )
    _, interrupted = fit(tuner)  # puts our SIGINT handler back: Tune's would swallow the next Ctrl-C
    left = (rec.current() or recorder).unfinished()
    if left is None and interrupted:  # Ctrl-C as the last run ended: stop all the same (resume goes on)
        left = "every run had ended; stopped before the downstream tasks"
    if left is not None:
        raise SweepInterrupted(left, folder.path)

