"""One trial: the Tune function trainable that fits one configuration, and its record in the results store."""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..results.atomic import atomic_write_json
from ..config import TRAIN_KNOBS, Strict
from ..results.folder import SweepFolder
from ..train.plan import RunPlan, ZooPlan, plan_run
from .settings import SweepConfig


def emulation_settings(config: dict, cfg: SweepConfig) -> dict:
    """How a trial's emulator was conditioned and its gradients clipped: the trial's ``conditioning``
    when the search set it, else the file's ``train:``."""
    return {"conditioning": config.get("conditioning", cfg.train.conditioning),
            "grad_clip_scope": cfg.train.grad_clip_scope}


# what the one-queue schedule (rnnray.sweep.queue) adds to a trial's Tune config beside Optuna's
# proposal: which encoder, which kind of work (search | final | oracle), and a key stable across
# sessions ("flat/search/3"); never a hyperparameter, never in a record's ``config``
QUEUE_KEYS = ("encoder", "role", "key")


def params_of(config: dict) -> dict:
    """A trial's hyperparameters: its Tune config without the queue's keys."""
    return {k: v for k, v in config.items() if k not in QUEUE_KEYS}


def trial_record(result, encoder: str, cfg: SweepConfig) -> dict:
    """One trial of Tune's ResultGrid as the results store keeps it."""
    m = dict(result.metrics or {})
    trial_id = m.get("trial_id") or Path(result.path).name.split("_", 1)[-1]
    config = params_of(dict(result.config or {}))
    history = []
    df = result.metrics_dataframe
    if df is not None:
        keep = [c for c in ("step", "train_loss", "val_loss", "ood_loss", "best_val_loss", "best_ood_loss", "training_iteration") if c in df]
        if "step" in df:  # a trial resumed from a checkpoint reports that checkpoint's result again
            df = df.drop_duplicates("step", keep="last")
        history = json.loads(df[keep].to_json(orient="records"))
    best_val = m.get("best_val_loss")
    # Tune marks a trial's last result `done` also when ASHA stopped it: compare with the planned length
    planned = cfg.train.steps
    status = "failed" if result.error is not None else ("finished" if m.get("step") == planned else "stopped early")
    if best_val is not None and not math.isfinite(best_val):
        status = "failed"
    rec = {
        "encoder": encoder,
        "trial_id": trial_id,
        "status": status,
        "config": config,
        **emulation_settings(config, cfg),
        "n_params": m.get("n_params"),
        "budget": cfg.budget,
        "tolerance": cfg.tolerance,
        "best_val_loss": best_val,
        "best_ood_loss": m.get("best_ood_loss"),
        "best_step": m.get("best_step"),
        "checkpoint": m.get("best_checkpoint_path") or m.get("checkpoint_path"),
        "iterations": m.get("training_iteration"),
        "history": history,
    }
    if result.error is not None:
        lines = str(result.error).strip().splitlines()
        rec["reason"] = lines[-1] if lines else result.error.__class__.__name__
    if m.get("diverged"):
        rec["status"], rec["reason"] = "failed", m["diverged"]
    return rec


class TrialSetup(Strict):
    """What every trial of one encoder shares, resolved once on the sweep's driver: the typed sweep
    config, the opened zoo (manifest, shards, split) and where its trials write."""

    encoder: str
    sweep: SweepConfig
    zoo: ZooPlan
    folder: str  # the sweep folder

    def plan(self, config: dict, trial_id: str, seed: int | None = None) -> RunPlan:
        """The trial's run: Optuna's proposal (the training settings it searches, ``lr`` and
        ``conditioning``, and the encoder's structural knobs) on top of the preset, the width solved
        from the budget, once, here. ``seed``: a final run's seed (it then writes under ``final/``),
        in place of ``train.seed``."""
        knobs = {k: v for k, v in config.items() if k in TRAIN_KNOBS}
        hparams = {k: v for k, v in config.items() if k not in TRAIN_KNOBS}
        folder = SweepFolder(Path(self.folder))
        where = folder.trial_dir(self.encoder, trial_id) if seed is None else folder.final(self.encoder) / trial_id
        tcfg = self.sweep.train_config(self.encoder, hparams, knobs, str(where), f"{self.encoder}-{trial_id}")  # its name in the dashboard
        if seed is not None:
            tcfg = tcfg.model_copy(update={"seed": seed})
        return plan_run(self.encoder, tcfg, zoo=self.zoo)


def run_trial(config: dict, setup: TrialSetup) -> None:
    """Tune function trainable: fit one encoder configuration with a Ray Train TorchTrainer.

    Metrics, parameter count and checkpoint path reach Tune through the reports, and the driver
    writes the trial records from Tune's results (a trial stopped by ASHA is ended between two
    reports and never returns here). A trial that returns also leaves ``train_result.json``: where
    its workers ran and, if it diverged, why.
    """
    import ray.tune

    from .. import train

    trial_id = ray.tune.get_context().get_trial_id()
    plan = setup.plan(config, trial_id)
    result = train.fit(plan, tune_trial=True)
    atomic_write_json(SweepFolder(Path(setup.folder)).train_result(setup.encoder, trial_id),
                      {"trial_id": trial_id, "train_config": plan.train.model_dump(mode="json"), **_jsonable(result)})


def _jsonable(result) -> dict:
    if hasattr(result, "to_dict"):
        return result.to_dict()
    if hasattr(result, "__dataclass_fields__"):
        import dataclasses

        return dataclasses.asdict(result)
    return dict(result)


def _trial_name(encoder: str, trial) -> str:
    return f"{encoder}_{trial.trial_id}"
