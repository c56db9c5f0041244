"""Splits by task (SPEC.md section 4): which RNNs train the encoders, which validate, which are OOD.

Splits are made over *distinct tasks*, never over snapshots or runs, so two RNNs trained on the
same task (and every snapshot of one RNN) always land in the same split: a model can never be
validated on a language or angle it has seen in training.

Procedure, with the choices the spec leaves open written down:

1. Order the distinct tasks by a criterion, ascending. Zoo A: the entropy of the normalised counts
   ``(1 + t - min t) / sum(1 + t - min t)``; the entropy is computed from the *sorted* counts so
   that permutations of the same counts (equally balanced languages) tie exactly, not up to float
   rounding. Zoo B: the angle. Ties are broken by the task itself (the offset tuple, or the angle),
   so the order, and therefore the OOD cut, is a pure function of the set of tasks.
2. The last ``n_ood`` tasks are OOD (most balanced languages / largest angles).
3. The rest are shuffled with ``numpy.random.default_rng([seed, 0])`` (PCG64, stable across numpy
   versions); the first ``n_train`` are train, the remaining ``n_val`` validation.
4. For downstream tasks the OOD tasks are shuffled with ``default_rng([seed, 1])``: the first
   ``n_ood // 2`` are ``ood_train`` (added to the predictors' training data), the rest ``ood_test``.

Rounding: with ``n`` distinct tasks, ``n_ood = n_val = max(1, floor(0.15 n + 0.5))`` (round half
up) and ``n_train = n - n_ood - n_val`` takes the remainder, so nothing is lost to rounding and a
tiny zoo still has a validation and an OOD task. At least 3 distinct tasks are needed.

``scheme="authors"`` reproduces the authors' split of their released zoos instead (SPEC.md section
8), bit for bit: tasks in ``numpy.unique`` order, sorted by ``numpy.argsort`` of their criterion
(NumPy's default, unstable sort, so tied tasks fall where it puts them; zoo A's entropy with
``log(p + 1e-6)`` on the unsorted counts), ``n_train = int(0.7 n)`` and ``n_val = int(0.15 n)`` as
Python computes them (so OOD takes the remainder), the in-distribution tasks permuted by NumPy's
legacy generator seeded 1 (train first), the OOD tasks by the legacy generator seeded 2, of which
the first ``n_ood // 2`` stay OOD test and the rest join the downstream training set. It differs
from ours in the criterion's ties (ours break them by the task; theirs by the sort), the rounding
(theirs truncates, so OOD can be one or two tasks larger), the generators (ours PCG64 seeded by
``seed``; theirs fixed legacy seeds, so ``split_seed`` does not apply) and which OOD half comes
first.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import SPLIT_SCHEMES
from ..kinds import KIND_NAMES, zoo_kind

OOD_FRACTION = 0.15
VAL_FRACTION = 0.15
TRAIN_FRACTION = 0.70
SPLITS = ("train", "val", "ood")
SCHEMES = SPLIT_SCHEMES
OOD_HALVES = ("ood_train", "ood_test")
KINDS = KIND_NAMES


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def task_key(kind: str, task) -> Hashable:
    """A task as a hashable, orderable value: the offset tuple (zoo A) or the angle as a float (zoo B)."""
    return zoo_kind(kind).task.key(task)


def criterion(kind: str, task) -> float:
    """The sort key whose largest values are OOD: count entropy (zoo A) or angle (zoo B)."""
    return zoo_kind(kind).task.criterion(task_key(kind, task))


def split_sizes(n: int) -> dict[str, int]:
    """How many of ``n`` distinct tasks go to each split (see the module docstring for the rounding)."""
    if n < 3:
        raise ValueError(f"need at least 3 distinct tasks to make train/val/OOD splits, got {n}")
    n_ood = max(1, _round_half_up(OOD_FRACTION * n))
    n_val = max(1, _round_half_up(VAL_FRACTION * n))
    return {"train": n - n_ood - n_val, "val": n_val, "ood": n_ood}


def split_tasks(tasks: Iterable, kind: str, seed: int = 0) -> dict[Hashable, str]:
    """Distinct tasks -> "train" | "val" | "ood". Duplicates in ``tasks`` are fine (they are merged)."""
    distinct = sorted({task_key(kind, t) for t in tasks}, key=lambda k: (criterion(kind, k), k))
    sizes = split_sizes(len(distinct))
    in_dist, ood = distinct[: len(distinct) - sizes["ood"]], distinct[len(distinct) - sizes["ood"]:]
    order = np.random.default_rng([seed, 0]).permutation(len(in_dist))
    shuffled = [in_dist[i] for i in order]
    out = {t: "train" for t in shuffled[: sizes["train"]]}
    out.update({t: "val" for t in shuffled[sizes["train"]:]})
    out.update({t: "ood" for t in ood})
    return out


def ood_halves(ood_tasks: Iterable, kind: str, seed: int = 0) -> dict[Hashable, str]:
    """OOD tasks -> "ood_train" | "ood_test" (downstream predictors fit on one half, are tested on the other)."""
    distinct = sorted({task_key(kind, t) for t in ood_tasks}, key=lambda k: (criterion(kind, k), k))
    order = np.random.default_rng([seed, 1]).permutation(len(distinct))
    shuffled = [distinct[i] for i in order]
    half = len(shuffled) // 2
    return {t: ("ood_train" if i < half else "ood_test") for i, t in enumerate(shuffled)}


def authors_criterion(kind: str, task) -> float:
    """The authors' sort key: zoo A's entropy exactly as they compute it (unsorted counts, log(p + 1e-6)), zoo B's angle."""
    return zoo_kind(kind).task.authors_criterion(task)


def authors_split_tasks(tasks: Iterable, kind: str) -> tuple[dict[Hashable, str], dict[Hashable, str]]:
    """Distinct tasks -> train | val | ood, and OOD tasks -> ood_train | ood_test, as the authors split
    their released zoos (see the module docstring)."""
    keys = {task_key(kind, t) for t in tasks}
    arr = np.unique(np.array(sorted(keys), dtype=zoo_kind(kind).task.dtype).reshape(len(keys), -1), axis=0)
    n = len(arr)
    if n < 3:
        raise ValueError(f"need at least 3 distinct tasks to make train/val/OOD splits, got {n}")
    order = np.argsort(np.array([authors_criterion(kind, t) for t in arr]))
    ranked = [task_key(kind, arr[i]) for i in order]
    n_train, n_val = int(n * (1 - 0.15 - 0.15)), int(n * 0.15)
    in_dist, ood = ranked[: n_train + n_val], ranked[n_train + n_val:]
    perm = np.random.RandomState(1).permutation(n_train + n_val)
    split = {in_dist[i]: ("train" if j < n_train else "val") for j, i in enumerate(perm)}
    split.update({t: "ood" for t in ood})
    perm = np.random.RandomState(2).permutation(len(ood))
    halves = {ood[i]: ("ood_test" if j < len(ood) // 2 else "ood_train") for j, i in enumerate(perm)}
    return split, halves


@dataclass(frozen=True)
class Splits:
    """The split of every task and run of one zoo. ``run_split`` is what training uses."""

    kind: str
    seed: int
    task_split: dict[Hashable, str]  # task -> train | val | ood
    run_task: dict[int, Hashable] = field(repr=False)  # run id -> task
    task_half: dict[Hashable, str] = field(repr=False)  # OOD task -> ood_train | ood_test
    scheme: str = "ours"

    @property
    def run_split(self) -> dict[int, str]:
        """run id -> "train" | "val" | "ood" (a run's split is its task's)."""
        return {r: self.task_split[t] for r, t in self.run_task.items()}

    @property
    def run_half(self) -> dict[int, str]:
        """OOD run id -> "ood_train" | "ood_test"."""
        return {r: self.task_half[t] for r, t in self.run_task.items() if t in self.task_half}

    def runs(self, split: str) -> list[int]:
        """Sorted run ids of a split: "train", "val", "ood", "ood_train" or "ood_test"."""
        if split in SPLITS:
            return sorted(r for r, s in self.run_split.items() if s == split)
        if split in OOD_HALVES:
            return sorted(r for r, s in self.run_half.items() if s == split)
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS + OOD_HALVES}")

    def tasks(self, split: str) -> list[Hashable]:
        """The tasks of a split, in criterion order."""
        table = self.task_half if split in OOD_HALVES else self.task_split
        return sorted((t for t, s in table.items() if s == split), key=lambda k: (criterion(self.kind, k), k))

    def summary(self) -> dict[str, dict[str, int]]:
        return {s: {"tasks": len(self.tasks(s)), "runs": len(self.runs(s))} for s in SPLITS + OOD_HALVES}


def make_splits(run_tasks: Mapping[int, object], kind: str, seed: int = 0, scheme: str = "ours") -> Splits:
    """Splits from ``{run_id: task}`` (task = offsets (4,) for zoo A, angle for zoo B); ``scheme``
    ``ours`` (seeded by ``seed``) or ``authors`` (their released split; ``seed`` does not apply)."""
    run_task = {int(r): task_key(kind, t) for r, t in run_tasks.items()}
    if scheme == "authors":
        task_split, halves = authors_split_tasks(run_task.values(), kind)
    elif scheme == "ours":
        task_split = split_tasks(run_task.values(), kind, seed)
        halves = ood_halves([t for t, s in task_split.items() if s == "ood"], kind, seed)
    else:
        raise ValueError(f"unknown split scheme {scheme!r}; expected one of {SCHEMES}")
    return Splits(kind=kind, seed=seed, task_split=task_split, run_task=run_task, task_half=halves, scheme=scheme)


def zoo_splits(path: str | Path, seed: int = 0, checksums: bool = True, scheme: str = "ours") -> Splits:
    """Splits of a zoo on disk (reads only the run id and task columns)."""
    from ..zoo import ZooError, load_table, read_manifest

    kind = read_manifest(path)["kind"]
    column = zoo_kind(kind).task_column
    table = load_table(path, columns=["run_id", column], checksums=checksums)
    runs = table.column("run_id").to_numpy()
    col = table.column(column).combine_chunks()
    values = col.to_numpy_ndarray() if hasattr(col, "to_numpy_ndarray") else col.to_numpy()
    run_tasks: dict[int, object] = {}
    for r, v in zip(runs.tolist(), values):
        key = task_key(kind, v)
        if run_tasks.setdefault(r, key) != key:
            raise ZooError(f"{path}: run {r} has snapshots with different tasks ({run_tasks[r]} and {key})")
    return make_splits(run_tasks, kind, seed, scheme)
