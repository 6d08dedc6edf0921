/*
 * quants_mlx.h - MLX quantized matrices (affine 2/3/4/5/6/8 bits, mxfp4, mxfp8, nvfp4): scalar
 * dequantization, bit-exact with mx.dequantize.
 */
#ifndef DG_QUANTS_MLX_H
#define DG_QUANTS_MLX_H

#include <stdint.h>

#include "kernels/kernels.h"

/* Bytes of one packed row (cols * bits / 8, rounded to whole uint32 words). */
size_t dg_mlx_row_bytes(int bits, int64_t cols);
/* Dequantize elements [c0, c0 + n) of row r of an MLX matrix (c0 a multiple of the group size). */
void dg_dequant_mlx(const dg_mat *w, int64_t r, int64_t c0, int64_t n, float *out);

#endif
