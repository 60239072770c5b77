/*
 * Tests for streaming in the pooled HTTP client (src/client/client_stream.c and both engines):
 * a response whose future fulfils at its head and whose body is read in pieces, with pause,
 * resume, abort and its end checked against the framing; and a request body written as it goes,
 * with back-pressure, its end and its abort. Every test runs on both engines. The test server is
 * client_fixture.h (its /stream, /sink and /echo-stream paths).
 */
#include <signal.h>

#include "client_fixture.h"

/* ---- a reader that records what it was told ------------------------------------------------- */

typedef struct reader {
    tctx *t;
    tc_future *f;     /* the response's future (for unref_after) */
    size_t bytes;     /* body bytes told */
    int pieces;       /* data calls */
    size_t max_piece; /* the largest */
    int ends;         /* end calls: exactly one, last */
    int status;       /* the end's */
    int bad;          /* a call that broke a rule (inside read_body, after the end, bad bytes) */
    int pattern;      /* the body is cfx_pattern's: check every byte */
    int in_call;      /* inside a client call that must not run the callback */
    int pause_after;  /* pause after this many pieces */
    int abort_after;  /* tc_response_abort after this many pieces */
    int unref_after;  /* drop the future's (last) reference after this many pieces */
    int end_inside;   /* the end came inside the abort or unref the reader made */
    char text[4096];  /* the body, when it is small */
} reader;

static void on_body(tc_response *resp, int status, const char *data, size_t len, void *arg)
{
    reader *rd = arg;
    if (rd->in_call || rd->ends > 0)
        rd->bad++;
    if (len == 0) {
        rd->ends++;
        rd->status = status;
        return;
    }
    if (status != 0 || (rd->pattern && !cfx_pattern_check(data, rd->bytes, len)))
        rd->bad++;
    if (rd->bytes + len < sizeof(rd->text))
        memcpy(rd->text + rd->bytes, data, len);
    rd->bytes += len;
    rd->pieces++;
    if (len > rd->max_piece)
        rd->max_piece = len;
    if (rd->pause_after > 0 && rd->pieces == rd->pause_after)
        tc_response_body_pause(resp);
    if (rd->abort_after > 0 && rd->pieces == rd->abort_after) {
        tc_response_abort(resp);
        rd->end_inside = rd->ends == 1;
    }
    if (rd->unref_after > 0 && rd->pieces == rd->unref_after) {
        tc_future *f = rd->f;
        rd->f = NULL;
        tc_future_unref(f);
        rd->end_inside = rd->ends == 1;
    }
}

static tc_future *start(tctx *t, tc_client_request *req)
{
    tc_future *f = NULL;
    assert_int_equal(tc_client_request_start(&f, t->client, req), 0);
    assert_non_null(f);
    return f;
}

/* Starts a streamed GET of path. */
static tc_future *stream_get(tctx *t, const char *path)
{
    tc_client_request req = {.url = cfx_url(t, &t->s, path),
                             .max_body = SIZE_MAX, /* /huge-chunked is 64 MiB */
                             .stream_response = 1};
    return start(t, &req);
}

/* Starts reading resp into rd (cb never inside the call). */
static void read_body(tc_response *resp, reader *rd)
{
    rd->in_call = 1;
    assert_int_equal(tc_response_read_body(resp, on_body, rd), 0);
    rd->in_call = 0;
}

static void run_until_end(tctx *t, reader *rd)
{
    assert_int_equal(cfx_run_until_count(t, &rd->ends, 1, 10000), 1);
}

/* The value of header name by walking tc_response_header_next; n counts its occurrences. */
static void header_walk(const tc_response *r, const char *name, char *value, size_t cap, int *n)
{
    size_t pos = 0;
    tc_response_field fd;
    *n = 0;
    value[0] = '\0';
    while (tc_response_header_next(r, &pos, &fd)) {
        if (fd.name_len == strlen(name) && strncasecmp(fd.name, name, fd.name_len) == 0) {
            if (*n > 0)
                strncat(value, ",", cap - strlen(value) - 1);
            strncat(value, fd.value,
                    fd.value_len < cap - strlen(value) - 1 ? fd.value_len
                                                           : cap - strlen(value) - 1);
            ++*n;
        }
    }
}

/* ---- streamed responses --------------------------------------------------------------------- */

/* The future fulfils at the head, before any body byte (the server sends the body 300 ms
 * later): status and headers at once, an empty body, the framing; then the body in pieces,
 * intact, each at most TC_RESPONSE_HELD_MAX, and one end. */
static void test_head_first_then_body(void **state)
{
    (void)state;
    tctx *t = cfx_new(NULL);
    uint64_t t0 = uv_hrtime();
    tc_future *f = stream_get(t, "/stream?n=300000&delay=300");
    const tc_response *r = cfx_expect_response(t, f, 200);
    assert_true(cfx_elapsed_ms(t0) < 280); /* the head, not the body */
    assert_int_equal(t->s.huge_streamed, 0);
    assert_int_equal(r->body_len, 0);
    assert_string_equal(r->body, "");
    assert_int_equal(r->framing, TC_BODY_LENGTH);
    assert_int_equal(r->content_length, 300000);
    assert_true(strncmp(r->headers, "HTTP/1.1 200", 12) == 0);
    char v[64];
    int n = 0;
    header_walk(r, "x-two", v, sizeof(v), &n); /* in order, each occurrence */
    assert_int_equal(n, 2);
    assert_string_equal(v, "a,b");
    header_walk(r, "content-length", v, sizeof(v), &n);
    assert_string_equal(v, "300000");
    assert_true(tc_response_header(r, "x-conn", v, sizeof(v)) > 0);

    reader rd = {.t = t, .pattern = 1};
    read_body((tc_response *)r, &rd);
    run_until_end(t, &rd);
    assert_int_equal(rd.status, 0);
    assert_int_equal(rd.bytes, 300000);
    assert_int_equal(rd.bad, 0);
    assert_true(rd.pieces > 1);
    assert_true(rd.max_piece <= TC_RESPONSE_HELD_MAX);
    assert_string_equal(tc_response_body_error(r), "");
    cfx_run_for(t, 30);
    assert_int_equal(rd.ends, 1);
    tc_future_unref(f);

    /* The connection went back to the pool: the next request reuses it. */
    f = cfx_get(t, &t->s, "/ok", 0);
    cfx_expect_response(t, f, 200);
    tc_future_unref(f);
    assert_int_equal(t->s.conns_total, 1);
    cfx_expect_stats_settled(t);
    cfx_finish(t);
}

/* Each framing is told and checked: chunked and close-delimited bodies (one end each, the
 * bytes intact); HEAD, 204 and 304 have no body; 1xx heads are skipped. */
static void test_framings(void **state)
{
    (void)state;
    tctx *t = cfx_new(NULL);
    static const struct {
        const char *path, *method;
        int framing, status;
        size_t bytes;
    } cases[] = {
        {"/stream?n=200000&chunked=1", "GET", TC_BODY_CHUNKED, 200, 200000},
        {"/stream?n=150000&close=1", "GET", TC_BODY_CLOSE, 200, 150000},
        {"/stream?n=5000", "HEAD", TC_BODY_NONE, 200, 0},
        {"/no-content", "GET", TC_BODY_NONE, 204, 0},
        {"/not-modified", "GET", TC_BODY_NONE, 304, 0},
        {"/http10", "GET", TC_BODY_LENGTH, 200, 4},
        {"/eof-body", "GET", TC_BODY_CLOSE, 200, 9},
        {"/interim", "GET", TC_BODY_LENGTH, 200, 5},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        tc_client_request req = {.url = cfx_url(t, &t->s, cases[i].path),
                                 .method = cases[i].method,
                                 .stream_response = 1};
        tc_future *f = start(t, &req);
        const tc_response *r = cfx_expect_response(t, f, cases[i].status);
        assert_int_equal(r->framing, cases[i].framing);
        assert_int_equal(r->content_length,
                         cases[i].framing == TC_BODY_LENGTH ? (int64_t)cases[i].bytes : -1);
        reader rd = {.t = t, .pattern = strncmp(cases[i].path, "/stream", 7) == 0};
        read_body((tc_response *)r, &rd);
        run_until_end(t, &rd);
        assert_int_equal(rd.status, 0);
        assert_int_equal(rd.bytes, cases[i].bytes);
        assert_int_equal(rd.bad, 0);
        if (strcmp(cases[i].path, "/interim") == 0) {
            assert_memory_equal(rd.text, "final", 5);
            assert_null(strstr(r->headers, "Early"));
        }
        tc_future_unref(f);
    }
    cfx_expect_stats_settled(t);
    cfx_finish(t);
}

/* A body cut short is reported as such, never as an end: a Content-Length body whose connection
 * closes or is reset, a chunked one without its last chunk, a malformed chunk. The bytes that
 * came are told first. */
static void test_cut_bodies(void **state)
{
    (void)state;
    tctx *t = cfx_new(NULL);
    static const struct {
        const char *path;
        size_t bytes;
        int status;
    } cases[] = {
        {"/close-mid", 1000, TC_ECONNRESET},
        {"/reset-mid", 1000, TC_ECONNRESET},
        {"/cut-chunked", 5, TC_ECONNRESET},
        {"/bad-chunk", 5, TC_EPROTO},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        tc_future *f = stream_get(t, cases[i].path);
        const tc_response *r = cfx_expect_response(t, f, 200);
        reader rd = {.t = t};
        read_body((tc_response *)r, &rd);
        run_until_end(t, &rd);
        /* libcurl may not tell bytes of a reset it read along with the reset */
        if (cfx_engine != TC_CLIENT_ENGINE_CURL || cases[i].status != TC_ECONNRESET)
            assert_int_equal(rd.bytes, cases[i].bytes);
        assert_true(rd.bytes <= cases[i].bytes);
        if (cfx_engine == TC_CLIENT_ENGINE_CURL && cases[i].status == TC_EPROTO)
            assert_int_equal(rd.status, TC_ECONNRESET); /* libcurl: CURLE_RECV_ERROR */
        else
            assert_int_equal(rd.status, cases[i].status);
        assert_true(strlen(tc_response_body_error(r)) > 0);
        assert_int_equal(rd.bad, 0);
        tc_future_unref(f);
    }
    cfx_expect_stats_settled(t);
    cfx_finish(t);
}

/* timeout_ms bounds the wait for the head only; after it, a body that stalls for
 * body_idle_timeout_ms ends with TC_ETIMEDOUT and its connection is closed. */
static void test_deadline_and_idle_timeout(void **state)
{
    (void)state;
    tctx *t = cfx_new(NULL);
    /* The head at once, the body 400 ms later: a 200 ms timeout does not cut it. */
    tc_client_request req = {.url = cfx_url(t, &t->s, "/stream?n=20000&delay=400"),
                             .timeout_ms = 200,
                             .stream_response = 1};
    tc_future *f = start(t, &req);
    const tc_response *r = cfx_expect_response(t, f, 200);
    reader rd = {.t = t, .pattern = 1};
    read_body((tc_response *)r, &rd);
    run_until_end(t, &rd);
    assert_int_equal(rd.status, 0);
    assert_int_equal(rd.bytes, 20000);
    tc_future_unref(f);
    /* No head within the timeout: the future rejects, as for any request. */
    req.url = cfx_url(t, &t->s, "/hold");
    f = start(t, &req);
    cfx_expect_error(t, f, TC_ETIMEDOUT);
    tc_future_unref(f);

    /* A body that stalls: the idle timeout. */
    int closed = t->s.peer_closed;
    tc_client_request stall = {
        .url = cfx_url(t, &t->s, "/stall"), .stream_response = 1, .body_idle_timeout_ms = 200};
    f = start(t, &stall);
    r = cfx_expect_response(t, f, 200);
    reader rs = {.t = t};
    uint64_t t0 = uv_hrtime();
    read_body((tc_response *)r, &rs);
    run_until_end(t, &rs);
    double took = cfx_elapsed_ms(t0);
    assert_int_equal(rs.status, TC_ETIMEDOUT);
    assert_int_equal(rs.bytes, 5);
    assert_true(took >= 150 && took < 3000);
    assert_non_null(strstr(tc_response_body_error(r), "200 ms"));
    tc_future_unref(f);
    assert_true(cfx_run_until_count(t, &t->s.peer_closed, closed + 1, 2000) > closed);

    /* A paused reader is not idle: paused for 500 ms with a 150 ms idle timeout, the body still
     * arrives whole once resumed. */
    tc_client_request slow = {.url = cfx_url(t, &t->s, "/stream?n=100000"),
                              .stream_response = 1,
                              .body_idle_timeout_ms = 150};
    f = start(t, &slow);
    r = cfx_expect_response(t, f, 200);
    reader rp = {.t = t, .pattern = 1, .pause_after = 1};
    read_body((tc_response *)r, &rp);
    assert_int_equal(cfx_run_until_count(t, &rp.pieces, 1, 5000), 1);
    cfx_run_for(t, 500);
    assert_int_equal(rp.ends, 0);
    tc_response_body_resume((tc_response *)r);
    run_until_end(t, &rp);
    assert_int_equal(rp.status, 0);
    assert_int_equal(rp.bytes, 100000);
    assert_int_equal(rp.bad, 0);
    tc_future_unref(f);
    cfx_expect_stats_settled(t);
    cfx_finish(t);
}

/* max_body: a Content-Length over it rejects the future at the head; a chunked body that grows
 * past it ends with TC_ETOOLARGE once the limit is crossed. */
static void test_too_large(void **state)
{
    (void)state;
    tctx *t = cfx_new(NULL);
    tc_client_request req = {
        .url = cfx_url(t, &t->s, "/stream?n=300000"), .max_body = 100000, .stream_response = 1};
    tc_future *f = start(t, &req);
    cfx_expect_error(t, f, TC_ETOOLARGE);
    tc_future_unref(f);
    req.url = cfx_url(t, &t->s, "/stream?n=300000&chunked=1");
    f = start(t, &req);
    const tc_response *r = cfx_expect_response(t, f, 200);
    reader rd = {.t = t, .pattern = 1};
    read_body((tc_response *)r, &rd);
    run_until_end(t, &rd);
    assert_int_equal(rd.status, TC_ETOOLARGE);
    assert_true(rd.bytes <= 100000);
    assert_int_equal(rd.bad, 0);
    tc_future_unref(f);
    cfx_expect_stats_settled(t);
    cfx_finish(t);
}

/* Back-pressure: while the reader is paused the client stops reading, so the server (which
 * writes each piece once the last one is out) stops too; resumed, the bytes flow again; the
 * client never holds more than TC_RESPONSE_HELD_MAX for it. An abort then resets the connection
 * (the server sees it) and tells the reader TC_ECANCELED from inside the call. */
static void test_pause_resume_abort(void **state)
{
    (void)state;
    tctx *t = cfx_new(NULL);
    tc_client_request req = {.url = cfx_url(t, &t->s, "/huge-chunked"),
                             .max_body = SIZE_MAX, /* no limit */
                             .stream_response = 1};
    tc_future *f = start(t, &req);
    const tc_response *r = cfx_expect_response(t, f, 200);
    reader rd = {.t = t, .pause_after = 2};
    read_body((tc_response *)r, &rd);
    assert_int_equal(cfx_run_until_count(t, &rd.pieces, 2, 5000), 2);
    cfx_run_for(t, 300); /* the socket buffers fill up */
    size_t sent = t->s.huge_streamed;
    cfx_run_for(t, 200);
    assert_int_equal(t->s.huge_streamed, sent); /* the server is held back */
    assert_int_equal(rd.pieces, 2);             /* nothing told while paused */
    assert_true(sent < (64u << 20));
    size_t told = rd.bytes;
    tc_response_body_resume((tc_response *)r);
    tc_response_body_resume((tc_response *)r); /* twice is harmless */
    rd.pause_after = 0;
    uint64_t t0 = uv_hrtime();
    while (rd.bytes < told + (4u << 20) && cfx_elapsed_ms(t0) < 5000)
        uv_run(&t->loop, UV_RUN_ONCE);
    assert_true(rd.bytes >= told + (4u << 20));
    assert_true(t->s.huge_streamed > sent);
    assert_true(rd.max_piece <= TC_RESPONSE_HELD_MAX);
    int resets = t->s.peer_reset, closed = t->s.peer_closed;
    rd.in_call = 0;
    tc_response_abort((tc_response *)r);
    assert_int_equal(rd.ends, 1); /* inside the call */
    assert_int_equal(rd.status, TC_ECANCELED);
    tc_response_abort((tc_response *)r); /* again: nothing */
    tc_response_body_pause((tc_response *)r);
    tc_response_body_resume((tc_response *)r);
    assert_true(cfx_run_until_count(t, &t->s.peer_closed, closed + 1, 3000) > closed);
    assert_true(t->s.peer_reset > resets);
    cfx_run_for(t, 30);
    assert_int_equal(rd.ends, 1);
    assert_int_equal(rd.bad, 0);
    tc_future_unref(f);
    cfx_expect_stats_settled(t);
    cfx_finish(t);
}

/* The reader may abort, or let the response go (its last reference), from inside its callback:
 * the end comes once, inside that call, the connection is reset and never pooled. */
static void test_abort_or_release_from_the_reader(void **state)
{
    (void)state;
    tctx *t = cfx_new(NULL);
    for (int how = 0; how < 2; how++) {
        int resets = t->s.peer_reset;
        tc_future *f = stream_get(t, "/huge-chunked");
        const tc_response *r = cfx_expect_response(t, f, 200);
        char conn[16], next[16];
        assert_true(tc_response_header(r, "x-conn", conn, sizeof(conn)) > 0);
        reader rd = {.t = t, .f = f};
        if (how == 0)
            rd.abort_after = 3;
        else
            rd.unref_after = 3;
        read_body((tc_response *)r, &rd);
        run_until_end(t, &rd);
        assert_int_equal(rd.status, TC_ECANCELED);
        assert_int_equal(rd.end_inside, 1);
        assert_int_equal(rd.pieces, 3);
        assert_true(cfx_run_until_count(t, &t->s.peer_reset, resets + 1, 3000) > resets);
        if (how == 0)
            tc_future_unref(f);
        assert_int_equal(rd.bad, 0);
        /* not pooled: the next request goes on another connection */
        f = cfx_get(t, &t->s, "/ok", 0);
        assert_true(
            tc_response_header(cfx_expect_response(t, f, 200), "x-conn", next, sizeof(next)) > 0);
        assert_string_not_equal(conn, next);
        tc_future_unref(f);
    }
    cfx_expect_stats_settled(t);
    cfx_finish(t);
}

/* Before the head a streamed request is cancelled through its future; right after the head,
 * tc_response_abort and dropping the last reference (no reader yet) reset it. */
static void test_cancel_and_abort_before_reading(void **state)
{
    (void)state;
    tctx *t = cfx_new(NULL);
    int closed = t->s.peer_closed;
    tc_future *f = stream_get(t, "/hold");
    assert_int_equal(cfx_run_until_count(t, &t->s.requests, 1, 3000), 1);
    assert_int_equal(tc_future_cancel(f), 1);
    assert_int_equal(tc_future_state_of(f), TC_FUTURE_CANCELLED);
    tc_future_unref(f);
    assert_true(cfx_run_until_count(t, &t->s.peer_closed, closed + 1, 3000) > closed);

    int resets = t->s.peer_reset;
    f = stream_get(t, "/huge-chunked");
    const tc_response *r = cfx_expect_response(t, f, 200);
    tc_response_abort((tc_response *)r);
    reader rd = {.t = t};
    assert_int_equal(tc_response_read_body((tc_response *)r, on_body, &rd), TC_ECANCELED);
    assert_true(cfx_run_until_count(t, &t->s.peer_reset, resets + 1, 3000) > resets);
    assert_true(r->status == 200); /* the head stays readable */
    tc_future_unref(f);

    resets = t->s.peer_reset;
    f = stream_get(t, "/huge-chunked");
    cfx_expect_response(t, f, 200);
    tc_future_unref(f); /* never read: released, so aborted */
    assert_true(cfx_run_until_count(t, &t->s.peer_reset, resets + 1, 3000) > resets);
    cfx_expect_stats_settled(t);
    cfx_finish(t);
}

/* A reader that comes late gets the bytes held for it and the end, from the loop (never inside
 * tc_response_read_body); reading twice, a plain response or a NULL callback are refused. */
static void test_late_reader_and_misuse(void **state)
{
    (void)state;
    tctx *t = cfx_new(NULL);
    tc_future *f = stream_get(t, "/ok?n=5000");
    const tc_response *r = cfx_expect_response(t, f, 200);
    cfx_run_for(t, 100); /* the whole body has come by now */
    reader rd = {.t = t};
    read_body((tc_response *)r, &rd);
    assert_int_equal(rd.pieces, 0);
    run_until_end(t, &rd);
    assert_int_equal(rd.status, 0);
    assert_int_equal(rd.bytes, 5000);
    assert_int_equal(rd.bad, 0);
    reader again = {.t = t};
    assert_int_equal(tc_response_read_body((tc_response *)r, on_body, &again), TC_EINVAL);
    assert_int_equal(tc_response_read_body((tc_response *)r, NULL, &again), TC_EINVAL);
    assert_int_equal(tc_response_read_body(NULL, on_body, &again), TC_EINVAL);
    tc_future_unref(f);

    f = cfx_get(t, &t->s, "/ok", 0); /* read whole */
    r = cfx_expect_response(t, f, 200);
    assert_int_equal(tc_response_read_body((tc_response *)r, on_body, &again), TC_EINVAL);
    tc_response_abort((tc_response *)r); /* nothing for a response read whole */
    tc_response_body_pause((tc_response *)r);
    assert_string_equal(r->body, "ok");
    assert_int_equal(r->framing, 0);
    tc_future_unref(f);
    assert_int_equal(again.pieces + again.ends, 0);
    cfx_expect_stats_settled(t);
    cfx_finish(t);
}

/* Closing the client ends every streamed body with TC_ECANCELED, inside the close. */
static void test_client_close_while_streaming(void **state)
{
    (void)state;
    tctx *t = cfx_new(NULL);
    tc_future *f = stream_get(t, "/huge-chunked");
    const tc_response *r = cfx_expect_response(t, f, 200);
    reader rd = {.t = t};
    read_body((tc_response *)r, &rd);
    assert_true(cfx_run_until_count(t, &rd.pieces, 2, 5000) >= 2);
    tc_future *g = stream_get(t, "/stream?n=10");
    cfx_expect_response(t, g, 200); /* its end is held: nobody reads it */
    tc_client_close(t->client, cfx_on_client_closed, t);
    assert_int_equal(rd.ends, 1);
    assert_int_equal(rd.status, TC_ECANCELED);
    reader late = {.t = t};
    assert_int_equal(tc_response_read_body((tc_response *)tc_future_value(g), on_body, &late),
                     TC_ECANCELED);
    tc_response_body_resume((tc_response *)r); /* does nothing now */
    cfx_finish(t);
    tc_future_unref(f); /* the responses outlive the client */
    tc_future_unref(g);
}

/* Many streamed responses at once share the pool's caps like any request. */
static void test_many_streams_within_the_caps(void **state)
{
    (void)state;
    tctx *t = cfx_new_pool(0, 3);
    enum { N = 12 };
    tc_future *f[N];
    reader rd[N];
    memset(rd, 0, sizeof(rd));
    for (int i = 0; i < N; i++)
        f[i] = stream_get(t, i % 2 ? "/stream?n=70000&chunked=1" : "/stream?n=90000");
    int ends = 0;
    uint64_t t0 = uv_hrtime();
    while (ends < N && cfx_elapsed_ms(t0) < 10000) {
        uv_run(&t->loop, UV_RUN_ONCE);
        ends = 0;
        for (int i = 0; i < N; i++) {
            if (tc_future_done(f[i]) && rd[i].t == NULL) {
                rd[i].t = t;
                rd[i].pattern = 1;
                read_body(tc_future_value(f[i]), &rd[i]);
            }
            ends += rd[i].ends;
        }
    }
    assert_int_equal(ends, N);
    for (int i = 0; i < N; i++) {
        assert_int_equal(rd[i].status, 0);
        assert_int_equal(rd[i].bytes, i % 2 ? 70000 : 90000);
        assert_int_equal(rd[i].bad, 0);
        tc_future_unref(f[i]);
    }
    assert_true(t->s.conns_max <= 3);
    cfx_expect_stats_settled(t);
    cfx_finish(t);
}

/* The stale-connection rule holds for a streamed response too: TC_ESTALE by default, the one
 * re-send of a GET when asked. */
static void test_stale_rule(void **state)
{
    (void)state;
    tctx *t = cfx_new(NULL);
    for (int resend = 0; resend < 2; resend++) {
        tc_future *f = cfx_get(t, &t->s, "/die-on-reuse", 0);
        cfx_expect_response(t, f, 200);
        tc_future_unref(f);
        tc_client_request req = {.url = cfx_url(t, &t->s, "/die-on-reuse"),
                                 .stream_response = 1,
                                 .resend_stale = resend};
        f = start(t, &req);
        if (!resend) {
            cfx_expect_error(t, f, TC_ESTALE);
        } else {
            const tc_response *r = cfx_expect_response(t, f, 200);
            reader rd = {.t = t};
            read_body((tc_response *)r, &rd);
            run_until_end(t, &rd);
            assert_int_equal(rd.status, 0);
            assert_memory_equal(rd.text, "first", 5);
        }
        tc_future_unref(f);
    }
    tc_client_stats st;
    tc_client_get_stats(t->client, &st);
    assert_int_equal(st.stale_retries, 1);
    cfx_expect_stats_settled(t);
    cfx_finish(t);
}

/* ---- streamed request bodies ---------------------------------------------------------------- */

typedef struct writer {
    tctx *t;
    tc_client_body *body;
    size_t total;   /* bytes to write */
    size_t written; /* so far */
    size_t piece;
    int writable;  /* callbacks with 0 */
    int cancelled; /* callbacks with TC_ECANCELED */
    int in_call;
    int bad;
    int ended;
} writer;

static void on_writable(tc_client_body *body, int status, void *arg);

/* Writes pattern pieces while the body takes them (pending under 64 KiB), then waits for the
 * writable callback; ends the body after the last. */
static void pump(writer *w)
{
    while (w->written < w->total && tc_client_body_pending(w->body) < 65536) {
        char buf[16384];
        size_t n = w->total - w->written < w->piece ? w->total - w->written : w->piece;
        cfx_pattern(buf, w->written, n);
        int rc = tc_client_body_write(w->body, buf, n);
        if (rc == TC_EBUSY)
            break;
        assert_int_equal(rc, 0);
        w->written += n;
    }
    if (w->written == w->total && !w->ended) {
        assert_int_equal(tc_client_body_end(w->body), 0);
        w->ended = 1;
        return;
    }
    w->in_call = 1;
    assert_int_equal(tc_client_body_on_writable(w->body, 16384, on_writable, w), 0);
    w->in_call = 0;
}

static void on_writable(tc_client_body *body, int status, void *arg)
{
    writer *w = arg;
    if (w->in_call || body != w->body)
        w->bad++;
    if (status != 0) {
        w->cancelled++;
        return;
    }
    w->writable++;
    pump(w);
}

/* Writes pattern bytes into b until they stay pending: more than 64 KiB still wait after 50 ms
 * of the loop (the server does not read, and every buffer on the way is full). Returns the bytes
 * written. */
static size_t fill_until_blocked(tctx *t, tc_client_body *b)
{
    size_t written = 0;
    char buf[16384];
    uint64_t t0 = uv_hrtime(), blocked_since = 0;
    for (;;) {
        if (tc_client_body_pending(b) < 65536) {
            blocked_since = 0;
            cfx_pattern(buf, written, sizeof(buf));
            assert_int_equal(tc_client_body_write(b, buf, sizeof(buf)), 0);
            written += sizeof(buf);
        } else if (blocked_since == 0) {
            blocked_since = uv_hrtime();
        } else if (cfx_elapsed_ms(blocked_since) >= 50) {
            return written;
        }
        uv_run(&t->loop, UV_RUN_NOWAIT);
        assert_true(cfx_elapsed_ms(t0) < 5000 && written < (64u << 20));
    }
}

/* The answer of /sink for n pattern bytes. */
static const char *sink_answer(size_t n)
{
    static char want[64];
    uint32_t sum = 0;
    for (size_t i = 0; i < n; i++)
        sum = sum * 31 + (unsigned char)('a' + i % 26);
    snprintf(want, sizeof(want), "n=%zu sum=%u", n, sum);
    return want;
}

/* A body of unknown length goes chunked, one of known length with Content-Length; bytes written
 * before the request starts go first; every byte arrives once, in order, and the writer is
 * paced by tc_client_body_on_writable. Any method. */
static void test_body_chunked_and_known_length(void **state)
{
    (void)state;
    tctx *t = cfx_new(NULL);
    for (int known = 0; known < 2; known++) {
        size_t total = 3u << 20;
        writer w = {.t = t, .total = total, .piece = known ? 7000 : 16384};
        assert_int_equal(tc_client_body_new(&w.body, t->client,
                                            known ? (int64_t)total : TC_CLIENT_LENGTH_UNKNOWN),
                         0);
        char first[1000];
        cfx_pattern(first, 0, sizeof(first));
        assert_int_equal(tc_client_body_write(w.body, first, sizeof(first)), 0); /* before */
        w.written = sizeof(first);
        tc_client_request req = {.url = cfx_url(t, &t->s, "/sink"),
                                 .method = known ? "PUT" : "PATCH",
                                 .body_source = w.body};
        tc_future *f = start(t, &req);
        pump(&w);
        const tc_response *r = cfx_expect_response(t, f, 200);
        assert_string_equal(r->body, sink_answer(total));
        assert_string_equal(t->s.last_method, known ? "PUT" : "PATCH");
        if (known) {
            assert_non_null(strstr(t->s.last_head, "Content-Length: 3145728\r\n"));
            assert_null(strcasestr(t->s.last_head, "Transfer-Encoding"));
        } else {
            assert_non_null(strcasestr(t->s.last_head, "Transfer-Encoding: chunked\r\n"));
            assert_null(strcasestr(t->s.last_head, "Content-Length"));
        }
        assert_null(strcasestr(t->s.last_head, "Expect:"));
        assert_int_equal(w.bad, 0);
        assert_int_equal(tc_client_body_pending(w.body), 0);
        assert_int_equal(tc_client_body_write(w.body, "x", 1), TC_EINVAL); /* ended */
        tc_client_body_free(w.body);
        tc_future_unref(f);
    }
    assert_int_equal(t->s.bodies_done, 2);
    cfx_expect_stats_settled(t);
    cfx_finish(t);
}

/* Back-pressure: a server that does not read leaves the bytes pending; the writable callback
 * waits until they drain below its threshold, then the body completes. */
static void test_body_back_pressure(void **state)
{
    (void)state;
    tctx *t = cfx_new(NULL);
    tc_client_body *b = NULL;
    assert_int_equal(tc_client_body_new(&b, t->client, TC_CLIENT_LENGTH_UNKNOWN), 0);
    tc_client_request req = {
        .url = cfx_url(t, &t->s, "/sink?pause_ms=2000"), .method = "POST", .body_source = b};
    tc_future *f = start(t, &req);
    assert_int_equal(cfx_run_until_count(t, &t->s.requests, 1, 3000), 1);
    size_t written = fill_until_blocked(t, b);
    /* Past the hard limit: refused, nothing written. */
    static char big[TC_CLIENT_BODY_PENDING_MAX];
    assert_int_equal(tc_client_body_write(b, big, sizeof(big)), TC_EBUSY);
    writer w = {
        .t = t, .body = b, .total = written + (1u << 20), .written = written, .piece = 16384};
    w.in_call = 1;
    assert_int_equal(tc_client_body_on_writable(b, 16384, on_writable, &w), 0);
    assert_int_equal(tc_client_body_on_writable(b, 16384, on_writable, &w), TC_EINVAL); /* armed */
    w.in_call = 0;
    cfx_run_for(t, 100);
    assert_int_equal(w.writable, 0); /* the server still does not read */
    const tc_response *r = cfx_expect_response(t, f, 200);
    assert_string_equal(r->body, sink_answer(w.total));
    assert_true(w.writable > 0);
    assert_int_equal(w.bad, 0);
    tc_client_body_free(b);
    tc_future_unref(f);
    cfx_expect_stats_settled(t);
    cfx_finish(t);
}

/* Frees the body its argument points to from a callback that tc_client_body_abort runs. */
static void free_body_on_done(tc_future *f, void *data)
{
    (void)f;
    tc_client_body **b = data;
    tc_client_body_free(*b);
    *b = NULL;
}

static void free_body_on_writable(tc_client_body *body, int status, void *arg)
{
    tc_client_body **b = arg;
    assert_ptr_equal(body, *b);
    assert_int_equal(status, TC_ECANCELED);
    tc_client_body_free(body);
    *b = NULL;
}

/* Aborting the body cuts the request: the server sees a reset, the future rejects with
 * TC_ECANCELED, an armed writable callback hears TC_ECANCELED inside the call, writes are
 * refused. Ending a body of known length short is an abort too (TC_EPROTO). The
 * request's callbacks and the writable one may free the body during the abort. */
static void test_body_abort(void **state)
{
    (void)state;
    tctx *t = cfx_new(NULL);
    for (int how = 0; how < 5; how++) {
        int resets = t->s.peer_reset;
        tc_client_body *b = NULL;
        assert_int_equal(tc_client_body_new(&b, t->client, how == 2 ? 100000 : -1), 0);
        tc_client_request req = {
            .url = cfx_url(t, &t->s, "/sink"), .method = "POST", .body_source = b};
        tc_future *f = start(t, &req);
        char buf[5000];
        cfx_pattern(buf, 0, sizeof(buf));
        assert_int_equal(tc_client_body_write(b, buf, sizeof(buf)), 0);
        uint64_t t0 = uv_hrtime();
        while (t->s.body_bytes < sizeof(buf) * (size_t)(how + 1) && cfx_elapsed_ms(t0) < 3000)
            uv_run(&t->loop, UV_RUN_ONCE);
        assert_int_equal(t->s.body_bytes, sizeof(buf) * (size_t)(how + 1));
        writer w = {.t = t, .body = b};
        if (how == 0) {
            assert_int_equal(tc_client_body_on_writable(b, 0, on_writable, &w), 0);
            tc_client_body_abort(b);
            assert_int_equal(w.cancelled, 1); /* inside the call */
        } else if (how == 1) {
            tc_client_body_free(b); /* not ended: aborted */
            b = NULL;
        } else if (how == 2) {
            assert_int_equal(tc_client_body_end(b), TC_EPROTO);
        } else if (how == 3) {
            tc_client_body *victim = b;
            assert_int_equal(tc_future_on_done(f, free_body_on_done, &b), 0);
            tc_client_body_abort(victim);
            assert_null(b); /* freed by the callback, inside the call, and still safe */
        } else {
            tc_client_body *victim = b;
            assert_int_equal(tc_client_body_on_writable(b, 0, free_body_on_writable, &b), 0);
            tc_client_body_abort(victim);
            assert_null(b);
        }
        assert_true(tc_future_done(f)); /* from inside the call as well */
        cfx_expect_error(t, f, TC_ECANCELED);
        if (b != NULL) {
            assert_int_equal(tc_client_body_write(b, "x", 1), TC_EINVAL);
            assert_int_equal(tc_client_body_end(b), TC_EINVAL);
            tc_client_body_abort(b); /* again: nothing */
            tc_client_body_free(b);
        }
        assert_true(cfx_run_until_count(t, &t->s.peer_reset, resets + 1, 3000) > resets);
        assert_int_equal(t->s.bodies_done, 0);
        tc_future_unref(f);
    }
    cfx_expect_stats_settled(t);
    cfx_finish(t);
}

/* Both ways at once: /echo-stream answers at once and sends each piece of the body back as it
 * reads it; each piece is written only after the previous one came back. */
typedef struct duplex {
    tc_client_body *body;
    reader rd;
    int sent;
} duplex;

static void on_echo(tc_response *resp, int status, const char *data, size_t len, void *arg)
{
    duplex *d = arg;
    on_body(resp, status, data, len, &d->rd);
    if (len == 0 || d->rd.bytes < (size_t)d->sent * 3000)
        return;
    if (d->sent == 20) {
        assert_int_equal(tc_client_body_end(d->body), 0);
        return;
    }
    char buf[3000];
    cfx_pattern(buf, (size_t)d->sent * 3000, sizeof(buf));
    assert_int_equal(tc_client_body_write(d->body, buf, sizeof(buf)), 0);
    d->sent++;
}

static void test_body_and_response_both_ways(void **state)
{
    (void)state;
    tctx *t = cfx_new(NULL);
    duplex d = {.rd = {.t = t, .pattern = 1}};
    assert_int_equal(tc_client_body_new(&d.body, t->client, TC_CLIENT_LENGTH_UNKNOWN), 0);
    tc_client_request req = {.url = cfx_url(t, &t->s, "/echo-stream"),
                             .method = "POST",
                             .body_source = d.body,
                             .stream_response = 1};
    tc_future *f = start(t, &req);
    const tc_response *r = cfx_expect_response(t, f, 200); /* before any body byte */
    assert_int_equal(r->framing, TC_BODY_CHUNKED);
    char buf[3000];
    cfx_pattern(buf, 0, sizeof(buf));
    assert_int_equal(tc_client_body_write(d.body, buf, sizeof(buf)), 0);
    d.sent = 1;
    assert_int_equal(tc_response_read_body((tc_response *)r, on_echo, &d), 0);
    run_until_end(t, &d.rd);
    assert_int_equal(d.rd.status, 0);
    assert_int_equal(d.rd.bytes, 20 * 3000);
    assert_int_equal(d.rd.bad, 0);
    tc_client_body_free(d.body);
    tc_future_unref(f);
    cfx_expect_stats_settled(t);
    cfx_finish(t);
}

/* A response that ends before the body was all sent: the body takes no more (TC_ECLOSED) and
 * the connection is not reused. (libcurl sends the whole body first: its request ends, and its
 * future fulfils, once the body has ended.) */
static void test_body_answered_early(void **state)
{
    (void)state;
    tctx *t = cfx_new(NULL);
    tc_client_body *b = NULL;
    assert_int_equal(tc_client_body_new(&b, t->client, TC_CLIENT_LENGTH_UNKNOWN), 0);
    tc_client_request req = {
        .url = cfx_url(t, &t->s, "/sink-early"), .method = "POST", .body_source = b};
    tc_future *f = start(t, &req);
    assert_int_equal(tc_client_body_write(b, "abc", 3), 0);
    if (cfx_engine == TC_CLIENT_ENGINE_CURL) {
        cfx_run_for(t, 100);
        assert_false(tc_future_done(f));
        assert_int_equal(tc_client_body_end(b), 0);
    }
    const tc_response *r = cfx_expect_response(t, f, 200);
    assert_string_equal(r->body, "early");
    writer w = {.t = t, .body = b};
    int ended = cfx_engine == TC_CLIENT_ENGINE_CURL;
    assert_int_equal(tc_client_body_write(b, "def", 3), ended ? TC_EINVAL : TC_ECLOSED);
    assert_int_equal(tc_client_body_on_writable(b, 0, on_writable, &w),
                     ended ? TC_EINVAL : TC_ECLOSED);
    assert_int_equal(tc_client_body_end(b), ended ? TC_EINVAL : TC_ECLOSED);
    assert_int_equal(tc_client_body_pending(b), 0);
    tc_client_body_abort(b); /* its request has ended: nothing */
    tc_client_body_free(b);
    tc_future_unref(f);
    int total = t->s.conns_total;
    f = cfx_get(t, &t->s, "/ok", 0);
    cfx_expect_response(t, f, 200);
    tc_future_unref(f);
    if (!ended) /* libcurl sent the body whole: that connection may serve again */
        assert_int_equal(t->s.conns_total, total + 1);
    cfx_expect_stats_settled(t);
    cfx_finish(t);
}

/* An armed writable callback hears TC_ECANCELED from the loop when the request ends first. */
static void test_writable_cancelled_when_the_request_ends(void **state)
{
    (void)state;
    tctx *t = cfx_new(NULL);
    tc_client_body *b = NULL;
    assert_int_equal(tc_client_body_new(&b, t->client, TC_CLIENT_LENGTH_UNKNOWN), 0);
    tc_client_request req = {.url = cfx_url(t, &t->s, "/sink?pause_ms=5000"),
                             .method = "POST",
                             .timeout_ms = 1500,
                             .body_source = b};
    tc_future *f = start(t, &req);
    assert_int_equal(cfx_run_until_count(t, &t->s.requests, 1, 3000), 1);
    (void)fill_until_blocked(t, b);
    writer w = {.t = t, .body = b};
    assert_int_equal(tc_client_body_on_writable(b, 0, on_writable, &w), 0);
    cfx_expect_error(t, f, TC_ETIMEDOUT);
    assert_int_equal(cfx_run_until_count(t, &w.cancelled, 1, 3000), 1);
    assert_int_equal(w.writable, 0);
    assert_int_equal(tc_client_body_write(b, "x", 1), TC_ECLOSED);
    tc_client_body_free(b);
    tc_future_unref(f);
    cfx_expect_stats_settled(t);
    cfx_finish(t);
}

/* What a body source may and may not be: one request each; not with a body; not aborted; not of
 * another client; writes past a known length refused; a request with one is never re-sent
 * (resend_stale does not apply). */
static void test_body_rules(void **state)
{
    (void)state;
    tctx *t = cfx_new(NULL);
    tc_client_body *b = NULL;
    assert_int_equal(tc_client_body_new(&b, NULL, 0), TC_EINVAL);
    assert_int_equal(tc_client_body_new(&b, t->client, -2), TC_EINVAL);
    assert_int_equal(tc_client_body_new(&b, t->client, 4), 0);
    assert_int_equal(tc_client_body_write(b, "abcde", 5), TC_EINVAL); /* past its length */
    assert_int_equal(tc_client_body_write(b, NULL, 1), TC_EINVAL);
    assert_int_equal(tc_client_body_write(b, "abcd", 4), 0);
    assert_int_equal(tc_client_body_end(b), 0);
    tc_client_request req = {.url = cfx_url(t, &t->s, "/sink"),
                             .method = "POST",
                             .body = "x",
                             .body_len = 1,
                             .body_source = b};
    tc_future *f = NULL;
    assert_int_equal(tc_client_request_start(&f, t->client, &req), TC_EINVAL);
    req.body = NULL;
    req.body_len = 0;
    f = start(t, &req);
    tc_future *g = NULL;
    assert_int_equal(tc_client_request_start(&g, t->client, &req), TC_EINVAL); /* used */
    const tc_response *r = cfx_expect_response(t, f, 200);
    assert_string_equal(r->body, sink_answer(4) /* abcd is the pattern's start */);
    tc_future_unref(f);
    tc_client_body_free(b);

    assert_int_equal(tc_client_body_new(&b, t->client, -1), 0);
    tc_client_body_abort(b);
    req.body_source = b;
    assert_int_equal(tc_client_request_start(&g, t->client, &req), TC_EINVAL); /* aborted */
    tc_client_body_free(b);

    /* A body no request took, whose writable callback frees it inside the abort. */
    assert_int_equal(tc_client_body_new(&b, t->client, -1), 0);
    assert_int_equal(tc_client_body_on_writable(b, 0, free_body_on_writable, &b), 0);
    tc_client_body *victim = b;
    tc_client_body_abort(victim);
    assert_null(b);

    tc_client *other = NULL;
    assert_int_equal(tc_client_new(&other, &t->loop, NULL), 0);
    assert_int_equal(tc_client_body_new(&b, other, -1), 0);
    req.body_source = b;
    assert_int_equal(tc_client_request_start(&g, t->client, &req), TC_EINVAL);
    tc_client_body_free(b);
    tc_client_close(other, NULL, NULL);

    /* Never re-sent: a reused connection that dies unanswered is TC_ESTALE, asked or not. */
    cfx_srv_start(&t->s2, &t->loop);
    f = cfx_get(t, &t->s2, "/die-on-reuse", 0);
    cfx_expect_response(t, f, 200);
    tc_future_unref(f);
    assert_int_equal(tc_client_body_new(&b, t->client, 3), 0);
    assert_int_equal(tc_client_body_write(b, "abc", 3), 0);
    tc_client_request again = {
        .url = cfx_url(t, &t->s2, "/die-on-reuse"), .body_source = b, .resend_stale = 1};
    f = start(t, &again);
    cfx_expect_error(t, f, TC_ESTALE);
    tc_future_unref(f);
    tc_client_body_free(b);
    tc_client_stats st;
    tc_client_get_stats(t->client, &st);
    assert_int_equal(st.stale_retries, 0);
    cfx_expect_stats_settled(t);
    cfx_finish(t);
}

/* no_default_headers: the head carries the caller's headers, Host and the framing, never
 * User-Agent or Accept; the caller's own framing headers are replaced by the client's. */
static void test_headers_as_given(void **state)
{
    (void)state;
    tctx *t = cfx_new(NULL);
    static const tc_header h[] = {
        {"X-Test", "given"}, {"Content-Length", "999"}, {"Transfer-Encoding", "gzip"}};
    tc_client_body *b = NULL;
    assert_int_equal(tc_client_body_new(&b, t->client, 2), 0);
    assert_int_equal(tc_client_body_write(b, "ab", 2), 0);
    tc_client_request req = {.url = cfx_url(t, &t->s, "/sink"),
                             .method = "DELETE",
                             .headers = h,
                             .nheaders = 3,
                             .body_source = b,
                             .no_default_headers = 1};
    tc_future *f = start(t, &req);
    const tc_response *r = cfx_expect_response(t, f, 200);
    assert_string_equal(r->body, sink_answer(2));
    const char *head = t->s.last_head;
    assert_true(strncmp(head, "DELETE /sink HTTP/1.1\r\n", 23) == 0);
    assert_null(strcasestr(head, "User-Agent"));
    assert_null(strcasestr(head, "Accept"));
    assert_null(strcasestr(head, "999"));
    assert_null(strcasestr(head, "gzip"));
    assert_non_null(strcasestr(head, "\r\nHost: 127.0.0.1:"));
    assert_non_null(strstr(head, "\r\nX-Test: given\r\n"));
    assert_non_null(strstr(head, "\r\nContent-Length: 2\r\n"));
    tc_future_unref(f);
    tc_client_body_free(b);
    /* without it, the defaults are there */
    f = cfx_get(t, &t->s, "/ok", 0);
    cfx_expect_response(t, f, 200);
    assert_non_null(strcasestr(t->s.last_head, "\r\nUser-Agent: tailcut/"));
    tc_future_unref(f);
    cfx_expect_stats_settled(t);
    cfx_finish(t);
}

int main(void)
{
    (void)signal(SIGPIPE, SIG_IGN); /* writes to a server that reset: EPIPE, not a signal */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_head_first_then_body),
        cmocka_unit_test(test_framings),
        cmocka_unit_test(test_cut_bodies),
        cmocka_unit_test(test_deadline_and_idle_timeout),
        cmocka_unit_test(test_too_large),
        cmocka_unit_test(test_pause_resume_abort),
        cmocka_unit_test(test_abort_or_release_from_the_reader),
        cmocka_unit_test(test_cancel_and_abort_before_reading),
        cmocka_unit_test(test_late_reader_and_misuse),
        cmocka_unit_test(test_client_close_while_streaming),
        cmocka_unit_test(test_many_streams_within_the_caps),
        cmocka_unit_test(test_stale_rule),
        cmocka_unit_test(test_body_chunked_and_known_length),
        cmocka_unit_test(test_body_back_pressure),
        cmocka_unit_test(test_body_abort),
        cmocka_unit_test(test_body_and_response_both_ways),
        cmocka_unit_test(test_body_answered_early),
        cmocka_unit_test(test_writable_cancelled_when_the_request_ends),
        cmocka_unit_test(test_body_rules),
        cmocka_unit_test(test_headers_as_given),
    };
    return cfx_run_on_both_engines(tests, sizeof(tests) / sizeof(tests[0]));
}
