/*
 * internal.h - private structures shared inside src/: the parsed config, the bound weights
 * (dg_engine) and helpers. Nothing here is visible to cli/ or server code, which use dgemma.h.
 *
 * Dimension letters used throughout the model code:
 *   T  tokens in the current pass (prompt chunk or canvas)    H  hidden size
 *   V  vocabulary                                             I  dense / self-conditioning MLP width
 *   E  experts     K  experts used per token (top-k)          Ie expert width
 *   nq query heads, nkv KV heads of the layer, d head dim of the layer
 */
#ifndef DG_INTERNAL_H
#define DG_INTERNAL_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>

#include "dgemma.h"
#include "kernels/kernels.h"
#include "load/safetensors.h"

#define DG_MAX_EOS 16

typedef enum { DG_ROPE_DEFAULT = 0, DG_ROPE_PROPORTIONAL = 1 } dg_rope_type;

typedef struct {
    dg_rope_type type;
    double theta;
    double partial_rotary_factor;   /* proportional only */
    double factor;                  /* proportional only: inv_freq /= factor */
} dg_rope_params;

/* Everything in config.json / generation_config.json that changes the math. */
typedef struct {
    int vocab_size, hidden_size, n_layers, n_heads, n_kv_heads, head_dim;
    int intermediate_size, n_experts, top_k, expert_size;
    int sliding_window, canvas_length, max_position;
    double rms_norm_eps, final_logit_softcap;
    char dtype;             /* config.json "dtype": 'b' bfloat16, 'h' float16, 'f' float32, 0 absent */
    dg_rope_params rope_sliding, rope_full;
    /* per layer, resolved like transformers' per_layer_config */
    int *layer_full;        /* [n_layers] 1 = full_attention, 0 = sliding_attention */
    int *layer_head_dim;    /* [n_layers] */
    int *layer_n_kv;        /* [n_layers] */
    /* generation_config.json (defaults of the reference when absent) */
    int gen_max_new_tokens, gen_max_denoising_steps;
    double gen_entropy_bound, gen_t_min, gen_t_max, gen_stability_threshold, gen_confidence_threshold;
    int n_eos;
    int eos_ids[DG_MAX_EOS];
} dg_config;

int dg_config_load(dg_config *c, const char *model_dir, char *err, size_t errlen);
/* The same from a config.json at any path; generation_config.json is read from dir (NULL: none). */
int dg_config_load_file(dg_config *c, const char *config_json, const char *dir, char *err, size_t errlen);
/* What a model path names: 1 = a GGUF file (*gguf gets its path, malloc'ed), 0 = a model directory,
 * -1 = neither (message in err). A directory without config.json holding exactly one .gguf counts as
 * that file. */
int dg_resolve_model(const char *path, char **gguf, char *err, size_t errlen);
struct gguf_file;
/* The same from a diffusion-gemma GGUF's metadata. */
int dg_config_from_gguf(dg_config *c, const struct gguf_file *g, char *err, size_t errlen);
void dg_config_free(dg_config *c);
/* The reference's generation defaults (DiffusionGemmaGenerationConfig) into c->gen_*. */
void dg_config_gen_defaults(dg_config *c);

typedef struct {
    int is_full, d, n_kv;
    dg_mat q, k, v, o;                      /* v.data == NULL on full layers (V = raw K) */
    dg_vec q_norm, k_norm;
    dg_vec in_norm, post_attn_norm;
    dg_vec pre_ff_norm, post_ff1_norm;      /* dense MLP path */
    dg_vec pre_ff2_norm, post_ff2_norm;     /* MoE path */
    dg_vec post_ff_norm;                    /* after the sum */
    dg_mat gate, up, down;                  /* dense MLP */
    dg_mat router;                          /* [E, H] */
    dg_vec router_scale, per_expert_scale;  /* [H], [E] */
    dg_mat experts_gate_up;                 /* [E, 2*Ie, H] viewed as [E*2*Ie, H] */
    dg_mat experts_down;                    /* [E, H, Ie] viewed as [E*H, Ie] */
    float enc_scalar, dec_scalar;           /* layer_scalar of the encoder / decoder role */
    float *inv_freq;                        /* [d/2] rotary inverse frequencies (0 = no rotation) */
} dg_layer;

/* Where the weights come from (each has its own names and layouts; all bind to the same views). */
typedef enum { DG_SRC_HF = 0, DG_SRC_MLX = 1, DG_SRC_GGUF = 2 } dg_source;

struct dg_mlx_quant;

struct dg_engine {
    char *dir;                   /* the model directory or .gguf file given to dg_engine_load */
    dg_source src;
    dg_config cfg;
    st_store st;                 /* HF / MLX: the safetensors files */
    struct gguf_file *gg;        /* GGUF: the mapped file */
    struct dg_mlx_quant *mq;     /* MLX: config.json's quantization block */
    void **owned;                /* MLX: aligned copies of unaligned float tensors */
    int n_owned;
    dg_layer *layers;
    dg_mat embed;                /* [V, H] token embedding, also the LM head unless lm_head is given */
    dg_mat lm_head;
    dg_vec final_norm;
    dg_vec sc_pre_norm;
    dg_mat sc_gate, sc_up, sc_down;
    dg_dtype act;                /* activation rounding */
    dg_dtype wdt;                /* the reference's compute dtype (= act): it casts the self-conditioning
                                    logits and probabilities to it */
    float embed_scale;           /* sqrt(H) rounded to the activation dtype */
    dg_model_info info;
    dg_tensor_info *bound;       /* tensors bound, in binding order (for inspect) */
    int n_bound, cap_bound;
};

/* Generation buffers of a session: allocated on the first dg_generate, kept for the session's life. */
typedef struct {
    float *logits;       /* [C, V] logits, then temperature-scaled, then the next step's sc input */
    double *w;           /* [n_threads, V] exp(z - max) of one position per thread (float in the fast path) */
    double *u;           /* [C] the step's sampling uniforms, drawn in position order */
    float *H;            /* [C] entropies */
    int32_t *argmax, *sample, *canvas;   /* [C] */
    uint8_t *accepted;   /* [C] */
    int *order;          /* [C] */
    int32_t *hist;       /* [hist_cap, C] argmax history of the stopping rule */
    int hist_cap;
} dg_gen_buf;

/* The session's generation buffers, grown (before any loop) to hold a history of hist_n canvases. */
dg_gen_buf *dg_session_gen_buf(dg_session *s, int hist_n, char *err, size_t errlen);
const dg_engine *dg_session_engine(const dg_session *s);
struct dg_pool;
struct dg_pool *dg_session_pool(dg_session *s);
int dg_session_fast(const dg_session *s);      /* 0: the scalar oracle kernels */
dg_profile *dg_session_prof(dg_session *s);
int dg_session_n_ctx(const dg_session *s);

/* The GGUF name (llama.cpp PR #24423) of a Hugging Face tensor name: 0, or -1 when it has none
 * (weights.c; ARCHITECTURE.md "GGUF tensor names"). */
int dg_gguf_name(const char *hf, char *out, size_t n);
/* DG_F32 / DG_F16 / DG_BF16 for a float safetensors dtype (0), else -1 (weights.c). */
int dg_st_float_dtype(st_dtype s, dg_dtype *out);
/* "[d0, d1, ...]" into buf, for messages (weights.c). */
void dg_fmt_shape(char *buf, size_t n, const int64_t *shape, int ndim);

/* Write a formatted message into err (if any) and return -1. */
int dg_fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* One expert's gate_up [2*Ie, H] and down [H, Ie] matrices. */
static inline dg_mat dg_expert_gate_up(const dg_engine *e, const dg_layer *L, int ex) {
    const int64_t rows = 2 * (int64_t)e->cfg.expert_size;
    return dg_mat_rows(&L->experts_gate_up, ex * rows, rows);
}
static inline dg_mat dg_expert_down(const dg_engine *e, const dg_layer *L, int ex) {
    const int64_t rows = e->cfg.hidden_size;
    return dg_mat_rows(&L->experts_down, ex * rows, rows);
}

#endif
