"""``python -m rnnray.bench profile``: where the time of emulation-training steps goes.

Runs ``steps`` training steps of one encoder at its preset (as :mod:`rnnray.bench.train` times
them) under ``torch.profiler`` and splits the wall time into the host-side input (row choice,
sequence choice, permutation keys, the gather and the copy to the device: :func:`rnnray.emulation.batches.training_batch`)
and the step itself (forward, loss, backward, clipping, AdamW), then lists the operators that
took the most time. On a GPU the input must be a small share, or the device waits for the host.
"""

from __future__ import annotations

import time

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from .train import encoder_config, synthetic_snapshots
from ..emulation.batches import RowSampler, training_batch
from ..encoders import ENCODERS, needs_augmentation
from ..runtime.machine import device_name, sync
from ..train import build_model, train_step
from ..kinds import zoo_kind

REGIONS = ("input", "step")


def profile_steps(encoder: str = "dws", kind: str = "formal_languages", steps: int = 50, batch: int = 64,
                  emulator_hidden: int = 256, device=None, top: int = 12) -> dict:
    device = torch.device(device or "cpu")
    layout = zoo_kind(kind).layout
    data = synthetic_snapshots(kind, layout, rows=max(4 * batch, 256), sequences=8)
    sampler = RowSampler(len(data), batch, seed=0)
    hp, n_params = encoder_config(encoder, layout, kind, None, 0.05)
    torch.manual_seed(0)
    model = build_model(encoder, hp, layout, kind, emulator_hidden).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    params = [p for p in model.parameters() if p.requires_grad]
    aug = layout if needs_augmentation(encoder) else None

    def one(s: int) -> None:
        with record_function("input"):
            flat, inputs, targets = training_batch(data, sampler, s, 0, aug, device)
        with record_function("step"):
            train_step(model, opt, params, flat, inputs, targets, 0.1)

    for s in range(3):  # warm-up: kernels built, buffers touched
        one(s)
    sync(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    t0 = time.perf_counter()
    with profile(activities=activities) as prof:
        for s in range(3, 3 + steps):
            one(s)
        sync(device)
    wall = time.perf_counter() - t0
    events = prof.key_averages()
    region = {e.key: e.cpu_time_total / 1e3 for e in events if e.key in REGIONS}
    ops = sorted((e for e in events if e.key not in REGIONS and not e.key.startswith("ProfilerStep")),
                 key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    total_self = sum(e.self_cpu_time_total for e in events if e.key not in REGIONS) / 1e3
    return {
        "encoder": encoder, "hparams": hp, "n_params": n_params, "zoo_kind": kind, "batch": batch,
        "emulator_hidden": emulator_hidden, "steps": steps, "device": device_name(device), "torch": torch.__version__,
        "threads": torch.get_num_threads(), "wall_ms_per_step": 1e3 * wall / steps,
        "region_ms_per_step": {k: v / steps for k, v in region.items()},
        "input_share": region.get("input", 0.0) / max(sum(region.values()), 1e-9),
        "top_ops": [{"op": e.key, "self_ms_per_step": e.self_cpu_time_total / 1e3 / steps,
                     "share": e.self_cpu_time_total / 1e3 / max(total_self, 1e-9), "calls_per_step": e.count / steps}
                    for e in ops],
    }


def format_profile(r: dict) -> str:
    lines = [f"profile: {r['encoder']} at its preset ({r['n_params']:,} parameters), {r['zoo_kind']}, batch {r['batch']}, "
             f"emulator {r['emulator_hidden']}; {r['steps']} steps on {r['device']}, {r['threads']} thread(s), torch {r['torch']}",
             f"wall time {r['wall_ms_per_step']:.1f} ms/step (under the profiler): input "
             f"{r['region_ms_per_step'].get('input', 0):.2f} ms, step {r['region_ms_per_step'].get('step', 0):.1f} ms "
             f"(input {r['input_share']:.1%} of the two)", "",
             f"{'operator (self CPU time)':<44}{'ms/step':>9}{'share':>8}{'calls/step':>12}"]
    for o in r["top_ops"]:
        lines.append(f"{o['op'][:43]:<44}{o['self_ms_per_step']:>9.2f}{o['share']:>8.1%}{o['calls_per_step']:>12.1f}")
    return "\n".join(lines)


def add_parser(sub) -> None:
    p = sub.add_parser("profile", help="where the time of emulation-training steps goes (input vs step, top operators)")
    p.add_argument("--encoder", default="dws", choices=list(ENCODERS))
    p.add_argument("--zoo-kind", default="formal_languages", choices=["formal_languages", "mnist"])
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--emulator-hidden", type=int, default=256)
    p.add_argument("--device", default=None, help="cpu or cuda (default: cpu)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_run)


def _run(args) -> int:
    import json

    from ..cli import check_flags, friendly_errors
    from ..runtime.machine import check_device
    from .train import STEP_FLAGS, check_step_memory

    with friendly_errors():
        check_flags(args, {k: STEP_FLAGS[k] for k in ("steps", "batch", "emulator_hidden")})
        check_device(args.device)
        check_step_memory(args.zoo_kind, args.batch, args.emulator_hidden, 0, 1)
    r = profile_steps(args.encoder, args.zoo_kind, args.steps, args.batch, args.emulator_hidden, args.device)
    print(json.dumps(r) if args.json else format_profile(r))
    return 0
