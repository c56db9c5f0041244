"""Encoders: flat RNN parameter vectors (B, P) -> representations (B, 16).

Six families (see each module's docstring for its modelling choices): ``flat`` and ``stats``
(``mlp.py``), ``transformer`` (``transformer.py``), ``dws`` (``dws.py``), ``noninteractive`` and
``interactive`` (``probing.py``); and the ``constant`` baseline (``baseline.py``), which ignores
the weights. ``registry.py`` names them, ``budget.py`` sizes them to a
parameter budget and ``augment.py`` permutes hidden neurons for the non-invariant ones.
"""

from .augment import augment
from .budget import InfeasibleBudget, count_params, fit_to_budget
from .common import REPRESENTATION_DIM, ZOO_KINDS, resolve_zoo_kind
from .registry import (
    BASELINES,
    ENCODERS,
    UnknownEncoder,
    build_encoder,
    default_hparams,
    needs_augmentation,
    search_space,
)

__all__ = [
    "BASELINES",
    "ENCODERS",
    "REPRESENTATION_DIM",
    "ZOO_KINDS",
    "InfeasibleBudget",
    "UnknownEncoder",
    "augment",
    "build_encoder",
    "count_params",
    "default_hparams",
    "fit_to_budget",
    "needs_augmentation",
    "resolve_zoo_kind",
    "search_space",
]
