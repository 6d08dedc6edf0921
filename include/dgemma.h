/*
 * dgemma.h - the one public header of dgemma, a C inference engine for DiffusionGemma
 * (model_type "diffusion_gemma").
 *
 * Two objects:
 *   dg_engine   immutable: the loaded checkpoint (mmapped weights, config). Safe to share.
 *   dg_session  mutable: KV cache, canvas scratch, activation buffers. One per conversation.
 *
 * Every fallible call returns 0 on success and -1 on failure, writing a message that names the
 * file, tensor or field at fault into err[errlen] (when err is not NULL). The library never exits.
 */
#ifndef DGEMMA_H
#define DGEMMA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DG_VERSION "0.1.0"

typedef struct dg_engine dg_engine;
typedef struct dg_session dg_session;

/* Activation precision. The reference (transformers) runs the whole model in the checkpoint dtype:
 * with bf16 weights every intermediate activation is rounded to bf16. AUTO imitates that; F32 keeps
 * every activation in float32 (a diagnostic switch, not a second semantics). */
typedef enum {
    DG_ACT_AUTO = 0,
    DG_ACT_F32 = 1,
    DG_ACT_BF16 = 2,
    DG_ACT_F16 = 3,
} dg_act_precision;

typedef struct {
    dg_act_precision act;  /* default DG_ACT_AUTO */
} dg_engine_params;

/* What a loaded checkpoint is; all shapes come from config.json. */
typedef struct {
    int vocab_size;
    int hidden_size;
    int n_layers;
    int n_heads;
    int intermediate_size;      /* dense MLP and self-conditioning MLP width */
    int n_experts;
    int n_experts_used;         /* top-k */
    int expert_size;            /* moe_intermediate_size */
    int sliding_window;
    int canvas_length;
    int n_full_layers;
    float final_logit_softcap;
    float rms_norm_eps;
    const char *weight_dtype;   /* "F32", "BF16", "F16" (of the embedding) */
    const char *act_dtype;      /* activation rounding in use: "F32", "BF16", "F16" */
    int64_t n_params;           /* text parameters bound */
    int64_t weight_bytes;       /* bytes of the bound text tensors */
} dg_model_info;

dg_engine_params dg_engine_default_params(void);

/* Load a Hugging Face checkpoint directory (config.json, generation_config.json,
 * model.safetensors or model.safetensors.index.json + shards). Weights are mmapped. */
int dg_engine_load(const char *model_dir, const dg_engine_params *params, dg_engine **out,
                   char *err, size_t errlen);
void dg_engine_free(dg_engine *engine);
const dg_model_info *dg_engine_info(const dg_engine *engine);

/* Iterate the bound text tensors (for `dgemma inspect`). Returns 0 while i is in range. */
typedef struct {
    const char *name;
    const char *dtype;
    int ndim;
    int64_t shape[4];
    int64_t nbytes;
    const char *file;   /* shard the tensor lives in */
} dg_tensor_info;
int dg_engine_tensor(const dg_engine *engine, int i, dg_tensor_info *out);

typedef struct {
    int n_ctx;     /* most tokens the KV cache can hold (prompt + committed canvases); 0 = 4096 */
    int n_batch;   /* most tokens encoded per chunk; 0 = canvas_length */
} dg_session_params;

dg_session_params dg_session_default_params(void);
int dg_session_create(const dg_engine *engine, const dg_session_params *params, dg_session **out,
                      char *err, size_t errlen);
void dg_session_free(dg_session *session);
/* Empty the KV cache (n_past = 0). */
void dg_session_reset(dg_session *session);
/* Tokens encoded so far (the position the next token or canvas starts at). */
int dg_session_n_past(const dg_session *session);

/* Encoder pass: append n tokens (a prompt, or a committed canvas) to the KV cache at positions
 * n_past .. n_past+n-1, causally, with the encoder-role layer scalars. */
int dg_encode(dg_session *session, const int32_t *ids, int n, char *err, size_t errlen);

/* Decoder pass: one denoising step over a canvas of n tokens (n <= canvas_length) at positions
 * n_past .. n_past+n-1, attending bidirectionally to the cache and the canvas, without writing the
 * cache. sc_logits ([n, vocab] float, row-major) are the self-conditioning logits of the previous
 * step, used as given, or NULL on a canvas's first step. Writes softcapped logits [n, vocab]. */
int dg_decode(dg_session *session, const int32_t *canvas, int n, const float *sc_logits,
              float *logits, char *err, size_t errlen);

/* Debug taps: when set, every stage of every pass is shown to fn (float32 data, rows x cols),
 * named "embed", "layer.<i>", "router.<i>.ids", "router.<i>.weights", "sc_embed", "input",
 * "norm", "logits". Used by the parity tests; costs nothing when unset. */
typedef void (*dg_tap_fn)(void *user, const char *name, const float *data, int rows, int cols);
void dg_session_set_tap(dg_session *session, dg_tap_fn fn, void *user);

#ifdef __cplusplus
}
#endif
#endif /* DGEMMA_H */
