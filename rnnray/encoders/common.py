"""Small pieces every encoder family shares: the zoo kind, the input scale and the read-out head.

Modelling choices documented here because they apply to all encoders:

* ``input_scale``: mechanistic encoders multiply raw weights by a fixed factor (default
  ``sqrt(hidden) = sqrt(32)``) so weights at PyTorch's LSTM initialisation, uniform(-1/sqrt(32),
  1/sqrt(32)), arrive roughly in [-1, 1]. A fixed factor (rather than a data-dependent
  standardisation) keeps the encoders free of statistics that would have to be fitted on a zoo.
* Every encoder ends in a read-out, ``head``: ``head_depth`` hidden layers ``Linear -> GELU`` of
  ``head_width`` units, then ``Linear(., 16)``; ``head_depth=0`` is the single linear map (the
  MLP's last layer of the paper's ``flat`` and ``stats``, the ``transformer``'s linear to 16). The
  read-out keeps its preset's shape under any budget (``registry.py``): the budget goes into the
  body, as in the paper.
* GELU is the pointwise nonlinearity (smooth, so representations vary smoothly with the weights),
  except inside ``dws``'s equivariant stack, which uses ReLU for cost (see ``dws.py``).
"""

from __future__ import annotations

import math

from torch import nn

from ..kinds import KIND_NAMES, kind_of_layout
from ..weights import HIDDEN, Layout

REPRESENTATION_DIM = 16
ZOO_KINDS = KIND_NAMES
DEFAULT_INPUT_SCALE = math.sqrt(HIDDEN)


def resolve_zoo_kind(layout: Layout, zoo_kind: str | None) -> str:
    """The zoo kind, given explicitly or read off the layout's input size (6 tokens / 16-pixel tiles)."""
    inferred = kind_of_layout(layout)
    if zoo_kind is None:
        if inferred is None:
            raise ValueError(
                f"cannot infer the zoo kind from input_size={layout.input_size}; pass zoo_kind as one of {ZOO_KINDS}"
            )
        return inferred
    if zoo_kind not in ZOO_KINDS:
        raise ValueError(f"unknown zoo_kind {zoo_kind!r}; expected one of {ZOO_KINDS}")
    if inferred is not None and inferred != zoo_kind:
        raise ValueError(
            f"zoo_kind {zoo_kind!r} contradicts the layout (input_size={layout.input_size} means {inferred!r})"
        )
    return zoo_kind


def head(in_features: int, head_width: int, depth: int = 1, out_features: int = REPRESENTATION_DIM) -> nn.Sequential:
    """The shared read-out: ``depth`` hidden layers of ``head_width`` units (0: one linear map)."""
    if depth < 0:
        raise ValueError(f"head_depth must be at least 0, got {depth}")
    layers: list[nn.Module] = []
    width = in_features
    for _ in range(depth):
        layers += [nn.Linear(width, head_width), nn.GELU()]
        width = head_width
    return nn.Sequential(*layers, nn.Linear(width, out_features))
