/*
 * The server's connections (see server.c for the design): accepting, reading into the server's
 * one buffer and feeding the parser, the per-connection timer (header, idle, linger), writing
 * finished responses from the head of the queue, and closing (lingering close, RST on demand).
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

#include "base/alloc.h"
#include "base/list.h"
#include "server_internal.h"

static void conn_parse(tc__srv_conn *c, const char *data, size_t len);
static void on_conn_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_conn_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);

static void conn_read_on(tc__srv_conn *c)
{
    if (!c->reading && uv_read_start((uv_stream_t *)&c->tcp, on_conn_alloc, on_conn_read) == 0)
        c->reading = 1;
}

void tc__srv_conn_read_off(tc__srv_conn *c)
{
    if (c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = 0;
    }
}

static void on_conn_timer(uv_timer_t *t);

/* One timer per connection: header deadline, idle deadline or linger, by phase. */
void tc__srv_conn_timer_start(tc__srv_conn *c, uint64_t ms)
{
    if (ms > 0)
        uv_timer_start(&c->timer, on_conn_timer, ms, 0);
}

/* ---- responses ------------------------------------------------------------------------------ */

static void on_write(uv_write_t *write_req, int status)
{
    tc__srv_write *w = tc__container_of(write_req, tc__srv_write, req);
    tc__srv_conn *c = w->conn;
    tc__free(w);
    c->writes--;
    if (status < 0 && !c->closing) {
        tc__srv_conn_close(c);
        return;
    }
    tc__srv_conn_maybe_finish_close(c);
}

static void on_linger_timeout(uv_timer_t *t)
{
    tc__srv_conn *c = tc__container_of(t, tc__srv_conn, timer);
    tc__srv_conn_close(c);
}

static void on_shutdown(uv_shutdown_t *shutdown_req, int status)
{
    tc__srv_conn *c = tc__container_of(shutdown_req, tc__srv_conn, shutdown_req);
    if (c->closing)
        return;
    if (status < 0) {
        tc__srv_conn_close(c);
        return;
    }
    /* FIN is out; keep reading (and discarding) until the client closes or the timer fires. */
    uv_timer_start(&c->timer, on_linger_timeout, TC__SRV_LINGER_MS, 0);
    conn_read_on(c);
}

/* Once every write has completed, a connection that wants to close does so: with RST right
 * away, or with FIN and a lingering read. */
void tc__srv_conn_maybe_finish_close(tc__srv_conn *c)
{
    if (c->closing || !c->want_close || c->writes > 0 || c->phase == TC__SRV_LINGER)
        return;
    if (c->want_reset) {
        tc__srv_conn_close(c); /* conn_close resets when want_reset is set */
        return;
    }
    c->phase = TC__SRV_LINGER;
    uv_timer_stop(&c->timer);
    if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, on_shutdown) != 0)
        tc__srv_conn_close(c);
}

/* Writes every finished response at the head of the queue, in order. */
void tc__srv_flush_responses(tc__srv_conn *c)
{
    tc_request *r;
    while ((r = tc__srv_queue_first(c)) != NULL && r->finished && !c->closing && !c->want_close) {
        tc__list_remove(&r->link);
        c->queued--;
        if (r->drop) {
            c->want_close = 1;
            c->want_reset = r->reset;
        } else if (r->resp != NULL) {
            tc__srv_write *w = (tc__srv_write *)(r->resp - offsetof(tc__srv_write, data));
            uv_buf_t buf = uv_buf_init(r->resp, (unsigned)r->resp_len);
            w->conn = c;
            r->resp = NULL;
            /* Straight into the socket when it takes it all (it almost always does): no write
             * request, so libuv does not re-arm the socket's epoll entry when it completes
             * (libuv 1.44 does an epoll_ctl for every finished uv_write). uv_try_write refuses
             * while earlier writes are queued, so the order holds. */
            int n = uv_try_write((uv_stream_t *)&c->tcp, &buf, 1);
            if (n == (int)buf.len) {
                tc__free(w);
            } else if (n < 0 && n != UV_EAGAIN) {
                tc__free(w);
                tc__srv_request_free(r);
                tc__srv_conn_close(c);
                return;
            } else {
                if (n > 0) {
                    buf.base += n;
                    buf.len -= (unsigned)n;
                }
                if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &buf, 1, on_write) != 0) {
                    tc__free(w);
                    tc__srv_request_free(r);
                    tc__srv_conn_close(c);
                    return;
                }
                c->writes++;
            }
            if (r->close_after)
                c->want_close = 1;
        }
        tc__srv_request_free(r);
    }
    if (c->closing)
        return;
    if (c->want_close) {
        if (c->phase != TC__SRV_LINGER) /* lingering reads on to see the client's EOF */
            tc__srv_conn_read_off(c);
        tc__srv_conn_maybe_finish_close(c);
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
        tc__free(data);
        return;
    }
    if (tc__list_empty(&c->queue) && c->cur == NULL && c->phase == TC__SRV_BUSY) {
        c->phase = TC__SRV_WAIT_REQUEST;
        c->idle_state = 1;
        if (c->srv->draining && c->srv->inflight == 0) {
            c->want_close = 1;
            tc__srv_conn_maybe_finish_close(c);
            return;
        }
        tc__srv_conn_timer_start(c, c->srv->cfg.idle_timeout_ms);
    }
}

/* ---- connections ---------------------------------------------------------------------------- */

static void conn_free(tc__srv_conn *c)
{
    tc_server *srv = c->srv;
    tc__list_remove(&c->link);
    srv->nconns--;
    if (c->counted)
        atomic_fetch_sub_explicit(srv->conn_count, 1, memory_order_relaxed);
    tc__free(c->pending);
    tc__free(c);
    if (srv->closing)
        tc__srv_maybe_free(srv);
    else
        tc__srv_check_drained(srv);
}

static void on_conn_handle_closed(uv_handle_t *h)
{
    tc__srv_conn *c = h->data;
    if (--c->handles == 0)
        conn_free(c);
}

/* Hard close: every request still queued is aborted (its handler is told through the abort
 * callback and still finishes it), finished ones are freed, both handles are closed. */
void tc__srv_conn_close(tc__srv_conn *c)
{
    if (c->closing)
        return;
    if (c->in_dispatch) {
        /* conn_dispatch is walking the queue: it closes once the current handler returns. */
        c->close_deferred = 1;
        return;
    }
    c->closing = 1;
    c->queued = 0;
    if (c->cur != NULL) {
        tc__srv_request_free(c->cur);
        c->cur = NULL;
    }
    /* Each request leaves the queue before its abort callback runs: whatever the callback does,
     * the queue is never walked again (flushing stops at closing). */
    tc_request *r;
    while ((r = tc__srv_queue_first(c)) != NULL) {
        tc__list_remove(&r->link);
        r->conn = NULL;
        if (r->finished || !r->dispatched) {
            tc__srv_request_free(r); /* answered, or never handed to the handler */
        } else {
            r->aborted = 1;
            if (r->abort_cb != NULL) {
                tc_request_abort_cb cb = r->abort_cb;
                r->abort_cb = NULL;
                /* lands in app/serve/cmd_serve_api.c on_client_gone (upstream.c on_work_abort) */
                cb(r, r->abort_data);
            }
        }
    }
    uv_timer_stop(&c->timer);
    if (c->want_reset)
        uv_tcp_close_reset(&c->tcp, on_conn_handle_closed);
    else
        uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_conn_handle_closed);
}

void tc__srv_queue_push(tc__srv_conn *c, tc_request *r)
{
    tc__list_push_back(&c->queue, &r->link);
    c->queued++;
}

void tc__srv_queue_error(tc__srv_conn *c, tc_request *r, int status, const char *code,
                         const char *message)
{
    if (r == NULL && (r = tc__srv_request_new(c)) == NULL) {
        tc__srv_conn_close(c);
        return;
    }
    r->keep_alive = 0;
    if (r->id_len == 0) /* its headers were not read whole: the client's id is not known */
        tc__srv_request_id_generate(r);
    tc__srv_queue_push(c, r);
    c->parse_error = 1;
    c->phase = TC__SRV_BUSY;
    uv_timer_stop(&c->timer);
    tc__srv_conn_read_off(c);
    tc_request_respond_error(r, status, code, message);
}

static void conn_parse_failed(tc__srv_conn *c)
{
    int status = c->err_status ? c->err_status : 400;
    tc_request *r = c->cur; /* what was read of it shows in the access log */
    c->cur = NULL;
    char msg[96];
    const tc_server_config *cfg = &c->srv->cfg;
    switch (status) {
    case 413:
        (void)snprintf(msg, sizeof(msg), "request body is larger than %zu bytes", cfg->max_body);
        tc__srv_queue_error(c, r, 413, "too_large", msg);
        break;
    case 414:
        (void)snprintf(msg, sizeof(msg), "request URI is longer than %zu bytes", cfg->max_uri);
        tc__srv_queue_error(c, r, 414, "too_large", msg);
        break;
    case 431:
        (void)snprintf(msg, sizeof(msg), "request headers are larger than %zu bytes or %d fields",
                       cfg->max_headers, TC__SRV_MAX_HEADER_COUNT);
        tc__srv_queue_error(c, r, 431, "too_large", msg);
        break;
    case 503:
        tc__srv_queue_error(c, r, 503, "overloaded", "out of memory");
        break;
    default:
        if (r != NULL)
            r->line_done = 0; /* malformed: the log shows none of it, however far it got */
        tc__srv_queue_error(c, r, 400, "bad_request",
                            http_errno_description(HTTP_PARSER_ERRNO(&c->parser)));
        break;
    }
}

/* The readiness probe (cfg.ready_path), answered by the server itself: 1 if r was it. */
static int conn_answer_ready(tc_server *srv, tc_request *r)
{
    const char *path = srv->cfg.ready_path;
    size_t n = path != NULL ? strlen(path) : 0;
    if (n == 0 || r->path_len != n || memcmp(r->buf + r->target_off, path, n) != 0)
        return 0;
    if (r->method != HTTP_GET && r->method != HTTP_HEAD)
        tc_request_respond_error(r, 405, "method_not_allowed", "only GET and HEAD are allowed");
    else if (srv->draining || !tc__srv_ready(srv))
        tc_request_respond_json(r, 503, "{\"status\":\"draining\"}");
    else
        tc_request_respond_json(r, 200, "{\"status\":\"ready\"}");
    return 1;
}

/* Hands every request queued after `after` to the handler (or answers 503 while draining). The
 * queue only grows meanwhile: responses and closes wait while c is in_dispatch. */
static void conn_dispatch(tc__srv_conn *c, const tc__link *after)
{
    tc_server *srv = c->srv;
    for (tc__link *l = after->next; l != &c->queue && !c->closing && !c->close_deferred;
         l = l->next) {
        tc_request *r = tc__container_of(l, tc_request, link);
        if (r->dispatched || r->finished)
            continue;
        if (conn_answer_ready(srv, r))
            continue;
        if (srv->draining) {
            r->keep_alive = 0;
            tc_request_respond_error(r, 503, "shutting_down", "the server is shutting down");
            continue;
        }
        r->dispatched = 1;
        tc__srv_take_log(r); /* tc_server_set_access_log: a request keeps its log */
        srv->inflight++;
        /* lands in app/serve/cmd_serve.c serve_handle (src/upstream/upstream.c on_request) */
        srv->cfg.handler(r, srv->cfg.handler_data);
    }
}

/* Holds bytes that arrive while the pipeline is full, stopping reads past TC__SRV_MAX_HELD.
 * Returns 0, or -1 when out of memory. */
static int conn_hold(tc__srv_conn *c, const char *data, size_t len)
{
    char *p = tc__realloc(c->pending, c->pending_len + len);
    if (p == NULL)
        return -1;
    memcpy(p + c->pending_len, data, len);
    c->pending = p;
    c->pending_len += len;
    if (c->pending_len >= TC__SRV_MAX_HELD)
        tc__srv_conn_read_off(c);
    return 0;
}

/* Parses bytes and dispatches the requests they complete. */
static void conn_parse(tc__srv_conn *c, const char *data, size_t len)
{
    const tc__link *before = c->queue.prev; /* the last request queued so far, or the head */
    c->in_dispatch = 1;
    /* calls back into server_request.c on_request_begin ... on_request_complete */
    size_t n = http_parser_execute(&c->parser, &tc__srv_parser_settings, data, len);
    enum http_errno err = HTTP_PARSER_ERRNO(&c->parser);
    if (err == HPE_PAUSED) {
        /* Pipeline full: hold the rest for later, and keep reading (bounded) so that a client
         * that leaves is still noticed. */
        c->read_paused = 1;
        if (n < len && conn_hold(c, data + n, len - n) != 0) {
            c->in_dispatch = 0;
            tc__srv_conn_close(c);
            return;
        }
    } else if (err != HPE_OK) {
        conn_parse_failed(c);
    } else if (c->parser.upgrade) {
        c->parse_error = 1; /* the rest of the stream is not HTTP */
        tc__srv_conn_read_off(c);
    } else {
        conn_read_on(c); /* it was off if held bytes had filled TC__SRV_MAX_HELD */
    }
    conn_dispatch(c, before);
    c->in_dispatch = 0;
    if (c->close_deferred)
        tc__srv_conn_close(c);
    else if (!c->closing)
        tc__srv_flush_responses(c);
}

static void on_conn_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    tc__srv_conn *c = h->data;
    buf->base = c->srv->read_buf;
    buf->len = sizeof(c->srv->read_buf);
}

static void on_conn_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    tc__srv_conn *c = stream->data;
    if (nread == 0 || c->closing)
        return;
    if (nread < 0) {
        /* EOF or error: the client is gone. In-flight requests are aborted. */
        tc__srv_conn_close(c);
        return;
    }
    if (c->phase == TC__SRV_LINGER || c->parse_error)
        return; /* discard */
    if (c->read_paused) {
        if (conn_hold(c, buf->base, (size_t)nread) != 0)
            tc__srv_conn_close(c);
        return;
    }
    conn_parse(c, buf->base, (size_t)nread);
}

static void on_conn_timer(uv_timer_t *t)
{
    tc__srv_conn *c = tc__container_of(t, tc__srv_conn, timer);
    if (c->phase == TC__SRV_READING || (c->phase == TC__SRV_WAIT_REQUEST && !c->idle_state)) {
        tc_request *r = c->cur;
        c->cur = NULL;
        char msg[96];
        (void)snprintf(msg, sizeof(msg), "request not complete within %llu ms",
                       (unsigned long long)c->srv->cfg.header_timeout_ms);
        tc__srv_queue_error(c, r, 408, "timeout", msg);
        tc__srv_flush_responses(c);
    } else if (c->phase == TC__SRV_WAIT_REQUEST) {
        tc__srv_conn_close(c); /* idle keep-alive connection */
    }
}

static void on_refuse_closed(uv_handle_t *h)
{
    tc_server *srv = h->data;
    srv->refusing = 0;
    srv->handles--;
    if (srv->accept_waiting && srv->listening) {
        /* The connection that found refuse busy: offered again (memory may be back by now). */
        srv->accept_waiting = 0;
        tc__srv_on_connection((uv_stream_t *)&srv->listener, 0);
    }
    tc__srv_maybe_free(srv);
}

/* No memory for a connection: it is accepted into the server's one spare handle and closed at
 * once, as nginx closes a connection it cannot allocate for. Returning without uv_accept would
 * leave it in libuv, which stops watching the listener until uv_accept is called: this worker
 * would never accept again while SO_REUSEPORT kept sending it connections. */
static void conn_refuse(tc_server *srv)
{
    if (srv->refusing) {
        srv->accept_waiting = 1; /* on_refuse_closed takes it; the listener waits till then */
        return;
    }
    uv_tcp_init(srv->loop, &srv->refuse);
    srv->refuse.data = srv;
    srv->refusing = 1;
    srv->handles++;
    if (uv_accept((uv_stream_t *)&srv->listener, (uv_stream_t *)&srv->refuse) == 0)
        srv->stats.rejected_no_memory++;
    uv_close((uv_handle_t *)&srv->refuse, on_refuse_closed);
}

void tc__srv_on_connection(uv_stream_t *listener, int status)
{
    tc_server *srv = listener->data;
    if (status < 0)
        return;
    tc__srv_conn *c = tc__calloc(1, sizeof(*c));
    if (c == NULL) {
        conn_refuse(srv);
        return;
    }
    c->srv = srv;
    uv_tcp_init(srv->loop, &c->tcp);
    uv_timer_init(srv->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->handles = 2;
    tc__list_init(&c->queue);
    tc__list_push_back(srv->conns.next, &c->link); /* first: the newest is closed first */
    srv->nconns++;
    if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0) {
        tc__srv_conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    if (srv->cfg.access_log != NULL) /* only the log shows it: no system call without one */
        tc__srv_conn_client(c);
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    size_t count = atomic_fetch_add_explicit(srv->conn_count, 1, memory_order_relaxed);
    c->counted = 1;
    if (srv->cfg.max_connections > 0 && count >= srv->cfg.max_connections) {
        atomic_fetch_sub_explicit(srv->conn_count, 1, memory_order_relaxed);
        c->counted = 0;
        srv->stats.rejected_over_limit++;
        tc__srv_queue_error(c, NULL, 503, "overloaded", "too many connections, retry later");
        tc__srv_flush_responses(c);
        return;
    }
    c->phase = TC__SRV_WAIT_REQUEST;
    tc__srv_conn_timer_start(c, srv->cfg.header_timeout_ms);
    conn_read_on(c);
    if (!c->reading)
        tc__srv_conn_close(c);
}
