/*
 * gemm_impl.h - what gemm.c shares with the per-ISA kernel files (private to src/kernels).
 */
#ifndef DG_GEMM_IMPL_H
#define DG_GEMM_IMPL_H

#include "kernels/gemm.h"

enum {
    DG_NN_VB = 1024, /* AMX dg_matmul_nn: embedding rows per packed block */
    DG_NN_HB = 256,  /* AMX dg_matmul_nn: embedding columns per task */
    DG_RB = 32,   /* weight rows per task (AMX: two 16-row A tiles); other paths take DG_RB / 2 */
    DG_KC = 32,   /* K granularity of the packed bf16 activations (one AMX tile row: 32 bf16) */
    /* outputs this large (the LM head's 256 x 262,144 logits: 268 MB) are far past the caches and only
     * read after the call: stored non-temporally (dg_job.stream) */
    DG_STREAM_BYTES = 64 << 20,
};

typedef enum { DG_KIND_REF, DG_KIND_INT8, DG_KIND_GENERIC, DG_KIND_AVX2, DG_KIND_AVX512, DG_KIND_AVX512_BF16, DG_KIND_AMX, DG_KIND_NEON } dg_kind;

typedef struct {
    const dg_kctx *k;
    dg_kind kind;
    float *y;
    const float *x;
    int n;
    const dg_mat *w;
    int rb;
    int64_t kp;              /* K rounded up to DG_KC (packed activations) */
    size_t astride;          /* INT8: bytes of one quantized activation row in k->aq */
    const int *xrows;        /* AMX packing: row i of x is x + xrows[i] * K (NULL: row i) */
    uint16_t *xp;            /* AMX: the packed activations (k->xpack, or a group's part of k->gpack) */
    int round_bf16;          /* AMX: outputs rounded to bf16 as they are stored (as dg_round_act_fast) */
    float cap;               /* AMX: > 0: then cap * tanh(y / cap) as dg_softcap_f32 computes it */
    int stream;              /* AMX: output rows of 16 values on a 64-byte line stored non-temporally */
    int shift;               /* AMX: K chunk c holds the values [32c - shift, 32c - shift + 32) (zero outside
                              * [0, K)); bf16 rows that start shift values past a 64-byte line are then
                              * loaded in place line by line (dg_amx_shift) */
} dg_job;

/* The K shift for bf16 weights loaded into the tiles in place: how many values each row starts past a
 * 64-byte line, when every row does (a row a whole number of lines long); 0 otherwise. A tensor of a
 * safetensors file starts wherever the previous one ended (the mid model's embedding: 48 bytes past a
 * line), and a tile row that spans two lines costs: the LM head 1.15-1.19x the time, in process. */
static inline int dg_amx_shift(const dg_mat *w) {
    const uintptr_t a = (uintptr_t)w->data;
    if (w->dt != DG_BF16 || w->cols % DG_KC || w->row_bytes % 64 || (a & 1)) return 0;
    return (int)((a & 63) / 2);
}

/* cpu features (x86) */
int dg_cpu_has_avx2(void);
int dg_cpu_has_avx512(void);
int dg_cpu_has_avx512bf16(void);
int dg_cpu_has_amx(void);
int dg_cpu_has_vnni(void);

/* integer path: one weight row (K elements of dt) against nt activation rows quantized by
 * dg_quantize_act (stride astride bytes): y[t * ldy]. Bit-identical to dg_vec_dot_gguf. 0 if dt has no
 * VNNI kernel. */
int dg_vnni_row(dg_dtype dt, const uint8_t *w, int64_t K, const void *aq, size_t astride, int nt, float *y, int64_t ldy);

/* AVX-512 dequantization of Q8_0, Q5_0, Q4_K, Q5_K, Q6_K (bit-exact with the scalar); 0 = no kernel */
int dg_dequant_gguf_avx512(dg_dtype dt, const void *blocks, float *out, int64_t n);
int dg_dequant_gguf_bf16tiles_avx512(dg_dtype dt, const void *blocks, uint16_t *out, int64_t n);
/* the row loop behind it for dt (nb blocks), resolved once per task; NULL = no kernel here */
typedef void (*dg_bf16tiles_fn)(const uint8_t *blocks, uint16_t *out, int64_t nb);
dg_bf16tiles_fn dg_bf16tiles_row_fn(dg_dtype dt);
/* Dequantize [c0, c0+n) of row r with the fastest exact kernel available (same values as
 * dg_dequant_range). */
void dg_dequant_fast(const dg_mat *w, int64_t r, int64_t c0, int64_t n, float *out);

void dg_kernel_generic_f32(const float *x, int64_t ldx, int nt, const float *w, int64_t ldw, int nr, int64_t K,
                           float *y, int64_t ldy);
void dg_panel_f32(const dg_mat *w, int64_t r0, int nr, float *buf);

void dg_pack_amx(dg_job *j);
/* one 16-token block of dg_pack_amx (j->kp and j->xp set) */
void dg_pack_amx_tb(const dg_job *j, int tb);
void dg_pack_rows_bf16(dg_job *j);
void dg_task_amx(const dg_job *j, int64_t r0, int nr, float *panel);
void dg_task_avx512_bf16(const dg_job *j, int64_t r0, int nr, float *panel);
void dg_task_avx512(const dg_job *j, int64_t r0, int nr, float *panel);
void dg_task_avx2(const dg_job *j, int64_t r0, int nr, float *panel);
float dg_dot_f32_avx512(const float *a, const float *b, int n);
double dg_sumsq_f64_avx512(const float *x, int n);
int dg_rms_scale_f32_avx512(float *y, const float *x, float r, const void *w, dg_dtype wdt, int n);
void dg_round_bf16_avx512(float *x, size_t n);
void dg_div_f32_avx512(float *x, size_t n, float d);
void dg_axpy_f32_avx512(float *y, float a, const float *x, int n);
void dg_wsum_f32_avx512(float *o, const float *const *y, const float *w, int K, int n);
float dg_max_f32_avx512(const float *x, int n, int *arg);
float dg_expsum_f32_avx512(float *x, int n, float mx);
float dg_dotdiff_f32_avx512(const float *x, const float *z, int n, float mx);
float dg_div_max_f32_avx512(float *x, int n, float d, int *arg);
void dg_rope_avx512(float *x, int d, const float *cos, const float *sin, int rbf);
float dg_expsum_dd_f32_avx512(float *z, float *w, int n, float mx, float *dd, int rbf);
void dg_softcap_f32_avx512(float *x, int n, float cap);
float dg_dot_f32_avx2(const float *a, const float *b, int n);
void dg_axpy_f32_avx2(float *y, float a, const float *x, int n);
/* acc[t][0..32) += sum_v p[t][v] * pan[v][0..32) for t < n, v < nv (p row stride ldp) */
void dg_nn_block_avx512(const float *p, int64_t ldp, int n, const float *pan, int nv, float *acc);
void dg_nn_amx(const dg_kctx *k, float *y, const float *p, int64_t ldp, int n, const dg_mat *e);
void dg_nn_amx_pack_row(const dg_kctx *k, int t, const float *p, int64_t V);
void dg_nn_amx_softmax_pack_row(const dg_kctx *k, int t, const float *x, int64_t V, float *tmp);
void dg_nn_amx_prepacked(const dg_kctx *k, float *y, int n, const dg_mat *e);
void dg_attend_block_avx512(const float *q, int64_t qs, int nq, int nh, int d, const dg_kseg *seg, int nseg, float *sc,
                            int64_t ldsc, float *acc, float *out, int64_t os, dg_dtype act);
void dg_attend_block_amx(const float *q, int64_t qs, int nq, int nh, int d, const dg_kseg *seg, int nseg, float *sc,
                         int64_t ldsc, float *acc, float *out, int64_t os, const int *valid, void *scratch, const uint16_t *kpk,
                         const uint16_t *vpk, int nkp);
void dg_attend_amx_pack(const dg_kseg *seg, int nseg, int nk, int d, void *pk, int c0, int c1, int two);
/* dg_attend_amx_pack's layout for nk keys of dimension d, in bf16 elements: the K tiles of every 16 keys
 * from 0, the V tiles of every 32 keys from *v0, then (two) those of every 32 keys from key 16 on from
 * *v1; the return value is the end */
static inline size_t dg_att_pack_layout(int nk, int d, int two, size_t *v0, size_t *v1) {
    const size_t v1_chunks = two && nk > 16 ? (size_t)(nk - 16 + 31) / 32 : 0;
    *v0 = (size_t)(nk + 15) / 16 * (size_t)(d / 32) * 512;
    *v1 = *v0 + (size_t)(nk + 31) / 32 * (size_t)(d / 16) * 512;
    return *v1 + v1_chunks * (size_t)(d / 16) * 512;
}
void dg_gelu_mul_f32_avx512(const float *g, const float *u, float *out, int n, dg_dtype act);
void dg_task_neon(const dg_job *j, int64_t r0, int nr, float *panel);

#endif
