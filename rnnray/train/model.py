"""The model a run trains (encoder + emulator), and the checks that resolve its encoder."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..config import ConfigError, TrainConfig
from ..emulation.emulator import EmulationModel, Emulator
from ..encoders import BASELINES, build_encoder, count_params, fit_to_budget, needs_augmentation
from ..encoders.registry import get_spec, resolve_hparams
from ..weights import Layout

BASELINE = BASELINES[0]  # "constant": the emulator with one learned representation for every RNN
EMULATOR_LAYERS = 2
SPLIT_NAMES = ("train", "val", "ood")


def check_encoder_name(name: str) -> None:
    """The name is a built-in, or a plug-in that imports and declares the contract (an entry point
    named like a built-in is refused: :func:`rnnray.encoders.catalog.check_name`)."""
    from ..encoders.catalog import BASELINE_NAMES, reference_of

    if name not in BASELINE_NAMES:
        reference_of(name)
    get_spec(name)


def check_plugin(name: str, cfg: TrainConfig, zoo_root: str, layout: Layout, kind: str) -> None:
    """A plug-in encoder tried once on a few of the zoo's RNNs at the run's preset, hyperparameters and
    budget (:mod:`rnnray.encoders.checks`), before Ray starts; a built-in is not tried."""
    check_encoder_name(name)
    if get_spec(name).builtin:
        return
    from ..encoders.checks import check_encoder
    from ..zoo.storage import sample_params

    check_encoder(name, layout, kind, torch.from_numpy(sample_params(zoo_root)), cfg.budget, cfg.tolerance, cfg.preset,
                  cfg.encoder_hparams)


def resolve_encoder(name: str, cfg: TrainConfig, layout: Layout, kind: str) -> tuple[dict[str, Any], int]:
    """Complete encoder hyperparameters and trainable parameter count: ``cfg.preset`` overridden
    by ``cfg.encoder_hparams``, its width fitted to ``cfg.budget`` when set (a baseline has a fixed size)."""
    spec = get_spec(name)
    try:
        if cfg.budget is not None and spec.sized:
            return fit_to_budget(name, layout, cfg.budget, cfg.tolerance, zoo_kind=kind, preset=cfg.preset,
                                 **cfg.encoder_hparams)
        hp = resolve_hparams(name, layout, kind, cfg.preset, **cfg.encoder_hparams)
        with torch.device("meta"):
            n = count_params(build_encoder(name, layout, kind, **hp))
        return hp, n
    except TypeError as e:  # unknown hyperparameter, or `width` together with a budget
        raise ConfigError(f"encoder_hparams: {e}") from None


def build_model(name: str, hparams: Mapping[str, Any], layout: Layout, kind: str, emulator_hidden: int,
                conditioning: str = "bos") -> EmulationModel:
    encoder = build_encoder(name, layout, kind, **hparams)
    return EmulationModel(encoder, Emulator(kind, hidden=emulator_hidden, num_layers=EMULATOR_LAYERS,
                                            conditioning=conditioning))


def clip_gradients(model: torch.nn.Module, params, max_norm: float, scope: str = "separate") -> None:
    """Gradient-norm clipping (SPEC.md section 6). ``separate``: the encoder's gradients and the
    emulator's are each scaled to norm at most ``max_norm`` on their own norm, as the authors' code
    clips each module's parameters; ``global``: one norm over ``params`` (both together)."""
    if scope == "global":
        torch.nn.utils.clip_grad_norm_(params, max_norm)
    elif scope == "separate":
        m = _unwrap(model)
        for part in (m.encoder, m.emulator):
            torch.nn.utils.clip_grad_norm_([p for p in part.parameters() if p.requires_grad], max_norm)
    else:
        raise ValueError(f"unknown grad_clip_scope {scope!r}; expected separate or global")


def _unwrap(model: torch.nn.Module) -> EmulationModel:
    return getattr(model, "module", model)


def _uses_augmentation(name: str, cfg: TrainConfig) -> bool:
    return cfg.augment and needs_augmentation(name)
