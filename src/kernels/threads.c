#define _GNU_SOURCE
/*
 * threads.c - the persistent pool. A run publishes (fn, ctx, n) under the mutex and bumps a
 * generation counter; workers wake, pull task indices from an atomic counter until it passes n, and
 * the last one to finish signals the caller, who pulls tasks too. Dynamic scheduling (the atomic
 * counter, in shrinking chunks) balances uneven tasks such as experts with different token counts.
 */
#include "threads.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

struct dg_pool {
    int n_threads;
    pthread_t *th;
    pthread_mutex_t mu;
    pthread_cond_t wake, done;
    unsigned long gen;        /* bumped per run (under mu) */
    int quit;
    dg_task_fn fn;
    void *ctx;
    int n;
    atomic_int next;          /* next task index */
    int active;               /* workers still in the current run (under mu) */
    atomic_int running;       /* 1 while a run is in flight: nested runs go inline */
};

typedef struct {
    dg_pool *p;
    int tid;
} worker_arg;

/* Tasks are handed out in chunks of a quarter of the remaining tasks per thread (guided
 * self-scheduling): a run of n tasks takes about 4 * threads * ln(n) atomic operations instead of n,
 * and the chunks shrink towards the end, so uneven tasks still balance. Each fetch of the shared
 * counter moves its cache line between cores: with one task per fetch, a profile of a layer's 11,264
 * expert down-projection tasks (about 8 us each) put 11 % of their time on the fetch; runs of
 * consecutive tasks also keep each core's weight rows one sequential stream. In-process A/B, same
 * results: a layer's 128 experts, down 0.76-0.86x the time, gate_up 0.89-0.95x (a fixed chunk of 16
 * did about as well); the 26B-shape MoE stage 0.88x (median of 8 pairs). */
static void drain(dg_pool *p, dg_task_fn fn, void *ctx, int n, int tid) {
    const int div = 4 * p->n_threads;
    for (;;) {
        int i = atomic_load_explicit(&p->next, memory_order_relaxed), c;
        do {
            if (i >= n) return;
            c = (n - i) / div;
            if (c < 1) c = 1;
        } while (!atomic_compare_exchange_weak_explicit(&p->next, &i, i + c, memory_order_relaxed, memory_order_relaxed));
        for (const int e = i + c; i < e; i++) fn(ctx, i, tid);
    }
}

static void *worker(void *arg) {
    worker_arg *wa = arg;
    dg_pool *p = wa->p;
    const int tid = wa->tid;
    free(wa);
    unsigned long seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->quit && p->gen == seen) pthread_cond_wait(&p->wake, &p->mu);
        if (p->quit) break;
        seen = p->gen;
        dg_task_fn fn = p->fn;
        void *ctx = p->ctx;
        const int n = p->n;
        pthread_mutex_unlock(&p->mu);
        drain(p, fn, ctx, n, tid);
        pthread_mutex_lock(&p->mu);
        if (--p->active == 0) pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

int dg_cpu_count(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

dg_pool *dg_pool_create(int n_threads) {
    dg_pool *p = calloc(1, sizeof(*p));
    if (!p) return NULL;
    p->n_threads = n_threads < 1 ? 1 : n_threads;
    atomic_init(&p->next, 0);
    atomic_init(&p->running, 0);
    if (p->n_threads == 1) return p;
    p->th = calloc((size_t)p->n_threads - 1, sizeof(pthread_t));
    if (!p->th) { free(p); return NULL; }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
    for (int i = 1; i < p->n_threads; i++) {
        worker_arg *wa = malloc(sizeof(*wa));
        if (!wa || pthread_create(&p->th[i - 1], NULL, worker, (wa->p = p, wa->tid = i, wa))) {
            free(wa);
            p->n_threads = i;   /* free() joins the ones that started */
            dg_pool_free(p);
            return NULL;
        }
    }
    return p;
}

void dg_pool_free(dg_pool *p) {
    if (!p) return;
    if (p->n_threads > 1) {
        pthread_mutex_lock(&p->mu);
        p->quit = 1;
        pthread_cond_broadcast(&p->wake);
        pthread_mutex_unlock(&p->mu);
        for (int i = 0; i < p->n_threads - 1; i++) pthread_join(p->th[i], NULL);
        pthread_mutex_destroy(&p->mu);
        pthread_cond_destroy(&p->wake);
        pthread_cond_destroy(&p->done);
    }
    free(p->th);
    free(p);
}

int dg_pool_size(const dg_pool *p) { return p ? p->n_threads : 1; }

void dg_pool_run(dg_pool *p, int n, dg_task_fn fn, void *ctx) {
    if (n <= 0) return;
    if (!p || p->n_threads == 1 || n == 1 || atomic_exchange(&p->running, 1)) {
        for (int i = 0; i < n; i++) fn(ctx, i, 0);
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->ctx = ctx;
    p->n = n;
    atomic_store(&p->next, 0);
    p->active = p->n_threads - 1;
    p->gen++;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    drain(p, fn, ctx, n, 0);
    pthread_mutex_lock(&p->mu);
    while (p->active > 0) pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
    atomic_store(&p->running, 0);
}
