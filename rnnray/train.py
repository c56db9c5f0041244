"""Emulation training (SPEC.md section 6) on Ray Train, and the same loop in-process for tests.

An encoder and an emulator train together: the encoder turns each snapshot's weights into a
16-number representation, the emulator must reproduce the snapshot's stored output distributions
on one of its stored sequences from that representation alone; the loss is total variation.

Entry points:

* :func:`fit` — a ``ray.train.torch.TorchTrainer`` run (data-parallel DDP workers, gloo on CPU,
  NCCL on GPU); works on its own or from inside a Ray Tune function trainable (``tune_trial=True``).
* :func:`train_local` — the identical loop in this process, no Ray at all; fast unit tests.
* :func:`load_checkpoint` — rebuild the trained encoder + emulator from a checkpoint directory.
* ``python -m rnnray.train CONFIG.yaml --encoder NAME [--set key=value ...]``.

Choices made here (beyond SPEC.md):

* One loop (:func:`run_loop`) serves both entry points through a small backend object (rank,
  world size, device, data, collectives, reporting), so the unit-tested loop *is* the distributed one.
* The three splits are lazy Ray Datasets filtered to their runs (:mod:`rnnray.splits`; the
  filter is pushed into the Parquet read). Each worker reads its share once into memory at start
  (a zoo is about 1 GB at paper scale) and samples batches from there, so there are no per-epoch
  ``streaming_split`` barriers that could deadlock against DDP's collectives. The read tasks need
  a free CPU each: leave one (e.g. ``cpus_per_worker: 0.5`` on a 2-CPU machine). They are not
  materialised on the driver, because inside a Tune trial that would run in the trial's placement
  group. Ray Data splits only ``train`` across workers (``streaming_split(equal=True)``, which drops at
  most ``workers - 1`` rows so every worker holds the same number); every worker receives the
  whole validation and OOD sets and evaluates a fixed round-robin share of them.
* Batches, sequence choice and augmentation: see :mod:`rnnray.data` (randomness keyed on the row,
  so results do not depend on which worker holds which row). The global batch is divided evenly
  among workers; DDP averages the gradients, so the step equals a one-worker step on the whole batch.
* Evaluation every ``eval_every`` steps and at the last step (none at step 0): mean total variation
  over every (snapshot, first-k sequence) pair of the validation and OOD splits, summed across
  workers with ``all_reduce``. ``train_loss`` is the mean training loss since the previous report.
* Every evaluation is reported by every worker (``ray.train.report`` is a barrier) with a
  checkpoint written by rank 0; ``CheckpointConfig(num_to_keep=1, checkpoint_score_attribute=
  "val_loss", mode min)`` keeps the best-validation checkpoint, and Ray Train additionally keeps
  the latest one, which is what a restart (``FailureConfig``) resumes from.
* Resuming restores model, optimiser, step, metric history and best-so-far; because batches are a
  function of the step, the continued run sees the batches it would have seen (given the same
  shards). Re-running :func:`fit` with the same ``storage_path`` and ``name`` resumes too; the
  default name hashes the settings, so a changed config starts a fresh run.
* ``encoder_name="constant"`` trains the emulator with :class:`~rnnray.emulator.ConstantRepresentation`,
  the baseline a real representation must beat.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import os
import socket
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from .config import ConfigError, TrainConfig
from .data import RowSampler, Snapshots, columns, eval_pairs, mix, training_batch
from .emulator import ConstantRepresentation, EmulationModel, Emulator, total_variation
from .encoders import ENCODERS, UnknownEncoder, build_encoder, count_params, fit_to_budget, needs_augmentation
from .encoders.common import REPRESENTATION_DIM
from .weights import Layout

FORMAT = "rnnray-emulation/1"
BASELINE = "constant"
META_FILE, MODEL_FILE, STATE_FILE, HISTORY_FILE = "meta.json", "model.pt", "train_state.pt", "history.json"
EMULATOR_LAYERS = 2
SPLIT_NAMES = ("train", "val", "ood")


# ------------------------------------------------------------------------------------------------
# model


def check_encoder_name(name: str) -> None:
    if name != BASELINE and name not in ENCODERS:
        raise UnknownEncoder(f"unknown encoder {name!r}; valid names: {', '.join(ENCODERS + (BASELINE,))}")


def zoo_info(path: str) -> tuple[str, Layout, str]:
    """(zoo kind, parameter layout, absolute path) of a zoo, from its manifest."""
    from .zoo import read_manifest

    root = str(Path(path).expanduser().resolve())
    manifest = read_manifest(root)
    return manifest["kind"], Layout.from_dict(manifest["layout"]), root


def resolve_encoder(name: str, cfg: TrainConfig, layout: Layout, kind: str) -> tuple[dict[str, Any], int]:
    """Complete encoder hyperparameters and trainable parameter count: ``cfg.preset`` overridden
    by ``cfg.encoder_hparams``, its width fitted to ``cfg.budget`` when set."""
    check_encoder_name(name)
    if name == BASELINE:
        if cfg.encoder_hparams:
            raise ConfigError(f"encoder_hparams: the {BASELINE!r} baseline has no hyperparameters")
        return {}, REPRESENTATION_DIM
    from .encoders.registry import resolve_hparams

    try:
        if cfg.budget is not None:
            return fit_to_budget(name, layout, cfg.budget, cfg.tolerance, zoo_kind=kind, preset=cfg.preset,
                                 **cfg.encoder_hparams)
        hp = resolve_hparams(name, layout, kind, cfg.preset, **cfg.encoder_hparams)
        with torch.device("meta"):
            n = count_params(build_encoder(name, layout, kind, **hp))
        return hp, n
    except TypeError as e:  # unknown hyperparameter, or `width` together with a budget
        raise ConfigError(f"encoder_hparams: {e}") from None


def build_model(name: str, hparams: Mapping[str, Any], layout: Layout, kind: str, emulator_hidden: int) -> EmulationModel:
    encoder = ConstantRepresentation() if name == BASELINE else build_encoder(name, layout, kind, **hparams)
    return EmulationModel(encoder, Emulator(kind, hidden=emulator_hidden, num_layers=EMULATOR_LAYERS))


def _unwrap(model: torch.nn.Module) -> EmulationModel:
    return getattr(model, "module", model)


def _uses_augmentation(name: str, cfg: TrainConfig) -> bool:
    return cfg.augment and name in ENCODERS and needs_augmentation(name)


# ------------------------------------------------------------------------------------------------
# checkpoints


def save_checkpoint(directory: str | Path, payload: Mapping[str, Any]) -> None:
    """Write a checkpoint: ``meta.json`` (how to rebuild the model), ``model.pt`` (encoder and
    emulator state dicts), ``train_state.pt`` (optimiser, step, best so far), ``history.json``."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    (d / META_FILE).write_text(json.dumps(payload["meta"], indent=1))
    torch.save(payload["model"], d / MODEL_FILE)
    torch.save(payload["train_state"], d / STATE_FILE)
    (d / HISTORY_FILE).write_text(json.dumps(payload["history"]))


def read_checkpoint(directory: str | Path, map_location="cpu") -> dict[str, Any]:
    d = Path(directory)
    meta = json.loads((d / META_FILE).read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{d}: not an emulation checkpoint (format {meta.get('format')!r})")
    return {
        "meta": meta,
        "model": torch.load(d / MODEL_FILE, map_location=map_location, weights_only=True),
        "train_state": torch.load(d / STATE_FILE, map_location=map_location, weights_only=True),
        "history": json.loads((d / HISTORY_FILE).read_text()) if (d / HISTORY_FILE).exists() else [],
    }


def load_checkpoint(directory: str | Path, device="cpu") -> tuple[EmulationModel, dict[str, Any]]:
    """The trained model (in eval mode) and its metadata (encoder name, hparams, layout, zoo kind,
    parameter count, step and metrics at the checkpoint)."""
    d = Path(directory)
    meta = json.loads((d / META_FILE).read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{d}: not an emulation checkpoint (format {meta.get('format')!r})")
    layout = Layout.from_dict(meta["layout"])
    model = build_model(meta["encoder"], meta["hparams"], layout, meta["zoo_kind"], meta["emulator"]["hidden"])
    state = torch.load(d / MODEL_FILE, map_location=device, weights_only=True)
    model.encoder.load_state_dict(state["encoder"])
    model.emulator.load_state_dict(state["emulator"])
    return model.to(device).eval(), meta


# ------------------------------------------------------------------------------------------------
# the loop


class LocalBackend:
    """In-process, single worker: data from Arrow tables, best model kept in memory."""

    rank, world_size = 0, 1

    def __init__(self, tables: Mapping[str, Any], kind: str, device=None, progress: bool = False,
                 resume_from: str | Path | None = None):
        self.tables, self.kind, self.resume_from = tables, kind, resume_from
        self.device = torch.device(device or "cpu")
        self.progress = progress
        self.best_payload: dict | None = None
        self.latest_payload: dict | None = None

    def load(self, split: str, max_sequences: int | None) -> Snapshots:
        return Snapshots.from_table(self.kind, self.tables[split], max_sequences)

    def prepare(self, model):
        return model.to(self.device)

    def all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def placement(self) -> list[dict]:
        return [{"rank": 0, "node_id": None, "host": socket.gethostname(), "pid": os.getpid()}]

    def restore(self):
        return None if self.resume_from is None else read_checkpoint(self.resume_from)

    def report(self, metrics: dict, payload: dict | None, is_best: bool) -> None:
        if payload is not None:
            self.latest_payload = payload
            if is_best:  # the history is shared and only grows; copy the rest
                self.best_payload = {k: copy.deepcopy(v) for k, v in payload.items() if k != "history"}
        if self.progress:
            print(_progress_line(metrics), flush=True)


class RayTrainBackend:
    """A Ray Train worker: dataset shards, DDP, all_reduce, ray.train.report / get_checkpoint."""

    def __init__(self, kind: str):
        import ray.train

        from .machine import ray_assigned_device

        ctx = ray.train.get_context()
        self.rank, self.world_size, self.kind = ctx.get_world_rank(), ctx.get_world_size(), kind
        self.gpu_ids, self.device = ray_assigned_device()  # what Ray gave this worker, not what the YAML asked
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)

    def load(self, split: str, max_sequences: int | None) -> Snapshots:
        import ray.train

        shard = ray.train.get_dataset_shard(split)
        return Snapshots.from_batches(self.kind, shard.iter_batches(batch_size=256, batch_format="numpy"), max_sequences)

    def prepare(self, model):
        """On this worker's device; wrapped in DDP when there are several workers (Ray Train has set
        up the process group). Not ``ray.train.torch.prepare_model``: that moves the model to CUDA
        whenever Ray assigned a GPU, also a logical one on a machine without CUDA."""
        model = model.to(self.device)
        if self.world_size == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        if self.world_size > 1 and dist.is_initialized():
            dev = t.device
            t = t.to(self.device)
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
            t = t.to(dev)
        return t

    def placement(self) -> list[dict]:
        """Where every worker of the group runs (rank order): which node, host and process."""
        import ray
        import torch.distributed as dist

        mine = {"rank": self.rank, "node_id": ray.get_runtime_context().get_node_id(),
                "host": socket.gethostname(), "pid": os.getpid(), "device": str(self.device), "gpu_ids": self.gpu_ids}
        if self.world_size == 1 or not dist.is_initialized():
            return [mine]
        everyone: list = [None] * self.world_size
        dist.all_gather_object(everyone, mine)
        return everyone

    def restore(self):
        import ray.train

        ckpt = ray.train.get_checkpoint()
        if ckpt is None:
            return None
        with ckpt.as_directory() as d:
            return read_checkpoint(d)

    def report(self, metrics: dict, payload: dict | None, is_best: bool) -> None:
        import ray.train

        if payload is None:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory(prefix="rnnray-ckpt-") as d:
            save_checkpoint(d, payload)
            ray.train.report(
                metrics,
                checkpoint=ray.train.Checkpoint.from_directory(d),
                checkpoint_dir_name=checkpoint_dir_name(metrics["step"]),
            )
        print(_progress_line(metrics), flush=True)


def checkpoint_dir_name(step: int) -> str:
    return f"checkpoint_{step:09d}"


def _progress_line(m: Mapping[str, Any]) -> str:
    return (f"step {m['step']:>7d}  train {m['train_loss']:.4f}  val {m['val_loss']:.4f}  ood {m['ood_loss']:.4f}"
            f"  best val {m['best_val_loss']:.4f} @ {m['best_step']}  {m['steps_per_s']:.1f} steps/s")


@torch.no_grad()
def _loss_sum(model: EmulationModel, data: Snapshots, pairs, batch_size: int, device) -> torch.Tensor:
    rows, seqs = pairs
    total = torch.zeros((), dtype=torch.float64, device=device)
    for i in range(0, len(rows), batch_size):
        r, s = rows[i:i + batch_size], seqs[i:i + batch_size]
        flat, inputs, targets = data.batch(r, s, device)
        total += total_variation(targets, model(flat, inputs)).double() * len(r)
    return total


def train_step(model, optimizer, params, flat, inputs, targets, grad_clip: float) -> torch.Tensor:
    """One optimisation step: forward, total-variation loss, backward (DDP averages gradients
    here), global-norm clipping, AdamW. Returns the detached loss."""
    loss = total_variation(targets, model(flat, inputs))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()
    return loss.detach()


def _check_resumable(meta: Mapping[str, Any], spec: Mapping[str, Any]) -> None:
    for key in ("encoder", "hparams", "zoo_kind"):
        if meta.get(key) != spec[key]:
            raise ValueError(
                f"cannot resume: the checkpoint's {key} is {meta.get(key)!r}, this run's is {spec[key]!r} "
                "(use another `name` or `storage_path`)"
            )
    if meta["emulator"]["hidden"] != spec["cfg"]["emulator_hidden"]:
        raise ValueError("cannot resume: the checkpoint's emulator_hidden differs from this run's")


def run_loop(spec: Mapping[str, Any], io) -> dict[str, Any]:
    """Train one encoder + emulator. ``spec``: encoder name, resolved hparams and parameter count,
    zoo kind and layout, the TrainConfig as a dict. Returns ``{"history", "best", "final"}``."""
    cfg = TrainConfig.model_validate(spec["cfg"])
    name, hparams, kind = spec["encoder"], dict(spec["hparams"]), spec["zoo_kind"]
    layout = Layout.from_dict(spec["layout"])
    rank, world, device = io.rank, io.world_size, io.device
    local_batch = cfg.batch_size // world

    train = io.load("train", None)
    val = io.load("val", cfg.eval_sequences)
    ood = io.load("ood", cfg.eval_sequences)
    sampler = RowSampler(len(train), local_batch, cfg.seed, rank)
    val_pairs = eval_pairs(len(val), val.n_sequences, cfg.eval_sequences, rank, world)
    ood_pairs = eval_pairs(len(ood), ood.n_sequences, cfg.eval_sequences, rank, world)
    aug_layout = layout if _uses_augmentation(name, cfg) else None

    torch.manual_seed(cfg.seed)  # the same initialisation on every worker (DDP broadcasts rank 0's anyway)
    model = build_model(name, hparams, layout, kind, cfg.emulator_hidden).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    meta = {
        "format": FORMAT, "encoder": name, "hparams": hparams, "n_params": spec["n_params"], "zoo_kind": kind,
        "layout": spec["layout"], "emulator": {"hidden": cfg.emulator_hidden, "rep_dim": REPRESENTATION_DIM,
                                              "num_layers": EMULATOR_LAYERS},
        "zoo": cfg.zoo, "split_seed": cfg.split_seed, "config": cfg.model_dump(mode="json"),
    }

    start, history = 0, []
    best = {"val_loss": math.inf, "ood_loss": math.inf, "step": 0}
    restored = io.restore()
    if restored is not None:
        _check_resumable(restored["meta"], spec)
        model.encoder.load_state_dict(restored["model"]["encoder"])
        model.emulator.load_state_dict(restored["model"]["emulator"])
        optimizer.load_state_dict(restored["train_state"]["optimizer"])
        start, best = int(restored["train_state"]["step"]), dict(restored["train_state"]["best"])
        history = list(restored["history"])
    resumed_from_step = start if restored is not None else None
    # dropout (transformer) draws from torch's global stream: seed it per worker and per resume point
    torch.manual_seed(int(mix(cfg.seed, rank, start, 7)) % (2**63 - 1))
    wrapped = io.prepare(model)
    params = [p for p in wrapped.parameters() if p.requires_grad]
    placement = io.placement()
    diverged = None

    loss_sum, loss_n = torch.zeros((), device=device), 0
    t_last, step_last, t0 = time.perf_counter(), start, time.perf_counter()
    for step in range(start, cfg.steps):
        wrapped.train()
        flat, inputs, targets = training_batch(train, sampler, step, cfg.seed, aug_layout, device)
        loss = train_step(wrapped, optimizer, params, flat, inputs, targets, cfg.grad_clip)
        loss_sum += loss
        loss_n += 1

        done = step + 1
        if done % cfg.eval_every and done != cfg.steps:
            continue
        module = _unwrap(wrapped)
        module.eval()  # evaluation bypasses DDP: no collectives, so unequal shares cannot deadlock
        sums = torch.stack([
            loss_sum.double() / loss_n,
            _loss_sum(module, val, val_pairs, cfg.eval_batch_size, device),
            _loss_sum(module, ood, ood_pairs, cfg.eval_batch_size, device),
        ]).cpu()
        sums = io.all_reduce(sums)
        now = time.perf_counter()
        metrics = {
            "step": done,
            "train_loss": float(sums[0]) / world,
            "val_loss": float(sums[1]) / (len(val) * min(cfg.eval_sequences, val.n_sequences)),
            "ood_loss": float(sums[2]) / (len(ood) * min(cfg.eval_sequences, ood.n_sequences)),
            "n_params": int(spec["n_params"]),
            "steps_per_s": (done - step_last) / max(now - t_last, 1e-9),
            "time_s": now - t0,
        }
        bad = [k for k in ("train_loss", "val_loss", "ood_loss") if not math.isfinite(metrics[k])]
        if bad:
            # deterministic (batches are a function of the step): a restart would diverge again, so
            # the run ends here, reported as diverged and without a checkpoint of the broken model
            diverged = f"diverged: non-finite {', '.join(bad)} at step {done} (lr {cfg.lr:g})"
            metrics.update(diverged=diverged, best_val_loss=best["val_loss"], best_ood_loss=best["ood_loss"],
                           best_step=best["step"])
            history.append(dict(metrics))
            io.report(metrics, None, False)
            break
        is_best = metrics["val_loss"] < best["val_loss"]
        if is_best:
            best = {"val_loss": metrics["val_loss"], "ood_loss": metrics["ood_loss"], "step": done}
        metrics.update(best_val_loss=best["val_loss"], best_ood_loss=best["ood_loss"], best_step=best["step"])
        if spec.get("run_dir"):  # where Ray Train keeps the best checkpoint (see RayTrainBackend.report)
            metrics["best_checkpoint_path"] = f"{spec['run_dir']}/{checkpoint_dir_name(best['step'])}"
        history.append(dict(metrics))
        payload = None
        if rank == 0:
            payload = {
                "meta": {**meta, "step": done, "metrics": metrics},
                "model": {"encoder": module.encoder.state_dict(), "emulator": module.emulator.state_dict()},
                "train_state": {"optimizer": optimizer.state_dict(), "step": done, "best": best},
                "history": history,
            }
        io.report(metrics, payload, is_best)
        loss_sum, loss_n = torch.zeros((), device=device), 0
        t_last, step_last = time.perf_counter(), done
    return {"history": history, "best": best, "final": history[-1] if history else None,
            "diverged": diverged, "placement": placement, "resumed_from_step": resumed_from_step}


def train_loop_per_worker(config: dict) -> dict[str, Any]:
    """The Ray Train entry point (``TorchTrainer(train_loop_per_worker, train_loop_config=spec)``)."""
    cfg = config["cfg"]
    if cfg["gpus_per_worker"] == 0:
        torch.set_num_threads(max(1, int(cfg["cpus_per_worker"])))
    return run_loop(config, RayTrainBackend(config["zoo_kind"]))


# ------------------------------------------------------------------------------------------------
# drivers


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


def prepare(encoder_name: str, cfg: TrainConfig) -> dict[str, Any]:
    """Validate everything a run needs on the driver (encoder name, zoo, budget) and return the
    loop's ``spec``; raises the errors the command turns into one line."""
    check_encoder_name(encoder_name)
    kind, layout, root = zoo_info(cfg.zoo)
    cfg = cfg.model_copy(update={"zoo": root})
    hparams, n_params = resolve_encoder(encoder_name, cfg, layout, kind)
    return {"encoder": encoder_name, "hparams": hparams, "n_params": int(n_params), "zoo_kind": kind,
            "layout": json.loads(layout.to_json()), "cfg": cfg.model_dump(mode="json")}


def split_datasets(cfg: TrainConfig, kind: str) -> dict[str, Any]:
    """The train/val/OOD Ray Datasets of the zoo (only the columns training reads), lazy.

    Not materialised here: inside a Ray Tune trial this function runs in the trial's small
    placement group, which Ray Data would be confined to (Tune captures child tasks), so a read
    would wait forever. Ray Train executes the datasets itself, and each worker loads its share once.

    The read and filter tasks ask for no CPU: the zoo is read once, at the start of a run, while the
    workers wait for it. Asking for one would deadlock a full cluster, where concurrent trials'
    workers hold every CPU and each trial's read waits for a CPU another trial holds.
    """
    from ray.data.expressions import col

    from .splits import zoo_splits
    from .zoo import load

    splits = zoo_splits(cfg.zoo, seed=cfg.split_seed)
    base = load(cfg.zoo, checksums=False, num_cpus=0).select_columns(columns(kind), num_cpus=0)
    out = {}
    for s in SPLIT_NAMES:
        runs = splits.runs(s)
        if not runs:
            raise ConfigError(f"{cfg.zoo}: the {s} split has no runs")
        out[s] = base.filter(expr=col("run_id").is_in(runs), num_cpus=0)
        out[s].context.enable_progress_bars = False  # a one-off read per run: its bars would bury Tune's table
    return out


def fit(
    encoder_name: str,
    cfg: TrainConfig,
    *,
    tune_trial: bool = False,
    datasets: Mapping[str, Any] | None = None,
    run_config_overrides: Mapping[str, Any] | None = None,
):
    """Train one encoder with Ray Train; returns a :class:`TrainResult`.

    ``tune_trial=True`` when called from a Ray Tune function trainable: every report (metrics plus
    ``checkpoint_path``) is forwarded to Tune by ``ray.tune.integration.ray_train.TuneReportCallback``,
    so schedulers such as ASHA see ``val_loss`` at each ``step`` and can stop the trial; the run is
    named after the trial id, so a restarted trial resumes its own Train run.
    ``datasets`` replaces the zoo's split datasets (keys train/val/ood; tests, custom subsets).
    ``run_config_overrides`` are ``ray.train.RunConfig`` fields (``callbacks`` are appended).
    """
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    spec = prepare(encoder_name, cfg)
    cfg = TrainConfig.model_validate(spec["cfg"])
    name = cfg.name or default_run_name(encoder_name, cfg, spec["hparams"])
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
    spec["run_dir"] = f"{run_kwargs['storage_path'].rstrip('/')}/{run_kwargs['name']}"
    import ray

    from .resources import fit_request

    if not ray.is_initialized():
        ray.init()
    cpus, gpus = fit_request(cfg.cpus_per_worker, cfg.gpus_per_worker, "a training worker")
    if (cpus, gpus) != (cfg.cpus_per_worker, cfg.gpus_per_worker):
        cfg = cfg.model_copy(update={"cpus_per_worker": cpus, "gpus_per_worker": gpus})
        spec["cfg"] = cfg.model_dump(mode="json")
    gpu = cfg.gpus_per_worker > 0
    resources = {"CPU": cfg.cpus_per_worker, **({"GPU": cfg.gpus_per_worker} if gpu else {})}
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=spec,
        scaling_config=ray.train.ScalingConfig(num_workers=cfg.workers, use_gpu=gpu, resources_per_worker=resources,
                                               placement_strategy=cfg.placement_strategy),
        run_config=ray.train.RunConfig(**run_kwargs),
        torch_config=TorchConfig(backend=None if cfg.process_group_backend == "auto" else cfg.process_group_backend),
        datasets=dict(datasets) if datasets is not None else split_datasets(cfg, spec["zoo_kind"]),
        dataset_config=ray.train.DataConfig(datasets_to_split=["train"]),
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
        encoder=encoder_name, hparams=spec["hparams"], n_params=spec["n_params"], zoo_kind=spec["zoo_kind"],
        best_val_loss=best.get("val_loss", math.nan), best_ood_loss=best.get("ood_loss", math.nan),
        best_step=best.get("step", 0), checkpoint_path=best_ckpt.path if best_ckpt else None,
        path=result.path, history=history, diverged=returned.get("diverged"), placement=returned.get("placement") or [],
        resumed_from_step=returned.get("resumed_from_step"),
    )


def split_tables(cfg: TrainConfig, kind: str) -> dict[str, Any]:
    """The train/val/OOD splits of the zoo as Arrow tables (no Ray)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from .splits import zoo_splits
    from .zoo import load_table

    splits = zoo_splits(cfg.zoo, seed=cfg.split_seed)
    table = load_table(cfg.zoo, columns=columns(kind), checksums=False)
    return {s: table.filter(pc.is_in(table["run_id"], value_set=pa.array(splits.runs(s), pa.int32())))
            for s in SPLIT_NAMES}


def train_local(
    encoder_name: str,
    cfg: TrainConfig,
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
    spec = prepare(encoder_name, cfg)
    cfg = TrainConfig.model_validate(spec["cfg"])
    if cfg.workers != 1:
        cfg = cfg.model_copy(update={"workers": 1})
        spec["cfg"] = cfg.model_dump(mode="json")
    io = LocalBackend(tables if tables is not None else split_tables(cfg, spec["zoo_kind"]), spec["zoo_kind"],
                      device=device, progress=progress, resume_from=resume_from)
    out = run_loop(spec, io)
    model, ckpt_path, run_path = None, None, None
    if io.best_payload is not None:
        layout = Layout.from_dict(spec["layout"])
        model = build_model(encoder_name, spec["hparams"], layout, spec["zoo_kind"], cfg.emulator_hidden)
        model.encoder.load_state_dict(io.best_payload["model"]["encoder"])
        model.emulator.load_state_dict(io.best_payload["model"]["emulator"])
        model.eval()
        if save:
            run_path = os.path.join(_storage(cfg.storage_path), cfg.name or default_run_name(encoder_name, cfg, spec["hparams"]))
            ckpt_path = os.path.join(run_path, "best")
            save_checkpoint(ckpt_path, {**io.best_payload, "history": out["history"]})
    best = out["best"]
    return TrainResult(
        encoder=encoder_name, hparams=spec["hparams"], n_params=spec["n_params"], zoo_kind=spec["zoo_kind"],
        best_val_loss=best["val_loss"], best_ood_loss=best["ood_loss"], best_step=best["step"],
        checkpoint_path=ckpt_path, path=run_path, history=out["history"], model=model,
        diverged=out["diverged"], placement=out["placement"], resumed_from_step=out["resumed_from_step"],
    )


# ------------------------------------------------------------------------------------------------
# command


def main(argv=None) -> None:
    from .cli import friendly_errors
    from .config import load_train_config

    p = argparse.ArgumentParser(prog="python -m rnnray.train", description="Train one encoder by emulation on Ray Train.")
    p.add_argument("config", help="train config YAML (see configs/train-tiny.yaml)")
    p.add_argument("--encoder", required=True, help=f"one of {', '.join(ENCODERS)} (or {BASELINE!r}, the baseline)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    p.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS or a local instance)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    args = p.parse_args(argv)
    with friendly_errors(args.debug):
        from .paths import check_writable

        cfg = load_train_config(args.config, args.set)
        spec = prepare(args.encoder, cfg)  # every user error surfaces here, before Ray starts
        check_writable(cfg.storage_path, "storage_path:")
    import ray

    if not ray.is_initialized():
        ray.init(address=args.address, namespace="rnnray")
    print(f"training {args.encoder} ({spec['n_params']:,} parameters, {spec['zoo_kind']} zoo) for {cfg.steps} steps "
          f"on {cfg.workers} worker(s)", flush=True)
    res = fit(args.encoder, cfg)
    if args.json:
        print(json.dumps(res.to_dict()))
    else:
        print(f"encoder: {res.encoder}  parameters: {res.n_params:,}  hparams: {json.dumps(res.hparams)}")
        print(f"best validation loss: {res.best_val_loss:.4f} at step {res.best_step}  (OOD loss there: {res.best_ood_loss:.4f})")
        if res.diverged:
            print(f"stopped early, {res.diverged}")
        print(f"best checkpoint: {res.checkpoint_path}")
        print(f"run directory: {res.path}")


if __name__ == "__main__":
    main(sys.argv[1:])
