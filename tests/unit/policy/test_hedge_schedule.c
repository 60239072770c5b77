/*
 * Unit tests for adaptive hedging (src/policy/hedge.c): the schedule on a real loop against a
 * tc_server whose answer depends on X-Tailcut-Attempt: staggered extras, a first attempt that
 * fails, an extra that fails, a denied extra with nothing in flight, what is recorded, and the
 * warm-up's fallback delay. Timing assertions are lower bounds (timers never fire early) with
 * generous upper bounds.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <uv.h>

#include "base/clock.h"
#include "tailcut/hedge.h"
#include "tailcut/server.h"

/* ---- the schedule, on a real loop
 * ------------------------------------------------------------------ */

/* What the test upstream does with attempt N (1-based): wait delay_ms, then answer status. */
typedef struct plan {
    uint64_t delay_ms;
    int status;
} plan;

#define MAX_SEEN 16

typedef struct upstream {
    tc_server *srv;
    plan plans[MAX_SEEN];
    unsigned seen[MAX_SEEN]; /* X-Tailcut-Attempt values in arrival order */
    uint64_t seen_ms[MAX_SEEN];
    unsigned nseen;
    unsigned aborted;
} upstream;

typedef struct held {
    uv_timer_t timer;
    tc_request *req;
    upstream *u;
    int status;
} held;

static void held_closed(uv_handle_t *h)
{
    free(h->data);
}

static void held_answer(uv_timer_t *t)
{
    held *hd = t->data;
    tc_request_on_abort(hd->req, NULL, NULL);
    if (hd->status == 200)
        tc_request_respond(hd->req, 200, "application/json", NULL, 0, "{\"ok\":1}", 8);
    else
        tc_request_respond(hd->req, hd->status, "application/json", NULL, 0, "{}", 2);
    uv_close((uv_handle_t *)&hd->timer, held_closed);
}

static void held_abort(tc_request *req, void *data)
{
    held *hd = data;
    hd->u->aborted++;
    tc_request_drop(req, 0);
    uv_timer_stop(&hd->timer);
    uv_close((uv_handle_t *)&hd->timer, held_closed);
}

static void upstream_handle(tc_request *req, void *data)
{
    upstream *u = data;
    tc_str v;
    char num[8] = {0};
    unsigned n = 0;
    if (tc_request_header(req, "X-Tailcut-Attempt", &v) == 1 && v.len < sizeof(num)) {
        memcpy(num, v.base, v.len);
        n = (unsigned)atoi(num);
    }
    if (u->nseen < MAX_SEEN) {
        u->seen_ms[u->nseen] = uv_now(tc_request_loop(req));
        u->seen[u->nseen++] = n;
    }
    plan p = n >= 1 && n <= MAX_SEEN ? u->plans[n - 1] : (plan){0, 400};
    held *hd = calloc(1, sizeof(*hd));
    assert_non_null(hd);
    hd->req = req;
    hd->u = u;
    hd->status = p.status;
    uv_timer_init(tc_request_loop(req), &hd->timer);
    hd->timer.data = hd;
    tc_request_on_abort(req, held_abort, hd);
    uv_timer_start(&hd->timer, held_answer, p.delay_ms, 0);
}

typedef struct ctx {
    uv_loop_t loop;
    upstream up;
    tc_client *client;
    char url[64];
} ctx;

static ctx *ctx_new(const plan *plans, unsigned n)
{
    ctx *c = calloc(1, sizeof(*c));
    assert_non_null(c);
    assert_int_equal(uv_loop_init(&c->loop), 0);
    memcpy(c->up.plans, plans, n * sizeof(*plans));
    tc_server_config sc;
    tc_server_config_init(&sc);
    sc.host = "127.0.0.1";
    sc.port = 0;
    sc.handler = upstream_handle;
    sc.handler_data = &c->up;
    assert_int_equal(tc_server_new(&c->up.srv, &c->loop, &sc), 0);
    assert_int_equal(tc_client_new(&c->client, &c->loop, NULL), 0);
    (void)snprintf(c->url, sizeof(c->url), "http://127.0.0.1:%d/api/work",
                   tc_server_port(c->up.srv));
    return c;
}

static void ctx_free(ctx *c)
{
    tc_client_close(c->client, NULL, NULL);
    tc_server_close(c->up.srv, NULL, NULL);
    uv_run(&c->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&c->loop), 0);
    free(c);
}

typedef struct outcome {
    uv_loop_t *loop;
    int done;
    tc_hedge_result r;
    uint64_t ended_ms;
} outcome;

static void on_done(tc_future *f, void *data)
{
    outcome *o = data;
    o->done = 1;
    uv_update_time(o->loop);
    o->ended_ms = uv_now(o->loop);
    if (tc_future_state_of(f) == TC_FUTURE_FULFILLED)
        o->r = *(const tc_hedge_result *)tc_future_value(f);
}

/* Runs one hedge to its end; returns the time it took in ms. */
static uint64_t run_hedge(ctx *c, tc_hedge_policy *p, outcome *o)
{
    tc_client_request req = {.url = c->url};
    tc_header h = {"X-Tailcut-Attempt", "99"}; /* replaced by the hedge's own */
    req.headers = &h;
    req.nheaders = 1;
    tc_future *f = NULL;
    uv_update_time(&c->loop);
    uint64_t t0 = uv_now(&c->loop);
    p->deadline_ms = t0 + 10000;
    memset(o, 0, sizeof(*o));
    o->loop = &c->loop;
    assert_int_equal(tc_hedge_start(&f, c->client, &req, p), 0);
    assert_int_equal(tc_future_on_done(f, on_done, o), 0);
    for (int i = 0; i < 2000 && !o->done; i++)
        uv_run(&c->loop, UV_RUN_ONCE);
    assert_true(o->done);
    tc_future_unref(f);
    return o->ended_ms - t0;
}

/* The default policy but for the schedule: staggered or not, and the delay before extras. */
static tc_hedge_policy policy_of(int staggered, uint64_t hedge_delay_ms)
{
    tc_hedge_policy p;
    tc_hedge_policy_init(&p);
    p.staggered = staggered;
    p.hedge_delay_ms = hedge_delay_ms;
    return p;
}

/* Milliseconds from the start of attempt a to the start of attempt b (0-based). */
static uint64_t start_gap_ms(const outcome *o, unsigned a, unsigned b)
{
    return (o->r.attempts[b].started_ns - o->r.attempts[a].started_ns) / 1000000;
}

/* Attempt b (0-based) started no earlier than ms after the first attempt: the delay counts from
 * the clock rounded up, so an extra never fires early, whatever the loop's cached clock says
 * (0.2 ms: what the first attempt takes to start after the hedge read the clock). */
static void assert_not_early(const outcome *o, unsigned b, uint64_t ms)
{
    assert_true(o->r.attempts[b].started_ns + 200000 >= o->r.attempts[0].started_ns + ms * 1000000);
}

static void test_schedule_staggered_and_header(void **state)
{
    /* every attempt takes 400 ms; the delay is 60 ms: extras at ~60 and ~120 ms, numbered */
    static const plan plans[] = {{400, 200}, {400, 200}, {400, 200}};
    ctx *c = ctx_new(plans, 3);
    tc_hedge_policy p = policy_of(1, 60);
    outcome o;
    run_hedge(c, &p, &o);
    assert_int_equal(o.r.error, 0);
    assert_int_equal(o.r.nattempts, 3);
    assert_int_equal(o.r.winner, 0);
    assert_true(o.r.hedge_fired);
    assert_int_equal(c->up.nseen, 3);
    for (unsigned i = 0; i < 3; i++)
        assert_int_equal(c->up.seen[i], i + 1);
    uint64_t d1 = start_gap_ms(&o, 0, 1);
    uint64_t d2 = start_gap_ms(&o, 0, 2);
    assert_in_range(d1, 55, 300);
    assert_in_range(d2, 115, 390);
    assert_not_early(&o, 1, 60);
    assert_not_early(&o, 2, 120);
    /* Extra k is due k x delay after the first attempt, not after extra k-1: a late extra 1 (a
     * loaded machine) narrows the gap to extra 2 without breaking the schedule, so only the
     * order is checked between them. */
    assert_true(o.r.attempts[2].started_ns >= o.r.attempts[1].started_ns);
    ctx_free(c);
}

static void test_schedule_first_attempt_fails(void **state)
{
    /* staggered: attempt 1 fails at once, so extra 1 fires at once (nothing in flight) and
     * wins; extra 2 is still due at 2 x delay, which never comes */
    static const plan plans[] = {{0, 500}, {20, 200}, {20, 200}};
    ctx *c = ctx_new(plans, 3);
    tc_hedge_policy p = policy_of(1, 2000);
    outcome o;
    uint64_t took = run_hedge(c, &p, &o);
    assert_int_equal(o.r.error, 0);
    assert_int_equal(o.r.nattempts, 2);
    assert_int_equal(o.r.winner, 1);
    assert_true(took < 1500);
    ctx_free(c);

    /* the seed schedule: both extras fire at once on the failure */
    c = ctx_new(plans, 3);
    p = policy_of(0, 2000);
    took = run_hedge(c, &p, &o);
    assert_int_equal(o.r.error, 0);
    assert_int_equal(o.r.nattempts, 3);
    assert_true(took < 1500);
    ctx_free(c);
}

static void test_schedule_extra_fails(void **state)
{
    /* attempt 1 slow, extra 1 (at 50 ms) fails at once: with attempt 1 still in flight, extra 2
     * waits for its own due time (100 ms), then wins */
    static const plan plans[] = {{1500, 200}, {0, 503}, {10, 200}};
    ctx *c = ctx_new(plans, 3);
    tc_hedge_policy p = policy_of(1, 50);
    outcome o;
    run_hedge(c, &p, &o);
    assert_int_equal(o.r.error, 0);
    assert_int_equal(o.r.nattempts, 3);
    assert_int_equal(o.r.winner, 2);
    assert_int_equal(o.r.attempts[1].outcome, TC_OUTCOME_HTTP_STATUS);
    assert_int_equal(o.r.attempts[0].outcome, TC_OUTCOME_CANCELLED);
    uint64_t d2 = start_gap_ms(&o, 0, 2);
    assert_in_range(d2, 95, 1400);
    ctx_free(c);

    /* every attempt fails: 502 material, with all three fired */
    static const plan bad[] = {{0, 500}, {0, 500}, {0, 500}};
    c = ctx_new(bad, 3);
    p = policy_of(1, 5000);
    uint64_t took = run_hedge(c, &p, &o);
    assert_int_equal(o.r.error, TC_EALLFAILED);
    assert_int_equal(o.r.nattempts, 3);
    assert_true(took < 4000);
    ctx_free(c);
}

/* Uses up the budget's allowance for the coming second (the hedge's own request included). */
static void spend(tc_hedge_budget *b)
{
    for (int i = 0; i < 10 && tc_hedge_budget_try_extra(b, tc__now_ms()); i++)
        ;
}

static void test_schedule_denied_with_nothing_in_flight(void **state)
{
    static const plan plans[] = {{0, 500}, {0, 200}, {0, 200}};
    tc_hedge_budget *b = NULL;
    assert_int_equal(tc_hedge_budget_new(&b, TC_HEDGE_BUDGET_SCALE), 0); /* 1% */
    for (int staggered = 0; staggered <= 1; staggered++) {
        ctx *c = ctx_new(plans, 3);
        spend(b);
        tc_hedge_policy p = policy_of(staggered, 3000);
        outcome o;
        p.budget = b;
        uint64_t took = run_hedge(c, &p, &o);
        assert_int_equal(o.r.error, TC_EALLFAILED);
        assert_int_equal(o.r.nattempts, 1);
        assert_int_equal(o.r.denied, staggered ? 1 : 2);
        assert_false(o.r.hedge_fired);
        assert_true(took < 2500); /* at once, not at the delay */
        ctx_free(c);
    }
    tc_hedge_budget_free(b);
}

static void test_schedule_denied_while_in_flight(void **state)
{
    /* the extras are dropped, never fired later; the first attempt still wins */
    static const plan plans[] = {{300, 200}, {0, 200}, {0, 200}};
    tc_hedge_budget *b = NULL;
    assert_int_equal(tc_hedge_budget_new(&b, TC_HEDGE_BUDGET_SCALE), 0);
    ctx *c = ctx_new(plans, 3);
    spend(b);
    tc_hedge_policy p = policy_of(1, 30);
    outcome o;
    p.budget = b;
    run_hedge(c, &p, &o);
    assert_int_equal(o.r.error, 0);
    assert_int_equal(o.r.nattempts, 1);
    assert_int_equal(o.r.denied, 2);
    assert_int_equal(c->up.nseen, 1);
    ctx_free(c);
    tc_hedge_budget_free(b);
}

static void test_recording_and_warmup(void **state)
{
    /* attempt 1 takes 600 ms, the extra wins after 20 ms: the warm-up's fallback (200 ms)
     * is the delay; the winner is recorded at ~20 ms and the cancelled loser at ~200+ ms;
     * a failed attempt is never recorded */
    static const plan plans[] = {{600, 200}, {20, 200}};
    tc_hedge_adaptive_config cfg;
    tc_hedge_adaptive *a = NULL;
    tc_hedge_adaptive_config_init(&cfg);
    cfg.percentile = 50.0;
    cfg.fallback_ms = 200;
    assert_int_equal(tc_hedge_adaptive_new(&a, &cfg), 0);
    ctx *c = ctx_new(plans, 2);
    tc_hedge_policy p;
    outcome o;
    tc_hedge_policy_init(&p);
    p.staggered = 1;
    p.extra = 1;
    p.adaptive = a;
    run_hedge(c, &p, &o);
    assert_int_equal(o.r.error, 0);
    assert_int_equal(o.r.delay_ms, 200);
    assert_int_equal(o.r.winner, 1);
    uint64_t d1 = start_gap_ms(&o, 0, 1);
    assert_true(d1 >= 195); /* no hedge earlier than the fallback during warm-up */
    assert_not_early(&o, 1, 200);
    assert_int_equal(tc_hedge_adaptive_recorded(a), 2);
    ctx_free(c);

    static const plan fails[] = {{0, 500}, {0, 500}};
    c = ctx_new(fails, 2);
    run_hedge(c, &p, &o);
    assert_int_equal(o.r.error, TC_EALLFAILED);
    assert_int_equal(tc_hedge_adaptive_recorded(a), 2);
    ctx_free(c);

    /* after the warm-up, the percentile: 200 fast records at 5 ms make p50 the top of their
     * bucket (4,992-5,055 us), rounded up: 6 ms */
    uint64_t now = tc__now_ms();
    for (int i = 0; i < 200; i++)
        tc_hedge_adaptive_record(a, now, 5000);
    static const plan slow[] = {{400, 200}, {0, 200}};
    c = ctx_new(slow, 2);
    run_hedge(c, &p, &o);
    assert_int_equal(o.r.delay_ms, 6);
    assert_int_equal(o.r.winner, 1);
    ctx_free(c);
    tc_hedge_adaptive_free(a);
}

static void test_seed_policy_unchanged(void **state)
{
    /* 1 + 2 after the delay, all at once, numbered 1, 2, 3 */
    static const plan plans[] = {{500, 200}, {500, 200}, {500, 200}};
    ctx *c = ctx_new(plans, 3);
    tc_hedge_policy p;
    outcome o;
    tc_hedge_policy_init(&p);
    assert_int_equal(p.staggered, 0);
    assert_null(p.budget);
    assert_null(p.adaptive);
    p.hedge_delay_ms = 200;
    run_hedge(c, &p, &o);
    assert_int_equal(o.r.nattempts, 3);
    assert_int_equal(o.r.delay_ms, 200);
    uint64_t d1 = start_gap_ms(&o, 0, 1);
    uint64_t d12 = start_gap_ms(&o, 1, 2);
    assert_true(d1 >= 195);
    assert_true(d12 < 100); /* together, not 200 ms apart as a staggered schedule would be */
    assert_int_equal(c->up.seen[0], 1);
    ctx_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_schedule_staggered_and_header),
        cmocka_unit_test(test_schedule_first_attempt_fails),
        cmocka_unit_test(test_schedule_extra_fails),
        cmocka_unit_test(test_schedule_denied_with_nothing_in_flight),
        cmocka_unit_test(test_schedule_denied_while_in_flight),
        cmocka_unit_test(test_recording_and_warmup),
        cmocka_unit_test(test_seed_policy_unchanged),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
