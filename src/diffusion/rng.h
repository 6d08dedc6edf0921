/*
 * rng.h - the sampler's random stream: xoshiro256** seeded with splitmix64. Small, fast and easy to
 * mirror bit for bit in Python (tools/reference/dg_rng.py), so the reference generate() can be replayed
 * with the same draws.
 */
#ifndef DG_RNG_H
#define DG_RNG_H

#include <stdint.h>

typedef struct { uint64_t s[4]; } dg_rng;

void dg_rng_seed(dg_rng *r, uint64_t seed);
uint64_t dg_rng_next(dg_rng *r);
/* uniform integer in [0, n): the high 64 bits of next * n (Lemire) */
uint32_t dg_rng_below(dg_rng *r, uint32_t n);
/* uniform double in [0, 1): the top 53 bits */
double dg_rng_uniform(dg_rng *r);

#endif
