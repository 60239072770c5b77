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

/* tailcut's own paths. */
static const struct own_path {
    const char *path;
    endpoint ep;
} own_paths[] = {
    {"/healthz", EP_HEALTHZ},
    {"/metrics", EP_METRICS},
    {"/dashboard", EP_DASHBOARD},
    {"/dashboard/stats", EP_STATS},
};

/* What a kind: api route serves under its prefix. */
static const struct api_path {
    const char *path;
    endpoint ep;
} api_paths[] = {
    {"smart", EP_SMART},
    {"first", EP_FIRST},
    {"all", EP_ALL},
    {"within-timeout", EP_WITHIN},
};

/* With --admin-listen, these move to the admin listener (the main one answers them 404, or with
 * --config routes them like any path). */
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

static endpoint own_endpoint(tc_str path)
{
    for (size_t i = 0; i < sizeof(own_paths) / sizeof(own_paths[0]); i++)
        if (str_eq(path, own_paths[i].path))
            return own_paths[i].ep;
    return EP_OTHER;
}

/* The endpoint of a kind: api route that path names after the route's prefix. */
static endpoint api_endpoint(const serve_route *route, tc_str path)
{
    tc_str rest = {path.base + route->prefix_len, path.len - route->prefix_len};
    if (path.len < route->prefix_len)
        return EP_OTHER;
    for (size_t i = 0; i < sizeof(api_paths) / sizeof(api_paths[0]); i++)
        if (str_eq(rest, api_paths[i].path))
            return api_paths[i].ep;
    size_t m = sizeof(SERVE_METADATA_PATH) - 1;
    if (rest.len >= m && memcmp(rest.base, SERVE_METADATA_PATH, m) == 0)
        return EP_METADATA; /* {prefix}metadata/ID */
    return EP_OTHER;
}

/* The proxy's entry (cmd_serve_proxy.c). */
void serve_route_proxy(serve_worker *sw, const serve_route *route, tc_request *req)
{
    serve_handle_proxy(sw, route, req);
}

/* 1 if ep (one of tailcut's own paths, or EP_OTHER) is answered by tailcut itself here: /healthz
 * always; the others unless they moved to --admin-listen. */
static int own_here(const serve_worker *sw, endpoint ep)
{
    return ep != EP_OTHER && (sw->admin || ep == EP_HEALTHZ || !sw->cfg->admin.set);
}

/* The route that takes path on this listener, or NULL: none (tailcut's own paths, the admin
 * listener, an own path moved to --admin-listen without --config, or no prefix matches). */
static const serve_route *route_of(const serve_worker *sw, tc_str path, endpoint ep)
{
    if (own_here(sw, ep) || sw->admin || (ep != EP_OTHER && !sw->conf->from_file))
        return NULL;
    return serve_route_match(sw->conf, path.base, path.len);
}

/* The server's head filter: a kind: proxy route's request is taken at its head, so that its
 * body streams to its attempt and its answer can start before the body has ended. */
static int serve_head_filter(tc_request *req, void *data)
{
    const serve_worker *sw = data;
    tc_str path = tc_request_path(req);
    const serve_route *route = route_of(sw, path, own_endpoint(path));
    return route != NULL && route->kind == SERVE_KIND_PROXY;
}

static void handle_own(serve_worker *sw, tc_request *req, endpoint ep)
{
    switch (ep) {
    case EP_HEALTHZ:
        serve_count_request(sw, NULL, ep, 200, tc_request_ready_ns(req));
        tc_request_respond_json(req, 200, "{\"status\":\"ok\"}");
        break;
    case EP_METRICS:
        serve_handle_metrics(sw, req);
        break;
    case EP_DASHBOARD:
        serve_handle_dashboard(sw, req);
        break;
    default:
        serve_handle_stats(sw, req);
        break;
    }
}

void serve_handle(tc_request *req, void *data)
{
    serve_worker *sw = data;
    serve_conf *conf = sw->conf;
    tc_str path = tc_request_path(req);
    tc_str method = tc_request_method(req);
    endpoint ep = own_endpoint(path);
    const serve_route *route = NULL;

    if (sw->admin && !admin_serves(ep, path)) {
        serve_respond_error(sw, NULL, req, EP_OTHER, 404, "not_found", "not on the admin listener");
        return;
    }
    /* tailcut's own paths: /healthz always; the others unless they moved to --admin-listen,
     * where the main listener answers them 404 (with --config: routes them like any path). */
    int own = own_here(sw, ep);
    if (!own && ep != EP_OTHER && !conf->from_file) {
        serve_respond_error(sw, NULL, req, EP_OTHER, 404, "not_found",
                            "no such endpoint here: it is on the --admin-listen address");
        return;
    }
    if (!own) {
        route = route_of(sw, path, ep);
        ep = route == NULL                     ? EP_OTHER
             : route->kind == SERVE_KIND_PROXY ? EP_OTHER
                                               : api_endpoint(route, path);
    }
    if (route != NULL && route->kind == SERVE_KIND_PROXY) {
        serve_route_proxy(sw, route, req);
        return;
    }
    if (ep == EP_OTHER) {
        serve_respond_error(sw, route, req, ep, 404, "not_found", "no such endpoint");
        return;
    }
    if (!str_eq(method, "GET") && !str_eq(method, "HEAD")) {
        serve_respond_error(sw, route, req, ep, 405, "method_not_allowed",
                            "only GET and HEAD are allowed");
        return;
    }
    if (own)
        handle_own(sw, req, ep);
    else if (ep == EP_METADATA)
        serve_handle_metadata(sw, route, req);
    else
        serve_handle_attempts(sw, route, req, ep);
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
    serve_route route; /* the flags' route settings (moved into the configuration) */
    embedded emb;
    int emb_running;
    serve_admin *admin;
    int argc; /* the command line, which a reload applies again over the file */
    char **argv;
    uint64_t given; /* the rows it gave */
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
    sw->index = w->index;
    uv_mutex_lock(&cfg->conf_lock);
    sw->conf = cfg->conf;
    serve_conf_ref(sw->conf);
    uv_mutex_unlock(&cfg->conf_lock);
    sw->loop = w->loop;
    serve_forward_init(&sw->fwd);
    w->state = sw;
    serve_conf *conf = sw->conf; /* the settings a reload may change are the configuration's */
    int err = tc_metrics_shard_new(cfg->metrics.reg, &sw->shard);
    if (err == 0)
        err = serve_conf_client(sw, conf);
    if (err != 0)
        return err;
    sw->stats = serve_stats_shard_at(cfg->stats, w->index);
    serve_tick_start(sw, w->loop);
    sw->trace = serve_trace_open(w->loop, w->index);
    serve_mailbox_open(sw, w->loop);
    if ((err = serve_reload_open(sw, w->loop)) != 0)
        return err;
    tc_server_config sc;
    tc_server_config_init(&sc);
    sc.host = cfg->listen.host;
    sc.port = w->index == 0 ? cfg->listen.port : run->rc.listen_port;
    sc.reuseport = 1;
    sc.max_connections = conf->max_connections;
    sc.conn_count = &cfg->conn_count;
    sc.max_body = conf->max_body; /* the largest route's (each route then checks its own) */
    sc.access_log = conf->log->file;
    sc.access_log_format = conf->log_format;
    sc.access_log_replica = cfg->log_replica;
    sc.access_log_route = cfg->with_route_label;
    sc.ready_path = "/readyz";
    sc.ready = &cfg->ready;
    sc.header_timeout_ms = cfg->header_timeout_ms;
    sc.idle_timeout_ms = cfg->idle_timeout_ms;
    sc.handler = serve_handle; /* called from src/server/server_conn.c conn_dispatch */
    sc.handler_data = sw;
    sc.head_filter = serve_head_filter;
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
    /* First the batchers: unsent batches are dropped now; batches still out finish (as failed)
     * when the client below cancels their upstream calls, and then each batcher frees itself. */
    if (sw->conf != NULL)
        serve_metadata_close(serve_conf_share_of(sw, sw->conf), sw->conf->nroutes);
    for (size_t i = 0; i < sw->nretiring; i++)
        serve_metadata_close(serve_conf_share_of(sw, sw->retiring[i]), sw->retiring[i]->nroutes);
    serve_conf_clients_close(sw);
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
    serve_trace_stop(sw->trace);
    serve_mailbox_close(sw);
    serve_reload_close(sw);
}

static void serve_worker_cleanup(rt_worker *w, void *data)
{
    serve_worker *sw = w->state;
    if (sw == NULL)
        return;
    serve_worker_stop(w, data);
    uv_run(w->loop, UV_RUN_DEFAULT);
    serve_trace_close(sw->trace);
    serve_forward_free(&sw->fwd);
    for (size_t i = 0; i < sw->nretiring; i++)
        serve_conf_unref(sw->retiring[i]);
    free(sw->retiring);
    serve_conf_unref(sw->conf);
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
                "       tailcut serve --config FILE [--check] [OPTIONS]\n"
                "\n"
                "The smart API service: hedged and fan-out calls to a slow, flaky upstream,\n"
                "or with --config the routes of a file: /api endpoints and transparent proxies.\n"
                "\n"
                "options (defaults in brackets):\n",
                out);
    settings_print_help(out, &serve_settings);
}

/* With --config: a route flag is a key of the file's routes, so it cannot be given too. Returns
 * 0, or the exit status after the one-line message. */
static int check_route_flags(serve_run *run)
{
    serve_config *cfg = &run->cfg;
    if (cfg->check && cfg->config_path == NULL) {
        cli_error(serve_settings.cmd, "--check needs --config FILE");
        return CLI_EXIT_USAGE;
    }
    for (size_t i = 0; cfg->config_path != NULL && i < serve_settings.nrows; i++) {
        const setting *s = &serve_settings.rows[i];
        char flag[64];
        if (s->scope == SETTINGS_ROUTE && (run->given & ((uint64_t)1 << i))) {
            cli_error(serve_settings.cmd,
                      "%s cannot be combined with --config: it is a key of each route in the file",
                      settings_flag(s, flag, sizeof(flag)));
            return CLI_EXIT_USAGE;
        }
    }
    return 0;
}

/* The defaults, then the flags (and with --config the file) into the process's settings and its
 * routes. Returns -1 to go on, else the exit status (0 after --help or --check, 2 after a bad
 * flag, value or file). */
static int read_settings(serve_run *run, int argc, char **argv)
{
    serve_config *cfg = &run->cfg;
    settings_target to = {cfg, &run->route};
    settings_cli cli = {print_usage, NULL, NULL, &run->given};
    settings_error e;
    run->argc = argc;
    run->argv = argv;
    int status = settings_read_cli(&serve_settings, argc, argv, &to, &cli);
    if (status >= 0)
        return status;
    if ((status = check_route_flags(run)) != 0)
        return status;
    int err;
    if (cfg->config_path != NULL) {
        settings_file_error fe;
        if (serve_conf_load(cfg, cfg, argc, argv, &cfg->conf, &fe) != 0) {
            (void)fprintf(stderr, "tailcut: %s\n", fe.message);
            return CLI_EXIT_USAGE;
        }
        cfg->with_route_label = 1;
        if (cfg->check) {
            (void)fprintf(stderr, "tailcut: configuration ok: %zu route%s\n", cfg->conf->nroutes,
                          cfg->conf->nroutes == 1 ? "" : "s");
            return CLI_EXIT_OK;
        }
    } else if ((err = serve_conf_from_flags(cfg, &run->route, &cfg->conf)) != 0) {
        cli_error(serve_settings.cmd, "%s", tc_strerror(err));
        return CLI_EXIT_FAILURE;
    }
    cfg->routes = cfg->conf->routes;
    cfg->nroutes = cfg->conf->nroutes;
    if (cfg->workers == 0)
        cfg->workers = rt_cpus(); /* the default, "online CPUs" */
    if (settings_open_access_log(cfg->access_log_path, &cfg->access_log, &e) != 0) {
        settings_cli_error(&serve_settings, "access-log", &e);
        return CLI_EXIT_USAGE;
    }
    if (serve_conf_globals_first(cfg->conf, cfg) != 0) { /* the conf owns the log from here */
        cli_error(serve_settings.cmd, "%s", tc_strerror(TC_ENOMEM));
        return CLI_EXIT_FAILURE;
    }
    cfg->max_body = cfg->conf->max_body;
    return -1;
}

/* Without --upstream, the embedded simulator stands in for both upstreams. The simulator is for
 * trying tailcut out: a user who names a real upstream never gets made-up answers from it, so
 * without --metadata-upstream the lookups are off. Returns 0 or the exit status. */
static int choose_upstreams(serve_run *run)
{
    serve_route *route = &run->cfg.routes[0];
    if (run->cfg.conf->from_file)
        return 0; /* every route names its upstreams */
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

/* Every route's replica sets and hedging (and, with --upstream-discovery dns, their first
 * resolution), and what follows from them: the client pools' total and the access log's replica
 * field. */
static int start_routes(serve_config *cfg)
{
    int err = serve_conf_start(cfg->conf, NULL);
    if (err == 0)
        err = serve_discovery_start(cfg);
    if (err != 0) {
        cli_error(serve_settings.cmd, "cannot set up the upstream replicas: %s", tc_strerror(err));
        return CLI_EXIT_FAILURE;
    }
    cfg->client_pools = 0;
    cfg->log_replica = 0;
    for (size_t i = 0; i < cfg->nroutes; i++) {
        const serve_route *route = &cfg->routes[i];
        /* Discovery adds and removes pools as it goes: room for every replica the sets may hold.
         */
        cfg->client_pools += route->discovery == SERVE_DISCOVERY_DNS ? (size_t)2 * TC_REPLICA_MAX
                                                                     : serve_replicas_pools(route);
        /* One URL: the log is what it was; replicas: json lines say which one answered. */
        if (route->upstreams.n > 1 || route->discovery == SERVE_DISCOVERY_DNS)
            cfg->log_replica = 1;
    }
    /* a reload may bring routes with more replicas: room for them, within reason */
    if (cfg->conf->from_file)
        cfg->client_pools += (size_t)2 * TC_REPLICA_MAX;
    if (cfg->client_pools == 0)
        cfg->client_pools = 1;
    return 0;
}

/* SIGUSR1 reopens the access log in force (a file, not stdout). */
static void runtime_log(serve_run *run)
{
    const serve_log *log = run->cfg.conf->log;
    run->rc.access_log = log->file;
    run->rc.access_log_path = log->file != NULL && log->file != stdout ? log->path : NULL;
}

/* SIGHUP, on the runtime's main thread (as SIGUSR1 is: the log it reopens is the one now in
 * force, held by cfg->conf). */
static void on_reload(void *data)
{
    serve_run *run = data;
    if (run->cfg.conf->from_file)
        serve_reload(&run->cfg, run->argc, run->argv, run->given);
    run->rc.drain_timeout_ms = run->cfg.drain_timeout_ms;
    run->rc.shutdown_delay_ms = run->cfg.shutdown_delay_ms;
    runtime_log(run);
}

/* The runtime runs the workers with the process's settings. */
static void configure_runtime(serve_run *run)
{
    serve_config *cfg = &run->cfg;
    run->rc.nworkers = (unsigned)cfg->workers;
    run->rc.drain_timeout_ms = cfg->drain_timeout_ms;
    run->rc.shutdown_delay_ms = cfg->shutdown_delay_ms;
    runtime_log(run);
    run->rc.start = serve_worker_start;
    run->rc.unready = serve_worker_unready;
    run->rc.drain = serve_worker_drain;
    run->rc.stop = serve_worker_stop;
    run->rc.cleanup = serve_worker_cleanup;
    run->rc.reload = cfg->conf->from_file ? on_reload : NULL;
    run->rc.data = run;
    (void)snprintf(run->rc.listen_host, sizeof(run->rc.listen_host), "%s", cfg->listen.host);
    run->rc.listen_port = cfg->listen.port;
}

/* Sets everything up and runs until the end. Returns the exit status. */
static int serve_start(serve_run *run)
{
    serve_config *cfg = &run->cfg;
    int status = choose_upstreams(run);
    if (status != 0)
        return status;
    if (serve_metrics_define(&cfg->metrics, cfg->with_route_label) != 0 ||
        serve_stats_define(cfg) != 0) {
        cli_error(serve_settings.cmd, "cannot set up metrics and hedging");
        return CLI_EXIT_FAILURE;
    }
    cfg->reloadable = calloc((size_t)cfg->workers + 1, sizeof(serve_worker *));
    if (cfg->reloadable == NULL)
        return CLI_EXIT_FAILURE;
    if ((status = start_routes(cfg)) != 0)
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
    serve_conf_unref(cfg->conf); /* the last reference: its routes and its log go */
    if (run->emb_running)
        embedded_stop(&run->emb);
    tc_metrics_registry_free(cfg->metrics.reg);
    serve_stats_free(cfg->stats);
    free(cfg->reloadable);
    uv_mutex_destroy(&cfg->conf_lock);
    settings_target settings = {cfg, &run->route};
    settings_free(&serve_settings, &settings);
    free(run);
}

int cmd_serve(int argc, char **argv)
{
    rt_ignore_signals(); /* before the embedded upstream's and the admin listener's threads */
    serve_run *run = calloc(1, sizeof(*run));
    if (run == NULL || uv_mutex_init(&run->cfg.conf_lock) != 0) {
        free(run);
        return CLI_EXIT_FAILURE;
    }
    atomic_init(&run->cfg.conn_count, 0);
    atomic_init(&run->cfg.ready, 1);
    int status = read_settings(run, argc, argv);
    if (status < 0)
        status = serve_start(run);
    serve_run_free(run);
    return status;
}
