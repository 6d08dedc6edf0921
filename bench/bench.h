/*
 * bench.h - `dgemma bench`: the fixed-protocol speed benchmark, and this machine's measured peaks.
 */
#ifndef DG_BENCH_H
#define DG_BENCH_H

#include <stddef.h>

#include "kernels/kernels.h"
#include "kernels/threads.h"

typedef struct {
    double fp32;       /* GFLOP/s, FMA (AVX-512 or AVX2) */
    double bf16;       /* GFLOP/s, AVX512-BF16 dot */
    double int8;       /* GOP/s, AVX512-VNNI */
    double amx_bf16;   /* GFLOP/s, AMX-BF16 tiles */
    double amx_bf16_ld; /* GFLOP/s, AMX-BF16 tiles with one operand tile load per product (a GEMM's roof) */
} dg_peaks;

/* each peak measured for at least 0.2 s (dg_bench_peaks) or secs */
void dg_bench_peaks(dg_pool *pool, dg_peaks *out);
void dg_bench_peaks_for(dg_pool *pool, dg_peaks *out, double secs);
/* streaming read bandwidth in GB/s over a buffer of `bytes` (make it several times the last-level
 * cache), every thread of the pool reading its own slice; the best of three passes. 0 on failure. */
double dg_bench_mem_gbs(dg_pool *pool, size_t bytes);
/* giga-weights per second at which every thread turns rows of K weights of the block type dt into bf16
 * tile rows (the AMX path's panel; rows in cache), measured for at least secs; 0 where dt has no such
 * kernel here (or is not a GGUF block type) */
double dg_bench_dequant_gws(dg_pool *pool, dg_dtype dt, int64_t K, double secs);
int dg_bench_main(int argc, char **argv);
/* `dgemma bench --gemm`: the step's matrix products timed alone (bench/gemm.c) */
int dg_bench_gemm(dg_pool *pool, int reps, const char *only);

#endif
