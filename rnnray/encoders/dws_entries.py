"""The per-entry work of the ``dws`` stack as autograd nodes with hand-written backwards.

Why: at the paper preset a ``dws`` step is dominated not by its 48-channel products but by the
full-size passes around them (each a read or write of some 40 MB on zoo A, batch 64) and by fresh
full-size allocations (each first touch of new memory costs about as much as a pass). Plain
autograd multiplies both: every use of ``relu(f)`` (self-map, row sum, column sum, diagonal)
accumulates its own full-size gradient, the diagonal's backward fills a full-size tensor of zeros,
and the residual, the broadcast adds and the product each write a new tensor. These nodes compute
the same values with one new full-size tensor per matrix and layer in each direction.

A matrix tensor's state between layers is ``f`` (the residual stream, (B, rows, cols, d)), ``x =
relu(f)`` and x's sums over rows and over columns (and its diagonal, for the square ``R`` tensors),
from which the layer builds its hubs. One node carries a matrix tensor from one layer to the next:

* :class:`Enter`: ``f -> x, sums(x)`` (the stack's first state).
* :class:`Step`: ``f + x W^T + row[:, :, None] + col[:, None]`` written into ``f`` itself (the
  broadcasts, then the product added by ``addmm`` into ``f``: BLAS accumulates into its output), then
  ``x = relu`` of that (or, after the last layer, ``x = f``, for the invariant pooling) and its sums.

Backward of a node: the gradient of its ``x`` (the next node's fresh product, used by nothing else)
takes the small gradients of the sums as broadcasts, the diagonal's on a view, and the ReLU mask,
all in place; the gradient of its ``f`` is then added in place, and the result is the gradient of
the node's input ``f`` as it is (no copy), from which one product gives the gradient of the input
``x``, one the weight's and two reductions the broadcast terms'. So the residual never meets the
engine's accumulation, and no gradient is a separate full-size temporary.

The arithmetic is the plain layer's (``rnnray.encoders.dws`` with ``reference=True``) up to the
order of float additions; ``tests/test_encoders.py`` compares outputs and every gradient.
"""

from __future__ import annotations

import torch

_threshold_backward_ = torch.ops.aten.threshold_backward.grad_input


def _sums(x: torch.Tensor, diag: bool) -> tuple[torch.Tensor, ...]:
    out = (x.sum(2), x.sum(1))
    if diag:
        out += (torch.diagonal(x, dim1=1, dim2=2).transpose(1, 2).contiguous(),)
    return out


def _gradient_of_f(ctx, g_f, g_x, g_sums) -> torch.Tensor:
    """The full gradient of a node's output ``f`` from the gradients of its outputs f, x and sums."""
    g_rows, g_cols = g_sums[0], g_sums[1]
    rows = None if g_rows is None else g_rows[:, :, None]
    cols = None if g_cols is None else g_cols[:, None]
    if ctx.relu and g_x is not None:
        t = g_x  # the next node's fresh product, used by nothing else: safe to update in place
        for term in (rows, cols):
            if term is not None:
                t.add_(term)
    elif rows is not None and cols is not None:
        t = rows + cols  # the one new full-size tensor (the pooling's sums have no x)
    else:
        t = torch.zeros(ctx.shape, dtype=ctx.dtype, device=ctx.device)
        for term in (rows, cols):
            if term is not None:
                t.add_(term)
    if ctx.diag and len(g_sums) > 2 and g_sums[2] is not None:
        t.diagonal(dim1=1, dim2=2).add_(g_sums[2].transpose(1, 2))
    if ctx.relu:
        (x,) = ctx.saved_tensors[:1]
        _threshold_backward_(t, x, 0, grad_input=t)
    if g_f is not None:
        t.add_(g_f)
    return t


def _remember(ctx, f: torch.Tensor, relu: bool, diag: bool) -> None:
    ctx.relu, ctx.diag, ctx.shape, ctx.dtype, ctx.device = relu, diag, f.shape, f.dtype, f.device
    ctx.set_materialize_grads(False)


def _split(ctx, grads) -> tuple:
    """(gradient of x or None, gradients of the sums) from a node's output gradients."""
    return (grads[0], grads[1:]) if ctx.relu else (None, grads)


class Enter(torch.autograd.Function):
    """f -> ([x,] x.sum(2), x.sum(1)[, diagonal of x as (B, H, d)]): x = relu(f), returned, when
    ``relu``; else x = f and only its sums are returned."""

    @staticmethod
    def forward(ctx, f: torch.Tensor, relu: bool, diag: bool):
        _remember(ctx, f, relu, diag)
        if not relu:
            return _sums(f, diag)
        x = torch.relu(f)
        ctx.save_for_backward(x)
        return (x,) + _sums(x, diag)

    @staticmethod
    def backward(ctx, *grads):
        g_x, g_sums = _split(ctx, grads)
        if g_x is None and all(g is None for g in g_sums):
            return None, None, None
        return _gradient_of_f(ctx, None, g_x, g_sums), None, None


class Step(torch.autograd.Function):
    """(f, x, W, row, col) -> (f', [x',] x'.sum(2), x'.sum(1)[, diagonal of x']) with
    f' = f + x W^T + row[:, :, None] + col[:, None] computed in ``f``'s own memory (``f`` must be
    needed by nothing else), and x' = relu(f'), returned, when ``relu``; else x' = f'."""

    @staticmethod
    def forward(ctx, f, x, weight, row, col, relu: bool, diag: bool):
        _remember(ctx, f, relu, diag)
        d = f.shape[-1]
        f.add_(row[:, :, None]).add_(col[:, None])
        f2 = f.view(-1, d)
        torch.addmm(f2, x.reshape(-1, d), weight.t(), out=f2)  # not addmm_: FLOP counters know addmm
        ctx.mark_dirty(f)
        if not relu:
            ctx.save_for_backward(x, weight)
            return (f,) + _sums(f, diag)
        x_new = torch.relu(f)
        ctx.save_for_backward(x_new, x, weight)
        return (f, x_new) + _sums(x_new, diag)

    @staticmethod
    def backward(ctx, g_f, *grads):
        g_x, g_sums = _split(ctx, grads)
        if g_f is None and g_x is None and all(g is None for g in g_sums):
            return (None,) * 7
        x, weight = ctx.saved_tensors[-2:]
        g = _gradient_of_f(ctx, g_f, g_x, g_sums)
        d = g.shape[-1]
        g2 = g.view(-1, d)
        g_x_in = (g2 @ weight).view(x.shape) if ctx.needs_input_grad[1] else None
        g_w = g2.t() @ x.reshape(-1, d) if ctx.needs_input_grad[2] else None
        return g, g_x_in, g_w, g.sum(2), g.sum(1), None, None
