/*
 * tailcut serve: the smart API service in front of a slow, flaky upstream.
 *
 * This file reads the flags, starts the process (the embedded upstream when no --upstream is
 * given, then the workers) and routes each request to the file that answers it (cmd_serve.h
 * lists them). Each worker thread gets its own loop, its own listening socket on the shared port
 * and its own per-worker state.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cli.h"
#include "cmd_serve.h"
#include "common/commands.h"
#include "common/runtime.h"
#include "tailcut/upstream.h"

static const char serve_usage[] =
    "usage: tailcut serve [OPTIONS]\n"
    "\n"
    "The smart API service: hedged and fan-out calls to a slow, flaky upstream.\n"
    "\n"
    "options (defaults in brackets):\n";

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
    if (sw->admin ? !admin_serves(ep, path) : sw->cfg->admin_port >= 0 && admin_only(ep)) {
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

/* The runtime's data pointer is this bundle: runtime config first, so the hooks can reach both. */
typedef struct serve_run {
    rt_config rc;
    serve_config cfg;
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
    serve_forward_init(&sw->fwd, cfg);
    w->state = sw;
    tc_client_config cc;
    tc_client_config_init(&cc);
    cc.max_connections = (size_t)cfg->upstream_connections;
    cc.max_body = (size_t)cfg->max_body;
    cc.ca_file = cfg->upstream_ca;
    cc.engine = (tc_client_engine)cfg->http_engine;
    int err = tc_metrics_shard_new(cfg->metrics.reg, &sw->shard);
    if (err == 0)
        err = tc_client_new(&sw->client, w->loop, &cc);
    if (err != 0)
        return err;
    sw->stats = serve_stats_shard_at(cfg->stats, w->index);
    serve_tick_start(sw, w->loop);
    if (cfg->metadata_upstream != NULL) { /* else lookups are off: no batcher */
        err = serve_metadata_batcher_new(sw, w->loop);
        if (err != 0)
            return err;
    }
    tc_server_config sc;
    tc_server_config_init(&sc);
    sc.host = cfg->host;
    sc.port = w->index == 0 ? cfg->port : run->rc.listen_port;
    sc.reuseport = 1;
    sc.max_connections = cfg->max_connections;
    sc.conn_count = &cfg->conn_count;
    sc.max_body = cfg->max_body;
    sc.access_log = cfg->access_log;
    sc.access_log_format = cfg->access_log_format;
    sc.ready_path = "/readyz";
    sc.ready = &cfg->ready;
    sc.header_timeout_ms = cfg->header_timeout_ms;
    sc.idle_timeout_ms = cfg->idle_timeout_ms;
    sc.handler = serve_handle;
    sc.handler_data = sw;
    err = tc_server_new(&sw->srv, w->loop, &sc);
    if (err != 0)
        return err;
    if (w->index == 0) {
        (void)snprintf(run->rc.listen_host, sizeof(run->rc.listen_host), "%s", cfg->host);
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

/* With no --upstream, a `tailcut upstream --profile exponea` runs in-process on its own thread
 * and loop, on a free loopback port, so that `make run` works with no setup. */
typedef struct embedded {
    rt_thread th;
    uv_async_t stop;
    tc_upstream *u;
    int err;
    int port;
} embedded;

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

/* ---- flags ---------------------------------------------------------------------------------- */

enum {
    OPT_HELP = 1,
    OPT_LISTEN,
    OPT_ADMIN_LISTEN,
    OPT_UPSTREAM,
    OPT_METADATA_UPSTREAM,
    OPT_UPSTREAM_CA,
    OPT_HTTP_ENGINE,
    OPT_FORWARD_HEADER,
    OPT_UPSTREAM_HEADER,
    OPT_HEDGE_DELAY,
    OPT_HEDGE_DELAY_FALLBACK,
    OPT_HEDGE_BUDGET,
    OPT_HEDGE_EXTRA,
    OPT_MAX_TIMEOUT,
    OPT_UPSTREAM_CONNECTIONS,
    OPT_BATCH_MAX,
    OPT_BATCH_WAIT,
    OPT_WORKERS,
    OPT_MAX_CONNECTIONS,
    OPT_MAX_BODY,
    OPT_DRAIN_TIMEOUT,
    OPT_ACCESS_LOG,
    OPT_ACCESS_LOG_FORMAT,
    OPT_SHUTDOWN_DELAY,
    OPT_HEADER_TIMEOUT,
    OPT_IDLE_TIMEOUT,
};

static const cli_option serve_options[] = {
    {"listen", 0, OPT_LISTEN, CLI_VALUE, "HOST:PORT",
     "address to listen on; port 0 picks a free port [127.0.0.1:8080]"},
    {"admin-listen", 0, OPT_ADMIN_LISTEN, CLI_VALUE, "HOST:PORT",
     "serve /metrics, /dashboard and /dashboard/stats (and\n"
     "/healthz, /readyz) on this address instead; the main listener\n"
     "then answers those three 404 [none: the main listener]"},
    {"upstream", 0, OPT_UPSTREAM, CLI_VALUE, "URL",
     "the URL each attempt GETs [embedded simulator's /api/work]"},
    {"metadata-upstream", 0, OPT_METADATA_UPSTREAM, CLI_VALUE, "URL",
     "batch lookups go here [embedded simulator's /api/metadata\n"
     "without --upstream; else none: /api/metadata answers 404]"},
    {"upstream-ca", 0, OPT_UPSTREAM_CA, CLI_VALUE, "FILE",
     "PEM CA bundle to verify an https upstream [system store]"},
    {"http-engine", 0, OPT_HTTP_ENGINE, CLI_VALUE, "native|curl",
     "client engine for http:// upstreams (https:// always uses libcurl) [native]"},
    {"forward-header", 0, OPT_FORWARD_HEADER, CLI_VALUE | CLI_REPEATABLE, "NAME",
     "copy this request header (each occurrence) to every attempt;\n"
     "never Host, Connection, Proxy-* and other hop-by-hop ones"},
    {"upstream-header", 0, OPT_UPSTREAM_HEADER, CLI_VALUE | CLI_REPEATABLE, "'NAME: VALUE'|@FILE",
     "add this header to every call of both upstreams; @FILE reads\n"
     "one a line (blank lines and # comments skipped)"},
    {"hedge-delay", 0, OPT_HEDGE_DELAY, CLI_VALUE, "MS|pNN",
     "/api/smart fires the extra attempts after MS, all at once;\n"
     "or pNN (p50..p99.9): extra k at k x the NNth percentile of\n"
     "recent attempt latencies (a 4 s decay over the last 10 s) [300]"},
    {"hedge-delay-fallback", 0, OPT_HEDGE_DELAY_FALLBACK, CLI_VALUE, "MS",
     "the pNN delay until 100 attempts were recorded, and while\n"
     "none is recent [300]"},
    {"hedge-budget", 0, OPT_HEDGE_BUDGET, CLI_VALUE, "PCT",
     "extra attempts fired in any 1 s stay within\n"
     "floor(PCT x /api/smart requests in it / 100) + 1 [off]"},
    {"hedge-extra", 0, OPT_HEDGE_EXTRA, CLI_VALUE, "N", "extra attempts fired by the hedge [2]"},
    {"max-timeout", 0, OPT_MAX_TIMEOUT, CLI_VALUE, "MS",
     "largest timeout a request may ask for, and the default [60000]"},
    {"upstream-connections", 0, OPT_UPSTREAM_CONNECTIONS, CLI_VALUE, "N",
     "upstream connection pool per worker [1024]"},
    {"batch-max", 0, OPT_BATCH_MAX, CLI_VALUE, "N", "IDs per batched metadata call [50]"},
    {"batch-wait", 0, OPT_BATCH_WAIT, CLI_VALUE, "MS", "longest a batch waits for more IDs [10]"},
    {"workers", 0, OPT_WORKERS, CLI_VALUE, "N",
     "worker threads, each with its own loop [online CPUs]"},
    {"max-connections", 0, OPT_MAX_CONNECTIONS, CLI_VALUE, "N",
     "open client connections before 503 overloaded [10000]"},
    {"max-body", 0, OPT_MAX_BODY, CLI_VALUE, "BYTES", "largest request or upstream body [1048576]"},
    {"drain-timeout", 0, OPT_DRAIN_TIMEOUT, CLI_VALUE, "MS",
     "on SIGTERM/SIGINT, time to finish in-flight requests [10000]"},
    {"access-log", 0, OPT_ACCESS_LOG, CLI_VALUE, "-|FILE|off",
     "one line per request; SIGUSR1 reopens FILE [-]"},
    {"access-log-format", 0, OPT_ACCESS_LOG_FORMAT, CLI_VALUE, "text|json",
     "access-log lines: text (TIME CLIENT \"REQUEST\" STATUS BYTES\n"
     "DURATION_US ATTEMPTS REQUEST_ID) or one JSON object [text]"},
    {"shutdown-delay", 0, OPT_SHUTDOWN_DELAY, CLI_VALUE, "MS",
     "after SIGTERM/SIGINT, go on serving this long with /readyz\n"
     "at 503 and Connection: close, then drain [0]"},
    {"header-timeout", 0, OPT_HEADER_TIMEOUT, CLI_VALUE, "MS",
     "a request must be complete this soon after its first byte\n[10000]"},
    {"idle-timeout", 0, OPT_IDLE_TIMEOUT, CLI_VALUE, "MS",
     "close idle keep-alive connections after this long [60000]"},
    {"help", 'h', OPT_HELP, 0, NULL, "this text"},
};

/* Accepts an http:// or https:// URL with a host. Returns 0 or -1 with a message. */
static int parse_url_flag(const char *cmd, const char *flag, const char *value, char **out)
{
    const char *rest = NULL;
    if (strncmp(value, "http://", 7) == 0)
        rest = value + 7;
    else if (strncmp(value, "https://", 8) == 0)
        rest = value + 8;
    if (rest == NULL || *rest == '\0' || *rest == '/' || strpbrk(value, " \t\r\n") != NULL) {
        /* a URL may carry credentials: shown redacted, as everywhere */
        char shown[256];
        cli_error(cmd, "invalid value '%s' for %s: expected an http:// or https:// URL",
                  tc__url_redact(value, shown, sizeof(shown)), flag);
        return -1;
    }
    free(*out);
    *out = strdup(value);
    return *out == NULL ? -1 : 0;
}

static char *join_url(const char *base, int port, const char *path)
{
    char buf[128];
    /* base and path are our own short literals: the URL always fits */
    (void)snprintf(buf, sizeof(buf), "%s%d%s", base, port, path);
    return strdup(buf);
}

/* The process's one delay source (for pNN) and one budget, handed to every worker's hedges. */
static int start_hedging(serve_config *cfg)
{
    if (cfg->hedge_percentile_tenths != 0) {
        tc_hedge_adaptive_config ac;
        tc_hedge_adaptive_config_init(&ac);
        ac.percentile = (double)cfg->hedge_percentile_tenths / 10.0;
        ac.fallback_ms = cfg->hedge_fallback_ms;
        ac.max_ms = cfg->max_timeout_ms;
        int err = tc_hedge_adaptive_new(&cfg->adaptive, &ac);
        if (err != 0)
            return err;
    }
    if (cfg->hedge_budget_e6 != 0)
        return tc_hedge_budget_new(&cfg->budget, cfg->hedge_budget_e6);
    return 0;
}

int cmd_serve(int argc, char **argv)
{
    static const char cmd[] = "serve";
    rt_ignore_signals(); /* before the embedded upstream's and the admin listener's threads */
    serve_run *run = calloc(1, sizeof(*run));
    if (run == NULL)
        return TC_EXIT_FAILURE;
    serve_config *cfg = &run->cfg;
    (void)snprintf(cfg->host, sizeof(cfg->host), "127.0.0.1");
    cfg->port = 8080;
    cfg->admin_port = -1;
    cfg->max_connections = 10000;
    cfg->max_body = 1048576;
    cfg->workers = rt_cpus();
    cfg->drain_timeout_ms = 10000;
    cfg->header_timeout_ms = TC_SERVER_HEADER_TIMEOUT_MS;
    cfg->idle_timeout_ms = TC_SERVER_IDLE_TIMEOUT_MS;
    cfg->access_log = stdout;
    cfg->hedge_delay_ms = 300;
    cfg->hedge_extra = 2;
    cfg->hedge_fallback_ms = 300;
    cfg->max_timeout_ms = 60000;
    cfg->upstream_connections = 1024;
    cfg->batch_max = 50;
    cfg->batch_wait_ms = 10;
    embedded emb;
    int emb_running = 0;
    serve_admin *admin = NULL;
    atomic_init(&cfg->conn_count, 0);
    atomic_init(&cfg->ready, 1);

    int status = TC_EXIT_USAGE;
    const char *access_log = "-";
    cli_parser parser;
    const char *val;
    int opt;
    cli_parser_init(&parser, cmd, serve_options, sizeof(serve_options) / sizeof(serve_options[0]),
                    argc, argv);
    while ((opt = cli_next(&parser, &val)) != CLI_END) {
        int bad = 0;
        switch (opt) {
        case OPT_LISTEN:
            bad = cli_parse_listen(cmd, "--listen", val, cfg->host, sizeof(cfg->host), &cfg->port);
            break;
        case OPT_ADMIN_LISTEN:
            bad = cli_parse_listen(cmd, "--admin-listen", val, cfg->admin_host,
                                   sizeof(cfg->admin_host), &cfg->admin_port);
            break;
        case OPT_WORKERS:
            bad = cli_parse_u64(cmd, "--workers", val, 1, 256, &cfg->workers);
            break;
        case OPT_MAX_CONNECTIONS:
            bad = cli_parse_u64(cmd, "--max-connections", val, 1, 1000000, &cfg->max_connections);
            break;
        case OPT_MAX_BODY:
            bad = cli_parse_u64(cmd, "--max-body", val, 1, 1u << 30, &cfg->max_body);
            break;
        case OPT_DRAIN_TIMEOUT:
            bad = cli_parse_u64(cmd, "--drain-timeout", val, 0, 3600000, &cfg->drain_timeout_ms);
            break;
        case OPT_UPSTREAM:
            bad = parse_url_flag(cmd, "--upstream", val, &cfg->upstream);
            break;
        case OPT_METADATA_UPSTREAM:
            bad = parse_url_flag(cmd, "--metadata-upstream", val, &cfg->metadata_upstream);
            break;
        case OPT_HTTP_ENGINE:
            bad = cli_parse_http_engine(cmd, val, &cfg->http_engine);
            break;
        case OPT_FORWARD_HEADER:
            bad = serve_forward_header_flag(cfg, cmd, val);
            break;
        case OPT_UPSTREAM_HEADER:
            bad = serve_upstream_header_flag(cfg, cmd, val);
            break;
        case OPT_UPSTREAM_CA: {
            FILE *f = fopen(val, "r");
            if (f == NULL) {
                cli_error(cmd, "cannot read --upstream-ca file '%s'", val);
                bad = -1;
            } else {
                (void)fclose(f);
                cfg->upstream_ca = val;
            }
            break;
        }
        case OPT_HEDGE_DELAY:
            bad = cli_parse_hedge_delay(cmd, val, &cfg->hedge_delay_ms,
                                        &cfg->hedge_percentile_tenths);
            break;
        case OPT_HEDGE_DELAY_FALLBACK:
            bad = cli_parse_u64(cmd, "--hedge-delay-fallback", val, 0, 3600000,
                                &cfg->hedge_fallback_ms);
            break;
        case OPT_HEDGE_BUDGET:
            bad = cli_parse_hedge_budget(cmd, val, &cfg->hedge_budget_e6);
            break;
        case OPT_HEDGE_EXTRA:
            bad = cli_parse_u64(cmd, "--hedge-extra", val, 0, TC_HEDGE_MAX_ATTEMPTS - 1,
                                &cfg->hedge_extra);
            break;
        case OPT_MAX_TIMEOUT:
            bad = cli_parse_u64(cmd, "--max-timeout", val, 1, 3600000, &cfg->max_timeout_ms);
            break;
        case OPT_UPSTREAM_CONNECTIONS:
            bad = cli_parse_u64(cmd, "--upstream-connections", val, 1, 100000,
                                &cfg->upstream_connections);
            break;
        case OPT_BATCH_MAX:
            bad = cli_parse_u64(cmd, "--batch-max", val, 1, 1000, &cfg->batch_max);
            break;
        case OPT_BATCH_WAIT:
            bad = cli_parse_u64(cmd, "--batch-wait", val, 0, 60000, &cfg->batch_wait_ms);
            break;
        case OPT_HEADER_TIMEOUT:
            bad = cli_parse_u64(cmd, "--header-timeout", val, 1, 3600000, &cfg->header_timeout_ms);
            break;
        case OPT_IDLE_TIMEOUT:
            bad = cli_parse_u64(cmd, "--idle-timeout", val, 1, 3600000, &cfg->idle_timeout_ms);
            break;
        case OPT_ACCESS_LOG:
            access_log = val; /* opened once the flags are read: the last one counts */
            break;
        case OPT_ACCESS_LOG_FORMAT:
            bad = cli_parse_access_log_format(cmd, val, &cfg->access_log_format);
            break;
        case OPT_SHUTDOWN_DELAY:
            bad = cli_parse_u64(cmd, "--shutdown-delay", val, 0, 3600000, &cfg->shutdown_delay_ms);
            break;
        case OPT_HELP:
            (void)fputs(serve_usage, stdout);
            cli_print_options(stdout, serve_options,
                              sizeof(serve_options) / sizeof(serve_options[0]));
            status = TC_EXIT_OK;
            goto out;
        case CLI_OPERAND:
            cli_error(cmd, "unexpected argument '%s'", val);
            goto out;
        default: /* CLI_ERROR: the parser has said why */
            goto out;
        }
        if (bad)
            goto out;
    }
    if (serve_forward_finish_flags(cfg) != 0 ||
        cli_open_access_log(cmd, access_log, &cfg->access_log) != 0)
        goto out;

    if (serve_metrics_define(&cfg->metrics) != 0 || start_hedging(cfg) != 0 ||
        serve_stats_define(cfg) != 0) {
        cli_error(cmd, "cannot set up metrics and hedging");
        status = TC_EXIT_FAILURE;
        goto out;
    }
    /* The simulator is for trying tailcut out: a user who names a real upstream never gets
     * made-up answers from it, so without --metadata-upstream the lookups are off. */
    if (cfg->upstream != NULL && cfg->metadata_upstream == NULL)
        (void)fprintf(stderr, "tailcut: metadata lookups are off: /api/metadata/ID answers 404 "
                              "until --metadata-upstream URL is given\n");
    if (cfg->upstream == NULL) {
        memset(&emb, 0, sizeof(emb));
        int err = embedded_start(&emb);
        if (err != 0) {
            cli_error(cmd, "cannot start the embedded upstream: %s", tc_strerror(err));
            status = TC_EXIT_FAILURE;
            goto out;
        }
        emb_running = 1;
        (void)fprintf(stderr, "tailcut: embedded upstream at http://127.0.0.1:%d\n", emb.port);
        cfg->upstream = join_url("http://127.0.0.1:", emb.port, "/api/work");
        if (cfg->metadata_upstream == NULL)
            cfg->metadata_upstream = join_url("http://127.0.0.1:", emb.port, "/api/metadata");
        if (cfg->upstream == NULL || cfg->metadata_upstream == NULL) {
            status = TC_EXIT_FAILURE;
            goto out;
        }
    }

    if (cfg->admin_port >= 0 && serve_admin_start(cfg, &admin) != 0) {
        status = TC_EXIT_FAILURE; /* the line saying why is printed */
        goto out;
    }
    run->rc.nworkers = (unsigned)cfg->workers;
    run->rc.drain_timeout_ms = cfg->drain_timeout_ms;
    run->rc.shutdown_delay_ms = cfg->shutdown_delay_ms;
    run->rc.access_log = cfg->access_log;
    run->rc.access_log_path = cfg->access_log != stdout ? access_log : NULL;
    run->rc.start = serve_worker_start;
    run->rc.unready = serve_worker_unready;
    run->rc.drain = serve_worker_drain;
    run->rc.stop = serve_worker_stop;
    run->rc.cleanup = serve_worker_cleanup;
    run->rc.data = run;
    (void)snprintf(run->rc.listen_host, sizeof(run->rc.listen_host), "%s", cfg->host);
    run->rc.listen_port = cfg->port;
    status = rt_run(&run->rc);
out:
    serve_admin_stop(admin); /* open until here: the very end of the process's work */
    if (emb_running)
        embedded_stop(&emb);
    if (cfg->access_log != NULL && cfg->access_log != stdout)
        (void)fclose(cfg->access_log); /* at exit: nowhere left to report a failed flush */
    tc_metrics_registry_free(cfg->metrics.reg);
    tc_hedge_adaptive_free(cfg->adaptive);
    tc_hedge_budget_free(cfg->budget);
    serve_stats_free(cfg->stats);
    free(cfg->upstream);
    free(cfg->metadata_upstream);
    serve_forward_free_config(cfg);
    free(run);
    return status;
}
