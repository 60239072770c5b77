/*
 * The pooled, non-blocking HTTP client: libcurl's multi_socket interface driven by a caller's uv
 * loop. All libcurl <-> libuv glue lives in this file.
 *
 * The one idea that makes it work: libcurl owns the sockets and the protocol, libuv owns the
 * waiting, and this file owns *admission and deadlines*. curl tells us which socket to watch
 * (CURLMOPT_SOCKETFUNCTION -> one uv_poll per fd) and when to wake it (CURLMOPT_TIMERFUNCTION ->
 * one uv_timer); we hand readiness back with curl_multi_socket_action(). We never let curl queue
 * requests itself: a request enters the multi handle only when a pooled connection is free for
 * it (our FIFO queue, which also gives us queued_ms), and every request's whole deadline, queue
 * time included, is kept by our own min-heap behind one more uv_timer, because libcurl 7.88 does
 * not time out transfers that wait in its internal pending list (fixed upstream only in 8.8).
 *
 * Lifetimes: a request is one allocation (struct tc_creq) whose first member is the public
 * tc_response, and whose inline buffer usually holds the whole header block and body, so a
 * typical request costs one malloc of ours. On success the allocation is handed to the future as
 * its value; on failure or cancellation it is freed at once. Easy handles are pooled and reused.
 * uv handles are freed only in their close callbacks; the client itself is freed once the last
 * of them has closed.
 *
 * Re-entrancy rule: futures are completed only from uv callbacks or from the public API, never
 * from inside a libcurl callback, because user callbacks may call back into this client (start,
 * cancel, close) and libcurl forbids multi calls from within its own callbacks.
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

#include "tailcut/client.h"
#include "tailcut/url.h"

#ifndef TC_VERSION
#define TC_VERSION "0"
#endif

/* Limits on what the network can make us store. */
#define TC_CLIENT_MAX_HEADER_BYTES (64 * 1024) /* whole response header block -> TC_EPROTO */
#define TC_CLIENT_MAX_HOST_KEY 512             /* "scheme://host:port" of one URL -> TC_EURL */

/* Memory and speed trade-offs. */
#define TC_CLIENT_INLINE_BYTES 512 /* response bytes kept inside the request allocation */
#define TC_CLIENT_EASY_POOL_MAX 64 /* idle curl easy handles kept for reuse */
#ifndef TC_CLIENT_RECV_BUFFER
#define TC_CLIENT_RECV_BUFFER 2048 /* curl's per-transfer receive buffer (default 16 KiB) */
#endif
#define TC_CLIENT_MAX_REDIRECTS 5L      /* when follow_redirects is on */
#define TC_CLIENT_EXPECT_THRESHOLD 1024 /* bodies above this get "Expect:" to skip 100-continue */

#define container_of(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

/* ---- small intrusive list ------------------------------------------------------------------ */

typedef struct tc_link {
    struct tc_link *prev, *next;
} tc_link;

static void link_init(tc_link *head)
{
    head->prev = head->next = head;
}

static int link_empty(const tc_link *head)
{
    return head->next == head;
}

static void link_push_back(tc_link *head, tc_link *l)
{
    l->prev = head->prev;
    l->next = head;
    head->prev->next = l;
    head->prev = l;
}

static void link_remove(tc_link *l)
{
    l->prev->next = l->next;
    l->next->prev = l->prev;
    l->prev = l->next = l;
}

/* ---- types --------------------------------------------------------------------------------- */

/* One origin ("scheme://host:port"): how many pooled connection slots its requests hold. Lives
 * while requests (queued or running) name it. */
typedef struct tc_host {
    struct tc_host *hnext;
    uint32_t hash;
    size_t refs;   /* queued + running requests naming this host */
    size_t slots;  /* running requests that hold a connection slot */
    int multiplex; /* a response came over HTTP/2: curl shares connections, no slots needed */
    char key[];
} tc_host;

/* A pooled curl easy handle with the error buffer curl writes into. */
typedef struct tc_easy {
    CURL *curl;
    struct tc_easy *next;
    char errbuf[CURL_ERROR_SIZE];
} tc_easy;

/* One socket curl asked us about. Sockets curl opened through our opensocket callback live until
 * our closesocket callback, so keep-alive connections keep their uv_poll between requests;
 * others (resolver wake-up pipes) live until CURL_POLL_REMOVE.
 *
 * CURL_POLL_REMOVE always stops the poll at once, while the fd is still open: libcurl 7.88
 * may close a socket right after REMOVE *without* calling our close-socket callback (seen for
 * a connection removed mid-connect), and a poll left armed on a closed fd makes libuv abort on
 * EBADF, or steal the events of whatever reuses the fd number next. */
typedef struct tc_sock {
    uv_poll_t poll;
    tc_client *client;
    curl_socket_t fd;
    int opened_by_us;
    int poll_ready; /* uv_poll_init_socket succeeded */
    int events;     /* UV_READABLE | UV_WRITABLE the poll is armed for; 0 = stopped */
} tc_sock;

enum { REQ_NEW = 0, REQ_QUEUED, REQ_RUNNING };
enum { FAIL_NONE = 0, FAIL_BODY_TOO_LARGE, FAIL_HEADERS_TOO_LARGE, FAIL_NOMEM, FAIL_RESENT };

typedef struct tc_creq {
    tc_response resp; /* first: the future's value on success */
    tc_client *client;
    tc_future *future; /* the producer's reference while running; NULL once completed */
    tc_host *host;
    tc_easy *easy; /* while REQ_RUNNING */
    tc_link link;  /* in client->queue or client->running */
    int state;
    int holds_slot;
    int fail;       /* FAIL_*: why a curl callback aborted the transfer */
    unsigned sends; /* times libcurl was about to send this request */
    int https;
    size_t heap_idx; /* position in the deadline heap, SIZE_MAX if none */
    uint64_t deadline;
    uint64_t timeout_ms;
    uint64_t start_ns, admit_ns;
    size_t max_body;
    struct curl_slist *headers;
    const char *method;
    const char *url;
    const char *body;
    size_t body_len;
    /* Response bytes: [header block] NUL [body] NUL, inline until they outgrow it. */
    char *buf;
    size_t len, cap;
    size_t body_off; /* 0 until the first body byte (or the end) */
    char inline_buf[TC_CLIENT_INLINE_BYTES];
    char strings[]; /* url, method and request body copies */
} tc_creq;

struct tc_client {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t curl_timer;     /* what curl's TIMERFUNCTION asks for */
    uv_timer_t deadline_timer; /* the earliest request deadline */
    tc_client_config cfg;
    char *ca_file;

    tc_link queue;   /* REQ_QUEUED, FIFO */
    tc_link running; /* REQ_RUNNING */
    size_t slots_used;

    tc_creq **heap; /* min-heap on deadline */
    size_t heap_len, heap_cap;

    tc_host **hosts; /* hash table of live hosts */
    size_t nbuckets, nhosts;

    tc_sock **socks; /* indexed by fd */
    size_t nsocks;

    tc_easy *easy_pool;
    size_t neasy_pool;

    tc_client_stats stats;

    int closing;
    int curl_global;     /* curl_global_init succeeded */
    size_t open_handles; /* uv handles not yet through their close callback */
    tc_client_close_cb close_cb;
    void *close_data;
};

/* ---- forward declarations ------------------------------------------------------------------- */

static void req_cancel_hook(tc_future *f, void *data);
static void pump_queue(tc_client *c);
static void fail_request(tc_creq *r, int err, const char *msg);
static void maybe_finish_close(tc_client *c);

/* ---- config -------------------------------------------------------------------------------- */

void tc_client_config_init(tc_client_config *cfg)
{
    if (cfg == NULL)
        return;
    memset(cfg, 0, sizeof(*cfg));
    cfg->max_connections = TC_CLIENT_DEFAULT_MAX_CONNECTIONS;
    cfg->max_per_host = 0;
    cfg->timeout_ms = TC_CLIENT_DEFAULT_TIMEOUT_MS;
    cfg->connect_timeout_ms = TC_CLIENT_DEFAULT_CONNECT_TIMEOUT_MS;
    cfg->max_body = (size_t)TC_CLIENT_DEFAULT_MAX_BODY;
    cfg->ca_file = NULL;
    cfg->insecure = 0;
    cfg->http2 = 1;
    cfg->follow_redirects = 0;
}

/* ---- deadline heap ------------------------------------------------------------------------- */

static void heap_set(tc_client *c, size_t i, tc_creq *r)
{
    c->heap[i] = r;
    r->heap_idx = i;
}

static void heap_sift_up(tc_client *c, size_t i)
{
    tc_creq *r = c->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (c->heap[parent]->deadline <= r->deadline)
            break;
        heap_set(c, i, c->heap[parent]);
        i = parent;
    }
    heap_set(c, i, r);
}

static void heap_sift_down(tc_client *c, size_t i)
{
    tc_creq *r = c->heap[i];
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= c->heap_len)
            break;
        if (child + 1 < c->heap_len && c->heap[child + 1]->deadline < c->heap[child]->deadline)
            child++;
        if (r->deadline <= c->heap[child]->deadline)
            break;
        heap_set(c, i, c->heap[child]);
        i = child;
    }
    heap_set(c, i, r);
}

static void on_deadline(uv_timer_t *t);

/* Milliseconds of the monotonic clock behind uv_now(), read fresh (uv_now() is cached per loop
 * iteration and can be milliseconds stale). */
static uint64_t now_ms(void)
{
    return uv_hrtime() / 1000000;
}

/* Arms the deadline timer for the earliest deadline. Cheap enough to call after every change. */
static void deadline_rearm(tc_client *c)
{
    if (c->closing)
        return;
    if (c->heap_len == 0) {
        uv_timer_stop(&c->deadline_timer);
        return;
    }
    uint64_t now = uv_now(c->loop);
    uint64_t first = c->heap[0]->deadline;
    uv_timer_start(&c->deadline_timer, on_deadline, first > now ? first - now : 0, 0);
}

static int heap_push(tc_client *c, tc_creq *r)
{
    if (c->heap_len == c->heap_cap) {
        size_t ncap = c->heap_cap ? c->heap_cap * 2 : 64;
        tc_creq **n = realloc(c->heap, ncap * sizeof(tc_creq *));
        if (n == NULL)
            return TC_ENOMEM;
        c->heap = n;
        c->heap_cap = ncap;
    }
    c->heap[c->heap_len] = r;
    r->heap_idx = c->heap_len++;
    heap_sift_up(c, r->heap_idx);
    if (r->heap_idx == 0)
        deadline_rearm(c);
    return 0;
}

static void heap_remove(tc_client *c, tc_creq *r)
{
    size_t i = r->heap_idx;
    if (i == SIZE_MAX)
        return;
    r->heap_idx = SIZE_MAX;
    c->heap_len--;
    if (c->heap_len == 0) {
        uv_timer_stop(&c->deadline_timer); /* an armed timer would keep the loop alive */
        return;
    }
    if (i == c->heap_len)
        return;
    heap_set(c, i, c->heap[c->heap_len]);
    heap_sift_down(c, i);
    heap_sift_up(c, c->heap[i]->heap_idx);
    /* A removed head leaves the timer early, and on_deadline re-arms: no restart needed here. */
}

/* ---- hosts --------------------------------------------------------------------------------- */

static uint32_t hash_str(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

/* Finds or creates the host record for key and takes a reference. NULL on ENOMEM. */
static tc_host *host_ref(tc_client *c, const char *key)
{
    uint32_t h = hash_str(key);
    if (c->nbuckets) {
        for (tc_host *x = c->hosts[h & (c->nbuckets - 1)]; x; x = x->hnext) {
            if (x->hash == h && strcmp(x->key, key) == 0) {
                x->refs++;
                return x;
            }
        }
    }
    if (c->nhosts >= c->nbuckets) {
        size_t nb = c->nbuckets ? c->nbuckets * 2 : 16;
        tc_host **t = calloc(nb, sizeof(tc_host *));
        if (t == NULL)
            return NULL;
        for (size_t i = 0; i < c->nbuckets; i++) {
            tc_host *x = c->hosts[i];
            while (x) {
                tc_host *next = x->hnext;
                x->hnext = t[x->hash & (nb - 1)];
                t[x->hash & (nb - 1)] = x;
                x = next;
            }
        }
        free(c->hosts);
        c->hosts = t;
        c->nbuckets = nb;
    }
    size_t klen = strlen(key);
    tc_host *x = calloc(1, sizeof(*x) + klen + 1);
    if (x == NULL)
        return NULL;
    memcpy(x->key, key, klen + 1);
    x->hash = h;
    x->refs = 1;
    x->hnext = c->hosts[h & (c->nbuckets - 1)];
    c->hosts[h & (c->nbuckets - 1)] = x;
    c->nhosts++;
    return x;
}

static void host_unref(tc_client *c, tc_host *x)
{
    if (x == NULL || --x->refs > 0)
        return;
    tc_host **pp = &c->hosts[x->hash & (c->nbuckets - 1)];
    while (*pp != x)
        pp = &(*pp)->hnext;
    *pp = x->hnext;
    c->nhosts--;
    free(x);
}

/* A request for host may enter curl now: a connection slot is free in total and for its host.
 * Hosts known to multiplex (HTTP/2) need no slot; curl's own caps bound their connections. */
static int can_admit(const tc_client *c, const tc_host *x)
{
    if (x->multiplex)
        return 1;
    if (c->slots_used >= c->cfg.max_connections)
        return 0;
    return c->cfg.max_per_host == 0 || x->slots < c->cfg.max_per_host;
}

/* ---- response buffer ----------------------------------------------------------------------- */

/* Appends n bytes, keeping room for one more NUL. Returns 0 or TC_ENOMEM. */
static int buf_append(tc_creq *r, const char *p, size_t n)
{
    if (r->len + n + 1 > r->cap) {
        size_t ncap = r->cap * 2;
        while (ncap < r->len + n + 1)
            ncap *= 2;
        char *nb;
        if (r->buf == r->inline_buf) {
            nb = malloc(ncap);
            if (nb != NULL)
                memcpy(nb, r->buf, r->len);
        } else {
            nb = realloc(r->buf, ncap);
        }
        if (nb == NULL)
            return TC_ENOMEM;
        r->buf = nb;
        r->cap = ncap;
    }
    memcpy(r->buf + r->len, p, n);
    r->len += n;
    return 0;
}

/* Ends the header block: a NUL after it, the body starts after that. */
static int buf_start_body(tc_creq *r)
{
    if (buf_append(r, "", 1) != 0)
        return TC_ENOMEM;
    r->body_off = r->len;
    return 0;
}

static void creq_free(tc_creq *r)
{
    if (r->buf != r->inline_buf)
        free(r->buf);
    curl_slist_free_all(r->headers);
    free(r);
}

static void response_free(void *value)
{
    creq_free(container_of(value, tc_creq, resp));
}

/* ---- curl data callbacks (no futures completed here) --------------------------------------- */

/* libcurl 7.88 silently sends a request again on a fresh connection when a reused one dies
 * before any answer byte. For us one request must be one upstream attempt (a hedge counts and
 * cancels attempts), so a second send fails the request as a reset instead. Redirects, when
 * followed, legitimately send again. */
static int on_prereq(void *userp, char *conn_primary_ip, char *conn_local_ip, int conn_primary_port,
                     int conn_local_port)
{
    tc_creq *r = userp;
    if (++r->sends > 1 && !r->client->cfg.follow_redirects) {
        r->fail = FAIL_RESENT;
        return CURL_PREREQFUNC_ABORT;
    }
    return CURL_PREREQFUNC_OK;
}

static size_t on_header(char *data, size_t size, size_t nitems, void *userp)
{
    tc_creq *r = userp;
    size_t n = size * nitems;
    if (n >= 5 && memcmp(data, "HTTP/", 5) == 0) {
        /* A status line: a 1xx or a followed redirect came before; keep only the last block. */
        r->len = 0;
        r->body_off = 0;
    } else if (r->body_off != 0) {
        return n; /* trailers after a chunked body: not part of the header block */
    }
    if (r->len + n > (size_t)TC_CLIENT_MAX_HEADER_BYTES) {
        r->fail = FAIL_HEADERS_TOO_LARGE;
        return 0;
    }
    if (buf_append(r, data, n) != 0) {
        r->fail = FAIL_NOMEM;
        return 0;
    }
    return n;
}

static size_t on_body(char *data, size_t size, size_t nitems, void *userp)
{
    tc_creq *r = userp;
    size_t n = size * nitems;
    if (r->body_off == 0 && buf_start_body(r) != 0) {
        r->fail = FAIL_NOMEM;
        return 0;
    }
    if (r->len - r->body_off + n > r->max_body) {
        r->fail = FAIL_BODY_TOO_LARGE;
        return 0; /* aborts the transfer at once */
    }
    if (buf_append(r, data, n) != 0) {
        r->fail = FAIL_NOMEM;
        return 0;
    }
    return n;
}

/* ---- sockets -------------------------------------------------------------------------------- */

static void on_handle_closed(uv_handle_t *h)
{
    tc_client *c = h->data;
    c->open_handles--;
    maybe_finish_close(c);
}

static void on_sock_closed(uv_handle_t *h)
{
    tc_sock *s = container_of((uv_poll_t *)h, tc_sock, poll);
    tc_client *c = s->client;
    free(s);
    c->open_handles--;
    maybe_finish_close(c);
}

/* Forgets s: stops and closes its poll handle (freed in the close callback). Must run while the
 * fd is still open, so that libuv can take it out of epoll. */
static void sock_release(tc_client *c, tc_sock *s)
{
    if ((size_t)s->fd < c->nsocks && c->socks[s->fd] == s)
        c->socks[s->fd] = NULL;
    if (s->opened_by_us && c->stats.open_connections > 0)
        c->stats.open_connections--;
    if (s->poll_ready) {
        uv_poll_stop(&s->poll);
        uv_close((uv_handle_t *)&s->poll, on_sock_closed);
    } else {
        free(s);
        c->open_handles--;
    }
}

/* The record for fd, created if needed. NULL on ENOMEM. */
static tc_sock *sock_get(tc_client *c, curl_socket_t fd, int create)
{
    if (fd < 0)
        return NULL;
    if ((size_t)fd < c->nsocks && c->socks[fd] != NULL)
        return c->socks[fd];
    if (!create)
        return NULL;
    if ((size_t)fd >= c->nsocks) {
        size_t n = c->nsocks ? c->nsocks : 64;
        while (n <= (size_t)fd)
            n *= 2;
        tc_sock **t = realloc(c->socks, n * sizeof(tc_sock *));
        if (t == NULL)
            return NULL;
        memset(t + c->nsocks, 0, (n - c->nsocks) * sizeof(tc_sock *));
        c->socks = t;
        c->nsocks = n;
    }
    tc_sock *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->client = c;
    s->fd = fd;
    s->poll.data = c;
    c->socks[fd] = s;
    c->open_handles++;
    return s;
}

static curl_socket_t on_open_socket(void *clientp, curlsocktype purpose, struct curl_sockaddr *addr)
{
    tc_client *c = clientp;
    (void)purpose;
    curl_socket_t fd = socket(addr->family, addr->socktype | SOCK_CLOEXEC, addr->protocol);
    if (fd < 0)
        return CURL_SOCKET_BAD;
    tc_sock *stale = sock_get(c, fd, 0);
    if (stale != NULL)
        sock_release(c, stale); /* curl closed that fd without telling us; forget it */
    tc_sock *s = sock_get(c, fd, 1);
    if (s == NULL) {
        close(fd);
        errno = ENOMEM;
        return CURL_SOCKET_BAD;
    }
    s->opened_by_us = 1;
    c->stats.open_connections++;
    return fd;
}

static int on_close_socket(void *clientp, curl_socket_t fd)
{
    tc_client *c = clientp;
    tc_sock *s = sock_get(c, fd, 0);
    if (s != NULL)
        sock_release(c, s); /* epoll forgets fd before it is closed */
    return close(fd);
}

static void after_socket_action(tc_client *c, CURLMcode mc);

static void on_poll(uv_poll_t *h, int status, int events)
{
    tc_sock *s = container_of(h, tc_sock, poll);
    tc_client *c = s->client;
    int flags = 0;
    if (status < 0) {
        flags = CURL_CSELECT_ERR;
    } else {
        if (events & UV_READABLE)
            flags |= CURL_CSELECT_IN;
        if (events & UV_WRITABLE)
            flags |= CURL_CSELECT_OUT;
    }
    int running = 0;
    CURLMcode mc = curl_multi_socket_action(c->multi, s->fd, flags, &running);
    after_socket_action(c, mc); /* s may be gone by now */
}

/* CURLMOPT_SOCKETFUNCTION: watch fd for what curl wants, or stop watching it. */
static int on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    tc_client *c = userp;
    (void)easy;
    (void)socketp;
    if (what == CURL_POLL_REMOVE || what == CURL_POLL_NONE) {
        tc_sock *s = sock_get(c, fd, 0);
        if (s == NULL)
            return 0;
        if (s->opened_by_us) {
            if (s->poll_ready && s->events != 0)
                uv_poll_stop(&s->poll); /* keep the handle for the pooled connection */
            s->events = 0;
        } else {
            sock_release(c, s); /* not ours to keep: curl closes it right after this */
        }
        return 0;
    }
    tc_sock *s = sock_get(c, fd, 1);
    if (s == NULL)
        return -1;
    if (!s->poll_ready) {
        if (uv_poll_init_socket(c->loop, &s->poll, fd) != 0) {
            sock_release(c, s);
            return -1;
        }
        s->poll.data = c;
        s->poll_ready = 1;
    }
    int events = 0;
    if (what & CURL_POLL_IN)
        events |= UV_READABLE;
    if (what & CURL_POLL_OUT)
        events |= UV_WRITABLE;
    if (events == s->events)
        return 0;
    if (uv_poll_start(&s->poll, events, on_poll) != 0)
        return -1;
    s->events = events;
    return 0;
}

/* ---- curl timer ----------------------------------------------------------------------------- */

static void on_curl_timeout(uv_timer_t *t)
{
    tc_client *c = container_of(t, tc_client, curl_timer);
    int running = 0;
    CURLMcode mc = curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    after_socket_action(c, mc);
}

/* CURLMOPT_TIMERFUNCTION: one-shot timer; never calls into curl from here. */
static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
    tc_client *c = userp;
    (void)multi;
    if (c->closing)
        return 0;
    if (timeout_ms < 0) {
        uv_timer_stop(&c->curl_timer);
        return 0;
    }
    return uv_timer_start(&c->curl_timer, on_curl_timeout, (uint64_t)timeout_ms, 0) == 0 ? 0 : -1;
}

/* ---- easy handles --------------------------------------------------------------------------- */

#define SETOPT(h, opt, val)                                                                        \
    do {                                                                                           \
        if (curl_easy_setopt((h), (opt), (val)) != CURLE_OK)                                       \
            goto fail;                                                                             \
    } while (0)

/* A fresh easy handle with every option that is the same for all of this client's requests. */
static tc_easy *easy_new(tc_client *c)
{
    tc_easy *e = calloc(1, sizeof(*e));
    if (e == NULL)
        return NULL;
    e->curl = curl_easy_init();
    if (e->curl == NULL)
        goto fail;
    CURL *h = e->curl;
    SETOPT(h, CURLOPT_NOSIGNAL, 1L);
    SETOPT(h, CURLOPT_TCP_NODELAY, 1L);
    SETOPT(h, CURLOPT_ERRORBUFFER, e->errbuf);
    SETOPT(h, CURLOPT_WRITEFUNCTION, on_body);
    SETOPT(h, CURLOPT_HEADERFUNCTION, on_header);
    SETOPT(h, CURLOPT_PREREQFUNCTION, on_prereq);
    SETOPT(h, CURLOPT_OPENSOCKETFUNCTION, on_open_socket);
    SETOPT(h, CURLOPT_OPENSOCKETDATA, c);
    SETOPT(h, CURLOPT_CLOSESOCKETFUNCTION, on_close_socket);
    SETOPT(h, CURLOPT_CLOSESOCKETDATA, c);
#if LIBCURL_VERSION_NUM >= 0x075500
    SETOPT(h, CURLOPT_PROTOCOLS_STR, "http,https");
    SETOPT(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#else
    SETOPT(h, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
    SETOPT(h, CURLOPT_REDIR_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    SETOPT(h, CURLOPT_FOLLOWLOCATION, c->cfg.follow_redirects ? 1L : 0L);
    SETOPT(h, CURLOPT_MAXREDIRS, TC_CLIENT_MAX_REDIRECTS);
    SETOPT(h, CURLOPT_SSL_VERIFYPEER, c->cfg.insecure ? 0L : 1L);
    SETOPT(h, CURLOPT_SSL_VERIFYHOST, c->cfg.insecure ? 0L : 2L);
    if (c->ca_file != NULL)
        SETOPT(h, CURLOPT_CAINFO, c->ca_file);
    SETOPT(h, CURLOPT_HTTP_VERSION,
           c->cfg.http2 ? (long)CURL_HTTP_VERSION_2TLS : (long)CURL_HTTP_VERSION_1_1);
    SETOPT(h, CURLOPT_BUFFERSIZE, (long)TC_CLIENT_RECV_BUFFER);
    SETOPT(h, CURLOPT_PROXY, "");   /* no proxy from the environment: upstreams are explicit */
    SETOPT(h, CURLOPT_NOPROXY, ""); /* and no per-request getenv("no_proxy") either */
    SETOPT(h, CURLOPT_USERAGENT, "tailcut/" TC_VERSION);
    SETOPT(h, CURLOPT_CONNECTTIMEOUT_MS, (long)c->cfg.connect_timeout_ms);
    return e;
fail:
    if (e->curl != NULL)
        curl_easy_cleanup(e->curl);
    free(e);
    return NULL;
}

static tc_easy *easy_acquire(tc_client *c)
{
    tc_easy *e = c->easy_pool;
    if (e != NULL) {
        c->easy_pool = e->next;
        c->neasy_pool--;
        e->next = NULL;
        return e;
    }
    return easy_new(c);
}

static void easy_release(tc_client *c, tc_easy *e)
{
    if (e == NULL)
        return;
    /* Drop pointers into the finished request so that the idle handle holds nothing stale. */
    curl_easy_setopt(e->curl, CURLOPT_HTTPHEADER, NULL);
    curl_easy_setopt(e->curl, CURLOPT_PRIVATE, NULL);
    if (!c->closing && c->neasy_pool < TC_CLIENT_EASY_POOL_MAX) {
        e->next = c->easy_pool;
        c->easy_pool = e;
        c->neasy_pool++;
        return;
    }
    curl_easy_cleanup(e->curl);
    free(e);
}

/* Sets everything request-specific on e, overwriting whatever the previous request set. */
static int easy_prepare(tc_easy *e, tc_creq *r)
{
    CURL *h = e->curl;
    e->errbuf[0] = '\0';
    SETOPT(h, CURLOPT_URL, r->url);
    SETOPT(h, CURLOPT_PRIVATE, r);
    SETOPT(h, CURLOPT_WRITEDATA, r);
    SETOPT(h, CURLOPT_HEADERDATA, r);
    SETOPT(h, CURLOPT_PREREQDATA, r);
    SETOPT(h, CURLOPT_HTTPGET, 1L); /* resets method, upload and nobody */
    SETOPT(h, CURLOPT_CUSTOMREQUEST, (char *)NULL);
    if (r->body != NULL) {
        SETOPT(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len);
        SETOPT(h, CURLOPT_POSTFIELDS, r->body);
        if (strcmp(r->method, "POST") != 0)
            SETOPT(h, CURLOPT_CUSTOMREQUEST, r->method);
    } else if (strcmp(r->method, "HEAD") == 0) {
        SETOPT(h, CURLOPT_NOBODY, 1L);
    } else if (strcmp(r->method, "GET") != 0) {
        SETOPT(h, CURLOPT_CUSTOMREQUEST, r->method);
    }
    SETOPT(h, CURLOPT_HTTPHEADER, r->headers);
    SETOPT(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)r->max_body);
    SETOPT(h, CURLOPT_PIPEWAIT, (r->https && r->client->cfg.http2) ? 1L : 0L);
    return 0;
fail:
    return TC_ENOMEM;
}

#undef SETOPT

/* ---- request lifecycle ---------------------------------------------------------------------- */

static double ns_to_ms(uint64_t ns)
{
    return (double)ns / 1e6;
}

/* Takes r out of the queue or out of curl, gives back its connection slot and easy handle, and
 * clears its deadline. Removing a running easy handle mid-transfer makes curl close (not pool)
 * its connection. Leaves r->future and r->host alone. */
static void detach(tc_creq *r)
{
    tc_client *c = r->client;
    heap_remove(c, r);
    if (r->state == REQ_QUEUED) {
        link_remove(&r->link);
    } else if (r->state == REQ_RUNNING) {
        link_remove(&r->link);
        if (r->easy != NULL) {
            curl_multi_remove_handle(c->multi, r->easy->curl);
            easy_release(c, r->easy);
            r->easy = NULL;
        }
        if (r->holds_slot) {
            r->holds_slot = 0;
            c->slots_used--;
            r->host->slots--;
        }
    }
    r->state = REQ_NEW;
}

/* Drops everything the transfer side still holds; the allocation itself stays (it may be the
 * future's value). */
static void retire(tc_creq *r)
{
    tc_client *c = r->client;
    curl_slist_free_all(r->headers);
    r->headers = NULL;
    host_unref(c, r->host);
    r->host = NULL;
    if (c->stats.in_flight > 0)
        c->stats.in_flight--;
}

/* Rejects r's future with err and frees r. r must not be in curl any more except as noted:
 * this detaches it, lets queued requests take the freed slot first (FIFO), then completes. */
static void fail_request(tc_creq *r, int err, const char *msg)
{
    /* The callers' loops take r from the running list, the queue or the deadline heap, and detach()
     * unlinks r from all three before it is freed, so r is never one freed on an earlier turn. */
    // NOLINTNEXTLINE(clang-analyzer-unix.Malloc)
    tc_client *c = r->client;
    tc_future *f = r->future;
    detach(r);
    retire(r);
    r->future = NULL;
    tc_future_set_cancel_hook(f, NULL, NULL);
    pump_queue(c);
    if (tc_future_reject(f, err, msg) == TC_ECANCELED)
        c->stats.cancelled++;
    else
        c->stats.failed++;
    creq_free(r);
    tc_future_unref(f);
}

/* The future was cancelled: abort at once and free everything. Runs inside tc_future_cancel. */
static void req_cancel_hook(tc_future *f, void *data)
{
    tc_creq *r = data;
    tc_client *c = r->client;
    detach(r);
    retire(r);
    r->future = NULL;
    c->stats.cancelled++;
    creq_free(r);
    tc_future_unref(f);
    pump_queue(c);
}

/* Puts r into curl now. Returns 0, or an error after which r is unchanged (still REQ_NEW). */
static int admit(tc_creq *r)
{
    tc_client *c = r->client;
    tc_easy *e = easy_acquire(c);
    if (e == NULL)
        return TC_ENOMEM;
    if (easy_prepare(e, r) != 0) {
        easy_release(c, e);
        return TC_ENOMEM;
    }
    r->easy = e;
    r->state = REQ_RUNNING;
    link_push_back(&c->running, &r->link);
    if (!r->host->multiplex) {
        r->holds_slot = 1;
        c->slots_used++;
        r->host->slots++;
    }
    r->admit_ns = uv_hrtime();
    CURLMcode mc = curl_multi_add_handle(c->multi, e->curl);
    if (mc != CURLM_OK) {
        r->easy = NULL;
        detach(r);
        easy_release(c, e);
        return mc == CURLM_OUT_OF_MEMORY ? TC_ENOMEM : TC_EIO;
    }
    return 0;
}

/* Admits queued requests, oldest first, while connection slots allow. A request whose host is
 * at its per-host cap is skipped (it keeps its place); others behind it may go. */
static void pump_queue(tc_client *c)
{
restart:
    if (c->closing)
        return;
    for (tc_link *l = c->queue.next; l != &c->queue;) {
        if (c->slots_used >= c->cfg.max_connections)
            return; /* nothing without a slot can go until one frees */
        tc_creq *r = container_of(l, tc_creq, link);
        /* A failed r was unlinked before it was freed, and the restart reads the queue afresh. */
        // NOLINTNEXTLINE(clang-analyzer-unix.Malloc)
        l = l->next;
        if (!can_admit(c, r->host))
            continue;
        if (r->deadline != 0 && r->deadline <= now_ms())
            continue; /* expired: the deadline timer fails it next, no point starting it */
        link_remove(&r->link);
        r->state = REQ_NEW;
        int err = admit(r);
        if (err != 0) {
            fail_request(r, err, NULL); /* runs callbacks that may change the queue */
            goto restart;
        }
    }
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

/* A DONE message from curl for r: fulfil with the response or reject with a mapped error. */
static void finish_transfer(tc_creq *r, CURLcode code)
{
    tc_client *c = r->client;
    CURL *h = r->easy->curl;
    char msg[CURL_ERROR_SIZE + 128];

    if (code != CURLE_OK) {
        int err;
        long os_errno = 0;
        curl_easy_getinfo(h, CURLINFO_OS_ERRNO, &os_errno);
        if (r->fail == FAIL_BODY_TOO_LARGE || code == CURLE_FILESIZE_EXCEEDED) {
            err = TC_ETOOLARGE;
            (void)snprintf(msg, sizeof(msg), "%s: body larger than %zu bytes", tc_strerror(err),
                           r->max_body);
        } else if (r->fail == FAIL_HEADERS_TOO_LARGE) {
            err = TC_EPROTO;
            (void)snprintf(msg, sizeof(msg), "%s: response headers larger than %d bytes",
                           tc_strerror(err), TC_CLIENT_MAX_HEADER_BYTES);
        } else if (r->fail == FAIL_NOMEM) {
            err = TC_ENOMEM;
            (void)snprintf(msg, sizeof(msg), "%s", tc_strerror(err));
        } else if (r->fail == FAIL_RESENT) {
            err = TC_ECONNRESET;
            (void)snprintf(msg, sizeof(msg), "%s: the pooled connection closed before any answer",
                           tc_strerror(err));
        } else {
            err = map_curl_error(code, os_errno);
            const char *detail = r->easy->errbuf[0] ? r->easy->errbuf : curl_easy_strerror(code);
            (void)snprintf(msg, sizeof(msg), "%s: %s", tc_strerror(err), detail);
        }
        fail_request(r, err, msg);
        return;
    }

    long status = 0, version = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(h, CURLINFO_HTTP_VERSION, &version);
    if (r->body_off == 0 && buf_start_body(r) != 0) {
        fail_request(r, TC_ENOMEM, NULL);
        return;
    }
    r->buf[r->len] = '\0';
    uint64_t now = uv_hrtime();
    r->resp.status = (int)status;
    r->resp.http_version = version == CURL_HTTP_VERSION_2_0   ? 20
                           : version == CURL_HTTP_VERSION_1_0 ? 10
                                                              : 11;
    r->resp.headers = r->buf;
    r->resp.headers_len = r->body_off - 1;
    r->resp.body = r->buf + r->body_off;
    r->resp.body_len = r->len - r->body_off;
    r->resp.queued_ms = ns_to_ms(r->admit_ns - r->start_ns);
    r->resp.total_ms = ns_to_ms(now - r->start_ns);
    if (version == CURL_HTTP_VERSION_2_0)
        r->host->multiplex = 1;

    tc_future *f = r->future;
    detach(r);
    retire(r);
    r->future = NULL;
    tc_future_set_cancel_hook(f, NULL, NULL);
    pump_queue(c);
    if (tc_future_fulfill(f, &r->resp, response_free) == TC_ECANCELED)
        c->stats.cancelled++; /* cancelled by a callback run from pump_queue; r is freed */
    else
        c->stats.completed++;
    tc_future_unref(f);
}

static void check_multi_info(tc_client *c)
{
    CURLMsg *m;
    int left = 0;
    while (!c->closing && (m = curl_multi_info_read(c->multi, &left)) != NULL) {
        if (m->msg != CURLMSG_DONE)
            continue;
        CURLcode code = m->data.result;
        char *priv = NULL;
        if (curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &priv) != CURLE_OK ||
            priv == NULL) {
            curl_multi_remove_handle(c->multi, m->easy_handle); /* cannot happen; be safe */
            continue;
        }
        finish_transfer((tc_creq *)(void *)priv, code);
    }
}

/* After curl_multi_socket_action: a failure of the multi handle itself fails every running
 * request (nothing would ever complete them); then report finished transfers. */
static void after_socket_action(tc_client *c, CURLMcode mc)
{
    if (mc != CURLM_OK && !c->closing) {
        char msg[160];
        int err = mc == CURLM_OUT_OF_MEMORY ? TC_ENOMEM : TC_EIO;
        (void)snprintf(msg, sizeof(msg), "%s: libcurl multi: %s", tc_strerror(err),
                       curl_multi_strerror(mc));
        while (!c->closing && !link_empty(&c->running))
            fail_request(container_of(c->running.next, tc_creq, link), err, msg);
    }
    check_multi_info(c);
}

/* The deadline timer: every request whose deadline has come fails with TC_ETIMEDOUT, wherever
 * it is (queued, connecting, mid-body). */
static void on_deadline(uv_timer_t *t)
{
    tc_client *c = container_of(t, tc_client, deadline_timer);
    uint64_t now = now_ms();
    /* fail_request() takes r off the heap before freeing it: heap[0] is always live. */
    // NOLINTNEXTLINE(clang-analyzer-unix.Malloc)
    while (!c->closing && c->heap_len > 0 && c->heap[0]->deadline <= now) {
        tc_creq *r = c->heap[0];
        char msg[160];
        (void)snprintf(msg, sizeof(msg), "%s: no response within %llu ms%s",
                       tc_strerror(TC_ETIMEDOUT), (unsigned long long)r->timeout_ms,
                       r->state == REQ_QUEUED ? " (still queued for a connection)" : "");
        fail_request(r, TC_ETIMEDOUT, msg);
    }
    deadline_rearm(c);
}

/* ---- public API ----------------------------------------------------------------------------- */

static void free_on_close(uv_handle_t *h)
{
    free(h->data);
}

int tc_client_new(tc_client **out, uv_loop_t *loop, const tc_client_config *cfg)
{
    if (out == NULL || loop == NULL)
        return TC_EINVAL;
    *out = NULL;
    tc_client *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return TC_ENOMEM;
    if (cfg != NULL)
        c->cfg = *cfg;
    else
        tc_client_config_init(&c->cfg);
    if (c->cfg.max_connections == 0)
        c->cfg.max_connections = TC_CLIENT_DEFAULT_MAX_CONNECTIONS;
    if (c->cfg.max_body == 0)
        c->cfg.max_body = (size_t)TC_CLIENT_DEFAULT_MAX_BODY;
    if (c->cfg.max_connections > LONG_MAX || c->cfg.max_per_host > LONG_MAX ||
        c->cfg.connect_timeout_ms > LONG_MAX) {
        free(c);
        return TC_EINVAL;
    }
    c->loop = loop;
    link_init(&c->queue);
    link_init(&c->running);
    int err = TC_ENOMEM;
    if (c->cfg.ca_file != NULL) {
        c->ca_file = strdup(c->cfg.ca_file);
        if (c->ca_file == NULL)
            goto fail;
    }
    c->cfg.ca_file = c->ca_file;
    err = TC_EIO;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        goto fail;
    c->curl_global = 1;
    c->multi = curl_multi_init();
    if (c->multi == NULL)
        goto fail;
    long maxc = (long)c->cfg.max_connections;
    if (curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket) != CURLM_OK ||
        curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c) != CURLM_OK ||
        curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer) != CURLM_OK ||
        curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c) != CURLM_OK ||
        curl_multi_setopt(c->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, maxc) != CURLM_OK ||
        curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, maxc) != CURLM_OK ||
        curl_multi_setopt(c->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)c->cfg.max_per_host) !=
            CURLM_OK ||
        curl_multi_setopt(c->multi, CURLMOPT_PIPELINING,
                          c->cfg.http2 ? (long)CURLPIPE_MULTIPLEX : (long)CURLPIPE_NOTHING) !=
            CURLM_OK)
        goto fail;
    if (uv_timer_init(loop, &c->curl_timer) != 0)
        goto fail;
    c->curl_timer.data = c;
    c->open_handles++;
    if (uv_timer_init(loop, &c->deadline_timer) != 0) {
        /* curl_timer is live: it must go through uv_close, and c is freed in its callback. */
        curl_multi_cleanup(c->multi);
        curl_global_cleanup();
        free(c->ca_file);
        uv_close((uv_handle_t *)&c->curl_timer, free_on_close);
        return TC_EIO;
    }
    c->deadline_timer.data = c;
    c->open_handles++;
    *out = c;
    return 0;
fail:
    if (c->multi != NULL)
        curl_multi_cleanup(c->multi);
    if (c->curl_global)
        curl_global_cleanup();
    free(c->ca_file);
    free(c);
    return err;
}

static int header_ok(const char *s, int is_name)
{
    if (s == NULL || (is_name && *s == '\0'))
        return 0;
    for (; *s; s++) {
        if (*s == '\r' || *s == '\n' || (is_name && (*s == ':' || *s == ' ' || *s == '\t')))
            return 0;
    }
    return 1;
}

static int method_ok(const char *m)
{
    if (*m == '\0')
        return 0;
    for (; *m; m++)
        if ((unsigned char)*m <= ' ' || *m == 0x7f)
            return 0;
    return 1;
}

/* Builds the header list for r: the caller's headers, plus "Expect:" for a large body. */
static int build_headers(tc_creq *r, const tc_client_request *req)
{
    char small[512];
    for (size_t i = 0; i < req->nheaders; i++) {
        const tc_header *hd = &req->headers[i];
        size_t n = strlen(hd->name) + strlen(hd->value) + 3;
        char *line = n <= sizeof(small) ? small : malloc(n);
        if (line == NULL)
            return TC_ENOMEM;
        /* "Name;" is curl's way to send a header with an empty value. Both fit: n counts them. */
        if (hd->value[0] == '\0')
            (void)snprintf(line, n, "%s;", hd->name);
        else
            (void)snprintf(line, n, "%s: %s", hd->name, hd->value);
        struct curl_slist *l = curl_slist_append(r->headers, line);
        if (line != small)
            free(line);
        if (l == NULL)
            return TC_ENOMEM;
        r->headers = l;
    }
    if (r->body != NULL && r->body_len > TC_CLIENT_EXPECT_THRESHOLD) {
        struct curl_slist *l = curl_slist_append(r->headers, "Expect:");
        if (l == NULL)
            return TC_ENOMEM;
        r->headers = l;
    }
    return 0;
}

int tc_client_request_start(tc_future **out, tc_client *c, const tc_client_request *req)
{
    if (out == NULL || c == NULL || req == NULL || req->url == NULL)
        return TC_EINVAL;
    *out = NULL;
    if (c->closing)
        return TC_ECLOSED;
    const char *method = req->method ? req->method : "GET";
    if (!method_ok(method) || (req->nheaders > 0 && req->headers == NULL) ||
        (req->body == NULL && req->body_len > 0))
        return TC_EINVAL;
    for (size_t i = 0; i < req->nheaders; i++)
        if (!header_ok(req->headers[i].name, 1) || !header_ok(req->headers[i].value, 0))
            return TC_EINVAL;

    size_t url_len = strlen(req->url), method_len = strlen(method);
    size_t body_len = req->body ? req->body_len : 0;
    if (url_len > SIZE_MAX / 4 || body_len > SIZE_MAX / 4)
        return TC_EINVAL;
    tc_creq *r = malloc(sizeof(*r) + url_len + 1 + method_len + 1 + body_len + 1);
    if (r == NULL)
        return TC_ENOMEM;
    memset(r, 0, sizeof(*r));
    char *p = r->strings;
    memcpy(p, req->url, url_len + 1);
    r->url = p;
    p += url_len + 1;
    memcpy(p, method, method_len + 1);
    r->method = p;
    p += method_len + 1;
    if (req->body != NULL) {
        memcpy(p, req->body, body_len);
        p[body_len] = '\0';
        r->body = p;
        r->body_len = body_len;
    }
    r->client = c;
    r->heap_idx = SIZE_MAX;
    r->buf = r->inline_buf;
    r->cap = sizeof(r->inline_buf);
    r->max_body = req->max_body ? req->max_body : c->cfg.max_body;
    r->timeout_ms = req->timeout_ms ? req->timeout_ms : c->cfg.timeout_ms;
    r->start_ns = uv_hrtime();
    link_init(&r->link);

    tc_future *f = NULL;
    int err = tc_future_new(&f);
    if (err != 0) {
        free(r);
        return err;
    }

    char key[TC_CLIENT_MAX_HOST_KEY];
    const char *why = NULL;
    err = tc_url_origin(r->url, key, sizeof(key), &r->https, &why);
    if (err != 0) {
        char msg[200];
        if (why != NULL)
            (void)snprintf(msg, sizeof(msg), "%s: %s", tc_strerror(err), why);
        else
            (void)snprintf(msg, sizeof(msg), "%s", tc_strerror(err));
        c->stats.started++;
        c->stats.failed++;
        free(r);
        tc_future_reject(f, err, msg);
        *out = f;
        return 0;
    }
    err = build_headers(r, req);
    if (err == 0) {
        r->host = host_ref(c, key);
        if (r->host == NULL)
            err = TC_ENOMEM;
    }
    if (err == 0 && r->timeout_ms > 0) {
        /* From the real clock, not uv_now(): the loop's cached time can be milliseconds stale
         * late in a loop iteration, which would make the request expire early. Both count
         * milliseconds of the same monotonic clock, so the timer math below stays valid. */
        r->deadline = now_ms() + r->timeout_ms;
        err = heap_push(c, r);
    }
    if (err != 0) {
        host_unref(c, r->host);
        creq_free(r);
        tc_future_unref(f);
        return err;
    }

    r->future = tc_future_ref(f); /* the producer's reference */
    tc_future_set_cancel_hook(f, req_cancel_hook, r);
    c->stats.started++;
    c->stats.in_flight++;
    *out = f;

    if (can_admit(c, r->host)) {
        r->admit_ns = r->start_ns;
        err = admit(r);
        if (err != 0)
            fail_request(r, err, NULL);
    } else {
        r->state = REQ_QUEUED;
        link_push_back(&c->queue, &r->link);
        c->stats.queued++;
    }
    return 0;
}

int tc_client_get(tc_future **out, tc_client *client, const char *url)
{
    tc_client_request req;
    memset(&req, 0, sizeof(req));
    req.url = url;
    return tc_client_request_start(out, client, &req);
}

void tc_client_get_stats(const tc_client *client, tc_client_stats *out)
{
    if (out == NULL)
        return;
    if (client == NULL) {
        memset(out, 0, sizeof(*out));
        return;
    }
    *out = client->stats;
}

long tc_response_header(const tc_response *resp, const char *name, char *buf, size_t buflen)
{
    if (resp == NULL || resp->headers == NULL || name == NULL)
        return -1;
    size_t nlen = strlen(name);
    const char *p = resp->headers, *end = resp->headers + resp->headers_len;
    const char *eol = memchr(p, '\n', (size_t)(end - p)); /* skip the status line */
    p = eol ? eol + 1 : end;
    while (p < end) {
        eol = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = eol ? eol : end;
        if ((size_t)(line_end - p) > nlen && p[nlen] == ':' && strncasecmp(p, name, nlen) == 0) {
            const char *v = p + nlen + 1, *ve = line_end;
            while (v < ve && (*v == ' ' || *v == '\t'))
                v++;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            size_t vlen = (size_t)(ve - v);
            if (buf != NULL && buflen > 0) {
                size_t n = vlen < buflen - 1 ? vlen : buflen - 1;
                memcpy(buf, v, n);
                buf[n] = '\0';
            }
            return (long)vlen;
        }
        p = eol ? eol + 1 : end;
    }
    return -1;
}

/* ---- closing -------------------------------------------------------------------------------- */

static void maybe_finish_close(tc_client *c)
{
    if (!c->closing || c->open_handles > 0 || c->multi != NULL)
        return;
    if (c->close_cb != NULL)
        c->close_cb(c, c->close_data);
    free(c->socks);
    free(c->hosts);
    free(c->heap);
    free(c->ca_file);
    if (c->curl_global)
        curl_global_cleanup();
    free(c);
}

/* The curl timer has closed: no uv callback can reach curl any more, so tear curl down. Closing
 * its cached connections calls on_close_socket, which closes their poll handles. */
static void on_curl_timer_closed(uv_handle_t *h)
{
    tc_client *c = h->data;
    curl_multi_cleanup(c->multi);
    c->multi = NULL;
    while (c->easy_pool != NULL) {
        tc_easy *e = c->easy_pool;
        c->easy_pool = e->next;
        curl_easy_cleanup(e->curl);
        free(e);
    }
    c->neasy_pool = 0;
    for (size_t fd = 0; fd < c->nsocks; fd++)
        if (c->socks[fd] != NULL)
            sock_release(c, c->socks[fd]);
    c->open_handles--;
    maybe_finish_close(c);
}

void tc_client_close(tc_client *c, tc_client_close_cb close_cb, void *data)
{
    if (c == NULL || c->closing)
        return;
    c->close_cb = close_cb;
    c->close_data = data;
    /* Cancel everything while the multi is still alive; pump_queue admits nothing once closing. */
    c->closing = 1;
    tc_link *lists[2] = {&c->queue, &c->running};
    for (int i = 0; i < 2; i++) {
        while (!link_empty(lists[i])) {
            tc_creq *r = container_of(lists[i]->next, tc_creq, link);
            /* Both branches below unlink r before freeing it (the cancel hook or detach()), so the
             * list head is always live. */
            // NOLINTNEXTLINE(clang-analyzer-unix.Malloc)
            tc_future *f = r->future;
            if (!tc_future_cancel(f)) {
                /* Cannot happen (completion detaches first); never spin on it. */
                detach(r);
                retire(r);
                r->future = NULL;
                creq_free(r);
                tc_future_unref(f);
            }
        }
    }
    uv_timer_stop(&c->deadline_timer);
    uv_close((uv_handle_t *)&c->deadline_timer, on_handle_closed);
    uv_timer_stop(&c->curl_timer);
    uv_close((uv_handle_t *)&c->curl_timer, on_curl_timer_closed);
}

uv_loop_t *tc_client_loop(const tc_client *client)
{
    return client->loop;
}
