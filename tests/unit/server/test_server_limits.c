/*
 * Unit tests for the HTTP/1.1 server (src/server*.c): the connection cap and timeouts, error
 * bodies, the access log, and regression tests for bugs found by these tests. The harness is
 * server_fixture.h.
 */
#include "server_fixture.h"

#include "base/alloc.h"

/* ---- connection cap, timeouts ------------------------------------------------------------------
 */

static atomic_size_t shared_count;

static void client_overload(fixture *fx)
{
    cli a, b, c;
    resp r;
    char v[64];
    CHECK_INT(sfx_cli_connect(fx, &a), 0);
    CHECK_INT(sfx_cli_sends(&a, "GET /a HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK_INT(sfx_cli_read_response(&a, &r, 0), 1);
    CHECK_INT(r.status, 200);
    CHECK_INT(atomic_load(&shared_count), 2);

    /* over the shared cap: answered at once without a request, then closed */
    CHECK_INT(sfx_cli_connect(fx, &b), 0);
    CHECK_INT(sfx_cli_read_response(&b, &r, 0), 1);
    CHECK_INT(r.status, 503);
    CHECK(sfx_error_body_ok(&r, "overloaded", NULL, 0));
    CHECK(sfx_resp_header(&r, "Retry-After", v, sizeof(v)));
    CHECK(atoi(v) >= 1);
    CHECK_HEADER(&r, "Connection", "close");
    CHECK_CLOSED(&b, 0);
    sfx_cli_close(&b);
    CHECK_INT(atomic_load(&shared_count), 2);
    sfx_client_event(fx); /* the loop reads the server's counters */

    /* once a connection goes, the count drops and a new one is served */
    sfx_cli_close(&a);
    for (int i = 0; i < 5000 && atomic_load(&shared_count) != 1; i++)
        usleep(1000);
    CHECK_INT(atomic_load(&shared_count), 1);
    CHECK_INT(sfx_cli_connect(fx, &c), 0);
    CHECK_INT(sfx_cli_sends(&c, "GET /c HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK_INT(sfx_cli_read_response(&c, &r, 0), 1);
    CHECK_INT(r.status, 200);
}

static void on_event_stats(fixture *fx, int ev)
{
    tc_server_get_stats(fx->srv, fx->t);
}

static void test_max_connections_shared_counter(void **state)
{
    (void)state;
    fixture fx;
    tc_server_stats stats = {0};
    sfx_init(&fx, sfx_handler_echo);
    fx.t = &stats;
    fx.on_event = on_event_stats;
    atomic_store(&shared_count, 1); /* another worker holds one connection */
    fx.cfg.max_connections = 2;
    fx.cfg.conn_count = &shared_count;
    sfx_run(&fx, client_overload, 0);
    assert_int_equal(fx.nreqs, 2);
    assert_int_equal(atomic_load(&shared_count), 1); /* only the other worker's is left */
    assert_int_equal(stats.rejected_over_limit, 1);
    assert_int_equal(stats.rejected_no_memory, 0);
}

/* No memory for a connection: it is accepted and closed at once, counted, and the listener goes
 * on. Three connections wait in the backlog while every allocation of the loop fails; the
 * first takes the server's spare handle, the second finds it still closing and waits (libuv
 * pauses the listener), the third comes after. Each must be closed with no answer rather than
 * left hanging, and once memory is back the next connection is served. */
#define REFUSED 3

typedef struct refuse_state {
    atomic_int connected;  /* the client's REFUSED connections are in the backlog */
    tc_server_stats stats; /* the server's, once all of them were closed */
} refuse_state;

static void on_event_refuse(fixture *fx, int ev)
{
    refuse_state *st = fx->t;
    if (ev == 1) {
        /* Hold the loop until all of them wait, so that one accept pass meets them together. */
        atomic_store(&fx->stage, 1);
        for (int i = 0; i < 5000 && !atomic_load(&st->connected); i++)
            usleep(1000);
        tc__alloc_fail_from(1);
    } else if (ev == 2) {
        tc__alloc_fail_nth(0);
        tc_server_get_stats(fx->srv, &st->stats);
        atomic_store(&fx->stage, 2);
    }
}

static void client_refused(fixture *fx)
{
    refuse_state *st = fx->t;
    cli c[REFUSED], d;
    resp r;
    sfx_client_event(fx);
    CHECK(sfx_stage_wait(fx, 1));
    for (int i = 0; i < REFUSED; i++)
        CHECK_INT(sfx_cli_connect(fx, &c[i]), 0);
    atomic_store(&st->connected, 1);
    for (int i = 0; i < REFUSED; i++) {
        int err = -1;
        /* no bytes, then FIN or RST; a read that times out (EAGAIN) means it was left hanging */
        CHECK_INT(sfx_cli_read_eof(&c[i], &err), 0);
        CHECK(err == 0 || err == ECONNRESET);
        sfx_cli_close(&c[i]);
    }
    sfx_client_event(fx);
    CHECK(sfx_stage_wait(fx, 2));
    CHECK_INT(sfx_cli_connect(fx, &d), 0);
    CHECK_INT(sfx_cli_sends(&d, "GET /after HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK_INT(sfx_cli_read_response(&d, &r, 0), 1);
    CHECK_INT(r.status, 200);
    CHECK_STR(r.body, "/after");
}

static void test_no_memory_for_a_connection(void **state)
{
    (void)state;
    fixture fx;
    refuse_state st;
    memset(&st, 0, sizeof(st));
    sfx_init(&fx, sfx_handler_echo);
    fx.t = &st;
    fx.on_event = on_event_refuse;
    sfx_run(&fx, client_refused, 0);
    assert_int_equal(st.stats.rejected_no_memory, REFUSED);
    assert_int_equal(st.stats.rejected_over_limit, 0);
    assert_int_equal(fx.nreqs, 1);
}

static void client_header_timeout(fixture *fx)
{
    cli a, b;
    double t0 = sfx_now_ms();
    CHECK_INT(sfx_cli_connect(fx, &a), 0);
    CHECK_INT(sfx_cli_sends(&a, "GET /never HTTP/1.1\r\nHost: h\r\n"), 0);
    CHECK_INT(sfx_cli_connect(fx, &b), 0); /* sends nothing at all */
    CHECK_ERROR_AND_CLOSE(&a, 408, "timeout");
    CHECK_ERROR_AND_CLOSE(&b, 408, "timeout");
    double dt = sfx_now_ms() - t0;
    CHECK(dt >= 150 && dt < 5000);

    /* on a kept-alive connection, the next request's headers have the same deadline */
    cli c;
    resp r;
    CHECK_INT(sfx_cli_connect(fx, &c), 0);
    CHECK_INT(sfx_cli_sends(&c, "GET /ok HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK_INT(sfx_cli_read_response(&c, &r, 0), 1);
    CHECK_INT(r.status, 200);
    t0 = sfx_now_ms();
    CHECK_INT(sfx_cli_sends(&c, "GET /never HTTP/1.1\r\nHo"), 0);
    CHECK_ERROR_AND_CLOSE(&c, 408, "timeout");
    dt = sfx_now_ms() - t0;
    CHECK(dt >= 150 && dt < 5000);
}

static void test_header_timeout_408(void **state)
{
    (void)state;
    fixture fx;
    sfx_init(&fx, sfx_handler_echo);
    fx.cfg.header_timeout_ms = 200;
    sfx_run(&fx, client_header_timeout, 0);
    assert_int_equal(fx.nreqs, 1); /* only /ok */
}

static void client_idle_timeout(fixture *fx)
{
    cli c;
    resp r;
    CHECK_INT(sfx_cli_connect(fx, &c), 0);
    CHECK_INT(sfx_cli_sends(&c, "GET /1 HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK_INT(sfx_cli_read_response(&c, &r, 0), 1);
    usleep(50000); /* well within the idle timeout: still served */
    CHECK_INT(sfx_cli_sends(&c, "GET /2 HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK_INT(sfx_cli_read_response(&c, &r, 0), 1);
    CHECK_INT(r.status, 200);
    double t0 = sfx_now_ms();
    /* then idle: closed without a response */
    CHECK_CLOSED(&c, 0);
    double dt = sfx_now_ms() - t0;
    CHECK(dt >= 200 && dt < 5000);
}

static void test_idle_timeout_closes(void **state)
{
    (void)state;
    fixture fx;
    sfx_init(&fx, sfx_handler_echo);
    fx.cfg.idle_timeout_ms = 300;
    fx.cfg.header_timeout_ms = 10000;
    sfx_run(&fx, client_idle_timeout, 0);
    assert_int_equal(fx.nreqs, 2);
}

/* ---- error bodies -------------------------------------------------------------------------------
 */

static const char nasty[] = "say \"hi\" \\ back\nslash\ttab\x01\x1f end";

static void handler_errors(tc_request *req, void *data)
{
    fixture *fx = data;
    int i = sfx_record(fx, req);
    tc_str path = tc_request_path(req);
    if (sfx_str_eq(path, "/nasty"))
        fx->respond_ret[i] = tc_request_respond_error(req, 404, "not_found", nasty);
    else if (sfx_str_eq(path, "/busy"))
        fx->respond_ret[i] = tc_request_respond_error(req, 503, "overloaded", "busy");
    else
        fx->respond_ret[i] = tc_request_respond_error(req, 400, "bad_request", "bad \"timeout\"");
}

static void client_errors(fixture *fx)
{
    cli c;
    resp r;
    char v[256];
    CHECK_INT(sfx_cli_connect(fx, &c), 0);
    CHECK_INT(sfx_cli_sends(&c, "GET /nasty HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK_INT(sfx_cli_read_response(&c, &r, 0), 1);
    CHECK_STR(r.line, "HTTP/1.1 404 Not Found");
    CHECK(sfx_error_body_ok(&r, "not_found", v, sizeof(v)));
    CHECK_STR(v, nasty);
    /* no raw control byte in the body */
    for (size_t i = 0; i < r.body_len; i++)
        CHECK((unsigned char)r.body[i] >= 0x20);
    CHECK_HEADER(&r, "Content-Type", "application/json");
    CHECK_HEADER(&r, "Connection", "keep-alive");

    CHECK_INT(sfx_cli_sends(&c, "GET /busy HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK_INT(sfx_cli_read_response(&c, &r, 0), 1);
    CHECK_INT(r.status, 503);
    CHECK(sfx_error_body_ok(&r, "overloaded", v, sizeof(v)));
    CHECK_STR(v, "busy");
    CHECK(sfx_resp_header(&r, "Retry-After", v, sizeof(v)));
    CHECK(atoi(v) >= 1);

    CHECK_INT(sfx_cli_sends(&c, "GET /bad HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK_ERROR_AND_CLOSE(&c, 400, "bad_request");
}

static void test_respond_error_escapes_message(void **state)
{
    (void)state;
    fixture fx;
    sfx_serve(&fx, handler_errors, client_errors, 0);
    sfx_expect_answered(&fx, 3);
}

/* ---- access log ---------------------------------------------------------------------------------
 */

static void handler_log(tc_request *req, void *data)
{
    fixture *fx = data;
    int i = sfx_record(fx, req);
    if (sfx_str_eq(tc_request_path(req), "/log/missing"))
        fx->respond_ret[i] = tc_request_respond_error(req, 404, "not_found", "no such thing");
    else
        fx->respond_ret[i] = tc_request_respond(req, 200, "text/plain", NULL, 0, "logged", 6);
}

static void client_log(fixture *fx)
{
    cli c;
    resp r;
    CHECK_INT(sfx_cli_connect(fx, &c), 0);
    CHECK_INT(sfx_cli_sends(&c, "GET /log/a?secret=1 HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK_INT(sfx_cli_read_response(&c, &r, 0), 1);
    CHECK_INT(
        sfx_cli_sends(&c, "POST /log/missing HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi"),
        0);
    CHECK_INT(sfx_cli_read_response(&c, &r, 0), 1);
    CHECK_INT(r.status, 404);
    CHECK_INT(sfx_cli_sends(&c, "HEAD /log/head HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK_INT(sfx_cli_read_response(&c, &r, 1), 1);
    CHECK_INT(r.status, 200);
}

static void test_access_log(void **state)
{
    (void)state;
    fixture fx;
    FILE *log = tmpfile();
    assert_non_null(log);
    sfx_init(&fx, handler_log);
    fx.cfg.access_log = log;
    sfx_run(&fx, client_log, 0);
    assert_int_equal(fx.nreqs, 3);

    rewind(log);
    /* TIME CLIENT "METHOD TARGET HTTP/x.y" STATUS BYTES DURATION_US ATTEMPTS REQUEST_ID; the
     * target keeps its query. */
    static const struct {
        const char *method, *target;
        int status;
    } want[] = {
        {"GET", "/log/a?secret=1", 200}, {"POST", "/log/missing", 404}, {"HEAD", "/log/head", 200}};
    char line[1024];
    int n = 0;
    while (fgets(line, sizeof(line), log) != NULL) {
        char when[64], client[64], method[16], target[512], proto[16], attempts[16], id[160];
        int status = 0;
        unsigned long long us = 0;
        size_t bytes = 0;
        assert_true(n < 3);
        assert_int_equal(line[strlen(line) - 1], '\n');
        assert_int_equal(sscanf(line, "%63s %63s \"%15s %511s %15[^\"]\" %d %zu %llu %15s %159s",
                                when, client, method, target, proto, &status, &bytes, &us, attempts,
                                id),
                         10);
        /* 2026-11-21T16:57:44.123Z */
        assert_int_equal(strlen(when), 24);
        assert_int_equal(when[4], '-');
        assert_int_equal(when[10], 'T');
        assert_int_equal(when[19], '.');
        assert_int_equal(when[23], 'Z');
        assert_string_equal(client, "127.0.0.1");
        assert_string_equal(method, want[n].method);
        assert_string_equal(target, want[n].target);
        assert_string_equal(proto, "HTTP/1.1");
        assert_int_equal(status, want[n].status);
        assert_true(us < 5000000);
        assert_true(bytes > 60); /* at least a status line, Date and Content-Length */
        assert_string_equal(attempts, "-");
        assert_int_equal(strlen(id), 32); /* none was sent: generated */
        n++;
    }
    assert_int_equal(n, 3);
    fclose(log);
}

/* ---- what may change while the server runs (a reload) ------------------------------------- */

typedef struct switch_state {
    FILE *json_log;
    tc_request *held;
} switch_state;

/* /hold waits for the client's event; everything else is answered at once. */
static void handler_switch(tc_request *req, void *data)
{
    fixture *fx = data;
    switch_state *st = fx->t;
    int i = sfx_record(fx, req);
    if (sfx_str_eq(tc_request_path(req), "/hold")) {
        st->held = req;
        atomic_store(&fx->stage, 1);
        return;
    }
    fx->respond_ret[i] = tc_request_respond(req, 200, "text/plain", NULL, 0, "ok", 2);
}

/* The reload: the json log, one connection at most and a 4-byte body limit from now on; then
 * the request handed over before it is answered (it keeps its text log). */
static void on_event_switch(fixture *fx, int ev)
{
    switch_state *st = fx->t;
    tc_server_set_access_log(fx->srv, st->json_log, TC_ACCESS_LOG_JSON);
    tc_server_set_max_connections(fx->srv, 1);
    tc_server_set_max_body(fx->srv, 4);
    fx->respond_ret[0] = tc_request_respond(st->held, 200, "text/plain", NULL, 0, "held", 4);
    atomic_store(&fx->stage, 2);
}

static void client_switch(fixture *fx)
{
    cli a, b;
    resp r;
    CHECK_INT(sfx_cli_connect(fx, &a), 0);
    CHECK_INT(sfx_cli_sends(&a, "GET /hold HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK(sfx_stage_wait(fx, 1));
    sfx_client_event(fx);
    CHECK(sfx_stage_wait(fx, 2));
    CHECK_INT(sfx_cli_read_response(&a, &r, 0), 1);
    CHECK_STR(r.body, "held");
    /* a is open: a second connection is one too many now */
    CHECK_INT(sfx_cli_connect(fx, &b), 0);
    CHECK_INT(sfx_cli_read_response(&b, &r, 0), 1);
    CHECK_INT(r.status, 503);
    CHECK(sfx_error_body_ok(&r, "overloaded", NULL, 0));
    sfx_cli_close(&b);
    CHECK_INT(sfx_cli_sends(&a, "GET /after HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK_INT(sfx_cli_read_response(&a, &r, 0), 1);
    CHECK_INT(r.status, 200);
    CHECK_INT(sfx_cli_sends(&a, "POST /big HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n12345"),
              0);
    CHECK_ERROR_AND_CLOSE(&a, 413, "too_large");
    sfx_cli_close(&a);
}

/* The lines of a log file, each NUL-terminated in lines[]; returns how many. */
static int read_lines(FILE *log, char lines[][1024], int max)
{
    int n = 0;
    rewind(log);
    while (n < max && fgets(lines[n], 1024, log) != NULL)
        n++;
    return n;
}

static void test_limits_and_log_change_while_running(void **state)
{
    (void)state;
    fixture fx;
    switch_state st = {tmpfile(), NULL};
    FILE *text_log = tmpfile();
    char lines[8][1024];
    assert_non_null(st.json_log);
    assert_non_null(text_log);
    sfx_init(&fx, handler_switch);
    fx.t = &st;
    fx.on_event = on_event_switch;
    fx.cfg.access_log = text_log;
    sfx_run(&fx, client_switch, 0);
    assert_int_equal(fx.respond_ret[0], 0);
    /* the held request was handed over before the change: its text line is in the old log */
    assert_int_equal(read_lines(text_log, lines, 8), 1);
    assert_non_null(strstr(lines[0], "\"GET /hold HTTP/1.1\" 200 "));
    /* everything after it is json in the new one: the 503, /after and the 413 */
    int n = read_lines(st.json_log, lines, 8);
    assert_int_equal(n, 3);
    int after = 0, too_large = 0, over = 0;
    for (int i = 0; i < n; i++) {
        json_error_t err;
        json_t *j = json_loads(lines[i], 0, &err);
        assert_non_null(j);
        json_int_t status = json_integer_value(json_object_get(j, "status"));
        const char *path = json_string_value(json_object_get(j, "target"));
        after += status == 200 && path != NULL && strcmp(path, "/after") == 0;
        too_large += status == 413;
        over += status == 503;
        json_decref(j);
    }
    assert_int_equal(after, 1);
    assert_int_equal(too_large, 1);
    assert_int_equal(over, 1);
    fclose(text_log);
    fclose(st.json_log);
}

/* ---- regression tests for bugs found by this file ------------------------------------------- */

/* Found as a bug by this file: a request finished after tc_server_close() used to touch the
 * freed server. Contract now: close_cb waits until every request handed to the handler has been
 * finished, and a late finish returns 0 and only frees the request. */
static void finish_after_close(fixture *fx, void *arg)
{
    tc_request *req = arg;
    assert_int_equal(fx->closed, 0); /* close waits for the requests it handed out */
    fx->respond_ret[0] = tc_request_respond(req, 200, "text/plain", NULL, 0, "late", 4);
    sfx_loop_done(fx);
}

static void on_abort_finish_later(tc_request *req, void *data)
{
    fixture *fx = data;
    fx->aborts++;
    sfx_later(fx, 20, finish_after_close, req);
}

static void close_soon(fixture *fx, void *arg)
{
    (void)arg;
    sfx_close_server(fx);
    sfx_loop_done(fx);
}

static void handler_hold_then_close(tc_request *req, void *data)
{
    fixture *fx = data;
    sfx_record(fx, req);
    tc_request_on_abort(req, on_abort_finish_later, fx);
    sfx_later(fx, 10, close_soon, NULL);
}

static void client_one_pending(fixture *fx)
{
    cli a;
    CHECK_INT(sfx_cli_connect(fx, &a), 0);
    CHECK_INT(sfx_cli_sends(&a, "GET /hold HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK_CLOSED(&a, 0);
}

static void test_finish_after_server_close_waits(void **state)
{
    (void)state;
    fixture fx;
    sfx_serve(&fx, handler_hold_then_close, client_one_pending, 2);
    assert_int_equal(fx.aborts, 1);
    assert_int_equal(fx.respond_ret[0], 0);
}

/* Found as a bug by this file: tc_server_close() called from inside the handler, after the handler
 * answered its request, is a heap-use-after-free. conn_close() frees the finished request (it is
 * still at the queue head because the handler runs inside the read callback), and conn_dispatch()
 * then reads r->next from it (src/server/server.c, the `r = r->next` step of the loop in
 * conn_dispatch). Input: one "GET /close-now"; the handler calls tc_request_respond() and then
 * tc_server_close(). Expected: the close completes; actual: ASan heap-use-after-free in
 * conn_dispatch. */
static void handler_close_inside(tc_request *req, void *data)
{
    fixture *fx = data;
    int i = sfx_record(fx, req);
    fx->respond_ret[i] = tc_request_respond(req, 200, "text/plain", NULL, 0, "bye", 3);
    sfx_close_server(fx);
    sfx_loop_done(fx);
}

static void client_close_now(fixture *fx)
{
    cli a;
    int err = -1;
    CHECK_INT(sfx_cli_connect(fx, &a), 0);
    CHECK_INT(sfx_cli_sends(&a, "GET /close-now HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    sfx_cli_read_eof(&a, &err); /* closed, with or without the answer */
}

static void test_close_inside_handler_after_answer(void **state)
{
    (void)state;
    fixture fx;
    sfx_serve(&fx, handler_close_inside, client_close_now, 1);
    assert_int_equal(fx.nreqs, 1);
}

/* Found as a bug by this file: a hard close from inside the handler, with the request not
 * answered yet, leaked the requests that arrived in the same read after it (never handed to the
 * handler, so nobody could finish them). Input: "GET /hold" and "GET /second" pipelined in one
 * write; the handler holds /hold and calls tc_server_close(); the abort callback answers /hold.
 * Expected: /second freed, the close completes, nothing leaks. */
static void on_closed_count_pair(tc_server *srv, void *data)
{
    fixture *fx = data;
    (void)srv;
    fx->closed++;
}

static void on_abort_answer(tc_request *req, void *data)
{
    fixture *fx = data;
    fx->aborts++;
    fx->respond_ret[0] = tc_request_respond(req, 200, "text/plain", NULL, 0, "x", 1);
}

static void handler_hold_close_inside(tc_request *req, void *data)
{
    fixture *fx = data;
    sfx_record(fx, req);
    tc_request_on_abort(req, on_abort_answer, fx);
    tc_server *srv = fx->srv;
    fx->srv = NULL;
    tc_server_close(srv, on_closed_count_pair, fx);
    sfx_loop_done(fx);
}

static void client_pipelined_pair(fixture *fx)
{
    cli a;
    int err = -1;
    CHECK_INT(sfx_cli_connect(fx, &a), 0);
    CHECK_INT(sfx_cli_sends(&a, "GET /hold HTTP/1.1\r\nHost: h\r\n\r\n"
                                "GET /second HTTP/1.1\r\nHost: h\r\n\r\n"),
              0);
    CHECK_INT(sfx_cli_read_eof(&a, &err), 0);
}

static void test_close_inside_handler_frees_pipelined(void **state)
{
    (void)state;
    fixture fx;
    sfx_serve(&fx, handler_hold_close_inside, client_pipelined_pair, 1);
    assert_int_equal(fx.nreqs, 1);
    assert_int_equal(fx.aborts, 1);
    assert_int_equal(fx.respond_ret[0], 0);
}

/* Found as a bug by this file: tc_request_respond_error() used to cut the message at 120 bytes with
 * snprintf, which can split a UTF-8 sequence, and the body is then not valid JSON (RFC 8259
 * requires UTF-8). Input: message of 119 'a' followed by U+00E9 (0xC3 0xA9). Expected: a body that
 * parses as JSON (the character kept or dropped whole); actual: the body ends in a lone 0xC3 byte
 * and jansson rejects it. */
static char long_message[160];

static void handler_long_error(tc_request *req, void *data)
{
    fixture *fx = data;
    int i = sfx_record(fx, req);
    fx->respond_ret[i] = tc_request_respond_error(req, 404, "not_found", long_message);
}

static void client_long_error(fixture *fx)
{
    cli c;
    resp r;
    char v[256];
    CHECK_INT(sfx_cli_connect(fx, &c), 0);
    CHECK_INT(sfx_cli_sends(&c, "GET /long HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK_INT(sfx_cli_read_response(&c, &r, 0), 1);
    CHECK_INT(r.status, 404);
    CHECK(sfx_error_body_ok(&r, "not_found", v, sizeof(v)));
    CHECK(strncmp(v, long_message, 119) == 0);
}

static void test_error_message_cut_at_utf8_boundary(void **state)
{
    (void)state;
    memset(long_message, 'a', 119);
    strcpy(long_message + 119, "\xc3\xa9 and more");
    fixture fx;
    sfx_serve(&fx, handler_long_error, client_long_error, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_max_connections_shared_counter),
        cmocka_unit_test(test_no_memory_for_a_connection),
        cmocka_unit_test(test_header_timeout_408),
        cmocka_unit_test(test_idle_timeout_closes),
        cmocka_unit_test(test_respond_error_escapes_message),
        cmocka_unit_test(test_access_log),
        cmocka_unit_test(test_limits_and_log_change_while_running),
        cmocka_unit_test(test_finish_after_server_close_waits),
        cmocka_unit_test(test_close_inside_handler_after_answer),
        cmocka_unit_test(test_close_inside_handler_frees_pipelined),
        cmocka_unit_test(test_error_message_cut_at_utf8_boundary),
    };
    return SFX_RUN_TESTS(tests);
}
