/*
 * peak.c - this machine's arithmetic peaks, measured: the bound the benchmark's GFLOP/s are held
 * against. Each loop keeps enough independent accumulators in flight to saturate the FMA / dot /
 * tile units and runs on every thread of the pool at once.
 */
#define _GNU_SOURCE
#include "bench/bench.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "kernels/gemm_impl.h"
#include "kernels/quants.h"

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
    const uint16_t *a, *b;   /* kind 5: the A tiles (L1) and the B tiles (L2) it cycles through */
    volatile float sink;
} peak_job;

/* kind 5's operands: 16 A tiles (16 KB, L1) and 512 B tiles (512 KB, L2: the size of the LM head's
 * packed activations per K block), every tile one contiguous KB of bf16 ones */
enum { LD_A_TILES = 16, LD_B_TILES = 512 };

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

/* The same four products with their operands loaded as a GEMM must: each step loads two A tiles
 * (cycled through LD_A_TILES, in L1) and two B tiles (streamed through LD_B_TILES, in L2) for its four
 * products, the 2 x 2 blocking that the 8 tile registers allow (one tile load per product, the fewest
 * possible). On a core whose tile loads run under the products this is the product-only peak; where
 * they do not, it is the most a tiled GEMM can reach, whatever its loop order. */
__attribute__((target("amx-tile,amx-bf16,avx512f"))) static double loop_amx_ld(long it, const uint16_t *a, const uint16_t *b) {
    __attribute__((aligned(64))) tilecfg cfg;
    __attribute__((aligned(64))) float c[256];
    memset(&cfg, 0, sizeof(cfg));
    cfg.palette = 1;
    for (int i = 0; i < 8; i++) { cfg.colsb[i] = 64; cfg.rows[i] = 16; }
    _tile_loadconfig(&cfg);
    _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
    long ai = 0, bi = 0;
    for (long k = 0; k < it; k++) {
        const uint16_t *a0 = a + (size_t)ai * 512, *b0 = b + (size_t)bi * 512;
        _tile_loadd(4, a0, 64);
        _tile_loadd(6, b0, 64);
        _tile_dpbf16ps(0, 4, 6);
        _tile_loadd(7, b0 + 512, 64);
        _tile_dpbf16ps(1, 4, 7);
        _tile_loadd(5, a0 + 512, 64);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
        ai = ai + 2 == LD_A_TILES ? 0 : ai + 2;
        bi = bi + 2 == LD_B_TILES ? 0 : bi + 2;
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
    case 5: r = loop_amx_ld(j->iters, j->a, j->b); break;
    }
#endif
    j->sink = (float)r;
}

/* fn on every thread of the pool, *iters raised (x10, then x3) until one run takes more than secs:
 * that run's seconds */
static double run_for(dg_pool *pool, void (*fn)(void *, int, int), void *ctx, long *iters, double secs) {
    for (;;) {
        const double t0 = now_s();
        dg_pool_run(pool, dg_pool_size(pool), fn, ctx);
        const double dt = now_s() - t0;
        if (dt > secs) return dt;
        *iters *= dt < secs / 10 ? 10 : 3;
    }
}

/* one measurement of at least `secs` seconds: every thread runs the loop; GFLOP/s (GOP/s for int8)
 * of the slowest */
static double measure(dg_pool *pool, int kind, double flop_per_iter, double secs, const uint16_t *a, const uint16_t *b) {
    peak_job j;
    memset(&j, 0, sizeof(j));
    j.kind = kind;
    j.a = a;
    j.b = b;
    j.iters = 1000;
    const double dt = run_for(pool, peak_task, &j, &j.iters, secs);
    return flop_per_iter * (double)j.iters * dg_pool_size(pool) / dt / 1e9;
}

void dg_bench_peaks_for(dg_pool *pool, dg_peaks *out, double secs) {
    memset(out, 0, sizeof(*out));
#if defined(__x86_64__)
    if (dg_cpu_has_avx2()) out->fp32 = measure(pool, 0, 10 * 8 * 2, secs, NULL, NULL);
    if (dg_cpu_has_avx512()) out->fp32 = measure(pool, 1, 12 * 16 * 2, secs, NULL, NULL);
    if (dg_cpu_has_avx512bf16()) out->bf16 = measure(pool, 2, 12 * 32 * 2, secs, NULL, NULL);
    if (__builtin_cpu_supports("avx512vnni")) out->int8 = measure(pool, 3, 12 * 64 * 2, secs, NULL, NULL);
    if (dg_cpu_has_amx()) {
        out->amx_bf16 = measure(pool, 4, 4 * 16 * 16 * 32 * 2, secs, NULL, NULL);
        /* the operands, shared read-only by the threads (each core keeps its own copies in its caches) */
        uint16_t *ab = aligned_alloc(64, (size_t)(LD_A_TILES + LD_B_TILES) * 1024);
        if (ab) {
            for (size_t i = 0; i < (size_t)(LD_A_TILES + LD_B_TILES) * 512; i++) ab[i] = 0x3f80;   /* 1.0 */
            out->amx_bf16_ld = measure(pool, 5, 4 * 16 * 16 * 32 * 2, secs, ab, ab + (size_t)LD_A_TILES * 512);
            free(ab);
        }
    }
#else
    (void)pool;
    (void)secs;
#endif
}

void dg_bench_peaks(dg_pool *pool, dg_peaks *out) { dg_bench_peaks_for(pool, out, 0.2); }

/* ===== dequantization into bf16 tile rows ===== */
#if defined(__x86_64__)

typedef struct {
    dg_bf16tiles_fn fn;
    const uint8_t *rows;   /* 32 rows of nb blocks */
    size_t row_bytes;
    int64_t nb;
    uint16_t **panel;      /* per task: the tile-row panel of 32 rows */
    long iters;
} dq_job;

/* 32 rows into their panel, as the AMX product does for every 32-row task */
static void dq_task(void *ctx, int i, int tid) {
    (void)tid;
    const dq_job *j = ctx;
    for (long it = 0; it < j->iters; it++)
        for (int r = 0; r < 32; r++) j->fn(j->rows + (size_t)r * j->row_bytes, j->panel[i] + (size_t)(r / 16) * 512 + (size_t)(r % 16) * 32, j->nb);
}

#endif

double dg_bench_dequant_gws(dg_pool *pool, dg_dtype dt, int64_t K, double secs) {
#if defined(__x86_64__)
    const dg_bf16tiles_fn fn = dg_bf16tiles_row_fn(dt);
    const int be = dg_gguf_block_elems(dt);
    if (!fn || be <= 0 || K <= 0 || K % be) return 0.0;
    const int nt = dg_pool_size(pool);
    dq_job j;
    memset(&j, 0, sizeof(j));
    j.fn = fn;
    j.nb = K / be;
    j.row_bytes = (size_t)j.nb * dg_gguf_block_bytes(dt);
    uint8_t *rows = malloc(32 * j.row_bytes);
    j.rows = rows;
    j.panel = calloc((size_t)nt, sizeof(uint16_t *));
    int ok = rows && j.panel;
    for (int i = 0; ok && i < nt; i++) ok = (j.panel[i] = aligned_alloc(64, (size_t)(K / 32) * 2048)) != NULL;
    double gws = 0.0;
    if (ok) {
        /* random codes and scales; every float16 scale set to a normal value (1.0, or 0.5 for a min),
         * so no subnormal or NaN changes the arithmetic's speed */
        uint32_t x = 12345u;
        for (size_t b = 0; b < 32 * j.row_bytes; b++) { x = x * 1664525u + 1013904223u; rows[b] = (uint8_t)(x >> 24); }
        const size_t bb = dg_gguf_block_bytes(dt);
        for (size_t b = 0; b < 32 * (size_t)j.nb; b++) {
            uint8_t *blk = rows + b * bb;
            if (dt == DG_Q6_K) { blk[208] = 0x00; blk[209] = 0x3c; }
            else { blk[0] = 0x00; blk[1] = 0x3c; }
            if (dt == DG_Q4_K || dt == DG_Q5_K || dt == DG_Q4_1 || dt == DG_Q5_1) { blk[2] = 0x00; blk[3] = 0x38; }
        }
        j.iters = 1;
        const double dt_s = run_for(pool, dq_task, &j, &j.iters, secs);
        gws = 32.0 * (double)K * (double)j.iters * nt / dt_s / 1e9;
    }
    for (int i = 0; j.panel && i < nt; i++) free(j.panel[i]);
    free(j.panel);
    free(rows);
    return gws;
#else
    (void)pool; (void)dt; (void)K; (void)secs;
    return 0.0;
#endif
}

/* ===== memory read bandwidth ===== */

typedef struct {
    const uint64_t *p;
    size_t words;   /* per thread */
    uint64_t sink[64];
} bw_job;

/* thread i reads its slice front to back (eight independent lanes, so the loop is load-bound) */
static void bw_task(void *ctx, int i, int tid) {
    (void)tid;
    bw_job *j = ctx;
    const uint64_t *p = j->p + (size_t)i * j->words;
    uint64_t s[8] = {0};
    for (size_t w = 0; w + 8 <= j->words; w += 8)
        for (int l = 0; l < 8; l++) s[l] ^= p[w + l];
    j->sink[i % 64] = s[0] ^ s[1] ^ s[2] ^ s[3] ^ s[4] ^ s[5] ^ s[6] ^ s[7];
}

double dg_bench_mem_gbs(dg_pool *pool, size_t bytes) {
    const int nt = dg_pool_size(pool);
    bytes = bytes / ((size_t)nt * 64) * (size_t)nt * 64;
    if (!bytes) return 0.0;
    void *m = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return 0.0;
    memset(m, 1, bytes);   /* every page present before the timed reads */
    bw_job j;
    memset(&j, 0, sizeof(j));
    j.p = m;
    j.words = bytes / 8 / (size_t)nt;
    double best = 0.0;
    for (int rep = 0; rep < 3; rep++) {
        const double t0 = now_s();
        dg_pool_run(pool, nt, bw_task, &j);
        const double dt = now_s() - t0;
        if (dt > 0 && (double)bytes / dt / 1e9 > best) best = (double)bytes / dt / 1e9;
    }
    munmap(m, bytes);
    return best;
}
