"""The six encoders by name: how to build each, its hyperparameters, defaults and sweep space.

``width`` is every encoder's main size knob (MLP width, ``d_model``, DWS channels, reader units)
and is what ``fit_to_budget`` chooses; ``head_width`` (None = ``head_mult * width``) is the
read-out's hidden width and the fitter's fine knob, ``head_depth`` its number of hidden layers.
Everything else is a fixed structural hyperparameter. ``head_mult`` ties the read-out to the body,
so the fitter scales both together and the split of the budget between them (and with it the cost
per parameter, see ``common.py``) stays the same at every budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn

from ..weights import Layout
from .common import DEFAULT_INPUT_SCALE, resolve_zoo_kind
from .dws import DWSEncoder
from .mlp import FlatEncoder, StatsEncoder
from .probing import DEFAULT_PROBE_LENGTH, InteractiveProbing, NonInteractiveProbing
from .transformer import TransformerEncoder


class UnknownEncoder(ValueError):
    """An encoder name that is not in ``ENCODERS``."""


@dataclass(frozen=True)
class EncoderSpec:
    name: str
    kind: str  # "mechanistic" or "functionalist"
    invariant: bool  # exactly invariant to hidden-neuron permutations by construction
    constructor: Callable[..., nn.Module]
    defaults: dict[str, Any]
    space: dict[str, Any] = field(default_factory=dict)
    takes_zoo_kind: bool = False
    width_multiple_of: str | None = None  # hyperparameter the width must be a multiple of

    @property
    def needs_augmentation(self) -> bool:
        return not self.invariant


def _probing_space() -> dict[str, Any]:
    return {
        "num_probes": [1, 2, 4, 8],
        "probe_length": {"formal_languages": [11, 22, 33], "mnist": [25, 50]},
        "reader_layers": [1, 2],
    }


_PLAIN_HEAD = {"head_width": None, "head_mult": 1, "head_depth": 1}  # one hidden layer of width units
# sizes and read-out shares of the encoders whose bodies run many times per RNN: see their modules
_PROBING_DEFAULTS = {"width": 64, "head_width": None, "head_mult": 16, "head_depth": 2, "num_probes": 2,
                     "probe_length": None, "reader_layers": 1}

SPECS: dict[str, EncoderSpec] = {
    s.name: s
    for s in (
        EncoderSpec(
            "flat", "mechanistic", False, FlatEncoder,
            {"width": 64, **_PLAIN_HEAD, "depth": 2, "input_scale": DEFAULT_INPUT_SCALE},
            {"depth": [1, 2, 3]},
        ),
        EncoderSpec(
            "stats", "mechanistic", True, StatsEncoder,
            {"width": 256, **_PLAIN_HEAD, "depth": 2, "input_scale": DEFAULT_INPUT_SCALE},
            {"depth": [1, 2, 3]},
        ),
        EncoderSpec(
            "transformer", "mechanistic", False, TransformerEncoder,
            {"width": 64, "head_width": None, "head_mult": 16, "head_depth": 2, "depth": 2, "heads": 2,
             "ff_mult": 2, "dropout": 0.0, "input_scale": DEFAULT_INPUT_SCALE},
            {"depth": [1, 2, 3, 4], "heads": [2, 4, 8], "ff_mult": [2, 4], "dropout": [0.0, 0.1]},
            width_multiple_of="heads",
        ),
        EncoderSpec(
            "dws", "mechanistic", True, DWSEncoder,
            {"width": 8, "head_width": None, "head_mult": 112, "head_depth": 2, "depth": 2,
             "input_scale": DEFAULT_INPUT_SCALE},
            {"depth": [2, 3, 4]},
        ),
        EncoderSpec(
            "noninteractive", "functionalist", True, NonInteractiveProbing,
            dict(_PROBING_DEFAULTS), _probing_space(), takes_zoo_kind=True,
        ),
        EncoderSpec(
            "interactive", "functionalist", True, InteractiveProbing,
            dict(_PROBING_DEFAULTS), _probing_space(), takes_zoo_kind=True,
        ),
    )
}
ENCODERS: tuple[str, ...] = tuple(SPECS)


def get_spec(name: str) -> EncoderSpec:
    try:
        return SPECS[name]
    except KeyError:
        raise UnknownEncoder(f"unknown encoder {name!r}; valid names: {', '.join(ENCODERS)}") from None


def default_hparams(name: str) -> dict[str, Any]:
    """Defaults, ``width`` included (``head_width=None`` means ``head_mult * width``;
    ``probe_length=None`` means 22 for formal languages, 50 for MNIST)."""
    return dict(get_spec(name).defaults)


def search_space(name: str, zoo_kind: str | None = None) -> dict[str, Any]:
    """Structural knobs and their choices for a sweep (``width`` is left to the budget fitter).
    Zoo-dependent choices are keyed by zoo kind unless ``zoo_kind`` picks one."""
    space = {}
    for key, choices in get_spec(name).space.items():
        if isinstance(choices, dict) and zoo_kind is not None:
            choices = choices[zoo_kind]
        space[key] = choices
    return space


def needs_augmentation(name: str) -> bool:
    """Whether training must permute hidden neurons randomly (encoders not invariant by construction)."""
    return get_spec(name).needs_augmentation


def resolve_hparams(name: str, layout: Layout, zoo_kind: str | None = None, **hparams) -> dict[str, Any]:
    """Defaults overridden by ``hparams``, with every None filled in; rejects unknown names."""
    spec = get_spec(name)
    unknown = set(hparams) - set(spec.defaults)
    if unknown:
        raise TypeError(f"encoder {name!r} has no hyperparameter(s) {sorted(unknown)}; valid: {sorted(spec.defaults)}")
    hp = {**spec.defaults, **hparams}
    if hp["head_width"] is None:
        hp["head_width"] = default_head_width(hp)
    if "probe_length" in hp and hp["probe_length"] is None:
        hp["probe_length"] = DEFAULT_PROBE_LENGTH[resolve_zoo_kind(layout, zoo_kind)]
    return hp


def default_head_width(hp: dict[str, Any]) -> int:
    """The read-out width when ``head_width`` is not given: ``head_mult * width`` (at least 1)."""
    return max(1, round(hp["head_mult"] * hp["width"]))


def build_encoder(name: str, layout: Layout, zoo_kind: str | None = None, **hparams) -> nn.Module:
    """An encoder mapping flat parameter vectors (B, P) to unnormalised representations (B, 16)."""
    spec = get_spec(name)
    hp = resolve_hparams(name, layout, zoo_kind, **hparams)
    del hp["head_mult"]  # only sets the default head_width
    if spec.takes_zoo_kind:
        return spec.constructor(layout, resolve_zoo_kind(layout, zoo_kind), **hp)
    return spec.constructor(layout, **hp)
