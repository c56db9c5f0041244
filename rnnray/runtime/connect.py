"""Starting or joining Ray the way the commands promise: the cluster named by ``--address`` or
``RAY_ADDRESS``, otherwise a new local instance. Plain ``ray.init()`` would instead join whatever
``/tmp/ray/ray_current_cluster`` names, which ``ray start`` and ``ray.cluster_utils.Cluster`` leave
behind, often pointing at a cluster long gone; the preflight checks, run against this machine
when no address is given, would then describe a machine the job does not run on. A file naming a
local address nothing listens on is removed before a local start: Ray's own processes (Ray Train's
placement-group cleaner, through the state API) look the cluster up there and would wait on it."""
from __future__ import annotations

import os
import socket


def target(address: str | None = None) -> str | None:
    """What to hand ``ray.init``: the address given; ``None`` when ``RAY_ADDRESS`` is set (Ray reads it
    itself); ``"local"`` otherwise."""
    if address:
        return address
    return None if os.environ.get("RAY_ADDRESS") else "local"


def free_loopback_port() -> int:
    """A loopback port nothing holds now, for a dashboard started beside another Ray (which may hold
    8265). The dashboard must be served: Ray Train's placement-group cleaner asks its state API
    whether a run's controller is alive, and without it a trial ASHA stopped kept its share reserved."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _local_hosts() -> set[str]:
    hosts = {"127.0.0.1", "localhost", socket.gethostname()}
    try:
        from ray.util import get_node_ip_address

        hosts.add(get_node_ip_address())
    except Exception:  # no network address to find: loopback only
        pass
    return hosts


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def remove_stale_address_file() -> str | None:
    """Remove ``ray_current_cluster`` when it names an address on this machine that nothing listens
    on (a cluster that is gone); an address elsewhere, or one that answers, is left alone. The address
    removed, or None."""
    from ray._common.utils import get_ray_address_file

    path = get_ray_address_file(None)
    try:
        with open(path) as f:
            address = f.read().strip()
    except OSError:
        return None
    host, _, port = address.rpartition(":")
    if not port.isdigit() or host not in _local_hosts() or _listening(host, int(port)):
        return None
    try:
        os.remove(path)
    except OSError:
        return None
    return address


def init_ray(address: str | None = None, worker_nice: int = 0, **kwargs):
    """``ray.init`` on :func:`target`; ``kwargs`` pass through (``num_cpus`` only makes sense locally).

    ``worker_nice`` (``resources.worker_nice``) above 0: Ray starts its workers at nice 15, so the
    job's workers start at 0 instead and only the training workers lower themselves once their run
    starts; a trial that is starting up (a new process importing torch, its Ray Train controller)
    then runs ahead of the steps of running trials rather than beside them."""
    import ray

    if worker_nice:
        runtime_env = dict(kwargs.pop("runtime_env", None) or {})
        runtime_env["env_vars"] = {**runtime_env.get("env_vars", {}), "RAY_worker_niceness": "0"}
        kwargs["runtime_env"] = runtime_env
    where = target(address)
    if where == "local":
        remove_stale_address_file()
    return ray.init(address=where, **kwargs)
