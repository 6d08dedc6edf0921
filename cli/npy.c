/*
 * npy.c - minimal, bounds-checked .npy reader/writer for the debug commands, and token-id lists.
 */
#include "npy.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(char *err, size_t errlen, const char *fmt, ...) {
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

int npy_write_f32(const char *path, const float *data, int64_t rows, int64_t cols, char *err, size_t errlen) {
    char hdr[256];
    int len = snprintf(hdr, sizeof(hdr), "{'descr': '<f4', 'fortran_order': False, 'shape': (%lld, %lld), }",
                       (long long)rows, (long long)cols);
    int total = 10 + len + 1;
    int pad = (64 - total % 64) % 64;
    FILE *f = fopen(path, "wb");
    if (!f) return fail(err, errlen, "%s: cannot create: %s", path, strerror(errno));
    unsigned short hl = (unsigned short)(len + pad + 1);
    unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(hl & 0xff), (unsigned char)(hl >> 8)};
    int ok = fwrite(pre, 1, 10, f) == 10 && fwrite(hdr, 1, (size_t)len, f) == (size_t)len;
    for (int i = 0; ok && i < pad; i++) ok = fputc(' ', f) != EOF;
    ok = ok && fputc('\n', f) != EOF;
    size_t n = (size_t)(rows * cols);
    ok = ok && fwrite(data, sizeof(float), n, f) == n;   /* little-endian hosts only */
    if (fclose(f) != 0) ok = 0;
    return ok ? 0 : fail(err, errlen, "%s: write failed", path);
}

static unsigned char *slurp(const char *path, size_t *size, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) { fail(err, errlen, "%s: cannot open: %s", path, strerror(errno)); return NULL; }
    size_t cap = 1 << 16, n = 0;
    unsigned char *buf = malloc(cap);
    while (buf) {
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (n < cap) break;
        unsigned char *nb = realloc(buf, cap * 2);
        if (!nb) { free(buf); buf = NULL; break; }
        buf = nb;
        cap *= 2;
    }
    fclose(f);
    if (!buf) { fail(err, errlen, "%s: out of memory", path); return NULL; }
    *size = n;
    return buf;
}

/* Parse the header; returns data offset, fills descr (3 chars) and shape. */
static int npy_header(const unsigned char *b, size_t size, const char *path, char descr[8], int64_t *shape, int *ndim,
                      size_t *data_off, char *err, size_t errlen) {
    if (size < 10 || memcmp(b, "\x93NUMPY", 6) != 0) return fail(err, errlen, "%s: not a .npy file", path);
    size_t hl, off;
    if (b[6] == 1) { hl = b[8] | (size_t)b[9] << 8; off = 10; }
    else if (b[6] == 2 || b[6] == 3) {
        if (size < 12) return fail(err, errlen, "%s: truncated .npy header", path);
        hl = b[8] | (size_t)b[9] << 8 | (size_t)b[10] << 16 | (size_t)b[11] << 24;
        off = 12;
    } else return fail(err, errlen, "%s: unsupported .npy version %d", path, b[6]);
    if (hl > size - off) return fail(err, errlen, "%s: truncated .npy header", path);
    char *h = malloc(hl + 1);
    if (!h) return fail(err, errlen, "out of memory");
    memcpy(h, b + off, hl);
    h[hl] = 0;
    int rc = -1;
    char *d = strstr(h, "'descr'"), *fo = strstr(h, "'fortran_order'"), *sh = strstr(h, "'shape'");
    if (!d || !fo || !sh) { fail(err, errlen, "%s: .npy header lacks descr/fortran_order/shape", path); goto out; }
    char *q1 = strchr(d + 7, '\'');
    char *q2 = q1 ? strchr(q1 + 1, '\'') : NULL;
    if (!q2 || q2 - q1 - 1 > 6) { fail(err, errlen, "%s: bad descr in .npy header", path); goto out; }
    memcpy(descr, q1 + 1, (size_t)(q2 - q1 - 1));
    descr[q2 - q1 - 1] = 0;
    if (strncmp(strchr(fo, ':') ? strchr(fo, ':') + 1 : fo, " True", 5) == 0) { fail(err, errlen, "%s: fortran_order arrays are not supported", path); goto out; }
    char *p = strchr(sh, '(');
    if (!p) { fail(err, errlen, "%s: bad shape in .npy header", path); goto out; }
    p++;
    *ndim = 0;
    for (;;) {
        while (*p == ' ' || *p == ',') p++;
        if (*p == ')') break;
        if (!isdigit((unsigned char)*p) || *ndim >= 4) { fail(err, errlen, "%s: bad shape in .npy header", path); goto out; }
        errno = 0;
        long long v = strtoll(p, &p, 10);
        if (errno || v < 0 || v > (1LL << 40)) { fail(err, errlen, "%s: bad shape in .npy header", path); goto out; }
        shape[(*ndim)++] = v;
    }
    *data_off = off + hl;
    rc = 0;
out:
    free(h);
    return rc;
}

int npy_read_f32(const char *path, float **out, int64_t *n, int64_t *cols, char *err, size_t errlen) {
    size_t size;
    unsigned char *b = slurp(path, &size, err, errlen);
    if (!b) return -1;
    char descr[8];
    int64_t shape[4];
    int ndim;
    size_t off;
    int rc = -1;
    if (npy_header(b, size, path, descr, shape, &ndim, &off, err, errlen)) goto out;
    if (strcmp(descr, "<f4") != 0) { fail(err, errlen, "%s: dtype %s, expected float32 (<f4)", path, descr); goto out; }
    int64_t count = 1;
    for (int i = 0; i < ndim; i++) count *= shape[i];
    if ((uint64_t)count * 4 != size - off) { fail(err, errlen, "%s: %zu data bytes but shape needs %lld", path, size - off, (long long)count * 4); goto out; }
    *out = malloc((size_t)count * 4 + 1);
    if (!*out) { fail(err, errlen, "out of memory"); goto out; }
    memcpy(*out, b + off, (size_t)count * 4);
    *n = count;
    *cols = ndim ? shape[ndim - 1] : 1;
    rc = 0;
out:
    free(b);
    return rc;
}

int ids_parse(const char *path, const unsigned char *b, size_t size, int32_t **out, int *n, char *err, size_t errlen) {
    int rc = -1;
    int32_t *ids = NULL;
    size_t cap = 256;
    int cnt = 0;
    ids = malloc(cap * 4);
    if (!ids) { fail(err, errlen, "out of memory"); goto out; }
    size_t i = 0;
    while (i < size) {
        unsigned char c = b[i];
        if (isspace(c) || c == ',' || c == '[' || c == ']') { i++; continue; }
        if (!(isdigit(c) || c == '-')) { fail(err, errlen, "%s: unexpected character '%c' at byte %zu (expected integers)", path, c, i); goto out; }
        long long v = 0;
        int neg = c == '-';
        if (neg) i++;
        if (i >= size || !isdigit(b[i])) { fail(err, errlen, "%s: bad number at byte %zu", path, i); goto out; }
        while (i < size && isdigit(b[i])) {
            v = v * 10 + (b[i] - '0');
            if (v > INT32_MAX) { fail(err, errlen, "%s: number too large at byte %zu", path, i); goto out; }
            i++;
        }
        if ((size_t)cnt == cap) {
            int32_t *ni = realloc(ids, cap * 2 * 4);
            if (!ni) { fail(err, errlen, "out of memory"); goto out; }
            ids = ni;
            cap *= 2;
        }
        ids[cnt++] = (int32_t)(neg ? -v : v);
    }
    *n = cnt;
    *out = ids;
    ids = NULL;
    rc = 0;
out:
    free(ids);
    return rc;
}

int ids_read(const char *path, int32_t **out, int *n, char *err, size_t errlen) {
    size_t size;
    unsigned char *b = slurp(path, &size, err, errlen);
    if (!b) return -1;
    int rc = -1;
    int32_t *ids = NULL;
    if (size >= 6 && memcmp(b, "\x93NUMPY", 6) == 0) {
        char descr[8];
        int64_t shape[4];
        int ndim;
        size_t off;
        if (npy_header(b, size, path, descr, shape, &ndim, &off, err, errlen)) goto out;
        int64_t count = 1;
        for (int i = 0; i < ndim; i++) count *= shape[i];
        if (ndim > 2 || (ndim == 2 && shape[0] != 1)) { fail(err, errlen, "%s: ids must be 1-D or [1, n]", path); goto out; }
        int w = strcmp(descr, "<i4") == 0 ? 4 : strcmp(descr, "<i8") == 0 ? 8 : 0;
        if (!w) { fail(err, errlen, "%s: ids dtype %s, expected int32 or int64", path, descr); goto out; }
        if ((uint64_t)count * (uint64_t)w != size - off || count > (1 << 28)) { fail(err, errlen, "%s: truncated .npy data", path); goto out; }
        ids = malloc((size_t)count * 4 + 4);
        if (!ids) { fail(err, errlen, "out of memory"); goto out; }
        for (int64_t i = 0; i < count; i++) {
            int64_t v;
            if (w == 4) { int32_t x; memcpy(&x, b + off + i * 4, 4); v = x; }
            else memcpy(&v, b + off + i * 8, 8);
            if (v < INT32_MIN || v > INT32_MAX) { fail(err, errlen, "%s: id %lld at index %lld does not fit in int32", path, (long long)v, (long long)i); goto out; }
            ids[i] = (int32_t)v;
        }
        *n = (int)count;
    } else {
        if (ids_parse(path, b, size, &ids, n, err, errlen)) goto out;
    }
    *out = ids;
    ids = NULL;
    rc = 0;
out:
    free(ids);
    free(b);
    return rc;
}
