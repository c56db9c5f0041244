"""Permutation augmentation for encoders that are not invariant by construction (``flat``,
``transformer``): every RNN gets its own fresh random permutation of each layer's hidden neurons,
which by the LSTM's symmetry leaves its function unchanged. The training loop calls this per batch.
"""

from __future__ import annotations

import torch

from ..weights import Layout


def augment(flat: torch.Tensor, layout: Layout, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, P) -> (B, P): the same RNNs with independently permuted hidden neurons."""
    perms = layout.random_permutations(flat.shape[0], generator=generator, device=flat.device)
    return layout.permute(flat, perms)
