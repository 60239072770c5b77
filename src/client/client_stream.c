/*
 * Streaming for the pooled client (client.h, "streaming"): a response read while it arrives, and
 * a request body written while it goes. This file is the state machine both engines share; an
 * engine only moves bytes (client_native.c, client_curl.c) and reports through here.
 *
 * The one idea: body bytes go to the reader straight from where the engine has them (the native
 * engine's read buffer; libcurl's write callback through a small hold), and whenever the reader
 * cannot take them (paused, or not reading yet) at most one read's worth is held and the engine
 * stops reading the connection. Memory stays bounded whatever the body's size, and the transfer
 * runs exactly as fast as its reader. The request body is the mirror image: the caller's bytes
 * wait in a bounded queue until the socket (or libcurl) takes them, and the caller learns when
 * the queue drains (tc_client_body_on_writable).
 *
 * Re-entrancy: a reader's callback may do anything (abort, drop the response's last reference,
 * close the client). Every call into it goes through stream_call, which counts it in st->in_cb:
 * a response released meanwhile is freed only when the outermost call returns, and the engine
 * learns from the return values that the request is no longer its own. Work that must not run
 * inside the caller's call (a reader just attached or resumed, a writable callback due at once,
 * libcurl's unpause) waits for the client's kick handle, one loop turn later.
 */
#include <stdio.h>
#include <string.h>

#include "base/alloc.h"
#include "client_internal.h"

/* ---- the reader ------------------------------------------------------------------------------ */

static tc__creq *of_resp(const tc_response *resp)
{
    return tc__container_of(resp, tc__creq, resp);
}

/* The reader takes bytes (and its end) now. */
static int can_deliver(const tc__stream *st)
{
    return st->reading && !st->paused && !st->ended;
}

/* Calls the reader. Returns 1 if r was freed meanwhile (its response released by the call). */
static int stream_call(tc__creq *r, int status, const char *data, size_t len)
{
    tc__stream *st = r->st;
    st->in_cb++;
    st->cb(&r->resp, status, data, len, st->arg);
    st->in_cb--;
    if (st->free_pending && st->in_cb == 0) {
        tc__creq_free(r);
        return 1;
    }
    return 0;
}

/* Marks the reader told (or not to be told) of the end. */
static void mark_ended(tc__stream *st)
{
    st->ended = 1;
    tc__list_remove(&st->slink);
    tc__list_remove(&st->kick);
    if (st->kicked) { /* a reader that took the whole body inline: its kick has nothing to do */
        st->kicked = 0;
        tc__client_kick_settle(st->r->client);
    }
    st->hold.len = 0; /* its storage stays until the request goes: a reader may still point in */
}

/* Hands the reader what r holds, then its end once the wire is done, while it takes them.
 * Returns 1 if r was freed meanwhile. */
static int stream_pump(tc__creq *r)
{
    tc__stream *st = r->st;
    while (can_deliver(st)) {
        if (st->hold.len > 0) {
            /* Nothing adds to hold during the call: engines add only from their own callbacks,
             * which never run inside a reader's. */
            if (stream_call(r, 0, st->hold.data, st->hold.len))
                return 1;
            st->hold.len = 0;
        } else if (st->wire_done) {
            mark_ended(st);
            return stream_call(r, st->end_status, NULL, 0);
        } else {
            break;
        }
    }
    return 0;
}

/* Ends r's stream with err: the transfer is aborted if it still runs (its connection reset), and
 * a reader not yet told the end hears err from inside this call. Returns 1 if r was freed. */
static int stream_abort(tc__creq *r, int err, const char *msg)
{
    tc__stream *st = r->st;
    if (!st->wire_done && tc__creq_wind_up(r))
        return 1;
    if (st->ended)
        return 0;
    st->end_status = err;
    (void)snprintf(st->msg, sizeof(st->msg), "%s: %s", tc_strerror(err), msg);
    int reading = st->reading;
    mark_ended(st);
    return reading ? stream_call(r, err, NULL, 0) : 0;
}

void tc__stream_kick(tc__creq *r)
{
    tc__stream *st = r->st;
    tc_client *cl = r->client;
    if (st->kicked || st->ended || cl->closing)
        return;
    st->kicked = 1;
    tc__list_push_back(&cl->kicked, &st->kick);
    tc__client_kick_start(cl);
}

/* From the loop: the reader's held bytes and end, then more from the wire. */
static void stream_continue(tc__creq *r)
{
    tc__stream *st = r->st;
    if (st->head && stream_pump(r))
        return;
    if (st->ended || st->wire_done)
        return;
    if (r->engine == TC__ENGINE_CURL) {
        tc__curl_stream_resume(r); /* reading and the request body's bytes alike */
    } else if (st->head && can_deliver(st) && st->hold.len == 0) {
        tc__native_stream_resume(r);
    }
}

int tc__stream_prepare(tc__creq *r, const tc_client_request *req)
{
    tc_client_body *b = req->body_source;
    if (b != NULL && (b->client != r->client || b->used || b->aborted || b->closed || b->freed))
        return TC_EINVAL;
    tc__stream *st = tc__calloc(1, sizeof(*st));
    if (st == NULL)
        return TC_ENOMEM;
    st->r = r;
    st->stream_resp = req->stream_response != 0;
    st->idle_ms = req->body_idle_timeout_ms;
    tc__buf_init(&st->hold, NULL, 0, TC__CLIENT_STREAM_HOLD);
    tc__list_init(&st->kick);
    tc__list_init(&st->slink);
    tc__list_init(&st->curl_link);
    if (b != NULL) {
        b->used = 1;
        b->r = r;
        st->body = b;
    }
    r->st = st;
    return 0;
}

void tc__stream_unprepare(tc__creq *r)
{
    tc_client_body *b = r->st->body;
    if (b == NULL)
        return;
    b->used = 0;
    b->r = NULL;
    r->st->body = NULL;
}

static void body_destroy(tc_client_body *b);

void tc__stream_unbind(tc__creq *r)
{
    tc_client_body *b = r->st->body;
    if (b == NULL)
        return;
    r->st->body = NULL;
    b->r = NULL;
    b->closed = 1;
    b->queued.len = 0;
    b->queued_off = 0;
    b->flying.len = 0; /* an aborted write was cancelled with its connection's close */
    if (b->freed && b->busy == 0)
        body_destroy(b);
    else if (b->cb != NULL)
        tc__body_kick(b); /* TC_ECANCELED, from the loop */
}

void tc__stream_free(tc__creq *r)
{
    tc__stream *st = r->st;
    if (st->body != NULL)
        tc__stream_unbind(r);
    tc__list_remove(&st->kick);
    tc__list_remove(&st->slink);
    tc__list_remove(&st->curl_link);
    tc__buf_reset(&st->hold);
    tc__free(st);
    r->st = NULL;
}

int tc__stream_head(tc__creq *r, int status, int version, size_t body_off, int framing,
                    int64_t content_length)
{
    tc__stream *st = r->st;
    tc_client *cl = r->client;
    /* timeout_ms ends here; the idle timeout runs from here while the body is read. */
    if (tc__creq_rekey(r, st->idle_ms ? uv_now(cl->loop) + st->idle_ms : 0) != 0) {
        tc__creq_fail(r, TC_ENOMEM, NULL);
        return 1;
    }
    char *buf = tc__buf_cstr(&r->out);
    uint64_t now = uv_hrtime();
    r->resp.status = status;
    r->resp.http_version = version;
    r->resp.headers = buf;
    r->resp.headers_len = body_off > 0 ? body_off - 1 : 0;
    r->resp.body = buf + r->out.len; /* "" */
    r->resp.body_len = 0;
    r->resp.queued_ms = (double)(r->admit_ns - r->start_ns) / 1e6;
    r->resp.total_ms = (double)(now - r->start_ns) / 1e6;
    r->resp.framing = framing;
    r->resp.content_length = framing == TC_BODY_LENGTH ? content_length : -1;
    if (version == 20)
        r->origin->multiplex = 1;
    st->head = 1;
    st->last_io_ms = uv_now(cl->loop);
    tc__list_push_back(&cl->streams, &st->slink);
    tc_future *f = r->future;
    r->future = NULL;
    tc_future_set_cancel_hook(f, NULL, NULL);
    cl->stats.completed++;
    st->in_cb++;
    /* fires the caller's callbacks (a hedge's on_hedge_attempt_done): they may read the body
     * at once, abort it, or let the response go */
    (void)tc_future_fulfill(f, &r->resp, tc__creq_response_free);
    tc_future_unref(f);
    st->in_cb--;
    if (st->free_pending && st->in_cb == 0) {
        tc__creq_free(r);
        return 1;
    }
    return st->wire_done;
}

int tc__stream_data(tc__creq *r, const char *p, size_t n, int fresh)
{
    tc__stream *st = r->st;
    if (fresh && n > 0)
        st->last_io_ms = uv_now(r->client->loop);
    if (n > 0 && p != st->hold.data) {
        if (can_deliver(st) && st->hold.len == 0) {
            if (stream_call(r, 0, p, n))
                return TC__STREAM_GONE;
        } else if (tc__buf_append(&st->hold, p, n) != 0) {
            return TC_ENOMEM; /* it has room for a read: only memory can fail */
        }
    }
    if (stream_pump(r))
        return TC__STREAM_GONE;
    if (st->wire_done)
        return TC__STREAM_GONE; /* aborted by the reader */
    return can_deliver(st) && st->hold.len == 0 ? TC__STREAM_READ : TC__STREAM_STOP;
}

void tc__stream_end(tc__creq *r, int err, const char *msg)
{
    tc__stream *st = r->st;
    st->end_status = err;
    if (err != 0)
        (void)snprintf(st->msg, sizeof(st->msg), "%s", msg != NULL ? msg : tc_strerror(err));
    r->resp.total_ms = (double)(uv_hrtime() - r->start_ns) / 1e6;
    (void)stream_pump(r); /* or when the reader reads or resumes */
}

int tc__stream_deadline(tc__creq *r, uint64_t now_ms)
{
    tc__stream *st = r->st;
    uint64_t due = st->last_io_ms + st->idle_ms;
    if (can_deliver(st) && due <= now_ms)
        return 0;
    /* Not reading (paused, or no reader yet) does not count: look again an idle time later. */
    (void)tc__creq_rekey(r, can_deliver(st) ? due : now_ms + st->idle_ms);
    return 1;
}

int tc__stream_value_released(tc__creq *r)
{
    tc__stream *st = r->st;
    /* The caller let the response go: its transfer stops, its reader hears TC_ECANCELED. The
     * call may not free r: st->in_cb keeps it (this runs inside no callback of r's, or one
     * that holds it). */
    st->in_cb++;
    (void)stream_abort(r, TC_ECANCELED, "the response was released");
    st->in_cb--;
    if (st->in_cb > 0) {
        st->free_pending = 1;
        return 0;
    }
    return 1;
}

void tc__stream_close(tc__creq *r)
{
    (void)stream_abort(r, TC_ECANCELED, "the client closed");
}

void tc__stream_on_kick(tc_client *cl)
{
    /* What is queued now; what the calls queue waits for the next turn. */
    tc__link todo;
    tc__list_init(&todo);
    tc__list_replace(&cl->kicked, &todo);
    while (!tc__list_empty(&todo) && !cl->closing) {
        tc__stream *st = tc__container_of(todo.next, tc__stream, kick);
        tc__list_remove(&st->kick);
        st->kicked = 0;
        stream_continue(st->r);
    }
    while (!tc__list_empty(&todo)) { /* the client closed meanwhile */
        tc__stream *st = tc__container_of(todo.next, tc__stream, kick);
        tc__list_remove(&st->kick);
        st->kicked = 0;
    }
    tc__list_replace(&cl->kicked_bodies, &todo);
    while (!tc__list_empty(&todo)) {
        tc_client_body *b = tc__container_of(todo.next, tc_client_body, kick);
        tc__list_remove(&b->kick);
        b->kicked = 0;
        tc__body_check_writable(b);
    }
}

/* ---- the public reader ---------------------------------------------------------------------- */

int tc_response_read_body(tc_response *resp, tc_response_body_cb cb, void *arg)
{
    if (resp == NULL || cb == NULL)
        return TC_EINVAL;
    tc__creq *r = of_resp(resp);
    tc__stream *st = r->st;
    if (st == NULL || !st->stream_resp || !st->head || st->reading)
        return TC_EINVAL;
    if (st->ended)
        return TC_ECANCELED; /* aborted before anyone read it */
    st->reading = 1;
    st->cb = cb;
    st->arg = arg;
    st->last_io_ms = uv_now(r->client->loop);
    tc__stream_kick(r);
    return 0;
}

void tc_response_body_pause(tc_response *resp)
{
    tc__stream *st = resp != NULL ? of_resp(resp)->st : NULL;
    if (st == NULL || !st->head || st->ended || st->paused)
        return;
    st->paused = 1;
    if (!st->wire_done && st->r->engine == TC__ENGINE_NATIVE)
        tc__native_stream_pause(st->r);
    /* libcurl: its write callback fills the hold, then pauses the transfer */
}

void tc_response_body_resume(tc_response *resp)
{
    tc__stream *st = resp != NULL ? of_resp(resp)->st : NULL;
    if (st == NULL || !st->head || st->ended || !st->paused)
        return;
    st->paused = 0;
    st->last_io_ms = uv_now(st->r->client->loop);
    tc__stream_kick(st->r);
}

void tc_response_abort(tc_response *resp)
{
    tc__stream *st = resp != NULL ? of_resp(resp)->st : NULL;
    if (st == NULL || !st->head || st->ended)
        return;
    (void)stream_abort(st->r, TC_ECANCELED, "aborted by the caller");
}

const char *tc_response_body_error(const tc_response *resp)
{
    const tc__stream *st = resp != NULL ? of_resp(resp)->st : NULL;
    return st != NULL && st->ended && st->end_status != 0 ? st->msg : "";
}

int tc_response_header_next(const tc_response *resp, size_t *pos, tc_response_field *field)
{
    if (resp == NULL || pos == NULL || field == NULL || resp->headers == NULL)
        return 0;
    const char *start = resp->headers, *end = start + resp->headers_len;
    const char *p = start + (*pos < resp->headers_len ? *pos : resp->headers_len);
    if (*pos == 0) { /* the status line */
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        p = eol != NULL ? eol + 1 : end;
    }
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = eol != NULL ? eol : end, *next = eol != NULL ? eol + 1 : end;
        const char *colon = memchr(p, ':', (size_t)(line_end - p));
        if (colon != NULL && colon > p && *p != ' ' && *p != '\t') {
            const char *v = colon + 1, *ve = line_end;
            while (v < ve && (*v == ' ' || *v == '\t'))
                v++;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            field->name = p;
            field->name_len = (size_t)(colon - p);
            field->value = v;
            field->value_len = (size_t)(ve - v);
            *pos = (size_t)(next - start);
            return 1;
        }
        p = next;
    }
    *pos = resp->headers_len;
    return 0;
}

/* ---- the request body ----------------------------------------------------------------------- */

static void body_destroy(tc_client_body *b)
{
    tc__list_remove(&b->link);
    tc__list_remove(&b->kick);
    tc__buf_reset(&b->queued);
    tc__buf_reset(&b->flying);
    tc__free(b);
}

static size_t body_pending(const tc_client_body *b)
{
    return b->closed ? 0 : b->queued.len - b->queued_off + b->flying.len;
}

/* Runs the armed writable callback with status (it is disarmed first: it may arm another). */
static void body_fire(tc_client_body *b, int status)
{
    tc_client_body_writable_cb cb = b->cb;
    void *arg = b->arg;
    b->cb = NULL;
    tc__list_remove(&b->kick);
    b->kicked = 0;
    cb(b, status, arg);
}

void tc__body_kick(tc_client_body *b)
{
    tc_client *cl = b->client;
    if (cl == NULL || b->kicked || cl->closing)
        return;
    b->kicked = 1;
    tc__list_push_back(&cl->kicked_bodies, &b->kick);
    tc__client_kick_start(cl);
}

void tc__body_check_writable(tc_client_body *b)
{
    if (b->cb == NULL)
        return;
    if (b->closed || b->aborted)
        body_fire(b, TC_ECANCELED);
    else if (body_pending(b) <= b->threshold)
        body_fire(b, 0);
}

void tc__stream_close_bodies(tc_client *cl)
{
    while (!tc__list_empty(&cl->bodies)) {
        tc_client_body *b = tc__container_of(cl->bodies.next, tc_client_body, link);
        tc__list_remove(&b->link);
        tc__list_remove(&b->kick);
        b->kicked = 0;
        b->client = NULL;
        b->closed = 1;
        if (b->cb != NULL)
            body_fire(b, TC_ECANCELED);
    }
    while (!tc__list_empty(&cl->kicked)) { /* ended streams whose kick will never run */
        tc__stream *st = tc__container_of(cl->kicked.next, tc__stream, kick);
        tc__list_remove(&st->kick);
        st->kicked = 0;
    }
}

/* The caller gave r's body bytes, or its end: the native engine sends them now if its
 * connection is ready for them; libcurl reads them once unpaused, from the loop. */
static void body_poke(tc__creq *r)
{
    if (r->engine == TC__ENGINE_NATIVE)
        tc__native_body_flush(r);
    else
        tc__stream_kick(r);
}

int tc_client_body_new(tc_client_body **out, tc_client *client, int64_t length)
{
    if (out == NULL || client == NULL || length < TC_CLIENT_LENGTH_UNKNOWN)
        return TC_EINVAL;
    *out = NULL;
    if (client->closing)
        return TC_ECLOSED;
    tc_client_body *b = tc__calloc(1, sizeof(*b));
    if (b == NULL)
        return TC_ENOMEM;
    b->client = client;
    b->length = length;
    tc__buf_init(&b->queued, NULL, 0, TC_CLIENT_BODY_PENDING_MAX);
    tc__buf_init(&b->flying, NULL, 0, TC_CLIENT_BODY_PENDING_MAX);
    tc__list_init(&b->kick);
    tc__list_push_back(&client->bodies, &b->link);
    *out = b;
    return 0;
}

int tc_client_body_write(tc_client_body *b, const char *data, size_t len)
{
    if (b == NULL || (data == NULL && len > 0) || b->ended || b->aborted || b->freed)
        return TC_EINVAL;
    if (b->closed)
        return TC_ECLOSED;
    if (len == 0)
        return 0;
    if (b->length >= 0 && len > (uint64_t)b->length - b->written)
        return TC_EINVAL;
    if (len > TC_CLIENT_BODY_PENDING_MAX - body_pending(b))
        return TC_EBUSY;
    if (b->queued_off > 0) { /* what libcurl read is gone: keep the queue at its start */
        memmove(b->queued.data, b->queued.data + b->queued_off, b->queued.len - b->queued_off);
        b->queued.len -= b->queued_off;
        b->queued_off = 0;
    }
    int err = tc__buf_append(&b->queued, data, len);
    if (err != 0)
        return err == TC_ENOMEM ? TC_ENOMEM : TC_EBUSY;
    b->written += len;
    if (b->r != NULL)
        body_poke(b->r);
    return 0;
}

size_t tc_client_body_pending(const tc_client_body *b)
{
    return b != NULL ? body_pending(b) : 0;
}

int tc_client_body_on_writable(tc_client_body *b, size_t threshold, tc_client_body_writable_cb cb,
                               void *arg)
{
    if (b == NULL || cb == NULL || b->cb != NULL || b->ended || b->aborted || b->freed)
        return TC_EINVAL;
    if (b->closed)
        return TC_ECLOSED;
    b->cb = cb;
    b->arg = arg;
    b->threshold = threshold;
    if (body_pending(b) <= threshold)
        tc__body_kick(b); /* from the loop, never inside this call */
    return 0;
}

int tc_client_body_end(tc_client_body *b)
{
    if (b == NULL || b->ended || b->aborted || b->freed)
        return TC_EINVAL;
    if (b->closed)
        return TC_ECLOSED;
    if (b->length >= 0 && b->written < (uint64_t)b->length) {
        tc_client_body_abort(b);
        return TC_EPROTO;
    }
    b->ended = 1;
    if (b->r != NULL)
        body_poke(b->r);
    return 0;
}

void tc_client_body_abort(tc_client_body *b)
{
    if (b == NULL || b->aborted || b->closed)
        return;
    b->aborted = 1;
    /* The request's callbacks and the writable one may free b: it is kept until they return. */
    b->busy++;
    tc__creq *r = b->r;
    if (r != NULL && r->st->head) /* else not started: a request cannot start with it now */
        (void)stream_abort(r, TC_ECANCELED, "the request body was aborted");
    else if (r != NULL)
        tc__creq_fail(r, TC_ECANCELED, "operation cancelled: the request body was aborted");
    if (b->cb != NULL)
        body_fire(b, TC_ECANCELED);
    b->busy--;
    if (b->freed && b->r == NULL && b->busy == 0)
        body_destroy(b);
}

void tc_client_body_free(tc_client_body *b)
{
    if (b == NULL || b->freed)
        return;
    b->freed = 1;
    b->busy++; /* the callbacks below may free it again (a no-op now) or end its request */
    if (!b->ended && !b->aborted && !b->closed)
        tc_client_body_abort(b);
    else if (b->cb != NULL)
        body_fire(b, TC_ECANCELED);
    b->busy--;
    tc__list_remove(&b->link);
    tc__list_remove(&b->kick);
    b->kicked = 0;
    if (b->r == NULL && b->busy == 0)
        body_destroy(b); /* else when its request lets it go (tc__stream_unbind) */
}
