"""Resource requests from the YAML, fitted to the Ray cluster that is actually there.

A sweep file written for DGX nodes (GPUs per zoo actor and per training worker, several CPUs each)
must also run on a laptop: Ray would otherwise wait forever for a GPU or for a 4-CPU slot that no
node has. So GPU requests are dropped when the cluster has no GPU at all, and CPU requests are cut
to what the largest node offers; each change is printed once, in one line. Nothing changes on a
cluster that can satisfy the request.

What no cut can mend is refused before anything is scheduled (:func:`check_workers`): a run's
workers that the cluster's nodes could never hold all at once (``workers: 64`` on two CPUs), which
Ray Tune would otherwise wait for forever. The shape is the running instance's once connected
(:func:`cluster_shape`), or, before a command starts its own local instance, the one that instance
will have (:func:`local_shape`).
"""

from __future__ import annotations

import math
import os
import sys

from ..errors import UsageError


def shape_of(nodes: list[dict]) -> dict:
    """A cluster's shape from its nodes' resources (``{"CPU": .., "GPU": ..}`` each)."""
    nodes = [{"CPU": float(n.get("CPU", 0.0)), "GPU": float(n.get("GPU", 0.0))} for n in nodes]
    return {"max_node_cpus": max((n["CPU"] for n in nodes), default=0.0), "gpus": sum(n["GPU"] for n in nodes),
            "nodes": len(nodes), "node_resources": nodes}


def cluster_shape() -> dict:
    """Total GPUs, the largest node's CPUs and every node's resources of the running Ray instance."""
    import ray

    return shape_of([n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")])


def local_shape() -> dict:
    """The shape of the local instance ``ray.init()`` would start on this machine: one node with the
    CPUs Ray counts (cgroup limits included) and the CUDA devices this process can see."""
    try:
        from ray._private.utils import get_num_cpus  # what ray.init() itself counts

        cpus = float(get_num_cpus())
    except Exception:  # noqa: BLE001 - a private helper; os.cpu_count is what it falls back to as well
        cpus = float(os.cpu_count() or 1)
    try:
        import torch

        gpus = float(torch.cuda.device_count())
    except Exception:  # noqa: BLE001 - no torch or no driver: no GPU Ray could use either
        gpus = 0.0
    return shape_of([{"CPU": cpus, "GPU": gpus}])


def current_shape() -> dict:
    """The running Ray instance's shape, or (before one starts) the local instance's a command would start."""
    import ray

    return cluster_shape() if ray.is_initialized() else local_shape()


def fitted(cpus: float, gpus: float, shape: dict) -> tuple[float, float]:
    """The request :func:`fit_request` makes on ``shape``, without its notes."""
    if gpus > 0 and shape["gpus"] == 0:
        gpus = 0.0
    if shape["max_node_cpus"] and cpus > shape["max_node_cpus"]:
        cpus = float(shape["max_node_cpus"])
    return cpus, gpus


def fit_request(cpus: float, gpus: float, what: str, shape: dict | None = None) -> tuple[float, float]:
    """``(cpus, gpus)`` one actor or worker may ask for on this cluster (see the module docstring)."""
    shape = shape or cluster_shape()
    new_cpus, new_gpus = fitted(cpus, gpus, shape)
    if new_gpus != gpus:
        print(f"note: {what} asks for {gpus:g} GPU each but this Ray cluster has none: running on CPU", file=sys.stderr, flush=True)
    if new_cpus != cpus:
        print(f"note: {what} asks for {cpus:g} CPUs each but the largest node has {shape['max_node_cpus']:g}: "
              f"asking for {shape['max_node_cpus']:g}", file=sys.stderr, flush=True)
    return new_cpus, new_gpus


def _per_node(node: dict, cpus: float, gpus: float) -> int:
    """How many workers of ``cpus`` CPUs and ``gpus`` GPUs each one node can hold at once."""
    fits = [math.floor(node["CPU"] / cpus + 1e-9)] if cpus > 0 else []
    if gpus > 0:
        fits.append(math.floor(node["GPU"] / gpus + 1e-9))
    return max(0, min(fits)) if fits else sys.maxsize


def placeable(cpus: float, gpus: float, strategy: str, shape: dict) -> int:
    """The most workers of one run (each ``cpus``/``gpus``, as fitted) the cluster's nodes can hold
    at once under Ray's placement ``strategy``: all on one node for STRICT_PACK, one a node for
    STRICT_SPREAD, anywhere for PACK and SPREAD."""
    slots = [_per_node(n, cpus, gpus) for n in shape["node_resources"]]
    if strategy == "STRICT_PACK":
        return max(slots, default=0)
    if strategy == "STRICT_SPREAD":
        return sum(1 for s in slots if s > 0)
    return sum(slots)


def check_workers(workers: int, cpus: float, gpus: float, strategy: str, shape: dict, prefix: str = "") -> None:
    """UsageError naming ``{prefix}workers`` when one run's workers (each asking ``cpus`` CPUs and
    ``gpus`` GPUs, cut as :func:`fit_request` cuts them) could never be placed together on the
    cluster of ``shape``: Ray would wait for them forever. ``prefix``: where the fields sit in the
    file (``resources.`` in a sweep file)."""
    cpus, gpus = fitted(cpus, gpus, shape)
    most = placeable(cpus, gpus, strategy, shape)
    if workers <= most:
        return
    each = f"{cpus:g} CPU{'s' if cpus != 1 else ''}" + (f" and {gpus:g} GPU{'s' if gpus != 1 else ''}" if gpus else "")
    have = f"{sum(n['CPU'] for n in shape['node_resources']):g} CPUs" + (f" and {shape['gpus']:g} GPUs" if gpus else "")
    where = f"{shape['nodes']} node" + ("s" if shape["nodes"] != 1 else "")
    raise UsageError(f"{prefix}workers: {workers} workers of {each} each ({strategy}) can never run at once on this "
                     f"cluster ({have} on {where}): at most {most} fit; lower {prefix}workers or "
                     f"{prefix}{'gpus' if gpus and _gpu_bound(cpus, gpus, shape) else 'cpus'}_per_worker")


def _gpu_bound(cpus: float, gpus: float, shape: dict) -> bool:
    """Whether the GPUs, not the CPUs, limit how many workers fit."""
    return sum(_per_node(n, 0.0, gpus) for n in shape["node_resources"]) < sum(
        _per_node(n, cpus, 0.0) for n in shape["node_resources"])
