/*
 * HTTP/1.1 server on libuv and http-parser.
 *
 * The one idea: every connection keeps its requests in a FIFO in arrival order, and a response
 * leaves only from the head of that FIFO. A handler may finish requests in any order and at any
 * time; finishing marks the request, and flush_responses() writes every finished request at the
 * head. That single rule gives in-order pipelining, lets protocol errors (400, 413, 431, ...)
 * queue behind earlier answers like any response, and makes "close after this response" a
 * property of one queue entry.
 *
 * Memory: bytes are read into one buffer per server (the loop is single-threaded and each read
 * is parsed before the next), so an idle connection costs only its handles. A request copies
 * what it needs (target, headers, body) into its own storage, inline up to TC_REQ_INLINE bytes.
 * Every growth is bounded by max_uri, max_headers and max_body.
 *
 * Closing: after a final response the server sends FIN (uv_shutdown) and keeps reading and
 * discarding for up to TC_LINGER_MS, so that a client still sending does not turn our answer
 * into a TCP reset ("lingering close").
 */
#include <errno.h>
#include <http_parser.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "tailcut/server.h"

#define TC_READ_BUFFER (64 * 1024)
#define TC_REQ_INLINE 1024
#define TC_REQ_INLINE_HEADERS 16
#define TC_SERVER_MAX_HEADER_COUNT 100
#define TC_LINGER_MS 2000
#define TC_LISTEN_BACKLOG 4096
/* While the pipeline is full, bytes that arrive are held (not parsed) up to this much; beyond
 * it reading stops. Reading on while paused is what lets a client's close be noticed at once. */
#define TC_SERVER_MAX_HELD ((size_t)64 * 1024)
/* Freed request objects kept per server for reuse: they are too big for malloc's fast path. */
#define TC_REQ_FREELIST 256

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

typedef struct tc_conn tc_conn;

typedef struct tc_hdr_ref {
    uint32_t name_off, name_len, value_off, value_len;
} tc_hdr_ref;

struct tc_request {
    tc_request *next; /* in conn->queue */
    tc_conn *conn;    /* NULL once the client has gone */
    tc_server *srv;

    /* Storage for target, header names/values and body: offsets into buf. */
    char *buf;
    size_t len, cap;
    uint32_t target_off, target_len, path_len, query_off, query_len;
    size_t body_off, body_len, header_bytes;
    tc_hdr_ref *hdrs;
    unsigned nhdrs, hdrs_cap;
    unsigned char method;

    unsigned keep_alive : 1;
    unsigned last_was_value : 1;
    unsigned dispatched : 1; /* handed to the handler */
    unsigned finished : 1;   /* respond() or drop() was called, or synthetic */
    unsigned aborted : 1;
    unsigned close_after : 1;
    unsigned drop : 1;
    unsigned reset : 1;

    int status;
    char *resp; /* the whole response, written when this request reaches the queue head */
    size_t resp_len;
    uint64_t ready_ms, ready_ns;
    tc_request_abort_cb abort_cb;
    void *abort_data;
    void *user;

    tc_hdr_ref inline_hdrs[TC_REQ_INLINE_HEADERS];
    char inline_buf[TC_REQ_INLINE];
};

typedef enum conn_phase {
    PHASE_WAIT_REQUEST, /* header timer armed (first request) or idle timer (keep-alive) */
    PHASE_READING,      /* part of a request arrived: header timer armed */
    PHASE_BUSY,         /* requests queued, none partial: no timer */
    PHASE_LINGER,       /* FIN sent, discarding input until EOF or the linger timer */
} conn_phase;

struct tc_conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_shutdown_t shutdown_req;
    tc_server *srv;
    tc_conn *prev, *next; /* in srv->conns */
    http_parser parser;

    tc_request *cur; /* being parsed */
    tc_request *head, *tail;
    size_t queued;

    /* Bytes read but not parsed because the pipeline was full (parser paused). */
    char *pending;
    size_t pending_len;
    int reading; /* uv_read_start is in effect */

    conn_phase phase;
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
    tc_conn *conns;
    size_t nconns;
    tc_request *free_reqs;
    size_t nfree_reqs;
    size_t inflight;
    int handles;
    unsigned listening : 1;
    unsigned draining : 1;
    unsigned closing : 1;
    tc_server_cb drained_cb, close_cb;
    void *drained_data, *close_data;
    time_t date_time;
    char date[48]; /* "Date: Sat, 21 Nov 2026 16:57:44 GMT\r\n" */
    size_t date_len;
    char log_time[32]; /* "2026-11-21T16:57:44Z" */
    char read_buf[TC_READ_BUFFER];
};

typedef struct write_req {
    uv_write_t req;
    tc_conn *conn;
    char data[];
} write_req;

static http_parser_settings parser_settings;
static uv_once_t parser_settings_once = UV_ONCE_INIT;

static void conn_close(tc_conn *c);
static void conn_maybe_finish_close(tc_conn *c);
static void flush_responses(tc_conn *c);
static void conn_parse(tc_conn *c, const char *data, size_t len);
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void conn_read_on(tc_conn *c)
{
    if (!c->reading && uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
        c->reading = 1;
}

static void conn_read_off(tc_conn *c)
{
    if (c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = 0;
    }
}
static void server_check_drained(tc_server *srv);
static void server_maybe_free(tc_server *srv);
static void request_free(tc_request *r);

/* ---- small helpers -------------------------------------------------------------------------- */

void tc_server_config_init(tc_server_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->host = "127.0.0.1";
    cfg->max_body = (size_t)TC_SERVER_DEFAULT_MAX_BODY;
    cfg->max_uri = (size_t)TC_SERVER_MAX_URI;
    cfg->max_headers = (size_t)TC_SERVER_MAX_HEADERS;
    cfg->header_timeout_ms = TC_SERVER_HEADER_TIMEOUT_MS;
    cfg->idle_timeout_ms = TC_SERVER_IDLE_TIMEOUT_MS;
}

const char *tc_http_reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 413:
        return "Payload Too Large";
    case 414:
        return "URI Too Long";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 499:
        return "Client Closed Request";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    }
    return "Unknown";
}

static void server_update_time(tc_server *srv)
{
    time_t now = time(NULL);
    struct tm tm;
    if (now == srv->date_time)
        return;
    srv->date_time = now;
    gmtime_r(&now, &tm);
    srv->date_len =
        strftime(srv->date, sizeof(srv->date), "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
    /* 20 bytes and the NUL in a 32-byte buffer: never 0 */
    (void)strftime(srv->log_time, sizeof(srv->log_time), "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void on_conn_timer(uv_timer_t *t);

/* One timer per connection: header deadline, idle deadline or linger, by phase. */
static void conn_timer_start(tc_conn *c, uint64_t ms)
{
    if (ms > 0)
        uv_timer_start(&c->timer, on_conn_timer, ms, 0);
}

/* ---- request storage ------------------------------------------------------------------------ */

static tc_request *request_new(tc_conn *c)
{
    tc_server *srv = c->srv;
    tc_request *r = srv->free_reqs;
    if (r != NULL) {
        srv->free_reqs = r->next;
        srv->nfree_reqs--;
    } else if ((r = malloc(sizeof(*r))) == NULL) {
        return NULL;
    }
    memset(r, 0, offsetof(tc_request, inline_hdrs));
    r->conn = c;
    r->srv = c->srv;
    r->buf = r->inline_buf;
    r->cap = sizeof(r->inline_buf);
    r->hdrs = r->inline_hdrs;
    r->hdrs_cap = TC_REQ_INLINE_HEADERS;
    return r;
}

static void request_free(tc_request *r)
{
    tc_server *srv = r->srv;
    if (r->buf != r->inline_buf)
        free(r->buf);
    if (r->hdrs != r->inline_hdrs)
        free(r->hdrs);
    if (r->resp != NULL)
        free(r->resp - offsetof(write_req, data));
    if (srv->nfree_reqs < TC_REQ_FREELIST && !srv->closing) {
        r->next = srv->free_reqs;
        srv->free_reqs = r;
        srv->nfree_reqs++;
    } else {
        free(r);
    }
}

/* Appends bytes to the request's storage; the caller has checked the limits already. */
static int request_append(tc_request *r, const char *at, size_t len)
{
    if (r->len + len > r->cap) {
        size_t cap = r->cap * 2;
        while (cap < r->len + len)
            cap *= 2;
        int was_inline = r->buf == r->inline_buf;
        char *nb = was_inline ? malloc(cap) : realloc(r->buf, cap);
        if (nb == NULL)
            return TC_ENOMEM;
        if (was_inline)
            memcpy(nb, r->buf, r->len);
        r->buf = nb;
        r->cap = cap;
    }
    memcpy(r->buf + r->len, at, len);
    r->len += len;
    return 0;
}

/* ---- parser callbacks ----------------------------------------------------------------------- */

static int fail(tc_conn *c, int status)
{
    c->err_status = status;
    return -1;
}

static int on_message_begin(http_parser *p)
{
    tc_conn *c = p->data;
    c->cur = request_new(c);
    if (c->cur == NULL)
        return fail(c, 503);
    if (c->phase != PHASE_READING) {
        c->phase = PHASE_READING;
        conn_timer_start(c, c->srv->cfg.header_timeout_ms);
    }
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    tc_conn *c = p->data;
    tc_request *r = c->cur;
    if (r->target_len + len > c->srv->cfg.max_uri)
        return fail(c, 414);
    if (r->target_len == 0)
        r->target_off = (uint32_t)r->len;
    r->target_len += (uint32_t)len;
    return request_append(r, at, len) == 0 ? 0 : fail(c, 503);
}

static int header_bytes_add(tc_conn *c, tc_request *r, size_t len)
{
    r->header_bytes += len;
    return r->header_bytes > c->srv->cfg.max_headers ? fail(c, 431) : 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    tc_conn *c = p->data;
    tc_request *r = c->cur;
    if (header_bytes_add(c, r, len) != 0)
        return -1;
    if (r->nhdrs == 0 || r->last_was_value) {
        if (r->nhdrs == TC_SERVER_MAX_HEADER_COUNT)
            return fail(c, 431);
        if (r->nhdrs == r->hdrs_cap) {
            unsigned cap = r->hdrs_cap > 0 ? r->hdrs_cap * 2 : TC_REQ_INLINE_HEADERS;
            tc_hdr_ref *nh = malloc(cap * sizeof(*nh));
            if (nh == NULL)
                return fail(c, 503);
            memcpy(nh, r->hdrs, r->nhdrs * sizeof(*nh));
            if (r->hdrs != r->inline_hdrs)
                free(r->hdrs);
            r->hdrs = nh;
            r->hdrs_cap = cap;
        }
        tc_hdr_ref *h = &r->hdrs[r->nhdrs++];
        h->name_off = (uint32_t)r->len;
        h->name_len = 0;
        h->value_off = 0;
        h->value_len = 0;
        r->last_was_value = 0;
    }
    r->hdrs[r->nhdrs - 1].name_len += (uint32_t)len;
    return request_append(r, at, len) == 0 ? 0 : fail(c, 503);
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    tc_conn *c = p->data;
    tc_request *r = c->cur;
    if (header_bytes_add(c, r, len) != 0)
        return -1;
    tc_hdr_ref *h = &r->hdrs[r->nhdrs - 1];
    if (!r->last_was_value) {
        h->value_off = (uint32_t)r->len;
        r->last_was_value = 1;
    }
    h->value_len += (uint32_t)len;
    return request_append(r, at, len) == 0 ? 0 : fail(c, 503);
}

static int on_headers_complete(http_parser *p)
{
    tc_conn *c = p->data;
    tc_request *r = c->cur;
    if ((p->flags & F_CONTENTLENGTH) && p->content_length > c->srv->cfg.max_body)
        return fail(c, 413);
    r->method = (unsigned char)p->method;
    r->keep_alive = http_should_keep_alive(p) ? 1 : 0;
    r->body_off = r->len;
    tc_str expect;
    if (c->head == NULL && c->writes == 0 && tc_request_header(r, "Expect", &expect) &&
        expect.len == 12 && strncasecmp(expect.base, "100-continue", 12) == 0) {
        /* Nothing else is queued, so an interim answer cannot overtake a response. */
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        uv_buf_t b = uv_buf_init((char *)cont, sizeof(cont) - 1);
        uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    }
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    tc_conn *c = p->data;
    tc_request *r = c->cur;
    if (r->body_len + len > c->srv->cfg.max_body)
        return fail(c, 413);
    r->body_len += len;
    return request_append(r, at, len) == 0 ? 0 : fail(c, 503);
}

static void request_split_target(tc_request *r)
{
    const char *t = r->buf + r->target_off;
    uint32_t i = 0, n = r->target_len;
    while (i < n && t[i] != '?' && t[i] != '#')
        i++;
    r->path_len = i;
    r->query_off = r->target_off + i;
    r->query_len = 0;
    if (i < n && t[i] == '?') {
        uint32_t q = i + 1, e = q;
        while (e < n && t[e] != '#')
            e++;
        r->query_off = r->target_off + q;
        r->query_len = e - q;
    }
}

static int on_message_complete(http_parser *p)
{
    tc_conn *c = p->data;
    tc_request *r = c->cur;
    c->cur = NULL;
    request_split_target(r);
    /* The deadline counts from now: refresh the loop's cached clock, which can be a few ms old
     * under load, so that deadlines never fire early. */
    uv_update_time(c->srv->loop);
    r->ready_ms = uv_now(c->srv->loop);
    r->ready_ns = uv_hrtime();
    if (p->upgrade)
        r->keep_alive = 0; /* what follows is not HTTP/1.1: answer, then close */
    if (c->tail != NULL)
        c->tail->next = r;
    else
        c->head = r;
    c->tail = r;
    c->queued++;
    c->phase = PHASE_BUSY;
    uv_timer_stop(&c->timer);
    if (c->queued >= TC_SERVER_MAX_PIPELINE)
        http_parser_pause(p, 1);
    return 0;
}

static void parser_settings_init(void)
{
    http_parser_settings_init(&parser_settings);
    parser_settings.on_message_begin = on_message_begin;
    parser_settings.on_url = on_url;
    parser_settings.on_header_field = on_header_field;
    parser_settings.on_header_value = on_header_value;
    parser_settings.on_headers_complete = on_headers_complete;
    parser_settings.on_body = on_body;
    parser_settings.on_message_complete = on_message_complete;
}

/* ---- responses ------------------------------------------------------------------------------ */

static void access_log(tc_request *r)
{
    tc_server *srv = r->srv;
    FILE *log = srv->cfg.access_log;
    if (log == NULL)
        return;
    char line[512];
    uint64_t us = r->ready_ns ? (uv_hrtime() - r->ready_ns) / 1000 : 0;
    int path_len = r->path_len > 200 ? 200 : (int)r->path_len;
    const char *method = r->dispatched ? http_method_str((enum http_method)r->method) : "-";
    int status = r->aborted && !r->drop ? 499 : r->status;
    server_update_time(srv);
    int n = snprintf(line, sizeof(line), "%s %s %.*s %d %" PRIu64 " %zu\n", srv->log_time, method,
                     path_len > 0 ? path_len : 1, path_len > 0 ? r->buf + r->target_off : "-",
                     status, us, r->resp_len);
    if (n > 0)
        /* the access log is best effort: a full disk must not fail requests */
        (void)fwrite(line, 1, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1, log);
}

static void on_write(uv_write_t *req, int status)
{
    write_req *w = container_of(req, write_req, req);
    tc_conn *c = w->conn;
    free(w);
    c->writes--;
    if (status < 0 && !c->closing) {
        conn_close(c);
        return;
    }
    conn_maybe_finish_close(c);
}

static void on_linger_timeout(uv_timer_t *t)
{
    tc_conn *c = container_of(t, tc_conn, timer);
    conn_close(c);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    tc_conn *c = container_of(req, tc_conn, shutdown_req);
    if (c->closing)
        return;
    if (status < 0) {
        conn_close(c);
        return;
    }
    /* FIN is out; keep reading (and discarding) until the client closes or the timer fires. */
    uv_timer_start(&c->timer, on_linger_timeout, TC_LINGER_MS, 0);
    conn_read_on(c);
}

/* Once every write has completed, a connection that wants to close does so: with RST right
 * away, or with FIN and a lingering read. */
static void conn_maybe_finish_close(tc_conn *c)
{
    if (c->closing || !c->want_close || c->writes > 0 || c->phase == PHASE_LINGER)
        return;
    if (c->want_reset) {
        conn_close(c); /* conn_close resets when want_reset is set */
        return;
    }
    c->phase = PHASE_LINGER;
    uv_timer_stop(&c->timer);
    if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, on_shutdown) != 0)
        conn_close(c);
}

/* Writes every finished response at the head of the queue, in order. */
static void flush_responses(tc_conn *c)
{
    while (c->head != NULL && c->head->finished && !c->closing && !c->want_close) {
        tc_request *r = c->head;
        c->head = r->next;
        if (c->head == NULL)
            c->tail = NULL;
        c->queued--;
        if (r->drop) {
            c->want_close = 1;
            c->want_reset = r->reset;
        } else if (r->resp != NULL) {
            write_req *w = (write_req *)(r->resp - offsetof(write_req, data));
            uv_buf_t buf = uv_buf_init(r->resp, (unsigned)r->resp_len);
            w->conn = c;
            r->resp = NULL;
            /* Straight into the socket when it takes it all (it almost always does): no write
             * request, so libuv does not re-arm the socket's epoll entry when it completes
             * (libuv 1.44 does an epoll_ctl for every finished uv_write). uv_try_write refuses
             * while earlier writes are queued, so the order holds. */
            int n = uv_try_write((uv_stream_t *)&c->tcp, &buf, 1);
            if (n == (int)buf.len) {
                free(w);
            } else if (n < 0 && n != UV_EAGAIN) {
                free(w);
                request_free(r);
                conn_close(c);
                return;
            } else {
                if (n > 0) {
                    buf.base += n;
                    buf.len -= (unsigned)n;
                }
                if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &buf, 1, on_write) != 0) {
                    free(w);
                    request_free(r);
                    conn_close(c);
                    return;
                }
                c->writes++;
            }
            if (r->close_after)
                c->want_close = 1;
        }
        request_free(r);
    }
    if (c->closing)
        return;
    if (c->want_close) {
        if (c->phase != PHASE_LINGER) /* lingering reads on to see the client's EOF */
            conn_read_off(c);
        conn_maybe_finish_close(c);
        return;
    }
    /* Room in the pipeline again: parse what was held back, then read on. */
    if (c->read_paused && c->queued < TC_SERVER_MAX_PIPELINE && !c->in_dispatch) {
        char *data = c->pending;
        size_t len = c->pending_len;
        c->pending = NULL;
        c->pending_len = 0;
        c->read_paused = 0;
        http_parser_pause(&c->parser, 0);
        conn_parse(c, data, len);
        free(data);
        return;
    }
    if (c->head == NULL && c->cur == NULL && c->phase == PHASE_BUSY) {
        c->phase = PHASE_WAIT_REQUEST;
        c->idle_state = 1;
        if (c->srv->draining && c->srv->inflight == 0) {
            c->want_close = 1;
            conn_maybe_finish_close(c);
            return;
        }
        conn_timer_start(c, c->srv->cfg.idle_timeout_ms);
    }
}

static size_t append_str(char *dst, const char *s, size_t n)
{
    memcpy(dst, s, n);
    return n;
}

#define append_lit(dst, lit) append_str((dst), (lit), sizeof(lit) - 1)

static size_t append_uint(char *dst, size_t v)
{
    char tmp[24];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0);
    for (size_t i = 0; i < n; i++)
        dst[i] = tmp[n - 1 - i];
    return n;
}

/* Builds the whole response into one buffer laid out as a write_req, so that flushing needs no
 * further allocation. */
static int request_build_response(tc_request *r, int status, const char *content_type,
                                  const tc_server_header *headers, size_t nheaders,
                                  const char *body, size_t body_len)
{
    tc_server *srv = r->srv;
    int head = r->dispatched && r->method == HTTP_HEAD;
    size_t cap = 256 + body_len;
    if (content_type != NULL)
        cap += strlen(content_type);
    for (size_t i = 0; i < nheaders; i++)
        cap += strlen(headers[i].name) + strlen(headers[i].value) + 4;
    write_req *w = malloc(sizeof(write_req) + cap);
    if (w == NULL)
        return TC_ENOMEM;
    char *p = w->data;
    server_update_time(srv);
    int close = !r->keep_alive || r->close_after || srv->draining || srv->closing;
    r->close_after = close ? 1 : 0;
    const char *reason = tc_http_reason(status);
    p += append_lit(p, "HTTP/1.1 ");
    p += append_uint(p, (unsigned)status);
    *p++ = ' ';
    p += append_str(p, reason, strlen(reason));
    p += append_lit(p, "\r\n");
    p += append_str(p, srv->date, srv->date_len);
    if (content_type != NULL) {
        p += append_lit(p, "Content-Type: ");
        p += append_str(p, content_type, strlen(content_type));
        p += append_lit(p, "\r\n");
    }
    p += append_lit(p, "Content-Length: ");
    p += append_uint(p, body_len);
    p += close ? append_lit(p, "\r\nConnection: close\r\n")
               : append_lit(p, "\r\nConnection: keep-alive\r\n");
    for (size_t i = 0; i < nheaders; i++) {
        p += append_str(p, headers[i].name, strlen(headers[i].name));
        p += append_lit(p, ": ");
        p += append_str(p, headers[i].value, strlen(headers[i].value));
        p += append_lit(p, "\r\n");
    }
    p += append_lit(p, "\r\n");
    if (!head && body_len > 0)
        p += append_str(p, body, body_len);
    r->resp = w->data;
    r->resp_len = (size_t)(p - w->data);
    r->status = status;
    return 0;
}

/* Common end of every request: bookkeeping, access log, then the queue decides what to send. */
static void request_finish(tc_request *r)
{
    tc_server *srv = r->srv;
    tc_conn *c = r->conn;
    r->finished = 1;
    if (r->dispatched)
        srv->inflight--;
    access_log(r);
    if (c == NULL) {
        request_free(r);
    } else if (!c->in_dispatch) {
        flush_responses(c);
    }
    if (srv->closing)
        server_maybe_free(srv);
    else if (srv->draining && srv->inflight == 0)
        server_check_drained(srv);
}

int tc_request_respond(tc_request *req, int status, const char *content_type,
                       const tc_server_header *headers, size_t nheaders, const char *body,
                       size_t body_len)
{
    if (req == NULL || req->finished)
        return TC_EINVAL;
    if (req->conn == NULL) {
        req->status = status;
        request_finish(req);
        return 0;
    }
    int err = request_build_response(req, status, content_type, headers, nheaders, body, body_len);
    if (err != 0) {
        req->drop = 1;
        req->status = 500;
    }
    request_finish(req);
    return err;
}

int tc_request_respond_json(tc_request *req, int status, const char *json)
{
    return tc_request_respond(req, status, "application/json", NULL, 0, json, strlen(json));
}

/* Writes s as the inside of a JSON string into dst (room for 6 bytes per input byte + 1). */
static size_t json_escape(char *dst, const char *s)
{
    char *p = dst;
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') {
            *p++ = '\\';
            *p++ = (char)ch;
        } else if (ch < 0x20) {
            p += sprintf(p, "\\u%04x", ch);
        } else {
            *p++ = (char)ch;
        }
    }
    *p = '\0';
    return (size_t)(p - dst);
}

/* Copies at most max bytes of s into dst, cutting at a UTF-8 character boundary. */
static void copy_utf8_prefix(char *dst, const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n > max) {
        n = max;
        while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
            n--; /* s[n] continues a character: cut before that character starts */
    }
    memcpy(dst, s, n);
    dst[n] = '\0';
}

int tc_request_respond_error(tc_request *req, int status, const char *code, const char *message)
{
    return tc_request_respond_error_with(req, status, code, message, NULL, 0);
}

int tc_request_respond_error_with(tc_request *req, int status, const char *code,
                                  const char *message, const tc_server_header *headers,
                                  size_t nheaders)
{
    char msg[TC_SERVER_MAX_ERROR_MESSAGE + 1];
    char esc[6 * TC_SERVER_MAX_ERROR_MESSAGE + 1];
    char body[sizeof(esc) + 128];
    if (req == NULL || req->finished)
        return TC_EINVAL;
    copy_utf8_prefix(msg, message != NULL ? message : tc_http_reason(status),
                     TC_SERVER_MAX_ERROR_MESSAGE);
    json_escape(esc, msg);
    int n = snprintf(body, sizeof(body), "{\"success\":false,\"error\":\"%s\",\"message\":\"%s\"}",
                     code, esc);
    tc_server_header extra[6];
    size_t nextra = 0;
    for (size_t i = 0; i < nheaders && i < 4; i++)
        extra[nextra++] = headers[i];
    if (status == 503 || status == 429)
        extra[nextra++] = (tc_server_header){"Retry-After", "1"};
    if (status == 405)
        extra[nextra++] = (tc_server_header){"Allow", "GET, HEAD"};
    if (status == 400 || status == 408 || status == 413 || status == 414 || status == 431)
        req->close_after = 1;
    return tc_request_respond(req, status, "application/json", extra, nextra, body,
                              (size_t)(n < (int)sizeof(body) ? n : (int)sizeof(body) - 1));
}

void tc_request_drop(tc_request *req, int reset)
{
    if (req == NULL || req->finished)
        return;
    req->drop = 1;
    req->reset = reset ? 1 : 0;
    req->status = 0;
    request_finish(req);
}

/* ---- request accessors ---------------------------------------------------------------------- */

tc_str tc_request_method(const tc_request *req)
{
    const char *m = http_method_str((enum http_method)req->method);
    return (tc_str){m, strlen(m)};
}

tc_str tc_request_target(const tc_request *req)
{
    return (tc_str){req->buf + req->target_off, req->target_len};
}

tc_str tc_request_path(const tc_request *req)
{
    return (tc_str){req->buf + req->target_off, req->path_len};
}

tc_str tc_request_query(const tc_request *req)
{
    return (tc_str){req->buf + req->query_off, req->query_len};
}

tc_str tc_request_body(const tc_request *req)
{
    return (tc_str){req->buf + req->body_off, req->body_len};
}

int tc_request_header(const tc_request *req, const char *name, tc_str *value)
{
    size_t n = strlen(name);
    for (unsigned i = 0; i < req->nhdrs; i++) {
        const tc_hdr_ref *h = &req->hdrs[i];
        if (h->name_len == n && strncasecmp(req->buf + h->name_off, name, n) == 0) {
            value->base = req->buf + h->value_off;
            value->len = h->value_len;
            return 1;
        }
    }
    return 0;
}

int tc_request_is_head(const tc_request *req)
{
    return req->method == HTTP_HEAD;
}

uv_loop_t *tc_request_loop(const tc_request *req)
{
    return req->srv->loop;
}

tc_server *tc_request_server(const tc_request *req)
{
    return req->srv;
}

uint64_t tc_request_ready_ms(const tc_request *req)
{
    return req->ready_ms;
}

uint64_t tc_request_ready_ns(const tc_request *req)
{
    return req->ready_ns;
}

int tc_request_aborted(const tc_request *req)
{
    return req->aborted;
}

void tc_request_on_abort(tc_request *req, tc_request_abort_cb cb, void *data)
{
    req->abort_cb = cb;
    req->abort_data = data;
}

void tc_request_set_data(tc_request *req, void *data)
{
    req->user = data;
}

void *tc_request_data(const tc_request *req)
{
    return req->user;
}

/* ---- connections ---------------------------------------------------------------------------- */

static void conn_free(tc_conn *c)
{
    tc_server *srv = c->srv;
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    srv->nconns--;
    if (c->counted)
        atomic_fetch_sub_explicit(srv->conn_count, 1, memory_order_relaxed);
    free(c->pending);
    free(c);
    if (srv->closing)
        server_maybe_free(srv);
    else
        server_check_drained(srv);
}

static void on_conn_handle_closed(uv_handle_t *h)
{
    tc_conn *c = h->data;
    if (--c->handles == 0)
        conn_free(c);
}

/* Hard close: every request still queued is aborted (its handler is told through the abort
 * callback and still finishes it), finished ones are freed, both handles are closed. */
static void conn_close(tc_conn *c)
{
    if (c->closing)
        return;
    if (c->in_dispatch) {
        /* conn_dispatch is walking the queue: it closes once the current handler returns. */
        c->close_deferred = 1;
        return;
    }
    c->closing = 1;
    tc_request *r = c->head;
    c->head = c->tail = NULL;
    c->queued = 0;
    if (c->cur != NULL) {
        request_free(c->cur);
        c->cur = NULL;
    }
    while (r != NULL) {
        tc_request *next = r->next;
        r->next = NULL;
        r->conn = NULL;
        if (r->finished || !r->dispatched) {
            request_free(r); /* answered, or never handed to the handler */
        } else {
            r->aborted = 1;
            if (r->abort_cb != NULL) {
                tc_request_abort_cb cb = r->abort_cb;
                r->abort_cb = NULL;
                cb(r, r->abort_data);
            }
        }
        r = next;
    }
    uv_timer_stop(&c->timer);
    if (c->want_reset)
        uv_tcp_close_reset(&c->tcp, on_conn_handle_closed);
    else
        uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_conn_handle_closed);
}

/* Appends a response the server itself makes (400, 408, 413, 414, 431, 503) at the tail and
 * stops reading: the connection closes after it. */
static void conn_queue_error(tc_conn *c, int status, const char *code, const char *message)
{
    tc_request *r = request_new(c);
    if (r == NULL) {
        conn_close(c);
        return;
    }
    r->keep_alive = 0;
    if (c->tail != NULL)
        c->tail->next = r;
    else
        c->head = r;
    c->tail = r;
    c->queued++;
    c->parse_error = 1;
    c->phase = PHASE_BUSY;
    uv_timer_stop(&c->timer);
    conn_read_off(c);
    tc_request_respond_error(r, status, code, message);
}

static void conn_parse_failed(tc_conn *c)
{
    int status = c->err_status ? c->err_status : 400;
    if (c->cur != NULL) {
        request_free(c->cur);
        c->cur = NULL;
    }
    char msg[96];
    const tc_server_config *cfg = &c->srv->cfg;
    switch (status) {
    case 413:
        (void)snprintf(msg, sizeof(msg), "request body is larger than %zu bytes", cfg->max_body);
        conn_queue_error(c, 413, "too_large", msg);
        break;
    case 414:
        (void)snprintf(msg, sizeof(msg), "request URI is longer than %zu bytes", cfg->max_uri);
        conn_queue_error(c, 414, "too_large", msg);
        break;
    case 431:
        (void)snprintf(msg, sizeof(msg), "request headers are larger than %zu bytes or %d fields",
                       cfg->max_headers, TC_SERVER_MAX_HEADER_COUNT);
        conn_queue_error(c, 431, "too_large", msg);
        break;
    case 503:
        conn_queue_error(c, 503, "overloaded", "out of memory");
        break;
    default:
        conn_queue_error(c, 400, "bad_request",
                         http_errno_description(HTTP_PARSER_ERRNO(&c->parser)));
        break;
    }
}

/* Hands every newly parsed request to the handler (or answers 503 while draining). */
static void conn_dispatch(tc_conn *c, tc_request *first)
{
    tc_server *srv = c->srv;
    for (tc_request *r = first; r != NULL && !c->closing && !c->close_deferred; r = r->next) {
        if (r->dispatched || r->finished)
            continue;
        if (srv->draining) {
            r->keep_alive = 0;
            tc_request_respond_error(r, 503, "shutting_down", "the server is shutting down");
            continue;
        }
        r->dispatched = 1;
        srv->inflight++;
        srv->cfg.handler(r, srv->cfg.handler_data);
    }
}

/* Holds bytes that arrive while the pipeline is full, stopping reads past TC_SERVER_MAX_HELD.
 * Returns 0, or -1 when out of memory. */
static int conn_hold(tc_conn *c, const char *data, size_t len)
{
    char *p = realloc(c->pending, c->pending_len + len);
    if (p == NULL)
        return -1;
    memcpy(p + c->pending_len, data, len);
    c->pending = p;
    c->pending_len += len;
    if (c->pending_len >= TC_SERVER_MAX_HELD)
        conn_read_off(c);
    return 0;
}

/* Parses bytes and dispatches the requests they complete. */
static void conn_parse(tc_conn *c, const char *data, size_t len)
{
    tc_request *before_tail = c->tail;
    c->in_dispatch = 1;
    size_t n = http_parser_execute(&c->parser, &parser_settings, data, len);
    enum http_errno err = HTTP_PARSER_ERRNO(&c->parser);
    if (err == HPE_PAUSED) {
        /* Pipeline full: hold the rest for later, and keep reading (bounded) so that a client
         * that leaves is still noticed. */
        c->read_paused = 1;
        if (n < len && conn_hold(c, data + n, len - n) != 0) {
            c->in_dispatch = 0;
            conn_close(c);
            return;
        }
    } else if (err != HPE_OK) {
        conn_parse_failed(c);
    } else if (c->parser.upgrade) {
        c->parse_error = 1; /* the rest of the stream is not HTTP */
        conn_read_off(c);
    } else {
        conn_read_on(c); /* it was off if held bytes had filled TC_SERVER_MAX_HELD */
    }
    conn_dispatch(c, before_tail != NULL ? before_tail->next : c->head);
    c->in_dispatch = 0;
    if (c->close_deferred)
        conn_close(c);
    else if (!c->closing)
        flush_responses(c);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    tc_conn *c = h->data;
    buf->base = c->srv->read_buf;
    buf->len = sizeof(c->srv->read_buf);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    tc_conn *c = s->data;
    if (nread == 0 || c->closing)
        return;
    if (nread < 0) {
        /* EOF or error: the client is gone. In-flight requests are aborted. */
        conn_close(c);
        return;
    }
    if (c->phase == PHASE_LINGER || c->parse_error)
        return; /* discard */
    if (c->read_paused) {
        if (conn_hold(c, buf->base, (size_t)nread) != 0)
            conn_close(c);
        return;
    }
    conn_parse(c, buf->base, (size_t)nread);
}

static void on_conn_timer(uv_timer_t *t)
{
    tc_conn *c = container_of(t, tc_conn, timer);
    if (c->phase == PHASE_READING || (c->phase == PHASE_WAIT_REQUEST && !c->idle_state)) {
        if (c->cur != NULL) {
            request_free(c->cur);
            c->cur = NULL;
        }
        char msg[96];
        (void)snprintf(msg, sizeof(msg), "request not complete within %llu ms",
                       (unsigned long long)c->srv->cfg.header_timeout_ms);
        conn_queue_error(c, 408, "timeout", msg);
        flush_responses(c);
    } else if (c->phase == PHASE_WAIT_REQUEST) {
        conn_close(c); /* idle keep-alive connection */
    }
}

static void on_connection(uv_stream_t *listener, int status)
{
    tc_server *srv = listener->data;
    if (status < 0)
        return;
    tc_conn *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return;
    c->srv = srv;
    uv_tcp_init(srv->loop, &c->tcp);
    uv_timer_init(srv->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->handles = 2;
    c->next = srv->conns;
    if (srv->conns != NULL)
        srv->conns->prev = c;
    srv->conns = c;
    srv->nconns++;
    if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    size_t count = atomic_fetch_add_explicit(srv->conn_count, 1, memory_order_relaxed);
    c->counted = 1;
    if (srv->cfg.max_connections > 0 && count >= srv->cfg.max_connections) {
        atomic_fetch_sub_explicit(srv->conn_count, 1, memory_order_relaxed);
        c->counted = 0;
        conn_queue_error(c, 503, "overloaded", "too many connections, retry later");
        flush_responses(c);
        return;
    }
    c->phase = PHASE_WAIT_REQUEST;
    conn_timer_start(c, srv->cfg.header_timeout_ms);
    conn_read_on(c);
    if (!c->reading)
        conn_close(c);
}

/* ---- the server ----------------------------------------------------------------------------- */

static void on_tick(uv_timer_t *t)
{
    tc_server *srv = t->data;
    server_update_time(srv);
    if (srv->cfg.access_log != NULL)
        (void)fflush(srv->cfg.access_log); /* best effort, as each line */
}

static int server_bind(tc_server *srv)
{
    struct sockaddr_storage ss;
    int family = AF_INET;
    if (uv_ip4_addr(srv->host, srv->port, (struct sockaddr_in *)&ss) != 0) {
        if (uv_ip6_addr(srv->host, srv->port, (struct sockaddr_in6 *)&ss) != 0)
            return TC_EINVAL;
        family = AF_INET6;
    }
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return tc_err_from_uv(uv_translate_sys_error(errno));
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (srv->cfg.reuseport)
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    socklen_t sl = family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
    if (bind(fd, (struct sockaddr *)&ss, sl) != 0) {
        /* The caller reports why, in the system's words (EADDRINUSE, EADDRNOTAVAIL, EACCES). */
        int e = errno;
        close(fd);
        return tc_err_from_uv(uv_translate_sys_error(e));
    }
    int err = uv_tcp_open(&srv->listener, fd);
    if (err != 0) {
        close(fd);
        return tc_err_from_uv(err);
    }
    err = uv_listen((uv_stream_t *)&srv->listener, TC_LISTEN_BACKLOG, on_connection);
    if (err != 0)
        return tc_err_from_uv(err);
    sl = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0)
        return TC_EIO;
    srv->port = ntohs(family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                        : ((struct sockaddr_in6 *)&ss)->sin6_port);
    return 0;
}

/* libuv runs close callbacks in no promised order, so the server is freed only once its own
 * handles and every connection are gone. */
static void server_maybe_free(tc_server *srv)
{
    /* Requests handed to the handler refer to the server until they are finished. */
    if (!srv->closing || srv->handles > 0 || srv->nconns > 0 || srv->inflight > 0)
        return;
    while (srv->free_reqs != NULL) {
        tc_request *r = srv->free_reqs;
        srv->free_reqs = r->next;
        free(r);
    }
    if (srv->close_cb != NULL)
        srv->close_cb(srv, srv->close_data);
    free(srv);
}

static void on_server_handle_closed(uv_handle_t *h)
{
    tc_server *srv = h->data;
    srv->handles--;
    server_maybe_free(srv);
}

int tc_server_new(tc_server **out, uv_loop_t *loop, const tc_server_config *cfg)
{
    if (out == NULL || loop == NULL || cfg == NULL || cfg->handler == NULL)
        return TC_EINVAL;
    if (cfg->host != NULL && strlen(cfg->host) >= sizeof(((tc_server *)0)->host))
        return TC_EINVAL;
    uv_once(&parser_settings_once, parser_settings_init);
    tc_server *srv = calloc(1, sizeof(*srv));
    if (srv == NULL)
        return TC_ENOMEM;
    srv->loop = loop;
    srv->cfg = *cfg;
    /* fits: the length was checked above */
    (void)snprintf(srv->host, sizeof(srv->host), "%s", cfg->host ? cfg->host : "127.0.0.1");
    srv->cfg.host = srv->host;
    srv->port = cfg->port;
    atomic_init(&srv->own_count, 0);
    srv->conn_count = cfg->conn_count != NULL ? cfg->conn_count : &srv->own_count;
    server_update_time(srv);
    uv_tcp_init(loop, &srv->listener);
    uv_timer_init(loop, &srv->tick);
    srv->listener.data = srv;
    srv->tick.data = srv;
    srv->handles = 2;
    int err = server_bind(srv);
    if (err != 0) {
        srv->closing = 1;
        uv_close((uv_handle_t *)&srv->listener, on_server_handle_closed);
        uv_close((uv_handle_t *)&srv->tick, on_server_handle_closed);
        return err;
    }
    srv->listening = 1;
    uv_timer_start(&srv->tick, on_tick, 1000, 1000);
    uv_unref((uv_handle_t *)&srv->tick);
    *out = srv;
    return 0;
}

int tc_server_port(const tc_server *srv)
{
    return srv->port;
}

size_t tc_server_connections(const tc_server *srv)
{
    return srv->nconns;
}

size_t tc_server_requests_in_flight(const tc_server *srv)
{
    return srv->inflight;
}

static void server_stop_listening(tc_server *srv)
{
    if (!srv->listening)
        return;
    srv->listening = 0;
    uv_close((uv_handle_t *)&srv->listener, on_server_handle_closed);
}

/* While draining: once nothing is in flight, every connection closes gracefully; once none is
 * left, the drained callback runs (once). */
static void server_check_drained(tc_server *srv)
{
    if (!srv->draining || srv->closing)
        return;
    if (srv->inflight == 0) {
        for (tc_conn *c = srv->conns; c != NULL; c = c->next) {
            if (!c->closing && !c->want_close && c->head == NULL && !c->in_dispatch) {
                c->want_close = 1;
                conn_read_off(c);
                conn_maybe_finish_close(c);
            }
        }
    }
    if (srv->nconns == 0 && srv->drained_cb != NULL) {
        tc_server_cb cb = srv->drained_cb;
        srv->drained_cb = NULL;
        cb(srv, srv->drained_data);
    }
}

void tc_server_drain(tc_server *srv, tc_server_cb drained_cb, void *data)
{
    if (srv->draining || srv->closing)
        return;
    srv->draining = 1;
    srv->drained_cb = drained_cb;
    srv->drained_data = data;
    server_stop_listening(srv);
    server_check_drained(srv);
}

void tc_server_close(tc_server *srv, tc_server_cb close_cb, void *data)
{
    if (srv->closing)
        return;
    srv->closing = 1;
    srv->close_cb = close_cb;
    srv->close_data = data;
    server_stop_listening(srv);
    for (tc_conn *c = srv->conns; c != NULL; c = c->next)
        conn_close(c);
    if (srv->cfg.access_log != NULL)
        (void)fflush(srv->cfg.access_log); /* best effort, as each line */
    uv_close((uv_handle_t *)&srv->tick, on_server_handle_closed);
}
