"""A plug-in encoder tried once, on a few of the zoo's own RNNs, before a command starts Ray.

Importing and declaring are checked when a name is resolved (:mod:`.resolver`); what only running
it can show is checked here, in the order a trial would meet it, each failure one line naming the
encoder (exit code 2) instead of a trial that fails on a Ray worker minutes later:

1. its preset (``paper``: its declared defaults, with the sweep's fixed knobs) is accepted by its
   constructor (built on the ``meta`` device: no memory);
2. the parameter budget can be met through its ``width`` (:func:`.budget.fit_to_budget`);
3. the configuration trial 0 will train maps the RNNs' flat weights (B, P) to a finite (B, 16);
4. if it declares itself invariant, one explicit hidden-neuron permutation of those RNNs (the
   LSTM's symmetry, :meth:`rnnray.weights.Layout.permute`, as augmentation uses) leaves its output
   unchanged within float32 rounding; a relative change above ``INVARIANCE_TOLERANCE`` means it is
   not, so it would wrongly train without augmentation.

Built-ins are not tried here: ``tests/test_encoders.py`` checks the same properties for them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from ..config import DEFAULT_PRESET, ConfigError
from ..weights import Layout
from .budget import InfeasibleBudget, fit_to_budget
from .catalog import PluginError
from .common import REPRESENTATION_DIM
from .registry import build_encoder, get_spec, resolve_hparams

INVARIANCE_TOLERANCE = 1e-4  # float32 on RNNs of the zoo: an invariant encoder stays near 1e-6


def _line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{e.__class__.__name__}: {text[0][:200]}" if text else e.__class__.__name__


def init_like(layout: Layout, rows: int, seed: int = 0) -> torch.Tensor:
    """Flat weights drawn as PyTorch initialises an LSTM, uniform(-1/sqrt(H), 1/sqrt(H)): what
    every zoo RNN is at step 0, for a zoo not built yet."""
    g = torch.Generator().manual_seed(seed)
    bound = 1 / math.sqrt(layout.hidden)
    return (torch.rand(rows, layout.num_params, generator=g) * 2 - 1) * bound


def check_encoder(name: str, layout: Layout, zoo_kind: str, weights: torch.Tensor, budget: float | None = None,
                  tolerance: float = 0.05, preset: str = DEFAULT_PRESET, fixed: Mapping[str, Any] | None = None) -> dict:
    """The checks of the module docstring for encoder ``name`` on ``weights`` (B, P) of the zoo;
    returns the hyperparameters it was tried with (trial 0's)."""
    fixed = dict(fixed or {})
    try:
        hp = resolve_hparams(name, layout, zoo_kind, preset, **fixed)
    except TypeError as e:  # a knob the encoder does not have: the user's, not the plug-in's
        raise ConfigError(f"encoder_hparams: {e}") from None
    try:
        with torch.device("meta"):
            build_encoder(name, layout, zoo_kind, **hp)
    except Exception as e:  # noqa: BLE001 - whatever the constructor raises
        raise PluginError(f"encoder {name!r}: its {preset} preset {hp} is rejected by its constructor ({_line(e)})") from None
    if budget is not None:
        if "width" in fixed:
            raise ConfigError("encoder_hparams: the budget chooses 'width'; do not set it")
        try:
            hp, _ = fit_to_budget(name, layout, budget, tolerance, zoo_kind=zoo_kind, preset=preset, **fixed)
        except InfeasibleBudget as e:  # the reachable range
            raise InfeasibleBudget(f"budget: {e}") from None
        except Exception as e:  # noqa: BLE001
            raise PluginError(f"encoder {name!r}: sizing it to the budget of {budget:g} parameters failed ({_line(e)})") from None
    weights = weights.float()
    b = weights.shape[0]
    try:
        torch.manual_seed(0)
        enc = build_encoder(name, layout, zoo_kind, **hp).eval()
        with torch.no_grad():
            out = enc(weights)
    except Exception as e:  # noqa: BLE001
        raise PluginError(f"encoder {name!r}: its forward on {b} of the zoo's RNNs fails ({_line(e)})") from None
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if shape != (b, REPRESENTATION_DIM):
        raise PluginError(f"encoder {name!r}: its forward on {b} of the zoo's RNNs returns {shape}, not ({b}, "
                          f"{REPRESENTATION_DIM}): an encoder maps (B, P) weights to (B, {REPRESENTATION_DIM})")
    if not torch.isfinite(out).all():
        raise PluginError(f"encoder {name!r}: its forward on {b} of the zoo's RNNs returns non-finite values (NaN or inf)")
    if get_spec(name).invariant:
        perms = layout.random_permutations(b, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            again = enc(layout.permute(weights, perms))
        change = ((again - out).norm() / out.norm().clamp_min(1e-12)).item()
        if not change <= INVARIANCE_TOLERANCE:
            raise PluginError(f"encoder {name!r} declares invariant=True, but permuting the hidden neurons of {b} of the "
                              f"zoo's RNNs changes its output (relative change {change:.2g}); declare invariant=False "
                              "(it then trains with permutation augmentation) or make it invariant")
    return hp
