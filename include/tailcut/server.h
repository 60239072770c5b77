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
 * earlier ones are answered.
 *
 * Streaming (see "streaming" below and docs/server.md): with cfg.head_filter, a request can be
 * handed to the handler at the end of its head instead of once whole; its body is then read in
 * pieces as it arrives (tc_request_read_body), and any request may answer with a response whose
 * body is written in pieces (tc_request_respond_head, tc_request_write, tc_request_end). Both
 * directions have back-pressure, so a request holds bounded memory whatever its body sizes. Limits:
 * request line over max_uri -> 414, header block over max_headers -> 431, body over max_body ->
 * 413, malformed HTTP -> 400; each of these closes the connection. Headers not complete within
 * header_timeout_ms -> 408 and close; a keep-alive connection idle for idle_timeout_ms is closed.
 * Over max_connections a new connection gets 503 `overloaded` with Retry-After and is closed; one
 * there is no memory for is closed at once (both counted, tc_server_get_stats). While draining,
 * requests that arrive on kept-alive connections get 503 `shutting_down` and the connection is
 * closed.
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
/* A streamed request body: the longest wait for its next bytes while the handler reads it. */
#define TC_SERVER_BODY_TIMEOUT_MS 60000
/* tc_request_respond_head()'s content_length when the length is not known, and
 * tc_request_body_length() for a chunked request body. */
#define TC_SERVER_LENGTH_UNKNOWN (-1)

/* A byte range: not NUL-terminated. */
typedef struct tc_str {
    const char *base;
    size_t len;
} tc_str;

typedef struct tc_server tc_server;
typedef struct tc_request tc_request;

typedef void (*tc_handler_fn)(tc_request *req, void *data);

/* Called at the end of every request's head (its method, target and headers are readable; its
 * body is not), with the handler's data. Returns 1 to hand the request to the handler at once, in
 * streaming mode; 0 for the whole-body path (the handler gets the request once its body is read
 * whole, bounded by max_body). It may tc_request_set_data() (the handler then finds the value,
 * whichever path is taken), and must not finish the request or call any other tc_request_*
 * function that acts on it. Not called for the ready_path or while draining. */
typedef int (*tc_head_filter_fn)(tc_request *req, void *data);

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
    /* Which requests are handed over at their head, in streaming mode. NULL = none [NULL]: every
     * request is handled whole, exactly as without it. */
    tc_head_filter_fn head_filter;
    /* A streamed request body whose next bytes take longer than this while the handler reads it
     * (not while it has paused) ends with TC_ETIMEDOUT [TC_SERVER_BODY_TIMEOUT_MS]; 0 = never. */
    uint64_t body_timeout_ms;
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
/* The body of a request handled whole; empty for a streaming request (its body is read with
 * tc_request_read_body). */
tc_str tc_request_body(const tc_request *req);
/* Finds a header by case-insensitive name; returns 1 and sets *value, or 0. */
int tc_request_header(const tc_request *req, const char *name, tc_str *value);
/* Every occurrence of a header, in the order received: start with *pos = 0 and call until it
 * returns 0; each call that returns 1 sets *value to the next occurrence's value (case-insensitive
 * name) and advances *pos. */
int tc_request_header_next(const tc_request *req, const char *name, size_t *pos, tc_str *value);
/* The header fields of the request, in the order received: tc_request_header_count() of them;
 * tc_request_header_at() sets field i's name (as sent, any case) and value (without surrounding
 * blanks) and returns 1, or returns 0 when i is past the last. For a proxy, which passes on what
 * it does not know. */
size_t tc_request_header_count(const tc_request *req);
int tc_request_header_at(const tc_request *req, size_t i, tc_str *name, tc_str *value);
int tc_request_is_head(const tc_request *req);
uv_loop_t *tc_request_loop(const tc_request *req);
tc_server *tc_request_server(const tc_request *req);
/* When the request was fully read (a streaming request: when its head was): uv_hrtime() in ns,
 * and in ms of the loop's clock (uv_now()'s) rounded up, so that a deadline of ready_ms + timeout
 * on a loop timer never fires before the timeout has passed since the read. */
uint64_t tc_request_ready_ms(const tc_request *req);
uint64_t tc_request_ready_ns(const tc_request *req);
/* 1 once the client has gone away. */
int tc_request_aborted(const tc_request *req);

/* The client's IP address as text (an IPv4 or IPv6 literal, no port: what X-Forwarded-For
 * carries), valid until the request is finished; empty when it is not known (the connection was
 * gone before it was first asked for, or the system would not say). The server looks it up when
 * first asked (or at accept, with an access log). */
tc_str tc_request_client_addr(tc_request *req);

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
 * request is finished (respond, drop, or a streamed response's end or abort: its log line is
 * written then). */
void tc_request_set_replica(tc_request *req, const char *label);

/* The route that took the request (the json access log's "route" with access_log_route; ""
 * when never set or NULL). Borrowed, as for tc_request_set_replica. */
void tc_request_set_route(tc_request *req, const char *name);

/* cb runs once if the client goes away (closed, reset, server closed) before the request is
 * finished. Set it again to replace it; NULL removes it. A body being read
 * (tc_request_read_body) and a writable callback get TC_ECANCELED first. */
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

/* ---- streaming ------------------------------------------------------------------------------
 *
 * Finishing a request (respond, end, abort, drop) is still the one rule: every function below
 * that finishes it says so. A request taken at its head whose body was not read to its end when
 * it is finished closes the connection after its response (the rest of the body is never read):
 * a whole response (tc_request_respond) then says Connection: close; a streamed head written
 * while the body still comes says what the connection would otherwise do, since the body may
 * yet be read to its end.
 */

/* 1 if the request was handed over at its head (cfg.head_filter returned 1). */
int tc_request_is_streaming(const tc_request *req);

/* The length of a streaming request's body as its head gives it: its Content-Length, 0 when it
 * has none, TC_SERVER_LENGTH_UNKNOWN when it is chunked. For a request handled whole, the length
 * of tc_request_body(). */
int64_t tc_request_body_length(const tc_request *req);

/* A piece of a streamed request body, or its end. status 0 with len > 0: data[0..len) are the
 * next bytes, valid only during the call. Then exactly one last call, with len 0 and status:
 * 0 (the whole body was read; trailers are dropped), TC_ETOOLARGE (the body grew past the limit),
 * TC_EPROTO (malformed chunked framing), TC_ETIMEDOUT (no bytes for cfg.body_timeout_ms) or
 * TC_ECANCELED (the client went away, the server closed, or the handler finished the request
 * first: then from inside that finishing call). After an error the rest of the body is never
 * read and the connection closes after the response. The handler answers (413 for
 * TC_ETOOLARGE, 400 for TC_EPROTO, ...) or finishes the request as it likes; the callback may
 * call any tc_request_* function, finishing the request included. */
typedef void (*tc_request_body_cb)(tc_request *req, int status, const char *data, size_t len,
                                   void *arg);

/* Starts reading a streaming request's body, at most limit bytes (UINT64_MAX: no limit; the
 * server's max_body does not apply). Sends "100 Continue" first when the request asked for it
 * (Expect: 100-continue, HTTP/1.1) and no response head has been written: so a handler that
 * answers without reading never sends it. cb never runs inside this call; a body already
 * complete (or none) ends with a call of status 0 from the loop. Returns 0 (cb will run as
 * above), TC_ETOOLARGE (its Content-Length is over limit: nothing is read and no 100 sent; the
 * handler answers 413), TC_EINVAL (not a streaming request, read already started, request
 * finished, cb NULL), TC_ECANCELED (the client is gone), TC_ENOMEM (the 100 Continue could not be
 * queued). On an error cb is never called. Called from the handler at the head, the body's
 * pieces start as soon as the handler returns. */
int tc_request_read_body(tc_request *req, uint64_t limit, tc_request_body_cb cb, void *arg);

/* Back-pressure on the body being read: after pause, cb is not called until resume (not even
 * for its end), the server holds at most TC_SERVER_BODY_HELD_MAX bytes of it and stops reading
 * the socket beyond that, and the body timeout does not run. Either may be called at any time,
 * also from cb; each does nothing when no body is being read. cb never runs inside resume. */
void tc_request_body_pause(tc_request *req);
void tc_request_body_resume(tc_request *req);
/* The most bytes of a paused body the server holds for one connection: its held bytes stop at
 * 64 KiB, plus one socket read (64 KiB). */
#define TC_SERVER_BODY_HELD_MAX (128 * 1024)

/* Starts a streamed response: writes (queues, behind earlier pipelined responses) its head; a
 * head with a body to follow waits for its first bytes (tc_request_write), its end or the loop's
 * next turn, whichever comes first, and goes out with them in one write. The server adds what
 * tc_request_respond() adds, and frames the body by content_length: a known length (>= 0) is sent
 * as Content-Length and exactly that many bytes must follow; TC_SERVER_LENGTH_UNKNOWN is sent
 * chunked to an HTTP/1.1 client, and to an HTTP/1.0 client as a body that ends when the connection
 * closes (Connection: close). Answers with no body are enforced as in tc_request_respond(): to
 * HEAD, a known length is announced and no body follows (an unknown one is not announced); a 1xx,
 * 204 or 304 has no Content-Length and no body; a 205 has Content-Length: 0. Their writes are then
 * accepted and dropped. content_type and headers are copied into the head at once. Returns 0;
 * TC_EINVAL (finished, a head already written, content_length < -1); TC_ECANCELED (the client is
 * gone or the connection failed: nothing is written; finish the request with tc_request_end or
 * _abort as usual); TC_ENOMEM (nothing is written and the request is finished: the connection is
 * closed). */
int tc_request_respond_head(tc_request *req, int status, const char *content_type,
                            const tc_server_header *headers, size_t nheaders,
                            int64_t content_length);

/* Writes the next len bytes of the body. They are copied (data is the caller's again when this
 * returns): straight into the socket when it takes them, else into memory that waits for it, so
 * the caller bounds that memory with tc_request_write_pending() / tc_request_on_writable().
 * Returns 0 (len 0 writes nothing: a chunked body ends only with tc_request_end); TC_EINVAL (no
 * head written, finished, or more bytes than the known length left); TC_ECANCELED (the client
 * is gone or the connection failed: nothing is written; the abort callback runs, from the loop
 * if it has not yet); TC_ENOMEM (the response is broken: the request is finished as by
 * tc_request_abort). */
int tc_request_write(tc_request *req, const char *data, size_t len);

/* Bytes waiting to be taken by the socket before this response's last written byte: its own
 * and those of earlier responses on the connection. 0 once the client is gone. */
size_t tc_request_write_pending(const tc_request *req);

/* cb(req, status, data) runs exactly once: status 0 as soon as tc_request_write_pending(req) is
 * at most threshold (from the loop, never inside this call, also when it already is), or
 * TC_ECANCELED when the client goes away or the handler finishes the request first (then from
 * inside that finishing call). The way to stop reading an upstream while ~64 KiB wait and go on
 * when they drop. Returns 0; TC_EINVAL (finished, a callback already armed, cb NULL);
 * TC_ECANCELED (the client is gone; cb never runs). */
typedef void (*tc_request_writable_cb)(tc_request *req, int status, void *arg);
int tc_request_on_writable(tc_request *req, size_t threshold, tc_request_writable_cb cb, void *arg);

/* Finishes a streamed response: a chunked body gets its last chunk, and the access log gets its
 * line (status, bytes, duration: now). Returns 0; TC_EINVAL (no head written, or finished: nothing
 * happens; but once the client is gone it finishes whatever was written); TC_EPROTO (fewer bytes
 * than the known length were written: the response cannot be complete, so it is cut as by
 * tc_request_abort; the request is finished); TC_ENOMEM (the last chunk could not be queued: cut as
 * by tc_request_abort; finished). After the client went away it only finishes (and frees) the
 * request, which the log shows as 499. */
int tc_request_end(tc_request *req);

/* Finishes the request by cutting its response, so that the client cannot take it for complete:
 * what was written goes out, then the connection closes (a chunked body gets no last chunk, a
 * known length is left short, and a body that ends at the close is cut with a reset instead).
 * With no head written yet it is tc_request_drop(req, 0). Does nothing when finished. */
void tc_request_abort(tc_request *req);

/* Reason phrase for a status code ("Unknown" for codes it does not know). */
const char *tc_http_reason(int status);

#ifdef __cplusplus
}
#endif
#endif /* TAILCUT_SERVER_H */
