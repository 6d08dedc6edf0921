/*
 * quants_mlx.h - MLX quantized matrices (affine 1/2/3/4/5/6/8 bits, mxfp4, mxfp8, nvfp4): scalar
 * dequantization, bit-exact with PyPI mlx's mx.dequantize (0.32.4, CPU).
 *
 * Layout of one row of cols elements (MLX quantizes along the last, input axis):
 *   codes    cols * bits / 32 uint32 words, read as a little-endian byte stream and that stream as an
 *            LSB-first bit stream: code j occupies bits [j*bits, (j+1)*bits). For 3, 5 and 6 bits codes
 *            straddle bytes and words. fp4 codes are nibbles, code 2i the low nibble of byte i.
 *   scales   cols / group per row: float (F32/F16/BF16) for affine, one uint8 for the fp modes
 *            (E8M0 for mxfp4/mxfp8, E4M3 for nvfp4)
 *   biases   affine only, same type and shape as scales
 *
 * Values (what mx.dequantize computes on the CPU):
 *   affine   w = T(T(q * scale) + bias), T the scale type: each operation in float32, rounded to T
 *            (two roundings, no fused multiply-add; for F32 scales both in float32)
 *   mxfp4    w = fp4(q) * 2^(s - 127)   (s = 0 gives 2^-127, s = 255 gives inf)
 *   mxfp8    w = e4m3(q) * 2^(s - 127)
 *   nvfp4    w = fp4(q) * e4m3(s)       (no global scale: MLX-written files carry none)
 * Nothing is assumed about alignment: MLX's safetensors writer does not pad its header, so the tensors
 * of an MLX file start at arbitrary byte offsets (fast paths must use unaligned loads too).
 * The fp modes are returned as their exact float32 values (mx.dequantize(..., dtype=mx.float32));
 * mx.dequantize's default output type for them is bfloat16, which is that value rounded to bf16.
 */
#ifndef DG_QUANTS_MLX_H
#define DG_QUANTS_MLX_H

#include <stdint.h>

#include "kernels/kernels.h"

/* Bytes of one packed row (cols * bits / 8, rounded to whole uint32 words). */
size_t dg_mlx_row_bytes(int bits, int64_t cols);

/* Dequantize elements [c0, c0 + n) of row r of an MLX matrix (any c0; the reference matmul passes
 * group-aligned chunks). */
void dg_dequant_mlx(const dg_mat *w, int64_t r, int64_t c0, int64_t n, float *out);

/* The bits and group size a mode requires (fp modes), or 0 for affine (which takes several). */
int dg_mlx_mode_bits(dg_dtype mode);
int dg_mlx_mode_group(dg_dtype mode);

/* Element decoders, exposed for tests: fp8 E4M3 (FN: no infinities, 0x7f/0xff are NaN), fp4 E2M1, and
 * the E8M0 scale as MLX decodes it. */
float dg_e4m3_to_f32(uint8_t c);
float dg_e2m1_to_f32(uint8_t c);
float dg_e8m0_to_f32(uint8_t s);

#endif
