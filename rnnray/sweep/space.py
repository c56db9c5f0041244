"""What each encoder's trials search, the paper preset as trial 0, and the budget checked up front."""

from __future__ import annotations

from typing import Any

from ..config import TRAIN_KNOBS, ConfigError
from .settings import Range, SearchValue, SweepConfig, _extra_knobs


def encoder_space(cfg: SweepConfig, encoder: str, zoo_kind: str) -> dict[str, SearchValue]:
    """Default space (the encoder's own knobs + learning rate), overridden by 'all' and then by name
    (which may add the other searchable training settings, ``conditioning``)."""
    from ..encoders import search_space

    space: dict[str, SearchValue] = {"lr": Range(low=3e-5, high=3e-3, log=True)}
    space.update(search_space(encoder, zoo_kind))
    for key in ("all", encoder):
        for knob, value in cfg.search.get(key, {}).items():
            if key == "all" and knob not in space and knob not in TRAIN_KNOBS and knob not in _extra_knobs(encoder, [encoder]):
                continue  # an 'all' knob this encoder does not have
            space[knob] = value
    return space


def define_by_run(trial, space: dict):
    """Optuna define-by-run space (module level so OptunaSearch can pickle it); scalars are fixed."""
    fixed = {}
    for knob, value in space.items():
        if isinstance(value, list):
            trial.suggest_categorical(knob, value)
        elif isinstance(value, Range):
            if value.int:
                trial.suggest_int(knob, int(value.low), int(value.high), log=value.log)
            else:
                trial.suggest_float(knob, value.low, value.high, log=value.log)
        elif isinstance(value, dict):  # a Range as a plain dict (what the searcher is given)
            if value.get("int"):
                trial.suggest_int(knob, int(value["low"]), int(value["high"]), log=bool(value.get("log")))
            else:
                trial.suggest_float(knob, float(value["low"]), float(value["high"]), log=bool(value.get("log")))
        else:
            fixed[knob] = value
    return fixed or None


def _plain(space: dict) -> dict:
    """Ranges as plain dicts: the searcher is pickled and shipped, plain data travels best."""
    return {k: (v.model_dump() if isinstance(v, Range) else v) for k, v in space.items()}


def fixed_knobs(cfg: SweepConfig, encoder: str) -> dict[str, Any]:
    """The encoder's hyperparameters its ``search:`` entry fixes to one value (not searched)."""
    return {k: v for k, v in cfg.search.get(encoder, {}).items() if not isinstance(v, (list, Range)) and k not in TRAIN_KNOBS}


def check_budget(cfg: SweepConfig, zoo_kind: str, layout) -> dict[str, int]:
    """Fit every encoder at its default hyperparameters: an infeasible budget fails here, up front."""
    from ..encoders import InfeasibleBudget, fit_to_budget

    counts = {}
    for enc in cfg.encoders:
        try:
            _, n = fit_to_budget(enc, layout, cfg.budget, cfg.tolerance, zoo_kind=zoo_kind, preset=cfg.preset(enc),
                                 **fixed_knobs(cfg, enc))
        except InfeasibleBudget as e:
            raise InfeasibleBudget(f"budget: {e}") from None
        counts[enc] = n
    return counts


def paper_point(cfg: SweepConfig, encoder: str, zoo_kind: str, layout) -> dict[str, Any] | None:
    """Trial 0 of an encoder: its preset's value for every searched knob (the width is fitted to the
    budget inside the trial, as for any trial) and the file's training learning rate and conditioning
    (the paper's 1e-4 and ``bos`` unless ``train:`` says otherwise). None when ``tune.paper_trial`` is off. A search range
    that leaves the preset's value out is an error: the sweep could not start from the paper."""
    if not cfg.tune.paper_trial:
        return None
    from ..encoders.registry import resolve_hparams

    preset = resolve_hparams(encoder, layout, zoo_kind, cfg.preset(encoder))
    preset["lr"] = cfg.train.lr
    preset["conditioning"] = cfg.train.conditioning
    point = {}
    for knob, value in encoder_space(cfg, encoder, zoo_kind).items():
        if not isinstance(value, (list, Range)):
            continue  # fixed: not a searched parameter
        v = preset[knob]
        ok = v in value if isinstance(value, list) else value.low <= v <= value.high
        if not ok:
            where = f"search.{encoder}.{knob}" if knob in cfg.search.get(encoder, {}) else f"search.all.{knob}"
            raise ConfigError(f"{where}: leaves out the {cfg.preset(encoder)} preset's value {v!r} (trial 0); "
                              "include it, or set tune.paper_trial: false")
        point[knob] = v
    return point


def is_paper_config(config: dict, point: dict | None) -> bool:
    return point is not None and all(config.get(k) == v for k, v in point.items())
