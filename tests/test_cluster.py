"""A real two-node Ray cluster on this machine (``ray.cluster_utils.Cluster``), with the dashboard
on loopback: the zoo's actors and a sweep's training workers land on both nodes, and a sweep
submitted through the Ray Jobs HTTP API runs to SUCCEEDED with its logs readable.

Each node declares one (logical) GPU, so a zoo that asks for a GPU per actor gets one actor per
node; there is no CUDA here, so the actors still train on CPU and the rows must equal the
single-node zoo bit for bit.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request

import pytest
import yaml

from conftest import PATIENCE, TINY_FL
from rnnray.runtime.connect import free_loopback_port

pytestmark = [pytest.mark.own_cluster, pytest.mark.timeout(3 * PATIENCE)]


def _http(url: str, data: dict | None = None, timeout: float = 10):
    req = urllib.request.Request(url, data=None if data is None else json.dumps(data).encode(),
                                 headers={"Content-Type": "application/json"}, method="GET" if data is None else "POST")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read().decode() or "null")


@pytest.fixture(scope="module")
def cluster(tiny_fl_zoo):
    """Two nodes of 2 CPUs and 1 GPU each; the head serves the dashboard on 127.0.0.1.
    (``tiny_fl_zoo`` is built on the session's single-node instance before it is shut down.)"""
    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()
    port = free_loopback_port()
    c = Cluster(initialize_head=True, head_node_args=dict(
        num_cpus=2, num_gpus=1, include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=port,
        object_store_memory=200 * 2**20))
    c.add_node(num_cpus=2, num_gpus=1, object_store_memory=200 * 2**20)
    c.wait_for_nodes()
    ray.init(address=c.address, namespace="rnnray-cluster-test", log_to_driver=False)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + PATIENCE
    while True:  # the dashboard's HTTP server comes up a little after the node
        try:
            _http(f"{url}/api/version")
            break
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(1)
    yield {"cluster": c, "url": url, "nodes": {n["NodeID"] for n in ray.nodes() if n["Alive"]}}
    ray.shutdown()
    c.shutdown()


@pytest.fixture(scope="module")
def zoo_on_two_nodes(cluster, tmp_path_factory):
    from rnnray.config import parse_zoo
    from rnnray.zoo import build

    cfg = parse_zoo({**TINY_FL, "path": str(tmp_path_factory.mktemp("cluster") / "zoo"),
                     "resources": {"actors": 2, "chunk": 4, "gpus_per_actor": 1}})
    return cfg, build(cfg, progress=False)


def test_zoo_actors_on_both_nodes_build_the_single_node_zoo(cluster, zoo_on_two_nodes, tiny_fl_zoo):
    from rnnray.zoo import load_table

    cfg, manifest = zoo_on_two_nodes
    assert len(cluster["nodes"]) == 2
    assert {s["node_id"] for s in manifest["shards"]} == cluster["nodes"]  # one actor per node
    assert all(s["gpu_ids"] for s in manifest["shards"])  # each actor was given the GPU it asked for
    assert all(s["device"] == "cpu" for s in manifest["shards"])  # ... and trained on CPU, there being no CUDA
    key = [("run_id", "ascending"), ("step", "ascending")]
    assert load_table(cfg.path).sort_by(key).equals(load_table(tiny_fl_zoo.path).sort_by(key))


def test_sweep_training_workers_on_both_nodes(cluster, zoo_on_two_nodes, tmp_path):
    from rnnray.job import run_job
    from rnnray.sweep import load_sweep

    cfg, _ = zoo_on_two_nodes
    spec = {"name": "two-nodes", "results": str(tmp_path / "results"), "zoo": cfg.path, "encoders": ["dws"],
            "budget": 20000,
            "train": {"steps": 40, "eval_every": 20, "batch_size": 8, "emulator_hidden": 16, "eval_sequences": 2},
            "tune": {"samples_per_encoder": 1, "max_concurrent_trials": 1, "scheduler": "none"}, "final": {"seeds": 0},
            # the GPU path of a training worker: each asks for a (logical) GPU; gloo, there being no NCCL
            "resources": {"workers": 2, "cpus_per_worker": 1, "gpus_per_worker": 1, "process_group_backend": "gloo",
                          "placement_strategy": "SPREAD"},
            "downstream": {"enabled": False}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    sweep_dir = run_job(load_sweep(tmp_path / "s.yaml"), progress=False, verbose=0)
    (rec,) = [json.loads(p.read_text()) for p in (sweep_dir / "trials" / "dws").glob("*/trial.json")]
    assert rec["status"] == "finished", rec.get("reason")
    assert [w["rank"] for w in rec["placement"]] == [0, 1]
    assert {w["node_id"] for w in rec["placement"]} == cluster["nodes"]  # DDP across the two nodes
    assert all(w["gpu_ids"] for w in rec["placement"])  # Ray assigned each worker its GPU ...
    assert len({w["gpu_ids"][0] + w["node_id"] for w in rec["placement"]}) == 2
    assert all(w["device"] == "cpu" for w in rec["placement"])  # ... and the worker, seeing no CUDA, trained on CPU


def test_sweep_submitted_through_the_jobs_api(cluster, zoo_on_two_nodes, tmp_path):
    url = cluster["url"]
    cfg, _ = zoo_on_two_nodes
    spec = {"name": "job", "results": str(tmp_path / "results"), "zoo": cfg.path, "encoders": ["flat"],
            "budget": 20000,
            "train": {"steps": 20, "eval_every": 10, "batch_size": 8, "emulator_hidden": 16, "eval_sequences": 2},
            "tune": {"samples_per_encoder": 1, "max_concurrent_trials": 1, "scheduler": "none"}, "final": {"seeds": 0},
            "downstream": {"enabled": False}}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(spec))
    sub = _http(f"{url}/api/jobs/", {
        "entrypoint": f"{sys.executable} -m rnnray.sweep {tmp_path / 'job.yaml'} --quiet",
        "metadata": {"name": "rnnray sweep job"},
    })
    job_id = sub["submission_id"]
    deadline, status = time.time() + PATIENCE, None
    while time.time() < deadline:
        status = _http(f"{url}/api/jobs/{job_id}")["status"]
        if status in ("SUCCEEDED", "FAILED", "STOPPED"):
            break
        time.sleep(2)
    logs = _http(f"{url}/api/jobs/{job_id}/logs")["logs"]
    assert status == "SUCCEEDED", logs[-3000:]
    assert f"Ray dashboard: {url}" in logs  # the sweep tells its user where to watch
    assert "sweep folder:" in logs and "finished in" in logs
    (sweep_dir,) = list((tmp_path / "results").glob("job-*"))
    assert json.loads((sweep_dir / "best.json").read_text())["flat"]["checkpoint"]

    # what a researcher sees in the dashboard: named entries, not anonymous ones
    jobs = _http(f"{url}/api/jobs/")
    assert any(j.get("submission_id") == job_id and j.get("metadata", {}).get("name") == "rnnray sweep job" for j in jobs)
    actors = _http(f"{url}/api/v0/actors?limit=1000&detail=true")["data"]["result"]["result"]
    classes = {a.get("class_name") for a in actors}
    reprs = {a.get("repr_name") for a in actors}
    assert {"RayTrainWorker", "TrainController"} <= classes, classes
    assert "EmulationTrial" in classes and "EmulationTrial(flat)" in reprs, (classes, reprs)  # a trial, by encoder
    assert any("ZooTrainer" in (n or "") for n in classes | reprs), (classes, reprs)
    assert "ImplicitFunc" not in classes | reprs


def test_zoo_build_survives_losing_its_node(cluster, tiny_fl_zoo, tmp_path):
    """A worker node dies mid-build, its raylet and every process on it killed at once (as a power
    cut would), and a replacement node joins, as an autoscaler or an operator would bring one. The
    pool's actor needs 3 CPUs, so only the 4-CPU node can hold it: the chunk in flight is lost with
    the node and must be trained again on the replacement. The zoo must come out with every run
    once and equal the single-node zoo. (If Ray gives up instead, re-running the build must resume.)
    """
    import threading

    from rnnray.config import parse_zoo
    from rnnray.zoo import build, load_table
    from rnnray.zoo.storage import verify

    c = cluster["cluster"]
    doomed = c.add_node(num_cpus=4, object_store_memory=200 * 2**20)
    c.wait_for_nodes()
    cfg = parse_zoo({**TINY_FL, "path": str(tmp_path / "zoo"),
                     "resources": {"actors": 1, "chunk": 2, "cpus_per_actor": 3}})
    outcome = {}

    def run():
        try:
            outcome["manifest"] = build(cfg, progress=False)
        except Exception as e:  # noqa: BLE001 - the test reports it below
            outcome["error"] = e

    builder = threading.Thread(target=run)
    builder.start()
    shards = tmp_path / "zoo" / "shards"
    # one actor, four chunks in turn: when the first shard lands the actor has just begun the
    # second, whole seconds of training against the 0.2 s poll, so the node dies with a chunk in
    # flight on any machine (the deadline only bounds how long a broken build takes to report)
    deadline = time.time() + PATIENCE
    while not list(shards.glob("*.parquet")):
        assert time.time() < deadline and builder.is_alive(), f"no shard landed: {outcome}"
        time.sleep(0.2)
    c.remove_node(doomed, allow_graceful=False)
    replacement = c.add_node(num_cpus=4, object_store_memory=200 * 2**20)
    try:
        builder.join(timeout=PATIENCE)
        assert not builder.is_alive(), "the build did not finish after its node died"
        resumed = "error" in outcome
        if resumed:  # Ray gave the chunk up: a re-run resumes from the shards already in place
            outcome["manifest"] = build(cfg, progress=False)
        manifest = verify(tmp_path / "zoo", checksums=True)
        print("after the node died:", f"the re-run resumed ({outcome['error']!r})" if resumed else "Ray retried the chunk")
        assert sorted(r for s in manifest["shards"] for r in s["runs"]) == list(range(cfg.runs))
        nodes = {s["node_id"] for s in manifest["shards"]}
        assert nodes == {doomed.node_id, replacement.node_id}, (nodes, resumed, outcome.get("error"))
        key = [("run_id", "ascending"), ("step", "ascending")]
        assert load_table(cfg.path).sort_by(key).equals(load_table(tiny_fl_zoo.path).sort_by(key))
        assert not [p for p in (tmp_path / "zoo").rglob("*") if ".tmp" in p.name]
    finally:
        c.remove_node(replacement)
