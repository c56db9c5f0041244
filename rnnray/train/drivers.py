"""The two ways to run the loop: :func:`fit` on Ray Train, :func:`train_local` in this process."""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..config import TrainConfig
from ..runtime.connect import init_ray
from ..emulation.emulator import EmulationModel
from .backends import LocalBackend, split_tables
from .checkpoint import HISTORY_FILE, save_checkpoint
from .loop import run_loop, train_loop_per_worker
from .model import build_model
from .plan import RunPlan, plan_run


@dataclass
class TrainResult:
    """What a training run produced.

    ``best_val_loss`` is the lowest validation loss reported and ``best_ood_loss`` the OOD loss at
    that same evaluation (the model one would pick without looking at OOD data); ``checkpoint_path``
    is the directory of that best checkpoint (None for an unsaved :func:`train_local` run);
    ``history`` has one dict per evaluation: step, train_loss, val_loss, ood_loss, best_*,
    n_params, steps_per_s, time_s.
    """

    encoder: str
    hparams: dict[str, Any]
    n_params: int
    zoo_kind: str
    best_val_loss: float
    best_ood_loss: float
    best_step: int
    checkpoint_path: str | None
    path: str | None
    history: list[dict[str, Any]] = field(default_factory=list)
    diverged: str | None = None  # why the run stopped early with a non-finite loss (None: it did not)
    placement: list[dict[str, Any]] = field(default_factory=list)  # node, host and pid of each worker
    resumed_from_step: int | None = None  # the checkpoint step this (last) attempt started from
    model: EmulationModel | None = field(default=None, repr=False)  # train_local only: best model

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "model"}


def _storage(path: str) -> str:
    return path if "://" in path else str(Path(path).expanduser().resolve())


def default_run_name(encoder: str, cfg: TrainConfig, hparams: Mapping[str, Any]) -> str:
    """``{encoder}-{hash}``; the hash covers everything that changes the optimisation (not the
    worker count or resources, so a run can resume on a different cluster shape)."""
    keep = cfg.model_dump(mode="json", exclude={"storage_path", "name", "workers", "gpus_per_worker",
                                                 "cpus_per_worker", "process_group_backend", "max_failures",
                                                 "placement_strategy"})
    blob = json.dumps({"encoder": encoder, "hparams": hparams, "cfg": keep}, sort_keys=True, default=str)
    return f"{encoder}-{hashlib.sha1(blob.encode()).hexdigest()[:8]}"


def _plan(encoder: str | RunPlan, cfg: TrainConfig | None) -> RunPlan:
    if isinstance(encoder, RunPlan):
        if cfg is not None:
            raise TypeError("pass a RunPlan or an encoder name with its TrainConfig, not both")
        return encoder
    if cfg is None:
        raise TypeError("an encoder name needs its TrainConfig")
    return plan_run(encoder, cfg)


def fit(
    encoder_name: str | RunPlan,
    cfg: TrainConfig | None = None,
    *,
    tune_trial: bool = False,
    datasets: Mapping[str, Any] | None = None,
    run_config_overrides: Mapping[str, Any] | None = None,
):
    """Train one encoder with Ray Train; returns a :class:`TrainResult`. Give the encoder's name
    and its config, or a :class:`RunPlan` resolved before (:func:`plan_run`).

    ``tune_trial=True`` when called from a Ray Tune function trainable: every report (metrics plus
    ``checkpoint_path``) is forwarded to Tune by ``ray.tune.integration.ray_train.TuneReportCallback``,
    so schedulers such as ASHA see ``val_loss`` at each ``step`` and can stop the trial; the run is
    named after the trial id, so a restarted trial resumes its own Train run.
    Without ``datasets``, every worker reads the zoo's Parquet shards itself (:func:`split_tables`,
    then :func:`worker_share` of the train split): one pyarrow read per worker, no Ray Data
    pipeline. Streaming a zoo this small (it fits in memory; it is read once, before the first
    step) through three Ray Data executions per run started a burst of read-task processes and cost
    more than the training itself in a short trial (``docs/BENCHMARKS.md``, "Starting a run").
    ``datasets`` (Ray Datasets, keys train/val/ood: tests, custom subsets) are ingested by Ray Train
    instead, the train split divided among the workers.
    ``run_config_overrides`` are ``ray.train.RunConfig`` fields (``callbacks`` are appended).
    """
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    plan = _plan(encoder_name, cfg)
    encoder_name, cfg = plan.encoder, plan.train
    name = cfg.name or default_run_name(encoder_name, cfg, plan.hparams)
    callbacks = []
    if tune_trial:
        import ray.tune
        from ray.tune.integration.ray_train import TuneReportCallback

        callbacks.append(TuneReportCallback())
        if cfg.name is None:
            name = f"{name}-{ray.tune.get_context().get_trial_id()}"
    run_kwargs: dict[str, Any] = dict(
        name=name,
        storage_path=_storage(cfg.storage_path),
        checkpoint_config=ray.train.CheckpointConfig(
            num_to_keep=1, checkpoint_score_attribute="val_loss", checkpoint_score_order="min"
        ),
        failure_config=ray.train.FailureConfig(max_failures=cfg.max_failures),
    )
    overrides = dict(run_config_overrides or {})
    callbacks += list(overrides.pop("callbacks", None) or [])
    run_kwargs.update(overrides)
    run_kwargs["callbacks"] = callbacks or None
    run_dir = f"{run_kwargs['storage_path'].rstrip('/')}/{run_kwargs['name']}"
    import ray

    from ..runtime.resources import check_workers, cluster_shape, fit_request

    if not ray.is_initialized():
        init_ray()
    shape = cluster_shape()
    check_workers(cfg.workers, cfg.cpus_per_worker, cfg.gpus_per_worker, cfg.placement_strategy, shape)  # or wait forever
    cpus, gpus = fit_request(cfg.cpus_per_worker, cfg.gpus_per_worker, "a training worker", shape)
    if (cpus, gpus) != (cfg.cpus_per_worker, cfg.gpus_per_worker):
        cfg = cfg.model_copy(update={"cpus_per_worker": cpus, "gpus_per_worker": gpus})
    plan = plan.model_copy(update={"train": cfg, "run_dir": run_dir})
    gpu = cfg.gpus_per_worker > 0
    resources = {"CPU": cfg.cpus_per_worker, **({"GPU": cfg.gpus_per_worker} if gpu else {})}
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"plan": plan, "read_zoo": datasets is None},
        scaling_config=ray.train.ScalingConfig(num_workers=cfg.workers, use_gpu=gpu, resources_per_worker=resources,
                                               placement_strategy=cfg.placement_strategy),
        run_config=ray.train.RunConfig(**run_kwargs),
        torch_config=TorchConfig(backend=None if cfg.process_group_backend == "auto" else cfg.process_group_backend),
        **(dict(datasets=dict(datasets), dataset_config=ray.train.DataConfig(datasets_to_split=["train"]))
           if datasets is not None else {}),
    )
    result = trainer.fit()
    returned = result.return_value or {}
    best_ckpt = result.get_best_checkpoint("val_loss", "min") if result.best_checkpoints else None
    history = returned.get("history")
    if history is None and result.checkpoint is not None:  # e.g. resumed a finished run
        with result.checkpoint.as_directory() as d:
            history = json.loads((Path(d) / HISTORY_FILE).read_text())
    history = history or []
    best = min(history, key=lambda m: m["val_loss"]) if history else {}
    return TrainResult(
        encoder=encoder_name, hparams=plan.hparams, n_params=plan.n_params, zoo_kind=plan.zoo_kind,
        best_val_loss=best.get("val_loss", math.nan), best_ood_loss=best.get("ood_loss", math.nan),
        best_step=best.get("step", 0), checkpoint_path=best_ckpt.path if best_ckpt else None,
        path=result.path, history=history, diverged=returned.get("diverged"), placement=returned.get("placement") or [],
        resumed_from_step=returned.get("resumed_from_step"),
    )


def train_local(
    encoder_name: str | RunPlan,
    cfg: TrainConfig | None = None,
    *,
    tables: Mapping[str, Any] | None = None,
    device=None,
    save: bool = False,
    progress: bool = False,
    resume_from: str | Path | None = None,
) -> TrainResult:
    """The same loop in this process: one worker, no Ray. ``tables`` (Arrow tables keyed
    train/val/ood) replaces the zoo's splits; ``save=True`` writes the best checkpoint to
    ``storage_path/name/best``; ``resume_from`` continues from a checkpoint directory (what a Ray
    Train restart does with ``ray.train.get_checkpoint()``). The result carries the best model
    (``result.model``)."""
    plan = _plan(encoder_name, cfg)
    encoder_name, cfg = plan.encoder, plan.train
    if cfg.workers != 1:
        cfg = cfg.model_copy(update={"workers": 1})
        plan = plan.model_copy(update={"train": cfg})
    io = LocalBackend(tables if tables is not None else split_tables(plan), plan.zoo_kind,
                      device=device, progress=progress, resume_from=resume_from)
    out = run_loop(plan, io)
    model, ckpt_path, run_path = None, None, None
    if io.best_payload is not None:
        model = build_model(encoder_name, plan.hparams, plan.zoo.weights_layout, plan.zoo_kind, cfg.emulator_hidden,
                            cfg.conditioning)
        model.encoder.load_state_dict(io.best_payload["model"]["encoder"])
        model.emulator.load_state_dict(io.best_payload["model"]["emulator"])
        model.eval()
        if save:
            run_path = os.path.join(_storage(cfg.storage_path), cfg.name or default_run_name(encoder_name, cfg, plan.hparams))
            ckpt_path = os.path.join(run_path, "best")
            save_checkpoint(ckpt_path, {**io.best_payload, "history": out["history"]})
    best = out["best"]
    return TrainResult(
        encoder=encoder_name, hparams=plan.hparams, n_params=plan.n_params, zoo_kind=plan.zoo_kind,
        best_val_loss=best["val_loss"], best_ood_loss=best["ood_loss"], best_step=best["step"],
        checkpoint_path=ckpt_path, path=run_path, history=out["history"], model=model,
        diverged=out["diverged"], placement=out["placement"], resumed_from_step=out["resumed_from_step"],
    )

