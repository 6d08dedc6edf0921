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

/* Which kernels a session computes with. AUTO picks the fastest this CPU has (AMX, AVX-512, AVX2 or
 * NEON; float32 accumulation in the kernel's own order). REF is the scalar oracle: every dot product
 * exact and rounded once, bit-identical to the parity fixtures (slow; for verification). */
typedef enum {
    DG_KERNELS_AUTO = 0,
    DG_KERNELS_REF,
    DG_KERNELS_GENERIC,
    DG_KERNELS_AVX2,
    DG_KERNELS_AVX512,
    DG_KERNELS_AMX,
    DG_KERNELS_NEON,
} dg_kernels;

typedef struct {
    int n_ctx;          /* most tokens the KV cache can hold (prompt + committed canvases); 0 = 4096 */
    int n_batch;        /* most tokens encoded per chunk; 0 = 1024, at most n_ctx, at least canvas_length */
    int n_threads;      /* threads (the caller included); 0 = every online CPU */
    dg_kernels kernels; /* default DG_KERNELS_AUTO */
    int sc_top_k;       /* 0: the self-conditioning soft embedding over the whole vocabulary (the
                           reference); k > 0: only each position's k most probable tokens (their exact
                           probabilities, not renormalised): an approximation that skips most of the
                           [canvas x vocab x hidden] product; its error is measured in ARCHITECTURE.md */
} dg_session_params;

dg_session_params dg_session_default_params(void);
int dg_session_create(const dg_engine *engine, const dg_session_params *params, dg_session **out,
                      char *err, size_t errlen);
void dg_session_free(dg_session *session);
/* Empty the KV cache (n_past = 0). */
void dg_session_reset(dg_session *session);
/* The kernels and threads a session runs with ("amx", "avx512", ..., "ref"). */
const char *dg_session_kernels(const dg_session *session);
int dg_session_threads(const dg_session *session);

/* Time spent per stage since the session was created or the profile reset (milliseconds). The
 * decoder stages count decoder steps only; encode counts whole encoder passes. */
typedef struct {
    double attention;      /* q/k/v/o projections, RoPE, attention */
    double mlp;            /* dense MLP */
    double moe;            /* router and experts */
    double self_cond;      /* soft embedding and the self-conditioning MLP */
    double lm_head;        /* final norm, LM head, softcap */
    double sample;         /* temperature, softmax statistics, sampling, acceptance (dg_generate) */
    double encode;         /* encoder passes (prompt and committed canvases) */
    double decode;         /* decoder steps in all */
    double proj;           /* within attention and mlp: the q/k/v/o and dense MLP products alone */
    double experts;        /* within moe: the expert products alone (gate_up and down) */
    double enc_experts;    /* within encode: the encoder's expert products alone */
    int n_decode, n_encode_tokens;
} dg_profile;
void dg_session_profile(const dg_session *session, dg_profile *out);
void dg_session_profile_reset(dg_session *session);

/* Tokens encoded so far (the position the next token or canvas starts at). */
int dg_session_n_past(const dg_session *session);

/* Encoder pass: append n tokens (a prompt, or a committed canvas) to the KV cache at positions
 * n_past .. n_past+n-1, causally, with the encoder-role layer scalars. */
int dg_encode(dg_session *session, const int32_t *ids, int n, char *err, size_t errlen);

/* Decoder pass: one denoising step over a canvas of n tokens (n <= canvas_length) at positions
 * n_past .. n_past+n-1, attending bidirectionally to the cache and the canvas, without writing the
 * cache. sc_logits ([n, vocab] float, row-major) are the self-conditioning logits of the previous
 * step, used as given, or NULL on a canvas's first step; they are fully read before any logits are
 * written, so sc_logits may be the logits buffer itself. Writes softcapped logits [n, vocab]. */
int dg_decode(dg_session *session, const int32_t *canvas, int n, const float *sc_logits,
              float *logits, char *err, size_t errlen);

/* ===== generation (the reference's DiffusionGemmaGenerationMixin.generate) ===== */

#define DG_MAX_EOS_IDS 16

typedef struct {
    int max_new_tokens;          /* tokens to emit at most (exact; the reference rounds up to canvases) */
    int max_denoising_steps;     /* steps per canvas at most */
    double entropy_bound;        /* entropy-bound acceptance: accept the lowest-entropy prefix whose
                                    entropy sum minus its largest entropy stays <= this (nats) */
    double t_min, t_max;         /* linear temperature schedule, t_max on the first step (0 <= t_min < t_max) */
    int stability_threshold;     /* stop when the argmax canvas repeated this many steps (0: always
                                    stable; >= max_denoising_steps: never stops early) ... */
    double confidence_threshold; /* ... and the mean entropy is below this (nats, > 0) */
    int n_eos;                   /* generation ends after a canvas containing any of these ids */
    int32_t eos_ids[DG_MAX_EOS_IDS];
    uint64_t seed;               /* the random stream (canvas init, sampling, renoising) */
} dg_gen_params;

/* The checkpoint's generation_config.json values (the reference's defaults where absent), seed 0. */
dg_gen_params dg_gen_default_params(const dg_engine *engine);
/* 0 if every parameter is valid, else -1 with a message naming the parameter. */
int dg_gen_params_check(const dg_engine *engine, const dg_gen_params *params, char *err, size_t errlen);

typedef struct {
    int canvas;                  /* canvas index, from 0 */
    int step;                    /* denoising step within the canvas, from 1 */
    int n;                       /* canvas length */
    int n_accepted;              /* positions that kept their sample this step */
    float mean_entropy;          /* nats, of the temperature-scaled distributions */
    float temperature;
    int stop;                    /* 1 if the stability-and-confidence rule fired on this step */
    const int32_t *argmax;       /* [n] argmax draft */
    const uint8_t *accepted;     /* [n] 1 where the sample was accepted */
    const int32_t *next_canvas;  /* [n] the canvas fed to the next step (accepted + renoised) */
} dg_step_event;

typedef struct {
    int canvas;                  /* canvas index, from 0 */
    int steps;                   /* denoising steps it took */
    const int32_t *tokens;       /* [n] tokens this canvas emits (argmax, cut at EOS / max_new_tokens) */
    int n;
    int eos;                     /* 1 if it contained an EOS (generation ends) */
    int32_t eos_id;              /* the first EOS id in the canvas (not emitted), -1 if none */
} dg_canvas_event;

/* Callbacks run on the generating thread; returning nonzero cancels the generation. */
typedef struct {
    int (*on_step)(void *user, const dg_step_event *ev);
    int (*on_canvas)(void *user, const dg_canvas_event *ev);
    void *user;
} dg_callbacks;

typedef enum { DG_FINISH_NONE = 0, DG_FINISH_EOS = 1, DG_FINISH_LENGTH = 2, DG_FINISH_CANCELLED = 3 } dg_finish;

typedef struct {
    int n_prompt, n_emitted, n_canvases, n_steps;   /* n_steps: decoder steps over all canvases */
    double ms_prompt;            /* encoding the prompt */
    double ms_first_canvas;      /* from the call to the first committed canvas */
    double ms_total;
    double ms_per_step;          /* mean decoder step (decode + sampling) */
    double canvas_tok_per_s;     /* canvas positions denoised per second of stepping */
    double emitted_tok_per_s;    /* emitted tokens per second of the whole call */
    dg_finish finish;
    int32_t eos_id;              /* the EOS that ended generation (-1 if none): 106 <turn|>, 50 <|tool_response>, ... */
} dg_gen_stats;

/* Encode the prompt after what the session holds, then denoise canvases until an EOS, max_new_tokens
 * or cancellation; committed canvases are encoded into the cache. Emitted tokens (up to, not
 * including, the first EOS) go to out[0 .. *n_out). cb and stats may be NULL. */
int dg_generate(dg_session *session, const int32_t *prompt, int n_prompt, const dg_gen_params *params,
                const dg_callbacks *cb, int32_t *out, int out_cap, int *n_out, dg_gen_stats *stats,
                char *err, size_t errlen);

/* ===== tokenizer (Hugging Face tokenizer.json, the Gemma BPE family) ===== */

/* Identical to Hugging Face `tokenizers` (ids and text) for BPE tokenizer.json files with byte fallback:
 * added tokens with every flag, Replace / Prepend normalizers, Split pre-tokenizers, Replace /
 * ByteFallback / Fuse / Strip decoders. Other components are refused at load, naming the JSON field.
 * A tokenizer is immutable once loaded: it can be shared between threads. */
typedef struct dg_tokenizer dg_tokenizer;

/* Load a tokenizer.json (a file, or a model directory containing one). */
int dg_tokenizer_load(const char *path, dg_tokenizer **out, char *err, size_t errlen);
void dg_tokenizer_free(dg_tokenizer *tok);
/* Number of ids (the model vocabulary plus added tokens beyond it). */
int dg_tokenizer_n_vocab(const dg_tokenizer *tok);
/* The id of a token string (added token first, then vocabulary, like token_to_id), or -1. */
int32_t dg_tokenizer_find(const dg_tokenizer *tok, const char *piece);
/* The string of an id as tokenizers' id_to_token gives it (NULL if out of range or unassigned); 1 in
 * *special (if not NULL) for special added tokens. */
const char *dg_tokenizer_piece(const dg_tokenizer *tok, int32_t id, int *special);

/* Encode UTF-8 text like tokenizers' encode(text, add_special_tokens=False): added tokens (special
 * tokens written in the text are recognised), normalizer, pre-tokenizer, BPE with byte fallback. No BOS
 * is added. text[0, len) may hold NUL bytes; bytes that are not valid UTF-8 are read as U+FFFD, one per
 * maximal invalid subpart (Python's bytes.decode(errors="replace")); at most 256 MiB. *ids is
 * malloc'ed, never NULL on success (free it), *n may be 0. */
int dg_tokenize(const dg_tokenizer *tok, const char *text, size_t len, int32_t **ids, int *n, char *err, size_t errlen);

/* Decode like tokenizers' decode(ids, skip_special_tokens). *text is malloc'ed and NUL-terminated (*len
 * bytes, may be NULL). An id outside [0, n_vocab) is an error (tokenizers drops it silently). */
int dg_detokenize(const dg_tokenizer *tok, const int32_t *ids, int n, int skip_special, char **text, size_t *len,
                  char *err, size_t errlen);

/* Streaming decode: push ids one at a time; each push returns the text that is final so far (a run
 * of byte-fallback tokens is held until it ends, so a UTF-8 character split across tokens is never
 * emitted half). The concatenation of all pushes and the flush equals dg_detokenize. */
typedef struct dg_detok_stream dg_detok_stream;
dg_detok_stream *dg_detok_stream_new(const dg_tokenizer *tok, int skip_special);
void dg_detok_stream_free(dg_detok_stream *st);
/* Returns the new final text (NUL-terminated, *len bytes), valid until the next call; NULL when out of
 * memory or when id is outside [0, n_vocab) (the id is then ignored). */
const char *dg_detok_stream_push(dg_detok_stream *st, int32_t id, size_t *len);
/* The rest (an open byte run); the stream is then empty and can start a new sequence. */
const char *dg_detok_stream_flush(dg_detok_stream *st, size_t *len);

/* ===== chat templates (the checkpoint's Jinja template, as transformers' apply_chat_template) ===== */

typedef struct dg_chat_template dg_chat_template;

/* The chat template of a model directory: chat_template.jinja, else "chat_template" in
 * tokenizer_config.json, else the built-in Gemma 4 template. bos/eos token strings come from
 * tokenizer_config.json (default "<bos>", "<eos>"). */
int dg_chat_template_load(const char *model_dir, dg_chat_template **out, char *err, size_t errlen);
/* A template from source text; name is used in error messages ("chat_template.jinja:12: ..."). */
int dg_chat_template_parse(const char *source, size_t len, const char *name, dg_chat_template **out,
                           char *err, size_t errlen);
/* The built-in Gemma 4 template (used when a checkpoint ships none). */
int dg_chat_template_default(dg_chat_template **out, char *err, size_t errlen);
void dg_chat_template_free(dg_chat_template *t);

typedef struct {
    const char *messages_json;   /* JSON array of messages: {"role", "content" (string or a list of
                                    parts), "tool_calls", "reasoning_content", ...} as OpenAI/HF */
    const char *tools_json;      /* JSON array of tool declarations, or NULL (the template sees None) */
    int add_generation_prompt;
    int enable_thinking;         /* 1 true, 0 false, -1 not passed (the template sees it undefined) */
    const char *extra_json;      /* JSON object of further template variables, or NULL */
} dg_chat_params;

/* Render the template like transformers' apply_chat_template(..., tokenize=False): null-valued keys
 * are dropped from each message, reasoning ("reasoning_content" / "thinking" / "reasoning") is
 * aliased under "thinking" and "reasoning_content", and the template sees messages, tools, documents
 * (None), add_generation_prompt, the special tokens (bos_token, eos_token, ...), enable_thinking and the
 * extra variables. *out is malloc'ed and NUL-terminated. Errors name the template and line
 * ("chat_template.jinja:12: ..."); a template's raise_exception("msg") gives "NAME:LINE: msg". */
int dg_chat_render(const dg_chat_template *t, const dg_chat_params *p, char **out, size_t *len,
                   char *err, size_t errlen);

/* ===== chat replies: the model's output split into thinking, answer and tool calls =====
 * A Gemma 4 reply is text, optionally preceded by a thought channel "<|channel>thought\n ... <channel|>"
 * (when the prompt enabled thinking; with thinking off the template closes an empty channel itself),
 * and may contain tool calls "<|tool_call>call:NAME{ARGS}<tool_call|>" (strings inside ARGS quoted
 * <|"|>...<|"|>). The splitter takes the emitted ids canvas by canvas and reports final text deltas by
 * part, never half a UTF-8 character and never the markers themselves. */

typedef struct dg_reply dg_reply;
typedef enum { DG_REPLY_CONTENT = 0, DG_REPLY_REASONING = 1, DG_REPLY_TOOL_CALL = 2 } dg_reply_part;
typedef void (*dg_reply_fn)(void *user, dg_reply_part part, const char *text, size_t len);

/* thinking = 1 when the prompt enabled thinking (the reply may open a thought channel; one the model
 * opens anyway with thinking = 0 is split off all the same), 2 when the prompt itself ends inside an
 * open thought channel (templates whose generation prompt ends with "<|channel>thought\n"): the reply
 * starts as reasoning. Markers are found by their strings in tok's vocabulary; a vocabulary without them
 * gives content only, exactly dg_detokenize(ids, skip_special = 1). Malformed or unterminated tool
 * calls and channels not named "thought" degrade to content text; a thought channel still open at the
 * end stays reasoning. NULL when out of memory. */
dg_reply *dg_reply_new(const dg_tokenizer *tok, int thinking);
void dg_reply_free(dg_reply *r);
/* Feed emitted ids in order (e.g. one committed canvas); fn receives each final delta: CONTENT and
 * REASONING text, or for TOOL_CALL one complete call as a JSON object {"id":"call_N","type":"function",
 * "function":{"name":...,"arguments":"<JSON object text>"}} when its closing marker arrives. fn may be
 * NULL. An id outside the vocabulary is an error (nothing is consumed). */
int dg_reply_push(dg_reply *r, const int32_t *ids, int n, dg_reply_fn fn, void *user, char *err, size_t errlen);
/* End of the reply: flush what is held back. */
int dg_reply_finish(dg_reply *r, dg_reply_fn fn, void *user, char *err, size_t errlen);
/* After finish: the tool calls as an OpenAI "tool_calls" JSON array ("[]" if none; NUL-terminated,
 * owned by r), and the whole content / reasoning text. */
const char *dg_reply_tool_calls_json(const dg_reply *r);
const char *dg_reply_content(const dg_reply *r);
const char *dg_reply_reasoning(const dg_reply *r);

/* Debug taps: when set, every stage of every pass is shown to fn (float32 data, rows x cols),
 * named "embed", "layer.<i>", "router.<i>.ids", "router.<i>.weights", "sc_embed", "input",
 * "norm", "logits". Used by the parity tests; costs nothing when unset. */
typedef void (*dg_tap_fn)(void *user, const char *name, const float *data, int rows, int cols);
void dg_session_set_tap(dg_session *session, dg_tap_fn fn, void *user);

/* ===== quantize / synth: writing GGUF files (src/quant/) ===== */

/* File types: "F32", "F16", "BF16", "Q8_0" (the converter's own), "Q4_0", "Q4_K_M", "Q5_K_M", "Q6_K"
 * (llama-quantize's mixes). Per-tensor types follow llama.cpp's rules (ARCHITECTURE.md, "Quantization
 * rules"). */
typedef struct {
    int tensor;                  /* index of the tensor being written (0-based) */
    int n_tensors;
    const char *name;            /* its GGUF name */
    const char *type;            /* its type ("Q4_K") */
    int tensor_done;             /* 1 when this call ends the tensor */
    uint64_t bytes_done, bytes_total;   /* tensor data written / in all */
    double seconds;              /* since the data started */
} dg_quant_progress;

typedef struct {
    const char *type;            /* file type (see above) */
    int n_threads;               /* <= 0: every CPU */
    int dry_run;                 /* plan only: types, counts, sizes; nothing read or written */
    int synthetic_vocab;         /* no tokenizer.json: write dgemma's synthetic placeholder vocabulary */
    const char *name;            /* general.name (NULL: the input directory's name) */
    /* synth only */
    const char *shape;           /* "26b-a4b" (default), "mid", "tiny" */
    const char *config;          /* a config.json to take the shapes from (instead of shape) */
    uint64_t seed;
    int n_layers, n_experts;     /* 0: as the shape / config */
    int exact;                   /* quantize every random value with the reference quantizers (slow for
                                    K-quants); default: rows assembled from a per-tensor pool of
                                    reference-quantized random blocks */
    uint64_t max_shard_bytes;    /* Hugging Face output: shard size limit (0: 5 GB, transformers' default) */
    /* callbacks (may be NULL) */
    void (*progress)(void *user, const dg_quant_progress *p);
    void (*warn)(void *user, const char *message);
    /* every tensor of the plan, in file order (dry runs too) */
    void (*tensor)(void *user, const char *name, const char *type, int n_dims, const int64_t *ne, uint64_t bytes);
    void *user;
} dg_quant_params;

#define DG_QUANT_MAX_TYPES 16
typedef struct { const char *type; int count; uint64_t bytes; } dg_quant_type_count;
typedef struct {
    int n_tensors;
    int64_t n_params;            /* elements of all tensors */
    uint64_t data_bytes;         /* tensor data (unpadded) */
    uint64_t file_bytes;         /* the file (0 for a dry run) */
    int n_types;
    dg_quant_type_count types[DG_QUANT_MAX_TYPES];
    int n_fallback;              /* tensors whose mix type did not fit their rows */
    char size_label[32];         /* general.size_label */
    double seconds;
} dg_quant_report;

dg_quant_params dg_quant_default_params(void);
/* Convert a Hugging Face DiffusionGemma checkpoint directory (F32 / BF16 / F16 safetensors, sharded or
 * not) into a GGUF for llama.cpp PR #24423 and dgemma: its names, shapes, metadata and tokenizer.
 * Streams one tensor at a time into OUT.tmp-*, renamed to out at the end. With dry_run, in_dir may
 * also be a config.json (or a directory with only one): the plan for those shapes. */
int dg_quantize(const char *in_dir, const char *out, const dg_quant_params *p, dg_quant_report *rep, char *err, size_t errlen);
/* A model with seeded random weights: a .gguf (p->type, synthetic vocabulary) or, for any other out,
 * a Hugging Face directory (BF16 unless p->type is F32 / F16; 5 GB shards). */
int dg_synth(const char *out, const dg_quant_params *p, dg_quant_report *rep, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif /* DGEMMA_H */
