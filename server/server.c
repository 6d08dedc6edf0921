/*
 * server.c - `dgemma serve`: the OpenAI-compatible HTTP server.
 *
 * Threads:
 *   - libmicrohttpd runs one thread per connection (MHD_USE_THREAD_PER_CONNECTION). It reads and
 *     checks the request (size, route, method, API key), parses the JSON, renders the chat template and
 *     tokenizes (the engine, tokenizer and template are immutable and shared), then enqueues a job.
 *   - One worker thread owns the session (KV cache, buffers) and runs the jobs one at a time, in order.
 *   - The main thread only waits for SIGINT / SIGTERM, then shuts everything down.
 *
 * Queue: at most opts.queue jobs wait behind the running one; one more is refused with 503 and a
 * Retry-After estimated from the mean job time.
 *
 * Streaming: the worker appends SSE events to the job's buffer; the connection thread's content reader
 * hands them to libmicrohttpd as they come (draft events are dropped when a slow client lets the
 * buffer grow, committed text never is).
 *
 * Cancellation: a job has a cancel flag that the step and canvas callbacks of dg_generate read, so a
 * generation stops at its next denoising step. It is set when the client goes away: the connection
 * thread, while it waits for output, checks the socket for a hang-up (poll + MSG_PEEK), and
 * libmicrohttpd's request-completed callback reports a failed write or an abort. A cancelled job that
 * is still queued is skipped.
 */
#define _GNU_SOURCE
#include "server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "openai.h"

#define DRAFT_BACKLOG (4u << 20)   /* unsent bytes above which draft events are dropped */

void dg_server_default_opts(dg_server_opts *o) {
    memset(o, 0, sizeof(*o));
    o->host = "127.0.0.1";
    o->port = 8080;
    o->queue = 16;
    o->max_tokens_limit = 8192;
    o->n_ctx = 8192;
    o->max_body = 8u << 20;
    o->max_connections = 256;
    o->idle_timeout_s = 300;
    o->ep = dg_engine_default_params();
    o->sp = dg_session_default_params();
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

/* ===== jobs ===== */

enum { JOB_QUEUED = 0, JOB_RUNNING = 1, JOB_DONE = 2 };

typedef struct server server;

typedef struct job {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs;                   /* the connection, the stream response, the worker */
    server *srv;
    oa_request rq;
    oa_meta meta;
    char id[48];
    int fd;                     /* the client's socket, for hang-up checks */
    struct MHD_Connection *con; /* its connection (used from that connection's thread only) */
    int timeout_off;
    atomic_int cancel;
    int state;
    /* output */
    dg_strbuf out;                 /* SSE bytes not yet handed to libmicrohttpd start at out_pos */
    size_t out_pos, sent;
    int drafts_dropped;
    char *body;                 /* the response (non-streaming) */
    size_t body_len;
    int rc;                     /* oa_run's result */
    oa_error er;
    oa_usage usage;
    struct job *next;
} job;

struct server {
    const dg_server_opts *o;
    dg_engine *engine;
    dg_session *session;
    dg_tokenizer *tok;
    dg_chat_template *tpl;
    char model_id[256];
    int add_bos, canvas;
    long long started;
    struct MHD_Daemon *mhd;
    pthread_t worker;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    job *head, *tail;
    int n_waiting, running;
    atomic_int stopping;
    double mean_job_ms;
    uint64_t rng;
};

static job *job_new(server *s, oa_request *rq, oa_kind kind, int fd) {
    job *j = calloc(1, sizeof(*j));
    if (!j) return NULL;
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cv, NULL);
    j->refs = 1;
    j->srv = s;
    j->rq = *rq;
    memset(rq, 0, sizeof(*rq));
    j->fd = fd;
    atomic_init(&j->cancel, 0);
    j->meta.kind = kind;
    j->meta.id = j->id;
    j->meta.model = s->model_id;
    j->meta.created = (long long)time(NULL);
    return j;
}

static void job_ref(job *j) {
    pthread_mutex_lock(&j->mu);
    j->refs++;
    pthread_mutex_unlock(&j->mu);
}

static void job_unref(job *j) {
    if (!j) return;
    pthread_mutex_lock(&j->mu);
    int last = --j->refs == 0;
    pthread_mutex_unlock(&j->mu);
    if (!last) return;
    oa_request_free(&j->rq);
    oa_strbuf_free(&j->out);
    free(j->body);
    oa_usage_free(&j->usage);
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->cv);
    free(j);
}

static void job_cancel(job *j) {
    atomic_store(&j->cancel, 1);
    pthread_mutex_lock(&j->mu);
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
}

/* the sink of oa_run: SSE events into the job's buffer */
static void sink_emit(void *user, const char *data, size_t len, int draft) {
    job *j = user;
    pthread_mutex_lock(&j->mu);
    if (draft && j->out.n - j->out_pos > DRAFT_BACKLOG) j->drafts_dropped++;
    else if (dg_strbuf_add(&j->out, data, len)) atomic_store(&j->cancel, 1);   /* out of memory: give up */
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
}

static int sink_cancelled(void *user) {
    job *j = user;
    return atomic_load(&j->cancel) || atomic_load(&j->srv->stopping);
}

/* 1 when the peer closed the connection (or it failed); pending request bytes (pipelining) are not */
static int client_gone(int fd) {
    if (fd < 0) return 0;
    struct pollfd p = {fd, POLLIN | POLLRDHUP, 0};
    if (poll(&p, 1, 0) <= 0) return 0;
    if (p.revents & (POLLERR | POLLHUP | POLLNVAL)) return 1;
    char c;
    ssize_t r = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

/* wait (j->mu held) for a change; 1 if the client went away meanwhile (the job is then cancelled) */
static int wait_or_gone(job *j) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 100 * 1000 * 1000;
    if (ts.tv_nsec >= 1000000000L) { ts.tv_sec++; ts.tv_nsec -= 1000000000L; }
    if (pthread_cond_timedwait(&j->cv, &j->mu, &ts) == ETIMEDOUT && client_gone(j->fd)) {
        atomic_store(&j->cancel, 1);
        return 1;
    }
    return 0;
}

/* libmicrohttpd closes a connection idle for --timeout seconds, counting the time its thread spends in
 * our callbacks: the timeout is off while a request waits for the worker (the queue and a long
 * generation can take minutes) and back on, with its timer reset, once there is something to send */
static void waiting(job *j, int on) {
    if (j->timeout_off == on) return;
    j->timeout_off = on;
    MHD_set_connection_option(j->con, MHD_CONNECTION_OPTION_TIMEOUT, on ? 0u : (unsigned)j->srv->o->idle_timeout_s);
}

/* ===== the queue and the worker ===== */

static uint64_t next_random(server *s) {   /* splitmix64 (s->mu held) */
    uint64_t z = (s->rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* 0 queued; -1 full (retry_s: a wait estimate; *waiting: the queue's length) or stopping */
static int enqueue(server *s, job *j, int *retry_s, int *waiting) {
    pthread_mutex_lock(&s->mu);
    if (s->stopping || s->n_waiting + s->running > s->o->queue) {   /* (running is set when a job is popped) */
        double est = (s->n_waiting + 1) * (s->mean_job_ms > 0 ? s->mean_job_ms : 1000.0) / 1000.0;
        *retry_s = est < 1 ? 1 : est > 600 ? 600 : (int)est;
        *waiting = s->n_waiting;
        pthread_mutex_unlock(&s->mu);
        return -1;
    }
    snprintf(j->id, sizeof(j->id), "%s%016llx", j->meta.kind == OA_CHAT ? "chatcmpl-" : "cmpl-", (unsigned long long)next_random(s));
    if (!j->rq.has_seed) j->rq.seed = next_random(s) >> 11;   /* < 2^53: exact in a JavaScript number */
    j->refs++;   /* the worker's */
    if (s->tail) s->tail->next = j;
    else s->head = j;
    s->tail = j;
    s->n_waiting++;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return 0;
}

static void *worker_main(void *arg) {
    server *s = arg;
    oa_runner r = {s->session, s->engine, s->tok, NULL};
    for (;;) {
        pthread_mutex_lock(&s->mu);
        while (!s->head && !s->stopping) pthread_cond_wait(&s->cv, &s->mu);
        job *j = s->head;
        if (!j) { pthread_mutex_unlock(&s->mu); break; }
        s->head = j->next;
        if (!s->head) s->tail = NULL;
        s->n_waiting--;
        s->running = 1;
        int stopping = s->stopping;
        pthread_mutex_unlock(&s->mu);

        pthread_mutex_lock(&j->mu);
        j->state = JOB_RUNNING;
        pthread_mutex_unlock(&j->mu);
        double t0 = now_ms();
        char *body = NULL;
        size_t blen = 0;
        oa_error er = {0};
        int rc;
        if (atomic_load(&j->cancel)) rc = 1;
        else if (stopping) rc = oa_fail(&er, 503, NULL, "server_shutting_down", "the server is shutting down");
        else {
            oa_sink sink = {sink_emit, sink_cancelled, j};
            rc = oa_run(&r, &j->rq, &j->meta, &sink, &body, &blen, &j->usage, &er);
        }
        pthread_mutex_lock(&j->mu);
        j->rc = rc;
        j->er = er;
        j->body = body;
        j->body_len = blen;
        j->state = JOB_DONE;
        pthread_cond_broadcast(&j->cv);
        pthread_mutex_unlock(&j->mu);

        pthread_mutex_lock(&s->mu);
        s->running = 0;
        double ms = now_ms() - t0;
        if (rc == 0) s->mean_job_ms = s->mean_job_ms > 0 ? 0.8 * s->mean_job_ms + 0.2 * ms : ms;
        pthread_mutex_unlock(&s->mu);
        job_unref(j);
    }
    return NULL;
}

/* ===== HTTP ===== */

enum { R_NONE, R_INDEX, R_HEALTH, R_MODELS, R_MODEL, R_CHAT, R_COMPLETIONS };

typedef struct {
    int route;
    double t0;
    char method[16], path[160], addr[64];
    dg_strbuf body;
    size_t received;
    oa_error er;                /* status != 0: answer with this error once the body is read */
    int status;
    size_t bytes;
    job *job;                   /* a generation request */
} conn_ctx;

static int route_of(const char *url, const char **allow) {
    *allow = "GET, HEAD";
    if (!strcmp(url, "/") || !strcmp(url, "/index.html")) return R_INDEX;
    if (!strcmp(url, "/health")) return R_HEALTH;
    if (!strcmp(url, "/v1/models")) return R_MODELS;
    if (!strncmp(url, "/v1/models/", 11) && url[11]) return R_MODEL;
    *allow = "POST";
    if (!strcmp(url, "/v1/chat/completions")) return R_CHAT;
    if (!strcmp(url, "/v1/completions")) return R_COMPLETIONS;
    *allow = NULL;
    return R_NONE;
}

static void add_common_headers(struct MHD_Response *r) {
    MHD_add_response_header(r, "Access-Control-Allow-Origin", "*");
    MHD_add_response_header(r, "Access-Control-Allow-Headers", "Authorization, Content-Type");
    MHD_add_response_header(r, "Access-Control-Allow-Methods", "GET, POST, OPTIONS");
}

static enum MHD_Result send_bytes(struct MHD_Connection *con, conn_ctx *c, int status, const char *ctype, const char *data,
                                  size_t len, const char *hname, const char *hvalue) {
    struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)data, MHD_RESPMEM_MUST_COPY);
    if (!r) return MHD_NO;
    if (ctype) MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    if (hname) MHD_add_response_header(r, hname, hvalue);
    add_common_headers(r);
    enum MHD_Result ret = MHD_queue_response(con, (unsigned)status, r);
    MHD_destroy_response(r);
    c->status = status;
    c->bytes = len;
    return ret;
}

static enum MHD_Result send_json(struct MHD_Connection *con, conn_ctx *c, int status, json_t *obj) {
    char *s = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
    json_decref(obj);
    if (!s) return MHD_NO;
    enum MHD_Result ret = send_bytes(con, c, status, "application/json", s, strlen(s), NULL, NULL);
    free(s);
    return ret;
}

static enum MHD_Result send_error(struct MHD_Connection *con, conn_ctx *c, const oa_error *er, const char *hname,
                                  const char *hvalue) {
    size_t len;
    char *s = oa_error_body(er, &len);
    if (!s) return MHD_NO;
    enum MHD_Result ret = send_bytes(con, c, er->status, "application/json", s, len, hname, hvalue);
    free(s);
    return ret;
}

/* the stream of a job: blocks (this is the connection's own thread) until events or the end come */
static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    job *j = cls;
    pthread_mutex_lock(&j->mu);
    for (;;) {
        if (j->out_pos < j->out.n) {
            size_t n = j->out.n - j->out_pos;
            if (n > max) n = max;
            memcpy(buf, j->out.p + j->out_pos, n);
            j->out_pos += n;
            j->sent += n;
            if (j->out_pos == j->out.n) j->out_pos = j->out.n = 0;
            waiting(j, 0);
            pthread_mutex_unlock(&j->mu);
            return (ssize_t)n;
        }
        if (j->state == JOB_DONE) {
            pthread_mutex_unlock(&j->mu);
            return MHD_CONTENT_READER_END_OF_STREAM;
        }
        waiting(j, 1);
        if (wait_or_gone(j)) {
            pthread_mutex_unlock(&j->mu);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
    }
}

static void stream_free(void *cls) { job_unref(cls); }

static enum MHD_Result handle_generate(server *s, struct MHD_Connection *con, conn_ctx *c, oa_kind kind) {
    oa_request rq;
    oa_error er;
    oa_limits lim = {s->o->max_tokens_limit, dg_tokenizer_n_vocab(s->tok)};
    if (oa_parse(kind, c->body.p ? c->body.p : "", c->body.n, s->engine, &lim, &rq, &er)) return send_error(con, c, &er, NULL, NULL);
    if (oa_prepare_prompts(&rq, s->tpl, s->tok, s->add_bos, &er) || oa_fit_context(&rq, s->o->n_ctx, s->canvas, s->o->max_tokens_limit, &er)) {
        oa_request_free(&rq);
        return send_error(con, c, &er, NULL, NULL);
    }
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(con, MHD_CONNECTION_INFO_CONNECTION_FD);
    job *j = job_new(s, &rq, kind, ci ? ci->connect_fd : -1);
    if (!j) {
        oa_request_free(&rq);
        oa_fail(&er, 500, NULL, NULL, "out of memory");
        return send_error(con, c, &er, NULL, NULL);
    }
    j->con = con;
    int retry, n_waiting;
    if (enqueue(s, j, &retry, &n_waiting)) {
        job_unref(j);
        char ra[16];
        snprintf(ra, sizeof(ra), "%d", retry);
        oa_fail(&er, 503, NULL, "server_busy", "the server is busy: one request generating, %d waiting (--queue %d); retry in "
                "about %d s", n_waiting, s->o->queue, retry);
        return send_error(con, c, &er, "Retry-After", ra);
    }
    c->job = j;
    if (j->rq.stream) {
        job_ref(j);   /* the response's */
        struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 32 * 1024, stream_reader, j, stream_free);
        if (!r) { job_unref(j); job_cancel(j); return MHD_NO; }
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
        MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
        MHD_add_response_header(r, "X-Accel-Buffering", "no");
        add_common_headers(r);
        enum MHD_Result ret = MHD_queue_response(con, MHD_HTTP_OK, r);
        MHD_destroy_response(r);
        c->status = 200;
        return ret;
    }
    pthread_mutex_lock(&j->mu);
    waiting(j, 1);
    while (j->state != JOB_DONE)
        if (wait_or_gone(j)) { pthread_mutex_unlock(&j->mu); return MHD_NO; }   /* nobody to answer */
    waiting(j, 0);
    pthread_mutex_unlock(&j->mu);
    if (j->rc == 1) {
        oa_fail(&er, 503, NULL, "server_shutting_down", "the request was cancelled: the server is shutting down");
        return send_error(con, c, &er, NULL, NULL);
    }
    if (j->rc) return send_error(con, c, &j->er, NULL, NULL);
    return send_bytes(con, c, 200, "application/json", j->body, j->body_len, NULL, NULL);
}

static json_t *model_json(const server *s) {
    return json_pack("{s:s, s:s, s:I, s:s, s:i, s:i}", "id", s->model_id, "object", "model", "created", (json_int_t)s->started,
                     "owned_by", "dgemma", "max_model_len", s->o->n_ctx, "canvas_length", s->canvas);
}

static enum MHD_Result respond(server *s, struct MHD_Connection *con, conn_ctx *c, const char *url) {
    oa_error er;
    if (c->er.status) {
        const char *allow = NULL;
        route_of(url, &allow);
        int st = c->er.status;
        return send_error(con, c, &c->er, st == 401 ? "WWW-Authenticate" : st == 405 ? "Allow" : NULL,
                          st == 401 ? "Bearer" : st == 405 ? allow : NULL);
    }
    if (!strcmp(c->method, "OPTIONS")) return send_bytes(con, c, 204, NULL, "", 0, NULL, NULL);
    switch (c->route) {
    case R_INDEX: {
        size_t len;
        const char *html = dg_webui_html(&len);
        return send_bytes(con, c, 200, "text/html; charset=utf-8", html, len, NULL, NULL);
    }
    case R_HEALTH: {
        pthread_mutex_lock(&s->mu);
        json_t *h = json_pack("{s:s, s:s, s:{s:i, s:i, s:i}}", "status", "ok", "model", s->model_id, "queue", "waiting", s->n_waiting,
                              "running", s->running, "capacity", s->o->queue);
        pthread_mutex_unlock(&s->mu);
        return send_json(con, c, 200, h);
    }
    case R_MODELS:
        return send_json(con, c, 200, json_pack("{s:s, s:[o]}", "object", "list", "data", model_json(s)));
    case R_MODEL:
        if (!strcmp(url + 11, s->model_id)) return send_json(con, c, 200, model_json(s));
        oa_fail(&er, 404, "model", "model_not_found", "the model '%s' does not exist (this server has '%s')", url + 11, s->model_id);
        return send_error(con, c, &er, NULL, NULL);
    case R_CHAT:
        return handle_generate(s, con, c, OA_CHAT);
    case R_COMPLETIONS:
        return handle_generate(s, con, c, OA_COMPLETION);
    }
    return MHD_NO;
}

/* the API key in constant time */
static int key_ok(const char *want, const char *auth) {
    if (!auth || strncmp(auth, "Bearer ", 7)) return 0;
    const char *got = auth + 7;
    size_t n = strlen(want), m = strlen(got);
    unsigned char d = n != m;
    for (size_t i = 0; i < n; i++) d |= (unsigned char)(want[i] ^ got[i < m ? i : 0]);
    return d == 0;
}

/* the first call of a request: route, method, key and declared size are checked before the body */
static void first_checks(server *s, struct MHD_Connection *con, conn_ctx *c, const char *url) {
    const char *allow;
    c->route = route_of(url, &allow);
    int is_get = !strcmp(c->method, "GET") || !strcmp(c->method, "HEAD");
    if (!strcmp(c->method, "OPTIONS")) return;
    if (c->route == R_NONE) { oa_fail(&c->er, 404, NULL, "not_found", "no route %s %s (see /v1/models, /v1/chat/completions, /v1/completions)", c->method, url); return; }
    int post_route = !strcmp(allow, "POST");
    if (post_route ? strcmp(c->method, "POST") != 0 : !is_get) {
        oa_fail(&c->er, 405, NULL, "method_not_allowed", "%s is not allowed on %s (allowed: %s)", c->method, url, allow);
        return;
    }
    if (s->o->api_key && c->route != R_HEALTH && c->route != R_INDEX &&
        !key_ok(s->o->api_key, MHD_lookup_connection_value(con, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION))) {
        oa_fail(&c->er, 401, NULL, "invalid_api_key", "a valid API key is required (Authorization: Bearer KEY)");
        return;
    }
    const char *cl = MHD_lookup_connection_value(con, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl && strtoull(cl, NULL, 10) > s->o->max_body)
        oa_fail(&c->er, 413, NULL, "request_too_large", "the request body (%s bytes) is larger than this server's limit of %zu bytes",
                cl, s->o->max_body);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *con, const char *url, const char *method, const char *version,
                                  const char *upload, size_t *upload_size, void **con_cls) {
    (void)version;
    server *s = cls;
    conn_ctx *c = *con_cls;
    if (!c) {
        if (!(c = calloc(1, sizeof(*c)))) return MHD_NO;
        *con_cls = c;
        c->t0 = now_ms();
        snprintf(c->method, sizeof(c->method), "%s", method);
        snprintf(c->path, sizeof(c->path), "%s", url);
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(con, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        const struct sockaddr *sa = ci ? ci->client_addr : NULL;
        if (sa && sa->sa_family == AF_INET) inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, c->addr, sizeof(c->addr));
        else if (sa && sa->sa_family == AF_INET6) inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, c->addr, sizeof(c->addr));
        else snprintf(c->addr, sizeof(c->addr), "-");
        first_checks(s, con, c, url);
        /* far beyond the limit: answer at once rather than read it all (the connection is then closed) */
        const char *cl = MHD_lookup_connection_value(con, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (c->er.status == 413 && cl && strtoull(cl, NULL, 10) > 4 * s->o->max_body + (64u << 20))
            return send_error(con, c, &c->er, "Connection", "close");
        return MHD_YES;
    }
    if (*upload_size) {
        size_t n = *upload_size;
        *upload_size = 0;
        c->received += n;
        if (c->er.status) {   /* read and dropped, so that the client gets the error after its upload */
            if (c->received > 4 * s->o->max_body + (64u << 20)) return MHD_NO;
            return MHD_YES;
        }
        if (c->received > s->o->max_body) {
            oa_fail(&c->er, 413, NULL, "request_too_large", "the request body is larger than this server's limit of %zu bytes", s->o->max_body);
            oa_strbuf_free(&c->body);
            return MHD_YES;
        }
        if (dg_strbuf_add(&c->body, upload, n)) { oa_fail(&c->er, 500, NULL, NULL, "out of memory"); oa_strbuf_free(&c->body); }
        return MHD_YES;
    }
    return respond(s, con, c, url);
}

static void on_completed(void *cls, struct MHD_Connection *con, void **con_cls, enum MHD_RequestTerminationCode toe) {
    (void)cls; (void)con;
    conn_ctx *c = *con_cls;
    if (!c) return;
    *con_cls = NULL;
    char stats[160] = "";
    size_t bytes = c->bytes;
    int gone = toe != MHD_REQUEST_TERMINATED_COMPLETED_OK;
    if (c->job) {
        job *j = c->job;
        pthread_mutex_lock(&j->mu);
        int done = j->state == JOB_DONE;
        if (j->rq.stream) bytes = j->sent;
        const oa_usage *u = &j->usage;
        if (done && j->rc == 0)
            snprintf(stats, sizeof(stats), " [%s: %d+%d tokens, %d canvases, %d steps, %.1f ms/step%s]", j->id, u->prompt_tokens,
                     u->completion_tokens, u->canvases, u->steps, u->steps ? u->ms_steps / u->steps : 0.0,
                     j->drafts_dropped ? ", drafts dropped" : "");
        else if (j->rc == 1 || !done)
            snprintf(stats, sizeof(stats), " [%s: cancelled]", j->id);
        pthread_mutex_unlock(&j->mu);
        if (!done || gone) job_cancel(j);
        job_unref(j);
    }
    char when[32];
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
    fprintf(stderr, "%s %s %s %s %d %zu %.1fms%s%s\n", when, c->addr, c->method, c->path, c->status, bytes, now_ms() - c->t0,
            gone ? " (client gone)" : "", stats);
    oa_strbuf_free(&c->body);
    free(c);
}

static void mhd_log(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    char line[512];
    vsnprintf(line, sizeof(line), fmt, ap);
    size_t n = strlen(line);
    fprintf(stderr, "dgemma serve: libmicrohttpd: %s%s", line, n && line[n - 1] == '\n' ? "" : "\n");
}

/* ===== start and stop ===== */

/* the model's id in the API: --alias, else the last path component (with its parent when that is a
 * bare dtype-like name such as "bf16") */
static void make_model_id(const dg_server_opts *o, char *id, size_t n) {
    if (o->alias) { snprintf(id, n, "%s", o->alias); return; }
    char p[4096];
    snprintf(p, sizeof(p), "%s", o->model);
    size_t len = strlen(p);
    while (len > 1 && p[len - 1] == '/') p[--len] = 0;
    char *base = strrchr(p, '/');
    if (!base) { snprintf(id, n, "%.200s", p); return; }
    *base = 0;
    char *parent = strrchr(p, '/');
    if (strlen(base + 1) <= 5 && *p) snprintf(id, n, "%.120s/%.120s", parent ? parent + 1 : p, base + 1);
    else snprintf(id, n, "%.200s", base + 1);
}

static int resolve_host(const char *host, int port, struct sockaddr_storage *ss, char *err, size_t errlen) {
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    char ps[16];
    snprintf(ps, sizeof(ps), "%d", port);
    int rc = getaddrinfo(host, ps, &hints, &res);
    if (rc || !res) { snprintf(err, errlen, "--host %s: %s", host, gai_strerror(rc)); return -1; }
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    return 0;
}

static void server_free(server *s) {
    dg_chat_template_free(s->tpl);
    dg_tokenizer_free(s->tok);
    dg_session_free(s->session);
    dg_engine_free(s->engine);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
}

int dg_serve(const dg_server_opts *o) {
    server s;
    memset(&s, 0, sizeof(s));
    s.o = o;
    pthread_mutex_init(&s.mu, NULL);
    pthread_cond_init(&s.cv, NULL);
    atomic_init(&s.stopping, 0);
    char err[1024];
    json_object_seed(0);   /* before any thread makes JSON */
    double t0 = now_ms();
    dg_session_params sp = o->sp;
    sp.n_ctx = o->n_ctx;
    if (dg_engine_load(o->model, &o->ep, &s.engine, err, sizeof(err)) || dg_session_create(s.engine, &sp, &s.session, err, sizeof(err)) ||
        dg_tokenizer_load(o->model, &s.tok, err, sizeof(err)) || dg_chat_template_load(o->model, &s.tpl, err, sizeof(err))) {
        fprintf(stderr, "dgemma serve: %s\n", err);
        server_free(&s);
        return 1;
    }
    s.canvas = dg_engine_info(s.engine)->canvas_length;
    s.add_bos = 1;   /* string completion prompts start with <bos>, as `dgemma run --raw` does */
    s.started = (long long)time(NULL);
    make_model_id(o, s.model_id, sizeof(s.model_id));
    {
        uint64_t seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
        int fd = open("/dev/urandom", O_RDONLY);
        if (fd >= 0) { if (read(fd, &seed, sizeof(seed)) != (ssize_t)sizeof(seed)) seed ^= 0x5DEECE66Dull; close(fd); }
        s.rng = seed;
    }

    struct sockaddr_storage ss;
    if (resolve_host(o->host, o->port, &ss, err, sizeof(err))) { fprintf(stderr, "dgemma serve: %s\n", err); server_free(&s); return 1; }
    /* signals are taken by the main thread only (sigwait); every thread started below inherits the mask */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (pthread_create(&s.worker, NULL, worker_main, &s)) { fprintf(stderr, "dgemma serve: cannot start the worker thread\n"); server_free(&s); return 1; }
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_USE_ERROR_LOG | MHD_USE_ITC;
    if (ss.ss_family == AF_INET6) flags |= MHD_USE_IPv6;
    s.mhd = MHD_start_daemon(flags, (uint16_t)o->port, NULL, NULL, on_request, &s,
                             MHD_OPTION_EXTERNAL_LOGGER, mhd_log, &s,
                             MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
                             MHD_OPTION_NOTIFY_COMPLETED, on_completed, &s,
                             MHD_OPTION_CONNECTION_LIMIT, (unsigned)o->max_connections,
                             MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)o->idle_timeout_s,
                             MHD_OPTION_END);
    int rc = 0;
    if (!s.mhd) {
        fprintf(stderr, "dgemma serve: cannot listen on %s:%d (address in use or not allowed?)\n", o->host, o->port);
        rc = 1;
    } else {
        const union MHD_DaemonInfo *di = MHD_get_daemon_info(s.mhd, MHD_DAEMON_INFO_BIND_PORT);
        int port = di ? di->port : o->port;
        const char *h = o->host;
        int v6 = ss.ss_family == AF_INET6;
        fprintf(stderr, "dgemma serve: model %s (%s weights, canvas %d, context %d, %s kernels, %d threads) loaded in %.0f ms\n",
                s.model_id, dg_engine_info(s.engine)->weight_dtype, s.canvas, o->n_ctx, dg_session_kernels(s.session),
                dg_session_threads(s.session), now_ms() - t0);
        fprintf(stderr, "dgemma serve: listening on http://%s%s%s:%d%s\n", v6 ? "[" : "", h, v6 ? "]" : "", port,
                o->api_key ? " (API key required)" : "");
        int sig;
        sigwait(&sigs, &sig);
        fprintf(stderr, "dgemma serve: %s, shutting down\n", sig == SIGINT ? "interrupted" : "terminated");
        MHD_socket ls = MHD_quiesce_daemon(s.mhd);
        if (ls != MHD_INVALID_SOCKET) close(ls);
    }
    /* stop the worker: queued jobs are answered 503, the running one is cancelled at its next step */
    pthread_mutex_lock(&s.mu);
    atomic_store(&s.stopping, 1);
    pthread_cond_broadcast(&s.cv);
    pthread_mutex_unlock(&s.mu);
    pthread_join(s.worker, NULL);
    if (s.mhd) MHD_stop_daemon(s.mhd);
    server_free(&s);
    return rc;
}
