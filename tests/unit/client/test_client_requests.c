/*
 * Tests for the pooled HTTP client (src/client*.c): responses, errors and time (timeouts and
 * deadlines), on both engines. The test server is client_fixture.h.
 */
#include "client_fixture.h"

/* ---- tests: responses ----------------------------------------------------------------------- */

static void test_get_content_length(void **state)
{
    (void)state;
    tctx *t = cfx_new(NULL);
    tc_future *f = cfx_get(t, &t->s, "/ok", 0);
    const tc_response *r = cfx_expect_response(t, f, 200);
    assert_int_equal(r->body_len, 2);
    assert_string_equal(r->body, "ok");
    assert_int_equal(r->http_version, 11);
    assert_true(strncmp(r->headers, "HTTP/1.1 200", 12) == 0);
    assert_int_equal(strlen(r->headers), r->headers_len);
    char v[32];
    assert_int_equal(tc_response_header(r, "content-length", v, sizeof(v)), 1);
    assert_string_equal(v, "2");
    assert_int_equal(tc_response_header(r, "CONTENT-TYPE", v, 5), 10); /* truncated copy */
    assert_string_equal(v, "text");
    assert_int_equal(tc_response_header(r, "X-Missing", v, sizeof(v)), -1);
    assert_true(r->total_ms >= 0.0);
    assert_true(r->queued_ms >= 0.0 && r->queued_ms <= r->total_ms);
    tc_client_stats st;
    tc_client_get_stats(t->client, &st);
    assert_int_equal(st.started, 1);
    assert_int_equal(st.completed, 1);
    assert_int_equal(st.open_connections, 1); /* kept alive */
    cfx_expect_stats_settled(t);
    tc_future_unref(f);
    cfx_finish(t);
}

static void test_get_chunked_and_large_body(void **state)
{
    (void)state;
    tctx *t = cfx_new(NULL);
    tc_future *f1 = cfx_get(t, &t->s, "/chunked", 0);
    tc_future *f2 = cfx_get(t, &t->s, "/ok?n=300000", 0);
    const tc_response *r1 = cfx_expect_response(t, f1, 200);
    assert_string_equal(r1->body, "hello world");
    assert_int_equal(r1->body_len, 11);
    assert_null(strstr(r1->headers, "X-Trailer")); /* trailers are not the header block */
    const tc_response *r2 = cfx_expect_response(t, f2, 200);
    assert_int_equal(r2->body_len, 300000);
    assert_int_equal(r2->body[0], 'x');
    assert_int_equal(r2->body[299999], 'x');
    assert_int_equal(r2->body[300000], '\0');
    tc_future_unref(f1);
    tc_future_unref(f2);
    cfx_finish(t);
}

static void test_post_with_headers_and_status(void **state)
{
    (void)state;
    tctx *t = cfx_new(NULL);
    tc_header hdrs[] = {{"X-Test", "hello-header"}, {"X-Empty", ""}};
    tc_client_request req = {.method = "POST",
                             .url = cfx_url(t, &t->s, "/echo"),
                             .headers = hdrs,
                             .nheaders = 2,
                             .body = "payload",
                             .body_len = 7};
    tc_future *f = NULL;
    assert_int_equal(tc_client_request_start(&f, t->client, &req), 0);
    const tc_response *r = cfx_expect_response(t, f, 200);
    assert_string_equal(r->body, "POST|payload|hello-header");
    tc_future_unref(f);

    req.method = "PUT";
    req.url = cfx_url(t, &t->s, "/echo");
    assert_int_equal(tc_client_request_start(&f, t->client, &req), 0);
    r = cfx_expect_response(t, f, 200);
    assert_string_equal(r->body, "PUT|payload|hello-header");
    tc_future_unref(f);

    /* A head over the client's scratch buffer (TC__NATIVE_HEAD_SCRATCH) is written in full. */
    char big[3000];
    memset(big, 'b', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    tc_header big_hdrs[] = {{"X-Big", big}, {"X-Test", "after-big"}};
    req.method = "POST";
    req.url = cfx_url(t, &t->s, "/echo");
    req.headers = big_hdrs;
    assert_int_equal(tc_client_request_start(&f, t->client, &req), 0);
    r = cfx_expect_response(t, f, 200);
    assert_string_equal(r->body, "POST|payload|after-big");
    tc_future_unref(f);

    /* HEAD: headers only. */
    tc_client_request head = {.method = "HEAD", .url = cfx_url(t, &t->s, "/ok")};
    assert_int_equal(tc_client_request_start(&f, t->client, &head), 0);
    r = cfx_expect_response(t, f, 200);
    assert_int_equal(r->body_len, 0);
    assert_string_equal(r->body, "");
    tc_future_unref(f);

    /* Any status is a response, not an error. */
    f = cfx_get(t, &t->s, "/status?code=503", 0);
    r = cfx_expect_response(t, f, 503);
    assert_string_equal(r->body, "status");
    tc_future_unref(f);
    cfx_expect_stats_settled(t);
    cfx_finish(t);
}

static void test_redirects_off_by_default(void **state)
{
    (void)state;
    tctx *t = cfx_new(NULL);
    tc_future *f = cfx_get(t, &t->s, "/redirect", 0);
    const tc_response *r = cfx_expect_response(t, f, 302);
    char loc[64];
    assert_int_equal(tc_response_header(r, "location", loc, sizeof(loc)), 3);
    assert_string_equal(loc, "/ok");
    tc_future_unref(f);
    cfx_finish(t);

    tc_client_config cfg;
    tc_client_config_init(&cfg);
    cfg.follow_redirects = 1;
    t = cfx_new(&cfg);
    f = cfx_get(t, &t->s, "/redirect", 0);
    r = cfx_expect_response(t, f, 200);
    assert_string_equal(r->body, "ok");
    assert_int_equal(tc_response_header(r, "location", NULL, 0), -1); /* last block only */
    tc_future_unref(f);
    cfx_finish(t);
}

/* ---- tests: errors -------------------------------------------------------------------------- */

static void test_bad_arguments_and_urls(void **state)
{
    (void)state;
    tctx *t = cfx_new(NULL);
    tc_future *f = NULL;
    tc_client_request req = {.url = NULL};
    assert_int_equal(tc_client_request_start(&f, t->client, &req), TC_EINVAL);
    assert_int_equal(tc_client_request_start(NULL, t->client, &req), TC_EINVAL);
    tc_header bad[] = {{"X-Evil", "a\r\nInjected: 1"}};
    tc_client_request inj = {.url = "http://127.0.0.1:1/", .headers = bad, .nheaders = 1};
    assert_int_equal(tc_client_request_start(&f, t->client, &inj), TC_EINVAL);
    tc_client_request badm = {.url = "http://127.0.0.1:1/", .method = "GE T"};
    assert_int_equal(tc_client_request_start(&f, t->client, &badm), TC_EINVAL);
    assert_null(f);

    const char *bad_urls[] = {"ftp://127.0.0.1/", "not a url", "http:///nohost",
                              "http://127.0.0.1:99999/", "//127.0.0.1/"};
    for (size_t i = 0; i < sizeof(bad_urls) / sizeof(bad_urls[0]); i++) {
        assert_int_equal(tc_client_get(&f, t->client, bad_urls[i]), 0);
        cfx_expect_error(t, f, TC_EURL);
        tc_future_unref(f);
    }
    cfx_expect_stats_settled(t);
    cfx_finish(t);
}

static void test_connection_refused(void **state)
{
    (void)state;
    tctx *t = cfx_new(NULL);
    /* Bind a port, then close it: nothing listens there now. */
    struct sockaddr_in a;
    close(cfx_loopback_socket(-1, &a));
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", ntohs(a.sin_port));
    tc_future *f = NULL;
    assert_int_equal(tc_client_get(&f, t->client, url), 0);
    cfx_expect_error(t, f, TC_ECONNREFUSED);
    tc_future_unref(f);
    cfx_expect_stats_settled(t);
    cfx_finish(t);
}

static void test_dns_failure(void **state)
{
    (void)state;
    tctx *t = cfx_new(NULL);
    tc_future *f = NULL;
    assert_int_equal(tc_client_get(&f, t->client, "http://no-such-host.invalid/"), 0);
    cfx_expect_error(t, f, TC_EDNS);
    assert_non_null(strstr(tc_future_message(f), "no-such-host.invalid"));
    tc_future_unref(f);
    cfx_finish(t);
}

static void test_reset_and_truncation(void **state)
{
    (void)state;
    tctx *t = cfx_new(NULL);
    tc_future *f = cfx_get(t, &t->s, "/reset", 0);
    cfx_expect_error(t, f, TC_ECONNRESET);
    tc_future_unref(f);
    f = cfx_get(t, &t->s, "/reset-mid", 0);
    cfx_expect_error(t, f, TC_ECONNRESET);
    tc_future_unref(f);
    f = cfx_get(t, &t->s, "/close-mid", 0);
    cfx_expect_error(t, f, TC_ECONNRESET);
    tc_future_unref(f);
    cfx_expect_stats_settled(t);
    cfx_finish(t);
}

static void test_malformed_responses(void **state)
{
    (void)state;
    tctx *t = cfx_new(NULL);
    tc_future *f = cfx_get(t, &t->s, "/garbage", 0);
    cfx_expect_error(t, f, TC_EPROTO);
    tc_future_unref(f);
    f = cfx_get(t, &t->s, "/badstatus", 0);
    cfx_expect_error(t, f, TC_EPROTO);
    tc_future_unref(f);
    f = cfx_get(t, &t->s, "/bigheaders", 0);
    cfx_expect_error(t, f, TC_EPROTO);
    /* h1_parse's reason TC__H1_HEADERS_TOO_LARGE, worded by the engine with the limit. */
    assert_non_null(strstr(tc_future_message(f), ": response headers larger than 65536 bytes"));
    tc_future_unref(f);
    cfx_finish(t);
}

static void test_body_too_large(void **state)
{
    (void)state;
    tc_client_config cfg;
    tc_client_config_init(&cfg);
    cfg.max_body = 100000;
    tctx *t = cfx_new(&cfg);
    /* Exactly at the limit is fine. */
    tc_future *f = cfx_get(t, &t->s, "/ok?n=100000", 0);
    cfx_expect_response(t, f, 200);
    tc_future_unref(f);
    /* Announced too large: rejected from the headers. */
    f = cfx_get(t, &t->s, "/huge", 0);
    cfx_expect_error(t, f, TC_ETOOLARGE);
    tc_future_unref(f);
    /* Streamed without a length: aborted as soon as the limit is crossed. */
    int closed_before = t->s.peer_closed;
    f = cfx_get(t, &t->s, "/huge-chunked", 0);
    cfx_expect_error(t, f, TC_ETOOLARGE);
    tc_future_unref(f);
    /* Per-request limit overrides the client's. */
    tc_client_request req = {.url = cfx_url(t, &t->s, "/ok?n=5000"), .max_body = 4999};
    assert_int_equal(tc_client_request_start(&f, t->client, &req), 0);
    cfx_expect_error(t, f, TC_ETOOLARGE);
    tc_future_unref(f);
    /* The server saw the streaming connection closed, long before the stream's end. */
    assert_true(cfx_run_until_count(t, &t->s.peer_closed, closed_before + 1, 5000) >=
                closed_before + 1);
    assert_true(t->s.huge_streamed < 16u << 20);
    cfx_expect_stats_settled(t);
    cfx_finish(t);
}

static void test_tls_to_plain_server(void **state)
{
    (void)state;
    tctx *t = cfx_new(NULL);
    char url[64];
    snprintf(url, sizeof(url), "https://127.0.0.1:%d/ok", t->s.port);
    tc_future *f = NULL;
    assert_int_equal(tc_client_get(&f, t->client, url), 0);
    cfx_expect_error(t, f, TC_ETLS);
    tc_future_unref(f);
    cfx_finish(t);
}

/* ---- tests: time ---------------------------------------------------------------------------- */
static void test_timeout_hold_and_trickle(void **state)
{
    (void)state;
    tctx *t = cfx_new(NULL);
    uint64_t start = uv_hrtime();
    tc_future *f = cfx_get(t, &t->s, "/hold", 200);
    cfx_expect_error(t, f, TC_ETIMEDOUT);
    double ms = cfx_elapsed_ms(start);
    print_message("deadline 200 ms: rejected after %.2f ms\n", ms);
    assert_true(ms >= 195.0);
    assert_true(ms < 1500.0);
    tc_future_unref(f);

    /* Bytes keep arriving, but the whole request has a deadline. */
    start = uv_hrtime();
    f = cfx_get(t, &t->s, "/trickle", 300);
    cfx_expect_error(t, f, TC_ETIMEDOUT);
    ms = cfx_elapsed_ms(start);
    assert_true(ms >= 295.0);
    assert_true(ms < 1500.0);
    tc_future_unref(f);
    /* Both connections were closed, not returned to the pool. */
    assert_int_equal(cfx_run_until_count(t, &t->s.peer_closed, 2, 3000), 2);
    cfx_expect_stats_settled(t);
    cfx_finish(t);
}

static void test_queue_time_counts_toward_timeout(void **state)
{
    (void)state;
    tctx *t = cfx_new_pool(1, 0);
    tc_future *slow = cfx_get(t, &t->s, "/delay?ms=700", 5000);
    uint64_t start = uv_hrtime();
    tc_future *queued = cfx_get(t, &t->s, "/ok", 250);
    cfx_expect_error(t, queued, TC_ETIMEDOUT);
    double ms = cfx_elapsed_ms(start);
    print_message("deadline 250 ms while queued: rejected after %.2f ms\n", ms);
    assert_true(ms >= 245.0);
    assert_true(ms < 650.0); /* long before the slow request frees the connection */
    assert_non_null(strstr(tc_future_message(queued), "queued"));
    assert_false(tc_future_done(slow));
    const tc_response *r = cfx_expect_response(t, slow, 200);
    assert_string_equal(r->body, "late");
    tc_client_stats st;
    tc_client_get_stats(t->client, &st);
    assert_int_equal(st.queued, 1);
    assert_int_equal(st.failed, 1);
    assert_int_equal(t->s.requests, 1); /* the timed-out request never reached the server */
    tc_future_unref(slow);
    tc_future_unref(queued);
    cfx_finish(t);
}

/* The running request and the one queued behind it expire together: the freed slot must not
 * start the queued one (it is already late), and both report why. */
static void test_simultaneous_deadlines(void **state)
{
    (void)state;
    tc_client_config cfg;
    tc_client_config_init(&cfg);
    cfg.max_connections = 1;
    cfg.timeout_ms = 250;
    tctx *t = cfx_new(&cfg);
    tc_future *running = cfx_get(t, &t->s, "/hold", 0);
    tc_future *queued = cfx_get(t, &t->s, "/ok", 0);
    cfx_expect_error(t, running, TC_ETIMEDOUT);
    cfx_expect_error(t, queued, TC_ETIMEDOUT);
    assert_null(strstr(tc_future_message(running), "queued"));
    assert_non_null(strstr(tc_future_message(queued), "queued"));
    cfx_run_for(t, 50);
    assert_int_equal(t->s.requests, 1);
    assert_int_equal(t->s.conns_total, 1);
    tc_future_unref(running);
    tc_future_unref(queued);
    cfx_expect_stats_settled(t);
    cfx_finish(t);
}

static void test_connect_timeout(void **state)
{
    (void)state;
    /* A listener whose accept queue is full drops SYNs: connect() hangs. */
    struct sockaddr_in a;
    int lfd = cfx_loopback_socket(0, &a);
    int fillers[4];
    for (int i = 0; i < 4; i++) {
        fillers[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        assert_true(fillers[i] >= 0);
        (void)connect(fillers[i], (struct sockaddr *)&a, sizeof(a));
    }
    tc_client_config cfg;
    tc_client_config_init(&cfg);
    cfg.connect_timeout_ms = 200;
    tctx *t = cfx_new(&cfg);
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", ntohs(a.sin_port));
    uint64_t start = uv_hrtime();
    tc_future *f = NULL;
    assert_int_equal(tc_client_get(&f, t->client, url), 0);
    cfx_expect_error(t, f, TC_ETIMEDOUT);
    double ms = cfx_elapsed_ms(start);
    assert_true(ms >= 190.0);
    assert_true(ms < 2000.0);
    tc_future_unref(f);
    cfx_finish(t);
    for (int i = 0; i < 4; i++)
        close(fillers[i]);
    close(lfd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get_content_length),
        cmocka_unit_test(test_get_chunked_and_large_body),
        cmocka_unit_test(test_post_with_headers_and_status),
        cmocka_unit_test(test_redirects_off_by_default),
        cmocka_unit_test(test_bad_arguments_and_urls),
        cmocka_unit_test(test_connection_refused),
        cmocka_unit_test(test_dns_failure),
        cmocka_unit_test(test_reset_and_truncation),
        cmocka_unit_test(test_malformed_responses),
        cmocka_unit_test(test_body_too_large),
        cmocka_unit_test(test_tls_to_plain_server),
        cmocka_unit_test(test_timeout_hold_and_trickle),
        cmocka_unit_test(test_queue_time_counts_toward_timeout),
        cmocka_unit_test(test_simultaneous_deadlines),
        cmocka_unit_test(test_connect_timeout),
    };
    return cfx_run_on_both_engines(tests, sizeof(tests) / sizeof(tests[0]));
}
