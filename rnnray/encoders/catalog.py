"""Encoder names, without importing torch or any encoder: which names are built in and where each
lives, how a plug-in is named, and whether a name can be an encoder at all (what the config checks).

A name is one of:

* a built-in, ``BUILTINS`` (the paper's six and ``dlpg``) or ``BASELINE_NAMES`` (the ``constant`` baseline),
  each mapped to its class's import path;
* a plug-in's import path, ``package.module:Class``;
* the name an installed package registers under the entry-point group ``rnnray.encoders``
  (``[project.entry-points."rnnray.encoders"] gated = "mylab.encoders:GatedProbe"``).

Everything else an encoder declares (kind, invariance, preset, search space) is on its class
(:mod:`.contract`); :mod:`.resolver` imports the class, the one path for built-ins and plug-ins
alike. Checking a plug-in name here imports nothing, so the config stays cheap to validate.
"""

from __future__ import annotations

import re

from ..errors import UserError

ENTRY_POINT_GROUP = "rnnray.encoders"

BUILTINS: dict[str, str] = {
    "flat": "rnnray.encoders.mlp:FlatEncoder",
    "stats": "rnnray.encoders.mlp:StatsEncoder",
    "transformer": "rnnray.encoders.transformer:TransformerEncoder",
    "dws": "rnnray.encoders.dws:DWSEncoder",
    "noninteractive": "rnnray.encoders.probing:NonInteractiveProbing",
    "interactive": "rnnray.encoders.probing:InteractiveProbing",
    "dlpg": "rnnray.encoders.probe_generators:DeepLinearProbeGenerators",  # not in the paper (Kahana et al., 2024)
}
BASELINES: dict[str, str] = {"constant": "rnnray.encoders.baseline:ConstantRepresentation"}
ENCODER_NAMES: tuple[str, ...] = tuple(BUILTINS)  # the built-ins compared: the paper's six and dlpg
BASELINE_NAMES: tuple[str, ...] = tuple(BASELINES)
# the paper's own parameter counts (SPEC.md 5b, zoo A, as the authors count them), for comparison
PAPER_PARAMS: dict[str, float] = {"flat": 1.80e6, "stats": 1.2e6, "transformer": 1.28e6, "dws": 1.28e6,
                                  "noninteractive": 1.15e6, "interactive": 1.15e6}

_IMPORT_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


class PluginError(UserError, ValueError):
    """A plug-in encoder that cannot take part: the message is one line naming it."""


class UnknownEncoder(PluginError):
    """A name that is neither built in, nor an import path, nor a registered plug-in."""


def is_import_path(name: str) -> bool:
    return bool(_IMPORT_PATH.match(name))


def _entry_points(name: str) -> list:
    from importlib.metadata import entry_points

    return [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]


def _package(ep) -> str:
    dist = getattr(ep, "dist", None)
    return f"package {dist.name!r}" if dist is not None else "an installed package"


def reference_of(name: str) -> str:
    """Where the encoder ``name`` lives, as ``module:Class``: a built-in's from ``BUILTINS``, an import
    path as it is, an entry point's from its package's metadata. Imports nothing. Raises
    :class:`PluginError` for a name that is none of these, registered twice, or an entry point that
    clashes with a built-in."""
    if is_import_path(name):
        return name
    eps = _entry_points(name)
    builtin = BUILTINS.get(name) or BASELINES.get(name)
    if builtin is not None:
        if eps:
            raise PluginError(f"encoder {name!r}: the entry point {name!r} of {_package(eps[0])} (group "
                              f"{ENTRY_POINT_GROUP}) clashes with the built-in encoder of that name; rename the entry point")
        return builtin
    if len({ep.value for ep in eps}) > 1:
        raise PluginError(f"encoder {name!r}: registered by more than one package under {ENTRY_POINT_GROUP} "
                          f"({', '.join(sorted(ep.value for ep in eps))}); name it by its import path instead")
    if not eps:
        raise UnknownEncoder(unknown_name(name))
    return eps[0].value


def registered_names() -> list[str]:
    """The names installed packages register under ``rnnray.encoders``."""
    from importlib.metadata import entry_points

    return sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})


def unknown_name(name: str) -> str:
    plugins = registered_names()
    return (f"unknown encoder {name!r}; choose from {', '.join(ENCODER_NAMES)}, a plug-in's import path "
            f"(package.module:Class){', or an installed plug-in: ' + ', '.join(plugins) if plugins else ''}")


def check_name(name: str) -> str:
    """``name`` if it can name an encoder to compare (a built-in, an import path, a registered
    plug-in), else the ValueError a config validator reports. Imports no plug-in: whether it
    imports and keeps the contract is checked when it is resolved."""
    if name in BASELINE_NAMES:
        raise ValueError(f"{name!r} is the baseline, not an encoder to compare; "
                         f"choose from {', '.join(ENCODER_NAMES)} or a plug-in")
    try:
        reference_of(name)
    except PluginError as e:
        raise ValueError(str(e)) from None
    return name
