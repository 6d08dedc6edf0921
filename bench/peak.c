/*
 * peak.c - this machine's arithmetic peaks, measured: the bound the benchmark's GFLOP/s are held
 * against. Each loop keeps enough independent accumulators in flight to saturate the FMA / dot /
 * tile units and runs on every thread of the pool at once.
 */
#define _GNU_SOURCE
#include "bench/bench.h"

#include <stdint.h>
#include <string.h>
#include <time.h>

#include "kernels/gemm_impl.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

typedef struct {
    int kind;
    long iters;
    double flop;   /* per thread */
    volatile float sink;
} peak_job;

#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) static double loop_fma256(long it) {
    __m256 a[10];
    const __m256 b = _mm256_set1_ps(1.0000001f), c = _mm256_set1_ps(1e-7f);
    for (int i = 0; i < 10; i++) a[i] = _mm256_set1_ps((float)i);
    for (long k = 0; k < it; k++)
        for (int i = 0; i < 10; i++) a[i] = _mm256_fmadd_ps(a[i], b, c);
    float s = 0;
    for (int i = 0; i < 10; i++) s += _mm256_cvtss_f32(a[i]);
    return s;
}

__attribute__((target("avx512f"))) static double loop_fma512(long it) {
    __m512 a[12];
    const __m512 b = _mm512_set1_ps(1.0000001f), c = _mm512_set1_ps(1e-7f);
    for (int i = 0; i < 12; i++) a[i] = _mm512_set1_ps((float)i);
    for (long k = 0; k < it; k++)
        for (int i = 0; i < 12; i++) a[i] = _mm512_fmadd_ps(a[i], b, c);
    float s = 0;
    for (int i = 0; i < 12; i++) s += _mm512_reduce_add_ps(a[i]);
    return s;
}

__attribute__((target("avx512f,avx512bf16"))) static double loop_bf16(long it) {
    __m512 a[12];
    const __m512bh b = (__m512bh)_mm512_set1_epi16(0x3f80), c = (__m512bh)_mm512_set1_epi16(0x3380);
    for (int i = 0; i < 12; i++) a[i] = _mm512_set1_ps((float)i);
    for (long k = 0; k < it; k++)
        for (int i = 0; i < 12; i++) a[i] = _mm512_dpbf16_ps(a[i], b, c);
    float s = 0;
    for (int i = 0; i < 12; i++) s += _mm512_reduce_add_ps(a[i]);
    return s;
}

__attribute__((target("avx512f,avx512vnni"))) static double loop_vnni(long it) {
    __m512i a[12];
    const __m512i b = _mm512_set1_epi8(1), c = _mm512_set1_epi8(2);
    for (int i = 0; i < 12; i++) a[i] = _mm512_set1_epi32(i);
    for (long k = 0; k < it; k++)
        for (int i = 0; i < 12; i++) a[i] = _mm512_dpbusd_epi32(a[i], b, c);
    /* the lanes only keep the loop alive: summed as unsigned, where wrapping is defined (an int sum
     * overflowed once the loop ran long enough, which UBSan reported) */
    unsigned s = 0;
    for (int i = 0; i < 12; i++) {
        uint32_t u[16];
        _mm512_storeu_si512((void *)u, a[i]);
        for (int j = 0; j < 16; j++) s += u[j];
    }
    return s;
}

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tilecfg;

__attribute__((target("amx-tile,amx-bf16,avx512f"))) static double loop_amx(long it) {
    __attribute__((aligned(64))) tilecfg cfg;
    __attribute__((aligned(64))) static __thread uint16_t ab[16 * 32];
    __attribute__((aligned(64))) float c[256];
    memset(&cfg, 0, sizeof(cfg));
    cfg.palette = 1;
    for (int i = 0; i < 8; i++) { cfg.colsb[i] = 64; cfg.rows[i] = 16; }
    for (int i = 0; i < 16 * 32; i++) ab[i] = 0x3c00;
    _tile_loadconfig(&cfg);
    _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
    _tile_loadd(4, ab, 64); _tile_loadd(5, ab, 64); _tile_loadd(6, ab, 64); _tile_loadd(7, ab, 64);
    for (long k = 0; k < it; k++) {
        _tile_dpbf16ps(0, 4, 6); _tile_dpbf16ps(1, 4, 7); _tile_dpbf16ps(2, 5, 6); _tile_dpbf16ps(3, 5, 7);
    }
    _tile_stored(0, c, 64);
    _tile_release();
    return c[0];
}
#endif

static void peak_task(void *ctx, int i, int tid) {
    (void)i; (void)tid;
    peak_job *j = ctx;
    double r = 0;
#if defined(__x86_64__)
    switch (j->kind) {
    case 0: r = loop_fma256(j->iters); break;
    case 1: r = loop_fma512(j->iters); break;
    case 2: r = loop_bf16(j->iters); break;
    case 3: r = loop_vnni(j->iters); break;
    case 4: r = loop_amx(j->iters); break;
    }
#endif
    j->sink = (float)r;
}

/* one measurement of at least `secs` seconds: every thread runs the loop; GFLOP/s (GOP/s for int8)
 * of the slowest */
static double measure(dg_pool *pool, int kind, double flop_per_iter, double secs) {
    peak_job j;
    memset(&j, 0, sizeof(j));
    j.kind = kind;
    j.iters = 1000;
    const int nt = dg_pool_size(pool);
    for (;;) {
        const double t0 = now_s();
        dg_pool_run(pool, nt, peak_task, &j);
        const double dt = now_s() - t0;
        if (dt > secs) return flop_per_iter * (double)j.iters * nt / dt / 1e9;
        j.iters *= dt < secs / 10 ? 10 : 3;
    }
}

void dg_bench_peaks_for(dg_pool *pool, dg_peaks *out, double secs) {
    memset(out, 0, sizeof(*out));
#if defined(__x86_64__)
    if (dg_cpu_has_avx2()) out->fp32 = measure(pool, 0, 10 * 8 * 2, secs);
    if (dg_cpu_has_avx512()) out->fp32 = measure(pool, 1, 12 * 16 * 2, secs);
    if (dg_cpu_has_avx512bf16()) out->bf16 = measure(pool, 2, 12 * 32 * 2, secs);
    if (__builtin_cpu_supports("avx512vnni")) out->int8 = measure(pool, 3, 12 * 64 * 2, secs);
    if (dg_cpu_has_amx()) out->amx_bf16 = measure(pool, 4, 4 * 16 * 16 * 32 * 2, secs);
#else
    (void)pool;
    (void)secs;
#endif
}

void dg_bench_peaks(dg_pool *pool, dg_peaks *out) { dg_bench_peaks_for(pool, out, 0.2); }
