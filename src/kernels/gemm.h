/*
 * gemm.h - the fast matrix products of the forward pass: y[n, R] = x[n, K] . W^T for every weight
 * type, threaded over a dg_pool, with the best instruction set this CPU has, chosen at run time.
 *
 * Paths (each tested against dg_matmul_ref, which stays the oracle):
 *   REF      the scalar oracle (exact dot products), for parity runs
 *   GENERIC  portable C, blocked, float32 accumulation
 *   AVX2     AVX2 + FMA (+F16C), float32 accumulation
 *   AVX512   AVX-512F FMA; with AVX512-BF16, vdpbf16ps when the activations are bf16-exact
 *   AMX      AMX-BF16 tiles for bf16-exact activations (weights bf16, or dequantized to bf16)
 *   NEON     ARMv8 NEON FMA (aarch64)
 * and, for block-quantized weights on AVX512-VNNI CPUs, an integer path: the activations quantized to
 * int8 blocks (Q8_0 / Q8_K, as llama.cpp does) and vpdpbusd dot products, bit-identical to the scalar
 * dg_vec_dot_gguf; it replaces the dequantizing FMA path on AVX-512 CPUs without AMX (on AMX CPUs the
 * tiles over dequantized panels measured faster, even for an expert's 16 rows).
 * Non-float weight types are dequantized a panel at a time into per-thread buffers; the model is
 * never dequantized into memory as a whole.
 */
#ifndef DG_GEMM_H
#define DG_GEMM_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/kernels.h"
#include "kernels/threads.h"

typedef enum { DG_PATH_REF = 0, DG_PATH_GENERIC, DG_PATH_AVX2, DG_PATH_AVX512, DG_PATH_AMX, DG_PATH_NEON, DG_N_PATHS } dg_path;

const char *dg_path_name(dg_path p);
/* The best path this CPU (and OS) supports. */
dg_path dg_path_best(void);
/* 1 if path p can run here. */
int dg_path_available(dg_path p);

/* Kernel context: the pool, the path, and scratch sized at creation (nothing allocated per call). */
typedef struct {
    dg_pool *pool;
    dg_path path;
    int max_n;          /* most activation rows of one call */
    int64_t max_k;      /* widest input (columns of W) */
    void *xpack;        /* packed activations (bf16 tiles / rows) */
    size_t xpack_bytes;
    float **panel;      /* per thread: a dequantized weight panel */
    size_t panel_bytes;
    uint16_t *pbuf;     /* AMX only: the probabilities of dg_matmul_nn as bf16 [max_nn, max_v rounded to 32] */
    int max_nn;         /* most rows of dg_matmul_nn's AMX path (the canvas) */
    void *aq;           /* int8 path: the activations quantized to Q8_0 / Q8_K blocks [max_n rows] */
    size_t aq_bytes;
    int64_t max_v;
    /* AMX: a product whose outputs take at least this many bytes writes them with non-temporal stores
     * (DG_STREAM_BYTES by default; tests lower it) */
    size_t stream_bytes;
    int no_shift;       /* AMX: 1 = bf16 rows loaded in place whatever their alignment (dg_job.shift 0; tests) */
    /* grouped products (dg_kctx_init_grouped; zero otherwise) */
    int max_groups, max_grows;  /* most products of one call; most rows of all of them together */
    uint16_t *gpack;    /* AMX: every group's packed activations, each rounded up to 16 rows */
    float *gather;      /* other paths: one group's gathered input rows [max_n, max_k] */
    void *gjobs;        /* [max_groups] per-product jobs */
    int *gtb;           /* [max_groups + 1] first 16-row block of each group in gpack */
    int *gmap;          /* [16-row blocks] the group of each block */
} dg_kctx;

/* max_v: the longest reduction of dg_matmul_nn (the vocabulary), 0 if it is not used; max_nn: most
 * rows of a dg_matmul_nn (the canvas). Calls beyond max_n / max_k fall back to the scalar oracle. */
int dg_kctx_init(dg_kctx *k, dg_pool *pool, dg_path path, int max_n, int64_t max_k, int64_t max_v, int max_nn);
void dg_kctx_free(dg_kctx *k);

/*
 * y[n, w->rows] = x[n, w->cols] . W^T. x_bf16 = 1 promises that every element of x is exactly a
 * bfloat16 value (the activations of a bf16 model are), which allows the bf16 dot / AMX paths
 * without rounding anything; otherwise x is used in float32. n <= k->max_n, w->cols <= k->max_k.
 */
void dg_matmul(const dg_kctx *k, float *y, const float *x, int n, const dg_mat *w, int x_bf16);

/* One product of a grouped call: y[n, w.rows] = X . W^T, row i of X being x + (xrows ? xrows[i] : i) * w.cols. */
typedef struct {
    dg_mat w;
    const float *x;
    const int *xrows;
    float *y;
    int n;
} dg_gemm;

/* Scratch for dg_matmul_grouped: up to max_groups products of max_rows rows in all. 0 or -1 (out of
 * memory). */
int dg_kctx_init_grouped(dg_kctx *k, int max_groups, int max_rows);

/* ng products whose weights share one type and shape (the experts of a layer), each n <= k->max_n
 * rows: the same results as dg_matmul_act on each (bit-identical), with one pool run per phase for all
 * of them on the AMX path (the activations of every group packed, then every group's row blocks) instead
 * of one per product. Other paths run the products one after another. */
void dg_matmul_grouped(const dg_kctx *k, const dg_gemm *g, int ng, int x_bf16, dg_dtype act);
void dg_matmul_grouped_path(const dg_kctx *k, dg_path p, const dg_gemm *g, int ng, int x_bf16, dg_dtype act);

/* dg_matmul, then every output rounded to act (dg_round_act): the AMX path rounds to bf16 as it
 * stores, the others in a pass after (the same values either way) */
void dg_matmul_act(const dg_kctx *k, float *y, const float *x, int n, const dg_mat *w, int x_bf16, dg_dtype act);
void dg_matmul_act_path(const dg_kctx *k, dg_path p, float *y, const float *x, int n, const dg_mat *w, int x_bf16, dg_dtype act);
/* dg_matmul_act, then y = cap * tanh(y / cap) with dg_softcap_f32's function (cap > 0): the same
 * results as the two calls (tests/test_kernels.c matmul-softcap), the softcap applied as the AMX path
 * stores its tiles (the LM head: no second pass over the logits) */
void dg_matmul_softcap(const dg_kctx *k, float *y, const float *x, int n, const dg_mat *w, int x_bf16, dg_dtype act, float cap);
void dg_matmul_softcap_path(const dg_kctx *k, dg_path p, float *y, const float *x, int n, const dg_mat *w, int x_bf16, dg_dtype act, float cap);

/* Path-specific entry (tests): the same product with path p (falls back to GENERIC when p cannot
 * run here). */
void dg_matmul_path(const dg_kctx *k, dg_path p, float *y, const float *x, int n, const dg_mat *w, int x_bf16);

/*
 * y[n, e->cols] = p[n, e->rows] . E: the self-conditioning soft embedding (probabilities times the
 * embedding matrix, E as stored: [V, H] row-major). p rows have stride ldp. p_bf16 = 1 promises every
 * probability is bf16-exact (the reference rounds them to its compute dtype first). Threaded over
 * column blocks of E; with path REF every output is the exact sum rounded once.
 */
void dg_matmul_nn(const dg_kctx *k, float *y, const float *p, int64_t ldp, int n, const dg_mat *e, int p_bf16);
/* The AMX path of dg_matmul_nn packs P as bf16 tiles first. A caller that computes P a row at a time
 * can pack each row as it is made (dg_nn_pack_row, row t < n, bf16-exact values) and then run the
 * product on the packed rows (dg_matmul_nn_prepacked): the same results as dg_matmul_nn, without the
 * float32 P in memory. Only when dg_matmul_nn_can_prepack says that path applies. */
int dg_matmul_nn_can_prepack(const dg_kctx *k, int n, const dg_mat *e, int p_bf16);
void dg_nn_pack_row(const dg_kctx *k, int t, const float *p, int64_t V);
/* Row t packed as dg_nn_pack_row packs its probabilities, made from a row of logits x: p = softmax(x)
 * (dg_softmax_fast) rounded to bf16 (dg_round_act_fast), bit for bit, in three passes over the row
 * instead of six; tmp: V floats of scratch. Under the same condition (dg_matmul_nn_can_prepack with
 * bf16 probabilities). */
void dg_nn_pack_softmax_row(const dg_kctx *k, int t, const float *x, int64_t V, float *tmp);
void dg_matmul_nn_prepacked(const dg_kctx *k, float *y, int n, const dg_mat *e);

/* One attention row of the fast path: the keys (and values) of up to 3 segments, rows `stride` floats
 * apart; sc has room for every key. out[d] = sum_j p_j v_j / sum_j e_j with e_j = exp(q.k_j - max) in
 * float32 and p_j = e_j rounded to the activation type (act: DG_F32 / DG_BF16 / DG_F16), as the
 * reference's flash kernels weight the values. */
typedef struct {
    const float *k, *v;
    int64_t stride;
    int n;
} dg_kseg;
void dg_attend_f32(const float *q, int d, const dg_kseg *seg, int nseg, float *sc, float *acc, float *out, dg_dtype act);

enum { DG_ATT_ROWS = 32 };

/* nq queries x nh heads (nq * nh <= DG_ATT_ROWS rows) that all see the same keys and values: query i's
 * head h is q + i * qs + h * d, its output out + i * os + h * d; each row exactly as dg_attend_f32
 * computes it (bit-identical), every key and value row read once for the block. sc: the rows' scores,
 * ldsc apart; acc: nq * nh * d floats. */
void dg_attend_block_f32(const float *q, int64_t qs, int nq, int nh, int d, const dg_kseg *seg, int nseg, float *sc,
                         int64_t ldsc, float *acc, float *out, int64_t os, dg_dtype act);

/* The block on AMX tiles, for bf16 activations (q, k, v and the rounded weights bf16-exact), d a
 * multiple of 32 and more than 16 rows: the same rule with the float32 sums in the tiles' order (not
 * bit-identical to dg_attend_block_f32; tests/test_kernels.c bounds it against the exact rule). acc:
 * 32 * d floats; scratch: dg_attend_amx_scratch(d) bytes. valid (NULL: every row sees every key):
 * row r sees the keys [valid[4r], valid[4r+1]) and [valid[4r+2], valid[4r+3]) of the segments' order
 * (a causal block: its queries' views of the cache and of the new rows), the others weigh 0. Returns 0
 * (nothing done) where AMX is not available. */
int dg_attend_block_amx_f32(const float *q, int64_t qs, int nq, int nh, int d, const dg_kseg *seg, int nseg, float *sc,
                            int64_t ldsc, float *acc, float *out, int64_t os, const int *valid, void *scratch);
size_t dg_attend_amx_scratch(int d);
/* Blocks that see the same keys can share the keys' and values' tiles: dg_attend_amx_pack_f32 packs
 * the nk keys of the segments into pk (dg_attend_amx_pack_bytes(nk, d, two) bytes), chunks [c0, c1)
 * of 32 keys (so threads can split the work), once; dg_attend_block_amx_packed_f32 is then
 * dg_attend_block_amx_f32 on the keys [off, off + nk) of the packed nk_all without packing its own:
 * the same tiles, the same bits. off is a multiple of 32, or of 16 where the values were also packed
 * from key 16 (two: the causal blocks of the encoder, whose views start 16 keys apart). Both return 0
 * where AMX is not available or the arguments do not fit. */
size_t dg_attend_amx_pack_bytes(int nk, int d, int two);
int dg_attend_amx_pack_f32(const dg_kseg *seg, int nseg, int d, void *pk, int c0, int c1, int two);
int dg_attend_block_amx_packed_f32(const float *q, int64_t qs, int nq, int nh, int d, float *sc, int64_t ldsc, float *acc, float *out,
                                   int64_t os, const int *valid, void *scratch, const void *pk, int nk_all, int two, int off, int nk);

/* out[i] = R(R(gelu_tanh(g[i])) * u[i]) with R the rounding to act: the gated activation of the MLPs
 * (vectorized gelu within a few ulp of the oracle's); out may alias g or u. */
void dg_gelu_mul_f32(const float *g, const float *u, float *out, int n, dg_dtype act);

/* y = R(rmsnorm(x) * w) for n rows of dim (w NULL: no weight), threaded over rows: the oracle's
 * arithmetic (the sum of squares in double, 1 / sqrt, then (x * r) * w in float32, then the rounding to
 * act) with the double sum vectorized in another order: the same results as dg_rmsnorm_ref +
 * dg_round_act unless the two double sums round to different floats (not seen in the tests). */
void dg_rmsnorm_fast(dg_pool *pool, float *y, const float *x, int n, int dim, const dg_vec *w, float eps, dg_dtype act);

/* x[i] = x[i] / d, vectorized (IEEE division: bit-identical to the scalar loop) */
void dg_div_f32(float *x, size_t n, float d);

/* dg_round_act, vectorized (bit-identical: tests/test_kernels.c round-pool) */
void dg_round_act_fast(float *x, size_t n, dg_dtype act);

/* Vector helpers of the fast path (float32, the path's own summation order; dispatched like the
 * matmul). dg_dot_f32: sum a[i]*b[i]; dg_axpy_f32: y[i] += a*x[i]. */
float dg_dot_f32(const float *a, const float *b, int n);
void dg_axpy_f32(float *y, float a, const float *x, int n);
/* o[i] = sum over k of y[k][i] * w[k]: each product and each sum rounded to float32, in k order from
 * 0 (the scalar loop's own operations, no fused multiply-add: bit-identical), vectorized */
void dg_wsum_f32(float *o, const float *const *y, const float *w, int K, int n);
/* max of x[0..n) and its first index */
float dg_max_f32(const float *x, int n, int *arg);
/* x[i] = exp(x[i] - mx) (a vectorized float32 exp, within 2 ulp of expf) and the float32 sum */
float dg_expsum_f32(float *x, int n, float mx);
/* dg_round_act over the pool in chunks (a branchless bf16 rounding the compiler vectorizes):
 * bit-identical to dg_round_act, for the large arrays (the LM head's logits) */
void dg_round_act_pool(dg_pool *pool, float *x, size_t n, dg_dtype act);
/* x[i] = R(x[i] + a[i]) and x[i] = R(x[i] * scale) (float32 operations, then dg_round_act_fast), over
 * the pool in chunks: bit-identical to the loop and the rounding */
void dg_add_round_pool(dg_pool *pool, float *x, const float *a, size_t n, dg_dtype act);
void dg_scale_round_pool(dg_pool *pool, float *x, float scale, size_t n, dg_dtype act);
/* x[i] = cap * tanh(x[i] / cap) (vectorized; within a few ulp of tanhf) */
void dg_softcap_f32(float *x, int n, float cap);
/* sum of x[i] * (mx - z[i]) (the entropy numerator of a softmax) */
float dg_dotdiff_f32(const float *x, const float *z, int n, float mx);
/* The sampler's row passes fused (bit-identical to the calls they replace, up to the sign and payload
 * of a NaN where two NaNs meet; tests/test_kernels.c fused-rows): dg_div_max_f32 = dg_div_f32 then dg_max_f32; dg_expsum_dd_f32 = w = copy of z,
 * sum = dg_expsum_f32(w), *dd = dg_dotdiff_f32(w, z), then dg_round_act_fast(z, act). */
float dg_div_max_f32(float *x, int n, float d, int *arg);
float dg_expsum_dd_f32(float *z, float *w, int n, float mx, float *dd, dg_dtype act);
/* dg_rope_ref, vectorized for bf16 and float32 activations (bit-identical, up to the sign and payload of
 * a NaN where two NaNs are added: kernels/rope-fast) */
void dg_rope_fast(float *x, int d, const float *cos, const float *sin, dg_dtype act);

#endif
