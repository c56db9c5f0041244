"""Resource requests from the YAML, fitted to the Ray cluster that is actually there.

A sweep file written for DGX nodes (GPUs per zoo actor and per training worker, several CPUs each)
must also run on a laptop: Ray would otherwise wait forever for a GPU or for a 4-CPU slot that no
node has. So GPU requests are dropped when the cluster has no GPU at all, and CPU requests are cut
to what the largest node offers; each change is printed once, in one line. Nothing changes on a
cluster that can satisfy the request.
"""

from __future__ import annotations

import sys


def cluster_shape() -> dict:
    """Total GPUs and the largest node's CPUs of the running Ray instance."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    cpus = max((n.get("Resources", {}).get("CPU", 0.0) for n in nodes), default=0.0)
    gpus = sum(n.get("Resources", {}).get("GPU", 0.0) for n in nodes)
    return {"max_node_cpus": cpus, "gpus": gpus, "nodes": len(nodes)}


def fit_request(cpus: float, gpus: float, what: str, shape: dict | None = None) -> tuple[float, float]:
    """``(cpus, gpus)`` one actor or worker may ask for on this cluster (see the module docstring)."""
    shape = shape or cluster_shape()
    if gpus > 0 and shape["gpus"] == 0:
        print(f"note: {what} asks for {gpus:g} GPU each but this Ray cluster has none: running on CPU", file=sys.stderr, flush=True)
        gpus = 0.0
    if shape["max_node_cpus"] and cpus > shape["max_node_cpus"]:
        print(f"note: {what} asks for {cpus:g} CPUs each but the largest node has {shape['max_node_cpus']:g}: "
              f"asking for {shape['max_node_cpus']:g}", file=sys.stderr, flush=True)
        cpus = float(shape["max_node_cpus"])
    return cpus, gpus
