"""Small pieces every encoder family shares: the zoo kind, the input scale and the read-out head.

Modelling choices documented here because they apply to all encoders:

* ``input_scale``: mechanistic encoders multiply raw weights by a fixed factor (default
  ``sqrt(hidden) = sqrt(32)``) so weights at PyTorch's LSTM initialisation, uniform(-1/sqrt(32),
  1/sqrt(32)), arrive roughly in [-1, 1]. A fixed factor (rather than a data-dependent
  standardisation) keeps the encoders free of statistics that would have to be fitted on a zoo.
* Every encoder ends in the same read-out MLP, ``Linear(in, head_width) -> GELU`` followed by
  ``head_depth - 1`` more ``Linear(head_width, head_width) -> GELU`` and ``Linear(head_width, 16)``.
  ``head_width`` defaults to ``head_mult * width`` and doubles as the fine knob of the budget fitter
  (see ``budget.py``), because the main width knobs move the parameter count in steps that can be
  coarser than the tolerance.
* Where parameters sit decides what they cost. A parameter of the read-out runs once per RNN; a
  parameter of a token/entry/time-step computation runs once per token (transformer: 71-75 per
  RNN), per weight entry (dws: ~3.5k per RNN) or per probe step (probing: 22-50 per RNN). At equal
  budgets the encoders whose bodies apply their parameters many times per RNN would cost several
  emulator steps per training step; ``transformer``, ``dws`` and the probing encoders therefore
  default to a deeper, wider read-out (``head_depth=2``, ``head_mult`` > 1) that holds most of the
  budget, and a body sized to stay within about half of the emulator's forward+backward time.
  ``flat`` and ``stats`` keep ``head_mult=1, head_depth=1``: their bodies already run once per RNN.
* GELU is the pointwise nonlinearity (smooth, so representations vary smoothly with the weights),
  except inside ``dws``'s equivariant stack, which uses ReLU for cost (see ``dws.py``).
"""

from __future__ import annotations

import math

from torch import nn

from ..weights import HIDDEN, Layout

REPRESENTATION_DIM = 16
ZOO_KINDS = ("formal_languages", "mnist")
_KIND_BY_INPUT = {6: "formal_languages", 16: "mnist"}
DEFAULT_INPUT_SCALE = math.sqrt(HIDDEN)


def resolve_zoo_kind(layout: Layout, zoo_kind: str | None) -> str:
    """The zoo kind, given explicitly or read off the layout's input size (6 tokens / 16-pixel tiles)."""
    inferred = _KIND_BY_INPUT.get(layout.input_size)
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
    """The shared read-out: ``depth`` hidden layers of ``head_width`` units."""
    if depth < 1:
        raise ValueError(f"head_depth must be at least 1, got {depth}")
    layers: list[nn.Module] = [nn.Linear(in_features, head_width), nn.GELU()]
    for _ in range(depth - 1):
        layers += [nn.Linear(head_width, head_width), nn.GELU()]
    return nn.Sequential(*layers, nn.Linear(head_width, out_features))
