"""Encoders by name, built-in or plug-in: how to build each, its presets, hyperparameters and sweep space.

The names resolve through :mod:`.resolver` (one path: each class declares its kind, invariance,
``paper`` preset and search space, :mod:`.contract`); this module builds and sizes what they name.

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

from typing import Any

from torch import nn

from ..config import DEFAULT_PRESET, PRESET_NAMES
from .catalog import BASELINES as _BASELINE_REFS, BUILTINS, PAPER_PARAMS, UnknownEncoder
from ..errors import UserError
from ..weights import Layout
from .common import resolve_zoo_kind
from .contract import EncoderSpec
from .probing import DEFAULT_PROBE_LENGTH
from .resolver import resolve


class UnknownPreset(UserError, ValueError):
    """A preset name that is not in ``PRESETS``."""


# the built-ins, resolved through the very path a plug-in takes (their classes declare the rest)
SPECS: dict[str, EncoderSpec] = {name: resolve(name) for name in (*BUILTINS, *_BASELINE_REFS)}
# the paper presets of the built-ins (a plug-in's ``paper`` preset is its own declared defaults)
PRESETS: dict[str, dict[str, dict[str, Any]]] = {"paper": {name: dict(s.defaults) for name, s in SPECS.items()}}
assert tuple(PRESETS) == PRESET_NAMES and DEFAULT_PRESET in PRESETS  # the names configs are checked against
ENCODERS: tuple[str, ...] = tuple(n for n, s in SPECS.items() if s.kind != "baseline")  # the six compared
BASELINES: tuple[str, ...] = tuple(n for n, s in SPECS.items() if s.kind == "baseline")
assert ENCODERS == tuple(BUILTINS) and BASELINES == tuple(_BASELINE_REFS)  # the catalog's names, every one built
__all__ = ["BASELINES", "ENCODERS", "PAPER_PARAMS", "PRESETS", "SPECS", "EncoderSpec", "UnknownEncoder", "UnknownPreset",
           "build_encoder", "default_hparams", "get_spec", "needs_augmentation", "preset_hparams", "resolve_hparams",
           "search_space"]


def get_spec(name: str) -> EncoderSpec:
    """A built-in or a plug-in by name (:func:`rnnray.encoders.resolver.resolve`)."""
    return SPECS[name] if name in SPECS else resolve(name)


def preset_hparams(name: str, preset: str = DEFAULT_PRESET) -> dict[str, Any]:
    """A preset's hyperparameters, ``width`` included (``head_width=None`` means the preset's
    proportion of the width; ``probe_length=None`` means 22 for formal languages, 50 for MNIST)."""
    spec = get_spec(name)
    if preset not in PRESETS:
        raise UnknownPreset(f"unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")
    return dict(PRESETS[preset][name] if name in PRESETS[preset] else spec.defaults)


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

