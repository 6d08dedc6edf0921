#define _GNU_SOURCE
/*
 * gemm_x86.c - x86-64 kernels for dg_matmul: AVX2+FMA, AVX-512F, AVX512-BF16 and AMX-BF16, each
 * compiled for its own target with function attributes and chosen at run time (gemm.c), so one
 * binary runs on any x86-64 CPU.
 *
 * Layout convention: y[t][r] = sum_k x[t][k] W[r][k]; W rows are read straight from the mapping
 * (float types) or from a per-thread panel the task dequantizes first (block / MLX types).
 */
#if defined(__x86_64__)

#include <cpuid.h>
#include <math.h>
#include <immintrin.h>
#include <pthread.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "kernels/gemm_impl.h"
#include "kernels/quants.h"

/* ===== CPU features ===== */

static struct {
    int avx2, avx512, avx512bf16, vnni, amx;
} g_cpu;
static pthread_once_t g_cpu_once = PTHREAD_ONCE_INIT;

static unsigned long long xgetbv0(void) {
    unsigned a, d;
    __asm__ volatile("xgetbv" : "=a"(a), "=d"(d) : "c"(0));
    return ((unsigned long long)d << 32) | a;
}

static void cpu_detect(void) {
    unsigned a, b, c, d;
    if (__get_cpuid_max(0, NULL) < 7 || !__get_cpuid(1, &a, &b, &c, &d)) return;
    const int osxsave = (c >> 27) & 1, fma = (c >> 12) & 1, f16c = (c >> 29) & 1;
    if (!osxsave) return;
    const unsigned long long xcr0 = xgetbv0();
    const int ymm_os = (xcr0 & 6) == 6, zmm_os = (xcr0 & 0xe6) == 0xe6, tile_os = (xcr0 & 0x60000) == 0x60000;
    __cpuid_count(7, 0, a, b, c, d);
    const int avx2 = (b >> 5) & 1, avx512f = (b >> 16) & 1, avx512bw = (b >> 30) & 1, avx512vl = (b >> 31) & 1;
    const int amx_bf16 = (d >> 22) & 1, amx_tile = (d >> 24) & 1, vnni = (c >> 11) & 1;
    const unsigned sub7 = a;   /* leaf 7's highest subleaf */
    __cpuid_count(7, 1, a, b, c, d);
    const int avx512bf16 = sub7 >= 1 && ((a >> 5) & 1);
    g_cpu.avx2 = ymm_os && avx2 && fma && f16c;
    g_cpu.avx512 = g_cpu.avx2 && zmm_os && avx512f && avx512bw && avx512vl;
    g_cpu.avx512bf16 = g_cpu.avx512 && avx512bf16;
    g_cpu.vnni = g_cpu.avx512 && vnni;
    if (g_cpu.avx512bf16 && tile_os && amx_tile && amx_bf16) {
        /* Linux hands out the AMX tile state only on request (once per process) */
        const long ARCH_REQ_XCOMP_PERM = 0x1023, XFEATURE_XTILEDATA = 18;
        g_cpu.amx = syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
    }
}

int dg_cpu_has_avx2(void) { pthread_once(&g_cpu_once, cpu_detect); return g_cpu.avx2; }
int dg_cpu_has_avx512(void) { pthread_once(&g_cpu_once, cpu_detect); return g_cpu.avx512; }
int dg_cpu_has_avx512bf16(void) { pthread_once(&g_cpu_once, cpu_detect); return g_cpu.avx512bf16; }
int dg_cpu_has_amx(void) { pthread_once(&g_cpu_once, cpu_detect); return g_cpu.amx; }
int dg_cpu_has_vnni(void) { pthread_once(&g_cpu_once, cpu_detect); return g_cpu.vnni; }

/* the weights of rows [r0, r0+nr) as a row-major view: straight from the mapping for float types,
 * else dequantized to float32 into the panel */
static const void *rows_of(const dg_job *j, int64_t r0, int nr, float *panel, dg_dtype *dt, int64_t *ld_bytes) {
    const dg_mat *w = j->w;
    if (w->dt == DG_F32 || w->dt == DG_BF16 || w->dt == DG_F16) {
        *dt = w->dt;
        *ld_bytes = (int64_t)w->row_bytes;
        return (const uint8_t *)w->data + (size_t)r0 * w->row_bytes;
    }
    dg_panel_f32(w, r0, nr, panel);
    *dt = DG_F32;
    *ld_bytes = w->cols * (int64_t)sizeof(float);
    return panel;
}

/* ===== AVX2 + FMA ===== */

#define T_AVX2 __attribute__((target("avx2,fma,f16c")))

T_AVX2 static inline __m256 ld8(const void *row, dg_dtype dt, int64_t k) {
    if (dt == DG_F32) return _mm256_loadu_ps((const float *)row + k);
    const __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)row + k));
    if (dt == DG_F16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

T_AVX2 static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline float wget1(const void *row, dg_dtype dt, int64_t k) { return dg_wget(row, dt, k); }

T_AVX2 static inline __attribute__((always_inline)) void avx2_block(const float *x, int64_t ldx, const uint8_t *w,
                                                                    int64_t ldw, dg_dtype dt, int64_t K, float *y,
                                                                    int64_t ldy, int MT, int MR) {
    __m256 acc[3][4];
    for (int i = 0; i < MT; i++)
        for (int r = 0; r < MR; r++) acc[i][r] = _mm256_setzero_ps();
    const int64_t K8 = K / 8 * 8;
    for (int64_t k = 0; k < K8; k += 8) {
        __m256 wv[4];
        for (int r = 0; r < MR; r++) wv[r] = ld8(w + r * ldw, dt, k);
        for (int i = 0; i < MT; i++) {
            const __m256 xv = _mm256_loadu_ps(x + i * ldx + k);
            for (int r = 0; r < MR; r++) acc[i][r] = _mm256_fmadd_ps(xv, wv[r], acc[i][r]);
        }
    }
    for (int i = 0; i < MT; i++)
        for (int r = 0; r < MR; r++) {
            float s = hsum8(acc[i][r]);
            for (int64_t k = K8; k < K; k++) s += x[i * ldx + k] * wget1(w + r * ldw, dt, k);
            y[i * ldy + r] = s;
        }
}

T_AVX2 static void avx2_kernel(const float *x, int64_t ldx, int nt, const uint8_t *w, int64_t ldw, dg_dtype dt, int nr,
                               int64_t K, float *y, int64_t ldy) {
    for (int t = 0; t < nt; t += 3) {
        const int mt = nt - t < 3 ? nt - t : 3;
        for (int r = 0; r < nr; r += 4) {
            const int mr = nr - r < 4 ? nr - r : 4;
            const float *xt = x + t * ldx;
            const uint8_t *wr = w + r * ldw;
            float *yt = y + t * ldy + r;
#define B2(a, b) avx2_block(xt, ldx, wr, ldw, dt, K, yt, ldy, a, b)
            if (mt == 3 && mr == 4) B2(3, 4);
            else if (mt == 2 && mr == 4) B2(2, 4);
            else if (mt == 1 && mr == 4) B2(1, 4);
            else
                for (int i = 0; i < mt; i++)
                    for (int q = 0; q < mr; q++) avx2_block(xt + i * ldx, ldx, wr + q * ldw, ldw, dt, K, yt + i * ldy + q, ldy, 1, 1);
#undef B2
        }
    }
}

void dg_task_avx2(const dg_job *j, int64_t r0, int nr, float *panel) {
    dg_dtype dt;
    int64_t ldw;
    const void *w = rows_of(j, r0, nr, panel, &dt, &ldw);
    avx2_kernel(j->x, j->w->cols, j->n, w, ldw, dt, nr, j->w->cols, j->y + r0, j->w->rows);
}

T_AVX2 float dg_dot_f32_avx2(const float *a, const float *b, int n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    }
    float s = hsum8(_mm256_add_ps(s0, s1));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

T_AVX2 void dg_axpy_f32_avx2(float *y, float a, const float *x, int n) {
    const __m256 av = _mm256_set1_ps(a);
    int i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] += a * x[i];
}

/* ===== AVX-512F ===== */

#define T_512 __attribute__((target("avx512f,avx512bw,avx512vl,fma,f16c")))

T_512 static inline __m512 ld16(const void *row, dg_dtype dt, int64_t k, __mmask16 m) {
    if (dt == DG_F32) return _mm512_maskz_loadu_ps(m, (const float *)row + k);
    const __m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)row + k);
    if (dt == DG_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

T_512 static inline __attribute__((always_inline)) void avx512_block(const float *x, int64_t ldx, const uint8_t *w,
                                                                      int64_t ldw, dg_dtype dt, int64_t K, float *y,
                                                                      int64_t ldy, int MT, int MR) {
    __m512 acc[4][4];
    for (int i = 0; i < MT; i++)
        for (int r = 0; r < MR; r++) acc[i][r] = _mm512_setzero_ps();
    for (int64_t k = 0; k < K; k += 16) {
        const __mmask16 m = K - k >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (K - k)) - 1);
        __m512 wv[4];
        for (int r = 0; r < MR; r++) wv[r] = ld16(w + r * ldw, dt, k, m);
        for (int i = 0; i < MT; i++) {
            const __m512 xv = _mm512_maskz_loadu_ps(m, x + i * ldx + k);
            for (int r = 0; r < MR; r++) acc[i][r] = _mm512_fmadd_ps(xv, wv[r], acc[i][r]);
        }
    }
    for (int i = 0; i < MT; i++)
        for (int r = 0; r < MR; r++) y[i * ldy + r] = _mm512_reduce_add_ps(acc[i][r]);
}

T_512 static void avx512_kernel(const float *x, int64_t ldx, int nt, const uint8_t *w, int64_t ldw, dg_dtype dt, int nr,
                                int64_t K, float *y, int64_t ldy) {
    for (int t = 0; t < nt; t += 4) {
        const int mt = nt - t < 4 ? nt - t : 4;
        for (int r = 0; r < nr; r += 4) {
            const int mr = nr - r < 4 ? nr - r : 4;
            const float *xt = x + t * ldx;
            const uint8_t *wr = w + r * ldw;
            float *yt = y + t * ldy + r;
#define B5(a, b) avx512_block(xt, ldx, wr, ldw, dt, K, yt, ldy, a, b)
            if (mt == 4 && mr == 4) B5(4, 4);
            else if (mt == 3 && mr == 4) B5(3, 4);
            else if (mt == 2 && mr == 4) B5(2, 4);
            else if (mt == 1 && mr == 4) B5(1, 4);
            else
                for (int i = 0; i < mt; i++)
                    for (int q = 0; q < mr; q++) avx512_block(xt + i * ldx, ldx, wr + q * ldw, ldw, dt, K, yt + i * ldy + q, ldy, 1, 1);
#undef B5
        }
    }
}

void dg_task_avx512(const dg_job *j, int64_t r0, int nr, float *panel) {
    dg_dtype dt;
    int64_t ldw;
    const void *w = rows_of(j, r0, nr, panel, &dt, &ldw);
    avx512_kernel(j->x, j->w->cols, j->n, w, ldw, dt, nr, j->w->cols, j->y + r0, j->w->rows);
}

T_512 float dg_dot_f32_avx512(const float *a, const float *b, int n) {
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
    }
    for (; i < n; i += 16) {
        const __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        s0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), s0);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

T_512 void dg_axpy_f32_avx512(float *y, float a, const float *x, int n) {
    const __m512 av = _mm512_set1_ps(a);
    for (int i = 0; i < n; i += 16) {
        const __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(y + i, m, _mm512_fmadd_ps(av, _mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, y + i)));
    }
}

/* y = (x * r) * w (w: float32, bf16 widened exactly, or none: y = x * r), the scalar loops' two
 * products per element, 16 lanes at a time; 0 if w's type has no kernel here */
T_512 int dg_rms_scale_f32_avx512(float *y, const float *x, float r, const void *w, dg_dtype wdt, int n) {
    if (w && wdt != DG_F32 && wdt != DG_BF16) return 0;
    const __m512 rv = _mm512_set1_ps(r);
    for (int i = 0; i < n; i += 16) {
        const __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), rv);
        if (w && wdt == DG_F32) v = _mm512_mul_ps(v, _mm512_maskz_loadu_ps(m, (const float *)w + i));
        else if (w)
            v = _mm512_mul_ps(v, _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, (const uint16_t *)w + i)), 16)));
        _mm512_mask_storeu_ps(y + i, m, v);
    }
    return 1;
}

/* 16 lanes at a time; per lane the scalar loop's operations in its order (mul, then add, from +0) */
T_512 void dg_wsum_f32_avx512(float *o, const float *const *y, const float *w, int K, int n) {
    for (int i = 0; i < n; i += 16) {
        const __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        __m512 acc = _mm512_setzero_ps();
        for (int k = 0; k < K; k++) acc = _mm512_add_ps(acc, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, y[k] + i), _mm512_set1_ps(w[k])));
        _mm512_mask_storeu_ps(o + i, m, acc);
    }
}

#define T_V512 __attribute__((target("avx512f,avx512bw,avx512vl"), always_inline))   /* inlined into T_512 and T_AMX code */

/* the max of x[0..n): 16 lanes, then the tail one at a time */
T_V512 static inline float max512(const float *x, int n) {
    __m512 m = _mm512_set1_ps(-INFINITY);
    int i = 0;
    for (; i + 16 <= n; i += 16) m = _mm512_max_ps(m, _mm512_loadu_ps(x + i));
    float mx = _mm512_reduce_max_ps(m);
    for (; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    return mx;
}

T_512 float dg_max_f32_avx512(const float *x, int n, int *arg) {
    const float mx = max512(x, n);
    int i;
    for (i = 0; i < n; i++)   /* the first index of the max, as the scalar scan finds it */
        if (x[i] == mx) break;
    *arg = i < n ? i : 0;
    return mx;
}

/* exp(x) for x <= 0 (the argument is always z - max): n = round(x log2 e), r = x - n ln 2 in two
 * parts, a degree-6 polynomial for exp(r) on |r| <= ln2/2, scaled by 2^n (gradually underflowing
 * below -87.3); below -103.97 the result is 0 like expf's; NaN stays NaN (max_ps returns its second
 * operand when either is NaN) */
T_V512 static inline __m512 exp512(__m512 x) {
    const __m512 lo = _mm512_set1_ps(-103.97f);
    const __mmask16 under = _mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ);
    x = _mm512_max_ps(lo, x);
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_mask_mov_ps(_mm512_scalef_ps(p, n), under, _mm512_setzero_ps());
}

/* w = exp(x - mx) (w may be x) and its sum, 16 lanes at a time */
T_V512 static inline float expsum_to512(const float *x, float *w, int n, float mx) {
    const __m512 m = _mm512_set1_ps(mx);
    __m512 s = _mm512_setzero_ps();
    for (int i = 0; i < n; i += 16) {
        const __mmask16 k = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        const __m512 e = exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i), m));
        _mm512_mask_storeu_ps(w + i, k, e);
        s = _mm512_add_ps(s, _mm512_maskz_mov_ps(k, e));
    }
    return _mm512_reduce_add_ps(s);
}

T_512 float dg_expsum_f32_avx512(float *x, int n, float mx) { return expsum_to512(x, x, n, mx); }

/* cap * tanh(x / cap) = cap * sign(x) * (1 - 2 / (exp(2|x|/cap) + 1)); for tiny |x| the 1 - ... form
 * loses bits, so there tanh(u) ~ u - u^3/3 + 2u^5/15 */
T_V512 static inline __m512 softcap512(__m512 v, __m512 c) {
    const __m512 one = _mm512_set1_ps(1.0f);
    const __m512 sign = _mm512_castsi512_ps(_mm512_set1_epi32((int)0x80000000u));
    {
        const __m512 u = _mm512_div_ps(v, c);
        const __m512 a = _mm512_castsi512_ps(_mm512_andnot_si512(_mm512_castps_si512(sign), _mm512_castps_si512(u)));
        const __m512 e = exp512(_mm512_min_ps(_mm512_setzero_ps(), _mm512_mul_ps(a, _mm512_set1_ps(-2.0f))));   /* NaN kept */
        /* tanh(a) = (1 - e) / (1 + e) with e = exp(-2a) <= 1: no overflow */
        __m512 t = _mm512_div_ps(_mm512_sub_ps(one, e), _mm512_add_ps(one, e));
        const __m512 a2 = _mm512_mul_ps(a, a);
        const __m512 small = _mm512_mul_ps(a, _mm512_fmadd_ps(a2, _mm512_fmadd_ps(a2, _mm512_set1_ps(2.0f / 15.0f), _mm512_set1_ps(-1.0f / 3.0f)), one));
        t = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, _mm512_set1_ps(0.0625f), _CMP_LT_OQ), t, small);
        t = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(t), _mm512_and_si512(_mm512_castps_si512(u), _mm512_castps_si512(sign))));
        return _mm512_mul_ps(t, c);
    }
}

T_512 void dg_softcap_f32_avx512(float *x, int n, float cap) {
    const __m512 c = _mm512_set1_ps(cap);
    for (int i = 0; i < n; i += 16) {
        const __mmask16 k = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(x + i, k, softcap512(_mm512_maskz_loadu_ps(k, x + i), c));
    }
}

/* dg_div_f32 then dg_max_f32_avx512 in one pass over the row (the division is IEEE, the max and the
 * scan for its first index the same) */
T_512 float dg_div_max_f32_avx512(float *x, int n, float d, int *arg) {
    const __m512 dv = _mm512_set1_ps(d);
    __m512 m = _mm512_set1_ps(-INFINITY);
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512 v = _mm512_div_ps(_mm512_loadu_ps(x + i), dv);
        _mm512_storeu_ps(x + i, v);
        m = _mm512_max_ps(m, v);
    }
    float mx = _mm512_reduce_max_ps(m);
    for (; i < n; i++) {
        x[i] = x[i] / d;
        mx = x[i] > mx ? x[i] : mx;
    }
    for (i = 0; i < n; i++)
        if (x[i] == mx) break;
    *arg = i < n ? i : 0;
    return mx;
}

/* bf16, nearest even, a NaN made quiet (round_bf16_block's rule) */
T_V512 static inline __m512 round_bf16_512(__m512 v) {
    const __m512i u = _mm512_castps_si512(v), hi = _mm512_set1_epi32((int)0xffff0000u);
    const __m512i r = _mm512_and_si512(_mm512_add_epi32(u, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1)))), hi);
    const __m512i q = _mm512_and_si512(_mm512_or_si512(u, _mm512_set1_epi32(0x00400000)), hi);
    return _mm512_castsi512_ps(_mm512_mask_mov_epi32(r, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), q));
}

/* x[i] = x[i] / d, 16 lanes at a time (IEEE division: bit-identical) */
T_512 void dg_div_f32_avx512(float *x, size_t n, float d) {
    const __m512 dv = _mm512_set1_ps(d);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, _mm512_div_ps(_mm512_loadu_ps(x + i), dv));
    if (i < n) {
        const __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(x + i, m, _mm512_div_ps(_mm512_maskz_loadu_ps(m, x + i), dv));
    }
}

/* x rounded to bf16 in place (round_bf16_block's rule, 16 lanes at a time: bit-identical) */
T_512 void dg_round_bf16_avx512(float *x, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, round_bf16_512(_mm512_loadu_ps(x + i)));
    if (i < n) {
        const __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(x + i, m, round_bf16_512(_mm512_maskz_loadu_ps(m, x + i)));
    }
}

/* w = exp(z - mx) and its sum (dg_expsum_f32_avx512 on a copy of z), *dd = sum w (mx - z)
 * (dg_dotdiff_f32_avx512), then z rounded to bf16 in place when rbf: one pass, the same lanes and
 * order as the three */
T_512 float dg_expsum_dd_f32_avx512(float *z, float *w, int n, float mx, float *dd, int rbf) {
    const __m512 m = _mm512_set1_ps(mx);
    __m512 s = _mm512_setzero_ps(), t = _mm512_setzero_ps();
    for (int i = 0; i < n; i += 16) {
        const __mmask16 k = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        const __m512 zv = _mm512_maskz_loadu_ps(k, z + i);
        const __m512 e = _mm512_maskz_mov_ps(k, exp512(_mm512_sub_ps(zv, m)));
        _mm512_mask_storeu_ps(w + i, k, e);
        s = _mm512_add_ps(s, e);
        t = _mm512_fmadd_ps(e, _mm512_sub_ps(m, zv), t);
        if (rbf) _mm512_mask_storeu_ps(z + i, k, round_bf16_512(zv));
    }
    *dd = _mm512_reduce_add_ps(t);
    return _mm512_reduce_add_ps(s);
}

/* dg_rope_ref for bf16 (rbf) or float32 activations: the same products, sums and roundings, 16
 * pairs at a time */
T_512 void dg_rope_avx512(float *x, int d, const float *cos, const float *sin, int rbf) {
    const int half = d / 2;
    const __m512i neg = _mm512_set1_epi32((int)0x80000000u);
    for (int i = 0; i < half; i += 16) {
        const __mmask16 k = half - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (half - i)) - 1);
        const __m512 a = _mm512_maskz_loadu_ps(k, x + i), b = _mm512_maskz_loadu_ps(k, x + half + i);
        const __m512 c = _mm512_maskz_loadu_ps(k, cos + i), s = _mm512_maskz_loadu_ps(k, sin + i);
        __m512 ac = _mm512_mul_ps(a, c), nbs = _mm512_mul_ps(_mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(b), neg)), s);
        __m512 bc = _mm512_mul_ps(b, c), as = _mm512_mul_ps(a, s);
        if (rbf) { ac = round_bf16_512(ac); nbs = round_bf16_512(nbs); bc = round_bf16_512(bc); as = round_bf16_512(as); }
        __m512 lo = _mm512_add_ps(ac, nbs), hi = _mm512_add_ps(bc, as);
        if (rbf) { lo = round_bf16_512(lo); hi = round_bf16_512(hi); }
        _mm512_mask_storeu_ps(x + i, k, lo);
        _mm512_mask_storeu_ps(x + half + i, k, hi);
    }
}

T_512 float dg_dotdiff_f32_avx512(const float *x, const float *z, int n, float mx) {
    const __m512 m = _mm512_set1_ps(mx);
    __m512 s = _mm512_setzero_ps();
    for (int i = 0; i < n; i += 16) {
        const __mmask16 k = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        s = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(k, x + i), _mm512_sub_ps(m, _mm512_maskz_loadu_ps(k, z + i)), s);
    }
    return _mm512_reduce_add_ps(s);
}

/* sum of x[i]^2 in double (each square exact, as the oracle's), 4 x 8 lanes */
T_512 double dg_sumsq_f64_avx512(const float *x, int n) {
    __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512d a = _mm512_cvtps_pd(_mm256_loadu_ps(x + i)), b = _mm512_cvtps_pd(_mm256_loadu_ps(x + i + 8));
        s0 = _mm512_fmadd_pd(a, a, s0);
        s1 = _mm512_fmadd_pd(b, b, s1);
    }
    double ss = _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
    for (; i < n; i++) ss += (double)x[i] * x[i];
    return ss;
}

/* round to the activation type in registers: bf16 (nearest even), f16 (via the conversion), f32 as is */
T_512 static inline __m512 round_act512(__m512 v, dg_dtype act) {
    if (act == DG_BF16) {   /* nearest even on the bit pattern; NaN stays NaN */
        const __m512i u = _mm512_castps_si512(v);
        const __m512i r = _mm512_add_epi32(u, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1))));
        const __m512 b = _mm512_castsi512_ps(_mm512_and_si512(r, _mm512_set1_epi32((int)0xffff0000u)));
        return _mm512_mask_mov_ps(b, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), v);
    }
    if (act == DG_F16) return _mm512_cvtph_ps(_mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    return v;
}

/* a row of nk scores in place: exp(s - max) in float32, the sum returned, then the weights rounded to
 * the activation type (the reference's flash kernels weight the values with rounded probabilities) */
T_512 static float att_weights(float *sc, int nk, dg_dtype act) {
    int arg;
    const float mx = dg_max_f32_avx512(sc, nk, &arg);
    const float sum = dg_expsum_f32_avx512(sc, nk, mx);
    if (act != DG_F32)
        for (int j = 0; j < nk; j += 16) {
            const __mmask16 m = nk - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (nk - j)) - 1);
            _mm512_mask_storeu_ps(sc + j, m, round_act512(_mm512_maskz_loadu_ps(m, sc + j), act));
        }
    return sum;
}

/* ===== attention for a block of rows (queries x heads of one KV group) =====
 * Each row's arithmetic does not depend on the block (4-key blocks per segment, the tail keys by
 * dg_dot_f32_avx512, exp, rounding, and per column a sequential P.V sum over the keys in order), so the
 * results are bit-identical to one row at a time (dg_attend_f32 is a one-row block); what the block
 * changes is the traffic: every key row is loaded from memory once for all the
 * rows (4 keys stay in L1 while the rows pass in groups of 4), and P.V walks the values in blocks of
 * ATT_KB keys x 64 columns (16 KB, L1) with the rows' partial sums kept in acc between blocks. */
enum { ATT_KB = 64 };

T_512 static inline __attribute__((always_inline)) void blk_scores(const float *const *q, int d, const float *k0, int64_t st,
                                                                   float *const *sc, int nk, const int NH) {
    __m512 a[4][4];
    for (int h = 0; h < NH; h++)
        for (int i = 0; i < 4; i++) a[h][i] = _mm512_setzero_ps();
    const float *k1 = k0 + st, *k2 = k1 + st, *k3 = k2 + st;
    for (int c = 0; c < d; c += 16) {
        const __mmask16 m = d - c >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (d - c)) - 1);
        const __m512 v0 = _mm512_maskz_loadu_ps(m, k0 + c), v1 = _mm512_maskz_loadu_ps(m, k1 + c);
        const __m512 v2 = _mm512_maskz_loadu_ps(m, k2 + c), v3 = _mm512_maskz_loadu_ps(m, k3 + c);
        for (int h = 0; h < NH; h++) {
            const __m512 qv = _mm512_maskz_loadu_ps(m, q[h] + c);
            a[h][0] = _mm512_fmadd_ps(qv, v0, a[h][0]);
            a[h][1] = _mm512_fmadd_ps(qv, v1, a[h][1]);
            a[h][2] = _mm512_fmadd_ps(qv, v2, a[h][2]);
            a[h][3] = _mm512_fmadd_ps(qv, v3, a[h][3]);
        }
    }
    for (int h = 0; h < NH; h++)
        for (int i = 0; i < 4; i++) sc[h][nk + i] = _mm512_reduce_add_ps(a[h][i]);
}

/* rows' partial sums acc[r][c0 .. c0+64) += sum over keys j0 .. j0+n of p[r][j] v_j (sequential in j) */
T_512 static inline __attribute__((always_inline)) void blk_pv(const float *v, int64_t st, int n, int w, float *const *p,
                                                               int j0, float *const *acc, int first, const int NH) {
    __m512 a[4][4];
    __mmask16 mk[4];
    for (int b = 0; b < 4; b++) {
        const int c = 16 * b;
        mk[b] = c >= w ? 0 : w - c >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (w - c)) - 1);
        for (int h = 0; h < NH; h++) a[h][b] = first ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(mk[b], acc[h] + c);
    }
    for (int i = 0; i < n; i++) {
        const float *vr = v + i * st;
        __m512 pv[4];
        for (int h = 0; h < NH; h++) pv[h] = _mm512_set1_ps(p[h][j0 + i]);
        for (int b = 0; b < 4; b++) {
            const __m512 vv = _mm512_maskz_loadu_ps(mk[b], vr + 16 * b);
            for (int h = 0; h < NH; h++) a[h][b] = _mm512_fmadd_ps(pv[h], vv, a[h][b]);
        }
    }
    for (int b = 0; b < 4; b++)
        if (mk[b])
            for (int h = 0; h < NH; h++) _mm512_mask_storeu_ps(acc[h] + 16 * b, mk[b], a[h][b]);
}

T_512 void dg_attend_block_avx512(const float *q, int64_t qs, int nq, int nh, int d, const dg_kseg *seg, int nseg, float *sc,
                                  int64_t ldsc, float *acc, float *out, int64_t os, dg_dtype act) {
    const int R = nq * nh;
    const float *qr[DG_ATT_ROWS];
    float *sr[DG_ATT_ROWS], *ar[DG_ATT_ROWS];
    for (int r = 0; r < R; r++) {
        qr[r] = q + (r / nh) * qs + (r % nh) * d;
        sr[r] = sc + r * ldsc;
        ar[r] = acc + (int64_t)r * d;
    }
    int nk = 0;
    for (int g = 0; g < nseg; g++) {
        const float *k = seg[g].k;
        const int64_t st = seg[g].stride;
        int j = 0;
        for (; j + 4 <= seg[g].n; j += 4, nk += 4)
            for (int r = 0; r < R; r += 4) {
                const float *k0 = k + j * st;
                switch (R - r < 4 ? R - r : 4) {
                case 1: blk_scores(qr + r, d, k0, st, sr + r, nk, 1); break;
                case 2: blk_scores(qr + r, d, k0, st, sr + r, nk, 2); break;
                case 3: blk_scores(qr + r, d, k0, st, sr + r, nk, 3); break;
                default: blk_scores(qr + r, d, k0, st, sr + r, nk, 4); break;
                }
            }
        for (; j < seg[g].n; j++, nk++)
            for (int r = 0; r < R; r++) sr[r][nk] = dg_dot_f32_avx512(qr[r], k + j * st, d);
    }
    float sum[DG_ATT_ROWS];
    for (int r = 0; r < R; r++) sum[r] = att_weights(sr[r], nk, act);
    int j0 = 0, first = 1;
    for (int g = 0; g < nseg; g++) {
        const int64_t st = seg[g].stride;
        for (int i0 = 0; i0 < seg[g].n; i0 += ATT_KB) {
            const int n = seg[g].n - i0 < ATT_KB ? seg[g].n - i0 : ATT_KB;
            for (int c0 = 0; c0 < d; c0 += 64) {
                const int w = d - c0 < 64 ? d - c0 : 64;
                const float *v = seg[g].v + i0 * st + c0;
                for (int r = 0; r < R; r += 4) {
                    float *pa[4] = {0, 0, 0, 0};
                    for (int h = 0; h < 4 && r + h < R; h++) pa[h] = ar[r + h] + c0;
                    switch (R - r < 4 ? R - r : 4) {
                    case 1: blk_pv(v, st, n, w, sr + r, j0 + i0, pa, first, 1); break;
                    case 2: blk_pv(v, st, n, w, sr + r, j0 + i0, pa, first, 2); break;
                    case 3: blk_pv(v, st, n, w, sr + r, j0 + i0, pa, first, 3); break;
                    default: blk_pv(v, st, n, w, sr + r, j0 + i0, pa, first, 4); break;
                    }
                }
            }
            first = 0;
        }
        j0 += seg[g].n;
    }
    if (first)   /* no keys: 0 / 0, as the single row gives */
        for (int r = 0; r < R; r++) memset(ar[r], 0, sizeof(float) * (size_t)d);
    for (int r = 0; r < R; r++) {
        float *o = out + (r / nh) * os + (r % nh) * d;
        const __m512 inv = _mm512_set1_ps(sum[r]);
        for (int c = 0; c < d; c += 16) {
            const __mmask16 m = d - c >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (d - c)) - 1);
            _mm512_mask_storeu_ps(o + c, m, _mm512_div_ps(_mm512_maskz_loadu_ps(m, ar[r] + c), inv));
        }
    }
}

/* gelu_tanh(x) = x / 2 (1 + tanh(y)), y = sqrt(2/pi) (x + 0.044715 x^3); tanh(y) = (1 - e) / (1 + e)
 * with e = exp(-2|y|) and the sign of y; no overflow, NaN kept */
T_512 void dg_gelu_mul_f32_avx512(const float *g, const float *u, float *out, int n, dg_dtype act) {
    const __m512 one = _mm512_set1_ps(1.0f), half = _mm512_set1_ps(0.5f), c0 = _mm512_set1_ps(0.7978845608028654f), c1 = _mm512_set1_ps(0.044715f);
    const __m512i sign = _mm512_set1_epi32((int)0x80000000u);
    for (int i = 0; i < n; i += 16) {
        const __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        const __m512 x = _mm512_maskz_loadu_ps(m, g + i);
        const __m512 y = _mm512_mul_ps(c0, _mm512_fmadd_ps(_mm512_mul_ps(c1, x), _mm512_mul_ps(x, x), x));
        const __m512 ay = _mm512_castsi512_ps(_mm512_andnot_si512(sign, _mm512_castps_si512(y)));
        const __m512 e = exp512(_mm512_min_ps(_mm512_setzero_ps(), _mm512_mul_ps(ay, _mm512_set1_ps(-2.0f))));
        __m512 t = _mm512_div_ps(_mm512_sub_ps(one, e), _mm512_add_ps(one, e));
        t = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(t), _mm512_and_si512(_mm512_castps_si512(y), sign)));
        const __m512 gl = round_act512(_mm512_mul_ps(_mm512_mul_ps(half, x), _mm512_add_ps(one, t)), act);
        _mm512_mask_storeu_ps(out + i, m, round_act512(_mm512_mul_ps(gl, _mm512_maskz_loadu_ps(m, u + i)), act));
    }
}

/* the soft embedding's inner block: 8 tokens x 32 columns of accumulators in registers, one
 * broadcast probability per token and row of E */
T_512 void dg_nn_block_avx512(const float *p, int64_t ldp, int n, const float *pan, int nv, float *acc) {
    for (int t0 = 0; t0 < n; t0 += 8) {
        const int mt = n - t0 < 8 ? n - t0 : 8;
        __m512 a[8][2];
        for (int i = 0; i < mt; i++) {
            a[i][0] = _mm512_loadu_ps(acc + (int64_t)(t0 + i) * 32);
            a[i][1] = _mm512_loadu_ps(acc + (int64_t)(t0 + i) * 32 + 16);
        }
        const float *pt = p + (int64_t)t0 * ldp;
        if (mt == 8) {
            for (int v = 0; v < nv; v++) {
                const __m512 e0 = _mm512_loadu_ps(pan + v * 32), e1 = _mm512_loadu_ps(pan + v * 32 + 16);
                for (int i = 0; i < 8; i++) {
                    const __m512 pv = _mm512_set1_ps(pt[i * ldp + v]);
                    a[i][0] = _mm512_fmadd_ps(pv, e0, a[i][0]);
                    a[i][1] = _mm512_fmadd_ps(pv, e1, a[i][1]);
                }
            }
        } else {
            for (int v = 0; v < nv; v++) {
                const __m512 e0 = _mm512_loadu_ps(pan + v * 32), e1 = _mm512_loadu_ps(pan + v * 32 + 16);
                for (int i = 0; i < mt; i++) {
                    const __m512 pv = _mm512_set1_ps(pt[i * ldp + v]);
                    a[i][0] = _mm512_fmadd_ps(pv, e0, a[i][0]);
                    a[i][1] = _mm512_fmadd_ps(pv, e1, a[i][1]);
                }
            }
        }
        for (int i = 0; i < mt; i++) {
            _mm512_storeu_ps(acc + (int64_t)(t0 + i) * 32, a[i][0]);
            _mm512_storeu_ps(acc + (int64_t)(t0 + i) * 32 + 16, a[i][1]);
        }
    }
}

/* ===== AVX512-BF16: vdpbf16ps on bf16-exact activations and bf16 weights ===== */

#define T_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

/* activations as bf16 rows [n, kp] (kp = K rounded up to 32, zero padded); exact for bf16-exact x */
void dg_pack_rows_bf16(dg_job *j) {
    const int64_t K = j->w->cols;
    j->kp = (K + DG_KC - 1) / DG_KC * DG_KC;
    uint16_t *xb = j->k->xpack;
    for (int t = 0; t < j->n; t++) {
        for (int64_t k = 0; k < K; k++) xb[t * j->kp + k] = dg_f32_to_bf16(j->x[t * K + k]);
        for (int64_t k = K; k < j->kp; k++) xb[t * j->kp + k] = 0;
    }
}

T_BF16 static inline __attribute__((always_inline)) void bf16_block(const uint16_t *x, int64_t ldx, const uint8_t *w,
                                                                     int64_t ldw, int64_t K, float *y, int64_t ldy,
                                                                     int MT, int MR) {
    __m512 acc[4][4];
    for (int i = 0; i < MT; i++)
        for (int r = 0; r < MR; r++) acc[i][r] = _mm512_setzero_ps();
    for (int64_t k = 0; k < K; k += 32) {
        const __mmask32 m = K - k >= 32 ? (__mmask32)0xffffffffu : (__mmask32)((1u << (K - k)) - 1);
        __m512bh wv[4];
        for (int r = 0; r < MR; r++) wv[r] = (__m512bh)_mm512_maskz_loadu_epi16(m, (const uint16_t *)(w + r * ldw) + k);
        for (int i = 0; i < MT; i++) {
            const __m512bh xv = (__m512bh)_mm512_loadu_si512((const void *)(x + i * ldx + k));
            for (int r = 0; r < MR; r++) acc[i][r] = _mm512_dpbf16_ps(acc[i][r], xv, wv[r]);
        }
    }
    for (int i = 0; i < MT; i++)
        for (int r = 0; r < MR; r++) y[i * ldy + r] = _mm512_reduce_add_ps(acc[i][r]);
}

T_BF16 void dg_task_avx512_bf16(const dg_job *j, int64_t r0, int nr, float *panel) {
    (void)panel;
    const uint16_t *x = j->k->xpack;
    const uint8_t *w = (const uint8_t *)j->w->data + (size_t)r0 * j->w->row_bytes;
    const int64_t ldw = (int64_t)j->w->row_bytes, K = j->w->cols, ldy = j->w->rows;
    float *y = j->y + r0;
    for (int t = 0; t < j->n; t += 4) {
        const int mt = j->n - t < 4 ? j->n - t : 4;
        for (int r = 0; r < nr; r += 4) {
            const int mr = nr - r < 4 ? nr - r : 4;
            const uint16_t *xt = x + t * j->kp;
            const uint8_t *wr = w + r * ldw;
            float *yt = y + t * ldy + r;
            if (mt == 4 && mr == 4) bf16_block(xt, j->kp, wr, ldw, K, yt, ldy, 4, 4);
            else if (mr == 4)
                for (int i = 0; i < mt; i++) bf16_block(xt + i * j->kp, j->kp, wr, ldw, K, yt + i * ldy, ldy, 1, 4);
            else
                for (int i = 0; i < mt; i++)
                    for (int q = 0; q < mr; q++) bf16_block(xt + i * j->kp, j->kp, wr + q * ldw, ldw, K, yt + i * ldy + q, ldy, 1, 1);
        }
    }
}

/* ===== AMX-BF16 =====
 * A tiles: 16 weight rows x 32 bf16 (row-major, K contiguous: the weights as stored).
 * B tiles: 16 pairs of K x 16 tokens, the "VNNI" layout: row p holds (x[t][2p], x[t][2p+1]) for t.
 * C tiles: 16 weight rows x 16 tokens, float32; written transposed into y[t][r].
 * Registers: C in tiles 0-3 (2 row blocks x 2 token blocks), A in 4-5, B in 6-7. */

#define T_AMX __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512vl,avx512bf16")))

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tilecfg;

/* one token block: each token's 32 values of a K chunk become 16 bf16 pairs, scattered down the
 * tile's rows at the token's column */
/* 16 x 16 dwords transposed in registers: r[i] element j becomes r[j] element i */
T_AMX static inline void transpose16_epi32(__m512i r[16]) {
    __m512i t[16];
    for (int i = 0; i < 16; i += 2) {   /* 2 x 2 blocks of dwords */
        t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {   /* 4 x 4 */
        r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
        r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
        r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
        r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    /* each 128-bit lane of r[0..15] now holds a transposed 4 x 4 block; two rounds of 128-bit lane
     * shuffles put the blocks in their places (8 x 8, then 16 x 16) */
    for (int i = 0; i < 4; i++) {
        t[i] = _mm512_shuffle_i32x4(r[i], r[i + 4], 0x88);        /* lanes 0, 2 of each */
        t[i + 4] = _mm512_shuffle_i32x4(r[i], r[i + 4], 0xdd);    /* lanes 1, 3 */
        t[i + 8] = _mm512_shuffle_i32x4(r[i + 8], r[i + 12], 0x88);
        t[i + 12] = _mm512_shuffle_i32x4(r[i + 8], r[i + 12], 0xdd);
    }
    for (int i = 0; i < 4; i++) {
        r[i] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0xdd);
        r[i + 4] = _mm512_shuffle_i32x4(t[i + 4], t[i + 12], 0x88);
        r[i + 12] = _mm512_shuffle_i32x4(t[i + 4], t[i + 12], 0xdd);
    }
}

/* m (<= 32) floats at src as 32 bf16 (vcvtne2ps2bf16: nearest even, denormals as zero), zero past m:
 * one tile row */
T_AMX static inline __m512i ld32_bf16(const float *src, int64_t m) {
    const __mmask16 lo = m >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << m) - 1);
    const __mmask16 hi = m >= 32 ? (__mmask16)0xffff : m > 16 ? (__mmask16)((1u << (m - 16)) - 1) : 0;
    return (__m512i)_mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(hi, src + 16), _mm512_maskz_loadu_ps(lo, src));
}

/* the lanes of a 32-value chunk [k0, k0 + 32) of a row of K that fall inside it ([0, K); k0 may be
 * negative, for a K chunked from a cache line: dg_job.shift) */
static inline uint32_t chunk_lanes(int64_t K, int64_t k0) {
    const int64_t lo = k0 < 0 ? -k0 : 0, hi = K - k0 < 32 ? K - k0 : 32;
    return hi <= lo ? 0u : (0xffffffffu >> (32 - (hi - lo))) << lo;
}

/* A B tile of 16 rows of K (tokens, keys; NULL: zero) and the 32 values k0 .. k0 + 32 of each (zero
 * outside [0, K); the lanes outside are not read): every row's values become 16 bf16 pairs (one dword
 * each), transposed in registers so that tile row p holds pair p of every row (the "VNNI" B layout),
 * stored as one contiguous KB (in-process A/B against a scatter per row: a layer's gate_up experts 3 %
 * faster) */
T_AMX static inline void pack_btile(const float *const x[16], int64_t K, int64_t k0, uint16_t *tile) {
    const uint32_t m = chunk_lanes(K, k0);
    __m512i r[16];
    for (int t = 0; t < 16; t++)
        r[t] = x[t] ? (__m512i)_mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps((__mmask16)(m >> 16), x[t] + k0 + 16),
                                                    _mm512_maskz_loadu_ps((__mmask16)(m & 0xffff), x[t] + k0))
                    : _mm512_setzero_si512();
    transpose16_epi32(r);
    for (int p = 0; p < 16; p++) _mm512_storeu_si512((void *)(tile + p * 32), r[p]);
}

/* 16 bf16 values of two rows interleaved (a0 b0 a1 b1 ...): one row of a B tile whose K pairs are the
 * two rows */
T_AMX static inline __m512i pair16(__m256i a, __m256i b) {
    const __m512i idx = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8,
                                         23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    return _mm512_permutexvar_epi16(idx, _mm512_inserti64x4(_mm512_castsi256_si512(a), b, 1));
}

/* one token block: a B tile per K chunk */
T_AMX void dg_pack_amx_tb(const dg_job *j, int tb) {
    const int64_t K = j->w->cols, nkc = j->kp / DG_KC;
    const float *x[16];
    for (int t = 0; t < 16; t++) {
        const int tok = tb * 16 + t;
        x[t] = tok < j->n ? j->x + (int64_t)(j->xrows ? j->xrows[tok] : tok) * K : NULL;
    }
    for (int64_t kc = 0; kc < nkc; kc++) pack_btile(x, K, kc * 32 - j->shift, j->xp + ((size_t)tb * nkc + kc) * 512);
}

static void pack_amx_block(void *ctx, int tb, int tid) {
    (void)tid;
    dg_pack_amx_tb(ctx, tb);
}

/* packed activations: [token block][K chunk][16 pair rows][16 tokens][2] bf16, zero padded */
void dg_pack_amx(dg_job *j) {
    j->kp = (j->w->cols + j->shift + DG_KC - 1) / DG_KC * DG_KC;
    if (!j->xp) j->xp = j->k->xpack;
    dg_pool_run(j->k->pool, (j->n + 15) / 16, pack_amx_block, j);
}

/* The rows [r0, r0+nr) as bf16 A tiles laid out tile after tile: tile (kc, half) holds rows
 * half*16 .. +16 and K values kc*32 .. +32 at panel-bf16 + (kc * 2 + half) * 512, each tile one
 * contiguous KB (tile loads with a 64-byte stride: no page walks across 16 weight rows), zero padded.
 * bf16 weights are copied as they are (only for a task of fewer than 32 rows or a K that is no multiple of
 * 32: dg_task_amx loads whole tasks' bf16 rows in place); other types are dequantized to float32 and
 * rounded to bf16. */
/* the 32 bf16 values [k0, k0 + 32) of a row of K (zero outside [0, K); the lanes outside are not read) */
T_AMX static inline __m512i chunk_bf16(const uint16_t *row, int64_t K, int64_t k0) {
    return _mm512_maskz_loadu_epi16((__mmask32)chunk_lanes(K, k0), row + k0);
}

#define PFW 4   /* rows ahead */
T_AMX static const uint16_t *amx_rows(const dg_job *j, int64_t r0, int nr, float *panel) {
    const dg_mat *w = j->w;
    const int64_t K = w->cols, nkc = j->kp / DG_KC;
    uint16_t *pb = (uint16_t *)(panel + (size_t)DG_RB * j->kp);   /* after the f32 area */
    /* the weights stream from memory once per step: for one token block (an expert's rows) of a type of
     * 5 bits or more per weight (Q5_0, Q8_0, bf16), whose conversion outruns memory, ask for the rows
     * ahead of the one being converted. In-process A/B, a layer's 128 experts: Q8_0 down 7-9 % faster,
     * Q5_0 down 3-4 %; Q4_K gate_up 4-7 % slower with it; neutral to 3 % slower for the bf16 LM head
     * (256 tokens), as was a prefetch of the next task's rows into L2 during the tile products (13 %). */
    const int pfw = w->row_bytes * 8 >= (size_t)K * 5 && j->n <= 16 ? PFW : 0;   /* 5 bits per weight or more */
    if (pfw) {
        const char *b0 = (const char *)w->data + (size_t)r0 * w->row_bytes;
        const size_t ahead = (size_t)PFW * w->row_bytes, tot = (size_t)nr * w->row_bytes;
        for (size_t o = 0; o < ahead && o < tot; o += 64) _mm_prefetch(b0 + o, _MM_HINT_T0);
    }
    /* the GGUF block types straight into the tile rows: the row loop resolved once per task */
    const int blk = w->dt == DG_BF16 ? 0 : dg_gguf_block_elems(w->dt);
    const dg_bf16tiles_fn bq = blk && K % blk == 0 ? dg_bf16tiles_row_fn(w->dt) : NULL;
    for (int r = 0; r < DG_RB; r++) {
        uint16_t *dst = pb + (size_t)(r / 16) * 512 + (size_t)(r % 16) * 32;
        if (pfw && r + PFW < nr) {
            const char *nx = (const char *)w->data + (size_t)(r0 + r + PFW) * w->row_bytes;
            for (size_t o = 0; o < w->row_bytes; o += 64) _mm_prefetch(nx + o, _MM_HINT_T0);
        }
        if (r >= nr) {
            for (int64_t kc = 0; kc < nkc; kc++) memset(dst + kc * 1024, 0, 64);
            continue;
        }
        if (w->dt == DG_BF16) {
            const uint16_t *src = (const uint16_t *)((const uint8_t *)w->data + (size_t)(r0 + r) * w->row_bytes);
            for (int64_t kc = 0; kc < nkc; kc++)
                _mm512_storeu_si512((void *)(dst + kc * 1024), chunk_bf16(src, K, kc * 32 - j->shift));
        } else {
            /* the GGUF block types straight into the tile rows (the same bf16 values as below) */
            if (bq) {
                bq((const uint8_t *)w->data + (size_t)(r0 + r) * w->row_bytes, dst, K / blk);
                continue;
            }
            /* otherwise the whole row dequantized into the first row of the float area (one dispatch
             * per row, the row in L1), then each 32-value piece rounded to bf16 into its tile row */
            dg_panel_f32(w, r0 + r, 1, panel);
            for (int64_t kc = 0; kc < nkc; kc++)
                _mm512_storeu_si512((void *)(dst + kc * 1024), ld32_bf16(panel + kc * 32, K - kc * 32 < 32 ? K - kc * 32 : 32));
        }
    }
    return pb;
}

/* C tile [16 weight rows][16 tokens] into y[token][row]: one gathered column per token, stored as a
 * contiguous run of the token's outputs */
/* stream: whole 16-value rows that start a 64-byte line go around the caches (non-temporal). The LM
 * head writes 128 bytes to each of 256 rows 1 MB apart per task: ordinary stores read every line in
 * first and ran at 3.3 GB/s (one thread, that pattern, alone), non-temporal ones at 13.9; the whole
 * product (32,768 rows, 256 tokens, in process, alternating) 0.86-0.89x the time. */
T_AMX static void amx_store(float *c, int nrow, int ntok, float *y, int64_t ldy, int rbf, float cap, int stream) {
    const __m512 capv = _mm512_set1_ps(cap);
    const __m512i col = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0), _mm512_set1_epi32(16));
    const __mmask16 m = (__mmask16)((1u << nrow) - 1);
    for (int t = 0; t < ntok; t++) {
        __m512 v = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, col, c + t, 4);
        if (rbf) v = round_bf16_512(v);
        if (cap > 0.0f) v = softcap512(v, capv);   /* dg_softcap_f32's function, on the rounded value */
        float *dst = y + t * ldy;
        if (stream && nrow == 16 && !((uintptr_t)dst & 63)) _mm512_stream_ps(dst, v);
        else _mm512_mask_storeu_ps(dst, m, v);
    }
}

/* K is walked in blocks of AMX_KB chunks (256 values): the two A tiles' rows of one block (16 KB) stay
 * in L1 while every token block streams past, so each step loads its B tiles only from L2; the C tiles
 * of all token blocks live in a per-task buffer between K blocks. */
enum { AMX_KB = 8 };
/* software prefetch of the next chunk's B tiles (in-process A/B on the LM head: 6-8 % faster) */
#define PF 1

static int amx_direct(const dg_job *j, int nr) { return j->w->dt == DG_BF16 && nr == DG_RB && j->w->cols % DG_KC == 0; }

T_AMX void dg_task_amx(const dg_job *j, int64_t r0, int nr, float *panel) {
    __attribute__((aligned(64))) tilecfg cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.palette = 1;
    for (int i = 0; i < 8; i++) { cfg.colsb[i] = 64; cfg.rows[i] = 16; }
    /* bf16 weights of whole 32-row tasks are loaded into the A tiles straight from their rows (stride:
     * one row) instead of being copied tile by tile into the panel first. In-process A/B, same results:
     * the LM head (256 tokens, file-mapped weights) 0.83-0.88x the time; a layer's bf16 experts at 16
     * tokens each, gate_up 0.48x and down 0.85x. (The panel's contiguous tiles had been chosen to spare
     * page walks; the copy cost more than they do.) */
    const int direct = amx_direct(j, nr);
    const uint16_t *a = direct ? (const uint16_t *)((const uint8_t *)j->w->data + (size_t)r0 * j->w->row_bytes) : amx_rows(j, r0, nr, panel);
    const int64_t lda = direct ? (int64_t)j->w->row_bytes : 64;          /* bytes between a tile's rows */
    const int64_t akc = direct ? 32 : 1024, ahalf = direct ? 8 * lda : 512;   /* bf16 elements: next K chunk, second tile */
    const uint16_t *xb = j->xp;
    const int64_t nkc = j->kp / DG_KC, ldy = j->w->rows;
    /* shifted rows (j->shift): the middle chunks load in place from a line; the first and the last,
     * which reach past the row, go through a 4 KB panel [2 chunks][32 rows][32] (masked loads) */
    uint16_t *edge = (uint16_t *)(panel + (size_t)DG_RB * j->kp);
    const int sh = direct ? j->shift : 0;
    if (sh)
        for (int r = 0; r < DG_RB; r++) {
            const uint16_t *src = a + (size_t)r * (size_t)(lda / 2);
            _mm512_storeu_si512((void *)(edge + r * 32), chunk_bf16(src, j->w->cols, -sh));
            _mm512_storeu_si512((void *)(edge + 1024 + r * 32), chunk_bf16(src, j->w->cols, (nkc - 1) * 32 - sh));
        }
    const int ntb = (j->n + 15) / 16;
    const int two_a = nr > 16;
    float *y = j->y + r0;
    /* C of token block tb, weight block wb: cb + (tb * 2 + wb) * 256 floats */
    float *cb = (float *)((uint8_t *)panel + (size_t)DG_RB * j->kp * (sizeof(float) + sizeof(uint16_t)));
    _tile_loadconfig(&cfg);
    for (int64_t k0 = 0; k0 < nkc; k0 += AMX_KB) {
        const int64_t k1 = k0 + AMX_KB < nkc ? k0 + AMX_KB : nkc;
        for (int tb = 0; tb < ntb; tb += 2) {
            const int two_b = tb + 1 < ntb;
            float *c00 = cb + (size_t)tb * 512, *c10 = c00 + 512;   /* [tb][wb] */
            if (k0 == 0) {
                _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
            } else {
                _tile_loadd(0, c00, 64);
                if (two_b) _tile_loadd(1, c10, 64);
                if (two_a) {
                    _tile_loadd(2, c00 + 256, 64);
                    if (two_b) _tile_loadd(3, c10 + 256, 64);
                }
            }
            const uint16_t *b0 = xb + (size_t)tb * nkc * 512, *b1 = b0 + (size_t)nkc * 512;
            for (int64_t kc = k0; kc < k1; kc++) {
                if (PF) {
                    const char *p0 = (const char *)(b0 + (kc + 1) * 512), *p1 = (const char *)(b1 + (kc + 1) * 512);
                    for (int l = 0; l < 16; l++) _mm_prefetch(p0 + l * 64, _MM_HINT_T0);
                    if (two_b) for (int l = 0; l < 16; l++) _mm_prefetch(p1 + l * 64, _MM_HINT_T0);
                }
                const int e = sh && (kc == 0 || kc == nkc - 1);
                const uint16_t *ak = e ? edge + (kc ? 1024 : 0) : a + kc * akc - sh;
                const int64_t ld = e ? 64 : lda, ah = e ? 512 : ahalf;
                _tile_loadd(4, ak, ld);
                _tile_loadd(6, b0 + kc * 512, 64);
                _tile_dpbf16ps(0, 4, 6);
                if (two_b) { _tile_loadd(7, b1 + kc * 512, 64); _tile_dpbf16ps(1, 4, 7); }
                if (two_a) {
                    _tile_loadd(5, ak + ah, ld);
                    _tile_dpbf16ps(2, 5, 6);
                    if (two_b) _tile_dpbf16ps(3, 5, 7);
                }
            }
            _tile_stored(0, c00, 64);
            if (two_b) _tile_stored(1, c10, 64);
            if (two_a) {
                _tile_stored(2, c00 + 256, 64);
                if (two_b) _tile_stored(3, c10 + 256, 64);
            }
        }
    }
    _tile_release();
    const int nr0 = nr < 16 ? nr : 16, nr1 = nr - 16;
    for (int tb = 0; tb < ntb; tb++) {
        const int nt = j->n - tb * 16 < 16 ? j->n - tb * 16 : 16;
        amx_store(cb + (size_t)tb * 512, nr0, nt, y + (int64_t)tb * 16 * ldy, ldy, j->round_bf16, j->cap, j->stream);
        if (two_a) amx_store(cb + (size_t)tb * 512 + 256, nr1, nt, y + (int64_t)tb * 16 * ldy + 16, ldy, j->round_bf16, j->cap, j->stream);
    }
    if (j->stream) _mm_sfence();   /* the non-temporal stores ordered before the task is reported done */
}

#endif /* __x86_64__ */

#if defined(__x86_64__)
/* ===== AMX: attention for a block of rows (queries x heads of one KV group, bf16 activations) =====
 * The same rule as dg_attend_block_avx512 (scores q.k in float32, p = exp(s - max) rounded to bf16,
 * out = sum p v / sum e) with both products on the tiles: Q as A tiles [16 rows x 32 d], K^T as B tiles
 * (16 keys, pairs of d down the rows, transposed in registers), the scores stored straight into the
 * rows' score buffer; then P as A tiles [16 rows x 32 keys] and V as B tiles (pairs of keys interleaved,
 * 16 columns of d), the C tiles of two column tiles kept over DG_ATT_KG keys. Every input is bf16-exact
 * (the activations of a bf16 model are), so only the float32 summation order differs from the FMA
 * kernel. Scratch (dg_attend_amx_scratch bytes): Q tiles, one K group, P and V tiles of DG_ATT_KG keys. */
enum { DG_ATT_KG = 128 };   /* keys per P.V group */

size_t dg_attend_amx_scratch(int d) {
    return (size_t)2 * d * 32 * 2 + (size_t)d * 16 * 2 + (size_t)DG_ATT_KG * 32 * 2 + (size_t)DG_ATT_KG * d * 2 + 1024 + 64;
}

/* the pointer of key j (NULL past the last): segments walked in order */
static inline const float *seg_row(const dg_kseg *seg, int nseg, int j, int v) {
    for (int g = 0; g < nseg; g++) {
        if (j < seg[g].n) return (v ? seg[g].v : seg[g].k) + (int64_t)j * seg[g].stride;
        j -= seg[g].n;
    }
    return NULL;
}

/* K^T B tiles of the keys [j0, j0 + 16) (keys past nk zero): d / 32 tiles of one KB at dst */
T_AMX static void att_pack_k16(const dg_kseg *seg, int nseg, int j0, int nk, int d, uint16_t *dst) {
    const float *kr[16];
    for (int t = 0; t < 16; t++) kr[t] = j0 + t < nk ? seg_row(seg, nseg, j0 + t, 0) : NULL;
    for (int c = 0; c < d / 32; c++) pack_btile(kr, d, c * 32, dst + (size_t)c * 512);
}

/* V B tiles of the keys [kb, kb + 32): pairs of keys interleaved, 16 columns per tile (keys past nk
 * zero): d / 16 tiles of one KB at dst */
T_AMX static void att_pack_v32(const dg_kseg *seg, int nseg, int kb, int nk, int d, uint16_t *dst) {
    const int m = nk - kb < 32 ? nk - kb : 32, nct = d / 16;
    for (int p = 0; p < 16; p++) {
        const float *va = 2 * p < m ? seg_row(seg, nseg, kb + 2 * p, 1) : NULL;
        const float *vb = 2 * p + 1 < m ? seg_row(seg, nseg, kb + 2 * p + 1, 1) : NULL;
        for (int ct = 0; ct < nct; ct++) {
            const __m256i a = va ? (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(va + ct * 16)) : _mm256_setzero_si256();
            const __m256i b = vb ? (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(vb + ct * 16)) : _mm256_setzero_si256();
            _mm512_storeu_si512((void *)(dst + (size_t)ct * 512 + p * 32), pair16(a, b));
        }
    }
}

/* the keys' and values' tiles of nk keys packed once for all the blocks that see them (pk: the K tiles
 * of every 16 keys, then the V tiles of every 32); chunks [c0, c1) of 32 keys */
T_AMX void dg_attend_amx_pack(const dg_kseg *seg, int nseg, int nk, int d, void *pk, int c0, int c1, int two) {
    size_t v0, v1;
    dg_att_pack_layout(nk, d, two, &v0, &v1);
    uint16_t *kp = pk, *vp = kp + v0, *vp1 = kp + v1;
    for (int c = c0; c < c1; c++) {
        for (int j0 = 32 * c; j0 < 32 * c + 32 && j0 < nk; j0 += 16) att_pack_k16(seg, nseg, j0, nk, d, kp + (size_t)(j0 / 16) * (d / 32) * 512);
        att_pack_v32(seg, nseg, 32 * c, nk, d, vp + (size_t)c * (d / 16) * 512);
        if (two && 32 * c + 16 < nk) att_pack_v32(seg, nseg, 32 * c + 16, nk, d, vp1 + (size_t)c * (d / 16) * 512);
    }
}

T_AMX void dg_attend_block_amx(const float *q, int64_t qs, int nq, int nh, int d, const dg_kseg *seg, int nseg, float *sc,
                               int64_t ldsc, float *acc, float *out, int64_t os, const int *valid, void *scratch, const uint16_t *kpk,
                               const uint16_t *vpk, int nkp) {
    const int R = nq * nh, nkc = d / 32;
    int nk = 0;
    for (int g = 0; g < nseg; g++) nk += seg[g].n;
    if (kpk) nk = nkp;
    uint16_t *qt = (uint16_t *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63);   /* [2 row tiles][nkc][16][32] */
    uint16_t *kt = qt + (size_t)2 * nkc * 512;                                   /* [nkc] B tiles of 16 keys */
    uint16_t *pt = kt + (size_t)nkc * 512;                                       /* [KG/32][2][16][32] */
    uint16_t *vt = pt + (size_t)DG_ATT_KG / 32 * 2 * 512;                        /* [KG/32][d/16] */
    float *tail = (float *)(vt + (size_t)DG_ATT_KG / 32 * (d / 16) * 512);       /* [16][16] */
    /* Q rows as bf16 A tiles (rows past R zero) */
    for (int r = 0; r < 32; r++) {
        const float *qr = r < R ? q + (r / nh) * qs + (r % nh) * d : NULL;
        for (int c = 0; c < nkc; c++) {
            uint16_t *dst = qt + ((size_t)(r / 16) * nkc + c) * 512 + (r % 16) * 32;
            _mm512_storeu_si512((void *)dst, qr ? ld32_bf16(qr + c * 32, 32) : _mm512_setzero_si512());
        }
    }
    __attribute__((aligned(64))) tilecfg cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.palette = 1;
    for (int i = 0; i < 8; i++) { cfg.colsb[i] = 64; cfg.rows[i] = 16; }
    _tile_loadconfig(&cfg);
    const int two = R > 16;
    /* scores: 16 keys at a time */
    /* prepacked tiles: the keys' from kpk, the values' from vpk (nk keys) */
    for (int j0 = 0; j0 < nk; j0 += 16) {
        const uint16_t *kt16 = kt;
        if (kpk) kt16 = kpk + (size_t)(j0 / 16) * nkc * 512;
        else att_pack_k16(seg, nseg, j0, nk, d, kt);
        _tile_zero(0);
        _tile_zero(1);
        for (int c = 0; c < nkc; c++) {
            _tile_loadd(6, kt16 + (size_t)c * 512, 64);
            _tile_loadd(4, qt + (size_t)c * 512, 64);
            _tile_dpbf16ps(0, 4, 6);
            if (two) { _tile_loadd(5, qt + ((size_t)nkc + c) * 512, 64); _tile_dpbf16ps(1, 5, 6); }
        }
        if (j0 + 16 <= nk) {
            _tile_stored(0, sc + j0, ldsc * 4);
            if (two) _tile_stored(1, sc + 16 * ldsc + j0, ldsc * 4);
        } else {   /* the last keys: only the valid columns (the rows' buffers end at ldsc) */
            for (int h = 0; h < 1 + two; h++) {
                if (h) _tile_stored(1, tail, 64);   /* the tile number must be a constant */
                else _tile_stored(0, tail, 64);
                for (int r = 0; r < 16 && h * 16 + r < R; r++)
                    memcpy(sc + (int64_t)(h * 16 + r) * ldsc + j0, tail + r * 16, sizeof(float) * (size_t)(nk - j0));
            }
        }
    }
    if (valid)   /* rows that see part of the keys (a causal block): the others' scores to -inf, weight 0 */
        for (int r = 0; r < R; r++) {
            float *sr = sc + (int64_t)r * ldsc;
            const int *v = valid + 4 * r;
            /* the two ranges clamped to [0, nk) and ordered; everything outside their union is filled
             * (was a test per key: about 5 % of a long prefill's attention kernel) */
            int a0 = v[0], a1 = v[1], b0 = v[2], b1 = v[3];
            a0 = a0 < 0 ? 0 : a0 > nk ? nk : a0;
            a1 = a1 < a0 ? a0 : a1 > nk ? nk : a1;
            b0 = b0 < 0 ? 0 : b0 > nk ? nk : b0;
            b1 = b1 < b0 ? b0 : b1 > nk ? nk : b1;
            if (b0 < a0) { int t = a0; a0 = b0; b0 = t; t = a1; a1 = b1; b1 = t; }
            for (int j = 0; j < a0; j++) sr[j] = -INFINITY;
            for (int j = a1; j < b0; j++) sr[j] = -INFINITY;
            for (int j = a1 > b1 ? a1 : b1; j < nk; j++) sr[j] = -INFINITY;
        }
    float sum[DG_ATT_ROWS];
    for (int r = 0; r < R; r++) sum[r] = att_weights(sc + (int64_t)r * ldsc, nk, DG_BF16);
    /* P.V over groups of DG_ATT_KG keys: P and V packed, then per pair of 16-column tiles the C tiles of
     * both row tiles carried over the group and kept in acc between groups */
    const int nct = d / 16;
    for (int g0 = 0; g0 < nk; g0 += DG_ATT_KG) {
        const int gn = nk - g0 < DG_ATT_KG ? nk - g0 : DG_ATT_KG, nch = (gn + 31) / 32;
        for (int ch = 0; ch < nch; ch++) {
            /* P: rows' 32 weights of this chunk (zero past nk) */
            const int kb = g0 + ch * 32, m = nk - kb < 32 ? nk - kb : 32;
            for (int r = 0; r < 32; r++)
                _mm512_storeu_si512((void *)(pt + ((size_t)ch * 2 + r / 16) * 512 + (r % 16) * 32),
                                    r < R ? ld32_bf16(sc + (int64_t)r * ldsc + kb, m) : _mm512_setzero_si512());
            /* V: pairs of keys interleaved, 16 columns per tile */
            if (!vpk) att_pack_v32(seg, nseg, kb, nk, d, vt + (size_t)ch * nct * 512);
        }
        /* each chunk's V tiles; shared tiles of a last, partial chunk copied with the keys past nk
         * zeroed, as the kernel's own packing leaves them (their weights are 0, but 0 x inf is NaN) */
        const uint16_t *vch[DG_ATT_KG / 32];
        for (int ch = 0; ch < nch; ch++) vch[ch] = vpk ? vpk + (size_t)(g0 / 32 + ch) * nct * 512 : vt + (size_t)ch * nct * 512;
        if (vpk && nk - (g0 + (nch - 1) * 32) < 32) {
            const int m = nk - (g0 + (nch - 1) * 32);
            uint16_t *v = vt + (size_t)(nch - 1) * nct * 512;
            for (int ct = 0; ct < nct; ct++)
                for (int p = 0; p < 16; p++) {
                    const __m512i r = _mm512_loadu_si512((const void *)(vch[nch - 1] + (size_t)ct * 512 + p * 32));
                    /* pair p holds keys 2p (even lanes) and 2p + 1 (odd lanes) */
                    const __mmask32 keep = 2 * p + 1 < m ? (__mmask32)0xffffffffu : 2 * p < m ? (__mmask32)0x55555555u : 0;
                    _mm512_storeu_si512((void *)(v + (size_t)ct * 512 + p * 32), _mm512_maskz_mov_epi16(keep, r));
                }
            vch[nch - 1] = v;
        }
        for (int ct = 0; ct < nct; ct += 2) {
            float *c0 = acc + ct * 16, *c1 = acc + (int64_t)16 * d + ct * 16;   /* acc [32 rows][d] */
            if (g0 == 0) { _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3); }
            else {
                _tile_loadd(0, c0, d * 4);
                _tile_loadd(1, c0 + 16, d * 4);
                if (two) { _tile_loadd(2, c1, d * 4); _tile_loadd(3, c1 + 16, d * 4); }
            }
            for (int ch = 0; ch < nch; ch++) {
                _tile_loadd(6, vch[ch] + (size_t)ct * 512, 64);
                _tile_loadd(7, vch[ch] + (size_t)(ct + 1) * 512, 64);
                _tile_loadd(4, pt + (size_t)ch * 2 * 512, 64);
                _tile_dpbf16ps(0, 4, 6);
                _tile_dpbf16ps(1, 4, 7);
                if (two) {
                    _tile_loadd(5, pt + ((size_t)ch * 2 + 1) * 512, 64);
                    _tile_dpbf16ps(2, 5, 6);
                    _tile_dpbf16ps(3, 5, 7);
                }
            }
            _tile_stored(0, c0, d * 4);
            _tile_stored(1, c0 + 16, d * 4);
            if (two) { _tile_stored(2, c1, d * 4); _tile_stored(3, c1 + 16, d * 4); }
        }
    }
    _tile_release();
    if (!nk)
        for (int r = 0; r < R; r++) memset(acc + (int64_t)r * d, 0, sizeof(float) * (size_t)d);
    for (int r = 0; r < R; r++) {
        float *o = out + (r / nh) * os + (r % nh) * d;
        const __m512 inv = _mm512_set1_ps(sum[r]);
        for (int c = 0; c < d; c += 16) _mm512_storeu_ps(o + c, _mm512_div_ps(_mm512_loadu_ps(acc + (int64_t)r * d + c), inv));
    }
}

/* ===== AMX: probabilities times the embedding (self-conditioning) =====
 * y[t][h] = sum_v P[t][v] E[v][h]. A tiles: P as bf16 [16 tokens x 32 v] (packed once per call
 * into k->pbuf, each tile one contiguous KB); B tiles: E[32 v x 16 h] in the pair-interleaved layout, packed per task from the
 * embedding rows (a block of 1024 rows x 256 columns at a time, 512 KB, kept in L2); C: 16 tokens x
 * 16 columns accumulated across the whole vocabulary in a per-task buffer. One task per 256
 * columns, so P is streamed once per 256 columns and E once in all. */

typedef struct {
    const dg_kctx *k;
    float *y;
    const float *p;
    int64_t ldp, vp;
    int n;
    const dg_mat *e;
} amx_nn_job;

/* P row t as bf16 into the A tiles of its token block: tile (tb, kc) is one contiguous KB at
 * pbuf + (tb * vp / 32 + kc) * 512, row t % 16 (rows past n are zero). Contiguous tiles: the rows of a
 * row-major P are vp * 2 bytes (512 KB) apart, so a strided tile load touched 16 pages. */
T_AMX static void nn_pack_prow(const dg_kctx *k, int t, const float *src, int64_t V) {
    const int64_t nkc = (V + 31) / 32;
    uint16_t *dst = k->pbuf + (int64_t)(t / 16) * nkc * 512 + (t % 16) * 32;
    if (!src) {
        for (int64_t kc = 0; kc < nkc; kc++) memset(dst + kc * 512, 0, 64);
        return;
    }
    int64_t kc = 0;
    for (; (kc + 1) * 32 <= V; kc++)
        _mm512_storeu_si512((void *)(dst + kc * 512), ld32_bf16(src + kc * 32, 32));
    for (; kc < nkc; kc++)
        for (int i = 0; i < 32; i++) dst[kc * 512 + i] = kc * 32 + i < V ? dg_f32_to_bf16(src[kc * 32 + i]) : 0;
}

T_AMX static void nn_pack_p(void *ctx, int t, int tid) {
    (void)tid;
    const amx_nn_job *j = ctx;
    nn_pack_prow(j->k, t, j->p + (int64_t)t * j->ldp, j->e->rows);
}

void dg_nn_amx_pack_row(const dg_kctx *k, int t, const float *p, int64_t V) { nn_pack_prow(k, t, p, V); }

/* Row t of P straight from its logits x: the maximum (dg_max_f32_avx512's lanes), e = exp(x - max) and
 * its sum into tmp (dg_expsum_f32_avx512's lanes and order, reading x instead of a copy), then
 * p = e / sum (dg_div_f32_avx512), rounded to bf16 (dg_round_bf16_avx512) and converted into the tile
 * rows (nn_pack_prow's instruction, which flushes subnormals): the values of dg_softmax_fast,
 * dg_round_act_fast and nn_pack_prow bit for bit, in three passes over the row instead of six
 * (copy, max, exp, divide, round, pack) */
T_AMX void dg_nn_amx_softmax_pack_row(const dg_kctx *k, int t, const float *x, int64_t V, float *tmp) {
    const int n = (int)V;
    const __m512 dv = _mm512_set1_ps(expsum_to512(x, tmp, n, max512(x, n)));
    const int64_t nkc = (V + 31) / 32;
    uint16_t *dst = k->pbuf + (int64_t)(t / 16) * nkc * 512 + (t % 16) * 32;
    int64_t kc = 0;
    for (; (kc + 1) * 32 <= V; kc++) {
        const __m512 lo = round_bf16_512(_mm512_div_ps(_mm512_loadu_ps(tmp + kc * 32), dv));
        const __m512 hi = round_bf16_512(_mm512_div_ps(_mm512_loadu_ps(tmp + kc * 32 + 16), dv));
        _mm512_storeu_si512((void *)(dst + kc * 512), (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
    }
    if (kc < nkc) {   /* the last piece as nn_pack_prow converts it: one value at a time, zero past V */
        const float sum = _mm512_cvtss_f32(dv);
        for (int q = 0; q < 32; q++) {
            const int64_t v = kc * 32 + q;
            dst[kc * 512 + q] = v < V ? dg_f32_to_bf16(dg_round_bf16(tmp[v] / sum)) : 0;
        }
    }
}

/* B tiles of E rows [v0, v0+nv) (nv a multiple of 32, rows past V zero) and columns [h0, h0+hb):
 * tile (kc, ht) at b + (kc * nht + ht) * 512, row q = pairs (E[v0+32kc+2q][h], E[...+1][h]) */
/* row v's columns [h0, h0+hb) as bf16 (zero past the last row): bf16 rows as stored, other types
 * dequantized (the fast exact dequantizer) and rounded to bf16 */
T_AMX static void nn_row_bf16(const dg_mat *e, int64_t v, int64_t h0, int hb, float *tmp, uint16_t *out) {
    if (v >= e->rows) { memset(out, 0, (size_t)hb * 2); return; }
    if (e->dt == DG_BF16) { memcpy(out, (const uint8_t *)e->data + (size_t)v * e->row_bytes + h0 * 2, (size_t)hb * 2); return; }
    dg_dequant_fast(e, v, h0, hb, tmp);
    int c = 0;
    for (; c + 16 <= hb; c += 16) _mm256_storeu_si256((__m256i *)(out + c), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(tmp + c)));
    for (; c < hb; c++) out[c] = dg_f32_to_bf16(tmp[c]);
}

enum { NN_PF = 16 };   /* embedding rows ahead */
/* qt: scratch for two rows' pieces in the tile-row layout of the GGUF bf16 dequantizers (piece p of
 * 32 values at qt + p * 1024, the second row at qt + DG_NN_HB / 32 * 1024) */
T_AMX static void nn_pack_e(const dg_mat *e, int64_t v0, int nv, int64_t h0, int hb, uint16_t *b, float *tmp, uint16_t *qt) {
    const int nht = (hb + 15) / 16;
    __attribute__((aligned(64))) uint16_t ra[DG_NN_HB + 16], rb[DG_NN_HB + 16];
    memset(ra + hb, 0, 32);
    memset(rb + hb, 0, 32);
    /* block-quantized rows whose blocks this column range holds whole: straight to bf16 pieces, the row
     * loop resolved once (was: a float32 dequantization through three dispatching calls per row piece,
     * then a conversion pass). In-process A/B, 32,768 x 2,816 embedding, 256 tokens, same results:
     * Q6_K 0.95x the time, Q8_0 0.84x. */
    const int blk = e->dt == DG_BF16 ? 0 : dg_gguf_block_elems(e->dt);
    const dg_bf16tiles_fn bq = blk && h0 % blk == 0 && hb % blk == 0 ? dg_bf16tiles_row_fn(e->dt) : NULL;
    const size_t boff = bq ? (size_t)(h0 / blk) * dg_gguf_block_bytes(e->dt) : 0;
    uint16_t *qa = qt, *qb = qt + DG_NN_HB / 32 * 1024;
    for (int kc = 0; kc < nv / 32; kc++)
        for (int q = 0; q < 16; q++) {
            const int64_t va = v0 + kc * 32 + 2 * q;
            if (e->dt == DG_BF16 && va + NN_PF + 1 < e->rows) {
                /* the two rows NN_PF ahead: the pieces are a whole embedding row apart, beyond what the
                 * hardware prefetcher follows (in-process A/B: 10 % faster) */
                const char *p0 = (const char *)e->data + (size_t)(va + NN_PF) * e->row_bytes + (size_t)h0 * 2;
                for (int o = 0; o < hb * 2; o += 64) { _mm_prefetch(p0 + o, _MM_HINT_T0); _mm_prefetch(p0 + e->row_bytes + o, _MM_HINT_T0); }
            }
            const uint16_t *pa = ra, *pb = rb;
            int64_t ps = 32;   /* elements between 32-value pieces */
            if (e->dt == DG_BF16 && hb % 16 == 0 && va + 1 < e->rows) {   /* bf16 rows read in place (A/B: 3 % faster) */
                pa = (const uint16_t *)((const uint8_t *)e->data + (size_t)va * e->row_bytes) + h0;
                pb = (const uint16_t *)((const uint8_t *)pa + e->row_bytes);
            } else if (bq && va + 1 < e->rows) {
                const uint8_t *q0 = (const uint8_t *)e->data + (size_t)va * e->row_bytes + boff;
                bq(q0, qa, hb / blk);
                bq(q0 + e->row_bytes, qb, hb / blk);
                pa = qa;
                pb = qb;
                ps = 1024;
            } else {
                nn_row_bf16(e, va, h0, hb, tmp, ra);
                nn_row_bf16(e, va + 1, h0, hb, tmp, rb);
            }
            for (int ht = 0; ht < nht; ht++) {
                uint16_t *tile = b + ((size_t)kc * nht + ht) * 512;
                const int64_t o = (ht >> 1) * ps + (ht & 1) * 16;
                const __m256i a = _mm256_loadu_si256((const __m256i *)(pa + o));
                const __m256i bb = _mm256_loadu_si256((const __m256i *)(pb + o));
                _mm512_storeu_si512((void *)(tile + q * 32), pair16(a, bb));
            }
        }
}

T_AMX static void nn_amx_task(void *ctx, int i, int tid) {
    const amx_nn_job *j = ctx;
    const int64_t V = j->e->rows, H = j->e->cols, h0 = (int64_t)i * DG_NN_HB;
    const int hb = (int)(H - h0 < DG_NN_HB ? H - h0 : DG_NN_HB), nht = (hb + 15) / 16, ntb = (j->n + 15) / 16;
    uint16_t *b = (uint16_t *)j->k->panel[tid];
    float *acc = (float *)(b + (size_t)DG_NN_VB * DG_NN_HB);   /* [ntb*16 tokens][nht*16 columns] */
    float *tmp = acc + (size_t)ntb * 16 * DG_NN_HB;            /* one dequantized row piece */
    uint16_t *qt = (uint16_t *)(tmp + DG_NN_HB);               /* two rows' bf16 pieces (nn_pack_e) */
    const int64_t lda = nht * 16;
    memset(acc, 0, sizeof(float) * (size_t)ntb * 16 * lda);
    __attribute__((aligned(64))) tilecfg cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.palette = 1;
    for (int q = 0; q < 8; q++) { cfg.colsb[q] = 64; cfg.rows[q] = 16; }
    _tile_loadconfig(&cfg);
    for (int64_t v0 = 0; v0 < V; v0 += DG_NN_VB) {
        const int nv = (int)((V - v0 < DG_NN_VB ? V - v0 : DG_NN_VB) + 31) / 32 * 32;
        nn_pack_e(j->e, v0, nv, h0, hb, b, tmp, qt);
        const int nkc = nv / 32;
        for (int ht = 0; ht < nht; ht += 2) {
            const int two_h = ht + 1 < nht;
            for (int tb = 0; tb < ntb; tb += 2) {
                const int two_t = tb + 1 < ntb;
                float *c00 = acc + (int64_t)tb * 16 * lda + ht * 16;
                _tile_loadd(0, c00, lda * 4);
                if (two_h) _tile_loadd(1, c00 + 16, lda * 4);
                if (two_t) {
                    _tile_loadd(2, c00 + 16 * lda, lda * 4);
                    if (two_h) _tile_loadd(3, c00 + 16 * lda + 16, lda * 4);
                }
                const uint16_t *a0 = j->k->pbuf + ((int64_t)tb * (j->vp / 32) + v0 / 32) * 512, *a1 = a0 + (j->vp / 32) * 512;
                for (int kc = 0; kc < nkc; kc++) {
                    _tile_loadd(4, a0 + kc * 512, 64);
                    _tile_loadd(6, b + ((size_t)kc * nht + ht) * 512, 64);
                    _tile_dpbf16ps(0, 4, 6);
                    if (two_h) { _tile_loadd(7, b + ((size_t)kc * nht + ht + 1) * 512, 64); _tile_dpbf16ps(1, 4, 7); }
                    if (two_t) {
                        _tile_loadd(5, a1 + kc * 512, 64);
                        _tile_dpbf16ps(2, 5, 6);
                        if (two_h) _tile_dpbf16ps(3, 5, 7);
                    }
                }
                _tile_stored(0, c00, lda * 4);
                if (two_h) _tile_stored(1, c00 + 16, lda * 4);
                if (two_t) {
                    _tile_stored(2, c00 + 16 * lda, lda * 4);
                    if (two_h) _tile_stored(3, c00 + 16 * lda + 16, lda * 4);
                }
            }
        }
    }
    _tile_release();
    for (int t = 0; t < j->n; t++) memcpy(j->y + (int64_t)t * H + h0, acc + (int64_t)t * lda, sizeof(float) * (size_t)hb);
}

/* the rows 0..n-1 already packed (dg_nn_amx_pack_row); the rest of the last 16-row block zeroed here */
void dg_nn_amx_prepacked(const dg_kctx *k, float *y, int n, const dg_mat *e) {
    amx_nn_job j = {k, y, NULL, 0, (e->rows + DG_KC - 1) / DG_KC * DG_KC, n, e};
    for (int t = n; t < (n + 15) / 16 * 16; t++) nn_pack_prow(k, t, NULL, e->rows);
    dg_pool_run(k->pool, (int)((e->cols + DG_NN_HB - 1) / DG_NN_HB), nn_amx_task, &j);
}

void dg_nn_amx(const dg_kctx *k, float *y, const float *p, int64_t ldp, int n, const dg_mat *e) {
    amx_nn_job j = {k, y, p, ldp, (e->rows + DG_KC - 1) / DG_KC * DG_KC, n, e};
    dg_pool_run(k->pool, n, nn_pack_p, &j);
    dg_nn_amx_prepacked(k, y, n, e);
}
#endif
