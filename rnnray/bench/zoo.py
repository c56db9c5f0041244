"""``python -m rnnray.bench zoo``: RNN-training steps per second on zoo A's recipe (formal
languages: LSTM 2 x 32 + Linear, batch 32, 41 steps), for the batched lockstep trainer (:class:`rnnray.zoo.trainer.ChunkTrainer`) at
several chunk sizes K, side by side with what a researcher writes by hand: one ``torch.nn.LSTM`` +
``torch.nn.Linear`` + ``torch.optim.AdamW`` trained one RNN at a time, on the same batches. It also
times a large matrix multiply in the same run, so the achieved GFLOP/s can be read against what this
machine's BLAS reaches, and reports the speed-ups. Measurements are interleaved (loop, K = 1, 16, ...,
then again) and repeated; the figure reported is the median repetition (the JSON also has the best).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from typing import Callable

import torch
import torch.nn.functional as F

from ..config import parse_zoo
from ..runtime.machine import device_name, matmul_gflops
from ..runtime.machine import sync as _sync
from ..weights import FORMAL_LANGUAGES, Layout

RNN_STEPS_PER_REP = 1500  # default work per timed repetition: about K * steps RNN-steps


def training_flops(layout: Layout, batch: int, steps: int) -> dict[str, float]:
    """Multiply-add FLOPs of one RNN training step, from the shapes (element-wise work not counted).

    Forward: per time step and sequence, each layer's gates 4H x (input + H) and the Linear H x O;
    the backward costs twice the forward (gradients w.r.t. inputs and w.r.t. weights).
    """
    h = layout.hidden
    per_row = sum(4 * h * ((layout.input_size if l == 0 else h) + h) for l in range(layout.num_layers))
    per_row += h * layout.output_size
    forward = 2.0 * steps * batch * per_row
    return {"forward": forward, "backward": 2 * forward, "total": 3 * forward}


# ------------------------------------------------------------------------------------------------
# the two ways of training


class BatchedRunner:
    """K RNNs in lockstep: one ``ChunkTrainer.step`` = K RNN-training steps."""

    def __init__(self, cfg_dict: dict, k: int, device: torch.device):
        from ..zoo.trainer import ChunkTrainer

        self.k = k
        self.trainer = ChunkTrainer(parse_zoo({**cfg_dict, "runs": k}), list(range(k)), device)
        self.device = device
        self.next_step = 0

    def run(self, n: int) -> None:
        for _ in range(n):
            self.trainer.step(self.next_step)
            self.next_step += 1
        _sync(self.device)


class LoopRunner:
    """The hand-written baseline: one torch.nn.LSTM + Linear + AdamW, one RNN at a time.

    Same initialisation, batches, learning-rate schedule and weight decay as the zoo's run 0.
    """

    def __init__(self, cfg_dict: dict, device: torch.device):
        from ..zoo.trainer import BETAS, EPS, init_params, make_recipe

        self.cfg = parse_zoo({**cfg_dict, "runs": 1})
        self.recipe = make_recipe(self.cfg, [0], device)
        layout = self.recipe.layout
        lstm, linear = layout.to_modules(init_params(layout, self.cfg.seed, 0))
        self.lstm, self.linear = lstm.to(device), linear.to(device)
        params = list(self.lstm.parameters()) + list(self.linear.parameters())
        self.opt = torch.optim.AdamW(params, lr=self.cfg.lr(0), betas=BETAS, eps=EPS, weight_decay=self.cfg.weight_decay)
        self.device = device
        self.next_step = 0

    def run(self, n: int) -> None:
        for _ in range(n):
            step = self.next_step
            x, y = self.recipe.batch(step)
            out = self.linear(self.lstm(x[0])[0])
            loss = F.cross_entropy(out.reshape(-1, out.shape[-1]), y[0].reshape(-1))
            for group in self.opt.param_groups:
                group["lr"] = self.cfg.lr(step)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.next_step += 1
        _sync(self.device)


def _timed(runner, n: int, threads: int) -> dict[str, float]:
    torch.set_num_threads(threads)
    t, c = time.perf_counter(), time.process_time()
    runner.run(n)
    return {"wall_s": time.perf_counter() - t, "cpu_s": time.process_time() - c}


# ------------------------------------------------------------------------------------------------
# `zoo`


def bench_zoo(
    device: torch.device,
    threads: int,
    ks: list[int],
    steps: int | None = None,
    reps: int = 3,
    warmup: int = 3,
    log: Callable[[str], None] = lambda s: None,
) -> dict:
    cfg_dict = {"kind": "formal_languages", "steps": 1_000_000, "seed": 0}
    cfg = parse_zoo({**cfg_dict, "runs": 1})
    flops = training_flops(FORMAL_LANGUAGES, cfg.batch_size, cfg.seq_len - 1)
    torch.set_num_threads(threads)
    log(f"timing a {2048 if device.type == 'cpu' else 8192}^3 float32 matrix multiply ...")
    mm = matmul_gflops(device)

    loop_threads = sorted({1, threads})  # the loop may prefer fewer threads: it gets its best
    runners: dict[str, tuple] = {}
    for t in loop_threads:
        runners[f"loop@{t}"] = (LoopRunner(cfg_dict, device), 1, t)
    for k in ks:
        log(f"setting up K = {k} ...")
        runners[f"K={k}"] = (BatchedRunner(cfg_dict, k, device), k, threads)
    n_steps = {name: steps or max(3, RNN_STEPS_PER_REP // k) for name, (_, k, _) in runners.items()}
    for name, (runner, k, t) in runners.items():  # warm-up: first-touch buffers, kernel build/load
        _timed(runner, warmup, t)
    samples: dict[str, list[dict]] = {name: [] for name in runners}
    for rep in range(reps):
        for name, (runner, k, t) in runners.items():
            s = _timed(runner, n_steps[name], t)
            s["rnn_steps_per_s"] = k * n_steps[name] / s["wall_s"]
            samples[name].append(s)
            log(f"rep {rep + 1}/{reps} {name:>9}: {s['rnn_steps_per_s']:9.1f} RNN-steps/s")
    torch.set_num_threads(threads)

    def summary(name: str) -> dict:
        rates = [s["rnn_steps_per_s"] for s in samples[name]]
        _, k, t = runners[name]
        rate = statistics.median(rates)
        return {
            "k": k,
            "threads": t,
            "steps_per_rep": n_steps[name],
            "rnn_steps_per_s": rate,
            "rnn_steps_per_s_best": max(rates),
            "rnn_steps_per_s_reps": rates,
            "ms_per_step": 1e3 * k / rate,
            "cpu_s_per_rnn_step": statistics.median(s["cpu_s"] / (k * n_steps[name]) for s in samples[name]),
            "gflops": rate * flops["total"] / 1e9,
            "fraction_of_matmul": rate * flops["total"] / 1e9 / mm,
        }

    loops = {t: summary(f"loop@{t}") for t in loop_threads}
    loop = max(loops.values(), key=lambda r: r["rnn_steps_per_s"])
    batched = {str(k): summary(f"K={k}") for k in ks}
    for r in batched.values():
        r["speedup"] = r["rnn_steps_per_s"] / loop["rnn_steps_per_s"]
        # best repetition against best repetition: less exposed to other work on a shared machine
        r["speedup_best"] = r["rnn_steps_per_s_best"] / loop["rnn_steps_per_s_best"]
    result = {
        "benchmark": "zoo",
        "recipe": "formal_languages",
        "shapes": {"batch": cfg.batch_size, "steps": cfg.seq_len - 1, "hidden": FORMAL_LANGUAGES.hidden,
                   "layers": FORMAL_LANGUAGES.num_layers, "input": FORMAL_LANGUAGES.input_size,
                   "output": FORMAL_LANGUAGES.output_size},
        "device": device_name(device),
        "device_type": device.type,
        "threads": threads,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "compiled_kernels": _kernels_state(device),
        "matmul_gflops": mm,
        "mflop_per_rnn_step": flops["total"] / 1e6,
        "reps": reps,
        "loop": loop,
        "loop_by_threads": {str(t): r for t, r in loops.items()},
        "batched": batched,
    }
    for k in ks:
        result[f"speedup_k{k}"] = batched[str(k)]["speedup"]
        result[f"speedup_k{k}_best"] = batched[str(k)]["speedup_best"]
    return result


def _kernels_state(device: torch.device) -> bool:
    if device.type != "cpu":
        return False
    from .. import rnn

    available = getattr(rnn, "kernels_available", None)
    return bool(available and available())


def format_zoo(r: dict) -> str:
    s = r["shapes"]
    lines = [
        f"rnnray bench zoo: formal-languages recipe, LSTM {s['layers']}x{s['hidden']} + Linear, "
        f"batch {s['batch']} x {s['steps']} steps, {r['mflop_per_rnn_step']:.1f} MFLOP per RNN training step",
        f"device: {r['device']}, {r['threads']} thread(s), torch {r['torch']}"
        + (f", compiled CPU kernels: {'yes' if r['compiled_kernels'] else 'no'}" if r["device_type"] == "cpu" else ""),
        f"matrix multiply (float32): {r['matmul_gflops']:.1f} GFLOP/s; median of {r['reps']} interleaved repetitions",
        "",
        f"{'configuration':<32}{'RNN-steps/s':>12}{'ms/step':>10}{'GFLOP/s':>10}{'of matmul':>11}{'speed-up':>10}",
    ]
    loop = r["loop"]
    for t, lr in sorted(r["loop_by_threads"].items(), key=lambda kv: int(kv[0])):
        mark = " *" if lr is loop or lr == loop else ""
        lines.append(
            f"{'one-at-a-time loop, ' + t + ' thread(s)' + mark:<32}{lr['rnn_steps_per_s']:>12.1f}{lr['ms_per_step']:>10.2f}"
            f"{lr['gflops']:>10.1f}{100 * lr['fraction_of_matmul']:>10.1f}%{lr['rnn_steps_per_s'] / loop['rnn_steps_per_s']:>9.2f}x"
        )
    for k, br in r["batched"].items():
        lines.append(
            f"{'batched ChunkTrainer, K = ' + k:<32}{br['rnn_steps_per_s']:>12.1f}{br['ms_per_step']:>10.2f}"
            f"{br['gflops']:>10.1f}{100 * br['fraction_of_matmul']:>10.1f}%{br['speedup']:>9.2f}x"
        )
    lines.append("(* the loop's faster thread setting: the baseline of the speed-ups; ms/step is per lockstep step)")
    best_k = "1024" if "1024" in r["batched"] else "64"
    if best_k in r["batched"]:
        br = r["batched"][best_k]
        lines += [
            "",
            f"summary: K = {best_k} trains {br['rnn_steps_per_s']:.0f} RNN-steps/s, {br['speedup']:.1f}x the one-at-a-time loop "
            f"({loop['rnn_steps_per_s']:.0f}/s) on {r['device_type']} with {r['threads']} thread(s), "
            f"{100 * br['fraction_of_matmul']:.0f}% of the matmul rate",
        ]
    return "\n".join(lines)


def add_parser(sub) -> None:
    p = sub.add_parser("zoo", help="RNN-training throughput: batched trainer vs one-RNN-at-a-time loop")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--steps", type=int, default=None,
                   help=f"timed steps per repetition for every configuration (default: about {RNN_STEPS_PER_REP} RNN-steps each)")
    p.add_argument("--reps", type=int, default=3, help="interleaved timed repetitions (the median is reported)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per configuration first")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: all cores)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--ks", default=None, help="comma-separated chunk sizes (default 1,16,64,256; on CUDA also 1024)")
    p.set_defaults(func=_run_zoo)


def lockstep_bytes(k: int) -> int:
    """Bytes K RNNs of the benchmark's recipe hold at least while they train in lockstep: weights,
    gradients and AdamW's two moments (float32), a block of 500 steps of batch draws (int64) and a
    step's one-hot inputs (float32)."""
    from ..zoo.trainer import DATA_BLOCK

    cfg = parse_zoo({"kind": "formal_languages", "runs": 1})
    per_rnn = 4 * 4 * FORMAL_LANGUAGES.num_params + DATA_BLOCK * cfg.batch_size * 8
    per_rnn += cfg.batch_size * (cfg.seq_len - 1) * FORMAL_LANGUAGES.input_size * 4
    return k * per_rnn


def _chunk_sizes(text: str | None, device: torch.device, memory: int | None = None) -> list[int]:
    """``--ks`` as whole numbers of at least 1 whose lockstep training fits ``memory`` (default: this
    machine's); the default sizes when not given."""
    from ..cli import UsageError
    from ..zoo.preflight import machine_memory, size_text

    if text is None:
        return [1, 16, 64, 256] + ([1024] if device.type == "cuda" else [])
    try:
        ks = [int(k) for k in text.split(",") if k.strip()]
    except ValueError:
        raise UsageError(f"--ks: {text!r} is not a comma-separated list of whole numbers") from None
    if not ks or min(ks) < 1:
        raise UsageError(f"--ks: chunk sizes must be at least 1 (got {text!r})")
    have = machine_memory() if memory is None else memory
    if lockstep_bytes(max(ks)) > have:
        raise UsageError(f"--ks: K = {max(ks)} RNNs in lockstep would hold about {size_text(lockstep_bytes(max(ks)))}, "
                         f"more than the {size_text(have)} of memory of this machine; lower --ks")
    return ks


def _run_zoo(args) -> int:
    from ..cli import check_flags, friendly_errors
    from ..runtime.machine import check_device

    with friendly_errors():
        check_flags(args, {"steps": (1, None), "reps": (1, None), "warmup": (0, None), "threads": (1, 4096)})
        check_device(args.device)
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        ks = _chunk_sizes(args.ks, device)
    threads = args.threads or os.cpu_count() or torch.get_num_threads()
    log = (lambda s: print(s, file=sys.stderr, flush=True)) if not args.json else (lambda s: None)
    result = bench_zoo(device, threads, ks, steps=args.steps, reps=args.reps, warmup=args.warmup, log=log)
    print(json.dumps(result) if args.json else format_zoo(result))
    return 0
