/*
 * quant.h - internal interface of `dgemma quantize` and `dgemma synth` (src/quant/).
 *
 *   plan.c     the tensor list of a DiffusionGemma model in GGUF terms (llama.cpp PR #24423 names,
 *              ne, order) and the per-tensor type of each file type: the converter's rules for F32,
 *              F16, BF16 and Q8_0 (the conversion/ package), llama-quantize's for the mixes
 *              (src/llama-quant.cpp: llama_tensor_get_type and its fallbacks). ARCHITECTURE.md,
 *              "Quantization rules", has the table.
 *   meta.c     the GGUF metadata: general.*, diffusion-gemma.*, diffusion.*, the tokenizer (from the
 *              checkpoint's tokenizer.json / tokenizer_config.json / chat template, or synthetic).
 *   write.c    the streaming writer: one tensor at a time, rows quantized by a thread pool, a
 *              progress callback; dg_quantize and dg_synth (dgemma.h).
 *   synth.c    synthetic configurations (26B-A4B, mid) and seeded random weights; the HF safetensors
 *              directory writer.
 */
#ifndef DG_QUANT_H
#define DG_QUANT_H

#include <stdint.h>

#include "internal.h"
#include "load/gguf.h"

/* The file types (llama.cpp's LLAMA_FTYPE_* values are what general.file_type holds). */
typedef enum {
    DG_FT_F32 = 0, DG_FT_F16 = 1, DG_FT_Q4_0 = 2, DG_FT_Q8_0 = 7, DG_FT_Q4_K_M = 15, DG_FT_Q5_K_M = 17,
    DG_FT_Q6_K = 18, DG_FT_BF16 = 32
} dg_ftype;

/* "Q4_K_M" -> DG_FT_Q4_K_M (case-insensitive); -1 if unknown. */
int dg_ftype_parse(const char *s);
const char *dg_ftype_name(int ft);
/* 1 for the types llama-quantize makes (the mixes: its tensor order and key order), 0 for the
 * converter's own output types (F32, F16, BF16, Q8_0). */
int dg_ftype_is_mix(int ft);

/* What a tensor is, for the random initialisation of dgemma synth. */
typedef enum {
    DG_QK_MATRIX = 0,      /* a weight matrix (or stack of expert matrices): Gaussian / sqrt(fan_in) */
    DG_QK_EMBED,           /* the token embedding (fan_in = H) */
    DG_QK_ROUTER,          /* router.proj: Gaussian with a spread of a few units in the logits */
    DG_QK_NORM,            /* norm weights, router.scale, per_expert_scale: uniform [0.5, 1.5) */
    DG_QK_SCALAR,          /* layer_scalar: uniform [0.6, 1.4) */
    DG_QK_ROPE             /* rope_freqs (generated) */
} dg_qkind;

typedef struct {
    char name[GGUF_MAX_NAME];  /* GGUF name */
    char hf[160];              /* Hugging Face name ("" for rope_freqs) */
    int n_dims;
    int64_t ne[GGUF_MAX_DIMS]; /* ggml order (the PyTorch shape reversed); unused = 1 */
    int layer;                 /* blk index, -1 for global tensors */
    dg_qkind kind;
    uint32_t type;             /* ggml type id chosen for the file */
    int fallback;              /* 1: the mix's type did not fit the row width (fallback applied) */
    int no_fallback;           /* 1: llama-quantize has no fallback for this (dgemma uses F16) */
    uint64_t nbytes;           /* data bytes in the file (unpadded) */
    int src;                   /* index into the checkpoint's tensors (quantize), -1 otherwise */
    int64_t rows_kept;         /* token_embd: rows written (the converter drops rows past the tokenizer) */
} dg_qtensor;

typedef struct {
    dg_qtensor *t;
    int n, cap;
    int ftype;
    int n_layers, n_experts;
} dg_qplan;

/* Elements of a tensor and rows (product of ne[1..]). */
int64_t dg_qt_numel(const dg_qtensor *t);
int64_t dg_qt_rows(const dg_qtensor *t);

/* The HF tensors of a config (decoder weights, self-conditioning, encoder layer_scalars) in the
 * converter's order for a single-file checkpoint (rope_freqs first, then by name), with GGUF names
 * and ne. */
int dg_qplan_from_config(dg_qplan *p, const dg_config *c, char *err, size_t errlen);
/* Add one tensor (name mapping and ne from the HF name and shape). */
int dg_qplan_add(dg_qplan *p, const char *hf, const char *gguf_name, int n_dims, const int64_t *shape_pt, dg_qkind kind,
                 int src, char *err, size_t errlen);
/* The rope_freqs entry (global_head_dim / 2, F32). */
int dg_qplan_add_rope(dg_qplan *p, const dg_config *c, char *err, size_t errlen);
/* Check the tensors against the config: every expected tensor present once with its shape. */
int dg_qplan_check(const dg_qplan *p, const dg_config *c, const char *where, char *err, size_t errlen);
/* Choose every tensor's type for ftype (and the llama-quantize order for the mixes); warn (if given)
 * receives one line per F16 fallback that llama-quantize would refuse. */
int dg_qplan_types(dg_qplan *p, int ftype, void (*warn)(void *, const char *), void *user, char *err, size_t errlen);
void dg_qplan_free(dg_qplan *p);

/* llama.cpp's parameter-count size label ("128x2.6B"), as gguf-py's size_label() computes it from
 * the tensors of the file. */
void dg_qplan_size_label(const dg_qplan *p, char *out, size_t n);
/* Global head dim and KV heads (of the first full layer; the sliding ones if none). */
void dg_config_global_head(const dg_config *c, int *head_dim, int *n_kv);

/* ===== metadata (meta.c) ===== */

typedef struct {
    const char *dir;           /* checkpoint directory (config.json, generation_config.json, tokenizer
                                  files); NULL for synth */
    const char *config_json;   /* config.json path (for the raw-presence checks); NULL: none */
    const char *gen_json;      /* generation_config.json path; NULL: none */
    const char *name;          /* general.name */
    int synthetic_vocab;       /* write the synthetic vocabulary instead of a tokenizer.json's */
    int64_t vocab_rows;        /* the embedding rows written (the vocabulary size in the file) */
} dg_qmeta_src;

/* Rows of the embedding the converter keeps: min(V, model.vocab + added_tokens of tokenizer.json)
 * (Gemma3Model.modify_tensors); V when there is no tokenizer.json. */
int dg_qmeta_vocab_rows(const char *dir, int64_t V, int64_t *rows, char *err, size_t errlen);
/* Write every key, in the converter's order (the mixes: general.quantization_version and
 * general.file_type moved to the end, as llama-quantize does). */
int dg_qmeta_write(gguf_writer *w, const dg_config *c, const dg_qplan *p, const dg_qmeta_src *src, char *err, size_t errlen);

/* The synthetic Gemma-4-style vocabulary of make_gguf_fixtures.py (n tokens): pieces, types and merges.
 * Returns 0 or -1 (out of memory). Strings point into *store (free it and the arrays). */
typedef struct {
    char **tokens;             /* [n] */
    int32_t *types;            /* [n] */
    char **merges;             /* [n_merges] */
    int n, n_merges;
    char *store;
} dg_synth_vocab;
int dg_synth_vocab_make(dg_synth_vocab *v, int n);
void dg_synth_vocab_free(dg_synth_vocab *v);
/* The placeholder chat template written with the synthetic vocabulary (our own text). */
extern const char dg_synth_chat_template[];

/* ===== synthetic models (synth.c) ===== */

/* Built-in shapes: "26b-a4b" (the published model), "mid" (a ~0.7B model with the same structure),
 * "tiny" (a test model with 256-multiple widths). Fills c (free with dg_config_free). */
int dg_synth_config(dg_config *c, const char *shape, int n_layers, int n_experts, char *err, size_t errlen);
/* --layers / --experts applied to any config: the layers laid out again with the default 5:1 pattern
 * (full attention every 6th and on the last layer) and the config's sliding / full head shapes. */
int dg_synth_override(dg_config *c, int n_layers, int n_experts, char *err, size_t errlen);
/* Write config.json + generation_config.json for c into dir. */
int dg_synth_write_config(const dg_config *c, const char *dir, const char *dtype, char *err, size_t errlen);

/* A 64-bit seed for (seed, tensor, row): every row's values depend on these only. */
uint64_t dg_synth_seed(uint64_t seed, const char *tensor, int64_t row);
/* Fill n floats of a row of tensor t (synthetic values, see dg_qkind). */
void dg_synth_row(const dg_qtensor *t, uint64_t seed, int64_t row, float *out, int64_t n);
/* splitmix64: the next 64 random bits of *state. */
uint64_t dg_synth_rand(uint64_t *state);

#endif
