"""Early stopping in the one queue: one ASHA per encoder for its search trials, FIFO for the rest,
and ASHA's rungs kept across ``--resume``.

ASHA compares a trial with the trials of the same encoder that reached the same rung; one ASHA
over every encoder would stop a ``dws`` trial for being worse than ``flat`` ones. So each
encoder's search trials go to that encoder's own ``ASHAScheduler`` (its settings: the sweep's
``tune`` section); final runs and side runs are never stopped early.

Tune does not save schedulers: ``Tuner.restore`` starts ASHA's rungs empty, so a resumed sweep
stopped trials by other cutoffs than an uninterrupted one (a known, open limitation of Ray
Tune). ASHA's state is a function of the results it was shown, in order; so every result it
sees (trial, key, iteration, validation loss) and its decision are appended to ``rungs.json`` in
the sweep folder (written whole, atomically) as they happen, and on resume the entries of the
trials the restored experiment knows are shown again to fresh ASHAs, in the same order, before
any new result. Entries of trials Tune's restored state does not know (started after its last
experiment checkpoint; their proposals are made again) are dropped, and a trial that ASHA had
told to stop is stopped again at its next result, whatever its rung now says.

A rung is counted in evaluations from the reported training step (``ceil(step / eval_every)``),
not Tune's ``training_iteration``: a trial restored from its checkpoint counts its iterations from
1 again, which put its next result at rung 1 a second time and changed the decisions.
"""

from __future__ import annotations

import json
import math
from typing import Any

from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from ..results.atomic import atomic_write_json
from .live import live
from .settings import SweepConfig

TIME_ATTR = "training_iteration"


class EncoderRungs(FIFOScheduler):
    """Routes each search trial to its encoder's ASHA and logs every result to ``path`` (see the module)."""

    def __init__(self, cfg: SweepConfig, path: str, metric: str = "val_loss"):
        super().__init__()
        evals = cfg.train.evaluations
        # max_t one past the last evaluation, as the per-encoder schedule: a trial that trains to the
        # end returns by itself, so its Ray Train run shuts down cleanly
        self._asha_args = dict(time_attr=TIME_ATTR, metric=metric, mode="min", max_t=evals + 1,
                               grace_period=min(cfg.tune.grace_period, evals), reduction_factor=cfg.tune.reduction_factor)
        self._metric, self._path, self._eval_every = metric, str(path), cfg.train.eval_every
        self._asha: dict[str, ASHAScheduler] = {}
        self._trials: dict[str, Trial] = {}  # every trial added in this session
        self._log: list[dict] = []
        self._stopped: set[str] = set()
        self._replayed = False

    def set_search_properties(self, metric, mode, **spec) -> bool:
        return True  # each ASHA has the sweep's metric and mode already

    @staticmethod
    def _search(trial: Trial) -> str | None:
        c = trial.config or {}
        return c.get("encoder") if c.get("role") == "search" else None

    def _for(self, encoder: str) -> ASHAScheduler:
        if encoder not in self._asha:
            self._asha[encoder] = ASHAScheduler(**self._asha_args)
        return self._asha[encoder]

    def _replay(self, controller) -> None:
        """Once per session, before ASHA's first decision: the logged results of the trials this
        session knows, shown again in their order."""
        if self._replayed:
            return
        self._replayed = True
        now = live()  # this session's folder, not the one Tune pickled (rnnray.sweep.live)
        if now is not None:
            self._path = str(now.folder.rungs_json)
        try:
            with open(self._path) as f:
                logged = json.load(f)
        except FileNotFoundError:
            logged = []
        for e in logged:
            trial = self._trials.get(e["trial_id"])
            if trial is None:  # unknown to Tune's restored state: its proposal is made again
                continue
            asha, result = self._for(e["encoder"]), {TIME_ATTR: e["iteration"], self._metric: e["value"]}
            if e["event"] == "result":
                asha.on_trial_result(controller, trial, result)
            else:
                asha.on_trial_complete(controller, trial, result)
            if e.get("action") == TrialScheduler.STOP:
                self._stopped.add(e["trial_id"])
            self._log.append(e)

    def _append(self, event: str, trial: Trial, result: dict, action: str | None = None) -> None:
        self._log.append({"event": event, "trial_id": trial.trial_id, "key": trial.config.get("key"),
                          "encoder": self._search(trial), "iteration": result[TIME_ATTR],
                          "value": result[self._metric], "action": action})
        atomic_write_json(self._path, self._log)

    def on_trial_add(self, controller, trial: Trial) -> None:
        self._trials[trial.trial_id] = trial
        enc = self._search(trial)
        if enc is not None:
            self._for(enc).on_trial_add(controller, trial)

    def _timed(self, result: dict | None) -> dict | None:
        """``result`` with its rung time: evaluations done, from the step (see the module)."""
        if not result or result.get(self._metric) is None:
            return None
        if "step" in result:
            return {**result, TIME_ATTR: math.ceil(result["step"] / self._eval_every)}
        return result if TIME_ATTR in result else None

    def on_trial_result(self, controller, trial: Trial, result: dict) -> str:
        enc = self._search(trial)
        result = self._timed(result)
        if enc is None or result is None:
            return TrialScheduler.CONTINUE
        self._replay(controller)
        action = self._for(enc).on_trial_result(controller, trial, result)
        if trial.trial_id in self._stopped:  # told to stop before an interrupt: stop it again
            action = TrialScheduler.STOP
        elif action == TrialScheduler.STOP:
            self._stopped.add(trial.trial_id)
        self._append("result", trial, result, action)
        return action

    def on_trial_complete(self, controller, trial: Trial, result: dict) -> None:
        enc = self._search(trial)
        if enc is None:
            return
        self._replay(controller)
        timed = self._timed(result)
        self._for(enc).on_trial_complete(controller, trial, timed or result)
        if timed is not None:
            self._append("complete", trial, timed)

    def on_trial_error(self, controller, trial: Trial) -> None:
        enc = self._search(trial)
        if enc is not None:
            self._for(enc).on_trial_error(controller, trial)

    def on_trial_remove(self, controller, trial: Trial) -> None:
        enc = self._search(trial)
        if enc is not None:
            self._for(enc).on_trial_remove(controller, trial)

    def choose_trial_to_run(self, controller) -> Trial | None:
        self._replay(controller)
        return super().choose_trial_to_run(controller)

    def debug_string(self) -> str:
        return "One ASHA per encoder (search trials), FIFO for final and side runs"


def decisions(path) -> dict[str, dict[str, Any]]:
    """Per trial key, from a ``rungs.json``: the last iteration ASHA saw and the iteration it said
    STOP at (None: it never did). What a resumed sweep must share with an uninterrupted one."""
    out: dict[str, dict[str, Any]] = {}
    with open(path) as f:
        for e in json.load(f):
            d = out.setdefault(e["key"], {"last": 0, "stopped_at": None})
            d["last"] = max(d["last"], e["iteration"])
            if e.get("action") == TrialScheduler.STOP and d["stopped_at"] is None:
                d["stopped_at"] = e["iteration"]
    return out
