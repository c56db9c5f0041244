"""Seeds after the search: each encoder's best configuration and its paper preset, retrained from
scratch with ``final.seeds`` new seeds, to the full planned length.

A search picks the configuration with the lowest validation loss among a handful of trials, each
trained once: that minimum is biased low (the winner's curse) and says nothing about how much a
configuration varies from seed to seed. The final runs answer both: new seeds (``first_seed``,
``first_seed + 1``, ...; the search used ``train.seed``), which change the initialisation and the
batch order but never the split, no early stopping, and every run an ordinary Ray Train run
inside a Tune trial, so they run side by side (``tune.max_concurrent_trials``) and an interrupted
sweep resumes them like any trial (``Tuner.restore``). When the best configuration *is* the paper
preset, it is trained once per seed and counts as both.

Each run's record is ``final/ENCODER/TRIAL/trial.json`` (``role``: ``best``, ``paper`` or
``best+paper``; ``seed``; ``source_trial``, the search trial it repeats), and ``final.json`` holds,
per encoder and role, the seeds' best validation and OOD losses with their mean and 95 % Student-t
interval over seeds (:mod:`rnnray.analysis.statistics`).
"""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..results.atomic import atomic_write_json, atomic_write_text
from ..analysis.statistics import mean_interval
from ..results.folder import SweepFolder
from ..results.records import TrialRecord, read_final_runs
from ..train.plan import ZooPlan
from .settings import SweepConfig
from . import progress
from .timeline import timeline_callback
from .tracking import tracker_callbacks
from .trial import TrialSetup, _jsonable, _trial_name, emulation_settings, trial_record

ROLES = ("best", "paper", "best+paper")


def final_runs(cfg: SweepConfig, records: Sequence[TrialRecord | Mapping]) -> list[dict]:
    """The final runs of one encoder, from its search's trial records: one entry per configuration
    (best; paper preset, unless it is the best) and seed."""
    recs = [r if isinstance(r, TrialRecord) else TrialRecord.from_dict(r) for r in records]
    ok = [r for r in recs if r.usable]
    if not ok or cfg.final.seeds == 0:
        return []
    best = min(ok, key=lambda r: r.best_val_loss)
    configs = [("best+paper" if best.paper_config else "best", best)]
    paper = next((r for r in recs if r.paper_config), None)
    if cfg.final.paper_preset and paper is not None and not best.paper_config:
        configs.append(("paper", paper))
    seeds = [cfg.final.first_seed + i for i in range(cfg.final.seeds)]
    return [{"role": role, "seed": s, "source_trial": rec.trial_id, "config": rec.config}
            for role, rec in configs for s in seeds]


def run_final_trial(config: dict, setup: TrialSetup) -> None:
    """Tune function trainable of one final run: the source trial's configuration, a new seed."""
    import ray.tune

    from .. import train

    run = config["final"]
    trial_id = ray.tune.get_context().get_trial_id()
    plan = setup.plan(dict(run["config"]), trial_id, seed=int(run["seed"]))
    result = train.fit(plan, tune_trial=True)
    atomic_write_json(SweepFolder(Path(setup.folder)).final(setup.encoder) / trial_id / "train_result.json",
                      {"trial_id": trial_id, "train_config": plan.train.model_dump(mode="json"), **_jsonable(result)})


def run_final(cfg: SweepConfig, encoder: str, zoo: ZooPlan, sweep_dir: Path, resumed: bool, verbose: int,
              records: Sequence[TrialRecord | Mapping]) -> list[dict]:
    """One Tune experiment with every final run of ``encoder``; returns their records."""
    import ray.tune
    from ray.tune.execution.placement_groups import PlacementGroupFactory
    from ray.tune.trainable.function_trainable import wrap_function

    from .experiment import SweepInterrupted, fit

    folder = SweepFolder(sweep_dir)
    runs = final_runs(cfg, records)
    if folder.final_done_marker(encoder).exists():
        progress.run_done("final", len(runs))
        return collect_final(folder, encoder)
    if not runs:
        return []
    progress.start("final")
    setup = TrialSetup(encoder=encoder, sweep=cfg, zoo=zoo, folder=str(sweep_dir.resolve()))
    trainable = wrap_function(ray.tune.with_parameters(run_final_trial, setup=setup), name=f"FinalRun({encoder})")
    trainable = ray.tune.with_resources(trainable, PlacementGroupFactory([{"CPU": 0, "memory": 64 * 2**20}]))
    trainable = type("FinalRun", (trainable,), {})  # coordinates only, as a search trial does (see experiment.py)
    name = f"{encoder}-final"
    path = folder.tune / name
    if resumed and ray.tune.Tuner.can_restore(str(path.resolve())):
        tuner = ray.tune.Tuner.restore(str(path.resolve()), trainable, resume_errored=True)
    else:
        tuner = ray.tune.Tuner(
            trainable,
            param_space={"final": ray.tune.grid_search(runs)},
            tune_config=ray.tune.TuneConfig(
                num_samples=1, max_concurrent_trials=cfg.tune.max_concurrent_trials,
                trial_name_creator=functools.partial(_trial_name, encoder),
                trial_dirname_creator=functools.partial(_trial_name, encoder)),
            run_config=ray.tune.RunConfig(name=name, storage_path=str(folder.tune.resolve()),
                                          failure_config=ray.tune.FailureConfig(max_failures=cfg.tune.max_failures),
                                          verbose=verbose,
                                          callbacks=tracker_callbacks(cfg, encoder, folder) + progress.tune_callback("final")
                                          + [timeline_callback(folder, cfg.tune.max_concurrent_trials, "final", encoder)]),
        )
    print(f"--- {encoder}: final runs, {len(runs)} ({', '.join(sorted({r['role'] for r in runs}))} x seeds "
          f"{sorted({r['seed'] for r in runs})}) ---", flush=True)
    grid, interrupted = fit(tuner)
    ended = grid.num_terminated + grid.num_errors
    if interrupted or ended < len(runs):
        raise SweepInterrupted(f"{encoder}: {ended} of {len(runs)} final runs ended or stopped", sweep_dir)
    return record_final(folder, cfg, encoder, list(grid))


def record_final(folder: SweepFolder, cfg: SweepConfig, encoder: str, results) -> list[TrialRecord]:
    """Every ended final run of ``encoder`` (Tune Results) as its record under ``final/ENCODER/``,
    then its ``DONE`` marker, last; returns the records. Both schedules record through here."""
    for result in results:
        rec = trial_record(result, encoder, cfg)
        run = (result.config or {}).get("final") or {}
        rec.update({"role": run.get("role"), "seed": run.get("seed"), "source_trial": run.get("source_trial"),
                    "config": run.get("config"), **emulation_settings(run.get("config") or {}, cfg), "final": True})
        atomic_write_json(folder.final_record(encoder, rec["trial_id"]), rec)
        if rec["status"] == "failed":
            print(f"{encoder}: final run {rec['trial_id']} (seed {rec['seed']}) failed: {rec.get('reason')}",
                  file=sys.stderr, flush=True)
    atomic_write_text(folder.final_done_marker(encoder), "finished\n")
    return collect_final(folder, encoder)


def collect_final(folder: SweepFolder, encoder: str) -> list[TrialRecord]:
    """The encoder's final runs, read through the store's typed reader."""
    return read_final_runs(folder, encoder)


def _finite(values) -> list[float]:
    return [float(v) if v is not None and math.isfinite(float(v)) else math.nan for v in values]


def summarise_final(folder: SweepFolder, encoders: list[str]) -> dict:
    """``final.json``'s content: per encoder and role (``best``, ``paper``; a ``best+paper`` run
    counts for both), the seeds in order with their best validation / OOD losses, the mean and 95 %
    interval of each, and the best seed (lowest validation loss) with its checkpoint."""
    out = {}
    for enc in encoders:
        recs = collect_final(folder, enc)
        if not recs:
            continue
        per_role = {}
        for role in ("best", "paper"):
            mine = sorted((r for r in recs if role in str(r.role or "").split("+")), key=lambda r: r.seed or 0)
            if not mine:
                continue
            val, ood = _finite(r.best_val_loss for r in mine), _finite(r.best_ood_loss for r in mine)
            ok = [r for r in mine if r.usable]
            top = min(ok, key=lambda r: r.best_val_loss) if ok else None
            per_role[role] = {
                "source_trial": mine[0].source_trial,
                "config": mine[0].config,
                "conditioning": mine[0].conditioning,
                "seeds": [r.seed for r in mine],
                "trial_ids": [r.trial_id for r in mine],
                "status": [r.status for r in mine],
                "val_loss": val,
                "ood_loss": ood,
                "val_interval": mean_interval(val).to_dict(),
                "ood_interval": mean_interval(ood).to_dict(),
                "best_seed": None if top is None else {"seed": top.seed, "trial_id": top.trial_id,
                                                       "checkpoint": top.checkpoint,
                                                       "best_val_loss": top.best_val_loss,
                                                       "best_ood_loss": top.best_ood_loss,
                                                       "n_params": top.n_params,
                                                       "trial_dir": str((folder.final(enc) / top.trial_id).resolve())},
            }
        out[enc] = per_role
    return {"interval": "mean and 95 % Student-t interval over seeds (t quantile at n - 1 degrees of freedom)",
            "encoders": out}


def _clean(x):
    """NaN (a failed or single seed) as JSON null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_clean(v) for v in x]
    return x


def write_final(folder: SweepFolder, encoders: list[str]) -> dict:
    doc = _clean(summarise_final(folder, encoders))
    atomic_write_json(folder.final_json, doc)
    return doc
