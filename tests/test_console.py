"""The quiet console's line filter, on lines copied from a real sweep's console: Ray's routine
lines are hidden (and kept in the hidden log), everything that could signal a failure is shown."""

from __future__ import annotations

import io
import sys

import pytest

from rnnray.runtime.console import FilteredStream, _HiddenLog, active, hide_into, is_noise, quiet_console

ROUTINE = [
    "2026-12-01 23:48:31,082\tINFO streaming_executor.py:215 -- Starting execution of Dataset zoo zoo: formal_languages",
    "2026-12-01 23:48:41,554\tINFO logging_progress.py:174 -- ======= Running Dataset: zoo zoo =======",
    "2026-12-01 23:50:12,983\tINFO tune.py:1007 -- Wrote the latest version of all result files and experiment state",
    "[2026-12-01 23:48:31,153 E 11513 11513] core_worker.cc:2465: Actor with class name: 'MapWorker(MapBatches(ZooTrainer))' "
    "and ID: 'b85901b69fc65a1d9c1775c701000000' has constructor arguments in the object store and max_restarts > 0. If the arguments",
    "\x1b[36m(TrainController pid=12293)\x1b[0m [2026-12-01 23:49:52,155 E 12293 12326] core_worker.cc:2465: Actor with class "
    "name: 'PreemptionWatcher' and ID: 'b98d' has constructor arguments in the object store and max_restarts > 0",
    "\x1b[36m(TrainController pid=12293)\x1b[0m Requesting resources: {'CPU': 1.0} * 1",
    "\x1b[36m(TrainController pid=12293)\x1b[0m Attempting to start training worker group of size 1 with the following resources",
    "\x1b[36m(TrainController pid=12293)\x1b[0m Started training worker group of size 1: ",
    "\x1b[36m(TrainController pid=12293, ip=10.0.0.7)\x1b[0m - (ip=192.0.2.2, pid=12373) world_rank=0, local_rank=0, node_rank=0",
    "\x1b[36m(RayTrainWorker pid=12373)\x1b[0m Setting up process group for: env:// [rank=0, world_size=1]",
    "\x1b[36m(PlacementGroupCleaner pid=12578)\x1b[0m Detected that the Ray Train controller actor (b591f5998a8d0cd0e957eaa501000000) "
    "is dead. Cleaning up placement group = [PlacementGroupID(7f24771b97614f366376d4f3e29d01000000)] created by this run.",
    "\x1b[36m(RayTrainWorker pid=12969)\x1b[0m Checkpoint successfully created at: Checkpoint(filesystem=local, path=/x)",
    "\x1b[36m(RayTrainWorker pid=12969)\x1b[0m Reporting training result 2: TrainingReport(checkpoint=None, metrics={})",
    "\x1b[36m(DatasetManager pid=12445)\x1b[0m /v/lib/python3.11/site-packages/ray/data/_internal/execution/interfaces/"
    "execution_options.py:436: RayDeprecationWarning: `ExecutionOptions.exclude_resources` is deprecated",
    "\x1b[36m(DatasetManager pid=12445)\x1b[0m   self.exclude_resources = exclude_resources",
    "\x1b[36m(SplitCoordinator pid=12502)\x1b[0m Starting execution of Dataset train_0357. Full logs are in /tmp/ray/x",
    "\x1b[36m(SplitCoordinator pid=12502)\x1b[0m Execution plan of Dataset train_0357: InputDataBuffer[Input] -> ...",
    "\x1b[36m(SplitCoordinator pid=12502)\x1b[0m Progress bars disabled. To enable, set `ray.data.DataContext...`",
    "\x1b[36m(RayTrainWorker pid=12373)\x1b[0m \u2714\ufe0f  Dataset ood_0357 execution finished in 0.24 seconds",
    "\x1b[36m(EmulationTrial(stats) pid=12739)\x1b[0m Estimated parquet reader batch size at 1234 rows",
    "2026-12-01 23:56:16,852\tWARNING __init__.py:28 -- Progress bars disabled. To enable, set `ray.data.DataContext.get_current()`",
    "To visualize your results with TensorBoard, run: `tensorboard --logdir /tmp/ray/session_x/artifacts/flat/driver_artifacts`",
]

KEPT = [
    "\x1b[36m(RayTrainWorker pid=12969)\x1b[0m step      20  train 0.5535  val 0.5468  ood 0.5477  best val 0.5468 @ 20  19.9 steps/s",
    "flat: trial 1c59c423 failed: diverged: non-finite loss at step 20 (lr 1e+30)",
    "2026-12-01 23:50:12,921\tWARNING optuna_search.py:571 -- The value nan is not acceptable",
    "2026-12-01 23:50:12,921\tERROR tune_controller.py:1331 -- Trial task failed for trial flat_1c59c423",
    "\x1b[36m(RayTrainWorker pid=1)\x1b[0m Traceback (most recent call last):",
    "\x1b[36m(RayTrainWorker pid=1)\x1b[0m RuntimeError: CUDA error: out of memory",
    "\x1b[36m(RayTrainWorker pid=1)\x1b[0m   File \"/work/rnnray/train/loop.py\", line 10, in run",
    "[2026-12-01 23:49:52,155 E 12293 12326] core_worker.cc:1234: Failed to register worker to Raylet",
    "/work/main/rnnray/figures.py:77: UserWarning: something of ours",
    "/site-packages/torch/nn/modules/module.py:1: DeprecationWarning: not Ray's",
    "View detailed results here: /tmp/r/tune/flat",
    "Trial status: 1 RUNNING",
]


@pytest.mark.parametrize("line", ROUTINE)
def test_ray_routine_lines_are_noise(line):
    assert is_noise(line)


@pytest.mark.parametrize("line", KEPT)
def test_lines_that_may_matter_are_kept(line):
    assert not is_noise(line)


def test_filtered_stream_passes_lines_and_holds_partial_ones(tmp_path):
    out, hidden = io.StringIO(), _HiddenLog()
    s = FilteredStream(out, hidden)
    s.write("kept one\n" + ROUTINE[5] + "\npart")
    assert out.getvalue() == "kept one\n"
    s.write("ial\n")
    assert out.getvalue() == "kept one\npartial\n"
    s.write("tail without newline")
    s.flush()
    assert out.getvalue().endswith("tail without newline")
    hidden.attach(tmp_path / "h.log")  # what was hidden before the file was named is written first
    s.write(ROUTINE[0] + "\n")
    hidden.close()
    assert (tmp_path / "h.log").read_text() == ROUTINE[5] + "\n" + ROUTINE[0] + "\n"


def test_quiet_console_wraps_and_restores_and_verbose_leaves_it(tmp_path, capsys):
    before = sys.stdout
    with quiet_console(False):
        assert sys.stdout is before and not active()
    with quiet_console():
        assert active() and sys.stdout is not before
        print(ROUTINE[1])
        print("ours")
        hide_into(tmp_path / "console-hidden.log")
    assert sys.stdout is before and not active()
    assert capsys.readouterr().out == "ours\n"
    assert (tmp_path / "console-hidden.log").read_text() == ROUTINE[1] + "\n"
