"""What a zoo build needs, checked before Ray starts: the disk its shards take, the memory its run ids
take on the driver, and the memory one zoo actor holds for a chunk. A config that cannot fit is
refused in one line naming the field, the estimate and the limit; one that fits but takes long is not.

The estimates count only what certainly exists (rows as stored, before compression; the tensors a
chunk's training and evaluation cannot do without), so a refusal is never a guess: the real need is
larger. The limits are parameters, so tests pass small ones instead of exhausting the machine;
:func:`check_build` measures this machine's when none is given.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..errors import UsageError
from ..kinds import MNIST_STEPS, zoo_kind
from . import storage

# what the driver holds per run still to train, at least: a list slot and an int in the list of runs
# to train, and a one-key dict (184 bytes in CPython) in the items Ray Data is given
RUN_ID_BYTES = 8 + 28 + 8 + 184
# the fields a size comes from, with their defaults: the one whose default would shrink an estimate
# most is the one a refusal names
_ACTOR_FIELDS = {"resources.chunk": 64, "stored_sequences": 100, "accuracy_samples": 1000, "batch_size": 32, "seq_len": 42}
_DISK_FIELDS = {"runs": 1000, "stored_sequences": 100, "seq_len": 42}
GIB = 2**30


def _get(cfg, field: str):
    obj = cfg
    for part in field.split("."):
        obj = getattr(obj, part, None)
    return obj


def _with(cfg, field: str, value):
    """``cfg`` with one (possibly nested) field replaced, not validated again."""
    head, _, rest = field.partition(".")
    if not rest:
        return cfg.model_copy(update={head: value})
    return cfg.model_copy(update={head: _with(getattr(cfg, head), rest, value)})


def _seq_len(cfg) -> int:
    return getattr(cfg, "seq_len", 42)


def row_bytes(cfg) -> int:
    """Bytes of one zoo row as stored, before compression: float32 weights, stored sequences and outputs."""
    return storage.row_bytes(cfg.kind, zoo_kind(cfg.kind).layout.num_params, cfg.stored_sequences, _seq_len(cfg))


def output_bytes(cfg, runs: int | None = None) -> int:
    """Bytes the shards of ``runs`` runs (default: all) take before compression: runs x snapshots x row."""
    return (cfg.runs if runs is None else runs) * len(cfg.snapshots) * row_bytes(cfg)


def actor_bytes(cfg) -> int:
    """Bytes one zoo actor holds at least while it trains a chunk: the chunk's rows three times (the
    snapshots, their stacked columns, the Arrow table), the sequences it samples at each evaluation,
    and a training step's batch (a data block of 500 steps of batch indices, and the inputs)."""
    kind = zoo_kind(cfg.kind)
    k = min(cfg.resources.chunk, cfg.runs)
    rows = 3 * k * len(cfg.snapshots) * row_bytes(cfg)
    if kind.token_inputs:  # zoo A: uniform draws (float32) and token ids (int64, listed and stacked) per sample
        steps = _seq_len(cfg)
        sampled = k * (cfg.stored_sequences + cfg.accuracy_samples) * steps * (4 + 8 + 8)
    else:  # zoo B: the stored digits' tiles and logits, float32
        steps = MNIST_STEPS
        sampled = k * cfg.stored_sequences * steps * (kind.input_size + kind.output_size) * 4
    batch = k * cfg.batch_size * (500 * 8 + steps * kind.input_size * 4)
    return rows + sampled + batch


def _culprit(cfg, estimate, fields: dict[str, int], default: str) -> str:
    """The field whose default value would shrink ``estimate(cfg)`` most (``default`` when none would)."""
    base, best, gain = estimate(cfg), default, 0
    for field, value in fields.items():
        if _get(cfg, field) is None or _get(cfg, field) <= value:
            continue
        smaller = base - estimate(_with(cfg, field, value))
        if smaller > gain:
            best, gain = field, smaller
    return best


def size_text(n: int) -> str:
    """Bytes as GiB or MiB, to three figures (two sizes that differ do not print the same)."""
    value, unit = (n / GIB, "GiB") if n >= GIB / 10 else (n / 2**20, "MiB")
    return f"{value:,.0f} {unit}" if value >= 100 else f"{value:.3g} {unit}"


def free_disk(path: str | Path) -> tuple[int, Path]:
    """Free bytes where ``path`` would be written: at its nearest existing folder (and that folder)."""
    probe = Path(path).expanduser().absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free, probe


def machine_memory() -> int:
    """This machine's physical memory in bytes, or the largest node's memory once Ray is running."""
    try:
        import ray

        if ray.is_initialized():
            nodes = [n for n in ray.nodes() if n.get("Alive")]
            return int(max((n.get("Resources", {}).get("memory", 0) for n in nodes), default=0))
    except ImportError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _runs_left(cfg) -> int | None:
    """Runs a build of ``cfg`` still has to train (finished shards at its path count as done), or None
    when a finished zoo is there already (the build then only verifies it)."""
    root = Path(cfg.path).expanduser()
    if (root / storage.MANIFEST).exists():
        return None
    done = set()
    if (root / storage.SHARDS).is_dir():
        for f in (root / storage.SHARDS).glob("*.parquet"):
            done.update(r for r in storage.shard_runs(f) or () if isinstance(r, int) and 0 <= r < cfg.runs)
    return cfg.runs - len(done)


def check_actor(cfg, memory: int | None = None, prefix: str = "") -> None:
    """UsageError naming the field when one zoo actor's chunk could not fit ``memory`` bytes (default:
    this machine's, or the largest node's once Ray runs). ``prefix``: where the zoo config sits in
    the file (``"zoo."`` in a sweep file)."""
    have = machine_memory() if memory is None else memory
    need = actor_bytes(cfg)
    if have and need > have:
        field = _culprit(cfg, actor_bytes, _ACTOR_FIELDS, "resources.chunk")
        raise UsageError(f"{prefix}{field}: one zoo actor would hold about {size_text(need)} (a chunk of "
                         f"{min(cfg.resources.chunk, cfg.runs)} RNNs: its rows, sampled sequences and training batches), "
                         f"more than the {size_text(have)} of memory on one node; lower {field}")


def check_output(cfg, free: int | None = None, memory: int | None = None, prefix: str = "") -> None:
    """UsageError naming the field when the shards still to write could not fit the disk (``free``
    bytes; default: what is free at the zoo path's nearest existing folder), or the runs still to
    train could not be listed in the driver's ``memory`` (default: this machine's)."""
    left = _runs_left(cfg)
    if not left:
        return
    have, probe = free_disk(cfg.path) if free is None else (free, Path(cfg.path))
    need = output_bytes(cfg, left)
    if need > have:
        field = _culprit(cfg, output_bytes, _DISK_FIELDS, "runs")
        raise UsageError(f"{prefix}{field}: the zoo would take about {size_text(need)} on disk ({left} runs x "
                         f"{len(cfg.snapshots)} snapshots x {row_bytes(cfg)} bytes a row, before compression), "
                         f"more than the {size_text(have)} free at {probe}; lower {field}")
    mem = (os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")) if memory is None else memory
    need = left * RUN_ID_BYTES
    if mem and need > mem:
        raise UsageError(f"{prefix}runs: listing {left} runs to train would take about {size_text(need)} of the driver's "
                         f"memory ({RUN_ID_BYTES} bytes a run), more than its {size_text(mem)}; lower runs")


def check_build(cfg, free: int | None = None, memory: int | None = None, prefix: str = "") -> None:
    """Everything a build of ``cfg`` needs against this machine (or the limits given): one actor's
    chunk in memory, the shards on disk, the run ids in the driver's memory."""
    check_actor(cfg, memory, prefix)
    check_output(cfg, free, memory, prefix)
