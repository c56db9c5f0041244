"""The training loop, one for both entry points (see the package docstring)."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

import torch

from ..emulation.batches import RowSampler, Snapshots, eval_pairs, mix, training_batch
from ..emulation.emulator import EmulationModel, total_variation
from ..encoders.common import REPRESENTATION_DIM
from .backends import RayTrainBackend
from .checkpoint import FORMAT, checkpoint_conditioning, checkpoint_dir_name
from .model import EMULATOR_LAYERS, _unwrap, _uses_augmentation, build_model, clip_gradients
from .plan import RunPlan


@torch.no_grad()
def eval_loss_sum(model: EmulationModel, data: Snapshots, pairs, batch_size: int, device, encoder_input=None) -> torch.Tensor:
    """Summed total variation over the (row, sequence) ``pairs``. ``encoder_input(rows, flat)``: what
    the model's encoder reads instead of the flat weights (the label oracles' labels)."""
    rows, seqs = pairs
    total = torch.zeros((), dtype=torch.float64, device=device)
    for i in range(0, len(rows), batch_size):
        r, s = rows[i:i + batch_size], seqs[i:i + batch_size]
        flat, inputs, targets = data.batch(r, s, device)
        x = flat if encoder_input is None else encoder_input(r, flat)
        total += total_variation(targets, model(x, inputs)).double() * len(r)
    return total


def train_step(model, optimizer, params, flat, inputs, targets, grad_clip: float,
               grad_clip_scope: str = "separate") -> torch.Tensor:
    """One optimisation step: forward, total-variation loss, backward (DDP averages gradients
    here), gradient-norm clipping (:func:`~.model.clip_gradients`: encoder and emulator each on
    their own, or ``params`` under one global norm), AdamW. Returns the detached loss."""
    loss = total_variation(targets, model(flat, inputs))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    clip_gradients(model, params, grad_clip, grad_clip_scope)
    optimizer.step()
    return loss.detach()


def _check_resumable(meta: Mapping[str, Any], plan: RunPlan) -> None:
    for key, mine in (("encoder", plan.encoder), ("hparams", plan.hparams), ("zoo_kind", plan.zoo_kind)):
        if meta.get(key) != mine:
            raise ValueError(
                f"cannot resume: the checkpoint's {key} is {meta.get(key)!r}, this run's is {mine!r} "
                "(use another `name` or `storage_path`)"
            )
    if meta["emulator"]["hidden"] != plan.train.emulator_hidden:
        raise ValueError("cannot resume: the checkpoint's emulator_hidden differs from this run's")
    if checkpoint_conditioning(meta) != plan.train.conditioning:
        raise ValueError(f"cannot resume: the checkpoint's emulator is conditioned {checkpoint_conditioning(meta)!r}, "
                         f"this run's {plan.train.conditioning!r}")


def run_loop(plan: RunPlan, io) -> dict[str, Any]:
    """Train one encoder + emulator as ``plan`` says, reading and reporting through ``io`` (a backend).
    Returns ``{"history", "best", "final", "diverged", "placement", "resumed_from_step"}``."""
    cfg = plan.train
    name, hparams, kind = plan.encoder, dict(plan.hparams), plan.zoo_kind
    layout = plan.zoo.weights_layout
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
    model = build_model(name, hparams, layout, kind, cfg.emulator_hidden, cfg.conditioning).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    meta = {
        "format": FORMAT, "encoder": name, "hparams": hparams, "n_params": plan.n_params, "zoo_kind": kind,
        "layout": plan.zoo.layout, "emulator": {"hidden": cfg.emulator_hidden, "rep_dim": REPRESENTATION_DIM,
                                              "num_layers": EMULATOR_LAYERS, "conditioning": cfg.conditioning},
        "zoo": cfg.zoo, "split_seed": cfg.split_seed, "split": cfg.split, "config": cfg.model_dump(mode="json"),
    }

    start, history = 0, []
    best = {"val_loss": math.inf, "ood_loss": math.inf, "step": 0}
    restored = io.restore()
    if restored is not None:
        _check_resumable(restored["meta"], plan)
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
    if restored is not None and history:
        # the result this checkpoint was saved with, once more: an interrupt can end the experiment
        # after the checkpoint was kept but before Tune's scheduler saw the result (ASHA would then
        # judge this trial's rung by its next result); a scheduler that saw it already ignores it
        io.report(dict(history[-1]), None, False)
    diverged = None

    loss_sum, loss_n = torch.zeros((), device=device), 0
    t_last, step_last, t0 = time.perf_counter(), start, time.perf_counter()
    for step in range(start, cfg.steps):
        wrapped.train()
        flat, inputs, targets = training_batch(train, sampler, step, cfg.seed, aug_layout, device)
        loss = train_step(wrapped, optimizer, params, flat, inputs, targets, cfg.grad_clip, cfg.grad_clip_scope)
        loss_sum += loss
        loss_n += 1

        done = step + 1
        if done % cfg.eval_every and done != cfg.steps:
            continue
        module = _unwrap(wrapped)
        module.eval()  # evaluation bypasses DDP: no collectives, so unequal shares cannot deadlock
        sums = torch.stack([
            loss_sum.double() / loss_n,
            eval_loss_sum(module, val, val_pairs, cfg.eval_batch_size, device),
            eval_loss_sum(module, ood, ood_pairs, cfg.eval_batch_size, device),
        ]).cpu()
        sums = io.all_reduce(sums)
        now = time.perf_counter()
        metrics = {
            "step": done,
            "train_loss": float(sums[0]) / world,
            "val_loss": float(sums[1]) / (len(val) * min(cfg.eval_sequences, val.n_sequences)),
            "ood_loss": float(sums[2]) / (len(ood) * min(cfg.eval_sequences, ood.n_sequences)),
            "n_params": plan.n_params,
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
        if plan.run_dir:  # where Ray Train keeps the best checkpoint (see RayTrainBackend.report)
            metrics["best_checkpoint_path"] = f"{plan.run_dir}/{checkpoint_dir_name(best['step'])}"
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
    """The Ray Train entry point (``TorchTrainer(train_loop_per_worker, train_loop_config={"plan": plan,
    "read_zoo": True})``; ``read_zoo`` False: the splits come as Ray Dataset shards)."""
    plan: RunPlan = config["plan"]
    if plan.train.gpus_per_worker == 0:
        torch.set_num_threads(max(1, int(plan.train.cpus_per_worker)))
    if plan.train.worker_nice:
        from ..runtime.machine import yield_cpu

        yield_cpu(plan.train.worker_nice)
    return run_loop(plan, RayTrainBackend(plan.zoo_kind, plan if config.get("read_zoo", True) else None))
