/*
 * The server's connections (see server.c for the design): accepting, reading into the server's
 * one buffer and feeding the parser (or holding the bytes while it is paused), the
 * per-connection timer (header, body, idle, linger), writing finished responses from the head of
 * the queue (and the streamed one there as it is written), and closing (lingering close, RST on
 * demand).
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
    c->write_bytes -= w->len;
    tc__free(w);
    c->writes--;
    if (status < 0 && !c->closing) {
        tc__srv_conn_close(c);
        return;
    }
    if (c->armed > 0 && !c->closing)
        tc__srv_conn_notify_writable(c); /* fewer bytes wait now */
    tc__srv_conn_maybe_finish_close(c);
}

int tc__srv_conn_submit(tc__srv_conn *c, tc__srv_write *w)
{
    uv_buf_t buf = uv_buf_init(w->data, (unsigned)w->len);
    w->conn = c;
    int err = uv_write(&w->req, (uv_stream_t *)&c->tcp, &buf, 1, on_write);
    if (err != 0) {
        tc__free(w);
        return err;
    }
    c->writes++;
    c->write_bytes += w->len;
    return 0;
}

/* The socket failed under a handler's write: the connection closes from the loop, so that the
 * abort callbacks never run inside the write. */
static void conn_fail_later(tc__srv_conn *c)
{
    c->close_deferred = 1;
    tc__srv_conn_post(c);
}

int tc__srv_conn_send(tc__srv_conn *c, const uv_buf_t *bufs, unsigned nbufs, size_t total)
{
    size_t done = 0;
    if (c->writes == 0) { /* nothing queued before: the socket may take it all at once */
        int n = uv_try_write((uv_stream_t *)&c->tcp, bufs, nbufs);
        if (n >= 0 && (size_t)n == total)
            return 0;
        if (n < 0 && n != UV_EAGAIN) {
            conn_fail_later(c);
            return TC_ECANCELED;
        }
        if (n > 0)
            done = (size_t)n;
    }
    tc__srv_write *w = tc__malloc(sizeof(*w) + total - done);
    if (w == NULL)
        return TC_ENOMEM;
    w->len = total - done;
    w->next = NULL;
    char *p = w->data;
    for (unsigned i = 0; i < nbufs; i++) { /* the bytes after the first `done` */
        size_t skip = done < bufs[i].len ? done : bufs[i].len;
        done -= skip;
        memcpy(p, bufs[i].base + skip, bufs[i].len - skip);
        p += bufs[i].len - skip;
    }
    if (tc__srv_conn_submit(c, w) != 0) {
        conn_fail_later(c);
        return TC_ECANCELED;
    }
    return 0;
}

/* Hands what r wrote while it waited behind earlier responses to the socket, in order. Returns
 * 0, or -1 when the connection was closed. */
static int conn_submit_out(tc__srv_conn *c, tc_request *r)
{
    tc__srv_stream *st = &r->st;
    while (st->out != NULL) {
        tc__srv_write *w = st->out;
        st->out = w->next;
        st->out_bytes -= w->len;
        if (tc__srv_conn_submit(c, w) != 0) {
            tc__srv_conn_close(c);
            return -1;
        }
    }
    st->out_last = NULL;
    return 0;
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

/* Writes every finished response at the head of the queue, in order. An unfinished request
 * reaching the head goes live: what it streamed meanwhile goes out, and its writes go straight to
 * the socket from then on; the requests behind it wait. */
void tc__srv_flush_responses(tc__srv_conn *c)
{
    tc_request *r;
    while ((r = tc__srv_queue_first(c)) != NULL && !c->closing && !c->want_close &&
           !c->close_deferred) {
        if (!r->finished) {
            if (r->streamed && conn_submit_out(c, r) != 0)
                return;
            r->live = 1;
            break;
        }
        tc__list_remove(&r->link);
        c->queued--;
        if (r->streamed && conn_submit_out(c, r) != 0) {
            tc__srv_request_free(r);
            return;
        }
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
                w->len = buf.len;
                if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &buf, 1, on_write) != 0) {
                    tc__free(w);
                    tc__srv_request_free(r);
                    tc__srv_conn_close(c);
                    return;
                }
                c->writes++;
                c->write_bytes += buf.len;
            }
            if (r->close_after)
                c->want_close = 1;
        } else if (r->close_after || r->cut) { /* a streamed response */
            c->want_close = 1;
            c->want_reset = r->cut && r->until_close; /* the close is the end: a reset is not */
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
    /* Room in the pipeline again, or a streamed body read again: parse what was held back. */
    if (c->read_paused && !c->in_dispatch && tc__srv_conn_can_parse(c)) {
        int held = c->pending_len > c->pending_off;
        tc__srv_conn_unpause(c);
        if (held)
            return; /* the parse flushed */
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
    tc__list_remove(&c->post_link);
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
        if (!c->cur->streaming) /* a streaming one is in the queue too */
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
            tc__srv_stream_gone(r); /* its abort callback, and a streamed body's reader */
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
    if (c->cur != NULL && c->cur->streaming) {
        /* Its head was handed over already: the handler hears of it and answers. */
        tc__srv_stream_body_fail(c, status == 431 ? TC_ETOOLARGE : TC_EPROTO);
        return;
    }
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
    if (!tc__srv_is_ready_path(srv, r))
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
static inline void conn_dispatch(tc__srv_conn *c, const tc__link *after)
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
        tc__srv_hand_over(srv, r);
    }
}

void tc__srv_hand_over(tc_server *srv, tc_request *r)
{
    r->dispatched = 1;
    tc__srv_take_log(r); /* tc_server_set_access_log: a request keeps its log */
    srv->inflight++;
    /* lands in app/serve/cmd_serve.c serve_handle (src/upstream/upstream.c on_request) */
    srv->cfg.handler(r, srv->cfg.handler_data);
}

void tc__srv_conn_dispatch(tc__srv_conn *c, const tc__link *after)
{
    conn_dispatch(c, after);
}

/* Holds bytes that arrive while the parser is paused, stopping reads past TC__SRV_MAX_HELD.
 * Returns 0, or -1 when out of memory. */
static int conn_hold(tc__srv_conn *c, const char *data, size_t len)
{
    if (c->pending_off > 0) { /* what was parsed of them goes first */
        c->pending_len -= c->pending_off;
        memmove(c->pending, c->pending + c->pending_off, c->pending_len);
        c->pending_off = 0;
    }
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

int tc__srv_conn_can_parse(const tc__srv_conn *c)
{
    const tc_request *r = c->cur;
    if (r != NULL && r->streaming) /* its head is parsed: a body waits for its reader */
        return !r->body_pending || (r->body_reading && !r->body_paused);
    return c->queued < TC_SERVER_MAX_PIPELINE;
}

static inline void conn_settle(tc__srv_conn *c)
{
    if (c->close_deferred)
        tc__srv_conn_close(c);
    else if (!c->closing)
        tc__srv_flush_responses(c);
}

void tc__srv_conn_settle(tc__srv_conn *c)
{
    conn_settle(c);
}

/* Runs the parser over bytes and dispatches the requests they complete; returns how many it
 * took (fewer than len when it paused: the pipeline is full, or a streamed body is not being
 * read). The caller settles the connection afterwards. */
static inline size_t conn_execute(tc__srv_conn *c, const char *data, size_t len)
{
    const tc__link *before = c->queue.prev; /* the last request queued so far, or the head */
    size_t n = 0;
    c->in_dispatch = 1;
    c->in_parser = 1;
    for (;;) {
        /* A streamed message has callbacks of its own (server_stream.c): the parser pauses at
         * its head and at its end to change them, and goes on if it may. */
        const http_parser_settings *set = c->cur != NULL && c->cur->streaming
                                              ? &tc__srv_stream_parser_settings
                                              : &tc__srv_parser_settings;
        /* calls back into server_request.c on_request_begin ... on_request_complete, or
         * server_stream.c's own for a streamed message */
        n += http_parser_execute(&c->parser, set, data + n, len - n);
        int change = c->change_settings;
        c->change_settings = 0;
        if (!change || HTTP_PARSER_ERRNO(&c->parser) != HPE_PAUSED || c->closing ||
            c->close_deferred || c->parse_error || !tc__srv_conn_can_parse(c) ||
            (c->parser.upgrade && c->cur == NULL))
            break;
        http_parser_pause(&c->parser, 0);
        if (n == len)
            break;
    }
    c->in_parser = 0;
    enum http_errno err = HTTP_PARSER_ERRNO(&c->parser);
    if (err != HPE_OK && err != HPE_PAUSED) {
        conn_parse_failed(c);
    } else {
        if (err == HPE_PAUSED)
            c->read_paused = 1;
        if (c->parser.upgrade && c->cur == NULL) { /* (set from its head on: wait for its end) */
            c->parse_error = 1;                    /* the rest of the stream is not HTTP */
            tc__srv_conn_read_off(c);
        }
    }
    conn_dispatch(c, before);
    c->in_dispatch = 0;
    return n;
}

/* Parses bytes just read. What the parser leaves when it pauses is held for later, and reading
 * goes on (bounded) so that a client that leaves is still noticed. */
static void conn_parse(tc__srv_conn *c, const char *data, size_t len)
{
    size_t n = conn_execute(c, data, len);
    if (c->read_paused) {
        if (!c->parse_error && n < len && conn_hold(c, data + n, len - n) != 0) {
            tc__srv_conn_close(c);
            return;
        }
    } else if (!c->parse_error) {
        conn_read_on(c); /* it was off if held bytes had filled TC__SRV_MAX_HELD */
    }
    conn_settle(c);
}

/* Parses the held bytes in place; what the parser leaves when it pauses again stays held. */
static void conn_parse_held(tc__srv_conn *c)
{
    size_t n = conn_execute(c, c->pending + c->pending_off, c->pending_len - c->pending_off);
    c->pending_off += n;
    if (c->pending_off == c->pending_len || c->parse_error) {
        tc__free(c->pending);
        c->pending = NULL;
        c->pending_len = c->pending_off = 0;
    }
    if (!c->read_paused && !c->parse_error)
        conn_read_on(c);
    tc__srv_conn_settle(c);
}

void tc__srv_conn_unpause(tc__srv_conn *c)
{
    if (!c->read_paused || c->in_dispatch || c->closing || c->close_deferred || c->parse_error ||
        !tc__srv_conn_can_parse(c))
        return;
    c->read_paused = 0;
    http_parser_pause(&c->parser, 0);
    if (c->pending_len > c->pending_off)
        conn_parse_held(c);
    else
        conn_read_on(c);
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
    } else if (c->phase == TC__SRV_BODY && c->cur != NULL) {
        tc__srv_stream_body_fail(c, TC_ETIMEDOUT);
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
    tc__list_init(&c->post_link);
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
