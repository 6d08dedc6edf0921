/*
 * test_quantize.c - dgemma quantize / synth (src/quant/).
 *
 *   counts      the plan for the real 26B-A4B shapes (a config.json, no weights) against the unsloth
 *               Q4_K_M file (692 tensors: 423 F32, 194 Q4_K, 14 Q6_K, 33 Q5_0, 28 Q8_0) and the other types
 *   round trip  the tiny checkpoints at every type: every tensor's bytes equal a fresh reference
 *               quantization of the source (bit-exact blocks), the engine loads the file, its logits against
 *               the original float weights (quantization error, per type with a tolerance) and the fast
 *               kernels against the oracle on the same file
 *   names       the names, shapes, types and metadata keys against make_gguf_fixtures.py's files
 *   synth       a tiny synthetic model (GGUF: pool and exact values, threads, HF directory) loads and runs
 *   errors      bad input gives a message naming the problem and leaves no file behind
 */
#define _GNU_SOURCE
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "kernels/quants.h"
#include "load/gguf.h"
#include "quant/quant.h"
#include "test.h"

static const char *tmpdir(void) { return test_tmpdir(); }

static const char *fix(const char *rel) {
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof(buf[k]), "%s/%s", fixtures_dir(), rel);
    return buf[k];
}

static dg_quant_params qparams(const char *type) {
    dg_quant_params p = dg_quant_default_params();
    p.type = type;
    p.n_threads = 2;
    return p;
}

static int count_of(const dg_quant_report *r, const char *type) {
    for (int i = 0; i < r->n_types; i++)
        if (!strcmp(r->types[i].type, type)) return r->types[i].count;
    return 0;
}

/* ===== counts for the real shapes ===== */

static void t_counts_26b(void) {
    static const struct { const char *type; int n[8]; const char *tn[8]; uint64_t bytes; } want[] = {
        {"Q4_K_M", {423, 194, 14, 33, 28}, {"F32", "Q4_K", "Q6_K", "Q5_0", "Q8_0"}, 16790983920ull},
        {"Q5_K_M", {423, 194, 14, 33, 28}, {"F32", "Q5_K", "Q6_K", "Q5_1", "Q8_0"}, 19129716976ull},
        {"Q6_K", {423, 208, 61}, {"F32", "Q6_K", "Q8_0"}, 22638664176ull},
        {"Q8_0", {423, 269}, {"F32", "Q8_0"}, 26863004912ull},
        {"Q4_0", {423, 268, 1}, {"F32", "Q4_0", "Q6_K"}, 14433586416ull},
        {"BF16", {423, 269}, {"F32", "BF16"}, 50525008112ull},
        {"F16", {423, 269}, {"F32", "F16"}, 50525008112ull},
        {"F32", {692}, {"F32"}, 101003948272ull},
    };
    char err[1024];
    for (size_t k = 0; k < sizeof(want) / sizeof(want[0]); k++) {
        dg_quant_params p = qparams(want[k].type);
        p.dry_run = 1;
        dg_quant_report r, rs;
        if (dg_quantize(fix("quant/26b-a4b/config.json"), NULL, &p, &r, err, sizeof(err))) { CHECK(0, "%s", err); continue; }
        printf("  %-6s %d tensors:", want[k].type, r.n_tensors);
        for (int i = 0; i < r.n_types; i++) printf(" %d %s", r.types[i].count, r.types[i].type);
        printf(", %.3f GB, %s\n", r.data_bytes / 1e9, r.size_label);
        CHECK(r.n_tensors == 692, "%s: %d tensors", want[k].type, r.n_tensors);
        for (int i = 0; i < 8 && want[k].tn[i]; i++)
            CHECK(count_of(&r, want[k].tn[i]) == want[k].n[i], "%s: %d %s, want %d", want[k].type, count_of(&r, want[k].tn[i]),
                  want[k].tn[i], want[k].n[i]);
        CHECK(r.data_bytes == want[k].bytes, "%s: %llu bytes, want %llu", want[k].type, (unsigned long long)r.data_bytes,
              (unsigned long long)want[k].bytes);
        CHECK(!strcmp(r.size_label, "128x2.6B"), "size label %s (the unsloth file says 128x2.6B)", r.size_label);
        /* dgemma synth's built-in shape is the same model */
        if (dg_synth(NULL, &p, &rs, err, sizeof(err))) { CHECK(0, "%s", err); continue; }
        CHECK(rs.n_tensors == r.n_tensors && rs.data_bytes == r.data_bytes, "synth 26b-a4b plan differs from the config's");
    }
}

/* ===== running the engine ===== */

/* dec0 logits [C, V] of a fixed prompt and canvas (NULL on failure) */
static float *run_logits(const char *model, dg_act_precision act, dg_kernels kern, int *C, int *V) {
    char err[1024];
    dg_engine_params ep = dg_engine_default_params();
    ep.act = act;
    dg_engine *e;
    if (dg_engine_load(model, &ep, &e, err, sizeof(err))) { CHECK(0, "%s", err); return NULL; }
    *V = dg_engine_info(e)->vocab_size;
    *C = dg_engine_info(e)->canvas_length;
    int32_t prompt[12], canvas[256];
    for (int i = 0; i < 12; i++) prompt[i] = (37 * i + 11) % *V;
    for (int i = 0; i < *C; i++) canvas[i] = (53 * i + 7) % *V;
    dg_session_params sp = dg_session_default_params();
    sp.n_ctx = 64;
    sp.n_threads = 1;
    sp.kernels = kern;
    dg_session *s;
    float *lg = calloc((size_t)*C * *V, sizeof(float));
    if (dg_session_create(e, &sp, &s, err, sizeof(err))) { CHECK(0, "%s", err); free(lg); dg_engine_free(e); return NULL; }
    int ok = dg_encode(s, prompt, 12, err, sizeof(err)) == 0 && dg_decode(s, canvas, *C, NULL, lg, err, sizeof(err)) == 0;
    CHECK(ok, "%s: %s", model, err);
    for (size_t i = 0; ok && i < (size_t)*C * *V; i++) ok = isfinite(lg[i]);
    CHECK(ok, "%s: non-finite logits", model);
    dg_session_free(s);
    dg_engine_free(e);
    if (!ok) { free(lg); return NULL; }
    return lg;
}

static double rel_err(const float *a, const float *r, int rows, int V, int *agree) { return test_rel_err(a, r, rows, V, agree, NULL); }

/* ===== bit-exactness ===== */

/* Every tensor of the file against the source checkpoint quantized afresh (whole tensor at once). */
static void check_bytes(const char *gguf_path, const char *src_dir) {
    char err[1024];
    gguf_file g;
    st_store st = {0};
    if (gguf_open(&g, gguf_path, err, sizeof(err))) { CHECK(0, "%s", err); return; }
    if (st_open_dir(&st, src_dir, err, sizeof(err))) { CHECK(0, "%s", err); gguf_close(&g); return; }
    int n_checked = 0, bad = 0;
    for (int i = 0; i < st.n_tensors; i++) {
        const st_tensor *s = &st.tensors[i];
        char gn[128];
        if (dg_gguf_name(s->name, gn, sizeof(gn))) continue;
        const gguf_tensor *t = gguf_find_tensor(&g, gn);
        CHECK(t != NULL, "%s: tensor %s (%s) missing", gguf_path, gn, s->name);
        if (!t) continue;
        dg_dtype sdt;
        if (dg_st_float_dtype(s->dtype, &sdt)) continue;
        const int64_t n = (int64_t)(s->nbytes / dg_dtype_size(sdt));
        int64_t rows = 1;
        for (int d = 1; d < t->n_dims; d++) rows *= t->ne[d];
        const int64_t m = rows * t->ne[0];   /* the file may keep fewer embedding rows */
        CHECK(m <= n, "%s: %s has more elements than its source", gguf_path, gn);
        float *x = malloc(sizeof(float) * (size_t)(m ? m : 1));
        uint8_t *want = malloc((size_t)t->nbytes + 64);
        for (int64_t k = 0; k < m; k++) x[k] = dg_wget(s->data, sdt, k);
        if (t->dt == DG_F32) memcpy(want, x, sizeof(float) * (size_t)m);
        else if (t->dt == DG_F16 || t->dt == DG_BF16)
            for (int64_t k = 0; k < m; k++) {
                const uint16_t h = t->dt == DG_F16 ? dg_f32_to_f16(x[k]) : dg_f32_to_bf16(x[k]);
                memcpy(want + 2 * k, &h, 2);
            }
        else CHECK(dg_quantize_gguf((dg_dtype)t->dt, x, want, m, NULL) == t->nbytes, "%s: %s size", gguf_path, gn);
        if (memcmp(want, t->data, (size_t)t->nbytes)) { bad++; CHECK(0, "%s: tensor %s (%s) differs from the reference quantization", gguf_path, gn, gguf_ggml_type_name(t->ggml_type)); }
        n_checked++;
        free(x);
        free(want);
    }
    /* rope_freqs: 1.0 for the rotated pairs of the full layers, 1e30 after */
    const gguf_tensor *rf = gguf_find_tensor(&g, "rope_freqs.weight");
    CHECK(rf && rf->dt == DG_F32, "%s: rope_freqs.weight missing", gguf_path);
    CHECK(n_checked + 1 == (int)g.n_tensors, "%s: %d of %llu tensors have a source", gguf_path, n_checked, (unsigned long long)g.n_tensors);
    (void)bad;
    st_close(&st);
    gguf_close(&g);
}

/* ===== round trips ===== */

typedef struct { const char *type; double tol; } type_tol;

/* Logit error against the float weights (max |error| / max |logit|, act F32, oracle kernels), asserted on
 * tiny-q only: its 2 experts are both used (top-2), so no routing decision can flip. tiny-a / b / c route
 * top-k of 4-8 experts, and in a tiny random MoE one changed weight bit can switch an expert and move
 * every later logit (ARCHITECTURE.md detail 8): there the error is printed, not held to a bound (even F16
 * of a float32 checkpoint measures 0.18 on tiny-a). The weights themselves are held to the reference
 * quantization bit for bit (check_bytes). Bounds: about twice the measured value. */
static const type_tol k_types[] = {{"F32", 0}, {"F16", 1e-5}, {"BF16", 0}, {"Q8_0", 0.1},
                                   {"Q6_K", 0.4}, {"Q5_K_M", 0.6}, {"Q4_K_M", 0.6}, {"Q4_0", 0.9}};

static void round_trip(const char *src_rel, const char *only, int synthetic_vocab, int assert_error) {
    char err[1024], out[600];
    const char *src = fix(src_rel);
    int C, V, C2, V2;
    float *orig = run_logits(src, DG_ACT_F32, DG_KERNELS_REF, &C, &V);
    if (!orig) return;
    for (size_t k = 0; k < sizeof(k_types) / sizeof(k_types[0]); k++) {
        if (only && !strstr(only, k_types[k].type)) continue;
        snprintf(out, sizeof(out), "%s/rt-%s.gguf", tmpdir(), k_types[k].type);
        dg_quant_params p = qparams(k_types[k].type);
        p.synthetic_vocab = synthetic_vocab;
        dg_quant_report r;
        if (dg_quantize(src, out, &p, &r, err, sizeof(err))) { CHECK(0, "%s %s: %s", src_rel, k_types[k].type, err); continue; }
        check_bytes(out, src);
        float *ref = run_logits(out, DG_ACT_F32, DG_KERNELS_REF, &C2, &V2);
        float *fast = run_logits(out, DG_ACT_F32, DG_KERNELS_AUTO, &C2, &V2);
        if (ref && fast && C2 == C && V2 == V) {
            int aq, af;
            double rq;
            const double eq = test_rel_err(ref, orig, C, V, &aq, &rq), ef = rel_err(fast, ref, C, V, &af);
            printf("  %-12s %-6s %7.0f KB  vs float weights: max %.2e rms %.2e argmax %2d/%d | fast vs oracle %.1e, argmax %d/%d\n",
                   src_rel, k_types[k].type, r.file_bytes / 1e3, eq, rq, aq, C, ef, af, C);
            if (assert_error) {
                CHECK(eq <= k_types[k].tol, "%s %s: logits rel error %.3g > %.3g", src_rel, k_types[k].type, eq, k_types[k].tol);
                CHECK(aq >= C - 2, "%s %s: argmax agrees at %d of %d positions", src_rel, k_types[k].type, aq, C);
            }
            if (!strcmp(k_types[k].type, "F32")) CHECK(aq == C && eq == 0, "%s F32: logits not bit-identical", src_rel);
            CHECK(ef <= 1e-4, "%s %s: fast kernels vs oracle %.3g", src_rel, k_types[k].type, ef);
        }
        free(ref);
        free(fast);
        unlink(out);
    }
    free(orig);
}

static void t_round_trip_a(void) { round_trip("tiny-a/f32", NULL, 0, 0); }
static void t_round_trip_b(void) { round_trip("tiny-b/f32", "F16 BF16 Q8_0 Q4_K_M Q4_0", 1, 0); }
static void t_round_trip_c(void) { round_trip("tiny-c/f32", "F32 Q8_0 Q6_K", 1, 0); }
static void t_round_trip_q(void) { round_trip("tiny-q/bf16", "F16 BF16 Q8_0 Q6_K Q5_K_M Q4_K_M", 1, 1); }

/* ===== names, shapes and keys against make_gguf_fixtures.py ===== */

static int kv_equal(const gguf_kv *a, const gguf_kv *b) {
    if (a->type != b->type || a->arr_type != b->arr_type || a->n != b->n) return 0;
    for (uint64_t i = 0; i < a->n; i++) {
        gguf_str x, y;
        int64_t p, q;
        double f, h;
        if (!gguf_kv_str(a, i, &x)) {
            if (gguf_kv_str(b, i, &y) || x.len != y.len || memcmp(x.s, y.s, x.len)) return 0;
        } else if (!gguf_kv_int(a, i, &p)) {
            if (gguf_kv_int(b, i, &q) || p != q) return 0;
        } else if (!gguf_kv_float(a, i, &f)) {
            if (gguf_kv_float(b, i, &h) || f != h) return 0;
        }
    }
    return 1;
}

static int in_list(const char *const *list, const char *k) {
    for (int i = 0; list && list[i]; i++)
        if (!strcmp(list[i], k)) return 1;
    return 0;
}

/* mine vs the fixture: the keys must be the same except `extra` (mine only), `missing` (the fixture's
 * only) and `differ` (present in both, values may differ); tensors: same names, ne; types and bytes too
 * when same_types */
static void compare_files(const char *mine, const char *ref, const char *const *extra, const char *const *missing,
                          const char *const *differ, int same_types, int same_bytes) {
    char err[1024];
    gguf_file a, b;
    if (gguf_open(&a, mine, err, sizeof(err))) { CHECK(0, "%s", err); return; }
    if (gguf_open(&b, ref, err, sizeof(err))) { CHECK(0, "%s", err); gguf_close(&a); return; }
    int n_diff = 0;
    for (uint64_t i = 0; i < a.n_kv; i++) {
        const gguf_kv *x = &a.kv[i], *y = gguf_find_kv(&b, x->key);
        if (!y) { CHECK(in_list(extra, x->key), "%s: key %s is not in %s", mine, x->key, ref); continue; }
        if (!kv_equal(x, y)) {
            n_diff++;
            CHECK(in_list(differ, x->key), "%s: key %s differs from %s", mine, x->key, ref);
        }
    }
    for (uint64_t i = 0; i < b.n_kv; i++)
        if (!gguf_find_kv(&a, b.kv[i].key)) CHECK(in_list(missing, b.kv[i].key), "%s: key %s of %s is missing", mine, b.kv[i].key, ref);
    CHECK(a.n_tensors == b.n_tensors, "%s: %llu tensors, %s has %llu", mine, (unsigned long long)a.n_tensors, ref, (unsigned long long)b.n_tensors);
    int n_same_bytes = 0;
    for (uint64_t i = 0; i < a.n_tensors; i++) {
        const gguf_tensor *x = &a.tensors[i], *y = gguf_find_tensor(&b, x->name);
        if (!y) { CHECK(0, "%s: tensor %s is not in %s", mine, x->name, ref); continue; }
        int ok = x->n_dims == y->n_dims;
        for (int d = 0; ok && d < x->n_dims; d++) ok = x->ne[d] == y->ne[d];
        CHECK(ok, "%s: tensor %s has another shape than in %s", mine, x->name, ref);
        if (same_types) CHECK(x->ggml_type == y->ggml_type, "%s: tensor %s is %s, %s in %s", mine, x->name,
                              gguf_ggml_type_name(x->ggml_type), gguf_ggml_type_name(y->ggml_type), ref);
        if (x->ggml_type == y->ggml_type && x->nbytes == y->nbytes && !memcmp(x->data, y->data, x->nbytes)) n_same_bytes++;
    }
    if (same_bytes) CHECK(n_same_bytes == (int)a.n_tensors, "%s: %d of %llu tensors byte-identical with %s", mine, n_same_bytes,
                          (unsigned long long)a.n_tensors, ref);
    printf("  %-28s vs %-18s %llu keys (%d values differ, as expected), %llu tensors (%d byte-identical)\n", strrchr(mine, '/') + 1,
           strrchr(ref, '/') + 1, (unsigned long long)a.n_kv, n_diff, (unsigned long long)a.n_tensors, n_same_bytes);
    gguf_close(&a);
    gguf_close(&b);
}

static void t_names(void) {
    char err[1024], out[600];
    /* tiny-b with the synthetic vocabulary: the fixture in every key, value and tensor byte, plus the size label */
    static const char *const label[] = {"general.size_label", NULL};
    snprintf(out, sizeof(out), "%s/names-b.gguf", tmpdir());
    dg_quant_params p = qparams("Q8_0");
    p.synthetic_vocab = 1;
    p.name = "tiny-b";
    if (dg_quantize(fix("tiny-b/f32"), out, &p, NULL, err, sizeof(err))) CHECK(0, "%s", err);
    else compare_files(out, fix("gguf/tiny-b-q8_0.gguf"), label, NULL, NULL, 1, 1);
    /* tiny-a: the checkpoint's own tokenizer (the fixture has a synthetic one), same tensors */
    static const char *const extra[] = {"general.size_label", "tokenizer.ggml.add_eos_token", NULL};
    static const char *const missing[] = {"tokenizer.chat_template", NULL};
    static const char *const vocab[] = {"tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges", NULL};
    const char *types[][2] = {{"Q8_0", "gguf/tiny-a-q8_0.gguf"}, {"BF16", "gguf/tiny-a-bf16.gguf"}, {"Q4_K_M", "gguf/tiny-a-q4_k_m.gguf"}};
    const char *srcs[] = {"tiny-a/f32", "tiny-a/bf16", "tiny-a/f32"};
    for (int k = 0; k < 3; k++) {
        snprintf(out, sizeof(out), "%s/names-a-%s.gguf", tmpdir(), types[k][0]);
        dg_quant_params pa = qparams(types[k][0]);
        pa.name = "tiny-a";
        if (dg_quantize(fix(srcs[k]), out, &pa, NULL, err, sizeof(err))) { CHECK(0, "%s", err); continue; }
        /* the fixture's Q4_K_M-like mix leaves out llama-quant.cpp's 8-expert rules (ARCHITECTURE.md) */
        compare_files(out, fix(types[k][1]), extra, missing, vocab, k < 2, k < 2);
    }
    /* a mix: llama-quantize's tensor order (by layer, then name) and its last two keys */
    gguf_file g;
    if (gguf_open(&g, out, err, sizeof(err)) == 0) {
        int sorted = 1;
        for (uint64_t i = 1; i < g.n_tensors; i++) {
            int la = -1, lb = -1;
            sscanf(g.tensors[i - 1].name, "blk.%d.", &la);
            sscanf(g.tensors[i].name, "blk.%d.", &lb);
            sorted &= la < lb || (la == lb && strcmp(g.tensors[i - 1].name, g.tensors[i].name) < 0);
        }
        CHECK(sorted, "Q4_K_M: tensors not in llama-quantize's order");
        CHECK(!strcmp(g.kv[g.n_kv - 2].key, "general.quantization_version") && !strcmp(g.kv[g.n_kv - 1].key, "general.file_type"),
              "Q4_K_M: the last keys are %s, %s", g.kv[g.n_kv - 2].key, g.kv[g.n_kv - 1].key);
        int64_t ft = 0;
        CHECK(gguf_get_int(&g, "general.file_type", 0, 100, &ft, err, sizeof(err)) == 0 && ft == 15, "file_type %lld", (long long)ft);
        gguf_close(&g);
    } else {
        CHECK(0, "%s", err);
    }
}

/* ===== synth ===== */

static int same_file(const char *a, const char *b) {
    FILE *f = fopen(a, "rb"), *g = fopen(b, "rb");
    int same = f && g;
    while (same) {
        int x = fgetc(f), y = fgetc(g);
        if (x != y) same = 0;
        if (x == EOF || y == EOF) break;
    }
    if (f) fclose(f);
    if (g) fclose(g);
    return same;
}

/* exact synth values: every tensor's blocks are the reference quantization of the generator's rows */
static void check_synth_exact(const char *path, uint64_t seed) {
    char err[1024];
    gguf_file g;
    if (gguf_open(&g, path, err, sizeof(err))) { CHECK(0, "%s", err); return; }
    dg_config c;
    dg_qplan plan;
    if (dg_synth_config(&c, "tiny", 0, 2, err, sizeof(err)) || dg_qplan_from_config(&plan, &c, err, sizeof(err))) {
        CHECK(0, "%s", err);
        gguf_close(&g);
        return;
    }
    int n_checked = 0;
    for (int i = 0; i < plan.n; i++) {
        const dg_qtensor *t = &plan.t[i];
        const gguf_tensor *gt = gguf_find_tensor(&g, t->name);
        if (!gt || t->kind == DG_QK_ROPE) continue;
        const int64_t rows = dg_qt_rows(t), n = t->ne[0];
        float *x = malloc(sizeof(float) * (size_t)n);
        uint8_t *want = malloc((size_t)gt->nbytes / (size_t)rows + 64);
        const size_t rb = (size_t)gt->nbytes / (size_t)rows;
        int same = 1;
        for (int64_t r = 0; r < rows && same; r++) {
            dg_synth_row(t, seed, r, x, n);
            if (gt->dt == DG_F32) memcpy(want, x, rb);
            else dg_quantize_gguf((dg_dtype)gt->dt, x, want, n, NULL);
            same = !memcmp(want, gt->data + (size_t)r * rb, rb);
        }
        CHECK(same, "%s: tensor %s differs from the reference quantization of its rows", path, t->name);
        n_checked++;
        free(x);
        free(want);
    }
    CHECK(n_checked + 1 == (int)g.n_tensors, "%s: checked %d of %llu tensors", path, n_checked, (unsigned long long)g.n_tensors);
    dg_qplan_free(&plan);
    dg_config_free(&c);
    gguf_close(&g);
}

static void t_synth(void) {
    char err[1024], a[600], b[600], hf[600];
    snprintf(a, sizeof(a), "%s/synth-a.gguf", tmpdir());
    snprintf(b, sizeof(b), "%s/synth-b.gguf", tmpdir());
    /* pool values (the default): the same file with 1 and 3 threads; loads and runs */
    dg_quant_params p = qparams("Q4_K_M");
    p.shape = "tiny";
    p.seed = 7;
    p.n_threads = 1;
    dg_quant_report r;
    if (dg_synth(a, &p, &r, err, sizeof(err))) { CHECK(0, "%s", err); return; }
    p.n_threads = 3;
    if (dg_synth(b, &p, NULL, err, sizeof(err))) { CHECK(0, "%s", err); return; }
    CHECK(same_file(a, b), "synth: 1 and 3 threads give different files");
    int C, V;
    float *lg = run_logits(a, DG_ACT_AUTO, DG_KERNELS_AUTO, &C, &V);
    printf("  synth tiny Q4_K_M (pool): %d tensors, %.0f KB, %d Q4_K + %d Q6_K + %d Q5_0; 1 = 3 threads; one decoder step: %s\n",
           r.n_tensors, r.file_bytes / 1e3, count_of(&r, "Q4_K"), count_of(&r, "Q6_K"), count_of(&r, "Q5_0"), lg ? "finite logits" : "FAILED");
    CHECK(count_of(&r, "Q4_K") > 0 && count_of(&r, "Q6_K") > 0, "tiny synth has no K-quant blocks");
    free(lg);
    /* the synthetic vocabulary tokenizes */
    dg_tokenizer *tok;
    if (dg_tokenizer_load(a, &tok, err, sizeof(err)) == 0) {
        int32_t *ids = NULL;
        int n = 0;
        CHECK(dg_tokenize(tok, "hello world", 11, &ids, &n, err, sizeof(err)) == 0 && n > 0, "synthetic vocabulary: %s", err);
        free(ids);
        dg_tokenizer_free(tok);
    } else {
        CHECK(0, "synthetic vocabulary: %s", err);
    }
    /* exact values: bit-exact with the reference quantization of the generator's rows */
    p.exact = 1;
    p.n_experts = 2;
    p.n_threads = 2;
    if (dg_synth(a, &p, &r, err, sizeof(err))) { CHECK(0, "%s", err); return; }
    check_synth_exact(a, 7);
    printf("  synth tiny Q4_K_M (exact, 2 experts): %d tensors, every block the reference quantization of its random row\n", r.n_tensors);
    /* a Hugging Face directory: loads, and its BF16 GGUF gives the same logits */
    snprintf(hf, sizeof(hf), "%s/synth-hf", tmpdir());
    dg_quant_params ph = qparams("BF16");
    ph.shape = "tiny";
    ph.seed = 7;
    if (dg_synth(hf, &ph, NULL, err, sizeof(err))) { CHECK(0, "%s", err); return; }
    int C2, V2;
    float *l1 = run_logits(hf, DG_ACT_AUTO, DG_KERNELS_REF, &C, &V);
    dg_quant_params q = qparams("BF16");
    q.synthetic_vocab = 1;
    if (dg_quantize(hf, b, &q, NULL, err, sizeof(err))) CHECK(0, "%s", err);
    float *l2 = run_logits(b, DG_ACT_AUTO, DG_KERNELS_REF, &C2, &V2);
    int agree = 0;
    if (l1 && l2) CHECK(rel_err(l2, l1, C, V, &agree) == 0, "HF synth vs its BF16 GGUF: logits differ");
    printf("  synth tiny HF directory (BF16): loads; its BF16 GGUF gives identical logits (%d/%d argmax)\n", agree, C);
    free(l1);
    free(l2);
}

/* ===== bad input ===== */

static void expect_fail(int rc, const char *err, const char *want, const char *out) {
    CHECK(rc != 0, "should fail (%s)", want);
    CHECK(strstr(err, want) != NULL, "error lacks \"%s\": %s", want, err);
    printf("  %s\n", err);
    if (out) {
        struct stat sb;
        CHECK(stat(out, &sb) != 0, "%s was left behind", out);
    }
}

static void write_text(const char *path, const char *s) {
    FILE *f = fopen(path, "w");
    if (f) { fputs(s, f); fclose(f); }
}

static void copy_file(const char *src, const char *dst) {
    FILE *f = fopen(src, "rb"), *g = fopen(dst, "wb");
    char buf[65536];
    size_t n;
    while (f && g && (n = fread(buf, 1, sizeof(buf), f)) > 0) fwrite(buf, 1, n, g);
    if (f) fclose(f);
    if (g) fclose(g);
}

static void t_errors(void) {
    char err[1024] = "", out[600], dir[600], path[700];
    snprintf(out, sizeof(out), "%s/bad.gguf", tmpdir());
    dg_quant_params p = qparams("Q4_K_M");
    expect_fail(dg_quantize("/nonexistent/dir", out, &p, NULL, err, sizeof(err)), err, "No such file", out);
    snprintf(dir, sizeof(dir), "%s/empty", tmpdir());
    mkdir(dir, 0755);
    expect_fail(dg_quantize(dir, out, &p, NULL, err, sizeof(err)), err, "not a Hugging Face DiffusionGemma checkpoint", out);
    snprintf(path, sizeof(path), "%s/config.json", dir);
    write_text(path, "{\"model_type\": \"llama\"}");
    expect_fail(dg_quantize(dir, out, &p, NULL, err, sizeof(err)), err, "expected \"diffusion_gemma\"", out);
    copy_file(fix("tiny-b/f32/config.json"), path);
    expect_fail(dg_quantize(dir, out, &p, NULL, err, sizeof(err)), err, "no model.safetensors", out);
    dg_quant_params bad = qparams("Q3_K_XL");
    expect_fail(dg_quantize(fix("tiny-b/f32"), out, &bad, NULL, err, sizeof(err)), err, "unknown type 'Q3_K_XL'", out);
    /* no tokenizer.json: the converter cannot write the vocabulary */
    expect_fail(dg_quantize(fix("tiny-b/f32"), out, &p, NULL, err, sizeof(err)), err, "--synthetic-vocab", out);
    /* a checkpoint with an integer tensor */
    snprintf(dir, sizeof(dir), "%s/i32", tmpdir());
    mkdir(dir, 0755);
    snprintf(path, sizeof(path), "%s/config.json", dir);
    copy_file(fix("tiny-b/f32/config.json"), path);
    st_store st = {0};
    if (st_open_dir(&st, fix("tiny-b/f32"), err, sizeof(err)) == 0) {
        json_t *hdr = json_object();
        uint64_t off = 0;
        for (int i = 0; i < st.n_tensors; i++) {
            const st_tensor *t = &st.tensors[i];
            json_t *shape = json_array();
            for (int d = 0; d < t->ndim; d++) json_array_append_new(shape, json_integer(t->shape[d]));
            const char *dt = !strcmp(t->name, "model.decoder.layers.1.mlp.up_proj.weight") ? "I32" : st_dtype_name(t->dtype);
            json_object_set_new(hdr, t->name, json_pack("{s:s, s:o, s:[I, I]}", "dtype", dt, "shape", shape, "data_offsets",
                                                        (json_int_t)off, (json_int_t)(off + t->nbytes)));
            off += t->nbytes;
        }
        char *js = json_dumps(hdr, JSON_COMPACT);
        size_t jl = strlen(js), padded = (jl + 7) / 8 * 8;
        snprintf(path, sizeof(path), "%s/model.safetensors", dir);
        FILE *f = fopen(path, "wb");
        uint64_t len8 = padded;
        fwrite(&len8, 8, 1, f);
        fwrite(js, 1, jl, f);
        for (size_t i = jl; i < padded; i++) fputc(' ', f);
        for (int i = 0; i < st.n_tensors; i++) fwrite(st.tensors[i].data, 1, st.tensors[i].nbytes, f);
        fclose(f);
        free(js);
        json_decref(hdr);
        st_close(&st);
        dg_quant_params pv = qparams("Q8_0");
        pv.synthetic_vocab = 1;
        expect_fail(dg_quantize(dir, out, &pv, NULL, err, sizeof(err)), err, "has dtype I32", out);
        /* the config says another shape */
        snprintf(path, sizeof(path), "%s/config.json", dir);
        copy_file(fix("tiny-a/f32/config.json"), path);
        expect_fail(dg_quantize(dir, out, &pv, NULL, err, sizeof(err)), err, "model.decoder", out);
    } else {
        CHECK(0, "%s", err);
    }
    /* an output directory that does not exist */
    dg_quant_params pv = qparams("Q8_0");
    pv.synthetic_vocab = 1;
    expect_fail(dg_quantize(fix("tiny-b/f32"), "/nonexistent/dir/x.gguf", &pv, NULL, err, sizeof(err)), err, "/nonexistent/dir", NULL);
    /* synth: bad shape, a quantized type for a directory, an existing directory */
    dg_quant_params ps = qparams("Q4_K_M");
    ps.shape = "huge";
    expect_fail(dg_synth(out, &ps, NULL, err, sizeof(err)), err, "unknown shape 'huge'", out);
    ps = qparams("Q4_K_M");
    ps.shape = "tiny";
    snprintf(dir, sizeof(dir), "%s/hfq", tmpdir());
    expect_fail(dg_synth(dir, &ps, NULL, err, sizeof(err)), err, "BF16, F16 or F32", dir);
    ps.type = "BF16";
    expect_fail(dg_synth(tmpdir(), &ps, NULL, err, sizeof(err)), err, "already exists", NULL);
}

const dg_test quantize_tests[] = {
    {"quantize/counts-26b-a4b", t_counts_26b},
    {"quantize/round-trip-tiny-a", t_round_trip_a},
    {"quantize/round-trip-tiny-b", t_round_trip_b},
    {"quantize/round-trip-tiny-c", t_round_trip_c},
    {"quantize/round-trip-tiny-q", t_round_trip_q},
    {"quantize/names-vs-fixtures", t_names},
    {"quantize/synth", t_synth},
    {"quantize/errors", t_errors},
    {NULL, NULL},
};
