/*
 * cli.h - what the dgemma subcommands share: option parsers (each prints its own message naming the
 * flag and returns -1 on a bad value), the session and sampler option groups with their help text.
 */
#ifndef DG_CLI_H
#define DG_CLI_H

#include <stdint.h>
#include <stdio.h>

#include "dgemma.h"

double now_s(void);
int parse_int(const char *flag, const char *v, int lo, int hi, int *out);
int parse_double(const char *flag, const char *v, double lo, double hi, double *out);
int parse_u64(const char *flag, const char *v, uint64_t *out);
int parse_act(const char *v, dg_act_precision *out);
int parse_kernels(const char *v, dg_kernels *out);
/* --eos: comma-separated ids into p->eos_ids ('' for none) */
int parse_ids_list(const char *v, dg_gen_params *p);
/* all of a stream, bytes as they are, NUL-terminated (NULL when out of memory) */
char *read_all(FILE *f, size_t *len);

/* the session options every model command takes (-t, --kernels, --sc-top-k); 1 if a was one (*bad set
 * on a bad value) */
int session_option(const char *a, const char *v, dg_session_params *sp, int *bad);
/* the sampler options of generate, run and chat (-n, --steps, --entropy-bound, --t-min, --t-max,
 * --stability, --confidence, --eos, --seed) */
int gen_option(const char *a, const char *v, dg_gen_params *p, int *bad);

#define KERNEL_OPTIONS_HELP                                                                              \
    "  -t, --threads N          threads (default: every CPU)\n"                                          \
    "  --kernels K              auto (fastest here), ref (the scalar oracle: bit-identical to the\n"     \
    "                           reference fixtures, slow), generic, avx2, avx512, amx, neon\n"       \
    "  --sc-top-k K             self-condition on each position's K most probable tokens only (an\n"  \
    "                           approximation; default 0 = the whole vocabulary, as the reference)\n"

#define GEN_OPTIONS_HELP                                                                                 \
    "  -n, --max-tokens N       tokens to emit at most (exact)\n"                                        \
    "  --steps N                max denoising steps per canvas\n"                                        \
    "  --entropy-bound X        entropy-bound acceptance (nats, > 0)\n"                                  \
    "  --t-min X, --t-max X     temperature schedule (last / first step)\n"                              \
    "  --stability N            stop when the argmax repeated N steps (0 = confidence only) ...\n"       \
    "  --confidence X           ... and the mean entropy is below X nats\n"                              \
    "  --eos IDS                comma-separated EOS ids ('' for none; default: the checkpoint's)\n"      \
    "  --seed N                 random seed (default 0)\n"

/* run.c */
int cmd_run(int argc, char **argv);
int cmd_chat(int argc, char **argv);

#endif
