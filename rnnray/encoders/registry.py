"""The encoders by name: how to build each, its presets, hyperparameters and sweep space.

Every encoder starts from a *preset*: a complete set of hyperparameters. ``paper`` is the
authors' configuration (SPEC.md section 5b) and the default; a train file picks one with
``preset:``, and any hyperparameter given beside it overrides the preset's value.

``width`` is every encoder's body size (MLP width, ``d_model``, DWS channels, reader units) and is
what ``fit_to_budget`` chooses, so under a budget the body scales. The read-out keeps the preset's
shape: ``head_depth`` hidden layers (0: the body's last linear map to 16 is the read-out, as in
the paper's ``flat``, ``stats`` and ``transformer``) of ``head_width`` units, which by default
(None) keeps the preset's proportion to the body (``head_ratio``: 128 / 48 for ``dws``, 128 / 256
for the probing encoders), so the read-out's share of the parameters is the same at every budget.
A sweep may still search ``head_width`` as an ordinary knob.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn

from ..config import DEFAULT_PRESET, PRESET_NAMES
from .catalog import CATALOG, ENCODER_NAMES
from ..errors import UserError
from ..weights import Layout
from .baseline import ConstantRepresentation
from .common import DEFAULT_INPUT_SCALE, resolve_zoo_kind
from .dws import DWSEncoder
from .mlp import FlatEncoder, StatsEncoder
from .probing import DEFAULT_PROBE_LENGTH, InteractiveProbing, NonInteractiveProbing
from .probe_generators import DeepLinearProbeGenerators
from .transformer import TransformerEncoder


class UnknownEncoder(UserError, ValueError):
    """An encoder name that is not in ``ENCODERS``."""


class UnknownPreset(UserError, ValueError):
    """A preset name that is not in ``PRESETS``."""


@dataclass(frozen=True)
class EncoderSpec:
    name: str
    kind: str  # "mechanistic", "functionalist" or "baseline"
    invariant: bool  # exactly invariant to hidden-neuron permutations by construction
    constructor: Callable[..., nn.Module]
    defaults: dict[str, Any]  # the paper preset
    space: dict[str, Any] = field(default_factory=dict)
    takes_zoo_kind: bool = False
    width_multiple_of: str | None = None  # hyperparameter the width must be a multiple of
    head_ratio: float = 1.0  # default read-out hidden width / body width (the preset's proportion)

    @property
    def needs_augmentation(self) -> bool:
        return not self.invariant

    @property
    def sized(self) -> bool:
        """Whether the encoder has a body width a parameter budget can fit (a baseline has a fixed size)."""
        return "width" in self.defaults


def _probing_space() -> dict[str, Any]:
    return {
        "num_probes": [1, 2, 4, 8],
        "probe_length": {"formal_languages": [11, 22, 33], "mnist": [25, 50]},
        "reader_layers": [1, 2],
    }


_SCALE = {"input_scale": DEFAULT_INPUT_SCALE}
_PROBING_PAPER = {"width": 256, "head_width": None, "head_depth": 1, "num_probes": 1, "probe_length": None,
                  "reader_layers": 2, "residual": True}

def _declared(name: str) -> tuple[str, str, bool]:
    """Name, kind and invariance as the catalog declares them (one table for the names)."""
    e = CATALOG[name]
    return e.name, e.kind, e.invariant


SPECS: dict[str, EncoderSpec] = {
    s.name: s
    for s in (
        EncoderSpec(
            *_declared("flat"), FlatEncoder,
            {"width": 128, "head_width": None, "head_depth": 0, "depth": 3, **_SCALE},
            {"depth": [1, 2, 3]},
        ),
        EncoderSpec(
            *_declared("stats"), StatsEncoder,
            {"width": 768, "head_width": None, "head_depth": 0, "depth": 3, **_SCALE},
            {"depth": [1, 2, 3]},
        ),
        EncoderSpec(
            *_declared("transformer"), TransformerEncoder,
            {"width": 128, "head_width": None, "head_depth": 0, "depth": 6, "heads": 2, "ff_mult": 4,
             "dropout": 0.0, **_SCALE},
            {"depth": [2, 4, 6], "heads": [2, 4, 8], "ff_mult": [2, 4], "dropout": [0.0, 0.1]},
            width_multiple_of="heads",
        ),
        EncoderSpec(
            *_declared("dws"), DWSEncoder,
            {"width": 48, "head_width": None, "head_depth": 1, "depth": 4, **_SCALE},
            {"depth": [2, 3, 4]},
            head_ratio=128 / 48,
        ),
        EncoderSpec(
            *_declared("noninteractive"), NonInteractiveProbing,
            dict(_PROBING_PAPER), _probing_space(), takes_zoo_kind=True, head_ratio=0.5,
        ),
        EncoderSpec(
            *_declared("interactive"), InteractiveProbing,
            dict(_PROBING_PAPER), _probing_space(), takes_zoo_kind=True, head_ratio=0.5,
        ),
        EncoderSpec(  # the probing reader and probe; a depth-3 linear generator over 32-d codes (module docstring)
            *_declared("dlpg"), DeepLinearProbeGenerators,
            {**_PROBING_PAPER, "generator_depth": 3, "code_dim": 32, "generator_width": 32},
            {**_probing_space(), "generator_depth": [2, 3, 4], "code_dim": [16, 32, 64]},
            takes_zoo_kind=True, head_ratio=0.5,
        ),
        EncoderSpec(*_declared("constant"), ConstantRepresentation, {}),
    )
}
# The paper's own parameter counts (SPEC.md 5b, zoo A, as the authors count them), for comparison
PAPER_PARAMS = {n: e.paper_params for n, e in CATALOG.items() if e.paper_params is not None}
PRESETS: dict[str, dict[str, dict[str, Any]]] = {"paper": {name: dict(s.defaults) for name, s in SPECS.items()}}
assert tuple(PRESETS) == PRESET_NAMES and DEFAULT_PRESET in PRESETS  # the names configs are checked against
ENCODERS: tuple[str, ...] = tuple(n for n, s in SPECS.items() if s.kind != "baseline")  # the encoders compared
BASELINES: tuple[str, ...] = tuple(n for n, s in SPECS.items() if s.kind == "baseline")
assert ENCODERS == ENCODER_NAMES and tuple(SPECS) == tuple(CATALOG)  # the catalog's names, every one built


def get_spec(name: str) -> EncoderSpec:
    try:
        return SPECS[name]
    except KeyError:
        raise UnknownEncoder(f"unknown encoder {name!r}; valid names: {', '.join(ENCODERS + BASELINES)}") from None


def preset_hparams(name: str, preset: str = DEFAULT_PRESET) -> dict[str, Any]:
    """A preset's hyperparameters, ``width`` included (``head_width=None`` means the preset's
    proportion of the width; ``probe_length=None`` means 22 for formal languages, 50 for MNIST)."""
    get_spec(name)
    if preset not in PRESETS:
        raise UnknownPreset(f"unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")
    return dict(PRESETS[preset][name])


def default_hparams(name: str) -> dict[str, Any]:
    """The default preset's hyperparameters (the paper's configuration)."""
    return preset_hparams(name, DEFAULT_PRESET)


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


def resolve_hparams(name: str, layout: Layout, zoo_kind: str | None = None, preset: str = DEFAULT_PRESET,
                    **hparams) -> dict[str, Any]:
    """The preset overridden by ``hparams``, with every None filled in; rejects unknown names."""
    spec = get_spec(name)
    base = preset_hparams(name, preset)
    unknown = set(hparams) - set(base)
    if unknown:
        raise TypeError(f"encoder {name!r} has no hyperparameter(s) {sorted(unknown)}; valid: {sorted(base)}")
    hp = {**base, **hparams}
    if hp.get("head_width", 0) is None:
        hp["head_width"] = max(1, round(spec.head_ratio * hp["width"]))
    if "probe_length" in hp and hp["probe_length"] is None:
        hp["probe_length"] = DEFAULT_PROBE_LENGTH[resolve_zoo_kind(layout, zoo_kind)]
    return hp


def build_encoder(name: str, layout: Layout, zoo_kind: str | None = None, preset: str = DEFAULT_PRESET,
                  **hparams) -> nn.Module:
    """An encoder mapping flat parameter vectors (B, P) to unnormalised representations (B, 16)."""
    spec = get_spec(name)
    hp = resolve_hparams(name, layout, zoo_kind, preset, **hparams)
    if spec.takes_zoo_kind:
        return spec.constructor(layout, resolve_zoo_kind(layout, zoo_kind), **hp)
    return spec.constructor(layout, **hp)

