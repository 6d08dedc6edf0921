/*
 * test_main.c - runs every C test: kernels and formats (unit), per-stage parity against the
 * transformers fixtures (parity), and bad-input handling (errors). No Python needed.
 *
 *   dgemma_test [--list] [NAME_SUBSTRING ...]
 *
 * Ends with "N passed, N failed" (, N skipped); exit status 1 if anything failed.
 */
#include <stdlib.h>
#include <string.h>

#include "test.h"

int g_check_fail;

const char *fixtures_dir(void) {
    const char *d = getenv("DG_FIXTURES");
    return d && *d ? d : "tests/fixtures";
}

int main(int argc, char **argv) {
    const dg_test *groups[] = {unit_tests, parity_tests, error_tests};
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
