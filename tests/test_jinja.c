/*
 * test_jinja.c - the Jinja interpreter against jinja2: every snippet of
 * tests/fixtures/chat/snippets.json (rendered by transformers' chat-template environment, see
 * tools/reference/jinja_snippets.py) must give byte-identical output, or an error when jinja2 raised
 * one, at the same template line. Then what jinja2 would leave to Python: limits on loops, recursion,
 * output and memory end with an error; broken templates (every prefix of the snippets, byte flips)
 * never crash.
 */
#define _POSIX_C_SOURCE 200809L
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"
#include "tokenizer/jinja.h"

static json_t *load_fixture(const char *name) {
    char path[512];
    snprintf(path, sizeof(path), "%s/chat/%s", fixtures_dir(), name);
    json_error_t je;
    json_t *j = json_load_file(path, JSON_ALLOW_NUL, &je);
    if (!j) fprintf(stderr, "  cannot load %s: %s (line %d)\n", path, je.text, je.line);
    return j;
}

/* render src with vars (a JSON object or NULL); returns 0 and *out, or -1 and err */
static int render(const char *src, size_t n, const json_t *vars, const jinja_opts *o, char **out, size_t *len, char *err, size_t errlen) {
    jinja_tpl *t;
    *out = NULL;
    if (jinja_parse(src, n, "t", &t, err, errlen)) return -1;
    int rc = jinja_render(t, vars, o, out, len, err, errlen);
    jinja_free(t);
    return rc;
}

static jinja_opts test_opts(void) {
    jinja_opts o = jinja_default_opts();
    o.now = 1700000000;
    return o;
}

static void test_snippets(void) {
    json_t *fx = load_fixture("snippets.json");
    CHECK(fx != NULL, "snippets.json missing");
    if (!fx) return;
    json_t *list = json_object_get(fx, "snippets");
    size_t i, n_out = 0, n_err = 0, ok_out = 0, ok_err = 0;
    json_t *s;
    jinja_opts o = test_opts();
    json_array_foreach(list, i, s) {
        const char *name = json_string_value(json_object_get(s, "name"));
        json_t *tpl = json_object_get(s, "template");
        json_t *want = json_object_get(s, "out");
        char err[1024] = "", *out = NULL;
        size_t len = 0;
        int rc = render(json_string_value(tpl), json_string_length(tpl), json_object_get(s, "vars"), &o, &out, &len, err, sizeof(err));
        if (want) {
            n_out++;
            int same = rc == 0 && len == json_string_length(want) && memcmp(out, json_string_value(want), len) == 0;
            ok_out += same;
            CHECK(same, "snippet %s: want [%s] got [%s]%s", name, json_string_value(want), rc ? err : out, rc ? " (error)" : "");
        } else {
            n_err++;
            json_t *line = json_object_get(s, "line");
            char tag[32] = "";
            if (json_is_integer(line)) snprintf(tag, sizeof(tag), "t:%lld: ", (long long)json_integer_value(line));
            int same = rc != 0 && strncmp(err, tag, strlen(tag)) == 0;
            ok_err += same;
            CHECK(same, "snippet %s: want an error at [%s] (%s), got %s [%s]", name, tag, json_string_value(json_object_get(s, "error")),
                  rc ? "error" : "output", rc ? err : out);
        }
        free(out);
    }
    printf("  snippets: %zu/%zu outputs byte-identical to jinja2, %zu/%zu errors at jinja2's line\n", ok_out, n_out, ok_err, n_err);
    json_decref(fx);
}

/* an error containing `want`, never a crash */
static void expect_error(const char *src, const jinja_opts *o, const char *want) {
    char err[1024] = "", *out = NULL;
    size_t len;
    int rc = render(src, strlen(src), NULL, o, &out, &len, err, sizeof(err));
    CHECK(rc != 0 && strstr(err, want), "template [%.60s]: want an error with [%s], got %s [%s]", src, want, rc ? "error" : "output", rc ? err : "");
    if (rc) printf("  [%.50s] -> %s\n", src, err);
    free(out);
}

static void test_limits(void) {
    jinja_opts o = test_opts();
    o.max_steps = 300000;
    expect_error("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", &o, "ran too long");
    expect_error("{% set ns = namespace(n=0) %}{% for i in range(100000) %}{% for j in range(100000) %}{% set ns.n = ns.n + 1 %}{% endfor %}{% endfor %}", &o, "ran too long");
    expect_error("{% macro r(n) %}{{ r(n + 1) }}{% endmacro %}{{ r(0) }}", &o, "recursion");
    o.max_output = 1 << 20;
    expect_error("{% for i in range(100000) %}{{ 'x' * 100 }}{% endfor %}", &o, "output is too large");
    expect_error("{{ 'x' * 100000000000 }}", &o, "output is too large");
    expect_error("{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}", &o, "too large");
    o.max_memory = 8 << 20;
    o.max_steps = 1000000000;
    expect_error("{% set ns = namespace(l=[1]) %}{% for i in range(64) %}{% set ns.l = ns.l + ns.l %}{% endfor %}", &o, "memory");
    expect_error("{{ [0] * 100000000000 }}", &o, "memory");
    expect_error("{% for x in [1] recursive %}{{ loop([x]) }}{% endfor %}", &o, "recursion");
    /* deep nesting in the source is refused while parsing (no stack overflow) */
    size_t n = 20000;
    char *deep = malloc(2 * n + 16);
    memcpy(deep, "{{ ", 3);
    memset(deep + 3, '(', n);
    deep[3 + n] = '1';
    memset(deep + 4 + n, ')', n);
    strcpy(deep + 4 + 2 * n, " }}");
    expect_error(deep, &o, "nested too deeply");
    free(deep);
    /* a long chain (a left-deep tree) too */
    char *chain = malloc(2 * n + 16);
    memcpy(chain, "{{ 1", 4);
    for (size_t i = 0; i < n; i++) memcpy(chain + 4 + 2 * i, "+1", 2);
    strcpy(chain + 4 + 2 * n, " }}");
    expect_error(chain, &o, "nested too deeply");
    free(chain);
    /* nested blocks */
    char *blocks = malloc(2000 * 12 + 1);
    size_t k = 0;
    for (size_t i = 0; i < 2000; i++) k += (size_t)sprintf(blocks + k, "{%% if 1 %%}");
    expect_error(blocks, &o, "nested too deeply");
    free(blocks);
    /* a self-referencing namespace prints without recursing forever */
    expect_error("{% set ns = namespace() %}{% set ns.me = ns %}{{ ns }}", &o, "recursion");
    expect_error("{% set ns = namespace() %}{% set ns.me = ns %}{{ ns | tojson }}", &o, "");
}

static void test_bad_templates(void) {
    jinja_opts o = test_opts();
    char err[512];
    /* invalid UTF-8 is refused with its line */
    jinja_tpl *t;
    CHECK(jinja_parse("a\nb\xff", 5, "bad.jinja", &t, err, sizeof(err)) != 0 && strstr(err, "bad.jinja:2:"), "invalid UTF-8: %s", err);
    /* every prefix and some byte flips of every snippet: an error or an output, never a crash */
    json_t *fx = load_fixture("snippets.json");
    if (!fx) return;
    json_t *list = json_object_get(fx, "snippets");
    size_t i, tried = 0, errors = 0;
    json_t *s;
    o.max_steps = 100000;
    uint32_t rng = 12345;
    json_array_foreach(list, i, s) {
        json_t *tpl = json_object_get(s, "template");
        const char *src = json_string_value(tpl);
        size_t n = json_string_length(tpl);
        char *buf = malloc(n + 1);
        for (size_t cut = 0; cut <= n; cut++) {
            memcpy(buf, src, cut);
            char *out = NULL;
            size_t len;
            errors += render(buf, cut, json_object_get(s, "vars"), &o, &out, &len, err, sizeof(err)) != 0;
            free(out);
            tried++;
        }
        for (int f = 0; f < 8 && n; f++) {
            memcpy(buf, src, n);
            rng = rng * 1103515245u + 12345u;
            size_t pos = (rng >> 8) % n;
            static const char pool[] = "{}%#()[]|.-+'\"~,:=!ab 01\n";
            buf[pos] = pool[(rng >> 20) % (sizeof(pool) - 1)];
            char *out = NULL;
            size_t len;
            errors += render(buf, n, json_object_get(s, "vars"), &o, &out, &len, err, sizeof(err)) != 0;
            free(out);
            tried++;
        }
        free(buf);
    }
    printf("  %zu truncated / mutated templates rendered without a crash (%zu gave an error)\n", tried, errors);
    json_decref(fx);
}

static void test_vars(void) {
    jinja_opts o = test_opts();
    char err[512], *out = NULL;
    size_t len;
    /* variables keep their JSON types and key order */
    json_t *v = json_loads("{\"d\": {\"z\": 1, \"a\": [true, null, 1.0, \"s\"]}, \"n\": 9007199254740993}", 0, NULL);
    const char *src = "{{ d }} {{ n }} {{ d.a[2] is float }}";
    int rc = render(src, strlen(src), v, &o, &out, &len, err, sizeof(err));
    CHECK(rc == 0 && !strcmp(out, "{'z': 1, 'a': [True, None, 1.0, 's']} 9007199254740993 True"), "vars: %s", rc ? err : out);
    free(out);
    json_decref(v);
    /* vars must be an object */
    json_t *arr = json_array();
    rc = render("x", 1, arr, &o, &out, &len, err, sizeof(err));
    CHECK(rc != 0 && strstr(err, "JSON object"), "array vars: %s", rc ? err : out);
    free(out);
    json_decref(arr);
    /* strftime_now uses the given clock (local time) */
    src = "{{ strftime_now('%Y') }}";
    rc = render(src, strlen(src), NULL, &o, &out, &len, err, sizeof(err));
    CHECK(rc == 0 && (strcmp(out, "2023") == 0), "strftime_now: %s", rc ? err : out);
    free(out);
    /* a template can be rendered many times; NUL bytes in strings survive */
    jinja_tpl *t;
    src = "{{ s | length }}{{ s }}";
    CHECK(jinja_parse(src, strlen(src), "t", &t, err, sizeof(err)) == 0, "%s", err);
    json_t *sv = json_loads("{\"s\": \"a\\u0000b\"}", JSON_ALLOW_NUL, NULL);
    for (int k = 0; k < 3; k++) {
        rc = jinja_render(t, sv, &o, &out, &len, err, sizeof(err));
        CHECK(rc == 0 && len == 4 && !memcmp(out, "3a\0b", 4), "NUL: %d %zu", rc, len);
        free(out);
    }
    json_decref(sv);
    jinja_free(t);
}

const dg_test jinja_tests[] = {
    {"jinja_snippets_vs_jinja2", test_snippets},
    {"jinja_limits", test_limits},
    {"jinja_bad_templates_no_crash", test_bad_templates},
    {"jinja_variables", test_vars},
    {NULL, NULL},
};
