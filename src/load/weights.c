#define _POSIX_C_SOURCE 200809L
/*
 * weights.c - dg_engine_load: config, weights, and binding of every text tensor by name, once, with
 * dtype and shape checked against the config. After this no code looks a tensor up by name. Vision
 * tensors are skipped. The encoder shares every weight with the decoder (the checkpoint stores the
 * decoder copy only) except its own layer_scalar buffers.
 *
 * Three sources, one set of views. Tensors are asked for by their Hugging Face names and shapes:
 *   HF    a transformers checkpoint directory: the names as asked, F32/F16/BF16;
 *   MLX   an mlx-vlm conversion: the same names, quantized modules as packed codes + scales (+ biases),
 *         bound through load/mlx.c;
 *   GGUF  a llama.cpp PR #24423 file: the name mapped (dg_gguf_name below), ne the shape reversed, any
 *         block type; the config comes from the metadata.
 */
#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "internal.h"
#include "load/gguf.h"
#include "load/mlx.h"

typedef struct {
    dg_engine *e;
    char *err;
    size_t errlen;
} binder;

static const char *file_of(const dg_engine *e, const st_tensor *t) { return e->st.files[t->file].path; }

/* ===== model paths ===== */

static int ends_with(const char *s, const char *suf) {
    const size_t n = strlen(s), m = strlen(suf);
    return n >= m && !strcmp(s + n - m, suf);
}

int dg_resolve_model(const char *path, char **gguf, char *err, size_t errlen) {
    *gguf = NULL;
    struct stat sb;
    if (!path) return dg_fail(err, errlen, "no model path given");
    if (stat(path, &sb) != 0) {
        if (ends_with(path, ".gguf")) return dg_fail(err, errlen, "%s: no such file", path);
        return 0;   /* a directory that is not there: the config loader names the config.json it lacks */
    }
    if (S_ISREG(sb.st_mode)) {
        FILE *f = fopen(path, "rb");
        char magic[4] = {0};
        const int ok = f && fread(magic, 1, 4, f) == 4 && !memcmp(magic, "GGUF", 4);
        if (f) fclose(f);
        if (!ok) return dg_fail(err, errlen, "%s: not a GGUF file (a model is a GGUF file or a checkpoint directory)", path);
        *gguf = strdup(path);
        return *gguf ? 1 : dg_fail(err, errlen, "out of memory");
    }
    if (!S_ISDIR(sb.st_mode)) return dg_fail(err, errlen, "%s: not a file or directory", path);
    char cj[4096];
    snprintf(cj, sizeof(cj), "%s/config.json", path);
    if (stat(cj, &sb) == 0) return 0;
    DIR *d = opendir(path);
    if (!d) return 0;   /* the config loader reports the missing config.json */
    char *found = NULL;
    int n = 0;
    for (struct dirent *de; (de = readdir(d));)
        if (ends_with(de->d_name, ".gguf")) {
            n++;
            free(found);
            size_t len = strlen(path) + strlen(de->d_name) + 2;
            found = malloc(len);
            if (found) snprintf(found, len, "%s/%s", path, de->d_name);
        }
    closedir(d);
    if (n == 1 && found) { *gguf = found; return 1; }
    free(found);
    if (n > 1) return dg_fail(err, errlen, "%s: no config.json and %d .gguf files: name the file", path, n);
    return 0;
}

/* ===== GGUF names (llama.cpp PR #24423; ARCHITECTURE.md "GGUF tensor names") ===== */

static const char *const k_gguf_layer[][2] = {
    {"input_layernorm.weight", "attn_norm.weight"},
    {"self_attn.q_proj.weight", "attn_q.weight"},
    {"self_attn.k_proj.weight", "attn_k.weight"},
    {"self_attn.v_proj.weight", "attn_v.weight"},
    {"self_attn.o_proj.weight", "attn_output.weight"},
    {"self_attn.q_norm.weight", "attn_q_norm.weight"},
    {"self_attn.k_norm.weight", "attn_k_norm.weight"},
    {"post_attention_layernorm.weight", "post_attention_norm.weight"},
    {"pre_feedforward_layernorm.weight", "ffn_norm.weight"},
    {"mlp.gate_proj.weight", "ffn_gate.weight"},
    {"mlp.up_proj.weight", "ffn_up.weight"},
    {"mlp.down_proj.weight", "ffn_down.weight"},
    {"post_feedforward_layernorm_1.weight", "post_ffw_norm_1.weight"},
    {"pre_feedforward_layernorm_2.weight", "pre_ffw_norm_2.weight"},
    {"router.proj.weight", "ffn_gate_inp.weight"},
    {"router.scale", "ffn_gate_inp.scale"},
    {"router.per_expert_scale", "ffn_down_exps.scale"},
    {"experts.gate_up_proj", "ffn_gate_up_exps.weight"},
    {"experts.down_proj", "ffn_down_exps.weight"},
    {"post_feedforward_layernorm_2.weight", "post_ffw_norm_2.weight"},
    {"post_feedforward_layernorm.weight", "post_ffw_norm.weight"},
    {"layer_scalar", "layer_output_scale.weight"},
};

static const char *const k_gguf_global[][2] = {
    {"model.decoder.embed_tokens.weight", "token_embd.weight"},
    {"lm_head.weight", "output.weight"},
    {"model.decoder.norm.weight", "output_norm.weight"},
    {"model.decoder.self_conditioning.pre_norm.weight", "self_cond_pre_norm.weight"},
    {"model.decoder.self_conditioning.gate_proj.weight", "self_cond_gate.weight"},
    {"model.decoder.self_conditioning.up_proj.weight", "self_cond_up.weight"},
    {"model.decoder.self_conditioning.down_proj.weight", "self_cond_down.weight"},
};

/* The GGUF name of a Hugging Face tensor name (0), or -1 when it has none (declared in internal.h). */
int dg_gguf_name(const char *hf, char *out, size_t n) {
    for (size_t i = 0; i < sizeof(k_gguf_global) / sizeof(k_gguf_global[0]); i++)
        if (!strcmp(hf, k_gguf_global[i][0])) { snprintf(out, n, "%s", k_gguf_global[i][1]); return 0; }
    const char *dec = "model.decoder.layers.", *enc = "model.encoder.language_model.layers.";
    const int is_enc = !strncmp(hf, enc, strlen(enc));
    if (!is_enc && strncmp(hf, dec, strlen(dec))) return -1;
    char *end;
    const long li = strtol(hf + strlen(is_enc ? enc : dec), &end, 10);
    if (*end != '.') return -1;
    if (is_enc) {
        if (strcmp(end + 1, "layer_scalar")) return -1;
        snprintf(out, n, "blk.%ld.enc_layer_output_scale.weight", li);
        return 0;
    }
    for (size_t i = 0; i < sizeof(k_gguf_layer) / sizeof(k_gguf_layer[0]); i++)
        if (!strcmp(end + 1, k_gguf_layer[i][0])) { snprintf(out, n, "blk.%ld.%s", li, k_gguf_layer[i][1]); return 0; }
    return -1;
}

/* ===== binding ===== */

static int record(binder *b, const char *name, const char *dtype, int ndim, const int64_t *shape, int64_t nbytes,
                  int64_t n_params, const char *file) {
    dg_engine *e = b->e;
    if (e->n_bound == e->cap_bound) {
        const int cap = e->cap_bound ? 2 * e->cap_bound : 64;
        dg_tensor_info *nb = realloc(e->bound, sizeof(*nb) * (size_t)cap);
        if (!nb) return dg_fail(b->err, b->errlen, "out of memory");
        e->bound = nb;
        e->cap_bound = cap;
    }
    dg_tensor_info *t = &e->bound[e->n_bound++];
    memset(t, 0, sizeof(*t));
    t->name = name;
    t->dtype = dtype;
    t->ndim = ndim < 4 ? ndim : 4;
    for (int k = 0; k < t->ndim; k++) t->shape[k] = shape[k];
    t->nbytes = nbytes;
    t->file = file;
    e->info.n_params += n_params;
    e->info.weight_bytes += nbytes;
    return 0;
}

static int64_t numel(const int64_t *shape, int ndim) {
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    return n;
}

/* GGUF: `hf`'s tensor, with ne the reverse of shape; float types only when floats_only. */
static const gguf_tensor *bind_gguf(binder *b, const char *hf, int ndim, const int64_t *shape, const char *why, int floats_only) {
    dg_engine *e = b->e;
    char gn[128];
    if (dg_gguf_name(hf, gn, sizeof(gn))) {
        dg_fail(b->err, b->errlen, "%s: tensor '%s' has no GGUF name", e->dir, hf);
        return NULL;
    }
    const gguf_tensor *t = gguf_find_tensor(e->gg, gn);
    if (!t) {
        dg_fail(b->err, b->errlen, "%s: tensor '%s' (%s) is missing from the file", e->gg->path, gn, hf);
        return NULL;
    }
    int ok = t->n_dims == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = t->ne[i] == shape[ndim - 1 - i];
    if (!ok) {
        char got[128], want[128];
        int64_t rev[GGUF_MAX_DIMS];
        for (int i = 0; i < t->n_dims; i++) rev[i] = t->ne[t->n_dims - 1 - i];
        dg_fmt_shape(got, sizeof(got), rev, t->n_dims);
        dg_fmt_shape(want, sizeof(want), shape, ndim);
        dg_fail(b->err, b->errlen, "%s: tensor '%s' has shape %s (ne reversed), expected %s (%s)", e->gg->path, gn, got, want, why);
        return NULL;
    }
    if (t->dt < 0 || (floats_only && !dg_dtype_size((dg_dtype)t->dt))) {
        dg_fail(b->err, b->errlen, "%s: tensor '%s' has type %s, expected %s", e->gg->path, gn,
                gguf_ggml_type_name(t->ggml_type) ? gguf_ggml_type_name(t->ggml_type) : "(unknown)",
                floats_only ? "F32, F16 or BF16" : "a type dgemma computes on (F32, F16, BF16, Q4_0 ... Q8_0, Q2_K ... Q6_K, IQ4_NL)");
        return NULL;
    }
    const size_t rb = dg_row_bytes((dg_dtype)t->dt, shape[ndim - 1]);
    if (!rb || (uint64_t)rb * (uint64_t)(numel(shape, ndim) / shape[ndim - 1]) != t->nbytes) {
        dg_fail(b->err, b->errlen, "%s: tensor '%s': %llu bytes do not hold %s rows of %lld elements", e->gg->path, gn,
                (unsigned long long)t->nbytes, dg_dtype_name((dg_dtype)t->dt), (long long)shape[ndim - 1]);
        return NULL;
    }
    const size_t es = dg_dtype_size((dg_dtype)t->dt);
    if (es && (uintptr_t)t->data % es) {
        dg_fail(b->err, b->errlen, "%s: tensor '%s' data is not aligned to its %zu-byte elements", e->gg->path, gn, es);
        return NULL;
    }
    if (record(b, t->name, dg_dtype_name((dg_dtype)t->dt), ndim, shape, (int64_t)t->nbytes, numel(shape, ndim), e->gg->path)) return NULL;
    return t;
}

static int keep_owned(binder *b, void *p) {
    if (!p) return 0;
    void **no = realloc(b->e->owned, sizeof(void *) * (size_t)(b->e->n_owned + 1));
    if (!no) { free(p); return dg_fail(b->err, b->errlen, "out of memory"); }
    b->e->owned = no;
    no[b->e->n_owned++] = p;
    return 0;
}

/* MLX: a module's matrix ([experts *] rows x cols) through load/mlx.c */
static int bind_mlx(binder *b, dg_mat *m, const char *module, int64_t experts, int64_t rows, int64_t cols) {
    dg_engine *e = b->e;
    dg_mlx_view v;
    if (dg_mlx_bind(&e->st, e->mq, e->dir, module, experts, rows, cols, &v, b->err, b->errlen)) return -1;
    if (keep_owned(b, v.owned)) return -1;
    *m = v.m;
    int64_t shape[3] = {experts, rows, cols};
    const int nd = experts ? 3 : 2;
    int64_t nbytes = (int64_t)v.weight->nbytes + (v.scales ? (int64_t)v.scales->nbytes : 0) + (v.biases ? (int64_t)v.biases->nbytes : 0);
    return record(b, v.weight->name, dg_dtype_name(v.m.dt), nd, experts ? shape : shape + 1, nbytes, numel(experts ? shape : shape + 1, nd), file_of(e, v.weight));
}

int dg_st_float_dtype(st_dtype s, dg_dtype *out) {
    switch (s) {
    case ST_F32: *out = DG_F32; return 0;
    case ST_F16: *out = DG_F16; return 0;
    case ST_BF16: *out = DG_BF16; return 0;
    default: return -1;
    }
}

void dg_fmt_shape(char *buf, size_t n, const int64_t *shape, int ndim) {
    size_t at = 0;
    at += (size_t)snprintf(buf + at, n - at, "[");
    for (int i = 0; i < ndim && at < n; i++) at += (size_t)snprintf(buf + at, n - at, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (at < n) snprintf(buf + at, n - at, "]");
}

/* Find `name`, check float dtype and exact shape, record it. */
static const st_tensor *bind(binder *b, const char *name, int ndim, const int64_t *shape, const char *why, dg_dtype *dt) {
    dg_engine *e = b->e;
    const st_tensor *t = st_find(&e->st, name);
    if (!t) {
        dg_fail(b->err, b->errlen, "%s: tensor '%s' is missing from the checkpoint", e->dir, name);
        return NULL;
    }
    if (dg_st_float_dtype(t->dtype, dt) != 0) {
        dg_fail(b->err, b->errlen, "%s: tensor '%s' has dtype %s, expected F32, F16 or BF16", file_of(e, t), name, st_dtype_name(t->dtype));
        return NULL;
    }
    if ((uintptr_t)t->data % st_dtype_size(t->dtype)) {
        dg_fail(b->err, b->errlen, "%s: tensor '%s' data is not aligned to its %zu-byte elements", file_of(e, t), name, st_dtype_size(t->dtype));
        return NULL;
    }
    int ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = t->shape[i] == shape[i];
    if (!ok) {
        char got[128], want[128];
        dg_fmt_shape(got, sizeof(got), t->shape, t->ndim);
        dg_fmt_shape(want, sizeof(want), shape, ndim);
        dg_fail(b->err, b->errlen, "%s: tensor '%s' has shape %s, expected %s (%s)", file_of(e, t), name, got, want, why);
        return NULL;
    }
    if (record(b, t->name, st_dtype_name(t->dtype), t->ndim, t->shape, (int64_t)t->nbytes, (int64_t)(t->nbytes / st_dtype_size(t->dtype)),
               file_of(e, t)))
        return NULL;
    return t;
}

static int bind_mat(binder *b, dg_mat *m, const char *name, int64_t rows, int64_t cols, const char *why) {
    int64_t shape[2] = {rows, cols};
    if (b->e->src == DG_SRC_GGUF) {
        const gguf_tensor *t = bind_gguf(b, name, 2, shape, why, 0);
        if (!t) return -1;
        *m = dg_mat_init(t->data, (dg_dtype)t->dt, rows, cols);
        return 0;
    }
    if (b->e->src == DG_SRC_MLX) {
        char module[256];
        snprintf(module, sizeof(module), "%.*s", (int)(strlen(name) - (ends_with(name, ".weight") ? 7 : 0)), name);
        return bind_mlx(b, m, module, 0, rows, cols);
    }
    dg_dtype dt;
    const st_tensor *t = bind(b, name, 2, shape, why, &dt);
    if (!t) return -1;
    *m = dg_mat_init(t->data, dt, rows, cols);
    return 0;
}

/* a stack of E [rows, cols] matrices ([E, rows, cols]) as one [E*rows, cols] view */
static int bind_stack(binder *b, dg_mat *m, const char *name, int64_t E, int64_t rows, int64_t cols, const char *why) {
    int64_t shape[3] = {E, rows, cols};
    if (b->e->src == DG_SRC_GGUF) {
        const gguf_tensor *t = bind_gguf(b, name, 3, shape, why, 0);
        if (!t) return -1;
        *m = dg_mat_init(t->data, (dg_dtype)t->dt, E * rows, cols);
        return 0;
    }
    if (b->e->src == DG_SRC_MLX) return bind_mlx(b, m, name, E, rows, cols);
    dg_dtype dt;
    const st_tensor *t = bind(b, name, 3, shape, why, &dt);
    if (!t) return -1;
    *m = dg_mat_init(t->data, dt, E * rows, cols);
    return 0;
}

static int bind_vec(binder *b, dg_vec *v, const char *name, int64_t n, const char *why) {
    int64_t shape[1] = {n};
    if (b->e->src == DG_SRC_GGUF) {
        const gguf_tensor *t = bind_gguf(b, name, 1, shape, why, 1);
        if (!t) return -1;
        v->data = t->data;
        v->dt = (dg_dtype)t->dt;
        v->n = n;
        return 0;
    }
    if (b->e->src == DG_SRC_MLX) {
        void *owned = NULL;
        if (dg_mlx_bind_vec(&b->e->st, b->e->dir, name, n, v, &owned, b->err, b->errlen) || keep_owned(b, owned)) return -1;
        const st_tensor *t = st_find(&b->e->st, name);
        return record(b, t->name, st_dtype_name(t->dtype), 1, shape, (int64_t)t->nbytes, n, file_of(b->e, t));
    }
    const st_tensor *t = bind(b, name, 1, shape, why, &v->dt);
    if (!t) return -1;
    v->data = t->data;
    v->n = n;
    return 0;
}

static int bind_scalar(binder *b, float *out, const char *name) {
    dg_vec v;
    if (bind_vec(b, &v, name, 1, "layer_scalar is [1]")) return -1;
    *out = dg_wget(v.data, v.dt, 0);
    if (!isfinite(*out)) return dg_fail(b->err, b->errlen, "%s: tensor '%s' is not finite", b->e->dir, name);
    return 0;
}

/* Rotary inverse frequencies of one layer, as transformers computes them (float32). */
static float *make_inv_freq(const dg_rope_params *rp, int d) {
    int half = d / 2;
    float *f = calloc((size_t)half, sizeof(float));
    if (!f) return NULL;
    /* 1 / theta^(2i/d): the exponent in float32, the power correctly rounded to float32 (torch uses
     * Sleef's powf, 1 ulp away at one frequency per layer type for the 26B shapes), then a float32
     * reciprocal, as the reference's `1.0 / (base ** exps)` */
    const double theta = (float)rp->theta;
    int angles = half;
    if (rp->type == DG_ROPE_PROPORTIONAL) {
        angles = (int)floor(rp->partial_rotary_factor * d / 2.0);
        if (angles > half) angles = half;
    }
    for (int i = 0; i < angles; i++) f[i] = 1.0f / (float)pow(theta, (double)((float)(2 * i) / (float)d));
    if (rp->type == DG_ROPE_PROPORTIONAL)
        for (int i = 0; i < half; i++) f[i] = f[i] / (float)rp->factor;
    return f;
}

static int has_tensor(const dg_engine *e, const char *hf) {
    if (e->src == DG_SRC_GGUF) {
        char gn[128];
        return !dg_gguf_name(hf, gn, sizeof(gn)) && gguf_find_tensor(e->gg, gn);
    }
    return st_find(&e->st, hf) != NULL;
}

static int bind_layer(binder *b, int i) {
    dg_engine *e = b->e;
    dg_config *c = &e->cfg;
    dg_layer *L = &e->layers[i];
    const int64_t H = c->hidden_size, nq = c->n_heads, I = c->intermediate_size, E = c->n_experts, Ie = c->expert_size;
    L->is_full = c->layer_full[i];
    L->d = c->layer_head_dim[i];
    L->n_kv = c->layer_n_kv[i];
    const int64_t d = L->d, nkv = L->n_kv;
    char n[256];
    const char *p = "model.decoder.layers";
#define NAME(suffix) (snprintf(n, sizeof(n), "%s.%d.%s", p, i, suffix), n)
    const char *why_q = L->is_full ? "num_attention_heads*global_head_dim x hidden_size" : "num_attention_heads*head_dim x hidden_size";
    const char *why_k = L->is_full ? "num_global_key_value_heads*global_head_dim x hidden_size" : "num_key_value_heads*head_dim x hidden_size";
    if (bind_mat(b, &L->q, NAME("self_attn.q_proj.weight"), nq * d, H, why_q)) return -1;
    if (bind_mat(b, &L->k, NAME("self_attn.k_proj.weight"), nkv * d, H, why_k)) return -1;
    if (!L->is_full) {
        if (bind_mat(b, &L->v, NAME("self_attn.v_proj.weight"), nkv * d, H, why_k)) return -1;
    } else if (has_tensor(e, NAME("self_attn.v_proj.weight"))) {
        return dg_fail(b->err, b->errlen, "%s: tensor '%s' exists but layer %d is a full_attention layer (K=V, no v_proj): layer_types disagrees with the weights", e->dir, n, i);
    }
    if (bind_mat(b, &L->o, NAME("self_attn.o_proj.weight"), H, nq * d, "hidden_size x num_attention_heads*head_dim")) return -1;
    if (bind_vec(b, &L->q_norm, NAME("self_attn.q_norm.weight"), d, "head_dim of the layer")) return -1;
    if (bind_vec(b, &L->k_norm, NAME("self_attn.k_norm.weight"), d, "head_dim of the layer")) return -1;
    if (bind_vec(b, &L->in_norm, NAME("input_layernorm.weight"), H, "hidden_size")) return -1;
    if (bind_vec(b, &L->post_attn_norm, NAME("post_attention_layernorm.weight"), H, "hidden_size")) return -1;
    if (bind_vec(b, &L->pre_ff_norm, NAME("pre_feedforward_layernorm.weight"), H, "hidden_size")) return -1;
    if (bind_vec(b, &L->post_ff1_norm, NAME("post_feedforward_layernorm_1.weight"), H, "hidden_size")) return -1;
    if (bind_vec(b, &L->pre_ff2_norm, NAME("pre_feedforward_layernorm_2.weight"), H, "hidden_size")) return -1;
    if (bind_vec(b, &L->post_ff2_norm, NAME("post_feedforward_layernorm_2.weight"), H, "hidden_size")) return -1;
    if (bind_vec(b, &L->post_ff_norm, NAME("post_feedforward_layernorm.weight"), H, "hidden_size")) return -1;
    if (bind_mat(b, &L->gate, NAME("mlp.gate_proj.weight"), I, H, "intermediate_size x hidden_size")) return -1;
    if (bind_mat(b, &L->up, NAME("mlp.up_proj.weight"), I, H, "intermediate_size x hidden_size")) return -1;
    if (bind_mat(b, &L->down, NAME("mlp.down_proj.weight"), H, I, "hidden_size x intermediate_size")) return -1;
    if (bind_mat(b, &L->router, NAME("router.proj.weight"), E, H, "num_experts x hidden_size")) return -1;
    if (bind_vec(b, &L->router_scale, NAME("router.scale"), H, "hidden_size")) return -1;
    if (bind_vec(b, &L->per_expert_scale, NAME("router.per_expert_scale"), E, "num_experts")) return -1;
    if (bind_stack(b, &L->experts_gate_up, NAME("experts.gate_up_proj"), E, 2 * Ie, H, "num_experts x 2*moe_intermediate_size x hidden_size")) return -1;
    if (bind_stack(b, &L->experts_down, NAME("experts.down_proj"), E, H, Ie, "num_experts x hidden_size x moe_intermediate_size")) return -1;
    if (bind_scalar(b, &L->dec_scalar, NAME("layer_scalar"))) return -1;
    p = "model.encoder.language_model.layers";
    if (bind_scalar(b, &L->enc_scalar, NAME("layer_scalar"))) return -1;
#undef NAME
    L->inv_freq = make_inv_freq(L->is_full ? &c->rope_full : &c->rope_sliding, L->d);
    if (!L->inv_freq) return dg_fail(b->err, b->errlen, "out of memory");
    return 0;
}


dg_engine_params dg_engine_default_params(void) {
    dg_engine_params p = {DG_ACT_AUTO};
    return p;
}

int dg_engine_load(const char *dir, const dg_engine_params *params, dg_engine **out, char *err, size_t errlen) {
    *out = NULL;
    dg_engine_params p = params ? *params : dg_engine_default_params();
    dg_engine *e = calloc(1, sizeof(*e));
    if (!e) return dg_fail(err, errlen, "out of memory");
    e->dir = strdup(dir);
    if (!e->dir) { free(e); return dg_fail(err, errlen, "out of memory"); }
    char *ggpath = NULL;
    const int kind = dg_resolve_model(dir, &ggpath, err, errlen);
    if (kind < 0) goto fail;
    if (kind == 1) {
        e->src = DG_SRC_GGUF;
        e->gg = calloc(1, sizeof(gguf_file));
        if (!e->gg) { free(ggpath); dg_fail(err, errlen, "out of memory"); goto fail; }
        const int rc = gguf_open(e->gg, ggpath, err, errlen);
        free(ggpath);
        if (rc) { free(e->gg); e->gg = NULL; goto fail; }
        if (dg_config_from_gguf(&e->cfg, e->gg, err, errlen)) goto fail;
    } else {
        if (dg_config_load(&e->cfg, dir, err, errlen)) goto fail;
        if (st_open_dir(&e->st, dir, err, errlen)) goto fail;
        /* an mlx-vlm conversion: a quantization block, or packed modules (scales) */
        e->mq = calloc(1, sizeof(dg_mlx_quant));
        if (!e->mq) { dg_fail(err, errlen, "out of memory"); goto fail; }
        if (dg_mlx_quant_load(e->mq, dir, err, errlen)) goto fail;
        int packed = e->mq->present;
        for (int i = 0; !packed && i < e->st.n_tensors; i++) packed = ends_with(e->st.tensors[i].name, ".scales");
        e->src = packed ? DG_SRC_MLX : DG_SRC_HF;
    }
    dg_config *c = &e->cfg;
    binder b = {e, err, errlen};
    e->layers = calloc((size_t)c->n_layers, sizeof(dg_layer));
    if (!e->layers) { dg_fail(err, errlen, "out of memory"); goto fail; }

    const int64_t V = c->vocab_size, H = c->hidden_size, I = c->intermediate_size;
    if (bind_mat(&b, &e->embed, "model.decoder.embed_tokens.weight", V, H, "vocab_size x hidden_size")) goto fail;
    e->lm_head = e->embed;
    if (has_tensor(e, "lm_head.weight") && bind_mat(&b, &e->lm_head, "lm_head.weight", V, H, "vocab_size x hidden_size")) goto fail;
    if (bind_vec(&b, &e->final_norm, "model.decoder.norm.weight", H, "hidden_size")) goto fail;
    if (bind_vec(&b, &e->sc_pre_norm, "model.decoder.self_conditioning.pre_norm.weight", H, "hidden_size")) goto fail;
    if (bind_mat(&b, &e->sc_gate, "model.decoder.self_conditioning.gate_proj.weight", I, H, "intermediate_size x hidden_size")) goto fail;
    if (bind_mat(&b, &e->sc_up, "model.decoder.self_conditioning.up_proj.weight", I, H, "intermediate_size x hidden_size")) goto fail;
    if (bind_mat(&b, &e->sc_down, "model.decoder.self_conditioning.down_proj.weight", H, I, "hidden_size x intermediate_size")) goto fail;
    for (int i = 0; i < c->n_layers; i++)
        if (bind_layer(&b, i)) goto fail;
    /* the encoder shares the decoder's weights; a checkpoint with its own copies would be computed
     * differently by the reference, so refuse it rather than ignore them */
    for (int i = 0; i < e->st.n_tensors; i++) {
        const char *nm = e->st.tensors[i].name, *pre = "model.encoder.language_model.";
        if (!strncmp(nm, pre, strlen(pre)) && !strstr(nm, ".layer_scalar")) {
            dg_fail(err, errlen, "%s: tensor '%s': separate (untied) encoder weights are not supported", file_of(e, &e->st.tensors[i]), nm);
            goto fail;
        }
    }

    switch (p.act) {
    case DG_ACT_F32: e->act = DG_F32; break;
    case DG_ACT_BF16: e->act = DG_BF16; break;
    case DG_ACT_F16: e->act = DG_F16; break;
    default:   /* the reference computes in config.json's dtype (from_pretrained dtype="auto"), else the weights' */
        e->act = c->dtype == 'b' ? DG_BF16 : c->dtype == 'h' ? DG_F16 : c->dtype == 'f' ? DG_F32
               : dg_dtype_size(e->embed.dt) ? e->embed.dt : DG_BF16;   /* quantized: bf16 like the originals */
        if (c->dtype && e->act != DG_F32 && e->act != e->embed.dt && dg_dtype_size(e->embed.dt)) {
            /* the reference would round every weight to that dtype (exact only when widening to float32);
             * dgemma reads weights as stored */
            dg_fail(err, errlen, "%s%s: dtype \"%s\" but the weights are stored as %s; the reference would round "
                    "the weights to it. Convert the checkpoint, or choose the activation precision explicitly",
                    dir, e->src == DG_SRC_GGUF ? " (general.file_type)" : "/config.json", c->dtype == 'b' ? "bfloat16" : c->dtype == 'h' ? "float16" : "float32",
                    dg_dtype_name(e->embed.dt));
            goto fail;
        }
        break;
    }
    /* the reference casts to its one compute dtype (the embedding's, as loaded), which is what act is */
    e->wdt = e->act;
    /* the reference casts sqrt(H) to the weight dtype before multiplying (53.0 for H=2816 in bf16) */
    e->embed_scale = dg_round1((float)sqrt((double)H), e->act);

    dg_model_info *in = &e->info;
    in->vocab_size = c->vocab_size;
    in->hidden_size = c->hidden_size;
    in->n_layers = c->n_layers;
    in->n_heads = c->n_heads;
    in->intermediate_size = c->intermediate_size;
    in->n_experts = c->n_experts;
    in->n_experts_used = c->top_k;
    in->expert_size = c->expert_size;
    in->sliding_window = c->sliding_window;
    in->canvas_length = c->canvas_length;
    for (int i = 0; i < c->n_layers; i++) in->n_full_layers += c->layer_full[i];
    in->final_logit_softcap = (float)c->final_logit_softcap;
    in->rms_norm_eps = (float)c->rms_norm_eps;
    in->weight_dtype = dg_dtype_name(e->embed.dt);
    in->act_dtype = dg_dtype_name(e->act);
    *out = e;
    return 0;
fail:
    dg_engine_free(e);
    return -1;
}

void dg_engine_free(dg_engine *e) {
    if (!e) return;
    if (e->layers)
        for (int i = 0; i < e->cfg.n_layers; i++) free(e->layers[i].inv_freq);
    free(e->layers);
    free(e->bound);
    st_close(&e->st);
    if (e->gg) { gguf_close(e->gg); free(e->gg); }
    if (e->mq) { dg_mlx_quant_free(e->mq); free(e->mq); }
    for (int i = 0; i < e->n_owned; i++) free(e->owned[i]);
    free(e->owned);
    dg_config_free(&e->cfg);
    free(e->dir);
    free(e);
}

const dg_model_info *dg_engine_info(const dg_engine *e) { return &e->info; }

int dg_engine_tensor(const dg_engine *e, int i, dg_tensor_info *out) {
    if (i < 0 || i >= e->n_bound) return -1;
    *out = e->bound[i];
    return 0;
}
