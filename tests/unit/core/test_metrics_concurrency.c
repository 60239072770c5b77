/*
 * Unit tests for src/metrics*.c: writers on their own shards racing a renderer, with exact totals
 * at the end.
 */
#include "metrics_fixture.h"

/* ---- concurrency -------------------------------------------------------------------------------
 */

#define WRITERS 4
#define ITERS 100000

typedef struct world {
    tc_metrics_registry *reg;
    uint32_t req, status, inflight, lat, s_ok;
    atomic_int done;
} world;

static const char *const statuses[] = {"200", "404", "502", "504", "500"};

static void *writer(void *arg)
{
    world *w = arg;
    tc_metrics_shard *s;
    /* Each writer makes its own shard, racing the renderer on the registry mutex. */
    if (tc_metrics_shard_new(w->reg, &s) != 0)
        abort();
    uint32_t ids[5];
    for (int k = 0; k < 5; k++)
        if (tc_metrics_series_lookup(s, w->status, (const char *[]){"smart", statuses[k]},
                                     &ids[k]) != 0)
            abort();
    for (int i = 0; i < ITERS; i++) {
        tc_metrics_counter_add(s, w->req, 0, 1);
        tc_metrics_gauge_add(s, w->inflight, 0, 1);
        /* Half of the time look the series up by values, as a worker would per response. */
        uint32_t id = ids[i % 5];
        if (i & 1) {
            if (tc_metrics_series_lookup(s, w->status, (const char *[]){"smart", statuses[i % 5]},
                                         &id) != 0)
                abort();
        }
        tc_metrics_counter_add(s, w->status, id, 1);
        tc_metrics_histogram_observe(s, w->lat, w->s_ok, (double)(i % 4));
        tc_metrics_gauge_add(s, w->inflight, 0, -1);
    }
    atomic_fetch_add(&w->done, 1);
    return NULL;
}

static void test_concurrent_writers_and_renderer(void **state)
{
    (void)state;
    world w;
    memset(&w, 0, sizeof w);
    const char *st_labels[] = {"endpoint", "status"};
    const char *lat_labels[] = {"result"};
    const double bounds[] = {0.5, 1.5, 2.5};
    assert_int_equal(tc_metrics_registry_new(&w.reg), 0);
    assert_int_equal(
        tc_metrics_family_define(
            w.reg,
            &(tc_metrics_family_def){.type = TC_METRIC_COUNTER, .name = "req_total", .help = "r"},
            &w.req),
        0);
    assert_int_equal(tc_metrics_family_define(w.reg,
                                              &(tc_metrics_family_def){.type = TC_METRIC_COUNTER,
                                                                       .name = "status_total",
                                                                       .help = "s",
                                                                       .label_names = st_labels,
                                                                       .n_labels = 2,
                                                                       .max_dynamic = 8},
                                              &w.status),
                     0);
    assert_int_equal(
        tc_metrics_family_define(
            w.reg,
            &(tc_metrics_family_def){.type = TC_METRIC_GAUGE, .name = "in_flight", .help = "f"},
            &w.inflight),
        0);
    assert_int_equal(tc_metrics_family_define(w.reg,
                                              &(tc_metrics_family_def){.type = TC_METRIC_HISTOGRAM,
                                                                       .name = "lat",
                                                                       .help = "l",
                                                                       .label_names = lat_labels,
                                                                       .n_labels = 1,
                                                                       .buckets = bounds,
                                                                       .n_buckets = 3},
                                              &w.lat),
                     0);
    assert_int_equal(tc_metrics_series_define(w.reg, w.lat, (const char *[]){"ok"}, &w.s_ok), 0);

    pthread_t t[WRITERS];
    for (int i = 0; i < WRITERS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, writer, &w), 0);

    /* Render while they write: every snapshot parses, counters never go down, histograms stay
     * internally consistent, in-flight stays within [0, WRITERS]. */
    double last_req = 0, last_200 = 0;
    int renders = 0;
    while (atomic_load(&w.done) < WRITERS && renders < 100000) {
        parsed p;
        char *text = mfx_render_parse(w.reg, &p);
        const sample *r = mfx_find(&p, "req_total", "");
        assert_non_null(r);
        assert_true(r->value >= last_req);
        last_req = r->value;
        const sample *s200 = mfx_find(&p, "status_total", "endpoint=\"smart\",status=\"200\"");
        if (s200) {
            assert_true(s200->value >= last_200);
            last_200 = s200->value;
        }
        double fl = mfx_get(&p, "in_flight", "");
        assert_true(fl >= 0 && fl <= WRITERS);
        mfx_check_histograms(&p);
        mfx_parsed_free(&p);
        free(text);
        renders++;
    }
    for (int i = 0; i < WRITERS; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);
    printf("# %d renders raced the writers\n", renders);

    /* Exact totals. */
    parsed p;
    char *text = mfx_render_parse(w.reg, &p);
    assert_true(mfx_get(&p, "req_total", "") == (double)WRITERS * ITERS);
    for (int k = 0; k < 5; k++) {
        char lab[64];
        snprintf(lab, sizeof lab, "endpoint=\"smart\",status=\"%s\"", statuses[k]);
        assert_true(mfx_get(&p, "status_total", lab) == (double)WRITERS * ITERS / 5);
    }
    assert_int_equal(p.n_families, 4);
    assert_true(mfx_find(&p, "status_total", "endpoint=\"_overflow\",status=\"_overflow\"") ==
                NULL);
    assert_true(mfx_get(&p, "in_flight", "") == 0);
    /* Observations cycle 0,1,2,3: one quarter in each bucket, sum 1.5 per observation. */
    double q = (double)WRITERS * ITERS / 4;
    assert_true(mfx_get(&p, "lat_bucket", "result=\"ok\",le=\"0.5\"") == q);
    assert_true(mfx_get(&p, "lat_bucket", "result=\"ok\",le=\"1.5\"") == 2 * q);
    assert_true(mfx_get(&p, "lat_bucket", "result=\"ok\",le=\"2.5\"") == 3 * q);
    assert_true(mfx_get(&p, "lat_bucket", "result=\"ok\",le=\"+Inf\"") == 4 * q);
    assert_true(mfx_get(&p, "lat_count", "result=\"ok\"") == 4 * q);
    assert_true(mfx_get(&p, "lat_sum", "result=\"ok\"") == 1.5 * 4 * q);
    mfx_parsed_free(&p);
    free(text);
    tc_metrics_registry_free(w.reg);
}

int main(void)
{
    alarm(240); /* watchdog: a hang fails the test instead of stalling the suite */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_concurrent_writers_and_renderer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
