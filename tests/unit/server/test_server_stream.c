/*
 * Unit tests for streaming in the HTTP/1.1 server (src/server/server_stream.c): requests taken at
 * their head (cfg.head_filter), request bodies read in pieces with pause and resume, the limit and
 * 100-continue, streamed responses (known length, chunked, close-delimited, no body), back-pressure
 * and the writable callback, end and abort, pipelining, the access log and 499, cancellation. The
 * harness is server_fixture.h; one test looks inside the connection (server_internal.h) to check
 * the bound on what a paused body holds.
 */
#include "server_fixture.h"

#include "server/server_internal.h"

/* What the loop side saw, per request (in dispatch order). */
#define NREC 16
typedef struct rec {
    tc_request *req;
    int streaming;
    int64_t body_length;
    uint64_t ready_ns;
    char body[256];
    size_t body_len; /* bytes the body callback delivered */
    int pieces;      /* calls with bytes */
    int last_status; /* of the last call */
    int last_calls;  /* how many last calls: exactly one */
    int read_rc;     /* tc_request_read_body's return */
    int order[4];    /* 1 body's last call, 2 writable, 3 abort: in the order they ran */
    int norder;
    uint64_t end_after_ms; /* ready (the head) to the body's end */
} rec;

static struct {
    fixture *fx;
    rec r[NREC];
    int n;
    int in_call;    /* inside a call whose callback must not run inside it */
    int ran_inside; /* ... and one did */
    int cancelled_inside;
    int writable_calls, writable_status;
    size_t writable_pending;
    int misuse_ok;
    /* big bodies and floods */
    uint64_t total;
    int pattern_ok;
    size_t max_held;
    int reading_when_stuck;
    uint64_t total_when_stuck;
    size_t max_pending, pending_at_arm;
    size_t pending_behind;
    long log_at_head;
} T;

static void reset(fixture *fx)
{
    memset(&T, 0, sizeof(T));
    T.fx = fx;
    T.pattern_ok = 1;
}

static int path_is(tc_request *req, const char *p)
{
    return sfx_str_eq(tc_request_path(req), p);
}

static int path_starts(tc_request *req, const char *p)
{
    tc_str s = tc_request_path(req);
    size_t n = strlen(p);
    return s.len >= n && memcmp(s.base, p, n) == 0;
}

/* The head filter of every test: paths under /s are streamed. */
static int filter_s(tc_request *req, void *data)
{
    (void)data;
    return path_starts(req, "/s");
}

/* sfx_init with the records cleared and filter_s. */
static void stream_init(fixture *fx, tc_handler_fn handler)
{
    sfx_init(fx, handler);
    reset(fx);
    fx->cfg.head_filter = filter_s;
}

/* The latest record of req (request objects are reused once finished). */
static rec *rec_of(tc_request *req)
{
    for (int i = T.n - 1; i >= 0; i--)
        if (T.r[i].req == req)
            return &T.r[i];
    fail_msg("request not recorded");
    return NULL;
}

static rec *record_req(tc_request *req)
{
    assert_true(T.n < NREC);
    rec *r = &T.r[T.n++];
    r->req = req;
    r->streaming = tc_request_is_streaming(req);
    r->body_length = tc_request_body_length(req);
    r->ready_ns = tc_request_ready_ns(req);
    assert_true(r->ready_ns > 0 && r->ready_ns <= uv_hrtime());
    return r;
}

static void note(rec *r, int what)
{
    if (r->norder < 4)
        r->order[r->norder++] = what;
}

/* A body callback that keeps the bytes and counts the calls. */
static void on_body_keep(tc_request *req, int status, const char *data, size_t len, void *arg)
{
    (void)arg;
    rec *r = rec_of(req);
    if (T.in_call)
        T.ran_inside++;
    if (len > 0) {
        assert_int_equal(status, 0);
        assert_true(r->body_len + len < sizeof(r->body));
        memcpy(r->body + r->body_len, data, len);
        r->body_len += len;
        r->pieces++;
        atomic_store(&T.fx->stage, r->pieces);
        return;
    }
    r->last_status = status;
    r->last_calls++;
    r->end_after_ms = (uv_hrtime() - r->ready_ns) / 1000000;
    note(r, 1);
}

/* Streams body[0..len) back as a response of known length, in two writes. */
static void answer_streamed(tc_request *req, const char *body, size_t len)
{
    assert_int_equal(tc_request_respond_head(req, 200, "text/plain", NULL, 0, (int64_t)len), 0);
    assert_int_equal(tc_request_write(req, body, len / 2), 0);
    assert_int_equal(tc_request_write(req, body + len / 2, len - len / 2), 0);
    assert_int_equal(tc_request_end(req), 0);
}

/* ---- a request taken at its head, its body in pieces; the whole-body path unchanged ---------- */

static void on_body_echo(tc_request *req, int status, const char *data, size_t len, void *arg)
{
    on_body_keep(req, status, data, len, arg);
    rec *r = rec_of(req);
    if (len == 0 && status == 0)
        answer_streamed(req, r->body, r->body_len);
}

static void handler_pieces(tc_request *req, void *data)
{
    fixture *fx = data;
    int i = sfx_record(fx, req);
    rec *r = record_req(req);
    tc_str addr = tc_request_client_addr(req); /* no access log: looked up when asked */
    assert_true(sfx_str_eq(addr, "127.0.0.1"));
    assert_true(tc_request_client_addr(req).base == addr.base);
    if (!r->streaming) {
        tc_str body = tc_request_body(req);
        fx->respond_ret[i] =
            tc_request_respond(req, 200, "text/plain", NULL, 0, body.base, body.len);
        return;
    }
    T.in_call = 1;
    r->read_rc = tc_request_read_body(req, UINT64_MAX, on_body_echo, fx);
    T.in_call = 0;
}

static void client_pieces(fixture *fx)
{
    cli c;
    resp r;
    CHECK_INT(sfx_cli_connect(fx, &c), 0);
    /* The body in two parts: the handler has the first before the second is sent. */
    CHECK_INT(
        sfx_cli_sends(&c, "POST /s/up HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nhello"), 0);
    CHECK(sfx_stage_wait(fx, 1));
    usleep(60000);
    CHECK_INT(sfx_cli_sends(&c, "world"), 0);
    CHECK_INT(sfx_cli_read_response(&c, &r, 0), 1);
    CHECK_INT(r.status, 200);
    CHECK_STR(r.body, "helloworld");
    CHECK_HEADER(&r, "Connection", "keep-alive");
    CHECK_HEADER(&r, "Content-Length", "10");
    /* the whole-body path, as without a filter */
    CHECK_INT(sfx_cli_sends(&c, "POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nwhole"),
              0);
    CHECK_INT(sfx_cli_read_response(&c, &r, 0), 1);
    CHECK_STR(r.body, "whole");
    /* no body: its end comes from the loop */
    CHECK_INT(sfx_cli_sends(&c, "GET /s/none HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK_INT(sfx_cli_read_response(&c, &r, 0), 1);
    CHECK_INT(r.status, 200);
    CHECK_INT(r.body_len, 0);
    /* max_body (8) bounds the whole-body path only: a streamed body of 12 bytes is read */
    CHECK_INT(sfx_cli_sends(&c, "POST /s/big HTTP/1.1\r\nHost: h\r\nContent-Length: 12\r\n\r\n"
                                "twelve bytes"),
              0);
    CHECK_INT(sfx_cli_read_response(&c, &r, 0), 1);
    CHECK_STR(r.body, "twelve bytes");
    CHECK_INT(sfx_cli_sends(&c, "POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 9\r\n\r\n"
                                "nine byte"),
              0);
    CHECK_ERROR_AND_CLOSE(&c, 413, "too_large");
}

static void test_body_in_pieces_whole_path_unchanged(void **state)
{
    (void)state;
    fixture fx;
    stream_init(&fx, handler_pieces);
    fx.cfg.max_body = 8;
    sfx_run(&fx, client_pieces, 0);

    assert_int_equal(T.n, 4);
    rec *up = &T.r[0], *whole = &T.r[1], *none = &T.r[2], *big = &T.r[3];
    assert_int_equal(up->streaming, 1);
    assert_int_equal(up->body_length, 10);
    assert_int_equal(up->read_rc, 0);
    assert_true(up->pieces >= 2); /* the bytes came as they arrived */
    assert_int_equal(up->last_calls, 1);
    assert_int_equal(up->last_status, 0);
    assert_true(up->end_after_ms >= 50);      /* ready is the head, not the end of the body */
    assert_int_equal(fx.seen[0].body_len, 0); /* tc_request_body: empty when streamed */
    assert_int_equal(whole->streaming, 0);
    assert_int_equal(whole->body_length, 5);
    assert_string_equal(fx.seen[1].body, "whole");
    assert_int_equal(none->streaming, 1);
    assert_int_equal(none->body_length, 0);
    assert_int_equal(none->last_calls, 1);
    assert_int_equal(none->last_status, 0);
    assert_int_equal(big->body_len, 12);
    assert_int_equal(T.ran_inside, 0); /* never inside tc_request_read_body */
    assert_int_equal(fx.nreqs, 4);     /* the 413 was the server's own */
}

/* ---- chunked with a trailer, 100-continue when reading starts, a chunked response ----------- */

static void on_body_chunked(tc_request *req, int status, const char *data, size_t len, void *arg)
{
    on_body_keep(req, status, data, len, arg);
    if (len > 0 || status != 0)
        return;
    tc_str v;
    assert_int_equal(tc_request_header(req, "X-Trailer", &v), 0); /* trailers are dropped */
    assert_int_equal(
        tc_request_respond_head(req, 200, "text/plain", NULL, 0, TC_SERVER_LENGTH_UNKNOWN), 0);
    assert_int_equal(tc_request_write(req, "hello", 5), 0);
    assert_int_equal(tc_request_write(req, "", 0), 0); /* writes nothing: not the last chunk */
    assert_int_equal(tc_request_write(req, " world", 6), 0);
    assert_int_equal(tc_request_end(req), 0);
}

static void handler_continue(tc_request *req, void *data)
{
    fixture *fx = data;
    sfx_record(fx, req);
    record_req(req);
    atomic_store(&fx->stage, 1); /* reading starts when the client says so */
}

static void event_continue(fixture *fx, int ev)
{
    (void)ev;
    rec *r = &T.r[0];
    r->read_rc = tc_request_read_body(r->req, 1000, on_body_chunked, fx);
}

static void client_continue(fixture *fx)
{
    cli c;
    resp r;
    int err;
    CHECK_INT(sfx_cli_connect(fx, &c), 0);
    CHECK_INT(sfx_cli_sends(&c, "POST /s/cont HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
                                "Expect: 100-continue\r\n\r\n"),
              0);
    CHECK(sfx_stage_wait(fx, 1));
    CHECK(sfx_cli_quiet(&c, 150)); /* no 100 before the handler reads */
    sfx_client_event(fx);
    CHECK_INT(sfx_cli_read_head(&c, &r), 1);
    CHECK_INT(r.status, 100);
    CHECK_STR(r.head, "");
    CHECK_INT(sfx_cli_sends(&c, "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"), 0);
    CHECK_INT(sfx_cli_read_head(&c, &r), 1);
    CHECK_INT(r.status, 200);
    CHECK_HEADER(&r, "Transfer-Encoding", "chunked");
    CHECK_INT(sfx_resp_header_count(&r, "Content-Length"), 0);
    CHECK_HEADER(&r, "Connection", "keep-alive");
    CHECK_INT(sfx_cli_read_chunked(&c, &r, NULL, NULL, &err), 1);
    CHECK_INT(r.body_len, 11);
    CHECK(memcmp(r.body, "hello world", 11) == 0);
    /* the connection goes on */
    CHECK_INT(sfx_cli_sends(&c, "GET /plain HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK_INT(sfx_cli_read_response(&c, &r, 0), 1);
    CHECK_INT(r.status, 200);
}

static void handler_continue_or_echo(tc_request *req, void *data)
{
    if (tc_request_is_streaming(req))
        handler_continue(req, data);
    else
        sfx_handler_echo(req, data);
}

static void test_chunked_body_continue_chunked_response(void **state)
{
    (void)state;
    fixture fx;
    stream_init(&fx, handler_continue_or_echo);
    fx.on_event = event_continue;
    sfx_run(&fx, client_continue, 0);

    rec *r = &T.r[0];
    assert_int_equal(r->body_length, TC_SERVER_LENGTH_UNKNOWN);
    assert_int_equal(r->read_rc, 0);
    assert_int_equal(r->body_len, 11);
    assert_memory_equal(r->body, "hello world", 11);
    assert_int_equal(r->last_calls, 1);
    assert_int_equal(r->last_status, 0);
}

/* ---- the limit: at once by Content-Length (no 100), or as a chunked body grows -------------- */

static void on_body_limit(tc_request *req, int status, const char *data, size_t len, void *arg)
{
    on_body_keep(req, status, data, len, arg);
    if (len == 0)
        assert_int_equal(tc_request_respond_error(req, 413, "too_large", "over 8 bytes"), 0);
}

static void handler_limit(tc_request *req, void *data)
{
    fixture *fx = data;
    sfx_record(fx, req);
    rec *r = record_req(req);
    r->read_rc = tc_request_read_body(req, 8, on_body_limit, fx);
    if (r->read_rc == TC_ETOOLARGE)
        tc_request_respond_error(req, 413, "too_large", "over 8 bytes");
}

static void client_limit(fixture *fx)
{
    cli c;
    CHECK_INT(sfx_cli_connect(fx, &c), 0);
    CHECK_INT(sfx_cli_sends(&c, "POST /s/limit HTTP/1.1\r\nHost: h\r\nContent-Length: 1000\r\n"
                                "Expect: 100-continue\r\n\r\n"),
              0);
    CHECK_ERROR_AND_CLOSE(&c, 413, "too_large"); /* the first answer: no 100 before it */
    CHECK_INT(sfx_cli_connect(fx, &c), 0);
    CHECK_INT(sfx_cli_sends(&c, "POST /s/limit HTTP/1.1\r\nHost: h\r\n"
                                "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"),
              0);
    CHECK(sfx_stage_wait(fx, 1));
    CHECK_INT(sfx_cli_sends(&c, "5\r\nworld\r\n"), 0);
    CHECK_ERROR_AND_CLOSE(&c, 413, "too_large");
}

static void test_body_limit(void **state)
{
    (void)state;
    fixture fx;
    stream_init(&fx, handler_limit);
    sfx_run(&fx, client_limit, 0);

    assert_int_equal(T.n, 2);
    assert_int_equal(T.r[0].read_rc, TC_ETOOLARGE);
    assert_int_equal(T.r[0].last_calls, 0); /* an error return: the callback never runs */
    assert_int_equal(T.r[1].read_rc, 0);
    assert_int_equal(T.r[1].body_len, 5);
    assert_int_equal(T.r[1].last_calls, 1);
    assert_int_equal(T.r[1].last_status, TC_ETOOLARGE);
}

/* ---- pause and resume: what a paused body holds is bounded ---------------------------------- */

#define BIG_BODY ((uint64_t)24 * 1024 * 1024)
#define BIG_STEP ((uint64_t)256 * 1024)

static char pattern_at(uint64_t i)
{
    return (char)('a' + (i * 7 + i / 4093) % 26);
}

static void resume_later(fixture *fx, void *arg)
{
    (void)fx;
    T.in_call = 1;
    tc_request_body_resume(arg);
    T.in_call = 0;
}

static void on_body_big(tc_request *req, int status, const char *data, size_t len, void *arg)
{
    fixture *fx = arg;
    if (T.in_call)
        T.ran_inside++;
    if (len == 0) {
        rec *r = rec_of(req);
        r->last_status = status;
        r->last_calls++;
        char text[32];
        int n = snprintf(text, sizeof(text), "%llu", (unsigned long long)T.total);
        assert_int_equal(tc_request_respond(req, 200, "text/plain", NULL, 0, text, (size_t)n), 0);
        return;
    }
    for (size_t i = 0; i < len; i++)
        if (data[i] != pattern_at(T.total + i))
            T.pattern_ok = 0;
    uint64_t before = T.total;
    T.total += len;
    if (before == 0) {
        tc_request_body_pause(req); /* the client pushes until it is stuck */
        atomic_store(&fx->stage, 1);
    } else if (T.total / BIG_STEP != before / BIG_STEP) {
        tc_request_body_pause(req); /* many short pauses on the way */
        sfx_later(fx, 1, resume_later, req);
    }
}

static void handler_big(tc_request *req, void *data)
{
    fixture *fx = data;
    sfx_record(fx, req);
    rec *r = record_req(req);
    r->read_rc = tc_request_read_body(req, UINT64_MAX, on_body_big, fx);
}

static void event_big(fixture *fx, int ev)
{
    (void)ev;
    tc__srv_conn *c = tc__container_of(fx->srv->conns.next, tc__srv_conn, link);
    T.max_held = c->pending_len - c->pending_off;
    T.reading_when_stuck = c->reading;
    T.total_when_stuck = T.total;
    tc_request_body_resume(T.r[0].req);
}

static void client_big(fixture *fx)
{
    cli c;
    resp r;
    static char block[65536];
    CHECK_INT(sfx_cli_connect(fx, &c), 0);
    char head[128];
    snprintf(head, sizeof(head), "POST /s/big HTTP/1.1\r\nHost: h\r\nContent-Length: %llu\r\n\r\n",
             (unsigned long long)BIG_BODY);
    CHECK_INT(sfx_cli_sends(&c, head), 0);
    uint64_t sent = 0;
    /* Push without blocking until the socket takes nothing for 300 ms: the server has stopped
     * reading. */
    for (;;) {
        size_t n = sizeof(block);
        if (n > BIG_BODY - sent)
            n = (size_t)(BIG_BODY - sent);
        for (size_t i = 0; i < n; i++)
            block[i] = pattern_at(sent + i);
        ssize_t w = send(c.fd, block, n, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w > 0) {
            sent += (uint64_t)w;
            continue;
        }
        CHECK(w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
        struct pollfd p = {.fd = c.fd, .events = POLLOUT};
        if (poll(&p, 1, 300) == 0)
            break;
    }
    CHECK(sent < BIG_BODY); /* stuck well before the end */
    CHECK(sfx_stage_wait(fx, 1));
    sfx_client_event(fx);
    while (sent < BIG_BODY) {
        size_t n = sizeof(block);
        if (n > BIG_BODY - sent)
            n = (size_t)(BIG_BODY - sent);
        for (size_t i = 0; i < n; i++)
            block[i] = pattern_at(sent + i);
        CHECK_INT(sfx_cli_send(&c, block, n), 0);
        sent += n;
    }
    CHECK_INT(sfx_cli_read_response(&c, &r, 0), 1);
    CHECK_INT(r.status, 200);
    CHECK_INT(strtoull(r.body, NULL, 10), BIG_BODY);
}

static void test_pause_resume_bounded(void **state)
{
    (void)state;
    fixture fx;
    stream_init(&fx, handler_big);
    fx.on_event = event_big;
    sfx_run(&fx, client_big, 0);

    assert_int_equal(T.r[0].read_rc, 0);
    assert_int_equal(T.total, BIG_BODY);
    assert_true(T.pattern_ok);
    assert_int_equal(T.r[0].last_calls, 1);
    assert_int_equal(T.r[0].last_status, 0);
    /* while paused: the first piece only was delivered, at most the bound held, no reading */
    assert_true(T.total_when_stuck <= TC_SERVER_BODY_HELD_MAX);
    assert_true(T.max_held <= TC_SERVER_BODY_HELD_MAX);
    assert_true(T.max_held > 0);
    assert_int_equal(T.reading_when_stuck, 0);
    assert_int_equal(T.ran_inside, 0); /* never inside tc_request_body_resume */
}

/* ---- streamed responses: known length, HEAD, no-content statuses, HTTP/1.0 ------------------ */

static void handler_forms(tc_request *req, void *data)
{
    fixture *fx = data;
    sfx_record(fx, req);
    record_req(req);
    static const tc_server_header xa = {"X-A", "1"};
    if (path_is(req, "/s/len")) {
        int ok = tc_request_write(req, "x", 1) == TC_EINVAL && tc_request_end(req) == TC_EINVAL &&
                 tc_request_respond_head(req, 200, NULL, NULL, 0, -2) == TC_EINVAL;
        assert_int_equal(tc_request_respond_head(req, 200, "text/plain", &xa, 1, 11), 0);
        ok = ok && tc_request_respond_head(req, 200, NULL, NULL, 0, 1) == TC_EINVAL &&
             tc_request_respond(req, 200, NULL, NULL, 0, NULL, 0) == TC_EINVAL;
        assert_int_equal(tc_request_write(req, "hello ", 6), 0);
        assert_int_equal(tc_request_write(req, "world!", 6), TC_EINVAL); /* one byte too many */
        assert_int_equal(tc_request_write(req, "world", 5), 0);
        assert_int_equal(tc_request_end(req), 0);
        ok = ok && tc_request_end(req) == TC_EINVAL && tc_request_write(req, "x", 1) == TC_EINVAL;
        T.misuse_ok += ok;
    } else if (path_is(req, "/s/head-len")) {
        assert_int_equal(tc_request_respond_head(req, 200, "text/plain", NULL, 0, 5), 0);
        assert_int_equal(tc_request_write(req, "hello", 5), 0); /* dropped */
        assert_int_equal(tc_request_end(req), 0);
    } else if (path_is(req, "/s/unknown")) { /* HEAD, or HTTP/1.0 */
        assert_int_equal(
            tc_request_respond_head(req, 200, "text/plain", NULL, 0, TC_SERVER_LENGTH_UNKNOWN), 0);
        assert_int_equal(tc_request_write(req, "abc", 3), 0);
        assert_int_equal(tc_request_write(req, "def", 3), 0);
        assert_int_equal(tc_request_end(req), 0);
    } else if (path_is(req, "/s/status")) {
        int status = atoi(tc_request_query(req).base);
        assert_int_equal(tc_request_respond_head(req, status, "text/plain", NULL, 0,
                                                 status == 304 ? 10 : TC_SERVER_LENGTH_UNKNOWN),
                         0);
        assert_int_equal(tc_request_write(req, "not sent", 8), 0);
        assert_int_equal(tc_request_end(req), 0);
    } else if (path_is(req, "/s/short")) {
        assert_int_equal(tc_request_respond_head(req, 200, "text/plain", NULL, 0, 10), 0);
        assert_int_equal(tc_request_write(req, "abc", 3), 0);
        assert_int_equal(tc_request_end(req), TC_EPROTO); /* cut: the client sees it short */
    } else if (path_is(req, "/whole")) {
        /* a request handled whole may stream its answer too */
        assert_int_equal(tc_request_read_body(req, 10, on_body_keep, fx), TC_EINVAL);
        assert_int_equal(tc_request_respond_head(req, 200, NULL, NULL, 0, -1), 0);
        assert_int_equal(tc_request_write(req, "whole", 5), 0);
        assert_int_equal(tc_request_end(req), 0);
    } else {
        fail_msg("unexpected path");
    }
}

static void client_forms(fixture *fx)
{
    cli c;
    resp r;
    char v[64];
    int err;
    CHECK_INT(sfx_cli_connect(fx, &c), 0);
    CHECK_INT(sfx_cli_sends(&c, "GET /s/len HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK_INT(sfx_cli_read_response(&c, &r, 0), 1);
    CHECK_INT(r.status, 200);
    CHECK_HEADER(&r, "Content-Length", "11");
    CHECK_HEADER(&r, "X-A", "1");
    CHECK_HEADER(&r, "Content-Type", "text/plain");
    CHECK_INT(sfx_resp_header_count(&r, "Transfer-Encoding"), 0);
    CHECK(sfx_resp_header(&r, "Date", v, sizeof(v)) && sfx_date_ok(v));
    CHECK(sfx_resp_header(&r, "X-Request-Id", v, sizeof(v)));
    CHECK_STR(r.body, "hello world");
    /* HEAD: the known length is announced, no body follows; an unknown one is not announced */
    CHECK_INT(sfx_cli_sends(&c, "HEAD /s/head-len HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK_INT(sfx_cli_read_response(&c, &r, 1), 1);
    CHECK_HEADER(&r, "Content-Length", "5");
    CHECK_INT(sfx_cli_sends(&c, "HEAD /s/unknown HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK_INT(sfx_cli_read_response(&c, &r, 1), 1);
    CHECK_INT(sfx_resp_header_count(&r, "Content-Length"), 0);
    CHECK_INT(sfx_resp_header_count(&r, "Transfer-Encoding"), 0);
    CHECK_HEADER(&r, "Connection", "keep-alive");
    /* 204 and 304: no length, no type, no body; 205: Content-Length: 0 */
    static const char *const st[] = {"204", "304", "205"};
    for (int i = 0; i < 3; i++) {
        char rq[96];
        snprintf(rq, sizeof(rq), "GET /s/status?%s HTTP/1.1\r\nHost: h\r\n\r\n", st[i]);
        CHECK_INT(sfx_cli_sends(&c, rq), 0);
        CHECK_INT(sfx_cli_read_head(&c, &r), 1);
        CHECK_INT(r.status, atoi(st[i]));
        CHECK_INT(sfx_resp_header_count(&r, "Transfer-Encoding"), 0);
        if (i < 2) {
            CHECK_INT(sfx_resp_header_count(&r, "Content-Length"), 0);
            CHECK_INT(sfx_resp_header_count(&r, "Content-Type"), 0);
        } else {
            CHECK_HEADER(&r, "Content-Length", "0");
        }
    }
    /* a whole-body request answering with a streamed response */
    CHECK_INT(sfx_cli_sends(&c, "GET /whole HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK_INT(sfx_cli_read_head(&c, &r), 1);
    CHECK_HEADER(&r, "Transfer-Encoding", "chunked");
    CHECK_INT(sfx_cli_read_chunked(&c, &r, NULL, NULL, &err), 1);
    CHECK_INT(r.body_len, 5);
    CHECK(sfx_cli_quiet(&c, 20)); /* not a byte of the dropped bodies */
    /* fewer bytes than announced: cut, the connection closes */
    CHECK_INT(sfx_cli_sends(&c, "GET /s/short HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK_INT(sfx_cli_read_head(&c, &r), 1);
    CHECK_HEADER(&r, "Content-Length", "10");
    char rest[64];
    CHECK_INT(sfx_cli_read_eof_into(&c, rest, sizeof(rest), &err), 3);
    CHECK_INT(err, 0);
    CHECK(memcmp(rest, "abc", 3) == 0);

    /* HTTP/1.0: an unknown length ends at the close */
    CHECK_INT(sfx_cli_connect(fx, &c), 0);
    CHECK_INT(
        sfx_cli_sends(&c, "GET /s/unknown HTTP/1.0\r\nHost: h\r\nConnection: keep-alive\r\n\r\n"),
        0);
    CHECK_INT(sfx_cli_read_head(&c, &r), 1);
    CHECK_HEADER(&r, "Connection", "close");
    CHECK_INT(sfx_resp_header_count(&r, "Content-Length"), 0);
    CHECK_INT(sfx_resp_header_count(&r, "Transfer-Encoding"), 0);
    CHECK_INT(sfx_cli_read_eof_into(&c, rest, sizeof(rest), &err), 6);
    CHECK_INT(err, 0);
    CHECK(memcmp(rest, "abcdef", 6) == 0);
    /* HTTP/1.0 with a known length keeps the connection it asked for */
    CHECK_INT(sfx_cli_connect(fx, &c), 0);
    CHECK_INT(sfx_cli_sends(&c, "GET /s/len HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"), 0);
    CHECK_INT(sfx_cli_read_response(&c, &r, 0), 1);
    CHECK_HEADER(&r, "Connection", "keep-alive");
    CHECK_STR(r.body, "hello world");
    CHECK_INT(sfx_cli_sends(&c, "GET /s/len HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"), 0);
    CHECK_INT(sfx_cli_read_response(&c, &r, 0), 1);
    CHECK_STR(r.body, "hello world");
}

static void test_streamed_response_forms(void **state)
{
    (void)state;
    fixture fx;
    stream_init(&fx, handler_forms);
    sfx_run(&fx, client_forms, 0);
    assert_int_equal(T.misuse_ok, 3);
    assert_int_equal(T.n, 11);
}

/* ---- back-pressure: bytes waiting, the writable callback ------------------------------------ */

#define FLOOD_TOTAL ((uint64_t)4 * 1024 * 1024)
#define FLOOD_BLOCK 65536
#define FLOOD_HIGH ((size_t)256 * 1024)
#define FLOOD_LOW ((size_t)64 * 1024)

static void pump(tc_request *req);

static void on_writable_pump(tc_request *req, int status, void *arg)
{
    (void)arg;
    if (T.in_call)
        T.ran_inside++;
    T.writable_calls++;
    T.writable_status = status;
    assert_int_equal(status, 0);
    assert_true(tc_request_write_pending(req) <= FLOOD_LOW);
    pump(req);
}

static void pump(tc_request *req)
{
    static char block[FLOOD_BLOCK];
    while (T.total < FLOOD_TOTAL && tc_request_write_pending(req) <= FLOOD_HIGH) {
        for (size_t i = 0; i < sizeof(block); i++)
            block[i] = pattern_at(T.total + i);
        assert_int_equal(tc_request_write(req, block, sizeof(block)), 0);
        T.total += sizeof(block);
        if (tc_request_write_pending(req) > T.max_pending)
            T.max_pending = tc_request_write_pending(req);
    }
    if (T.total >= FLOOD_TOTAL) {
        assert_int_equal(tc_request_end(req), 0);
        return;
    }
    if (T.pending_at_arm == 0)
        T.pending_at_arm = tc_request_write_pending(req);
    T.in_call = 1;
    assert_int_equal(tc_request_on_writable(req, FLOOD_LOW, on_writable_pump, NULL), 0);
    assert_int_equal(tc_request_on_writable(req, FLOOD_LOW, on_writable_pump, NULL), TC_EINVAL);
    T.in_call = 0;
    atomic_store(&T.fx->stage, 1);
}

static void on_writable_below(tc_request *req, int status, void *arg)
{
    (void)arg;
    if (T.in_call)
        T.ran_inside++;
    T.writable_calls++;
    assert_int_equal(status, 0);
    assert_int_equal(tc_request_end(req), 0);
}

static void handler_flood(tc_request *req, void *data)
{
    fixture *fx = data;
    sfx_record(fx, req);
    record_req(req);
    if (path_is(req, "/s/flood")) {
        /* a small send buffer, so that the bytes wait on the server's side of the socket */
        int small = 16384;
        assert_int_equal(uv_send_buffer_size((uv_handle_t *)&req->conn->tcp, &small), 0);
        assert_int_equal(tc_request_respond_head(req, 200, NULL, NULL, 0, -1), 0);
        pump(req);
    } else { /* already below the threshold: from the loop all the same */
        assert_int_equal(tc_request_respond_head(req, 200, NULL, NULL, 0, 2), 0);
        assert_int_equal(tc_request_write(req, "ok", 2), 0);
        T.in_call = 1;
        assert_int_equal(tc_request_on_writable(req, 1 << 20, on_writable_below, NULL), 0);
        T.in_call = 0;
    }
}

typedef struct flood_sink {
    uint64_t n;
    int ok;
} flood_sink;

static void sink_pattern(const char *data, size_t len, void *arg)
{
    flood_sink *s = arg;
    for (size_t i = 0; i < len; i++)
        if (data[i] != pattern_at(s->n + i))
            s->ok = 0;
    s->n += len;
}

static void client_flood(fixture *fx)
{
    cli c;
    resp r;
    int err;
    CHECK_INT(sfx_cli_connect(fx, &c), 0);
    int small = 16384; /* a small receive buffer: the server's bytes wait on its side */
    CHECK(setsockopt(c.fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)) == 0);
    CHECK_INT(sfx_cli_sends(&c, "GET /s/flood HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK(sfx_stage_wait(fx, 1)); /* the handler stopped: bytes wait */
    usleep(100000);
    CHECK_INT(sfx_cli_read_head(&c, &r), 1);
    flood_sink s = {0, 1};
    CHECK_INT(sfx_cli_read_chunked(&c, &r, sink_pattern, &s, &err), 1);
    CHECK_INT(s.n, FLOOD_TOTAL);
    CHECK(s.ok);
    CHECK_INT(sfx_cli_sends(&c, "GET /s/below HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK_INT(sfx_cli_read_response(&c, &r, 0), 1);
    CHECK_STR(r.body, "ok");
}

static void test_backpressure_writable(void **state)
{
    (void)state;
    fixture fx;
    stream_init(&fx, handler_flood);
    sfx_run(&fx, client_flood, 0);

    assert_int_equal(T.total, FLOOD_TOTAL);
    assert_true(T.pending_at_arm > FLOOD_HIGH); /* the bytes did wait */
    assert_true(T.max_pending <= FLOOD_HIGH + FLOOD_BLOCK + 16);
    assert_true(T.writable_calls >= 2); /* the flood's and the one already below */
    assert_int_equal(T.ran_inside, 0);
}

/* ---- abort: a cut the client cannot take for a complete body -------------------------------- */

static void cut_later(fixture *fx, void *arg)
{
    (void)fx;
    tc_request_abort(arg);
    tc_request_abort(arg); /* finished: nothing */
}

static void handler_cut(tc_request *req, void *data)
{
    fixture *fx = data;
    sfx_record(fx, req);
    record_req(req);
    if (path_is(req, "/s/nothing")) {
        tc_request_abort(req); /* no head yet: a drop */
        return;
    }
    int64_t len = path_is(req, "/s/len") ? 100 : TC_SERVER_LENGTH_UNKNOWN;
    assert_int_equal(tc_request_respond_head(req, 200, NULL, NULL, 0, len), 0);
    assert_int_equal(tc_request_write(req, "partial", 7), 0);
    sfx_later(fx, 30, cut_later, req);
}

static void client_cut(fixture *fx)
{
    cli c;
    resp r;
    int err;
    char rest[64];
    /* chunked: no last chunk, then FIN */
    CHECK_INT(sfx_cli_connect(fx, &c), 0);
    CHECK_INT(sfx_cli_sends(&c, "GET /s/chunked HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK_INT(sfx_cli_read_head(&c, &r), 1);
    CHECK_INT(sfx_cli_read_chunked(&c, &r, NULL, NULL, &err), 0);
    CHECK_INT(err, 0);
    CHECK_INT(r.body_len, 7);
    /* a known length: short, then FIN */
    CHECK_INT(sfx_cli_connect(fx, &c), 0);
    CHECK_INT(sfx_cli_sends(&c, "GET /s/len HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK_INT(sfx_cli_read_head(&c, &r), 1);
    CHECK_INT(sfx_cli_read_eof_into(&c, rest, sizeof(rest), &err), 7);
    CHECK_INT(err, 0);
    /* HTTP/1.0, the body ends at the close: a reset, so the cut is not taken for the end */
    CHECK_INT(sfx_cli_connect(fx, &c), 0);
    CHECK_INT(sfx_cli_sends(&c, "GET /s/close HTTP/1.0\r\n\r\n"), 0);
    CHECK_INT(sfx_cli_read_head(&c, &r), 1);
    sfx_cli_read_eof_into(&c, rest, sizeof(rest), &err);
    CHECK_INT(err, ECONNRESET);
    /* nothing written yet: no answer at all */
    CHECK_INT(sfx_cli_connect(fx, &c), 0);
    CHECK_INT(sfx_cli_sends(&c, "GET /s/nothing HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK_CLOSED(&c, 0);
}

static void test_abort_cuts_visibly(void **state)
{
    (void)state;
    fixture fx;
    stream_init(&fx, handler_cut);
    sfx_run(&fx, client_cut, 0);
    assert_int_equal(T.n, 4);
}

/* ---- pipelining: the streamed response at the head goes as it is written; later ones wait --- */

static void finish_first(fixture *fx, int ev)
{
    (void)fx;
    (void)ev;
    tc_request *first = T.r[0].req;
    assert_int_equal(tc_request_write(first, "one-b", 5), 0);
    assert_int_equal(tc_request_end(first), 0);
}

static void handler_pipeline(tc_request *req, void *data)
{
    fixture *fx = data;
    int i = sfx_record(fx, req);
    record_req(req);
    if (path_is(req, "/s/first")) {
        assert_int_equal(tc_request_respond_head(req, 200, NULL, NULL, 0, -1), 0);
        assert_int_equal(tc_request_write(req, "one-a", 5), 0);
    } else if (path_is(req, "/second")) {
        fx->respond_ret[i] = tc_request_respond(req, 200, "text/plain", NULL, 0, "two", 3);
    } else {
        assert_int_equal(tc_request_respond_head(req, 200, NULL, NULL, 0, 7), 0);
        assert_int_equal(tc_request_write(req, "three", 5), 0);
        T.pending_behind = tc_request_write_pending(req); /* held behind the first */
        assert_int_equal(tc_request_write(req, "-c", 2), 0);
        assert_int_equal(tc_request_end(req), 0);
    }
}

static void client_pipeline(fixture *fx)
{
    cli c;
    resp r;
    int err;
    CHECK_INT(sfx_cli_connect(fx, &c), 0);
    CHECK_INT(sfx_cli_sends(&c, "GET /s/first HTTP/1.1\r\nHost: h\r\n\r\n"
                                "GET /second HTTP/1.1\r\nHost: h\r\n\r\n"
                                "GET /s/third HTTP/1.1\r\nHost: h\r\n\r\n"),
              0);
    CHECK_INT(sfx_cli_read_head(&c, &r), 1);
    CHECK_HEADER(&r, "Transfer-Encoding", "chunked");
    while (c.len < 10)
        CHECK(sfx_cli_fill(&c) > 0);
    CHECK_INT(c.len, 10);
    CHECK(memcmp(c.buf, "5\r\none-a\r\n", 10) == 0); /* written as it goes */
    c.len = 0;
    CHECK(sfx_cli_quiet(&c, 150)); /* the later answers wait */
    sfx_client_event(fx);
    CHECK_INT(sfx_cli_read_chunked(&c, &r, NULL, NULL, &err), 1);
    CHECK_INT(r.body_len, 5);
    CHECK(memcmp(r.body, "one-b", 5) == 0);
    CHECK_INT(sfx_cli_read_response(&c, &r, 0), 1);
    CHECK_STR(r.body, "two");
    CHECK_INT(sfx_cli_read_response(&c, &r, 0), 1);
    CHECK_STR(r.body, "three-c");
    CHECK_HEADER(&r, "Connection", "keep-alive");
}

static void test_pipelining_streamed(void **state)
{
    (void)state;
    fixture fx;
    stream_init(&fx, handler_pipeline);
    fx.on_event = finish_first;
    sfx_run(&fx, client_pipeline, 0);
    assert_int_equal(T.n, 3);
    /* handed over in arrival order */
    assert_string_equal(fx.seen[0].path, "/s/first");
    assert_string_equal(fx.seen[1].path, "/second");
    assert_string_equal(fx.seen[2].path, "/s/third");
    assert_true(T.pending_behind >= 5);
}

/* ---- a body not read to its end: the connection closes after the response ------------------ */

static void on_body_half(tc_request *req, int status, const char *data, size_t len, void *arg)
{
    on_body_keep(req, status, data, len, arg);
    if (len == 0) {
        if (T.in_call)
            T.cancelled_inside++;
        return;
    }
    if (rec_of(req)->pieces == 1) {
        /* answer while the body still comes: the head cannot know it will not be read */
        assert_int_equal(tc_request_respond_head(req, 200, NULL, NULL, 0, 2), 0);
        assert_int_equal(tc_request_write(req, "ok", 2), 0);
        T.in_call = 1;
        assert_int_equal(tc_request_end(req), 0); /* the body's last call: TC_ECANCELED, here */
        T.in_call = 0;
    }
}

static void handler_unread(tc_request *req, void *data)
{
    fixture *fx = data;
    sfx_record(fx, req);
    rec *r = record_req(req);
    if (path_is(req, "/s/ignore"))
        tc_request_respond_json(req, 200, "{}");
    else
        r->read_rc = tc_request_read_body(req, UINT64_MAX, on_body_half, fx);
}

static void client_unread(fixture *fx)
{
    cli c;
    resp r;
    CHECK_INT(sfx_cli_connect(fx, &c), 0);
    CHECK_INT(sfx_cli_sends(&c, "POST /s/ignore HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n"
                                "0123456789"),
              0);
    CHECK_INT(sfx_cli_read_response(&c, &r, 0), 1);
    CHECK_HEADER(&r, "Connection", "close");
    CHECK_CLOSED(&c, 0);
    CHECK_INT(sfx_cli_connect(fx, &c), 0);
    CHECK_INT(sfx_cli_sends(&c, "POST /s/half HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n"
                                "0123456789"),
              0);
    CHECK_INT(sfx_cli_read_response(&c, &r, 0), 1);
    CHECK_HEADER(&r, "Connection", "keep-alive");
    CHECK_STR(r.body, "ok");
    CHECK_CLOSED(&c, 0); /* closed all the same */
}

static void test_unread_body_closes(void **state)
{
    (void)state;
    fixture fx;
    stream_init(&fx, handler_unread);
    sfx_run(&fx, client_unread, 0);
    assert_int_equal(T.n, 2);
    assert_int_equal(T.r[1].last_calls, 1);
    assert_int_equal(T.r[1].last_status, TC_ECANCELED);
    assert_int_equal(T.cancelled_inside, 1);
}

/* ---- the access log at the end; a client that leaves: 499, and every callback once --------- */

static void on_abort_note(tc_request *req, void *data)
{
    fixture *fx = data;
    note(rec_of(req), 3);
    fx->aborts++;
    if (!path_is(req, "/s/leave"))
        tc_request_end(req); /* finishing now only frees it */
}

static void on_writable_note(tc_request *req, int status, void *arg)
{
    (void)arg;
    note(rec_of(req), 2);
    T.writable_status = status;
}

static void on_body_leave(tc_request *req, int status, const char *data, size_t len, void *arg)
{
    on_body_keep(req, status, data, len, arg);
    if (len > 0)
        atomic_store(&T.fx->stage, 10);
}

/* Once the client has left (polled), finishes the request: the log says 499. */
static void finish_leave(fixture *fx, void *arg)
{
    static int polls;
    if (!tc_request_aborted(arg) && ++polls < 1000) {
        sfx_later(fx, 5, finish_leave, arg);
        return;
    }
    assert_int_equal(tc_request_write(arg, "x", 1), TC_ECANCELED);
    assert_int_equal(tc_request_end(arg), 0);
    sfx_loop_done(fx);
}

static long log_size(FILE *log)
{
    fflush(log);
    return ftell(log);
}

static void handler_log(tc_request *req, void *data)
{
    fixture *fx = data;
    sfx_record(fx, req);
    record_req(req);
    tc_request_on_abort(req, on_abort_note, fx);
    if (path_is(req, "/s/log")) {
        assert_int_equal(tc_request_respond_head(req, 200, NULL, NULL, 0, -1), 0);
        assert_int_equal(tc_request_write(req, "abc", 3), 0);
        T.log_at_head = log_size(fx->cfg.access_log); /* nothing at the head */
        assert_int_equal(tc_request_end(req), 0);
    } else if (path_is(req, "/s/hold")) {
        /* holds the queue's head: the next request's bytes wait behind it */
    } else {
        assert_int_equal(tc_request_read_body(req, UINT64_MAX, on_body_leave, fx), 0);
        assert_int_equal(tc_request_respond_head(req, 200, NULL, NULL, 0, -1), 0);
        assert_true(tc_request_write_pending(req) > 0);
        assert_int_equal(tc_request_on_writable(req, 0, on_writable_note, fx), 0);
        sfx_later(fx, 5, finish_leave, req); /* after the client left */
    }
}

static void client_log(fixture *fx)
{
    cli c;
    resp r;
    int err;
    CHECK_INT(sfx_cli_connect(fx, &c), 0);
    CHECK_INT(sfx_cli_sends(&c, "GET /s/log HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK_INT(sfx_cli_read_head(&c, &r), 1);
    CHECK_INT(sfx_cli_read_chunked(&c, &r, NULL, NULL, &err), 1);
    CHECK_INT(sfx_cli_connect(fx, &c), 0);
    CHECK_INT(sfx_cli_sends(&c, "GET /s/hold HTTP/1.1\r\nHost: h\r\n\r\n"
                                "POST /s/leave HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n"
                                "0123456789"),
              0);
    CHECK(sfx_stage_wait(fx, 10));
    sfx_cli_close(&c);
}

static void test_access_log_and_client_leaving(void **state)
{
    (void)state;
    fixture fx;
    stream_init(&fx, handler_log);
    FILE *log = tmpfile();
    assert_non_null(log);
    fx.cfg.access_log = log;
    sfx_run(&fx, client_log, 1);

    assert_int_equal(T.log_at_head, 0); /* no line at the head: at the end */
    rec *hold = &T.r[1], *leave = &T.r[2];
    assert_int_equal(hold->norder, 1);
    assert_int_equal(hold->order[0], 3);
    /* the body's last call, the writable callback, the abort callback: once each, in order */
    assert_int_equal(leave->norder, 3);
    assert_int_equal(leave->order[0], 1);
    assert_int_equal(leave->order[1], 2);
    assert_int_equal(leave->order[2], 3);
    assert_int_equal(leave->last_status, TC_ECANCELED);
    assert_int_equal(T.writable_status, TC_ECANCELED);
    assert_int_equal(fx.aborts, 2);

    char line[3][512];
    rewind(log);
    for (int i = 0; i < 3; i++)
        assert_non_null(fgets(line[i], sizeof(line[i]), log));
    assert_null(fgets(line[0] + 256, 256, log)); /* three lines only */
    char method[16], target[64];
    int status;
    unsigned long long bytes;
    assert_int_equal(sscanf(strchr(line[0], '"') + 1, "%15s %63s HTTP/1.1\" %d %llu", method,
                            target, &status, &bytes),
                     4);
    assert_string_equal(target, "/s/log");
    assert_int_equal(status, 200);
    /* the head, "3\r\nabc\r\n" and "0\r\n\r\n" */
    assert_true(bytes > 8 + 5 + 100);
    for (int i = 1; i < 3; i++) {
        assert_int_equal(sscanf(strchr(line[i], '"') + 1, "%15s %63s HTTP/1.1\" %d %llu", method,
                                target, &status, &bytes),
                         4);
        assert_int_equal(status, 499);
    }
    fclose(log);
}

/* ---- the body timeout, which a paused body does not run; a malformed chunk ------------------ */

static void on_body_answer_error(tc_request *req, int status, const char *data, size_t len,
                                 void *arg)
{
    on_body_keep(req, status, data, len, arg);
    if (len > 0 && path_is(req, "/s/paused") && rec_of(req)->pieces == 1) {
        tc_request_body_pause(req);
        sfx_later(T.fx, 250, resume_later, req);
    }
    if (len > 0)
        return;
    if (status == TC_ETIMEDOUT)
        tc_request_respond_error(req, 408, "timeout", "body stalled");
    else if (status == TC_EPROTO)
        tc_request_respond_error(req, 400, "bad_request", "bad chunk");
    else
        tc_request_respond(req, 200, "text/plain", NULL, 0, rec_of(req)->body,
                           rec_of(req)->body_len);
}

static void handler_timeout(tc_request *req, void *data)
{
    fixture *fx = data;
    sfx_record(fx, req);
    rec *r = record_req(req);
    r->read_rc = tc_request_read_body(req, UINT64_MAX, on_body_answer_error, fx);
}

static void client_timeout(fixture *fx)
{
    cli c;
    resp r;
    CHECK_INT(sfx_cli_connect(fx, &c), 0);
    CHECK_INT(sfx_cli_sends(&c, "POST /s/stall HTTP/1.1\r\nHost: h\r\nContent-Length: 20\r\n\r\n"
                                "0123456789"),
              0);
    CHECK_ERROR_AND_CLOSE(&c, 408, "timeout");
    /* paused for 250 ms with a 60 ms timeout: no timeout, the rest is read after */
    CHECK_INT(sfx_cli_connect(fx, &c), 0);
    CHECK_INT(sfx_cli_sends(&c, "POST /s/paused HTTP/1.1\r\nHost: h\r\nContent-Length: 20\r\n\r\n"
                                "0123456789"),
              0);
    usleep(120000);
    CHECK_INT(sfx_cli_sends(&c, "abcdefghij"), 0);
    CHECK_INT(sfx_cli_read_response(&c, &r, 0), 1);
    CHECK_INT(r.status, 200);
    CHECK_STR(r.body, "0123456789abcdefghij");
    CHECK_INT(sfx_cli_connect(fx, &c), 0);
    CHECK_INT(sfx_cli_sends(&c,
                            "POST /s/bad HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                            "3\r\nabc\r\nzz\r\n"),
              0);
    CHECK_ERROR_AND_CLOSE(&c, 400, "bad_request");
}

static void test_body_timeout_pause_and_bad_chunk(void **state)
{
    (void)state;
    fixture fx;
    stream_init(&fx, handler_timeout);
    fx.cfg.body_timeout_ms = 60;
    sfx_run(&fx, client_timeout, 0);
    assert_int_equal(T.n, 3);
    assert_int_equal(T.r[0].last_status, TC_ETIMEDOUT);
    assert_int_equal(T.r[0].body_len, 10);
    assert_int_equal(T.r[1].last_status, 0);
    assert_int_equal(T.r[2].last_status, TC_EPROTO);
    assert_int_equal(T.r[2].body_len, 3);
}

/* ---- the server closes under a body being read; an upgrade; a filter that declines --------- */

static void on_abort_end(tc_request *req, void *data)
{
    (void)data;
    note(rec_of(req), 3);
    tc_request_abort(req); /* no head: a drop, which only frees it now */
}

static void handler_close(tc_request *req, void *data)
{
    fixture *fx = data;
    sfx_record(fx, req);
    rec *r = record_req(req);
    if (path_is(req, "/s/upgrade")) {
        assert_int_equal(r->body_length, 0);
        tc_request_respond_error(req, 501, "not_implemented", "no upgrade");
        return;
    }
    tc_request_on_abort(req, on_abort_end, fx);
    r->read_rc = tc_request_read_body(req, UINT64_MAX, on_body_leave, fx);
}

static void event_close(fixture *fx, int ev)
{
    (void)ev;
    sfx_close_server(fx);
}

static void client_close(fixture *fx)
{
    cli c;
    resp r;
    CHECK_INT(sfx_cli_connect(fx, &c), 0);
    /* what follows an upgrade is not HTTP: never parsed */
    CHECK_INT(sfx_cli_sends(&c, "GET /s/upgrade HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\n"
                                "Upgrade: websocket\r\n\r\nGET /s/x HTTP/1.1\r\n\r\n"),
              0);
    CHECK_INT(sfx_cli_read_response(&c, &r, 0), 1);
    CHECK_INT(r.status, 501);
    CHECK_HEADER(&r, "Connection", "close");
    CHECK_CLOSED(&c, 0);
    CHECK_INT(sfx_cli_connect(fx, &c), 0);
    CHECK_INT(sfx_cli_sends(&c, "POST /s/wait HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n"
                                "0123456789"),
              0);
    CHECK(sfx_stage_wait(fx, 10));
    sfx_client_event(fx); /* the loop closes the server */
    int err;
    sfx_cli_read_eof(&c, &err);
}

static void test_server_close_and_upgrade(void **state)
{
    (void)state;
    fixture fx;
    stream_init(&fx, handler_close);
    fx.on_event = event_close;
    sfx_run(&fx, client_close, 0);
    assert_int_equal(T.n, 2);
    rec *w = &T.r[1];
    assert_int_equal(w->norder, 2);
    assert_int_equal(w->order[0], 1); /* the body's last call, TC_ECANCELED */
    assert_int_equal(w->last_status, TC_ECANCELED);
    assert_int_equal(w->order[1], 3); /* then the abort callback */
}

/* ---- reading started late (its end from the loop); HTTP/1.0 gets no 100; a client gone ----- */

static void read_late(fixture *fx, void *arg)
{
    T.in_call = 1;
    rec_of(arg)->read_rc = tc_request_read_body(arg, 100, on_body_echo, fx);
    T.in_call = 0;
}

static void on_abort_gone(tc_request *req, void *data)
{
    fixture *fx = data;
    int ok = tc_request_write(req, "b", 1) == TC_ECANCELED &&
             tc_request_read_body(req, 10, on_body_keep, fx) == TC_ECANCELED &&
             tc_request_on_writable(req, 0, on_writable_note, fx) == TC_ECANCELED &&
             tc_request_respond_head(req, 200, NULL, NULL, 0, 1) == TC_EINVAL &&
             tc_request_write_pending(req) == 0;
    T.misuse_ok += ok;
    fx->aborts++;
    assert_int_equal(tc_request_end(req), 0); /* finishing only frees it */
    sfx_loop_done(fx);
}

static void handler_late(tc_request *req, void *data)
{
    fixture *fx = data;
    sfx_record(fx, req);
    rec *r = record_req(req);
    if (path_is(req, "/s/late")) {
        sfx_later(fx, 20, read_late, req);
    } else if (path_is(req, "/s/old")) {
        r->read_rc = tc_request_read_body(req, 100, on_body_echo, fx);
        atomic_store(&fx->stage, 1);
    } else {
        tc_request_on_abort(req, on_abort_gone, fx);
        assert_int_equal(tc_request_respond_head(req, 200, NULL, NULL, 0, -1), 0);
        assert_int_equal(tc_request_write(req, "a", 1), 0);
        atomic_store(&fx->stage, 2);
    }
}

static void client_late(fixture *fx)
{
    cli c;
    resp r;
    CHECK_INT(sfx_cli_connect(fx, &c), 0);
    CHECK_INT(sfx_cli_sends(&c, "GET /s/late HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK_INT(sfx_cli_read_response(&c, &r, 0), 1);
    CHECK_INT(r.status, 200);
    CHECK_INT(sfx_cli_connect(fx, &c), 0);
    CHECK_INT(sfx_cli_sends(&c, "POST /s/old HTTP/1.0\r\nExpect: 100-continue\r\n"
                                "Content-Length: 5\r\n\r\n"),
              0);
    CHECK(sfx_stage_wait(fx, 1));
    CHECK(sfx_cli_quiet(&c, 100)); /* no 100 to an HTTP/1.0 client */
    CHECK_INT(sfx_cli_sends(&c, "hello"), 0);
    CHECK_INT(sfx_cli_read_response(&c, &r, 0), 1);
    CHECK_STR(r.body, "hello");
    CHECK_HEADER(&r, "Connection", "close");
    CHECK_CLOSED(&c, 0);
    CHECK_INT(sfx_cli_connect(fx, &c), 0);
    CHECK_INT(sfx_cli_sends(&c, "GET /s/gone HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK_INT(sfx_cli_read_head(&c, &r), 1);
    CHECK(sfx_stage_wait(fx, 2));
    sfx_cli_close(&c); /* mid-response */
}

static void test_late_read_old_client_gone(void **state)
{
    (void)state;
    fixture fx;
    stream_init(&fx, handler_late);
    fx.cfg.body_timeout_ms = 0; /* never: the HTTP/1.0 body comes after a pause */
    sfx_run(&fx, client_late, 1);
    assert_int_equal(T.n, 3);
    assert_int_equal(T.r[0].read_rc, 0);
    assert_int_equal(T.r[0].last_calls, 1);
    assert_int_equal(T.r[0].last_status, 0);
    assert_int_equal(T.ran_inside, 0); /* the end of a body already read came from the loop */
    assert_int_equal(T.r[1].body_len, 5);
    assert_int_equal(fx.aborts, 1);
    assert_int_equal(T.misuse_ok, 1);
}

/* ---- a connection that closes after an earlier answer keeps its linger timer --------------- */

static void on_body_linger(tc_request *req, int status, const char *data, size_t len, void *arg)
{
    fixture *fx = arg;
    on_body_keep(req, status, data, len, arg);
    if (len > 0) { /* pause, and resume once the connection lingers */
        tc_request_body_pause(req);
        sfx_later(fx, 50, resume_later, req);
        return;
    }
    atomic_store(&fx->stage, 5);
    tc_request_abort(req); /* the client is gone: finishing frees it */
    sfx_loop_done(fx);
}

static void handler_linger(tc_request *req, void *data)
{
    fixture *fx = data;
    int i = sfx_record(fx, req);
    rec *r = record_req(req);
    if (tc_request_is_streaming(req))
        r->read_rc = tc_request_read_body(req, 100, on_body_linger, fx);
    else
        fx->respond_ret[i] = tc_request_respond(req, 200, "text/plain", NULL, 0, "bye", 3);
}

static void client_linger(fixture *fx)
{
    cli c;
    resp r;
    CHECK_INT(sfx_cli_connect(fx, &c), 0);
    /* an HTTP/1.0 request (its answer closes) with a streamed one behind it, in one write */
    CHECK_INT(sfx_cli_sends(&c, "GET /whole HTTP/1.0\r\n\r\n"
                                "POST /s/p HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n01234"),
              0);
    CHECK_INT(sfx_cli_read_response(&c, &r, 0), 1);
    CHECK_STR(r.body, "bye");
    CHECK_CLOSED(&c, 0); /* FIN, then the server lingers: our side stays open */
    /* the linger ends (2 s), the connection closes, the streamed body's reader hears of it */
    CHECK(sfx_stage_wait(fx, 5));
}

static void test_body_timer_keeps_linger(void **state)
{
    (void)state;
    fixture fx;
    stream_init(&fx, handler_linger);
    fx.cfg.body_timeout_ms = 20; /* resumed while lingering: must not replace the linger timer */
    sfx_run(&fx, client_linger, 1);
    assert_int_equal(T.n, 2);
    assert_int_equal(T.r[1].body_len, 5);
    assert_int_equal(T.r[1].last_calls, 1);
    assert_int_equal(T.r[1].last_status, TC_ECANCELED);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_body_in_pieces_whole_path_unchanged),
        cmocka_unit_test(test_chunked_body_continue_chunked_response),
        cmocka_unit_test(test_body_limit),
        cmocka_unit_test(test_pause_resume_bounded),
        cmocka_unit_test(test_streamed_response_forms),
        cmocka_unit_test(test_backpressure_writable),
        cmocka_unit_test(test_abort_cuts_visibly),
        cmocka_unit_test(test_pipelining_streamed),
        cmocka_unit_test(test_unread_body_closes),
        cmocka_unit_test(test_access_log_and_client_leaving),
        cmocka_unit_test(test_body_timeout_pause_and_bad_chunk),
        cmocka_unit_test(test_server_close_and_upgrade),
        cmocka_unit_test(test_late_read_old_client_gone),
        cmocka_unit_test(test_body_timer_keeps_linger),
    };
    return SFX_RUN_TESTS(tests);
}
