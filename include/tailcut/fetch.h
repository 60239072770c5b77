/*
 * Many HTTP requests at once over one pooled client, results as they arrive (`tailcut fetch`).
 *
 * A tc_fetch pulls URLs from a caller's source one at a time, only when it has room for one
 * more, so a million URLs cost no more memory than a hundred: what is held at any moment is at
 * most `window` request records (the concurrency cap, plus TC_FETCH_ORDER_SLACK finished results
 * in input order) and the client's per-transfer buffers. Each URL is reported exactly once, to
 * the caller's result callback, in completion order or in input order.
 *
 * Every URL gets the same request: cfg.method (GET by default), cfg.headers and cfg.body.
 *
 * Retries (cfg.retries > 0) follow a connection error (refused, reset, timed out, other I/O), a
 * 429 or a 5xx: after Retry-After for a 429 that carries one (seconds or HTTP-date, capped at
 * retry_after_max_ms), else after a jittered exponential backoff. Waiting is a uv timer, and a
 * request that waits keeps its concurrency and per-host slot. Only the idempotent methods GET,
 * HEAD, PUT, DELETE and OPTIONS are retried, unless cfg.retry_all says any method may be.
 * Apart from those, a GET or HEAD whose pooled connection died before any answer byte is sent
 * once more by the client (tc_client_request.resend_stale); that is neither a retry nor an
 * attempt in the stats.
 *
 * Open loop (cfg.rate > 0): request i (from 0, counting requests, not input lines rejected
 * before a request was made) is scheduled at i / rate seconds after tc_fetch_start(). One that
 * finds the concurrency cap reached starts as soon as a slot frees, and its result's ms counts
 * from its scheduled time, not from when it could start: a stalled server shows up as latency,
 * not as a lower rate (no coordinated omission).
 *
 * The same header also has the small pieces the `tailcut fetch` command builds its output and
 * summary from: the JSON line of a result, a Retry-After parser and a log-linear latency
 * histogram. Everything runs on one uv loop thread; nothing here is thread-safe.
 */
#ifndef TAILCUT_FETCH_H
#define TAILCUT_FETCH_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <uv.h>

#include "tailcut/client.h"
#include "tailcut/error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TC_FETCH_DEFAULT_CONCURRENCY 100
#define TC_FETCH_DEFAULT_TIMEOUT_MS 30000
#define TC_FETCH_DEFAULT_MAX_BODY (1024 * 1024)
#define TC_FETCH_DEFAULT_BACKOFF_BASE_MS 100      /* the first retry waits 50..100 ms */
#define TC_FETCH_DEFAULT_BACKOFF_MAX_MS 10000     /* no backoff longer than this */
#define TC_FETCH_DEFAULT_RETRY_AFTER_MAX_MS 60000 /* a 429's Retry-After is cut to this */
/* In input order, finished results beyond the concurrency cap that may wait for a slower one
 * ahead of them. Past that, reading input stops until the head of the line finishes. */
#define TC_FETCH_ORDER_SLACK 32
#define TC_FETCH_MAX_RATE 1000000.0 /* cfg.rate above this is TC_EINVAL */

typedef struct tc_fetch tc_fetch;

typedef enum tc_fetch_order { TC_FETCH_COMPLETION = 0, TC_FETCH_INPUT } tc_fetch_order;

typedef struct tc_fetch_config {
    size_t concurrency;           /* requests at once, retry waits included [100] */
    size_t per_host;              /* connections at once to one scheme://host:port (the client
                                     pool's cap; time queued for it is not part of the timeout),
                                     0 = none [0] */
    uint64_t timeout_ms;          /* each attempt's whole timeout [30000] */
    unsigned retries;             /* extra attempts after a retryable failure [0] */
    uint64_t backoff_base_ms;     /* retry n waits base*2^(n-1), jittered down by up to half */
    uint64_t backoff_max_ms;      /* cap of that wait [10000] */
    uint64_t retry_after_max_ms;  /* cap of a 429's Retry-After [60000] */
    tc_fetch_order order;         /* [TC_FETCH_COMPLETION] */
    size_t max_body;              /* a larger response body is an error (TC_ETOOLARGE) [1 MiB] */
    uint64_t seed;                /* jitter seed, 0 = from the clock [0] */
    tc_client_engine http_engine; /* [TC_CLIENT_ENGINE_AUTO] */
    /* The request sent to every URL. tc_fetch_new() copies method, headers and body. */
    const char *method;       /* an RFC 9110 token; NULL = "GET" [NULL] */
    const tc_header *headers; /* sent with every request (names tokens, values without CR/LF);
                                 Content-Length and Transfer-Encoding are the client's [NULL] */
    size_t nheaders;
    const char *body; /* request body, sent verbatim (any bytes), may be NULL [NULL] */
    size_t body_len;
    const char *ca_file; /* PEM CA bundle for https://, NULL = the system store [NULL] */
    int insecure;        /* 1 = no TLS certificate or host name verification [0] */
    int retry_all;       /* 1 = retry any method, not only GET, HEAD, PUT, DELETE, OPTIONS [0] */
    double rate;         /* open loop: requests per second, 0 = as fast as the cap allows [0] */
} tc_fetch_config;

/* Fills cfg with the defaults in brackets above. */
void tc_fetch_config_init(tc_fetch_config *cfg);

/* One input item, filled in by the source. */
typedef struct tc_fetch_input {
    char *url;           /* malloc'd, NUL-terminated; the fetch owns (and frees) it */
    int error;           /* 0, or a TC_E* code: reported as is, nothing is fetched */
    const char *message; /* with error: a static message for the result */
} tc_fetch_input;

typedef enum tc_fetch_next {
    TC_FETCH_NEXT_URL = 0, /* *in is filled */
    TC_FETCH_NEXT_WAIT,    /* nothing right now: call tc_fetch_resume() when there is */
    TC_FETCH_NEXT_END      /* the input is over; the source is not called again */
} tc_fetch_next;

typedef tc_fetch_next (*tc_fetch_source_fn)(void *data, tc_fetch_input *in);

/* How one URL ended. Everything is borrowed for the duration of the result callback. */
typedef struct tc_fetch_result {
    uint64_t index; /* position in the input, from 0 */
    const char *url;
    int status;          /* HTTP status of the final attempt, 0 when there was no response */
    int error;           /* 0 when there was a response, else the TC_E* code */
    const char *message; /* error text ("" when error is 0) */
    double ms;           /* first attempt's start (with cfg.rate: its scheduled time) to the
                            end, retry waits included */
    size_t bytes;        /* body bytes of the final response */
    const char *body;    /* the body (NUL-terminated), NULL when there was no response */
    unsigned attempts;   /* 1 + retries made (0 for an input error) */
} tc_fetch_result;

typedef void (*tc_fetch_result_fn)(tc_fetch *f, const tc_fetch_result *r, void *data);

/* Fires once: status 0 when the source ended and every URL has been reported, TC_ECANCELED
 * after tc_fetch_stop(). Runs from the loop, never from inside another tc_fetch call. */
typedef void (*tc_fetch_done_fn)(tc_fetch *f, int status, void *data);

/* Creates a fetch on loop with its own tc_client (one client per loop: do not create another
 * on the same loop). cfg may be NULL for the defaults; it is copied. Nothing starts before
 * tc_fetch_start(). Returns 0, TC_EINVAL (a callback is NULL, concurrency 0, a method or header
 * that is not valid, body NULL with body_len > 0, rate negative, not finite or over
 * TC_FETCH_MAX_RATE), TC_ENOMEM, TC_EIO. */
int tc_fetch_new(tc_fetch **out, uv_loop_t *loop, const tc_fetch_config *cfg,
                 tc_fetch_source_fn source, tc_fetch_result_fn on_result, tc_fetch_done_fn on_done,
                 void *data);

/* Starts pulling from the source. Returns 0, or TC_EINVAL if already started or stopped. */
int tc_fetch_start(tc_fetch *f);

/* The source has items again after it answered TC_FETCH_NEXT_WAIT. Harmless at any time. */
void tc_fetch_resume(tc_fetch *f);

/* Stops: the source is not called again, running requests are cancelled (their connections
 * closed), retry waits dropped, and finished results still held back for input order are
 * discarded; none of these is reported. on_done then fires with TC_ECANCELED (unless it has
 * already fired). May be called from the result callback. */
void tc_fetch_stop(tc_fetch *f);

/* Stops if needed (without a further on_done), closes the client and every handle, then calls
 * close_cb (may be NULL) from the loop, after which f is freed. */
typedef void (*tc_fetch_close_cb)(tc_fetch *f, void *data);
void tc_fetch_close(tc_fetch *f, tc_fetch_close_cb close_cb, void *data);

typedef struct tc_fetch_stats {
    uint64_t taken;     /* items taken from the source */
    uint64_t reported;  /* results reported */
    uint64_t attempts;  /* HTTP attempts started */
    uint64_t retries;   /* of those, retries */
    uint64_t cancelled; /* by tc_fetch_stop: running, waiting or held back, not reported */
    size_t active;      /* taken, not finished: running, waiting for a host slot or a retry */
    size_t held;        /* finished, waiting for an earlier one (input order) */
    size_t peak_held;
} tc_fetch_stats;

void tc_fetch_get_stats(const tc_fetch *f, tc_fetch_stats *out);

#ifdef __cplusplus
}
#endif
#endif /* TAILCUT_FETCH_H */
