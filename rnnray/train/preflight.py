"""What emulation training needs, checked on the driver before Ray starts: a batch its train split
can fill, and a training worker's memory within one node's.

A training step takes ``batch_size`` snapshots of the train split; a batch larger than the split
repeats snapshots within the step (the sampler allows it so a test's tiny zoo can train), so a
command refuses it rather than train on copies: the number was almost always mistyped. The memory
estimate counts only what certainly exists in one worker, so a refusal is never a guess (the real
need is larger): the model with its gradients and AdamW's two moments; one step's batch (which
rows, the repeat count that compares every pair of them, the gathered weights and their permuted
copy, inputs and target distributions in float32, the emulator's saved activations); the history
of every evaluation the run reports; and its share of the zoo's rows. The limits are parameters,
so tests pass small ones instead of exhausting the machine; the commands pass this machine's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from ..emulation.emulator import emulator_params, input_steps
from ..emulation.splits import make_splits
from ..errors import UsageError
from ..kinds import zoo_kind
from ..zoo.preflight import machine_memory, size_text
from .model import EMULATOR_LAYERS, SPLIT_NAMES

FLOAT = 4
ADAMW_COPIES = 4  # weights, gradients and AdamW's two moments, float32 each
# one evaluation's metrics as the run keeps them (a dict of ten entries and its floats, in CPython)
HISTORY_ENTRY_BYTES = 500
# splitting an unbuilt zoo means drawing every run's task; past this many runs its train split is far
# larger than any batch that fits a node (the batch's pairwise repeat count alone is batch^2 bytes)
PLANNED_SPLIT_RUNS = 100_000


def model_bytes(kind: str, encoder_params: int, emulator_hidden: int) -> int:
    """Bytes of the encoder and emulator with their gradients and AdamW state."""
    return ADAMW_COPIES * FLOAT * (encoder_params + emulator_params(kind, emulator_hidden, num_layers=EMULATOR_LAYERS))


def step_bytes(kind: str, batch: int, emulator_hidden: int) -> int:
    """Bytes one training step of ``batch`` snapshots holds at least (see the module docstring)."""
    k, steps = zoo_kind(kind), input_steps(kind)
    pairs = 2 * batch * batch  # occurrences(): ids == ids.T, then its lower triangle (bool)
    rows = 2 * FLOAT * k.layout.num_params  # the gathered weights and their permuted (or moved) copy
    data = steps * (k.input_size + 2 * k.output_size) * FLOAT  # inputs, targets, their distributions
    emulator = steps * emulator_hidden * FLOAT * (1 + 5 * EMULATOR_LAYERS)  # projection; gates + output a layer
    return pairs + batch * (rows + data + emulator)


def history_bytes(steps: int, eval_every: int, runs: int = 1) -> int:
    """Bytes of the evaluation history ``runs`` runs of ``steps`` steps keep in memory."""
    return runs * math.ceil(steps / eval_every) * HISTORY_ENTRY_BYTES


def worker_needs(kind: str, settings, encoder_params: int, workers: int = 1, rows: int = 0) -> dict[str, int]:
    """One training worker's bytes by what they are for, keyed by the field that sizes each:
    ``emulator_hidden`` or ``budget`` (the model, by its larger part), ``batch_size`` (one step),
    ``steps`` (the history) and ``zoo`` (``rows``: its share of the zoo, :func:`rows_bytes`)."""
    model_field = "emulator_hidden" if emulator_params(kind, settings.emulator_hidden) > encoder_params else "budget"
    return {model_field: model_bytes(kind, encoder_params, settings.emulator_hidden),
            "batch_size": step_bytes(kind, settings.batch_size // workers, settings.emulator_hidden),
            "steps": history_bytes(settings.steps, settings.eval_every), "zoo": rows}


def rows_bytes(row: int, eval_row: int, train_rows: int, eval_rows: int, workers: int) -> int:
    """Bytes of zoo rows one worker holds: its share of the train split and every validation and OOD
    row (``eval_row`` bytes each: only the evaluated sequences), twice (the Arrow table and the numpy
    copy side by side)."""
    return 2 * (train_rows * row // workers + eval_rows * eval_row)


# what each need is, and what lowers it
WHAT = {"emulator_hidden": ("the emulator and encoder with gradients and AdamW state", "lower {field}"),
        "budget": ("the encoder and emulator with gradients and AdamW state", "lower {field}"),
        "batch_size": ("one training step's batch: its weights, sequences and the emulator's activations", "lower {field}"),
        "steps": ("the metrics of every evaluation (steps / eval_every)", "lower {field} or raise eval_every"),
        "zoo": ("its share of the zoo's rows (runs x snapshots x row size)",
                "use fewer runs or stored_sequences, or more workers")}


def check_worker(needs: Mapping[str, int], memory: int | None = None, prefix: str = "",
                 fields: Mapping[str, str] | None = None) -> None:
    """UsageError naming the field of the largest need when a training worker's ``needs`` (from
    :func:`worker_needs`) exceed ``memory`` bytes (default: this machine's, or the largest node's
    once Ray runs). ``fields`` renames a need's field (``zoo`` is ``zoo:`` in a sweep file)."""
    have = machine_memory() if memory is None else memory
    total = sum(needs.values())
    if not have or total <= have:
        return
    key = max(needs, key=needs.get)
    field = (fields or {}).get(key, f"{prefix}{key}")
    what, advice = WHAT[key]
    raise UsageError(f"{field}: a training worker would hold about {size_text(total)} ({size_text(needs[key])} of it "
                     f"for {what}), more than the {size_text(have)} of memory of one node; {advice.format(field=field)}")


def split_rows(shards: list[str], runs: Mapping[str, list[int]]) -> dict[str, int]:
    """Rows (snapshots) of each split of a built zoo: ``runs`` is a split's run ids (a ``ZooPlan``'s)."""
    from ..zoo.storage import read_shard_table

    ids = read_shard_table(shards, ["run_id"]).column("run_id").to_numpy()
    return {s: int(np.isin(ids, runs[s]).sum()) for s in SPLIT_NAMES}


def planned_train_rows(cfg, split_seed: int, scheme: str) -> int | None:
    """Rows of the train split a zoo config will have once built (its tasks drawn as the build draws
    them), or None when it has more runs than :data:`PLANNED_SPLIT_RUNS`."""
    from ..zoo.trainer import planned_tasks

    if cfg.runs > PLANNED_SPLIT_RUNS:
        return None
    split = make_splits(planned_tasks(cfg), cfg.kind, split_seed, scheme)
    return len(split.runs("train")) * len(cfg.snapshots)


def check_batch(batch_size: int, train_rows: int | None, field: str = "batch_size") -> None:
    """UsageError naming ``field`` when one step's batch is larger than the train split it samples from."""
    if train_rows is not None and batch_size > train_rows:
        raise UsageError(f"{field}: a batch of {batch_size} snapshots is larger than the train split it samples "
                         f"from ({train_rows} snapshots), so every step would repeat snapshots; lower {field}")


def zoo_rows(zoo, eval_sequences: int, workers: int = 1) -> tuple[dict[str, int], int]:
    """A built zoo as a run holds it: the rows of each split (``zoo`` is a ``ZooPlan``), and the bytes
    of the rows one of ``workers`` workers holds (:func:`rows_bytes`)."""
    from ..zoo.storage import read_manifest, row_bytes

    rows = split_rows(zoo.shards, zoo.runs)
    manifest = read_manifest(zoo.root)
    spec = manifest.get("config") or manifest.get("spec") or {}  # an imported zoo has a spec, not a config
    stored, seq_len = int(spec.get("stored_sequences", 100)), int(spec.get("seq_len", 42))
    params = int(zoo.layout["num_params"])
    row, eval_row = (row_bytes(zoo.kind, params, n, seq_len) for n in (stored, min(stored, eval_sequences)))
    return rows, rows_bytes(row, eval_row, rows["train"], rows["val"] + rows["ood"], workers)


def check_run(plan, memory: int | None = None, shape: dict | None = None) -> None:
    """Everything one run of ``plan`` (a :class:`~.plan.RunPlan`) needs, before Ray starts: workers the
    cluster can place (``shape``: default the running instance's, else the local one the command
    would start), a worker's memory within one node's (``memory``), a batch the train split can fill."""
    from ..runtime.resources import check_workers, current_shape

    cfg = plan.train
    check_workers(cfg.workers, cfg.cpus_per_worker, cfg.gpus_per_worker, cfg.placement_strategy,
                  current_shape() if shape is None else shape)
    rows, held = zoo_rows(plan.zoo, cfg.eval_sequences, cfg.workers)
    needs = worker_needs(plan.zoo_kind, cfg, plan.n_params, cfg.workers, held)
    check_worker(needs, memory, fields={"budget": "budget" if cfg.budget else "encoder_hparams"})
    check_batch(cfg.batch_size, rows["train"])
