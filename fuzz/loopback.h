/*
 * Helpers shared by the network fuzz targets (fuzz_server.c, fuzz_scenario.c): one process-wide
 * uv loop, a loopback TCP client that lives on that same loop, a checker that splits what a
 * tailcut server sent back into HTTP/1.1 responses, and FZ_CHECK for invariants.
 *
 * The one idea: the server under test and the client feeding it run on ONE loop in ONE thread,
 * so an input is processed deterministically enough for a fuzzer (no thread races), and the
 * harness can tell "nothing more will happen" by running the loop without blocking until it
 * goes quiet.
 */
#ifndef TAILCUT_FUZZ_LOOPBACK_H
#define TAILCUT_FUZZ_LOOPBACK_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <uv.h>

/* An invariant that must hold for any input: print why and abort, so libFuzzer (or the corpus
 * runner) reports the input. */
#define FZ_CHECK(cond, ...)                                                                        \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz invariant failed at %s:%d: %s\n  ", __FILE__, __LINE__, #cond);  \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* Most response bytes one input may collect; what comes beyond is counted, not kept. */
#define FZ_RX_MAX (4 * 1024 * 1024)

/* Bumped by every event the harness observes (client read, connect, write, handler call...).
 * The loop is "quiet" when a non-blocking pass leaves it unchanged. */
extern unsigned long fz_progress;

/* The process-wide loop (created on first use, never closed: it lives as long as the fuzzer). */
uv_loop_t *fz_loop(void);

/* A client connection on fz_loop() to 127.0.0.1:port. */
typedef struct fz_conn {
    uv_tcp_t tcp;
    uv_connect_t connect_req;
    uv_write_t write_req[2];
    uv_shutdown_t shutdown_req;
    int connected;    /* 1 after connect succeeded, -1 if it failed */
    int writes;       /* uv_write calls not yet completed */
    int write_failed; /* a write completed with an error (the server closed first) */
    int eof;          /* the server closed (EOF) or reset (error) the connection */
    int reset;        /* ... with an error such as ECONNRESET */
    int closed;       /* the handle's close callback ran */
    char *rx;         /* bytes received, rx_len of them (up to FZ_RX_MAX) */
    size_t rx_len, rx_cap, rx_dropped;
} fz_conn;

/* Connects and runs the loop until connected (aborts if loopback connect fails or hangs). */
void fz_conn_open(fz_conn *c, int port);
/* Queues a write of p[0..n) (slot 0 or 1). p must stay valid until the write completes. */
void fz_conn_write(fz_conn *c, int slot, const char *p, size_t n);
/* Half-closes: FIN after the queued writes. */
void fz_conn_shutdown(fz_conn *c);
/* Closes the handle and runs the loop until its close callback ran; frees rx. */
void fz_conn_close(fz_conn *c);

/* One non-blocking loop pass; returns 1 if it made observable progress. */
int fz_run_nowait(void);
/* Blocks in the loop for at most max_ms (or until an event). */
void fz_run_once(uint64_t max_ms);
/* Milliseconds on a monotonic clock. */
uint64_t fz_now_ms(void);

/* ---- response parsing ------------------------------------------------------------------------ */

/* One response found in the received bytes. */
typedef struct fz_response {
    int status;
    int is_interim;        /* "HTTP/1.1 100 Continue\r\n\r\n" */
    int no_content;        /* 1xx (but that interim one), 204 or 304: a head alone */
    int close;             /* "Connection: close" */
    int chunked;           /* FZ_STREAMED: Transfer-Encoding: chunked (body: the decoded bytes) */
    int until_close;       /* FZ_STREAMED: no length: the body is every byte up to the close */
    size_t content_length; /* the body's length (decoded, for a chunked one) */
    const char *body;      /* content_length bytes, unless no_body */
    const char *headers;   /* the header block (status line excluded), headers_len bytes */
    size_t headers_len;
    int truncated; /* the bytes ended inside this response */
} fz_response;

/* Parses the response starting at buf[*pos..len). flags: FZ_BODY unless it answers HEAD (the
 * Content-Length is announced but no body follows); FZ_STREAMED to accept the framings of a
 * streamed response too. Checks the invariants every response of our server must meet (status
 * line "HTTP/1.1 NNN reason", exactly one Content-Length that is a number, 0 for a 205, but none
 * and no Content-Type for a 1xx, 204 or 304, which have no content; exactly one Connection header,
 * a Date header, CRLF line ends) and aborts otherwise. With FZ_STREAMED, a body with content may
 * instead be chunked (Transfer-Encoding: chunked and no Content-Length; sizes in lowercase hex
 * without leading zeros, no extensions, no trailers: r->body then holds the decoded bytes, valid
 * until the next call) or have no length at all with Connection: close (r->until_close: the body
 * is every byte that follows, whole only if the server then closed); an answer to HEAD may then
 * announce no length.
 * Returns 1 and advances *pos past the response, or 1 with r->truncated set when the bytes end
 * inside it, or 0 when *pos == len. */
#define FZ_BODY 1
#define FZ_STREAMED 2
int fz_parse_response(const char *buf, size_t len, size_t *pos, int flags, fz_response *r);

/* Finds a header of a parsed response (exact-case name); returns its value length or -1. */
long fz_response_header(const fz_response *r, const char *name, const char **value);

/* 1 if s[0..n) is well-formed UTF-8 (RFC 3629: no overlong forms, surrogates or values above
 * U+10FFFF). */
int fz_utf8_valid(const char *s, size_t n);

/* Set FUZZ_KNOWN_BUGS=1 to let a long run go past bugs already reported (each target says which,
 * and counts them at exit); unset, every invariant is enforced. */
#define FZ_KNOWN_BUGS() (getenv("FUZZ_KNOWN_BUGS") != NULL)

#endif /* TAILCUT_FUZZ_LOOPBACK_H */
