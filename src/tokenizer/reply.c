/*
 * reply.c - a Gemma 4 reply split into thinking, answer and tool calls, as it streams in.
 *
 * The model's output is one token stream in which control tokens mark the parts:
 *
 *   <|channel>thought\n ... <channel|>         a thought channel (reasoning); "thought\n" is the
 *                                               channel's name, not part of the thought
 *   <|tool_call>call:NAME{ARGS}<tool_call|>     a tool call; strings in ARGS between <|"|> quotes
 *   anything else                               the answer (content)
 *
 * The markers are recognised by token id (looked up by their strings, so any vocabulary works: one
 * without them, like Gemma 3's, gives content only), never by text: a user can write "<|channel>" in a
 * prompt, but only the model's control token opens a channel. Text goes through one streaming
 * detokenizer with special tokens skipped, so the content of a reply without markers is exactly
 * dg_detokenize(ids, skip_special = 1), and nothing is ever emitted as half a UTF-8 character.
 *
 * Malformed input degrades to content text, never to an error: a channel whose name is not "thought",
 * a tool call that does not parse or never closes, a stray closing marker (skipped like every special
 * token). A thought channel still open at the end stays reasoning (the model ran out of tokens while
 * thinking; its thoughts were already streamed as such).
 *
 * ARGS syntax (what the Gemma 4 template renders for a call's arguments):
 *   object  {key:value,...}   keys bare (the template's escape_keys=False) or <|"|>quoted<|"|>; empty {}
 *   array   [value,...]
 *   string  <|"|>text<|"|>    verbatim, no escapes
 *   scalar  anything else up to , } ]: true/false (True/False), null/None, a JSON number, else the
 *           bare text as a string (the template prints other values with Jinja's str())
 * The arguments become a JSON object string (OpenAI "arguments"); numbers keep the model's spelling.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "tokenizer/tokenizer.h"

/* ===== small growable buffers ===== */

static int rb_putc(dg_strbuf *b, char c) { return dg_strbuf_add(b, &c, 1); }

typedef struct {
    int32_t *v;
    int n, cap;
} rids;

static int ri_push(rids *a, int32_t id) {
    if (a->n == a->cap) {
        int cap = a->cap ? 2 * a->cap : 64;
        int32_t *q = realloc(a->v, sizeof(int32_t) * (size_t)cap);
        if (!q) return -1;
        a->v = q;
        a->cap = cap;
    }
    a->v[a->n++] = id;
    return 0;
}

/* ===== the splitter ===== */

typedef enum {
    ST_TEXT,      /* the answer */
    ST_NAME,      /* after <|channel>: the channel name up to its newline */
    ST_THOUGHT,   /* inside the thought channel */
    ST_CALL,      /* after <|tool_call>: collecting the call's ids */
} rstate;

/* a channel name longer than this is not a name: the "channel" degrades to content */
#define MAX_NAME 64
/* nesting of {} and [] in tool-call arguments (deeper is malformed, not a stack overflow) */
#define MAX_DEPTH 64
/* in the parser's text, the <|"|> token (0xFF never occurs in UTF-8 text) */
#define QUOTE_CH '\xff'

struct dg_reply {
    const dg_tokenizer *tok;
    int32_t ch_open, ch_close, tc_open, tc_close, quote;   /* -1 when the vocabulary lacks one */
    dg_detok_stream *ds;     /* the text of the reply, special tokens skipped */
    dg_detok_stream *cs;     /* a tool call's text, for the parser */
    rstate st;
    dg_strbuf name;          /* ST_NAME: the name so far */
    rids call;               /* ST_CALL: the call's ids so far */
    dg_strbuf content, reasoning;   /* everything emitted, by part */
    json_t *calls;           /* the parsed tool calls */
    char *calls_json;
    int finished;
    /* the current push's output */
    dg_reply_fn fn;
    void *user;
    int oom;
};

static int32_t marker(const dg_tokenizer *tok, const char *s) {
    int special = 0;
    int32_t id = dg_tokenizer_find(tok, s);
    /* only a control token is a marker (a vocabulary whose "<|channel>" is plain text has none) */
    if (id >= 0 && dg_tokenizer_piece(tok, id, &special) && special) return id;
    return -1;
}

dg_reply *dg_reply_new(const dg_tokenizer *tok, int thinking) {
    if (!tok) return NULL;
    dg_reply *r = calloc(1, sizeof(*r));
    if (!r) return NULL;
    r->tok = tok;
    r->ch_open = marker(tok, "<|channel>");
    r->ch_close = marker(tok, "<channel|>");
    r->tc_open = marker(tok, "<|tool_call>");
    r->tc_close = marker(tok, "<tool_call|>");
    r->quote = marker(tok, "<|\"|>");
    r->ds = dg_detok_stream_new(tok, 1);
    r->cs = dg_detok_stream_new(tok, 1);
    r->calls = json_array();
    /* 2: the prompt itself ended inside an open thought channel ("<|channel>thought\n") */
    r->st = thinking == 2 && r->ch_close >= 0 ? ST_THOUGHT : ST_TEXT;
    if (!r->ds || !r->cs || !r->calls || dg_strbuf_add(&r->content, "", 0) || dg_strbuf_add(&r->reasoning, "", 0)) {
        dg_reply_free(r);
        return NULL;
    }
    return r;
}

void dg_reply_free(dg_reply *r) {
    if (!r) return;
    dg_detok_stream_free(r->ds);
    dg_detok_stream_free(r->cs);
    free(r->name.p);
    free(r->call.v);
    free(r->content.p);
    free(r->reasoning.p);
    json_decref(r->calls);
    free(r->calls_json);
    free(r);
}

/* a delta of one part: kept, and shown to the callback */
static void emit(dg_reply *r, dg_reply_part part, const char *s, size_t n) {
    if (!n) return;
    dg_strbuf *acc = part == DG_REPLY_CONTENT ? &r->content : part == DG_REPLY_REASONING ? &r->reasoning : NULL;
    if (acc && dg_strbuf_add(acc, s, n)) { r->oom = 1; return; }
    if (r->fn) r->fn(r->user, part, s, n);
}

/* text that left the detokenizer, routed by the state */
static void route(dg_reply *r, const char *s, size_t n) {
    if (!n) return;
    if (r->st == ST_THOUGHT) { emit(r, DG_REPLY_REASONING, s, n); return; }
    if (r->st != ST_NAME) { emit(r, DG_REPLY_CONTENT, s, n); return; }
    if (dg_strbuf_add(&r->name, s, n)) { r->oom = 1; return; }
    const char *nl = memchr(r->name.p, '\n', r->name.n);
    if (!nl && r->name.n <= MAX_NAME) return;
    size_t len = nl ? (size_t)(nl - r->name.p) : 0;
    if (nl && len == 7 && !memcmp(r->name.p, "thought", 7)) {   /* the thought channel starts */
        r->st = ST_THOUGHT;
        emit(r, DG_REPLY_REASONING, nl + 1, r->name.n - len - 1);
    } else {   /* not a channel we know: its text is content */
        r->st = ST_TEXT;
        emit(r, DG_REPLY_CONTENT, r->name.p, r->name.n);
    }
    r->name.n = 0;
}

static void push_text(dg_reply *r, int32_t id) {
    size_t n;
    const char *s = dg_detok_stream_push(r->ds, id, &n);
    if (!s) { r->oom = 1; return; }
    route(r, s, n);
}

static void flush_text(dg_reply *r) {
    size_t n;
    const char *s = dg_detok_stream_flush(r->ds, &n);
    if (!s) { r->oom = 1; return; }
    route(r, s, n);
}

/* an open channel name that ends here (a marker, or the end of the reply) */
static void end_name(dg_reply *r, int closed) {
    flush_text(r);
    if (r->st != ST_NAME) return;
    /* "<|channel>thought<channel|>" is an empty thought; anything else was text */
    size_t n = r->name.n;
    while (n && (r->name.p[n - 1] == ' ' || r->name.p[n - 1] == '\n')) n--;
    int empty_thought = closed && ((n == 7 && !memcmp(r->name.p, "thought", 7)) || n == 0);
    r->st = ST_TEXT;
    if (!empty_thought) emit(r, DG_REPLY_CONTENT, r->name.p, r->name.n);
    r->name.n = 0;
}

/* ===== tool-call arguments: Gemma's syntax to JSON text ===== */

typedef struct {
    const char *s;
    size_t i, n;
    dg_strbuf *o;
    int bad;
} aparse;

static void ws(aparse *p) {
    while (p->i < p->n && (p->s[p->i] == ' ' || p->s[p->i] == '\n' || p->s[p->i] == '\t' || p->s[p->i] == '\r')) p->i++;
}

static int at(aparse *p, char c) { return p->i < p->n && p->s[p->i] == c; }

static void out(aparse *p, const char *s, size_t n) { if (dg_strbuf_add(p->o, s, n)) p->bad = 1; }

/* a JSON string literal of s[0, n) (valid UTF-8: it comes from the detokenizer) */
static void out_string(aparse *p, const char *s, size_t n) {
    out(p, "\"", 1);
    for (size_t k = 0; k < n; k++) {
        unsigned char c = (unsigned char)s[k];
        char esc[8];
        if (c == '"' || c == '\\') { esc[0] = '\\'; esc[1] = (char)c; out(p, esc, 2); }
        else if (c == '\n') out(p, "\\n", 2);
        else if (c == '\t') out(p, "\\t", 2);
        else if (c == '\r') out(p, "\\r", 2);
        else if (c < 0x20) { snprintf(esc, sizeof(esc), "\\u%04x", c); out(p, esc, 6); }
        else out(p, s + k, 1);
    }
    out(p, "\"", 1);
}

/* JSON's number grammar: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
static int json_number(const char *s, size_t n) {
    size_t i = 0;
    if (i < n && s[i] == '-') i++;
    if (i >= n || s[i] < '0' || s[i] > '9') return 0;
    if (s[i] == '0') i++;
    else while (i < n && s[i] >= '0' && s[i] <= '9') i++;
    if (i < n && s[i] == '.') {
        if (++i >= n || s[i] < '0' || s[i] > '9') return 0;
        while (i < n && s[i] >= '0' && s[i] <= '9') i++;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-')) i++;
        if (i >= n || s[i] < '0' || s[i] > '9') return 0;
        while (i < n && s[i] >= '0' && s[i] <= '9') i++;
    }
    return i == n;
}

static int word_is(const char *s, size_t n, const char *w) { return strlen(w) == n && !memcmp(s, w, n); }

static void value(aparse *p, int depth);

/* before every element of an object or array but the first: its comma. 0 when missing */
static int comma(aparse *p, int first) {
    if (first) return 1;
    if (!at(p, ',')) { p->bad = 1; return 0; }
    p->i++;
    out(p, ",", 1);
    ws(p);
    return 1;
}

/* <|"|>text<|"|>: the text as a JSON string */
static void quoted(aparse *p) {
    p->i++;
    const char *end = memchr(p->s + p->i, QUOTE_CH, p->n - p->i);
    if (!end) { p->bad = 1; return; }
    out_string(p, p->s + p->i, (size_t)(end - (p->s + p->i)));
    p->i = (size_t)(end - p->s) + 1;
}

/* {key:value,...} with the opening brace at p->i */
static void object(aparse *p, int depth) {
    p->i++;
    out(p, "{", 1);
    ws(p);
    for (int first = 1; !p->bad && !at(p, '}'); first = 0) {
        if (!comma(p, first)) return;
        if (at(p, QUOTE_CH)) quoted(p);
        else {   /* a bare key: up to the colon */
            size_t k0 = p->i;
            while (p->i < p->n && !strchr(":,{}[]", p->s[p->i]) && p->s[p->i] != QUOTE_CH) p->i++;
            size_t k1 = p->i;
            while (k1 > k0 && strchr(" \n\t\r", p->s[k1 - 1])) k1--;
            if (k1 == k0) { p->bad = 1; return; }
            out_string(p, p->s + k0, k1 - k0);
        }
        ws(p);
        if (p->bad || !at(p, ':')) { p->bad = 1; return; }
        p->i++;
        out(p, ":", 1);
        value(p, depth + 1);
        ws(p);
    }
    if (!p->bad) { p->i++; out(p, "}", 1); }
}

static void value(aparse *p, int depth) {
    ws(p);
    if (depth > MAX_DEPTH || p->i >= p->n) { p->bad = 1; return; }
    char c = p->s[p->i];
    if (c == QUOTE_CH) { quoted(p); return; }
    if (c == '{') { object(p, depth); return; }
    if (c == '[') {
        p->i++;
        out(p, "[", 1);
        ws(p);
        for (int first = 1; !p->bad && !at(p, ']'); first = 0) {
            if (!comma(p, first)) return;
            value(p, depth + 1);
            ws(p);
        }
        if (!p->bad) { p->i++; out(p, "]", 1); }
        return;
    }
    /* a bare scalar, up to the next delimiter */
    size_t v0 = p->i;
    while (p->i < p->n && !strchr(",}]{[", p->s[p->i]) && p->s[p->i] != QUOTE_CH) p->i++;
    size_t v1 = p->i;
    while (v1 > v0 && strchr(" \n\t\r", p->s[v1 - 1])) v1--;
    const char *s = p->s + v0;
    size_t n = v1 - v0;
    if (!n || at(p, '{') || at(p, '[') || at(p, QUOTE_CH)) { p->bad = 1; return; }
    if (word_is(s, n, "true") || word_is(s, n, "True")) out(p, "true", 4);
    else if (word_is(s, n, "false") || word_is(s, n, "False")) out(p, "false", 5);
    else if (word_is(s, n, "null") || word_is(s, n, "None")) out(p, "null", 4);
    else if (json_number(s, n)) out(p, s, n);
    else out_string(p, s, n);
}

/* "call:NAME{ARGS}" (quotes as QUOTE_CH) to a tool-call object, or NULL if malformed */
static json_t *parse_call(const char *s, size_t n, int index) {
    aparse p = {s, 0, n, NULL, 0};
    ws(&p);
    if (n - p.i < 5 || memcmp(s + p.i, "call:", 5)) return NULL;
    p.i += 5;
    size_t n0 = p.i;
    while (p.i < n && !strchr("{}[],:", s[p.i]) && s[p.i] != QUOTE_CH) p.i++;
    size_t n1 = p.i;
    while (n0 < n1 && strchr(" \n\t\r", s[n0])) n0++;
    while (n1 > n0 && strchr(" \n\t\r", s[n1 - 1])) n1--;
    if (n1 == n0 || !at(&p, '{')) return NULL;
    dg_strbuf args = {0};
    p.o = &args;
    object(&p, 0);
    ws(&p);
    json_t *call = NULL;
    if (!p.bad && p.i == n) {
        char id[32];
        snprintf(id, sizeof(id), "call_%d", index);
        call = json_pack("{s:s, s:s, s:{s:s%, s:s}}", "id", id, "type", "function", "function", "name", s + n0, n1 - n0,
                         "arguments", args.p);
    }
    free(args.p);
    return call;
}

/* the collected call: a tool call if it parses, else its text is content */
static void end_call(dg_reply *r, int closed) {
    dg_strbuf text = {0};
    size_t n;
    const char *s;
    for (int k = 0; k <= r->call.n && !r->oom; k++) {
        int32_t id = k < r->call.n ? r->call.v[k] : -1;
        if (id == r->quote || k == r->call.n) {   /* a quote ends the detokenizer's run */
            if (!(s = dg_detok_stream_flush(r->cs, &n)) || dg_strbuf_add(&text, s, n) || (id >= 0 && rb_putc(&text, QUOTE_CH))) r->oom = 1;
        } else if (!(s = dg_detok_stream_push(r->cs, id, &n)) || dg_strbuf_add(&text, s, n)) {
            r->oom = 1;
        }
    }
    json_t *call = closed && !r->oom && text.p ? parse_call(text.p, text.n, (int)json_array_size(r->calls)) : NULL;
    free(text.p);
    r->st = ST_TEXT;
    if (call) {
        char *js = json_dumps(call, JSON_COMPACT);
        if (!js || json_array_append_new(r->calls, call)) r->oom = 1;
        else emit(r, DG_REPLY_TOOL_CALL, js, strlen(js));
        free(js);
    } else {   /* malformed or unterminated: the text it decodes to, as content */
        for (int k = 0; k < r->call.n; k++) push_text(r, r->call.v[k]);
    }
    r->call.n = 0;
}

static void step(dg_reply *r, int32_t id) {
    switch (r->st) {
    case ST_TEXT:
        if (id == r->ch_open) { flush_text(r); r->st = ST_NAME; r->name.n = 0; }
        else if (id == r->tc_open) { flush_text(r); r->st = ST_CALL; r->call.n = 0; }
        else push_text(r, id);
        break;
    case ST_NAME:
        if (id == r->ch_close) {
            end_name(r, 1);
            if (r->st == ST_THOUGHT) r->st = ST_TEXT;   /* the flush completed the name: an empty thought */
        } else if (id == r->ch_open || id == r->tc_open) { end_name(r, 0); step(r, id); }
        else push_text(r, id);
        break;
    case ST_THOUGHT:
        if (id == r->ch_close) { flush_text(r); r->st = ST_TEXT; }
        else push_text(r, id);   /* other markers are skipped special tokens */
        break;
    case ST_CALL:
        if (id == r->tc_close) end_call(r, 1);
        else if (id == r->tc_open) { end_call(r, 0); step(r, id); }
        else if (ri_push(&r->call, id)) r->oom = 1;
        break;
    }
}

int dg_reply_push(dg_reply *r, const int32_t *ids, int n, dg_reply_fn fn, void *user, char *err, size_t errlen) {
    if (!r || r->finished) return dg_fail(err, errlen, "reply: %s", r ? "push after finish" : "no reply");
    if (n < 0 || (n > 0 && !ids)) return dg_fail(err, errlen, "reply: bad id array");
    const int nv = dg_tokenizer_n_vocab(r->tok);
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= nv)
            return dg_fail(err, errlen, "reply: id %d at index %d is outside the vocabulary [0, %d)", ids[i], i, nv);
    r->fn = fn;
    r->user = user;
    for (int i = 0; i < n && !r->oom; i++) step(r, ids[i]);
    r->fn = NULL;
    return r->oom ? dg_fail(err, errlen, "reply: out of memory") : 0;
}

int dg_reply_finish(dg_reply *r, dg_reply_fn fn, void *user, char *err, size_t errlen) {
    if (!r || r->finished) return dg_fail(err, errlen, "reply: %s", r ? "finished twice" : "no reply");
    r->fn = fn;
    r->user = user;
    if (r->st == ST_NAME) end_name(r, 0);
    else if (r->st == ST_CALL) end_call(r, 0);
    flush_text(r);
    r->fn = NULL;
    r->finished = 1;
    r->calls_json = json_dumps(r->calls, JSON_COMPACT);
    if (!r->calls_json) r->oom = 1;
    return r->oom ? dg_fail(err, errlen, "reply: out of memory") : 0;
}

const char *dg_reply_tool_calls_json(const dg_reply *r) { return r && r->calls_json ? r->calls_json : "[]"; }
const char *dg_reply_content(const dg_reply *r) { return r && r->content.p ? r->content.p : ""; }
const char *dg_reply_reasoning(const dg_reply *r) { return r && r->reasoning.p ? r->reasoning.p : ""; }
