/*
 * Tests for the native engine's response reader (src/http/h1_parse.c): a table of responses, each
 * fed whole, split in two at every byte boundary, and one byte at a time; the outcome (status,
 * header block, body, keep-alive, bytes left over, or the error) must be the same every way.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "http/h1_parse.h"
#include "tailcut/error.h"

typedef struct outcome {
    int rc;          /* TC__H1_DONE or the reason it stopped (after EOF if the bytes ran out) */
    const char *why; /* tc__h1_why() of a reason */
    int status;
    int version;
    int keep_alive;
    size_t extra;
    char head[512];
    char body[512];
    int has_keep_alive_header; /* the parser noted a Keep-Alive header */
    char keep_alive_value[64]; /* its value */
} outcome;

/* Feeds data in the pieces given by cuts (ascending offsets, 0-terminated list of sizes). */
static void run(const char *data, size_t len, const size_t *cuts, size_t ncuts, size_t max_body,
                int head_only, outcome *o)
{
    tc__buf out;
    tc__buf_init(&out, NULL, 0, SIZE_MAX / 2);
    tc__h1 h;
    tc__h1_init(&h, &out, max_body, head_only);
    memset(o, 0, sizeof(*o));
    size_t at = 0;
    int rc = TC__H1_MORE;
    for (size_t i = 0; i <= ncuts && rc == TC__H1_MORE; i++) {
        size_t end = i < ncuts ? cuts[i] : len;
        size_t extra = 0;
        rc = tc__h1_feed(&h, data + at, end - at, &extra);
        if (rc == TC__H1_DONE)
            o->extra = extra + (len - end);
        at = end;
    }
    if (rc == TC__H1_MORE)
        rc = tc__h1_eof(&h);
    o->rc = rc;
    if (rc < 0)
        o->why = tc__h1_why(&h, rc);
    if (rc == TC__H1_DONE) {
        char *b = tc__buf_cstr(&out);
        o->status = h.status;
        o->version = h.version;
        o->keep_alive = h.keep_alive;
        assert_true(h.body_off >= 1 && h.body_off <= out.len);
        assert_int_equal(b[h.body_off - 1], '\0');
        snprintf(o->head, sizeof(o->head), "%s", b);
        snprintf(o->body, sizeof(o->body), "%.*s", (int)(out.len - h.body_off), b + h.body_off);
        o->has_keep_alive_header = h.keep_alive_off != 0;
        if (o->has_keep_alive_header) {
            assert_true(h.keep_alive_off + h.keep_alive_len < h.body_off);
            snprintf(o->keep_alive_value, sizeof(o->keep_alive_value), "%.*s",
                     (int)h.keep_alive_len, b + h.keep_alive_off);
        }
        assert_true(out.len - h.body_off <= max_body);
    }
    tc__buf_reset(&out);
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
    check_all_splits("HTTP/1.1 204 No Content\r\n\r\n", 10, 0, &o);
    assert_int_equal(o.rc, TC__H1_DONE);
    assert_int_equal(o.status, 204);
    check_all_splits("HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n", 10, 0, &o);
    assert_int_equal(o.rc, TC__H1_DONE);
    assert_string_equal(o.body, "");
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
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_bad_and_cut_short),
        cmocka_unit_test(test_bytes_after_the_response),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
