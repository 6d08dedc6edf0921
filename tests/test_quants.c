/*
 * test_quants.c - the GGUF block kernels against ggml and PyPI gguf
 * (tests/fixtures/quants/quants.safetensors, made by tools/reference/make_quant_fixtures.py):
 * dequantization and quantization bit-exact for every type, activation quantizers bit-exact, the
 * integer dot products against dequantize + float dot, and the round-trip error on Gaussian data.
 */
#include <math.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "kernels/quants.h"
#include "test.h"

static const dg_dtype k_types[] = {DG_Q4_0, DG_Q4_1, DG_Q5_0, DG_Q5_1, DG_Q8_0, DG_IQ4_NL,
                                   DG_Q2_K, DG_Q3_K, DG_Q4_K, DG_Q5_K, DG_Q6_K};
#define N_TYPES (int)(sizeof(k_types) / sizeof(k_types[0]))

/* the input categories of make_quant_fixtures.py, in order (for messages) */
static const char *k_cats[] = {"gauss", "gauss", "gauss", "tiny", "underflow", "huge", "zero", "constant",
                               "neg-constant", "outlier", "single-spike", "negative-only", "positive-only",
                               "denormal", "uniform", "subblock-ramp", "half-zero", "ints"};
static const char *cat_name(int64_t i) { return i < (int64_t)(sizeof(k_cats) / sizeof(k_cats[0])) ? k_cats[i] : "gauss-mix"; }

static int open_fixture(st_store *st) {
    char path[512], err[512];
    snprintf(path, sizeof(path), "%s/quants/quants.safetensors", fixtures_dir());
    memset(st, 0, sizeof(*st));
    if (st_add_file(st, path, err, sizeof(err)) || st_finish(st, err, sizeof(err))) {
        CHECK(0, "%s", err);
        return -1;
    }
    return 0;
}

static const st_tensor *get(const st_store *st, const char *type, const char *what, st_dtype dt) {
    char name[64];
    snprintf(name, sizeof(name), "%s.%s", type, what);
    const st_tensor *t = st_find(st, name);
    CHECK(t && t->dtype == dt && t->ndim == 2, "fixture tensor %s missing or of the wrong type", name);
    return t && t->dtype == dt && t->ndim == 2 ? t : NULL;
}

/* float arrays from the (possibly unaligned) mapping */
static float *floats(const st_tensor *t) {
    float *f = malloc(t->nbytes);
    memcpy(f, t->data, t->nbytes);
    return f;
}

static int same_float(float a, float b) {
    uint32_t x, y;
    memcpy(&x, &a, 4);
    memcpy(&y, &b, 4);
    return x == y || (isnan(a) && isnan(b));
}

/* ===== dequantization ===== */

static int dequant_exact(dg_dtype dt, const st_tensor *q, const st_tensor *y, const char *what) {
    const int64_t nb = q->shape[0], blk = dg_gguf_block_elems(dt);
    CHECK(q->shape[1] == (int64_t)dg_gguf_block_bytes(dt) && y->shape[0] == nb && y->shape[1] == blk,
          "%s %s: fixture shapes", dg_dtype_name(dt), what);
    if (q->shape[1] != (int64_t)dg_gguf_block_bytes(dt) || y->shape[0] != nb || y->shape[1] != blk) return 1;
    float *ref = floats(y), *out = malloc(sizeof(float) * (size_t)(nb * blk));
    dg_dequant_gguf(dt, q->data, out, nb * blk);
    int bad = 0;
    for (int64_t i = 0; i < nb * blk; i++)
        if (!same_float(out[i], ref[i])) {
            if (bad++ < 3) fprintf(stderr, "  %s %s block %lld elem %lld: %.9g, reference %.9g\n", dg_dtype_name(dt), what,
                                   (long long)(i / blk), (long long)(i % blk), out[i], ref[i]);
        }
    free(ref);
    free(out);
    return bad;
}

static void t_dequant(void) {
    st_store st;
    if (open_fixture(&st)) return;
    for (int k = 0; k < N_TYPES; k++) {
        const dg_dtype dt = k_types[k];
        const char *n = dg_dtype_name(dt);
        const st_tensor *q = get(&st, n, "q", ST_U8), *y = get(&st, n, "y", ST_F32);
        const st_tensor *r = get(&st, n, "raw", ST_U8), *ry = get(&st, n, "raw_y", ST_F32);
        if (!q || !y || !r || !ry) continue;
        const int b1 = dequant_exact(dt, q, y, "quantized"), b2 = dequant_exact(dt, r, ry, "random");
        printf("  %-7s dequant: %lld quantized + %lld random blocks, %d values differ from gguf-py / ggml\n", n,
               (long long)q->shape[0], (long long)r->shape[0], b1 + b2);
        CHECK(b1 == 0 && b2 == 0, "%s: dequantization not bit-exact", n);
    }
    /* dg_dequant_range on a GGUF matrix: row stride and a column offset inside the row */
    const st_tensor *q = get(&st, "Q4_K", "q", ST_U8), *y = get(&st, "Q4_K", "y", ST_F32);
    if (q && y) {
        const dg_mat m = dg_mat_init(q->data, DG_Q4_K, q->shape[0] / 4, 4 * 256);   /* 4 blocks a row */
        float out[512], *ref = floats(y);
        dg_dequant_range(&m, 2, 256, 512, out);
        int bad = 0;
        for (int i = 0; i < 512; i++) bad += !same_float(out[i], ref[(2 * 4 + 1) * 256 + i]);
        CHECK(m.row_bytes == 4 * 144 && bad == 0, "dg_dequant_range on Q4_K: %d values differ", bad);
        free(ref);
    }
    st_close(&st);
}

/* ===== quantization ===== */

static void t_quantize(void) {
    st_store st;
    if (open_fixture(&st)) return;
    for (int k = 0; k < N_TYPES; k++) {
        const dg_dtype dt = k_types[k];
        const char *n = dg_dtype_name(dt);
        const st_tensor *x = get(&st, n, "x", ST_F32), *q = get(&st, n, "q", ST_U8);
        if (!x || !q) continue;
        const int64_t nb = x->shape[0], blk = x->shape[1], bb = q->shape[1];
        float *xf = floats(x);
        uint8_t *out = malloc((size_t)(nb * bb));
        const size_t wrote = dg_quantize_gguf(dt, xf, out, nb * blk, NULL);
        int bad = 0;
        for (int64_t i = 0; i < nb; i++)
            if (memcmp(out + i * bb, q->data + i * bb, (size_t)bb)) {
                if (bad++ < 4) fprintf(stderr, "  %s: block %lld (%s) differs from the reference quantizer\n", n, (long long)i, cat_name(i));
            }
        printf("  %-7s quantize: %lld blocks, %d differ from %s\n", n, (long long)nb, bad,
               dt == DG_Q4_0 || dt == DG_Q4_1 || dt == DG_Q5_0 || dt == DG_Q5_1 || dt == DG_Q8_0 ? "gguf-py and ggml" : "ggml");
        CHECK(wrote == (size_t)(nb * bb) && bad == 0, "%s: quantization not bit-exact", n);
        free(xf);
        free(out);
    }
    /* bad arguments */
    float x[64] = {0};
    uint8_t b[256];
    CHECK(dg_quantize_gguf(DG_Q4_K, x, b, 64, NULL) == 0, "n not a multiple of 256 must fail");
    CHECK(dg_quantize_gguf(DG_Q8_0, x, b, 33, NULL) == 0, "n not a multiple of 32 must fail");
    CHECK(dg_quantize_gguf(DG_Q8_0, x, b, 32, x) == 0, "importance weights are refused");
    CHECK(dg_quantize_gguf(DG_BF16, x, b, 32, NULL) == 0, "not a block type");
    st_close(&st);
}

static void t_act_quantize(void) {
    st_store st;
    if (open_fixture(&st)) return;
    const st_tensor *x = get(&st, "act", "x", ST_F32);
    static const char *names[3] = {"q8_0", "q8_1", "q8_K"};
    for (int a = 0; a < 3 && x; a++) {
        const st_tensor *ref = get(&st, "act", names[a], ST_U8);
        if (!ref) continue;
        const int64_t rows = x->shape[0], n = x->shape[1];
        const size_t rb = (size_t)(n / dg_act_block_elems((dg_act_type)a)) * dg_act_block_bytes((dg_act_type)a);
        CHECK(ref->shape[1] == (int64_t)rb, "%s row bytes", names[a]);
        if (ref->shape[1] != (int64_t)rb) continue;
        float *xf = floats(x);
        uint8_t *out = calloc(1, rb * (size_t)rows);
        int bad = 0;
        for (int64_t r = 0; r < rows; r++) {
            dg_quantize_act((dg_act_type)a, xf + r * n, out + r * rb, n);
            if (memcmp(out + r * rb, ref->data + r * rb, rb)) {
                if (bad++ < 3) fprintf(stderr, "  %s: row %lld (%s) differs from ggml\n", names[a], (long long)r, cat_name(r));
            }
        }
        printf("  act %s: %lld rows of %lld, %d differ from ggml's quantize_row_%s_ref\n", names[a], (long long)rows,
               (long long)n, bad, names[a]);
        CHECK(bad == 0, "%s activation quantizer not bit-exact", names[a]);
        free(xf);
        free(out);
    }
    st_close(&st);
}

/* ===== round trip and dot products on Gaussian data ===== */

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static double urand(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return ((g_rng >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}
static float gauss(void) { return (float)(sqrt(-2 * log(urand())) * cos(6.283185307179586 * urand())); }

/* The round-trip RMSE bound of each type, relative to the RMS of unit Gaussian data: measured on this
 * data (printed) with ~30% margin; the lower-bit formats lose more. */
static double rmse_bound(dg_dtype dt) {
    switch (dt) {
    case DG_Q8_0: return 0.007;
    case DG_Q6_K: return 0.023;
    case DG_Q5_K: case DG_Q5_1: case DG_Q5_0: return 0.055;
    case DG_Q4_K: case DG_Q4_1: case DG_Q4_0: case DG_IQ4_NL: return 0.11;
    case DG_Q3_K: return 0.2;
    default: return 0.39;   /* Q2_K */
    }
}

static void act_dequant(dg_act_type at, const void *a, float *out, int64_t n) {
    if (at == DG_ACT_Q8_K) {
        const dg_block_q8_K *b = a;
        for (int64_t i = 0; i < n; i++) out[i] = b[i / 256].d * b[i / 256].qs[i % 256];
    } else if (at == DG_ACT_Q8_1) {
        const dg_block_q8_1 *b = a;
        for (int64_t i = 0; i < n; i++) out[i] = dg_f16_to_f32(b[i / 32].d) * b[i / 32].qs[i % 32];
    } else {
        const dg_block_q8_0 *b = a;
        for (int64_t i = 0; i < n; i++) out[i] = dg_f16_to_f32(b[i / 32].d) * b[i / 32].qs[i % 32];
    }
}

static void t_roundtrip_and_dot(void) {
    enum { N = 4096, ROWS = 8 };
    float *x = malloc(sizeof(float) * N * ROWS), *y = malloc(sizeof(float) * N * ROWS);
    float *act = malloc(sizeof(float) * N), *actq = malloc(sizeof(float) * N);
    uint8_t *q = malloc(N * ROWS * 2), *aq = malloc(sizeof(dg_block_q8_K) * (N / 256) + N * 2);
    for (int i = 0; i < N * ROWS; i++) x[i] = gauss();
    for (int i = 0; i < N; i++) act[i] = gauss();
    for (int k = 0; k < N_TYPES; k++) {
        const dg_dtype dt = k_types[k];
        const size_t rb = (size_t)(N / dg_gguf_block_elems(dt)) * dg_gguf_block_bytes(dt);
        dg_quantize_gguf(dt, x, q, (int64_t)N * ROWS, NULL);
        dg_dequant_gguf(dt, q, y, (int64_t)N * ROWS);
        double se = 0, sx = 0, maxe = 0;
        for (int i = 0; i < N * ROWS; i++) {
            const double e = fabs((double)y[i] - x[i]);
            se += e * e;
            sx += (double)x[i] * x[i];
            maxe = fmax(maxe, e);
        }
        const double rmse = sqrt(se / (N * ROWS)) / sqrt(sx / (N * ROWS));
        /* dot products: integer kernel vs double dot of the dequantized operands */
        const dg_act_type at = dg_gguf_act_type(dt);
        dg_quantize_act(at, act, aq, N);
        act_dequant(at, aq, actq, N);
        double worst = 0, worst_act = 0;
        for (int r = 0; r < ROWS; r++) {
            const float got = dg_vec_dot_gguf(dt, N, q + r * rb, aq);
            double ref = 0, mag = 0, exact = 0;
            for (int i = 0; i < N; i++) {
                ref += (double)y[r * N + i] * actq[i];
                mag += fabs((double)y[r * N + i] * actq[i]);
                exact += (double)y[r * N + i] * act[i];
            }
            worst = fmax(worst, fabs(got - ref) / mag);
            worst_act = fmax(worst_act, fabs(got - exact) / mag);
        }
        printf("  %-7s gaussian round trip: max abs err %.4f, rmse/rms %.5f; vec_dot (%s act) vs dequant dot: "
               "rel err %.2e (vs float act %.2e)\n", dg_dtype_name(dt), maxe, rmse,
               at == DG_ACT_Q8_K ? "Q8_K" : at == DG_ACT_Q8_1 ? "Q8_1" : "Q8_0", worst, worst_act);
        CHECK(rmse < rmse_bound(dt), "%s: round-trip rmse/rms %.5f above %.3f", dg_dtype_name(dt), rmse, rmse_bound(dt));
        /* float accumulation over 4096 products in the kernel, relative to sum |w a|; Q4_1 / Q5_1 also
         * carry the fp16 rounding of the Q8_1 block sum s = d * sum(q) in their min term (as ggml) */
        CHECK(worst < (at == DG_ACT_Q8_1 ? 1e-4 : 2e-6), "%s: vec_dot differs from the dequantized dot by %.2e of sum|w a|", dg_dtype_name(dt), worst);
        CHECK(worst_act < 2e-2, "%s: vec_dot vs unquantized activations %.2e", dg_dtype_name(dt), worst_act);
    }
    free(x); free(y); free(act); free(actq); free(q); free(aq);
}

/* the fast K-quant fits against the reference: the fixture blocks (ggml's bytes) and 3,000 random
 * blocks per type (Gaussian over 60 octaves, uniform, small integers, constant and zero sub-blocks,
 * denormals, a NaN or an infinity now and then) must give identical bytes; prints both speeds */
static void t_quantize_fast(void) {
    st_store st;
    if (open_fixture(&st)) return;
    const dg_dtype kt[] = {DG_Q4_K, DG_Q5_K, DG_Q6_K, DG_Q8_0, DG_Q5_0};
    const int NB = 3000;
    float *x = malloc(sizeof(float) * 256 * NB);
    uint8_t *a = malloc(300 * NB), *b = malloc(300 * NB);   /* 272 bytes per 256 values at most (Q8_0) */
    uint64_t r = 0x9e3779b97f4a7c15ull;
#define RND() (r ^= r << 13, r ^= r >> 7, r ^= r << 17, r)
    for (int blk = 0; blk < NB; blk++) {
        float *v = x + 256 * blk;
        const int kind = blk % 8;
        const float scale = ldexpf(1.0f, (int)(RND() % 120) - 60);
        for (int i = 0; i < 256; i++) {
            const double u = (RND() >> 11) * (1.0 / 9007199254740992.0), u2 = (RND() >> 11) * (1.0 / 9007199254740992.0);
            const float g = (float)(sqrt(-2 * log(u + 1e-300)) * cos(6.283185307179586 * u2));
            v[i] = kind == 0 ? g * scale : kind == 1 ? (float)(u - 0.5) * scale : kind == 2 ? (float)(int)(g * 4)
                 : kind == 3 ? (i / 16 % 3 == 0 ? 0.5f * scale : g * scale) : kind == 4 ? (i / 32 % 2 ? 0.f : g)
                 : kind == 5 ? g * 1e-41f : kind == 6 ? fabsf(g) * scale : -fabsf(g) * scale;
        }
        if (blk % 97 == 13) v[RND() % 256] = NAN;
        if (blk % 89 == 7) v[RND() % 256] = INFINITY;
        if (blk % 83 == 5) memset(v, 0, 256 * sizeof(float));
    }
#undef RND
    for (size_t k = 0; k < sizeof(kt) / sizeof(kt[0]); k++) {
        const dg_dtype dt = kt[k];
        const char *n = dg_dtype_name(dt);
        const st_tensor *fx = get(&st, n, "x", ST_F32), *fq = get(&st, n, "q", ST_U8);
        if (fx && fq) {
            float *xf = floats(fx);
            uint8_t *out = malloc(fq->nbytes);
            dg_quantize_gguf_fast(dt, xf, out, fx->shape[0] * fx->shape[1], NULL);
            CHECK(!memcmp(out, fq->data, fq->nbytes), "%s: fast quantizer differs from ggml on the fixture blocks", n);
            free(xf);
            free(out);
        }
        const int64_t nv = 256 * (int64_t)NB;
        double t0 = (double)clock();
        const size_t na = dg_quantize_gguf(dt, x, a, nv, NULL);
        double t1 = (double)clock();
        const size_t nf = dg_quantize_gguf_fast(dt, x, b, nv, NULL);
        double t2 = (double)clock();
        const size_t bb = dg_gguf_block_bytes(dt);
        const int64_t nblk = nv / dg_gguf_block_elems(dt);
        int bad = 0;
        for (int64_t i = 0; i < nblk; i++) bad += memcmp(a + i * bb, b + i * bb, bb) != 0;
        printf("  %-5s fast vs reference: %lld blocks, %d differ; %.1f -> %.1f M values/s\n", n, (long long)nblk, bad,
               nv / ((t1 - t0) / CLOCKS_PER_SEC) / 1e6, nv / ((t2 - t1) / CLOCKS_PER_SEC) / 1e6);
        CHECK(na == nf && bad == 0, "%s: fast quantizer not bit-exact (%d blocks)", n, bad);
    }
    free(x);
    free(a);
    free(b);
    st_close(&st);
}

const dg_test quant_tests[] = {
    {"quants/dequant_exact", t_dequant},
    {"quants/quantize_exact", t_quantize},
    {"quants/quantize_fast", t_quantize_fast},
    {"quants/act_quantize_exact", t_act_quantize},
    {"quants/roundtrip_vec_dot", t_roundtrip_and_dot},
    {NULL, NULL},
};
