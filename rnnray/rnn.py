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

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings
from pathlib import Path

import torch

from .weights import Layout


def _cell(gates: torch.Tensor, c: torch.Tensor, hidden: int) -> tuple[torch.Tensor, torch.Tensor]:
    i, f, g, o = gates.chunk(4, dim=-1)
    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    c = f * c + i * g
    return o * torch.tanh(c), c


class Workspace:
    """Buffers reused from one training step to the next.

    Allocating the ~100 MB of per-step activations afresh every step costs more than computing
    them (first-touch page faults). A training loop that runs forward and backward strictly in turn
    (the zoo trainer) passes one Workspace; anything else leaves it out and gets fresh buffers.
    A backward that finds its activations overwritten by a later forward raises instead of
    returning wrong gradients.
    """

    def __init__(self):
        self._bufs: dict = {}
        self.generation = 0

    def get(self, key, shape, like: torch.Tensor) -> torch.Tensor:
        shape = tuple(shape)
        buf = self._bufs.get(key)
        if buf is None or tuple(buf.shape) != shape or buf.dtype != like.dtype or buf.device != like.device:
            buf = like.new_empty(shape)
            self._bufs[key] = buf
        return buf


def _buffer(ws, key, shape, like):
    return like.new_empty(shape) if ws is None else ws.get(key, shape, like)


# ------------------------------------------------------------------------------------------------
# the compiled element-wise kernels (CPU, float32)

_C_SOURCE = r"""
/* Fused LSTM stack + output Linear for many small networks: forward and hand-written backward,
 * CPU, float32.
 *
 * One call runs every layer of every network over the whole sequence. Each network's per-step
 * products (its weights are a few tens of KB) run in register-blocked loops fused with the gate
 * non-linearities, so a step's gates are activated while still in registers. Per network, the work
 * and its order do not depend on K or on the thread count: results do not depend on how networks
 * are batched. Networks are handed to OpenMP threads dynamically, so a thread that is descheduled
 * on a shared machine does not hold the others up.
 *
 * Per network (the k-th block of each buffer; without gradients, a per-thread block):
 *   xh    (T+1, B, n) rows [h_{t-1} | x_t], n = H + I        acts (T, B, 4H) activated (i, f, g, o)
 *   wt    (n, 4H) = [W_hh | W_ih]^T                           wcat (4H, np) = [W_hh | W_ih | 0]
 *   wl    (H, Op) = W_lin^T, zero-padded to Op (a multiple of 16), bl (Op) its bias
 * The cell states are not stored: the backward recomputes them from the stored gates, which is
 * cheaper than moving them through memory twice. Without gradients, acts holds one step.
 * The backward goes layer by layer (top first), each from the last step to the first, with
 * per-thread scratch: the gradients w.r.t. [h_{t-1} | x_t] of every step of the layer (their x part
 * is the dh of the layer below), one step of gate gradients, the cell states, the running dc, and
 * the weight-gradient accumulator (n, 4H), which takes each step's share while it is in cache.
 */
#include <stdint.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define W 16
#define AI static inline __attribute__((always_inline))
typedef float vf __attribute__((vector_size(4 * W)));
typedef int32_t vi __attribute__((vector_size(4 * W)));

AI vf splat(float x) { return (vf){x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x}; }
AI vf ld(const float *p) { vf v; memcpy(&v, p, sizeof v); return v; }
AI void st(float *p, vf v) { memcpy(p, &v, sizeof v); }

#define LOG2E 1.44269504088896341f
#define LN2HI 0.693145751953125f
#define LN2LO 1.428606765330187045e-06f
#define EXP_POLY(r, p)                                   \
    vf p = splat(1.9875691500E-4f);                      \
    p = p * r + splat(1.3981999507E-3f);                 \
    p = p * r + splat(8.3334519073E-3f);                 \
    p = p * r + splat(4.1665795894E-2f);                 \
    p = p * r + splat(1.6666665459E-1f);                 \
    p = p * r + splat(5.0000001201E-1f);                 \
    p = p * (r * r) + (r + splat(1.0f));

#if defined(__AVX512F__)
#include <immintrin.h>
/* exp(x) for x clamped to [-88, 88], about 1 ulp; NaN propagates (max/min return their 2nd operand). */
AI vf vexp(vf x) {
    x = (vf)_mm512_min_ps((__m512)splat(88.0f), _mm512_max_ps((__m512)splat(-88.0f), (__m512)x));
    vf n = (vf)_mm512_roundscale_ps((__m512)(x * splat(LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    vf r = x - n * splat(LN2HI);
    r = r - n * splat(LN2LO);
    EXP_POLY(r, p)
    return (vf)_mm512_scalef_ps((__m512)p, (__m512)n);
}
/* 1/d from the 14-bit estimate and one Newton step (about 1 ulp); a division costs several times more. */
AI vf vrcp(vf d) { vf r = (vf)_mm512_rcp14_ps((__m512)d); return r * (splat(2.0f) - d * r); }
/* streaming store (64-byte aligned p): gates read only by the backward need not displace the cache */
AI void st_nt(float *p, vf v) { _mm512_stream_ps(p, (__m512)v); }
AI void nt_fence(void) { _mm_sfence(); }
#define NT_STORES 1
#else
AI vf sel(vi m, vf a, vf b) { return (vf)((m & (vi)a) | (~m & (vi)b)); }
AI vf vexp(vf x0) {
    vf x = sel(x0 < splat(-87.0f), splat(-87.0f), x0);
    x = sel(x > splat(88.0f), splat(88.0f), x);
    vf t = x * splat(LOG2E) + splat(12582912.0f);
    vf n = t - splat(12582912.0f);
    vi ni = (vi)t - (vi)splat(12582912.0f);
    vf r = x - n * splat(LN2HI);
    r = r - n * splat(LN2LO);
    EXP_POLY(r, p)
    vf e = (vf)((vi)p + (ni << 23));
    return sel(x0 != x0, x0, e);
}
AI vf vrcp(vf d) { return splat(1.0f) / d; }
AI void st_nt(float *p, vf v) { st(p, v); }
AI void nt_fence(void) {}
#define NT_STORES 0
#endif
AI vf vsig(vf x) { return vrcp(splat(1.0f) + vexp(-x)); }
AI vf vtanh(vf x) { return splat(2.0f) * vrcp(splat(1.0f) + vexp(x * splat(-2.0f))) - splat(1.0f); }
/* the cell update, one definition for the forward and the backward's recomputation (same rounding) */
AI vf cell_update(vf f, vf cp, vf i, vf g) { return f * cp + i * g; }

typedef struct {
    int64_t n, np;                                   /* row length of xh (H + I); padded wcat row */
    float *xh; int64_t xh_sk, xh_tid;                /* block address = ptr + k * sk + thread * tid */
    float *acts; int64_t acts_sk, acts_tid, acts_ss; /* ss: step stride; 0 = one reused step (no grad) */
    const float *wt; int64_t wt_sk;
    const float *wcat; int64_t wcat_sk;
    const float *bias; int64_t bias_sk;
    float *dw_ih, *dw_hh, *db_ih, *db_hh;            /* gradients, in the parameters' own layouts */
    int64_t dw_ih_sk, dw_hh_sk, db_ih_sk, db_hh_sk;
} Layer;

#define MAX_LAYERS 8
typedef struct {
    int64_t K, B, T, H, I, O, Op, L, nthreads, need_x, need_w;
    const float *x; int64_t x_sk, x_sb, x_st;        /* input (K, B, T, I), last dim contiguous */
    const float *wl; int64_t wl_sk;                  /* (H, Op) */
    const float *bl; int64_t bl_sk;                  /* (Op) */
    const float *wlin; int64_t wlin_sk;              /* the Linear's weight (O, H) */
    float *out; int64_t out_sk, out_sb, out_st;      /* (K, B, T, O) */
    const float *dout; int64_t dout_sk, dout_sb, dout_st;
    float *dx; int64_t dx_sk, dx_sb, dx_st;
    float *dwl; int64_t dwl_sk;                      /* (O, H) */
    float *dbl; int64_t dbl_sk;                      /* (O) */
    float *scratch; int64_t scratch_tid;             /* per thread */
    Layer layers[MAX_LAYERS];
} Net;

static int thread_id(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/* ---- forward ------------------------------------------------------------------------------- */

/* Gates of R rows and one 16-wide hidden chunk j: bias + [h|x] W^T, activated, then the cell.
 * c holds c_{t-1} on entry (when first is 0) and c_t on exit. */
AI void fwd_block(const int R, const float *xr, int64_t n, const float *wt, int64_t H, int64_t j,
                  const float *bias, float *a, float *c, const int first, const int nt,
                  float *h1, int64_t h1s, float *h2, int64_t h2s) {
    const int64_t H4 = 4 * H;
    vf acc[6][4];
    const vf b0 = ld(bias + j), b1 = ld(bias + H + j), b2 = ld(bias + 2 * H + j), b3 = ld(bias + 3 * H + j);
    for (int r = 0; r < R; r++) { acc[r][0] = b0; acc[r][1] = b1; acc[r][2] = b2; acc[r][3] = b3; }
    for (int64_t q = 0; q < n; q++) {
        const float *w = wt + q * H4 + j;
        const vf w0 = ld(w), w1 = ld(w + H), w2 = ld(w + 2 * H), w3 = ld(w + 3 * H);
        for (int r = 0; r < R; r++) {
            const vf xv = splat(xr[r * n + q]);
            acc[r][0] += xv * w0; acc[r][1] += xv * w1; acc[r][2] += xv * w2; acc[r][3] += xv * w3;
        }
    }
    for (int r = 0; r < R; r++) {
        const vf i = vsig(acc[r][0]), f = vsig(acc[r][1]), g = vtanh(acc[r][2]), o = vsig(acc[r][3]);
        float *ar = a + r * H4;
        if (nt) { st_nt(ar + j, i); st_nt(ar + H + j, f); st_nt(ar + 2 * H + j, g); st_nt(ar + 3 * H + j, o); }
        else { st(ar + j, i); st(ar + H + j, f); st(ar + 2 * H + j, g); st(ar + 3 * H + j, o); }
        const vf cn = first ? i * g : cell_update(f, ld(c + r * H + j), i, g);
        st(c + r * H + j, cn);
        const vf h = o * vtanh(cn);
        st(h1 + r * h1s + j, h);
        if (h2) st(h2 + r * h2s + j, h);
    }
}

#define FWD_ROWS(NT)                                                                                       \
    for (int64_t j = 0; j < H; j += W) {                                                                   \
        int64_t b = 0;                                                                                     \
        for (; b + 6 <= B; b += 6)                                                                         \
            fwd_block(6, xr + b * n, n, wt, H, j, bias, a + b * H4, c + b * H, s == 0, NT, h1 + b * n, n,  \
                      h2 ? h2 + b * h2s : 0, h2s);                                                         \
        for (; b + 2 <= B; b += 2)                                                                         \
            fwd_block(2, xr + b * n, n, wt, H, j, bias, a + b * H4, c + b * H, s == 0, NT, h1 + b * n, n,  \
                      h2 ? h2 + b * h2s : 0, h2s);                                                         \
        for (; b < B; b++)                                                                                 \
            fwd_block(1, xr + b * n, n, wt, H, j, bias, a + b * H4, c + b * H, s == 0, NT, h1 + b * n, n,  \
                      h2 ? h2 + b * h2s : 0, h2s);                                                         \
    }

/* out row (O) = bl + h (H) @ wl (H, Op) */
static void linear_row(const float *h, int64_t H, const float *wl, const float *bl, int64_t O, int64_t Op, float *out) {
    for (int64_t o0 = 0; o0 < Op; o0 += W) {
        vf acc = ld(bl + o0);
        for (int64_t q = 0; q < H; q++) acc += splat(h[q]) * ld(wl + q * Op + o0);
        const int64_t m = O - o0 < W ? O - o0 : W;
        memcpy(out + o0, &acc, (size_t)m * sizeof(float));
    }
}

static void layer_fwd(const Net *N, int l, int64_t k, int tid, int nt) {
    const Layer *ly = &N->layers[l];
    const int64_t B = N->B, T = N->T, H = N->H, H4 = 4 * H, n = ly->n;
    const int store = ly->acts_ss != 0; /* keep every step for the backward (else one reused step) */
    float *xh = ly->xh + k * ly->xh_sk + tid * ly->xh_tid;
    float *acts = ly->acts + k * ly->acts_sk + tid * ly->acts_tid;
    float *c = N->scratch + tid * N->scratch_tid; /* the running cell state, in cache */
    const float *wt = ly->wt + k * ly->wt_sk, *bias = ly->bias + k * ly->bias_sk;
    const Layer *nx = l + 1 < N->L ? &N->layers[l + 1] : 0;
    float *nxh = nx ? nx->xh + k * nx->xh_sk + tid * nx->xh_tid : 0;
    if (l == 0) {
        const float *x = N->x + k * N->x_sk;
        for (int64_t s = 0; s < T; s++)
            for (int64_t b = 0; b < B; b++)
                memcpy(xh + (s * B + b) * n + H, x + b * N->x_sb + s * N->x_st, (size_t)N->I * sizeof(float));
    }
    for (int64_t b = 0; b < B; b++) memset(xh + b * n, 0, (size_t)H * sizeof(float));
    for (int64_t s = 0; s < T; s++) {
        const float *xr = xh + s * B * n;
        float *a = acts + s * ly->acts_ss;
        float *h1 = xh + (s + 1) * B * n;                    /* h_t into the next step's row */
        float *h2 = nx ? nxh + s * B * nx->n + H : 0;        /* and into the next layer's x part */
        const int64_t h2s = nx ? nx->n : 0;
        if (nt && store) { FWD_ROWS(1) } else { FWD_ROWS(0) }
        if (!nx) {
            const float *wl = N->wl + k * N->wl_sk, *bl = N->bl + k * N->bl_sk;
            float *out = N->out + k * N->out_sk + s * N->out_st;
            for (int64_t b = 0; b < B; b++) linear_row(h1 + b * n, H, wl, bl, N->O, N->Op, out + b * N->out_sb);
        }
    }
}

void lstm_forward(const Net *N) {
    const int64_t K = N->K;
    const int nt = (int)N->nthreads;
    (void)nt;
    /* streaming stores need 64-byte aligned rows: true for PyTorch's allocations and H % 16 == 0 */
    int aligned = NT_STORES;
    for (int l = 0; l < N->L; l++) {
        const Layer *ly = &N->layers[l];
        if ((uintptr_t)ly->acts % 64 || (ly->acts_sk | ly->acts_ss) % 16) aligned = 0;
    }
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt) if (nt > 1 && K > 1)
    for (int64_t k = 0; k < K; k++) {
        const int tid = thread_id();
        for (int l = 0; l < N->L; l++) layer_fwd(N, l, k, tid, aligned);
        nt_fence();
    }
}

/* ---- backward ------------------------------------------------------------------------------ */

/* One row and 16-wide hidden chunk j of the cell's backward: gate pre-activation gradients. */
AI void cell_bwd(const float *a, const float *c, const float *cp, const float *dha, const float *dhb,
                 float *dc, float *dp, int64_t H, int64_t j) {
    const vf i = ld(a + j), f = ld(a + H + j), g = ld(a + 2 * H + j), o = ld(a + 3 * H + j);
    vf dh = ld(dha + j);
    if (dhb) dh += ld(dhb + j);
    const vf one = splat(1.0f);
    const vf tc = vtanh(ld(c + j));
    const vf dcs = ld(dc + j) + dh * o * (one - tc * tc);
    st(dp + j, dcs * g * (i * (one - i)));
    st(dp + H + j, cp ? dcs * ld(cp + j) * (f * (one - f)) : splat(0.0f));
    st(dp + 2 * H + j, dcs * i * (one - g * g));
    st(dp + 3 * H + j, dh * tc * (o * (one - o)));
    st(dc + j, dcs * f);
}

/* out (R rows, V 16-wide columns from c0) = dp rows (length H4) @ wc (H4 rows of length np) */
AI void dx_block(const int R, const int V, const float *dp, int64_t H4, const float *wc, int64_t np, int64_t c0,
                 float *out) {
    vf acc[24][4];
    for (int r = 0; r < R; r++)
        for (int v = 0; v < V; v++) acc[r][v] = splat(0.0f);
    for (int64_t g = 0; g < H4; g++) {
        vf w[4];
        for (int v = 0; v < V; v++) w[v] = ld(wc + g * np + c0 + v * W);
        for (int r = 0; r < R; r++) {
            const vf xv = splat(dp[r * H4 + g]);
            for (int v = 0; v < V; v++) acc[r][v] += xv * w[v];
        }
    }
    for (int r = 0; r < R; r++)
        for (int v = 0; v < V; v++) st(out + r * np + c0 + v * W, acc[r][v]);
}

/* rows in register blocks of about 24 accumulators, then remainders of 4 and 1 rows */
#define DX_ROWS(RMAIN, V)                                                                                   \
    {                                                                                                       \
        int64_t b = 0;                                                                                      \
        for (; b + RMAIN <= B; b += RMAIN) dx_block(RMAIN, V, dp0 + b * H4, H4, wc, np, c0, out0 + b * np); \
        for (; b + 4 <= B; b += 4) dx_block(4, V, dp0 + b * H4, H4, wc, np, c0, out0 + b * np);            \
        for (; b < B; b++) dx_block(1, V, dp0 + b * H4, H4, wc, np, c0, out0 + b * np);                    \
    }

/* B rows of dp (B, H4) @ wc (H4, np) -> out (B, np), the first ncols columns (a multiple of 16) */
static void dx_rows(int64_t B, const float *dp0, int64_t H4, const float *wc, int64_t np, int64_t ncols, float *out0) {
    for (int64_t c0 = 0; c0 < ncols; c0 += 4 * W) {
        const int64_t V = (ncols - c0) / W < 4 ? (ncols - c0) / W : 4;
        switch (V) {
        case 1: DX_ROWS(24, 1) break;
        case 2: DX_ROWS(12, 2) break;
        case 3: DX_ROWS(8, 3) break;
        default: DX_ROWS(6, 4) break;
        }
    }
}

/* acc (R rows q.. of the weight gradient, 64 columns from c0) += sum over rows of xh[row][q + r] dp[row][c] */
AI void dw_block(const int R, int64_t rows, const float *xh, int64_t n, int64_t q, const float *dp, int64_t H4,
                 int64_t c0, float *acc_mem, int first) {
    vf acc[6][4];
    for (int r = 0; r < R; r++)
        for (int v = 0; v < 4; v++) acc[r][v] = first ? splat(0.0f) : ld(acc_mem + (q + r) * H4 + c0 + v * W);
    for (int64_t row = 0; row < rows; row++) {
        const float *d = dp + row * H4 + c0;
        const vf d0 = ld(d), d1 = ld(d + W), d2 = ld(d + 2 * W), d3 = ld(d + 3 * W);
        const float *xr = xh + row * n + q;
        for (int r = 0; r < R; r++) {
            const vf xv = splat(xr[r]);
            acc[r][0] += xv * d0; acc[r][1] += xv * d1; acc[r][2] += xv * d2; acc[r][3] += xv * d3;
        }
    }
    for (int r = 0; r < R; r++)
        for (int v = 0; v < 4; v++) st(acc_mem + (q + r) * H4 + c0 + v * W, acc[r][v]);
}

/* dWt (n, H4) (+)= xh^T dp over the B rows of one step, in acc_mem (first: overwrite) */
static void dw_step(int64_t B, int64_t n, int64_t H4, const float *x0, const float *d0, float *acc_mem, int first) {
    for (int64_t c0 = 0; c0 < H4; c0 += 4 * W) {
        int64_t q = 0;
        for (; q + 6 <= n; q += 6) dw_block(6, B, x0, n, q, d0, H4, c0, acc_mem, first);
        for (; q + 4 <= n; q += 4) dw_block(4, B, x0, n, q, d0, H4, c0, acc_mem, first);
        for (; q + 2 <= n; q += 2) dw_block(2, B, x0, n, q, d0, H4, c0, acc_mem, first);
        for (; q < n; q++) dw_block(1, B, x0, n, q, d0, H4, c0, acc_mem, first);
    }
}

/* the accumulated dWt and bias gradient, written in the parameters' own layouts */
static void store_weight_grads(const Layer *ly, int64_t k, int64_t H, const float *dwt, const float *db) {
    const int64_t n = ly->n, H4 = 4 * H, I = n - H;
    float *dih = ly->dw_ih + k * ly->dw_ih_sk, *dhh = ly->dw_hh + k * ly->dw_hh_sk;
    for (int64_t q = 0; q < n; q++) /* row q < H: a column of W_hh; else of W_ih */
        for (int64_t g = 0; g < H4; g++) {
            if (q < H) dhh[g * H + q] = dwt[q * H4 + g];
            else dih[g * I + (q - H)] = dwt[q * H4 + g];
        }
    memcpy(ly->db_ih + k * ly->db_ih_sk, db, (size_t)H4 * sizeof(float));
    memcpy(ly->db_hh + k * ly->db_hh_sk, db, (size_t)H4 * sizeof(float));
}

/* the Linear's gradients: dW (O, H) = sum over rows of dout[row][o] h[row], db = sum of dout rows */
static void linear_grads(const Net *N, int64_t k, const float *xh, int64_t n) {
    const int64_t B = N->B, T = N->T, H = N->H, O = N->O;
    const float *dout = N->dout + k * N->dout_sk;
    float *dwl = N->dwl + k * N->dwl_sk, *dbl = N->dbl + k * N->dbl_sk;
    for (int64_t o0 = 0; o0 < O; o0 += 4) {
        const int64_t no = O - o0 < 4 ? O - o0 : 4;
        for (int64_t j = 0; j < H; j += 4 * W) {
            const int64_t nv = (H - j) / W < 4 ? (H - j) / W : 4;
            vf acc[4][4];
            for (int e = 0; e < 4; e++)
                for (int v = 0; v < 4; v++) acc[e][v] = splat(0.0f);
            for (int64_t s = 0; s < T; s++)
                for (int64_t b = 0; b < B; b++) {
                    const float *h = xh + ((s + 1) * B + b) * n + j, *d = dout + b * N->dout_sb + s * N->dout_st + o0;
                    for (int e = 0; e < no; e++) {
                        const vf dv = splat(d[e]);
                        for (int v = 0; v < nv; v++) acc[e][v] += dv * ld(h + v * W);
                    }
                }
            for (int e = 0; e < no; e++)
                for (int v = 0; v < nv; v++) st(dwl + (o0 + e) * H + j + v * W, acc[e][v]);
        }
    }
    for (int64_t o = 0; o < O; o++) {
        float sum = 0.0f;
        for (int64_t s = 0; s < T; s++)
            for (int64_t b = 0; b < B; b++) sum += dout[b * N->dout_sb + s * N->dout_st + o];
        dbl[o] = sum;
    }
}

static void net_bwd_k(const Net *N, int64_t k, int tid) {
    const int64_t B = N->B, T = N->T, H = N->H, H4 = 4 * H, L = N->L, O = N->O;
    int64_t npmax = 0;
    for (int l = 0; l < L; l++) npmax = N->layers[l].np > npmax ? N->layers[l].np : npmax;
    float *base = N->scratch + tid * N->scratch_tid;
    float *dxs[2] = {base, base + T * B * npmax}; /* (T, B, np) each: gradient w.r.t. [h_{t-1} | x_t] */
    float *cs = dxs[1] + T * B * npmax;           /* (T, B, H) recomputed cell states */
    float *dp = cs + T * B * H;                   /* (B, H4): one step's gate pre-activation gradients */
    float *dc = dp + B * H4;                      /* (B, H) */
    float *dht = dc + B * H;                      /* (B, H): the top layer's dh, from the Linear */
    float *db = dht + B * H;                      /* (H4) */
    float *dwt = db + H4;                         /* (npmax, H4) */
    const float *above = 0;                       /* the layer above's dx: its x part is our dh */
    int64_t above_np = 0;
    const float *wlin = N->wlin + k * N->wlin_sk, *dout = N->dout + k * N->dout_sk;
    for (int l = (int)L - 1; l >= 0; l--) {
        const Layer *ly = &N->layers[l];
        const int64_t np = ly->np, n = ly->n;
        const int64_t ncols = (l > 0 || N->need_x) ? np : H;
        float *dxb = dxs[l & 1];
        const float *acts = ly->acts + k * ly->acts_sk;
        const float *xh = ly->xh + k * ly->xh_sk;
        const float *wc = ly->wcat + k * ly->wcat_sk;
        for (int64_t row = 0; row < T * B; row++) /* the cell states again, from the stored gates */
            for (int64_t j = 0; j < H; j += W) {
                const float *a = acts + row * H4;
                const vf i = ld(a + j), f = ld(a + H + j), g = ld(a + 2 * H + j);
                st(cs + row * H + j, row < B ? i * g : cell_update(f, ld(cs + (row - B) * H + j), i, g));
            }
        memset(dc, 0, (size_t)(B * H) * sizeof(float));
        memset(db, 0, (size_t)H4 * sizeof(float));
        for (int64_t s = T - 1; s >= 0; s--) {
            if (!above) /* dh of the last layer's outputs: dout W_lin */
                for (int64_t b = 0; b < B; b++) {
                    const float *d = dout + b * N->dout_sb + s * N->dout_st;
                    for (int64_t j = 0; j < H; j += W) {
                        vf acc = splat(0.0f);
                        for (int64_t o = 0; o < O; o++) acc += splat(d[o]) * ld(wlin + o * H + j);
                        st(dht + b * H + j, acc);
                    }
                }
            for (int64_t b = 0; b < B; b++) {
                const int64_t row = s * B + b;
                const float *dha = above ? above + row * above_np + H : dht + b * H;
                const float *dhb = s < T - 1 ? dxb + (row + B) * np : 0;
                const float *a = acts + row * H4, *c = cs + row * H, *cp = s > 0 ? cs + (row - B) * H : 0;
                for (int64_t j = 0; j < H; j += W) cell_bwd(a, c, cp, dha, dhb, dc + b * H, dp + b * H4, H, j);
            }
            if (s > 0 || ncols > H) dx_rows(B, dp, H4, wc, np, ncols, dxb + s * B * np);
            if (N->need_w) {
                dw_step(B, n, H4, xh + s * B * n, dp, dwt, s == T - 1);
                for (int64_t c0 = 0; c0 < H4; c0 += W) {
                    vf sum = ld(db + c0);
                    for (int64_t b = 0; b < B; b++) sum += ld(dp + b * H4 + c0);
                    st(db + c0, sum);
                }
            }
        }
        if (N->need_w) {
            store_weight_grads(ly, k, H, dwt, db);
            if (l == L - 1) linear_grads(N, k, xh, n);
        }
        if (l == 0 && N->need_x) {
            float *dx = N->dx + k * N->dx_sk;
            for (int64_t s = 0; s < T; s++)
                for (int64_t b = 0; b < B; b++)
                    memcpy(dx + b * N->dx_sb + s * N->dx_st, dxb + (s * B + b) * np + H, (size_t)N->I * sizeof(float));
        }
        above = dxb;
        above_np = np;
    }
}

void lstm_backward(const Net *N) {
    const int64_t K = N->K;
    const int nt = (int)N->nthreads;
    (void)nt;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt) if (nt > 1 && K > 1)
    for (int64_t k = 0; k < K; k++) net_bwd_k(N, k, thread_id());
}
"""

_MAX_LAYERS = 8  # MAX_LAYERS in the C source
_lib_lock = threading.Lock()
_lib_state: dict = {}


def _cache_dir() -> Path:
    root = os.environ.get("RNNRAY_KERNEL_CACHE")
    if root:
        return Path(root)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "rnnray" / "kernels"


def _cpu_fingerprint() -> str:
    """What -march=native depends on: a library built for one CPU is never loaded on another."""
    text = platform.machine() + platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features", "model name")):
                    text += line
                    if line.startswith(("flags", "Features")):
                        break
    except OSError:
        pass
    return text


def _openmp_flags() -> list[list[str]]:
    """-fopenmp only where PyTorch's own runtime is GNU OpenMP: the kernels then share its thread pool
    (the already-loaded libgomp.so.1 satisfies the library's dependency); otherwise single-threaded."""
    try:
        with open("/proc/self/maps") as f:
            if "libgomp" in f.read():
                return [["-fopenmp"], []]
    except OSError:
        pass
    return [[]]


def _compile(cc: str, out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "lstm_kernels.c"
        src.write_text(_C_SOURCE)
        last = None
        for omp in _openmp_flags():
            for arch in (["-march=native"], []):
                tmp_out = Path(tmp) / "lstm_kernels.so"
                cmd = [cc, "-O3", *arch, *omp, "-std=gnu11", "-fPIC", "-shared", str(src), "-o", str(tmp_out)]
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
                if proc.returncode == 0:
                    out.parent.mkdir(parents=True, exist_ok=True)
                    fd, staged = tempfile.mkstemp(dir=out.parent, suffix=".so.tmp")
                    os.close(fd)
                    shutil.copyfile(tmp_out, staged)
                    os.replace(staged, out)  # atomic: concurrent builders (Ray actors) never see half a file
                    return
                last = proc.stderr.strip()[-500:]
        raise RuntimeError(f"C compiler failed: {last}")


def _load_library():
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        raise RuntimeError("no C compiler found (set CC)")
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    key = hashlib.sha256("\0".join([_C_SOURCE, cc, version, _cpu_fingerprint(), sys.platform, str(_openmp_flags())]).encode()).hexdigest()[:20]
    path = _cache_dir() / f"lstm_kernels_{key}.so"
    if not path.exists():
        try:
            _compile(cc, path)
        except OSError:  # cache directory not writable: build in a private temporary one
            path = Path(tempfile.mkdtemp(prefix="rnnray_kernels_")) / path.name
            _compile(cc, path)
    lib = ctypes.CDLL(str(path))
    for name in ("lstm_forward", "lstm_backward"):
        fn = getattr(lib, name)
        fn.argtypes = [ctypes.POINTER(_CNet)]
        fn.restype = None
    return lib


def _self_test(lib) -> None:
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
        weights = _weights(tensors, 3)
        out, state = _forward(use, x, weights, tensors[-2], tensors[-1], None, store=True)
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
                lib = _load_library()
                _self_test(lib)
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


def _kernels_for(x: torch.Tensor, layout: Layout):
    if x.device.type != "cpu" or x.dtype != torch.float32 or not kernels_enabled():
        return None
    if layout.hidden % 16 or layout.num_layers > _MAX_LAYERS or x.shape[2] == 0:
        return None
    return _library()


# ------------------------------------------------------------------------------------------------
# the compiled path: one C call for the forward of all layers and networks, one for the backward


class _CLayer(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int64 if kind == "i" else ctypes.c_void_p) for name, kind in (
        ("n", "i"), ("np", "i"),
        ("xh", "p"), ("xh_sk", "i"), ("xh_tid", "i"),
        ("acts", "p"), ("acts_sk", "i"), ("acts_tid", "i"), ("acts_ss", "i"),
        ("wt", "p"), ("wt_sk", "i"), ("wcat", "p"), ("wcat_sk", "i"), ("bias", "p"), ("bias_sk", "i"),
        ("dw_ih", "p"), ("dw_hh", "p"), ("db_ih", "p"), ("db_hh", "p"),
        ("dw_ih_sk", "i"), ("dw_hh_sk", "i"), ("db_ih_sk", "i"), ("db_hh_sk", "i"),
    )]


class _CNet(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int64 if kind == "i" else ctypes.c_void_p) for name, kind in (
        ("K", "i"), ("B", "i"), ("T", "i"), ("H", "i"), ("I", "i"), ("O", "i"), ("Op", "i"), ("L", "i"),
        ("nthreads", "i"), ("need_x", "i"), ("need_w", "i"),
        ("x", "p"), ("x_sk", "i"), ("x_sb", "i"), ("x_st", "i"),
        ("wl", "p"), ("wl_sk", "i"), ("bl", "p"), ("bl_sk", "i"), ("wlin", "p"), ("wlin_sk", "i"),
        ("out", "p"), ("out_sk", "i"), ("out_sb", "i"), ("out_st", "i"),
        ("dout", "p"), ("dout_sk", "i"), ("dout_sb", "i"), ("dout_st", "i"),
        ("dx", "p"), ("dx_sk", "i"), ("dx_sb", "i"), ("dx_st", "i"),
        ("dwl", "p"), ("dwl_sk", "i"), ("dbl", "p"), ("dbl_sk", "i"),
        ("scratch", "p"), ("scratch_tid", "i"),
    )] + [("layers", _CLayer * _MAX_LAYERS)]


def _padded(n: int) -> int:
    return -(-n // 16) * 16


def _c_forward(lib, x, weights, lin_w, lin_b, ws, store, gen):
    k, b, t, i_sz = x.shape
    hsz = weights[0][1].shape[2]
    h4, nl = 4 * hsz, len(weights)
    o_sz = lin_w.shape[1]
    o_pad = _padded(o_sz)
    nt = torch.get_num_threads()
    if x.stride(3) != 1:
        x = x.contiguous()
    tag = ("c", "train" if store else "eval")
    net = _CNet(K=k, B=b, T=t, H=hsz, I=i_sz, O=o_sz, Op=o_pad, L=nl, nthreads=nt)
    net.x, net.x_sk, net.x_sb, net.x_st = x.data_ptr(), x.stride(0), x.stride(1), x.stride(2)
    keep = [x]
    for l, (w_ih, w_hh, bias) in enumerate(weights):
        n = hsz + w_ih.shape[2]
        npad = _padded(n)
        wcat = _buffer(ws, (tag, l, "wcat"), (k, h4, npad), x)  # [W_hh | W_ih | 0]
        wcat[..., :hsz].copy_(w_hh)
        wcat[..., hsz:n].copy_(w_ih)
        wcat[..., n:].zero_()
        wt = _buffer(ws, (tag, l, "wt"), (k, n, h4), x)
        wt.copy_(wcat[..., :n].transpose(1, 2))
        bias = bias.contiguous()
        if store:  # kept for the backward, one block per network
            xh = _buffer(ws, (tag, l, "xh"), (k, t + 1, b, n), x)
            acts = _buffer(ws, (tag, l, "acts"), (k, t, b, h4), x)
            per_k, per_tid, step = 1, 0, b * h4
        else:  # one block per thread, and one time step of gates
            xh = _buffer(ws, (tag, l, "xh"), (nt, t + 1, b, n), x)
            acts = _buffer(ws, (tag, l, "acts"), (nt, b, h4), x)
            per_k, per_tid, step = 0, 1, 0
        ly = net.layers[l]
        ly.n, ly.np = n, npad
        ly.xh, ly.xh_sk, ly.xh_tid = xh.data_ptr(), per_k * xh.stride(0), per_tid * xh.stride(0)
        ly.acts, ly.acts_sk, ly.acts_tid, ly.acts_ss = acts.data_ptr(), per_k * acts.stride(0), per_tid * acts.stride(0), step
        ly.wt, ly.wt_sk = wt.data_ptr(), wt.stride(0)
        ly.wcat, ly.wcat_sk = wcat.data_ptr(), wcat.stride(0)
        ly.bias, ly.bias_sk = bias.data_ptr(), bias.stride(0)
        keep += [xh, acts, wt, wcat, bias]
    wl = _buffer(ws, (tag, "wl"), (k, hsz, o_pad), x)  # W_lin^T, zero-padded
    wl[..., :o_sz].copy_(lin_w.transpose(1, 2))
    wl[..., o_sz:].zero_()
    bl = _buffer(ws, (tag, "bl"), (k, o_pad), x)
    bl[:, :o_sz].copy_(lin_b)
    bl[:, o_sz:].zero_()
    lin_w = lin_w if lin_w.stride(2) == 1 and lin_w.stride(1) == hsz else lin_w.contiguous()
    fscratch = _buffer(ws, (tag, "fscratch"), (nt, b * hsz), x)  # each thread's running cell state
    out = x.new_empty(k, b, t, o_sz)
    net.wl, net.wl_sk, net.bl, net.bl_sk = wl.data_ptr(), wl.stride(0), bl.data_ptr(), bl.stride(0)
    net.wlin, net.wlin_sk = lin_w.data_ptr(), lin_w.stride(0)
    net.out, net.out_sk, net.out_sb, net.out_st = out.data_ptr(), out.stride(0), out.stride(1), out.stride(2)
    net.scratch, net.scratch_tid = fscratch.data_ptr(), fscratch.stride(0)
    keep += [wl, bl, lin_w, fscratch]
    lib.lstm_forward(ctypes.byref(net))
    if not store:
        return out
    return out, {"net": net, "keep": keep, "gen": gen, "x_shape": (k, b, t, i_sz)}


def _c_backward(lib, state, dout, lin_w, need_x, need_w, ws, grad_out):
    net = state["net"]
    k, b, t, i_sz = state["x_shape"]
    hsz, nl, o_sz = net.H, net.L, net.O
    h4 = 4 * hsz
    like = state["keep"][0]
    dout = dout.contiguous()
    nt = torch.get_num_threads()
    npmax = max(net.layers[l].np for l in range(nl))
    scratch = _buffer(ws, ("c", "scratch"), (nt, t * b * (2 * npmax + hsz) + b * (h4 + 2 * hsz) + h4 + npmax * h4), like)
    net.nthreads, net.need_x, net.need_w = nt, int(need_x), int(need_w)
    net.dout, net.dout_sk, net.dout_sb, net.dout_st = dout.data_ptr(), dout.stride(0), dout.stride(1), dout.stride(2)
    net.scratch, net.scratch_tid = scratch.data_ptr(), scratch.stride(0)
    dx = like.new_empty(k, b, t, i_sz) if need_x else None
    if need_x:
        net.dx, net.dx_sk, net.dx_sb, net.dx_st = dx.data_ptr(), dx.stride(0), dx.stride(1), dx.stride(2)
    grads, dlin = [], ()
    if need_w:
        for l in range(nl):
            inp = net.layers[l].n - hsz
            if grad_out is not None:
                gl = grad_out[l]
            else:
                gl = [like.new_empty(k, h4, inp), like.new_empty(k, h4, hsz), like.new_empty(k, h4), like.new_empty(k, h4)]
            ly = net.layers[l]
            ly.dw_ih, ly.dw_hh, ly.db_ih, ly.db_hh = (_row_block(g).data_ptr() for g in gl)
            ly.dw_ih_sk, ly.dw_hh_sk, ly.db_ih_sk, ly.db_hh_sk = (g.stride(0) for g in gl)
            grads.append(gl)
        dlin = tuple(grad_out[nl]) if grad_out is not None else (like.new_empty(k, o_sz, hsz), like.new_empty(k, o_sz))
        net.dwl, net.dwl_sk = _row_block(dlin[0]).data_ptr(), dlin[0].stride(0)
        net.dbl, net.dbl_sk = _row_block(dlin[1]).data_ptr(), dlin[1].stride(0)
    lib.lstm_backward(ctypes.byref(net))
    return dx, grads, dlin


def _row_block(g: torch.Tensor) -> torch.Tensor:
    """The kernels write each network's block of a gradient as one contiguous run: check that."""
    if not g[0].is_contiguous():
        raise ValueError("gradient buffer blocks must be contiguous")
    return g


# ------------------------------------------------------------------------------------------------
# the PyTorch-ops path (CUDA, float64, no C compiler, RNNRAY_COMPILE=0): the same algorithm,
# time-major, one product per step and layer, element-wise work as a handful of in-place ops


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


def _eager_forward(x, weights, lin_w, lin_b, ws, store, gen):
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


def _eager_backward(state, dout, lin_w, need_x, need_w, ws, grad_out):
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


# ------------------------------------------------------------------------------------------------
# dispatch and the autograd node


def _forward(lib, x, weights, lin_w, lin_b, ws, store, gen=None):
    """x (K, B, T, I) -> (K, B, T, O); with ``store`` also what the backward needs."""
    if lib is not None:
        return _c_forward(lib, x, weights, lin_w, lin_b, ws, store, gen)
    return _eager_forward(x, weights, lin_w, lin_b, ws, store, gen)


def _backward(lib, state, dout, lin_w, need_x, need_w, ws, grad_out):
    """-> (dx, [per layer (dW_ih, dW_hh, db_ih, db_hh)], (dW_linear, db_linear)).

    ``grad_out``: where to write the parameter gradients (per layer the four, then the Linear's
    two), or None for fresh tensors.
    """
    if lib is not None:
        return _c_backward(lib, state, dout, lin_w, need_x, need_w, ws, grad_out)
    return _eager_backward(state, dout, lin_w, need_x, need_w, ws, grad_out)


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
        lib = _kernels_for(x, layout)
        out, state = _forward(lib, x, _weights(params, layout.num_layers), params[-2], params[-1], ws, True, gen)
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
        lib = _kernels_for(x, layout)
        return _forward(lib, x, _weights(plist, layout.num_layers), plist[-2], plist[-1], workspace, False)


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
