"""Shared test fixtures: one real local Ray instance per test session, tiny zoos built once."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
import shutil
import subprocess

import pytest

# Ray 2.60 writes ~/.ray/auth_token on a local ray.init(); tests must not depend on HOME.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

# The plug-in encoders of tests/plugins/ live outside rnnray, as a researcher's would: on the path of
# this process and, through PYTHONPATH (set before the session starts Ray), of every Ray worker.
PLUGINS = str(Path(__file__).resolve().parent / "plugins")
if PLUGINS not in sys.path:
    sys.path.insert(0, PLUGINS)
if PLUGINS not in os.environ.get("PYTHONPATH", "").split(os.pathsep):
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (PLUGINS, os.environ.get("PYTHONPATH")) if p)

# How long a test waits for an event before it calls the run broken. It only bounds how long a failure
# takes to report and never decides a pass, so it is generous: with a CPU-heavy process beside the
# suite on a 2-core machine a trial's start took over two minutes.
PATIENCE = 1500

TINY_FL = dict(kind="formal_languages", runs=8, steps=200, seed=3, snapshot_steps=[0, 100, 200], accuracy_samples=200,
               stored_sequences=20, resources=dict(actors=2, chunk=4))
TINY_MNIST = dict(kind="mnist", runs=6, steps=60, seed=5, snapshot_steps=[0, 30, 60], source="bundled",
                  eval_digits=100, stored_sequences=20, resources=dict(actors=2, chunk=3))


def pytest_collection_modifyitems(session, config, items):
    """Tests that start their own Ray cluster run last: they shut the session's instance down first
    (two Ray instances on one machine confuse Ray's state API, and the 2-core CI machine)."""
    items[:] = [i for i in items if not i.get_closest_marker("own_cluster")] + \
               [i for i in items if i.get_closest_marker("own_cluster")]


@contextlib.contextmanager
def torch_threads(n: int):
    """Run with ``n`` torch intra-op threads, then restore the count (tests must not leak theirs)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def immutable(path):
    """``path`` immutable (``chattr +i``) for the duration: no file or folder can be added to it or
    removed from it, by root either (a permission bit does not stop root; this does). Skips the test
    where the file system or the process cannot set the flag."""
    done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True) if shutil.which("chattr") else None
    if done is None or done.returncode != 0:
        pytest.skip(f"chattr +i is not available here ({done.stderr.strip() if done else 'no chattr'})")
    try:
        yield path
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


@pytest.fixture
def one_torch_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread is fastest and steadiest (and
    the bitwise tests need it)."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def one_torch_thread_module():
    """``one_torch_thread`` for module-scoped fixtures that train."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def ray_session():
    import ray

    if not ray.is_initialized():
        from rnnray.runtime.connect import free_loopback_port, remove_stale_address_file

        remove_stale_address_file()  # a gone cluster's address would be looked up by Ray Train's own processes
        # the dashboard (on a free loopback port: another Ray may hold 8265) serves the state API, which
        # Ray Train's placement-group cleaner asks whether a run's controller is alive; without it a
        # trial that ASHA stopped kept its workers' CPUs reserved, and the next trials waited for ever
        port = free_loopback_port()
        ray.init(address="local", num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=port,
                 log_to_driver=False, namespace="rnnray-tests")
    yield ray
    ray.shutdown()


def _build(tmp_path_factory, spec, name):
    from rnnray.config import parse_zoo
    from rnnray.zoo import build

    cfg = parse_zoo({**spec, "path": str(tmp_path_factory.mktemp(name) / "zoo")})
    build(cfg, progress=False)
    return cfg


@pytest.fixture(scope="session")
def tiny_fl_zoo(ray_session, tmp_path_factory):
    """A built formal-languages zoo (8 RNNs, 3 snapshots): its config; the zoo is at cfg.path."""
    return _build(tmp_path_factory, TINY_FL, "fl")


@pytest.fixture(scope="session")
def tiny_mnist_zoo(ray_session, tmp_path_factory):
    return _build(tmp_path_factory, TINY_MNIST, "mnist")
