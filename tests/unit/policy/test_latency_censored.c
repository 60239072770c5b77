/*
 * Unit tests of the product-limit (Kaplan-Meier) reading of censored records in tc_latency
 * (src/policy/latency.c), against a brute-force estimate written out from its definition over
 * the raw records: random and adversarial streams, with their times spread over more than the
 * window so that slices decay and expire. The conventions are checked on hand-worked cases:
 * a tie between a finished and a censored record (the censored one is still at risk), all
 * records censored, censored records only above the finished ones, expiry, the decay's weights;
 * and the lower confidence bound (Greenwood's error with censored records, the decayed window's
 * effective count).
 */
#include "hedge_fixture.h"

/* The streams' draws: each test that draws seeds it first, so every run sees the same streams. */
static tc__rng rng;

/* ---- the brute force ------------------------------------------------------------------------ */

typedef struct rec {
    uint64_t t_ms;
    uint64_t v;
    int censored;
} rec;

typedef struct obs {
    uint64_t v;
    int censored;
    double w;
} obs;

static int cmp_obs(const void *a, const void *b)
{
    const obs *x = a, *y = b;
    return x->v < y->v ? -1 : x->v > y->v;
}

/* The top of v's histogram bucket (the header's resolution): values under 64 have their own,
 * then each power of two [2^k, 2^(k+1)) is cut into 64 buckets of width 2^(k-6). */
static uint64_t bucket_top(uint64_t v)
{
    if (v < 64)
        return v;
    unsigned k = 63u - (unsigned)__builtin_clzll(v);
    uint64_t width = UINT64_C(1) << (k - 6);
    return v | (width - 1);
}

/* The window of records r[0..n) (times non-decreasing) as of now_ms, by the header's definition:
 * the records of the last TC_LATENCY_SLICES slices, each weighing exp(-age x slice / decay),
 * sorted by value, with at_risk[i] the weight of every record at index >= i. With
 * raise_censored, every censored value is first moved to the top of its bucket (the resolution
 * the header states). */
typedef struct window {
    obs *o;
    double *at_risk;
    size_t m;
} window;

static void window_of(window *win, const rec *r, size_t n, uint64_t now_ms, int raise_censored)
{
    win->o = malloc((n + 1) * sizeof(obs));
    win->at_risk = malloc((n + 1) * sizeof(double));
    assert_non_null(win->o);
    assert_non_null(win->at_risk);
    size_t m = 0;
    uint64_t now_slice = now_ms / TC_LATENCY_SLICE_MS;
    for (size_t i = 0; i < n; i++) {
        uint64_t slice = r[i].t_ms / TC_LATENCY_SLICE_MS;
        if (slice > now_slice || now_slice - slice >= TC_LATENCY_SLICES)
            continue;
        uint64_t v = r[i].v > TC_LATENCY_MAX_US ? TC_LATENCY_MAX_US : r[i].v;
        if (raise_censored && r[i].censored)
            v = bucket_top(v);
        double age = (double)(now_slice - slice);
        win->o[m++] =
            (obs){v, r[i].censored, exp(-age * TC_LATENCY_SLICE_MS / TC_LATENCY_DECAY_MS)};
    }
    qsort(win->o, m, sizeof(obs), cmp_obs);
    win->at_risk[m] = 0.0;
    for (size_t i = m; i > 0; i--)
        win->at_risk[i - 1] = win->at_risk[i] + win->o[i - 1].w;
    win->m = m;
}

static void window_free(window *win)
{
    free(win->o);
    free(win->at_risk);
}

/* The product-limit q-quantile of a window and its lower confidence bound, written out from the
 * definitions. Every weight is first scaled so that they sum to the effective count
 * n_eff = (sum w)^2 / sum w^2, and then, walking the distinct values upwards:
 *   S(t)     = product over the finished values v <= t of (1 - d(v) / n(v)),
 *   Var S(t) = S(t)^2 x sum over the finished values v <= t of d(v) / (n(v) (n(v) - d(v)))
 *              (Greenwood),
 * d(v) the (scaled) weight finished at v, n(v) that of all records at or above v. The answer is
 * the first finished v with S(v) <= 1 - q + z x sqrt(Var S(v)), else the largest value. */
static int oracle(const window *win, double q, double z, uint64_t *out)
{
    if (win->m == 0)
        return TC_EMISSING;
    const obs *o = win->o;
    double sum_w = 0.0, sum_w2 = 0.0;
    for (size_t i = 0; i < win->m; i++) {
        sum_w += o[i].w;
        sum_w2 += o[i].w * o[i].w;
    }
    double scale = sum_w / sum_w2;
    double reach = (1.0 - q) * (1.0 + 1e-11) + 1e-14, surv = 1.0, var_sum = 0.0;
    for (size_t i = 0; i < win->m;) {
        size_t j = i;
        double d = 0.0;
        for (; j < win->m && o[j].v == o[i].v; j++)
            if (!o[j].censored)
                d += o[j].w * scale;
        if (d > 0.0) {
            /* the last value, all of it finished: every record still at risk ends here, S is 0 */
            int ends_all = j == win->m;
            for (size_t k = i; k < j; k++)
                ends_all &= !o[k].censored;
            if (ends_all) {
                *out = o[i].v;
                return TC_LATENCY_QUANTILE;
            }
            double n = win->at_risk[i] * scale;
            surv *= 1.0 - d / n;
            var_sum += d / (n * (n - d));
            if (surv <= reach + z * sqrt(surv * surv * var_sum)) {
                *out = o[i].v;
                return TC_LATENCY_QUANTILE;
            }
        }
        i = j;
    }
    *out = o[win->m - 1].v;
    return TC_LATENCY_LARGEST;
}

static const double quantiles[] = {0.001, 0.01, 0.1,   0.25,  0.5,    0.75, 0.9,
                                   0.95,  0.99, 0.995, 0.999, 0.9999, 1.0};

/* The widths of the bound checked: the estimate itself, and 1, 2 (the delay's) and 3 standard
 * errors. */
static const double zs[] = {0.0, 1.0, TC_HEDGE_Z, 3.0};

/* Records r into a fresh estimator and checks, at each of the query times, every quantile and
 * every bound width: the same kind of answer as the brute force at the bucket resolution, and the
 * top of the brute force's bucket (so never below its answer and less than 1/64 above it, exact
 * under 64 us); and never below the brute force over the raw records. */
static void check_records(const rec *r, size_t n, const uint64_t *at, size_t nat)
{
    tc_latency *e = NULL;
    assert_int_equal(tc_latency_new(&e), 0);
    size_t i = 0;
    for (size_t k = 0; k < nat; k++) {
        for (; i < n && r[i].t_ms <= at[k]; i++) {
            if (r[i].censored)
                tc_latency_record_censored(e, r[i].t_ms, r[i].v);
            else
                tc_latency_record(e, r[i].t_ms, r[i].v);
        }
        window adj, plain;
        window_of(&adj, r, i, at[k], 1);
        window_of(&plain, r, i, at[k], 0);
        for (size_t j = 0; j < sizeof(quantiles) / sizeof(quantiles[0]); j++) {
            for (size_t y = 0; y < sizeof(zs) / sizeof(zs[0]); y++) {
                double q = quantiles[j], z = zs[y];
                uint64_t got = 0, want = 0, raw = 0;
                int kind = tc_latency_quantile(e, at[k], q, z, &got);
                int want_kind = oracle(&adj, q, z, &want);
                int raw_kind = oracle(&plain, q, z, &raw);
                if (kind != want_kind || (want_kind != TC_EMISSING && got != bucket_top(want)))
                    fail_msg("t=%llu q=%g z=%g: got %llu (%d), brute force %llu (%d), n=%zu",
                             (unsigned long long)at[k], q, z, (unsigned long long)got, kind,
                             (unsigned long long)want, want_kind, i);
                if (want_kind == TC_EMISSING)
                    continue;
                assert_true(raw_kind == TC_LATENCY_QUANTILE || kind == TC_LATENCY_LARGEST);
                if (got < raw)
                    fail_msg("t=%llu q=%g z=%g: got %llu under the raw quantile %llu",
                             (unsigned long long)at[k], q, z, (unsigned long long)got,
                             (unsigned long long)raw);
            }
        }
        window_free(&adj);
        window_free(&plain);
    }
    tc_latency_free(e);
}

/* Times spread over `seconds` (non-decreasing), queried every 1.5 s from the second second on
 * and at the end: slices decay and leave the window in between. */
static void check_spread(rec *r, size_t n, unsigned seconds)
{
    for (size_t i = 0; i < n; i++)
        r[i].t_ms = (uint64_t)i * seconds * 1000 / n;
    uint64_t at[32];
    size_t nat = 0;
    for (uint64_t t = 1500; t < (uint64_t)seconds * 1000 && nat < 31; t += 1500)
        at[nat++] = t;
    at[nat++] = (uint64_t)seconds * 1000 + 500;
    check_records(r, n, at, nat);
}

/* A value of the distribution `kind`: 0 uniform up to 10 s, 1 log-uniform over 0..2^32,
 * 2 the benchmark's mix (99% 10-30 ms, 1% 1-2 s), 3 a small set of values (ties). */
static uint64_t draw(int kind)
{
    switch (kind) {
    case 0:
        return tc__rng_below(&rng, 10000000);
    case 1:
        return (uint64_t)exp((double)tc__rng_below(&rng, 1000000) / 1000000.0 * log(4e9));
    case 2:
        return tc__rng_below(&rng, 100) == 0 ? 1000000 + tc__rng_below(&rng, 1000001)
                                             : 10000 + tc__rng_below(&rng, 20001);
    default:
        return 1000 * (1 + tc__rng_below(&rng, 8));
    }
}

#define N 20000

static void test_random_streams(void **state)
{
    tc__rng_seed(&rng, 0x9e3779b97f4a7c15ULL);
    rec *r = malloc(N * sizeof(*r));
    assert_non_null(r);
    /* each distribution with a share of censored records from none to nearly all */
    static const unsigned censored_pct[] = {0, 5, 30, 70, 98};
    for (int kind = 0; kind < 4; kind++) {
        for (size_t c = 0; c < sizeof(censored_pct) / sizeof(censored_pct[0]); c++) {
            for (size_t i = 0; i < N; i++)
                r[i] = (rec){0, draw(kind), tc__rng_below(&rng, 100) < censored_pct[c]};
            check_spread(r, N, 14);
        }
    }
    /* small windows: a handful of records, many of them ties */
    for (size_t n = 1; n < 40; n++) {
        for (size_t i = 0; i < n; i++)
            r[i] = (rec){0, 100 + tc__rng_below(&rng, 400), tc__rng_below(&rng, 3) == 0};
        check_spread(r, n, 3);
    }
    free(r);
}

static void test_hedging_stream(void **state)
{
    tc__rng_seed(&rng, 0x9e3779b97f4a7c15ULL);
    /* What a hedged upstream records: on the mix, a slow first attempt is cancelled when its
     * extra wins, so it is censored at the delay plus the winner's latency, just above the fast
     * band; the winner is a finished fast value. */
    rec *r = malloc(N * sizeof(*r));
    assert_non_null(r);
    size_t n = 0;
    while (n + 2 < N) {
        uint64_t first = draw(2);
        uint64_t delay = 30000;
        if (first <= delay) {
            r[n++] = (rec){0, first, 0};
        } else {
            uint64_t extra = 10000 + tc__rng_below(&rng, 20001);
            uint64_t end = first < delay + extra ? first : delay + extra;
            r[n++] = (rec){0, end, first >= delay + extra};
            r[n++] = (rec){0, end - delay, first < delay + extra};
        }
    }
    check_spread(r, n, 12);
    free(r);
}

static void test_adversarial_streams(void **state)
{
    tc__rng_seed(&rng, 0x9e3779b97f4a7c15ULL);
    rec *r = malloc(N * sizeof(*r));
    assert_non_null(r);
    size_t n = 0;
    /* every bucket edge, each value once finished and once censored, in both orders */
    for (unsigned k = 0; k < 33 && n + 4 * 70 < N; k++) {
        uint64_t p = UINT64_C(1) << k;
        for (unsigned s = 0; s < 64 && (k >= 6 || s == 0); s++) {
            uint64_t v = p + (p / 64) * s;
            r[n++] = (rec){0, v - 1, (k + s) % 2};
            r[n++] = (rec){0, v, (k + s + 1) % 2};
            r[n++] = (rec){0, v + 1, 1};
        }
    }
    check_spread(r, n, 2);
    /* censored just below a finished value of the same bucket, and just above it */
    n = 0;
    for (size_t i = 0; i < 2000; i++) {
        uint64_t base = 64000 + 1000 * tc__rng_below(&rng, 50);
        r[n++] = (rec){0, base + 5, 0};
        r[n++] = (rec){0, base + (i % 2 ? 1 : 9), 1};
    }
    check_spread(r, n, 11);
    /* zeros, the maximum and beyond it, each kind */
    for (size_t i = 0; i < 1000; i++)
        r[i] = (rec){0, i % 3 == 0 ? 0 : UINT64_MAX - i, i % 2};
    check_spread(r, 1000, 5);
    /* ascending, then descending values, the censored ones ascending among them */
    for (size_t i = 0; i < N; i++)
        r[i] = (rec){0, i * 37, i % 7 == 0};
    check_spread(r, N, 12);
    for (size_t i = 0; i < N; i++)
        r[i] = (rec){0, (N - i) * 37, i % 3 == 0};
    check_spread(r, N, 12);
    free(r);
}

/* ---- the conventions, worked by hand ------------------------------------------------------ */

static void test_tie_censored_still_at_risk(void **state)
{
    /* 10 finished and 90 censored at 1,000 us, 100 finished at 2,000 us, all in one slice.
     * Tie convention: the 90 are still running when the 10 end, so S(1000) = 1 - 10/200 = 0.95.
     * (Were they out first, S(1000) = 1 - 10/110 = 0.909, and p6 would be 1,000.) */
    tc_latency *e = NULL;
    uint64_t v = 0;
    assert_int_equal(tc_latency_new(&e), 0);
    for (int i = 0; i < 90; i++)
        tc_latency_record_censored(e, 100, 1000);
    for (int i = 0; i < 10; i++)
        tc_latency_record(e, 100, 1000);
    for (int i = 0; i < 100; i++)
        tc_latency_record(e, 100, 2000);
    assert_int_equal(tc_latency_count(e, 100), 200);
    assert_int_equal(tc_latency_quantile(e, 100, 0.05, 0.0, &v), TC_LATENCY_QUANTILE);
    assert_in_range(v, 993, 1007); /* S reaches 0.95 exactly at 1,000 */
    assert_int_equal(tc_latency_quantile(e, 100, 0.06, 0.0, &v), TC_LATENCY_QUANTILE);
    assert_in_range(v, 1985, 2016);
    assert_int_equal(tc_latency_quantile(e, 100, 1.0, 0.0, &v), TC_LATENCY_QUANTILE);
    assert_in_range(v, 1985, 2016);
    tc_latency_free(e);
}

static void test_all_censored_and_censored_above(void **state)
{
    tc_latency *e = NULL;
    uint64_t v = 0;
    assert_int_equal(tc_latency_new(&e), 0);
    /* all censored: the estimate never falls; the answer is the largest value, and says so */
    for (uint64_t i = 1; i <= 100; i++)
        tc_latency_record_censored(e, 1000, i * 1000);
    assert_int_equal(tc_latency_quantile(e, 1000, 0.5, 0.0, &v), TC_LATENCY_LARGEST);
    assert_in_range(v, 99300, 100800);
    assert_int_equal(tc_latency_quantile(e, 1000, 0.001, 0.0, &v), TC_LATENCY_LARGEST);
    tc_latency_free(e);

    /* 100 finished in 10-20 ms, 5 censored at 50 ms: S after the last finished one is
     * 5/105 = 0.0476, so p95 is reached among the finished ones and p96 is not */
    assert_int_equal(tc_latency_new(&e), 0);
    for (uint64_t i = 0; i < 100; i++)
        tc_latency_record(e, 1000, 10000 + i * 100);
    for (int i = 0; i < 5; i++)
        tc_latency_record_censored(e, 1000, 50000);
    assert_int_equal(tc_latency_quantile(e, 1000, 0.95, 0.0, &v), TC_LATENCY_QUANTILE);
    assert_in_range(v, 19700, 20000); /* only the last finished value takes S to 5/105 */
    assert_int_equal(tc_latency_quantile(e, 1000, 0.96, 0.0, &v), TC_LATENCY_LARGEST);
    assert_in_range(v, 49600, 50400);
    /* censored far below every finished one leave before any ends: no effect at all */
    for (int i = 0; i < 1000; i++)
        tc_latency_record_censored(e, 1000, 5);
    assert_int_equal(tc_latency_quantile(e, 1000, 0.5, 0.0, &v), TC_LATENCY_QUANTILE);
    assert_in_range(v, 15050, 15350); /* the 53rd finished value (15,200 us), as before */
    tc_latency_free(e);
}

static void test_decay_and_expiry(void **state)
{
    tc_latency *e = NULL;
    uint64_t v = 0;
    assert_int_equal(tc_latency_new(&e), 0);
    /* 100 finished at 1 ms in second 0, 100 at 100 ms in second 4. As of second 4 the first
     * weigh w = exp(-4 s / TC_LATENCY_DECAY_MS) each and the second 1: S(1 ms) = 1 - 100 w /
     * (100 w + 100) */
    for (int i = 0; i < 100; i++)
        tc_latency_record(e, (uint64_t)i, 1000);
    for (int i = 0; i < 100; i++)
        tc_latency_record(e, 4000 + (uint64_t)i, 100000);
    double w = exp(-4.0 * TC_LATENCY_SLICE_MS / TC_LATENCY_DECAY_MS);
    double s1 = 1.0 - w / (w + 1.0);
    assert_int_equal(tc_latency_count(e, 4500), 200);
    assert_int_equal(tc_latency_quantile(e, 4500, (1.0 - s1) * 0.999, 0.0, &v),
                     TC_LATENCY_QUANTILE);
    assert_in_range(v, 992, 1008);
    assert_int_equal(tc_latency_quantile(e, 4500, (1.0 - s1) * 1.001, 0.0, &v),
                     TC_LATENCY_QUANTILE);
    assert_in_range(v, 99300, 100800);
    /* second 0 leaves at second 10: p10 is 100 ms from then on */
    assert_int_equal(tc_latency_quantile(e, 9999, 0.1, 0.0, &v), TC_LATENCY_QUANTILE);
    assert_in_range(v, 992, 1008);
    assert_int_equal(tc_latency_count(e, 10000), 100);
    assert_int_equal(tc_latency_quantile(e, 10000, 0.1, 0.0, &v), TC_LATENCY_QUANTILE);
    assert_in_range(v, 99300, 100800);
    /* censored records expire too: a censored tail makes p99 the largest value until it
     * leaves, then p99 is a finished value again */
    for (int i = 0; i < 10; i++)
        tc_latency_record_censored(e, 11000, 900000);
    assert_int_equal(tc_latency_quantile(e, 11000, 0.99, 0.0, &v), TC_LATENCY_LARGEST);
    assert_in_range(v, 893000, 907000);
    for (int i = 0; i < 100; i++)
        tc_latency_record(e, 12000, 200000);
    assert_int_equal(tc_latency_quantile(e, 20999, 0.99, 0.0, &v), TC_LATENCY_LARGEST);
    assert_int_equal(tc_latency_quantile(e, 21000, 0.99, 0.0, &v), TC_LATENCY_QUANTILE);
    assert_in_range(v, 198400, 201600);
    assert_int_equal(tc_latency_quantile(e, 30000, 0.99, 0.0, &v), TC_EMISSING);
    tc_latency_free(e);
}

/* ---- the bound, worked by hand ------------------------------------------------------------ */

static void test_bound_greenwood_with_censoring(void **state)
{
    /* 500 censored at 1 ms, 480 finished at 2 ms, 20 at 3 ms, one slice (weight 1). The censored
     * ones leave before anything ends, so S(2 ms) = 1 - 480/500 = 0.04 and Greenwood's
     * SE = 0.04 x sqrt(480 / (500 x 20)) = 0.00876: the error of 500 records, not of the 1,000
     * recorded (0.0062). For p97 (1 - q = 0.03): with z = 1.5 the bound reaches
     * 0.03 + 0.0131 >= 0.04, so 2 ms (were SE that of 1,000 records: 0.0393, 3 ms); with z = 1,
     * 0.0388 < 0.04: 3 ms; and the estimate itself (z = 0) is 3 ms. */
    tc_latency *e = NULL;
    uint64_t v = 0;
    assert_int_equal(tc_latency_new(&e), 0);
    for (int i = 0; i < 500; i++)
        tc_latency_record_censored(e, 100, 1000);
    for (int i = 0; i < 480; i++)
        tc_latency_record(e, 100, 2000);
    for (int i = 0; i < 20; i++)
        tc_latency_record(e, 100, 3000);
    assert_int_equal(tc_latency_quantile(e, 100, 0.97, 1.5, &v), TC_LATENCY_QUANTILE);
    assert_int_equal(v, 2015); /* the top of 2,000's bucket (2,000-2,015 us) */
    assert_int_equal(tc_latency_quantile(e, 100, 0.97, 1.0, &v), TC_LATENCY_QUANTILE);
    assert_int_equal(v, 3007); /* 2,976-3,007 us */
    assert_int_equal(tc_latency_quantile(e, 100, 0.97, 0.0, &v), TC_LATENCY_QUANTILE);
    assert_int_equal(v, 3007);
    /* a bound wide enough reaches the first finished value, whatever q */
    assert_int_equal(tc_latency_quantile(e, 100, 1.0, TC_LATENCY_MAX_Z, &v), TC_LATENCY_QUANTILE);
    assert_int_equal(v, 2015);
    tc_latency_free(e);

    /* all censored: no bound reaches anything */
    assert_int_equal(tc_latency_new(&e), 0);
    for (int i = 0; i < 100; i++)
        tc_latency_record_censored(e, 100, 1000);
    assert_int_equal(tc_latency_quantile(e, 100, 0.5, 3.0, &v), TC_LATENCY_LARGEST);
    assert_int_equal(v, 1007);
    tc_latency_free(e);
}

static void test_bound_effective_count(void **state)
{
    /* 1,000 finished at 1 ms in second 0, then 960 at 1 ms and 40 at 3 ms in second 4. As of
     * second 4 the first weigh w = exp(-1) = 0.368 each: S(1 ms) = 40 / (1,000 w + 1,000) =
     * 0.02924, and the effective count is (1,000 w + 1,000)^2 / (1,000 w^2 + 1,000) = 1,648, so
     * SE = sqrt(S (1 - S) / 1,648) = 0.00415 and p98's bound reaches S(1 ms) from
     * z = (0.02924 - 0.02) / 0.00415 = 2.23 on. (Counting the 2,000 records: from z = 2.45 on;
     * the weights unscaled, 1,368: from 2.03 on.) */
    tc_latency *e = NULL;
    uint64_t v = 0;
    assert_int_equal(tc_latency_new(&e), 0);
    for (int i = 0; i < 1000; i++)
        tc_latency_record(e, 100, 1000);
    for (int i = 0; i < 1000; i++)
        tc_latency_record(e, 4100, i < 960 ? 1000 : 3000);
    assert_int_equal(tc_latency_quantile(e, 4200, 0.98, 2.13, &v), TC_LATENCY_QUANTILE);
    assert_int_equal(v, 3007);
    assert_int_equal(tc_latency_quantile(e, 4200, 0.98, 2.33, &v), TC_LATENCY_QUANTILE);
    assert_int_equal(v, 1007);
    tc_latency_free(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_streams),
        cmocka_unit_test(test_hedging_stream),
        cmocka_unit_test(test_adversarial_streams),
        cmocka_unit_test(test_tie_censored_still_at_risk),
        cmocka_unit_test(test_all_censored_and_censored_above),
        cmocka_unit_test(test_decay_and_expiry),
        cmocka_unit_test(test_bound_greenwood_with_censoring),
        cmocka_unit_test(test_bound_effective_count),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
