"""The encoders' names in one table, importable without torch: what the config checks names
against, what the verdict groups by (mechanistic, functionalist), and what each declares (exact
hidden-neuron permutation invariance, so no augmentation) and the paper's own parameter count
(SPEC.md 5b, zoo A, as the authors count them). The registry (:mod:`.registry`) attaches the
classes, presets and search spaces to these names and checks it covers exactly this table."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Entry:
    name: str
    kind: str  # mechanistic | functionalist | baseline
    invariant: bool  # invariant by construction to hidden-neuron permutations: no augmentation
    paper_params: float | None  # the paper's count (SPEC.md 5b); None for a baseline or an encoder not in the paper


CATALOG: dict[str, Entry] = {e.name: e for e in (
    Entry("flat", "mechanistic", False, 1.80e6),
    Entry("stats", "mechanistic", True, 1.2e6),
    Entry("transformer", "mechanistic", False, 1.28e6),
    Entry("dws", "mechanistic", True, 1.28e6),
    Entry("noninteractive", "functionalist", True, 1.15e6),
    Entry("interactive", "functionalist", True, 1.15e6),
    Entry("dlpg", "functionalist", True, None),  # deep linear probe generators (Kahana et al., 2024)
    Entry("constant", "baseline", True, None),
)}
ENCODER_NAMES: tuple[str, ...] = tuple(n for n, e in CATALOG.items() if e.kind != "baseline")  # the encoders compared
BASELINE_NAMES: tuple[str, ...] = tuple(n for n, e in CATALOG.items() if e.kind == "baseline")
MECHANISTIC: tuple[str, ...] = tuple(n for n, e in CATALOG.items() if e.kind == "mechanistic")
FUNCTIONALIST: tuple[str, ...] = tuple(n for n, e in CATALOG.items() if e.kind == "functionalist")
