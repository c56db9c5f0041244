"""Run many zoo RNNs at once, functionally, from stacked weights.

The zoo trainer and the probing encoders both need "evaluate K different LSTMs on K different
batches of inputs" without a Python loop over the K networks. Weights come as a dict of tensors
with a leading K axis (``Layout.split`` of a (K, P) tensor); every matrix product is a batched
``bmm`` over K. The result equals ``torch.nn.LSTM`` + ``torch.nn.Linear`` applied to each network
separately (tested against them).

Why a hand-written backward: with autograd, each of the ~40 time steps of each layer records a
dozen small nodes, and for tiny LSTMs that bookkeeping costs more than the arithmetic.
:class:`_LSTMLayer` keeps the whole layer in one autograd node: the forward writes gate
activations into one preallocated time-major buffer, the backward walks it in reverse with in-place
ops, and the weight gradients are a single large ``bmm`` over all time steps instead of one small
product per step.
"""

from __future__ import annotations

import torch

from .weights import Layout


def _cell(gates: torch.Tensor, c: torch.Tensor, hidden: int) -> tuple[torch.Tensor, torch.Tensor]:
    i, f, g, o = gates.chunk(4, dim=-1)
    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    c = f * c + i * g
    return o * torch.tanh(c), c


class Workspace:
    """Buffers reused from one training step to the next.

    Allocating the ~100 MB of per-layer activations afresh every step costs more than computing
    them (first-touch page faults). A training loop that runs forward and backward strictly in turn
    (the zoo trainer) passes one Workspace; anything else leaves it out and gets fresh buffers.
    """

    def __init__(self):
        self._bufs: dict = {}

    def get(self, key, shape, like: torch.Tensor) -> torch.Tensor:
        buf = self._bufs.get(key)
        if buf is None or buf.shape != shape or buf.dtype != like.dtype or buf.device != like.device:
            buf = like.new_empty(shape)
            self._bufs[key] = buf
        return buf


def _buffer(ws, key, shape, like):
    return like.new_empty(shape) if ws is None else ws.get(key, shape, like)


class _LSTMLayer(torch.autograd.Function):
    """One LSTM layer of K networks over a whole sequence, zero initial state.

    x: (K, T, B, I); w_ih (K, 4H, I); w_hh (K, 4H, H); bias (K, 4H) = b_ih + b_hh.  Returns h: (K, T, B, H).
    Buffers are K-major, so a time step is a batch-strided view that ``bmm`` takes as it is and the
    weight gradients are plain products over all (T, B) rows: no transposing copies.
    """

    @staticmethod
    def forward(ctx, x, w_ih, w_hh, bias, ws, tag):
        k, t, b, _ = x.shape
        h4 = w_hh.shape[1]
        hsz = h4 // 4
        acts = _buffer(ws, (tag, "acts"), (k, t, b, h4), x)
        torch.baddbmm(bias.unsqueeze(1), x.reshape(k, t * b, -1), w_ih.transpose(1, 2), out=acts.view(k, t * b, h4))
        cs = _buffer(ws, (tag, "cs"), (k, t, b, hsz), x)
        tcs = _buffer(ws, (tag, "tcs"), (k, t, b, hsz), x)
        hs = x.new_empty(k, t, b, hsz)  # returned to the caller: never shared
        rec = x.new_empty(k, b, h4)
        w_hh_t = w_hh.transpose(1, 2)
        for s in range(t):
            a = acts[:, s]
            if s > 0:
                torch.bmm(hs[:, s - 1], w_hh_t, out=rec)
                a.add_(rec)
            a[..., : 2 * hsz].sigmoid_()
            a[..., 2 * hsz : 3 * hsz].tanh_()
            a[..., 3 * hsz :].sigmoid_()
            i, f, g, o = a.split(hsz, dim=-1)
            c = cs[:, s]
            torch.mul(i, g, out=c)
            if s > 0:
                c.addcmul_(f, cs[:, s - 1])
            torch.tanh(c, out=tcs[:, s])
            torch.mul(o, tcs[:, s], out=hs[:, s])
        ctx.save_for_backward(x, w_ih, w_hh, acts, cs, tcs, hs)
        ctx.ws, ctx.tag = ws, tag
        return hs

    @staticmethod
    def backward(ctx, dhs, *_):
        x, w_ih, w_hh, acts, cs, tcs, hs = ctx.saved_tensors
        ws, tag = ctx.ws, ctx.tag
        k, t, b, _ = x.shape
        h4 = w_hh.shape[1]
        hsz = h4 // 4
        dpre = _buffer(ws, (tag, "dpre"), acts.shape, acts)  # gradient w.r.t. pre-activations
        dh = dhs[:, t - 1].clone()
        dc = torch.zeros_like(cs[:, 0])
        tmp = torch.empty_like(dc)
        deriv = x.new_empty(k, b, h4)
        for s in range(t - 1, -1, -1):
            if s < t - 1:
                dh.add_(dhs[:, s])
            a = acts[:, s]
            i, f, g, o = a.split(hsz, dim=-1)
            di, df, dg, do = dpre[:, s].split(hsz, dim=-1)
            tc = tcs[:, s]
            torch.mul(dh, tc, out=do)
            torch.mul(tc, tc, out=tmp).neg_().add_(1).mul_(o).mul_(dh)  # dh * o * (1 - tanh(c)^2)
            dc.add_(tmp)
            torch.mul(dc, g, out=di)
            torch.mul(dc, i, out=dg)
            if s > 0:
                torch.mul(dc, cs[:, s - 1], out=df)
            else:
                df.zero_()
            dc.mul_(f)  # on to c_{s-1}
            # activation derivatives from the stored values: a(1 - a) for sigmoids, 1 - g^2 for tanh
            torch.mul(a, a, out=deriv)
            dg.mul_(deriv[..., 2 * hsz : 3 * hsz].neg_().add_(1))
            deriv.neg_().add_(a)
            di.mul_(deriv[..., :hsz])
            df.mul_(deriv[..., hsz : 2 * hsz])
            do.mul_(deriv[..., 3 * hsz :])
            if s > 0:
                torch.bmm(dpre[:, s], w_hh, out=dh)
        dw_ih = dw_hh = dbias = dx = None
        dflat = dpre.view(k, t * b, h4)
        if ctx.needs_input_grad[1]:
            dw_ih = torch.bmm(dflat.transpose(1, 2), x.reshape(k, t * b, -1))
        if ctx.needs_input_grad[2]:
            dw_hh = torch.bmm(dflat[:, b:].transpose(1, 2), hs[:, :-1].reshape(k, (t - 1) * b, hsz))
        if ctx.needs_input_grad[3]:
            dbias = dflat.sum(1)
        if ctx.needs_input_grad[0]:
            dx = torch.bmm(dflat, w_ih).view(k, t, b, -1)
        return dx, dw_ih, dw_hh, dbias, None, None


def run(layout: Layout, params: dict[str, torch.Tensor], x: torch.Tensor, workspace: Workspace | None = None) -> torch.Tensor:
    """Outputs (pre-softmax) of K RNNs on their own inputs.

    params: ``layout.split(flat)`` of a (K, P) tensor.  x: (K, B, T, input).  Returns (K, B, T, output).
    """
    seq = x.transpose(1, 2).contiguous()  # (K, T, B, I)
    for layer in range(layout.num_layers):
        bias = params[f"bias_ih_l{layer}"] + params[f"bias_hh_l{layer}"]
        seq = _LSTMLayer.apply(seq, params[f"weight_ih_l{layer}"], params[f"weight_hh_l{layer}"], bias, workspace, layer)
    k, t, b, h = seq.shape
    out = torch.baddbmm(params["linear.bias"].unsqueeze(1), seq.view(k, t * b, h), params["linear.weight"].transpose(1, 2))
    return out.view(k, t, b, -1).transpose(1, 2)


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
