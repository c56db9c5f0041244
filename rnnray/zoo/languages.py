"""Zoo A's tasks: the 216 counting languages a^(n+t0) b^(n+t1) c^(n+t2) d^(n+t3).

Token ids: letters a, b, c, d = 0..3, BOS = 4, EOS = 5. Everything here is vectorised over a
leading axis of RNNs so the trainer can make the batches of K networks in one go.

Choice written down: a string longer than ``seq_len - 1`` letters (possible only for n = 9 with
large offsets, e.g. t = (0, 2, 2, 2)) is cut to the sequence length, with no EOS.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

LETTERS = 4
BOS = LETTERS
EOS = LETTERS + 1
VOCAB = LETTERS + 2
OFFSETS = (-3, -2, -1, 0, 1, 2)

ALL_TASKS = np.array([(0, a, b, c) for a, b, c in itertools.product(OFFSETS, repeat=3)], dtype=np.int8)
assert len(ALL_TASKS) == 216


def draw_task(rng: np.random.Generator) -> np.ndarray:
    """t = (0, t1, t2, t3), each ti uniform over {-3, ..., 2}."""
    return np.concatenate([[0], rng.choice(OFFSETS, size=3)]).astype(np.int8)


def n_min(task: np.ndarray) -> np.ndarray:
    """Smallest n with every exponent n + ti >= 0; works on (4,) or (K, 4)."""
    return np.maximum(0, -np.min(task, axis=-1))


def make_sequences(tasks: torch.Tensor, n: torch.Tensor, seq_len: int) -> torch.Tensor:
    """Training sequences: BOS, the string for each n, then EOS to fill.

    tasks: (K, 4) int; n: (K, B) int.  Returns (K, B, seq_len) int64 token ids.
    """
    counts = n.unsqueeze(-1) + tasks.unsqueeze(1).to(n.dtype)  # (K, B, 4)
    ends = torch.cumsum(counts, dim=-1)  # letter j occupies string positions [ends[j-1], ends[j])
    pos = torch.arange(seq_len - 1, device=n.device).view(1, 1, -1, 1)  # string position p
    letter = (pos >= ends.unsqueeze(2)).sum(-1)  # number of letter blocks finished before p
    tokens = torch.where(letter >= LETTERS, torch.full_like(letter, EOS), letter)
    bos = torch.full(tokens.shape[:2] + (1,), BOS, dtype=tokens.dtype, device=tokens.device)
    return torch.cat([bos, tokens], dim=-1)


def in_language(samples: torch.Tensor, tasks: torch.Tensor) -> torch.Tensor:
    """Strict membership of sampled strings.

    samples: (K, N, L) token ids *after* BOS; tasks: (K, 4).  A sample is in the language when it
    contains EOS and the tokens before the first EOS are exactly a^(n+t0) b^(n+t1) c^(n+t2) d^(n+t3)
    for some n >= n_min (order and counts both checked).  Returns (K, N) bool.
    """
    is_eos = samples == EOS
    has_eos = is_eos.any(-1)
    before = torch.cumsum(is_eos.int(), dim=-1) == 0  # positions before the first EOS
    letters_only = ((samples < LETTERS) | ~before).all(-1)
    # letters must be non-decreasing inside the prefix: a* b* c* d*
    nxt_in = before[..., 1:]
    ordered = ((samples[..., 1:] >= samples[..., :-1]) | ~nxt_in).all(-1)
    onehot = torch.nn.functional.one_hot(samples.clamp(max=LETTERS).long(), LETTERS + 1)[..., :LETTERS]
    counts = (onehot * before.unsqueeze(-1)).sum(-2)  # (K, N, 4)
    n = counts - tasks.unsqueeze(1).to(counts.dtype)  # every letter must give the same n
    same_n = (n == n[..., :1]).all(-1)
    nmin = torch.clamp(-tasks.min(-1).values, min=0).unsqueeze(1).to(counts.dtype)
    return has_eos & letters_only & ordered & same_n & (n[..., 0] >= nmin)


def render(tokens) -> str:
    """A readable string for logs and docs: 'abbcdd$' with ^ for BOS and $ for EOS."""
    chars = "abcd^$"
    return "".join(chars[int(t)] for t in tokens)
