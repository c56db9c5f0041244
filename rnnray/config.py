"""Pydantic models for every YAML the platform reads: the one place defaults live.

Every model forbids unknown keys, so a typo is an error rather than a silently ignored setting.
:func:`load_yaml` + :func:`apply_overrides` turn a file and ``--set key=value`` pairs into a
validated model; :class:`ConfigError` carries the one-line message the commands print.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from .errors import UserError

# The encoder presets by name (their hyperparameters live with the encoders: rnnray.encoders.registry)
PRESET_NAMES = ("paper",)
DEFAULT_PRESET = "paper"
PAPER_SNAPSHOT_STEPS = (0, 100, 200, 500, 1000, 2000, 5000, 10000, 20000)
PAPER_LR_POINTS = ((0, 0.01), (10000, 0.003), (20000, 0.0003))


class ConfigError(UserError, ValueError):
    """A bad config: the message is one line naming the file and the field."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ZooResources(Strict):
    """How the Ray Data actor pool is shaped. GPUs per actor may be fractional (several actors share one)."""

    actors: int = Field(2, ge=1, description="size of the actor pool")
    chunk: int = Field(64, ge=1, description="RNNs trained together, in lockstep, by one actor call (K)")
    cpus_per_actor: float = Field(1.0, gt=0)
    gpus_per_actor: float = Field(0.0, ge=0)
    threads_per_actor: int = Field(
        1, ge=1, description="torch intra-op threads per actor; 1 keeps every row bitwise independent of the chunking"
    )


class _ZooBase(Strict):
    runs: int = Field(1000, ge=1, description="number of RNNs")
    steps: int = Field(20000, ge=0, description="last training step; the snapshot schedule is cut there")
    seed: int = Field(0, ge=0)
    path: str = Field("zoos/zoo", description="output directory")
    batch_size: int = Field(32, ge=1)
    snapshot_steps: tuple[int, ...] = PAPER_SNAPSHOT_STEPS
    lr_points: tuple[tuple[int, float], ...] = PAPER_LR_POINTS
    stored_sequences: int = Field(100, ge=1, description="sequences stored per snapshot")
    resources: ZooResources = ZooResources()

    @field_validator("snapshot_steps")
    @classmethod
    def _sorted_steps(cls, v):
        if list(v) != sorted(set(v)) or (v and v[0] < 0):
            raise ValueError("must be distinct non-negative steps in increasing order")
        return v

    @field_validator("lr_points")
    @classmethod
    def _lr_points(cls, v):
        if not v or [s for s, _ in v] != sorted({s for s, _ in v}) or any(lr <= 0 for _, lr in v):
            raise ValueError("must be (step, lr) pairs with increasing steps and positive rates")
        return v

    @property
    def snapshots(self) -> tuple[int, ...]:
        """The snapshot steps cut at ``steps`` (``steps`` itself is always kept as the last snapshot)."""
        cut = [s for s in self.snapshot_steps if s <= self.steps]
        if not cut or cut[-1] != self.steps:
            cut.append(self.steps)
        return tuple(cut)

    def lr(self, step: int) -> float:
        """Piecewise-linear learning rate at an update step (absolute steps, as in the paper)."""
        pts = self.lr_points
        if step <= pts[0][0]:
            return pts[0][1]
        for (s0, l0), (s1, l1) in zip(pts, pts[1:]):
            if step <= s1:
                return l0 + (l1 - l0) * (step - s0) / (s1 - s0)
        return pts[-1][1]


class FormalLanguagesZoo(_ZooBase):
    """Zoo A (SPEC.md section 2): generative LSTMs of a^(n+t0) b^(n+t1) c^(n+t2) d^(n+t3)."""

    kind: Literal["formal_languages"]
    weight_decay: float = Field(1e-4, ge=0)
    seq_len: int = Field(42, ge=4)
    n_max: int = Field(10, ge=1, description="n is drawn uniformly from [n_min, n_max)")
    accuracy_samples: int = Field(1000, ge=1, description="fresh samples drawn to measure accuracy")


class MnistZoo(_ZooBase):
    """Zoo B (SPEC.md section 3): sequential-MNIST classifiers on rotated, 4x4-tiled digits."""

    kind: Literal["mnist"]
    weight_decays: tuple[float, ...] = (0.0, 0.001, 0.01, 0.1)
    angle_range: tuple[float, float] = (0.0, 360.0)
    source: Literal["auto", "torchvision", "bundled"] = Field(
        "auto", description="auto: torchvision's 60,000 training digits if available, else the bundled test set"
    )
    download: bool = Field(True, description="let torchvision download MNIST when source is auto/torchvision")
    data_root: str = Field("~/.cache/rnnray/mnist")
    eval_digits: int = Field(2000, ge=1, description="held-out (and training) digits used for accuracy and losses")

    @model_validator(mode="after")
    def _angles(self):
        lo, hi = self.angle_range
        if not (0 <= lo < hi <= 360):
            raise ValueError("angle_range must satisfy 0 <= low < high <= 360")
        return self


ZooConfig = Annotated[Union[FormalLanguagesZoo, MnistZoo], Field(discriminator="kind")]
_zoo_adapter = TypeAdapter(ZooConfig)


# ------------------------------------------------------------------------------------------------
# loading and errors


def _fmt_loc(loc) -> str:
    parts = [str(p) for p in loc if p not in ("formal_languages", "mnist")]
    return ".".join(parts) or "(top level)"


def format_validation_error(err: ValidationError, source: str) -> str:
    """One line: the file, the first offending field, and what is wrong with it."""
    first = err.errors()[0]
    loc = _fmt_loc(first["loc"])
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key (typo?)"
    extra = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{source}: {loc}: {msg}{extra}"


def read_yaml(path: str | Path) -> dict:
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{p}: is a folder, not a YAML config file")
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not a text file (not UTF-8), so not a YAML config") from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot be read ({e.strerror})") from None
    if "\x00" in text:
        raise ConfigError(f"{p}: not a text file (it holds NUL bytes), so not a YAML config")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{p}:{where} malformed YAML: {getattr(e, 'problem', e)}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of settings at the top level")
    return data


def apply_overrides(data: dict, overrides: list[str] | None, source: str = "--set") -> dict:
    """Apply ``key.sub=value`` overrides; values are parsed as YAML scalars/lists."""
    data = dict(data)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"{source} {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise ConfigError(f"{source} {item!r}: value is not valid YAML") from None
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.get(part)
            child = dict(child) if isinstance(child, dict) else {}
            node[part] = child
            node = child
        node[parts[-1]] = value
    return data


def parse_zoo(data: dict, source: str = "zoo config"):
    try:
        return _zoo_adapter.validate_python(data)
    except ValidationError as e:
        if any(err["type"] in ("union_tag_not_found", "union_tag_invalid") for err in e.errors()):
            raise ConfigError(f"{source}: kind: must be 'formal_languages' or 'mnist'") from None
        raise ConfigError(format_validation_error(e, source)) from None


def load_zoo_config(path: str | Path, overrides: list[str] | None = None):
    data = apply_overrides(read_yaml(path), overrides)
    return parse_zoo(data, str(path))


def zoo_config_from_dict(d: dict[str, Any]):
    return _zoo_adapter.validate_python(d)


def is_finite(x: float) -> bool:
    return math.isfinite(x)


# ------------------------------------------------------------------------------------------------
# emulation training (SPEC.md section 6)


class TrainConfig(Strict):
    """Emulation training of one encoder: encoder and emulator together, on the train split of a zoo.

    The encoder's *name* is not part of the config (it is given on the command line or by the
    sweep), so one file trains every encoder the same way. Defaults are the paper's (SPEC.md
    section 6); ``batch_size`` is the *global* batch, divided evenly among the workers, so the
    optimisation does not depend on how many workers run it.
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
    emulator_hidden: int = Field(256, ge=1, description="emulator LSTM units")
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    grad_clip: float = Field(0.1, gt=0, description="max global gradient norm")
    batch_size: int = Field(64, ge=1, description="snapshots per step over all workers, one stored sequence each")
    steps: int = Field(100_000, ge=1, description="optimisation steps")
    eval_every: int = Field(1000, ge=1, description="steps between validation/OOD evaluations (and checkpoints)")
    eval_sequences: int = Field(
        10, ge=1, description="stored sequences evaluated per snapshot (the first k): fixed, deterministic eval sets"
    )
    eval_batch_size: int = Field(256, ge=1, description="(snapshot, sequence) pairs per forward pass during evaluation")
    augment: bool = Field(True, description="permutation augmentation for encoders not invariant by construction")
    seed: int = Field(0, ge=0, description="initialisation, batch order, sequence choice and augmentation")
    split_seed: int = Field(0, ge=0, description="seed of the task split (keep it fixed across encoders)")
    workers: int = Field(1, ge=1, description="Ray Train workers (data-parallel, DDP)")
    gpus_per_worker: float = Field(
        0.0, ge=0, description="> 0: each worker asks Ray for GPUs and trains on CUDA when Ray assigned one it can see"
    )
    cpus_per_worker: float = Field(1.0, gt=0)
    process_group_backend: Literal["auto", "gloo", "nccl"] = Field(
        "auto", description="torch.distributed backend of the workers; auto: nccl with GPUs, else gloo "
                            "(gloo for logical GPUs on a CPU-only cluster)"
    )
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field(
        "PACK", description="how a run's workers are placed on nodes: PACK keeps them together (NVLink), SPREAD spreads them"
    )
    max_failures: int = Field(2, ge=-1, description="worker-group restarts from the latest checkpoint (-1: unlimited)")
    storage_path: str = Field("results/train", description="where runs and checkpoints are written")
    name: str | None = Field(None, description="run name; default: the encoder name plus a hash of the settings")

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, v):
        if v not in PRESET_NAMES:
            raise ValueError(f"unknown preset {v!r}; choose from {', '.join(PRESET_NAMES)}")
        return v

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
