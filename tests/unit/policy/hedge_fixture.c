/*
 * The adaptive hedging tests' shared fixture (hedge_fixture.h).
 */
#include "hedge_fixture.h"

int hfx_cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}
