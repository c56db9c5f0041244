"""The main job's time ahead, on this machine: the plan's runs times their steps times each
encoder's step cost measured here, plus the zoo.

Measured in this process before Ray starts, with the threads one trial worker (or zoo actor)
gets: a few training steps of every encoder at the sweep's budget, batch and emulator (and of the
emulator alone, which is what a label oracle trains), and a few lockstep steps of one zoo chunk.
The schedule is the sweep's: under ``tune.schedule: one_queue`` every run shares the
``max_concurrent_trials`` slots, so a phase takes its runs' time over the slots; under
``per_encoder``, each encoder's search, then its final seeds, one Tune experiment after the other,
in rounds of up to that many runs (a round lasts as long as its run). Each run pays a start-up
(:data:`STARTUP_AT`). What it leaves out, and so why it is an estimate:
evaluations are counted as a forward pass over the evaluation pairs (about a third of a training
step per batch), the zoo's sampling at snapshots is not counted, and early stopping (ASHA can only
make the search shorter) is not foreseen.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from typing import Any

import torch

EVAL_SHARE = 0.3  # the validation and OOD tasks' share of a zoo's snapshots (SPEC.md 4: 15 % + 15 %)
# A Ray Train run's start-up inside a sweep (worker processes, imports, the zoo's read), measured as
# the median over probe.yaml's runs on two 2-core machines (docs/BENCHMARKS.md, "Starting a run"):
# 78 s at 154 GFLOP/s and 21.5 s at about 350; between and beyond them, the power law through both.
STARTUP_AT = ((154.0, 78.0), (350.0, 21.5))


def run_startup_seconds(matmul_gflops: float) -> float:
    (r0, s0), (r1, s1) = STARTUP_AT
    k = math.log(s1 / s0) / math.log(r1 / r0)
    return s0 * (max(matmul_gflops, 1.0) / r0) ** k


@contextmanager
def _threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def zoo_step_seconds(zoo_cfg) -> float:
    """Seconds of one lockstep training step of one zoo chunk (``resources.chunk`` RNNs)."""
    from .zoo import BatchedRunner

    k = min(zoo_cfg.resources.chunk, zoo_cfg.runs)
    with _threads(zoo_cfg.resources.threads_per_actor):
        runner = BatchedRunner(zoo_cfg.model_dump(mode="json"), k, torch.device("cpu"))
        runner.run(1)
        t = time.perf_counter()
        runner.run(3)
        return (time.perf_counter() - t) / 3


def plan_runs(cfg) -> dict[str, int]:
    """Runs per phase: search trials, final runs (best, and the paper preset unless it is the best:
    counted as two configurations), label oracles, and one each for downstream and report."""
    n_enc = len(cfg.encoders)
    configs = 2 if (cfg.final.paper_preset and cfg.tune.paper_trial and cfg.tune.samples_per_encoder > 1) else 1
    final = n_enc * configs * cfg.final.seeds
    oracles = len(cfg.oracles.modes) * cfg.final.seeds if cfg.final.seeds else 0
    return {"zoo": 1, "search": n_enc * cfg.tune.samples_per_encoder, "final": final, "oracles": oracles,
            "downstream": 1 if cfg.downstream.enabled else 0, "report": 1 if cfg.downstream.enabled else 0}


def estimate_job(cfg, zoo_runs_left: int, kind: str, cpus: float) -> dict[str, Any]:
    """Per phase: runs and estimated seconds on this machine; the step costs they come from."""
    from .train import benchmark

    t = cfg.train
    slots = max(1, min(cfg.tune.max_concurrent_trials, int(cpus // max(cfg.resources.cpus_per_worker * cfg.resources.workers, 1e-9)) or 1))
    from ..runtime.machine import matmul_gflops

    rate = matmul_gflops(torch.device("cpu"))  # the machine's, with every thread: the figure times are quoted with
    with _threads(int(max(1, cfg.resources.cpus_per_worker))):
        bench = benchmark(list(cfg.encoders), kind=kind, budget=cfg.budget, tolerance=cfg.tolerance,
                          batch=t.batch_size, emulator_hidden=t.emulator_hidden, steps=2, warmup=1, reps=1, matmul_rate=rate)
    step = {k: v / 1e3 for k, v in bench["ms_per_step"].items()}  # seconds
    zoo_cfg = cfg.zoo if not isinstance(cfg.zoo, str) else None
    snapshots = len(zoo_cfg.snapshot_steps) if zoo_cfg is not None else 9
    runs_in_zoo = zoo_cfg.runs if zoo_cfg is not None else 1000
    pairs = EVAL_SHARE * runs_in_zoo * snapshots * t.eval_sequences
    evals = t.evaluations

    startup = run_startup_seconds(rate)

    def run_seconds(name: str) -> float:
        train = t.steps * step[name]
        evaluation = evals * math.ceil(pairs / t.eval_batch_size) * step[name] / 3 * (t.eval_batch_size / t.batch_size)
        return startup + train + evaluation

    runs = plan_runs(cfg)
    seconds = {"zoo": 0.0, "downstream": 60.0 if runs["downstream"] else 0.0, "report": 30.0 if runs["report"] else 0.0}
    if zoo_runs_left and zoo_cfg is not None:
        chunks = math.ceil(zoo_runs_left / min(zoo_cfg.resources.chunk, zoo_cfg.runs))
        seconds["zoo"] = chunks * zoo_cfg.steps * zoo_step_seconds(zoo_cfg) / max(1, zoo_cfg.resources.actors)
    per_encoder = {e: run_seconds(e) for e in cfg.encoders}
    if cfg.tune.schedule == "one_queue":  # every run competes for the same slots: each phase's share of them
        rounds = lambda n: n / slots  # noqa: E731
    else:  # one experiment after the other, each in rounds of up to `slots` runs
        rounds = lambda n: math.ceil(n / slots)  # noqa: E731
    seconds["search"] = sum(rounds(cfg.tune.samples_per_encoder) * s for s in per_encoder.values())
    seconds["final"] = sum(rounds(runs["final"] // max(1, len(cfg.encoders))) * s for s in per_encoder.values())
    seconds["oracles"] = rounds(runs["oracles"]) * run_seconds("emulator_only")
    return {"runs": runs, "seconds": seconds, "slots": slots, "step_seconds": step, "run_seconds": per_encoder,
            "startup_seconds": startup, "matmul_gflops": bench["matmul_gflops"], "threads": bench["threads"]}


def plan_lines(est: dict[str, Any], cfg) -> list[str]:
    """The plan, printed at the start of the job."""
    r, s = est["runs"], est["seconds"]
    lines = [f"plan: {len(cfg.encoders)} encoders ({', '.join(cfg.encoders)}) at {cfg.budget:,} parameters; "
             f"{cfg.train.steps} emulation steps a run, {est['slots']} at a time; this machine: "
             f"{est['matmul_gflops']:.0f} GFLOP/s float32 matmul"]
    for phase in ("zoo", "search", "final", "oracles", "downstream", "report"):
        if r[phase] and (phase != "zoo" or s["zoo"]):
            what = {"zoo": "build", "downstream": "evaluation", "report": "report and figures"}.get(phase, f"{r[phase]} runs")
            lines.append(f"  {phase:<10} {what:<20} about {s[phase] / 60:5.1f} min")
    lines.append("  step cost: " + ", ".join(f"{k} {1e3 * v:.0f} ms" for k, v in est["step_seconds"].items())
                 + f"; a run's start-up about {est['startup_seconds']:.0f} s; estimated total about "
                 f"{sum(s.values()) / 60:.0f} min (the zoo's training steps only, not its sampling; evaluations approximated)")
    return lines
