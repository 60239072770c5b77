/*
 * Unit tests for the server's response head (src/server/server_request.c): the response buffer
 * is sized by tc__srv_head_size, so it must be the exact length tc__srv_head_write writes, for
 * every kind of head the server makes: each status class and the reason phrases of every length,
 * a body (Content-Length), HEAD (Content-Length, no body), 205 (Content-Length: 0), 1xx/204/304
 * (neither Content-Length nor Content-Type), with and without a Content-Type, close and
 * keep-alive, request ids from 1 byte to TC_REQUEST_ID_MAX, and up to ten extra headers (more than
 * the TC__SRV_HEAD_KEEP_LENS whose lengths the size keeps for the write). Each
 * head is written into a buffer of exactly its computed size (ASan sees a byte past it in the
 * sanitizer tree) inside a guard area that must stay untouched, and then read back line by line.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "server/server_internal.h"

#define GUARD 64

/* What the server's rules make of a response (server_request.c, request_response_body). */
typedef enum kind { K_BODY, K_HEAD, K_EMPTY_205, K_NONE } kind;

/* Writes h into a buffer of exactly tc__srv_head_size(h) bytes and checks every line. Returns
 * the length written. */
static size_t check_head(tc__srv_head *h)
{
    size_t size = tc__srv_head_size(h);
    char *area = malloc(size + 2 * GUARD);
    assert_non_null(area);
    memset(area, 0x5A, size + 2 * GUARD);
    char *exact = malloc(size); /* exactly the computed size: ASan catches a byte beyond */
    assert_non_null(exact);
    size_t wrote = tc__srv_head_write(exact, h);
    assert_int_equal(wrote, size);
    assert_int_equal(tc__srv_head_write(area + GUARD, h), size);
    for (size_t i = 0; i < GUARD; i++) {
        assert_int_equal((unsigned char)area[i], 0x5A);
        assert_int_equal((unsigned char)area[GUARD + size + i], 0x5A);
    }
    assert_memory_equal(exact, area + GUARD, size);

    /* Read it back: the lines the head promises, in order, and nothing else. */
    char want[1024];
    const char *p = exact, *end = exact + size;
    int n = snprintf(want, sizeof(want), "HTTP/1.1 %u %s\r\n", (unsigned)h->status, h->reason);
    assert_memory_equal(p, want, (size_t)n);
    p += n;
    assert_memory_equal(p, h->date, h->date_len);
    p += h->date_len;
    if (h->content_type != NULL) {
        n = snprintf(want, sizeof(want), "Content-Type: %s\r\n", h->content_type);
        assert_memory_equal(p, want, (size_t)n);
        p += n;
    }
    if (h->has_length) {
        n = snprintf(want, sizeof(want), "Content-Length: %llu\r\n",
                     (unsigned long long)h->content_length);
        assert_memory_equal(p, want, (size_t)n);
        p += n;
    }
    n = snprintf(want, sizeof(want), "Connection: %s\r\n", h->close ? "close" : "keep-alive");
    assert_memory_equal(p, want, (size_t)n);
    p += n;
    n = snprintf(want, sizeof(want), "X-Request-Id: %.*s\r\n", (int)h->id_len, h->id);
    assert_memory_equal(p, want, (size_t)n);
    p += n;
    for (size_t i = 0; i < h->nheaders; i++) {
        n = snprintf(want, sizeof(want), "%s: %s\r\n", h->headers[i].name, h->headers[i].value);
        assert_memory_equal(p, want, (size_t)n);
        p += n;
    }
    assert_true(end - p == 2);
    assert_memory_equal(p, "\r\n", 2);
    free(exact);
    free(area);
    return wrote;
}

static void fill_head(tc__srv_head *h, int status, kind k, uint64_t body_len, const char *ctype)
{
    h->status = status;
    h->reason = tc_http_reason(status);
    h->content_type = k == K_NONE ? NULL : ctype;
    h->has_length = k != K_NONE;
    h->content_length = k == K_EMPTY_205 ? 0 : body_len;
}

static void test_every_kind_of_head(void **state)
{
    (void)state;
    static const int statuses[] = {100, 101, 199, 200, 201, 204,  205,   301, 304, 400,
                                   404, 405, 408, 413, 414, 429,  431,   499, 500, 502,
                                   503, 504, 599, 600, 999, 1000, 65535, -1};
    static const uint64_t lengths[] = {0, 1, 9, 10, 99, 100, 12345, 1048576, UINT64_MAX};
    static const char *const ctypes[] = {NULL, "application/json", "text/html; charset=utf-8"};
    char id_max[TC_REQUEST_ID_MAX];
    memset(id_max, 'f', sizeof(id_max));
    const struct {
        const char *id;
        size_t len;
    } ids[] = {{"a", 1}, {"0123456789abcdef0123456789abcdef", 32}, {id_max, sizeof(id_max)}};
    const tc_server_header extra[] = {
        {"Retry-After", "1"},
        {"Allow", "GET, HEAD"},
        {"X-Tailcut-Attempts", "3"},
        {"Content-Security-Policy", "default-src 'self'; img-src 'self' data:"},
        {"X", ""},
        {"Cache-Control", "no-store"},
        {"X-Frame-Options", "DENY"},
        {"Vary", "Accept-Encoding"},
        {"X-Long", "a value longer than the rest, to see the lengths kept and measured again"},
        {"Y", "beyond the lengths the head keeps: measured again on writing"},
    };
    static const char date[] = "Date: Sat, 21 Nov 2026 16:57:44 GMT\r\n";
    size_t heads = 0, smallest = SIZE_MAX, largest = 0;

    for (size_t si = 0; si < sizeof(statuses) / sizeof(statuses[0]); si++) {
        int status = statuses[si];
        /* The server's rules: 1xx, 204 and 304 have no content; 205 says Content-Length: 0;
         * anything else is a body or, for HEAD, its length alone. */
        kind kinds[2];
        size_t nkinds = 0;
        if (status < 200 || status == 204 || status == 304) {
            kinds[nkinds++] = K_NONE;
        } else if (status == 205) {
            kinds[nkinds++] = K_EMPTY_205;
        } else {
            kinds[nkinds++] = K_BODY;
            kinds[nkinds++] = K_HEAD;
        }
        for (size_t ki = 0; ki < nkinds; ki++)
            for (size_t li = 0; li < sizeof(lengths) / sizeof(lengths[0]); li++)
                for (size_t ci = 0; ci < sizeof(ctypes) / sizeof(ctypes[0]); ci++)
                    for (int close = 0; close <= 1; close++)
                        for (size_t ii = 0; ii < sizeof(ids) / sizeof(ids[0]); ii++)
                            for (size_t nh = 0; nh <= sizeof(extra) / sizeof(extra[0]); nh++) {
                                tc__srv_head h;
                                memset(&h, 0, sizeof(h));
                                fill_head(&h, status, kinds[ki], lengths[li], ctypes[ci]);
                                h.close = close;
                                h.date = date;
                                h.date_len = sizeof(date) - 1;
                                h.id = ids[ii].id;
                                h.id_len = ids[ii].len;
                                h.headers = nh > 0 ? extra : NULL;
                                h.nheaders = nh;
                                size_t len = check_head(&h);
                                heads++;
                                smallest = len < smallest ? len : smallest;
                                largest = len > largest ? len : largest;
                            }
    }
    /* The smallest: a 1xx (no reason phrase of its own), Date, Connection: close, a 1-byte id. */
    assert_int_equal(smallest, sizeof("HTTP/1.1 100 Unknown\r\n") - 1 + sizeof(date) - 1 +
                                   sizeof("Connection: close\r\n") - 1 +
                                   sizeof("X-Request-Id: a\r\n") - 1 + 2);
    assert_true(largest > smallest);
    print_message("%zu heads, %zu to %zu bytes\n", heads, smallest, largest);
}

/* The head the server writes for a plain JSON answer, byte for byte. */
static void test_json_answer_text(void **state)
{
    (void)state;
    static const char date[] = "Date: Sat, 21 Nov 2026 16:57:44 GMT\r\n";
    tc__srv_head h;
    memset(&h, 0, sizeof(h));
    fill_head(&h, 200, K_BODY, 17, "application/json");
    h.date = date;
    h.date_len = sizeof(date) - 1;
    h.id = "0123456789abcdef0123456789abcdef";
    h.id_len = 32;
    static const char want[] = "HTTP/1.1 200 OK\r\n"
                               "Date: Sat, 21 Nov 2026 16:57:44 GMT\r\n"
                               "Content-Type: application/json\r\n"
                               "Content-Length: 17\r\n"
                               "Connection: keep-alive\r\n"
                               "X-Request-Id: 0123456789abcdef0123456789abcdef\r\n"
                               "\r\n";
    char out[sizeof(want)];
    assert_int_equal(tc__srv_head_size(&h), sizeof(want) - 1);
    assert_int_equal(tc__srv_head_write(out, &h), sizeof(want) - 1);
    assert_memory_equal(out, want, sizeof(want) - 1);
}

_Static_assert(TC__SRV_HEAD_KEEP_LENS < 10, "the test covers headers beyond the kept lengths");

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_kind_of_head),
        cmocka_unit_test(test_json_answer_text),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
