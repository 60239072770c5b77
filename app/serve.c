/*
 * tailcut serve: the smart API service (CONTRACT §1).
 *
 * Each worker thread gets its own loop, its own listening socket on the shared port and its own
 * per-worker state; serve_handle() routes a request to the endpoint that answers it.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "commands.h"
#include "runtime.h"
#include "tailcut/server.h"

typedef struct serve_config {
    char host[64];
    int port;
    uint64_t max_connections;
    uint64_t max_body;
    uint64_t workers;
    uint64_t drain_timeout_ms;
    uint64_t header_timeout_ms;
    uint64_t idle_timeout_ms;
    FILE *access_log;
    atomic_size_t conn_count;
} serve_config;

typedef struct serve_worker {
    serve_config *cfg;
    tc_server *srv;
} serve_worker;

static const char serve_usage[] =
    "usage: tailcut serve [OPTIONS]\n"
    "\n"
    "The smart API service: hedged and fan-out calls to a slow, flaky upstream.\n"
    "\n"
    "options (defaults in brackets):\n"
    "  --listen HOST:PORT         address to listen on; port 0 picks a free port [127.0.0.1:8080]\n"
    "  --workers N                worker threads, each with its own loop [online CPUs]\n"
    "  --max-connections N        open client connections before 503 overloaded [10000]\n"
    "  --max-body BYTES           largest request or upstream body [1048576]\n"
    "  --drain-timeout MS         on SIGTERM/SIGINT, time to finish in-flight requests [10000]\n"
    "  --access-log -|FILE|off    one line per request [-]\n"
    "  --header-timeout MS        a request must be complete this soon after its first byte "
    "[10000]\n"
    "  --idle-timeout MS          close idle keep-alive connections after this long [60000]\n"
    "  -h, --help                 this text\n";

/* ---- endpoints ------------------------------------------------------------------------------ */

static int str_eq(tc_str s, const char *lit)
{
    size_t n = strlen(lit);
    return s.len == n && memcmp(s.base, lit, n) == 0;
}

static void serve_handle(tc_request *req, void *data)
{
    tc_str path = tc_request_path(req);
    tc_str method = tc_request_method(req);
    int is_get = str_eq(method, "GET") || str_eq(method, "HEAD");

    if (str_eq(path, "/healthz")) {
        if (!is_get) {
            tc_request_respond_error(req, 405, "method_not_allowed", "only GET and HEAD");
            return;
        }
        tc_request_respond_json(req, 200, "{\"status\":\"ok\"}");
        return;
    }
    tc_request_respond_error(req, 404, "not_found", "no such endpoint");
}

/* ---- workers -------------------------------------------------------------------------------- */

/* The runtime's data pointer is this bundle: runtime config first, so the hooks can reach both. */
typedef struct serve_run {
    tc_runtime_config rc;
    serve_config cfg;
} serve_run;

static int serve_worker_start(tc_runtime_worker *w, void *data)
{
    serve_run *run = data;
    serve_config *cfg = &run->cfg;
    serve_worker *sw = calloc(1, sizeof(*sw));
    if (sw == NULL)
        return TC_ENOMEM;
    sw->cfg = cfg;
    tc_server_config sc;
    tc_server_config_init(&sc);
    sc.host = cfg->host;
    sc.port = w->index == 0 ? cfg->port : run->rc.listen_port;
    sc.reuseport = 1;
    sc.max_connections = cfg->max_connections;
    sc.conn_count = &cfg->conn_count;
    sc.max_body = cfg->max_body;
    sc.access_log = cfg->access_log;
    sc.header_timeout_ms = cfg->header_timeout_ms;
    sc.idle_timeout_ms = cfg->idle_timeout_ms;
    sc.handler = serve_handle;
    sc.handler_data = sw;
    int err = tc_server_new(&sw->srv, w->loop, &sc);
    if (err != 0) {
        free(sw);
        return err;
    }
    if (w->index == 0) {
        snprintf(run->rc.listen_host, sizeof(run->rc.listen_host), "%s", cfg->host);
        run->rc.listen_port = tc_server_port(sw->srv);
    }
    w->state = sw;
    return 0;
}

static void serve_worker_drain(tc_runtime_worker *w, void *data)
{
    serve_worker *sw = w->state;
    if (sw != NULL && sw->srv != NULL)
        tc_server_drain(sw->srv, NULL, NULL);
}

static void on_server_closed(tc_server *srv, void *data)
{
    serve_worker *sw = data;
    sw->srv = NULL;
}

static void serve_worker_stop(tc_runtime_worker *w, void *data)
{
    serve_worker *sw = w->state;
    if (sw != NULL && sw->srv != NULL)
        tc_server_close(sw->srv, on_server_closed, sw);
}

static void serve_worker_cleanup(tc_runtime_worker *w, void *data)
{
    serve_worker *sw = w->state;
    if (sw == NULL)
        return;
    if (sw->srv != NULL) {
        tc_server_close(sw->srv, on_server_closed, sw);
        uv_run(w->loop, UV_RUN_DEFAULT);
    }
    free(sw);
    w->state = NULL;
}

/* ---- flags ---------------------------------------------------------------------------------- */

enum {
    OPT_LISTEN = 256,
    OPT_WORKERS,
    OPT_MAX_CONNECTIONS,
    OPT_MAX_BODY,
    OPT_DRAIN_TIMEOUT,
    OPT_ACCESS_LOG,
    OPT_HEADER_TIMEOUT,
    OPT_IDLE_TIMEOUT,
};

static const struct option serve_options[] = {
    {"listen", required_argument, NULL, OPT_LISTEN},
    {"workers", required_argument, NULL, OPT_WORKERS},
    {"max-connections", required_argument, NULL, OPT_MAX_CONNECTIONS},
    {"max-body", required_argument, NULL, OPT_MAX_BODY},
    {"drain-timeout", required_argument, NULL, OPT_DRAIN_TIMEOUT},
    {"access-log", required_argument, NULL, OPT_ACCESS_LOG},
    {"header-timeout", required_argument, NULL, OPT_HEADER_TIMEOUT},
    {"idle-timeout", required_argument, NULL, OPT_IDLE_TIMEOUT},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

int cmd_serve(int argc, char **argv)
{
    static const char cmd[] = "serve";
    serve_run *run = calloc(1, sizeof(*run));
    if (run == NULL)
        return TC_EXIT_FAILURE;
    serve_config *cfg = &run->cfg;
    snprintf(cfg->host, sizeof(cfg->host), "127.0.0.1");
    cfg->port = 8080;
    cfg->max_connections = 10000;
    cfg->max_body = 1048576;
    cfg->workers = tc_runtime_cpus();
    cfg->drain_timeout_ms = 10000;
    cfg->header_timeout_ms = TC_SERVER_HEADER_TIMEOUT_MS;
    cfg->idle_timeout_ms = TC_SERVER_IDLE_TIMEOUT_MS;
    cfg->access_log = stdout;
    atomic_init(&cfg->conn_count, 0);

    int status = TC_EXIT_USAGE;
    int opt;
    opterr = 0;
    optind = 1;
    while ((opt = getopt_long(argc, argv, ":h", serve_options, NULL)) != -1) {
        int bad = 0;
        switch (opt) {
        case OPT_LISTEN:
            bad =
                cli_parse_listen(cmd, "--listen", optarg, cfg->host, sizeof(cfg->host), &cfg->port);
            break;
        case OPT_WORKERS:
            bad = cli_parse_u64(cmd, "--workers", optarg, 1, 256, &cfg->workers);
            break;
        case OPT_MAX_CONNECTIONS:
            bad =
                cli_parse_u64(cmd, "--max-connections", optarg, 1, 1000000, &cfg->max_connections);
            break;
        case OPT_MAX_BODY:
            bad = cli_parse_u64(cmd, "--max-body", optarg, 1, 1u << 30, &cfg->max_body);
            break;
        case OPT_DRAIN_TIMEOUT:
            bad = cli_parse_u64(cmd, "--drain-timeout", optarg, 0, 3600000, &cfg->drain_timeout_ms);
            break;
        case OPT_HEADER_TIMEOUT:
            bad =
                cli_parse_u64(cmd, "--header-timeout", optarg, 1, 3600000, &cfg->header_timeout_ms);
            break;
        case OPT_IDLE_TIMEOUT:
            bad = cli_parse_u64(cmd, "--idle-timeout", optarg, 1, 3600000, &cfg->idle_timeout_ms);
            break;
        case OPT_ACCESS_LOG:
            bad = cli_open_access_log(cmd, optarg, &cfg->access_log);
            break;
        case 'h':
            fputs(serve_usage, stdout);
            status = TC_EXIT_OK;
            goto out;
        default:
            cli_bad_option(cmd, argv[optind - 1]);
            goto out;
        }
        if (bad)
            goto out;
    }
    if (optind < argc) {
        cli_error(cmd, "unexpected argument '%s'", argv[optind]);
        goto out;
    }

    run->rc.nworkers = (unsigned)cfg->workers;
    run->rc.drain_timeout_ms = cfg->drain_timeout_ms;
    run->rc.start = serve_worker_start;
    run->rc.drain = serve_worker_drain;
    run->rc.stop = serve_worker_stop;
    run->rc.cleanup = serve_worker_cleanup;
    run->rc.data = run;
    snprintf(run->rc.listen_host, sizeof(run->rc.listen_host), "%s", cfg->host);
    run->rc.listen_port = cfg->port;
    status = tc_runtime_run(&run->rc);
out:
    if (cfg->access_log != NULL && cfg->access_log != stdout)
        fclose(cfg->access_log);
    free(run);
    return status;
}
