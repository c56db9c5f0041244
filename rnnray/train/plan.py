"""A run's plan: everything one training run needs, resolved once on the driver, as one typed object.

The driver (the ``train`` command, a Tune trial, a test) reads the zoo's manifest, computes the
split, solves the parameter budget and validates the training config once; the resulting
:class:`RunPlan` travels to every Ray Train worker as it is (pickled, not re-validated), so no
worker reads the manifest, re-derives the split or solves the budget again. A sweep resolves the
:class:`ZooPlan` once for all its trials.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from ..config import ConfigError, Strict, TrainConfig
from ..kinds import KIND_NAMES
from ..weights import Layout
from .model import SPLIT_NAMES, resolve_encoder

ZooKindName = Literal[KIND_NAMES]  # type: ignore[valid-type]


class ZooPlan(Strict):
    """The zoo as a run reads it: where its shards are, its kind and layout, and the run ids of each split."""

    root: str
    kind: ZooKindName
    layout: dict[str, Any]
    shards: list[str]  # absolute paths of the Parquet shards the manifest lists
    split_seed: int
    split: str = "ours"  # the split scheme (rnnray.emulation.splits)
    runs: dict[str, list[int]]  # train / val / ood run ids

    @classmethod
    def open(cls, path: str | Path, split_seed: int = 0, manifest: dict | None = None, split: str = "ours") -> "ZooPlan":
        """Read the manifest and check every shard against it, sizes and checksums (or take a manifest a
        caller verified: a sweep does once, for all its trials), then compute the split. The checksums
        are read here, on the driver and before Ray starts, so ``train``, ``label_oracle`` and the
        Python API refuse a corrupt zoo as ``sweep`` does instead of training on it."""
        from ..emulation.splits import zoo_splits
        from ..zoo.storage import verify

        root = Path(path).expanduser().resolve()
        manifest = manifest if manifest is not None else verify(root, checksums=True)
        splits = zoo_splits(root, seed=split_seed, checksums=False, scheme=split)
        runs = {s: [int(r) for r in splits.runs(s)] for s in SPLIT_NAMES}
        for s, ids in runs.items():
            if not ids:
                raise ConfigError(f"{root}: the {s} split has no runs")
        return cls(root=str(root), kind=manifest["kind"], layout=manifest["layout"],
                   shards=[str(root / s["file"]) for s in manifest["shards"]], split_seed=split_seed, split=split, runs=runs)

    @cached_property
    def weights_layout(self) -> Layout:
        return Layout.from_dict(self.layout)


class RunPlan(Strict):
    """One run: the encoder with its complete hyperparameters and parameter count, the zoo, the config."""

    encoder: str
    hparams: dict[str, Any]
    n_params: int
    zoo: ZooPlan
    train: TrainConfig  # ``train.zoo`` is ``zoo.root``; ``train.split_seed`` and ``.split`` are the zoo plan's
    run_dir: str | None = None  # where Ray Train keeps this run's checkpoints (set by ``fit``)

    @property
    def zoo_kind(self) -> str:
        return self.zoo.kind


def plan_run(encoder: str, cfg: TrainConfig, zoo: ZooPlan | None = None) -> RunPlan:
    """Resolve a run on the driver; raises the errors the commands turn into one line. ``zoo``: a
    zoo already opened for this config (a sweep opens it once for all its trials)."""
    if (zoo is None or Path(cfg.zoo).expanduser().resolve() != Path(zoo.root) or zoo.split_seed != cfg.split_seed
            or zoo.split != cfg.split):
        zoo = ZooPlan.open(cfg.zoo, cfg.split_seed, split=cfg.split)
    cfg = cfg.model_copy(update={"zoo": zoo.root})
    hparams, n_params = resolve_encoder(encoder, cfg, zoo.weights_layout, zoo.kind)
    return RunPlan(encoder=encoder, hparams=hparams, n_params=int(n_params), zoo=zoo, train=cfg)
