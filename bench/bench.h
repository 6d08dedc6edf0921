/*
 * bench.h - `dgemma bench`: the fixed-protocol speed benchmark, and this machine's measured peaks.
 */
#ifndef DG_BENCH_H
#define DG_BENCH_H

#include "kernels/threads.h"

typedef struct {
    double fp32;       /* GFLOP/s, FMA (AVX-512 or AVX2) */
    double bf16;       /* GFLOP/s, AVX512-BF16 dot */
    double int8;       /* GOP/s, AVX512-VNNI */
    double amx_bf16;   /* GFLOP/s, AMX-BF16 tiles */
} dg_peaks;

/* each peak measured for at least 0.2 s (dg_bench_peaks) or secs */
void dg_bench_peaks(dg_pool *pool, dg_peaks *out);
void dg_bench_peaks_for(dg_pool *pool, dg_peaks *out, double secs);
int dg_bench_main(int argc, char **argv);
/* `dgemma bench --gemm`: the step's matrix products timed alone (bench/gemm.c) */
int dg_bench_gemm(dg_pool *pool, int reps, const char *only);

#endif
