/*
 * openai.c - the OpenAI API shapes of `dgemma serve`: request bodies into generation parameters and
 * prompts, error bodies, response / stream-chunk JSON, stop strings. No networking (see openai.h).
 */
#define _POSIX_C_SOURCE 200809L
#include "openai.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ===== errors ===== */

int oa_fail(oa_error *er, int status, const char *param, const char *code, const char *fmt, ...) {
    if (!er) return -1;
    er->status = status;
    er->type = status >= 500 ? "server_error" : "invalid_request_error";
    snprintf(er->param, sizeof(er->param), "%s", param ? param : "");
    snprintf(er->code, sizeof(er->code), "%s", code ? code : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(er->message, sizeof(er->message), fmt, ap);
    va_end(ap);
    return -1;
}

static json_t *str_or_null(const char *s) { return s && *s ? oa_jstr(s, strlen(s)) : json_null(); }

char *oa_error_body(const oa_error *er, size_t *len) {
    json_t *e = json_pack("{s:{s:o, s:s, s:o, s:o}}", "error", "message", oa_jstr(er->message, strlen(er->message)),
                          "type", er->type ? er->type : "invalid_request_error", "param", str_or_null(er->param),
                          "code", str_or_null(er->code));
    char *s = e ? json_dumps(e, JSON_COMPACT) : NULL;
    json_decref(e);
    if (len) *len = s ? strlen(s) : 0;
    return s;
}

/* ===== small helpers ===== */

void oa_strbuf_free(dg_strbuf *b) {
    free(b->p);
    memset(b, 0, sizeof(*b));
}

json_t *oa_jstr(const char *s, size_t n) {
    json_t *j = json_stringn(s, n);   /* NULL when s is not valid UTF-8 */
    if (j) return j;
    dg_strbuf b = {0};
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t k = (size_t)dg_utf8_next(u + i, n - i, &cp);
        if (dg_strbuf_add(&b, k ? s + i : "\xEF\xBF\xBD", k ? k : 3)) break;
        i += k ? k : 1;
    }
    j = json_stringn(b.p ? b.p : "", b.n);
    oa_strbuf_free(&b);
    return j;
}

char *oa_sse(json_t *obj, size_t *len) {
    char *js = obj ? json_dumps(obj, OA_JSON_FLAGS) : NULL;
    json_decref(obj);
    if (!js) return NULL;
    size_t n = strlen(js);
    char *s = malloc(n + 9);
    if (s) {
        memcpy(s, "data: ", 6);
        memcpy(s + 6, js, n);
        memcpy(s + 6 + n, "\n\n", 3);
        if (len) *len = n + 8;
    }
    free(js);
    return s;
}

/* ===== reading fields =====
 * A field that is absent or null keeps its default. A wrong JSON type is a 400, a value out of range a
 * 422; the message and "param" name the field. */

static int get_bool(json_t *o, const char *key, int *out, oa_error *er) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_boolean(v)) return oa_fail(er, 400, key, "invalid_type", "'%s' must be a boolean", key);
    *out = json_is_true(v);
    return 0;
}

static int get_int(json_t *o, const char *key, long long lo, long long hi, int *out, oa_error *er) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_integer(v)) return oa_fail(er, 400, key, "invalid_type", "'%s' must be an integer", key);
    long long x = json_integer_value(v);
    if (x < lo || x > hi) return oa_fail(er, 422, key, "invalid_value", "'%s' must be in [%lld, %lld] (got %lld)", key, lo, hi, x);
    *out = (int)x;
    return 0;
}

static int get_num(json_t *o, const char *key, double *out, oa_error *er) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_number(v)) return oa_fail(er, 400, key, "invalid_type", "'%s' must be a number", key);
    *out = json_number_value(v);
    return 0;
}

/* a field that must be absent, null, false, 0 or the given harmless value: the features dgemma lacks */
static int unsupported(json_t *o, const char *key, const char *why, oa_error *er) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v) || json_is_false(v) || (json_is_integer(v) && json_integer_value(v) == 0)) return 0;
    return oa_fail(er, 400, key, "unsupported_parameter", "'%s' is not supported by dgemma serve (%s)", key, why);
}

/* ===== chat messages ===== */

static const char *const ROLES[] = {"system", "developer", "user", "assistant", "tool", NULL};

static int check_content(json_t *m, int i, const char *role, oa_error *er) {
    char p[96];
    json_t *c = json_object_get(m, "content");
    snprintf(p, sizeof(p), "messages[%d].content", i);
    if (!c || json_is_null(c)) {
        if (!strcmp(role, "assistant")) return 0;   /* tool calls only */
        return oa_fail(er, 400, p, "missing_required_parameter", "%s is required for role '%s'", p, role);
    }
    if (json_is_string(c)) return 0;
    if (!json_is_array(c)) return oa_fail(er, 400, p, "invalid_type", "%s must be a string or an array of content parts", p);
    for (size_t j = 0; j < json_array_size(c); j++) {
        json_t *part = json_array_get(c, j);
        snprintf(p, sizeof(p), "messages[%d].content[%zu]", i, j);
        const char *type = json_string_value(json_object_get(part, "type"));
        if (!json_is_object(part) || !type) return oa_fail(er, 400, p, "invalid_type", "%s must be an object with a 'type'", p);
        if (!strcmp(type, "text")) {
            if (!json_is_string(json_object_get(part, "text")))
                return oa_fail(er, 400, p, "invalid_type", "%s.text must be a string", p);
        } else if (!strcmp(type, "image_url") || !strcmp(type, "input_audio") || !strcmp(type, "file") ||
                   !strcmp(type, "image") || !strcmp(type, "audio") || !strcmp(type, "video")) {
            return oa_fail(er, 400, p, "unsupported_content", "%s: content parts of type '%s' are not supported (dgemma serves text only)", p, type);
        } else {
            return oa_fail(er, 400, p, "invalid_value", "%s: unknown content part type '%s'", p, type);
        }
    }
    return 0;
}

/* tool_calls of an assistant message: arguments given as a JSON string (OpenAI) become the object the
 * template formats (as vLLM does); anything else is kept as it is */
static int fix_tool_calls(json_t *m, int i, oa_error *er) {
    char p[96];
    json_t *calls = json_object_get(m, "tool_calls");
    snprintf(p, sizeof(p), "messages[%d].tool_calls", i);
    if (!calls || json_is_null(calls)) return 0;
    if (!json_is_array(calls)) return oa_fail(er, 400, p, "invalid_type", "%s must be an array", p);
    for (size_t j = 0; j < json_array_size(calls); j++) {
        json_t *c = json_array_get(calls, j), *fn = json_object_get(c, "function");
        snprintf(p, sizeof(p), "messages[%d].tool_calls[%zu]", i, j);
        if (!json_is_object(c) || !json_is_object(fn) || !json_is_string(json_object_get(fn, "name")))
            return oa_fail(er, 400, p, "invalid_type", "%s must be {\"function\": {\"name\": ..., \"arguments\": ...}}", p);
        json_t *args = json_object_get(fn, "arguments");
        if (json_is_string(args)) {
            json_t *obj = json_loads(json_string_value(args), JSON_DECODE_ANY, NULL);
            if (json_is_object(obj)) json_object_set(fn, "arguments", obj);
            json_decref(obj);
        }
    }
    return 0;
}

static json_t *norm_messages(json_t *msgs, oa_error *er) {
    if (!msgs) { oa_fail(er, 400, "messages", "missing_required_parameter", "'messages' is required"); return NULL; }
    if (!json_is_array(msgs) || json_array_size(msgs) == 0) {
        oa_fail(er, 400, "messages", "invalid_type", "'messages' must be a non-empty array");
        return NULL;
    }
    json_t *out = json_deep_copy(msgs);
    if (!out) { oa_fail(er, 500, NULL, NULL, "out of memory"); return NULL; }
    for (size_t i = 0; i < json_array_size(out); i++) {
        char p[64];
        json_t *m = json_array_get(out, i);
        snprintf(p, sizeof(p), "messages[%zu]", i);
        if (!json_is_object(m)) { oa_fail(er, 400, p, "invalid_type", "%s must be an object", p); goto bad; }
        const char *role = json_string_value(json_object_get(m, "role"));
        snprintf(p, sizeof(p), "messages[%zu].role", i);
        int known = 0;
        for (int r = 0; role && ROLES[r]; r++) known |= !strcmp(role, ROLES[r]);
        if (!known) {
            oa_fail(er, 400, p, "invalid_value", "%s must be one of system, developer, user, assistant, tool%s%s%s", p,
                    role ? " (got '" : "", role ? role : "", role ? "')" : "");
            goto bad;
        }
        if (check_content(m, (int)i, role, er) || fix_tool_calls(m, (int)i, er)) goto bad;
        const char *names[] = {"name", "tool_call_id"};
        for (int k = 0; k < 2; k++) {
            json_t *v = json_object_get(m, names[k]);
            snprintf(p, sizeof(p), "messages[%zu].%s", i, names[k]);
            if (v && !json_is_null(v) && !json_is_string(v)) { oa_fail(er, 400, p, "invalid_type", "%s must be a string", p); goto bad; }
        }
    }
    return out;
bad:
    json_decref(out);
    return NULL;
}

static int check_tools(json_t *tools, oa_error *er) {
    if (!json_is_array(tools)) return oa_fail(er, 400, "tools", "invalid_type", "'tools' must be an array");
    for (size_t i = 0; i < json_array_size(tools); i++) {
        char p[48];
        json_t *t = json_array_get(tools, i), *fn = json_object_get(t, "function");
        const char *type = json_string_value(json_object_get(t, "type"));
        snprintf(p, sizeof(p), "tools[%zu]", i);
        if (!json_is_object(t) || (type && strcmp(type, "function")) || !json_is_object(fn) ||
            !json_is_string(json_object_get(fn, "name")))
            return oa_fail(er, 400, p, "invalid_type", "%s must be {\"type\": \"function\", \"function\": {\"name\": ...}}", p);
    }
    return 0;
}

/* ===== the request ===== */

static int parse_stops(json_t *o, oa_request *rq, oa_error *er) {
    json_t *v = json_object_get(o, "stop");
    if (!v || json_is_null(v)) return 0;
    json_t *one = json_is_string(v) ? json_pack("[O]", v) : json_incref(v);
    int rc = 0;
    if (!json_is_array(one)) rc = oa_fail(er, 400, "stop", "invalid_type", "'stop' must be a string or an array of strings");
    else if (json_array_size(one) > OA_MAX_STOPS)
        rc = oa_fail(er, 422, "stop", "invalid_value", "'stop' holds at most %d strings (got %zu)", OA_MAX_STOPS, json_array_size(one));
    for (size_t i = 0; !rc && i < json_array_size(one); i++) {
        json_t *s = json_array_get(one, i);
        if (!json_is_string(s)) { rc = oa_fail(er, 400, "stop", "invalid_type", "'stop' must be a string or an array of strings"); break; }
        if (json_string_length(s) == 0) continue;   /* an empty stop string would stop at once: ignored */
        if (!(rq->stops[rq->n_stops] = strdup(json_string_value(s)))) { rc = oa_fail(er, 500, NULL, NULL, "out of memory"); break; }
        rq->n_stops++;
    }
    json_decref(one);
    return rc;
}

/* the diffusion settings: body fields named like the reference's generation config */
static int parse_diffusion(json_t *o, const dg_engine *e, dg_gen_params *g, oa_error *er) {
    if (get_int(o, "max_denoising_steps", 1, 100000, &g->max_denoising_steps, er) ||
        get_num(o, "entropy_bound", &g->entropy_bound, er) || get_num(o, "t_min", &g->t_min, er) ||
        get_num(o, "t_max", &g->t_max, er) || get_int(o, "stability_threshold", 0, 1 << 30, &g->stability_threshold, er) ||
        get_num(o, "confidence_threshold", &g->confidence_threshold, er))
        return -1;
    dg_gen_params chk = *g;
    chk.max_new_tokens = 1;   /* checked separately */
    char msg[512];
    if (dg_gen_params_check(e, &chk, msg, sizeof(msg))) {
        /* the engine's message names the parameter; report it as the param */
        static const char *const names[] = {"max_denoising_steps", "entropy_bound", "t_min", "t_max", "stability_threshold",
                                            "confidence_threshold", NULL};
        const char *param = NULL;
        for (int i = 0; names[i] && !param; i++)
            if (strstr(msg, names[i]) && json_object_get(o, names[i])) param = names[i];
        const char *m = strncmp(msg, "generate: ", 10) ? msg : msg + 10;
        return oa_fail(er, 422, param, "invalid_value", "%s", m);
    }
    return 0;
}

static int parse_prompts(json_t *o, const oa_limits *lim, oa_request *rq, oa_error *er) {
    json_t *p = json_object_get(o, "prompt");
    if (!p || json_is_null(p)) return oa_fail(er, 400, "prompt", "missing_required_parameter", "'prompt' is required");
    /* a string, an array of strings, an array of ids, or an array of arrays of ids */
    json_t *list = json_is_string(p) || (json_is_array(p) && json_array_size(p) && json_is_integer(json_array_get(p, 0)))
                       ? json_pack("[O]", p) : json_incref(p);
    int rc = 0;
    if (!json_is_array(list) || json_array_size(list) == 0)
        rc = oa_fail(er, 400, "prompt", "invalid_type", "'prompt' must be a string, an array of strings, an array of token ids "
                     "or an array of arrays of token ids, with at least one prompt");
    else if (json_array_size(list) > OA_MAX_PROMPTS)
        rc = oa_fail(er, 422, "prompt", "invalid_value", "at most %d prompts per request (got %zu)", OA_MAX_PROMPTS, json_array_size(list));
    else if (!(rq->prompts = calloc(json_array_size(list), sizeof(oa_prompt))))
        rc = oa_fail(er, 500, NULL, NULL, "out of memory");
    for (size_t i = 0; !rc && i < json_array_size(list); i++) {
        json_t *x = json_array_get(list, i);
        oa_prompt *q = &rq->prompts[rq->n_prompts++];
        char param[48];
        snprintf(param, sizeof(param), "prompt[%zu]", i);
        if (json_is_string(x)) {
            if (!(q->text = strdup(json_string_value(x)))) rc = oa_fail(er, 500, NULL, NULL, "out of memory");
            continue;
        }
        if (!json_is_array(x)) { rc = oa_fail(er, 400, param, "invalid_type", "%s must be a string or an array of token ids", param); break; }
        size_t n = json_array_size(x);
        if (n == 0) { rc = oa_fail(er, 400, param, "invalid_value", "%s is empty", param); break; }
        if (!(q->ids = malloc(n * sizeof(int32_t)))) { rc = oa_fail(er, 500, NULL, NULL, "out of memory"); break; }
        for (size_t k = 0; k < n; k++) {
            json_t *t = json_array_get(x, k);
            if (!json_is_integer(t) || json_integer_value(t) < 0 || json_integer_value(t) >= lim->n_vocab) {
                rc = oa_fail(er, 400, param, "invalid_value", "%s[%zu] is not a token id in [0, %d)", param, k, lim->n_vocab);
                break;
            }
            q->ids[q->n++] = (int32_t)json_integer_value(t);
        }
    }
    json_decref(list);
    return rc;
}

int oa_parse(oa_kind kind, const char *body, size_t len, const dg_engine *e, const oa_limits *lim, oa_request *rq,
             oa_error *er) {
    memset(rq, 0, sizeof(*rq));
    rq->kind = kind;
    rq->enable_thinking = -1;
    rq->add_generation_prompt = 1;
    rq->gen = dg_gen_default_params(e);
    json_error_t je;
    json_t *o = json_loadb(body, len, 0, &je);
    if (!o) return oa_fail(er, 400, NULL, "invalid_json", "the body is not valid JSON: %s (line %d, column %d)", je.text, je.line, je.column);
    int rc = -1;
    if (!json_is_object(o)) { oa_fail(er, 400, NULL, "invalid_json", "the body must be a JSON object"); goto out; }
    json_t *model = json_object_get(o, "model");
    if (model && !json_is_null(model) && !json_is_string(model)) { oa_fail(er, 400, "model", "invalid_type", "'model' must be a string"); goto out; }

    /* length: max_completion_tokens (the newer name) wins over max_tokens */
    int mt = 0, mct = 0, n = 1;
    if (get_int(o, "max_tokens", 1, INT32_MAX, &mt, er) || get_int(o, "max_completion_tokens", 1, INT32_MAX, &mct, er)) goto out;
    rq->max_tokens = mct ? mct : mt;
    if (rq->max_tokens > lim->max_tokens_limit) {
        oa_fail(er, 422, mct ? "max_completion_tokens" : "max_tokens", "invalid_value",
                "'%s' is %d, above this server's limit of %d tokens (--max-tokens-limit)", mct ? "max_completion_tokens" : "max_tokens",
                rq->max_tokens, lim->max_tokens_limit);
        goto out;
    }
    json_t *seed = json_object_get(o, "seed");
    if (seed && !json_is_null(seed)) {
        if (!json_is_integer(seed)) { oa_fail(er, 400, "seed", "invalid_type", "'seed' must be an integer"); goto out; }
        rq->has_seed = 1;
        rq->seed = (uint64_t)json_integer_value(seed);
    }
    if (get_bool(o, "stream", &rq->stream, er) || get_int(o, "n", 1, 1, &n, er) || parse_stops(o, rq, er)) goto out;
    json_t *so = json_object_get(o, "stream_options");
    if (so && !json_is_null(so)) {
        if (!json_is_object(so)) { oa_fail(er, 400, "stream_options", "invalid_type", "'stream_options' must be an object"); goto out; }
        if (get_bool(so, "include_usage", &rq->include_usage, er) || get_bool(so, "include_drafts", &rq->include_drafts, er)) {
            snprintf(er->param, sizeof(er->param), "stream_options.%s", json_object_get(so, "include_usage") &&
                     !json_is_boolean(json_object_get(so, "include_usage")) ? "include_usage" : "include_drafts");
            goto out;
        }
    }
    if (parse_diffusion(o, e, &rq->gen, er)) goto out;
    int ignore_eos = 0;   /* vLLM's extension: generate max_tokens whatever the model says */
    if (get_bool(o, "ignore_eos", &ignore_eos, er)) goto out;
    if (ignore_eos) rq->gen.n_eos = 0;

    if (kind == OA_CHAT) {
        if (unsupported(o, "logprobs", "no log-probabilities", er) || unsupported(o, "top_logprobs", "no log-probabilities", er))
            goto out;
        json_t *rf = json_object_get(o, "response_format");
        if (rf && !json_is_null(rf)) {
            const char *t = json_string_value(json_object_get(rf, "type"));
            if (!t || strcmp(t, "text")) {
                oa_fail(er, 400, "response_format", "unsupported_parameter", "response_format '%s' is not supported (only 'text'; "
                        "no constrained decoding)", t ? t : "?");
                goto out;
            }
        }
        json_t *msgs = norm_messages(json_object_get(o, "messages"), er);
        if (!msgs) goto out;
        rq->messages_json = json_dumps(msgs, JSON_COMPACT);
        json_decref(msgs);
        json_t *tools = json_object_get(o, "tools"), *tc = json_object_get(o, "tool_choice");
        int render_tools = 1;
        if (tc && !json_is_null(tc)) {
            const char *c = json_string_value(tc);
            if (c && !strcmp(c, "none")) render_tools = 0;
            else if (!c || strcmp(c, "auto")) {
                oa_fail(er, 400, "tool_choice", "unsupported_parameter", "tool_choice must be \"auto\" or \"none\" (forcing a tool "
                        "call needs constrained decoding, which dgemma lacks)");
                goto out;
            }
        }
        if (tools && !json_is_null(tools)) {
            if (check_tools(tools, er)) goto out;
            if (render_tools && json_array_size(tools)) rq->tools_json = json_dumps(tools, JSON_COMPACT);
        }
        /* thinking: chat_template_kwargs.enable_thinking (vLLM), or a top-level enable_thinking */
        json_t *kw = json_object_get(o, "chat_template_kwargs");
        if (kw && !json_is_null(kw)) {
            if (!json_is_object(kw)) { oa_fail(er, 400, "chat_template_kwargs", "invalid_type", "'chat_template_kwargs' must be an object"); goto out; }
            if (get_bool(kw, "enable_thinking", &rq->enable_thinking, er)) {
                snprintf(er->param, sizeof(er->param), "chat_template_kwargs.enable_thinking");
                goto out;
            }
            json_t *extra = json_copy(kw);
            json_object_del(extra, "enable_thinking");
            if (json_object_size(extra)) rq->extra_json = json_dumps(extra, JSON_COMPACT);
            json_decref(extra);
        }
        if (get_bool(o, "enable_thinking", &rq->enable_thinking, er) ||
            get_bool(o, "add_generation_prompt", &rq->add_generation_prompt, er))
            goto out;
        if (!rq->messages_json || !(rq->prompts = calloc(1, sizeof(oa_prompt)))) { oa_fail(er, 500, NULL, NULL, "out of memory"); goto out; }
        rq->n_prompts = 1;
    } else {
        if (unsupported(o, "echo", "the prompt is not echoed", er) || unsupported(o, "logprobs", "no log-probabilities", er) ||
            get_int(o, "best_of", 1, 1, &n, er))
            goto out;
        json_t *suffix = json_object_get(o, "suffix");
        if (suffix && !json_is_null(suffix) && !(json_is_string(suffix) && json_string_length(suffix) == 0)) {
            oa_fail(er, 400, "suffix", "unsupported_parameter", "'suffix' is not supported by dgemma serve (no fill-in-the-middle)");
            goto out;
        }
        if (parse_prompts(o, lim, rq, er)) goto out;
    }
    rc = 0;
out:
    json_decref(o);
    if (rc) oa_request_free(rq);
    return rc;
}

void oa_request_free(oa_request *rq) {
    if (!rq) return;
    free(rq->messages_json);
    free(rq->tools_json);
    free(rq->extra_json);
    for (int i = 0; i < rq->n_prompts; i++) { free(rq->prompts[i].text); free(rq->prompts[i].ids); }
    free(rq->prompts);
    for (int i = 0; i < rq->n_stops; i++) free(rq->stops[i]);
    memset(rq, 0, sizeof(*rq));
}

int oa_prepare_prompts(oa_request *rq, const dg_chat_template *tpl, const dg_tokenizer *tok, int add_bos, oa_error *er) {
    char err[1024];
    const int32_t bos = dg_tokenizer_find(tok, "<bos>");
    for (int i = 0; i < rq->n_prompts; i++) {
        oa_prompt *q = &rq->prompts[i];
        if (q->ids) continue;   /* token ids as given */
        char *text = NULL;
        size_t len = 0;
        int chat = rq->kind == OA_CHAT;
        if (chat) {
            dg_chat_params cp = {rq->messages_json, rq->tools_json, rq->add_generation_prompt, rq->enable_thinking, rq->extra_json};
            if (dg_chat_render(tpl, &cp, &text, &len, err, sizeof(err)))
                return oa_fail(er, 400, "messages", "invalid_value", "the chat template failed: %s", err);
            /* a template whose generation prompt ends inside an open thought channel: the reply
             * starts as reasoning (as dgemma run does) */
            static const char open_thought[] = "<|channel>thought\n";
            const size_t k = sizeof(open_thought) - 1;
            rq->reply_thinking = len >= k && !memcmp(text + len - k, open_thought, k) ? 2 : rq->enable_thinking == 1;
        }
        int32_t *ids = NULL;
        int n = 0;
        int rc = dg_tokenize(tok, chat ? text : q->text, chat ? len : strlen(q->text), &ids, &n, err, sizeof(err));
        free(text);
        if (rc) return oa_fail(er, 400, chat ? "messages" : "prompt", "invalid_value", "tokenizing the prompt: %s", err);
        /* a string completion prompt starts with BOS like the tokenizer's encode(add_special_tokens=True);
         * a chat's template writes its own */
        if (!chat && add_bos && bos >= 0 && (n == 0 || ids[0] != bos)) {
            int32_t *w = realloc(ids, sizeof(int32_t) * (size_t)(n + 1));
            if (!w) { free(ids); return oa_fail(er, 500, NULL, NULL, "out of memory"); }
            memmove(w + 1, w, sizeof(int32_t) * (size_t)n);
            w[0] = bos;
            ids = w;
            n++;
        }
        if (n == 0) { free(ids); return oa_fail(er, 400, chat ? "messages" : "prompt", "invalid_value", "the prompt is empty"); }
        q->ids = ids;
        q->n = n;
    }
    return 0;
}

int oa_fit_context(oa_request *rq, int n_ctx, int C, int max_tokens_limit, oa_error *er) {
    int fit = max_tokens_limit;
    for (int i = 0; i < rq->n_prompts; i++) {
        const int np = rq->prompts[i].n;
        /* the prompt and every committed canvas but the last are encoded into the cache */
        if (np > n_ctx - 1)
            return oa_fail(er, 400, rq->kind == OA_CHAT ? "messages" : "prompt", "context_length_exceeded",
                           "the prompt has %d tokens; this server's context holds %d (--ctx-size)", np, n_ctx);
        long long most = (long long)((n_ctx - np) / C + 1) * C;
        if (rq->max_tokens) {
            long long canv = (rq->max_tokens + (long long)C - 1) / C;
            if (np + (canv - 1) * C > n_ctx)
                return oa_fail(er, 400, "max_tokens", "context_length_exceeded",
                               "%d prompt tokens + max_tokens %d do not fit this server's context of %d tokens (at most %lld "
                               "tokens after this prompt: generation commits whole canvases of %d)", np, rq->max_tokens, n_ctx, most, C);
        }
        if (most < fit) fit = (int)most;
    }
    if (!rq->max_tokens) rq->max_tokens = fit;
    rq->gen.max_new_tokens = rq->max_tokens;
    return 0;
}

/* ===== responses ===== */

/* a JSON number for a statistic (json_real refuses NaN and infinities) */
static double fin(double x) { return x == x && x - x == 0 ? x : 0.0; }

json_t *oa_usage_json(const oa_usage *u, int canvas_length) {
    json_t *spc = json_array();
    for (int i = 0; i < u->n_spc; i++) json_array_append_new(spc, json_integer(u->steps_per_canvas[i]));
    double ms_step = u->steps ? u->ms_steps / u->steps : 0.0;
    json_t *d = json_pack("{s:i, s:i, s:o, s:f, s:f, s:f, s:f, s:f, s:f, s:I}", "canvases", u->canvases, "steps", u->steps,
                          "steps_per_canvas", spc, "ms_per_step", fin(ms_step), "ms_prompt", fin(u->ms_prompt),
                          "ms_first_canvas", fin(u->ms_first_canvas), "ms_total", fin(u->ms_total),
                          "canvas_tok_per_s", fin(u->ms_steps > 0 ? (double)u->steps * canvas_length / (u->ms_steps * 1e-3) : 0.0),
                          "emitted_tok_per_s", fin(u->ms_total > 0 ? u->completion_tokens / (u->ms_total * 1e-3) : 0.0),
                          "seed", (json_int_t)u->seed);
    return json_pack("{s:i, s:i, s:i, s:o}", "prompt_tokens", u->prompt_tokens, "completion_tokens", u->completion_tokens,
                     "total_tokens", u->prompt_tokens + u->completion_tokens, "diffusion", d);
}

void oa_usage_free(oa_usage *u) {
    free(u->steps_per_canvas);
    memset(u, 0, sizeof(*u));
}

json_t *oa_chunk(const oa_meta *m, int index, json_t *delta, const char *text, size_t text_len, const char *finish) {
    json_t *choice;
    if (m->kind == OA_CHAT)
        choice = json_pack("{s:i, s:o, s:n, s:o}", "index", index, "delta", delta ? delta : json_object(), "logprobs",
                           "finish_reason", finish ? json_string(finish) : json_null());
    else
        choice = json_pack("{s:i, s:o, s:n, s:o}", "index", index, "text", oa_jstr(text ? text : "", text ? text_len : 0),
                           "logprobs", "finish_reason", finish ? json_string(finish) : json_null());
    return json_pack("{s:s, s:s, s:I, s:s, s:[o]}", "id", m->id, "object", m->kind == OA_CHAT ? "chat.completion.chunk" : "text_completion",
                     "created", (json_int_t)m->created, "model", m->model, "choices", choice);
}

json_t *oa_draft_chunk(const oa_meta *m, int index, const dg_step_event *ev, int max_steps, const dg_tokenizer *tok) {
    json_t *pieces = json_array(), *acc = json_array();
    char err[256];
    for (int i = 0; i < ev->n; i++) {
        char *t = NULL;
        size_t len = 0;
        /* each position alone (a byte-fallback piece of a longer character shows as U+FFFD) */
        if (dg_detokenize(tok, &ev->argmax[i], 1, 0, &t, &len, err, sizeof(err))) { t = NULL; len = 0; }
        json_array_append_new(pieces, oa_jstr(t ? t : "", len));
        free(t);
        json_array_append_new(acc, json_integer(ev->accepted[i] ? 1 : 0));
    }
    char *text = NULL;
    size_t tlen = 0;
    if (dg_detokenize(tok, ev->argmax, ev->n, 1, &text, &tlen, err, sizeof(err))) { text = NULL; tlen = 0; }
    json_t *d = json_pack("{s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:f, s:b, s:o, s:o, s:o}", "index", index, "canvas", ev->canvas,
                          "step", ev->step, "max_steps", max_steps, "n", ev->n, "n_accepted", ev->n_accepted,
                          "mean_entropy", fin(ev->mean_entropy), "temperature", fin(ev->temperature), "stop", ev->stop,
                          "text", oa_jstr(text ? text : "", tlen), "tokens", pieces, "accepted", acc);
    free(text);
    json_t *c = oa_chunk(m, index, NULL, NULL, 0, NULL);
    if (c && d) json_object_set_new(c, "dgemma_draft", d);
    else json_decref(d);
    return c;
}

/* ===== stop strings ===== */

/* the longest suffix of s[0, n) that is a proper prefix of some stop string */
static size_t held_suffix(char *const *stops, int n_stops, const char *s, size_t n) {
    size_t best = 0;
    for (int k = 0; k < n_stops; k++) {
        size_t L = strlen(stops[k]);
        for (size_t m = (L - 1 < n ? L - 1 : n); m > best; m--)
            if (!memcmp(s + n - m, stops[k], m)) { best = m; break; }
    }
    return best;
}

int oa_stop_push(oa_stopper *s, char *const *stops, int n_stops, const char *text, size_t len, dg_strbuf *out) {
    if (s->stopped) return 0;
    if (n_stops == 0) return dg_strbuf_add(out, text, len);
    if (dg_strbuf_add(&s->held, text, len)) return -1;
    /* the earliest stop string in what is held */
    size_t cut = s->held.n;
    for (int k = 0; k < n_stops; k++) {
        const char *hit = NULL, *from = s->held.p;
        size_t L = strlen(stops[k]);
        while ((size_t)(s->held.p + s->held.n - from) >= L) {
            const char *c = memchr(from, stops[k][0], (size_t)(s->held.p + s->held.n - from));
            if (!c || (size_t)(s->held.p + s->held.n - c) < L) break;
            if (!memcmp(c, stops[k], L)) { hit = c; break; }
            from = c + 1;
        }
        if (hit && (size_t)(hit - s->held.p) < cut) cut = (size_t)(hit - s->held.p);
    }
    if (cut < s->held.n) {
        s->stopped = 1;
        int rc = dg_strbuf_add(out, s->held.p, cut);
        s->held.n = 0;
        return rc;
    }
    size_t keep = held_suffix(stops, n_stops, s->held.p, s->held.n);
    size_t give = s->held.n - keep;
    if (dg_strbuf_add(out, s->held.p, give)) return -1;
    memmove(s->held.p, s->held.p + give, keep);
    s->held.n = keep;
    if (s->held.p) s->held.p[keep] = 0;
    return 0;
}

int oa_stop_flush(oa_stopper *s, dg_strbuf *out) {
    int rc = s->stopped ? 0 : dg_strbuf_add(out, s->held.p ? s->held.p : "", s->held.n);
    s->held.n = 0;
    return rc;
}

void oa_stop_free(oa_stopper *s) { oa_strbuf_free(&s->held); }
