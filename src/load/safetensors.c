/*
 * safetensors.c - the safetensors container: an 8-byte little-endian header length N, N bytes of
 * JSON {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}, then the byte
 * buffer. Every offset is checked against the file size, sizes against dtype x shape, and tensors
 * must neither overlap nor leave holes (the rules of the reference reader).
 */
#define _GNU_SOURCE
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define ST_MAX_HEADER 100000000ull

static const struct { const char *name; size_t size; } k_dtypes[ST_N_DTYPES] = {
    [ST_BOOL] = {"BOOL", 1}, [ST_U8] = {"U8", 1},   [ST_I8] = {"I8", 1},
    [ST_F8_E5M2] = {"F8_E5M2", 1}, [ST_F8_E4M3] = {"F8_E4M3", 1},
    [ST_I16] = {"I16", 2},   [ST_U16] = {"U16", 2}, [ST_F16] = {"F16", 2}, [ST_BF16] = {"BF16", 2},
    [ST_I32] = {"I32", 4},   [ST_U32] = {"U32", 4}, [ST_F32] = {"F32", 4},
    [ST_F64] = {"F64", 8},   [ST_I64] = {"I64", 8}, [ST_U64] = {"U64", 8},
};

const char *st_dtype_name(st_dtype dt) { return dt < ST_N_DTYPES ? k_dtypes[dt].name : "?"; }
size_t st_dtype_size(st_dtype dt) { return dt < ST_N_DTYPES ? k_dtypes[dt].size : 0; }

static int fail(char *err, size_t errlen, const char *fmt, ...) {
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static int parse_dtype(const char *s, st_dtype *out) {
    for (int i = 0; i < ST_N_DTYPES; i++)
        if (strcmp(s, k_dtypes[i].name) == 0) { *out = (st_dtype)i; return 0; }
    return -1;
}

typedef struct { uint64_t begin, end; int idx; } span;

static int cmp_span(const void *a, const void *b) {
    const span *x = a, *y = b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : (x->end < y->end ? -1 : x->end > y->end);
}

/* json integer >= 0 */
static int get_u64(json_t *v, uint64_t *out) {
    if (!json_is_integer(v) || json_integer_value(v) < 0) return -1;
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

int st_add_file(st_store *st, const char *path, char *err, size_t errlen) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return fail(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) { close(fd); return fail(err, errlen, "%s: stat failed: %s", path, strerror(errno)); }
    size_t size = (size_t)sb.st_size;
    if (size < 8) { close(fd); return fail(err, errlen, "%s: truncated safetensors file (%zu bytes, need at least 8)", path, size); }
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) return fail(err, errlen, "%s: mmap failed: %s", path, strerror(errno));

    const uint8_t *p = map;
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | p[i];
    json_t *root = NULL;
    span *spans = NULL;
    int rc = -1;
    if (n > ST_MAX_HEADER) { fail(err, errlen, "%s: header length %llu exceeds the 100 MB limit", path, (unsigned long long)n); goto out; }
    if (n > size - 8) { fail(err, errlen, "%s: truncated: header length %llu but only %zu bytes follow", path, (unsigned long long)n, size - 8); goto out; }
    if (n < 2 || p[8] != '{') { fail(err, errlen, "%s: header is not a JSON object", path); goto out; }
    json_error_t je;
    root = json_loadb((const char *)p + 8, (size_t)n, JSON_REJECT_DUPLICATES, &je);
    if (!root) { fail(err, errlen, "%s: header JSON error at line %d column %d: %s", path, je.line, je.column, je.text); goto out; }
    if (!json_is_object(root)) { fail(err, errlen, "%s: header is not a JSON object", path); goto out; }

    const uint64_t buf_off = 8 + n, buf_size = size - buf_off;
    const uint8_t *buf = p + buf_off;
    size_t count = json_object_size(root);
    spans = calloc(count ? count : 1, sizeof(*spans));
    st_tensor *grown = realloc(st->tensors, sizeof(st_tensor) * ((size_t)st->n_tensors + count + 1));
    st_file *gf = realloc(st->files, sizeof(st_file) * (size_t)(st->n_files + 1));
    if (!spans || !grown || !gf) {
        if (grown) st->tensors = grown;
        if (gf) st->files = gf;
        fail(err, errlen, "%s: out of memory", path);
        goto out;
    }
    st->tensors = grown;
    st->files = gf;
    int file_idx = st->n_files;
    int n_spans = 0, first = st->n_tensors;

    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (strcmp(key, "__metadata__") == 0) {
            if (!json_is_object(val)) { fail(err, errlen, "%s: __metadata__ is not an object", path); goto undo; }
            continue;
        }
        st_tensor t = {0};
        t.file = file_idx;
        json_t *jd = json_object_get(val, "dtype"), *js = json_object_get(val, "shape"),
               *jo = json_object_get(val, "data_offsets");
        if (!json_is_object(val) || !json_is_string(jd) || !json_is_array(js) || !json_is_array(jo) || json_array_size(jo) != 2) {
            fail(err, errlen, "%s: tensor '%s': entry needs dtype, shape and data_offsets[2]", path, key);
            goto undo;
        }
        if (parse_dtype(json_string_value(jd), &t.dtype) != 0) {
            fail(err, errlen, "%s: tensor '%s': unknown dtype '%s'", path, key, json_string_value(jd));
            goto undo;
        }
        size_t nd = json_array_size(js);
        if (nd > ST_MAX_DIMS) { fail(err, errlen, "%s: tensor '%s': %zu dimensions (at most %d)", path, key, nd, ST_MAX_DIMS); goto undo; }
        t.ndim = (int)nd;
        uint64_t numel = 1;
        for (size_t d = 0; d < nd; d++) {
            uint64_t dim;
            if (get_u64(json_array_get(js, d), &dim) != 0) { fail(err, errlen, "%s: tensor '%s': shape[%zu] is not a non-negative integer", path, key, d); goto undo; }
            if (dim > INT64_MAX || __builtin_mul_overflow(numel, dim, &numel)) { fail(err, errlen, "%s: tensor '%s': shape overflows", path, key); goto undo; }
            t.shape[d] = (int64_t)dim;
        }
        uint64_t b, e, want;
        if (get_u64(json_array_get(jo, 0), &b) || get_u64(json_array_get(jo, 1), &e)) {
            fail(err, errlen, "%s: tensor '%s': data_offsets are not non-negative integers", path, key);
            goto undo;
        }
        if (b > e) { fail(err, errlen, "%s: tensor '%s': data_offsets [%llu, %llu] are reversed", path, key, (unsigned long long)b, (unsigned long long)e); goto undo; }
        if (e > buf_size) {
            fail(err, errlen, "%s: tensor '%s': data_offsets end %llu points past the end of the file (data section is %llu bytes; truncated file?)",
                 path, key, (unsigned long long)e, (unsigned long long)buf_size);
            goto undo;
        }
        if (__builtin_mul_overflow(numel, (uint64_t)st_dtype_size(t.dtype), &want) || want != e - b) {
            fail(err, errlen, "%s: tensor '%s': %llu bytes in data_offsets but dtype %s x shape needs %llu",
                 path, key, (unsigned long long)(e - b), st_dtype_name(t.dtype), (unsigned long long)want);
            goto undo;
        }
        t.data = buf + b;
        t.nbytes = e - b;
        t.name = strdup(key);
        if (!t.name) { fail(err, errlen, "%s: out of memory", path); goto undo; }
        spans[n_spans].begin = b;
        spans[n_spans].end = e;
        spans[n_spans].idx = st->n_tensors;
        n_spans++;
        st->tensors[st->n_tensors++] = t;
    }
    /* tensors must tile the data section exactly: no overlap, no hole, nothing after */
    qsort(spans, (size_t)n_spans, sizeof(*spans), cmp_span);
    uint64_t at = 0;
    for (int i = 0; i < n_spans; i++) {
        if (spans[i].begin != at) {
            const char *nm = st->tensors[spans[i].idx].name;
            fail(err, errlen, "%s: tensor '%s': data at offset %llu %s (expected %llu)", path, nm,
                 (unsigned long long)spans[i].begin, spans[i].begin < at ? "overlaps the previous tensor" : "leaves a hole", (unsigned long long)at);
            goto undo;
        }
        at = spans[i].end;
    }
    if (at != buf_size) {
        fail(err, errlen, "%s: %llu bytes after the last tensor (file not fully covered by the header)", path, (unsigned long long)(buf_size - at));
        goto undo;
    }
    st->files[file_idx].path = strdup(path);
    st->files[file_idx].map = map;
    st->files[file_idx].size = size;
    st->n_files++;
    map = NULL;
    rc = 0;
    goto out;
undo:
    for (int i = first; i < st->n_tensors; i++) free(st->tensors[i].name);
    st->n_tensors = first;
out:
    free(spans);
    if (root) json_decref(root);
    if (map) munmap(map, size);
    return rc;
}

static int cmp_tensor(const void *a, const void *b) {
    return strcmp(((const st_tensor *)a)->name, ((const st_tensor *)b)->name);
}

int st_finish(st_store *st, char *err, size_t errlen) {
    qsort(st->tensors, (size_t)st->n_tensors, sizeof(st_tensor), cmp_tensor);
    for (int i = 1; i < st->n_tensors; i++)
        if (strcmp(st->tensors[i - 1].name, st->tensors[i].name) == 0)
            return fail(err, errlen, "tensor '%s' appears twice (%s and %s)", st->tensors[i].name,
                        st->files[st->tensors[i - 1].file].path, st->files[st->tensors[i].file].path);
    return 0;
}

const st_tensor *st_find(const st_store *st, const char *name) {
    int lo = 0, hi = st->n_tensors - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        int c = strcmp(st->tensors[mid].name, name);
        if (c == 0) return &st->tensors[mid];
        if (c < 0) lo = mid + 1; else hi = mid - 1;
    }
    return NULL;
}

static int is_plain_name(const char *s) {
    return s[0] && s[0] != '.' && !strchr(s, '/') && !strchr(s, '\\');
}

int st_open_dir(st_store *st, const char *dir, char *err, size_t errlen) {
    char path[4096];
    snprintf(path, sizeof(path), "%s/model.safetensors.index.json", dir);
    if (access(path, F_OK) != 0) {
        snprintf(path, sizeof(path), "%s/model.safetensors", dir);
        if (access(path, F_OK) != 0)
            return fail(err, errlen, "%s: no model.safetensors or model.safetensors.index.json", dir);
        if (st_add_file(st, path, err, errlen) != 0) return -1;
        return st_finish(st, err, errlen);
    }
    json_error_t je;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!root) return fail(err, errlen, "%s: JSON error at line %d column %d: %s", path, je.line, je.column, je.text);
    int rc = -1;
    json_t *wm = json_object_get(root, "weight_map");
    if (!json_is_object(wm) || json_object_size(wm) == 0) { fail(err, errlen, "%s: missing or empty \"weight_map\"", path); goto out; }
    /* open every distinct shard once, in first-seen order */
    const char *key;
    json_t *val;
    json_t *seen = json_object();
    json_object_foreach(wm, key, val) {
        if (!json_is_string(val) || !is_plain_name(json_string_value(val))) {
            fail(err, errlen, "%s: weight_map[\"%s\"] is not a shard file name", path, key);
            json_decref(seen);
            goto out;
        }
        const char *shard = json_string_value(val);
        if (json_object_get(seen, shard)) continue;
        json_object_set_new(seen, shard, json_true());
        char sp[4096];
        snprintf(sp, sizeof(sp), "%s/%s", dir, shard);
        if (st_add_file(st, sp, err, errlen) != 0) { json_decref(seen); goto out; }
    }
    json_decref(seen);
    if (st_finish(st, err, errlen) != 0) goto out;
    /* the index must agree with the shards */
    json_object_foreach(wm, key, val) {
        const st_tensor *t = st_find(st, key);
        if (!t) { fail(err, errlen, "%s: tensor '%s' is listed in weight_map but not found in %s", path, key, json_string_value(val)); goto out; }
        const char *fp = st->files[t->file].path, *base = strrchr(fp, '/');
        base = base ? base + 1 : fp;
        if (strcmp(base, json_string_value(val)) != 0) {
            fail(err, errlen, "%s: tensor '%s' is listed in %s but stored in %s", path, key, json_string_value(val), base);
            goto out;
        }
    }
    rc = 0;
out:
    json_decref(root);
    return rc;
}

void st_close(st_store *st) {
    for (int i = 0; i < st->n_tensors; i++) free(st->tensors[i].name);
    for (int i = 0; i < st->n_files; i++) {
        munmap(st->files[i].map, st->files[i].size);
        free(st->files[i].path);
    }
    free(st->tensors);
    free(st->files);
    memset(st, 0, sizeof(*st));
}
