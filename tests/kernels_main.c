/*
 * kernels_main.c - the kernel tests alone (no JSON, no model files): built for other architectures
 * (aarch64 NEON, cross-compiled and run under qemu-aarch64 by `make test-arm`).
 */
#include <stdio.h>
#include <string.h>

#include "test.h"

int g_check_fail;

const char *fixtures_dir(void) { return "tests/fixtures"; }

int main(int argc, char **argv) {
    int passed = 0, failed = 0;
    for (const dg_test *t = kernel_tests; t->name; t++) {
        if (argc > 1 && !strstr(t->name, argv[1])) continue;
        const int before = g_check_fail;
        printf("[ RUN  ] %s\n", t->name);
        fflush(stdout);
        t->fn();
        const int ok = g_check_fail == before;
        printf("[ %s ] %s\n", ok ? "OK  " : "FAIL", t->name);
        if (ok) passed++; else failed++;
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
