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
/* 64-byte vectors are passed and returned only between static inline functions, never across an
 * ABI boundary, so GCC's note that their ABI differs without AVX-512 does not apply. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif
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
            acc[r][v] = init == INIT_ZERO ? splat(0.0f)
                     : init == INIT_ROW && row ? ld(row + v * W) : ld(out + r * ldo + v * W);
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
