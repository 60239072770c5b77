/*
 * Unit tests for the HTTP/1.1 server (src/server*.c): the asynchronous handler API, dropping
 * requests, clients that go away, and drain. The harness is server_fixture.h.
 */
#include "server_fixture.h"

/* ---- the asynchronous handler API ----------------------------------------------------------- */

static int cookie;

static void answer_later(fixture *fx, void *arg)
{
    tc_request *req = arg;
    assert_ptr_equal(tc_request_data(req), &cookie);
    assert_int_equal(tc_server_requests_in_flight(fx->srv), 1);
    uint64_t ready = tc_request_ready_ms(req);
    assert_true(ready > 0 && ready <= uv_now(&fx->loop));
    assert_true(uv_now(&fx->loop) - ready >= 90);
    assert_true(tc_request_ready_ns(req) > 0 && tc_request_ready_ns(req) <= uv_hrtime());
    assert_int_equal(tc_request_respond(req, 200, "text/plain", NULL, 0, "later", 5), 0);
    assert_int_equal(tc_server_requests_in_flight(fx->srv), 0);
}

static void handler_later(tc_request *req, void *data)
{
    fixture *fx = data;
    sfx_record(fx, req);
    assert_int_equal(tc_server_requests_in_flight(fx->srv), 1);
    assert_int_equal(tc_server_connections(fx->srv), 1);
    tc_request_set_data(req, &cookie);
    sfx_later(fx, 100, answer_later, req);
}

static void client_later(fixture *fx)
{
    cli c;
    resp r;
    CHECK_INT(sfx_cli_connect(fx, &c), 0);
    for (int i = 0; i < 2; i++) {
        double t0 = sfx_now_ms();
        CHECK_INT(sfx_cli_sends(&c, "GET /later HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
        CHECK_INT(sfx_cli_read_response(&c, &r, 0), 1);
        CHECK(sfx_now_ms() - t0 >= 80);
        CHECK_INT(r.status, 200);
        CHECK_INT(r.body_len, 5);
        CHECK(memcmp(r.body, "later", 5) == 0);
    }
}

static void test_async_answer_from_timer(void **state)
{
    (void)state;
    fixture fx;
    sfx_serve(&fx, handler_later, client_later, 0);
    assert_int_equal(fx.nreqs, 2);
}

/* Pipelining: three requests in one write, answered 3, 2, 1; the wire carries 1, 2, 3. */
static void answer_numbered(fixture *fx, void *arg)
{
    int i = (int)(intptr_t)arg;
    char body = (char)('1' + i);
    fx->respond_ret[i] = tc_request_respond(fx->reqs[i], 200, "text/plain", NULL, 0, &body, 1);
}

static void handler_pipeline(tc_request *req, void *data)
{
    fixture *fx = data;
    int i = sfx_record(fx, req);
    if (i == 2) {
        answer_numbered(fx, (void *)(intptr_t)2); /* at once, while 1 and 2 are pending */
        sfx_later(fx, 50, answer_numbered, (void *)(intptr_t)1);
        sfx_later(fx, 150, answer_numbered, (void *)(intptr_t)0);
    }
}

static void client_pipeline(fixture *fx)
{
    cli c;
    resp r;
    CHECK_INT(sfx_cli_connect(fx, &c), 0);
    double t0 = sfx_now_ms();
    CHECK_INT(sfx_cli_sends(&c,
                            "GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n"
                            "GET /3 HTTP/1.1\r\nHost: h\r\n\r\n"),
              0);
    for (int i = 1; i <= 3; i++) {
        CHECK_INT(sfx_cli_read_response(&c, &r, 0), 1);
        /* nothing may arrive before the first request was answered */
        CHECK(sfx_now_ms() - t0 >= 120);
        CHECK_INT(r.status, 200);
        CHECK_INT(r.body_len, 1);
        CHECK_INT(r.body[0], '0' + i);
    }
}

static void test_pipelining_answers_in_order(void **state)
{
    (void)state;
    fixture fx;
    sfx_serve(&fx, handler_pipeline, client_pipeline, 0);
    sfx_expect_answered(&fx, 3);
}

/* More pipelined requests than TC_SERVER_MAX_PIPELINE: reading pauses and resumes; odd ones are
 * answered from a timer, even ones at once. */
#define DEEP_PIPELINE (TC_SERVER_MAX_PIPELINE + 9)

static void answer_target(fixture *fx, void *arg)
{
    tc_request *req = arg;
    tc_str t = tc_request_target(req);
    assert_int_equal(tc_request_respond(req, 200, "text/plain", NULL, 0, t.base, t.len), 0);
}

static void handler_deep(tc_request *req, void *data)
{
    fixture *fx = data;
    int i = sfx_record(fx, req);
    assert_true(tc_server_requests_in_flight(fx->srv) <= TC_SERVER_MAX_PIPELINE);
    if (i % 2 == 1)
        sfx_later(fx, 5, answer_target, req);
    else
        answer_target(fx, req);
}

static void client_deep(fixture *fx)
{
    cli c;
    resp r;
    static char all[DEEP_PIPELINE * 64];
    size_t n = 0;
    for (int i = 0; i < DEEP_PIPELINE; i++)
        n += (size_t)snprintf(all + n, sizeof(all) - n, "GET /r%d HTTP/1.1\r\nHost: h\r\n\r\n", i);
    CHECK_INT(sfx_cli_connect(fx, &c), 0);
    CHECK_INT(sfx_cli_send(&c, all, n), 0);
    for (int i = 0; i < DEEP_PIPELINE; i++) {
        char want[16];
        snprintf(want, sizeof(want), "/r%d", i);
        CHECK_INT(sfx_cli_read_response(&c, &r, 0), 1);
        CHECK_STR(r.body, want);
    }
}

static void test_pipelining_past_the_pipeline_limit(void **state)
{
    (void)state;
    fixture fx;
    sfx_serve(&fx, handler_deep, client_deep, 0);
    assert_int_equal(fx.nreqs, DEEP_PIPELINE);
}

/* ---- dropping requests ------------------------------------------------------------------------
 */

static void answer_ok(fixture *fx, void *arg)
{
    (void)fx;
    assert_int_equal(tc_request_respond(arg, 200, "text/plain", NULL, 0, "ok", 2), 0);
}

static void handler_drop(tc_request *req, void *data)
{
    fixture *fx = data;
    sfx_record(fx, req);
    tc_str path = tc_request_path(req);
    if (sfx_str_eq(path, "/reset"))
        tc_request_drop(req, 1);
    else if (sfx_str_eq(path, "/fin"))
        tc_request_drop(req, 0);
    else if (sfx_str_eq(path, "/slow-ok"))
        sfx_later(fx, 50, answer_ok, req);
    else
        answer_ok(fx, req);
}

static void client_drop(fixture *fx)
{
    cli c;
    resp r;

    CHECK_INT(sfx_cli_connect(fx, &c), 0);
    CHECK_INT(sfx_cli_sends(&c, "GET /reset HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK_CLOSED(&c, ECONNRESET);
    sfx_cli_close(&c);

    CHECK_INT(sfx_cli_connect(fx, &c), 0);
    CHECK_INT(sfx_cli_sends(&c, "GET /fin HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK_CLOSED(&c, 0);
    sfx_cli_close(&c);

    /* an earlier pipelined answer still goes out before the clean close */
    CHECK_INT(sfx_cli_connect(fx, &c), 0);
    CHECK_INT(sfx_cli_sends(&c, "GET /slow-ok HTTP/1.1\r\nHost: h\r\n\r\n"
                                "GET /fin HTTP/1.1\r\nHost: h\r\n\r\n"),
              0);
    CHECK_INT(sfx_cli_read_response(&c, &r, 0), 1);
    CHECK_INT(r.status, 200);
    CHECK_CLOSED(&c, 0);
    sfx_cli_close(&c);

    /* ... and before the reset */
    CHECK_INT(sfx_cli_connect(fx, &c), 0);
    CHECK_INT(sfx_cli_sends(&c, "GET /slow-ok HTTP/1.1\r\nHost: h\r\n\r\n"
                                "GET /reset HTTP/1.1\r\nHost: h\r\n\r\n"),
              0);
    CHECK_INT(sfx_cli_read_response(&c, &r, 0), 1);
    CHECK_INT(r.status, 200);
    CHECK_CLOSED(&c, ECONNRESET);
}

static void test_drop_reset_and_clean_close(void **state)
{
    (void)state;
    fixture fx;
    sfx_serve(&fx, handler_drop, client_drop, 0);
    assert_int_equal(fx.nreqs, 6);
}

/* ---- the client goes away -----------------------------------------------------------------------
 */

static void finish_aborted(fixture *fx, void *arg)
{
    tc_request *req = arg;
    int i = 0;
    while (i < fx->nreqs && fx->reqs[i] != req)
        i++;
    assert_true(i < fx->nreqs);
    assert_int_equal(tc_request_aborted(req), 1);
    fx->respond_ret[i] = tc_request_respond(req, 200, "text/plain", NULL, 0, "too late", 8);
    sfx_loop_done(fx);
}

static void on_abort_counted(tc_request *req, void *data)
{
    fixture *fx = data;
    fx->aborts++;
    assert_int_equal(tc_request_aborted(req), 1);
    sfx_later(fx, 20, finish_aborted, req); /* the handler finishes it afterwards */
}

static void on_abort_replaced(tc_request *req, void *data)
{
    fixture *fx = data;
    (void)req;
    fx->abort_other++;
}

/* Polls until the request without an abort callback is marked aborted, then finishes it. */
static void poll_aborted(fixture *fx, void *arg)
{
    tc_request *req = arg;
    static int polls;
    if (!tc_request_aborted(req) && ++polls < 500) {
        sfx_later(fx, 5, poll_aborted, req);
        return;
    }
    finish_aborted(fx, req);
}

static void handler_abort(tc_request *req, void *data)
{
    fixture *fx = data;
    int i = sfx_record(fx, req);
    if (i == 0) {
        tc_request_on_abort(req, on_abort_replaced, fx);
        tc_request_on_abort(req, on_abort_counted, fx); /* replaces the first */
    } else if (i == 2) {
        tc_request_on_abort(req, on_abort_counted, fx);
    } else {
        tc_request_on_abort(req, on_abort_replaced, fx);
        tc_request_on_abort(req, NULL, NULL); /* removes it */
        sfx_later(fx, 5, poll_aborted, req);
    }
    atomic_store(&fx->stage, i + 1);
}

static void client_abort(fixture *fx)
{
    cli a, b;
    CHECK_INT(sfx_cli_connect(fx, &a), 0);
    CHECK_INT(sfx_cli_sends(&a, "GET /pending HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK(sfx_stage_wait(fx, 1));
    CHECK_INT(sfx_cli_connect(fx, &b), 0);
    CHECK_INT(sfx_cli_sends(&b, "GET /pending-too HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK(sfx_stage_wait(fx, 2));
    sfx_cli_close(&a);
    sfx_cli_close(&b);
    /* a client that resets instead of closing */
    CHECK_INT(sfx_cli_connect(fx, &a), 0);
    CHECK_INT(sfx_cli_sends(&a, "GET /pending-reset HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK(sfx_stage_wait(fx, 3));
    struct linger lg = {1, 0};
    CHECK(setsockopt(a.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)) == 0);
    sfx_cli_close(&a);
}

static void test_abort_when_client_closes(void **state)
{
    (void)state;
    fixture fx;
    sfx_serve(&fx, handler_abort, client_abort, 3);
    sfx_expect_answered(&fx, 3);
    assert_int_equal(fx.aborts, 2);      /* exactly once for each request that has one */
    assert_int_equal(fx.abort_other, 0); /* replaced and removed callbacks never run */
}

/* tc_server_close with requests pending: each sees its abort callback; the handler finishes them
 * inside it. */
static void on_abort_finish_now(tc_request *req, void *data)
{
    fixture *fx = data;
    fx->aborts++;
    assert_int_equal(tc_request_aborted(req), 1);
    assert_int_equal(tc_request_respond(req, 200, "text/plain", NULL, 0, "x", 1), 0);
}

static void close_now(fixture *fx, void *arg)
{
    (void)arg;
    assert_int_equal(tc_server_connections(fx->srv), 2);
    assert_int_equal(tc_server_requests_in_flight(fx->srv), 2);
    sfx_close_server(fx);
    assert_int_equal(fx->aborts, 2); /* synchronously, before the close completes */
    assert_int_equal(fx->closed, 0);
    sfx_loop_done(fx);
}

static void handler_hold(tc_request *req, void *data)
{
    fixture *fx = data;
    int i = sfx_record(fx, req);
    tc_request_on_abort(req, on_abort_finish_now, fx);
    if (i == 1)
        sfx_later(fx, 10, close_now, NULL);
}

static void client_two_pending(fixture *fx)
{
    cli a, b;
    CHECK_INT(sfx_cli_connect(fx, &a), 0);
    CHECK_INT(sfx_cli_connect(fx, &b), 0);
    CHECK_INT(sfx_cli_sends(&a, "GET /hold-a HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    usleep(10000);
    CHECK_INT(sfx_cli_sends(&b, "GET /hold-b HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK_CLOSED(&a, 0);
    CHECK_CLOSED(&b, 0);
}

static void test_close_aborts_pending_requests(void **state)
{
    (void)state;
    fixture fx;
    sfx_serve(&fx, handler_hold, client_two_pending, 1);
    assert_int_equal(fx.nreqs, 2);
    assert_int_equal(fx.aborts, 2);
}

/* ---- drain --------------------------------------------------------------------------------------
 */

static void on_drained(tc_server *srv, void *data)
{
    fixture *fx = data;
    fx->drained++;
    assert_int_equal(tc_server_connections(srv), 0);
    sfx_loop_done(fx);
}

static void handler_drain(tc_request *req, void *data)
{
    fixture *fx = data;
    int i = sfx_record(fx, req);
    if (sfx_str_eq(tc_request_path(req), "/slow")) {
        tc_server_drain(fx->srv, on_drained, fx);
        assert_int_equal(fx->drained, 0);
        assert_int_equal(tc_server_connections(fx->srv), 2);
        atomic_store(&fx->stage, 1);
        return; /* answered on event 1 */
    }
    fx->respond_ret[i] = tc_request_respond(req, 200, "text/plain", NULL, 0, "fast", 4);
}

static void drain_event(fixture *fx, int ev)
{
    assert_int_equal(ev, 1);
    assert_int_equal(fx->nreqs, 2);
    assert_int_equal(tc_server_requests_in_flight(fx->srv), 1);
    fx->respond_ret[1] = tc_request_respond(fx->reqs[1], 200, "text/plain", NULL, 0, "slow", 4);
}

static void client_drain(fixture *fx)
{
    cli a, b, c;
    resp r;
    char v[64];
    CHECK_INT(sfx_cli_connect(fx, &b), 0);
    CHECK_INT(sfx_cli_sends(&b, "GET /b1 HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK_INT(sfx_cli_read_response(&b, &r, 0), 1);
    CHECK_INT(r.status, 200);

    CHECK_INT(sfx_cli_connect(fx, &a), 0);
    CHECK_INT(sfx_cli_sends(&a, "GET /slow HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK(sfx_stage_wait(fx, 1));

    /* no longer accepting */
    CHECK_INT(sfx_cli_connect(fx, &c), -ECONNREFUSED);

    /* a new request on the kept-alive connection: 503 shutting_down, then closed */
    CHECK_INT(sfx_cli_sends(&b, "GET /b2 HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK_INT(sfx_cli_read_response(&b, &r, 0), 1);
    CHECK_INT(r.status, 503);
    CHECK(sfx_error_body_ok(&r, "shutting_down", NULL, 0));
    CHECK(sfx_resp_header(&r, "Retry-After", v, sizeof(v)));
    CHECK(atoi(v) >= 1);
    CHECK_HEADER(&r, "Connection", "close");
    CHECK_CLOSED(&b, 0);
    sfx_cli_close(&b);

    /* the in-flight request is still answered, with Connection: close */
    sfx_client_event(fx);
    CHECK_INT(sfx_cli_read_response(&a, &r, 0), 1);
    CHECK_INT(r.status, 200);
    CHECK_INT(r.body_len, 4);
    CHECK(memcmp(r.body, "slow", 4) == 0);
    CHECK_HEADER(&r, "Connection", "close");
    CHECK_CLOSED(&a, 0);
}

static void test_drain(void **state)
{
    (void)state;
    fixture fx;
    sfx_init(&fx, handler_drain);
    fx.on_event = drain_event;
    sfx_run(&fx, client_drain, 1);
    assert_int_equal(fx.drained, 1);
    assert_int_equal(fx.nreqs, 2); /* /b2 never reached the handler */
    assert_string_equal(fx.seen[0].path, "/b1");
    assert_string_equal(fx.seen[1].path, "/slow");
    assert_int_equal(fx.respond_ret[0], 0);
    assert_int_equal(fx.respond_ret[1], 0);
}

/* Draining with no connection at all: the drained callback runs once, at once. */
static void test_drain_when_idle(void **state)
{
    (void)state;
    uv_loop_t loop;
    tc_server_config cfg;
    tc_server *srv = NULL;
    int drained = 0, closed = 0;
    assert_int_equal(uv_loop_init(&loop), 0);
    tc_server_config_init(&cfg);
    cfg.handler = sfx_handler_noop;
    assert_int_equal(tc_server_new(&srv, &loop, &cfg), 0);
    tc_server_drain(srv, sfx_on_closed_count, &drained);
    assert_int_equal(uv_run(&loop, UV_RUN_NOWAIT), 0);
    assert_int_equal(drained, 1);
    tc_server_drain(srv, sfx_on_closed_count, &drained); /* a second drain does nothing */
    tc_server_close(srv, sfx_on_closed_count, &closed);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(drained, 1);
    assert_int_equal(closed, 1);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_async_answer_from_timer),
        cmocka_unit_test(test_pipelining_answers_in_order),
        cmocka_unit_test(test_pipelining_past_the_pipeline_limit),
        cmocka_unit_test(test_drop_reset_and_clean_close),
        cmocka_unit_test(test_abort_when_client_closes),
        cmocka_unit_test(test_close_aborts_pending_requests),
        cmocka_unit_test(test_drain),
        cmocka_unit_test(test_drain_when_idle),
    };
    return SFX_RUN_TESTS(tests);
}
