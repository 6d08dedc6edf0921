/*
 * test_errors.c - bad input gets one clear error naming the file and the tensor or field at fault,
 * and never a crash: truncated and corrupt safetensors, wrong dtypes and shapes, missing tensors,
 * malformed configs, broken shard indexes, out-of-range ids, a full context.
 *
 * Each case copies the tiny-a float32 fixture into a temporary directory, damages one thing, and
 * checks the message of dg_engine_load (or of the failing call).
 */
#define _POSIX_C_SOURCE 200809L
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "test.h"

static const char *tmpdir(void) { return test_tmpdir(); }

static unsigned char *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)sz + 1);
    *n = fread(b, 1, (size_t)sz, f);
    fclose(f);
    return b;
}

static void write_all(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) { perror(path); exit(1); }
    fwrite(data, 1, n, f);
    fclose(f);
}

static void src_path(char *out, size_t n, const char *file) {
    snprintf(out, n, "%s/tiny-a/f32/%s", fixtures_dir(), file);
}

/* a fresh case directory holding the fixture's config.json (and nothing else) */
static const char *case_dir(const char *name) {
    static char dir[512];
    snprintf(dir, sizeof(dir), "%s/%s", tmpdir(), name);
    mkdir(dir, 0755);
    char src[512], dst[600];
    size_t n;
    src_path(src, sizeof(src), "config.json");
    unsigned char *b = read_all(src, &n);
    snprintf(dst, sizeof(dst), "%s/config.json", dir);
    write_all(dst, b, n);
    free(b);
    return dir;
}

/* Tensor edits applied while rewriting the fixture's model.safetensors. */
typedef struct {
    const char *drop;            /* omit this tensor */
    const char *retype, *dtype;  /* give this tensor another dtype string */
    const char *reshape;         /* swap the two dims of this tensor */
    const char *past_end;        /* make this tensor's end offset point past the file */
    const char *dup_from, *dup_to; /* add a copy of dup_from named dup_to */
} edits;

static void write_model(const char *dir, const edits *ed) {
    char src[512], err[512];
    src_path(src, sizeof(src), "model.safetensors");
    st_store st = {0};
    if (st_add_file(&st, src, err, sizeof(err)) || st_finish(&st, err, sizeof(err))) { fprintf(stderr, "%s\n", err); exit(1); }
    json_t *hdr = json_object();
    uint64_t off = 0;
    for (int i = 0; i < st.n_tensors; i++) {
        const st_tensor *t = &st.tensors[i];
        if (ed->drop && !strcmp(t->name, ed->drop)) continue;
        json_t *e = json_object(), *shape = json_array();
        int swap = ed->reshape && !strcmp(t->name, ed->reshape) && t->ndim == 2;
        for (int d = 0; d < t->ndim; d++) json_array_append_new(shape, json_integer(t->shape[swap ? 1 - d : d]));
        const char *dt = ed->retype && !strcmp(t->name, ed->retype) ? ed->dtype : st_dtype_name(t->dtype);
        uint64_t end = off + t->nbytes;
        if (ed->past_end && !strcmp(t->name, ed->past_end)) end += 1 << 20;
        json_object_set_new(e, "dtype", json_string(dt));
        json_object_set_new(e, "shape", shape);
        json_object_set_new(e, "data_offsets", json_pack("[I, I]", (json_int_t)off, (json_int_t)end));
        json_object_set_new(hdr, t->name, e);
        off += t->nbytes;
        if (ed->dup_from && !strcmp(t->name, ed->dup_from)) {
            json_t *e2 = json_deep_copy(e);
            json_object_set_new(e2, "data_offsets", json_pack("[I, I]", (json_int_t)off, (json_int_t)(off + t->nbytes)));
            json_object_set_new(hdr, ed->dup_to, e2);
            off += t->nbytes;
        }
    }
    char *js = json_dumps(hdr, JSON_COMPACT);
    size_t jl = strlen(js), padded = (jl + 7) / 8 * 8;
    char path[600];
    snprintf(path, sizeof(path), "%s/model.safetensors", dir);
    FILE *f = fopen(path, "wb");
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    fwrite(len8, 1, 8, f);
    fwrite(js, 1, jl, f);
    for (size_t i = jl; i < padded; i++) fputc(' ', f);
    for (int i = 0; i < st.n_tensors; i++) {
        const st_tensor *t = &st.tensors[i];
        if (ed->drop && !strcmp(t->name, ed->drop)) continue;
        fwrite(t->data, 1, t->nbytes, f);
        if (ed->dup_from && !strcmp(t->name, ed->dup_from)) fwrite(t->data, 1, t->nbytes, f);
    }
    fclose(f);
    free(js);
    json_decref(hdr);
    st_close(&st);
}

/* dg_engine_load must fail, and the message must contain every given substring */
static void expect_load_error(const char *dir, const char *a, const char *b) {
    char err[1024] = "";
    dg_engine *e = NULL;
    int rc = dg_engine_load(dir, NULL, &e, err, sizeof(err));
    CHECK(rc != 0 && e == NULL, "load of %s should fail", dir);
    CHECK(!a || strstr(err, a), "error lacks \"%s\": %s", a, err);
    CHECK(!b || strstr(err, b), "error lacks \"%s\": %s", b, err);
    printf("  %s\n", err);
    if (e) dg_engine_free(e);
}

static void edit_config(const char *dir, const char *key, json_t *val /* NULL = delete */) {
    char path[600];
    snprintf(path, sizeof(path), "%s/config.json", dir);
    json_t *c = json_load_file(path, 0, NULL);
    json_t *tc = json_object_get(c, "text_config");
    if (val) json_object_set_new(tc, key, val); else json_object_del(tc, key);
    json_dump_file(c, path, JSON_INDENT(1));
    json_decref(c);
}

static void t_truncated(void) {
    const char *dir = case_dir("truncated");
    edits none = {0};
    write_model(dir, &none);
    char path[600];
    snprintf(path, sizeof(path), "%s/model.safetensors", dir);
    size_t n;
    unsigned char *b = read_all(path, &n);
    write_all(path, b, n * 6 / 10);
    expect_load_error(dir, "model.safetensors", "past the end of the file");
    write_all(path, b, 5);
    expect_load_error(dir, "model.safetensors", "truncated");
    /* header length larger than the file */
    unsigned char big[16] = {0xff, 0xff, 0xff, 0x00, 0, 0, 0, 0, '{', '}'};
    write_all(path, big, 10);
    expect_load_error(dir, "model.safetensors", "header length");
    /* a sweep of truncation points: every one is a clean error */
    int crashes = 0;
    for (size_t cut = 0; cut < n; cut += n / 97 + 1) {
        write_all(path, b, cut);
        char err[512];
        dg_engine *e = NULL;
        if (dg_engine_load(dir, NULL, &e, err, sizeof(err)) == 0) { crashes++; dg_engine_free(e); }
    }
    CHECK(crashes == 0, "%d truncated files loaded", crashes);
    free(b);
}

static void t_corrupt_header(void) {
    const char *dir = case_dir("header");
    edits pe = {.past_end = "model.decoder.layers.1.mlp.up_proj.weight"};
    write_model(dir, &pe);
    expect_load_error(dir, "model.decoder.layers.1.mlp.up_proj.weight", "past the end");
    char path[600];
    snprintf(path, sizeof(path), "%s/model.safetensors", dir);
    const char bad[] = "\x09\0\0\0\0\0\0\0{\"a\": 1, ";
    write_all(path, bad, sizeof(bad) - 1);
    expect_load_error(dir, "model.safetensors", "JSON");
}

static void t_wrong_dtype(void) {
    const char *dir = case_dir("dtype");
    edits ed = {.retype = "model.decoder.layers.0.mlp.up_proj.weight", .dtype = "I32"};
    write_model(dir, &ed);
    expect_load_error(dir, "model.decoder.layers.0.mlp.up_proj.weight", "dtype I32");
    edits ed2 = {.retype = "model.decoder.norm.weight", .dtype = "Q9_X"};
    write_model(dir, &ed2);
    expect_load_error(dir, "model.decoder.norm.weight", "unknown dtype");
}

static void t_wrong_shape(void) {
    const char *dir = case_dir("shape");
    edits ed = {.reshape = "model.decoder.layers.2.mlp.gate_proj.weight"};
    write_model(dir, &ed);
    expect_load_error(dir, "model.decoder.layers.2.mlp.gate_proj.weight", "has shape [64, 96], expected [96, 64]");
}

static void t_missing_tensor(void) {
    const char *dir = case_dir("missing");
    edits ed = {.drop = "model.decoder.layers.1.router.scale"};
    write_model(dir, &ed);
    expect_load_error(dir, "model.decoder.layers.1.router.scale", "missing");
    edits ed2 = {.drop = "model.encoder.language_model.layers.3.layer_scalar"};
    write_model(dir, &ed2);
    expect_load_error(dir, "model.encoder.language_model.layers.3.layer_scalar", "missing");
}

static void t_untied_encoder(void) {
    const char *dir = case_dir("untied");
    edits ed = {.dup_from = "model.decoder.embed_tokens.weight", .dup_to = "model.encoder.language_model.embed_tokens.weight"};
    write_model(dir, &ed);
    expect_load_error(dir, "model.encoder.language_model.embed_tokens.weight", "untied");
}

static void t_bad_config(void) {
    const char *dir = case_dir("config");
    edits none = {0};
    write_model(dir, &none);
    char path[600];
    snprintf(path, sizeof(path), "%s/config.json", dir);
    write_all(path, "{\n  \"model_type\": \"diffusion_gemma\",\n  \"text_config\": {,\n}", 58);
    expect_load_error(dir, "config.json", "line 3");
    dir = case_dir("config2");
    write_model(dir, &none);
    edit_config(dir, "hidden_size", json_string("64"));
    expect_load_error(dir, "config.json", "text_config.hidden_size must be an integer");
    dir = case_dir("config3");
    write_model(dir, &none);
    edit_config(dir, "num_experts", NULL);
    expect_load_error(dir, "config.json", "text_config.num_experts is required");
    dir = case_dir("config4");
    write_model(dir, &none);
    edit_config(dir, "num_experts", json_integer(9));   /* disagrees with the weights */
    expect_load_error(dir, "model.decoder.layers.0.router.proj.weight", "num_experts");
    dir = case_dir("config5");
    write_model(dir, &none);
    edit_config(dir, "num_attention_heads", json_integer(3));
    expect_load_error(dir, "config.json", "num_attention_heads");
    dir = case_dir("config6");
    write_model(dir, &none);
    json_t *lt = json_pack("[s, s, s, s]", "sliding_attention", "sliding_attention", "sliding_attention", "dense");
    edit_config(dir, "layer_types", lt);
    expect_load_error(dir, "config.json", "layer_types[3]");
    dir = case_dir("config7");
    write_model(dir, &none);
    json_t *rp = json_pack("{s:{s:s, s:f}, s:{s:s, s:f}}", "sliding_attention", "rope_type", "yarn", "rope_theta", 1e4,
                           "full_attention", "rope_type", "proportional", "rope_theta", 1e6);
    edit_config(dir, "rope_parameters", rp);
    expect_load_error(dir, "rope_parameters.sliding_attention.rope_type", "yarn");
    dir = case_dir("config8");
    write_model(dir, &none);
    edit_config(dir, "final_logit_softcapping", json_null());
    expect_load_error(dir, "config.json", "final_logit_softcapping must be a number");
    dir = case_dir("config9");
    write_model(dir, &none);
    edit_config(dir, "rms_norm_eps", json_real(0.0));
    expect_load_error(dir, "config.json", "rms_norm_eps");
    expect_load_error("/nonexistent/model", "/nonexistent/model/config.json", NULL);
}

static void t_bad_index(void) {
    const char *dir = case_dir("index");
    edits none = {0};
    write_model(dir, &none);
    char path[600];
    snprintf(path, sizeof(path), "%s/model.safetensors.index.json", dir);
    const char *idx = "{\"metadata\": {}, \"weight_map\": {\"model.decoder.norm.weight\": \"model-00002-of-00002.safetensors\"}}";
    write_all(path, idx, strlen(idx));
    expect_load_error(dir, "model-00002-of-00002.safetensors", "cannot open");
    const char *idx2 = "{\"metadata\": {}, \"weight_map\": {\"model.decoder.norm.weight\": \"../../etc/passwd\"}}";
    write_all(path, idx2, strlen(idx2));
    expect_load_error(dir, "weight_map", "not a shard file name");
    const char *idx3 = "{\"metadata\": {}, \"weight_map\": {\"no.such.tensor\": \"model.safetensors\"}}";
    write_all(path, idx3, strlen(idx3));
    expect_load_error(dir, "no.such.tensor", "not found");
}

static void t_bad_calls(void) {
    char dir[512], err[512];
    snprintf(dir, sizeof(dir), "%s/tiny-a/f32", fixtures_dir());
    dg_engine *e;
    if (dg_engine_load(dir, NULL, &e, err, sizeof(err))) { CHECK(0, "%s", err); return; }
    dg_session_params sp = {8, 0, 0, DG_KERNELS_AUTO, 0};
    dg_session *s;
    CHECK(dg_session_create(e, &sp, &s, err, sizeof(err)) == 0, "%s", err);
    int32_t ids[20] = {1, 2, 3, 2048, 5};
    CHECK(dg_encode(s, ids, 5, err, sizeof(err)) != 0 && strstr(err, "2048") && strstr(err, "index 3"), "out-of-range id: %s", err);
    CHECK(dg_session_n_past(s) == 0, "a rejected encode must not change the cache");
    ids[3] = 4;
    CHECK(dg_encode(s, ids, 5, err, sizeof(err)) == 0, "%s", err);
    CHECK(dg_encode(s, ids, 5, err, sizeof(err)) != 0 && strstr(err, "context full"), "context full: %s", err);
    CHECK(dg_session_n_past(s) == 5, "n_past %d", dg_session_n_past(s));
    float *lg = malloc(sizeof(float) * 17 * 2048);
    int32_t canvas[17] = {0};
    CHECK(dg_decode(s, canvas, 17, NULL, lg, err, sizeof(err)) != 0 && strstr(err, "canvas_length"), "canvas too long: %s", err);
    canvas[3] = -1;
    CHECK(dg_decode(s, canvas, 16, NULL, lg, err, sizeof(err)) != 0 && strstr(err, "-1"), "negative id: %s", err);
    dg_session_reset(s);
    CHECK(dg_session_n_past(s) == 0, "reset");
    free(lg);
    dg_session_free(s);
    dg_engine_free(e);
}

const dg_test error_tests[] = {
    {"errors/truncated", t_truncated},
    {"errors/corrupt_header", t_corrupt_header},
    {"errors/wrong_dtype", t_wrong_dtype},
    {"errors/wrong_shape", t_wrong_shape},
    {"errors/missing_tensor", t_missing_tensor},
    {"errors/untied_encoder", t_untied_encoder},
    {"errors/bad_config", t_bad_config},
    {"errors/bad_index", t_bad_index},
    {"errors/bad_calls", t_bad_calls},
    {NULL, NULL},
};
