/*
 * tailcut serve: the smart API service in front of a slow, flaky upstream.
 *
 * This file reads the settings (declared in cmd_serve_settings.c), starts the process (the
 * embedded upstream when no --upstream is given, then the workers) and routes each request to the
 * file that answers it (cmd_serve.h lists them). Each worker thread gets its own loop, its own
 * listening socket on the shared port and its own per-worker state.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cli.h"
#include "cmd_serve.h"
#include "common/commands.h"
#include "common/runtime.h"
#include "tailcut/upstream.h"

/* ---- routing ------------------------------------------------------------------------------- */

static int str_eq(tc_str s, const char *lit)
{
    size_t n = strlen(lit);
    return s.len == n && memcmp(s.base, lit, n) == 0;
}

static const struct route {
    const char *path;
    endpoint ep;
} routes[] = {
    {"/api/smart", EP_SMART},           {"/api/first", EP_FIRST},       {"/api/all", EP_ALL},
    {"/api/within-timeout", EP_WITHIN}, {"/healthz", EP_HEALTHZ},       {"/metrics", EP_METRICS},
    {"/dashboard", EP_DASHBOARD},       {"/dashboard/stats", EP_STATS},
};

/* With --admin-listen, these move to the admin listener (the main one answers them 404). */
static int admin_only(endpoint ep)
{
    return ep == EP_METRICS || ep == EP_DASHBOARD || ep == EP_STATS;
}

/* What the admin listener answers: its own paths and the health checks, routed like the main
 * listener's. (/readyz never gets here: the server answers it on both listeners from the one
 * readiness flag of the process, cfg->ready.) */
static int admin_serves(endpoint ep, tc_str path)
{
    return admin_only(ep) || ep == EP_HEALTHZ || str_eq(path, "/readyz");
}

void serve_handle(tc_request *req, void *data)
{
    serve_worker *sw = data;
    tc_str path = tc_request_path(req);
    tc_str method = tc_request_method(req);
    endpoint ep = EP_OTHER;

    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        if (str_eq(path, routes[i].path)) {
            ep = routes[i].ep;
            break;
        }
    }
    if (ep == EP_OTHER && path.len >= sizeof(SERVE_METADATA_PREFIX) - 1 &&
        memcmp(path.base, SERVE_METADATA_PREFIX, sizeof(SERVE_METADATA_PREFIX) - 1) == 0)
        ep = EP_METADATA; /* /api/metadata/ID */
    if (sw->admin ? !admin_serves(ep, path) : sw->cfg->admin.set && admin_only(ep)) {
        serve_respond_error(sw, req, EP_OTHER, 404, "not_found",
                            sw->admin
                                ? "not on the admin listener"
                                : "no such endpoint here: it is on the --admin-listen address");
        return;
    }
    if (ep == EP_OTHER) {
        serve_respond_error(sw, req, ep, 404, "not_found", "no such endpoint");
        return;
    }
    if (!str_eq(method, "GET") && !str_eq(method, "HEAD")) {
        serve_respond_error(sw, req, ep, 405, "method_not_allowed",
                            "only GET and HEAD are allowed");
        return;
    }
    switch (ep) {
    case EP_HEALTHZ:
        serve_count_request(sw, ep, 200, tc_request_ready_ns(req));
        tc_request_respond_json(req, 200, "{\"status\":\"ok\"}");
        break;
    case EP_METRICS:
        serve_handle_metrics(sw, req);
        break;
    case EP_DASHBOARD:
        serve_handle_dashboard(sw, req);
        break;
    case EP_STATS:
        serve_handle_stats(sw, req);
        break;
    case EP_METADATA:
        serve_handle_metadata(sw, req);
        break;
    default:
        serve_handle_attempts(sw, req, ep);
        break;
    }
}

/* ---- workers -------------------------------------------------------------------------------- */

/* With no --upstream, a `tailcut upstream --profile exponea` runs in-process on its own thread
 * and loop, on a free loopback port, so that `make run` works with no setup. */
typedef struct embedded {
    rt_thread th;
    uv_async_t stop;
    tc_upstream *u;
    int err;
    int port;
} embedded;

/* The runtime's data pointer is this bundle: runtime config first, so the hooks can reach all. */
typedef struct serve_run {
    rt_config rc;
    serve_config cfg;
    serve_route route; /* the one route, made from the flags */
    embedded emb;
    int emb_running;
    serve_admin *admin;
} serve_run;

/* A worker's state is w->state from the start, so a start that fails part way is undone by the
 * runtime's stop and cleanup hooks like any worker's end: every step just returns its error.
 * (The metrics shard is the registry's: it is freed with it, whatever becomes of the worker.) */
static int serve_worker_start(rt_worker *w, void *data)
{
    serve_run *run = data;
    serve_config *cfg = &run->cfg;
    serve_worker *sw = calloc(1, sizeof(*sw));
    if (sw == NULL)
        return TC_ENOMEM;
    sw->cfg = cfg;
    sw->route = &run->route;
    sw->index = w->index;
    serve_forward_init(&sw->fwd, sw->route);
    w->state = sw;
    tc_client_config cc;
    tc_client_config_init(&cc);
    /* --upstream-connections is per replica: each replica (origin and address) is a pool of
     * its own in the client; the total only has to let every pool fill. */
    cc.max_per_host = (size_t)cfg->upstream_connections;
    cc.max_connections = (size_t)cfg->upstream_connections * cfg->client_pools;
    cc.max_body = (size_t)sw->route->max_body;
    cc.ca_file = cfg->upstream_ca;
    cc.engine = (tc_client_engine)cfg->http_engine;
    int err = tc_metrics_shard_new(cfg->metrics.reg, &sw->shard);
    if (err == 0)
        err = tc_client_new(&sw->client, w->loop, &cc);
    if (err != 0)
        return err;
    sw->stats = serve_stats_shard_at(cfg->stats, w->index);
    serve_tick_start(sw, w->loop);
    serve_mailbox_open(sw, w->loop);
    if (sw->route->metadata_replicas != NULL) { /* else lookups are off: no batcher */
        err = serve_metadata_batcher_new(sw, w->loop);
        if (err != 0)
            return err;
    }
    tc_server_config sc;
    tc_server_config_init(&sc);
    sc.host = cfg->listen.host;
    sc.port = w->index == 0 ? cfg->listen.port : run->rc.listen_port;
    sc.reuseport = 1;
    sc.max_connections = cfg->max_connections;
    sc.conn_count = &cfg->conn_count;
    sc.max_body = sw->route->max_body; /* the one route's: its requests are all there is */
    sc.access_log = cfg->access_log;
    sc.access_log_format = cfg->access_log_format;
    sc.access_log_replica = cfg->log_replica;
    sc.ready_path = "/readyz";
    sc.ready = &cfg->ready;
    sc.header_timeout_ms = cfg->header_timeout_ms;
    sc.idle_timeout_ms = cfg->idle_timeout_ms;
    sc.handler = serve_handle; /* called from src/server/server_conn.c conn_dispatch */
    sc.handler_data = sw;
    err = tc_server_new(&sw->srv, w->loop, &sc);
    if (err != 0)
        return err;
    if (w->index == 0) {
        (void)snprintf(run->rc.listen_host, sizeof(run->rc.listen_host), "%s", cfg->listen.host);
        run->rc.listen_port = tc_server_port(sw->srv);
    }
    return 0;
}

static void on_server_closed(tc_server *srv, void *data)
{
    serve_worker *sw = data;
    sw->srv = NULL;
}

static void close_client(serve_worker *sw)
{
    if (sw->batcher != NULL) {
        /* First: unsent batches are dropped now; batches still out finish (as failed) when the
         * client below cancels their upstream calls, and then the batcher frees itself. */
        tc_batcher_close(sw->batcher, NULL, NULL);
        sw->batcher = NULL;
    }
    if (sw->client != NULL) {
        tc_client_close(sw->client, NULL, NULL);
        sw->client = NULL;
    }
}

/* Drained: nothing is in flight, so the upstream pool can go too and the loop can end. */
static void on_server_drained(tc_server *srv, void *data)
{
    serve_worker *sw = data;
    close_client(sw);
    tc_server_close(srv, on_server_closed, sw);
}

static void serve_worker_unready(rt_worker *w, void *data)
{
    serve_worker *sw = w->state;
    if (sw != NULL && sw->srv != NULL)
        tc_server_set_ready(sw->srv, 0);
}

static void serve_worker_drain(rt_worker *w, void *data)
{
    serve_worker *sw = w->state;
    if (sw != NULL && sw->srv != NULL)
        tc_server_drain(sw->srv, on_server_drained, sw);
}

static void serve_worker_stop(rt_worker *w, void *data)
{
    serve_worker *sw = w->state;
    if (sw == NULL)
        return;
    if (sw->srv != NULL)
        tc_server_close(sw->srv, on_server_closed, sw);
    close_client(sw);
    serve_tick_stop(sw);
    serve_mailbox_close(sw);
}

static void serve_worker_cleanup(rt_worker *w, void *data)
{
    serve_worker *sw = w->state;
    if (sw == NULL)
        return;
    serve_worker_stop(w, data);
    uv_run(w->loop, UV_RUN_DEFAULT);
    serve_forward_free(&sw->fwd);
    free(sw);
    w->state = NULL;
}

/* ---- the embedded simulated upstream -------------------------------------------------------- */

static void on_embedded_stop(uv_async_t *a)
{
    embedded *e = a->data;
    tc_upstream_close(e->u, NULL, NULL);
    uv_close((uv_handle_t *)&e->stop, NULL);
}

static void embedded_main(void *arg)
{
    embedded *e = arg;
    tc_upstream_config uc;
    tc_upstream_config_init(&uc);
    uc.host = "127.0.0.1";
    uc.port = 0;
    uc.profile = "exponea";
    e->err = tc_upstream_new(&e->u, &e->th.loop, &uc);
    if (e->err == 0) {
        e->port = tc_upstream_port(e->u);
        uv_async_init(&e->th.loop, &e->stop, on_embedded_stop);
        e->stop.data = e;
    }
    rt_thread_ready(&e->th);
    uv_run(&e->th.loop, UV_RUN_DEFAULT);
    uv_loop_close(&e->th.loop);
}

static int embedded_start(embedded *e)
{
    int err = rt_thread_start(&e->th, embedded_main, e);
    if (err != 0)
        return err;
    if (e->err != 0)
        uv_thread_join(&e->th.thread);
    return e->err;
}

static void embedded_stop(embedded *e)
{
    uv_async_send(&e->stop);
    uv_thread_join(&e->th.thread);
}

/* ---- start-up ------------------------------------------------------------------------------- */

static void print_usage(FILE *out)
{
    (void)fputs("usage: tailcut serve [OPTIONS]\n"
                "\n"
                "The smart API service: hedged and fan-out calls to a slow, flaky upstream.\n"
                "\n"
                "options (defaults in brackets):\n",
                out);
    settings_print_help(out, &serve_settings);
}

/* The defaults, then the flags, into the process's settings and its one route. Returns -1 to go
 * on, else the exit status (0 after --help, 2 after a bad flag or value). */
static int read_settings(serve_run *run, int argc, char **argv)
{
    serve_config *cfg = &run->cfg;
    settings_target to = {cfg, &run->route};
    settings_cli cli = {print_usage, NULL, NULL, NULL};
    settings_error e;
    cfg->routes = &run->route;
    cfg->nroutes = 1;
    int status = settings_read_cli(&serve_settings, argc, argv, &to, &cli);
    if (status >= 0)
        return status;
    if (cfg->workers == 0)
        cfg->workers = rt_cpus(); /* the default, "online CPUs" */
    serve_forward_finish(&run->route);
    if (settings_open_access_log(cfg->access_log_path, &cfg->access_log, &e) != 0) {
        settings_cli_error(&serve_settings, "access-log", &e);
        return CLI_EXIT_USAGE;
    }
    return -1;
}

/* The route's one delay source (for pNN) and one budget, handed to every worker's hedges. */
static int start_hedging(serve_route *route)
{
    if (route->hedge_delay.percentile_tenths != 0) {
        tc_hedge_adaptive_config ac;
        tc_hedge_adaptive_config_init(&ac);
        ac.percentile = (double)route->hedge_delay.percentile_tenths / 10.0;
        ac.fallback_ms = route->hedge_fallback_ms;
        ac.max_ms = route->max_timeout_ms;
        int err = tc_hedge_adaptive_new(&route->adaptive, &ac);
        if (err != 0)
            return err;
    }
    if (route->hedge_budget_e6 != 0)
        return tc_hedge_budget_new(&route->budget, route->hedge_budget_e6);
    return 0;
}

/* Without --upstream, the embedded simulator stands in for both upstreams. The simulator is for
 * trying tailcut out: a user who names a real upstream never gets made-up answers from it, so
 * without --metadata-upstream the lookups are off. Returns 0 or the exit status. */
static int choose_upstreams(serve_run *run)
{
    serve_route *route = &run->route;
    if (route->upstreams.n > 0) {
        if (route->metadata_upstreams.n == 0)
            (void)fprintf(stderr, "tailcut: metadata lookups are off: /api/metadata/ID answers "
                                  "404 until --metadata-upstream URL is given\n");
        return 0;
    }
    int err = embedded_start(&run->emb);
    if (err != 0) {
        cli_error(serve_settings.cmd, "cannot start the embedded upstream: %s", tc_strerror(err));
        return CLI_EXIT_FAILURE;
    }
    run->emb_running = 1;
    (void)fprintf(stderr, "tailcut: embedded upstream at http://127.0.0.1:%d\n", run->emb.port);
    settings_target to = {NULL, route};
    settings_error e;
    char url[64];
    (void)snprintf(url, sizeof(url), "http://127.0.0.1:%d/api/work", run->emb.port);
    if (settings_set(settings_find(&serve_settings, "upstream"), url, &to, &e) != 0)
        return CLI_EXIT_FAILURE;
    (void)snprintf(url, sizeof(url), "http://127.0.0.1:%d/api/metadata", run->emb.port);
    if (route->metadata_upstreams.n == 0 &&
        settings_set(settings_find(&serve_settings, "metadata-upstream"), url, &to, &e) != 0)
        return CLI_EXIT_FAILURE;
    return 0;
}

/* The route's replica sets (and, with --upstream-discovery dns, their first resolution), and
 * what follows from them: the client pools' total and the access log's replica field. */
static int start_replicas(serve_config *cfg, serve_route *route)
{
    int err = serve_replicas_start(route);
    if (err == 0)
        err = serve_discovery_start(cfg);
    if (err != 0) {
        cli_error(serve_settings.cmd, "cannot set up the upstream replicas: %s", tc_strerror(err));
        return CLI_EXIT_FAILURE;
    }
    /* Discovery adds and removes pools as it goes: room for every replica the sets may hold. */
    cfg->client_pools = route->discovery == SERVE_DISCOVERY_DNS ? (size_t)2 * TC_REPLICA_MAX
                                                                : serve_replicas_pools(route);
    if (cfg->client_pools == 0)
        cfg->client_pools = 1;
    /* One URL: the log is what it was; replicas: json lines say which one answered. */
    cfg->log_replica = route->upstreams.n > 1 || route->discovery == SERVE_DISCOVERY_DNS;
    return 0;
}

/* The runtime runs the workers with the process's settings. */
static void configure_runtime(serve_run *run)
{
    serve_config *cfg = &run->cfg;
    run->rc.nworkers = (unsigned)cfg->workers;
    run->rc.drain_timeout_ms = cfg->drain_timeout_ms;
    run->rc.shutdown_delay_ms = cfg->shutdown_delay_ms;
    run->rc.access_log = cfg->access_log;
    run->rc.access_log_path = cfg->access_log != stdout ? cfg->access_log_path : NULL;
    run->rc.start = serve_worker_start;
    run->rc.unready = serve_worker_unready;
    run->rc.drain = serve_worker_drain;
    run->rc.stop = serve_worker_stop;
    run->rc.cleanup = serve_worker_cleanup;
    run->rc.data = run;
    (void)snprintf(run->rc.listen_host, sizeof(run->rc.listen_host), "%s", cfg->listen.host);
    run->rc.listen_port = cfg->listen.port;
}

/* Sets everything up and runs until the end. Returns the exit status. */
static int serve_start(serve_run *run)
{
    serve_config *cfg = &run->cfg;
    if (serve_metrics_define(&cfg->metrics) != 0 || start_hedging(&run->route) != 0 ||
        serve_stats_define(cfg) != 0) {
        cli_error(serve_settings.cmd, "cannot set up metrics and hedging");
        return CLI_EXIT_FAILURE;
    }
    int status = choose_upstreams(run);
    if (status == 0)
        status = start_replicas(cfg, &run->route);
    if (status != 0)
        return status;
    if (cfg->admin.set && serve_admin_start(cfg, &run->admin) != 0)
        return CLI_EXIT_FAILURE; /* the line saying why is printed */
    configure_runtime(run);
    return rt_run(&run->rc);
}

static void serve_run_free(serve_run *run)
{
    serve_config *cfg = &run->cfg;
    serve_admin_stop(run->admin); /* open until here: the very end of the process's work */
    serve_discovery_stop(cfg);    /* the workers have ended: nothing else changes the sets */
    serve_mailboxes_free(cfg);
    serve_replicas_free(&run->route);
    if (run->emb_running)
        embedded_stop(&run->emb);
    if (cfg->access_log != NULL && cfg->access_log != stdout)
        (void)fclose(cfg->access_log); /* at exit: nowhere left to report a failed flush */
    tc_metrics_registry_free(cfg->metrics.reg);
    tc_hedge_adaptive_free(run->route.adaptive);
    tc_hedge_budget_free(run->route.budget);
    serve_stats_free(cfg->stats);
    settings_target settings = {cfg, &run->route};
    settings_free(&serve_settings, &settings);
    free(run);
}

int cmd_serve(int argc, char **argv)
{
    rt_ignore_signals(); /* before the embedded upstream's and the admin listener's threads */
    serve_run *run = calloc(1, sizeof(*run));
    if (run == NULL)
        return CLI_EXIT_FAILURE;
    atomic_init(&run->cfg.conn_count, 0);
    atomic_init(&run->cfg.ready, 1);
    int status = read_settings(run, argc, argv);
    if (status < 0)
        status = serve_start(run);
    serve_run_free(run);
    return status;
}
