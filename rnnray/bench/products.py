"""The time a training step's matrix products alone take, replayed at their own shapes.

``ratio_bound_at_matmul_rate`` in ``python -m rnnray.bench train`` prices an encoder's extra FLOPs
at the rate of one large square matrix product, a rate that thin products (48 channels, a 256-unit
LSTM cell at batch 64) never reach. This module gives the tighter bound: it records every product
op one forward and backward of a model calls (the ops ``torch.utils.flop_counter`` counts, and
``torch.nn.LSTM``'s oneDNN layer ops), then runs each again alone on fresh tensors of the same
shapes, strides and dtype, and sums their times. That sum is what the step would cost if every
element-wise op, copy and reduction around the products were fused away at no cost, so a speed
target below ``(emulator step + the encoder's extra product time) / emulator step`` cannot be met
by any implementation that computes the same products with this machine's BLAS and oneDNN.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any, Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map
from torch.utils.flop_counter import flop_registry


def product_ops() -> set:
    """The ops whose time is counted: FlopCounterMode's products and the oneDNN LSTM layers."""
    ops = {op for op in flop_registry if isinstance(op, torch._ops.OpOverloadPacket)}
    aten = torch.ops.aten
    if hasattr(aten, "mkldnn_rnn_layer"):
        ops |= {aten.mkldnn_rnn_layer, aten.mkldnn_rnn_layer_backward}
    return ops


class _TensorSpec(tuple):
    """(shape, stride, dtype, device) of a recorded tensor argument."""


def _spec(x):
    if isinstance(x, torch.Tensor):
        return _TensorSpec((tuple(x.shape), tuple(x.stride()), x.dtype, str(x.device)))
    return x


class _Recorder(TorchDispatchMode):
    def __init__(self, ops: set):
        super().__init__()
        self.ops = ops
        self.calls: Counter = Counter()
        self.specs: dict = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.overloadpacket in self.ops:
            spec = tree_map(_spec, (args, kwargs))
            key = (func, repr(spec))
            self.specs.setdefault(key, spec)
            self.calls[key] += 1
        return func(*args, **kwargs)


def record_products(step: Callable[[], Any]) -> list[tuple[Any, tuple, int]]:
    """(op, its (args, kwargs) with tensors as specs, how often it ran) for every product ``step`` calls."""
    rec = _Recorder(product_ops())
    with rec:
        step()
    return [(key[0], rec.specs[key], n) for key, n in rec.calls.items()]


def _materialise(x):
    if isinstance(x, _TensorSpec):
        shape, stride, dtype, device = x
        extent = 1 + sum((n - 1) * st for n, st in zip(shape, stride)) if all(shape) else 0
        base = torch.empty(extent, dtype=dtype, device=device)
        base = base.normal_() if dtype.is_floating_point else base.zero_()
        return base.as_strided(shape, stride)  # broadcast (stride-0) inputs share memory as recorded
    return x


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def replay_seconds(calls: list[tuple[Any, tuple, int]], reps: int = 3) -> dict[str, Any]:
    """Seconds the recorded products take when each runs alone (best of ``reps``, times its count).

    An op that cannot be replayed on random inputs is reported in ``skipped`` (with how often it ran)
    and left out of the sum, which is then a lower bound of a lower bound: still a valid bound."""
    total, per_op, skipped = 0.0, Counter(), Counter()
    for func, spec, n in calls:
        args, kwargs = tree_map(_materialise, spec)
        devices = [a[3] for a in _leaves(spec) if isinstance(a, _TensorSpec)] or ["cpu"]
        try:
            with torch.no_grad():
                func(*args, **kwargs)
                best = float("inf")
                for _ in range(reps):
                    _sync(devices[0])
                    t = time.perf_counter()
                    func(*args, **kwargs)
                    _sync(devices[0])
                    best = min(best, time.perf_counter() - t)
        except RuntimeError:
            skipped[str(func.overloadpacket)] += n
            continue
        total += best * n
        per_op[str(func.overloadpacket)] += best * n
    return {"seconds": total, "per_op_seconds": dict(per_op), "skipped": dict(skipped)}


def _leaves(tree) -> list:
    out = []
    tree_map(lambda x: out.append(x), tree)
    return out
