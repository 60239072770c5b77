/*
 * Tests for the pooled HTTP client (src/client.c) against a small raw libuv HTTP/1.1 server that
 * lives in this file and runs on the same loop, on 127.0.0.1 port 0. The request path tells the
 * server how to misbehave on that connection: answer normally (Content-Length or chunked),
 * answer late, reset before or mid-body, send garbage, send a huge body, trickle bytes, hold
 * forever. The server counts connections (open, peak, total), requests being answered (and
 * their peak) and connections the client closed, so pool caps, keep-alive reuse and
 * cancellation are checked from the server's side.
 *
 * Every test runs its own loop under a watchdog and ends with tc_client_close, the server's
 * close and uv_loop_close(loop) == 0. The whole suite runs twice: once on the native HTTP/1.1
 * engine, once with every request forced onto libcurl (TC_CLIENT_ENGINE_CURL).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "base/list.h"
#include "tailcut/client.h"
#include "tailcut/future.h"

#define SRV_INPUT_MAX 65536         /* request bytes buffered per connection */
#define HUGE_STREAM_MAX (64u << 20) /* the streaming server stops here whatever happens */
#define HUGE_PIECE 16384

/* ---- test server ---------------------------------------------------------------------------- */

typedef struct srv srv;

typedef struct sconn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    srv *s;
    struct sconn *prev, *next;
    int id;
    int handles; /* uv handles still open */
    int closing;
    int answering; /* a request is being answered; further input waits */
    int trickle_left;
    int served;   /* requests answered on this connection */
    int rejected; /* not HTTP: answered 400, ignoring the rest */
    size_t streamed;
    size_t len;
    char buf[SRV_INPUT_MAX];
} sconn;

struct srv {
    uv_loop_t *loop;
    uv_tcp_t listener;
    int port;
    int open_handles;
    int conns_open, conns_max, conns_total;
    int active, active_max, requests;
    int *shared_active, *shared_active_max; /* optional: counted across two servers */
    int peer_closed;                        /* connections closed by the client */
    int peer_reset;                         /* of those, closed with a reset */
    int partial_sent;                       /* /slow-body sent its first bytes */
    size_t huge_streamed;
    int next_id;
    sconn *conns;
    char last_method[16];
    char last_xtest[64];
};

enum after_write { AFTER_NONE, AFTER_DONE, AFTER_CLOSE, AFTER_RESET, AFTER_STREAM, AFTER_PARTIAL };

typedef struct swrite {
    uv_write_t req;
    sconn *sc;
    int after;
    char data[];
} swrite;

static void sc_process(sconn *sc);

static void srv_handle_closed(uv_handle_t *h)
{
    srv *s = h->data;
    s->open_handles--;
}

static void sc_handle_closed(uv_handle_t *h)
{
    sconn *sc = h->data;
    srv *s = sc->s;
    s->open_handles--;
    if (--sc->handles > 0)
        return;
    if (sc->prev)
        sc->prev->next = sc->next;
    else
        s->conns = sc->next;
    if (sc->next)
        sc->next->prev = sc->prev;
    free(sc);
}

static void sc_request_done(sconn *sc)
{
    if (!sc->answering)
        return;
    sc->answering = 0;
    sc->s->active--;
    if (sc->s->shared_active)
        (*sc->s->shared_active)--;
}

static void sc_close(sconn *sc, int reset)
{
    if (sc->closing)
        return;
    sc->closing = 1;
    sc_request_done(sc);
    sc->s->conns_open--;
    uv_timer_stop(&sc->timer);
    if (reset)
        uv_tcp_close_reset(&sc->tcp, sc_handle_closed);
    else
        uv_close((uv_handle_t *)&sc->tcp, sc_handle_closed);
    uv_close((uv_handle_t *)&sc->timer, sc_handle_closed);
}

static void sc_stream_more(sconn *sc);

static void sc_written(uv_write_t *req, int status)
{
    swrite *w = tc__container_of(req, swrite, req);
    sconn *sc = w->sc;
    int after = w->after;
    free(w);
    if (status < 0 || sc->closing)
        return;
    switch (after) {
    case AFTER_DONE:
        sc_request_done(sc);
        sc_process(sc);
        break;
    case AFTER_CLOSE:
        sc_close(sc, 0);
        break;
    case AFTER_RESET:
        sc_close(sc, 1);
        break;
    case AFTER_STREAM:
        sc_stream_more(sc);
        break;
    case AFTER_PARTIAL:
        sc->s->partial_sent++;
        break;
    default:
        break;
    }
}

static void sc_write(sconn *sc, const char *data, size_t len, int after)
{
    swrite *w = malloc(sizeof(*w) + len);
    assert_non_null(w);
    memcpy(w->data, data, len);
    w->sc = sc;
    w->after = after;
    uv_buf_t b = uv_buf_init(w->data, (unsigned)len);
    if (uv_write(&w->req, (uv_stream_t *)&sc->tcp, &b, 1, sc_written) != 0) {
        free(w);
        sc_close(sc, 0);
    }
}

static void sc_printf(sconn *sc, int after, const char *fmt, ...)
{
    char tmp[8192];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    assert_true(n > 0 && (size_t)n < sizeof(tmp));
    sc_write(sc, tmp, (size_t)n, after);
}

/* A complete keep-alive response with a Content-Length body. */
static void sc_respond(sconn *sc, int status, const char *body, size_t body_len)
{
    char head[512];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d X\r\nContent-Type: text/plain\r\nX-Conn: %d\r\n"
                     "Content-Length: %zu\r\n\r\n",
                     status, sc->id, body_len);
    char *all = malloc((size_t)n + body_len);
    assert_non_null(all);
    memcpy(all, head, (size_t)n);
    memcpy(all + n, body, body_len);
    sc_write(sc, all, (size_t)n + body_len, AFTER_DONE);
    free(all);
}

static long query_num(const char *path, const char *name, long dflt)
{
    const char *q = strchr(path, '?');
    size_t nlen = strlen(name);
    while (q != NULL) {
        q++;
        if (strncmp(q, name, nlen) == 0 && q[nlen] == '=')
            return strtol(q + nlen + 1, NULL, 10);
        q = strchr(q, '&');
    }
    return dflt;
}

static void sc_on_delay(uv_timer_t *t)
{
    sconn *sc = t->data;
    sc_respond(sc, 200, "late", 4);
}

static void sc_on_close_idle(uv_timer_t *t)
{
    sconn *sc = t->data;
    sc_close(sc, 0); /* the idle keep-alive connection, as a server's idle timeout does */
}

static void sc_on_trickle(uv_timer_t *t)
{
    sconn *sc = t->data;
    sc_write(sc, "t", 1, --sc->trickle_left == 0 ? AFTER_DONE : AFTER_NONE);
    if (sc->trickle_left == 0)
        uv_timer_stop(t);
}

static void sc_stream_more(sconn *sc)
{
    if (sc->streamed >= HUGE_STREAM_MAX) {
        sc_write(sc, "0\r\n\r\n", 5, AFTER_DONE);
        return;
    }
    static char piece[HUGE_PIECE + 32];
    int n = snprintf(piece, sizeof(piece), "%x\r\n", HUGE_PIECE);
    memset(piece + n, 'h', HUGE_PIECE);
    memcpy(piece + n + HUGE_PIECE, "\r\n", 2);
    sc->streamed += HUGE_PIECE;
    sc->s->huge_streamed += HUGE_PIECE;
    sc_write(sc, piece, (size_t)n + HUGE_PIECE + 2, AFTER_STREAM);
}

/* Answers one request according to its path. */
static void sc_route(sconn *sc, const char *method, const char *path, const char *body,
                     size_t body_len)
{
    if (strncmp(path, "/ok", 3) == 0) {
        long n = query_num(path, "n", -1);
        if (n < 0) {
            sc_respond(sc, 200, "ok", 2);
        } else {
            char *b = malloc((size_t)n + 1);
            assert_non_null(b);
            memset(b, 'x', (size_t)n);
            sc_respond(sc, 200, b, (size_t)n);
            free(b);
        }
    } else if (strncmp(path, "/status", 7) == 0) {
        sc_respond(sc, (int)query_num(path, "code", 200), "status", 6);
    } else if (strcmp(path, "/chunked") == 0) {
        sc_printf(sc, AFTER_DONE,
                  "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                  "3\r\nhel\r\n3\r\nlo \r\n5\r\nworld\r\n0\r\nX-Trailer: t\r\n\r\n");
    } else if (strncmp(path, "/delay", 6) == 0) {
        uv_timer_start(&sc->timer, sc_on_delay, (uint64_t)query_num(path, "ms", 100), 0);
    } else if (strcmp(path, "/reset") == 0) {
        sc_close(sc, 1);
    } else if (strcmp(path, "/reset-mid") == 0 || strcmp(path, "/close-mid") == 0) {
        char b[1100];
        int n = snprintf(b, sizeof(b), "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n");
        memset(b + n, 'm', 1000);
        sc_write(sc, b, (size_t)n + 1000, path[1] == 'r' ? AFTER_RESET : AFTER_CLOSE);
    } else if (strcmp(path, "/garbage") == 0) {
        sc_printf(sc, AFTER_CLOSE, "this is not http at all\r\n\r\n");
    } else if (strcmp(path, "/badstatus") == 0) {
        sc_printf(sc, AFTER_CLOSE, "HTTP/1.1 2x0 What\r\nContent-Length: 0\r\n\r\n");
    } else if (strcmp(path, "/huge") == 0) {
        sc_printf(sc, AFTER_NONE, "HTTP/1.1 200 OK\r\nContent-Length: 104857600\r\n\r\n");
    } else if (strcmp(path, "/huge-chunked") == 0) {
        sc_printf(sc, AFTER_STREAM, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    } else if (strcmp(path, "/bigheaders") == 0) {
        static char big[120 * 1024];
        size_t n = (size_t)snprintf(big, sizeof(big), "HTTP/1.1 200 OK\r\n");
        for (int i = 0; i < 100; i++) {
            n += (size_t)snprintf(big + n, sizeof(big) - n, "X-Filler-%03d: ", i);
            memset(big + n, 'f', 1000);
            n += 1000;
            memcpy(big + n, "\r\n", 2);
            n += 2;
        }
        n += (size_t)snprintf(big + n, sizeof(big) - n, "Content-Length: 2\r\n\r\nok");
        sc_write(sc, big, n, AFTER_DONE);
    } else if (strcmp(path, "/trickle") == 0) {
        sc->trickle_left = 100;
        sc_printf(sc, AFTER_NONE, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n");
        uv_timer_start(&sc->timer, sc_on_trickle, 20, 20);
    } else if (strcmp(path, "/hold") == 0) {
        /* never answer */
    } else if (strcmp(path, "/slow-body") == 0) {
        sc_printf(sc, AFTER_PARTIAL, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789");
    } else if (strcmp(path, "/echo") == 0) {
        char b[4096];
        int n =
            snprintf(b, sizeof(b), "%s|%.*s|%s", method, (int)body_len, body, sc->s->last_xtest);
        sc_respond(sc, 200, b, (size_t)n);
    } else if (strcmp(path, "/partial-head") == 0) {
        sc_printf(sc, AFTER_PARTIAL, "HTTP/1.1 200 OK\r\nContent-Le");
    } else if (strcmp(path, "/close-idle") == 0) {
        sc_respond(sc, 200, "bye soon", 8);
        uv_timer_start(&sc->timer, sc_on_close_idle, 30, 0);
    } else if (strcmp(path, "/interim") == 0) {
        sc_printf(sc, AFTER_DONE,
                  "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n"
                  "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal");
    } else if (strcmp(path, "/close") == 0) {
        sc_printf(sc, AFTER_CLOSE,
                  "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\nbye");
    } else if (strcmp(path, "/http10") == 0) {
        sc_printf(sc, AFTER_CLOSE, "HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\nold!");
    } else if (strcmp(path, "/eof-body") == 0) {
        sc_printf(sc, AFTER_CLOSE, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil eof");
    } else if (strcmp(path, "/chunked-ext") == 0) {
        sc_printf(
            sc, AFTER_DONE,
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            "4;name=value;x\r\nab\r\n\r\n2 ; q=\"s\"\r\ncd\r\n0\r\nX-T1: a\r\nX-T2: b\r\n\r\n");
    } else if (strcmp(path, "/die-on-reuse") == 0) {
        if (sc->served > 1)
            sc_close(sc, 0); /* as a server that timed the idle connection out just now */
        else
            sc_respond(sc, 200, "first", 5);
    } else if (strcmp(path, "/redirect") == 0) {
        sc_printf(sc, AFTER_DONE,
                  "HTTP/1.1 302 Found\r\nLocation: /ok\r\nContent-Length: 0\r\n\r\n");
    } else {
        sc_respond(sc, 404, "nope", 4);
    }
}

static const char *find_header(const char *head, size_t hlen, const char *name)
{
    size_t nlen = strlen(name);
    for (const char *p = head; p && p < head + hlen; p = strstr(p, "\r\n")) {
        p += (p == head) ? 0 : 2;
        if (strncasecmp(p, name, nlen) == 0 && p[nlen] == ':')
            return p + nlen + 1;
    }
    return NULL;
}

/* Parses and answers buffered requests, one at a time. */
static void sc_process(sconn *sc)
{
    srv *s = sc->s;
    while (!sc->answering && !sc->closing) {
        char *end = memmem(sc->buf, sc->len, "\r\n\r\n", 4);
        if (end == NULL)
            return;
        size_t hlen = (size_t)(end - sc->buf) + 4;
        const char *cl = find_header(sc->buf, hlen, "content-length");
        size_t body_len = cl ? (size_t)strtoul(cl, NULL, 10) : 0;
        if (sc->len < hlen + body_len)
            return;
        char method[16] = "", path[1024] = "", body[2048] = "";
        sscanf(sc->buf, "%15s %1023s", method, path);
        const char *xt = find_header(sc->buf, hlen, "x-test");
        s->last_xtest[0] = '\0';
        if (xt)
            sscanf(xt, " %63[^\r\n]", s->last_xtest);
        snprintf(s->last_method, sizeof(s->last_method), "%s", method);
        size_t bl = body_len < sizeof(body) ? body_len : sizeof(body) - 1;
        memcpy(body, sc->buf + hlen, bl);
        memmove(sc->buf, sc->buf + hlen + body_len, sc->len - hlen - body_len);
        sc->len -= hlen + body_len;

        sc->answering = 1;
        sc->served++;
        s->requests++;
        if (++s->active > s->active_max)
            s->active_max = s->active;
        if (s->shared_active && ++*s->shared_active > *s->shared_active_max)
            *s->shared_active_max = *s->shared_active;
        sc_route(sc, method, path, body, bl);
    }
}

static void sc_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    sconn *sc = h->data;
    (void)suggested;
    *b = uv_buf_init(sc->buf + sc->len, (unsigned)(sizeof(sc->buf) - sc->len));
}

static void sc_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b)
{
    sconn *sc = st->data;
    (void)b;
    if (nread < 0) {
        if (!sc->closing) {
            sc->s->peer_closed++;
            if (nread == UV_ECONNRESET)
                sc->s->peer_reset++;
            sc_close(sc, 0);
        }
        return;
    }
    sc->len += (size_t)nread;
    if (sc->rejected)
        return;
    if (sc->len > 0 && (unsigned char)sc->buf[0] == 0x16 && !sc->answering) {
        /* A TLS ClientHello on this plain port: answer like a real HTTP server would. */
        sc->rejected = 1;
        sc_printf(sc, AFTER_CLOSE, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        return;
    }
    if (sc->len >= 12 && strncmp(sc->buf, "POST /early ", 12) == 0 &&
        memmem(sc->buf, sc->len, "\r\n\r\n", 4) != NULL) {
        /* Answers as soon as the head is in, then stops reading: the client's body write
         * stays pending while the answer arrives. */
        sc->s->requests++;
        sc->rejected = 1;
        uv_read_stop((uv_stream_t *)&sc->tcp);
        sc_printf(sc, AFTER_NONE, "HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\n\r\n");
        return;
    }
    if (sc->len == sizeof(sc->buf)) {
        sc_close(sc, 1);
        return;
    }
    sc_process(sc);
}

static void srv_on_connection(uv_stream_t *l, int status)
{
    srv *s = l->data;
    assert_int_equal(status, 0);
    sconn *sc = calloc(1, sizeof(*sc));
    assert_non_null(sc);
    sc->s = s;
    sc->id = ++s->next_id;
    assert_int_equal(uv_tcp_init(s->loop, &sc->tcp), 0);
    assert_int_equal(uv_timer_init(s->loop, &sc->timer), 0);
    sc->tcp.data = sc;
    sc->timer.data = sc;
    sc->handles = 2;
    s->open_handles += 2;
    sc->next = s->conns;
    if (s->conns)
        s->conns->prev = sc;
    s->conns = sc;
    assert_int_equal(uv_accept(l, (uv_stream_t *)&sc->tcp), 0);
    uv_tcp_nodelay(&sc->tcp, 1);
    s->conns_total++;
    if (++s->conns_open > s->conns_max)
        s->conns_max = s->conns_open;
    assert_int_equal(uv_read_start((uv_stream_t *)&sc->tcp, sc_alloc, sc_read), 0);
}

static void srv_start(srv *s, uv_loop_t *loop)
{
    memset(s, 0, sizeof(*s));
    s->loop = loop;
    assert_int_equal(uv_tcp_init(loop, &s->listener), 0);
    s->listener.data = s;
    s->open_handles = 1;
    struct sockaddr_in a;
    assert_int_equal(uv_ip4_addr("127.0.0.1", 0, &a), 0);
    assert_int_equal(uv_tcp_bind(&s->listener, (const struct sockaddr *)&a, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&s->listener, 1024, srv_on_connection), 0);
    struct sockaddr_in got;
    int len = sizeof(got);
    assert_int_equal(uv_tcp_getsockname(&s->listener, (struct sockaddr *)&got, &len), 0);
    s->port = ntohs(got.sin_port);
}

static void srv_close(srv *s)
{
    if (s->loop == NULL)
        return;
    uv_close((uv_handle_t *)&s->listener, srv_handle_closed);
    for (sconn *sc = s->conns; sc; sc = sc->next)
        sc_close(sc, 0);
}

/* ---- test context --------------------------------------------------------------------------- */

typedef struct tctx {
    uv_loop_t loop;
    uv_timer_t tick; /* keeps UV_RUN_ONCE waking up; also the watchdog clock */
    uint64_t started_ms;
    srv s, s2;
    tc_client *client;
    int client_closed;
    char url[256];
} tctx;

static void on_tick(uv_timer_t *t)
{
    (void)t;
}

static tc_client_engine g_engine = TC_CLIENT_ENGINE_AUTO; /* the group being run */

static tctx *tctx_new(const tc_client_config *given)
{
    tc_client_config cfg;
    if (given != NULL)
        cfg = *given;
    else
        tc_client_config_init(&cfg);
    cfg.engine = g_engine;
    tctx *t = calloc(1, sizeof(*t));
    assert_non_null(t);
    assert_int_equal(uv_loop_init(&t->loop), 0);
    assert_int_equal(uv_timer_init(&t->loop, &t->tick), 0);
    assert_int_equal(uv_timer_start(&t->tick, on_tick, 20, 20), 0);
    t->started_ms = uv_now(&t->loop);
    srv_start(&t->s, &t->loop);
    assert_int_equal(tc_client_new(&t->client, &t->loop, &cfg), 0);
    return t;
}

static const char *url_of(tctx *t, srv *s, const char *path)
{
    snprintf(t->url, sizeof(t->url), "http://127.0.0.1:%d%s", s->port, path);
    return t->url;
}

/* Runs the loop until *flag becomes nonzero or limit_ms pass; returns the flag. */
static int run_until_flag(tctx *t, const int *flag, uint64_t limit_ms)
{
    uint64_t start = uv_hrtime();
    while (!*flag && (uv_hrtime() - start) / 1000000 < limit_ms)
        uv_run(&t->loop, UV_RUN_ONCE);
    return *flag;
}

static int run_until_done(tctx *t, tc_future *f, uint64_t limit_ms)
{
    uint64_t start = uv_hrtime();
    while (!tc_future_done(f) && (uv_hrtime() - start) / 1000000 < limit_ms)
        uv_run(&t->loop, UV_RUN_ONCE);
    return tc_future_done(f);
}

static void run_for(tctx *t, uint64_t ms)
{
    uint64_t start = uv_hrtime();
    while ((uv_hrtime() - start) / 1000000 < ms)
        uv_run(&t->loop, UV_RUN_ONCE);
}

static void on_client_closed(tc_client *c, void *data)
{
    tctx *t = data;
    assert_ptr_equal(c, t->client);
    t->client_closed++;
}

/* Closes client and servers, runs the loop dry and checks that nothing is left. */
static void tctx_finish(tctx *t)
{
    if (t->client != NULL && !t->client_closed)
        tc_client_close(t->client, on_client_closed, t);
    srv_close(&t->s);
    srv_close(&t->s2);
    uv_close((uv_handle_t *)&t->tick, NULL);
    uint64_t start = uv_hrtime();
    while (uv_run(&t->loop, UV_RUN_NOWAIT) != 0 && (uv_hrtime() - start) / 1000000 < 10000)
        uv_run(&t->loop, UV_RUN_ONCE);
    assert_int_equal(t->client_closed, 1);
    assert_int_equal(t->s.open_handles, 0);
    assert_int_equal(t->s2.open_handles, 0);
    assert_int_equal(uv_loop_close(&t->loop), 0);
    free(t);
}

/* Starts a GET of path on s with an optional per-request timeout. */
static tc_future *get(tctx *t, srv *s, const char *path, uint64_t timeout_ms)
{
    tc_client_request req;
    memset(&req, 0, sizeof(req));
    req.url = url_of(t, s, path);
    req.timeout_ms = timeout_ms;
    tc_future *f = NULL;
    assert_int_equal(tc_client_request_start(&f, t->client, &req), 0);
    assert_non_null(f);
    return f;
}

static const tc_response *expect_response(tctx *t, tc_future *f, int status)
{
    assert_true(run_until_done(t, f, 10000));
    if (tc_future_state_of(f) != TC_FUTURE_FULFILLED)
        fail_msg("expected a response, got %s: %s", tc_err_name(tc_future_error(f)),
                 tc_future_message(f));
    const tc_response *r = tc_future_value(f);
    assert_non_null(r);
    assert_int_equal(r->status, status);
    return r;
}

static void expect_error(tctx *t, tc_future *f, int err)
{
    assert_true(run_until_done(t, f, 10000));
    if (tc_future_state_of(f) != TC_FUTURE_REJECTED || tc_future_error(f) != err)
        fail_msg("expected %s, got state %d %s: %s", tc_err_name(err), tc_future_state_of(f),
                 tc_err_name(tc_future_error(f)), tc_future_message(f));
    assert_true(strlen(tc_future_message(f)) > 0);
}

static void expect_stats_settled(tctx *t)
{
    tc_client_stats st;
    tc_client_get_stats(t->client, &st);
    assert_int_equal(st.in_flight, 0);
    assert_int_equal(st.started, st.completed + st.failed + st.cancelled);
}

/* ---- tests: responses ----------------------------------------------------------------------- */

static void test_get_content_length(void **state)
{
    (void)state;
    tctx *t = tctx_new(NULL);
    tc_future *f = get(t, &t->s, "/ok", 0);
    const tc_response *r = expect_response(t, f, 200);
    assert_int_equal(r->body_len, 2);
    assert_string_equal(r->body, "ok");
    assert_int_equal(r->http_version, 11);
    assert_true(strncmp(r->headers, "HTTP/1.1 200", 12) == 0);
    assert_int_equal(strlen(r->headers), r->headers_len);
    char v[32];
    assert_int_equal(tc_response_header(r, "content-length", v, sizeof(v)), 1);
    assert_string_equal(v, "2");
    assert_int_equal(tc_response_header(r, "CONTENT-TYPE", v, 5), 10); /* truncated copy */
    assert_string_equal(v, "text");
    assert_int_equal(tc_response_header(r, "X-Missing", v, sizeof(v)), -1);
    assert_true(r->total_ms >= 0.0);
    assert_true(r->queued_ms >= 0.0 && r->queued_ms <= r->total_ms);
    tc_client_stats st;
    tc_client_get_stats(t->client, &st);
    assert_int_equal(st.started, 1);
    assert_int_equal(st.completed, 1);
    assert_int_equal(st.open_connections, 1); /* kept alive */
    expect_stats_settled(t);
    tc_future_unref(f);
    tctx_finish(t);
}

static void test_get_chunked_and_large_body(void **state)
{
    (void)state;
    tctx *t = tctx_new(NULL);
    tc_future *f1 = get(t, &t->s, "/chunked", 0);
    tc_future *f2 = get(t, &t->s, "/ok?n=300000", 0);
    const tc_response *r1 = expect_response(t, f1, 200);
    assert_string_equal(r1->body, "hello world");
    assert_int_equal(r1->body_len, 11);
    assert_null(strstr(r1->headers, "X-Trailer")); /* trailers are not the header block */
    const tc_response *r2 = expect_response(t, f2, 200);
    assert_int_equal(r2->body_len, 300000);
    assert_int_equal(r2->body[0], 'x');
    assert_int_equal(r2->body[299999], 'x');
    assert_int_equal(r2->body[300000], '\0');
    tc_future_unref(f1);
    tc_future_unref(f2);
    tctx_finish(t);
}

static void test_post_with_headers_and_status(void **state)
{
    (void)state;
    tctx *t = tctx_new(NULL);
    tc_header hdrs[] = {{"X-Test", "hello-header"}, {"X-Empty", ""}};
    tc_client_request req = {.method = "POST",
                             .url = url_of(t, &t->s, "/echo"),
                             .headers = hdrs,
                             .nheaders = 2,
                             .body = "payload",
                             .body_len = 7};
    tc_future *f = NULL;
    assert_int_equal(tc_client_request_start(&f, t->client, &req), 0);
    const tc_response *r = expect_response(t, f, 200);
    assert_string_equal(r->body, "POST|payload|hello-header");
    tc_future_unref(f);

    req.method = "PUT";
    req.url = url_of(t, &t->s, "/echo");
    assert_int_equal(tc_client_request_start(&f, t->client, &req), 0);
    r = expect_response(t, f, 200);
    assert_string_equal(r->body, "PUT|payload|hello-header");
    tc_future_unref(f);

    /* HEAD: headers only. */
    tc_client_request head = {.method = "HEAD", .url = url_of(t, &t->s, "/ok")};
    assert_int_equal(tc_client_request_start(&f, t->client, &head), 0);
    r = expect_response(t, f, 200);
    assert_int_equal(r->body_len, 0);
    assert_string_equal(r->body, "");
    tc_future_unref(f);

    /* Any status is a response, not an error. */
    f = get(t, &t->s, "/status?code=503", 0);
    r = expect_response(t, f, 503);
    assert_string_equal(r->body, "status");
    tc_future_unref(f);
    expect_stats_settled(t);
    tctx_finish(t);
}

static void test_redirects_off_by_default(void **state)
{
    (void)state;
    tctx *t = tctx_new(NULL);
    tc_future *f = get(t, &t->s, "/redirect", 0);
    const tc_response *r = expect_response(t, f, 302);
    char loc[64];
    assert_int_equal(tc_response_header(r, "location", loc, sizeof(loc)), 3);
    assert_string_equal(loc, "/ok");
    tc_future_unref(f);
    tctx_finish(t);

    tc_client_config cfg;
    tc_client_config_init(&cfg);
    cfg.follow_redirects = 1;
    t = tctx_new(&cfg);
    f = get(t, &t->s, "/redirect", 0);
    r = expect_response(t, f, 200);
    assert_string_equal(r->body, "ok");
    assert_int_equal(tc_response_header(r, "location", NULL, 0), -1); /* last block only */
    tc_future_unref(f);
    tctx_finish(t);
}

/* ---- tests: errors -------------------------------------------------------------------------- */

static void test_bad_arguments_and_urls(void **state)
{
    (void)state;
    tctx *t = tctx_new(NULL);
    tc_future *f = NULL;
    tc_client_request req = {.url = NULL};
    assert_int_equal(tc_client_request_start(&f, t->client, &req), TC_EINVAL);
    assert_int_equal(tc_client_request_start(NULL, t->client, &req), TC_EINVAL);
    tc_header bad[] = {{"X-Evil", "a\r\nInjected: 1"}};
    tc_client_request inj = {.url = "http://127.0.0.1:1/", .headers = bad, .nheaders = 1};
    assert_int_equal(tc_client_request_start(&f, t->client, &inj), TC_EINVAL);
    tc_client_request badm = {.url = "http://127.0.0.1:1/", .method = "GE T"};
    assert_int_equal(tc_client_request_start(&f, t->client, &badm), TC_EINVAL);
    assert_null(f);

    const char *bad_urls[] = {"ftp://127.0.0.1/", "not a url", "http:///nohost",
                              "http://127.0.0.1:99999/", "//127.0.0.1/"};
    for (size_t i = 0; i < sizeof(bad_urls) / sizeof(bad_urls[0]); i++) {
        assert_int_equal(tc_client_get(&f, t->client, bad_urls[i]), 0);
        expect_error(t, f, TC_EURL);
        tc_future_unref(f);
    }
    expect_stats_settled(t);
    tctx_finish(t);
}

static void test_connection_refused(void **state)
{
    (void)state;
    tctx *t = tctx_new(NULL);
    /* Bind a port, then close it: nothing listens there now. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    socklen_t alen = sizeof(a);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
    close(fd);
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", ntohs(a.sin_port));
    tc_future *f = NULL;
    assert_int_equal(tc_client_get(&f, t->client, url), 0);
    expect_error(t, f, TC_ECONNREFUSED);
    tc_future_unref(f);
    expect_stats_settled(t);
    tctx_finish(t);
}

static void test_dns_failure(void **state)
{
    (void)state;
    tctx *t = tctx_new(NULL);
    tc_future *f = NULL;
    assert_int_equal(tc_client_get(&f, t->client, "http://no-such-host.invalid/"), 0);
    expect_error(t, f, TC_EDNS);
    assert_non_null(strstr(tc_future_message(f), "no-such-host.invalid"));
    tc_future_unref(f);
    tctx_finish(t);
}

static void test_reset_and_truncation(void **state)
{
    (void)state;
    tctx *t = tctx_new(NULL);
    tc_future *f = get(t, &t->s, "/reset", 0);
    expect_error(t, f, TC_ECONNRESET);
    tc_future_unref(f);
    f = get(t, &t->s, "/reset-mid", 0);
    expect_error(t, f, TC_ECONNRESET);
    tc_future_unref(f);
    f = get(t, &t->s, "/close-mid", 0);
    expect_error(t, f, TC_ECONNRESET);
    tc_future_unref(f);
    expect_stats_settled(t);
    tctx_finish(t);
}

static void test_malformed_responses(void **state)
{
    (void)state;
    tctx *t = tctx_new(NULL);
    tc_future *f = get(t, &t->s, "/garbage", 0);
    expect_error(t, f, TC_EPROTO);
    tc_future_unref(f);
    f = get(t, &t->s, "/badstatus", 0);
    expect_error(t, f, TC_EPROTO);
    tc_future_unref(f);
    f = get(t, &t->s, "/bigheaders", 0);
    expect_error(t, f, TC_EPROTO);
    assert_non_null(strstr(tc_future_message(f), "headers"));
    tc_future_unref(f);
    tctx_finish(t);
}

static void test_body_too_large(void **state)
{
    (void)state;
    tc_client_config cfg;
    tc_client_config_init(&cfg);
    cfg.max_body = 100000;
    tctx *t = tctx_new(&cfg);
    /* Exactly at the limit is fine. */
    tc_future *f = get(t, &t->s, "/ok?n=100000", 0);
    expect_response(t, f, 200);
    tc_future_unref(f);
    /* Announced too large: rejected from the headers. */
    f = get(t, &t->s, "/huge", 0);
    expect_error(t, f, TC_ETOOLARGE);
    tc_future_unref(f);
    /* Streamed without a length: aborted as soon as the limit is crossed. */
    int closed_before = t->s.peer_closed;
    f = get(t, &t->s, "/huge-chunked", 0);
    expect_error(t, f, TC_ETOOLARGE);
    tc_future_unref(f);
    /* Per-request limit overrides the client's. */
    tc_client_request req = {.url = url_of(t, &t->s, "/ok?n=5000"), .max_body = 4999};
    assert_int_equal(tc_client_request_start(&f, t->client, &req), 0);
    expect_error(t, f, TC_ETOOLARGE);
    tc_future_unref(f);
    /* The server saw the streaming connection closed, long before the stream's end. */
    int want = closed_before + 1;
    uint64_t start = uv_hrtime();
    while (t->s.peer_closed < want && (uv_hrtime() - start) / 1000000 < 5000)
        uv_run(&t->loop, UV_RUN_ONCE);
    assert_true(t->s.peer_closed >= want);
    assert_true(t->s.huge_streamed < 16u << 20);
    expect_stats_settled(t);
    tctx_finish(t);
}

static void test_tls_to_plain_server(void **state)
{
    (void)state;
    tctx *t = tctx_new(NULL);
    char url[64];
    snprintf(url, sizeof(url), "https://127.0.0.1:%d/ok", t->s.port);
    tc_future *f = NULL;
    assert_int_equal(tc_client_get(&f, t->client, url), 0);
    expect_error(t, f, TC_ETLS);
    tc_future_unref(f);
    tctx_finish(t);
}

/* ---- tests: time ---------------------------------------------------------------------------- */

static double elapsed_ms(uint64_t start_ns)
{
    return (double)(uv_hrtime() - start_ns) / 1e6;
}

static void test_timeout_hold_and_trickle(void **state)
{
    (void)state;
    tctx *t = tctx_new(NULL);
    uint64_t start = uv_hrtime();
    tc_future *f = get(t, &t->s, "/hold", 200);
    expect_error(t, f, TC_ETIMEDOUT);
    double ms = elapsed_ms(start);
    print_message("deadline 200 ms: rejected after %.2f ms\n", ms);
    assert_true(ms >= 195.0);
    assert_true(ms < 1500.0);
    tc_future_unref(f);

    /* Bytes keep arriving, but the whole request has a deadline. */
    start = uv_hrtime();
    f = get(t, &t->s, "/trickle", 300);
    expect_error(t, f, TC_ETIMEDOUT);
    ms = elapsed_ms(start);
    assert_true(ms >= 295.0);
    assert_true(ms < 1500.0);
    tc_future_unref(f);
    /* Both connections were closed, not returned to the pool. */
    uint64_t w = uv_hrtime();
    while (t->s.peer_closed < 2 && elapsed_ms(w) < 3000)
        uv_run(&t->loop, UV_RUN_ONCE);
    assert_int_equal(t->s.peer_closed, 2);
    expect_stats_settled(t);
    tctx_finish(t);
}

static void test_queue_time_counts_toward_timeout(void **state)
{
    (void)state;
    tc_client_config cfg;
    tc_client_config_init(&cfg);
    cfg.max_connections = 1;
    tctx *t = tctx_new(&cfg);
    tc_future *slow = get(t, &t->s, "/delay?ms=700", 5000);
    uint64_t start = uv_hrtime();
    tc_future *queued = get(t, &t->s, "/ok", 250);
    expect_error(t, queued, TC_ETIMEDOUT);
    double ms = elapsed_ms(start);
    print_message("deadline 250 ms while queued: rejected after %.2f ms\n", ms);
    assert_true(ms >= 245.0);
    assert_true(ms < 650.0); /* long before the slow request frees the connection */
    assert_non_null(strstr(tc_future_message(queued), "queued"));
    assert_false(tc_future_done(slow));
    const tc_response *r = expect_response(t, slow, 200);
    assert_string_equal(r->body, "late");
    tc_client_stats st;
    tc_client_get_stats(t->client, &st);
    assert_int_equal(st.queued, 1);
    assert_int_equal(st.failed, 1);
    assert_int_equal(t->s.requests, 1); /* the timed-out request never reached the server */
    tc_future_unref(slow);
    tc_future_unref(queued);
    tctx_finish(t);
}

/* The running request and the one queued behind it expire together: the freed slot must not
 * start the queued one (it is already late), and both report why. */
static void test_simultaneous_deadlines(void **state)
{
    (void)state;
    tc_client_config cfg;
    tc_client_config_init(&cfg);
    cfg.max_connections = 1;
    cfg.timeout_ms = 250;
    tctx *t = tctx_new(&cfg);
    tc_future *running = get(t, &t->s, "/hold", 0);
    tc_future *queued = get(t, &t->s, "/ok", 0);
    expect_error(t, running, TC_ETIMEDOUT);
    expect_error(t, queued, TC_ETIMEDOUT);
    assert_null(strstr(tc_future_message(running), "queued"));
    assert_non_null(strstr(tc_future_message(queued), "queued"));
    run_for(t, 50);
    assert_int_equal(t->s.requests, 1);
    assert_int_equal(t->s.conns_total, 1);
    tc_future_unref(running);
    tc_future_unref(queued);
    expect_stats_settled(t);
    tctx_finish(t);
}

static void test_connect_timeout(void **state)
{
    (void)state;
    /* A listener whose accept queue is full drops SYNs: connect() hangs. */
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(lfd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(lfd, 0), 0);
    socklen_t alen = sizeof(a);
    assert_int_equal(getsockname(lfd, (struct sockaddr *)&a, &alen), 0);
    int fillers[4];
    for (int i = 0; i < 4; i++) {
        fillers[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        assert_true(fillers[i] >= 0);
        (void)connect(fillers[i], (struct sockaddr *)&a, sizeof(a));
    }
    tc_client_config cfg;
    tc_client_config_init(&cfg);
    cfg.connect_timeout_ms = 200;
    tctx *t = tctx_new(&cfg);
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", ntohs(a.sin_port));
    uint64_t start = uv_hrtime();
    tc_future *f = NULL;
    assert_int_equal(tc_client_get(&f, t->client, url), 0);
    expect_error(t, f, TC_ETIMEDOUT);
    double ms = elapsed_ms(start);
    assert_true(ms >= 190.0);
    assert_true(ms < 2000.0);
    tc_future_unref(f);
    tctx_finish(t);
    for (int i = 0; i < 4; i++)
        close(fillers[i]);
    close(lfd);
}

/* ---- tests: cancellation and close ------------------------------------------------------------
 */

static void test_cancel_mid_body(void **state)
{
    (void)state;
    tctx *t = tctx_new(NULL);
    tc_future *f = get(t, &t->s, "/slow-body", 0);
    assert_true(run_until_flag(t, &t->s.partial_sent, 5000));
    run_for(t, 50); /* let the client read the first bytes */
    assert_false(tc_future_done(f));
    assert_int_equal(tc_future_cancel(f), 1);
    assert_int_equal(tc_future_state_of(f), TC_FUTURE_CANCELLED);
    tc_client_stats st;
    tc_client_get_stats(t->client, &st);
    assert_int_equal(st.cancelled, 1);
    assert_int_equal(st.in_flight, 0);
    assert_int_equal(st.open_connections, 0); /* closed at once, not pooled */
    assert_true(run_until_flag(t, &t->s.peer_closed, 3000));
    assert_int_equal(t->s.conns_open, 0);
    tc_future_unref(f);
    tctx_finish(t);
}

static void test_cancel_queued_and_unref_running(void **state)
{
    (void)state;
    tc_client_config cfg;
    tc_client_config_init(&cfg);
    cfg.max_connections = 1;
    tctx *t = tctx_new(&cfg);
    tc_future *a = get(t, &t->s, "/delay?ms=100", 0);
    tc_future *b = get(t, &t->s, "/ok", 0);
    tc_future *c = get(t, &t->s, "/ok?n=3", 0);
    assert_int_equal(tc_future_cancel(b), 1);
    tc_future_unref(b);
    tc_future_unref(a); /* nobody waits for a: it still completes and frees itself */
    const tc_response *r = expect_response(t, c, 200);
    assert_string_equal(r->body, "xxx");
    assert_true(r->queued_ms > 50.0);
    tc_client_stats st;
    tc_client_get_stats(t->client, &st);
    assert_int_equal(st.completed, 2);
    assert_int_equal(st.cancelled, 1);
    assert_int_equal(t->s.requests, 2);
    assert_int_equal(t->s.conns_total, 1); /* c reused a's connection */
    tc_future_unref(c);
    expect_stats_settled(t);
    tctx_finish(t);
}

static void test_close_with_requests_in_flight(void **state)
{
    (void)state;
    tc_client_config cfg;
    tc_client_config_init(&cfg);
    cfg.max_connections = 5;
    tctx *t = tctx_new(&cfg);
    tc_future *fs[10];
    for (int i = 0; i < 10; i++)
        fs[i] = get(t, &t->s, "/hold", 0);
    uint64_t start = uv_hrtime();
    while (t->s.requests < 5 && elapsed_ms(start) < 5000)
        uv_run(&t->loop, UV_RUN_ONCE);
    assert_int_equal(t->s.requests, 5);
    tc_client_close(t->client, on_client_closed, t);
    for (int i = 0; i < 10; i++) {
        assert_int_equal(tc_future_state_of(fs[i]), TC_FUTURE_CANCELLED);
        tc_future_unref(fs[i]);
    }
    tc_future *late = NULL;
    assert_int_equal(tc_client_get(&late, t->client, url_of(t, &t->s, "/ok")), TC_ECLOSED);
    assert_null(late);
    assert_true(run_until_flag(t, &t->client_closed, 5000));
    start = uv_hrtime();
    while (t->s.peer_closed < 5 && elapsed_ms(start) < 5000)
        uv_run(&t->loop, UV_RUN_ONCE);
    assert_int_equal(t->s.peer_closed, 5);
    tctx_finish(t);
}

/* Requests cancelled at every point of their connect, while the server accepts on the same loop.
 * libcurl closes a connecting socket right after CURL_POLL_REMOVE without our close-socket
 * callback, and fd numbers are reused at once: a poll left armed on such an fd makes libuv abort
 * (EBADF on its pending epoll ADD) or steal another handle's events. A 0 ms timer started right
 * after the request runs in the same timers pass as the client's own curl timer, so the cancel
 * lands just after curl opened the socket and asked for it to be watched. */
typedef struct cancel_later {
    uv_timer_t timer;
    tc_future *f;
} cancel_later;

static void on_cancel_later(uv_timer_t *t)
{
    cancel_later *cl = tc__container_of(t, cancel_later, timer);
    tc_future_cancel(cl->f); /* 0 if it already completed: fine too */
}

static void test_cancel_while_connecting(void **state)
{
    (void)state;
    tctx *t = tctx_new(NULL);
    cancel_later cl;
    assert_int_equal(uv_timer_init(&t->loop, &cl.timer), 0);
    for (int i = 0; i < 300; i++) {
        cl.f = get(t, &t->s, "/ok", 0);
        for (int k = 0; k < i % 3; k++)
            uv_run(&t->loop, UV_RUN_NOWAIT);
        assert_int_equal(uv_timer_start(&cl.timer, on_cancel_later, 0, 0), 0);
        while (!tc_future_done(cl.f))
            uv_run(&t->loop, UV_RUN_ONCE);
        tc_future_unref(cl.f);
    }
    uv_close((uv_handle_t *)&cl.timer, NULL);
    tc_future *last = get(t, &t->s, "/ok", 0);
    const tc_response *r = expect_response(t, last, 200);
    assert_string_equal(r->body, "ok");
    tc_future_unref(last);
    tc_client_stats st;
    tc_client_get_stats(t->client, &st);
    assert_true(st.cancelled > 100);
    expect_stats_settled(t);
    tctx_finish(t);
}

typedef struct close_from_cb {
    tctx *t;
    tc_future *others[3];
    int fired;
} close_from_cb;

static void close_in_callback(tc_future *f, void *data)
{
    close_from_cb *cc = data;
    (void)f;
    cc->fired++;
    tc_client_close(cc->t->client, on_client_closed, cc->t);
    for (int i = 0; i < 3; i++)
        assert_int_equal(tc_future_state_of(cc->others[i]), TC_FUTURE_CANCELLED);
}

static void test_close_from_a_done_callback(void **state)
{
    (void)state;
    tctx *t = tctx_new(NULL);
    close_from_cb cc = {.t = t};
    tc_future *first = get(t, &t->s, "/ok", 0);
    for (int i = 0; i < 3; i++)
        cc.others[i] = get(t, &t->s, "/hold", 0);
    assert_int_equal(tc_future_on_done(first, close_in_callback, &cc), 0);
    assert_true(run_until_flag(t, &t->client_closed, 5000));
    assert_int_equal(cc.fired, 1);
    assert_int_equal(tc_future_state_of(first), TC_FUTURE_FULFILLED);
    tc_future_unref(first);
    for (int i = 0; i < 3; i++)
        tc_future_unref(cc.others[i]);
    tctx_finish(t);
}

/* Hedging: the first success cancels the other attempts from inside the winner's completion,
 * i.e. re-entrantly from the client's own completion loop. The losers' connections close. */
static void test_first_success_cancels_losers(void **state)
{
    (void)state;
    tctx *t = tctx_new(NULL);
    tc_future *attempts[3] = {get(t, &t->s, "/delay?ms=2000", 0), get(t, &t->s, "/ok", 0),
                              get(t, &t->s, "/hold", 0)};
    tc_future *first = NULL;
    assert_int_equal(tc_first_success(&first, attempts, 3), 0);
    assert_true(run_until_done(t, first, 5000));
    assert_int_equal(tc_future_state_of(first), TC_FUTURE_FULFILLED);
    assert_int_equal(tc_first_success_index(first), 1);
    const tc_response *r = tc_future_value(first);
    assert_string_equal(r->body, "ok");
    assert_int_equal(tc_future_state_of(attempts[0]), TC_FUTURE_CANCELLED);
    assert_int_equal(tc_future_state_of(attempts[2]), TC_FUTURE_CANCELLED);
    uint64_t start = uv_hrtime();
    while (t->s.peer_closed < 2 && elapsed_ms(start) < 3000)
        uv_run(&t->loop, UV_RUN_ONCE);
    assert_int_equal(t->s.peer_closed, 2);
    tc_client_stats st;
    tc_client_get_stats(t->client, &st);
    assert_int_equal(st.completed, 1);
    assert_int_equal(st.cancelled, 2);
    assert_int_equal(st.open_connections, 1); /* only the winner's connection is pooled */
    for (int i = 0; i < 3; i++)
        tc_future_unref(attempts[i]);
    tc_future_unref(first);
    tctx_finish(t);
}

/* ---- tests: pool ---------------------------------------------------------------------------- */

static void run_all(tctx *t, tc_future **fs, size_t n, uint64_t limit_ms)
{
    uint64_t start = uv_hrtime();
    for (size_t i = 0; i < n; i++)
        while (!tc_future_done(fs[i]) && elapsed_ms(start) < (double)limit_ms)
            uv_run(&t->loop, UV_RUN_ONCE);
}

static void expect_all_ok(tc_future **fs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (tc_future_state_of(fs[i]) != TC_FUTURE_FULFILLED)
            fail_msg("request %zu: state %d %s", i, tc_future_state_of(fs[i]),
                     tc_future_message(fs[i]));
        const tc_response *r = tc_future_value(fs[i]);
        assert_int_equal(r->status, 200);
        tc_future_unref(fs[i]);
    }
}

static void test_pool_total_cap(void **state)
{
    (void)state;
    tc_client_config cfg;
    tc_client_config_init(&cfg);
    cfg.max_connections = 4;
    tctx *t = tctx_new(&cfg);
    tc_future *fs[40];
    for (int i = 0; i < 40; i++)
        fs[i] = get(t, &t->s, "/delay?ms=20", 0);
    tc_client_stats st;
    tc_client_get_stats(t->client, &st);
    assert_int_equal(st.queued, 36);
    assert_int_equal(st.in_flight, 40);
    run_all(t, fs, 40, 20000);
    const tc_response *last = tc_future_value(fs[39]);
    assert_non_null(last);
    assert_true(last->queued_ms > 50.0); /* it waited for nine rounds of 20 ms */
    expect_all_ok(fs, 40);
    assert_int_equal(t->s.requests, 40);
    assert_true(t->s.conns_max <= 4);
    assert_true(t->s.active_max <= 4);
    assert_int_equal(t->s.active_max, 4); /* and the cap was actually used */
    assert_true(t->s.conns_total <= 4);   /* keep-alive: the queue reuses the pool */
    expect_stats_settled(t);
    tctx_finish(t);
}

static void test_pool_per_host_cap(void **state)
{
    (void)state;
    tc_client_config cfg;
    tc_client_config_init(&cfg);
    cfg.max_per_host = 2;
    cfg.max_connections = 100;
    tctx *t = tctx_new(&cfg);
    srv_start(&t->s2, &t->loop);
    tc_future *fs[40];
    for (int i = 0; i < 40; i++)
        fs[i] = get(t, i % 2 ? &t->s2 : &t->s, "/delay?ms=10", 0);
    run_all(t, fs, 40, 20000);
    expect_all_ok(fs, 40);
    assert_int_equal(t->s.requests, 20);
    assert_int_equal(t->s2.requests, 20);
    assert_true(t->s.conns_max <= 2);
    assert_true(t->s2.conns_max <= 2);
    assert_int_equal(t->s.active_max, 2);
    assert_int_equal(t->s2.active_max, 2);
    expect_stats_settled(t);
    tctx_finish(t);
}

static void test_pool_total_cap_across_hosts(void **state)
{
    (void)state;
    tc_client_config cfg;
    tc_client_config_init(&cfg);
    cfg.max_connections = 3;
    tctx *t = tctx_new(&cfg);
    srv_start(&t->s2, &t->loop);
    int active = 0, active_max = 0;
    t->s.shared_active = t->s2.shared_active = &active;
    t->s.shared_active_max = t->s2.shared_active_max = &active_max;
    tc_future *fs[30];
    for (int i = 0; i < 30; i++)
        fs[i] = get(t, i % 3 ? &t->s2 : &t->s, "/delay?ms=10", 0);
    run_all(t, fs, 30, 20000);
    expect_all_ok(fs, 30);
    assert_int_equal(active_max, 3);
    assert_true(t->s.conns_max <= 3);
    assert_true(t->s2.conns_max <= 3);
    tctx_finish(t);
}

typedef struct chain {
    tctx *t;
    int left;
    int ok;
    tc_future *cur;
} chain;

static void chain_next(tc_future *f, void *data)
{
    chain *ch = data;
    if (tc_future_state_of(f) == TC_FUTURE_FULFILLED &&
        ((const tc_response *)tc_future_value(f))->status == 200)
        ch->ok++;
    tc_future_unref(f);
    ch->cur = NULL;
    if (--ch->left > 0) {
        /* Start the next request from inside the previous one's callback. */
        ch->cur = get(ch->t, &ch->t->s, "/ok", 0);
        assert_int_equal(tc_future_on_done(ch->cur, chain_next, ch), 0);
    }
}

static void test_keepalive_reuse(void **state)
{
    (void)state;
    tctx *t = tctx_new(NULL);
    chain ch = {.t = t, .left = 50};
    ch.cur = get(t, &t->s, "/ok", 0);
    assert_int_equal(tc_future_on_done(ch.cur, chain_next, &ch), 0);
    uint64_t start = uv_hrtime();
    while (ch.left > 0 && elapsed_ms(start) < 10000)
        uv_run(&t->loop, UV_RUN_ONCE);
    assert_int_equal(ch.ok, 50);
    assert_int_equal(t->s.conns_total, 1); /* one after the other: one connection */
    tctx_finish(t);
}

static void test_ten_thousand_requests_over_100_connections(void **state)
{
    (void)state;
    enum { N = 10000 };
    tc_client_config cfg;
    tc_client_config_init(&cfg);
    cfg.max_connections = 100;
    tctx *t = tctx_new(&cfg);
    tc_future **fs = calloc(N, sizeof(*fs));
    assert_non_null(fs);
    for (int i = 0; i < N; i++)
        fs[i] = get(t, &t->s, i % 10 ? "/ok" : "/chunked", 0);
    run_all(t, fs, N, 120000);
    expect_all_ok(fs, N);
    free(fs);
    assert_int_equal(t->s.requests, N);
    assert_true(t->s.conns_max <= 100);
    assert_true(t->s.conns_total <= 100); /* many requests, few connections */
    tc_client_stats st;
    tc_client_get_stats(t->client, &st);
    assert_int_equal(st.completed, N);
    assert_true(st.open_connections <= 100);
    expect_stats_settled(t);
    tctx_finish(t);
}

/* ---- tests: HTTP/1.1 details ----------------------------------------------------------------- */

static void test_interim_close_and_http10(void **state)
{
    (void)state;
    tctx *t = tctx_new(NULL);
    tc_future *f = get(t, &t->s, "/interim", 0);
    const tc_response *r = expect_response(t, f, 200);
    assert_string_equal(r->body, "final");
    assert_true(strncmp(r->headers, "HTTP/1.1 200", 12) == 0); /* only the final header block */
    assert_null(strstr(r->headers, "Early"));
    tc_future_unref(f);

    f = get(t, &t->s, "/close", 0);
    r = expect_response(t, f, 200);
    assert_string_equal(r->body, "bye");
    tc_future_unref(f);
    f = get(t, &t->s, "/http10", 0);
    r = expect_response(t, f, 200);
    assert_string_equal(r->body, "old!");
    assert_int_equal(r->http_version, 10);
    tc_future_unref(f);
    f = get(t, &t->s, "/eof-body", 0);
    r = expect_response(t, f, 200);
    assert_string_equal(r->body, "until eof");
    tc_future_unref(f);
    f = get(t, &t->s, "/chunked-ext", 0);
    r = expect_response(t, f, 200);
    assert_string_equal(r->body, "ab\r\ncd");
    assert_null(strstr(r->headers, "X-T1")); /* trailers are not the header block */
    tc_future_unref(f);
    /* Connection: close, HTTP/1.0 and a close-delimited body each used up their connection. */
    run_for(t, 50);
    assert_int_equal(t->s.conns_total, 4);
    expect_stats_settled(t);
    tctx_finish(t);
}

/* The server closes an idle pooled connection: the client sees it at once (an idle connection
 * keeps reading), so the next request goes on a new connection without any retry. Then a
 * request cancelled while its response head is half in is reset like any abort. */
static void test_idle_close_and_cancel_mid_head(void **state)
{
    (void)state;
    tctx *t = tctx_new(NULL);
    tc_future *f = get(t, &t->s, "/close-idle", 0);
    const tc_response *r = expect_response(t, f, 200);
    assert_string_equal(r->body, "bye soon");
    tc_future_unref(f);
    run_for(t, 200); /* the server has closed it by now */
    tc_client_stats st;
    tc_client_get_stats(t->client, &st);
    if (g_engine != TC_CLIENT_ENGINE_CURL) /* libcurl notices only when it next looks */
        assert_int_equal(st.open_connections, 0);
    f = get(t, &t->s, "/ok", 0);
    expect_response(t, f, 200);
    tc_future_unref(f);
    tc_client_get_stats(t->client, &st);
    assert_int_equal(st.stale_retries, 0);
    assert_int_equal(t->s.requests, 2); /* nothing sent twice */
    assert_int_equal(t->s.conns_total, 2);

    f = get(t, &t->s, "/partial-head", 0);
    assert_true(run_until_flag(t, &t->s.partial_sent, 5000));
    run_for(t, 50); /* the client has read the half head */
    assert_false(tc_future_done(f));
    int closed_before = t->s.peer_closed;
    assert_int_equal(tc_future_cancel(f), 1);
    tc_future_unref(f);
    uint64_t w = uv_hrtime();
    while (t->s.peer_closed == closed_before && elapsed_ms(w) < 3000)
        uv_run(&t->loop, UV_RUN_ONCE);
    assert_int_equal(t->s.peer_closed, closed_before + 1);
    expect_stats_settled(t);
    tctx_finish(t);
}

/* A pooled connection the server dropped just as the next GET went out: the GET goes once more
 * on a fresh connection; a POST fails as a reset and is never sent twice. */
static void test_stale_pooled_connection(void **state)
{
    (void)state;
    if (g_engine == TC_CLIENT_ENGINE_CURL)
        skip(); /* libcurl re-sends on its own; the client counts that as a reset (above) */
    tctx *t = tctx_new(NULL);
    tc_future *f = get(t, &t->s, "/die-on-reuse", 0);
    expect_response(t, f, 200);
    tc_future_unref(f);
    f = get(t, &t->s, "/die-on-reuse", 0);
    const tc_response *r = expect_response(t, f, 200);
    assert_string_equal(r->body, "first"); /* the answer of a fresh connection */
    tc_future_unref(f);
    tc_client_stats st;
    tc_client_get_stats(t->client, &st);
    assert_int_equal(st.stale_retries, 1);
    assert_int_equal(st.started, 2);
    assert_int_equal(t->s.conns_total, 2);

    tc_client_request req;
    memset(&req, 0, sizeof(req));
    req.method = "POST";
    req.url = url_of(t, &t->s, "/die-on-reuse");
    req.body = "x";
    req.body_len = 1;
    assert_int_equal(tc_client_request_start(&f, t->client, &req), 0);
    expect_error(t, f, TC_ECONNRESET);
    tc_future_unref(f);
    tc_client_get_stats(t->client, &st);
    assert_int_equal(st.stale_retries, 1);
    assert_int_equal(t->s.conns_total, 2); /* not sent again */
    expect_stats_settled(t);
    tctx_finish(t);
}

/* A request body far larger than the socket takes at once: its write is still pending when the
 * server gives up (a reset), or when the request is cancelled; neither may touch the request's
 * memory after it is gone (ASan watches). */
static void test_large_body_write_cut_short(void **state)
{
    (void)state;
    enum { BIG = 8 << 20 };
    char *big = malloc(BIG);
    assert_non_null(big);
    memset(big, 'b', BIG);
    tctx *t = tctx_new(NULL);
    tc_client_request req;
    memset(&req, 0, sizeof(req));
    req.method = "POST";
    req.url = url_of(t, &t->s, "/echo");
    req.body = big;
    req.body_len = BIG;
    tc_future *f = NULL;
    assert_int_equal(tc_client_request_start(&f, t->client, &req), 0);
    /* The test server keeps 64 KiB of input and resets a connection that sends more. */
    expect_error(t, f, TC_ECONNRESET);
    tc_future_unref(f);

    /* A listener that never accepts: the kernel completes the connection and takes a few MB,
     * then the rest of the body waits in a pending write. */
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(lfd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(lfd, 16), 0);
    socklen_t alen = sizeof(a);
    assert_int_equal(getsockname(lfd, (struct sockaddr *)&a, &alen), 0);
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", ntohs(a.sin_port));
    req.url = url;
    assert_int_equal(tc_client_request_start(&f, t->client, &req), 0);
    run_for(t, 50); /* connected, part of the body written, the rest pending */
    assert_false(tc_future_done(f));
    assert_int_equal(tc_future_cancel(f), 1);
    tc_future_unref(f);
    free(big); /* the caller's copy; the client's own went with the cancel */
    run_for(t, 50);

    /* The answer comes before the body is written: the connection is not pooled (the rest of
     * the body would follow), and dropping the response frees the request while libuv still
     * holds a write of its body: ASan sees any write from freed memory. */
    char *big2 = malloc(BIG);
    assert_non_null(big2);
    memset(big2, 'c', BIG);
    req.url = url_of(t, &t->s, "/early");
    req.body = big2;
    assert_int_equal(tc_client_request_start(&f, t->client, &req), 0);
    free(big2);
    expect_response(t, f, 413);
    tc_future_unref(f);
    run_for(t, 100);
    tc_client_stats st;
    tc_client_get_stats(t->client, &st);
    assert_int_equal(st.open_connections, 0);
    expect_stats_settled(t);
    tctx_finish(t);
    close(lfd);
}

/* Requests that cannot start (no file descriptor left) fail one after the other, oldest first,
 * without the queue's pump calling itself once per request (which overflowed the stack). */
static int g_fail_order_ok = 1;
static long g_fail_last = -1;

static void on_seq_done(tc_future *f, void *data)
{
    long seq = (long)(intptr_t)data;
    if (tc_future_state_of(f) != TC_FUTURE_REJECTED || seq <= g_fail_last) {
        if (g_fail_order_ok)
            print_message("request %ld after %ld: state %d %s\n", seq, g_fail_last,
                          tc_future_state_of(f), tc_future_message(f));
        g_fail_order_ok = 0;
    }
    g_fail_last = seq;
    tc_future_unref(f);
}

static void test_many_start_failures(void **state)
{
    (void)state;
    if (g_engine == TC_CLIENT_ENGINE_CURL)
        skip(); /* libcurl opens its sockets later, inside its own loop */
    enum { N = 30000 };
    tc_client_config cfg;
    tc_client_config_init(&cfg);
    cfg.max_connections = 1;
    tctx *t = tctx_new(&cfg);
    srv_start(&t->s2, &t->loop); /* another origin: its requests need new sockets */
    tc_future *slow = get(t, &t->s, "/delay?ms=200", 0);
    assert_true(run_until_flag(t, &t->s.requests, 5000)); /* it holds the only slot */
    for (long i = 0; i < N; i++) {
        tc_future *f = get(t, &t->s2, "/ok", 0);
        assert_int_equal(tc_future_on_done(f, on_seq_done, (void *)(intptr_t)i), 0);
    }
    /* No descriptor left for a new socket (not even the one the pool frees when it evicts the
     * slow request's idle connection to make room): every queued request fails to start. */
    struct rlimit old, low;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
    low = old;
    low.rlim_cur = 3; /* open descriptors stay usable; no new one above stderr */
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
    expect_response(t, slow, 200);
    tc_future_unref(slow);
    run_for(t, 50);
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
    assert_true(g_fail_order_ok);
    assert_int_equal(g_fail_last, N - 1);
    expect_stats_settled(t);
    tctx_finish(t);
}

/* timeout_from_admit: the wait for a per-host slot is not part of the timeout. */
static void test_timeout_from_admit(void **state)
{
    (void)state;
    tc_client_config cfg;
    tc_client_config_init(&cfg);
    cfg.max_per_host = 1;
    tctx *t = tctx_new(&cfg);
    tc_future *fs[3];
    for (int i = 0; i < 3; i++) {
        tc_client_request req;
        memset(&req, 0, sizeof(req));
        req.url = url_of(t, &t->s, "/delay?ms=150");
        req.timeout_ms = 400;
        req.timeout_from_admit = 1;
        assert_int_equal(tc_client_request_start(&fs[i], t->client, &req), 0);
    }
    for (int i = 0; i < 3; i++) {
        const tc_response *r = expect_response(t, fs[i], 200);
        assert_string_equal(r->body, "late");
        if (i == 2)
            assert_true(r->queued_ms >= 250.0); /* queued behind two 150 ms answers */
        tc_future_unref(fs[i]);
    }
    assert_int_equal(t->s.active_max, 1);
    expect_stats_settled(t);
    tctx_finish(t);
}

/* Counts this process's TCP sockets toward port in the given /proc/net/tcp states. */
static int count_sockets_to(int port, const char *const *states)
{
    FILE *fp = fopen("/proc/net/tcp", "r");
    assert_non_null(fp);
    char line[512];
    int n = 0;
    while (fgets(line, sizeof(line), fp) != NULL) {
        unsigned lport = 0, rport = 0;
        char st[8] = "";
        if (sscanf(line, " %*d: %*x:%x %*x:%x %7s", &lport, &rport, st) != 3)
            continue;
        if ((int)rport != port)
            continue;
        for (int i = 0; states[i] != NULL; i++)
            if (strcasecmp(st, states[i]) == 0)
                n++;
    }
    fclose(fp);
    return n;
}

/* Aborting an attempt resets its connection: no TIME_WAIT or FIN_WAIT left on our side, and the
 * server sees the reset. */
static void test_abort_is_a_reset(void **state)
{
    (void)state;
    enum { N = 1000, WAVE = 200 };
    tctx *t = tctx_new(NULL);
    for (int done = 0; done < N; done += WAVE) {
        tc_future *fs[WAVE];
        for (int i = 0; i < WAVE; i++)
            fs[i] = get(t, &t->s, "/hold", 0);
        uint64_t w = uv_hrtime();
        while (t->s.requests < done + WAVE && elapsed_ms(w) < 10000)
            uv_run(&t->loop, UV_RUN_ONCE);
        assert_int_equal(t->s.requests, done + WAVE);
        for (int i = 0; i < WAVE; i++) {
            assert_int_equal(tc_future_cancel(fs[i]), 1);
            tc_future_unref(fs[i]);
        }
        w = uv_hrtime();
        while (t->s.peer_closed < done + WAVE && elapsed_ms(w) < 10000)
            uv_run(&t->loop, UV_RUN_ONCE);
        assert_int_equal(t->s.peer_closed, done + WAVE);
    }
    print_message("%d aborts: the server saw %d resets\n", N, t->s.peer_reset);
    assert_int_equal(t->s.peer_reset, N);
    /* Closed with a FIN, all N would linger on our side (FIN_WAIT2, then TIME_WAIT). The count
     * may include a few unrelated sockets whose remote port happens to equal ours (a server
     * socket of another test in TIME_WAIT, toward a client port with that number). */
    static const char *const lingering[] = {"04", "05", "06", "08", "09", NULL};
    int left = count_sockets_to(t->s.port, lingering);
    print_message("sockets toward the server left lingering: %d\n", left);
    assert_true(left <= N / 100);
    expect_stats_settled(t);
    tctx_finish(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get_content_length),
        cmocka_unit_test(test_get_chunked_and_large_body),
        cmocka_unit_test(test_post_with_headers_and_status),
        cmocka_unit_test(test_redirects_off_by_default),
        cmocka_unit_test(test_bad_arguments_and_urls),
        cmocka_unit_test(test_connection_refused),
        cmocka_unit_test(test_dns_failure),
        cmocka_unit_test(test_reset_and_truncation),
        cmocka_unit_test(test_malformed_responses),
        cmocka_unit_test(test_body_too_large),
        cmocka_unit_test(test_tls_to_plain_server),
        cmocka_unit_test(test_timeout_hold_and_trickle),
        cmocka_unit_test(test_queue_time_counts_toward_timeout),
        cmocka_unit_test(test_simultaneous_deadlines),
        cmocka_unit_test(test_connect_timeout),
        cmocka_unit_test(test_cancel_mid_body),
        cmocka_unit_test(test_cancel_queued_and_unref_running),
        cmocka_unit_test(test_cancel_while_connecting),
        cmocka_unit_test(test_close_with_requests_in_flight),
        cmocka_unit_test(test_close_from_a_done_callback),
        cmocka_unit_test(test_first_success_cancels_losers),
        cmocka_unit_test(test_pool_total_cap),
        cmocka_unit_test(test_pool_per_host_cap),
        cmocka_unit_test(test_pool_total_cap_across_hosts),
        cmocka_unit_test(test_keepalive_reuse),
        cmocka_unit_test(test_ten_thousand_requests_over_100_connections),
        cmocka_unit_test(test_interim_close_and_http10),
        cmocka_unit_test(test_stale_pooled_connection),
        cmocka_unit_test(test_idle_close_and_cancel_mid_head),
        cmocka_unit_test(test_abort_is_a_reset),
        cmocka_unit_test(test_timeout_from_admit),
        cmocka_unit_test(test_large_body_write_cut_short),
        cmocka_unit_test(test_many_start_failures),
    };
    print_message("== native HTTP/1.1 engine\n");
    g_engine = TC_CLIENT_ENGINE_AUTO;
    int failed = cmocka_run_group_tests_name("native", tests, NULL, NULL);
    print_message("== libcurl engine\n");
    g_engine = TC_CLIENT_ENGINE_CURL;
    failed += cmocka_run_group_tests_name("curl", tests, NULL, NULL);
    return failed;
}
