/*
 * Tests for the fetch engine and its helpers (src/fetch/fetch.c): the latency histogram, the
 * Retry-After parser, the JSON line writer, and tc_fetch itself against in-process simulated
 * upstreams (src/upstream/upstream.c) on the same loop, on 127.0.0.1 port 0.
 *
 * Every engine test runs its own loop under a watchdog and ends with tc_fetch_close, the
 * upstreams' close and uv_loop_close(loop) == 0.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <jansson.h>
#include <uv.h>

#include "base/json_write.h"
#include "fetch/fetch_internal.h"
#include "tailcut/fetch.h"
#include "tailcut/upstream.h"

/* ---- histogram ------------------------------------------------------------------------------ */

static void test_hist_exact_small_values(void **state)
{
    (void)state;
    tc__hist *h = malloc(sizeof(*h));
    assert_non_null(h);
    tc__hist_init(h);
    assert_int_equal(tc__hist_percentile(h, 50), 0); /* empty */
    for (uint64_t v = 1; v <= 100; v++)
        tc__hist_record(h, v);
    assert_int_equal(h->count, 100);
    assert_int_equal(tc__hist_percentile(h, 50), 50);
    assert_int_equal(tc__hist_percentile(h, 90), 90);
    assert_int_equal(tc__hist_percentile(h, 99), 99);
    assert_int_equal(tc__hist_percentile(h, 100), 100);
    assert_int_equal(tc__hist_percentile(h, 0), 1);
    free(h);
}

static void test_hist_relative_error(void **state)
{
    (void)state;
    tc__hist *h = malloc(sizeof(*h));
    assert_non_null(h);
    /* One value at a time: its percentile must be within 1% of it, whatever its size. */
    for (uint64_t v = 1; v < (1ULL << 40); v = v * 3 + 7) {
        tc__hist_init(h);
        tc__hist_record(h, v);
        tc__hist_record(h, v + v / 1000);
        uint64_t p = tc__hist_percentile(h, 50);
        double err = ((double)p - (double)v) / (double)v;
        if (err < 0)
            err = -err;
        assert_true(err <= 0.01);
    }
    /* 1..100000 us uniformly: percentiles within 1% of the exact ones. */
    tc__hist_init(h);
    for (uint64_t v = 1; v <= 100000; v++)
        tc__hist_record(h, v);
    const double ps[] = {50, 90, 99, 99.9};
    for (size_t i = 0; i < sizeof(ps) / sizeof(ps[0]); i++) {
        double exact = ps[i] / 100.0 * 100000;
        double got = (double)tc__hist_percentile(h, ps[i]);
        assert_true(got >= exact * 0.99 && got <= exact * 1.01);
    }
    assert_int_equal(tc__hist_percentile(h, 100), 100000);
    /* Huge values land in the last bucket and never break max. */
    tc__hist_record(h, UINT64_MAX);
    assert_int_equal(tc__hist_percentile(h, 100), UINT64_MAX);
    assert_int_equal(h->min, 1);
    free(h);
}

/* ---- Retry-After ---------------------------------------------------------------------------- */

static void test_retry_after(void **state)
{
    (void)state;
    uint64_t ms = 0;
    const time_t now = 784111777; /* Sun, 06 Nov 1994 08:49:37 GMT */
    assert_int_equal(tc__retry_after_parse("120", now, 600000, &ms), 0);
    assert_int_equal(ms, 120000);
    assert_int_equal(tc__retry_after_parse(" 3 ", now, 600000, &ms), 0);
    assert_int_equal(ms, 3000);
    assert_int_equal(tc__retry_after_parse("0", now, 600000, &ms), 0);
    assert_int_equal(ms, 0);
    assert_int_equal(tc__retry_after_parse("99999999999999999999", now, 5000, &ms), 0);
    assert_int_equal(ms, 5000); /* capped, no overflow */
    assert_int_equal(tc__retry_after_parse("Sun, 06 Nov 1994 08:49:47 GMT", now, 600000, &ms), 0);
    assert_int_equal(ms, 10000);
    assert_int_equal(tc__retry_after_parse("Sunday, 06-Nov-94 08:50:37 GMT", now, 600000, &ms), 0);
    assert_int_equal(ms, 60000);
    assert_int_equal(tc__retry_after_parse("Sun Nov  6 08:49:40 1994", now, 600000, &ms), 0);
    assert_int_equal(ms, 3000);
    assert_int_equal(tc__retry_after_parse("Sun, 06 Nov 1994 08:00:00 GMT", now, 600000, &ms), 0);
    assert_int_equal(ms, 0); /* in the past */
    assert_int_equal(tc__retry_after_parse("Mon, 07 Nov 1994 08:49:37 GMT", now, 60000, &ms), 0);
    assert_int_equal(ms, 60000); /* a day later, capped */
    const char *bad[] = {"",
                         "  ",
                         "1.5",
                         "-1",
                         "+1",
                         "10s",
                         "soon",
                         "Sun, 06 Nov 1994 08:49:47",
                         "Sun, 06 Foo 1994 08:49:47 GMT",
                         "Sun, 32 Nov 1994 08:49:47 GMT",
                         "Sun, 06 Nov 1994 25:49:47 GMT",
                         "Sun, 06 Nov 1994 08:49:47 GMT junk"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ms = 12345;
        assert_int_equal(tc__retry_after_parse(bad[i], now, 600000, &ms), TC_EINVAL);
        assert_int_equal(ms, 12345);
    }
}

/* ---- JSON output ---------------------------------------------------------------------------- */

static json_t *parse_line(const tc__buf *b)
{
    assert_true(b->len > 0);
    assert_int_equal(b->data[b->len - 1], '\n');
    assert_null(memchr(b->data, '\n', b->len - 1)); /* one line */
    json_error_t err;
    json_t *j = json_loadb(b->data, b->len, 0, &err);
    if (j == NULL)
        fail_msg("invalid JSON line: %s (%.*s)", err.text, (int)b->len, b->data);
    return j;
}

static void test_json_string_escapes(void **state)
{
    (void)state;
    tc__buf b;
    tc__buf_init(&b, NULL, 0, SIZE_MAX);
    const char in[] = "a\"b\\c\n\t\x01\x1f/\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"
                      "\xff\xc3(\xed\xa0\x80\xc0\xaf end";
    assert_int_equal(tc__json_write_str(&b, in, sizeof(in) - 1), 0);
    json_error_t err;
    json_t *j = json_loadb(b.data, b.len, JSON_DECODE_ANY, &err);
    assert_non_null(j);
    const char *s = json_string_value(j);
    /* Valid UTF-8 and escapes round-trip; each invalid byte became U+FFFD. */
    const char want[] = "a\"b\\c\n\t\x01\x1f/\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"
                        "\xef\xbf\xbd\xef\xbf\xbd(\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"
                        "\xef\xbf\xbd\xef\xbf\xbd end";
    assert_int_equal(json_string_length(j), sizeof(want) - 1);
    assert_memory_equal(s, want, sizeof(want) - 1);
    json_decref(j);

    /* Embedded NUL bytes are escaped, not cut. */
    b.len = 0;
    assert_int_equal(tc__json_write_str(&b, "x\0y", 3), 0);
    assert_int_equal(b.len, 10);
    assert_memory_equal(b.data, "\"x\\u0000y\"", 10);
    tc__buf_reset(&b);
}

static void test_result_json(void **state)
{
    (void)state;
    tc__buf b;
    tc__buf_init(&b, NULL, 0, SIZE_MAX);
    tc_fetch_result r;
    memset(&r, 0, sizeof(r));
    r.url = "http://h/a?\"q\"";
    r.status = 200;
    r.ms = 12.3456;
    r.bytes = 5;
    r.body = "{\"a\"";
    r.bytes = 4;
    r.attempts = 1;
    assert_int_equal(tc__fetch_result_json(&b, &r, 0), 0);
    json_t *j = parse_line(&b);
    assert_string_equal(json_string_value(json_object_get(j, "url")), r.url);
    assert_int_equal(json_integer_value(json_object_get(j, "status")), 200);
    assert_true(json_real_value(json_object_get(j, "ms")) > 12.34 &&
                json_real_value(json_object_get(j, "ms")) < 12.35);
    assert_int_equal(json_integer_value(json_object_get(j, "bytes")), 4);
    assert_true(json_is_null(json_object_get(j, "error")));
    assert_null(json_object_get(j, "body"));
    assert_int_equal(json_object_size(j), 5);
    json_decref(j);

    b.len = 0;
    assert_int_equal(tc__fetch_result_json(&b, &r, 1), 0);
    j = parse_line(&b);
    assert_string_equal(json_string_value(json_object_get(j, "body")), "{\"a\"");
    json_decref(j);

    /* The exact bytes, numbers included. */
    const struct {
        int status;
        double ms;
        size_t bytes;
        const char *want;
    } exact[] = {
        {200, 12.3456, 4,
         "{\"url\":\"u\",\"status\":200,\"ms\":12.346,\"bytes\":4,\"error\":null}\n"},
        {0, 0, 0, "{\"url\":\"u\",\"status\":0,\"ms\":0.000,\"bytes\":0,\"error\":null}\n"},
        {599, 1234567.0005, 18446744073709551615ULL,
         "{\"url\":\"u\",\"status\":599,\"ms\":1234567.001,\"bytes\":18446744073709551615,"
         "\"error\":null}\n"},
        {-7, -3, 10, "{\"url\":\"u\",\"status\":-7,\"ms\":0.000,\"bytes\":10,\"error\":null}\n"},
    };
    for (size_t i = 0; i < sizeof(exact) / sizeof(exact[0]); i++) {
        tc_fetch_result e;
        memset(&e, 0, sizeof(e));
        e.url = "u";
        e.status = exact[i].status;
        e.ms = exact[i].ms;
        e.bytes = exact[i].bytes;
        b.len = 0;
        assert_int_equal(tc__fetch_result_json(&b, &e, 0), 0);
        assert_int_equal(b.len, strlen(exact[i].want));
        assert_memory_equal(b.data, exact[i].want, b.len);
    }

    memset(&r, 0, sizeof(r));
    r.url = "ftp://x";
    r.error = TC_EURL;
    r.message = "bad\nscheme";
    b.len = 0;
    assert_int_equal(tc__fetch_result_json(&b, &r, 1), 0);
    j = parse_line(&b);
    assert_int_equal(json_integer_value(json_object_get(j, "status")), 0);
    assert_string_equal(json_string_value(json_object_get(j, "error")), "bad\nscheme");
    assert_true(json_is_null(json_object_get(j, "body")));
    json_decref(j);
    tc__buf_reset(&b);
}

/* ---- the engine ----------------------------------------------------------------------------- */

#define MAX_URLS 4096

typedef struct run {
    uv_loop_t loop;
    uv_timer_t watchdog;
    tc_upstream *up[2];
    int ports[2];
    tc_fetch *f;
    /* source */
    char **urls;
    size_t nurls, next;
    size_t wait_every; /* answer WAIT after every this many items (0 = never) */
    size_t last_wait_at;
    int waiting;
    uv_timer_t resume_timer;
    /* results */
    unsigned char *seen; /* per input index */
    uint64_t *order;     /* index of each report, in report order */
    size_t nresults;
    int status_of[MAX_URLS];
    int error_of[MAX_URLS];
    unsigned attempts_of[MAX_URLS];
    double ms_of[MAX_URLS];
    double at_ms[MAX_URLS]; /* when reported, since the fetch started */
    size_t stop_after;      /* tc_fetch_stop from the callback after this many (0 = never) */
    size_t peak_held;
    int done_status;
    int done_calls;
    int closed;
    uint64_t start_ns, end_ns;
} run;

static void on_watchdog(uv_timer_t *t)
{
    (void)t;
    fail_msg("watchdog: test took too long");
}

static void run_init(run *r, const char *profile, int nups)
{
    memset(r, 0, sizeof(*r));
    assert_int_equal(uv_loop_init(&r->loop), 0);
    uv_timer_init(&r->loop, &r->watchdog);
    uv_timer_start(&r->watchdog, on_watchdog, 60000, 0);
    uv_unref((uv_handle_t *)&r->watchdog);
    uv_timer_init(&r->loop, &r->resume_timer);
    for (int i = 0; i < nups; i++) {
        tc_upstream_config cfg;
        tc_upstream_config_init(&cfg);
        cfg.profile = profile;
        cfg.seed = 7 + (uint64_t)i;
        cfg.seed_set = 1;
        assert_int_equal(tc_upstream_new(&r->up[i], &r->loop, &cfg), 0);
        r->ports[i] = tc_upstream_port(r->up[i]);
    }
    r->urls = calloc(MAX_URLS, sizeof(char *));
    r->seen = calloc(MAX_URLS, 1);
    r->order = calloc(MAX_URLS, sizeof(uint64_t));
    assert_non_null(r->urls);
    assert_non_null(r->seen);
    assert_non_null(r->order);
}

static void run_add(run *r, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    assert_true(r->nurls < MAX_URLS);
    r->urls[r->nurls] = strdup(buf);
    assert_non_null(r->urls[r->nurls]);
    r->nurls++;
}

static void on_resume(uv_timer_t *t)
{
    run *r = t->data;
    r->waiting = 0;
    tc_fetch_resume(r->f);
}

static tc_fetch_next src(void *data, tc_fetch_input *in)
{
    run *r = data;
    if (r->next >= r->nurls)
        return TC_FETCH_NEXT_END;
    if (r->waiting)
        return TC_FETCH_NEXT_WAIT;
    if (r->wait_every && r->next > 0 && r->next % r->wait_every == 0 &&
        r->last_wait_at != r->next) {
        r->last_wait_at = r->next; /* the next item comes "later" */
        r->waiting = 1;
        r->resume_timer.data = r;
        uv_timer_start(&r->resume_timer, on_resume, 1, 0);
        return TC_FETCH_NEXT_WAIT;
    }
    in->url = strdup(r->urls[r->next++]);
    return TC_FETCH_NEXT_URL;
}

static void on_res(tc_fetch *f, const tc_fetch_result *res, void *data)
{
    run *r = data;
    assert_true(res->index < r->nurls);
    assert_int_equal(r->seen[res->index], 0); /* exactly once */
    r->seen[res->index] = 1;
    assert_string_equal(res->url, r->urls[res->index]);
    r->status_of[res->index] = res->status;
    r->error_of[res->index] = res->error;
    r->attempts_of[res->index] = res->attempts;
    r->ms_of[res->index] = res->ms;
    r->at_ms[res->index] = (double)(uv_hrtime() - r->start_ns) / 1e6;
    if (res->error == 0)
        assert_non_null(res->body);
    r->order[r->nresults++] = res->index;
    tc_fetch_stats st;
    tc_fetch_get_stats(f, &st);
    if (st.held > r->peak_held)
        r->peak_held = st.held;
    if (r->stop_after && r->nresults == r->stop_after)
        tc_fetch_stop(f);
}

static void on_fetch_done(tc_fetch *f, int status, void *data)
{
    run *r = data;
    (void)f;
    r->done_calls++;
    r->done_status = status;
    r->end_ns = uv_hrtime();
    uv_stop(&r->loop);
}

static void on_fetch_closed(tc_fetch *f, void *data)
{
    (void)f;
    ((run *)data)->closed = 1;
}

/* Runs the fetch to its end; returns the done status. */
static int run_fetch(run *r, const tc_fetch_config *cfg)
{
    assert_int_equal(tc_fetch_new(&r->f, &r->loop, cfg, src, on_res, on_fetch_done, r), 0);
    r->start_ns = uv_hrtime();
    assert_int_equal(tc_fetch_start(r->f), 0);
    assert_int_equal(tc_fetch_start(r->f), TC_EINVAL);
    uv_run(&r->loop, UV_RUN_DEFAULT);
    assert_int_equal(r->done_calls, 1);
    return r->done_status;
}

static void run_finish(run *r)
{
    int had_fetch = r->f != NULL;
    if (had_fetch)
        tc_fetch_close(r->f, on_fetch_closed, r);
    for (int i = 0; i < 2; i++)
        if (r->up[i] != NULL)
            tc_upstream_close(r->up[i], NULL, NULL);
    uv_close((uv_handle_t *)&r->resume_timer, NULL);
    uv_run(&r->loop, UV_RUN_DEFAULT);
    if (had_fetch) {
        assert_int_equal(r->closed, 1);
        assert_int_equal(r->done_calls, 1);
    }
    uv_close((uv_handle_t *)&r->watchdog, NULL);
    uv_run(&r->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&r->loop), 0);
    for (size_t i = 0; i < r->nurls; i++)
        free(r->urls[i]);
    free(r->urls);
    free(r->seen);
    free(r->order);
}

static double elapsed_ms(const run *r)
{
    return (double)(r->end_ns - r->start_ns) / 1e6;
}

static void test_fetch_completion_all_once(void **state)
{
    (void)state;
    run r;
    run_init(&r, "uniform:0:20", 1);
    for (int i = 0; i < 300; i++)
        run_add(&r, "http://127.0.0.1:%d/api/work?i=%d", r.ports[0], i);
    run_add(&r, "ftp://example/x");
    run_add(&r, "http://127.0.0.1:%d/nothere", r.ports[0]);
    r.wait_every = 97; /* the source runs dry now and then */
    tc_fetch_config cfg;
    tc_fetch_config_init(&cfg);
    cfg.concurrency = 16;
    assert_int_equal(run_fetch(&r, &cfg), 0);
    assert_int_equal(r.nresults, r.nurls);
    for (int i = 0; i < 300; i++) {
        assert_int_equal(r.status_of[i], 200);
        assert_int_equal(r.attempts_of[i], 1);
    }
    assert_int_equal(r.error_of[300], TC_EURL);
    assert_int_equal(r.status_of[300], 0);
    assert_int_equal(r.status_of[301], 404);
    tc_fetch_stats st;
    tc_fetch_get_stats(r.f, &st);
    assert_int_equal(st.taken, r.nurls);
    assert_int_equal(st.reported, r.nurls);
    assert_int_equal(st.active, 0);
    assert_int_equal(st.retries, 0);
    run_finish(&r);
}

static void test_fetch_input_order_bounded_window(void **state)
{
    (void)state;
    run r;
    run_init(&r, "uniform:0:40", 1);
    for (int i = 0; i < 400; i++)
        run_add(&r, "http://127.0.0.1:%d/api/work?i=%d", r.ports[0], i);
    tc_fetch_config cfg;
    tc_fetch_config_init(&cfg);
    cfg.concurrency = 10;
    cfg.order = TC_FETCH_INPUT;
    assert_int_equal(run_fetch(&r, &cfg), 0);
    assert_int_equal(r.nresults, 400);
    for (size_t i = 0; i < r.nresults; i++)
        assert_int_equal(r.order[i], i);
    tc_fetch_stats st;
    tc_fetch_get_stats(r.f, &st);
    assert_true(st.peak_held > 0); /* reordering did happen */
    assert_true(st.peak_held <= cfg.concurrency + TC_FETCH_ORDER_SLACK);
    run_finish(&r);
}

static void test_fetch_per_host_cap_serialises(void **state)
{
    (void)state;
    run r;
    run_init(&r, "fixed:100", 2);
    /* Two hosts (one spelled with an upper-case scheme) get 6 requests each under a cap of 2
     * per host: at least three rounds of 100 ms for each, whatever the total cap allows. */
    for (int i = 0; i < 6; i++) {
        run_add(&r, "http://127.0.0.1:%d/api/work?a=%d", r.ports[0], i);
        run_add(&r, "HTTP://127.0.0.1:%d/api/work?b=%d", r.ports[1], i);
    }
    tc_fetch_config cfg;
    tc_fetch_config_init(&cfg);
    cfg.concurrency = 20;
    cfg.per_host = 2;
    assert_int_equal(run_fetch(&r, &cfg), 0);
    assert_int_equal(r.nresults, 12);
    for (size_t i = 0; i < 12; i++)
        assert_int_equal(r.status_of[i], 200);
    assert_true(elapsed_ms(&r) >= 295);
    /* Each host's last result came after three rounds; ms excludes the wait for a host slot,
     * so no single request took that long. */
    for (int host = 0; host < 2; host++) {
        double last = 0;
        for (size_t i = (size_t)host; i < 12; i += 2) {
            last = r.at_ms[i] > last ? r.at_ms[i] : last;
            assert_true(r.ms_of[i] >= 95);
        }
        assert_true(last >= 295);
    }
    run_finish(&r);
}

static void test_fetch_concurrency_cap(void **state)
{
    (void)state;
    run r;
    run_init(&r, "fixed:100", 1);
    for (int i = 0; i < 12; i++)
        run_add(&r, "http://127.0.0.1:%d/api/work?i=%d", r.ports[0], i);
    tc_fetch_config cfg;
    tc_fetch_config_init(&cfg);
    cfg.concurrency = 4;
    assert_int_equal(run_fetch(&r, &cfg), 0);
    assert_int_equal(r.nresults, 12);
    assert_true(elapsed_ms(&r) >= 295); /* 12 / 4 = 3 rounds of 100 ms */
    run_finish(&r);
}

static void test_fetch_retries_connection_refused(void **state)
{
    (void)state;
    run r;
    run_init(&r, "fixed:0", 1);
    /* A port that was just free: refused (retryable), then the limit. */
    uv_tcp_t probe;
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", 0, &sa);
    uv_tcp_init(&r.loop, &probe);
    assert_int_equal(uv_tcp_bind(&probe, (const struct sockaddr *)&sa, 0), 0);
    int len = sizeof(sa);
    uv_tcp_getsockname(&probe, (struct sockaddr *)&sa, &len);
    int dead_port = ntohs(sa.sin_port);
    uv_close((uv_handle_t *)&probe, NULL);
    uv_run(&r.loop, UV_RUN_NOWAIT);
    run_add(&r, "http://127.0.0.1:%d/", dead_port);
    run_add(&r, "http://127.0.0.1:%d/nothere", r.ports[0]); /* 404: never retried */
    tc_fetch_config cfg;
    tc_fetch_config_init(&cfg);
    cfg.retries = 3;
    cfg.backoff_base_ms = 40;
    assert_int_equal(run_fetch(&r, &cfg), 0);
    assert_int_equal(r.error_of[0], TC_ECONNREFUSED);
    assert_int_equal(r.attempts_of[0], 4);
    /* Waits of 20..40, 40..80, 80..160 ms. */
    assert_true(r.ms_of[0] >= 140);
    assert_int_equal(r.status_of[1], 404);
    assert_int_equal(r.attempts_of[1], 1);
    tc_fetch_stats st;
    tc_fetch_get_stats(r.f, &st);
    assert_int_equal(st.retries, 3);
    assert_int_equal(st.attempts, 5);
    run_finish(&r);
}

static void test_fetch_stop_from_callback(void **state)
{
    (void)state;
    run r;
    run_init(&r, "straggler:0:5000:0.5", 1);
    for (int i = 0; i < 200; i++)
        run_add(&r, "http://127.0.0.1:%d/api/work?i=%d", r.ports[0], i);
    r.stop_after = 5;
    tc_fetch_config cfg;
    tc_fetch_config_init(&cfg);
    cfg.concurrency = 20;
    assert_int_equal(run_fetch(&r, &cfg), TC_ECANCELED);
    assert_int_equal(r.nresults, 5);
    assert_true(elapsed_ms(&r) < 4000); /* slow ones were cancelled, not waited for */
    tc_fetch_stats st;
    tc_fetch_get_stats(r.f, &st);
    assert_int_equal(st.reported, 5);
    assert_int_equal(st.taken, st.reported + st.cancelled);
    assert_int_equal(st.active, 0);
    assert_int_equal(st.held, 0);
    tc_fetch_stop(r.f); /* again: harmless */
    run_finish(&r);
}

static void on_stop_timer(uv_timer_t *t)
{
    run *r = t->data;
    tc_fetch_stats st;
    tc_fetch_get_stats(r->f, &st);
    r->peak_held = st.held;
    tc_fetch_stop(r->f);
}

static void test_fetch_input_order_stalled_head_then_stop(void **state)
{
    (void)state;
    run r;
    run_init(&r, "fixed:0", 2);
    tc_upstream_close(r.up[1], NULL, NULL); /* replaced by a slow one */
    tc_upstream_config ucfg;
    tc_upstream_config_init(&ucfg);
    ucfg.profile = "fixed:5000";
    assert_int_equal(tc_upstream_new(&r.up[1], &r.loop, &ucfg), 0);
    r.ports[1] = tc_upstream_port(r.up[1]);
    run_add(&r, "http://127.0.0.1:%d/api/work?head", r.ports[1]);
    for (int i = 1; i < 1000; i++)
        run_add(&r, "http://127.0.0.1:%d/api/work?i=%d", r.ports[0], i);
    tc_fetch_config cfg;
    tc_fetch_config_init(&cfg);
    cfg.concurrency = 8;
    cfg.order = TC_FETCH_INPUT;
    uv_timer_t stop_timer;
    uv_timer_init(&r.loop, &stop_timer);
    stop_timer.data = &r;
    uv_timer_start(&stop_timer, on_stop_timer, 500, 0);
    assert_int_equal(tc_fetch_new(&r.f, &r.loop, &cfg, src, on_res, on_fetch_done, &r), 0);
    r.start_ns = uv_hrtime();
    assert_int_equal(tc_fetch_start(r.f), 0);
    uv_run(&r.loop, UV_RUN_DEFAULT);
    assert_int_equal(r.done_calls, 1);
    assert_int_equal(r.done_status, TC_ECANCELED);
    /* The head never finished: nothing was reported, reading stopped at the window, and what
     * finished behind the head was held (at most the window minus the head), then dropped. */
    assert_int_equal(r.nresults, 0);
    assert_int_equal(r.peak_held, cfg.concurrency + TC_FETCH_ORDER_SLACK - 1);
    tc_fetch_stats st;
    tc_fetch_get_stats(r.f, &st);
    assert_int_equal(st.taken, cfg.concurrency + TC_FETCH_ORDER_SLACK);
    assert_int_equal(st.cancelled, st.taken);
    assert_int_equal(st.held, 0);
    assert_int_equal(st.active, 0);
    uv_close((uv_handle_t *)&stop_timer, NULL);
    run_finish(&r);
}

static void test_fetch_many_sync_failures(void **state)
{
    (void)state;
    run r;
    run_init(&r, "fixed:0", 1);
    /* Every one fails synchronously inside the client (bad port), all under one per-host key
     * with a cap of 1: each is reported once and nothing recurses or leaks. */
    for (int i = 0; i < MAX_URLS - 1; i++)
        run_add(&r, "http://127.0.0.1:%d:bad/%d", r.ports[0], i);
    tc_fetch_config cfg;
    tc_fetch_config_init(&cfg);
    cfg.concurrency = 2000;
    cfg.per_host = 1;
    assert_int_equal(run_fetch(&r, &cfg), 0);
    assert_int_equal(r.nresults, MAX_URLS - 1);
    for (size_t i = 0; i < r.nresults; i++)
        assert_int_not_equal(r.error_of[i], 0);
    run_finish(&r);
}

static void test_fetch_close_without_start_and_bad_args(void **state)
{
    (void)state;
    run r;
    run_init(&r, "fixed:0", 0);
    tc_fetch_config cfg;
    tc_fetch_config_init(&cfg);
    tc_fetch *f = NULL;
    assert_int_equal(tc_fetch_new(&f, &r.loop, &cfg, NULL, on_res, on_fetch_done, &r), TC_EINVAL);
    cfg.concurrency = 0;
    assert_int_equal(tc_fetch_new(&f, &r.loop, &cfg, src, on_res, on_fetch_done, &r), TC_EINVAL);
    cfg.concurrency = 3;
    assert_int_equal(tc_fetch_new(&r.f, &r.loop, &cfg, src, on_res, on_fetch_done, &r), 0);
    tc_fetch_close(r.f, on_fetch_closed, &r);
    r.f = NULL;
    run_finish(&r);
    assert_int_equal(r.closed, 1);
    assert_int_equal(r.done_calls, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hist_exact_small_values),
        cmocka_unit_test(test_hist_relative_error),
        cmocka_unit_test(test_retry_after),
        cmocka_unit_test(test_json_string_escapes),
        cmocka_unit_test(test_result_json),
        cmocka_unit_test(test_fetch_completion_all_once),
        cmocka_unit_test(test_fetch_input_order_bounded_window),
        cmocka_unit_test(test_fetch_per_host_cap_serialises),
        cmocka_unit_test(test_fetch_concurrency_cap),
        cmocka_unit_test(test_fetch_retries_connection_refused),
        cmocka_unit_test(test_fetch_stop_from_callback),
        cmocka_unit_test(test_fetch_input_order_stalled_head_then_stop),
        cmocka_unit_test(test_fetch_many_sync_failures),
        cmocka_unit_test(test_fetch_close_without_start_and_bad_args),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
