#define _GNU_SOURCE
/*
 * bench.c - `dgemma bench`, the speed benchmark with a fixed protocol (bench/README.md):
 *
 *   1. load the model, create a session (threads, kernels as given);
 *   2. warm-up: one 1-step canvas after the prompt (excluded), then the cache is reset;
 *   3. measured: encode the prompt (P deterministic ids), denoise ONE canvas for exactly S steps
 *      (the stop rule is disabled so every run does the same work), then encode the committed
 *      canvas (the commit pass of the next canvas);
 *   4. report per-stage times per step, ms per step, canvas and emitted tokens per second, time to
 *      first canvas, FLOPs per step (from the config), achieved GFLOP/s against this machine's
 *      measured peak, and the peak RSS, as one CSV row.
 */
#include "bench/bench.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "dgemma.h"
#include "internal.h"

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

/* FLOPs of one decoder step over a canvas of C tokens after n_ctx cached tokens (multiply-add = 2) */
/* FLOPs of one step; *moe and *lm_head: those of the router + experts and of the LM head alone */
static double step_flops(const dg_engine *e, int n_cached, double *moe, double *lm_head, double *proj, double *experts) {
    const dg_config *c = &e->cfg;
    const double H = c->hidden_size, I = c->intermediate_size, V = c->vocab_size, C = c->canvas_length;
    const double nq = c->n_heads, E = c->n_experts, K = c->top_k, Ie = c->expert_size;
    double per_tok = 0, attn = 0, moe_tok = 0, proj_tok = 0, exp_tok = 0;
    for (int l = 0; l < c->n_layers; l++) {
        const double d = c->layer_head_dim[l], nkv = c->layer_n_kv[l];
        const double kv = c->layer_full[l] ? 1 : 2;   /* full layers: V = K, no v_proj */
        per_tok += 2 * H * nq * d + 2 * kv * H * nkv * d + 2 * nq * d * H;   /* q, k(, v), o */
        per_tok += 2 * 3 * H * I + 2 * H * E + 2 * K * 3 * H * Ie;            /* dense MLP, router, experts */
        moe_tok += 2 * H * E + 2 * K * 3 * H * Ie;
        exp_tok += 2 * K * 3 * H * Ie;
        proj_tok += 2 * H * nq * d + 2 * kv * H * nkv * d + 2 * nq * d * H + 2 * 3 * H * I;
        const double keys = (c->layer_full[l] ? n_cached : fmin(n_cached, c->sliding_window - 1)) + C;
        attn += 2 * 2 * nq * d * keys;                                         /* q.k and p.v per query */
    }
    per_tok += 2 * H * V;                      /* LM head */
    per_tok += 2 * V * H + 2 * 3 * H * I;      /* self-conditioning: P.E and its MLP */
    *moe = C * moe_tok;
    *lm_head = C * 2 * H * V;
    *proj = C * proj_tok;
    *experts = C * exp_tok;
    return C * (per_tok + attn);
}

static void usage(FILE *f) {
    fprintf(f,
        "usage: dgemma bench -m MODEL [options]\n"
        "\n"
        "The fixed-protocol speed benchmark (bench/README.md): encode a P-token prompt, denoise one\n"
        "canvas for exactly S steps, encode the committed canvas; prints one CSV row (with a header).\n"
        "\n"
        "options:\n"
        "  -m, --model DIR      model directory\n"
        "  -p, --prompt-len P   prompt tokens (default 100)\n"
        "  -s, --steps S        denoising steps (default 8)\n"
        "  -t, --threads N      threads (default: every CPU)\n"
        "  -b, --n-batch N      prompt tokens encoded per chunk (default: the session's, 1024)\n"
        "  --kernels K          auto, ref, generic, avx2, avx512, amx, neon (default auto)\n"
        "  --label TEXT         a label for the row (default: the model directory)\n"
        "  --csv FILE           also append the row to FILE (header when the file is new)\n"
        "  --no-peak            skip the peak microbenchmark\n"
        "  --gemm               time the step's matrix products alone on random weights (no model)\n"
        "  --only NAME          with --gemm: only the shapes whose name contains NAME\n"
        "  --reps R             with --gemm: repetitions per shape, the best is reported (default 5)\n"
        "  -h, --help           this help\n");
}

static int arg_int(const char *flag, const char *v, int lo, int hi, int *out) {
    char *end;
    errno = 0;
    long x = v ? strtol(v, &end, 10) : 0;
    if (!v || errno || *end || end == v || x < lo || x > hi) {
        fprintf(stderr, "dgemma bench: %s expects an integer in [%d, %d], got '%s'\n", flag, lo, hi, v ? v : "");
        return -1;
    }
    *out = (int)x;
    return 0;
}

static const char *k_header =
    "label,kernels,threads,weights,act,prompt_len,canvas,steps,ms_per_step,attention_ms,mlp_ms,moe_ms,"
    "lm_head_ms,sample_ms,self_cond_ms,encode_ms_per_token,canvas_tok_s,emitted_tok_s,ttfc_ms,"
    "gflop_per_step,gflops,peak_gflops,peak_kind,pct_of_peak,moe_gflops,moe_pct_of_peak,lm_head_gflops,lm_head_pct_of_peak,"
    "proj_ms,proj_gflops,proj_pct_of_int8,experts_ms,experts_gflops,experts_pct_of_int8,"
    "peak_fp32,peak_bf16,peak_amx_bf16,peak_int8,peak_rss_mb,steal_pct,major_faults,"
    "peak_samples,peak_amx_bf16_min,peak_amx_bf16_max,peak_int8_min,peak_int8_max,"
    "peak_amx_bf16_ld,lm_head_pct_of_ld,vocab_gflops,vocab_pct_of_ld,vocab_roof_ms,experts_dequant_ms,experts_roof_ms,"
    "experts_roof_pct_of_int8,mem_read_gbs,ms_first_step,enc_experts_ms,enc_experts_gflops,enc_experts_pct_of_int8";

/* This process's peak resident set in MB: VmHWM from /proc/self/status, which starts afresh at exec;
 * getrusage's ru_maxrss survives execve, so a bench started by a large parent (a Python script that
 * held a model) reported the parent's peak (3,086 MB for a 7 MB run under a 3 GB parent) */
static double peak_rss_mb(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    double kb = -1.0;
    while (f && fgets(line, sizeof(line), f))
        if (!strncmp(line, "VmHWM:", 6)) { kb = strtod(line + 6, NULL); break; }
    if (f) fclose(f);
    if (kb < 0) {   /* not Linux: the rusage figure */
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        kb = (double)ru.ru_maxrss;
    }
    return kb / 1024.0;
}

/* CPU time of the whole machine from /proc/stat: *steal (taken by the hypervisor) and *total, in
 * ticks; 0 when unavailable (not Linux) */
static int cpu_ticks(double *steal, double *total) {
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return 0;
    double v[10] = {0};
    const int n = fscanf(f, "cpu %lf %lf %lf %lf %lf %lf %lf %lf", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]);
    fclose(f);
    if (n < 8) return 0;
    *steal = v[7];
    *total = 0;
    for (int i = 0; i < 8; i++) *total += v[i];
    return 1;
}

/* After every measured step (outside the step's timing): the session's profile is kept after step 1
 * (the row reports steps 2..S), and the peaks are sampled, and once more, longer, after the run; the
 * percentages are held against their mean, what the machine gave while the steps ran. On a shared VM
 * one measurement taken a minute away from the steps was 3x off either way. */
enum { N_PEAKS = sizeof(dg_peaks) / sizeof(double) };   /* dg_peaks is N_PEAKS doubles */
_Static_assert(sizeof(dg_peaks) == N_PEAKS * sizeof(double), "dg_peaks must hold doubles only (peak_add walks it as an array)");

typedef struct {
    dg_pool *pool;
    int n;
    dg_peaks sum, lo, hi;
    double ms;   /* spent sampling: taken out of the time to first canvas and emitted tokens/s */
    int sample;  /* sample the peaks after each step (not with --no-peak) */
    const dg_session *s;
    dg_profile first;   /* the session's profile after step 1, the one step without self-conditioning */
    int have_first;
} step_log;

static void peak_add(step_log *l, const dg_peaks *p) {
    double *s = &l->sum.fp32, *lo = &l->lo.fp32, *hi = &l->hi.fp32;
    const double *v = &p->fp32;
    for (int i = 0; i < N_PEAKS; i++) {
        s[i] += v[i];
        if (!l->n || v[i] < lo[i]) lo[i] = v[i];
        if (!l->n || v[i] > hi[i]) hi[i] = v[i];
    }
    l->n++;
}

static int on_step(void *user, const dg_step_event *ev) {
    step_log *l = user;
    if (ev->step == 1 && ev->canvas == 0) {
        dg_session_profile(l->s, &l->first);
        l->have_first = 1;
    }
    if (!l->sample) return 0;
    const double t0 = now_ms();
    dg_peaks p;
    dg_bench_peaks_for(l->pool, &p, 0.05);
    peak_add(l, &p);
    l->ms += now_ms() - t0;
    return 0;
}

int dg_bench_main(int argc, char **argv) {
    const char *model = NULL, *label = NULL, *csv = NULL;
    int prompt_len = 100, steps = 8, no_peak = 0, gemm = 0, reps = 5;
    const char *only = NULL;
    dg_session_params sp = dg_session_default_params();
    static const char *knames[] = {"auto", "ref", "generic", "avx2", "avx512", "amx", "neon"};
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return 0; }
        if (!strcmp(a, "--no-peak")) { no_peak = 1; continue; }
        if (!strcmp(a, "--gemm")) { gemm = 1; continue; }
        if (!v) { fprintf(stderr, "dgemma bench: %s needs a value (see --help)\n", a); return 2; }
        int bad = 0;
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "-p") || !strcmp(a, "--prompt-len")) bad = arg_int(a, v, 1, 1 << 20, &prompt_len);
        else if (!strcmp(a, "-s") || !strcmp(a, "--steps")) bad = arg_int(a, v, 1, 10000, &steps);
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) bad = arg_int(a, v, 1, 1024, &sp.n_threads);
        else if (!strcmp(a, "-b") || !strcmp(a, "--n-batch")) bad = arg_int(a, v, 1, 1 << 16, &sp.n_batch);
        else if (!strcmp(a, "--kernels")) {
            bad = 1;
            for (int k = 0; k < 7; k++)
                if (!strcmp(v, knames[k])) { sp.kernels = (dg_kernels)k; bad = 0; }
            if (bad) fprintf(stderr, "dgemma bench: --kernels expects auto, ref, generic, avx2, avx512, amx or neon, got '%s'\n", v);
        } else if (!strcmp(a, "--label")) label = v;
        else if (!strcmp(a, "--csv")) csv = v;
        else if (!strcmp(a, "--only")) only = v;
        else if (!strcmp(a, "--reps")) bad = arg_int(a, v, 1, 1000, &reps);
        else { fprintf(stderr, "dgemma bench: unknown option '%s' (see --help)\n", a); return 2; }
        if (bad) return 2;
        i++;
    }
    if (gemm) {
        dg_pool *pool = dg_pool_create(sp.n_threads > 0 ? sp.n_threads : dg_cpu_count());
        if (!pool) { fprintf(stderr, "dgemma bench: cannot start the thread pool\n"); return 1; }
        const int r = dg_bench_gemm(pool, reps, only);
        dg_pool_free(pool);
        return r;
    }
    if (!model) { fprintf(stderr, "dgemma bench: --model is required (see --help)\n"); return 2; }
    char err[1024];
    dg_engine *e = NULL;
    dg_session *s = NULL;
    int32_t *prompt = NULL, *out = NULL;
    int rc = 1;
    if (dg_engine_load(model, NULL, &e, err, sizeof(err))) { fprintf(stderr, "dgemma bench: %s\n", err); return 1; }
    const dg_model_info *in = dg_engine_info(e);
    const int C = in->canvas_length;
    sp.n_ctx = prompt_len + 2 * C + 1;
    if (dg_session_create(e, &sp, &s, err, sizeof(err))) { fprintf(stderr, "dgemma bench: %s\n", err); goto done; }
    prompt = malloc(sizeof(int32_t) * (size_t)prompt_len);
    out = malloc(sizeof(int32_t) * (size_t)C);
    if (!prompt || !out) { fprintf(stderr, "dgemma bench: out of memory\n"); goto done; }
    for (int i = 0; i < prompt_len; i++) prompt[i] = (int32_t)((7919u * (unsigned)i + 13u) % (unsigned)in->vocab_size);

    dg_gen_params p = dg_gen_default_params(e);
    p.max_new_tokens = C;
    p.n_eos = 0;
    p.seed = 1;
    p.stability_threshold = steps;   /* never stable before the last step: exactly S steps */
    int n_out;
    dg_gen_stats st;
    p.max_denoising_steps = 1;       /* warm-up */
    if (dg_generate(s, prompt, prompt_len, &p, NULL, out, C, &n_out, &st, err, sizeof(err))) { fprintf(stderr, "dgemma bench: %s\n", err); goto done; }
    dg_session_reset(s);
    dg_session_profile_reset(s);
    /* the measured part's share of stolen CPU and its major page faults (weights read from disk) */
    double steal0 = 0, total0 = 0, steal1 = 0, total1 = 0;
    const int have_ticks = cpu_ticks(&steal0, &total0);
    struct rusage ru0;
    getrusage(RUSAGE_SELF, &ru0);
    p.max_denoising_steps = steps;
    p.stability_threshold = steps;
    step_log pl;
    memset(&pl, 0, sizeof(pl));
    pl.pool = dg_session_pool(s);
    pl.sample = !no_peak;
    pl.s = s;
    const dg_callbacks cbs = {on_step, NULL, &pl};
    if (dg_generate(s, prompt, prompt_len, &p, &cbs, out, C, &n_out, &st, err, sizeof(err))) { fprintf(stderr, "dgemma bench: %s\n", err); goto done; }
    /* one canvas: every sampling happened before it was committed */
    st.ms_first_canvas -= pl.ms;
    st.ms_total -= pl.ms;
    st.emitted_tok_per_s = st.ms_total > 0 ? st.n_emitted / (st.ms_total * 1e-3) : 0.0;
    struct rusage ru1;
    getrusage(RUSAGE_SELF, &ru1);
    const double steal_pct = have_ticks && cpu_ticks(&steal1, &total1) && total1 > total0 ? 100.0 * (steal1 - steal0) / (total1 - total0) : -1.0;
    const long majflt = ru1.ru_majflt - ru0.ru_majflt;
    dg_profile pr;
    dg_session_profile(s, &pr);
    /* The step the row reports is a self-conditioned one: steps 2..S. Step 1 has no previous logits,
     * so no soft embedding (P.E, a quarter to a half of a step on a bf16 model) and no
     * self-conditioning MLP; averaging it in understated a step by up to P.E / S, and it is not what
     * compare_transformers.py times for transformers ((t_S - t_1) / (S - 1)). ms_first_step is step 1
     * alone. With S = 1 the row is that step. */
    const double ms_first_step = pl.have_first ? pl.first.decode + pl.first.sample : st.ms_per_step;
    double ms_step = st.ms_per_step;
    if (pl.have_first && pr.n_decode > pl.first.n_decode) {
        const dg_profile *f = &pl.first;   /* every decoder stage; the encoder's time stays whole */
        pr.attention -= f->attention;
        pr.mlp -= f->mlp;
        pr.moe -= f->moe;
        pr.self_cond -= f->self_cond;
        pr.lm_head -= f->lm_head;
        pr.sample -= f->sample;
        pr.decode -= f->decode;
        pr.proj -= f->proj;
        pr.experts -= f->experts;
        pr.n_decode -= f->n_decode;
        ms_step = (pr.decode + pr.sample) / pr.n_decode;
    }
    st.ms_per_step = ms_step;
    const double tc = now_ms();
    if (dg_encode(s, out, C, err, sizeof(err))) { fprintf(stderr, "dgemma bench: %s\n", err); goto done; }
    const double ms_commit = now_ms() - tc;
    const double enc_per_tok = (pr.encode + ms_commit) / (prompt_len + C);
    /* the encoder's expert products (prompt and commit pass), against the int8 peak like the
     * decoder's: the same kernels with about 4x the tokens per expert (a 1,024-token chunk of the
     * 26B-A4B routes 8,192 rows over 128 experts, a canvas 2,048) */
    dg_profile pe;
    dg_session_profile(s, &pe);
    const double enc_exp_flop = (double)(prompt_len + C) * (in->n_layers > 1 ? in->n_layers - 1 : 0) *
                                2.0 * in->n_experts_used * 3.0 * in->hidden_size * in->expert_size;
    const double enc_exp_gf = pe.enc_experts > 0 ? enc_exp_flop / (pe.enc_experts * 1e-3) / 1e9 : 0.0;

    /* the peak RSS before the bandwidth buffer below comes and goes */
    const double rss_mb = peak_rss_mb();
    dg_peaks pk;
    memset(&pk, 0, sizeof(pk));
    double mem_gbs = 0.0;
    if (!no_peak) {
        mem_gbs = dg_bench_mem_gbs(dg_session_pool(s), (size_t)512 << 20);
        dg_bench_peaks(dg_session_pool(s), &pk);
        peak_add(&pl, &pk);
        double *v = &pk.fp32;
        for (int i = 0; i < N_PEAKS; i++) v[i] = (&pl.sum.fp32)[i] / pl.n;
    }
    const char *kern = dg_session_kernels(s);
    const int bf16 = !strcmp(in->act_dtype, "BF16");
    double peak = pk.fp32;
    const char *peak_kind = "fp32";
    if (!strcmp(kern, "amx") && bf16) { peak = pk.amx_bf16; peak_kind = "amx_bf16"; }
    else if (!strcmp(kern, "avx512") && bf16 && pk.bf16 > 0) { peak = pk.bf16; peak_kind = "bf16"; }
    double moe_flop, lm_flop, proj_flop, exp_flop;
    const double flop = step_flops(e, prompt_len, &moe_flop, &lm_flop, &proj_flop, &exp_flop), gflops = flop / (st.ms_per_step * 1e-3) / 1e9;
    const double n = pr.n_decode ? pr.n_decode : 1;
    const double moe_gf = pr.moe > 0 ? moe_flop / (pr.moe / n * 1e-3) / 1e9 : 0, lm_gf = pr.lm_head > 0 ? lm_flop / (pr.lm_head / n * 1e-3) / 1e9 : 0;
    /* the products alone, against the int8 peak (issue 6's measure for the quantized models) */
    const double proj_gf = pr.proj > 0 ? proj_flop / (pr.proj / n * 1e-3) / 1e9 : 0, exp_gf = pr.experts > 0 ? exp_flop / (pr.experts / n * 1e-3) / 1e9 : 0;
    /* the two vocabulary products (LM head, self-conditioning P.E) against the tiles' roof with operand
     * loads: the least time they can take here, whatever the kernel */
    const double sc_flop = (double)in->canvas_length * 2.0 * in->vocab_size * in->hidden_size;
    const double vocab_ms = (pr.lm_head + pr.self_cond) / n;
    const double vocab_gf = vocab_ms > 0 ? (lm_flop + sc_flop) / (vocab_ms * 1e-3) / 1e9 : 0;
    const double ld = pk.amx_bf16_ld, vocab_roof_ms = ld > 0 ? (lm_flop + sc_flop) / (ld * 1e9) * 1e3 : 0;
    /* The experts' roof on the AMX path: every expert weight turned into bf16 tile rows at the rate the
     * dequantizer reaches with its rows in cache (dg_bench_dequant_gws, bf16 weights need none), then
     * their products at the loaded tile roof. The two add up on a core where they do not overlap, as
     * on the test VM (ARCHITECTURE.md, negative knowledge); the dequantization alone is a floor
     * anywhere. Every expert counts: 256 x top-8 routings leave none of 128 unused but by 1e-7 odds. */
    double deq_ms = 0.0, exp_roof_ms = 0.0;
    if (!no_peak && !strcmp(kern, "amx") && ld > 0) {
        int ok = 1;
        struct { dg_dtype dt; int64_t k; double gws; } seen[8];
        int ns = 0;
        for (int l = 0; l < e->cfg.n_layers && ok; l++) {
            const dg_mat *ms[2] = {&e->layers[l].experts_gate_up, &e->layers[l].experts_down};
            for (int m = 0; m < 2 && ok; m++) {
                const dg_mat *w = ms[m];
                if (w->dt == DG_BF16) continue;
                double gws = 0.0;
                for (int i = 0; i < ns; i++)
                    if (seen[i].dt == w->dt && seen[i].k == w->cols) gws = seen[i].gws;
                if (gws <= 0.0) {
                    gws = dg_bench_dequant_gws(dg_session_pool(s), w->dt, w->cols, 0.1);
                    if (ns < 8) { seen[ns].dt = w->dt; seen[ns].k = w->cols; seen[ns].gws = gws; ns++; }
                }
                if (gws <= 0.0) ok = 0;
                else deq_ms += (double)w->rows * (double)w->cols / (gws * 1e9) * 1e3;
            }
        }
        if (ok) exp_roof_ms = deq_ms + exp_flop / (ld * 1e9) * 1e3;
        else deq_ms = 0.0;   /* a type without a measured rate: no roof, and no partial sum either */
    }
    const double exp_roof_pct = exp_roof_ms > 0 && pk.int8 > 0 ? 100.0 * exp_flop / (exp_roof_ms * 1e-3) / 1e9 / pk.int8 : 0.0;
    char row[2048];
    snprintf(row, sizeof(row),
             "%s,%s,%d,%s,%s,%d,%d,%d,%.1f,%.1f,%.1f,%.1f,%.1f,%.1f,%.1f,%.3f,%.1f,%.2f,%.0f,%.1f,%.1f,%.1f,%s,%.1f,%.1f,%.1f,%.1f,%.1f,"
             "%.1f,%.1f,%.1f,%.1f,%.1f,%.1f,%.1f,%.1f,%.1f,%.1f,%.0f,%.1f,%ld,%d,%.1f,%.1f,%.1f,%.1f,%.1f,%.1f,%.1f,%.1f,%.1f,%.1f,%.1f,%.1f,%.2f,%.1f,%.1f,%.1f,%.1f",
             label ? label : model, kern, dg_session_threads(s), in->weight_dtype, in->act_dtype, prompt_len, C, steps,
             st.ms_per_step, pr.attention / n, pr.mlp / n, pr.moe / n, pr.lm_head / n, pr.sample / n, pr.self_cond / n,
             enc_per_tok, st.canvas_tok_per_s, st.emitted_tok_per_s, st.ms_first_canvas, flop / 1e9, gflops, peak, peak_kind,
             peak > 0 ? 100.0 * gflops / peak : 0.0, moe_gf, peak > 0 ? 100.0 * moe_gf / peak : 0.0, lm_gf,
             peak > 0 ? 100.0 * lm_gf / peak : 0.0, pr.proj / n, proj_gf, pk.int8 > 0 ? 100.0 * proj_gf / pk.int8 : 0.0,
             pr.experts / n, exp_gf, pk.int8 > 0 ? 100.0 * exp_gf / pk.int8 : 0.0,
             pk.fp32, pk.bf16, pk.amx_bf16, pk.int8, rss_mb, steal_pct, majflt, pl.n, pl.lo.amx_bf16, pl.hi.amx_bf16, pl.lo.int8,
             pl.hi.int8, ld, ld > 0 ? 100.0 * lm_gf / ld : 0.0, vocab_gf, ld > 0 ? 100.0 * vocab_gf / ld : 0.0, vocab_roof_ms, deq_ms, exp_roof_ms, exp_roof_pct, mem_gbs, ms_first_step,
             pe.enc_experts, enc_exp_gf, pk.int8 > 0 ? 100.0 * enc_exp_gf / pk.int8 : 0.0);
    printf("%s\n%s\n", k_header, row);
    if (csv) {
        FILE *f = fopen(csv, "a+");
        if (!f) { fprintf(stderr, "dgemma bench: %s: %s\n", csv, strerror(errno)); goto done; }
        fseek(f, 0, SEEK_END);
        if (ftell(f) == 0) fprintf(f, "%s\n", k_header);
        fprintf(f, "%s\n", row);
        fclose(f);
    }
    fprintf(stderr, "bench: %s kernels, %d threads: %.1f ms/step (%.1f GFLOP/step, %.1f GFLOP/s = %.1f%% of the %s peak %.0f), "
            "MoE %.1f GFLOP/s (%.1f%%), LM head %.1f GFLOP/s (%.1f%%), projections %.1f GFLOP/s and experts %.1f (%.1f%% and %.1f%% of the int8 peak %.0f, %d samples %.0f-%.0f), ttfc %.0f ms, encode %.3f ms/token, peak RSS %.0f MB, "
            "%.1f%% of the CPU stolen, %ld major faults; LM head and P.E %.1f GFLOP/s = %.1f%% of the tiles' loaded roof %.0f "
            "(at the roof: %.0f ms/step); experts' roof %.0f ms/step (dequantization %.0f) = %.1f%% of the int8 peak; memory read %.1f GB/s\n", kern,
            dg_session_threads(s), st.ms_per_step, flop / 1e9, gflops, peak > 0 ? 100.0 * gflops / peak : 0.0, peak_kind, peak,
            moe_gf, peak > 0 ? 100.0 * moe_gf / peak : 0.0, lm_gf, peak > 0 ? 100.0 * lm_gf / peak : 0.0, proj_gf, exp_gf,
            pk.int8 > 0 ? 100.0 * proj_gf / pk.int8 : 0.0, pk.int8 > 0 ? 100.0 * exp_gf / pk.int8 : 0.0, pk.int8, pl.n, pl.lo.int8, pl.hi.int8, st.ms_first_canvas, enc_per_tok, rss_mb,
            steal_pct, majflt, vocab_gf, ld > 0 ? 100.0 * vocab_gf / ld : 0.0, ld, vocab_roof_ms, exp_roof_ms, deq_ms, exp_roof_pct, mem_gbs);
    rc = 0;
done:
    free(prompt);
    free(out);
    dg_session_free(s);
    dg_engine_free(e);
    return rc;
}
