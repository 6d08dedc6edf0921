#define _POSIX_C_SOURCE 200809L
/*
 * mlx.c - MLX checkpoints: the config.json "quantization" block, and module weights as dg_mat views
 * (plain float, or packed codes + scales [+ biases]) with every shape, dtype and parameter checked.
 *
 * Facts carried from mlx / mlx-vlm (read, not copied; see ARCHITECTURE.md "MLX checkpoints"):
 *   - mlx-vlm's quantize_model writes the global {group_size, bits, mode} and, for every module its
 *     predicate returns a dict for, that dict under the module path; nn.quantize passes such a dict to
 *     to_quantized as is, so a per-module entry without "mode" is affine even in an nvfp4 file.
 *   - its loader treats a module as quantized iff "<path>.scales" is in the weights, applying the
 *     per-module entry (false = unquantized) if any, else the global block.
 *   - mx.quantize supports affine bits 1-6 and 8 with groups of 32, 64, 128; mxfp4 = (4, 32),
 *     mxfp8 = (8, 32), nvfp4 = (4, 16).
 */
#include "load/mlx.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "kernels/quants_mlx.h"

/* ===== the quantization block ===== */

const char *dg_mlx_mode_name(dg_dtype mode) {
    switch (mode) {
    case DG_MLX_AFFINE: return "affine";
    case DG_MLX_MXFP4: return "mxfp4";
    case DG_MLX_MXFP8: return "mxfp8";
    case DG_MLX_NVFP4: return "nvfp4";
    default: return "float";
    }
}

static int mode_from_name(const char *s, dg_dtype *out) {
    static const dg_dtype modes[] = {DG_MLX_AFFINE, DG_MLX_MXFP4, DG_MLX_MXFP8, DG_MLX_NVFP4};
    for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++)
        if (!strcmp(s, dg_mlx_mode_name(modes[i]))) { *out = modes[i]; return 0; }
    return -1;
}

/* mlx's per-mode defaults (quantization_params_from_mode) */
static void mode_defaults(dg_mlx_params *p) {
    p->bits = p->mode == DG_MLX_MXFP8 ? 8 : 4;
    p->group = p->mode == DG_MLX_NVFP4 ? 16 : p->mode == DG_MLX_AFFINE ? 64 : 32;
}

/* What mx.quantize accepts for the mode; NULL if (bits, group) is valid, else what is wrong. */
static const char *check_params(const dg_mlx_params *p) {
    if (p->mode == DG_MLX_AFFINE) {
        if (p->bits < 1 || p->bits > 8 || p->bits == 7) return "bits must be 1, 2, 3, 4, 5, 6 or 8";
        if (p->group != 32 && p->group != 64 && p->group != 128) return "group_size must be 32, 64 or 128";
        return NULL;
    }
    if (p->bits != dg_mlx_mode_bits(p->mode) || p->group != dg_mlx_mode_group(p->mode))
        return p->mode == DG_MLX_NVFP4 ? "nvfp4 needs bits 4, group_size 16"
             : p->mode == DG_MLX_MXFP8 ? "mxfp8 needs bits 8, group_size 32" : "mxfp4 needs bits 4, group_size 32";
    return NULL;
}

/* One parameter object: the global block (key NULL) or a module's entry. Absent fields take the mode's
 * defaults, as to_quantized(group_size=None, bits=None) does. */
static int parse_params(json_t *o, const char *file, const char *key, dg_mlx_params *p, char *err, size_t errlen) {
    const char *sep = key ? "." : "", *k = key ? key : "";
    p->quantized = 1;
    p->mode = DG_MLX_AFFINE;
    json_t *m = json_object_get(o, "mode");
    if (m && !json_is_null(m)) {
        if (!json_is_string(m) || mode_from_name(json_string_value(m), &p->mode))
            return dg_fail(err, errlen, "%s: field quantization%s%s.mode must be \"affine\", \"mxfp4\", \"mxfp8\" or \"nvfp4\"", file, sep, k);
    }
    mode_defaults(p);
    static const char *fields[2] = {"bits", "group_size"};
    int *dst[2] = {&p->bits, &p->group};
    for (int i = 0; i < 2; i++) {
        json_t *v = json_object_get(o, fields[i]);
        if (!v || json_is_null(v)) continue;
        if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 4096)
            return dg_fail(err, errlen, "%s: field quantization%s%s.%s must be a positive integer", file, sep, k, fields[i]);
        *dst[i] = (int)json_integer_value(v);
    }
    const char *bad = check_params(p);
    if (bad)
        return dg_fail(err, errlen, "%s: quantization%s%s has mode %s, bits %d, group_size %d: %s", file, sep, k,
                       dg_mlx_mode_name(p->mode), p->bits, p->group, bad);
    return 0;
}

void dg_mlx_quant_free(dg_mlx_quant *q) {
    if (!q) return;
    for (int i = 0; i < q->n; i++) free(q->path[i]);
    free(q->path);
    free(q->mod);
    free(q->file);
    memset(q, 0, sizeof(*q));
}

static int parse_block(dg_mlx_quant *q, json_t *root, char *err, size_t errlen) {
    const char *file = q->file;
    if (!json_is_object(root)) return dg_fail(err, errlen, "%s: not a JSON object", file);
    json_t *b = json_object_get(root, "quantization");
    const char *which = "quantization";
    if (!b || json_is_null(b)) {
        b = json_object_get(root, "quantization_config");
        which = "quantization_config";
    }
    if (!b || json_is_null(b)) return 0;
    if (!json_is_object(b)) return dg_fail(err, errlen, "%s: field %s must be an object", file, which);
    json_t *meth = json_object_get(b, "quant_method");
    if (meth && !json_object_get(b, "bits")) {
        /* a Hugging Face quantization_config (fp8, compressed-tensors, bitsandbytes, ...) */
        return dg_fail(err, errlen, "%s: %s.quant_method = \"%s\": only MLX quantization (mlx-vlm / mlx-lm conversions) is supported",
                       file, which, json_is_string(meth) ? json_string_value(meth) : "?");
    }
    q->present = 1;
    if (parse_params(b, file, NULL, &q->global, err, errlen)) return -1;
    size_t cap = json_object_size(b);
    q->path = calloc(cap ? cap : 1, sizeof(char *));
    q->mod = calloc(cap ? cap : 1, sizeof(dg_mlx_params));
    if (!q->path || !q->mod) return dg_fail(err, errlen, "out of memory");
    const char *key;
    json_t *v;
    json_object_foreach(b, key, v) {
        dg_mlx_params p = q->global;
        if (json_is_object(v) && json_object_size(v)) {
            if (parse_params(v, file, key, &p, err, errlen)) return -1;
        } else if (json_is_false(v) || json_is_object(v)) {
            /* false, and {} (mlx-vlm's loader maps false to {} and skips a module whose entry is empty) */
            p.quantized = 0;
        } else {
            /* true (the global parameters, as if absent: mlx-vlm's loader ignores it), bits / group_size /
             * mode (read above) and unknown scalar fields */
            continue;
        }
        q->path[q->n] = strdup(key);
        if (!q->path[q->n]) return dg_fail(err, errlen, "out of memory");
        q->mod[q->n++] = p;
    }
    return 0;
}

/* Parse a loaded config.json root (NULL: the load failed, je says why) into q, whose file is set. */
static int parse_root(dg_mlx_quant *q, json_t *root, const json_error_t *je, char *err, size_t errlen) {
    int rc = root ? parse_block(q, root, err, errlen)
                  : dg_fail(err, errlen, "%s: cannot read JSON (line %d): %s", q->file, je->line, je->text);
    json_decref(root);
    if (rc) dg_mlx_quant_free(q);
    return rc;
}

static int start(dg_mlx_quant *q, const char *file, char *err, size_t errlen) {
    memset(q, 0, sizeof(*q));
    q->file = strdup(file);
    return q->file ? 0 : dg_fail(err, errlen, "out of memory");
}

int dg_mlx_quant_parse(dg_mlx_quant *q, const char *json_text, const char *file, char *err, size_t errlen) {
    if (start(q, file ? file : "config.json", err, errlen)) return -1;
    json_error_t je;
    return parse_root(q, json_loads(json_text, 0, &je), &je, err, errlen);
}

int dg_mlx_quant_load(dg_mlx_quant *q, const char *model_dir, char *err, size_t errlen) {
    char path[4096];
    snprintf(path, sizeof(path), "%s/config.json", model_dir);
    if (start(q, path, err, errlen)) return -1;
    json_error_t je;
    return parse_root(q, json_load_file(path, 0, &je), &je, err, errlen);
}

const dg_mlx_params *dg_mlx_quant_params(const dg_mlx_quant *q, const char *module) {
    if (!q || !q->present) return NULL;
    for (int i = 0; i < q->n; i++)
        if (!strcmp(q->path[i], module)) return &q->mod[i];
    return &q->global;
}

/* ===== module views ===== */

static const char *file_of(const st_store *st, const st_tensor *t) { return st->files[t->file].path; }

static const st_tensor *find2(const st_store *st, const char *module, const char *suffix) {
    char name[512];
    if (snprintf(name, sizeof(name), "%s.%s", module, suffix) >= (int)sizeof(name)) return NULL;
    return st_find(st, name);
}

/* A heap copy of t's data (malloc returns memory aligned for any element type). */
static void *aligned_copy(const st_tensor *t) {
    void *p = malloc(t->nbytes ? (size_t)t->nbytes : 1);
    if (p) memcpy(p, t->data, (size_t)t->nbytes);
    return p;
}

void dg_mlx_view_free(dg_mlx_view *v) {
    if (!v) return;
    free(v->owned);
    v->owned = NULL;
}

int dg_mlx_bind_vec(const st_store *st, const char *dir, const char *name, int64_t n, dg_vec *out, void **owned,
                    char *err, size_t errlen) {
    *owned = NULL;
    memset(out, 0, sizeof(*out));
    const st_tensor *t = st_find(st, name);
    if (!t) return dg_fail(err, errlen, "%s: tensor '%s' is missing from the checkpoint", dir, name);
    if (dg_st_float_dtype(t->dtype, &out->dt))
        return dg_fail(err, errlen, "%s: tensor '%s' has dtype %s, expected F32, F16 or BF16", file_of(st, t), name, st_dtype_name(t->dtype));
    if (t->ndim != 1 || t->shape[0] != n) {
        char got[128];
        dg_fmt_shape(got, sizeof(got), t->shape, t->ndim);
        return dg_fail(err, errlen, "%s: tensor '%s' has shape %s, expected [%lld]", file_of(st, t), name, got, (long long)n);
    }
    out->data = t->data;
    out->n = n;
    if ((uintptr_t)t->data % st_dtype_size(t->dtype)) {
        if (!(*owned = aligned_copy(t))) return dg_fail(err, errlen, "out of memory");
        out->data = *owned;
    }
    return 0;
}

/* t has the leading dims [experts, rows] (or [rows] for experts == 0) and one more dim. */
static int lead_ok(const st_tensor *t, int64_t experts, int64_t rows) {
    const int nd = experts ? 3 : 2;
    if (t->ndim != nd) return 0;
    if (experts && t->shape[0] != experts) return 0;
    return t->shape[nd - 2] == rows;
}

int dg_mlx_bind(const st_store *st, const dg_mlx_quant *q, const char *dir, const char *module,
                int64_t experts, int64_t rows, int64_t cols, dg_mlx_view *out, char *err, size_t errlen) {
    memset(out, 0, sizeof(*out));
    const int nd = experts ? 3 : 2;
    const int64_t E = experts ? experts : 1;
    char want[128], got[128], got2[128];
    {
        int64_t shape[3] = {experts, rows, cols};
        dg_fmt_shape(want, sizeof(want), experts ? shape : shape + 1, nd);
    }
    if (rows <= 0 || cols <= 0 || experts < 0)
        return dg_fail(err, errlen, "%s: module '%s': bad expected shape %s", dir, module, want);
    char wname[512];
    snprintf(wname, sizeof(wname), "%s.weight", module);
    const st_tensor *w = st_find(st, wname);
    if (!w) w = st_find(st, module);   /* HF's stacked experts have no .weight suffix */
    if (!w) return dg_fail(err, errlen, "%s: tensor '%s' is missing from the checkpoint", dir, wname);
    const char *file = file_of(st, w);
    const st_tensor *sc = find2(st, module, "scales"), *bi = find2(st, module, "biases");
    static const char *unsupported[] = {"bias", "weight_scale_2", "weight_global_scale", "global_scale"};
    for (size_t i = 0; i < sizeof(unsupported) / sizeof(unsupported[0]); i++) {
        const st_tensor *x = find2(st, module, unsupported[i]);
        if (x)
            return dg_fail(err, errlen, "%s: tensor '%s': %s", file_of(st, x), x->name,
                           i == 0 ? "linear biases are not supported (DiffusionGemma has none)"
                                  : "a per-tensor global scale (NVIDIA ModelOpt / compressed-tensors NVFP4) is not supported");
    }
    const dg_mlx_params *cp = dg_mlx_quant_params(q, module);
    const char *cfile = q && q->file ? q->file : "config.json";
    dg_fmt_shape(got, sizeof(got), w->shape, w->ndim);
    out->weight = w;

    dg_dtype fdt;
    if (dg_st_float_dtype(w->dtype, &fdt) == 0) {
        /* ---- an unquantized matrix ---- */
        if (sc || bi)
            return dg_fail(err, errlen, "%s: tensor '%s' exists but '%s' is %s, not packed U32 codes", file,
                           (sc ? sc : bi)->name, w->name, st_dtype_name(w->dtype));
        if (cp && cp != &q->global && cp->quantized)
            return dg_fail(err, errlen, "%s: quantization.%s gives %d-bit %s parameters but '%s' is an unquantized %s tensor",
                           cfile, module, cp->bits, dg_mlx_mode_name(cp->mode), w->name, st_dtype_name(w->dtype));
        if (!lead_ok(w, experts, rows) || w->shape[nd - 1] != cols)
            return dg_fail(err, errlen, "%s: tensor '%s' has shape %s, expected %s", file, w->name, got, want);
        const void *data = w->data;
        if ((uintptr_t)data % st_dtype_size(w->dtype)) {
            if (!(out->owned = aligned_copy(w))) return dg_fail(err, errlen, "out of memory");
            data = out->owned;
        }
        out->m = dg_mat_init(data, fdt, E * rows, cols);
        return 0;
    }

    /* ---- a quantized matrix ---- */
    if (w->dtype != ST_U32)
        return dg_fail(err, errlen, "%s: tensor '%s' has dtype %s, expected F32, F16, BF16 or (quantized) U32", file, w->name, st_dtype_name(w->dtype));
    if (!sc)
        return dg_fail(err, errlen, "%s: tensor '%s' is packed U32 but '%s.scales' is missing", file, w->name, module);
    if (cp && !cp->quantized)
        return dg_fail(err, errlen, "%s: quantization.%s is false (unquantized) but '%s' is packed U32 with '%s'",
                       cfile, module, w->name, sc->name);
    if (!lead_ok(w, experts, rows)) {
        if (experts)
            snprintf(want, sizeof(want), "[%lld, %lld, %lld*bits/32]", (long long)experts, (long long)rows, (long long)cols);
        else
            snprintf(want, sizeof(want), "[%lld, %lld*bits/32]", (long long)rows, (long long)cols);
        return dg_fail(err, errlen, "%s: tensor '%s' has shape %s, expected %s", file, w->name, got, want);
    }
    dg_fmt_shape(got2, sizeof(got2), sc->shape, sc->ndim);
    if (!lead_ok(sc, experts, rows))
        return dg_fail(err, errlen, "%s: tensor '%s' has shape %s, expected the leading dimensions of %s %s",
                       file_of(st, sc), sc->name, got2, w->name, got);
    const int64_t P = w->shape[nd - 1], Gn = sc->shape[nd - 1];
    /* scales type decides the family: float -> affine (with biases), uint8 -> the fp modes (no biases) */
    int sdt;
    if (dg_st_float_dtype(sc->dtype, &fdt) == 0) {
        sdt = (int)fdt;
        if (!bi)
            return dg_fail(err, errlen, "%s: tensor '%s' has %s scales (affine) but '%s.biases' is missing", file, w->name, st_dtype_name(sc->dtype), module);
        if (bi->dtype != sc->dtype)
            return dg_fail(err, errlen, "%s: tensor '%s' has dtype %s but '%s' is %s: scales and biases must have the same dtype",
                           file_of(st, bi), bi->name, st_dtype_name(bi->dtype), sc->name, st_dtype_name(sc->dtype));
        int same = bi->ndim == sc->ndim;
        for (int i = 0; same && i < sc->ndim; i++) same = bi->shape[i] == sc->shape[i];
        if (!same) {
            dg_fmt_shape(got, sizeof(got), bi->shape, bi->ndim);
            return dg_fail(err, errlen, "%s: tensor '%s' has shape %s, expected the shape of '%s' %s", file_of(st, bi), bi->name, got, sc->name, got2);
        }
    } else if (sc->dtype == ST_U8 || sc->dtype == ST_F8_E4M3) {
        sdt = -1;
        if (bi)
            return dg_fail(err, errlen, "%s: tensor '%s' exists but '%s' is %s (an mxfp4/mxfp8/nvfp4 scale): the fp modes have no biases",
                           file_of(st, bi), bi->name, sc->name, st_dtype_name(sc->dtype));
    } else {
        return dg_fail(err, errlen, "%s: tensor '%s' has dtype %s, expected F32, F16, BF16 (affine) or U8 (mxfp4, mxfp8, nvfp4)",
                       file_of(st, sc), sc->name, st_dtype_name(sc->dtype));
    }
    /* bits and group from the shapes: P words hold cols * bits / 32, Gn groups cover cols */
    if (P <= 0 || (P * 32) % cols)
        return dg_fail(err, errlen, "%s: tensor '%s' has shape %s: %lld packed words per row are not a whole number of bits for each of "
                       "%lld columns", file, w->name, got, (long long)P, (long long)cols);
    if (Gn <= 0 || cols % Gn)
        return dg_fail(err, errlen, "%s: tensor '%s' has shape %s: %lld groups per row do not divide the %lld columns of '%s'",
                       file_of(st, sc), sc->name, got2, (long long)Gn, (long long)cols, w->name);
    if (P * 32 / cols > 8)
        return dg_fail(err, errlen, "%s: tensor '%s' has shape %s: %lld bits per column for %lld columns (at most 8)", file, w->name,
                       got, (long long)(P * 32 / cols), (long long)cols);
    dg_mlx_params sp = {1, DG_MLX_AFFINE, (int)(P * 32 / cols), (int)(cols / Gn)};
    if (sdt < 0) {
        sp.mode = sp.group == 16 ? DG_MLX_NVFP4 : sp.bits == 8 ? DG_MLX_MXFP8 : DG_MLX_MXFP4;
        if (sc->dtype == ST_F8_E4M3 && sp.mode != DG_MLX_NVFP4)
            return dg_fail(err, errlen, "%s: tensor '%s' has F8_E4M3 scales, which only nvfp4 (group 16) uses", file_of(st, sc), sc->name);
    }
    if (cp) {
        /* the config's parameters must be the ones the shapes imply */
        const int fam_ok = (sdt < 0) == (cp->mode != DG_MLX_AFFINE);
        if (!fam_ok || cp->bits != sp.bits || cp->group != sp.group)
            return dg_fail(err, errlen, "%s: quantization%s%s says mode %s, bits %d, group_size %d, but '%s' %s (%s) with '%s' %s (%s) "
                           "hold %s %d-bit codes in groups of %d for %lld columns", cfile, cp == &q->global ? "" : ".",
                           cp == &q->global ? "" : module, dg_mlx_mode_name(cp->mode), cp->bits, cp->group, w->name, got,
                           st_dtype_name(w->dtype), sc->name, got2, st_dtype_name(sc->dtype), sdt < 0 ? "fp" : "affine", sp.bits,
                           sp.group, (long long)cols);
        sp.mode = cp->mode;
    }
    const char *bad = check_params(&sp);
    if (bad)
        return dg_fail(err, errlen, "%s: tensor '%s' %s with '%s' %s for %lld columns: %s %d-bit codes in groups of %d: %s", file, w->name,
                       got, sc->name, got2, (long long)cols, dg_mlx_mode_name(sp.mode), sp.bits, sp.group, bad);
    dg_mat *m = &out->m;
    m->data = w->data;
    m->dt = sp.mode;
    m->rows = E * rows;
    m->cols = cols;
    m->row_bytes = (size_t)P * 4;
    m->mlx.scales = sc->data;
    m->mlx.biases = bi ? bi->data : NULL;
    m->mlx.sdt = sdt;
    m->mlx.bits = sp.bits;
    m->mlx.group = sp.group;
    out->scales = sc;
    out->biases = bi;
    return 0;
}
