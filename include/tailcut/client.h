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
} tc_client_request;

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
    double total_ms;  /* time from tc_client_request() to the last byte */
} tc_response;

/* What tc_response_header() returns for a header that is not there. The call returns a length,
 * not an error code: this is -1, the same number as TC_EINVAL, so compare the result with this
 * name or `< 0`, never with a TC_E* code. */
#define TC_RESPONSE_HEADER_ABSENT (-1L)

/* Value of a header (first match, case-insensitive name), copied into buf (NUL-terminated,
 * truncated to buflen - 1). Returns the value's full length (>= 0), or TC_RESPONSE_HEADER_ABSENT
 * when the header is absent or resp/name is NULL; never a TC_E* code. */
long tc_response_header(const tc_response *resp, const char *name, char *buf, size_t buflen);

/* Starts a request. On success *out is a future (one reference owned by the caller) that fulfils
 * with a tc_response * or rejects with:
 *   TC_ECONNREFUSED, TC_ECONNRESET, TC_ESTALE (a reused connection closed or reset before any
 *   byte of the answer, and no re-send), TC_EDNS, TC_ETIMEDOUT (connect or whole-request timeout,
 *   queue time included unless timeout_from_admit), TC_ETOOLARGE (body over max_body: the transfer
 * is aborted as soon as the limit is crossed), TC_ETLS, TC_EPROTO (not a valid HTTP response),
 * TC_EURL (malformed or unsupported URL), TC_EIO (anything else), TC_ENOMEM. Returns 0, or
 * TC_EINVAL (connect_to not a numeric address, a bad method or header...), TC_ENOMEM,
 * TC_ECLOSED (the client is closing); then no future. */
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

#ifdef __cplusplus
}
#endif
#endif /* TAILCUT_CLIENT_H */
