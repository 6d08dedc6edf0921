/*
 * gemm.c - `dgemma bench --gemm`: the matrix products of a 26B-A4B denoising step timed alone, on
 * random weights (no model file), with the kernels the forward pass uses. One line per shape: the
 * best of R repetitions in ms, GFLOP/s and the share of the measured AMX-BF16 and VNNI-int8 peaks.
 *
 * Shapes (hidden 2816, expert width 704, vocabulary cut to 32,768 rows so one call takes ~100 ms;
 * the LM head and P.E scale linearly in the vocabulary):
 *   lm_head   y[256, 32768] = x[256, 2816] . E^T      bf16 weights
 *   pe        y[256, 2816]  = P[256, 32768] . E        bf16 embedding
 *   gate_up   y[16, 1408]   = x[16, 2816] . W^T       Q4_K, one expert's ~16 routed rows
 *   lm_head6  the LM head as Q4_K_M stores it: Q6_K
 *   down      y[16, 2816]   = x[16, 704] . W^T        Q8_0 (as Q4_K_M stores it: 704 is no multiple of 256)
 *   gate_up8  the gate_up shape at Q8_0
 *   qproj     y[256, 4096]  = x[256, 2816] . W^T      Q4_K (an attention projection)
 *   vproj     y[256, 2048]  = x[256, 2816] . W^T      Q6_K
 *   moe_gu    gate_up of a whole layer: 128 experts x 16 rows in one grouped call (2048 routings), the
 *             weights (288 MB) larger than any cache, as in a step
 *   moe_down  down of a whole layer, the same way
 */
#define _GNU_SOURCE
#include "bench/bench.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/gemm.h"
#include "kernels/quants.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static float frand(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (float)((g_rng >> 40) * (1.0 / (1ull << 24))) * 2.0f - 1.0f;
}

/* bf16-exact values (the activations of a bf16 model are) */
static void fill_bf16_exact(float *x, size_t n, float scale) {
    for (size_t i = 0; i < n; i++) x[i] = dg_bf16_to_f32(dg_f32_to_bf16(frand() * scale));
}

static void *make_weights(dg_dtype dt, int64_t rows, int64_t cols) {
    if (dt == DG_BF16) {
        uint16_t *w = malloc(sizeof(uint16_t) * (size_t)(rows * cols));
        if (w)
            for (int64_t i = 0; i < rows * cols; i++) w[i] = dg_f32_to_bf16(frand() * 0.05f);
        return w;
    }
    const size_t rb = (size_t)(cols / dg_gguf_block_elems(dt)) * dg_gguf_block_bytes(dt);
    uint8_t *w = malloc(rb * (size_t)rows);
    float *row = malloc(sizeof(float) * (size_t)cols);
    if (!w || !row) { free(w); free(row); return NULL; }
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t c = 0; c < cols; c++) row[c] = frand() * 0.05f;
        dg_quantize_gguf_fast(dt, row, w + (size_t)r * rb, cols, NULL);
    }
    free(row);
    return w;
}

typedef struct {
    const char *name;
    dg_dtype dt;
    int n;
    int64_t rows, cols;
    int nn;   /* 1: y = P . E (dg_matmul_nn), E [rows, cols] */
    int ng;   /* > 1: a grouped call over ng experts of n rows each (ng copies of the weights) */
} shape;

int dg_bench_gemm(dg_pool *pool, int reps, const char *only) {
    static const shape shapes[] = {
        {"lm_head", DG_BF16, 256, 32768, 2816, 0, 0}, {"pe", DG_BF16, 256, 32768, 2816, 1, 0},
        {"lm_head6", DG_Q6_K, 256, 32768, 2816, 0, 0},
        {"gate_up", DG_Q4_K, 16, 1408, 2816, 0, 0}, {"down", DG_Q8_0, 16, 2816, 704, 0, 0},
        {"gate_up8", DG_Q8_0, 16, 1408, 2816, 0, 0}, {"qproj", DG_Q4_K, 256, 4096, 2816, 0, 0},
        {"vproj", DG_Q6_K, 256, 2048, 2816, 0, 0},
        {"moe_gu", DG_Q4_K, 16, 1408, 2816, 0, 128}, {"moe_down", DG_Q8_0, 16, 2816, 704, 0, 128},
    };
    dg_peaks pk;
    dg_bench_peaks(pool, &pk);
    printf("gemm: %d threads, peaks: AMX-BF16 %.0f GFLOP/s, VNNI int8 %.0f GOP/s, BF16 dot %.0f, FP32 FMA %.0f\n", dg_pool_size(pool),
           pk.amx_bf16, pk.int8, pk.bf16, pk.fp32);
    /* each shape's percentages are of the peaks sampled right before and right after its repetitions
     * (the larger of the two, as the time is the best repetition): on a shared VM a peak measured
     * minutes away was 2-3x off either way */
    printf("%-9s %5s %6s %6s %5s %9s %9s %7s %7s %8s %8s\n", "shape", "type", "n", "rows", "cols", "best_ms", "GFLOP/s", "%amx", "%int8",
           "amx_pk", "int8_pk");
    for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
        const shape *sh = &shapes[s];
        if (only && !strstr(sh->name, only)) continue;
        dg_kctx k;
        const int64_t kin = sh->nn ? sh->rows : sh->cols;
        const int ng = sh->ng > 1 ? sh->ng : 1, nt = sh->n * ng;
        if (dg_kctx_init(&k, pool, dg_path_best(), sh->n, sh->nn ? sh->cols : sh->cols, sh->nn ? sh->rows : 0, sh->n) ||
            (ng > 1 && dg_kctx_init_grouped(&k, ng, nt))) {
            fprintf(stderr, "dgemma bench --gemm: out of memory\n");
            dg_kctx_free(&k);
            return 1;
        }
        void *w = make_weights(sh->dt, sh->rows, sh->cols);
        const size_t wbytes = sh->dt == DG_BF16 ? (size_t)(sh->rows * sh->cols) * 2
                                                : (size_t)sh->rows * (size_t)(sh->cols / dg_gguf_block_elems(sh->dt)) * dg_gguf_block_bytes(sh->dt);
        if (w && ng > 1) {   /* ng copies: every expert's weights come from memory, not from a cache */
            void *wa = realloc(w, wbytes * (size_t)ng);
            if (!wa) { free(w); w = NULL; }
            else { w = wa; for (int g = 1; g < ng; g++) memcpy((uint8_t *)w + wbytes * (size_t)g, w, wbytes); }
        }
        float *x = malloc(sizeof(float) * (size_t)(nt * kin));
        float *y = malloc(sizeof(float) * (size_t)nt * (size_t)(sh->nn ? sh->cols : sh->rows));
        dg_gemm *gs = malloc(sizeof(dg_gemm) * (size_t)ng);
        if (!w || !x || !y || !gs) {
            fprintf(stderr, "dgemma bench --gemm: out of memory\n");
            free(w); free(x); free(y); free(gs); dg_kctx_free(&k);
            return 1;
        }
        fill_bf16_exact(x, (size_t)(nt * kin), sh->nn ? 1.0f / 64 : 1.0f);
        const dg_mat m = dg_mat_init(w, sh->dt, sh->rows, sh->cols);
        for (int g = 0; g < ng; g++)
            gs[g] = (dg_gemm){dg_mat_init((uint8_t *)w + wbytes * (size_t)g, sh->dt, sh->rows, sh->cols), x + (size_t)g * sh->n * kin,
                              NULL, y + (size_t)g * sh->n * sh->rows, sh->n};
        double best = 1e30;
        dg_peaks p0, p1;
        dg_bench_peaks_for(pool, &p0, 0.05);
        for (int r = 0; r < reps + 1; r++) {   /* the first call warms up */
            const double t0 = now_s();
            if (sh->nn) dg_matmul_nn(&k, y, x, kin, sh->n, &m, 1);
            else if (ng > 1) dg_matmul_grouped(&k, gs, ng, 1, DG_BF16);
            else dg_matmul_act(&k, y, x, sh->n, &m, 1, DG_BF16);
            const double dt = now_s() - t0;
            if (r && dt < best) best = dt;
        }
        dg_bench_peaks_for(pool, &p1, 0.05);
        const double amx = p0.amx_bf16 > p1.amx_bf16 ? p0.amx_bf16 : p1.amx_bf16, i8 = p0.int8 > p1.int8 ? p0.int8 : p1.int8;
        const double gf = 2.0 * nt * (double)sh->rows * (double)sh->cols / best * 1e-9;
        printf("%-9s %5s %6d %6lld %5lld %9.2f %9.1f %6.1f%% %6.1f%% %8.0f %8.0f\n", sh->name, dg_dtype_name(sh->dt), nt,
               (long long)sh->rows, (long long)sh->cols, best * 1e3, gf, amx > 0 ? 100 * gf / amx : 0, i8 > 0 ? 100 * gf / i8 : 0, amx, i8);
        fflush(stdout);
        free(w); free(x); free(y); free(gs);
        dg_kctx_free(&k);
    }
    return 0;
}
