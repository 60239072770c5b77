/*
 * A pooled, non-blocking HTTP client on a caller-supplied uv loop.
 *
 * Two engines carry requests, chosen per request and invisible to callers: a native HTTP/1.1
 * engine for http:// (one write and one read per pooled request, idle connections watched for a
 * server close, aborts sent as a TCP reset), and libcurl (multi_socket) for https://, HTTP/2,
 * redirects, and whatever the config forces onto it (engine = TC_CLIENT_ENGINE_CURL).
 *
 * One client per loop. A request returns a future of a tc_response. Any HTTP status fulfils the
 * future (a 500 is a response, not an error); transport failures reject it with a TC_E* code and
 * a readable message. Cancelling the future aborts the transfer at once (its connection is
 * closed, not returned to the pool) and frees everything that belonged to it.
 *
 * Pool: keep-alive connections are reused. At most max_connections are open at once in total and
 * at most max_per_host to one host:port (0 = no per-host limit). A request that finds the cap
 * reached waits in a FIFO queue until a connection is free; the time it spends queued counts
 * toward its timeout (unless the request says timeout_from_admit). The pool is the only place
 * that admits requests: callers never keep caps of their own.
 *
 * A request is sent once. A pooled (reused) connection that the server closes or resets while a
 * request is on it fails that request: with TC_ESTALE when not a byte of the answer had come
 * (the server may have closed it as idle just as the request went out: the caller can tell this
 * case apart and send elsewhere), with TC_ECONNRESET once some had. The one case in which the
 * client sends a request twice on its own is the stale-connection re-send (resend_stale below).
 *
 * Replicas. A request may name the address to connect to (connect_to below) while its URL's host
 * stays the Host header and the TLS server name, so one URL can reach each copy of a service.
 * The pool is per origin *and* address: each address has its own connections and its own
 * max_per_host slots. tc_client_retire_origin() closes an address's connections when its replica
 * leaves.
 *
 * Streaming (the section "streaming" below). A request may stream its response (the future
 * fulfils at the final response head; the body is read in pieces, with pause and resume, then one
 * end) and its body (from a tc_client_body the caller writes into as it has the bytes, with
 * back-pressure), any method, with bounded memory whatever the body sizes. Requests that ask for
 * neither behave exactly as described above.
 */
#ifndef TAILCUT_CLIENT_H
#define TAILCUT_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "tailcut/error.h"
#include "tailcut/future.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TC_CLIENT_DEFAULT_MAX_CONNECTIONS 1024
#define TC_CLIENT_DEFAULT_TIMEOUT_MS 30000
#define TC_CLIENT_DEFAULT_CONNECT_TIMEOUT_MS 10000
#define TC_CLIENT_DEFAULT_MAX_BODY (1024 * 1024)

/* Which engine carries http:// requests (https:// always goes to libcurl). */
typedef enum tc_client_engine {
    TC_CLIENT_ENGINE_AUTO = 0,   /* native for http://, libcurl for the rest */
    TC_CLIENT_ENGINE_NATIVE = 1, /* the same as AUTO: named for --http-engine native */
    TC_CLIENT_ENGINE_CURL = 2,   /* libcurl for everything */
} tc_client_engine;

typedef struct tc_client tc_client;
typedef struct tc_client_body tc_client_body; /* a streamed request body (below) */

typedef struct tc_client_config {
    size_t max_connections;      /* total pool cap [TC_CLIENT_DEFAULT_MAX_CONNECTIONS] */
    size_t max_per_host;         /* per host:port cap, 0 = none [0] */
    uint64_t timeout_ms;         /* default whole-request timeout, queue time included [30000] */
    uint64_t connect_timeout_ms; /* [10000] */
    size_t max_body;             /* default response body limit in bytes [1 MiB] */
    const char *ca_file;         /* PEM CA bundle for HTTPS; NULL = system store. Copied. */
    int insecure;                /* 1 = do not verify TLS peers (never the default) [0] */
    int http2;                   /* 1 = offer HTTP/2 (ALPN over TLS) and multiplex [1] */
    int follow_redirects;        /* 1 = follow up to 5 redirects (libcurl carries them) [0] */
    tc_client_engine engine;     /* [TC_CLIENT_ENGINE_AUTO] */
} tc_client_config;

/* Fills cfg with the defaults in brackets above. */
void tc_client_config_init(tc_client_config *cfg);

/* Creates a client on loop. cfg may be NULL for the defaults; it is copied.
 * Returns 0, TC_EINVAL, TC_ENOMEM, TC_EIO (libcurl could not be set up). */
int tc_client_new(tc_client **out, uv_loop_t *loop, const tc_client_config *cfg);

/* Cancels every request still running (their futures become CANCELLED), closes every handle and
 * connection, then calls close_cb (may be NULL) from the loop, after which the client is freed.
 * The loop can be closed after close_cb has run. */
typedef void (*tc_client_close_cb)(tc_client *client, void *data);
void tc_client_close(tc_client *client, tc_client_close_cb close_cb, void *data);

typedef struct tc_header {
    const char *name;
    const char *value;
} tc_header;

typedef struct tc_client_request {
    const char *method;       /* NULL = "GET" */
    const char *url;          /* http:// or https:// */
    const tc_header *headers; /* extra request headers, may be NULL */
    size_t nheaders;
    const char *body; /* request body, may be NULL; copied */
    size_t body_len;
    uint64_t timeout_ms;    /* 0 = the client's default */
    size_t max_body;        /* 0 = the client's default */
    int timeout_from_admit; /* 1 = the timeout starts when a connection is free for the request,
                               so time queued behind the pool caps does not count [0] */
    /* 1 = the stale-connection re-send of RFC 9110 section 9.2.2: a GET or HEAD whose reused
     * keep-alive connection dies before any byte of its response is sent once more, on a fresh
     * connection, and the future reports only that second send. At most once per request;
     * counted in stats.stale_retries. Other methods are never re-sent. [0]
     *
     * 0 (the default): such a request fails with TC_ECONNRESET, like any reset, so every request
     * the server receives is one the caller knows about. Off by default because the re-send is
     * invisible: the server may have received (and acted on) the first copy before the
     * connection died, and a caller that counts, numbers or retries its own requests (a hedge's
     * attempts, a budget, a load test) would see one request where the server saw two. A zeroed
     * request must never do that behind its caller's back; a caller that only wants an answer
     * and knows the request is safe to repeat turns it on (tailcut fetch and the batched
     * metadata calls do; tc_hedge_start turns it off for every attempt). */
    int resend_stale;
    /* The numeric IPv4 or IPv6 address (text; an IPv6 one with or without brackets, no zone) to
     * connect to, on the URL's port, instead of resolving the URL's host. The URL's host stays
     * the Host header (with its port when the URL names one) and the TLS server name. Requests
     * to one origin through different addresses never share a connection or a per-host slot.
     * Copied. NULL = resolve the URL's host [NULL]. */
    const char *connect_to;
    /* 1 = stream the response: the future fulfils at the final response head, with an empty
     * body, and the body is read with tc_response_read_body ("streaming" below) [0]. */
    int stream_response;
    /* 1 = the head is the caller's headers plus only what HTTP/1.1 needs: Host (unless given)
     * and the framing headers, never User-Agent or Accept (a proxy passes a request on as its
     * client sent it) [0]. */
    int no_default_headers;
    /* A streamed response's body fails with TC_ETIMEDOUT when none of it arrives for this long
     * while it is being read (not while paused, nor before tc_response_read_body) [0: never].
     * timeout_ms bounds a streamed request up to its response head only. */
    uint64_t body_idle_timeout_ms;
    /* The request body from a source the caller writes into (tc_client_body_new), instead of
     * body and body_len (which must then be NULL and 0). A source feeds one request, which holds
     * it while it runs. Such a request is never re-sent: resend_stale does not apply [NULL]. */
    tc_client_body *body_source;
} tc_client_request;

/* How a streamed response's body is delimited, known at its head. */
typedef enum tc_body_framing {
    TC_BODY_NONE = 1,    /* no body: an answer to HEAD, a 204 or a 304 */
    TC_BODY_LENGTH = 2,  /* Content-Length bytes (content_length) */
    TC_BODY_CHUNKED = 3, /* its end is marked (chunked HTTP/1.1, an HTTP/2 stream), its length
                            not told in advance */
    TC_BODY_CLOSE = 4,   /* until the server closes the connection (an HTTP/1.0-style body): a
                            clean close is its end */
} tc_body_framing;

/* A received response. Owned by the request's future; valid while the caller holds a reference
 * to it. */
typedef struct tc_response {
    int status;       /* HTTP status code */
    int http_version; /* 10, 11 or 20 */
    char *body;       /* NUL-terminated for convenience; body_len excludes the NUL */
    size_t body_len;
    char *headers; /* the raw header block as received, NUL-terminated */
    size_t headers_len;
    double queued_ms; /* time spent waiting for a pooled connection */
    double total_ms;  /* time from tc_client_request() to the last byte (a streamed response:
                         to its head until its body ends, then to the end) */
    /* A streamed response's framing (tc_body_framing) and, for TC_BODY_LENGTH, its length (else
     * -1). Both 0 for a response read whole. */
    int framing;
    int64_t content_length;
} tc_response;

/* What tc_response_header() returns for a header that is not there. The call returns a length,
 * not an error code: this is -1, the same number as TC_EINVAL, so compare the result with this
 * name or `< 0`, never with a TC_E* code. */
#define TC_RESPONSE_HEADER_ABSENT (-1L)

/* Value of a header (first match, case-insensitive name), copied into buf (NUL-terminated,
 * truncated to buflen - 1). Returns the value's full length (>= 0), or TC_RESPONSE_HEADER_ABSENT
 * when the header is absent or resp/name is NULL; never a TC_E* code. */
long tc_response_header(const tc_response *resp, const char *name, char *buf, size_t buflen);

/* One header field of a response head: byte ranges into resp->headers (not NUL-terminated),
 * valid while the response is. */
typedef struct tc_response_field {
    const char *name;
    size_t name_len;
    const char *value; /* without leading or trailing blanks */
    size_t value_len;
} tc_response_field;

/* Walks the header fields of resp's head in the order received: start with *pos = 0 and call
 * until it returns 0; each call that returns 1 fills *field and advances *pos. A line with no
 * colon (an obsolete folded continuation) is skipped. Returns 0 for a NULL argument. */
int tc_response_header_next(const tc_response *resp, size_t *pos, tc_response_field *field);

/* Starts a request. On success *out is a future (one reference owned by the caller) that fulfils
 * with a tc_response * or rejects with:
 *   TC_ECONNREFUSED, TC_ECONNRESET, TC_ESTALE (a reused connection closed or reset before any
 *   byte of the answer, and no re-send), TC_EDNS, TC_ETIMEDOUT (connect or whole-request timeout,
 *   queue time included unless timeout_from_admit), TC_ETOOLARGE (body over max_body: the transfer
 * is aborted as soon as the limit is crossed), TC_ETLS, TC_EPROTO (not a valid HTTP response),
 * TC_EURL (malformed or unsupported URL), TC_EIO (anything else), TC_ENOMEM, and, for a request
 * with a body_source, TC_ECANCELED (the source was aborted before the response head). Returns
 * 0, or TC_EINVAL (connect_to not a numeric address, a bad method or header, a body_source with
 * a body, of another client, already used or aborted...), TC_ENOMEM, TC_ECLOSED (the client is
 * closing); then no future. */
int tc_client_request_start(tc_future **out, tc_client *client, const tc_client_request *req);

/* Shorthand for a GET of url with the client's defaults (and no stale-connection re-send). */
int tc_client_get(tc_future **out, tc_client *client, const char *url);

/* A replica left: the connections to url's origin (scheme, host, port) through connect_to
 * (NULL: the URL's host itself, resolved), on either engine, close: idle ones at once, busy ones
 * when their request ends (each request still gets its answer). Requests queued or started
 * later open new connections. Call it on the client's loop thread. Returns 0 (also when there
 * were no such connections), TC_EINVAL (NULL client or url, connect_to not a numeric address),
 * TC_EURL (a bad URL), TC_ENOMEM. */
int tc_client_retire_origin(tc_client *client, const char *url, const char *connect_to);

/* The loop the client runs on. */
uv_loop_t *tc_client_loop(const tc_client *client);

/* Counters for metrics and tests. */
typedef struct tc_client_stats {
    uint64_t started;
    uint64_t completed; /* fulfilled with a response */
    uint64_t failed;    /* rejected */
    uint64_t cancelled;
    uint64_t queued;  /* requests that had to wait for a connection */
    size_t in_flight; /* started and not yet done */
    size_t open_connections;
    uint64_t stale_retries; /* requests with resend_stale sent again after a pooled connection
                               died unanswered (one request each, not counted in started) */
} tc_client_stats;

void tc_client_get_stats(const tc_client *client, tc_client_stats *out);

/* ---- streaming ----------------------------------------------------------------------------------
 *
 * A streamed response (stream_response = 1). Up to its final head the request is like any other:
 * queued, bounded by timeout_ms, cancelled through its future, failing with the codes of
 * tc_client_request_start. At the head (1xx heads are skipped) the future fulfils with a
 * tc_response whose status, http_version, headers (tc_response_header, tc_response_header_next),
 * framing and content_length are set and whose body is empty (body "", body_len 0); the request
 * keeps its connection (and its pool slot) until the body ends. The body is then read with
 * tc_response_read_body: pieces as they arrive, then exactly one end. HEAD, 204 and 304 answers
 * have no body (framing TC_BODY_NONE): their end comes at once. The future being done,
 * tc_future_cancel no longer reaches the transfer: tc_response_abort does, and so does dropping
 * the last reference to the future. Nothing is ever re-sent once the head is in.
 *
 * Memory: a streamed response holds its head (at most 64 KiB) and at most TC_RESPONSE_HELD_MAX
 * bytes of body that its reader has not taken; while the reader is paused (or not yet reading)
 * the client stops reading the connection (native engine: the socket; libcurl: the transfer is
 * paused, CURL_WRITEFUNC_PAUSE). The libcurl engine adds its own receive buffer, and over HTTP/2
 * whatever libcurl buffers for a paused stream.
 *
 * A streamed body (body_source): a tc_client_body holds the bytes the caller wrote and the
 * request has not yet sent, at most TC_CLIENT_BODY_PENDING_MAX; the caller keeps it far below
 * that with tc_client_body_pending and tc_client_body_on_writable. The request goes with
 * Content-Length when the source was made with a length, else chunked (HTTP/1.1) or as an
 * HTTP/2 stream. Its response may arrive before the body is all sent (both streams run at
 * once); a response that ends first closes the connection after it, and the rest of the body is
 * refused (TC_ECLOSED).
 */

#define TC_CLIENT_LENGTH_UNKNOWN (-1)
/* The most body bytes of a streamed response held for its reader (one read of the socket). */
#define TC_RESPONSE_HELD_MAX ((size_t)64 * 1024)
/* The most bytes a tc_client_body holds that its request has not yet sent. */
#define TC_CLIENT_BODY_PENDING_MAX ((size_t)256 * 1024)

/* The body of a streamed response, or its end. status 0 with len > 0: data[0..len) are the next
 * bytes, valid only during the call. Then exactly one last call with len 0 and status:
 *   0              the body is complete: Content-Length reached, the last chunk read (trailers
 *                  are dropped), the HTTP/2 stream ended, or, for TC_BODY_CLOSE, the server
 *                  closed the connection cleanly
 *   TC_ECONNRESET  the connection closed or was reset before that: the body is cut short
 *   TC_ETIMEDOUT   no body byte for body_idle_timeout_ms
 *   TC_ETOOLARGE   the body grew past the request's max_body
 *   TC_EPROTO      malformed framing (a bad chunk), an HTTP/2 error
 *   TC_ETLS, TC_EIO, TC_ENOMEM
 *   TC_ECANCELED   tc_response_abort, the last reference to the future dropped, the client
 *                  closed, or the body_source aborted: from inside that call
 * (tc_response_body_error words an error). The callback may call any function of this client,
 * tc_response_abort and dropping the future's last reference included. */
typedef void (*tc_response_body_cb)(tc_response *resp, int status, const char *data, size_t len,
                                    void *arg);

/* Starts reading the body of a streamed response resp (the value of its future, while the
 * caller holds a reference). cb never runs inside this call: bytes already received, and an end
 * already reached, come from the loop. Returns 0 (cb runs as above); TC_EINVAL (resp not a
 * streamed response, cb NULL, reading already started). On an error cb is never called. */
int tc_response_read_body(tc_response *resp, tc_response_body_cb cb, void *arg);

/* Back-pressure on the body being read: after pause, cb is not called (not even for the end)
 * until resume, the body idle timeout does not run, and at most TC_RESPONSE_HELD_MAX bytes are
 * held while the connection is not read. Both may be called at any time, also from cb, and do
 * nothing when the body has ended; cb never runs inside resume. */
void tc_response_body_pause(tc_response *resp);
void tc_response_body_resume(tc_response *resp);

/* Ends a streamed response's transfer at once, whatever its state: its connection is reset
 * (the server sees the abort) and never pooled, and a reader not yet told the end gets
 * TC_ECANCELED from inside this call. The response (head) stays readable while referenced. Does
 * nothing for a body that has ended or a response read whole. */
void tc_response_abort(tc_response *resp);

/* The message of a streamed body that ended with an error ("" otherwise). Valid while resp
 * is. */
const char *tc_response_body_error(const tc_response *resp);

/* Makes a body source for one request of client: length is the body's exact length (>= 0: sent
 * as Content-Length) or TC_CLIENT_LENGTH_UNKNOWN (sent chunked). Write into it before or after
 * the request starts (tc_client_request.body_source). Returns 0; TC_EINVAL (out or client NULL,
 * length < -1); TC_ENOMEM; TC_ECLOSED (the client is closing). Free it with
 * tc_client_body_free. */
int tc_client_body_new(tc_client_body **out, tc_client *client, int64_t length);

/* Appends len bytes to the body. They are copied (data is the caller's again when this returns):
 * straight into the socket when the request is on a connection that takes them, else into
 * memory that waits for it. Returns 0 (len 0 writes nothing); TC_EINVAL (data NULL with len > 0,
 * the body ended or aborted, more bytes than a known length leaves); TC_EBUSY (the bytes would
 * take tc_client_body_pending() past TC_CLIENT_BODY_PENDING_MAX: nothing written, wait for
 * tc_client_body_on_writable); TC_ECLOSED (the request it fed has ended, or its client closed:
 * nothing is wanted any more); TC_ENOMEM (nothing written). */
int tc_client_body_write(tc_client_body *body, const char *data, size_t len);

/* Bytes written and not yet taken by the socket (native engine) or by libcurl; 0 once the
 * request has ended. */
size_t tc_client_body_pending(const tc_client_body *body);

/* cb(body, status, arg) runs exactly once: status 0 as soon as tc_client_body_pending(body) is at
 * most threshold (from the loop, never inside this call, also when it already is), or
 * TC_ECANCELED when the body can take no more bytes first: its request ended or its client
 * closed (from the loop), or tc_client_body_abort / tc_client_body_free (inside that call). The
 * way to stop reading the bytes' own source while about 64 KiB wait, and go on when they drop.
 * Returns 0; TC_EINVAL (body or cb NULL, a callback already armed, the body ended or aborted);
 * TC_ECLOSED (its request ended or its client closed: cb never runs). */
typedef void (*tc_client_body_writable_cb)(tc_client_body *body, int status, void *arg);
int tc_client_body_on_writable(tc_client_body *body, size_t threshold,
                               tc_client_body_writable_cb cb, void *arg);

/* The body is complete: a chunked one gets its last chunk once the rest is sent. Returns 0;
 * TC_EINVAL (already ended, or aborted); TC_EPROTO (fewer bytes than its known length were
 * written: the request cannot be complete, so the body is aborted as by tc_client_body_abort);
 * TC_ECLOSED (its request has ended); TC_ENOMEM (the last chunk could not be queued: aborted). */
int tc_client_body_end(tc_client_body *body);

/* Gives the request up, ended body or not: the request it feeds is cut so that the server sees
 * it unfinished (its connection is reset, never pooled). Before the response head the request's
 * future rejects with TC_ECANCELED; after it, a streamed body ends with TC_ECANCELED; a request
 * not yet started with it cannot be (TC_EINVAL). Writes then return TC_EINVAL. Does nothing once
 * it was aborted, or its request has ended. */
void tc_client_body_abort(tc_client_body *body);

/* The caller is done with body (NULL is fine): one not yet ended is aborted first. Its memory
 * goes once the request that uses it is done with it too. */
void tc_client_body_free(tc_client_body *body);

#ifdef __cplusplus
}
#endif
#endif /* TAILCUT_CLIENT_H */
