#define _POSIX_C_SOURCE 200809L
/*
 * sampler.c - block-diffusion generation, as transformers' DiffusionGemmaGenerationMixin.generate():
 *
 *   encode(prompt)
 *   for each canvas:  canvas = uniform random ids; no self-conditioning; stability history = -1
 *     for cur_step = S .. 1:
 *       logits = decode(canvas, sc)                      softcapped float32 [C, V]
 *       z = logits / T(cur_step)                         float32 (linear schedule, t_max first)
 *       per position: sample ~ softmax(z), argmax z, entropy H of softmax(z)
 *       accept the lowest-entropy prefix with sum(H) - max(H) <= entropy_bound
 *       canvas = accepted ? sample : fresh uniform id    (non-accepted positions are renoised)
 *       stop if argmax repeated `stability` steps and mean(H) < confidence
 *       sc = z rounded to the embedding dtype            (the next step's self-conditioning input)
 *     commit the LAST STEP'S ARGMAX (never the renoised canvas); stop after a canvas with an EOS;
 *     otherwise encode the committed canvas into the cache and continue.
 *
 * Random draws, in this order, from one seeded stream: C ids to initialise a canvas; per step C
 * uniforms (sampling, position order) then C ids (renoising, every position, used where rejected).
 * tools/reference/dg_rng.py replays the same stream inside the reference's generate().
 * All buffers are allocated before the loop (once per session); nothing is allocated in a step.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "diffusion/rng.h"
#include "kernels/gemm.h"
#include "diffusion/sampler.h"
#include "internal.h"

/* ===== the pieces (unit-tested against the reference functions) ===== */

float dg_temperature(int cur_step, int max_steps, double t_min, double t_max) {
    const float frac = (float)cur_step / (float)max_steps;   /* int tensor / int -> float32 */
    return (float)t_min + (float)(t_max - t_min) * frac;      /* Python scalars meet float32 tensors */
}

double dg_row_stats(const float *z, int V, double *w, float *entropy, int32_t *argmax) {
    int best = 0;
    for (int v = 1; v < V; v++)
        if (z[v] > z[best]) best = v;
    const double mx = z[best];
    double sum = 0.0, wd = 0.0;
    for (int v = 0; v < V; v++) {
        const double d = (double)z[v] - mx;
        w[v] = exp(d);
        sum += w[v];
        wd -= w[v] * d;
    }
    *argmax = best;
    *entropy = (float)(log(sum) + wd / sum);   /* H = log S + sum_v p_v (max - z_v) */
    return sum;
}

int32_t dg_row_sample(const double *w, int V, double wsum, double u) {
    const double target = u * wsum;
    double acc = 0.0;
    int last = 0;
    for (int v = 0; v < V; v++) {
        if (w[v] <= 0.0) continue;
        acc += w[v];
        last = v;
        if (acc > target) return v;
    }
    return last;   /* u * wsum rounded up to the total */
}

int dg_accept(const float *H, int n, double bound, int *order, uint8_t *accepted) {
    /* stable insertion sort by entropy (ties keep position order); in place, no allocation
     * (glibc's qsort may malloc), and n is a canvas (256) */
    for (int i = 0; i < n; i++) {
        int k = i;
        while (k > 0 && H[order[k - 1]] > H[i]) { order[k] = order[k - 1]; k--; }
        order[k] = i;
    }
    double run = 0.0;   /* torch's CPU cumsum accumulates float32 in double */
    int count = 0;
    for (int k = 0; k < n; k++) {
        const int j = order[k];
        run += H[j];
        const float c = (float)run;
        accepted[j] = (c - H[j]) <= (float)bound;   /* float32 tensor <= Python float */
        count += accepted[j];
    }
    return count;
}

int dg_stop_rule(const int32_t *argmax, const float *H, int n, int stability, double confidence, int32_t *hist) {
    int stable = 1;
    if (stability > 0) {
        for (int k = 0; k < stability && stable; k++)
            for (int i = 0; i < n; i++)
                if (hist[(size_t)k * n + i] != argmax[i]) { stable = 0; break; }
        memmove(hist, hist + n, sizeof(int32_t) * (size_t)n * (size_t)(stability - 1));
        memcpy(hist + (size_t)n * (size_t)(stability - 1), argmax, sizeof(int32_t) * (size_t)n);
    }
    double sum = 0.0;
    for (int i = 0; i < n; i++) sum += H[i];
    const float mean = (float)(sum / n);
    return stable && mean < (float)confidence;
}

static int32_t row_sample_fast(const float *w, int V, float wsum, double u) {
    const double target = u * wsum;
    double acc = 0.0;
    int last = 0;
    for (int v = 0; v < V; v += 64) {   /* skip whole chunks first, then walk the one that crosses */
        const int m = V - v < 64 ? V - v : 64;
        float cs = 0.0f;
        for (int i = 0; i < m; i++) cs += w[v + i];
        if (acc + cs <= target) {
            acc += cs;
            for (int i = m - 1; i >= 0; i--)
                if (w[v + i] > 0.0f) { last = v + i; break; }
            continue;
        }
        for (int i = 0; i < m; i++) {
            if (w[v + i] <= 0.0f) continue;
            acc += w[v + i];
            last = v + i;
            if (acc > target) return v + i;
        }
    }
    return last;
}

/* One step's per-position work, positions in parallel: z = logits / T, argmax, entropy, sample. */
typedef struct {
    dg_gen_buf *b;
    int V, fast;
    float T;
    dg_dtype wdt;
} step_job;

static void step_rows(void *ctx, int i, int tid) {
    const step_job *j = ctx;
    dg_gen_buf *b = j->b;
    float *z = b->logits + (size_t)i * j->V;
    double *w = b->w + (size_t)tid * j->V;
    if (j->fast) {
        /* three passes over the row: z = l / T with its max and argmax; w = exp(z - max) with the sums
         * of the softmax and the entropy, z cast to the compute dtype for the next step's
         * self-conditioning; the sample. Float32 exp and sums in the kernels' order: the same values as
         * the separate passes (dg_div_f32, dg_max_f32, dg_expsum_f32, dg_dotdiff_f32, dg_round_act_fast). */
        int best;
        float dd;
        const float mx = dg_div_max_f32(z, j->V, j->T, &best);
        const float wsum = dg_expsum_dd_f32(z, (float *)w, j->V, mx, &dd, j->wdt);
        b->argmax[i] = best;
        b->H[i] = logf(wsum) + dd / wsum;
        b->sample[i] = row_sample_fast((const float *)w, j->V, wsum, b->u[i]);
        return;
    }
    for (int v = 0; v < j->V; v++) z[v] = z[v] / j->T;
    const double wsum = dg_row_stats(z, j->V, w, &b->H[i], &b->argmax[i]);
    b->sample[i] = dg_row_sample(w, j->V, wsum, b->u[i]);
    /* the next step self-conditions on z as the reference passes it: cast to its compute dtype */
    dg_round_act(z, (size_t)j->V, j->wdt);
}

/* ===== parameters ===== */

dg_gen_params dg_gen_default_params(const dg_engine *e) {
    const dg_config *c = &e->cfg;
    dg_gen_params p;
    memset(&p, 0, sizeof(p));
    p.max_new_tokens = c->gen_max_new_tokens;
    p.max_denoising_steps = c->gen_max_denoising_steps;
    p.entropy_bound = c->gen_entropy_bound;
    p.t_min = c->gen_t_min;
    p.t_max = c->gen_t_max;
    p.stability_threshold = (int)c->gen_stability_threshold;
    p.confidence_threshold = c->gen_confidence_threshold;
    p.n_eos = c->n_eos < DG_MAX_EOS_IDS ? c->n_eos : DG_MAX_EOS_IDS;
    for (int i = 0; i < p.n_eos; i++) p.eos_ids[i] = c->eos_ids[i];
    p.seed = 0;
    return p;
}

int dg_gen_params_check(const dg_engine *e, const dg_gen_params *p, char *err, size_t errlen) {
    if (!p) return dg_fail(err, errlen, "generate: no parameters");
    if (p->max_new_tokens < 1) return dg_fail(err, errlen, "generate: max_new_tokens must be >= 1 (got %d)", p->max_new_tokens);
    if (p->max_denoising_steps < 1 || p->max_denoising_steps > 100000)
        return dg_fail(err, errlen, "generate: max_denoising_steps must be in [1, 100000] (got %d)", p->max_denoising_steps);
    if (!(p->entropy_bound > 0.0) || !isfinite(p->entropy_bound))
        return dg_fail(err, errlen, "generate: entropy_bound must be a finite number > 0 (got %g)", p->entropy_bound);
    /* the reference's rules: t_min >= 0, t_max > t_min (so every temperature is > 0), stability >= 0,
     * confidence > 0, entropy_bound > 0 */
    if (!(p->t_min >= 0.0) || !isfinite(p->t_min)) return dg_fail(err, errlen, "generate: t_min must be a finite number >= 0 (got %g)", p->t_min);
    if (!(p->t_max > p->t_min) || !isfinite(p->t_max))
        return dg_fail(err, errlen, "generate: t_max must be a finite number > t_min (got t_max %g, t_min %g)", p->t_max, p->t_min);
    if (p->stability_threshold < 0)
        return dg_fail(err, errlen, "generate: stability_threshold must be >= 0 (got %d)", p->stability_threshold);
    if (!(p->confidence_threshold > 0.0) || !isfinite(p->confidence_threshold))
        return dg_fail(err, errlen, "generate: confidence_threshold must be a finite number > 0 (got %g)", p->confidence_threshold);
    if (p->n_eos < 0 || p->n_eos > DG_MAX_EOS_IDS)
        return dg_fail(err, errlen, "generate: n_eos must be in [0, %d] (got %d)", DG_MAX_EOS_IDS, p->n_eos);
    for (int i = 0; i < p->n_eos; i++)
        if (p->eos_ids[i] < 0 || p->eos_ids[i] >= e->cfg.vocab_size)
            return dg_fail(err, errlen, "generate: eos id %d is outside the vocabulary [0, %d)", p->eos_ids[i], e->cfg.vocab_size);
    return 0;
}

/* ===== the loop ===== */

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

static int is_eos(const dg_gen_params *p, int32_t t) {
    for (int i = 0; i < p->n_eos; i++)
        if (p->eos_ids[i] == t) return 1;
    return 0;
}

int dg_generate(dg_session *s, const int32_t *prompt, int n_prompt, const dg_gen_params *p, const dg_callbacks *cb,
                int32_t *out, int out_cap, int *n_out, dg_gen_stats *stats, char *err, size_t errlen) {
    const dg_engine *e = dg_session_engine(s);
    const int C = e->cfg.canvas_length, V = e->cfg.vocab_size;
    dg_gen_stats st;
    memset(&st, 0, sizeof(st));
    st.eos_id = -1;
    if (n_out) *n_out = 0;
    if (stats) *stats = st;
    if (dg_gen_params_check(e, p, err, errlen)) return -1;
    if (n_prompt < 0 || (n_prompt > 0 && !prompt)) return dg_fail(err, errlen, "generate: bad prompt array");
    if (out_cap < 0 || (out_cap > 0 && !out)) return dg_fail(err, errlen, "generate: bad output array");
    const int n_canvases = (p->max_new_tokens + C - 1) / C;
    /* the prompt and every committed canvas but the last must fit in the cache */
    const int64_t need = (int64_t)dg_session_n_past(s) + n_prompt + (int64_t)(n_canvases - 1) * C;
    if (need > dg_session_n_ctx(s))
        return dg_fail(err, errlen, "generate: %d cached + %d prompt + %d committed canvas tokens exceed n_ctx %d",
                       dg_session_n_past(s), n_prompt, (n_canvases - 1) * C, dg_session_n_ctx(s));
    /* a history of k >= max_steps argmaxes can never be all filled in, exactly like k = max_steps: the
     * rule never fires; keep at most max_steps rows */
    const int stab = p->stability_threshold < p->max_denoising_steps ? p->stability_threshold : p->max_denoising_steps;
    const int hist_n = stab > 0 ? stab : 1;
    dg_gen_buf *b = dg_session_gen_buf(s, hist_n, err, errlen);
    if (!b) return -1;

    const double t0 = now_ms();
    if (n_prompt > 0 && dg_encode(s, prompt, n_prompt, err, errlen)) return -1;
    st.n_prompt = n_prompt;
    st.ms_prompt = now_ms() - t0;
    dg_rng rng;
    dg_rng_seed(&rng, p->seed);
    double ms_steps = 0.0;
    int emitted = 0;
    dg_finish finish = DG_FINISH_NONE;

    for (int ci = 0; ci < n_canvases && finish == DG_FINISH_NONE; ci++) {
        for (int i = 0; i < C; i++) b->canvas[i] = (int32_t)dg_rng_below(&rng, (uint32_t)V);
        for (int i = 0; i < hist_n * C; i++) b->hist[i] = -1;
        const float *sc = NULL;
        int steps = 0;
        for (int cur = p->max_denoising_steps; cur >= 1; cur--) {
            const double ts = now_ms();
            if (dg_decode(s, b->canvas, C, sc, b->logits, err, errlen)) return -1;
            const double tsample = now_ms();
            const float T = dg_temperature(cur, p->max_denoising_steps, p->t_min, p->t_max);
            for (int i = 0; i < C; i++) b->u[i] = dg_rng_uniform(&rng);
            step_job sj = {b, V, dg_session_fast(s), T, e->wdt};
            dg_pool_run(dg_session_pool(s), C, step_rows, &sj);
            const int n_acc = dg_accept(b->H, C, p->entropy_bound, b->order, b->accepted);
            for (int i = 0; i < C; i++) {
                const int32_t fresh = (int32_t)dg_rng_below(&rng, (uint32_t)V);
                b->canvas[i] = b->accepted[i] ? b->sample[i] : fresh;
            }
            const int stop = dg_stop_rule(b->argmax, b->H, C, stab, p->confidence_threshold, b->hist);
            sc = b->logits;
            dg_session_prof(s)->sample += now_ms() - tsample;
            steps++;
            ms_steps += now_ms() - ts;
            if (cb && cb->on_step) {
                double hs = 0.0;
                for (int i = 0; i < C; i++) hs += b->H[i];
                dg_step_event ev = {ci, steps, C, n_acc, (float)(hs / C), T, stop, b->argmax, b->accepted, b->canvas};
                if (cb->on_step(cb->user, &ev)) { finish = DG_FINISH_CANCELLED; break; }
            }
            if (stop) break;
        }
        st.n_steps += steps;
        if (finish == DG_FINISH_CANCELLED) break;
        /* commit the argmax of the last executed step */
        int take = C, eos = 0;
        int32_t eos_id = -1;
        for (int i = 0; i < C; i++)
            if (is_eos(p, b->argmax[i])) { take = i; eos = 1; eos_id = b->argmax[i]; break; }
        if (take > p->max_new_tokens - emitted) take = p->max_new_tokens - emitted;
        for (int i = 0; i < take && emitted + i < out_cap; i++) out[emitted + i] = b->argmax[i];
        emitted += take;
        st.n_canvases++;
        if (st.n_canvases == 1) st.ms_first_canvas = now_ms() - t0;
        if (cb && cb->on_canvas) {
            dg_canvas_event ev = {ci, steps, b->argmax, take, eos, eos_id};
            if (cb->on_canvas(cb->user, &ev)) { finish = DG_FINISH_CANCELLED; break; }
        }
        if (eos) { finish = DG_FINISH_EOS; st.eos_id = eos_id; }
        else if (emitted >= p->max_new_tokens) finish = DG_FINISH_LENGTH;
        else if (dg_encode(s, b->argmax, C, err, errlen)) return -1;   /* the committed canvas joins the context */
    }
    st.finish = finish == DG_FINISH_NONE ? DG_FINISH_LENGTH : finish;
    st.n_emitted = emitted;
    st.ms_total = now_ms() - t0;
    st.ms_per_step = st.n_steps ? ms_steps / st.n_steps : 0.0;
    st.canvas_tok_per_s = ms_steps > 0 ? (double)st.n_steps * C / (ms_steps * 1e-3) : 0.0;
    st.emitted_tok_per_s = st.ms_total > 0 ? emitted / (st.ms_total * 1e-3) : 0.0;
    if (n_out) *n_out = emitted < out_cap ? emitted : out_cap;
    if (stats) *stats = st;
    return 0;
}
