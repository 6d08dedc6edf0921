/*
 * alloc_count.c - counts malloc/calloc/realloc calls made by the statically linked engine (the test
 * binary is linked with -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc), so a test can assert that a
 * generation allocates nothing once its session exists.
 */
#include <stddef.h>

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t sz);
void *__real_realloc(void *p, size_t n);

long g_alloc_calls;

void *__wrap_malloc(size_t n) { g_alloc_calls++; return __real_malloc(n); }
void *__wrap_calloc(size_t n, size_t sz) { g_alloc_calls++; return __real_calloc(n, sz); }
void *__wrap_realloc(void *p, size_t n) { g_alloc_calls++; return __real_realloc(p, n); }
