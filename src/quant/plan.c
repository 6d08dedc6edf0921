/*
 * plan.c - the tensors of a DiffusionGemma GGUF and the type of each, per file type.
 *
 * Names, ne and the converter's order come from llama.cpp PR #24423 (conversion/diffusion_gemma.py on
 * Gemma4Model / Gemma3Model / TextModel; ARCHITECTURE.md "GGUF tensor names"). Types:
 *
 *   F32, F16, BF16, Q8_0   the converter's own output types (TextModel.prepare_tensors): F32 for 1-D
 *                          tensors, *_norm.weight, the router ffn_gate_inp.weight and names not ending
 *                          in .weight; the file type for the rest (Q8_0 falls back to F16 where gguf-py's
 *                          quantizer refuses a row that is not a multiple of 32).
 *   Q4_0, Q4_K_M, Q5_K_M,  llama-quantize on top of a converted file (src/llama-quant.cpp):
 *   Q6_K                   tensor_allows_quantization, llama_tensor_get_type_impl with its counters in
 *                          the loader's tensor order (layer, then name), tensor_type_fallback. Where
 *                          llama-quantize has no fallback (a Q4_0 / Q8_0 row not a multiple of 32) it
 *                          stops with an error; dgemma writes F16 there and warns.
 *
 * ARCHITECTURE.md "Quantization rules" tabulates the outcome per tensor class.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quant/quant.h"

/* ===== file types ===== */

static const struct { int ft; const char *name; uint32_t base; } k_ftypes[] = {
    {DG_FT_F32, "F32", GGML_TYPE_F32},       {DG_FT_F16, "F16", GGML_TYPE_F16},
    {DG_FT_BF16, "BF16", GGML_TYPE_BF16},    {DG_FT_Q8_0, "Q8_0", GGML_TYPE_Q8_0},
    {DG_FT_Q4_0, "Q4_0", GGML_TYPE_Q4_0},    {DG_FT_Q4_K_M, "Q4_K_M", GGML_TYPE_Q4_K},
    {DG_FT_Q5_K_M, "Q5_K_M", GGML_TYPE_Q5_K}, {DG_FT_Q6_K, "Q6_K", GGML_TYPE_Q6_K},
};
#define N_FTYPES (int)(sizeof(k_ftypes) / sizeof(k_ftypes[0]))

static int ieq(const char *a, const char *b) {
    for (; *a && *b; a++, b++) {
        char x = *a >= 'a' && *a <= 'z' ? (char)(*a - 32) : *a, y = *b >= 'a' && *b <= 'z' ? (char)(*b - 32) : *b;
        if (x != y) return 0;
    }
    return *a == *b;
}

int dg_ftype_parse(const char *s) {
    for (int i = 0; s && i < N_FTYPES; i++)
        if (ieq(s, k_ftypes[i].name)) return k_ftypes[i].ft;
    return -1;
}

const char *dg_ftype_name(int ft) {
    for (int i = 0; i < N_FTYPES; i++)
        if (k_ftypes[i].ft == ft) return k_ftypes[i].name;
    return "?";
}

static uint32_t ftype_base(int ft) {
    for (int i = 0; i < N_FTYPES; i++)
        if (k_ftypes[i].ft == ft) return k_ftypes[i].base;
    return GGML_TYPE_F32;
}

int dg_ftype_is_mix(int ft) { return ft == DG_FT_Q4_0 || ft == DG_FT_Q4_K_M || ft == DG_FT_Q5_K_M || ft == DG_FT_Q6_K; }

/* ===== the tensor list ===== */

int64_t dg_qt_numel(const dg_qtensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->n_dims; i++) n *= t->ne[i];
    return n;
}

int64_t dg_qt_rows(const dg_qtensor *t) { return t->ne[0] ? dg_qt_numel(t) / t->ne[0] : 0; }

void dg_qplan_free(dg_qplan *p) {
    free(p->t);
    memset(p, 0, sizeof(*p));
}

static int ends_with(const char *s, const char *suf) {
    const size_t n = strlen(s), m = strlen(suf);
    return n >= m && !strcmp(s + n - m, suf);
}

static int layer_of(const char *gguf_name) {
    int l = -1;
    if (strncmp(gguf_name, "blk.", 4) || sscanf(gguf_name, "blk.%d.", &l) != 1) return -1;
    return l;
}

int dg_qplan_add(dg_qplan *p, const char *hf, const char *gname, int n_dims, const int64_t *shape, dg_qkind kind, int src,
                 char *err, size_t errlen) {
    if (n_dims < 1 || n_dims > GGUF_MAX_DIMS) return dg_fail(err, errlen, "tensor '%s': %d dimensions (1 to %d)", hf, n_dims, GGUF_MAX_DIMS);
    if (p->n == p->cap) {
        const int cap = p->cap ? 2 * p->cap : 256;
        dg_qtensor *nt = realloc(p->t, sizeof(*nt) * (size_t)cap);
        if (!nt) return dg_fail(err, errlen, "out of memory");
        p->t = nt;
        p->cap = cap;
    }
    dg_qtensor *t = &p->t[p->n];
    memset(t, 0, sizeof(*t));
    if (gname) snprintf(t->name, sizeof(t->name), "%s", gname);
    else if (dg_gguf_name(hf, t->name, sizeof(t->name)))
        return dg_fail(err, errlen, "tensor '%s' has no GGUF name (not a DiffusionGemma text tensor)", hf);
    snprintf(t->hf, sizeof(t->hf), "%s", hf ? hf : "");
    t->n_dims = n_dims;
    for (int i = 0; i < GGUF_MAX_DIMS; i++) t->ne[i] = i < n_dims ? shape[n_dims - 1 - i] : 1;
    t->layer = layer_of(t->name);
    t->kind = kind;
    t->src = src;
    t->rows_kept = -1;
    p->n++;
    return 0;
}

void dg_config_global_head(const dg_config *c, int *head_dim, int *n_kv) {
    *head_dim = c->head_dim;
    *n_kv = c->n_kv_heads;
    for (int i = 0; i < c->n_layers; i++)
        if (c->layer_full[i]) {
            *head_dim = c->layer_head_dim[i];
            *n_kv = c->layer_n_kv[i];
            return;
        }
}

int dg_qplan_add_rope(dg_qplan *p, const dg_config *c, char *err, size_t errlen) {
    int gdim, gkv;
    dg_config_global_head(c, &gdim, &gkv);
    const int64_t ne = gdim / 2;
    return dg_qplan_add(p, "", "rope_freqs.weight", 1, &ne, DG_QK_ROPE, -1, err, errlen);
}

/* The HF tensors of a config, unsorted. */
static int add_expected(dg_qplan *p, const dg_config *c, char *err, size_t errlen) {
    const int64_t V = c->vocab_size, H = c->hidden_size, I = c->intermediate_size, E = c->n_experts, Ie = c->expert_size,
                  nq = c->n_heads;
    char n[160];
#define ADD(kind, ...) do { const int64_t sh_[] = {__VA_ARGS__}; \
        if (dg_qplan_add(p, n, NULL, (int)(sizeof(sh_) / sizeof(sh_[0])), sh_, kind, -1, err, errlen)) return -1; } while (0)
#define G(s) snprintf(n, sizeof(n), "%s", s)
    G("model.decoder.embed_tokens.weight"); ADD(DG_QK_EMBED, V, H);
    G("model.decoder.norm.weight"); ADD(DG_QK_NORM, H);
    G("model.decoder.self_conditioning.pre_norm.weight"); ADD(DG_QK_NORM, H);
    G("model.decoder.self_conditioning.gate_proj.weight"); ADD(DG_QK_MATRIX, I, H);
    G("model.decoder.self_conditioning.up_proj.weight"); ADD(DG_QK_MATRIX, I, H);
    G("model.decoder.self_conditioning.down_proj.weight"); ADD(DG_QK_MATRIX, H, I);
#undef G
    for (int i = 0; i < c->n_layers; i++) {
        const int64_t d = c->layer_head_dim[i], nkv = c->layer_n_kv[i];
#define L(s) snprintf(n, sizeof(n), "model.decoder.layers.%d.%s", i, s)
        L("input_layernorm.weight"); ADD(DG_QK_NORM, H);
        L("self_attn.q_proj.weight"); ADD(DG_QK_MATRIX, nq * d, H);
        L("self_attn.k_proj.weight"); ADD(DG_QK_MATRIX, nkv * d, H);
        if (!c->layer_full[i]) { L("self_attn.v_proj.weight"); ADD(DG_QK_MATRIX, nkv * d, H); }
        L("self_attn.o_proj.weight"); ADD(DG_QK_MATRIX, H, nq * d);
        L("self_attn.q_norm.weight"); ADD(DG_QK_NORM, d);
        L("self_attn.k_norm.weight"); ADD(DG_QK_NORM, d);
        L("post_attention_layernorm.weight"); ADD(DG_QK_NORM, H);
        L("pre_feedforward_layernorm.weight"); ADD(DG_QK_NORM, H);
        L("mlp.gate_proj.weight"); ADD(DG_QK_MATRIX, I, H);
        L("mlp.up_proj.weight"); ADD(DG_QK_MATRIX, I, H);
        L("mlp.down_proj.weight"); ADD(DG_QK_MATRIX, H, I);
        L("post_feedforward_layernorm_1.weight"); ADD(DG_QK_NORM, H);
        L("pre_feedforward_layernorm_2.weight"); ADD(DG_QK_NORM, H);
        L("router.proj.weight"); ADD(DG_QK_ROUTER, E, H);
        L("router.scale"); ADD(DG_QK_NORM, H);
        L("router.per_expert_scale"); ADD(DG_QK_NORM, E);
        L("experts.gate_up_proj"); ADD(DG_QK_MATRIX, E, 2 * Ie, H);
        L("experts.down_proj"); ADD(DG_QK_MATRIX, E, H, Ie);
        L("post_feedforward_layernorm_2.weight"); ADD(DG_QK_NORM, H);
        L("post_feedforward_layernorm.weight"); ADD(DG_QK_NORM, H);
        L("layer_scalar"); ADD(DG_QK_SCALAR, 1);
#undef L
        snprintf(n, sizeof(n), "model.encoder.language_model.layers.%d.layer_scalar", i);
        ADD(DG_QK_SCALAR, 1);
    }
#undef ADD
    return 0;
}

static int cmp_hf(const void *a, const void *b) { return strcmp(((const dg_qtensor *)a)->hf, ((const dg_qtensor *)b)->hf); }

int dg_qplan_from_config(dg_qplan *p, const dg_config *c, char *err, size_t errlen) {
    memset(p, 0, sizeof(*p));
    p->n_layers = c->n_layers;
    p->n_experts = c->n_experts;
    if (dg_qplan_add_rope(p, c, err, errlen) || add_expected(p, c, err, errlen)) { dg_qplan_free(p); return -1; }
    qsort(p->t + 1, (size_t)(p->n - 1), sizeof(dg_qtensor), cmp_hf);
    return 0;
}

int dg_qplan_check(const dg_qplan *p, const dg_config *c, const char *where, char *err, size_t errlen) {
    dg_qplan ex = {0};
    int rc = -1;
    if (add_expected(&ex, c, err, errlen)) goto out;
    for (int i = 0; i < ex.n; i++) {
        const dg_qtensor *e = &ex.t[i], *found = NULL;
        for (int j = 0; j < p->n && !found; j++)
            if (!strcmp(p->t[j].hf, e->hf)) found = &p->t[j];
        if (!found) { dg_fail(err, errlen, "%s: tensor '%s' is missing from the checkpoint", where, e->hf); goto out; }
        int ok = found->n_dims == e->n_dims;
        for (int k = 0; ok && k < e->n_dims; k++) ok = found->ne[k] == e->ne[k];
        if (!ok) {
            char got[96], want[96];
            int64_t a[GGUF_MAX_DIMS], b[GGUF_MAX_DIMS];
            for (int k = 0; k < found->n_dims; k++) a[k] = found->ne[found->n_dims - 1 - k];
            for (int k = 0; k < e->n_dims; k++) b[k] = e->ne[e->n_dims - 1 - k];
            dg_fmt_shape(got, sizeof(got), a, found->n_dims);
            dg_fmt_shape(want, sizeof(want), b, e->n_dims);
            dg_fail(err, errlen, "%s: tensor '%s' has shape %s, config.json says %s", where, e->hf, got, want);
            goto out;
        }
    }
    for (int j = 0; j < p->n; j++) {
        const dg_qtensor *t = &p->t[j];
        if (t->kind == DG_QK_ROPE || !strcmp(t->hf, "lm_head.weight")) continue;
        int known = 0;
        for (int i = 0; i < ex.n && !known; i++) known = !strcmp(ex.t[i].hf, t->hf);
        if (!known) {
            dg_fail(err, errlen, "%s: tensor '%s' does not belong to this configuration (layer_types / config.json disagree with the weights)",
                    where, t->hf);
            goto out;
        }
    }
    rc = 0;
out:
    dg_qplan_free(&ex);
    return rc;
}

/* ===== type rules ===== */

/* TextModel.prepare_tensors: the tensors the converter always writes as F32. */
static int converter_f32(const dg_qtensor *t) {
    return t->n_dims <= 1 || ends_with(t->name, "_norm.weight") || strstr(t->name, "ffn_gate_inp.weight") ||
           !ends_with(t->name, ".weight");
}

/* llama-quant.cpp tensor_allows_quantization (the clauses that can match this architecture's names;
 * the others name tensors of other architectures). */
static int allows_quantization(const dg_qtensor *t) {
    if (t->n_dims < 2) return 0;
    return ends_with(t->name, "weight") && !strstr(t->name, "_norm.weight") && !strstr(t->name, "ffn_gate_inp.weight");
}

typedef enum { CAT_TOKEN_EMBD, CAT_ATTN_Q, CAT_ATTN_V, CAT_ATTN_K, CAT_ATTN_QKV, CAT_ATTN_KV_B, CAT_ATTN_OUTPUT,
               CAT_FFN_UP, CAT_FFN_GATE, CAT_FFN_DOWN, CAT_OUTPUT, CAT_OTHER } category;

static category category_of(const char *n) {
    if (!strcmp(n, "output.weight")) return CAT_OUTPUT;
    if (!strcmp(n, "token_embd.weight") || !strcmp(n, "per_layer_token_embd.weight")) return CAT_TOKEN_EMBD;
    if (strstr(n, "attn_qkv.weight")) return CAT_ATTN_QKV;
    if (strstr(n, "attn_kv_b.weight")) return CAT_ATTN_KV_B;
    if (strstr(n, "attn_v.weight")) return CAT_ATTN_V;
    if (strstr(n, "attn_k.weight")) return CAT_ATTN_K;
    if (strstr(n, "attn_q.weight")) return CAT_ATTN_Q;
    if (strstr(n, "attn_output.weight")) return CAT_ATTN_OUTPUT;
    if (strstr(n, "ffn_up")) return CAT_FFN_UP;
    if (strstr(n, "ffn_gate")) return CAT_FFN_GATE;
    if (strstr(n, "ffn_down")) return CAT_FFN_DOWN;
    return CAT_OTHER;
}

static int is_attn_v(category c) { return c == CAT_ATTN_V || c == CAT_ATTN_QKV || c == CAT_ATTN_KV_B; }

static int use_more_bits(int i, int n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

static int64_t blck(uint32_t type) {
    int64_t e;
    uint64_t b;
    return gguf_ggml_block(type, &e, &b) ? 1 : e;
}

typedef struct {
    int n_attention_wv, i_attention_wv, n_ffn_down, i_ffn_down, n_ffn_gate, i_ffn_gate, n_ffn_up, i_ffn_up;
    int tied, n_expert, n_layer;
} qstate;

/* layer_info of llama_tensor_get_type_impl: with experts the layer comes from the name (and must be in
 * range), without them from the running counter. */
static int layer_info(const qstate *qs, int counter, const dg_qtensor *t, int *i_layer, char *err, size_t errlen) {
    *i_layer = counter;
    if (qs->n_expert > 1) {
        if (t->layer < 0) return dg_fail(err, errlen, "failed to determine the layer of tensor %s", t->name);
        if (t->layer >= qs->n_layer) return dg_fail(err, errlen, "bad layer %d for tensor %s (must be in [0, %d))", t->layer, t->name, qs->n_layer);
        *i_layer = t->layer;
    }
    return 0;
}

/* llama_tensor_get_type_impl for the mixes dgemma writes (Q4_0, Q4_K_M, Q5_K_M, Q6_K). */
static int mix_type(qstate *qs, const dg_qtensor *t, int ft, uint32_t *type, char *err, size_t errlen) {
    uint32_t nt = *type;
    const category cat = category_of(t->name);
    int il;
    if (cat == CAT_OUTPUT || (qs->tied && cat == CAT_TOKEN_EMBD)) {
        /* the output (or the embedding doubling as it) */
        if (t->ne[0] % blck(nt)) nt = GGML_TYPE_Q8_0;
        else if (nt != GGML_TYPE_Q8_0) nt = GGML_TYPE_Q6_K;
    } else if (cat == CAT_TOKEN_EMBD) {
        /* untied embedding: the default type for these file types */
    } else if (is_attn_v(cat)) {
        if ((ft == DG_FT_Q4_K_M || ft == DG_FT_Q5_K_M) && use_more_bits(qs->i_attention_wv, qs->n_attention_wv)) nt = GGML_TYPE_Q6_K;
        if (qs->n_expert == 8) nt = GGML_TYPE_Q8_0;
        qs->i_attention_wv++;
    } else if (cat == CAT_ATTN_K) {
        if (qs->n_expert == 8) nt = GGML_TYPE_Q8_0;
    } else if (cat == CAT_FFN_DOWN) {
        if (layer_info(qs, qs->i_ffn_down, t, &il, err, errlen)) return -1;
        if ((ft == DG_FT_Q4_K_M || ft == DG_FT_Q5_K_M) && use_more_bits(il, qs->n_layer)) nt = GGML_TYPE_Q6_K;
        qs->i_ffn_down++;
    } else if (cat == CAT_ATTN_OUTPUT) {
        if (qs->n_expert == 8 && ft == DG_FT_Q4_K_M) nt = GGML_TYPE_Q5_K;
    } else if (cat == CAT_ATTN_QKV) {
        if (ft == DG_FT_Q4_K_M) nt = GGML_TYPE_Q5_K;
        else if (ft == DG_FT_Q5_K_M) nt = GGML_TYPE_Q6_K;
    } else if (cat == CAT_FFN_GATE) {
        if (layer_info(qs, qs->i_ffn_gate, t, &il, err, errlen)) return -1;
        qs->i_ffn_gate++;
    } else if (cat == CAT_FFN_UP) {
        if (layer_info(qs, qs->i_ffn_up, t, &il, err, errlen)) return -1;
        qs->i_ffn_up++;
    }
    *type = nt;
    return 0;
}

/* tensor_type_fallback: a block that does not divide the row width gets a 32-block type, F16 if even
 * that does not divide it. *none: llama-quantize defines no fallback for the type (it stops). */
static uint32_t fallback(const dg_qtensor *t, uint32_t type, int *fell, int *none) {
    *fell = *none = 0;
    if (t->ne[0] % blck(type) == 0) return type;
    *fell = 1;
    uint32_t r;
    switch (type) {
    case GGML_TYPE_Q2_K: case GGML_TYPE_Q3_K: r = GGML_TYPE_Q4_0; break;
    case GGML_TYPE_Q4_K: r = GGML_TYPE_Q5_0; break;
    case GGML_TYPE_Q5_K: r = GGML_TYPE_Q5_1; break;
    case GGML_TYPE_Q6_K: r = GGML_TYPE_Q8_0; break;
    default: *none = 1; return GGML_TYPE_F16;
    }
    if (t->ne[0] % blck(r)) r = GGML_TYPE_F16;
    return r;
}

/* llama_model_loader's weight order: by layer (blk.N., others first), then by name. */
static int cmp_loader(const void *a, const void *b) {
    const dg_qtensor *x = a, *y = b;
    if (x->layer != y->layer) return x->layer < y->layer ? -1 : 1;
    return strcmp(x->name, y->name);
}

static uint64_t tensor_bytes(const dg_qtensor *t) {
    int64_t e;
    uint64_t b;
    if (gguf_ggml_block(t->type, &e, &b)) return 0;
    return (uint64_t)(t->ne[0] / e) * b * (uint64_t)dg_qt_rows(t);
}

int dg_qplan_types(dg_qplan *p, int ft, void (*warn)(void *, const char *), void *user, char *err, size_t errlen) {
    p->ftype = ft;
    const uint32_t base = ftype_base(ft);
    if (!dg_ftype_is_mix(ft)) {
        for (int i = 0; i < p->n; i++) {
            dg_qtensor *t = &p->t[i];
            t->fallback = t->no_fallback = 0;
            t->type = converter_f32(t) ? GGML_TYPE_F32 : base;
            if (t->type == GGML_TYPE_Q8_0 && t->ne[0] % 32) { t->type = GGML_TYPE_F16; t->fallback = 1; }
            t->nbytes = tensor_bytes(t);
        }
        return 0;
    }
    qsort(p->t, (size_t)p->n, sizeof(dg_qtensor), cmp_loader);
    qstate qs = {0};
    qs.tied = 1;
    qs.n_expert = p->n_experts > 1 ? p->n_experts : 1;
    qs.n_layer = p->n_layers;
    for (int i = 0; i < p->n; i++) {
        const category c = category_of(p->t[i].name);
        if (is_attn_v(c)) qs.n_attention_wv++;
        if (c == CAT_OUTPUT) qs.tied = 0;
    }
    qs.n_ffn_down = qs.n_ffn_gate = qs.n_ffn_up = p->n_layers;
    for (int i = 0; i < p->n; i++) {
        dg_qtensor *t = &p->t[i];
        t->fallback = t->no_fallback = 0;
        if (!allows_quantization(t)) {
            t->type = GGML_TYPE_F32;   /* kept as converted: F32 for every such tensor of this architecture */
        } else {
            uint32_t ty = base;
            if (mix_type(&qs, t, ft, &ty, err, errlen)) return -1;
            t->type = fallback(t, ty, &t->fallback, &t->no_fallback);
            if (t->no_fallback && warn) {
                char msg[256];
                snprintf(msg, sizeof(msg), "%s: row width %lld is not a multiple of %lld (%s): written as F16 (llama-quantize has no fallback for %s and stops)",
                         t->name, (long long)t->ne[0], (long long)blck(ty), gguf_ggml_type_name(ty), gguf_ggml_type_name(ty));
                warn(user, msg);
            }
        }
        t->nbytes = tensor_bytes(t);
    }
    return 0;
}

/* ===== size label (gguf-py: GGUFWriter.get_total_parameter_count, utility.size_label) ===== */

static void rounded(int64_t n, char *out, size_t len) {
    double x = (double)n, s;
    const char *suf;
    if (x > 1e12) { s = x * 1e-12; suf = "T"; }
    else if (x > 1e9) { s = x * 1e-9; suf = "B"; }
    else if (x > 1e6) { s = x * 1e-6; suf = "M"; }
    else { s = x * 1e-3; suf = "K"; }
    /* Python: fix = max(2 - len(str(round(s)).lstrip('0')), 0), round() to even */
    char buf[64];
    snprintf(buf, sizeof(buf), "%.0f", s);   /* round half to even, as Python's round() */
    const char *d = buf;
    while (*d == '0') d++;
    int fix = 2 - (int)strlen(d);
    if (fix < 0) fix = 0;
    snprintf(out, len, "%.*f%s", fix, s, suf);
}

void dg_qplan_size_label(const dg_qplan *p, char *out, size_t n) {
    int64_t total = 0, shared = 0, expert = 0, expert_sum = 0, n_exp = 0;
    for (int i = 0; i < p->n; i++) {
        const dg_qtensor *t = &p->t[i];
        const int64_t size = dg_qt_numel(t);
        if (strstr(t->name, "_exps.") && t->n_dims >= 3) {
            const int64_t ec = t->ne[2];
            expert += size / ec;
            expert_sum += ec;
            n_exp++;
        } else {
            shared += size;
        }
        total += size;
    }
    const int64_t ec = n_exp ? expert_sum / n_exp : 0;
    char r[32];
    if (ec > 0) {
        rounded(shared + expert, r, sizeof(r));
        snprintf(out, n, "%lldx%s", (long long)ec, r);
    } else {
        rounded(total, out, n);
    }
}
