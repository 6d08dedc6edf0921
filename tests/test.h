/* test.h - the tiny test framework: a test is a function returning its number of failed checks. */
#ifndef DG_TEST_H
#define DG_TEST_H

#include <stdio.h>

extern int g_check_fail;

#define CHECK(cond, ...)                                                        \
    do {                                                                        \
        if (!(cond)) {                                                          \
            g_check_fail++;                                                     \
            fprintf(stderr, "  FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);   \
            fprintf(stderr, __VA_ARGS__);                                       \
            fprintf(stderr, "\n");                                              \
        }                                                                       \
    } while (0)

typedef struct {
    const char *name;
    void (*fn)(void);
} dg_test;

/* root of the fixtures (tests/fixtures unless DG_FIXTURES is set) */
const char *fixtures_dir(void);
/* a file of ../shared/data (or $DG_SHARED_DATA) into buf, or NULL when absent (test_tokenizer.c) */
const char *shared_file(const char *name, char *buf, size_t n);
/* the real Gemma 3 tokenizer from ../shared/data, or NULL (and "skipped" printed) when absent */
struct dg_tokenizer *gemma3_tokenizer(void);
/* a scratch directory for the whole run (created on first use, removed at exit) */
const char *test_tmpdir(void);
/* logits a against r ([rows, V]): max |a - r| / max |r|; *agree: rows with the same argmax; *rms (may be
 * NULL): rms(a - r) / rms(r) */
double test_rel_err(const float *a, const float *r, int rows, int V, int *agree, double *rms);

extern const dg_test unit_tests[], parity_tests[], error_tests[], sampler_tests[], kernel_tests[], quant_tests[], gguf_tests[],
    mlx_tests[], tokenizer_tests[], jinja_tests[], chat_tests[], reply_tests[], quantize_tests[], server_tests[];

#endif
