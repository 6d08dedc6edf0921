/*
 * quants.c - GGUF block formats (placeholder until the block kernels land).
 */
#include "kernels/quants.h"

#include <string.h>

size_t dg_gguf_block_bytes(dg_dtype dt) {
    switch (dt) {
    case DG_Q4_0: return 18;
    case DG_Q4_1: return 20;
    case DG_Q5_0: return 22;
    case DG_Q5_1: return 24;
    case DG_Q8_0: return 34;
    case DG_Q2_K: return 84;
    case DG_Q3_K: return 110;
    case DG_Q4_K: return 144;
    case DG_Q5_K: return 176;
    case DG_Q6_K: return 210;
    case DG_IQ4_NL: return 18;
    default: return 0;
    }
}

int dg_gguf_block_elems(dg_dtype dt) {
    switch (dt) {
    case DG_Q4_0: case DG_Q4_1: case DG_Q5_0: case DG_Q5_1: case DG_Q8_0: case DG_IQ4_NL: return 32;
    case DG_Q2_K: case DG_Q3_K: case DG_Q4_K: case DG_Q5_K: case DG_Q6_K: return 256;
    default: return 0;
    }
}

void dg_dequant_gguf(dg_dtype dt, const void *blocks, float *out, int64_t n) {
    (void)dt; (void)blocks;
    memset(out, 0, sizeof(float) * (size_t)n);   /* TODO: block kernels */
}
