/*
 * An HTTP/1.1 server on a caller-supplied uv loop (http-parser underneath).
 *
 * One tc_server listens on one loop. Several workers, each with its own loop and its own
 * tc_server bound with reuseport, share one port (the tailcut program starts its workers so in
 * app/common/runtime.c and app/serve/cmd_serve.c; see docs/server.md).
 *
 * Requests are handed to one handler. The handler answers at once or later, from any callback on
 * the same loop. Ownership rule: every request the handler receives must be finished exactly
 * once, by tc_request_respond() (or one of its wrappers) or tc_request_drop(). If the client goes
 * away first, the abort callback (if set) runs once so the handler can cancel its work; the
 * handler still finishes the request afterwards, and finishing it then only frees it.
 *
 * Pipelined requests are answered in order: a response to a later request is held until the
 * earlier ones are answered. Limits: request line over max_uri -> 414, header block
 * over max_headers -> 431, body over max_body -> 413, malformed HTTP -> 400; each of these closes
 * the connection. Headers not complete within header_timeout_ms -> 408 and close; a keep-alive
 * connection idle for idle_timeout_ms is closed. Over max_connections a new connection gets 503
 * `overloaded` with Retry-After and is closed; one there is no memory for is closed at once
 * (both counted, tc_server_get_stats). While draining, requests that arrive on kept-alive
 * connections get 503 `shutting_down` and the connection is closed.
 */
#ifndef TAILCUT_SERVER_H
#define TAILCUT_SERVER_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <uv.h>

#include "tailcut/error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TC_SERVER_DEFAULT_MAX_BODY (1024 * 1024)
#define TC_SERVER_MAX_URI (8 * 1024)
#define TC_SERVER_MAX_HEADERS (16 * 1024)
#define TC_SERVER_HEADER_TIMEOUT_MS 10000
#define TC_SERVER_IDLE_TIMEOUT_MS 60000
/* tc_request_respond_error() messages are cut to this many bytes (at a UTF-8 boundary). */
#define TC_SERVER_MAX_ERROR_MESSAGE 480
/* Pipelined requests parsed ahead of the one being answered; reading pauses beyond this. */
#define TC_SERVER_MAX_PIPELINE 32

/* A byte range: not NUL-terminated. */
typedef struct tc_str {
    const char *base;
    size_t len;
} tc_str;

typedef struct tc_server tc_server;
typedef struct tc_request tc_request;

typedef void (*tc_handler_fn)(tc_request *req, void *data);

/* Access-log line formats (docs/server.md). */
enum { TC_ACCESS_LOG_TEXT = 0, TC_ACCESS_LOG_JSON = 1 };

/* Longest X-Request-Id taken from a request; a generated one is 32 lowercase hex digits. */
#define TC_REQUEST_ID_MAX 128

typedef struct tc_server_config {
    const char *host; /* IPv4 or IPv6 literal ["127.0.0.1"] */
    int port;         /* 0 = a free port [0] */
    int reuseport;    /* bind with SO_REUSEPORT [0] */
    /* Connection cap. If conn_count is set, the count is shared (workers of one process pass the
     * same counter) and max_connections is the cap over all of them. 0 = no cap [0]. */
    size_t max_connections;
    atomic_size_t *conn_count;
    size_t max_body;            /* [TC_SERVER_DEFAULT_MAX_BODY] */
    size_t max_uri;             /* [TC_SERVER_MAX_URI] */
    size_t max_headers;         /* [TC_SERVER_MAX_HEADERS] */
    uint64_t header_timeout_ms; /* [TC_SERVER_HEADER_TIMEOUT_MS] */
    uint64_t idle_timeout_ms;   /* [TC_SERVER_IDLE_TIMEOUT_MS] */
    /* Access log: one line per finished request, in access_log_format (docs/server.md). NULL =
     * off. Each line is formatted in the server's own buffer and written with one fwrite, so
     * that workers sharing one FILE never interleave inside a line (stdio's lock); the FILE is
     * flushed once a second and at close. */
    FILE *access_log;
    int access_log_format; /* TC_ACCESS_LOG_TEXT or TC_ACCESS_LOG_JSON [TEXT] */
    /* 1: json lines end with "replica" (tc_request_set_replica: the upstream replica that
     * answered, null when none); text lines never change [0] */
    int access_log_replica;
    /* 1: json lines carry "route" (tc_request_set_route: the route that took the request, ""
     * when none); text lines never change [0] */
    int access_log_route;
    /* Readiness probe answered by the server itself (GET/HEAD, query ignored): 200
     * {"status":"ready"}, or 503 {"status":"draining"} once tc_server_set_ready(srv, 0) was
     * called or the server is draining, also on connections that would otherwise get 503
     * shutting_down. NULL = none [NULL]. */
    const char *ready_path;
    /* Readiness flag, like conn_count: if set, it is shared (workers and other listeners of one
     * process pass the same flag, initialised to 1) and tc_server_set_ready() on any of them
     * sets it for all; else each server has its own. */
    atomic_int *ready;
    tc_handler_fn handler;
    void *handler_data;
} tc_server_config;

void tc_server_config_init(tc_server_config *cfg);

/* Creates a server on loop and starts listening. cfg is copied (host too).
 * Returns 0, TC_EINVAL, TC_ENOMEM, TC_EADDRINUSE, TC_EADDRNOTAVAIL, TC_EACCES (the system refused
 * the bind), TC_EBUSY (out of descriptors), TC_EIO. */
int tc_server_new(tc_server **out, uv_loop_t *loop, const tc_server_config *cfg);

/* The port actually bound (useful with port 0). */
int tc_server_port(const tc_server *srv);

/* Stops accepting and starts draining: requests in flight are answered, kept-alive connections
 * are closed after their current response, new requests on them get 503 shutting_down.
 * drained_cb (may be NULL) runs once no connection is left. */
typedef void (*tc_server_cb)(tc_server *srv, void *data);
void tc_server_drain(tc_server *srv, tc_server_cb drained_cb, void *data);

/* Closes every connection at once: pending requests see their abort callback (the handler
 * still finishes them, which then only frees them). close_cb runs once every handle is closed
 * and every request handed to the handler has been finished; the server is then freed. */
void tc_server_close(tc_server *srv, tc_server_cb close_cb, void *data);

/* ready 0: the server (and every server sharing its cfg.ready flag) is no longer ready (a
 * shutdown is coming): the ready_path answers 503 draining and every answer from now on carries
 * Connection: close (the connection closes after it), while new connections are still accepted
 * and served. ready 1 undoes it. Callable from any thread. */
void tc_server_set_ready(tc_server *srv, int ready);

/* Connections and unfinished requests right now. */
size_t tc_server_connections(const tc_server *srv);
size_t tc_server_requests_in_flight(const tc_server *srv);

/* Connections the server closed as soon as it accepted them, counted since it was created. */
typedef struct tc_server_stats {
    /* No memory for the connection: closed with no answer (a connection left unaccepted would
     * stop the listener). */
    uint64_t rejected_no_memory;
    /* Over max_connections: answered 503 overloaded, then closed. */
    uint64_t rejected_over_limit;
} tc_server_stats;

/* Fills *out. On the server's loop thread only (the counters are plain). */
void tc_server_get_stats(const tc_server *srv, tc_server_stats *out);

/* What may change while the server runs (a configuration reload), on its loop thread only.
 * max_connections: from the next connection accepted (open ones stay). max_body: from the next
 * request body read. The access log: from the next request handed to the handler (requests handed
 * earlier are logged where and how they were when handed, so the caller keeps the old FILE open
 * until those are finished; requests answered without the handler, such as 400s, use the new
 * one); the old FILE is flushed here. A connection accepted while the log was off has no client
 * address in its lines. */
void tc_server_set_max_connections(tc_server *srv, size_t max_connections);
void tc_server_set_max_body(tc_server *srv, size_t max_body);
void tc_server_set_access_log(tc_server *srv, FILE *log, int format);

/* ---- requests ------------------------------------------------------------------------------- */

tc_str tc_request_method(const tc_request *req);
tc_str tc_request_target(const tc_request *req); /* as sent: path plus "?query" */
tc_str tc_request_path(const tc_request *req);   /* target up to '?' or '#', not decoded */
tc_str tc_request_query(const tc_request *req);  /* after '?', up to '#'; empty if none */
tc_str tc_request_body(const tc_request *req);
/* Finds a header by case-insensitive name; returns 1 and sets *value, or 0. */
int tc_request_header(const tc_request *req, const char *name, tc_str *value);
/* Every occurrence of a header, in the order received: start with *pos = 0 and call until it
 * returns 0; each call that returns 1 sets *value to the next occurrence's value (case-insensitive
 * name) and advances *pos. */
int tc_request_header_next(const tc_request *req, const char *name, size_t *pos, tc_str *value);
int tc_request_is_head(const tc_request *req);
uv_loop_t *tc_request_loop(const tc_request *req);
tc_server *tc_request_server(const tc_request *req);
/* When the request was fully read: uv_hrtime() in ns, and in ms of the loop's clock (uv_now()'s)
 * rounded up, so that a deadline of ready_ms + timeout on a loop timer never fires before the
 * timeout has passed since the read. */
uint64_t tc_request_ready_ms(const tc_request *req);
uint64_t tc_request_ready_ns(const tc_request *req);
/* 1 once the client has gone away. */
int tc_request_aborted(const tc_request *req);

/* The request's id: its X-Request-Id (one such field whose value, without surrounding blanks,
 * is 1 to TC_REQUEST_ID_MAX bytes of 0x21-0x7E) or else 32 lowercase hex digits the server drew
 * (a per-server generator seeded from getrandom(2): unique in practice, not a secret). Echoed
 * as X-Request-Id on the response and written in the access log. Valid until the request is
 * finished. */
tc_str tc_request_id(const tc_request *req);

/* Attempts made for the request (the access log's ATTEMPTS field; "-" / null when never set). */
void tc_request_set_attempts(tc_request *req, unsigned attempts);

/* The replica that answered the request (the json access log's "replica" with
 * access_log_replica; null when never set or NULL). Borrowed: label must stay valid until the
 * request is answered or dropped (its log line is written by then). */
void tc_request_set_replica(tc_request *req, const char *label);

/* The route that took the request (the json access log's "route" with access_log_route; ""
 * when never set or NULL). Borrowed, as for tc_request_set_replica. */
void tc_request_set_route(tc_request *req, const char *name);

/* cb runs once if the client goes away (closed, reset, server closed) before the request is
 * finished. Set it again to replace it; NULL removes it. */
typedef void (*tc_request_abort_cb)(tc_request *req, void *data);
void tc_request_on_abort(tc_request *req, tc_request_abort_cb cb, void *data);

/* Per-request slot for the handler's own state. */
void tc_request_set_data(tc_request *req, void *data);
void *tc_request_data(const tc_request *req);

typedef struct tc_server_header {
    const char *name;
    const char *value;
} tc_server_header;

/* Finishes the request with a response. The server adds Date, Content-Length, Connection,
 * X-Request-Id and (when content_type is not NULL) Content-Type; headers are extra ones. body is
 * copied. Some answers never carry a body, whatever body says (RFC 9110): to a HEAD request the
 * Content-Length of body is sent, without it; a 1xx, 204 or 304 has neither body nor
 * Content-Length nor Content-Type; a 205 has Content-Length: 0. A 1xx is no final answer, so
 * the connection closes after it. Returns 0, TC_ENOMEM (the connection is then closed), TC_EINVAL
 * (already finished). After the client went away it only frees the request. */
int tc_request_respond(tc_request *req, int status, const char *content_type,
                       const tc_server_header *headers, size_t nheaders, const char *body,
                       size_t body_len);

/* Answers application/json body (a NUL-terminated string). */
int tc_request_respond_json(tc_request *req, int status, const char *json);

/* Answers the contract's error body {"success":false,"error":code,"message":message} with
 * status; adds Retry-After for 503 and 429, Allow for 405, and closes the connection for 400,
 * 408, 413, 414 and 431. */
int tc_request_respond_error(tc_request *req, int status, const char *code, const char *message);

/* The same with extra headers (at most 4 are used). */
int tc_request_respond_error_with(tc_request *req, int status, const char *code,
                                  const char *message, const tc_server_header *headers,
                                  size_t nheaders);

/* Finishes the request with no response: the connection is closed, with a TCP RST when reset is
 * 1 (SO_LINGER 0), else with FIN. Earlier pipelined responses still go out first. */
void tc_request_drop(tc_request *req, int reset);

/* Reason phrase for a status code ("Unknown" for codes it does not know). */
const char *tc_http_reason(int status);

#ifdef __cplusplus
}
#endif
#endif /* TAILCUT_SERVER_H */
