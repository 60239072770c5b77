/*
 * The one pseudo-random generator of tailcut: xoshiro256** seeded through splitmix64 (the
 * published reference algorithms, written out here). Each owner keeps its own state, so nothing
 * is process-global, and the same seed gives the same sequence on every platform: the
 * simulator's --seed relies on that. Not for secrets.
 */
#ifndef TAILCUT_BASE_RNG_H
#define TAILCUT_BASE_RNG_H

#include <stdint.h>

typedef struct tc__rng {
    uint64_t s[4];
} tc__rng;

/* splitmix64: the next value of the sequence *state walks (the seeding step, also a good
 * mixer of one 64-bit value). */
uint64_t tc__splitmix64(uint64_t *state);

/* Seeds rng from one 64-bit value (any value, 0 included). */
void tc__rng_seed(tc__rng *rng, uint64_t seed);

/* The next 64 random bits. */
uint64_t tc__rng_next(tc__rng *rng);

/* Uniform in [0, n), n > 0, without modulo bias (rejects the short top slice). */
uint64_t tc__rng_below(tc__rng *rng, uint64_t n);

/* Uniform in [0, 1), 53 bits. */
double tc__rng_unit(tc__rng *rng);

#endif /* TAILCUT_BASE_RNG_H */
