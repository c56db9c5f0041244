"""Downstream tasks (SPEC.md section 7): what a frozen representation tells about its RNN.

A small MLP (the *predictor*) is trained on frozen, L2-normalised 16-d representations of zoo
snapshots and tested on RNNs whose tasks it never saw:

* **data**: the encoders' train split plus one half of the OOD tasks (``ood_train``) train the
  predictor; it is tested on the other half (``ood_test``) and on the validation split. The splits
  are :mod:`rnnray.splits`' (by distinct task, so no task crosses from training to testing);
* **targets** (per snapshot)

  ====== =============== ======================= ===============================
  zoo    target          output and loss         metrics
  ====== =============== ======================= ===============================
  A      ``task``        3 x 6-way, CE (mean)    ``exact_acc`` (all three right),
                                                 ``head_acc`` (mean per offset)
  A      ``accuracy``    scalar, MSE             ``r2``, ``mae``
  B      ``angle``       (cos, sin), MSE         ``err_deg`` (mean abs. wrapped)
  B      ``accuracy``    scalar, MSE             ``r2``, ``mae``  (held-out acc.)
  B      ``gap``         scalar, MSE             ``r2``, ``mae``  (held-out - train loss)
  B      ``step``        n_snapshots-way, CE     ``acc``
  ====== =============== ======================= ===============================

Modelling choices written down:

* **Predictor**: ``Linear(16, 64) -> GELU -> Linear(64, 64) -> GELU -> Linear(64, out)``, one per
  target and seed; AdamW (lr 3e-3, weight decay 1e-4), minibatches of 256 rows drawn with
  replacement, 2,000 steps with a cosine learning-rate decay to zero. A *fixed* number of steps
  and no early stopping: the test splits must never choose anything, and there is no third split
  to choose on. Fixed settings for every encoder, so differences come from the representations.
  The seeds' predictors of one target train side by side (stacked parameters, ``torch.func.vmap``),
  which gives exactly what training them one by one gives, at about the cost of one on a GPU.
* **Scalar targets are standardised** (mean and standard deviation of the training rows) for the
  loss, so one learning rate suits accuracies in [0, 1] and loss gaps alike; metrics are computed
  in the target's own units.
* **Angles** are regressed as (cos, sin) so 359 and 1 degrees are neighbours; the predicted angle
  is ``atan2(sin, cos)`` (the norm of the output is ignored).
* **Training step** classes are the zoo's snapshot steps from its manifest, in order, so the
  number of classes is the zoo's, not the 9 of the paper's schedule if a zoo was built otherwise.
* **Seeds**: every figure is repeated for predictor seeds (default 0, 1, 2): the seed sets the
  MLP's initialisation and its minibatch draws. Reported as mean, standard deviation across seeds
  (``ddof=1``; 0 with a single seed) and the per-seed values.
* **R^2** is ``1 - SS_res / SS_tot`` about the *test* set's own mean (a predictor that outputs the
  test mean scores 0; a constant training mean can score below 0 on a shifted OOD split); it is
  undefined (NaN, ``null`` in JSON) when the test targets are constant.

Baselines, on the same splits and predictor:

* **random**: a Gaussian 16-d vector per snapshot, unit-normalised, from a fixed seed (independent
  of the predictor seed): the chance level of every metric on these splits.
* **supervised**: an encoder (``stats`` by default, kept small: width 64, depth 1, about 27k
  parameters with the head) trained *end to end* on the downstream
  target with the same head, loss, data and steps (encoder -> L2 normalisation -> head): what the
  weights tell when the representation is shaped for the target rather than for emulation.
  ``stats``' block statistics have no parameters, so they are computed once for all rows and only
  its MLP trains, which is exactly end-to-end training of that encoder and far cheaper. No
  permutation augmentation (``stats`` is invariant; another encoder named here trains without it).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .encoders.common import REPRESENTATION_DIM
from .splits import make_splits, task_key

EVAL_SPLITS = ("val", "ood_test")
TRAIN_SPLITS = ("train", "ood_train")
DEFAULT_SEEDS = (0, 1, 2)
RANDOM_SEED = 12345
TASK_OFFSETS = 6  # t_i in {-3, ..., 2}
TASK_SHIFT = 3


# ------------------------------------------------------------------------------------------------
# metrics: pure functions of numpy arrays


def exact_task_accuracy(pred, true) -> float:
    """Fraction of rows whose every offset is right: (N, 3) class ids (or offsets) each."""
    pred, true = np.asarray(pred), np.asarray(true)
    if pred.shape != true.shape or pred.ndim != 2:
        raise ValueError(f"expected two (N, k) arrays of the same shape, got {pred.shape} and {true.shape}")
    return float((pred == true).all(axis=1).mean())


def accuracy(pred, true) -> float:
    """Fraction of equal entries (class ids)."""
    pred, true = np.asarray(pred), np.asarray(true)
    if pred.shape != true.shape:
        raise ValueError(f"shapes differ: {pred.shape} and {true.shape}")
    return float((pred == true).mean())


def r2(true, pred) -> float:
    """Coefficient of determination about the true values' own mean; NaN when they are constant."""
    true, pred = np.asarray(true, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    ss_tot = float(((true - true.mean()) ** 2).sum())
    if ss_tot == 0.0:
        return math.nan
    return 1.0 - float(((true - pred) ** 2).sum()) / ss_tot


def mae(true, pred) -> float:
    """Mean absolute error."""
    return float(np.abs(np.asarray(true, dtype=np.float64) - np.asarray(pred, dtype=np.float64)).mean())


def angle_difference_deg(a, b) -> np.ndarray:
    """Absolute angular distance in degrees, wrapped into [0, 180] (359 vs 1 -> 2)."""
    d = (np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64) + 180.0) % 360.0 - 180.0
    return np.abs(d)


def angle_error_deg(pred_deg, true_deg) -> float:
    """Mean absolute wrapped angle error in degrees."""
    return float(angle_difference_deg(pred_deg, true_deg).mean())


def cos_sin_to_deg(out) -> np.ndarray:
    """(N, 2) (cos, sin) outputs -> angles in [0, 360)."""
    out = np.asarray(out, dtype=np.float64)
    return np.degrees(np.arctan2(out[:, 1], out[:, 0])) % 360.0


# ------------------------------------------------------------------------------------------------
# targets


@dataclass(frozen=True)
class Target:
    name: str
    kind: str  # "task" | "scalar" | "angle" | "class"
    n_out: int
    metrics: tuple[str, ...]
    description: str


def targets_for(zoo_kind: str, snapshot_steps: Sequence[int] | None = None) -> list[Target]:
    """The downstream targets of a zoo kind (SPEC.md section 7)."""
    if zoo_kind == "formal_languages":
        return [
            Target("task", "task", 3 * TASK_OFFSETS, ("exact_acc", "head_acc"), "the task (t1, t2, t3): three 6-way heads"),
            Target("accuracy", "scalar", 1, ("r2", "mae"), "the RNN's accuracy (fraction of samples in its language)"),
        ]
    if zoo_kind == "mnist":
        n_steps = len(snapshot_steps) if snapshot_steps is not None else 9
        return [
            Target("angle", "angle", 2, ("err_deg",), "the rotation angle, as (cos, sin)"),
            Target("accuracy", "scalar", 1, ("r2", "mae"), "held-out accuracy"),
            Target("gap", "scalar", 1, ("r2", "mae"), "generalisation gap (held-out loss - training loss)"),
            Target("step", "class", n_steps, ("acc",), f"training step ({n_steps}-way over the snapshot steps)"),
        ]
    raise ValueError(f"unknown zoo kind {zoo_kind!r}")


def _column(table, name: str) -> np.ndarray:
    col = table.column(name).combine_chunks()
    return col.to_numpy_ndarray() if hasattr(col, "to_numpy_ndarray") else col.to_numpy(zero_copy_only=False)


def target_values(table, zoo_kind: str, snapshot_steps: Sequence[int] | None = None) -> dict[str, np.ndarray]:
    """Per-row target arrays: task (N, 3) class ids, scalars (N,), angle in degrees (N,), step class (N,)."""
    out: dict[str, np.ndarray] = {}
    if zoo_kind == "formal_languages":
        task = _column(table, "task").astype(np.int64).reshape(len(table), -1)
        ids = task[:, 1:] + TASK_SHIFT
        if ids.min() < 0 or ids.max() >= TASK_OFFSETS:
            raise ValueError("task offsets outside {-3, ..., 2}")
        out["task"] = ids
        out["accuracy"] = _column(table, "accuracy").astype(np.float64)
        return out
    out["angle"] = _column(table, "angle").astype(np.float64)
    out["accuracy"] = _column(table, "accuracy").astype(np.float64)
    out["gap"] = _column(table, "heldout_loss").astype(np.float64) - _column(table, "train_loss").astype(np.float64)
    steps = _column(table, "step").astype(np.int64)
    snaps = sorted(set(steps.tolist())) if snapshot_steps is None else [int(s) for s in snapshot_steps]
    index = {s: i for i, s in enumerate(snaps)}
    unknown = sorted(set(steps.tolist()) - set(index))
    if unknown:
        raise ValueError(f"snapshot steps {unknown[:5]} are not in the zoo's snapshot list {snaps}")
    out["step"] = np.array([index[s] for s in steps.tolist()], dtype=np.int64)
    return out


def split_rows(table, zoo_kind: str, split_seed: int = 0) -> dict[str, np.ndarray]:
    """Row indices of the predictor's splits: ``fit`` (= train + ood_train), ``val``, ``ood_test``,
    and ``train`` / ``ood_train`` on their own. Splits come from :func:`rnnray.splits.make_splits`
    on the table's runs, so pass the whole zoo's table to get the zoo's splits (the split of a task
    depends on which other tasks exist)."""
    runs = _column(table, "run_id").astype(np.int64)
    tasks = _column(table, "task" if zoo_kind == "formal_languages" else "angle")
    run_tasks: dict[int, object] = {}
    for r, t in zip(runs.tolist(), tasks):
        key = task_key(zoo_kind, t)
        if run_tasks.setdefault(r, key) != key:
            raise ValueError(f"run {r} has snapshots with different tasks")
    splits = make_splits(run_tasks, zoo_kind, split_seed)
    out = {}
    for s in ("train", "ood_train", "val", "ood_test"):
        out[s] = np.flatnonzero(np.isin(runs, np.asarray(splits.runs(s), dtype=np.int64)))
    out["fit"] = np.sort(np.concatenate([out["train"], out["ood_train"]]))
    return out


# ------------------------------------------------------------------------------------------------
# representations


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


# ------------------------------------------------------------------------------------------------
# the predictor


@dataclass(frozen=True)
class PredictorConfig:
    """Settings of every downstream predictor (see the module docstring for why they are fixed)."""

    hidden: int = 64
    depth: int = 2
    steps: int = 2000
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


class _Encoded:
    """A target's training labels and how outputs turn into metrics."""

    def __init__(self, target: Target, y: np.ndarray, fit_rows: np.ndarray):
        self.target = target
        self.mean, self.std = 0.0, 1.0
        if target.kind == "scalar":
            self.mean = float(y[fit_rows].mean())
            sd = float(y[fit_rows].std())
            self.std = sd if sd > 1e-12 else 1.0
            self.train_y = torch.as_tensor((y - self.mean) / self.std, dtype=torch.float32).unsqueeze(-1)
        elif target.kind == "angle":
            rad = np.radians(y)
            self.train_y = torch.as_tensor(np.stack([np.cos(rad), np.sin(rad)], -1), dtype=torch.float32)
        else:  # task (N, 3) or class (N,)
            self.train_y = torch.as_tensor(y, dtype=torch.long)

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        kind = self.target.kind
        if kind == "task":
            return F.cross_entropy(out.reshape(-1, TASK_OFFSETS), y.reshape(-1))
        if kind == "class":
            return F.cross_entropy(out, y)
        return F.mse_loss(out, y)

    def score(self, out: np.ndarray, y: np.ndarray) -> dict[str, float]:
        kind = self.target.kind
        if kind == "task":
            pred = out.reshape(len(out), -1, TASK_OFFSETS).argmax(-1)
            return {"exact_acc": exact_task_accuracy(pred, y), "head_acc": accuracy(pred, y)}
        if kind == "class":
            return {"acc": accuracy(out.argmax(-1), y)}
        if kind == "angle":
            return {"err_deg": angle_error_deg(cos_sin_to_deg(out), y)}
        pred = out[:, 0].astype(np.float64) * self.std + self.mean
        return {"r2": r2(y, pred), "mae": mae(y, pred)}


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
) -> dict:
    """Train one model per (target, seed) with ``make_model`` on the fit rows and score the test splits."""
    device = torch.device(device or "cpu")
    rows = split_rows(table, zoo_kind, split_seed)
    ys = target_values(table, zoo_kind, snapshot_steps)
    x_all = torch.from_numpy(np.array(inputs, dtype=np.float32))  # a copy: Arrow-backed arrays are read-only
    if len(x_all) != len(table):
        raise ValueError(f"{len(x_all)} input rows for a table of {len(table)} rows")
    fit = rows["fit"]
    x_fit = x_all[fit].to(device)
    x_eval = {s: x_all[rows[s]].to(device) for s in EVAL_SPLITS}
    results: dict[str, dict] = {}
    for ti, target in enumerate(targets_for(zoo_kind, snapshot_steps)):
        if targets is not None and target.name not in targets:
            continue
        enc = _Encoded(target, ys[target.name], fit)
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
                scores = enc.score(_predict(model, x_eval[s]), ys[target.name][rows[s]])
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
                     snapshot_steps, cfg, device, targets)


def stats_features(encoder: nn.Module, params, batch_size: int = 512) -> np.ndarray | None:
    """The ``stats`` encoder's parameter-free front (asinh of block statistics), or None for any
    other encoder. ``encoder.head(encoder.body(features))`` equals ``encoder(params)``."""
    from .encoders.mlp import StatsEncoder, block_statistics

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
) -> dict:
    """An encoder trained end to end on each downstream target (same head, loss, rows and steps as
    the frozen predictors). Same return format as :func:`evaluate_representations`, plus the
    encoder's name, hyperparameters and trainable parameter count (with its head)."""
    from .encoders import build_encoder, count_params

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
    out = _evaluate(make_model, inputs, table, zoo_kind, split_seed, seeds, snapshot_steps, cfg, device, targets)
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
) -> dict:
    """Frozen-representation results for every encoder plus both baselines, in one dict:
    ``{"encoders": {name: result}, "baselines": {"random": result, "supervised": result}}``."""
    cfg = config or PredictorConfig()
    kw = dict(snapshot_steps=snapshot_steps, config=cfg, device=device)
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


# ------------------------------------------------------------------------------------------------
# flat views for tables


SPLIT_LABELS = {"ood_test": "ood", "val": "val"}


def metric_columns(zoo_kind: str, snapshot_steps: Sequence[int] | None = None) -> list[tuple[str, str, str, str]]:
    """(column name, target, split, metric) for every downstream figure, OOD test first."""
    cols = []
    for split in ("ood_test", "val"):
        for t in targets_for(zoo_kind, snapshot_steps):
            for m in t.metrics:
                cols.append((f"ds_{SPLIT_LABELS[split]}_{t.name}_{m}", t.name, split, m))
    return cols


def flat_metrics(result: Mapping, zoo_kind: str, snapshot_steps: Sequence[int] | None = None) -> dict[str, float | None]:
    """One result -> ``{ds_<split>_<target>_<metric>: mean, ..._std: std}`` (None where undefined)."""
    row: dict[str, float | None] = {}
    for col, target, split, metric in metric_columns(zoo_kind, snapshot_steps):
        cell = result.get("results", {}).get(target, {}).get(split, {}).get(metric)
        for suffix, key in (("", "mean"), ("_std", "std")):
            v = None if cell is None else cell.get(key)
            row[col + suffix] = v if v is not None and math.isfinite(v) else None
    return row


def jsonable(obj):
    """NaN and infinities -> None, numpy scalars -> Python, recursively (strict JSON)."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj
