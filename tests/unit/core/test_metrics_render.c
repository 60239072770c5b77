/*
 * Unit tests for src/metrics*.c: exact exposition text, read back by the strict parser of
 * metrics_fixture.h, render limits, label escaping and histogram bucket edges.
 */
#include "metrics_fixture.h"

/* ---- exact rendering --------------------------------------------------------------------------
 */

static void test_render_exact(void **state)
{
    (void)state;
    tc_metrics_registry *reg;
    assert_int_equal(tc_metrics_registry_new(&reg), 0);
    uint32_t req, resp, inflight, lat, s_smart, s_first, s_hsmart;
    const char *resp_labels[] = {"endpoint", "code"};
    const char *lat_labels[] = {"endpoint"};
    const double bounds[] = {0.25, 0.5, 1};
    assert_int_equal(tc_metrics_family_define(reg,
                                              &(tc_metrics_family_def){
                                                  .type = TC_METRIC_COUNTER,
                                                  .name = "tc_requests_total",
                                                  .help = "Requests served.",
                                              },
                                              &req),
                     0);
    assert_int_equal(tc_metrics_family_define(reg,
                                              &(tc_metrics_family_def){
                                                  .type = TC_METRIC_COUNTER,
                                                  .name = "tc_responses_total",
                                                  .help = "Responses by endpoint and code.",
                                                  .label_names = resp_labels,
                                                  .n_labels = 2,
                                              },
                                              &resp),
                     0);
    assert_int_equal(tc_metrics_family_define(reg,
                                              &(tc_metrics_family_def){
                                                  .type = TC_METRIC_GAUGE,
                                                  .name = "tc_in_flight",
                                                  .help = "Requests in flight.",
                                              },
                                              &inflight),
                     0);
    assert_int_equal(tc_metrics_family_define(reg,
                                              &(tc_metrics_family_def){
                                                  .type = TC_METRIC_HISTOGRAM,
                                                  .name = "tc_latency_seconds",
                                                  .help = "Latency.",
                                                  .label_names = lat_labels,
                                                  .n_labels = 1,
                                                  .buckets = bounds,
                                                  .n_buckets = 3,
                                              },
                                              &lat),
                     0);
    assert_int_equal(req, 0);
    assert_int_equal(lat, 3);
    assert_int_equal(
        tc_metrics_series_define(reg, resp, (const char *[]){"smart", "200"}, &s_smart), 0);
    assert_int_equal(
        tc_metrics_series_define(reg, resp, (const char *[]){"first", "200"}, &s_first), 0);
    assert_int_equal(tc_metrics_series_define(reg, lat, (const char *[]){"smart"}, &s_hsmart), 0);
    assert_int_equal(s_smart, 0);
    assert_int_equal(s_first, 1);

    tc_metrics_shard *a, *b;
    assert_int_equal(tc_metrics_shard_new(reg, &a), 0);
    assert_int_equal(tc_metrics_shard_new(reg, &b), 0);
    tc_metrics_counter_add(a, req, TC_METRICS_SERIES_DEFAULT, 3);
    tc_metrics_counter_add(b, req, TC_METRICS_SERIES_DEFAULT, 4);
    tc_metrics_counter_add(a, resp, s_smart, 2);
    tc_metrics_counter_add(b, resp, s_smart, 3);
    tc_metrics_gauge_add(a, inflight, 0, 5);
    tc_metrics_gauge_add(b, inflight, 0, -2);
    tc_metrics_histogram_observe(a, lat, s_hsmart, 0.25);
    tc_metrics_histogram_observe(a, lat, s_hsmart, 0.5);
    tc_metrics_histogram_observe(b, lat, s_hsmart, 0.125);
    tc_metrics_histogram_observe(b, lat, s_hsmart, 4);

    const char *want = "# HELP tc_requests_total Requests served.\n"
                       "# TYPE tc_requests_total counter\n"
                       "tc_requests_total 7\n"
                       "# HELP tc_responses_total Responses by endpoint and code.\n"
                       "# TYPE tc_responses_total counter\n"
                       "tc_responses_total{endpoint=\"smart\",code=\"200\"} 5\n"
                       "tc_responses_total{endpoint=\"first\",code=\"200\"} 0\n"
                       "# HELP tc_in_flight Requests in flight.\n"
                       "# TYPE tc_in_flight gauge\n"
                       "tc_in_flight 3\n"
                       "# HELP tc_latency_seconds Latency.\n"
                       "# TYPE tc_latency_seconds histogram\n"
                       "tc_latency_seconds_bucket{endpoint=\"smart\",le=\"0.25\"} 2\n"
                       "tc_latency_seconds_bucket{endpoint=\"smart\",le=\"0.5\"} 3\n"
                       "tc_latency_seconds_bucket{endpoint=\"smart\",le=\"1\"} 3\n"
                       "tc_latency_seconds_bucket{endpoint=\"smart\",le=\"+Inf\"} 4\n"
                       "tc_latency_seconds_sum{endpoint=\"smart\"} 4.875\n"
                       "tc_latency_seconds_count{endpoint=\"smart\"} 4\n";
    char *text;
    size_t len;
    assert_int_equal(tc_metrics_render(reg, RENDER_MAX, &text, &len), 0);
    assert_string_equal(text, want);
    assert_int_equal(len, strlen(want));
    free(text);

    /* The same through the reader. */
    parsed p;
    text = mfx_render_parse(reg, &p);
    assert_int_equal(p.n_families, 4);
    assert_string_equal(p.types[3], "histogram");
    assert_true(mfx_get(&p, "tc_requests_total", "") == 7);
    assert_true(mfx_get(&p, "tc_latency_seconds_sum", "endpoint=\"smart\"") == 4.875);
    mfx_check_histograms(&p);
    mfx_parsed_free(&p);
    free(text);

    /* gauge_set sets one shard's part; the rendered value is the sum. */
    tc_metrics_gauge_set(a, inflight, 0, 10);
    tc_metrics_gauge_set(b, inflight, 0, -15);
    text = mfx_render_parse(reg, &p);
    assert_true(mfx_get(&p, "tc_in_flight", "") == -5);
    mfx_parsed_free(&p);
    free(text);
    tc_metrics_registry_free(reg);
}

static void test_render_empty_and_without_shards(void **state)
{
    (void)state;
    tc_metrics_registry *reg;
    char *text = (char *)0x1;
    size_t len = 99;
    assert_int_equal(tc_metrics_registry_new(&reg), 0);
    assert_int_equal(tc_metrics_render(reg, RENDER_MAX, &text, &len), 0);
    assert_int_equal(len, 0);
    assert_string_equal(text, "");
    free(text);

    uint32_t h;
    const double b[] = {1};
    assert_int_equal(tc_metrics_family_define(reg,
                                              &(tc_metrics_family_def){
                                                  .type = TC_METRIC_HISTOGRAM,
                                                  .name = "h",
                                                  .help = "",
                                                  .buckets = b,
                                                  .n_buckets = 1,
                                              },
                                              &h),
                     0);
    assert_int_equal(tc_metrics_render(reg, RENDER_MAX, &text, &len), 0);
    assert_string_equal(text, "# HELP h \n# TYPE h histogram\nh_bucket{le=\"1\"} 0\n"
                              "h_bucket{le=\"+Inf\"} 0\nh_sum 0\nh_count 0\n");
    free(text);
    tc_metrics_registry_free(reg);
    tc_metrics_registry_free(NULL);
}

static void test_render_limit(void **state)
{
    (void)state;
    tc_metrics_registry *reg;
    uint32_t c;
    assert_int_equal(tc_metrics_registry_new(&reg), 0);
    assert_int_equal(tc_metrics_family_define(reg,
                                              &(tc_metrics_family_def){
                                                  .type = TC_METRIC_COUNTER,
                                                  .name = "c_total",
                                                  .help = "A counter.",
                                              },
                                              &c),
                     0);
    char *text;
    size_t len;
    assert_int_equal(tc_metrics_render(reg, RENDER_MAX, &text, &len), 0);
    free(text);
    char *t2 = (char *)0x1;
    size_t l2 = 7;
    assert_int_equal(tc_metrics_render(reg, len, &t2, &l2), 0);
    assert_int_equal(l2, len);
    free(t2);
    t2 = (char *)0x1;
    assert_int_equal(tc_metrics_render(reg, len - 1, &t2, &l2), TC_ETOOLARGE);
    assert_true(t2 == (char *)0x1 && l2 == len); /* untouched */
    assert_int_equal(tc_metrics_render(reg, 0, &t2, &l2), TC_ETOOLARGE);
    tc_metrics_registry_free(reg);
}

/* ---- escaping ----------------------------------------------------------------------------------
 */

static void test_label_escaping(void **state)
{
    (void)state;
    tc_metrics_registry *reg;
    uint32_t fam, s1, s2;
    const char *labels[] = {"path", "note"};
    assert_int_equal(tc_metrics_registry_new(&reg), 0);
    assert_int_equal(tc_metrics_family_define(reg,
                                              &(tc_metrics_family_def){
                                                  .type = TC_METRIC_COUNTER,
                                                  .name = "esc_total",
                                                  .help = "Line one\nline \"two\" \\ end",
                                                  .label_names = labels,
                                                  .n_labels = 2,
                                                  .max_dynamic = 4,
                                              },
                                              &fam),
                     0);
    const char *v1[] = {"a\"b", "c\\d\ne"};
    assert_int_equal(tc_metrics_series_define(reg, fam, v1, &s1), 0);
    tc_metrics_shard *sh;
    assert_int_equal(tc_metrics_shard_new(reg, &sh), 0);
    const char *v2[] = {"h\xc3\xa9llo", "{}=,\""};
    assert_int_equal(tc_metrics_series_lookup(sh, fam, v2, &s2), 0);
    tc_metrics_counter_add(sh, fam, s1, 1);
    tc_metrics_counter_add(sh, fam, s2, 2);

    char *text;
    size_t len;
    assert_int_equal(tc_metrics_render(reg, RENDER_MAX, &text, &len), 0);
    assert_string_equal(text, "# HELP esc_total Line one\\nline \"two\" \\\\ end\n"
                              "# TYPE esc_total counter\n"
                              "esc_total{path=\"a\\\"b\",note=\"c\\\\d\\ne\"} 1\n"
                              "esc_total{path=\"h\xc3\xa9llo\",note=\"{}=,\\\"\"} 2\n");
    /* The reader unescapes them back to the originals. */
    parsed p;
    mfx_parse(text, len, &p);
    assert_int_equal(p.n, 2);
    const char *lab = p.s[0].labels;
    const char *q = strchr(lab, '"') + 1;
    char v[64];
    mfx_read_label_value(&q, v, sizeof v);
    assert_string_equal(v, v1[0]);
    q = strchr(q, '"') + 1;
    mfx_read_label_value(&q, v, sizeof v);
    assert_string_equal(v, v1[1]);
    q = strchr(p.s[1].labels, '"') + 1;
    mfx_read_label_value(&q, v, sizeof v);
    assert_string_equal(v, v2[0]);
    q = strchr(q, '"') + 1;
    mfx_read_label_value(&q, v, sizeof v);
    assert_string_equal(v, v2[1]);
    mfx_parsed_free(&p);
    free(text);
    tc_metrics_registry_free(reg);
}

/* ---- histogram edges ---------------------------------------------------------------------------
 */

static void test_histogram_edges(void **state)
{
    (void)state;
    tc_metrics_registry *reg;
    uint32_t h, fin, inf, fmt;
    const char *labels[] = {"kind"};
    const double bounds[] = {-1, 0, 1e-9, 1, 1e6};
    const double nice[] = {0.005, 0.1, 0.3, 2.5, 10, 123456789, 1e21};
    assert_int_equal(tc_metrics_registry_new(&reg), 0);
    assert_int_equal(tc_metrics_family_define(reg,
                                              &(tc_metrics_family_def){
                                                  .type = TC_METRIC_HISTOGRAM,
                                                  .name = "edges",
                                                  .help = "Edges.",
                                                  .label_names = labels,
                                                  .n_labels = 1,
                                                  .buckets = bounds,
                                                  .n_buckets = 5,
                                              },
                                              &h),
                     0);
    assert_int_equal(tc_metrics_family_define(reg,
                                              &(tc_metrics_family_def){
                                                  .type = TC_METRIC_HISTOGRAM,
                                                  .name = "fmt",
                                                  .help = "Formats.",
                                                  .buckets = nice,
                                                  .n_buckets = 7,
                                              },
                                              &fmt),
                     0);
    assert_int_equal(tc_metrics_series_define(reg, h, (const char *[]){"finite"}, &fin), 0);
    assert_int_equal(tc_metrics_series_define(reg, h, (const char *[]){"inf"}, &inf), 0);
    tc_metrics_shard *sh;
    assert_int_equal(tc_metrics_shard_new(reg, &sh), 0);

    /* Exactly on each bound: that bucket (le is inclusive). Just above: the next one. Just
     * below: the same one. So every finite bucket gets 2 of its own and +Inf gets 1 + 2. */
    for (size_t i = 0; i < 5; i++) {
        tc_metrics_histogram_observe(sh, h, fin, bounds[i]);
        tc_metrics_histogram_observe(sh, h, fin, nextafter(bounds[i], -INFINITY));
        tc_metrics_histogram_observe(sh, h, fin, nextafter(bounds[i], INFINITY));
    }
    tc_metrics_histogram_observe(sh, h, fin, -5);  /* below everything: first bucket */
    tc_metrics_histogram_observe(sh, h, fin, 1e7); /* above everything: +Inf only */
    tc_metrics_histogram_observe(sh, h, fin, NAN); /* ignored */
    tc_metrics_histogram_observe(sh, h, inf, INFINITY);
    tc_metrics_histogram_observe(sh, h, inf, INFINITY);
    tc_metrics_histogram_observe(sh, h, inf, -INFINITY);
    tc_metrics_histogram_observe(sh, fmt, 0, 0.1);

    parsed p;
    char *text = mfx_render_parse(reg, &p);
    /* Buckets: -1: {-1, below(-1), -5} = 3; 0: +{0, below(0), above(-1)} = 6;
     * 1e-9: +{1e-9, below, above(0)} = 9; 1: +3 = 12; 1e6: +3 = 15; +Inf: +above(1e6) +1e7 = 17. */
    assert_true(mfx_get(&p, "edges_bucket", "kind=\"finite\",le=\"-1\"") == 3);
    assert_true(mfx_get(&p, "edges_bucket", "kind=\"finite\",le=\"0\"") == 6);
    assert_true(mfx_get(&p, "edges_bucket", "kind=\"finite\",le=\"1e-09\"") == 9);
    assert_true(mfx_get(&p, "edges_bucket", "kind=\"finite\",le=\"1\"") == 12);
    assert_true(mfx_get(&p, "edges_bucket", "kind=\"finite\",le=\"1e+06\"") == 15);
    assert_true(mfx_get(&p, "edges_bucket", "kind=\"finite\",le=\"+Inf\"") == 17);
    assert_true(mfx_get(&p, "edges_count", "kind=\"finite\"") == 17);
    assert_true(isfinite(mfx_get(&p, "edges_sum", "kind=\"finite\"")));
    /* -Inf goes to the first bucket, +Inf to +Inf; the sum of +Inf and -Inf is NaN. */
    assert_true(mfx_get(&p, "edges_bucket", "kind=\"inf\",le=\"-1\"") == 1);
    assert_true(mfx_get(&p, "edges_bucket", "kind=\"inf\",le=\"1e+06\"") == 1);
    assert_true(mfx_get(&p, "edges_bucket", "kind=\"inf\",le=\"+Inf\"") == 3);
    assert_true(isnan(mfx_get(&p, "edges_sum", "kind=\"inf\"")));
    assert_non_null(strstr(text, "edges_sum{kind=\"inf\"} NaN\n"));
    /* Bounds are printed as the shortest decimal that reads back exactly. */
    assert_non_null(strstr(text, "fmt_bucket{le=\"0.005\"} 0\n"));
    assert_non_null(strstr(text, "fmt_bucket{le=\"0.1\"} 1\n"));
    assert_non_null(strstr(text, "fmt_bucket{le=\"0.3\"} 1\n"));
    assert_non_null(strstr(text, "fmt_bucket{le=\"2.5\"} 1\n"));
    assert_non_null(strstr(text, "fmt_bucket{le=\"10\"} 1\n"));
    assert_non_null(strstr(text, "fmt_bucket{le=\"123456789\"} 1\n"));
    assert_non_null(strstr(text, "fmt_bucket{le=\"1e+21\"} 1\n"));
    assert_non_null(strstr(text, "fmt_sum 0.1\n"));
    mfx_check_histograms(&p);
    mfx_parsed_free(&p);
    free(text);

    /* Only +Inf observations: the sum is +Inf. */
    tc_metrics_registry *r2;
    uint32_t h2;
    assert_int_equal(tc_metrics_registry_new(&r2), 0);
    assert_int_equal(tc_metrics_family_define(r2,
                                              &(tc_metrics_family_def){
                                                  .type = TC_METRIC_HISTOGRAM,
                                                  .name = "h2",
                                                  .help = "x",
                                                  .buckets = bounds,
                                                  .n_buckets = 1,
                                              },
                                              &h2),
                     0);
    tc_metrics_shard *s2;
    assert_int_equal(tc_metrics_shard_new(r2, &s2), 0);
    tc_metrics_histogram_observe(s2, h2, 0, INFINITY);
    text = mfx_render_parse(r2, &p);
    assert_non_null(strstr(text, "h2_sum +Inf\n"));
    assert_true(mfx_get(&p, "h2_count", "") == 1);
    mfx_parsed_free(&p);
    free(text);
    tc_metrics_registry_free(r2);
    tc_metrics_registry_free(reg);
}

int main(void)
{
    alarm(240); /* watchdog: a hang fails the test instead of stalling the suite */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_render_exact),
        cmocka_unit_test(test_render_empty_and_without_shards),
        cmocka_unit_test(test_render_limit),
        cmocka_unit_test(test_label_escaping),
        cmocka_unit_test(test_histogram_edges),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
