"""Zoo rows -> emulation batches: one stored sequence per snapshot, picked at random.

A training batch holds ``B`` snapshots, each with *one* of its stored sequences (SPEC.md section 6).
Modelling choices:

* **Randomness keyed on the row, not on a stream.** Which stored sequence a snapshot contributes
  at training step ``s``, and (for encoders trained with permutation augmentation) which hidden
  permutation its weights get, are pure functions of ``(seed, s, run_id, snapshot step,
  occurrence)`` computed with a SplitMix64 hash. Drawing them from a per-worker random stream
  would make them depend on how Ray Data happened to split the rows across workers; keyed, a
  batch is the same batch whichever worker holds which row, so 2 workers with half a batch each
  take exactly the step 1 worker takes with all of it (up to float summation order), and a
  restarted run needs no random-generator state to continue. ``occurrence`` numbers repeats of a
  row within one batch (possible only when a worker holds fewer rows than its batch), so repeats
  still get different sequences.
* **Row order**: each worker walks through its rows in epochs, a fresh permutation per epoch
  (seeded by ``(seed, rank, epoch)``); the batch of step ``s`` is positions ``[s B, (s+1) B)`` of
  that endless walk, so any step's batch can be recomputed on resume.
* **Evaluation sets are fixed**: every snapshot of the split with its first ``k`` stored
  sequences (the stored sequences are i.i.d. samples, so the first ``k`` are as good as any), each
  (snapshot, sequence) pair once, dealt round-robin over the workers.
* Rows are held in memory as numpy arrays (a paper-scale zoo is about 1 GB, a worker holds its
  share of the training split), with float16 targets converted to float32 distributions per batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import torch

from .emulator import inputs_from_sequences, targets_from_logits, targets_from_logprobs
from ..kinds import KINDS, zoo_kind
from ..weights import Layout

# per zoo kind: (column the emulator's inputs come from, column its targets come from)
SEQUENCE_COLUMNS = {name: k.sequence_columns for name, k in KINDS.items()}
KEY_COLUMNS = ("run_id", "step", "params")

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def columns(kind: str) -> list[str]:
    """The zoo columns emulation training reads."""
    return [*KEY_COLUMNS, *SEQUENCE_COLUMNS[kind]]


def _splitmix(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def mix(*parts) -> np.ndarray:
    """Hash integers (scalars or broadcastable arrays) into well-mixed uint64 keys."""
    h = np.zeros((), dtype=np.uint64)
    for p in parts:
        h = _splitmix(h ^ np.asarray(p).astype(np.int64).astype(np.uint64))
    return h


def occurrences(ids: np.ndarray) -> np.ndarray:
    """For each position, how many earlier positions hold the same row id (0 for the first)."""
    ids = np.asarray(ids)
    same = ids[None, :] == ids[:, None]
    return np.tril(same, k=-1).sum(axis=1)


def row_keys(seed: int, step: int, run_id: np.ndarray, snap_step: np.ndarray, occurrence: np.ndarray) -> np.ndarray:
    return mix(seed, step, run_id, snap_step, occurrence)


def pick_sequences(keys: np.ndarray, n_sequences: int) -> np.ndarray:
    """A stored-sequence index per row, from its key."""
    return (mix(keys, -1) % np.uint64(n_sequences)).astype(np.int64)


def keyed_permutations(keys: np.ndarray, layout: Layout, device=None) -> list[torch.Tensor]:
    """One hidden-neuron permutation per layer per row, from its key: list of (B, H) index tensors.

    The keyed draws are hashed on the host (a few thousand integers) and sorted on ``device``, so a
    GPU step does no per-step sort on the CPU. Flipping the top bit maps uint64 to int64 in the same
    order, so the stable sort gives the permutation an unsigned sort would."""
    salt = np.arange(layout.num_layers * layout.hidden).reshape(1, layout.num_layers, layout.hidden)
    noise = mix(keys.reshape(-1, 1, 1), salt) ^ np.uint64(1 << 63)  # (B, L, H) independent draws
    ordered = to_device(torch.from_numpy(noise.view(np.int64)), device)
    perms = torch.argsort(ordered, dim=-1, stable=True)
    return list(perms.unbind(1))


def to_device(t: torch.Tensor, device=None) -> torch.Tensor:
    """A host tensor on ``device``: on CUDA staged through pinned memory and copied without blocking
    (PyTorch's pinned-memory cache keeps the buffer until the copy has finished), else as it is."""
    device = torch.device(device or "cpu")
    if device.type != "cuda":
        return t.to(device)
    staged = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
    staged.copy_(t)
    return staged.to(device, non_blocking=True)


@dataclass
class Snapshots:
    """Rows of one split in memory, sorted by (run_id, step). ``inputs``/``targets`` keep the zoo's dtypes."""

    kind: str
    run_id: np.ndarray  # (n,) int64
    step: np.ndarray  # (n,) int64
    params: np.ndarray  # (n, P) float32
    inputs: np.ndarray  # (n, N, 42) int16 sequences, or (n, N, 50, 16) float16 tiles
    targets: np.ndarray  # (n, N, 41, 6) float16 log-probabilities, or (n, N, 50, 10) float16 logits

    def __len__(self) -> int:
        return len(self.run_id)

    @property
    def n_sequences(self) -> int:
        return self.inputs.shape[1]

    @classmethod
    def from_batches(cls, kind: str, batches: Iterable[Mapping[str, np.ndarray]], max_sequences: int | None = None):
        """Concatenate numpy batches (Ray Data ``iter_batches`` or Arrow columns); keep the first
        ``max_sequences`` stored sequences of each row (evaluation needs only those)."""
        in_col, tgt_col = SEQUENCE_COLUMNS[kind]
        parts: dict[str, list[np.ndarray]] = {c: [] for c in (*KEY_COLUMNS, in_col, tgt_col)}
        for b in batches:
            for c in parts:
                a = np.asarray(b[c])
                if c in (in_col, tgt_col) and max_sequences is not None:
                    a = np.ascontiguousarray(a[:, :max_sequences])
                parts[c].append(a)
        if not parts["run_id"]:
            raise ValueError(f"no rows: this {kind} split is empty")
        cat = {c: np.concatenate(v) for c, v in parts.items()}
        order = np.lexsort((cat["step"], cat["run_id"]))
        return cls(
            kind=kind,
            run_id=cat["run_id"][order].astype(np.int64),
            step=cat["step"][order].astype(np.int64),
            params=np.ascontiguousarray(cat["params"][order], dtype=np.float32),
            inputs=cat[in_col][order],
            targets=cat[tgt_col][order],
        )

    @classmethod
    def from_table(cls, kind: str, table, max_sequences: int | None = None):
        """From an Arrow table of zoo rows (``rnnray.zoo.load_table``)."""
        cols = {}
        for c in columns(kind):
            arr = table.column(c).combine_chunks()
            cols[c] = arr.to_numpy_ndarray() if hasattr(arr, "to_numpy_ndarray") else arr.to_numpy()
        return cls.from_batches(kind, [cols], max_sequences)

    def batch(self, rows: np.ndarray, seqs: np.ndarray, device=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(flat params (B, P), emulator inputs, target distributions (B, T, C)) for rows with one sequence each.
        Gathered on the host in the zoo's compact dtypes, converted on the device."""
        flat = to_device(torch.from_numpy(self.params[rows]), device)
        inp = to_device(torch.from_numpy(np.ascontiguousarray(self.inputs[rows, seqs])), device)
        tgt = to_device(torch.from_numpy(np.ascontiguousarray(self.targets[rows, seqs])), device)
        if zoo_kind(self.kind).token_inputs:
            return flat, inputs_from_sequences(inp).long(), targets_from_logprobs(tgt)
        return flat, inp.float(), targets_from_logits(tgt)


class RowSampler:
    """Which local rows each training step uses: an endless walk through per-epoch permutations."""

    def __init__(self, n_rows: int, batch: int, seed: int, rank: int = 0):
        if n_rows < 1:
            raise ValueError("this worker holds no training rows")
        self.n, self.batch, self.seed, self.rank = n_rows, batch, seed, rank
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            if len(self._perms) > 4:
                self._perms.clear()
            self._perms[epoch] = np.random.default_rng([self.seed, self.rank, epoch]).permutation(self.n)
        return self._perms[epoch]

    def rows(self, step: int) -> np.ndarray:
        pos = np.arange(step * self.batch, (step + 1) * self.batch)
        epochs, within = pos // self.n, pos % self.n
        out = np.empty(self.batch, dtype=np.int64)
        for e in np.unique(epochs):  # one or two epochs per batch (more only if the batch exceeds the rows)
            here = epochs == e
            out[here] = self._perm(int(e))[within[here]]
        return out


def training_batch(data: Snapshots, sampler: RowSampler, step: int, seed: int, layout: Layout | None, device=None):
    """The batch of one training step: rows from the sampler, one keyed sequence each, and (when a
    layout is given) keyed hidden-neuron permutations applied to the weights."""
    rows = sampler.rows(step)
    keys = row_keys(seed, step, data.run_id[rows], data.step[rows], occurrences(rows))
    flat, inputs, targets = data.batch(rows, pick_sequences(keys, data.n_sequences), device)
    if layout is not None:
        flat = layout.permute(flat, keyed_permutations(keys, layout, device=flat.device))
    return flat, inputs, targets


def eval_pairs(n_rows: int, n_sequences: int, k: int, rank: int = 0, world: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The fixed evaluation set, (row, sequence) for every row and its first ``k`` sequences, dealt
    round-robin to ``world`` workers; this worker's share."""
    k = min(k, n_sequences)
    rows = np.repeat(np.arange(n_rows), k)
    seqs = np.tile(np.arange(k), n_rows)
    return rows[rank::world], seqs[rank::world]
