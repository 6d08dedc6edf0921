/*
 * mlx.h - MLX checkpoints (mlx-vlm / mlx-lm conversions, e.g. mlx-community/diffusiongemma-26B-A4B-it-4bit):
 * the config.json "quantization" block and views of a module's weight matrix by module name.
 *
 * A quantized module P is stored as P.weight (U32, packed codes), P.scales and, for the affine mode,
 * P.biases (see kernels/quants_mlx.h); an unquantized one as a plain float P.weight. Whether a module is
 * quantized is decided by the tensors (P.scales present), as mlx-vlm's loader does; config.json only
 * gives the parameters, which must agree with the shapes:
 *   quantization = {"group_size": G, "bits": B, "mode": M,              global (mode default "affine")
 *                   "<module path>": {"group_size": g, "bits": b},       per-module override; its mode
 *                   "<module path>": false, ...}                          defaults to "affine", NOT to M
 * (false or {} marks a module unquantized, as in mlx-vlm's loader; true takes the global parameters)
 * ("quantization_config" holds the same block; it is read when "quantization" is absent).
 */
#ifndef DG_LOAD_MLX_H
#define DG_LOAD_MLX_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/kernels.h"
#include "load/safetensors.h"

/* Quantization parameters of a module. */
typedef struct {
    int quantized;      /* 0: the config marks the module unquantized (`false`) */
    dg_dtype mode;      /* DG_MLX_AFFINE, DG_MLX_MXFP4, DG_MLX_MXFP8, DG_MLX_NVFP4 */
    int bits, group;
} dg_mlx_params;

/* The parsed "quantization" block. present == 0: the checkpoint has none (a float checkpoint, or a
 * legacy quantized one whose parameters are then inferred from the shapes). */
typedef struct dg_mlx_quant {
    int present;
    char *file;                 /* config.json path, for messages */
    dg_mlx_params global;
    int n;                      /* per-module entries */
    char **path;
    dg_mlx_params *mod;
} dg_mlx_quant;

/* Read the block from <model_dir>/config.json. A missing block is not an error; a malformed one, or a
 * quantization_config of another method (fp8, compressed-tensors, ...), is. */
int dg_mlx_quant_load(dg_mlx_quant *q, const char *model_dir, char *err, size_t errlen);
/* The same from config.json text (file names the source in messages). */
int dg_mlx_quant_parse(dg_mlx_quant *q, const char *json_text, const char *file, char *err, size_t errlen);
void dg_mlx_quant_free(dg_mlx_quant *q);
/* The parameters config.json gives a module: its own entry, else the global block; NULL without a
 * block. */
const dg_mlx_params *dg_mlx_quant_params(const dg_mlx_quant *q, const char *module);

/* A module's weight as a matrix view, and the tensors behind it.
 *
 * Alignment: MLX's safetensors writer (mx.save_safetensors) does not pad its JSON header, so in an MLX
 * file every tensor may start at an odd byte offset. Packed codes and scales are read bytewise
 * (dg_dequant_mlx is unaligned-safe) and are never copied; an unquantized float matrix that is not
 * aligned to its element size is copied to aligned memory (owned, freed by dg_mlx_view_free), since the
 * float kernels load elements directly. In the 26B conversions every matrix is quantized (all its
 * dimensions divide 64), so only the tiny fixtures' float matrices are ever copied. */
typedef struct {
    dg_mat m;                                    /* [E * rows, cols] (E = 1 for a plain matrix) */
    const st_tensor *weight, *scales, *biases;   /* scales / biases NULL when not quantized */
    void *owned;                                 /* aligned copy of weight's data, or NULL */
} dg_mlx_view;

/*
 * Bind module `module` (e.g. "model.decoder.layers.0.self_attn.q_proj") whose logical weight is
 * [experts, rows, cols] (experts = 0 for a 2-D [rows, cols] matrix, e.g. the stacked SwitchLinear
 * "...experts.gate_up_proj" has experts = E). The weight is `<module>.weight`, or `<module>` itself
 * when that is absent (the Hugging Face spelling of the stacked experts). Float (F32/F16/BF16) weights
 * must have exactly that shape; packed ones [.., rows, cols*bits/32] with scales (and biases)
 * [.., rows, cols/group]; bits and group are inferred from the shapes and must agree with the config.
 * q may be NULL (no block). dir names the checkpoint in messages about missing tensors.
 */
int dg_mlx_bind(const st_store *st, const dg_mlx_quant *q, const char *dir, const char *module,
                int64_t experts, int64_t rows, int64_t cols, dg_mlx_view *out, char *err, size_t errlen);

void dg_mlx_view_free(dg_mlx_view *v);

/* A float (F32/F16/BF16) vector `name` of n elements (a norm weight, router scale, per-expert scale,
 * layer_scalar) as a dg_vec; copied to aligned memory (*owned, to free; NULL if not needed) when the
 * file does not align it (see above). */
int dg_mlx_bind_vec(const st_store *st, const char *dir, const char *name, int64_t n, dg_vec *out, void **owned,
                    char *err, size_t errlen);

/* "affine", "mxfp4", "mxfp8", "nvfp4" (or "float" for a float type). */
const char *dg_mlx_mode_name(dg_dtype mode);

#endif
