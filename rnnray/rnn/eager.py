"""The PyTorch-ops path of the LSTM stack (CUDA, float64, no C compiler, other hidden sizes,
``RNNRAY_COMPILE=0``): the compiled kernels' algorithm, time-major, one product per step and layer,
element-wise work as a handful of in-place ops; the backward walks the layers as a wavefront."""

from __future__ import annotations

import torch

from .workspace import _buffer


def _steps(buf: torch.Tensor, t: int) -> torch.Tensor:
    """A one-step buffer seen as (t, ...) with step stride 0."""
    return buf.unsqueeze(0).expand(t, *buf.shape)


class _Layer:
    """One layer's buffers for one call: views shaped (T, K, B, .) over T-major buffers."""

    def __init__(self, w_ih, w_hh, bias, hsz):
        self.w_ih, self.w_hh, self.bias = w_ih, w_hh, bias
        self.inp = w_ih.shape[2]
        self.hsz = hsz


def _eager_fwd_step(a, c_prev, c, outs, tmp, hsz):
    """Gate non-linearities and cell update of one step (the bias is already in ``a``)."""
    a[..., : 2 * hsz].sigmoid_()
    a[..., 2 * hsz : 3 * hsz].tanh_()
    a[..., 3 * hsz :].sigmoid_()
    i, f, g, o = a.split(hsz, dim=-1)
    if c_prev is None:
        torch.mul(i, g, out=c)
    elif c_prev.data_ptr() == c.data_ptr():  # one-step buffer: update in place
        c.mul_(f).addcmul_(i, g)
    else:
        torch.mul(f, c_prev, out=c).addcmul_(i, g)
    torch.tanh(c, out=tmp)
    torch.mul(o, tmp, out=outs[0])
    for extra in outs[1:]:
        extra.copy_(outs[0])


def _eager_bwd_step(a, c_prev, c, dh_a, dh_b, dc, dp, dacc, tmp, deriv, one, hsz):
    """Gradients w.r.t. the gate pre-activations of one step; the bias gradient accumulates in ``dacc``."""
    i, f, g, o = a.split(hsz, dim=-1)
    di, df, dg, do = dp.split(hsz, dim=-1)
    dh = torch.add(dh_a, dh_b, out=di)  # di's slot as scratch until di is computed
    tc = torch.tanh(c, out=tmp)
    torch.mul(dh, tc, out=do)
    torch.addcmul(one, tc, tc, value=-1, out=tmp)  # 1 - tanh(c)^2
    dc.addcmul_(tmp.mul_(o), dh)
    torch.mul(dc, g, out=di)
    torch.mul(dc, i, out=dg)
    if c_prev is None:
        df.zero_()
    else:
        torch.mul(dc, c_prev, out=df)
    dc.mul_(f)
    torch.addcmul(a, a, a, value=-1, out=deriv)  # a (1 - a): the sigmoid derivatives
    torch.addcmul(one, g, g, value=-1, out=deriv[..., 2 * hsz : 3 * hsz])  # 1 - g^2 for tanh
    dp.mul_(deriv)
    if dacc is not None:
        dacc.add_(dp)


def eager_forward(x, weights, lin_w, lin_b, ws, store, gen):
    k, b, t, _ = x.shape
    hsz = weights[0][1].shape[2]
    h4 = 4 * hsz
    nl = len(weights)
    tag = ("eager", "train" if store else "eval")
    layers = []
    for l, (w_ih, w_hh, bias) in enumerate(weights):
        lay = _Layer(w_ih, w_hh, bias, hsz)
        n = lay.inp + hsz
        # [x_t | h_{t-1}] rows; T + 1 slots so step t can write h_t into slot t + 1
        slots = t + 1 if (store or l == 0) else 1
        lay.xh = _buffer(ws, (tag, l, "xh"), (slots, k, b, n), x)
        lay.acts = _buffer(ws, (tag, l, "acts"), (t if store else 1, k, b, h4), x)
        lay.cs = _buffer(ws, (tag, l, "cs"), (t if store else 1, k, b, hsz), x)
        lay.xh_v = lay.xh if slots > 1 else _steps(lay.xh[0], t + 1)
        lay.acts_v = lay.acts if store else _steps(lay.acts[0], t)
        lay.cs_v = lay.cs if store else _steps(lay.cs[0], t)
        # one contiguous [W_ih | W_hh] and its transpose, made once per call
        lay.wcat = _buffer(ws, (tag, l, "wcat"), (k, h4, n), x)
        torch.cat([w_ih, w_hh], dim=2, out=lay.wcat)
        lay.wt = _buffer(ws, (tag, l, "wt"), (k, n, h4), x)
        lay.wt.copy_(lay.wcat.transpose(1, 2))
        lay.xh[0, :, :, lay.inp :].zero_()  # h_{-1} = 0
        layers.append(lay)
    first = layers[0]
    first.xh[:t, :, :, : first.inp].copy_(x.permute(2, 0, 1, 3))
    top = _buffer(ws, (tag, "top"), (k, b, t, hsz), x)  # last layer's h, K-major for the Linear
    top_v = top.permute(2, 0, 1, 3)
    for l, lay in enumerate(layers):
        lay.outs = [lay.xh_v[1:, :, :, lay.inp :], layers[l + 1].xh_v[:t, :, :, :hsz] if l + 1 < nl else top_v]
    tmp = x.new_empty(k, b, hsz)
    for lay in layers:
        lay.bias_b = lay.bias.unsqueeze(1)
    for s in range(t):
        for lay in layers:
            a = lay.acts_v[s]
            torch.baddbmm(lay.bias_b, lay.xh_v[s], lay.wt, out=a)
            _eager_fwd_step(a, lay.cs_v[s - 1] if s > 0 else None, lay.cs_v[s], [o[s] for o in lay.outs], tmp, hsz)
    out = torch.baddbmm(lin_b.unsqueeze(1), top.view(k, b * t, hsz), lin_w.transpose(1, 2)).view(k, b, t, -1)
    if not store:
        return out
    return out, {"layers": layers, "top": top, "gen": gen, "x_shape": tuple(x.shape)}


def eager_backward(state, dout, lin_w, need_x, need_w, ws, grad_out):
    layers, top = state["layers"], state["top"]
    k, b, t, i_sz = state["x_shape"]
    hsz = layers[0].hsz
    h4 = 4 * hsz
    nl = len(layers)
    like = top
    dout = dout.reshape(k, b * t, -1)
    dtop = _buffer(ws, ("eager", "dtop"), (k, b * t, hsz), like)
    torch.bmm(dout, lin_w, out=dtop)
    dtop_v = dtop.view(k, b, t, hsz).permute(2, 0, 1, 3)
    dp = _buffer(ws, ("eager", "dp"), (k, b, h4), like)
    for l, lay in enumerate(layers):
        n = lay.inp + hsz
        # the gradient w.r.t. [x_t | h_{t-1}] of one step; its h part feeds the next (earlier) step
        full = l > 0 or need_x
        lay.dxh = _buffer(ws, ("eager", l, "dxh"), (k, b, n if full else hsz), like)
        lay.dxh.zero_()
        lay.drec = lay.dxh[..., lay.inp :] if full else lay.dxh
        lay.dc = _buffer(ws, ("eager", l, "dc"), (k, b, hsz), like)
        lay.dc.zero_()
        if need_w:
            lay.dwt = like.new_zeros(k, n, h4)
            lay.dacc = like.new_zeros(k, b, h4)
    for l, lay in enumerate(layers):
        lay.dh_above = dtop_v if l == nl - 1 else _steps(layers[l + 1].dxh[..., :hsz], t)
    dx = like.new_empty(k, b, t, i_sz) if need_x else None
    one = like.new_ones(())
    tmp = like.new_empty(k, b, hsz)
    deriv = like.new_empty(k, b, h4)
    for s in range(t - 1, -1, -1):
        for l in range(nl - 1, -1, -1):
            lay = layers[l]
            _eager_bwd_step(lay.acts_v[s], lay.cs_v[s - 1] if s > 0 else None, lay.cs_v[s], lay.dh_above[s], lay.drec,
                            lay.dc, dp, lay.dacc if need_w else None, tmp, deriv, one, hsz)
            if l > 0 or need_x:
                torch.bmm(dp, lay.wcat, out=lay.dxh)
                if l == 0:
                    dx[:, :, s].copy_(lay.dxh[..., :i_sz])
            elif s > 0:
                torch.bmm(dp, lay.w_hh, out=lay.dxh)
            if need_w:
                lay.dwt.baddbmm_(lay.xh_v[s].transpose(1, 2), dp)
    grads, dlin = [], ()
    if need_w:
        for l, lay in enumerate(layers):
            db = lay.dacc.sum(1)
            gl = [lay.dwt[:, : lay.inp].transpose(1, 2), lay.dwt[:, lay.inp :].transpose(1, 2), db, db.clone()]
            if grad_out is not None:
                for dst, src in zip(grad_out[l], gl):
                    dst.copy_(src)
                gl = grad_out[l]
            grads.append(gl)
        dlin = (torch.bmm(dout.transpose(1, 2), top.view(k, b * t, hsz)), dout.sum(1))
        if grad_out is not None:
            for dst, src in zip(grad_out[nl], dlin):
                dst.copy_(src)
            dlin = tuple(grad_out[nl])
    return dx, grads, dlin


