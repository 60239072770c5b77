/*
 * Adaptive hedging with a strict budget (docs/hedge.md), as a small program.
 *
 *   example_adaptive_hedge                 the estimator and the budget on their own
 *   example_adaptive_hedge URL [N]         N hedged GETs of URL, one after another, hedging at
 *                                          the p95 of the attempts seen so far, at most 5% extra
 *
 * One tc_hedge_adaptive and one tc_hedge_budget serve the whole process: a program with several
 * loops (one per thread) hands the same two objects to every hedge it starts.
 */
#include <stdio.h>
#include <stdlib.h>

#include <tailcut/hedge.h>

typedef struct run {
    uv_loop_t *loop;
    tc_client *client;
    tc_hedge_adaptive *delay;
    tc_hedge_budget *budget;
    const char *url;
    int left;
} run;

static void start_one(run *r);

static void on_done(tc_future *f, void *data)
{
    run *r = data;
    const tc_hedge_result *res = tc_future_value(f);
    if (res != NULL)
        printf("%s after %u attempt(s), delay %llu ms, %u denied\n",
               res->error == 0 ? "ok" : tc_strerror(res->error), res->nattempts,
               (unsigned long long)res->delay_ms, res->denied);
    tc_future_unref(f);
    if (--r->left > 0)
        start_one(r);
    else
        tc_client_close(r->client, NULL, NULL);
}

static void start_one(run *r)
{
    tc_hedge_policy p;
    tc_hedge_policy_init(&p); /* 1 attempt, then up to 2 extras */
    p.staggered = 1;          /* extra k at k x delay, or at once when nothing is in flight */
    p.adaptive = r->delay;    /* delay = p95 of recent attempts; records into it */
    p.budget = r->budget;     /* extras within 5% of requests + 1 per second */
    p.deadline_ms = uv_now(r->loop) + 5000;
    tc_client_request req = {.url = r->url};
    tc_future *f;
    if (tc_hedge_start(&f, r->client, &req, &p) != 0 || tc_future_on_done(f, on_done, r) != 0) {
        fprintf(stderr, "cannot start a hedge\n");
        tc_client_close(r->client, NULL, NULL);
    }
}

int main(int argc, char **argv)
{
    tc_hedge_adaptive_config cfg;
    tc_hedge_adaptive *delay = NULL;
    tc_hedge_budget *budget = NULL;
    uint64_t pct;

    tc_hedge_adaptive_config_init(&cfg);
    cfg.percentile = 95.0;
    cfg.fallback_ms = 300;
    if (tc_hedge_adaptive_new(&delay, &cfg) != 0 || tc_hedge_budget_parse("5", &pct) != 0 ||
        tc_hedge_budget_new(&budget, pct) != 0) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }

    if (argc < 2) {
        /* The objects alone, on a clock of our own: 200 latencies of 10..29 ms. */
        for (uint64_t i = 0; i < 200; i++)
            tc_hedge_adaptive_record(delay, 1000 + i, 10000 + (i % 20) * 1000);
        printf("p95 delay: %llu ms\n", (unsigned long long)tc_hedge_adaptive_delay_ms(delay, 1200));
        for (int i = 0; i < 100; i++)
            tc_hedge_budget_admit(budget, 5000);
        int granted = 0;
        for (int i = 0; i < 20; i++)
            granted += tc_hedge_budget_try_extra(budget, 5000);
        printf("100 requests in a second: %d of 20 extras granted (floor(5%% x 100) + 1)\n",
               granted);
    } else {
        uv_loop_t *loop = uv_default_loop();
        run r = {.loop = loop, .delay = delay, .budget = budget, .url = argv[1]};
        r.left = argc > 2 ? atoi(argv[2]) : 10;
        if (r.left < 1 || tc_client_new(&r.client, loop, NULL) != 0) {
            fprintf(stderr, "usage: %s [URL [N]]\n", argv[0]);
            return 2;
        }
        start_one(&r);
        uv_run(loop, UV_RUN_DEFAULT);
        (void)uv_loop_close(loop);
    }
    tc_hedge_budget_free(budget);
    tc_hedge_adaptive_free(delay);
    return 0;
}
