"""The core without Ray and Optuna (a GPU machine may have torch but neither): in a subprocess where
importing either raises, the zoo trainer builds a zoo in-process, and ``rnnray.rnn``, every encoder,
the emulator, ``train_local``, the downstream predictors, the benchmarks and the device check run.
The in-process zoo must equal the one Ray's actors built, bit for bit."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from conftest import PATIENCE, TINY_FL

pytestmark = pytest.mark.timeout(3 * PATIENCE)

BLOCK = """
import importlib.abc, sys

class NoRay(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("ray", "optuna"):
            raise ModuleNotFoundError(f"No module named {name!r} (made unimportable)", name=name)
        return None

sys.meta_path.insert(0, NoRay())
"""

SCRIPT = """
import json, sys
import torch
torch.set_num_threads(1)  # as a zoo actor trains (threads_per_actor), so the rows can be compared bit for bit
import rnnray
from rnnray import bench, rnn
from rnnray.config import TrainConfig, parse_zoo
from rnnray.analysis.downstream import PredictorConfig, evaluate_all, representations
from rnnray.encoders import ENCODERS, build_encoder
from rnnray.emulation.emulator import Emulator
from rnnray.train import train_local
from rnnray.weights import FORMAL_LANGUAGES, MNIST
from rnnray.zoo import build, load_table

spec, out = json.loads(sys.argv[1]), sys.argv[2]
manifest = build(parse_zoo(spec), progress=False, in_process="cpu")
for kind, layout in (("formal_languages", FORMAL_LANGUAGES), ("mnist", MNIST)):
    for name in ENCODERS:
        rep = build_encoder(name, layout, kind)(torch.randn(2, layout.num_params) * 0.1)
        assert rep.shape == (2, 16), (name, rep.shape)
    assert Emulator(kind, hidden=8, num_layers=1) is not None
res = train_local("stats", TrainConfig(zoo=spec["path"], steps=20, eval_every=10, batch_size=8, emulator_hidden=16,
                                       eval_sequences=2))
table = load_table(spec["path"])
reps = {"stats": representations(res.model.encoder, table)}
down = evaluate_all(reps, table, "formal_languages", FORMAL_LANGUAGES, seeds=[0], config=PredictorConfig(steps=5))
assert set(down["baselines"]) == {"random", "supervised"}
assert bench.main(["zoo", "--ks", "2", "--steps", "2", "--reps", "1", "--warmup", "1", "--threads", "1", "--json"]) == 0
assert bench.main(["train", "--encoders", "stats", "--zoo-kind", "mnist", "--steps", "1", "--reps", "1", "--warmup", "1",
                   "--batch", "8", "--emulator-hidden", "16", "--json"]) == 0
assert bench.main(["device", out, "--device", "cpu", "--quick"]) == 0
print(json.dumps({"modules": sorted(m for m in sys.modules if m.partition(".")[0] in ("ray", "optuna")),
                  "shard_devices": [s["device"] for s in manifest["shards"]], "train_steps": res.history[-1]["step"]}))
"""


def test_the_core_runs_with_ray_and_optuna_unimportable(tiny_fl_zoo, tmp_path):
    from rnnray.zoo import load_table

    spec = {**TINY_FL, "path": str(tmp_path / "zoo")}
    code = BLOCK + textwrap.dedent(SCRIPT)
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(spec), str(tmp_path / "device-check")],
                          capture_output=True, text=True, timeout=2 * PATIENCE)
    assert proc.returncode == 0, proc.stderr[-4000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["modules"] == []  # nothing of Ray or Optuna was even half-imported
    assert seen["shard_devices"] == ["cpu"] * 2 and seen["train_steps"] == 20
    check = json.loads((tmp_path / "device-check" / "device-check.json").read_text())
    assert check["passed"] and set(check["sections"]) == {"a_rnn_vs_float64", "b_zoo_trainer_vs_torch", "c_bench_zoo",
                                                         "d_bench_train", "e_train_local", "f_shared_device"}
    shared = check["sections"]["f_shared_device"]["runs"]  # one slot per process, both schedules, each trial once
    assert {(r["slots"], r["schedule"]) for r in shared} == {(s, q) for s in (1, 2) for q in ("per_encoder", "one_queue")}
    assert all(r["trials"] == 2 * 3 and 0 < r["utilisation"] <= 1 for r in shared)
    assert (tmp_path / "device-check" / "device-check.md").read_text().startswith("### Device check")
    key = [("run_id", "ascending"), ("step", "ascending")]
    assert load_table(spec["path"]).sort_by(key).equals(load_table(tiny_fl_zoo.path).sort_by(key))


def test_the_ray_blocker_really_blocks():
    """The guard the test above relies on: with it in place, importing Ray fails."""
    proc = subprocess.run([sys.executable, "-c", BLOCK + "import ray"], capture_output=True, text=True, timeout=PATIENCE)
    assert proc.returncode != 0 and "made unimportable" in proc.stderr
