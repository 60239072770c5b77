/*
 * Shared fixture of the tests of adaptive hedging (test_hedge_*.c, test_latency_censored.c): the
 * headers they all use and an ordering for their sorted-array oracles. Compiled once into the
 * folder's fixture library (CMakeLists.txt); every name is hfx_. Random draws come from
 * base/rng.h, one seeded generator per test.
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

#include "base/rng.h"
#include "tailcut/hedge.h"

/* qsort's order of uint64_t values, ascending. */
int hfx_cmp_u64(const void *a, const void *b);

#endif /* TC_TEST_HEDGE_FIXTURE_H */
