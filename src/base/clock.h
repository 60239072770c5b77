/*
 * The monotonic clock in milliseconds, read fresh. uv_now() is the loop's cached reading of the
 * same clock, taken when the loop last woke: late in a loop iteration it can be milliseconds
 * stale, so what starts a deadline or stamps an event reads the clock itself.
 */
#ifndef TAILCUT_BASE_CLOCK_H
#define TAILCUT_BASE_CLOCK_H

#include <stdint.h>

#include <uv.h>

static inline uint64_t tc__now_ms(void)
{
    return uv_hrtime() / 1000000;
}

#endif /* TAILCUT_BASE_CLOCK_H */
