/*
 * quants_mlx.c - MLX quantized matrices (placeholder until the MLX kernels land).
 */
#include "kernels/quants_mlx.h"

#include <string.h>

size_t dg_mlx_row_bytes(int bits, int64_t cols) { return (size_t)((cols * bits + 31) / 32) * 4; }

void dg_dequant_mlx(const dg_mat *w, int64_t r, int64_t c0, int64_t n, float *out) {
    (void)w; (void)r; (void)c0;
    memset(out, 0, sizeof(float) * (size_t)n);   /* TODO: MLX kernels */
}
