"""The sweep this process is running, for the parts of its Tune experiment that Tune pickles into the
experiment folder and unpickles on ``--resume`` (the one queue's searcher, scheduler and callbacks,
the timeline callback): they ask here at run time, so a resumed sweep writes into this session's
sweep folder with this session's settings, also when the folder was moved or copied since (Tune
supports restoring from another path; their pickled copies would name the old one).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ..results.folder import SweepFolder
from .settings import SweepConfig


@dataclass(frozen=True)
class LiveSweep:
    cfg: SweepConfig
    folder: SweepFolder
    points: dict[str, Any]
    side: Any = None  # SideRuns | None


_live: LiveSweep | None = None


@contextmanager
def running(sweep: LiveSweep) -> Iterator[LiveSweep]:
    global _live
    before, _live = _live, sweep
    try:
        yield sweep
    finally:
        _live = before


def live() -> LiveSweep | None:
    return _live
