/*
 * test_kernels.c - every fast matmul path against the scalar oracle (dg_matmul_ref), on shapes with
 * tails in every dimension, for every float weight type, with 1-3 threads; and the thread pool.
 */
#include <math.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif
#include <stdlib.h>
#include <string.h>

#include "kernels/gemm.h"
#include "kernels/gemm_impl.h"
#include "kernels/kernels.h"
#include "kernels/quants.h"
#include "test.h"

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static float frand(void) {   /* uniform in [-1, 1) */
    g_rng ^= g_rng << 13; g_rng ^= g_rng >> 7; g_rng ^= g_rng << 17;
    return (float)((g_rng >> 40) * (1.0 / 8388608.0)) - 1.0f;
}

/* max over outputs of |y - ref| / sum_k |x_k w_k| (the float32 accumulation error scale) */
static double matmul_err(const float *y, const float *ref, const float *x, int n, const dg_mat *w) {
    const int64_t K = w->cols;
    float *row = malloc(sizeof(float) * (size_t)K);
    double worst = 0.0;
    for (int64_t r = 0; r < w->rows; r++) {
        dg_dequant_range(w, r, 0, K, row);
        for (int t = 0; t < n; t++) {
            double l1 = 0.0;
            for (int64_t k = 0; k < K; k++) l1 += fabs((double)x[t * K + k] * row[k]);
            const double e = fabs((double)y[t * w->rows + r] - ref[t * w->rows + r]) / (l1 > 0 ? l1 : 1.0);
            if (e > worst || isnan(y[t * w->rows + r])) worst = isnan(y[t * w->rows + r]) ? INFINITY : e;
        }
    }
    free(row);
    return worst;
}

static void fill_weights(void *data, dg_dtype dt, size_t n) {
    for (size_t i = 0; i < n; i++) {
        const float v = frand();
        if (dt == DG_F32) ((float *)data)[i] = v;
        else if (dt == DG_BF16) ((uint16_t *)data)[i] = dg_f32_to_bf16(v);
        else ((uint16_t *)data)[i] = dg_f32_to_f16(v);
    }
}

static void test_matmul_paths(void) {
    const int shapes[][3] = {   /* n, rows, cols */
        {1, 1, 16}, {1, 7, 24}, {3, 5, 48}, {4, 16, 64}, {16, 32, 64}, {17, 33, 96}, {33, 40, 100},
        {5, 64, 256}, {64, 48, 2816 / 8}, {40, 70, 704}, {256, 32, 64}, {20, 31, 33},
    };
    const dg_dtype types[] = {DG_F32, DG_BF16, DG_F16};
    int runs = 0;
    for (int th = 1; th <= 3; th++) {
        dg_pool *pool = dg_pool_create(th);
        CHECK(pool != NULL, "pool of %d threads", th);
        if (!pool) return;
        dg_kctx k;
        CHECK(dg_kctx_init(&k, pool, dg_path_best(), 256, 2816, 0, 0) == 0, "kctx");
        for (int p = DG_PATH_GENERIC; p < DG_N_PATHS; p++) {
            if (!dg_path_available((dg_path)p)) {
                if (th == 1) printf("  path %-8s not available on this CPU: skipped\n", dg_path_name((dg_path)p));
                continue;
            }
            double worst[3] = {0, 0, 0};
            for (size_t si = 0; si < sizeof(shapes) / sizeof(shapes[0]); si++) {
                const int n = shapes[si][0], R = shapes[si][1], K = shapes[si][2];
                float *x = malloc(sizeof(float) * (size_t)n * K), *y = malloc(sizeof(float) * (size_t)n * R),
                      *ref = malloc(sizeof(float) * (size_t)n * R);
                void *wd = malloc(sizeof(float) * (size_t)R * K);
                for (int xb = 0; xb < 2; xb++) {
                    /* xb = 1: bf16-exact activations (what a bf16 model feeds every linear) */
                    for (int i = 0; i < n * K; i++) x[i] = xb ? dg_round_bf16(frand()) : frand();
                    for (size_t ti = 0; ti < 3; ti++) {
                        fill_weights(wd, types[ti], (size_t)R * K);
                        dg_mat w = dg_mat_init(wd, types[ti], R, K);
                        dg_matmul_ref(ref, x, n, &w);
                        for (int i = 0; i < n * R; i++) y[i] = NAN;
                        dg_matmul_path(&k, (dg_path)p, y, x, n, &w, xb);
                        const double e = matmul_err(y, ref, x, n, &w);
                        if (e > worst[ti]) worst[ti] = e;
                        CHECK(e < 2e-6, "path %s threads %d %s n=%d R=%d K=%d xbf16=%d: error %.3g", dg_path_name((dg_path)p), th,
                              dg_dtype_name(types[ti]), n, R, K, xb, e);
                        runs++;
                    }
                }
                free(x); free(y); free(ref); free(wd);
            }
            if (th == 2)
                printf("  path %-8s max error / sum|x*w|: F32 %.2e  BF16 %.2e  F16 %.2e\n", dg_path_name((dg_path)p), worst[0], worst[1], worst[2]);
        }
        dg_kctx_free(&k);
        dg_pool_free(pool);
    }
    printf("  %d products checked against the oracle\n", runs);
}

/* the LM head's fused softcap: dg_matmul_softcap_path gives exactly dg_matmul_act_path followed by
 * dg_softcap_f32, on every path and output type, quantized weights included (the AMX path applies it
 * as it stores its tiles) */
static void test_matmul_softcap(void) {
    const int shapes[][3] = {{1, 7, 64}, {16, 32, 64}, {17, 33, 96}, {40, 70, 256}, {33, 40, 100}};   /* n, rows, cols */
    const dg_dtype types[] = {DG_BF16, DG_F32, DG_Q8_0};
    const dg_dtype acts[] = {DG_BF16, DG_F32, DG_F16};
    dg_pool *pool = dg_pool_create(2);
    dg_kctx k;
    CHECK(pool && dg_kctx_init(&k, pool, dg_path_best(), 64, 256, 0, 0) == 0, "kctx");
    int runs = 0, bad = 0;
    for (int p = DG_PATH_REF; p < DG_N_PATHS; p++) {
        if (!dg_path_available((dg_path)p)) continue;
        for (size_t si = 0; si < sizeof(shapes) / sizeof(shapes[0]); si++) {
            const int n = shapes[si][0], R = shapes[si][1], K = shapes[si][2];
            float *x = malloc(sizeof(float) * (size_t)n * K), *y = malloc(sizeof(float) * (size_t)n * R),
                  *ref = malloc(sizeof(float) * (size_t)n * R), *wf = malloc(sizeof(float) * (size_t)R * K);
            void *wd = malloc(sizeof(float) * (size_t)R * K);
            for (int i = 0; i < n * K; i++) x[i] = dg_round_bf16(frand());
            for (size_t ti = 0; ti < 3; ti++) {
                if (types[ti] == DG_Q8_0 && K % 32) continue;
                if (types[ti] == DG_Q8_0) {
                    for (int i = 0; i < R * K; i++) wf[i] = frand();
                    for (int r = 0; r < R; r++) dg_quantize_gguf(DG_Q8_0, wf + (size_t)r * K, (uint8_t *)wd + (size_t)r * dg_row_bytes(DG_Q8_0, K), K, NULL);
                } else
                    fill_weights(wd, types[ti], (size_t)R * K);
                dg_mat w = dg_mat_init(wd, types[ti], R, K);
                for (size_t ai = 0; ai < 3; ai++) {
                    /* outputs large enough to reach the tanh's saturated and polynomial ranges */
                    const float cap = 0.75f;
                    dg_matmul_act_path(&k, (dg_path)p, ref, x, n, &w, 1, acts[ai]);
                    for (int t = 0; t < n; t++) dg_softcap_f32(ref + (size_t)t * R, R, cap);
                    for (int i = 0; i < n * R; i++) y[i] = NAN;
                    dg_matmul_softcap_path(&k, (dg_path)p, y, x, n, &w, 1, acts[ai], cap);
                    if (memcmp(y, ref, sizeof(float) * (size_t)n * R)) {
                        bad++;
                        CHECK(0, "path %s %s act %s n=%d R=%d K=%d: fused softcap differs", dg_path_name((dg_path)p), dg_dtype_name(types[ti]),
                              dg_dtype_name(acts[ai]), n, R, K);
                    }
                    runs++;
                }
            }
            free(x); free(y); free(ref); free(wf); free(wd);
        }
    }
    printf("  %d fused products bit-identical to the product then dg_softcap_f32 (%d differ)\n", runs, bad);
    dg_kctx_free(&k);
    dg_pool_free(pool);
}

/* Outputs stored non-temporally (dg_kctx.stream_bytes lowered to 0, so every product streams) against
 * the same products with ordinary stores, bit for bit: whole and partial 16-row tiles, output rows on a
 * 64-byte line and 16 bytes past one (those take the ordinary store), with and without the softcap. */
static void test_matmul_stream(void) {
    if (!dg_path_available(DG_PATH_AMX)) { printf("  skipped: no AMX here\n"); return; }
    const int shapes[][3] = {{16, 32, 64}, {17, 48, 96}, {40, 70, 256}, {256, 64, 64}};   /* n, rows, cols */
    dg_pool *pool = dg_pool_create(2);
    dg_kctx k;
    CHECK(pool && dg_kctx_init(&k, pool, DG_PATH_AMX, 256, 256, 0, 0) == 0, "kctx");
    int runs = 0, bad = 0;
    for (size_t si = 0; si < sizeof(shapes) / sizeof(shapes[0]); si++) {
        const int n = shapes[si][0], R = shapes[si][1], K = shapes[si][2];
        const size_t ny = (size_t)n * R + 16;
        float *x = malloc(sizeof(float) * (size_t)n * K), *ref = aligned_alloc(64, sizeof(float) * ((ny + 15) / 16 * 16)),
              *y = aligned_alloc(64, sizeof(float) * ((ny + 15) / 16 * 16));
        uint16_t *wd = malloc(sizeof(uint16_t) * (size_t)R * K);
        for (int i = 0; i < n * K; i++) x[i] = dg_round_bf16(frand());
        fill_weights(wd, DG_BF16, (size_t)R * K);
        const dg_mat w = dg_mat_init(wd, DG_BF16, R, K);
        for (int off = 0; off <= 4; off += 4)
            for (int ai = 0; ai < 2; ai++)
                for (int c = 0; c < 2; c++) {
                    const dg_dtype act = ai ? DG_F32 : DG_BF16;
                    const float cap = c ? 0.75f : 0.0f;
                    k.stream_bytes = DG_STREAM_BYTES;
                    dg_matmul_softcap_path(&k, DG_PATH_AMX, ref + off, x, n, &w, 1, act, cap);
                    for (size_t i = 0; i < ny; i++) y[i] = NAN;
                    k.stream_bytes = 0;
                    dg_matmul_softcap_path(&k, DG_PATH_AMX, y + off, x, n, &w, 1, act, cap);
                    if (memcmp(y + off, ref + off, sizeof(float) * (size_t)n * R)) {
                        bad++;
                        CHECK(0, "n=%d R=%d K=%d offset %d act %s cap %g: streamed outputs differ", n, R, K, off, dg_dtype_name(act), cap);
                    }
                    runs++;
                }
        free(x); free(ref); free(y); free(wd);
    }
    k.stream_bytes = DG_STREAM_BYTES;
    printf("  %d streamed products bit-identical to the stored ones (%d differ)\n", runs, bad);
    dg_kctx_free(&k);
    dg_pool_free(pool);
}

/* bf16 rows that start anywhere in a cache line (every even byte offset 0-62), K chunked from the line
 * (dg_job.shift = s values): exactly the unshifted product of s zeros followed by each row and by each
 * input, so it is checked bit for bit against that product (rows copied into the panel, K + s values).
 * Whole 32-row tasks (in place, the first and last chunk through the edge panel) and a partial last
 * task (the panel), K of one chunk to many, 1-40 tokens, bf16 and float32 outputs. */
/* rows of K elements (es bytes each) copied into rows of sh + K, the sh first zero */
static void zero_prefix(void *dst, const void *src, int rows, int K, int sh, size_t es) {
    for (int r = 0; r < rows; r++) {
        uint8_t *d = (uint8_t *)dst + (size_t)r * (size_t)(K + sh) * es;
        memset(d, 0, (size_t)sh * es);
        memcpy(d + (size_t)sh * es, (const uint8_t *)src + (size_t)r * (size_t)K * es, (size_t)K * es);
    }
}

static void test_amx_shift(void) {
    if (!dg_path_available(DG_PATH_AMX)) { printf("  skipped: no AMX here\n"); return; }
    const int shapes[][3] = {{1, 32, 32}, {16, 64, 64}, {17, 40, 96}, {40, 96, 256}, {3, 32, 2816}};   /* n, rows, cols */
    dg_pool *pool = dg_pool_create(2);
    dg_kctx k, k0;   /* k0: scratch for exactly the widest shifted product (its K chunk more comes from init) */
    CHECK(pool && dg_kctx_init(&k, pool, DG_PATH_AMX, 64, 2816 + 32, 0, 0) == 0 && dg_kctx_init(&k0, pool, DG_PATH_AMX, 40, 2816, 0, 0) == 0, "kctx");
    int runs = 0, bad = 0, shifted = 0;
    for (size_t si = 0; si < sizeof(shapes) / sizeof(shapes[0]); si++) {
        const int n = shapes[si][0], R = shapes[si][1], K = shapes[si][2];
        float *x = malloc(sizeof(float) * (size_t)n * K), *xz = malloc(sizeof(float) * (size_t)n * (K + 32)),
              *y = malloc(sizeof(float) * (size_t)n * R), *ref = malloc(sizeof(float) * (size_t)n * R);
        uint16_t *w0 = malloc(sizeof(uint16_t) * (size_t)R * K), *wz = malloc(sizeof(uint16_t) * (size_t)R * (K + 32));
        uint8_t *buf = aligned_alloc(64, sizeof(uint16_t) * (size_t)R * K + 128);
        for (int i = 0; i < n * K; i++) x[i] = dg_round_bf16(frand());
        fill_weights(w0, DG_BF16, (size_t)R * K);
        for (int off = 0; off < 64; off += 2) {
            memcpy(buf + off, w0, sizeof(uint16_t) * (size_t)R * K);
            const dg_mat w = dg_mat_init(buf + off, DG_BF16, R, K);
            const int sh = dg_amx_shift(&w), Kz = K + sh;
            CHECK(sh == off / 2, "offset %d: shift %d", off, sh);
            shifted += sh != 0;
            /* the same product with sh zeros in front of every row and every input */
            zero_prefix(wz, w0, R, K, sh, sizeof(uint16_t));
            zero_prefix(xz, x, n, K, sh, sizeof(float));
            const dg_mat wzm = dg_mat_init(wz, DG_BF16, R, Kz);
            for (int ai = 0; ai < 2; ai++) {
                const dg_dtype act = ai ? DG_F32 : DG_BF16;
                k.no_shift = 1;   /* the zero-prefixed rows as they lie */
                dg_matmul_act_path(&k, DG_PATH_AMX, ref, xz, n, &wzm, 1, act);
                k.no_shift = 0;
                for (int i = 0; i < n * R; i++) y[i] = NAN;
                dg_matmul_act_path(&k0, DG_PATH_AMX, y, x, n, &w, 1, act);
                if (memcmp(y, ref, sizeof(float) * (size_t)n * R)) {
                    bad++;
                    CHECK(0, "n=%d R=%d K=%d rows %d bytes past a line, act %s: the shifted chunks differ from the zero-prefixed product", n, R, K, off,
                          dg_dtype_name(act));
                }
                runs++;
            }
        }
        free(x); free(xz); free(y); free(ref); free(w0); free(wz); free(buf);
    }
    /* grouped (the experts of one tensor): three 32-row products over gathered rows, the same rule */
    {
        enum { R = 32, K = 256, E = 3, T = 20 };   /* float32 outputs: no rounding to hide a grouping */
        const int ns[E] = {5, 16, 17};
        float *u = malloc(sizeof(float) * T * K), *uz = malloc(sizeof(float) * T * (K + 32)), *y = malloc(sizeof(float) * 38 * R),
              *ref = malloc(sizeof(float) * 38 * R);
        uint16_t *w0 = malloc(sizeof(uint16_t) * E * R * K), *wz = malloc(sizeof(uint16_t) * E * R * (K + 32));
        uint8_t *buf = aligned_alloc(64, sizeof(uint16_t) * E * R * K + 128);
        int rows[38];
        for (int i = 0; i < T * K; i++) u[i] = dg_round_bf16(frand());
        for (int i = 0; i < 38; i++) rows[i] = (i * 7 + 3) % T;
        fill_weights(w0, DG_BF16, (size_t)E * R * K);
        CHECK(dg_kctx_init_grouped(&k0, E, 38) == 0 && dg_kctx_init_grouped(&k, E, 38) == 0, "grouped kctx");
        for (int off = 0; off < 64; off += 6) {
            memcpy(buf + off, w0, sizeof(uint16_t) * E * R * K);
            const int sh = off / 2, Kz = K + sh;
            zero_prefix(wz, w0, E * R, K, sh, sizeof(uint16_t));
            zero_prefix(uz, u, T, K, sh, sizeof(float));
            dg_gemm g[E], gz[E];
            int o = 0;
            for (int i = 0; i < E; i++) {
                g[i] = (dg_gemm){dg_mat_init(buf + off + (size_t)i * R * K * 2, DG_BF16, R, K), u, rows + o, y + (size_t)o * R, ns[i]};
                gz[i] = (dg_gemm){dg_mat_init(wz + (size_t)i * R * Kz, DG_BF16, R, Kz), uz, rows + o, ref + (size_t)o * R, ns[i]};
                o += ns[i];
            }
            k.no_shift = 1;
            dg_matmul_grouped_path(&k, DG_PATH_AMX, gz, E, 1, DG_F32);
            k.no_shift = 0;
            for (int i = 0; i < o * R; i++) y[i] = NAN;
            dg_matmul_grouped_path(&k0, DG_PATH_AMX, g, E, 1, DG_F32);
            if (memcmp(y, ref, sizeof(float) * (size_t)o * R)) {
                bad++;
                CHECK(0, "grouped, rows %d bytes past a line: the shifted chunks differ from the zero-prefixed products", off);
            }
            runs++;
        }
        free(u); free(uz); free(y); free(ref); free(w0); free(wz); free(buf);
    }
    CHECK(shifted > 0, "no shifted case ran");
    printf("  %d products (%d with rows off a line, 11 of them grouped) bit-identical to the zero-prefixed products (%d differ)\n", runs, shifted * 2 + 10, bad);
    dg_kctx_free(&k);
    dg_kctx_free(&k0);
    dg_pool_free(pool);
}

/* dg_nn_pack_softmax_row (logits straight to packed bf16 probabilities) against the six passes it
 * replaces (copy, dg_softmax_fast, dg_round_act_fast to bf16, dg_nn_pack_row), bit for bit: rows whose
 * spread underflows exp (subnormal and zero probabilities), ties at the maximum, -inf, a row of one
 * value, and lengths with and without a partial last piece */
static void test_softmax_pack(void) {
    const int Vs[] = {1, 15, 16, 31, 32, 33, 700, 1030, 4096, 262144};
    dg_pool *pool = dg_pool_create(1);
    dg_kctx k;
    CHECK(pool && dg_kctx_init(&k, pool, dg_path_best(), 32, 64, 262144, 32) == 0, "kctx");
    uint16_t e[64 * 16];
    for (int i = 0; i < 64 * 16; i++) e[i] = dg_f32_to_bf16(frand());
    int rows = 0, bad = 0;
    for (size_t vi = 0; vi < sizeof(Vs) / sizeof(Vs[0]); vi++) {
        const int V = Vs[vi];
        dg_mat em = dg_mat_init(e, DG_BF16, V, 16);
        if (!dg_matmul_nn_can_prepack(&k, 2, &em, 1)) continue;
        float *x = malloc(sizeof(float) * (size_t)V), *tmp = malloc(sizeof(float) * (size_t)V);
        const int64_t nkc = (V + 31) / 32;
        for (int kind = 0; kind < 5; kind++) {
            for (int i = 0; i < V; i++) {
                const float r = frand();
                x[i] = kind == 0 ? 4.0f * r : kind == 1 ? 120.0f * r : kind == 2 ? (i % 7 ? 30.0f * r : 30.0f) : kind == 3 ? 0.5f : 60.0f * r;
                if (kind == 4 && i % 11 == 3) x[i] = -INFINITY;
            }
            memcpy(tmp, x, sizeof(float) * (size_t)V);
            dg_softmax_fast(tmp, V);
            dg_round_act_fast(tmp, (size_t)V, DG_BF16);
            dg_nn_pack_row(&k, 0, tmp, V);
            dg_nn_pack_softmax_row(&k, 1, x, V, tmp);
            for (int64_t kc = 0; kc < nkc; kc++)
                if (memcmp(k.pbuf + kc * 512, k.pbuf + kc * 512 + 32, 64)) { bad++; break; }
            rows++;
        }
        free(x); free(tmp);
    }
    CHECK(bad == 0, "%d of %d fused softmax rows differ from the separate passes", bad, rows);
    if (rows && !bad) printf("  %d rows (V 1 .. 262,144): logits to packed bf16 probabilities in three passes, identical to the six\n", rows);
    else if (!rows) printf("  skipped: the packed P.E path (AMX) is not available here\n");
    dg_kctx_free(&k);
    dg_pool_free(pool);
}

/* the soft-embedding product P . E on every path against the exact oracle */
static void test_matmul_nn(void) {
    /* H 600: three column blocks of the AMX path, the last 88 wide (no multiple of 16) */
    const int shapes[][3] = {{1, 40, 16}, {3, 700, 48}, {16, 1500, 64}, {9, 2048, 100}, {33, 1030, 32}, {17, 1100, 600}};   /* n, V, H */
    dg_pool *pool = dg_pool_create(2);
    dg_kctx k;
    CHECK(pool && dg_kctx_init(&k, pool, dg_path_best(), 64, 640, 2048, 64) == 0, "kctx");
    for (int p = DG_PATH_REF; p < DG_N_PATHS; p++) {
        if (!dg_path_available((dg_path)p)) continue;
        k.path = (dg_path)p;
        double worst = 0;
        int prepacked = 0;
        for (size_t si = 0; si < sizeof(shapes) / sizeof(shapes[0]); si++) {
            const int n = shapes[si][0], V = shapes[si][1], H = shapes[si][2];
            float *pr = malloc(sizeof(float) * (size_t)n * V), *y = malloc(sizeof(float) * (size_t)n * H), *ref = malloc(sizeof(float) * (size_t)n * H);
            uint16_t *e = malloc(sizeof(uint16_t) * (size_t)V * H);
            for (int i = 0; i < n * V; i++) pr[i] = dg_round_bf16(fabsf(frand()) / V);
            for (int i = 0; i < V * H; i++) e[i] = dg_f32_to_bf16(frand());
            dg_mat em = dg_mat_init(e, DG_BF16, V, H);
            for (int t = 0; t < n; t++)   /* exact sums in double, rounded once */
                for (int h = 0; h < H; h++) {
                    double a = 0, l1 = 0;
                    for (int v = 0; v < V; v++) { a += (double)pr[t * V + v] * dg_bf16_to_f32(e[v * H + h]); l1 += fabs((double)pr[t * V + v] * dg_bf16_to_f32(e[v * H + h])); }
                    ref[t * H + h] = (float)a;
                    y[t * H + h] = (float)l1;   /* stash the error scale */
                }
            float *scale = malloc(sizeof(float) * (size_t)n * H);
            memcpy(scale, y, sizeof(float) * (size_t)n * H);
            for (int i = 0; i < n * H; i++) y[i] = NAN;
            dg_matmul_nn(&k, y, pr, V, n, &em, 1);
            for (int i = 0; i < n * H; i++) {
                const double err = fabs((double)y[i] - ref[i]) / (scale[i] > 0 ? scale[i] : 1);
                if (!(err <= worst)) worst = isnan(err) ? INFINITY : err;
            }
            if (p == DG_PATH_REF) CHECK(memcmp(y, ref, sizeof(float) * (size_t)n * H) == 0, "ref path not exact (n=%d V=%d H=%d)", n, V, H);
            if (dg_matmul_nn_can_prepack(&k, n, &em, 1)) {   /* rows packed one at a time: the same results */
                float *y2 = malloc(sizeof(float) * (size_t)n * H);
                for (int t = 0; t < n; t++) dg_nn_pack_row(&k, t, pr + (size_t)t * V, V);
                dg_matmul_nn_prepacked(&k, y2, n, &em);
                CHECK(memcmp(y, y2, sizeof(float) * (size_t)n * H) == 0, "path %s: prepacked P.E differs (n=%d V=%d H=%d)", dg_path_name((dg_path)p), n, V, H);
                free(y2);
                prepacked++;
            }
            free(pr); free(y); free(ref); free(e); free(scale);
        }
        /* a context sized exactly for an odd row count (the AMX path pads to whole 16-token tiles) */
        dg_kctx k9;
        if (dg_kctx_init(&k9, pool, (dg_path)p, 9, 128, 1500, 9) == 0) {
            const int n = 9, V = 1500, H = 48;
            float *pr = calloc((size_t)n * V, sizeof(float)), *y = calloc((size_t)n * H, sizeof(float));
            uint16_t *e = calloc((size_t)V * H, sizeof(uint16_t));
            for (int i = 0; i < n * V; i++) pr[i] = dg_round_bf16(fabsf(frand()) / V);
            for (int i = 0; i < V * H; i++) e[i] = dg_f32_to_bf16(frand());
            dg_mat em = dg_mat_init(e, DG_BF16, V, H);
            dg_matmul_nn(&k9, y, pr, V, n, &em, 1);
            double d = 0;
            for (int v = 0; v < V; v++) d += (double)pr[8 * V + v] * dg_bf16_to_f32(e[v * H + 47]);
            CHECK(fabs(y[8 * H + 47] - d) < 1e-4, "path %s: 9-row context: %g vs %g", dg_path_name((dg_path)p), y[8 * H + 47], d);
            free(pr); free(y); free(e);
            dg_kctx_free(&k9);
        }
        CHECK(worst < 1e-5, "path %s: P.E error %.3g", dg_path_name((dg_path)p), worst);
        /* a quantized embedding (as in GGUF files): against the oracle on the same blocks; the AMX path
         * rounds the dequantized values to bf16 */
        {
            const int n = 7, V = 600, H = 512;
            const dg_dtype qts[2] = {DG_Q8_0, DG_Q6_K};
            float *pr = malloc(sizeof(float) * (size_t)n * V), *y = malloc(sizeof(float) * (size_t)n * H), *ref = malloc(sizeof(float) * (size_t)n * H),
                  *ef = malloc(sizeof(float) * (size_t)H), *row = malloc(sizeof(float) * (size_t)H);
            uint8_t *eq = malloc((size_t)V * H * 2);
            for (int i = 0; i < n * V; i++) pr[i] = dg_round_bf16(fabsf(frand()) / V);
            for (int qi = 0; qi < 2; qi++) {
                const size_t rb = dg_row_bytes(qts[qi], H);
                for (int v = 0; v < V; v++) {
                    for (int c = 0; c < H; c++) ef[c] = frand();
                    dg_quantize_gguf(qts[qi], ef, eq + (size_t)v * rb, H, NULL);
                }
                dg_mat em = dg_mat_init(eq, qts[qi], V, H);
                double w2 = 0;
                for (int t = 0; t < n; t++)
                    for (int c = 0; c < H; c++) ref[t * H + c] = 0;
                for (int v = 0; v < V; v++) {
                    dg_dequant_range(&em, v, 0, H, row);
                    for (int t = 0; t < n; t++)
                        for (int c = 0; c < H; c++) ref[t * H + c] += pr[t * V + v] * row[c];
                }
                dg_matmul_nn(&k, y, pr, V, n, &em, 1);
                for (int i = 0; i < n * H; i++) w2 = fmax(w2, fabs((double)y[i] - ref[i]));
                if (p == DG_PATH_AMX) {   /* exactly the product with the bf16-rounded dequantized embedding */
                    uint16_t *e16 = malloc(sizeof(uint16_t) * (size_t)V * H);
                    float *y16 = malloc(sizeof(float) * (size_t)n * H);
                    for (int v = 0; v < V; v++) {
                        dg_dequant_range(&em, v, 0, H, row);
                        for (int c = 0; c < H; c++) e16[(size_t)v * H + c] = dg_f32_to_bf16(row[c]);
                    }
                    dg_mat e16m = dg_mat_init(e16, DG_BF16, V, H);
                    dg_matmul_nn(&k, y16, pr, V, n, &e16m, 1);
                    CHECK(memcmp(y, y16, sizeof(float) * (size_t)n * H) == 0, "amx %s embedding: P.E differs from the bf16-rounded one", dg_dtype_name(qts[qi]));
                    free(e16); free(y16);
                }
                /* scale: sum_v p |e| ~ max|e| */
                CHECK(w2 < 2e-2, "path %s %s embedding: P.E error %.3g", dg_path_name((dg_path)p), dg_dtype_name(qts[qi]), w2);
            }
            free(pr); free(y); free(ref); free(ef); free(row); free(eq);
        }
        printf("  P.E path %-8s max error / sum|p*e|: %.2e%s\n", dg_path_name((dg_path)p), worst, prepacked ? " (and row by row prepacked: identical)" : "");
    }
    dg_kctx_free(&k);
    dg_pool_free(pool);
}

/* the sampler's fused row passes against the passes they replace, bit for bit */
static void test_fused_rows(void) {
    const int ns[] = {1, 15, 16, 17, 1003, 40000};
    const dg_dtype acts[] = {DG_BF16, DG_F32, DG_F16};
    int runs = 0;
    for (size_t ni = 0; ni < sizeof(ns) / sizeof(ns[0]); ni++) {
        const int n = ns[ni];
        float *a = malloc(sizeof(float) * (size_t)n), *b = malloc(sizeof(float) * (size_t)n);
        float *wa = malloc(sizeof(float) * (size_t)n), *wb = malloc(sizeof(float) * (size_t)n);
        for (size_t ai = 0; ai < 3; ai++) {
            for (int i = 0; i < n; i++) a[i] = 30.0f * frand();
            if (n > 20) { a[7] = a[n - 3] = 40.0f; a[11] = -INFINITY; }   /* a tie for the max: the first index wins */
            memcpy(b, a, sizeof(float) * (size_t)n);
            const float T = 0.7f;
            int arg_a, arg_b;
            for (int i = 0; i < n; i++) wa[i] = a[i] / T;   /* the scalar loop */
            dg_div_f32(a, (size_t)n, T);
            CHECK(memcmp(a, wa, sizeof(float) * (size_t)n) == 0, "dg_div_f32 n=%d differs from the scalar loop", n);
            const float mx_a = dg_max_f32(a, n, &arg_a);
            const float mx_b = dg_div_max_f32(b, n, T, &arg_b);
            CHECK(mx_a == mx_b && arg_a == arg_b && memcmp(a, b, sizeof(float) * (size_t)n) == 0, "div+max n=%d: %g@%d vs %g@%d", n, mx_a, arg_a,
                  mx_b, arg_b);
            memcpy(wa, a, sizeof(float) * (size_t)n);
            const float sa = dg_expsum_f32(wa, n, mx_a);
            const float da = dg_dotdiff_f32(wa, a, n, mx_a);
            dg_round_act_fast(a, (size_t)n, acts[ai]);
            float db;
            const float sb = dg_expsum_dd_f32(b, wb, n, mx_b, &db, acts[ai]);
            CHECK(memcmp(&sa, &sb, sizeof sa) == 0 && memcmp(&da, &db, sizeof da) == 0, "expsum+dotdiff n=%d %s: %.9g %.9g vs %.9g %.9g", n,
                  dg_dtype_name(acts[ai]), sa, da, sb, db);
            CHECK(memcmp(wa, wb, sizeof(float) * (size_t)n) == 0 && memcmp(a, b, sizeof(float) * (size_t)n) == 0, "exp / rounding n=%d %s", n,
                  dg_dtype_name(acts[ai]));
            runs++;
        }
        free(a); free(b); free(wa); free(wb);
    }
    printf("  %d rows: fused passes bit-identical to the separate ones\n", runs);
}

/* the vectorized rotary embedding against the scalar one, bit for bit */
static void test_rope_fast(void) {
    const int ds[] = {8, 32, 40, 64, 256, 512};
    const dg_dtype acts[] = {DG_BF16, DG_F32, DG_F16};
    int runs = 0;
    for (size_t di = 0; di < sizeof(ds) / sizeof(ds[0]); di++)
        for (size_t ai = 0; ai < 3; ai++) {
            const int d = ds[di], half = d / 2;
            float x[512], y[512], c[256], sn[256];
            for (int i = 0; i < d; i++) x[i] = y[i] = dg_round1(8.0f * frand(), acts[ai]);
            for (int i = 0; i < half; i++) {
                const float th = (float)(37 + di) * powf(10000.0f, -(float)i / half);
                c[i] = dg_round1(cosf(th), acts[ai]);
                sn[i] = dg_round1(sinf(th), acts[ai]);
            }
            if (d >= 32) { x[3] = y[3] = NAN; x[half + 5] = y[half + 5] = INFINITY; }
            dg_rope_ref(x, d, c, sn, acts[ai]);
            dg_rope_fast(y, d, c, sn, acts[ai]);
            CHECK(memcmp(x, y, sizeof(float) * (size_t)d) == 0, "rope d=%d %s differs", d, dg_dtype_name(acts[ai]));
            runs++;
        }
    printf("  %d heads rotated bit-identically to dg_rope_ref\n", runs);
}

/* the fast path's vector helpers against double-precision references */
static void test_vector_ops(void) {
    enum { N = 1003 };
    float x[N], z[N];
    for (int i = 0; i < N; i++) z[i] = x[i] = 20.0f * frand();
    z[517] = x[517] = 25.0f;
    z[800] = x[800] = 25.0f;   /* a tie: the first index wins */
    int arg;
    const float mx = dg_max_f32(x, N, &arg);
    CHECK(mx == 25.0f && arg == 517, "max %g at %d", mx, arg);
    double sum = 0, ulp = 0, num = 0;
    for (int i = 0; i < N; i++) sum += exp((double)(z[i] - mx));
    const float s = dg_expsum_f32(x, N, mx);
    for (int i = 0; i < N; i++) {
        const double want = exp((double)(z[i] - mx));   /* the float32 difference, as softmax has it */
        const double u = fabs(x[i] - want) / (nextafterf((float)want, INFINITY) - (float)want);
        if (want > 1e-37 && u > ulp) ulp = u;
        num += want * (mx - z[i]);
    }
    CHECK(ulp <= 2.0, "exp error %.2f ulp", ulp);
    CHECK(fabs(s - sum) <= 1e-5 * sum, "exp sum %.9g vs %.9g", s, sum);
    const float dd = dg_dotdiff_f32(x, z, N, mx);
    CHECK(fabs(dd - num) <= 1e-5 * num, "entropy numerator %.9g vs %.9g", dd, num);
    float a[37], b[37], y[37];
    double d = 0;
    for (int i = 0; i < 37; i++) { a[i] = frand(); b[i] = frand(); y[i] = 1.0f; d += (double)a[i] * b[i]; }
    CHECK(fabs(dg_dot_f32(a, b, 37) - d) < 1e-5, "dot");
    dg_axpy_f32(y, 2.0f, a, 37);
    int bad = 0;
    for (int i = 0; i < 37; i++) bad += fabsf(y[i] - (1.0f + 2.0f * a[i])) > 1e-6f;
    CHECK(bad == 0, "axpy");
    printf("  exp within %.2f ulp of exp(); sums within 1e-5\n", ulp);
    /* the softcap against cap * tanh in double, over the whole range that matters */
    enum { M = 4001 };
    static float sx[M];
    double worst = 0;
    for (int i = 0; i < M; i++) sx[i] = (float)(i - M / 2) * 0.05f;
    sx[M / 2 + 1] = 1e-6f;
    dg_softcap_f32(sx, M, 30.0f);
    for (int i = 0; i < M; i++) {
        const float xin = i == M / 2 + 1 ? 1e-6f : (float)(i - M / 2) * 0.05f;
        const double want = 30.0 * tanh((double)(xin / 30.0f));
        const double err = fabs(sx[i] - want) / fmax(fabs(want), 1e-30);
        if (err > worst) worst = err;
    }
    CHECK(worst < 1e-6, "softcap relative error %.3g", worst);
    /* -inf and anything below expf's underflow give 0; NaN stays NaN (an upstream NaN must not turn into
     * a plausible logit) */
    float sp[18] = {-INFINITY, -200.0f, -104.5f, NAN, 0.0f};
    for (int i = 5; i < 18; i++) sp[i] = -1.0f;
    dg_expsum_f32(sp, 18, 0.0f);
    CHECK(sp[0] == 0.0f && sp[1] == 0.0f && sp[2] == 0.0f && isnan(sp[3]) && sp[4] == 1.0f, "exp of -inf, -200, -104.5, NaN, 0: %g %g %g %g %g", sp[0], sp[1], sp[2], sp[3], sp[4]);
    float sc[3] = {NAN, INFINITY, -INFINITY};
    dg_softcap_f32(sc, 3, 30.0f);
    CHECK(isnan(sc[0]) && sc[1] == 30.0f && sc[2] == -30.0f, "softcap of NaN, inf, -inf: %g %g %g", sc[0], sc[1], sc[2]);
    printf("  softcap within %.2e relative of 30 tanh(x/30)\n", worst);
    /* the gated activation against the oracle's (double tanh, rounded once) before the activation
     * rounding: within a few float32 ulp, so at most two bf16 / f16 steps apart after the two roundings */
    {
        enum { G = 2000 };
        static float gg[G], uu[G], ga[G];
        const dg_dtype acts[] = {DG_F32, DG_BF16, DG_F16};
        for (int ai = 0; ai < 3; ai++) {
            for (int i = 0; i < G; i++) { gg[i] = 12.0f * frand(); uu[i] = frand(); }
            gg[0] = 0.0f; gg[1] = -30.0f; gg[2] = 30.0f; gg[3] = 1e-8f;
            dg_gelu_mul_f32(gg, uu, ga, G, acts[ai]);
            int nbad = 0;
            for (int i = 0; i < G; i++) {
                const float want = dg_round1(dg_round1(dg_gelu_tanh(gg[i]), acts[ai]) * uu[i], acts[ai]);
                const double step = acts[ai] == DG_BF16 ? 1.0 / 128 : acts[ai] == DG_F16 ? 1.0 / 1024 : 1e-6;
                /* a one-step difference of the rounded gelu carries through the product, and the
                 * product's own rounding can add one more step (seen: f16, g = -2.664) */
                /* below f16's normal range (6.1e-5) a step is 2^-24 absolute: a one-step difference of
                 * the rounded gelu there is 2^-24 * |u|, and the product's rounding adds 2^-24 (seen: g =
                 * -4.43, gelu -2.1e-5, u = 0.052) */
                const double sub = acts[ai] == DG_F16 ? 5.9604645e-8 * (fabs(uu[i]) + 1.0) : 0.0;
                const int off = fabs(ga[i] - want) > 2 * step * fabs(want) + 1e-30 + 1e-6 * fabs(uu[i]) + sub;
                if (off) printf("  gelu %s: g=%.9g u=%.9g got %.9g want %.9g\n", dg_dtype_name(acts[ai]), gg[i], uu[i], ga[i], want);
                nbad += off;
            }
            CHECK(nbad == 0, "gelu * up (%s): %d of %d outside two rounding steps", dg_dtype_name(acts[ai]), nbad, G);
        }
    }
}

/* vcvtneps2bf16's rounding: NaN made quiet, denormal inputs as zero, otherwise nearest even */
static uint16_t cvtne_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u | 0x00400000u) >> 16);
    if ((u & 0x7f800000u) == 0) return (uint16_t)((u & 0x80000000u) >> 16);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

/* the fast dequantizers equal the scalar reference bit for bit, and every matmul path on quantized
 * weights equals the oracle within float32 noise (bf16 rounding of the weights on the AMX path) */
static void test_quant_paths(void) {
    const dg_dtype qt[] = {DG_Q8_0, DG_Q5_0, DG_Q4_0, DG_Q4_K, DG_Q5_K, DG_Q6_K, DG_Q2_K, DG_Q3_K, DG_IQ4_NL};
    const int n = 19, R = 37, K = 512;
    float *w = malloc(sizeof(float) * R * K), *x = malloc(sizeof(float) * n * K), *y = malloc(sizeof(float) * n * R),
          *ref = malloc(sizeof(float) * n * R), *a = malloc(sizeof(float) * K), *b = malloc(sizeof(float) * K);
    uint8_t *q = malloc((size_t)R * K * 2);
    dg_pool *pool = dg_pool_create(2);
    dg_kctx k;
    CHECK(pool && dg_kctx_init(&k, pool, dg_path_best(), n, K, 0, 0) == 0, "kctx");
#if defined(__x86_64__)
    const int vnni = dg_cpu_has_vnni();
#else
    const int vnni = 0;
#endif
    int vnni_types = 0;
    for (size_t ti = 0; ti < sizeof(qt) / sizeof(qt[0]); ti++) {
        for (int i = 0; i < R * K; i++) w[i] = frand() * (i % 97 == 0 ? 8.0f : 1.0f);
        const size_t rb = dg_row_bytes(qt[ti], K);
        for (int r = 0; r < R; r++) dg_quantize_gguf(qt[ti], w + (size_t)r * K, q + (size_t)r * rb, K, NULL);
        dg_mat m = dg_mat_init(q, qt[ti], R, K);
        int bad = 0;
        for (int r = 0; r < R; r++) {
            dg_dequant_range(&m, r, 0, K, a);
            dg_dequant_fast(&m, r, 0, K, b);
            bad += memcmp(a, b, sizeof(float) * K) != 0;
        }
        CHECK(bad == 0, "%s: fast dequantization differs from the reference on %d rows", dg_dtype_name(qt[ti]), bad);
#if defined(__x86_64__)
        /* straight into AMX tile rows: the reference's values rounded as vcvtneps2bf16 rounds */
        if (dg_cpu_has_avx512bf16()) {
            uint16_t *tl = malloc(sizeof(uint16_t) * (size_t)(K / 32) * 1024);
            int tbad = 0, has = 1;
            for (int r = 0; r < R && has; r++) {
                has = dg_dequant_gguf_bf16tiles_avx512(qt[ti], q + (size_t)r * rb, tl, K);
                dg_dequant_range(&m, r, 0, K, a);
                for (int e = 0; has && e < K; e++) tbad += tl[(e / 32) * 1024 + e % 32] != cvtne_bf16(a[e]);
            }
            CHECK(tbad == 0, "%s: tile-row dequantization differs from the reference rounded to bf16 (%d values)", dg_dtype_name(qt[ti]), tbad);
            free(tl);
        }
        /* the VNNI dot products are the scalar integer dot products, bit for bit */
        if (vnni) {
            const dg_act_type at = dg_gguf_act_type(qt[ti]);
            const size_t astride = (size_t)(K / dg_act_block_elems(at)) * dg_act_block_bytes(at);
            uint8_t *aq = malloc(astride * n);
            float yv[19], ys[19];
            for (int i = 0; i < n * K; i++) x[i] = frand();
            for (int t = 0; t < n; t++) dg_quantize_act(at, x + (size_t)t * K, aq + (size_t)t * astride, K);
            int vbad = 0, has = 1;
            for (int r = 0; r < R && has; r++) {
                has = dg_vnni_row(qt[ti], q + (size_t)r * rb, K, aq, astride, n, yv, 1);
                for (int t = 0; has && t < n; t++) {
                    ys[t] = dg_vec_dot_gguf(qt[ti], K, q + (size_t)r * rb, aq + (size_t)t * astride);
                    vbad += memcmp(&ys[t], &yv[t], sizeof(float)) != 0;
                }
            }
            if (has) vnni_types++;
            CHECK(vbad == 0, "%s: VNNI dot products differ from the scalar ones at %d of %d", dg_dtype_name(qt[ti]), vbad, R * n);
            free(aq);
        }
#endif
        for (int xb = 0; xb < 2; xb++) {
            for (int i = 0; i < n * K; i++) x[i] = xb ? dg_round_bf16(frand()) : frand();
            dg_matmul_ref(ref, x, n, &m);
            for (int p = DG_PATH_GENERIC; p < DG_N_PATHS; p++) {
                if (!dg_path_available((dg_path)p)) continue;
                dg_matmul_path(&k, (dg_path)p, y, x, n, &m, xb);
                const double e = matmul_err(y, ref, x, n, &m);
                /* AMX rounds the dequantized weights to bf16 (relative 2^-9); the int8 path (VNNI, on
                 * AVX-512 and for few rows on AMX) quantizes the activations to int8 blocks
                 * (relative 1/254 of each block's largest value) */
                const int int8 = vnni && (qt[ti] == DG_Q4_K || qt[ti] == DG_Q5_K) &&
                                 p == DG_PATH_AVX512;
                const double tol = int8 ? 3e-3 : p == DG_PATH_AMX && xb ? 4e-3 : 2e-6;
                if (getenv("DG_VERBOSE")) printf("    %s %s xbf16 %d: %.3g\n", dg_dtype_name(qt[ti]), dg_path_name((dg_path)p), xb, e);
                CHECK(e < tol, "%s path %s xbf16 %d: error %.3g", dg_dtype_name(qt[ti]), dg_path_name((dg_path)p), xb, e);
            }
        }
    }
    printf("  fast dequantization bit-exact; VNNI integer dots bit-exact with the scalar ones (%d types%s); quantized matmuls within bounds on every path\n",
           vnni_types, vnni ? "" : ", no VNNI here: skipped");
    dg_kctx_free(&k);
    dg_pool_free(pool);
    free(w); free(x); free(y); free(ref); free(a); free(b); free(q);
}

/* dg_matmul_grouped (a layer's experts in one call, rows gathered by index) is dg_matmul on each
 * product, bit for bit, on every path; for bf16 and quantized weights, 1-3 threads */
static void test_matmul_grouped(void) {
    enum { G = 7, R = 45, K = 96, T = 23 };
    const int ns[G] = {1, 16, 17, 0, 5, 33, 2};   /* rows per product (one empty) */
    const dg_dtype types[] = {DG_BF16, DG_Q8_0, DG_F32};
    float *u = malloc(sizeof(float) * T * K), *y = malloc(sizeof(float) * 80 * R), *ref = malloc(sizeof(float) * 80 * R),
          *tmp = malloc(sizeof(float) * K * 40), *wf = malloc(sizeof(float) * R * K);
    uint8_t *wd = malloc((size_t)G * R * K * sizeof(float));
    int *rows = malloc(sizeof(int) * 80), runs = 0;
    for (int i = 0; i < T * K; i++) u[i] = dg_round_bf16(frand());
    for (int i = 0; i < 80; i++) rows[i] = (i * 7 + 3) % T;
    for (int th = 1; th <= 3; th++) {
        dg_pool *pool = dg_pool_create(th);
        dg_kctx k;
        CHECK(pool && dg_kctx_init(&k, pool, dg_path_best(), 40, K, 0, 0) == 0 && dg_kctx_init_grouped(&k, G, 80) == 0, "kctx");
        for (size_t ti = 0; ti < sizeof(types) / sizeof(types[0]); ti++) {
            const size_t rb = dg_row_bytes(types[ti], K);
            for (int gi = 0; gi < G * R; gi++) {
                for (int c = 0; c < K; c++) wf[c] = frand();
                if (types[ti] == DG_Q8_0) dg_quantize_gguf(DG_Q8_0, wf, wd + (size_t)gi * rb, K, NULL);
                else if (types[ti] == DG_BF16) for (int c = 0; c < K; c++) ((uint16_t *)(wd + (size_t)gi * rb))[c] = dg_f32_to_bf16(wf[c]);
                else memcpy(wd + (size_t)gi * rb, wf, rb);
            }
            for (int p = DG_PATH_REF; p < DG_N_PATHS; p++) {
                if (!dg_path_available((dg_path)p)) continue;
                for (int xa = 0; xa < 3; xa++) {
                    /* outputs rounded to f32 (none), or, with bf16-exact inputs, to f16 (a pass after
                     * the product) or bf16 (the AMX store rounds) */
                    const int xb = xa > 0;
                    const dg_dtype act = xa == 0 ? DG_F32 : xa == 1 ? DG_F16 : DG_BF16;
                    dg_gemm g[G];
                    int off = 0, ng = 0;
                    for (int i = 0; i < G; i++) {
                        if (!ns[i]) continue;
                        g[ng++] = (dg_gemm){dg_mat_init(wd + (size_t)i * R * rb, types[ti], R, K), u, rows + off, y + (size_t)off * R, ns[i]};
                        off += ns[i];
                    }
                    for (int i = 0; i < off * R; i++) y[i] = NAN;
                    dg_matmul_grouped_path(&k, (dg_path)p, g, ng, xb, act);
                    int bad = 0;
                    for (int i = 0; i < ng; i++) {
                        const int o = (int)(g[i].xrows - rows);
                        for (int r = 0; r < g[i].n; r++) memcpy(tmp + (size_t)r * K, u + (size_t)g[i].xrows[r] * K, sizeof(float) * K);
                        dg_matmul_path(&k, (dg_path)p, ref + (size_t)o * R, tmp, g[i].n, &g[i].w, xb);
                        dg_round_act(ref + (size_t)o * R, (size_t)g[i].n * R, act);
                    }
                    for (int i = 0; i < off * R; i++) bad += memcmp(&y[i], &ref[i], sizeof(float)) != 0;
                    CHECK(bad == 0, "grouped %s path %s threads %d xbf16 %d act %s: %d of %d outputs differ from one dg_matmul per product",
                          dg_dtype_name(types[ti]), dg_path_name((dg_path)p), th, xb, dg_dtype_name(act), bad, off * R);
                    runs++;
                }
            }
        }
        dg_kctx_free(&k);
        dg_pool_free(pool);
    }
    printf("  %d grouped calls bit-identical to one product at a time\n", runs);
    free(u); free(y); free(ref); free(tmp); free(wf); free(wd); free(rows);
}

/* The AMX path with many tokens (two token blocks per pass of the 2 x 2 tile blocking) gives the same
 * bits as 16 tokens at a time (one token block) */
static void test_amx_blockings(void) {
#if defined(__x86_64__)
    if (!dg_path_available(DG_PATH_AMX)) { printf("  no AMX on this CPU: skipped\n"); return; }
    const int shapes[][3] = {{40, 70, 704}, {256, 130, 96}, {33, 64, 2816 / 4}, {17, 1, 32}};
    const dg_dtype types[] = {DG_BF16, DG_Q8_0};
    dg_pool *pool = dg_pool_create(2);
    dg_kctx k;
    CHECK(pool && dg_kctx_init(&k, pool, DG_PATH_AMX, 256, 2816, 0, 0) == 0, "kctx");
    int calls = 0;
    for (size_t si = 0; si < sizeof(shapes) / sizeof(shapes[0]); si++)
        for (size_t ti = 0; ti < 2; ti++) {
            const int n = shapes[si][0], R = shapes[si][1], K = shapes[si][2];
            float *x = malloc(sizeof(float) * (size_t)n * K), *y = malloc(sizeof(float) * (size_t)n * R),
                  *y16 = malloc(sizeof(float) * (size_t)n * R), *wf = malloc(sizeof(float) * (size_t)K);
            const size_t rb = dg_row_bytes(types[ti], K);
            uint8_t *wd = malloc(rb * (size_t)R);
            for (int i = 0; i < n * K; i++) x[i] = dg_round_bf16(frand());
            for (int r = 0; r < R; r++) {
                for (int c = 0; c < K; c++) wf[c] = frand();
                if (types[ti] == DG_BF16) for (int c = 0; c < K; c++) ((uint16_t *)(wd + (size_t)r * rb))[c] = dg_f32_to_bf16(wf[c]);
                else dg_quantize_gguf(types[ti], wf, wd + (size_t)r * rb, K, NULL);
            }
            const dg_mat w = dg_mat_init(wd, types[ti], R, K);
            dg_matmul_path(&k, DG_PATH_AMX, y, x, n, &w, 1);
            for (int t0 = 0; t0 < n; t0 += 16)
                dg_matmul_path(&k, DG_PATH_AMX, y16 + (size_t)t0 * R, x + (size_t)t0 * K, n - t0 < 16 ? n - t0 : 16, &w, 1);
            int bad = 0;
            for (int i = 0; i < n * R; i++) bad += memcmp(&y[i], &y16[i], sizeof(float)) != 0;
            CHECK(bad == 0, "AMX %s n=%d R=%d K=%d: %d of %d outputs differ from 16 tokens at a time", dg_dtype_name(types[ti]), n, R, K, bad, n * R);
            calls++;
            free(x); free(y); free(y16); free(wf); free(wd);
        }
    printf("  %d products of many tokens bit-identical to 16 tokens at a time\n", calls);
    dg_kctx_free(&k);
    dg_pool_free(pool);
#endif
}

/* the fast path's RMSNorm (threaded, the double sum of squares vectorized) against the oracle's
 * dg_rmsnorm_ref + dg_round_act, bit for bit */
static void test_rmsnorm_fast(void) {
    const int dims[] = {12, 33, 256, 2816};
    const dg_dtype wts[] = {DG_F32, DG_BF16, DG_F16};
    const dg_dtype acts[] = {DG_F32, DG_BF16, DG_F16};
    int rows_checked = 0, bad = 0;
    for (int th = 1; th <= 3; th += 2) {
        dg_pool *pool = dg_pool_create(th);
        for (size_t di = 0; di < 4; di++) {
            const int dim = dims[di], n = 37;
            float *x = malloc(sizeof(float) * (size_t)n * dim), *y = malloc(sizeof(float) * (size_t)n * dim),
                  *ref = malloc(sizeof(float) * (size_t)n * dim);
            void *wd = malloc(sizeof(float) * (size_t)dim);
            for (int i = 0; i < n * dim; i++) x[i] = frand() * (i % 7 == 0 ? 30.0f : 1.0f);
            for (int wi = -1; wi < 3; wi++) {
                dg_vec w = {wd, wi < 0 ? DG_F32 : wts[wi], dim};
                if (wi >= 0) fill_weights(wd, wts[wi], (size_t)dim);
                for (int ai = 0; ai < 3; ai++) {
                    dg_rmsnorm_ref(ref, x, n, dim, wi < 0 ? NULL : &w, 1e-6f);
                    dg_round_act(ref, (size_t)n * dim, acts[ai]);
                    dg_rmsnorm_fast(pool, y, x, n, dim, wi < 0 ? NULL : &w, 1e-6f, acts[ai]);
                    for (int i = 0; i < n * dim; i++) bad += memcmp(&y[i], &ref[i], sizeof(float)) != 0;
                    rows_checked += n;
                }
            }
            free(x); free(y); free(ref); free(wd);
        }
        dg_pool_free(pool);
    }
    CHECK(bad == 0, "rmsnorm fast: %d values differ from the oracle", bad);
    printf("  %d rows (dims 12..2816, f32/bf16/f16 weights or none, 3 activation types) bit-identical to the oracle\n", rows_checked);
}

/* one attention row over 1-3 key segments against a double-precision evaluation of the same rule */
static void test_attend(void) {
    const int dims[] = {12, 16, 24, 100, 256, 512};   /* head dims */
    const dg_dtype acts[] = {DG_F32, DG_BF16, DG_F16};
    double worst = 0;
    for (size_t di = 0; di < sizeof(dims) / sizeof(dims[0]); di++)
        for (int ns = 1; ns <= 3; ns++)
            for (size_t ai = 0; ai < 3; ai++) {
                const int d = dims[di], stride = 3 * d + 5, n[3] = {7, 13, 5};
                float *kv = malloc(sizeof(float) * (size_t)stride * 64), *q = malloc(sizeof(float) * (size_t)d);
                float sc[64], acc[512], out[512];
                for (int i = 0; i < stride * 64; i++) kv[i] = frand();
                for (int i = 0; i < d; i++) q[i] = 2.0f * frand();
                dg_kseg seg[3];
                int total = 0;
                for (int g = 0; g < ns; g++) {
                    seg[g] = (dg_kseg){kv + (int64_t)(20 * g) * stride, kv + (int64_t)(20 * g) * stride + d + 3, stride, n[g]};
                    total += n[g];
                }
                dg_attend_f32(q, d, seg, ns, sc, acc, out, acts[ai]);
                /* reference: float32 scores and exp as the definition, double sums */
                double s_[64], mx = -INFINITY, sum = 0;
                int j = 0;
                for (int g = 0; g < ns; g++)
                    for (int i = 0; i < n[g]; i++, j++) {
                        double dot = 0;
                        for (int c = 0; c < d; c++) dot += (double)q[c] * seg[g].k[(int64_t)i * stride + c];
                        s_[j] = dot;
                        mx = fmax(mx, dot);
                    }
                for (j = 0; j < total; j++) { s_[j] = exp(s_[j] - mx); sum += s_[j]; }
                for (int c = 0; c < d; c++) {
                    double o = 0, scale = 0;
                    j = 0;
                    for (int g = 0; g < ns; g++)
                        for (int i = 0; i < n[g]; i++, j++) {
                            o += dg_round1((float)s_[j], acts[ai]) * (double)seg[g].v[(int64_t)i * stride + c];
                            scale += fabs(seg[g].v[(int64_t)i * stride + c]);
                        }
                    const double err = fabs(out[c] - o / sum) / (scale / total + 1e-9);
                    if (err > worst) worst = err;
                }
                free(kv); free(q);
            }
    CHECK(worst < 2e-3, "attention row error %.3g", worst);   /* bf16 / f16 rounding of a weight may flip */
    printf("  attention rows (d 12..512, 1-3 segments, f32/bf16/f16 weights): max error %.2e of the mean |v|\n", worst);
}

/* a block of queries x heads against the same keys: bit-identical to the rows one by one (row counts
 * that are not multiples of 4, up to DG_ATT_ROWS; segments longer than a P.V key block, with tails) */
static void test_attend_block(void) {
    const int dims[] = {12, 100, 256, 512}, shapes[][2] = {{1, 1}, {3, 1}, {1, 2}, {5, 2}, {16, 2}, {4, 8}, {3, 8}, {2, 5}, {1, 32}};
    const dg_dtype acts[] = {DG_F32, DG_BF16, DG_F16};
    int bad = 0, cases = 0, csr_bad = 0;
    for (size_t di = 0; di < sizeof(dims) / sizeof(dims[0]); di++)
        for (size_t si = 0; si < sizeof(shapes) / sizeof(shapes[0]); si++)
            for (int ns = 1; ns <= 3; ns++) {
                const int d = dims[di], nq = shapes[si][0], nh = shapes[si][1], stride = d + 7, n[3] = {150, 67, 3};
                const int ldsc = 224, rows = nq * nh;
                const dg_dtype act = acts[(di + si + (size_t)ns) % 3];
                const int64_t qs = (int64_t)nh * d + 5;
                float *kv = malloc(sizeof(float) * (size_t)stride * 460), *q = malloc(sizeof(float) * (size_t)qs * nq);
                float *out = calloc((size_t)qs * nq, sizeof(float)), *one = malloc(sizeof(float) * (size_t)d);
                float *sc = malloc(sizeof(float) * (size_t)ldsc * rows), *acc = malloc(sizeof(float) * (size_t)d * rows), sc1[224];
                for (int i = 0; i < stride * 460; i++) kv[i] = frand();
                for (int i = 0; i < qs * nq; i++) q[i] = 2.0f * frand();
                dg_kseg seg[3];
                for (int g = 0; g < ns; g++) seg[g] = (dg_kseg){kv + (int64_t)(150 * g) * stride, kv + (int64_t)(150 * g + 1) * stride + 3, stride, n[g]};
#if defined(__x86_64__)
                const unsigned csr0 = _mm_getcsr();
#endif
                dg_attend_block_f32(q, qs, nq, nh, d, seg, ns, sc, ldsc, acc, out, qs, act);
#if defined(__x86_64__)
                csr_bad += _mm_getcsr() != csr0;   /* the kernels flush denormals and restore the caller's mode */
#endif
                for (int i = 0; i < nq; i++)
                    for (int h = 0; h < nh; h++) {
                        dg_attend_f32(q + i * qs + (int64_t)h * d, d, seg, ns, sc1, acc, one, act);
                        bad += memcmp(one, out + i * qs + (int64_t)h * d, sizeof(float) * (size_t)d) != 0;
                        cases++;
                    }
                free(kv); free(q); free(out); free(one); free(sc); free(acc);
            }
    {   /* no keys at all: the same (0 / 0) as the single row */
        float q0[16], o1[16], o2[16], s0[1], a0[16];
        for (int i = 0; i < 16; i++) q0[i] = frand();
        dg_attend_f32(q0, 16, NULL, 0, s0, a0, o1, DG_F32);
        dg_attend_block_f32(q0, 0, 1, 1, 16, NULL, 0, s0, 1, a0, o2, 0, DG_F32);
        bad += memcmp(o1, o2, sizeof(o1)) != 0;
        cases++;
    }
    CHECK(!bad, "%d of %d block rows differ from the single-row kernel", bad, cases);
    CHECK(!csr_bad, "the floating-point mode (MXCSR) was not restored after %d calls", csr_bad);
    printf("  attention blocks (queries x heads up to %d rows, d 12..512, 1-3 segments up to 150 keys): %d rows bit-identical to single rows\n", DG_ATT_ROWS, cases - bad);
}

/* the AMX attention block (bf16 inputs) against the FMA block kernel on the same bf16-exact inputs: the
 * same rule, only the float32 summation order of q.k and p.v differs */
static void test_attend_amx(void) {
    if (!dg_path_available(DG_PATH_AMX)) { printf("  no AMX on this CPU: skipped\n"); return; }
    const int dims[] = {32, 64, 256, 512}, shapes[][2] = {{16, 2}, {4, 8}, {3, 8}, {1, 32}, {2, 5}, {1, 1}, {9, 2}};
    const int nks[][3] = {{150, 67, 3}, {16, 16, 1}, {0, 31, 0}, {1, 0, 0}, {300, 250, 33}};
    double worst = 0.0;
    int cases = 0, csr_bad = 0, nonfinite = 0, packed = 0, packed_bad = 0;
    for (size_t di = 0; di < 4; di++)
        for (size_t si = 0; si < sizeof(shapes) / sizeof(shapes[0]); si++)
            for (size_t ki = 0; ki < sizeof(nks) / sizeof(nks[0]); ki++) {
                const int d = dims[di], nq = shapes[si][0], nh = shapes[si][1], stride = d + 32, rows = nq * nh;
                const int ns = 3, ldsc = 600;
                const int64_t qs = (int64_t)nh * d + 32;
                float *kv = malloc(sizeof(float) * (size_t)stride * 1300), *q = malloc(sizeof(float) * (size_t)qs * nq);
                float *o1 = calloc((size_t)qs * nq, sizeof(float)), *o2 = calloc((size_t)qs * nq, sizeof(float));
                float *sc = malloc(sizeof(float) * (size_t)ldsc * 32), *acc = malloc(sizeof(float) * (size_t)d * 32);
                void *scr = malloc(dg_attend_amx_scratch(d));
                for (int i = 0; i < stride * 1300; i++) kv[i] = dg_round_bf16(frand());
                for (int i = 0; i < qs * nq; i++) q[i] = dg_round_bf16(0.25f * frand());
                dg_kseg seg[3];
                for (int g = 0, o = 0; g < ns; g++) {
                    seg[g] = (dg_kseg){kv + (int64_t)o * stride, kv + (int64_t)(o + 1) * stride + 16, stride, nks[ki][g]};
                    o += nks[ki][g] + 2;
                }
                dg_attend_block_f32(q, qs, nq, nh, d, seg, ns, sc, ldsc, acc, o1, qs, DG_BF16);
#if defined(__x86_64__)
                const unsigned csr0 = _mm_getcsr();
#endif
                CHECK(dg_attend_block_amx_f32(q, qs, nq, nh, d, seg, ns, sc, ldsc, acc, o2, qs, NULL, scr), "AMX attention ran");
#if defined(__x86_64__)
                csr_bad += _mm_getcsr() != csr0;
#endif
                for (int two = 0; two < 2; two++) {   /* the keys and values packed once, in two calls (as threads split them) */
                    const int nk = nks[ki][0] + nks[ki][1] + nks[ki][2], nch = (nk + 31) / 32;
                    void *pk = malloc(dg_attend_amx_pack_bytes(nk, d, two) + 1);
                    float *o3 = calloc((size_t)qs * nq, sizeof(float));
                    CHECK(dg_attend_amx_pack_f32(seg, ns, d, pk, nch / 2, nch, two) && dg_attend_amx_pack_f32(seg, ns, d, pk, 0, nch / 2, two), "packed");
                    CHECK(dg_attend_block_amx_packed_f32(q, qs, nq, nh, d, sc, ldsc, acc, o3, qs, NULL, scr, pk, nk, two, 0, nk), "packed AMX attention ran");
                    packed_bad += memcmp(o2, o3, sizeof(float) * (size_t)qs * nq) != 0;
                    packed++;
                    free(pk); free(o3);
                }
                double mean = 0.0, err = 0.0;
                for (int i = 0; i < nq; i++)
                    for (int c = 0; c < nh * d; c++) {
                        const float a = o1[i * qs + c], b = o2[i * qs + c];
                        if (!isfinite(a) || !isfinite(b)) { nonfinite += isfinite(a) != isfinite(b); continue; }
                        mean += fabs(a);
                        err = fmax(err, fabs((double)a - b));
                    }
                mean /= (double)nq * nh * d;
                if (mean > 0 && err / mean > worst) worst = err / mean;
                cases += rows;
                free(kv); free(q); free(o1); free(o2); free(sc); free(acc); free(scr);
            }
    /* causal blocks: each row sees its own part of the keys (a cache range, then a range of new rows),
     * against one row at a time on exactly its keys */
    double worst_c = 0.0;
    for (size_t di = 0; di < 4; di++) {
        const int d = dims[di], stride = d + 32, nq = 8, nh = 4, nc = 40, nn = 30;
        const int64_t qs = (int64_t)nh * d;
        float *kv = malloc(sizeof(float) * (size_t)stride * 80), *q = malloc(sizeof(float) * (size_t)qs * nq);
        float *o1 = calloc((size_t)qs * nq, sizeof(float)), *o2 = calloc((size_t)qs * nq, sizeof(float));
        float *sc = malloc(sizeof(float) * 96 * 32), *acc = malloc(sizeof(float) * (size_t)d * 32);
        void *scr = malloc(dg_attend_amx_scratch(d));
        for (int i = 0; i < stride * 80; i++) kv[i] = dg_round_bf16(frand());
        for (int i = 0; i < qs * nq; i++) q[i] = dg_round_bf16(0.25f * frand());
        const float *kc = kv, *kn = kv + (int64_t)(nc + 1) * stride;   /* cache rows, new rows */
        dg_kseg seg[2] = {{kc, kc + 16, stride, nc}, {kn, kn + 16, stride, nn}};
        int valid[4 * 32];
        double mean = 0.0, err = 0.0;
        for (int i = 0; i < nq; i++)
            for (int hh = 0; hh < nh; hh++) {
                int *v = valid + 4 * (i * nh + hh);
                v[0] = 3 * i; v[1] = nc; v[2] = nc + i; v[3] = nc + 20 + i;   /* cache [3i, 40), new [i, 20 + i) */
            }
        CHECK(dg_attend_block_amx_f32(q, qs, nq, nh, d, seg, 2, sc, 96, acc, o2, qs, valid, scr), "AMX attention ran");
        {   /* the same block on a run of a longer packed list (the values packed from key 16 too): 0, 16,
             * 32 or 48 other keys before it, 7 after it: the same bits */
            float *lead = malloc(sizeof(float) * (size_t)stride * 48), *o3 = calloc((size_t)qs * nq, sizeof(float));
            for (int i = 0; i < stride * 48; i++) lead[i] = dg_round_bf16(frand());
            /* an infinite value in the first key after the block: it shares the block's last tiles, and
             * its weight 0 must not make a NaN (0 x inf) */
            ((float *)kn)[(int64_t)nn * stride + 16 + 5] = INFINITY;
            for (int nl = 0; nl < 64; nl += 16) {
                const dg_kseg all[3] = {{lead, lead + 16, stride, nl}, {kc, kc + 16, stride, nc}, {kn, kn + 16, stride, nn + 7}};
                const int nk_all = nl + nc + nn + 7;
                void *pk = malloc(dg_attend_amx_pack_bytes(nk_all, d, 1));
                CHECK(dg_attend_amx_pack_f32(all, 3, d, pk, 0, (nk_all + 31) / 32, 1), "packed");
                CHECK(dg_attend_block_amx_packed_f32(q, qs, nq, nh, d, sc, 96, acc, o3, qs, valid, scr, pk, nk_all, 1, nl, nc + nn), "ran");
                packed_bad += memcmp(o2, o3, sizeof(float) * (size_t)qs * nq) != 0;
                packed++;
                free(pk);
            }
            free(lead); free(o3);
        }
        for (int i = 0; i < nq; i++) {
            dg_kseg si[2] = {{kc + (int64_t)(3 * i) * stride, kc + (int64_t)(3 * i) * stride + 16, stride, nc - 3 * i},
                             {kn + (int64_t)i * stride, kn + (int64_t)i * stride + 16, stride, 20}};
            dg_attend_block_f32(q + i * qs, qs, 1, nh, d, si, 2, sc, 96, acc, o1 + i * qs, qs, DG_BF16);
        }
        for (int i = 0; i < nq * nh * d; i++) { mean += fabs(o1[i]); err = fmax(err, fabs((double)o1[i] - o2[i])); }
        mean /= (double)nq * nh * d;
        if (err / mean > worst_c) worst_c = err / mean;
        free(kv); free(q); free(o1); free(o2); free(sc); free(acc); free(scr);
    }
    CHECK(worst_c < 2e-2, "AMX causal attention: max |difference| %.3g of the mean |out| from one row at a time", worst_c);
    printf("  causal blocks (8 queries x 4 heads, own cache and new-row ranges): within %.2e of one row at a time\n", worst_c);
    CHECK(worst < 2e-2, "AMX attention: max |difference| %.3g of the mean |out| from the FMA kernel", worst);
    CHECK(!nonfinite, "AMX attention: %d outputs finite in one kernel and not the other", nonfinite);
    CHECK(!csr_bad, "the floating-point mode (MXCSR) was not restored after %d calls", csr_bad);
    printf("  %d rows (d 32..512, 1-32 rows, 0-583 keys in 3 segments): within %.2e of the mean |out| of the FMA kernel\n", cases, worst);
    CHECK(!packed_bad, "%d of %d blocks on prepacked keys and values differ from the kernel packing its own", packed_bad, packed);
    printf("  %d blocks on keys and values packed once (split in two chunk ranges; causal blocks 0-48 keys into a longer list): "
           "bit-identical to the kernel packing its own\n", packed);
}

/* a product wider or taller than the context was sized for falls back to the oracle (no overflow) */
static void test_matmul_oversize(void) {
    dg_pool *pool = dg_pool_create(2);
    dg_kctx k;
    if (!pool || dg_kctx_init(&k, pool, dg_path_best(), 4, 64, 0, 0)) { CHECK(0, "kctx"); dg_pool_free(pool); return; }
    enum { N = 9, R = 20, K = 1024 };
    float *x = malloc(sizeof(float) * N * K), *y = malloc(sizeof(float) * N * R), *ref = malloc(sizeof(float) * N * R);
    uint16_t *w = malloc(sizeof(uint16_t) * R * K);
    for (int i = 0; i < N * K; i++) x[i] = dg_round_bf16(frand());
    for (int i = 0; i < R * K; i++) w[i] = dg_f32_to_bf16(frand());
    dg_mat m = dg_mat_init(w, DG_BF16, R, K);
    dg_matmul_ref(ref, x, N, &m);
    dg_matmul(&k, y, x, N, &m, 1);
    CHECK(!memcmp(y, ref, sizeof(float) * N * R), "oversize product differs from the oracle");
    free(x); free(y); free(ref); free(w);
    dg_kctx_free(&k);
    dg_pool_free(pool);
}

/* the experts' weighted sum: dg_wsum_f32 against the scalar loop, bit for bit (signed zeros,
 * tails, 1-13 rows) */
static void test_wsum(void) {
    const int ns[] = {1, 15, 16, 17, 100, 2816}, ks[] = {1, 2, 8, 13};
    int bad = 0, cases = 0;
    for (size_t a = 0; a < sizeof(ns) / sizeof(ns[0]); a++)
        for (size_t b = 0; b < sizeof(ks) / sizeof(ks[0]); b++) {
            const int n = ns[a], K = ks[b];
            float *buf = malloc(sizeof(float) * (size_t)n * K), *o = malloc(sizeof(float) * (size_t)n), *r = malloc(sizeof(float) * (size_t)n);
            const float *y[13];
            float w[13];
            for (int i = 0; i < n * K; i++) buf[i] = i % 7 == 3 ? -0.0f : frand() * (i % 5 == 0 ? 1e-30f : 3.0f);
            for (int k = 0; k < K; k++) { y[k] = buf + (size_t)k * n; w[k] = k == 1 ? -0.0f : frand(); }
            for (int i = 0; i < n; i++) r[i] = 0.0f;
            for (int k = 0; k < K; k++)
                for (int i = 0; i < n; i++) r[i] += y[k][i] * w[k];
            dg_wsum_f32(o, y, w, K, n);
            bad += memcmp(o, r, sizeof(float) * (size_t)n) != 0;
            cases++;
            free(buf); free(o); free(r);
        }
    CHECK(bad == 0, "dg_wsum_f32 differs from the scalar loop in %d of %d cases", bad, cases);
    printf("  %d cases bit-identical to the scalar loop\n", cases);
}

typedef struct {
    int *hits;
    int *tids;
} pool_ctx;

static void pool_task(void *ctx, int i, int tid) {
    pool_ctx *c = ctx;
    __atomic_add_fetch(&c->hits[i], 1, __ATOMIC_RELAXED);
    c->tids[i] = tid;
}

static void test_pool(void) {
    for (int th = 1; th <= 4; th++) {
        dg_pool *p = dg_pool_create(th);
        CHECK(p && dg_pool_size(p) == th, "pool size %d", th);
        /* tasks are handed out in shrinking chunks: counts around the chunk divisor and large ones */
        enum { NMAX = 11264 };
        static int hits[NMAX], tids[NMAX];
        const int ns[] = {1, 2, 7, 8, 9, 15, 16, 17, 33, 1000, NMAX};
        for (int rep = 0; rep < 50; rep++) {
            const int N = ns[rep % (int)(sizeof(ns) / sizeof(ns[0]))];
            memset(hits, 0, sizeof(hits));
            pool_ctx c = {hits, tids};
            dg_pool_run(p, N, pool_task, &c);
            int bad = 0;
            for (int i = 0; i < NMAX; i++) bad += i < N ? hits[i] != 1 || tids[i] < 0 || tids[i] >= th : hits[i] != 0;
            CHECK(bad == 0, "threads %d rep %d (%d tasks): %d tasks not run exactly once", th, rep, N, bad);
        }
        dg_pool_run(p, 0, pool_task, NULL);
        dg_pool_free(p);
    }
    dg_pool_free(NULL);
    printf("  best path here: %s, %d CPUs\n", dg_path_name(dg_path_best()), dg_cpu_count());
}

/* the pooled rounding against dg_round_act, bit for bit: random bit patterns (NaN, inf, subnormals,
 * ties) and ordinary values, bf16 and f16, sizes below and above one chunk */
static void test_round_pool(void) {
    dg_pool *p = dg_pool_create(3);
    const size_t sizes[] = {1, 17, 65536, 200003};
    for (int a = 0; a < 2; a++) {
        const dg_dtype act = a ? DG_F16 : DG_BF16;
        for (int si = 0; si < 4; si++) {
            const size_t n = sizes[si];
            float *x = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float)), *v = malloc(n * sizeof(float));
            for (size_t i = 0; i < n; i++) {
                uint32_t u = (uint32_t)(g_rng >> 32);
                frand();
                if (i % 3 == 1) u = (u & 0xffff0000u) | 0x8000u;   /* a tie */
                if (i % 3 == 2) { const float f = frand() * 100.0f; memcpy(&u, &f, 4); }
                memcpy(&x[i], &u, 4);
            }
            memcpy(y, x, n * sizeof(float));
            memcpy(v, x, n * sizeof(float));
            dg_round_act(x, n, act);
            dg_round_act_pool(p, y, n, act);
            dg_round_act_fast(v, n, act);
            size_t bad = 0, vbad = 0;
            for (size_t i = 0; i < n; i++) bad += memcmp(&x[i], &y[i], 4) != 0;
            for (size_t i = 0; i < n; i++) vbad += memcmp(&x[i], &v[i], 4) != 0;
            CHECK(bad == 0, "%s n=%zu: %zu elements differ from dg_round_act", a ? "f16" : "bf16", n, bad);
            CHECK(vbad == 0, "%s n=%zu: %zu elements of dg_round_act_fast differ", a ? "f16" : "bf16", n, vbad);
            free(x);
            free(y);
            free(v);
        }
    }
    float z[2] = {1.1f, -3.3f};
    dg_round_act_pool(p, z, 2, DG_F32);
    CHECK(z[0] == 1.1f && z[1] == -3.3f, "float32 rounding is the identity");
    dg_pool_free(p);
}

const dg_test kernel_tests[] = {
    {"kernels/round-pool", test_round_pool},
    {"kernels/pool", test_pool},
    {"kernels/matmul-paths", test_matmul_paths},
    {"kernels/matmul-softcap", test_matmul_softcap},
    {"kernels/matmul-stream", test_matmul_stream},
    {"kernels/amx-shift", test_amx_shift},
    {"kernels/fused-rows", test_fused_rows},
    {"kernels/wsum", test_wsum},
    {"kernels/rope-fast", test_rope_fast},
    {"kernels/matmul-nn", test_matmul_nn},
    {"kernels/softmax-pack", test_softmax_pack},
    {"kernels/matmul-grouped", test_matmul_grouped},
    {"kernels/rmsnorm-fast", test_rmsnorm_fast},
    {"kernels/amx-token-blocks", test_amx_blockings},
    {"kernels/quant-paths", test_quant_paths},
    {"kernels/matmul-oversize", test_matmul_oversize},
    {"kernels/attend", test_attend},
    {"kernels/attend-block", test_attend_block},
    {"kernels/attend-amx", test_attend_amx},
    {"kernels/vector-ops", test_vector_ops},
    {NULL, NULL},
};
