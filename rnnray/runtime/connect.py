"""Starting or joining Ray the way the commands promise: the cluster named by ``--address`` or
``RAY_ADDRESS``, otherwise a new local instance. Plain ``ray.init()`` would instead join whatever
``/tmp/ray/ray_current_cluster`` names, which ``ray start`` and ``ray.cluster_utils.Cluster`` leave
behind, often pointing at a cluster long gone; the preflight checks, run against this machine
when no address is given, would then describe a machine the job does not run on."""
from __future__ import annotations

import os


def target(address: str | None = None) -> str | None:
    """What to hand ``ray.init``: the address given; ``None`` when ``RAY_ADDRESS`` is set (Ray reads it
    itself); ``"local"`` otherwise."""
    if address:
        return address
    return None if os.environ.get("RAY_ADDRESS") else "local"


def init_ray(address: str | None = None, **kwargs):
    """``ray.init`` on :func:`target`; ``kwargs`` pass through (``num_cpus`` only makes sense locally)."""
    import ray

    return ray.init(address=target(address), **kwargs)
