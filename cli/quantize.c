/*
 * quantize.c - `dgemma quantize` (Hugging Face checkpoint -> GGUF) and `dgemma synth` (random-weight
 * models), with a progress bar on a terminal and one line per tensor otherwise.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "dgemma.h"
#include "quantize.h"

typedef struct {
    int tty, list;
    double last;
    const char *cmd;
} ui;

static double mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void fmt_eta(double s, char *buf, size_t n) {
    if (!(s >= 0) || s > 1e7) { snprintf(buf, n, "--"); return; }
    const long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, n, "%ldh%02ldm", t / 3600, t / 60 % 60);
    else if (t >= 60) snprintf(buf, n, "%ldm%02lds", t / 60, t % 60);
    else snprintf(buf, n, "%lds", t);
}

static void on_progress(void *user, const dg_quant_progress *p) {
    ui *u = user;
    const double rate = p->seconds > 0 ? p->bytes_done / p->seconds : 0;
    const double eta = rate > 0 ? (p->bytes_total - p->bytes_done) / rate : -1;
    char e[32];
    fmt_eta(eta, e, sizeof(e));
    if (u->tty) {
        const double now = mono();
        const int last = p->tensor_done && p->tensor + 1 == p->n_tensors;
        if (!last && now - u->last < 0.1) return;
        u->last = now;
        const double frac = p->bytes_total ? (double)p->bytes_done / p->bytes_total : 1;
        char bar[31];
        for (int i = 0; i < 30; i++) bar[i] = i < (int)(frac * 30) ? '#' : '.';
        bar[30] = 0;
        fprintf(stderr, "\r[%s] %4d/%d  %.2f/%.2f GB  %6.1f MB/s  ETA %-7s %-36.36s %-5s", bar, p->tensor + 1, p->n_tensors,
                p->bytes_done / 1e9, p->bytes_total / 1e9, rate / 1e6, e, p->name, p->type);
        if (last) fprintf(stderr, "\n");
        fflush(stderr);
    } else if (p->tensor_done) {
        fprintf(stderr, "[%4d/%4d] %-40s %-5s %8.2f/%.2f GB  %6.1f MB/s  ETA %s\n", p->tensor + 1, p->n_tensors, p->name, p->type,
                p->bytes_done / 1e9, p->bytes_total / 1e9, rate / 1e6, e);
    }
}

static void on_warn(void *user, const char *msg) {
    const ui *u = user;
    fprintf(stderr, "dgemma %s: warning: %s\n", u->cmd, msg);
}

static void on_tensor(void *user, const char *name, const char *type, int n_dims, const int64_t *ne, uint64_t bytes) {
    const ui *u = user;
    if (!u->list) return;
    char shape[96];
    size_t at = (size_t)snprintf(shape, sizeof(shape), "[");
    for (int i = 0; i < n_dims; i++) at += (size_t)snprintf(shape + at, sizeof(shape) - at, "%s%lld", i ? ", " : "", (long long)ne[i]);
    snprintf(shape + at, sizeof(shape) - at, "]");
    printf("%-44s %-5s %-22s %12llu\n", name, type, shape, (unsigned long long)bytes);
}

static void print_report(const dg_quant_report *r, int dry) {
    printf("%-6s %8s %16s\n", "type", "tensors", "bytes");
    for (int i = 0; i < r->n_types; i++)
        printf("%-6s %8d %16llu  (%.2f GB)\n", r->types[i].type, r->types[i].count, (unsigned long long)r->types[i].bytes, r->types[i].bytes / 1e9);
    printf("%-6s %8d %16llu  (%.2f GB, %.2f bits per weight)  %lld weights, size label %s, %d fallback(s)\n", "total", r->n_tensors,
           (unsigned long long)r->data_bytes, r->data_bytes / 1e9, r->n_params ? 8.0 * r->data_bytes / r->n_params : 0.0,
           (long long)r->n_params, r->size_label, r->n_fallback);
    if (!dry)
        printf("file   %llu bytes, %.1f s, %.1f MB/s\n", (unsigned long long)r->file_bytes, r->seconds,
               r->seconds > 0 ? r->data_bytes / r->seconds / 1e6 : 0.0);
}

static int parse_int(const char *cmd, const char *flag, const char *v, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    const long x = v ? strtol(v, &end, 10) : 0;
    if (!v || errno || *end || end == v || x < lo || x > hi) {
        fprintf(stderr, "dgemma %s: %s expects an integer in [%ld, %ld], got '%s'\n", cmd, flag, lo, hi, v ? v : "");
        return -1;
    }
    *out = x;
    return 0;
}

/* "5GB", "100MB", "4096": bytes (decimal units, as transformers' max_shard_size) */
static int parse_size(const char *flag, const char *v, uint64_t *out) {
    char *end;
    errno = 0;
    const double x = v ? strtod(v, &end) : 0;
    double mul = 1;
    if (v && !errno && end != v) {
        if (!strcasecmp(end, "KB")) mul = 1e3;
        else if (!strcasecmp(end, "MB")) mul = 1e6;
        else if (!strcasecmp(end, "GB")) mul = 1e9;
        else if (*end) mul = 0;
    }
    if (!v || errno || end == v || mul == 0 || !(x * mul >= 1) || x * mul > 1e15) {
        fprintf(stderr, "dgemma synth: %s expects a size such as 5GB or 100MB, got '%s'\n", flag, v ? v : "");
        return -1;
    }
    *out = (uint64_t)(x * mul);
    return 0;
}

static void usage_quantize(FILE *f) {
    fprintf(f,
        "usage: dgemma quantize IN_HF_DIR OUT.gguf --type TYPE [options]\n"
        "       dgemma quantize IN_HF_DIR|config.json --type TYPE --dry-run [--list]\n"
        "\n"
        "Converts a Hugging Face DiffusionGemma checkpoint (F32 / BF16 / F16 safetensors, sharded or not)\n"
        "into a GGUF with llama.cpp PR #24423's names, shapes, metadata and tokenizer. Tensor types follow\n"
        "the converter (F32, F16, BF16, Q8_0) or llama-quantize's mixing rules (Q4_0, Q4_K_M, Q5_K_M, Q6_K).\n"
        "One tensor at a time is read and written; the file appears under its name only when complete.\n"
        "\n"
        "options:\n"
        "  --type T             F32, F16, BF16, Q8_0, Q4_0, Q4_K_M, Q5_K_M, Q6_K\n"
        "  -t, --threads N      threads (default: every CPU)\n"
        "  --dry-run            print the per-type counts and sizes only (no weights needed)\n"
        "  --list               print every tensor: name, type, ne, bytes\n"
        "  --name S             general.name (default: the directory's name)\n"
        "  --synthetic-vocab    no tokenizer.json: write a synthetic placeholder vocabulary\n"
        "  -h, --help           this help\n");
}

static void usage_synth(FILE *f) {
    fprintf(f,
        "usage: dgemma synth OUT(.gguf | directory) [--shape 26b-a4b|mid|tiny | --config config.json] --type TYPE [options]\n"
        "\n"
        "Writes a model with seeded random weights: the 26B-A4B shapes by default. OUT.gguf: a GGUF with the\n"
        "mixing rules of TYPE and a synthetic Gemma-4-style vocabulary; any other OUT: a Hugging Face\n"
        "directory (BF16 safetensors in 5 GB shards, config.json, generation_config.json).\n"
        "\n"
        "options:\n"
        "  --type T             F32, F16, BF16, Q8_0, Q4_0, Q4_K_M, Q5_K_M, Q6_K (default Q4_K_M; BF16 for a directory)\n"
        "  --shape S            26b-a4b (default), mid (~0.7B, same structure), tiny (a test model)\n"
        "  --config F           take the shapes from a config.json instead\n"
        "  --layers N           number of layers (full attention every 6th and on the last)\n"
        "  --experts N          number of experts (top-k capped to it)\n"
        "  --seed N             random seed (default 0)\n"
        "  --exact              quantize every random value with the reference quantizers (slow for K-quants);\n"
        "                       default: rows assembled from a pool of 4096 reference-quantized random blocks\n"
        "  --max-shard-size S   a directory's shard size limit (bytes, or with KB / MB / GB; default 5GB)\n"
        "  -t, --threads N      threads (default: every CPU)\n"
        "  --dry-run, --list, --name S   as for quantize\n"
        "  -h, --help           this help\n");
}

/* shared option parsing; 1 if a was an option of both commands (*bad on a bad value) */
static int common_option(const char *cmd, const char *a, const char *v, dg_quant_params *p, ui *u, int *used, int *bad) {
    long x;
    *used = 1;
    if (!strcmp(a, "--type")) p->type = v;
    else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) { if (parse_int(cmd, a, v, 1, 1024, &x)) *bad = 1; else p->n_threads = (int)x; }
    else if (!strcmp(a, "--name")) p->name = v;
    else if (!strcmp(a, "--dry-run")) { p->dry_run = 1; *used = 0; }
    else if (!strcmp(a, "--list")) { u->list = 1; *used = 0; }
    else return 0;
    if (*used && !v) { fprintf(stderr, "dgemma %s: %s needs a value\n", cmd, a); *bad = 1; }
    return 1;
}

static int run(const char *cmd, int is_synth, const char *in, const char *out, dg_quant_params *p, ui *u) {
    signal(SIGXFSZ, SIG_IGN);   /* a file-size limit is then a write error with a message, not a kill */
    p->progress = on_progress;
    p->warn = on_warn;
    p->tensor = on_tensor;
    p->user = u;
    u->tty = isatty(2);
    u->cmd = cmd;
    char err[1024];
    dg_quant_report r;
    const int rc = is_synth ? dg_synth(out, p, &r, err, sizeof(err)) : dg_quantize(in, out, p, &r, err, sizeof(err));
    if (rc) {
        if (u->tty) fprintf(stderr, "\n");
        fprintf(stderr, "dgemma %s: %s\n", cmd, err);
        return 1;
    }
    print_report(&r, p->dry_run);
    if (!p->dry_run) fprintf(stderr, "dgemma %s: wrote %s\n", cmd, out);
    return 0;
}

int dg_cli_quantize(int argc, char **argv) {
    dg_quant_params p = dg_quant_default_params();
    p.type = NULL;
    ui u = {0};
    const char *pos[2] = {NULL, NULL};
    int np = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int used = 0, bad = 0;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage_quantize(stdout); return 0; }
        if (common_option("quantize", a, v, &p, &u, &used, &bad)) { if (bad) return 2; i += used; continue; }
        if (!strcmp(a, "--synthetic-vocab")) { p.synthetic_vocab = 1; continue; }
        if (a[0] == '-' && a[1]) { fprintf(stderr, "dgemma quantize: unknown option '%s' (see --help)\n", a); return 2; }
        if (np == 2) { fprintf(stderr, "dgemma quantize: unexpected argument '%s'\n", a); return 2; }
        pos[np++] = a;
    }
    if (!p.type) { fprintf(stderr, "dgemma quantize: --type is required (see --help)\n"); return 2; }
    if (!pos[0] || (!pos[1] && !p.dry_run)) { fprintf(stderr, "dgemma quantize: give IN_HF_DIR and OUT.gguf (see --help)\n"); return 2; }
    return run("quantize", 0, pos[0], pos[1], &p, &u);
}

int dg_cli_synth(int argc, char **argv) {
    dg_quant_params p = dg_quant_default_params();
    p.type = NULL;
    ui u = {0};
    const char *out = NULL;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int used = 0, bad = 0;
        long x;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage_synth(stdout); return 0; }
        if (common_option("synth", a, v, &p, &u, &used, &bad)) { if (bad) return 2; i += used; continue; }
        if (!strcmp(a, "--exact")) { p.exact = 1; continue; }
        int takes = 1;
        if (!strcmp(a, "--shape")) p.shape = v;
        else if (!strcmp(a, "--config")) p.config = v;
        else if (!strcmp(a, "--seed")) { if (parse_int("synth", a, v, 0, 0x7fffffffL, &x)) return 2; p.seed = (uint64_t)x; }
        else if (!strcmp(a, "--layers")) { if (parse_int("synth", a, v, 1, 4096, &x)) return 2; p.n_layers = (int)x; }
        else if (!strcmp(a, "--experts")) { if (parse_int("synth", a, v, 1, 4096, &x)) return 2; p.n_experts = (int)x; }
        else if (!strcmp(a, "--max-shard-size")) { if (parse_size(a, v, &p.max_shard_bytes)) return 2; }
        else if (a[0] == '-' && a[1]) { fprintf(stderr, "dgemma synth: unknown option '%s' (see --help)\n", a); return 2; }
        else { takes = 0; if (out) { fprintf(stderr, "dgemma synth: unexpected argument '%s'\n", a); return 2; } out = a; }
        if (takes && !v) { fprintf(stderr, "dgemma synth: %s needs a value\n", a); return 2; }
        i += takes;
    }
    if (!out && !p.dry_run) { fprintf(stderr, "dgemma synth: give OUT (.gguf or a directory; see --help)\n"); return 2; }
    if (p.config && strcmp(p.shape, "26b-a4b")) { fprintf(stderr, "dgemma synth: --shape and --config exclude each other\n"); return 2; }
    return run("synth", 1, NULL, out, &p, &u);
}
