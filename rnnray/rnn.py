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
 *   hs    (T+1, B, H) the layer's outputs, slot 0 = h_{-1} = 0; the next layer reads its input there
 *   acts  (T, B, 4H) activated gates (i, f, g, o)             cs (T, B, H) cell states
 * and, rebuilt per network in per-thread scratch from the parameters as they are laid out:
 *   wt    (H + I, 4H) = [W_hh | W_ih]^T, bias = b_ih + b_hh  wcat (4H, np) = [W_hh | W_ih | 0]
 *   wl    (H, Op) = W_lin^T, zero-padded to Op (a multiple of 16), bl (Op) its bias
 * Without gradients, acts and cs hold one step. Gates and cell states go out with streaming stores
 * (read again only by the backward), and the backward prefetches the step it will read next.
 * The backward goes layer by layer (top first), each from the last step to the first, with
 * per-thread scratch: the gradients w.r.t. [h_{t-1} | x_t] of every step of the layer (their x part
 * is the dh of the layer below), one step of gate gradients, the running dc, and the weight-gradient
 * accumulator (H + I, 4H), which takes each step's share while it is in cache.
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

/* The one product kernel: acc[r][v] += sum over g < kdim of a[r * ars + g * acs] * b[g * ldb + v * bvs .. + 16].
 * R rows by V 16-wide vectors of accumulators stay in registers (R and V are compile-time constants
 * at every call), each step loads V vectors of b and broadcasts R scalars of a. */
AI void mm(const int R, const int V, int64_t kdim, const float *a, int64_t ars, int64_t acs,
           const float *b, int64_t ldb, int64_t bvs, vf acc[][4]) {
    for (int64_t g = 0; g < kdim; g++) {
        vf w[4];
        for (int v = 0; v < V; v++) w[v] = ld(b + g * ldb + v * bvs);
        for (int r = 0; r < R; r++) {
            const vf x = splat(a[r * ars + g * acs]);
            for (int v = 0; v < V; v++) acc[r][v] += x * w[v];
        }
    }
}

/* out[r][c0 + 16 v ..] = (init: zero, or the vector at `row`, or out itself) + a b: the
 * rows x columns product of a block of rows, for any row count and up to 64 columns. */
enum { INIT_ZERO, INIT_ROW, INIT_OUT };
AI void mm_store(const int R, const int V, int64_t kdim, const float *a, int64_t ars, int64_t acs, const float *b,
                 int64_t ldb, const int init, const float *row, float *out, int64_t ldo) {
    vf acc[24][4];
    for (int r = 0; r < R; r++)
        for (int v = 0; v < V; v++)
            acc[r][v] = init == INIT_ZERO ? splat(0.0f) : init == INIT_ROW ? ld(row + v * W) : ld(out + r * ldo + v * W);
    mm(R, V, kdim, a, ars, acs, b, ldb, W, acc);
    for (int r = 0; r < R; r++)
        for (int v = 0; v < V; v++) st(out + r * ldo + v * W, acc[r][v]);
}

#define MM_ROWS(RMAIN, V)                                                                                    \
    {                                                                                                        \
        int64_t r = 0;                                                                                       \
        for (; r + RMAIN <= rows; r += RMAIN)                                                                \
            mm_store(RMAIN, V, kdim, a + r * ars, ars, acs, b + c0, ldb, init, row ? row + c0 : 0,           \
                     out + r * ldo + c0, ldo);                                                               \
        for (; r + 4 <= rows; r += 4)                                                                        \
            mm_store(4, V, kdim, a + r * ars, ars, acs, b + c0, ldb, init, row ? row + c0 : 0,               \
                     out + r * ldo + c0, ldo);                                                               \
        for (; r + 2 <= rows; r += 2)                                                                        \
            mm_store(2, V, kdim, a + r * ars, ars, acs, b + c0, ldb, init, row ? row + c0 : 0,               \
                     out + r * ldo + c0, ldo);                                                               \
        for (; r < rows; r++)                                                                                \
            mm_store(1, V, kdim, a + r * ars, ars, acs, b + c0, ldb, init, row ? row + c0 : 0,               \
                     out + r * ldo + c0, ldo);                                                               \
    }

/* out (rows, ncols) (init) + a (rows, kdim; strides ars, acs) @ b (kdim, ncols; row stride ldb);
 * ncols a multiple of 16 */
static void mm_rows(int64_t rows, int64_t ncols, int64_t kdim, const float *a, int64_t ars, int64_t acs,
                    const float *b, int64_t ldb, int init, const float *row, float *out, int64_t ldo) {
    for (int64_t c0 = 0; c0 < ncols; c0 += 4 * W) {
        const int64_t V = (ncols - c0) / W < 4 ? (ncols - c0) / W : 4;
        switch (V) {
        case 1: MM_ROWS(24, 1) break;
        case 2: MM_ROWS(12, 2) break;
        case 3: MM_ROWS(8, 3) break;
        default: MM_ROWS(6, 4) break;
        }
    }
}

typedef struct {
    int64_t I, np;                                   /* input size; padded wcat row (>= H + I) */
    float *hs; int64_t hs_sk, hs_tid;                /* block address = ptr + k * sk + thread * tid */
    float *acts; int64_t acts_sk, acts_tid, acts_ss; /* ss: step stride; 0 = one reused step (no grad) */
    float *cs; int64_t cs_sk;                        /* with gradients only */
    const float *w_ih, *w_hh, *b_ih, *b_hh;          /* parameters: (4H, I), (4H, H), (4H), (4H) */
    int64_t w_ih_sk, w_hh_sk, b_ih_sk, b_hh_sk;
    float *dw_ih, *dw_hh, *db_ih, *db_hh;            /* gradients, in the parameters' own layouts */
    int64_t dw_ih_sk, dw_hh_sk, db_ih_sk, db_hh_sk;
} Layer;

#define MAX_LAYERS 8
typedef struct {
    int64_t K, B, T, H, I, O, Op, L, nmax, nthreads, need_x, need_w; /* nmax: largest H + I */
    const float *x; int64_t x_sk, x_sb, x_st;        /* input (K, B, T, I), last dim contiguous */
    const float *wlin; int64_t wlin_sk;              /* the Linear's weight (O, H) */
    const float *blin; int64_t blin_sk;              /* and bias (O) */
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

/* acc += (R rows of) [h_{t-1} | x_t] @ W^T for one 16-wide hidden chunk j, all four gates: the h part
 * (skipped at t = 0, where h_{-1} = 0) and the x part come from two places */
AI void gates_block(const int R, vf acc[][4], const float *hr, int64_t hrs, const float *xr, int64_t xrs, int64_t I,
                    const float *wt, int64_t H, int64_t j) {
    const int64_t H4 = 4 * H;
    if (hr)
        for (int64_t q = 0; q < H; q++) {
            const float *w = wt + q * H4 + j;
            const vf w0 = ld(w), w1 = ld(w + H), w2 = ld(w + 2 * H), w3 = ld(w + 3 * H);
            for (int r = 0; r < R; r++) {
                const vf xv = splat(hr[r * hrs + q]);
                acc[r][0] += xv * w0; acc[r][1] += xv * w1; acc[r][2] += xv * w2; acc[r][3] += xv * w3;
            }
        }
    for (int64_t q = 0; q < I; q++) {
        const float *w = wt + (H + q) * H4 + j;
        const vf w0 = ld(w), w1 = ld(w + H), w2 = ld(w + 2 * H), w3 = ld(w + 3 * H);
        for (int r = 0; r < R; r++) {
            const vf xv = splat(xr[r * xrs + q]);
            acc[r][0] += xv * w0; acc[r][1] += xv * w1; acc[r][2] += xv * w2; acc[r][3] += xv * w3;
        }
    }
}

/* R rows of one step, hidden chunk j: gates, activations, cell (c: c_{t-1} in, c_t out), h_t */
AI void fwd_block(const int R, const float *hr, const float *xr, int64_t xrs, int64_t I, const float *wt, int64_t H,
                  int64_t j, const float *bias, float *a, float *c, float *cso, const int nt, float *h) {
    const int64_t H4 = 4 * H;
    vf acc[6][4];
    const vf b0 = ld(bias + j), b1 = ld(bias + H + j), b2 = ld(bias + 2 * H + j), b3 = ld(bias + 3 * H + j);
    for (int r = 0; r < R; r++) { acc[r][0] = b0; acc[r][1] = b1; acc[r][2] = b2; acc[r][3] = b3; }
    gates_block(R, acc, hr, H, xr, xrs, I, wt, H, j);
    for (int r = 0; r < R; r++) {
        const vf i = vsig(acc[r][0]), f = vsig(acc[r][1]), g = vtanh(acc[r][2]), o = vsig(acc[r][3]);
        float *ar = a + r * H4;
        if (nt) { st_nt(ar + j, i); st_nt(ar + H + j, f); st_nt(ar + 2 * H + j, g); st_nt(ar + 3 * H + j, o); }
        else { st(ar + j, i); st(ar + H + j, f); st(ar + 2 * H + j, g); st(ar + 3 * H + j, o); }
        const vf cn = hr ? cell_update(f, ld(c + r * H + j), i, g) : i * g;
        st(c + r * H + j, cn);
        if (cso) { if (nt) st_nt(cso + r * H + j, cn); else st(cso + r * H + j, cn); }
        st(h + r * H + j, o * vtanh(cn));
    }
}

#define FWD_ROWS(NT)                                                                                         \
    for (int64_t j = 0; j < H; j += W) {                                                                     \
        int64_t b = 0;                                                                                       \
        for (; b + 6 <= B; b += 6)                                                                           \
            fwd_block(6, hr ? hr + b * H : 0, xr + b * xrs, xrs, I, wt, H, j, bias, a + b * H4, c + b * H,   \
                      cso ? cso + b * H : 0, NT, h + b * H);                                                 \
        for (; b + 2 <= B; b += 2)                                                                           \
            fwd_block(2, hr ? hr + b * H : 0, xr + b * xrs, xrs, I, wt, H, j, bias, a + b * H4, c + b * H,   \
                      cso ? cso + b * H : 0, NT, h + b * H);                                                 \
        for (; b < B; b++)                                                                                   \
            fwd_block(1, hr ? hr + b * H : 0, xr + b * xrs, xrs, I, wt, H, j, bias, a + b * H4, c + b * H,   \
                      cso ? cso + b * H : 0, NT, h + b * H);                                                 \
    }

/* where layer l reads x_t: the network's input, or the layer below's outputs */
static const float *layer_input(const Net *N, int l, int64_t k, int tid, int64_t t, int64_t *row_stride) {
    if (l == 0) { *row_stride = N->x_sb; return N->x + k * N->x_sk + t * N->x_st; }
    const Layer *lo = &N->layers[l - 1];
    *row_stride = N->H;
    return lo->hs + k * lo->hs_sk + tid * lo->hs_tid + (t + 1) * N->B * N->H;
}

static void layer_fwd(const Net *N, int l, int64_t k, int tid, int nt) {
    const Layer *ly = &N->layers[l];
    const int64_t B = N->B, T = N->T, H = N->H, H4 = 4 * H, I = ly->I;
    const int store = ly->acts_ss != 0; /* keep every step for the backward (else one reused step) */
    float *hs = ly->hs + k * ly->hs_sk + tid * ly->hs_tid;
    float *acts = ly->acts + k * ly->acts_sk + tid * ly->acts_tid;
    float *c = N->scratch + tid * N->scratch_tid; /* the running cell state, in cache */
    float *lo = c + B * H, *wt = lo + B * N->Op, *bias = wt + N->nmax * H4, *wl = bias + H4, *bl = wl + H * N->Op;
    {
        const float *wi = ly->w_ih + k * ly->w_ih_sk, *wh = ly->w_hh + k * ly->w_hh_sk;
        const float *bi = ly->b_ih + k * ly->b_ih_sk, *bh = ly->b_hh + k * ly->b_hh_sk;
        for (int64_t g = 0; g < H4; g++) {
            for (int64_t q = 0; q < H; q++) wt[q * H4 + g] = wh[g * H + q];
            for (int64_t q = 0; q < I; q++) wt[(H + q) * H4 + g] = wi[g * I + q];
            bias[g] = bi[g] + bh[g];
        }
    }
    for (int64_t e = 0; e < B * H; e++) hs[e] = 0.0f; /* h_{-1} */
    for (int64_t s = 0; s < T; s++) {
        int64_t xrs;
        const float *xr = layer_input(N, l, k, tid, s, &xrs);
        const float *hr = s > 0 ? hs + s * B * H : 0;
        float *h = hs + (s + 1) * B * H;
        float *a = acts + s * ly->acts_ss;
        float *cso = store ? ly->cs + k * ly->cs_sk + s * B * H : 0;
        if (nt && store) { FWD_ROWS(1) } else { FWD_ROWS(0) }
    }
    if (l == N->L - 1) { /* the Linear: out_t = h_t W_lin^T + b_lin, for all steps, a block of rows at a time */
        const float *wlin = N->wlin + k * N->wlin_sk, *blin = N->blin + k * N->blin_sk;
        for (int64_t q = 0; q < H; q++)
            for (int64_t o = 0; o < N->Op; o++) wl[q * N->Op + o] = o < N->O ? wlin[o * H + q] : 0.0f;
        for (int64_t o = 0; o < N->Op; o++) bl[o] = o < N->O ? blin[o] : 0.0f;
        for (int64_t s = 0; s < T; s++) {
            mm_rows(B, N->Op, H, hs + (s + 1) * B * H, H, 1, wl, N->Op, INIT_ROW, bl, lo, N->Op);
            float *out = N->out + k * N->out_sk + s * N->out_st;
            for (int64_t b = 0; b < B; b++)
                for (int64_t o = 0; o < N->O; o++) out[b * N->out_sb + o] = lo[b * N->Op + o];
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
        if (((uintptr_t)ly->acts | (uintptr_t)ly->cs) % 64 || (ly->acts_sk | ly->acts_ss | ly->cs_sk | N->H) % 16)
            aligned = 0;
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

/* the accumulated dWt and bias gradient, written in the parameters' own layouts */
static void store_weight_grads(const Layer *ly, int64_t k, int64_t H, const float *dwt, const float *db) {
    const int64_t I = ly->I, n = H + I, H4 = 4 * H;
    float *dih = ly->dw_ih + k * ly->dw_ih_sk, *dhh = ly->dw_hh + k * ly->dw_hh_sk;
    for (int64_t q = 0; q < n; q++) /* row q < H: a column of W_hh; else of W_ih */
        for (int64_t g = 0; g < H4; g++) {
            if (q < H) dhh[g * H + q] = dwt[q * H4 + g];
            else dih[g * I + (q - H)] = dwt[q * H4 + g];
        }
    float *dbi = ly->db_ih + k * ly->db_ih_sk, *dbh = ly->db_hh + k * ly->db_hh_sk;
    for (int64_t g = 0; g < H4; g++) dbi[g] = dbh[g] = db[g];
}

static void net_bwd_k(const Net *N, int64_t k, int tid) {
    const int64_t B = N->B, T = N->T, H = N->H, H4 = 4 * H, L = N->L, O = N->O;
    int64_t npmax = 0;
    for (int l = 0; l < L; l++) npmax = N->layers[l].np > npmax ? N->layers[l].np : npmax;
    float *base = N->scratch + tid * N->scratch_tid;
    float *dxs[2] = {base, base + T * B * npmax}; /* (T, B, np) each: gradient w.r.t. [h_{t-1} | x_t] */
    float *dp = dxs[1] + T * B * npmax;           /* (B, H4): one step's gate pre-activation gradients */
    float *dc = dp + B * H4;                      /* (B, H) */
    float *dht = dc + B * H;                      /* (B, H): the top layer's dh, from the Linear */
    float *db = dht + B * H;                      /* (H4) */
    float *dwt = db + H4;                         /* (npmax, H4): rows [W_hh^T | W_ih^T] */
    float *wc = dwt + npmax * H4;                 /* (H4, np): [W_hh | W_ih | 0] */
    float *dwl = N->need_w ? N->dwl + k * N->dwl_sk : 0, *dbl = N->need_w ? N->dbl + k * N->dbl_sk : 0;
    const float *above = 0;                       /* the layer above's dx: its x part is our dh */
    int64_t above_np = 0;
    const float *wlin = N->wlin + k * N->wlin_sk, *dout = N->dout + k * N->dout_sk;
    for (int l = (int)L - 1; l >= 0; l--) {
        const Layer *ly = &N->layers[l];
        const int64_t np = ly->np, I = ly->I;
        const int64_t ncols = (l > 0 || N->need_x) ? np : H;
        float *dxb = dxs[l & 1];
        const float *acts = ly->acts + k * ly->acts_sk, *cs = ly->cs + k * ly->cs_sk;
        const float *hs = ly->hs + k * ly->hs_sk;
        {
            const float *wi = ly->w_ih + k * ly->w_ih_sk, *wh = ly->w_hh + k * ly->w_hh_sk;
            for (int64_t g = 0; g < H4; g++)
                for (int64_t q = 0; q < np; q++) wc[g * np + q] = q < H ? wh[g * H + q] : q < H + I ? wi[g * I + q - H] : 0.0f;
        }
        for (int64_t e = 0; e < B * H; e++) dc[e] = 0.0f;
        for (int64_t e = 0; e < H4; e++) db[e] = 0.0f;
        for (int64_t s = T - 1; s >= 0; s--) {
            if (!above) { /* the Linear: dh_t = dout_t W_lin; dW_lin += dout_t^T h_t; db_lin += sum dout_t */
                const float *d = dout + s * N->dout_st, *h = hs + (s + 1) * B * H;
                mm_rows(B, H, O, d, N->dout_sb, 1, wlin, H, INIT_ZERO, 0, dht, H);
                if (N->need_w) {
                    mm_rows(O, H, B, d, 1, N->dout_sb, h, H, s == T - 1 ? INIT_ZERO : INIT_OUT, 0, dwl, H);
                    for (int64_t o = 0; o < O; o++) {
                        float sum = s == T - 1 ? 0.0f : dbl[o];
                        for (int64_t b = 0; b < B; b++) sum += d[b * N->dout_sb + o];
                        dbl[o] = sum;
                    }
                }
            }
            for (int64_t b = 0; b < B; b++) {
                const int64_t row = s * B + b;
                const float *dha = above ? above + row * above_np + H : dht + b * H;
                const float *dhb = s < T - 1 ? dxb + (row + B) * np : 0;
                const float *a = acts + row * H4, *c = cs + row * H, *cp = s > 0 ? cs + (row - B) * H : 0;
                if (s > 0) { /* the same row of the previous step, read next: ask for it early */
                    for (int64_t e = 0; e < H4; e += W) __builtin_prefetch(a - B * H4 + e);
                    for (int64_t e = 0; e < H; e += W) __builtin_prefetch(hs + row * H + e);
                    if (s > 1) for (int64_t e = 0; e < H; e += W) __builtin_prefetch(cp - B * H + e);
                }
                for (int64_t j = 0; j < H; j += W) cell_bwd(a, c, cp, dha, dhb, dc + b * H, dp + b * H4, H, j);
            }
            if (s > 0 || ncols > H) /* gradient w.r.t. [h_{t-1} | x_t] */
                mm_rows(B, ncols, H4, dp, H4, 1, wc, np, INIT_ZERO, 0, dxb + s * B * np, np);
            if (N->need_w) { /* dWt += [h_{t-1} | x_t]^T dp, the two parts from where they are kept */
                const int init = s == T - 1 ? INIT_ZERO : INIT_OUT;
                int64_t xrs;
                const float *xr = layer_input(N, l, k, 0, s, &xrs);
                if (s > 0) mm_rows(H, H4, B, hs + s * B * H, 1, H, dp, H4, init, 0, dwt, H4);
                else if (init == INIT_ZERO) for (int64_t e = 0; e < H * H4; e++) dwt[e] = 0.0f;
                mm_rows(I, H4, B, xr, 1, xrs, dp, H4, init, 0, dwt + H * H4, H4);
                for (int64_t c0 = 0; c0 < H4; c0 += W) {
                    vf sum = ld(db + c0);
                    for (int64_t b = 0; b < B; b++) sum += ld(dp + b * H4 + c0);
                    st(db + c0, sum);
                }
            }
        }
        if (N->need_w) store_weight_grads(ly, k, H, dwt, db);
        if (l == 0 && N->need_x) {
            float *dx = N->dx + k * N->dx_sk;
            for (int64_t s = 0; s < T; s++)
                for (int64_t b = 0; b < B; b++)
                    for (int64_t e = 0; e < I; e++) dx[b * N->dx_sb + s * N->dx_st + e] = dxb[(s * B + b) * np + H + e];
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


def _kernels_for(x: torch.Tensor, layout: Layout, params: list[torch.Tensor]):
    """The compiled kernels where they apply (CPU float32, hidden size a multiple of 16), else None."""
    if not kernels_enabled() or layout.hidden % 16 or layout.num_layers > _MAX_LAYERS or 0 in x.shape:
        return None
    if any(t.device.type != "cpu" or t.dtype != torch.float32 for t in (x, *params)):
        return None
    return _library()


# ------------------------------------------------------------------------------------------------
# the compiled path: one C call for the forward of all layers and networks, one for the backward


class _CLayer(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int64 if kind == "i" else ctypes.c_void_p) for name, kind in (
        ("I", "i"), ("np", "i"),
        ("hs", "p"), ("hs_sk", "i"), ("hs_tid", "i"),
        ("acts", "p"), ("acts_sk", "i"), ("acts_tid", "i"), ("acts_ss", "i"),
        ("cs", "p"), ("cs_sk", "i"),
        ("w_ih", "p"), ("w_hh", "p"), ("b_ih", "p"), ("b_hh", "p"),
        ("w_ih_sk", "i"), ("w_hh_sk", "i"), ("b_ih_sk", "i"), ("b_hh_sk", "i"),
        ("dw_ih", "p"), ("dw_hh", "p"), ("db_ih", "p"), ("db_hh", "p"),
        ("dw_ih_sk", "i"), ("dw_hh_sk", "i"), ("db_ih_sk", "i"), ("db_hh_sk", "i"),
    )]


class _CNet(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int64 if kind == "i" else ctypes.c_void_p) for name, kind in (
        ("K", "i"), ("B", "i"), ("T", "i"), ("H", "i"), ("I", "i"), ("O", "i"), ("Op", "i"), ("L", "i"),
        ("nmax", "i"), ("nthreads", "i"), ("need_x", "i"), ("need_w", "i"),
        ("x", "p"), ("x_sk", "i"), ("x_sb", "i"), ("x_st", "i"),
        ("wlin", "p"), ("wlin_sk", "i"), ("blin", "p"), ("blin_sk", "i"),
        ("out", "p"), ("out_sk", "i"), ("out_sb", "i"), ("out_st", "i"),
        ("dout", "p"), ("dout_sk", "i"), ("dout_sb", "i"), ("dout_st", "i"),
        ("dx", "p"), ("dx_sk", "i"), ("dx_sb", "i"), ("dx_st", "i"),
        ("dwl", "p"), ("dwl_sk", "i"), ("dbl", "p"), ("dbl_sk", "i"),
        ("scratch", "p"), ("scratch_tid", "i"),
    )] + [("layers", _CLayer * _MAX_LAYERS)]


def _padded(n: int) -> int:
    return -(-n // 16) * 16


def _blocks(t: torch.Tensor) -> torch.Tensor:
    """t itself if each network's block is one contiguous run (what the kernels read), else a copy."""
    return t if t[0].is_contiguous() else t.contiguous()


def _c_forward(lib, x, params, nl, ws, store, gen):
    k, b, t, i_sz = x.shape
    params = [_blocks(p.detach()) for p in params]
    lin_w, lin_b = params[-2], params[-1]
    hsz = params[1].shape[2]
    h4 = 4 * hsz
    o_sz = lin_w.shape[1]
    o_pad = _padded(o_sz)
    nmax = max(hsz + params[4 * l].shape[2] for l in range(nl))
    nt = torch.get_num_threads()
    if x.stride(3) != 1:
        x = x.contiguous()
    tag = ("c", "train" if store else "eval")
    net = _CNet(K=k, B=b, T=t, H=hsz, I=i_sz, O=o_sz, Op=o_pad, L=nl, nmax=nmax, nthreads=nt)
    net.x, net.x_sk, net.x_sb, net.x_st = x.data_ptr(), x.stride(0), x.stride(1), x.stride(2)
    keep = [x, *params]
    for l in range(nl):
        w_ih, w_hh, b_ih, b_hh = params[4 * l : 4 * l + 4]
        inp = w_ih.shape[2]
        if store:  # kept for the backward, one block per network
            hs = _buffer(ws, (tag, l, "hs"), (k, t + 1, b, hsz), x)
            acts = _buffer(ws, (tag, l, "acts"), (k, t, b, h4), x)
            cs = _buffer(ws, (tag, l, "cs"), (k, t, b, hsz), x)
            per_k, per_tid, step = 1, 0, b * h4
        else:  # one block per thread, and one time step of gates
            hs = _buffer(ws, (tag, l, "hs"), (nt, t + 1, b, hsz), x)
            acts = cs = _buffer(ws, (tag, l, "acts"), (nt, b, h4), x)
            per_k, per_tid, step = 0, 1, 0
        ly = net.layers[l]
        ly.I, ly.np = inp, _padded(hsz + inp)
        ly.hs, ly.hs_sk, ly.hs_tid = hs.data_ptr(), per_k * hs.stride(0), per_tid * hs.stride(0)
        ly.acts, ly.acts_sk, ly.acts_tid, ly.acts_ss = acts.data_ptr(), per_k * acts.stride(0), per_tid * acts.stride(0), step
        ly.cs, ly.cs_sk = cs.data_ptr(), per_k * cs.stride(0)
        ly.w_ih, ly.w_hh, ly.b_ih, ly.b_hh = w_ih.data_ptr(), w_hh.data_ptr(), b_ih.data_ptr(), b_hh.data_ptr()
        ly.w_ih_sk, ly.w_hh_sk, ly.b_ih_sk, ly.b_hh_sk = w_ih.stride(0), w_hh.stride(0), b_ih.stride(0), b_hh.stride(0)
        keep += [hs, acts, cs]
    # per thread: running cell state, Linear rows, [W_hh | W_ih]^T, bias, W_lin^T, b_lin
    fscratch = _buffer(ws, (tag, "fscratch"), (nt, b * (hsz + o_pad) + nmax * h4 + h4 + hsz * o_pad + o_pad), x)
    out = x.new_empty(k, b, t, o_sz)
    net.wlin, net.wlin_sk, net.blin, net.blin_sk = lin_w.data_ptr(), lin_w.stride(0), lin_b.data_ptr(), lin_b.stride(0)
    net.out, net.out_sk, net.out_sb, net.out_st = out.data_ptr(), out.stride(0), out.stride(1), out.stride(2)
    net.scratch, net.scratch_tid = fscratch.data_ptr(), fscratch.stride(0)
    keep.append(fscratch)
    lib.lstm_forward(ctypes.byref(net))
    if not store:
        return out
    return out, {"net": net, "keep": keep, "gen": gen, "x_shape": (k, b, t, i_sz)}


def _c_backward(lib, state, dout, need_x, need_w, ws, grad_out):
    net = state["net"]
    k, b, t, i_sz = state["x_shape"]
    hsz, nl, o_sz = net.H, net.L, net.O
    h4 = 4 * hsz
    like = state["keep"][0]
    dout = dout.contiguous()
    nt = torch.get_num_threads()
    npmax = max(net.layers[l].np for l in range(nl))
    size = 2 * t * b * npmax + b * (h4 + 2 * hsz) + h4 + 2 * npmax * h4  # see net_bwd_k
    scratch = _buffer(ws, ("c", "scratch"), (nt, size), like)
    net.nthreads, net.need_x, net.need_w = nt, int(need_x), int(need_w)
    net.dout, net.dout_sk, net.dout_sb, net.dout_st = dout.data_ptr(), dout.stride(0), dout.stride(1), dout.stride(2)
    net.scratch, net.scratch_tid = scratch.data_ptr(), scratch.stride(0)
    dx = like.new_empty(k, b, t, i_sz) if need_x else None
    if need_x:
        net.dx, net.dx_sk, net.dx_sb, net.dx_st = dx.data_ptr(), dx.stride(0), dx.stride(1), dx.stride(2)
    grads, dlin = [], ()
    if need_w:
        for l in range(nl):
            inp = net.layers[l].I
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


def _forward(lib, x, params, nl, ws, store, gen=None):
    """x (K, B, T, I) -> (K, B, T, O); with ``store`` also what the backward needs.

    ``params``: the parameters in ``Layout.names`` order (nl layers, then the Linear).
    """
    if lib is not None:
        return _c_forward(lib, x, params, nl, ws, store, gen)
    return _eager_forward(x, _weights(params, nl), params[-2], params[-1], ws, store, gen)


def _backward(lib, state, dout, lin_w, need_x, need_w, ws, grad_out):
    """-> (dx, [per layer (dW_ih, dW_hh, db_ih, db_hh)], (dW_linear, db_linear)).

    ``grad_out``: where to write the parameter gradients (per layer the four, then the Linear's
    two), or None for fresh tensors.
    """
    if lib is not None:
        return _c_backward(lib, state, dout, need_x, need_w, ws, grad_out)
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
