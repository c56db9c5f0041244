"""The whole job's progress line: phase, runs done of the total, elapsed, estimated remaining.

The job (:mod:`rnnray.job`) makes one :class:`JobProgress` from its plan (runs and estimated
seconds per phase) and installs it with :func:`reporting`; the sweep's Tune experiments report
each ended trial through :func:`tune_callback`, the oracles and the last phases call
:func:`run_done` themselves. The remaining time is the plan's remaining estimate scaled by how the
work done so far compared with its own estimate, so a machine slower than measured shows it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from contextlib import contextmanager

PHASES = ("zoo", "search", "final", "oracles", "downstream", "report")


def _clock(seconds: float) -> str:
    seconds = max(0.0, seconds)
    h, rem = divmod(int(round(seconds)), 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class JobProgress:
    """Counts runs per phase against the plan and prints one line per ended run."""

    def __init__(self, runs: Mapping[str, int], seconds: Mapping[str, float], out: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.runs = {p: int(runs.get(p, 0)) for p in PHASES}
        self.seconds = {p: float(seconds.get(p, 0.0)) for p in PHASES}
        self.done = {p: 0 for p in PHASES}
        self.out = out or (lambda line: print(line, file=sys.stderr, flush=True))
        self.clock = clock
        self.t0 = clock()
        self.phase = PHASES[0]

    def expected_done(self) -> float:
        return sum(self.seconds[p] * min(1.0, self.done[p] / self.runs[p]) for p in PHASES if self.runs[p])

    def remaining(self) -> float:
        """The plan's remaining seconds, scaled by elapsed / expected for the work done so far."""
        left = sum(self.seconds[p] * max(0.0, 1.0 - self.done[p] / self.runs[p]) for p in PHASES if self.runs[p])
        done = self.expected_done()
        scale = min(3.0, max(0.33, (self.clock() - self.t0) / done)) if done > 0 else 1.0
        return left * scale

    def line(self) -> str:
        total = sum(self.runs.values())
        finished = sum(min(self.done[p], self.runs[p]) for p in PHASES)
        p = self.phase
        return (f"[job] {p}: {min(self.done[p], self.runs[p])}/{self.runs[p]} runs; all phases {finished}/{total}; "
                f"elapsed {_clock(self.clock() - self.t0)}, estimated remaining {_clock(self.remaining())}")

    def start(self, phase: str) -> None:
        self.phase = phase

    def run_done(self, phase: str, n: int = 1) -> None:
        self.phase = phase
        self.done[phase] += n
        self.out(self.line())

    def phase_done(self, phase: str) -> None:
        """Every run of the phase is done (a resumed phase, a zoo already built)."""
        if self.done[phase] < self.runs[phase]:
            self.run_done(phase, self.runs[phase] - self.done[phase])


_current: JobProgress | None = None


@contextmanager
def reporting(progress: JobProgress | None):
    """Install ``progress`` for the work inside the block (None: no progress lines)."""
    global _current
    before, _current = _current, progress
    try:
        yield progress
    finally:
        _current = before


def run_done(phase: str, n: int = 1) -> None:
    if _current is not None:
        _current.run_done(phase, n)


def phase_done(phase: str) -> None:
    if _current is not None:
        _current.phase_done(phase)


def start(phase: str) -> None:
    if _current is not None:
        _current.start(phase)


def tune_callback(phase: str | Callable) -> list:
    """A Tune callback counting each ended trial (finished, stopped early or failed) of ``phase``
    (a name, or a module-level function of the trial giving it: the one queue's trials differ)."""
    if _current is None:
        return []
    from ray.tune import Callback

    def name(trial) -> str:
        return phase if isinstance(phase, str) else phase(trial)

    class RunEnded(Callback):
        def on_trial_complete(self, iteration, trials, trial, **info):
            run_done(name(trial))

        def on_trial_error(self, iteration, trials, trial, **info):
            run_done(name(trial))

    return [RunEnded()]
