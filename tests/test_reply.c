/*
 * test_reply.c - the reply splitter (dg_reply_*): thought channels, tool calls, content, streamed in
 * chunks of every size, on the small fixture tokenizer (Gemma 4 control tokens at their ids) and on
 * the real Gemma 3 vocabulary (no such tokens: everything is content). Tool calls rendered by the
 * built-in template and by the published Gemma 4 template (../shared/data) parse back to their
 * arguments. Malformed input degrades to content, never crashes.
 */
#define _POSIX_C_SOURCE 200809L
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dgemma.h"
#include "test.h"
#include "tokenizer/tokenizer.h"

static dg_tokenizer *small_tok(void) {
    char path[1024], err[512];
    snprintf(path, sizeof(path), "%s/tokenizer/small", fixtures_dir());
    dg_tokenizer *t = NULL;
    int rc = dg_tokenizer_load(path, &t, err, sizeof(err));
    CHECK(rc == 0, "%s", err);
    return t;
}

static int32_t *ids_of(const dg_tokenizer *t, const char *text, int *n) {
    int32_t *ids = NULL;
    char err[512];
    int rc = dg_tokenize(t, text, strlen(text), &ids, n, err, sizeof(err));
    CHECK(rc == 0, "%s", err);
    return ids;
}

/* the deltas as they arrived, by part, and their count */
typedef struct {
    char *part[3];
    size_t len[3];
    int n_deltas[3];
    int bad_utf8;
} deltas;

static void on_delta(void *user, dg_reply_part part, const char *s, size_t n) {
    deltas *d = user;
    if (part != DG_REPLY_TOOL_CALL && !dg_utf8_valid(s, n)) d->bad_utf8++;
    char *q = realloc(d->part[part], d->len[part] + n + 2);
    if (!q) return;
    memcpy(q + d->len[part], s, n);
    d->len[part] += n;
    if (part == DG_REPLY_TOOL_CALL) q[d->len[part]++] = '\n';   /* one call per line */
    q[d->len[part]] = 0;
    d->part[part] = q;
    d->n_deltas[part]++;
}

static void deltas_free(deltas *d) {
    for (int i = 0; i < 3; i++) free(d->part[i]);
}

static const char *str_or_empty(const char *s) { return s ? s : ""; }

/* push ids in chunks of `chunk` (0: all at once), finish; the reply (caller frees) and its deltas */
static dg_reply *split(const dg_tokenizer *t, const int32_t *ids, int n, int thinking, int chunk, deltas *d) {
    char err[512];
    memset(d, 0, sizeof(*d));
    dg_reply *r = dg_reply_new(t, thinking);
    CHECK(r != NULL, "dg_reply_new");
    if (!r) return NULL;
    int step = chunk > 0 ? chunk : (n > 0 ? n : 1);
    for (int i = 0; i < n; i += step) {
        int k = n - i < step ? n - i : step;
        int rc = dg_reply_push(r, ids + i, k, on_delta, d, err, sizeof(err));
        CHECK(rc == 0, "%s", err);
    }
    int rc = dg_reply_finish(r, on_delta, d, err, sizeof(err));
    CHECK(rc == 0, "%s", err);
    /* the deltas add up to the whole parts */
    CHECK(!strcmp(str_or_empty(d->part[0]), dg_reply_content(r)), "content deltas '%s' vs '%s'", str_or_empty(d->part[0]),
          dg_reply_content(r));
    CHECK(!strcmp(str_or_empty(d->part[1]), dg_reply_reasoning(r)), "reasoning deltas");
    CHECK(d->bad_utf8 == 0, "%d deltas are not valid UTF-8", d->bad_utf8);
    return r;
}

/* split the text's ids in several chunkings; every one must give content / reasoning / calls */
static void expect(const dg_tokenizer *t, const char *text, int thinking, const char *content, const char *reasoning,
                   const char *calls) {
    int n;
    int32_t *ids = ids_of(t, text, &n);
    static const int chunks[] = {0, 1, 2, 3, 5, 16};
    for (size_t c = 0; c < sizeof(chunks) / sizeof(chunks[0]); c++) {
        deltas d;
        dg_reply *r = split(t, ids, n, thinking, chunks[c], &d);
        if (!r) break;
        CHECK(!strcmp(dg_reply_content(r), content), "'%s' chunk %d: content '%s', want '%s'", text, chunks[c],
              dg_reply_content(r), content);
        CHECK(!strcmp(dg_reply_reasoning(r), reasoning), "'%s' chunk %d: reasoning '%s', want '%s'", text, chunks[c],
              dg_reply_reasoning(r), reasoning);
        CHECK(!strcmp(dg_reply_tool_calls_json(r), calls), "'%s' chunk %d: calls\n    %s\n  want\n    %s", text, chunks[c],
              dg_reply_tool_calls_json(r), calls);
        deltas_free(&d);
        dg_reply_free(r);
    }
    free(ids);
}

/* ===== the small tokenizer (Gemma 4 control tokens) ===== */

static void test_reply_channels(void) {
    dg_tokenizer *t = small_tok();
    if (!t) return;
    /* no markers: everything is content, the special tokens skipped like decode(skip_special_tokens) */
    expect(t, "Hello, world! Grüße 🦙<turn|>", 0, "Hello, world! Grüße 🦙", "", "[]");
    expect(t, "", 1, "", "", "[]");
    /* a thought, then the answer */
    expect(t, "<|channel>thought\nLet me think: 2+2.<channel|>The answer is 4.", 1, "The answer is 4.",
           "Let me think: 2+2.", "[]");
    /* also split off when the prompt did not enable thinking */
    expect(t, "<|channel>thought\nhmm<channel|>ok", 0, "ok", "hmm", "[]");
    /* the prompt ended inside the channel (thinking = 2) */
    expect(t, "Still thinking\n<channel|>\nDone.", 2, "\nDone.", "Still thinking\n", "[]");
    /* empty thoughts: with the name's newline, without it */
    expect(t, "<|channel>thought\n<channel|>Hi", 1, "Hi", "", "[]");
    expect(t, "<|channel>thought<channel|>Hi", 1, "Hi", "", "[]");
    /* a thought that never closes stays reasoning */
    expect(t, "<|channel>thought\nabc def", 1, "", "abc def", "[]");
    /* degraded: a channel with another name, a name that never ends, a stray close, no name at all */
    expect(t, "<|channel>analysis\nfoo<channel|>bar", 1, "analysis\nfoobar", "", "[]");
    expect(t, "a<|channel>thought", 1, "athought", "", "[]");
    expect(t, "<|channel>this is a long line of text that is certainly no channel name at all, is it", 1,
           "this is a long line of text that is certainly no channel name at all, is it", "", "[]");
    expect(t, "x<channel|>y<|channel>", 1, "xy", "", "[]");
    /* a second thought later in the reply */
    expect(t, "<|channel>thought\nA<channel|>B<|channel>thought\nC<channel|>D", 1, "BD", "AC", "[]");
    /* a tool-call marker inside a thought is skipped */
    expect(t, "<|channel>thought\nA<|tool_call>B<channel|>C", 1, "C", "AB", "[]");
    dg_tokenizer_free(t);
}

static void test_reply_tool_calls(void) {
    dg_tokenizer *t = small_tok();
    if (!t) return;
    expect(t, "<|tool_call>call:get_weather{city:<|\"|>Paris, FR<|\"|>,days:3,metric:true,extra:null,"
              "tags:[<|\"|>a<|\"|>,1.5e3,-2],nested:{deep:{x:-0.25}},note:<|\"|>say \"hi\"\n\\<|\"|>}<tool_call|>",
           0, "", "",
           "[{\"id\":\"call_0\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":"
           "\"{\\\"city\\\":\\\"Paris, FR\\\",\\\"days\\\":3,\\\"metric\\\":true,\\\"extra\\\":null,"
           "\\\"tags\\\":[\\\"a\\\",1.5e3,-2],\\\"nested\\\":{\\\"deep\\\":{\\\"x\\\":-0.25}},"
           "\\\"note\\\":\\\"say \\\\\\\"hi\\\\\\\"\\\\n\\\\\\\\\\\"}\"}}]");
    /* two calls with text around them, Python spellings, quoted keys, empty arguments, spaces */
    expect(t, "Let me check.<|tool_call>call:a{}<tool_call|> and <|tool_call> call: b {<|\"|>k<|\"|>: True , v:None,"
              " w:[], z: bare words }<tool_call|>",
           0, "Let me check. and ", "",
           "[{\"id\":\"call_0\",\"type\":\"function\",\"function\":{\"name\":\"a\",\"arguments\":\"{}\"}},"
           "{\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"b\",\"arguments\":"
           "\"{\\\"k\\\":true,\\\"v\\\":null,\\\"w\\\":[],\\\"z\\\":\\\"bare words\\\"}\"}}]");
    /* numbers that JSON does not spell that way stay text */
    expect(t, "<|tool_call>call:n{a:007,b:inf,c:1.,d:+1}<tool_call|>", 0, "", "",
           "[{\"id\":\"call_0\",\"type\":\"function\",\"function\":{\"name\":\"n\",\"arguments\":"
           "\"{\\\"a\\\":\\\"007\\\",\\\"b\\\":\\\"inf\\\",\\\"c\\\":\\\"1.\\\",\\\"d\\\":\\\"+1\\\"}\"}}]");
    /* after a thought */
    expect(t, "<|channel>thought\nuse the tool<channel|><|tool_call>call:f{x:1}<tool_call|>", 1, "", "use the tool",
           "[{\"id\":\"call_0\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"x\\\":1}\"}}]");
    dg_tokenizer_free(t);
}

static void test_reply_malformed_calls(void) {
    dg_tokenizer *t = small_tok();
    if (!t) return;
    /* each degrades to its text (markers and quotes skipped), no call */
    expect(t, "A<|tool_call>call:f{a:1", 0, "Acall:f{a:1", "", "[]");                     /* unterminated */
    expect(t, "<|tool_call>call f{}<tool_call|>B", 0, "call f{}B", "", "[]");              /* no colon */
    expect(t, "<|tool_call>call:{}<tool_call|>", 0, "call:{}", "", "[]");                  /* no name */
    expect(t, "<|tool_call>call:f{a:<|\"|>x}<tool_call|>", 0, "call:f{a:x}", "", "[]");    /* open string */
    expect(t, "<|tool_call>call:f{a:1}}<tool_call|>", 0, "call:f{a:1}}", "", "[]");        /* trailing text */
    expect(t, "<|tool_call>call:f{a:1,}<tool_call|>", 0, "call:f{a:1,}", "", "[]");        /* trailing comma */
    expect(t, "<|tool_call>call:f{a}<tool_call|>", 0, "call:f{a}", "", "[]");              /* no value */
    expect(t, "<|tool_call>call:f{a:[1 2]}<tool_call|>", 0, "", "",                       /* bare "1 2" is text, */
           "[{\"id\":\"call_0\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"a\\\":[\\\"1 2\\\"]}\"}}]");
    expect(t, "<|tool_call>call:f{a:x{}}<tool_call|>", 0, "call:f{a:x{}}", "", "[]");      /* but not before a { */
    expect(t, "<|tool_call>call:f[1]<tool_call|>", 0, "call:f[1]", "", "[]");              /* not an object */
    /* a new call opening inside one: the first is text, the second parses */
    expect(t, "<|tool_call>call:f{<|tool_call>call:g{}<tool_call|>", 0, "call:f{", "",
           "[{\"id\":\"call_0\",\"type\":\"function\",\"function\":{\"name\":\"g\",\"arguments\":\"{}\"}}]");
    /* deep nesting is refused, not recursed into */
    char deep[4200] = "<|tool_call>call:f{a:";
    for (int i = 0; i < 2000; i++) strcat(deep, "[");
    strcat(deep, "<tool_call|>");
    int n;
    int32_t *ids = ids_of(t, deep, &n);
    deltas d;
    dg_reply *r = split(t, ids, n, 0, 7, &d);
    CHECK(r && !strcmp(dg_reply_tool_calls_json(r), "[]") && strlen(dg_reply_content(r)) == 2000 + 9, "deep nesting");
    dg_reply_free(r);
    deltas_free(&d);
    free(ids);
    dg_tokenizer_free(t);
}

/* random id sequences, dense in markers: no crash, chunking never changes the result, and without an
 * opening marker the content is exactly decode(skip_special_tokens) */
static void test_reply_fuzz(void) {
    dg_tokenizer *t = small_tok();
    if (!t) return;
    /* the markers, <turn|>, <eos>, newline, and the punctuation of the call syntax */
    int32_t hot_ids[14] = {100, 101, 48, 49, 52, 106, 1, 107};
    const char *punct[] = {"{", "}", ":", ",", "[", "]"};
    for (int i = 0; i < 6; i++) hot_ids[8 + i] = dg_tokenizer_find(t, punct[i]) >= 0 ? dg_tokenizer_find(t, punct[i]) : 107;
    uint64_t x = 42;
    int plain_checked = 0, calls_found = 0;
    for (int trial = 0; trial < 400; trial++) {
        int n = (int)(x % 90);
        int32_t ids[96];
        int has_open = 0;
        for (int i = 0; i < n; i++) {
            x = x * 6364136223846793005ULL + 1442695040888963407ULL;
            uint32_t v = (uint32_t)(x >> 33);
            ids[i] = v % 3 ? (int32_t)(v % 2048) : hot_ids[(v >> 8) % 14];
            has_open |= ids[i] == 100 || ids[i] == 48;
        }
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        deltas d1, d2;
        dg_reply *a = split(t, ids, n, (int)(x >> 40) % 3, 0, &d1);
        dg_reply *b = split(t, ids, n, (int)(x >> 40) % 3, 1 + (int)((x >> 20) % 17), &d2);
        if (!a || !b) { dg_reply_free(a); dg_reply_free(b); break; }
        CHECK(!strcmp(dg_reply_content(a), dg_reply_content(b)) && !strcmp(dg_reply_reasoning(a), dg_reply_reasoning(b)) &&
              !strcmp(dg_reply_tool_calls_json(a), dg_reply_tool_calls_json(b)), "trial %d: chunking changed the split", trial);
        json_error_t je;
        json_t *calls = json_loads(dg_reply_tool_calls_json(a), 0, &je);
        CHECK(json_is_array(calls), "trial %d: tool calls are not a JSON array", trial);
        calls_found += (int)json_array_size(calls);
        json_decref(calls);
        if (!has_open && (int)(x >> 40) % 3 != 2) {
            char *want, err[256];
            size_t wl;
            if (dg_detokenize(t, ids, n, 1, &want, &wl, err, sizeof(err)) == 0) {
                CHECK(!strcmp(dg_reply_content(a), want), "trial %d: content differs from decode", trial);
                free(want);
                plain_checked++;
            }
        }
        deltas_free(&d1);
        deltas_free(&d2);
        dg_reply_free(a);
        dg_reply_free(b);
    }
    printf("  400 random sequences: %d compared with decode(skip_special), %d tool calls parsed\n", plain_checked, calls_found);
    /* bad input */
    char err[256];
    dg_reply *r = dg_reply_new(t, 0);
    int32_t bad[] = {5, 99999};
    CHECK(r && dg_reply_push(r, bad, 2, NULL, NULL, err, sizeof(err)) == -1 && strstr(err, "99999"), "id out of range: %s", err);
    CHECK(r && dg_reply_push(r, bad, -1, NULL, NULL, err, sizeof(err)) == -1, "negative count");
    CHECK(r && dg_reply_finish(r, NULL, NULL, err, sizeof(err)) == 0, "finish");
    CHECK(r && dg_reply_finish(r, NULL, NULL, err, sizeof(err)) == -1, "finish twice");
    CHECK(r && dg_reply_push(r, bad, 1, NULL, NULL, err, sizeof(err)) == -1, "push after finish");
    dg_reply_free(r);
    CHECK(dg_reply_new(NULL, 0) == NULL, "no tokenizer");
    CHECK(!strcmp(dg_reply_tool_calls_json(NULL), "[]") && !strcmp(dg_reply_content(NULL), ""), "NULL reply");
    dg_tokenizer_free(t);
}

/* ===== tool calls as the templates write them ===== */

/* render an assistant turn with one tool call through the template, cut out <|tool_call>...<tool_call|>,
 * split it: the arguments come back */
static void roundtrip(const dg_tokenizer *t, const dg_chat_template *tpl, const char *what, const char *args) {
    char msgs[2048], err[512];
    snprintf(msgs, sizeof(msgs),
             "[{\"role\":\"user\",\"content\":\"hi\"},{\"role\":\"assistant\",\"tool_calls\":[{\"id\":\"x\",\"type\":\"function\","
             "\"function\":{\"name\":\"lookup_v2\",\"arguments\":%s}}]}]", args);
    dg_chat_params p = {msgs, NULL, 0, -1, NULL};
    char *out = NULL;
    size_t len;
    int rc = dg_chat_render(tpl, &p, &out, &len, err, sizeof(err));
    CHECK(rc == 0, "%s: %s", what, err);
    if (rc) return;
    char *a = strstr(out, "<|tool_call>"), *b = a ? strstr(a, "<tool_call|>") : NULL;
    CHECK(a && b, "%s: no tool call in '%s'", what, out);
    if (a && b) {
        b[strlen("<tool_call|>")] = 0;
        int n;
        int32_t *ids = ids_of(t, a, &n);
        deltas d;
        dg_reply *r = split(t, ids, n, 0, 4, &d);
        json_error_t je;
        json_t *calls = r ? json_loads(dg_reply_tool_calls_json(r), 0, &je) : NULL;
        json_t *want = json_loads(args, 0, &je);
        json_t *got = json_loads(str_or_empty(json_string_value(json_object_get(json_object_get(json_array_get(calls, 0), "function"), "arguments"))), 0, &je);
        CHECK(json_array_size(calls) == 1 && got && json_equal(got, want), "%s: '%s' gave %s", what, a,
              r ? dg_reply_tool_calls_json(r) : "-");
        CHECK(r && !strcmp(dg_reply_content(r), ""), "%s: content '%s'", what, r ? dg_reply_content(r) : "");
        json_decref(calls);
        json_decref(want);
        json_decref(got);
        dg_reply_free(r);
        deltas_free(&d);
        free(ids);
    }
    free(out);
}

static void test_reply_template_calls(void) {
    dg_tokenizer *t = small_tok();
    if (!t) return;
    const char *args[] = {
        "{\"city\":\"Paris, FR\",\"days\":3,\"metric\":true,\"note\":null}",
        "{\"q\":\"a:b{c}[d],e\",\"weights\":[0.5,-1,2e-05],\"opts\":{\"deep\":{\"x\":[true,false,\"y\"]},\"empty\":{}}}",
        "{}",
    };
    char err[512];
    dg_chat_template *def = NULL;
    CHECK(dg_chat_template_default(&def, err, sizeof(err)) == 0, "%s", err);
    for (int i = 0; def && i < 3; i++) roundtrip(t, def, "built-in template", args[i]);
    dg_chat_template_free(def);
    char path[1024];
    if (shared_file("gemma4-31b-it.chat_template.jinja", path, sizeof(path))) {
        FILE *f = fopen(path, "rb");
        char *src = malloc(1 << 20);
        size_t n = f && src ? fread(src, 1, (1 << 20) - 1, f) : 0;
        if (f) fclose(f);
        dg_chat_template *g4 = NULL;
        CHECK(n > 0 && dg_chat_template_parse(src, n, "gemma4-31b-it.chat_template.jinja", &g4, err, sizeof(err)) == 0, "%s", err);
        for (int i = 0; g4 && i < 3; i++) roundtrip(t, g4, "Gemma 4 31B template", args[i]);
        dg_chat_template_free(g4);
        free(src);
    } else {
        printf("  skipped: ../shared/data/gemma4-31b-it.chat_template.jinja not found (the built-in template was checked)\n");
    }
    dg_tokenizer_free(t);
}

/* ===== Gemma 3 (../shared/data): a vocabulary without the markers ===== */

static void test_reply_gemma3(void) {
    dg_tokenizer *t = gemma3_tokenizer();
    if (!t) return;
    const char *text = "<start_of_turn>model\nSure! Here's a poem: «Grüße aus Köln» 🦙🦙 — 東京タワー, "
                       "<|channel>thought\n is plain text here, as is <|tool_call>call:f{}<tool_call|>.\n\n"
                       "def f(x):\n    return x ** 2  # ✓<end_of_turn><eos>";
    int n;
    int32_t *ids = ids_of(t, text, &n);
    char *want, err[256];
    size_t wl;
    CHECK(dg_detokenize(t, ids, n, 1, &want, &wl, err, sizeof(err)) == 0, "%s", err);
    for (int chunk = 0; chunk <= 16; chunk += 4) {
        deltas d;
        dg_reply *r = split(t, ids, n, 1, chunk, &d);
        CHECK(r && !strcmp(dg_reply_content(r), want), "chunk %d: content '%s'", chunk, r ? dg_reply_content(r) : "");
        CHECK(r && !*dg_reply_reasoning(r) && !strcmp(dg_reply_tool_calls_json(r), "[]"), "chunk %d: no thought, no call", chunk);
        dg_reply_free(r);
        deltas_free(&d);
    }
    printf("  gemma3: %d ids, content identical to decode(skip_special) in 5 chunkings\n", n);
    free(want);
    free(ids);
    dg_tokenizer_free(t);
}

const dg_test reply_tests[] = {
    {"reply_channels", test_reply_channels},
    {"reply_tool_calls", test_reply_tool_calls},
    {"reply_malformed_calls", test_reply_malformed_calls},
    {"reply_fuzz", test_reply_fuzz},
    {"reply_template_calls", test_reply_template_calls},
    {"reply_gemma3", test_reply_gemma3},
    {NULL, NULL},
};
