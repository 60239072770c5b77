/*
 * The native HTTP/1.1 engine for http:// requests: libuv TCP sockets, one pool of keep-alive
 * connections per origin, responses read with h1_parse.
 *
 * The one idea that makes it cheap: a connection is always reading. An idle pooled connection
 * stays registered with epoll, so reusing it costs no syscall and a server that closes it is
 * seen at once, without a liveness probe; a request is one uv_try_write (head and body in one
 * writev) and, for a small answer, one read. The read buffer is one per engine, because a
 * response is copied out of it into its request as it is parsed.
 *
 * Closing: a connection whose request is abandoned (cancelled, timed out, failed mid-response)
 * is closed with a TCP reset, so neither side keeps it in TIME_WAIT or FIN_WAIT2 and the server
 * sees the abort at once. A connection closed in good order (the server said Connection: close,
 * an idle one expired or was evicted, the client closes) gets a normal FIN. Aborts are reset
 * by a uv_idle "reaper", TC__NATIVE_REAP_BATCH per loop turn: when a thousand deadlines fire
 * together, their answers are written first, and the three thousand resets that follow are
 * interleaved with reading the next requests instead of delaying them (measured: p99 545 ->
 * 530 ms with 1,000 clients on a stuck upstream, bench/smart).
 *
 * Connecting, likewise: at most TC__NATIVE_CONNECT_BATCH new connections start their connect()
 * per loop turn; the rest wait in order for a uv_idle "connector", which starts the next batch
 * on each later turn, after that turn's timers. socket() and connect() on loopback are the
 * costliest step of a first attempt (28% of serve's CPU with 1,000 clients on a stuck upstream),
 * and 500 new requests read in one turn paid them all before the loop looked at its timers
 * again, so deadlines that came due meanwhile were answered up to 16 ms late (TAILCUT_TRACE,
 * bench/smart/deadline).
 *
 * Lifetimes: a connection (tc__conn) lives until both of its uv handles have closed; it holds
 * a reference to its origin, where the DNS answer is cached. The engine lives until the last
 * connection and DNS lookup are gone after tc__native_close.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/alloc.h"
#include "client_internal.h"

#define TC__NATIVE_READ_BUFFER (64 * 1024) /* one per engine, shared by its connections */
#define TC__NATIVE_IDLE_MS 30000           /* an idle connection closes after this at the latest */
#define TC__NATIVE_KEEPALIVE_MARGIN_MS ((uint64_t)1000) /* close before the server's timeout */
#define TC__NATIVE_DNS_TTL_MS 30000      /* getaddrinfo gives no TTL: an answer is kept this long */
#define TC__NATIVE_MAX_ADDRS 16          /* addresses of one name that are tried, in order */
#define TC__NATIVE_REAP_BATCH 64         /* aborted connections reset per loop turn */
#define TC__NATIVE_CONNECT_BATCH 32      /* connects started per loop turn */
#define TC__NATIVE_CONNECT_MAX_MS 300000 /* connect_timeout_ms 0: libcurl's default, 300 s */

enum { C_RESOLVING = 1, C_CONNECTING, C_BUSY, C_IDLE, C_CLOSING };

struct tc__native {
    tc_client *client;
    uv_idle_t reaper;     /* resets aborted connections, a batch per loop turn */
    tc__link doomed;      /* aborted connections waiting for the reaper */
    uv_idle_t connector;  /* starts waiting connects, a batch per loop turn */
    tc__link waiting;     /* new connections waiting for the connector, oldest first */
    size_t turn_connects; /* connects started since the connector last ran */
    tc__link lookups;     /* DNS lookups in flight (cancelled by tc__native_close) */
    tc__link lru;         /* idle connections of every origin, least recently used first */
    size_t nconns;        /* open connections (not closing) */
    size_t live;          /* the two idle handles, connections and DNS lookups not yet freed */
    int closing;
    char rbuf[TC__NATIVE_READ_BUFFER];
};

struct tc__conn {
    uv_tcp_t tcp;
    /* The connect timeout while connecting; then the keep-alive expiry, left armed while the
     * connection carries a request (restarting a timer twice a request costs more than a
     * wake-up that finds it busy, once a keep-alive period). */
    uv_timer_t timer;
    union {
        uv_connect_t connect;
        uv_write_t write;
    } req;
    tc__native *nat;
    tc__origin *origin;
    tc__creq *r;   /* the request it carries; NULL while idle or closing */
    tc__link link; /* origin->idle, origin->resolving, nat->waiting or nat->doomed */
    tc__link lru;  /* nat->lru while idle */
    uint64_t keepalive_ms;
    uint64_t idle_until; /* uv_now() at which an idle spell ends it */
    size_t addr_idx;
    unsigned uses; /* responses read on it */
    unsigned gen;  /* its origin's generation when it opened (tc_client_retire_origin) */
    int state;
    int handles;      /* uv handles not yet closed */
    int reconnect;    /* the closing tcp handle reopens for the next address */
    int writing;      /* a uv_write of its request's bytes is pending */
    int err;          /* the last connect error, for the message */
    int read_stopped; /* a streamed response's reader cannot take more: not reading */
    int head_out;     /* a streamed request body: the head went out on this connection */
};

typedef struct tc__gai {
    uv_getaddrinfo_t req;
    tc__link link; /* in nat->lookups */
    tc__native *nat;
    tc__origin *origin;
} tc__gai;

static int conn_connect(tc__conn *c);
static void conn_connect_or_fail(tc__conn *c);
static int conn_open(tc__native *nat, tc__creq *r);
static void on_native_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b);
static void on_native_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *b);

/* ---- request head --------------------------------------------------------------------------- */

/* strcasecmp(name, lower) == 0 for a lower-case literal starting with a letter; the first byte
 * is compared before the call, since most names differ there (X-Request-Id, X-Tailcut-Attempt
 * against host, accept...): the head is built for every attempt. */
static int header_name_is(const char *name, const char *lower)
{
    return ((unsigned char)name[0] | 0x20) == (unsigned char)lower[0] &&
           strcasecmp(name, lower) == 0;
}

static int user_has(const tc_client_request *req, const char *name)
{
    for (size_t i = 0; i < req->nheaders; i++)
        if (header_name_is(req->headers[i].name, name))
            return 1;
    return 0;
}

static int framing_header(const char *name)
{
    return header_name_is(name, "content-length") || header_name_is(name, "transfer-encoding");
}

/* A method whose requests carry a body, empty or not. */
static int body_method(const char *method)
{
    return strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 ||
           strcmp(method, "PATCH") == 0;
}

/* Writes the head into dst[0, cap) as far as it fits (cap 0: only counts it) and returns its
 * whole length: dst holds it all when that is at most cap. The framing headers are always ours;
 * Host, User-Agent and Accept are ours unless the caller sets them. */
static size_t head_emit(const tc_client_request *req, const char *method, const tc__url_cache *uc,
                        char *dst, size_t cap)
{
    size_t n = 0;
#define EMIT(s)                                                                                    \
    do {                                                                                           \
        const char *s_ = (s);                                                                      \
        size_t l_ = strlen(s_);                                                                    \
        if (l_ <= cap && n <= cap - l_)                                                            \
            memcpy(dst + n, s_, l_);                                                               \
        n += l_;                                                                                   \
    } while (0)
    EMIT(method);
    EMIT(" ");
    EMIT(uc->target);
    EMIT(" HTTP/1.1\r\n");
    if (!user_has(req, "host")) {
        EMIT("Host: ");
        EMIT(uc->host);
        EMIT("\r\n");
    }
    if (!req->no_default_headers) {
        if (!user_has(req, "user-agent"))
            EMIT("User-Agent: tailcut/" TC_VERSION_STRING "\r\n");
        if (!user_has(req, "accept"))
            EMIT("Accept: */*\r\n");
    }
    for (size_t i = 0; i < req->nheaders; i++) {
        if (framing_header(req->headers[i].name))
            continue;
        EMIT(req->headers[i].name);
        EMIT(": ");
        EMIT(req->headers[i].value);
        EMIT("\r\n");
    }
    /* A streamed body of unknown length goes chunked; any other body says its length, and so
     * does a method that carries one when it has none (POST, PUT, PATCH: 0). Most requests are
     * GETs: the first letter spares them the compares. */
    const tc_client_body *src = req->body_source;
    if (src != NULL && src->length < 0) {
        EMIT("Transfer-Encoding: chunked\r\n");
    } else if (req->body != NULL || src != NULL || (method[0] == 'P' && body_method(method))) {
        long long length = src != NULL ? (long long)src->length : (long long)req->body_len;
        char cl[48];
        (void)snprintf(cl, sizeof(cl), "Content-Length: %lld\r\n", length);
        EMIT(cl);
    }
    EMIT("\r\n");
#undef EMIT
    return n;
}

size_t tc__native_head_try(const tc_client_request *req, const char *method,
                           const tc__url_cache *uc, char *dst, size_t cap)
{
    return head_emit(req, method, uc, dst, cap);
}

void tc__native_head_build(const tc_client_request *req, const char *method,
                           const tc__url_cache *uc, char *dst)
{
    (void)head_emit(req, method, uc, dst, SIZE_MAX);
}

/* ---- engine --------------------------------------------------------------------------------- */

static tc__native *native_get(tc_client *cl)
{
    if (cl->native != NULL)
        return cl->native;
    tc__native *nat = tc__calloc(1, sizeof(*nat));
    if (nat == NULL)
        return NULL;
    nat->client = cl;
    tc__list_init(&nat->lru);
    tc__list_init(&nat->doomed);
    tc__list_init(&nat->waiting);
    tc__list_init(&nat->lookups);
    if (uv_idle_init(cl->loop, &nat->reaper) != 0 || uv_idle_init(cl->loop, &nat->connector) != 0) {
        tc__free(nat);
        return NULL;
    }
    nat->reaper.data = nat;
    nat->connector.data = nat;
    nat->live += 2; /* the reaper and the connector, until tc__native_close closes them */
    cl->native = nat;
    cl->open_handles++; /* given back when the engine is freed */
    return nat;
}

static void native_maybe_free(tc__native *nat)
{
    if (!nat->closing || nat->live > 0)
        return;
    tc_client *cl = nat->client;
    cl->native = NULL;
    tc__free(nat);
    tc__client_handle_closed(cl);
}

static void on_idle_handle_closed(uv_handle_t *h)
{
    tc__native *nat = h->data;
    nat->live--;
    native_maybe_free(nat);
}

/* ---- connections ---------------------------------------------------------------------------- */

static void conn_handle_closed(uv_handle_t *h)
{
    tc__conn *c = h->data;
    if (--c->handles > 0)
        return;
    tc__native *nat = c->nat;
    tc__origin_unref(nat->client, c->origin);
    tc__free(c);
    nat->live--;
    native_maybe_free(nat);
}

/* Takes c out of the pool's books: it counts as closed from now on. */
static void conn_retire(tc__conn *c)
{
    tc__native *nat = c->nat;
    tc__list_remove(&c->link);
    tc__list_remove(&c->lru);
    c->state = C_CLOSING;
    c->r = NULL;
    nat->nconns--;
    if (nat->client->stats.open_connections > 0)
        nat->client->stats.open_connections--;
    uv_timer_stop(&c->timer);
}

static void conn_close_handles(tc__conn *c, int reset)
{
    uv_close((uv_handle_t *)&c->timer, conn_handle_closed);
    if (c->reconnect)
        return; /* the tcp handle is already closing */
    if (!reset || uv_tcp_close_reset(&c->tcp, conn_handle_closed) != 0)
        uv_close((uv_handle_t *)&c->tcp, conn_handle_closed);
}

/* Closes c now: with a reset when its exchange was cut short, else in good order. Its request,
 * if any, must have been taken off it (and reported or aborted) by the caller. */
static void conn_close(tc__conn *c, int reset)
{
    if (c->state == C_CLOSING)
        return;
    conn_retire(c);
    conn_close_handles(c, reset);
}

/* Resets at most TC__NATIVE_REAP_BATCH aborted connections. An idle handle runs once per loop
 * turn, before the poll for I/O (which it makes non-blocking while work is left), so a burst of
 * thousands of aborts is spread over several turns with reads and answers in between. */
static void reap(tc__native *nat, size_t max)
{
    for (size_t n = 0; n < max && !tc__list_empty(&nat->doomed); n++) {
        tc__conn *c = tc__container_of(nat->doomed.next, tc__conn, link);
        tc__list_remove(&c->link);
        conn_close_handles(c, 1);
    }
    if (tc__list_empty(&nat->doomed))
        uv_idle_stop(&nat->reaper);
}

static void on_reap(uv_idle_t *h)
{
    reap(h->data, TC__NATIVE_REAP_BATCH);
}

/* Aborts c: out of the books at once (a read, write or connect that completes meanwhile finds
 * it closing and does nothing), reset by the reaper on a later loop turn. */
static void conn_abort(tc__conn *c)
{
    if (c->state == C_CLOSING)
        return;
    tc__native *nat = c->nat;
    conn_retire(c);
    if (nat->closing || c->writing) {
        /* A pending write points into the request's memory, which goes now: only a close
         * (which cancels the write) makes sure libuv never reads it. */
        conn_close_handles(c, 1);
        return;
    }
    if (tc__list_empty(&nat->doomed))
        (void)uv_idle_start(&nat->reaper, on_reap); /* cannot fail for a started loop */
    tc__list_push_back(&nat->doomed, &c->link);
}

/* Makes room for one more connection under the total cap by closing the least recently used
 * idle connection. */
static void evict_for_one_more(tc__native *nat)
{
    if (nat->nconns < nat->client->cfg.max_connections)
        return;
    tc__link *l = tc__list_first(&nat->lru);
    if (l != NULL)
        conn_close(tc__container_of(l, tc__conn, lru), 0);
}

/* Takes r off c (r goes on to be reported by the caller). */
static tc__creq *conn_take(tc__conn *c)
{
    tc__creq *r = c->r;
    c->r = NULL;
    if (r != NULL)
        r->conn = NULL;
    return r;
}

/* r failed on c: c is closed (reset: its exchange was cut short) and r is reported. */
static void conn_fail(tc__conn *c, int err, const char *fmt, const char *detail)
{
    tc__creq *r = conn_take(c);
    conn_close(c, 1);
    if (r == NULL)
        return;
    char msg[384];
    (void)snprintf(msg, sizeof(msg), fmt, tc_strerror(err), detail);
    tc__creq_fail(r, err, msg);
}

/* The pooled connection c died before any byte of r's response. A request that asked for the
 * stale-connection re-send (a GET or HEAD) goes once more on a fresh connection; any other
 * fails as a reset, so that nothing reaches the server twice without its caller knowing. */
static void conn_died_unanswered(tc__conn *c, const char *detail)
{
    tc__creq *r = c->r;
    if (r != NULL && c->uses > 0 && r->resend_stale && !r->stale_retried && !c->nat->closing) {
        conn_take(c);
        conn_close(c, 0); /* the server closed it already */
        r->stale_retried = 1;
        r->client->stats.stale_retries++;
        int err = conn_open(c->nat, r);
        if (err != 0)
            tc__creq_fail(r, err, NULL);
        return;
    }
    /* A reused connection that died unanswered is told apart (TC_ESTALE): its caller may send
     * the request elsewhere. A fresh one that dies so is a plain reset. */
    conn_fail(c, c->uses > 0 ? TC_ESTALE : TC_ECONNRESET, "%s: %s", detail);
}

static void on_idle_expired(uv_timer_t *t)
{
    tc__conn *c = t->data;
    if (c->state != C_IDLE)
        return; /* busy since: its next idle spell arms the timer again */
    uint64_t now = uv_now(t->loop);
    if (now < c->idle_until) {
        uv_timer_start(t, on_idle_expired, c->idle_until - now, 0); /* idle again since */
        return;
    }
    conn_close(c, 0);
}

/* c's exchange ended well: it goes back to its origin's pool, or closes. */
static void conn_release(tc__conn *c, int reusable)
{
    tc__native *nat = c->nat;
    if (!reusable || nat->closing || c->keepalive_ms == 0 || c->gen != c->origin->gen) {
        conn_close(c, 0); /* a retired origin's connection closes after its last request */
        return;
    }
    if (c->read_stopped) { /* a streamed response's reader had paused it: idle ones read */
        c->read_stopped = 0;
        if (uv_read_start((uv_stream_t *)&c->tcp, on_native_alloc, on_native_read) != 0) {
            conn_close(c, 0);
            return;
        }
    }
    c->state = C_IDLE;
    tc__list_push_back(&c->origin->idle, &c->link);
    tc__list_push_back(&nat->lru, &c->lru);
    c->idle_until = uv_now(c->timer.loop) + c->keepalive_ms;
    /* A timer still armed from an earlier idle spell (never the connect timeout: that stops at
     * the connect) may stay so when it fires no later than this spell ends. */
    if (!uv_is_active((uv_handle_t *)&c->timer) || uv_timer_get_due_in(&c->timer) > c->keepalive_ms)
        uv_timer_start(&c->timer, on_idle_expired, c->keepalive_ms, 0);
    /* An idle pool does not keep the caller's loop running (libcurl's idle connections do not
     * either): uv_run returns once nothing but idle connections is left. */
    uv_unref((uv_handle_t *)&c->tcp);
    uv_unref((uv_handle_t *)&c->timer);
}

/* How long c may stay idle after this response: our cap, or less when the server announced a
 * shorter Keep-Alive timeout (closing first avoids sending into a connection it is closing). The
 * parser noted the header's value as it read the head. */
static uint64_t keepalive_of(const tc__creq *r)
{
    const tc__h1 *h1 = &r->h1;
    if (h1->keep_alive_off == 0)
        return TC__NATIVE_IDLE_MS;
    char v[64];
    size_t n = h1->keep_alive_len < sizeof(v) - 1 ? h1->keep_alive_len : sizeof(v) - 1;
    memcpy(v, r->out.data + h1->keep_alive_off, n);
    v[n] = '\0';
    const char *timeout = strcasestr(v, "timeout=");
    if (timeout == NULL)
        return TC__NATIVE_IDLE_MS;
    unsigned long secs = strtoul(timeout + 8, NULL, 10);
    uint64_t ms = (uint64_t)secs * 1000;
    if (ms > TC__NATIVE_IDLE_MS)
        return TC__NATIVE_IDLE_MS;
    return ms > 2 * TC__NATIVE_KEEPALIVE_MARGIN_MS ? ms - TC__NATIVE_KEEPALIVE_MARGIN_MS : ms / 2;
}

/* Everything of r's request went out: a connection that still owes part of a streamed body
 * cannot carry another request. */
static int body_all_out(const tc__creq *r)
{
    const tc_client_body *b = r->st != NULL ? r->st->body : NULL;
    if (b == NULL)
        return 1;
    if (b->queued.len > 0 || b->flying.len > 0)
        return 0;
    return b->length >= 0 ? b->written == (uint64_t)b->length : b->end_out;
}

static void on_response_done(tc__conn *c, size_t extra)
{
    tc__creq *r = conn_take(c);
    c->uses++;
    size_t body_off = r->h1.body_off;
    c->keepalive_ms = keepalive_of(r);
    /* Bytes after the response: the server sent more than it was asked for, so the connection's
     * framing cannot be trusted any more. An answer that came before the whole request was
     * written (an early 413, say): the rest of the request would follow, so the connection
     * closes, and closing at once cancels the write before r's memory can go. */
    conn_release(c, r->h1.keep_alive && extra == 0 && !c->writing && body_all_out(r));
    tc__creq_succeed(r, r->h1.status, r->h1.version, body_off);
}

static void on_native_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    tc__conn *c = h->data;
    (void)suggested;
    *b = uv_buf_init(c->nat->rbuf, sizeof(c->nat->rbuf));
}

/* r's response could not be read, for h1_parse's reason rc: each reason has its error code. */
static void response_failed(tc__conn *c, tc__creq *r, tc__h1_status rc)
{
    char lim[64];
    switch (rc) {
    case TC__H1_BODY_TOO_LARGE:
        (void)snprintf(lim, sizeof(lim), "%zu", r->max_body);
        conn_fail(c, TC_ETOOLARGE, "%s: body larger than %s bytes", lim);
        break;
    case TC__H1_HEADERS_TOO_LARGE:
        (void)snprintf(lim, sizeof(lim), "%zu bytes", TC__H1_MAX_HEADER_BYTES);
        conn_fail(c, TC_EPROTO, "%s: response headers larger than %s", lim);
        break;
    case TC__H1_NOMEM:
        conn_fail(c, TC_ENOMEM, "%s: %s", tc__h1_why(&r->h1, rc));
        break;
    case TC__H1_CLOSED_BEFORE_ANY:
    case TC__H1_CLOSED_INCOMPLETE:
        conn_fail(c, TC_ECONNRESET, "%s: %s", tc__h1_why(&r->h1, rc));
        break;
    default: /* TC__H1_INVALID, TC__H1_LINE_TOO_LONG, TC__H1_SWITCHING_PROTOCOLS */
        conn_fail(c, TC_EPROTO, "%s: %s", tc__h1_why(&r->h1, rc));
        break;
    }
}

/* Stops reading c: a streamed response's reader cannot take more now. */
static void conn_read_stop(tc__conn *c)
{
    if (!c->read_stopped) {
        c->read_stopped = 1;
        (void)uv_read_stop((uv_stream_t *)&c->tcp);
    }
}

/* The final head of r's streamed response is in: its future fulfils. Returns 1 if r is no
 * longer on c (the callbacks aborted it or let it go). */
static int stream_report_head(tc__conn *c, tc__creq *r)
{
    const tc__h1 *h1 = &r->h1;
    int framing = TC_BODY_CLOSE;
    switch (h1->framing) {
    case TC__H1_FRAMING_NONE:
        framing = TC_BODY_NONE;
        break;
    case TC__H1_FRAMING_LENGTH:
        framing = TC_BODY_LENGTH;
        break;
    case TC__H1_FRAMING_CHUNKED:
        framing = TC_BODY_CHUNKED;
        break;
    default:
        break;
    }
    int64_t length = framing == TC_BODY_LENGTH ? (int64_t)h1->content_length : -1;
    if (tc__stream_head(r, h1->status, h1->version, h1->body_off, framing, length))
        return 1;
    return c->r != r;
}

/* A read on a streamed response once its head is in, or the read that brings the head: the head
 * is reported, then the body bytes the read decoded go to the reader (or are held, and reading
 * stops), then the end. */
static void stream_read(tc__conn *c, tc__creq *r, ssize_t nread, const uv_buf_t *b)
{
    size_t extra = 0;
    tc__h1_status rc;
    if (nread > 0)
        rc = tc__h1_feed(&r->h1, b->base, (size_t)nread, &extra);
    else /* the head was reported: the end of a close-delimited body, or a cut one */
        rc = nread == UV_EOF ? tc__h1_eof(&r->h1) : TC__H1_CLOSED_INCOMPLETE;
    if (!r->st->head) {
        if (!r->h1.head_done) { /* still no final head: as any request */
            if (rc != TC__H1_MORE)
                response_failed(c, r, rc);
            return;
        }
        if (stream_report_head(c, r))
            return;
    }
    const char *p = NULL;
    size_t n = 0;
    if (nread > 0 || nread == UV_EOF) /* a read error decoded nothing */
        tc__h1_body(&r->h1, &p, &n);
    int s = tc__stream_data(r, p, n, 1);
    if (s == TC__STREAM_GONE || c->r != r)
        return;
    if (s == TC_ENOMEM)
        conn_fail(c, TC_ENOMEM, "%s: %s", "body bytes could not be held");
    else if (rc == TC__H1_DONE)
        on_response_done(c, extra);
    else if (rc != TC__H1_MORE)
        response_failed(c, r, nread < 0 && nread != UV_EOF ? TC__H1_CLOSED_INCOMPLETE : rc);
    else if (s == TC__STREAM_STOP)
        conn_read_stop(c);
}

static void on_native_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *b)
{
    tc__conn *c = stream->data;
    if (nread == 0 || c->state == C_CLOSING)
        return;
    if (c->r == NULL) {
        conn_close(c, nread > 0); /* idle: the server closed it, or sent junk */
        return;
    }
    tc__creq *r = c->r;
    if (r->st != NULL && r->st->stream_resp && (nread > 0 || r->st->head)) {
        stream_read(c, r, nread, b);
        return;
    }
    if (nread < 0) {
        /* A read error is told in the system's words, the end of the stream in h1_parse's. */
        tc__h1_status rc = nread == UV_EOF ? tc__h1_eof(&r->h1) : TC__H1_CLOSED_INCOMPLETE;
        if (rc == TC__H1_DONE) {
            on_response_done(c, 0);
        } else if (r->h1.received == 0) {
            conn_died_unanswered(c, nread == UV_EOF ? tc__h1_why(&r->h1, TC__H1_CLOSED_BEFORE_ANY)
                                                    : uv_strerror((int)nread));
        } else {
            conn_fail(c, TC_ECONNRESET, "%s: %s",
                      nread == UV_EOF ? tc__h1_why(&r->h1, rc) : uv_strerror((int)nread));
        }
        return;
    }
    size_t extra = 0;
    tc__h1_status rc = tc__h1_feed(&r->h1, b->base, (size_t)nread, &extra);
    if (rc == TC__H1_MORE)
        return;
    if (rc == TC__H1_DONE)
        on_response_done(c, extra);
    else
        response_failed(c, r, rc);
}

static void on_written(uv_write_t *w, int status);

/* What uv_try_write did not take of bufs (all but the first done bytes) goes through uv_write,
 * from where it lies (at most 4 buffers: uv_write then needs no allocation). Returns 0 or
 * uv_write's error. */
static int conn_write_rest(tc__conn *c, uv_buf_t *bufs, unsigned n, size_t done)
{
    unsigned first = 0;
    while (first < n && done >= bufs[first].len) {
        done -= bufs[first].len;
        first++;
    }
    bufs[first].base += done;
    bufs[first].len -= done;
    c->req.write.data = c;
    int err = uv_write(&c->req.write, (uv_stream_t *)&c->tcp, bufs + first, n - first, on_written);
    c->writing = err == 0;
    return err;
}

/* Writes what c's request has of its streamed body: the head first (once per connection), then
 * the bytes the caller queued (one chunk when chunked), then the last chunk once the body has
 * ended. One uv_try_write; what the socket does not take goes through uv_write from where it
 * lies (the head in the request, the bytes moved to body->flying, the chunk line in
 * body->chunk_line), so nothing is copied and nothing can fail for want of memory. Returns 0, or
 * a uv error: one with which the socket refused the first bytes of the head (nothing sent), or
 * uv_write's. */
static int body_flush(tc__conn *c)
{
    tc__creq *r = c->r;
    tc_client_body *b = r->st->body;
    if (c->writing || b == NULL)
        return 0;
    int chunked = b->length < 0;
    int last = chunked && b->ended && !b->end_out;
    size_t payload = b->queued.len;
    uv_buf_t bufs[4]; /* at most 4: uv_write then needs no allocation */
    unsigned n = 0;
    if (!c->head_out)
        bufs[n++] = uv_buf_init(r->head, (unsigned)r->head_len);
    if (payload > 0) {
        if (chunked) {
            int k = snprintf(b->chunk_line, sizeof(b->chunk_line), "%zx\r\n", payload);
            bufs[n++] = uv_buf_init(b->chunk_line, (unsigned)k);
        }
        bufs[n++] = uv_buf_init(b->queued.data, (unsigned)payload);
        if (chunked)
            bufs[n++] = last ? uv_buf_init((char *)(uintptr_t) "\r\n0\r\n\r\n", 7)
                             : uv_buf_init((char *)(uintptr_t) "\r\n", 2);
    } else if (last) {
        bufs[n++] = uv_buf_init((char *)(uintptr_t) "0\r\n\r\n", 5);
    }
    if (n == 0)
        return 0;
    size_t total = 0;
    for (unsigned i = 0; i < n; i++)
        total += bufs[i].len;
    int w = uv_try_write((uv_stream_t *)&c->tcp, bufs, n);
    if (w < 0 && w != UV_EAGAIN && !c->head_out)
        return w;
    if (w < 0)
        w = 0; /* a broken connection: uv_write meets the error and reports it from the loop */
    c->head_out = 1;
    if (last)
        b->end_out = 1;
    /* The queued bytes become the write's: the next ones queue in the other buffer. */
    tc__buf spare = b->flying;
    b->flying = b->queued;
    b->queued = spare;
    b->queued.len = 0;
    size_t done = (size_t)w;
    if (done == total) {
        b->flying.len = 0;
        if (b->cb != NULL)
            tc__body_kick(b); /* drained: its writable callback, from the loop */
        return 0;
    }
    return conn_write_rest(c, bufs, n, done);
}

/* A streamed body's write went out: the next bytes follow, and the caller hears that the queue
 * drained. */
static void body_written(tc__conn *c)
{
    tc_client_body *b = c->r->st->body;
    b->flying.len = 0;
    int err = body_flush(c);
    if (err != 0) {
        conn_fail(c, TC_ECONNRESET, "%s: %s", uv_strerror(err));
        return;
    }
    tc__body_check_writable(b);
}

static void on_written(uv_write_t *w, int status)
{
    tc__conn *c = w->data;
    c->writing = 0;
    if (status == UV_ECANCELED || c->state == C_CLOSING || c->r == NULL)
        return;
    if (status == 0) {
        if (c->r->st != NULL && c->r->st->body != NULL)
            body_written(c);
        return;
    }
    if (c->r->h1.received == 0)
        conn_died_unanswered(c, uv_strerror(status));
    else
        conn_fail(c, TC_ECONNRESET, "%s: %s", uv_strerror(status));
}

/* Sends c's request: head and body in one writev when the socket takes it all, which it almost
 * always does; what it does not take goes through uv_write. Returns 0, or a uv error with which
 * the socket refused the first bytes (nothing of the request was sent). */
static int conn_send(tc__conn *c)
{
    tc__creq *r = c->r;
    c->state = C_BUSY;
    tc__h1_init(&r->h1, &r->out, r->max_body,
                r->method[0] == 'H' && strcmp(r->method, "HEAD") == 0);
    if (r->st != NULL) {
        if (r->st->stream_resp)
            tc__h1_stream(&r->h1, &r->st->hold);
        if (r->st->body != NULL) {
            c->head_out = 0;
            return body_flush(c);
        }
    }
    uv_buf_t bufs[2] = {uv_buf_init(r->head, (unsigned)r->head_len),
                        uv_buf_init((char *)(uintptr_t)r->body, (unsigned)r->body_len)};
    unsigned nbufs = r->body_len > 0 ? 2 : 1;
    size_t total = r->head_len + r->body_len;
    int n = uv_try_write((uv_stream_t *)&c->tcp, bufs, nbufs);
    if (n >= 0 && (size_t)n == total)
        return 0;
    if (n < 0 && n != UV_EAGAIN)
        return n;
    return conn_write_rest(c, bufs, nbufs, n > 0 ? (size_t)n : 0);
}

static void on_connect_timeout(uv_timer_t *t)
{
    tc__conn *c = t->data;
    char ms[32];
    uint64_t cto = c->nat->client->cfg.connect_timeout_ms;
    (void)snprintf(ms, sizeof(ms), "%llu",
                   (unsigned long long)(cto ? cto : TC__NATIVE_CONNECT_MAX_MS));
    conn_fail(c, TC_ETIMEDOUT, "%s: could not connect within %s ms", ms);
}

static void on_tcp_reopened(uv_handle_t *h);

static void on_connected(uv_connect_t *connect_req, int status)
{
    tc__conn *c = connect_req->data;
    if (status == UV_ECANCELED || c->state != C_CONNECTING)
        return;
    if (status < 0) {
        c->err = status;
        if (c->addr_idx + 1 < c->origin->naddrs) {
            c->addr_idx++;
            c->reconnect = 1; /* a failed socket is not reused: close it and open another */
            uv_close((uv_handle_t *)&c->tcp, on_tcp_reopened);
            return;
        }
        int err = status == UV_ETIMEDOUT ? TC_ETIMEDOUT : TC_ECONNREFUSED;
        conn_fail(c, err, "%s: could not connect: %s", uv_strerror(status));
        return;
    }
    uv_timer_stop(&c->timer); /* the connect timeout */
    uv_tcp_nodelay(&c->tcp, 1);
    int err = uv_read_start((uv_stream_t *)&c->tcp, on_native_alloc, on_native_read);
    if (err == 0)
        err = conn_send(c);
    if (err != 0)
        conn_fail(c, TC_ECONNRESET, "%s: %s", uv_strerror(err));
}

/* The failed socket has closed: try the next address with a new one. */
static void on_tcp_reopened(uv_handle_t *h)
{
    tc__conn *c = h->data;
    c->reconnect = 0;
    if (c->state == C_CLOSING) {
        conn_handle_closed(h);
        return;
    }
    if (uv_tcp_init(c->nat->client->loop, &c->tcp) != 0) {
        c->handles--;     /* the tcp handle is gone for good */
        c->reconnect = 1; /* so that conn_close leaves it alone and closes only the timer */
        tc__creq *r = conn_take(c);
        conn_close(c, 0);
        if (r != NULL)
            tc__creq_fail(r, TC_EIO, NULL);
        return;
    }
    c->tcp.data = c;
    conn_connect_or_fail(c);
}

/* Starts connecting c to its current address. Returns 0 or a TC_E* code (nothing reported). */
static int conn_connect(tc__conn *c)
{
    c->state = C_CONNECTING;
    const struct sockaddr *sa = (const struct sockaddr *)&c->origin->addrs[c->addr_idx];
    c->req.connect.data = c;
    int err = uv_tcp_connect(&c->req.connect, &c->tcp, sa, on_connected);
    if (err != 0) {
        c->err = err;
        return err == UV_EMFILE || err == UV_ENFILE || err == UV_ENOBUFS ? TC_EIO : TC_ECONNREFUSED;
    }
    return 0;
}

/* conn_connect from a callback: a failure is reported at once. */
static void conn_connect_or_fail(tc__conn *c)
{
    int err = conn_connect(c);
    if (err != 0)
        conn_fail(c, err, "%s: could not connect: %s", uv_strerror(c->err));
}

/* A new batch each turn: the connects of the turn before are counted off, and up to
 * TC__NATIVE_CONNECT_BATCH waiting connections start theirs. The connector stops on a turn that
 * finds nothing started and nothing waiting. */
static void on_connector(uv_idle_t *h)
{
    tc__native *nat = h->data;
    size_t started = nat->turn_connects;
    nat->turn_connects = 0;
    while (nat->turn_connects < TC__NATIVE_CONNECT_BATCH && !tc__list_empty(&nat->waiting)) {
        tc__conn *c = tc__container_of(nat->waiting.next, tc__conn, link);
        tc__list_remove(&c->link);
        nat->turn_connects++;
        conn_connect_or_fail(c);
    }
    if (started == 0 && nat->turn_connects == 0)
        uv_idle_stop(&nat->connector);
}

/* Connects c now if this turn's batch has room and nobody waits, else queues it for the
 * connector. Returns 0 or a TC_E* code (nothing reported). */
static int conn_connect_soon(tc__conn *c)
{
    tc__native *nat = c->nat;
    (void)uv_idle_start(&nat->connector, on_connector); /* cannot fail for a started loop */
    if (nat->turn_connects < TC__NATIVE_CONNECT_BATCH && tc__list_empty(&nat->waiting)) {
        int err = conn_connect(c);
        if (err == 0) /* a refused socket() costs nothing worth spreading */
            nat->turn_connects++;
        return err;
    }
    c->state = C_CONNECTING; /* the connect timeout, already running, covers the wait */
    tc__list_push_back(&nat->waiting, &c->link);
    return 0;
}

/* ---- DNS ------------------------------------------------------------------------------------ */

/* Fills o->host and o->port from its key "http://host:port" (IPv6 in brackets), followed by
 * " ADDRESS" when its requests connect to that address instead of the host. */
static void origin_parse_key(tc__origin *o)
{
    const char *key = o->entry.key;
    const char *addr = strchr(key, ' ');
    const char *end = addr ? addr : key + strlen(key);
    const char *host = strstr(key, "://");
    host = host && host < end ? host + 3 : key;
    const char *colon = NULL;
    for (const char *p = host; p < end; p++)
        if (*p == ':')
            colon = p;
    size_t hl = colon ? (size_t)(colon - host) : (size_t)(end - host);
    if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') {
        host++;
        hl -= 2;
    }
    if (addr != NULL) {
        host = addr + 1;
        hl = strlen(host);
    }
    if (hl >= sizeof(o->host))
        hl = sizeof(o->host) - 1;
    memcpy(o->host, host, hl);
    o->host[hl] = '\0';
    o->port = colon ? atoi(colon + 1) : 80;
}

/* An IP literal needs no lookup: its one address is set for good. Returns 1 if it was one. */
static int origin_literal(tc__origin *o)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    if (uv_ip4_addr(o->host, o->port, (struct sockaddr_in *)&ss) != 0 &&
        uv_ip6_addr(o->host, o->port, (struct sockaddr_in6 *)&ss) != 0)
        return 0;
    o->addrs = tc__malloc(sizeof(ss));
    if (o->addrs == NULL)
        return 0; /* looked up instead; that copes with memory as it can */
    o->addrs[0] = ss;
    o->naddrs = 1;
    o->addrs_expire_ms = UINT64_MAX;
    return 1;
}

static void on_resolved(uv_getaddrinfo_t *gai_req, int status, struct addrinfo *ais)
{
    tc__gai *g = tc__container_of(gai_req, tc__gai, req);
    tc__native *nat = g->nat;
    tc__origin *o = g->origin;
    tc_client *cl = nat->client;
    tc__list_remove(&g->link);
    o->resolving_now = 0;
    if (status == 0) {
        size_t n = 0;
        for (struct addrinfo *ai = ais; ai && n < TC__NATIVE_MAX_ADDRS; ai = ai->ai_next)
            if (ai->ai_family == AF_INET || ai->ai_family == AF_INET6)
                n++;
        struct sockaddr_storage *sa = n ? tc__calloc(n, sizeof(*sa)) : NULL;
        if (sa != NULL) {
            size_t i = 0;
            for (struct addrinfo *ai = ais; ai && i < n; ai = ai->ai_next)
                if (ai->ai_family == AF_INET || ai->ai_family == AF_INET6)
                    memcpy(&sa[i++], ai->ai_addr, ai->ai_addrlen);
            tc__free(o->addrs);
            o->addrs = sa;
            o->naddrs = n;
            o->addrs_expire_ms = tc__now_ms() + TC__NATIVE_DNS_TTL_MS;
        } else {
            status = n ? UV_ENOMEM : UV_EAI_NONAME;
        }
    }
    uv_freeaddrinfo(ais);
    /* Hand the answer to every connection that waited for it; a failure reported from here may
     * start new requests, which find the list empty and the answer (or no answer) in place. */
    tc__link waiting;
    tc__list_init(&waiting);
    while (!tc__list_empty(&o->resolving)) {
        tc__link *l = o->resolving.next;
        tc__list_remove(l);
        tc__list_push_back(&waiting, l);
    }
    while (!tc__list_empty(&waiting)) {
        tc__conn *c = tc__container_of(waiting.next, tc__conn, link);
        tc__list_remove(&c->link);
        if (status == 0) {
            conn_connect_or_fail(c);
        } else {
            int err = status == UV_ENOMEM ? TC_ENOMEM : TC_EDNS;
            conn_fail(c, err, "%s: could not resolve host %s", o->host);
        }
    }
    tc__origin_unref(cl, o);
    tc__free(g);
    nat->live--;
    native_maybe_free(nat);
}

/* Starts a lookup of c's origin, or joins one in flight; c connects when it answers. */
static int conn_resolve(tc__conn *c)
{
    tc__native *nat = c->nat;
    tc__origin *o = c->origin;
    c->state = C_RESOLVING;
    tc__list_push_back(&o->resolving, &c->link);
    if (o->resolving_now)
        return 0;
    tc__gai *g = tc__calloc(1, sizeof(*g));
    if (g == NULL) {
        tc__list_remove(&c->link);
        return TC_ENOMEM;
    }
    g->nat = nat;
    g->origin = o;
    struct addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_ADDRCONFIG;
    char port[8];
    (void)snprintf(port, sizeof(port), "%d", o->port);
    int err = uv_getaddrinfo(nat->client->loop, &g->req, on_resolved, o->host, port, &hints);
    if (err != 0) {
        tc__free(g);
        tc__list_remove(&c->link);
        return TC_EDNS;
    }
    o->resolving_now = 1;
    tc__list_push_back(&nat->lookups, &g->link);
    tc__origin_ref(nat->client, o);
    nat->live++;
    return 0;
}

/* ---- requests ------------------------------------------------------------------------------- */

/* Opens a new connection for r. Returns 0 or an error after which r is unchanged. */
static int conn_open(tc__native *nat, tc__creq *r)
{
    tc_client *cl = nat->client;
    tc__origin *o = r->origin;
    if (o->port == 0)
        origin_parse_key(o);
    evict_for_one_more(nat);
    tc__conn *c = tc__calloc(1, sizeof(*c));
    if (c == NULL)
        return TC_ENOMEM;
    c->nat = nat;
    c->origin = o;
    c->gen = o->gen;
    tc__list_init(&c->link);
    tc__list_init(&c->lru);
    if (uv_tcp_init(cl->loop, &c->tcp) != 0) {
        tc__free(c);
        return TC_EIO;
    }
    (void)uv_timer_init(cl->loop, &c->timer); /* cannot fail */
    c->tcp.data = c;
    c->timer.data = c;
    c->handles = 2;
    tc__origin_ref(cl, o);
    nat->live++;
    nat->nconns++;
    cl->stats.open_connections++;
    c->r = r;
    r->conn = c;
    /* The connect timeout covers the lookup and every address tried, as libcurl's does. */
    uint64_t cto =
        cl->cfg.connect_timeout_ms ? cl->cfg.connect_timeout_ms : TC__NATIVE_CONNECT_MAX_MS;
    uv_timer_start(&c->timer, on_connect_timeout, cto, 0);

    if (o->addrs == NULL)
        (void)origin_literal(o); /* an IP literal needs no lookup */
    int err;
    if (o->addrs != NULL && o->addrs_expire_ms > tc__now_ms())
        err = conn_connect_soon(c); /* later failures are reported from its callbacks */
    else
        err = conn_resolve(c);
    if (err != 0) {
        conn_take(c);
        conn_close(c, 0);
    }
    return err;
}

int tc__native_start(tc__creq *r)
{
    tc_client *cl = r->client;
    tc__native *nat = native_get(cl);
    if (nat == NULL)
        return TC_ENOMEM;
    tc__link *l = tc__list_last(&r->origin->idle); /* most recently used: likeliest alive */
    if (l == NULL)
        return conn_open(nat, r);
    tc__conn *c = tc__container_of(l, tc__conn, link);
    tc__list_remove(&c->link);
    tc__list_remove(&c->lru);
    uv_ref((uv_handle_t *)&c->tcp);
    uv_ref((uv_handle_t *)&c->timer);
    c->r = r;
    r->conn = c;
    if (conn_send(c) == 0)
        return 0; /* a connection that died since is found out by its read callback */
    /* The socket took nothing: the connection is dead, and nothing was sent, so any method may
     * go on a fresh one. */
    conn_take(c);
    conn_close(c, 0);
    return conn_open(nat, r);
}

void tc__native_abort(tc__creq *r)
{
    tc__conn *c = r->conn;
    if (c == NULL)
        return;
    conn_take(c);
    conn_abort(c);
}

void tc__native_stream_pause(tc__creq *r)
{
    if (r->conn != NULL && r->conn->state == C_BUSY)
        conn_read_stop(r->conn);
}

void tc__native_stream_resume(tc__creq *r)
{
    tc__conn *c = r->conn;
    if (c == NULL || !c->read_stopped)
        return;
    c->read_stopped = 0;
    int err = uv_read_start((uv_stream_t *)&c->tcp, on_native_alloc, on_native_read);
    if (err != 0)
        conn_fail(c, TC_ECONNRESET, "%s: %s", uv_strerror(err));
}

void tc__native_body_flush(tc__creq *r)
{
    tc__conn *c = r->conn;
    /* Not yet connected: conn_send writes the head and what is queued by then. */
    if (c == NULL || c->state != C_BUSY || !c->head_out || c->writing)
        return;
    int err = body_flush(c);
    if (err != 0)
        conn_fail(c, TC_ECONNRESET, "%s: %s", uv_strerror(err));
}

void tc__native_retire(tc_client *cl, tc__origin *o)
{
    (void)cl;
    tc__link *l;
    while ((l = tc__list_first(&o->idle)) != NULL)
        conn_close(tc__container_of(l, tc__conn, link), 0);
}

void tc__native_close(tc_client *cl)
{
    tc__native *nat = cl->native;
    nat->closing = 1;
    /* A lookup still in the thread pool's queue is dropped (its callback then runs with
     * UV_EAI_CANCELED); one already running is waited for: getaddrinfo cannot be interrupted. */
    for (tc__link *l = nat->lookups.next; l != &nat->lookups; l = l->next)
        (void)uv_cancel((uv_req_t *)&tc__container_of(l, tc__gai, link)->req);
    reap(nat, SIZE_MAX);
    tc__link *l;
    while ((l = tc__list_first(&nat->waiting)) != NULL) { /* as before the connector: at once */
        tc__list_remove(l);
        conn_connect_or_fail(tc__container_of(l, tc__conn, link));
    }
    while ((l = tc__list_first(&nat->lru)) != NULL)
        conn_close(tc__container_of(l, tc__conn, lru), 0);
    uv_close((uv_handle_t *)&nat->reaper, on_idle_handle_closed);
    uv_close((uv_handle_t *)&nat->connector, on_idle_handle_closed);
}
