/*
 * A windowed latency estimator and the percentile hedge delay built on it (adaptive hedging).
 *
 * The one idea: a log-linear histogram. A value's bucket is its leading bit (the octave) and the
 * next six bits (64 linear sub-buckets per octave), so a bucket is never wider than 1/64 of its
 * lower bound and its midpoint is within 1/128 of any value in it. Values below 64 us get a
 * bucket each. 27 octaves x 64 cover 0 to 2^32 us in 1,728 buckets.
 *
 * The window is a ring of TC_LATENCY_SLICES slices of TC_LATENCY_SLICE_MS, each a full set of
 * bucket counts. Beside the ring, `sum` holds every bucket's count over the live slices and
 * `octave_sum` every octave's, so a record is two increments plus the slice's own, and a
 * quantile walks at most 27 octave totals and then 64 buckets of one octave. When time moves
 * into a new slice, the slices that left the window are subtracted from the totals and zeroed
 * (base/window.h): once per slice, bounded by the ring's size, with no allocation.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/window.h"
#include "tailcut/hedge.h"

#define SUB_BITS 6
#define SUB_COUNT (1u << SUB_BITS) /* 64 buckets per octave */
#define OCTAVES 27 /* octave 0: values 0..63 exactly; octave g: [2^(g+5), 2^(g+6)) */
#define NBUCKETS (OCTAVES * SUB_COUNT)

struct tc_latency {
    uint64_t slice_id; /* now_ms / TC_LATENCY_SLICE_MS of the newest slice */
    uint64_t total;    /* values in the window */
    uint64_t octave_sum[OCTAVES];
    uint64_t sum[NBUCKETS];
    uint32_t slice_total[TC_LATENCY_SLICES];
    uint32_t slices[TC_LATENCY_SLICES][NBUCKETS];
};

static unsigned bucket_of(uint64_t v)
{
    if (v > TC_LATENCY_MAX_US)
        v = TC_LATENCY_MAX_US;
    if (v < SUB_COUNT)
        return (unsigned)v;
    unsigned top = 63u - (unsigned)__builtin_clzll(v); /* 6..31 */
    unsigned sub = (unsigned)(v >> (top - SUB_BITS)) & (SUB_COUNT - 1);
    return (top - SUB_BITS + 1) * SUB_COUNT + sub;
}

/* The value a bucket stands for: the midpoint of the values it holds. */
static uint64_t bucket_value(unsigned bucket)
{
    if (bucket < SUB_COUNT)
        return bucket;
    unsigned octave = bucket / SUB_COUNT, sub = bucket % SUB_COUNT;
    unsigned shift = octave - 1; /* octave g holds [2^(g+5), 2^(g+6)) in steps of 2^(g-1) */
    uint64_t lo = (uint64_t)(SUB_COUNT + sub) << shift;
    uint64_t width = UINT64_C(1) << shift;
    return lo + (width - 1) / 2;
}

int tc_latency_new(tc_latency **out)
{
    if (out == NULL)
        return TC_EINVAL;
    *out = calloc(1, sizeof(**out));
    return *out == NULL ? TC_ENOMEM : 0;
}

void tc_latency_free(tc_latency *est)
{
    tc__free(est);
}

/* Forgets a slice: subtracts its counts from the totals and zeroes it. */
static void slice_clear(void *owner, unsigned slice)
{
    tc_latency *est = owner;
    if (est->slice_total[slice] == 0)
        return;
    for (unsigned bucket = 0; bucket < NBUCKETS; bucket++) {
        uint32_t count = est->slices[slice][bucket];
        if (count != 0) {
            est->sum[bucket] -= count;
            est->octave_sum[bucket / SUB_COUNT] -= count;
        }
    }
    est->total -= est->slice_total[slice];
    est->slice_total[slice] = 0;
    memset(est->slices[slice], 0, sizeof(est->slices[slice]));
}

/* Moves the window to now_ms (or keeps it, for an earlier time); returns the ring index of the
 * current slice. */
static unsigned latency_advance(tc_latency *est, uint64_t now_ms)
{
    return tc__window_advance(&est->slice_id, now_ms / TC_LATENCY_SLICE_MS, TC_LATENCY_SLICES,
                              slice_clear, est);
}

void tc_latency_record(tc_latency *est, uint64_t now_ms, uint64_t value_us)
{
    unsigned slice = latency_advance(est, now_ms);
    unsigned bucket = bucket_of(value_us);
    if (est->slice_total[slice] == UINT32_MAX)
        return; /* four billion values in one slice: the rest of it is not counted */
    est->slices[slice][bucket]++;
    est->slice_total[slice]++;
    est->sum[bucket]++;
    est->octave_sum[bucket / SUB_COUNT]++;
    est->total++;
}

uint64_t tc_latency_count(tc_latency *est, uint64_t now_ms)
{
    latency_advance(est, now_ms);
    return est->total;
}

int tc_latency_quantile(tc_latency *est, uint64_t now_ms, double quantile, uint64_t *value_us)
{
    if (!(quantile > 0.0 && quantile <= 1.0) || value_us == NULL)
        return TC_EINVAL;
    latency_advance(est, now_ms);
    if (est->total == 0)
        return TC_EMISSING;
    /* Nearest rank; the small slack keeps quantile x n exact when it is whole in theory. */
    double exact = ceil(quantile * (double)est->total - 1e-9);
    uint64_t rank = exact < 1.0 ? 1 : (uint64_t)exact;
    if (rank > est->total)
        rank = est->total;
    uint64_t seen = 0;
    unsigned octave = 0;
    while (octave + 1 < OCTAVES && seen + est->octave_sum[octave] < rank)
        seen += est->octave_sum[octave++];
    unsigned bucket = octave * SUB_COUNT;
    while (bucket + 1 < (octave + 1) * SUB_COUNT && seen + est->sum[bucket] < rank)
        seen += est->sum[bucket++];
    *value_us = bucket_value(bucket);
    return 0;
}

/* ---- the percentile delay ----------------------------------------------------------------------
 */

struct tc_hedge_adaptive {
    uv_mutex_t lock;
    tc_hedge_adaptive_config cfg;
    tc_latency *est;
    uint64_t recorded;
    uint64_t delay_ms;
    uint64_t estimated_at_ms;
    int estimated; /* delay_ms holds an estimate (else it is the fallback, to be refreshed) */
};

void tc_hedge_adaptive_config_init(tc_hedge_adaptive_config *cfg)
{
    cfg->percentile = 99.0;
    cfg->fallback_ms = 300;
    cfg->max_ms = 60000;
    cfg->warmup = TC_HEDGE_WARMUP;
}

static uint64_t clamp_delay(uint64_t ms, uint64_t max_ms)
{
    if (ms < 1)
        return 1;
    return ms > max_ms ? max_ms : ms;
}

int tc_hedge_adaptive_new(tc_hedge_adaptive **out, const tc_hedge_adaptive_config *cfg)
{
    if (out == NULL || cfg == NULL || !(cfg->percentile >= 50.0 && cfg->percentile <= 99.9) ||
        cfg->max_ms == 0)
        return TC_EINVAL;
    tc_hedge_adaptive *ad = tc__calloc(1, sizeof(*ad));
    if (ad == NULL)
        return TC_ENOMEM;
    if (tc_latency_new(&ad->est) != 0) {
        tc__free(ad);
        return TC_ENOMEM;
    }
    if (uv_mutex_init(&ad->lock) != 0) {
        tc_latency_free(ad->est);
        tc__free(ad);
        return TC_ENOMEM;
    }
    ad->cfg = *cfg;
    ad->delay_ms = clamp_delay(cfg->fallback_ms, cfg->max_ms);
    *out = ad;
    return 0;
}

void tc_hedge_adaptive_free(tc_hedge_adaptive *ad)
{
    if (ad == NULL)
        return;
    uv_mutex_destroy(&ad->lock);
    tc_latency_free(ad->est);
    tc__free(ad);
}

void tc_hedge_adaptive_record(tc_hedge_adaptive *ad, uint64_t now_ms, uint64_t latency_us)
{
    uv_mutex_lock(&ad->lock);
    tc_latency_record(ad->est, now_ms, latency_us);
    ad->recorded++;
    uv_mutex_unlock(&ad->lock);
}

uint64_t tc_hedge_adaptive_delay_ms(tc_hedge_adaptive *ad, uint64_t now_ms)
{
    uv_mutex_lock(&ad->lock);
    /* An estimate is redone once TC_HEDGE_REFRESH_MS old; the fallback as soon as it may end. */
    int stale = !ad->estimated || now_ms < ad->estimated_at_ms ||
                now_ms - ad->estimated_at_ms >= TC_HEDGE_REFRESH_MS;
    if (stale) {
        uint64_t us = 0;
        if (ad->recorded >= ad->cfg.warmup &&
            tc_latency_quantile(ad->est, now_ms, ad->cfg.percentile / 100.0, &us) == 0) {
            ad->delay_ms = clamp_delay((us + 500) / 1000, ad->cfg.max_ms);
            ad->estimated = 1;
            ad->estimated_at_ms = now_ms;
        } else {
            ad->delay_ms = clamp_delay(ad->cfg.fallback_ms, ad->cfg.max_ms);
            ad->estimated = 0;
        }
    }
    uint64_t d = ad->delay_ms;
    uv_mutex_unlock(&ad->lock);
    return d;
}

uint64_t tc_hedge_adaptive_recorded(tc_hedge_adaptive *ad)
{
    uv_mutex_lock(&ad->lock);
    uint64_t n = ad->recorded;
    uv_mutex_unlock(&ad->lock);
    return n;
}
