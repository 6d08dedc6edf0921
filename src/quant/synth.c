/*
 * synth.c - synthetic DiffusionGemma models for dgemma synth: built-in shapes, seeded random values,
 * config.json / generation_config.json, and the Hugging Face safetensors directory writer.
 *
 * Values (every row's values depend only on the seed, the tensor name and the row index, so the output
 * does not depend on the thread count):
 *   matrices, experts, embedding   Gaussian, std 1/sqrt(fan_in) (fan_in = the row width, ne[0])
 *   router.proj                    Gaussian, std 3: the router divides its input by sqrt(H), so router
 *                                  logits spread by about 3 units, like a trained router (and like
 *                                  make_fixtures.py's tiny models); at the init scale routing is a tie-fest
 *   norms, router.scale,           uniform [0.5, 1.5)   (the reference init sets them to 1, which hides
 *   per_expert_scale                                     mix-ups; ARCHITECTURE.md detail 7)
 *   layer_scalar (both roles)      uniform [0.6, 1.4)
 * Gaussian values come from a 65,536-entry table of normal quantiles indexed by 16 random bits (four
 * values per 64-bit draw): far faster than Box-Muller and, for weights, indistinguishable.
 */
#define _POSIX_C_SOURCE 200809L
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quant/quant.h"

/* ===== shapes ===== */

typedef struct {
    const char *name;
    int V, H, L, nq, nkv, d, gd, gkv, I, E, K, Ie, W, C, ctx;
} shape;

static const shape k_shapes[] = {
    /* google/diffusiongemma-26B-A4B-it (shared/docs/spec-model.md, formats.md) */
    {"26b-a4b", 262144, 2816, 30, 16, 8, 256, 512, 2, 2112, 128, 8, 704, 1024, 256, 262144},
    /* the same structure at ~0.7B parameters (256-multiple widths: real K-quant blocks everywhere) */
    {"mid", 262144, 1024, 12, 8, 4, 128, 256, 1, 768, 32, 4, 256, 1024, 256, 262144},
    /* a test model: every width a multiple of 256 */
    {"tiny", 512, 256, 2, 2, 1, 128, 256, 1, 256, 4, 2, 256, 8, 16, 4096},
};

/* (Re)lay out the layers: full attention every 6th layer and on the last (the reference's default 5:1
 * pattern), sliding layers (d, nkv), full layers (gd, gkv). */
static int layout(dg_config *c, int L, int d, int nkv, int gd, int gkv, char *err, size_t errlen) {
    free(c->layer_full);
    free(c->layer_head_dim);
    free(c->layer_n_kv);
    c->n_layers = L;
    c->layer_full = calloc((size_t)L, sizeof(int));
    c->layer_head_dim = calloc((size_t)L, sizeof(int));
    c->layer_n_kv = calloc((size_t)L, sizeof(int));
    if (!c->layer_full || !c->layer_head_dim || !c->layer_n_kv) return dg_fail(err, errlen, "out of memory");
    for (int i = 0; i < L; i++) {
        c->layer_full[i] = (i + 1) % 6 == 0 || i == L - 1;
        c->layer_head_dim[i] = c->layer_full[i] ? gd : d;
        c->layer_n_kv[i] = c->layer_full[i] ? gkv : nkv;
    }
    c->head_dim = d;
    c->n_kv_heads = nkv;
    return 0;
}

int dg_synth_config(dg_config *c, const char *name, int n_layers, int n_experts, char *err, size_t errlen) {
    const shape *s = NULL;
    for (size_t i = 0; i < sizeof(k_shapes) / sizeof(k_shapes[0]); i++)
        if (!strcmp(k_shapes[i].name, name ? name : "26b-a4b")) s = &k_shapes[i];
    memset(c, 0, sizeof(*c));
    if (!s) return dg_fail(err, errlen, "unknown shape '%s' (26b-a4b, mid, tiny)", name);
    c->vocab_size = s->V;
    c->hidden_size = s->H;
    c->n_heads = s->nq;
    c->intermediate_size = s->I;
    c->n_experts = n_experts > 0 ? n_experts : s->E;
    c->top_k = s->K < c->n_experts ? s->K : c->n_experts;
    c->expert_size = s->Ie;
    c->sliding_window = s->W;
    c->canvas_length = s->C;
    c->max_position = s->ctx;
    c->rms_norm_eps = 1e-6;
    c->final_logit_softcap = 30.0;
    c->dtype = 'b';
    c->rope_sliding = (dg_rope_params){DG_ROPE_DEFAULT, 10000.0, 1.0, 1.0};
    c->rope_full = (dg_rope_params){DG_ROPE_PROPORTIONAL, 1000000.0, 0.25, 1.0};
    dg_config_gen_defaults(c);
    c->n_eos = 0;
    const int eos[] = {1, 106, 50};
    for (int i = 0; i < 3; i++)
        if (eos[i] < c->vocab_size) c->eos_ids[c->n_eos++] = eos[i];
    if (layout(c, n_layers > 0 ? n_layers : s->L, s->d, s->nkv, s->gd, s->gkv, err, errlen)) { dg_config_free(c); return -1; }
    return 0;
}

/* --layers / --experts on a config read from a file: the same relayout with its own head shapes. */
int dg_synth_override(dg_config *c, int n_layers, int n_experts, char *err, size_t errlen) {
    if (n_experts > 0) {
        c->n_experts = n_experts;
        if (c->top_k > n_experts) c->top_k = n_experts;
    }
    if (n_layers > 0) {
        int gd, gkv;
        dg_config_global_head(c, &gd, &gkv);
        int d = c->head_dim, nkv = c->n_kv_heads;
        for (int i = 0; i < c->n_layers; i++)
            if (!c->layer_full[i]) { d = c->layer_head_dim[i]; nkv = c->layer_n_kv[i]; break; }
        return layout(c, n_layers, d, nkv, gd, gkv, err, errlen);
    }
    return 0;
}

/* ===== config.json, generation_config.json ===== */

static int dump(json_t *j, const char *dir, const char *file, char *err, size_t errlen) {
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, file);
    const int rc = json_dump_file(j, path, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(j);
    return rc ? dg_fail(err, errlen, "%s: cannot write", path) : 0;
}

int dg_synth_write_config(const dg_config *c, const char *dir, const char *dtype, char *err, size_t errlen) {
    int gd, gkv;
    dg_config_global_head(c, &gd, &gkv);
    json_t *lt = json_array();
    for (int i = 0; i < c->n_layers; i++) json_array_append_new(lt, json_string(c->layer_full[i] ? "full_attention" : "sliding_attention"));
    json_t *tc = json_pack("{s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:o, s:i, s:i, s:f, s:f, s:i, s:i, s:i, s:s, s:b, s:i, s:i, s:i, s:s, s:b}",
        "model_type", "diffusion_gemma_text", "vocab_size", c->vocab_size, "hidden_size", c->hidden_size,
        "intermediate_size", c->intermediate_size, "num_hidden_layers", c->n_layers, "num_attention_heads", c->n_heads,
        "num_key_value_heads", c->n_kv_heads, "head_dim", c->head_dim, "global_head_dim", gd,
        "num_global_key_value_heads", gkv, "layer_types", lt, "sliding_window", c->sliding_window,
        "max_position_embeddings", c->max_position, "rms_norm_eps", c->rms_norm_eps,
        "final_logit_softcapping", c->final_logit_softcap, "num_experts", c->n_experts, "top_k_experts", c->top_k,
        "moe_intermediate_size", c->expert_size, "hidden_activation", "gelu_pytorch_tanh", "attention_bias", 0,
        "bos_token_id", 2, "eos_token_id", 1, "pad_token_id", 0, "use_bidirectional_attention", "vision",
        "tie_word_embeddings", 1);
    json_t *rp = json_pack("{s:{s:s, s:f, s:f}, s:{s:s, s:f}}", "full_attention", "rope_type", "proportional",
                           "rope_theta", c->rope_full.theta, "partial_rotary_factor", c->rope_full.partial_rotary_factor,
                           "sliding_attention", "rope_type", "default", "rope_theta", c->rope_sliding.theta);
    /* a tiny vision tower config (the checkpoint has no vision weights; transformers builds a small one) */
    json_t *vc = json_pack("{s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i}", "model_type", "gemma4_vision", "hidden_size", 16,
                           "intermediate_size", 32, "num_hidden_layers", 1, "num_attention_heads", 2,
                           "num_key_value_heads", 2, "head_dim", 8, "position_embedding_size", 64);
    if (!tc || !rp || !vc) {
        json_decref(tc); json_decref(rp); json_decref(vc);
        return dg_fail(err, errlen, "out of memory");
    }
    json_object_set_new(tc, "rope_parameters", rp);
    json_t *eos = json_array();
    for (int i = 0; i < c->n_eos; i++) json_array_append_new(eos, json_integer(c->eos_ids[i]));
    json_t *root = json_pack("{s:[s], s:s, s:i, s:s, s:b, s:o, s:o}", "architectures", "DiffusionGemmaForBlockDiffusion",
                             "model_type", "diffusion_gemma", "canvas_length", c->canvas_length, "dtype", dtype,
                             "tie_word_embeddings", 1, "text_config", tc, "vision_config", vc);
    json_t *gen = json_pack("{s:f, s:o, s:i, s:i, s:i, s:{s:s, s:f}, s:i, s:f, s:f}", "confidence_threshold",
                            c->gen_confidence_threshold, "eos_token_id", eos, "max_denoising_steps", c->gen_max_denoising_steps,
                            "max_new_tokens", c->gen_max_new_tokens, "pad_token_id", 0, "sampler_config", "_cls_name",
                            "EntropyBoundSamplerConfig", "entropy_bound", c->gen_entropy_bound, "stability_threshold",
                            (int)c->gen_stability_threshold, "t_max", c->gen_t_max, "t_min", c->gen_t_min);
    if (!root || !gen) { json_decref(root); json_decref(gen); return dg_fail(err, errlen, "out of memory"); }
    return dump(root, dir, "config.json", err, errlen) || dump(gen, dir, "generation_config.json", err, errlen) ? -1 : 0;
}

/* ===== random values ===== */

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

uint64_t dg_synth_seed(uint64_t seed, const char *tensor, int64_t row) {
    uint64_t h = 1469598103934665603ull;
    for (const char *p = tensor; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ull;
    uint64_t s = seed ^ h;
    splitmix64(&s);
    s ^= (uint64_t)row * 0xd1b54a32d192ed03ull;
    return splitmix64(&s);
}

static float g_table[65536];
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

/* Inverse normal CDF: Acklam's rational approximation refined by one Halley step (|error| ~1e-15). */
static double inv_norm(double p) {
    static const double a[] = {-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02, 1.383577518672690e+02,
                               -3.066479806614716e+01, 2.506628277459239e+00};
    static const double b[] = {-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02, 6.680131188771972e+01,
                               -1.328068155288572e+01};
    static const double c[] = {-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00, -2.549732539343734e+00,
                               4.374664141464968e+00, 2.938163982698783e+00};
    static const double d[] = {7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00, 3.754408661907416e+00};
    double x;
    if (p < 0.02425) {
        const double q = sqrt(-2 * log(p));
        x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
    } else if (p > 1 - 0.02425) {
        const double q = sqrt(-2 * log(1 - p));
        x = -(((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
    } else {
        const double q = p - 0.5, r = q * q;
        x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
            (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
    }
    const double e = 0.5 * erfc(-x / sqrt(2.0)) - p, u = e * sqrt(2 * 3.14159265358979323846) * exp(x * x / 2);
    return x - u / (1 + x * u / 2);
}

static void init_table(void) {
    for (int i = 0; i < 65536; i++) g_table[i] = (float)inv_norm((i + 0.5) / 65536.0);
}

void dg_synth_row(const dg_qtensor *t, uint64_t seed, int64_t row, float *out, int64_t n) {
    pthread_once(&g_once, init_table);
    uint64_t s = dg_synth_seed(seed, t->name, row);
    if (t->kind == DG_QK_NORM || t->kind == DG_QK_SCALAR) {
        const float lo = t->kind == DG_QK_NORM ? 0.5f : 0.6f, span = t->kind == DG_QK_NORM ? 1.0f : 0.8f;
        for (int64_t i = 0; i < n; i++) out[i] = lo + span * (float)((splitmix64(&s) >> 40) * (1.0 / 16777216.0));
        return;
    }
    const float std = t->kind == DG_QK_ROUTER ? 3.0f : (float)(1.0 / sqrt((double)t->ne[0]));
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const uint64_t r = splitmix64(&s);
        out[i] = std * g_table[r & 0xffff];
        out[i + 1] = std * g_table[(r >> 16) & 0xffff];
        out[i + 2] = std * g_table[(r >> 32) & 0xffff];
        out[i + 3] = std * g_table[r >> 48];
    }
    for (uint64_t r = splitmix64(&s); i < n; i++, r >>= 16) out[i] = std * g_table[r & 0xffff];
}

uint64_t dg_synth_rand(uint64_t *state) { return splitmix64(state); }
