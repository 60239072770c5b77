/*
 * An HTTP/1.1 response reader for the native client engine: the one place that knows the HTTP
 * parser library (http-parser today; moving to llhttp is this file and h1_parse.c only).
 *
 * It is fed the bytes of one connection as they arrive and writes one response into a bounded
 * buffer: the header block (rebuilt as "HTTP/x.y NNN reason\r\nName: value\r\n...\r\n"), a NUL,
 * then the body (de-chunked). Interim 1xx responses are read and dropped. Trailers are read and
 * dropped. Every limit is a named constant or the caller's max_body; crossing one stops at once.
 *
 * In stream mode (tc__h1_stream) the body is not kept: each feed hands back the body bytes it
 * decoded (tc__h1_body), where they lie in the fed bytes when they are one piece, so a streamed
 * body costs no copy; only a feed that decodes several pieces (chunks) gathers them in the
 * caller's spill buffer.
 */
#ifndef TAILCUT_H1_PARSE_H
#define TAILCUT_H1_PARSE_H

#include <stddef.h>

#include <http_parser.h>

#include "base/buf.h"

#define TC__H1_MAX_HEADER_BYTES                                                                    \
    ((size_t)64 * 1024)                     /* rebuilt header block, status line included          \
                                             */
#define TC__H1_MAX_LINE ((size_t)16 * 1024) /* one header line or the status line */

/* What tc__h1_feed and tc__h1_eof return: progress, or the one reason reading stopped. The
 * caller maps each reason to its TC_E* code and message (client_native.c, response_failed);
 * tc__h1_why() words it. */
typedef enum tc__h1_status {
    TC__H1_MORE = 0,                 /* feed more bytes */
    TC__H1_DONE = 1,                 /* a final response is complete */
    TC__H1_INVALID = -1,             /* not a valid HTTP/1.x response (the parser's reason) */
    TC__H1_HEADERS_TOO_LARGE = -2,   /* the header block over TC__H1_MAX_HEADER_BYTES */
    TC__H1_LINE_TOO_LONG = -3,       /* a header line or the status line over TC__H1_MAX_LINE */
    TC__H1_SWITCHING_PROTOCOLS = -4, /* a 101: nothing here speaks another protocol */
    TC__H1_BODY_TOO_LARGE = -5,      /* the body over max_body (announced or received) */
    TC__H1_NOMEM = -6,               /* out of memory */
    TC__H1_CLOSED_BEFORE_ANY = -7,   /* the connection ended before any byte of a response */
    TC__H1_CLOSED_INCOMPLETE = -8,   /* the connection ended in the middle of a response */
} tc__h1_status;

/* How the final response's body is delimited, known at the end of its head. */
typedef enum tc__h1_framing {
    TC__H1_FRAMING_NONE = 1, /* no body: an answer to HEAD, a 204 or a 304 */
    TC__H1_FRAMING_LENGTH,   /* Content-Length */
    TC__H1_FRAMING_CHUNKED,  /* chunked */
    TC__H1_FRAMING_CLOSE,    /* until the connection closes */
} tc__h1_framing;

typedef struct tc__h1 {
    http_parser parser;
    const http_parser_settings *settings; /* the callbacks of its mode */
    tc__buf *out;    /* the response goes here: head, NUL, body (in stream mode: the head) */
    size_t max_body; /* body bytes allowed */
    size_t body_off; /* where the body starts in out; 0 while reading the head */
    size_t line_len; /* bytes of the current header line */
    size_t received; /* bytes fed so far, for "nothing at all arrived" */
    int head_only;   /* answer to HEAD: no body whatever the headers say */
    int last;        /* last header callback: 0 none, 1 field, 2 value */
    size_t name_off; /* where the current header name starts in out */
    /* The first Keep-Alive header's value, out->data[keep_alive_off, + keep_alive_len), noted
     * while the head is read (keep_alive_off 0: none), so that no one scans the head for it. */
    size_t keep_alive_off, keep_alive_len;
    int in_keep_alive;  /* its value is the one being read */
    int status_written; /* the status line's "HTTP/x.y NNN " is in out */
    int done;
    int keep_alive; /* valid once done: the connection may carry another request */
    int status;     /* valid once the final head is in (head_done) */
    int version;    /* 10 or 11, valid once the final head is in */
    int head_done;  /* the final (not 1xx) head is complete: out holds it, body_off is set */
    int framing;    /* tc__h1_framing, valid once head_done */
    long long content_length; /* valid when framing is TC__H1_FRAMING_LENGTH */
    tc__h1_status err;        /* the reason a callback stopped us, or 0 */
    /* stream mode */
    tc__buf *spill;   /* NULL: the body goes into out; else the pieces of one feed gather here */
    const char *span; /* the body bytes of the last feed when they are one piece of its input */
    size_t span_len;
    size_t body_len; /* body bytes decoded so far (out has them in the other mode) */
} tc__h1;

/* Prepares h to read one response into out (which the caller owns and has emptied). */
void tc__h1_init(tc__h1 *h1, tc__buf *out, size_t max_body, int head_only);

/* Stream mode, for a response read while it arrives: the body is not stored in out; after each
 * tc__h1_feed (and tc__h1_eof), tc__h1_body gives the body bytes that feed decoded. spill (empty,
 * owned by the caller) gathers them when they were several pieces; the caller empties it once it
 * has used them. Call right after tc__h1_init. */
void tc__h1_stream(tc__h1 *h1, tc__buf *spill);

/* Stream mode: the body bytes decoded by the last feed (n 0 when none): a range of the bytes
 * fed, valid while they are, or the spill buffer's contents. */
void tc__h1_body(const tc__h1 *h1, const char **p, size_t *n);

/* Feeds n bytes. Returns TC__H1_MORE, TC__H1_DONE, or why reading stopped (a negative
 * tc__h1_status but the two TC__H1_CLOSED_*); once stopped, every later call says the same. After
 * TC__H1_DONE, *extra is the number of bytes of data that followed the response (a server that
 * sends more than it was asked for: the connection must not be reused). */
tc__h1_status tc__h1_feed(tc__h1 *h1, const char *data, size_t n, size_t *extra);

/* The connection ended. Returns TC__H1_DONE when that ends a close-delimited body, the reason
 * reading had already stopped, or TC__H1_CLOSED_BEFORE_ANY / TC__H1_CLOSED_INCOMPLETE. */
tc__h1_status tc__h1_eof(tc__h1 *h1);

/* A stop reason in words ("response headers too large", the HTTP parser's own description for
 * TC__H1_INVALID...), for an error message; a static string. */
const char *tc__h1_why(const tc__h1 *h1, tc__h1_status status);

#endif /* TAILCUT_H1_PARSE_H */
