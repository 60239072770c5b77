/*
 * Unit tests for app/serve/cmd_serve_replicas.c, what `tailcut serve` shows of its replica sets:
 * the replica labels (scheme://host:port, the address of a discovered one, IPv6 bracketed, never
 * credentials, path or query), which hosts discovery resolves, the /metrics families (every
 * state, every outcome and reason, replicas sharing a label as one series), the dashboard's
 * replicas with their attempts/s and success ratio between two samples, and the pools count.
 * The sets are real (src/policy/replica.c), driven by hand.
 */
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/clock.h"
#include "serve/cmd_serve.h"

static void expect_label(const char *url, const char *connect_to, const char *want)
{
    char out[TC_REPLICA_LABEL_MAX + 1];
    assert_int_equal(serve_replica_label(url, connect_to, out, sizeof(out)), 0);
    assert_string_equal(out, want);
}

static void test_labels(void **state)
{
    (void)state;
    expect_label("http://127.0.0.1:8000/api/work?key=s", NULL, "http://127.0.0.1:8000");
    expect_label("http://user:secret@Example.COM/v1", NULL, "http://example.com:80");
    expect_label("https://api.example.com", NULL, "https://api.example.com:443");
    expect_label("http://[::1]:8000/", NULL, "http://[::1]:8000");
    expect_label("http://items.svc:8000/v1?x=1", "10.0.0.7", "http://10.0.0.7:8000");
    expect_label("https://items.svc/v1", "fd00::7", "https://[fd00::7]:443");
    /* a URL libcurl does not read still gets a label without its userinfo or path */
    char out[TC_REPLICA_LABEL_MAX + 1];
    assert_int_equal(serve_replica_label("http://us:pw@bad host/x?k=v", NULL, out, sizeof(out)), 0);
    assert_null(strstr(out, "pw"));
    assert_null(strstr(out, "/x"));
    assert_null(strstr(out, "k=v"));
    assert_int_equal(strncmp(out, "http://", 7), 0);

    assert_true(serve_url_needs_resolving("http://localhost:8000/"));
    assert_true(serve_url_needs_resolving("https://items.shop.svc.cluster.local/v1"));
    assert_false(serve_url_needs_resolving("http://127.0.0.1:8000/"));
    assert_false(serve_url_needs_resolving("http://[::1]:8000/"));
    assert_false(serve_url_needs_resolving("http://[fe80::1%25eth0]:8000/"));
}

static char *upstream_urls[] = {"http://127.0.0.1:8001/a", "http://u:pw@127.0.0.1:8001/b?k=hidden",
                                "http://[::1]:8002/"};

typedef struct fixture {
    serve_route route;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->route.upstreams.v = upstream_urls;
    f->route.upstreams.n = 3;
    f->route.eject_failures = 5;
    f->route.eject_latency_factor = 5;
    f->route.max_ejected_pct = 50;
    f->route.name = (char *)"/api/";
    assert_int_equal(serve_route_state_new(&f->route), 0);
    assert_null(f->route.metadata_replicas); /* no metadata URL: no set */
    assert_int_equal(f->route.url_max, strlen(upstream_urls[1]));
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    serve_route_state_unref(f->route.state);
    free(f);
    return 0;
}

/* One attempt on replica want (chosen as the only untried one), ended as result after ms. */
static void attempt(fixture *f, unsigned want, tc_replica_result result, uint64_t ms)
{
    unsigned tried[2], n = 0;
    for (unsigned id = 0; id < 3; id++)
        if (id != want)
            tried[n++] = id;
    tc_replica_choice c;
    assert_int_equal(tc_replica_choose_extra(f->route.replicas->set, tc__now_ms(), tried, n, &c),
                     0);
    assert_int_equal(c.id, want);
    assert_string_equal(((serve_replica *)c.data)->url, upstream_urls[want]);
    assert_int_equal(tc_replica_done(f->route.replicas->set, c.id, result, ms * 1000, tc__now_ms()),
                     0);
}

/* The replica families of the one route, without and with the route label. */
static int metrics_of(const serve_route *route, tc__buf *b)
{
    return serve_replicas_metrics(route, 1, 0, b);
}

static int routed_metrics_of(const serve_route *route, tc__buf *b)
{
    return serve_replicas_metrics(route, 1, 1, b);
}

static char *render(fixture *f, int (*fn)(const serve_route *, tc__buf *))
{
    tc__buf b;
    tc__buf_init(&b, NULL, 0, 1 << 20);
    assert_int_equal(fn(&f->route, &b), 0);
    char *text = strdup(tc__buf_cstr(&b));
    tc__buf_reset(&b);
    return text;
}

/* The line of text starting with head, or NULL. */
static const char *line_of(const char *text, const char *head)
{
    const char *p = strstr(text, head);
    return p != NULL && (p == text || p[-1] == '\n') ? p : NULL;
}

static size_t count(const char *text, const char *what)
{
    size_t n = 0;
    for (const char *p = strstr(text, what); p != NULL; p = strstr(p + 1, what))
        n++;
    return n;
}

static void test_metrics(void **state)
{
    fixture *f = *state;
    attempt(f, 0, TC_REPLICA_SUCCESS, 10);
    attempt(f, 1, TC_REPLICA_FAILURE, 2);
    char *text = render(f, metrics_of);
    for (int s = 0; s < TC_REPLICA_STATE_COUNT; s++) {
        char head[128];
        (void)snprintf(
            head, sizeof(head), "tailcut_upstream_replicas{set=\"upstream\",state=\"%s\"} %d\n",
            tc_replica_state_name((tc_replica_state)s), s == TC_REPLICA_AVAILABLE ? 3 : 0);
        assert_non_null(line_of(text, head));
    }
    /* replicas 0 and 1 share a label: one series, their counts added */
    const char *lb = "set=\"upstream\",replica=\"http://127.0.0.1:8001\"";
    char want[256];
    (void)snprintf(want, sizeof(want),
                   "tailcut_upstream_replica_attempts_total{%s,outcome=\"success\"} 1\n", lb);
    assert_non_null(line_of(text, want));
    (void)snprintf(want, sizeof(want),
                   "tailcut_upstream_replica_attempts_total{%s,outcome=\"failure\"} 1\n", lb);
    assert_non_null(line_of(text, want));
    assert_int_equal(count(text, "replica=\"http://127.0.0.1:8001\""), 4 + 2 + 1 + 1);
    assert_int_equal(count(text, "replica=\"http://[::1]:8002\""), 4 + 2 + 1 + 1);
    assert_non_null(line_of(text, "tailcut_upstream_replica_attempts_total{set=\"upstream\","
                                  "replica=\"http://[::1]:8002\",outcome=\"not_sent\"} 0\n"));
    assert_non_null(line_of(text, "tailcut_upstream_replica_ejections_total{set=\"upstream\","
                                  "replica=\"http://[::1]:8002\",reason=\"latency\"} 0\n"));
    /* the higher average of the two: 10 ms (the other's first sample is its failure's 2 ms),
     * read on the real clock: a millisecond between the sample and the render decays it toward
     * the set's lowest by a few parts in 10^5 (10 s time constant), so 0.0099.. or 0.0100.. */
    const char *lat = line_of(text, "tailcut_upstream_replica_latency_seconds{set=\"upstream\","
                                    "replica=\"http://127.0.0.1:8001\"} ");
    assert_non_null(lat);
    double avg = strtod(strchr(lat, '}') + 2, NULL);
    assert_true(avg > 0.00999 && avg <= 0.010000);
    assert_non_null(line_of(text, "tailcut_upstream_replica_in_flight{set=\"upstream\","
                                  "replica=\"http://[::1]:8002\"} 0\n"));
    assert_non_null(line_of(text, "tailcut_upstream_panic_total{set=\"upstream\"} 0\n"));
    assert_non_null(line_of(text, "tailcut_dns_failures_total{set=\"upstream\"} 0\n"));
    assert_non_null(strstr(text, "# TYPE tailcut_upstream_panic_total counter\n"));
    assert_non_null(strstr(text, "# TYPE tailcut_upstream_replica_latency_seconds gauge\n"));
    assert_null(strstr(text, "metadata"));
    assert_null(strstr(text, "pw"));
    assert_null(strstr(text, "hidden"));
    free(text);
    assert_int_equal(serve_replicas_pools(&f->route), 2);
}

/* The stats members as one JSON object. */
static json_t *stats(fixture *f)
{
    char *text = render(f, serve_replicas_stats);
    assert_int_equal(text[0], ',');
    text[0] = '{';
    size_t n = strlen(text);
    char *obj = malloc(n + 2);
    assert_non_null(obj);
    memcpy(obj, text, n);
    obj[n] = '}';
    obj[n + 1] = '\0';
    json_error_t err;
    json_t *o = json_loads(obj, 0, &err);
    if (o == NULL)
        fail_msg("not JSON: %s (%s)", obj, err.text);
    free(obj);
    free(text);
    return o;
}

static json_t *field(json_t *o, size_t i, const char *key)
{
    json_t *r = json_array_get(json_object_get(o, "replicas"), i);
    assert_non_null(r);
    json_t *v = json_object_get(r, key);
    assert_non_null(v);
    return v;
}

static void test_stats(void **state)
{
    fixture *f = *state;
    json_t *o = stats(f);
    assert_int_equal(json_array_size(json_object_get(o, "replicas")), 3); /* by id, not merged */
    static const char *const labels[] = {"http://127.0.0.1:8001", "http://127.0.0.1:8001",
                                         "http://[::1]:8002"};
    for (size_t i = 0; i < 3; i++) {
        assert_string_equal(json_string_value(field(o, i, "set")), "upstream");
        assert_int_equal(json_integer_value(field(o, i, "id")), i);
        assert_string_equal(json_string_value(field(o, i, "replica")), labels[i]);
        assert_string_equal(json_string_value(field(o, i, "state")), "available");
        assert_true(json_is_null(field(o, i, "attempts_per_s"))); /* no samples yet */
        assert_true(json_is_null(field(o, i, "success_ratio")));
        assert_true(json_is_null(field(o, i, "average_ms")));
        assert_int_equal(json_integer_value(field(o, i, "in_flight")), 0);
    }
    json_t *sets = json_object_get(o, "replica_sets");
    assert_true(json_is_null(json_object_get(sets, "metadata")));
    json_t *up = json_object_get(sets, "upstream");
    assert_int_equal(json_integer_value(json_object_get(up, "available")), 3);
    assert_int_equal(json_integer_value(json_object_get(up, "ejected")), 0);
    assert_int_equal(json_integer_value(json_object_get(up, "dns_failures")), 0);
    json_decref(o);

    /* between two samples: 3 successes and a failure on 0, a cancelled attempt on 2 */
    serve_replicas_tick(&f->route, 7);
    serve_replicas_tick(&f->route, 7); /* one sample a second */
    attempt(f, 0, TC_REPLICA_SUCCESS, 10);
    attempt(f, 0, TC_REPLICA_SUCCESS, 12);
    attempt(f, 0, TC_REPLICA_FAILURE, 5);
    attempt(f, 0, TC_REPLICA_SUCCESS, 8);
    attempt(f, 2, TC_REPLICA_CANCELLED, 30);
    uint64_t t0 = tc__now_ms();
    (void)usleep(50000);
    serve_replicas_tick(&f->route, 8);
    uint64_t dt = tc__now_ms() - t0;
    attempt(f, 1, TC_REPLICA_SUCCESS, 10); /* after the sample: not counted yet */
    o = stats(f);
    double rate = json_number_value(field(o, 0, "attempts_per_s"));
    /* 4 attempts over the 50 ms or more between the samples (a generous lower bound) */
    assert_true(rate >= 4 * 1000.0 / (double)(dt + 1000) && rate <= 4 * 1000.0 / 45);
    assert_true(json_number_value(field(o, 0, "success_ratio")) == 0.75);
    assert_true(json_number_value(field(o, 1, "attempts_per_s")) == 0);
    assert_true(json_is_null(field(o, 1, "success_ratio")));
    assert_true(json_number_value(field(o, 2, "attempts_per_s")) > 0);
    assert_true(json_is_null(field(o, 2, "success_ratio"))); /* cancelled: neither */
    assert_true(json_number_value(field(o, 0, "average_ms")) > 0);
    json_decref(o);
}

/* With --config every replica series names its route first; without, never (the test above). */
static void test_metrics_with_route(void **state)
{
    fixture *f = *state;
    attempt(f, 0, TC_REPLICA_SUCCESS, 10);
    char *text = render(f, routed_metrics_of);
    assert_non_null(line_of(
        text,
        "tailcut_upstream_replicas{route=\"/api/\",set=\"upstream\",state=\"available\"} 3\n"));
    assert_non_null(line_of(text,
                            "tailcut_upstream_replica_in_flight{route=\"/api/\",set=\"upstream\","
                            "replica=\"http://127.0.0.1:8001\"} 0\n"));
    assert_non_null(
        line_of(text, "tailcut_upstream_panic_total{route=\"/api/\",set=\"upstream\"} 0\n"));
    assert_null(strstr(text, "{set="));
    free(text);
}

/* A reload keeps a route's state when its name and upstreams are the same, and only then. */
static void test_state_carried_over(void **state)
{
    fixture *f = *state;
    serve_route same = f->route, renamed = f->route, other = f->route;
    same.state = renamed.state = other.state = NULL;
    assert_true(serve_route_state_fits(f->route.state, &same));
    renamed.name = (char *)"api";
    assert_false(serve_route_state_fits(f->route.state, &renamed));
    other.upstreams.n = 2;
    assert_false(serve_route_state_fits(f->route.state, &other));
    other = f->route;
    other.eject_failures = 6;
    assert_false(serve_route_state_fits(f->route.state, &other));
    /* the adopting route takes the very same sets */
    serve_route_state_adopt(&same, f->route.state);
    assert_ptr_equal(same.replicas, f->route.replicas);
    assert_int_equal(same.url_max, f->route.url_max);
    serve_route_state_unref(same.state); /* the fixture's reference keeps it */
    assert_non_null(f->route.replicas->set);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_labels),
        cmocka_unit_test_setup_teardown(test_metrics, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stats, setup, teardown),
        cmocka_unit_test_setup_teardown(test_metrics_with_route, setup, teardown),
        cmocka_unit_test_setup_teardown(test_state_carried_over, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
