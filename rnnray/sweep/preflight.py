"""What a sweep needs, checked before Ray starts (on a cluster given by ``--address``: right after
connecting, before anything is scheduled), each refused in one line naming the field, the estimate
and the limit:

* its trials' workers, on the cluster's nodes (:func:`rnnray.runtime.resources.check_workers`), and
  a batch that divides evenly among them (each worker takes ``batch_size / workers`` rows a step);
* one zoo actor's chunk, and a training worker's memory (its zoo rows, the model with its optimiser,
  one step's batch, the history: :mod:`rnnray.train.preflight`) within one node's;
* a zoo to build on the free disk (:mod:`rnnray.zoo.preflight`), and every run's checkpoint
  (weights and AdamW's two moments; Ray Train keeps at least one a run) on the disk of ``results:``;
* a batch the train split can fill: the zoo's, or for a zoo not built yet, the split its
  config's tasks will make.

The estimates count only what certainly exists; the limits are parameters (tests pass small ones).
"""

from __future__ import annotations

from pathlib import Path

from ..emulation.emulator import emulator_params
from ..errors import UsageError
from ..runtime.resources import check_workers, current_shape
from ..train.model import EMULATOR_LAYERS
from ..train.plan import ZooPlan
from ..train.preflight import FLOAT, check_batch, check_worker, planned_train_rows, rows_bytes, split_rows, worker_needs
from ..zoo import preflight as zoo_preflight
from ..zoo.preflight import check_actor, check_output, machine_memory, size_text
from ..zoo.storage import MANIFEST, read_manifest, row_bytes, verify

CHECKPOINT_COPIES = 3  # a checkpoint holds the weights and AdamW's two moments


def memory_estimate(cfg) -> dict[str, int]:
    """Bytes one zoo actor and one training worker hold of the zoo at their peak (a zoo of ``rows``
    rows, each ``row_bytes``; the Arrow table and the numpy copies side by side count twice)."""
    from ..zoo.builder import layout_for
    from ..zoo.preflight import actor_bytes

    if isinstance(cfg.zoo, str):
        m = read_manifest(cfg.zoo)
        # an imported zoo has no build config: its spec holds stored_sequences (and seq_len)
        kind, rows, zcfg = m["kind"], int(m["rows"]), m.get("config") or m.get("spec") or {}
        params, stored, seq_len = int(m["layout"]["num_params"]), int(zcfg.get("stored_sequences", 100)), int(zcfg.get("seq_len", 42))
        actor = 0
    else:
        z = cfg.zoo
        kind, rows, stored, seq_len = z.kind, z.runs * len(z.snapshots), z.stored_sequences, getattr(z, "seq_len", 42)
        params = layout_for(kind).num_params
        actor = actor_bytes(z)
    eval_seqs = min(stored, cfg.train.eval_sequences)
    worker = rows_bytes(row_bytes(kind, params, stored, seq_len), row_bytes(kind, params, eval_seqs, seq_len),
                        rows, rows, cfg.resources.workers)
    return {"actor": actor, "worker": worker}


def zoo_kind_of(cfg) -> str:
    return read_manifest(cfg.zoo)["kind"] if isinstance(cfg.zoo, str) else cfg.zoo.kind


def least_params(cfg) -> int:
    """The fewest encoder parameters any trial of the sweep has (the budget, less its tolerance)."""
    return int(cfg.budget * (1 - cfg.tolerance))


def runs_per_encoder(cfg) -> tuple[int, int]:
    """(search trials, final runs) of one encoder."""
    configurations = 1 + int(cfg.final.paper_preset and cfg.tune.paper_trial)
    return cfg.tune.samples_per_encoder, cfg.final.seeds * configurations


def check_resources(cfg, shape: dict | None = None) -> None:
    """Workers the cluster can place, and a batch that divides evenly among them."""
    r, batch = cfg.resources, cfg.train.batch_size
    check_workers(r.workers, r.cpus_per_worker, r.gpus_per_worker, r.placement_strategy,
                  current_shape() if shape is None else shape, "resources.")
    if batch % r.workers:
        raise UsageError(f"train.batch_size: {batch} snapshots a step do not divide evenly among resources.workers "
                         f"({r.workers}); make train.batch_size a multiple of {r.workers}")


def check_checkpoints(cfg, kind: str, free: int | None = None) -> None:
    """UsageError naming the field when every run's checkpoint could not fit the free disk where the
    results land (``free`` bytes; default: what is free at the results path's nearest existing folder)."""
    each = CHECKPOINT_COPIES * FLOAT * (least_params(cfg) + emulator_params(kind, cfg.train.emulator_hidden,
                                                                            num_layers=EMULATOR_LAYERS))
    search, final = runs_per_encoder(cfg)
    runs = len(cfg.encoders) * (search + final)
    have, probe = zoo_preflight.free_disk(cfg.results) if free is None else (free, Path(cfg.results))
    if runs * each > have:
        field = "tune.samples_per_encoder" if search >= final else "final.seeds"
        raise UsageError(f"{field}: the sweep's {runs:,} runs would keep about {size_text(runs * each)} of checkpoints "
                         f"({size_text(each)} each: weights and AdamW state), more than the {size_text(have)} free at "
                         f"{probe}; lower {field}")


def train_rows(cfg) -> int | None:
    """Rows of the train split the sweep's runs sample from (None: too many runs to plan the split).
    A zoo that exists is verified in full first (every shard's size and sha256, as the sweep does
    before it uses one), so a damaged shard is named for what it is, before Ray starts."""
    path = Path(cfg.zoo_path).expanduser()
    if isinstance(cfg.zoo, str) or (path / MANIFEST).exists():
        zoo = ZooPlan.open(path, cfg.train.split_seed, manifest=verify(path, checksums=True), split=cfg.train.split)
        return split_rows(zoo.shards, zoo.runs)["train"]
    return planned_train_rows(cfg.zoo, cfg.train.split_seed, cfg.train.split)


def check_sweep(cfg, memory: int | None = None, free: int | None = None, shape: dict | None = None,
                resume: bool = False) -> None:
    """Every size of the module docstring, cheapest first, against this machine (or the limits
    given; once Ray runs, the cluster's shape and its largest node's memory). ``resume``: the
    sweep's folder already holds the checkpoints of what was done, so they are not counted again."""
    check_resources(cfg, shape)
    have = machine_memory() if memory is None else memory
    kind, inline = zoo_kind_of(cfg), not isinstance(cfg.zoo, str)
    if inline:
        check_actor(cfg.zoo, have, "zoo.")
    needs = worker_needs(kind, cfg.train, least_params(cfg), cfg.resources.workers, memory_estimate(cfg)["worker"])
    check_worker(needs, have, prefix="train.", fields={"budget": "budget", "zoo": "zoo"})
    if inline:
        check_output(cfg.zoo, free, memory, prefix="zoo.")  # its shards on the disk, its run ids in the driver
    if not resume:
        check_checkpoints(cfg, kind, free)
    check_batch(cfg.train.batch_size, train_rows(cfg), "train.batch_size")


def zoo_layout(cfg):
    """The weight layout of the sweep's zoo: its manifest's, or its kind's for a zoo to build."""
    from ..kinds import zoo_kind as kind_entry
    from ..weights import Layout

    if isinstance(cfg.zoo, str):
        return Layout.from_dict(read_manifest(cfg.zoo)["layout"])
    return kind_entry(cfg.zoo.kind).layout
