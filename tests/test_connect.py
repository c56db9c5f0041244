"""Without ``--address`` or ``RAY_ADDRESS`` the commands start a new local Ray instance, even where a
stale ``ray_current_cluster`` file (left by ``ray start`` or ``ray.cluster_utils.Cluster``) names a
cluster that is gone: plain ``ray.init()`` would try to join it and fail."""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from rnnray.runtime.connect import target

pytestmark = pytest.mark.own_cluster  # it starts a Ray instance of its own: after the session's is shut down

ROOT = Path(__file__).resolve().parents[1]


def test_the_target_is_the_address_then_ray_address_then_a_new_local_instance(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert target(None) == "local"
    assert target("10.0.0.1:6379") == "10.0.0.1:6379"
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.2:6379")
    assert target(None) is None  # Ray reads RAY_ADDRESS itself
    assert target("auto") == "auto"  # an explicit address wins over the environment


def _dead_address() -> str:
    with socket.socket() as s:  # a loopback port nothing listens on once this closes
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def test_a_stale_current_cluster_file_does_not_capture_a_command():
    tmp = tempfile.mkdtemp(prefix="rc", dir="/tmp")  # short: Ray's socket paths live under it
    try:
        stale_file = Path(tmp, "ray", "ray_current_cluster")  # where Ray looks under RAY_TMPDIR
        stale_file.parent.mkdir()
        stale = _dead_address()
        stale_file.write_text(stale)
        env = {**os.environ, "RAY_TMPDIR": tmp, "PYTHONPATH": str(ROOT)}
        env.pop("RAY_ADDRESS", None)
        probe = ("import ray\nfrom ray._private.services import canonicalize_bootstrap_address\n"
                 "print('plain ray.init() would join', canonicalize_bootstrap_address(None))\n"
                 "from rnnray.runtime.connect import init_ray\n"
                 "ctx = init_ray(num_cpus=1, include_dashboard=False)\n"
                 "print('joined', ctx.address_info['gcs_address'])\n"
                 "print('nodes', len(ray.nodes()))\nray.shutdown()\n")
        r = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        lines = dict(line.split(" ", 1) for line in r.stdout.splitlines() if line.startswith(("plain", "joined", "nodes")))
        port = stale.rsplit(":", 1)[1]  # Ray rewrites 127.0.0.1 to the node's own IP
        assert lines["plain"].endswith(f":{port}")  # the trap is set: Ray's own default would join the dead address
        assert not lines["joined"].endswith(f":{port}") and lines["nodes"] == "1"  # ... and init_ray started its own instance
        assert not stale_file.exists()  # removed: Ray's own processes would look the cluster up there
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_an_address_file_of_a_live_or_remote_cluster_is_left_alone(tmp_path, monkeypatch):
    from rnnray.runtime.connect import remove_stale_address_file

    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    (tmp_path / "ray").mkdir()
    file = tmp_path / "ray" / "ray_current_cluster"
    with socket.socket() as live:  # something listens there: a cluster that is up
        live.bind(("127.0.0.1", 0))
        live.listen()
        file.write_text(f"127.0.0.1:{live.getsockname()[1]}")
        assert remove_stale_address_file() is None and file.exists()
    file.write_text("203.0.113.7:6379")  # another machine's: not ours to judge
    assert remove_stale_address_file() is None and file.exists()
    dead = _dead_address()
    file.write_text(dead)
    assert remove_stale_address_file() == dead and not file.exists()
