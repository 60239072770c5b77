/*
 * Tests for the pooled HTTP client (src/client*.c): cancellation and close, and the connection
 * pool (caps, keep-alive reuse, volume), on both engines. The test server is client_fixture.h.
 */
#include "client_fixture.h"

/* ---- tests: cancellation and close ------------------------------------------------------------
 */

static void test_cancel_mid_body(void **state)
{
    (void)state;
    tctx *t = cfx_new(NULL);
    tc_future *f = cfx_get(t, &t->s, "/slow-body", 0);
    assert_true(cfx_run_until_flag(t, &t->s.partial_sent, 5000));
    cfx_run_for(t, 50); /* let the client read the first bytes */
    assert_false(tc_future_done(f));
    assert_int_equal(tc_future_cancel(f), 1);
    assert_int_equal(tc_future_state_of(f), TC_FUTURE_CANCELLED);
    tc_client_stats st;
    tc_client_get_stats(t->client, &st);
    assert_int_equal(st.cancelled, 1);
    assert_int_equal(st.in_flight, 0);
    assert_int_equal(st.open_connections, 0); /* closed at once, not pooled */
    assert_true(cfx_run_until_flag(t, &t->s.peer_closed, 3000));
    assert_int_equal(t->s.conns_open, 0);
    tc_future_unref(f);
    cfx_finish(t);
}

static void test_cancel_queued_and_unref_running(void **state)
{
    (void)state;
    tctx *t = cfx_new_pool(1, 0);
    tc_future *a = cfx_get(t, &t->s, "/delay?ms=100", 0);
    tc_future *b = cfx_get(t, &t->s, "/ok", 0);
    tc_future *c = cfx_get(t, &t->s, "/ok?n=3", 0);
    assert_int_equal(tc_future_cancel(b), 1);
    tc_future_unref(b);
    tc_future_unref(a); /* nobody waits for a: it still completes and frees itself */
    const tc_response *r = cfx_expect_response(t, c, 200);
    assert_string_equal(r->body, "xxx");
    assert_true(r->queued_ms > 50.0);
    tc_client_stats st;
    tc_client_get_stats(t->client, &st);
    assert_int_equal(st.completed, 2);
    assert_int_equal(st.cancelled, 1);
    assert_int_equal(t->s.requests, 2);
    assert_int_equal(t->s.conns_total, 1); /* c reused a's connection */
    tc_future_unref(c);
    cfx_expect_stats_settled(t);
    cfx_finish(t);
}

static void test_close_with_requests_in_flight(void **state)
{
    (void)state;
    tctx *t = cfx_new_pool(5, 0);
    tc_future *fs[10];
    for (int i = 0; i < 10; i++)
        fs[i] = cfx_get(t, &t->s, "/hold", 0);
    assert_int_equal(cfx_run_until_count(t, &t->s.requests, 5, 5000), 5);
    tc_client_close(t->client, cfx_on_client_closed, t);
    for (int i = 0; i < 10; i++) {
        assert_int_equal(tc_future_state_of(fs[i]), TC_FUTURE_CANCELLED);
        tc_future_unref(fs[i]);
    }
    tc_future *late = NULL;
    assert_int_equal(tc_client_get(&late, t->client, cfx_url(t, &t->s, "/ok")), TC_ECLOSED);
    assert_null(late);
    assert_true(cfx_run_until_flag(t, &t->client_closed, 5000));
    assert_int_equal(cfx_run_until_count(t, &t->s.peer_closed, 5, 5000), 5);
    cfx_finish(t);
}

/* Requests cancelled at every point of their connect, while the server accepts on the same loop.
 * libcurl closes a connecting socket right after CURL_POLL_REMOVE without our close-socket
 * callback, and fd numbers are reused at once: a poll left armed on such an fd makes libuv abort
 * (EBADF on its pending epoll ADD) or steal another handle's events. A 0 ms timer started right
 * after the request runs in the same timers pass as the client's own curl timer, so the cancel
 * lands just after curl opened the socket and asked for it to be watched. */
typedef struct cancel_later {
    uv_timer_t timer;
    tc_future *f;
} cancel_later;

static void on_cancel_later(uv_timer_t *t)
{
    cancel_later *cl = tc__container_of(t, cancel_later, timer);
    tc_future_cancel(cl->f); /* 0 if it already completed: fine too */
}

static void test_cancel_while_connecting(void **state)
{
    (void)state;
    tctx *t = cfx_new(NULL);
    cancel_later cl;
    assert_int_equal(uv_timer_init(&t->loop, &cl.timer), 0);
    for (int i = 0; i < 300; i++) {
        cl.f = cfx_get(t, &t->s, "/ok", 0);
        for (int k = 0; k < i % 3; k++)
            uv_run(&t->loop, UV_RUN_NOWAIT);
        assert_int_equal(uv_timer_start(&cl.timer, on_cancel_later, 0, 0), 0);
        while (!tc_future_done(cl.f))
            uv_run(&t->loop, UV_RUN_ONCE);
        tc_future_unref(cl.f);
    }
    uv_close((uv_handle_t *)&cl.timer, NULL);
    tc_future *last = cfx_get(t, &t->s, "/ok", 0);
    const tc_response *r = cfx_expect_response(t, last, 200);
    assert_string_equal(r->body, "ok");
    tc_future_unref(last);
    tc_client_stats st;
    tc_client_get_stats(t->client, &st);
    assert_true(st.cancelled > 100);
    cfx_expect_stats_settled(t);
    cfx_finish(t);
}

typedef struct close_from_cb {
    tctx *t;
    tc_future *others[3];
    int fired;
} close_from_cb;

static void close_in_callback(tc_future *f, void *data)
{
    close_from_cb *cc = data;
    (void)f;
    cc->fired++;
    tc_client_close(cc->t->client, cfx_on_client_closed, cc->t);
    for (int i = 0; i < 3; i++)
        assert_int_equal(tc_future_state_of(cc->others[i]), TC_FUTURE_CANCELLED);
}

static void test_close_from_a_done_callback(void **state)
{
    (void)state;
    tctx *t = cfx_new(NULL);
    close_from_cb cc = {.t = t};
    tc_future *first = cfx_get(t, &t->s, "/ok", 0);
    for (int i = 0; i < 3; i++)
        cc.others[i] = cfx_get(t, &t->s, "/hold", 0);
    assert_int_equal(tc_future_on_done(first, close_in_callback, &cc), 0);
    assert_true(cfx_run_until_flag(t, &t->client_closed, 5000));
    assert_int_equal(cc.fired, 1);
    assert_int_equal(tc_future_state_of(first), TC_FUTURE_FULFILLED);
    tc_future_unref(first);
    for (int i = 0; i < 3; i++)
        tc_future_unref(cc.others[i]);
    cfx_finish(t);
}

/* Hedging: the first success cancels the other attempts from inside the winner's completion,
 * i.e. re-entrantly from the client's own completion loop. The losers' connections close. */
static void test_first_success_cancels_losers(void **state)
{
    (void)state;
    tctx *t = cfx_new(NULL);
    tc_future *attempts[3] = {cfx_get(t, &t->s, "/delay?ms=2000", 0), cfx_get(t, &t->s, "/ok", 0),
                              cfx_get(t, &t->s, "/hold", 0)};
    tc_future *first = NULL;
    assert_int_equal(tc_first_success(&first, attempts, 3), 0);
    assert_true(cfx_run_until_done(t, first, 5000));
    assert_int_equal(tc_future_state_of(first), TC_FUTURE_FULFILLED);
    assert_int_equal(tc_first_success_index(first), 1);
    const tc_response *r = tc_future_value(first);
    assert_string_equal(r->body, "ok");
    assert_int_equal(tc_future_state_of(attempts[0]), TC_FUTURE_CANCELLED);
    assert_int_equal(tc_future_state_of(attempts[2]), TC_FUTURE_CANCELLED);
    assert_int_equal(cfx_run_until_count(t, &t->s.peer_closed, 2, 3000), 2);
    tc_client_stats st;
    tc_client_get_stats(t->client, &st);
    assert_int_equal(st.completed, 1);
    assert_int_equal(st.cancelled, 2);
    assert_int_equal(st.open_connections, 1); /* only the winner's connection is pooled */
    for (int i = 0; i < 3; i++)
        tc_future_unref(attempts[i]);
    tc_future_unref(first);
    cfx_finish(t);
}

/* ---- tests: pool ---------------------------------------------------------------------------- */

static void run_all(tctx *t, tc_future **fs, size_t n, uint64_t limit_ms)
{
    uint64_t start = uv_hrtime();
    for (size_t i = 0; i < n; i++)
        while (!tc_future_done(fs[i]) && cfx_elapsed_ms(start) < (double)limit_ms)
            uv_run(&t->loop, UV_RUN_ONCE);
}

static void expect_all_ok(tc_future **fs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (tc_future_state_of(fs[i]) != TC_FUTURE_FULFILLED)
            fail_msg("request %zu: state %d %s", i, tc_future_state_of(fs[i]),
                     tc_future_message(fs[i]));
        const tc_response *r = tc_future_value(fs[i]);
        assert_int_equal(r->status, 200);
        tc_future_unref(fs[i]);
    }
}

static void test_pool_total_cap(void **state)
{
    (void)state;
    tctx *t = cfx_new_pool(4, 0);
    tc_future *fs[40];
    for (int i = 0; i < 40; i++)
        fs[i] = cfx_get(t, &t->s, "/delay?ms=20", 0);
    tc_client_stats st;
    tc_client_get_stats(t->client, &st);
    assert_int_equal(st.queued, 36);
    assert_int_equal(st.in_flight, 40);
    run_all(t, fs, 40, 20000);
    const tc_response *last = tc_future_value(fs[39]);
    assert_non_null(last);
    assert_true(last->queued_ms > 50.0); /* it waited for nine rounds of 20 ms */
    expect_all_ok(fs, 40);
    assert_int_equal(t->s.requests, 40);
    assert_true(t->s.conns_max <= 4);
    assert_true(t->s.active_max <= 4);
    assert_int_equal(t->s.active_max, 4); /* and the cap was actually used */
    assert_true(t->s.conns_total <= 4);   /* keep-alive: the queue reuses the pool */
    cfx_expect_stats_settled(t);
    cfx_finish(t);
}

static void test_pool_per_host_cap(void **state)
{
    (void)state;
    tctx *t = cfx_new_pool(100, 2);
    cfx_srv_start(&t->s2, &t->loop);
    tc_future *fs[40];
    for (int i = 0; i < 40; i++)
        fs[i] = cfx_get(t, i % 2 ? &t->s2 : &t->s, "/delay?ms=10", 0);
    run_all(t, fs, 40, 20000);
    expect_all_ok(fs, 40);
    assert_int_equal(t->s.requests, 20);
    assert_int_equal(t->s2.requests, 20);
    assert_true(t->s.conns_max <= 2);
    assert_true(t->s2.conns_max <= 2);
    assert_int_equal(t->s.active_max, 2);
    assert_int_equal(t->s2.active_max, 2);
    cfx_expect_stats_settled(t);
    cfx_finish(t);
}

static void test_pool_total_cap_across_hosts(void **state)
{
    (void)state;
    tctx *t = cfx_new_pool(3, 0);
    cfx_srv_start(&t->s2, &t->loop);
    int active = 0, active_max = 0;
    t->s.shared_active = t->s2.shared_active = &active;
    t->s.shared_active_max = t->s2.shared_active_max = &active_max;
    tc_future *fs[30];
    for (int i = 0; i < 30; i++)
        fs[i] = cfx_get(t, i % 3 ? &t->s2 : &t->s, "/delay?ms=10", 0);
    run_all(t, fs, 30, 20000);
    expect_all_ok(fs, 30);
    assert_int_equal(active_max, 3);
    assert_true(t->s.conns_max <= 3);
    assert_true(t->s2.conns_max <= 3);
    cfx_finish(t);
}

typedef struct chain {
    tctx *t;
    int left;
    int ok;
    tc_future *cur;
} chain;

static void chain_next(tc_future *f, void *data)
{
    chain *ch = data;
    if (tc_future_state_of(f) == TC_FUTURE_FULFILLED &&
        ((const tc_response *)tc_future_value(f))->status == 200)
        ch->ok++;
    tc_future_unref(f);
    ch->cur = NULL;
    if (--ch->left > 0) {
        /* Start the next request from inside the previous one's callback. */
        ch->cur = cfx_get(ch->t, &ch->t->s, "/ok", 0);
        assert_int_equal(tc_future_on_done(ch->cur, chain_next, ch), 0);
    }
}

static void test_keepalive_reuse(void **state)
{
    (void)state;
    tctx *t = cfx_new(NULL);
    chain ch = {.t = t, .left = 50};
    ch.cur = cfx_get(t, &t->s, "/ok", 0);
    assert_int_equal(tc_future_on_done(ch.cur, chain_next, &ch), 0);
    uint64_t start = uv_hrtime();
    while (ch.left > 0 && cfx_elapsed_ms(start) < 10000)
        uv_run(&t->loop, UV_RUN_ONCE);
    assert_int_equal(ch.ok, 50);
    assert_int_equal(t->s.conns_total, 1); /* one after the other: one connection */
    cfx_finish(t);
}

/* A burst of new connections (the native engine starts 32 connects a loop turn and queues the
 * rest): every one of 200 held requests started at once reaches the server; 200 more cancelled
 * before the loop turns end without connecting at all on the native engine, and leave nothing
 * behind; the pool still answers afterwards. */
static void test_burst_of_new_connections(void **state)
{
    (void)state;
    enum { N = 200 };
    tctx *t = cfx_new_pool(2 * N + 1, 0);
    tc_future *fs[N];
    for (int i = 0; i < N; i++)
        fs[i] = cfx_get(t, &t->s, "/hold", 0);
    assert_int_equal(cfx_run_until_count(t, &t->s.requests, N, 20000), N);
    assert_int_equal(t->s.conns_open, N);
    tc_future *gone[N];
    for (int i = 0; i < N; i++)
        gone[i] = cfx_get(t, &t->s, "/ok", 0);
    for (int i = 0; i < N; i++) {
        tc_future_cancel(gone[i]);
        assert_int_equal(tc_future_state_of(gone[i]), TC_FUTURE_CANCELLED);
        tc_future_unref(gone[i]);
    }
    cfx_run_for(t, 100);
    if (cfx_engine != TC_CLIENT_ENGINE_CURL)
        assert_true(t->s.conns_total <= N + 32); /* the queued ones never connected */
    assert_int_equal(t->s.requests, N);
    for (int i = 0; i < N; i++) {
        tc_future_cancel(fs[i]);
        tc_future_unref(fs[i]);
    }
    tc_future *last = cfx_get(t, &t->s, "/ok", 0);
    const tc_response *r = cfx_expect_response(t, last, 200);
    assert_string_equal(r->body, "ok");
    tc_future_unref(last);
    cfx_expect_stats_settled(t);
    cfx_finish(t);
}

static void test_ten_thousand_requests_over_100_connections(void **state)
{
    (void)state;
    enum { N = 10000 };
    tctx *t = cfx_new_pool(100, 0);
    tc_future **fs = calloc(N, sizeof(*fs));
    assert_non_null(fs);
    for (int i = 0; i < N; i++)
        fs[i] = cfx_get(t, &t->s, i % 10 ? "/ok" : "/chunked", 0);
    run_all(t, fs, N, 120000);
    expect_all_ok(fs, N);
    free(fs);
    assert_int_equal(t->s.requests, N);
    assert_true(t->s.conns_max <= 100);
    assert_true(t->s.conns_total <= 100); /* many requests, few connections */
    tc_client_stats st;
    tc_client_get_stats(t->client, &st);
    assert_int_equal(st.completed, N);
    assert_true(st.open_connections <= 100);
    cfx_expect_stats_settled(t);
    cfx_finish(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cancel_mid_body),
        cmocka_unit_test(test_cancel_queued_and_unref_running),
        cmocka_unit_test(test_cancel_while_connecting),
        cmocka_unit_test(test_close_with_requests_in_flight),
        cmocka_unit_test(test_close_from_a_done_callback),
        cmocka_unit_test(test_first_success_cancels_losers),
        cmocka_unit_test(test_pool_total_cap),
        cmocka_unit_test(test_pool_per_host_cap),
        cmocka_unit_test(test_pool_total_cap_across_hosts),
        cmocka_unit_test(test_keepalive_reuse),
        cmocka_unit_test(test_burst_of_new_connections),
        cmocka_unit_test(test_ten_thousand_requests_over_100_connections),
    };
    return cfx_run_on_both_engines(tests, sizeof(tests) / sizeof(tests[0]));
}
