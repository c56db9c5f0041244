"""``python -m rnnray.bench device OUT_DIR``: the GPU check, one short run, no Ray needed.

A GPU machine for checks is lent only at times and for minutes, and it may hold torch but not Ray.
So every CUDA path that does not need Ray is exercised here in one go, and each result is written
to ``OUT_DIR`` (``device-check.json`` and ``device-check.md``, ready for ``docs/BENCHMARKS.md``)
as soon as its section ends, so a run cut short still leaves what it measured:

a. ``rnn.run`` forward and gradients on the device against a float64 CPU reference, K = 1, 64, 1024;
b. the batched zoo trainer against ``torch.nn.LSTM`` + ``torch.optim.AdamW``, 3 RNNs (:mod:`rnnray.zoo.check`);
c. ``bench zoo`` at K = 64 and 1024 against the one-at-a-time loop (target: ``speedup_k1024`` >= 100);
d. ``bench train`` at the paper presets, zoo A and zoo B (ms/step, TFLOP/s, share of the matmul rate);
e. a zoo built in this process on the device, then a 200-step ``train_local`` run that must lower its loss;
f. trials sharing the device (fractional ``gpus_per_worker``): the paper's six encoders' trials in 1, 2
   and 4 slots, each slot a process of its own as a Ray worker is, taken from one queue and, for
   comparison, encoder by encoder; the slot utilisation is :func:`rnnray.sweep.timeline.utilisation`
   over the recorded starts and ends, and the throughput is trials per second against one slot.
   Tune itself needs Ray, which such a machine lacks: this runs the schedule's shape and its
   measurement on the device, not Tune's scheduler (``bench schedule`` does that, on a simulated node).

TF32 is off throughout (PyTorch's default for float32 matrix products; cuDNN's is on and is turned
off), so the float32 tolerances of the CPU tests apply unchanged.
"""

from __future__ import annotations

import contextlib
import os
import platform
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch

from ..runtime.machine import device_name

WHAT_TO_BRING = """\
what the machine needs: Python 3.11 or 3.12 with torch (CUDA build), numpy, pyarrow and pyyaml
(a bare GPU image usually has them), plus pydantic, which is brought as wheels; not Ray, Optuna,
torchvision or an install of rnnray (the working tree on PYTHONPATH is enough).

on a machine with network access, in the repository root, fetch the wheels once:
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \\
    --platform manylinux_2_17_x86_64 -d .whl pydantic==2.14.4 pydantic-core==2.50.5 \\
    annotated-types==0.8.0 typing-inspection==0.4.5

then on the GPU machine, in a copy of the repository with .whl/, the one command line:
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && \\
    PYTHONPATH=.:/tmp/site python3 -m rnnray.bench device OUT_DIR

its sizes are chosen to finish within 8 minutes on one GPU (on an NVIDIA H200: 3.5 minutes); --quick is a CPU
rehearsal of every step at small sizes (the test suite runs it with Ray made unimportable)."""

RNN_KS = (1, 64, 1024)
RNN_TOLERANCE = 1e-4  # largest float32 error, relative to the largest reference value
TRAIN_STEPS = 200


def add_parser(sub) -> None:
    import argparse

    p = sub.add_parser("device", help="the GPU check: CUDA correctness and speed in one short run, without Ray",
                       description="\n\n".join(__doc__.split("\n\n")[1:4]), epilog=WHAT_TO_BRING,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="folder for device-check.json and device-check.md (created)")
    p.add_argument("--device", default="cuda", help="torch device to check (default cuda; cpu for a rehearsal)")
    p.add_argument("--quick", action="store_true", help="small sizes: checks that every step runs, not the figures")
    p.add_argument("--sections", default="abcdef", help="the sections' letters to run (default abcdef: all)")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from ..cli import friendly_errors
    from ..errors import UsageError
    from ..runtime.machine import check_device

    with friendly_errors():
        check_device(args.device)
        device = torch.device(args.device)
        out = Path(args.out)
        if not args.sections or set(args.sections) - set("abcdef"):
            raise UsageError(f"--sections: letters among abcdef, got {args.sections!r}")
        if out.exists() and not out.is_dir():
            raise UsageError(f"out {out}: is a file, not a folder")
        probe = out / f".rnnray-write-test-{os.getpid()}"
        try:  # proven by trying (os.access says yes to root everywhere); this check runs without pyarrow or Ray
            out.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise UsageError(f"out {out}: cannot be written ({e.strerror})") from None
    report = run_check(device, out, quick=args.quick, log=lambda s: print(s, flush=True), only=args.sections)
    print(f"wrote {out / 'device-check.json'} and {out / 'device-check.md'}")
    return 0 if report["passed"] else 1


@contextlib.contextmanager
def _no_tf32():
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def run_check(device: torch.device, out: Path, quick: bool = False, log: Callable[[str], None] = print,
              only: str = "") -> dict:
    """Every section (or those whose letters are in ``only``) in turn; a section that raises is
    recorded as failed and the rest still run."""
    report: dict[str, Any] = {
        "check": "rnnray device check", "device": device_name(device), "device_type": device.type,
        "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
        "quick": quick, "tf32": False, "sections": {},
    }
    sections = [("a_rnn_vs_float64", rnn_vs_float64), ("b_zoo_trainer_vs_torch", zoo_trainer_vs_torch),
                ("f_shared_device", shared_device), ("c_bench_zoo", bench_zoo), ("d_bench_train", bench_train),
                ("e_train_local", train_local_run)]  # the short ones first: a run cut short keeps them
    if only:
        sections = [(n, fn) for n, fn in sections if n[0] in only]
    t_all = time.perf_counter()
    with _no_tf32():
        for name, fn in sections:
            log(f"== {name} ...")
            t0 = time.perf_counter()
            try:
                result = fn(device, quick, log)
            except Exception as e:  # noqa: BLE001 - recorded, and the other sections still run
                result = {"passed": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
                log(result["traceback"])
            result["seconds"] = round(time.perf_counter() - t0, 1)
            report["sections"][name] = result
            log(f"   {'passed' if result.get('passed') else 'FAILED'} in {result['seconds']} s")
            report["seconds"] = round(time.perf_counter() - t_all, 1)
            report["passed"] = all(s.get("passed") for s in report["sections"].values())
            _write(report, out)
    return report


# ------------------------------------------------------------------------------------------------
# a. rnn.run against float64 on the CPU


def rnn_vs_float64(device: torch.device, quick: bool, log) -> dict:
    from .. import rnn
    from ..weights import FORMAL_LANGUAGES

    layout, batch, steps = FORMAL_LANGUAGES, 16, 41
    rows = []
    for k in ((1, 4) if quick else RNN_KS):
        g = torch.Generator().manual_seed(k)
        flat = (torch.rand(k, layout.num_params, generator=g) - 0.5) * 0.5
        x = torch.randn(k, batch, steps, layout.input_size, generator=g)
        w = torch.randn(k, batch, steps, layout.output_size, generator=g)
        res = {}
        for where, dtype in (("ref", torch.float64), ("dev", torch.float32)):
            on = torch.device("cpu") if where == "ref" else device
            f = flat.to(on, dtype).clone().requires_grad_(True)  # stacked weights, as the zoo trainer holds them
            xx = x.to(on, dtype).requires_grad_(True)
            y = rnn.run(layout, layout.split(f), xx)
            g_flat, g_x = torch.autograd.grad((y * w.to(on, dtype)).sum(), [f, xx])
            res[where] = [t.detach().double().cpu() for t in (y, *layout.split(g_flat).values(), g_x)]
        names = ["output", *layout.names, "inputs"]
        errs = {n: float((d - r).abs().max() / r.abs().max().clamp_min(1e-30)) for n, d, r in zip(names, res["dev"], res["ref"])}
        worst = max(errs, key=errs.get)
        rows.append({"k": k, "relative_error": errs, "worst": worst, "passed": errs[worst] <= RNN_TOLERANCE})
        log(f"   K={k}: largest relative error {errs[worst]:.1e} ({worst})")
    return {"tolerance": RNN_TOLERANCE, "batch": batch, "steps": steps, "runs": rows,
            "passed": all(r["passed"] for r in rows)}


# ------------------------------------------------------------------------------------------------
# b. the zoo trainer against torch.nn.LSTM + AdamW


def zoo_trainer_vs_torch(device: torch.device, quick: bool, log) -> dict:
    from ..zoo.check import RECIPES, TOLERANCES, max_weight_difference

    rows = []
    cases = [(k, torch.float32) for k in RECIPES] + [("formal_languages", torch.float64)]
    for kind, dtype in cases:
        steps, atol = TOLERANCES[dtype]
        n = 5 if quick else steps[kind]
        worst = max(max_weight_difference(kind, n, dtype, device).values())
        rows.append({"kind": kind, "dtype": str(dtype).removeprefix("torch."), "steps": n, "max_difference": worst,
                     "tolerance": atol, "passed": worst <= atol})
        log(f"   {kind} {rows[-1]['dtype']}, {n} steps: weights within {worst:.1e} (tolerance {atol:.0e})")
    return {"cases": rows, "passed": all(r["passed"] for r in rows)}


# ------------------------------------------------------------------------------------------------
# c., d. the benchmarks


def bench_zoo(device: torch.device, quick: bool, log) -> dict:
    from .zoo import bench_zoo as run

    ks = [4] if quick else [64, 1024]
    r = run(device, torch.get_num_threads(), ks, steps=2 if quick else None, reps=1 if quick else 3,
            warmup=1 if quick else 3, log=lambda s: None)
    top = f"speedup_k{ks[-1]}"
    r["passed"] = True if quick else r[top] >= 100  # the zoo issue's target on a GPU
    log(f"   {top} = {r[top]:.1f}x ({r['batched'][str(ks[-1])]['rnn_steps_per_s']:.0f} RNN-steps/s)")
    return r


def bench_train(device: torch.device, quick: bool, log) -> dict:
    from .train import benchmark
    from ..kinds import KIND_NAMES
    from ..runtime.machine import matmul_gflops

    rate = matmul_gflops(device)
    runs = []
    for kind in KIND_NAMES:
        r = benchmark(["flat"] if quick else None, kind=kind, batch=8 if quick else 64, emulator_hidden=16 if quick else 256,
                      steps=1 if quick else 20, warmup=1 if quick else 3, reps=1 if quick else 3, device=device,
                      matmul_rate=rate)
        runs.append(r)
        log("   " + kind + ": " + ", ".join(f"{n} {ms:.1f} ms" for n, ms in r["ms_per_step"].items()))
    return {"matmul_gflops": rate, "runs": runs, "passed": True}


# ------------------------------------------------------------------------------------------------
# e. a zoo and an emulation run on the device


def train_local_run(device: torch.device, quick: bool, log) -> dict:
    from ..config import TrainConfig, parse_zoo
    from ..train import train_local
    from ..zoo import build

    with tempfile.TemporaryDirectory(prefix="rnnray-device-") as d:
        zoo = parse_zoo({"kind": "formal_languages", "path": f"{d}/zoo", "runs": 12, "steps": 40 if quick else 200,
                         "seed": 3, "snapshot_steps": [0, 20, 40] if quick else [0, 100, 200], "accuracy_samples": 200,
                         "stored_sequences": 20, "resources": {"chunk": 12}})
        t0 = time.perf_counter()
        manifest = build(zoo, progress=False, in_process=str(device))
        zoo_s = time.perf_counter() - t0
        steps = 40 if quick else TRAIN_STEPS
        encoder = "flat" if quick else "dws"  # dws at its paper preset: the costliest body, on the device
        cfg = TrainConfig(zoo=zoo.path, steps=steps, eval_every=steps // 4, batch_size=32, emulator_hidden=64,
                          lr=1e-3, eval_sequences=4, storage_path=f"{d}/runs")
        res = train_local(encoder, cfg, device=str(device))
    losses = [h["train_loss"] for h in res.history]
    log(f"   zoo of {manifest['rows']} rows in {zoo_s:.1f} s on {manifest['shards'][0]['device']}; "
        f"{encoder} train loss {losses[0]:.4f} -> {losses[-1]:.4f} over {steps} steps")
    return {"zoo_rows": manifest["rows"], "zoo_seconds": round(zoo_s, 1), "zoo_device": manifest["shards"][0]["device"],
            "encoder": encoder, "steps": steps, "train_loss": losses, "val_loss": [h["val_loss"] for h in res.history],
            "steps_per_s": res.history[-1]["steps_per_s"], "passed": losses[-1] < losses[0]}


# ------------------------------------------------------------------------------------------------
# f. trials sharing the device, from one queue and encoder by encoder

SHARED_SLOTS = (1, 4)
SHARED_TRIALS = 3  # per encoder: as the main job's 3 search trials, which do not fill its slots evenly


def _shared_trial(task: tuple) -> dict:
    """One trial in a slot's own process (spawned, as a Ray worker is): a short emulation run."""
    encoder, seed, zoo_path, steps, device = task
    from ..config import TrainConfig
    from ..train import train_local

    start = time.time()
    cfg = TrainConfig(zoo=zoo_path, steps=steps, eval_every=steps, batch_size=32, emulator_hidden=64, lr=1e-3,
                      eval_sequences=4, seed=seed)
    train_local(encoder, cfg, device=device)
    return {"session": "", "encoder": encoder, "start": start, "end": time.time(), "pid": os.getpid()}


def _warm(_):
    import torch as t  # each slot's CUDA context is made before the clock starts, as a Ray worker's is

    t.zeros(1, device=_WARM_DEVICE)
    return os.getpid()


_WARM_DEVICE = "cpu"


def _init_slot(device: str) -> None:
    global _WARM_DEVICE
    _WARM_DEVICE = device


def shared_device(device: torch.device, quick: bool, log) -> dict:
    import multiprocessing as mp

    from ..config import parse_zoo
    from ..encoders.catalog import ENCODER_NAMES, PAPER_PARAMS
    from ..sweep.timeline import utilisation
    from ..zoo import build

    encoders = ["flat", "stats"] if quick else [n for n in ENCODER_NAMES if n in PAPER_PARAMS]
    steps, slots_list = (10, (1, 2)) if quick else (40, SHARED_SLOTS)
    rows = []
    with tempfile.TemporaryDirectory(prefix="rnnray-device-") as d:
        zoo = parse_zoo({"kind": "formal_languages", "path": f"{d}/zoo", "runs": 12, "steps": 40, "seed": 3,
                         "snapshot_steps": [0, 20, 40], "accuracy_samples": 100, "stored_sequences": 20,
                         "resources": {"chunk": 12}})
        build(zoo, progress=False, in_process=str(device))
        tasks = [(e, seed, zoo.path, steps, str(device)) for e in encoders for seed in range(SHARED_TRIALS)]
        ctx = mp.get_context("spawn")
        for slots in slots_list:
            with ctx.Pool(slots, initializer=_init_slot, initargs=(str(device),)) as pool:
                pool.map(_warm, range(slots), chunksize=1)
                pool.map(_shared_trial, tasks[:slots], chunksize=1)  # imports and first kernels: not timed
                for schedule in ("per_encoder", "one_queue"):
                    t0 = time.time()
                    if schedule == "one_queue":  # a slot takes the next trial as soon as it is free
                        runs = list(pool.imap_unordered(_shared_trial, tasks, chunksize=1))
                    else:  # the next encoder's trials wait for the last of this one's
                        runs = [r for e in encoders for r in pool.map(_shared_trial, [t for t in tasks if t[0] == e],
                                                                      chunksize=1)]
                    wall = time.time() - t0
                    u = utilisation(runs, slots)
                    rows.append({"slots": slots, "gpus_per_worker": 1 / slots, "schedule": schedule,
                                 "trials": len(runs), "wall_s": round(wall, 2), "trials_per_s": len(runs) / wall,
                                 "utilisation": u["utilisation"]})
                    log(f"   {slots} slot(s), {schedule}: {len(runs)} trials in {wall:.1f} s, "
                        f"utilisation {u['utilisation']:.1%}")
    one = {r["schedule"]: r["trials_per_s"] for r in rows if r["slots"] == 1}
    for r in rows:
        r["throughput_vs_one_slot"] = r["trials_per_s"] / one[r["schedule"]]
    return {"encoders": encoders, "trials_per_encoder": SHARED_TRIALS, "steps": steps, "runs": rows, "passed": True}


# ------------------------------------------------------------------------------------------------
# output


def _write(report: dict, out: Path) -> None:
    from ..results.atomic import atomic_write_json, atomic_write_text

    atomic_write_json(out / "device-check.json", report)
    atomic_write_text(out / "device-check.md", format_markdown(report))


def format_markdown(r: dict) -> str:
    s = r["sections"]
    lines = [f"### Device check: {r['device']}", "",
             f"torch {r['torch']} (CUDA {r['cuda']}), Python {r['python']}, TF32 off; {r['seconds']} s in all; "
             f"{'passed' if r['passed'] else 'FAILED'}{' (quick rehearsal)' if r['quick'] else ''}", "",
             "| check | result | passed | seconds |", "| --- | --- | --- | --- |"]

    def row(name: str, text: Callable[[dict], str]) -> None:
        if name in s:
            sec = s[name]
            body = sec["error"] if "error" in sec else text(sec)
            lines.append(f"| {name} | {body} | {'yes' if sec.get('passed') else 'no'} | {sec['seconds']} |")

    row("a_rnn_vs_float64", lambda x: "; ".join(f"K={q['k']}: {q['relative_error'][q['worst']]:.1e}" for q in x["runs"])
        + f" (largest relative error, tolerance {x['tolerance']:.0e})")
    row("b_zoo_trainer_vs_torch", lambda x: "; ".join(
        f"{c['kind']} {c['dtype']} {c['steps']} steps: {c['max_difference']:.1e}" for c in x["cases"]))
    row("c_bench_zoo", lambda x: ", ".join(f"K={k}: {b['rnn_steps_per_s']:.0f} RNN-steps/s ({b['speedup']:.0f}x)"
                                         for k, b in x["batched"].items())
        + f"; loop {x['loop']['rnn_steps_per_s']:.0f} RNN-steps/s")
    row("e_train_local", lambda x: f"zoo {x['zoo_rows']} rows in {x['zoo_seconds']} s; {x['encoder']} loss "
        f"{x['train_loss'][0]:.4f} -> {x['train_loss'][-1]:.4f} in {x['steps']} steps ({x['steps_per_s']:.1f} steps/s)")
    row("f_shared_device", lambda x: "; ".join(
        f"{q['slots']} slot(s) {q['schedule']}: {q['utilisation']:.0%} busy, {q['throughput_vs_one_slot']:.2f}x"
        for q in x["runs"]) + f" ({len(x['encoders'])} encoders x {x['trials_per_encoder']} trials of {x['steps']} steps;"
        " utilisation, and trials/s against one slot)")
    if "d_bench_train" in s and "runs" in s["d_bench_train"]:
        d = s["d_bench_train"]
        lines += ["", f"Emulation-training step at the presets (matmul {d['matmul_gflops'] / 1e3:.1f} TFLOP/s float32):", "",
                  "| zoo | model | ms/step | TFLOP/s | of matmul | x emulator |", "| --- | --- | --- | --- | --- | --- |"]
        for run in d["runs"]:
            for n, ms in run["ms_per_step"].items():
                ratio = run["ratio_to_emulator_only"].get(n, 1.0)
                lines.append(f"| {run['zoo_kind']} | {n} | {ms:.2f} | {run['gflops'][n] / 1e3:.2f} | "
                             f"{run['matmul_share'][n]:.0%} | {ratio:.2f} |")
    return "\n".join(lines) + "\n"
