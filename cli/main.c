/*
 * main.c - the dgemma command line.
 *
 *   dgemma run       answer a prompt through the chat template, streamed as text   (run.c)
 *   dgemma chat      an interactive conversation                                   (run.c)
 *   dgemma generate  block-diffusion generation from prompt token ids
 *   dgemma forward   one encoder + decoder pass, logits to .npy (parity checks on any checkpoint)
 *   dgemma inspect   config, tensors, sizes of a checkpoint
 *   dgemma tokenize / detokenize   text <-> token ids with the checkpoint's tokenizer.json
 *   dgemma quantize / synth        GGUF files from a checkpoint / random weights (cli/quantize.c)
 *   dgemma serve     the OpenAI-compatible HTTP server with a live web view (server/)
 *
 * Errors go to stderr with a non-zero exit; results to stdout or the named file.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dgemma.h"
#include "cli.h"
#include "npy.h"
#include "bench/bench.h"
#include "quantize.h"
#include "server/server.h"

double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int parse_int(const char *flag, const char *v, int lo, int hi, int *out) {
    char *end;
    errno = 0;
    long x = v ? strtol(v, &end, 10) : 0;
    if (!v || errno || *end || end == v || x < lo || x > hi) {
        fprintf(stderr, "dgemma: %s expects an integer in [%d, %d], got '%s'\n", flag, lo, hi, v ? v : "");
        return -1;
    }
    *out = (int)x;
    return 0;
}

int parse_act(const char *v, dg_act_precision *out) {
    if (!v) return -1;
    if (!strcmp(v, "auto")) *out = DG_ACT_AUTO;
    else if (!strcmp(v, "f32")) *out = DG_ACT_F32;
    else if (!strcmp(v, "bf16")) *out = DG_ACT_BF16;
    else if (!strcmp(v, "f16")) *out = DG_ACT_F16;
    else {
        fprintf(stderr, "dgemma: --act expects auto, f32, bf16 or f16, got '%s'\n", v);
        return -1;
    }
    return 0;
}

int parse_kernels(const char *v, dg_kernels *out) {
    static const char *names[] = {"auto", "ref", "generic", "avx2", "avx512", "amx", "neon"};
    for (int i = 0; v && i < (int)(sizeof(names) / sizeof(names[0])); i++)
        if (!strcmp(v, names[i])) { *out = (dg_kernels)i; return 0; }
    fprintf(stderr, "dgemma: --kernels expects auto, ref, generic, avx2, avx512, amx or neon, got '%s'\n", v ? v : "");
    return -1;
}

/* the session options every model command takes; 1 if a was one (*bad set on a bad value) */
int session_option(const char *a, const char *v, dg_session_params *sp, int *bad) {
    if (!strcmp(a, "-t") || !strcmp(a, "--threads")) *bad = parse_int(a, v, 1, 1024, &sp->n_threads);
    else if (!strcmp(a, "--kernels")) *bad = parse_kernels(v, &sp->kernels);
    else if (!strcmp(a, "--sc-top-k")) *bad = parse_int(a, v, 0, 1 << 30, &sp->sc_top_k);
    else return 0;
    return 1;
}

/* ===== forward ===== */

static void usage_forward(FILE *f) {
    fprintf(f,
        "usage: dgemma forward --model DIR --prompt-ids F --canvas-ids F [options] --out logits.npy\n"
        "\n"
        "Encodes the prompt ids (and --commit-ids after them, as a committed canvas), then runs one\n"
        "decoder step over the canvas ids and writes its softcapped logits as float32 .npy [canvas, vocab].\n"
        "Id files are .npy (int32/int64) or text (integers separated by spaces, commas or newlines).\n"
        "\n"
        "options:\n"
        "  -m, --model DIR       Hugging Face checkpoint directory\n"
        "  --prompt-ids F        prompt token ids\n"
        "  --canvas-ids F        canvas token ids (at most canvas_length)\n"
        "  --commit-ids F        ids encoded after the prompt before the canvas (a committed canvas)\n"
        "  --sc-logits F         self-conditioning logits, float32 .npy [canvas, vocab]\n"
        "  --out F               where to write the logits (.npy)\n"
        "  --act auto|f32|bf16|f16  activation precision (auto: the checkpoint dtype, like the reference)\n"
        "  --n-batch N           tokens per encoder chunk (default: 1024, at most n_ctx, at least canvas_length)\n"
        KERNEL_OPTIONS_HELP
        "  -h, --help            this help\n");
}

static int cmd_forward(int argc, char **argv) {
    const char *model = NULL, *prompt_f = NULL, *canvas_f = NULL, *commit_f = NULL, *sc_f = NULL, *out_f = NULL;
    dg_engine_params ep = dg_engine_default_params();
    dg_session_params sp = dg_session_default_params();
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage_forward(stdout); return 0; }
        int takes = 1, bad = 0;
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "--prompt-ids")) prompt_f = v;
        else if (!strcmp(a, "--canvas-ids")) canvas_f = v;
        else if (!strcmp(a, "--commit-ids")) commit_f = v;
        else if (!strcmp(a, "--sc-logits")) sc_f = v;
        else if (!strcmp(a, "--out")) out_f = v;
        else if (!strcmp(a, "--act")) { if (parse_act(v, &ep.act)) return 2; }
        else if (!strcmp(a, "--n-batch")) { if (parse_int(a, v, 1, 1 << 20, &sp.n_batch)) return 2; }
        else if (session_option(a, v, &sp, &bad)) { if (bad) return 2; }
        else {
            fprintf(stderr, "dgemma forward: unknown option '%s' (see --help)\n", a);
            return 2;
        }
        if (takes && !v) { fprintf(stderr, "dgemma forward: %s needs a value\n", a); return 2; }
        i += takes;
    }
    if (!model || !prompt_f || !canvas_f || !out_f) {
        fprintf(stderr, "dgemma forward: --model, --prompt-ids, --canvas-ids and --out are required (see --help)\n");
        return 2;
    }
    char err[1024];
    int rc = 1, np = 0, nc = 0, ncm = 0;
    int32_t *prompt = NULL, *canvas = NULL, *commit = NULL;
    float *sc = NULL, *logits = NULL;
    dg_engine *e = NULL;
    dg_session *s = NULL;
    if (ids_read(prompt_f, &prompt, &np, err, sizeof(err)) || ids_read(canvas_f, &canvas, &nc, err, sizeof(err)) ||
        (commit_f && ids_read(commit_f, &commit, &ncm, err, sizeof(err)))) {
        fprintf(stderr, "dgemma forward: %s\n", err);
        goto out;
    }
    double t0 = now_s();
    if (dg_engine_load(model, &ep, &e, err, sizeof(err))) { fprintf(stderr, "dgemma forward: %s\n", err); goto out; }
    const dg_model_info *in = dg_engine_info(e);
    if (sc_f) {
        int64_t n, cols;
        if (npy_read_f32(sc_f, &sc, &n, &cols, err, sizeof(err))) { fprintf(stderr, "dgemma forward: %s\n", err); goto out; }
        if (cols != in->vocab_size || n != (int64_t)nc * in->vocab_size) {
            fprintf(stderr, "dgemma forward: %s: shape must be [%d, %d] (canvas, vocab)\n", sc_f, nc, in->vocab_size);
            goto out;
        }
    }
    sp.n_ctx = np + ncm + 1;
    if (dg_session_create(e, &sp, &s, err, sizeof(err))) { fprintf(stderr, "dgemma forward: %s\n", err); goto out; }
    double t1 = now_s();
    if (dg_encode(s, prompt, np, err, sizeof(err)) || (commit && dg_encode(s, commit, ncm, err, sizeof(err)))) {
        fprintf(stderr, "dgemma forward: %s\n", err);
        goto out;
    }
    double t2 = now_s();
    logits = malloc(sizeof(float) * (size_t)nc * (size_t)in->vocab_size);
    if (!logits) { fprintf(stderr, "dgemma forward: out of memory\n"); goto out; }
    if (dg_decode(s, canvas, nc, sc, logits, err, sizeof(err))) { fprintf(stderr, "dgemma forward: %s\n", err); goto out; }
    double t3 = now_s();
    if (npy_write_f32(out_f, logits, nc, in->vocab_size, err, sizeof(err))) { fprintf(stderr, "dgemma forward: %s\n", err); goto out; }
    printf("argmax:");
    for (int t = 0; t < nc; t++) {
        const float *row = logits + (size_t)t * in->vocab_size;
        int best = 0;
        for (int v = 1; v < in->vocab_size; v++) if (row[v] > row[best]) best = v;
        printf(" %d", best);
    }
    printf("\n");
    fprintf(stderr, "forward: %s kernels, %d threads; %s weights, %s activations; load %.3f s, encode %d tokens %.3f s, decode %d tokens %.3f s -> %s\n",
            dg_session_kernels(s), dg_session_threads(s), in->weight_dtype, in->act_dtype, t1 - t0, np + ncm, t2 - t1, nc, t3 - t2, out_f);
    rc = 0;
out:
    dg_session_free(s);
    dg_engine_free(e);
    free(prompt); free(canvas); free(commit); free(sc); free(logits);
    return rc;
}

/* ===== generate ===== */

int parse_double(const char *flag, const char *v, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double x = v ? strtod(v, &end) : 0;
    if (!v || errno || *end || end == v || !(x >= lo && x <= hi)) {
        fprintf(stderr, "dgemma: %s expects a number in [%g, %g], got '%s'\n", flag, lo, hi, v ? v : "");
        return -1;
    }
    *out = x;
    return 0;
}

int parse_u64(const char *flag, const char *v, uint64_t *out) {
    char *end;
    errno = 0;
    unsigned long long x = v && *v != '-' ? strtoull(v, &end, 10) : 0;
    if (!v || *v == '-' || errno || *end || end == v) {
        fprintf(stderr, "dgemma: %s expects an unsigned 64-bit integer, got '%s'\n", flag, v ? v : "");
        return -1;
    }
    *out = (uint64_t)x;
    return 0;
}

static void usage_generate(FILE *f) {
    fprintf(f,
        "usage: dgemma generate --model DIR --prompt-ids F [options]\n"
        "\n"
        "Encodes the prompt ids, denoises canvases until an EOS or --max-tokens, and prints the emitted\n"
        "token ids on stdout (statistics on stderr). Defaults come from the checkpoint's\n"
        "generation_config.json.\n"
        "\n"
        "options:\n"
        "  -m, --model DIR          Hugging Face checkpoint directory\n"
        "  --prompt-ids F           prompt token ids (.npy or text; '-' reads text from stdin)\n"
        GEN_OPTIONS_HELP
        "  --n-ctx N                KV cache capacity in tokens (default: what the request needs)\n"
        "  --act auto|f32|bf16|f16  activation precision\n"
        KERNEL_OPTIONS_HELP
        "  -v, --verbose            one line per denoising step on stderr\n"
        "  -h, --help               this help\n");
}

static int gen_on_step(void *user, const dg_step_event *ev) {
    (void)user;
    fprintf(stderr, "canvas %d step %2d  T %.3f  accepted %3d/%d  mean entropy %.4f%s\n", ev->canvas, ev->step,
            ev->temperature, ev->n_accepted, ev->n, ev->mean_entropy, ev->stop ? "  (stable and confident)" : "");
    return 0;
}

int parse_ids_list(const char *v, dg_gen_params *p) {
    p->n_eos = 0;
    const char *c = v;
    while (*c) {
        char *end;
        errno = 0;
        long x = strtol(c, &end, 10);
        if (end == c || errno || x < 0 || x > INT32_MAX || p->n_eos >= DG_MAX_EOS_IDS || (*end && *end != ',')) {
            fprintf(stderr, "dgemma: --eos expects up to %d comma-separated ids, got '%s'\n", DG_MAX_EOS_IDS, v);
            return -1;
        }
        p->eos_ids[p->n_eos++] = (int32_t)x;
        c = *end ? end + 1 : end;
    }
    return 0;
}

/* the sampler options generate, run and chat take; 1 if a was one (*bad set on a bad value) */
int gen_option(const char *a, const char *v, dg_gen_params *p, int *bad) {
    if (!strcmp(a, "-n") || !strcmp(a, "--max-tokens")) *bad = parse_int(a, v, 1, 1 << 24, &p->max_new_tokens);
    else if (!strcmp(a, "--steps")) *bad = parse_int(a, v, 1, 100000, &p->max_denoising_steps);
    else if (!strcmp(a, "--entropy-bound")) *bad = parse_double(a, v, 1e-12, 1e9, &p->entropy_bound);
    else if (!strcmp(a, "--t-min")) *bad = parse_double(a, v, 0, 1e6, &p->t_min);
    else if (!strcmp(a, "--t-max")) *bad = parse_double(a, v, 0, 1e6, &p->t_max);
    else if (!strcmp(a, "--stability")) *bad = parse_int(a, v, 0, 1 << 30, &p->stability_threshold);
    else if (!strcmp(a, "--confidence")) *bad = parse_double(a, v, 0, 1e9, &p->confidence_threshold);
    else if (!strcmp(a, "--eos")) *bad = parse_ids_list(v, p);
    else if (!strcmp(a, "--seed")) *bad = parse_u64(a, v, &p->seed);
    else return 0;
    return 1;
}

static int cmd_generate(int argc, char **argv) {
    const char *model = NULL, *prompt_f = NULL;
    int verbose = 0, n_ctx = 0;
    dg_engine_params ep = dg_engine_default_params();
    /* options are parsed twice: once to find the model (defaults come from it), once to apply them */
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) { usage_generate(stdout); return 0; }
        if ((!strcmp(argv[i], "-m") || !strcmp(argv[i], "--model")) && i + 1 < argc) model = argv[i + 1];
    }
    if (!model) { fprintf(stderr, "dgemma generate: --model is required (see --help)\n"); return 2; }
    char err[1024];
    for (int i = 0; i + 1 < argc; i++)   /* the activation precision is needed to load */
        if (!strcmp(argv[i], "--act") && parse_act(argv[i + 1], &ep.act)) return 2;
    dg_engine *e = NULL;
    dg_session *s = NULL;
    int32_t *prompt = NULL, *out = NULL;
    int rc = 1, np = 0;
    if (dg_engine_load(model, &ep, &e, err, sizeof(err))) { fprintf(stderr, "dgemma generate: %s\n", err); return 1; }
    dg_gen_params p = dg_gen_default_params(e);
    dg_session_params sp = dg_session_default_params();
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0;
        if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) { verbose = 1; continue; }
        if (!v) { fprintf(stderr, "dgemma generate: %s needs a value (see --help)\n", a); rc = 2; goto out; }
            if (!strcmp(a, "-m") || !strcmp(a, "--model") || !strcmp(a, "--act")) {}
        else if (!strcmp(a, "--prompt-ids")) prompt_f = v;
        else if (gen_option(a, v, &p, &bad)) {}
        else if (!strcmp(a, "--n-ctx")) bad = parse_int(a, v, 1, 1 << 30, &n_ctx);
        else if (session_option(a, v, &sp, &bad)) {}
        else { fprintf(stderr, "dgemma generate: unknown option '%s' (see --help)\n", a); rc = 2; goto out; }
        if (bad) { rc = 2; goto out; }
        i++;
    }
    if (!prompt_f) { fprintf(stderr, "dgemma generate: --prompt-ids is required (see --help)\n"); rc = 2; goto out; }
    if (dg_gen_params_check(e, &p, err, sizeof(err))) { fprintf(stderr, "dgemma generate: %s\n", err); rc = 2; goto out; }
    if (ids_read(strcmp(prompt_f, "-") ? prompt_f : "/dev/stdin", &prompt, &np, err, sizeof(err))) {
        fprintf(stderr, "dgemma generate: %s\n", err);
        goto out;
    }
    const dg_model_info *in = dg_engine_info(e);
    int C = in->canvas_length;
    sp.n_ctx = n_ctx ? n_ctx : np + ((p.max_new_tokens + C - 1) / C) * C + 1;
    if (dg_session_create(e, &sp, &s, err, sizeof(err))) { fprintf(stderr, "dgemma generate: %s\n", err); goto out; }
    out = malloc(sizeof(int32_t) * (size_t)p.max_new_tokens);
    if (!out) { fprintf(stderr, "dgemma generate: out of memory\n"); goto out; }
    dg_callbacks cb = {verbose ? gen_on_step : NULL, NULL, NULL};
    dg_gen_stats st;
    int n = 0;
    if (dg_generate(s, prompt, np, &p, &cb, out, p.max_new_tokens, &n, &st, err, sizeof(err))) {
        fprintf(stderr, "dgemma generate: %s\n", err);
        goto out;
    }
    for (int i = 0; i < n; i++) printf("%s%d", i ? " " : "", out[i]);
    printf("\n");
    fprintf(stderr, "generate: %d prompt + %d emitted tokens, %d canvases, %d steps (%.1f per canvas), %.2f ms/step, "
            "%.0f canvas tok/s, %.1f emitted tok/s, first canvas %.1f ms, finish %s\n",
            st.n_prompt, st.n_emitted, st.n_canvases, st.n_steps, st.n_canvases ? (double)st.n_steps / st.n_canvases : 0.0,
            st.ms_per_step, st.canvas_tok_per_s, st.emitted_tok_per_s, st.ms_first_canvas,
            st.finish == DG_FINISH_EOS ? "eos" : st.finish == DG_FINISH_LENGTH ? "length" : "cancelled");
    rc = 0;
out:
    free(prompt);
    free(out);
    dg_session_free(s);
    dg_engine_free(e);
    return rc;
}

/* ===== inspect ===== */

static int cmd_inspect(int argc, char **argv) {
    const char *model = NULL;
    int tensors = 1;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            printf("usage: dgemma inspect [-m] MODEL_DIR [--no-tensors]\n\nPrints the config, every bound text tensor with dtype and shape, and sizes.\n");
            return 0;
        }
        if (!strcmp(argv[i], "--no-tensors")) tensors = 0;
        else if (!strcmp(argv[i], "-m") || !strcmp(argv[i], "--model")) { if (i + 1 < argc) model = argv[++i]; }
        else if (argv[i][0] == '-') { fprintf(stderr, "dgemma inspect: unknown option '%s'\n", argv[i]); return 2; }
        else model = argv[i];
    }
    if (!model) { fprintf(stderr, "dgemma inspect: a model directory is required\n"); return 2; }
    char err[1024];
    dg_engine *e;
    if (dg_engine_load(model, NULL, &e, err, sizeof(err))) { fprintf(stderr, "dgemma inspect: %s\n", err); return 1; }
    const dg_model_info *in = dg_engine_info(e);
    printf("model          %s\n", model);
    printf("vocab          %d\nhidden         %d\nlayers         %d (%d full attention)\nheads          %d\n",
           in->vocab_size, in->hidden_size, in->n_layers, in->n_full_layers, in->n_heads);
    printf("dense mlp      %d\nexperts        %d (top %d, width %d)\nsliding window %d\ncanvas         %d\n",
           in->intermediate_size, in->n_experts, in->n_experts_used, in->expert_size, in->sliding_window, in->canvas_length);
    printf("softcap        %g\nrms eps        %g\nweights        %s, activations %s\n", in->final_logit_softcap, in->rms_norm_eps,
           in->weight_dtype, in->act_dtype);
    printf("parameters     %lld (%.2f GB)\n", (long long)in->n_params, in->weight_bytes / 1e9);
    if (tensors) {
        dg_tensor_info t;
        for (int i = 0; dg_engine_tensor(e, i, &t) == 0; i++) {
            printf("%-70s %-5s [", t.name, t.dtype);
            for (int k = 0; k < t.ndim; k++) printf("%s%lld", k ? ", " : "", (long long)t.shape[k]);
            printf("]\n");
        }
    }
    dg_engine_free(e);
    return 0;
}

/* ===== tokenize / detokenize ===== */

/* all of a stream (stdin), bytes as they are */
char *read_all(FILE *f, size_t *len) {
    size_t cap = 4096, n = 0, r;
    char *b = malloc(cap);
    while (b && (r = fread(b + n, 1, cap - n - 1, f)) > 0) {
        n += r;
        if (n + 1 == cap) {
            char *q = realloc(b, cap *= 2);
            if (!q) { free(b); return NULL; }
            b = q;
        }
    }
    if (b) b[n] = 0;
    *len = n;
    return b;
}

/* a piece in printable form: \n, \t, \r, \\ and other control bytes as \xHH */
static void print_piece(const char *p) {
    for (; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '\n') fputs("\\n", stdout);
        else if (c == '\t') fputs("\\t", stdout);
        else if (c == '\r') fputs("\\r", stdout);
        else if (c == '\\') fputs("\\\\", stdout);
        else if (c < 0x20 || c == 0x7f) printf("\\x%02X", c);
        else putchar(c);
    }
}

static void usage_tokenize(FILE *f) {
    fprintf(f,
        "usage: dgemma tokenize -m MODEL_DIR|tokenizer.json [-p TEXT] [--ids-only]\n"
        "\n"
        "Encodes TEXT (or all of stdin, bytes as they are, a final newline included) like Hugging Face\n"
        "tokenizers' encode(text, add_special_tokens=False): special tokens written in the text are\n"
        "recognised, no BOS is added. Prints one token per line (id, tab, piece with \\n \\t \\r \\\\ \\xHH\n"
        "escapes), or with --ids-only the ids on one line. Invalid UTF-8 is read as U+FFFD.\n"
        "\n"
        "options:\n"
        "  -m, --model PATH   a checkpoint directory containing tokenizer.json, or the file itself\n"
        "  -p, --prompt TEXT  the text (default: stdin)\n"
        "  --ids-only         only the ids, space separated\n"
        "  -h, --help         this help\n");
}

static int cmd_tokenize(int argc, char **argv) {
    const char *model = NULL, *text = NULL;
    int ids_only = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage_tokenize(stdout); return 0; }
        if (!strcmp(a, "--ids-only")) { ids_only = 1; continue; }
        if (!strcmp(a, "-m") || !strcmp(a, "--model") || !strcmp(a, "-p") || !strcmp(a, "--prompt")) {
            if (i + 1 >= argc) { fprintf(stderr, "dgemma tokenize: %s needs a value (see --help)\n", a); return 2; }
            if (a[1] == 'm' || a[2] == 'm') model = argv[++i];
            else text = argv[++i];
            continue;
        }
        fprintf(stderr, "dgemma tokenize: unknown option '%s' (see --help)\n", a);
        return 2;
    }
    if (!model) { fprintf(stderr, "dgemma tokenize: --model is required (see --help)\n"); return 2; }
    char err[1024];
    dg_tokenizer *tok;
    double t0 = now_s();
    if (dg_tokenizer_load(model, &tok, err, sizeof(err))) { fprintf(stderr, "dgemma tokenize: %s\n", err); return 1; }
    double t_load = now_s() - t0;
    char *in = NULL;
    size_t len;
    if (text) len = strlen(text);
    else {
        in = read_all(stdin, &len);
        if (!in) { fprintf(stderr, "dgemma tokenize: cannot read stdin\n"); dg_tokenizer_free(tok); return 1; }
        text = in;
    }
    int32_t *ids = NULL;
    int n = 0, rc = 1;
    t0 = now_s();
    if (dg_tokenize(tok, text, len, &ids, &n, err, sizeof(err))) { fprintf(stderr, "dgemma tokenize: %s\n", err); goto out; }
    double t_enc = now_s() - t0;
    for (int i = 0; i < n; i++) {
        if (ids_only) { printf("%s%d", i ? " " : "", ids[i]); continue; }
        printf("%d\t", ids[i]);
        print_piece(dg_tokenizer_piece(tok, ids[i], NULL));
        printf("\n");
    }
    if (ids_only) printf("\n");
    fprintf(stderr, "tokenize: %zu bytes -> %d tokens (load %.0f ms, encode %.2f ms)\n", len, n, t_load * 1e3, t_enc * 1e3);
    rc = 0;
out:
    free(ids);
    free(in);
    dg_tokenizer_free(tok);
    return rc;
}

static void usage_detokenize(FILE *f) {
    fprintf(f,
        "usage: dgemma detokenize -m MODEL_DIR|tokenizer.json [--skip-special] [IDS...]\n"
        "\n"
        "Decodes token ids like Hugging Face tokenizers' decode(ids, skip_special_tokens) and writes the\n"
        "text to stdout as is (a newline is added only when stdout is a terminal). Ids come from the\n"
        "arguments or, when there are none, from stdin: integers separated by spaces, commas, newlines\n"
        "or brackets.\n"
        "\n"
        "options:\n"
        "  -m, --model PATH   a checkpoint directory containing tokenizer.json, or the file itself\n"
        "  --skip-special     drop special tokens (<bos>, <eos>, turn markers, ...)\n"
        "  -h, --help         this help\n");
}

static int cmd_detokenize(int argc, char **argv) {
    const char *model = NULL;
    int skip = 0;
    size_t arg_len = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage_detokenize(stdout); return 0; }
        if (!strcmp(a, "--skip-special")) { skip = 1; argv[i] = NULL; continue; }
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            if (i + 1 >= argc) { fprintf(stderr, "dgemma detokenize: %s needs a value (see --help)\n", a); return 2; }
            model = argv[++i];
            argv[i - 1] = argv[i] = NULL;
            continue;
        }
        if (a[0] == '-' && !(a[1] >= '0' && a[1] <= '9')) {
            fprintf(stderr, "dgemma detokenize: unknown option '%s' (see --help)\n", a);
            return 2;
        }
        arg_len += strlen(a) + 1;
    }
    if (!model) { fprintf(stderr, "dgemma detokenize: --model is required (see --help)\n"); return 2; }
    char err[1024];
    int32_t *ids = NULL;
    int n = 0;
    if (arg_len) {   /* the ids of the arguments, joined */
        char *joined = malloc(arg_len + 1), *w = joined;
        if (!joined) { fprintf(stderr, "dgemma detokenize: out of memory\n"); return 1; }
        for (int i = 0; i < argc; i++) if (argv[i]) { size_t l = strlen(argv[i]); memcpy(w, argv[i], l); w += l; *w++ = ' '; }
        int prc = ids_parse("arguments", (const unsigned char *)joined, (size_t)(w - joined), &ids, &n, err, sizeof(err));
        free(joined);
        if (prc) { fprintf(stderr, "dgemma detokenize: %s\n", err); return 2; }
    } else if (ids_read("/dev/stdin", &ids, &n, err, sizeof(err))) {
        fprintf(stderr, "dgemma detokenize: stdin: %s\n", err);
        return 2;
    }
    dg_tokenizer *tok;
    if (dg_tokenizer_load(model, &tok, err, sizeof(err))) { fprintf(stderr, "dgemma detokenize: %s\n", err); free(ids); return 1; }
    char *text = NULL;
    size_t len = 0;
    int rc = 1;
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= dg_tokenizer_n_vocab(tok)) {
            fprintf(stderr, "dgemma detokenize: id %d (number %d) is outside the vocabulary [0, %d)\n", ids[i], i + 1,
                    dg_tokenizer_n_vocab(tok));
            rc = 2;
            goto out;
        }
    if (dg_detokenize(tok, ids, n, skip, &text, &len, err, sizeof(err))) { fprintf(stderr, "dgemma detokenize: %s\n", err); goto out; }
    fwrite(text, 1, len, stdout);
    if (isatty(fileno(stdout))) putchar('\n');
    rc = 0;
out:
    free(text);
    free(ids);
    dg_tokenizer_free(tok);
    return rc;
}

/* ===== serve ===== */

#define DEFAULT_MODEL "tests/fixtures/tiny-a/bf16"

static void usage_serve(FILE *f) {
    fprintf(f,
        "usage: dgemma serve [-m MODEL] [--host 127.0.0.1] [--port 8080] [options]\n"
        "\n"
        "An OpenAI-compatible HTTP server: POST /v1/chat/completions, POST /v1/completions (streaming\n"
        "committed text canvas by canvas, opt-in draft events per denoising step), GET /v1/models,\n"
        "GET /health, and a chat page at / that shows every canvas denoising live. One request runs at a\n"
        "time; the others wait in a queue. Ctrl-C (SIGINT) or SIGTERM stops it.\n"
        "\n"
        "options:\n"
        "  -m, --model PATH         checkpoint directory or .gguf (default: %s, the bundled tiny\n"
        "                           random-weight model: its output is noise)\n"
        "  --host ADDR              address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)\n"
        "  --port N                 port (default 8080; 0: any free port, printed at start)\n"
        "  --api-key KEY            require Authorization: Bearer KEY (/health and / stay open)\n"
        "  --alias NAME             the model id in the API (default: from the path)\n"
        "  --queue N                requests waiting at most behind the running one (default 16); more: 503\n"
        "  --max-tokens-limit N     largest max_tokens a request may ask (default 8192)\n"
        "  -c, --ctx-size N         context: prompt + committed canvases, in tokens (default 8192)\n"
        "  --max-body-bytes N       largest request body (default 8388608); more: 413\n"
        "  --timeout S              close connections silent for S seconds (default 300; not while\n"
        "                           a request waits in the queue or generates)\n"
        "  --act auto|f32|bf16|f16  activation precision\n"
        KERNEL_OPTIONS_HELP
        "  -h, --help               this help\n", DEFAULT_MODEL);
}

static int cmd_serve(int argc, char **argv) {
    dg_server_opts o;
    dg_server_default_opts(&o);
    o.model = DEFAULT_MODEL;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage_serve(stdout); return 0; }
        if (!v) { fprintf(stderr, "dgemma serve: %s needs a value (see --help)\n", a); return 2; }
        int bad = 0, mb = 0;
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) o.model = v;
        else if (!strcmp(a, "--host")) o.host = v;
        else if (!strcmp(a, "--port")) bad = parse_int(a, v, 0, 65535, &o.port);
        else if (!strcmp(a, "--api-key")) o.api_key = v;
        else if (!strcmp(a, "--alias")) o.alias = v;
        else if (!strcmp(a, "--queue")) bad = parse_int(a, v, 0, 1 << 20, &o.queue);
        else if (!strcmp(a, "--max-tokens-limit")) bad = parse_int(a, v, 1, 1 << 24, &o.max_tokens_limit);
        else if (!strcmp(a, "-c") || !strcmp(a, "--ctx-size")) bad = parse_int(a, v, 2, 1 << 24, &o.n_ctx);
        else if (!strcmp(a, "--max-body-bytes")) { bad = parse_int(a, v, 1024, 1 << 30, &mb); o.max_body = (size_t)mb; }
        else if (!strcmp(a, "--timeout")) bad = parse_int(a, v, 1, 1 << 20, &o.idle_timeout_s);
        else if (!strcmp(a, "--act")) bad = parse_act(v, &o.ep.act);
        else if (session_option(a, v, &o.sp, &bad)) {}
        else { fprintf(stderr, "dgemma serve: unknown option '%s' (see --help)\n", a); return 2; }
        if (bad) return 2;
        i++;
    }
    return dg_serve(&o);
}

static void usage(FILE *f) {
    fprintf(f,
        "dgemma %s - DiffusionGemma inference in C\n"
        "\n"
        "usage: dgemma COMMAND [options]   (dgemma COMMAND --help for details)\n"
        "\n"
        "commands:\n"
        "  run         answer a prompt (chat template, the answer streamed as text)\n"
        "  chat        an interactive conversation (line editing, history, /commands)\n"
        "  generate    denoise canvases after a prompt of token ids (the reference's generate())\n"
        "  forward     one encoder + decoder pass of a checkpoint, logits to .npy (parity checks)\n"
        "  inspect     show a checkpoint's config, tensors and sizes\n"
        "  bench       the fixed-protocol speed benchmark (CSV)\n"
        "  tokenize    text to token ids (the checkpoint's tokenizer.json)\n"
        "  detokenize  token ids to text\n"
        "  quantize    a Hugging Face checkpoint to GGUF (F32 ... Q4_K_M, llama.cpp's names and mixing rules)\n"
        "  synth       a random-weight model (26B-A4B shapes by default) as GGUF or Hugging Face safetensors\n"
        "  serve       the OpenAI-compatible HTTP server with a live web view\n",
        DG_VERSION);
}

int main(int argc, char **argv) {
    if (argc < 2) { usage(stderr); return 2; }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) { usage(stdout); return 0; }
    if (!strcmp(cmd, "--version")) { printf("dgemma %s\n", DG_VERSION); return 0; }
    if (!strcmp(cmd, "forward")) return cmd_forward(argc - 2, argv + 2);
    if (!strcmp(cmd, "generate")) return cmd_generate(argc - 2, argv + 2);
    if (!strcmp(cmd, "run")) return cmd_run(argc - 2, argv + 2);
    if (!strcmp(cmd, "chat")) return cmd_chat(argc - 2, argv + 2);
    if (!strcmp(cmd, "inspect")) return cmd_inspect(argc - 2, argv + 2);
    if (!strcmp(cmd, "bench")) return dg_bench_main(argc - 2, argv + 2);
    if (!strcmp(cmd, "tokenize")) return cmd_tokenize(argc - 2, argv + 2);
    if (!strcmp(cmd, "detokenize")) return cmd_detokenize(argc - 2, argv + 2);
    if (!strcmp(cmd, "quantize")) return dg_cli_quantize(argc - 2, argv + 2);
    if (!strcmp(cmd, "synth")) return dg_cli_synth(argc - 2, argv + 2);
    if (!strcmp(cmd, "serve")) return cmd_serve(argc - 2, argv + 2);
    fprintf(stderr, "dgemma: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}
