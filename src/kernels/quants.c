/*
 * quants.c - GGUF (ggml) block formats, scalar reference: dequantization, the imatrix-free quantizers,
 * activation quantizers and integer dot products.
 *
 * Everything that must match ggml bit for bit (dequantization, quantization) evaluates the same float
 * expressions in the same order as ggml's reference code: float32 arithmetic (no contraction into FMA:
 * the build is -std=c11, where GCC keeps -ffp-contract=off), the same rounding helper (round to nearest
 * even through the 1.5 * 2^23 trick), the same tie-breaking in the searches. Blocks are read and
 * written byte-wise (fp16 fields through memcpy), so any alignment of the mapped data is fine.
 */
#include "kernels/quants.h"

#include <float.h>
#include <math.h>
#include <string.h>

/* ===== block geometry ===== */

size_t dg_gguf_block_bytes(dg_dtype dt) {
    switch (dt) {
    case DG_Q4_0: return 18;
    case DG_Q4_1: return 20;
    case DG_Q5_0: return 22;
    case DG_Q5_1: return 24;
    case DG_Q8_0: return 34;
    case DG_Q2_K: return 84;
    case DG_Q3_K: return 110;
    case DG_Q4_K: return 144;
    case DG_Q5_K: return 176;
    case DG_Q6_K: return 210;
    case DG_IQ4_NL: return 18;
    default: return 0;
    }
}

int dg_gguf_block_elems(dg_dtype dt) {
    switch (dt) {
    case DG_Q4_0: case DG_Q4_1: case DG_Q5_0: case DG_Q5_1: case DG_Q8_0: case DG_IQ4_NL: return 32;
    case DG_Q2_K: case DG_Q3_K: case DG_Q4_K: case DG_Q5_K: case DG_Q6_K: return 256;
    default: return 0;
    }
}

#define QK 32
#define QKK 256

/* ===== small helpers ===== */

static inline float ld_h(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return dg_f16_to_f32(h);
}
static inline void st_h(uint8_t *p, float f) {
    uint16_t h = dg_f32_to_f16(f);
    memcpy(p, &h, 2);
}
static inline uint32_t ld_u32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}
/* float -> int truncation as x86's cvttss2si does it: NaN and out-of-range values give INT32_MIN. C
 * leaves those conversions undefined; ggml reaches them on denormal blocks (the inverse scale
 * overflows to inf), so the quantizers use this to stay bit-identical with ggml on x86-64 instead of
 * depending on undefined behaviour. */
static inline int32_t f2i(float f) {
    return f == f && f > -2147483648.f && f < 2147483648.f ? (int32_t)f : INT32_MIN;
}
static inline int imin(int a, int b) { return a < b ? a : b; }
static inline int imax(int a, int b) { return a > b ? a : b; }

/* Round to nearest, ties to even, by adding 1.5 * 2^23 and reading the mantissa: ggml's rounding for
 * the K-quants. Valid for |f| < 2^22; outside that (never reached with finite fp16-representable
 * scales) it returns the same wrapped value ggml does, which keeps the two bit-identical. */
static inline int nearest_int(float f) {
    float v = f + 12582912.f;
    int32_t i;
    memcpy(&i, &v, 4);
    return (i & 0x007fffff) - 0x00400000;
}

/* IQ4_NL code book (non-linear 4-bit levels). */
static const int8_t k_iq4nl[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

/* The 8 six-bit (scale, min) pairs of Q4_K / Q5_K: bytes 0..3 hold scales 0..3 (+ top 2 bits of scales
 * 4..7 in bits 6..7), bytes 4..7 mins 0..3 (+ top bits of mins 4..7), bytes 8..11 the low nibbles of
 * scale (low) and min (high) 4..7. */
static inline void scale_min_k4(int j, const uint8_t *s, uint8_t *sc, uint8_t *m) {
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (uint8_t)((s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4));
        *m = (uint8_t)((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
    }
}

/* The 16 six-bit Q3_K scales (unbiased: 0..63; the value is scale - 32): low nibbles in bytes 0..7
 * (scale j < 8 low nibble of byte j, scale j >= 8 high nibble of byte j - 8), top 2 bits in bytes
 * 8..11 (scale j in bits 2*(j/4) of byte 8 + j%4). */
static inline int scale_q3k(int j, const uint8_t *s) {
    const int lo = j < 8 ? s[j] & 0xF : s[j - 8] >> 4;
    const int hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
    return lo | (hi << 4);
}

/* ===== dequantization ===== */

/* The 32 integer codes of a 32-element block, offsets applied, so that y = d * q (+ m for Q4_1 / Q5_1):
 * element j < 16 is the low nibble of qs[j], element j + 16 its high nibble; the 5th bit of element j is
 * bit j of the little-endian u32 qh. */
static void codes32(dg_dtype dt, const uint8_t *b, int *q) {
    switch (dt) {
    case DG_Q8_0:
        for (int j = 0; j < 32; j++) q[j] = (int8_t)b[2 + j];
        return;
    case DG_Q4_0: case DG_Q4_1: case DG_IQ4_NL: {
        const uint8_t *qs = b + (dt == DG_Q4_1 ? 4 : 2);
        for (int j = 0; j < 16; j++) {
            q[j] = qs[j] & 0xF;
            q[j + 16] = qs[j] >> 4;
        }
        for (int j = 0; j < 32; j++) q[j] = dt == DG_Q4_0 ? q[j] - 8 : dt == DG_IQ4_NL ? k_iq4nl[q[j]] : q[j];
        return;
    }
    default: {   /* Q5_0, Q5_1 */
        const int m = dt == DG_Q5_1;
        const uint32_t qh = ld_u32(b + 2 + 2 * m);
        const uint8_t *qs = b + 6 + 2 * m;
        for (int j = 0; j < 16; j++) {
            q[j] = ((qs[j] & 0xF) | (int)(((qh >> j) & 1) << 4)) - (m ? 0 : 16);
            q[j + 16] = ((qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4)) - (m ? 0 : 16);
        }
        return;
    }
    }
}

/* ggml evaluates q * d, then + m: the same single roundings here */
static void dq_32(dg_dtype dt, const uint8_t *b, float *y) {
    int q[32];
    codes32(dt, b, q);
    const float d = ld_h(b);
    if (dt == DG_Q4_1 || dt == DG_Q5_1) {
        const float m = ld_h(b + 2);
        for (int j = 0; j < 32; j++) y[j] = q[j] * d + m;
    } else {
        for (int j = 0; j < 32; j++) y[j] = q[j] * d;
    }
}

/* Q2_K: element 128h + 32s + l (half h, shift s = 0..3, l = 0..31) is bits 2s..2s+1 of qs[32h + l];
 * its sub-block is 8h + 2s + l/16. */
static void dq_q2_K(const uint8_t *b, float *y) {
    const uint8_t *sc = b, *qs = b + 16;
    const float d = ld_h(b + 80), dmin = ld_h(b + 82);
    for (int h = 0; h < 2; h++)
        for (int s = 0; s < 4; s++)
            for (int l = 0; l < 32; l++) {
                const int is = 8 * h + 2 * s + l / 16;
                const float dl = d * (sc[is] & 0xF), ml = dmin * (sc[is] >> 4);
                y[128 * h + 32 * s + l] = dl * ((qs[32 * h + l] >> (2 * s)) & 3) - ml;
            }
}

/* Q3_K: like Q2_K for the low 2 bits; the 3rd bit of element 128h + 32s + l is bit 4h + s of
 * hmask[l]; a clear bit subtracts 4. */
static void dq_q3_K(const uint8_t *b, float *y) {
    const uint8_t *hm = b, *qs = b + 32, *sc = b + 96;
    const float d = ld_h(b + 108);
    for (int h = 0; h < 2; h++)
        for (int s = 0; s < 4; s++)
            for (int l = 0; l < 32; l++) {
                const int is = 8 * h + 2 * s + l / 16;
                const float dl = d * (scale_q3k(is, sc) - 32);
                const int q = ((qs[32 * h + l] >> (2 * s)) & 3) - ((hm[l] >> (4 * h + s)) & 1 ? 0 : 4);
                y[128 * h + 32 * s + l] = dl * q;
            }
}

/* Q4_K: chunk c (64 elements) uses qs[32c .. 32c+31]: low nibbles are elements 64c..64c+31 (sub-block
 * 2c), high nibbles 64c+32..64c+63 (sub-block 2c+1). Q5_K (qh != NULL) adds a 5th bit: bit 2c of qh[l]
 * for the low half of chunk c, bit 2c+1 for the high half. */
static void dq_k45(const uint8_t *b, const uint8_t *qh, const uint8_t *qs, float *y) {
    const float d = ld_h(b), dmin = ld_h(b + 2);
    const uint8_t *s = b + 4;
    for (int c = 0; c < 4; c++) {
        uint8_t sc, m;
        scale_min_k4(2 * c, s, &sc, &m);
        const float d1 = d * sc, m1 = dmin * m;
        scale_min_k4(2 * c + 1, s, &sc, &m);
        const float d2 = d * sc, m2 = dmin * m;
        for (int l = 0; l < 32; l++)
            y[64 * c + l] = d1 * ((qs[32 * c + l] & 0xF) + (qh && (qh[l] >> (2 * c)) & 1 ? 16 : 0)) - m1;
        for (int l = 0; l < 32; l++)
            y[64 * c + 32 + l] = d2 * ((qs[32 * c + l] >> 4) + (qh && (qh[l] >> (2 * c + 1)) & 1 ? 16 : 0)) - m2;
    }
}
static void dq_q4_K(const uint8_t *b, float *y) { dq_k45(b, NULL, b + 16, y); }
static void dq_q5_K(const uint8_t *b, float *y) { dq_k45(b, b + 16, b + 48, y); }

/* Q6_K: half h (128 elements) uses ql[64h..], qh[32h..], scales[8h..]; for l = 0..31 the four
 * elements l, l+32, l+64, l+96 take ql[l] low, ql[l+32] low, ql[l] high, ql[l+32] high, with the 2 high
 * bits from qh[l] bits 0-1, 2-3, 4-5, 6-7, and scales l/16 + 0, 2, 4, 6. */
static void dq_q6_K(const uint8_t *b, float *y) {
    const float d = ld_h(b + 208);
    for (int h = 0; h < 2; h++) {
        const uint8_t *ql = b + 64 * h, *qh = b + 128 + 32 * h;
        const int8_t *sc = (const int8_t *)(b + 192 + 8 * h);
        float *yh = y + 128 * h;
        for (int l = 0; l < 32; l++) {
            const int is = l / 16;
            const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
            const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
            const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            yh[l] = d * sc[is] * q1;
            yh[l + 32] = d * sc[is + 2] * q2;
            yh[l + 64] = d * sc[is + 4] * q3;
            yh[l + 96] = d * sc[is + 6] * q4;
        }
    }
}

void dg_dequant_gguf(dg_dtype dt, const void *blocks, float *out, int64_t n) {
    void (*fn)(const uint8_t *, float *) = NULL;
    switch (dt) {
    case DG_Q4_0: case DG_Q4_1: case DG_Q5_0: case DG_Q5_1: case DG_Q8_0: case DG_IQ4_NL: break;
    case DG_Q2_K: fn = dq_q2_K; break;
    case DG_Q3_K: fn = dq_q3_K; break;
    case DG_Q4_K: fn = dq_q4_K; break;
    case DG_Q5_K: fn = dq_q5_K; break;
    case DG_Q6_K: fn = dq_q6_K; break;
    default: memset(out, 0, sizeof(float) * (size_t)n); return;
    }
    const int64_t blk = dg_gguf_block_elems(dt);
    const size_t bb = dg_gguf_block_bytes(dt);
    const uint8_t *p = blocks;
    for (int64_t i = 0; i < n / blk; i++) {
        if (fn) fn(p + (size_t)i * bb, out + i * blk);
        else dq_32(dt, p + (size_t)i * bb, out + i * blk);
    }
}

/* ===== quantization: 32-element formats ===== */

/* The value of largest magnitude (first one on ties), as the symmetric quantizers pick it. */
static float signed_absmax(const float *x, int n) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < n; j++)
        if (amax < fabsf(x[j])) { amax = fabsf(x[j]); max = x[j]; }
    return max;
}

static void minmax(const float *x, int n, float *mn, float *mx) {
    float lo = FLT_MAX, hi = -FLT_MAX;
    for (int j = 0; j < n; j++) {
        if (x[j] < lo) lo = x[j];
        if (x[j] > hi) hi = x[j];
    }
    *mn = lo;
    *mx = hi;
}

/* Pack 32 codes: low 4 bits of elements j and j + 16 share qs[j]; for the 5-bit formats the 5th bits go
 * to the u32 at qh (bit j for element j). */
static void pack32(const int *q, uint8_t *qs, uint8_t *qh) {
    uint32_t h = 0;
    for (int j = 0; j < 16; j++) {
        qs[j] = (uint8_t)((q[j] & 0xF) | ((q[j + 16] & 0xF) << 4));
        h |= (uint32_t)((q[j] >> 4) & 1) << j | (uint32_t)((q[j + 16] >> 4) & 1) << (j + 16);
    }
    if (qh) memcpy(qh, &h, 4);
}

/* Q4_0 / Q5_0: d = (value of largest magnitude) / -8 (or -16), q = min(top, trunc(x / d + 8.5)). */
static void q_sym(const float *x, uint8_t *b, int bits) {
    const int half = 1 << (bits - 1), top = (1 << bits) - 1;
    const float d = signed_absmax(x, 32) / -half;
    const float id = d ? 1.0f / d : 0.0f;
    st_h(b, d);
    int q[32];
    for (int j = 0; j < 32; j++) q[j] = imin(top, (int8_t)f2i(x[j] * id + (half + 0.5f)));
    pack32(q, b + (bits == 5 ? 6 : 2), bits == 5 ? b + 2 : NULL);
}

/* Q4_1 / Q5_1: d = (max - min) / 15 (or 31), m = min, q = trunc((x - min) / d + 0.5) (ggml clamps to 15
 * for Q4_1 only). */
static void q_asym(const float *x, uint8_t *b, int bits) {
    float mn, mx;
    minmax(x, 32, &mn, &mx);
    const float d = (mx - mn) / ((1 << bits) - 1);
    const float id = d ? 1.0f / d : 0.0f;
    st_h(b, d);
    st_h(b + 2, mn);
    int q[32];
    for (int j = 0; j < 32; j++) {
        const int32_t v = f2i((x[j] - mn) * id + 0.5f);
        q[j] = bits == 4 ? imin(15, (int8_t)v) : (uint8_t)v;
    }
    pack32(q, b + (bits == 5 ? 8 : 4), bits == 5 ? b + 4 : NULL);
}

static void q_q4_0(const float *x, uint8_t *b) { q_sym(x, b, 4); }
static void q_q5_0(const float *x, uint8_t *b) { q_sym(x, b, 5); }
static void q_q4_1(const float *x, uint8_t *b) { q_asym(x, b, 4); }
static void q_q5_1(const float *x, uint8_t *b) { q_asym(x, b, 5); }

/* Q8_0 weights and activations: d = absmax / 127, q = roundf(x / d) (half away from zero). */
static void q_q8_0(const float *x, uint8_t *b) {
    float amax = 0.0f;
    for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[j]));
    const float d = amax / 127;
    const float id = d ? 1.0f / d : 0.0f;
    st_h(b, d);
    for (int j = 0; j < 32; j++) b[2 + j] = (uint8_t)(int8_t)f2i(roundf(x[j] * id));
}

/* Index of the IQ4_NL level closest to x (binary search; ties go to the upper level only when
 * strictly closer, as ggml's best_index_int8). */
static int best_index_iq4(float x) {
    if (x <= k_iq4nl[0]) return 0;
    if (x >= k_iq4nl[15]) return 15;
    int lo = 0, hi = 15;
    while (hi - lo > 1) {
        const int mid = (lo + hi) / 2;
        if (x < k_iq4nl[mid]) hi = mid; else lo = mid;
    }
    return x - k_iq4nl[hi - 1] < k_iq4nl[hi] - x ? hi - 1 : hi;
}

/* IQ4_NL without importance weights: weights x^2; start from d = max / -127 and try the 15 scales
 * (itry - 127) / max, itry = -7..7, keeping the best weighted least-squares fit. */
static void q_iq4_nl(const float *x, uint8_t *b) {
    const int ntry = 7;
    float w[32];
    uint8_t L[32];
    memset(L, 0, sizeof(L));
    float amax = 0, max = 0;
    for (int j = 0; j < 32; j++) {
        w[j] = x[j] * x[j];
        const float ax = fabsf(x[j]);
        if (ax > amax) { amax = ax; max = x[j]; }
    }
    float d = 0.f;
    if (amax >= 1e-15f) {
        d = -max / k_iq4nl[0];
        float id = 1 / d;
        float sumqx = 0, sumq2 = 0;
        for (int j = 0; j < 32; j++) {
            const float q = k_iq4nl[best_index_iq4(id * x[j])];
            sumqx += w[j] * q * x[j];
            sumq2 += w[j] * q * q;
        }
        d = sumq2 > 0 ? sumqx / sumq2 : 0.f;
        float best = d * sumqx;
        for (int itry = -ntry; itry <= ntry; itry++) {
            id = (itry + k_iq4nl[0]) / max;
            sumqx = sumq2 = 0;
            for (int j = 0; j < 32; j++) {
                const float q = k_iq4nl[best_index_iq4(id * x[j])];
                sumqx += w[j] * q * x[j];
                sumq2 += w[j] * q * q;
            }
            if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
                d = sumqx / sumq2;
                best = d * sumqx;
            }
        }
    }
    /* final codes against the chosen scale (an all-zero block gets level 8, the one nearest 0) */
    const float idf = d ? 1 / d : 0;
    for (int j = 0; j < 32; j++) L[j] = (uint8_t)best_index_iq4(idf * x[j]);
    st_h(b, d);
    for (int j = 0; j < 16; j++) b[2 + j] = (uint8_t)(L[j] | (L[j + 16] << 4));
}

/* ===== quantization: K-quant helpers (ggml's make_*_quants) ===== */

/* Levels clamp(nearest(iscale * x), -nmax, nmax - 1) with the weighted sums (weights x^2) of the
 * least-squares scale: sumlx = sum w x l, suml2 = sum w l^2. L (if given) gets level + bias. */
static void fit_levels(int n, int nmax, const float *x, float iscale, int8_t *L, int bias, float *sumlx, float *suml2) {
    float slx = 0, sl2 = 0;
    for (int i = 0; i < n; i++) {
        const int l = imax(-nmax, imin(nmax - 1, nearest_int(iscale * x[i])));
        if (L) L[i] = (int8_t)(l + bias);
        const float w = x[i] * x[i];
        slx += w * x[i] * l;
        sl2 += w * l * l;
    }
    *sumlx = slx;
    *suml2 = sl2;
}

/* Symmetric fit of n values to integer levels -nmax..nmax-1 with weights x^2 (rmse_type 1): start
 * from scale -max/nmax, then try 18 perturbed inverse scales -(nmax + 0.1 is)/max, keeping the one
 * with the best weighted least-squares fit. L gets level + nmax. */
static float make_qx_quants(int n, int nmax, const float *x, int8_t *L) {
    const float max = signed_absmax(x, n);
    if (fabsf(max) < 1e-15f) {
        memset(L, 0, (size_t)n);
        return 0.f;
    }
    float sumlx, suml2;
    fit_levels(n, nmax, x, -nmax / max, L, nmax, &sumlx, &suml2);
    float scale = suml2 ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; is++) {
        if (is == 0) continue;
        const float iscale = -(nmax + 0.1f * is) / max;
        fit_levels(n, nmax, x, iscale, NULL, 0, &sumlx, &suml2);
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            fit_levels(n, nmax, x, iscale, L, nmax, &sumlx, &suml2);
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

/* Q3_K sub-block fit (levels -nmax..nmax-1, weights x^2): start from -max/nmax, then up to 5 passes
 * of coordinate descent moving single levels while the weighted fit improves. L gets level + nmax. */
static float make_q3_quants(int n, int nmax, const float *x, int8_t *L) {
    const float max = signed_absmax(x, n);
    if (fabsf(max) < 1e-15f) {
        memset(L, 0, (size_t)n);
        return 0.f;
    }
    float sumlx, suml2;
    fit_levels(n, nmax, x, -nmax / max, L, 0, &sumlx, &suml2);
    for (int itry = 0; itry < 5; itry++) {
        int changed = 0;
        for (int i = 0; i < n; i++) {
            const float w = x[i] * x[i];
            float slx = sumlx - w * x[i] * L[i];
            if (slx > 0) {
                float sl2 = suml2 - w * L[i] * L[i];
                int nl = imax(-nmax, imin(nmax - 1, nearest_int(x[i] * sl2 / slx)));
                if (nl != L[i]) {
                    slx += w * x[i] * nl;
                    sl2 += w * nl * nl;
                    if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
                        L[i] = (int8_t)nl;
                        sumlx = slx;
                        suml2 = sl2;
                        changed++;
                    }
                }
            }
        }
        if (!changed) break;
    }
    for (int i = 0; i < n; i++) L[i] = (int8_t)(L[i] + nmax);
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

/* Asymmetric fit x ~ scale * L + min (min <= 0), levels 0..nmax, weighted: start from the min/max
 * range, then try nstep + 1 inverse scales (rmin + rdelta*is + nmax)/(max - min), solving the 2x2
 * weighted least squares for (scale, min) at each and keeping the lowest weighted error (absolute
 * error if use_mad, squared otherwise). Returns scale; *the_min = -min. */
static float make_qkx2_quants(int n, int nmax, const float *x, const float *weights, uint8_t *L,
                              float *the_min, uint8_t *Laux, float rmin, float rdelta, int nstep, int use_mad) {
    float min = x[0], max = x[0];
    float sum_w = weights[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        const float w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if (min > 0) min = 0;
    if (max == min) {
        for (int i = 0; i < n; i++) L[i] = 0;
        *the_min = -min;
        return 0.f;
    }
    float iscale = nmax / (max - min);
    float scale = 1 / iscale;
    float best_error = 0;
    for (int i = 0; i < n; i++) {
        const int l = nearest_int(iscale * (x[i] - min));
        L[i] = (uint8_t)imax(0, imin(nmax, l));
        float diff = scale * L[i] + min - x[i];
        diff = use_mad ? fabsf(diff) : diff * diff;
        best_error += weights[i] * diff;
    }
    for (int is = 0; is <= nstep; is++) {
        iscale = (rmin + rdelta * is + nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; i++) {
            const int l = imax(0, imin(nmax, nearest_int(iscale * (x[i] - min))));
            Laux[i] = (uint8_t)l;
            const float w = weights[i];
            sum_l += w * l;
            sum_l2 += w * l * l;
            sum_xl += w * l * x[i];
        }
        const float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float cur_error = 0;
            for (int i = 0; i < n; i++) {
                float diff = this_scale * Laux[i] + this_min - x[i];
                diff = use_mad ? fabsf(diff) : diff * diff;
                cur_error += weights[i] * diff;
            }
            if (cur_error < best_error) {
                memcpy(L, Laux, (size_t)n);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    return scale;
}

/* Pack 256 2-bit levels: qs[32h + l] holds elements 128h + l + 32s in bits 2s. */
static void pack_2bit(const uint8_t *L, uint8_t *qs) {
    for (int j = 0; j < QKK; j += 128)
        for (int l = 0; l < 32; l++)
            qs[j / 4 + l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) | (L[j + l + 96] << 6));
}

/* ===== quantization: K formats ===== */

static void q_q2_K(const float *x, uint8_t *b) {
    uint8_t L[QKK], Laux[16];
    float w[16], mins[16], scales[16];
    uint8_t *sc = b, *qs = b + 16;
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 16; j++) {
        for (int l = 0; l < 16; l++) w[l] = fabsf(x[16 * j + l]);
        scales[j] = make_qkx2_quants(16, 3, x + 16 * j, w, L + 16 * j, &mins[j], Laux, -0.5f, 0.1f, 15, 1);
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    if (max_scale > 0) {
        const float iscale = 15.f / max_scale;
        for (int j = 0; j < 16; j++) sc[j] = (uint8_t)nearest_int(iscale * scales[j]);
        st_h(b + 80, max_scale / 15.f);
    } else {
        memset(sc, 0, 16);
        st_h(b + 80, 0.f);
    }
    if (max_min > 0) {
        const float iscale = 15.f / max_min;
        /* unsigned shift: a NaN min (denormal blocks) gives a negative level, whose low bits ggml keeps */
        for (int j = 0; j < 16; j++) sc[j] = (uint8_t)(sc[j] | ((unsigned)nearest_int(iscale * mins[j]) << 4));
        st_h(b + 82, max_min / 15.f);
    } else {
        st_h(b + 82, 0.f);
    }
    /* re-derive the levels against the rounded scales (sub-blocks with a zero scale keep the fit's) */
    for (int j = 0; j < 16; j++) {
        const float d = ld_h(b + 80) * (sc[j] & 0xF);
        if (!d) continue;
        const float dm = ld_h(b + 82) * (sc[j] >> 4);
        for (int i = 0; i < 16; i++) L[16 * j + i] = (uint8_t)imax(0, imin(3, nearest_int((x[16 * j + i] + dm) / d)));
    }
    pack_2bit(L, qs);
}

static void q_q3_K(const float *x, uint8_t *b) {
    int8_t L[QKK];
    float scales[16];
    uint8_t *hm = b, *qs = b + 32, *sc = b + 96;
    float max_scale = 0, amax = 0;
    for (int j = 0; j < 16; j++) {
        scales[j] = make_q3_quants(16, 4, x + 16 * j, L + 16 * j);
        const float a = fabsf(scales[j]);
        if (a > amax) { amax = a; max_scale = scales[j]; }
    }
    memset(sc, 0, 12);
    if (max_scale) {
        const float iscale = -32.f / max_scale;
        for (int j = 0; j < 16; j++) {
            int8_t l = (int8_t)nearest_int(iscale * scales[j]);
            l = (int8_t)(imax(-32, imin(31, l)) + 32);
            if (j < 8) sc[j] = (uint8_t)(l & 0xF);
            else sc[j - 8] = (uint8_t)(sc[j - 8] | ((l & 0xF) << 4));
            l = (int8_t)(l >> 4);
            sc[j % 4 + 8] = (uint8_t)(sc[j % 4 + 8] | (l << (2 * (j / 4))));
        }
        st_h(b + 108, 1 / iscale);
    } else {
        st_h(b + 108, 0.f);
    }
    for (int j = 0; j < 16; j++) {
        const float d = ld_h(b + 108) * (int8_t)(scale_q3k(j, sc) - 32);
        if (!d) continue;
        for (int i = 0; i < 16; i++) L[16 * j + i] = (int8_t)(imax(-4, imin(3, nearest_int(x[16 * j + i] / d))) + 4);
    }
    /* the 3rd bit of element j goes to hmask[j % 32], bit j / 32 */
    memset(hm, 0, 32);
    for (int j = 0; j < QKK; j++)
        if (L[j] > 3) {
            hm[j % 32] = (uint8_t)(hm[j % 32] | (1 << (j / 32)));
            L[j] = (int8_t)(L[j] - 4);
        }
    pack_2bit((const uint8_t *)L, qs);
}

/* Shared by Q4_K (nmax 15, rmin -1, 20 steps) and Q5_K (nmax 31, rmin -0.5, 15 steps): per 32-element
 * sub-block an asymmetric fit with weights av_x + |x| (av_x = rms of the sub-block), then 6-bit scales
 * and mins relative to the block maxima, then the levels again against the rounded scales. */
static void qkx2_x8(const float *x, int nmax, float rmin, int nstep, float *scales, float *mins, uint8_t *L);
static void k_pack_scales(const float *x, uint8_t *b, uint8_t *L, int nmax, const float *scales, const float *mins);

static void q_k_scales(const float *x, uint8_t *b, uint8_t *L, int nmax, float rmin, int nstep, int fast) {
    uint8_t Laux[32];
    float w[32], mins[8], scales[8];
    if (fast) {
        qkx2_x8(x, nmax, rmin, nstep, scales, mins, L);
    } else {
        for (int j = 0; j < 8; j++) {
            float sum_x2 = 0;
            for (int l = 0; l < 32; l++) sum_x2 += x[32 * j + l] * x[32 * j + l];
            const float av_x = sqrtf(sum_x2 / 32);
            for (int l = 0; l < 32; l++) w[l] = av_x + fabsf(x[32 * j + l]);
            scales[j] = make_qkx2_quants(32, nmax, x + 32 * j, w, L + 32 * j, &mins[j], Laux, rmin, 0.1f, nstep, 0);
        }
    }
    k_pack_scales(x, b, L, nmax, scales, mins);
}

/* 6-bit scales and mins relative to the block maxima, then the levels against the rounded values */
static void k_pack_scales(const float *x, uint8_t *b, uint8_t *L, int nmax, const float *scales, const float *mins) {
    uint8_t *s = b + 4;
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 8; j++) {
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    for (int j = 0; j < 8; j++) {
        uint8_t ls = (uint8_t)nearest_int(inv_scale * scales[j]);
        uint8_t lm = (uint8_t)nearest_int(inv_min * mins[j]);
        ls = (uint8_t)imin(63, ls);
        lm = (uint8_t)imin(63, lm);
        if (j < 4) {
            s[j] = ls;
            s[j + 4] = lm;
        } else {
            s[j + 4] = (uint8_t)((ls & 0xF) | ((lm & 0xF) << 4));
            s[j - 4] = (uint8_t)(s[j - 4] | ((ls >> 4) << 6));
            s[j] = (uint8_t)(s[j] | ((lm >> 4) << 6));
        }
    }
    st_h(b, max_scale / 63.f);
    st_h(b + 2, max_min / 63.f);
    for (int j = 0; j < 8; j++) {
        uint8_t sc, m;
        scale_min_k4(j, s, &sc, &m);
        const float d = ld_h(b) * sc;
        if (!d) continue;
        const float dm = ld_h(b + 2) * m;
        for (int i = 0; i < 32; i++) L[32 * j + i] = (uint8_t)imax(0, imin(nmax, nearest_int((x[32 * j + i] + dm) / d)));
    }
}

static void q4_K_impl(const float *x, uint8_t *b, int fast) {
    uint8_t L[QKK];
    q_k_scales(x, b, L, 15, -1.f, 20, fast);
    uint8_t *q = b + 16;
    for (int j = 0; j < QKK; j += 64) {
        for (int l = 0; l < 32; l++) q[l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 4));
        q += 32;
    }
}

static void q5_K_impl(const float *x, uint8_t *b, int fast) {
    uint8_t L[QKK];
    q_k_scales(x, b, L, 31, -0.5f, 15, fast);
    uint8_t *qh = b + 16, *ql = b + 48;
    memset(qh, 0, 32);
    for (int c = 0; c < 4; c++) {
        for (int j = 0; j < 32; j++) {
            int l1 = L[64 * c + j], l2 = L[64 * c + j + 32];
            if (l1 > 15) { l1 -= 16; qh[j] = (uint8_t)(qh[j] | (1 << (2 * c))); }
            if (l2 > 15) { l2 -= 16; qh[j] = (uint8_t)(qh[j] | (1 << (2 * c + 1))); }
            ql[32 * c + j] = (uint8_t)(l1 | (l2 << 4));
        }
    }
}

static void qx_x16(const float *x, float *scales, int8_t *L);

static void q6_K_impl(const float *x, uint8_t *b, int fast) {
    int8_t L[QKK];
    float scales[16];
    float max_scale = 0, max_abs = 0;
    if (fast) qx_x16(x, scales, L);
    else
        for (int ib = 0; ib < 16; ib++) scales[ib] = make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib);
    for (int ib = 0; ib < 16; ib++) {
        const float a = fabsf(scales[ib]);
        if (a > max_abs) { max_abs = a; max_scale = scales[ib]; }
    }
    if (max_abs < 1e-15f) {
        memset(b, 0, 210);
        return;
    }
    int8_t *sc = (int8_t *)(b + 192);
    const float iscale = -128.f / max_scale;
    st_h(b + 208, 1 / iscale);
    for (int ib = 0; ib < 16; ib++) sc[ib] = (int8_t)imin(127, nearest_int(iscale * scales[ib]));
    for (int j = 0; j < 16; j++) {
        const float d = ld_h(b + 208) * sc[j];
        if (!d) continue;
        for (int i = 0; i < 16; i++) L[16 * j + i] = (int8_t)(imax(-32, imin(31, nearest_int(x[16 * j + i] / d))) + 32);
    }
    for (int h = 0; h < 2; h++) {
        uint8_t *ql = b + 64 * h, *qh = b + 128 + 32 * h;
        const int8_t *Lh = L + 128 * h;
        for (int l = 0; l < 32; l++) {
            const int q1 = Lh[l] & 0xF, q2 = Lh[l + 32] & 0xF, q3 = Lh[l + 64] & 0xF, q4 = Lh[l + 96] & 0xF;
            ql[l] = (uint8_t)(q1 | (q3 << 4));
            ql[l + 32] = (uint8_t)(q2 | (q4 << 4));
            qh[l] = (uint8_t)((Lh[l] >> 4) | ((Lh[l + 32] >> 4) << 2) | ((Lh[l + 64] >> 4) << 4) | ((Lh[l + 96] >> 4) << 6));
        }
    }
}

static void q_q4_K(const float *x, uint8_t *b) { q4_K_impl(x, b, 0); }
static void q_q5_K(const float *x, uint8_t *b) { q5_K_impl(x, b, 0); }
static void q_q6_K(const float *x, uint8_t *b) { q6_K_impl(x, b, 0); }

/* ===== fast K-quant fits: the reference arithmetic, sub-blocks side by side =====
 *
 * make_qkx2_quants / make_qx_quants are chains of float sums, serial per sub-block; their latency, not
 * their work, bounds the reference (about 5 M values/s). Here the 8 sub-blocks of a Q4_K / Q5_K block
 * (16 of a Q6_K block) are lanes: every lane performs exactly the reference's operations in the
 * reference's order (so the result is bit-identical; tests/test_quants.c checks it), but the lanes are
 * independent, which the compiler vectorizes and the CPU overlaps. Lanes that the reference leaves
 * early (all values equal, all zero) compute garbage that is then replaced by the early result. */

/* Lanes as GCC / Clang generic vectors of 4 (one SSE2 / NEON register); every operation is the
 * element-wise IEEE operation, so each lane computes exactly what the scalar code computes. */
typedef float v4f __attribute__((vector_size(16)));
typedef int32_t v4i __attribute__((vector_size(16)));
#define NL 4
#define VINL static inline __attribute__((always_inline))

VINL v4i v_near(v4f f) {
    const v4f v = f + 12582912.f;
    v4i i;
    memcpy(&i, &v, sizeof(i));
    return (i & 0x007fffff) - 0x00400000;
}
VINL v4i v_clamp(v4i l, int lo, int hi) {
    const v4i vlo = {lo, lo, lo, lo}, vhi = {hi, hi, hi, hi}, below = l < vlo, above = l > vhi;
    l = (below & vlo) | (~below & l);
    return (above & vhi) | (~above & l);
}
VINL v4f v_sel(v4i m, v4f a, v4f b) {   /* m ? a : b (m: all ones or zero per lane) */
    v4i ia, ib;
    memcpy(&ia, &a, sizeof(ia));
    memcpy(&ib, &b, sizeof(ib));
    const v4i r = (m & ia) | (~m & ib);
    v4f out;
    memcpy(&out, &r, sizeof(out));
    return out;
}
VINL v4f v_abs(v4f a) {
    v4i i;
    memcpy(&i, &a, sizeof(i));
    i &= 0x7fffffff;
    memcpy(&a, &i, sizeof(a));
    return a;
}

/* make_qkx2_quants(32, nmax, x, weights av_x + |x|, ...) of the 8 sub-blocks of a Q4_K / Q5_K block:
 * two groups of NL lanes, interleaved in every loop (two independent chains for each sum) */
static void qkx2_x8(const float *x, int nmax, float rmin, int nstep, float *scales, float *mins, uint8_t *L) {
    enum { G = 8 / NL };
    v4f X[32][G], W[32][G], Lb[32][G], La[32][G];
    const v4f zero = {0};
    v4f sum_x2[G], av[G], mn[G], mx[G], sw[G], sx[G], mn0[G], isc[G], sc[G], best[G];
    v4i flat[G];
    for (int i = 0; i < 32; i++)
        _Pragma("GCC unroll 4") for (int g = 0; g < G; g++)
            for (int j = 0; j < NL; j++) X[i][g][j] = x[32 * (NL * g + j) + i];
    for (int g = 0; g < G; g++) sum_x2[g] = zero;
    for (int i = 0; i < 32; i++)
        _Pragma("GCC unroll 4") for (int g = 0; g < G; g++) sum_x2[g] += X[i][g] * X[i][g];
    for (int g = 0; g < G; g++)
        for (int j = 0; j < NL; j++) av[g][j] = sqrtf(sum_x2[g][j] / 32);
    for (int i = 0; i < 32; i++)
        _Pragma("GCC unroll 4") for (int g = 0; g < G; g++) W[i][g] = av[g] + v_abs(X[i][g]);
    for (int g = 0; g < G; g++) {
        mn[g] = mx[g] = X[0][g];
        sw[g] = W[0][g];
        sx[g] = W[0][g] * X[0][g];
    }
    for (int i = 1; i < 32; i++)
        _Pragma("GCC unroll 4") for (int g = 0; g < G; g++) {
            mn[g] = v_sel(X[i][g] < mn[g], X[i][g], mn[g]);
            mx[g] = v_sel(X[i][g] > mx[g], X[i][g], mx[g]);
            sw[g] += W[i][g];
            sx[g] += W[i][g] * X[i][g];
        }
    for (int g = 0; g < G; g++) {
        mn[g] = v_sel(mn[g] > zero, zero, mn[g]);
        mn0[g] = mn[g];
        flat[g] = mx[g] == mn[g];
        isc[g] = (float)nmax / (mx[g] - mn[g]);
        sc[g] = 1 / isc[g];
        best[g] = zero;
    }
    for (int i = 0; i < 32; i++)
        _Pragma("GCC unroll 4") for (int g = 0; g < G; g++) {
            Lb[i][g] = __builtin_convertvector(v_clamp(v_near(isc[g] * (X[i][g] - mn[g])), 0, nmax), v4f);
            v4f diff = sc[g] * Lb[i][g] + mn[g] - X[i][g];
            diff = diff * diff;
            best[g] += W[i][g] * diff;
        }
    for (int is = 0; is <= nstep; is++) {
        v4f sl[G], sl2[G], sxl[G], cur[G], ts[G], tm[G];
        v4i upd[G];
        _Pragma("GCC unroll 4") for (int g = 0; g < G; g++) {
            sl[g] = sl2[g] = sxl[g] = cur[g] = zero;
            isc[g] = (rmin + 0.1f * is + nmax) / (mx[g] - mn[g]);   /* mn: the best fit's so far, as in the reference */
        }
        for (int i = 0; i < 32; i++)
            _Pragma("GCC unroll 4") for (int g = 0; g < G; g++) {
                const v4f q = __builtin_convertvector(v_clamp(v_near(isc[g] * (X[i][g] - mn[g])), 0, nmax), v4f);
                La[i][g] = q;
                const v4f wq = W[i][g] * q;
                sl[g] += wq;
                sl2[g] += wq * q;
                sxl[g] += wq * X[i][g];
            }
        _Pragma("GCC unroll 4") for (int g = 0; g < G; g++) {
            const v4f D = sw[g] * sl2[g] - sl[g] * sl[g];
            ts[g] = (sw[g] * sxl[g] - sx[g] * sl[g]) / D;
            tm[g] = (sl2[g] * sx[g] - sl[g] * sxl[g]) / D;
            const v4i pos = tm[g] > zero;
            ts[g] = v_sel(pos, sxl[g] / sl2[g], ts[g]);
            tm[g] = v_sel(pos, zero, tm[g]);
            upd[g] = D > zero;
        }
        for (int i = 0; i < 32; i++)
            _Pragma("GCC unroll 4") for (int g = 0; g < G; g++) {
                v4f diff = ts[g] * La[i][g] + tm[g] - X[i][g];
                diff = diff * diff;
                cur[g] += W[i][g] * diff;
            }
        _Pragma("GCC unroll 4") for (int g = 0; g < G; g++) {
            upd[g] &= cur[g] < best[g];
            best[g] = v_sel(upd[g], cur[g], best[g]);
            sc[g] = v_sel(upd[g], ts[g], sc[g]);
            mn[g] = v_sel(upd[g], tm[g], mn[g]);
        }
        for (int i = 0; i < 32; i++)
            _Pragma("GCC unroll 4") for (int g = 0; g < G; g++) Lb[i][g] = v_sel(upd[g], La[i][g], Lb[i][g]);
    }
    for (int g = 0; g < G; g++)
        for (int j = 0; j < NL; j++) {
            const int sb = NL * g + j;
            if (flat[g][j]) {   /* the reference's early return: levels 0, scale 0, the clamped min */
                scales[sb] = 0.f;
                mins[sb] = -mn0[g][j];
                for (int i = 0; i < 32; i++) L[32 * sb + i] = 0;
                continue;
            }
            scales[sb] = sc[g][j];
            mins[sb] = -mn[g][j];
            for (int i = 0; i < 32; i++) L[32 * sb + i] = (uint8_t)Lb[i][g][j];
        }
}

/* make_qx_quants(16, 32, ...) of the 16 sub-blocks of a Q6_K block, NL at a time */
static void qx_x16(const float *x, float *scales, int8_t *L) {
    const int nmax = 32;
    const v4f zero = {0};
    const v4i all = {-1, -1, -1, -1};
    for (int g = 0; g < 16; g += NL) {
        v4f X[16], Lb[16], Lc[16], amax = zero, mxv = zero, sc = zero, best = zero;
        for (int i = 0; i < 16; i++)
            for (int j = 0; j < NL; j++) X[i][j] = x[16 * (g + j) + i];
        for (int i = 0; i < 16; i++) {
            const v4f a = v_abs(X[i]);
            const v4i m = amax < a;
            amax = v_sel(m, a, amax);
            mxv = v_sel(m, X[i], mxv);
        }
        for (int pass = 0; pass <= 18; pass++) {
            /* pass 0: iscale -nmax / max; then is = -9..-1, 1..9 */
            const int is = pass == 0 ? 0 : pass <= 9 ? pass - 10 : pass - 9;
            const v4f isc = pass == 0 ? (float)-nmax / mxv : -(nmax + 0.1f * is) / mxv;
            v4f a = zero, b2 = zero;
            for (int i = 0; i < 16; i++) {
                const v4f q = __builtin_convertvector(v_clamp(v_near(isc * X[i]), -nmax, nmax - 1), v4f);
                Lc[i] = q;
                const v4f w = X[i] * X[i];
                a += w * X[i] * q;
                b2 += w * q * q;
            }
            v4i take;
            if (pass == 0) {
                sc = v_sel(b2 != zero, a / b2, zero);
                best = sc * a;
                take = all;
            } else {
                take = (b2 > zero) & (a * a > best * b2);
                sc = v_sel(take, a / b2, sc);
                best = v_sel(take, sc * a, best);
            }
            for (int i = 0; i < 16; i++) Lb[i] = v_sel(take, Lc[i], Lb[i]);
        }
        for (int j = 0; j < NL; j++) {
            const int sb = g + j;
            if (fabsf(mxv[j]) < 1e-15f) {   /* the reference's early return */
                scales[sb] = 0.f;
                for (int i = 0; i < 16; i++) L[16 * sb + i] = 0;
                continue;
            }
            scales[sb] = sc[j];
            for (int i = 0; i < 16; i++) L[16 * sb + i] = (int8_t)((int)Lb[i][j] + nmax);
        }
    }
}
#undef NL
#undef VINL

static void f_q4_K(const float *x, uint8_t *b) { q4_K_impl(x, b, 1); }
static void f_q5_K(const float *x, uint8_t *b) { q5_K_impl(x, b, 1); }
static void f_q6_K(const float *x, uint8_t *b) { q6_K_impl(x, b, 1); }

static size_t quantize_blocks(dg_dtype dt, const float *src, void *dst, int64_t n, const float *imatrix, int fast) {
    void (*fn)(const float *, uint8_t *);
    switch (dt) {
    case DG_Q4_0: fn = q_q4_0; break;
    case DG_Q4_1: fn = q_q4_1; break;
    case DG_Q5_0: fn = q_q5_0; break;
    case DG_Q5_1: fn = q_q5_1; break;
    case DG_Q8_0: fn = q_q8_0; break;
    case DG_IQ4_NL: fn = q_iq4_nl; break;
    case DG_Q2_K: fn = q_q2_K; break;
    case DG_Q3_K: fn = q_q3_K; break;
    case DG_Q4_K: fn = fast ? f_q4_K : q_q4_K; break;
    case DG_Q5_K: fn = fast ? f_q5_K : q_q5_K; break;
    case DG_Q6_K: fn = fast ? f_q6_K : q_q6_K; break;
    default: return 0;
    }
    const int64_t blk = dg_gguf_block_elems(dt);
    const size_t bb = dg_gguf_block_bytes(dt);
    if (imatrix || n < 0 || n % blk) return 0;
    uint8_t *p = dst;
    for (int64_t i = 0; i < n / blk; i++) fn(src + i * blk, p + (size_t)i * bb);
    return (size_t)(n / blk) * bb;
}

size_t dg_quantize_gguf(dg_dtype dt, const float *src, void *dst, int64_t n, const float *imatrix) {
    return quantize_blocks(dt, src, dst, n, imatrix, 0);
}

size_t dg_quantize_gguf_fast(dg_dtype dt, const float *src, void *dst, int64_t n, const float *imatrix) {
    return quantize_blocks(dt, src, dst, n, imatrix, 1);
}

/* ===== activation quantizers ===== */

dg_act_type dg_gguf_act_type(dg_dtype dt) {
    switch (dt) {
    case DG_Q4_1: case DG_Q5_1: return DG_ACT_Q8_1;
    case DG_Q2_K: case DG_Q3_K: case DG_Q4_K: case DG_Q5_K: case DG_Q6_K: return DG_ACT_Q8_K;
    default: return DG_ACT_Q8_0;
    }
}

int dg_act_block_elems(dg_act_type at) { return at == DG_ACT_Q8_K ? QKK : QK; }

size_t dg_act_block_bytes(dg_act_type at) {
    return at == DG_ACT_Q8_K ? sizeof(dg_block_q8_K) : at == DG_ACT_Q8_1 ? sizeof(dg_block_q8_1) : sizeof(dg_block_q8_0);
}

void dg_quantize_act_q8_0(const float *x, dg_block_q8_0 *y, int64_t n) {
    uint8_t b[34];
    for (int64_t i = 0; i < n / QK; i++) {
        q_q8_0(x + i * QK, b);
        memcpy(&y[i].d, b, 2);
        memcpy(y[i].qs, b + 2, 32);
    }
}

void dg_quantize_act_q8_1(const float *x, dg_block_q8_1 *y, int64_t n) {
    uint8_t b[34];
    for (int64_t i = 0; i < n / QK; i++) {
        q_q8_0(x + i * QK, b);
        memcpy(&y[i].d, b, 2);
        memcpy(y[i].qs, b + 2, 32);
        int sum = 0;
        for (int j = 0; j < 32; j++) sum += y[i].qs[j];
        /* the sum times the unrounded scale d, as ggml computes it */
        float amax = 0.0f;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[i * QK + j]));
        y[i].s = dg_f32_to_f16(sum * (amax / 127));
    }
}

/* Q8_K: iscale = -127 / (value of largest magnitude), q = min(127, nearest_int(iscale * x)), d =
 * 1 / iscale kept as a float. */
void dg_quantize_act_q8_K(const float *x, dg_block_q8_K *y, int64_t n) {
    for (int64_t i = 0; i < n / QKK; i++, x += QKK) {
        float max = 0, amax = 0;
        for (int j = 0; j < QKK; j++) {
            const float ax = fabsf(x[j]);
            if (ax > amax) { amax = ax; max = x[j]; }
        }
        if (!amax) {
            memset(&y[i], 0, sizeof(y[i]));
            continue;
        }
        const float iscale = -127.f / max;
        for (int j = 0; j < QKK; j++) y[i].qs[j] = (int8_t)imin(127, nearest_int(iscale * x[j]));
        for (int j = 0; j < 16; j++) {
            int sum = 0;
            for (int k = 0; k < 16; k++) sum += y[i].qs[16 * j + k];
            y[i].bsums[j] = (int16_t)sum;
        }
        y[i].d = 1 / iscale;
    }
}

void dg_quantize_act(dg_act_type at, const float *x, void *dst, int64_t n) {
    if (at == DG_ACT_Q8_K) dg_quantize_act_q8_K(x, dst, n);
    else if (at == DG_ACT_Q8_1) dg_quantize_act_q8_1(x, dst, n);
    else dg_quantize_act_q8_0(x, dst, n);
}

/* ===== integer dot products ===== */

/* 32-element weight blocks against Q8_0 (or Q8_1 for the formats with a min m: + m * s, s = d_a * sum) */
static float dot32(dg_dtype dt, int64_t n, const void *w, const void *act) {
    const size_t bb = dg_gguf_block_bytes(dt);
    const int with_min = dt == DG_Q4_1 || dt == DG_Q5_1;
    const uint8_t *b = w;
    float sum = 0;
    int q[32];
    for (int64_t i = 0; i < n / QK; i++, b += bb) {
        const int8_t *aq;
        float ad, as = 0;
        if (with_min) {
            const dg_block_q8_1 *a = (const dg_block_q8_1 *)act + i;
            aq = a->qs;
            ad = dg_f16_to_f32(a->d);
            as = dg_f16_to_f32(a->s);
        } else {
            const dg_block_q8_0 *a = (const dg_block_q8_0 *)act + i;
            aq = a->qs;
            ad = dg_f16_to_f32(a->d);
        }
        codes32(dt, b, q);
        int sumi = 0;
        for (int j = 0; j < 32; j++) sumi += q[j] * aq[j];
        sum += sumi * (ld_h(b) * ad);
        if (with_min) sum += ld_h(b + 2) * as;
    }
    return sum;
}

float dg_vec_dot_q4_0_q8(int64_t n, const void *w, const dg_block_q8_0 *a) { return dot32(DG_Q4_0, n, w, a); }
float dg_vec_dot_q4_1_q8(int64_t n, const void *w, const dg_block_q8_1 *a) { return dot32(DG_Q4_1, n, w, a); }
float dg_vec_dot_q5_0_q8(int64_t n, const void *w, const dg_block_q8_0 *a) { return dot32(DG_Q5_0, n, w, a); }
float dg_vec_dot_q5_1_q8(int64_t n, const void *w, const dg_block_q8_1 *a) { return dot32(DG_Q5_1, n, w, a); }
float dg_vec_dot_q8_0_q8(int64_t n, const void *w, const dg_block_q8_0 *a) { return dot32(DG_Q8_0, n, w, a); }
float dg_vec_dot_iq4_nl_q8(int64_t n, const void *w, const dg_block_q8_0 *a) { return dot32(DG_IQ4_NL, n, w, a); }

/* K-quants against Q8_K: integer sums per sub-block times the integer sub-block scale; the min term
 * uses the activation block's 16-element sums. */
float dg_vec_dot_q2_K_q8(int64_t n, const void *w, const dg_block_q8_K *a) {
    const uint8_t *b = w;
    float sum = 0;
    for (int64_t i = 0; i < n / QKK; i++, b += 84, a++) {
        const uint8_t *sc = b, *qs = b + 16;
        int sumi = 0, summ = 0;
        for (int is = 0; is < 16; is++) summ += (sc[is] >> 4) * a->bsums[is];
        for (int h = 0; h < 2; h++)
            for (int s = 0; s < 4; s++)
                for (int half = 0; half < 2; half++) {
                    int si = 0;
                    for (int l = 16 * half; l < 16 * half + 16; l++)
                        si += ((qs[32 * h + l] >> (2 * s)) & 3) * a->qs[128 * h + 32 * s + l];
                    sumi += (sc[8 * h + 2 * s + half] & 0xF) * si;
                }
        sum += a->d * (ld_h(b + 80) * sumi - ld_h(b + 82) * summ);
    }
    return sum;
}

float dg_vec_dot_q3_K_q8(int64_t n, const void *w, const dg_block_q8_K *a) {
    const uint8_t *b = w;
    float sum = 0;
    for (int64_t i = 0; i < n / QKK; i++, b += 110, a++) {
        const uint8_t *hm = b, *qs = b + 32, *sc = b + 96;
        int sumi = 0;
        for (int h = 0; h < 2; h++)
            for (int s = 0; s < 4; s++)
                for (int half = 0; half < 2; half++) {
                    int si = 0;
                    for (int l = 16 * half; l < 16 * half + 16; l++) {
                        const int q = ((qs[32 * h + l] >> (2 * s)) & 3) - ((hm[l] >> (4 * h + s)) & 1 ? 0 : 4);
                        si += q * a->qs[128 * h + 32 * s + l];
                    }
                    sumi += (scale_q3k(8 * h + 2 * s + half, sc) - 32) * si;
                }
        sum += a->d * ld_h(b + 108) * sumi;
    }
    return sum;
}

/* Q4_K / Q5_K (qh_off 16, qs at 48) against Q8_K: per 32 sub-block the integer sum times the 6-bit
 * scale, and the min times the sum of the activation's two 16-element sums. */
static float dot_k45(int64_t n, const uint8_t *b, const dg_block_q8_K *a, size_t bb, int five) {
    float sum = 0;
    for (int64_t i = 0; i < n / QKK; i++, b += bb, a++) {
        const uint8_t *s = b + 4, *qh = b + 16, *qs = b + (five ? 48 : 16);
        int sumi = 0, summ = 0;
        for (int c = 0; c < 4; c++) {
            uint8_t sc, m;
            int s0 = 0, s1 = 0;
            for (int l = 0; l < 32; l++) {
                const int h0 = five ? ((qh[l] >> (2 * c)) & 1) << 4 : 0, h1 = five ? ((qh[l] >> (2 * c + 1)) & 1) << 4 : 0;
                s0 += ((qs[32 * c + l] & 0xF) | h0) * a->qs[64 * c + l];
                s1 += ((qs[32 * c + l] >> 4) | h1) * a->qs[64 * c + 32 + l];
            }
            scale_min_k4(2 * c, s, &sc, &m);
            sumi += sc * s0;
            summ += m * (a->bsums[4 * c] + a->bsums[4 * c + 1]);
            scale_min_k4(2 * c + 1, s, &sc, &m);
            sumi += sc * s1;
            summ += m * (a->bsums[4 * c + 2] + a->bsums[4 * c + 3]);
        }
        sum += a->d * (ld_h(b) * sumi - ld_h(b + 2) * summ);
    }
    return sum;
}

float dg_vec_dot_q4_K_q8(int64_t n, const void *w, const dg_block_q8_K *a) { return dot_k45(n, w, a, 144, 0); }
float dg_vec_dot_q5_K_q8(int64_t n, const void *w, const dg_block_q8_K *a) { return dot_k45(n, w, a, 176, 1); }

float dg_vec_dot_q6_K_q8(int64_t n, const void *w, const dg_block_q8_K *a) {
    const uint8_t *b = w;
    float sum = 0;
    for (int64_t i = 0; i < n / QKK; i++, b += 210, a++) {
        int sumi = 0;
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = b + 64 * h, *qh = b + 128 + 32 * h;
            const int8_t *sc = (const int8_t *)(b + 192 + 8 * h);
            const int8_t *aq = a->qs + 128 * h;
            for (int half = 0; half < 2; half++) {
                int s1 = 0, s2 = 0, s3 = 0, s4 = 0;
                for (int l = 16 * half; l < 16 * half + 16; l++) {
                    s1 += (((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32) * aq[l];
                    s2 += (((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32) * aq[l + 32];
                    s3 += (((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32) * aq[l + 64];
                    s4 += (((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32) * aq[l + 96];
                }
                sumi += sc[half] * s1 + sc[half + 2] * s2 + sc[half + 4] * s3 + sc[half + 6] * s4;
            }
        }
        sum += a->d * ld_h(b + 208) * sumi;
    }
    return sum;
}

float dg_vec_dot_gguf(dg_dtype dt, int64_t n, const void *w, const void *act) {
    switch (dt) {
    case DG_Q4_0: return dg_vec_dot_q4_0_q8(n, w, act);
    case DG_Q4_1: return dg_vec_dot_q4_1_q8(n, w, act);
    case DG_Q5_0: return dg_vec_dot_q5_0_q8(n, w, act);
    case DG_Q5_1: return dg_vec_dot_q5_1_q8(n, w, act);
    case DG_Q8_0: return dg_vec_dot_q8_0_q8(n, w, act);
    case DG_IQ4_NL: return dg_vec_dot_iq4_nl_q8(n, w, act);
    case DG_Q2_K: return dg_vec_dot_q2_K_q8(n, w, act);
    case DG_Q3_K: return dg_vec_dot_q3_K_q8(n, w, act);
    case DG_Q4_K: return dg_vec_dot_q4_K_q8(n, w, act);
    case DG_Q5_K: return dg_vec_dot_q5_K_q8(n, w, act);
    case DG_Q6_K: return dg_vec_dot_q6_K_q8(n, w, act);
    default: return 0.f;
    }
}
