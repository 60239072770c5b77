/*
 * Unit tests for the hedge's head mode (src/policy/hedge.c, policy.at_head: the transparent
 * proxy's), on a real loop against a small raw HTTP/1.1 upstream scripted per attempt number
 * (X-Tailcut-Attempt): when its head goes, with which status, and when its body follows.
 * - the winner is decided at its head: the hedge ends before the upstream has sent any body, and
 *   the winner's body is then read through the response (tc_response_read_body);
 * - a head whose status is a failure status fails the attempt: the hedge fires its extra at once
 *   and, when every attempt failed, keeps the last failed one (body unread) for the caller while
 *   the earlier failed one's connection is closed;
 * - a winner's head cancels the attempts still waiting (their connections closed) and ends the
 *   kept failed transfer; a status outside the list wins even when it is 4xx or 5xx;
 * - with a replica set, a failure status is a FAILURE for the set whatever its class (404), and a
 *   500 outside the list a SUCCESS; the winner's latency is its time to head.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cmocka.h>
#include <uv.h>

#include "tailcut/hedge.h"
#include "tailcut/replica.h"

/* ---- the scripted upstream ------------------------------------------------------------------ */

#define UP_MAX_CONNS 16
#define UP_MAX_ATTEMPTS 8

typedef struct up_step {
    uint64_t head_ms; /* when the head goes, after the request */
    int status;
    const char *body;
    int64_t body_ms; /* when the body follows the head; -1: never (held) */
} up_step;

typedef struct upstream upstream;

typedef struct up_conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    upstream *up;
    int handles, closing;
    unsigned attempt; /* X-Tailcut-Attempt of its request, 0 before it came */
    int head_sent;
    size_t len;
    char buf[4096];
} up_conn;

struct upstream {
    uv_tcp_t listener;
    uv_loop_t *loop;
    int port, open;
    up_step steps[UP_MAX_ATTEMPTS + 1]; /* by attempt number */
    int body_sent[UP_MAX_ATTEMPTS + 1];
    int closed_by_peer[UP_MAX_ATTEMPTS + 1]; /* the client closed that attempt's connection */
    up_conn *conn[UP_MAX_CONNS];
};

static void up_handle_closed(uv_handle_t *h)
{
    up_conn *c = h->data;
    c->up->open--;
    if (--c->handles == 0)
        free(c);
}

static void up_close(up_conn *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    for (int i = 0; i < UP_MAX_CONNS; i++)
        if (c->up->conn[i] == c)
            c->up->conn[i] = NULL;
    uv_close((uv_handle_t *)&c->tcp, up_handle_closed);
    uv_close((uv_handle_t *)&c->timer, up_handle_closed);
}

static void up_written(uv_write_t *w, int status)
{
    (void)status;
    free(w);
}

static void up_write(up_conn *c, const char *data, size_t len)
{
    uv_write_t *w = malloc(sizeof(*w) + len);
    assert_non_null(w);
    memcpy(w + 1, data, len);
    uv_buf_t b = uv_buf_init((char *)(w + 1), (unsigned)len);
    assert_int_equal(uv_write(w, (uv_stream_t *)&c->tcp, &b, 1, up_written), 0);
}

static void up_send(uv_timer_t *t)
{
    up_conn *c = t->data;
    const up_step *st = &c->up->steps[c->attempt];
    if (!c->head_sent) {
        char head[256];
        int n = snprintf(head, sizeof(head), "HTTP/1.1 %d X\r\nContent-Length: %zu\r\n\r\n",
                         st->status, strlen(st->body));
        up_write(c, head, (size_t)n);
        c->head_sent = 1;
        if (st->body_ms >= 0)
            uv_timer_start(&c->timer, up_send, (uint64_t)st->body_ms, 0);
        return;
    }
    up_write(c, st->body, strlen(st->body));
    c->up->body_sent[c->attempt] = 1;
}

static void up_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    up_conn *c = h->data;
    (void)suggested;
    *b = uv_buf_init(c->buf + c->len, (unsigned)(sizeof(c->buf) - c->len - 1));
}

static void up_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    up_conn *c = s->data;
    (void)b;
    if (nread < 0) {
        c->up->closed_by_peer[c->attempt]++;
        up_close(c);
        return;
    }
    c->len += (size_t)nread;
    c->buf[c->len] = '\0';
    if (c->attempt != 0 || strstr(c->buf, "\r\n\r\n") == NULL)
        return;
    const char *att = strcasestr(c->buf, "\r\nX-Tailcut-Attempt:");
    assert_non_null(att);
    c->attempt = (unsigned)strtoul(att + strlen("\r\nX-Tailcut-Attempt:"), NULL, 10);
    assert_true(c->attempt >= 1 && c->attempt <= UP_MAX_ATTEMPTS);
    uv_timer_start(&c->timer, up_send, c->up->steps[c->attempt].head_ms, 0);
}

static void up_on_connection(uv_stream_t *l, int status)
{
    upstream *up = l->data;
    assert_int_equal(status, 0);
    up_conn *c = calloc(1, sizeof(*c));
    assert_non_null(c);
    c->up = up;
    assert_int_equal(uv_tcp_init(up->loop, &c->tcp), 0);
    assert_int_equal(uv_timer_init(up->loop, &c->timer), 0);
    c->tcp.data = c->timer.data = c;
    c->handles = 2;
    up->open += 2;
    assert_int_equal(uv_accept(l, (uv_stream_t *)&c->tcp), 0);
    for (int i = 0; i < UP_MAX_CONNS; i++)
        if (up->conn[i] == NULL) {
            up->conn[i] = c;
            break;
        }
    assert_int_equal(uv_read_start((uv_stream_t *)&c->tcp, up_alloc, up_read), 0);
}

static void up_listener_closed(uv_handle_t *h)
{
    ((upstream *)h->data)->open--;
}

static void up_start(upstream *up, uv_loop_t *loop)
{
    up->loop = loop;
    assert_int_equal(uv_tcp_init(loop, &up->listener), 0);
    up->listener.data = up;
    up->open = 1;
    struct sockaddr_in a;
    assert_int_equal(uv_ip4_addr("127.0.0.1", 0, &a), 0);
    assert_int_equal(uv_tcp_bind(&up->listener, (const struct sockaddr *)&a, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&up->listener, 64, up_on_connection), 0);
    struct sockaddr_in got;
    int len = sizeof(got);
    assert_int_equal(uv_tcp_getsockname(&up->listener, (struct sockaddr *)&got, &len), 0);
    up->port = ntohs(got.sin_port);
}

static void up_stop(upstream *up)
{
    uv_close((uv_handle_t *)&up->listener, up_listener_closed);
    for (int i = 0; i < UP_MAX_CONNS; i++)
        if (up->conn[i] != NULL)
            up_close(up->conn[i]);
}

/* ---- the test context ----------------------------------------------------------------------- */

typedef struct ctx {
    uv_loop_t loop;
    upstream up;
    tc_client *client;
    tc_future *hedge;
    int hedge_done;
    int body_sent_at_done[UP_MAX_ATTEMPTS + 1]; /* the upstream's state when the hedge ended */
    char body[256];
    size_t body_len;
    int body_status, body_ended;
} ctx;

static const int failing[] = {429, 500, 502, 503, 504};
static const tc_hedge_statuses failure_statuses = {failing, 5};

static void on_hedge_done(tc_future *f, void *data)
{
    ctx *c = data;
    (void)f;
    c->hedge_done = 1;
    memcpy(c->body_sent_at_done, c->up.body_sent, sizeof(c->body_sent_at_done));
}

static void on_body(tc_response *resp, int status, const char *data, size_t len, void *arg)
{
    ctx *c = arg;
    (void)resp;
    if (len > 0) {
        assert_true(c->body_len + len < sizeof(c->body));
        memcpy(c->body + c->body_len, data, len);
        c->body_len += len;
        return;
    }
    c->body_status = status;
    c->body_ended = 1;
}

static ctx *ctx_new(void)
{
    ctx *c = calloc(1, sizeof(*c));
    assert_non_null(c);
    assert_int_equal(uv_loop_init(&c->loop), 0);
    up_start(&c->up, &c->loop);
    tc_client_config cc;
    tc_client_config_init(&cc);
    cc.engine = TC_CLIENT_ENGINE_NATIVE;
    assert_int_equal(tc_client_new(&c->client, &c->loop, &cc), 0);
    return c;
}

static void run_until(ctx *c, const int *flag, uint64_t max_ms)
{
    uint64_t end = uv_now(&c->loop) + max_ms;
    while (!*flag && uv_now(&c->loop) < end)
        uv_run(&c->loop, UV_RUN_ONCE);
    assert_true(*flag);
}

static void start_hedge(ctx *c, tc_hedge_policy *pol)
{
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/x", c->up.port);
    tc_client_request req = {.url = url};
    pol->at_head = 1;
    pol->judge = tc_hedge_judge_head;
    pol->judge_data = (void *)&failure_statuses;
    assert_int_equal(tc_hedge_start(&c->hedge, c->client, &req, pol), 0);
    assert_int_equal(tc_future_on_done(c->hedge, on_hedge_done, c), 0);
}

static void ctx_free(ctx *c)
{
    tc_future_unref(c->hedge);
    tc_client_close(c->client, NULL, NULL);
    up_stop(&c->up);
    uv_run(&c->loop, UV_RUN_DEFAULT);
    assert_int_equal(c->up.open, 0);
    assert_int_equal(uv_loop_close(&c->loop), 0);
    free(c);
}

/* ---- tests ---------------------------------------------------------------------------------- */

static void test_winner_at_head_body_streamed(void **state)
{
    (void)state;
    ctx *c = ctx_new();
    c->up.steps[1] = (up_step){.head_ms = 0, .status = 200, .body = "{\"a\":1}", .body_ms = 150};
    tc_hedge_policy pol;
    tc_hedge_policy_init(&pol);
    pol.extra = 1;
    pol.hedge_delay_ms = 1000;
    start_hedge(c, &pol);
    run_until(c, &c->hedge_done, 5000);
    /* decided at the head: no body byte had been sent when the hedge ended */
    assert_int_equal(c->body_sent_at_done[1], 0);
    const tc_hedge_result *r = tc_future_value(c->hedge);
    assert_int_equal(r->error, 0);
    assert_int_equal(r->winner, 0);
    assert_int_equal(r->nattempts, 1);
    assert_int_equal(r->last_failed, -1);
    assert_int_equal(r->attempts[0].outcome, TC_OUTCOME_SUCCESS);
    tc_response *resp = (tc_response *)tc_hedge_response(r, 0);
    assert_non_null(resp);
    assert_int_equal(resp->status, 200);
    assert_int_equal(resp->framing, TC_BODY_LENGTH);
    assert_int_equal(resp->body_len, 0);
    /* the body is the caller's to read, after the hedge ended */
    assert_int_equal(tc_response_read_body(resp, on_body, c), 0);
    run_until(c, &c->body_ended, 5000);
    assert_int_equal(c->body_status, 0);
    assert_int_equal(c->body_len, strlen("{\"a\":1}"));
    assert_memory_equal(c->body, "{\"a\":1}", c->body_len);
    ctx_free(c);
}

static void test_all_failed_keeps_last_head(void **state)
{
    (void)state;
    ctx *c = ctx_new();
    c->up.steps[1] = (up_step){.head_ms = 0, .status = 503, .body = "first", .body_ms = -1};
    c->up.steps[2] = (up_step){.head_ms = 0, .status = 429, .body = "second", .body_ms = 0};
    tc_hedge_policy pol;
    tc_hedge_policy_init(&pol);
    pol.extra = 1;
    pol.hedge_delay_ms = 5000; /* the failed head fires the extra at once */
    start_hedge(c, &pol);
    run_until(c, &c->hedge_done, 3000);
    const tc_hedge_result *r = tc_future_value(c->hedge);
    assert_int_equal(r->error, TC_EALLFAILED);
    assert_int_equal(r->nattempts, 2);
    assert_int_equal(r->attempts[0].outcome, TC_OUTCOME_HTTP_STATUS);
    assert_int_equal(r->attempts[1].outcome, TC_OUTCOME_HTTP_STATUS);
    assert_int_equal(r->winner, -1);
    assert_int_equal(r->last_failed, 1);
    tc_response *last = (tc_response *)tc_hedge_response(r, 1);
    assert_int_equal(last->status, 429);
    assert_int_equal(tc_response_read_body(last, on_body, c), 0);
    run_until(c, &c->body_ended, 3000);
    assert_int_equal(c->body_status, 0);
    assert_int_equal(c->body_len, 6);
    assert_memory_equal(c->body, "second", 6);
    /* the first failed transfer was ended when the second replaced it */
    run_until(c, &c->up.closed_by_peer[1], 3000);
    ctx_free(c);
}

static void test_winner_cancels_waiting_and_failed(void **state)
{
    (void)state;
    ctx *c = ctx_new();
    /* 1 fails with a head (kept for a while), 2 waits long, 3 wins with a 404 */
    c->up.steps[1] = (up_step){.head_ms = 0, .status = 500, .body = "e", .body_ms = -1};
    c->up.steps[2] = (up_step){.head_ms = 10000, .status = 200, .body = "late", .body_ms = 0};
    c->up.steps[3] = (up_step){.head_ms = 100, .status = 404, .body = "nf", .body_ms = 0};
    tc_hedge_policy pol;
    tc_hedge_policy_init(&pol);
    pol.extra = 2;
    pol.staggered = 1; /* extra k at k x 50 ms; nothing in flight fires the next at once */
    pol.hedge_delay_ms = 50;
    start_hedge(c, &pol);
    run_until(c, &c->hedge_done, 5000);
    const tc_hedge_result *r = tc_future_value(c->hedge);
    assert_int_equal(r->error, 0);
    assert_int_equal(r->nattempts, 3);
    assert_int_equal(r->winner, 2);
    assert_int_equal(tc_hedge_response(r, 2)->status, 404);
    assert_int_equal(r->last_failed, -1);
    assert_int_equal(r->attempts[0].outcome, TC_OUTCOME_HTTP_STATUS);
    assert_int_equal(r->attempts[1].outcome, TC_OUTCOME_CANCELLED);
    /* the waiting attempt and the failed one are both cut at once */
    run_until(c, &c->up.closed_by_peer[2], 3000);
    run_until(c, &c->up.closed_by_peer[1], 3000);
    assert_int_equal(c->up.closed_by_peer[3], 0);
    ctx_free(c);
}

static void test_deadline_without_head(void **state)
{
    (void)state;
    ctx *c = ctx_new();
    c->up.steps[1] = (up_step){.head_ms = 5000, .status = 200, .body = "x", .body_ms = 0};
    c->up.steps[2] = (up_step){.head_ms = 5000, .status = 200, .body = "x", .body_ms = 0};
    tc_hedge_policy pol;
    tc_hedge_policy_init(&pol);
    pol.extra = 1;
    pol.hedge_delay_ms = 20;
    pol.deadline_ms = uv_now(&c->loop) + 150;
    start_hedge(c, &pol);
    run_until(c, &c->hedge_done, 3000);
    const tc_hedge_result *r = tc_future_value(c->hedge);
    assert_int_equal(r->error, TC_ETIMEDOUT);
    assert_int_equal(r->nattempts, 2);
    assert_int_equal(r->last_failed, -1);
    run_until(c, &c->up.closed_by_peer[1], 3000);
    run_until(c, &c->up.closed_by_peer[2], 3000);
    ctx_free(c);
}

/* With a replica set: the route's failure statuses are failures for the set. */
static void test_replica_classes_follow_the_list(void **state)
{
    (void)state;
    ctx *c = ctx_new();
    c->up.steps[1] = (up_step){.head_ms = 0, .status = 404, .body = "a", .body_ms = 0};
    c->up.steps[2] = (up_step){.head_ms = 0, .status = 500, .body = "b", .body_ms = 0};
    tc_replica_config rc;
    tc_replica_config_init(&rc);
    rc.eject_failures = 1000;
    tc_replica_set *set = NULL;
    assert_int_equal(tc_replica_set_new(&set, &rc), 0);
    unsigned id;
    assert_int_equal(tc_replica_add(set, "r", NULL, &id), 0);
    /* 404 listed, 500 not: the first fails, the second wins */
    static const int only_404[] = {404};
    static const tc_hedge_statuses list = {only_404, 1};
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/x", c->up.port);
    tc_client_request req = {.url = url};
    tc_hedge_policy pol;
    tc_hedge_policy_init(&pol);
    pol.extra = 1;
    pol.hedge_delay_ms = 5000;
    pol.at_head = 1;
    pol.judge = tc_hedge_judge_head;
    pol.judge_data = (void *)&list;
    pol.replicas = set;
    assert_int_equal(tc_hedge_start(&c->hedge, c->client, &req, &pol), 0);
    assert_int_equal(tc_future_on_done(c->hedge, on_hedge_done, c), 0);
    run_until(c, &c->hedge_done, 3000);
    const tc_hedge_result *r = tc_future_value(c->hedge);
    assert_int_equal(r->error, 0);
    assert_int_equal(r->winner, 1);
    assert_int_equal(tc_hedge_response(r, 1)->status, 500);
    tc_replica_info info;
    assert_int_equal(tc_replica_snapshot(set, uv_now(&c->loop), &info, 1, NULL), 1);
    assert_int_equal(info.id, id);
    assert_int_equal(info.attempts[TC_REPLICA_FAILURE], 1);
    assert_int_equal(info.attempts[TC_REPLICA_SUCCESS], 1);
    assert_int_equal(info.in_flight, 0);
    ctx_free(c);
    tc_replica_set_free(set);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_winner_at_head_body_streamed),
        cmocka_unit_test(test_all_failed_keeps_last_head),
        cmocka_unit_test(test_winner_cancels_waiting_and_failed),
        cmocka_unit_test(test_deadline_without_head),
        cmocka_unit_test(test_replica_classes_follow_the_list),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
