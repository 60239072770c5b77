/*
 * A sliding window over a ring of n slots, one slot per unit of time (a millisecond, a slice of
 * a second): what the hedge budget counts over the last second and the latency estimator over
 * its last few seconds. The owner keeps the slots and their running totals; moving the window
 * clears, through the owner's callback, each slot that left it (at most n, each once), so every
 * call is O(1) amortised and nothing is ever allocated.
 */
#ifndef TAILCUT_BASE_WINDOW_H
#define TAILCUT_BASE_WINDOW_H

#include <stdint.h>

/* Moves the window whose newest unit is *newest to unit `now`, clearing the slots of the units
 * that left it; an earlier unit than *newest keeps the window where it is (a caller whose clock
 * reads behind another's is counted at the newest time). Returns the slot of the newest unit. */
static inline unsigned tc__window_advance(uint64_t *newest, uint64_t now, unsigned n,
                                          void (*clear)(void *owner, unsigned slot), void *owner)
{
    if (now > *newest) {
        uint64_t steps = now - *newest;
        if (steps > n)
            steps = n; /* the whole ring left the window: each slot once */
        for (uint64_t k = 1; k <= steps; k++)
            clear(owner, (unsigned)((*newest + k) % n));
        *newest = now;
    }
    return (unsigned)(*newest % n);
}

#endif /* TAILCUT_BASE_WINDOW_H */
