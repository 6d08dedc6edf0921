/*
 * quants_mlx.c - MLX quantized matrices: scalar dequantization, bit-exact with mx.dequantize (see
 * quants_mlx.h for the layout and the arithmetic). Checked against PyPI mlx by tests/test_mlx.c on
 * tests/fixtures/mlx/dequant.safetensors (tools/reference/make_mlx_fixtures.py).
 */
#include "kernels/quants_mlx.h"

#include <math.h>
#include <string.h>

size_t dg_mlx_row_bytes(int bits, int64_t cols) { return (size_t)((cols * bits + 31) / 32) * 4; }

int dg_mlx_mode_bits(dg_dtype mode) {
    return mode == DG_MLX_MXFP4 || mode == DG_MLX_NVFP4 ? 4 : mode == DG_MLX_MXFP8 ? 8 : 0;
}

int dg_mlx_mode_group(dg_dtype mode) {
    return mode == DG_MLX_MXFP4 || mode == DG_MLX_MXFP8 ? 32 : mode == DG_MLX_NVFP4 ? 16 : 0;
}

/* ===== element decoders ===== */

float dg_e4m3_to_f32(uint8_t c) {
    const int e = (c >> 3) & 15, m = c & 7;
    float v;
    if (e == 15 && m == 7) v = NAN;                       /* E4M3FN: the only non-finite code */
    else if (e == 0) v = ldexpf((float)m, -9);            /* subnormal: m * 2^-9 */
    else v = ldexpf((float)(8 + m), e - 10);              /* (1 + m/8) * 2^(e-7) */
    return c & 0x80 ? -v : v;
}

float dg_e2m1_to_f32(uint8_t c) {
    static const float lut[16] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f,
                                  -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};
    return lut[c & 15];
}

/* 2^(s-127); MLX maps s = 0 to 2^-127 as well (its kernels build the bf16 0x0040), and s = 255 (NaN
 * in the OCP spec) comes out as 2^128 = inf, as in mlx's power(2, s - 127). */
float dg_e8m0_to_f32(uint8_t s) { return s == 0 ? ldexpf(1.0f, -127) : ldexpf(1.0f, (int)s - 127); }

/* Scale or bias i. MLX's safetensors writer does not pad its header, so an MLX file's tensors start
 * at any byte offset: every load here is unaligned-safe. */
static inline float load_param(const void *p, int sdt, size_t i) {
    const uint8_t *b = (const uint8_t *)p;
    if (sdt == DG_F32) {
        float f;
        memcpy(&f, b + 4 * i, 4);
        return f;
    }
    uint16_t h;
    memcpy(&h, b + 2 * i, 2);
    return sdt == DG_BF16 ? dg_bf16_to_f32(h) : dg_f16_to_f32(h);
}

/* Code j of a row: bits [j*bits, (j+1)*bits) of the row's little-endian, LSB-first bit stream. A code
 * spans at most two bytes (bits <= 8); the second is read only when the code reaches into it, so the
 * last code of a row never reads past the row. */
static inline unsigned code_at(const uint8_t *row, int64_t j, int bits) {
    const uint64_t bit = (uint64_t)j * (uint64_t)bits;
    const uint8_t *p = row + (bit >> 3);
    const unsigned sh = (unsigned)(bit & 7);
    unsigned v = (unsigned)p[0] >> sh;
    if (sh + (unsigned)bits > 8) v |= (unsigned)p[1] << (8 - sh);
    return v & ((1u << bits) - 1u);
}

/* scale * q + bias in the scale type T, as mlx's CPU graph does: multiply (float32, rounded to T), then
 * add (float32, rounded to T). Both float32 results are exact or innocuous double roundings for
 * T = F16/BF16 (24 >= 2p + 2), so this is also the correctly rounded T arithmetic. The two statements
 * must stay two roundings: -std=c11 keeps GCC from contracting them into an FMA, and clang only
 * contracts within one expression. */
static inline float affine1(unsigned q, float s, float b, int sdt) {
    float p = (float)q * s;
    if (sdt == DG_BF16) {
        p = dg_round_bf16(p);
        const float w = p + b;
        return dg_round_bf16(w);
    }
    if (sdt == DG_F16) {
        p = dg_round_f16(p);
        const float w = p + b;
        return dg_round_f16(w);
    }
    const float w = p + b;
    return w;
}

void dg_dequant_mlx(const dg_mat *w, int64_t r, int64_t c0, int64_t n, float *out) {
    const uint8_t *row = (const uint8_t *)w->data + (size_t)r * w->row_bytes;
    const dg_mlx_q *q = &w->mlx;
    const int G = q->group;
    const size_t gbase = (size_t)r * (size_t)(w->cols / G);   /* first scale of the row */
    const uint8_t *s8 = (const uint8_t *)q->scales;
    int64_t j = c0;
    const int64_t end = c0 + n;
    while (j < end) {
        const int64_t g = j / G;
        const int64_t gend = (g + 1) * G < end ? (g + 1) * G : end;
        const size_t gi = gbase + (size_t)g;
        switch (w->dt) {
        case DG_MLX_AFFINE: {
            const float s = load_param(q->scales, q->sdt, gi), b = load_param(q->biases, q->sdt, gi);
            for (; j < gend; j++) *out++ = affine1(code_at(row, j, q->bits), s, b, q->sdt);
            break;
        }
        case DG_MLX_MXFP4: {
            const float s = dg_e8m0_to_f32(s8[gi]);
            for (; j < gend; j++) *out++ = dg_e2m1_to_f32((uint8_t)(row[j >> 1] >> ((j & 1) * 4))) * s;
            break;
        }
        case DG_MLX_NVFP4: {
            const float s = dg_e4m3_to_f32(s8[gi]);
            for (; j < gend; j++) *out++ = dg_e2m1_to_f32((uint8_t)(row[j >> 1] >> ((j & 1) * 4))) * s;
            break;
        }
        case DG_MLX_MXFP8: {
            const float s = dg_e8m0_to_f32(s8[gi]);
            for (; j < gend; j++) *out++ = dg_e4m3_to_f32(row[j]) * s;
            break;
        }
        default:   /* not an MLX type: the binder never builds one */
            memset(out, 0, sizeof(float) * (size_t)(end - j));
            return;
        }
    }
}
