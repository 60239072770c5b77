/*
 * Shared fixture of the tests of adaptive hedging (test_hedge_*.c): a small deterministic PRNG
 * (xorshift64*) and an ordering for sorted-array oracles. Timing assertions are lower bounds
 * (timers never fire early) with generous upper bounds.
 */
#ifndef TC_TEST_HEDGE_FIXTURE_H
#define TC_TEST_HEDGE_FIXTURE_H
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <uv.h>

#include "tailcut/hedge.h"
#include "tailcut/server.h"

/* ---- a small deterministic PRNG (xorshift64*) ------------------------------------------------ */

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static inline uint64_t rnd(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dULL;
}

static inline uint64_t rnd_below(uint64_t n)
{
    return rnd() % n;
}

static inline int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

#endif /* TC_TEST_HEDGE_FIXTURE_H */
