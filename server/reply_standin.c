/*
 * reply_standin.c - a minimal private stand-in for the reply splitter (dg_reply_*, include/dgemma.h)
 * while its implementation (src/tokenizer/reply.c) is not merged: the whole reply is content (special
 * tokens dropped), no reasoning, no tool calls. The Makefile links it only when
 * src/tokenizer/reply.c does not exist; delete it once that lands.
 */
#include <stdlib.h>
#include <string.h>

#include "dgemma.h"

struct dg_reply {
    dg_detok_stream *ds;
    char *content;
    size_t n, cap;
};

dg_reply *dg_reply_new(const dg_tokenizer *tok, int thinking) {
    (void)thinking;
    dg_reply *r = calloc(1, sizeof(*r));
    if (!r || !(r->ds = dg_detok_stream_new(tok, 1)) || !(r->content = calloc(1, r->cap = 64))) {
        if (r) dg_detok_stream_free(r->ds);
        free(r);
        return NULL;
    }
    return r;
}

void dg_reply_free(dg_reply *r) {
    if (!r) return;
    dg_detok_stream_free(r->ds);
    free(r->content);
    free(r);
}

static int keep(dg_reply *r, const char *t, size_t len, dg_reply_fn fn, void *user) {
    if (!len) return 0;
    if (r->n + len + 1 > r->cap) {
        size_t cap = r->cap;
        while (cap < r->n + len + 1) cap *= 2;
        char *p = realloc(r->content, cap);
        if (!p) return -1;
        r->content = p;
        r->cap = cap;
    }
    memcpy(r->content + r->n, t, len);
    r->content[r->n += len] = 0;
    if (fn) fn(user, DG_REPLY_CONTENT, t, len);
    return 0;
}

int dg_reply_push(dg_reply *r, const int32_t *ids, int n, dg_reply_fn fn, void *user, char *err, size_t errlen) {
    for (int i = 0; i < n; i++) {
        size_t len;
        const char *t = dg_detok_stream_push(r->ds, ids[i], &len);
        if (!t || keep(r, t, len, fn, user)) {
            if (err && errlen) strncpy(err, "reply: out of memory or id outside the vocabulary", errlen - 1), err[errlen - 1] = 0;
            return -1;
        }
    }
    return 0;
}

int dg_reply_finish(dg_reply *r, dg_reply_fn fn, void *user, char *err, size_t errlen) {
    size_t len;
    const char *t = dg_detok_stream_flush(r->ds, &len);
    if (t && keep(r, t, len, fn, user)) {
        if (err && errlen) strncpy(err, "reply: out of memory", errlen - 1), err[errlen - 1] = 0;
        return -1;
    }
    return 0;
}

const char *dg_reply_tool_calls_json(const dg_reply *r) { (void)r; return "[]"; }
const char *dg_reply_content(const dg_reply *r) { return r->content; }
const char *dg_reply_reasoning(const dg_reply *r) { (void)r; return ""; }
