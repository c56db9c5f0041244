"""``python -m rnnray.bench train``: the cost of one emulation-training step with every encoder.

A timed step is exactly a training step of :func:`rnnray.train.run_loop`: batch assembly (sequence
choice, and permutation augmentation for ``flat``/``transformer``), forward, total variation,
backward, clipping, AdamW, on zoo-shaped random rows (no built zoo needed). Each encoder is timed
at a *configuration*: its preset as it is (``budget=None``; the paper's shapes) or fitted to a
budget, beside the emulator alone (the constant representation), all in one process on the same
batches, interleaved (every model once, then again, ``reps`` times) so drifting machine load hits
them alike. Reported: the median repetition (``ms_per_step``, which the ratios use) and the fastest.

FLOPs per step are counted by ``torch.utils.flop_counter.FlopCounterMode`` over one forward and
backward (matrix products and attention; element-wise work is not counted; ``torch.nn.LSTM``'s
oneDNN layers, which the counter does not know, are counted from their shapes). The compiled LSTM
kernels of ``rnnray.rnn`` are invisible to the counter, so the count is taken on the PyTorch-ops
path of the same algorithm (the same products); the timing uses whatever the run would use.
Achieved GFLOP/s is that count over the median step time, and its share of the machine's
measured float32 matmul rate (``rnnray.runtime.machine.matmul_gflops``) says how close to the hardware a
step runs; ``ratio_bound_at_matmul_rate`` is the ratio to the emulator-alone step that the
encoder's extra FLOPs would give at that full rate, the least any implementation of the same
arithmetic could reach on the machine. That rate is a large square product's; thin products (48
DWS channels, a 256-unit cell at batch 64) run slower, so ``ratio_bound_at_product_shapes`` is the
tighter bound: the step's products recorded and replayed alone at their own shapes
(``rnnray.bench.products``), everything else taken as free. On a machine shared with other work no
figure is trustworthy: measure on an idle one.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ..emulation.batches import RowSampler, Snapshots, training_batch
from ..encoders import ENCODERS, fit_to_budget, needs_augmentation
from ..encoders.registry import resolve_hparams
from ..train import BASELINE, EMULATOR_LAYERS, build_model, train_step
from ..kinds import zoo_kind
from ..weights import Layout

REFERENCE = "/reference"  # suffix of an encoder timed with its plain implementation (``reference=True``)
KEEPS_REFERENCE = ("dws",)  # encoders whose class keeps one

# SPEC.md 5b targets at the presets, zoo A, batch 64, emulator 256, on a CPU: step time / emulator alone
TARGETS = {"flat": 1.3, "stats": 1.3, "noninteractive": 1.3, "interactive": 1.5, "dws": 2.5, "transformer": 2.5}
EMULATOR_TARGET_SHARE = 0.5  # the emulator-alone step at >= 50 % of the matmul rate


def synthetic_snapshots(kind: str, layout: Layout, rows: int, sequences: int, seed: int = 0) -> Snapshots:
    """Zoo-shaped random rows (weights like PyTorch's LSTM init), so timing needs no built zoo."""
    g = np.random.default_rng(seed)
    bound = 1 / math.sqrt(layout.hidden)
    params = g.uniform(-bound, bound, size=(rows, layout.num_params)).astype(np.float32)
    if zoo_kind(kind).token_inputs:
        inputs = g.integers(0, 6, size=(rows, sequences, 42)).astype(np.int16)
        logits = g.normal(size=(rows, sequences, 41, 6))
        targets = (logits - np.log(np.exp(logits).sum(-1, keepdims=True))).astype(np.float16)
    else:
        inputs = g.normal(size=(rows, sequences, 50, 16)).astype(np.float16)
        targets = g.normal(size=(rows, sequences, 50, 10)).astype(np.float16)
    return Snapshots(kind, np.arange(rows), np.zeros(rows, dtype=np.int64), params, inputs, targets)


@contextlib.contextmanager
def _pytorch_ops_lstm():
    """The PyTorch-ops path of ``rnnray.rnn`` (what the FLOP counter can see)."""
    before = os.environ.get("RNNRAY_COMPILE")
    os.environ["RNNRAY_COMPILE"] = "0"
    try:
        yield
    finally:
        if before is None:
            del os.environ["RNNRAY_COMPILE"]
        else:
            os.environ["RNNRAY_COMPILE"] = before


def _lstm_layer_flops(input_shape, w_ih_shape, w_hh_shape) -> int:
    """One LSTM layer's gate products over the sequence: 2 x (T x B) x 4H x (input + H)."""
    rows = input_shape[0] * input_shape[1]
    return 2 * rows * w_ih_shape[0] * (w_ih_shape[1] + w_hh_shape[1])


def _lstm_counters() -> dict:
    """``torch.nn.LSTM`` on CPU runs as oneDNN layer ops, which FlopCounterMode has no formula for:
    its products counted from the shapes (the backward, inputs and weights, twice the forward)."""
    aten = torch.ops.aten
    out = {}
    if hasattr(aten, "mkldnn_rnn_layer"):
        out[aten.mkldnn_rnn_layer] = lambda inp, w_ih, w_hh, *a, out_shape=None, **k: _lstm_layer_flops(inp, w_ih, w_hh)
        out[aten.mkldnn_rnn_layer_backward] = (
            lambda inp, w_ih, w_hh, *a, out_shape=None, **k: 2 * _lstm_layer_flops(inp, w_ih, w_hh))
    return out


def step_flops(model: torch.nn.Module, flat: torch.Tensor, inputs: torch.Tensor, targets: torch.Tensor) -> int:
    """FLOPs of one forward + backward of the emulation loss (no optimiser step)."""
    from torch.utils.flop_counter import FlopCounterMode

    from ..emulation.emulator import total_variation

    with _pytorch_ops_lstm(), FlopCounterMode(display=False, custom_mapping=_lstm_counters()) as counter:
        total_variation(targets, model(flat, inputs)).backward()
    model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def step_products(model: torch.nn.Module, flat: torch.Tensor, inputs: torch.Tensor, targets: torch.Tensor) -> dict:
    """The products of one forward + backward replayed alone at their own shapes (``rnnray.bench.products``)."""
    from .products import record_products, replay_seconds
    from ..emulation.emulator import total_variation

    with _pytorch_ops_lstm():
        calls = record_products(lambda: total_variation(targets, model(flat, inputs)).backward())
    model.zero_grad(set_to_none=True)
    return replay_seconds(calls)


def encoder_config(name: str, layout: Layout, kind: str, budget: float | None, tolerance: float) -> tuple[dict, int]:
    """The hyperparameters timed: the preset as it is (``budget=None``, and always for the fixed-size
    baseline), or fitted to ``budget``."""
    from ..encoders import build_encoder, count_params
    from ..encoders.registry import get_spec

    if budget is None or not get_spec(name).sized:
        hp = resolve_hparams(name, layout, kind)
        with torch.device("meta"):
            return hp, count_params(build_encoder(name, layout, kind, **hp))
    return fit_to_budget(name, layout, budget, tolerance, zoo_kind=kind)


def benchmark(
    encoders=None, *, kind: str = "formal_languages", budget: float | None = None, tolerance: float = 0.05,
    batch: int = 64, emulator_hidden: int = 256, steps: int = 10, warmup: int = 2, reps: int = 3,
    device=None, matmul_rate: float | None = None, log=None, reference: bool = False,
) -> dict[str, Any]:
    """Step time, FLOPs and achieved rate of every encoder (at its preset or fitted to ``budget``)
    and of the emulator alone, measured side by side in this process. ``reference``: also every
    encoder that keeps a plain implementation beside its fast one (``dws``) with that one, as
    ``NAME/reference``, so an optimisation is measured against what it replaced in the same run."""
    from ..runtime.machine import matmul_gflops

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    layout = zoo_kind(kind).layout
    names = [v for n in (encoders or ENCODERS) for v in ([n] + ([n + REFERENCE] if reference and n in KEEPS_REFERENCE else []))]
    names.append(BASELINE)
    data = synthetic_snapshots(kind, layout, rows=max(4 * batch, 256), sequences=8)
    sampler = RowSampler(len(data), batch, seed=0)
    models, info = {}, {}
    for name in names:
        base = name.removesuffix(REFERENCE)
        hp, n = encoder_config(base, layout, kind, budget, tolerance)
        torch.manual_seed(0)
        model = build_model(base, hp, layout, kind, emulator_hidden).to(device)
        if name != base:
            model.encoder.reference = True
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
        aug = layout if needs_augmentation(base) else None
        models[name] = (model, opt, [p for p in model.parameters() if p.requires_grad], aug)
        flat, inputs, targets = training_batch(data, sampler, 0, 0, aug, device)
        info[name] = {"n_params": n, "hparams": hp, "flops": step_flops(model, flat, inputs, targets),
                      "products": step_products(model, flat, inputs, targets)}
        if log:
            log(f"{name}: {n:,} encoder parameters, {info[name]['flops'] / 1e9:.2f} GFLOP per step")

    def run(name: str, n_steps: int, start: int) -> float:
        model, opt, params, aug = models[name]
        model.train()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        for s in range(start, start + n_steps):
            flat, inputs, targets = training_batch(data, sampler, s, 0, aug, device)
            train_step(model, opt, params, flat, inputs, targets, 0.1)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t

    for name in names:
        run(name, warmup, 0)
    times: dict[str, list[float]] = {n: [] for n in names}
    for rep in range(reps):
        for name in names:
            times[name].append(run(name, steps, warmup + rep * steps))
        if log:
            log(f"repetition {rep + 1}/{reps}: " + ", ".join(f"{n} {1e3 * times[n][-1] / steps:.0f} ms" for n in names))
    rate = matmul_rate or matmul_gflops(device)
    key = {n: ("emulator_only" if n == BASELINE else n) for n in names}
    ms = {key[n]: 1e3 * float(np.median(t)) / steps for n, t in times.items()}
    best_ms = {key[n]: 1e3 * float(np.min(t)) / steps for n, t in times.items()}
    flops = {key[n]: info[n]["flops"] for n in names}
    gflops = {k: flops[k] / ms[k] / 1e6 for k in ms}
    emu = ms["emulator_only"]
    ratio = {n: ms[n] / emu for n in names if n != BASELINE}
    # the least ratio the counted FLOPs allow: the encoder's extra products at the full matmul rate
    bound = {k: (emu + max(0.0, flops[k] - flops["emulator_only"]) / rate / 1e6) / emu for k in ratio}
    # the tighter one: the encoder's extra products timed alone at their own shapes, all else fused away
    product_ms = {key[n]: 1e3 * info[n]["products"]["seconds"] for n in names}
    shape_bound = {k: (emu + max(0.0, product_ms[k] - product_ms["emulator_only"])) / emu for k in ratio}
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "device_type": device.type, "threads": torch.get_num_threads(), "torch": torch.__version__,
        "zoo_kind": kind, "configuration": "preset" if budget is None else "budget", "budget": budget,
        "tolerance": tolerance, "batch": batch, "emulator_hidden": emulator_hidden, "emulator_layers": EMULATOR_LAYERS,
        "steps": steps, "reps": reps, "matmul_gflops": rate,
        "ms_per_step": ms, "best_ms_per_step": best_ms,
        "ms_per_rep": {key[n]: [1e3 * t / steps for t in times[n]] for n in names}, "flops_per_step": flops, "gflops": gflops,
        "matmul_share": {k: g / rate for k, g in gflops.items()},
        "ratio_to_emulator_only": ratio, "ratio_bound_at_matmul_rate": bound,
        "product_ms_per_step": product_ms, "ratio_bound_at_product_shapes": shape_bound,
        "products_skipped": {key[n]: info[n]["products"]["skipped"] for n in names if info[n]["products"]["skipped"]},
        "n_params": {key[n]: info[n]["n_params"] for n in names},
        "hparams": {n: info[n]["hparams"] for n in names if n != BASELINE},
    }


def targets_met(r: Mapping[str, Any]) -> dict[str, bool]:
    """The speed targets of the faithful-encoders issue (they apply at the presets, zoo A, batch 64,
    emulator 256); empty for any other configuration."""
    if (r["configuration"], r["zoo_kind"], r["batch"], r["emulator_hidden"]) != ("preset", "formal_languages", 64, 256):
        return {}
    met = {n: ratio <= TARGETS[n] for n, ratio in r["ratio_to_emulator_only"].items() if n in TARGETS}
    met["emulator_only"] = r["matmul_share"]["emulator_only"] >= EMULATOR_TARGET_SHARE
    return met


def format_benchmark(r: Mapping[str, Any]) -> str:
    where = "at their presets" if r["configuration"] == "preset" else f"fitted to {r['budget']:.3g} parameters (±{r['tolerance']:.0%})"
    lines = [
        f"emulation training step: {r['zoo_kind']}, batch {r['batch']}, emulator {r['emulator_layers']} x "
        f"{r['emulator_hidden']}, encoders {where}",
        f"device: {r['device']}, {r['threads']} thread(s), torch {r['torch']}; matmul {r['matmul_gflops']:.0f} GFLOP/s; "
        f"median of {r['reps']} interleaved repetitions of {r['steps']} steps",
        "",
        f"{'model':<16}{'parameters':>12}{'ms/step':>10}{'best':>8}{'GFLOP/step':>12}{'GFLOP/s':>10}{'of matmul':>11}"
        f"{'x emulator':>12}{'bound':>8}{'shapes':>8}",
    ]
    met = targets_met(r)
    for n, ms in r["ms_per_step"].items():
        ratio = r["ratio_to_emulator_only"].get(n)
        bound = r["ratio_bound_at_matmul_rate"].get(n)
        shapes = r["ratio_bound_at_product_shapes"].get(n)
        mark = (f"{ratio:>11.2f}x{bound:>7.2f}x{shapes:>7.2f}x" if ratio is not None
                else f"{'1.00x':>12}{'':>16}")
        if n in met:
            mark += "" if met[n] else " (target missed)"
        lines.append(f"{n:<16}{r['n_params'][n]:>12,}{ms:>10.1f}{r['best_ms_per_step'][n]:>8.1f}"
                     f"{r['flops_per_step'][n] / 1e9:>12.2f}{r['gflops'][n]:>10.1f}{r['matmul_share'][n]:>10.0%}{mark}")
    if met:
        lines += ["", "targets: " + ", ".join(f"{n} <= {t}x" for n, t in TARGETS.items())
                  + f", emulator alone >= {EMULATOR_TARGET_SHARE:.0%} of matmul: "
                  + ("all met" if all(met.values()) else "missed by " + ", ".join(n for n, ok in met.items() if not ok)),
                  "bound: the ratio if the encoder's extra FLOPs ran at the full matmul rate; shapes: the ratio if "
                  "its extra products ran alone at their own shapes and all other work cost nothing (a target "
                  "below either cannot be met by the same arithmetic on this machine)"]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# the command

DEFAULT_TRAIN_RUNS = (("formal_languages", None), ("mnist", None), ("formal_languages", 1.2e6))


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="emulation-training step of every encoder (ms, FLOPs, GFLOP/s) vs the emulator alone",
                       description="Default: every encoder at its paper preset on zoo A and on zoo B, and fitted to "
                                   "1.2 M parameters on zoo A. --zoo-kind / --budget pick one configuration.")
    p.add_argument("--json", action="store_true", help="print one JSON list (one object per configuration)")
    p.add_argument("--encoders", default=None, help="comma-separated encoder names (default: all)")
    p.add_argument("--zoo-kind", default=None, choices=["formal_languages", "mnist"])
    p.add_argument("--budget", default=None, help="encoder parameter budget (fit_to_budget), or 'preset'")
    p.add_argument("--batch", type=int, default=64, help="snapshots per step")
    p.add_argument("--emulator-hidden", type=int, default=256)
    p.add_argument("--steps", type=int, default=None, help="timed steps per repetition (default: 5 on CPU, 50 on CUDA)")
    p.add_argument("--reps", type=int, default=3, help="interleaved timed repetitions (the median is reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per model first")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--reference", action="store_true",
                   help=f"also time the plain implementation of {', '.join(KEEPS_REFERENCE)} (rows NAME{REFERENCE}), "
                        "interleaved with the rest")
    p.set_defaults(func=_run_train)


def _train_runs(args) -> list[tuple[str, float | None]]:
    from ..cli import UsageError

    if args.zoo_kind is None and args.budget is None:
        return list(DEFAULT_TRAIN_RUNS)
    try:
        budget = None if args.budget in (None, "preset") else float(args.budget)
    except ValueError:
        raise UsageError(f"--budget: {args.budget!r} is neither a number nor 'preset'") from None
    if budget is not None and not (math.isfinite(budget) and budget >= 1):
        raise UsageError(f"--budget: must be a finite number of parameters, at least 1 (got {args.budget})")
    return [(args.zoo_kind or "formal_languages", budget)]


# the flags every step benchmark takes, with their bounds (threads: as many as a zoo actor may ask for)
STEP_FLAGS = {"batch": (1, None), "emulator_hidden": (1, None), "steps": (1, None), "reps": (1, None),
              "warmup": (0, None), "threads": (1, 4096)}


def check_step_memory(kind: str, batch: int, emulator_hidden: int, encoder_params: float, models: int,
                      memory: int | None = None) -> None:
    """UsageError naming the flag when a step benchmark could not fit ``memory`` bytes (default:
    this machine's): its zoo-shaped rows (``max(4 batch, 256)``, 8 sequences each), one step's batch
    and ``models`` encoders with their emulators and AdamW state, counted as training counts them
    (:mod:`rnnray.train.preflight`)."""
    from ..cli import UsageError
    from ..train.preflight import model_bytes, step_bytes
    from ..zoo.preflight import machine_memory, size_text
    from ..zoo.storage import row_bytes

    have = machine_memory() if memory is None else memory
    k = zoo_kind(kind)
    needs = {"--batch": max(4 * batch, 256) * row_bytes(kind, k.layout.num_params, 8) + step_bytes(kind, batch, emulator_hidden),
             "--emulator-hidden": models * model_bytes(kind, 0, emulator_hidden),
             "--budget": models * model_bytes(kind, int(encoder_params), 0)}
    if sum(needs.values()) > have:
        flag = max(needs, key=needs.get)
        raise UsageError(f"{flag}: the benchmark would hold about {size_text(sum(needs.values()))} (rows, one step's "
                         f"batch and {models} model(s) with AdamW state), more than the {size_text(have)} of memory "
                         f"of this machine; lower {flag}")


def _run_train(args) -> int:
    import json
    import sys

    from ..cli import UsageError, UserError, check_flags, friendly_errors
    from ..runtime.machine import check_device, matmul_gflops
    from ..train import check_encoder_name

    results = []
    with friendly_errors():
        check_flags(args, STEP_FLAGS)
        check_device(args.device)
        encoders = [e.strip() for e in args.encoders.split(",") if e.strip()] if args.encoders is not None else None
        if encoders is not None and not encoders:
            raise UsageError(f"--encoders: no encoder named in {args.encoders!r}")
        for e in encoders or []:
            try:
                check_encoder_name(e)
            except UserError as err:  # the registry's UnknownEncoder
                raise UsageError(f"--encoders: {err}") from None
        runs = _train_runs(args)
        names = len(encoders or ENCODERS) + 1
        for kind, budget in runs:  # a preset's encoder counted as nothing: the estimate stays a floor
            check_step_memory(kind, args.batch, args.emulator_hidden, budget or 0, names)
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if args.threads:
            torch.set_num_threads(args.threads)
        log = (lambda s: print(s, file=sys.stderr, flush=True)) if not args.json else None
        steps = args.steps or (50 if device.type == "cuda" else 5)
        rate = matmul_gflops(device)
        for kind, budget in runs:
            r = benchmark(encoders, kind=kind, budget=budget, batch=args.batch, emulator_hidden=args.emulator_hidden,
                          steps=steps, warmup=args.warmup, reps=args.reps, device=device, matmul_rate=rate, log=log,
                          reference=args.reference)
            results.append(r)
            if not args.json:
                print(format_benchmark(r) + "\n", flush=True)
    if args.json:
        print(json.dumps(results))
    return 0
