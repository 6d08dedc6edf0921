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
#include "kernels/gemm_impl.h"

#define T_512 __attribute__((target("avx512f,avx512bw,avx512vl,f16c")))

T_512 static inline float ld_h(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

/* 16 unsigned bytes to 16 floats */
T_512 static inline __m512 u8f(__m128i b) { return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(b)); }
T_512 static inline __m512 i8f(__m128i b) { return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b)); }

#define AI __attribute__((always_inline))
#define T_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,f16c")))

static inline void scale_min_k4(int j, const uint8_t *s, uint8_t *sc, uint8_t *m) {
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (uint8_t)((s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4));
        *m = (uint8_t)((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
    }
}

/* the float32 dequantizers: 32 values stored at y + o */
T_512 static inline AI void st32_f32(float *y, uint16_t *yb, int o, __m512 lo, __m512 hi) {
    (void)yb;
    _mm512_storeu_ps(y + o, lo);
    _mm512_storeu_ps(y + o + 16, hi);
}
#define DQ(n) n##_f32
#define DQ_T T_512
#include "kernels/quants_x86_dq.inc"
#undef DQ
#undef DQ_T

/* the bf16 tile-row dequantizers (AMX panels): 32 values rounded to bf16 by vcvtne2ps2bf16 (nearest
 * even, denormals as zero: the AMX path's conversion) as one 64-byte tile row at yb + (o / 32) * 1024,
 * the tile-row position of element o (yb is the block's first element) */
T_BF16 static inline AI void st32_bf(float *y, uint16_t *yb, int o, __m512 lo, __m512 hi) {
    (void)y;
    _mm512_storeu_si512((void *)(yb + (o >> 5) * 1024), (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
}
/* (only the Q8_0 and Q6_K instances are used: Q4_K, Q5_K and Q5_0 go by table, bq_* below) */
#define DQ(n) n##_bf
#define DQ_T T_BF16
#include "kernels/quants_x86_dq.inc"
#undef DQ
#undef DQ_T

T_512 static void dq_q8_0(const uint8_t *b, float *y) { dq_q8_0_f32(b, y, NULL); }
T_512 static void dq_q5_0(const uint8_t *b, float *y) { dq_q5_0_f32(b, y, NULL); }
T_512 static void dq_q6_K(const uint8_t *b, float *y) { dq_q6_K_f32(b, y, NULL); }
T_512 static void dq_q4_K(const uint8_t *b, float *y) { dq_k45_f32(b, NULL, b + 16, y, NULL); }
T_512 static void dq_q5_K(const uint8_t *b, float *y) { dq_k45_f32(b, b + 16, b + 48, y, NULL); }
T_BF16 static inline AI void bq_q8_0(const uint8_t *b, uint16_t *y) { dq_q8_0_bf(b, NULL, y); }
T_BF16 static inline AI void bq_q6_K(const uint8_t *b, uint16_t *y) { dq_q6_K_bf(b, NULL, y); }

/* The 4- and 5-bit types by table: a block's (or sub-block's) 16 or 32 possible values are computed
 * once with exactly the per-element arithmetic above, rounded to bf16 by the same instruction, and
 * every element is then one vpermw lookup of its code: the same bf16 values at a third of the work. */
T_BF16 static inline AI __m512i lut32(__m512 lo, __m512 hi) { return (__m512i)_mm512_cvtne2ps_pbh(hi, lo); }
/* 32 codes (bytes) to their table entries, stored as one tile row */
T_BF16 static inline AI void lut_st(uint16_t *dst, __m256i codes, __m512i tab) {
    _mm512_storeu_si512((void *)dst, _mm512_permutexvar_epi16(_mm512_cvtepu8_epi16(codes), tab));
}

/* Q5_0: code = nibble | 5th bit << 4 (0..31), value (code - 16) * d */
T_BF16 static inline AI void bq_q5_0(const uint8_t *b, uint16_t *y) {
    const __m512 d = _mm512_set1_ps(ld_h(b));
    const __m512 k0 = _mm512_setr_ps(-16, -15, -14, -13, -12, -11, -10, -9, -8, -7, -6, -5, -4, -3, -2, -1);
    const __m512 k1 = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i tab = lut32(_mm512_mul_ps(k0, d), _mm512_mul_ps(k1, d));
    uint32_t qh;
    memcpy(&qh, b + 2, 4);
    const __m128i qs = _mm_loadu_si128((const __m128i *)(b + 6));
    const __m128i lo = _mm_and_si128(qs, _mm_set1_epi8(0xF)), hi = _mm_and_si128(_mm_srli_epi16(qs, 4), _mm_set1_epi8(0xF));
    __m256i c = _mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1);
    c = _mm256_mask_add_epi8(c, (__mmask32)qh, c, _mm256_set1_epi8(16));
    lut_st(y, c, tab);
}

/* Q5_K: per 32-element sub-block, value (d * sc) * code - dmin * m, code 0..31 (the nibble and its
 * fifth bit from qh) */
T_BF16 static inline AI void bq_q5_K(const uint8_t *b, uint16_t *y) {
    const uint8_t *qh = b + 16, *qs = b + 48;
    const float d = ld_h(b), dmin = ld_h(b + 2);
    const uint8_t *s = b + 4;
    const __m512 k0 = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512 k1 = _mm512_add_ps(k0, _mm512_set1_ps(16.0f));
    const __m256i m4 = _mm256_set1_epi8(0xF);
    const __m256i hb = _mm256_loadu_si256((const __m256i *)(const void *)qh);
    for (int c = 0; c < 4; c++) {
        __m256i q = _mm256_loadu_si256((const __m256i *)(const void *)(qs + 32 * c));
        __m256i lo = _mm256_and_si256(q, m4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
        lo = _mm256_mask_add_epi8(lo, _mm256_test_epi8_mask(hb, _mm256_set1_epi8((char)(1 << (2 * c)))), lo, _mm256_set1_epi8(16));
        hi = _mm256_mask_add_epi8(hi, _mm256_test_epi8_mask(hb, _mm256_set1_epi8((char)(1 << (2 * c + 1)))), hi, _mm256_set1_epi8(16));
        for (int half = 0; half < 2; half++) {
            uint8_t sc, m;
            scale_min_k4(2 * c + half, s, &sc, &m);
            const __m512 dv = _mm512_set1_ps(d * sc), mv = _mm512_set1_ps(dmin * m);
            const __m512i tab = lut32(_mm512_sub_ps(_mm512_mul_ps(dv, k0), mv), _mm512_sub_ps(_mm512_mul_ps(dv, k1), mv));
            lut_st(y + (2 * c + half) * 1024, half ? hi : lo, tab);
        }
    }
}
/* Q4_K with the 8 scales and mins unpacked together (SWAR on the 12 scale bytes) and scaled as two
 * 8-float vectors, each sub-block's pair broadcast from them; one table per two sub-blocks (the 16
 * values of sub-block 2c in entries 0-15, of 2c+1 in 16-31, the high nibbles' codes offset by 16).
 * The same products as the scalar reference (d * sc rounded once, then * code, then - dmin * m): the
 * same bits.
 * 0.156 -> 0.119 ns per weight on one thread; a layer's 128 gate_up experts 16-21 % faster (in-process A/B).
 * The scales are broadcast from memory and each 32 bytes' codes widened to 16 bits once for both
 * nibbles (16 vpermps and 4 vpmovzxbw fewer per super-block, on port 5 with the lookups): a layer's
 * gate_up 0.97-1.0x, same bits. */
T_BF16 static inline AI void bq_q4_K(const uint8_t *b, uint16_t *y) {
    const float d = ld_h(b), dmin = ld_h(b + 2);
    uint32_t a, bs, c;
    memcpy(&a, b + 4, 4);
    memcpy(&bs, b + 8, 4);
    memcpy(&c, b + 12, 4);
    const uint64_t sc = (uint64_t)(a & 0x3f3f3f3fu) | (uint64_t)((c & 0x0f0f0f0fu) | (((a >> 6) & 0x03030303u) << 4)) << 32;
    const uint64_t mn = (uint64_t)(bs & 0x3f3f3f3fu) | (uint64_t)(((c >> 4) & 0x0f0f0f0fu) | (((bs >> 6) & 0x03030303u) << 4)) << 32;
    const __m256 dsc = _mm256_mul_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)sc))));
    const __m256 dmn = _mm256_mul_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)mn))));
    /* the scales broadcast from memory (load ports) rather than by vpermps: port 5, which the table
     * lookups need, was the busiest */
    __attribute__((aligned(32))) float sm[16];
    _mm256_store_ps(sm, dsc);
    _mm256_store_ps(sm + 8, dmn);
    const __m512 k0 = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i m4 = _mm512_set1_epi16(0xF), s16 = _mm512_set1_epi16(16);
    for (int cc = 0; cc < 4; cc++) {
        /* the 32 bytes' codes as 16-bit lanes once, both nibbles from them */
        const __m512i q = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(const void *)(b + 16 + 32 * cc)));
        const __m512i lo = _mm512_and_si512(q, m4), hi = _mm512_or_si512(_mm512_srli_epi16(q, 4), s16);
        const __m512 d0 = _mm512_set1_ps(sm[2 * cc]), d1 = _mm512_set1_ps(sm[2 * cc + 1]);
        const __m512 m0 = _mm512_set1_ps(sm[8 + 2 * cc]), m1 = _mm512_set1_ps(sm[8 + 2 * cc + 1]);
        const __m512i tab = lut32(_mm512_sub_ps(_mm512_mul_ps(d0, k0), m0), _mm512_sub_ps(_mm512_mul_ps(d1, k0), m1));
        _mm512_storeu_si512((void *)(y + (2 * cc) * 1024), _mm512_permutexvar_epi16(lo, tab));
        _mm512_storeu_si512((void *)(y + (2 * cc + 1) * 1024), _mm512_permutexvar_epi16(hi, tab));
    }
}

/* n elements (a multiple of the block, and so of 32) of type dt straight into one weight row of the
 * AMX panel layout: element e at out[(e / 32) * 1024 + e % 32], rounded to bf16 (nearest even): the
 * same values as dequantizing to float32 and rounding with vcvtneps2bf16. Returns 0 if there is no
 * kernel for dt. Needs AVX512-BF16 (every AMX CPU has it). */
/* one loop per type with its block kernel inlined (a call per 32-value Q8_0 block cost more than the
 * block: 0.26-0.30 -> 0.13 ns per weight) */
#define BQ_ROW(name, blkfn, BLK, BB)                                                              \
    T_BF16 static void name(const uint8_t *p, uint16_t *out, int64_t nb) {                       \
        for (int64_t i = 0; i < nb; i++) blkfn(p + (size_t)i * (BB), out + (i * (BLK) / 32) * 1024); \
    }
BQ_ROW(bq_row_q8_0, bq_q8_0, 32, 34)
BQ_ROW(bq_row_q5_0, bq_q5_0, 32, 22)
BQ_ROW(bq_row_q4_K, bq_q4_K, 256, 144)
BQ_ROW(bq_row_q5_K, bq_q5_K, 256, 176)
BQ_ROW(bq_row_q6_K, bq_q6_K, 256, 210)
#undef BQ_ROW

dg_bf16tiles_fn dg_bf16tiles_row_fn(dg_dtype dt) {
    if (!dg_cpu_has_avx512bf16()) return NULL;
    switch (dt) {
    case DG_Q8_0: return bq_row_q8_0;
    case DG_Q5_0: return bq_row_q5_0;
    case DG_Q4_K: return bq_row_q4_K;
    case DG_Q5_K: return bq_row_q5_K;
    case DG_Q6_K: return bq_row_q6_K;
    default: return NULL;
    }
}

T_BF16 int dg_dequant_gguf_bf16tiles_avx512(dg_dtype dt, const void *blocks, uint16_t *out, int64_t n) {
    const dg_bf16tiles_fn fn = dg_bf16tiles_row_fn(dt);
    if (!fn) return 0;
    fn(blocks, out, n / dg_gguf_block_elems(dt));
    return 1;
}

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

#if defined(__x86_64__)
/* ===== integer dot products with AVX512-VNNI (vpdpbusd: u8 weights codes x s8 activations) =====
 * One weight row against nt activation rows quantized by dg_quantize_act. The integer sums of each
 * (sub-)block are exact; the float scaling of each block and the accumulation across blocks are the
 * scalar reference's (dg_vec_dot_*_q8 in quants.c), operation for operation, so the results are
 * bit-identical to it. */

#define T_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,f16c")))

T_VNNI static inline int hsum_i32(__m512i v) { return _mm512_reduce_add_epi32(v); }

/* Q4_K / Q5_K x Q8_K */
T_VNNI static void vnni_k45(const uint8_t *w, int64_t nb, const dg_block_q8_K *a0, size_t astride, int nt, float *y,
                            int64_t ldy, int five) {
    const size_t bb = five ? 176 : 144;
    for (int t = 0; t < nt; t++) y[t * ldy] = 0.0f;
    const __m256i m4 = _mm256_set1_epi8(0xF);
    for (int64_t i = 0; i < nb; i++) {
        const uint8_t *b = w + i * bb, *s = b + 4, *qh = b + 16, *qs = b + (five ? 48 : 16);
        const float d = ld_h(b), dmin = ld_h(b + 2);
        __m512i wc[4], scv[4];
        int mins[8];
        for (int c = 0; c < 4; c++) {
            const __m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * c));
            __m256i lo = _mm256_and_si256(q, m4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
            if (five) {
                const __m256i hb = _mm256_loadu_si256((const __m256i *)qh);
                lo = _mm256_mask_add_epi8(lo, _mm256_test_epi8_mask(hb, _mm256_set1_epi8((char)(1 << (2 * c)))), lo, _mm256_set1_epi8(16));
                hi = _mm256_mask_add_epi8(hi, _mm256_test_epi8_mask(hb, _mm256_set1_epi8((char)(1 << (2 * c + 1)))), hi, _mm256_set1_epi8(16));
            }
            wc[c] = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
            uint8_t sc0, m0, sc1, m1;
            scale_min_k4(2 * c, s, &sc0, &m0);
            scale_min_k4(2 * c + 1, s, &sc1, &m1);
            scv[c] = _mm512_mask_blend_epi32((__mmask16)0xFF00, _mm512_set1_epi32(sc0), _mm512_set1_epi32(sc1));
            mins[2 * c] = m0;
            mins[2 * c + 1] = m1;
        }
        for (int t = 0; t < nt; t++) {
            const dg_block_q8_K *a = (const dg_block_q8_K *)((const uint8_t *)a0 + t * astride) + i;
            __m512i acc = _mm512_setzero_si512();
            for (int c = 0; c < 4; c++) {
                const __m512i dp = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wc[c], _mm512_loadu_si512((const void *)(a->qs + 64 * c)));
                acc = _mm512_add_epi32(acc, _mm512_mullo_epi32(dp, scv[c]));
            }
            const int sumi = hsum_i32(acc);
            int summ = 0;
            for (int j = 0; j < 8; j++) summ += mins[j] * (a->bsums[2 * j] + a->bsums[2 * j + 1]);
            y[t * ldy] += a->d * (d * sumi - dmin * summ);
        }
    }
}

/* Q6_K x Q8_K: codes 0..63 as u8 (the -32 offset becomes -32 * sum of the activations per 16) */
T_VNNI static void vnni_q6_K(const uint8_t *w, int64_t nb, const dg_block_q8_K *a0, size_t astride, int nt, float *y, int64_t ldy) {
    for (int t = 0; t < nt; t++) y[t * ldy] = 0.0f;
    const __m128i m4 = _mm_set1_epi8(0xF), m3 = _mm_set1_epi8(3);
    for (int64_t i = 0; i < nb; i++) {
        const uint8_t *b = w + i * 210;
        const float d = ld_h(b + 208);
        /* 16 groups of 16 elements (element order of the block), each with its signed scale */
        __m512i wc[4], scv[4];
        int sc16[16];
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = b + 64 * h, *qhp = b + 128 + 32 * h;
            const int8_t *sc = (const int8_t *)(b + 192 + 8 * h);
            __m128i g[8];   /* elements 128h + 16k .. +16 for k = 0..7 */
            for (int gg = 0; gg < 2; gg++) {
                const __m128i a = _mm_loadu_si128((const __m128i *)(ql + 16 * gg));
                const __m128i bq = _mm_loadu_si128((const __m128i *)(ql + 32 + 16 * gg));
                const __m128i hh = _mm_loadu_si128((const __m128i *)(qhp + 16 * gg));
                g[gg] = _mm_or_si128(_mm_and_si128(a, m4), _mm_slli_epi16(_mm_and_si128(hh, m3), 4));
                g[2 + gg] = _mm_or_si128(_mm_and_si128(bq, m4), _mm_slli_epi16(_mm_and_si128(_mm_srli_epi16(hh, 2), m3), 4));
                g[4 + gg] = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(a, 4), m4), _mm_slli_epi16(_mm_and_si128(_mm_srli_epi16(hh, 4), m3), 4));
                g[6 + gg] = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(bq, 4), m4), _mm_slli_epi16(_mm_and_si128(_mm_srli_epi16(hh, 6), m3), 4));
            }
            for (int k = 0; k < 2; k++) {   /* 64 elements per zmm: groups 4k .. 4k+3 */
                __m512i z = _mm512_castsi128_si512(g[4 * k]);
                z = _mm512_inserti32x4(z, g[4 * k + 1], 1);
                z = _mm512_inserti32x4(z, g[4 * k + 2], 2);
                z = _mm512_inserti32x4(z, g[4 * k + 3], 3);
                wc[2 * h + k] = z;
            }
            /* group 16-element index k uses scale k/2*... : element l (0..31 in quarter q) has scale is = l/16 + 2q */
            for (int k = 0; k < 8; k++) sc16[8 * h + k] = sc[(k % 2) + 2 * (k / 2)];
        }
        for (int z = 0; z < 4; z++)
            scv[z] = _mm512_set_epi32(sc16[4 * z + 3], sc16[4 * z + 3], sc16[4 * z + 3], sc16[4 * z + 3], sc16[4 * z + 2], sc16[4 * z + 2],
                                      sc16[4 * z + 2], sc16[4 * z + 2], sc16[4 * z + 1], sc16[4 * z + 1], sc16[4 * z + 1], sc16[4 * z + 1],
                                      sc16[4 * z], sc16[4 * z], sc16[4 * z], sc16[4 * z]);
        for (int t = 0; t < nt; t++) {
            const dg_block_q8_K *a = (const dg_block_q8_K *)((const uint8_t *)a0 + t * astride) + i;
            __m512i acc = _mm512_setzero_si512();
            for (int z = 0; z < 4; z++) {
                const __m512i dp = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wc[z], _mm512_loadu_si512((const void *)(a->qs + 64 * z)));
                acc = _mm512_add_epi32(acc, _mm512_mullo_epi32(dp, scv[z]));
            }
            int off = 0;   /* the -32 of every code: -32 * scale * (sum of the group's activations) */
            for (int k = 0; k < 16; k++) off += sc16[k] * a->bsums[k];
            const int sumi = hsum_i32(acc) - 32 * off;
            y[t * ldy] += a->d * d * sumi;
        }
    }
}

/* Q8_0 / Q5_0 x Q8_0: codes made unsigned (+128 / +16), the offset removed with the activation sum */
T_VNNI static void vnni_32(dg_dtype dt, const uint8_t *w, int64_t nb, const dg_block_q8_0 *a0, size_t astride, int nt, float *y, int64_t ldy) {
    const size_t bb = dt == DG_Q8_0 ? 34 : 22;
    const int off = dt == DG_Q8_0 ? 128 : 16;
    for (int t = 0; t < nt; t++) y[t * ldy] = 0.0f;
    for (int64_t i = 0; i < nb; i += 2) {   /* two blocks (64 codes) per zmm when there are two */
        const int two = i + 1 < nb;
        __m256i c[2];
        float dw[2];
        for (int k = 0; k < 1 + two; k++) {
            const uint8_t *b = w + (i + k) * bb;
            dw[k] = ld_h(b);
            if (dt == DG_Q8_0) {
                c[k] = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(b + 2)), _mm256_set1_epi8((char)0x80));
            } else {
                uint32_t qh;
                memcpy(&qh, b + 2, 4);
                const __m128i qs = _mm_loadu_si128((const __m128i *)(b + 6));
                const __m128i lo = _mm_and_si128(qs, _mm_set1_epi8(0xF)), hi = _mm_and_si128(_mm_srli_epi16(qs, 4), _mm_set1_epi8(0xF));
                const __m128i l5 = _mm_or_si128(lo, _mm_maskz_mov_epi8((__mmask16)(qh & 0xFFFF), _mm_set1_epi8(16)));
                const __m128i h5 = _mm_or_si128(hi, _mm_maskz_mov_epi8((__mmask16)(qh >> 16), _mm_set1_epi8(16)));
                c[k] = _mm256_inserti128_si256(_mm256_castsi128_si256(l5), h5, 1);
            }
        }
        const __m512i wz = _mm512_inserti64x4(_mm512_castsi256_si512(c[0]), two ? c[1] : _mm256_setzero_si256(), 1);
        for (int t = 0; t < nt; t++) {
            const dg_block_q8_0 *a = (const dg_block_q8_0 *)((const uint8_t *)a0 + t * astride) + i;
            __m256i x0 = _mm256_loadu_si256((const __m256i *)a[0].qs);
            __m256i x1 = two ? _mm256_loadu_si256((const __m256i *)a[1].qs) : _mm256_setzero_si256();
            const __m512i xz = _mm512_inserti64x4(_mm512_castsi256_si512(x0), x1, 1);
            const __m512i dp = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wz, xz);
            /* the activation sums of each block, for the code offset */
            const __m512i xs = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8(1), xz);
            const int s0 = _mm512_mask_reduce_add_epi32(0x00FF, dp) - off * _mm512_mask_reduce_add_epi32(0x00FF, xs);
            y[t * ldy] += s0 * (dw[0] * _cvtsh_ss(a[0].d));
            if (two) {
                const int s1 = _mm512_mask_reduce_add_epi32((__mmask16)0xFF00, dp) - off * _mm512_mask_reduce_add_epi32((__mmask16)0xFF00, xs);
                y[t * ldy] += s1 * (dw[1] * _cvtsh_ss(a[1].d));
            }
        }
    }
}

T_VNNI int dg_vnni_row(dg_dtype dt, const uint8_t *w, int64_t K, const void *aq, size_t astride, int nt, float *y, int64_t ldy) {
    switch (dt) {
    case DG_Q4_K: vnni_k45(w, K / 256, aq, astride, nt, y, ldy, 0); return 1;
    case DG_Q5_K: vnni_k45(w, K / 256, aq, astride, nt, y, ldy, 1); return 1;
    case DG_Q6_K: vnni_q6_K(w, K / 256, aq, astride, nt, y, ldy); return 1;
    case DG_Q8_0: case DG_Q5_0: vnni_32(dt, w, K / 32, aq, astride, nt, y, ldy); return 1;
    default: return 0;
    }
}
#endif
