"""The batched zoo trainer against PyTorch's own modules, one RNN at a time.

Each RNN is trained a second time as ``torch.nn.LSTM`` + ``torch.nn.Linear`` + ``torch.optim.AdamW``
on the same batches, learning-rate schedule and weight decay, and the weights are compared. The
test suite runs this on the CPU; the GPU check (``python -m rnnray.bench device``) runs it on CUDA.

Tolerances: two correct float32 implementations round differently, and training at lr 0.01
amplifies that (any two, the PyTorch modules included, are ~1e-3 apart after 100 steps, ~1e-5 after
40), so float32 is compared over 40-50 steps to 1e-4 and float64 over the full 100 steps to 1e-7.
TF32 must be off for these figures (PyTorch's default for float32 matrix products).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config import parse_zoo
from .trainer import BETAS, EPS, ChunkTrainer, init_params

RECIPES = {
    "formal_languages": {"kind": "formal_languages", "runs": 3, "steps": 100},
    "mnist": {"kind": "mnist", "runs": 3, "steps": 100, "source": "bundled", "eval_digits": 50},
}
# (steps, max weight difference) per dtype
TOLERANCES = {torch.float32: ({"formal_languages": 50, "mnist": 40}, 1e-4),
              torch.float64: ({"formal_languages": 100, "mnist": 100}, 1e-7)}


def distinct_decay_runs(cfg, n: int = 3) -> list[int]:
    """``n`` runs whose weight decays all differ (zoo B draws the decay per run)."""
    decays = ChunkTrainer(cfg, list(range(16))).wd.tolist()
    runs = [r for r in range(16) if decays[r] not in decays[:r]][:n]
    assert len(runs) == n
    return runs


def max_weight_difference(kind: str, steps: int, dtype: torch.dtype = torch.float32, device="cpu") -> dict[str, float]:
    """Train 3 RNNs of the zoo kind's recipe for ``steps`` updates both ways; the largest absolute
    difference of each parameter tensor (over the 3 runs) after the last update."""
    device = torch.device(device)
    cfg = parse_zoo(RECIPES[kind])
    runs = distinct_decay_runs(cfg) if kind == "mnist" else [0, 1, 2]
    trainer = ChunkTrainer(cfg, runs, device, dtype=dtype)
    batches = [trainer.batch(s) for s in range(steps)]
    for s in range(steps):
        trainer.step(s)
    layout = trainer.layout
    worst = {name: 0.0 for name in layout.names}
    for i, run_id in enumerate(runs):
        lstm, lin = layout.to_modules(init_params(layout, cfg.seed, run_id))
        lstm, lin = lstm.to(device, dtype), lin.to(device, dtype)
        params = list(lstm.parameters()) + list(lin.parameters())
        opt = torch.optim.AdamW(params, lr=cfg.lr(0), betas=BETAS, eps=EPS, weight_decay=float(trainer.wd[i]))
        for s in range(steps):
            x, y = batches[s]
            out = lin(lstm(x[i])[0])
            loss = F.cross_entropy(out.reshape(-1, out.shape[-1]), y[i].reshape(-1))
            for group in opt.param_groups:
                group["lr"] = cfg.lr(s)
            opt.zero_grad()
            loss.backward()
            opt.step()
        mine = layout.split(trainer.flat.detach()[i])
        ref = {n: t.detach() for n, t in lstm.named_parameters()}
        ref |= {"linear.weight": lin.weight.detach(), "linear.bias": lin.bias.detach()}
        for name in layout.names:
            worst[name] = max(worst[name], (mine[name] - ref[name]).abs().max().item())
    return worst
