/*
 * server.h - `dgemma serve`: an OpenAI-compatible HTTP server (libmicrohttpd) around one engine and
 * one session. See server/server.c for the threads, the queue and cancellation.
 */
#ifndef DG_SERVER_H
#define DG_SERVER_H

#include <stddef.h>

#include "dgemma.h"

typedef struct {
    const char *model;          /* checkpoint path (directory or .gguf) */
    const char *alias;          /* the model id in the API; NULL: from the path */
    const char *host;           /* address to listen on (default 127.0.0.1) */
    int port;                   /* 0: any free port (printed at start) */
    const char *api_key;        /* NULL: no authentication */
    int queue;                  /* requests waiting at most (beyond the one running); more: 503 */
    int max_tokens_limit;       /* max_tokens above this: 422; also the default's cap */
    int n_ctx;                  /* KV cache capacity: prompt + committed canvases */
    size_t max_body;            /* request bodies above this: 413 */
    int max_connections;
    int idle_timeout_s;         /* a silent connection is closed after this (not while it waits for us) */
    dg_engine_params ep;
    dg_session_params sp;
} dg_server_opts;

void dg_server_default_opts(dg_server_opts *o);
/* Load the model, listen, serve until SIGINT / SIGTERM. Returns the process exit status. */
int dg_serve(const dg_server_opts *o);

/* the web page served at / (server/index.html, compiled in) */
const char *dg_webui_html(size_t *len);

#endif
