#define _GNU_SOURCE
/*
 * gemm.c - dg_matmul: splits W's rows into tasks for the pool, packs the activations once per call
 * when a path wants them packed, and hands each task to the path's kernel. The kernels themselves
 * are in gemm_x86.c (AVX2, AVX-512, AMX) and gemm_neon.c; the portable kernel is here.
 *
 * Every kernel computes y[t][r] = sum_k x[t][k] * W[r][k] with float32 accumulation (the order is
 * the kernel's own, so results differ from the exact oracle by float32 rounding noise).
 */
#include "kernels/gemm.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "kernels/gemm_impl.h"
#include "kernels/quants.h"

const char *dg_path_name(dg_path p) {
    static const char *n[DG_N_PATHS] = {"ref", "generic", "avx2", "avx512", "amx", "neon"};
    return (unsigned)p < DG_N_PATHS ? n[p] : "?";
}

int dg_path_available(dg_path p) {
    switch (p) {
    case DG_PATH_REF:
    case DG_PATH_GENERIC: return 1;
#if defined(__x86_64__)
    case DG_PATH_AVX2: return dg_cpu_has_avx2();
    case DG_PATH_AVX512: return dg_cpu_has_avx512();
    case DG_PATH_AMX: return dg_cpu_has_amx();
#endif
#if defined(__aarch64__)
    case DG_PATH_NEON: return 1;
#endif
    default: return 0;
    }
}

dg_path dg_path_best(void) {
    const dg_path order[] = {DG_PATH_AMX, DG_PATH_AVX512, DG_PATH_AVX2, DG_PATH_NEON};
    for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++)
        if (dg_path_available(order[i])) return order[i];
    return DG_PATH_GENERIC;
}

static int64_t round_up(int64_t a, int64_t b) { return (a + b - 1) / b * b; }

int dg_kctx_init(dg_kctx *k, dg_pool *pool, dg_path path, int max_n, int64_t max_k, int64_t max_v, int max_nn) {
    memset(k, 0, sizeof(*k));
    k->stream_bytes = DG_STREAM_BYTES;
    k->pool = pool;
    k->path = dg_path_available(path) ? path : DG_PATH_GENERIC;
    k->max_n = max_n < 1 ? 1 : max_n;
    k->max_k = max_k < 1 ? 1 : max_k;
    const int64_t kp = round_up(k->max_k, DG_KC) + DG_KC;   /* + a chunk: a shifted K (dg_job.shift) */
    /* AMX tiles hold 16 tokens per block: round the rows up to 16 */
    k->xpack_bytes = (size_t)round_up(k->max_n, 16) * (size_t)kp * sizeof(uint16_t);
    k->xpack = aligned_alloc(64, k->xpack_bytes);
    const int nt = dg_pool_size(pool);
    /* a weight panel as float32 and bf16 [DG_RB, kp], then the AMX task's C tiles [n/16][2][16][16] */
    k->panel_bytes = (size_t)DG_RB * (size_t)kp * (sizeof(float) + sizeof(uint16_t)) + (size_t)round_up(k->max_n, 16) / 16 * 2 * 256 * sizeof(float) + 64;
    /* dg_matmul_nn: a [512, 32] panel, one row of E (H <= max_k), [max_n, 32] float and double sums */
    const size_t nn = sizeof(float) * (512 * 32 + 1024) + (size_t)k->max_n * 32 * (sizeof(float) + sizeof(double)) + 64;
    if (nn > k->panel_bytes) k->panel_bytes = nn;
    k->max_v = max_v;
    k->max_nn = max_nn < k->max_n ? max_nn : k->max_n;
    /* AMX dg_matmul_nn (at most max_nn rows): B tiles of a [1024 x 256] block of E (512 KB), the
     * [n, 256] sums, one dequantized row piece and two rows of bf16 pieces */
    const size_t amx_nn = (size_t)DG_NN_VB * DG_NN_HB * sizeof(uint16_t) + (size_t)(round_up(k->max_nn, 16) + 1) * DG_NN_HB * sizeof(float) +
                          2 * (DG_NN_HB / 32) * 1024 * sizeof(uint16_t) + 64;
    if (k->path == DG_PATH_AMX && amx_nn > k->panel_bytes) k->panel_bytes = amx_nn;
    /* int8 activations: Q8_K blocks are the largest per element (292 bytes per 256) */
    k->aq_bytes = (size_t)k->max_n * (size_t)(round_up(k->max_k, 256) / 256) * sizeof(dg_block_q8_K) + 64;
    k->aq = malloc(k->aq_bytes);
    if (!k->aq) { dg_kctx_free(k); return -1; }
    if (k->path == DG_PATH_AMX && max_v > 0) {
        /* whole 16-token tiles: rows past max_n are read as zeros */
        k->pbuf = aligned_alloc(64, (size_t)round_up(round_up(k->max_nn, 16) * round_up(max_v, DG_KC) * 2, 64));
        if (!k->pbuf) { dg_kctx_free(k); return -1; }
    }
    k->panel = calloc((size_t)nt, sizeof(float *));
    if (!k->xpack || !k->panel) { dg_kctx_free(k); return -1; }
    for (int i = 0; i < nt; i++) {
        k->panel[i] = aligned_alloc(64, round_up((int64_t)k->panel_bytes, 64));
        if (!k->panel[i]) { dg_kctx_free(k); return -1; }
    }
    return 0;
}

int dg_kctx_init_grouped(dg_kctx *k, int max_groups, int max_rows) {
    k->max_groups = max_groups < 1 ? 1 : max_groups;
    k->max_grows = max_rows < 1 ? 1 : max_rows;
    const int64_t kp = round_up(k->max_k, DG_KC) + DG_KC;   /* + a chunk: a shifted K */
    /* every group rounded up to whole 16-row blocks */
    const int64_t ntb = (k->max_grows + 15) / 16 + k->max_groups;
    k->gjobs = calloc((size_t)k->max_groups, sizeof(dg_job));
    k->gtb = calloc((size_t)k->max_groups + 1, sizeof(int));
    k->gmap = calloc((size_t)ntb, sizeof(int));
    k->gather = aligned_alloc(64, (size_t)round_up((int64_t)k->max_n * k->max_k * (int64_t)sizeof(float), 64));
    if (k->path == DG_PATH_AMX) k->gpack = aligned_alloc(64, (size_t)(ntb * 16 * kp) * sizeof(uint16_t));
    if (!k->gjobs || !k->gtb || !k->gmap || !k->gather || (k->path == DG_PATH_AMX && !k->gpack)) return -1;
    return 0;
}

void dg_kctx_free(dg_kctx *k) {
    free(k->gjobs);
    free(k->gtb);
    free(k->gmap);
    free(k->gather);
    free(k->gpack);
    if (k->panel)
        for (int i = 0; i < dg_pool_size(k->pool); i++) free(k->panel[i]);
    free(k->panel);
    free(k->xpack);
    free(k->pbuf);
    free(k->aq);
    memset(k, 0, sizeof(*k));
}

/* ===== the portable kernel ===== */

/* one MT x MR block over K: 8 partial sums per output, float32 */
static inline __attribute__((always_inline)) void generic_block(const float *x, int64_t ldx, const float *w, int64_t ldw,
                                                                 int64_t K, float *y, int64_t ldy, int MT, int MR) {
    float acc[4][4][8];
    for (int i = 0; i < MT; i++)
        for (int j = 0; j < MR; j++)
            for (int l = 0; l < 8; l++) acc[i][j][l] = 0.0f;
    const int64_t K8 = K / 8 * 8;
    for (int64_t k = 0; k < K8; k += 8)
        for (int i = 0; i < MT; i++)
            for (int j = 0; j < MR; j++)
                for (int l = 0; l < 8; l++) acc[i][j][l] += x[i * ldx + k + l] * w[j * ldw + k + l];
    for (int i = 0; i < MT; i++)
        for (int j = 0; j < MR; j++) {
            float s = 0.0f;
            for (int64_t k = K8; k < K; k++) s += x[i * ldx + k] * w[j * ldw + k];
            for (int l = 0; l < 8; l++) s += acc[i][j][l];
            y[i * ldy + j] = s;
        }
}

/* y[nt, nr] (row stride ldy) = x[nt, K] . P^T for an f32 panel P [nr, K] (row stride ldw) */
void dg_kernel_generic_f32(const float *x, int64_t ldx, int nt, const float *w, int64_t ldw, int nr, int64_t K,
                           float *y, int64_t ldy) {
    for (int t = 0; t < nt; t += 4) {
        const int mt = nt - t < 4 ? nt - t : 4;
        for (int r = 0; r < nr; r += 4) {
            const int mr = nr - r < 4 ? nr - r : 4;
            const float *xt = x + t * ldx, *wr = w + r * ldw;
            float *yt = y + t * ldy + r;
#define GB(a, b) generic_block(xt, ldx, wr, ldw, K, yt, ldy, a, b)
            switch (mt * 4 + mr) {
            case 4 * 4 + 4: GB(4, 4); break;
            case 4 * 4 + 3: GB(4, 3); break;
            case 4 * 4 + 2: GB(4, 2); break;
            case 4 * 4 + 1: GB(4, 1); break;
            case 3 * 4 + 4: GB(3, 4); break;
            case 2 * 4 + 4: GB(2, 4); break;
            case 1 * 4 + 4: GB(1, 4); break;
            default:
                for (int i = 0; i < mt; i++)
                    for (int j = 0; j < mr; j++) generic_block(xt + i * ldx, ldx, wr + j * ldw, ldw, K, yt + i * ldy + j, ldy, 1, 1);
            }
#undef GB
        }
    }
}

/* ===== panels ===== */

void dg_dequant_fast(const dg_mat *w, int64_t r, int64_t c0, int64_t n, float *out) {
#if defined(__x86_64__)
    const int blk = dg_gguf_block_elems(w->dt);
    if (blk && c0 % blk == 0 && n % blk == 0 && dg_cpu_has_avx512()) {
        const uint8_t *row = (const uint8_t *)w->data + (size_t)r * w->row_bytes + (size_t)(c0 / blk) * dg_gguf_block_bytes(w->dt);
        if (dg_dequant_gguf_avx512(w->dt, row, out, n)) return;
    }
#endif
    dg_dequant_range(w, r, c0, n, out);
}

/* rows [r0, r0+nr) of w as float32 in buf [nr, K] (exactly the scalar reference's values) */
void dg_panel_f32(const dg_mat *w, int64_t r0, int nr, float *buf) {
    const int64_t K = w->cols;
    const int blk = dg_gguf_block_elems(w->dt);
    for (int r = 0; r < nr; r++) {
        if (blk && K % blk == 0) { dg_dequant_fast(w, r0 + r, 0, K, buf + (int64_t)r * K); continue; }
        for (int64_t c0 = 0; c0 < K; c0 += 256) {
            const int64_t m = K - c0 < 256 ? K - c0 : 256;
            dg_dequant_range(w, r0 + r, c0, m, buf + (int64_t)r * K + c0);
        }
    }
}

/* ===== dispatch ===== */

static void task(void *ctx, int i, int tid) {
    const dg_job *j = ctx;
    const int64_t r0 = (int64_t)i * j->rb;
    const int nr = (int)(j->w->rows - r0 < j->rb ? j->w->rows - r0 : j->rb);
    float *panel = j->k->panel[tid];
    switch (j->kind) {
    case DG_KIND_REF: dg_matmul_ref_rows(j->y, j->w->rows, j->x, j->n, j->w, r0, r0 + nr); return;
    case DG_KIND_INT8:
        for (int r = 0; r < nr; r++) {
            const uint8_t *row = (const uint8_t *)j->w->data + (size_t)(r0 + r) * j->w->row_bytes;
#if defined(__x86_64__)
            if (dg_vnni_row(j->w->dt, row, j->w->cols, j->k->aq, j->astride, j->n, j->y + r0 + r, j->w->rows)) continue;
#endif
            for (int t = 0; t < j->n; t++)
                j->y[(int64_t)t * j->w->rows + r0 + r] = dg_vec_dot_gguf(j->w->dt, j->w->cols, row, (const uint8_t *)j->k->aq + (size_t)t * j->astride);
        }
        return;
#if defined(__x86_64__)
    case DG_KIND_AMX: dg_task_amx(j, r0, nr, panel); return;
    case DG_KIND_AVX512_BF16: dg_task_avx512_bf16(j, r0, nr, panel); return;
    case DG_KIND_AVX512: dg_task_avx512(j, r0, nr, panel); return;
    case DG_KIND_AVX2: dg_task_avx2(j, r0, nr, panel); return;
#endif
#if defined(__aarch64__)
    case DG_KIND_NEON: dg_task_neon(j, r0, nr, panel); return;
#endif
    default: break;
    }
    const float *wp;
    int64_t ldw;
    if (j->w->dt == DG_F32) {
        wp = (const float *)((const uint8_t *)j->w->data + (size_t)r0 * j->w->row_bytes);
        ldw = (int64_t)(j->w->row_bytes / sizeof(float));
    } else {
        dg_panel_f32(j->w, r0, nr, panel);
        wp = panel;
        ldw = j->w->cols;
    }
    dg_kernel_generic_f32(j->x, j->w->cols, j->n, wp, ldw, nr, j->w->cols, j->y + r0, j->w->rows);
}

static inline int is_quant(dg_dtype dt) { return dt != DG_F32 && dt != DG_F16 && dt != DG_BF16; }

static void quantize_act_row(void *ctx, int t, int tid) {
    (void)tid;
    const dg_job *j = ctx;
    dg_quantize_act(dg_gguf_act_type(j->w->dt), j->x + (int64_t)t * j->w->cols, (uint8_t *)j->k->aq + (size_t)t * j->astride, j->w->cols);
}

/* the integer path: for the block types with VNNI kernels, on AVX512-VNNI CPUs without AMX */
static int use_int8(const dg_kctx *k, dg_path p, int n, const dg_mat *w) {
#if defined(__x86_64__)
    const dg_dtype dt = w->dt;
    /* measured (16 x 1408 x 2816, one thread): Q4_K 0.70 ns/weight vs 0.84 dequantizing; the per-block
     * reductions make the others slower than dequantizing (Q6_K 1.18 vs 0.82, Q8_0 5.5 vs 0.9), so the
     * VNNI kernels of those types stay tested but unused */
    if (!(dt == DG_Q4_K || dt == DG_Q5_K)) return 0;
    if (!dg_cpu_has_vnni() || n > k->max_n) return 0;
    if (w->cols % dg_act_block_elems(dg_gguf_act_type(dt))) return 0;
    /* measured: on AMX machines the tiles over dequantized panels are faster even for 16 rows */
    (void)n;
    return p == DG_PATH_AVX512;
#else
    (void)k; (void)p; (void)n; (void)w;
    return 0;
#endif
}

/* the softcap of the rows of y, where the product's store did not apply it */
typedef struct {
    float *y;
    int64_t cols;
    float cap;
} cap_job;

static void softcap_row(void *ctx, int t, int tid) {
    (void)tid;
    const cap_job *j = ctx;
    dg_softcap_f32(j->y + (size_t)t * (size_t)j->cols, (int)j->cols, j->cap);
}

static void softcap_pool(dg_pool *pool, float *y, int n, int64_t cols, float cap) {
    cap_job cj = {y, cols, cap};
    dg_pool_run(pool, n, softcap_row, &cj);
}

/* act: the type the outputs are rounded to (DG_F32: none); cap > 0: then the fast path's softcap */
static void matmul_impl(const dg_kctx *k, dg_path p, float *y, const float *x, int n, const dg_mat *w, int x_bf16, dg_dtype act,
                        float cap) {
    if (n <= 0 || w->rows <= 0) return;
    if (n > k->max_n || w->cols > k->max_k) p = DG_PATH_REF;   /* beyond the scratch sized at creation */
    if (p == DG_PATH_REF) {   /* the oracle, threaded over rows (each output computed the same way) */
        dg_job j;
        memset(&j, 0, sizeof(j));
        j.k = k; j.y = y; j.x = x; j.n = n; j.w = w; j.rb = DG_RB / 2; j.kind = DG_KIND_REF;
        dg_pool_run(k->pool, (int)((w->rows + j.rb - 1) / j.rb), task, &j);
        if (act != DG_F32) dg_round_act_pool(k->pool, y, (size_t)n * (size_t)w->rows, act);
        if (cap > 0.0f) softcap_pool(k->pool, y, n, w->rows, cap);
        return;
    }
    if (!dg_path_available(p)) p = DG_PATH_GENERIC;
    dg_job j;
    memset(&j, 0, sizeof(j));
    j.k = k;
    j.y = y;
    j.x = x;
    j.n = n;
    j.w = w;
    j.rb = DG_RB / 2;
    j.kind = DG_KIND_GENERIC;
    if (use_int8(k, p, n, w)) {
        j.kind = DG_KIND_INT8;
        const dg_act_type at = dg_gguf_act_type(w->dt);
        j.astride = (size_t)(w->cols / dg_act_block_elems(at)) * dg_act_block_bytes(at);
        dg_pool_run(k->pool, n, quantize_act_row, &j);
        p = DG_PATH_GENERIC;   /* skip the float paths' packing below */
    }
    switch (p) {
#if defined(__x86_64__)
    case DG_PATH_AMX:
        /* bf16 tiles only when nothing gets rounded on the way in: bf16-exact activations and bf16
         * (or quantized, dequantized to bf16: documented) weights */
        if (x_bf16 && (w->dt == DG_BF16 || is_quant(w->dt))) {
            j.kind = DG_KIND_AMX;
            j.rb = DG_RB;
            j.round_bf16 = act == DG_BF16;
            j.cap = act == DG_BF16 || act == DG_F32 ? cap : 0.0f;   /* fused into the store after the rounding */
            j.stream = (size_t)n * (size_t)w->rows * sizeof(float) >= k->stream_bytes;
            j.shift = k->no_shift ? 0 : dg_amx_shift(w);
            dg_pack_amx(&j);
            break;
        }
        /* fall through */
    case DG_PATH_AVX512:
        if (x_bf16 && w->dt == DG_BF16 && dg_cpu_has_avx512bf16()) {
            j.kind = DG_KIND_AVX512_BF16;
            dg_pack_rows_bf16(&j);
        } else {
            j.kind = DG_KIND_AVX512;
        }
        break;
    case DG_PATH_AVX2: j.kind = DG_KIND_AVX2; break;
#endif
#if defined(__aarch64__)
    case DG_PATH_NEON: j.kind = DG_KIND_NEON; break;
#endif
    default: break;
    }
    const int n_tasks = (int)((w->rows + j.rb - 1) / j.rb);
    dg_pool_run(k->pool, n_tasks, task, &j);
    if (act != DG_F32 && !j.round_bf16) dg_round_act_pool(k->pool, y, (size_t)n * (size_t)w->rows, act);
    if (cap > 0.0f && j.cap == 0.0f) softcap_pool(k->pool, y, n, w->rows, cap);   /* not fused into the store */
}

void dg_matmul_path(const dg_kctx *k, dg_path p, float *y, const float *x, int n, const dg_mat *w, int x_bf16) {
    matmul_impl(k, p, y, x, n, w, x_bf16, DG_F32, 0.0f);
}

void dg_matmul_act_path(const dg_kctx *k, dg_path p, float *y, const float *x, int n, const dg_mat *w, int x_bf16, dg_dtype act) {
    matmul_impl(k, p, y, x, n, w, x_bf16, act, 0.0f);
}

void dg_matmul_act(const dg_kctx *k, float *y, const float *x, int n, const dg_mat *w, int x_bf16, dg_dtype act) {
    matmul_impl(k, k->path, y, x, n, w, x_bf16, act, 0.0f);
}

void dg_matmul_softcap(const dg_kctx *k, float *y, const float *x, int n, const dg_mat *w, int x_bf16, dg_dtype act, float cap) {
    matmul_impl(k, k->path, y, x, n, w, x_bf16, act, cap);
}

void dg_matmul_softcap_path(const dg_kctx *k, dg_path p, float *y, const float *x, int n, const dg_mat *w, int x_bf16, dg_dtype act, float cap) {
    matmul_impl(k, p, y, x, n, w, x_bf16, act, cap);
}

/* ===== grouped products ===== */

typedef struct {
    const dg_kctx *k;
    int nrb;   /* row blocks of each product */
} grp_job;

#if defined(__x86_64__)
static void grp_pack(void *ctx, int i, int tid) {
    (void)tid;
    const grp_job *gj = ctx;
    const int g = gj->k->gmap[i];
    dg_pack_amx_tb(&((const dg_job *)gj->k->gjobs)[g], i - gj->k->gtb[g]);
}

static void grp_task(void *ctx, int i, int tid) {
    const grp_job *gj = ctx;
    const dg_job *j = &((const dg_job *)gj->k->gjobs)[i / gj->nrb];
    const int64_t r0 = (int64_t)(i % gj->nrb) * DG_RB;
    const int nr = (int)(j->w->rows - r0 < DG_RB ? j->w->rows - r0 : DG_RB);
    dg_task_amx(j, r0, nr, gj->k->panel[tid]);
}
#endif

void dg_matmul_grouped_path(const dg_kctx *k, dg_path p, const dg_gemm *g, int ng, int x_bf16, dg_dtype act) {
    if (ng <= 0) return;
    int rows = 0, fits = ng <= k->max_groups && k->gjobs;
    for (int i = 0; i < ng; i++) {
        rows += g[i].n;
        if (g[i].n > k->max_n || g[i].w.cols > k->max_k || g[i].w.rows != g[0].w.rows || g[i].w.dt != g[0].w.dt) fits = 0;
    }
    fits = fits && rows <= k->max_grows;
#if defined(__x86_64__)
    if (fits && p == DG_PATH_AMX && k->gpack && dg_path_available(p) && x_bf16 && (g[0].w.dt == DG_BF16 || is_quant(g[0].w.dt))) {
        dg_job *jobs = k->gjobs;
        /* one K shift for the call (the experts of one tensor share their rows' place in the line) */
        int sh = k->no_shift ? 0 : dg_amx_shift(&g[0].w);
        for (int i = 1; i < ng && sh; i++)
            if (dg_amx_shift(&g[i].w) != sh) sh = 0;
        const int64_t kp = round_up(g[0].w.cols + sh, DG_KC);
        int tb = 0;
        for (int i = 0; i < ng; i++) {
            dg_job *j = &jobs[i];
            memset(j, 0, sizeof(*j));
            j->k = k; j->kind = DG_KIND_AMX; j->y = g[i].y; j->x = g[i].x; j->xrows = g[i].xrows; j->n = g[i].n;
            j->w = &g[i].w; j->rb = DG_RB; j->kp = kp; j->xp = k->gpack + (size_t)tb * 16 * (size_t)kp;
            j->round_bf16 = act == DG_BF16;
            j->shift = sh;
            k->gtb[i] = tb;
            const int nb = (g[i].n + 15) / 16;
            for (int b = 0; b < nb; b++) k->gmap[tb + b] = i;
            tb += nb;
        }
        k->gtb[ng] = tb;
        grp_job gj = {k, (int)((g[0].w.rows + DG_RB - 1) / DG_RB)};
        dg_pool_run(k->pool, tb, grp_pack, &gj);
        dg_pool_run(k->pool, ng * gj.nrb, grp_task, &gj);
        if (act != DG_F32 && act != DG_BF16)
            for (int i = 0; i < ng; i++) dg_round_act_pool(k->pool, g[i].y, (size_t)g[i].n * (size_t)g[i].w.rows, act);
        return;
    }
#endif
    /* one product after another, gathered rows copied into k->gather first */
    for (int i = 0; i < ng; i++) {
        const float *x = g[i].x;
        if (g[i].xrows && k->gather && g[i].n <= k->max_n && g[i].w.cols <= k->max_k) {
            for (int r = 0; r < g[i].n; r++)
                memcpy(k->gather + (size_t)r * g[i].w.cols, g[i].x + (size_t)g[i].xrows[r] * g[i].w.cols, sizeof(float) * (size_t)g[i].w.cols);
            x = k->gather;
        } else if (g[i].xrows) {   /* no scratch: row by row */
            for (int r = 0; r < g[i].n; r++)
                matmul_impl(k, p, g[i].y + (size_t)r * g[i].w.rows, g[i].x + (size_t)g[i].xrows[r] * g[i].w.cols, 1, &g[i].w, x_bf16, act, 0.0f);
            continue;
        }
        matmul_impl(k, p, g[i].y, x, g[i].n, &g[i].w, x_bf16, act, 0.0f);
    }
}

void dg_matmul_grouped(const dg_kctx *k, const dg_gemm *g, int ng, int x_bf16, dg_dtype act) {
    dg_matmul_grouped_path(k, k->path, g, ng, x_bf16, act);
}

/* ===== vector helpers ===== */

static float dot_generic(const float *a, const float *b, int n) {
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++) acc[l] += a[i + l] * b[i + l];
    float s = 0.0f;
    for (; i < n; i++) s += a[i] * b[i];
    for (int l = 0; l < 8; l++) s += acc[l];
    return s;
}

static void axpy_generic(float *y, float a, const float *x, int n) {
    for (int i = 0; i < n; i++) y[i] += a * x[i];
}

static float max_generic(const float *x, int n, int *arg) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    *arg = best;
    return x[best];
}

static float expsum_generic(float *x, int n, float mx) {
    float s = 0.0f;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - mx);
        s += x[i];
    }
    return s;
}

static float dotdiff_generic(const float *x, const float *z, int n, float mx) {
    float s = 0.0f;
    for (int i = 0; i < n; i++) s += x[i] * (mx - z[i]);
    return s;
}

static void softcap_generic(float *x, int n, float cap) {
    for (int i = 0; i < n; i++) x[i] = tanhf(x[i] / cap) * cap;
}

static void wsum_generic(float *o, const float *const *y, const float *w, int K, int n) {
    for (int i = 0; i < n; i++) o[i] = 0.0f;
    for (int k = 0; k < K; k++)
        for (int i = 0; i < n; i++) o[i] += y[k][i] * w[k];
}

static float (*g_dot)(const float *, const float *, int);
static void (*g_wsum)(float *, const float *const *, const float *, int, int);
static void (*g_softcap)(float *, int, float);
static void (*g_axpy)(float *, float, const float *, int);
static float (*g_max)(const float *, int, int *);
static float (*g_expsum)(float *, int, float);
static float (*g_dotdiff)(const float *, const float *, int, float);

/* chosen once (pthread_once): every thread must use the same kernels, or results would depend on
 * which thread ran first */
static void pick_vec_once(void) {
    g_dot = dot_generic;
    g_wsum = wsum_generic;
    g_axpy = axpy_generic;
    g_max = max_generic;
    g_expsum = expsum_generic;
    g_dotdiff = dotdiff_generic;
    g_softcap = softcap_generic;
#if defined(__x86_64__)
    if (dg_cpu_has_avx512()) {
        g_softcap = dg_softcap_f32_avx512;
        g_wsum = dg_wsum_f32_avx512;
        g_dot = dg_dot_f32_avx512; g_axpy = dg_axpy_f32_avx512; g_max = dg_max_f32_avx512;
        g_expsum = dg_expsum_f32_avx512; g_dotdiff = dg_dotdiff_f32_avx512;
    } else if (dg_cpu_has_avx2()) {
        g_dot = dg_dot_f32_avx2; g_axpy = dg_axpy_f32_avx2;
    }
#endif
}

static pthread_once_t g_vec_once = PTHREAD_ONCE_INIT;
static void pick_vec(void) { pthread_once(&g_vec_once, pick_vec_once); }

void dg_wsum_f32(float *o, const float *const *y, const float *w, int K, int n) {
    pick_vec();
    g_wsum(o, y, w, K, n);
}

float dg_max_f32(const float *x, int n, int *arg) {
    pick_vec();
    return g_max(x, n, arg);
}

float dg_expsum_f32(float *x, int n, float mx) {
    pick_vec();
    return g_expsum(x, n, mx);
}

/* round to bf16 (nearest even; a NaN stays a quiet NaN, as dg_f32_to_bf16 does), without branches */
static void round_bf16_block(float *x, size_t n) {
    uint32_t *u = (uint32_t *)(void *)x;
    for (size_t i = 0; i < n; i++) {
        const uint32_t v = u[i];
        const uint32_t r = (v + 0x7fffu + ((v >> 16) & 1u)) & 0xffff0000u;
        const uint32_t q = (v | 0x00400000u) & 0xffff0000u;
        u[i] = (v & 0x7fffffffu) > 0x7f800000u ? q : r;
    }
}

typedef struct {
    float *y;
    const float *x;
    int n, dim, per;
    const dg_vec *w;
    float eps;
    dg_dtype act;
} norm_job;

static void norm_task(void *ctx, int i, int tid) {
    (void)tid;
    const norm_job *j = ctx;
    const int t1 = (i + 1) * j->per < j->n ? (i + 1) * j->per : j->n;
#if defined(__x86_64__)
    const int v512 = dg_cpu_has_avx512();
#endif
    for (int t = i * j->per; t < t1; t++) {
        const float *xt = j->x + (int64_t)t * j->dim;
        float *yt = j->y + (int64_t)t * j->dim;
        double ss;
#if defined(__x86_64__)
        if (v512) ss = dg_sumsq_f64_avx512(xt, j->dim);
        else
#endif
        {
            ss = 0.0;
            for (int c = 0; c < j->dim; c++) ss += (double)xt[c] * xt[c];
        }
        const float r = 1.0f / sqrtf((float)(ss / j->dim) + j->eps);
#if defined(__x86_64__)
        if (v512 && dg_rms_scale_f32_avx512(yt, xt, r, j->w ? j->w->data : NULL, j->w ? j->w->dt : DG_F32, j->dim)) {
            dg_round_act_fast(yt, (size_t)j->dim, j->act);
            continue;
        }
#endif
        if (!j->w)
            for (int c = 0; c < j->dim; c++) yt[c] = xt[c] * r;
        else if (j->w->dt == DG_F32) {
            const float *w = j->w->data;
            for (int c = 0; c < j->dim; c++) yt[c] = (xt[c] * r) * w[c];
        } else if (j->w->dt == DG_BF16) {
            const uint16_t *w = j->w->data;
            for (int c = 0; c < j->dim; c++) yt[c] = (xt[c] * r) * dg_bf16_to_f32(w[c]);
        } else
            for (int c = 0; c < j->dim; c++) yt[c] = (xt[c] * r) * dg_wget(j->w->data, j->w->dt, c);
        dg_round_act_fast(yt, (size_t)j->dim, j->act);
    }
}

void dg_rmsnorm_fast(dg_pool *pool, float *y, const float *x, int n, int dim, const dg_vec *w, float eps, dg_dtype act) {
    if (n <= 0) return;
    const int per = dim >= 4096 ? 1 : 4096 / dim;   /* rows per task: at least ~4K values */
    norm_job j = {y, x, n, dim, per, w, eps, act};
    dg_pool_run(pool, (n + per - 1) / per, norm_task, &j);
}

void dg_div_f32(float *x, size_t n, float d) {
#if defined(__x86_64__)
    if (dg_cpu_has_avx512()) { dg_div_f32_avx512(x, n, d); return; }
#endif
    for (size_t i = 0; i < n; i++) x[i] = x[i] / d;   /* vectorized at -O3 (SSE2); each quotient correctly rounded */
}

void dg_round_act_fast(float *x, size_t n, dg_dtype act) {
#if defined(__x86_64__)
    /* the portable loop is compiled for SSE2 (4 lanes); the same rule 16 lanes at a time */
    if (act == DG_BF16 && dg_cpu_has_avx512()) { dg_round_bf16_avx512(x, n); return; }
#endif
    if (act == DG_BF16) round_bf16_block(x, n);
    else dg_round_act(x, n, act);
}

void dg_rope_fast(float *x, int d, const float *cos, const float *sin, dg_dtype act) {
#if defined(__x86_64__)
    if ((act == DG_BF16 || act == DG_F32) && dg_cpu_has_avx512()) {
        dg_rope_avx512(x, d, cos, sin, act == DG_BF16);
        return;
    }
#endif
    dg_rope_ref(x, d, cos, sin, act);
}

float dg_div_max_f32(float *x, int n, float d, int *arg) {
#if defined(__x86_64__)
    pick_vec();
    if (g_max == dg_max_f32_avx512) return dg_div_max_f32_avx512(x, n, d, arg);
#endif
    dg_div_f32(x, (size_t)n, d);
    return dg_max_f32(x, n, arg);
}

float dg_expsum_dd_f32(float *z, float *w, int n, float mx, float *dd, dg_dtype act) {
#if defined(__x86_64__)
    pick_vec();
    if (g_expsum == dg_expsum_f32_avx512 && g_dotdiff == dg_dotdiff_f32_avx512) {
        const float s = dg_expsum_dd_f32_avx512(z, w, n, mx, dd, act == DG_BF16);
        if (act != DG_BF16) dg_round_act_fast(z, (size_t)n, act);
        return s;
    }
#endif
    memcpy(w, z, sizeof(float) * (size_t)n);
    const float s = dg_expsum_f32(w, n, mx);
    *dd = dg_dotdiff_f32(w, z, n, mx);
    dg_round_act_fast(z, (size_t)n, act);
    return s;
}

typedef struct {
    float *x;
    size_t n;
    dg_dtype act;
    const float *a;   /* dg_add_round_pool: added first */
    float scale;      /* dg_scale_round_pool: multiplied first (when a is NULL) */
    int op;           /* 0: round only, 1: add, 2: scale */
} round_job;

enum { ROUND_CHUNK = 1 << 16 };

static void round_task(void *ctx, int i, int tid) {
    (void)tid;
    const round_job *j = ctx;
    const size_t a = (size_t)i * ROUND_CHUNK, m = j->n - a < ROUND_CHUNK ? j->n - a : ROUND_CHUNK;
    float *x = j->x + a;
    if (j->op == 1)
        for (size_t k = 0; k < m; k++) x[k] = x[k] + j->a[a + k];
    else if (j->op == 2)
        for (size_t k = 0; k < m; k++) x[k] = x[k] * j->scale;
    if (j->act == DG_BF16 || j->act == DG_F16) dg_round_act_fast(x, m, j->act);
}

static void round_pool(dg_pool *pool, round_job *j) {
    if (j->n <= ROUND_CHUNK) { round_task(j, 0, 0); return; }
    dg_pool_run(pool, (int)((j->n + ROUND_CHUNK - 1) / ROUND_CHUNK), round_task, j);
}

void dg_round_act_pool(dg_pool *pool, float *x, size_t n, dg_dtype act) {
    if (act != DG_BF16 && act != DG_F16) return;
    round_job j = {x, n, act, NULL, 1.0f, 0};
    round_pool(pool, &j);
}

void dg_add_round_pool(dg_pool *pool, float *x, const float *a, size_t n, dg_dtype act) {
    round_job j = {x, n, act, a, 1.0f, 1};
    round_pool(pool, &j);
}

void dg_scale_round_pool(dg_pool *pool, float *x, float scale, size_t n, dg_dtype act) {
    round_job j = {x, n, act, NULL, scale, 2};
    round_pool(pool, &j);
}

void dg_softcap_f32(float *x, int n, float cap) {
    pick_vec();
    g_softcap(x, n, cap);
}

float dg_dotdiff_f32(const float *x, const float *z, int n, float mx) {
    pick_vec();
    return g_dotdiff(x, z, n, mx);
}

/* The attention kernels run with denormals flushed (x86 MXCSR FTZ | DAZ, restored on return): the
 * probabilities of far-off keys are exp(s - max) of -90 and below, denormal, and every product with
 * one took a microcode assist (the block kernel ran at 6-9 instead of 37-45 GFLOP/s per thread on a
 * 1,256-key row with realistic score spreads). A flushed product is one below 2^-126 that the sum
 * could only notice while its column's running sum is itself below 2^-102; the oracle is unaffected. */
#if defined(__x86_64__)
static inline unsigned ftz_on(void) {
    const unsigned csr = _mm_getcsr();
    _mm_setcsr(csr | 0x8040u);
    return csr;
}
static inline void ftz_off(unsigned csr) { _mm_setcsr(csr); }
#else
static inline unsigned ftz_on(void) { return 0; }
static inline void ftz_off(unsigned csr) { (void)csr; }
#endif

/* one row, portable: the fallback where the block kernel has no SIMD version */
static void attend_row(const float *q, int d, const dg_kseg *seg, int nseg, float *sc, float *acc, float *out, dg_dtype act) {
    int nk = 0;
    float mx = -INFINITY;
    for (int g = 0; g < nseg; g++)
        for (int j = 0; j < seg[g].n; j++) {
            const float dot = dg_dot_f32(q, seg[g].k + (int64_t)j * seg[g].stride, d);
            sc[nk++] = dot;
            mx = dot > mx ? dot : mx;
        }
    float sum = 0.0f;
    for (int j = 0; j < nk; j++) {
        sc[j] = expf(sc[j] - mx);
        sum += sc[j];
        sc[j] = dg_round1(sc[j], act);
    }
    memset(acc, 0, sizeof(float) * (size_t)d);
    int j = 0;
    for (int g = 0; g < nseg; g++)
        for (int i = 0; i < seg[g].n; i++, j++) dg_axpy_f32(acc, sc[j], seg[g].v + (int64_t)i * seg[g].stride, d);
    for (int i = 0; i < d; i++) out[i] = acc[i] / sum;
}

void dg_attend_block_f32(const float *q, int64_t qs, int nq, int nh, int d, const dg_kseg *seg, int nseg, float *sc,
                         int64_t ldsc, float *acc, float *out, int64_t os, dg_dtype act) {
    const unsigned csr = ftz_on();
#if defined(__x86_64__)
    if (dg_cpu_has_avx512() && nq * nh >= 1 && nq * nh <= DG_ATT_ROWS) {
        dg_attend_block_avx512(q, qs, nq, nh, d, seg, nseg, sc, ldsc, acc, out, os, act);
        ftz_off(csr);
        return;
    }
#endif
    for (int i = 0; i < nq; i++)
        for (int h = 0; h < nh; h++)
            attend_row(q + i * qs + (int64_t)h * d, d, seg, nseg, sc, acc, out + i * os + (int64_t)h * d, act);
    ftz_off(csr);
}

static int attend_amx(const float *q, int64_t qs, int nq, int nh, int d, const dg_kseg *seg, int nseg, float *sc, int64_t ldsc,
                      float *acc, float *out, int64_t os, const int *valid, void *scratch, const uint16_t *kpk, const uint16_t *vpk, int nkp) {
#if defined(__x86_64__)
    if (!dg_path_available(DG_PATH_AMX) || d % 32 || nq * nh > DG_ATT_ROWS || nq * nh < 1) return 0;
    const unsigned csr = ftz_on();
    dg_attend_block_amx(q, qs, nq, nh, d, seg, nseg, sc, ldsc, acc, out, os, valid, scratch, kpk, vpk, nkp);
    ftz_off(csr);
    return 1;
#else
    (void)q; (void)qs; (void)nq; (void)nh; (void)d; (void)seg; (void)nseg; (void)sc; (void)ldsc; (void)acc; (void)out; (void)os; (void)valid;
    (void)scratch; (void)kpk; (void)vpk; (void)nkp;
    return 0;
#endif
}

int dg_attend_block_amx_f32(const float *q, int64_t qs, int nq, int nh, int d, const dg_kseg *seg, int nseg, float *sc,
                            int64_t ldsc, float *acc, float *out, int64_t os, const int *valid, void *scratch) {
    return attend_amx(q, qs, nq, nh, d, seg, nseg, sc, ldsc, acc, out, os, valid, scratch, NULL, NULL, 0);
}

size_t dg_attend_amx_pack_bytes(int nk, int d, int two) {
    size_t v0, v1;
    return dg_att_pack_layout(nk, d, two, &v0, &v1) * sizeof(uint16_t);
}

int dg_attend_amx_pack_f32(const dg_kseg *seg, int nseg, int d, void *pk, int c0, int c1, int two) {
#if defined(__x86_64__)
    if (!dg_path_available(DG_PATH_AMX) || d % 32) return 0;
    int nk = 0;
    for (int g = 0; g < nseg; g++) nk += seg[g].n;
    const unsigned csr = ftz_on();
    dg_attend_amx_pack(seg, nseg, nk, d, pk, c0, c1, two);
    ftz_off(csr);
    return 1;
#else
    (void)seg; (void)nseg; (void)d; (void)pk; (void)c0; (void)c1; (void)two;
    return 0;
#endif
}

int dg_attend_block_amx_packed_f32(const float *q, int64_t qs, int nq, int nh, int d, float *sc, int64_t ldsc, float *acc, float *out,
                                   int64_t os, const int *valid, void *scratch, const void *pk, int nk_all, int two, int off, int nk) {
    if (off < 0 || off % 16 || (off % 32 && !two) || nk < 0 || off + nk > nk_all || d % 32) return 0;
    const size_t nkc = (size_t)d / 32, nct = (size_t)d / 16;
    size_t v0, v1;
    dg_att_pack_layout(nk_all, d, two, &v0, &v1);
    const uint16_t *kp = pk, *kpk = kp + (size_t)(off / 16) * nkc * 512, *vpk = kp + (off % 32 ? v1 : v0) + (size_t)(off / 32) * nct * 512;
    return attend_amx(q, qs, nq, nh, d, NULL, 0, sc, ldsc, acc, out, os, valid, scratch, kpk, vpk, nk);
}

#if !defined(__x86_64__)
size_t dg_attend_amx_scratch(int d) { (void)d; return 0; }
#endif

void dg_attend_f32(const float *q, int d, const dg_kseg *seg, int nseg, float *sc, float *acc, float *out, dg_dtype act) {
    dg_attend_block_f32(q, 0, 1, 1, d, seg, nseg, sc, 0, acc, out, 0, act);
}

void dg_gelu_mul_f32(const float *g, const float *u, float *out, int n, dg_dtype act) {
#if defined(__x86_64__)
    if (dg_cpu_has_avx512()) { dg_gelu_mul_f32_avx512(g, u, out, n, act); return; }
#endif
    for (int i = 0; i < n; i++) out[i] = dg_round1(dg_round1(dg_gelu_tanh(g[i]), act) * u[i], act);
}

void dg_softmax_fast(float *x, int n) {
    int arg;
    const float mx = dg_max_f32(x, n, &arg), sum = dg_expsum_f32(x, n, mx);
    dg_div_f32(x, (size_t)n, sum);
}

float dg_dot_f32(const float *a, const float *b, int n) {
    pick_vec();   /* idempotent: racing first calls store the same pointers */
    return g_dot(a, b, n);
}

void dg_axpy_f32(float *y, float a, const float *x, int n) {
    pick_vec();
    g_axpy(y, a, x, n);
}

void dg_matmul(const dg_kctx *k, float *y, const float *x, int n, const dg_mat *w, int x_bf16) {
    dg_matmul_path(k, k->path, y, x, n, w, x_bf16);
}

/* ===== probabilities times the embedding (self-conditioning) ===== */

enum { NN_HB = 32, NN_VB = 512,    /* columns per task, embedding rows per panel */
       NN_ROW = 1024 };               /* floats for the blocks enclosing NN_HB columns (<= 32 + 2 * 256) */

typedef struct {
    const dg_kctx *k;
    dg_path path;
    float *y;
    const float *p;
    int64_t ldp;
    int n;
    const dg_mat *e;
} nn_job;

/* the panel of E rows [v0, v0+nv), columns [h0, h0+hb) as float32 [nv, NN_HB] (zero padded) */
static void nn_panel(const dg_mat *e, int64_t v0, int nv, int64_t h0, int hb, float *pan, float *row) {
    const int blk = dg_dtype_block(e->dt) > 0 ? dg_dtype_block(e->dt) : 1;
    for (int v = 0; v < nv; v++) {
        float *dst = pan + (int64_t)v * NN_HB;
        if (e->dt == DG_F32 || e->dt == DG_BF16 || e->dt == DG_F16) {
            dg_dequant_range(e, v0 + v, h0, hb, dst);
        } else {   /* block formats: dequantize the enclosing blocks */
            const int64_t c0 = h0 / blk * blk, c1 = (h0 + hb + blk - 1) / blk * blk;
            const int64_t end = c1 < e->cols ? c1 : e->cols;
            dg_dequant_range(e, v0 + v, c0, end - c0, row);
            memcpy(dst, row + (h0 - c0), sizeof(float) * (size_t)hb);
        }
        for (int c = hb; c < NN_HB; c++) dst[c] = 0.0f;
    }
}

static void nn_task(void *ctx, int i, int tid) {
    const nn_job *j = ctx;
    const int64_t V = j->e->rows, H = j->e->cols, h0 = (int64_t)i * NN_HB;
    const int hb = (int)(H - h0 < NN_HB ? H - h0 : NN_HB);
    float *pan = j->k->panel[tid];                  /* [NN_VB, NN_HB] */
    float *row = pan + NN_VB * NN_HB;               /* the blocks around one row's 32 columns */
    float *acc = row + NN_ROW;                      /* [n, NN_HB] running sums */
    double *dacc = (double *)(acc + (size_t)j->n * NN_HB);   /* [n, NN_HB], the oracle's exact sums */
    const int exact = j->path == DG_PATH_REF;
    memset(acc, 0, sizeof(float) * (size_t)j->n * NN_HB);
    if (exact) memset(dacc, 0, sizeof(double) * (size_t)j->n * NN_HB);
    for (int64_t v0 = 0; v0 < V; v0 += NN_VB) {
        const int nv = (int)(V - v0 < NN_VB ? V - v0 : NN_VB);
        nn_panel(j->e, v0, nv, h0, hb, pan, row);
        if (exact) {   /* each output the exact sum (products exact in double), rounded once below */
            for (int t = 0; t < j->n; t++) {
                const float *pt = j->p + (int64_t)t * j->ldp + v0;
                double *at = dacc + (int64_t)t * NN_HB;
                for (int v = 0; v < nv; v++) {
                    if (pt[v] == 0.0f) continue;
                    const double pv = pt[v];
                    for (int c = 0; c < hb; c++) at[c] += pv * pan[(int64_t)v * NN_HB + c];
                }
            }
            continue;
        }
#if defined(__x86_64__)
        if (j->path == DG_PATH_AVX512 || j->path == DG_PATH_AMX) { dg_nn_block_avx512(j->p + v0, j->ldp, j->n, pan, nv, acc); continue; }
#endif
        for (int t = 0; t < j->n; t++) {
            const float *pt = j->p + (int64_t)t * j->ldp + v0;
            float *at = acc + (int64_t)t * NN_HB;
            for (int v = 0; v < nv; v++) {
                const float pv = pt[v];
                const float *ev = pan + (int64_t)v * NN_HB;
                for (int c = 0; c < NN_HB; c++) at[c] += pv * ev[c];
            }
        }
    }
    if (exact)
        for (int t = 0; t < j->n; t++)
            for (int c = 0; c < hb; c++) acc[(int64_t)t * NN_HB + c] = (float)dacc[(int64_t)t * NN_HB + c];
    for (int t = 0; t < j->n; t++) memcpy(j->y + (int64_t)t * H + h0, acc + (int64_t)t * NN_HB, sizeof(float) * (size_t)hb);
}

/* AMX: bf16-exact probabilities and a bf16 embedding (nothing rounded on the way in), or a quantized
 * one dequantized and rounded to bf16 (as dg_matmul does with quantized weights) */
static int nn_amx_ok(const dg_kctx *k, int n, const dg_mat *e, int p_bf16) {
#if defined(__x86_64__)
    const int quant_e = !dg_dtype_size(e->dt) && (dg_gguf_block_elems(e->dt) ? DG_NN_HB % dg_gguf_block_elems(e->dt) == 0 && e->cols % dg_gguf_block_elems(e->dt) == 0
                                                                            : DG_NN_HB % e->mlx.group == 0);
    return k->path == DG_PATH_AMX && p_bf16 && (e->dt == DG_BF16 || quant_e) && k->pbuf && e->rows <= k->max_v && n >= 1 && n <= k->max_nn &&
           n <= k->max_n;
#else
    (void)k; (void)n; (void)e; (void)p_bf16;
    return 0;
#endif
}

int dg_matmul_nn_can_prepack(const dg_kctx *k, int n, const dg_mat *e, int p_bf16) { return nn_amx_ok(k, n, e, p_bf16); }

void dg_nn_pack_row(const dg_kctx *k, int t, const float *p, int64_t V) {
#if defined(__x86_64__)
    dg_nn_amx_pack_row(k, t, p, V);
#else
    (void)k; (void)t; (void)p; (void)V;
#endif
}

void dg_nn_pack_softmax_row(const dg_kctx *k, int t, const float *x, int64_t V, float *tmp) {
#if defined(__x86_64__)
    /* the fused rows repeat the AVX-512 passes dg_softmax_fast and dg_round_act_fast take here */
    if (dg_cpu_has_avx512()) { dg_nn_amx_softmax_pack_row(k, t, x, V, tmp); return; }
#endif
    memcpy(tmp, x, sizeof(float) * (size_t)V);
    dg_softmax_fast(tmp, (int)V);
    dg_round_act_fast(tmp, (size_t)V, DG_BF16);
    dg_nn_pack_row(k, t, tmp, V);
}

void dg_matmul_nn_prepacked(const dg_kctx *k, float *y, int n, const dg_mat *e) {
#if defined(__x86_64__)
    dg_nn_amx_prepacked(k, y, n, e);
#else
    (void)k; (void)y; (void)n; (void)e;
#endif
}

void dg_matmul_nn(const dg_kctx *k, float *y, const float *p, int64_t ldp, int n, const dg_mat *e, int p_bf16) {
    if (n <= 0) return;
    if (n > k->max_n) {   /* the per-thread sums hold max_n rows: beyond that, one call per block of rows */
        for (int t0 = 0; t0 < n; t0 += k->max_n)
            dg_matmul_nn(k, y + (int64_t)t0 * e->cols, p + (int64_t)t0 * ldp, ldp, n - t0 < k->max_n ? n - t0 : k->max_n, e, p_bf16);
        return;
    }
    const dg_path path = k->path;
#if defined(__x86_64__)
    if (nn_amx_ok(k, n, e, p_bf16)) {
        dg_nn_amx(k, y, p, ldp, n, e);
        return;
    }
#else
    (void)p_bf16;
#endif
    nn_job j = {k, path, y, p, ldp, n, e};
    dg_pool_run(k->pool, (int)((e->cols + NN_HB - 1) / NN_HB), nn_task, &j);
}
