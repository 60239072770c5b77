/*
 * The server tests' fixture (server_fixture.h): the loop and client threads, the blocking client
 * and the handler-side records. Compiled once into the folder's fixture library; only the sfx_
 * names are shared.
 */
#include "server_fixture.h"

#define WATCHDOG_S 20
#define CLIENT_IO_TIMEOUT_S 5

/* ---- the fixture: one loop, one server, one client thread ------------------------------------ */

static void on_server_closed(tc_server *srv, void *data)
{
    fixture *fx = data;
    (void)srv;
    fx->closed++;
}

void sfx_close_server(fixture *fx)
{
    if (fx->srv != NULL) {
        tc_server *s = fx->srv;
        fx->srv = NULL;
        tc_server_close(s, on_server_closed, fx);
    }
}

static void maybe_finish(fixture *fx)
{
    if (fx->finished || !atomic_load(&fx->client_done) || fx->loop_pending > 0 ||
        fx->events_seen != atomic_load(&fx->events_sent))
        return;
    fx->finished = 1;
    sfx_close_server(fx);
    uv_close((uv_handle_t *)&fx->async, NULL);
}

void sfx_loop_done(fixture *fx)
{
    fx->loop_pending--;
    maybe_finish(fx);
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
        maybe_finish(fx);
}

static void watchdog(int sig)
{
    static const char msg[] = "test_server_*: watchdog fired, a test hung\n";
    (void)sig;
    if (write(2, msg, sizeof(msg) - 1) < 0) {
        /* nothing more to do */
    }
    _exit(3);
}

void sfx_init(fixture *fx, tc_handler_fn handler)
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

static void start(fixture *fx)
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

void sfx_run(fixture *fx, client_fn client, int loop_pending)
{
    start(fx);
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

void sfx_serve(fixture *fx, tc_handler_fn handler, client_fn client, int loop_pending)
{
    sfx_init(fx, handler);
    sfx_run(fx, client, loop_pending);
}

void sfx_expect_answered(const fixture *fx, int n)
{
    assert_int_equal(fx->nreqs, n);
    for (int i = 0; i < n; i++)
        assert_int_equal(fx->respond_ret[i], 0);
}

/* ---- client-side helpers (client thread only: no cmocka here) -------------------------------- */

void sfx_client_fail(fixture *fx, int line, const char *fmt, ...)
{
    if (fx->fail[0] != '\0')
        return;
    int n = snprintf(fx->fail, sizeof(fx->fail), "line %d: ", line);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(fx->fail + n, sizeof(fx->fail) - (size_t)n, fmt, ap);
    va_end(ap);
}

int sfx_stage_wait(fixture *fx, int stage)
{
    for (int i = 0; i < 10000; i++) {
        if (atomic_load(&fx->stage) >= stage)
            return 1;
        usleep(1000);
    }
    return 0;
}

void sfx_client_event(fixture *fx)
{
    atomic_fetch_add(&fx->events_sent, 1);
    uv_async_send(&fx->async);
}

double sfx_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

int sfx_cli_connect(fixture *fx, cli *c)
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

void sfx_cli_close(cli *c)
{
    for (int i = 0; i < c->fx->nfds; i++)
        if (c->fx->fds[i] == c->fd)
            c->fx->fds[i] = -1;
    close(c->fd);
    c->fd = -1;
}

int sfx_cli_send(cli *c, const char *data, size_t len)
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

int sfx_cli_sends(cli *c, const char *s)
{
    return sfx_cli_send(c, s, strlen(s));
}

ssize_t sfx_cli_fill(cli *c)
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

int sfx_resp_header(const resp *r, const char *name, char *out, size_t cap)
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

int sfx_resp_header_count(const resp *r, const char *name)
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

int sfx_cli_read_head(cli *c, resp *r)
{
    memset(r, 0, sizeof(*r));
    char *end;
    while ((end = memmem(c->buf, c->len, "\r\n\r\n", 4)) == NULL) {
        ssize_t n = sfx_cli_fill(c);
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
    memmove(c->buf, c->buf + hl, c->len - hl);
    c->len -= hl;
    return 1;
}

int sfx_cli_read_response(cli *c, resp *r, int head_request)
{
    int rc = sfx_cli_read_head(c, r);
    if (rc != 1)
        return rc;
    char cl[32];
    size_t body_len = 0;
    if (!head_request && sfx_resp_header(r, "Content-Length", cl, sizeof(cl)))
        body_len = strtoul(cl, NULL, 10);
    if (body_len >= sizeof(r->body)) {
        errno = EMSGSIZE;
        return -1;
    }
    while (c->len < body_len) {
        ssize_t n = sfx_cli_fill(c);
        if (n == 0)
            errno = EPIPE;
        if (n <= 0)
            return -1;
    }
    memcpy(r->body, c->buf, body_len);
    r->body[body_len] = '\0'; /* body_len < sizeof(r->body), checked above */
    r->body_len = body_len;
    memmove(c->buf, c->buf + body_len, c->len - body_len);
    c->len -= body_len;
    return 1;
}

/* Reads until the buffer holds n bytes: 1, or 0 when the connection ended first (*err: 0 for a
 * clean EOF, else the errno). */
static int cli_need(cli *c, size_t n, int *err)
{
    while (c->len < n) {
        ssize_t got = sfx_cli_fill(c);
        if (got <= 0) {
            *err = got == 0 ? 0 : errno;
            return 0;
        }
    }
    return 1;
}

/* Until the buffer holds a CRLF-terminated line: its length (CRLF excluded), or -1 when the
 * connection ended first. */
static long cli_line(cli *c, int *err)
{
    char *eol;
    while ((eol = memmem(c->buf, c->len, "\r\n", 2)) == NULL)
        if (!cli_need(c, c->len + 1, err))
            return -1;
    return eol - c->buf;
}

static void cli_consume(cli *c, size_t n)
{
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
}

int sfx_cli_read_chunked(cli *c, resp *r, sfx_sink sink, void *arg, int *err)
{
    *err = 0;
    r->body_len = 0;
    for (;;) {
        long ll = cli_line(c, err);
        if (ll < 0)
            return 0;
        char *endp;
        unsigned long size = strtoul(c->buf, &endp, 16);
        if (endp == c->buf || (endp != c->buf + ll && *endp != ';')) {
            errno = EPROTO;
            return -1;
        }
        cli_consume(c, (size_t)ll + 2);
        if (size == 0) { /* the trailers, then an empty line */
            while ((ll = cli_line(c, err)) > 0)
                cli_consume(c, (size_t)ll + 2);
            if (ll < 0)
                return 0;
            cli_consume(c, 2);
            return 1;
        }
        while (size > 0) {
            if (!cli_need(c, 1, err))
                return 0;
            size_t take = c->len < size ? c->len : size;
            if (sink != NULL)
                sink(c->buf, take, arg);
            else if (r->body_len + take < sizeof(r->body))
                memcpy(r->body + r->body_len, c->buf, take);
            r->body_len += take;
            cli_consume(c, take);
            size -= take;
        }
        if (!cli_need(c, 2, err))
            return 0;
        if (memcmp(c->buf, "\r\n", 2) != 0) {
            errno = EPROTO;
            return -1;
        }
        cli_consume(c, 2);
    }
}

int sfx_cli_quiet(cli *c, int ms)
{
    if (c->len > 0)
        return 0;
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    return poll(&p, 1, ms) == 0;
}

size_t sfx_cli_read_eof_into(cli *c, char *out, size_t cap, int *err)
{
    size_t total = 0;
    for (;;) {
        size_t keep = c->len < cap - total ? c->len : cap - total;
        memcpy(out + total, c->buf, keep);
        total += keep;
        size_t had = c->len;
        c->len = 0;
        if (keep < had)
            total = cap; /* out is full: the rest is not kept */
        ssize_t n = sfx_cli_fill(c);
        if (n == 0) {
            *err = 0;
            return total;
        }
        if (n < 0) {
            *err = errno;
            return total;
        }
    }
}

size_t sfx_cli_read_eof(cli *c, int *err)
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

int sfx_error_body_ok(const resp *r, const char *code, char *message, size_t cap)
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

int sfx_date_ok(const char *d)
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

/* ---- loop-side helpers ---------------------------------------------------------------------- */

static void str_copy(char *dst, size_t cap, tc_str s)
{
    size_t n = s.len < cap - 1 ? s.len : cap - 1;
    if (n > 0)
        memcpy(dst, s.base, n);
    dst[n] = '\0';
}

int sfx_str_eq(tc_str s, const char *lit)
{
    return s.len == strlen(lit) && memcmp(s.base, lit, s.len) == 0;
}

int sfx_record(fixture *fx, tc_request *req)
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
    used = 0;
    tc_str name;
    for (size_t k = 0; k < tc_request_header_count(req); k++) {
        assert_true(tc_request_header_at(req, k, &name, &v));
        int n = snprintf(s->all + used, sizeof(s->all) - used, "%.*s=%.*s|", (int)name.len,
                         name.base, (int)v.len, v.base);
        assert_true(n > 0 && (size_t)n < sizeof(s->all) - used);
        used += (size_t)n;
    }
    assert_false(tc_request_header_at(req, tc_request_header_count(req), &name, &v));
    assert_int_equal(tc_request_aborted(req), 0);
    assert_ptr_equal(tc_request_loop(req), &fx->loop);
    assert_ptr_equal(tc_request_server(req), fx->srv);
    return i;
}

/* Runs fn(fx, arg) after ms on the loop, from a timer that closes itself. */
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

void sfx_later(fixture *fx, uint64_t ms, later_fn fn, void *arg)
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

void sfx_handler_echo(tc_request *req, void *data)
{
    fixture *fx = data;
    int i = sfx_record(fx, req);
    tc_str body = tc_request_body(req);
    tc_str target = tc_request_target(req);
    if (sfx_str_eq(tc_request_path(req), "/echo"))
        fx->respond_ret[i] =
            tc_request_respond(req, 200, "text/plain", NULL, 0, body.base, body.len);
    else
        fx->respond_ret[i] =
            tc_request_respond(req, 200, "text/plain", NULL, 0, target.base, target.len);
}

void sfx_handler_noop(tc_request *req, void *data)
{
    (void)data;
    tc_request_respond(req, 200, NULL, NULL, 0, NULL, 0);
}

void sfx_on_closed_count(tc_server *srv, void *data)
{
    (void)srv;
    (*(int *)data)++;
}

int sfx_run_tests(const struct CMUnitTest *tests, size_t n)
{
    signal(SIGPIPE, SIG_IGN);
    const char *filter = getenv("TC_TEST_FILTER");
    if (filter != NULL)
        cmocka_set_test_filter(filter);
    /* what cmocka_run_group_tests expands to, for an array passed by pointer */
    return _cmocka_run_group_tests("tests", tests, n, NULL, NULL);
}
