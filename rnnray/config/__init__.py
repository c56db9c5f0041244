"""Pydantic models for every YAML the platform reads: the one place defaults live.

Every model forbids unknown keys, so a typo is an error rather than a silently ignored setting.
:func:`read_yaml` + :func:`apply_overrides` turn a file and ``--set key=value`` pairs into a
validated model; :class:`ConfigError` carries the one-line message the commands print.

One module per file a user writes: :mod:`.zoo` (the zoo file), :mod:`.train` (the training file),
:mod:`.sweep` (the sweep file); :mod:`.base` has what they share.
"""

from .base import (CONDITIONINGS, DEFAULT_PRESET, ENCODER_NAMES, GRAD_CLIP_SCOPES, PRESET_NAMES, SPLIT_SCHEMES, ConfigError, Strict, apply_overrides,
                   format_validation_error, read_yaml)
from .sweep import (PREDICTOR_HIDDEN, PREDICTOR_SEEDS, PREDICTOR_STEPS, RUN_OWNED, SUPERVISED_ENCODER, TRAIN_KNOBS, DownstreamSettings, FinalSettings, ORACLE_MODES, OracleSettings, Range, SearchValue, SweepConfig, TrackingSettings, predictor_seeds,
                    TrialResources, TuneSettings, startup_trials)
from .train import TrainConfig, TrainSettings, load_train_config, train_config_from_dict
from .zoo import (PAPER_LR_POINTS, PAPER_SNAPSHOT_STEPS, FormalLanguagesZoo, MnistZoo, ZooConfig, ZooResources,
                  load_zoo_config, parse_zoo, zoo_config_from_dict)

__all__ = ["CONDITIONINGS", "DEFAULT_PRESET", "ENCODER_NAMES", "GRAD_CLIP_SCOPES", "PAPER_LR_POINTS", "PAPER_SNAPSHOT_STEPS", "PREDICTOR_HIDDEN", "PREDICTOR_SEEDS", "PREDICTOR_STEPS", "PRESET_NAMES", "RUN_OWNED", "SPLIT_SCHEMES", "SUPERVISED_ENCODER", "TRAIN_KNOBS",
           "ConfigError", "DownstreamSettings", "FinalSettings", "FormalLanguagesZoo", "ORACLE_MODES", "OracleSettings", "MnistZoo", "Range", "SearchValue", "Strict",
           "SweepConfig", "TrackingSettings", "TrainConfig", "TrainSettings", "TrialResources", "TuneSettings", "ZooConfig", "ZooResources",
           "apply_overrides", "format_validation_error", "load_train_config", "load_zoo_config", "parse_zoo",
           "read_yaml", "startup_trials", "train_config_from_dict", "zoo_config_from_dict"]
