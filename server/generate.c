/*
 * generate.c - one API request run on a session: every choice generated with dg_generate, the reply
 * split into reasoning / content / tool calls (dg_reply) or decoded as plain text (completions), stop
 * strings applied to the content, and the result either streamed as SSE chunks (committed text per
 * canvas, opt-in draft events per step) or returned as one response body. No networking: the server
 * gives a sink (where the events go, whether the client is still there).
 */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>

#include "openai.h"

typedef struct {
    const oa_runner *r;
    const oa_request *rq;
    const oa_meta *m;
    const oa_sink *sink;
    oa_usage *u;
    int index;
    dg_reply *reply;        /* chat */
    dg_detok_stream *ds;    /* completion */
    oa_stopper stop;
    dg_strbuf content, reasoning;      /* the whole reply */
    dg_strbuf delta_c, delta_r;        /* what the current canvas added */
    json_t *calls;                  /* the tool calls so far */
    int client_gone, oom;
} choice_run;

static void emit(const oa_sink *sink, json_t *chunk, int draft) {
    size_t len;
    char *s = oa_sse(chunk, &len);
    if (s && sink->emit) sink->emit(sink->user, s, len, draft);
    free(s);
}

static void flush_deltas(choice_run *c);

/* a complete tool call from the splitter: an id unique to this response, the "index" streaming
 * clients assemble calls by, and in a stream its own chunk (after the text that came before it) */
static void tool_call(choice_run *c, const char *text, size_t len) {
    json_t *call = json_loadb(text, len, 0, NULL);
    if (!json_is_object(call) || (!c->calls && !(c->calls = json_array()))) { json_decref(call); c->oom |= !call; return; }
    size_t k = json_array_size(c->calls);
    char id[80];
    snprintf(id, sizeof(id), "call_%s_%zu", strchr(c->m->id, '-') ? strchr(c->m->id, '-') + 1 : c->m->id, k);
    json_object_set_new(call, "id", json_string(id));
    json_object_set_new(call, "index", json_integer((json_int_t)k));
    json_array_append_new(c->calls, call);
    if (c->rq->stream) {
        flush_deltas(c);
        emit(c->sink, oa_chunk(c->m, c->index, json_pack("{s:[O]}", "tool_calls", call), NULL, 0, NULL), 0);
    }
}

/* the content goes through the stop strings; reasoning is kept as it is */
static void reply_part(void *user, dg_reply_part part, const char *text, size_t len) {
    choice_run *c = user;
    int rc = 0;
    if (part == DG_REPLY_CONTENT) rc = oa_stop_push(&c->stop, c->rq->stops, c->rq->n_stops, text, len, &c->delta_c);
    else if (part == DG_REPLY_REASONING) rc = dg_strbuf_add(&c->delta_r, text, len);
    else if (!c->stop.stopped) tool_call(c, text, len);   /* nothing after a stop string */
    if (rc) c->oom = 1;
}

/* send (streaming) and keep what the canvas added */
static void flush_deltas(choice_run *c) {
    if (!c->delta_c.n && !c->delta_r.n) return;
    if (c->rq->stream) {
        json_t *chunk;
        if (c->m->kind == OA_CHAT) {
            json_t *d = json_object();
            if (c->delta_r.n) json_object_set_new(d, "reasoning_content", oa_jstr(c->delta_r.p, c->delta_r.n));
            if (c->delta_c.n) json_object_set_new(d, "content", oa_jstr(c->delta_c.p, c->delta_c.n));
            chunk = oa_chunk(c->m, c->index, d, NULL, 0, NULL);
        } else {
            chunk = oa_chunk(c->m, c->index, NULL, c->delta_c.p, c->delta_c.n, NULL);
        }
        emit(c->sink, chunk, 0);
    }
    if (dg_strbuf_add(&c->content, c->delta_c.p ? c->delta_c.p : "", c->delta_c.n) ||
        dg_strbuf_add(&c->reasoning, c->delta_r.p ? c->delta_r.p : "", c->delta_r.n))
        c->oom = 1;
    c->delta_c.n = c->delta_r.n = 0;
}

static int gone(choice_run *c) {
    if (!c->client_gone && c->sink->cancelled && c->sink->cancelled(c->sink->user)) c->client_gone = 1;
    return c->client_gone;
}

static int on_step(void *user, const dg_step_event *ev) {
    choice_run *c = user;
    if (gone(c)) return 1;
    if (c->rq->stream && c->rq->include_drafts)
        emit(c->sink, oa_draft_chunk(c->m, c->index, ev, c->rq->gen.max_denoising_steps, c->r->tok), 1);
    return 0;
}

static int on_canvas(void *user, const dg_canvas_event *ev) {
    choice_run *c = user;
    oa_usage *u = c->u;
    if (u->n_spc == u->cap_spc) {
        int cap = u->cap_spc ? 2 * u->cap_spc : 16;
        int *p = realloc(u->steps_per_canvas, sizeof(int) * (size_t)cap);
        if (!p) { c->oom = 1; return 1; }
        u->steps_per_canvas = p;
        u->cap_spc = cap;
    }
    u->steps_per_canvas[u->n_spc++] = ev->steps;
    if (c->reply) {
        char err[256];
        if (dg_reply_push(c->reply, ev->tokens, ev->n, reply_part, c, err, sizeof(err))) c->oom = 1;
    } else {
        for (int i = 0; i < ev->n; i++) {
            size_t len;
            const char *t = dg_detok_stream_push(c->ds, ev->tokens[i], &len);
            if (!t) { c->oom = 1; break; }
            reply_part(c, DG_REPLY_CONTENT, t, len);
        }
    }
    flush_deltas(c);
    /* a stop string ends generation like an EOS (the rest of the text is not wanted) */
    return c->stop.stopped || c->oom || gone(c);
}

static void choice_free(choice_run *c) {
    json_decref(c->calls);
    dg_reply_free(c->reply);
    dg_detok_stream_free(c->ds);
    oa_stop_free(&c->stop);
    oa_strbuf_free(&c->content);
    oa_strbuf_free(&c->reasoning);
    oa_strbuf_free(&c->delta_c);
    oa_strbuf_free(&c->delta_r);
}

/* one choice; its response object goes to *choice (non-streaming). 0, 1 (client gone) or -1 */
static int run_choice(const oa_runner *r, const oa_request *rq, const oa_meta *m, const oa_sink *sink, int index,
                      oa_usage *u, json_t **choice, oa_error *er) {
    choice_run c;
    memset(&c, 0, sizeof(c));
    c.r = r; c.rq = rq; c.m = m; c.sink = sink; c.u = u; c.index = index;
    const oa_prompt *q = &rq->prompts[index];
    int rc = -1;
    int32_t *out = malloc(sizeof(int32_t) * (size_t)rq->gen.max_new_tokens);
    if (m->kind == OA_CHAT) c.reply = dg_reply_new(r->tok, rq->reply_thinking);
    else c.ds = dg_detok_stream_new(r->tok, 1);
    if (!out || (!c.reply && !c.ds)) { oa_fail(er, 500, NULL, NULL, "out of memory"); goto out; }
    if (rq->stream && m->kind == OA_CHAT)
        emit(sink, oa_chunk(m, index, json_pack("{s:s, s:s}", "role", "assistant", "content", ""), NULL, 0, NULL), 0);

    dg_gen_params gp = rq->gen;
    gp.seed = rq->seed;
    dg_session_reset(r->session);
    dg_callbacks cb = {on_step, on_canvas, &c};
    dg_gen_stats st;
    int n = 0;
    char err[1024];
    oa_generate_fn generate = r->generate ? r->generate : dg_generate;
    if (generate(r->session, q->ids, q->n, &gp, &cb, out, gp.max_new_tokens, &n, &st, err, sizeof(err))) {
        oa_fail(er, 500, NULL, "generation_failed", "%s", err);
        goto out;
    }
    if (c.client_gone) { rc = 1; goto out; }
    u->prompt_tokens += st.n_prompt;
    u->completion_tokens += n;
    u->canvases += st.n_canvases;
    u->steps += st.n_steps;
    u->ms_prompt += st.ms_prompt;
    if (index == 0) u->ms_first_canvas = st.ms_first_canvas;
    u->ms_total += st.ms_total;
    u->ms_steps += st.ms_per_step * st.n_steps;
    if (c.reply) {
        if (dg_reply_finish(c.reply, reply_part, &c, err, sizeof(err))) c.oom = 1;
    } else {
        size_t len;
        const char *t = dg_detok_stream_flush(c.ds, &len);
        if (t) reply_part(&c, DG_REPLY_CONTENT, t, len);
    }
    if (oa_stop_flush(&c.stop, &c.delta_c)) c.oom = 1;
    flush_deltas(&c);
    if (c.oom) { oa_fail(er, 500, NULL, NULL, "out of memory"); goto out; }
    json_t *calls = c.calls;
    const char *finish = calls ? "tool_calls" : c.stop.stopped || st.finish == DG_FINISH_EOS ? "stop" : "length";
    if (rq->stream) {
        emit(sink, oa_chunk(m, index, NULL, "", 0, finish), 0);
    } else if (m->kind == OA_CHAT) {
        json_t *msg = json_pack("{s:s, s:o, s:o}", "role", "assistant",
                                "content", calls && !c.content.n ? json_null() : oa_jstr(c.content.p ? c.content.p : "", c.content.n),
                                "reasoning_content", c.reasoning.n ? oa_jstr(c.reasoning.p, c.reasoning.n) : json_null());
        for (size_t i = 0; i < json_array_size(calls); i++) json_object_del(json_array_get(calls, i), "index");   /* stream only */
        if (msg && calls) json_object_set(msg, "tool_calls", calls);
        *choice = json_pack("{s:i, s:o, s:n, s:s}", "index", index, "message", msg, "logprobs", "finish_reason", finish);
    } else {
        *choice = json_pack("{s:i, s:o, s:n, s:s}", "index", index, "text", oa_jstr(c.content.p ? c.content.p : "", c.content.n),
                            "logprobs", "finish_reason", finish);
    }
    rc = 0;
out:
    free(out);
    choice_free(&c);
    return rc;
}

int oa_run(const oa_runner *r, const oa_request *rq, const oa_meta *m, const oa_sink *sink, char **body, size_t *body_len,
           oa_usage *u, oa_error *er) {
    if (body) *body = NULL;
    if (body_len) *body_len = 0;
    u->seed = rq->seed;
    const int C = dg_engine_info(r->engine)->canvas_length;
    json_t *choices = json_array();
    int rc = 0;
    for (int i = 0; i < rq->n_prompts && rc == 0; i++) {
        json_t *choice = NULL;
        rc = run_choice(r, rq, m, sink, i, u, &choice, er);
        if (choice) json_array_append_new(choices, choice);
    }
    if (rq->stream) {
        if (rc < 0) emit(sink, json_pack("{s:{s:s, s:s, s:n, s:s}}", "error", "message", er->message, "type", "server_error",
                                         "param", "code", er->code[0] ? er->code : "generation_failed"), 0);
        if (rc == 0 && rq->include_usage) {
            json_t *chunk = json_pack("{s:s, s:s, s:I, s:s, s:[], s:o}", "id", m->id, "object",
                                      m->kind == OA_CHAT ? "chat.completion.chunk" : "text_completion", "created", (json_int_t)m->created,
                                      "model", m->model, "choices", "usage", oa_usage_json(u, C));
            emit(sink, chunk, 0);
        }
        if (rc <= 0 && sink->emit) sink->emit(sink->user, "data: [DONE]\n\n", 14, 0);
    } else if (rc == 0) {
        json_t *resp = json_pack("{s:s, s:s, s:I, s:s, s:O, s:o}", "id", m->id, "object",
                                 m->kind == OA_CHAT ? "chat.completion" : "text_completion", "created", (json_int_t)m->created,
                                 "model", m->model, "choices", choices, "usage", oa_usage_json(u, C));
        char *s = resp ? json_dumps(resp, OA_JSON_FLAGS) : NULL;
        json_decref(resp);
        if (!s) rc = oa_fail(er, 500, NULL, NULL, "out of memory");
        else {
            *body = s;
            if (body_len) *body_len = strlen(s);
        }
    }
    json_decref(choices);
    return rc;
}
