/*
 * The libcurl engine: libcurl's multi_socket interface driven by the client's uv loop, for
 * https://, HTTP/2, redirects and whatever the config forces onto libcurl. All libcurl <-> libuv
 * glue lives in this file (the shape of curl's docs/examples/multi-uv.c, with every return
 * checked, poll errors handed on to libcurl and every handle closed).
 *
 * curl tells us which socket to watch (CURLMOPT_SOCKETFUNCTION -> one uv_poll per fd) and when
 * to wake it (CURLMOPT_TIMERFUNCTION -> one uv_timer); we hand readiness back with
 * curl_multi_socket_action(). Admission and deadlines are client.c's: a request reaches curl
 * only when a connection slot is free for it, so curl never queues one itself.
 *
 * An aborted transfer's socket gets SO_LINGER {1, 0} just before curl closes it, so the abort
 * is a reset (no TIME_WAIT or FIN_WAIT2 left behind); every other close stays a FIN.
 *
 * Re-entrancy rule: requests are reported only from uv callbacks, never from inside a libcurl
 * callback, because user callbacks may call back into this client and libcurl forbids multi
 * calls from within its own callbacks.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <curl/curl.h>
#include <uv.h>

#include "base/alloc.h"
#include "client_internal.h"

/* Memory and speed trade-offs. */
#define TC__CURL_EASY_POOL_MAX 64 /* idle curl easy handles kept for reuse */
#ifndef TC__CURL_RECV_BUFFER
#define TC__CURL_RECV_BUFFER 2048 /* curl's per-transfer receive buffer (default 16 KiB) */
#endif
#define TC__CURL_MAX_REDIRECTS 5L      /* when follow_redirects is on */
#define TC__CURL_EXPECT_THRESHOLD 1024 /* bodies above this get "Expect:" to skip 100-continue */

/* A pooled curl easy handle with the error buffer curl writes into. */
typedef struct tc__easy {
    CURL *curl;
    tc__link link; /* in the engine's easy_pool while idle */
    char errbuf[CURL_ERROR_SIZE];
} tc__easy;

/* One socket curl asked us about. Sockets curl opened through our opensocket callback live until
 * our closesocket callback, so keep-alive connections keep their uv_poll between requests;
 * others (resolver wake-up pipes) live until CURL_POLL_REMOVE.
 *
 * CURL_POLL_REMOVE always stops the poll at once, while the fd is still open: libcurl 7.88
 * may close a socket right after REMOVE *without* calling our close-socket callback (seen for
 * a connection removed mid-connect), and a poll left armed on a closed fd makes libuv abort on
 * EBADF, or steal the events of whatever reuses the fd number next. */
typedef struct tc__sock {
    uv_poll_t poll;
    tc__curl *client;
    curl_socket_t fd;
    int opened_by_us;
    tc__origin *origin; /* ours: the pool it was opened for (a reference), and its generation */
    unsigned gen;
    int poll_ready; /* uv_poll_init_socket succeeded */
    int events;     /* UV_READABLE | UV_WRITABLE the poll is armed for; 0 = stopped */
} tc__sock;

enum { FAIL_NONE = 0, FAIL_BODY_TOO_LARGE, FAIL_HEADERS_TOO_LARGE, FAIL_NOMEM, FAIL_RESENT };

struct tc__curl {
    tc_client *client;
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t curl_timer; /* what curl's TIMERFUNCTION asks for */
    tc__link running;      /* requests in curl */
    tc__link notify;       /* streamed requests with news from curl's callbacks (a head, body
                              bytes, body bytes read), told once curl has returned */

    tc__sock **socks; /* indexed by fd */
    size_t nsocks;

    tc__link easy_pool; /* idle easy handles, the latest last */
    size_t neasy_pool;

    int closing;
    int curl_global;     /* curl_global_init succeeded */
    size_t open_handles; /* uv handles not yet through their close callback */
};

static void after_socket_action(tc__curl *eng, CURLMcode mc);
static void maybe_free(tc__curl *eng);

/* Appends curl's bytes to r's response, counting the body against max_body. */
static int out_append(tc__creq *r, const char *p, size_t n)
{
    if (tc__buf_append(&r->out, p, n) != 0) {
        r->curl_fail = FAIL_NOMEM;
        return -1;
    }
    return 0;
}

/* Ends the header block: a NUL after it, the body starts after that. */
static int start_body(tc__creq *r)
{
    if (out_append(r, "", 1) != 0)
        return -1;
    r->h1.body_off = r->out.len;
    return 0;
}

/* r has news for its caller, told once curl has returned (after_socket_action). */
static void notify(tc__curl *eng, tc__creq *r)
{
    if (!r->st->curl_notified) {
        r->st->curl_notified = 1;
        tc__list_push_back(&eng->notify, &r->st->curl_link);
    }
}

/* The status of a status line "HTTP/x[.y] NNN ...", or 0. */
static int status_of(const char *line, size_t n)
{
    const char *sp = memchr(line, ' ', n);
    if (sp == NULL || (size_t)(sp - line) + 4 > n)
        return 0;
    int st = 0;
    for (int i = 1; i <= 3; i++) {
        if (sp[i] < '0' || sp[i] > '9')
            return 0;
        st = st * 10 + (sp[i] - '0');
    }
    return st;
}

/* ---- curl data callbacks (no futures completed here) --------------------------------------- */

/* libcurl re-sends a request on its own, on a fresh connection, when a reused one dies before
 * any answer byte (Curl_retry_request, for any method, up to 5 times). The client allows what
 * the native engine does and no more: one re-send of a request that asked for it (resend_stale,
 * a GET or HEAD), counted in stale_retries; any other re-send fails the request as a reset
 * before a byte of it is written, so nothing reaches the server twice without the caller
 * knowing (a hedge's attempt is one attempt). Each followed redirect is a send of its own. */
static int on_prereq(void *userp, char *conn_primary_ip, char *conn_local_ip, int conn_primary_port,
                     int conn_local_port)
{
    tc__creq *r = userp;
    long redirects = 0;
    curl_easy_getinfo(((tc__easy *)r->easy)->curl, CURLINFO_REDIRECT_COUNT, &redirects);
    unsigned expected = 1 + (unsigned)redirects + (unsigned)r->stale_retried;
    if (++r->curl_sends <= expected)
        return CURL_PREREQFUNC_OK;
    if (r->resend_stale && !r->stale_retried) {
        r->stale_retried = 1;
        r->client->stats.stale_retries++;
        return CURL_PREREQFUNC_OK;
    }
    r->curl_fail = FAIL_RESENT;
    return CURL_PREREQFUNC_ABORT;
}

static size_t on_header(char *data, size_t size, size_t nitems, void *userp)
{
    tc__creq *r = userp;
    size_t n = size * nitems;
    if (n >= 5 && memcmp(data, "HTTP/", 5) == 0) {
        /* A status line: a 1xx or a followed redirect came before; keep only the last block. */
        r->out.len = 0;
        r->h1.body_off = 0;
        if (r->st != NULL)
            r->st->curl_status = status_of(data, n);
    } else if (r->h1.body_off != 0) {
        return n; /* trailers after a chunked body: not part of the header block */
    }
    if (r->out.len + n > (size_t)TC__CLIENT_MAX_HEADER_BYTES) {
        r->curl_fail = FAIL_HEADERS_TOO_LARGE;
        return 0;
    }
    if (out_append(r, data, n) != 0)
        return 0;
    tc__stream *st = r->st;
    if (st != NULL && st->stream_resp && (n == 2 || n == 1) &&
        (data[0] == '\r' || data[0] == '\n')) {
        /* The blank line that ends a head. A final one (not 1xx, nor a 3xx that libcurl may
         * follow: that one is told at its body or its end) is the response's head. */
        int status = st->curl_status;
        int followed = r->client->cfg.follow_redirects && status >= 300 && status < 400;
        if (status >= 200 && !followed) {
            if (start_body(r) != 0)
                return 0;
            st->curl_head = 1;
            notify(r->client->curl, r);
        }
    }
    return n;
}

/* A streamed response's body bytes: into the hold, which the reader empties from the loop; a
 * full hold pauses the transfer (libcurl keeps the bytes and reads no more). */
static size_t stream_body(tc__creq *r, const char *data, size_t n)
{
    tc__stream *st = r->st;
    if (!st->curl_head) { /* a 3xx libcurl did not follow after all: it is the answer */
        if (r->h1.body_off == 0 && start_body(r) != 0)
            return 0;
        st->curl_head = 1;
    }
    if (st->hold.len + n > TC__CLIENT_STREAM_HOLD) {
        st->recv_paused = 1;
        return CURL_WRITEFUNC_PAUSE;
    }
    if (n > r->max_body - st->body_len) {
        r->curl_fail = FAIL_BODY_TOO_LARGE;
        return 0;
    }
    if (tc__buf_append(&st->hold, data, n) != 0) {
        r->curl_fail = FAIL_NOMEM;
        return 0;
    }
    st->body_len += n;
    st->last_io_ms = uv_now(r->client->loop);
    notify(r->client->curl, r);
    return n;
}

/* A streamed request body: what the caller queued, or a pause until it queues more. */
static size_t on_curl_read(char *buf, size_t size, size_t nitems, void *userp)
{
    tc__creq *r = userp;
    tc_client_body *b = r->st != NULL ? r->st->body : NULL;
    if (b == NULL || b->aborted)
        return CURL_READFUNC_ABORT;
    size_t room = size * nitems, avail = b->queued.len - b->queued_off;
    if (avail == 0) {
        if (b->ended)
            return 0; /* the end: libcurl sends the last chunk */
        r->st->send_paused = 1;
        return CURL_READFUNC_PAUSE;
    }
    size_t k = avail < room ? avail : room;
    memcpy(buf, b->queued.data + b->queued_off, k);
    b->queued_off += k;
    if (b->queued_off == b->queued.len)
        b->queued.len = b->queued_off = 0;
    if (b->cb != NULL)
        tc__body_kick(b); /* the writable callback, from the loop */
    return k;
}

/* libcurl wants to send a streamed body again from its start: the bytes are gone. Only its
 * re-send after a reused connection died asks for it (and a followed redirect that keeps the
 * body, when follow_redirects is on): that send fails as stale, as on_prereq fails the others. */
static int on_curl_seek(void *userp, curl_off_t offset, int origin)
{
    tc__creq *r = userp;
    (void)offset;
    (void)origin;
    if (!r->client->cfg.follow_redirects)
        r->curl_fail = FAIL_RESENT;
    return CURL_SEEKFUNC_CANTSEEK;
}

static size_t on_curl_body(char *data, size_t size, size_t nitems, void *userp)
{
    tc__creq *r = userp;
    size_t n = size * nitems;
    if (r->st != NULL && r->st->stream_resp)
        return stream_body(r, data, n);
    if (r->h1.body_off == 0 && start_body(r) != 0)
        return 0;
    if (r->out.len - r->h1.body_off + n > r->max_body) {
        r->curl_fail = FAIL_BODY_TOO_LARGE;
        return 0; /* aborts the transfer at once */
    }
    return out_append(r, data, n) == 0 ? n : 0;
}

/* ---- sockets -------------------------------------------------------------------------------- */

static void on_sock_closed(uv_handle_t *h)
{
    tc__sock *sk = tc__container_of((uv_poll_t *)h, tc__sock, poll);
    tc__curl *eng = sk->client;
    tc__free(sk);
    eng->open_handles--;
    maybe_free(eng);
}

/* Forgets sk: stops and closes its poll handle (freed in the close callback). Must run while the
 * fd is still open, so that libuv can take it out of epoll. */
static void sock_release(tc__curl *eng, tc__sock *sk)
{
    if ((size_t)sk->fd < eng->nsocks && eng->socks[sk->fd] == sk)
        eng->socks[sk->fd] = NULL;
    if (sk->opened_by_us && eng->client->stats.open_connections > 0)
        eng->client->stats.open_connections--;
    tc__origin_unref(eng->client, sk->origin);
    sk->origin = NULL;
    if (sk->poll_ready) {
        uv_poll_stop(&sk->poll);
        uv_close((uv_handle_t *)&sk->poll, on_sock_closed);
    } else {
        tc__free(sk);
        eng->open_handles--;
    }
}

/* The record for fd, created if needed. NULL on ENOMEM. */
static tc__sock *sock_get(tc__curl *eng, curl_socket_t fd, int create)
{
    if (fd < 0)
        return NULL;
    if ((size_t)fd < eng->nsocks && eng->socks[fd] != NULL)
        return eng->socks[fd];
    if (!create)
        return NULL;
    if ((size_t)fd >= eng->nsocks) {
        size_t n = eng->nsocks ? eng->nsocks : 64;
        while (n <= (size_t)fd)
            n *= 2;
        tc__sock **grown = tc__realloc(eng->socks, n * sizeof(tc__sock *));
        if (grown == NULL)
            return NULL;
        memset(grown + eng->nsocks, 0, (n - eng->nsocks) * sizeof(tc__sock *));
        eng->socks = grown;
        eng->nsocks = n;
    }
    tc__sock *sk = tc__calloc(1, sizeof(*sk));
    if (sk == NULL)
        return NULL;
    sk->client = eng;
    sk->fd = fd;
    sk->poll.data = eng;
    eng->socks[fd] = sk;
    eng->open_handles++;
    return sk;
}

/* clientp is the request whose transfer opens the socket: the socket is its origin's. */
static curl_socket_t on_open_socket(void *clientp, curlsocktype purpose, struct curl_sockaddr *addr)
{
    tc__creq *r = clientp;
    (void)purpose;
    if (r == NULL || r->client->curl == NULL)
        return CURL_SOCKET_BAD; /* not during a transfer of ours: cannot happen */
    tc__curl *eng = r->client->curl;
    curl_socket_t fd = socket(addr->family, addr->socktype | SOCK_CLOEXEC, addr->protocol);
    if (fd < 0)
        return CURL_SOCKET_BAD;
    tc__sock *stale = sock_get(eng, fd, 0);
    if (stale != NULL)
        sock_release(eng, stale); /* curl closed that fd without telling us; forget it */
    tc__sock *sk = sock_get(eng, fd, 1);
    if (sk == NULL) {
        close(fd);
        errno = ENOMEM;
        return CURL_SOCKET_BAD;
    }
    sk->opened_by_us = 1;
    sk->origin = r->origin;
    sk->gen = r->origin->gen;
    tc__origin_ref(eng->client, r->origin);
    eng->client->stats.open_connections++;
    return fd;
}

static int on_close_socket(void *clientp, curl_socket_t fd)
{
    tc__curl *eng = clientp;
    tc__sock *sk = sock_get(eng, fd, 0);
    if (sk != NULL)
        sock_release(eng, sk); /* epoll forgets fd before it is closed */
    return close(fd);
}

/* Closes a connection that curl keeps in its cache: the server sees the close at once, and curl,
 * which finds the socket at its end (readable, EOF) the next time it looks, drops it as dead and
 * closes the descriptor through on_close_socket. libcurl has no call to drop one cached
 * connection, and the descriptor is curl's to close. */
static void sock_shutdown(tc__sock *sk)
{
    (void)shutdown(sk->fd, SHUT_RDWR);
}

static void after_socket_action(tc__curl *eng, CURLMcode mc);

static void on_poll(uv_poll_t *h, int status, int events)
{
    tc__sock *sk = tc__container_of(h, tc__sock, poll);
    tc__curl *eng = sk->client;
    int flags = 0;
    if (status < 0) {
        /* libuv reports POLLERR (a reset, a refused connect) as an error and nothing else. A
         * bare CURL_CSELECT_ERR makes libcurl fail the transfer as "select/poll returned error"
         * without touching the socket; libcurl's own poll counts POLLERR as readable. So it
         * reads, meets the socket's real error (ECONNRESET), and a reused connection reset
         * before any answer byte takes the same path as one closed: libcurl's re-send, which
         * on_prereq allows or refuses. */
        flags = CURL_CSELECT_ERR | CURL_CSELECT_IN | CURL_CSELECT_OUT;
    } else {
        if (events & UV_READABLE)
            flags |= CURL_CSELECT_IN;
        if (events & UV_WRITABLE)
            flags |= CURL_CSELECT_OUT;
    }
    int running = 0;
    CURLMcode mc = curl_multi_socket_action(eng->multi, sk->fd, flags, &running);
    after_socket_action(eng, mc); /* sk may be gone by now */
}

/* CURLMOPT_SOCKETFUNCTION: watch fd for what curl wants, or stop watching it. */
static int on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    tc__curl *eng = userp;
    (void)socketp;
    char *priv = NULL;
    if (what != CURL_POLL_REMOVE && easy != NULL &&
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, &priv) == CURLE_OK && priv != NULL)
        ((tc__creq *)(void *)priv)->curl_fd = fd; /* the socket an abort must reset */
    if (what == CURL_POLL_REMOVE || what == CURL_POLL_NONE) {
        tc__sock *sk = sock_get(eng, fd, 0);
        if (sk == NULL)
            return 0;
        if (sk->opened_by_us) {
            if (sk->poll_ready && sk->events != 0)
                uv_poll_stop(&sk->poll); /* keep the handle for the pooled connection */
            sk->events = 0;
        } else {
            sock_release(eng, sk); /* not ours to keep: curl closes it right after this */
        }
        return 0;
    }
    tc__sock *sk = sock_get(eng, fd, 1);
    if (sk == NULL)
        return -1;
    if (!sk->poll_ready) {
        if (uv_poll_init_socket(eng->loop, &sk->poll, fd) != 0) {
            sock_release(eng, sk);
            return -1;
        }
        sk->poll.data = eng;
        sk->poll_ready = 1;
    }
    int events = 0;
    if (what & CURL_POLL_IN)
        events |= UV_READABLE;
    if (what & CURL_POLL_OUT)
        events |= UV_WRITABLE;
    if (events == sk->events)
        return 0;
    if (uv_poll_start(&sk->poll, events, on_poll) != 0)
        return -1;
    sk->events = events;
    return 0;
}

/* ---- curl timer ----------------------------------------------------------------------------- */

static void on_curl_timeout(uv_timer_t *t)
{
    tc__curl *eng = tc__container_of(t, tc__curl, curl_timer);
    int running = 0;
    CURLMcode mc = curl_multi_socket_action(eng->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    after_socket_action(eng, mc);
}

/* CURLMOPT_TIMERFUNCTION: one-shot timer; never calls into curl from here. */
static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
    tc__curl *eng = userp;
    (void)multi;
    if (eng->closing)
        return 0;
    if (timeout_ms < 0) {
        uv_timer_stop(&eng->curl_timer);
        return 0;
    }
    return uv_timer_start(&eng->curl_timer, on_curl_timeout, (uint64_t)timeout_ms, 0) == 0 ? 0 : -1;
}

/* ---- easy handles --------------------------------------------------------------------------- */

#define SETOPT(h, opt, val)                                                                        \
    do {                                                                                           \
        if (curl_easy_setopt((h), (opt), (val)) != CURLE_OK)                                       \
            goto fail;                                                                             \
    } while (0)

/* A fresh easy handle with every option that is the same for all of this client's requests. */
static tc__easy *easy_new(tc__curl *eng)
{
    tc__easy *easy = tc__calloc(1, sizeof(*easy));
    if (easy == NULL)
        return NULL;
    easy->curl = curl_easy_init();
    if (easy->curl == NULL)
        goto fail;
    CURL *curl = easy->curl;
    SETOPT(curl, CURLOPT_NOSIGNAL, 1L);
    SETOPT(curl, CURLOPT_TCP_NODELAY, 1L);
    SETOPT(curl, CURLOPT_ERRORBUFFER, easy->errbuf);
    SETOPT(curl, CURLOPT_WRITEFUNCTION, on_curl_body);
    SETOPT(curl, CURLOPT_HEADERFUNCTION, on_header);
    SETOPT(curl, CURLOPT_PREREQFUNCTION, on_prereq);
    SETOPT(curl, CURLOPT_OPENSOCKETFUNCTION, on_open_socket);
    SETOPT(curl, CURLOPT_CLOSESOCKETFUNCTION, on_close_socket);
    SETOPT(curl, CURLOPT_CLOSESOCKETDATA, eng);
#if LIBCURL_VERSION_NUM >= 0x075500
    SETOPT(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    SETOPT(curl, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#else
    SETOPT(h, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
    SETOPT(h, CURLOPT_REDIR_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    SETOPT(curl, CURLOPT_FOLLOWLOCATION, eng->client->cfg.follow_redirects ? 1L : 0L);
    SETOPT(curl, CURLOPT_MAXREDIRS, TC__CURL_MAX_REDIRECTS);
    SETOPT(curl, CURLOPT_SSL_VERIFYPEER, eng->client->cfg.insecure ? 0L : 1L);
    SETOPT(curl, CURLOPT_SSL_VERIFYHOST, eng->client->cfg.insecure ? 0L : 2L);
    if (eng->client->ca_file != NULL)
        SETOPT(curl, CURLOPT_CAINFO, eng->client->ca_file);
    SETOPT(curl, CURLOPT_HTTP_VERSION,
           eng->client->cfg.http2 ? (long)CURL_HTTP_VERSION_2TLS : (long)CURL_HTTP_VERSION_1_1);
    SETOPT(curl, CURLOPT_BUFFERSIZE, (long)TC__CURL_RECV_BUFFER);
    SETOPT(curl, CURLOPT_PROXY, "");   /* no proxy from the environment: upstreams are explicit */
    SETOPT(curl, CURLOPT_NOPROXY, ""); /* and no per-request getenv("no_proxy") either */
    SETOPT(curl, CURLOPT_CONNECTTIMEOUT_MS, (long)eng->client->cfg.connect_timeout_ms);
    return easy;
fail:
    if (easy->curl != NULL)
        curl_easy_cleanup(easy->curl);
    tc__free(easy);
    return NULL;
}

static tc__easy *easy_acquire(tc__curl *eng)
{
    tc__link *l = tc__list_last(&eng->easy_pool);
    if (l != NULL) {
        tc__list_remove(l);
        eng->neasy_pool--;
        return tc__container_of(l, tc__easy, link);
    }
    return easy_new(eng);
}

static void easy_release(tc__curl *eng, tc__easy *easy)
{
    if (easy == NULL)
        return;
    /* Drop pointers into the finished request so that the idle handle holds nothing stale. */
    curl_easy_setopt(easy->curl, CURLOPT_HTTPHEADER, NULL);
    curl_easy_setopt(easy->curl, CURLOPT_CONNECT_TO, NULL);
    curl_easy_setopt(easy->curl, CURLOPT_PRIVATE, NULL);
    curl_easy_setopt(easy->curl, CURLOPT_OPENSOCKETDATA, NULL);
    curl_easy_setopt(easy->curl, CURLOPT_READDATA, NULL);
    curl_easy_setopt(easy->curl, CURLOPT_SEEKDATA, NULL);
    curl_easy_setopt(easy->curl, CURLOPT_SEEKFUNCTION, NULL);
    if (!eng->closing && eng->neasy_pool < TC__CURL_EASY_POOL_MAX) {
        tc__list_push_back(&eng->easy_pool, &easy->link);
        eng->neasy_pool++;
        return;
    }
    curl_easy_cleanup(easy->curl);
    tc__free(easy);
}

/* Sets everything request-specific on easy, overwriting whatever the previous request set. */
static int easy_prepare(tc__easy *easy, tc__creq *r)
{
    CURL *curl = easy->curl;
    easy->errbuf[0] = '\0';
    SETOPT(curl, CURLOPT_URL, r->url);
    SETOPT(curl, CURLOPT_PRIVATE, r);
    SETOPT(curl, CURLOPT_WRITEDATA, r);
    SETOPT(curl, CURLOPT_HEADERDATA, r);
    SETOPT(curl, CURLOPT_PREREQDATA, r);
    SETOPT(curl, CURLOPT_OPENSOCKETDATA, r);
    /* Connecting elsewhere keeps the URL's host as Host and TLS name; libcurl's connection
     * cache keeps such connections apart from the host's own and from other addresses'. */
    SETOPT(curl, CURLOPT_CONNECT_TO, r->curl_connect_to);
    SETOPT(curl, CURLOPT_HTTPGET, 1L); /* resets method, upload and nobody */
    SETOPT(curl, CURLOPT_CUSTOMREQUEST, (char *)NULL);
    if (r->body != NULL) {
        SETOPT(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len);
        SETOPT(curl, CURLOPT_POSTFIELDS, r->body);
        if (strcmp(r->method, "POST") != 0)
            SETOPT(curl, CURLOPT_CUSTOMREQUEST, r->method);
    } else if (r->st != NULL && r->st->body != NULL) {
        /* An upload of unknown size goes chunked over HTTP/1.1 (libcurl's own rule). */
        SETOPT(curl, CURLOPT_UPLOAD, 1L);
        SETOPT(curl, CURLOPT_READFUNCTION, on_curl_read);
        SETOPT(curl, CURLOPT_READDATA, r);
        SETOPT(curl, CURLOPT_SEEKFUNCTION, on_curl_seek);
        SETOPT(curl, CURLOPT_SEEKDATA, r);
        SETOPT(curl, CURLOPT_INFILESIZE_LARGE, (curl_off_t)r->st->body->length);
        SETOPT(curl, CURLOPT_CUSTOMREQUEST, r->method);
    } else if (strcmp(r->method, "HEAD") == 0) {
        SETOPT(curl, CURLOPT_NOBODY, 1L);
    } else if (strcmp(r->method, "GET") != 0) {
        SETOPT(curl, CURLOPT_CUSTOMREQUEST, r->method);
    }
    SETOPT(curl, CURLOPT_HTTPHEADER, r->curl_headers);
    SETOPT(curl, CURLOPT_USERAGENT, r->no_default_headers ? NULL : "tailcut/" TC_VERSION_STRING);
    SETOPT(curl, CURLOPT_MAXFILESIZE_LARGE,
           (curl_off_t)(r->max_body < (size_t)INT64_MAX ? r->max_body : (size_t)INT64_MAX));
    SETOPT(curl, CURLOPT_PIPEWAIT, (r->https && r->client->cfg.http2) ? 1L : 0L);
    return 0;
fail:
    return TC_ENOMEM;
}

#undef SETOPT

/* ---- transfers ------------------------------------------------------------------------------ */

/* Takes r out of curl. Removing a running easy handle mid-transfer makes curl close (not pool)
 * its connection; with reset, SO_LINGER {1, 0} first makes that close a reset. */
static void transfer_end(tc__creq *r, int reset)
{
    tc__curl *eng = r->client->curl;
    tc__easy *easy = r->easy;
    if (easy == NULL)
        return;
    tc__list_remove(&r->curl_link);
    if (r->st != NULL) { /* news not told by now never will be */
        tc__list_remove(&r->st->curl_link);
        r->st->curl_notified = 0;
    }
    /* CURLINFO_ACTIVESOCKET knows a transfer's socket only once it is done; the socket
     * callback told us which one this transfer was using. */
    /* Not for a multiplexed (HTTP/2) connection: the other streams keep it. */
    tc__sock *sk = !r->origin->multiplex ? sock_get(eng, r->curl_fd, 0) : NULL;
    if (sk != NULL && sk->opened_by_us && reset) {
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        (void)setsockopt(r->curl_fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    } else if (sk != NULL && sk->origin != NULL && sk->gen != sk->origin->gen) {
        sock_shutdown(sk); /* its origin was retired while it was busy */
    }
    curl_multi_remove_handle(eng->multi, easy->curl);
    easy_release(eng, easy);
    r->easy = NULL;
}

static int map_curl_error(CURLcode code, long os_errno)
{
    switch (code) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        return TC_EDNS;
    case CURLE_COULDNT_CONNECT:
        return os_errno == ETIMEDOUT ? TC_ETIMEDOUT : TC_ECONNREFUSED;
    case CURLE_OPERATION_TIMEDOUT:
        return TC_ETIMEDOUT;
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
        return TC_ECONNRESET;
    case CURLE_FILESIZE_EXCEEDED:
        return TC_ETOOLARGE;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_SSL_SHUTDOWN_FAILED:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_CLIENTCERT:
    case CURLE_USE_SSL_FAILED:
        return TC_ETLS;
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_UNSUPPORTED_PROTOCOL: /* the scheme was checked: this is an HTTP/0.9 reply */
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_BAD_CONTENT_ENCODING:
    case CURLE_TOO_MANY_REDIRECTS:
        return TC_EPROTO;
    case CURLE_URL_MALFORMAT:
        return TC_EURL;
    case CURLE_OUT_OF_MEMORY:
        return TC_ENOMEM;
    default:
        return TC_EIO;
    }
}

/* The value of header name in r's head as a number, or -1. */
static int64_t head_number(const tc__creq *r, const char *name)
{
    tc_response head = {.headers = r->out.data, .headers_len = r->h1.body_off - 1};
    char v[32];
    if (tc_response_header(&head, name, v, sizeof(v)) <= 0)
        return -1;
    char *end = NULL;
    long long n = strtoll(v, &end, 10);
    return end != v && *end == '\0' && n >= 0 ? (int64_t)n : -1;
}

/* How r's streamed body is delimited, from its head (libcurl does not say). */
static int stream_framing(const tc__creq *r, int status, int version, int64_t *length)
{
    *length = -1;
    if (strcmp(r->method, "HEAD") == 0 || status == 204 || status == 304)
        return TC_BODY_NONE;
    tc_response head = {.headers = r->out.data, .headers_len = r->h1.body_off - 1};
    char te[64];
    if (version != 20 && tc_response_header(&head, "transfer-encoding", te, sizeof(te)) > 0)
        return TC_BODY_CHUNKED;
    *length = head_number(r, "content-length");
    if (*length >= 0)
        return TC_BODY_LENGTH;
    return version == 20 ? TC_BODY_CHUNKED : TC_BODY_CLOSE;
}

/* The final head of r's streamed response went by: its future fulfils. Returns 1 if r is no
 * longer in curl (the callbacks aborted it or let it go). */
static int stream_report_head(tc__creq *r)
{
    CURL *curl = ((tc__easy *)r->easy)->curl;
    long version = 0;
    curl_easy_getinfo(curl, CURLINFO_HTTP_VERSION, &version);
    int ver = version == CURL_HTTP_VERSION_2_0 ? 20 : version == CURL_HTTP_VERSION_1_0 ? 10 : 11;
    int status = r->st->curl_status;
    int64_t length = -1;
    int framing = stream_framing(r, status, ver, &length);
    if (tc__stream_head(r, status, ver, r->h1.body_off, framing, length))
        return 1;
    return r->easy == NULL;
}

/* News of r's stream from curl's callbacks, told now that curl has returned: its head, then
 * the body bytes held for its reader; and its request body's writable callback. Returns 1 if r
 * is no longer in curl. */
static int stream_tell(tc__creq *r)
{
    tc__stream *st = r->st;
    if (!st->stream_resp)
        return 0;
    if (!st->head) {
        if (!st->curl_head)
            return 0;
        if (stream_report_head(r))
            return 1;
    }
    int s = tc__stream_data(r, st->hold.data, st->hold.len, 0);
    if (s == TC__STREAM_GONE || r->easy == NULL)
        return 1;
    if (st->recv_paused && s == TC__STREAM_READ)
        tc__stream_kick(r); /* the reader took it all: unpause from the loop */
    return 0;
}

static void notify_all(tc__curl *eng)
{
    while (!eng->closing && !tc__list_empty(&eng->notify)) {
        tc__stream *st = tc__container_of(eng->notify.next, tc__stream, curl_link);
        tc__list_remove(&st->curl_link);
        st->curl_notified = 0;
        (void)stream_tell(st->r);
    }
}

/* r's transfer failed with code: it leaves curl and fails with the mapped error. */
static void fail_transfer(tc__creq *r, CURLcode code)
{
    tc__easy *easy = r->easy;
    char msg[CURL_ERROR_SIZE + 128];
    int err;
    long os_errno = 0;
    curl_easy_getinfo(easy->curl, CURLINFO_OS_ERRNO, &os_errno);
    if (r->curl_fail == FAIL_BODY_TOO_LARGE || code == CURLE_FILESIZE_EXCEEDED) {
        err = TC_ETOOLARGE;
        (void)snprintf(msg, sizeof(msg), "%s: body larger than %zu bytes", tc_strerror(err),
                       r->max_body);
    } else if (r->curl_fail == FAIL_HEADERS_TOO_LARGE) {
        err = TC_EPROTO;
        (void)snprintf(msg, sizeof(msg), "%s: response headers larger than %zu bytes",
                       tc_strerror(err), TC__CLIENT_MAX_HEADER_BYTES);
    } else if (r->curl_fail == FAIL_NOMEM) {
        err = TC_ENOMEM;
        (void)snprintf(msg, sizeof(msg), "%s", tc_strerror(err));
    } else if (r->curl_fail == FAIL_RESENT) {
        err = TC_ESTALE; /* libcurl wanted to send it again: a reused connection died */
        (void)snprintf(msg, sizeof(msg), "%s", tc_strerror(err));
    } else {
        err = map_curl_error(code, os_errno);
        const char *detail = easy->errbuf[0] ? easy->errbuf : curl_easy_strerror(code);
        (void)snprintf(msg, sizeof(msg), "%s: %s", tc_strerror(err), detail);
    }
    transfer_end(r, 1);
    tc__creq_fail(r, err, msg);
}

/* A DONE message from curl for r: report the response or a mapped error. */
static void finish_transfer(tc__creq *r, CURLcode code)
{
    CURL *curl = ((tc__easy *)r->easy)->curl;
    tc__stream *st = r->st;
    if (st != NULL && st->stream_resp && !st->head) {
        /* A head not told yet: one with no body (HEAD, 204, 304, a 3xx not followed) ends here,
         * and a body may have come with it. */
        if (code == CURLE_OK && !st->curl_head) {
            if (r->h1.body_off == 0 && start_body(r) != 0)
                code = CURLE_OUT_OF_MEMORY;
            else
                st->curl_head = 1;
        }
        if (st->curl_head && stream_tell(r))
            return;
    }

    if (code != CURLE_OK) {
        fail_transfer(r, code);
        return;
    }

    long status = 0, version = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(curl, CURLINFO_HTTP_VERSION, &version);
    if (r->h1.body_off == 0 && start_body(r) != 0) {
        transfer_end(r, 0);
        tc__creq_fail(r, TC_ENOMEM, NULL);
        return;
    }
    int ver = version == CURL_HTTP_VERSION_2_0 ? 20 : version == CURL_HTTP_VERSION_1_0 ? 10 : 11;
    transfer_end(r, 0);
    tc__creq_succeed(r, (int)status, ver, r->h1.body_off);
}

static void check_multi_info(tc__curl *eng)
{
    CURLMsg *msg;
    int left = 0;
    while (!eng->closing && (msg = curl_multi_info_read(eng->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        CURLcode code = msg->data.result;
        char *priv = NULL;
        if (curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &priv) != CURLE_OK ||
            priv == NULL) {
            curl_multi_remove_handle(eng->multi, msg->easy_handle); /* cannot happen; be safe */
            continue;
        }
        finish_transfer((tc__creq *)(void *)priv, code);
    }
}

/* After curl_multi_socket_action: a failure of the multi handle itself fails every running
 * request (nothing would ever complete them); then report finished transfers. */
static void after_socket_action(tc__curl *eng, CURLMcode mc)
{
    if (mc != CURLM_OK && !eng->closing) {
        char msg[160];
        int err = mc == CURLM_OUT_OF_MEMORY ? TC_ENOMEM : TC_EIO;
        (void)snprintf(msg, sizeof(msg), "%s: libcurl multi: %s", tc_strerror(err),
                       curl_multi_strerror(mc));
        while (!eng->closing && !tc__list_empty(&eng->running)) {
            tc__creq *r = tc__container_of(eng->running.next, tc__creq, curl_link);
            transfer_end(r, 1);
            tc__creq_fail(r, err, msg);
        }
    }
    notify_all(eng);
    check_multi_info(eng);
}

/* ---- engine --------------------------------------------------------------------------------- */

static void curl_free_all(tc__curl *eng)
{
    if (eng->multi != NULL)
        curl_multi_cleanup(eng->multi);
    if (eng->curl_global)
        curl_global_cleanup();
}

/* The engine of client cl, created on first use. NULL on failure (*err says why). */
static tc__curl *curl_get(tc_client *cl, int *err)
{
    if (cl->curl != NULL)
        return cl->curl;
    *err = TC_ENOMEM;
    tc__curl *eng = tc__calloc(1, sizeof(*eng));
    if (eng == NULL)
        return NULL;
    eng->client = cl;
    eng->loop = cl->loop;
    tc__list_init(&eng->running);
    tc__list_init(&eng->notify);
    tc__list_init(&eng->easy_pool);
    /* libcurl allocates through the library's hook (base/alloc.h), so failing allocations reach
     * it too. A failure here is TC_EIO: libcurl says only CURLE_FAILED_INIT, whatever the cause. */
    *err = TC_EIO;
    if (curl_global_init_mem(CURL_GLOBAL_DEFAULT, tc__malloc, tc__free, tc__realloc, tc__strdup,
                             tc__calloc) != CURLE_OK)
        goto fail;
    eng->curl_global = 1;
    *err = TC_ENOMEM; /* curl_multi_init fails only for want of memory */
    eng->multi = curl_multi_init();
    if (eng->multi == NULL)
        goto fail;
    *err = TC_EIO;
    /* Admission is the client's: curl never caps or queues. MAXCONNECTS bounds its cache of
     * idle connections to the same figure as the client's total. */
    long maxc = (long)cl->cfg.max_connections;
    if (curl_multi_setopt(eng->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket) != CURLM_OK ||
        curl_multi_setopt(eng->multi, CURLMOPT_SOCKETDATA, eng) != CURLM_OK ||
        curl_multi_setopt(eng->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer) != CURLM_OK ||
        curl_multi_setopt(eng->multi, CURLMOPT_TIMERDATA, eng) != CURLM_OK ||
        curl_multi_setopt(eng->multi, CURLMOPT_MAXCONNECTS, maxc) != CURLM_OK ||
        curl_multi_setopt(eng->multi, CURLMOPT_PIPELINING,
                          cl->cfg.http2 ? (long)CURLPIPE_MULTIPLEX : (long)CURLPIPE_NOTHING) !=
            CURLM_OK)
        goto fail;
    if (uv_timer_init(eng->loop, &eng->curl_timer) != 0)
        goto fail;
    eng->curl_timer.data = eng;
    eng->open_handles++;
    cl->curl = eng;
    cl->open_handles++; /* given back when the engine is freed */
    return eng;
fail:
    curl_free_all(eng);
    tc__free(eng);
    return NULL;
}

/* Builds the header list for r: the caller's headers, plus "Content-Type:" (no default type)
 * and "Expect:" (for a large body) when there is a body. */
/* Appends one line to r's header list. Returns 0 or TC_ENOMEM. */
static int header_add(tc__creq *r, const char *line)
{
    struct curl_slist *sl = curl_slist_append(r->curl_headers, line);
    if (sl == NULL)
        return TC_ENOMEM;
    r->curl_headers = sl;
    return 0;
}

int tc__curl_prepare(tc__creq *r)
{
    char small[512];
    int has_type = 0, has_accept = 0;
    for (size_t i = 0; i < r->req_nheaders; i++) {
        const tc_header *hd = &r->req_headers[i];
        /* The framing headers are the client's own, as on the native engine. */
        if (strcasecmp(hd->name, "content-length") == 0 ||
            strcasecmp(hd->name, "transfer-encoding") == 0)
            continue;
        has_type |= strcasecmp(hd->name, "content-type") == 0;
        has_accept |= strcasecmp(hd->name, "accept") == 0;
        size_t n = strlen(hd->name) + strlen(hd->value) + 3;
        char *line = n <= sizeof(small) ? small : tc__malloc(n);
        if (line == NULL)
            return TC_ENOMEM;
        /* "Name;" is curl's way to send a header with an empty value. Both fit: n counts them. */
        if (hd->value[0] == '\0')
            (void)snprintf(line, n, "%s;", hd->name);
        else
            (void)snprintf(line, n, "%s: %s", hd->name, hd->value);
        struct curl_slist *sl = curl_slist_append(r->curl_headers, line);
        if (line != small)
            tc__free(line);
        if (sl == NULL)
            return TC_ENOMEM;
        r->curl_headers = sl;
    }
    /* libcurl labels a body application/x-www-form-urlencoded by itself; the native engine
     * sends only what the caller set, and so does this one ("Content-Type:" removes it). */
    if (r->body != NULL && !has_type && header_add(r, "Content-Type:") != 0)
        return TC_ENOMEM;
    /* No 100-continue round trip: a large body, or one the caller streams (a proxy answers its
     * own client's Expect itself). */
    int streamed = r->st != NULL && r->st->body != NULL;
    if (((r->body != NULL && r->body_len > TC__CURL_EXPECT_THRESHOLD) || streamed) &&
        header_add(r, "Expect:") != 0)
        return TC_ENOMEM;
    if (r->no_default_headers && !has_accept && header_add(r, "Accept:") != 0)
        return TC_ENOMEM;
    if (r->connect_to != NULL) {
        /* "HOST:PORT:ADDRESS:PORT" with HOST and both ports empty: whatever the URL names,
         * connect to ADDRESS on the URL's port. An IPv6 address goes in brackets. */
        char entry[TC__CLIENT_ADDR_TEXT + 8];
        int v6 = strchr(r->connect_to, ':') != NULL;
        (void)snprintf(entry, sizeof(entry), "::%s%s%s:", v6 ? "[" : "", r->connect_to,
                       v6 ? "]" : "");
        r->curl_connect_to = curl_slist_append(NULL, entry);
        if (r->curl_connect_to == NULL)
            return TC_ENOMEM;
    }
    return 0;
}

void tc__curl_release(tc__creq *r)
{
    curl_slist_free_all(r->curl_headers);
    r->curl_headers = NULL;
    curl_slist_free_all(r->curl_connect_to);
    r->curl_connect_to = NULL;
}

int tc__curl_start(tc__creq *r)
{
    int err = 0;
    tc__curl *eng = curl_get(r->client, &err);
    if (eng == NULL)
        return err;
    tc__easy *easy = easy_acquire(eng);
    if (easy == NULL)
        return TC_ENOMEM;
    if (easy_prepare(easy, r) != 0) {
        easy_release(eng, easy);
        return TC_ENOMEM;
    }
    tc__buf_reset(&r->out);
    r->h1.body_off = 0;
    r->curl_fail = FAIL_NONE;
    r->curl_sends = 0;
    r->curl_fd = CURL_SOCKET_BAD;
    CURLMcode mc = curl_multi_add_handle(eng->multi, easy->curl);
    if (mc != CURLM_OK) {
        easy_release(eng, easy);
        return mc == CURLM_OUT_OF_MEMORY ? TC_ENOMEM : TC_EIO;
    }
    r->easy = easy;
    tc__list_push_back(&eng->running, &r->curl_link);
    return 0;
}

void tc__curl_abort(tc__creq *r)
{
    transfer_end(r, 1);
}

void tc__curl_stream_resume(tc__creq *r)
{
    tc__easy *easy = r->easy;
    tc__stream *st = r->st;
    if (easy == NULL || (!st->recv_paused && !st->send_paused))
        return;
    /* Receiving goes on once the reader has taken what was held; sending once the caller has
     * queued bytes or ended the body. */
    if (st->recv_paused && st->reading && !st->paused && st->hold.len == 0)
        st->recv_paused = 0;
    const tc_client_body *b = st->body;
    if (st->send_paused && b != NULL && (b->queued.len > b->queued_off || b->ended || b->aborted))
        st->send_paused = 0;
    int mask = (st->recv_paused ? CURLPAUSE_RECV : 0) | (st->send_paused ? CURLPAUSE_SEND : 0);
    /* May call the write and read callbacks at once; they only fill the hold and the notify
     * list, which the next socket action (libcurl asks for one at once) tells. A callback that
     * failed (the body over max_body) fails the transfer here. */
    CURLcode rc = curl_easy_pause(easy->curl, mask);
    if (rc != CURLE_OK)
        fail_transfer(r, rc);
}

void tc__curl_retire(tc_client *cl, tc__origin *o)
{
    tc__curl *eng = cl->curl;
    for (size_t fd = 0; fd < eng->nsocks; fd++) {
        tc__sock *sk = eng->socks[fd];
        if (sk == NULL || sk->origin != o || o->multiplex)
            continue;
        int busy = 0;
        for (tc__link *l = eng->running.next; l != &eng->running && !busy; l = l->next)
            busy = tc__container_of(l, tc__creq, curl_link)->curl_fd == sk->fd;
        if (!busy)
            sock_shutdown(sk); /* idle: now; a busy one when its transfer ends (transfer_end) */
    }
}

static void maybe_free(tc__curl *eng)
{
    if (!eng->closing || eng->open_handles > 0 || eng->multi != NULL)
        return;
    tc_client *cl = eng->client;
    tc__free(eng->socks);
    if (eng->curl_global)
        curl_global_cleanup();
    cl->curl = NULL;
    tc__free(eng);
    tc__client_handle_closed(cl);
}

/* The curl timer has closed: no uv callback can reach curl any more, so tear curl down. Closing
 * its cached connections calls on_close_socket, which closes their poll handles. */
static void on_curl_timer_closed(uv_handle_t *h)
{
    tc__curl *eng = h->data;
    curl_multi_cleanup(eng->multi);
    eng->multi = NULL;
    tc__link *l;
    while ((l = tc__list_first(&eng->easy_pool)) != NULL) {
        tc__easy *easy = tc__container_of(l, tc__easy, link);
        tc__list_remove(l);
        curl_easy_cleanup(easy->curl);
        tc__free(easy);
    }
    eng->neasy_pool = 0;
    for (size_t fd = 0; fd < eng->nsocks; fd++)
        if (eng->socks[fd] != NULL)
            sock_release(eng, eng->socks[fd]);
    eng->open_handles--;
    maybe_free(eng);
}

void tc__curl_close(tc_client *cl)
{
    tc__curl *eng = cl->curl;
    eng->closing = 1;
    uv_timer_stop(&eng->curl_timer);
    uv_close((uv_handle_t *)&eng->curl_timer, on_curl_timer_closed);
}
