/*
 * config.c - config.json and generation_config.json of a DiffusionGemma checkpoint.
 *
 * Every field that changes the math is read, with the defaults of the reference config classes
 * (DiffusionGemmaTextConfig / DiffusionGemmaConfig / DiffusionGemmaGenerationConfig) when absent.
 * Per-layer head dim and KV heads are resolved the way transformers resolves them: from
 * text_config.per_layer_config when present (transformers >= 5.2x writes it), else full layers take
 * global_head_dim (default 512) and num_global_key_value_heads (the released checkpoint's spelling).
 */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

int dg_fail(char *err, size_t errlen, const char *fmt, ...) {
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

typedef struct {
    const char *file;   /* for messages */
    const char *scope;  /* "text_config." or "" */
    char *err;
    size_t errlen;
} jctx;

static int get_int(jctx *c, json_t *o, const char *key, int def, int lo, int hi, int *out) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) { *out = def; return 0; }
    if (!json_is_integer(v))
        return dg_fail(c->err, c->errlen, "%s: field %s%s must be an integer", c->file, c->scope, key);
    json_int_t x = json_integer_value(v);
    if (x < lo || x > hi)
        return dg_fail(c->err, c->errlen, "%s: field %s%s = %lld is out of range [%d, %d]", c->file, c->scope, key, (long long)x, lo, hi);
    *out = (int)x;
    return 0;
}

static int get_num(jctx *c, json_t *o, const char *key, double def, double lo, double hi, double *out) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) { *out = def; return 0; }
    if (!json_is_number(v))
        return dg_fail(c->err, c->errlen, "%s: field %s%s must be a number", c->file, c->scope, key);
    double x = json_number_value(v);
    if (!(x >= lo && x <= hi))
        return dg_fail(c->err, c->errlen, "%s: field %s%s = %g is out of range [%g, %g]", c->file, c->scope, key, x, lo, hi);
    *out = x;
    return 0;
}

static int get_rope(jctx *c, json_t *rp, const char *type, dg_rope_params *out) {
    json_t *o = rp ? json_object_get(rp, type) : NULL;
    int full = strcmp(type, "full_attention") == 0;
    /* class defaults */
    out->type = full ? DG_ROPE_PROPORTIONAL : DG_ROPE_DEFAULT;
    out->theta = full ? 1e6 : 1e4;
    out->partial_rotary_factor = full ? 0.25 : 1.0;
    out->factor = 1.0;
    if (!rp) return 0;
    if (!json_is_object(o))
        return dg_fail(c->err, c->errlen, "%s: field text_config.rope_parameters.%s is missing or not an object", c->file, type);
    json_t *t = json_object_get(o, "rope_type");
    if (!t) t = json_object_get(o, "type");
    const char *ts = json_is_string(t) ? json_string_value(t) : "default";
    if (strcmp(ts, "default") == 0) out->type = DG_ROPE_DEFAULT;
    else if (strcmp(ts, "proportional") == 0) out->type = DG_ROPE_PROPORTIONAL;
    else
        return dg_fail(c->err, c->errlen, "%s: field text_config.rope_parameters.%s.rope_type = \"%s\" is not supported (default, proportional)", c->file, type, ts);
    jctx c2 = *c;
    c2.scope = full ? "text_config.rope_parameters.full_attention." : "text_config.rope_parameters.sliding_attention.";
    if (get_num(&c2, o, "rope_theta", out->theta, 1e-9, 1e30, &out->theta)) return -1;
    if (get_num(&c2, o, "partial_rotary_factor", 1.0, 0.0, 1.0, &out->partial_rotary_factor)) return -1;
    if (get_num(&c2, o, "factor", 1.0, 1e-9, 1e9, &out->factor)) return -1;
    if (out->type == DG_ROPE_DEFAULT && (out->partial_rotary_factor != 1.0 || out->factor != 1.0))
        return dg_fail(c->err, c->errlen, "%s: field %spartial_rotary_factor/factor is not supported with rope_type \"default\"", c->file, c2.scope);
    return 0;
}

static int parse_eos(jctx *c, json_t *v, dg_config *cfg) {
    if (!v || json_is_null(v)) return 0;
    cfg->n_eos = 0;
    if (json_is_integer(v)) {
        cfg->eos_ids[cfg->n_eos++] = (int)json_integer_value(v);
    } else if (json_is_array(v)) {
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x) {
            if (!json_is_integer(x) || cfg->n_eos >= DG_MAX_EOS)
                return dg_fail(c->err, c->errlen, "%s: field eos_token_id must be an integer or a list of at most %d integers", c->file, DG_MAX_EOS);
            cfg->eos_ids[cfg->n_eos++] = (int)json_integer_value(x);
        }
    } else {
        return dg_fail(c->err, c->errlen, "%s: field eos_token_id must be an integer or a list of integers", c->file);
    }
    for (int i = 0; i < cfg->n_eos; i++)
        if (cfg->eos_ids[i] < 0 || cfg->eos_ids[i] >= cfg->vocab_size)
            return dg_fail(c->err, c->errlen, "%s: field eos_token_id contains %d, outside the vocabulary [0, %d)", c->file, cfg->eos_ids[i], cfg->vocab_size);
    return 0;
}

/* the reference's defaults (DiffusionGemmaGenerationConfig._get_default_generation_params) */
static void gen_defaults(dg_config *cfg) {
    cfg->gen_max_new_tokens = 256;
    cfg->gen_max_denoising_steps = 48;
    cfg->gen_entropy_bound = 0.1;
    cfg->gen_t_min = 0.4;
    cfg->gen_t_max = 0.8;
    cfg->gen_stability_threshold = 1;
    cfg->gen_confidence_threshold = 0.005;
}

static int load_generation(dg_config *cfg, const char *dir, char *err, size_t errlen) {
    gen_defaults(cfg);
    char path[4096];
    snprintf(path, sizeof(path), "%s/generation_config.json", dir);
    FILE *f = fopen(path, "rb");
    if (!f) return 0;   /* optional */
    fclose(f);
    json_error_t je;
    json_t *g = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!g) return dg_fail(err, errlen, "%s: JSON error at line %d column %d: %s", path, je.line, je.column, je.text);
    jctx c = {path, "", err, errlen};
    int rc = -1, stab;
    if (!json_is_object(g)) { dg_fail(err, errlen, "%s: not a JSON object", path); goto out; }
    if (get_int(&c, g, "max_new_tokens", cfg->gen_max_new_tokens, 1, 1 << 30, &cfg->gen_max_new_tokens)) goto out;
    if (get_int(&c, g, "max_denoising_steps", cfg->gen_max_denoising_steps, 1, 1 << 20, &cfg->gen_max_denoising_steps)) goto out;
    if (get_num(&c, g, "t_min", cfg->gen_t_min, 0, 1e6, &cfg->gen_t_min)) goto out;
    if (get_num(&c, g, "t_max", cfg->gen_t_max, 0, 1e6, &cfg->gen_t_max)) goto out;
    if (!(cfg->gen_t_max > cfg->gen_t_min)) {
        dg_fail(err, errlen, "%s: t_max (%g) must be greater than t_min (%g)", path, cfg->gen_t_max, cfg->gen_t_min);
        goto out;
    }
    if (get_int(&c, g, "stability_threshold", (int)cfg->gen_stability_threshold, 0, 1 << 30, &stab)) goto out;
    cfg->gen_stability_threshold = stab;
    if (get_num(&c, g, "confidence_threshold", cfg->gen_confidence_threshold, 1e-300, 1e9, &cfg->gen_confidence_threshold)) goto out;
    json_t *sc = json_object_get(g, "sampler_config");
    if (sc && !json_is_null(sc)) {
        jctx c2 = {path, "sampler_config.", err, errlen};
        if (!json_is_object(sc)) { dg_fail(err, errlen, "%s: field sampler_config must be an object", path); goto out; }
        if (get_num(&c2, sc, "entropy_bound", cfg->gen_entropy_bound, 1e-300, 1e9, &cfg->gen_entropy_bound)) goto out;
    }
    if (parse_eos(&c, json_object_get(g, "eos_token_id"), cfg)) goto out;
    rc = 0;
out:
    json_decref(g);
    return rc;
}

int dg_config_load(dg_config *cfg, const char *dir, char *err, size_t errlen) {
    memset(cfg, 0, sizeof(*cfg));
    char path[4096];
    snprintf(path, sizeof(path), "%s/config.json", dir);
    json_error_t je;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        if (je.line <= 0) return dg_fail(err, errlen, "%s: cannot read: %s", path, je.text);
        return dg_fail(err, errlen, "%s: JSON error at line %d column %d: %s", path, je.line, je.column, je.text);
    }
    int rc = -1;
    jctx c = {path, "", err, errlen};
    if (!json_is_object(root)) { dg_fail(err, errlen, "%s: not a JSON object", path); goto out; }
    json_t *mt = json_object_get(root, "model_type");
    const char *mts = json_is_string(mt) ? json_string_value(mt) : "";
    json_t *tc;
    if (strcmp(mts, "diffusion_gemma") == 0) {
        tc = json_object_get(root, "text_config");
        if (!json_is_object(tc)) { dg_fail(err, errlen, "%s: field text_config is missing or not an object", path); goto out; }
        c.scope = "text_config.";
    } else if (strcmp(mts, "diffusion_gemma_text") == 0) {
        tc = root;
    } else {
        dg_fail(err, errlen, "%s: field model_type is \"%s\", expected \"diffusion_gemma\"", path, mts);
        goto out;
    }
    const int BIG = 1 << 30;
    if (get_int(&c, tc, "vocab_size", 262144, 1, BIG, &cfg->vocab_size)) goto out;
    if (get_int(&c, tc, "hidden_size", 2304, 1, 1 << 20, &cfg->hidden_size)) goto out;
    if (get_int(&c, tc, "intermediate_size", 9216, 1, 1 << 24, &cfg->intermediate_size)) goto out;
    if (get_int(&c, tc, "num_hidden_layers", 30, 1, 4096, &cfg->n_layers)) goto out;
    if (get_int(&c, tc, "num_attention_heads", 8, 1, 4096, &cfg->n_heads)) goto out;
    if (get_int(&c, tc, "num_key_value_heads", 4, 1, 4096, &cfg->n_kv_heads)) goto out;
    if (get_int(&c, tc, "head_dim", 256, 2, 1 << 16, &cfg->head_dim)) goto out;
    if (get_int(&c, tc, "max_position_embeddings", 131072, 1, BIG, &cfg->max_position)) goto out;
    /* >= 2: with a window of 1 the reference's cache slice [-W+1:] keeps everything */
    if (get_int(&c, tc, "sliding_window", 512, 2, BIG, &cfg->sliding_window)) goto out;
    if (get_num(&c, tc, "rms_norm_eps", 1e-6, 1e-30, 1, &cfg->rms_norm_eps)) goto out;
    json_t *sc = json_object_get(tc, "final_logit_softcapping");
    if (sc && !json_is_number(sc)) {   /* the reference divides by it: null or a string cannot work */
        dg_fail(err, errlen, "%s: field %sfinal_logit_softcapping must be a number > 0", path, c.scope);
        goto out;
    }
    if (get_num(&c, tc, "final_logit_softcapping", 30.0, 1e-30, 1e30, &cfg->final_logit_softcap)) goto out;
    if (json_is_false(json_object_get(root, "tie_word_embeddings")) || json_is_false(json_object_get(tc, "tie_word_embeddings"))) {
        dg_fail(err, errlen, "%s: field tie_word_embeddings = false (separate encoder weights) is not supported", path);
        goto out;
    }
    json_t *dt = json_object_get(root, "dtype");   /* only the top-level field counts (from_pretrained) */
    if (!dt) dt = json_object_get(root, "torch_dtype");
    cfg->dtype = 0;
    if (json_is_string(dt)) {
        const char *ds = json_string_value(dt);
        cfg->dtype = !strcmp(ds, "bfloat16") ? 'b' : !strcmp(ds, "float16") ? 'h' : !strcmp(ds, "float32") ? 'f' : 0;
    }
    if (get_int(&c, tc, "num_experts", -1, 1, 1 << 20, &cfg->n_experts) || cfg->n_experts < 0) {
        if (cfg->n_experts < 0) dg_fail(err, errlen, "%s: field %snum_experts is required", path, c.scope);
        goto out;
    }
    if (get_int(&c, tc, "top_k_experts", -1, 1, cfg->n_experts, &cfg->top_k) || cfg->top_k < 0) {
        if (cfg->top_k < 0) dg_fail(err, errlen, "%s: field %stop_k_experts is required", path, c.scope);
        goto out;
    }
    if (get_int(&c, tc, "moe_intermediate_size", -1, 1, 1 << 24, &cfg->expert_size) || cfg->expert_size < 0) {
        if (cfg->expert_size < 0) dg_fail(err, errlen, "%s: field %smoe_intermediate_size is required", path, c.scope);
        goto out;
    }
    json_t *act = json_object_get(tc, "hidden_activation");
    if (act && !(json_is_string(act) && strcmp(json_string_value(act), "gelu_pytorch_tanh") == 0)) {
        dg_fail(err, errlen, "%s: field %shidden_activation must be \"gelu_pytorch_tanh\"", path, c.scope);
        goto out;
    }
    json_t *bidi = json_object_get(tc, "use_bidirectional_attention");
    if (json_is_string(bidi) && strcmp(json_string_value(bidi), "all") == 0) {
        dg_fail(err, errlen, "%s: field %suse_bidirectional_attention = \"all\" (non-causal encoder) is not supported", path, c.scope);
        goto out;
    }
    if (json_is_true(json_object_get(tc, "attention_bias"))) {
        dg_fail(err, errlen, "%s: field %sattention_bias = true is not supported (DiffusionGemma has no biases)", path, c.scope);
        goto out;
    }
    if (cfg->n_heads % cfg->n_kv_heads) {
        dg_fail(err, errlen, "%s: field %snum_attention_heads (%d) is not a multiple of num_key_value_heads (%d)", path, c.scope, cfg->n_heads, cfg->n_kv_heads);
        goto out;
    }
    json_t *rp = json_object_get(tc, "rope_parameters");
    if (rp && !json_is_null(rp) && !json_is_object(rp)) { dg_fail(err, errlen, "%s: field %srope_parameters must be an object", path, c.scope); goto out; }
    if (json_is_null(rp)) rp = NULL;
    if (get_rope(&c, rp, "sliding_attention", &cfg->rope_sliding) || get_rope(&c, rp, "full_attention", &cfg->rope_full)) goto out;

    int L = cfg->n_layers;
    cfg->layer_full = calloc((size_t)L, sizeof(int));
    cfg->layer_head_dim = calloc((size_t)L, sizeof(int));
    cfg->layer_n_kv = calloc((size_t)L, sizeof(int));
    if (!cfg->layer_full || !cfg->layer_head_dim || !cfg->layer_n_kv) { dg_fail(err, errlen, "out of memory"); goto out; }
    json_t *lt = json_object_get(tc, "layer_types");
    if (lt && !json_is_null(lt)) {
        if (!json_is_array(lt) || (int)json_array_size(lt) != L) {
            dg_fail(err, errlen, "%s: field %slayer_types must be a list of num_hidden_layers (%d) strings", path, c.scope, L);
            goto out;
        }
        for (int i = 0; i < L; i++) {
            json_t *s = json_array_get(lt, (size_t)i);
            const char *ss = json_is_string(s) ? json_string_value(s) : "";
            if (strcmp(ss, "full_attention") == 0) cfg->layer_full[i] = 1;
            else if (strcmp(ss, "sliding_attention") == 0) cfg->layer_full[i] = 0;
            else { dg_fail(err, errlen, "%s: field %slayer_types[%d] = \"%s\" is not sliding_attention or full_attention", path, c.scope, i, ss); goto out; }
        }
    } else {
        for (int i = 0; i < L; i++) cfg->layer_full[i] = (i + 1) % 6 == 0;   /* 5 sliding : 1 full */
    }
    cfg->layer_full[L - 1] = 1;   /* the reference forces the last layer to full attention */

    for (int i = 0; i < L; i++) { cfg->layer_head_dim[i] = cfg->head_dim; cfg->layer_n_kv[i] = cfg->n_kv_heads; }
    json_t *plc = json_object_get(tc, "per_layer_config");
    if (plc && !json_is_null(plc)) {
        if (!json_is_object(plc)) { dg_fail(err, errlen, "%s: field %sper_layer_config must be an object", path, c.scope); goto out; }
        const char *k;
        json_t *v;
        json_object_foreach(plc, k, v) {
            char *end;
            long li = strtol(k, &end, 10);
            if (*k == 0 || *end || li < 0 || li >= L || !json_is_object(v)) {
                dg_fail(err, errlen, "%s: field %sper_layer_config key \"%s\" is not a layer index in [0, %d) with an object value", path, c.scope, k, L);
                goto out;
            }
            char scope[96];
            snprintf(scope, sizeof(scope), "%sper_layer_config.%ld.", c.scope, li);
            jctx c2 = {path, scope, err, errlen};
            if (get_int(&c2, v, "head_dim", cfg->head_dim, 2, 1 << 16, &cfg->layer_head_dim[li])) goto out;
            if (get_int(&c2, v, "num_key_value_heads", cfg->n_kv_heads, 1, 4096, &cfg->layer_n_kv[li])) goto out;
            const char *k2;
            json_t *v2;
            json_object_foreach(v, k2, v2) {
                /* the reference applies any attribute here; dgemma knows these two, so refuse the rest
                 * rather than compute something else silently */
                if (strcmp(k2, "head_dim") && strcmp(k2, "num_key_value_heads")) {
                    dg_fail(err, errlen, "%s: field %s%s: per-layer overrides other than head_dim and num_key_value_heads are not supported", path, scope, k2);
                    goto out;
                }
            }
        }
    } else {
        int gdim, gkv;
        if (get_int(&c, tc, "global_head_dim", 512, 2, 1 << 16, &gdim)) goto out;
        if (get_int(&c, tc, "num_global_key_value_heads", cfg->n_kv_heads, 1, 4096, &gkv)) goto out;
        for (int i = 0; i < L; i++)
            if (cfg->layer_full[i]) { cfg->layer_head_dim[i] = gdim; cfg->layer_n_kv[i] = gkv; }
    }
    for (int i = 0; i < L; i++) {
        if (cfg->layer_head_dim[i] % 2) { dg_fail(err, errlen, "%s: layer %d head_dim %d is odd (RoPE needs an even head dim)", path, i, cfg->layer_head_dim[i]); goto out; }
        if (cfg->n_heads % cfg->layer_n_kv[i]) {
            dg_fail(err, errlen, "%s: layer %d: num_attention_heads (%d) is not a multiple of its num_key_value_heads (%d)", path, i, cfg->n_heads, cfg->layer_n_kv[i]);
            goto out;
        }
    }
    if (get_int(&c, root, "canvas_length", 256, 1, 1 << 20, &cfg->canvas_length)) goto out;
    cfg->n_eos = 1;
    cfg->eos_ids[0] = 1;
    json_t *eos = json_object_get(root, "eos_token_id");
    if (!eos) eos = json_object_get(tc, "eos_token_id");
    if (parse_eos(&c, eos, cfg)) goto out;
    if (load_generation(cfg, dir, err, errlen)) goto out;
    rc = 0;
out:
    json_decref(root);
    if (rc) dg_config_free(cfg);
    return rc;
}

void dg_config_free(dg_config *c) {
    free(c->layer_full);
    free(c->layer_head_dim);
    free(c->layer_n_kv);
    c->layer_full = c->layer_head_dim = c->layer_n_kv = NULL;
}

/* ===== GGUF metadata (llama.cpp PR #24423, architecture "diffusion-gemma") =====
 *
 * The converter writes the text config as diffusion-gemma.* keys (ARCHITECTURE.md, "GGUF tensor names"):
 * per-layer KV heads as an array, the layer pattern as a bool array (true = sliding), the full layers'
 * partial rotation as the rope_freqs tensor (1.0 for the rotated frequencies, 1e30 for the rest), the
 * sampler defaults as diffusion.eb_* keys. The vocabulary size is the embedding's row count. */

#include "load/gguf.h"

#define GK "diffusion-gemma."

static int gg_int(const gguf_file *g, const char *key, int64_t def, int64_t lo, int64_t hi, int *out, char *err, size_t errlen) {
    int64_t v = def;
    if (gguf_find_kv(g, key) && gguf_get_int(g, key, lo, hi, &v, err, errlen)) return -1;
    if (!gguf_find_kv(g, key) && def == INT64_MIN) return dg_fail(err, errlen, "%s: metadata key %s is missing", g->path, key);
    *out = (int)v;
    return 0;
}

static int gg_num(const gguf_file *g, const char *key, double def, double lo, double hi, double *out, char *err, size_t errlen) {
    double v = def;
    if (gguf_find_kv(g, key) && gguf_get_float(g, key, &v, err, errlen)) return -1;
    if (!(v >= lo && v <= hi)) return dg_fail(err, errlen, "%s: metadata key %s = %g is out of range [%g, %g]", g->path, key, v, lo, hi);
    *out = v;
    return 0;
}

int dg_config_from_gguf(dg_config *cfg, const gguf_file *g, char *err, size_t errlen) {
    memset(cfg, 0, sizeof(*cfg));
    gguf_str arch;
    if (gguf_get_str(g, "general.architecture", &arch, err, errlen)) return -1;
    if (arch.len != strlen("diffusion-gemma") || memcmp(arch.s, "diffusion-gemma", arch.len))
        return dg_fail(err, errlen, "%s: general.architecture is \"%.*s\", expected \"diffusion-gemma\"", g->path, (int)(arch.len > 64 ? 64 : arch.len), arch.s);
    const int64_t REQ = INT64_MIN, BIG = 1 << 30;
    if (gg_int(g, GK "block_count", REQ, 1, 4096, &cfg->n_layers, err, errlen)) goto fail;
    if (gg_int(g, GK "embedding_length", REQ, 1, 1 << 20, &cfg->hidden_size, err, errlen)) goto fail;
    if (gg_int(g, GK "feed_forward_length", REQ, 1, 1 << 24, &cfg->intermediate_size, err, errlen)) goto fail;
    if (gg_int(g, GK "attention.head_count", REQ, 1, 4096, &cfg->n_heads, err, errlen)) goto fail;
    if (gg_int(g, GK "context_length", 131072, 1, BIG, &cfg->max_position, err, errlen)) goto fail;
    if (gg_int(g, GK "attention.sliding_window", 512, 2, BIG, &cfg->sliding_window, err, errlen)) goto fail;
    if (gg_int(g, GK "expert_count", REQ, 1, 1 << 20, &cfg->n_experts, err, errlen)) goto fail;
    if (gg_int(g, GK "expert_used_count", REQ, 1, cfg->n_experts, &cfg->top_k, err, errlen)) goto fail;
    if (gg_int(g, GK "expert_feed_forward_length", REQ, 1, 1 << 24, &cfg->expert_size, err, errlen)) goto fail;
    int gdim, sdim;
    if (gg_int(g, GK "attention.key_length", 512, 2, 1 << 16, &gdim, err, errlen)) goto fail;
    if (gg_int(g, GK "attention.key_length_swa", 256, 2, 1 << 16, &sdim, err, errlen)) goto fail;
    if (gg_num(g, GK "attention.layer_norm_rms_epsilon", 1e-6, 1e-30, 1, &cfg->rms_norm_eps, err, errlen)) goto fail;
    if (gg_num(g, GK "final_logit_softcapping", 30.0, 1e-30, 1e30, &cfg->final_logit_softcap, err, errlen)) goto fail;
    if (gg_int(g, "diffusion.canvas_length", REQ, 1, 1 << 20, &cfg->canvas_length, err, errlen)) goto fail;
    const gguf_tensor *emb = gguf_find_tensor(g, "token_embd.weight");
    if (!emb || emb->n_dims != 2) { dg_fail(err, errlen, "%s: tensor token_embd.weight is missing or not 2-D", g->path); goto fail; }
    if (emb->ne[1] < 1 || emb->ne[1] > BIG) { dg_fail(err, errlen, "%s: tensor token_embd.weight has %lld rows", g->path, (long long)emb->ne[1]); goto fail; }
    cfg->vocab_size = (int)emb->ne[1];
    cfg->head_dim = sdim;

    const int L = cfg->n_layers;
    cfg->layer_full = calloc((size_t)L, sizeof(int));
    cfg->layer_head_dim = calloc((size_t)L, sizeof(int));
    cfg->layer_n_kv = calloc((size_t)L, sizeof(int));
    if (!cfg->layer_full || !cfg->layer_head_dim || !cfg->layer_n_kv) { dg_fail(err, errlen, "out of memory"); goto fail; }
    const gguf_kv *pat = gguf_find_kv(g, GK "attention.sliding_window_pattern");
    for (int i = 0; i < L; i++) {
        int sl = (i + 1) % 6 != 0;   /* the reference's default 5:1 pattern */
        if (pat && (pat->n != (uint64_t)L || gguf_kv_bool(pat, (uint64_t)i, &sl))) {
            dg_fail(err, errlen, "%s: metadata key " GK "attention.sliding_window_pattern must hold %d booleans", g->path, L);
            goto fail;
        }
        cfg->layer_full[i] = !sl;
    }
    cfg->layer_full[L - 1] = 1;
    const gguf_kv *kvh = gguf_find_kv(g, GK "attention.head_count_kv");
    if (!kvh) { dg_fail(err, errlen, "%s: metadata key " GK "attention.head_count_kv is missing", g->path); goto fail; }
    for (int i = 0; i < L; i++) {
        int64_t nkv;
        if ((kvh->type == GGUF_ARRAY && kvh->n != (uint64_t)L) || gguf_kv_int(kvh, kvh->type == GGUF_ARRAY ? (uint64_t)i : 0, &nkv) ||
            nkv < 1 || nkv > 4096) {
            dg_fail(err, errlen, "%s: metadata key " GK "attention.head_count_kv must be a count or %d counts in [1, 4096]", g->path, L);
            goto fail;
        }
        cfg->layer_n_kv[i] = (int)nkv;
        cfg->layer_head_dim[i] = cfg->layer_full[i] ? gdim : sdim;
        if (cfg->n_heads % cfg->layer_n_kv[i] || cfg->layer_head_dim[i] % 2) {
            dg_fail(err, errlen, "%s: layer %d: %d heads are not a multiple of %d KV heads, or head dim %d is odd", g->path, i,
                    cfg->n_heads, cfg->layer_n_kv[i], cfg->layer_head_dim[i]);
            goto fail;
        }
        if (!cfg->layer_full[i]) cfg->n_kv_heads = cfg->layer_n_kv[i];
    }
    if (!cfg->n_kv_heads) cfg->n_kv_heads = cfg->layer_n_kv[0];

    /* RoPE: sliding layers default rotation with freq_base_swa; full layers proportional with
     * freq_base, the rotated share counted from rope_freqs (1.0 = rotated, anything huge = not) */
    cfg->rope_sliding.type = DG_ROPE_DEFAULT;
    cfg->rope_sliding.partial_rotary_factor = cfg->rope_sliding.factor = 1.0;
    if (gg_num(g, GK "rope.freq_base_swa", 10000.0, 1e-9, 1e30, &cfg->rope_sliding.theta, err, errlen)) goto fail;
    cfg->rope_full.type = DG_ROPE_PROPORTIONAL;
    cfg->rope_full.factor = 1.0;
    cfg->rope_full.partial_rotary_factor = 1.0;
    if (gg_num(g, GK "rope.freq_base", 1000000.0, 1e-9, 1e30, &cfg->rope_full.theta, err, errlen)) goto fail;
    const gguf_tensor *rf = gguf_find_tensor(g, "rope_freqs.weight");
    if (rf) {
        if (rf->dt != DG_F32 || rf->n_dims != 1 || rf->ne[0] != gdim / 2) {
            dg_fail(err, errlen, "%s: tensor rope_freqs.weight must be F32 [%d] (global head dim / 2)", g->path, gdim / 2);
            goto fail;
        }
        int rot = 0;
        for (int i = 0; i < gdim / 2; i++) {
            float f;
            memcpy(&f, rf->data + 4 * (size_t)i, 4);
            if (f == 1.0f && rot == i) rot++;
            else if (!(f > 1e20f)) {
                dg_fail(err, errlen, "%s: tensor rope_freqs.weight[%d] = %g: only 1.0 (rotated) then a huge value (not rotated) are supported", g->path, i, f);
                goto fail;
            }
        }
        cfg->rope_full.partial_rotary_factor = 2.0 * rot / gdim;
    }
    const gguf_kv *ft = gguf_find_kv(g, "general.file_type");
    int64_t ftype = -1;
    if (ft) gguf_kv_int(ft, 0, &ftype);
    /* the compute dtype: the file's float type; for quantized files the embedding's float type, or
     * bf16 (the published model's) when the embedding is quantized too (decided by the binder) */
    cfg->dtype = ftype == 0 ? 'f' : ftype == 1 ? 'h' : ftype == 32 ? 'b' : 0;

    /* generation defaults: the reference's, overridden by the diffusion.eb_* keys */
    gen_defaults(cfg);
    int stab = 1;
    if (gg_int(g, "diffusion.eb_max_steps", 48, 1, 1 << 20, &cfg->gen_max_denoising_steps, err, errlen)) goto fail;
    if (gg_num(g, "diffusion.eb_t_min", 0.4, 0, 1e6, &cfg->gen_t_min, err, errlen)) goto fail;
    if (gg_num(g, "diffusion.eb_t_max", 0.8, 0, 1e6, &cfg->gen_t_max, err, errlen)) goto fail;
    if (gg_num(g, "diffusion.eb_entropy_bound", 0.1, 1e-300, 1e9, &cfg->gen_entropy_bound, err, errlen)) goto fail;
    if (gg_int(g, "diffusion.eb_stability_threshold", 1, 0, 1 << 30, &stab, err, errlen)) goto fail;
    cfg->gen_stability_threshold = stab;
    if (gg_num(g, "diffusion.eb_confidence_threshold", 0.005, 1e-300, 1e9, &cfg->gen_confidence_threshold, err, errlen)) goto fail;
    if (!(cfg->gen_t_max > cfg->gen_t_min)) { dg_fail(err, errlen, "%s: diffusion.eb_t_max must be greater than diffusion.eb_t_min", g->path); goto fail; }
    /* stop ids: the file's EOS, plus the Gemma 4 turn end <turn|> and <|tool_response> when the vocabulary
     * has them (the checkpoint's generation_config.json stops on [1, 106, 50]; GGUF keeps only one id) */
    int eos = 1;
    if (gg_int(g, "tokenizer.ggml.eos_token_id", 1, 0, cfg->vocab_size - 1, &eos, err, errlen)) goto fail;
    cfg->n_eos = 0;
    cfg->eos_ids[cfg->n_eos++] = eos;
    const gguf_kv *toks = gguf_find_kv(g, "tokenizer.ggml.tokens");
    const char *stops[] = {"<turn|>", "<|tool_response>"};
    for (size_t k = 0; toks && k < sizeof(stops) / sizeof(stops[0]); k++)
        for (uint64_t i = 0; i < toks->n && i < (uint64_t)cfg->vocab_size; i++) {
            gguf_str s;
            if (!gguf_kv_str(toks, i, &s) && s.len == strlen(stops[k]) && !memcmp(s.s, stops[k], s.len)) {
                if ((int)i != eos && cfg->n_eos < DG_MAX_EOS) cfg->eos_ids[cfg->n_eos++] = (int)i;
                break;
            }
        }
    return 0;
fail:
    dg_config_free(cfg);
    return -1;
}
