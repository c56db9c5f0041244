"""Reading a sweep file: its models (in :mod:`rnnray.config.sweep`) plus the checks that need the
encoders' search spaces, and Optuna's sampler for its ``tune`` section."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from ..config import (TRAIN_KNOBS, ConfigError, DownstreamSettings, Range, SearchValue, SweepConfig, TrainSettings,
                      TrialResources, TuneSettings, apply_overrides, format_validation_error, read_yaml, startup_trials)
from ..encoders import PluginError, default_hparams, search_space

__all__ = ["DownstreamSettings", "Range", "SearchValue", "SweepConfig", "TrialResources", "TuneSettings", "absolute_paths",
           "check_search", "load_sweep", "startup_trials", "tpe_sampler"]


def tpe_sampler(tune: TuneSettings):
    import optuna

    return optuna.samplers.TPESampler(seed=tune.seed, n_startup_trials=startup_trials(tune))


def _extra_knobs(key: str, encoders: list[str]) -> set[str]:
    """Fixed hyperparameters that may be set (as scalars) though they are not searched by default."""
    names = encoders if key == "all" else [key]
    return set().union(*(set(default_hparams(e)) - {"width"} for e in names))


def _check_train_knob(knob: str, value: SearchValue, where: str) -> None:
    """A searched training setting takes only values its field accepts (a range only if it is numeric)."""
    if isinstance(value, Range):
        if knob == "conditioning":
            raise ConfigError(f"{where}: a list of choices or one value, not a range")
        return
    for v in value if isinstance(value, list) else [value]:
        try:
            TrainSettings.model_validate({knob: v})
        except ValidationError as e:
            raise ConfigError(f"{where}: {e.errors()[0]['msg']}") from None


def resolve_encoders(cfg: SweepConfig, source: str = "sweep config") -> None:
    """Every encoder of the sweep imports and declares what the contract asks (plug-ins are imported
    here, not when the file is validated); one line naming the file and the encoder otherwise."""
    from ..encoders.registry import get_spec

    for name in cfg.encoders:
        try:
            get_spec(name)
        except PluginError as e:
            raise PluginError(f"{source}: encoders: {e}") from None


def check_search(cfg: SweepConfig, source: str = "sweep config") -> None:
    """Every key of ``search:`` names one of the sweep's encoders (or ``all``) and one of its hyperparameters
    or of the searchable training settings (``TRAIN_KNOBS``), whose values are checked against their field."""
    resolve_encoders(cfg, source)
    for key, space in cfg.search.items():
        if key != "all" and key not in cfg.encoders:
            raise ConfigError(f"{source}: search.{key}: not one of the sweep's encoders ({', '.join(cfg.encoders)})")
        names = set(TRAIN_KNOBS) | (set().union(*(search_space(e) for e in cfg.encoders)) if key == "all" else set(search_space(key)))
        for knob, value in space.items():
            if knob not in names and knob not in _extra_knobs(key, cfg.encoders):
                raise ConfigError(f"{source}: search.{key}.{knob}: not a searchable hyperparameter ({', '.join(sorted(names))})")
            if knob in TRAIN_KNOBS:
                _check_train_knob(knob, value, f"{source}: search.{key}.{knob}")


def load_sweep(path: str | Path, overrides: list[str] | None = None) -> SweepConfig:
    data = apply_overrides(read_yaml(path), overrides)
    try:
        cfg = SweepConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, str(path))) from None
    check_search(cfg, str(path))
    return cfg


def absolute_paths(cfg: SweepConfig) -> SweepConfig:
    """Relative zoo and results paths, resolved against the directory the sweep was started in:
    Tune runs each trial in a working directory of its own, where they would point nowhere."""
    def absolute(p: str) -> str:
        return p if "://" in p else str(Path(p).expanduser().resolve())

    update = {"results": absolute(cfg.results)}
    if isinstance(cfg.zoo, str):
        update["zoo"] = absolute(cfg.zoo)
    else:
        update["zoo"] = cfg.zoo.model_copy(update={"path": absolute(cfg.zoo.path)})
    return cfg.model_copy(update=update)
