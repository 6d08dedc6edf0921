/*
 * gemm_neon.c - the ARMv8 (aarch64) kernel for dg_matmul: NEON FMA on float32, weights converted
 * in registers from bf16 (shift) or f16 (vcvt), block / MLX types dequantized to a panel first.
 */
#if defined(__aarch64__)

#include <arm_neon.h>

#include "kernels/gemm_impl.h"

static inline float32x4_t ld4(const void *row, dg_dtype dt, int64_t k) {
    if (dt == DG_F32) return vld1q_f32((const float *)row + k);
    const uint16x4_t h = vld1_u16((const uint16_t *)row + k);
    if (dt == DG_F16) return vcvt_f32_f16(vreinterpret_f16_u16(h));
    return vreinterpretq_f32_u32(vshll_n_u16(h, 16));
}

static inline __attribute__((always_inline)) void neon_block(const float *x, int64_t ldx, const uint8_t *w, int64_t ldw,
                                                              dg_dtype dt, int64_t K, float *y, int64_t ldy, int MT, int MR) {
    float32x4_t acc[4][4];
    for (int i = 0; i < MT; i++)
        for (int r = 0; r < MR; r++) acc[i][r] = vdupq_n_f32(0.0f);
    const int64_t K4 = K / 4 * 4;
    for (int64_t k = 0; k < K4; k += 4) {
        float32x4_t wv[4];
        for (int r = 0; r < MR; r++) wv[r] = ld4(w + r * ldw, dt, k);
        for (int i = 0; i < MT; i++) {
            const float32x4_t xv = vld1q_f32(x + i * ldx + k);
            for (int r = 0; r < MR; r++) acc[i][r] = vfmaq_f32(acc[i][r], xv, wv[r]);
        }
    }
    for (int i = 0; i < MT; i++)
        for (int r = 0; r < MR; r++) {
            float s = vaddvq_f32(acc[i][r]);
            for (int64_t k = K4; k < K; k++) s += x[i * ldx + k] * dg_wget(w + r * ldw, dt, k);
            y[i * ldy + r] = s;
        }
}

void dg_task_neon(const dg_job *j, int64_t r0, int nr, float *panel) {
    const dg_mat *wm = j->w;
    const uint8_t *w;
    int64_t ldw;
    dg_dtype dt = wm->dt;
    if (dt == DG_F32 || dt == DG_BF16 || dt == DG_F16) {
        w = (const uint8_t *)wm->data + (size_t)r0 * wm->row_bytes;
        ldw = (int64_t)wm->row_bytes;
    } else {
        dg_panel_f32(wm, r0, nr, panel);
        w = (const uint8_t *)panel;
        ldw = wm->cols * 4;
        dt = DG_F32;
    }
    const int64_t K = wm->cols, ldx = K, ldy = wm->rows;
    float *y = j->y + r0;
    for (int t = 0; t < j->n; t += 4) {
        const int mt = j->n - t < 4 ? j->n - t : 4;
        for (int r = 0; r < nr; r += 4) {
            const int mr = nr - r < 4 ? nr - r : 4;
            const float *xt = j->x + t * ldx;
            const uint8_t *wr = w + r * ldw;
            float *yt = y + t * ldy + r;
            if (mt == 4 && mr == 4) neon_block(xt, ldx, wr, ldw, dt, K, yt, ldy, 4, 4);
            else if (mr == 4)
                for (int i = 0; i < mt; i++) neon_block(xt + i * ldx, ldx, wr, ldw, dt, K, yt + i * ldy, ldy, 1, 4);
            else
                for (int i = 0; i < mt; i++)
                    for (int q = 0; q < mr; q++) neon_block(xt + i * ldx, ldx, wr + q * ldw, ldw, dt, K, yt + i * ldy + q, ldy, 1, 1);
        }
    }
}

#endif /* __aarch64__ */
