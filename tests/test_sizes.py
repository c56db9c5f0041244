"""Sizes and resource requests that cannot run are refused before Ray starts (on a cluster given by
--address: right after connecting, before anything is scheduled), through every command: one line
naming the field, exit code 2, nothing written. The machine's limits are passed in to the checks
(or the sizes asked for exceed any machine's); nothing here exhausts this one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from conftest import PATIENCE, TINY_FL

from rnnray.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
TOO_MANY_WORKERS = 4 * (os.cpu_count() or 1)  # more CPUs than this machine's local Ray instance can have


def _cli(module: str, *args: str, cwd: Path = ROOT, ray_tmp: Path | None = None) -> subprocess.CompletedProcess:
    """``ray_tmp``: Ray's temp root for the process, where any instance it started would leave its session."""
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", **({"RAY_TMPDIR": str(ray_tmp)} if ray_tmp else {})}
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=PATIENCE)


@pytest.fixture
def no_ray_here():
    """A Ray temporary folder of the test's own (short: Ray's socket paths live under it), for the
    commands it runs; afterwards no Ray session was started in it: the refusal came before Ray."""
    ray_tmp = Path(tempfile.mkdtemp(prefix="rs", dir="/tmp"))
    try:
        yield ray_tmp
        assert not list(ray_tmp.rglob("session_*")), "Ray was started"
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _refused(r: subprocess.CompletedProcess, needle: str) -> str:
    """The one error line of a refused command (exit 2, no traceback), which must contain ``needle``."""
    err = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(err) == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert err[0].startswith("error: ") and needle in err[0], err[0]
    return err[0]


def _sweep_file(tmp_path: Path, zoo, **changes) -> Path:
    data = {"name": "sizes", "results": str(tmp_path / "results"), "zoo": zoo, "encoders": ["flat"], "budget": 20000,
            "train": {"steps": 40, "eval_every": 20, "batch_size": 8, "emulator_hidden": 16, "eval_sequences": 2},
            "tune": {"samples_per_encoder": 1, "max_concurrent_trials": 1, "scheduler": "none"},
            "final": {"seeds": 0}, "downstream": {"enabled": False}}
    for key, value in changes.items():
        data[key] = {**data[key], **value} if isinstance(data.get(key), dict) and isinstance(value, dict) else value
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def address(ray_session):
    return ray_session.get_runtime_context().gcs_address


# -- the sweep --------------------------------------------------------------------------------------
# tiny_fl_zoo's train split holds 6 runs x 3 snapshots = 18 rows
SWEEP_CASES = {
    "batch beyond memory": ({"train": {"batch_size": 10**9}}, "train.batch_size: a training worker would hold about"),
    "batch beyond the split": ({"train": {"batch_size": 32}},
                               "train.batch_size: a batch of 32 snapshots is larger than the train split it samples "
                               "from (18 snapshots)"),
    "more workers than CPUs": ({"resources": {"workers": TOO_MANY_WORKERS}, "train": {"batch_size": TOO_MANY_WORKERS}},
                               f"resources.workers: {TOO_MANY_WORKERS} workers of 1 CPU each (PACK) can never run at once"),
    "batch not divisible": ({"resources": {"workers": 2, "cpus_per_worker": 0.5}, "train": {"batch_size": 7}},
                            "train.batch_size: 7 snapshots a step do not divide evenly among resources.workers (2)"),
    "steps beyond memory": ({"train": {"steps": 10**14}}, "train.steps: a training worker would hold about"),
    "emulator beyond memory": ({"train": {"emulator_hidden": 10**7}}, "train.emulator_hidden: a training worker would hold"),
    "trials beyond the disk": ({"tune": {"samples_per_encoder": 10**12}},
                               "tune.samples_per_encoder: the sweep's 1,000,000,000,000 runs would keep about"),
    "final seeds beyond the disk": ({"final": {"seeds": 10**12}}, "final.seeds: the sweep's 2,000,000,000,001 runs"),
    "budget no encoder reaches": ({"budget": 10}, "budget: encoder 'flat' cannot be sized to 10 parameters"),
}


@pytest.mark.parametrize("case", list(SWEEP_CASES))
def test_a_sweep_that_cannot_run_is_refused_before_ray_starts(case, tiny_fl_zoo, tmp_path, no_ray_here):
    changes, needle = SWEEP_CASES[case]
    r = _cli("rnnray.sweep", str(_sweep_file(tmp_path, tiny_fl_zoo.path, **changes)), "--quiet", ray_tmp=no_ray_here)
    _refused(r, needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.yaml"]  # no results folder


def test_a_batch_beyond_the_split_of_a_zoo_not_built_yet_is_refused(tmp_path):
    """The split of a zoo config is planned from the tasks its build will draw, before anything is built."""
    zoo = {**TINY_FL, "runs": 12, "seed": 0, "path": str(tmp_path / "zoo")}  # 8 train runs x 3 snapshots
    r = _cli("rnnray.sweep", str(_sweep_file(tmp_path, zoo, train={"batch_size": 25})), "--quiet")
    _refused(r, "train.batch_size: a batch of 25 snapshots is larger than the train split it samples from (24 snapshots)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.yaml"]  # neither zoo nor results


def test_on_a_cluster_the_workers_are_checked_right_after_connecting(ray_session, tiny_fl_zoo, tmp_path, address):
    """--address: the shape is the cluster's (this session's 2-CPU instance), read before anything is scheduled."""
    config = _sweep_file(tmp_path, tiny_fl_zoo.path, resources={"workers": 3}, train={"batch_size": 6})
    r = _cli("rnnray.sweep", str(config), "--address", address, "--quiet")
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert r.returncode == 2 and len(errors) == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert errors[0].startswith("error: resources.workers: 3 workers of 1 CPU each (PACK) can never run at once on "
                                "this cluster (2 CPUs on 1 node): at most 2 fit"), errors[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.yaml"]


def test_the_sweeps_limits_are_parameters(tiny_fl_zoo, tmp_path):
    """The checks take the machine's memory, free disk and cluster shape as arguments."""
    from rnnray.runtime.resources import shape_of
    from rnnray.sweep import load_sweep
    from rnnray.sweep.preflight import check_sweep

    cfg = load_sweep(_sweep_file(tmp_path, tiny_fl_zoo.path, tune={"samples_per_encoder": 1000}))
    one_cpu = shape_of([{"CPU": 1}])
    check_sweep(cfg, memory=2**30, free=2**30, shape=one_cpu)  # fits
    with pytest.raises(UserError, match=r"^zoo: a training worker would hold about .* for its share of the zoo's rows "
                                        r".* more than the 1 MiB of memory of one node; use fewer runs"):
        check_sweep(cfg, memory=2**20, free=2**30, shape=one_cpu)
    big_batch = cfg.model_copy(update={"train": cfg.train.model_copy(update={"batch_size": 65536})})
    with pytest.raises(UserError, match=r"^train\.batch_size: a training worker would hold about"):
        check_sweep(big_batch, memory=2**30, free=2**30, shape=one_cpu)
    with pytest.raises(UserError, match=r"^tune\.samples_per_encoder: the sweep's 1,000 runs would keep about .* more "
                                        r"than the 1 MiB free at"):
        check_sweep(cfg, memory=2**30, free=2**20, shape=one_cpu)
    two = cfg.model_copy(update={"resources": cfg.resources.model_copy(update={"workers": 2})})
    with pytest.raises(UserError, match=r"^resources\.workers: 2 workers .* at most 1 fit"):
        check_sweep(two, memory=2**30, free=2**30, shape=one_cpu)
    check_sweep(two, memory=2**30, free=2**30, shape=shape_of([{"CPU": 1}, {"CPU": 1}]))  # one a node


# -- the workers a cluster can place ----------------------------------------------------------------
def test_workers_are_placed_by_the_strategy_on_the_nodes_there_are():
    from rnnray.runtime.resources import check_workers, placeable, shape_of

    dgx = shape_of([{"CPU": 128, "GPU": 8}, {"CPU": 128, "GPU": 8}])
    assert placeable(4, 1, "PACK", dgx) == 16 and placeable(4, 1, "STRICT_PACK", dgx) == 8
    assert placeable(4, 1, "STRICT_SPREAD", dgx) == 2 and placeable(4, 0.5, "SPREAD", dgx) == 32
    assert placeable(4, 9, "PACK", dgx) == 0  # no node has 9 GPUs
    check_workers(16, 4, 1, "PACK", dgx)
    with pytest.raises(UserError, match=r"^workers: 17 workers of 4 CPUs and 1 GPU each \(PACK\) .* at most 16 fit; "
                                        r"lower workers or gpus_per_worker$"):
        check_workers(17, 4, 1, "PACK", dgx)
    laptop = shape_of([{"CPU": 2}])
    check_workers(1, 4, 1, "PACK", laptop)  # cut to the largest node, GPUs dropped (fit_request's notes), as it runs
    check_workers(4, 0.5, 0, "PACK", laptop)
    with pytest.raises(UserError, match=r"^resources\.workers: 3 workers of 1 CPU each .* \(2 CPUs on 1 node\)"):
        check_workers(3, 1, 0, "PACK", laptop, "resources.")


def test_fit_refuses_workers_the_cluster_cannot_place(ray_session, tiny_fl_zoo, tmp_path):
    """The Python API: fit() answers at once instead of waiting forever (this session's instance has 2 CPUs)."""
    from rnnray.config import TrainConfig
    from rnnray.train import fit

    cfg = TrainConfig(zoo=tiny_fl_zoo.path, encoder_hparams={"width": 8, "depth": 2}, workers=3, batch_size=6, steps=1,
                      storage_path=str(tmp_path / "out"))
    with pytest.raises(UserError, match=r"^workers: 3 workers of 1 CPU each \(PACK\) can never run at once"):
        fit("flat", cfg)
    assert not (tmp_path / "out").exists()


# -- one run: the train command ---------------------------------------------------------------------
@pytest.fixture()
def train_file(tiny_fl_zoo, tmp_path):
    p = tmp_path / "train.yaml"
    p.write_text(f"zoo: {tiny_fl_zoo.path}\nsteps: 10\nbatch_size: 8\nemulator_hidden: 16\n"
                 f"encoder_hparams: {{width: 8, depth: 2}}\nstorage_path: {tmp_path / 'out'}\n")
    return p


@pytest.mark.parametrize("overrides,needle", [
    (["batch_size=64"], "batch_size: a batch of 64 snapshots is larger than the train split it samples from (18 snapshots)"),
    ([f"workers={TOO_MANY_WORKERS}", f"batch_size={TOO_MANY_WORKERS}"],
     f"workers: {TOO_MANY_WORKERS} workers of 1 CPU each (PACK) can never run at once on this cluster"),
    (["emulator_hidden=10000000"], "emulator_hidden: a training worker would hold about"),
    (["steps=100000000000000"], "steps: a training worker would hold about"),
])
def test_a_run_that_cannot_run_is_refused_before_ray_starts(train_file, tmp_path, overrides, needle, no_ray_here):
    r = _cli("rnnray.train", str(train_file), "--encoder", "flat", *[a for o in overrides for a in ("--set", o)],
             ray_tmp=no_ray_here)
    _refused(r, needle)
    assert not (tmp_path / "out").exists()


def test_a_run_on_a_cluster_is_checked_right_after_connecting(train_file, tmp_path, address):
    r = _cli("rnnray.train", str(train_file), "--encoder", "flat", "--set", "workers=4", "--address", address)
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert r.returncode == 2 and len(errors) == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert errors[0].startswith("error: workers: 4 workers of 1 CPU each (PACK) can never run at once on this "
                                "cluster (2 CPUs on 1 node)"), errors[0]
    assert "training flat" not in r.stdout and not (tmp_path / "out").exists()


def test_the_planned_split_is_the_built_zoos(tiny_fl_zoo, tiny_mnist_zoo):
    """A zoo config's split, planned before the build, has the train rows its built zoo has (both kinds)."""
    from rnnray.train import ZooPlan
    from rnnray.train.preflight import planned_train_rows, split_rows

    # (the authors' split truncates: six tasks leave zoo B's tiny zoo no validation task under it)
    for cfg, scheme in ((tiny_fl_zoo, "ours"), (tiny_fl_zoo, "authors"), (tiny_mnist_zoo, "ours")):
        zoo = ZooPlan.open(cfg.path, 0, split=scheme)
        assert planned_train_rows(cfg, 0, scheme) == split_rows(zoo.shards, zoo.runs)["train"] > 0, (cfg.kind, scheme)


def test_the_largest_need_names_the_field():
    from rnnray.config import TrainSettings
    from rnnray.train.preflight import check_worker, worker_needs

    base = TrainSettings(batch_size=64, emulator_hidden=256, steps=1000, eval_every=100)
    for field, value, budget in [("batch_size", 10**5, 10**4), ("emulator_hidden", 10**5, 10**4),
                                 ("budget", 256, 10**10), ("steps", 10**13, 10**4)]:
        settings = base.model_copy(update={field: value}) if field != "budget" else base
        needs = worker_needs("formal_languages", settings, budget)
        check_worker(needs, memory=sum(needs.values()))  # exactly enough
        with pytest.raises(UserError, match=rf"^train\.{field}: a training worker would hold about"):
            check_worker(needs, memory=sum(needs.values()) - 1, prefix="train.")


def test_the_emulators_size_is_counted_from_its_shapes():
    from rnnray.emulation.emulator import Emulator, emulator_params

    for kind in ("formal_languages", "mnist"):
        for hidden in (1, 16, 256):
            assert emulator_params(kind, hidden) == sum(p.numel() for p in Emulator(kind, hidden).parameters())


# -- the label oracles and the evaluation -----------------------------------------------------------
@pytest.mark.parametrize("args,changes,needle", [
    (["--seeds", "1000000000"], {}, "--seeds: a training worker would hold about"),
    ([], {"train": {"batch_size": 32}}, "train.batch_size: a batch of 32 snapshots is larger than the train split"),
])
def test_oracles_that_cannot_run_are_refused_before_they_train(args, changes, needle, tiny_fl_zoo, tmp_path):
    out = tmp_path / "oracles.json"
    r = _cli("rnnray.label_oracle", str(_sweep_file(tmp_path, tiny_fl_zoo.path, **changes)), "--out", str(out), *args)
    _refused(r, needle)
    assert not out.exists() and "oracle constant" not in r.stdout


@pytest.mark.parametrize("seeds,needle", [(["-1"], "--seeds: -1 is not a seed"), (["0", "1", "0"], "--seeds: seed 0 is listed twice"),
                                          (["9223372036854775808"], "is not a seed")])
def test_predictor_seeds_are_checked_before_anything_is_read(seeds, needle, tmp_path):
    r = _cli("rnnray.evaluate", str(tmp_path / "results"), "--seeds", *seeds)
    _refused(r, needle)
    assert list(tmp_path.iterdir()) == []


def test_a_sweep_files_predictor_seeds_are_checked_as_it_is_read(tiny_fl_zoo, tmp_path):
    from rnnray.sweep import load_sweep

    with pytest.raises(UserError, match=r"downstream\.seeds: .*seed 1 is listed twice"):
        load_sweep(_sweep_file(tmp_path, tiny_fl_zoo.path, downstream={"seeds": [0, 1, 1]}))


# -- the benchmarks ---------------------------------------------------------------------------------
@pytest.mark.parametrize("args,needle", [
    (["zoo", "--ks", "0"], "--ks: chunk sizes must be at least 1"),
    (["zoo", "--ks", "1,x"], "--ks: '1,x' is not a comma-separated list of whole numbers"),
    (["zoo", "--ks", "1000000000"], "--ks: K = 1000000000 RNNs in lockstep would hold about"),
    (["zoo", "--reps", "0"], "--reps: must be at least 1 (got 0)"),
    (["zoo", "--steps", "-1"], "--steps: must be at least 1 (got -1)"),
    (["zoo", "--threads", "0"], "--threads: must be at least 1 (got 0)"),
    (["train", "--batch", "1e9"], "argument --batch: invalid int value: '1e9'"),
    (["train", "--batch", "1000000000"], "--batch: the benchmark would hold about"),
    (["train", "--emulator-hidden", "0"], "--emulator-hidden: must be at least 1 (got 0)"),
    (["train", "--warmup", "-1"], "--warmup: must be at least 0 (got -1)"),
    (["train", "--budget", "nan"], "--budget: must be a finite number of parameters"),
    (["train", "--budget", "1e13"], "--budget: the benchmark would hold about"),
    (["train", "--encoders", "dwz"], "--encoders: unknown encoder 'dwz'"),
    (["train", "--zoo-kind", "mnsit"], "argument --zoo-kind: invalid choice: 'mnsit'"),
    (["train", "--device", "nonsense"], "--device 'nonsense': not a torch device"),
    (["profile", "--batch", "0"], "--batch: must be at least 1 (got 0)"),
    (["profile", "--device", "meta"], "--device 'meta': rnnray computes on cpu, cuda or mps"),
    (["device", "OUT", "--device", "nonsense"], "--device 'nonsense': not a torch device"),
])
def test_bench_flags_are_one_line_each(args, needle, tmp_path):
    r = _cli("rnnray.bench", *[str(tmp_path / "out") if a == "OUT" else a for a in args], cwd=tmp_path)
    _refused(r, needle)
    assert r.stdout == "" and list(tmp_path.iterdir()) == []


def test_bench_device_proves_its_out_folder(tmp_path):
    """The GPU check's folder: a file there, or a folder under a file, is one line before any check runs."""
    (tmp_path / "f").write_text("x")
    _refused(_cli("rnnray.bench", "device", str(tmp_path / "f"), "--device", "cpu", "--quick"), "out ")
    r = _cli("rnnray.bench", "device", str(tmp_path / "f" / "out"), "--device", "cpu", "--quick")
    _refused(r, f"out {tmp_path / 'f' / 'out'}: cannot be written (Not a directory)")
    assert r.stdout == "" and [p.name for p in tmp_path.iterdir()] == ["f"]


# -- NCCL ranks on one GPU --------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["auto", "nccl"])
def test_ddp_workers_that_could_share_a_gpu_under_nccl_are_refused_before_ray(backend, tiny_fl_zoo, tmp_path, no_ray_here):
    """A fractional GPU per worker lets Ray put two ranks of one run on one GPU, which NCCL cannot run:
    refused in the file (sweep and train), before Ray starts; one worker per run may share, and gloo may."""
    from rnnray.config import TrainConfig
    from rnnray.sweep import load_sweep

    needle = "gpus_per_worker: 0.5 GPU per worker lets Ray place two of a run's 2 DDP workers on one GPU"
    res = {"workers": 2, "gpus_per_worker": 0.5, "process_group_backend": backend}
    r = _cli("rnnray.sweep", str(_sweep_file(tmp_path, tiny_fl_zoo.path, resources=res)), "--quiet", ray_tmp=no_ray_here)
    _refused(r, f"resources.{needle}")
    train_file = tmp_path / "train.yaml"
    train_file.write_text(yaml.safe_dump({"zoo": tiny_fl_zoo.path, "batch_size": 8, **res}))
    _refused(_cli("rnnray.train", str(train_file), "--encoder", "flat", ray_tmp=no_ray_here), needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.yaml", "train.yaml"]
    path = _sweep_file(tmp_path, tiny_fl_zoo.path)
    assert load_sweep(path, ["resources.workers=2", "resources.gpus_per_worker=0.5",
                             "resources.process_group_backend=gloo"]).resources.gpus_per_worker == 0.5
    assert load_sweep(path, ["resources.gpus_per_worker=0.25"]).resources.workers == 1  # trials share GPUs
    assert TrainConfig(zoo="z", workers=2, gpus_per_worker=1).workers == 2  # whole GPUs: ranks apart
    with pytest.raises(ValueError, match="two of a run's 3 DDP workers"):
        TrainConfig(zoo="z", workers=3, gpus_per_worker=0.9, batch_size=9)
