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

/*
 * Weight element types. F32/F16/BF16 are plain arrays. The GGUF block formats use ggml's block
 * layouts (src/kernels/quants.h). The MLX formats (src/kernels/quants_mlx.h) pack codes LSB-first
 * into uint32 words with separate per-group scales (and biases for affine).
 */
typedef enum {
    DG_F32 = 0, DG_F16 = 1, DG_BF16 = 2,
    /* GGUF / ggml blocks */
    DG_Q4_0, DG_Q4_1, DG_Q5_0, DG_Q5_1, DG_Q8_0,
    DG_Q2_K, DG_Q3_K, DG_Q4_K, DG_Q5_K, DG_Q6_K, DG_IQ4_NL,
    /* MLX quantization */
    DG_MLX_AFFINE, DG_MLX_MXFP4, DG_MLX_MXFP8, DG_MLX_NVFP4,
    DG_N_DTYPES
} dg_dtype;

/* MLX per-group parameters of a quantized matrix (dt is one of DG_MLX_*). */
typedef struct {
    const void *scales;     /* [rows, cols / group] */
    const void *biases;     /* [rows, cols / group], affine only (NULL otherwise) */
    int sdt;                /* element type of scales/biases: DG_F32, DG_F16, DG_BF16, or -1 for
                               uint8 (the E8M0 / E4M3 scales of the mx/nv fp modes) */
    int bits, group;
} dg_mlx_q;

/*
 * A weight matrix view: [rows, cols], row-major, row r at data + r * row_bytes. For block formats a
 * row is cols / block_size blocks. Build views with dg_mat_init (float and GGUF types) or the MLX
 * binder; never index data directly, use dg_dequant_range or a kernel.
 */
typedef struct {
    const void *data;
    dg_dtype dt;
    int64_t rows, cols;
    size_t row_bytes;
    dg_mlx_q mlx;           /* dt == DG_MLX_* only */
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

/* Size in bytes of one element of a float type (F32/F16/BF16); 0 for block / MLX types. */
size_t dg_dtype_size(dg_dtype dt);
/* Name of a type ("F32", "BF16", "Q4_K", "MLX_AFFINE", ...). */
const char *dg_dtype_name(dg_dtype dt);
/* Elements per block (1 for float types, 32 or 256 for GGUF blocks, the group size for MLX is in the
 * view). */
int dg_dtype_block(dg_dtype dt);
/* Bytes of one row of cols elements for a float or GGUF type; 0 if cols is not a multiple of the
 * block size (or for MLX types, whose rows are (cols * bits / 32) uint32 words). */
size_t dg_row_bytes(dg_dtype dt, int64_t cols);
/* A view of a float or GGUF-typed [rows, cols] matrix at data (row_bytes from dg_row_bytes). */
dg_mat dg_mat_init(const void *data, dg_dtype dt, int64_t rows, int64_t cols);
/* The view of rows [r0, r0 + n) of m (for MLX with their scales and biases); e.g. expert e of a
 * stacked [E, R, C] tensor bound as an [E*R, C] matrix is dg_mat_rows(&m, e * R, R). */
dg_mat dg_mat_rows(const dg_mat *m, int64_t r0, int64_t n);

/* Dequantize elements [c0, c0 + n) of row r to float. c0 and n must be multiples of the type's block
 * (or MLX group) size, except that n may end at cols. Scalar reference for every type. */
void dg_dequant_range(const dg_mat *w, int64_t r, int64_t c0, int64_t n, float *out);

/* Round x[0..n) in place to the activation dtype (DG_F32: no-op). */
void dg_round_act(float *x, size_t n, dg_dtype act);
static inline float dg_round1(float f, dg_dtype act) {
    return act == DG_BF16 ? dg_round_bf16(f) : act == DG_F16 ? dg_round_f16(f) : f;
}

/* y[n, w->rows] = x[n, w->cols] . W^T: every output the exact dot product rounded once to float32. */
void dg_matmul_ref(float *y, const float *x, int n, const dg_mat *w);
/* The same for rows [r0, r1) of W only, into y with row stride ldy. */
void dg_matmul_ref_rows(float *y, int64_t ldy, const float *x, int n, const dg_mat *w, int64_t r0, int64_t r1);

/* RMSNorm of n rows of width dim: y = x * (mean(x^2) + eps)^-0.5 [* w], all in float32. w may be
 * NULL (the weightless norms: v_norm, router norm, self-conditioning post_norm). y may alias x. */
void dg_rmsnorm_ref(float *y, const float *x, int n, int dim, const dg_vec *w, float eps);

/* GELU, tanh approximation (gelu_pytorch_tanh). */
float dg_gelu_tanh(float x);

/* Softmax over x[0..n) in float32, in place. Returns nothing; the max is subtracted first. */
void dg_softmax_ref(float *x, int n);

/* The fast path's softmax: float32 exp and sum in the kernel's order (vectorized where available). */
void dg_softmax_fast(float *x, int n);

/* Rotary embedding, half-split (rotate_half) layout, in place on one head vector x[d]:
 * out[i] = x[i]*cos[i] - x[i+d/2]*sin[i], out[i+d/2] = x[i+d/2]*cos[i] + x[i]*sin[i], each product
 * and the sum rounded to act (the reference applies it in the activation dtype). cos/sin have d/2
 * entries (already rounded to act). */
void dg_rope_ref(float *x, int d, const float *cos, const float *sin, dg_dtype act);

#endif
