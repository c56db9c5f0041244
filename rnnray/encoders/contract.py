"""The encoder contract: what every encoder, built-in or plug-in, declares and what it must do.

One path for all of them. A class becomes an encoder by carrying a :class:`Declaration` in its
``rnnray_encoder`` attribute, which the :func:`encoder` decorator sets::

    @encoder(kind="functionalist", defaults={"width": 64, "probes": 4}, space={"probes": [2, 4, 8]})
    class GatedProbe(torch.nn.Module):
        def __init__(self, layout, zoo_kind, width, probes): ...
        def forward(self, flat):  # (B, P) float32 -> (B, 16)
            ...

* The constructor receives the weight layout (:class:`rnnray.weights.Layout`: sizes and where each
  tensor lies in the flat vector), the zoo kind (``formal_languages`` or ``mnist``; left out when
  ``takes_zoo_kind=False``) and every hyperparameter of ``defaults`` as a keyword.
* ``forward`` maps flat parameter vectors (B, P) to unnormalised representations (B, 16), finite.
* ``defaults`` is the ``paper`` preset: trial 0 of a sweep, and where every other trial starts.
  ``width`` is the body's size, the one hyperparameter the parameter budget chooses; the count of
  trainable parameters must grow with it. ``head_width`` (None: ``head_ratio`` x width) and
  ``head_depth``, when declared, are the read-out's, which the budget fitter may also use.
* ``space``: the structural knobs a sweep searches, each a list of choices (or one list per zoo
  kind, ``{"formal_languages": [...], "mnist": [...]}``); every knob must be in ``defaults``.
* ``invariant``: the output does not change when an RNN's hidden neurons are permuted (the LSTM's
  symmetry). Declared invariant, an encoder trains without augmentation and is checked with one
  explicit permutation before a sweep starts; otherwise every batch is permuted at random.
* ``width_multiple_of``: a hyperparameter the width must be a multiple of (attention heads).

Names: a built-in by its name in :mod:`.catalog`; a plug-in by its import path
``package.module:Class`` or by the name its installed package registers under the entry-point
group ``rnnray.encoders``. :mod:`.resolver` turns a name into an :class:`EncoderSpec`.
This module imports neither torch nor any encoder, so a plug-in can import it cheaply.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

ATTRIBUTE = "rnnray_encoder"
COMPARED_KINDS = ("mechanistic", "functionalist")  # what a plug-in may declare; "baseline" is the constant's
KINDS = (*COMPARED_KINDS, "baseline")


@dataclass(frozen=True)
class Declaration:
    """What an encoder class declares about itself (module docstring)."""

    kind: str
    defaults: Mapping[str, Any]
    invariant: bool = False
    space: Mapping[str, Any] = field(default_factory=dict)
    head_ratio: float = 1.0
    width_multiple_of: str | None = None
    takes_zoo_kind: bool = True


def encoder(*, kind: str, defaults: Mapping[str, Any], invariant: bool = False, space: Mapping[str, Any] | None = None,
            head_ratio: float = 1.0, width_multiple_of: str | None = None, takes_zoo_kind: bool = True):
    """Class decorator: attach the :class:`Declaration` (checked when the encoder is resolved, so a
    mistake is one line naming the encoder, not a traceback at import)."""
    decl = Declaration(kind=kind, defaults=dict(defaults), invariant=invariant, space=dict(space or {}),
                       head_ratio=head_ratio, width_multiple_of=width_multiple_of, takes_zoo_kind=takes_zoo_kind)

    def attach(cls):
        setattr(cls, ATTRIBUTE, decl)
        return cls

    return attach


def declaration_problem(decl: Any, zoo_kinds: tuple[str, ...], builtin: bool) -> str | None:
    """What is wrong with a declaration, in words, or None."""
    if not isinstance(decl, Declaration):
        return f"its {ATTRIBUTE} is a {type(decl).__name__}, not a rnnray.encoders.contract.Declaration"
    kinds = KINDS if builtin else COMPARED_KINDS
    if decl.kind not in kinds:
        return f"kind {decl.kind!r} is none of {', '.join(kinds)}"
    if not isinstance(decl.defaults, Mapping) or not all(isinstance(k, str) for k in decl.defaults):
        return "defaults must map hyperparameter names to values"
    if decl.kind != "baseline" and "width" not in decl.defaults:
        return "defaults declare no 'width' (the body size the parameter budget chooses)"
    if not isinstance(decl.space, Mapping):
        return "space must map hyperparameter names to lists of choices"
    for knob, choices in decl.space.items():
        if knob not in decl.defaults:
            return f"space knob {knob!r} is not in defaults"
        if knob == "width":
            return "space may not search 'width': the budget chooses it"
        per_zoo = choices if isinstance(choices, Mapping) else {z: choices for z in zoo_kinds}
        if set(per_zoo) != set(zoo_kinds):
            return f"space knob {knob!r}: one list per zoo kind needs exactly {', '.join(zoo_kinds)}"
        if not all(isinstance(c, list) and c for c in per_zoo.values()):
            return f"space knob {knob!r}: choices must be a non-empty list"
    if decl.width_multiple_of is not None and decl.width_multiple_of not in decl.defaults:
        return f"width_multiple_of {decl.width_multiple_of!r} is not in defaults"
    if not isinstance(decl.head_ratio, (int, float)) or not decl.head_ratio > 0:
        return "head_ratio must be a positive number"
    return None


@dataclass(frozen=True)
class EncoderSpec:
    """A resolved encoder: the name it goes by, where its class lives, the class, its declaration."""

    name: str
    reference: str  # "package.module:Class"
    constructor: Callable[..., Any]
    declaration: Declaration
    builtin: bool = False

    @property
    def kind(self) -> str:
        return self.declaration.kind

    @property
    def invariant(self) -> bool:
        return self.declaration.invariant

    @property
    def defaults(self) -> Mapping[str, Any]:
        return self.declaration.defaults

    @property
    def space(self) -> Mapping[str, Any]:
        return self.declaration.space

    @property
    def head_ratio(self) -> float:
        return self.declaration.head_ratio

    @property
    def width_multiple_of(self) -> str | None:
        return self.declaration.width_multiple_of

    @property
    def takes_zoo_kind(self) -> bool:
        return self.declaration.takes_zoo_kind

    @property
    def needs_augmentation(self) -> bool:
        return not self.invariant

    @property
    def sized(self) -> bool:
        """Whether the encoder has a body width a parameter budget can fit (a baseline has a fixed size)."""
        return "width" in self.defaults
