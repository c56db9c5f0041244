"""Paths proven before any work starts (rnnray.paths): every path a command writes is tried, not asked
about (``os.access`` says yes to root everywhere, and these tests run as root), every path it reads is
read, and a folder of another kind is never written into. Through each command's real CLI: one line on
stderr naming the field or the path and the reason, exit code 2, nothing written.

What really fails for root: a path under ``/proc`` (no folder can be made there), a path below a
regular file, an immutable folder (``chattr +i``: even root cannot add to it), a folder on a disk that
takes no more bytes (a file-size limit of 0 in the command's process), ``/proc/self/mem`` (not readable
from its start)."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rnnray.errors import UsageError
from rnnray.paths import PROBE, check_output_dir, check_readable, check_writable

from conftest import PATIENCE, TINY_FL, immutable

ROOT = Path(__file__).resolve().parent.parent


def _cli(module: str, *args: str, full_disk: bool = False) -> subprocess.CompletedProcess:
    """``python -m rnnray.MODULE ARGS``; ``full_disk``: a file-size limit of 0 bytes in that process,
    as a full disk answers (SIGXFSZ ignored, so a write fails with EFBIG instead of killing it)."""
    def no_bytes():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))

    env = {**os.environ, "RAY_AUTH_MODE": "disabled",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", f"rnnray.{module}", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=PATIENCE, preexec_fn=no_bytes if full_disk else None)


def _tree(path: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in sorted(path.rglob("*"))}


def _one_line(r: subprocess.CompletedProcess, *needles: str, code: int = 2) -> str:
    err = r.stderr.strip().splitlines()
    assert r.returncode == code and len(err) == 1 and "Traceback" not in r.stderr, (r.returncode, r.stderr[-3000:])
    assert all(n in err[0] for n in needles), (needles, err[0])
    return err[0]


# ------------------------------------------------------------------------------------------------
# the helper


def test_writable_is_proven_by_trying_and_leaves_nothing(tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "locked").mkdir()
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling")
    before = _tree(tmp_path)
    check_writable(tmp_path / "new" / "deep" / "folder", "results:")  # creatable: passes
    check_writable(tmp_path, "results:")  # existing and writable: passes
    cases = [("/proc/rnnray/zoo", "cannot be created (No such file or directory in /proc)"),
             (tmp_path / "file" / "zoo", f"cannot be written ({tmp_path / 'file'} is a file, not a folder)"),
             (tmp_path / "dangling" / "x", "is a broken symbolic link"),
             (tmp_path / ("n" * 300) / "x", "is longer than 255 bytes")]
    for path, reason in cases:
        with pytest.raises(UsageError) as e:
            check_writable(path, "results:")
        assert str(e.value).startswith(f"results: {path}: ") and reason in str(e.value), str(e.value)
    with immutable(tmp_path / "locked"):
        for path, what in ((tmp_path / "locked", "cannot be written"), (tmp_path / "locked" / "new", "cannot be created")):
            with pytest.raises(UsageError, match=f"{what} \\(Operation not permitted in {tmp_path / 'locked'}\\)"):
                check_writable(path, "path:")
    assert _tree(tmp_path) == before  # no probe left, no folder created
    assert not list(tmp_path.rglob(f"{PROBE}*"))


def test_folders_of_another_kind_are_not_written_into(tiny_fl_zoo, tmp_path):
    results = tmp_path / "results"
    (results / "s-1").mkdir(parents=True)
    (results / "s-1" / "sweep.json").write_text("{}")
    zoo = Path(tiny_fl_zoo.path)
    owners = ("zoo", "sweep", "results")
    cases = [(zoo / "runs", ("zoo", "sweep"), f"is inside a zoo ({zoo})"),
             (zoo / "shards" / "x", ("zoo", "sweep"), f"is inside a zoo ({zoo})"),
             (results / "s-1" / "zoo", owners, f"is inside a sweep folder ({results / 's-1'})"),
             (results / "zoo", owners, f"is inside a results folder ({results})"),
             (results, ("zoo", "sweep"), "is a results folder, which another command wrote")]
    for path, inside, reason in cases:
        with pytest.raises(UsageError) as e:
            check_output_dir(path, "storage_path:", owners=inside)
        assert reason in str(e.value), str(e.value)
    check_output_dir(results / "train", "storage_path:")  # train runs beside sweep folders: allowed


def test_readable_is_proven_by_reading(tmp_path):
    check_readable(tmp_path, "zoo:")
    for path, reason in (("/proc/self/mem", "cannot be read (Input/output error)"), (tmp_path / "none", "does not exist")):
        with pytest.raises(UsageError, match=reason.replace("(", "\\(").replace(")", "\\)")):
            check_readable(path, "zoo:")


# ------------------------------------------------------------------------------------------------
# every command, through its CLI


@pytest.fixture
def place(tmp_path):
    """A folder with a regular file, a results folder holding a sweep folder, and an empty folder that
    a test may make immutable."""
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "results" / "s-1").mkdir(parents=True)
    (tmp_path / "results" / "s-1" / "sweep.json").write_text("{}")
    (tmp_path / "results" / "LATEST").write_text("s-1\n")
    (tmp_path / "locked").mkdir()
    return tmp_path


def _zoo_yaml(place: Path, path) -> Path:
    cfg = place / "zoo.yaml"
    cfg.write_text(yaml.safe_dump({**TINY_FL, "path": str(path)}))
    return cfg


def test_zoo_build_proves_its_path_before_ray(place):
    cases = [("/proc/rnnray/zoo", "path: /proc/rnnray/zoo: cannot be created (No such file or directory in /proc)"),
             (place / "notes.txt" / "zoo", "is a file, not a folder"),
             (place / "results" / "zoo", f"is inside a results folder ({place / 'results'})"),
             (place / "results" / "s-1" / "zoo", "is inside a sweep folder")]
    for path, needle in cases:
        cfg = _zoo_yaml(place, path)
        before = _tree(place)
        _one_line(_cli("zoo", "build", str(cfg)), "path:", needle)
        assert _tree(place) == before
    cfg = _zoo_yaml(place, place / "locked" / "zoo")
    before = _tree(place)
    with immutable(place / "locked"):
        _one_line(_cli("zoo", "build", str(cfg)), "path:", "cannot be created (Operation not permitted")
    assert _tree(place) == before


def test_a_full_disk_before_the_start_is_one_line(place):
    """A file-size limit of 0 in the command's process: the probe cannot be written, so nothing starts."""
    cfg = _zoo_yaml(place, place / "zoo")
    before = _tree(place)
    _one_line(_cli("zoo", "build", str(cfg), full_disk=True), f"path: {place / 'zoo'}: cannot be created (File too large")
    assert _tree(place) == before


def test_another_zoo_at_the_build_path_is_refused_before_ray(tiny_fl_zoo, place):
    """A finished zoo of another recipe, and a part-built one (shards, no manifest): named in one line."""
    other = {**TINY_FL, "seed": TINY_FL["seed"] + 1}
    finished = place / "finished"
    shutil.copytree(tiny_fl_zoo.path, finished)
    partial = place / "partial"
    shutil.copytree(Path(tiny_fl_zoo.path) / "shards", partial / "shards")
    for zoo, needle in ((finished, f"{finished / 'manifest.json'}: a different zoo is already built here"),
                        (partial, "existing zoo was built with a different config (seed differ)")):
        cfg = place / "zoo.yaml"
        cfg.write_text(yaml.safe_dump({**other, "path": str(zoo)}))
        before = _tree(place)
        _one_line(_cli("zoo", "build", str(cfg)), needle)
        assert _tree(place) == before


def test_a_finished_zoo_in_a_read_only_folder_is_only_read(tiny_fl_zoo, tmp_path):
    """A zoo already built is verified, not written: its folder need not be writable."""
    from rnnray.zoo import build

    copy = tmp_path / "zoo"
    shutil.copytree(tiny_fl_zoo.path, copy)
    with immutable(copy):
        manifest = build(tiny_fl_zoo.model_copy(update={"path": str(copy)}), progress=False)
    assert manifest["runs"] == TINY_FL["runs"]


def test_import_and_export_prove_their_out_folder(tiny_fl_zoo, place):
    from test_authors_zoo import write_theirs

    write_theirs(place / "theirs", "mnist")
    before = _tree(place)
    for out, needle in (("/proc/rnnray/zoo", "cannot be created (No such file or directory in /proc)"),
                        (str(place / "notes.txt" / "zoo"), "is a file, not a folder"),
                        (str(place / "results" / "zoo"), "is inside a results folder")):
        _one_line(_cli("zoo", "import-npy", str(place / "theirs"), "--kind", "mnist", "--out", out), f"--out {out}: ", needle)
        _one_line(_cli("zoo", "export-npy", tiny_fl_zoo.path, "--out", out), f"--out {out}: ", needle)
    assert _tree(place) == before


def _sweep_yaml(place: Path, zoo_path, **extra) -> Path:
    data = {"name": "tiny", "results": str(place / "new-results"), "zoo": zoo_path, "encoders": ["flat"], "budget": 20000,
            "train": {"steps": 40, "eval_every": 20, "batch_size": 8, "emulator_hidden": 16, "eval_sequences": 2},
            "tune": {"samples_per_encoder": 1, "scheduler": "none"}, "final": {"seeds": 0},
            "downstream": {"enabled": False}, **extra}
    (place / "s.yaml").write_text(yaml.safe_dump(data))
    return place / "s.yaml"


def test_sweep_proves_results_zoo_and_tracker_folders_before_ray(tiny_fl_zoo, place):
    zoo = tiny_fl_zoo.path
    inline = {**TINY_FL, "path": str(place / "new-results" / "zoo")}
    cases = [({"results": "/proc/rnnray/results"}, "results: /proc/rnnray/results: cannot be created"),
             ({"results": str(Path(zoo) / "results")}, f"results: {Path(zoo) / 'results'}: is inside a zoo ({zoo})"),
             ({"results": str(place / "results" / "s-1" / "r")}, "is inside a sweep folder"),
             ({"zoo": inline}, f"zoo.path: {inline['path']}: is inside results: {place / 'new-results'}"),
             ({"zoo": {**TINY_FL, "path": str(place / "results" / "zoo")}}, "zoo.path:", "is inside a results folder"),
             ({"tracking": {"mlflow": {"tracking_uri": "file:///proc/rnnray/mlruns"}}},
              "tracking.mlflow.tracking_uri: /proc/rnnray/mlruns: cannot be created")]
    for extra, *needles in cases:
        if extra.get("tracking"):
            pytest.importorskip("mlflow")
        cfg = _sweep_yaml(place, zoo, **extra)
        before = _tree(place)
        _one_line(_cli("sweep", str(cfg)), *needles)
        assert _tree(place) == before
    cfg = _sweep_yaml(place, zoo, results=str(place / "locked" / "results"))
    before = _tree(place)
    with immutable(place / "locked"):
        _one_line(_cli("sweep", str(cfg)), "results:", "cannot be created (Operation not permitted")
    assert _tree(place) == before
    cfg = _sweep_yaml(place, zoo)
    before = _tree(place)
    _one_line(_cli("sweep", str(cfg), full_disk=True), "results:", "cannot be created (File too large")
    assert _tree(place) == before


def test_train_storage_path_into_a_zoo_or_a_results_folder_is_refused(tiny_fl_zoo, place):
    zoo = Path(tiny_fl_zoo.path)
    before_zoo = _tree(zoo)
    cfg = place / "train.yaml"
    cfg.write_text(f"zoo: {zoo}\nsteps: 10\nemulator_hidden: 32\n")
    for storage, needle in ((zoo / "runs", f"is inside a zoo ({zoo})"), (zoo, "is a zoo, which another command wrote"),
                            (place / "results", "is a results folder"), ("/proc/rnnray/runs", "cannot be created")):
        before = _tree(place)
        _one_line(_cli("train", str(cfg), "--encoder", "flat", "--set", f"storage_path={storage}"), "storage_path:", needle)
        assert _tree(place) == before
    assert _tree(zoo) == before_zoo


def test_label_oracle_proves_its_out_file_before_the_oracles_train(tiny_fl_zoo, place):
    cfg = _sweep_yaml(place, tiny_fl_zoo.path)
    before = _tree(place)
    for out, needle in (("/proc/rnnray/oracles.json", "cannot be created"), (str(place / "results"), "is a folder, not a file"),
                        (str(place / "results" / "s-1" / "oracles.json"), "is inside a sweep folder"),
                        (str(Path(tiny_fl_zoo.path) / "oracles.json"), "is inside a zoo")):
        _one_line(_cli("label_oracle", str(cfg), "--steps", "2", "--seeds", "1", "--out", out), f"--out {out}: ", needle)
    assert _tree(place) == before


def test_evaluate_and_report_prove_the_sweep_folder_writable(place):
    sweep = place / "results" / "s-1"
    (sweep / "best.json").write_text(json.dumps({"flat": {}}))
    before = _tree(place)
    with immutable(sweep):
        for module in ("evaluate", "report"):
            _one_line(_cli(module, str(sweep)), f"results {sweep}: cannot be written (Operation not permitted")
    assert _tree(place) == before
