#define _POSIX_C_SOURCE 200809L
/*
 * weights.c - dg_engine_load: config, safetensors store, and binding of every text tensor by name,
 * once, with dtype and shape checked against the config. After this no code looks a tensor up by
 * name. Vision tensors are skipped. The encoder shares every weight with the decoder (the checkpoint
 * stores the decoder copy only) except its own layer_scalar buffers.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

typedef struct {
    dg_engine *e;
    char *err;
    size_t errlen;
} binder;

static const char *file_of(const dg_engine *e, const st_tensor *t) { return e->st.files[t->file].path; }

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
    e->bound[e->n_bound++] = t;
    e->info.n_params += (int64_t)(t->nbytes / st_dtype_size(t->dtype));
    e->info.weight_bytes += (int64_t)t->nbytes;
    return t;
}

static int bind_mat(binder *b, dg_mat *m, const char *name, int64_t rows, int64_t cols, const char *why) {
    int64_t shape[2] = {rows, cols};
    dg_dtype dt;
    const st_tensor *t = bind(b, name, 2, shape, why, &dt);
    if (!t) return -1;
    *m = dg_mat_init(t->data, dt, rows, cols);
    return 0;
}

static int bind_vec(binder *b, dg_vec *v, const char *name, int64_t n, const char *why) {
    int64_t shape[1] = {n};
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
    } else if (st_find(&e->st, NAME("self_attn.v_proj.weight"))) {
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
    int64_t gu_shape[3] = {E, 2 * Ie, H}, dn_shape[3] = {E, H, Ie};
    dg_dtype dt1, dt2;
    const st_tensor *gu = bind(b, NAME("experts.gate_up_proj"), 3, gu_shape, "num_experts x 2*moe_intermediate_size x hidden_size", &dt1);
    if (!gu) return -1;
    const st_tensor *dn = bind(b, NAME("experts.down_proj"), 3, dn_shape, "num_experts x hidden_size x moe_intermediate_size", &dt2);
    if (!dn) return -1;
    if (dt1 != dt2)
        return dg_fail(b->err, b->errlen, "%s: layer %d: experts.gate_up_proj and experts.down_proj have different dtypes", e->dir, i);
    L->experts_gate_up = dg_mat_init(gu->data, dt1, E * 2 * Ie, H);
    L->experts_down = dg_mat_init(dn->data, dt2, E * H, Ie);
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
    if (dg_config_load(&e->cfg, dir, err, errlen)) goto fail;
    if (st_open_dir(&e->st, dir, err, errlen)) goto fail;
    dg_config *c = &e->cfg;
    binder b = {e, err, errlen};
    e->bound = calloc((size_t)e->st.n_tensors + 1, sizeof(*e->bound));
    e->layers = calloc((size_t)c->n_layers, sizeof(dg_layer));
    if (!e->bound || !e->layers) { dg_fail(err, errlen, "out of memory"); goto fail; }

    const int64_t V = c->vocab_size, H = c->hidden_size, I = c->intermediate_size;
    if (bind_mat(&b, &e->embed, "model.decoder.embed_tokens.weight", V, H, "vocab_size x hidden_size")) goto fail;
    e->lm_head = e->embed;
    if (st_find(&e->st, "lm_head.weight") && bind_mat(&b, &e->lm_head, "lm_head.weight", V, H, "vocab_size x hidden_size")) goto fail;
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
            dg_fail(err, errlen, "%s/config.json: dtype \"%s\" but the weights are stored as %s; the reference would round "
                    "the weights to it. Convert the checkpoint, or choose the activation precision explicitly",
                    dir, c->dtype == 'b' ? "bfloat16" : c->dtype == 'h' ? "float16" : "float32", dg_dtype_name(e->embed.dt));
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
    dg_config_free(&e->cfg);
    free(e->dir);
    free(e);
}

const dg_model_info *dg_engine_info(const dg_engine *e) { return &e->info; }

int dg_engine_tensor(const dg_engine *e, int i, dg_tensor_info *out) {
    if (i < 0 || i >= e->n_bound) return -1;
    const st_tensor *t = e->bound[i];
    out->name = t->name;
    out->dtype = st_dtype_name(t->dtype);
    out->ndim = t->ndim < 4 ? t->ndim : 4;
    for (int k = 0; k < 4; k++) out->shape[k] = k < t->ndim ? t->shape[k] : 0;
    out->nbytes = (int64_t)t->nbytes;
    out->file = e->st.files[t->file].path;
    return 0;
}
