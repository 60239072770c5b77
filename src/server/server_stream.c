/*
 * Streaming in the server (see server.c for the design, docs/server.md for the rules): a
 * request handed to the handler at the end of its head, its body read in pieces as it arrives,
 * and a response whose body is written in pieces, both with back-pressure.
 *
 * The one idea: nothing new carries the bytes. A streamed request body is the parser's on_body
 * callbacks passed on as they come (a streamed message has callbacks of its own, below, so the
 * whole-body ones never test for it), and back-pressure is the parser's pause: while the handler
 * does not read, the parser stops, the connection holds what arrives (TC__SRV_MAX_HELD, then it
 * stops reading the socket), and reading on is the same "unpause" that a full pipeline uses. A
 * streamed response is the queue's rule applied to pieces: the request at the head of the queue
 * is "live" and its writes go straight to the socket; one behind it keeps its pieces in order in
 * its own out list until it reaches the head. Every callback into the handler runs with the
 * connection in_dispatch, so what the handler finishes or closes meanwhile waits until it returns;
 * the callbacks that the handler arms (a body's end, a writable callback) and the close after a
 * failed write run from the server's post handle (uv_idle), never inside the call that armed them.
 */
#include <http_parser.h>
#include <string.h>
#include <strings.h>

#include "base/alloc.h"
#include "base/fmt.h"
#include "server_internal.h"

/* ---- callbacks into the handler ------------------------------------------------------------- */

/* Callbacks run with c in_dispatch (responses and closes wait): returns the state to restore. */
static int stream_enter(tc__srv_conn *c)
{
    int was = c->in_dispatch;
    c->in_dispatch = 1;
    return was;
}

/* Restores in_dispatch; the outermost caller then does what the callbacks asked for. */
static void stream_leave(tc__srv_conn *c, int was)
{
    c->in_dispatch = was ? 1 : 0;
    if (!was)
        tc__srv_conn_settle(c);
}

void tc__srv_stream_init(tc_request *r)
{
    if (!r->streamed) {
        memset(&r->st, 0, sizeof(r->st));
        r->streamed = 1;
    }
}

void tc__srv_stream_free(tc_request *r)
{
    tc__free(r->st.head); /* held when the client went or the connection closed */
    r->st.head = NULL;
    while (r->st.out != NULL) { /* written while not at the queue head, never sent */
        tc__srv_write *w = r->st.out;
        r->st.out = w->next;
        tc__free(w);
    }
}

/* The last call of r's body callback. */
static void body_last(tc_request *r, int status)
{
    tc_request_body_cb cb = r->st.body_cb;
    r->body_reading = 0;
    r->body_end_due = 0;
    cb(r, status, NULL, 0, r->st.body_arg);
}

static void writable_fire(tc_request *r, int status)
{
    tc_request_writable_cb cb = r->st.writable_cb;
    r->st.writable_cb = NULL;
    if (r->conn != NULL)
        r->conn->armed--;
    cb(r, status, r->st.writable_arg);
}

/* r's connection while it can still take bytes, else NULL (the client is gone, or the
 * connection is closing). */
static tc__srv_conn *request_conn(const tc_request *r)
{
    tc__srv_conn *c = r->conn;
    return c != NULL && !c->closing && !c->close_deferred ? c : NULL;
}

static size_t request_pending(const tc_request *r)
{
    if (r->conn == NULL)
        return 0;
    if (!r->streamed)
        return r->conn->write_bytes;
    return r->st.out_bytes + (r->st.head != NULL ? r->st.head->len : 0) + r->conn->write_bytes;
}

static int writable_armed(const tc_request *r)
{
    return r->streamed && r->st.writable_cb != NULL;
}

static int writable_due(const tc_request *r)
{
    return writable_armed(r) && request_pending(r) <= r->st.writable_at;
}

/* Runs every callback due on c, in queue order, each request once: one armed again meanwhile
 * is due from the next pass (it posted c). The queue holds still: nothing is freed or parsed
 * while c is in_dispatch. */
static void conn_run_due(tc__srv_conn *c)
{
    for (tc__link *l = c->queue.next; l != &c->queue && !c->closing && !c->close_deferred;
         l = l->next) {
        tc_request *r = tc__container_of(l, tc_request, link);
        if (r->body_end_due && r->body_reading && !r->body_paused)
            body_last(r, 0);
        if (writable_due(r))
            writable_fire(r, 0);
    }
}

void tc__srv_conn_notify_writable(tc__srv_conn *c)
{
    int was = stream_enter(c);
    conn_run_due(c);
    stream_leave(c, was);
}

/* ---- the post handle: work for the next loop iteration -------------------------------------- */

void tc__srv_conn_post(tc__srv_conn *c)
{
    tc_server *srv = c->srv;
    c->post_head = 0; /* posted for more than a held head: it runs whatever the head does */
    if (c->posted || c->closing)
        return;
    c->posted = 1;
    if (tc__list_empty(&srv->posted))
        uv_idle_start(&srv->post, tc__srv_on_post);
    tc__list_push_back(&srv->posted, &c->post_link);
}

/* Posts c so that r's held head goes out at the latest one loop turn later. */
static void head_post(tc__srv_conn *c)
{
    if (c->posted)
        return;
    tc__srv_conn_post(c);
    c->post_head = c->posted;
}

/* The held head went out with the body behind it: a post made only for it is taken back, so
 * that the loop does not turn once more for nothing. */
static void head_unpost(tc__srv_conn *c)
{
    if (!c->posted || !c->post_head)
        return;
    c->posted = 0;
    c->post_head = 0;
    tc__list_remove(&c->post_link);
    if (tc__list_empty(&c->srv->posted))
        uv_idle_stop(&c->srv->post);
}

static int request_send(tc_request *r, const uv_buf_t *bufs, unsigned nbufs, size_t total);

/* Sends r's held head, if any, alone. Returns 0 or what request_send does. */
static int head_flush(tc_request *r)
{
    return r->streamed && r->st.head != NULL ? request_send(r, NULL, 0, 0) : 0;
}

static void conn_run_posted(tc__srv_conn *c)
{
    if (c->closing)
        return;
    c->post_head = 0;
    for (tc__link *l = c->queue.next; l != &c->queue && !c->close_deferred; l = l->next)
        (void)head_flush(tc__container_of(l, tc_request, link)); /* a failure closes c later */
    if (!c->close_deferred) {
        c->in_dispatch = 1;
        conn_run_due(c);
        c->in_dispatch = 0;
    }
    tc__srv_conn_settle(c); /* the close asked for, or the flush, which unpauses the parser */
}

void tc__srv_on_post(uv_idle_t *h)
{
    tc_server *srv = h->data;
    tc__link batch; /* what was posted so far: a connection posted meanwhile waits for the next */
    tc__list_replace(&srv->posted, &batch);
    uv_idle_stop(h);
    tc__link *l;
    while ((l = tc__list_first(&batch)) != NULL) {
        tc__srv_conn *c = tc__container_of(l, tc__srv_conn, post_link);
        tc__list_remove(l);
        c->posted = 0;
        conn_run_posted(c);
    }
}

/* ---- the request body ----------------------------------------------------------------------- */

static int header_is(const tc_request *r, const char *name, const char *value)
{
    tc_str v;
    size_t n = strlen(value);
    return tc_request_header(r, name, &v) && v.len == n && strncasecmp(v.base, value, n) == 0;
}

int tc__srv_stream_take(tc__srv_conn *c, http_parser *hp, tc_request *r)
{
    tc_server *srv = c->srv;
    tc__srv_request_split_target(r);
    /* The server's own answers (readiness, shutting down) come from the whole-body path. */
    if (srv->draining || tc__srv_is_ready_path(srv, r) ||
        !srv->cfg.head_filter(r, srv->cfg.handler_data))
        return 0;
    /* Requests completed earlier in this read reach the handler first, in arrival order. */
    tc__srv_conn_dispatch(c, &c->queue);
    if (c->closing || c->close_deferred) {
        http_parser_pause(hp, 1); /* r is still c->cur: the close frees it */
        return 1;
    }
    int http11 = hp->http_major > 1 || (hp->http_major == 1 && hp->http_minor >= 1);
    int chunked = (hp->flags & F_CHUNKED) != 0;
    int has_length = (hp->flags & F_CONTENTLENGTH) != 0;
    tc__srv_stream_init(r);
    r->streaming = 1;
    r->keep_alive = http_should_keep_alive(hp) && !hp->upgrade;
    r->st.body_length = chunked      ? TC_SERVER_LENGTH_UNKNOWN
                        : has_length ? (int64_t)hp->content_length
                                     : 0;
    r->body_pending = !hp->upgrade && (chunked || (has_length && hp->content_length > 0));
    r->expect_continue = http11 && header_is(r, "Expect", "100-continue");
    /* A streaming request's deadline counts from its head. */
    tc__srv_mark_ready(r, srv->loop);
    tc__srv_queue_push(c, r);
    c->phase = r->body_pending ? TC__SRV_BODY : TC__SRV_BUSY;
    uv_timer_stop(&c->timer);  /* the body timer runs only while the body is read */
    tc__srv_hand_over(srv, r); /* like a whole request */
    /* The parser stops here to take the body's callbacks, and goes on at once if the handler
     * started reading (conn_execute). */
    c->change_settings = 1;
    http_parser_pause(hp, 1);
    return 1;
}

/* The body timer: the longest wait for the next bytes of a body being read. The connection has
 * one timer for all its phases, so the body's touches it only in the body phase: a connection
 * closing after an earlier answer (LINGER) keeps its linger timer, whatever the body does. */
static void body_timer_start(tc__srv_conn *c)
{
    if (c->phase == TC__SRV_BODY)
        tc__srv_conn_timer_start(c, c->srv->cfg.body_timeout_ms);
}

/* The body phase is over (the body ended, failed or was abandoned). */
static void body_phase_end(tc__srv_conn *c)
{
    if (c->phase == TC__SRV_BODY) {
        uv_timer_stop(&c->timer);
        c->phase = TC__SRV_BUSY;
    }
}

/* The parser stops for good on c's current streamed body; the connection closes after the
 * response (body_pending stays set: its head says Connection: close). */
static void body_abandon(tc__srv_conn *c)
{
    c->cur = NULL;
    c->parse_error = 1;
    if (c->in_parser)
        http_parser_pause(&c->parser, 1);
    tc__srv_conn_read_off(c);
    body_phase_end(c);
}

/* ---- the parser callbacks of a streamed body ---- */

static int stream_on_body(http_parser *hp, const char *at, size_t len)
{
    tc__srv_conn *c = hp->data;
    tc_request *r = c->cur;
    if (!r->body_reading) { /* the parser runs on a streamed body only while it is read */
        http_parser_pause(hp, 1);
        return 0;
    }
    if (len > r->st.body_limit - r->st.body_read) {
        tc__srv_stream_body_fail(c, TC_ETOOLARGE);
        return 0;
    }
    r->st.body_read += len;
    body_timer_start(c);
    r->st.body_cb(r, 0, at, len, r->st.body_arg);
    if (!tc__srv_conn_can_parse(c) || c->close_deferred || c->closing)
        http_parser_pause(hp, 1); /* paused (or finished) inside the callback */
    return 0;
}

/* A trailer field or value: dropped, its bytes bounded with the head's by max_headers. */
static int stream_on_trailer(http_parser *hp, const char *at, size_t len)
{
    tc__srv_conn *c = hp->data;
    tc_request *r = c->cur;
    (void)at;
    r->header_bytes += len;
    if (r->header_bytes > c->srv->cfg.max_headers) {
        c->err_status = 431;
        return -1;
    }
    return 0;
}

static int stream_on_end(http_parser *hp)
{
    tc__srv_conn *c = hp->data;
    tc_request *r = c->cur;
    c->cur = NULL;
    r->body_pending = 0;
    body_phase_end(c);
    if (r->body_reading)
        body_last(r, 0);
    /* Back to the callbacks of a new request (conn_execute goes on if it may). */
    c->change_settings = 1;
    http_parser_pause(hp, 1);
    return 0;
}

void tc__srv_stream_settings(http_parser_settings *set)
{
    http_parser_settings_init(set);
    set->on_header_field = stream_on_trailer;
    set->on_header_value = stream_on_trailer;
    set->on_body = stream_on_body;
    set->on_message_complete = stream_on_end;
}

void tc__srv_stream_body_fail(tc__srv_conn *c, int status)
{
    tc_request *r = c->cur;
    r->keep_alive = 0;
    body_abandon(c);
    /* The parser runs on a body only while it is read, so its reader is there to be told. */
    if (r->body_reading) {
        int was = stream_enter(c);
        body_last(r, status);
        stream_leave(c, was);
    }
}

void tc__srv_stream_gone(tc_request *r)
{
    r->notifying = 1;
    if (r->body_reading)
        body_last(r, TC_ECANCELED);
    if (!r->finished && writable_armed(r))
        writable_fire(r, TC_ECANCELED);
    if (!r->finished && r->abort_cb != NULL) {
        tc_request_abort_cb cb = r->abort_cb;
        r->abort_cb = NULL;
        /* lands in app/serve/cmd_serve_api.c on_client_gone (upstream.c on_work_abort) */
        cb(r, r->abort_data);
    }
    r->notifying = 0;
    if (r->finished) /* finished by one of the callbacks: left for us to free */
        tc__srv_request_free(r);
}

void tc__srv_stream_finish(tc_request *r)
{
    tc__srv_conn *c = r->conn;
    if (c == NULL)
        return; /* the connection's close cancelled everything already */
    if (r->body_pending && c->cur == r) {
        body_abandon(c); /* its body was not read to its end: never read the rest */
        r->close_after = 1;
    }
    if (r->body_reading || r->st.writable_cb != NULL) {
        int was = stream_enter(c);
        if (r->body_reading)
            body_last(r, TC_ECANCELED);
        if (r->st.writable_cb != NULL)
            writable_fire(r, TC_ECANCELED);
        c->in_dispatch = was ? 1 : 0; /* request_finish settles the connection */
    }
}

int tc_request_is_streaming(const tc_request *r)
{
    return r->streaming;
}

int64_t tc_request_body_length(const tc_request *r)
{
    return r->streaming ? r->st.body_length : (int64_t)r->body_len;
}

/* Queues bytes of r's response, behind its held head if there is one: straight out when r is
 * live, else at the end of its out list (copied). Returns 0, TC_ENOMEM or TC_ECANCELED. */
static int request_send(tc_request *r, const uv_buf_t *bufs, unsigned nbufs, size_t total)
{
    tc__srv_conn *c = r->conn;
    tc__srv_stream *st = &r->st;
    if (r->streamed && st->head != NULL) {
        uv_buf_t all[4]; /* the head, then at most a chunk's size, its bytes and its CRLF */
        tc__srv_write *head = st->head;
        all[0] = uv_buf_init(head->data, (unsigned)head->len);
        for (unsigned i = 0; i < nbufs && i < 3; i++)
            all[i + 1] = bufs[i];
        st->head = NULL;
        head_unpost(c);
        int err = tc__srv_conn_send(c, all, nbufs + 1, head->len + total);
        tc__free(head);
        return err;
    }
    if (r->live)
        return tc__srv_conn_send(c, bufs, nbufs, total);
    tc__srv_write *w = tc__malloc(sizeof(*w) + total);
    if (w == NULL)
        return TC_ENOMEM;
    w->len = total;
    w->next = NULL;
    char *p = w->data;
    for (unsigned i = 0; i < nbufs; i++) {
        memcpy(p, bufs[i].base, bufs[i].len);
        p += bufs[i].len;
    }
    if (st->out_last != NULL)
        st->out_last->next = w;
    else
        st->out = w;
    st->out_last = w;
    st->out_bytes += total;
    return 0;
}

int tc_request_read_body(tc_request *r, uint64_t limit, tc_request_body_cb cb, void *arg)
{
    if (r == NULL || cb == NULL || r->finished || !r->streaming || r->body_started)
        return TC_EINVAL;
    tc__srv_conn *c = request_conn(r);
    if (c == NULL)
        return TC_ECANCELED;
    if (r->st.body_length > 0 && (uint64_t)r->st.body_length > limit)
        return TC_ETOOLARGE;
    if (r->body_pending && r->expect_continue && !r->head_sent) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        uv_buf_t b = uv_buf_init((char *)cont, sizeof(cont) - 1);
        int err = request_send(r, &b, 1, b.len);
        if (err != 0)
            return err;
    }
    r->body_started = 1;
    r->body_reading = 1;
    r->st.body_limit = limit;
    r->st.body_cb = cb;
    r->st.body_arg = arg;
    if (!r->body_pending)
        r->body_end_due = 1; /* a body already read (or none): its end comes from the loop */
    else if (c->cur == r)
        body_timer_start(c);
    if (!c->in_parser)
        tc__srv_conn_post(c); /* the parser, paused before the body, runs again from the loop */
    return 0;
}

void tc_request_body_pause(tc_request *r)
{
    tc__srv_conn *c = r->conn;
    if (!r->body_reading || r->body_paused || c == NULL)
        return;
    r->body_paused = 1;
    if (c->cur == r) {
        if (c->phase == TC__SRV_BODY)
            uv_timer_stop(&c->timer); /* the client is not the one who is late */
        if (!c->in_parser)
            c->read_paused = 1; /* in the parser, its body callback pauses it on return */
    }
}

void tc_request_body_resume(tc_request *r)
{
    tc__srv_conn *c = r->conn;
    if (!r->body_reading || !r->body_paused || c == NULL)
        return;
    r->body_paused = 0;
    if (c->cur == r)
        body_timer_start(c);
    tc__srv_conn_post(c);
}

/* ---- the streamed response ------------------------------------------------------------------ */

int tc_request_respond_head(tc_request *r, int status, const char *content_type,
                            const tc_server_header *headers, size_t nheaders,
                            int64_t content_length)
{
    if (r == NULL || r->finished || r->head_sent || content_length < TC_SERVER_LENGTH_UNKNOWN)
        return TC_EINVAL;
    if (request_conn(r) == NULL)
        return TC_ECANCELED;
    tc__srv_stream_init(r);
    tc__srv_write *w =
        tc__srv_head_build(r, status, content_type, headers, nheaders, content_length);
    int err = TC_ENOMEM;
    if (w != NULL && r->live && !r->no_body && content_length != 0) {
        /* a body follows, most often at once (a proxied response's first bytes came with its
         * head): it takes the head along in one write; the post handle sends it otherwise */
        r->st.head = w;
        r->resp_len += w->len;
        head_post(r->conn);
        r->head_sent = 1;
        return 0;
    }
    if (w != NULL) {
        uv_buf_t b = uv_buf_init(w->data, (unsigned)w->len);
        err = request_send(r, &b, 1, w->len);
        if (err == 0)
            r->resp_len += w->len;
        tc__free(w);
    }
    if (err == TC_ENOMEM) {
        r->drop = 1;
        r->status = 500;
        tc__srv_request_finish(r);
        return err;
    }
    r->head_sent = 1; /* also when the connection failed just now: the request ends as usual */
    return err;
}

int tc_request_write(tc_request *r, const char *data, size_t len)
{
    if (r == NULL || r->finished || !r->head_sent || (r->has_length && len > r->st.resp_left))
        return TC_EINVAL;
    if (request_conn(r) == NULL)
        return TC_ECANCELED;
    if (len == 0 || r->no_body)
        return 0;
    uv_buf_t bufs[3];
    unsigned n = 0;
    char size[TC__FMT_U64_MAX + 2]; /* a chunk: its size in hex, CRLF, the bytes, CRLF */
    if (r->chunked) {
        static const char hex[] = "0123456789abcdef";
        size_t k = sizeof(size) - 2, v = len;
        do {
            size[--k] = hex[v & 15];
            v >>= 4;
        } while (v > 0);
        size[sizeof(size) - 2] = '\r';
        size[sizeof(size) - 1] = '\n';
        bufs[n++] = uv_buf_init(size + k, (unsigned)(sizeof(size) - k));
    }
    bufs[n++] = uv_buf_init((char *)data, (unsigned)len);
    if (r->chunked)
        bufs[n++] = uv_buf_init((char *)"\r\n", 2);
    size_t total = 0;
    for (unsigned i = 0; i < n; i++)
        total += bufs[i].len;
    int err = request_send(r, bufs, n, total);
    if (err == TC_ENOMEM) {
        tc_request_abort(r);
        return err;
    }
    if (err == 0) {
        r->resp_len += total;
        if (r->has_length)
            r->st.resp_left -= len;
    }
    return err;
}

size_t tc_request_write_pending(const tc_request *r)
{
    return request_pending(r);
}

int tc_request_on_writable(tc_request *r, size_t threshold, tc_request_writable_cb cb, void *arg)
{
    if (r == NULL || cb == NULL || r->finished || writable_armed(r))
        return TC_EINVAL;
    tc__srv_conn *c = request_conn(r);
    if (c == NULL)
        return TC_ECANCELED;
    tc__srv_stream_init(r);
    r->st.writable_cb = cb;
    r->st.writable_arg = arg;
    r->st.writable_at = threshold;
    c->armed++;
    if (request_pending(r) <= threshold)
        tc__srv_conn_post(c); /* already below: from the loop, never inside this call */
    return 0;
}

int tc_request_end(tc_request *r)
{
    if (r == NULL || r->finished || (!r->head_sent && request_conn(r) != NULL))
        return TC_EINVAL;
    int err = 0;
    if (request_conn(r) == NULL) {
        /* the client is gone, or going: only finish (the log says 499 once it is gone) */
    } else if (r->has_length && r->st.resp_left > 0) {
        (void)head_flush(r); /* the client sees the head, then the cut */
        err = TC_EPROTO;
        r->cut = 1;
    } else if (r->chunked) {
        uv_buf_t b = uv_buf_init((char *)"0\r\n\r\n", 5);
        err = request_send(r, &b, 1, b.len);
        if (err == 0)
            r->resp_len += b.len;
        else
            r->cut = 1;
        if (err == TC_ECANCELED)
            err = 0; /* the socket failed just now: the request is over all the same */
    } else if (head_flush(r) == TC_ENOMEM) {
        r->cut = 1;
    }
    tc__srv_request_finish(r);
    return err;
}

void tc_request_abort(tc_request *r)
{
    if (r == NULL || r->finished)
        return;
    if (!r->head_sent) {
        tc_request_drop(r, 0);
        return;
    }
    if (request_conn(r) != NULL)
        (void)head_flush(r); /* the client sees the head, then the cut */
    r->cut = 1;
    tc__srv_request_finish(r);
}
