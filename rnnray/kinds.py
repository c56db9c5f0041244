"""The two kinds of zoo in one table: everything that differs between zoo A and zoo B.

Zoo A (``formal_languages``, SPEC.md section 2) holds generative LSTMs over 6 tokens; zoo B
(``mnist``, section 3) holds classifiers of 16-pixel tiles into 10 digits. Every stage that treats
the two differently (the RNN's layout, the columns a stage reads, the shape of a stored sequence,
the beginning-of-sequence input) looks it up here, so the kinds are spelled in one place.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from .weights import FORMAL_LANGUAGES, MNIST, Layout

TASK_OFFSET_VALUES = 6  # each offset t1..t3 is one of -3..2
TASK_OFFSET_SHIFT = 3  # offset + 3 = its class id 0..5


@dataclass(frozen=True)
class OffsetTasks:
    """Zoo A's task: the occurrence offsets ``(0, t1, t2, t3)`` (SPEC.md section 2)."""

    categorical = True  # three 6-way class ids per task (its features)
    n_features = 3
    dtype = np.int64
    label = "task (index of t1 t2 t3, base 6)"
    colour_map = "turbo"

    def key(self, task) -> Hashable:
        """A task as a hashable, orderable value: the offset tuple."""
        return tuple(int(v) for v in np.asarray(task).reshape(-1))

    def criterion(self, key) -> float:
        """The split's sort key (its largest values are OOD): the entropy of the normalised counts."""
        t = np.asarray(key, dtype=np.float64)
        counts = np.sort(1.0 + t - t.min())  # sorted: permuted offsets give bit-identical entropies
        p = counts / counts.sum()
        return float(-(p * np.log(p)).sum())

    def authors_criterion(self, task) -> float:
        """The authors' entropy exactly as they compute it (unsorted counts, log(p + 1e-6))."""
        t = np.asarray(task, dtype=np.int64).reshape(-1)
        p = (1 + t - t.min()) / (1 + t - t.min()).sum()
        return float(-(p * np.log(p + 1e-6)).sum())

    def features(self, keys: Sequence) -> np.ndarray:
        """Task keys -> (N, 3) class ids of t1..t3."""
        t = np.asarray([list(k) for k in keys], dtype=np.int64).reshape(len(keys), 4)
        return t[:, 1:] + TASK_OFFSET_SHIFT

    def colour(self, tasks) -> np.ndarray:
        """One number per task for a plot's colour: its index among the 216 tasks (base 6)."""
        ids = np.asarray(tasks, dtype=np.int64).reshape(len(tasks), -1)[:, 1:] + TASK_OFFSET_SHIFT
        return ids @ np.array([36, 6, 1])


@dataclass(frozen=True)
class AngleTasks:
    """Zoo B's task: the rotation angle in degrees (SPEC.md section 3)."""

    categorical = False  # (cos, sin) of the angle
    n_features = 2
    dtype = np.float64
    label = "angle (degrees)"
    colour_map = "twilight"

    def key(self, task) -> Hashable:
        return float(np.asarray(task).reshape(()))

    def criterion(self, key) -> float:
        return float(key)

    def authors_criterion(self, task) -> float:
        return float(np.asarray(task, dtype=np.float64).reshape(()))

    def features(self, keys: Sequence) -> np.ndarray:
        rad = np.deg2rad(np.asarray(keys, dtype=np.float64))
        return np.stack([np.cos(rad), np.sin(rad)], axis=1).astype(np.float32)

    def colour(self, tasks) -> np.ndarray:
        return np.asarray(tasks, dtype=np.float64).reshape(-1)


@dataclass(frozen=True)
class ZooKind:
    name: str
    layout: Layout  # the zoo RNN: LSTM(input_size, 32, 2) + Linear(32, output_size)
    task_column: str  # the column naming the task a run was trained on: offsets (4,) or an angle
    sequence_columns: tuple[str, str]  # the stored inputs and the RNN's outputs on them
    token_inputs: bool  # inputs are token ids (one-hot for a network; outputs are log-probabilities) rather than real-valued tiles (outputs are logits)
    bos: str  # what the first input step is
    stored_bytes_per_step: int  # bytes of one stored step of one sequence: input plus output, as stored
    task: OffsetTasks | AngleTasks  # what a task is: its key, split criterion, features, colour
    generative: bool  # a generative model of strings (accuracy = samples in the language), else a classifier

    @property
    def input_size(self) -> int:
        return self.layout.input_size

    @property
    def output_size(self) -> int:
        return self.layout.output_size

    def sequence_bytes(self, seq_len: int) -> int:
        """Bytes of one stored sequence (inputs and outputs). Zoo A stores ``seq_len`` int16 tokens and
        ``seq_len - 1`` float16 log-probability vectors; zoo B 50 float16 tiles and 50 float16 logit vectors."""
        if self.token_inputs:
            return 2 * seq_len + 2 * (seq_len - 1) * self.output_size
        return MNIST_STEPS * self.stored_bytes_per_step


MNIST_STEPS = 50  # the BOS step plus 49 tiles of 4 x 4 pixels

KINDS: dict[str, ZooKind] = {
    "formal_languages": ZooKind(
        "formal_languages", FORMAL_LANGUAGES, "task", ("sequences", "logprobs"), True,
        "token 4 (a, b, c, d are 0 to 3; EOS is 5)", 2 + 2 * FORMAL_LANGUAGES.output_size, OffsetTasks(), True,
    ),
    "mnist": ZooKind(
        "mnist", MNIST, "angle", ("inputs", "logits"), False,
        "a tile of zeros", 2 * MNIST.input_size + 2 * MNIST.output_size, AngleTasks(), False,
    ),
}
KIND_NAMES: tuple[str, ...] = tuple(KINDS)


def zoo_kind(name: str) -> ZooKind:
    """The entry of a zoo kind; ValueError naming the valid ones for anything else."""
    try:
        return KINDS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown zoo kind {name!r}; expected one of {KIND_NAMES}") from None


def kind_of_layout(layout: Layout) -> str | None:
    """The zoo kind whose RNNs have this layout's input size, or None."""
    return next((k.name for k in KINDS.values() if k.input_size == layout.input_size), None)
