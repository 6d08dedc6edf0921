/*
 * quants.h - GGUF (ggml) block formats: layouts, scalar dequantization, the imatrix-free reference
 * quantizers, activation quantizers (Q8_0 / Q8_1 / Q8_K) and scalar integer dot products.
 *
 * Dequantization and quantization are bit-exact with ggml's reference code (dequantize_row_* and the
 * quantizers ggml_quantize_chunk runs without an importance matrix); tests/test_quants.c checks them
 * against fixtures made with PyPI gguf and a ggml build (tools/reference/make_quant_fixtures.py).
 *
 * Block layouts (byte offsets; d / dmin / m are IEEE fp16, little-endian; every block covers 32 or 256
 * consecutive elements of one row):
 *
 *   Q4_0   18 B / 32 : d@0  qs[16]@2                       y = d * (nibble - 8)
 *   Q4_1   20 B / 32 : d@0  m@2  qs[16]@4                  y = d * nibble + m
 *   Q5_0   22 B / 32 : d@0  qh[4]@2  qs[16]@6              y = d * ((nibble | hbit << 4) - 16)
 *   Q5_1   24 B / 32 : d@0  m@2  qh[4]@4  qs[16]@8         y = d * (nibble | hbit << 4) + m
 *   Q8_0   34 B / 32 : d@0  qs[32]@2 (int8)                y = d * q
 *   IQ4_NL 18 B / 32 : d@0  qs[16]@2                       y = d * kvalues[nibble]
 *     (all 32-blocks: element j < 16 is the low nibble of qs[j], element j + 16 the high nibble; the
 *      5th bit of element j is bit j of the little-endian u32 qh)
 *   Q2_K   84 B / 256: scales[16]@0 qs[64]@16 d@80 dmin@82   16 sub-blocks of 16; scale byte: low
 *                      nibble = scale, high nibble = min; y = d*sc*q - dmin*m, q 2 bits
 *   Q3_K  110 B / 256: hmask[32]@0 qs[64]@32 scales[12]@96 d@108   16 sub-blocks of 16; 6-bit scales
 *                      biased by 32; y = d*(sc-32)*(q2 - (hbit ? 0 : 4))
 *   Q4_K  144 B / 256: d@0 dmin@2 scales[12]@4 qs[128]@16     8 sub-blocks of 32; 6-bit scale + min
 *   Q5_K  176 B / 256: d@0 dmin@2 scales[12]@4 qh[32]@16 qs[128]@48
 *   Q6_K  210 B / 256: ql[128]@0 qh[64]@128 scales[16]@192 (int8) d@208   y = d*sc*(q6 - 32)
 *   (the exact bit positions inside the K blocks are documented at each dequantizer in quants.c)
 */
#ifndef DG_QUANTS_H
#define DG_QUANTS_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/kernels.h"

/* Bytes of one block and elements per block of a GGUF type (0 for non-block types). */
size_t dg_gguf_block_bytes(dg_dtype dt);
int dg_gguf_block_elems(dg_dtype dt);

/* Dequantize n elements (a multiple of the block size) starting at a block boundary. */
void dg_dequant_gguf(dg_dtype dt, const void *blocks, float *out, int64_t n);

/* Quantize n floats (a multiple of the block size) into blocks of type dt, as ggml does without an
 * importance matrix (ggml_quantize_chunk with imatrix NULL: quantize_row_<t>_ref for every type except
 * IQ4_NL, whose imatrix-free path searches 15 scales). imatrix must be NULL for now (the importance-
 * weighted quantizers are not implemented). Returns the bytes written, 0 if dt is not a block type, n is
 * not a multiple of its block, or imatrix is given. */
size_t dg_quantize_gguf(dg_dtype dt, const float *src, void *dst, int64_t n, const float *imatrix);
/* The same bytes, faster: Q4_K / Q5_K / Q6_K fit their sub-blocks side by side (the reference's
 * arithmetic, lane by lane); every other type is dg_quantize_gguf. Tested bit-exact against it. */
size_t dg_quantize_gguf_fast(dg_dtype dt, const float *src, void *dst, int64_t n, const float *imatrix);

/* ===== activation side: int8 blocks for the integer dot products ===== */

/* Q8_0: fp16 scale, 32 int8 (the same bytes as a Q8_0 weight block). */
typedef struct { uint16_t d; int8_t qs[32]; } dg_block_q8_0;
/* Q8_1: fp16 scale d, fp16 s = d * sum(qs), 32 int8 (for the Q4_1 / Q5_1 weights, whose min needs
 * the block sum). */
typedef struct { uint16_t d, s; int8_t qs[32]; } dg_block_q8_1;
/* Q8_K: float scale, 256 int8, and the sums of each 16 (for the K-quant mins). */
typedef struct { float d; int8_t qs[256]; int16_t bsums[16]; } dg_block_q8_K;

typedef enum { DG_ACT_Q8_0 = 0, DG_ACT_Q8_1 = 1, DG_ACT_Q8_K = 2 } dg_act_type;

/* The activation format a weight type's dot product takes (as ggml's vec_dot_type). */
dg_act_type dg_gguf_act_type(dg_dtype dt);
/* Elements per activation block (32 or 256) and its size in bytes. */
int dg_act_block_elems(dg_act_type at);
size_t dg_act_block_bytes(dg_act_type at);

/* Row quantizers for activations; n a multiple of 32 (Q8_0, Q8_1) or 256 (Q8_K). Bit-exact with
 * ggml's quantize_row_q8_0_ref / q8_1_ref / q8_K_ref. */
void dg_quantize_act_q8_0(const float *x, dg_block_q8_0 *y, int64_t n);
void dg_quantize_act_q8_1(const float *x, dg_block_q8_1 *y, int64_t n);
void dg_quantize_act_q8_K(const float *x, dg_block_q8_K *y, int64_t n);
/* Quantize a row to the given activation format (dst: n / block elements blocks). */
void dg_quantize_act(dg_act_type at, const float *x, void *dst, int64_t n);

/* Dot product of n weights w (blocks of the type in the name) with n quantized activations a of the
 * type dg_gguf_act_type gives. Integer products inside each (sub-)block, float scaling per block,
 * float accumulation across blocks: the scalar reference for the SIMD kernels. */
float dg_vec_dot_q4_0_q8(int64_t n, const void *w, const dg_block_q8_0 *a);
float dg_vec_dot_q4_1_q8(int64_t n, const void *w, const dg_block_q8_1 *a);
float dg_vec_dot_q5_0_q8(int64_t n, const void *w, const dg_block_q8_0 *a);
float dg_vec_dot_q5_1_q8(int64_t n, const void *w, const dg_block_q8_1 *a);
float dg_vec_dot_q8_0_q8(int64_t n, const void *w, const dg_block_q8_0 *a);
float dg_vec_dot_iq4_nl_q8(int64_t n, const void *w, const dg_block_q8_0 *a);
float dg_vec_dot_q2_K_q8(int64_t n, const void *w, const dg_block_q8_K *a);
float dg_vec_dot_q3_K_q8(int64_t n, const void *w, const dg_block_q8_K *a);
float dg_vec_dot_q4_K_q8(int64_t n, const void *w, const dg_block_q8_K *a);
float dg_vec_dot_q5_K_q8(int64_t n, const void *w, const dg_block_q8_K *a);
float dg_vec_dot_q6_K_q8(int64_t n, const void *w, const dg_block_q8_K *a);
/* Dispatch on dt; act in dg_gguf_act_type(dt) format. */
float dg_vec_dot_gguf(dg_dtype dt, int64_t n, const void *w, const void *act);

#endif
