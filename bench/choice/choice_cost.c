/*
 * choice_cost: what choosing a replica costs a hedged request, for bench/choice/run to count with
 * callgrind (instructions are deterministic; time on a shared machine is not).
 *
 *   choice_cost set N R
 *       N times what a hedge does with a set of R replicas for a request's one attempt:
 *       tc_replica_choose_first, then tc_replica_done with a success. Nothing else.
 *   choice_cost hedge N R [urls|addrs]
 *       N hedges one after the other (the smart policy: one attempt, two more after 300 ms,
 *       which never fire here) against R loopback tc_servers on the same loop that answer at
 *       once. R = 0: no replica set, one server (today's path). With a set, each attempt's
 *       request is aimed by the prepare hook: `urls` (the default) gives each replica its own
 *       URL (its own port, as repeated --upstream flags do), `addrs` one URL and an address per
 *       replica (127.0.0.1, .2, .3... on one port, as DNS discovery does).
 *
 * The run with N minus the run with 0, over N, is the cost of one request.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "tailcut/hedge.h"
#include "tailcut/replica.h"
#include "tailcut/server.h"

#define MAX_REPLICAS 8

typedef struct bench {
    uv_loop_t loop;
    tc_client *client;
    tc_server *srv[MAX_REPLICAS];
    tc_replica_set *set;
    int nsrv;
    long left;
    int by_addr;
    char url[MAX_REPLICAS][80];
    char addr[MAX_REPLICAS][24];
} bench;

static void handler(tc_request *req, void *data)
{
    (void)data;
    (void)tc_request_respond_json(req, 200, "{\"time\":0}");
}

static int prepare(void *data, unsigned replica_id, void *replica_data, tc_client_request *req)
{
    bench *b = data;
    (void)replica_data;
    req->url = b->url[b->by_addr ? 0 : replica_id];
    if (b->by_addr)
        req->connect_to = b->addr[replica_id];
    return 0;
}

static void next_hedge(bench *b);

static void on_hedge_done(tc_future *f, void *data)
{
    bench *b = data;
    const tc_hedge_result *res = tc_future_value(f);
    if (res == NULL || res->error != 0) {
        fprintf(stderr, "choice_cost: a hedge failed\n");
        exit(1);
    }
    tc_future_unref(f);
    next_hedge(b);
}

static void next_hedge(bench *b)
{
    if (b->left-- <= 0) {
        tc_client_close(b->client, NULL, NULL);
        for (int i = 0; i < b->nsrv; i++)
            tc_server_close(b->srv[i], NULL, NULL);
        return;
    }
    tc_hedge_policy p;
    tc_hedge_policy_init(&p);
    p.replicas = b->set;
    p.prepare = b->set != NULL ? prepare : NULL;
    p.prepare_data = b;
    tc_client_request req = {.url = b->url[0]};
    tc_future *f = NULL;
    if (tc_hedge_start(&f, b->client, &req, &p) != 0 || tc_future_on_done(f, on_hedge_done, b) != 0)
        exit(1);
}

static int run_hedges(long n, int replicas, int by_addr)
{
    bench *b = calloc(1, sizeof(*b));
    if (b == NULL || uv_loop_init(&b->loop) != 0 || tc_client_new(&b->client, &b->loop, NULL) != 0)
        return 1;
    b->left = n;
    b->by_addr = by_addr;
    b->nsrv = replicas > 0 ? replicas : 1;
    if (b->nsrv > MAX_REPLICAS)
        return 1;
    int port = 0;
    for (int i = 0; i < b->nsrv; i++) {
        tc_server_config sc;
        tc_server_config_init(&sc);
        snprintf(b->addr[i], sizeof(b->addr[i]), "127.0.0.%d", by_addr ? i + 1 : 1);
        sc.host = b->addr[i];
        sc.port = by_addr ? port : 0;
        sc.handler = handler;
        if (tc_server_new(&b->srv[i], &b->loop, &sc) != 0) {
            fprintf(stderr, "choice_cost: cannot listen on %s\n", b->addr[i]);
            return 1;
        }
        port = tc_server_port(b->srv[i]);
        snprintf(b->url[i], sizeof(b->url[i]), "http://%s:%d/api/work",
                 by_addr ? "svc.test" : "127.0.0.1", port);
    }
    if (replicas > 0) {
        if (tc_replica_set_new(&b->set, NULL) != 0)
            return 1;
        for (int i = 0; i < replicas; i++) {
            unsigned id;
            if (tc_replica_add(b->set, b->url[i], NULL, &id) != 0)
                return 1;
        }
    }
    next_hedge(b);
    uv_run(&b->loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&b->loop) != 0)
        return 1;
    tc_replica_set_free(b->set);
    free(b);
    return 0;
}

static int run_set(long n, int replicas)
{
    tc_replica_set *set = NULL;
    if (tc_replica_set_new(&set, NULL) != 0)
        return 1;
    for (int i = 0; i < replicas; i++) {
        unsigned id;
        if (tc_replica_add(set, "http://127.0.0.1:8000", NULL, &id) != 0)
            return 1;
    }
    uint64_t sum = 0;
    for (long i = 0; i < n; i++) {
        /* the hedge reads the clock for each call, and the elapsed time from uv_hrtime */
        uint64_t start = uv_hrtime();
        tc_replica_choice c;
        if (tc_replica_choose_first(set, uv_hrtime() / 1000000, &c) != 0)
            return 1;
        uint64_t elapsed_us = (uv_hrtime() - start) / 1000 + 1000 + (uint64_t)(i % 7) * 100;
        if (tc_replica_done(set, c.id, TC_REPLICA_SUCCESS, elapsed_us, uv_hrtime() / 1000000) != 0)
            return 1;
        sum += c.id;
    }
    printf("chosen_sum=%llu\n", (unsigned long long)sum);
    tc_replica_set_free(set);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: choice_cost set|hedge N R [urls|addrs]\n");
        return 2;
    }
    long n = strtol(argv[2], NULL, 10);
    int r = atoi(argv[3]);
    if (strcmp(argv[1], "set") == 0)
        return run_set(n, r);
    if (strcmp(argv[1], "hedge") == 0)
        return run_hedges(n, r, argc > 4 && strcmp(argv[4], "addrs") == 0);
    fprintf(stderr, "choice_cost: unknown mode %s\n", argv[1]);
    return 2;
}
