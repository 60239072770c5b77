/*
 * libFuzzer target: the native engine's HTTP/1.1 response reader (src/http/h1_parse.c).
 *
 * Input layout: byte 0 picks max_body (a small or a large limit), HEAD or not, and whether the
 * split read is in stream mode; bytes 1-2 seed the split points; the rest is what a server sent.
 * The one idea: the reader's result must not depend on how the bytes were split across reads,
 * nor on whether the body was kept or handed back feed by feed (stream mode), so the input is
 * read twice, whole and in pieces of pseudo-random sizes, and both outcomes (the error, or the
 * status, header block, body and bytes left over) must be identical. Every outcome must also keep
 * the reader's promises: the body within max_body, a NUL between head and body, the header block
 * within its limit.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/h1_parse.h"
#include "loopback.h" /* FZ_CHECK */
#include "tailcut/error.h"

typedef struct result {
    int rc;
    int status, version, keep_alive;
    size_t extra, body_off;
    tc__buf out;
} result;

/* Stream mode: the body bytes of the last feed, appended after the head (which the reader no
 * longer writes to once it is complete), so that out reads as in the whole mode. */
static void take_body(tc__h1 *h, tc__buf *spill, tc__buf *out)
{
    const char *p = NULL;
    size_t n = 0;
    tc__h1_body(h, &p, &n);
    FZ_CHECK(n == 0 || h->head_done, "body bytes before the head");
    if (n > 0 && tc__buf_append(out, p, n) != 0)
        abort();
    spill->len = 0;
}

static void read_response(const uint8_t *data, size_t n, size_t max_body, int head_only,
                          uint32_t seed, int stream, result *res)
{
    tc__h1 h;
    tc__buf spill;
    memset(res, 0, sizeof(*res));
    tc__buf_init(&res->out, NULL, 0, SIZE_MAX / 2);
    tc__buf_init(&spill, NULL, 0, SIZE_MAX / 2);
    tc__h1_init(&h, &res->out, max_body, head_only);
    if (stream)
        tc__h1_stream(&h, &spill);
    size_t at = 0;
    int rc = TC__H1_MORE;
    while (rc == TC__H1_MORE && at < n) {
        size_t piece = n - at;
        if (seed != 0) {
            seed = seed * 1103515245u + 12345u;
            piece = 1 + (seed >> 16) % 64;
            if (piece > n - at)
                piece = n - at;
        }
        size_t extra = 0;
        rc = tc__h1_feed(&h, (const char *)data + at, piece, &extra);
        at += piece;
        if (rc == TC__H1_DONE)
            res->extra = extra + (n - at);
        if (stream)
            take_body(&h, &spill, &res->out);
    }
    if (rc == TC__H1_MORE) {
        rc = tc__h1_eof(&h);
        if (stream)
            take_body(&h, &spill, &res->out);
    }
    tc__buf_reset(&spill);
    res->rc = rc;
    if (rc == TC__H1_DONE) {
        res->status = h.status;
        res->version = h.version;
        res->keep_alive = h.keep_alive;
        res->body_off = h.body_off;
        FZ_CHECK(h.body_off >= 1 && h.body_off <= res->out.len, "body offset out of range");
        FZ_CHECK(res->out.data[h.body_off - 1] == '\0', "no NUL after the header block");
        FZ_CHECK(res->out.len - h.body_off <= max_body, "body over max_body");
        FZ_CHECK(h.body_off - 1 <= TC__H1_MAX_HEADER_BYTES, "header block over its limit");
        FZ_CHECK(h.status >= 200 || h.status < 100, "an interim response reported as final");
        FZ_CHECK(!head_only || res->out.len == h.body_off, "a body after HEAD");
    } else {
        /* A stop reason, never out of memory (nothing fails an allocation here). */
        FZ_CHECK(rc < 0 && rc >= TC__H1_CLOSED_INCOMPLETE && rc != TC__H1_NOMEM,
                 "unexpected stop reason");
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3)
        return 0;
    size_t max_body = (data[0] & 1) ? 16 : 1024 * 1024;
    int head_only = (data[0] & 2) != 0;
    uint32_t seed = ((uint32_t)data[1] << 8 | data[2]) | 1u;
    result whole, split;
    int stream = (data[0] & 4) != 0;
    read_response(data + 3, size - 3, max_body, head_only, 0, 0, &whole);
    read_response(data + 3, size - 3, max_body, head_only, seed, stream, &split);
    FZ_CHECK(whole.rc == split.rc, "the outcome depends on how the bytes were split");
    if (whole.rc == TC__H1_DONE) {
        FZ_CHECK(whole.status == split.status && whole.version == split.version &&
                     whole.keep_alive == split.keep_alive && whole.extra == split.extra &&
                     whole.body_off == split.body_off && whole.out.len == split.out.len &&
                     memcmp(whole.out.data, split.out.data, whole.out.len) == 0,
                 "the response depends on how the bytes were split");
    }
    tc__buf_reset(&whole.out);
    tc__buf_reset(&split.out);
    return 0;
}
