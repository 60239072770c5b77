/*
 * Unit tests for the HTTP/1.1 server (src/server*.c): request parsing, bodies (Content-Length,
 * chunked, 100-continue, HEAD), limits and response writing. The harness is server_fixture.h.
 */
#include "server_fixture.h"

/* ---- request parsing glue ---------------------------------------------------------------------
 */

static void client_parse(fixture *fx)
{
    cli c;
    resp r;
    static const char *const reqs[] = {
        "GET /a/b%20c?x=1&y=2#frag HTTP/1.1\r\nHost: example\r\nX-Test-Header: Hello World\r\n"
        "X-Multi: one\r\nX-Empty:\r\nAccept: */*\r\nx-multi: two, 2b\r\nX-MULTI: \r\n\r\n",
        "GET /plain HTTP/1.1\r\nHost: h\r\n\r\n",
        "GET /p#only-fragment HTTP/1.1\r\nHost: h\r\n\r\n",
        "GET /q? HTTP/1.1\r\nhost: h\r\n\r\n",
        "DELETE /x?a=b&c#f?g HTTP/1.1\r\nHost: h\r\nx-test-header: lower\r\n\r\n",
    };
    static const char *const bodies[] = {
        "/a/b%20c?x=1&y=2#frag", "/plain", "/p#only-fragment", "/q?", "/x?a=b&c#f?g",
    };
    CHECK_INT(sfx_cli_connect(fx, &c), 0);
    for (size_t i = 0; i < sizeof(reqs) / sizeof(reqs[0]); i++) {
        CHECK_INT(sfx_cli_sends(&c, reqs[i]), 0);
        CHECK_INT(sfx_cli_read_response(&c, &r, 0), 1);
        CHECK_INT(r.status, 200);
        CHECK_STR(r.body, bodies[i]);
    }
    /* The same connection, one byte per write: every piece of the request arrives split. */
    static const char split[] = "PUT /split/path?k=v HTTP/1.1\r\nHost: h\r\n"
                                "X-TEST-HEADER: split value\r\nContent-Length: 4\r\n\r\nbody";
    for (size_t i = 0; i < sizeof(split) - 1; i++) {
        CHECK_INT(sfx_cli_send(&c, split + i, 1), 0);
        usleep(300);
    }
    CHECK_INT(sfx_cli_read_response(&c, &r, 0), 1);
    CHECK_INT(r.status, 200);
}

static void test_parse_target_query_headers(void **state)
{
    (void)state;
    fixture fx;
    sfx_serve(&fx, sfx_handler_echo, client_parse, 0);

    assert_int_equal(fx.nreqs, 6);
    seen *s = fx.seen;
    assert_string_equal(s[0].method, "GET");
    assert_string_equal(s[0].target, "/a/b%20c?x=1&y=2#frag");
    assert_string_equal(s[0].path, "/a/b%20c");
    assert_string_equal(s[0].query, "x=1&y=2");
    assert_int_equal(s[0].has_h, 1);
    assert_string_equal(s[0].hval, "Hello World");
    assert_int_equal(s[0].has_missing, 0);
    assert_int_equal(s[0].has_empty, 1);
    assert_int_equal(s[0].empty_len, 0);
    assert_int_equal(s[0].body_len, 0);
    assert_int_equal(s[0].is_head, 0);
    assert_string_equal(s[0].multi, "one|two, 2b||");
    assert_string_equal(s[0].all, "Host=example|X-Test-Header=Hello World|X-Multi=one|X-Empty=|"
                                  "Accept=*/*|x-multi=two, 2b|X-MULTI=|");

    assert_string_equal(s[1].path, "/plain");
    assert_int_equal(s[1].query_len, 0);
    assert_int_equal(s[1].has_h, 0);
    assert_string_equal(s[1].multi, "");

    assert_string_equal(s[2].target, "/p#only-fragment");
    assert_string_equal(s[2].path, "/p");
    assert_int_equal(s[2].query_len, 0);

    assert_string_equal(s[3].path, "/q");
    assert_int_equal(s[3].query_len, 0);

    assert_string_equal(s[4].method, "DELETE");
    assert_string_equal(s[4].path, "/x");
    assert_string_equal(s[4].query, "a=b&c");
    assert_string_equal(s[4].hval, "lower");

    assert_string_equal(s[5].method, "PUT");
    assert_string_equal(s[5].target, "/split/path?k=v");
    assert_string_equal(s[5].path, "/split/path");
    assert_string_equal(s[5].query, "k=v");
    assert_int_equal(s[5].has_h, 1);
    assert_string_equal(s[5].hval, "split value");
    assert_int_equal(s[5].body_len, 4);
    assert_string_equal(s[5].body, "body");
    sfx_expect_answered(&fx, 6);
}

/* ---- bodies: Content-Length, chunked, 100-continue, HEAD --------------------------------------
 */

static void client_bodies(fixture *fx)
{
    cli c;
    resp r;
    CHECK_INT(sfx_cli_connect(fx, &c), 0);

    /* Content-Length, the body in two writes, with a NUL byte in it */
    CHECK_INT(sfx_cli_sends(&c, "POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\nhel"),
              0);
    usleep(20000);
    CHECK_INT(sfx_cli_send(&c, "lo\0world", 8), 0);
    CHECK_INT(sfx_cli_read_response(&c, &r, 0), 1);
    CHECK_INT(r.status, 200);
    CHECK_INT(r.body_len, 11);
    CHECK(memcmp(r.body, "hello\0world", 11) == 0);

    /* chunked, with a chunk extension and a trailer */
    CHECK_INT(sfx_cli_sends(&c,
                            "POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                            "5\r\nhello\r\n"),
              0);
    usleep(20000);
    CHECK_INT(
        sfx_cli_sends(&c, "6;ext=1\r\n chunk\r\na\r\ned bodies!\r\n0\r\nX-Trailer: t\r\n\r\n"), 0);
    CHECK_INT(sfx_cli_read_response(&c, &r, 0), 1);
    CHECK_INT(r.status, 200);
    CHECK_STR(r.body, "hello chunked bodies!");

    /* Expect: 100-continue gets the interim answer before the body is sent */
    CHECK_INT(sfx_cli_sends(&c, "POST /echo HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n"
                                "Content-Length: 3\r\n\r\n"),
              0);
    CHECK_INT(sfx_cli_read_response(&c, &r, 0), 1);
    CHECK_INT(r.status, 100);
    CHECK_INT(sfx_cli_sends(&c, "abc"), 0);
    CHECK_INT(sfx_cli_read_response(&c, &r, 0), 1);
    CHECK_INT(r.status, 200);
    CHECK_STR(r.body, "abc");

    /* HEAD: Content-Length of the body that a GET would get, and no body bytes. The GET that
     * follows on the same connection would not parse if the body had been sent. */
    CHECK_INT(sfx_cli_sends(&c, "HEAD /head/path HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK_INT(sfx_cli_read_response(&c, &r, 1), 1);
    CHECK_INT(r.status, 200);
    CHECK_HEADER(&r, "Content-Length", "10");
    CHECK_HEADER(&r, "Content-Type", "text/plain");
    CHECK_INT(sfx_cli_sends(&c, "GET /after/head HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK_INT(sfx_cli_read_response(&c, &r, 0), 1);
    CHECK_INT(r.status, 200);
    CHECK_STR(r.body, "/after/head");
}

static void test_body_chunked_continue_head(void **state)
{
    (void)state;
    fixture fx;
    sfx_serve(&fx, sfx_handler_echo, client_bodies, 0);

    assert_int_equal(fx.nreqs, 5);
    assert_string_equal(fx.seen[0].method, "POST");
    assert_int_equal(fx.seen[0].body_len, 11);
    assert_int_equal(fx.seen[1].body_len, 21);
    assert_string_equal(fx.seen[1].body, "hello chunked bodies!");
    assert_int_equal(fx.seen[2].body_len, 3);
    assert_string_equal(fx.seen[3].method, "HEAD");
    assert_int_equal(fx.seen[3].is_head, 1);
    assert_int_equal(fx.seen[3].body_len, 0);
    assert_int_equal(fx.seen[4].is_head, 0);
}

/* ---- limits ------------------------------------------------------------------------------------
 */

static void client_limits(fixture *fx)
{
    cli c;
    resp r;
    char req[1024];
    char a[128];

    /* URI over max_uri (64) */
    memset(a, 'a', 100);
    a[100] = '\0';
    snprintf(req, sizeof(req), "GET /%s HTTP/1.1\r\nHost: h\r\n\r\n", a);
    CHECK_INT(sfx_cli_connect(fx, &c), 0);
    CHECK_INT(sfx_cli_sends(&c, req), 0);
    CHECK_ERROR_AND_CLOSE(&c, 414, "too_large");
    sfx_cli_close(&c);

    /* header block over max_headers (128 bytes of names and values) */
    snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: h\r\nX-Big: %s%s\r\n\r\n", a, a);
    CHECK_INT(sfx_cli_connect(fx, &c), 0);
    CHECK_INT(sfx_cli_sends(&c, req), 0);
    CHECK_ERROR_AND_CLOSE(&c, 431, "too_large");
    sfx_cli_close(&c);

    /* Content-Length over max_body (16): refused before the body is sent */
    CHECK_INT(sfx_cli_connect(fx, &c), 0);
    CHECK_INT(sfx_cli_sends(&c, "POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 17\r\n\r\n"), 0);
    CHECK_ERROR_AND_CLOSE(&c, 413, "too_large");
    sfx_cli_close(&c);

    /* chunked body growing over max_body */
    CHECK_INT(sfx_cli_connect(fx, &c), 0);
    CHECK_INT(sfx_cli_sends(&c,
                            "POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                            "a\r\n0123456789\r\na\r\n0123456789\r\n0\r\n\r\n"),
              0);
    CHECK_ERROR_AND_CLOSE(&c, 413, "too_large");
    sfx_cli_close(&c);

    /* malformed request line */
    CHECK_INT(sfx_cli_connect(fx, &c), 0);
    CHECK_INT(sfx_cli_sends(&c, "GET /x HTTP/1.1 junk\r\n\r\n"), 0);
    CHECK_ERROR_AND_CLOSE(&c, 400, "bad_request");
    sfx_cli_close(&c);

    /* exactly at every limit: accepted, and the connection stays open */
    memset(a, 'b', 63);
    a[63] = '\0';
    snprintf(req, sizeof(req),
             "POST /%s HTTP/1.1\r\nHost: h\r\nContent-Length: 16\r\n\r\n0123456789abcdef", a);
    CHECK_INT(sfx_cli_connect(fx, &c), 0);
    CHECK_INT(sfx_cli_sends(&c, req), 0);
    CHECK_INT(sfx_cli_read_response(&c, &r, 0), 1);
    CHECK_INT(r.status, 200);
    CHECK_INT(r.body_len, 64);
    CHECK_HEADER(&r, "Connection", "keep-alive");

    /* a limit error after an answered request on a kept-alive connection */
    memset(a, 'c', 100);
    a[100] = '\0';
    snprintf(req, sizeof(req), "GET /%s HTTP/1.1\r\nHost: h\r\n\r\n", a);
    CHECK_INT(sfx_cli_sends(&c, req), 0);
    CHECK_ERROR_AND_CLOSE(&c, 414, "too_large");
}

static void test_limits_414_431_413_400(void **state)
{
    (void)state;
    fixture fx;
    sfx_init(&fx, sfx_handler_echo);
    fx.cfg.max_uri = 64;
    fx.cfg.max_headers = 128;
    fx.cfg.max_body = 16;
    sfx_run(&fx, client_limits, 0);
    assert_int_equal(fx.nreqs, 1); /* only the request at the limits reached the handler */
    assert_int_equal(strlen(fx.seen[0].target), 64);
    assert_string_equal(fx.seen[0].body, "0123456789abcdef");
}

/* ---- response writing --------------------------------------------------------------------------
 */

static void handler_responses(tc_request *req, void *data)
{
    fixture *fx = data;
    int i = sfx_record(fx, req);
    tc_str path = tc_request_path(req);
    static const tc_server_header extra[] = {{"X-One", "1"}, {"X-Two", "two words"}};
    if (sfx_str_eq(path, "/created")) {
        fx->respond_ret[i] =
            tc_request_respond(req, 201, "text/plain; charset=utf-8", extra, 2, "made it", 7);
    } else if (sfx_str_eq(path, "/no-type")) {
        fx->respond_ret[i] = tc_request_respond(req, 204, NULL, NULL, 0, NULL, 0);
    } else if (sfx_str_eq(path, "/odd-status")) {
        fx->respond_ret[i] = tc_request_respond(req, 299, "text/plain", NULL, 0, "odd", 3);
    } else if (sfx_str_eq(path, "/json")) {
        fx->respond_ret[i] = tc_request_respond_json(req, 200, "{\"a\":[1,2]}");
    } else if (sfx_str_eq(path, "/twice")) {
        fx->respond_ret[i] = tc_request_respond(req, 200, "text/plain", NULL, 0, "first", 5);
        /* the request was answered synchronously; it is still queued on the connection (the
         * handler runs inside the read callback), so a second answer is refused */
        fx->abort_other = tc_request_respond(req, 500, "text/plain", NULL, 0, "second", 6);
    } else {
        fx->respond_ret[i] = tc_request_respond(req, 200, "text/plain", NULL, 0, "ok", 2);
    }
}

static void client_responses(fixture *fx)
{
    cli c;
    resp r;
    char v[128];
    CHECK_INT(sfx_cli_connect(fx, &c), 0);

    CHECK_INT(sfx_cli_sends(&c, "GET /created HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK_INT(sfx_cli_read_response(&c, &r, 0), 1);
    CHECK_STR(r.line, "HTTP/1.1 201 Created");
    CHECK(sfx_resp_header(&r, "Date", v, sizeof(v)));
    CHECK(sfx_date_ok(v));
    CHECK_HEADER(&r, "Content-Length", "7");
    CHECK_HEADER(&r, "Content-Type", "text/plain; charset=utf-8");
    CHECK_HEADER(&r, "Connection", "keep-alive");
    CHECK_HEADER(&r, "X-One", "1");
    CHECK_HEADER(&r, "X-Two", "two words");
    CHECK_INT(sfx_resp_header_count(&r, "Date"), 1);
    CHECK_INT(sfx_resp_header_count(&r, "Content-Length"), 1);
    CHECK_INT(sfx_resp_header_count(&r, "Connection"), 1);
    CHECK_INT(r.body_len, 7);
    CHECK(memcmp(r.body, "made it", 7) == 0);

    CHECK_INT(sfx_cli_sends(&c, "GET /no-type HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK_INT(sfx_cli_read_response(&c, &r, 0), 1);
    CHECK_STR(r.line, "HTTP/1.1 204 No Content");
    CHECK(!sfx_resp_header(&r, "Content-Type", v, sizeof(v)));
    CHECK(!sfx_resp_header(&r, "Content-Length", v, sizeof(v))); /* RFC 9110 §8.6: never on a 204 */

    CHECK_INT(sfx_cli_sends(&c, "GET /odd-status HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK_INT(sfx_cli_read_response(&c, &r, 0), 1);
    CHECK_STR(r.line, "HTTP/1.1 299 Unknown");

    CHECK_INT(sfx_cli_sends(&c, "GET /json HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK_INT(sfx_cli_read_response(&c, &r, 0), 1);
    CHECK_STR(r.line, "HTTP/1.1 200 OK");
    CHECK_HEADER(&r, "Content-Type", "application/json");
    CHECK_STR(r.body, "{\"a\":[1,2]}");

    CHECK_INT(sfx_cli_sends(&c, "GET /twice HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK_INT(sfx_cli_read_response(&c, &r, 0), 1);
    CHECK_INT(r.status, 200);
    CHECK_STR(r.body, "first");

    /* the client asks to close: the answer says so and the server closes */
    CHECK_INT(sfx_cli_sends(&c, "GET /last HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"), 0);
    CHECK_INT(sfx_cli_read_response(&c, &r, 0), 1);
    CHECK_HEADER(&r, "Connection", "close");
    CHECK_CLOSED(&c, 0);
    sfx_cli_close(&c);

    /* HTTP/1.0 without keep-alive closes; with keep-alive stays open */
    CHECK_INT(sfx_cli_connect(fx, &c), 0);
    CHECK_INT(sfx_cli_sends(&c, "GET /ten HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"), 0);
    CHECK_INT(sfx_cli_read_response(&c, &r, 0), 1);
    CHECK_HEADER(&r, "Connection", "keep-alive");
    CHECK_INT(sfx_cli_sends(&c, "GET /ten HTTP/1.0\r\n\r\n"), 0);
    CHECK_INT(sfx_cli_read_response(&c, &r, 0), 1);
    CHECK_STR(r.line, "HTTP/1.1 200 OK");
    CHECK_HEADER(&r, "Connection", "close");
    CHECK_CLOSED(&c, 0);
}

static void test_response_format(void **state)
{
    (void)state;
    fixture fx;
    sfx_serve(&fx, handler_responses, client_responses, 0);
    sfx_expect_answered(&fx, 8);
    assert_int_equal(fx.abort_other, TC_EINVAL);
}

/* ---- answers that never carry content (RFC 9110 §6.4.1) ----------------------------------------
 */

/* /status/NNN answers NNN with a body and a Content-Type, which the server must leave out where
 * HTTP says the answer has no content. */
static void handler_status(tc_request *req, void *data)
{
    fixture *fx = data;
    int i = sfx_record(fx, req);
    tc_str path = tc_request_path(req);
    int status = path.len == 11 ? atoi(path.base + 8) : 200;
    fx->respond_ret[i] =
        tc_request_respond(req, status, "application/json", NULL, 0, "{\"not\":\"sent\"}", 14);
}

/* Reads exactly one head from c: the bytes up to and including the blank line, NUL-terminated
 * into out. Returns its length, or -1. Nothing after it is consumed. */
static int read_head(cli *c, char *out, size_t cap)
{
    char *end;
    while ((end = memmem(c->buf, c->len, "\r\n\r\n", 4)) == NULL)
        if (sfx_cli_fill(c) <= 0)
            return -1;
    size_t n = (size_t)(end - c->buf) + 4;
    if (n >= cap)
        return -1;
    memcpy(out, c->buf, n);
    out[n] = '\0';
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
    return (int)n;
}

static int has_field(const char *head, const char *field)
{
    return strcasestr(head, field) != NULL;
}

static void client_no_content(fixture *fx)
{
    static const struct {
        const char *request, *line;
        int content_length; /* -1: none may be sent */
    } cases[] = {
        {"GET /status/204", "HTTP/1.1 204 No Content\r\n", -1},
        {"GET /status/304", "HTTP/1.1 304 Not Modified\r\n", -1},
        {"GET /status/205", "HTTP/1.1 205 Reset Content\r\n", 0},
        {"HEAD /status/200", "HTTP/1.1 200 OK\r\n", 14},
        {"HEAD /status/204", "HTTP/1.1 204 No Content\r\n", -1},
        {"HEAD /status/304", "HTTP/1.1 304 Not Modified\r\n", -1},
    };
    cli c;
    resp r;
    char head[2048], want[64];
    CHECK_INT(sfx_cli_connect(fx, &c), 0);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char req[128];
        (void)snprintf(req, sizeof(req), "%s HTTP/1.1\r\nHost: h\r\n\r\n", cases[i].request);
        CHECK_INT(sfx_cli_sends(&c, req), 0);
        CHECK(read_head(&c, head, sizeof(head)) > 0);
        CHECK(strncmp(head, cases[i].line, strlen(cases[i].line)) == 0);
        CHECK(has_field(head, "\r\nConnection: keep-alive\r\n"));
        CHECK(has_field(head, "\r\nX-Request-Id: "));
        if (cases[i].content_length < 0) {
            CHECK(!has_field(head, "\r\nContent-Length:"));
            CHECK(!has_field(head, "\r\nContent-Type:"));
        } else {
            (void)snprintf(want, sizeof(want), "\r\nContent-Length: %d\r\n",
                           cases[i].content_length);
            CHECK(has_field(head, want));
        }
        /* not one byte after the head: the next answer on the connection follows it at once */
        CHECK_INT(c.len, 0);
        CHECK_INT(sfx_cli_sends(&c, "GET /status/200 HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
        CHECK_INT(sfx_cli_read_response(&c, &r, 0), 1);
        CHECK_STR(r.line, "HTTP/1.1 200 OK");
        CHECK_INT(r.body_len, 14);
        CHECK(memcmp(r.body, "{\"not\":\"sent\"}", 14) == 0);
        CHECK_INT(c.len, 0);
    }

    /* a 1xx given as the answer: a head alone, and the connection closes (no final answer
     * follows, so the client must not wait on for one) */
    CHECK_INT(sfx_cli_sends(&c, "GET /status/103 HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK(read_head(&c, head, sizeof(head)) > 0);
    CHECK(strncmp(head, "HTTP/1.1 103 ", 13) == 0);
    CHECK(!has_field(head, "\r\nContent-Length:"));
    CHECK(!has_field(head, "\r\nContent-Type:"));
    CHECK(has_field(head, "\r\nConnection: close\r\n"));
    CHECK_CLOSED(&c, 0);
}

static void test_no_content_statuses(void **state)
{
    (void)state;
    fixture fx;
    sfx_serve(&fx, handler_status, client_no_content, 0);
    sfx_expect_answered(&fx, 13);
}

static void test_reason_phrases(void **state)
{
    (void)state;
    assert_string_equal(tc_http_reason(200), "OK");
    assert_string_equal(tc_http_reason(400), "Bad Request");
    assert_string_equal(tc_http_reason(404), "Not Found");
    assert_string_equal(tc_http_reason(408), "Request Timeout");
    assert_string_equal(tc_http_reason(413), "Payload Too Large");
    assert_string_equal(tc_http_reason(414), "URI Too Long");
    assert_string_equal(tc_http_reason(431), "Request Header Fields Too Large");
    assert_string_equal(tc_http_reason(502), "Bad Gateway");
    assert_string_equal(tc_http_reason(503), "Service Unavailable");
    assert_string_equal(tc_http_reason(504), "Gateway Timeout");
    assert_string_equal(tc_http_reason(299), "Unknown");
    assert_string_equal(tc_http_reason(-1), "Unknown");
}

/* 1 when the kernel lets a socket bind an address this machine does not have. */
static int nonlocal_bind_allowed(void)
{
    FILE *f = fopen("/proc/sys/net/ipv4/ip_nonlocal_bind", "r");
    int v = 0;
    if (f == NULL)
        return 0;
    if (fscanf(f, "%d", &v) != 1)
        v = 0;
    (void)fclose(f);
    return v != 0;
}

static void test_server_new_errors(void **state)
{
    (void)state;
    uv_loop_t loop;
    tc_server_config cfg;
    tc_server *a = NULL, *b = NULL;
    int closed = 0;
    assert_int_equal(uv_loop_init(&loop), 0);
    tc_server_config_init(&cfg);
    assert_string_equal(cfg.host, "127.0.0.1");
    assert_int_equal(cfg.max_body, TC_SERVER_DEFAULT_MAX_BODY);
    assert_int_equal(cfg.max_uri, TC_SERVER_MAX_URI);
    assert_int_equal(cfg.max_headers, TC_SERVER_MAX_HEADERS);
    assert_int_equal(cfg.header_timeout_ms, TC_SERVER_HEADER_TIMEOUT_MS);
    assert_int_equal(cfg.idle_timeout_ms, TC_SERVER_IDLE_TIMEOUT_MS);

    assert_int_equal(tc_server_new(&a, &loop, &cfg), TC_EINVAL); /* no handler */
    cfg.handler = sfx_handler_noop;
    cfg.host = "not-an-address";
    assert_int_equal(tc_server_new(&a, &loop, &cfg), TC_EINVAL);
    cfg.host = "127.0.0.1";
    assert_int_equal(tc_server_new(&a, &loop, &cfg), 0);
    assert_int_equal(tc_server_connections(a), 0);
    assert_int_equal(tc_server_requests_in_flight(a), 0);
    cfg.port = tc_server_port(a);
    assert_int_equal(tc_server_new(&b, &loop, &cfg), TC_EADDRINUSE);
    /* An address not on this machine keeps the system's reason (TEST-NET-1, never sent to). */
    if (!nonlocal_bind_allowed()) {
        cfg.host = "192.0.2.1";
        cfg.port = 80;
        assert_int_equal(tc_server_new(&b, &loop, &cfg), TC_EADDRNOTAVAIL);
        assert_string_equal(tc_strerror(TC_EADDRNOTAVAIL), "cannot assign requested address");
    }
    tc_server_close(a, sfx_on_closed_count, &closed);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(closed, 1);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* ---- request id and readiness ---------------------------------------------------------------
 */

/* Answers with the request's id as the body; /unready makes the server unready first. */
static void handler_id(tc_request *req, void *data)
{
    fixture *fx = data;
    int i = sfx_record(fx, req);
    if (sfx_str_eq(tc_request_path(req), "/unready"))
        tc_server_set_ready(tc_request_server(req), 0);
    tc_str id = tc_request_id(req);
    fx->respond_ret[i] = tc_request_respond(req, 200, "text/plain", NULL, 0, id.base, id.len);
}

static int is_hex32(const char *s)
{
    if (strlen(s) != 32)
        return 0;
    for (; *s; s++)
        if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
            return 0;
    return 1;
}

static void client_id(fixture *fx)
{
    cli c;
    resp r;
    char hv[256], first[256] = "";
    char long_id[130];
    memset(long_id, 'z', 129);
    long_id[129] = '\0';
    static const struct {
        const char *field; /* header lines sent */
        const char *want;  /* NULL: generated */
    } cases[] = {
        {"X-Request-Id: abc-1\r\n", "abc-1"},
        {"x-request-id:  \t trimmed \t\r\n", "trimmed"},
        {"X-Request-Id: a b\r\n", NULL},
        {"X-Request-Id: one\r\nX-Request-Id: two\r\n", NULL},
        {"", NULL},
    };
    CHECK_INT(sfx_cli_connect(fx, &c), 0);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char req[512];
        (void)snprintf(req, sizeof(req), "GET /id HTTP/1.1\r\nHost: h\r\n%s\r\n", cases[i].field);
        CHECK_INT(sfx_cli_sends(&c, req), 0);
        CHECK_INT(sfx_cli_read_response(&c, &r, 0), 1);
        CHECK_INT(r.status, 200);
        CHECK(sfx_resp_header(&r, "X-Request-Id", hv, sizeof(hv)));
        CHECK_STR(r.body, hv); /* the handler saw what the client gets */
        if (cases[i].want != NULL) {
            CHECK_STR(hv, cases[i].want);
        } else {
            CHECK(is_hex32(hv));
            CHECK(strcmp(hv, first) != 0); /* drawn anew */
            (void)snprintf(first, sizeof(first), "%s", hv);
        }
    }
    char req[512];
    (void)snprintf(req, sizeof(req), "GET /id HTTP/1.1\r\nHost: h\r\nX-Request-Id: %s\r\n\r\n",
                   long_id);
    CHECK_INT(sfx_cli_sends(&c, req), 0);
    CHECK_INT(sfx_cli_read_response(&c, &r, 0), 1);
    CHECK(sfx_resp_header(&r, "X-Request-Id", hv, sizeof(hv)));
    CHECK(is_hex32(hv)); /* 129 bytes: too long */
    long_id[128] = '\0';
    (void)snprintf(req, sizeof(req), "GET /id HTTP/1.1\r\nHost: h\r\nX-Request-Id: %s\r\n\r\n",
                   long_id);
    CHECK_INT(sfx_cli_sends(&c, req), 0);
    CHECK_INT(sfx_cli_read_response(&c, &r, 0), 1);
    CHECK(sfx_resp_header(&r, "X-Request-Id", hv, sizeof(hv)));
    CHECK_STR(hv, long_id); /* 128 bytes: taken */

    /* the readiness probe: answered by the server, never by the handler */
    CHECK_INT(sfx_cli_sends(&c, "GET /ready?x=1 HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK_INT(sfx_cli_read_response(&c, &r, 0), 1);
    CHECK_INT(r.status, 200);
    CHECK_STR(r.body, "{\"status\":\"ready\"}");
    CHECK_INT(sfx_cli_sends(&c, "GET /unready HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK_INT(sfx_cli_read_response(&c, &r, 0), 1);
    CHECK_HEADER(&r, "Connection", "close"); /* unready: every answer closes */
    sfx_cli_close(&c);
    CHECK_INT(sfx_cli_connect(fx, &c), 0); /* still accepting */
    CHECK_INT(sfx_cli_sends(&c, "GET /ready HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK_INT(sfx_cli_read_response(&c, &r, 0), 1);
    CHECK_INT(r.status, 503);
    CHECK_STR(r.body, "{\"status\":\"draining\"}");
    CHECK_HEADER(&r, "Connection", "close");
}

static void test_request_id_and_ready(void **state)
{
    (void)state;
    fixture fx;
    sfx_init(&fx, handler_id);
    fx.cfg.ready_path = "/ready";
    sfx_run(&fx, client_id, 0);
    assert_int_equal(fx.nreqs, 8); /* /ready never reached the handler */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reason_phrases),
        cmocka_unit_test(test_server_new_errors),
        cmocka_unit_test(test_parse_target_query_headers),
        cmocka_unit_test(test_body_chunked_continue_head),
        cmocka_unit_test(test_limits_414_431_413_400),
        cmocka_unit_test(test_response_format),
        cmocka_unit_test(test_no_content_statuses),
        cmocka_unit_test(test_request_id_and_ready),
    };
    return SFX_RUN_TESTS(tests);
}
