"""The model a run trains (encoder + emulator), and the checks that resolve its encoder."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..config import ConfigError, TrainConfig
from ..emulator import ConstantRepresentation, EmulationModel, Emulator
from ..encoders import ENCODERS, UnknownEncoder, build_encoder, count_params, fit_to_budget, needs_augmentation
from ..encoders.common import REPRESENTATION_DIM
from ..weights import Layout

BASELINE = "constant"
EMULATOR_LAYERS = 2
SPLIT_NAMES = ("train", "val", "ood")


def check_encoder_name(name: str) -> None:
    if name != BASELINE and name not in ENCODERS:
        raise UnknownEncoder(f"unknown encoder {name!r}; valid names: {', '.join(ENCODERS + (BASELINE,))}")


def zoo_info(path: str) -> tuple[str, Layout, str]:
    """(zoo kind, parameter layout, absolute path) of a zoo, from its manifest."""
    from ..zoo import read_manifest

    root = str(Path(path).expanduser().resolve())
    manifest = read_manifest(root)
    return manifest["kind"], Layout.from_dict(manifest["layout"]), root


def resolve_encoder(name: str, cfg: TrainConfig, layout: Layout, kind: str) -> tuple[dict[str, Any], int]:
    """Complete encoder hyperparameters and trainable parameter count: ``cfg.preset`` overridden
    by ``cfg.encoder_hparams``, its width fitted to ``cfg.budget`` when set."""
    check_encoder_name(name)
    if name == BASELINE:
        if cfg.encoder_hparams:
            raise ConfigError(f"encoder_hparams: the {BASELINE!r} baseline has no hyperparameters")
        return {}, REPRESENTATION_DIM
    from ..encoders.registry import resolve_hparams

    try:
        if cfg.budget is not None:
            return fit_to_budget(name, layout, cfg.budget, cfg.tolerance, zoo_kind=kind, preset=cfg.preset,
                                 **cfg.encoder_hparams)
        hp = resolve_hparams(name, layout, kind, cfg.preset, **cfg.encoder_hparams)
        with torch.device("meta"):
            n = count_params(build_encoder(name, layout, kind, **hp))
        return hp, n
    except TypeError as e:  # unknown hyperparameter, or `width` together with a budget
        raise ConfigError(f"encoder_hparams: {e}") from None


def build_model(name: str, hparams: Mapping[str, Any], layout: Layout, kind: str, emulator_hidden: int) -> EmulationModel:
    encoder = ConstantRepresentation() if name == BASELINE else build_encoder(name, layout, kind, **hparams)
    return EmulationModel(encoder, Emulator(kind, hidden=emulator_hidden, num_layers=EMULATOR_LAYERS))


def _unwrap(model: torch.nn.Module) -> EmulationModel:
    return getattr(model, "module", model)


def _uses_augmentation(name: str, cfg: TrainConfig) -> bool:
    return cfg.augment and name in ENCODERS and needs_augmentation(name)
