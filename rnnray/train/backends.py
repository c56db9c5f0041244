"""Where the loop runs: in this process (:class:`LocalBackend`) or as a Ray Train worker (:class:`RayTrainBackend`)."""

from __future__ import annotations

import copy
import os
import socket
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..emulation.batches import Snapshots, columns
from .model import SPLIT_NAMES
from .checkpoint import checkpoint_dir_name, read_checkpoint, save_checkpoint


def split_tables(plan) -> dict[str, Any]:
    """The train/val/OOD splits of the zoo as Arrow tables (no Ray), rows in the shards' order."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from ..zoo.storage import read_shard_table

    table = read_shard_table(plan.zoo.shards, columns(plan.zoo_kind))
    return {s: table.filter(pc.is_in(table["run_id"], value_set=pa.array(plan.zoo.runs[s], pa.int32())))
            for s in SPLIT_NAMES}


def worker_share(table, rank: int, world: int):
    """Worker ``rank``'s rows of the train split among ``world`` workers: every ``world``-th row from
    ``rank`` on, so the shares are disjoint, cover the split and differ in size by at most one row."""
    if world == 1:
        return table
    return table.take(list(range(rank, table.num_rows, world)))


class LocalBackend:
    """In-process, single worker: data from Arrow tables, best model kept in memory."""

    rank, world_size = 0, 1

    def __init__(self, tables: Mapping[str, Any], kind: str, device=None, progress: bool = False,
                 resume_from: str | Path | None = None):
        self.tables, self.kind, self.resume_from = tables, kind, resume_from
        self.device = torch.device(device or "cpu")
        self.progress = progress
        self.best_payload: dict | None = None
        self.latest_payload: dict | None = None

    def load(self, split: str, max_sequences: int | None) -> Snapshots:
        return Snapshots.from_table(self.kind, self.tables[split], max_sequences)

    def prepare(self, model):
        return model.to(self.device)

    def all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def placement(self) -> list[dict]:
        return [{"rank": 0, "node_id": None, "host": socket.gethostname(), "pid": os.getpid(),
                 "nice": os.getpriority(os.PRIO_PROCESS, 0)}]

    def restore(self):
        return None if self.resume_from is None else read_checkpoint(self.resume_from)

    def report(self, metrics: dict, payload: dict | None, is_best: bool) -> None:
        if payload is not None:
            self.latest_payload = payload
            if is_best:  # the history is shared and only grows; copy the rest
                self.best_payload = {k: copy.deepcopy(v) for k, v in payload.items() if k != "history"}
        if self.progress:
            print(_progress_line(metrics), flush=True)


class RayTrainBackend:
    """A Ray Train worker: the zoo's rows (read from Parquet, or Ray Dataset shards), DDP, all_reduce,
    ray.train.report / get_checkpoint."""

    def __init__(self, kind: str, plan=None):
        import ray.train

        from ..runtime.machine import ray_assigned_device

        ctx = ray.train.get_context()
        self.rank, self.world_size, self.kind = ctx.get_world_rank(), ctx.get_world_size(), kind
        self.plan, self._tables = plan, None  # plan: read the zoo's shards here (else: Ray Dataset shards)
        self.gpu_ids, self.device = ray_assigned_device()  # what Ray gave this worker, not what the YAML asked
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)

    def load(self, split: str, max_sequences: int | None) -> Snapshots:
        import ray.train

        if self.plan is not None:
            if self._tables is None:
                self._tables = split_tables(self.plan)  # one read for the three splits
            table = self._tables.pop(split)  # each split is loaded once; its Arrow copy need not outlive it
            if split == "train":
                table = worker_share(table, self.rank, self.world_size)
            return Snapshots.from_table(self.kind, table, max_sequences)
        shard = ray.train.get_dataset_shard(split)
        return Snapshots.from_batches(self.kind, shard.iter_batches(batch_size=256, batch_format="numpy"), max_sequences)

    def prepare(self, model):
        """On this worker's device; wrapped in DDP when there are several workers (Ray Train has set
        up the process group). Not ``ray.train.torch.prepare_model``: that moves the model to CUDA
        whenever Ray assigned a GPU, also a logical one on a machine without CUDA."""
        model = model.to(self.device)
        if self.world_size == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        if self.world_size > 1 and dist.is_initialized():
            dev = t.device
            t = t.to(self.device)
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
            t = t.to(dev)
        return t

    def placement(self) -> list[dict]:
        """Where every worker of the group runs (rank order): which node, host and process."""
        import ray
        import torch.distributed as dist

        mine = {"rank": self.rank, "node_id": ray.get_runtime_context().get_node_id(),
                "host": socket.gethostname(), "pid": os.getpid(), "device": str(self.device), "gpu_ids": self.gpu_ids,
                "nice": os.getpriority(os.PRIO_PROCESS, 0)}
        if self.world_size == 1 or not dist.is_initialized():
            return [mine]
        everyone: list = [None] * self.world_size
        dist.all_gather_object(everyone, mine)
        return everyone

    def restore(self):
        import ray.train

        ckpt = ray.train.get_checkpoint()
        if ckpt is None:
            return None
        with ckpt.as_directory() as d:
            return read_checkpoint(d)

    def report(self, metrics: dict, payload: dict | None, is_best: bool) -> None:
        import ray.train

        if payload is None:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory(prefix="rnnray-ckpt-") as d:
            save_checkpoint(d, payload)
            ray.train.report(
                metrics,
                checkpoint=ray.train.Checkpoint.from_directory(d),
                checkpoint_dir_name=checkpoint_dir_name(metrics["step"]),
            )
        # written, not print()ed: Ray Train patches print() on its workers into a logger that
        # echoes to the console, so a print would show every line twice
        sys.stdout.write(_progress_line(metrics) + "\n")
        sys.stdout.flush()


def _progress_line(m: Mapping[str, Any]) -> str:
    return (f"step {m['step']:>7d}  train {m['train_loss']:.4f}  val {m['val_loss']:.4f}  ood {m['ood_loss']:.4f}"
            f"  best val {m['best_val_loss']:.4f} @ {m['best_step']}  {m['steps_per_s']:.1f} steps/s")
