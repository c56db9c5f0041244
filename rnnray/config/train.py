"""The training file: emulation training of one encoder (SPEC.md section 6)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from .base import (CONDITIONINGS, DEFAULT_PRESET, GRAD_CLIP_SCOPES, PRESET_NAMES, SPLIT_SCHEMES, ConfigError, Strict, ranks_apart,
                   apply_overrides, finite_tree, format_validation_error, one_of, read_yaml)


class TrainSettings(Strict):
    """How an encoder and its emulator are optimised: the part of a run's config a sweep shares among
    all its trials (a sweep file's ``train:`` section). Defaults are the paper's (SPEC.md section 6);
    ``batch_size`` is the *global* batch, divided evenly among the workers, so the optimisation does
    not depend on how many workers run it."""

    emulator_hidden: int = Field(256, ge=1, description="emulator LSTM units")
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    grad_clip: float = Field(0.1, gt=0, description="max gradient norm (see grad_clip_scope)")
    grad_clip_scope: Literal[GRAD_CLIP_SCOPES] = Field(  # type: ignore[valid-type]
        "separate", description="separate: the encoder's and the emulator's gradients are each clipped to grad_clip "
                                "on their own norm, as the authors' code does; global: one norm over both (a departure)")
    conditioning: Literal[CONDITIONINGS] = Field(  # type: ignore[valid-type]
        "bos", description="where the emulator receives the representation: bos: added to its first input only (the "
                           "paper's); every_step: added to its input at every step (the authors' code's option, off in "
                           "the paper; a departure). A sweep may search it: search: {all: {conditioning: [bos, every_step]}}")
    batch_size: int = Field(64, ge=1, description="snapshots per step over all workers, one stored sequence each")
    steps: int = Field(100_000, ge=1, description="optimisation steps")
    eval_every: int = Field(1000, ge=1, description="steps between validation/OOD evaluations (and checkpoints)")
    eval_sequences: int = Field(
        10, ge=1, description="stored sequences evaluated per snapshot (the first k): fixed, deterministic eval sets"
    )
    eval_batch_size: int = Field(256, ge=1, description="(snapshot, sequence) pairs per forward pass during evaluation")
    augment: bool = Field(True, description="permutation augmentation for encoders not invariant by construction")
    seed: int = Field(0, ge=0, description="initialisation, batch order, sequence choice and augmentation")
    split_seed: int = Field(0, ge=0, description="seed of the task split (keep it fixed across encoders); not used by split: authors")
    split: Literal[SPLIT_SCHEMES] = Field(  # type: ignore[valid-type]
        "ours", description="ours: rnnray's split by task (SPEC.md 4); authors: the authors' split of their released "
                            "zoos, exactly (SPEC.md 8)")
    max_failures: int = Field(2, ge=-1, description="worker-group restarts from the latest checkpoint (-1: unlimited)")

    @property
    def evaluations(self) -> int:
        """Evaluations a run that trains to the end reports (every ``eval_every`` steps and at the last)."""
        return max(1, math.ceil(self.steps / self.eval_every))


class TrainConfig(TrainSettings):
    """Emulation training of one encoder: encoder and emulator together, on the train split of a zoo.

    The encoder's *name* is not part of the config (it is given on the command line or by the
    sweep), so one file trains every encoder the same way. Beside the optimisation settings
    (:class:`TrainSettings`): the zoo, the encoder's preset, hyperparameters and budget, the
    workers, and where the run is written.
    """

    zoo: str = Field(..., description="zoo directory (built with `python -m rnnray.zoo build`)")
    budget: int | None = Field(
        None, gt=0, description="trainable encoder parameters; when set, the encoder's width is fitted to it"
    )
    tolerance: float = Field(0.05, gt=0, lt=1, description="relative tolerance of the parameter budget")
    preset: str = Field(
        DEFAULT_PRESET, description="named encoder configuration the hyperparameters start from (`paper`: SPEC.md 5b); "
                             "`encoder_hparams` override its values"
    )
    encoder_hparams: dict[str, Any] = Field(
        default_factory=dict, description="encoder hyperparameters (without `width` when a budget is set)"
    )
    workers: int = Field(1, ge=1, description="Ray Train workers (data-parallel, DDP)")
    gpus_per_worker: float = Field(
        0.0, ge=0, description="> 0: each worker asks Ray for GPUs and trains on CUDA when Ray assigned one it can see"
    )
    cpus_per_worker: float = Field(1.0, gt=0)
    worker_nice: int = Field(
        0, ge=0, le=19, description="CPU priority (Unix nice) a worker lowers itself to once its run starts, so "
                                    "that other trials' start-ups are not queued behind its steps where slots outnumber cores")
    process_group_backend: Literal["auto", "gloo", "nccl"] = Field(
        "auto", description="torch.distributed backend of the workers; auto: nccl with GPUs, else gloo "
                            "(gloo for logical GPUs on a CPU-only cluster)"
    )
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field(
        "PACK", description="how a run's workers are placed on nodes: PACK keeps them together (NVLink), SPREAD spreads them"
    )
    storage_path: str = Field("results/train", description="where runs and checkpoints are written")
    name: str | None = Field(None, description="run name; default: the encoder name plus a hash of the settings")

    _finite_hparams = field_validator("encoder_hparams", mode="before")(finite_tree)

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, v):
        return one_of(v, PRESET_NAMES, "preset")

    @model_validator(mode="after")
    def _ranks_apart(self):
        ranks_apart(self.workers, self.gpus_per_worker, self.process_group_backend)
        return self

    @model_validator(mode="after")
    def _batch_divides(self):
        if self.batch_size % self.workers:
            raise ValueError(f"batch_size ({self.batch_size}) must be divisible by workers ({self.workers})")
        return self


def train_config_from_dict(data: dict, source: str = "train config") -> TrainConfig:
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, source)) from None


def load_train_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """A YAML file plus ``--set key=value`` overrides -> a validated :class:`TrainConfig`."""
    data = apply_overrides(read_yaml(path), overrides)
    return train_config_from_dict(data, str(path))
