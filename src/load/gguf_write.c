/*
 * gguf_write.c - streaming GGUF v3 writer (for `dgemma quantize` / `dgemma synth`).
 *
 * The metadata and tensor infos are built in memory (they are small); the header goes out when the
 * first tensor data arrives, then each tensor's bytes are streamed in declaration order and padded to
 * the alignment. Offsets are computed from the declared shapes, so a tensor's data must be exactly its
 * declared size. A general.alignment key, if the caller writes one, must match the writer's alignment.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "load/gguf.h"

typedef struct {
    char *name;
    uint64_t nbytes, offset;
} wtensor;

struct gguf_writer {
    char *path;
    FILE *f;
    uint32_t alignment;
    uint8_t *meta;            /* serialized kv pairs */
    size_t meta_len, meta_cap;
    uint8_t *infos;           /* serialized tensor infos */
    size_t infos_len, infos_cap;
    uint64_t n_kv, n_tensors;
    char **keys;              /* for duplicate checks */
    wtensor *tensors;
    uint64_t data_size;       /* running, padded */
    uint64_t cur, cur_written;/* tensor being streamed, bytes of it so far */
    int header_done, failed;
    char err[512];
};

static int wfail(gguf_writer *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int wfail(gguf_writer *w, const char *fmt, ...) {
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (!w->failed) snprintf(w->err, sizeof(w->err), "%s: %s", w->path, msg);
    w->failed = 1;
    return -1;
}

const char *gguf_writer_error(const gguf_writer *w) { return w->err; }

static int grow(gguf_writer *w, uint8_t **buf, size_t *len, size_t *cap, const void *p, size_t n) {
    if (n > *cap - *len) {
        size_t nc = *cap ? *cap : 4096;
        while (nc - *len < n) {
            if (nc > SIZE_MAX / 2) return wfail(w, "metadata too large");
            nc *= 2;
        }
        uint8_t *nb = realloc(*buf, nc);
        if (!nb) return wfail(w, "out of memory");
        *buf = nb;
        *cap = nc;
    }
    if (n) memcpy(*buf + *len, p, n);
    *len += n;
    return 0;
}
static int put_meta(gguf_writer *w, const void *p, size_t n) { return grow(w, &w->meta, &w->meta_len, &w->meta_cap, p, n); }
static int put_info(gguf_writer *w, const void *p, size_t n) { return grow(w, &w->infos, &w->infos_len, &w->infos_cap, p, n); }

static int put_str(gguf_writer *w, int meta, const char *s, uint64_t len) {
    if (meta) return put_meta(w, &len, 8) || put_meta(w, s, (size_t)len) ? -1 : 0;
    return put_info(w, &len, 8) || put_info(w, s, (size_t)len) ? -1 : 0;
}

gguf_writer *gguf_writer_open(const char *path, uint32_t alignment, char *err, size_t errlen) {
    if (!alignment) alignment = GGUF_DEFAULT_ALIGNMENT;
    if (alignment & (alignment - 1)) {
        dg_fail(err, errlen, "%s: alignment %u is not a power of two", path, alignment);
        return NULL;
    }
    gguf_writer *w = calloc(1, sizeof(*w));
    if (!w || !(w->path = strdup(path))) {
        free(w);
        dg_fail(err, errlen, "%s: out of memory", path);
        return NULL;
    }
    w->f = fopen(path, "wb");
    if (!w->f) {
        dg_fail(err, errlen, "%s: cannot create: %s", path, strerror(errno));
        free(w->path);
        free(w);
        return NULL;
    }
    w->alignment = alignment;
    return w;
}

/* key header: checks, duplicate detection, the key string and the value type */
static int begin_kv(gguf_writer *w, const char *key, gguf_vtype t) {
    if (w->failed) return -1;
    if (w->header_done) return wfail(w, "key '%s' added after tensor data started", key);
    if (!key || !*key) return wfail(w, "empty metadata key");
    for (uint64_t i = 0; i < w->n_kv; i++)
        if (!strcmp(w->keys[i], key)) return wfail(w, "duplicate metadata key '%s'", key);
    char **nk = realloc(w->keys, sizeof(char *) * (size_t)(w->n_kv + 1));
    if (!nk) return wfail(w, "out of memory");
    w->keys = nk;
    if (!(w->keys[w->n_kv] = strdup(key))) return wfail(w, "out of memory");
    w->n_kv++;
    const int32_t ti = (int32_t)t;
    return put_str(w, 1, key, strlen(key)) || put_meta(w, &ti, 4) ? -1 : 0;
}

static int scalar(gguf_writer *w, const char *key, gguf_vtype t, const void *v, size_t n) {
    return begin_kv(w, key, t) || put_meta(w, v, n) ? -1 : 0;
}

int gguf_w_u8(gguf_writer *w, const char *key, uint8_t v) { return scalar(w, key, GGUF_UINT8, &v, 1); }
int gguf_w_i8(gguf_writer *w, const char *key, int8_t v) { return scalar(w, key, GGUF_INT8, &v, 1); }
int gguf_w_u16(gguf_writer *w, const char *key, uint16_t v) { return scalar(w, key, GGUF_UINT16, &v, 2); }
int gguf_w_i16(gguf_writer *w, const char *key, int16_t v) { return scalar(w, key, GGUF_INT16, &v, 2); }
int gguf_w_i32(gguf_writer *w, const char *key, int32_t v) { return scalar(w, key, GGUF_INT32, &v, 4); }
int gguf_w_u64(gguf_writer *w, const char *key, uint64_t v) { return scalar(w, key, GGUF_UINT64, &v, 8); }
int gguf_w_i64(gguf_writer *w, const char *key, int64_t v) { return scalar(w, key, GGUF_INT64, &v, 8); }
int gguf_w_f32(gguf_writer *w, const char *key, float v) { return scalar(w, key, GGUF_FLOAT32, &v, 4); }
int gguf_w_f64(gguf_writer *w, const char *key, double v) { return scalar(w, key, GGUF_FLOAT64, &v, 8); }

int gguf_w_u32(gguf_writer *w, const char *key, uint32_t v) {
    if (key && !strcmp(key, "general.alignment") && v != w->alignment)
        return wfail(w, "general.alignment %u differs from the writer's alignment %u", v, w->alignment);
    return scalar(w, key, GGUF_UINT32, &v, 4);
}

int gguf_w_bool(gguf_writer *w, const char *key, int v) {
    const uint8_t b = v != 0;
    return scalar(w, key, GGUF_BOOL, &b, 1);
}

int gguf_w_str(gguf_writer *w, const char *key, const char *s) {
    return begin_kv(w, key, GGUF_STRING) || put_str(w, 1, s, strlen(s)) ? -1 : 0;
}

static const uint8_t k_size[GGUF_N_VTYPES] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

int gguf_w_arr(gguf_writer *w, const char *key, gguf_vtype elem, const void *data, uint64_t n) {
    if ((unsigned)elem >= GGUF_N_VTYPES || elem == GGUF_STRING || elem == GGUF_ARRAY)
        return wfail(w, "key '%s': arrays of %s need gguf_w_arr_str or are not allowed", key ? key : "", gguf_vtype_name(elem));
    const int32_t et = (int32_t)elem;
    if (n > SIZE_MAX / k_size[elem]) return wfail(w, "key '%s': array too large", key);
    return begin_kv(w, key, GGUF_ARRAY) || put_meta(w, &et, 4) || put_meta(w, &n, 8) ||
           put_meta(w, data, (size_t)n * k_size[elem]) ? -1 : 0;
}

int gguf_w_arr_str(gguf_writer *w, const char *key, const char *const *strs, uint64_t n) {
    const int32_t et = GGUF_STRING;
    if (begin_kv(w, key, GGUF_ARRAY) || put_meta(w, &et, 4) || put_meta(w, &n, 8)) return -1;
    for (uint64_t i = 0; i < n; i++)
        if (put_str(w, 1, strs[i], strlen(strs[i]))) return -1;
    return 0;
}

int gguf_w_arr_gstr(gguf_writer *w, const char *key, const gguf_str *strs, uint64_t n) {
    const int32_t et = GGUF_STRING;
    if (begin_kv(w, key, GGUF_ARRAY) || put_meta(w, &et, 4) || put_meta(w, &n, 8)) return -1;
    for (uint64_t i = 0; i < n; i++)
        if (put_str(w, 1, strs[i].s, strs[i].len)) return -1;
    return 0;
}

int gguf_w_kv_copy(gguf_writer *w, const gguf_kv *kv) {
    if (kv->type == GGUF_STRING)
        return begin_kv(w, kv->key, GGUF_STRING) || put_str(w, 1, kv->strs[0].s, kv->strs[0].len) ? -1 : 0;
    if (kv->type != GGUF_ARRAY) {
        if (!strcmp(kv->key, "general.alignment")) {
            uint32_t a;
            memcpy(&a, kv->data, 4);
            return gguf_w_u32(w, kv->key, a);
        }
        return scalar(w, kv->key, kv->type, kv->data, k_size[kv->type]);
    }
    if (kv->arr_type != GGUF_STRING) return gguf_w_arr(w, kv->key, kv->arr_type, kv->data, kv->n);
    return gguf_w_arr_gstr(w, kv->key, kv->strs, kv->n);
}

static uint64_t pad_to(uint64_t x, uint32_t a) { return (x + a - 1) / a * a; }

int gguf_w_tensor(gguf_writer *w, const char *name, int n_dims, const int64_t *ne, uint32_t ggml_type) {
    if (w->failed) return -1;
    if (w->header_done) return wfail(w, "tensor '%s' declared after tensor data started", name);
    const size_t len = strlen(name);
    if (!len || len >= GGUF_MAX_NAME) return wfail(w, "tensor name '%s' must have 1 to %d bytes", name, GGUF_MAX_NAME - 1);
    if (n_dims < 1 || n_dims > GGUF_MAX_DIMS) return wfail(w, "tensor '%s': n_dims %d (1 to %d)", name, n_dims, GGUF_MAX_DIMS);
    int64_t blk;
    uint64_t bb;
    if (gguf_ggml_block(ggml_type, &blk, &bb)) return wfail(w, "tensor '%s': unknown ggml type %u", name, ggml_type);
    for (uint64_t i = 0; i < w->n_tensors; i++)
        if (!strcmp(w->tensors[i].name, name)) return wfail(w, "duplicate tensor name '%s'", name);
    if (ne[0] < 0 || ne[0] % blk) return wfail(w, "tensor '%s': ne[0] = %lld is not a multiple of the %s block (%lld)", name,
                                                (long long)ne[0], gguf_ggml_type_name(ggml_type), (long long)blk);
    uint64_t bytes = (uint64_t)(ne[0] / blk) * bb;
    for (int d = 1; d < n_dims; d++) {
        if (ne[d] < 0 || (ne[d] && bytes > UINT64_MAX / 2 / (uint64_t)ne[d])) return wfail(w, "tensor '%s': bad or huge ne[%d]", name, d);
        bytes *= (uint64_t)ne[d];
    }
    wtensor *nt = realloc(w->tensors, sizeof(wtensor) * (size_t)(w->n_tensors + 1));
    if (!nt) return wfail(w, "out of memory");
    w->tensors = nt;
    wtensor *t = &w->tensors[w->n_tensors];
    if (!(t->name = strdup(name))) return wfail(w, "out of memory");
    t->nbytes = bytes;
    t->offset = w->data_size;
    w->n_tensors++;
    w->data_size = pad_to(w->data_size + bytes, w->alignment);
    const uint32_t nd = (uint32_t)n_dims;
    const int32_t ty = (int32_t)ggml_type;
    if (put_str(w, 0, name, len) || put_info(w, &nd, 4) || put_info(w, ne, sizeof(int64_t) * (size_t)n_dims) ||
        put_info(w, &ty, 4) || put_info(w, &t->offset, 8))
        return -1;
    return 0;
}

static int write_bytes(gguf_writer *w, const void *p, size_t n) {
    if (n && fwrite(p, 1, n, w->f) != n) return wfail(w, "write failed: %s", strerror(errno));
    return 0;
}

static int write_zeros(gguf_writer *w, uint64_t n) {
    static const uint8_t z[64];
    while (n) {
        const size_t k = n < sizeof(z) ? (size_t)n : sizeof(z);
        if (write_bytes(w, z, k)) return -1;
        n -= k;
    }
    return 0;
}

static int write_header(gguf_writer *w) {
    if (w->header_done) return 0;
    const uint32_t version = 3;
    if (write_bytes(w, "GGUF", 4) || write_bytes(w, &version, 4) || write_bytes(w, &w->n_tensors, 8) ||
        write_bytes(w, &w->n_kv, 8) || write_bytes(w, w->meta, w->meta_len) || write_bytes(w, w->infos, w->infos_len))
        return -1;
    const uint64_t pos = 24 + (uint64_t)w->meta_len + w->infos_len;
    if (write_zeros(w, pad_to(pos, w->alignment) - pos)) return -1;
    w->header_done = 1;
    return 0;
}

/* close the current tensor: pad it, move to the next */
static int end_tensor(gguf_writer *w) {
    const wtensor *t = &w->tensors[w->cur];
    if (write_zeros(w, pad_to(t->nbytes, w->alignment) - t->nbytes)) return -1;
    w->cur++;
    w->cur_written = 0;
    return 0;
}

int gguf_w_data(gguf_writer *w, const void *data, size_t nbytes) {
    if (w->failed) return -1;
    if (write_header(w)) return -1;
    /* zero-size tensors have nothing to wait for */
    while (w->cur < w->n_tensors && w->tensors[w->cur].nbytes == 0 && w->cur_written == 0)
        if (end_tensor(w)) return -1;
    if (w->cur >= w->n_tensors) return wfail(w, "%zu bytes of data after the last declared tensor", nbytes);
    const wtensor *t = &w->tensors[w->cur];
    if (nbytes > t->nbytes - w->cur_written)
        return wfail(w, "tensor '%s': %llu bytes written, more than its %llu", t->name,
                     (unsigned long long)(w->cur_written + nbytes), (unsigned long long)t->nbytes);
    if (write_bytes(w, data, nbytes)) return -1;
    w->cur_written += nbytes;
    if (w->cur_written == t->nbytes) return end_tensor(w);
    return 0;
}

static void free_writer(gguf_writer *w) {
    for (uint64_t i = 0; i < w->n_kv; i++) free(w->keys[i]);
    for (uint64_t i = 0; i < w->n_tensors; i++) free(w->tensors[i].name);
    free(w->keys);
    free(w->tensors);
    free(w->meta);
    free(w->infos);
    free(w->path);
    free(w);
}

int gguf_writer_close(gguf_writer *w, char *err, size_t errlen) {
    if (!w->failed) write_header(w);
    while (!w->failed && w->cur < w->n_tensors && w->tensors[w->cur].nbytes == 0 && w->cur_written == 0) end_tensor(w);
    if (!w->failed && w->cur < w->n_tensors)
        wfail(w, "closed before the data of tensor '%s' (%llu of %llu bytes written)", w->tensors[w->cur].name,
              (unsigned long long)w->cur_written, (unsigned long long)w->tensors[w->cur].nbytes);
    if (fclose(w->f) != 0 && !w->failed) wfail(w, "close failed: %s", strerror(errno));
    const int rc = w->failed ? dg_fail(err, errlen, "%s", w->err) : 0;
    if (rc) unlink(w->path);
    free_writer(w);
    return rc;
}

void gguf_writer_abort(gguf_writer *w) {
    fclose(w->f);
    unlink(w->path);
    free_writer(w);
}
