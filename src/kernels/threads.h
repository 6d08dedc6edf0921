/*
 * threads.h - one persistent thread pool and one primitive, dg_pool_run: n tasks handed out through
 * an atomic counter to the pool's threads and the caller. Threads are created once (with the
 * session), never inside a step; a run allocates nothing.
 */
#ifndef DG_THREADS_H
#define DG_THREADS_H

typedef struct dg_pool dg_pool;

/* task i of a run, executed by thread tid (0 = the caller, 1 .. n_threads-1 = pool threads) */
typedef void (*dg_task_fn)(void *ctx, int i, int tid);

/* A pool of n_threads threads in all, the caller included (n_threads <= 1: no threads, runs inline).
 * Returns NULL when threads cannot be created. */
dg_pool *dg_pool_create(int n_threads);
void dg_pool_free(dg_pool *p);
/* Threads in all (1 for a NULL pool). */
int dg_pool_size(const dg_pool *p);
/* Run tasks 0..n-1 and return when all are done. Not reentrant: a task must not call dg_pool_run
 * on the same pool (nested runs execute inline, every task with tid 0, so per-thread scratch indexed
 * by tid would be shared: no caller nests). p may be NULL (serial). */
void dg_pool_run(dg_pool *p, int n, dg_task_fn fn, void *ctx);

/* Number of online CPUs (>= 1). */
int dg_cpu_count(void);

#endif
