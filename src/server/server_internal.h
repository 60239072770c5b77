/*
 * What the three files of the HTTP server share (server.c: the listener and the server object;
 * server_conn.c: connections, reading and writing; server_request.c: a request's storage, its
 * parsing and its response). Internal: never installed.
 */
#ifndef TAILCUT_SERVER_INTERNAL_H
#define TAILCUT_SERVER_INTERNAL_H

#include <http_parser.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "base/list.h"
#include "base/rng.h"
#include "access_log.h"
#include "tailcut/server.h"

#define TC__SRV_READ_BUFFER (64 * 1024)
#define TC__SRV_REQ_INLINE 1024
#define TC__SRV_REQ_INLINE_HEADERS 16
#define TC__SRV_MAX_HEADER_COUNT 100
#define TC__SRV_LINGER_MS 2000
#define TC__SRV_LISTEN_BACKLOG 4096
/* While the pipeline is full, bytes that arrive are held (not parsed) up to this much; beyond
 * it reading stops. Reading on while paused is what lets a client's close be noticed at once. */
#define TC__SRV_MAX_HELD ((size_t)64 * 1024)
/* Freed request objects kept per server for reuse: they are too big for malloc's fast path. */
#define TC__SRV_REQ_FREELIST 256
/* A client address as the access log shows it: an IPv6 literal at most (INET6_ADDRSTRLEN). */
#define TC__SRV_CLIENT_MAX 46

typedef struct tc__srv_conn tc__srv_conn;
typedef struct tc__srv_write tc__srv_write;

typedef struct tc__srv_hdr {
    uint32_t name_off, name_len, value_off, value_len;
} tc__srv_hdr;

/* What a request needs only to stream (server_stream.c): set up by tc__srv_stream_init the
 * first time, so that a request handled whole never pays for it; valid while r->streamed. */
typedef struct tc__srv_stream {
    int64_t body_length; /* Content-Length, 0 for none, TC_SERVER_LENGTH_UNKNOWN when chunked */
    uint64_t body_limit, body_read;
    tc_request_body_cb body_cb;
    void *body_arg;
    tc_request_writable_cb writable_cb;
    void *writable_arg;
    size_t writable_at;
    uint64_t resp_left; /* a known length: body bytes still owed */
    /* Bytes written while the request is not at the queue head, in order. */
    tc__srv_write *out, *out_last;
    size_t out_bytes;
    /* The live response's head, held until its first body bytes, its end or the post handle,
     * whichever comes first, so that a head and the body right behind it go in one write. */
    tc__srv_write *head;
} tc__srv_stream;

struct tc_request {
    tc__link link;      /* in conn->queue, or in srv->free_reqs */
    tc__srv_conn *conn; /* NULL once the client has gone */
    tc_server *srv;

    /* Storage for target, header names/values and body: offsets into buf. */
    char *buf;
    size_t len, cap;
    uint32_t target_off, target_len, path_len, query_off, query_len;
    size_t body_off, body_len, header_bytes;
    tc__srv_hdr *hdrs;
    unsigned nhdrs, hdrs_cap;
    unsigned char method;

    unsigned keep_alive : 1;
    unsigned last_was_value : 1;
    unsigned dispatched : 1; /* handed to the handler */
    unsigned finished : 1;   /* tc_request_respond*() or tc_request_drop() was called */
    unsigned aborted : 1;
    unsigned close_after : 1;
    unsigned drop : 1;
    unsigned reset : 1;
    unsigned line_done : 1;    /* the request line was read whole: method, target, version */
    unsigned attempts_set : 1; /* tc_request_set_attempts() was called */
    unsigned log_taken : 1;    /* log and log_format hold the log it was handed over with */

    /* Streaming (server_stream.c). A request taken at its head is queued and dispatched then;
     * while its body is parsed it is also c->cur. */
    unsigned streamed : 1;        /* st is set up */
    unsigned streaming : 1;       /* cfg.head_filter took it */
    unsigned body_pending : 1;    /* its body has not been parsed to its end */
    unsigned body_started : 1;    /* tc_request_read_body() was called */
    unsigned body_reading : 1;    /* ... and the last call of its callback has not been made */
    unsigned body_paused : 1;     /* tc_request_body_pause() */
    unsigned body_end_due : 1;    /* the body ended before reading started: the end is posted */
    unsigned expect_continue : 1; /* Expect: 100-continue from an HTTP/1.1 client */
    unsigned head_sent : 1;       /* tc_request_respond_head() wrote (queued) the head */
    unsigned chunked : 1;         /* the streamed body goes out in chunks */
    unsigned until_close : 1;     /* ... or ends when the connection closes (HTTP/1.0) */
    unsigned has_length : 1;      /* ... or has a known length: resp_left bytes still owed */
    unsigned no_body : 1;         /* ... or there is none (HEAD, 1xx, 204, 205, 304) */
    unsigned cut : 1;             /* finished by tc_request_abort(): close after what was sent */
    unsigned live : 1;            /* at the queue head: its writes go straight to the socket */
    unsigned notifying : 1;       /* inside the callbacks of a closing connection: keep it */

    unsigned char http_major, http_minor;
    unsigned char id_len, client_len;
    unsigned attempts;
    const char *replica; /* tc_request_set_replica's, or NULL */
    const char *route;   /* tc_request_set_route's, or NULL */
    FILE *log;           /* with log_taken: the access log in force when it was handed over */
    int log_format;
    int status;
    char *resp;      /* the whole response, written when this request reaches the queue head */
    size_t resp_len; /* its length; for a streamed response, the bytes written so far */
    uint64_t ready_ms, ready_ns;
    tc_request_abort_cb abort_cb;
    void *abort_data;
    void *user;
    char id[TC_REQUEST_ID_MAX];          /* X-Request-Id, taken or generated */
    char client[TC__SRV_CLIENT_MAX + 1]; /* the peer's address, for the access log */

    /* Not cleared for a new request (tc__srv_request_new clears up to here). */
    tc__srv_hdr inline_hdrs[TC__SRV_REQ_INLINE_HEADERS];
    char inline_buf[TC__SRV_REQ_INLINE];
    tc__srv_stream st; /* valid while streamed */
};

typedef enum tc__srv_phase {
    TC__SRV_WAIT_REQUEST, /* header timer armed (first request) or idle timer (keep-alive) */
    TC__SRV_READING,      /* part of a request arrived: header timer armed */
    TC__SRV_BUSY,         /* requests queued, none partial: no timer */
    TC__SRV_BODY,         /* a streamed body is parsed: body timer armed while it is read */
    TC__SRV_LINGER,       /* FIN sent, discarding input until EOF or the linger timer */
} tc__srv_phase;

struct tc__srv_conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_shutdown_t shutdown_req;
    tc_server *srv;
    tc__link link; /* in srv->conns */
    http_parser parser;

    tc_request *cur; /* being parsed */
    tc__link queue;  /* requests in arrival order; responses leave from the first */
    size_t queued;

    /* Bytes read but not parsed because the parser is paused (the pipeline is full, or a
     * streamed body is not being read): pending[pending_off..pending_len). */
    char *pending;
    size_t pending_len, pending_off;
    int reading;        /* uv_read_start is in effect */
    size_t write_bytes; /* bytes of uv_write calls not yet completed */
    unsigned armed;     /* requests with a writable callback */
    tc__link post_link; /* in srv->posted while posted */

    tc__srv_phase phase;
    size_t writes;               /* uv_write calls not yet completed */
    int handles;                 /* open uv handles; freed at 0 */
    unsigned closing : 1;        /* uv_close called (hard close) */
    unsigned want_close : 1;     /* close once writes completed */
    unsigned want_reset : 1;     /* ... with RST */
    unsigned read_paused : 1;    /* pipeline full */
    unsigned parse_error : 1;    /* no more parsing */
    unsigned counted : 1;        /* counted against max_connections */
    unsigned idle_state : 1;     /* WAIT_REQUEST after at least one response */
    unsigned in_dispatch : 1;    /* inside conn_parse: defer flushes and closes */
    unsigned close_deferred : 1; /* conn_close was asked for while in_dispatch */
    unsigned in_parser : 1;      /* inside http_parser_execute */
    /* The parser paused at a streamed message's head or end to change its callbacks. */
    unsigned change_settings : 1;
    unsigned posted : 1;    /* in srv->posted: tc__srv_conn_run_posted runs soon */
    unsigned post_head : 1; /* ... only to send a held response head (server_stream.c) */
    int err_status;         /* set by a parser callback that rejects the request */
    unsigned char client_len;
    char client[TC__SRV_CLIENT_MAX + 1]; /* the peer's address ("-" if unknown) */
};

struct tc_server {
    uv_loop_t *loop;
    uv_tcp_t listener;
    uv_timer_t tick; /* refreshes the Date cache, flushes the access log */
    tc_server_config cfg;
    char host[64];
    int port;
    atomic_size_t own_count;
    atomic_size_t *conn_count;
    atomic_int own_ready;
    atomic_int *ready; /* 0 after tc_server_set_ready(srv, 0): Connection: close on every answer */
    tc__link conns;
    size_t nconns;
    tc__link free_reqs; /* freed requests kept for reuse, the latest last */
    /* Connections with work for the next loop iteration (server_stream.c): a body to resume or
     * end, a writable callback due, a failed write to close on. post runs while it is not
     * empty, so the callbacks of the streaming API never run inside the call that arms them. */
    tc__link posted;
    uv_idle_t post;
    size_t nfree_reqs;
    size_t inflight;
    int handles;
    unsigned listening : 1;
    unsigned draining : 1;
    unsigned closing : 1;
    /* A connection there is no memory for is accepted into `refuse` and closed at once
     * (server_conn.c, conn_refuse). refuse stays busy until its close callback; a connection that
     * comes meanwhile waits in libuv (which pauses the listener until uv_accept) and is taken then.
     */
    unsigned refusing : 1;
    unsigned accept_waiting : 1;
    uv_tcp_t refuse;
    tc_server_stats stats; /* tc_server_get_stats() */
    tc__rng rng;           /* generated request ids; seeded from getrandom(2) */
    tc_server_cb drained_cb, close_cb;
    void *drained_data, *close_data;
    time_t date_time;
    char date[48]; /* "Date: Sat, 21 Nov 2026 16:57:44 GMT\r\n" */
    size_t date_len;
    time_t log_sec;
    char log_time[32]; /* "2026-11-21T16:57:44" for log_sec: the log adds ".mmmZ" */
    char read_buf[TC__SRV_READ_BUFFER];
    char log_line[TC__LOG_LINE_MAX]; /* one access-log line is formatted here */
};

/* Bytes handed to uv_write (or waiting in a request's out list), allocated with them. */
struct tc__srv_write {
    uv_write_t req;
    tc__srv_conn *conn;
    size_t len;          /* data bytes (those of uv_write: counted in conn->write_bytes) */
    tc__srv_write *next; /* in a request's out list */
    char data[];
};

/* ---- server.c ---------------------------------------------------------------------------------
 */

/* 1 while the server is ready (tc_server_set_ready). */
static inline int tc__srv_ready(const tc_server *srv)
{
    return atomic_load_explicit(srv->ready, memory_order_relaxed) != 0;
}

/* Refreshes the cached Date header if the second changed. */
void tc__srv_update_time(tc_server *srv);
/* Frees srv once it is closing and every handle and connection is gone. */
void tc__srv_maybe_free(tc_server *srv);
/* Calls the drained callback once draining and no connection is left. */
void tc__srv_check_drained(tc_server *srv);

/* ---- server_conn.c ----------------------------------------------------------------------------
 */

/* The listener's connection callback: every connection libuv offers is accepted, also when
 * there is no memory for it (it is then closed at once), or libuv would stop watching the
 * listener for good. */
void tc__srv_on_connection(uv_stream_t *listener, int status);
/* Closes c at once (deferred while c is dispatching). */
void tc__srv_conn_close(tc__srv_conn *c);
void tc__srv_conn_maybe_finish_close(tc__srv_conn *c);
void tc__srv_conn_read_off(tc__srv_conn *c);
/* One timer per connection: header deadline, idle deadline or linger, by phase. */
void tc__srv_conn_timer_start(tc__srv_conn *c, uint64_t ms);
/* Appends r at the tail of c's queue (responses leave from the head, in this order). */
void tc__srv_queue_push(tc__srv_conn *c, tc_request *r);
/* The first request of c's queue, or NULL. */
static inline tc_request *tc__srv_queue_first(const tc__srv_conn *c)
{
    tc__link *l = tc__list_first(&c->queue);
    return l != NULL ? tc__container_of(l, tc_request, link) : NULL;
}
/* Writes every finished response at the head of c's queue; a streamed one there goes live. */
void tc__srv_flush_responses(tc__srv_conn *c);
/* After callbacks ran with c in_dispatch: the close they asked for, else the flush. */
void tc__srv_conn_settle(tc__srv_conn *c);
/* Marks r read (whole, or its head when it streams): the moment its deadline counts from. A
 * loop timer fires once the loop's clock (whole ms, rounded down, and possibly the coarse clock a
 * tick behind) reaches its due time, so a deadline counted from the read moment rounded down could
 * fire up to a millisecond or two before the timeout has passed since the read (measured: 450 of
 * 11,000 answers under a burst, bench/smart/deadline). Rounded up to the next whole ms of the same
 * monotonic clock, it never does. The loop's clock is refreshed too: timers started now count
 * from it. */
static inline void tc__srv_mark_ready(tc_request *r, uv_loop_t *loop)
{
    uv_update_time(loop);
    r->ready_ns = uv_hrtime();
    r->ready_ms = (r->ready_ns + 999999u) / 1000000u;
}

/* Hands w to the socket (uv_write); on failure frees w and returns the libuv error. */
int tc__srv_conn_submit(tc__srv_conn *c, tc__srv_write *w);
/* Sends bufs (total bytes) for the live request at the head of c's queue: straight into the
 * socket when nothing waits before them, the rest copied. Returns 0, TC_ENOMEM, or TC_ECANCELED
 * when the socket failed (the connection is then closed from the loop). */
int tc__srv_conn_send(tc__srv_conn *c, const uv_buf_t *bufs, unsigned nbufs, size_t total);
/* Hands every request queued after `after` to the handler (or answers 503 while draining). */
void tc__srv_conn_dispatch(tc__srv_conn *c, const tc__link *after);
/* Hands r to the handler (whole, or at its head when streaming): marks it dispatched, gives it
 * the access log in force (it keeps that one to its end, whatever a reload sets) and counts it
 * in flight. The one way a request reaches the handler. */
void tc__srv_hand_over(tc_server *srv, tc_request *r);
/* 1 if r is the server's readiness probe (cfg.ready_path); r's target must be split. */
static inline int tc__srv_is_ready_path(const tc_server *srv, const tc_request *r)
{
    const char *path = srv->cfg.ready_path;
    size_t n = path != NULL ? strlen(path) : 0;
    return n > 0 && r->path_len == n && memcmp(r->buf + r->target_off, path, n) == 0;
}
/* Parses what the paused parser holds, or reads on, once the parser may run again. */
void tc__srv_conn_unpause(tc__srv_conn *c);
/* 1 if the parser may run: the streamed body being parsed is being read, or else there is room
 * in the pipeline. */
int tc__srv_conn_can_parse(const tc__srv_conn *c);
/* Appends a response the server itself makes (400, 408, 413, 414, 431, 503) at the tail and
 * stops reading: the connection closes after it. r is the request being parsed (reused, so the
 * log shows what was read of it) or NULL for a new one. */
void tc__srv_queue_error(tc__srv_conn *c, tc_request *r, int status, const char *code,
                         const char *message);

/* ---- server_log.c -----------------------------------------------------------------------------
 */

/* One access-log line for a finished request (when the server has a log). */
void tc__srv_access_log(tc_request *r);
/* r keeps the access log in force now (and its format) for its line, whatever
 * tc_server_set_access_log does later: called when it is handed to the handler. */
void tc__srv_take_log(tc_request *r);
/* Sets r's id from its X-Request-Id field, or draws one. */
void tc__srv_request_id_init(tc_request *r);
/* Draws a fresh id for r (32 lowercase hex digits). */
void tc__srv_request_id_generate(tc_request *r);
/* The peer address of c into c->client (client_len 0 if unknown). */
void tc__srv_conn_client(tc__srv_conn *c);
/* A seed for the server's id generator, from getrandom(2). */
uint64_t tc__srv_id_seed(const tc_server *srv);

/* ---- server_request.c -------------------------------------------------------------------------
 */

/* Headers of a response head whose lengths tc__srv_head_size keeps for the write (the server's own
 * answers add at most six; a handler's beyond these are measured twice). */
#define TC__SRV_HEAD_KEEP_LENS 8

/* A response head as the server writes it: the status line, Date, Content-Type and
 * Content-Length (or Transfer-Encoding: chunked) when there are, Connection, X-Request-Id, the
 * handler's headers, the empty line. */
typedef struct tc__srv_head {
    int status;
    const char *reason;       /* tc_http_reason(status) */
    const char *content_type; /* NULL: no Content-Type line */
    int has_length;           /* a Content-Length line, of content_length */
    int chunked;              /* a Transfer-Encoding: chunked line */
    uint64_t content_length;
    int close; /* Connection: close, else keep-alive */
    const char *date;
    size_t date_len; /* the whole Date line, CRLF included */
    const char *id;
    size_t id_len;
    const tc_server_header *headers;
    size_t nheaders;
    /* Lengths measured by tc__srv_head_size, so that the write need not measure them again. */
    size_t reason_len, content_type_len;
    size_t name_len[TC__SRV_HEAD_KEEP_LENS], value_len[TC__SRV_HEAD_KEEP_LENS];
} tc__srv_head;

/* The exact length of h's text: what tc__srv_head_write writes (the response allocation is
 * sized by it, so the two must agree to the byte; tests/unit/server/test_server_head.c). Keeps
 * the lengths of h's strings in h for the write. */
size_t tc__srv_head_size(tc__srv_head *head);
/* Writes h's text at dst, which has tc__srv_head_size(h) bytes (measured on this h); returns the
 * bytes written. */
size_t tc__srv_head_write(char *dst, const tc__srv_head *head);

/* The parser callbacks, set up once per process by tc__srv_parser_init(): those of every
 * request, and those of a streamed request's body (server_stream.c). */
extern http_parser_settings tc__srv_parser_settings, tc__srv_stream_parser_settings;
void tc__srv_parser_init(void);
/* A request object for c (from the server's free list when it can), or NULL on ENOMEM. */
tc_request *tc__srv_request_new(tc__srv_conn *c);
void tc__srv_request_free(tc_request *r);
/* Common end of every request: bookkeeping, the access log, then the queue decides. */
void tc__srv_request_finish(tc_request *r);
/* The head of a streamed response, framed by content_length (>= 0, or TC_SERVER_LENGTH_UNKNOWN)
 * and r's protocol, in a write block of its own; sets r's framing (chunked, until_close,
 * has_length, no_body), status and close_after. NULL when out of memory. */
tc__srv_write *tc__srv_head_build(tc_request *r, int status, const char *content_type,
                                  const tc_server_header *headers, size_t nheaders,
                                  int64_t content_length);
/* Splits the target into path and query. */
void tc__srv_request_split_target(tc_request *r);

/* ---- server_stream.c --------------------------------------------------------------------------
 */

/* At the end of r's head, in on_headers_complete: 1 if cfg.head_filter took r (it is then queued
 * and handed to the handler); 0 for the whole-body path. -1 when the parser must stop (the
 * connection closes). */
int tc__srv_stream_take(tc__srv_conn *c, http_parser *hp, tc_request *r);
/* Fills the parser callbacks of a streamed request's body. */
void tc__srv_stream_settings(http_parser_settings *set);
/* Frees what r's stream part holds (bytes written and never sent). */
void tc__srv_stream_free(tc_request *r);
/* Sets up r's stream part, once. */
void tc__srv_stream_init(tc_request *r);
/* The streamed body being parsed failed (malformed, too large trailers, timed out): its reader
 * gets status, the connection parses no more and closes after the response. */
void tc__srv_stream_body_fail(tc__srv_conn *c, int status);
/* r leaves c (closing): its body reader and writable callback get TC_ECANCELED, then the abort
 * callback runs; r is freed here if a callback finished it. */
void tc__srv_stream_gone(tc_request *r);
/* r (streamed) is being finished: cancels its callbacks, stops parsing a body not read to its
 * end. */
void tc__srv_stream_finish(tc_request *r);
/* Queues c for tc__srv_run_posted. */
void tc__srv_conn_post(tc__srv_conn *c);
void tc__srv_on_post(uv_idle_t *h);
/* Writable callbacks whose request has room now: runs them (c in_dispatch). */
void tc__srv_conn_notify_writable(tc__srv_conn *c);

#endif /* TAILCUT_SERVER_INTERNAL_H */
