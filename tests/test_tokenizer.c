/*
 * test_tokenizer.c - the tokenizer against PyPI `tokenizers` (fixtures written by
 * tools/reference/make_tokenizer_fixtures.py): ids, decode with and without skipping special tokens,
 * the streaming decoder (concatenated pushes == dg_detokenize == the literal reference port), on
 *   - the committed small Gemma-layout tokenizer and four variants (flags, Prepend + Strip, Split
 *     behaviours without a decoder, legacy merges + ignore_merges),
 *   - the real Gemma 3 tokenizer from ../shared/data (skipped when absent), with the Gemma 4 vectors;
 * plus malformed files, the builder from parts, and edge cases.
 */
#define _POSIX_C_SOURCE 200809L
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "test.h"
#include "tokenizer/tokenizer.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, len = 0;
    char *b = malloc(cap);
    size_t r;
    while (b && (r = fread(b + len, 1, cap - len - 1, f)) > 0) {
        len += r;
        if (len + 1 == cap) { char *q = realloc(b, cap *= 2); if (!q) { free(b); b = NULL; } else b = q; }
    }
    fclose(f);
    if (b) b[len] = 0;
    *n = len;
    return b;
}

/* ===== fixture lines ===== */

/* a JSON string (or x:HEX) into a malloc'ed buffer */
static char *field_text(const char *s, size_t n, size_t *len) {
    if (n >= 2 && s[0] == 'x' && s[1] == ':') {
        size_t m = (n - 2) / 2;
        char *o = malloc(m + 1);
        for (size_t i = 0; i < m; i++) {
            unsigned v;
            sscanf(s + 2 + 2 * i, "%2x", &v);
            o[i] = (char)v;
        }
        o[m] = 0;
        *len = m;
        return o;
    }
    json_error_t e;
    json_t *j = json_loadb(s, n, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
    if (!j || !json_is_string(j)) { json_decref(j); return NULL; }
    *len = json_string_length(j);
    char *o = malloc(*len + 1);
    memcpy(o, json_string_value(j), *len);
    o[*len] = 0;
    json_decref(j);
    return o;
}

static int parse_ids(const char *s, size_t n, int32_t **ids) {
    int cap = 16, cnt = 0;
    *ids = malloc(sizeof(int32_t) * (size_t)cap);
    size_t i = 0;
    while (i < n) {
        if (s[i] == ' ') { i++; continue; }
        long v = 0;
        while (i < n && s[i] >= '0' && s[i] <= '9') v = v * 10 + (s[i++] - '0');
        if (cnt == cap) *ids = realloc(*ids, sizeof(int32_t) * (size_t)(cap *= 2));
        (*ids)[cnt++] = (int32_t)v;
    }
    return cnt;
}

/* the next fixture line (not empty, not a comment) at *pos in b[0, n): 1, or 0 at the end; the line
 * is NUL-terminated in place */
static int next_line(char *b, size_t n, char **pos, char **line, size_t *len) {
    while (*pos < b + n) {
        char *l = *pos, *end = memchr(l, '\n', (size_t)(b + n - l));
        if (!end) end = b + n;
        *pos = end + 1;
        *end = 0;
        if (end == l || l[0] == '#') continue;
        *line = l;
        *len = (size_t)(end - l);
        return 1;
    }
    return 0;
}

/* split a line into up to 4 tab-separated fields */
static int split_tabs(char *line, size_t n, const char **f, size_t *fl) {
    int k = 0;
    size_t st = 0;
    for (size_t i = 0; i <= n && k < 4; i++) {
        if (i == n || line[i] == '\t') { f[k] = line + st; fl[k] = i - st; k++; st = i + 1; }
    }
    return k;
}

/* the stream (pushes + flush) and the reference port against dg_detokenize */
static int stream_matches(const dg_tokenizer *t, const int32_t *ids, int n, int skip, const char *want, size_t wlen) {
    dg_detok_stream *st = dg_detok_stream_new(t, skip);
    char *acc = malloc(wlen + 64);
    size_t an = 0, cap = wlen + 64;
    int ok = 1;
    for (int i = 0; i <= n; i++) {
        size_t l;
        const char *s = i < n ? dg_detok_stream_push(st, ids[i], &l) : dg_detok_stream_flush(st, &l);
        if (!s) { ok = 0; break; }
        /* never half a UTF-8 character */
        if (!dg_utf8_valid(s, l)) ok = 0;
        if (an + l + 1 > cap) acc = realloc(acc, cap = 2 * (an + l + 1));
        memcpy(acc + an, s, l);
        an += l;
    }
    dg_detok_stream_free(st);
    ok = ok && an == wlen && !memcmp(acc, want, wlen);
    free(acc);
    char err[256], *ref;
    size_t rl;
    if (dg_detokenize_ref(t, ids, n, skip, &ref, &rl, err, sizeof(err))) return 0;
    ok = ok && rl == wlen && !memcmp(ref, want, wlen);
    free(ref);
    return ok;
}

typedef struct {
    int cases, id_ok, dec_ok, skip_ok, stream_ok, panics, panics_skip;
    size_t bytes;
    double enc_s;
} corpus_stats;

/* Run a corpus .tsv (TEXT IDS DECODE DECODE_SKIP) through t. */
static void run_corpus(const dg_tokenizer *t, const char *path, corpus_stats *cs) {
    memset(cs, 0, sizeof(*cs));
    size_t n;
    char *b = slurp(path, &n);
    CHECK(b != NULL, "cannot read %s", path);
    if (!b) return;
    int shown = 0;
    char *pos = b, *line;
    size_t ll;
    while (next_line(b, n, &pos, &line, &ll)) {
        const char *f[4];
        size_t fl[4];
        if (split_tabs(line, ll, f, fl) != 4) { CHECK(0, "%s: bad line '%.40s'", path, line); continue; }
        size_t tl, dl = 0, sl = 0;
        char *text = field_text(f[0], fl[0], &tl);
        CHECK(text != NULL, "%s: bad text field", path);
        if (!text) continue;
        int32_t *want;
        int nw = parse_ids(f[1], fl[1], &want);
        char *dec = fl[2] == 1 && f[2][0] == '=' ? NULL : fl[2] == 1 && f[2][0] == '!' ? NULL : field_text(f[2], fl[2], &dl);
        int dec_panic = fl[2] == 1 && f[2][0] == '!', skip_panic = fl[3] == 1 && f[3][0] == '!';
        const char *dec_s = dec ? dec : text;
        if (!dec) dl = tl;
        char *dsk = fl[3] == 1 && (f[3][0] == '=' || f[3][0] == '!') ? NULL : field_text(f[3], fl[3], &sl);
        const char *dsk_s = dsk ? dsk : dec_s;
        if (!dsk) sl = dl;
        cs->cases++;
        cs->bytes += tl;
        int32_t *ids;
        int ni;
        char err[256];
        double t0 = now_s();
        int rc = dg_tokenize(t, text, tl, &ids, &ni, err, sizeof(err));
        cs->enc_s += now_s() - t0;
        CHECK(rc == 0, "%s", err);
        if (rc) { free(text); free(want); free(dec); free(dsk); continue; }
        int same = ni == nw && !memcmp(ids, want, sizeof(int32_t) * (size_t)nw);
        cs->id_ok += same;
        if (!same && shown++ < 5) {
            fprintf(stderr, "  ids differ for %.*s\n   got ", (int)(fl[0] > 120 ? 120 : fl[0]), f[0]);
            for (int i = 0; i < ni && i < 30; i++) fprintf(stderr, " %d", ids[i]);
            fprintf(stderr, "\n  want ");
            for (int i = 0; i < nw && i < 30; i++) fprintf(stderr, " %d", want[i]);
            fprintf(stderr, "\n");
        }
        /* decodes of the reference ids */
        for (int skip = 0; skip < 2; skip++) {
            if (skip ? skip_panic : dec_panic) { cs->panics++; cs->panics_skip += skip; continue; }
            const char *w = skip ? dsk_s : dec_s;
            size_t wl = skip ? sl : dl;
            char *got;
            size_t gl;
            int ok = dg_detokenize(t, want, nw, skip, &got, &gl, err, sizeof(err)) == 0 && gl == wl && !memcmp(got, w, wl);
            if (!ok && shown++ < 5)
                fprintf(stderr, "  decode(skip=%d) differs for %.*s: got '%.80s' want '%.80s'\n", skip, (int)(fl[0] > 80 ? 80 : fl[0]), f[0], got ? got : "", w);
            if (skip) cs->skip_ok += ok; else cs->dec_ok += ok;
            cs->stream_ok += stream_matches(t, want, nw, skip, w, wl);
            free(got);
        }
        free(ids); free(text); free(want); free(dec); free(dsk);
    }
    free(b);
}

static void check_corpus(const dg_tokenizer *t, const char *path, const char *label) {
    corpus_stats cs;
    run_corpus(t, path, &cs);
    int dec_cases = 2 * cs.cases - cs.panics;
    printf("  %s: %d strings (%zu bytes): ids %d/%d, decode %d/%d, decode skip_special %d/%d, stream %d/%d%s\n", label,
           cs.cases, cs.bytes, cs.id_ok, cs.cases, cs.dec_ok, cs.cases - (cs.panics - cs.panics_skip), cs.skip_ok,
           cs.cases - cs.panics_skip, cs.stream_ok, dec_cases,
           cs.panics ? " (reference panicked on some decodes: not compared)" : "");
    if (cs.enc_s > 0) printf("  %s: encode %.2f MB/s\n", label, cs.bytes / cs.enc_s / 1e6);
    CHECK(cs.cases > 0 && cs.id_ok == cs.cases, "%s: ids differ in %d of %d strings", label, cs.cases - cs.id_ok, cs.cases);
    CHECK(cs.dec_ok + cs.skip_ok + cs.panics == 2 * cs.cases, "%s: decodes differ", label);
    CHECK(cs.stream_ok == dec_cases, "%s: the streaming decoder differs in %d decodes", label, dec_cases - cs.stream_ok);
}

/* decode .tsv: IDS DECODE DECODE_SKIP */
static void check_decodes(const dg_tokenizer *t, const char *path, const char *label) {
    size_t n;
    char *b = slurp(path, &n);
    CHECK(b != NULL, "cannot read %s", path);
    if (!b) return;
    int cases = 0, ok = 0, sok = 0;
    char *pos = b, *line;
    size_t ll;
    while (next_line(b, n, &pos, &line, &ll)) {
        const char *f[4];
        size_t fl[4], dl, sl;
        if (split_tabs(line, ll, f, fl) != 3) { CHECK(0, "%s: bad line", path); continue; }
        int32_t *ids;
        int ni = parse_ids(f[0], fl[0], &ids);
        char *d = field_text(f[1], fl[1], &dl);
        char *s = fl[2] == 1 && f[2][0] == '=' ? NULL : field_text(f[2], fl[2], &sl);
        if (!s) sl = dl;
        for (int skip = 0; skip < 2; skip++) {
            const char *w = skip && s ? s : d;
            size_t wl = skip ? sl : dl;
            char *got, err[256];
            size_t gl;
            int good = dg_detokenize(t, ids, ni, skip, &got, &gl, err, sizeof(err)) == 0 && gl == wl && !memcmp(got, w, wl) &&
                       stream_matches(t, ids, ni, skip, w, wl);
            if (!good && ok + sok < 3) fprintf(stderr, "  %s: decode(skip=%d) of %.*s: got '%.60s' want '%.60s'\n", label, skip, (int)fl[0], f[0], got ? got : "", w);
            if (skip) sok += good; else ok += good;
            free(got);
        }
        cases++;
        free(ids); free(d); free(s);
    }
    free(b);
    printf("  %s: %d id sequences: decode %d/%d, decode skip_special %d/%d (stream included)\n", label, cases, ok, cases, sok, cases);
    CHECK(cases > 0 && ok == cases && sok == cases, "%s: decodes differ", label);
}

static dg_tokenizer *load_fixture(const char *rel) {
    char path[512], err[512];
    snprintf(path, sizeof(path), "%s/%s", fixtures_dir(), rel);
    dg_tokenizer *t = NULL;
    if (dg_tokenizer_load(path, &t, err, sizeof(err))) CHECK(0, "%s", err);
    return t;
}

/* tokenizer/NAME-corpus.tsv and tokenizer/NAME-decode.tsv */
static void check_fixtures(const dg_tokenizer *t, const char *name) {
    char path[512];
    snprintf(path, sizeof(path), "%s/tokenizer/%s-corpus.tsv", fixtures_dir(), name);
    check_corpus(t, path, name);
    snprintf(path, sizeof(path), "%s/tokenizer/%s-decode.tsv", fixtures_dir(), name);
    check_decodes(t, path, name);
}

static void test_small_corpus(void) {
    dg_tokenizer *t = load_fixture("tokenizer/small/tokenizer.json");
    if (!t) return;
    CHECK(dg_tokenizer_n_vocab(t) == 2048, "n_vocab %d", dg_tokenizer_n_vocab(t));
    check_fixtures(t, "small");
    dg_tokenizer_free(t);
}

/* the same vocabulary and merges as GGUF metadata (tokenizer.ggml.*, model "gemma4"): identical results */
static void test_small_gguf(void) {
    dg_tokenizer *t = load_fixture("tokenizer/small-gguf/tokenizer.gguf");
    if (!t) return;
    CHECK(dg_tokenizer_n_vocab(t) == 2048, "n_vocab %d", dg_tokenizer_n_vocab(t));
    check_fixtures(t, "small");
    dg_tokenizer_free(t);
}

static void test_variants(void) {
    static const char *names[] = {"flags", "prepend-strip", "split-nodecoder", "legacy-ignore-merges"};
    for (int i = 0; i < 4; i++) {
        char rel[256], path[512];
        snprintf(rel, sizeof(rel), "tokenizer/variants/%s.json", names[i]);
        dg_tokenizer *t = load_fixture(rel);
        if (!t) continue;
        snprintf(path, sizeof(path), "%s/tokenizer/variants/%s.tsv", fixtures_dir(), names[i]);
        check_corpus(t, path, names[i]);
        dg_tokenizer_free(t);
    }
}

/* the tiny-a checkpoint directories carry the small tokenizer */
static void test_model_dir(void) {
    for (int k = 0; k < 2; k++) {
        dg_tokenizer *t = load_fixture(k ? "tiny-a/bf16" : "tiny-a/f32");
        if (!t) continue;
        CHECK(dg_tokenizer_n_vocab(t) == 2048, "n_vocab %d", dg_tokenizer_n_vocab(t));
        int sp;
        const char *p = dg_tokenizer_piece(t, 105, &sp);
        CHECK(p && !strcmp(p, "<|turn>") && sp == 1, "id 105 is '%s' special %d", p ? p : "(null)", sp);
        p = dg_tokenizer_piece(t, 107, &sp);
        CHECK(p && !strcmp(p, "\n") && sp == 0, "id 107");
        p = dg_tokenizer_piece(t, 238 + 0x41, &sp);
        CHECK(p && !strcmp(p, "<0x41>"), "byte piece");
        CHECK(dg_tokenizer_find(t, "<bos>") == 2 && dg_tokenizer_find(t, "<eos>") == 1 && dg_tokenizer_find(t, "<|\"|>") == 52,
              "special ids");
        CHECK(dg_tokenizer_find(t, "no such piece") == -1, "find of a missing piece");
        CHECK(dg_tokenizer_piece(t, 2048, NULL) == NULL && dg_tokenizer_piece(t, -1, NULL) == NULL, "piece out of range");
        dg_tokenizer_free(t);
    }
}

/* ===== Gemma 3 (../shared/data) ===== */

const char *shared_file(const char *name, char *buf, size_t n) {
    const char *env = getenv("DG_SHARED_DATA");
    const char *cands[] = {env, "../shared/data", "../../shared/data"};
    for (int i = 0; i < 3; i++) {
        if (!cands[i] || !*cands[i]) continue;
        snprintf(buf, n, "%s/%s", cands[i], name);
        if (access(buf, R_OK) == 0) return buf;
    }
    return NULL;
}

dg_tokenizer *gemma3_tokenizer(void) {
    char xz[1024];
    if (!shared_file("gemma3-tokenizer.json.xz", xz, sizeof(xz))) {
        printf("  skipped: ../shared/data/gemma3-tokenizer.json.xz not found (set DG_SHARED_DATA)\n");
        return NULL;
    }
    char tmp[] = "/tmp/dg-gemma3-tokenizer-XXXXXX";
    int fd = mkstemp(tmp);
    CHECK(fd >= 0, "mkstemp");
    if (fd < 0) return NULL;
    close(fd);
    char cmd[2300];
    snprintf(cmd, sizeof(cmd), "xz -dc '%s' > '%s'", xz, tmp);
    int rc = system(cmd);
    CHECK(rc == 0, "'%s' failed (is xz installed?)", cmd);
    char err[512];
    dg_tokenizer *t = NULL;
    rc = rc ? -1 : dg_tokenizer_load(tmp, &t, err, sizeof(err));
    unlink(tmp);
    CHECK(rc == 0, "%s", err);
    return rc ? NULL : t;
}

static void unescape_tsv(char *s) {
    char *w = s;
    for (char *r = s; *r; r++) {
        if (*r == '\\' && r[1]) {
            r++;
            *w++ = *r == 'n' ? '\n' : *r == 't' ? '\t' : *r == 'r' ? '\r' : *r;
        } else {
            *w++ = *r;
        }
    }
    *w = 0;
}

static void test_gemma3(void) {
    char vec[1024], err[512];
    double t0 = now_s(), c0 = cpu_s();
    dg_tokenizer *t = gemma3_tokenizer();
    double load_s = now_s() - t0, load_cpu = cpu_s() - c0;
    if (!t) return;
    printf("  gemma3 tokenizer.json: loaded in %.3f s (%.3f s CPU), %d ids\n", load_s, load_cpu, dg_tokenizer_n_vocab(t));
    CHECK(dg_tokenizer_n_vocab(t) == 262145, "n_vocab %d", dg_tokenizer_n_vocab(t));
    CHECK(dg_tokenizer_find(t, "<image_soft_token>") == 262144, "added token beyond the vocabulary");

    /* the 25 Gemma 4 vectors (same base vocabulary) */
    if (shared_file("gemma4-tokenizer-vectors.tsv", vec, sizeof(vec))) {
        size_t n;
        char *b = slurp(vec, &n);
        int cases = 0, good = 0;
        char *pos = b, *line;
        size_t ll;
        while (b && next_line(b, n, &pos, &line, &ll)) {
            char *tab = strchr(line, '\t');
            if (!tab || !strncmp(line, "text\tids", 8)) continue;
            *tab = 0;
            unescape_tsv(line);
            int32_t *want, *ids;
            int nw = parse_ids(tab + 1, strlen(tab + 1), &want), ni;
            if (dg_tokenize(t, line, strlen(line), &ids, &ni, err, sizeof(err)) == 0) {
                int same = ni == nw && !memcmp(ids, want, sizeof(int32_t) * (size_t)nw);
                good += same;
                if (!same) fprintf(stderr, "  gemma4 vector '%s' differs\n", line);
                free(ids);
            }
            free(want);
            cases++;
        }
        free(b);
        printf("  gemma4 vectors: %d/%d identical\n", good, cases);
        CHECK(cases == 25 && good == cases, "gemma4 vectors %d/%d", good, cases);
    } else {
        printf("  skipped: gemma4-tokenizer-vectors.tsv not found\n");
    }
    check_fixtures(t, "gemma3");
    dg_tokenizer_free(t);
}

/* ===== malformed files ===== */

static int parse_str(const char *json, char *err, size_t errlen) {
    char *b = strdup(json);
    dg_tokenizer *t = NULL;
    int rc = dg_tok_json_parse(b, strlen(b), "bad.json", &t, err, errlen);
    free(b);
    dg_tokenizer_free(t);
    return rc;
}

#define MODEL_OK "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2,\"<unk>\":3},\"merges\":[[\"a\",\"b\"]],\"unk_token\":\"<unk>\"}"

static void test_malformed(void) {
    static const struct { const char *json, *want; } cases[] = {
        {"", "expected an object"},
        {"[]", "expected an object"},
        {"{}", "no \"model\""},
        {"{\"model\":{\"type\":\"Unigram\",\"vocab\":[]}}", "unsupported model type 'Unigram'"},
        {"{\"model\":{\"type\":\"WordPiece\"}}", "model.type"},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0}}}", "missing \"merges\""},
        {"{\"model\":{\"type\":\"BPE\",\"merges\":[]}}", "missing \"vocab\""},
        {"{\"model\":{\"vocab\":{},\"merges\":[]}}", "missing \"type\""},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":\"0\"},\"merges\":[]}}", "model.vocab"},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":-1},\"merges\":[]}}", "model.vocab"},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":1.5},\"merges\":[]}}", "non-negative integer"},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":99999999},\"merges\":[]}}", "too large"},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":0},\"merges\":[]}}", "id 0 is given to two pieces"},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1},\"merges\":[[\"a\",\"c\"]]}}", "merge 0: 'c' is not in the vocabulary"},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1},\"merges\":[[\"a\",\"b\"]]}}", "merged piece 'ab'"},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},\"merges\":[\"a b c\"]}}", "model.merges[0]"},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},\"merges\":[\"a b\",[\"a\",\"b\"]]}}", "mixes"},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},\"merges\":[[\"a\"]]}}", "model.merges[0]"},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[],\"unk_token\":\"<unk>\"}}", "unk_token '<unk>' is not in the vocabulary"},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[],\"dropout\":0.1}}", "dropout"},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[],\"continuing_subword_prefix\":\"##\"}}", "continuing_subword_prefix"},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[],\"fuse_unk\":1}}", "model.fuse_unk"},
        {"{\"version\":\"2.0\"," MODEL_OK "}", "unknown tokenizer version"},
        {"{" MODEL_OK ",\"normalizer\":{\"type\":\"NFKC\"}}", "unsupported normalizer type 'NFKC'"},
        {"{" MODEL_OK ",\"normalizer\":{\"type\":\"Replace\",\"pattern\":{\"Regex\":\" +\"},\"content\":\"x\"}}", "Regex patterns are not supported"},
        {"{" MODEL_OK ",\"normalizer\":{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"}}}", "without \"content\""},
        {"{" MODEL_OK ",\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Lowercase\"}]}}", "normalizer.normalizers[0]"},
        {"{" MODEL_OK ",\"pre_tokenizer\":{\"type\":\"ByteLevel\"}}", "unsupported pre_tokenizer type 'ByteLevel'"},
        {"{" MODEL_OK ",\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"String\":\" \"},\"behavior\":\"Sideways\",\"invert\":false}}", "unknown Split behavior"},
        {"{" MODEL_OK ",\"decoder\":{\"type\":\"Metaspace\"}}", "unsupported decoder type 'Metaspace'"},
        {"{" MODEL_OK ",\"decoder\":{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Fuse\"},{\"type\":\"ByteFallback\"}]}}", "ByteFallback after Fuse"},
        {"{" MODEL_OK ",\"decoder\":{\"type\":\"Strip\",\"content\":\"ab\",\"start\":1,\"stop\":0}}", "one character"},
        {"{" MODEL_OK ",\"added_tokens\":[{\"id\":5,\"content\":\"x\",\"special\":true}]}", "missing field \"normalized\""},
        {"{" MODEL_OK ",\"added_tokens\":[{\"id\":5,\"content\":7,\"special\":true,\"normalized\":false,\"lstrip\":false,\"rstrip\":false,\"single_word\":false}]}", "added_tokens[0].content"},
        {"{" MODEL_OK ",\"added_tokens\":{}}", "expected an array"},
        {"{" MODEL_OK "} x", "trailing data"},
        {"{" MODEL_OK ",}", "expected a string"},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"\\ud800\":0},\"merges\":[]}}", "lone high surrogate"},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"\\udc00\":0},\"merges\":[]}}", "lone low surrogate"},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"\\x\":0},\"merges\":[]}}", "bad escape"},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"\xff\":0},\"merges\":[]}}", "invalid UTF-8"},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\tb\":0},\"merges\":[]}}", "control character"},
        {"\xEF\xBB\xBF{}", "byte order mark"},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[],\"x\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}}", "nesting deeper"},
    };
    char err[512];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        err[0] = 0;
        int rc = parse_str(cases[i].json, err, sizeof(err));
        CHECK(rc == -1 && strstr(err, cases[i].want), "case %zu: rc %d, error '%s' lacks '%s'", i, rc, err, cases[i].want);
        if (i < 3 || i == 13) printf("  e.g. %s\n", err);
    }
    /* a well-formed minimal file parses */
    CHECK(parse_str("{" MODEL_OK "}", err, sizeof(err)) == 0, "%s", err);
    /* every truncation of the small tokenizer fails cleanly (never a crash) */
    char path[512];
    snprintf(path, sizeof(path), "%s/tokenizer/small/tokenizer.json", fixtures_dir());
    size_t n;
    char *full = slurp(path, &n);
    CHECK(full != NULL, "read %s", path);
    int fails = 0, tries = 0;
    for (size_t cut = 0; full && cut < n - 2; cut += 1 + cut / 7) {
        char *b = malloc(cut + 1);
        memcpy(b, full, cut);
        b[cut] = 0;
        dg_tokenizer *t = NULL;
        fails += dg_tok_json_parse(b, cut, "cut.json", &t, err, sizeof(err)) == -1;
        tries++;
        dg_tokenizer_free(t);
        free(b);
    }
    printf("  %d truncations of tokenizer.json: %d rejected\n", tries, fails);
    CHECK(tries > 50 && fails == tries, "a truncated file was accepted (%d of %d)", tries - fails, tries);
    free(full);
    /* random byte changes in a compact file: each one loads or fails with a message, never crashes;
     * what loads must encode and decode (ASan / UBSan watch the rest) */
    snprintf(path, sizeof(path), "%s/tokenizer/variants/flags.json", fixtures_dir());
    full = slurp(path, &n);
    CHECK(full != NULL, "read %s", path);
    uint64_t x = 0x9E3779B97F4A7C15ull;
    int loaded = 0, rejected = 0;
    static const char junk[] = "\"\\{}[],:0-9eE.tfnu \x80\xff\xc3";
    for (int k = 0; full && k < 150; k++) {
        char *b = malloc(n + 1);
        memcpy(b, full, n + 1);
        for (int m = 0; m < 1 + k % 3; m++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            size_t at = (size_t)(x >> 33) % n;
            b[at] = junk[(x >> 20) % (sizeof(junk) - 1)];
        }
        dg_tokenizer *t2 = NULL;
        err[0] = 0;
        if (dg_tok_json_parse(b, n, "mutated.json", &t2, err, sizeof(err)) == 0) {
            loaded++;
            int32_t *ids;
            int ni;
            char *txt;
            size_t tl;
            static const char probe[] = "<|turn>user\nhello wor ok ab c é 🦙<turn|>";
            if (dg_tokenize(t2, probe, sizeof(probe) - 1, &ids, &ni, err, sizeof(err)) == 0) {
                if (dg_detokenize(t2, ids, ni, 1, &txt, &tl, err, sizeof(err)) == 0) free(txt);
                free(ids);
            }
        } else {
            rejected++;
            CHECK(strstr(err, "mutated.json") != NULL, "error without the file name: %s", err);
        }
        dg_tokenizer_free(t2);
        free(b);
    }
    printf("  150 mutated files: %d loaded, %d rejected with a message\n", loaded, rejected);
    free(full);
    dg_tokenizer *t = NULL;
    CHECK(dg_tokenizer_load("/nonexistent/tokenizer.json", &t, err, sizeof(err)) == -1 && strstr(err, "/nonexistent/tokenizer.json"),
          "missing file: %s", err);
    CHECK(dg_tokenizer_load("/tmp", &t, err, sizeof(err)) == -1 && strstr(err, "/tmp/tokenizer.json"), "directory without tokenizer.json: %s", err);
}

/* ===== builder from parts (the GGUF path) and edge cases ===== */

static void test_build_and_edges(void) {
    /* a Gemma-pipeline tokenizer from parts: pieces by id, merges, GGUF token types */
    static const char *pieces[] = {"<pad>", "<eos>", "<bos>", "<unk>", "<|turn>", "\xE2\x96\x81", "h", "i", "hi", "\xE2\x96\x81hi", "\n"};
    static const uint8_t types[] = {3, 3, 3, 2, 3, 1, 1, 1, 1, 1, 4};
    enum { NP = sizeof(pieces) / sizeof(pieces[0]) };
    dg_tok_str ps[NP + 256];
    uint8_t fl[NP + 256];
    char bytes[256][7];
    for (int i = 0; i < NP; i++) { ps[i] = (dg_tok_str){pieces[i], (uint32_t)strlen(pieces[i])}; fl[i] = (uint8_t)dg_tok_flags_from_gguf_type(types[i]); }
    for (int b = 0; b < 256; b++) {
        snprintf(bytes[b], sizeof(bytes[b]), "<0x%02X>", b);
        ps[NP + b] = (dg_tok_str){bytes[b], 6};
        fl[NP + b] = (uint8_t)dg_tok_flags_from_gguf_type(6);
    }
    dg_tok_str merges[] = {{"h", 1}, {"i", 1}, {"\xE2\x96\x81", 3}, {"hi", 2}};
    dg_tok_spec s;
    memset(&s, 0, sizeof(s));
    dg_tok_spec_gemma(&s);
    s.name = "parts";
    s.n_pieces = NP + 256;
    s.pieces = ps;
    s.piece_flags = fl;
    s.n_merges = 2;
    s.merges = merges;
    dg_tokenizer *t = NULL;
    char err[512];
    CHECK(dg_tokenizer_build(&s, &t, err, sizeof(err)) == 0, "%s", err);
    if (t) {
        const char *text = "<bos>hi hi\n<|turn>é";
        int32_t *ids;
        int n;
        CHECK(dg_tokenize(t, text, strlen(text), &ids, &n, err, sizeof(err)) == 0, "%s", err);
        int32_t want[] = {2, 8, 9, 10, 4, NP + 0xC3, NP + 0xA9};
        CHECK(n == 7 && !memcmp(ids, want, sizeof(want)), "parts: got %d ids", n);
        char *d;
        size_t dl;
        CHECK(dg_detokenize(t, ids, n, 1, &d, &dl, err, sizeof(err)) == 0 && !strcmp(d, "hi hi\né"), "parts decode '%s'", d);
        free(d);
        free(ids);
        /* empty text: no ids, a valid pointer */
        CHECK(dg_tokenize(t, "", 0, &ids, &n, err, sizeof(err)) == 0 && n == 0 && ids, "empty text");
        free(ids);
        /* invalid UTF-8: each maximal invalid subpart is one U+FFFD (bytes EF BF BD) */
        CHECK(dg_tokenize(t, "h\xE2\x96" "i\xFF", 5, &ids, &n, err, sizeof(err)) == 0, "%s", err);
        int32_t want2[] = {6, NP + 0xEF, NP + 0xBF, NP + 0xBD, 7, NP + 0xEF, NP + 0xBF, NP + 0xBD};
        CHECK(n == 8 && !memcmp(ids, want2, sizeof(want2)), "invalid UTF-8: %d ids", n);
        free(ids);
        /* NUL bytes are text */
        CHECK(dg_tokenize(t, "h\0i", 3, &ids, &n, err, sizeof(err)) == 0 && n == 3 && ids[1] == NP, "NUL byte");
        free(ids);
        /* bad ids */
        int32_t bad[] = {2, 99999};
        CHECK(dg_detokenize(t, bad, 2, 0, &d, &dl, err, sizeof(err)) == -1 && strstr(err, "id 99999 at index 1"), "bad id: %s", err);
        dg_detok_stream *st = dg_detok_stream_new(t, 0);
        size_t l;
        CHECK(dg_detok_stream_push(st, -5, &l) == NULL && l == 0, "stream: bad id");
        /* a UTF-8 character split over byte tokens is held until complete */
        const char *a = dg_detok_stream_push(st, NP + 0xC3, &l);
        CHECK(a && l == 0, "stream: first byte held");
        a = dg_detok_stream_push(st, NP + 0xA9, &l);
        CHECK(a && l == 0, "stream: byte run still open");
        a = dg_detok_stream_push(st, 8, &l);
        CHECK(a && l == 4 && !memcmp(a, "\xC3\xA9hi", 4), "stream: run closed");
        a = dg_detok_stream_push(st, NP + 0xE2, &l);
        a = dg_detok_stream_flush(st, &l);
        CHECK(a && l == 3 && !memcmp(a, "\xEF\xBF\xBD", 3), "stream: flush of an incomplete run");
        dg_detok_stream_free(st);
        dg_tokenizer_free(t);
    }
    /* builder errors name what is wrong */
    s.n_merges = 1;
    dg_tok_str bad_merges[] = {{"h", 1}, {"x", 1}};
    s.merges = bad_merges;
    CHECK(dg_tokenizer_build(&s, &t, err, sizeof(err)) == -1 && strstr(err, "merge 0: 'x'"), "%s", err);
    s.merges = merges;
    s.n_merges = 2;
    ps[7] = (dg_tok_str){"h", 1};
    CHECK(dg_tokenizer_build(&s, &t, err, sizeof(err)) == -1 && strstr(err, "piece 'h' has two ids"), "%s", err);
    ps[7] = (dg_tok_str){"\xC3", 1};
    CHECK(dg_tokenizer_build(&s, &t, err, sizeof(err)) == -1 && strstr(err, "piece 7 is not valid UTF-8"), "%s", err);
    ps[7] = (dg_tok_str){"i", 1};
    s.unk = (dg_tok_str){"<nope>", 6};
    CHECK(dg_tokenizer_build(&s, &t, err, sizeof(err)) == -1 && strstr(err, "<nope>"), "%s", err);
}

const dg_test tokenizer_tests[] = {
    {"tokenizer/small-corpus", test_small_corpus},
    {"tokenizer/small-gguf", test_small_gguf},
    {"tokenizer/variants", test_variants},
    {"tokenizer/model-dir", test_model_dir},
    {"tokenizer/gemma3", test_gemma3},
    {"tokenizer/malformed", test_malformed},
    {"tokenizer/build-and-edges", test_build_and_edges},
    {NULL, NULL},
};
