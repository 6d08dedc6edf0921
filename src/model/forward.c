#define _POSIX_C_SOURCE 200809L
/*
 * forward.c - the DiffusionGemma text forward pass: sessions, KV cache, encoder and decoder.
 *
 * One set of layers serves two roles (transformers' DiffusionGemmaEncoderTextLayer and
 * DiffusionGemmaDecoderTextLayer share every weight):
 *   encode: causal attention (sliding window on sliding layers) over [cache ; new tokens], appends
 *           K/V to the cache, multiplies each layer output by the encoder-role layer_scalar;
 *   decode: a canvas attends bidirectionally to [cache view ; canvas] without writing the cache
 *           (sliding layers see the last window-1 cached tokens), decoder-role layer_scalar, then
 *           final norm, tied LM head and the final softcap.
 *
 * Rounding: every op computes in float32; where the reference (running in the checkpoint dtype)
 * produces a bf16 tensor, R() rounds to the activation dtype. With F32 checkpoints R() is a no-op.
 * Everything a pass needs is allocated in dg_session_create; nothing is allocated in a pass.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#include "kernels/gemm.h"

typedef struct {
    int cap;          /* slots: all tokens (full) or window-1 (sliding) */
    float *k, *v;     /* [n_kv, cap, d] (head-major: one KV group's keys are contiguous, no 2^k-strided
                         rows to alias in the caches); position p lives in slot p % cap */
} dg_kv;

struct dg_session {
    const dg_engine *e;
    int n_ctx, n_batch, T;      /* T = rows of scratch = max(n_batch, canvas_length) */
    int dmax;                   /* largest head dim */
    int sc_top_k;               /* 0: exact soft embedding; else the top-k approximation */
    int *topk_i;                /* [n_threads, sc_top_k] indices of the top-k heap */
    float *topk_row;            /* [n_threads, H] one dequantized embedding row */
    int n_past;
    dg_kv *kv;                  /* [n_layers] */
    /* scratch, sized for T rows */
    float *x, *hn, *q, *k, *v, *att, *a, *h1, *h2, *mg, *mu;
    float *kh, *vh;             /* [n_kv, T, d]: the new rows' K and V head-major (fast attention) */
    float *rl;                  /* [T, E] router logits / probabilities */
    int *top_i;                 /* [T, K] */
    float *top_w;               /* [T, K] */
    float *cosb, *sinb;         /* [T, dmax/2] */
    float *probs;               /* [C, V] self-conditioning probabilities */
    float *prow;                /* AMX: [threads, V] one row of them per thread, packed as it is made */
    float *tapbuf;              /* [T, max(K, ...)] for tapping ids as floats */
    dg_tap_fn tap;
    void *tap_user;
    dg_gen_buf gen;             /* generation buffers (sampler), allocated on first use */
    /* kernels */
    dg_pool *pool;
    dg_kctx kc;
    int fast;                   /* 0: the scalar oracle everywhere (DG_KERNELS_REF) */
    int x_bf16;                 /* activations are bf16-exact (act == BF16): bf16 dot / AMX paths */
    float *scores_t;            /* [n_threads, DG_ATT_ROWS, n_ctx + T] attention scores */
    float *attacc;              /* [n_threads, DG_ATT_ROWS, dmax] a block's P.V partial sums */
    uint8_t *attamx;            /* AMX attention (bf16 activations): [n_threads] scratch of attamx_bytes */
    size_t attamx_bytes;
    uint8_t *attkv;             /* AMX decoder attention: a layer's keys and values as tiles, once per step */
    double *pv_t;               /* [n_threads, dmax] P.V accumulator of one query (the oracle) */
    /* experts: the routings sorted by expert, each expert one product of a grouped call */
    int *moe_cnt, *moe_off;     /* [E] routings per expert, their first position */
    int *moe_pos, *moe_tok;     /* [T*K] position of routing t*K+k; token of each position */
    dg_gemm *moe_g;             /* [E] the products of one grouped call */
    float *moe_gu, *moe_act;    /* [T*K, 2Ie] gate and up, [T*K, Ie] activations, by position */
    float *moe_y;               /* [T*K, H] every routed expert output, rounded, by position */
    dg_profile prof;
    int timing;                 /* products also timed alone: 1 within a decoder layer (prof.proj,
                                 * prof.experts), 2 within an encoder layer (prof.enc_experts) */
}; 

enum { DG_N_BATCH_DEFAULT = 1024 };

#define R(ptr, n) dg_round_act_fast((ptr), (size_t)(n), e->act)

static void tap(dg_session *s, const char *name, const float *data, int rows, int cols) {
    if (s->tap) s->tap(s->tap_user, name, data, rows, cols);
}

/* ===== session lifetime ===== */

dg_session_params dg_session_default_params(void) {
    dg_session_params p = {0, 0, 0, DG_KERNELS_AUTO, 0};
    return p;
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

/* calloc for the session's buffers, starting on a 64-byte cache line (freed with xfree). glibc returns
 * blocks of 128 KB or more 16 bytes into a page, so every 64-byte vector load or store of such a buffer
 * (the [C, V] logits, the activations, the KV cache) touched two lines. The block's own address is
 * kept in the 8 bytes before the aligned start. */
static void *xcalloc(size_t n, size_t sz, int *oom) {
    n = n ? n : 1;
    sz = sz ? sz : 1;
    if (n > ((size_t)PTRDIFF_MAX - 72) / sz) { *oom = 1; return NULL; }
    uint8_t *raw = calloc(n * sz + 72, 1);
    if (!raw) { *oom = 1; return NULL; }
    uint8_t *p = (uint8_t *)(((uintptr_t)raw + 8 + 63) & ~(uintptr_t)63);
    memcpy(p - sizeof(raw), &raw, sizeof(raw));
    return p;
}

static void xfree(void *p) {
    if (!p) return;
    void *raw;
    memcpy(&raw, (uint8_t *)p - sizeof(raw), sizeof(raw));
    free(raw);
}

static void gen_buf_free(dg_gen_buf *g) {
    xfree(g->logits); xfree(g->w); xfree(g->u); xfree(g->H); xfree(g->argmax); xfree(g->sample); xfree(g->canvas);
    xfree(g->accepted); xfree(g->order); xfree(g->hist);
    memset(g, 0, sizeof(*g));
}

/* one KV group's packed keys and values (dg_attend_amx_pack_bytes), at a 64-byte aligned stride */
static size_t att_group_bytes(int nk, int d, int two) { return (dg_attend_amx_pack_bytes(nk, d, two) + 63) / 64 * 64; }

int dg_session_create(const dg_engine *e, const dg_session_params *params, dg_session **out, char *err, size_t errlen) {
    *out = NULL;
    dg_session_params p = params ? *params : dg_session_default_params();
    const dg_config *c = &e->cfg;
    if (p.n_ctx < 0 || p.n_batch < 0) return dg_fail(err, errlen, "session: n_ctx and n_batch must be >= 0");
    if (p.n_threads < 0 || p.n_threads > 1024) return dg_fail(err, errlen, "session: n_threads must be in [0, 1024] (got %d)", p.n_threads);
    if ((unsigned)p.kernels > DG_KERNELS_NEON) return dg_fail(err, errlen, "session: unknown kernels value %d", (int)p.kernels);
    if (p.sc_top_k < 0 || p.sc_top_k > c->vocab_size)
        return dg_fail(err, errlen, "session: sc_top_k must be in [0, vocab_size = %d] (got %d)", c->vocab_size, p.sc_top_k);
    const dg_path want = p.kernels == DG_KERNELS_AUTO ? dg_path_best() : (dg_path)(p.kernels - 1);
    if (!dg_path_available(want))
        return dg_fail(err, errlen, "session: the %s kernels cannot run on this CPU", dg_path_name(want));
    dg_session *s = calloc(1, sizeof(*s));
    if (!s) return dg_fail(err, errlen, "out of memory");
    s->e = e;
    s->n_ctx = p.n_ctx ? p.n_ctx : 4096;
    /* default chunk: 1,024 prompt tokens (no more than the cache holds, no fewer than a canvas). Each
     * chunk dequantizes every expert it routes to once, so longer chunks spread that over more tokens:
     * 26B-shape encoder, 2,048-token prompt, 1,024 against 256: 0.63-0.75x the time per token (six
     * alternating pairs), for about 290 MB more scratch. */
    const int nb_default = s->n_ctx < DG_N_BATCH_DEFAULT ? s->n_ctx : DG_N_BATCH_DEFAULT;
    s->n_batch = p.n_batch ? p.n_batch : nb_default > c->canvas_length ? nb_default : c->canvas_length;
    s->T = s->n_batch > c->canvas_length ? s->n_batch : c->canvas_length;
    const size_t T = (size_t)s->T, H = (size_t)c->hidden_size, nq = (size_t)c->n_heads;
    size_t qw = 0, kw = 0, dmax = 0;
    for (int i = 0; i < c->n_layers; i++) {
        size_t d = (size_t)c->layer_head_dim[i];
        if (nq * d > qw) qw = nq * d;
        if ((size_t)c->layer_n_kv[i] * d > kw) kw = (size_t)c->layer_n_kv[i] * d;
        if (d > dmax) dmax = d;
    }
    size_t mlp = (size_t)c->intermediate_size;
    int oom = 0;
    s->kv = xcalloc((size_t)c->n_layers, sizeof(dg_kv), &oom);
    for (int i = 0; !oom && i < c->n_layers; i++) {
        int cap = s->n_ctx;
        if (!c->layer_full[i] && c->sliding_window - 1 < cap) cap = c->sliding_window - 1;
        if (cap < 1) cap = 1;
        size_t w = (size_t)c->layer_n_kv[i] * (size_t)c->layer_head_dim[i];
        s->kv[i].cap = cap;
        s->kv[i].k = xcalloc((size_t)cap * w, sizeof(float), &oom);
        s->kv[i].v = xcalloc((size_t)cap * w, sizeof(float), &oom);
    }
    s->x = xcalloc(T * H, sizeof(float), &oom);
    s->hn = xcalloc(T * H, sizeof(float), &oom);
    s->a = xcalloc(T * H, sizeof(float), &oom);
    s->h1 = xcalloc(T * H, sizeof(float), &oom);
    s->h2 = xcalloc(T * H, sizeof(float), &oom);
    s->q = xcalloc(T * qw, sizeof(float), &oom);
    s->att = xcalloc(T * qw, sizeof(float), &oom);
    s->k = xcalloc(T * kw, sizeof(float), &oom);
    s->v = xcalloc(T * kw, sizeof(float), &oom);
    s->kh = xcalloc(T * kw, sizeof(float), &oom);
    s->vh = xcalloc(T * kw, sizeof(float), &oom);
    s->mg = xcalloc(T * mlp, sizeof(float), &oom);
    s->mu = xcalloc(T * mlp, sizeof(float), &oom);
    s->rl = xcalloc(T * (size_t)c->n_experts, sizeof(float), &oom);
    s->top_i = xcalloc(T * (size_t)c->top_k, sizeof(int), &oom);
    s->top_w = xcalloc(T * (size_t)c->top_k, sizeof(float), &oom);
    s->tapbuf = xcalloc(T * (size_t)c->top_k, sizeof(float), &oom);
    s->cosb = xcalloc(T * (dmax / 2), sizeof(float), &oom);
    s->sinb = xcalloc(T * (dmax / 2), sizeof(float), &oom);
    s->probs = xcalloc((size_t)c->canvas_length * (size_t)c->vocab_size, sizeof(float), &oom);
    s->fast = want != DG_PATH_REF;
    s->dmax = (int)dmax;
    s->x_bf16 = e->act == DG_BF16;
    const int nth = p.n_threads ? p.n_threads : dg_cpu_count();
    /* the oracle is threaded too: every output is computed the same way whichever thread does it */
    if (!oom && !(s->pool = dg_pool_create(nth))) oom = 1;
    /* the fast path's attention blocks hold DG_ATT_ROWS rows of scores per thread (grows with n_ctx:
     * 4 MB per thread at 32K), the oracle one row */
    const size_t att_rows = s->fast ? DG_ATT_ROWS : 1;
    s->scores_t = xcalloc((size_t)nth * att_rows * ((size_t)s->n_ctx + T), sizeof(float), &oom);
    s->attacc = xcalloc((size_t)nth * att_rows * dmax, sizeof(float), &oom);
    if (want == DG_PATH_AMX) s->prow = xcalloc((size_t)nth * (size_t)c->vocab_size, sizeof(float), &oom);
    if (want == DG_PATH_AMX && dg_path_available(DG_PATH_AMX) && e->act == DG_BF16) {
        s->attamx_bytes = (dg_attend_amx_scratch((int)dmax) + 63) / 64 * 64;
        s->attamx = xcalloc((size_t)nth, s->attamx_bytes, &oom);
        /* a layer's keys (its view of the cache, then the new rows) packed once for all its query
         * blocks, every KV group's at a 64-byte aligned stride: the decoder's canvas, the encoder's
         * chunk (sliding layers' values packed from key 16 too). The 26B-A4B at n_ctx 32,768: 132 MB
         * for a full layer, 24 MB for a sliding one (pages touched only as far as the keys reach) */
        size_t kvb = 0;
        for (int i = 0; i < c->n_layers; i++) {
            if (c->layer_head_dim[i] % 32) continue;
            const size_t b = (size_t)c->layer_n_kv[i] * att_group_bytes(s->kv[i].cap + (int)T, c->layer_head_dim[i], !c->layer_full[i]);
            if (b > kvb) kvb = b;
        }
        if (kvb) s->attkv = xcalloc(1, kvb, &oom);
    }
    s->sc_top_k = p.sc_top_k;
    if (p.sc_top_k) {
        s->topk_i = xcalloc((size_t)nth * (size_t)p.sc_top_k, sizeof(int), &oom);
        s->topk_row = xcalloc((size_t)nth * H, sizeof(float), &oom);
    }
    s->pv_t = xcalloc((size_t)nth * dmax, sizeof(double), &oom);
    /* the widest input of any product: hidden, heads x head dim (o_proj), dense / expert widths (down) */
    int64_t max_k = H > qw ? (int64_t)H : (int64_t)qw;
    if ((int64_t)mlp > max_k) max_k = (int64_t)mlp;
    if ((int64_t)c->expert_size > max_k) max_k = c->expert_size;
    if (!oom && dg_kctx_init(&s->kc, s->pool, want, s->T, max_k, c->vocab_size, c->canvas_length)) oom = 1;
    {
        const size_t K = (size_t)c->top_k, E = (size_t)c->n_experts, Ie = (size_t)c->expert_size;
        s->moe_cnt = xcalloc(E, sizeof(int), &oom);
        s->moe_off = xcalloc(E, sizeof(int), &oom);
        s->moe_pos = xcalloc(T * K, sizeof(int), &oom);
        s->moe_tok = xcalloc(T * K, sizeof(int), &oom);
        s->moe_g = xcalloc(E, sizeof(dg_gemm), &oom);
        s->moe_gu = xcalloc(T * K * 2 * Ie, sizeof(float), &oom);
        s->moe_act = xcalloc(T * K * Ie, sizeof(float), &oom);
        s->moe_y = xcalloc(T * K * H, sizeof(float), &oom);
        if (!oom && E && dg_kctx_init_grouped(&s->kc, (int)E, (int)(T * K))) oom = 1;
    }
    if (oom) {
        dg_session_free(s);
        return dg_fail(err, errlen, "session: out of memory (n_ctx %d, n_batch %d)", p.n_ctx, p.n_batch);
    }
    *out = s;
    return 0;
}

void dg_session_free(dg_session *s) {
    if (!s) return;
    if (s->kv)
        for (int i = 0; i < s->e->cfg.n_layers; i++) { xfree(s->kv[i].k); xfree(s->kv[i].v); }
    xfree(s->kv);
    float *bufs[] = {s->x, s->hn, s->q, s->k, s->v, s->att, s->a, s->h1, s->h2, s->mg, s->mu, s->rl,
                     s->top_w, s->tapbuf, s->cosb,
                     s->sinb, s->probs, s->prow, s->kh, s->vh};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) xfree(bufs[i]);
    xfree(s->top_i);
    xfree(s->pv_t);
    xfree(s->attamx);
    xfree(s->attkv);
    xfree(s->topk_i);
    xfree(s->topk_row);
    float *fast_bufs[] = {s->scores_t, s->attacc, s->moe_gu, s->moe_act, s->moe_y};
    for (size_t i = 0; i < sizeof(fast_bufs) / sizeof(fast_bufs[0]); i++) xfree(fast_bufs[i]);
    int *ibufs[] = {s->moe_cnt, s->moe_off, s->moe_pos, s->moe_tok};
    for (size_t i = 0; i < sizeof(ibufs) / sizeof(ibufs[0]); i++) xfree(ibufs[i]);
    xfree(s->moe_g);
    if (s->kc.panel) dg_kctx_free(&s->kc);
    dg_pool_free(s->pool);
    gen_buf_free(&s->gen);
    free(s);
}

dg_gen_buf *dg_session_gen_buf(dg_session *s, int hist_n, char *err, size_t errlen) {
    dg_gen_buf *g = &s->gen;
    const size_t C = (size_t)s->e->cfg.canvas_length, V = (size_t)s->e->cfg.vocab_size;
    int oom = 0;
    if (!g->logits) {
        g->logits = xcalloc(C * V, sizeof(float), &oom);
        g->w = xcalloc((size_t)dg_pool_size(s->pool) * V, sizeof(double), &oom);
        g->u = xcalloc(C, sizeof(double), &oom);
        g->H = xcalloc(C, sizeof(float), &oom);
        g->argmax = xcalloc(C, sizeof(int32_t), &oom);
        g->sample = xcalloc(C, sizeof(int32_t), &oom);
        g->canvas = xcalloc(C, sizeof(int32_t), &oom);
        g->accepted = xcalloc(C, 1, &oom);
        g->order = xcalloc(C, sizeof(int), &oom);
    }
    if (!oom && hist_n > g->hist_cap) {
        xfree(g->hist);
        g->hist = xcalloc((size_t)hist_n * C, sizeof(int32_t), &oom);
        g->hist_cap = oom ? 0 : hist_n;
    }
    if (oom) {
        gen_buf_free(g);
        dg_fail(err, errlen, "generate: out of memory for the canvas buffers (%zu x %zu logits)", C, V);
        return NULL;
    }
    return g;
}

const dg_engine *dg_session_engine(const dg_session *s) { return s->e; }
int dg_session_n_ctx(const dg_session *s) { return s->n_ctx; }

void dg_session_reset(dg_session *s) { s->n_past = 0; }
const char *dg_session_kernels(const dg_session *s) { return dg_path_name(s->fast ? s->kc.path : DG_PATH_REF); }
int dg_session_threads(const dg_session *s) { return dg_pool_size(s->pool); }
void dg_session_profile(const dg_session *s, dg_profile *out) { *out = s->prof; }
void dg_session_profile_reset(dg_session *s) { memset(&s->prof, 0, sizeof(s->prof)); }
dg_profile *dg_session_prof(dg_session *s) { return &s->prof; }
dg_pool *dg_session_pool(dg_session *s) { return s->pool; }
int dg_session_fast(const dg_session *s) { return s->fast; }
int dg_session_n_past(const dg_session *s) { return s->n_past; }

void dg_session_set_tap(dg_session *s, dg_tap_fn fn, void *user) {
    s->tap = fn;
    s->tap_user = user;
}

/* ===== building blocks ===== */

/* x[T,H] = embed(ids) * embed_scale */
static void embed_tokens(const dg_engine *e, float *x, const int32_t *ids, int T) {
    const int64_t H = e->cfg.hidden_size;
    for (int t = 0; t < T; t++) {
        float *xt = x + t * H;
        dg_dequant_range(&e->embed, ids[t], 0, H, xt);
        for (int64_t i = 0; i < H; i++) xt[i] *= e->embed_scale;
    }
    R(x, T * H);
}

/* y = R(rmsnorm(x, w)), n rows of dim */
static void norm(const dg_engine *e, const dg_session *s, float *y, const float *x, int n, int dim, const dg_vec *w) {
    if (s->fast) dg_rmsnorm_fast(s->pool, y, x, n, dim, w, (float)e->cfg.rms_norm_eps, e->act);
    else {
        dg_rmsnorm_ref(y, x, n, dim, w, (float)e->cfg.rms_norm_eps);
        R(y, (size_t)n * dim);
    }
}

static void linear(const dg_engine *e, dg_session *s, float *y, const float *x, int n, const dg_mat *w) {
    const double t0 = s->timing == 1 ? now_ms() : 0;
    dg_matmul_act(&s->kc, y, x, n, w, s->x_bf16, e->act);   /* rounded to the activation type */
    if (s->timing == 1) s->prof.proj += now_ms() - t0;
}

/* gated GELU MLP: out[n, W->down.rows] = down( R(gelu(R(gate x))) * R(up x) ) */
/* a[r] = R(R(gelu(g[r])) * u[r]) for rows r of width w (g and u rows ldg / ldu floats apart): in
 * parallel rows; the fast path with the vectorized gelu */
typedef struct {
    const dg_engine *e;
    int fast, w;
    const float *g, *u;
    float *a;
    int64_t ldg, ldu, lda;
} act_job;

static void act_rows(void *ctx, int r, int tid) {
    (void)tid;
    const act_job *j = ctx;
    const float *g = j->g + (int64_t)r * j->ldg, *u = j->u + (int64_t)r * j->ldu;
    float *a = j->a + (int64_t)r * j->lda;
    if (j->fast) dg_gelu_mul_f32(g, u, a, j->w, j->e->act);
    else
        for (int c = 0; c < j->w; c++) a[c] = dg_round1(dg_round1(dg_gelu_tanh(g[c]), j->e->act) * u[c], j->e->act);
}

static void gated_act(const dg_engine *e, dg_session *s, int rows, int w, const float *g, int64_t ldg, const float *u,
                      int64_t ldu, float *a, int64_t lda) {
    act_job j = {e, s->fast, w, g, u, a, ldg, ldu, lda};
    dg_pool_run(s->pool, rows, act_rows, &j);
}

static void gated_mlp(const dg_engine *e, dg_session *s, float *out, const float *x, int n,
                      const dg_mat *gate, const dg_mat *up, const dg_mat *down) {
    const int I = (int)gate->rows;
    linear(e, s, s->mg, x, n, gate);
    linear(e, s, s->mu, x, n, up);
    gated_act(e, s, n, I, s->mg, I, s->mu, I, s->mg, I);
    linear(e, s, out, s->mg, n, down);
}

/* ===== attention ===== */

/* q.k accumulated in double and rounded once: the float32 result no longer depends on summation
 * order, so the scalar path and any fast path agree to within one float32 rounding. */
static float dot_exact(const float *a, const float *b, int d) {
    double acc = 0.0;
    for (int i = 0; i < d; i++) acc += (double)a[i] * b[i];
    return (float)acc;
}

/*
 * Q, K, V for T rows at positions pos0..: q/k norm per head, RoPE on q and k; V = v_norm(v_proj x)
 * on sliding layers and v_norm(raw k_proj x) on full layers (K=V). Results in s->q, s->k, s->v.
 */
typedef struct {
    const dg_engine *e;
    dg_session *s;
    const dg_layer *L;
    int pos0;
    int kv_only;   /* no queries (the encoder's last layer) */
} rope_job;

/* token t's cos / sin row (position pos0 + t, rounded to the activation dtype like the reference) and
 * its q and k heads rotated; one task per token */
static void rope_row(void *ctx, int t, int tid) {
    (void)tid;
    const rope_job *j = ctx;
    const dg_engine *e = j->e;
    dg_session *s = j->s;
    const dg_layer *L = j->L;
    const int d = L->d, half = d / 2, nq = e->cfg.n_heads, nkv = L->n_kv;
    float *cb = s->cosb + (size_t)t * half, *sb = s->sinb + (size_t)t * half;
    for (int i = 0; i < half; i++) {
        const float th = (float)(j->pos0 + t) * L->inv_freq[i];   /* float32 product, as the reference */
        cb[i] = dg_round1((float)cos((double)th), e->act);        /* correctly rounded */
        sb[i] = dg_round1((float)sin((double)th), e->act);
    }
    void (*rope)(float *, int, const float *, const float *, dg_dtype) = s->fast ? dg_rope_fast : dg_rope_ref;
    if (!j->kv_only)
        for (int h = 0; h < nq; h++) rope(s->q + ((size_t)t * nq + h) * d, d, cb, sb, e->act);
    for (int h = 0; h < nkv; h++) rope(s->k + ((size_t)t * nkv + h) * d, d, cb, sb, e->act);
}

/* kv_only: K and V alone (the encoder's last layer), the same values */
static void qkv(const dg_engine *e, dg_session *s, const dg_layer *L, const float *hn, int T, int pos0, int kv_only) {
    const int d = L->d, nq = e->cfg.n_heads, nkv = L->n_kv;
    if (!kv_only) linear(e, s, s->q, hn, T, &L->q);
    linear(e, s, s->k, hn, T, &L->k);
    if (L->v.data) linear(e, s, s->v, hn, T, &L->v);
    else memcpy(s->v, s->k, sizeof(float) * (size_t)T * nkv * d);   /* full layers: V is the raw K */
    if (!kv_only) norm(e, s, s->q, s->q, T * nq, d, &L->q_norm);
    norm(e, s, s->k, s->k, T * nkv, d, &L->k_norm);
    norm(e, s, s->v, s->v, T * nkv, d, NULL);
    rope_job rj = {e, s, L, pos0, kv_only};
    dg_pool_run(s->pool, T, rope_row, &rj);   /* per token: its cos / sin row, then its q and k heads */
}

/*
 * Attention of T queries at positions pos0.. over the cache of layer li and the T new keys.
 *   causal (encoder): key at position kp is visible iff kp <= qp, and kp > qp - W on sliding layers;
 *   !causal (decoder): every cached key in the layer's view and every new key is visible.
 * The cache holds positions [n_past - min(n_past, cap), n_past). Scale 1.0, float32 softmax.
 */
typedef struct {
    const dg_engine *e;
    dg_session *s;
    int li, T, pos0, causal;
    int nk;               /* > 0: the layer's keys are packed (s->attkv, one group per gstride bytes): */
    int c0;               /* the cache from position c0, then the T new rows */
    int two;              /* the values packed from key 16 too (the encoder) */
    size_t gstride;
} att_job;

/* the visible keys of query t: cached positions [*c0, n_past) and new rows [*j0, *n1) */
static void visible(const att_job *a, int t, int *c0, int *j0, int *n1) {
    const dg_engine *e = a->e;
    const dg_session *s = a->s;
    const dg_kv *kv = &s->kv[a->li];
    const int W = e->cfg.sliding_window, sliding = !e->layers[a->li].is_full, qp = a->pos0 + t;
    const int n_cached = s->n_past < kv->cap ? s->n_past : kv->cap;
    *c0 = s->n_past - n_cached;
    *j0 = 0;
    *n1 = a->T;
    if (a->causal) {
        *n1 = t + 1;
        if (sliding && qp - W + 1 > *c0) *c0 = qp - W + 1;
        if (sliding && qp - W + 1 > a->pos0) *j0 = qp - W + 1 - a->pos0;
    }
}

/* The oracle: exact q.k, exp and sums (double, rounded once), P.V exact. */
static void attend_exact(void *ctx, int task, int tid) {
    const att_job *a = ctx;
    const dg_engine *e = a->e;
    dg_session *s = a->s;
    const dg_layer *L = &e->layers[a->li];
    const dg_kv *kv = &s->kv[a->li];
    const int d = L->d, nq = e->cfg.n_heads, hpg = nq / L->n_kv, g = task / (a->T * hpg), rem = task % (a->T * hpg);
    const int t = rem / hpg, h = g * hpg + rem % hpg;
    const size_t kw = (size_t)L->n_kv * d;
    const float *qv = s->q + ((size_t)t * nq + h) * d;
    float *out = s->att + ((size_t)t * nq + h) * d, *sc = s->scores_t + (size_t)tid * ((size_t)s->n_ctx + s->T);
    int c0, j0, n1;
    visible(a, t, &c0, &j0, &n1);
    int nk = 0;
    float mx = -INFINITY;
    for (int kp = c0; kp < s->n_past; kp++) {
        const float dot = dot_exact(qv, kv->k + ((size_t)g * kv->cap + (size_t)(kp % kv->cap)) * d, d);
        sc[nk++] = dot;
        mx = dot > mx ? dot : mx;
    }
    for (int j = j0; j < n1; j++) {
        const float dot = dot_exact(qv, s->k + (size_t)j * kw + (size_t)g * d, d);
        sc[nk++] = dot;
        mx = dot > mx ? dot : mx;
    }
    /* like the reference's flash kernels: the sum uses exp(s - max) unrounded, the weights
     * multiplying V are exp(s - max) rounded to the activation dtype, and the division by
     * the sum comes last. exp, the sum and P.V are computed exactly and rounded once to
     * float32, so no result depends on summation order or on an exp approximation. */
    double dsum = 0.0;
    for (int j = 0; j < nk; j++) {
        sc[j] = (float)exp((double)(sc[j] - mx));   /* correctly rounded float exp */
        dsum += sc[j];
        sc[j] = dg_round1(sc[j], e->act);
    }
    const float sum = (float)dsum;
    double *acc = s->pv_t + (size_t)tid * s->dmax;
    for (int i = 0; i < d; i++) acc[i] = 0.0;
    int j = 0;
    for (int kp = c0; kp < s->n_past; kp++, j++) {
        const float *vvec = kv->v + ((size_t)g * kv->cap + (size_t)(kp % kv->cap)) * d;
        for (int i = 0; i < d; i++) acc[i] += (double)sc[j] * vvec[i];
    }
    for (int jj = j0; jj < n1; jj++, j++) {
        const float *vvec = s->v + (size_t)jj * kw + (size_t)g * d;
        for (int i = 0; i < d; i++) acc[i] += (double)sc[j] * vvec[i];
    }
    for (int i = 0; i < d; i++) out[i] = (float)acc[i] / sum;
}

/* The keys of group g visible to a query of job a (cached positions [c0, n_past), new rows [j0, n1)) as
 * contiguous runs: the cache ring (split where it wraps), then the new rows. Returns the count. */
static int kv_segments(const att_job *a, int g, int c0, int j0, int n1, dg_kseg seg[3]) {
    const dg_session *s = a->s;
    const dg_kv *kv = &s->kv[a->li];
    const int d = a->e->layers[a->li].d;
    int ns = 0;
    if (c0 < s->n_past) {
        const int s0 = c0 % kv->cap, n = s->n_past - c0, first = kv->cap - s0 < n ? kv->cap - s0 : n;
        const int64_t base = (int64_t)g * kv->cap * d;
        seg[ns++] = (dg_kseg){kv->k + base + (int64_t)s0 * d, kv->v + base + (int64_t)s0 * d, d, first};
        if (n > first) seg[ns++] = (dg_kseg){kv->k + base, kv->v + base, d, n - first};
    }
    const int64_t nb = ((int64_t)g * a->T + j0) * d;
    if (n1 > j0) seg[ns++] = (dg_kseg){s->kh + nb, s->vh + nb, d, n1 - j0};
    return ns;
}

/* The fast path: the same rounding points, float32 arithmetic in the kernels' order. One task is a block
 * of rows (queries x heads of one KV group, up to DG_ATT_ROWS) that see the same keys, so each key and
 * value row is read from memory once per block: in the decoder every query sees the same keys (the
 * layer's view of the cache, then all T new rows), so a block is up to DG_ATT_ROWS / hpg queries (at long
 * prompts a per-query walk streamed the whole cache 256 times per layer); in the causal encoder each
 * query sees its own range, so a block is one query's heads. Tasks are numbered KV group first, then
 * query block, then head chunk: consecutive tasks read the same group's keys and values, which stay in
 * L2. Each thread has its own score and partial-sum rows. */
/* the AMX attention kernel applies to this layer (bf16 activations on AMX, head dim a multiple of 32);
 * it takes blocks of more than 16 rows */
static int att_amx(const dg_session *s, const dg_layer *L) { return s->attamx && L->d % 32 == 0; }

static void att_block_shape(const dg_engine *e, const dg_session *s, int li, int T, int causal, int *nh, int *qb, int *nhc, int *nqb) {
    const int hpg = e->cfg.n_heads / e->layers[li].n_kv;
    *nh = hpg < DG_ATT_ROWS ? hpg : DG_ATT_ROWS;
    /* causal queries see different keys: several per block only for the AMX kernel, which weighs each
     * row's invisible keys 0 */
    const int amx = att_amx(s, &e->layers[li]) && DG_ATT_ROWS / *nh * *nh > 16;
    *qb = causal && !amx ? 1 : DG_ATT_ROWS / *nh;
    *nhc = (hpg + *nh - 1) / *nh;
    *nqb = (T + *qb - 1) / *qb;
}

/* KV group g's packed keys and values */
static const uint8_t *att_packed(const att_job *a, int g) {
    return a->s->attkv + (size_t)g * a->gstride;   /* (xcalloc starts it on a line) */
}

static void attend_block(void *ctx, int task, int tid) {
    const att_job *a = ctx;
    const dg_engine *e = a->e;
    dg_session *s = a->s;
    const dg_layer *L = &e->layers[a->li];
    const int d = L->d, nq = e->cfg.n_heads, hpg = nq / L->n_kv;
    int nh, qb, nhc, nqb;
    att_block_shape(e, s, a->li, a->T, a->causal, &nh, &qb, &nhc, &nqb);
    const int g = task / (nqb * nhc), rem = task % (nqb * nhc), t0 = (rem / nhc) * qb, hc = rem % nhc;
    const int h = g * hpg + hc * nh, nhr = hpg - hc * nh < nh ? hpg - hc * nh : nh, nqr = a->T - t0 < qb ? a->T - t0 : qb;
    const int64_t ldsc = (int64_t)s->n_ctx + s->T;
    float *sc = s->scores_t + (size_t)tid * DG_ATT_ROWS * (size_t)ldsc, *acc = s->attacc + (size_t)tid * DG_ATT_ROWS * s->dmax;
    uint8_t *scratch = att_amx(s, L) ? s->attamx + (size_t)tid * s->attamx_bytes : NULL;
    float *q = s->q + ((size_t)t0 * nq + h) * d, *out = s->att + ((size_t)t0 * nq + h) * d;
    int c0, j0, n1;
    dg_kseg seg[3];
    if (a->causal && qb > 1) {
        /* a causal block: the union of its queries' views (the first query's start, the last one's end),
         * each row's own part given as two ranges (cache, new rows) in that order */
        int c0b, j0b, n1b;
        visible(a, t0, &c0, &j0, &n1);
        visible(a, t0 + nqr - 1, &c0b, &j0b, &n1b);
        const int ns = kv_segments(a, g, c0, j0, n1b, seg), nc = c0 < s->n_past ? s->n_past - c0 : 0;
        int valid[4 * DG_ATT_ROWS] = {0};
        for (int i = 0; i < nqr; i++) {
            int ci, ji, ni;
            visible(a, t0 + i, &ci, &ji, &ni);
            for (int hh = 0; hh < nhr; hh++) {
                int *v = valid + 4 * (i * nhr + hh);
                v[0] = ci - c0; v[1] = nc; v[2] = nc + ji - j0; v[3] = nc + ni - j0;
            }
        }
        if (a->nk && nqr * nhr > 16 && j0 == 0) {   /* its keys a run of the packed ones: cache from c0, new rows from 0 */
            const int off = (c0 < s->n_past ? c0 : s->n_past) - a->c0;
            if (off % 16 == 0 &&
                dg_attend_block_amx_packed_f32(q, (int64_t)nq * d, nqr, nhr, d, sc, ldsc, acc, out, (int64_t)nq * d, valid, scratch,
                                               att_packed(a, g), a->nk, a->two, off, nc + n1b))
                return;
        }
        if (nqr * nhr > 16 &&
            dg_attend_block_amx_f32(q, (int64_t)nq * d, nqr, nhr, d, seg, ns, sc, ldsc, acc, out, (int64_t)nq * d, valid, scratch))
            return;
        for (int i = 0; i < nqr; i++) {   /* a few rows: one query at a time */
            visible(a, t0 + i, &c0, &j0, &n1);
            const int nsi = kv_segments(a, g, c0, j0, n1, seg);
            dg_attend_block_f32(q + (size_t)i * nq * d, (int64_t)nq * d, 1, nhr, d, seg, nsi, sc, ldsc, acc, out + (size_t)i * nq * d,
                                (int64_t)nq * d, e->act);
        }
        return;
    }
    visible(a, t0, &c0, &j0, &n1);   /* the same for every query of a block */
    const int ns = kv_segments(a, g, c0, j0, n1, seg);
    if (a->nk && nqr * nhr > 16 && c0 == a->c0 && j0 == 0 &&
        dg_attend_block_amx_packed_f32(q, (int64_t)nq * d, nqr, nhr, d, sc, ldsc, acc, out, (int64_t)nq * d, NULL, scratch, att_packed(a, g),
                                       a->nk, a->two, 0, a->nk))
        return;
    /* more than one tile of rows with bf16 activations: the products on AMX tiles */
    if (scratch && nqr * nhr > 16 &&
        dg_attend_block_amx_f32(q, (int64_t)nq * d, nqr, nhr, d, seg, ns, sc, ldsc, acc, out, (int64_t)nq * d, NULL, scratch))
        return;
    dg_attend_block_f32(q, (int64_t)nq * d, nqr, nhr, d, seg, ns, sc, ldsc, acc, out, (int64_t)nq * d, e->act);
}

/* KV group g's new K and V rows head-major, as the cache holds them (one task per group) */
static void head_major(void *ctx, int g, int tid) {
    (void)tid;
    const att_job *a = ctx;
    dg_session *s = a->s;
    const dg_layer *L = &a->e->layers[a->li];
    const size_t d = (size_t)L->d, kw = (size_t)L->n_kv * d;
    for (int t = 0; t < a->T; t++) {
        memcpy(s->kh + ((size_t)g * a->T + t) * d, s->k + (size_t)t * kw + g * d, d * sizeof(float));
        memcpy(s->vh + ((size_t)g * a->T + t) * d, s->v + (size_t)t * kw + g * d, d * sizeof(float));
    }
}

enum { ATT_PACK_CHUNKS = 4 };   /* 32-key chunks per packing task */

/* task: chunks [ATT_PACK_CHUNKS * i ..) of one KV group's keys and values into its tiles */
static void att_pack(void *ctx, int task, int tid) {
    (void)tid;
    const att_job *a = ctx;
    const int nch = (a->nk + 31) / 32, ntask = (nch + ATT_PACK_CHUNKS - 1) / ATT_PACK_CHUNKS;
    const int g = task / ntask, c0 = task % ntask * ATT_PACK_CHUNKS, c1 = c0 + ATT_PACK_CHUNKS < nch ? c0 + ATT_PACK_CHUNKS : nch;
    dg_kseg seg[3];
    const int ns = kv_segments(a, g, a->c0, 0, a->T, seg);
    dg_attend_amx_pack_f32(seg, ns, a->e->layers[a->li].d, (void *)att_packed(a, g), c0, c1, a->two);
}

static void attention(const dg_engine *e, dg_session *s, int li, int T, int pos0, int causal) {
    const int nq = e->cfg.n_heads;
    att_job a = {e, s, li, T, pos0, causal, 0, 0, 0, 0};
    if (s->fast) {
        dg_pool_run(s->pool, e->layers[li].n_kv, head_major, &a);
        int nh, qb, nhc, nqb;
        att_block_shape(e, s, li, T, causal, &nh, &qb, &nhc, &nqb);
        /* The keys and values are packed into tiles once per layer, not once per block (the AMX kernel
         * takes blocks of more than 16 rows): the layer's view of the cache, then the T new rows. In the
         * decoder every block sees all of them; in the encoder a causal block sees a run of them that
         * starts where its first query's view does, a multiple of 16 keys along for most blocks (the
         * values are packed from key 16 too); the others pack their own. */
        const dg_layer *L = &e->layers[li];
        if (s->attkv && att_amx(s, L) && (qb < T ? qb : T) * nh > 16 && nqb * nhc > 1 && (!causal || qb > 1)) {
            const int n_cached = s->n_past < s->kv[li].cap ? s->n_past : s->kv[li].cap;
            a.c0 = s->n_past - n_cached;
            a.nk = n_cached + T;
            a.two = causal && !L->is_full;   /* full layers' causal blocks all start at the first key */
            a.gstride = att_group_bytes(a.nk, L->d, a.two);
            const int nch = (a.nk + 31) / 32;
            dg_pool_run(s->pool, L->n_kv * ((nch + ATT_PACK_CHUNKS - 1) / ATT_PACK_CHUNKS), att_pack, &a);
        }
        dg_pool_run(s->pool, e->layers[li].n_kv * nqb * nhc, attend_block, &a);
    } else {
        dg_pool_run(s->pool, T * nq, attend_exact, &a);
    }
    dg_round_act_pool(s->pool, s->att, (size_t)T * nq * e->layers[li].d, e->act);
}

/* Append the T new K/V rows (positions n_past..) of layer li to its cache. */
static void cache_append(const dg_engine *e, dg_session *s, int li, int T) {
    const dg_layer *L = &e->layers[li];
    dg_kv *kv = &s->kv[li];
    const size_t d = (size_t)L->d, kw = (size_t)L->n_kv * d;
    int t0 = T > kv->cap ? T - kv->cap : 0;   /* older rows would be overwritten anyway */
    for (int t = t0; t < T; t++) {
        const size_t slot = (size_t)((s->n_past + t) % kv->cap);
        for (int g = 0; g < L->n_kv; g++) {
            memcpy(kv->k + ((size_t)g * kv->cap + slot) * d, s->k + (size_t)t * kw + g * d, d * sizeof(float));
            memcpy(kv->v + ((size_t)g * kv->cap + slot) * d, s->v + (size_t)t * kw + g * d, d * sizeof(float));
        }
    }
}

/* ===== mixture of experts ===== */

/*
 * Router on the raw residual x: weightless RMSNorm, * router.scale, * H^-0.5 (each rounded), logits,
 * float32 softmax over all experts, top-k by probability, renormalised to sum 1, then multiplied by
 * per_expert_scale. Writes s->top_i / s->top_w [T, K] in descending-probability order.
 */
typedef struct {
    const dg_engine *e;
    dg_session *s;
    const dg_layer *L;
    float root;
} route_job;

/* the router's input row t: R(R(a * scale) * H^-0.5) in place */
static void route_in_row(void *ctx, int t, int tid) {
    (void)tid;
    const route_job *j = ctx;
    const int H = j->e->cfg.hidden_size;
    const dg_dtype act = j->e->act;
    float *a = j->s->a + (size_t)t * H;
    for (int i = 0; i < H; i++) {
        const float v = dg_round1(a[i] * dg_wget(j->L->router_scale.data, j->L->router_scale.dt, i), act);
        a[i] = dg_round1(v * j->root, act);
    }
}

/* token t's softmax over the experts, its top-k (largest first, lower index on ties) and weights */
static void route_top_row(void *ctx, int t, int tid) {
    (void)tid;
    const route_job *j = ctx;
    const dg_engine *e = j->e;
    dg_session *s = j->s;
    const int E = e->cfg.n_experts, K = e->cfg.top_k;
    float *p = s->rl + (size_t)t * E;
    dg_softmax_ref(p, E);
    int *ti = s->top_i + (size_t)t * K;
    float *tw = s->top_w + (size_t)t * K;
    for (int k = 0; k < K; k++) {
        int best = -1;
        for (int ex = 0; ex < E; ex++) {
            int used = 0;
            for (int q = 0; q < k; q++) used |= ti[q] == ex;
            if (!used && (best < 0 || p[ex] > p[best])) best = ex;
        }
        ti[k] = best;
        tw[k] = p[best];
    }
    float sum = 0.0f;
    for (int k = 0; k < K; k++) sum += tw[k];
    for (int k = 0; k < K; k++) tw[k] = tw[k] / sum;
    for (int k = 0; k < K; k++) tw[k] = tw[k] * dg_wget(j->L->per_expert_scale.data, j->L->per_expert_scale.dt, ti[k]);
}

/* one task per token for the element-wise parts (each token's values computed as before) */
static void route(const dg_engine *e, dg_session *s, const dg_layer *L, const float *x, int T) {
    const int H = e->cfg.hidden_size;
    route_job rj = {e, s, L, (float)pow((double)H, -0.5)};
    norm(e, s, s->a, x, T, H, NULL);
    dg_pool_run(s->pool, T, route_in_row, &rj);
    dg_matmul_act(&s->kc, s->rl, s->a, T, &L->router, s->x_bf16, e->act);   /* not linear(): no projection time */
    dg_pool_run(s->pool, T, route_top_row, &rj);
}

/*
 * out[T,H] = sum_k w_k * expert_{i_k}(u_t): each expert output rounded to the activation dtype,
 * weighted in float32 and summed in float32 in top-k order, rounded once (transformers'
 * grouped_mm experts path, the default). The routings are grouped by expert so that each expert
 * runs once, as a matrix product over its tokens; every output row is the same dot products as
 * a per-token evaluation, so the grouping changes nothing in the result.
 */
typedef struct {
    const dg_session *s;
    float *out;
    int H, K;
    dg_dtype act;   /* each token's sum rounded to it as it is made */
} combine_job;

/* out[t] = sum_k w_k * y(t, k) in top-k order (float32), one token per task */
static void combine_row(void *ctx, int t, int tid) {
    (void)tid;
    const combine_job *j = ctx;
    const int H = j->H, K = j->K;
    float *o = j->out + (size_t)t * H;
    if (j->s->fast && K <= 64) {   /* vectorized, the same operations per element (bit-identical) */
        const float *y[64];
        for (int k = 0; k < K; k++) y[k] = j->s->moe_y + (size_t)j->s->moe_pos[t * K + k] * H;
        dg_wsum_f32(o, y, j->s->top_w + (size_t)t * K, K, H);
    } else {
        for (int i = 0; i < H; i++) o[i] = 0.0f;
        for (int k = 0; k < K; k++) {
            const float w = j->s->top_w[(size_t)t * K + k], *y = j->s->moe_y + (size_t)j->s->moe_pos[t * K + k] * H;
            for (int i = 0; i < H; i++) o[i] += y[i] * w;
        }
    }
    dg_round_act_fast(o, (size_t)H, j->act);
}

static void experts(const dg_engine *e, dg_session *s, const dg_layer *L, float *out, const float *u, int T) {
    const int H = e->cfg.hidden_size, K = e->cfg.top_k, Ie = e->cfg.expert_size, E = e->cfg.n_experts, TK = T * K;
    int *cnt = s->moe_cnt, *pos = s->moe_pos, *tok = s->moe_tok;
    /* the routings sorted by expert (stable): routing r = t*K+k at position pos[r], its token tok[pos[r]] */
    memset(cnt, 0, sizeof(int) * (size_t)E);
    for (int r = 0; r < TK; r++) cnt[s->top_i[r]]++;
    int *off = s->moe_off;
    for (int ex = 0, o = 0; ex < E; ex++) { off[ex] = o; o += cnt[ex]; }
    for (int r = 0; r < TK; r++) {
        const int p = off[s->top_i[r]]++;
        pos[r] = p;
        tok[p] = r / K;
    }
    /* gate_up of every expert that has tokens, then the activation, then down: one grouped product each */
    int ng = 0;
    for (int ex = 0, o = 0; ex < E; o += cnt[ex], ex++) {
        if (!cnt[ex]) continue;
        s->moe_g[ng++] = (dg_gemm){dg_expert_gate_up(e, L, ex), u, tok + o, s->moe_gu + (size_t)o * 2 * Ie, cnt[ex]};
    }
    double t0 = s->timing ? now_ms() : 0;
    dg_matmul_grouped(&s->kc, s->moe_g, ng, s->x_bf16, e->act);
    if (s->timing) *(s->timing == 1 ? &s->prof.experts : &s->prof.enc_experts) += now_ms() - t0;
    gated_act(e, s, TK, Ie, s->moe_gu, 2 * Ie, s->moe_gu + Ie, 2 * Ie, s->moe_act, Ie);
    ng = 0;
    for (int ex = 0, o = 0; ex < E; o += cnt[ex], ex++) {
        if (!cnt[ex]) continue;
        s->moe_g[ng++] = (dg_gemm){dg_expert_down(e, L, ex), s->moe_act + (size_t)o * Ie, NULL, s->moe_y + (size_t)o * H, cnt[ex]};
    }
    t0 = s->timing ? now_ms() : 0;
    dg_matmul_grouped(&s->kc, s->moe_g, ng, s->x_bf16, e->act);
    if (s->timing) *(s->timing == 1 ? &s->prof.experts : &s->prof.enc_experts) += now_ms() - t0;
    combine_job cj = {s, out, H, K, e->act};
    dg_pool_run(s->pool, T, combine_row, &cj);
}

/* ===== one layer ===== */

static void layer_forward(const dg_engine *e, dg_session *s, int li, int T, int pos0, int causal) {
    const dg_layer *L = &e->layers[li];
    const int H = e->cfg.hidden_size, K = e->cfg.top_k;
    const size_t TH = (size_t)T * H;
    float *x = s->x;

    /* attention block */
    /* stage timers count decoder steps only (encoder passes are timed whole, their expert products
     * also alone) */
    double t0 = causal ? 0 : now_ms(), t1;
    s->timing = causal ? 2 : 1;   /* the products timed alone too (prof.proj, prof.experts, prof.enc_experts) */
    norm(e, s, s->hn, x, T, H, &L->in_norm);
    /* The encoder's last layer: only its keys and values are kept (the cache); its queries, attention,
     * output projection and feed-forward feed no later layer and no output (the reference computes
     * them and drops them), so they are skipped, unless a tap is watching every stage. In process:
     * encode of the 6-layer 26B shapes 0.88x, of the 2-layer mid model 0.47x; the 26B-A4B skips 1 of
     * 30 layers. */
    if (causal && li == e->cfg.n_layers - 1 && !s->tap) {
        qkv(e, s, L, s->hn, T, pos0, 1);
        s->timing = 0;
        return;
    }
    qkv(e, s, L, s->hn, T, pos0, 0);
    if (s->tap) {
        char name[64];
        snprintf(name, sizeof(name), "q.%d", li);
        tap(s, name, s->q, T, e->cfg.n_heads * L->d);
        snprintf(name, sizeof(name), "k.%d", li);
        tap(s, name, s->k, T, L->n_kv * L->d);
        snprintf(name, sizeof(name), "v.%d", li);
        tap(s, name, s->v, T, L->n_kv * L->d);
    }
    attention(e, s, li, T, pos0, causal);
    if (s->tap) {
        char name[64];
        snprintf(name, sizeof(name), "attn.%d", li);
        tap(s, name, s->att, T, e->cfg.n_heads * L->d);
    }
    linear(e, s, s->a, s->att, T, &L->o);
    if (!causal) { t1 = now_ms(); s->prof.attention += t1 - t0; t0 = t1; }
    norm(e, s, s->a, s->a, T, H, &L->post_attn_norm);
    dg_add_round_pool(s->pool, x, s->a, TH, e->act);   /* x = R(x + a) */

    /* feed-forward: dense MLP and routed experts in parallel from the same residual */
    norm(e, s, s->hn, x, T, H, &L->pre_ff_norm);
    gated_mlp(e, s, s->h1, s->hn, T, &L->gate, &L->up, &L->down);
    if (!causal) { t1 = now_ms(); s->prof.mlp += t1 - t0; t0 = t1; }
    norm(e, s, s->h1, s->h1, T, H, &L->post_ff1_norm);

    route(e, s, L, x, T);                       /* the router reads the raw residual */
    norm(e, s, s->hn, x, T, H, &L->pre_ff2_norm);
    experts(e, s, L, s->h2, s->hn, T);
    s->timing = 0;
    if (!causal) { t1 = now_ms(); s->prof.moe += t1 - t0; }
    norm(e, s, s->h2, s->h2, T, H, &L->post_ff2_norm);

    dg_add_round_pool(s->pool, s->h1, s->h2, TH, e->act);
    norm(e, s, s->h1, s->h1, T, H, &L->post_ff_norm);
    dg_add_round_pool(s->pool, x, s->h1, TH, e->act);

    const float scalar = causal ? L->enc_scalar : L->dec_scalar;
    dg_scale_round_pool(s->pool, x, scalar, TH, e->act);

    if (s->tap) {
        char name[64];
        for (int i = 0; i < T * K; i++) s->tapbuf[i] = (float)s->top_i[i];
        snprintf(name, sizeof(name), "router.%d.ids", li);
        tap(s, name, s->tapbuf, T, K);
        snprintf(name, sizeof(name), "router.%d.weights", li);
        tap(s, name, s->top_w, T, K);
        snprintf(name, sizeof(name), "layer.%d", li);
        tap(s, name, x, T, H);
    }
}

static int check_ids(const dg_engine *e, const int32_t *ids, int n, const char *what, char *err, size_t errlen) {
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= e->cfg.vocab_size)
            return dg_fail(err, errlen, "%s: token id %d at index %d is outside the vocabulary [0, %d)", what, ids[i], i, e->cfg.vocab_size);
    return 0;
}

/* ===== encoder ===== */

int dg_encode(dg_session *s, const int32_t *ids, int n, char *err, size_t errlen) {
    const dg_engine *e = s->e;
    if (n < 0 || (n > 0 && !ids)) return dg_fail(err, errlen, "encode: bad token array");
    if (check_ids(e, ids, n, "encode", err, errlen)) return -1;
    if ((int64_t)s->n_past + n > s->n_ctx)
        return dg_fail(err, errlen, "encode: context full: %d cached + %d new tokens exceed n_ctx %d", s->n_past, n, s->n_ctx);
    const double t0 = now_ms();
    for (int off = 0; off < n; off += s->n_batch) {
        const int T = n - off < s->n_batch ? n - off : s->n_batch;
        embed_tokens(e, s->x, ids + off, T);
        tap(s, "embed", s->x, T, e->cfg.hidden_size);
        for (int li = 0; li < e->cfg.n_layers; li++) {
            layer_forward(e, s, li, T, s->n_past, 1);
            cache_append(e, s, li, T);
        }
        s->n_past += T;
    }
    s->prof.encode += now_ms() - t0;
    s->prof.n_encode_tokens += n;
    return 0;
}

/* ===== decoder ===== */

/*
 * Self-conditioning input: S = softmax(sc_logits) . E * embed_scale (probabilities rounded to the
 * weight dtype first), then x = rmsnorm(embed(canvas) + MLP(rmsnorm(S, pre_norm))) without weight.
 * With no sc_logits S = 0 and the MLP contributes exactly 0.
 */
typedef struct {
    const dg_engine *e;
    dg_session *s;
    const float *sc;
    int V;
    float *S;
    int pack;   /* each row packed for the AMX P.E as it is made (in a per-thread row, not in probs) */
} sm_job;

/* probabilities of one row of self-conditioning logits, rounded to the compute dtype */
static void softmax_rows(void *ctx, int t, int tid) {
    const sm_job *j = ctx;
    float *p = j->pack ? j->s->prow + (size_t)tid * j->V : j->s->probs + (size_t)t * j->V;
    if (j->pack) {   /* (the pack path's probabilities are bf16: the same values in three passes) */
        dg_nn_pack_softmax_row(&j->s->kc, t, j->sc + (size_t)t * j->V, j->V, p);
        return;
    }
    memcpy(p, j->sc + (size_t)t * j->V, (size_t)j->V * sizeof(float));
    if (j->s->fast) dg_softmax_fast(p, j->V);
    else dg_softmax_ref(p, j->V);
    if (j->s->fast) dg_round_act_fast(p, (size_t)j->V, j->e->wdt);   /* bit-identical, vectorized */
    else dg_round_act(p, (size_t)j->V, j->e->wdt);
    if (j->pack) dg_nn_pack_row(&j->s->kc, t, p, j->V);
}

/* sift the heap h[0..n) (a min-heap by probability) down from i */
static void heap_down(int *h, int n, const float *p, int i) {
    for (;;) {
        int m = i;
        const int l = 2 * i + 1, r = l + 1;
        if (l < n && p[h[l]] < p[h[m]]) m = l;
        if (r < n && p[h[r]] < p[h[m]]) m = r;
        if (m == i) return;
        const int t = h[i]; h[i] = h[m]; h[m] = t;
        i = m;
    }
}

/* The top-k approximation of one row: the probabilities as the exact path computes them, then
 * S_t = sum over the k most probable tokens of p_v E_v (float32, in index order). */
static void softmax_topk_rows(void *ctx, int t, int tid) {
    const sm_job *j = ctx;
    dg_session *s = j->s;
    const dg_engine *e = j->e;
    const int H = e->cfg.hidden_size, k = s->sc_top_k, V = j->V;
    softmax_rows(ctx, t, tid);
    const float *p = s->probs + (size_t)t * V;
    int *h = s->topk_i + (size_t)tid * k;
    for (int v = 0; v < k; v++) h[v] = v;
    for (int i = k / 2 - 1; i >= 0; i--) heap_down(h, k, p, i);
    for (int v = k; v < V; v++)
        if (p[v] > p[h[0]]) { h[0] = v; heap_down(h, k, p, 0); }
    for (int a = 1; a < k; a++)   /* index order, so the sum does not depend on the heap's layout */
        for (int b = a; b > 0 && h[b - 1] > h[b]; b--) { const int x = h[b]; h[b] = h[b - 1]; h[b - 1] = x; }
    float *St = j->S + (size_t)t * H, *row = s->topk_row + (size_t)tid * H;
    memset(St, 0, sizeof(float) * (size_t)H);
    for (int i = 0; i < k; i++) {
        if (p[h[i]] == 0.0f) continue;
        dg_dequant_range(&e->embed, h[i], 0, H, row);
        for (int c = 0; c < H; c++) St[c] += p[h[i]] * row[c];
    }
}

static void self_condition(const dg_engine *e, dg_session *s, const int32_t *canvas, int T, const float *sc) {
    const int H = e->cfg.hidden_size, V = e->cfg.vocab_size;
    const size_t TH = (size_t)T * H;
    embed_tokens(e, s->x, canvas, T);
    tap(s, "embed", s->x, T, H);
    float *S = s->h2;
    memset(S, 0, TH * sizeof(float));
    if (sc) {
        /* P = softmax(sc) in float32, cast to the compute dtype, then S = P . E (a V-long reduction per
         * element: exact and rounded once in the oracle) */
        const int pack = s->fast && s->prow && !s->sc_top_k && dg_matmul_nn_can_prepack(&s->kc, T, &e->embed, e->wdt == DG_BF16);
        sm_job sj = {e, s, sc, V, S, pack};
        dg_pool_run(s->pool, T, s->sc_top_k ? softmax_topk_rows : softmax_rows, &sj);
        if (pack) dg_matmul_nn_prepacked(&s->kc, S, T, &e->embed);
        else if (!s->sc_top_k) dg_matmul_nn(&s->kc, S, s->probs, V, T, &e->embed, e->wdt == DG_BF16);
        dg_round_act_pool(s->pool, S, TH, e->act);
        dg_scale_round_pool(s->pool, S, e->embed_scale, TH, e->act);
    }
    tap(s, "sc_embed", S, T, H);
    if (sc) {
        norm(e, s, s->hn, S, T, H, &e->sc_pre_norm);
        gated_mlp(e, s, s->h1, s->hn, T, &e->sc_gate, &e->sc_up, &e->sc_down);
        dg_add_round_pool(s->pool, s->x, s->h1, TH, e->act);
    }
    norm(e, s, s->x, s->x, T, H, NULL);
    tap(s, "input", s->x, T, H);
}

typedef struct {
    float *logits;
    int V;
    float cap;
} cap_job;

/* the oracle's cap * tanh(x / cap) on one row: torch's tanh is correctly rounded (a double tanh rounded
 * once). The fast path applies dg_softcap_f32 inside dg_matmul_softcap. */
static void softcap_rows(void *ctx, int t, int tid) {
    (void)tid;
    const cap_job *j = ctx;
    float *l = j->logits + (size_t)t * j->V;
    for (int v = 0; v < j->V; v++) l[v] = (float)tanh((double)(l[v] / j->cap)) * j->cap;
}

int dg_decode(dg_session *s, const int32_t *canvas, int n, const float *sc_logits, float *logits, char *err, size_t errlen) {
    const dg_engine *e = s->e;
    const int H = e->cfg.hidden_size, V = e->cfg.vocab_size;
    if (!canvas || !logits || n < 1 || n > e->cfg.canvas_length)
        return dg_fail(err, errlen, "decode: canvas of %d tokens (must be 1..canvas_length %d)", n, e->cfg.canvas_length);
    if (check_ids(e, canvas, n, "decode", err, errlen)) return -1;
    const double t0 = now_ms();
    self_condition(e, s, canvas, n, sc_logits);
    const double t1 = now_ms();
    for (int li = 0; li < e->cfg.n_layers; li++) layer_forward(e, s, li, n, s->n_past, 0);
    const double t2 = now_ms();
    norm(e, s, s->x, s->x, n, H, &e->final_norm);
    tap(s, "norm", s->x, n, H);
    if (s->fast)   /* the LM head with the softcap applied as its outputs are stored */
        dg_matmul_softcap(&s->kc, logits, s->x, n, &e->lm_head, s->x_bf16, e->act, (float)e->cfg.final_logit_softcap);
    else {
        linear(e, s, logits, s->x, n, &e->lm_head);
        cap_job cj = {logits, V, (float)e->cfg.final_logit_softcap};
        dg_pool_run(s->pool, n, softcap_rows, &cj);
    }
    tap(s, "logits", logits, n, V);
    const double t3 = now_ms();
    s->prof.self_cond += t1 - t0;
    s->prof.lm_head += t3 - t2;
    s->prof.decode += t3 - t0;
    s->prof.n_decode++;
    return 0;
}
