"""Encoders: flat RNN parameter vectors (B, P) -> representations (B, 16).

The paper's six (see each module's docstring for its modelling choices): ``flat`` and ``stats``
(``mlp.py``), ``transformer`` (``transformer.py``), ``dws`` (``dws.py``), ``noninteractive`` and
``interactive`` (``probing.py``); ``dlpg``, deep linear probe generators (``probe_generators.py``,
not in the paper); and the ``constant`` baseline (``baseline.py``), which ignores
the weights. ``contract.py`` is what every encoder declares (:func:`encoder`, the decorator a plug-in
uses too), ``catalog.py`` names them (torch-free: the built-ins' import paths, plug-in names),
``resolver.py`` turns a name into a class (one path for built-ins and plug-ins), ``registry.py``
builds them, ``budget.py`` sizes them to a parameter budget, ``augmentation.py`` permutes hidden
neurons for the non-invariant ones, and ``checks.py`` tries a plug-in on a zoo's weights.
"""

import importlib

# name -> submodule; loaded on first use, so ``rnnray.encoders.catalog`` (the names) needs no torch
_LAZY = {"augment": "augmentation", "InfeasibleBudget": "budget", "count_params": "budget", "fit_to_budget": "budget",
         "REPRESENTATION_DIM": "common", "ZOO_KINDS": "common", "resolve_zoo_kind": "common",
         "Declaration": "contract", "encoder": "contract", "PluginError": "catalog",
         "BASELINES": "registry", "ENCODERS": "registry", "UnknownEncoder": "catalog", "build_encoder": "registry",
         "default_hparams": "registry", "needs_augmentation": "registry", "search_space": "registry"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BASELINES",
    "Declaration",
    "PluginError",
    "encoder",
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
