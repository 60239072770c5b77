/*
 * The hedge budget: an extra attempt may fire at t only if the extra attempts fired
 * in (t - 1 s, t], itself included, number at most floor(PCT x R / 100) + 1, where R is the
 * requests admitted in (t - 1 s, t].
 *
 * The one idea: on a millisecond clock the window (t - 1 s, t] is exactly the 1,000 whole
 * milliseconds t - 999 .. t, so a ring of 1,000 per-millisecond counters (requests, extras) plus
 * their running sums answers the rule exactly, in O(1) per call: moving to a later millisecond
 * subtracts and zeroes the slots that left the window (base/window.h: at most 1,000, once each).
 * PCT is held as an integer in millionths of a percent, so the floor is exact integer arithmetic.
 *
 * One budget serves a whole process: every call takes one uv_mutex_t for a few additions. A
 * caller whose clock reads slightly behind another's (two threads racing to the lock) is
 * counted at the latest time seen, which never lets more extras through.
 */
#include <stdlib.h>

#include "base/alloc.h"
#include "base/window.h"
#include "tailcut/hedge.h"

#define WINDOW_MS 1000

struct tc_hedge_budget {
    uv_mutex_t lock;
    uint64_t percent_e6;
    uint64_t latest_ms; /* the newest millisecond the ring holds */
    uint64_t requests, extras;
    uint64_t denied;
    uint32_t slot_requests[WINDOW_MS];
    uint32_t slot_extras[WINDOW_MS];
};

int tc_hedge_budget_parse(const char *text, uint64_t *out)
{
    uint64_t whole = 0, frac = 0, scale = TC_HEDGE_BUDGET_SCALE;
    const char *p = text;
    int digits = 0;
    if (p == NULL || out == NULL)
        return TC_EINVAL;
    for (; *p >= '0' && *p <= '9'; p++, digits++) {
        whole = whole * 10 + (uint64_t)(*p - '0');
        if (whole > 100)
            return TC_EINVAL;
    }
    if (digits == 0)
        return TC_EINVAL;
    if (*p == '.') {
        int fdigits = 0;
        for (p++; *p >= '0' && *p <= '9'; p++, fdigits++) {
            if (fdigits == 6)
                return TC_EINVAL;
            scale /= 10;
            frac += (uint64_t)(*p - '0') * scale;
        }
        if (fdigits == 0)
            return TC_EINVAL;
    }
    if (*p != '\0')
        return TC_EINVAL;
    uint64_t v = whole * TC_HEDGE_BUDGET_SCALE + frac;
    if (v == 0 || v > 100 * TC_HEDGE_BUDGET_SCALE)
        return TC_EINVAL;
    *out = v;
    return 0;
}

int tc_hedge_budget_new(tc_hedge_budget **out, uint64_t percent_e6)
{
    if (out == NULL || percent_e6 == 0 || percent_e6 > 100 * TC_HEDGE_BUDGET_SCALE)
        return TC_EINVAL;
    tc_hedge_budget *bud = tc__calloc(1, sizeof(*bud));
    if (bud == NULL)
        return TC_ENOMEM;
    if (uv_mutex_init(&bud->lock) != 0) {
        tc__free(bud);
        return TC_ENOMEM;
    }
    bud->percent_e6 = percent_e6;
    *out = bud;
    return 0;
}

void tc_hedge_budget_free(tc_hedge_budget *bud)
{
    if (bud == NULL)
        return;
    uv_mutex_destroy(&bud->lock);
    tc__free(bud);
}

/* Forgets a millisecond that left the window. */
static void slot_clear(void *owner, unsigned slot)
{
    tc_hedge_budget *bud = owner;
    bud->requests -= bud->slot_requests[slot];
    bud->extras -= bud->slot_extras[slot];
    bud->slot_requests[slot] = 0;
    bud->slot_extras[slot] = 0;
}

/* Moves the ring to now_ms (or keeps it, for an earlier time); returns now's slot. Lock held. */
static unsigned budget_advance(tc_hedge_budget *bud, uint64_t now_ms)
{
    return tc__window_advance(&bud->latest_ms, now_ms, WINDOW_MS, slot_clear, bud);
}

void tc_hedge_budget_admit(tc_hedge_budget *bud, uint64_t now_ms)
{
    uv_mutex_lock(&bud->lock);
    unsigned slot = budget_advance(bud, now_ms);
    if (bud->slot_requests[slot] < UINT32_MAX) {
        bud->slot_requests[slot]++;
        bud->requests++;
    }
    uv_mutex_unlock(&bud->lock);
}

int tc_hedge_budget_try_extra(tc_hedge_budget *bud, uint64_t now_ms)
{
    uv_mutex_lock(&bud->lock);
    unsigned slot = budget_advance(bud, now_ms);
    /* floor(PCT x R / 100) + 1 with PCT = percent_e6 / SCALE; R < 2^32 x 1000 keeps the product
     * within 64 bits for any rate a machine can admit. */
    uint64_t allowed = bud->percent_e6 * bud->requests / (100 * TC_HEDGE_BUDGET_SCALE) + 1;
    int ok = bud->extras + 1 <= allowed && bud->slot_extras[slot] < UINT32_MAX;
    if (ok) {
        bud->slot_extras[slot]++;
        bud->extras++;
    } else {
        bud->denied++;
    }
    uv_mutex_unlock(&bud->lock);
    return ok;
}

uint64_t tc_hedge_budget_denied(tc_hedge_budget *bud)
{
    uv_mutex_lock(&bud->lock);
    uint64_t n = bud->denied;
    uv_mutex_unlock(&bud->lock);
    return n;
}
