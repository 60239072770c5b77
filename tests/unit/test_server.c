/*
 * Unit tests for src/server.c: the HTTP/1.1 server, driven over real loopback sockets.
 *
 * The one idea of the harness: the server runs on a uv loop in the test's own thread, and a
 * client thread talks to it with plain blocking sockets, so what is checked is exactly the bytes
 * a client sees on the wire (order, headers, bodies, FIN versus RST). The two threads meet only
 * through atomics: the client raises numbered events (uv_async_t) that a test-specific callback
 * handles on the loop, the loop publishes a "stage" number the client waits for, and the client
 * marks itself done. Once the client is done and every loop-side condition the test asked for has
 * been reached, the server is closed and the loop runs to completion; every test then asserts
 * uv_loop_close() == 0 and that the close callback ran exactly once.
 *
 * cmocka's assertions are not thread-safe, so the client thread never calls them: CHECK()
 * records the first failure (line, expression, values) and returns from the client function, and
 * the test thread fails with that message after joining. Each test arms alarm() as a watchdog,
 * and every client socket has receive/send timeouts so a missing answer fails instead of hanging.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include <jansson.h>
#include <uv.h>

#include "tailcut/server.h"

#define WATCHDOG_S 20
#define CLIENT_IO_TIMEOUT_S 5
#define MAX_REQS 64
#define MAX_FDS 16

/* ---- the fixture: one loop, one server, one client thread ------------------------------------ */

/* What the handler saw of one request, copied out (the request itself may be gone later). */
typedef struct seen {
    char method[16];
    char target[512];
    char path[512];
    char query[512];
    char hval[128]; /* X-Test-Header, looked up in mixed case */
    char body[256];
    char multi[64]; /* every X-Multi value, in order, each followed by '|' */
    size_t query_len, body_len;
    int has_h, has_missing, has_empty, empty_len, is_head;
} seen;

typedef struct fixture fixture;
typedef void (*client_fn)(fixture *fx);
typedef void (*event_fn)(fixture *fx, int ev);

struct fixture {
    uv_loop_t loop;
    tc_server *srv;
    tc_server_config cfg;
    int port;
    uv_async_t async;
    pthread_t thread;
    client_fn client;
    event_fn on_event;
    atomic_int events_sent;
    int events_seen;
    atomic_int client_done;
    atomic_int stage; /* published by the loop, awaited by the client */
    int loop_pending; /* loop-side conditions the test still waits for */
    int finished;
    int closed;       /* server close callbacks */
    char fail[512];   /* first client-side failure */
    int fds[MAX_FDS]; /* client sockets, closed when the client returns */
    int nfds;

    /* handler-side records */
    tc_request *reqs[MAX_REQS];
    seen seen[MAX_REQS];
    int nreqs;
    int aborts;
    int abort_other;
    int respond_ret[MAX_REQS];
    int drained;
    void *t; /* per-test state */
};

static void on_server_closed(tc_server *srv, void *data)
{
    fixture *fx = data;
    (void)srv;
    fx->closed++;
}

static void fx_close_server(fixture *fx)
{
    if (fx->srv != NULL) {
        tc_server *s = fx->srv;
        fx->srv = NULL;
        tc_server_close(s, on_server_closed, fx);
    }
}

static void fx_maybe_finish(fixture *fx)
{
    if (fx->finished || !atomic_load(&fx->client_done) || fx->loop_pending > 0 ||
        fx->events_seen != atomic_load(&fx->events_sent))
        return;
    fx->finished = 1;
    fx_close_server(fx);
    uv_close((uv_handle_t *)&fx->async, NULL);
}

/* A loop-side condition the test waits for has been reached. */
static void fx_loop_done(fixture *fx)
{
    fx->loop_pending--;
    fx_maybe_finish(fx);
}

static void on_async(uv_async_t *a)
{
    fixture *fx = a->data;
    int done = atomic_load(&fx->client_done); /* read first: events before done are all counted */
    int sent = atomic_load(&fx->events_sent);
    while (fx->events_seen < sent) {
        fx->events_seen++;
        if (fx->on_event != NULL)
            fx->on_event(fx, fx->events_seen);
    }
    if (done)
        fx_maybe_finish(fx);
}

static void watchdog(int sig)
{
    static const char msg[] = "test_server: watchdog fired, a test hung\n";
    (void)sig;
    if (write(2, msg, sizeof(msg) - 1) < 0) {
        /* nothing more to do */
    }
    _exit(3);
}

/* Loop, config with defaults, the async; the test adjusts fx->cfg and then calls fx_start(). */
static void fx_init(fixture *fx, tc_handler_fn handler)
{
    memset(fx, 0, sizeof(*fx));
    signal(SIGALRM, watchdog);
    alarm(WATCHDOG_S);
    assert_int_equal(uv_loop_init(&fx->loop), 0);
    tc_server_config_init(&fx->cfg);
    fx->cfg.handler = handler;
    fx->cfg.handler_data = fx;
    assert_int_equal(uv_async_init(&fx->loop, &fx->async, on_async), 0);
    fx->async.data = fx;
    for (int i = 0; i < MAX_FDS; i++)
        fx->fds[i] = -1;
}

static void fx_start(fixture *fx)
{
    assert_int_equal(tc_server_new(&fx->srv, &fx->loop, &fx->cfg), 0);
    assert_non_null(fx->srv);
    fx->port = tc_server_port(fx->srv);
    assert_true(fx->port > 0 && fx->port < 65536);
}

static void *client_main(void *arg)
{
    fixture *fx = arg;
    fx->client(fx);
    for (int i = 0; i < fx->nfds; i++)
        if (fx->fds[i] >= 0)
            close(fx->fds[i]);
    atomic_store(&fx->client_done, 1);
    uv_async_send(&fx->async);
    return NULL;
}

/* Runs the client against the server until both sides are done, then checks the teardown. */
static void fx_run(fixture *fx, client_fn client, int loop_pending)
{
    fx->client = client;
    fx->loop_pending = loop_pending;
    assert_int_equal(pthread_create(&fx->thread, NULL, client_main, fx), 0);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    assert_int_equal(pthread_join(fx->thread, NULL), 0);
    assert_int_equal(uv_loop_close(&fx->loop), 0);
    if (fx->fail[0] != '\0')
        fail_msg("client: %s", fx->fail);
    assert_int_equal(fx->closed, 1);
    assert_null(fx->srv);
    alarm(0);
}

/* ---- client-side helpers (client thread only: no cmocka here) -------------------------------- */

static void client_fail(fixture *fx, int line, const char *fmt, ...)
{
    if (fx->fail[0] != '\0')
        return;
    int n = snprintf(fx->fail, sizeof(fx->fail), "line %d: ", line);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(fx->fail + n, sizeof(fx->fail) - (size_t)n, fmt, ap);
    va_end(ap);
}

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            client_fail(fx, __LINE__, "%s (errno %d)", #cond, errno);                              \
            return;                                                                                \
        }                                                                                          \
    } while (0)

#define CHECK_INT(a, b)                                                                            \
    do {                                                                                           \
        long long a_ = (long long)(a), b_ = (long long)(b);                                        \
        if (a_ != b_) {                                                                            \
            client_fail(fx, __LINE__, "%s == %s: %lld != %lld", #a, #b, a_, b_);                   \
            return;                                                                                \
        }                                                                                          \
    } while (0)

#define CHECK_STR(a, b)                                                                            \
    do {                                                                                           \
        const char *a_ = (a), *b_ = (b);                                                           \
        if (a_ == NULL || strcmp(a_, b_) != 0) {                                                   \
            client_fail(fx, __LINE__, "%s == %s: \"%s\" != \"%s\"", #a, #b,                        \
                        a_ != NULL ? a_ : "(null)", b_);                                           \
            return;                                                                                \
        }                                                                                          \
    } while (0)

static int stage_wait(fixture *fx, int stage)
{
    for (int i = 0; i < 10000; i++) {
        if (atomic_load(&fx->stage) >= stage)
            return 1;
        usleep(1000);
    }
    return 0;
}

/* Raises the next numbered event on the loop (handled by fx->on_event). */
static void client_event(fixture *fx)
{
    atomic_fetch_add(&fx->events_sent, 1);
    uv_async_send(&fx->async);
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

typedef struct cli {
    fixture *fx;
    int fd;
    char buf[65536];
    size_t len;
} cli;

/* Connects to the server; returns 0 or -errno. The socket is closed when the client returns. */
static int cli_connect(fixture *fx, cli *c)
{
    c->fx = fx;
    c->len = 0;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        return -errno;
    struct timeval tv = {CLIENT_IO_TIMEOUT_S, 0};
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (fx->nfds < MAX_FDS)
        fx->fds[fx->nfds++] = c->fd;
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)fx->port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
        return -errno;
    return 0;
}

static void cli_close(cli *c)
{
    for (int i = 0; i < c->fx->nfds; i++)
        if (c->fx->fds[i] == c->fd)
            c->fx->fds[i] = -1;
    close(c->fd);
    c->fd = -1;
}

static int cli_send(cli *c, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = send(c->fd, data, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

static int cli_sends(cli *c, const char *s)
{
    return cli_send(c, s, strlen(s));
}

/* Reads more bytes into the buffer: >0 bytes, 0 on EOF, -1 on error (errno set). */
static ssize_t cli_fill(cli *c)
{
    if (c->len == sizeof(c->buf)) {
        errno = ENOBUFS;
        return -1;
    }
    for (;;) {
        ssize_t n = recv(c->fd, c->buf + c->len, sizeof(c->buf) - c->len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n > 0)
            c->len += (size_t)n;
        return n;
    }
}

typedef struct resp {
    int status;
    char line[128];  /* status line without CRLF */
    char head[4096]; /* header lines, CRLF-separated, NUL-terminated */
    char body[8192];
    size_t body_len;
} resp;

/* Value of a response header (case-insensitive name) copied into out; 1 if found. */
static int resp_header(const resp *r, const char *name, char *out, size_t cap)
{
    size_t n = strlen(name);
    const char *p = r->head;
    while (*p != '\0') {
        const char *eol = strstr(p, "\r\n");
        if (eol == NULL)
            eol = p + strlen(p);
        if ((size_t)(eol - p) > n && strncasecmp(p, name, n) == 0 && p[n] == ':') {
            const char *v = p + n + 1;
            while (v < eol && (*v == ' ' || *v == '\t'))
                v++;
            size_t vl = (size_t)(eol - v);
            if (vl >= cap)
                vl = cap - 1;
            memcpy(out, v, vl);
            out[vl] = '\0';
            return 1;
        }
        p = *eol != '\0' ? eol + 2 : eol;
    }
    return 0;
}

static int resp_header_count(const resp *r, const char *name)
{
    int count = 0;
    size_t n = strlen(name);
    const char *p = r->head;
    while (*p != '\0') {
        if (strncasecmp(p, name, n) == 0 && p[n] == ':')
            count++;
        const char *eol = strstr(p, "\r\n");
        if (eol == NULL)
            break;
        p = eol + 2;
    }
    return count;
}

/* Reads one response. head_request: the response has no body whatever Content-Length says.
 * Returns 1 for a response, 0 for a clean EOF before any byte, -1 otherwise (errno set). */
static int cli_read_response(cli *c, resp *r, int head_request)
{
    memset(r, 0, sizeof(*r));
    char *end;
    while ((end = memmem(c->buf, c->len, "\r\n\r\n", 4)) == NULL) {
        ssize_t n = cli_fill(c);
        if (n == 0 && c->len == 0)
            return 0;
        if (n == 0)
            errno = EPIPE; /* truncated */
        if (n <= 0)
            return -1;
    }
    size_t hl = (size_t)(end - c->buf) + 4;
    char *eol = memmem(c->buf, hl, "\r\n", 2);
    size_t ll = (size_t)(eol - c->buf);
    if (ll >= sizeof(r->line) || hl - ll - 2 >= sizeof(r->head)) {
        errno = EMSGSIZE;
        return -1;
    }
    memcpy(r->line, c->buf, ll);
    memcpy(r->head, eol + 2, hl - ll - 4);
    if (sscanf(r->line, "HTTP/1.1 %d ", &r->status) != 1) {
        errno = EPROTO;
        return -1;
    }
    char cl[32];
    size_t body_len = 0;
    if (!head_request && resp_header(r, "Content-Length", cl, sizeof(cl)))
        body_len = strtoul(cl, NULL, 10);
    if (body_len >= sizeof(r->body)) {
        errno = EMSGSIZE;
        return -1;
    }
    while (c->len < hl + body_len) {
        ssize_t n = cli_fill(c);
        if (n == 0)
            errno = EPIPE;
        if (n <= 0)
            return -1;
    }
    memcpy(r->body, c->buf + hl, body_len);
    r->body_len = body_len;
    memmove(c->buf, c->buf + hl + body_len, c->len - hl - body_len);
    c->len -= hl + body_len;
    return 1;
}

/* Reads until the server closes. Returns the bytes seen before (buffered ones included) and sets
 * *err to 0 for a clean EOF or to the errno of the failed read (ECONNRESET for a reset). */
static size_t cli_read_eof(cli *c, int *err)
{
    size_t total = c->len;
    c->len = 0;
    for (;;) {
        ssize_t n = recv(c->fd, c->buf, sizeof(c->buf), 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0) {
            *err = 0;
            return total;
        }
        if (n < 0) {
            *err = errno;
            return total;
        }
        total += (size_t)n;
    }
}

/* 1 if the body is the contract's error object with this code and a string message. */
static int error_body_ok(const resp *r, const char *code, char *message, size_t cap)
{
    json_error_t jerr;
    json_t *root = json_loadb(r->body, r->body_len, 0, &jerr);
    if (root == NULL)
        return 0;
    int ok = json_is_object(root) && json_object_size(root) == 3 &&
             json_is_false(json_object_get(root, "success")) &&
             json_is_string(json_object_get(root, "error")) &&
             strcmp(json_string_value(json_object_get(root, "error")), code) == 0 &&
             json_is_string(json_object_get(root, "message"));
    if (ok && message != NULL)
        snprintf(message, cap, "%s", json_string_value(json_object_get(root, "message")));
    json_decref(root);
    return ok;
}

/* "Sun, 06 Nov 1994 08:49:37 GMT" (RFC 9110 IMF-fixdate). */
static int date_ok(const char *d)
{
    static const char *days = "Mon Tue Wed Thu Fri Sat Sun";
    static const char *months = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec";
    if (strlen(d) != 29 || d[3] != ',' || d[4] != ' ' || d[7] != ' ' || d[11] != ' ' ||
        d[16] != ' ' || d[19] != ':' || d[22] != ':' || d[25] != ' ' || strcmp(d + 26, "GMT"))
        return 0;
    char day[4] = {d[0], d[1], d[2], 0}, mon[4] = {d[8], d[9], d[10], 0};
    if (strstr(days, day) == NULL || strstr(months, mon) == NULL)
        return 0;
    const int digits[] = {5, 6, 12, 13, 14, 15, 17, 18, 20, 21, 23, 24};
    for (size_t i = 0; i < sizeof(digits) / sizeof(digits[0]); i++)
        if (d[digits[i]] < '0' || d[digits[i]] > '9')
            return 0;
    return 1;
}

/* Checks the common shape of a server-made error: status, JSON error body, close, then EOF. */
#define CHECK_ERROR_AND_CLOSE(c, status_, code)                                                    \
    do {                                                                                           \
        resp r_;                                                                                   \
        char v_[128];                                                                              \
        int err_ = 0;                                                                              \
        CHECK_INT(cli_read_response((c), &r_, 0), 1);                                              \
        CHECK_INT(r_.status, (status_));                                                           \
        CHECK(error_body_ok(&r_, (code), NULL, 0));                                                \
        CHECK(resp_header(&r_, "Content-Type", v_, sizeof(v_)));                                   \
        CHECK_STR(v_, "application/json");                                                         \
        CHECK(resp_header(&r_, "Connection", v_, sizeof(v_)));                                     \
        CHECK_STR(v_, "close");                                                                    \
        CHECK_INT(cli_read_eof((c), &err_), 0);                                                    \
        CHECK_INT(err_, 0);                                                                        \
    } while (0)

/* ---- loop-side helpers ------------------------------------------------------------------------
 */

static void str_copy(char *dst, size_t cap, tc_str s)
{
    size_t n = s.len < cap - 1 ? s.len : cap - 1;
    if (n > 0)
        memcpy(dst, s.base, n);
    dst[n] = '\0';
}

static int str_eq(tc_str s, const char *lit)
{
    return s.len == strlen(lit) && memcmp(s.base, lit, s.len) == 0;
}

/* Copies what the request shows through the accessors into fx->seen and keeps the pointer. */
static int record(fixture *fx, tc_request *req)
{
    assert_true(fx->nreqs < MAX_REQS);
    int i = fx->nreqs++;
    seen *s = &fx->seen[i];
    tc_str v;
    fx->reqs[i] = req;
    str_copy(s->method, sizeof(s->method), tc_request_method(req));
    str_copy(s->target, sizeof(s->target), tc_request_target(req));
    str_copy(s->path, sizeof(s->path), tc_request_path(req));
    str_copy(s->query, sizeof(s->query), tc_request_query(req));
    s->query_len = tc_request_query(req).len;
    tc_str body = tc_request_body(req);
    str_copy(s->body, sizeof(s->body), body);
    s->body_len = body.len;
    s->has_h = tc_request_header(req, "x-TEST-header", &v);
    if (s->has_h)
        str_copy(s->hval, sizeof(s->hval), v);
    s->has_missing = tc_request_header(req, "X-Not-There", &v);
    s->has_empty = tc_request_header(req, "x-empty", &v);
    s->empty_len = s->has_empty ? (int)v.len : -1;
    s->is_head = tc_request_is_head(req);
    size_t pos = 0, used = 0;
    while (tc_request_header_next(req, "x-multi", &pos, &v)) {
        assert_true(used + v.len + 1 < sizeof(s->multi));
        memcpy(s->multi + used, v.base, v.len);
        used += v.len;
        s->multi[used++] = '|';
    }
    s->multi[used] = '\0';
    assert_false(tc_request_header_next(req, "x-multi", &pos, &v)); /* stays at the end */
    assert_int_equal(tc_request_aborted(req), 0);
    assert_ptr_equal(tc_request_loop(req), &fx->loop);
    assert_ptr_equal(tc_request_server(req), fx->srv);
    return i;
}

/* Runs fn(fx, arg) after ms on the loop, from a timer that closes itself. */
typedef void (*later_fn)(fixture *fx, void *arg);
typedef struct later_t {
    uv_timer_t timer;
    fixture *fx;
    later_fn fn;
    void *arg;
} later_t;

static void later_closed(uv_handle_t *h)
{
    free(h->data);
}

static void later_fire(uv_timer_t *t)
{
    later_t *l = t->data;
    l->fn(l->fx, l->arg);
    uv_close((uv_handle_t *)t, later_closed);
}

static void later(fixture *fx, uint64_t ms, later_fn fn, void *arg)
{
    later_t *l = calloc(1, sizeof(*l));
    assert_non_null(l);
    l->fx = fx;
    l->fn = fn;
    l->arg = arg;
    assert_int_equal(uv_timer_init(&fx->loop, &l->timer), 0);
    l->timer.data = l;
    assert_int_equal(uv_timer_start(&l->timer, later_fire, ms, 0), 0);
}

/* Answers 200 text/plain with the target as body, or with the request body for /echo. */
static void handler_echo(tc_request *req, void *data)
{
    fixture *fx = data;
    int i = record(fx, req);
    tc_str body = tc_request_body(req);
    tc_str target = tc_request_target(req);
    if (str_eq(tc_request_path(req), "/echo"))
        fx->respond_ret[i] =
            tc_request_respond(req, 200, "text/plain", NULL, 0, body.base, body.len);
    else
        fx->respond_ret[i] =
            tc_request_respond(req, 200, "text/plain", NULL, 0, target.base, target.len);
}

/* ---- request parsing glue ---------------------------------------------------------------------
 */

static void client_parse(fixture *fx)
{
    cli c;
    resp r;
    static const char *const reqs[] = {
        "GET /a/b%20c?x=1&y=2#frag HTTP/1.1\r\nHost: example\r\nX-Test-Header: Hello World\r\n"
        "X-Multi: one\r\nX-Empty:\r\nAccept: */*\r\nx-multi: two, 2b\r\nX-MULTI: \r\n\r\n",
        "GET /plain HTTP/1.1\r\nHost: h\r\n\r\n",
        "GET /p#only-fragment HTTP/1.1\r\nHost: h\r\n\r\n",
        "GET /q? HTTP/1.1\r\nhost: h\r\n\r\n",
        "DELETE /x?a=b&c#f?g HTTP/1.1\r\nHost: h\r\nx-test-header: lower\r\n\r\n",
    };
    static const char *const bodies[] = {
        "/a/b%20c?x=1&y=2#frag", "/plain", "/p#only-fragment", "/q?", "/x?a=b&c#f?g",
    };
    CHECK_INT(cli_connect(fx, &c), 0);
    for (size_t i = 0; i < sizeof(reqs) / sizeof(reqs[0]); i++) {
        CHECK_INT(cli_sends(&c, reqs[i]), 0);
        CHECK_INT(cli_read_response(&c, &r, 0), 1);
        CHECK_INT(r.status, 200);
        r.body[r.body_len] = '\0';
        CHECK_STR(r.body, bodies[i]);
    }
    /* The same connection, one byte per write: every piece of the request arrives split. */
    static const char split[] = "PUT /split/path?k=v HTTP/1.1\r\nHost: h\r\n"
                                "X-TEST-HEADER: split value\r\nContent-Length: 4\r\n\r\nbody";
    for (size_t i = 0; i < sizeof(split) - 1; i++) {
        CHECK_INT(cli_send(&c, split + i, 1), 0);
        usleep(300);
    }
    CHECK_INT(cli_read_response(&c, &r, 0), 1);
    CHECK_INT(r.status, 200);
}

static void test_parse_target_query_headers(void **state)
{
    (void)state;
    fixture fx;
    fx_init(&fx, handler_echo);
    fx_start(&fx);
    fx_run(&fx, client_parse, 0);

    assert_int_equal(fx.nreqs, 6);
    seen *s = fx.seen;
    assert_string_equal(s[0].method, "GET");
    assert_string_equal(s[0].target, "/a/b%20c?x=1&y=2#frag");
    assert_string_equal(s[0].path, "/a/b%20c");
    assert_string_equal(s[0].query, "x=1&y=2");
    assert_int_equal(s[0].has_h, 1);
    assert_string_equal(s[0].hval, "Hello World");
    assert_int_equal(s[0].has_missing, 0);
    assert_int_equal(s[0].has_empty, 1);
    assert_int_equal(s[0].empty_len, 0);
    assert_int_equal(s[0].body_len, 0);
    assert_int_equal(s[0].is_head, 0);
    assert_string_equal(s[0].multi, "one|two, 2b||");

    assert_string_equal(s[1].path, "/plain");
    assert_int_equal(s[1].query_len, 0);
    assert_int_equal(s[1].has_h, 0);
    assert_string_equal(s[1].multi, "");

    assert_string_equal(s[2].target, "/p#only-fragment");
    assert_string_equal(s[2].path, "/p");
    assert_int_equal(s[2].query_len, 0);

    assert_string_equal(s[3].path, "/q");
    assert_int_equal(s[3].query_len, 0);

    assert_string_equal(s[4].method, "DELETE");
    assert_string_equal(s[4].path, "/x");
    assert_string_equal(s[4].query, "a=b&c");
    assert_string_equal(s[4].hval, "lower");

    assert_string_equal(s[5].method, "PUT");
    assert_string_equal(s[5].target, "/split/path?k=v");
    assert_string_equal(s[5].path, "/split/path");
    assert_string_equal(s[5].query, "k=v");
    assert_int_equal(s[5].has_h, 1);
    assert_string_equal(s[5].hval, "split value");
    assert_int_equal(s[5].body_len, 4);
    assert_string_equal(s[5].body, "body");
    for (int i = 0; i < fx.nreqs; i++)
        assert_int_equal(fx.respond_ret[i], 0);
}

/* ---- bodies: Content-Length, chunked, 100-continue, HEAD --------------------------------------
 */

static void client_bodies(fixture *fx)
{
    cli c;
    resp r;
    CHECK_INT(cli_connect(fx, &c), 0);

    /* Content-Length, the body in two writes, with a NUL byte in it */
    CHECK_INT(cli_sends(&c, "POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\nhel"), 0);
    usleep(20000);
    CHECK_INT(cli_send(&c, "lo\0world", 8), 0);
    CHECK_INT(cli_read_response(&c, &r, 0), 1);
    CHECK_INT(r.status, 200);
    CHECK_INT(r.body_len, 11);
    CHECK(memcmp(r.body, "hello\0world", 11) == 0);

    /* chunked, with a chunk extension and a trailer */
    CHECK_INT(cli_sends(&c, "POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                            "5\r\nhello\r\n"),
              0);
    usleep(20000);
    CHECK_INT(cli_sends(&c, "6;ext=1\r\n chunk\r\na\r\ned bodies!\r\n0\r\nX-Trailer: t\r\n\r\n"),
              0);
    CHECK_INT(cli_read_response(&c, &r, 0), 1);
    CHECK_INT(r.status, 200);
    r.body[r.body_len] = '\0';
    CHECK_STR(r.body, "hello chunked bodies!");

    /* Expect: 100-continue gets the interim answer before the body is sent */
    CHECK_INT(cli_sends(&c, "POST /echo HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n"
                            "Content-Length: 3\r\n\r\n"),
              0);
    CHECK_INT(cli_read_response(&c, &r, 0), 1);
    CHECK_INT(r.status, 100);
    CHECK_INT(cli_sends(&c, "abc"), 0);
    CHECK_INT(cli_read_response(&c, &r, 0), 1);
    CHECK_INT(r.status, 200);
    r.body[r.body_len] = '\0';
    CHECK_STR(r.body, "abc");

    /* HEAD: Content-Length of the body that a GET would get, and no body bytes. The GET that
     * follows on the same connection would not parse if the body had been sent. */
    char v[64];
    CHECK_INT(cli_sends(&c, "HEAD /head/path HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK_INT(cli_read_response(&c, &r, 1), 1);
    CHECK_INT(r.status, 200);
    CHECK(resp_header(&r, "Content-Length", v, sizeof(v)));
    CHECK_STR(v, "10");
    CHECK(resp_header(&r, "Content-Type", v, sizeof(v)));
    CHECK_STR(v, "text/plain");
    CHECK_INT(cli_sends(&c, "GET /after/head HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK_INT(cli_read_response(&c, &r, 0), 1);
    CHECK_INT(r.status, 200);
    r.body[r.body_len] = '\0';
    CHECK_STR(r.body, "/after/head");
}

static void test_body_chunked_continue_head(void **state)
{
    (void)state;
    fixture fx;
    fx_init(&fx, handler_echo);
    fx_start(&fx);
    fx_run(&fx, client_bodies, 0);

    assert_int_equal(fx.nreqs, 5);
    assert_string_equal(fx.seen[0].method, "POST");
    assert_int_equal(fx.seen[0].body_len, 11);
    assert_int_equal(fx.seen[1].body_len, 21);
    assert_string_equal(fx.seen[1].body, "hello chunked bodies!");
    assert_int_equal(fx.seen[2].body_len, 3);
    assert_string_equal(fx.seen[3].method, "HEAD");
    assert_int_equal(fx.seen[3].is_head, 1);
    assert_int_equal(fx.seen[3].body_len, 0);
    assert_int_equal(fx.seen[4].is_head, 0);
}

/* ---- limits ------------------------------------------------------------------------------------
 */

static void client_limits(fixture *fx)
{
    cli c;
    resp r;
    char req[1024];
    char a[128];

    /* URI over max_uri (64) */
    memset(a, 'a', 100);
    a[100] = '\0';
    snprintf(req, sizeof(req), "GET /%s HTTP/1.1\r\nHost: h\r\n\r\n", a);
    CHECK_INT(cli_connect(fx, &c), 0);
    CHECK_INT(cli_sends(&c, req), 0);
    CHECK_ERROR_AND_CLOSE(&c, 414, "too_large");
    cli_close(&c);

    /* header block over max_headers (128 bytes of names and values) */
    snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: h\r\nX-Big: %s%s\r\n\r\n", a, a);
    CHECK_INT(cli_connect(fx, &c), 0);
    CHECK_INT(cli_sends(&c, req), 0);
    CHECK_ERROR_AND_CLOSE(&c, 431, "too_large");
    cli_close(&c);

    /* Content-Length over max_body (16): refused before the body is sent */
    CHECK_INT(cli_connect(fx, &c), 0);
    CHECK_INT(cli_sends(&c, "POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 17\r\n\r\n"), 0);
    CHECK_ERROR_AND_CLOSE(&c, 413, "too_large");
    cli_close(&c);

    /* chunked body growing over max_body */
    CHECK_INT(cli_connect(fx, &c), 0);
    CHECK_INT(cli_sends(&c, "POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                            "a\r\n0123456789\r\na\r\n0123456789\r\n0\r\n\r\n"),
              0);
    CHECK_ERROR_AND_CLOSE(&c, 413, "too_large");
    cli_close(&c);

    /* malformed request line */
    CHECK_INT(cli_connect(fx, &c), 0);
    CHECK_INT(cli_sends(&c, "GET /x HTTP/1.1 junk\r\n\r\n"), 0);
    CHECK_ERROR_AND_CLOSE(&c, 400, "bad_request");
    cli_close(&c);

    /* exactly at every limit: accepted, and the connection stays open */
    memset(a, 'b', 63);
    a[63] = '\0';
    snprintf(req, sizeof(req),
             "POST /%s HTTP/1.1\r\nHost: h\r\nContent-Length: 16\r\n\r\n0123456789abcdef", a);
    CHECK_INT(cli_connect(fx, &c), 0);
    CHECK_INT(cli_sends(&c, req), 0);
    CHECK_INT(cli_read_response(&c, &r, 0), 1);
    CHECK_INT(r.status, 200);
    CHECK_INT(r.body_len, 64);
    CHECK(resp_header(&r, "Connection", a, sizeof(a)));
    CHECK_STR(a, "keep-alive");

    /* a limit error after an answered request on a kept-alive connection */
    memset(a, 'c', 100);
    a[100] = '\0';
    snprintf(req, sizeof(req), "GET /%s HTTP/1.1\r\nHost: h\r\n\r\n", a);
    CHECK_INT(cli_sends(&c, req), 0);
    CHECK_ERROR_AND_CLOSE(&c, 414, "too_large");
}

static void test_limits_414_431_413_400(void **state)
{
    (void)state;
    fixture fx;
    fx_init(&fx, handler_echo);
    fx.cfg.max_uri = 64;
    fx.cfg.max_headers = 128;
    fx.cfg.max_body = 16;
    fx_start(&fx);
    fx_run(&fx, client_limits, 0);
    assert_int_equal(fx.nreqs, 1); /* only the request at the limits reached the handler */
    assert_int_equal(strlen(fx.seen[0].target), 64);
    assert_string_equal(fx.seen[0].body, "0123456789abcdef");
}

/* ---- response writing --------------------------------------------------------------------------
 */

static void handler_responses(tc_request *req, void *data)
{
    fixture *fx = data;
    int i = record(fx, req);
    tc_str path = tc_request_path(req);
    static const tc_server_header extra[] = {{"X-One", "1"}, {"X-Two", "two words"}};
    if (str_eq(path, "/created")) {
        fx->respond_ret[i] =
            tc_request_respond(req, 201, "text/plain; charset=utf-8", extra, 2, "made it", 7);
    } else if (str_eq(path, "/no-type")) {
        fx->respond_ret[i] = tc_request_respond(req, 204, NULL, NULL, 0, NULL, 0);
    } else if (str_eq(path, "/odd-status")) {
        fx->respond_ret[i] = tc_request_respond(req, 299, "text/plain", NULL, 0, "odd", 3);
    } else if (str_eq(path, "/json")) {
        fx->respond_ret[i] = tc_request_respond_json(req, 200, "{\"a\":[1,2]}");
    } else if (str_eq(path, "/twice")) {
        fx->respond_ret[i] = tc_request_respond(req, 200, "text/plain", NULL, 0, "first", 5);
        /* the request was answered synchronously; it is still queued on the connection (the
         * handler runs inside the read callback), so a second answer is refused */
        fx->abort_other = tc_request_respond(req, 500, "text/plain", NULL, 0, "second", 6);
    } else {
        fx->respond_ret[i] = tc_request_respond(req, 200, "text/plain", NULL, 0, "ok", 2);
    }
}

static void client_responses(fixture *fx)
{
    cli c;
    resp r;
    char v[128];
    int err = 0;
    CHECK_INT(cli_connect(fx, &c), 0);

    CHECK_INT(cli_sends(&c, "GET /created HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK_INT(cli_read_response(&c, &r, 0), 1);
    CHECK_STR(r.line, "HTTP/1.1 201 Created");
    CHECK(resp_header(&r, "Date", v, sizeof(v)));
    CHECK(date_ok(v));
    CHECK(resp_header(&r, "Content-Length", v, sizeof(v)));
    CHECK_STR(v, "7");
    CHECK(resp_header(&r, "Content-Type", v, sizeof(v)));
    CHECK_STR(v, "text/plain; charset=utf-8");
    CHECK(resp_header(&r, "Connection", v, sizeof(v)));
    CHECK_STR(v, "keep-alive");
    CHECK(resp_header(&r, "X-One", v, sizeof(v)));
    CHECK_STR(v, "1");
    CHECK(resp_header(&r, "X-Two", v, sizeof(v)));
    CHECK_STR(v, "two words");
    CHECK_INT(resp_header_count(&r, "Date"), 1);
    CHECK_INT(resp_header_count(&r, "Content-Length"), 1);
    CHECK_INT(resp_header_count(&r, "Connection"), 1);
    CHECK_INT(r.body_len, 7);
    CHECK(memcmp(r.body, "made it", 7) == 0);

    CHECK_INT(cli_sends(&c, "GET /no-type HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK_INT(cli_read_response(&c, &r, 0), 1);
    CHECK_STR(r.line, "HTTP/1.1 204 No Content");
    CHECK(!resp_header(&r, "Content-Type", v, sizeof(v)));
    CHECK(resp_header(&r, "Content-Length", v, sizeof(v)));
    CHECK_STR(v, "0");

    CHECK_INT(cli_sends(&c, "GET /odd-status HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK_INT(cli_read_response(&c, &r, 0), 1);
    CHECK_STR(r.line, "HTTP/1.1 299 Unknown");

    CHECK_INT(cli_sends(&c, "GET /json HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK_INT(cli_read_response(&c, &r, 0), 1);
    CHECK_STR(r.line, "HTTP/1.1 200 OK");
    CHECK(resp_header(&r, "Content-Type", v, sizeof(v)));
    CHECK_STR(v, "application/json");
    r.body[r.body_len] = '\0';
    CHECK_STR(r.body, "{\"a\":[1,2]}");

    CHECK_INT(cli_sends(&c, "GET /twice HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK_INT(cli_read_response(&c, &r, 0), 1);
    CHECK_INT(r.status, 200);
    r.body[r.body_len] = '\0';
    CHECK_STR(r.body, "first");

    /* the client asks to close: the answer says so and the server closes */
    CHECK_INT(cli_sends(&c, "GET /last HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"), 0);
    CHECK_INT(cli_read_response(&c, &r, 0), 1);
    CHECK(resp_header(&r, "Connection", v, sizeof(v)));
    CHECK_STR(v, "close");
    CHECK_INT(cli_read_eof(&c, &err), 0);
    CHECK_INT(err, 0);
    cli_close(&c);

    /* HTTP/1.0 without keep-alive closes; with keep-alive stays open */
    CHECK_INT(cli_connect(fx, &c), 0);
    CHECK_INT(cli_sends(&c, "GET /ten HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"), 0);
    CHECK_INT(cli_read_response(&c, &r, 0), 1);
    CHECK(resp_header(&r, "Connection", v, sizeof(v)));
    CHECK_STR(v, "keep-alive");
    CHECK_INT(cli_sends(&c, "GET /ten HTTP/1.0\r\n\r\n"), 0);
    CHECK_INT(cli_read_response(&c, &r, 0), 1);
    CHECK_STR(r.line, "HTTP/1.1 200 OK");
    CHECK(resp_header(&r, "Connection", v, sizeof(v)));
    CHECK_STR(v, "close");
    CHECK_INT(cli_read_eof(&c, &err), 0);
    CHECK_INT(err, 0);
}

static void test_response_format(void **state)
{
    (void)state;
    fixture fx;
    fx_init(&fx, handler_responses);
    fx_start(&fx);
    fx_run(&fx, client_responses, 0);
    assert_int_equal(fx.nreqs, 8);
    for (int i = 0; i < fx.nreqs; i++)
        assert_int_equal(fx.respond_ret[i], 0);
    assert_int_equal(fx.abort_other, TC_EINVAL);
}

static void test_reason_phrases(void **state)
{
    (void)state;
    assert_string_equal(tc_http_reason(200), "OK");
    assert_string_equal(tc_http_reason(400), "Bad Request");
    assert_string_equal(tc_http_reason(404), "Not Found");
    assert_string_equal(tc_http_reason(408), "Request Timeout");
    assert_string_equal(tc_http_reason(413), "Payload Too Large");
    assert_string_equal(tc_http_reason(414), "URI Too Long");
    assert_string_equal(tc_http_reason(431), "Request Header Fields Too Large");
    assert_string_equal(tc_http_reason(502), "Bad Gateway");
    assert_string_equal(tc_http_reason(503), "Service Unavailable");
    assert_string_equal(tc_http_reason(504), "Gateway Timeout");
    assert_string_equal(tc_http_reason(299), "Unknown");
    assert_string_equal(tc_http_reason(-1), "Unknown");
}

static void server_new_noop(tc_request *req, void *data)
{
    (void)data;
    tc_request_respond(req, 200, NULL, NULL, 0, NULL, 0);
}

static void on_closed_count(tc_server *srv, void *data)
{
    (void)srv;
    (*(int *)data)++;
}

/* 1 when the kernel lets a socket bind an address this machine does not have. */
static int nonlocal_bind_allowed(void)
{
    FILE *f = fopen("/proc/sys/net/ipv4/ip_nonlocal_bind", "r");
    int v = 0;
    if (f == NULL)
        return 0;
    if (fscanf(f, "%d", &v) != 1)
        v = 0;
    (void)fclose(f);
    return v != 0;
}

static void test_server_new_errors(void **state)
{
    (void)state;
    uv_loop_t loop;
    tc_server_config cfg;
    tc_server *a = NULL, *b = NULL;
    int closed = 0;
    assert_int_equal(uv_loop_init(&loop), 0);
    tc_server_config_init(&cfg);
    assert_string_equal(cfg.host, "127.0.0.1");
    assert_int_equal(cfg.max_body, TC_SERVER_DEFAULT_MAX_BODY);
    assert_int_equal(cfg.max_uri, TC_SERVER_MAX_URI);
    assert_int_equal(cfg.max_headers, TC_SERVER_MAX_HEADERS);
    assert_int_equal(cfg.header_timeout_ms, TC_SERVER_HEADER_TIMEOUT_MS);
    assert_int_equal(cfg.idle_timeout_ms, TC_SERVER_IDLE_TIMEOUT_MS);

    assert_int_equal(tc_server_new(&a, &loop, &cfg), TC_EINVAL); /* no handler */
    cfg.handler = server_new_noop;
    cfg.host = "not-an-address";
    assert_int_equal(tc_server_new(&a, &loop, &cfg), TC_EINVAL);
    cfg.host = "127.0.0.1";
    assert_int_equal(tc_server_new(&a, &loop, &cfg), 0);
    assert_int_equal(tc_server_connections(a), 0);
    assert_int_equal(tc_server_requests_in_flight(a), 0);
    cfg.port = tc_server_port(a);
    assert_int_equal(tc_server_new(&b, &loop, &cfg), TC_EADDRINUSE);
    /* An address not on this machine keeps the system's reason (TEST-NET-1, never sent to). */
    if (!nonlocal_bind_allowed()) {
        cfg.host = "192.0.2.1";
        cfg.port = 80;
        assert_int_equal(tc_server_new(&b, &loop, &cfg), TC_EADDRNOTAVAIL);
        assert_string_equal(tc_strerror(TC_EADDRNOTAVAIL), "cannot assign requested address");
    }
    tc_server_close(a, on_closed_count, &closed);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(closed, 1);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* ---- the asynchronous handler API ----------------------------------------------------------- */

static int cookie;

static void answer_later(fixture *fx, void *arg)
{
    tc_request *req = arg;
    assert_ptr_equal(tc_request_data(req), &cookie);
    assert_int_equal(tc_server_requests_in_flight(fx->srv), 1);
    uint64_t ready = tc_request_ready_ms(req);
    assert_true(ready > 0 && ready <= uv_now(&fx->loop));
    assert_true(uv_now(&fx->loop) - ready >= 90);
    assert_true(tc_request_ready_ns(req) > 0 && tc_request_ready_ns(req) <= uv_hrtime());
    assert_int_equal(tc_request_respond(req, 200, "text/plain", NULL, 0, "later", 5), 0);
    assert_int_equal(tc_server_requests_in_flight(fx->srv), 0);
}

static void handler_later(tc_request *req, void *data)
{
    fixture *fx = data;
    record(fx, req);
    assert_int_equal(tc_server_requests_in_flight(fx->srv), 1);
    assert_int_equal(tc_server_connections(fx->srv), 1);
    tc_request_set_data(req, &cookie);
    later(fx, 100, answer_later, req);
}

static void client_later(fixture *fx)
{
    cli c;
    resp r;
    CHECK_INT(cli_connect(fx, &c), 0);
    for (int i = 0; i < 2; i++) {
        double t0 = now_ms();
        CHECK_INT(cli_sends(&c, "GET /later HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
        CHECK_INT(cli_read_response(&c, &r, 0), 1);
        CHECK(now_ms() - t0 >= 80);
        CHECK_INT(r.status, 200);
        CHECK_INT(r.body_len, 5);
        CHECK(memcmp(r.body, "later", 5) == 0);
    }
}

static void test_async_answer_from_timer(void **state)
{
    (void)state;
    fixture fx;
    fx_init(&fx, handler_later);
    fx_start(&fx);
    fx_run(&fx, client_later, 0);
    assert_int_equal(fx.nreqs, 2);
}

/* Pipelining: three requests in one write, answered 3, 2, 1; the wire carries 1, 2, 3. */
static void answer_numbered(fixture *fx, void *arg)
{
    int i = (int)(intptr_t)arg;
    char body = (char)('1' + i);
    fx->respond_ret[i] = tc_request_respond(fx->reqs[i], 200, "text/plain", NULL, 0, &body, 1);
}

static void handler_pipeline(tc_request *req, void *data)
{
    fixture *fx = data;
    int i = record(fx, req);
    if (i == 2) {
        answer_numbered(fx, (void *)(intptr_t)2); /* at once, while 1 and 2 are pending */
        later(fx, 50, answer_numbered, (void *)(intptr_t)1);
        later(fx, 150, answer_numbered, (void *)(intptr_t)0);
    }
}

static void client_pipeline(fixture *fx)
{
    cli c;
    resp r;
    CHECK_INT(cli_connect(fx, &c), 0);
    double t0 = now_ms();
    CHECK_INT(cli_sends(&c, "GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n"
                            "GET /3 HTTP/1.1\r\nHost: h\r\n\r\n"),
              0);
    for (int i = 1; i <= 3; i++) {
        CHECK_INT(cli_read_response(&c, &r, 0), 1);
        /* nothing may arrive before the first request was answered */
        CHECK(now_ms() - t0 >= 120);
        CHECK_INT(r.status, 200);
        CHECK_INT(r.body_len, 1);
        CHECK_INT(r.body[0], '0' + i);
    }
}

static void test_pipelining_answers_in_order(void **state)
{
    (void)state;
    fixture fx;
    fx_init(&fx, handler_pipeline);
    fx_start(&fx);
    fx_run(&fx, client_pipeline, 0);
    assert_int_equal(fx.nreqs, 3);
    for (int i = 0; i < 3; i++)
        assert_int_equal(fx.respond_ret[i], 0);
}

/* More pipelined requests than TC_SERVER_MAX_PIPELINE: reading pauses and resumes; odd ones are
 * answered from a timer, even ones at once. */
#define DEEP_PIPELINE (TC_SERVER_MAX_PIPELINE + 9)

static void answer_target(fixture *fx, void *arg)
{
    tc_request *req = arg;
    tc_str t = tc_request_target(req);
    assert_int_equal(tc_request_respond(req, 200, "text/plain", NULL, 0, t.base, t.len), 0);
}

static void handler_deep(tc_request *req, void *data)
{
    fixture *fx = data;
    int i = record(fx, req);
    assert_true(tc_server_requests_in_flight(fx->srv) <= TC_SERVER_MAX_PIPELINE);
    if (i % 2 == 1)
        later(fx, 5, answer_target, req);
    else
        answer_target(fx, req);
}

static void client_deep(fixture *fx)
{
    cli c;
    resp r;
    static char all[DEEP_PIPELINE * 64];
    size_t n = 0;
    for (int i = 0; i < DEEP_PIPELINE; i++)
        n += (size_t)snprintf(all + n, sizeof(all) - n, "GET /r%d HTTP/1.1\r\nHost: h\r\n\r\n", i);
    CHECK_INT(cli_connect(fx, &c), 0);
    CHECK_INT(cli_send(&c, all, n), 0);
    for (int i = 0; i < DEEP_PIPELINE; i++) {
        char want[16];
        snprintf(want, sizeof(want), "/r%d", i);
        CHECK_INT(cli_read_response(&c, &r, 0), 1);
        r.body[r.body_len] = '\0';
        CHECK_STR(r.body, want);
    }
}

static void test_pipelining_past_the_pipeline_limit(void **state)
{
    (void)state;
    fixture fx;
    fx_init(&fx, handler_deep);
    fx_start(&fx);
    fx_run(&fx, client_deep, 0);
    assert_int_equal(fx.nreqs, DEEP_PIPELINE);
}

/* ---- dropping requests ------------------------------------------------------------------------
 */

static void answer_ok(fixture *fx, void *arg)
{
    (void)fx;
    assert_int_equal(tc_request_respond(arg, 200, "text/plain", NULL, 0, "ok", 2), 0);
}

static void handler_drop(tc_request *req, void *data)
{
    fixture *fx = data;
    record(fx, req);
    tc_str path = tc_request_path(req);
    if (str_eq(path, "/reset"))
        tc_request_drop(req, 1);
    else if (str_eq(path, "/fin"))
        tc_request_drop(req, 0);
    else if (str_eq(path, "/slow-ok"))
        later(fx, 50, answer_ok, req);
    else
        answer_ok(fx, req);
}

static void client_drop(fixture *fx)
{
    cli c;
    resp r;
    int err = -1;

    CHECK_INT(cli_connect(fx, &c), 0);
    CHECK_INT(cli_sends(&c, "GET /reset HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK_INT(cli_read_eof(&c, &err), 0);
    CHECK_INT(err, ECONNRESET);
    cli_close(&c);

    CHECK_INT(cli_connect(fx, &c), 0);
    CHECK_INT(cli_sends(&c, "GET /fin HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK_INT(cli_read_eof(&c, &err), 0);
    CHECK_INT(err, 0);
    cli_close(&c);

    /* an earlier pipelined answer still goes out before the clean close */
    CHECK_INT(cli_connect(fx, &c), 0);
    CHECK_INT(cli_sends(&c, "GET /slow-ok HTTP/1.1\r\nHost: h\r\n\r\n"
                            "GET /fin HTTP/1.1\r\nHost: h\r\n\r\n"),
              0);
    CHECK_INT(cli_read_response(&c, &r, 0), 1);
    CHECK_INT(r.status, 200);
    CHECK_INT(cli_read_eof(&c, &err), 0);
    CHECK_INT(err, 0);
    cli_close(&c);

    /* ... and before the reset */
    CHECK_INT(cli_connect(fx, &c), 0);
    CHECK_INT(cli_sends(&c, "GET /slow-ok HTTP/1.1\r\nHost: h\r\n\r\n"
                            "GET /reset HTTP/1.1\r\nHost: h\r\n\r\n"),
              0);
    CHECK_INT(cli_read_response(&c, &r, 0), 1);
    CHECK_INT(r.status, 200);
    CHECK_INT(cli_read_eof(&c, &err), 0);
    CHECK_INT(err, ECONNRESET);
}

static void test_drop_reset_and_clean_close(void **state)
{
    (void)state;
    fixture fx;
    fx_init(&fx, handler_drop);
    fx_start(&fx);
    fx_run(&fx, client_drop, 0);
    assert_int_equal(fx.nreqs, 6);
}

/* ---- the client goes away -----------------------------------------------------------------------
 */

static void finish_aborted(fixture *fx, void *arg)
{
    tc_request *req = arg;
    int i = 0;
    while (i < fx->nreqs && fx->reqs[i] != req)
        i++;
    assert_true(i < fx->nreqs);
    assert_int_equal(tc_request_aborted(req), 1);
    fx->respond_ret[i] = tc_request_respond(req, 200, "text/plain", NULL, 0, "too late", 8);
    fx_loop_done(fx);
}

static void on_abort_counted(tc_request *req, void *data)
{
    fixture *fx = data;
    fx->aborts++;
    assert_int_equal(tc_request_aborted(req), 1);
    later(fx, 20, finish_aborted, req); /* the handler finishes it afterwards */
}

static void on_abort_replaced(tc_request *req, void *data)
{
    fixture *fx = data;
    (void)req;
    fx->abort_other++;
}

/* Polls until the request without an abort callback is marked aborted, then finishes it. */
static void poll_aborted(fixture *fx, void *arg)
{
    tc_request *req = arg;
    static int polls;
    if (!tc_request_aborted(req) && ++polls < 500) {
        later(fx, 5, poll_aborted, req);
        return;
    }
    finish_aborted(fx, req);
}

static void handler_abort(tc_request *req, void *data)
{
    fixture *fx = data;
    int i = record(fx, req);
    if (i == 0) {
        tc_request_on_abort(req, on_abort_replaced, fx);
        tc_request_on_abort(req, on_abort_counted, fx); /* replaces the first */
    } else if (i == 2) {
        tc_request_on_abort(req, on_abort_counted, fx);
    } else {
        tc_request_on_abort(req, on_abort_replaced, fx);
        tc_request_on_abort(req, NULL, NULL); /* removes it */
        later(fx, 5, poll_aborted, req);
    }
    atomic_store(&fx->stage, i + 1);
}

static void client_abort(fixture *fx)
{
    cli a, b;
    CHECK_INT(cli_connect(fx, &a), 0);
    CHECK_INT(cli_sends(&a, "GET /pending HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK(stage_wait(fx, 1));
    CHECK_INT(cli_connect(fx, &b), 0);
    CHECK_INT(cli_sends(&b, "GET /pending-too HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK(stage_wait(fx, 2));
    cli_close(&a);
    cli_close(&b);
    /* a client that resets instead of closing */
    CHECK_INT(cli_connect(fx, &a), 0);
    CHECK_INT(cli_sends(&a, "GET /pending-reset HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK(stage_wait(fx, 3));
    struct linger lg = {1, 0};
    CHECK(setsockopt(a.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)) == 0);
    cli_close(&a);
}

static void test_abort_when_client_closes(void **state)
{
    (void)state;
    fixture fx;
    fx_init(&fx, handler_abort);
    fx_start(&fx);
    fx_run(&fx, client_abort, 3);
    assert_int_equal(fx.nreqs, 3);
    assert_int_equal(fx.aborts, 2);      /* exactly once for each request that has one */
    assert_int_equal(fx.abort_other, 0); /* replaced and removed callbacks never run */
    for (int i = 0; i < 3; i++)
        assert_int_equal(fx.respond_ret[i], 0);
}

/* tc_server_close with requests pending: each sees its abort callback; the handler finishes them
 * inside it. */
static void on_abort_finish_now(tc_request *req, void *data)
{
    fixture *fx = data;
    fx->aborts++;
    assert_int_equal(tc_request_aborted(req), 1);
    assert_int_equal(tc_request_respond(req, 200, "text/plain", NULL, 0, "x", 1), 0);
}

static void close_now(fixture *fx, void *arg)
{
    (void)arg;
    assert_int_equal(tc_server_connections(fx->srv), 2);
    assert_int_equal(tc_server_requests_in_flight(fx->srv), 2);
    fx_close_server(fx);
    assert_int_equal(fx->aborts, 2); /* synchronously, before the close completes */
    assert_int_equal(fx->closed, 0);
    fx_loop_done(fx);
}

static void handler_hold(tc_request *req, void *data)
{
    fixture *fx = data;
    int i = record(fx, req);
    tc_request_on_abort(req, on_abort_finish_now, fx);
    if (i == 1)
        later(fx, 10, close_now, NULL);
}

static void client_two_pending(fixture *fx)
{
    cli a, b;
    int err = -1;
    CHECK_INT(cli_connect(fx, &a), 0);
    CHECK_INT(cli_connect(fx, &b), 0);
    CHECK_INT(cli_sends(&a, "GET /hold-a HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    usleep(10000);
    CHECK_INT(cli_sends(&b, "GET /hold-b HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK_INT(cli_read_eof(&a, &err), 0);
    CHECK_INT(err, 0);
    CHECK_INT(cli_read_eof(&b, &err), 0);
    CHECK_INT(err, 0);
}

static void test_close_aborts_pending_requests(void **state)
{
    (void)state;
    fixture fx;
    fx_init(&fx, handler_hold);
    fx_start(&fx);
    fx_run(&fx, client_two_pending, 1);
    assert_int_equal(fx.nreqs, 2);
    assert_int_equal(fx.aborts, 2);
}

/* ---- drain --------------------------------------------------------------------------------------
 */

static void on_drained(tc_server *srv, void *data)
{
    fixture *fx = data;
    fx->drained++;
    assert_int_equal(tc_server_connections(srv), 0);
    fx_loop_done(fx);
}

static void handler_drain(tc_request *req, void *data)
{
    fixture *fx = data;
    int i = record(fx, req);
    if (str_eq(tc_request_path(req), "/slow")) {
        tc_server_drain(fx->srv, on_drained, fx);
        assert_int_equal(fx->drained, 0);
        assert_int_equal(tc_server_connections(fx->srv), 2);
        atomic_store(&fx->stage, 1);
        return; /* answered on event 1 */
    }
    fx->respond_ret[i] = tc_request_respond(req, 200, "text/plain", NULL, 0, "fast", 4);
}

static void drain_event(fixture *fx, int ev)
{
    assert_int_equal(ev, 1);
    assert_int_equal(fx->nreqs, 2);
    assert_int_equal(tc_server_requests_in_flight(fx->srv), 1);
    fx->respond_ret[1] = tc_request_respond(fx->reqs[1], 200, "text/plain", NULL, 0, "slow", 4);
}

static void client_drain(fixture *fx)
{
    cli a, b, c;
    resp r;
    char v[64];
    int err = -1;
    CHECK_INT(cli_connect(fx, &b), 0);
    CHECK_INT(cli_sends(&b, "GET /b1 HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK_INT(cli_read_response(&b, &r, 0), 1);
    CHECK_INT(r.status, 200);

    CHECK_INT(cli_connect(fx, &a), 0);
    CHECK_INT(cli_sends(&a, "GET /slow HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK(stage_wait(fx, 1));

    /* no longer accepting */
    CHECK_INT(cli_connect(fx, &c), -ECONNREFUSED);

    /* a new request on the kept-alive connection: 503 shutting_down, then closed */
    CHECK_INT(cli_sends(&b, "GET /b2 HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK_INT(cli_read_response(&b, &r, 0), 1);
    CHECK_INT(r.status, 503);
    CHECK(error_body_ok(&r, "shutting_down", NULL, 0));
    CHECK(resp_header(&r, "Retry-After", v, sizeof(v)));
    CHECK(atoi(v) >= 1);
    CHECK(resp_header(&r, "Connection", v, sizeof(v)));
    CHECK_STR(v, "close");
    CHECK_INT(cli_read_eof(&b, &err), 0);
    CHECK_INT(err, 0);
    cli_close(&b);

    /* the in-flight request is still answered, with Connection: close */
    client_event(fx);
    CHECK_INT(cli_read_response(&a, &r, 0), 1);
    CHECK_INT(r.status, 200);
    CHECK_INT(r.body_len, 4);
    CHECK(memcmp(r.body, "slow", 4) == 0);
    CHECK(resp_header(&r, "Connection", v, sizeof(v)));
    CHECK_STR(v, "close");
    CHECK_INT(cli_read_eof(&a, &err), 0);
    CHECK_INT(err, 0);
}

static void test_drain(void **state)
{
    (void)state;
    fixture fx;
    fx_init(&fx, handler_drain);
    fx.on_event = drain_event;
    fx_start(&fx);
    fx_run(&fx, client_drain, 1);
    assert_int_equal(fx.drained, 1);
    assert_int_equal(fx.nreqs, 2); /* /b2 never reached the handler */
    assert_string_equal(fx.seen[0].path, "/b1");
    assert_string_equal(fx.seen[1].path, "/slow");
    assert_int_equal(fx.respond_ret[0], 0);
    assert_int_equal(fx.respond_ret[1], 0);
}

/* Draining with no connection at all: the drained callback runs once, at once. */
static void test_drain_when_idle(void **state)
{
    (void)state;
    uv_loop_t loop;
    tc_server_config cfg;
    tc_server *srv = NULL;
    int drained = 0, closed = 0;
    assert_int_equal(uv_loop_init(&loop), 0);
    tc_server_config_init(&cfg);
    cfg.handler = server_new_noop;
    assert_int_equal(tc_server_new(&srv, &loop, &cfg), 0);
    tc_server_drain(srv, on_closed_count, &drained);
    assert_int_equal(uv_run(&loop, UV_RUN_NOWAIT), 0);
    assert_int_equal(drained, 1);
    tc_server_drain(srv, on_closed_count, &drained); /* a second drain does nothing */
    tc_server_close(srv, on_closed_count, &closed);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(drained, 1);
    assert_int_equal(closed, 1);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* ---- connection cap, timeouts ------------------------------------------------------------------
 */

static atomic_size_t shared_count;

static void client_overload(fixture *fx)
{
    cli a, b, c;
    resp r;
    char v[64];
    int err = -1;
    CHECK_INT(cli_connect(fx, &a), 0);
    CHECK_INT(cli_sends(&a, "GET /a HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK_INT(cli_read_response(&a, &r, 0), 1);
    CHECK_INT(r.status, 200);
    CHECK_INT(atomic_load(&shared_count), 2);

    /* over the shared cap: answered at once without a request, then closed */
    CHECK_INT(cli_connect(fx, &b), 0);
    CHECK_INT(cli_read_response(&b, &r, 0), 1);
    CHECK_INT(r.status, 503);
    CHECK(error_body_ok(&r, "overloaded", NULL, 0));
    CHECK(resp_header(&r, "Retry-After", v, sizeof(v)));
    CHECK(atoi(v) >= 1);
    CHECK(resp_header(&r, "Connection", v, sizeof(v)));
    CHECK_STR(v, "close");
    CHECK_INT(cli_read_eof(&b, &err), 0);
    CHECK_INT(err, 0);
    cli_close(&b);
    CHECK_INT(atomic_load(&shared_count), 2);

    /* once a connection goes, the count drops and a new one is served */
    cli_close(&a);
    for (int i = 0; i < 5000 && atomic_load(&shared_count) != 1; i++)
        usleep(1000);
    CHECK_INT(atomic_load(&shared_count), 1);
    CHECK_INT(cli_connect(fx, &c), 0);
    CHECK_INT(cli_sends(&c, "GET /c HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK_INT(cli_read_response(&c, &r, 0), 1);
    CHECK_INT(r.status, 200);
}

static void test_max_connections_shared_counter(void **state)
{
    (void)state;
    fixture fx;
    fx_init(&fx, handler_echo);
    atomic_store(&shared_count, 1); /* another worker holds one connection */
    fx.cfg.max_connections = 2;
    fx.cfg.conn_count = &shared_count;
    fx_start(&fx);
    fx_run(&fx, client_overload, 0);
    assert_int_equal(fx.nreqs, 2);
    assert_int_equal(atomic_load(&shared_count), 1); /* only the other worker's is left */
}

static void client_header_timeout(fixture *fx)
{
    cli a, b;
    double t0 = now_ms();
    CHECK_INT(cli_connect(fx, &a), 0);
    CHECK_INT(cli_sends(&a, "GET /never HTTP/1.1\r\nHost: h\r\n"), 0);
    CHECK_INT(cli_connect(fx, &b), 0); /* sends nothing at all */
    CHECK_ERROR_AND_CLOSE(&a, 408, "timeout");
    CHECK_ERROR_AND_CLOSE(&b, 408, "timeout");
    double dt = now_ms() - t0;
    CHECK(dt >= 150 && dt < 5000);

    /* on a kept-alive connection, the next request's headers have the same deadline */
    cli c;
    resp r;
    CHECK_INT(cli_connect(fx, &c), 0);
    CHECK_INT(cli_sends(&c, "GET /ok HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK_INT(cli_read_response(&c, &r, 0), 1);
    CHECK_INT(r.status, 200);
    t0 = now_ms();
    CHECK_INT(cli_sends(&c, "GET /never HTTP/1.1\r\nHo"), 0);
    CHECK_ERROR_AND_CLOSE(&c, 408, "timeout");
    dt = now_ms() - t0;
    CHECK(dt >= 150 && dt < 5000);
}

static void test_header_timeout_408(void **state)
{
    (void)state;
    fixture fx;
    fx_init(&fx, handler_echo);
    fx.cfg.header_timeout_ms = 200;
    fx_start(&fx);
    fx_run(&fx, client_header_timeout, 0);
    assert_int_equal(fx.nreqs, 1); /* only /ok */
}

static void client_idle_timeout(fixture *fx)
{
    cli c;
    resp r;
    int err = -1;
    CHECK_INT(cli_connect(fx, &c), 0);
    CHECK_INT(cli_sends(&c, "GET /1 HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK_INT(cli_read_response(&c, &r, 0), 1);
    usleep(50000); /* well within the idle timeout: still served */
    CHECK_INT(cli_sends(&c, "GET /2 HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK_INT(cli_read_response(&c, &r, 0), 1);
    CHECK_INT(r.status, 200);
    double t0 = now_ms();
    /* then idle: closed without a response */
    CHECK_INT(cli_read_eof(&c, &err), 0);
    CHECK_INT(err, 0);
    double dt = now_ms() - t0;
    CHECK(dt >= 200 && dt < 5000);
}

static void test_idle_timeout_closes(void **state)
{
    (void)state;
    fixture fx;
    fx_init(&fx, handler_echo);
    fx.cfg.idle_timeout_ms = 300;
    fx.cfg.header_timeout_ms = 10000;
    fx_start(&fx);
    fx_run(&fx, client_idle_timeout, 0);
    assert_int_equal(fx.nreqs, 2);
}

/* ---- error bodies -------------------------------------------------------------------------------
 */

static const char nasty[] = "say \"hi\" \\ back\nslash\ttab\x01\x1f end";

static void handler_errors(tc_request *req, void *data)
{
    fixture *fx = data;
    int i = record(fx, req);
    tc_str path = tc_request_path(req);
    if (str_eq(path, "/nasty"))
        fx->respond_ret[i] = tc_request_respond_error(req, 404, "not_found", nasty);
    else if (str_eq(path, "/busy"))
        fx->respond_ret[i] = tc_request_respond_error(req, 503, "overloaded", "busy");
    else
        fx->respond_ret[i] = tc_request_respond_error(req, 400, "bad_request", "bad \"timeout\"");
}

static void client_errors(fixture *fx)
{
    cli c;
    resp r;
    char v[256];
    CHECK_INT(cli_connect(fx, &c), 0);
    CHECK_INT(cli_sends(&c, "GET /nasty HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK_INT(cli_read_response(&c, &r, 0), 1);
    CHECK_STR(r.line, "HTTP/1.1 404 Not Found");
    CHECK(error_body_ok(&r, "not_found", v, sizeof(v)));
    CHECK_STR(v, nasty);
    /* no raw control byte in the body */
    for (size_t i = 0; i < r.body_len; i++)
        CHECK((unsigned char)r.body[i] >= 0x20);
    CHECK(resp_header(&r, "Content-Type", v, sizeof(v)));
    CHECK_STR(v, "application/json");
    CHECK(resp_header(&r, "Connection", v, sizeof(v)));
    CHECK_STR(v, "keep-alive");

    CHECK_INT(cli_sends(&c, "GET /busy HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK_INT(cli_read_response(&c, &r, 0), 1);
    CHECK_INT(r.status, 503);
    CHECK(error_body_ok(&r, "overloaded", v, sizeof(v)));
    CHECK_STR(v, "busy");
    CHECK(resp_header(&r, "Retry-After", v, sizeof(v)));
    CHECK(atoi(v) >= 1);

    CHECK_INT(cli_sends(&c, "GET /bad HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK_ERROR_AND_CLOSE(&c, 400, "bad_request");
}

static void test_respond_error_escapes_message(void **state)
{
    (void)state;
    fixture fx;
    fx_init(&fx, handler_errors);
    fx_start(&fx);
    fx_run(&fx, client_errors, 0);
    assert_int_equal(fx.nreqs, 3);
    for (int i = 0; i < 3; i++)
        assert_int_equal(fx.respond_ret[i], 0);
}

/* ---- access log ---------------------------------------------------------------------------------
 */

static void handler_log(tc_request *req, void *data)
{
    fixture *fx = data;
    int i = record(fx, req);
    if (str_eq(tc_request_path(req), "/log/missing"))
        fx->respond_ret[i] = tc_request_respond_error(req, 404, "not_found", "no such thing");
    else
        fx->respond_ret[i] = tc_request_respond(req, 200, "text/plain", NULL, 0, "logged", 6);
}

static void client_log(fixture *fx)
{
    cli c;
    resp r;
    CHECK_INT(cli_connect(fx, &c), 0);
    CHECK_INT(cli_sends(&c, "GET /log/a?secret=1 HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK_INT(cli_read_response(&c, &r, 0), 1);
    CHECK_INT(cli_sends(&c, "POST /log/missing HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi"),
              0);
    CHECK_INT(cli_read_response(&c, &r, 0), 1);
    CHECK_INT(r.status, 404);
    CHECK_INT(cli_sends(&c, "HEAD /log/head HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK_INT(cli_read_response(&c, &r, 1), 1);
    CHECK_INT(r.status, 200);
}

static void test_access_log(void **state)
{
    (void)state;
    fixture fx;
    FILE *log = tmpfile();
    assert_non_null(log);
    fx_init(&fx, handler_log);
    fx.cfg.access_log = log;
    fx_start(&fx);
    fx_run(&fx, client_log, 0);
    assert_int_equal(fx.nreqs, 3);

    rewind(log);
    static const struct {
        const char *method, *path;
        int status;
    } want[] = {{"GET", "/log/a", 200}, {"POST", "/log/missing", 404}, {"HEAD", "/log/head", 200}};
    char line[1024];
    int n = 0;
    while (fgets(line, sizeof(line), log) != NULL) {
        char when[64], method[16], path[512];
        int status = 0;
        unsigned long long us = 0;
        size_t bytes = 0;
        assert_true(n < 3);
        assert_int_equal(line[strlen(line) - 1], '\n');
        assert_int_equal(
            sscanf(line, "%63s %15s %511s %d %llu %zu", when, method, path, &status, &us, &bytes),
            6);
        /* 2026-11-21T16:57:44Z */
        assert_int_equal(strlen(when), 20);
        assert_int_equal(when[4], '-');
        assert_int_equal(when[10], 'T');
        assert_int_equal(when[19], 'Z');
        assert_string_equal(method, want[n].method);
        assert_string_equal(path, want[n].path);
        assert_int_equal(status, want[n].status);
        assert_true(us < 5000000);
        assert_true(bytes > 60); /* at least a status line, Date and Content-Length */
        n++;
    }
    assert_int_equal(n, 3);
    fclose(log);
}

/* ---- regression tests for bugs found by this file ------------------------------------------- */

/* Found as a bug by this file: a request finished after tc_server_close() used to touch the
 * freed server. Contract now: close_cb waits until every request handed to the handler has been
 * finished, and a late finish returns 0 and only frees the request. */
static void finish_after_close(fixture *fx, void *arg)
{
    tc_request *req = arg;
    assert_int_equal(fx->closed, 0); /* close waits for the requests it handed out */
    fx->respond_ret[0] = tc_request_respond(req, 200, "text/plain", NULL, 0, "late", 4);
    fx_loop_done(fx);
}

static void on_abort_finish_later(tc_request *req, void *data)
{
    fixture *fx = data;
    fx->aborts++;
    later(fx, 20, finish_after_close, req);
}

static void close_soon(fixture *fx, void *arg)
{
    (void)arg;
    fx_close_server(fx);
    fx_loop_done(fx);
}

static void handler_hold_then_close(tc_request *req, void *data)
{
    fixture *fx = data;
    record(fx, req);
    tc_request_on_abort(req, on_abort_finish_later, fx);
    later(fx, 10, close_soon, NULL);
}

static void client_one_pending(fixture *fx)
{
    cli a;
    int err = -1;
    CHECK_INT(cli_connect(fx, &a), 0);
    CHECK_INT(cli_sends(&a, "GET /hold HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK_INT(cli_read_eof(&a, &err), 0);
    CHECK_INT(err, 0);
}

static void test_finish_after_server_close_waits(void **state)
{
    (void)state;
    fixture fx;
    fx_init(&fx, handler_hold_then_close);
    fx_start(&fx);
    fx_run(&fx, client_one_pending, 2);
    assert_int_equal(fx.aborts, 1);
    assert_int_equal(fx.respond_ret[0], 0);
}

/* Found as a bug by this file: tc_server_close() called from inside the handler, after the handler
 * answered its request, is a heap-use-after-free. conn_close() frees the finished request (it is
 * still at the queue head because the handler runs inside the read callback), and conn_dispatch()
 * then reads r->next from it (src/server.c, the `r = r->next` step of the loop in conn_dispatch).
 * Input: one "GET /close-now"; the handler calls tc_request_respond() and then tc_server_close().
 * Expected: the close completes; actual: ASan heap-use-after-free in conn_dispatch. */
static void handler_close_inside(tc_request *req, void *data)
{
    fixture *fx = data;
    int i = record(fx, req);
    fx->respond_ret[i] = tc_request_respond(req, 200, "text/plain", NULL, 0, "bye", 3);
    fx_close_server(fx);
    fx_loop_done(fx);
}

static void client_close_now(fixture *fx)
{
    cli a;
    int err = -1;
    CHECK_INT(cli_connect(fx, &a), 0);
    CHECK_INT(cli_sends(&a, "GET /close-now HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    cli_read_eof(&a, &err); /* closed, with or without the answer */
}

static void test_close_inside_handler_after_answer(void **state)
{
    (void)state;
    fixture fx;
    fx_init(&fx, handler_close_inside);
    fx_start(&fx);
    fx_run(&fx, client_close_now, 1);
    assert_int_equal(fx.nreqs, 1);
}

/* Found as a bug by this file: a hard close from inside the handler, with the request not
 * answered yet, leaked the requests that arrived in the same read after it (never handed to the
 * handler, so nobody could finish them). Input: "GET /hold" and "GET /second" pipelined in one
 * write; the handler holds /hold and calls tc_server_close(); the abort callback answers /hold.
 * Expected: /second freed, the close completes, nothing leaks. */
static void on_closed_count_pair(tc_server *srv, void *data)
{
    fixture *fx = data;
    (void)srv;
    fx->closed++;
}

static void on_abort_answer(tc_request *req, void *data)
{
    fixture *fx = data;
    fx->aborts++;
    fx->respond_ret[0] = tc_request_respond(req, 200, "text/plain", NULL, 0, "x", 1);
}

static void handler_hold_close_inside(tc_request *req, void *data)
{
    fixture *fx = data;
    record(fx, req);
    tc_request_on_abort(req, on_abort_answer, fx);
    tc_server *srv = fx->srv;
    fx->srv = NULL;
    tc_server_close(srv, on_closed_count_pair, fx);
    fx_loop_done(fx);
}

static void client_pipelined_pair(fixture *fx)
{
    cli a;
    int err = -1;
    CHECK_INT(cli_connect(fx, &a), 0);
    CHECK_INT(cli_sends(&a, "GET /hold HTTP/1.1\r\nHost: h\r\n\r\n"
                            "GET /second HTTP/1.1\r\nHost: h\r\n\r\n"),
              0);
    CHECK_INT(cli_read_eof(&a, &err), 0);
}

static void test_close_inside_handler_frees_pipelined(void **state)
{
    (void)state;
    fixture fx;
    fx_init(&fx, handler_hold_close_inside);
    fx_start(&fx);
    fx_run(&fx, client_pipelined_pair, 1);
    assert_int_equal(fx.nreqs, 1);
    assert_int_equal(fx.aborts, 1);
    assert_int_equal(fx.respond_ret[0], 0);
}

/* Found as a bug by this file: tc_request_respond_error() used to cut the message at 120 bytes with
 * snprintf, which can split a UTF-8 sequence, and the body is then not valid JSON (RFC 8259
 * requires UTF-8). Input: message of 119 'a' followed by U+00E9 (0xC3 0xA9). Expected: a body that
 * parses as JSON (the character kept or dropped whole); actual: the body ends in a lone 0xC3 byte
 * and jansson rejects it. */
static char long_message[160];

static void handler_long_error(tc_request *req, void *data)
{
    fixture *fx = data;
    int i = record(fx, req);
    fx->respond_ret[i] = tc_request_respond_error(req, 404, "not_found", long_message);
}

static void client_long_error(fixture *fx)
{
    cli c;
    resp r;
    char v[256];
    CHECK_INT(cli_connect(fx, &c), 0);
    CHECK_INT(cli_sends(&c, "GET /long HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    CHECK_INT(cli_read_response(&c, &r, 0), 1);
    CHECK_INT(r.status, 404);
    CHECK(error_body_ok(&r, "not_found", v, sizeof(v)));
    CHECK(strncmp(v, long_message, 119) == 0);
}

static void test_error_message_cut_at_utf8_boundary(void **state)
{
    (void)state;
    memset(long_message, 'a', 119);
    strcpy(long_message + 119, "\xc3\xa9 and more");
    fixture fx;
    fx_init(&fx, handler_long_error);
    fx_start(&fx);
    fx_run(&fx, client_long_error, 0);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reason_phrases),
        cmocka_unit_test(test_server_new_errors),
        cmocka_unit_test(test_parse_target_query_headers),
        cmocka_unit_test(test_body_chunked_continue_head),
        cmocka_unit_test(test_limits_414_431_413_400),
        cmocka_unit_test(test_response_format),
        cmocka_unit_test(test_async_answer_from_timer),
        cmocka_unit_test(test_pipelining_answers_in_order),
        cmocka_unit_test(test_pipelining_past_the_pipeline_limit),
        cmocka_unit_test(test_drop_reset_and_clean_close),
        cmocka_unit_test(test_abort_when_client_closes),
        cmocka_unit_test(test_close_aborts_pending_requests),
        cmocka_unit_test(test_drain),
        cmocka_unit_test(test_drain_when_idle),
        cmocka_unit_test(test_max_connections_shared_counter),
        cmocka_unit_test(test_header_timeout_408),
        cmocka_unit_test(test_idle_timeout_closes),
        cmocka_unit_test(test_respond_error_escapes_message),
        cmocka_unit_test(test_access_log),
        cmocka_unit_test(test_finish_after_server_close_waits),
        cmocka_unit_test(test_close_inside_handler_after_answer),
        cmocka_unit_test(test_close_inside_handler_frees_pipelined),
        cmocka_unit_test(test_error_message_cut_at_utf8_boundary),
    };
    /* TC_TEST_FILTER=pattern runs only the matching tests (cmocka wildcards). */
    const char *filter = getenv("TC_TEST_FILTER");
    if (filter != NULL)
        cmocka_set_test_filter(filter);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
