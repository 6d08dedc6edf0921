/*
 * kernels_ref.c - scalar reference implementations of kernels.h. Plain C, the oracle for every
 * fast path; keep them simple and obviously right.
 */
#include "kernels.h"
#include "kernels/quants.h"
#include "kernels/quants_mlx.h"

#include <math.h>

/* ===== half precision conversions ===== */

float dg_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    uint32_t u;
    if (exp == 0) {
        if (man == 0) {
            u = sign;
        } else { /* subnormal: normalise */
            int e = -1;
            do { man <<= 1; e++; } while (!(man & 0x400u));
            u = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ffu) << 13);
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (man << 13);
    } else {
        u = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t dg_f32_to_f16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return sign | 0x7e00u;          /* NaN */
    if (a >= 0x477ff000u) return sign | 0x7c00u;         /* overflow (incl. inf) after rounding */
    if (a < 0x38800000u) {                               /* result is subnormal or zero */
        if (a < 0x33000000u) return sign;                /* < half of the smallest subnormal */
        uint32_t man = (a & 0x7fffffu) | 0x800000u;
        int shift = 126 - (int)(a >> 23);                /* value = man * 2^(E-150) = r * 2^-24 */
        uint32_t r = man >> shift;
        uint32_t rem = man & ((1u << shift) - 1);
        uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1))) r++;
        return sign | (uint16_t)r;
    }
    uint32_t r = a - 0x38000000u;                        /* rebias exponent 127 -> 15 */
    r += 0xfffu + ((r >> 13) & 1u);                      /* round to nearest even */
    return sign | (uint16_t)(r >> 13);
}

size_t dg_dtype_size(dg_dtype dt) { return dt == DG_F32 ? 4 : dt == DG_F16 || dt == DG_BF16 ? 2 : 0; }

const char *dg_dtype_name(dg_dtype dt) {
    static const char *names[DG_N_DTYPES] = {
        "F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",
        "IQ4_NL", "MLX_AFFINE", "MLX_MXFP4", "MLX_MXFP8", "MLX_NVFP4"};
    return (unsigned)dt < DG_N_DTYPES ? names[dt] : "?";
}

static int is_float_type(dg_dtype dt) { return dt == DG_F32 || dt == DG_F16 || dt == DG_BF16; }
static int is_mlx_type(dg_dtype dt) { return dt >= DG_MLX_AFFINE && dt <= DG_MLX_NVFP4; }

int dg_dtype_block(dg_dtype dt) { return is_float_type(dt) ? 1 : dg_gguf_block_elems(dt); }

size_t dg_row_bytes(dg_dtype dt, int64_t cols) {
    if (is_float_type(dt)) return (size_t)cols * dg_dtype_size(dt);
    const int blk = dg_gguf_block_elems(dt);
    if (!blk || cols % blk) return 0;
    return (size_t)(cols / blk) * dg_gguf_block_bytes(dt);
}

dg_mat dg_mat_init(const void *data, dg_dtype dt, int64_t rows, int64_t cols) {
    dg_mat m;
    memset(&m, 0, sizeof(m));
    m.data = data;
    m.dt = dt;
    m.rows = rows;
    m.cols = cols;
    m.row_bytes = dg_row_bytes(dt, cols);
    return m;
}

static size_t mlx_scale_size(int sdt) { return sdt < 0 ? 1 : dg_dtype_size((dg_dtype)sdt); }

dg_mat dg_mat_rows(const dg_mat *m, int64_t r0, int64_t n) {
    dg_mat v = *m;
    v.rows = n;
    v.data = (const uint8_t *)m->data + (size_t)r0 * m->row_bytes;
    if (is_mlx_type(m->dt)) {
        const size_t per_row = (size_t)(m->cols / m->mlx.group) * mlx_scale_size(m->mlx.sdt);
        v.mlx.scales = (const uint8_t *)m->mlx.scales + (size_t)r0 * per_row;
        if (m->mlx.biases) v.mlx.biases = (const uint8_t *)m->mlx.biases + (size_t)r0 * per_row;
    }
    return v;
}

void dg_dequant_range(const dg_mat *w, int64_t r, int64_t c0, int64_t n, float *out) {
    const uint8_t *row = (const uint8_t *)w->data + (size_t)r * w->row_bytes;
    switch (w->dt) {
    case DG_F32: memcpy(out, (const float *)row + c0, sizeof(float) * (size_t)n); return;
    case DG_BF16:
        for (int64_t i = 0; i < n; i++) out[i] = dg_bf16_to_f32(((const uint16_t *)row)[c0 + i]);
        return;
    case DG_F16:
        for (int64_t i = 0; i < n; i++) out[i] = dg_f16_to_f32(((const uint16_t *)row)[c0 + i]);
        return;
    default:
        if (is_mlx_type(w->dt)) {
            dg_dequant_mlx(w, r, c0, n, out);
        } else {
            const int blk = dg_gguf_block_elems(w->dt);
            dg_dequant_gguf(w->dt, row + (size_t)(c0 / blk) * dg_gguf_block_bytes(w->dt), out, n);
        }
        return;
    }
}

void dg_round_act(float *x, size_t n, dg_dtype act) {
    if (act == DG_BF16)
        for (size_t i = 0; i < n; i++) x[i] = dg_round_bf16(x[i]);
    else if (act == DG_F16)
        for (size_t i = 0; i < n; i++) x[i] = dg_round_f16(x[i]);
}

/* ===== linear algebra ===== */

/* Each output is the exact dot product rounded once to float32 (double accumulation): the oracle
 * does not depend on summation order, so every fast path can be held to it within float32 noise. */
void dg_matmul_ref(float *y, const float *x, int n, const dg_mat *w) { dg_matmul_ref_rows(y, w->rows, x, n, w, 0, w->rows); }

void dg_matmul_ref_rows(float *y, int64_t ldy, const float *x, int n, const dg_mat *w, int64_t r0, int64_t r1) {
    const int64_t K = w->cols;
    if (is_float_type(w->dt)) {
        for (int t = 0; t < n; t++) {
            const float *xt = x + (int64_t)t * K;
            float *yt = y + (int64_t)t * ldy;
            for (int64_t r = r0; r < r1; r++) {
                double acc = 0.0;
                const uint8_t *row = (const uint8_t *)w->data + (size_t)r * w->row_bytes;
                switch (w->dt) {
                case DG_F32:
                    for (int64_t k = 0; k < K; k++) acc += (double)xt[k] * ((const float *)row)[k];
                    break;
                case DG_BF16:
                    for (int64_t k = 0; k < K; k++) acc += (double)xt[k] * dg_bf16_to_f32(((const uint16_t *)row)[k]);
                    break;
                default:
                    for (int64_t k = 0; k < K; k++) acc += (double)xt[k] * dg_f16_to_f32(((const uint16_t *)row)[k]);
                    break;
                }
                yt[r] = (float)acc;
            }
        }
        return;
    }
    /* quantized: dequantize a chunk of the row at a time (the chunk is a multiple of every block
     * and group size), then the same exact dot product */
    enum { CH = 256 };
    float buf[CH];
    for (int64_t r = r0; r < r1; r++) {
        double acc[64];
        for (int t0 = 0; t0 < n; t0 += 64) {
            const int nt = n - t0 < 64 ? n - t0 : 64;
            for (int t = 0; t < nt; t++) acc[t] = 0.0;
            for (int64_t c0 = 0; c0 < K; c0 += CH) {
                const int64_t m = K - c0 < CH ? K - c0 : CH;
                dg_dequant_range(w, r, c0, m, buf);
                for (int t = 0; t < nt; t++) {
                    const float *xt = x + (int64_t)(t0 + t) * K + c0;
                    double a = 0.0;
                    for (int64_t k = 0; k < m; k++) a += (double)xt[k] * buf[k];
                    acc[t] += a;
                }
            }
            for (int t = 0; t < nt; t++) y[(int64_t)(t0 + t) * ldy + r] = (float)acc[t];
        }
    }
}

void dg_rmsnorm_ref(float *y, const float *x, int n, int dim, const dg_vec *w, float eps) {
    for (int t = 0; t < n; t++) {
        const float *xt = x + (int64_t)t * dim;
        float *yt = y + (int64_t)t * dim;
        double ss = 0.0;   /* exact sum of squares, rounded once (order-independent) */
        for (int i = 0; i < dim; i++) ss += (double)xt[i] * xt[i];
        float ms = (float)(ss / dim) + eps;
        /* the reference writes pow(ms, -0.5); ATen evaluates that exponent as 1 / sqrt(ms) (two
         * roundings), which differs from a correctly rounded powf in a quarter of cases */
        float r = 1.0f / sqrtf(ms);
        for (int i = 0; i < dim; i++) {
            float v = xt[i] * r;
            yt[i] = w ? v * dg_wget(w->data, w->dt, i) : v;
        }
    }
}

/* evaluated in double and rounded once (the oracle's definition; torch's float32 evaluation with an
 * FMA differs from it by at most an ulp) */
float dg_gelu_tanh(float x) {
    const double xd = x;
    return (float)(0.5 * xd * (1.0 + tanh(0.7978845608028654 * (xd + 0.044715 * xd * xd * xd))));
}

void dg_softmax_ref(float *x, int n) {
    float mx = -INFINITY;
    for (int i = 0; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    /* exp and the sum are exact and rounded once (a sequential float sum over a 262,144-way
     * vocabulary drifts enough to flip bf16 roundings of the probabilities); then one division per
     * element (ATen's CPU kernel multiplies by 1/sum, at most 1 float32 ulp away). */
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        x[i] = (float)exp((double)(x[i] - mx));   /* correctly rounded float exp */
        sum += x[i];
    }
    const float fsum = (float)sum;
    for (int i = 0; i < n; i++) x[i] = x[i] / fsum;
}

void dg_rope_ref(float *x, int d, const float *cos, const float *sin, dg_dtype act) {
    int half = d / 2;
    for (int i = 0; i < half; i++) {
        float a = x[i], b = x[i + half];
        float c = cos[i], s = sin[i];
        float lo = dg_round1(dg_round1(a * c, act) + dg_round1(-b * s, act), act);
        float hi = dg_round1(dg_round1(b * c, act) + dg_round1(a * s, act), act);
        x[i] = lo;
        x[i + half] = hi;
    }
}
