"""Plug-ins that break the encoder contract, one way each: a sweep naming any of them must stop
before Ray starts with one line naming it (tests/test_plugins.py)."""

from __future__ import annotations

import torch
from torch import nn

from rnnray.encoders import encoder


class NotAnEncoder(nn.Module):
    """A module without a declaration."""


FIRST = 256  # the first weights of the flat vector (rows of weight_ih_l0): small enough for a budget of 20,000


def _mlp(width: int, out: int = 16) -> nn.Sequential:
    return nn.Sequential(nn.Linear(FIRST, width), nn.GELU(), nn.Linear(width, out))


@encoder(kind="mechanistic", defaults={"width": 4, "depth": 0})
class RejectsPreset(nn.Module):
    """Its own preset asks for a depth its constructor refuses."""

    def __init__(self, layout, zoo_kind, width: int, depth: int):
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        self.net = _mlp(width)

    def forward(self, flat):
        return self.net(flat[:, :FIRST])


@encoder(kind="mechanistic", defaults={"width": 1})
class WrongShape(nn.Module):
    """Returns 8 numbers per RNN, not 16."""

    def __init__(self, layout, zoo_kind, width: int):
        super().__init__()
        self.net = _mlp(width, out=8)

    def forward(self, flat):
        return self.net(flat[:, :FIRST])


@encoder(kind="mechanistic", defaults={"width": 1})
class MakesNaN(nn.Module):
    """Divides by zero."""

    def __init__(self, layout, zoo_kind, width: int):
        super().__init__()
        self.net = _mlp(width)

    def forward(self, flat):
        return self.net(flat[:, :FIRST]) / torch.zeros(1)


@encoder(kind="mechanistic", invariant=True, defaults={"width": 1})
class FalselyInvariant(nn.Module):
    """An MLP on the raw vector, which sees every permutation, declared invariant."""

    def __init__(self, layout, zoo_kind, width: int):
        super().__init__()
        self.net = _mlp(width)

    def forward(self, flat):
        return self.net(flat[:, :FIRST] * 10)


@encoder(kind="functionalist", defaults={"width": 8})
class FixedSize(nn.Module):
    """A fixed 64-unit layer on the whole vector: no width brings it near a small budget."""

    def __init__(self, layout, zoo_kind, width: int):
        super().__init__()
        self.fixed = nn.Linear(layout.num_params, 64)
        self.net = nn.Sequential(nn.Linear(64, width), nn.Linear(width, 16))

    def forward(self, flat):
        return self.net(self.fixed(flat))


@encoder(kind="cognitive", defaults={"width": 8})
class UnknownKind(nn.Module):
    """Declares a kind the verdict has no group for."""
