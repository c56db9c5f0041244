"""The zoo file: how a zoo of RNNs is trained (SPEC.md sections 2 and 3) and how its Ray Data actors are shaped."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import Field, TypeAdapter, ValidationError, field_validator, model_validator

from .base import ConfigError, Strict, apply_overrides, format_validation_error, read_yaml

PAPER_SNAPSHOT_STEPS = (0, 100, 200, 500, 1000, 2000, 5000, 10000, 20000)
PAPER_LR_POINTS = ((0, 0.01), (10000, 0.003), (20000, 0.0003))
INT32_MAX = 2**31 - 1  # run ids and steps are int32 columns in a zoo's shards


class ZooResources(Strict):
    """How the Ray Data actor pool is shaped. GPUs per actor may be fractional (several actors share one)."""

    actors: int = Field(2, ge=1, description="size of the actor pool")
    chunk: int = Field(64, ge=1, description="RNNs trained together, in lockstep, by one actor call (K)")
    cpus_per_actor: float = Field(1.0, gt=0)
    gpus_per_actor: float = Field(0.0, ge=0)
    threads_per_actor: int = Field(
        1, ge=1, le=4096, description="torch intra-op threads per actor; 1 keeps every row bitwise independent of the chunking"
    )


class _ZooBase(Strict):
    runs: int = Field(1000, ge=1, le=INT32_MAX, description="number of RNNs (run ids are int32)")
    steps: int = Field(20000, ge=0, le=INT32_MAX, description="last training step; the snapshot schedule is cut there (steps are int32)")
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
        if v and v[-1] > INT32_MAX:
            raise ValueError(f"must be steps up to {INT32_MAX} (steps are int32)")
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
    task_assignment: Literal["uniform", "balanced"] = Field(
        "uniform", description="uniform: each run draws its offsets uniformly (the paper's; 324 runs cover about 166 "
                               "of the 216 tasks); balanced: runs go through the 216 tasks in shuffled rounds, so "
                               "every task appears equally often (each round's order seeded by seed)")


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
ZOO_MODELS = {"formal_languages": FormalLanguagesZoo, "mnist": MnistZoo}  # zoo kind -> its recipe's model
_zoo_adapter = TypeAdapter(ZooConfig)


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
