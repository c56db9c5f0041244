"""Size an encoder to a parameter budget, so encoders are compared at equal trainable parameters.

Parameter counts are taken from the real module built on the ``meta`` device (no memory, no
initialisation), so the count the fitter reports is exactly what ``build_encoder`` will produce
and cannot drift from a hand-written formula.

Search. The count grows monotonically with ``width`` (the body's size; the read-out's hidden
width follows it in the preset's proportion): bisection finds the two widths that bracket the
budget and the closer one is taken if within tolerance. Quadratic knobs (and ``flat``'s first
layer, worth P parameters per unit) can step over the whole tolerance window at small budgets;
then the read-out's hidden width, whose count moves in small linear steps, is searched to land
inside: at the larger bracketing width if it can (narrowing the read-out), else at the smaller
(widening it). An encoder whose preset read-out is a single linear map gets one hidden read-out
layer for this; at budgets where the body's steps are fine enough, the paper's among them, the
read-out keeps the preset's shape. If that fails too,
:class:`InfeasibleBudget` reports the reachable range.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import UserError
from ..weights import Layout
from .registry import DEFAULT_PRESET, build_encoder, get_spec, resolve_hparams

MAX_WIDTH = 4096
MAX_HEAD_WIDTH = 1 << 16


class InfeasibleBudget(UserError, ValueError):
    """No width (and head width) puts the encoder's parameter count within the tolerance."""


def count_params(module: nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def _count(name: str, layout: Layout, zoo_kind: str | None, hp: dict[str, Any]) -> int:
    with torch.device("meta"):
        return count_params(build_encoder(name, layout, zoo_kind, **hp))


def _largest_at_most(f, lo: int, hi: int, budget: float) -> int | None:
    """Largest k in [lo, hi] with f(k) <= budget for nondecreasing f, or None."""
    if f(lo) > budget:
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if f(mid) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


def fit_to_budget(
    name: str, layout: Layout, budget: float, tolerance: float = 0.05, zoo_kind: str | None = None,
    preset: str = DEFAULT_PRESET, **hparams
) -> tuple[dict[str, Any], int]:
    """Choose ``width`` (and, if needed, ``head_width``) so the count is within ``budget * (1 ± tolerance)``.

    Starts from ``preset`` overridden by ``hparams``; returns the complete hyperparameters (ready
    for ``build_encoder``) and the parameter count.
    """
    spec = get_spec(name)
    if not spec.sized:
        raise TypeError(f"{name!r} has a fixed size (a baseline): no budget applies to it")
    if "width" in hparams:
        raise TypeError("fit_to_budget chooses 'width'; do not pass it")
    user_head = hparams.pop("head_width", None)
    base = resolve_hparams(name, layout, zoo_kind, preset, **hparams)
    has_head = "head_width" in base  # a plug-in without a read-out of its own: the width is the one knob
    step = int(base[spec.width_multiple_of]) if spec.width_multiple_of else 1
    k_max = MAX_WIDTH // step
    cache: dict[tuple[int, int | None], int] = {}

    def hp_at(k: int, head: int | None) -> dict[str, Any]:
        if not has_head:
            return {**base, "width": k * step}
        head = user_head if head is None else head
        extra = {"head_depth": 1} if head is not None and base["head_depth"] == 0 else {}
        return {**base, "width": k * step, "head_width": head, **extra}

    def count(k: int, head: int | None = None) -> int:
        head = user_head if head is None else head
        if (k, head) not in cache:
            cache[(k, head)] = _count(name, layout, zoo_kind, hp_at(k, head))
        return cache[(k, head)]

    def result(k: int, head: int | None) -> tuple[dict[str, Any], int]:
        return resolve_hparams(name, layout, zoo_kind, preset, **hp_at(k, head)), count(k, head)

    def inside(n: int) -> bool:
        return abs(n - budget) <= tolerance * budget

    below = _largest_at_most(count, 1, k_max, budget)
    options = [k for k in (below, 1 if below is None else below + 1) if k is not None and k <= k_max]
    best = min(options, key=lambda k: abs(count(k) - budget))
    if inside(count(best)):
        return result(best, user_head)

    if user_head is None and has_head:  # fine knob: the head's hidden width, at the widths bracketing the budget;
        # the larger body wins (its read-out is narrowed rather than the smaller body's widened)
        for k in sorted(options, reverse=True):
            head_below = _largest_at_most(lambda hw: count(k, hw), 1, MAX_HEAD_WIDTH, budget)
            heads = [hw for hw in (head_below, 1 if head_below is None else head_below + 1) if hw is not None]
            hw = min(heads, key=lambda hw: abs(count(k, hw) - budget))
            if inside(count(k, hw)):
                return result(k, hw)

    fixed = {k: v for k, v in base.items() if k not in ("width", "head_width")}
    low_head = 1 if user_head is None else user_head
    lowest = count(1, low_head)
    raise InfeasibleBudget(
        f"encoder {name!r} cannot be sized to {budget:g} parameters (tolerance {tolerance:.0%}) with {fixed}"
        f"{'' if user_head is None else f' and head_width={user_head}'}: reachable parameter counts range "
        f"from {lowest} (width={step}{f', head_width={low_head}' if has_head else ''}) to {count(k_max)} "
        f"(width={k_max * step}); the widths bracketing the budget give {[count(k) for k in options]}"
    )
