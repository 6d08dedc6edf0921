/*
 * test_mlx.c - MLX quantized checkpoints: dequantization bit-exact with mx.dequantize, the reference
 * matmul on MLX views, the loader on tiny-a converted by mlx-vlm's own converter, and bad input.
 *
 * Fixtures (tools/reference/make_mlx_fixtures.py, PyPI mlx 0.32.4 / mlx-vlm 0.7.10):
 *   tests/fixtures/mlx/dequant.safetensors      packed matrices + mx.dequantize output, every mode,
 *                                               affine bits x group x scale type, extreme scales
 *   tests/fixtures/tiny-a/mlx-<variant>/        4bit, 8bit, mixed_3_6, nvfp4 conversions
 *   tests/fixtures/tiny-a/ref-mlx-<variant>.safetensors   per-module hashes / rows of the dequantized
 *                                               weights (and the transformers logits, for the engine)
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "kernels/quants_mlx.h"
#include "load/mlx.h"
#include "test.h"

static uint32_t fbits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

/* exact equality of float32 values: same bits, or both NaN */
static int same(float a, float b) { return (isnan(a) && isnan(b)) || fbits(a) == fbits(b); }

static float st_get(const st_tensor *t, int64_t i) {
    uint16_t h;
    switch (t->dtype) {
    case ST_BF16: memcpy(&h, t->data + i * 2, 2); return dg_bf16_to_f32(h);
    case ST_F16: memcpy(&h, t->data + i * 2, 2); return dg_f16_to_f32(h);
    default: { float f; memcpy(&f, t->data + i * 4, 4); return f; }
    }
}

static int open_fixture(st_store *st, const char *rel) {
    char path[512], err[512];
    snprintf(path, sizeof(path), "%s/%s", fixtures_dir(), rel);
    memset(st, 0, sizeof(*st));
    if (st_add_file(st, path, err, sizeof(err)) || st_finish(st, err, sizeof(err))) {
        CHECK(0, "cannot open fixture: %s", err);
        return -1;
    }
    return 0;
}

static const st_tensor *need(const st_store *st, const char *fmt, const char *a) {
    char name[256];
    snprintf(name, sizeof(name), fmt, a);
    const st_tensor *t = st_find(st, name);
    CHECK(t != NULL, "fixture tensor %s missing", name);
    return t;
}

/* A view of a fixture matrix (w [rows, P] U32; scales [rows, Gn]; biases or NULL). */
static dg_mat fixture_view(const st_tensor *w, const st_tensor *sc, const st_tensor *bi, dg_dtype mode, int bits, int64_t cols) {
    dg_mat m;
    memset(&m, 0, sizeof(m));
    m.data = w->data;
    m.dt = mode;
    m.rows = w->shape[0];
    m.cols = cols;
    m.row_bytes = dg_mlx_row_bytes(bits, cols);
    m.mlx.scales = sc->data;
    m.mlx.biases = bi ? bi->data : NULL;
    m.mlx.sdt = sc->dtype == ST_F32 ? DG_F32 : sc->dtype == ST_F16 ? DG_F16 : sc->dtype == ST_BF16 ? DG_BF16 : -1;
    m.mlx.bits = bits;
    m.mlx.group = (int)(cols / sc->shape[1]);
    return m;
}

/* Dequantize every row whole and in group-aligned pieces of varying size, and compare with the
 * expected tensor exactly. Returns the number of mismatching elements. */
static int64_t compare_matrix(const dg_mat *m, const st_tensor *want, const char *label) {
    const int64_t R = m->rows, C = m->cols, G = m->mlx.group;
    float *row = malloc(sizeof(float) * (size_t)C), *piece = malloc(sizeof(float) * (size_t)C);
    int64_t bad = 0, bad_piece = 0;
    for (int64_t r = 0; r < R; r++) {
        dg_dequant_range(m, r, 0, C, row);
        for (int64_t c = 0; c < C; c++) {
            const float e = st_get(want, r * C + c);
            if (!same(row[c], e)) {
                if (bad < 3)
                    fprintf(stderr, "  %s: row %lld col %lld: %.9g (0x%08x), mx.dequantize %.9g (0x%08x)\n", label, (long long)r,
                            (long long)c, row[c], fbits(row[c]), e, fbits(e));
                bad++;
            }
        }
        /* pieces: 1, 2, 3, ... groups (the reference matmul's 256-element chunks are such pieces), then an
         * unaligned start (any c0 is supported) */
        int64_t c0 = 0, k = 1;
        while (c0 < C) {
            const int64_t n = k * G < C - c0 ? k * G : C - c0;
            dg_dequant_range(m, r, c0, n, piece + c0);
            c0 += n;
            k++;
        }
        if (C > 7) dg_dequant_mlx(m, r, 5, C - 7, piece + 5);
        for (int64_t c = 0; c < C; c++) bad_piece += !same(piece[c], row[c]);
    }
    CHECK(bad_piece == 0, "%s: %lld elements differ when dequantized in pieces", label, (long long)bad_piece);
    free(row);
    free(piece);
    return bad;
}

static void t_dequant_affine(void) {
    st_store st;
    if (open_fixture(&st, "mlx/dequant.safetensors")) return;
    static const int bits_list[] = {1, 2, 3, 4, 5, 6, 8}, groups[] = {32, 64, 128};
    static const char *sdts[] = {"f32", "f16", "bf16"};
    int combos = 0, failed = 0;
    int64_t elems = 0, special = 0;
    for (size_t b = 0; b < sizeof(bits_list) / sizeof(bits_list[0]); b++)
        for (size_t g = 0; g < 3; g++)
            for (size_t s = 0; s < 3; s++) {
                char pre[64];
                snprintf(pre, sizeof(pre), "affine.b%d.g%d.%s", bits_list[b], groups[g], sdts[s]);
                const st_tensor *w = need(&st, "%s.w", pre), *sc = need(&st, "%s.scales", pre),
                                *bi = need(&st, "%s.biases", pre), *out = need(&st, "%s.out", pre);
                if (!w || !sc || !bi || !out) { failed++; continue; }
                const int64_t cols = out->shape[1];
                CHECK(cols * bits_list[b] == w->shape[1] * 32 && cols == sc->shape[1] * groups[g], "%s: fixture shapes", pre);
                dg_mat m = fixture_view(w, sc, bi, DG_MLX_AFFINE, bits_list[b], cols);
                const int64_t bad = compare_matrix(&m, out, pre);
                CHECK(bad == 0, "%s: %lld of %lld elements differ from mx.dequantize", pre, (long long)bad, (long long)(m.rows * cols));
                for (int64_t i = 0; i < m.rows * cols; i++) special += !isfinite(st_get(out, i));
                combos++;
                failed += bad != 0;
                elems += m.rows * cols;
            }
    printf("  affine: %d combinations (bits 1,2,3,4,5,6,8 x group 32,64,128 x scales f32,f16,bf16), %lld elements "
           "(%lld inf/NaN), %d combinations differ from mx.dequantize\n", combos, (long long)elems, (long long)special, failed);
    st_close(&st);
}

static void t_dequant_fp(void) {
    st_store st;
    if (open_fixture(&st, "mlx/dequant.safetensors")) return;
    static const struct { const char *name; dg_dtype mode; int bits; } cases[] = {
        {"mxfp4", DG_MLX_MXFP4, 4}, {"mxfp8", DG_MLX_MXFP8, 8}, {"nvfp4", DG_MLX_NVFP4, 4},
        {"mxfp4.real", DG_MLX_MXFP4, 4}, {"mxfp8.real", DG_MLX_MXFP8, 8}, {"nvfp4.real", DG_MLX_NVFP4, 4},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const st_tensor *w = need(&st, "%s.w", cases[i].name), *sc = need(&st, "%s.scales", cases[i].name),
                        *out = need(&st, "%s.out", cases[i].name);
        if (!w || !sc || !out) continue;
        dg_mat m = fixture_view(w, sc, NULL, cases[i].mode, cases[i].bits, out->shape[1]);
        CHECK(m.mlx.group == dg_mlx_mode_group(cases[i].mode), "%s: group %d", cases[i].name, m.mlx.group);
        const int64_t bad = compare_matrix(&m, out, cases[i].name);
        CHECK(bad == 0, "%s: %lld elements differ from mx.dequantize", cases[i].name, (long long)bad);
        printf("  %-10s %lld x %lld, group %d: %lld elements differ from mx.dequantize(dtype=float32)\n", cases[i].name,
               (long long)m.rows, (long long)m.cols, m.mlx.group, (long long)bad);
    }
    /* the element decoders on their own */
    CHECK(dg_e4m3_to_f32(0x7e) == 448.0f && dg_e4m3_to_f32(0x01) == ldexpf(1.0f, -9), "e4m3 max / min subnormal");
    CHECK(isnan(dg_e4m3_to_f32(0x7f)) && isnan(dg_e4m3_to_f32(0xff)), "e4m3 NaN");
    CHECK(dg_e8m0_to_f32(0) == ldexpf(1.0f, -127) && dg_e8m0_to_f32(127) == 1.0f && isinf(dg_e8m0_to_f32(255)), "e8m0");
    CHECK(dg_e2m1_to_f32(7) == 6.0f && fbits(dg_e2m1_to_f32(8)) == 0x80000000u, "e2m1 6 and -0");
    st_close(&st);
}

/* dg_matmul_ref on MLX views against the same product on the dequantized float32 matrix, and
 * dg_mat_rows slicing (the expert views). */
static void t_matmul(void) {
    st_store st;
    if (open_fixture(&st, "mlx/dequant.safetensors")) return;
    static const char *names[] = {"affine.b3.g32.bf16", "affine.b5.g64.f16", "affine.b6.g128.f32", "affine.b4.g64.bf16",
                                  "mxfp4.real", "mxfp8.real", "nvfp4.real", "mxfp4"};
    double worst = 0;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        const st_tensor *w = need(&st, "%s.w", names[i]), *sc = need(&st, "%s.scales", names[i]), *out = need(&st, "%s.out", names[i]);
        if (!w || !sc || !out) continue;
        const int affine = !strncmp(names[i], "affine", 6);
        const st_tensor *bi = affine ? need(&st, "%s.biases", names[i]) : NULL;
        const int64_t cols = out->shape[1];
        const int bits = (int)(w->shape[1] * 32 / cols);
        const dg_dtype mode = affine ? DG_MLX_AFFINE : !strncmp(names[i], "mxfp8", 5) ? DG_MLX_MXFP8
                            : !strncmp(names[i], "nvfp4", 5) ? DG_MLX_NVFP4 : DG_MLX_MXFP4;
        dg_mat m = fixture_view(w, sc, bi, mode, bits, cols);
        /* finite rows only (affine rows 4-5 and the extreme mx scale codes hold inf/NaN) */
        int64_t rows = 0;
        while (rows < m.rows) {
            int fin = 1;
            for (int64_t c = 0; c < cols && fin; c++) fin = isfinite(st_get(out, rows * cols + c)) && fabsf(st_get(out, rows * cols + c)) < 1e30f;
            if (!fin) break;
            rows++;
        }
        m.rows = rows;
        const int n = 3;
        float *x = malloc(sizeof(float) * (size_t)(n * cols)), *dense = malloc(sizeof(float) * (size_t)(rows * cols));
        float *y = malloc(sizeof(float) * (size_t)(n * rows)), *yd = malloc(sizeof(float) * (size_t)(n * rows));
        for (int64_t k = 0; k < n * cols; k++) x[k] = (float)sin(0.37 * (double)k + 1.0);
        for (int64_t k = 0; k < rows * cols; k++) dense[k] = st_get(out, k);
        dg_mat dm = dg_mat_init(dense, DG_F32, rows, cols);
        dg_matmul_ref(y, x, n, &m);
        dg_matmul_ref(yd, x, n, &dm);
        double md = 0, mr = 0;
        for (int64_t k = 0; k < n * rows; k++) {
            md = fmax(md, fabs((double)y[k] - yd[k]));
            mr = fmax(mr, fabs((double)yd[k]));
        }
        const double rel = mr > 0 ? md / mr : md;
        worst = fmax(worst, rel);
        CHECK(rel <= 1e-6, "%s: matmul on the MLX view differs from the dequantized matrix by %.3e", names[i], rel);
        /* a row slice keeps its scales: rows [1, rows) of the view are rows 1.. of the matrix */
        if (rows > 1) {
            dg_mat s = dg_mat_rows(&m, 1, rows - 1);
            float *r1 = malloc(sizeof(float) * (size_t)cols);
            dg_dequant_range(&s, 0, 0, cols, r1);
            int bad = 0;
            for (int64_t c = 0; c < cols; c++) bad += !same(r1[c], dense[cols + c]);
            CHECK(bad == 0, "%s: dg_mat_rows slice: %d elements differ", names[i], bad);
            free(r1);
        }
        free(x); free(dense); free(y); free(yd);
    }
    printf("  dg_matmul_ref on MLX views vs the dequantized float32 matrix: max relative difference %.3e\n", worst);
    st_close(&st);
}

/* ===== the loader on the converted fixtures ===== */

static uint64_t hash_rows(const dg_mat *m, float *buf) {
    uint64_t h = 0, i = 0;
    for (int64_t r = 0; r < m->rows; r++) {
        dg_dequant_range(m, r, 0, m->cols, buf);
        for (int64_t c = 0; c < m->cols; c++) h += (uint64_t)fbits(buf[c]) * ++i;
    }
    return h;
}

typedef struct {
    const st_store *st, *ref;
    const dg_mlx_quant *q;
    const char *dir, *variant;
    int bound, quantized, bad, copied, by_mode[5];
    int bits_seen[9];
} lctx;

static void check_module(lctx *c, const char *module, int64_t E, int64_t R, int64_t C) {
    char err[1024];
    dg_mlx_view v;
    if (dg_mlx_bind(c->st, c->q, c->dir, module, E, R, C, &v, err, sizeof(err))) {
        CHECK(0, "%s: %s", c->variant, err);
        c->bad++;
        return;
    }
    c->bound++;
    const st_tensor *tq = need(c->ref, "weights.%s.q", module), *th = need(c->ref, "weights.%s.hash", module);
    const st_tensor *t0 = need(c->ref, "weights.%s.row0", module), *tn = need(c->ref, "weights.%s.rowN", module);
    const st_tensor *ts = need(c->ref, "weights.%s.shape", module);
    if (!tq || !th || !t0 || !tn || !ts) { c->bad++; return; }
    int32_t q[3], shp[3];
    memcpy(q, tq->data, 12);
    memcpy(shp, ts->data, 12);
    const int mode = v.scales ? 1 + (int)(v.m.dt - DG_MLX_AFFINE) : 0;
    const int bits = v.scales ? v.m.mlx.bits : 0, group = v.scales ? v.m.mlx.group : 0;
    CHECK(q[0] == mode && q[1] == bits && q[2] == group, "%s %s: bound as mode %d bits %d group %d, mlx-vlm: %d %d %d", c->variant,
          module, mode, bits, group, q[0], q[1], q[2]);
    CHECK(shp[0] == E && shp[1] == R && shp[2] == C, "%s %s: fixture shape %d %d %d", c->variant, module, shp[0], shp[1], shp[2]);
    CHECK(v.m.rows == (E ? E : 1) * R && v.m.cols == C, "%s %s: view %lld x %lld", c->variant, module, (long long)v.m.rows, (long long)v.m.cols);
    float *buf = malloc(sizeof(float) * (size_t)C);
    uint64_t want;
    memcpy(&want, th->data, 8);
    const uint64_t h = hash_rows(&v.m, buf);
    int rows_bad = 0;
    dg_dequant_range(&v.m, 0, 0, C, buf);
    for (int64_t k = 0; k < C; k++) rows_bad += !same(buf[k], st_get(t0, k));
    dg_dequant_range(&v.m, v.m.rows - 1, 0, C, buf);
    for (int64_t k = 0; k < C; k++) rows_bad += !same(buf[k], st_get(tn, k));
    free(buf);
    c->copied += v.owned != NULL;
    dg_mlx_view_free(&v);
    CHECK(h == want && rows_bad == 0, "%s %s: dequantized weights differ from mx.dequantize (hash %s, %d elements of the first/last row)",
          c->variant, module, h == want ? "equal" : "differs", rows_bad);
    c->bad += h != want || rows_bad;
    c->by_mode[mode]++;
    if (v.scales) { c->quantized++; c->bits_seen[bits] = 1; }
}

static void loader_variant(const char *variant) {
    char dir[512], rel[256], err[1024];
    snprintf(dir, sizeof(dir), "%s/tiny-a/mlx-%s", fixtures_dir(), variant);
    snprintf(rel, sizeof(rel), "tiny-a/ref-mlx-%s.safetensors", variant);
    dg_config cfg;
    dg_mlx_quant q;
    st_store st = {0}, ref;
    memset(&cfg, 0, sizeof(cfg));
    if (dg_config_load(&cfg, dir, err, sizeof(err)) || dg_mlx_quant_load(&q, dir, err, sizeof(err))) { CHECK(0, "%s", err); dg_config_free(&cfg); return; }
    CHECK(q.present, "%s: no quantization block", variant);
    if (st_open_dir(&st, dir, err, sizeof(err)) || open_fixture(&ref, rel)) {
        CHECK(0, "%s", err);
        st_close(&st);
        dg_mlx_quant_free(&q);
        dg_config_free(&cfg);
        return;
    }
    lctx c = {&st, &ref, &q, dir, variant, 0, 0, 0, 0, {0}, {0}};
    const int64_t V = cfg.vocab_size, H = cfg.hidden_size, I = cfg.intermediate_size, E = cfg.n_experts, Ie = cfg.expert_size, nq = cfg.n_heads;
    check_module(&c, "model.decoder.embed_tokens", 0, V, H);
    check_module(&c, "model.decoder.self_conditioning.gate_proj", 0, I, H);
    check_module(&c, "model.decoder.self_conditioning.up_proj", 0, I, H);
    check_module(&c, "model.decoder.self_conditioning.down_proj", 0, H, I);
    for (int l = 0; l < cfg.n_layers; l++) {
        const int64_t d = cfg.layer_head_dim[l], nkv = cfg.layer_n_kv[l];
        char m[256];
#define MOD(s) (snprintf(m, sizeof(m), "model.decoder.layers.%d.%s", l, s), m)
        check_module(&c, MOD("self_attn.q_proj"), 0, nq * d, H);
        check_module(&c, MOD("self_attn.k_proj"), 0, nkv * d, H);
        if (!cfg.layer_full[l]) check_module(&c, MOD("self_attn.v_proj"), 0, nkv * d, H);
        check_module(&c, MOD("self_attn.o_proj"), 0, H, nq * d);
        check_module(&c, MOD("mlp.gate_proj"), 0, I, H);
        check_module(&c, MOD("mlp.up_proj"), 0, I, H);
        check_module(&c, MOD("mlp.down_proj"), 0, H, I);
        check_module(&c, MOD("router.proj"), 0, E, H);
        check_module(&c, MOD("experts.gate_up_proj"), E, 2 * Ie, H);
        check_module(&c, MOD("experts.down_proj"), E, H, Ie);
#undef MOD
    }
    /* every matrix module the fixture lists was bound, and every other text tensor is a float vector */
    int listed = 0, other = 0, other_bad = 0;
    for (int i = 0; i < ref.n_tensors; i++) {
        const char *nm = ref.tensors[i].name;
        const size_t L = strlen(nm);
        listed += !strncmp(nm, "weights.", 8) && L > 2 && !strcmp(nm + L - 2, ".q");
    }
    int vec_copied = 0, misaligned = 0;
    for (int i = 0; i < st.n_tensors; i++) {
        const st_tensor *t = &st.tensors[i];
        misaligned += (uintptr_t)t->data % 4 != 0;
        if (strstr(t->name, "vision") || t->ndim != 1) continue;
        /* norms, router scales, per-expert scales, layer scalars: float vectors, bound (copied when the
         * file does not align them) with their values intact */
        dg_vec vec;
        void *owned;
        other++;
        if (dg_mlx_bind_vec(&st, dir, t->name, t->shape[0], &vec, &owned, err, sizeof(err))) { CHECK(0, "%s", err); other_bad++; continue; }
        other_bad += vec.dt != DG_BF16 || memcmp(vec.data, t->data, (size_t)t->nbytes) != 0 || (uintptr_t)vec.data % 2;
        vec_copied += owned != NULL;
        free(owned);
    }
    CHECK(listed == c.bound, "%s: bound %d modules, the fixture lists %d", variant, c.bound, listed);
    CHECK(other_bad == 0, "%s: %d norm / scale / scalar tensors are not intact BF16 vectors", variant, other_bad);
    char bits[64] = "";
    for (int b = 1; b <= 8; b++)
        if (c.bits_seen[b]) snprintf(bits + strlen(bits), sizeof(bits) - strlen(bits), "%s%d", bits[0] ? "," : "", b);
    printf("  mlx-%-9s %d matrices bound (%d float, %d affine [bits %s], %d mxfp4, %d mxfp8, %d nvfp4), %d vectors; "
           "%d differ from mx.dequantize; %d of %d tensors not 4-byte aligned in the file, %d float matrices and %d vectors "
           "copied\n", variant, c.bound, c.by_mode[0], c.by_mode[1], bits, c.by_mode[2], c.by_mode[3], c.by_mode[4], other, c.bad,
           misaligned, st.n_tensors, c.copied, vec_copied);
    st_close(&ref);
    st_close(&st);
    dg_mlx_quant_free(&q);
    dg_config_free(&cfg);
}

static void t_loader_fixtures(void) {
    loader_variant("4bit");
    loader_variant("8bit");
    loader_variant("mixed_3_6");
    loader_variant("nvfp4");
}

/* ===== bad input ===== */

static char g_dir[256];

static void rm_dir(void) {
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
}

static const char *scratch(void) {
    if (!g_dir[0]) {
        snprintf(g_dir, sizeof(g_dir), "/tmp/dgemma-mlx-XXXXXX");
        if (!mkdtemp(g_dir)) { perror("mkdtemp"); exit(1); }
        atexit(rm_dir);
    }
    return g_dir;
}

/* a tensor of a synthetic file: the data is zeros except for the first bytes given */
typedef struct {
    const char *name, *dtype;
    int ndim;
    int64_t shape[3];
} tspec;

static size_t dsize(const char *dt) {
    return !strcmp(dt, "U32") || !strcmp(dt, "F32") || !strcmp(dt, "I32") ? 4 : !strcmp(dt, "U8") || !strcmp(dt, "F8_E4M3") ? 1 : 2;
}

/* write <scratch>/<name>/model.safetensors with the given tensors and config.json with `config` */
static const char *write_case(const char *name, const tspec *ts, int n, const char *config) {
    static char dir[512];
    snprintf(dir, sizeof(dir), "%s/%s", scratch(), name);
    mkdir(dir, 0755);
    char path[600], hdr[8192];
    size_t at = (size_t)snprintf(hdr, sizeof(hdr), "{");
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        uint64_t numel = 1;
        at += (size_t)snprintf(hdr + at, sizeof(hdr) - at, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[", i ? "," : "", ts[i].name, ts[i].dtype);
        for (int d = 0; d < ts[i].ndim; d++) {
            at += (size_t)snprintf(hdr + at, sizeof(hdr) - at, "%s%lld", d ? "," : "", (long long)ts[i].shape[d]);
            numel *= (uint64_t)ts[i].shape[d];
        }
        const uint64_t nb = numel * dsize(ts[i].dtype);
        at += (size_t)snprintf(hdr + at, sizeof(hdr) - at, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off, (unsigned long long)(off + nb));
        off += nb;
    }
    at += (size_t)snprintf(hdr + at, sizeof(hdr) - at, "}");
    while (at % 8) hdr[at++] = ' ';
    snprintf(path, sizeof(path), "%s/model.safetensors", dir);
    FILE *f = fopen(path, "wb");
    if (!f) { perror(path); exit(1); }
    for (int i = 0; i < 8; i++) fputc((int)(((uint64_t)at >> (8 * i)) & 0xff), f);
    fwrite(hdr, 1, at, f);
    /* bf16 1.0 everywhere (scales 1, biases 1), so a bound matrix dequantizes to q + 1 */
    for (uint64_t i = 0; i < off / 2; i++) { fputc(0x80, f); fputc(0x3f, f); }
    fclose(f);
    snprintf(path, sizeof(path), "%s/config.json", dir);
    f = fopen(path, "wb");
    fputs(config, f);
    fclose(f);
    return dir;
}

/* bind module "m.p" [rows 4, cols 64] (or [2, 4, 64] experts); returns rc, err filled */
static int try_bind(const char *dir, int64_t experts, char *err, size_t errlen, dg_mlx_view *v) {
    st_store st = {0};
    dg_mlx_quant q;
    int rc = -1;
    if (dg_mlx_quant_load(&q, dir, err, errlen)) return -1;
    if (st_open_dir(&st, dir, err, errlen) == 0) rc = dg_mlx_bind(&st, &q, dir, "m.p", experts, 4, 64, v, err, errlen);
    if (rc == 0) {
        /* the view must be usable */
        float buf[64];
        dg_dequant_range(&v->m, v->m.rows - 1, 0, 64, buf);
    }
    dg_mlx_view_free(v);
    st_close(&st);
    dg_mlx_quant_free(&q);
    return rc;
}

static void expect_fail(const char *name, const tspec *ts, int n, const char *config, int64_t experts, const char *a, const char *b) {
    const char *dir = write_case(name, ts, n, config);
    char err[1024] = "";
    dg_mlx_view v;
    const int rc = try_bind(dir, experts, err, sizeof(err), &v);
    CHECK(rc != 0, "%s: binding should fail", name);
    CHECK(!a || strstr(err, a), "%s: error lacks \"%s\": %s", name, a, err);
    CHECK(!b || strstr(err, b), "%s: error lacks \"%s\": %s", name, b, err);
    printf("  %-22s %s\n", name, err);
}

#define W(shape1) {"m.p.weight", "U32", 2, {4, shape1}}
#define S(dt, g) {"m.p.scales", dt, 2, {4, g}}
#define B(dt, g) {"m.p.biases", dt, 2, {4, g}}
#define Q4 "{\"quantization\": {\"group_size\": 32, \"bits\": 4, \"mode\": \"affine\"}}"

static void t_loader_errors(void) {
    char err[1024];
    dg_mlx_view v;
    /* the good case: 4-bit, group 32, bf16 scales and biases of 1.0: every element is q + 1 */
    const tspec good[] = {W(8), S("BF16", 2), B("BF16", 2)};
    const char *dir = write_case("good", good, 3, Q4);
    CHECK(try_bind(dir, 0, err, sizeof(err), &v) == 0, "good case: %s", err);
    /* the same without a quantization block: inferred from the shapes */
    dir = write_case("inferred", good, 3, "{}");
    int rc = try_bind(dir, 0, err, sizeof(err), &v);
    CHECK(rc == 0 && v.m.dt == DG_MLX_AFFINE && v.m.mlx.bits == 4 && v.m.mlx.group == 32, "inferred: %s", rc ? err : "wrong parameters");
    /* stacked experts [2, 4, packed] -> [8, 64] */
    const tspec ex[] = {{"m.p.weight", "U32", 3, {2, 4, 8}}, {"m.p.scales", "BF16", 3, {2, 4, 2}}, {"m.p.biases", "BF16", 3, {2, 4, 2}}};
    dir = write_case("experts", ex, 3, Q4);
    rc = try_bind(dir, 2, err, sizeof(err), &v);
    CHECK(rc == 0 && v.m.rows == 8 && v.m.cols == 64, "experts: %s", rc ? err : "wrong view");
    expect_fail("experts_count", ex, 3, Q4, 3, "m.p.weight", "expected [3, 4, 64*bits/32]");
    /* fp modes: U8 scales, no biases; an affine override inside an nvfp4 file */
    const tspec nv[] = {W(8), S("U8", 4)};
    dir = write_case("nvfp4", nv, 2, "{\"quantization\": {\"group_size\": 16, \"bits\": 4, \"mode\": \"nvfp4\"}}");
    rc = try_bind(dir, 0, err, sizeof(err), &v);
    CHECK(rc == 0 && v.m.dt == DG_MLX_NVFP4, "nvfp4: %s", rc ? err : "wrong mode");
    const tspec q8[] = {W(16), S("BF16", 1), B("BF16", 1)};
    dir = write_case("override", q8, 3, "{\"quantization\": {\"group_size\": 16, \"bits\": 4, \"mode\": \"nvfp4\", \"m.p\": {\"group_size\": 64, \"bits\": 8}}}");
    rc = try_bind(dir, 0, err, sizeof(err), &v);
    CHECK(rc == 0 && v.m.dt == DG_MLX_AFFINE && v.m.mlx.bits == 8, "affine override in an nvfp4 file: %s", rc ? err : "wrong mode");
    /* float weights: plain, and the HF spelling without .weight */
    const tspec fl[] = {{"m.p", "BF16", 2, {4, 64}}};
    dir = write_case("float_bare", fl, 1, Q4);
    rc = try_bind(dir, 0, err, sizeof(err), &v);
    CHECK(rc == 0 && v.m.dt == DG_BF16 && !v.scales, "bare float name: %s", rc ? err : "wrong view");

    /* --- shapes --- */
    const tspec g3[] = {W(8), S("BF16", 3), B("BF16", 3)};
    expect_fail("group_vs_scales", g3, 3, Q4, 0, "m.p.scales", "do not divide the 64 columns of 'm.p.weight'");
    const tspec g64[] = {W(8), S("BF16", 1), B("BF16", 1)};
    expect_fail("group_vs_config", g64, 3, Q4, 0, "config.json", "groups of 64");
    const tspec b7[] = {W(14), S("BF16", 2), B("BF16", 2)};
    expect_fail("bits_7", b7, 3, "{}", 0, "m.p.weight", "bits must be");
    expect_fail("bits_vs_config", b7, 3, Q4, 0, "m.p.weight", "7-bit");
    const tspec b16[] = {W(32), S("BF16", 2), B("BF16", 2)};
    expect_fail("bits_16", b16, 3, "{}", 0, "m.p.weight", "16 bits per column");
    const tspec pw[] = {W(9), S("BF16", 2), B("BF16", 2)};
    expect_fail("packed_width", pw, 3, Q4, 0, "m.p.weight", "[4, 9]: 9 packed words");
    const tspec rows[] = {{"m.p.weight", "U32", 2, {5, 8}}, {"m.p.scales", "BF16", 2, {5, 2}}, {"m.p.biases", "BF16", 2, {5, 2}}};
    expect_fail("rows", rows, 3, Q4, 0, "m.p.weight", "[5, 8]");
    const tspec srows[] = {W(8), {"m.p.scales", "BF16", 2, {3, 2}}, B("BF16", 2)};
    expect_fail("scales_rows", srows, 3, Q4, 0, "m.p.scales", "[3, 2]");
    const tspec brows[] = {W(8), S("BF16", 2), B("BF16", 1)};
    expect_fail("biases_shape", brows, 3, Q4, 0, "m.p.biases", "[4, 1]");
    const tspec fshape[] = {{"m.p.weight", "BF16", 2, {4, 32}}};
    expect_fail("float_shape", fshape, 1, Q4, 0, "m.p.weight", "expected [4, 64]");
    /* --- missing or extra tensors --- */
    const tspec nos[] = {W(8), B("BF16", 2)};
    expect_fail("missing_scales", nos, 2, Q4, 0, "m.p.weight", "m.p.scales' is missing");
    const tspec nob[] = {W(8), S("BF16", 2)};
    expect_fail("missing_biases", nob, 2, Q4, 0, "m.p.weight", "m.p.biases' is missing");
    const tspec now[] = {S("BF16", 2), B("BF16", 2)};
    expect_fail("missing_weight", now, 2, Q4, 0, "m.p.weight", "missing");
    const tspec fsc[] = {{"m.p.weight", "BF16", 2, {4, 64}}, S("BF16", 2)};
    expect_fail("float_with_scales", fsc, 2, Q4, 0, "m.p.scales", "not packed U32");
    const tspec gsc[] = {W(8), S("U8", 4), {"m.p.weight_scale_2", "F32", 1, {1}}};
    expect_fail("global_scale", gsc, 3, "{}", 0, "m.p.weight_scale_2", "global scale");
    /* --- dtypes --- */
    const tspec bdt[] = {W(8), S("BF16", 2), B("F16", 2)};
    expect_fail("biases_dtype", bdt, 3, Q4, 0, "m.p.biases", "same dtype");
    const tspec sdt[] = {W(8), S("I32", 2), B("I32", 2)};
    expect_fail("scales_dtype", sdt, 3, Q4, 0, "m.p.scales", "I32");
    const tspec wdt[] = {{"m.p.weight", "I32", 2, {4, 8}}, S("BF16", 2), B("BF16", 2)};
    expect_fail("weight_dtype", wdt, 3, Q4, 0, "m.p.weight", "I32");
    const tspec u8b[] = {W(8), S("U8", 2), B("U8", 2)};
    expect_fail("fp_with_biases", u8b, 3, "{}", 0, "m.p.biases", "no biases");
    const tspec e4[] = {W(8), S("F8_E4M3", 2)};
    expect_fail("e4m3_group32", e4, 2, "{}", 0, "m.p.scales", "nvfp4");
    expect_fail("mode_vs_scales", good, 3, "{\"quantization\": {\"group_size\": 32, \"bits\": 4, \"mode\": \"mxfp4\"}}", 0, "config.json", "mxfp4");
    const tspec mx4[] = {W(8), S("U8", 2)};
    expect_fail("fp_group", mx4, 2, "{\"quantization\": {\"group_size\": 16, \"bits\": 4, \"mode\": \"nvfp4\"}}", 0, "config.json", "groups of 32");
    /* --- the config --- */
    expect_fail("config_false", good, 3, "{\"quantization\": {\"group_size\": 32, \"bits\": 4, \"m.p\": false}}", 0, "quantization.m.p is false", "m.p.weight");
    expect_fail("config_dict_float", fl, 1, "{\"quantization\": {\"group_size\": 32, \"bits\": 4, \"m.p\": {\"bits\": 8, \"group_size\": 64}}}", 0,
                "quantization.m.p", "unquantized BF16");
    expect_fail("config_bits", good, 3, "{\"quantization\": {\"group_size\": 32, \"bits\": 7}}", 0, "quantization has mode affine, bits 7", "bits must be");
    expect_fail("config_group", good, 3, "{\"quantization\": {\"group_size\": 16, \"bits\": 4}}", 0, "config.json", "group_size must be 32, 64 or 128");
    expect_fail("config_module_bits", good, 3, "{\"quantization\": {\"group_size\": 32, \"bits\": 4, \"m.p\": {\"bits\": 9}}}", 0, "quantization.m.p", "bits 9");
    expect_fail("config_mode", good, 3, "{\"quantization\": {\"group_size\": 32, \"bits\": 4, \"mode\": \"int4\"}}", 0, "quantization.mode", "affine");
    expect_fail("config_type", good, 3, "{\"quantization\": {\"group_size\": \"32\", \"bits\": 4}}", 0, "quantization.group_size", "integer");
    expect_fail("config_fp8", good, 3, "{\"quantization_config\": {\"quant_method\": \"fp8\", \"weight_block_size\": [128, 128]}}", 0, "quant_method", "fp8");
    expect_fail("config_json", good, 3, "{\"quantization\": {\"bits\": 4,", 0, "config.json", "JSON");
    expect_fail("config_block", good, 3, "{\"quantization\": [4, 32]}", 0, "config.json", "must be an object");
    /* quantization_config alone is read like quantization (mlx-vlm writes both) */
    dir = write_case("qconfig", good, 3, "{\"quantization_config\": {\"group_size\": 32, \"bits\": 4}}");
    CHECK(try_bind(dir, 0, err, sizeof(err), &v) == 0, "quantization_config block: %s", err);
}

/* the quantization block on its own: global defaults, per-module dicts (affine unless they say
 * otherwise), false, true, unknown scalar fields, no block, quantization_config */
static void t_quant_block(void) {
    char err[512];
    dg_mlx_quant q;
    const char *js = "{\"quantization\": {\"group_size\": 16, \"bits\": 4, \"mode\": \"nvfp4\", \"note\": \"x\","
                     " \"a.b\": {\"group_size\": 64, \"bits\": 8}, \"a.c\": false, \"a.d\": true,"
                     " \"a.e\": {\"mode\": \"mxfp8\"}, \"a.f\": {}}}";
    CHECK(dg_mlx_quant_parse(&q, js, "t.json", err, sizeof(err)) == 0, "%s", err);
    const dg_mlx_params *g = dg_mlx_quant_params(&q, "x.y"), *b = dg_mlx_quant_params(&q, "a.b"),
                        *c = dg_mlx_quant_params(&q, "a.c"), *d = dg_mlx_quant_params(&q, "a.d"),
                        *e = dg_mlx_quant_params(&q, "a.e"), *f = dg_mlx_quant_params(&q, "a.f");
    CHECK(q.present && q.n == 4, "present %d, %d entries", q.present, q.n);
    CHECK(g && g->quantized && g->mode == DG_MLX_NVFP4 && g->bits == 4 && g->group == 16, "global");
    CHECK(b && b->mode == DG_MLX_AFFINE && b->bits == 8 && b->group == 64, "a dict without mode is affine");
    CHECK(c && !c->quantized, "false");
    CHECK(d == g, "true takes the global parameters");
    CHECK(e && e->mode == DG_MLX_MXFP8 && e->bits == 8 && e->group == 32, "a mode alone takes its defaults");
    CHECK(f && !f->quantized, "{} is unquantized, as in mlx-vlm's loader");
    dg_mlx_quant_free(&q);
    CHECK(dg_mlx_quant_parse(&q, "{\"dtype\": \"bfloat16\"}", "t.json", err, sizeof(err)) == 0 && !q.present &&
          dg_mlx_quant_params(&q, "a.b") == NULL, "no block");
    dg_mlx_quant_free(&q);
    CHECK(dg_mlx_quant_parse(&q, "{\"quantization_config\": {\"bits\": 8}}", "t.json", err, sizeof(err)) == 0 && q.present &&
          q.global.bits == 8 && q.global.group == 64, "quantization_config alone");
    dg_mlx_quant_free(&q);
    CHECK(dg_mlx_quant_parse(&q, "[", "t.json", err, sizeof(err)) != 0 && strstr(err, "t.json"), "bad JSON: %s", err);
    CHECK(dg_mlx_quant_load(&q, "/nonexistent-dir", err, sizeof(err)) != 0 && strstr(err, "/nonexistent-dir/config.json"), "missing file: %s", err);
}

const dg_test mlx_tests[] = {
    {"mlx/quant_block", t_quant_block},
    {"mlx/dequant_affine", t_dequant_affine},
    {"mlx/dequant_fp", t_dequant_fp},
    {"mlx/matmul_ref", t_matmul},
    {"mlx/loader_fixtures", t_loader_fixtures},
    {"mlx/loader_errors", t_loader_errors},
    {NULL, NULL},
};
