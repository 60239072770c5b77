/*
 * Tests for the pooled HTTP client (src/client*.c): HTTP/1.1 details (interim answers, HTTP/1.0,
 * stale pooled connections, aborts, write errors), on both engines. The test server is
 * client_fixture.h.
 */
#include "client_fixture.h"

/* ---- tests: HTTP/1.1 details ----------------------------------------------------------------- */

static void test_interim_close_and_http10(void **state)
{
    (void)state;
    tctx *t = cfx_new(NULL);
    tc_future *f = cfx_get(t, &t->s, "/interim", 0);
    const tc_response *r = cfx_expect_response(t, f, 200);
    assert_string_equal(r->body, "final");
    assert_true(strncmp(r->headers, "HTTP/1.1 200", 12) == 0); /* only the final header block */
    assert_null(strstr(r->headers, "Early"));
    tc_future_unref(f);

    f = cfx_get(t, &t->s, "/close", 0);
    r = cfx_expect_response(t, f, 200);
    assert_string_equal(r->body, "bye");
    tc_future_unref(f);
    f = cfx_get(t, &t->s, "/http10", 0);
    r = cfx_expect_response(t, f, 200);
    assert_string_equal(r->body, "old!");
    assert_int_equal(r->http_version, 10);
    tc_future_unref(f);
    f = cfx_get(t, &t->s, "/eof-body", 0);
    r = cfx_expect_response(t, f, 200);
    assert_string_equal(r->body, "until eof");
    tc_future_unref(f);
    f = cfx_get(t, &t->s, "/chunked-ext", 0);
    r = cfx_expect_response(t, f, 200);
    assert_string_equal(r->body, "ab\r\ncd");
    assert_null(strstr(r->headers, "X-T1")); /* trailers are not the header block */
    tc_future_unref(f);
    /* Connection: close, HTTP/1.0 and a close-delimited body each used up their connection. */
    cfx_run_for(t, 50);
    assert_int_equal(t->s.conns_total, 4);
    cfx_expect_stats_settled(t);
    cfx_finish(t);
}

/* The server closes an idle pooled connection: the client sees it at once (an idle connection
 * keeps reading), so the next request goes on a new connection without any retry. Then a
 * request cancelled while its response head is half in is reset like any abort. */
static void test_idle_close_and_cancel_mid_head(void **state)
{
    (void)state;
    tctx *t = cfx_new(NULL);
    tc_future *f = cfx_get(t, &t->s, "/close-idle", 0);
    const tc_response *r = cfx_expect_response(t, f, 200);
    assert_string_equal(r->body, "bye soon");
    tc_future_unref(f);
    cfx_run_for(t, 200); /* the server has closed it by now */
    tc_client_stats st;
    tc_client_get_stats(t->client, &st);
    if (cfx_engine != TC_CLIENT_ENGINE_CURL) /* libcurl notices only when it next looks */
        assert_int_equal(st.open_connections, 0);
    f = cfx_get(t, &t->s, "/ok", 0);
    cfx_expect_response(t, f, 200);
    tc_future_unref(f);
    tc_client_get_stats(t->client, &st);
    assert_int_equal(st.stale_retries, 0);
    assert_int_equal(t->s.requests, 2); /* nothing sent twice */
    assert_int_equal(t->s.conns_total, 2);

    f = cfx_get(t, &t->s, "/partial-head", 0);
    assert_true(cfx_run_until_flag(t, &t->s.partial_sent, 5000));
    cfx_run_for(t, 50); /* the client has read the half head */
    assert_false(tc_future_done(f));
    int closed_before = t->s.peer_closed;
    assert_int_equal(tc_future_cancel(f), 1);
    tc_future_unref(f);
    assert_int_equal(cfx_run_until_count(t, &t->s.peer_closed, closed_before + 1, 3000),
                     closed_before + 1);
    cfx_expect_stats_settled(t);
    cfx_finish(t);
}

/* A server's shorter Keep-Alive timeout (1 s) is kept: the client closes the idle connection
 * first (after half of it), counted from the end of its last use, however often it was reused
 * before. */
static void test_announced_keep_alive_timeout(void **state)
{
    (void)state;
    tctx *t = cfx_new(NULL);
    for (int i = 0; i < 3; i++) {
        tc_future *f = cfx_get(t, &t->s, "/keep-alive-1s", 0);
        const tc_response *r = cfx_expect_response(t, f, 200);
        assert_string_equal(r->body, "ka");
        tc_future_unref(f);
        if (i < 2)
            cfx_run_for(t, 300); /* idle for less than 500 ms, then used again */
    }
    uint64_t idle_from = uv_now(&t->loop);
    assert_int_equal(t->s.conns_total, 1);     /* one connection, reused */
    if (cfx_engine == TC_CLIENT_ENGINE_CURL) { /* libcurl keeps its own idle rules */
        cfx_expect_stats_settled(t);
        cfx_finish(t);
        return;
    }
    assert_int_equal(cfx_run_until_count(t, &t->s.peer_closed, 1, 5000), 1);
    assert_true(uv_now(&t->loop) - idle_from >= 450); /* never before its idle spell ends */
    tc_client_stats st;
    tc_client_get_stats(t->client, &st);
    assert_int_equal(st.open_connections, 0);
    cfx_expect_stats_settled(t);
    cfx_finish(t);
}

/* A request on t's server that asks for the stale-connection re-send (resend 1) or not. */
static tc_future *request_resend(tctx *t, const char *method, const char *path, int resend)
{
    tc_client_request req;
    memset(&req, 0, sizeof(req));
    req.method = method;
    req.url = cfx_url(t, &t->s, path);
    req.resend_stale = resend;
    if (strcmp(method, "POST") == 0) {
        req.body = "x";
        req.body_len = 1;
    }
    tc_future *f = NULL;
    assert_int_equal(tc_client_request_start(&f, t->client, &req), 0);
    return f;
}

/* Without the re-send (the default), a request is sent once: a pooled connection that dies
 * before any answer byte, closed as the request arrives or reset 50 ms after it, fails the
 * request with TC_ESTALE (so that its caller can tell this case apart and send elsewhere), and
 * the server never sees it twice. libcurl would re-send it on its own; the client stops that
 * before a byte of the copy is written. (A fresh connection that dies so is a plain
 * TC_ECONNRESET: test_reset_and_truncation.) */
static void test_stale_pooled_connection_fails_without_resend(void **state)
{
    (void)state;
    static const char *const paths[] = {"/die-on-reuse", "/die-on-reuse?reset=1&ms=50"};
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        tctx *t = cfx_new(NULL);
        tc_future *f = request_resend(t, "GET", paths[i], 0);
        cfx_expect_response(t, f, 200);
        tc_future_unref(f);
        uint64_t sent = uv_hrtime();
        f = request_resend(t, "GET", paths[i], 0);
        cfx_expect_error(t, f, TC_ESTALE);
        tc_future_unref(f);
        if (i == 1)
            assert_true(cfx_elapsed_ms(sent) >= 50 - 2); /* at the reset, not before */
        cfx_run_for(t, 100); /* a copy sent on a fresh connection would have arrived by now */
        assert_int_equal(t->s.requests, 2);
        tc_client_stats st;
        tc_client_get_stats(t->client, &st);
        assert_int_equal(st.stale_retries, 0);
        assert_int_equal(st.failed, 1);
        cfx_expect_stats_settled(t);
        cfx_finish(t);
    }
}

/* With the re-send, a pooled connection that dies under a GET before any answer byte (closed
 * as the request arrives, or reset 50 ms after it): the GET goes once more on a fresh
 * connection, once; a POST fails as stale and is never sent twice, re-send or not. */
static void test_stale_pooled_connection_resent_when_asked(void **state)
{
    (void)state;
    static const char *const paths[] = {"/die-on-reuse", "/die-on-reuse?reset=1&ms=50"};
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        tctx *t = cfx_new(NULL);
        tc_future *f = request_resend(t, "GET", paths[i], 1);
        cfx_expect_response(t, f, 200);
        tc_future_unref(f);
        f = request_resend(t, "GET", paths[i], 1);
        const tc_response *r = cfx_expect_response(t, f, 200);
        assert_string_equal(r->body, "first"); /* the answer of a fresh connection */
        tc_future_unref(f);
        tc_client_stats st;
        tc_client_get_stats(t->client, &st);
        assert_int_equal(st.stale_retries, 1);
        assert_int_equal(st.started, 2);
        assert_int_equal(t->s.requests, 3);
        assert_int_equal(t->s.conns_total, 2);

        f = request_resend(t, "POST", paths[i], 1);
        cfx_expect_error(t, f, TC_ESTALE);
        tc_future_unref(f);
        cfx_run_for(t, 100);
        tc_client_get_stats(t->client, &st);
        assert_int_equal(st.stale_retries, 1);
        assert_int_equal(t->s.requests, 4); /* not sent again */
        cfx_expect_stats_settled(t);
        cfx_finish(t);
    }
}

/* A request body far larger than the socket takes at once: its write is still pending when the
 * server gives up (a reset), or when the request is cancelled; neither may touch the request's
 * memory after it is gone (ASan watches). */
static void test_large_body_write_cut_short(void **state)
{
    (void)state;
    enum { BIG = 8 << 20 };
    char *big = malloc(BIG);
    assert_non_null(big);
    memset(big, 'b', BIG);
    tctx *t = cfx_new(NULL);
    tc_client_request req;
    memset(&req, 0, sizeof(req));
    req.method = "POST";
    req.url = cfx_url(t, &t->s, "/echo");
    req.body = big;
    req.body_len = BIG;
    tc_future *f = NULL;
    assert_int_equal(tc_client_request_start(&f, t->client, &req), 0);
    /* The test server keeps 64 KiB of input and resets a connection that sends more. */
    cfx_expect_error(t, f, TC_ECONNRESET);
    tc_future_unref(f);

    /* A listener that never accepts: the kernel completes the connection and takes a few MB,
     * then the rest of the body waits in a pending write. */
    struct sockaddr_in a;
    int lfd = cfx_loopback_socket(16, &a);
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", ntohs(a.sin_port));
    req.url = url;
    assert_int_equal(tc_client_request_start(&f, t->client, &req), 0);
    cfx_run_for(t, 50); /* connected, part of the body written, the rest pending */
    assert_false(tc_future_done(f));
    assert_int_equal(tc_future_cancel(f), 1);
    tc_future_unref(f);
    free(big); /* the caller's copy; the client's own went with the cancel */
    cfx_run_for(t, 50);

    /* The answer comes before the body is written: the connection is not pooled (the rest of
     * the body would follow), and dropping the response frees the request while libuv still
     * holds a write of its body: ASan sees any write from freed memory. */
    char *big2 = malloc(BIG);
    assert_non_null(big2);
    memset(big2, 'c', BIG);
    req.url = cfx_url(t, &t->s, "/early");
    req.body = big2;
    assert_int_equal(tc_client_request_start(&f, t->client, &req), 0);
    free(big2);
    cfx_expect_response(t, f, 413);
    tc_future_unref(f);
    cfx_run_for(t, 100);
    tc_client_stats st;
    tc_client_get_stats(t->client, &st);
    assert_int_equal(st.open_connections, 0);
    cfx_expect_stats_settled(t);
    cfx_finish(t);
    close(lfd);
}

/* Requests that cannot start (no file descriptor left) fail one after the other, oldest first,
 * without the queue's pump calling itself once per request (which overflowed the stack). */
static int g_fail_order_ok = 1;
static long g_fail_last = -1;

static void on_seq_done(tc_future *f, void *data)
{
    long seq = (long)(intptr_t)data;
    if (tc_future_state_of(f) != TC_FUTURE_REJECTED || seq <= g_fail_last) {
        if (g_fail_order_ok)
            print_message("request %ld after %ld: state %d %s\n", seq, g_fail_last,
                          tc_future_state_of(f), tc_future_message(f));
        g_fail_order_ok = 0;
    }
    g_fail_last = seq;
    tc_future_unref(f);
}

static void test_many_start_failures(void **state)
{
    (void)state;
    if (cfx_engine == TC_CLIENT_ENGINE_CURL)
        skip(); /* libcurl opens its sockets later, inside its own loop */
    enum { N = 30000 };
    tctx *t = cfx_new_pool(1, 0);
    cfx_srv_start(&t->s2, &t->loop); /* another origin: its requests need new sockets */
    tc_future *slow = cfx_get(t, &t->s, "/delay?ms=200", 0);
    assert_true(cfx_run_until_flag(t, &t->s.requests, 5000)); /* it holds the only slot */
    for (long i = 0; i < N; i++) {
        tc_future *f = cfx_get(t, &t->s2, "/ok", 0);
        assert_int_equal(tc_future_on_done(f, on_seq_done, (void *)(intptr_t)i), 0);
    }
    /* No descriptor left for a new socket (not even the one the pool frees when it evicts the
     * slow request's idle connection to make room): every queued request fails to start. */
    struct rlimit old, low;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
    low = old;
    low.rlim_cur = 3; /* open descriptors stay usable; no new one above stderr */
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
    cfx_expect_response(t, slow, 200);
    tc_future_unref(slow);
    cfx_run_for(t, 50);
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
    assert_true(g_fail_order_ok);
    assert_int_equal(g_fail_last, N - 1);
    cfx_expect_stats_settled(t);
    cfx_finish(t);
}

/* timeout_from_admit: the wait for a per-host slot is not part of the timeout. */
static void test_timeout_from_admit(void **state)
{
    (void)state;
    tctx *t = cfx_new_pool(0, 1);
    tc_future *fs[3];
    for (int i = 0; i < 3; i++) {
        tc_client_request req;
        memset(&req, 0, sizeof(req));
        req.url = cfx_url(t, &t->s, "/delay?ms=150");
        req.timeout_ms = 400;
        req.timeout_from_admit = 1;
        assert_int_equal(tc_client_request_start(&fs[i], t->client, &req), 0);
    }
    for (int i = 0; i < 3; i++) {
        const tc_response *r = cfx_expect_response(t, fs[i], 200);
        assert_string_equal(r->body, "late");
        if (i == 2)
            assert_true(r->queued_ms >= 250.0); /* queued behind two 150 ms answers */
        tc_future_unref(fs[i]);
    }
    assert_int_equal(t->s.active_max, 1);
    cfx_expect_stats_settled(t);
    cfx_finish(t);
}

/* Counts this process's TCP sockets toward port in the given /proc/net/tcp states. */
static int count_sockets_to(int port, const char *const *states)
{
    FILE *fp = fopen("/proc/net/tcp", "r");
    assert_non_null(fp);
    char line[512];
    int n = 0;
    while (fgets(line, sizeof(line), fp) != NULL) {
        unsigned lport = 0, rport = 0;
        char st[8] = "";
        if (sscanf(line, " %*d: %*x:%x %*x:%x %7s", &lport, &rport, st) != 3)
            continue;
        if ((int)rport != port)
            continue;
        for (int i = 0; states[i] != NULL; i++)
            if (strcasecmp(st, states[i]) == 0)
                n++;
    }
    fclose(fp);
    return n;
}

/* Aborting an attempt resets its connection: no TIME_WAIT or FIN_WAIT left on our side, and the
 * server sees the reset. */
static void test_abort_is_a_reset(void **state)
{
    (void)state;
    enum { N = 1000, WAVE = 200 };
    tctx *t = cfx_new(NULL);
    for (int done = 0; done < N; done += WAVE) {
        tc_future *fs[WAVE];
        for (int i = 0; i < WAVE; i++)
            fs[i] = cfx_get(t, &t->s, "/hold", 0);
        assert_int_equal(cfx_run_until_count(t, &t->s.requests, done + WAVE, 10000), done + WAVE);
        for (int i = 0; i < WAVE; i++) {
            assert_int_equal(tc_future_cancel(fs[i]), 1);
            tc_future_unref(fs[i]);
        }
        assert_int_equal(cfx_run_until_count(t, &t->s.peer_closed, done + WAVE, 10000),
                         done + WAVE);
    }
    print_message("%d aborts: the server saw %d resets\n", N, t->s.peer_reset);
    assert_int_equal(t->s.peer_reset, N);
    /* Closed with a FIN, all N would linger on our side (FIN_WAIT2, then TIME_WAIT). The count
     * may include a few unrelated sockets whose remote port happens to equal ours (a server
     * socket of another test in TIME_WAIT, toward a client port with that number). */
    static const char *const lingering[] = {"04", "05", "06", "08", "09", NULL};
    int left = count_sockets_to(t->s.port, lingering);
    print_message("sockets toward the server left lingering: %d\n", left);
    assert_true(left <= N / 100);
    cfx_expect_stats_settled(t);
    cfx_finish(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_interim_close_and_http10),
        cmocka_unit_test(test_stale_pooled_connection_fails_without_resend),
        cmocka_unit_test(test_stale_pooled_connection_resent_when_asked),
        cmocka_unit_test(test_idle_close_and_cancel_mid_head),
        cmocka_unit_test(test_announced_keep_alive_timeout),
        cmocka_unit_test(test_abort_is_a_reset),
        cmocka_unit_test(test_timeout_from_admit),
        cmocka_unit_test(test_large_body_write_cut_short),
        cmocka_unit_test(test_many_start_failures),
    };
    return cfx_run_on_both_engines(tests, sizeof(tests) / sizeof(tests[0]));
}
