/*
 * test_server.c - the server's logic without a socket (server/openai.c, server/generate.c): request
 * bodies into parameters and prompts, the error statuses and params, the chat template path, context
 * limits, stop strings, UTF-8 safety, and whole requests run on the tiny fixture model into a sink
 * (streamed chunks against the non-streamed response, drafts, cancellation, stop strings).
 * The HTTP side is tested by tests/test_server.sh.
 */
#include <stdlib.h>
#include <string.h>

#include "server/openai.h"
#include "test.h"

static dg_engine *g_engine;
static dg_tokenizer *g_tok;
static dg_chat_template *g_tpl;
static dg_session *g_session;

static const char *model_dir(void) {
    static char p[512];
    snprintf(p, sizeof(p), "%s/tiny-a/bf16", fixtures_dir());
    return p;
}

/* the fixture model, its tokenizer and template, loaded once (freed at exit) */
static void unload(void) {
    dg_session_free(g_session);
    dg_chat_template_free(g_tpl);
    dg_tokenizer_free(g_tok);
    dg_engine_free(g_engine);
}

static int load(void) {
    if (g_engine) return 0;
    char err[1024];
    dg_session_params sp = dg_session_default_params();
    sp.n_ctx = 1024;
    sp.n_threads = 1;
    if (dg_engine_load(model_dir(), NULL, &g_engine, err, sizeof(err)) || dg_tokenizer_load(model_dir(), &g_tok, err, sizeof(err)) ||
        dg_chat_template_load(model_dir(), &g_tpl, err, sizeof(err)) || dg_session_create(g_engine, &sp, &g_session, err, sizeof(err))) {
        CHECK(0, "loading %s: %s", model_dir(), err);
        return -1;
    }
    atexit(unload);
    return 0;
}

static const oa_limits LIM = {1000, 2048};
static oa_generate_fn g_generate;   /* NULL: the model; else a scripted reply */

static int parse(oa_kind kind, const char *body, oa_request *rq, oa_error *er) {
    memset(er, 0, sizeof(*er));
    return oa_parse(kind, body, strlen(body), g_engine, &LIM, rq, er);
}

/* ===== parsing ===== */

static void test_parse_chat(void) {
    if (load()) return;
    oa_request rq;
    oa_error er;
    const char *body =
        "{\"model\":\"x\",\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Hi\"}]},"
        "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"c1\",\"type\":\"function\","
        "\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"a\\\": 1}\"}}]},"
        "{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"2\"}],"
        "\"max_completion_tokens\":40,\"max_tokens\":7,\"seed\":-1,\"stream\":true,"
        "\"stream_options\":{\"include_usage\":true,\"include_drafts\":true},\"stop\":[\"END\",\"\",\"x\"],"
        "\"max_denoising_steps\":12,\"entropy_bound\":0.5,\"t_min\":0.1,\"t_max\":0.9,\"stability_threshold\":2,"
        "\"confidence_threshold\":0.01,\"chat_template_kwargs\":{\"enable_thinking\":true,\"foo\":3},"
        "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":{}}}],\"temperature\":0.2}";
    int rc = parse(OA_CHAT, body, &rq, &er);
    CHECK(rc == 0, "%d %s", er.status, er.message);
    if (rc) return;
    CHECK(rq.max_tokens == 40, "max_completion_tokens wins: %d", rq.max_tokens);
    CHECK(rq.has_seed && rq.seed == UINT64_MAX, "seed -1 -> %llu", (unsigned long long)rq.seed);
    CHECK(rq.stream && rq.include_usage && rq.include_drafts, "stream flags");
    CHECK(rq.n_stops == 2 && !strcmp(rq.stops[0], "END") && !strcmp(rq.stops[1], "x"), "stops (empty dropped): %d", rq.n_stops);
    CHECK(rq.gen.max_denoising_steps == 12 && rq.gen.entropy_bound == 0.5 && rq.gen.t_min == 0.1 && rq.gen.t_max == 0.9 &&
          rq.gen.stability_threshold == 2 && rq.gen.confidence_threshold == 0.01, "diffusion settings");
    CHECK(rq.enable_thinking == 1, "enable_thinking from chat_template_kwargs");
    CHECK(rq.extra_json && !strcmp(rq.extra_json, "{\"foo\":3}"), "extra template variables: %s", rq.extra_json ? rq.extra_json : "NULL");
    CHECK(rq.tools_json && strstr(rq.tools_json, "\"name\":\"f\""), "tools");
    /* the assistant's JSON-string arguments became an object for the template */
    CHECK(rq.messages_json && strstr(rq.messages_json, "\"arguments\":{\"a\":1}"), "arguments: %s", rq.messages_json);
    CHECK(rq.n_prompts == 1 && rq.gen.n_eos == 3, "one prompt; the checkpoint's EOS ids");
    oa_request_free(&rq);

    /* defaults: nothing given */
    rc = parse(OA_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],\"enable_thinking\":false,\"tool_choice\":\"none\","
                        "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}]}", &rq, &er);
    CHECK(rc == 0, "%s", er.message);
    if (rc) return;
    dg_gen_params d = dg_gen_default_params(g_engine);
    CHECK(rq.max_tokens == 0 && !rq.has_seed && !rq.stream && !rq.n_stops && rq.enable_thinking == 0 && !rq.tools_json,
          "defaults (tool_choice none drops the tools)");
    CHECK(rq.gen.max_denoising_steps == d.max_denoising_steps && rq.gen.t_max == d.t_max, "checkpoint defaults");
    oa_request_free(&rq);
    CHECK(parse(OA_COMPLETION, "{\"prompt\":\"x\",\"ignore_eos\":true}", &rq, &er) == 0 && rq.gen.n_eos == 0, "ignore_eos");
    oa_request_free(&rq);
}

static void test_parse_completion(void) {
    if (load()) return;
    oa_request rq;
    oa_error er;
    CHECK(parse(OA_COMPLETION, "{\"prompt\":\"Hello\"}", &rq, &er) == 0 && rq.n_prompts == 1 && !strcmp(rq.prompts[0].text, "Hello"),
          "string prompt: %s", er.message);
    oa_request_free(&rq);
    CHECK(parse(OA_COMPLETION, "{\"prompt\":[\"a\",\"b\"],\"stop\":\"q\"}", &rq, &er) == 0 && rq.n_prompts == 2 && rq.n_stops == 1,
          "two prompts: %s", er.message);
    oa_request_free(&rq);
    int rc = parse(OA_COMPLETION, "{\"prompt\":[5,6,7]}", &rq, &er);
    CHECK(rc == 0 && rq.n_prompts == 1 && rq.prompts[0].n == 3 && rq.prompts[0].ids[2] == 7, "token prompt: %s", er.message);
    oa_request_free(&rq);
    rc = parse(OA_COMPLETION, "{\"prompt\":[[5,6],[7]],\"echo\":false,\"suffix\":\"\"}", &rq, &er);
    CHECK(rc == 0 && rq.n_prompts == 2 && rq.prompts[1].n == 1, "token prompts: %s", er.message);
    oa_request_free(&rq);
}

/* every malformed or refused body: the status, the param, a word of the message */
static void test_parse_errors(void) {
    if (load()) return;
    static const struct { oa_kind kind; const char *body; int status; const char *param, *msg; } cases[] = {
        {OA_CHAT, "", 400, "", "not valid JSON"},
        {OA_CHAT, "{\"messages\":", 400, "", "not valid JSON"},
        {OA_CHAT, "[1,2]", 400, "", "JSON object"},
        {OA_CHAT, "{}", 400, "messages", "required"},
        {OA_CHAT, "{\"messages\":[]}", 400, "messages", "non-empty"},
        {OA_CHAT, "{\"messages\":\"hi\"}", 400, "messages", "non-empty array"},
        {OA_CHAT, "{\"messages\":[1]}", 400, "messages[0]", "object"},
        {OA_CHAT, "{\"messages\":[{\"role\":\"robot\",\"content\":\"x\"}]}", 400, "messages[0].role", "robot"},
        {OA_CHAT, "{\"messages\":[{\"content\":\"x\"}]}", 400, "messages[0].role", "one of"},
        {OA_CHAT, "{\"messages\":[{\"role\":\"user\"}]}", 400, "messages[0].content", "required"},
        {OA_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":5}]}", 400, "messages[0].content", "string or an array"},
        {OA_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\":\"x\"}}]}]}", 400,
         "messages[0].content[0]", "text only"},
        {OA_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\"}]}]}", 400, "messages[0].content[0]", "text must be"},
        {OA_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\",\"name\":3}]}", 400, "messages[0].name", "string"},
        {OA_CHAT, "{\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"function\":{}}]}]}", 400, "messages[0].tool_calls[0]", "name"},
        {OA_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":\"5\"}", 400, "max_tokens", "integer"},
        {OA_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":0}", 422, "max_tokens", "[1,"},
        {OA_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":1001}", 422, "max_tokens", "limit of 1000"},
        {OA_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_completion_tokens\":5000}", 422, "max_completion_tokens", "limit"},
        {OA_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"t_max\":0.1}", 422, "t_max", "t_max must be"},
        {OA_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"entropy_bound\":-1}", 422, "entropy_bound", "entropy_bound"},
        {OA_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"confidence_threshold\":0}", 422, "confidence_threshold", "> 0"},
        {OA_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_denoising_steps\":0}", 422, "max_denoising_steps", "[1,"},
        {OA_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stability_threshold\":-2}", 422, "stability_threshold", "[0,"},
        {OA_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"t_min\":\"low\"}", 400, "t_min", "number"},
        {OA_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stream\":\"yes\"}", 400, "stream", "boolean"},
        {OA_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stream_options\":{\"include_drafts\":1}}", 400,
         "stream_options.include_drafts", "boolean"},
        {OA_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stream_options\":[]}", 400, "stream_options", "object"},
        {OA_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"seed\":1.5}", 400, "seed", "integer"},
        {OA_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stop\":5}", 400, "stop", "string"},
        {OA_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stop\":[\"a\",1]}", 400, "stop", "string"},
        {OA_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stop\":[\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\",\"8\",\"9\",\"10\","
                  "\"11\",\"12\",\"13\",\"14\",\"15\",\"16\",\"17\"]}", 422, "stop", "at most 16"},
        {OA_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"n\":2}", 422, "n", "[1, 1]"},
        {OA_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"logprobs\":true}", 400, "logprobs", "not supported"},
        {OA_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"response_format\":{\"type\":\"json_object\"}}", 400,
         "response_format", "json_object"},
        {OA_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tool_choice\":\"required\"}", 400, "tool_choice", "auto"},
        {OA_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[{\"type\":\"function\"}]}", 400, "tools[0]", "function"},
        {OA_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":{}}", 400, "tools", "array"},
        {OA_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"chat_template_kwargs\":{\"enable_thinking\":\"y\"}}", 400,
         "chat_template_kwargs.enable_thinking", "boolean"},
        {OA_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"model\":7}", 400, "model", "string"},
        {OA_COMPLETION, "{}", 400, "prompt", "required"},
        {OA_COMPLETION, "{\"prompt\":[]}", 400, "prompt", "at least one"},
        {OA_COMPLETION, "{\"prompt\":5}", 400, "prompt", "at least one"},
        {OA_COMPLETION, "{\"prompt\":[\"a\",5]}", 400, "prompt[1]", "string or an array"},
        {OA_COMPLETION, "{\"prompt\":[[1],[]]}", 400, "prompt[1]", "empty"},
        {OA_COMPLETION, "{\"prompt\":[1,2048]}", 400, "prompt[0]", "[0, 2048)"},
        {OA_COMPLETION, "{\"prompt\":[[1,-1]]}", 400, "prompt[0]", "token id"},
        {OA_COMPLETION, "{\"prompt\":\"x\",\"echo\":true}", 400, "echo", "not supported"},
        {OA_COMPLETION, "{\"prompt\":\"x\",\"suffix\":\"y\"}", 400, "suffix", "not supported"},
        {OA_COMPLETION, "{\"prompt\":\"x\",\"best_of\":3}", 422, "best_of", "[1, 1]"},
        {OA_COMPLETION, "{\"prompt\":\"x\",\"logprobs\":2}", 400, "logprobs", "not supported"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        oa_request rq;
        oa_error er;
        int rc = parse(cases[i].kind, cases[i].body, &rq, &er);
        if (rc == 0) { CHECK(0, "case %zu (%s) was accepted", i, cases[i].body); oa_request_free(&rq); continue; }
        CHECK(er.status == cases[i].status && !strcmp(er.param, cases[i].param) && strstr(er.message, cases[i].msg),
              "case %zu %s: got %d param '%s' message '%s'", i, cases[i].body, er.status, er.param, er.message);
        /* and the body is OpenAI's shape */
        size_t len;
        char *b = oa_error_body(&er, &len);
        json_t *j = b ? json_loads(b, 0, NULL) : NULL;
        json_t *e = json_object_get(j, "error");
        CHECK(json_is_string(json_object_get(e, "message")) && json_is_string(json_object_get(e, "type")) &&
              json_object_get(e, "param") && json_object_get(e, "code") && len == strlen(b), "error body %s", b ? b : "NULL");
        json_decref(j);
        free(b);
    }
}

/* ===== prompts and the context ===== */

static char *decode(const oa_prompt *q) {
    char *t = NULL, err[256];
    size_t len;
    if (dg_detokenize(g_tok, q->ids, q->n, 0, &t, &len, err, sizeof(err))) CHECK(0, "%s", err);
    return t;
}

static void test_prompts(void) {
    if (load()) return;
    oa_request rq;
    oa_error er;
    /* a chat through the (built-in) template: thinking off closes an empty thought channel */
    CHECK(parse(OA_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"Hi there\"}]}", &rq, &er) == 0, "%s", er.message);
    CHECK(oa_prepare_prompts(&rq, g_tpl, g_tok, 1, &er) == 0, "%s", er.message);
    char *t = decode(&rq.prompts[0]);
    CHECK(t && !strcmp(t, "<bos><|turn>user\nHi there<turn|>\n<|turn>model\n<|channel>thought\n<channel|>"), "chat prompt [%s]", t);
    free(t);
    oa_request_free(&rq);
    /* thinking on, a system message, a tool, a call and its result */
    const char *body =
        "{\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},{\"role\":\"user\",\"content\":\"Weather?\"},"
        "{\"role\":\"assistant\",\"tool_calls\":[{\"id\":\"c1\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
        "\"arguments\":\"{\\\"city\\\":\\\"Paris\\\"}\"}}]},{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"sunny\"}],"
        "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"description\":\"Weather of a city\","
        "\"parameters\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}},\"required\":[\"city\"]}}}],"
        "\"enable_thinking\":true}";
    CHECK(parse(OA_CHAT, body, &rq, &er) == 0, "%s", er.message);
    CHECK(oa_prepare_prompts(&rq, g_tpl, g_tok, 1, &er) == 0, "%s", er.message);
    t = decode(&rq.prompts[0]);
    CHECK(t && strstr(t, "<|turn>system\n<|think|>\nBe brief.<|tool>declaration:get_weather{description:<|\"|>Weather of a city<|\"|>"),
          "system turn [%s]", t ? t : "");
    CHECK(t && strstr(t, "<|tool_call>call:get_weather{city:<|\"|>Paris<|\"|>}<tool_call|><|tool_response>response:get_weather{value:<|\"|>sunny<|\"|>}"),
          "call and result [%s]", t ? t : "");
    CHECK(rq.reply_thinking == 1, "thinking on: reply_thinking %d", rq.reply_thinking);
    free(t);
    oa_request_free(&rq);
    /* a template whose generation prompt opens the thought channel: the reply starts as reasoning */
    {
        dg_chat_template *t2 = NULL;
        char err[256];
        const char *src = "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}{{ '<|channel>thought\\n' }}";
        CHECK(dg_chat_template_parse(src, strlen(src), "opens.jinja", &t2, err, sizeof(err)) == 0, "%s", err);
        oa_request r2;
        CHECK(parse(OA_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}", &r2, &er) == 0 &&
              oa_prepare_prompts(&r2, t2, g_tok, 1, &er) == 0 && r2.reply_thinking == 2, "reply_thinking %d: %s", r2.reply_thinking, er.message);
        oa_request_free(&r2);
        dg_chat_template_free(t2);
    }
    /* completions: BOS added to strings when asked, ids as given */
    CHECK(parse(OA_COMPLETION, "{\"prompt\":[\"Hello\",[7,8]]}", &rq, &er) == 0, "%s", er.message);
    CHECK(oa_prepare_prompts(&rq, g_tpl, g_tok, 1, &er) == 0, "%s", er.message);
    t = decode(&rq.prompts[0]);
    CHECK(t && !strcmp(t, "<bos>Hello") && rq.prompts[1].n == 2 && rq.prompts[1].ids[0] == 7, "completion prompts [%s]", t);
    free(t);
    oa_request_free(&rq);
    CHECK(parse(OA_COMPLETION, "{\"prompt\":\"<bos>Hello\"}", &rq, &er) == 0 && oa_prepare_prompts(&rq, g_tpl, g_tok, 1, &er) == 0 &&
          rq.prompts[0].ids[0] == 2 && rq.prompts[0].ids[1] != 2, "no second BOS");
    oa_request_free(&rq);
    CHECK(parse(OA_COMPLETION, "{\"prompt\":\"\"}", &rq, &er) == 0 && oa_prepare_prompts(&rq, g_tpl, g_tok, 0, &er) == -1 &&
          er.status == 400 && strstr(er.message, "empty"), "an empty prompt without BOS: %s", er.message);
    oa_request_free(&rq);

    /* the context: canvases of 16; 1024 tokens */
    CHECK(parse(OA_COMPLETION, "{\"prompt\":[1,2,3,4,5,6,7,8,9,10]}", &rq, &er) == 0, "%s", er.message);
    CHECK(oa_fit_context(&rq, 1024, 16, 1000, &er) == 0 && rq.max_tokens == 1000 && rq.gen.max_new_tokens == 1000, "default capped by the limit: %d", rq.max_tokens);
    rq.max_tokens = 0;
    CHECK(oa_fit_context(&rq, 100, 16, 1000, &er) == 0 && rq.max_tokens == 96, "default from the context: %d", rq.max_tokens);
    rq.max_tokens = 96;
    CHECK(oa_fit_context(&rq, 100, 16, 1000, &er) == 0, "96 fits");
    rq.max_tokens = 97;
    CHECK(oa_fit_context(&rq, 100, 16, 1000, &er) == -1 && er.status == 400 && !strcmp(er.code, "context_length_exceeded"), "97 does not");
    CHECK(oa_fit_context(&rq, 10, 16, 1000, &er) == -1 && er.status == 400 && !strcmp(er.code, "context_length_exceeded") &&
          strstr(er.message, "10 tokens"), "prompt over the context: %s", er.message);
    oa_request_free(&rq);
}

/* ===== stop strings and text ===== */

static void push_all(oa_stopper *s, char *const *stops, int n, const char *const *parts, dg_strbuf *out) {
    for (int i = 0; parts[i]; i++) oa_stop_push(s, stops, n, parts[i], strlen(parts[i]), out);
}

static void test_stop_strings(void) {
    char s1[] = "STOP", s2[] = "\n\n", s3[] = "é!";
    char *stops[] = {s1, s2, s3};
    struct { const char *parts[6]; const char *want; int stopped; const char *after_push; } cases[] = {
        {{"Hello ST", "OP world", NULL}, "Hello ", 1, "Hello "},
        {{"Hello ST", "ART", NULL}, "Hello START", 0, "Hello START"},
        {{"ab", "S", "T", NULL}, "abST", 0, "ab"},                  /* held back while it could still match */
        {{"one\n", "\ntwo", NULL}, "one", 1, "one"},
        {{"x STO\n\n STOP", NULL}, "x STO", 1, "x STO"},            /* the earliest match wins */
        {{"caf", "\xC3", "\xA9", "!", NULL}, "caf", 1, "caf"},     /* a stop string split inside a character */
        {{"caf\xC3\xA9", NULL}, "caf\xC3\xA9", 0, "caf"},          /* "é" could start "é!" */
        {{"STOP", "more", NULL}, "", 1, ""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        oa_stopper st = {0};
        dg_strbuf out = {0};
        push_all(&st, stops, 3, cases[i].parts, &out);
        CHECK(!strcmp(out.p ? out.p : "", cases[i].after_push), "case %zu: after the pushes [%s] want [%s]", i, out.p ? out.p : "",
              cases[i].after_push);
        oa_stop_flush(&st, &out);
        CHECK(!strcmp(out.p ? out.p : "", cases[i].want) && st.stopped == cases[i].stopped, "case %zu: [%s] stopped %d, want [%s] %d", i,
              out.p ? out.p : "", st.stopped, cases[i].want, cases[i].stopped);
        oa_stop_free(&st);
        oa_strbuf_free(&out);
    }
    /* no stop strings: everything at once */
    oa_stopper st = {0};
    dg_strbuf out = {0};
    oa_stop_push(&st, NULL, 0, "abc", 3, &out);
    CHECK(out.n == 3 && st.held.n == 0, "pass-through");
    oa_stop_free(&st);
    oa_strbuf_free(&out);
}

static void test_json_text(void) {
    /* invalid UTF-8 (a lone continuation byte, a truncated sequence, an overlong, a surrogate) becomes
     * U+FFFD per byte; valid text and NUL bytes pass */
    struct { const char *in; size_t n; const char *want; size_t wn; } cases[] = {
        {"ok \xC3\xA9", 5, "ok \xC3\xA9", 5},
        {"a\x80" "b", 3, "a\xEF\xBF\xBD" "b", 5},
        {"\xE2\x82", 2, "\xEF\xBF\xBD\xEF\xBF\xBD", 6},
        {"\xC0\xAF", 2, "\xEF\xBF\xBD\xEF\xBF\xBD", 6},
        {"\xED\xA0\x80", 3, "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD", 9},
        {"a\0b", 3, "a\0b", 3},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *j = oa_jstr(cases[i].in, cases[i].n);
        CHECK(j && json_string_length(j) == cases[i].wn && !memcmp(json_string_value(j), cases[i].want, cases[i].wn), "case %zu", i);
        json_decref(j);
    }
    size_t len;
    char *s = oa_sse(json_pack("{s:s}", "a", "b"), &len);
    CHECK(s && !strcmp(s, "data: {\"a\":\"b\"}\n\n") && len == strlen(s), "sse framing [%s]", s ? s : "NULL");
    free(s);
}

/* ===== whole requests on the fixture model ===== */

typedef struct {
    dg_strbuf all;
    int events, drafts, cancel_after_drafts;
} collect;

static void col_emit(void *user, const char *data, size_t len, int draft) {
    collect *c = user;
    dg_strbuf_add(&c->all, data, len);
    c->events++;
    c->drafts += draft;
}

static int col_cancelled(void *user) {
    collect *c = user;
    return c->cancel_after_drafts && c->drafts >= c->cancel_after_drafts;
}

/* run a body; the response body (non-streaming) or the stream text in *out */
static int run_body(oa_kind kind, const char *body, collect *c, char **resp, oa_usage *u, oa_error *er) {
    oa_request rq;
    if (parse(kind, body, &rq, er) || oa_prepare_prompts(&rq, g_tpl, g_tok, 1, er) || oa_fit_context(&rq, 1024, 16, 1000, er)) {
        oa_request_free(&rq);
        return -1;
    }
    if (!rq.has_seed) rq.seed = 1;
    oa_runner r = {g_session, g_engine, g_tok, g_generate};
    oa_meta m = {kind, kind == OA_CHAT ? "chatcmpl-test" : "cmpl-test", "tiny", 1};
    oa_sink sink = {col_emit, col_cancelled, c};
    oa_usage_free(u);   /* the previous run's */
    size_t len;
    int rc = oa_run(&r, &rq, &m, &sink, resp, &len, u, er);
    oa_request_free(&rq);
    return rc;
}

/* the concatenated content (and reasoning) of a stream, its finish reasons, its draft count */
typedef struct {
    dg_strbuf content;
    char finish[32];
    int drafts, role_chunks, usage_chunks, done, draft_steps_ok;
    json_t *usage;
} stream_sum;

static void sum_stream(const char *s, oa_kind kind, stream_sum *z) {
    memset(z, 0, sizeof(*z));
    z->draft_steps_ok = 1;
    int last_step = 0;
    for (const char *p = s; p && *p;) {
        const char *e = strstr(p, "\n\n");
        if (strncmp(p, "data: ", 6) || !e) { CHECK(0, "bad SSE framing at [%.40s]", p); break; }
        if (!strncmp(p + 6, "[DONE]", 6)) { z->done++; p = e + 2; continue; }
        json_t *j = json_loadb(p + 6, (size_t)(e - p - 6), JSON_ALLOW_NUL, NULL);
        CHECK(j != NULL, "chunk is not JSON [%.*s]", (int)(e - p), p);
        json_t *ch = json_array_get(json_object_get(j, "choices"), 0), *dr = json_object_get(j, "dgemma_draft");
        if (dr) {
            z->drafts++;
            int step = (int)json_integer_value(json_object_get(dr, "step"));
            if (step != last_step + 1 && step != 1) z->draft_steps_ok = 0;
            last_step = step;
            json_t *acc = json_object_get(dr, "accepted");
            int n = 0;
            for (size_t i = 0; i < json_array_size(acc); i++) n += (int)json_integer_value(json_array_get(acc, i));
            if (n != json_integer_value(json_object_get(dr, "n_accepted")) || json_array_size(json_object_get(dr, "tokens")) != 16)
                z->draft_steps_ok = 0;
        } else if (ch) {
            json_t *d = json_object_get(ch, "delta");
            json_t *tj = kind == OA_CHAT ? json_object_get(d, "content") : json_object_get(ch, "text");
            if (json_is_string(tj)) dg_strbuf_add(&z->content, json_string_value(tj), json_string_length(tj));
            if (json_object_get(d, "role")) z->role_chunks++;
            const char *f = json_string_value(json_object_get(ch, "finish_reason"));
            if (f) snprintf(z->finish, sizeof(z->finish), "%s", f);
        }
        if (json_object_get(j, "usage")) { z->usage_chunks++; json_decref(z->usage); z->usage = json_incref(json_object_get(j, "usage")); }
        json_decref(j);
        p = e + 2;
    }
}

static void test_run_chat(void) {
    if (load()) return;
    const char *base = "{\"messages\":[{\"role\":\"user\",\"content\":\"Hello\"}],\"max_tokens\":40,\"seed\":7,\"max_denoising_steps\":8";
    char body[512];
    collect c1 = {0};
    char *resp = NULL;
    oa_usage u = {0};
    oa_error er;
    snprintf(body, sizeof(body), "%s}", base);
    int rc = run_body(OA_CHAT, body, &c1, &resp, &u, &er);
    CHECK(rc == 0 && resp && c1.events == 0, "non-streaming: rc %d, %d events: %s", rc, c1.events, er.message);
    json_t *j = resp ? json_loads(resp, JSON_ALLOW_NUL, NULL) : NULL;
    json_t *ch = json_array_get(json_object_get(j, "choices"), 0), *msg = json_object_get(ch, "message");
    const char *content = json_string_value(json_object_get(msg, "content"));
    size_t clen = json_string_length(json_object_get(msg, "content"));
    json_t *usage = json_object_get(j, "usage"), *diff = json_object_get(usage, "diffusion");
    CHECK(!strcmp(json_string_value(json_object_get(j, "object")), "chat.completion") && content &&
          !strcmp(json_string_value(json_object_get(msg, "role")), "assistant"), "response shape: %s", resp);
    const char *finish = json_string_value(json_object_get(ch, "finish_reason"));
    int ct = (int)json_integer_value(json_object_get(usage, "completion_tokens"));
    CHECK(finish && (!strcmp(finish, "length") ? ct == 40 : !strcmp(finish, "stop") && ct < 40), "finish %s with %d tokens", finish, ct);
    CHECK(json_integer_value(json_object_get(usage, "prompt_tokens")) == u.prompt_tokens && u.prompt_tokens > 5 &&
          json_integer_value(json_object_get(usage, "total_tokens")) == u.prompt_tokens + ct, "usage");
    json_t *spc = json_object_get(diff, "steps_per_canvas");
    int steps = 0;
    for (size_t i = 0; i < json_array_size(spc); i++) steps += (int)json_integer_value(json_array_get(spc, i));
    CHECK(json_array_size(spc) == (size_t)json_integer_value(json_object_get(diff, "canvases")) && steps == json_integer_value(json_object_get(diff, "steps")) &&
          steps <= 8 * (int)json_array_size(spc) && json_integer_value(json_object_get(diff, "seed")) == 7 &&
          json_real_value(json_object_get(diff, "ms_per_step")) > 0, "diffusion statistics: %s", resp);

    /* the same request streamed, with drafts and usage: the same text, one draft per step */
    collect c2 = {0};
    char *none = NULL;
    snprintf(body, sizeof(body), "%s,\"stream\":true,\"stream_options\":{\"include_usage\":true,\"include_drafts\":true}}", base);
    rc = run_body(OA_CHAT, body, &c2, &none, &u, &er);
    stream_sum z;
    sum_stream(c2.all.p, OA_CHAT, &z);
    CHECK(rc == 0 && !none && z.done == 1 && z.role_chunks == 1 && z.usage_chunks == 1, "stream: rc %d, done %d, role %d, usage %d", rc,
          z.done, z.role_chunks, z.usage_chunks);
    CHECK(content && z.content.p && z.content.n == clen && !memcmp(z.content.p, content, clen), "streamed text equals the response:\n[%s]\n[%s]",
          z.content.p, content);
    CHECK(z.drafts == steps && c2.drafts == steps && z.draft_steps_ok, "%d drafts for %d steps (steps in order, mask matches: %d)", z.drafts,
          steps, z.draft_steps_ok);
    CHECK(finish && !strcmp(z.finish, finish), "finish %s vs %s", z.finish, finish);
    CHECK(json_integer_value(json_object_get(z.usage, "completion_tokens")) == ct, "stream usage");
    json_decref(z.usage);
    oa_strbuf_free(&z.content);
    oa_strbuf_free(&c2.all);

    /* a stop string from the middle of the text: cut there, finish "stop", generation ended early */
    size_t sl = content ? strlen(content) : 0;   /* (up to a NUL byte, which the text may hold) */
    if (sl >= 24) {
        char stop[16];
        size_t at = sl / 2, end;
        while (at < sl && ((unsigned char)content[at] & 0xC0) == 0x80) at++;   /* character boundaries */
        for (end = at + 3; end < sl && end < at + 12 && ((unsigned char)content[end] & 0xC0) == 0x80;) end++;
        snprintf(stop, sizeof(stop), "%.*s", (int)(end - at), content + at);
        char *first = strstr(content, stop);
        json_t *sj = json_string(stop);
        char *stop_json = json_dumps(sj, JSON_ENCODE_ANY);
        json_decref(sj);
        collect c3 = {0};
        char *resp3 = NULL;
        snprintf(body, sizeof(body), "%s,\"stop\":[%s]}", base, stop_json);
        free(stop_json);
        CHECK(run_body(OA_CHAT, body, &c3, &resp3, &u, &er) == 0, "%s", er.message);
        json_t *j3 = resp3 ? json_loads(resp3, JSON_ALLOW_NUL, NULL) : NULL;
        json_t *ch3 = json_array_get(json_object_get(j3, "choices"), 0);
        const char *c3t = json_string_value(json_object_get(json_object_get(ch3, "message"), "content"));
        CHECK(c3t && first && strlen(c3t) == (size_t)(first - content) && !strncmp(c3t, content, strlen(c3t)) &&
              !strcmp(json_string_value(json_object_get(ch3, "finish_reason")), "stop"), "stop string: [%s] of [%s]", c3t, content);
        json_decref(j3);
        free(resp3);
    }
    json_decref(j);
    free(resp);
    oa_usage_free(&u);
}

static void test_run_completion(void) {
    if (load()) return;
    /* two token prompts: each choice equals dg_generate on that prompt with the seed, decoded */
    const char *body = "{\"prompt\":[[2,900,901],[2,1000]],\"max_tokens\":20,\"seed\":3,\"max_denoising_steps\":6}";
    collect c = {0};
    char *resp = NULL;
    oa_usage u = {0};
    oa_error er;
    int rc = run_body(OA_COMPLETION, body, &c, &resp, &u, &er);
    CHECK(rc == 0 && resp, "%s", er.message);
    json_t *j = resp ? json_loads(resp, JSON_ALLOW_NUL, NULL) : NULL;
    const int32_t prompts[2][3] = {{2, 900, 901}, {2, 1000, 0}};
    int total = 0;
    for (int k = 0; k < 2; k++) {
        dg_gen_params gp = dg_gen_default_params(g_engine);
        gp.max_new_tokens = 20;
        gp.max_denoising_steps = 6;
        gp.seed = 3;
        int32_t out[20];
        int n = 0;
        char err[512], *text = NULL;
        size_t len;
        dg_session_reset(g_session);
        CHECK(dg_generate(g_session, prompts[k], k ? 2 : 3, &gp, NULL, out, 20, &n, NULL, err, sizeof(err)) == 0, "%s", err);
        CHECK(dg_detokenize(g_tok, out, n, 1, &text, &len, err, sizeof(err)) == 0, "%s", err);
        json_t *ch = json_array_get(json_object_get(j, "choices"), (size_t)k);
        const char *got = json_string_value(json_object_get(ch, "text"));
        CHECK(got && text && !strcmp(got, text) && json_integer_value(json_object_get(ch, "index")) == k, "choice %d: [%s] want [%s]", k, got, text);
        total += n;
        free(text);
    }
    CHECK(json_integer_value(json_object_get(json_object_get(j, "usage"), "completion_tokens")) == total &&
          json_integer_value(json_object_get(json_object_get(j, "usage"), "prompt_tokens")) == 5, "usage over both choices");
    json_decref(j);
    free(resp);

    /* a client that goes away: generation stops at the next step, nothing more is sent */
    collect c2 = {0};
    c2.cancel_after_drafts = 3;
    char *none = NULL;
    rc = run_body(OA_COMPLETION, "{\"prompt\":[2,5],\"max_tokens\":64,\"seed\":1,\"stream\":true,\"stream_options\":{\"include_drafts\":true},"
                                 "\"max_denoising_steps\":10,\"stability_threshold\":100}", &c2, &none, &u, &er);
    CHECK(rc == 1 && c2.drafts == 3 && !strstr(c2.all.p ? c2.all.p : "", "[DONE]"), "cancelled: rc %d after %d drafts", rc, c2.drafts);
    oa_strbuf_free(&c2.all);
    oa_strbuf_free(&c.all);
    oa_usage_free(&u);
}

/* ===== the reply path, with a scripted model =====
 * The tiny model's answers are noise: a thought channel, text and a tool call are fed through
 * oa_run as committed canvases of 16 ids instead, to check what the API makes of them. */

static int32_t *g_script;
static int g_script_n;

static int scripted_generate(dg_session *s, const int32_t *prompt, int n_prompt, const dg_gen_params *p, const dg_callbacks *cb,
                             int32_t *out, int out_cap, int *n_out, dg_gen_stats *stats, char *err, size_t errlen) {
    (void)s; (void)prompt; (void)err; (void)errlen;
    dg_gen_stats st;
    memset(&st, 0, sizeof(st));
    st.n_prompt = n_prompt;
    st.eos_id = -1;
    int emitted = 0;
    for (int at = 0, ci = 0; at < g_script_n && emitted < p->max_new_tokens; at += 16, ci++) {
        int n = g_script_n - at < 16 ? g_script_n - at : 16, last = at + 16 >= g_script_n;
        if (n > p->max_new_tokens - emitted) n = p->max_new_tokens - emitted;
        for (int i = 0; i < n && emitted + i < out_cap; i++) out[emitted + i] = g_script[at + i];
        emitted += n;
        st.n_canvases++;
        st.n_steps += 3;
        dg_canvas_event ev = {ci, 3, g_script + at, n, last, last ? 106 : -1};
        if (last) { st.finish = DG_FINISH_EOS; st.eos_id = 106; }
        if (cb->on_canvas && cb->on_canvas(cb->user, &ev)) { st.finish = DG_FINISH_CANCELLED; break; }
    }
    if (!st.finish) st.finish = DG_FINISH_LENGTH;
    st.n_emitted = emitted;
    *n_out = emitted;
    if (stats) *stats = st;
    return 0;
}

static void test_reply_parts(void) {
    if (load()) return;
    /* "☀" is three byte-fallback ids in the small vocabulary: shifting the script by 0..15 filler
     * tokens puts it across a canvas boundary in some runs, which must never show as U+FFFD */
    const char *script = "<|channel>thought\nThe user asks about Paris.<channel|>It is sunny \xE2\x98\x80 in Paris."
                         "<|tool_call>call:get_weather{city:<|\"|>Paris<|\"|>}<tool_call|>";
    char err[512];
    int32_t *ids = NULL;
    int n = 0;
    if (dg_tokenize(g_tok, script, strlen(script), &ids, &n, err, sizeof(err))) { CHECK(0, "%s", err); return; }
    g_script = malloc(sizeof(int32_t) * (size_t)(n + 16));
    g_generate = scripted_generate;
    const char *base = "{\"messages\":[{\"role\":\"user\",\"content\":\"Weather in Paris?\"}],\"enable_thinking\":true,"
                       "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\"}}]";
    char body[512];
    for (int shift = 0; shift < 16 && g_script; shift++) {
        for (int i = 0; i < shift; i++) g_script[i] = 900;   /* some text before the channel */
        memcpy(g_script + shift, ids, sizeof(int32_t) * (size_t)n);
        g_script_n = n + shift;
        oa_usage u = {0};
        oa_error er;
        collect c = {0};
        char *resp = NULL;
        snprintf(body, sizeof(body), "%s}", base);
        CHECK(run_body(OA_CHAT, body, &c, &resp, &u, &er) == 0, "%s", er.message);
        json_t *j = resp ? json_loads(resp, 0, NULL) : NULL;
        json_t *ch = json_array_get(json_object_get(j, "choices"), 0), *msg = json_object_get(ch, "message");
        const char *content = json_string_value(json_object_get(msg, "content"));
        const char *reasoning = json_string_value(json_object_get(msg, "reasoning_content"));
        json_t *call = json_array_get(json_object_get(msg, "tool_calls"), 0), *fn = json_object_get(call, "function");
        const char *args = json_string_value(json_object_get(fn, "arguments"));
        if (shift == 0) {
            CHECK(reasoning && !strcmp(reasoning, "The user asks about Paris."), "reasoning_content [%s]", reasoning ? reasoning : "NULL");
            CHECK(content && !strcmp(content, "It is sunny \xE2\x98\x80 in Paris."), "content [%s]", content ? content : "NULL");
        } else {
            CHECK(content && strstr(content, "It is sunny \xE2\x98\x80 in Paris."), "shift %d: content [%s]", shift, content ? content : "NULL");
        }
        CHECK(call && !strcmp(json_string_value(json_object_get(call, "id")), "call_test_0") && !json_object_get(call, "index"),
              "shift %d: call id / no index outside a stream: %s", shift, resp ? resp : "NULL");
        CHECK(call && !strcmp(json_string_value(json_object_get(fn, "name")), "get_weather") && args && strstr(args, "\"city\"") &&
              strstr(args, "\"Paris\"") && !strcmp(json_string_value(json_object_get(ch, "finish_reason")), "tool_calls"),
              "shift %d: tool call in %s", shift, resp ? resp : "NULL");
        /* streamed: the same parts; the call in one chunk with its index; no broken character */
        collect c2 = {0};
        char *none = NULL;
        snprintf(body, sizeof(body), "%s,\"stream\":true}", base);
        CHECK(run_body(OA_CHAT, body, &c2, &none, &u, &er) == 0, "%s", er.message);
        dg_strbuf sc = {0}, sr = {0};
        int calls = 0;
        const char *finish = NULL;
        for (const char *p = c2.all.p; p && *p;) {
            const char *e = strstr(p, "\n\n");
            json_t *k = e && strncmp(p + 6, "[DONE]", 6) ? json_loadb(p + 6, (size_t)(e - p - 6), 0, NULL) : NULL;
            json_t *kc = json_array_get(json_object_get(k, "choices"), 0), *d = json_object_get(kc, "delta");
            const char *t;
            if ((t = json_string_value(json_object_get(d, "content")))) dg_strbuf_add(&sc, t, strlen(t));
            if ((t = json_string_value(json_object_get(d, "reasoning_content")))) dg_strbuf_add(&sr, t, strlen(t));
            json_t *tc = json_object_get(d, "tool_calls");
            if (tc) calls += json_array_size(tc) == 1 && json_integer_value(json_object_get(json_array_get(tc, 0), "index")) == 0;
            if (json_string_value(json_object_get(kc, "finish_reason"))) finish = "tool_calls";
            if (json_string_value(json_object_get(kc, "finish_reason")) && strcmp(json_string_value(json_object_get(kc, "finish_reason")), "tool_calls")) finish = "other";
            json_decref(k);
            if (!e) break;
            p = e + 2;
        }
        CHECK(c2.all.p && !strstr(c2.all.p, "\xEF\xBF\xBD"), "shift %d: a broken character in the stream", shift);
        CHECK(sc.p && content && !strcmp(sc.p, content) && (!reasoning ? !sr.n : sr.p && !strcmp(sr.p, reasoning)),
              "shift %d: streamed [%s] [%s]", shift, sc.p ? sc.p : "", sr.p ? sr.p : "");
        CHECK(calls == 1 && finish && !strcmp(finish, "tool_calls"), "shift %d: %d tool_calls chunks, finish %s", shift, calls, finish ? finish : "NULL");
        oa_strbuf_free(&sc);
        oa_strbuf_free(&sr);
        oa_strbuf_free(&c2.all);
        json_decref(j);
        free(resp);
        oa_usage_free(&u);
    }
    g_generate = NULL;
    free(g_script);
    g_script = NULL;
    free(ids);
}

const dg_test server_tests[] = {
    {"server_parse_chat", test_parse_chat},
    {"server_parse_completion", test_parse_completion},
    {"server_parse_errors", test_parse_errors},
    {"server_prompts_and_context", test_prompts},
    {"server_stop_strings", test_stop_strings},
    {"server_json_text", test_json_text},
    {"server_run_chat", test_run_chat},
    {"server_run_completion", test_run_completion},
    {"server_reply_parts", test_reply_parts},
    {NULL, NULL},
};
