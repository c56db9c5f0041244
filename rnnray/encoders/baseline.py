"""The ``constant`` baseline: an encoder that ignores the weights it is given.

It returns one learned 16-vector for every RNN, so an emulator trained with it can only learn the
zoo's average behaviour; the gap between its loss and an encoder's measures what a representation
adds. It is a registry entry like the six encoders (``build_encoder("constant", layout)``), but
has no hyperparameters and a fixed size, so a parameter budget does not apply to it.
"""

from __future__ import annotations

import torch
from torch import nn

from .common import REPRESENTATION_DIM
from .contract import encoder


@encoder(kind="baseline", invariant=True, takes_zoo_kind=False, defaults={})
class ConstantRepresentation(nn.Module):
    """One learned vector, expanded over the batch."""

    def __init__(self, layout=None, rep_dim: int = REPRESENTATION_DIM):
        super().__init__()
        self.rep = nn.Parameter(torch.randn(rep_dim))

    def forward(self, flat: torch.Tensor) -> torch.Tensor:
        return self.rep.expand(flat.shape[0], -1)
