/*
 * Unit tests for hedging across replicas (src/policy/hedge.c with a replica set) and for one
 * call through a set (src/policy/replica_call.c), on a real loop against small raw HTTP/1.1
 * servers, one per replica, each with its own behaviour (delay, status, holding, killing a
 * reused connection unanswered):
 * - every attempt of a request goes to a replica it has not tried while one is left; the result
 *   names each attempt's replica, matching the server that saw that X-Tailcut-Attempt;
 * - each attempt's end is reported to the set once, cancellation and deadline included;
 * - failures eject (503 is a failure, 404 is not), an empty set and a failing prepare hook;
 * - a stale pooled connection is the attempt's reset, never re-sent; a call re-sends it once to
 *   another replica, or to the same one on a fresh connection when it is the only one.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <cmocka.h>

#include <uv.h>

#include "tailcut/hedge.h"
#include "tailcut/replica.h"

/* ---- the raw test server -------------------------------------------------------------------- */

#define RS_MAX_SEEN 64
#define RS_MAX_CONNS 64

typedef struct rsrv rsrv;

typedef struct rconn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    rsrv *s;
    int handles;
    int closing;
    int waiting; /* a request is being answered (or held); the next one waits */
    int served;  /* requests read on this connection */
    size_t len;
    char buf[8192];
} rconn;

struct rsrv {
    uv_tcp_t listener;
    uv_loop_t *loop;
    int port;
    char name[16];
    /* behaviour */
    uint64_t delay_ms;
    int status;
    int die_on_reuse; /* a second request on a connection: closed unanswered */
    /* what it saw */
    int requests, conns, peer_closed;
    unsigned seen[RS_MAX_SEEN]; /* X-Tailcut-Attempt values, in arrival order */
    int nseen;
    char last_host[128];
    rconn *conn[RS_MAX_CONNS];
    int open; /* handles open */
};

static void rs_handle_closed(uv_handle_t *h)
{
    rconn *c = h->data;
    c->s->open--;
    if (--c->handles == 0)
        free(c);
}

static void rs_close(rconn *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    for (int i = 0; i < RS_MAX_CONNS; i++)
        if (c->s->conn[i] == c)
            c->s->conn[i] = NULL;
    uv_close((uv_handle_t *)&c->tcp, rs_handle_closed);
    uv_close((uv_handle_t *)&c->timer, rs_handle_closed);
}

static void rs_written(uv_write_t *w, int status)
{
    (void)status;
    free(w);
}

static void rs_process(rconn *c);

static void rs_answer(uv_timer_t *t)
{
    rconn *c = t->data;
    char body[64], out[256];
    if (c->s->status == 299) /* invalid JSON under a 200 */
        snprintf(body, sizeof(body), "{\"name\":");
    else
        snprintf(body, sizeof(body), "{\"name\":\"%s\"}", c->s->name);
    int n = snprintf(out, sizeof(out), "HTTP/1.1 %d X\r\nContent-Length: %zu\r\n\r\n%s",
                     c->s->status == 299 ? 200 : c->s->status, strlen(body), body);
    uv_write_t *w = malloc(sizeof(*w));
    assert_non_null(w);
    uv_buf_t b = uv_buf_init(out, (unsigned)n);
    assert_int_equal(uv_write(w, (uv_stream_t *)&c->tcp, &b, 1, rs_written), 0);
    c->waiting = 0;
    rs_process(c);
}

static const char *rs_header(const char *head, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = strstr(head, "\r\n"); p != NULL; p = strstr(p + 2, "\r\n"))
        if (strncasecmp(p + 2, name, n) == 0 && p[2 + n] == ':')
            return p + 3 + n;
    return NULL;
}

static void rs_process(rconn *c)
{
    while (!c->waiting && !c->closing) {
        char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
        if (end == NULL)
            return;
        *end = '\0';
        size_t used = (size_t)(end - c->buf) + 4;
        const char *cl = rs_header(c->buf, "content-length");
        if (cl != NULL)
            used += (size_t)strtoul(cl, NULL, 10);
        rsrv *s = c->s;
        s->requests++;
        c->served++;
        const char *att = rs_header(c->buf, "x-tailcut-attempt");
        if (att != NULL && s->nseen < RS_MAX_SEEN)
            s->seen[s->nseen++] = (unsigned)strtoul(att, NULL, 10);
        const char *host = rs_header(c->buf, "host");
        if (host != NULL)
            sscanf(host, " %127[^\r\n]", s->last_host);
        int hold = strstr(c->buf, " /hold") != NULL;
        assert_true(used <= c->len);
        memmove(c->buf, c->buf + used, c->len - used);
        c->len -= used;
        if (s->die_on_reuse && c->served > 1) {
            rs_close(c); /* as a server that timed the idle connection out just now */
            return;
        }
        c->waiting = 1;
        if (!hold)
            uv_timer_start(&c->timer, rs_answer, s->delay_ms, 0);
    }
}

static void rs_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    rconn *c = h->data;
    (void)suggested;
    *b = uv_buf_init(c->buf + c->len, (unsigned)(sizeof(c->buf) - c->len));
}

static void rs_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b)
{
    rconn *c = st->data;
    (void)b;
    if (nread < 0) {
        c->s->peer_closed++;
        rs_close(c);
        return;
    }
    c->len += (size_t)nread;
    rs_process(c);
}

static void rs_on_connection(uv_stream_t *l, int status)
{
    rsrv *s = l->data;
    assert_int_equal(status, 0);
    rconn *c = calloc(1, sizeof(*c));
    assert_non_null(c);
    c->s = s;
    assert_int_equal(uv_tcp_init(s->loop, &c->tcp), 0);
    assert_int_equal(uv_timer_init(s->loop, &c->timer), 0);
    c->tcp.data = c->timer.data = c;
    c->handles = 2;
    s->open += 2;
    assert_int_equal(uv_accept(l, (uv_stream_t *)&c->tcp), 0);
    s->conns++;
    for (int i = 0; i < RS_MAX_CONNS; i++)
        if (s->conn[i] == NULL) {
            s->conn[i] = c;
            break;
        }
    assert_int_equal(uv_read_start((uv_stream_t *)&c->tcp, rs_alloc, rs_read), 0);
}

static void rs_listener_closed(uv_handle_t *h)
{
    ((rsrv *)h->data)->open--;
}

static void rs_start(rsrv *s, uv_loop_t *loop, const char *name, uint64_t delay_ms, int status)
{
    memset(s, 0, sizeof(*s));
    s->loop = loop;
    snprintf(s->name, sizeof(s->name), "%s", name);
    s->delay_ms = delay_ms;
    s->status = status;
    assert_int_equal(uv_tcp_init(loop, &s->listener), 0);
    s->listener.data = s;
    s->open = 1;
    struct sockaddr_in a;
    assert_int_equal(uv_ip4_addr("127.0.0.1", 0, &a), 0);
    assert_int_equal(uv_tcp_bind(&s->listener, (const struct sockaddr *)&a, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&s->listener, 128, rs_on_connection), 0);
    struct sockaddr_in got;
    int len = sizeof(got);
    assert_int_equal(uv_tcp_getsockname(&s->listener, (struct sockaddr *)&got, &len), 0);
    s->port = ntohs(got.sin_port);
}

static void rs_stop(rsrv *s)
{
    uv_close((uv_handle_t *)&s->listener, rs_listener_closed);
    for (int i = 0; i < RS_MAX_CONNS; i++)
        if (s->conn[i] != NULL)
            rs_close(s->conn[i]);
}

/* ---- the test context: replicas, a set, a client -------------------------------------------- */

#define MAX_REPLICAS 4

typedef struct replica_data {
    rsrv srv;
    unsigned id;
    char url[96];
} replica_data;

typedef struct ctx {
    uv_loop_t loop;
    tc_client *client;
    tc_replica_set *set;
    replica_data rep[MAX_REPLICAS];
    int nrep;
    int prepare_err; /* what the prepare hook returns */
    int prepared;    /* calls of the hook */
} ctx;

static ctx *ctx_new(unsigned eject_failures)
{
    ctx *c = calloc(1, sizeof(*c));
    assert_non_null(c);
    assert_int_equal(uv_loop_init(&c->loop), 0);
    tc_client_config cc;
    tc_client_config_init(&cc);
    cc.engine = TC_CLIENT_ENGINE_NATIVE;
    assert_int_equal(tc_client_new(&c->client, &c->loop, &cc), 0);
    tc_replica_config rc;
    tc_replica_config_init(&rc);
    rc.eject_failures = eject_failures;
    rc.max_ejected_pct = 50;
    rc.seed = 42;
    assert_int_equal(tc_replica_set_new(&c->set, &rc), 0);
    return c;
}

/* A replica: its server, and its URL through the name svc.test (never resolved: the hook sets
 * connect_to, so the Host header says svc.test whichever replica answers). */
static replica_data *ctx_add(ctx *c, const char *name, uint64_t delay_ms, int status)
{
    replica_data *r = &c->rep[c->nrep++];
    rs_start(&r->srv, &c->loop, name, delay_ms, status);
    snprintf(r->url, sizeof(r->url), "http://svc.test:%d/api/work", r->srv.port);
    assert_int_equal(tc_replica_add(c->set, name, r, &r->id), 0);
    return r;
}

static int prepare(void *data, unsigned replica_id, void *replica_data_, tc_client_request *req)
{
    ctx *c = data;
    replica_data *r = replica_data_;
    assert_int_equal(r->id, replica_id);
    c->prepared++;
    if (c->prepare_err != 0)
        return c->prepare_err;
    req->url = r->url;
    req->connect_to = "127.0.0.1";
    return 0;
}

static replica_data *replica_of(ctx *c, int id)
{
    for (int i = 0; i < c->nrep; i++)
        if ((int)c->rep[i].id == id)
            return &c->rep[i];
    fail_msg("no replica %d", id);
    return NULL;
}

static void ctx_free(ctx *c)
{
    tc_replica_totals tot;
    (void)tc_replica_snapshot(c->set, 0, NULL, 0, &tot);
    assert_int_equal(tot.in_flight, 0); /* every choice was reported */
    tc_client_close(c->client, NULL, NULL);
    for (int i = 0; i < c->nrep; i++)
        rs_stop(&c->rep[i].srv);
    uv_run(&c->loop, UV_RUN_DEFAULT);
    for (int i = 0; i < c->nrep; i++)
        assert_int_equal(c->rep[i].srv.open, 0);
    assert_int_equal(uv_loop_close(&c->loop), 0);
    tc_replica_set_free(c->set);
    free(c);
}

static tc_replica_info info_of(ctx *c, unsigned id)
{
    tc_replica_info info[MAX_REPLICAS];
    size_t n = tc_replica_snapshot(c->set, 0, info, MAX_REPLICAS, NULL);
    for (size_t i = 0; i < n; i++)
        if (info[i].id == id)
            return info[i];
    fail_msg("replica %u not in the set", id);
    return info[0];
}

static uint64_t reports(const tc_replica_info *in)
{
    uint64_t n = 0;
    for (int k = 0; k < TC_REPLICA_RESULT_COUNT; k++)
        n += in->attempts[k];
    return n;
}

static void run_until_done(ctx *c, tc_future *f)
{
    for (int i = 0; i < 100000 && !tc_future_done(f); i++)
        uv_run(&c->loop, UV_RUN_ONCE);
    assert_true(tc_future_done(f));
}

static void run_for(ctx *c, uint64_t ms)
{
    uint64_t start = uv_hrtime();
    while ((uv_hrtime() - start) / 1000000 < ms)
        uv_run(&c->loop, UV_RUN_NOWAIT);
}

static tc_hedge_policy policy(ctx *c, tc_hedge_mode mode, unsigned initial, unsigned extra,
                              uint64_t delay_ms)
{
    tc_hedge_policy p;
    tc_hedge_policy_init(&p);
    p.mode = mode;
    p.initial = initial;
    p.extra = extra;
    p.hedge_delay_ms = delay_ms;
    p.replicas = c->set;
    p.prepare = prepare;
    p.prepare_data = c;
    uv_update_time(&c->loop);
    p.deadline_ms = uv_now(&c->loop) + 10000;
    return p;
}

/* Starts a hedge (the request's own URL is never used: the hook sets each attempt's). */
static tc_future *hedge(ctx *c, const tc_hedge_policy *p)
{
    tc_client_request req = {.url = "http://unused.test/"};
    tc_future *f = NULL;
    assert_int_equal(tc_hedge_start(&f, c->client, &req, p), 0);
    return f;
}

/* Each attempt i went to the replica the result names: that server saw X-Tailcut-Attempt i+1. */
static void check_attempts_match_servers(ctx *c, const tc_hedge_result *res)
{
    for (unsigned i = 0; i < res->nattempts; i++) {
        assert_true(res->attempts[i].replica >= 0);
        rsrv *s = &replica_of(c, res->attempts[i].replica)->srv;
        int found = 0;
        for (int k = 0; k < s->nseen; k++)
            found |= s->seen[k] == i + 1;
        if (!found)
            fail_msg("attempt %u: replica %s never saw it", i + 1, s->name);
    }
}

/* ---- the hedge with a replica set ----------------------------------------------------------- */

/* Three attempts at once (/api/first): one to each replica; the winner's replica is the
 * result's; the two others are cancelled and reported so. */
static void test_fan_out_one_per_replica(void **state)
{
    (void)state;
    ctx *c = ctx_new(5);
    ctx_add(c, "a", 50, 200);
    ctx_add(c, "b", 50, 200);
    ctx_add(c, "c", 50, 200);
    tc_hedge_policy p = policy(c, TC_HEDGE_FIRST, 3, 0, 300);
    tc_future *f = hedge(c, &p);
    run_until_done(c, f);
    const tc_hedge_result *res = tc_future_value(f);
    assert_int_equal(res->error, 0);
    assert_int_equal(res->nattempts, 3);
    for (int i = 0; i < 3; i++)
        assert_int_equal(c->rep[i].srv.requests, 1);
    assert_true(res->attempts[0].replica != res->attempts[1].replica);
    assert_true(res->attempts[1].replica != res->attempts[2].replica);
    assert_true(res->attempts[0].replica != res->attempts[2].replica);
    check_attempts_match_servers(c, res);
    for (int i = 0; i < 3; i++) {
        char host[64];
        snprintf(host, sizeof(host), "svc.test:%d", c->rep[i].srv.port);
        assert_string_equal(c->rep[i].srv.last_host, host); /* the URL's, not the address */
    }
    assert_true(res->winner >= 0);
    assert_int_equal(tc_hedge_result_replica(res), res->attempts[res->winner].replica);
    uint64_t success = 0, cancelled = 0;
    for (int i = 0; i < 3; i++) {
        tc_replica_info in = info_of(c, c->rep[i].id);
        assert_int_equal(reports(&in), 1);
        assert_int_equal(in.in_flight, 0);
        success += in.attempts[TC_REPLICA_SUCCESS];
        cancelled += in.attempts[TC_REPLICA_CANCELLED];
    }
    assert_int_equal(success, 1);
    assert_int_equal(cancelled, 2);
    tc_future_unref(f);
    ctx_free(c);
}

/* The seed policy against slow replicas: after the delay, the two extras go to the two replicas
 * the first attempt did not use, hedge after hedge; with more attempts than replicas, the later
 * ones reuse tried replicas only once none is left. */
static void test_extras_go_to_untried_replicas(void **state)
{
    (void)state;
    ctx *c = ctx_new(5);
    ctx_add(c, "a", 120, 200);
    ctx_add(c, "b", 120, 200);
    ctx_add(c, "c", 120, 200);
    for (int round = 0; round < 8; round++) {
        tc_hedge_policy p = policy(c, TC_HEDGE_FIRST, 1, 2, 20);
        tc_future *f = hedge(c, &p);
        run_until_done(c, f);
        const tc_hedge_result *res = tc_future_value(f);
        assert_int_equal(res->nattempts, 3);
        assert_true(res->attempts[1].hedged && res->attempts[2].hedged);
        int seen[MAX_REPLICAS] = {0};
        for (unsigned i = 0; i < 3; i++)
            assert_int_equal(seen[res->attempts[i].replica]++, 0);
        check_attempts_match_servers(c, res);
        tc_future_unref(f);
        for (int i = 0; i < 3; i++)
            c->rep[i].srv.nseen = 0;
    }
    /* Five attempts at once over three replicas: three distinct first, then tried ones. */
    tc_hedge_policy p = policy(c, TC_HEDGE_ALL, 5, 0, 20);
    tc_future *f = hedge(c, &p);
    run_until_done(c, f);
    const tc_hedge_result *res = tc_future_value(f);
    assert_int_equal(res->nsuccesses, 5);
    int seen[MAX_REPLICAS] = {0};
    for (unsigned i = 0; i < 3; i++)
        assert_int_equal(seen[res->attempts[i].replica]++, 0);
    assert_int_equal(tc_hedge_result_replica(res), res->attempts[res->successes[0]].replica);
    tc_future_unref(f);
    ctx_free(c);
}

/* The caller cancels the hedge, or its deadline passes: every attempt still running is
 * cancelled and reported once, as cancelled. */
static void test_cancel_and_deadline_reported_once(void **state)
{
    (void)state;
    ctx *c = ctx_new(5);
    ctx_add(c, "a", 5000, 200);
    ctx_add(c, "b", 5000, 200);
    tc_hedge_policy p = policy(c, TC_HEDGE_FIRST, 2, 0, 300);
    tc_future *f = hedge(c, &p);
    run_for(c, 50);
    tc_replica_totals tot;
    (void)tc_replica_snapshot(c->set, 0, NULL, 0, &tot);
    assert_int_equal(tot.in_flight, 2);
    assert_int_equal(tc_future_cancel(f), 1);
    (void)tc_replica_snapshot(c->set, 0, NULL, 0, &tot);
    assert_int_equal(tot.in_flight, 0);
    tc_future_unref(f);
    for (int i = 0; i < 2; i++)
        assert_int_equal(info_of(c, c->rep[i].id).attempts[TC_REPLICA_CANCELLED], 1);

    p = policy(c, TC_HEDGE_FIRST, 1, 1, 30);
    uv_update_time(&c->loop);
    p.deadline_ms = uv_now(&c->loop) + 100;
    f = hedge(c, &p);
    run_until_done(c, f);
    const tc_hedge_result *res = tc_future_value(f);
    assert_int_equal(res->error, TC_ETIMEDOUT);
    assert_int_equal(res->nattempts, 2);
    assert_int_equal(tc_hedge_result_replica(res), -1);
    (void)tc_replica_snapshot(c->set, 0, NULL, 0, &tot);
    assert_int_equal(tot.in_flight, 0);
    for (int i = 0; i < 2; i++)
        assert_int_equal(info_of(c, c->rep[i].id).attempts[TC_REPLICA_CANCELLED], 2);
    tc_future_unref(f);
    ctx_free(c);
}

/* 503 is a failure and ejects after two in a row; 404 is the client's doing and never does;
 * once ejected, a replica gets no attempt. */
static void test_failures_eject_the_failing_replica(void **state)
{
    (void)state;
    ctx *c = ctx_new(2);
    /* bad answers first whenever it is tried, so each try is a failure, never a cancellation */
    replica_data *bad = ctx_add(c, "bad", 0, 503);
    replica_data *notfound = ctx_add(c, "notfound", 20, 404);
    replica_data *good = ctx_add(c, "good", 20, 200);
    replica_data *good2 = ctx_add(c, "good2", 20, 200);
    int bad_after = 0;
    for (int round = 0; round < 30; round++) {
        int ejected = info_of(c, bad->id).state == TC_REPLICA_EJECTED;
        tc_hedge_policy p = policy(c, TC_HEDGE_FIRST, 1, 3, 1000); /* extras on failure */
        tc_future *f = hedge(c, &p);
        run_until_done(c, f);
        const tc_hedge_result *res = tc_future_value(f);
        for (unsigned i = 0; i < res->nattempts; i++) {
            if (res->attempts[i].replica == (int)bad->id) {
                /* answered 503, or cancelled when another replica answered first */
                assert_true(res->attempts[i].outcome == TC_OUTCOME_HTTP_STATUS ||
                            res->attempts[i].outcome == TC_OUTCOME_CANCELLED);
                bad_after += ejected;
            }
        }
        tc_future_unref(f);
    }
    assert_int_equal(bad_after, 0);
    tc_replica_info in = info_of(c, bad->id);
    assert_int_equal(in.state, TC_REPLICA_EJECTED);
    assert_int_equal(in.ejections[TC_REPLICA_REASON_FAILURES], 1);
    assert_int_equal(in.attempts[TC_REPLICA_FAILURE], 2);
    in = info_of(c, notfound->id);
    assert_int_equal(in.state, TC_REPLICA_AVAILABLE);
    assert_int_equal(in.attempts[TC_REPLICA_FAILURE], 0);
    assert_true(in.attempts[TC_REPLICA_SUCCESS] > 0);
    assert_int_equal(info_of(c, good->id).state, TC_REPLICA_AVAILABLE);
    assert_int_equal(info_of(c, good2->id).state, TC_REPLICA_AVAILABLE);
    ctx_free(c);
}

/* An empty set fails each attempt as a connect error; a failing prepare hook fails it unsent
 * (reported not_sent). Either way nothing stays in flight. */
static void test_empty_set_and_prepare_error(void **state)
{
    (void)state;
    ctx *c = ctx_new(5);
    tc_hedge_policy p = policy(c, TC_HEDGE_FIRST, 1, 2, 1000);
    tc_future *f = hedge(c, &p);
    run_until_done(c, f);
    const tc_hedge_result *res = tc_future_value(f);
    assert_int_equal(res->error, TC_EALLFAILED);
    assert_int_equal(res->nattempts, 3);
    for (unsigned i = 0; i < 3; i++) {
        assert_int_equal(res->attempts[i].outcome, TC_OUTCOME_CONNECT_ERROR);
        assert_int_equal(res->attempts[i].replica, -1);
    }
    assert_int_equal(c->prepared, 0);
    tc_future_unref(f);

    replica_data *a = ctx_add(c, "a", 1, 200);
    c->prepare_err = TC_ENOMEM;
    p = policy(c, TC_HEDGE_FIRST, 1, 2, 1000);
    f = hedge(c, &p);
    run_until_done(c, f);
    res = tc_future_value(f);
    assert_int_equal(res->error, TC_EALLFAILED);
    assert_int_equal(res->nattempts, 3);
    for (unsigned i = 0; i < 3; i++) {
        assert_int_equal(res->attempts[i].outcome, TC_OUTCOME_OTHER);
        assert_int_equal(res->attempts[i].replica, (int)a->id);
    }
    assert_int_equal(c->prepared, 3);
    assert_int_equal(a->srv.requests, 0);
    tc_replica_info in = info_of(c, a->id);
    assert_int_equal(in.attempts[TC_REPLICA_NOT_SENT], 3);
    assert_int_equal(in.has_average, 0); /* no sample */
    tc_future_unref(f);
    ctx_free(c);
}

/* A stale pooled connection under an attempt: a reset outcome (TC_ESTALE underneath), reported
 * as a failure, and never sent again by the client. */
static void test_stale_attempt_is_a_reset(void **state)
{
    (void)state;
    ctx *c = ctx_new(5);
    replica_data *a = ctx_add(c, "a", 1, 200);
    a->srv.die_on_reuse = 1;
    for (int round = 0; round < 2; round++) {
        tc_hedge_policy p = policy(c, TC_HEDGE_FIRST, 1, 0, 1000);
        tc_future *f = hedge(c, &p);
        run_until_done(c, f);
        const tc_hedge_result *res = tc_future_value(f);
        if (round == 0) {
            assert_int_equal(res->error, 0);
        } else {
            assert_int_equal(res->error, TC_EALLFAILED);
            assert_int_equal(res->attempts[0].outcome, TC_OUTCOME_RESET);
        }
        tc_future_unref(f);
    }
    run_for(c, 50);
    assert_int_equal(a->srv.requests, 2); /* the second, once */
    tc_replica_info in = info_of(c, a->id);
    assert_int_equal(in.attempts[TC_REPLICA_SUCCESS], 1);
    assert_int_equal(in.attempts[TC_REPLICA_FAILURE], 1);
    ctx_free(c);
}

/* ---- one call through a set ----------------------------------------------------------------- */

static tc_future *call(ctx *c, const char *method, tc_replica_call *how)
{
    tc_replica_call dflt = {.set = c->set, .prepare = prepare, .prepare_data = c};
    tc_client_request req = {.url = "http://unused.test/", .method = method};
    tc_future *f = NULL;
    assert_int_equal(tc_replica_request_start(&f, c->client, &req, how ? how : &dflt), 0);
    return f;
}

static void expect_answer_from(ctx *c, tc_future *f, const char *name)
{
    run_until_done(c, f);
    if (tc_future_state_of(f) != TC_FUTURE_FULFILLED)
        fail_msg("expected an answer from %s, got %s: %s", name, tc_err_name(tc_future_error(f)),
                 tc_future_message(f));
    const tc_response *r = tc_future_value(f);
    char want[64];
    snprintf(want, sizeof(want), "{\"name\":\"%s\"}", name);
    assert_string_equal(r->body, want);
}

/* Makes `fast` the set's clear favourite: reports that give it a 1 ms average and `slow` 1 s. */
static void favour(ctx *c, replica_data *fast, replica_data *slow)
{
    while (!info_of(c, fast->id).has_average || !info_of(c, slow->id).has_average) {
        tc_replica_choice ch;
        assert_int_equal(tc_replica_choose_first(c->set, 0, &ch), 0);
        uint64_t us = ch.id == fast->id ? 1000 : 1000000;
        assert_int_equal(tc_replica_done(c->set, ch.id, TC_REPLICA_SUCCESS, us, 0), 0);
    }
}

/* The first send goes to the favourite; its pooled connection then dies unanswered: the call
 * goes once more, to the other replica, and answers from there. */
static void test_call_stale_goes_to_another_replica(void **state)
{
    (void)state;
    ctx *c = ctx_new(5);
    replica_data *x = ctx_add(c, "x", 1, 200);
    replica_data *y = ctx_add(c, "y", 1, 200);
    x->srv.die_on_reuse = 1;
    favour(c, x, y);
    tc_future *f = call(c, NULL, NULL);
    expect_answer_from(c, f, "x");
    tc_future_unref(f);
    f = call(c, NULL, NULL);
    expect_answer_from(c, f, "y");
    tc_future_unref(f);
    assert_int_equal(x->srv.requests, 2); /* the second one, killed, once */
    assert_int_equal(y->srv.requests, 1);
    tc_client_stats st;
    tc_client_get_stats(c->client, &st);
    assert_int_equal(st.stale_retries, 0);
    tc_replica_info in = info_of(c, x->id);
    assert_int_equal(in.attempts[TC_REPLICA_FAILURE], 1);
    ctx_free(c);
}

/* One replica: the second send goes to it again, on a fresh connection. A POST is never sent
 * twice: it fails as stale. */
static void test_call_stale_single_replica_and_post(void **state)
{
    (void)state;
    ctx *c = ctx_new(5);
    replica_data *x = ctx_add(c, "x", 1, 200);
    x->srv.die_on_reuse = 1;
    tc_future *f = call(c, NULL, NULL);
    expect_answer_from(c, f, "x");
    tc_future_unref(f);
    f = call(c, "GET", NULL);
    expect_answer_from(c, f, "x");
    tc_future_unref(f);
    assert_int_equal(x->srv.requests, 3);
    assert_int_equal(x->srv.conns, 2);
    f = call(c, "POST", NULL);
    run_until_done(c, f);
    assert_int_equal(tc_future_error(f), TC_ESTALE);
    tc_future_unref(f);
    run_for(c, 50);
    assert_int_equal(x->srv.requests, 4);
    tc_replica_info in = info_of(c, x->id);
    assert_int_equal(in.attempts[TC_REPLICA_SUCCESS], 2);
    assert_int_equal(in.attempts[TC_REPLICA_FAILURE], 2);
    ctx_free(c);
}

/* An empty set rejects the call; cancelling it cancels (and reports) its send; an answer the
 * classifier refuses still answers the call but counts as a failure. */
static void test_call_empty_cancel_and_classify(void **state)
{
    (void)state;
    ctx *c = ctx_new(5);
    tc_future *f = call(c, NULL, NULL);
    assert_true(tc_future_done(f));
    assert_int_equal(tc_future_error(f), TC_ECONNREFUSED);
    assert_non_null(strstr(tc_future_message(f), "no replica"));
    tc_future_unref(f);

    replica_data *h = ctx_add(c, "h", 1, 200);
    snprintf(h->url, sizeof(h->url), "http://svc.test:%d/hold", h->srv.port); /* no answer */
    f = call(c, NULL, NULL);
    run_for(c, 50);
    assert_int_equal(info_of(c, h->id).in_flight, 1);
    assert_int_equal(tc_future_cancel(f), 1);
    tc_future_unref(f);
    tc_replica_info in = info_of(c, h->id);
    assert_int_equal(in.in_flight, 0);
    assert_int_equal(in.attempts[TC_REPLICA_CANCELLED], 1);

    h->srv.status = 299; /* 200 with a body that is not JSON */
    snprintf(h->url, sizeof(h->url), "http://svc.test:%d/api/work", h->srv.port);
    f = call(c, NULL, NULL);
    run_until_done(c, f);
    assert_int_equal(tc_future_state_of(f), TC_FUTURE_FULFILLED);
    assert_int_equal(((const tc_response *)tc_future_value(f))->status, 200);
    tc_future_unref(f);
    in = info_of(c, h->id);
    assert_int_equal(in.attempts[TC_REPLICA_FAILURE], 1);
    ctx_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fan_out_one_per_replica),
        cmocka_unit_test(test_extras_go_to_untried_replicas),
        cmocka_unit_test(test_cancel_and_deadline_reported_once),
        cmocka_unit_test(test_failures_eject_the_failing_replica),
        cmocka_unit_test(test_empty_set_and_prepare_error),
        cmocka_unit_test(test_stale_attempt_is_a_reset),
        cmocka_unit_test(test_call_stale_goes_to_another_replica),
        cmocka_unit_test(test_call_stale_single_replica_and_post),
        cmocka_unit_test(test_call_empty_cancel_and_classify),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
