/*
 * test_main.c - runs every C test: kernels and formats (unit), per-stage parity against the
 * transformers fixtures (parity), bad-input handling (errors), the sampler, the Jinja interpreter
 * (jinja) and chat templates (chat). No Python needed.
 *
 *   dgemma_test [--list] [NAME_SUBSTRING ...]
 *
 * Ends with "N passed, N failed" (, N skipped); exit status 1 if anything failed.
 */
#define _GNU_SOURCE
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "npy.h"
#include "test.h"

int g_check_fail;

const char *fixtures_dir(void) {
    const char *d = getenv("DG_FIXTURES");
    return d && *d ? d : "tests/fixtures";
}

static char g_tmp[256];

static void rm_tmp(void) {
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", g_tmp);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_tmp);
}

const char *test_tmpdir(void) {
    if (!g_tmp[0]) {
        snprintf(g_tmp, sizeof(g_tmp), "/tmp/dgemma-test-XXXXXX");
        if (!mkdtemp(g_tmp)) { perror("mkdtemp"); exit(1); }
        atexit(rm_tmp);
    }
    return g_tmp;
}

double test_rel_err(const float *a, const float *r, int rows, int V, int *agree, double *rms) {
    double md = 0, mr = 0, sd = 0, sr = 0;
    *agree = 0;
    for (int t = 0; t < rows; t++) {
        int ia = 0, ir = 0;
        for (int v = 0; v < V; v++) {
            const size_t i = (size_t)t * V + v;
            const double d = (double)a[i] - r[i];
            md = fmax(md, fabs(d));
            mr = fmax(mr, fabs((double)r[i]));
            sd += d * d;
            sr += (double)r[i] * r[i];
            if (a[i] > a[(size_t)t * V + ia]) ia = v;
            if (r[i] > r[(size_t)t * V + ir]) ir = v;
        }
        *agree += ia == ir;
    }
    if (rms) *rms = sr > 0 ? sqrt(sd / sr) : sqrt(sd);
    return mr > 0 ? md / mr : md;
}

/* dgemma_test --compare-npy FILE.npy REF.safetensors KEY TOL: max relative error of a .npy
 * written by `dgemma forward` against a reference tensor (used by tests/test_cli.sh). */
static int compare_npy(char **argv) {
    char err[512];
    float *x;
    int64_t n, cols;
    if (npy_read_f32(argv[0], &x, &n, &cols, err, sizeof(err))) { fprintf(stderr, "%s\n", err); return 2; }
    st_store st = {0};
    if (st_add_file(&st, argv[1], err, sizeof(err)) || st_finish(&st, err, sizeof(err))) { fprintf(stderr, "%s\n", err); return 2; }
    const st_tensor *t = st_find(&st, argv[2]);
    int rc = 2;
    if (!t || t->dtype != ST_F32 || (int64_t)(t->nbytes / 4) != n) { fprintf(stderr, "%s: no float32 tensor %s of %lld elements\n", argv[1], argv[2], (long long)n); goto out; }
    double md = 0, mr = 0;
    for (int64_t i = 0; i < n; i++) {
        float r;
        memcpy(&r, t->data + i * 4, 4);
        md = fmax(md, fabs((double)x[i] - r));
        mr = fmax(mr, fabs((double)r));
    }
    double rel = mr > 0 ? md / mr : md;
    printf("%s vs %s: max rel error %.3e (max abs %.3e)\n", argv[0], argv[2], rel, md);
    rc = rel <= atof(argv[3]) ? 0 : 1;
out:
    free(x);
    st_close(&st);
    return rc;
}

int gguf_copy_main(const char *in, const char *out);   /* test_gguf.c */

int main(int argc, char **argv) {
    if (argc == 6 && !strcmp(argv[1], "--compare-npy")) return compare_npy(argv + 2);
    /* dgemma_test --gguf-copy IN OUT: rewrite a GGUF file with the C writer (make_gguf_fixtures.py) */
    if (argc == 4 && !strcmp(argv[1], "--gguf-copy")) return gguf_copy_main(argv[2], argv[3]);
    const dg_test *groups[] = {unit_tests, kernel_tests, quant_tests, gguf_tests, mlx_tests, parity_tests, error_tests,
                               sampler_tests, tokenizer_tests, jinja_tests, chat_tests, reply_tests, quantize_tests,
                               server_tests};
    int passed = 0, failed = 0, list = argc > 1 && !strcmp(argv[1], "--list");
    for (size_t g = 0; g < sizeof(groups) / sizeof(groups[0]); g++) {
        for (const dg_test *t = groups[g]; t->name; t++) {
            int want = argc <= 1 || list;
            for (int i = 1; i < argc && !want; i++) want = strstr(t->name, argv[i]) != NULL;
            if (!want) continue;
            if (list) { printf("%s\n", t->name); continue; }
            int before = g_check_fail;
            printf("[ RUN  ] %s\n", t->name);
            fflush(stdout);
            t->fn();
            int ok = g_check_fail == before;
            printf("[ %s ] %s\n", ok ? "OK  " : "FAIL", t->name);
            fflush(stdout);
            if (ok) passed++; else failed++;
        }
    }
    if (!list) printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
