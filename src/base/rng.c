/*
 * The generator of rng.h.
 */
#include "base/rng.h"

uint64_t tc__splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

void tc__rng_seed(tc__rng *rng, uint64_t seed)
{
    uint64_t sm = seed;
    for (int i = 0; i < 4; i++)
        rng->s[i] = tc__splitmix64(&sm);
}

uint64_t tc__rng_next(tc__rng *rng)
{
    uint64_t *state = rng->s;
    uint64_t result = rotl(state[1] * 5, 7) * 9;
    uint64_t tmp = state[1] << 17;
    state[2] ^= state[0];
    state[3] ^= state[1];
    state[1] ^= state[2];
    state[0] ^= state[3];
    state[2] ^= tmp;
    state[3] = rotl(state[3], 45);
    return result;
}

uint64_t tc__rng_below(tc__rng *rng, uint64_t n)
{
    uint64_t threshold = (0 - n) % n;
    for (;;) {
        uint64_t x = tc__rng_next(rng);
        if (x >= threshold)
            return x % n;
    }
}

double tc__rng_unit(tc__rng *rng)
{
    return (double)(tc__rng_next(rng) >> 11) * 0x1.0p-53;
}
