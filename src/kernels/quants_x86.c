#define _GNU_SOURCE
/*
 * quants_x86.c - AVX-512 dequantization of the GGUF block types a published DiffusionGemma file uses
 * (Q8_0, Q5_0, Q4_K, Q5_K, Q6_K), for the fast matmul's weight panels. Bit-exact with the scalar
 * reference in quants.c: the same products in the same order, each rounded once, no fused
 * multiply-add (tests/test_kernels.c compares them on random blocks).
 */
#if defined(__x86_64__)

#include <immintrin.h>
#include <string.h>

#include "kernels/kernels.h"
#include "kernels/quants.h"

#define T_512 __attribute__((target("avx512f,avx512bw,avx512vl,f16c")))

T_512 static inline float ld_h(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

/* 16 unsigned bytes to 16 floats */
T_512 static inline __m512 u8f(__m128i b) { return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(b)); }
T_512 static inline __m512 i8f(__m128i b) { return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b)); }

/* Q8_0: y = q * d */
T_512 static void dq_q8_0(const uint8_t *b, float *y) {
    const __m512 d = _mm512_set1_ps(ld_h(b));
    const __m128i *q = (const __m128i *)(b + 2);
    _mm512_storeu_ps(y, _mm512_mul_ps(i8f(_mm_loadu_si128(q)), d));
    _mm512_storeu_ps(y + 16, _mm512_mul_ps(i8f(_mm_loadu_si128(q + 1)), d));
}

/* Q5_0: q = (nibble | 5th bit << 4) - 16, y = q * d; element j < 16 low nibble of qs[j], j + 16 high */
T_512 static void dq_q5_0(const uint8_t *b, float *y) {
    const __m512 d = _mm512_set1_ps(ld_h(b));
    uint32_t qh;
    memcpy(&qh, b + 2, 4);
    const __m128i qs = _mm_loadu_si128((const __m128i *)(b + 6));
    const __m128i lo = _mm_and_si128(qs, _mm_set1_epi8(0xF)), hi = _mm_and_si128(_mm_srli_epi16(qs, 4), _mm_set1_epi8(0xF));
    const __m128i h0 = _mm_maskz_mov_epi8((__mmask16)(qh & 0xFFFF), _mm_set1_epi8(16));
    const __m128i h1 = _mm_maskz_mov_epi8((__mmask16)(qh >> 16), _mm_set1_epi8(16));
    const __m128i s16 = _mm_set1_epi8(16);
    _mm512_storeu_ps(y, _mm512_mul_ps(i8f(_mm_sub_epi8(_mm_or_si128(lo, h0), s16)), d));
    _mm512_storeu_ps(y + 16, _mm512_mul_ps(i8f(_mm_sub_epi8(_mm_or_si128(hi, h1), s16)), d));
}

static inline void scale_min_k4(int j, const uint8_t *s, uint8_t *sc, uint8_t *m) {
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (uint8_t)((s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4));
        *m = (uint8_t)((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
    }
}

/* Q4_K / Q5_K: 4 chunks of 64: y = (d * sc) * q - dmin * m per 32-element sub-block */
T_512 static void dq_k45(const uint8_t *b, const uint8_t *qh, const uint8_t *qs, float *y) {
    const float d = ld_h(b), dmin = ld_h(b + 2);
    const uint8_t *s = b + 4;
    const __m128i m4 = _mm_set1_epi8(0xF);
    for (int c = 0; c < 4; c++) {
        uint8_t sc, m;
        scale_min_k4(2 * c, s, &sc, &m);
        const __m512 d1 = _mm512_set1_ps(d * sc), m1 = _mm512_set1_ps(dmin * m);
        scale_min_k4(2 * c + 1, s, &sc, &m);
        const __m512 d2 = _mm512_set1_ps(d * sc), m2 = _mm512_set1_ps(dmin * m);
        for (int h = 0; h < 2; h++) {   /* 16 bytes at a time */
            const __m128i q = _mm_loadu_si128((const __m128i *)(qs + 32 * c + 16 * h));
            __m128i lo = _mm_and_si128(q, m4), hi = _mm_and_si128(_mm_srli_epi16(q, 4), m4);
            if (qh) {
                const __m128i hb = _mm_loadu_si128((const __m128i *)(qh + 16 * h));
                const __mmask16 k0 = _mm_test_epi8_mask(hb, _mm_set1_epi8((char)(1 << (2 * c))));
                const __mmask16 k1 = _mm_test_epi8_mask(hb, _mm_set1_epi8((char)(1 << (2 * c + 1))));
                lo = _mm_mask_add_epi8(lo, k0, lo, _mm_set1_epi8(16));
                hi = _mm_mask_add_epi8(hi, k1, hi, _mm_set1_epi8(16));
            }
            _mm512_storeu_ps(y + 64 * c + 16 * h, _mm512_sub_ps(_mm512_mul_ps(d1, u8f(lo)), m1));
            _mm512_storeu_ps(y + 64 * c + 32 + 16 * h, _mm512_sub_ps(_mm512_mul_ps(d2, u8f(hi)), m2));
        }
    }
}

/* Q6_K: y = (d * sc) * q with q = (4 low bits | 2 high bits << 4) - 32 */
T_512 static void dq_q6_K(const uint8_t *b, float *y) {
    const float d = ld_h(b + 208);
    const __m128i m4 = _mm_set1_epi8(0xF), m3 = _mm_set1_epi8(3), s32 = _mm_set1_epi8(32);
    for (int h = 0; h < 2; h++) {
        const uint8_t *ql = b + 64 * h, *qhp = b + 128 + 32 * h;
        const int8_t *sc = (const int8_t *)(b + 192 + 8 * h);
        float *yh = y + 128 * h;
        for (int g = 0; g < 2; g++) {   /* l = 16g .. 16g+15, scale index is = g */
            const __m128i a = _mm_loadu_si128((const __m128i *)(ql + 16 * g));
            const __m128i bq = _mm_loadu_si128((const __m128i *)(ql + 32 + 16 * g));
            const __m128i hh = _mm_loadu_si128((const __m128i *)(qhp + 16 * g));
            const __m128i q1 = _mm_sub_epi8(_mm_or_si128(_mm_and_si128(a, m4), _mm_slli_epi16(_mm_and_si128(hh, m3), 4)), s32);
            const __m128i q2 = _mm_sub_epi8(_mm_or_si128(_mm_and_si128(bq, m4), _mm_slli_epi16(_mm_and_si128(_mm_srli_epi16(hh, 2), m3), 4)), s32);
            const __m128i q3 = _mm_sub_epi8(_mm_or_si128(_mm_and_si128(_mm_srli_epi16(a, 4), m4), _mm_slli_epi16(_mm_and_si128(_mm_srli_epi16(hh, 4), m3), 4)), s32);
            const __m128i q4 = _mm_sub_epi8(_mm_or_si128(_mm_and_si128(_mm_srli_epi16(bq, 4), m4), _mm_slli_epi16(_mm_and_si128(_mm_srli_epi16(hh, 6), m3), 4)), s32);
            _mm512_storeu_ps(yh + 16 * g, _mm512_mul_ps(_mm512_set1_ps(d * sc[g]), i8f(q1)));
            _mm512_storeu_ps(yh + 32 + 16 * g, _mm512_mul_ps(_mm512_set1_ps(d * sc[g + 2]), i8f(q2)));
            _mm512_storeu_ps(yh + 64 + 16 * g, _mm512_mul_ps(_mm512_set1_ps(d * sc[g + 4]), i8f(q3)));
            _mm512_storeu_ps(yh + 96 + 16 * g, _mm512_mul_ps(_mm512_set1_ps(d * sc[g + 6]), i8f(q4)));
        }
    }
}

T_512 static void dq_q4_K(const uint8_t *b, float *y) { dq_k45(b, NULL, b + 16, y); }
T_512 static void dq_q5_K(const uint8_t *b, float *y) { dq_k45(b, b + 16, b + 48, y); }

/* n elements (a multiple of the block) of type dt; returns 0 if this file has no kernel for dt */
T_512 int dg_dequant_gguf_avx512(dg_dtype dt, const void *blocks, float *out, int64_t n) {
    void (*fn)(const uint8_t *, float *);
    switch (dt) {
    case DG_Q8_0: fn = dq_q8_0; break;
    case DG_Q5_0: fn = dq_q5_0; break;
    case DG_Q4_K: fn = dq_q4_K; break;
    case DG_Q5_K: fn = dq_q5_K; break;
    case DG_Q6_K: fn = dq_q6_K; break;
    default: return 0;
    }
    const int64_t blk = dg_gguf_block_elems(dt);
    const size_t bb = dg_gguf_block_bytes(dt);
    const uint8_t *p = blocks;
    for (int64_t i = 0; i < n / blk; i++) fn(p + (size_t)i * bb, out + i * blk);
    return 1;
}

#endif
