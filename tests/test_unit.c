/*
 * test_unit.c - the scalar kernels and number formats against values worked out independently.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "test.h"

static uint32_t bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float from_bits(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

static void t_bf16(void) {
    CHECK(dg_f32_to_bf16(1.0f) == 0x3f80, "1.0");
    CHECK(dg_f32_to_bf16(from_bits(0x3f808000)) == 0x3f80, "tie rounds to even (down)");
    CHECK(dg_f32_to_bf16(from_bits(0x3f818000)) == 0x3f82, "tie rounds to even (up)");
    CHECK(dg_f32_to_bf16(from_bits(0x3f808001)) == 0x3f81, "above half rounds up");
    CHECK(dg_f32_to_bf16(from_bits(0x7f7fffff)) == 0x7f80, "max float rounds to inf");
    CHECK(dg_f32_to_bf16(INFINITY) == 0x7f80 && dg_f32_to_bf16(-INFINITY) == 0xff80, "inf");
    CHECK(isnan(dg_bf16_to_f32(dg_f32_to_bf16(NAN))), "NaN stays NaN");
    CHECK(dg_round_bf16(53.0659942f) == 53.0f, "sqrt(2816) rounds to 53.0 in bf16");
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = dg_bf16_to_f32((uint16_t)h);
        if (!isnan(f) && dg_f32_to_bf16(f) != h) bad++;
    }
    CHECK(bad == 0, "%d bf16 values do not round-trip", bad);
}

static void t_f16(void) {
    CHECK(dg_f32_to_f16(1.0f) == 0x3c00, "1.0");
    CHECK(dg_f32_to_f16(65504.0f) == 0x7bff, "max half");
    CHECK(dg_f32_to_f16(65519.0f) == 0x7bff, "65519 rounds down to 65504");
    CHECK(dg_f32_to_f16(65520.0f) == 0x7c00, "65520 rounds to inf");
    CHECK(dg_f32_to_f16(ldexpf(1.0f, -24)) == 0x0001, "smallest subnormal");
    CHECK(dg_f32_to_f16(ldexpf(1.0f, -25)) == 0x0000, "half the smallest subnormal ties to zero");
    CHECK(dg_f32_to_f16(ldexpf(3.0f, -26)) == 0x0001, "0.75 of the smallest subnormal rounds up");
    CHECK(dg_f32_to_f16(ldexpf(3.0f, -25)) == 0x0002, "1.5 subnormal ulps ties to even (2)");
    CHECK(dg_f32_to_f16(-2.0f) == 0xc000, "-2");
    CHECK(dg_f16_to_f32(0x0001) == ldexpf(1.0f, -24), "subnormal decode");
    CHECK(dg_f16_to_f32(0x7c00) == INFINITY, "inf decode");
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = dg_f16_to_f32((uint16_t)h);
        if (!isnan(f) && dg_f32_to_f16(f) != h) bad++;
    }
    CHECK(bad == 0, "%d half values do not round-trip", bad);
    /* rounding of every float between two halves: compare against the double midpoint rule */
    int wrong = 0;
    for (uint32_t h = 0x0001; h < 0x7bff; h += 7) {
        double lo = dg_f16_to_f32((uint16_t)h), hi = dg_f16_to_f32((uint16_t)(h + 1)), mid = (lo + hi) / 2;
        float below = nextafterf((float)mid, 0.0f), above = nextafterf((float)mid, INFINITY);
        if ((double)(float)mid == mid) {
            uint16_t even = (h & 1) ? (uint16_t)(h + 1) : (uint16_t)h;
            if (dg_f32_to_f16((float)mid) != even) wrong++;
        }
        if (dg_f32_to_f16(below) != h || dg_f32_to_f16(above) != h + 1) wrong++;
    }
    CHECK(wrong == 0, "%d half rounding boundaries wrong", wrong);
    (void)bits;
}

static void t_gelu_softmax(void) {
    for (double x = -6; x <= 6; x += 0.37) {
        double ref = 0.5 * x * (1 + tanh(sqrt(2 / 3.14159265358979323846) * (x + 0.044715 * x * x * x)));
        CHECK(fabs(dg_gelu_tanh((float)x) - ref) <= 1e-6 * (1 + fabs(ref)), "gelu(%g) = %g, want %g", x, dg_gelu_tanh((float)x), ref);
    }
    CHECK(fabsf(dg_gelu_tanh(1.0f) - 0.841192f) < 1e-6f, "gelu(1)");
    float v[5] = {1, 2, 3, -INFINITY, 3};
    dg_softmax_ref(v, 5);
    double sum = 0;
    for (int i = 0; i < 5; i++) sum += v[i];
    CHECK(fabs(sum - 1) < 1e-6 && v[3] == 0.0f && v[2] == v[4] && v[2] > v[1], "softmax");
    double e1 = exp(-2.0), e2 = exp(-1.0), z = e1 + e2 + 2;
    CHECK(fabs(v[0] - e1 / z) < 1e-7, "softmax value");
}

static void t_rmsnorm(void) {
    float x[4] = {3, 4, 3, 4}, y[4];
    uint16_t wb[2] = {dg_f32_to_bf16(2.0f), dg_f32_to_bf16(0.5f)};
    dg_vec w = {wb, DG_BF16, 2};
    dg_rmsnorm_ref(y, x, 2, 2, &w, 0.0f);
    float r = 1.0f / sqrtf(12.5f);
    CHECK(y[0] == 3 * r * 2 && y[1] == 4 * r * 0.5f && y[2] == y[0], "rmsnorm x*w (not x*(1+w)): %g %g", y[0], y[1]);
    dg_rmsnorm_ref(y, x, 1, 2, NULL, 1e-6f);
    CHECK(fabsf(y[0] - 3 / sqrtf(12.5f + 1e-6f)) < 1e-7f, "weightless, eps added to the mean");
    float z[3] = {0, 0, 0};
    dg_rmsnorm_ref(z, z, 1, 3, NULL, 1e-6f);
    CHECK(z[0] == 0 && z[1] == 0 && z[2] == 0, "rmsnorm(0) = 0 (self-conditioning's first step)");
}

static void t_matmul_dtypes(void) {
    /* values exactly representable in every dtype give identical results */
    enum { N = 3, K = 5, R = 4 };
    float x[N * K], wf[R * K], y1[N * R], y2[N * R], y3[N * R];
    uint16_t wb[R * K], wh[R * K];
    for (int i = 0; i < N * K; i++) x[i] = (float)((i * 7) % 11) - 5;
    for (int i = 0; i < R * K; i++) {
        wf[i] = ((float)((i * 5) % 9) - 4) * 0.25f;
        wb[i] = dg_f32_to_bf16(wf[i]);
        wh[i] = dg_f32_to_f16(wf[i]);
    }
    dg_mat mf = dg_mat_init(wf, DG_F32, R, K), mb = dg_mat_init(wb, DG_BF16, R, K), mh = dg_mat_init(wh, DG_F16, R, K);
    dg_matmul_ref(y1, x, N, &mf);
    dg_matmul_ref(y2, x, N, &mb);
    dg_matmul_ref(y3, x, N, &mh);
    int same = 1;
    for (int i = 0; i < N * R; i++) same &= y1[i] == y2[i] && y1[i] == y3[i];
    CHECK(same, "F32/BF16/F16 weights disagree");
    double want = 0;
    for (int k = 0; k < K; k++) want += (double)x[K + k] * wf[2 * K + k];
    CHECK(y1[R + 2] == (float)want, "y[1,2] = %g, want %g (y = x W^T)", y1[R + 2], want);
}

static void t_rope(void) {
    /* proportional RoPE: pairs with zero frequency pass through unchanged */
    float x[8] = {1, 2, 3, 4, 5, 6, 7, 8}, c[4], s[4];
    float inv[4] = {1.0f, 0.5f, 0.0f, 0.0f};
    int pos = 7;
    for (int i = 0; i < 4; i++) { c[i] = cosf(pos * inv[i]); s[i] = sinf(pos * inv[i]); }
    float y[8];
    memcpy(y, x, sizeof(x));
    dg_rope_ref(y, 8, c, s, DG_F32);
    CHECK(y[2] == 3 && y[3] == 4 && y[6] == 7 && y[7] == 8, "zero-frequency pairs must be untouched");
    CHECK(fabsf(y[0] - (1 * cosf(7) - 5 * sinf(7))) < 1e-6f && fabsf(y[4] - (5 * cosf(7) + 1 * sinf(7))) < 1e-6f,
          "half-split rotation pairs (i, i+d/2)");
    /* norm preserved per pair */
    CHECK(fabsf(y[1] * y[1] + y[5] * y[5] - (2 * 2 + 6 * 6)) < 1e-4f, "rotation keeps the pair norm");
}

const dg_test unit_tests[] = {
    {"unit/bf16", t_bf16},
    {"unit/f16", t_f16},
    {"unit/gelu_softmax", t_gelu_softmax},
    {"unit/rmsnorm", t_rmsnorm},
    {"unit/matmul_dtypes", t_matmul_dtypes},
    {"unit/rope", t_rope},
    {NULL, NULL},
};
