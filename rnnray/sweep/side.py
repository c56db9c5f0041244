"""Work the one queue runs beside the encoders' trials that depends on no search: the label
oracles. The stage that owns that work (:mod:`rnnray.analysis.oracles`, a later stage than the
sweep) describes it as a :class:`SideRuns`, and the job hands it to the sweep, so the queue can
fill idle slots with it without the sweep importing a later stage.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..results.folder import SweepFolder


@dataclass(frozen=True)
class SideRuns:
    """``configs``: one plain-data Tune config per run; ``run(config, payload)``: a module-level
    function that does one run inside its Tune trial and returns its result as JSON-able data, its
    ``best_val_loss`` reported as the trial's ``val_loss`` (Tune wants the sweep's metric from every
    trial; no scheduler or searcher acts on a side run) (``payload``: what every run shares, shipped once); ``finish(folder, results)``: the results in
    the order of ``configs``, written to the owner's file; ``done(folder)``: that file is there
    already, for these settings (a resumed sweep). A run holds one training worker's resources
    (``resources.cpus_per_worker``, ``gpus_per_worker``)."""

    phase: str
    configs: list[dict]
    run: Callable[[dict, Any], dict]
    payload: Any
    finish: Callable[[SweepFolder, list[dict]], None]
    done: Callable[[SweepFolder], bool]
