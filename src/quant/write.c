/*
 * write.c - dg_quantize and dg_synth: plan, metadata, then the tensor data streamed one tensor at a
 * time.
 *
 * Memory: a tensor is processed in batches of rows (at most BATCH_BYTES of output); each batch's rows
 * are split into tasks for the thread pool, converted to float32 (from the mmapped checkpoint or the
 * random generator) and encoded (F32 / F16 / BF16 or dg_quantize_gguf, bit-exact with ggml), then the
 * batch is written and the source pages it read are dropped (madvise), so the peak RSS is a batch plus
 * one row per thread, whatever the model size.
 *
 * Output: OUT.tmp-<pid>, renamed to OUT when complete; removed on any error. The free space is checked
 * before anything is written.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "kernels/quants.h"
#include "kernels/threads.h"
#include "quant/quant.h"

#define BATCH_BYTES (32u << 20)
#define TASK_ELEMS 16384
#define POOL_BLOCKS 4096         /* distinct random blocks per (type, scale) in pool mode, at most (a power of 2) */
#define MAX_POOLS 64

dg_quant_params dg_quant_default_params(void) {
    dg_quant_params p;
    memset(&p, 0, sizeof(p));
    p.type = "Q8_0";
    p.shape = "26b-a4b";
    return p;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int ends_with(const char *s, const char *suf) {
    const size_t n = strlen(s), m = strlen(suf);
    return n >= m && !strcmp(s + n - m, suf);
}

static dg_dtype dtype_of(uint32_t t) {
    switch (t) {
    case GGML_TYPE_F32: return DG_F32;
    case GGML_TYPE_F16: return DG_F16;
    case GGML_TYPE_BF16: return DG_BF16;
    case GGML_TYPE_Q4_0: return DG_Q4_0;
    case GGML_TYPE_Q4_1: return DG_Q4_1;
    case GGML_TYPE_Q5_0: return DG_Q5_0;
    case GGML_TYPE_Q5_1: return DG_Q5_1;
    case GGML_TYPE_Q8_0: return DG_Q8_0;
    case GGML_TYPE_Q2_K: return DG_Q2_K;
    case GGML_TYPE_Q3_K: return DG_Q3_K;
    case GGML_TYPE_Q4_K: return DG_Q4_K;
    case GGML_TYPE_Q5_K: return DG_Q5_K;
    case GGML_TYPE_Q6_K: return DG_Q6_K;
    default: return DG_IQ4_NL;
    }
}

static size_t row_bytes_of(uint32_t type, int64_t ne0) {
    int64_t e;
    uint64_t b;
    return gguf_ggml_block(type, &e, &b) ? 0 : (size_t)(ne0 / e * (int64_t)b);
}

/* ===== the row engine ===== */

typedef struct {
    uint32_t type;
    uint32_t std_bits;           /* the float std of the values it holds */
    int n;                       /* blocks (a power of 2 <= POOL_BLOCKS) */
    uint8_t *blocks;
} pool_t;

typedef struct {
    const dg_qtensor *t;
    dg_dtype dt;
    size_t row_out;
    int64_t ne0;
    /* sources: a checkpoint tensor, the random generator, or fixed values (rope_freqs) */
    const uint8_t *src;
    dg_dtype sdt;
    int synth;
    uint64_t seed;
    const pool_t *pool;          /* pool mode: rows assembled from these blocks */
    size_t blk_bytes;
    int blk_elems;
    const float *fixed;          /* rope_freqs */
    /* the batch */
    int64_t r0, r_end, rows_per_task;
    uint8_t *out;
    float **scratch;             /* a row per thread */
} job;

static void get_row(const job *j, int64_t r, float *x) {
    const int64_t n = j->ne0;
    if (j->fixed) { memcpy(x, j->fixed, sizeof(float) * (size_t)n); return; }
    if (j->synth) { dg_synth_row(j->t, j->seed, r, x, n); return; }
    const uint8_t *s = j->src + (size_t)r * (size_t)n * dg_dtype_size(j->sdt);
    if (j->sdt == DG_F32) { memcpy(x, s, sizeof(float) * (size_t)n); return; }
    for (int64_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, s + 2 * i, 2);
        x[i] = j->sdt == DG_BF16 ? dg_bf16_to_f32(h) : dg_f16_to_f32(h);
    }
}

/* Encode one float row as type dt (the converter's / ggml's conversions). */
static void encode_row(dg_dtype dt, const float *x, uint8_t *dst, int64_t n) {
    if (dt == DG_F32) { memcpy(dst, x, sizeof(float) * (size_t)n); return; }
    if (dt == DG_F16 || dt == DG_BF16) {
        for (int64_t i = 0; i < n; i++) {
            const uint16_t h = dt == DG_F16 ? dg_f32_to_f16(x[i]) : dg_f32_to_bf16(x[i]);
            memcpy(dst + 2 * i, &h, 2);
        }
        return;
    }
    dg_quantize_gguf_fast(dt, x, dst, n, NULL);   /* bit-exact with dg_quantize_gguf, 2-3x faster for K-quants */
}

static void task_rows(void *ctx, int i, int tid) {
    const job *j = ctx;
    const int64_t a = j->r0 + (int64_t)i * j->rows_per_task;
    const int64_t b = a + j->rows_per_task < j->r_end ? a + j->rows_per_task : j->r_end;
    float *x = j->scratch[tid];
    for (int64_t r = a; r < b; r++) {
        uint8_t *dst = j->out + (size_t)(r - j->r0) * j->row_out;
        if (j->pool) {
            uint64_t s = dg_synth_seed(j->seed, j->t->name, r), bits = 0;
            const int64_t nb = j->ne0 / j->blk_elems;
            for (int64_t k = 0; k < nb; k++) {
                if (k % 4 == 0) bits = dg_synth_rand(&s);
                const size_t pick = (size_t)(bits & (uint64_t)(j->pool->n - 1));
                bits >>= 16;
                memcpy(dst + (size_t)k * j->blk_bytes, j->pool->blocks + pick * j->blk_bytes, j->blk_bytes);
            }
            continue;
        }
        get_row(j, r, x);
        encode_row(j->dt, x, dst, j->ne0);
    }
}

/* pool generation: POOL_BLOCKS random blocks of one type and scale, quantized by the reference */
typedef struct {
    pool_t *pool;
    dg_qtensor proto;            /* a tensor of that row width / kind (for dg_synth_row) */
    uint64_t seed;
    int blk_elems;
    size_t blk_bytes;
    float **scratch;
} pool_job;

static void task_pool(void *ctx, int i, int tid) {
    const pool_job *pj = ctx;
    float *x = pj->scratch[tid];
    const int per = 64;
    for (int b = i * per; b < (i + 1) * per && b < pj->pool->n; b++) {
        dg_synth_row(&pj->proto, pj->seed, b, x, pj->blk_elems);
        dg_quantize_gguf_fast(dtype_of(pj->pool->type), x, pj->pool->blocks + (size_t)b * pj->blk_bytes, pj->blk_elems, NULL);
    }
}

/* ===== the writer state ===== */

typedef struct {
    const dg_qplan *plan;
    const dg_quant_params *p;
    const dg_config *cfg;
    dg_pool *threads;
    float **scratch;
    int n_threads;
    uint8_t *out;                /* batch buffer */
    size_t out_cap;
    /* sources */
    const st_store *st;
    int synth, exact;
    uint64_t seed;
    pool_t pools[MAX_POOLS];
    int n_pools;
    float *rope;
    /* progress */
    uint64_t done, total;
    double t0;
    char *err;
    size_t errlen;
} wstate;

typedef int (*sink_fn)(void *user, const void *data, size_t n);

static const pool_t *get_pool(wstate *w, const dg_qtensor *t, uint32_t type) {
    const float stdv = t->kind == DG_QK_ROUTER ? 3.0f : (float)(1.0 / sqrt((double)t->ne[0]));
    uint32_t bits;
    memcpy(&bits, &stdv, 4);
    for (int i = 0; i < w->n_pools; i++)
        if (w->pools[i].type == type && w->pools[i].std_bits == bits) return &w->pools[i];
    if (w->n_pools == MAX_POOLS) return NULL;
    int64_t be;
    uint64_t bb;
    gguf_ggml_block(type, &be, &bb);
    pool_t *pl = &w->pools[w->n_pools];
    /* an eighth of the blocks drawn from it (small models: about their own size), 64 to POOL_BLOCKS */
    int64_t drawn = 0;
    for (int i = 0; i < w->plan->n; i++) {
        const dg_qtensor *u = &w->plan->t[i];
        const float su = u->kind == DG_QK_ROUTER ? 3.0f : (float)(1.0 / sqrt((double)u->ne[0]));
        if (u->type == type && !memcmp(&su, &stdv, 4) && (u->kind == DG_QK_MATRIX || u->kind == DG_QK_EMBED)) drawn += dg_qt_numel(u) / be;
    }
    pl->n = 64;
    while (pl->n < POOL_BLOCKS && (int64_t)pl->n * 8 < drawn) pl->n *= 2;
    pl->blocks = malloc((size_t)bb * (size_t)pl->n);
    if (!pl->blocks) return NULL;
    pl->type = type;
    pl->std_bits = bits;
    pool_job pj;
    memset(&pj, 0, sizeof(pj));
    pj.pool = pl;
    pj.proto = *t;
    snprintf(pj.proto.name, sizeof(pj.proto.name), "pool.%s.%08x", gguf_ggml_type_name(type), bits);
    pj.seed = w->seed;
    pj.blk_elems = (int)be;
    pj.blk_bytes = (size_t)bb;
    pj.scratch = w->scratch;
    dg_pool_run(w->threads, (pl->n + 63) / 64, task_pool, &pj);
    w->n_pools++;
    return pl;
}

/* Drop the pages of [p, p + n) from this process (they stay in the page cache): reading a 50 GB
 * checkpoint through the mapping would otherwise count all of it in the RSS. */
static void release(const void *p, size_t n) {
    const uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = ((uintptr_t)p + pg - 1) / pg * pg, b = ((uintptr_t)p + n) / pg * pg;
    if (b > a) madvise((void *)a, b - a, MADV_DONTNEED);
}

static void progress(wstate *w, int ti, int done) {
    if (!w->p->progress) return;
    const dg_qtensor *t = &w->plan->t[ti];
    dg_quant_progress pr = {ti, w->plan->n, t->name, gguf_ggml_type_name(t->type), done, w->done, w->total, now_s() - w->t0};
    w->p->progress(w->p->user, &pr);
}

/* Stream tensor ti as `type` (its plan type, or a float type for HF output) into sink. */
static int stream_tensor(wstate *w, int ti, uint32_t type, sink_fn sink, void *user) {
    const dg_qtensor *t = &w->plan->t[ti];
    job j;
    memset(&j, 0, sizeof(j));
    j.t = t;
    j.dt = dtype_of(type);
    j.ne0 = t->ne[0];
    j.row_out = row_bytes_of(type, t->ne[0]);
    j.scratch = w->scratch;
    j.seed = w->seed;
    const int64_t rows = dg_qt_rows(t);
    const st_tensor *src = NULL;
    if (t->kind == DG_QK_ROPE) {
        j.fixed = w->rope;
    } else if (w->synth) {
        j.synth = 1;
        if (!w->exact && (t->kind == DG_QK_MATRIX || t->kind == DG_QK_EMBED) && dg_gguf_block_elems(j.dt) > 1) {
            if (!(j.pool = get_pool(w, t, type))) return dg_fail(w->err, w->errlen, "out of memory for the block pool");
            j.blk_elems = dg_gguf_block_elems(j.dt);
            j.blk_bytes = dg_gguf_block_bytes(j.dt);
        }
    } else {
        src = &w->st->tensors[t->src];
        j.src = src->data;
        if (dg_st_float_dtype(src->dtype, &j.sdt)) return dg_fail(w->err, w->errlen, "tensor '%s': bad dtype", t->hf);
    }
    j.rows_per_task = TASK_ELEMS / j.ne0 > 0 ? TASK_ELEMS / j.ne0 : 1;
    int64_t batch = (int64_t)(BATCH_BYTES / (j.row_out ? j.row_out : 1)) / j.rows_per_task * j.rows_per_task;
    if (batch < j.rows_per_task) batch = j.rows_per_task;
    const size_t need = (size_t)batch * j.row_out;
    if (need > w->out_cap) {
        uint8_t *nb = realloc(w->out, need);
        if (!nb) return dg_fail(w->err, w->errlen, "out of memory (%zu bytes for a batch of %s)", need, t->name);
        w->out = nb;
        w->out_cap = need;
    }
    j.out = w->out;
    for (int64_t r0 = 0; r0 < rows; r0 += batch) {
        j.r0 = r0;
        j.r_end = r0 + batch < rows ? r0 + batch : rows;
        const int ntasks = (int)((j.r_end - r0 + j.rows_per_task - 1) / j.rows_per_task);
        dg_pool_run(w->threads, ntasks, task_rows, &j);
        const size_t nbytes = (size_t)(j.r_end - r0) * j.row_out;
        if (sink(user, w->out, nbytes)) return -1;
        if (src) {
            const size_t es = dg_dtype_size(j.sdt);
            release(src->data + (size_t)r0 * (size_t)j.ne0 * es, (size_t)(j.r_end - r0) * (size_t)j.ne0 * es);
        }
        w->done += nbytes;
        progress(w, ti, j.r_end == rows);
    }
    if (rows == 0) progress(w, ti, 1);
    return 0;
}

static int wstate_init(wstate *w, const dg_qplan *plan, const dg_quant_params *p, const dg_config *cfg, char *err, size_t errlen) {
    memset(w, 0, sizeof(*w));
    w->plan = plan;
    w->p = p;
    w->cfg = cfg;
    w->err = err;
    w->errlen = errlen;
    w->n_threads = p->n_threads > 0 ? p->n_threads : dg_cpu_count();
    w->threads = dg_pool_create(w->n_threads);
    if (w->n_threads > 1 && !w->threads) return dg_fail(err, errlen, "cannot create %d threads", w->n_threads);
    int64_t max_ne0 = 1;
    for (int i = 0; i < plan->n; i++) if (plan->t[i].ne[0] > max_ne0) max_ne0 = plan->t[i].ne[0];
    if (max_ne0 < 256) max_ne0 = 256;
    w->scratch = calloc((size_t)w->n_threads, sizeof(float *));
    if (!w->scratch) return dg_fail(err, errlen, "out of memory");
    for (int i = 0; i < w->n_threads; i++)
        if (!(w->scratch[i] = malloc(sizeof(float) * (size_t)max_ne0))) return dg_fail(err, errlen, "out of memory");
    /* rope_freqs (Gemma4Model.generate_extra_tensors): 1.0 for the rotated pairs of the full layers, 1e30 after */
    int gd, gkv;
    dg_config_global_head(cfg, &gd, &gkv);
    w->rope = malloc(sizeof(float) * (size_t)(gd / 2 + 1));
    if (!w->rope) return dg_fail(err, errlen, "out of memory");
    const int n_rot = (int)(gd * cfg->rope_full.partial_rotary_factor / 2);
    for (int i = 0; i < gd / 2; i++) w->rope[i] = i < n_rot ? 1.0f : 1e30f;
    for (int i = 0; i < plan->n; i++) w->total += plan->t[i].nbytes;
    return 0;
}

static void wstate_free(wstate *w) {
    for (int i = 0; w->scratch && i < w->n_threads; i++) free(w->scratch[i]);
    free(w->scratch);
    for (int i = 0; i < w->n_pools; i++) free(w->pools[i].blocks);
    dg_pool_free(w->threads);
    free(w->out);
    free(w->rope);
}

/* ===== report ===== */

static void fill_report(const dg_qplan *plan, const dg_quant_params *p, dg_quant_report *rep) {
    memset(rep, 0, sizeof(*rep));
    rep->n_tensors = plan->n;
    for (int i = 0; i < plan->n; i++) {
        const dg_qtensor *t = &plan->t[i];
        rep->n_params += dg_qt_numel(t);
        rep->data_bytes += t->nbytes;
        rep->n_fallback += t->fallback;
        const char *tn = gguf_ggml_type_name(t->type);
        int k = 0;
        while (k < rep->n_types && strcmp(rep->types[k].type, tn)) k++;
        if (k == rep->n_types && k < DG_QUANT_MAX_TYPES) rep->types[rep->n_types++] = (dg_quant_type_count){tn, 0, 0};
        if (k < DG_QUANT_MAX_TYPES) { rep->types[k].count++; rep->types[k].bytes += t->nbytes; }
        if (p->tensor) p->tensor(p->user, t->name, tn, t->n_dims, t->ne, t->nbytes);
    }
    dg_qplan_size_label(plan, rep->size_label, sizeof(rep->size_label));
}

/* ===== output files ===== */

static char *dir_of(const char *path) {
    char *d = strdup(path);
    if (!d) return NULL;
    char *slash = strrchr(d, '/');
    if (!slash) { free(d); return strdup("."); }
    if (slash == d) slash[1] = 0;
    else *slash = 0;
    return d;
}

static int check_space(const char *out, uint64_t need, char *err, size_t errlen) {
    char *d = dir_of(out);
    struct statvfs sv;
    int rc = 0;
    if (d && statvfs(d, &sv) == 0) {
        const uint64_t avail = (uint64_t)sv.f_bavail * (uint64_t)sv.f_frsize;
        if (avail < need)
            rc = dg_fail(err, errlen, "%s: not enough disk space: %.2f GB needed, %.2f GB free in %s", out, need / 1e9, avail / 1e9, d);
    } else if (d) {
        rc = dg_fail(err, errlen, "%s: cannot write in %s: %s", out, d, strerror(errno));
    }
    free(d);
    return rc;
}

static int gguf_sink(void *user, const void *data, size_t n) { return gguf_w_data((gguf_writer *)user, data, n); }

/* Metadata, tensor infos and data of a GGUF; renamed into place at the end. */
static int write_gguf(const char *out, const dg_qplan *plan, const dg_config *cfg, const dg_qmeta_src *msrc, wstate *w,
                      char *err, size_t errlen) {
    uint64_t need = 1 << 24;
    for (int i = 0; i < plan->n; i++) need += (plan->t[i].nbytes + 31) / 32 * 32;
    if (check_space(out, need, err, errlen)) return -1;
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.tmp-%ld", out, (long)getpid());
    gguf_writer *g = gguf_writer_open(tmp, GGUF_DEFAULT_ALIGNMENT, err, errlen);
    if (!g) return -1;
    if (dg_qmeta_write(g, cfg, plan, msrc, err, errlen)) { gguf_writer_abort(g); return -1; }
    for (int i = 0; i < plan->n; i++) {
        const dg_qtensor *t = &plan->t[i];
        if (gguf_w_tensor(g, t->name, t->n_dims, t->ne, t->type)) {
            dg_fail(err, errlen, "%s", gguf_writer_error(g));
            gguf_writer_abort(g);
            return -1;
        }
    }
    w->t0 = now_s();
    for (int i = 0; i < plan->n; i++)
        if (stream_tensor(w, i, plan->t[i].type, gguf_sink, g)) {
            if (gguf_writer_error(g)[0]) dg_fail(err, errlen, "%s", gguf_writer_error(g));
            gguf_writer_abort(g);
            return -1;
        }
    if (gguf_writer_close(g, err, errlen)) return -1;
    if (rename(tmp, out) != 0) {
        dg_fail(err, errlen, "%s: cannot rename %s into place: %s", out, tmp, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

/* ===== dg_quantize ===== */

static void warn_cb(void *user, const char *msg) {
    const dg_quant_params *p = user;
    if (p->warn) p->warn(p->user, msg);
}

static const char *base_name(const char *path, char *buf, size_t n) {
    snprintf(buf, n, "%s", path);
    size_t l = strlen(buf);
    while (l > 1 && buf[l - 1] == '/') buf[--l] = 0;
    const char *s = strrchr(buf, '/');
    return s ? s + 1 : buf;
}

typedef struct { const char *file, *name; int idx; } ordered;
static int cmp_file_name(const void *a, const void *b) {
    const ordered *x = a, *y = b;
    const int c = strcmp(x->file, y->file);
    return c ? c : strcmp(x->name, y->name);
}

/* The checkpoint's tensors in the converter's order (shards by name, tensors by name within each). */
static int plan_from_checkpoint(dg_qplan *plan, const st_store *st, const dg_config *cfg, const char *dir, const dg_quant_params *p,
                                char *err, size_t errlen) {
    memset(plan, 0, sizeof(*plan));
    plan->n_layers = cfg->n_layers;
    plan->n_experts = cfg->n_experts;
    ordered *order = malloc(sizeof(ordered) * (size_t)(st->n_tensors + 1));
    if (!order) return dg_fail(err, errlen, "out of memory");
    for (int i = 0; i < st->n_tensors; i++) order[i] = (ordered){st->files[st->tensors[i].file].path, st->tensors[i].name, i};
    qsort(order, (size_t)st->n_tensors, sizeof(ordered), cmp_file_name);
    int rc = -1, dropped = 0;
    if (dg_qplan_add_rope(plan, cfg, err, errlen)) goto out;
    for (int k = 0; k < st->n_tensors; k++) {
        const st_tensor *t = &st->tensors[order[k].idx];
        if (strstr(t->name, "vision")) continue;   /* the converter drops the vision tower */
        char gname[GGUF_MAX_NAME];
        if (dg_gguf_name(t->name, gname, sizeof(gname))) {
            if (!strncmp(t->name, "model.encoder.", 14)) { dropped++; continue; }   /* tied to the decoder: dropped */
            dg_fail(err, errlen, "%s: tensor '%s' is not a DiffusionGemma text tensor (no GGUF name)", st->files[t->file].path, t->name);
            goto out;
        }
        dg_dtype dt;
        if (dg_st_float_dtype(t->dtype, &dt)) {
            dg_fail(err, errlen, "%s: tensor '%s' has dtype %s: only F32, BF16 and F16 checkpoints can be converted",
                    st->files[t->file].path, t->name, st_dtype_name(t->dtype));
            goto out;
        }
        if (t->ndim < 1 || t->ndim > GGUF_MAX_DIMS) {
            dg_fail(err, errlen, "%s: tensor '%s' has %d dimensions", st->files[t->file].path, t->name, t->ndim);
            goto out;
        }
        if (dg_qplan_add(plan, t->name, gname, t->ndim, t->shape, DG_QK_MATRIX, order[k].idx, err, errlen)) goto out;
    }
    if (dropped && p->warn) {
        char msg[256];
        snprintf(msg, sizeof(msg), "%d encoder tensor(s) besides the layer scalars dropped (the converter keeps the decoder copy only)", dropped);
        p->warn(p->user, msg);
    }
    if (dg_qplan_check(plan, cfg, dir, err, errlen)) goto out;
    rc = 0;
out:
    free(order);
    if (rc) dg_qplan_free(plan);
    return rc;
}

int dg_quantize(const char *in, const char *out, const dg_quant_params *pp, dg_quant_report *rep, char *err, size_t errlen) {
    dg_quant_params p = pp ? *pp : dg_quant_default_params();
    dg_quant_report local;
    if (!rep) rep = &local;
    memset(rep, 0, sizeof(*rep));
    const int ft = dg_ftype_parse(p.type);
    if (ft < 0) return dg_fail(err, errlen, "unknown type '%s' (F32, F16, BF16, Q8_0, Q4_0, Q4_K_M, Q5_K_M, Q6_K)", p.type ? p.type : "");
    if (!in) return dg_fail(err, errlen, "no input given");
    struct stat sb;
    if (stat(in, &sb) != 0) return dg_fail(err, errlen, "%s: %s", in, strerror(errno));
    char *dir = NULL, *cfg_path = NULL, *gen_path = NULL;
    if (S_ISDIR(sb.st_mode)) {
        dir = strdup(in);
    } else if (ends_with(in, ".json")) {
        if (!p.dry_run) return dg_fail(err, errlen, "%s: a config.json alone can only be planned (--dry-run); give the checkpoint directory", in);
        dir = dir_of(in);
        cfg_path = strdup(in);
    } else {
        return dg_fail(err, errlen, "%s: not a directory (give a Hugging Face DiffusionGemma checkpoint directory)", in);
    }
    if (!dir) return dg_fail(err, errlen, "out of memory");
    if (!cfg_path) {
        cfg_path = malloc(strlen(dir) + 16);
        if (cfg_path) sprintf(cfg_path, "%s/config.json", dir);
    }
    gen_path = malloc(strlen(dir) + 32);
    if (gen_path) sprintf(gen_path, "%s/generation_config.json", dir);
    dg_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    st_store st;
    memset(&st, 0, sizeof(st));
    dg_qplan plan;
    memset(&plan, 0, sizeof(plan));
    wstate w;
    memset(&w, 0, sizeof(w));
    int rc = -1;
    const double t0 = now_s();
    if (!cfg_path || !gen_path) { dg_fail(err, errlen, "out of memory"); goto out; }
    if (stat(cfg_path, &sb) != 0) {
        dg_fail(err, errlen, "%s: not a Hugging Face DiffusionGemma checkpoint (no config.json)", in);
        goto out;
    }
    if (dg_config_load_file(&cfg, cfg_path, dir, err, errlen)) goto out;
    char ip[4096], sp[4096];
    snprintf(ip, sizeof(ip), "%s/model.safetensors.index.json", dir);
    snprintf(sp, sizeof(sp), "%s/model.safetensors", dir);
    const int has_weights = !ends_with(in, ".json") && (stat(ip, &sb) == 0 || stat(sp, &sb) == 0);
    if (has_weights) {
        if (st_open_dir(&st, dir, err, errlen)) goto out;
        if (plan_from_checkpoint(&plan, &st, &cfg, dir, &p, err, errlen)) goto out;
    } else {
        if (!p.dry_run) { dg_fail(err, errlen, "%s: no model.safetensors or model.safetensors.index.json", dir); goto out; }
        if (dg_qplan_from_config(&plan, &cfg, err, errlen)) goto out;
    }
    /* the embedding rows the converter keeps (the tokenizer's size) */
    int64_t rows = cfg.vocab_size;
    if (!p.synthetic_vocab && dg_qmeta_vocab_rows(dir, cfg.vocab_size, &rows, err, errlen)) goto out;
    for (int i = 0; i < plan.n; i++)
        if (!strcmp(plan.t[i].name, "token_embd.weight")) plan.t[i].ne[1] = rows;
    if (dg_qplan_types(&plan, ft, warn_cb, &p, err, errlen)) goto out;
    fill_report(&plan, &p, rep);
    if (p.dry_run) { rc = 0; goto out; }
    if (!out) { dg_fail(err, errlen, "no output file given"); goto out; }
    char nb[4096];
    dg_qmeta_src ms = {dir, cfg_path, gen_path, p.name ? p.name : base_name(dir, nb, sizeof(nb)), p.synthetic_vocab, rows};
    if (wstate_init(&w, &plan, &p, &cfg, err, errlen)) goto out;
    w.st = &st;
    if (write_gguf(out, &plan, &cfg, &ms, &w, err, errlen)) goto out;
    if (stat(out, &sb) == 0) rep->file_bytes = (uint64_t)sb.st_size;
    rc = 0;
out:
    rep->seconds = now_s() - t0;
    wstate_free(&w);
    dg_qplan_free(&plan);
    st_close(&st);
    dg_config_free(&cfg);
    free(dir);
    free(cfg_path);
    free(gen_path);
    return rc;
}

/* ===== dg_synth ===== */

/* A Hugging Face directory: config.json, generation_config.json, safetensors shards of at most 5 GB
 * (transformers' max_shard_size default) with model.safetensors.index.json, or one model.safetensors. */
typedef struct { FILE *f; const char *path; char *err; size_t errlen; } file_sink;
static int fsink(void *user, const void *data, size_t n) {
    file_sink *s = user;
    if (n && fwrite(data, 1, n, s->f) != n) return dg_fail(s->err, s->errlen, "%s: write failed: %s", s->path, strerror(errno));
    return 0;
}

static int write_hf(const char *out, dg_qplan *plan, const dg_config *cfg, uint32_t type, wstate *w, char *err, size_t errlen) {
    const uint64_t max_shard = w->p->max_shard_bytes ? w->p->max_shard_bytes : 5000000000ull;
    const char *dts = type == GGML_TYPE_F32 ? "F32" : type == GGML_TYPE_F16 ? "F16" : "BF16";
    uint64_t total = 0;
    for (int i = 0; i < plan->n; i++) total += plan->t[i].nbytes;
    if (check_space(out, total + (1 << 20), err, errlen)) return -1;
    struct stat sb;
    if (stat(out, &sb) == 0) return dg_fail(err, errlen, "%s: already exists", out);
    char tmp[4200], path[4400];
    snprintf(tmp, sizeof(tmp), "%s.tmp-%ld", out, (long)getpid());
    if (mkdir(tmp, 0755) != 0) return dg_fail(err, errlen, "%s: cannot create: %s", tmp, strerror(errno));
    int rc = -1, n_shards = 0;
    int *shard = calloc((size_t)plan->n + 1, sizeof(int));
    if (!shard) { dg_fail(err, errlen, "out of memory"); goto out; }
    /* shard assignment in tensor order */
    uint64_t cur = 0;
    for (int i = 0; i < plan->n; i++) {
        if (cur && cur + plan->t[i].nbytes > max_shard) { n_shards++; cur = 0; }
        shard[i] = n_shards;
        cur += plan->t[i].nbytes;
    }
    n_shards++;
    if (dg_synth_write_config(cfg, tmp, type == GGML_TYPE_F32 ? "float32" : type == GGML_TYPE_F16 ? "float16" : "bfloat16", err, errlen)) goto out;
    FILE *idx = NULL;
    if (n_shards > 1) {
        snprintf(path, sizeof(path), "%s/model.safetensors.index.json", tmp);
        if (!(idx = fopen(path, "w"))) { dg_fail(err, errlen, "%s: cannot create: %s", path, strerror(errno)); goto out; }
        fprintf(idx, "{\n  \"metadata\": {\n    \"total_size\": %llu\n  },\n  \"weight_map\": {", (unsigned long long)total);
    }
    w->t0 = now_s();
    for (int s = 0; s < n_shards; s++) {
        char fname[64];
        if (n_shards > 1) snprintf(fname, sizeof(fname), "model-%05d-of-%05d.safetensors", s + 1, n_shards);
        else snprintf(fname, sizeof(fname), "model.safetensors");
        snprintf(path, sizeof(path), "%s/%s", tmp, fname);
        /* header: {"__metadata__":{"format":"pt"}, name: {dtype, shape, data_offsets}} padded with spaces to 8 */
        size_t hcap = 4096, hl = 0;
        char *h = malloc(hcap);
        if (!h) { dg_fail(err, errlen, "out of memory"); if (idx) fclose(idx); goto out; }
        hl += (size_t)snprintf(h, hcap, "{\"__metadata__\":{\"format\":\"pt\"}");
        uint64_t off = 0;
        for (int i = 0; i < plan->n; i++) {
            if (shard[i] != s) continue;
            const dg_qtensor *t = &plan->t[i];
            if (hcap - hl < 512) {
                hcap *= 2;
                char *nh = realloc(h, hcap);
                if (!nh) { free(h); dg_fail(err, errlen, "out of memory"); if (idx) fclose(idx); goto out; }
                h = nh;
            }
            hl += (size_t)snprintf(h + hl, hcap - hl, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[", t->hf, dts);
            for (int k = t->n_dims - 1; k >= 0; k--) hl += (size_t)snprintf(h + hl, hcap - hl, "%lld%s", (long long)t->ne[k], k ? "," : "");
            hl += (size_t)snprintf(h + hl, hcap - hl, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                                   (unsigned long long)(off + t->nbytes));
            off += t->nbytes;
            if (idx) fprintf(idx, "%s\n    \"%s\": \"%s\"", i ? "," : "", t->hf, fname);
        }
        hl += (size_t)snprintf(h + hl, hcap - hl, "}");
        while ((8 + hl) % 8) h[hl++] = ' ';
        FILE *f = fopen(path, "wb");
        file_sink fs = {f, path, err, errlen};
        const uint64_t hlen = hl;
        int bad = !f || fwrite(&hlen, 8, 1, f) != 1 || fwrite(h, 1, hl, f) != hl;
        free(h);
        if (bad) { dg_fail(err, errlen, "%s: cannot write: %s", path, strerror(errno)); if (f) fclose(f); if (idx) fclose(idx); goto out; }
        for (int i = 0; i < plan->n && !bad; i++)
            if (shard[i] == s) bad = stream_tensor(w, i, type, fsink, &fs) != 0;
        if (fclose(f) != 0 && !bad) bad = dg_fail(err, errlen, "%s: close failed: %s", path, strerror(errno)) != 0;
        if (bad) { if (idx) fclose(idx); goto out; }
    }
    if (idx) {
        fprintf(idx, "\n  }\n}\n");
        if (fclose(idx) != 0) { dg_fail(err, errlen, "%s: write failed", path); goto out; }
    }
    if (rename(tmp, out) != 0) { dg_fail(err, errlen, "%s: cannot rename %s into place: %s", out, tmp, strerror(errno)); goto out; }
    rc = 0;
out:
    free(shard);
    if (rc) {
        /* remove the partial directory */
        for (int s = 0; s <= n_shards; s++) {
            char fname[64];
            snprintf(fname, sizeof(fname), "model-%05d-of-%05d.safetensors", s + 1, n_shards);
            snprintf(path, sizeof(path), "%s/%s", tmp, fname);
            unlink(path);
        }
        static const char *const files[] = {"model.safetensors", "model.safetensors.index.json", "config.json", "generation_config.json"};
        for (size_t k = 0; k < sizeof(files) / sizeof(files[0]); k++) {
            snprintf(path, sizeof(path), "%s/%s", tmp, files[k]);
            unlink(path);
        }
        rmdir(tmp);
    }
    return rc;
}

int dg_synth(const char *out, const dg_quant_params *pp, dg_quant_report *rep, char *err, size_t errlen) {
    dg_quant_params p = pp ? *pp : dg_quant_default_params();
    dg_quant_report local;
    if (!rep) rep = &local;
    memset(rep, 0, sizeof(*rep));
    if (!out && !p.dry_run) return dg_fail(err, errlen, "no output given");
    const int gguf = out && ends_with(out, ".gguf");
    const char *type = p.type ? p.type : gguf ? "Q4_K_M" : "BF16";
    const int ft = dg_ftype_parse(type);
    if (ft < 0) return dg_fail(err, errlen, "unknown type '%s' (F32, F16, BF16, Q8_0, Q4_0, Q4_K_M, Q5_K_M, Q6_K)", type);
    if (out && !gguf && ft != DG_FT_BF16 && ft != DG_FT_F16 && ft != DG_FT_F32)
        return dg_fail(err, errlen, "%s: a Hugging Face directory holds BF16, F16 or F32 weights, not %s (name the output .gguf for a GGUF)", out, type);
    dg_config cfg;
    dg_qplan plan;
    wstate w;
    memset(&cfg, 0, sizeof(cfg));
    memset(&plan, 0, sizeof(plan));
    memset(&w, 0, sizeof(w));
    int rc = -1;
    const double t0 = now_s();
    char *cdir = NULL;
    if (p.config) {
        if (!(cdir = dir_of(p.config))) { dg_fail(err, errlen, "out of memory"); goto out; }
        if (dg_config_load_file(&cfg, p.config, cdir, err, errlen) || dg_synth_override(&cfg, p.n_layers, p.n_experts, err, errlen)) goto out;
    } else if (dg_synth_config(&cfg, p.shape, p.n_layers, p.n_experts, err, errlen)) {
        goto out;
    }
    if (dg_qplan_from_config(&plan, &cfg, err, errlen)) goto out;
    if (gguf || !out) {
        if (dg_qplan_types(&plan, ft, warn_cb, &p, err, errlen)) goto out;
    } else {
        /* HF: every tensor in the one float type, no rope_freqs */
        memmove(plan.t, plan.t + 1, sizeof(dg_qtensor) * (size_t)(plan.n - 1));
        plan.n--;
        const uint32_t ty = ft == DG_FT_F32 ? GGML_TYPE_F32 : ft == DG_FT_F16 ? GGML_TYPE_F16 : GGML_TYPE_BF16;
        for (int i = 0; i < plan.n; i++) {
            plan.t[i].type = ty;
            plan.t[i].nbytes = row_bytes_of(ty, plan.t[i].ne[0]) * (uint64_t)dg_qt_rows(&plan.t[i]);
        }
    }
    fill_report(&plan, &p, rep);
    if (p.dry_run) { rc = 0; goto out; }
    if (wstate_init(&w, &plan, &p, &cfg, err, errlen)) goto out;
    w.synth = 1;
    w.exact = p.exact;
    w.seed = p.seed;
    if (gguf) {
        char name[128];
        snprintf(name, sizeof(name), "synth-%s", p.config ? "config" : p.shape ? p.shape : "26b-a4b");
        char gp[4200];
        snprintf(gp, sizeof(gp), "%s/generation_config.json", cdir ? cdir : ".");
        dg_qmeta_src ms = {NULL, p.config, p.config ? gp : NULL, p.name ? p.name : name, 1, cfg.vocab_size};
        if (write_gguf(out, &plan, &cfg, &ms, &w, err, errlen)) goto out;
        struct stat sb;
        if (stat(out, &sb) == 0) rep->file_bytes = (uint64_t)sb.st_size;
    } else {
        if (write_hf(out, &plan, &cfg, plan.t[0].type, &w, err, errlen)) goto out;
        rep->file_bytes = rep->data_bytes;
    }
    rc = 0;
out:
    rep->seconds = now_s() - t0;
    free(cdir);
    wstate_free(&w);
    dg_qplan_free(&plan);
    dg_config_free(&cfg);
    return rc;
}
