/*
 * A decaying latency estimator with censored records, and the percentile hedge delay built on it
 * (adaptive hedging).
 *
 * Two kinds of record: a finished value (an attempt that answered, at its latency) and a censored
 * one (an attempt cancelled because another won, at its elapsed time: its latency is larger, by
 * how much nobody knows). Reading the censored ones as finished pulls every percentile down onto
 * the moments of cancellation; dropping them hides exactly the slow attempts. The product-limit
 * (Kaplan-Meier) estimate is the unbiased reading: walking the values upwards, each bucket's
 * finished records end a share d / n of the n records still "at risk" (not yet finished or
 * cancelled below it), S *= 1 - d / n, and a censored record only leaves the risk set, never ends
 * a share. The q-quantile is the first value where S falls to 1 - q; with no censored record
 * S is 1 - rank / n and this is the nearest rank of the plain histogram.
 *
 * The percentile is read as a lower confidence bound: the first bucket where S falls to
 * 1 - q + z x SE(S), SE by Greenwood's formula. Where the latencies have a sharp edge exactly at
 * the percentile (1% of stragglers and p99), the estimate of S there is 1 - q give or take its
 * noise, and an unbiased reading lands above the edge in half the re-estimates; the bound keeps it
 * at the edge unless S is above 1 - q by more than the noise (docs/hedge.md, "The bound").
 *
 * The one idea: a log-linear histogram (base/loglin.h, 64 sub-buckets per power of two, so a
 * bucket is never wider than 1/64 of its lower bound) holds both counts per bucket, so the
 * estimate is one pass over the buckets, not over the records. The answer is the top of the
 * bucket the quantile falls in, so it is never below a value of that bucket and at most 1/64
 * above any of them. The window is a ring of TC_LATENCY_SLICES slices of TC_LATENCY_SLICE_MS,
 * each with its own counts; a record weighs exp(-k x slice / TC_LATENCY_DECAY_MS) when its slice
 * is k slices old, so the pass sums each bucket's counts across the live slices with those
 * weights. Beside the ring, `sum` and `octave_sum` hold the unweighted count of every bucket and
 * octave over the live slices, so the pass skips empty octaves and buckets: a few octaves of 64
 * buckets in practice. When time moves into a new slice, the slices that left the window are
 * subtracted from the totals and zeroed (base/window.h): once per slice, bounded by the ring, no
 * allocation.
 */
#include <math.h>
#include <string.h>

#include "base/alloc.h"
#include "base/loglin.h"
#include "base/window.h"
#include "tailcut/hedge.h"

#define SUB_BITS 6
#define MAX_BITS 32 /* 2^32 us: TC_LATENCY_MAX_US */
#define SUB_COUNT (1u << SUB_BITS)
#define NBUCKETS TC__LOGLIN_BUCKETS(SUB_BITS, MAX_BITS) /* 1,728 */
#define OCTAVES (NBUCKETS / SUB_COUNT)                  /* 27 */

enum { FINISHED = 0, CENSORED = 1 };

struct tc_latency {
    uint64_t slice_id;                /* now_ms / TC_LATENCY_SLICE_MS of the newest slice */
    uint64_t total;                   /* records of both kinds in the window */
    double weight[TC_LATENCY_SLICES]; /* weight[k]: a record of a slice k slices old */
    uint64_t octave_sum[OCTAVES];     /* records of both kinds per octave, live slices */
    uint64_t sum[NBUCKETS];           /* records of both kinds per bucket, live slices */
    uint32_t slice_total[TC_LATENCY_SLICES];
    uint32_t slices[TC_LATENCY_SLICES][NBUCKETS][2]; /* [FINISHED], [CENSORED] */
};

/* The value a bucket stands for: the largest it holds, so that a delay read from it is never
 * below a latency of the bucket (the top of a band whose edge is the percentile stays unhedged). */
static uint64_t bucket_top(size_t bucket)
{
    uint64_t low, width;
    tc__loglin_bucket(bucket, SUB_BITS, &low, &width);
    return low + width - 1;
}

int tc_latency_new(tc_latency **out)
{
    if (out == NULL)
        return TC_EINVAL;
    tc_latency *est = tc__calloc(1, sizeof(*est));
    if (est == NULL)
        return TC_ENOMEM;
    for (unsigned k = 0; k < TC_LATENCY_SLICES; k++)
        est->weight[k] = exp(-(double)k * TC_LATENCY_SLICE_MS / TC_LATENCY_DECAY_MS);
    *out = est;
    return 0;
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
    for (size_t bucket = 0; bucket < NBUCKETS; bucket++) {
        uint64_t count =
            (uint64_t)est->slices[slice][bucket][FINISHED] + est->slices[slice][bucket][CENSORED];
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

static void record(tc_latency *est, uint64_t now_ms, uint64_t value_us, int kind)
{
    unsigned slice = latency_advance(est, now_ms);
    size_t bucket = tc__loglin_index(value_us, SUB_BITS, MAX_BITS);
    if (est->slice_total[slice] == UINT32_MAX)
        return; /* four billion records in one slice: the rest of it is not counted */
    est->slices[slice][bucket][kind]++;
    est->slice_total[slice]++;
    est->sum[bucket]++;
    est->octave_sum[bucket / SUB_COUNT]++;
    est->total++;
}

void tc_latency_record(tc_latency *est, uint64_t now_ms, uint64_t value_us)
{
    record(est, now_ms, value_us, FINISHED);
}

void tc_latency_record_censored(tc_latency *est, uint64_t now_ms, uint64_t value_us)
{
    record(est, now_ms, value_us, CENSORED);
}

uint64_t tc_latency_count(tc_latency *est, uint64_t now_ms)
{
    latency_advance(est, now_ms);
    return est->total;
}

int tc_latency_quantile(tc_latency *est, uint64_t now_ms, double q, double z, uint64_t *value_us)
{
    if (!(q > 0.0 && q <= 1.0) || !(z >= 0.0 && z <= TC_LATENCY_MAX_Z) || value_us == NULL)
        return TC_EINVAL;
    unsigned now_slice = latency_advance(est, now_ms);
    if (est->total == 0)
        return TC_EMISSING;
    /* Each ring slot's weight as of now, and the weight of every record: all at risk at 0. */
    double wt[TC_LATENCY_SLICES];
    double at_risk = 0.0, sum_w2 = 0.0;
    for (unsigned k = 0; k < TC_LATENCY_SLICES; k++) {
        unsigned slice = (now_slice + TC_LATENCY_SLICES - k) % TC_LATENCY_SLICES;
        wt[slice] = est->weight[k];
        at_risk += wt[slice] * (double)est->slice_total[slice];
        sum_w2 += wt[slice] * wt[slice] * (double)est->slice_total[slice];
    }
    /* Greenwood's formula counts records of weight 1. Scaling every weight by sum_w / sum_w2
     * leaves S as it is and makes the total weight the effective count (sum_w)^2 / sum_w2 (Kish):
     * the variance of a decayed share, not of as many records as the window holds. In the sum
     * below the scaling comes out as one factor, sum_w2 / sum_w. */
    double var_scale = sum_w2 / at_risk;
    /* S is a product of up to 1,728 factors, so it carries rounding of a few 1e-13: a survival
     * that is 1 - q in exact arithmetic (q x n whole, no censoring) must count as reaching it. */
    double reach = (1.0 - q) * (1.0 + 1e-11) + 1e-14;
    double surv = 1.0, greenwood = 0.0;
    uint64_t left = est->total; /* records at or above the bucket, unweighted */
    size_t last = 0;
    for (size_t octave = 0; octave < OCTAVES; octave++) {
        if (est->octave_sum[octave] == 0)
            continue;
        for (size_t bucket = octave * SUB_COUNT; bucket < (octave + 1) * SUB_COUNT; bucket++) {
            if (est->sum[bucket] == 0)
                continue;
            double ended = 0.0, cens = 0.0;
            uint64_t finished = 0;
            for (unsigned slice = 0; slice < TC_LATENCY_SLICES; slice++) {
                finished += est->slices[slice][bucket][FINISHED];
                ended += wt[slice] * (double)est->slices[slice][bucket][FINISHED];
                cens += wt[slice] * (double)est->slices[slice][bucket][CENSORED];
            }
            /* The bucket's censored records are still at risk when its finished ones end:
             * a cancelled attempt had not finished at its elapsed time. When the finished ones
             * are all that is left, S is 0 exactly (at_risk, a running difference of weights,
             * would leave a residue there), and so is its error. */
            if (ended > 0.0) {
                if (finished == left) {
                    *value_us = bucket_top(bucket);
                    return TC_LATENCY_QUANTILE;
                }
                surv *= 1.0 - ended / at_risk;
                greenwood += ended / (at_risk * (at_risk - ended));
                double se = surv * sqrt(var_scale * greenwood);
                if (surv <= reach + z * se) {
                    *value_us = bucket_top(bucket);
                    return TC_LATENCY_QUANTILE;
                }
            }
            at_risk -= ended + cens;
            left -= est->sum[bucket];
            last = bucket;
        }
    }
    /* The slowest records were censored: S stays above the bound, and the percentile lies
     * somewhere above the largest value recorded, which is the best lower bound the window has. */
    *value_us = bucket_top(last);
    return TC_LATENCY_LARGEST;
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
    cfg->z = TC_HEDGE_Z;
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
        !(cfg->z >= 0.0 && cfg->z <= TC_LATENCY_MAX_Z) || cfg->max_ms == 0)
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

void tc_hedge_adaptive_record_censored(tc_hedge_adaptive *ad, uint64_t now_ms, uint64_t elapsed_us)
{
    uv_mutex_lock(&ad->lock);
    tc_latency_record_censored(ad->est, now_ms, elapsed_us);
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
        /* Either answer is the delay: the percentile, or the largest value when the records
         * cannot reach it. */
        if (ad->recorded >= ad->cfg.warmup &&
            tc_latency_quantile(ad->est, now_ms, ad->cfg.percentile / 100.0, ad->cfg.z, &us) >= 0) {
            /* Rounded up: the delay is never below a latency of the quantile's bucket. */
            ad->delay_ms = clamp_delay(us / 1000 + (us % 1000 != 0), ad->cfg.max_ms);
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
