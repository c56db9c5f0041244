"""What is predicted per snapshot (task, accuracy, angle, gap, step), its values and the rows of each split."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ...kinds import KINDS
from ...emulation.splits import make_splits, task_key

EVAL_SPLITS = ("val", "ood_test")
TRAIN_SPLITS = ("train", "ood_train")
TASK_OFFSETS = 6  # t_i in {-3, ..., 2}
TASK_SHIFT = 3


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
