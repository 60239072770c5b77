/*
 * Unit tests for src/metrics*.c: fixed, dynamic and overflow series, definition errors and
 * invalid ids.
 */
#include "metrics_fixture.h"

/* ---- fixed, dynamic and overflow series --------------------------------------------------------
 */

static void test_dynamic_series(void **state)
{
    (void)state;
    tc_metrics_registry *reg;
    uint32_t fam, plain, fixed_only, fixed_id, id;
    const char *labels[] = {"endpoint", "status"};
    assert_int_equal(tc_metrics_registry_new(&reg), 0);
    assert_int_equal(tc_metrics_family_define(reg,
                                              &(tc_metrics_family_def){
                                                  .type = TC_METRIC_COUNTER,
                                                  .name = "status_total",
                                                  .help = "By status.",
                                                  .label_names = labels,
                                                  .n_labels = 2,
                                                  .max_dynamic = 3,
                                              },
                                              &fam),
                     0);
    assert_int_equal(tc_metrics_family_define(reg,
                                              &(tc_metrics_family_def){
                                                  .type = TC_METRIC_COUNTER,
                                                  .name = "plain_total",
                                                  .help = "No labels.",
                                              },
                                              &plain),
                     0);
    assert_int_equal(tc_metrics_family_define(reg,
                                              &(tc_metrics_family_def){
                                                  .type = TC_METRIC_COUNTER,
                                                  .name = "fixed_total",
                                                  .help = "Fixed only.",
                                                  .label_names = labels,
                                                  .n_labels = 1,
                                              },
                                              &fixed_only),
                     0);
    assert_int_equal(
        tc_metrics_series_define(reg, fam, (const char *[]){"smart", "200"}, &fixed_id), 0);
    assert_int_equal(tc_metrics_series_define(reg, fixed_only, (const char *[]){"x"}, &id), 0);

    /* Before any shard exists: fixed series at zero, no dynamic ones. */
    char *early;
    size_t early_len;
    assert_int_equal(tc_metrics_render(reg, RENDER_MAX, &early, &early_len), 0);
    assert_non_null(strstr(early, "status_total{endpoint=\"smart\",status=\"200\"} 0\n"));
    free(early);

    tc_metrics_shard *a, *b;
    assert_int_equal(tc_metrics_shard_new(reg, &a), 0);
    assert_int_equal(tc_metrics_shard_new(reg, &b), 0);

    /* Fixed values map to the fixed id. */
    assert_int_equal(tc_metrics_series_lookup(a, fam, (const char *[]){"smart", "200"}, &id), 0);
    assert_int_equal(id, fixed_id);
    /* New sets get the next ids, and the same set the same id. */
    uint32_t a502, a504, a500, aover;
    assert_int_equal(tc_metrics_series_lookup(a, fam, (const char *[]){"smart", "502"}, &a502), 0);
    assert_int_equal(a502, 1);
    assert_int_equal(tc_metrics_series_lookup(a, fam, (const char *[]){"smart", "502"}, &id), 0);
    assert_int_equal(id, a502);
    assert_int_equal(tc_metrics_series_lookup(a, fam, (const char *[]){"first", "504"}, &a504), 0);
    assert_int_equal(tc_metrics_series_lookup(a, fam, (const char *[]){"all", "500"}, &a500), 0);
    assert_int_equal(a504, 2);
    assert_int_equal(a500, 3);
    /* Beyond the cap: the overflow series, told apart by TC_EBUSY. */
    assert_int_equal(tc_metrics_series_lookup(a, fam, (const char *[]){"x", "y"}, &aover),
                     TC_EBUSY);
    assert_int_equal(aover, 4);
    /* Known sets still resolve after the cap. */
    assert_int_equal(tc_metrics_series_lookup(a, fam, (const char *[]){"all", "500"}, &id), 0);
    assert_int_equal(id, a500);
    /* The overflow values name the overflow series. */
    assert_int_equal(
        tc_metrics_series_lookup(
            a, fam, (const char *[]){TC_METRICS_OVERFLOW_VALUE, TC_METRICS_OVERFLOW_VALUE}, &id),
        0);
    assert_int_equal(id, aover);

    /* Shard b numbers its own sets; a too-long value goes to overflow. */
    uint32_t b504, bzzz;
    char longv[TC_METRICS_VALUE_MAX + 1];
    memset(longv, 'v', sizeof longv - 1);
    longv[sizeof longv - 1] = '\0';
    assert_int_equal(tc_metrics_series_lookup(b, fam, (const char *[]){"first", "504"}, &b504), 0);
    assert_int_equal(b504, 1);
    assert_int_equal(tc_metrics_series_lookup(b, fam, (const char *[]){longv, "1"}, &id),
                     TC_ETOOLARGE);
    assert_int_equal(id, 4);
    longv[TC_METRICS_VALUE_MAX - 1] = '\0'; /* the longest value that fits */
    assert_int_equal(tc_metrics_series_lookup(b, fam, (const char *[]){"zzz", longv}, &bzzz), 0);
    assert_int_equal(bzzz, 2);

    tc_metrics_counter_add(a, fam, fixed_id, 1);
    tc_metrics_counter_add(a, fam, a502, 10);
    tc_metrics_counter_add(a, fam, a504, 100);
    tc_metrics_counter_add(b, fam, b504, 1000);
    tc_metrics_counter_add(a, fam, a500, 5);
    tc_metrics_counter_add(a, fam, aover, 7);
    tc_metrics_counter_add(b, fam, 4, 8); /* b's overflow series */
    tc_metrics_counter_add(b, fam, bzzz, 9);
    /* Ids not handed out yet in b (3) are ignored, like any invalid id. */
    tc_metrics_counter_add(b, fam, 3, 1000000);

    /* Unlabelled families: lookup gives the default series. No dynamic sets: EINVAL. */
    assert_int_equal(tc_metrics_series_lookup(a, plain, NULL, &id), 0);
    assert_int_equal(id, TC_METRICS_SERIES_DEFAULT);
    assert_int_equal(tc_metrics_series_lookup(a, fixed_only, (const char *[]){"y"}, &id),
                     TC_EINVAL);
    assert_int_equal(id, TC_METRICS_SERIES_INVALID);
    tc_metrics_counter_add(a, fixed_only, id, 1); /* ignored */
    assert_int_equal(tc_metrics_series_lookup(a, 99, (const char *[]){"y"}, &id), TC_EINVAL);
    assert_int_equal(tc_metrics_series_lookup(a, fam, NULL, &id), TC_EINVAL);
    assert_int_equal(tc_metrics_series_lookup(a, fam, (const char *[]){"a", NULL}, &id), TC_EINVAL);

    char *text;
    size_t len;
    assert_int_equal(tc_metrics_render(reg, RENDER_MAX, &text, &len), 0);
    char want[2048];
    snprintf(want, sizeof want,
             "# HELP status_total By status.\n"
             "# TYPE status_total counter\n"
             "status_total{endpoint=\"smart\",status=\"200\"} 1\n"
             "status_total{endpoint=\"_overflow\",status=\"_overflow\"} 15\n"
             "status_total{endpoint=\"all\",status=\"500\"} 5\n"
             "status_total{endpoint=\"first\",status=\"504\"} 1100\n"
             "status_total{endpoint=\"smart\",status=\"502\"} 10\n"
             "status_total{endpoint=\"zzz\",status=\"%s\"} 9\n"
             "# HELP plain_total No labels.\n"
             "# TYPE plain_total counter\n"
             "plain_total 0\n"
             "# HELP fixed_total Fixed only.\n"
             "# TYPE fixed_total counter\n"
             "fixed_total{endpoint=\"x\"} 0\n",
             longv);
    assert_string_equal(text, want);
    free(text);
    tc_metrics_registry_free(reg);
}

/* Overflow rendered only once it has counts, and a full cap of distinct sets per shard. */
static void test_dynamic_cap_many(void **state)
{
    (void)state;
    tc_metrics_registry *reg;
    uint32_t fam;
    const char *labels[] = {"code"};
    assert_int_equal(tc_metrics_registry_new(&reg), 0);
    assert_int_equal(tc_metrics_family_define(reg,
                                              &(tc_metrics_family_def){
                                                  .type = TC_METRIC_GAUGE,
                                                  .name = "g",
                                                  .help = "g",
                                                  .label_names = labels,
                                                  .n_labels = 1,
                                                  .max_dynamic = TC_METRICS_MAX_DYNAMIC,
                                              },
                                              &fam),
                     0);
    tc_metrics_shard *s;
    assert_int_equal(tc_metrics_shard_new(reg, &s), 0);
    char v[16];
    for (int i = 0; i < TC_METRICS_MAX_DYNAMIC; i++) {
        uint32_t id;
        snprintf(v, sizeof v, "c%04d", i);
        assert_int_equal(tc_metrics_series_lookup(s, fam, (const char *[]){v}, &id), 0);
        assert_int_equal(id, (uint32_t)i);
        tc_metrics_gauge_add(s, fam, id, -i);
    }
    parsed p;
    char *text = mfx_render_parse(reg, &p);
    assert_int_equal(p.n, TC_METRICS_MAX_DYNAMIC); /* no overflow line while it is zero */
    assert_true(mfx_get(&p, "g", "code=\"c0777\"") == -777);
    mfx_parsed_free(&p);
    free(text);
    uint32_t id;
    assert_int_equal(tc_metrics_series_lookup(s, fam, (const char *[]){"more"}, &id), TC_EBUSY);
    tc_metrics_gauge_add(s, fam, id, 1);
    text = mfx_render_parse(reg, &p);
    assert_int_equal(p.n, TC_METRICS_MAX_DYNAMIC + 1);
    assert_true(mfx_get(&p, "g", "code=\"_overflow\"") == 1);
    mfx_parsed_free(&p);
    free(text);
    tc_metrics_registry_free(reg);
}

/* ---- definitions and invalid ids ---------------------------------------------------------------
 */

static int define(tc_metrics_registry *reg, tc_metrics_family_def def)
{
    uint32_t id;
    return tc_metrics_family_define(reg, &def, &id);
}

static void test_define_errors(void **state)
{
    (void)state;
    tc_metrics_registry *reg;
    assert_int_equal(tc_metrics_registry_new(&reg), 0);
    const char *one[] = {"a"};
    const char *two_same[] = {"a", "a"};
    const char *le[] = {"le"};
    const char *reserved[] = {"__x"};
    const char *badl[] = {"a-b"};
    const char *digit[] = {"1a"};
    const char *five[] = {"a", "b", "c", "d", "e"};
    const double up[] = {1, 2}, down[] = {2, 1}, same[] = {1, 1}, inf[] = {1, INFINITY};
    const double nan_b[] = {NAN};
    double many[TC_METRICS_MAX_BUCKETS + 1];
    for (int i = 0; i <= TC_METRICS_MAX_BUCKETS; i++)
        many[i] = i;
    const tc_metric_type C = TC_METRIC_COUNTER, H = TC_METRIC_HISTOGRAM;

    assert_int_equal(define(reg, (tc_metrics_family_def){.type = C, .name = ""}), TC_EINVAL);
    assert_int_equal(define(reg, (tc_metrics_family_def){.type = C, .name = NULL}), TC_EINVAL);
    assert_int_equal(define(reg, (tc_metrics_family_def){.type = C, .name = "1abc"}), TC_EINVAL);
    assert_int_equal(define(reg, (tc_metrics_family_def){.type = C, .name = "a-b"}), TC_EINVAL);
    assert_int_equal(define(reg, (tc_metrics_family_def){.type = C, .name = "a b"}), TC_EINVAL);
    assert_int_equal(define(reg, (tc_metrics_family_def){.type = (tc_metric_type)7, .name = "x"}),
                     TC_EINVAL);
    assert_int_equal(define(reg,
                            (tc_metrics_family_def){
                                .type = C, .name = "x", .label_names = two_same, .n_labels = 2}),
                     TC_EINVAL);
    assert_int_equal(define(reg,
                            (tc_metrics_family_def){
                                .type = C, .name = "x", .label_names = reserved, .n_labels = 1}),
                     TC_EINVAL);
    assert_int_equal(
        define(reg,
               (tc_metrics_family_def){.type = C, .name = "x", .label_names = badl, .n_labels = 1}),
        TC_EINVAL);
    assert_int_equal(define(reg,
                            (tc_metrics_family_def){
                                .type = C, .name = "x", .label_names = digit, .n_labels = 1}),
                     TC_EINVAL);
    assert_int_equal(
        define(reg,
               (tc_metrics_family_def){.type = C, .name = "x", .label_names = five, .n_labels = 5}),
        TC_EINVAL);
    assert_int_equal(define(reg, (tc_metrics_family_def){.type = C, .name = "x", .n_labels = 1}),
                     TC_EINVAL);
    assert_int_equal(define(reg, (tc_metrics_family_def){.type = H,
                                                         .name = "x",
                                                         .label_names = le,
                                                         .n_labels = 1,
                                                         .buckets = up,
                                                         .n_buckets = 2}),
                     TC_EINVAL);
    assert_int_equal(define(reg, (tc_metrics_family_def){.type = H, .name = "x"}), TC_EINVAL);
    assert_int_equal(
        define(reg,
               (tc_metrics_family_def){.type = H, .name = "x", .buckets = down, .n_buckets = 2}),
        TC_EINVAL);
    assert_int_equal(
        define(reg,
               (tc_metrics_family_def){.type = H, .name = "x", .buckets = same, .n_buckets = 2}),
        TC_EINVAL);
    assert_int_equal(
        define(reg,
               (tc_metrics_family_def){.type = H, .name = "x", .buckets = inf, .n_buckets = 2}),
        TC_EINVAL);
    assert_int_equal(
        define(reg,
               (tc_metrics_family_def){.type = H, .name = "x", .buckets = nan_b, .n_buckets = 1}),
        TC_EINVAL);
    assert_int_equal(define(reg, (tc_metrics_family_def){.type = H,
                                                         .name = "x",
                                                         .buckets = many,
                                                         .n_buckets = TC_METRICS_MAX_BUCKETS + 1}),
                     TC_EINVAL);
    assert_int_equal(
        define(reg, (tc_metrics_family_def){.type = C, .name = "x", .buckets = up, .n_buckets = 2}),
        TC_EINVAL);
    assert_int_equal(define(reg, (tc_metrics_family_def){.type = C, .name = "x", .max_dynamic = 2}),
                     TC_EINVAL); /* dynamic sets need labels */
    assert_int_equal(
        define(reg, (tc_metrics_family_def){.type = C,
                                            .name = "x",
                                            .label_names = one,
                                            .n_labels = 1,
                                            .max_dynamic = TC_METRICS_MAX_DYNAMIC + 1}),
        TC_EINVAL);
    /* Nothing was added by the failures. */
    char *text;
    size_t len;
    assert_int_equal(tc_metrics_render(reg, RENDER_MAX, &text, &len), 0);
    assert_int_equal(len, 0);
    free(text);

    /* Good ones, then a duplicate name. */
    uint32_t id, sid;
    assert_int_equal(
        tc_metrics_family_define(
            reg,
            &(tc_metrics_family_def){
                .type = C, .name = "ns:ok_total", .help = NULL, .label_names = one, .n_labels = 1},
            &id),
        0);
    assert_int_equal(id, 0);
    assert_int_equal(define(reg, (tc_metrics_family_def){.type = H,
                                                         .name = "h",
                                                         .buckets = many,
                                                         .n_buckets = TC_METRICS_MAX_BUCKETS}),
                     0);
    assert_int_equal(define(reg, (tc_metrics_family_def){.type = C, .name = "ns:ok_total"}),
                     TC_EINVAL);

    /* Series definitions. */
    assert_int_equal(tc_metrics_series_define(reg, 0, (const char *[]){"v"}, &sid), 0);
    assert_int_equal(tc_metrics_series_define(reg, 0, (const char *[]){"v"}, &sid), TC_EINVAL);
    assert_int_equal(tc_metrics_series_define(reg, 0, (const char *[]){NULL}, &sid), TC_EINVAL);
    assert_int_equal(tc_metrics_series_define(reg, 0, NULL, &sid), TC_EINVAL);
    assert_int_equal(
        tc_metrics_series_define(reg, 0, (const char *[]){TC_METRICS_OVERFLOW_VALUE}, &sid),
        TC_EINVAL);
    assert_int_equal(tc_metrics_series_define(reg, 1, (const char *[]){"v"}, &sid),
                     TC_EINVAL); /* unlabelled */
    assert_int_equal(tc_metrics_series_define(reg, 9, (const char *[]){"v"}, &sid), TC_EINVAL);
    for (int i = 0; i < 100; i++) { /* grows past the first allocation */
        char v[8];
        snprintf(v, sizeof v, "v%d", i);
        assert_int_equal(tc_metrics_series_define(reg, 0, (const char *[]){v}, &sid), 0);
        assert_int_equal(sid, (uint32_t)i + 1);
    }

    /* Frozen by the first shard. */
    tc_metrics_shard *s;
    assert_int_equal(tc_metrics_shard_new(reg, &s), 0);
    assert_int_equal(define(reg, (tc_metrics_family_def){.type = C, .name = "late"}), TC_EBUSY);
    assert_int_equal(tc_metrics_series_define(reg, 0, (const char *[]){"late"}, &sid), TC_EBUSY);
    /* Every fixed series resolves through the shard's table. */
    for (int i = 0; i < 100; i++) {
        char v[8];
        snprintf(v, sizeof v, "v%d", i);
        assert_int_equal(tc_metrics_series_lookup(s, 0, (const char *[]){v}, &sid), 0);
        assert_int_equal(sid, (uint32_t)i + 1);
    }
    tc_metrics_registry_free(reg);
}

static void test_invalid_ids_ignored(void **state)
{
    (void)state;
    tc_metrics_registry *reg;
    uint32_t c, g, h;
    const double b[] = {1};
    assert_int_equal(tc_metrics_registry_new(&reg), 0);
    assert_int_equal(tc_metrics_family_define(
                         reg, &(tc_metrics_family_def){.type = TC_METRIC_COUNTER, .name = "c"}, &c),
                     0);
    assert_int_equal(tc_metrics_family_define(
                         reg, &(tc_metrics_family_def){.type = TC_METRIC_GAUGE, .name = "g"}, &g),
                     0);
    assert_int_equal(tc_metrics_family_define(reg,
                                              &(tc_metrics_family_def){.type = TC_METRIC_HISTOGRAM,
                                                                       .name = "h",
                                                                       .buckets = b,
                                                                       .n_buckets = 1},
                                              &h),
                     0);
    tc_metrics_shard *s;
    assert_int_equal(tc_metrics_shard_new(reg, &s), 0);
    char *before, *after;
    size_t lb, la;
    assert_int_equal(tc_metrics_render(reg, RENDER_MAX, &before, &lb), 0);
    tc_metrics_counter_add(s, g, 0, 1); /* wrong type */
    tc_metrics_counter_add(s, h, 0, 1);
    tc_metrics_gauge_add(s, c, 0, 1);
    tc_metrics_gauge_set(s, h, 0, 1);
    tc_metrics_histogram_observe(s, c, 0, 1);
    tc_metrics_counter_add(s, c, 1, 1); /* series out of range */
    tc_metrics_counter_add(s, c, TC_METRICS_SERIES_INVALID, 1);
    tc_metrics_counter_add(s, 3, 0, 1); /* family out of range */
    tc_metrics_counter_add(s, UINT32_MAX, 0, 1);
    tc_metrics_histogram_observe(s, h, 0, NAN); /* NaN */
    assert_int_equal(tc_metrics_render(reg, RENDER_MAX, &after, &la), 0);
    assert_string_equal(before, after);
    free(before);
    free(after);

    /* Counters are uint64 and print in full; gauges are int64 and print negative. */
    tc_metrics_counter_add(s, c, 0, UINT64_MAX);
    tc_metrics_gauge_set(s, g, 0, INT64_MIN);
    assert_int_equal(tc_metrics_render(reg, RENDER_MAX, &after, &la), 0);
    assert_non_null(strstr(after, "\nc 18446744073709551615\n"));
    assert_non_null(strstr(after, "\ng -9223372036854775808\n"));
    free(after);
    tc_metrics_registry_free(reg);
}

int main(void)
{
    alarm(240); /* watchdog: a hang fails the test instead of stalling the suite */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dynamic_series),
        cmocka_unit_test(test_dynamic_cap_many),
        cmocka_unit_test(test_define_errors),
        cmocka_unit_test(test_invalid_ids_ignored),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
