"""Every downstream target predicted from each encoder's representations, and the two baselines."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict

import numpy as np
import torch
from torch import nn

from ...config import PREDICTOR_SEEDS
from .predictors import (RANDOM_SEED, Normalize, PredictorConfig, _predict, _seed, make_head, random_representations,
                         summarise_seeds, train_predictors)
from .targets import EVAL_SPLITS, Target, _column, split_rows, targets_for

DEFAULT_SEEDS = PREDICTOR_SEEDS


def _evaluate(
    make_model: Callable[[Target, int], nn.Module],
    inputs: np.ndarray | torch.Tensor,
    table,
    zoo_kind: str,
    split_seed: int,
    seeds: Sequence[int],
    snapshot_steps: Sequence[int] | None,
    cfg: PredictorConfig,
    device,
    targets: Sequence[str] | None,
    scheme: str = "ours",
) -> dict:
    """Train one model per (target, seed) with ``make_model`` on the fit rows and score the test splits."""
    device = torch.device(device or "cpu")
    rows = split_rows(table, zoo_kind, split_seed, scheme)
    x_all = torch.from_numpy(np.array(inputs, dtype=np.float32))  # a copy: Arrow-backed arrays are read-only
    if len(x_all) != len(table):
        raise ValueError(f"{len(x_all)} input rows for a table of {len(table)} rows")
    fit = rows["fit"]
    x_fit = x_all[fit].to(device)
    x_eval = {s: x_all[rows[s]].to(device) for s in EVAL_SPLITS}
    results: dict[str, dict] = {}
    for ti, target in enumerate(targets_for(zoo_kind, snapshot_steps, table)):
        if targets is not None and target.name not in targets:
            continue
        y = target.values(table)
        enc = target.prepare(y, fit)
        y_fit = enc.train_y[fit].to(device)
        per_seed: dict[str, dict[str, list[float]]] = {s: {m: [] for m in target.metrics} for s in EVAL_SPLITS}
        models = []
        for seed in seeds:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(_seed(seed, ti, 1))
                models.append(make_model(target, seed).to(device))
        models = train_predictors(models, x_fit, y_fit, enc.loss, cfg, [_seed(seed, ti, 2) for seed in seeds])
        for model in models:
            for s in EVAL_SPLITS:
                scores = enc.score(_predict(model, x_eval[s]), y[rows[s]])
                for m in target.metrics:
                    per_seed[s][m].append(scores[m])
        results[target.name] = {s: {m: summarise_seeds(v) for m, v in per_seed[s].items()} for s in EVAL_SPLITS}
    return {
        "results": results,
        "rows": {s: int(len(rows[s])) for s in ("train", "ood_train", "fit", "val", "ood_test")},
        "seeds": [int(s) for s in seeds],
    }


def evaluate_representations(
    reps,
    table,
    zoo_kind: str,
    split_seed: int = 0,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    *,
    snapshot_steps: Sequence[int] | None = None,
    config: PredictorConfig | None = None,
    device=None,
    targets: Sequence[str] | None = None,
    scheme: str = "ours",
) -> dict:
    """Every downstream target of the zoo kind, predicted from frozen representations ``reps``
    (N, 16), one row per table row. Returns ``{"results": {target: {split: {metric: {mean, std,
    values}}}}, "rows": {split: n}, "seeds": [...]}`` with splits ``val`` and ``ood_test``."""
    cfg = config or PredictorConfig()
    reps = np.asarray(reps, dtype=np.float32)
    if reps.ndim != 2:
        raise ValueError(f"representations must be (N, d), got shape {reps.shape}")
    d = reps.shape[1]
    return _evaluate(lambda t, s: make_head(t.n_out, cfg, d), reps, table, zoo_kind, split_seed, seeds,
                     snapshot_steps, cfg, device, targets, scheme)


def stats_features(encoder: nn.Module, params, batch_size: int = 512) -> np.ndarray | None:
    """The ``stats`` encoder's parameter-free front (asinh of block statistics), or None for any
    other encoder. ``encoder.head(encoder.body(features))`` equals ``encoder(params)``."""
    from ...encoders.mlp import StatsEncoder, block_statistics

    if not isinstance(encoder, StatsEncoder):
        return None
    outs = []
    with torch.no_grad():
        for a in range(0, len(params), batch_size):
            x = torch.from_numpy(np.array(params[a:a + batch_size], dtype=np.float32))
            outs.append(torch.asinh(block_statistics(encoder.layout, x * encoder.input_scale)))
    return torch.cat(outs).numpy()


def supervised_baseline(
    table,
    zoo_kind: str,
    layout,
    split_seed: int = 0,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    *,
    encoder: str = "stats",
    hparams: Mapping | None = None,
    snapshot_steps: Sequence[int] | None = None,
    config: PredictorConfig | None = None,
    device=None,
    targets: Sequence[str] | None = None,
    scheme: str = "ours",
) -> dict:
    """An encoder trained end to end on each downstream target (same head, loss, rows and steps as
    the frozen predictors). Same return format as :func:`evaluate_representations`, plus the
    encoder's name, hyperparameters and trainable parameter count (with its head)."""
    from ...encoders import build_encoder, count_params

    cfg = config or PredictorConfig()
    hp = {"width": 64, "depth": 1} if hparams is None and encoder in ("stats", "flat") else dict(hparams or {})
    params = _column(table, "params")
    with torch.device("meta"):  # only its structure is needed: nothing initialised, no RNG drawn
        probe = build_encoder(encoder, layout, zoo_kind, **hp)
    feats = stats_features(probe, params)

    def make_model(target: Target, seed: int) -> nn.Module:
        enc = build_encoder(encoder, layout, zoo_kind, **hp)
        front = nn.Sequential(enc.body, enc.head) if feats is not None else enc
        return nn.Sequential(front, Normalize(), make_head(target.n_out, cfg))

    inputs = feats if feats is not None else params
    out = _evaluate(make_model, inputs, table, zoo_kind, split_seed, seeds, snapshot_steps, cfg, device, targets, scheme)
    first = targets_for(zoo_kind, snapshot_steps)[0]
    with torch.device("meta"):
        n_params = count_params(make_model(first, 0))
    out.update(encoder=encoder, hparams=hp, n_params=int(n_params))
    return out


def evaluate_all(
    encoder_reps: Mapping[str, np.ndarray],
    table,
    zoo_kind: str,
    layout,
    split_seed: int = 0,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    *,
    snapshot_steps: Sequence[int] | None = None,
    config: PredictorConfig | None = None,
    device=None,
    supervised_encoder: str = "stats",
    progress: bool = False,
    scheme: str = "ours",
) -> dict:
    """Frozen-representation results for every encoder plus both baselines, in one dict:
    ``{"encoders": {name: result}, "baselines": {"random": result, "supervised": result}}``."""
    cfg = config or PredictorConfig()
    kw = dict(snapshot_steps=snapshot_steps, config=cfg, device=device, scheme=scheme)
    out: dict = {"encoders": {}, "baselines": {}, "predictor": asdict(cfg)}
    for name, reps in encoder_reps.items():
        t0 = time.time()
        out["encoders"][name] = evaluate_representations(reps, table, zoo_kind, split_seed, seeds, **kw)
        out["encoders"][name]["seconds"] = round(time.time() - t0, 2)
        if progress:
            print(f"  downstream {name:<15} {time.time() - t0:6.1f} s", flush=True)
    t0 = time.time()
    rnd = evaluate_representations(random_representations(len(table)), table, zoo_kind, split_seed, seeds, **kw)
    out["baselines"]["random"] = {**rnd, "seed": RANDOM_SEED, "seconds": round(time.time() - t0, 2)}
    if progress:
        print(f"  downstream {'random':<15} {time.time() - t0:6.1f} s", flush=True)
    t0 = time.time()
    sup = supervised_baseline(table, zoo_kind, layout, split_seed, seeds, encoder=supervised_encoder, **kw)
    out["baselines"]["supervised"] = {**sup, "seconds": round(time.time() - t0, 2)}
    if progress:
        print(f"  downstream {'supervised':<15} {time.time() - t0:6.1f} s  ({supervised_encoder}, end to end)", flush=True)
    return out
