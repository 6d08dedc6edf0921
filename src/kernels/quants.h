/*
 * quants.h - GGUF (ggml) block formats: layouts, scalar dequantization and reference quantizers.
 * Bit-exact with ggml's reference code (tested against PyPI gguf's gguf.quants).
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

#endif
