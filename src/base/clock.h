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

/* The same reading rounded up to the next whole ms. A loop timer started at uv_now() with a
 * timeout T fires once the loop's clock (rounded down, and possibly the coarse clock a tick
 * behind) reaches uv_now() + T: up to a millisecond or two before T has passed. A timer due at
 * tc__now_ms_up() + T (started with that minus uv_now()) never fires before T has passed. */
static inline uint64_t tc__now_ms_up(void)
{
    return (uv_hrtime() + 999999u) / 1000000u;
}

#endif /* TAILCUT_BASE_CLOCK_H */
