/*
 * kernels.h - every numeric primitive of the forward pass, scalar reference versions.
 *
 * These are the oracle: plain C, never optimised. Any fast path added later (SIMD, threads,
 * quantized, GPU) is tested against them and keeps them compiled.
 *
 * Conventions: activations are float32 arrays, row-major. Weights are views into the mmapped
 * checkpoint in F32, F16 or BF16; a weight matrix W is [rows = out_features, cols = in_features]
 * (nn.Linear layout) and y = x . W^T. Rounding of activations to the checkpoint dtype is done by
 * the caller with dg_round_act(), at the points where the reference rounds.
 */
#ifndef DG_KERNELS_H
#define DG_KERNELS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef enum { DG_F32 = 0, DG_F16 = 1, DG_BF16 = 2 } dg_dtype;

/* A weight matrix view: [rows, cols], row-major, contiguous. */
typedef struct {
    const void *data;
    dg_dtype dt;
    int64_t rows, cols;
} dg_mat;

/* A weight vector view. */
typedef struct {
    const void *data;
    dg_dtype dt;
    int64_t n;
} dg_vec;

static inline float dg_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* float32 -> bfloat16, round to nearest even (NaN stays NaN). */
static inline uint16_t dg_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float dg_f16_to_f32(uint16_t h);
uint16_t dg_f32_to_f16(float f);

static inline float dg_round_bf16(float f) { return dg_bf16_to_f32(dg_f32_to_bf16(f)); }
static inline float dg_round_f16(float f) { return dg_f16_to_f32(dg_f32_to_f16(f)); }

/* Element i of a weight array of dtype dt, as float. */
static inline float dg_wget(const void *data, dg_dtype dt, int64_t i) {
    switch (dt) {
    case DG_BF16: return dg_bf16_to_f32(((const uint16_t *)data)[i]);
    case DG_F16: return dg_f16_to_f32(((const uint16_t *)data)[i]);
    default: return ((const float *)data)[i];
    }
}

size_t dg_dtype_size(dg_dtype dt);

/* Round x[0..n) in place to the activation dtype (DG_F32: no-op). */
void dg_round_act(float *x, size_t n, dg_dtype act);
static inline float dg_round1(float f, dg_dtype act) {
    return act == DG_BF16 ? dg_round_bf16(f) : act == DG_F16 ? dg_round_f16(f) : f;
}

/* y[n, w->rows] = x[n, w->cols] . W^T, float32 accumulation. */
void dg_matmul_ref(float *y, const float *x, int n, const dg_mat *w);

/* RMSNorm of n rows of width dim: y = x * (mean(x^2) + eps)^-0.5 [* w], all in float32. w may be
 * NULL (the weightless norms: v_norm, router norm, self-conditioning post_norm). y may alias x. */
void dg_rmsnorm_ref(float *y, const float *x, int n, int dim, const dg_vec *w, float eps);

/* GELU, tanh approximation (gelu_pytorch_tanh). */
float dg_gelu_tanh(float x);

/* Softmax over x[0..n) in float32, in place. Returns nothing; the max is subtracted first. */
void dg_softmax_ref(float *x, int n);

/* Rotary embedding, half-split (rotate_half) layout, in place on one head vector x[d]:
 * out[i] = x[i]*cos[i] - x[i+d/2]*sin[i], out[i+d/2] = x[i+d/2]*cos[i] + x[i]*sin[i], each product
 * and the sum rounded to act (the reference applies it in the activation dtype). cos/sin have d/2
 * entries (already rounded to act). */
void dg_rope_ref(float *x, int d, const float *cos, const float *sin, dg_dtype act);

#endif
