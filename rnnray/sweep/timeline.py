"""When the sweep's slots were busy: each Tune trial's start and end, each phase's wall time, and
the slot utilisation that follows (``timeline.json`` in the sweep folder).

Users rent an 8-GPU node by the hour; what they pay for and do not use is the idle slots. A *slot*
is one of ``tune.max_concurrent_trials`` trials Tune may run at once (set it to what the cluster
holds, e.g. 8 GPUs / GPUs per trial). A trial holds its slot from Tune starting it to its end
(finished, stopped by ASHA, failed; interrupted: to the end of that session). The utilisation is
busy slot-seconds over available slot-seconds, ``slots x (last end - first start)``, within each
session of the sweep (a ``--resume`` starts another; the time between sessions is not counted).

Phases: ``zoo``, ``downstream`` and ``report`` are timed around their work; ``search``, ``final``
and ``oracles`` are the trials of that role, from the first one's start to the last one's end.
Under the one-queue schedule they overlap, so their sum can exceed the sweep's wall time.
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Any

from ..results.atomic import atomic_write_json
from ..results.folder import SweepFolder

SESSION = f"{os.getpid()}-{int(time.time())}"  # this process: one session of the sweep


def session() -> str:
    """This process's session. Tune pickles the callback below by value into its experiment (with
    copies of the module globals it uses) and unpickles it on ``--resume``, so it asks the module
    imported in the running process, never a copy."""
    from rnnray.sweep import timeline

    return timeline.SESSION
ROLE_PHASE = {"search": "search", "final": "final", "oracle": "oracles"}
PHASES = ("zoo", "search", "final", "oracles", "downstream", "report")


def read(folder: SweepFolder) -> dict[str, Any]:
    if folder.timeline_json.is_file():
        return json.loads(folder.timeline_json.read_text())
    return {"slots": None, "runs": [], "phases": []}


def _update(folder: SweepFolder, runs=(), phases=(), slots: int | None = None) -> None:
    doc = read(folder)
    doc["runs"].extend(runs)
    doc["phases"].extend(phases)
    if slots is not None:
        doc["slots"] = slots
    atomic_write_json(folder.timeline_json, doc)


def record_phase(folder: SweepFolder, phase: str, start: float, end: float) -> None:
    _update(folder, phases=[{"session": session(), "phase": phase, "start": start, "end": end}])


@contextmanager
def phase(folder: SweepFolder, name: str):
    """Time the work inside the block as phase ``name`` (recorded when it ends)."""
    start = time.time()
    yield
    record_phase(folder, name, start, time.time())


def timeline_callback(folder: SweepFolder, slots: int, role: str | None = None, encoder: str | None = None):
    """A Tune callback recording each trial's slot time. ``role``/``encoder``: for an experiment
    whose trials do not carry them in their config (the per-encoder schedule)."""
    from ray.tune import Callback

    class Timeline(Callback):
        def setup(self, **info):
            from rnnray.sweep.live import live  # at run time: Tune pickles this class by value

            now = live()
            self._folder = now.folder if now else folder  # this session's (rnnray.sweep.live)
            self._open: dict[str, tuple[float, Any]] = {}
            _update(self._folder, slots=slots)

        def on_trial_start(self, iteration, trials, trial, **info):
            self._open.setdefault(trial.trial_id, (time.time(), trial))

        def _close(self, trial, interrupted: bool = False) -> None:
            start, _ = self._open.pop(trial.trial_id, (None, None))
            if start is None:
                return
            c = trial.config or {}
            _update(self._folder, runs=[{"session": session(), "trial_id": trial.trial_id, "key": c.get("key"),
                                   "role": c.get("role", role), "encoder": c.get("encoder", encoder),
                                   "start": start, "end": time.time(), "interrupted": interrupted}])

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._close(trial)

        def on_trial_error(self, iteration, trials, trial, **info):
            self._close(trial)

        def on_experiment_end(self, trials, **info):
            for _, trial in list(self._open.values()):  # still running: stopped by an interrupt
                self._close(trial, interrupted=True)

    return Timeline()


def utilisation(runs: list[dict], slots: int) -> dict[str, float | None]:
    """Busy and available slot-seconds (per session: slots x first start to last end), and their ratio."""
    by_session: dict[str, list[dict]] = defaultdict(list)
    for r in runs:
        by_session[r["session"]].append(r)
    busy = sum(r["end"] - r["start"] for r in runs)
    available = slots * sum(max(r["end"] for r in rs) - min(r["start"] for r in rs) for rs in by_session.values())
    return {"busy_slot_s": busy, "available_slot_s": available,
            "utilisation": busy / available if available > 0 else None}


def idle_split(runs: list[dict], slots: int) -> dict[str, float | None]:
    """Where the idle slot-seconds lie, per session: before the session's last trial start, while
    work was still to be started (a hand-over from one trial to the next, or an encoder's final seeds
    waiting for its search), and after it (the tail, nothing left to start).

    ``handover_slot_s`` and ``handover_median_s``: the sum and the median of the times a freed slot
    waited for its next trial (each start after the first ``slots`` is paired with the earliest end not
    yet taken). Where work is always ready, as in the one queue, this is the hand-over itself (Tune's
    loop, the placement group, the trial's actor starting), which no order of the work removes."""
    by_session: dict[str, list[dict]] = defaultdict(list)
    for r in runs:
        by_session[r["session"]].append(r)
    before = tail = 0.0
    gaps: list[float] = []
    for rs in by_session.values():
        last_start = max(r["start"] for r in rs)
        events = sorted([(r["start"], 1) for r in rs] + [(r["end"], -1) for r in rs])
        busy, t = 0, events[0][0]
        for when, change in events:  # the interval [t, when) had ``busy`` trials running
            free = max(0, slots - busy)
            before += free * max(0.0, min(when, last_start) - t)
            tail += free * max(0.0, when - max(t, last_start))
            busy, t = busy + change, when
        starts = sorted(r["start"] for r in rs)
        ends = sorted(r["end"] for r in rs)
        for start, freed in zip(starts[slots:], ends):
            gaps.append(max(0.0, start - freed))
    gaps.sort()
    return {"idle_before_last_start_slot_s": before, "idle_tail_slot_s": tail,
            "handover_slot_s": sum(gaps), "handover_median_s": gaps[len(gaps) // 2] if gaps else None}


def phase_seconds(doc: dict) -> dict[str, float]:
    """Each phase's wall time: timed phases summed over sessions; a role's trials from the first
    start to the last end, per session, summed."""
    out: dict[str, float] = defaultdict(float)
    for p in doc.get("phases", []):
        out[p["phase"]] += p["end"] - p["start"]
    spans: dict[tuple[str, str], list[float]] = {}
    for r in doc.get("runs", []):
        name = ROLE_PHASE.get(r.get("role") or "search", r.get("role"))
        lo, hi = spans.get((r["session"], name), (r["start"], r["end"]))
        spans[(r["session"], name)] = (min(lo, r["start"]), max(hi, r["end"]))
    for (_, name), (lo, hi) in spans.items():
        out[name] += hi - lo
    return {p: out[p] for p in PHASES if p in out} | {p: v for p, v in out.items() if p not in PHASES}


def schedule_summary(folder: SweepFolder) -> dict[str, Any] | None:
    """What ``analysis.json`` and the report give: slots, utilisation, busy and available
    slot-seconds, runs (a trial's time in a slot; one interrupted and resumed counts twice), each
    phase's wall time, and how they are defined. None without a timeline."""
    doc = read(folder)
    if not doc["runs"] and not doc["phases"]:
        return None
    slots = int(doc.get("slots") or 1)
    return {"slots": slots, **utilisation(doc["runs"], slots), **idle_split(doc["runs"], slots), "runs": len(doc["runs"]),
            "phase_seconds": phase_seconds(doc),
            "definition": "utilisation: busy slot-seconds / (slots x (last trial end - first trial start)), per "
                          "session; slots: tune.max_concurrent_trials; idle_before_last_start_slot_s / "
                          "idle_tail_slot_s: idle slot-seconds before / after the session's last trial start; "
                          "handover_slot_s, handover_median_s: sum and median of the waits of a freed slot for its "
                          "next trial; search, final and oracles: first start to last end of their trials (they "
                          "overlap under the one-queue schedule)"}
