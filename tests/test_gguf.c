/*
 * test_gguf.c - the GGUF reader and writer: files written by PyPI gguf's GGUFWriter
 * (tests/fixtures/gguf, tools/reference/make_gguf_fixtures.py) read back value by value; corrupt
 * variants of a good file (every truncation, bad magic / version / counts / types / offsets / dims,
 * duplicates) rejected with a message naming the field; the C writer round-tripped; and the tiny
 * DiffusionGemma conversions checked tensor by tensor against the safetensors checkpoints they came from.
 */
#define _GNU_SOURCE
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "kernels/quants.h"
#include "load/gguf.h"
#include "test.h"

static void fixture_path(char *buf, size_t n, const char *name) { snprintf(buf, n, "%s/gguf/%s", fixtures_dir(), name); }

static int open_fixture(gguf_file *g, const char *name) {
    char path[512], err[512];
    fixture_path(path, sizeof(path), name);
    if (gguf_open(g, path, err, sizeof(err))) {
        CHECK(0, "%s", err);
        return -1;
    }
    return 0;
}

static uint8_t *read_all(const char *name, size_t *size) {
    char path[512];
    fixture_path(path, sizeof(path), name);
    FILE *f = fopen(path, "rb");
    CHECK(f != NULL, "cannot open %s", path);
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *size = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc(*size ? *size : 1);
    if (fread(buf, 1, *size, f) != *size) { free(buf); buf = NULL; }
    fclose(f);
    return buf;
}

/* ===== every kv type ===== */

static int64_t kint(const gguf_file *g, const char *key, gguf_vtype type) {
    const gguf_kv *kv = gguf_find_kv(g, key);
    int64_t v = INT64_MIN;
    CHECK(kv && kv->type == type && !gguf_kv_int(kv, 0, &v), "key %s of type %s", key, gguf_vtype_name(type));
    return v;
}

static int str_is(gguf_str s, const char *want) { return s.len == strlen(want) && !memcmp(s.s, want, s.len); }

static void check_float_tensor(const gguf_file *g, const char *name, int nd, const int64_t *ne, uint32_t type,
                               float (*val)(int64_t)) {
    const gguf_tensor *t = gguf_find_tensor(g, name);
    CHECK(t != NULL, "tensor %s missing", name);
    if (!t) return;
    int ok = t->n_dims == nd && t->ggml_type == type;
    int64_t n = 1;
    for (int d = 0; d < nd; d++) { ok &= t->ne[d] == ne[d]; n *= ne[d]; }
    CHECK(ok, "tensor %s: dims/type", name);
    if (!ok) return;
    const dg_mat m = dg_mat_init(t->data, (dg_dtype)t->dt, 1, n);
    float *x = malloc(sizeof(float) * (size_t)n);
    dg_dequant_range(&m, 0, 0, n, x);
    int bad = 0;
    for (int64_t i = 0; i < n; i++) bad += x[i] != val(i);
    CHECK(bad == 0, "tensor %s: %d values differ", name, bad);
    free(x);
}
static float v_f32_2d(int64_t i) { return (float)i * 0.5f - 3; }
static float v_f32_1d(int64_t i) { return i == 0 ? 1.0f : i == 1 ? -2.0f : 3.5f; }
static float v_f16_3d(int64_t i) { return (float)i / 8; }
static float v_bf16_1d(int64_t i) { return ((float)i - 16) * 0.25f; }
static float v_f32_4d(int64_t i) { return (float)i; }

/* quantized tensor vs its .ref sibling (gguf-py's dequantization), bit for bit */
static void check_quant_ref(const gguf_file *g, const char *name, uint32_t type) {
    char rname[64];
    snprintf(rname, sizeof(rname), "%s.ref", name);
    const gguf_tensor *t = gguf_find_tensor(g, name), *r = gguf_find_tensor(g, rname);
    CHECK(t && r && t->ggml_type == type && r->ggml_type == GGML_TYPE_F32 && t->ne[0] == r->ne[0] && t->ne[1] == r->ne[1],
          "tensor %s / %s", name, rname);
    if (!t || !r || t->ggml_type != type || t->dt < 0) return;
    const int64_t n = t->ne[0] * t->ne[1];
    float *x = malloc(sizeof(float) * (size_t)n);
    const dg_mat m = dg_mat_init(t->data, (dg_dtype)t->dt, t->ne[1], t->ne[0]);
    for (int64_t row = 0; row < t->ne[1]; row++) dg_dequant_range(&m, row, 0, t->ne[0], x + row * t->ne[0]);
    CHECK(!memcmp(x, r->data, sizeof(float) * (size_t)n), "tensor %s: dequantization differs from gguf-py", name);
    free(x);
}

static void check_kv_file(const gguf_file *g, uint32_t alignment) {
    char err[512];
    CHECK(g->version == 3 && g->alignment == alignment && g->data_offset % alignment == 0, "version %u alignment %u data at %llu",
          g->version, g->alignment, (unsigned long long)g->data_offset);
    gguf_str s;
    CHECK(!gguf_get_str(g, "general.architecture", &s, err, sizeof(err)) && str_is(s, "test-arch"), "general.architecture");
    CHECK(kint(g, "t.u8", GGUF_UINT8) == 200 && kint(g, "t.i8", GGUF_INT8) == -100, "u8 / i8");
    CHECK(kint(g, "t.u16", GGUF_UINT16) == 60000 && kint(g, "t.i16", GGUF_INT16) == -30000, "u16 / i16");
    CHECK(kint(g, "t.u32", GGUF_UINT32) == 4000000000ll && kint(g, "t.i32", GGUF_INT32) == -2000000000, "u32 / i32");
    CHECK(kint(g, "t.i64", GGUF_INT64) == -9000000000000000000ll, "i64");
    const gguf_kv *u64 = gguf_find_kv(g, "t.u64");
    uint64_t uv = 0;
    if (u64) memcpy(&uv, u64->data, 8);
    CHECK(u64 && u64->type == GGUF_UINT64 && uv == 18000000000000000000ull, "u64");
    int64_t iv;
    CHECK(gguf_get_int(g, "t.u64", 0, INT64_MAX, &iv, err, sizeof(err)) && strstr(err, "t.u64"), "u64 above INT64_MAX must not convert: %s", err);
    double f;
    CHECK(!gguf_get_float(g, "t.f32", &f, err, sizeof(err)) && f == 3.25, "f32");
    CHECK(!gguf_get_float(g, "t.f64", &f, err, sizeof(err)) && f == -1.0e300, "f64");
    int b = -1;
    CHECK(!gguf_get_bool(g, "t.true", &b, err, sizeof(err)) && b == 1, "bool true");
    CHECK(!gguf_get_bool(g, "t.false", &b, err, sizeof(err)) && b == 0, "bool false");
    CHECK(!gguf_get_str(g, "t.str", &s, err, sizeof(err)) && str_is(s, "h\xc3\xa9llo \xe2\x96\x81w\xc3\xb6rld"), "utf-8 string");
    CHECK(gguf_find_kv(g, "t.empty_str") == NULL, "PyPI gguf drops empty strings (add_string returns on a falsy value)");
    /* arrays */
    static const struct { const char *key; gguf_vtype t; int64_t v[4]; int n; } arrs[] = {
        {"t.arr_u8", GGUF_UINT8, {1, 2, 255}, 3},        {"t.arr_i8", GGUF_INT8, {-1, 2, -128}, 3},
        {"t.arr_u16", GGUF_UINT16, {1, 65535}, 2},       {"t.arr_i16", GGUF_INT16, {-32768, 7}, 2},
        {"t.arr_u32", GGUF_UINT32, {0, 4294967295ll}, 2}, {"t.arr_i32", GGUF_INT32, {8, 8, 2, -5}, 4},
        {"t.arr_i64", GGUF_INT64, {INT64_MIN, 5}, 2},     {"t.arr_bool", GGUF_BOOL, {1, 0, 1}, 3},
    };
    for (size_t a = 0; a < sizeof(arrs) / sizeof(arrs[0]); a++) {
        gguf_vtype et;
        uint64_t n;
        const gguf_kv *kv = gguf_find_kv(g, arrs[a].key);
        int ok = !gguf_get_arr(g, arrs[a].key, &et, &n, err, sizeof(err)) && et == arrs[a].t && n == (uint64_t)arrs[a].n;
        for (int i = 0; ok && i < arrs[a].n; i++) {
            int64_t v = 0;
            if (et == GGUF_BOOL) v = kv->data[i];
            else ok &= !gguf_kv_int(kv, (uint64_t)i, &v);
            ok &= v == arrs[a].v[i];
        }
        CHECK(ok, "array %s", arrs[a].key);
    }
    const gguf_kv *kv = gguf_find_kv(g, "t.arr_u64");
    uint64_t u[2] = {0, 0};
    if (kv && kv->n == 2) memcpy(u, kv->data, 16);
    CHECK(kv && kv->arr_type == GGUF_UINT64 && u[0] == 1 && u[1] == UINT64_MAX, "array u64");
    kv = gguf_find_kv(g, "t.arr_f32");
    double d0 = 0, d1 = 0, d2 = 0;
    CHECK(kv && !gguf_kv_float(kv, 0, &d0) && !gguf_kv_float(kv, 1, &d1) && !gguf_kv_float(kv, 2, &d2) && d0 == 0.5 &&
          d1 == -1.5 && (float)d2 == 1e-30f && gguf_kv_float(kv, 3, &d0) == -1, "array f32");
    kv = gguf_find_kv(g, "t.arr_f64");
    CHECK(kv && !gguf_kv_float(kv, 0, &d0) && !gguf_kv_float(kv, 1, &d1) && d0 == 0.1 && d1 == -2.0, "array f64");
    kv = gguf_find_kv(g, "t.arr_str");
    static const char *strs[] = {"a", "", "<0x0A>", "\xe2\x96\x81the", "\n\n"};
    int ok = kv && kv->type == GGUF_ARRAY && kv->arr_type == GGUF_STRING && kv->n == 5;
    for (int i = 0; ok && i < 5; i++) ok &= !gguf_kv_str(kv, (uint64_t)i, &s) && str_is(s, strs[i]);
    CHECK(ok && gguf_kv_str(kv, 5, &s) == -1, "array of strings");
    /* typed getters report the file, key and type */
    CHECK(gguf_get_float(g, "t.str", &f, err, sizeof(err)) && strstr(err, "t.str") && strstr(err, "string"), "%s", err);
    CHECK(gguf_get_int(g, "t.u8", 0, 100, &iv, err, sizeof(err)) && strstr(err, "out of range"), "%s", err);
    CHECK(gguf_get_int(g, "no.such.key", 0, 1, &iv, err, sizeof(err)) && strstr(err, "no.such.key") && strstr(err, "missing"), "%s", err);
    CHECK(gguf_get_str(g, "t.arr_str", &s, err, sizeof(err)) && strstr(err, "array of string"), "%s", err);
    /* tensors */
    check_float_tensor(g, "f32_2d", 2, (const int64_t[]){5, 3}, GGML_TYPE_F32, v_f32_2d);
    check_float_tensor(g, "f32_1d", 1, (const int64_t[]){3}, GGML_TYPE_F32, v_f32_1d);
    check_float_tensor(g, "f16_3d", 3, (const int64_t[]){4, 3, 2}, GGML_TYPE_F16, v_f16_3d);
    check_float_tensor(g, "bf16_1d", 1, (const int64_t[]){32}, GGML_TYPE_BF16, v_bf16_1d);
    check_float_tensor(g, "f32_4d", 4, (const int64_t[]){2, 3, 1, 2}, GGML_TYPE_F32, v_f32_4d);
    check_quant_ref(g, "q8_0", GGML_TYPE_Q8_0);
    check_quant_ref(g, "q4_0", GGML_TYPE_Q4_0);
    check_quant_ref(g, "q5_1", GGML_TYPE_Q5_1);
    check_quant_ref(g, "q4_k", GGML_TYPE_Q4_K);
    check_quant_ref(g, "q6_k", GGML_TYPE_Q6_K);
    for (uint64_t i = 0; i < g->n_tensors; i++)
        CHECK((uint64_t)(g->tensors[i].data - g->base) % alignment == 0, "tensor %s data not aligned", g->tensors[i].name);
    CHECK(gguf_find_tensor(g, "nope") == NULL, "missing tensor lookup");
}

static void t_kv_types(void) {
    gguf_file g;
    if (!open_fixture(&g, "kv_all.gguf")) {
        printf("  kv_all.gguf: %llu keys, %llu tensors, data at %llu\n", (unsigned long long)g.n_kv,
               (unsigned long long)g.n_tensors, (unsigned long long)g.data_offset);
        check_kv_file(&g, 32);
        gguf_close(&g);
    }
    if (!open_fixture(&g, "kv_align64.gguf")) {
        check_kv_file(&g, 64);
        gguf_close(&g);
    }
}

/* ===== corrupt files ===== */

static int expect_fail(const uint8_t *buf, size_t size, const char *what, const char *want1, const char *want2) {
    gguf_file g;
    char err[512] = "";
    const int rc = gguf_open_mem(&g, buf, size, "bad.gguf", err, sizeof(err));
    if (!rc) gguf_close(&g);
    const int ok = rc != 0 && strstr(err, "bad.gguf") && (!want1 || strstr(err, want1)) && (!want2 || strstr(err, want2));
    CHECK(ok, "%s: expected an error naming '%s'%s%s, got %s", what, want1 ? want1 : "", want2 ? " and " : "", want2 ? want2 : "",
          rc ? err : "success");
    if (ok) printf("  %-28s -> %s\n", what, err);
    return ok;
}

static void put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }

/* byte offset of a tensor info's fields */
typedef struct { size_t ndims, ne0, type, offset; } info_pos;
static info_pos tensor_fields(const gguf_tensor *t) {
    info_pos p;
    p.ndims = (size_t)t->info_offset + 8 + strlen(t->name);
    p.ne0 = p.ndims + 4;
    p.type = p.ne0 + 8 * (size_t)t->n_dims;
    p.offset = p.type + 4;
    return p;
}

static void t_corrupt(void) {
    size_t size;
    uint8_t *good = read_all("kv_all.gguf", &size);
    if (!good) return;
    gguf_file g;
    char err[512];
    if (gguf_open_mem(&g, good, size, "bad.gguf", err, sizeof(err))) {
        CHECK(0, "%s", err);
        free(good);
        return;
    }
    uint8_t *b = malloc(size);
    /* every truncation: each prefix that cuts into the header, metadata, infos or a tensor fails */
    uint64_t end = 0;
    for (uint64_t i = 0; i < g.n_tensors; i++) {
        const uint64_t e = g.data_offset + g.tensors[i].offset + g.tensors[i].nbytes;
        if (e > end) end = e;
    }
    int missed = 0, wrong_ok = 0;
    for (size_t len = 0; len < size; len++) {
        gguf_file h;
        const int rc = gguf_open_mem(&h, good, len, "bad.gguf", err, sizeof(err));
        if (!rc) gguf_close(&h);
        if (len < end && !rc) missed++;
        if (len >= end && rc) wrong_ok++;
        if (len < end && rc && !strstr(err, "bad.gguf")) missed++;
    }
    printf("  truncation at each of %zu lengths: all below %llu rejected (%d missed), longer ones accepted (%d not)\n", size,
           (unsigned long long)end, missed, wrong_ok);
    CHECK(missed == 0 && wrong_ok == 0, "truncation");
    expect_fail(good, 60, "truncated: counts vs size", "metadata count", NULL);
    expect_fail(good, 700, "truncated in the metadata", "truncated", "byte offset");
    expect_fail(good, 1000, "truncated in a tensor info", "tensor", "truncated");

    memcpy(b, good, size); b[0] = 'X';
    expect_fail(b, size, "bad magic", "magic", NULL);
    const int versions[] = {0, 1, 4, 0x03000000};
    for (int i = 0; i < 4; i++) {
        memcpy(b, good, size); put32(b + 4, (uint32_t)versions[i]);
        expect_fail(b, size, "bad version", "version", NULL);
    }
    memcpy(b, good, size); put64(b + 8, 1ull << 60);
    expect_fail(b, size, "absurd tensor count", "tensor count", NULL);
    memcpy(b, good, size); put64(b + 16, 1ull << 62);
    expect_fail(b, size, "absurd metadata count", "metadata count", NULL);
    memcpy(b, good, size); put64(b + 16, g.n_kv + 1);
    expect_fail(b, size, "one metadata entry too many", NULL, NULL);
    memcpy(b, good, size); put64(b + 24, (uint64_t)size);           /* first key's length */
    expect_fail(b, size, "key length past EOF", "key", "past the end");

    const gguf_kv *kstr = gguf_find_kv(&g, "t.str"), *karr = gguf_find_kv(&g, "t.arr_str"), *ku8 = gguf_find_kv(&g, "t.u8");
    const gguf_kv *kai = gguf_find_kv(&g, "t.arr_i32");
    const size_t vstr = (size_t)kstr->offset + 8 + strlen(kstr->key) + 4;   /* the string value's length */
    memcpy(b, good, size); put64(b + vstr, 1ull << 40);
    expect_fail(b, size, "string value past EOF", "t.str", "past the end");
    const size_t varr = (size_t)karr->offset + 8 + strlen(karr->key) + 4 + 4;   /* array count */
    memcpy(b, good, size); put64(b + varr, 1ull << 61);
    expect_fail(b, size, "string array count", "t.arr_str", "strings");
    memcpy(b, good, size); put64(b + varr + 8 + 8 + 1, 1ull << 50);   /* 2nd string's length */
    expect_fail(b, size, "array string past EOF", "t.arr_str", "string 1");
    const size_t vai = (size_t)kai->offset + 8 + strlen(kai->key) + 4;
    memcpy(b, good, size); put64(b + vai + 4, 1ull << 62);
    expect_fail(b, size, "numeric array count", "t.arr_i32", "past the end");
    memcpy(b, good, size); put32(b + vai, GGUF_ARRAY);
    expect_fail(b, size, "nested array", "t.arr_i32", "nested");
    memcpy(b, good, size); put32(b + vai, 13);
    expect_fail(b, size, "unknown array element type", "t.arr_i32", "element type 13");
    const size_t tu8 = (size_t)ku8->offset + 8 + strlen(ku8->key);
    memcpy(b, good, size); put32(b + tu8, 99);
    expect_fail(b, size, "unknown value type", "t.u8", "value type 99");
    memcpy(b, good, size); memcpy(b + ku8->offset + 8, "t.i8", 4);   /* same length: a duplicate key */
    expect_fail(b, size, "duplicate key", "duplicate metadata key 't.i8'", NULL);

    const gguf_tensor *t0 = gguf_find_tensor(&g, "f32_2d"), *tq = gguf_find_tensor(&g, "q4_0");
    info_pos p = tensor_fields(t0);
    memcpy(b, good, size); put32(b + p.ndims, 5);
    expect_fail(b, size, "n_dims 5", "f32_2d", "n_dims 5");
    memcpy(b, good, size); put64(b + p.ne0, 1ull << 40); put64(b + p.ne0 + 8, 1ull << 40);
    expect_fail(b, size, "ne product overflow", "f32_2d", "overflows");
    memcpy(b, good, size); put64(b + p.ne0, (uint64_t)-5);
    expect_fail(b, size, "negative ne", "f32_2d", "negative");
    memcpy(b, good, size); put64(b + p.ne0, 1ull << 30);
    expect_fail(b, size, "tensor data past EOF (ne)", "f32_2d", "past the end");
    memcpy(b, good, size); put32(b + p.type, 99);
    expect_fail(b, size, "unknown ggml type", "f32_2d", "unknown ggml type id 99");
    memcpy(b, good, size); put32(b + p.type, 4);                    /* a removed ggml type id */
    expect_fail(b, size, "removed ggml type id 4", "f32_2d", "type id 4");
    memcpy(b, good, size); put64(b + p.offset, (uint64_t)size);
    expect_fail(b, size, "tensor offset past EOF", "f32_2d", "past the end");
    memcpy(b, good, size); put64(b + p.offset, t0->offset + 16);
    expect_fail(b, size, "misaligned tensor offset", "f32_2d", "alignment");
    memcpy(b, good, size); put64(b + p.offset, UINT64_MAX - 31);
    expect_fail(b, size, "huge tensor offset", "f32_2d", "past the end");
    info_pos pq = tensor_fields(tq);
    memcpy(b, good, size); put64(b + pq.offset, t0->offset);
    expect_fail(b, size, "overlapping tensors", "overlaps", NULL);
    memcpy(b, good, size); put64(b + pq.ne0, 48);                   /* Q4_0 rows must be multiples of 32 */
    expect_fail(b, size, "ne[0] not a block multiple", "q4_0", "multiple");
    memcpy(b, good, size); memcpy(b + tq->info_offset + 8, "q8_0", 4);   /* rename q4_0 -> q8_0 */
    expect_fail(b, size, "duplicate tensor names", "duplicate tensor name 'q8_0'", NULL);
    memcpy(b, good, size); put64(b + t0->info_offset, 70);
    expect_fail(b, size, "tensor name too long", "tensor name of 70 bytes", NULL);
    /* random damage to the header, metadata and infos: never a crash or an out-of-bounds read (ASan);
     * when a damaged file still parses, every kv and tensor must lie inside it */
    uint64_t rng = 12345;
    int parsed = 0, inconsistent = 0;
    for (int it = 0; it < 3000; it++) {
        memcpy(b, good, size);
        const int nmut = 1 + it % 4;
        for (int k = 0; k < nmut; k++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            const size_t at = (size_t)((rng >> 33) % g.data_offset);
            b[at] = (uint8_t)(it % 3 == 0 ? 0xFF : it % 3 == 1 ? (rng >> 20) : b[at] ^ (1u << ((rng >> 40) % 8)));
        }
        gguf_file h;
        if (gguf_open_mem(&h, b, size, "fuzz.gguf", err, sizeof(err))) continue;
        parsed++;
        for (uint64_t i = 0; i < h.n_kv; i++) {
            const gguf_kv *kv = &h.kv[i];
            gguf_str s;
            if (kv->arr_type == GGUF_STRING)
                for (uint64_t j = 0; j < kv->n; j++) {
                    gguf_kv_str(kv, j, &s);
                    inconsistent += (const uint8_t *)s.s < b || (const uint8_t *)s.s + s.len > b + size;
                }
        }
        for (uint64_t i = 0; i < h.n_tensors; i++)
            inconsistent += h.tensors[i].data < b || h.tensors[i].data + h.tensors[i].nbytes > b + size;
        gguf_close(&h);
    }
    printf("  3000 randomly damaged headers: %d still parse, %d with anything out of bounds\n", parsed, inconsistent);
    CHECK(inconsistent == 0, "damaged files with out-of-bounds views");
    free(b);
    gguf_close(&g);
    free(good);

    /* general.alignment of the wrong type (the C writer lets a string through: only the reader checks) */
    char path[] = "/tmp/dg_gguf_testXXXXXX";
    int fd = mkstemp(path);
    close(fd);
    gguf_writer *w = gguf_writer_open(path, 32, err, sizeof(err));
    CHECK(w && !gguf_w_str(w, "general.alignment", "32"), "writer");
    if (w) CHECK(!gguf_writer_close(w, err, sizeof(err)), "%s", err);
    uint8_t *buf = NULL;
    FILE *f = fopen(path, "rb");
    size_t n = 0;
    if (f) { buf = malloc(4096); n = fread(buf, 1, 4096, f); fclose(f); }
    if (buf) expect_fail(buf, n, "alignment of type string", "general.alignment", "expected u32");
    free(buf);
    unlink(path);
    CHECK(gguf_open(&g, "/nonexistent/x.gguf", err, sizeof(err)) && strstr(err, "/nonexistent/x.gguf"), "%s", err);
    CHECK(gguf_open(&g, "/tmp", err, sizeof(err)) && strstr(err, "not a regular file"), "%s", err);
}

static void t_alignment_value(void) {
    /* general.alignment = 24 (not a power of two), built by hand */
    uint8_t buf[128];
    size_t n = 0;
    memcpy(buf, "GGUF", 4); n = 4;
    put32(buf + n, 3); n += 4;
    put64(buf + n, 0); n += 8;
    put64(buf + n, 1); n += 8;
    put64(buf + n, 17); n += 8;
    memcpy(buf + n, "general.alignment", 17); n += 17;
    put32(buf + n, GGUF_UINT32); n += 4;
    put32(buf + n, 24); n += 4;
    expect_fail(buf, n, "alignment 24", "general.alignment", "power of two");
    put32(buf + n - 4, 0);
    expect_fail(buf, n, "alignment 0", "general.alignment", "power of two");
    put32(buf + n - 4, 64);
    gguf_file g;
    char err[256];
    CHECK(!gguf_open_mem(&g, buf, n, "ok.gguf", err, sizeof(err)) && g.alignment == 64, "alignment 64: %s", err);
    gguf_close(&g);
    /* a header alone: no kv, no tensors */
    put64(buf + 16, 0);
    CHECK(!gguf_open_mem(&g, buf, 24, "empty.gguf", err, sizeof(err)) && g.n_kv == 0 && g.n_tensors == 0, "empty file: %s", err);
    gguf_close(&g);
    /* version 2 is accepted */
    put32(buf + 4, 2);
    CHECK(!gguf_open_mem(&g, buf, 24, "v2.gguf", err, sizeof(err)) && g.version == 2, "v2: %s", err);
    gguf_close(&g);
}

/* ===== the C writer ===== */

/* Copy every kv and tensor of src into a new file with the writer. */
static int copy_gguf(const gguf_file *src, const char *path, int extra, char *err, size_t errlen) {
    gguf_writer *w = gguf_writer_open(path, src->alignment, err, errlen);
    if (!w) return -1;
    for (uint64_t i = 0; i < src->n_kv; i++) gguf_w_kv_copy(w, &src->kv[i]);
    if (extra) {
        gguf_w_arr(w, "x.empty_arr", GGUF_INT32, NULL, 0);
        gguf_w_arr_str(w, "x.empty_strs", NULL, 0);
        gguf_w_u8(w, "x.u8", 7); gguf_w_i8(w, "x.i8", -7); gguf_w_u16(w, "x.u16", 700); gguf_w_i16(w, "x.i16", -700);
        gguf_w_i32(w, "x.i32", -70000); gguf_w_u64(w, "x.u64", 1ull << 40); gguf_w_i64(w, "x.i64", -(1ll << 40));
        gguf_w_f32(w, "x.f32", 0.25f); gguf_w_f64(w, "x.f64", 1e-300); gguf_w_bool(w, "x.bool", 1);
        gguf_w_str(w, "x.empty_str", "");
    }
    for (uint64_t i = 0; i < src->n_tensors; i++) {
        const gguf_tensor *t = &src->tensors[i];
        gguf_w_tensor(w, t->name, t->n_dims, t->ne, t->ggml_type);
    }
    for (uint64_t i = 0; i < src->n_tensors; i++) {
        const gguf_tensor *t = &src->tensors[i];
        /* in two pieces, to exercise partial writes */
        gguf_w_data(w, t->data, (size_t)t->nbytes / 2);
        gguf_w_data(w, t->data + t->nbytes / 2, (size_t)(t->nbytes - t->nbytes / 2));
    }
    return gguf_writer_close(w, err, errlen);
}

/* dgemma_test --gguf-copy IN OUT: the C writer's copy of a GGUF file (checked by make_gguf_fixtures.py) */
int gguf_copy_main(const char *in, const char *out) {
    gguf_file g;
    char err[512];
    if (gguf_open(&g, in, err, sizeof(err)) || copy_gguf(&g, out, 0, err, sizeof(err))) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    gguf_close(&g);
    return 0;
}

static int same_kv(const gguf_kv *a, const gguf_kv *b) {
    if (strcmp(a->key, b->key) || a->type != b->type || a->arr_type != b->arr_type || a->n != b->n) return 0;
    if (a->arr_type == GGUF_STRING) {
        for (uint64_t i = 0; i < a->n; i++)
            if (a->strs[i].len != b->strs[i].len || memcmp(a->strs[i].s, b->strs[i].s, a->strs[i].len)) return 0;
        return 1;
    }
    static const uint8_t sz[GGUF_N_VTYPES] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return !memcmp(a->data, b->data, (size_t)a->n * sz[a->arr_type]);
}

static void t_writer(void) {
    gguf_file src, back;
    char err[512], path[] = "/tmp/dg_gguf_wXXXXXX";
    if (open_fixture(&src, "kv_all.gguf")) return;
    int fd = mkstemp(path);
    close(fd);
    CHECK(!copy_gguf(&src, path, 1, err, sizeof(err)), "%s", err);
    if (!gguf_open(&back, path, err, sizeof(err))) {
        int bad = 0;
        for (uint64_t i = 0; i < src.n_kv; i++) {
            const gguf_kv *k = gguf_find_kv(&back, src.kv[i].key);
            if (!k || !same_kv(&src.kv[i], k)) { bad++; fprintf(stderr, "  kv %s differs\n", src.kv[i].key); }
        }
        for (uint64_t i = 0; i < src.n_tensors; i++) {
            const gguf_tensor *a = &src.tensors[i], *t = gguf_find_tensor(&back, a->name);
            if (!t || t->ggml_type != a->ggml_type || t->n_dims != a->n_dims || memcmp(t->ne, a->ne, sizeof(a->ne)) ||
                t->offset != a->offset || t->nbytes != a->nbytes || memcmp(t->data, a->data, (size_t)a->nbytes)) {
                bad++;
                fprintf(stderr, "  tensor %s differs\n", a->name);
            }
        }
        gguf_vtype et;
        uint64_t n = 9;
        int64_t v;
        double f;
        CHECK(!gguf_get_arr(&back, "x.empty_arr", &et, &n, err, sizeof(err)) && et == GGUF_INT32 && n == 0, "empty array");
        CHECK(!gguf_get_arr(&back, "x.empty_strs", &et, &n, err, sizeof(err)) && et == GGUF_STRING && n == 0, "empty string array");
        CHECK(!gguf_get_int(&back, "x.i16", -1000, 0, &v, err, sizeof(err)) && v == -700, "i16");
        CHECK(!gguf_get_int(&back, "x.i64", INT64_MIN, 0, &v, err, sizeof(err)) && v == -(1ll << 40), "i64");
        CHECK(!gguf_get_float(&back, "x.f64", &f, err, sizeof(err)) && f == 1e-300, "f64");
        gguf_str es = {NULL, 9};
        CHECK(!gguf_get_str(&back, "x.empty_str", &es, err, sizeof(err)) && es.len == 0, "empty string");
        CHECK(bad == 0 && back.n_kv == src.n_kv + 13, "round trip: %d differences", bad);
        printf("  C writer round trip of kv_all.gguf: %llu keys, %llu tensors, %d differences\n", (unsigned long long)back.n_kv,
               (unsigned long long)back.n_tensors, bad);
        gguf_close(&back);
    } else {
        CHECK(0, "%s", err);
    }
    /* the same copy without extras is byte-identical to c_written.gguf, which PyPI gguf's GGUFReader read back
     * identical to kv_all.gguf when make_gguf_fixtures.py made it */
    CHECK(!copy_gguf(&src, path, 0, err, sizeof(err)), "%s", err);
    size_t n1 = 0, n2 = 0;
    uint8_t *a = read_all("c_written.gguf", &n1);
    FILE *f = fopen(path, "rb");
    uint8_t *bb = NULL;
    if (f) { fseek(f, 0, SEEK_END); n2 = (size_t)ftell(f); fseek(f, 0, SEEK_SET); bb = malloc(n2); if (fread(bb, 1, n2, f) != n2) n2 = 0; fclose(f); }
    CHECK(a && bb && n1 == n2 && !memcmp(a, bb, n1), "the writer's output differs from tests/fixtures/gguf/c_written.gguf");
    free(a);
    free(bb);
    /* writer misuse is reported and leaves no file */
    gguf_writer *w = gguf_writer_open(path, 32, err, sizeof(err));
    gguf_w_u32(w, "k", 1);
    CHECK(gguf_w_u32(w, "k", 2) == -1 && strstr(gguf_writer_error(w), "duplicate metadata key 'k'"), "duplicate key");
    CHECK(gguf_writer_close(w, err, sizeof(err)) == -1 && strstr(err, "duplicate") && access(path, F_OK) != 0, "close after error");
    w = gguf_writer_open(path, 32, err, sizeof(err));
    const int64_t ne[2] = {32, 2};
    gguf_w_tensor(w, "t", 2, ne, GGML_TYPE_Q8_0);
    uint8_t zeros[200] = {0};
    CHECK(gguf_w_data(w, zeros, 100) == -1 && strstr(gguf_writer_error(w), "more than its 68"), "too much data");
    gguf_writer_abort(w);
    w = gguf_writer_open(path, 32, err, sizeof(err));
    gguf_w_tensor(w, "t", 2, ne, GGML_TYPE_Q8_0);
    gguf_w_data(w, zeros, 10);
    CHECK(gguf_writer_close(w, err, sizeof(err)) == -1 && strstr(err, "10 of 68"), "close before the data: %s", err);
    w = gguf_writer_open(path, 32, err, sizeof(err));
    CHECK(gguf_w_tensor(w, "t", 2, (const int64_t[]){33, 1}, GGML_TYPE_Q8_0) == -1 && strstr(gguf_writer_error(w), "multiple"), "bad ne");
    gguf_writer_abort(w);
    w = gguf_writer_open(path, 32, err, sizeof(err));
    CHECK(gguf_w_u32(w, "general.alignment", 64) == -1, "alignment mismatch");
    gguf_writer_abort(w);
    CHECK(gguf_writer_open("/nonexistent/dir/x.gguf", 32, err, sizeof(err)) == NULL && strstr(err, "/nonexistent/dir/x.gguf"), "%s", err);
    CHECK(gguf_writer_open(path, 24, err, sizeof(err)) == NULL && strstr(err, "power of two"), "%s", err);
    unlink(path);
    gguf_close(&src);
}

/* ===== the tiny DiffusionGemma conversions ===== */

/* HF name -> GGUF name, the table of ARCHITECTURE.md (a second, independent spelling of the one in
 * make_gguf_fixtures.py); NULL for tensors the converter drops. */
static int hf_to_gguf(const char *hf, char *out, size_t n) {
    static const char *global[][2] = {
        {"model.decoder.embed_tokens.weight", "token_embd.weight"},
        {"model.decoder.norm.weight", "output_norm.weight"},
        {"model.decoder.self_conditioning.pre_norm.weight", "self_cond_pre_norm.weight"},
        {"model.decoder.self_conditioning.gate_proj.weight", "self_cond_gate.weight"},
        {"model.decoder.self_conditioning.up_proj.weight", "self_cond_up.weight"},
        {"model.decoder.self_conditioning.down_proj.weight", "self_cond_down.weight"},
    };
    static const char *layer[][2] = {
        {"input_layernorm.weight", "attn_norm.weight"}, {"self_attn.q_proj.weight", "attn_q.weight"},
        {"self_attn.k_proj.weight", "attn_k.weight"}, {"self_attn.v_proj.weight", "attn_v.weight"},
        {"self_attn.o_proj.weight", "attn_output.weight"}, {"self_attn.q_norm.weight", "attn_q_norm.weight"},
        {"self_attn.k_norm.weight", "attn_k_norm.weight"}, {"post_attention_layernorm.weight", "post_attention_norm.weight"},
        {"pre_feedforward_layernorm.weight", "ffn_norm.weight"}, {"mlp.gate_proj.weight", "ffn_gate.weight"},
        {"mlp.up_proj.weight", "ffn_up.weight"}, {"mlp.down_proj.weight", "ffn_down.weight"},
        {"post_feedforward_layernorm_1.weight", "post_ffw_norm_1.weight"},
        {"pre_feedforward_layernorm_2.weight", "pre_ffw_norm_2.weight"}, {"router.proj.weight", "ffn_gate_inp.weight"},
        {"router.scale", "ffn_gate_inp.scale"}, {"router.per_expert_scale", "ffn_down_exps.scale"},
        {"experts.gate_up_proj", "ffn_gate_up_exps.weight"}, {"experts.down_proj", "ffn_down_exps.weight"},
        {"post_feedforward_layernorm_2.weight", "post_ffw_norm_2.weight"},
        {"post_feedforward_layernorm.weight", "post_ffw_norm.weight"}, {"layer_scalar", "layer_output_scale.weight"},
    };
    for (size_t i = 0; i < sizeof(global) / sizeof(global[0]); i++)
        if (!strcmp(hf, global[i][0])) { snprintf(out, n, "%s", global[i][1]); return 0; }
    int bid, pos = 0;
    if (sscanf(hf, "model.encoder.language_model.layers.%d.layer_scalar%n", &bid, &pos) == 1 && !hf[pos]) {
        snprintf(out, n, "blk.%d.enc_layer_output_scale.weight", bid);
        return 0;
    }
    if (sscanf(hf, "model.decoder.layers.%d.%n", &bid, &pos) == 1 && pos)
        for (size_t i = 0; i < sizeof(layer) / sizeof(layer[0]); i++)
            if (!strcmp(hf + pos, layer[i][0])) { snprintf(out, n, "blk.%d.%s", bid, layer[i][1]); return 0; }
    return -1;
}

/* The expected type of a converted tensor (the converter's rule + the file's type). */
static uint32_t expected_type(const char *gname, int ndim, int64_t ne0, uint32_t ftype, int layer_more_bits) {
    const size_t l = strlen(gname);
    const int is_w = l > 7 && !strcmp(gname + l - 7, ".weight");
    if (ndim <= 1 || strstr(gname, "_norm.weight") || strstr(gname, ".ffn_gate_inp.weight") || !is_w) return GGML_TYPE_F32;
    if (ftype == 0) return GGML_TYPE_F32;
    if (ftype == 32) return GGML_TYPE_BF16;
    if (ftype == 7) return ne0 % 32 ? GGML_TYPE_F16 : GGML_TYPE_Q8_0;
    /* 15: Q4_K_M-like */
    int six = !strcmp(gname, "token_embd.weight") ||
              (layer_more_bits && (strstr(gname, ".attn_v.") || strstr(gname, ".ffn_down.") || strstr(gname, ".ffn_down_exps.")));
    if (ne0 % 256 == 0) return six ? GGML_TYPE_Q6_K : GGML_TYPE_Q4_K;
    if (ne0 % 32) return GGML_TYPE_F16;
    return six ? GGML_TYPE_Q8_0 : GGML_TYPE_Q5_0;
}

typedef struct { const char *gguf, *hf_dir; uint32_t ftype; int n_layers, hidden, vocab, canvas; } model_case;

static void check_model(const model_case *mc) {
    gguf_file g;
    char err[512], path[512];
    if (open_fixture(&g, mc->gguf)) return;
    st_store st;
    memset(&st, 0, sizeof(st));
    snprintf(path, sizeof(path), "%s/%s", fixtures_dir(), mc->hf_dir);
    if (st_open_dir(&st, path, err, sizeof(err))) { CHECK(0, "%s", err); gguf_close(&g); return; }
    gguf_str s;
    int64_t v;
    CHECK(!gguf_get_str(&g, "general.architecture", &s, err, sizeof(err)) && str_is(s, "diffusion-gemma"), "%s: arch", mc->gguf);
    CHECK(!gguf_get_int(&g, "diffusion-gemma.block_count", 0, 1000, &v, err, sizeof(err)) && v == mc->n_layers, "%s: block_count", mc->gguf);
    CHECK(!gguf_get_int(&g, "diffusion-gemma.embedding_length", 0, 1 << 20, &v, err, sizeof(err)) && v == mc->hidden, "%s: embedding_length", mc->gguf);
    CHECK(!gguf_get_int(&g, "diffusion.canvas_length", 1, 1 << 20, &v, err, sizeof(err)) && v == mc->canvas, "%s: canvas_length", mc->gguf);
    CHECK(!gguf_get_int(&g, "general.file_type", 0, 100, &v, err, sizeof(err)) && v == mc->ftype, "%s: file_type", mc->gguf);
    CHECK(!gguf_get_str(&g, "tokenizer.ggml.model", &s, err, sizeof(err)) && str_is(s, "gemma4"), "%s: tokenizer model", mc->gguf);
    gguf_vtype et;
    uint64_t n;
    CHECK(!gguf_get_arr(&g, "tokenizer.ggml.tokens", &et, &n, err, sizeof(err)) && et == GGUF_STRING && n == (uint64_t)mc->vocab,
          "%s: token count", mc->gguf);
    CHECK(!gguf_get_arr(&g, "diffusion-gemma.attention.head_count_kv", &et, &n, err, sizeof(err)) && et == GGUF_INT32 &&
          n == (uint64_t)mc->n_layers, "%s: head_count_kv array", mc->gguf);
    const gguf_tensor *rf = gguf_find_tensor(&g, "rope_freqs.weight");
    CHECK(rf && rf->ggml_type == GGML_TYPE_F32 && rf->n_dims == 1, "%s: rope_freqs", mc->gguf);
    int mapped = 0, bad = 0, exact = 0;
    int counts[64] = {0};
    for (int i = 0; i < st.n_tensors; i++) {
        const st_tensor *t = &st.tensors[i];
        char gname[96];
        if (hf_to_gguf(t->name, gname, sizeof(gname))) continue;   /* vision: dropped */
        const gguf_tensor *gt = gguf_find_tensor(&g, gname);
        if (!gt) { bad++; fprintf(stderr, "  %s: %s (from %s) missing\n", mc->gguf, gname, t->name); continue; }
        mapped++;
        int shape_ok = gt->n_dims == t->ndim;
        int64_t nel = 1;
        for (int d = 0; d < t->ndim && shape_ok; d++) { shape_ok &= gt->ne[d] == t->shape[t->ndim - 1 - d]; nel *= t->shape[d]; }
        int layer = -1;
        sscanf(gname, "blk.%d.", &layer);
        const int L = mc->n_layers, more = layer >= 0 && (layer < L / 8 || layer >= 7 * L / 8 || (layer - L / 8) % 3 == 2);
        const uint32_t want = expected_type(gname, t->ndim, t->shape[t->ndim - 1], mc->ftype, more);
        if (!shape_ok || gt->ggml_type != want) {
            bad++;
            fprintf(stderr, "  %s: %s: shape or type %s (expected %s)\n", mc->gguf, gname, gguf_ggml_type_name(gt->ggml_type), gguf_ggml_type_name(want));
            continue;
        }
        counts[gt->ggml_type]++;
        /* the data: the source converted by our own code must give the same bytes */
        const int64_t cols = t->shape[t->ndim - 1], rows = nel / cols;
        float *x = malloc(sizeof(float) * (size_t)nel);
        const dg_dtype sdt = t->dtype == ST_BF16 ? DG_BF16 : t->dtype == ST_F16 ? DG_F16 : DG_F32;
        const dg_mat sm = dg_mat_init(t->data, sdt, rows, cols);
        for (int64_t r = 0; r < rows; r++) dg_dequant_range(&sm, r, 0, cols, x + r * cols);
        uint8_t *q = malloc((size_t)gt->nbytes + 1);
        int same;
        if (gt->ggml_type == GGML_TYPE_F32) {
            same = !memcmp(gt->data, x, (size_t)gt->nbytes);
        } else if (gt->ggml_type == GGML_TYPE_F16 || gt->ggml_type == GGML_TYPE_BF16) {
            for (int64_t k = 0; k < nel; k++) {
                const uint16_t h = gt->ggml_type == GGML_TYPE_F16 ? dg_f32_to_f16(x[k]) : dg_f32_to_bf16(x[k]);
                memcpy(q + 2 * k, &h, 2);
            }
            same = !memcmp(gt->data, q, (size_t)gt->nbytes);
        } else {
            const dg_dtype qdt = (dg_dtype)gt->dt;
            same = dg_quantize_gguf(qdt, x, q, nel, NULL) == gt->nbytes && !memcmp(gt->data, q, (size_t)gt->nbytes);
        }
        exact += same;
        if (!same) { bad++; fprintf(stderr, "  %s: %s (%s): data differs from the source converted here\n", mc->gguf, gname, gguf_ggml_type_name(gt->ggml_type)); }
        free(x);
        free(q);
    }
    /* +1: rope_freqs is generated */
    CHECK(bad == 0 && (uint64_t)mapped + 1 == g.n_tensors, "%s: %d problems, %d of %llu tensors mapped", mc->gguf, bad, mapped,
          (unsigned long long)g.n_tensors);
    printf("  %-20s %3llu tensors, %2llu keys: %d from %s bit-identical to our conversion (", mc->gguf,
           (unsigned long long)g.n_tensors, (unsigned long long)g.n_kv, exact, mc->hf_dir);
    for (int k = 0; k < 64; k++)
        if (counts[k]) printf(" %s:%d", gguf_ggml_type_name((uint32_t)k), counts[k]);
    printf(" )\n");
    st_close(&st);
    gguf_close(&g);
}

static void t_models(void) {
    static const model_case cases[] = {
        {"tiny-a-bf16.gguf", "tiny-a/bf16", 32, 4, 64, 2048, 16},
        {"tiny-a-q8_0.gguf", "tiny-a/f32", 7, 4, 64, 2048, 16},
        {"tiny-a-q4_k_m.gguf", "tiny-a/f32", 15, 4, 64, 2048, 16},
        {"tiny-b-q8_0.gguf", "tiny-b/f32", 7, 3, 48, 1500, 8},
        {"tiny-c-f32.gguf", "tiny-c/f32", 0, 6, 32, 1024, 12},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) check_model(&cases[i]);
}

/* tiny-k: real Q4_K / Q6_K blocks from ggml's quantizer (no HF source to compare with): every type is
 * one the engine decodes and every row decodes to finite values. */
static void t_tiny_k(void) {
    gguf_file g;
    if (open_fixture(&g, "tiny-k-q4_k_m.gguf")) return;
    int counts[64] = {0}, bad = 0;
    for (uint64_t i = 0; i < g.n_tensors; i++) {
        const gguf_tensor *t = &g.tensors[i];
        counts[t->ggml_type]++;
        if (t->dt < 0) { bad++; continue; }
        const int64_t cols = t->ne[0], rows = t->ne[1] * t->ne[2] * t->ne[3];
        const dg_mat m = dg_mat_init(t->data, (dg_dtype)t->dt, rows, cols);
        float *x = malloc(sizeof(float) * (size_t)cols);
        for (int64_t r = 0; r < rows; r++) {
            dg_dequant_range(&m, r, 0, cols, x);
            for (int64_t c = 0; c < cols; c++) bad += !isfinite(x[c]);
        }
        free(x);
    }
    CHECK(counts[GGML_TYPE_Q4_K] > 0 && counts[GGML_TYPE_Q6_K] > 0 && counts[GGML_TYPE_Q5_0] > 0 && bad == 0,
          "tiny-k: Q4_K %d, Q6_K %d, Q5_0 %d, %d bad", counts[GGML_TYPE_Q4_K], counts[GGML_TYPE_Q6_K], counts[GGML_TYPE_Q5_0], bad);
    printf("  tiny-k-q4_k_m.gguf: %llu tensors: F32 %d, Q4_K %d, Q6_K %d, Q5_0 %d; all rows decode to finite values\n",
           (unsigned long long)g.n_tensors, counts[GGML_TYPE_F32], counts[GGML_TYPE_Q4_K], counts[GGML_TYPE_Q6_K], counts[GGML_TYPE_Q5_0]);
    gguf_close(&g);
}

const dg_test gguf_tests[] = {
    {"gguf/kv_types", t_kv_types},
    {"gguf/corrupt", t_corrupt},
    {"gguf/alignment_value", t_alignment_value},
    {"gguf/writer", t_writer},
    {"gguf/models", t_models},
    {"gguf/tiny_k", t_tiny_k},
    {NULL, NULL},
};
