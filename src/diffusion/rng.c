/* rng.c - xoshiro256** (Blackman & Vigna) with splitmix64 seeding; see rng.h. */
#include "diffusion/rng.h"

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

void dg_rng_seed(dg_rng *r, uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
}

uint64_t dg_rng_next(dg_rng *r) {
    uint64_t *s = r->s;
    const uint64_t result = rotl(s[1] * 5, 7) * 9;
    const uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

uint32_t dg_rng_below(dg_rng *r, uint32_t n) {
    return (uint32_t)(((unsigned __int128)dg_rng_next(r) * n) >> 64);
}

double dg_rng_uniform(dg_rng *r) { return (double)(dg_rng_next(r) >> 11) * 0x1.0p-53; }
