"""Frozen representations, and the small MLPs trained on them (the seeds side by side with ``torch.func.vmap``)."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...config import PREDICTOR_HIDDEN, PREDICTOR_STEPS
from ...encoders.common import REPRESENTATION_DIM
from .targets import _column

RANDOM_SEED = 12345


@torch.no_grad()
def representations(encoder: nn.Module, table_or_params, device=None, batch_size: int = 256) -> np.ndarray:
    """Frozen representations: encoder output, L2-normalised, (N, 16) float32.

    ``table_or_params`` is a zoo table (its ``params`` column is read) or an (N, P) array."""
    params = table_or_params if isinstance(table_or_params, (np.ndarray, torch.Tensor)) else _column(table_or_params, "params")
    device = torch.device(device or "cpu")
    encoder = encoder.to(device).eval()
    outs = []
    for a in range(0, len(params), batch_size):
        x = torch.from_numpy(np.array(params[a:a + batch_size], dtype=np.float32)).to(device)  # a copy: zoo arrays are read-only
        outs.append(F.normalize(encoder(x).float(), dim=-1).cpu())
    if not outs:
        return np.zeros((0, REPRESENTATION_DIM), dtype=np.float32)
    return torch.cat(outs).numpy()


def random_representations(n: int, seed: int = RANDOM_SEED, dim: int = REPRESENTATION_DIM) -> np.ndarray:
    """Chance baseline: one Gaussian vector per snapshot, unit-normalised (uniform on the sphere)."""
    z = np.random.default_rng(seed).standard_normal((n, dim))
    return (z / np.linalg.norm(z, axis=1, keepdims=True)).astype(np.float32)


@dataclass(frozen=True)
class PredictorConfig:
    """Settings of every downstream predictor (see the module docstring for why they are fixed)."""

    hidden: int = PREDICTOR_HIDDEN
    depth: int = 2
    steps: int = PREDICTOR_STEPS
    batch_size: int = 256
    lr: float = 3e-3
    weight_decay: float = 1e-4


def make_head(n_out: int, cfg: PredictorConfig, n_in: int = REPRESENTATION_DIM) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = n_in
    for _ in range(cfg.depth):
        layers += [nn.Linear(width, cfg.hidden), nn.GELU()]
        width = cfg.hidden
    layers.append(nn.Linear(width, n_out))
    return nn.Sequential(*layers)


class Normalize(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1)


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint64)[0] % (2**63 - 1))


def _cosine(cfg: PredictorConfig):
    return lambda s: 0.5 * (1.0 + math.cos(math.pi * min(s, cfg.steps) / cfg.steps))


def train_predictor(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    cfg: PredictorConfig,
    seed: int,
) -> nn.Module:
    """Minibatch AdamW with cosine decay on ``inputs``/``labels`` (rows already restricted to the
    training rows); minibatches are drawn with replacement from a generator seeded by ``seed``.
    One model; :func:`train_predictors` trains several seeds at once and gives the same result."""
    device = inputs.device
    with _few_threads(device):
        gen = torch.Generator().manual_seed(seed)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _cosine(cfg))
        n = len(inputs)
        model.train()
        for _ in range(cfg.steps):
            idx = torch.randint(0, n, (min(cfg.batch_size, n),), generator=gen).to(device)
            loss = loss_fn(model(inputs[idx]), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


def train_predictors(
    models: Sequence[nn.Module],
    inputs: torch.Tensor,
    labels: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    cfg: PredictorConfig,
    seeds: Sequence[int],
) -> list[nn.Module]:
    """Train same-architecture models (one per seed) side by side: their parameters are stacked and
    the forward pass is vmapped, so a step costs about what one model's does. Each model has its own
    minibatch generator and the loss is the *sum* of the per-model losses, so each model's gradient
    is its own; AdamW is elementwise, so every model follows exactly the trajectory
    :func:`train_predictor` gives it (up to float summation order)."""
    from torch.func import functional_call, stack_module_state, vmap

    device = inputs.device
    with _few_threads(device):
        params, buffers = stack_module_state(list(models))
        base = copy.deepcopy(models[0]).to("meta")

        def forward(p, b, x):
            return functional_call(base, (p, b), (x,))

        gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
        opt = torch.optim.AdamW(list(params.values()), lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _cosine(cfg))
        n, b = len(inputs), min(cfg.batch_size, len(inputs))
        batched = vmap(forward)
        for _ in range(cfg.steps):
            idx = torch.stack([torch.randint(0, n, (b,), generator=g) for g in gens]).to(device)
            out = batched(params, buffers, inputs[idx])
            loss = sum(loss_fn(out[i], labels[idx[i]]) for i in range(len(models)))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    trained = []
    for i, m in enumerate(models):
        m.load_state_dict({**{k: v[i].detach() for k, v in params.items()}, **{k: v[i] for k, v in buffers.items()}})
        trained.append(m.eval())
    return trained


@contextmanager
def _few_threads(device):
    """One intra-op thread on CPU: these models are far too small to gain from more, and on a busy
    machine extra threads only wait on each other (measured: 1.5 ms vs 40 ms a step on 2 loaded cores)."""
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@torch.no_grad()
def _predict(model: nn.Module, inputs: torch.Tensor, batch_size: int = 4096) -> np.ndarray:
    return torch.cat([model(inputs[a:a + batch_size]).float().cpu() for a in range(0, len(inputs), batch_size)]).numpy()


def summarise_seeds(values: Sequence[float]) -> dict:
    """{mean, std, values} over seeds; NaN values are left out of mean and std (and kept as None)."""
    vals = [float(v) for v in values]
    finite = [v for v in vals if math.isfinite(v)]
    mean = float(np.mean(finite)) if finite else math.nan
    std = float(np.std(finite, ddof=1)) if len(finite) > 1 else (0.0 if finite else math.nan)
    return {"mean": mean, "std": std, "values": vals}
