/*
 * Unit tests for adaptive hedging (src/policy/latency.c, src/policy/budget.c):
 * - the estimator with finished records only against a sorted-array oracle (the nearest rank),
 *   on random and adversarial streams, and its window on a fake clock (censored records and
 *   the decay: test_latency_censored.c);
 * - the budget against a brute-force oracle of the budget rule at every decision, at 1, 20,
 *   200 and 2,000 requests/s, with bursts and with traffic stopping right after a burst;
 * - the percentile delay's warm-up, fallback, refresh and clamps, on a fake clock.
 */
#include "hedge_fixture.h"

/* ---- the estimator ----------------------------------------------------------------------------
 */

/* The oracle: the nearest-rank quantile of the values, with the estimator's own rank rule. */
static uint64_t oracle_quantile(uint64_t *sorted, size_t n, double q)
{
    double r = ceil(q * (double)n - 1e-9);
    size_t rank = r < 1.0 ? 1 : (size_t)r;
    if (rank > n)
        rank = n;
    return sorted[rank - 1];
}

static const double quantiles[] = {0.001, 0.01, 0.1,   0.25,  0.5,    0.75, 0.9,
                                   0.95,  0.99, 0.995, 0.999, 0.9999, 1.0};

/* Records the values (all in one slice) and checks every quantile: the top of the oracle's
 * bucket, so never below it and less than 1/64 above it (exact below 64 us). */
static void check_stream(uint64_t *values, size_t n)
{
    tc_latency *e = NULL;
    assert_int_equal(tc_latency_new(&e), 0);
    for (size_t i = 0; i < n; i++)
        tc_latency_record(e, 5000, values[i]);
    assert_int_equal(tc_latency_count(e, 5000), n);
    for (size_t i = 0; i < n; i++)
        if (values[i] > TC_LATENCY_MAX_US)
            values[i] = TC_LATENCY_MAX_US;
    qsort(values, n, sizeof(*values), hfx_cmp_u64);
    for (size_t k = 0; k < sizeof(quantiles) / sizeof(quantiles[0]); k++) {
        uint64_t got = 0, want = oracle_quantile(values, n, quantiles[k]);
        assert_int_equal(tc_latency_quantile(e, 5000, quantiles[k], 0.0, &got),
                         TC_LATENCY_QUANTILE);
        if (got < want || (want < 64 ? got != want : (got - want) * 64 >= want))
            fail_msg("q=%g: got %llu, oracle %llu (n=%zu)", quantiles[k], (unsigned long long)got,
                     (unsigned long long)want, n);
    }
    tc_latency_free(e);
}

#define STREAM_N 200000

static void test_estimator_random_streams(void **state)
{
    tc__rng rng; /* seeded: every run draws the same streams */
    tc__rng_seed(&rng, 0x9e3779b97f4a7c15ULL);
    uint64_t *v = malloc(STREAM_N * sizeof(*v));
    assert_non_null(v);
    /* uniform over a wide range */
    for (size_t i = 0; i < STREAM_N; i++)
        v[i] = tc__rng_below(&rng, 10000000);
    check_stream(v, STREAM_N);
    /* log-uniform: every octave equally */
    for (size_t i = 0; i < STREAM_N; i++)
        v[i] = (uint64_t)exp((double)tc__rng_below(&rng, 1000000) / 1000000.0 * log(4e9));
    check_stream(v, STREAM_N);
    /* the benchmark's mix: 99% in 10-30 ms, 1% in 1-2 s */
    for (size_t i = 0; i < STREAM_N; i++)
        v[i] = tc__rng_below(&rng, 100) == 0 ? 1000000 + tc__rng_below(&rng, 1000001)
                                             : 10000 + tc__rng_below(&rng, 20001);
    check_stream(v, STREAM_N);
    /* small n */
    for (size_t n = 1; n < 50; n++) {
        for (size_t i = 0; i < n; i++)
            v[i] = tc__rng_below(&rng, 100000);
        check_stream(v, n);
    }
    free(v);
}

static void test_estimator_adversarial_streams(void **state)
{
    uint64_t *v = malloc(STREAM_N * sizeof(*v));
    assert_non_null(v);
    size_t n = 0;
    /* every bucket boundary: 2^k - 1, 2^k, 2^k + 1 and the sub-bucket edges of each octave */
    for (unsigned k = 0; k < 33; k++) {
        uint64_t p = UINT64_C(1) << k;
        v[n++] = p - 1;
        v[n++] = p;
        v[n++] = p + 1;
        for (unsigned s = 1; s < 64 && k >= 6; s++)
            v[n++] = p + (p / 64) * s - 1;
    }
    check_stream(v, n);
    /* one value repeated, zeros, the maximum and beyond it */
    for (size_t i = 0; i < 1000; i++)
        v[i] = 777777;
    check_stream(v, 1000);
    for (size_t i = 0; i < 1000; i++)
        v[i] = i % 2 ? 0 : UINT64_MAX;
    check_stream(v, 1000);
    /* ascending and descending, two far-apart modes with the quantile on the edge */
    for (size_t i = 0; i < STREAM_N; i++)
        v[i] = i * 20;
    check_stream(v, STREAM_N);
    for (size_t i = 0; i < STREAM_N; i++)
        v[i] = (STREAM_N - i) * 20;
    check_stream(v, STREAM_N);
    for (size_t i = 0; i < 1000; i++)
        v[i] = i < 990 ? 5 : 3000000000ULL;
    check_stream(v, 1000);
    free(v);
}

static void test_estimator_window(void **state)
{
    tc_latency *e = NULL;
    uint64_t got = 0;
    assert_int_equal(tc_latency_new(&e), 0);
    assert_int_equal(tc_latency_quantile(e, 0, 0.5, 0.0, &got), TC_EMISSING);
    assert_int_equal(tc_latency_quantile(e, 0, 0.0, 0.0, &got), TC_EINVAL);
    assert_int_equal(tc_latency_quantile(e, 0, 1.5, 0.0, &got), TC_EINVAL);
    assert_int_equal(tc_latency_quantile(e, 0, 0.5, -1.0, &got), TC_EINVAL);
    assert_int_equal(tc_latency_quantile(e, 0, 0.5, TC_LATENCY_MAX_Z * 1.01, &got), TC_EINVAL);
    assert_int_equal(tc_latency_quantile(e, 0, 0.5, NAN, &got), TC_EINVAL);
    assert_int_equal(tc_latency_quantile(e, 0, 0.5, 2.0, NULL), TC_EINVAL);
    /* 1,000 at 1 ms during second 0, then 1,000 at 100 ms during second 5 */
    for (int i = 0; i < 1000; i++)
        tc_latency_record(e, (uint64_t)i, 1000);
    for (int i = 0; i < 1000; i++)
        tc_latency_record(e, 5000 + (uint64_t)i, 100000);
    assert_int_equal(tc_latency_count(e, 6000), 2000);
    /* the decay: as of second 6, second 0 weighs exp(-6/4) = 0.22 and second 5 exp(-1/4) = 0.78
     * a record, so 1 ms is 22% of the weight: p20 is 1 ms, the median already 100 ms */
    assert_int_equal(tc_latency_quantile(e, 6000, 0.2, 0.0, &got), TC_LATENCY_QUANTILE);
    assert_in_range(got, 990, 1010);
    assert_int_equal(tc_latency_quantile(e, 6000, 0.5, 0.0, &got), TC_LATENCY_QUANTILE);
    assert_in_range(got, 99000, 101000);
    /* second 0 leaves the window at second 10; second 5 at second 15 */
    assert_int_equal(tc_latency_count(e, 9999), 2000);
    assert_int_equal(tc_latency_quantile(e, 9999, 0.05, 0.0, &got), TC_LATENCY_QUANTILE);
    assert_in_range(got, 990, 1010);
    assert_int_equal(tc_latency_count(e, 10000), 1000);
    assert_int_equal(tc_latency_quantile(e, 10000, 0.05, 0.0, &got), TC_LATENCY_QUANTILE);
    assert_in_range(got, 99000, 101000);
    /* an earlier time counts as the latest */
    tc_latency_record(e, 3, 50);
    assert_int_equal(tc_latency_count(e, 10000), 1001);
    assert_int_equal(tc_latency_count(e, 15000), 1); /* second 5 left; second 10 stays */
    assert_int_equal(tc_latency_count(e, 20000), 0);
    assert_int_equal(tc_latency_quantile(e, 20000, 0.5, 0.0, &got), TC_EMISSING);
    /* a long gap forgets everything at once */
    tc_latency_record(e, 20000, 10);
    assert_int_equal(tc_latency_count(e, 1000000), 0);
    tc_latency_free(e);
    tc_latency_free(NULL);
    assert_int_equal(tc_latency_new(NULL), TC_EINVAL);
}

static void test_estimator_record_cost(void **state)
{
    /* Reported, not asserted: the machine is shared. */
    tc_latency *e = NULL;
    assert_int_equal(tc_latency_new(&e), 0);
    enum { N = 5000000 };
    uint64_t t0 = uv_hrtime();
    for (uint64_t i = 0; i < N; i++)
        tc_latency_record(e, i / 1000, (i * 2654435761u) & 0xffffff);
    uint64_t t1 = uv_hrtime();
    print_message("tc_latency_record: %.1f ns per call\n", (double)(t1 - t0) / N);
    tc_latency_free(e);
}

/* ---- the budget --------------------------------------------------------------------------------
 */

static void test_budget_parse(void **state)
{
    static const struct {
        const char *text;
        uint64_t want; /* 0 = rejected */
    } cases[] = {
        {"2", 2000000},
        {"100", 100000000},
        {"0.5", 500000},
        {"1.25", 1250000},
        {"0.000001", 1},
        {"100.0", 100000000},
        {"0", 0},
        {"0.0", 0},
        {"-1", 0},
        {"101", 0},
        {"100.1", 0},
        {"abc", 0},
        {"1e-1", 0},
        {"", 0},
        {".5", 0},
        {"5.", 0},
        {"0.0000001", 0},
        {" 1", 0},
        {"1 ", 0},
        {"+1", 0},
        {"99999999999999999999", 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint64_t got = 0;
        int rc = tc_hedge_budget_parse(cases[i].text, &got);
        if (cases[i].want == 0) {
            if (rc != TC_EINVAL)
                fail_msg("'%s' accepted", cases[i].text);
        } else {
            assert_int_equal(rc, 0);
            assert_int_equal(got, cases[i].want);
        }
    }
    tc_hedge_budget *b = NULL;
    assert_int_equal(tc_hedge_budget_new(&b, 0), TC_EINVAL);
    assert_int_equal(tc_hedge_budget_new(&b, 100 * TC_HEDGE_BUDGET_SCALE + 1), TC_EINVAL);
    tc_hedge_budget_free(NULL);
}

/* A run's events, for the brute-force oracle: times of admitted requests and granted extras. */
typedef struct events {
    uint64_t *req, *ext;
    size_t nreq, next;
    size_t granted, denied;
} events;

static size_t count_in(const uint64_t *t, size_t n, uint64_t lo_excl, uint64_t hi_incl)
{
    size_t c = 0;
    for (size_t i = n; i > 0 && t[i - 1] > lo_excl; i--) /* times are non-decreasing */
        if (t[i - 1] <= hi_incl)
            c++;
    return c;
}

/* Asks for an extra at now and checks the answer against the rule, both ways. */
static void ask_extra(tc_hedge_budget *b, events *ev, uint64_t pct_e6, uint64_t now)
{
    uint64_t lo = now >= 1000 ? now - 1000 : 0;
    size_t r = count_in(ev->req, ev->nreq, now >= 1000 ? lo : 0, now);
    size_t x = count_in(ev->ext, ev->next, now >= 1000 ? lo : 0, now);
    if (now < 1000) { /* (now - 1 s, now] reaches before time 0: everything so far counts */
        r = ev->nreq;
        x = ev->next;
    }
    uint64_t allowed = pct_e6 * r / (100 * TC_HEDGE_BUDGET_SCALE) + 1;
    int want = x + 1 <= allowed;
    int got = tc_hedge_budget_try_extra(b, now);
    if (got != want)
        fail_msg("t=%llu R=%zu extras=%zu allowed=%llu: budget said %d", (unsigned long long)now, r,
                 x, (unsigned long long)allowed, got);
    if (got) {
        ev->ext[ev->next++] = now;
        ev->granted++;
    } else {
        ev->denied++;
    }
}

/* Runs `seconds` of traffic at `rate` requests/s (spread over each second), with a burst of
 * `burst` requests at once at second 2 and nothing after `stop_ms`; every request asks for
 * `extras` extras right away and one more 10 ms later. */
static void budget_run(uint64_t pct_e6, unsigned rate, unsigned seconds, unsigned burst,
                       uint64_t stop_ms, unsigned extras)
{
    size_t cap = (size_t)rate * seconds + burst + 16;
    events ev = {.req = malloc(cap * sizeof(uint64_t)),
                 .ext = malloc(cap * (extras + 1) * sizeof(uint64_t))};
    tc_hedge_budget *b = NULL;
    assert_non_null(ev.req);
    assert_non_null(ev.ext);
    assert_int_equal(tc_hedge_budget_new(&b, pct_e6), 0);
    /* pending "10 ms later" asks, in time order */
    uint64_t *later = malloc(cap * sizeof(uint64_t));
    assert_non_null(later);
    size_t nlater = 0, later_head = 0;
    uint64_t end = (uint64_t)seconds * 1000;
    size_t sent = 0;
    for (uint64_t now = 0; now <= end + 2000; now++) {
        while (later_head < nlater && later[later_head] <= now) {
            later_head++;
            ask_extra(b, &ev, pct_e6, now);
        }
        size_t due = now < end && now < stop_ms ? (size_t)((now + 1) * rate / 1000) : sent;
        if (now == 2000 && now < stop_ms)
            due += burst;
        for (; sent < due && sent < cap - 1; sent++) {
            tc_hedge_budget_admit(b, now);
            ev.req[ev.nreq++] = now;
            for (unsigned k = 0; k < extras; k++)
                ask_extra(b, &ev, pct_e6, now);
            later[nlater++] = now + 10;
        }
    }
    assert_int_equal(tc_hedge_budget_denied(b), ev.denied);
    /* Every 1 s window (a, a + 1000] ending at a granted extra obeys the rule (checked above);
     * and across the run the extras stay within PCT of the requests plus one per second. */
    double limit =
        (double)pct_e6 / (100.0 * TC_HEDGE_BUDGET_SCALE) * (double)ev.nreq + (double)(seconds + 3);
    if ((double)ev.granted > limit)
        fail_msg("granted %zu extras for %zu requests", ev.granted, ev.nreq);
    tc_hedge_budget_free(b);
    free(later);
    free(ev.req);
    free(ev.ext);
}

static void test_budget_rates(void **state)
{
    static const unsigned rates[] = {1, 20, 200, 2000};
    for (size_t i = 0; i < sizeof(rates) / sizeof(rates[0]); i++) {
        budget_run(2 * TC_HEDGE_BUDGET_SCALE, rates[i], 6, 0, UINT64_MAX, 1);
        budget_run(2 * TC_HEDGE_BUDGET_SCALE, rates[i], 6, 0, UINT64_MAX, 2);
        budget_run(TC_HEDGE_BUDGET_SCALE / 10, rates[i], 4, 0, UINT64_MAX, 1);
        budget_run(50 * TC_HEDGE_BUDGET_SCALE, rates[i], 4, 0, UINT64_MAX, 2);
    }
}

static void test_budget_bursts(void **state)
{
    static const unsigned rates[] = {1, 20, 200, 2000};
    for (size_t i = 0; i < sizeof(rates) / sizeof(rates[0]); i++) {
        budget_run(2 * TC_HEDGE_BUDGET_SCALE, rates[i], 6, 5000, UINT64_MAX, 2);
        /* traffic stops right after the burst: the extras asked 10 ms later are still judged
         * against the burst's requests, and after a second against none */
        budget_run(2 * TC_HEDGE_BUDGET_SCALE, rates[i], 6, 5000, 2001, 2);
    }
}

static void test_budget_small_rate_and_clock(void **state)
{
    tc_hedge_budget *b = NULL;
    assert_int_equal(tc_hedge_budget_new(&b, 2 * TC_HEDGE_BUDGET_SCALE), 0);
    /* one request a second: floor(0.02) + 1 = 1 extra per second, never two */
    tc_hedge_budget_admit(b, 10000);
    assert_int_equal(tc_hedge_budget_try_extra(b, 10000), 1);
    assert_int_equal(tc_hedge_budget_try_extra(b, 10500), 0);
    /* an earlier time counts as the latest: no way around the window */
    assert_int_equal(tc_hedge_budget_try_extra(b, 9000), 0);
    assert_int_equal(tc_hedge_budget_try_extra(b, 10999), 0);
    assert_int_equal(tc_hedge_budget_try_extra(b, 11000), 1); /* (10000, 11000]: the first left */
    assert_int_equal(tc_hedge_budget_denied(b), 3);
    /* 50 requests in the window: floor(2 x 50 / 100) + 1 = 2 */
    for (int i = 0; i < 50; i++)
        tc_hedge_budget_admit(b, 20000);
    assert_int_equal(tc_hedge_budget_try_extra(b, 20000), 1);
    assert_int_equal(tc_hedge_budget_try_extra(b, 20000), 1);
    assert_int_equal(tc_hedge_budget_try_extra(b, 20000), 0);
    tc_hedge_budget_free(b);
}

/* ---- the percentile delay
 * ------------------------------------------------------------------------ */

static void test_adaptive_warmup_and_window(void **state)
{
    tc_hedge_adaptive_config cfg;
    tc_hedge_adaptive *a = NULL;
    tc_hedge_adaptive_config_init(&cfg);
    assert_true(cfg.percentile == 99.0 && cfg.fallback_ms == 300 && cfg.warmup == 100 &&
                cfg.z == TC_HEDGE_Z);
    cfg.percentile = 50.0;
    cfg.fallback_ms = 250;
    cfg.max_ms = 1000;
    assert_int_equal(tc_hedge_adaptive_new(&a, &cfg), 0);
    /* 99 records: still warming up */
    for (int i = 0; i < 99; i++)
        tc_hedge_adaptive_record(a, 1000, 20000);
    assert_int_equal(tc_hedge_adaptive_delay_ms(a, 1000), 250);
    tc_hedge_adaptive_record(a, 1000, 20000);
    assert_int_equal(tc_hedge_adaptive_recorded(a), 100);
    /* the warm-up just ended: the top of 20,000 us's bucket (19,968-20,223 us), rounded up */
    assert_int_equal(tc_hedge_adaptive_delay_ms(a, 1001), 21);
    /* a new band is seen only at the next refresh, at least every TC_HEDGE_REFRESH_MS */
    for (int i = 0; i < 1000; i++)
        tc_hedge_adaptive_record(a, 1100, 40000);
    assert_int_equal(tc_hedge_adaptive_delay_ms(a, 1100), 21);
    /* 39,936-40,447 us */
    assert_int_equal(tc_hedge_adaptive_delay_ms(a, 1001 + TC_HEDGE_REFRESH_MS), 41);
    /* clamped to max_ms, and to 1 ms */
    for (int i = 0; i < 10000; i++)
        tc_hedge_adaptive_record(a, 2000, 5000000);
    assert_int_equal(tc_hedge_adaptive_delay_ms(a, 2000), 1000);
    /* an empty window: the fallback again */
    assert_int_equal(tc_hedge_adaptive_delay_ms(a, 20000), 250);
    for (int i = 0; i < 10; i++)
        tc_hedge_adaptive_record(a, 30000, 100);
    assert_int_equal(tc_hedge_adaptive_delay_ms(a, 30000), 1);
    tc_hedge_adaptive_free(a);

    /* the bound: 985 records at 1 ms and 15 at 100 ms put S(1 ms) at 0.015, above 1 - q for p99,
     * but within 2 standard errors of it (sqrt(0.015 x 0.985 / 1,000) = 0.0038): p99's lower
     * bound is 1 ms (1,000-1,007 us, rounded up: 2), the estimate itself (z = 0) 100 ms
     * (99,328-100,351 us: 101) */
    cfg.percentile = 99.0;
    for (int z = 2; z >= 0; z -= 2) {
        cfg.z = z;
        assert_int_equal(tc_hedge_adaptive_new(&a, &cfg), 0);
        for (int i = 0; i < 1000; i++)
            tc_hedge_adaptive_record(a, 1000, i < 985 ? 1000 : 100000);
        assert_int_equal(tc_hedge_adaptive_delay_ms(a, 1000), z == 2 ? 2 : 101);
        tc_hedge_adaptive_free(a);
    }

    cfg.z = -1.0;
    assert_int_equal(tc_hedge_adaptive_new(&a, &cfg), TC_EINVAL);
    cfg.z = NAN;
    assert_int_equal(tc_hedge_adaptive_new(&a, &cfg), TC_EINVAL);
    cfg.z = TC_HEDGE_Z;
    cfg.percentile = 49.9;
    assert_int_equal(tc_hedge_adaptive_new(&a, &cfg), TC_EINVAL);
    cfg.percentile = 100.0;
    assert_int_equal(tc_hedge_adaptive_new(&a, &cfg), TC_EINVAL);
    tc_hedge_adaptive_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_estimator_random_streams),
        cmocka_unit_test(test_estimator_adversarial_streams),
        cmocka_unit_test(test_estimator_window),
        cmocka_unit_test(test_estimator_record_cost),
        cmocka_unit_test(test_budget_parse),
        cmocka_unit_test(test_budget_rates),
        cmocka_unit_test(test_budget_bursts),
        cmocka_unit_test(test_budget_small_rate_and_clock),
        cmocka_unit_test(test_adaptive_warmup_and_window),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
