/*
 * test_chat.c - chat templates through the public API (dg_chat_*), against transformers'
 * apply_chat_template on the conversation corpus of tests/fixtures/chat/conversations.json:
 *   builtin  dgemma's own template (always)
 *   gemma4   Google's Gemma 4 template, read from ../shared/data (or $DG_SHARED_DATA); skipped if absent
 *   gemma3   the Gemma 3 tokenizer_config.json's template, loaded with dg_chat_template_load from a
 *            directory holding that file (decompressed with xz); skipped if absent
 * Every render must be byte-identical, or fail where transformers failed (same line). Then the
 * built-in template is held to Google's output on the same corpus: identical except the generation
 * prompt's empty thought channel (spec-sampler §8) and three known cases where Google's template
 * itself misbehaves. Loader cases (chat_template.jinja, tokenizer_config.json string / list forms,
 * AddedToken-style special tokens) and bad input follow.
 */
#define _POSIX_C_SOURCE 200809L
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dgemma.h"
#include "test.h"

static const char *shared_data(void) {
    const char *d = getenv("DG_SHARED_DATA");
    return d && *d ? d : "../shared/data";
}

static char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)sz + 1);
    *n = fread(b, 1, (size_t)sz, f);
    b[*n] = 0;
    fclose(f);
    return b;
}

static void spit(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (!f) { perror(path); return; }
    fputs(text, f);
    fclose(f);
}

static char g_tmp[256];

static void rm_tmp(void) {
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", g_tmp);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_tmp);
}

static const char *tmpdir(void) {
    if (!g_tmp[0]) {
        snprintf(g_tmp, sizeof(g_tmp), "/tmp/dgemma-chat-XXXXXX");
        if (!mkdtemp(g_tmp)) { perror("mkdtemp"); exit(1); }
        atexit(rm_tmp);
    }
    return g_tmp;
}

/* a fresh empty subdirectory of the test's temporary directory */
static const char *case_dir(const char *name) {
    static char path[512];
    snprintf(path, sizeof(path), "%s/%s", tmpdir(), name);
    mkdir(path, 0700);
    return path;
}

/* render one corpus case; *out NULL on error (message in err) */
static int render_case(const dg_chat_template *t, json_t *c, int agp_override, char **out, char *err, size_t errlen) {
    char *msgs = json_dumps(json_object_get(c, "messages"), JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_t *tools = json_object_get(c, "tools"), *extra = json_object_get(c, "extra"), *th = json_object_get(c, "enable_thinking");
    char *tj = json_is_null(tools) ? NULL : json_dumps(tools, JSON_COMPACT | JSON_PRESERVE_ORDER);
    char *ej = json_is_null(extra) ? NULL : json_dumps(extra, JSON_COMPACT | JSON_PRESERVE_ORDER);
    dg_chat_params p = {0};
    p.messages_json = msgs;
    p.tools_json = tj;
    p.extra_json = ej;
    p.add_generation_prompt = agp_override >= 0 ? agp_override : json_is_true(json_object_get(c, "add_generation_prompt"));
    p.enable_thinking = json_is_null(th) ? -1 : json_is_true(th);
    size_t len;
    int rc = dg_chat_render(t, &p, out, &len, err, errlen);
    free(msgs);
    free(tj);
    free(ej);
    return rc;
}

/* compare every case with the fixture's rendering under key */
static void check_corpus(json_t *cases, const dg_chat_template *t, const char *key, const char *tname) {
    size_t i, n = 0, same_out = 0, same_err = 0, n_err = 0;
    json_t *c;
    json_array_foreach(cases, i, c) {
        json_t *want = json_object_get(c, key);
        const char *name = json_string_value(json_object_get(c, "name"));
        json_t *wo = json_object_get(want, "out");
        char err[1024] = "", *out = NULL;
        int rc = render_case(t, c, -1, &out, err, sizeof(err));
        n++;
        if (wo) {
            int ok = rc == 0 && !strcmp(out, json_string_value(wo));
            same_out += ok;
            CHECK(ok, "%s / %s: want\n[%s]\ngot %s\n[%s]", key, name, json_string_value(wo), rc ? "error" : "", rc ? err : out);
        } else {
            n_err++;
            json_t *line = json_object_get(want, "line");
            char tag[64] = "";
            if (json_is_integer(line)) snprintf(tag, sizeof(tag), ":%lld: ", (long long)json_integer_value(line));
            int ok = rc != 0 && strstr(err, tag) != NULL;
            same_err += ok;
            CHECK(ok, "%s / %s: want an error at [%s] (%s), got %s", key, name, tag, json_string_value(json_object_get(want, "error")), rc ? err : "output");
        }
        free(out);
    }
    printf("  %s (%s): %zu/%zu renders byte-identical to apply_chat_template, %zu/%zu errors where it raised\n", key, tname,
           same_out, n - n_err, same_err, n_err);
}

static json_t *load_corpus(void) {
    char path[512];
    snprintf(path, sizeof(path), "%s/chat/conversations.json", fixtures_dir());
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    CHECK(j != NULL, "cannot load %s: %s", path, je.text);
    return j;
}

static dg_chat_template *gemma4_template(void) {
    char path[512], err[512];
    snprintf(path, sizeof(path), "%s/gemma4-31b-it.chat_template.jinja", shared_data());
    size_t n;
    char *src = slurp(path, &n);
    if (!src) return NULL;
    dg_chat_template *t = NULL;
    CHECK(dg_chat_template_parse(src, n, "gemma4-31b-it.chat_template.jinja", &t, err, sizeof(err)) == 0, "%s", err);
    free(src);
    return t;
}

static void test_builtin(void) {
    json_t *fx = load_corpus();
    if (!fx) return;
    char err[512];
    dg_chat_template *t = NULL;
    CHECK(dg_chat_template_default(&t, err, sizeof(err)) == 0, "%s", err);
    if (t) check_corpus(json_object_get(fx, "cases"), t, "builtin", "src/tokenizer/chat_default.jinja");
    dg_chat_template_free(t);
    json_decref(fx);
}

static void test_gemma4(void) {
    dg_chat_template *t = gemma4_template();
    if (!t) {
        printf("  skipped: %s/gemma4-31b-it.chat_template.jinja not found (set DG_SHARED_DATA)\n", shared_data());
        return;
    }
    json_t *fx = load_corpus();
    if (fx) check_corpus(json_object_get(fx, "cases"), t, "gemma4", "Google's Gemma 4 template");
    json_decref(fx);
    dg_chat_template_free(t);
}

static void test_gemma3(void) {
    char path[512], cmd[1200], err[512];
    snprintf(path, sizeof(path), "%s/gemma3-tokenizer_config.json.xz", shared_data());
    struct stat st;
    if (stat(path, &st) != 0) {
        printf("  skipped: %s not found (set DG_SHARED_DATA)\n", path);
        return;
    }
    const char *dir = case_dir("gemma3");
    snprintf(cmd, sizeof(cmd), "xz -dc '%s' > '%s/tokenizer_config.json'", path, dir);
    if (system(cmd) != 0) {
        printf("  skipped: xz could not decompress %s\n", path);
        return;
    }
    dg_chat_template *t = NULL;
    CHECK(dg_chat_template_load(dir, &t, err, sizeof(err)) == 0, "%s", err);
    json_t *fx = load_corpus();
    if (t && fx) check_corpus(json_object_get(fx, "cases"), t, "gemma3", "Gemma 3 tokenizer_config.json");
    json_decref(fx);
    dg_chat_template_free(t);
}

/* The built-in template against Google's, both rendered here: with add_generation_prompt off they
 * must agree byte for byte; with it on, the built-in's output must be Google's without the prompt
 * plus (when Google adds one) "<|turn>model\n" and, with thinking off, the empty closed thought
 * channel "<|channel>thought\n<channel|>" (spec-sampler §8; the shared Google copy instead opens
 * "<|channel>thought\n" when thinking is on). */
static void test_builtin_vs_google(void) {
    dg_chat_template *g = gemma4_template();
    if (!g) {
        printf("  skipped: %s/gemma4-31b-it.chat_template.jinja not found (set DG_SHARED_DATA)\n", shared_data());
        return;
    }
    static const char *const known[] = {
        "system_parts",          /* Google prints a list-valued system content as a Python repr */
        "tool_response_dict",    /* Google fails on a tool message whose content is a dict */
        "tool_response_unnamed", /* Google fails on a tool message with neither name nor matching id */
        NULL,
    };
    char err[512];
    dg_chat_template *b = NULL;
    CHECK(dg_chat_template_default(&b, err, sizeof(err)) == 0, "%s", err);
    json_t *fx = load_corpus();
    size_t i, n = 0, same = 0, differ = 0;
    json_t *c;
    if (b && fx) json_array_foreach(json_object_get(fx, "cases"), i, c) {
        const char *name = json_string_value(json_object_get(c, "name"));
        int is_known = 0;
        for (int k = 0; known[k]; k++) is_known |= !strcmp(known[k], name);
        int agp = json_is_true(json_object_get(c, "add_generation_prompt"));
        int thinking = json_is_true(json_object_get(c, "enable_thinking"));
        char *gb = NULL, *ga = NULL, *bo = NULL, e1[512], e2[512], e3[512];
        int r1 = render_case(g, c, 0, &gb, e1, sizeof(e1));
        int r2 = render_case(g, c, agp, &ga, e2, sizeof(e2));
        int r3 = render_case(b, c, -1, &bo, e3, sizeof(e3));
        n++;
        int ok = 0;
        if (!r1 && !r2 && !r3) {
            char want[1 << 16];
            const char *tail = "";
            if (strcmp(ga, gb)) tail = thinking ? "<|turn>model\n" : "<|turn>model\n<|channel>thought\n<channel|>";
            snprintf(want, sizeof(want), "%s%s", gb, tail);
            ok = !strcmp(want, bo);
        }
        if (ok) same++;
        else {
            differ++;
            printf("  differs from Google's template: %s%s\n", name, is_known ? " (known)" : "");
        }
        CHECK(ok || is_known, "built-in vs Google on %s:\nGoogle %s\n[%s]\nbuilt-in %s\n[%s]", name, r2 ? "error" : "", r2 ? e2 : ga,
              r3 ? "error" : "", r3 ? e3 : bo);
        CHECK(!ok || !is_known, "%s was expected to differ from Google's template", name);
        free(gb);
        free(ga);
        free(bo);
    }
    printf("  built-in vs Google's Gemma 4 template: %zu/%zu cases identical (generation prompt per spec), %zu differ\n", same, n, differ);
    json_decref(fx);
    dg_chat_template_free(b);
    dg_chat_template_free(g);
}

static char *render_simple(const dg_chat_template *t, const char *messages, int agp, int thinking, char *err, size_t errlen) {
    dg_chat_params p = {0};
    p.messages_json = messages;
    p.add_generation_prompt = agp;
    p.enable_thinking = thinking;
    char *out = NULL;
    size_t len;
    if (dg_chat_render(t, &p, &out, &len, err, errlen)) return NULL;
    return out;
}

static void test_loader(void) {
    char err[512], path[600];
    dg_chat_template *t = NULL;
    const char *msg = "[{\"role\":\"user\",\"content\":\"hi\"}]";
    /* chat_template.jinja wins; special tokens from tokenizer_config.json (string or AddedToken) */
    const char *d = case_dir("jinja_file");
    snprintf(path, sizeof(path), "%s/chat_template.jinja", d);
    spit(path, "{{ bos_token }}|{{ eos_token }}|{{ pad_token }}|{{ boi_token }}|{{ messages[0].content }}\n");
    snprintf(path, sizeof(path), "%s/tokenizer_config.json", d);
    spit(path, "{\"bos_token\": {\"content\": \"<s>\", \"lstrip\": false}, \"eos_token\": \"</s>\", \"pad_token\": null, "
               "\"extra_special_tokens\": {\"boi_token\": \"<img>\"}, \"chat_template\": \"ignored\"}");
    CHECK(dg_chat_template_load(d, &t, err, sizeof(err)) == 0, "%s", err);
    char *out = t ? render_simple(t, msg, 0, -1, err, sizeof(err)) : NULL;
    CHECK(out && !strcmp(out, "<s>|</s>||<img>|hi"), "chat_template.jinja: %s", out ? out : err);
    free(out);
    dg_chat_template_free(t);
    /* tokenizer_config.json "chat_template" as a string, defaults <bos> / <eos> */
    d = case_dir("config_string");
    snprintf(path, sizeof(path), "%s/tokenizer_config.json", d);
    spit(path, "{\"chat_template\": \"{{ bos_token }}{% for m in messages %}[{{ m.role }}]{% endfor %}{{ eos_token }}\"}");
    CHECK(dg_chat_template_load(d, &t, err, sizeof(err)) == 0, "%s", err);
    out = t ? render_simple(t, msg, 0, -1, err, sizeof(err)) : NULL;
    CHECK(out && !strcmp(out, "<bos>[user]<eos>"), "config string: %s", out ? out : err);
    free(out);
    dg_chat_template_free(t);
    /* the list form: "default", and "tool_use" when tools are given */
    d = case_dir("config_list");
    snprintf(path, sizeof(path), "%s/tokenizer_config.json", d);
    spit(path, "{\"chat_template\": [{\"name\": \"tool_use\", \"template\": \"T{{ tools | length }}\"}, {\"name\": \"default\", \"template\": \"D\"}]}");
    CHECK(dg_chat_template_load(d, &t, err, sizeof(err)) == 0, "%s", err);
    if (t) {
        out = render_simple(t, msg, 0, -1, err, sizeof(err));
        CHECK(out && !strcmp(out, "D"), "list default: %s", out ? out : err);
        free(out);
        dg_chat_params p = {0};
        p.messages_json = msg;
        p.tools_json = "[{\"type\": \"function\", \"function\": {\"name\": \"f\"}}]";
        size_t len;
        CHECK(dg_chat_render(t, &p, &out, &len, err, sizeof(err)) == 0 && !strcmp(out, "T1"), "list tool_use: %s", err);
        free(out);
    }
    dg_chat_template_free(t);
    /* nothing: the built-in template */
    d = case_dir("empty");
    CHECK(dg_chat_template_load(d, &t, err, sizeof(err)) == 0, "%s", err);
    out = t ? render_simple(t, msg, 1, 0, err, sizeof(err)) : NULL;
    CHECK(out && !strcmp(out, "<bos><|turn>user\nhi<turn|>\n<|turn>model\n<|channel>thought\n<channel|>"), "built-in: %s", out ? out : err);
    free(out);
    dg_chat_template_free(t);
    /* thinking on: <|think|> in a system turn, the prompt stops at <|turn>model\n */
    CHECK(dg_chat_template_default(&t, err, sizeof(err)) == 0, "%s", err);
    out = t ? render_simple(t, msg, 1, 1, err, sizeof(err)) : NULL;
    CHECK(out && !strcmp(out, "<bos><|turn>system\n<|think|>\n<turn|>\n<|turn>user\nhi<turn|>\n<|turn>model\n"), "built-in thinking: %s", out ? out : err);
    free(out);
    dg_chat_template_free(t);
}

static void expect_load_error(const char *dirname, const char *file, const char *text, const char *want) {
    char err[512] = "", path[600];
    const char *d = case_dir(dirname);
    snprintf(path, sizeof(path), "%s/%s", d, file);
    spit(path, text);
    dg_chat_template *t = NULL;
    int rc = dg_chat_template_load(d, &t, err, sizeof(err));
    CHECK(rc != 0 && strstr(err, want), "%s: want an error with [%s], got [%s]", dirname, want, err);
    if (rc) printf("  %s -> %s\n", dirname, err);
    dg_chat_template_free(t);
}

static void expect_render_error(const dg_chat_template *t, const char *msgs, const char *tools, const char *extra, const char *want) {
    dg_chat_params p = {0};
    p.messages_json = msgs;
    p.tools_json = tools;
    p.extra_json = extra;
    p.enable_thinking = -1;
    char err[512] = "", *out = NULL;
    size_t len;
    int rc = dg_chat_render(t, &p, &out, &len, err, sizeof(err));
    CHECK(rc != 0 && strstr(err, want), "render: want an error with [%s], got [%s]", want, rc ? err : out);
    if (rc) printf("  render error -> %s\n", err);
    free(out);
}

static void test_bad_input(void) {
    expect_load_error("bad_config_json", "tokenizer_config.json", "{\"chat_template\": ", "tokenizer_config.json:");
    expect_load_error("bad_config_type", "tokenizer_config.json", "{\"chat_template\": 5}", "must be a string or a list");
    expect_load_error("bad_config_list", "tokenizer_config.json", "{\"chat_template\": [{\"name\": \"x\", \"template\": \"y\"}]}", "none named \"default\"");
    expect_load_error("bad_bos", "tokenizer_config.json", "{\"bos_token\": 3}", "bos_token");
    expect_load_error("bad_syntax", "chat_template.jinja", "line one\n{% if x %}\nunclosed", "chat_template.jinja:3:");
    expect_load_error("bad_syntax_config", "tokenizer_config.json", "{\"chat_template\": \"a\\n{{ x + }}\"}", "tokenizer_config.json:chat_template:2:");
    char err[512];
    dg_chat_template *t = NULL;
    CHECK(dg_chat_template_default(&t, err, sizeof(err)) == 0, "%s", err);
    if (!t) return;
    expect_render_error(t, "[{\"role\": \"user\", \"content\": \"x\"}", NULL, NULL, "invalid JSON");
    expect_render_error(t, "{\"role\": \"user\"}", NULL, NULL, "JSON array");
    expect_render_error(t, "[]", NULL, NULL, "empty conversation");
    expect_render_error(t, "[\"hello\"]", NULL, NULL, "message 0 must be an object");
    expect_render_error(t, "[{\"role\": \"user\", \"content\": \"x\"}]", "{}", NULL, "chat tools");
    expect_render_error(t, "[{\"role\": \"user\", \"content\": \"x\"}]", NULL, "[1]", "JSON object");
    /* a template error names the template and line */
    dg_chat_template_free(t);
    const char *src = "{% for m in messages %}\n{{ raise_exception('bad role: ' ~ m.role) }}\n{% endfor %}";
    CHECK(dg_chat_template_parse(src, strlen(src), "my.jinja", &t, err, sizeof(err)) == 0, "%s", err);
    if (t) expect_render_error(t, "[{\"role\": \"robot\", \"content\": \"x\"}]", NULL, NULL, "my.jinja:2: bad role: robot");
    dg_chat_template_free(t);
}

/* apply_chat_template's message preparation: null keys dropped, reasoning aliased */
static void test_prepare(void) {
    char err[512];
    dg_chat_template *t = NULL;
    const char *src = "{% for m in messages %}{{ m | tojson }}{% endfor %}";
    CHECK(dg_chat_template_parse(src, strlen(src), "t", &t, err, sizeof(err)) == 0, "%s", err);
    if (!t) return;
    char *out = render_simple(t, "[{\"role\": \"assistant\", \"content\": null, \"reasoning\": \"r\", \"tool_calls\": null}]", 0, -1, err, sizeof(err));
    CHECK(out && !strcmp(out, "{\"thinking\": \"r\", \"role\": \"assistant\", \"reasoning\": \"r\", \"reasoning_content\": \"r\"}"), "prepare: %s", out ? out : err);
    free(out);
    out = render_simple(t, "[{\"role\": \"assistant\", \"reasoning_content\": \"A\", \"thinking\": \"B\"}]", 0, -1, err, sizeof(err));
    CHECK(out && !strcmp(out, "{\"thinking\": \"B\", \"role\": \"assistant\", \"reasoning_content\": \"A\"}"), "prepare 2: %s", out ? out : err);
    free(out);
    dg_chat_template_free(t);
}

/* one parsed template rendered from several threads at once gives the same text everywhere */
typedef struct {
    const dg_chat_template *t;
    json_t *cases;
    int bad;
} thread_job;

static void *render_all(void *arg) {
    thread_job *j = arg;
    for (int rep = 0; rep < 3; rep++) {
        size_t i;
        json_t *c;
        json_array_foreach(j->cases, i, c) {
            char err[512], *out = NULL;
            int rc = render_case(j->t, c, -1, &out, err, sizeof(err));
            json_t *want = json_object_get(json_object_get(c, "builtin"), "out");
            if (rc || !want || strcmp(out, json_string_value(want))) j->bad++;
            free(out);
        }
    }
    return NULL;
}

static void test_threads(void) {
    json_t *fx = load_corpus();
    char err[512];
    dg_chat_template *t = NULL;
    CHECK(dg_chat_template_default(&t, err, sizeof(err)) == 0, "%s", err);
    if (!fx || !t) {
        json_decref(fx);
        dg_chat_template_free(t);
        return;
    }
    enum { NT = 4 };
    pthread_t th[NT];
    thread_job jobs[NT];
    int started = 0;
    for (int k = 0; k < NT; k++) {
        jobs[k] = (thread_job){t, json_object_get(fx, "cases"), 0};
        if (pthread_create(&th[k], NULL, render_all, &jobs[k]) == 0) started++;
        else break;
    }
    int bad = 0;
    for (int k = 0; k < started; k++) {
        pthread_join(th[k], NULL);
        bad += jobs[k].bad;
    }
    CHECK(started == NT && bad == 0, "%d threads started, %d renders differed", started, bad);
    printf("  %d threads x 3 x %zu renders of one template: %d differed\n", started, json_array_size(json_object_get(fx, "cases")), bad);
    dg_chat_template_free(t);
    json_decref(fx);
}

/* a GGUF model's template comes from tokenizer.chat_template, its bos from tokenizer.ggml.bos_token_id */
static void test_gguf_template(void) {
    char path[512], err[512];
    snprintf(path, sizeof(path), "%s/gguf/tiny-a-bf16.gguf", fixtures_dir());
    dg_chat_template *t;
    if (dg_chat_template_load(path, &t, err, sizeof(err))) { CHECK(0, "%s", err); return; }
    dg_chat_params p = {"[{\"role\": \"user\", \"content\": \"hi\"}]", NULL, 1, 0, NULL};
    char *out = NULL;
    size_t n = 0;
    CHECK(dg_chat_render(t, &p, &out, &n, err, sizeof(err)) == 0, "%s", err);
    /* the fixture file carries its own placeholder template (make_gguf_fixtures.py), not the built-in */
    CHECK(out && !strncmp(out, "<bos><|turn>user\nhi<turn|>\n<|turn>model\n", 40) && !strstr(out, "<|channel>"), "rendered: %s", out ? out : "");
    free(out);
    dg_chat_template_free(t);
}

const dg_test chat_tests[] = {
    {"chat_gguf_template", test_gguf_template},
    {"chat_builtin_vs_transformers", test_builtin},
    {"chat_gemma4_vs_transformers", test_gemma4},
    {"chat_gemma3_vs_transformers", test_gemma3},
    {"chat_builtin_vs_google_template", test_builtin_vs_google},
    {"chat_template_loader", test_loader},
    {"chat_bad_input", test_bad_input},
    {"chat_message_preparation", test_prepare},
    {"chat_concurrent_renders", test_threads},
    {NULL, NULL},
};
