/*
 * Unit tests for src/metrics.c: exact exposition text, a strict parser that reads the text back
 * (HELP/TYPE before samples, escapes, cumulative buckets), histogram bucket edges, label
 * escaping, fixed / dynamic / overflow series, definition errors, render limits, and writers on
 * their own shards racing a renderer with exact totals at the end.
 */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "tailcut/metrics.h"

#define RENDER_MAX (1u << 20)

/* ---- a strict reader for the text format ----------------------------------------------------- */

typedef struct sample {
    char *name;
    char *labels; /* raw text between the braces, "" when none */
    double value;
} sample;

typedef struct parsed {
    sample *s;
    size_t n, cap;
    char *families[64]; /* names with a # TYPE line, in order */
    char types[64][16];
    size_t n_families;
} parsed;

/* Reads one quoted label value at *p (just after the opening quote), checking that only the
 * three escapes the format defines are used; writes the unescaped value to out. */
static void read_label_value(const char **p, char *out, size_t out_size)
{
    size_t k = 0;
    const char *s = *p;
    for (;;) {
        assert_true(*s != '\0' && *s != '\n');
        if (*s == '"')
            break;
        char c = *s;
        if (c == '\\') {
            s++;
            if (*s == 'n')
                c = '\n';
            else if (*s == '\\' || *s == '"')
                c = *s;
            else
                fail_msg("bad escape \\%c in label value", *s);
        }
        assert_true(k + 1 < out_size);
        out[k++] = c;
        s++;
    }
    out[k] = '\0';
    *p = s + 1;
}

static int is_name_char(char c, int first)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
           (!first && c >= '0' && c <= '9');
}

static char *dup_range(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    assert_non_null(d);
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

static void parse(const char *text, size_t len, parsed *out)
{
    memset(out, 0, sizeof *out);
    assert_int_equal(strlen(text), len);
    assert_true(len == 0 || text[len - 1] == '\n');
    const char *cur_family = NULL, *cur_type = NULL;
    int have_help = 0;
    for (const char *line = text; *line;) {
        const char *eol = strchr(line, '\n');
        assert_non_null(eol);
        if (strncmp(line, "# HELP ", 7) == 0) {
            const char *name = line + 7;
            const char *sp = strchr(name, ' ');
            assert_true(sp && sp < eol);
            have_help = 1;
        } else if (strncmp(line, "# TYPE ", 7) == 0) {
            assert_true(have_help); /* we always print HELP first */
            have_help = 0;
            const char *name = line + 7;
            const char *sp = strchr(name, ' ');
            assert_true(sp && sp < eol);
            assert_true(out->n_families < 64);
            out->families[out->n_families] = dup_range(name, (size_t)(sp - name));
            size_t tl = (size_t)(eol - sp - 1);
            assert_true(tl < 16);
            memcpy(out->types[out->n_families], sp + 1, tl);
            out->types[out->n_families][tl] = '\0';
            assert_true(strcmp(out->types[out->n_families], "counter") == 0 ||
                        strcmp(out->types[out->n_families], "gauge") == 0 ||
                        strcmp(out->types[out->n_families], "histogram") == 0);
            cur_family = out->families[out->n_families];
            cur_type = out->types[out->n_families];
            out->n_families++;
        } else {
            assert_true(line[0] != '#');
            assert_non_null(cur_family);
            const char *p = line;
            assert_true(is_name_char(*p, 1));
            while (is_name_char(*p, 0))
                p++;
            char *name = dup_range(line, (size_t)(p - line));
            /* The sample belongs to the current family. */
            size_t fl = strlen(cur_family);
            if (strcmp(cur_type, "histogram") == 0) {
                assert_true(strncmp(name, cur_family, fl) == 0);
                const char *suffix = name + fl;
                assert_true(strcmp(suffix, "_bucket") == 0 || strcmp(suffix, "_sum") == 0 ||
                            strcmp(suffix, "_count") == 0);
            } else {
                assert_string_equal(name, cur_family);
            }
            const char *lab_start = p, *lab_end = p;
            if (*p == '{') {
                p++;
                lab_start = p;
                while (*p != '}') {
                    assert_true(is_name_char(*p, 1) && *p != ':');
                    while (is_name_char(*p, 0))
                        p++;
                    assert_true(p[0] == '=' && p[1] == '"');
                    p += 2;
                    char v[256];
                    read_label_value(&p, v, sizeof v);
                    if (*p == ',')
                        p++;
                    else
                        assert_int_equal(*p, '}');
                }
                lab_end = p;
                p++;
            }
            assert_int_equal(*p, ' ');
            p++;
            char *num = dup_range(p, (size_t)(eol - p));
            char *endp;
            double v = strtod(num, &endp);
            assert_true(*num != '\0' && *endp == '\0');
            free(num);
            if (out->n == out->cap) {
                out->cap = out->cap ? out->cap * 2 : 64;
                out->s = realloc(out->s, out->cap * sizeof *out->s);
                assert_non_null(out->s);
            }
            out->s[out->n].name = name;
            out->s[out->n].labels = dup_range(lab_start, (size_t)(lab_end - lab_start));
            out->s[out->n].value = v;
            out->n++;
        }
        line = eol + 1;
    }
}

static void parsed_free(parsed *p)
{
    for (size_t i = 0; i < p->n; i++) {
        free(p->s[i].name);
        free(p->s[i].labels);
    }
    free(p->s);
    for (size_t i = 0; i < p->n_families; i++)
        free(p->families[i]);
}

static const sample *find(const parsed *p, const char *name, const char *labels)
{
    const sample *hit = NULL;
    for (size_t i = 0; i < p->n; i++) {
        if (strcmp(p->s[i].name, name) == 0 && strcmp(p->s[i].labels, labels) == 0) {
            if (hit)
                fail_msg("series %s{%s} appears twice", name, labels);
            hit = &p->s[i];
        }
    }
    return hit;
}

static double get(const parsed *p, const char *name, const char *labels)
{
    const sample *s = find(p, name, labels);
    if (!s)
        fail_msg("series %s{%s} missing", name, labels);
    return s->value;
}

/* Renders and parses; returns the text (caller frees). */
static char *render_parse(tc_metrics_registry *reg, parsed *p)
{
    char *text = NULL;
    size_t len = 0;
    assert_int_equal(tc_metrics_render(reg, RENDER_MAX, &text, &len), 0);
    assert_non_null(text);
    parse(text, len, p);
    return text;
}

/* Every histogram series in p: buckets cumulative, +Inf equal to _count. */
static void check_histograms(const parsed *p)
{
    for (size_t i = 0; i < p->n; i++) {
        const char *name = p->s[i].name;
        size_t nl = strlen(name);
        if (nl < 6 || strcmp(name + nl - 6, "_count") != 0)
            continue;
        char base[128];
        snprintf(base, sizeof base, "%.*s_bucket", (int)(nl - 6), name);
        double prev = 0, inf = -1;
        const char *labels = p->s[i].labels;
        for (size_t j = 0; j < p->n; j++) {
            if (strcmp(p->s[j].name, base) != 0)
                continue;
            /* Same series: labels are ours plus ,le="..." (or le= alone). */
            const char *lab = p->s[j].labels;
            size_t ll = strlen(labels);
            if (ll ? strncmp(lab, labels, ll) != 0 || strncmp(lab + ll, ",le=\"", 5) != 0
                   : strncmp(lab, "le=\"", 4) != 0)
                continue;
            assert_true(p->s[j].value >= prev);
            prev = p->s[j].value;
            if (strstr(lab, "le=\"+Inf\""))
                inf = p->s[j].value;
        }
        assert_true(inf >= 0);
        assert_true(inf == p->s[i].value);
    }
}

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
    text = render_parse(reg, &p);
    assert_int_equal(p.n_families, 4);
    assert_string_equal(p.types[3], "histogram");
    assert_true(get(&p, "tc_requests_total", "") == 7);
    assert_true(get(&p, "tc_latency_seconds_sum", "endpoint=\"smart\"") == 4.875);
    check_histograms(&p);
    parsed_free(&p);
    free(text);

    /* gauge_set sets one shard's part; the rendered value is the sum. */
    tc_metrics_gauge_set(a, inflight, 0, 10);
    tc_metrics_gauge_set(b, inflight, 0, -15);
    text = render_parse(reg, &p);
    assert_true(get(&p, "tc_in_flight", "") == -5);
    parsed_free(&p);
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
    parse(text, len, &p);
    assert_int_equal(p.n, 2);
    const char *lab = p.s[0].labels;
    const char *q = strchr(lab, '"') + 1;
    char v[64];
    read_label_value(&q, v, sizeof v);
    assert_string_equal(v, v1[0]);
    q = strchr(q, '"') + 1;
    read_label_value(&q, v, sizeof v);
    assert_string_equal(v, v1[1]);
    q = strchr(p.s[1].labels, '"') + 1;
    read_label_value(&q, v, sizeof v);
    assert_string_equal(v, v2[0]);
    q = strchr(q, '"') + 1;
    read_label_value(&q, v, sizeof v);
    assert_string_equal(v, v2[1]);
    parsed_free(&p);
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
    char *text = render_parse(reg, &p);
    /* Buckets: -1: {-1, below(-1), -5} = 3; 0: +{0, below(0), above(-1)} = 6;
     * 1e-9: +{1e-9, below, above(0)} = 9; 1: +3 = 12; 1e6: +3 = 15; +Inf: +above(1e6) +1e7 = 17. */
    assert_true(get(&p, "edges_bucket", "kind=\"finite\",le=\"-1\"") == 3);
    assert_true(get(&p, "edges_bucket", "kind=\"finite\",le=\"0\"") == 6);
    assert_true(get(&p, "edges_bucket", "kind=\"finite\",le=\"1e-09\"") == 9);
    assert_true(get(&p, "edges_bucket", "kind=\"finite\",le=\"1\"") == 12);
    assert_true(get(&p, "edges_bucket", "kind=\"finite\",le=\"1e+06\"") == 15);
    assert_true(get(&p, "edges_bucket", "kind=\"finite\",le=\"+Inf\"") == 17);
    assert_true(get(&p, "edges_count", "kind=\"finite\"") == 17);
    assert_true(isfinite(get(&p, "edges_sum", "kind=\"finite\"")));
    /* -Inf goes to the first bucket, +Inf to +Inf; the sum of +Inf and -Inf is NaN. */
    assert_true(get(&p, "edges_bucket", "kind=\"inf\",le=\"-1\"") == 1);
    assert_true(get(&p, "edges_bucket", "kind=\"inf\",le=\"1e+06\"") == 1);
    assert_true(get(&p, "edges_bucket", "kind=\"inf\",le=\"+Inf\"") == 3);
    assert_true(isnan(get(&p, "edges_sum", "kind=\"inf\"")));
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
    check_histograms(&p);
    parsed_free(&p);
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
    text = render_parse(r2, &p);
    assert_non_null(strstr(text, "h2_sum +Inf\n"));
    assert_true(get(&p, "h2_count", "") == 1);
    parsed_free(&p);
    free(text);
    tc_metrics_registry_free(r2);
    tc_metrics_registry_free(reg);
}

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
    char *text = render_parse(reg, &p);
    assert_int_equal(p.n, TC_METRICS_MAX_DYNAMIC); /* no overflow line while it is zero */
    assert_true(get(&p, "g", "code=\"c0777\"") == -777);
    parsed_free(&p);
    free(text);
    uint32_t id;
    assert_int_equal(tc_metrics_series_lookup(s, fam, (const char *[]){"more"}, &id), TC_EBUSY);
    tc_metrics_gauge_add(s, fam, id, 1);
    text = render_parse(reg, &p);
    assert_int_equal(p.n, TC_METRICS_MAX_DYNAMIC + 1);
    assert_true(get(&p, "g", "code=\"_overflow\"") == 1);
    parsed_free(&p);
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
        char *text = render_parse(w.reg, &p);
        const sample *r = find(&p, "req_total", "");
        assert_non_null(r);
        assert_true(r->value >= last_req);
        last_req = r->value;
        const sample *s200 = find(&p, "status_total", "endpoint=\"smart\",status=\"200\"");
        if (s200) {
            assert_true(s200->value >= last_200);
            last_200 = s200->value;
        }
        double fl = get(&p, "in_flight", "");
        assert_true(fl >= 0 && fl <= WRITERS);
        check_histograms(&p);
        parsed_free(&p);
        free(text);
        renders++;
    }
    for (int i = 0; i < WRITERS; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);
    printf("# %d renders raced the writers\n", renders);

    /* Exact totals. */
    parsed p;
    char *text = render_parse(w.reg, &p);
    assert_true(get(&p, "req_total", "") == (double)WRITERS * ITERS);
    for (int k = 0; k < 5; k++) {
        char lab[64];
        snprintf(lab, sizeof lab, "endpoint=\"smart\",status=\"%s\"", statuses[k]);
        assert_true(get(&p, "status_total", lab) == (double)WRITERS * ITERS / 5);
    }
    assert_int_equal(p.n_families, 4);
    assert_true(find(&p, "status_total", "endpoint=\"_overflow\",status=\"_overflow\"") == NULL);
    assert_true(get(&p, "in_flight", "") == 0);
    /* Observations cycle 0,1,2,3: one quarter in each bucket, sum 1.5 per observation. */
    double q = (double)WRITERS * ITERS / 4;
    assert_true(get(&p, "lat_bucket", "result=\"ok\",le=\"0.5\"") == q);
    assert_true(get(&p, "lat_bucket", "result=\"ok\",le=\"1.5\"") == 2 * q);
    assert_true(get(&p, "lat_bucket", "result=\"ok\",le=\"2.5\"") == 3 * q);
    assert_true(get(&p, "lat_bucket", "result=\"ok\",le=\"+Inf\"") == 4 * q);
    assert_true(get(&p, "lat_count", "result=\"ok\"") == 4 * q);
    assert_true(get(&p, "lat_sum", "result=\"ok\"") == 1.5 * 4 * q);
    parsed_free(&p);
    free(text);
    tc_metrics_registry_free(w.reg);
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
        cmocka_unit_test(test_dynamic_series),
        cmocka_unit_test(test_dynamic_cap_many),
        cmocka_unit_test(test_define_errors),
        cmocka_unit_test(test_invalid_ids_ignored),
        cmocka_unit_test(test_concurrent_writers_and_renderer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
