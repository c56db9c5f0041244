"""One queue for a sweep's work: the searcher that proposes every encoder's search trials, each
encoder's final seeds as soon as its search has ended, and the side runs (the label oracles).

Per encoder in turn, one Tune experiment for its search and another for its seeds, left slots idle
whenever an encoder had fewer runnable trials than slots (its last trials, ASHA's tail, a seed
round smaller than the slots), while the next encoders had work ready. Here one Tune experiment
holds all of it, so Tune's single queue fills a slot as soon as one frees.

:class:`SweepSearcher` is a Tune ``Searcher`` holding one ``OptunaSearch`` per encoder (its own
space, sampler seed, paper point and study, exactly as the per-encoder experiments had them), so
Optuna still proposes per encoder. Asked for a trial, it proposes, in this order:

1. a final run of an encoder whose search has ended and whose trial records are written (the
   records come from :mod:`rnnray.sweep.recorder` at the start of Tune's next step; the best
   configuration is chosen from them by :func:`rnnray.sweep.final.final_runs`, the rule the
   per-encoder schedule uses), so an encoder's seeds start early and the long runs do not wait for
   the last encoder;
2. the next search trial, encoders in the sweep's order (each encoder's TPE sees its own finished
   trials, as before);
3. a side run (independent of every search: fills slots the searches leave).

Each config carries ``encoder``, ``role`` (``search``, ``final``, ``oracle``) and ``key``
(``flat/search/3``, stable across sessions) beside the proposal; :data:`rnnray.sweep.trial.QUEUE_KEYS`
keeps them out of the records. ``save``/``restore`` keep the whole state (the Optuna searchers
included), so ``Tuner.restore`` resumes the queue where Tune's last experiment checkpoint left it.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from ray.tune.search import Searcher

from ..results.folder import SweepFolder
from .final import final_runs
from .live import live
from .settings import SweepConfig
from .summary import collect_trials

TUNE_METRIC = "val_loss"


class SweepSearcher(Searcher):
    """Proposes a sweep's search trials, final runs and side runs from one queue (see the module)."""

    def __init__(self, cfg: SweepConfig, folder: str, optuna: dict[str, Any], side: list[dict] | None = None):
        super().__init__(metric=TUNE_METRIC, mode="min")
        self._cfg, self._folder, self._optuna = cfg, str(folder), optuna
        self._side = list(side or [])
        self._side_next = 0
        self._proposed = {e: 0 for e in cfg.encoders}
        self._ended = {e: 0 for e in cfg.encoders}
        self._finals: dict[str, list[dict]] = {}
        self._final_next = {e: 0 for e in cfg.encoders}
        self._trials: dict[str, tuple[str | None, str]] = {}  # trial id -> (encoder, role)
        f = SweepFolder(Path(folder))
        for enc in cfg.encoders:  # work recorded by an earlier session (or the per-encoder schedule)
            if f.done_marker(enc).exists():
                self._proposed[enc] = self._ended[enc] = cfg.tune.samples_per_encoder
            if f.final_done_marker(enc).exists():
                self._finals[enc] = []

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True  # each OptunaSearch has its space, metric and mode already

    def _final_plan(self, enc: str) -> list[dict] | None:
        """The encoder's final runs, once its search has ended and its records are written (None before)."""
        if enc in self._finals:
            return self._finals[enc]
        now = live()  # this session's folder, not the one Tune pickled (rnnray.sweep.live)
        folder = now.folder if now else SweepFolder(Path(self._folder))
        if self._ended[enc] < self._cfg.tune.samples_per_encoder or not folder.done_marker(enc).exists():
            return None
        self._finals[enc] = final_runs(self._cfg, collect_trials(folder, enc))
        return self._finals[enc]

    def _note(self, trial_id: str, enc: str | None, role: str, key: str, config: dict) -> dict:
        self._trials[trial_id] = (enc, role)
        return {**config, "encoder": enc, "role": role, "key": key}

    def suggest(self, trial_id: str) -> dict | str | None:
        for enc in self._cfg.encoders:
            runs = self._final_plan(enc)
            if runs and self._final_next[enc] < len(runs):
                i = self._final_next[enc]
                self._final_next[enc] += 1
                return self._note(trial_id, enc, "final", f"{enc}/final/{i}", {"final": runs[i]})
        for enc in self._cfg.encoders:
            if self._proposed[enc] < self._cfg.tune.samples_per_encoder:
                params = self._optuna[enc].suggest(trial_id)
                i = self._proposed[enc]
                self._proposed[enc] += 1
                return self._note(trial_id, enc, "search", f"{enc}/search/{i}", params)
        if self._side_next < len(self._side):
            i = self._side_next
            self._side_next += 1
            return self._note(trial_id, None, "oracle", f"oracle/{i}", self._side[i])
        if all((p := self._final_plan(e)) is not None and self._final_next[e] >= len(p) for e in self._cfg.encoders):
            return Searcher.FINISHED
        return None  # an encoder's seeds wait for the end of its search

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        enc, role = self._trials.get(trial_id, (None, None))
        if role == "search":
            self._optuna[enc].on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        enc, role = self._trials.get(trial_id, (None, None))
        if role == "search":
            self._optuna[enc].on_trial_complete(trial_id, result=result, error=error)
            self._ended[enc] += 1

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))
