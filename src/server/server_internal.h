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

typedef struct tc__srv_hdr {
    uint32_t name_off, name_len, value_off, value_len;
} tc__srv_hdr;

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

    unsigned char http_major, http_minor;
    unsigned char id_len, client_len;
    unsigned attempts;
    const char *replica; /* tc_request_set_replica's, or NULL */
    int status;
    char *resp; /* the whole response, written when this request reaches the queue head */
    size_t resp_len;
    uint64_t ready_ms, ready_ns;
    tc_request_abort_cb abort_cb;
    void *abort_data;
    void *user;
    char id[TC_REQUEST_ID_MAX];          /* X-Request-Id, taken or generated */
    char client[TC__SRV_CLIENT_MAX + 1]; /* the peer's address, for the access log */

    tc__srv_hdr inline_hdrs[TC__SRV_REQ_INLINE_HEADERS];
    char inline_buf[TC__SRV_REQ_INLINE];
};

typedef enum tc__srv_phase {
    TC__SRV_WAIT_REQUEST, /* header timer armed (first request) or idle timer (keep-alive) */
    TC__SRV_READING,      /* part of a request arrived: header timer armed */
    TC__SRV_BUSY,         /* requests queued, none partial: no timer */
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

    /* Bytes read but not parsed because the pipeline was full (parser paused). */
    char *pending;
    size_t pending_len;
    int reading; /* uv_read_start is in effect */

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
    int err_status;              /* set by a parser callback that rejects the request */
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

typedef struct tc__srv_write {
    uv_write_t req;
    tc__srv_conn *conn;
    char data[];
} tc__srv_write;

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
/* Writes every finished response at the head of c's queue. */
void tc__srv_flush_responses(tc__srv_conn *c);
/* Appends a response the server itself makes (400, 408, 413, 414, 431, 503) at the tail and
 * stops reading: the connection closes after it. r is the request being parsed (reused, so the
 * log shows what was read of it) or NULL for a new one. */
void tc__srv_queue_error(tc__srv_conn *c, tc_request *r, int status, const char *code,
                         const char *message);

/* ---- server_log.c -----------------------------------------------------------------------------
 */

/* One access-log line for a finished request (when the server has a log). */
void tc__srv_access_log(tc_request *r);
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
 * Content-Length when there are, Connection, X-Request-Id, the handler's headers, the empty line.
 */
typedef struct tc__srv_head {
    int status;
    const char *reason;       /* tc_http_reason(status) */
    const char *content_type; /* NULL: no Content-Type line */
    int has_length;           /* a Content-Length line, of content_length */
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

/* The parser callbacks, set up once per process by tc__srv_parser_init(). */
extern http_parser_settings tc__srv_parser_settings;
void tc__srv_parser_init(void);
/* A request object for c (from the server's free list when it can), or NULL on ENOMEM. */
tc_request *tc__srv_request_new(tc__srv_conn *c);
void tc__srv_request_free(tc_request *r);

#endif /* TAILCUT_SERVER_INTERNAL_H */
