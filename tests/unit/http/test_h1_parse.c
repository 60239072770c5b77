/*
 * Tests for the native engine's response reader (src/http/h1_parse.c): a table of responses, each
 * fed whole, split in two at every byte boundary, and one byte at a time, and each of those both
 * read whole and in stream mode (the body handed back feed by feed); the outcome (status, header
 * block, body, framing, keep-alive, bytes left over, or the error) must be the same every way.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/fmt.h"
#include "http/h1_parse.h"
#include "tailcut/error.h"

typedef struct outcome {
    int rc;          /* TC__H1_DONE or the reason it stopped (after EOF if the bytes ran out) */
    const char *why; /* tc__h1_why() of a reason */
    int status;
    int version;
    int keep_alive;
    size_t extra;
    int framing; /* once the final head is in */
    long long content_length;
    char head[512];
    char body[512];
    int has_keep_alive_header; /* the parser noted a Keep-Alive header */
    char keep_alive_value[64]; /* its value */
} outcome;

/* Stream mode: appends the body bytes of the last feed to body, and checks where they were:
 * one piece lies in the bytes fed (no copy), several were gathered in the spill buffer. */
static void take_body(tc__h1 *h, tc__buf *spill, const char *fed, size_t fed_len, tc__buf *body)
{
    const char *p = NULL;
    size_t n = 0;
    tc__h1_body(h, &p, &n);
    if (n == 0)
        return;
    if (spill->len > 0)
        assert_true(p == spill->data && n == spill->len);
    else
        assert_true(p >= fed && p + n <= fed + fed_len);
    assert_int_equal(tc__buf_append(body, p, n), 0);
    spill->len = 0; /* the caller empties it once it has used the bytes */
}

/* Feeds data in the pieces given by cuts (ascending offsets, 0-terminated list of sizes); in
 * stream mode the body is taken feed by feed. */
static void run_mode(const char *data, size_t len, const size_t *cuts, size_t ncuts,
                     size_t max_body, int head_only, int stream, outcome *o)
{
    tc__buf out, spill, body;
    tc__buf_init(&out, NULL, 0, SIZE_MAX / 2);
    tc__buf_init(&spill, NULL, 0, SIZE_MAX / 2);
    tc__buf_init(&body, NULL, 0, SIZE_MAX / 2);
    tc__h1 h;
    tc__h1_init(&h, &out, max_body, head_only);
    if (stream)
        tc__h1_stream(&h, &spill);
    memset(o, 0, sizeof(*o));
    size_t at = 0;
    int rc = TC__H1_MORE;
    for (size_t i = 0; i <= ncuts && rc == TC__H1_MORE; i++) {
        size_t end = i < ncuts ? cuts[i] : len;
        size_t extra = 0;
        rc = tc__h1_feed(&h, data + at, end - at, &extra);
        if (rc == TC__H1_DONE)
            o->extra = extra + (len - end);
        if (stream)
            take_body(&h, &spill, data + at, end - at, &body);
        at = end;
    }
    if (rc == TC__H1_MORE) {
        rc = tc__h1_eof(&h);
        if (stream)
            take_body(&h, &spill, NULL, 0, &body);
    }
    o->rc = rc;
    if (rc < 0)
        o->why = tc__h1_why(&h, rc);
    if (h.head_done) {
        o->framing = h.framing;
        o->content_length = h.framing == TC__H1_FRAMING_LENGTH ? h.content_length : -1;
    }
    if (rc == TC__H1_DONE) {
        char *b = tc__buf_cstr(&out);
        assert_true(h.head_done);
        o->status = h.status;
        o->version = h.version;
        o->keep_alive = h.keep_alive;
        assert_true(h.body_off >= 1 && h.body_off <= out.len);
        assert_int_equal(b[h.body_off - 1], '\0');
        snprintf(o->head, sizeof(o->head), "%s", b);
        if (stream) {
            assert_int_equal(out.len, h.body_off); /* nothing of the body is stored */
            snprintf(o->body, sizeof(o->body), "%.*s", (int)body.len, tc__buf_cstr(&body));
            assert_true(body.len <= max_body);
        } else {
            snprintf(o->body, sizeof(o->body), "%.*s", (int)(out.len - h.body_off), b + h.body_off);
            assert_true(out.len - h.body_off <= max_body);
        }
        o->has_keep_alive_header = h.keep_alive_off != 0;
        if (o->has_keep_alive_header) {
            assert_true(h.keep_alive_off + h.keep_alive_len < h.body_off);
            snprintf(o->keep_alive_value, sizeof(o->keep_alive_value), "%.*s",
                     (int)h.keep_alive_len, b + h.keep_alive_off);
        }
    }
    tc__buf_reset(&out);
    tc__buf_reset(&spill);
    tc__buf_reset(&body);
}

static void same(const outcome *a, const outcome *b);

/* run_mode read whole, then in stream mode, which must give the same outcome. */
static void run(const char *data, size_t len, const size_t *cuts, size_t ncuts, size_t max_body,
                int head_only, outcome *o)
{
    run_mode(data, len, cuts, ncuts, max_body, head_only, 0, o);
    outcome streamed;
    run_mode(data, len, cuts, ncuts, max_body, head_only, 1, &streamed);
    same(o, &streamed);
}

static void same(const outcome *a, const outcome *b)
{
    assert_int_equal(a->rc, b->rc);
    if (a->why != NULL || b->why != NULL)
        assert_string_equal(a->why, b->why);
    assert_int_equal(a->status, b->status);
    assert_int_equal(a->version, b->version);
    assert_int_equal(a->keep_alive, b->keep_alive);
    assert_int_equal(a->extra, b->extra);
    assert_int_equal(a->framing, b->framing);
    assert_int_equal(a->content_length, b->content_length);
    assert_string_equal(a->head, b->head);
    assert_string_equal(a->body, b->body);
    assert_int_equal(a->has_keep_alive_header, b->has_keep_alive_header);
    assert_string_equal(a->keep_alive_value, b->keep_alive_value);
}

/* Runs data whole, at every two-way split and byte by byte; returns the (common) outcome. */
static void check_all_splits(const char *data, size_t max_body, int head_only, outcome *whole)
{
    size_t len = strlen(data);
    run(data, len, NULL, 0, max_body, head_only, whole);
    outcome o;
    for (size_t i = 1; i < len; i++) {
        size_t cut = i;
        run(data, len, &cut, 1, max_body, head_only, &o);
        same(whole, &o);
    }
    size_t *cuts = malloc((len + 1) * sizeof(*cuts));
    assert_non_null(cuts);
    for (size_t i = 1; i < len; i++)
        cuts[i - 1] = i;
    run(data, len, cuts, len > 0 ? len - 1 : 0, max_body, head_only, &o);
    same(whole, &o);
    free(cuts);
}

static void test_content_length_and_keep_alive(void **state)
{
    (void)state;
    outcome o;
    check_all_splits(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello", 100, 0,
        &o);
    assert_int_equal(o.rc, TC__H1_DONE);
    assert_int_equal(o.status, 200);
    assert_int_equal(o.version, 11);
    assert_int_equal(o.keep_alive, 1);
    assert_string_equal(o.head,
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n");
    assert_string_equal(o.body, "hello");
    assert_int_equal(o.extra, 0);
    assert_int_equal(o.framing, TC__H1_FRAMING_LENGTH);
    assert_int_equal(o.content_length, 5);
}

/* The first Keep-Alive header's value is noted while the head is read (the client's idle
 * timeout comes from it), however the name is cased and wherever the reads split it; a header
 * of an interim response, a trailer and a name that only contains the word are not it. */
static void test_keep_alive_header_noted(void **state)
{
    (void)state;
    outcome o;
    check_all_splits("HTTP/1.1 200 OK\r\nX-Keep-Alive: 1\r\nKeep-Alive-X: 2\r\n"
                     "kEEP-aLIVE: timeout=5, max=100\r\nKeep-Alive: timeout=9\r\n"
                     "Content-Length: 2\r\n\r\nok",
                     100, 0, &o);
    assert_int_equal(o.rc, TC__H1_DONE);
    assert_int_equal(o.has_keep_alive_header, 1);
    assert_string_equal(o.keep_alive_value, "timeout=5, max=100");
    assert_string_equal(o.body, "ok");

    check_all_splits("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nKeep-Alive: timeout=1\r\n\r\n", 100,
                     0, &o);
    assert_int_equal(o.has_keep_alive_header, 1);
    assert_string_equal(o.keep_alive_value, "timeout=1");

    check_all_splits("HTTP/1.1 103 Early Hints\r\nKeep-Alive: timeout=1\r\n\r\n"
                     "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                     "2\r\nok\r\n0\r\nKeep-Alive: timeout=2\r\n\r\n",
                     100, 0, &o);
    assert_int_equal(o.rc, TC__H1_DONE);
    assert_int_equal(o.status, 200);
    assert_int_equal(o.has_keep_alive_header, 0);
    assert_string_equal(o.keep_alive_value, "");
}

static void test_chunked_extensions_trailers(void **state)
{
    (void)state;
    outcome o;
    check_all_splits("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                     "3;ext=1\r\nabc\r\n2 ; a=\"b\"\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n",
                     100, 0, &o);
    assert_int_equal(o.rc, TC__H1_DONE);
    assert_string_equal(o.body, "abcde");
    assert_null(strstr(o.head, "Trailer"));
    assert_int_equal(o.keep_alive, 1);
    assert_int_equal(o.framing, TC__H1_FRAMING_CHUNKED);
    assert_int_equal(o.content_length, -1);
}

static void test_interim_responses_dropped(void **state)
{
    (void)state;
    outcome o;
    check_all_splits("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: <a>\r\n\r\n"
                     "HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
                     100, 0, &o);
    assert_int_equal(o.rc, TC__H1_DONE);
    assert_int_equal(o.status, 201);
    assert_string_equal(o.head, "HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n");
    assert_string_equal(o.body, "ok");
}

static void test_bodiless_answers(void **state)
{
    (void)state;
    outcome o;
    /* HEAD: the Content-Length describes a body that is not sent. */
    check_all_splits("HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n", 10, 1, &o);
    assert_int_equal(o.rc, TC__H1_DONE);
    assert_string_equal(o.body, "");
    assert_int_equal(o.keep_alive, 1);
    assert_int_equal(o.framing, TC__H1_FRAMING_NONE);
    check_all_splits("HTTP/1.1 204 No Content\r\n\r\n", 10, 0, &o);
    assert_int_equal(o.rc, TC__H1_DONE);
    assert_int_equal(o.status, 204);
    assert_int_equal(o.framing, TC__H1_FRAMING_NONE);
    check_all_splits("HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n", 10, 0, &o);
    assert_int_equal(o.rc, TC__H1_DONE);
    assert_string_equal(o.body, "");
    assert_int_equal(o.framing, TC__H1_FRAMING_NONE);
}

static void test_connection_close_http10_and_eof_body(void **state)
{
    (void)state;
    outcome o;
    check_all_splits("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx", 10, 0,
                     &o);
    assert_int_equal(o.rc, TC__H1_DONE);
    assert_int_equal(o.keep_alive, 0);
    check_all_splits("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\ny", 10, 0, &o);
    assert_int_equal(o.rc, TC__H1_DONE);
    assert_int_equal(o.version, 10);
    assert_int_equal(o.keep_alive, 0);
    check_all_splits("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nz", 10,
                     0, &o);
    assert_int_equal(o.keep_alive, 1);
    /* No length at all: the body runs to the end of the connection. */
    check_all_splits("HTTP/1.1 200 OK\r\n\r\nto the end", 100, 0, &o);
    assert_int_equal(o.rc, TC__H1_DONE);
    assert_string_equal(o.body, "to the end");
    assert_int_equal(o.keep_alive, 0);
    assert_int_equal(o.framing, TC__H1_FRAMING_CLOSE);
}

/* Stream mode hands a feed's body back without a copy when it is one piece, and gathers it
 * when it is several; the head alone stays in out. */
static void test_stream_pieces(void **state)
{
    (void)state;
    tc__buf out, spill;
    tc__buf_init(&out, NULL, 0, SIZE_MAX / 2);
    tc__buf_init(&spill, NULL, 0, 64);
    tc__h1 h;
    tc__h1_init(&h, &out, 1000, 0);
    tc__h1_stream(&h, &spill);
    static const char head[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc";
    size_t extra = 0;
    assert_int_equal(tc__h1_feed(&h, head, strlen(head), &extra), TC__H1_MORE);
    assert_true(h.head_done);
    assert_int_equal(h.status, 200);
    const char *p = NULL;
    size_t n = 0;
    tc__h1_body(&h, &p, &n);
    assert_int_equal(n, 3);
    assert_ptr_equal(p, head + strlen(head) - 3); /* in the bytes fed */
    assert_int_equal(spill.len, 0);
    static const char more[] = "\r\n2\r\nde\r\n1\r\nf\r\n";
    assert_int_equal(tc__h1_feed(&h, more, strlen(more), &extra), TC__H1_MORE);
    tc__h1_body(&h, &p, &n);
    assert_int_equal(n, 3);
    assert_ptr_equal(p, spill.data); /* two pieces: gathered */
    assert_memory_equal(p, "def", 3);
    spill.len = 0;
    assert_int_equal(tc__h1_feed(&h, TC__LIT("0\r\n\r\n"), &extra), TC__H1_DONE);
    tc__h1_body(&h, &p, &n);
    assert_int_equal(n, 0);
    assert_int_equal(out.len, h.body_off);
    tc__buf_reset(&out);
    tc__buf_reset(&spill);
}

static void test_limits(void **state)
{
    (void)state;
    outcome o;
    /* Announced too large: refused at the head, before any body byte. */
    check_all_splits("HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n", 10, 0, &o);
    assert_int_equal(o.rc, TC__H1_BODY_TOO_LARGE);
    check_all_splits("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789", 10, 0, &o);
    assert_int_equal(o.rc, TC__H1_DONE);
    check_all_splits("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nabcdef\r\n"
                     "5\r\nghijk\r\n0\r\n\r\n",
                     10, 0, &o);
    assert_int_equal(o.rc, TC__H1_BODY_TOO_LARGE);
    check_all_splits("HTTP/1.1 200 OK\r\n\r\n0123456789A", 10, 0, &o);
    assert_int_equal(o.rc, TC__H1_BODY_TOO_LARGE);

    /* A header line over TC__H1_MAX_LINE, and a header block over TC__H1_MAX_HEADER_BYTES. */
    size_t big = TC__H1_MAX_LINE + 100;
    char *line = malloc(big + 128);
    assert_non_null(line);
    int n = snprintf(line, 64, "HTTP/1.1 200 OK\r\nX-Long: ");
    memset(line + n, 'a', big);
    strcpy(line + n + big, "\r\nContent-Length: 0\r\n\r\n");
    run(line, strlen(line), NULL, 0, 10, 0, &o);
    assert_int_equal(o.rc, TC__H1_LINE_TOO_LONG);
    free(line);
    size_t nhdr = TC__H1_MAX_HEADER_BYTES / 1000 + 2;
    char *block = malloc(nhdr * 1100 + 128);
    assert_non_null(block);
    size_t at = (size_t)sprintf(block, "HTTP/1.1 200 OK\r\n");
    for (size_t i = 0; i < nhdr; i++) {
        at += (size_t)sprintf(block + at, "X-H%zu: ", i);
        memset(block + at, 'b', 1000);
        at += 1000;
        at += (size_t)sprintf(block + at, "\r\n");
    }
    strcpy(block + at, "Content-Length: 0\r\n\r\n");
    run(block, strlen(block), NULL, 0, 10, 0, &o);
    assert_int_equal(o.rc, TC__H1_HEADERS_TOO_LARGE);
    free(block);
}

static void test_bad_and_cut_short(void **state)
{
    (void)state;
    outcome o;
    check_all_splits("not http at all\r\n\r\n", 10, 0, &o);
    assert_int_equal(o.rc, TC__H1_INVALID);
    assert_string_equal(o.why, "invalid constant string"); /* http-parser's own words */
    check_all_splits("HTTP/1.1 2x0 What\r\nContent-Length: 0\r\n\r\n", 10, 0, &o);
    assert_int_equal(o.rc, TC__H1_INVALID);
    assert_string_equal(o.why, "invalid HTTP status code");
    check_all_splits("HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n", 10, 0, &o);
    assert_int_equal(o.rc, TC__H1_SWITCHING_PROTOCOLS);
    check_all_splits("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", 10, 0, &o);
    assert_int_equal(o.rc, TC__H1_CLOSED_INCOMPLETE);
    assert_string_equal(o.why, "connection closed before the response was complete");
    check_all_splits("HTTP/1.1 200 OK\r\nContent-Le", 10, 0, &o);
    assert_int_equal(o.rc, TC__H1_CLOSED_INCOMPLETE);
    run("", 0, NULL, 0, 10, 0, &o);
    assert_int_equal(o.rc, TC__H1_CLOSED_BEFORE_ANY);
    assert_string_equal(o.why, "connection closed before any response byte");
}

static void test_bytes_after_the_response(void **state)
{
    (void)state;
    outcome o;
    check_all_splits("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n\r\n", 10, 0,
                     &o);
    assert_int_equal(o.rc, TC__H1_DONE);
    assert_string_equal(o.body, "ok");
    assert_int_equal(o.extra, 19);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_content_length_and_keep_alive),
        cmocka_unit_test(test_chunked_extensions_trailers),
        cmocka_unit_test(test_interim_responses_dropped),
        cmocka_unit_test(test_keep_alive_header_noted),
        cmocka_unit_test(test_bodiless_answers),
        cmocka_unit_test(test_connection_close_http10_and_eof_body),
        cmocka_unit_test(test_stream_pieces),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_bad_and_cut_short),
        cmocka_unit_test(test_bytes_after_the_response),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
