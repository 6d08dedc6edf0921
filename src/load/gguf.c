/*
 * gguf.c - GGUF reader: mmap, full bounds checking of header, metadata and tensor infos, lookups.
 *
 * Rules follow ggml's reader (ggml/src/gguf.cpp) where it is stricter than the format needs: version
 * 2 or 3, no nested arrays, duplicate keys and tensor names rejected, general.alignment a u32 power of
 * two, tensor names shorter than 64 bytes, at most 4 dims, ne[0] a multiple of the block size, offsets
 * multiples of the alignment. Unlike ggml it does not require tensors to be packed in declaration order;
 * it requires each one inside the file and no two to overlap.
 */
#define _GNU_SOURCE
#include "load/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

/* ===== type tables ===== */

static const char *const k_vtype_names[GGUF_N_VTYPES] = {
    "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64"};
static const uint8_t k_vtype_size[GGUF_N_VTYPES] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

const char *gguf_vtype_name(gguf_vtype t) { return (unsigned)t < GGUF_N_VTYPES ? k_vtype_names[t] : "?"; }

/* Every ggml type a GGUF file may hold: block elements, block bytes, and the engine's dtype (-1: no
 * kernel). Sizes are ggml's type_traits (Q8_1 is 36 bytes there; PyPI gguf 0.19 still says 40). */
typedef struct { const char *name; int64_t blk; uint64_t bytes; int dt; } ggml_type_info;
static const ggml_type_info k_ggml[] = {
    [0] = {"F32", 1, 4, DG_F32},        [1] = {"F16", 1, 2, DG_F16},
    [2] = {"Q4_0", 32, 18, DG_Q4_0},    [3] = {"Q4_1", 32, 20, DG_Q4_1},
    [6] = {"Q5_0", 32, 22, DG_Q5_0},    [7] = {"Q5_1", 32, 24, DG_Q5_1},
    [8] = {"Q8_0", 32, 34, DG_Q8_0},    [9] = {"Q8_1", 32, 36, -1},
    [10] = {"Q2_K", 256, 84, DG_Q2_K},  [11] = {"Q3_K", 256, 110, DG_Q3_K},
    [12] = {"Q4_K", 256, 144, DG_Q4_K}, [13] = {"Q5_K", 256, 176, DG_Q5_K},
    [14] = {"Q6_K", 256, 210, DG_Q6_K}, [15] = {"Q8_K", 256, 292, -1},
    [16] = {"IQ2_XXS", 256, 66, -1},    [17] = {"IQ2_XS", 256, 74, -1},
    [18] = {"IQ3_XXS", 256, 98, -1},    [19] = {"IQ1_S", 256, 50, -1},
    [20] = {"IQ4_NL", 32, 18, DG_IQ4_NL}, [21] = {"IQ3_S", 256, 110, -1},
    [22] = {"IQ2_S", 256, 82, -1},      [23] = {"IQ4_XS", 256, 136, -1},
    [24] = {"I8", 1, 1, -1},            [25] = {"I16", 1, 2, -1},
    [26] = {"I32", 1, 4, -1},           [27] = {"I64", 1, 8, -1},
    [28] = {"F64", 1, 8, -1},           [29] = {"IQ1_M", 256, 56, -1},
    [30] = {"BF16", 1, 2, DG_BF16},     [34] = {"TQ1_0", 256, 54, -1},
    [35] = {"TQ2_0", 256, 66, -1},      [39] = {"MXFP4", 32, 17, -1},
    [40] = {"NVFP4", 64, 36, -1},       [41] = {"Q1_0", 128, 18, -1},
};
#define N_GGML (sizeof(k_ggml) / sizeof(k_ggml[0]))

const char *gguf_ggml_type_name(uint32_t type) { return type < N_GGML ? k_ggml[type].name : NULL; }

int gguf_ggml_block(uint32_t type, int64_t *elems, uint64_t *bytes) {
    if (type >= N_GGML || !k_ggml[type].name) return -1;
    *elems = k_ggml[type].blk;
    *bytes = k_ggml[type].bytes;
    return 0;
}

int gguf_ggml_type_of(dg_dtype dt) {
    for (uint32_t i = 0; i < N_GGML; i++)
        if (k_ggml[i].name && k_ggml[i].dt == (int)dt) return (int)i;
    return -1;
}

/* ===== bounds-checked cursor ===== */

typedef struct {
    const uint8_t *p;
    uint64_t size, pos;
    const char *path;
    char *err;
    size_t errlen;
    char ctx[160];      /* what is being read: "key 'x' (at byte 40)", for messages */
} cur;

static int cfail(cur *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int cfail(cur *c, const char *fmt, ...) {
    char msg[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return dg_fail(c->err, c->errlen, "%s: %s%s%s", c->path, c->ctx, c->ctx[0] ? ": " : "", msg);
}

static int need(cur *c, uint64_t n, const char *field) {
    if (n > c->size - c->pos)
        return cfail(c, "truncated: %s at byte offset %llu needs %llu bytes, the file has %llu left", field,
                     (unsigned long long)c->pos, (unsigned long long)n, (unsigned long long)(c->size - c->pos));
    return 0;
}

static int rd(cur *c, void *out, uint64_t n, const char *field) {
    if (need(c, n, field)) return -1;
    memcpy(out, c->p + c->pos, n);
    c->pos += n;
    return 0;
}

static int rd_str(cur *c, gguf_str *s, const char *field) {
    uint64_t len;
    char f[64];
    snprintf(f, sizeof(f), "%s length", field);
    if (rd(c, &len, 8, f)) return -1;
    if (len > c->size - c->pos)
        return cfail(c, "%s at byte offset %llu has length %llu, past the end of the file (%llu bytes left)", field,
                     (unsigned long long)(c->pos - 8), (unsigned long long)len, (unsigned long long)(c->size - c->pos));
    s->s = (const char *)c->p + c->pos;
    s->len = len;
    c->pos += len;
    return 0;
}

static char *dup_str(gguf_str s) {
    char *d = malloc(s.len + 1);
    if (d) {
        memcpy(d, s.s, s.len);
        d[s.len] = 0;
    }
    return d;
}

/* ===== parsing ===== */

typedef struct { const char *key; int64_t idx; } name_idx;
static int cmp_name_idx(const void *a, const void *b) {
    const name_idx *x = a, *y = b;
    const int c = strcmp(x->key, y->key);
    return c ? c : (x->idx > y->idx) - (x->idx < y->idx);
}

/* Sort indices of n names; report the first duplicate (its two indices) through dup_a / dup_b. */
static int64_t *sort_names(int64_t n, int64_t *dup_a, int64_t *dup_b, const char *(*get)(const void *, int64_t),
                           const void *arr) {
    name_idx *tmp = malloc(sizeof(name_idx) * (size_t)(n ? n : 1));
    int64_t *out = malloc(sizeof(int64_t) * (size_t)(n ? n : 1));
    if (!tmp || !out) { free(tmp); free(out); return NULL; }
    for (int64_t i = 0; i < n; i++) { tmp[i].key = get(arr, i); tmp[i].idx = i; }
    qsort(tmp, (size_t)n, sizeof(name_idx), cmp_name_idx);
    *dup_a = *dup_b = -1;
    for (int64_t i = 0; i < n; i++) {
        out[i] = tmp[i].idx;
        if (i && *dup_a < 0 && !strcmp(tmp[i].key, tmp[i - 1].key)) { *dup_a = tmp[i - 1].idx; *dup_b = tmp[i].idx; }
    }
    free(tmp);
    return out;
}
static const char *kv_key(const void *arr, int64_t i) { return ((const gguf_kv *)arr)[i].key; }
static const char *t_name(const void *arr, int64_t i) { return ((const gguf_tensor *)arr)[i].name; }

static int parse_kv(cur *c, gguf_kv *kv, uint64_t i) {
    gguf_str key;
    kv->offset = c->pos;
    snprintf(c->ctx, sizeof(c->ctx), "metadata entry #%llu (at byte %llu)", (unsigned long long)i, (unsigned long long)c->pos);
    if (rd_str(c, &key, "key")) return -1;
    if (memchr(key.s, 0, key.len)) return cfail(c, "key contains a NUL byte");
    if (!(kv->key = dup_str(key))) return cfail(c, "out of memory");
    snprintf(c->ctx, sizeof(c->ctx), "key '%.80s' (at byte %llu)", kv->key, (unsigned long long)kv->offset);
    int32_t t;
    if (rd(c, &t, 4, "value type")) return -1;
    if (t < 0 || t >= GGUF_N_VTYPES) return cfail(c, "unknown value type %d at byte offset %llu", t, (unsigned long long)(c->pos - 4));
    kv->type = (gguf_vtype)t;
    kv->arr_type = kv->type;
    kv->n = 1;
    if (kv->type == GGUF_ARRAY) {
        int32_t et;
        if (rd(c, &et, 4, "array element type")) return -1;
        if (et < 0 || et >= GGUF_N_VTYPES)
            return cfail(c, "unknown array element type %d at byte offset %llu", et, (unsigned long long)(c->pos - 4));
        if (et == GGUF_ARRAY) return cfail(c, "nested arrays are not supported (byte offset %llu)", (unsigned long long)(c->pos - 4));
        kv->arr_type = (gguf_vtype)et;
        if (rd(c, &kv->n, 8, "array length")) return -1;
        const uint64_t left = c->size - c->pos;
        if (kv->arr_type == GGUF_STRING) {
            if (kv->n > left / 8)
                return cfail(c, "array of %llu strings cannot fit in the %llu bytes left (byte offset %llu)",
                             (unsigned long long)kv->n, (unsigned long long)left, (unsigned long long)(c->pos - 8));
            kv->data = c->p + c->pos;
            kv->strs = malloc(sizeof(gguf_str) * (size_t)(kv->n ? kv->n : 1));
            if (!kv->strs) return cfail(c, "out of memory for %llu strings", (unsigned long long)kv->n);
            for (uint64_t j = 0; j < kv->n; j++) {
                char f[48];
                snprintf(f, sizeof(f), "string %llu", (unsigned long long)j);
                if (rd_str(c, &kv->strs[j], f)) return -1;
            }
        } else {
            const uint64_t es = k_vtype_size[kv->arr_type];
            if (kv->n > left / es)
                return cfail(c, "array of %llu %s values (%llu bytes each) runs past the end of the file (%llu bytes left)",
                             (unsigned long long)kv->n, k_vtype_names[kv->arr_type], (unsigned long long)es, (unsigned long long)left);
            kv->data = c->p + c->pos;
            c->pos += kv->n * es;
        }
    } else if (kv->type == GGUF_STRING) {
        kv->strs = malloc(sizeof(gguf_str));
        if (!kv->strs) return cfail(c, "out of memory");
        if (rd_str(c, kv->strs, "string value")) return -1;
        kv->data = (const uint8_t *)kv->strs->s;
    } else {
        if (need(c, k_vtype_size[kv->type], "value")) return -1;
        kv->data = c->p + c->pos;
        c->pos += k_vtype_size[kv->type];
    }
    c->ctx[0] = 0;
    return 0;
}

static int parse_tensor(cur *c, gguf_tensor *t, uint64_t i) {
    gguf_str name;
    t->info_offset = c->pos;
    snprintf(c->ctx, sizeof(c->ctx), "tensor info #%llu (at byte %llu)", (unsigned long long)i, (unsigned long long)c->pos);
    if (rd_str(c, &name, "tensor name")) return -1;
    if (name.len >= GGUF_MAX_NAME) return cfail(c, "tensor name of %llu bytes (at most %d)", (unsigned long long)name.len, GGUF_MAX_NAME - 1);
    if (memchr(name.s, 0, name.len)) return cfail(c, "tensor name contains a NUL byte");
    if (!(t->name = dup_str(name))) return cfail(c, "out of memory");
    snprintf(c->ctx, sizeof(c->ctx), "tensor '%s' (info at byte %llu)", t->name, (unsigned long long)t->info_offset);
    uint32_t nd;
    if (rd(c, &nd, 4, "n_dims")) return -1;
    if (nd > GGUF_MAX_DIMS) return cfail(c, "n_dims %u at byte offset %llu (at most %d)", nd, (unsigned long long)(c->pos - 4), GGUF_MAX_DIMS);
    t->n_dims = (int)nd;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) t->ne[d] = 1;
    uint64_t nel = 1;
    for (uint32_t d = 0; d < nd; d++) {
        if (rd(c, &t->ne[d], 8, "ne")) return -1;
        if (t->ne[d] < 0) return cfail(c, "ne[%u] = %lld is negative (byte offset %llu)", d, (long long)t->ne[d], (unsigned long long)(c->pos - 8));
        if (t->ne[d] && nel > (uint64_t)INT64_MAX / (uint64_t)t->ne[d])
            return cfail(c, "element count overflows at ne[%u] = %lld (byte offset %llu)", d, (long long)t->ne[d], (unsigned long long)(c->pos - 8));
        nel *= (uint64_t)t->ne[d];
    }
    int32_t type;
    if (rd(c, &type, 4, "type")) return -1;
    int64_t blk;
    uint64_t bb;
    if (type < 0 || gguf_ggml_block((uint32_t)type, &blk, &bb))
        return cfail(c, "unknown ggml type id %d at byte offset %llu", type, (unsigned long long)(c->pos - 4));
    t->ggml_type = (uint32_t)type;
    t->dt = k_ggml[type].dt;
    if (t->ne[0] % blk)
        return cfail(c, "ne[0] = %lld is not a multiple of the %s block size %lld", (long long)t->ne[0], k_ggml[type].name, (long long)blk);
    /* bytes = ne0/blk*bb * ne1*ne2*ne3; nel < 2^63 and bb/blk <= 8, but check anyway */
    uint64_t nb = (uint64_t)(t->ne[0] / blk);
    if (nb && bb > UINT64_MAX / nb) return cfail(c, "row size overflows");
    uint64_t bytes = nb * bb;
    for (int d = 1; d < GGUF_MAX_DIMS; d++) {
        if (t->ne[d] && bytes > UINT64_MAX / (uint64_t)t->ne[d]) return cfail(c, "byte size overflows at ne[%d]", d);
        bytes *= (uint64_t)t->ne[d];
    }
    t->nbytes = bytes;
    if (rd(c, &t->offset, 8, "offset")) return -1;
    c->ctx[0] = 0;
    return 0;
}

typedef struct { uint64_t begin, end; int64_t idx; } span;
static int cmp_span(const void *a, const void *b) {
    const span *x = a, *y = b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : (x->end > y->end) - (x->end < y->end);
}

static int parse(gguf_file *g, char *err, size_t errlen) {
    cur c = {.p = g->base, .size = g->size, .pos = 0, .path = g->path, .err = err, .errlen = errlen};
    c.ctx[0] = 0;
    char magic[4];
    if (rd(&c, magic, 4, "magic")) return -1;
    if (memcmp(magic, "GGUF", 4))
        return cfail(&c, "not a GGUF file: magic at byte 0 is %02x %02x %02x %02x, expected \"GGUF\"", (uint8_t)magic[0],
                     (uint8_t)magic[1], (uint8_t)magic[2], (uint8_t)magic[3]);
    if (rd(&c, &g->version, 4, "version")) return -1;
    if (g->version && !(g->version & 0xFFFF))
        return cfail(&c, "version field at byte 4 is 0x%08x: a big-endian GGUF file, not supported", g->version);
    if (g->version == 1) return cfail(&c, "GGUF version 1 at byte 4 is not supported (only 2 and 3)");
    if (g->version < 2 || g->version > 3) return cfail(&c, "unsupported GGUF version %u at byte 4 (only 2 and 3)", g->version);
    if (rd(&c, &g->n_tensors, 8, "tensor count") || rd(&c, &g->n_kv, 8, "metadata count")) return -1;
    /* sane limits: a kv takes at least 13 bytes (key length, type, one value byte), a tensor info at
     * least 32; counts that cannot fit in the file are corrupt (and must not drive allocations) */
    const uint64_t left = g->size - c.pos;
    if (g->n_kv > left / 13)
        return cfail(&c, "metadata count %llu at byte 16 cannot fit in the %llu bytes left", (unsigned long long)g->n_kv, (unsigned long long)left);
    if (g->n_tensors > left / 32)
        return cfail(&c, "tensor count %llu at byte 8 cannot fit in the %llu bytes left", (unsigned long long)g->n_tensors, (unsigned long long)left);
    g->kv = calloc((size_t)(g->n_kv ? g->n_kv : 1), sizeof(gguf_kv));
    g->tensors = calloc((size_t)(g->n_tensors ? g->n_tensors : 1), sizeof(gguf_tensor));
    if (!g->kv || !g->tensors) return cfail(&c, "out of memory");
    for (uint64_t i = 0; i < g->n_kv; i++)
        if (parse_kv(&c, &g->kv[i], i)) return -1;
    int64_t da, db;
    g->kv_sorted = sort_names((int64_t)g->n_kv, &da, &db, kv_key, g->kv);
    if (!g->kv_sorted) return cfail(&c, "out of memory");
    if (da >= 0)
        return cfail(&c, "duplicate metadata key '%s' at byte offsets %llu and %llu", g->kv[da].key,
                     (unsigned long long)g->kv[da].offset, (unsigned long long)g->kv[db].offset);
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    const gguf_kv *al = gguf_find_kv(g, "general.alignment");
    if (al) {
        uint32_t a = 0;
        if (al->type != GGUF_UINT32)
            return cfail(&c, "key 'general.alignment' (at byte %llu) is %s, expected u32", (unsigned long long)al->offset,
                         al->type == GGUF_ARRAY ? "an array" : k_vtype_names[al->type]);
        memcpy(&a, al->data, 4);
        if (!a || (a & (a - 1)))
            return cfail(&c, "key 'general.alignment' (at byte %llu) is %u, not a power of two", (unsigned long long)al->offset, a);
        g->alignment = a;
    }
    for (uint64_t i = 0; i < g->n_tensors; i++)
        if (parse_tensor(&c, &g->tensors[i], i)) return -1;
    g->t_sorted = sort_names((int64_t)g->n_tensors, &da, &db, t_name, g->tensors);
    if (!g->t_sorted) return cfail(&c, "out of memory");
    if (da >= 0)
        return cfail(&c, "duplicate tensor name '%s' (tensor infos at byte offsets %llu and %llu)", g->tensors[da].name,
                     (unsigned long long)g->tensors[da].info_offset, (unsigned long long)g->tensors[db].info_offset);
    /* the data section starts at the next multiple of the alignment */
    const uint64_t rem = c.pos % g->alignment;
    g->data_offset = c.pos + (rem ? g->alignment - rem : 0);
    if (g->data_offset < c.pos) return cfail(&c, "data section offset overflows");
    span *sp = malloc(sizeof(span) * (size_t)(g->n_tensors ? g->n_tensors : 1));
    if (!sp) return cfail(&c, "out of memory");
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        gguf_tensor *t = &g->tensors[i];
        snprintf(c.ctx, sizeof(c.ctx), "tensor '%s' (info at byte %llu)", t->name, (unsigned long long)t->info_offset);
        if (t->offset % g->alignment) {
            free(sp);
            return cfail(&c, "data offset %llu is not a multiple of the alignment %u", (unsigned long long)t->offset, g->alignment);
        }
        const uint64_t room = g->size >= g->data_offset ? g->size - g->data_offset : 0;
        if (t->offset > room || t->nbytes > room - t->offset) {
            free(sp);
            return cfail(&c, "data [%llu, +%llu) relative to the data section at byte %llu runs past the end of the file (%llu bytes)",
                         (unsigned long long)t->offset, (unsigned long long)t->nbytes, (unsigned long long)g->data_offset,
                         (unsigned long long)g->size);
        }
        t->data = g->base + g->data_offset + t->offset;
        sp[i] = (span){t->offset, t->offset + t->nbytes, (int64_t)i};
    }
    c.ctx[0] = 0;
    qsort(sp, (size_t)g->n_tensors, sizeof(span), cmp_span);
    for (uint64_t i = 1; i < g->n_tensors; i++)
        if (sp[i].begin < sp[i - 1].end && sp[i].end > sp[i].begin) {
            const gguf_tensor *a = &g->tensors[sp[i - 1].idx], *b = &g->tensors[sp[i].idx];
            free(sp);
            return cfail(&c, "tensor '%s' data [%llu, %llu) overlaps tensor '%s' data [%llu, %llu)", b->name,
                         (unsigned long long)b->offset, (unsigned long long)(b->offset + b->nbytes), a->name,
                         (unsigned long long)a->offset, (unsigned long long)(a->offset + a->nbytes));
        }
    free(sp);
    return 0;
}

static int open_common(gguf_file *g, char *err, size_t errlen) {
    if (parse(g, err, errlen)) {
        gguf_close(g);
        return -1;
    }
    return 0;
}

int gguf_open_mem(gguf_file *g, const void *buf, size_t size, const char *name, char *err, size_t errlen) {
    memset(g, 0, sizeof(*g));
    g->path = strdup(name ? name : "(memory)");
    if (!g->path) return dg_fail(err, errlen, "out of memory");
    g->base = buf;
    g->size = size;
    return open_common(g, err, errlen);
}

int gguf_open(gguf_file *g, const char *path, char *err, size_t errlen) {
    memset(g, 0, sizeof(*g));
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return dg_fail(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        close(fd);
        return dg_fail(err, errlen, "%s: stat failed: %s", path, strerror(errno));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return dg_fail(err, errlen, "%s: not a regular file", path);
    }
    const size_t size = (size_t)sb.st_size;
    if (size < 24) {
        close(fd);
        return dg_fail(err, errlen, "%s: truncated GGUF file (%zu bytes; the header alone is 24)", path, size);
    }
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) return dg_fail(err, errlen, "%s: mmap failed: %s", path, strerror(errno));
    g->path = strdup(path);
    if (!g->path) {
        munmap(map, size);
        return dg_fail(err, errlen, "out of memory");
    }
    g->base = map;
    g->size = size;
    g->mapped = 1;
    return open_common(g, err, errlen);
}

void gguf_close(gguf_file *g) {
    if (g->kv)
        for (uint64_t i = 0; i < g->n_kv; i++) {
            free(g->kv[i].key);
            free(g->kv[i].strs);
        }
    if (g->tensors)
        for (uint64_t i = 0; i < g->n_tensors; i++) free(g->tensors[i].name);
    free(g->kv);
    free(g->tensors);
    free(g->kv_sorted);
    free(g->t_sorted);
    if (g->mapped && g->base) munmap((void *)g->base, g->size);
    free(g->path);
    memset(g, 0, sizeof(*g));
}

/* ===== lookups ===== */

static int64_t bsearch_idx(const int64_t *sorted, int64_t n, const char *name, const char *(*get)(const void *, int64_t), const void *arr) {
    int64_t lo = 0, hi = n - 1;
    while (lo <= hi) {
        const int64_t mid = lo + (hi - lo) / 2;
        const int c = strcmp(get(arr, sorted[mid]), name);
        if (!c) return sorted[mid];
        if (c < 0) lo = mid + 1; else hi = mid - 1;
    }
    return -1;
}

const gguf_kv *gguf_find_kv(const gguf_file *g, const char *key) {
    if (!g->kv_sorted) return NULL;
    const int64_t i = bsearch_idx(g->kv_sorted, (int64_t)g->n_kv, key, kv_key, g->kv);
    return i < 0 ? NULL : &g->kv[i];
}

const gguf_tensor *gguf_find_tensor(const gguf_file *g, const char *name) {
    if (!g->t_sorted) return NULL;
    const int64_t i = bsearch_idx(g->t_sorted, (int64_t)g->n_tensors, name, t_name, g->tensors);
    return i < 0 ? NULL : &g->tensors[i];
}

/* ===== typed access ===== */

static int is_int_type(gguf_vtype t) {
    return t == GGUF_UINT8 || t == GGUF_INT8 || t == GGUF_UINT16 || t == GGUF_INT16 || t == GGUF_UINT32 ||
           t == GGUF_INT32 || t == GGUF_UINT64 || t == GGUF_INT64;
}

/* Element i of kv as a signed integer; u64 above INT64_MAX is reported as not fitting (-2). */
static int elem_int(const gguf_kv *kv, uint64_t i, int64_t *out) {
    const gguf_vtype t = kv->arr_type;
    if (!is_int_type(t) || i >= kv->n) return -1;
    const uint8_t *p = kv->data + i * k_vtype_size[t];
    switch (t) {
    case GGUF_UINT8: *out = p[0]; return 0;
    case GGUF_INT8: *out = (int8_t)p[0]; return 0;
    case GGUF_UINT16: { uint16_t v; memcpy(&v, p, 2); *out = v; return 0; }
    case GGUF_INT16: { int16_t v; memcpy(&v, p, 2); *out = v; return 0; }
    case GGUF_UINT32: { uint32_t v; memcpy(&v, p, 4); *out = v; return 0; }
    case GGUF_INT32: { int32_t v; memcpy(&v, p, 4); *out = v; return 0; }
    case GGUF_INT64: { int64_t v; memcpy(&v, p, 8); *out = v; return 0; }
    default: { uint64_t v; memcpy(&v, p, 8); if (v > (uint64_t)INT64_MAX) return -2; *out = (int64_t)v; return 0; }
    }
}

int gguf_kv_int(const gguf_kv *kv, uint64_t i, int64_t *out) { return elem_int(kv, i, out) ? -1 : 0; }

int gguf_kv_bool(const gguf_kv *kv, uint64_t i, int *out) {
    if (kv->arr_type != GGUF_BOOL || i >= kv->n) return -1;
    *out = kv->data[i] != 0;
    return 0;
}

int gguf_kv_float(const gguf_kv *kv, uint64_t i, double *out) {
    if (i >= kv->n) return -1;
    if (kv->arr_type == GGUF_FLOAT32) {
        float f;
        memcpy(&f, kv->data + i * 4, 4);
        *out = f;
        return 0;
    }
    if (kv->arr_type == GGUF_FLOAT64) {
        memcpy(out, kv->data + i * 8, 8);
        return 0;
    }
    return -1;
}

int gguf_kv_str(const gguf_kv *kv, uint64_t i, gguf_str *out) {
    if (kv->arr_type != GGUF_STRING || i >= kv->n || !kv->strs) return -1;
    *out = kv->strs[i];
    return 0;
}

static const char *type_desc(const gguf_kv *kv, char *buf, size_t n) {
    if (kv->type == GGUF_ARRAY) snprintf(buf, n, "an array of %s", k_vtype_names[kv->arr_type]);
    else snprintf(buf, n, "%s", k_vtype_names[kv->type]);
    return buf;
}

static const gguf_kv *lookup(const gguf_file *g, const char *key, char *err, size_t errlen) {
    const gguf_kv *kv = gguf_find_kv(g, key);
    if (!kv) dg_fail(err, errlen, "%s: metadata key '%s' is missing", g->path, key);
    return kv;
}

int gguf_get_int(const gguf_file *g, const char *key, int64_t lo, int64_t hi, int64_t *out, char *err, size_t errlen) {
    const gguf_kv *kv = lookup(g, key, err, errlen);
    if (!kv) return -1;
    char td[48];
    if (kv->type == GGUF_ARRAY || !is_int_type(kv->type))
        return dg_fail(err, errlen, "%s: key '%s' (at byte %llu) is %s, expected an integer", g->path, key,
                       (unsigned long long)kv->offset, type_desc(kv, td, sizeof(td)));
    int64_t v;
    if (elem_int(kv, 0, &v) || v < lo || v > hi)
        return dg_fail(err, errlen, "%s: key '%s' (at byte %llu) = %lld is out of range [%lld, %lld]", g->path, key,
                       (unsigned long long)kv->offset, (long long)v, (long long)lo, (long long)hi);
    *out = v;
    return 0;
}

int gguf_get_float(const gguf_file *g, const char *key, double *out, char *err, size_t errlen) {
    const gguf_kv *kv = lookup(g, key, err, errlen);
    if (!kv) return -1;
    char td[48];
    if (kv->type == GGUF_ARRAY || gguf_kv_float(kv, 0, out))
        return dg_fail(err, errlen, "%s: key '%s' (at byte %llu) is %s, expected f32 or f64", g->path, key,
                       (unsigned long long)kv->offset, type_desc(kv, td, sizeof(td)));
    return 0;
}

int gguf_get_bool(const gguf_file *g, const char *key, int *out, char *err, size_t errlen) {
    const gguf_kv *kv = lookup(g, key, err, errlen);
    if (!kv) return -1;
    char td[48];
    if (kv->type != GGUF_BOOL)
        return dg_fail(err, errlen, "%s: key '%s' (at byte %llu) is %s, expected bool", g->path, key,
                       (unsigned long long)kv->offset, type_desc(kv, td, sizeof(td)));
    *out = kv->data[0] != 0;
    return 0;
}

int gguf_get_str(const gguf_file *g, const char *key, gguf_str *out, char *err, size_t errlen) {
    const gguf_kv *kv = lookup(g, key, err, errlen);
    if (!kv) return -1;
    char td[48];
    if (kv->type != GGUF_STRING)
        return dg_fail(err, errlen, "%s: key '%s' (at byte %llu) is %s, expected string", g->path, key,
                       (unsigned long long)kv->offset, type_desc(kv, td, sizeof(td)));
    *out = kv->strs[0];
    return 0;
}

int gguf_get_arr(const gguf_file *g, const char *key, gguf_vtype *elem, uint64_t *n, char *err, size_t errlen) {
    const gguf_kv *kv = lookup(g, key, err, errlen);
    if (!kv) return -1;
    char td[48];
    if (kv->type != GGUF_ARRAY)
        return dg_fail(err, errlen, "%s: key '%s' (at byte %llu) is %s, expected an array", g->path, key,
                       (unsigned long long)kv->offset, type_desc(kv, td, sizeof(td)));
    *elem = kv->arr_type;
    *n = kv->n;
    return 0;
}
