/*
 * test_parity.c - every stage of the C forward pass against transformers, on the tiny random
 * checkpoints in tests/fixtures (built by tools/reference/make_fixtures.py).
 *
 * Each fixture session replays what the reference ran: enc0 (prompt), dec0 (canvas 0, no
 * self-conditioning), dec1 (canvas 1, self-conditioned on the reference's dec0 logits), enc1 (the
 * reference's committed argmax of dec1), dec2 (canvas 2 after the commit). A tap compares every
 * stage as it is produced.
 *
 * Error metric per tensor: max|c - ref| / max|ref| ("relative to the tensor's scale"), printed per
 * stage. Float32 checkpoints: <= 1e-4 on every hidden state, router weights and logits, router ids
 * identical. Bfloat16 checkpoints: logits argmax identical at every canvas position; the max logit
 * difference and the other stages' errors are printed.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "test.h"

enum { ST_EMBED, ST_SC, ST_INPUT, ST_ATTN, ST_LAYER, ST_RW, ST_NORM, ST_LOGITS, ST_N };
static const char *k_stage[ST_N] = {"embed", "sc_embed", "input", "attn", "layers", "router_w", "norm", "logits"};

typedef struct {
    st_store ref;
    char prefix[64];
    double err[ST_N];       /* max relative error per stage */
    double logit_abs;       /* max |logit difference| */
    double stock_abs;       /* max |logit difference| against the stock-kernel reference (bf16) */
    int stock_argmax, stock_n, stock_vs_ref_argmax;
    int id_mismatch, id_total, argmax_mismatch, argmax_total, missing, compared;
} tapctx;

static const st_tensor *ref_get(tapctx *c, const char *name) {
    char key[160];
    snprintf(key, sizeof(key), "%s.%s", c->prefix, name);
    return st_find(&c->ref, key);
}

static float ref_at(const st_tensor *t, int64_t i) {
    if (t->dtype == ST_I32) { int32_t v; memcpy(&v, t->data + i * 4, 4); return (float)v; }
    float f;
    memcpy(&f, t->data + i * 4, 4);
    return f;
}

/* the first index of a row's largest value */
static int row_argmax(const float *x, int cols) {
    int a = 0;
    for (int v = 1; v < cols; v++)
        if (x[v] > x[a]) a = v;
    return a;
}

static void on_tap(void *user, const char *name, const float *x, int rows, int cols) {
    tapctx *c = user;
    const st_tensor *r = ref_get(c, name);
    if (!r && (!strncmp(name, "q.", 2) || !strncmp(name, "k.", 2) || !strncmp(name, "v.", 2))) return;   /* debug-only taps */
    if (!r) { c->missing++; fprintf(stderr, "  missing reference tensor %s.%s\n", c->prefix, name); return; }
    int64_t n = (int64_t)rows * cols;
    if ((int64_t)(r->nbytes / 4) != n) { c->missing++; fprintf(stderr, "  %s.%s: size %lld vs reference %lld\n", c->prefix, name, (long long)n, (long long)(r->nbytes / 4)); return; }
    c->compared++;
    if (strstr(name, ".ids")) {
        for (int64_t i = 0; i < n; i++) c->id_mismatch += x[i] != ref_at(r, i);
        if (getenv("DG_VERBOSE"))
            for (int64_t i = 0; i < n; i++)
                if (x[i] != ref_at(r, i)) fprintf(stderr, "    %s.%s row %lld: id %g vs ref %g\n", c->prefix, name, (long long)(i / cols), x[i], ref_at(r, i));
        c->id_total += (int)n;
        return;
    }
    double md = 0, mr = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)x[i] - ref_at(r, i)), a = fabs(ref_at(r, i));
        if (d > md || isnan(d)) md = isnan(d) ? INFINITY : d;
        if (a > mr) mr = a;
    }
    double rel = mr > 0 ? md / mr : md;
    if (getenv("DG_VERBOSE")) {
        int ndiff = 0, first = -1;
        for (int64_t i = 0; i < n; i++) if (x[i] != ref_at(r, i)) { ndiff++; if (first < 0) first = (int)i; }
        fprintf(stderr, "    %s.%s rel %.2e (%d of %lld differ", c->prefix, name, rel, ndiff, (long long)n);
        if (first >= 0) fprintf(stderr, "; first [%d,%d] %.9g vs %.9g", first / cols, first % cols, x[first], ref_at(r, first));
        fprintf(stderr, ")\n");
    }
    int st = !strcmp(name, "embed") ? ST_EMBED : !strcmp(name, "sc_embed") ? ST_SC : !strcmp(name, "input") ? ST_INPUT
           : !strncmp(name, "layer.", 6) ? ST_LAYER : !strncmp(name, "attn.", 5) ? ST_ATTN : strstr(name, ".weights") ? ST_RW : !strcmp(name, "norm") ? ST_NORM : ST_LOGITS;
    if (rel > c->err[st]) c->err[st] = rel;
    if (st == ST_LOGITS) {
        if (md > c->logit_abs) c->logit_abs = md;
        char key[160];
        snprintf(key, sizeof(key), "stock.%s.logits", c->prefix);
        const st_tensor *sk = st_find(&c->ref, key);
        if (sk && (int64_t)(sk->nbytes / 4) == n) {
            for (int t = 0; t < rows; t++) {
                int a = 0, b = 0;
                for (int v = 0; v < cols; v++) {
                    double d = fabs((double)x[(int64_t)t * cols + v] - ref_at(sk, (int64_t)t * cols + v));
                    if (d > c->stock_abs) c->stock_abs = d;
                    if (x[(int64_t)t * cols + v] > x[(int64_t)t * cols + a]) a = v;
                    if (ref_at(sk, (int64_t)t * cols + v) > ref_at(sk, (int64_t)t * cols + b)) b = v;
                }
                int rb = 0;
                for (int v = 1; v < cols; v++)
                    if (ref_at(r, (int64_t)t * cols + v) > ref_at(r, (int64_t)t * cols + rb)) rb = v;
                c->stock_argmax += a != b;
                c->stock_vs_ref_argmax += rb != b;
                c->stock_n++;
            }
        }
        for (int t = 0; t < rows; t++) {
            int b = 0;
            for (int v = 1; v < cols; v++)
                if (ref_at(r, (int64_t)t * cols + v) > ref_at(r, (int64_t)t * cols + b)) b = v;
            c->argmax_mismatch += row_argmax(x + (int64_t)t * cols, cols) != b;
            c->argmax_total++;
        }
    }
}

/* int32 ids of a reference input tensor */
static int32_t *ref_ids(tapctx *c, const char *key, int *n) {
    const st_tensor *t = st_find(&c->ref, key);
    if (!t || t->dtype != ST_I32) return NULL;
    *n = (int)(t->nbytes / 4);
    int32_t *ids = malloc(t->nbytes);
    memcpy(ids, t->data, t->nbytes);
    return ids;
}

/* Replays one fixture session through the engine with taps on. Returns 0 if it ran. */
static int run_session(dg_engine *e, tapctx *c, const char *sess, int n_batch, dg_kernels kern, float **logits2) {
    char err[1024], key[128];
    const dg_model_info *in = dg_engine_info(e);
    dg_session_params sp = {256, n_batch, 0, kern, 0};
    dg_session *s;
    if (dg_session_create(e, &sp, &s, err, sizeof(err))) { CHECK(0, "%s", err); return -1; }
    int np, nc[3], ncm;
    snprintf(key, sizeof(key), "%s.prompt", sess);
    int32_t *prompt = ref_ids(c, key, &np);
    snprintf(key, sizeof(key), "%s.commit", sess);
    int32_t *commit = ref_ids(c, key, &ncm);
    int32_t *canvas[3];
    for (int i = 0; i < 3; i++) {
        snprintf(key, sizeof(key), "%s.canvas%d", sess, i);
        canvas[i] = ref_ids(c, key, &nc[i]);
    }
    int rc = -1;
    float *logits = NULL;
    if (!prompt || !commit || !canvas[0] || !canvas[1] || !canvas[2]) { CHECK(0, "fixture lacks %s inputs", sess); goto out; }
    logits = malloc(sizeof(float) * (size_t)nc[0] * in->vocab_size);
    const int whole = n_batch >= 256;   /* chunked runs compare the final logits only */
    dg_session_set_tap(s, whole ? on_tap : NULL, c);
    snprintf(c->prefix, sizeof(c->prefix), "%s.enc0", sess);
    CHECK(dg_encode(s, prompt, np, err, sizeof(err)) == 0, "%s", err);
    snprintf(c->prefix, sizeof(c->prefix), "%s.dec0", sess);
    CHECK(dg_decode(s, canvas[0], nc[0], NULL, logits, err, sizeof(err)) == 0, "%s", err);
    const st_tensor *sc = ref_get(c, "logits");   /* the reference fed its own dec0 logits back */
    snprintf(c->prefix, sizeof(c->prefix), "%s.dec1", sess);
    CHECK(dg_decode(s, canvas[1], nc[1], (const float *)sc->data, logits, err, sizeof(err)) == 0, "%s", err);
    snprintf(c->prefix, sizeof(c->prefix), "%s.enc1", sess);
    CHECK(dg_encode(s, commit, ncm, err, sizeof(err)) == 0, "%s", err);
    CHECK(dg_session_n_past(s) == np + ncm, "n_past %d", dg_session_n_past(s));
    snprintf(c->prefix, sizeof(c->prefix), "%s.dec2", sess);
    dg_session_set_tap(s, on_tap, c);
    CHECK(dg_decode(s, canvas[2], nc[2], NULL, logits, err, sizeof(err)) == 0, "%s", err);
    rc = 0;
out:
    if (logits2) *logits2 = logits; else free(logits);
    free(prompt); free(commit);
    for (int i = 0; i < 3; i++) free(canvas[i]);
    dg_session_free(s);
    return rc;
}

/*
 * kern = DG_KERNELS_REF: the oracle, held to the fixtures as the issue states (float32: 1e-4 per
 * stage; bf16/f16: identical argmax, stage errors printed, 0 where bit-exact).
 * kern = DG_KERNELS_AUTO: the fast kernels of this CPU. Float32: 1e-4 on hidden states and logits
 * (3e-4 on the attention sub-stage, whose float32 exp and sums are within the reference's own
 * noise), router ids identical. bf16/f16: a flipped bf16 rounding can change an expert in a tiny
 * random MoE, so argmax agreement of at least 90% is required and the errors are printed.
 */
static void parity_case(const char *cfg, const char *dt, dg_kernels kern) {
    char dir[512], refp[512], err[1024];
    snprintf(dir, sizeof(dir), "%s/%s/%s", fixtures_dir(), cfg, dt);
    snprintf(refp, sizeof(refp), "%s/%s/ref-%s.safetensors", fixtures_dir(), cfg, dt);
    dg_engine *e;
    if (dg_engine_load(dir, NULL, &e, err, sizeof(err))) { CHECK(0, "%s", err); return; }
    int is_f32 = !strcmp(dt, "f32");
    for (int si = 0; si < 2; si++) {
        const char *sess = si ? "long" : "short";
        tapctx c;
        memset(&c, 0, sizeof(c));
        if (st_add_file(&c.ref, refp, err, sizeof(err)) || st_finish(&c.ref, err, sizeof(err))) { CHECK(0, "%s", err); break; }
        const char *kname = kern == DG_KERNELS_REF ? "ref " : "fast";
        float *whole2 = NULL, *chunk2 = NULL;   /* the last decode's logits, whole prompt and chunked */
        if (run_session(e, &c, sess, 256, kern, &whole2) == 0) {
            printf("  %s %s/%-4s %-5s", kname, cfg, dt, sess);
            for (int k = 0; k < ST_N; k++) printf(" %s %.1e", k_stage[k], c.err[k]);
            printf(" | max|dlogit| %.2e, router ids %d/%d differ, argmax %d/%d differ (%d tensors)\n",
                   c.logit_abs, c.id_mismatch, c.id_total, c.argmax_mismatch, c.argmax_total, c.compared);
            if (c.stock_n)
                printf("  %s/%-4s %-5s vs stock torch CPU kernels (not asserted): max|dlogit| %.2e, argmax %d/%d differ; "
                       "the reference itself, stock vs exact: argmax %d/%d differ\n",
                       cfg, dt, sess, c.stock_abs, c.stock_argmax, c.stock_n, c.stock_vs_ref_argmax, c.stock_n);
            CHECK(c.missing == 0, "%d stages had no reference", c.missing);
            CHECK(c.compared > 10, "only %d stages compared", c.compared);
            if (kern == DG_KERNELS_REF || is_f32)
                CHECK(c.argmax_mismatch == 0, "%s %s/%s %s: argmax differs at %d of %d canvas positions", kname, cfg, dt, sess, c.argmax_mismatch, c.argmax_total);
            else
                CHECK(c.argmax_mismatch * 10 <= c.argmax_total, "%s %s/%s %s: argmax differs at %d of %d canvas positions", kname, cfg, dt, sess, c.argmax_mismatch, c.argmax_total);
            if (is_f32) {
                for (int k = 0; k < ST_N; k++) {
                    const double tol = kern != DG_KERNELS_REF && !strcmp(k_stage[k], "attn") ? 3e-4 : 1e-4;
                    CHECK(c.err[k] <= tol, "%s %s/%s %s: stage %s max rel error %.3e > %.0e", kname, cfg, dt, sess, k_stage[k], c.err[k], tol);
                }
                CHECK(c.id_mismatch == 0, "%s/%s %s: %d router ids differ", cfg, dt, sess, c.id_mismatch);
            }
        }
        /* the same session with the prompt encoded in chunks of 3 tokens: identical final logits */
        tapctx c2 = c;
        memset(c2.err, 0, sizeof(c2.err));
        c2.argmax_mismatch = c2.argmax_total = 0;
        c2.logit_abs = 0;
        if (run_session(e, &c2, sess, 3, kern, &chunk2) == 0) {
            /* the same argmax as the whole-prompt run at every position, whatever the kernels; and against
             * the reference as that run is held (bf16 on the fast kernels: its flips, which the whole-prompt
             * check bounds at a tenth; the chaotic tiny-a long case flips the same positions either way) */
            int vs_whole = 0;
            const int V = dg_engine_info(e)->vocab_size, n2 = c2.argmax_total;
            for (int t = 0; whole2 && chunk2 && t < n2; t++)
                vs_whole += row_argmax(whole2 + (size_t)t * V, V) != row_argmax(chunk2 + (size_t)t * V, V);
            CHECK(vs_whole == 0, "%s/%s %s chunked prefill: the argmax differs from the whole-prompt run's at %d positions", cfg, dt, sess, vs_whole);
            CHECK(c2.err[ST_LOGITS] <= (is_f32 ? 1e-4 : 1e-1) && (c2.argmax_mismatch == 0 || (!is_f32 && kern != DG_KERNELS_REF)),
                  "%s/%s %s chunked prefill: logits rel err %.3e, argmax %d differ from the reference", cfg, dt, sess, c2.err[ST_LOGITS], c2.argmax_mismatch);
            printf("  %s %s/%-4s %-5s chunked prefill (3 tokens/chunk): dec2 logits rel err %.1e, argmax %d/%d differ (from the whole-prompt run: %d)\n", kname,
                   cfg, dt, sess, c2.err[ST_LOGITS], c2.argmax_mismatch, c2.argmax_total, vs_whole);
        }
        free(whole2);
        free(chunk2);
        st_close(&c.ref);
    }
    dg_engine_free(e);
}

/* The top-k self-conditioning approximation against the exact soft embedding: logits of a
 * self-conditioned decoder step (the fixture's dec1: canvas 1 conditioned on dec0's logits). */
static void t_sc_topk(void) {
    const char *models[] = {"tiny-a/f32", "tiny-b-sharp/f32"};
    const int ks[] = {1, 8, 64, 256, 100000, 0};   /* 100000: the whole vocabulary, must equal the exact path */
    for (int mi = 0; mi < 2; mi++) {
        char dir[512], err[1024];
        snprintf(dir, sizeof(dir), "%s/%s", fixtures_dir(), models[mi]);
        dg_engine *e;
        if (dg_engine_load(dir, NULL, &e, err, sizeof(err))) { CHECK(0, "%s", err); continue; }
        const dg_model_info *in = dg_engine_info(e);
        const int V = in->vocab_size, C = in->canvas_length;
        float *sc = malloc(sizeof(float) * (size_t)C * V), *exact = malloc(sizeof(float) * (size_t)C * V),
              *approx = malloc(sizeof(float) * (size_t)C * V);
        int32_t prompt[5] = {11, 22, 33, 44, 55}, canvas0[256], canvas1[256];
        for (int i = 0; i < C; i++) { canvas0[i] = (7 * i + 3) % V; canvas1[i] = (13 * i + 5) % V; }
        printf("  %s:", models[mi]);
        for (size_t ki = 0; ki < sizeof(ks) / sizeof(ks[0]); ki++) {
            dg_session_params sp = {64, 0, 0, DG_KERNELS_AUTO, ks[ki] > V ? V : ks[ki]};
            dg_session *s;
            if (dg_session_create(e, &sp, &s, err, sizeof(err))) { CHECK(0, "%s", err); break; }
            CHECK(dg_encode(s, prompt, 5, err, sizeof(err)) == 0, "%s", err);
            CHECK(dg_decode(s, canvas0, C, NULL, sc, err, sizeof(err)) == 0, "%s", err);
            float *dst = ks[ki] ? approx : exact;
            CHECK(dg_decode(s, canvas1, C, sc, dst, err, sizeof(err)) == 0, "%s", err);
            dg_session_free(s);
            if (!ks[ki]) break;
        }
        /* recompute each k against the exact logits */
        for (size_t ki = 0; ks[ki]; ki++) {
            dg_session_params sp = {64, 0, 0, DG_KERNELS_AUTO, ks[ki] > V ? V : ks[ki]};
            dg_session *s;
            if (dg_session_create(e, &sp, &s, err, sizeof(err))) { CHECK(0, "%s", err); break; }
            dg_encode(s, prompt, 5, err, sizeof(err));
            dg_decode(s, canvas0, C, NULL, sc, err, sizeof(err));
            dg_decode(s, canvas1, C, sc, approx, err, sizeof(err));
            double md = 0, mr = 0;
            int agree = 0;
            for (int t = 0; t < C; t++) {
                int a = 0, b = 0;
                for (int v = 0; v < V; v++) {
                    const size_t i = (size_t)t * V + v;
                    md = fmax(md, fabs((double)approx[i] - exact[i]));
                    mr = fmax(mr, fabs((double)exact[i]));
                    if (approx[i] > approx[(size_t)t * V + a]) a = v;
                    if (exact[i] > exact[(size_t)t * V + b]) b = v;
                }
                agree += a == b;
            }
            printf("  top-%d: logits max rel err %.2e, argmax %d/%d", ks[ki] > V ? V : ks[ki], md / mr, agree, C);
            if (ks[ki] >= V) CHECK(md / mr < 1e-4 && agree == C, "%s: top-k over the whole vocabulary differs from the exact path: %.3g", models[mi], md / mr);
            dg_session_free(s);
        }
        printf("\n");
        free(sc); free(exact); free(approx);
        dg_engine_free(e);
    }
}

/* ===== quantized and converted checkpoints ===== */

static double rel_err(const float *a, const float *r, int rows, int V, int *agree) { return test_rel_err(a, r, rows, V, agree, NULL); }

/*
 * A checkpoint in another format (GGUF, MLX) against the transformers reference run in float32 on the
 * same weights as stored (dequantized): the short session of make_fixtures.py (dec0, dec1 conditioned
 * on the reference's dec0 logits, the committed canvas, dec2). act = F32, so every kernel path is held
 * to the float32 bound; then the default (checkpoint dtype) activations are reported.
 */
static void format_parity(const char *model, const char *ref, dg_act_precision act, double tol, int strict_argmax) {
    char mp[512], rp[512], err[1024];
    snprintf(mp, sizeof(mp), "%s/%s", fixtures_dir(), model);
    snprintf(rp, sizeof(rp), "%s/%s", fixtures_dir(), ref);
    tapctx c;
    memset(&c, 0, sizeof(c));
    if (st_add_file(&c.ref, rp, err, sizeof(err)) || st_finish(&c.ref, err, sizeof(err))) { CHECK(0, "%s", err); return; }
    dg_engine_params ep = dg_engine_default_params();
    ep.act = act;
    dg_engine *e;
    if (dg_engine_load(mp, &ep, &e, err, sizeof(err))) { CHECK(0, "%s", err); st_close(&c.ref); return; }
    const int V = dg_engine_info(e)->vocab_size;
    int np, nc[3], ncm;
    int32_t *prompt = ref_ids(&c, "short.prompt", &np), *commit = ref_ids(&c, "short.commit", &ncm), *canvas[3];
    for (int i = 0; i < 3; i++) {
        char key[64];
        snprintf(key, sizeof(key), "short.canvas%d", i);
        canvas[i] = ref_ids(&c, key, &nc[i]);
    }
    const dg_kernels kerns[2] = {DG_KERNELS_REF, DG_KERNELS_AUTO};
    for (int ki = 0; ki < 2 && prompt && commit && canvas[0] && canvas[1] && canvas[2]; ki++) {
        dg_session_params sp = {256, 0, 0, kerns[ki], 0};
        dg_session *s;
        if (dg_session_create(e, &sp, &s, err, sizeof(err))) { CHECK(0, "%s", err); break; }
        float *lg = malloc(sizeof(float) * (size_t)nc[0] * V);
        printf("  %-4s %-26s act %-4s", ki ? "fast" : "ref", model, dg_engine_info(e)->act_dtype);
        CHECK(dg_encode(s, prompt, np, err, sizeof(err)) == 0, "%s", err);
        for (int call = 0; call < 3; call++) {
            char key[64];
            snprintf(key, sizeof(key), "short.dec%d.logits", call);
            const st_tensor *want = st_find(&c.ref, key);
            if (call == 2) CHECK(dg_encode(s, commit, ncm, err, sizeof(err)) == 0, "%s", err);
            const st_tensor *sc = call == 1 ? st_find(&c.ref, "short.dec0.logits") : NULL;
            if (call == 1 && !sc) continue;
            CHECK(dg_decode(s, canvas[call], nc[call], sc ? (const float *)sc->data : NULL, lg, err, sizeof(err)) == 0, "%s", err);
            if (!want) continue;
            int agree;
            const double r = rel_err(lg, (const float *)want->data, nc[call], V, &agree);
            printf("  dec%d rel err %.1e argmax %d/%d", call, r, agree, nc[call]);
            if (tol > 0) CHECK(r <= tol, "%s %s dec%d: logits rel error %.3g > %.0e", model, ki ? "fast" : "ref", call, r, tol);
            if (strict_argmax) CHECK(agree == nc[call], "%s dec%d: argmax differs at %d positions", model, call, nc[call] - agree);
        }
        printf("\n");
        free(lg);
        dg_session_free(s);
    }
    free(prompt); free(commit);
    for (int i = 0; i < 3; i++) free(canvas[i]);
    dg_engine_free(e);
    st_close(&c.ref);
}

static void t_gguf_parity(void) {
    /* float files hold the checkpoint's own bytes: the oracle is bit-identical to the HF fixtures */
    format_parity("gguf/tiny-a-bf16.gguf", "tiny-a/ref-bf16.safetensors", DG_ACT_AUTO, 0, 1);
    format_parity("gguf/tiny-c-f32.gguf", "tiny-c/ref-f32.safetensors", DG_ACT_AUTO, 1e-4, 1);
    const char *q[][2] = {{"gguf/tiny-a-q8_0.gguf", "gguf/ref-tiny-a-q8_0.safetensors"},
                          {"gguf/tiny-a-q4_k_m.gguf", "gguf/ref-tiny-a-q4_k_m.safetensors"},
                          {"gguf/tiny-b-q8_0.gguf", "gguf/ref-tiny-b-q8_0.safetensors"}};
    for (int i = 0; i < 3; i++) {
        format_parity(q[i][0], q[i][1], DG_ACT_F32, 1e-4, 1);
        format_parity(q[i][0], q[i][1], DG_ACT_AUTO, 0, 0);   /* reported: bf16 activations as deployed */
    }
}

/* tiny-k: real Q4_K / Q6_K blocks (a GGUF-only random model): the fast kernels against the oracle */
static void t_gguf_kquants(void) {
    char mp[512], err[1024];
    snprintf(mp, sizeof(mp), "%s/gguf/tiny-k-q4_k_m.gguf", fixtures_dir());
    dg_engine_params ep = dg_engine_default_params();
    ep.act = DG_ACT_F32;
    dg_engine *e;
    if (dg_engine_load(mp, &ep, &e, err, sizeof(err))) { CHECK(0, "%s", err); return; }
    const dg_model_info *in = dg_engine_info(e);
    const int V = in->vocab_size, C = in->canvas_length;
    float *out[2];
    int32_t prompt[20], canvas[64];
    for (int i = 0; i < 20; i++) prompt[i] = (37 * i + 11) % V;
    for (int i = 0; i < C; i++) canvas[i] = (53 * i + 7) % V;
    for (int k = 0; k < 2; k++) {
        dg_session_params sp = {64, 0, 0, k ? DG_KERNELS_AUTO : DG_KERNELS_REF, 0};
        dg_session *s;
        out[k] = calloc((size_t)C * V, sizeof(float));
        if (dg_session_create(e, &sp, &s, err, sizeof(err))) { CHECK(0, "%s", err); continue; }
        CHECK(dg_encode(s, prompt, 20, err, sizeof(err)) == 0, "%s", err);
        CHECK(dg_decode(s, canvas, C, NULL, out[k], err, sizeof(err)) == 0, "%s", err);
        CHECK(dg_decode(s, canvas, C, out[k], out[k], err, sizeof(err)) == 0, "%s", err);
        dg_session_free(s);
    }
    int agree, finite = 1;
    for (size_t i = 0; i < (size_t)C * V; i++) finite &= isfinite(out[0][i]) && isfinite(out[1][i]);
    const double r = rel_err(out[1], out[0], C, V, &agree);
    printf("  tiny-k-q4_k_m.gguf (Q4_K, Q6_K, Q5_0): fast vs oracle rel err %.1e, argmax %d/%d\n", r, agree, C);
    CHECK(finite && r < 1e-4 && agree == C, "tiny-k: fast vs oracle %.3g, %d/%d argmax", r, agree, C);
    free(out[0]); free(out[1]);
    dg_engine_free(e);
}

static void noop_tap(void *user, const char *name, const float *data, int rows, int cols) {
    (void)user; (void)name; (void)data; (void)rows; (void)cols;
}

/* The encoder skips its last layer's queries, attention and feed-forward (only K and V go to the
 * cache) unless a tap watches: a session with a tap (every stage computed) and one without must then
 * decode the same logits, bit for bit, on both paths, over prompts encoded in several chunks */
static void t_encode_last_layer(void) {
    const char *models[] = {"tiny-a/f32", "tiny-a/bf16", "tiny-c/bf16"};
    for (size_t mi = 0; mi < sizeof(models) / sizeof(models[0]); mi++) {
        char dir[512], err[1024];
        snprintf(dir, sizeof(dir), "%s/%s", fixtures_dir(), models[mi]);
        dg_engine *e;
        if (dg_engine_load(dir, NULL, &e, err, sizeof(err))) { CHECK(0, "%s", err); continue; }
        const dg_model_info *in = dg_engine_info(e);
        const int V = in->vocab_size, C = in->canvas_length, P = 45;
        int32_t prompt[45], canvas[256];
        for (int i = 0; i < P; i++) prompt[i] = (29 * i + 5) % V;
        if (C > 256) { CHECK(0, "canvas %d > 256", C); dg_engine_free(e); continue; }
        for (int i = 0; i < C; i++) canvas[i] = (71 * i + 3) % V;
        for (int k = 0; k < 2; k++) {
            float *lg[2];
            for (int tp = 0; tp < 2; tp++) {
                dg_session_params sp = dg_session_default_params();
                sp.n_ctx = 128;
                sp.n_batch = 16;
                sp.kernels = k ? DG_KERNELS_AUTO : DG_KERNELS_REF;
                dg_session *s;
                lg[tp] = calloc((size_t)C * V, sizeof(float));
                if (dg_session_create(e, &sp, &s, err, sizeof(err))) { CHECK(0, "%s", err); continue; }
                if (tp) dg_session_set_tap(s, noop_tap, NULL);
                CHECK(dg_encode(s, prompt, P, err, sizeof(err)) == 0, "%s", err);
                CHECK(dg_decode(s, canvas, C, NULL, lg[tp], err, sizeof(err)) == 0, "%s", err);
                dg_session_free(s);
            }
            CHECK(memcmp(lg[0], lg[1], sizeof(float) * (size_t)C * V) == 0, "%s %s: logits differ with the encoder's last layer skipped",
                  models[mi], k ? "fast" : "ref");
            free(lg[0]); free(lg[1]);
        }
        dg_engine_free(e);
    }
    printf("  tiny-a f32 / bf16, tiny-c bf16, oracle and fast path, 45 tokens in chunks of 16: the same logits with the encoder's last layer cut to K and V\n");
}

static void t_mlx_parity(void) {
    const char *q[][2] = {{"tiny-a/mlx-4bit", "tiny-a/ref-mlx-4bit.safetensors"},
                          {"tiny-a/mlx-8bit", "tiny-a/ref-mlx-8bit.safetensors"},
                          {"tiny-a/mlx-mixed_3_6", "tiny-a/ref-mlx-mixed_3_6.safetensors"},
                          {"tiny-a/mlx-nvfp4", "tiny-a/ref-mlx-nvfp4.safetensors"}};
    for (int i = 0; i < 4; i++) {
        format_parity(q[i][0], q[i][1], DG_ACT_F32, 1e-4, 1);
        format_parity(q[i][0], q[i][1], DG_ACT_AUTO, 0, 0);
    }
}

#define PARITY(fn, cfg, dt) \
    static void fn(void) { parity_case(cfg, dt, DG_KERNELS_REF); } \
    static void fn##_fast(void) { parity_case(cfg, dt, DG_KERNELS_AUTO); }
PARITY(t_parity_a_f32, "tiny-a", "f32")
PARITY(t_parity_a_bf16, "tiny-a", "bf16")
PARITY(t_parity_b_f32, "tiny-b", "f32")
PARITY(t_parity_b_bf16, "tiny-b", "bf16")
PARITY(t_parity_b_f16, "tiny-b", "f16")
PARITY(t_parity_c_f32, "tiny-c", "f32")
PARITY(t_parity_c_bf16, "tiny-c", "bf16")

const dg_test parity_tests[] = {
    {"parity/tiny-a/f32", t_parity_a_f32},
    {"parity/tiny-a/bf16", t_parity_a_bf16},
    {"parity/tiny-b/f32", t_parity_b_f32},
    {"parity/tiny-b/bf16", t_parity_b_bf16},
    {"parity/tiny-b/f16", t_parity_b_f16},
    {"parity/tiny-c/f32", t_parity_c_f32},
    {"parity/tiny-c/bf16", t_parity_c_bf16},
    {"parity-fast/tiny-a/f32", t_parity_a_f32_fast},
    {"parity-fast/tiny-a/bf16", t_parity_a_bf16_fast},
    {"parity-fast/tiny-b/f32", t_parity_b_f32_fast},
    {"parity-fast/tiny-b/bf16", t_parity_b_bf16_fast},
    {"parity-fast/tiny-b/f16", t_parity_b_f16_fast},
    {"parity-fast/tiny-c/f32", t_parity_c_f32_fast},
    {"parity-fast/tiny-c/bf16", t_parity_c_bf16_fast},
    {"parity/sc-top-k", t_sc_topk},
    {"parity/gguf", t_gguf_parity},
    {"parity/gguf-kquants", t_gguf_kquants},
    {"parity/mlx", t_mlx_parity},
    {"parity/encode-last-layer", t_encode_last_layer},
    {NULL, NULL},
};
