"""The one queue's results store writer: each encoder's trial records as soon as its search has
ended, its final runs' records as soon as they have, the side runs' file once they all have.

A Tune callback, so records land while the rest of the queue runs (a resumed sweep keeps them;
the final runs are planned from them, :mod:`rnnray.sweep.queue`). It writes through the same
functions as the per-encoder schedule (:func:`~rnnray.sweep.experiment.record_search`,
:func:`~rnnray.sweep.final.record_final`), so the records, ``final.json``, ``summary.csv``,
``best.json`` and the ``DONE`` markers keep their form.

Which trials have ended: those Tune said so of (its complete / error callbacks), and those it
restored ended from its checkpoint (never started in this session). Never a trial started in this
session from its state alone: Ctrl-C makes Tune mark its running trials TERMINATED on the way out,
though they stopped mid-run (they resume on ``--resume``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
from ray.tune import Callback, Result
from ray.tune.experiment import Trial

from ..results.folder import SweepFolder
from .experiment import record_search
from .final import final_runs, record_final, write_final
from .live import LiveSweep, live
from .settings import SweepConfig
from .side import SideRuns
from .summary import collect_trials, summarise, write_summary

ENDED = (Trial.TERMINATED, Trial.ERROR)


def _history(trial: Trial) -> pd.DataFrame:
    """The trial's reported results: its ``result.json`` in the driver's staging folder (current) or
    in the experiment folder (synced from it; the one that holds a trial ended in an earlier session)."""
    best: list[str] = []
    for where in (trial.local_path, trial.path):
        f = Path(where) / "result.json"
        if f.is_file():
            lines = [line for line in f.read_text().splitlines() if line.strip()]
            best = lines if len(lines) > len(best) else best
    return pd.json_normalize([json.loads(line) for line in best], sep="/") if best else pd.DataFrame()


def result_of(trial: Trial) -> Result:
    """A Tune Result of an ended trial, as ``ResultGrid`` makes them."""
    error = (trial.get_pickled_error() or trial.get_error()) if trial.status == Trial.ERROR else None
    return Result(metrics=dict(trial.last_result or {}), checkpoint=None, error=error, path=trial.path,
                  metrics_dataframe=_history(trial))


def _order(trial: Trial) -> int:
    return int(str(trial.config.get("key", "x/x/0")).rsplit("/", 1)[-1])


class Recorder(Callback):
    """Writes the results store from the one queue's trials as they end (see the module)."""

    def __init__(self, cfg: SweepConfig, folder: SweepFolder, points: dict, side: SideRuns | None):
        self._own = LiveSweep(cfg, folder, points, side)

    def setup(self, **info) -> None:
        global _current
        now = live() or self._own  # this session's sweep, not the copy Tune pickled (rnnray.sweep.live)
        self.cfg, self.folder, self.points, self.side = now.cfg, now.folder, now.points, now.side
        self._trials: list[Trial] = []
        self._ended: set[str] = set()
        self._started: set[str] = set()  # by Tune in this session
        self._side_ended = False
        self._search_done = {e for e in self.cfg.encoders if self.folder.done_marker(e).exists()}
        self._final_done = {e for e in self.cfg.encoders if self.folder.final_done_marker(e).exists()}
        self._planned: dict[str, int] = {}  # encoder -> its final runs, once its search is recorded
        _current = self

    def _see(self, trials) -> None:
        self._trials = trials
        self._ended |= {t.trial_id for t in trials if t.status in ENDED and t.trial_id not in self._started}

    def on_step_begin(self, iteration, trials, **info) -> None:
        self._see(trials)
        self.record()

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self._started.add(trial.trial_id)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._trials = trials
        self._ended.add(trial.trial_id)

    on_trial_error = on_trial_complete

    def on_experiment_end(self, trials, **info) -> None:
        self._see(trials)
        self.record()  # what ended in the last step, or was restored ended

    def _ended_of(self, role: str, encoder: str | None, expected: int) -> list[Trial] | None:
        mine = sorted((t for t in self._trials if t.config.get("role") == role and t.config.get("encoder") == encoder),
                      key=_order)
        if len(mine) == expected and all(t.trial_id in self._ended for t in mine):
            return mine
        return None

    def record(self) -> None:
        cfg, folder, changed = self.cfg, self.folder, False
        for enc in cfg.encoders:
            if enc not in self._search_done:
                mine = self._ended_of("search", enc, cfg.tune.samples_per_encoder)
                if mine is None:
                    continue
                record_search(folder, cfg, enc, [result_of(t) for t in mine], self.points.get(enc))
                self._search_done.add(enc)
                changed = True
            if enc in self._final_done:
                continue
            if enc not in self._planned:
                self._planned[enc] = len(final_runs(cfg, collect_trials(folder, enc)))
            mine = self._ended_of("final", enc, self._planned[enc]) if self._planned[enc] else None
            if mine is not None:
                record_final(folder, cfg, enc, [result_of(t) for t in mine])
                write_final(folder, cfg.encoders)
                self._final_done.add(enc)
                changed = True
        if self.side is not None and not self._side_ended and not self.side.done(folder):
            mine = self._ended_of("oracle", None, len(self.side.configs))
            if mine is not None:
                self._side_ended = True
                failed = [t for t in mine if "side_result" not in (t.last_result or {})]
                if failed:  # the job runs them again after the sweep (its own fallback), and says so
                    print(f"{self.side.phase}: {len(failed)} of {len(mine)} runs failed in the queue", file=sys.stderr)
                else:
                    self.side.finish(folder, [json.loads(t.last_result["side_result"]) for t in mine])
        if changed:
            records = {e: collect_trials(folder, e) for e in cfg.encoders if e in self._search_done}
            rows, best = summarise(folder.path, cfg, records)
            write_summary(folder.path, rows, best, cfg)


    def unfinished(self) -> str | None:
        """What the queue has not recorded (None: everything): the first encoder's search, its final
        runs, or the side runs, in the per-encoder schedule's words."""
        cfg, folder = self.cfg, self.folder

        def ended(role, enc):
            return sum(1 for t in self._trials if t.trial_id in self._ended and t.config.get("role") == role
                       and t.config.get("encoder") == enc)

        for enc in cfg.encoders:
            if not folder.done_marker(enc).exists():
                return f"{enc}: {ended('search', enc)} of {cfg.tune.samples_per_encoder} trials ended"
            runs = final_runs(cfg, collect_trials(folder, enc))
            if runs and not folder.final_done_marker(enc).exists():
                return f"{enc}: {ended('final', enc)} of {len(runs)} final runs ended"
        if self.side is not None and not self._side_ended and not self.side.done(folder):
            return f"{self.side.phase}: {ended('oracle', None)} of {len(self.side.configs)} runs ended"
        return None


_current: Recorder | None = None


def current() -> Recorder | None:
    """The recorder of the experiment that ran last in this process: the one given to the Tuner, or
    on ``Tuner.restore`` the copy Tune unpickled from the experiment folder."""
    return _current
