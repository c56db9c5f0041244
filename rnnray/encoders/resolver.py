"""From a name to an encoder: the one path for built-ins and plug-ins.

A name gives an import path (:func:`.catalog.reference_of`: the built-in table, the path itself, or
an entry point's value); the module is imported, the class looked up, and its declaration
(:mod:`.contract`) checked. Anything wrong is one :class:`PluginError` line naming the encoder,
so a command stops with exit code 2 before Ray starts. Specs are kept per process once resolved.

Ray workers resolve names again in their own processes: a plug-in must be importable there too
(on a local Ray instance workers inherit the driver's environment, so ``PYTHONPATH`` and the
current directory reach them; on a cluster, install the plug-in's package on every node or ship
it with the job's ``runtime_env``, see docs/PLUGINS.md).
"""

from __future__ import annotations

import importlib

from ..kinds import KIND_NAMES
from .catalog import BASELINES, BUILTINS, PluginError, is_import_path, reference_of
from .contract import ATTRIBUTE, EncoderSpec, declaration_problem

_RESOLVED: dict[str, EncoderSpec] = {}


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{e.__class__.__name__}: {text[0][:200]}" if text else e.__class__.__name__


def _load(name: str, reference: str):
    module_name, _, qualname = reference.partition(":")
    try:
        obj = importlib.import_module(module_name)
    except Exception as e:  # noqa: BLE001 - whatever the plug-in's import raises, one line naming it
        raise PluginError(f"encoder {name!r}: module {module_name!r} does not import ({_first_line(e)})") from None
    for part in qualname.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise PluginError(f"encoder {name!r}: module {module_name!r} has no {qualname!r}") from None
    return obj


def _builtin_named(reference: str) -> str | None:
    for n, ref in {**BUILTINS, **BASELINES}.items():
        if ref == reference:
            return n
    return None


def resolve(name: str) -> EncoderSpec:
    """The encoder ``name`` (a built-in, ``module:Class``, or a registered plug-in's name)."""
    if name in _RESOLVED:
        return _RESOLVED[name]
    builtin = name in BUILTINS or name in BASELINES
    # a built-in's place is the table's (an entry point of its name is refused where a user names
    # it: the config, :func:`.catalog.check_name`); anything else is looked up
    reference = (BUILTINS.get(name) or BASELINES[name]) if builtin else reference_of(name)
    if not builtin and is_import_path(name) and _builtin_named(reference):
        raise PluginError(f"encoder {name!r} is the built-in encoder {_builtin_named(reference)!r}; name it so")
    cls = _load(name, reference)
    if not isinstance(cls, type) or not hasattr(cls, ATTRIBUTE):
        raise PluginError(f"encoder {name!r}: {reference} is not an encoder (a class with an {ATTRIBUTE} declaration, "
                          "e.g. decorated with @rnnray.encoders.encoder(...))")
    import torch

    if not issubclass(cls, torch.nn.Module):
        raise PluginError(f"encoder {name!r}: {reference} is not a torch.nn.Module")
    problem = declaration_problem(getattr(cls, ATTRIBUTE), KIND_NAMES, builtin)
    if problem:
        raise PluginError(f"encoder {name!r}: {reference}'s declaration: {problem}")
    spec = EncoderSpec(name=name, reference=reference, constructor=cls, declaration=getattr(cls, ATTRIBUTE), builtin=builtin)
    _RESOLVED[name] = spec
    return spec
