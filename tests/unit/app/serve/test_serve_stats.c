/*
 * Unit tests for app/serve/cmd_serve_stats.c, the dashboard's history ring and snapshot: the
 * latency buckets and percentiles, seconds landing in their place of the 5-minute window, seconds
 * with no traffic, slot rollover, the window edge, summing over shards (also with writers racing a
 * reader, exact at the end), hedge results, and the JSON snapshot read back with jansson.
 */
#include <jansson.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "serve/cmd_serve_stats.h"

static const char *const names[] = {"smart", "first", "other"};
#define N_EP 3

static serve_stats *new_stats(unsigned nshards)
{
    serve_stats *st = NULL;
    assert_int_equal(serve_stats_new(&st, nshards, names, N_EP), 0);
    return st;
}

static serve_stats_second *collect(serve_stats *st, uint64_t end)
{
    serve_stats_second *h = calloc(SERVE_STATS_WINDOW, sizeof(*h));
    assert_non_null(h);
    serve_stats_collect(st, end, h);
    return h;
}

static uint64_t total_requests(const serve_stats_second *s)
{
    uint64_t n = 0;
    for (size_t e = 0; e < SERVE_STATS_MAX_ENDPOINTS; e++)
        for (size_t k = 0; k < SERVE_STATS_N_STATUS; k++)
            n += s->requests[e][k];
    return n;
}

static void test_bad_arguments(void **state)
{
    serve_stats *st = NULL;
    assert_int_equal(serve_stats_new(&st, 0, names, N_EP), TC_EINVAL);
    assert_int_equal(serve_stats_new(&st, 1, names, 0), TC_EINVAL);
    assert_int_equal(serve_stats_new(&st, 1, names, SERVE_STATS_MAX_ENDPOINTS + 1), TC_EINVAL);
    st = new_stats(2);
    assert_null(serve_stats_shard_at(st, 2));
    /* a NULL shard and an endpoint out of range are ignored, not a crash */
    serve_stats_request(NULL, 0, 0, 200, 5);
    serve_stats_request(serve_stats_shard_at(st, 0), 0, SERVE_STATS_MAX_ENDPOINTS, 200, 5);
    serve_stats_second *h = collect(st, 1);
    assert_int_equal(total_requests(&h[SERVE_STATS_WINDOW - 1]), 0);
    free(h);
    serve_stats_free(st);
    serve_stats_free(NULL);
}

static void test_latency_buckets(void **state)
{
    uint64_t prev_hi = 0;
    for (unsigned b = 0; b < SERVE_STATS_LAT_BUCKETS; b++) {
        uint64_t lo, hi;
        serve_stats_lat_bounds(b, &lo, &hi);
        assert_int_equal(lo, prev_hi); /* contiguous from 0, no gap, no overlap */
        assert_true(hi > lo);
        assert_int_equal(serve_stats_lat_bucket(lo), b);
        assert_int_equal(serve_stats_lat_bucket(hi - 1), b);
        if (b >= 16) /* 8 per octave: each bucket is 1/8 of its octave's start, at most */
            assert_true((hi - lo) * 8 <= lo);
        prev_hi = hi;
    }
    assert_int_equal(prev_hi, UINT64_C(1) << 32);
    assert_int_equal(serve_stats_lat_bucket(UINT64_C(1) << 32), SERVE_STATS_LAT_BUCKETS - 1);
    assert_int_equal(serve_stats_lat_bucket(UINT64_MAX - 1), SERVE_STATS_LAT_BUCKETS - 1);
}

static void test_percentiles(void **state)
{
    uint32_t hist[SERVE_STATS_LAT_BUCKETS];
    memset(hist, 0, sizeof(hist));
    assert_true(serve_stats_percentile_us(hist, 0.5) == SERVE_STATS_NO_VALUE);
    /* small values are exact */
    hist[serve_stats_lat_bucket(3)] = 1;
    assert_int_equal(serve_stats_percentile_us(hist, 0.5), 3);
    assert_int_equal(serve_stats_percentile_us(hist, 0.999), 3);
    /* 1..1000 ms, one each: nearest rank within 1/16 of the true value */
    memset(hist, 0, sizeof(hist));
    for (uint64_t ms = 1; ms <= 1000; ms++)
        hist[serve_stats_lat_bucket(ms * 1000)]++;
    const double q[] = {0.5, 0.9, 0.99, 0.999, 1.0};
    const double want[] = {500e3, 900e3, 990e3, 999e3, 1000e3};
    for (size_t i = 0; i < sizeof(q) / sizeof(q[0]); i++) {
        double got = (double)serve_stats_percentile_us(hist, q[i]);
        assert_true(got >= want[i] * (1 - 1.0 / 16) && got <= want[i] * (1 + 1.0 / 16));
    }
    /* 999 fast, 1 slow: p99.9 is still fast, the max is slow (nearest rank, not interpolated) */
    memset(hist, 0, sizeof(hist));
    hist[serve_stats_lat_bucket(20000)] = 999;
    hist[serve_stats_lat_bucket(5000000)] = 1;
    assert_true(serve_stats_percentile_us(hist, 0.999) < 22000);
    assert_true(serve_stats_percentile_us(hist, 1.0) > 4700000);
}

static void test_seconds_in_place(void **state)
{
    serve_stats *st = new_stats(1);
    serve_stats_shard *sh = serve_stats_shard_at(st, 0);
    /* seconds 10, 12 (twice) and 15; 11, 13 and 14 have no traffic */
    serve_stats_request(sh, 10, 0, 200, 1000);
    serve_stats_request(sh, 12, 0, 200, 2000);
    serve_stats_request(sh, 12, 1, 502, 3000);
    serve_stats_request(sh, 15, 2, 404, SERVE_STATS_NO_VALUE);
    serve_stats_request(sh, 16, 0, 200, 1000); /* the current second: not in the window yet */
    serve_stats_second *h = collect(st, 16);
    const serve_stats_second *s10 = &h[SERVE_STATS_WINDOW - 6];
    assert_int_equal(s10->requests[0][0], 1);
    assert_int_equal(total_requests(&h[SERVE_STATS_WINDOW - 5]), 0);
    const serve_stats_second *s12 = &h[SERVE_STATS_WINDOW - 4];
    assert_int_equal(s12->requests[0][0], 1);
    assert_int_equal(s12->requests[1][11], 1); /* 502 is status column 11 */
    assert_int_equal(serve_stats_status_codes[11], 502);
    assert_int_equal(total_requests(&h[SERVE_STATS_WINDOW - 3]), 0);
    assert_int_equal(total_requests(&h[SERVE_STATS_WINDOW - 2]), 0);
    const serve_stats_second *s15 = &h[SERVE_STATS_WINDOW - 1];
    assert_int_equal(s15->requests[2][2], 1); /* 404 */
    assert_true(serve_stats_percentile_us(s15->latency, 0.5) == SERVE_STATS_NO_VALUE);
    uint64_t max12 = serve_stats_percentile_us(s12->latency, 1.0);
    assert_true(max12 >= 3000 - 3000 / 16 && max12 <= 3000 + 3000 / 16);
    uint64_t all = 0;
    for (unsigned i = 0; i < SERVE_STATS_WINDOW; i++)
        all += total_requests(&h[i]);
    assert_int_equal(all, 4);
    free(h);
    serve_stats_free(st);
}

static void test_unknown_status_is_other(void **state)
{
    serve_stats *st = new_stats(1);
    serve_stats_request(serve_stats_shard_at(st, 0), 3, 0, 418, SERVE_STATS_NO_VALUE);
    serve_stats_second *h = collect(st, 4);
    assert_int_equal(h[SERVE_STATS_WINDOW - 1].requests[0][SERVE_STATS_N_STATUS - 1], 1);
    assert_int_equal(serve_stats_status_codes[SERVE_STATS_N_STATUS - 1], 0);
    free(h);
    serve_stats_free(st);
}

static void test_window_edge(void **state)
{
    serve_stats *st = new_stats(1);
    serve_stats_shard *sh = serve_stats_shard_at(st, 0);
    for (uint64_t sec = 0; sec < 1000; sec++)
        serve_stats_request(sh, sec, 0, 200, SERVE_STATS_NO_VALUE);
    /* only [1000 - 300, 1000) is shown, one request a second */
    serve_stats_second *h = collect(st, 1000);
    for (unsigned i = 0; i < SERVE_STATS_WINDOW; i++)
        assert_int_equal(h[i].requests[0][0], 1);
    free(h);
    /* a window ending later shows the seconds after the last request as empty */
    h = collect(st, 1100);
    for (unsigned i = 0; i < SERVE_STATS_WINDOW; i++)
        assert_int_equal(h[i].requests[0][0], i < SERVE_STATS_WINDOW - 100 ? 1 : 0);
    free(h);
    /* and a window past all of them is empty, though the slots still hold old seconds */
    h = collect(st, 1000 + SERVE_STATS_WINDOW);
    for (unsigned i = 0; i < SERVE_STATS_WINDOW; i++)
        assert_int_equal(total_requests(&h[i]), 0);
    free(h);
    /* early in the process: seconds before 0 are empty */
    serve_stats *young = new_stats(1);
    serve_stats_request(serve_stats_shard_at(young, 0), 0, 0, 200, 7);
    h = collect(young, 2);
    assert_int_equal(h[SERVE_STATS_WINDOW - 2].requests[0][0], 1);
    assert_int_equal(total_requests(&h[SERVE_STATS_WINDOW - 1]), 0);
    free(h);
    serve_stats_free(young);
    serve_stats_free(st);
}

static void test_rollover(void **state)
{
    serve_stats *st = new_stats(1);
    serve_stats_shard *sh = serve_stats_shard_at(st, 0);
    for (int i = 0; i < 5; i++)
        serve_stats_request(sh, 7, 0, 200, 1000);
    serve_stats_hedge(sh, 7, &(tc_hedge_result){.nattempts = 0, .hedge_fired = 1, .winner = -1});
    /* the same slot, one lap later: the old second's counts are gone, not added to */
    uint64_t later = 7 + SERVE_STATS_SLOTS;
    serve_stats_request(sh, later, 1, 504, 9000);
    serve_stats_second *h = collect(st, later + 1);
    const serve_stats_second *s = &h[SERVE_STATS_WINDOW - 1];
    assert_int_equal(s->requests[0][0], 0);
    assert_int_equal(s->requests[1][13], 1); /* 504 */
    assert_int_equal(s->hedges_fired, 0);
    assert_int_equal(total_requests(s), 1);
    uint32_t n = 0;
    for (size_t b = 0; b < SERVE_STATS_LAT_BUCKETS; b++)
        n += s->latency[b];
    assert_int_equal(n, 1);
    free(h);
    /* a window that still covers second 7 finds the slot reused: no traffic left for it */
    h = collect(st, 8);
    assert_int_equal(total_requests(&h[SERVE_STATS_WINDOW - 1]), 0);
    free(h);
    serve_stats_free(st);
}

/* Settled seconds (two behind the process's clock) are summed once and then served from the
 * cache; the seconds still open are summed afresh on every snapshot. */
static void test_settled_seconds_are_cached(void **state)
{
    (void)state;
    serve_stats *st = new_stats(2);
    serve_stats_shard *a = serve_stats_shard_at(st, 0), *b = serve_stats_shard_at(st, 1);
    serve_stats_request(a, 0, 0, 200, 1000);
    serve_stats_request(b, 0, 0, 200, 1000);
    serve_stats_request(a, 1, 1, 502, 2000);
    while (serve_stats_now_sec(st) < 3) /* the real clock: at most ~3 s */
        usleep(20 * 1000);
    serve_stats_second *h = collect(st, 2); /* seconds 0 and 1 are settled now */
    assert_int_equal(total_requests(&h[SERVE_STATS_WINDOW - 2]), 2);
    assert_int_equal(total_requests(&h[SERVE_STATS_WINDOW - 1]), 1);
    free(h);
    /* a write into second 0 now (no writer does this: it would have to stall for a second) does
     * not show: second 0 comes from the cache; the same sums as the first time */
    serve_stats_request(a, 0, 0, 200, 1000);
    h = collect(st, 2);
    assert_int_equal(total_requests(&h[SERVE_STATS_WINDOW - 2]), 2);
    assert_int_equal(h[SERVE_STATS_WINDOW - 2].requests[0][0], 2);
    assert_int_equal(h[SERVE_STATS_WINDOW - 1].requests[1][11], 1); /* 502 */
    free(h);
    /* one lap later the cached entries hold other seconds: nothing of them is shown */
    h = collect(st, 2 + SERVE_STATS_SLOTS);
    for (unsigned i = 0; i < SERVE_STATS_WINDOW; i++)
        assert_int_equal(total_requests(&h[i]), 0);
    free(h);
    serve_stats_free(st);
}

static void test_hedges(void **state)
{
    serve_stats *st = new_stats(2);
    tc_hedge_result r;
    memset(&r, 0, sizeof(r));
    r.nattempts = 3;
    r.hedge_fired = 1;
    r.denied = 1;
    r.winner = 2;
    r.attempts[0].outcome = TC_OUTCOME_CANCELLED;
    r.attempts[1].outcome = TC_OUTCOME_HTTP_STATUS;
    r.attempts[1].hedged = 1;
    r.attempts[2].outcome = TC_OUTCOME_SUCCESS;
    r.attempts[2].hedged = 1;
    serve_stats_hedge(serve_stats_shard_at(st, 0), 20, &r);
    r.winner = 0;
    r.attempts[0].outcome = TC_OUTCOME_SUCCESS;
    serve_stats_hedge(serve_stats_shard_at(st, 1), 20, &r);
    serve_stats_second *h = collect(st, 21);
    const serve_stats_second *s = &h[SERVE_STATS_WINDOW - 1];
    assert_int_equal(s->attempts[TC_OUTCOME_SUCCESS], 3);
    assert_int_equal(s->attempts[TC_OUTCOME_CANCELLED], 1);
    assert_int_equal(s->attempts[TC_OUTCOME_HTTP_STATUS], 2);
    assert_int_equal(s->hedges_fired, 2);
    assert_int_equal(s->hedge_wins, 1); /* only the first was won by a hedged attempt */
    assert_int_equal(s->hedges_denied, 2);
    assert_int_equal(s->extra_attempts, 4);
    free(h);
    serve_stats_free(st);
}

/* ---- summing over shards, with writers racing a reader ---- */

#define RACE_SHARDS 3
#define RACE_SECONDS 400 /* more than one lap of the ring */
#define RACE_PER_SECOND 50

typedef struct race {
    serve_stats *st;
    unsigned shard;
    atomic_int *done;
} race;

static void *race_writer(void *arg)
{
    race *r = arg;
    serve_stats_shard *sh = serve_stats_shard_at(r->st, r->shard);
    for (uint64_t sec = 0; sec < RACE_SECONDS; sec++)
        for (unsigned i = 0; i < RACE_PER_SECOND; i++)
            serve_stats_request(sh, sec, r->shard % N_EP, 200, 1000 + r->shard);
    atomic_fetch_add(r->done, 1);
    return NULL;
}

static void test_sum_over_shards_racing(void **state)
{
    serve_stats *st = new_stats(RACE_SHARDS);
    atomic_int done;
    atomic_init(&done, 0);
    pthread_t th[RACE_SHARDS];
    race args[RACE_SHARDS];
    for (unsigned i = 0; i < RACE_SHARDS; i++) {
        args[i] = (race){st, i, &done};
        assert_int_equal(pthread_create(&th[i], NULL, race_writer, &args[i]), 0);
    }
    /* while they write: no second ever shows more than every shard's full count */
    serve_stats_second *h = calloc(SERVE_STATS_WINDOW, sizeof(*h));
    assert_non_null(h);
    while (atomic_load(&done) < RACE_SHARDS) {
        serve_stats_collect(st, RACE_SECONDS, h);
        for (unsigned i = 0; i < SERVE_STATS_WINDOW; i++)
            assert_true(total_requests(&h[i]) <= RACE_SHARDS * RACE_PER_SECOND);
    }
    for (unsigned i = 0; i < RACE_SHARDS; i++)
        pthread_join(th[i], NULL);
    /* afterwards: exact, each second the sum of all shards, by endpoint */
    serve_stats_collect(st, RACE_SECONDS, h);
    for (unsigned i = 0; i < SERVE_STATS_WINDOW; i++) {
        assert_int_equal(total_requests(&h[i]), RACE_SHARDS * RACE_PER_SECOND);
        for (unsigned e = 0; e < N_EP; e++)
            assert_int_equal(h[i].requests[e][0], RACE_PER_SECOND);
        uint32_t n = 0;
        for (size_t b = 0; b < SERVE_STATS_LAT_BUCKETS; b++)
            n += h[i].latency[b];
        assert_int_equal(n, RACE_SHARDS * RACE_PER_SECOND);
    }
    free(h);
    serve_stats_free(st);
}

/* ---- the JSON ---- */

static json_t *snapshot(serve_stats *st, uint64_t end, const serve_stats_now *now)
{
    char *text = NULL;
    size_t len = 0;
    assert_int_equal(serve_stats_json(st, end, now, &text, &len), 0);
    assert_int_equal(strlen(text), len);
    json_error_t err;
    json_t *j = json_loadb(text, len, 0, &err);
    if (j == NULL)
        fail_msg("invalid JSON: %s", err.text);
    free(text);
    return j;
}

static json_int_t jint(json_t *root, const char *a, const char *b, const char *c)
{
    json_t *v = json_object_get(root, a);
    if (b != NULL)
        v = json_object_get(v, b);
    if (c != NULL)
        v = json_object_get(v, c);
    assert_true(json_is_integer(v));
    return json_integer_value(v);
}

static void test_json(void **state)
{
    serve_stats *st = new_stats(2);
    serve_stats_shard *a = serve_stats_shard_at(st, 0), *b = serve_stats_shard_at(st, 1);
    /* second 100: 4 smart 200 (2 per shard) at 10 ms; 1 first 502 at 50 ms; second 102: 1 other
     * 404 without latency */
    for (int i = 0; i < 2; i++) {
        serve_stats_request(a, 100, 0, 200, 10000);
        serve_stats_request(b, 100, 0, 200, 10000);
    }
    serve_stats_request(b, 100, 1, 502, 50000);
    serve_stats_request(a, 102, 2, 404, SERVE_STATS_NO_VALUE);
    tc_hedge_result r;
    memset(&r, 0, sizeof(r));
    r.nattempts = 2;
    r.hedge_fired = 1;
    r.winner = 1;
    r.attempts[0].outcome = TC_OUTCOME_CANCELLED;
    r.attempts[1].outcome = TC_OUTCOME_SUCCESS;
    r.attempts[1].hedged = 1;
    serve_stats_hedge(a, 100, &r);
    serve_stats_in_flight(a, 3);
    serve_stats_in_flight(b, 2);
    serve_stats_in_flight(a, -1);
    serve_stats_pool(a, 5, 1);
    serve_stats_pool(b, 7, 2);
    serve_stats_now now = {.time_ms = 1234567,
                           .hedge_delay_ms = 300,
                           .hedge_percentile_tenths = 995,
                           .hedge_budget_e6 = 12500000,
                           .connections = 9,
                           .pool_max = 2048,
                           .workers = 2};

    json_t *j = snapshot(st, 101, &now);
    json_t *j2 = snapshot(st, 103, &now);
    assert_int_equal(jint(j, "seq", NULL, NULL) + 1, jint(j2, "seq", NULL, NULL));
    assert_int_equal(jint(j, "version", NULL, NULL), 1);
    assert_int_equal(jint(j, "time_ms", NULL, NULL), 1234567);
    assert_int_equal(jint(j, "window_s", NULL, NULL), SERVE_STATS_WINDOW);
    assert_int_equal(jint(j, "uptime_s", NULL, NULL), 101);
    assert_int_equal(jint(j, "workers", NULL, NULL), 2);
    assert_int_equal(jint(j, "now", "in_flight", NULL), 4);
    assert_int_equal(jint(j, "now", "connections", NULL), 9);
    assert_int_equal(jint(j, "now", "hedge_delay_ms", NULL), 300);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(j, "now"), "hedge_delay_mode")), "p99.5");
    json_t *budget = json_object_get(json_object_get(j, "now"), "budget");
    assert_true(json_real_value(json_object_get(budget, "percent")) == 12.5);
    /* the last complete second (100): 4 smart requests, 1 extra; floor(12.5 x 4 / 100) + 1 */
    assert_int_equal(jint(budget, "smart_requests", NULL, NULL), 4);
    assert_int_equal(jint(budget, "extra_attempts", NULL, NULL), 1);
    assert_int_equal(jint(budget, "allowed", NULL, NULL), 1);
    json_t *pool = json_object_get(json_object_get(j, "now"), "pool");
    assert_int_equal(jint(pool, "open", NULL, NULL), 12);
    assert_int_equal(jint(pool, "busy", NULL, NULL), 3);
    assert_int_equal(jint(pool, "max", NULL, NULL), 2048);

    /* window: only the pairs with traffic, in endpoint then status order */
    json_t *w = json_object_get(j, "window");
    assert_int_equal(jint(w, "requests_total", NULL, NULL), 5);
    json_t *reqs = json_object_get(w, "requests");
    assert_int_equal(json_array_size(reqs), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(reqs, 0), "endpoint")),
                        "smart");
    assert_int_equal(jint(json_array_get(reqs, 0), "status", NULL, NULL), 200);
    assert_int_equal(jint(json_array_get(reqs, 0), "count", NULL, NULL), 4);
    assert_int_equal(jint(json_array_get(reqs, 1), "status", NULL, NULL), 502);
    assert_int_equal(jint(w, "attempts", "success", NULL), 1);
    assert_int_equal(jint(w, "attempts", "cancelled", NULL), 1);
    assert_int_equal(jint(w, "attempts", "timeout", NULL), 0);
    assert_null(json_object_get(json_object_get(w, "attempts"), "pending"));
    assert_int_equal(jint(w, "hedges", "fired", NULL), 1);
    assert_int_equal(jint(w, "hedges", "won", NULL), 1);
    assert_int_equal(jint(w, "hedges", "denied", NULL), 0);
    assert_int_equal(jint(w, "latency_ms", "count", NULL), 5);
    json_t *lat = json_object_get(w, "latency_ms");
    double p50 = json_real_value(json_object_get(lat, "p50"));
    double p999 = json_real_value(json_object_get(lat, "p999"));
    assert_true(p50 > 9.3 && p50 < 10.7);
    assert_true(p999 > 46.8 && p999 < 53.2);

    /* history: 300 values a series, oldest first, second 100 last; empty seconds are null */
    json_t *hist = json_object_get(j, "history");
    json_t *ps =
        json_object_get(json_array_get(json_object_get(hist, "requests"), 0), "per_second");
    assert_int_equal(json_array_size(ps), SERVE_STATS_WINDOW);
    assert_int_equal(json_integer_value(json_array_get(ps, SERVE_STATS_WINDOW - 1)), 4);
    assert_int_equal(json_integer_value(json_array_get(ps, SERVE_STATS_WINDOW - 2)), 0);
    json_t *hp99 = json_object_get(json_object_get(hist, "latency_ms"), "p99");
    assert_int_equal(json_array_size(hp99), SERVE_STATS_WINDOW);
    assert_true(json_is_null(json_array_get(hp99, SERVE_STATS_WINDOW - 2)));
    double last99 = json_real_value(json_array_get(hp99, SERVE_STATS_WINDOW - 1));
    assert_true(last99 > 46.8 && last99 < 53.2);
    json_t *fired = json_object_get(json_object_get(hist, "hedges"), "fired");
    assert_int_equal(json_integer_value(json_array_get(fired, SERVE_STATS_WINDOW - 1)), 1);

    /* two seconds later: the 404 of second 102 is in, its status column is 404 */
    w = json_object_get(j2, "window");
    assert_int_equal(jint(w, "requests_total", NULL, NULL), 6);
    reqs = json_object_get(w, "requests");
    assert_int_equal(json_array_size(reqs), 3);
    assert_string_equal(json_string_value(json_object_get(json_array_get(reqs, 2), "endpoint")),
                        "other");
    assert_int_equal(jint(w, "latency_ms", "count", NULL), 5);
    /* the last second (102) had no smart request: allowed is the + 1 */
    budget = json_object_get(json_object_get(j2, "now"), "budget");
    assert_int_equal(jint(budget, "allowed", NULL, NULL), 1);
    assert_int_equal(jint(budget, "smart_requests", NULL, NULL), 0);
    json_decref(j);
    json_decref(j2);

    /* fixed delay, no budget, nothing recorded: nulls and empty lists, never absent fields */
    serve_stats *empty = new_stats(1);
    now.hedge_percentile_tenths = 0;
    now.hedge_budget_e6 = 0;
    j = snapshot(empty, 0, &now);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(j, "now"), "hedge_delay_mode")), "fixed");
    assert_true(json_is_null(json_object_get(json_object_get(j, "now"), "budget")));
    w = json_object_get(j, "window");
    assert_int_equal(json_array_size(json_object_get(w, "requests")), 0);
    assert_true(json_is_null(json_object_get(json_object_get(w, "latency_ms"), "p50")));
    json_decref(j);
    serve_stats_free(empty);
    serve_stats_free(st);
}

/* A route of "routes" (with --config): its strings escaped, its counts, its budget of the last
 * second (floor(PCT x R / 100) + 1 allowed), and its replicas' members as given. */
static void test_route_json(void **state)
{
    (void)state;
    static const char replicas[] = ",\"replicas\":[],\"replica_sets\":{}";
    serve_stats_route r = {"b\"ee",
                           "/b/",
                           "api",
                           250,
                           995,
                           (uint64_t)25 * TC_HEDGE_BUDGET_SCALE,
                           {10, 3, 1, 2, 4},
                           {100, 30, 10, 20, 40},
                           4096,
                           replicas,
                           sizeof(replicas) - 1};
    tc__buf b;
    tc__buf_init(&b, NULL, 0, 4096);
    assert_int_equal(serve_stats_route_json(&b, &r), 0);
    json_error_t err;
    json_t *j = json_loadb(b.data, b.len, 0, &err);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "name")), "b\"ee");
    assert_string_equal(json_string_value(json_object_get(j, "prefix")), "/b/");
    assert_string_equal(json_string_value(json_object_get(j, "kind")), "api");
    assert_int_equal(json_integer_value(json_object_get(j, "hedge_delay_ms")), 250);
    assert_string_equal(json_string_value(json_object_get(j, "hedge_delay_mode")), "p99.5");
    json_t *h = json_object_get(j, "hedges"), *t = json_object_get(j, "hedges_total");
    assert_int_equal(json_integer_value(json_object_get(h, "fired")), 3);
    assert_int_equal(json_integer_value(json_object_get(h, "won")), 1);
    assert_int_equal(json_integer_value(json_object_get(h, "denied")), 2);
    assert_int_equal(json_integer_value(json_object_get(h, "extra_attempts")), 4);
    assert_int_equal(json_integer_value(json_object_get(t, "fired")), 30);
    assert_int_equal(json_integer_value(json_object_get(t, "extra_attempts")), 40);
    json_t *bu = json_object_get(j, "budget");
    assert_int_equal(json_integer_value(json_object_get(bu, "percent")), 25);
    assert_int_equal(json_integer_value(json_object_get(bu, "smart_requests")), 10);
    assert_int_equal(json_integer_value(json_object_get(bu, "allowed")), 25 * 10 / 100 + 1);
    assert_int_equal(json_integer_value(json_object_get(bu, "denied")), 2);
    assert_int_equal(json_integer_value(json_object_get(j, "pool_max")), 4096);
    assert_true(json_is_array(json_object_get(j, "replicas")));
    json_decref(j);
    /* no budget: null */
    r.hedge_budget_e6 = 0;
    r.hedge_percentile_tenths = 0;
    b.len = 0;
    assert_int_equal(serve_stats_route_json(&b, &r), 0);
    j = json_loadb(b.data, b.len, 0, &err);
    assert_non_null(j);
    assert_true(json_is_null(json_object_get(j, "budget")));
    assert_string_equal(json_string_value(json_object_get(j, "hedge_delay_mode")), "fixed");
    json_decref(j);
    tc__buf_reset(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_latency_buckets),
        cmocka_unit_test(test_percentiles),
        cmocka_unit_test(test_seconds_in_place),
        cmocka_unit_test(test_unknown_status_is_other),
        cmocka_unit_test(test_window_edge),
        cmocka_unit_test(test_rollover),
        cmocka_unit_test(test_settled_seconds_are_cached),
        cmocka_unit_test(test_hedges),
        cmocka_unit_test(test_sum_over_shards_racing),
        cmocka_unit_test(test_json),
        cmocka_unit_test(test_route_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
