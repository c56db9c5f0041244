"""Run many zoo RNNs at once, functionally, from stacked weights.

The zoo trainer and the probing encoders both need "evaluate K different LSTMs on K different
batches of inputs" without a Python loop over the K networks. Weights come as a dict of tensors
with a leading K axis (``Layout.split`` of a (K, P) tensor). The result equals ``torch.nn.LSTM`` +
``torch.nn.Linear`` applied to each network separately (tested against them, and the gradients
against autograd).

The whole stack (every LSTM layer and the output Linear) is one autograd node, :class:`_Stack`, with
a hand-written backward: with plain autograd each of the ~40 time steps of each layer records a
dozen small nodes, and for tiny LSTMs that bookkeeping costs more than the arithmetic. When the
parameters are views of one (K, P) tensor (the trainer's case), the node differentiates with respect
to that tensor directly and writes its gradient in one piece. Two implementations of the node:

* Compiled kernels (CPU, float32, hidden size a multiple of 16; the default). A small C library,
  built on first use with the system C compiler and cached on disk (:func:`kernels_available`),
  runs the forward of all layers of all K networks in one call and the backward in another. The
  networks are shared out among PyTorch's own OpenMP threads; each network's per-step products (its
  weights are a few tens of KB and stay in L1) are register-blocked loops fused with the gate
  non-linearities, and its weight gradients accumulate step by step while the gate gradients are
  still in cache. Why not ``torch.compile``, MKL's batched products, or PyTorch element-wise ops:
  see docs/BENCHMARKS.md (per-step ``bmm`` + element-wise ops over all K run from cold, strided
  memory, and every op is a pass over megabytes; the fused kernels touch each value about once).
* PyTorch ops (CUDA, float64, no C compiler, other hidden sizes, or ``RNNRAY_COMPILE=0``): the same
  algorithm, time-major: per step and layer one ``bmm`` of ``[x_t | h_{t-1}]`` rows by
  ``[W_ih | W_hh]^T`` and a handful of in-place element-wise ops; the backward walks the layers as
  a wavefront with one-step scratch buffers and accumulates the weight gradients step by step.

Without gradients (evaluation), nothing is kept per time step. Every RNN's numbers depend only on
its own weights and inputs: nothing is reduced across the K networks, and with one intra-op thread
the results do not depend on K (tested bitwise; the compiled kernels also not on the thread count).
"""

from __future__ import annotations

import os
import threading
import warnings

import torch

from ..weights import Layout
from .eager import eager_backward, eager_forward
from .kernels import MAX_LAYERS, c_backward, c_forward, load_library
from .workspace import Workspace

__all__ = ["Workspace", "init_state", "kernels_available", "kernels_enabled", "kernels_used", "run", "run_autograd",
           "self_test", "step"]

_lib_lock = threading.Lock()
_lib_state: dict = {}


def _cell(gates: torch.Tensor, c: torch.Tensor, hidden: int) -> tuple[torch.Tensor, torch.Tensor]:
    i, f, g, o = gates.chunk(4, dim=-1)
    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    c = f * c + i * g
    return o * torch.tanh(c), c


def self_test(lib) -> None:
    """A miscompiled library must not train a zoo: check it against the PyTorch ops once.

    Odd sizes on purpose (B = 5, n = 19, 3 layers): every remainder path of the kernels runs.
    """
    g = torch.Generator().manual_seed(0)
    k, b, t, h, i_sz, o_sz = 2, 5, 4, 16, 3, 3
    tensors = []
    for layer in range(3):
        inp = i_sz if layer == 0 else h
        tensors += [torch.randn(k, 4 * h, inp, generator=g) * 0.5, torch.randn(k, 4 * h, h, generator=g) * 0.5,
                    torch.randn(k, 4 * h, generator=g) * 0.5, torch.randn(k, 4 * h, generator=g) * 0.5]
    tensors += [torch.randn(k, o_sz, h, generator=g), torch.randn(k, o_sz, generator=g)]
    x = torch.randn(k, b, t, i_sz, generator=g)
    dout = torch.randn(k, b, t, o_sz, generator=g)
    results = []
    for use in (lib, None):
        out, state = _forward(use, x, tensors, 3, None, store=True)
        dx, grads, dlin = _backward(use, state, dout, tensors[-2], True, True, None, None)
        results.append([out, dx, *[t for gr in grads for t in gr], *dlin])
    for fast, ref in zip(*results):
        if not torch.allclose(fast, ref, atol=1e-4, rtol=1e-4):
            raise RuntimeError("compiled LSTM kernels disagree with PyTorch")


def _library():
    """The compiled kernels, built on first use; None where unavailable (a warning says why, once)."""
    if "lib" in _lib_state:
        return _lib_state["lib"]
    with _lib_lock:
        if "lib" not in _lib_state:
            try:
                lib = load_library()
                self_test(lib)
            except Exception as e:  # any failure: fall back to PyTorch ops, which compute the same
                warnings.warn(f"rnnray.rnn: compiled LSTM kernels unavailable ({e}); using PyTorch ops", RuntimeWarning)
                lib = None
            _lib_state["lib"] = lib
    return _lib_state["lib"]


def kernels_enabled() -> bool:
    """Whether the compiled kernels may be used: ``RNNRAY_COMPILE=0`` turns them off."""
    return os.environ.get("RNNRAY_COMPILE", "1").strip().lower() not in ("0", "false", "no", "off")


def kernels_available() -> bool:
    """Whether CPU float32 computations use the compiled C kernels (building them if needed)."""
    return kernels_enabled() and _library() is not None


def _kernels_for(x: torch.Tensor, layout: Layout, params: list[torch.Tensor]):
    """The compiled kernels where they apply (CPU float32, hidden size a multiple of 16), else None."""
    if not kernels_enabled() or layout.hidden % 16 or layout.num_layers > MAX_LAYERS or 0 in x.shape:
        return None
    if any(t.device.type != "cpu" or t.dtype != torch.float32 for t in (x, *params)):
        return None
    return _library()


def kernels_used(layout: Layout, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> bool:
    """Whether RNNs of ``layout`` on ``device`` in ``dtype`` run on the compiled kernels (else on PyTorch ops)."""
    probe = torch.empty(1, 1, 1, layout.input_size, device=device, dtype=dtype)
    return _kernels_for(probe, layout, [probe]) is not None



def _forward(lib, x, params, nl, ws, store, gen=None):
    """x (K, B, T, I) -> (K, B, T, O); with ``store`` also what the backward needs.

    ``params``: the parameters in ``Layout.names`` order (nl layers, then the Linear).
    """
    if lib is not None:
        return c_forward(lib, x, params, nl, ws, store, gen)
    return eager_forward(x, _weights(params, nl), params[-2], params[-1], ws, store, gen)


def _backward(lib, state, dout, lin_w, need_x, need_w, ws, grad_out):
    """-> (dx, [per layer (dW_ih, dW_hh, db_ih, db_hh)], (dW_linear, db_linear)).

    ``grad_out``: where to write the parameter gradients (per layer the four, then the Linear's
    two), or None for fresh tensors.
    """
    if lib is not None:
        return c_backward(lib, state, dout, need_x, need_w, ws, grad_out)
    return eager_backward(state, dout, lin_w, need_x, need_w, ws, grad_out)


def _weights(tensors: list[torch.Tensor], nl: int) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per layer (W_ih, W_hh, b_ih + b_hh) from parameters in ``Layout.names`` order."""
    return [(tensors[4 * l], tensors[4 * l + 1], tensors[4 * l + 2] + tensors[4 * l + 3]) for l in range(nl)]


def _grouped(tensors: list[torch.Tensor], nl: int) -> list[list[torch.Tensor]]:
    return [tensors[4 * l : 4 * l + 4] for l in range(nl)] + [tensors[4 * nl :]]


class _Stack(torch.autograd.Function):
    """All LSTM layers and the output Linear of K networks over whole sequences, zero initial state.

    Inputs: workspace, layout, x (K, B, T, I), then either the (K, P) flat vectors the parameters are
    views of (one gradient for them, written in place, piece by piece) or the parameters in
    ``Layout.names`` order. Output: (K, B, T, O).
    """

    @staticmethod
    def forward(ctx, ws, layout, x, *tensors):
        flat_mode = len(tensors) == 1
        params = _param_list(layout, layout.split(tensors[0])) if flat_mode else list(tensors)
        gen = None
        if ws is not None:
            ws.generation += 1
            gen = ws.generation
        lib = _kernels_for(x, layout, params)
        out, state = _forward(lib, x, params, layout.num_layers, ws, True, gen)
        ctx.save_for_backward(*tensors)
        ctx.state, ctx.ws, ctx.lib, ctx.layout, ctx.flat_mode = state, ws, lib, layout, flat_mode
        return out

    @staticmethod
    def backward(ctx, dout):
        ws, state, layout = ctx.ws, ctx.state, ctx.layout
        if ws is not None and ws.generation != state["gen"]:
            raise RuntimeError("rnnray.rnn: the Workspace was reused by another forward before this backward")
        tensors = ctx.saved_tensors
        nl = layout.num_layers
        params = _param_list(layout, layout.split(tensors[0])) if ctx.flat_mode else list(tensors)
        need_x = ctx.needs_input_grad[2]
        need_w = any(ctx.needs_input_grad[3:])
        dflat = grad_out = None
        if need_w and ctx.flat_mode:
            dflat = tensors[0].new_empty(tensors[0].shape)
            grad_out = _grouped(_param_list(layout, layout.split(dflat)), nl)
        dx, grads, dlin = _backward(ctx.lib, state, dout.contiguous(), params[-2], need_x, need_w, ws, grad_out)
        if not need_w:
            return (None, None, dx) + (None,) * len(tensors)
        if ctx.flat_mode:
            return None, None, dx, dflat
        return (None, None, dx) + tuple(g for gl in grads for g in gl) + tuple(dlin)


def _param_list(layout: Layout, params: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    return [params[n] for n in layout.names]


def _flat_source(layout: Layout, plist: list[torch.Tensor], k: int) -> torch.Tensor | None:
    """The (K, P) tensor the parameters are exactly ``layout.split`` views of, if there is one.

    Differentiating with respect to it directly spares autograd one zero-filled (K, P) gradient and
    one accumulation per parameter tensor (10 of each; about 10 % of a training step at K = 64).
    """
    base = plist[0]._base
    if base is None or tuple(base.shape) != (k, layout.num_params) or not base.is_contiguous():
        return None
    expected = _param_list(layout, layout.split(base))
    for p, e in zip(plist, expected):
        if p._base is not base or p.storage_offset() != e.storage_offset() or p.shape != e.shape or p.stride() != e.stride():
            return None
    return base


def run(layout: Layout, params: dict[str, torch.Tensor], x: torch.Tensor, workspace: Workspace | None = None) -> torch.Tensor:
    """Outputs (pre-softmax) of K RNNs on their own inputs.

    params: ``layout.split(flat)`` of a (K, P) tensor.  x: (K, B, T, input).  Returns (K, B, T, output).
    """
    plist = _param_list(layout, params)
    if torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in plist)):
        flat = _flat_source(layout, plist, x.shape[0])
        return _Stack.apply(workspace, layout, x, *([flat] if flat is not None else plist))
    with torch.no_grad():
        lib = _kernels_for(x, layout, plist)
        return _forward(lib, x, plist, layout.num_layers, workspace, False)


def run_autograd(layout: Layout, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Same as :func:`run` with plain autograd ops: the reference the fused layer is tested against."""
    state = init_state(layout, x.shape[0], x.shape[1], x)
    outs = []
    for s in x.unbind(2):
        out, state = step(layout, params, s, state)
        outs.append(out)
    return torch.stack(outs, 2)


def init_state(layout: Layout, k: int, b: int, like: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Zero (h, c) for every layer: a list of ((K, B, H), (K, B, H))."""
    z = like.new_zeros(k, b, layout.hidden)
    return [(z, z) for _ in range(layout.num_layers)]


def step(
    layout: Layout,
    params: dict[str, torch.Tensor],
    x_t: torch.Tensor,
    state: list[tuple[torch.Tensor, torch.Tensor]],
) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
    """One time step of K RNNs: x_t (K, B, input) -> outputs (K, B, output), new state.

    Used where the next input depends on the last output (sampling from an RNN, interactive probing).
    """
    hsz = layout.hidden
    inp = x_t
    new_state = []
    for layer, (h, c) in enumerate(state):
        bias = (params[f"bias_ih_l{layer}"] + params[f"bias_hh_l{layer}"]).unsqueeze(1)
        gates = torch.baddbmm(bias, inp, params[f"weight_ih_l{layer}"].transpose(1, 2))
        gates = torch.baddbmm(gates, h, params[f"weight_hh_l{layer}"].transpose(1, 2))
        h, c = _cell(gates, c, hsz)
        new_state.append((h, c))
        inp = h
    out = torch.baddbmm(params["linear.bias"].unsqueeze(1), inp, params["linear.weight"].transpose(1, 2))
    return out, new_state
