"""Build a zoo with Ray Data: run ids flow through ``map_batches`` into a pool of trainer actors.

Each actor call receives a chunk of run ids, trains them together with the batched trainer and
writes them as one Parquet shard (temporary name, then rename); it returns only the shard's manifest
entry, so the heavy rows never travel through the object store. The driver writes the manifest once
every run is in a shard. Building into a directory that already holds shards skips the runs they
contain, so an interrupted build resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np

from ..config import zoo_config_from_dict
from ..errors import WriteFailed
from ..kinds import zoo_kind
from .. import rnn
from ..runtime.connect import init_ray
from . import storage

log = logging.getLogger("rnnray.zoo")

# config fields that do not change what a row contains (where it is written, how it is computed)
_NEUTRAL = ("path", "runs", "resources")


def layout_for(kind: str):
    return zoo_kind(kind).layout


def _layout_text(layout: dict | None) -> str:
    if not layout:
        return "unknown"
    return ", ".join(f"{k}={layout[k]}" for k in ("input_size", "hidden", "num_layers", "output_size", "num_params") if k in layout)


def content_spec(cfg) -> dict:
    """The part of a zoo config that determines its rows."""
    spec = {k: v for k, v in cfg.model_dump(mode="json").items() if k not in _NEUTRAL}
    if spec.get("task_assignment") == "uniform":  # the default, absent from zoos built before the option
        del spec["task_assignment"]
    return spec


class ZooTrainer:
    """Ray Data actor: trains chunks of RNNs in lockstep and writes each chunk as a Parquet shard."""

    def __init__(self, cfg: dict, out_dir: str, source: str | None):
        import torch

        from ..runtime.machine import ray_assigned_device

        self.cfg = zoo_config_from_dict(cfg)
        torch.set_num_threads(self.cfg.resources.threads_per_actor)
        self.gpu_ids, device = ray_assigned_device()  # what Ray gave this actor, not what the YAML asked
        self.device = str(device)
        self.out_dir = Path(out_dir)
        self.digits = None
        if self.cfg.kind == "mnist":
            from . import mnist

            # the driver resolved 'auto' once, so every actor uses the same digits
            self.digits = mnist.load_digits(source, self.cfg.data_root, self.cfg.download)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import ray

        try:
            entry = train_shard(self.cfg, [int(r) for r in batch["run_id"]], self.out_dir, self.device, self.digits)
        except ZooDiverged as e:  # an answer, not a failure: Ray would retry a failure, and lose the message
            return {"entry": np.array([json.dumps({"diverged": str(e)})])}
        except WriteFailed as e:  # the disk is full or read-only: the driver stops the build naming the shard
            return {"entry": np.array([json.dumps({"write_failed": str(e)})])}
        entry["node_id"] = ray.get_runtime_context().get_node_id()  # where it was trained (see the manifest)
        entry["gpu_ids"] = self.gpu_ids
        return {"entry": np.array([json.dumps(entry)])}


class ZooDiverged(storage.ZooError):
    """Runs of a chunk whose weights or stored outputs are not finite: their shard is not written."""


def check_finite(cfg, cols: dict[str, np.ndarray]) -> None:
    """:class:`ZooDiverged` naming the runs of a trained chunk whose flat weights or stored outputs
    (log-probabilities or logits, float16) hold NaN or +-inf at any snapshot, and the first such step."""
    out = zoo_kind(cfg.kind).sequence_columns[1]
    n = len(cols["run_id"])
    weights = ~np.isfinite(cols["params"].reshape(n, -1)).all(-1)
    outputs = ~np.isfinite(cols[out].reshape(n, -1)).all(-1)
    bad = weights | outputs
    if not bad.any():
        return
    runs = sorted({int(r) for r in cols["run_id"][bad]})
    step = int(cols["step"][bad].min())
    what = "non-finite weights" if (weights & (cols["step"] == step)).any() else f"stored {out} beyond float16"
    names = ", ".join(map(str, runs[:10])) + (f" and {len(runs) - 10} more" if len(runs) > 10 else "")
    decay = "weight_decay" if cfg.kind == "formal_languages" else "weight_decays"
    raise ZooDiverged(f"zoo build: run{'s' if len(runs) > 1 else ''} {names} diverged ({what} at step {step}); "
                      f"lower lr_points or {decay}")


def train_shard(cfg, run_ids: list[int], out_dir: Path, device: str, digits=None) -> dict:
    """Train one chunk of runs together and write it as a shard; its manifest entry. A chunk with a
    diverged run (:func:`check_finite`) is not written: the build stops with the runs named."""
    from .trainer import train_chunk

    t0 = time.time()
    cols = train_chunk(cfg, run_ids, device, digits=digits)
    source = cols.pop("_source", None)
    check_finite(cfg, cols)
    meta = {
        "zoo": json.dumps(content_spec(cfg)),
        "kind": cfg.kind,
        "layout": layout_for(cfg.kind).to_json(),
        "runs": json.dumps(sorted(run_ids)),
    }
    if source:
        meta["source"] = source
    # the zoo folder must exist already: a chunk landing after a stopped build removed it is dropped
    entry = storage.write_shard(storage.to_table(cols, meta), out_dir, run_ids, parents=False)
    entry["seconds"] = round(time.time() - t0, 2)
    entry["device"] = str(device)
    entry["pid"] = os.getpid()  # the process that trained it (a restarted actor has a new one)
    entry["lstm"] = "compiled kernels" if rnn.kernels_used(layout_for(cfg.kind), device) else "pytorch ops"
    return entry


def _check_shard(f: Path, spec: dict) -> None:
    """A finished shard at the build's path was built with this config: ZooError naming it otherwise."""
    theirs = storage.shard_config(f)
    if theirs is None:
        raise storage.ZooError(f"{f}: not a shard of an rnnray zoo build (no zoo config in its metadata); use another path")
    if theirs != spec:
        diff = sorted(k for k in set(theirs) | set(spec) if theirs.get(k) != spec.get(k))
        raise storage.ZooError(
            f"{f}: existing zoo was built with a different config ({', '.join(diff)} differ); use another path"
        )


def check_existing(cfg) -> bool:
    """What is already at the zoo's path is this zoo, finished or part-built, or nothing: a ZooError
    naming the manifest or the shard otherwise (another kind or layout, another recipe, another
    number of runs). Reads only, so it runs before Ray starts; True when the zoo is finished."""
    root = Path(cfg.path).expanduser()
    spec = content_spec(cfg)
    if (root / storage.MANIFEST).exists():
        manifest = storage.read_manifest(root)
        want = json.loads(layout_for(cfg.kind).to_json())
        if manifest.get("kind") != cfg.kind or manifest.get("layout") != want:
            raise storage.ZooError(
                f"{root / storage.MANIFEST}: holds a {manifest.get('kind')} zoo (RNN layout {_layout_text(manifest.get('layout'))}) "
                f"but the config expects {cfg.kind} ({_layout_text(want)})"
            )
        if manifest["spec"] != spec or manifest["runs"] != cfg.runs:
            raise storage.ZooError(f"{root / storage.MANIFEST}: a different zoo is already built here; use another path")
        return True
    shard_dir = root / storage.SHARDS
    for f in sorted(shard_dir.glob("*.parquet")) if shard_dir.is_dir() else []:
        if storage.shard_runs(f) is not None:  # an unreadable one is discarded by the build, its runs redone
            _check_shard(f, spec)
    return False


ZOO_PATH_KINDS = ("missing", "empty", "zoo", "other")  # a zoo path may hold this zoo, part-built or finished


def check_destination(cfg, field: str = "path:") -> bool:
    """Before Ray starts: the zoo's path is not a results or sweep folder nor inside a zoo, a sweep or
    a results folder, holds no other zoo (:func:`check_existing`) and, unless this zoo is finished
    there (then it is only read), can be written (tried, :mod:`rnnray.paths`). One line naming the
    field or the file; True when the zoo is finished."""
    from ..paths import check_not_inside, check_writable, expect_kind

    expect_kind(cfg.path, field, ZOO_PATH_KINDS)
    check_not_inside(cfg.path, field, owners=("zoo", "sweep", "results"))
    if check_existing(cfg):
        return True
    check_writable(cfg.path, field)
    return False


def _existing_shards(root: Path, spec: dict) -> list[dict]:
    """Finished shards already in the directory; unreadable ones are discarded (their runs redone)."""
    shard_dir = root / storage.SHARDS
    if not shard_dir.is_dir():
        return []
    from ..results.atomic import remove_leftovers

    remove_leftovers(shard_dir)  # left by an interrupted writer: never complete
    found = []
    for f in sorted(shard_dir.glob("*.parquet")):
        runs = storage.shard_runs(f)
        if runs is None:
            log.warning("discarding unreadable shard %s; its runs will be trained again", f)
            f.unlink()
            continue
        _check_shard(f, spec)
        storage.check_shard_form(f, spec["kind"], json.loads(layout_for(spec["kind"]).to_json()))
        found.append(
            {"file": f"{storage.SHARDS}/{f.name}", "rows": None, "runs": runs, "bytes": f.stat().st_size, "sha256": storage.sha256(f)}
        )
    return found


def resolve_source(cfg) -> str | None:
    """Decide once, on the driver, which MNIST digits the whole zoo uses."""
    if cfg.kind != "mnist":
        return None
    from . import mnist

    _, _, name = mnist.load_digits(cfg.source, cfg.data_root, cfg.download)
    return "torchvision" if name.startswith("torchvision") else "bundled"


def _train(cfg, root: Path, todo: list[int], source: str | None, in_process: str | None, progress: bool,
           new: list[dict]) -> None:
    """Train the runs ``todo`` chunk by chunk (on Ray Data actors, or here when ``in_process`` names a
    device), appending each written shard's manifest entry to ``new`` as it lands."""
    res = cfg.resources
    if todo and in_process is not None:
        digits = None
        if cfg.kind == "mnist":
            from . import mnist

            digits = mnist.load_digits(source, cfg.data_root, cfg.download)
        chunks = [todo[i:i + res.chunk] for i in range(0, len(todo), res.chunk)]
        for i, runs in enumerate(chunks):
            new.append(train_shard(cfg, runs, root / storage.SHARDS, in_process, digits))
            if progress:
                print(f"zoo {root.name}: chunk {i + 1}/{len(chunks)} written", flush=True)
    elif todo:
        import ray

        if not ray.is_initialized():
            init_ray()
        from ..runtime.resources import cluster_shape, fit_request

        shape = cluster_shape()
        cpus, gpus = fit_request(res.cpus_per_actor, res.gpus_per_actor, "zoo.resources: a zoo actor", shape)
        from ..runtime.console import active as quiet

        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = progress and not quiet()  # quiet: our own line per chunk instead
        ds = ray.data.from_items([{"run_id": r} for r in todo], override_num_blocks=max(1, -(-len(todo) // res.chunk)))
        ds.set_name(f"zoo {root.name}: {cfg.kind}, {len(todo)} RNNs to train")  # how the dashboard lists it
        actors = max(1, min(res.actors, -(-len(todo) // res.chunk)))
        out = ds.map_batches(
            ZooTrainer,
            fn_constructor_kwargs={"cfg": cfg.model_dump(mode="json"), "out_dir": str(root / storage.SHARDS), "source": source},
            batch_size=res.chunk,
            batch_format="numpy",
            # one chunk at a time per actor: a chunk is minutes of work, so a queued one would wait
            # behind it while another actor (perhaps on another node) sits idle
            compute=ray.data.ActorPoolStrategy(size=actors, max_tasks_in_flight_per_actor=1),
            num_cpus=cpus,
            num_gpus=gpus or None,
        )  # Ray Data restarts dead pool actors and retries their batches by itself
        chunks = -(-len(todo) // res.chunk)
        for written, row in enumerate(out.iter_rows(), 1):
            entry = json.loads(row["entry"])
            if "diverged" in entry:  # leaving the loop stops the pool; a chunk in flight is dropped
                raise ZooDiverged(entry["diverged"])
            if "write_failed" in entry:  # the shards written so far are whole and kept: the next build resumes
                raise WriteFailed(entry["write_failed"])
            new.append(entry)
            if progress and quiet():
                print(f"zoo {root.name}: chunk {written}/{chunks} written", flush=True)


def build(cfg, progress: bool = True, in_process: str | None = None) -> dict:
    """Build (or finish building) the zoo described by ``cfg``; return its manifest.

    ``in_process`` (a torch device, e.g. ``"cuda"``) trains the chunks one after another in this
    process instead of on Ray actors: the same rows, for a machine without Ray (the GPU check)."""
    import pyarrow.parquet as pq

    root = Path(cfg.path).expanduser()
    spec = content_spec(cfg)
    if check_destination(cfg):
        return storage.verify(root, checksums=True)
    from .preflight import check_output

    check_output(cfg)  # before anything is written: the shards fit the disk, the run ids memory
    top = root.absolute()  # the outermost folder this call creates, if any
    while not top.parent.exists() and top.parent != top:
        top = top.parent
    created = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    shards = _existing_shards(root, spec)
    done = {r for s in shards for r in s["runs"]}
    extra = sorted(done - set(range(cfg.runs)))
    if extra:
        raise storage.ZooError(f"{root}: holds runs {extra[:3]}... beyond runs={cfg.runs}; use another path")
    todo = [r for r in range(cfg.runs) if r not in done]
    source = resolve_source(cfg)
    t0 = time.time()
    new: list[dict] = []  # the shards this call writes
    try:
        _train(cfg, root, todo, source, in_process, progress, new)
    except ZooDiverged:
        # the config diverges (a row depends on the config alone): nothing this call wrote is of use
        if created:
            shutil.rmtree(top, ignore_errors=True)
        else:
            for entry in new:
                (root / entry["file"]).unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                (root / storage.SHARDS).rmdir()  # only if nothing else is in it
        raise
    shards += new
    for s in shards:
        if s["rows"] is None:
            s["rows"] = pq.read_metadata(root / s["file"]).num_rows
    counts = {}
    for s in shards:
        for r in s["runs"]:
            counts[r] = counts.get(r, 0) + 1
    missing = [r for r in range(cfg.runs) if r not in counts]
    dup = [r for r, c in counts.items() if c > 1]
    if missing or dup:
        raise storage.ZooError(f"{root}: build finished with missing runs {missing[:5]} / duplicated runs {dup[:5]}")
    shards.sort(key=lambda s: s["runs"][0])
    manifest = {
        "format": storage.FORMAT,
        "kind": cfg.kind,
        "spec": spec,
        "config": cfg.model_dump(mode="json"),
        "layout": json.loads(layout_for(cfg.kind).to_json()),
        "runs": cfg.runs,
        "snapshots": list(cfg.snapshots),
        "rows": sum(s["rows"] for s in shards),
        "mnist_source": source,
        "shards": [{**{k: s[k] for k in ("file", "rows", "runs", "bytes", "sha256")},
                    **{k: s[k] for k in ("node_id", "pid", "device", "gpu_ids", "lstm", "seconds") if s.get(k) is not None}} for s in shards],
        "build_seconds": round(time.time() - t0, 2),
    }
    storage.write_manifest(root, manifest)
    return manifest
