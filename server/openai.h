/*
 * openai.h - the OpenAI API shapes of `dgemma serve`, without any networking: request bodies parsed
 * into generation parameters and prompts, errors as {"error": {...}} bodies, response and stream-chunk
 * JSON, stop strings, and the run of one request on a session (server/generate.c) that feeds a sink.
 * Everything here is testable without a socket (tests/test_server.c).
 */
#ifndef DG_SERVER_OPENAI_H
#define DG_SERVER_OPENAI_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "dgemma.h"
#include "tokenizer/tokenizer.h"

/* ===== errors ===== */

/* An API error: the HTTP status and the OpenAI error object. 400: the request cannot be read (bad JSON,
 * a field of the wrong type, a missing field, an unsupported feature, a prompt too long for the
 * context); 422: well-formed but a value is out of range (diffusion settings, max_tokens). */
typedef struct {
    int status;
    const char *type;      /* "invalid_request_error", "server_error" */
    char code[48];         /* "" = null */
    char param[96];        /* "" = null */
    char message[768];
} oa_error;

/* Fills er; returns -1. param and code may be NULL. */
int oa_fail(oa_error *er, int status, const char *param, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* {"error": {"message", "type", "param", "code"}} (malloc'ed, NUL-terminated) */
char *oa_error_body(const oa_error *er, size_t *len);

/* ===== small helpers ===== */

/* text buffers are the tokenizer's dg_strbuf (dg_strbuf_add keeps them NUL-terminated) */
void oa_strbuf_free(dg_strbuf *b);

/* how responses are written: compact, statistics with 7 significant digits */
#define OA_JSON_FLAGS (JSON_COMPACT | JSON_REAL_PRECISION(7))

/* A JSON string of text that may hold invalid UTF-8 (each invalid byte becomes U+FFFD). */
json_t *oa_jstr(const char *s, size_t n);
/* "data: JSON\n\n" of obj (the reference is stolen); NULL when out of memory */
char *oa_sse(json_t *obj, size_t *len);

/* ===== requests ===== */

typedef enum { OA_CHAT = 0, OA_COMPLETION = 1 } oa_kind;

#define OA_MAX_STOPS 16
#define OA_MAX_PROMPTS 64

typedef struct {
    char *text;            /* a completion's string prompt (NULL for token arrays and chats) */
    int32_t *ids;          /* the prompt ids once prepared */
    int n;
} oa_prompt;

typedef struct {
    oa_kind kind;
    /* chat: what the template gets */
    char *messages_json;   /* normalized messages array */
    char *tools_json;      /* NULL: no tools */
    char *extra_json;      /* chat_template_kwargs without enable_thinking, or NULL */
    int enable_thinking;   /* -1 not given, 0, 1 */
    int reply_thinking;    /* for dg_reply_new: 1 thinking on, 2 the rendered prompt opens the thought */
    int add_generation_prompt;
    /* completion: one choice per prompt; chat: one prompt */
    oa_prompt *prompts;
    int n_prompts;
    int max_tokens;        /* 0 = not given (oa_fit_context fills in the default) */
    int has_seed;
    uint64_t seed;
    int stream, include_usage, include_drafts;
    char *stops[OA_MAX_STOPS];
    int n_stops;
    dg_gen_params gen;     /* the checkpoint's defaults with the request's diffusion settings */
} oa_request;

typedef struct {
    int max_tokens_limit;  /* max_tokens above this: 422 */
    int n_vocab;           /* prompt token ids must be below this */
} oa_limits;

/* Parse a /v1/chat/completions (OA_CHAT) or /v1/completions body. On error: -1, er filled (rq is then
 * empty: nothing to free). */
int oa_parse(oa_kind kind, const char *body, size_t len, const dg_engine *e, const oa_limits *lim,
             oa_request *rq, oa_error *er);
/* Render the chat through the template / tokenize string prompts (BOS first if add_bos and absent). */
int oa_prepare_prompts(oa_request *rq, const dg_chat_template *tpl, const dg_tokenizer *tok, int add_bos,
                       oa_error *er);
/* Check every prompt against the context (n_ctx tokens, canvases of C) and fill in max_tokens when not
 * given: the most the context allows, at most max_tokens_limit. */
int oa_fit_context(oa_request *rq, int n_ctx, int C, int max_tokens_limit, oa_error *er);
void oa_request_free(oa_request *rq);

/* ===== responses ===== */

typedef struct {
    oa_kind kind;
    const char *id;        /* "chatcmpl-..." / "cmpl-..." */
    const char *model;
    long long created;
} oa_meta;

/* The diffusion statistics of a request (all its choices). */
typedef struct {
    int prompt_tokens, completion_tokens;
    int canvases, steps;
    int *steps_per_canvas;
    int n_spc, cap_spc;
    double ms_prompt, ms_first_canvas, ms_total, ms_steps;
    uint64_t seed;
} oa_usage;

json_t *oa_usage_json(const oa_usage *u, int canvas_length);
void oa_usage_free(oa_usage *u);   /* steps_per_canvas; u is then empty */
/* A stream chunk for choice index: chat: delta (stolen, NULL = {}), completion: text (NULL = "");
 * finish NULL = null. */
json_t *oa_chunk(const oa_meta *m, int index, json_t *delta, const char *text, size_t text_len, const char *finish);
/* The opt-in draft event of one denoising step: a chunk with an empty delta / text and
 * "dgemma_draft": {index, canvas, step, max_steps, n, n_accepted, mean_entropy, temperature, stop,
 * text, tokens: [piece per position], accepted: [0/1 per position]}. */
json_t *oa_draft_chunk(const oa_meta *m, int index, const dg_step_event *ev, int max_steps, const dg_tokenizer *tok);

/* ===== stop strings =====
 * Text goes in as it is produced; what comes out never contains a stop string nor anything after it,
 * and text that could still become a stop string is held back until it cannot. */
typedef struct {
    dg_strbuf held;
    int stopped;           /* 1 once a stop string was seen (the rest is dropped) */
} oa_stopper;
/* Appends the text that is final to out. */
int oa_stop_push(oa_stopper *s, char *const *stops, int n_stops, const char *text, size_t len, dg_strbuf *out);
/* End of text: what was held back (no stop string followed) goes to out. */
int oa_stop_flush(oa_stopper *s, dg_strbuf *out);
void oa_stop_free(oa_stopper *s);

/* ===== running a request (server/generate.c) ===== */

typedef struct {
    /* one SSE event ("data: ...\n\n"); draft = 1 for dgemma_draft events, which may be dropped */
    void (*emit)(void *user, const char *data, size_t len, int draft);
    int (*cancelled)(void *user);   /* nonzero once the client is gone */
    void *user;
} oa_sink;

typedef int (*oa_generate_fn)(dg_session *session, const int32_t *prompt, int n_prompt, const dg_gen_params *params,
                              const dg_callbacks *cb, int32_t *out, int out_cap, int *n_out, dg_gen_stats *stats,
                              char *err, size_t errlen);

typedef struct {
    dg_session *session;
    const dg_engine *engine;
    const dg_tokenizer *tok;
    oa_generate_fn generate;   /* NULL: dg_generate (the tests script replies through here) */
} oa_runner;

/* Generate every choice of rq on the session (reset before each). Streaming: the chunks go to sink,
 * ending with "data: [DONE]". Otherwise *body is the response JSON. Returns 0 when done, 1 when the
 * client went away (generation cancelled), -1 on an engine failure (er: 500; in a stream an error
 * event has been sent). */
int oa_run(const oa_runner *r, const oa_request *rq, const oa_meta *m, const oa_sink *sink, char **body,
           size_t *body_len, oa_usage *usage, oa_error *er);

#endif
