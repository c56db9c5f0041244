"""What is predicted per snapshot (task, accuracy, angle, gap, step), one object per target, and the rows of each split."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

import torch
import torch.nn.functional as F

from ...kinds import KINDS
from ...emulation.splits import make_splits, task_key
from .metrics import accuracy, angle_error_deg, cos_sin_to_deg, exact_task_accuracy, mae, r2

EVAL_SPLITS = ("val", "ood_test")
TRAIN_SPLITS = ("train", "ood_train")
TASK_OFFSETS = 6  # t_i in {-3, ..., 2}
TASK_SHIFT = 3


def _column(table, name: str) -> np.ndarray:
    col = table.column(name).combine_chunks()
    return col.to_numpy_ndarray() if hasattr(col, "to_numpy_ndarray") else col.to_numpy(zero_copy_only=False)


class Prepared:
    """A target's training labels for one fit (a standardised scalar needs the fit rows' mean and
    spread), the loss the predictor trains with and how its outputs become the metrics."""

    def __init__(self, target: "Target", train_y: torch.Tensor, mean: float = 0.0, std: float = 1.0):
        self.target, self.train_y, self.mean, self.std = target, train_y, mean, std

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.target.loss(out, y)

    def score(self, out: np.ndarray, y: np.ndarray) -> dict[str, float]:
        return self.target.score(out, y, self)


@dataclass(frozen=True)
class Target:
    """One downstream target (SPEC.md section 7): everything about it lives here, so a new target
    is one subclass and one line in :data:`TARGETS`.

    ``name`` keys it in ``downstream.json`` and the CSV columns; ``columns`` are the zoo columns its
    values come from; ``n_out`` the predictor's outputs; ``metrics`` what it is scored by (the
    first ones shown in Markdown tables, ``table_metrics``); ``chance`` what guessing scores where
    that is a number independent of the data (errors have none: the random baseline is theirs)."""

    name: str
    description: str
    columns: tuple[str, ...]
    n_out: int
    metrics: tuple[str, ...]
    table_metrics: tuple[str, ...]
    chance: tuple[tuple[str, float], ...] = ()
    form: ClassVar[str] = ""  # the predictor's output form, recorded in downstream.json

    def values(self, table) -> np.ndarray:
        return _column(table, self.columns[0]).astype(np.float64)

    def prepare(self, y: np.ndarray, fit_rows: np.ndarray) -> Prepared:
        raise NotImplementedError

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def score(self, out: np.ndarray, y: np.ndarray, prepared: Prepared) -> dict[str, float]:
        raise NotImplementedError

    def label(self, metric: str) -> str:
        """A metric's column heading in the report: ``accuracy R²``."""
        return f"{self.name} {METRIC_LABELS.get(metric, metric)}"


METRIC_LABELS = {"exact_acc": "exact acc", "head_acc": "per-offset acc", "r2": "R²", "mae": "MAE",
                 "err_deg": "error °", "acc": "acc"}


@dataclass(frozen=True)
class TaskOffsets(Target):
    """Zoo A's task: three 6-way heads (t1, t2, t3), cross-entropy; exact = all three right."""

    form: ClassVar[str] = "task"

    def values(self, table) -> np.ndarray:
        task = _column(table, "task").astype(np.int64).reshape(len(table), -1)
        ids = task[:, 1:] + TASK_SHIFT
        if ids.min() < 0 or ids.max() >= TASK_OFFSETS:
            raise ValueError("task offsets outside {-3, ..., 2}")
        return ids

    def prepare(self, y, fit_rows) -> Prepared:
        return Prepared(self, torch.as_tensor(y, dtype=torch.long))

    def loss(self, out, y):
        return F.cross_entropy(out.reshape(-1, TASK_OFFSETS), y.reshape(-1))

    def score(self, out, y, prepared):
        pred = out.reshape(len(out), -1, TASK_OFFSETS).argmax(-1)
        return {"exact_acc": exact_task_accuracy(pred, y), "head_acc": accuracy(pred, y)}


@dataclass(frozen=True)
class Scalar(Target):
    """A real number per snapshot, standardised on the fit rows for training, MSE; scored in its own
    units by R² (chance 0: the test split's own mean) and MAE."""

    form: ClassVar[str] = "scalar"

    def prepare(self, y, fit_rows) -> Prepared:
        mean, sd = float(y[fit_rows].mean()), float(y[fit_rows].std())
        std = sd if sd > 1e-12 else 1.0
        return Prepared(self, torch.as_tensor((y - mean) / std, dtype=torch.float32).unsqueeze(-1), mean, std)

    def loss(self, out, y):
        return F.mse_loss(out, y)

    def score(self, out, y, prepared):
        pred = out[:, 0].astype(np.float64) * prepared.std + prepared.mean
        return {"r2": r2(y, pred), "mae": mae(y, pred)}


@dataclass(frozen=True)
class GeneralisationGap(Scalar):
    """Zoo B's held-out loss minus training loss."""

    def values(self, table) -> np.ndarray:
        return _column(table, "heldout_loss").astype(np.float64) - _column(table, "train_loss").astype(np.float64)


@dataclass(frozen=True)
class Angle(Target):
    """Zoo B's rotation angle as (cos, sin), MSE; scored by the mean wrapped error in degrees."""

    form: ClassVar[str] = "angle"

    def prepare(self, y, fit_rows) -> Prepared:
        rad = np.radians(y)
        return Prepared(self, torch.as_tensor(np.stack([np.cos(rad), np.sin(rad)], -1), dtype=torch.float32))

    def loss(self, out, y):
        return F.mse_loss(out, y)

    def score(self, out, y, prepared):
        return {"err_deg": angle_error_deg(cos_sin_to_deg(out), y)}


@dataclass(frozen=True)
class SnapshotStep(Target):
    """The training step as a class over the zoo's snapshot steps, cross-entropy, accuracy."""

    form: ClassVar[str] = "class"

    steps: tuple[int, ...] = ()

    def values(self, table) -> np.ndarray:
        steps = _column(table, "step").astype(np.int64)
        index = {s: i for i, s in enumerate(self.steps)}
        unknown = sorted(set(steps.tolist()) - set(index))
        if unknown:
            raise ValueError(f"snapshot steps {unknown[:5]} are not in the zoo's snapshot list {list(self.steps)}")
        return np.array([index[s] for s in steps.tolist()], dtype=np.int64)

    def prepare(self, y, fit_rows) -> Prepared:
        return Prepared(self, torch.as_tensor(y, dtype=torch.long))

    def loss(self, out, y):
        return F.cross_entropy(out, y)

    def score(self, out, y, prepared):
        return {"acc": accuracy(out.argmax(-1), y)}


DEFAULT_SNAPSHOT_STEPS = 9


def _formal_languages(steps: tuple[int, ...]) -> tuple[Target, ...]:
    return (
        TaskOffsets("task", "the task (t1, t2, t3): three 6-way heads", ("task",), 3 * TASK_OFFSETS,
                    ("exact_acc", "head_acc"), ("exact_acc",), (("exact_acc", 1 / 216), ("head_acc", 1 / 6))),
        Scalar("accuracy", "the RNN's accuracy (fraction of samples in its language)", ("accuracy",), 1,
               ("r2", "mae"), ("r2", "mae"), (("r2", 0.0),)),
    )


def _mnist(steps: tuple[int, ...]) -> tuple[Target, ...]:
    n = len(steps) or DEFAULT_SNAPSHOT_STEPS
    return (
        Angle("angle", "the rotation angle, as (cos, sin)", ("angle",), 2, ("err_deg",), ("err_deg",)),
        Scalar("accuracy", "held-out accuracy", ("accuracy",), 1, ("r2", "mae"), ("r2", "mae"), (("r2", 0.0),)),
        GeneralisationGap("gap", "generalisation gap (held-out loss - training loss)", ("heldout_loss", "train_loss"), 1,
                          ("r2", "mae"), ("r2", "mae"), (("r2", 0.0),)),
        SnapshotStep("step", f"training step ({n}-way over the snapshot steps)", ("step",), n, ("acc",), ("acc",),
                     (("acc", 1 / n),), steps),
    )


# Each zoo kind's targets, given its snapshot steps (the step target's classes).
TARGETS = {"formal_languages": _formal_languages, "mnist": _mnist}


def targets_for(zoo_kind: str, snapshot_steps: Sequence[int] | None = None, table=None) -> list[Target]:
    """The downstream targets of a zoo kind (SPEC.md section 7). The step target's classes are
    ``snapshot_steps`` (the zoo's list), else the steps found in ``table``."""
    if zoo_kind not in TARGETS:
        raise ValueError(f"unknown zoo kind {zoo_kind!r}")
    if snapshot_steps is None and table is not None and "step" in table.column_names:
        snapshot_steps = sorted(set(_column(table, "step").astype(np.int64).tolist()))
    return list(TARGETS[zoo_kind](tuple(int(s) for s in snapshot_steps or ())))


def target_values(table, zoo_kind: str, snapshot_steps: Sequence[int] | None = None) -> dict[str, np.ndarray]:
    """Per-row target arrays: task (N, 3) class ids, scalars (N,), angle in degrees (N,), step class (N,)."""
    return {t.name: t.values(table) for t in targets_for(zoo_kind, snapshot_steps, table)}


def target_columns(zoo_kind: str) -> list[str]:
    """The zoo columns the kind's targets read."""
    return sorted({c for t in targets_for(zoo_kind) for c in t.columns})


def chance_levels(zoo_kind: str, snapshot_steps: Sequence[int]) -> dict[str, float]:
    """What guessing scores, per ``target.metric``, where it is a number independent of the data."""
    return {f"{t.name}.{m}": v for t in targets_for(zoo_kind, snapshot_steps) for m, v in t.chance}


def split_rows(table, zoo_kind: str, split_seed: int = 0, scheme: str = "ours") -> dict[str, np.ndarray]:
    """Row indices of the predictor's splits: ``fit`` (= train + ood_train), ``val``, ``ood_test``,
    and ``train`` / ``ood_train`` on their own. Splits come from :func:`rnnray.emulation.splits.make_splits`
    on the table's runs, so pass the whole zoo's table to get the zoo's splits (the split of a task
    depends on which other tasks exist); ``scheme``: ours or the authors' (:mod:`rnnray.emulation.splits`)."""
    runs = _column(table, "run_id").astype(np.int64)
    tasks = _column(table, KINDS[zoo_kind].task_column)
    run_tasks: dict[int, object] = {}
    for r, t in zip(runs.tolist(), tasks):
        key = task_key(zoo_kind, t)
        if run_tasks.setdefault(r, key) != key:
            raise ValueError(f"run {r} has snapshots with different tasks")
    splits = make_splits(run_tasks, zoo_kind, split_seed, scheme)
    out = {}
    for s in ("train", "ood_train", "val", "ood_test"):
        out[s] = np.flatnonzero(np.isin(runs, np.asarray(splits.runs(s), dtype=np.int64)))
    out["fit"] = np.sort(np.concatenate([out["train"], out["ood_train"]]))
    return out
