"""Each encoder against each other encoder: the best configurations' final seeds, validation loss.

Encoder seed *s* of every encoder sees the same batches (the final runs share their seeds), so two
encoders are compared with a paired t-test over the seeds they share, Welch's test only where their
seeds do not pair; a pair without a test (fewer than 2 seeds, no spread) says "not applicable". This
is the comparison a researcher quotes when a new encoder (a plug-in, ``dlpg``) is set beside a
built-in: computed from ``final.json``, stored in ``analysis.json`` (``pairs``), printed by the report.
"""

from __future__ import annotations

from typing import Any

from .oracles import ALPHA, against


def encoder_pairs(folder, encoders) -> dict[str, Any]:
    """``{"alpha", "pairs": [{"a", "b", "test", "diff" (mean of a - mean of b over the pairing), "p", "n",
    "lower" (a significantly below b), "higher"}]}`` for every pair of ``encoders`` (in that order)
    with final seeds; empty when fewer than two have them."""
    from ..results.records import read_final
    from .statistics import by_seed

    final = read_final(folder)
    seeds = {}
    for enc in encoders:
        best = (final.get(enc) or {}).get("best")
        if best is not None and best.val_loss:
            seeds[enc] = by_seed(best.val_loss, best.seeds)
    names = [e for e in encoders if e in seeds]
    if len(names) < 2:
        return {}
    pairs = [{"a": a, "b": b, **against(seeds[a], seeds[b])} for i, a in enumerate(names) for b in names[i + 1:]]
    return {"alpha": ALPHA, "pairs": pairs}
