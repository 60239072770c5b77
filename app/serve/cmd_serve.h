/*
 * tailcut serve, inside: what its files share. Private to app/cmd_serve*.c.
 *
 *   cmd_serve.c           flags, start-up, routing, the workers and the embedded upstream
 *   cmd_serve_api.c       the four attempt endpoints (/api/smart, /api/first, /api/all,
 *                         /api/within-timeout) and the call every /api/... request becomes
 *   cmd_serve_metadata.c  /api/metadata/ID: batched lookups
 *   cmd_serve_metrics.c   the metric definitions, what each request adds to them, /metrics
 *   cmd_serve_dashboard.c /dashboard, /dashboard/stats and the --admin-listen listener
 *   cmd_serve_stats.c     the dashboard's per-second history ring and its JSON snapshot
 *
 *   cmd_serve_settings.c  the settings table: every flag, its range, default and help
 *
 * One serve_config for the process, one serve_route per route (one today, from the flags), one
 * serve_worker per worker thread (its own loop, server, upstream client, metrics shard and
 * batcher); nothing on the request path is shared between workers but the route's hedge delay
 * source and budget, which are thread-safe.
 */
#ifndef TAILCUT_APP_CMD_SERVE_H
#define TAILCUT_APP_CMD_SERVE_H

#include <stdint.h>
#include <stdio.h>

#include "cmd_serve_stats.h"
#include "common/settings.h"
#include "http/forward_internal.h"
#include "tailcut/batch.h"
#include "tailcut/client.h"
#include "tailcut/hedge.h"
#include "tailcut/metrics.h"
#include "tailcut/server.h"
#include "tailcut/url.h"

/* Endpoints, for routing and metric labels. */
typedef enum endpoint {
    EP_SMART = 0,
    EP_FIRST,
    EP_ALL,
    EP_WITHIN,
    EP_METADATA,
    EP_HEALTHZ,
    EP_METRICS,
    EP_DASHBOARD,
    EP_STATS, /* /dashboard/stats */
    EP_OTHER,
    EP_COUNT
} endpoint;

/* Where /api/metadata/ID lookups are routed: every path with this prefix. */
#define SERVE_METADATA_PREFIX "/api/metadata/"

/* Metric family ids, filled once at start-up. */
typedef struct serve_metrics {
    tc_metrics_registry *reg;
    uint32_t requests, duration, attempts, hedges, hedge_wins, in_flight, queue_waits;
    uint32_t stale_retries;
    uint32_t hedges_denied, attempt_duration;                          /* adaptive hedging */
    uint32_t batches, batch_size, batch_keys, batch_dedup, batch_wait; /* /api/metadata */
    uint32_t conns_rejected, rejected_no_memory, rejected_over_limit;  /* and its two series */
    uint32_t duration_series[EP_COUNT];
    uint32_t outcome_series[TC_OUTCOME_COUNT];
    uint32_t attempt_duration_series[TC_OUTCOME_COUNT];
} serve_metrics;

/* The --forward-header names (deduplicated, never one that --upstream-header sets) and the
 * --upstream-header headers of a route: own strings (cmd_serve_forward.c). */
typedef struct serve_names {
    char **v;
    size_t n;
} serve_names;

typedef struct serve_headers {
    tc_header *v;
    size_t n;
} serve_headers;

/* A route: where its requests go and how they are hedged, batched and bounded (the
 * SETTINGS_ROUTE rows of cmd_serve_settings.c). Without a configuration file there is exactly
 * one, made from the flags; each worker reaches it through serve_worker.route. */
typedef struct serve_route {
    char *upstream;          /* the URL each attempt GETs (the embedded simulator's if none) */
    char *metadata_upstream; /* where batched lookups go; NULL: lookups are off */
    /* --hedge-delay: a fixed MS, or pNN (percentile in tenths) with --hedge-delay-fallback
     * until it has data; --hedge-budget (0 = off). The delay source and the budget are one
     * object each for the route, shared by every worker. */
    settings_delay hedge_delay;
    uint64_t hedge_fallback_ms;
    uint64_t hedge_extra;
    uint64_t hedge_budget_e6;
    tc_hedge_adaptive *adaptive;
    tc_hedge_budget *budget;
    uint64_t max_timeout_ms;
    uint64_t max_body;
    uint64_t batch_max;
    uint64_t batch_wait_ms;
    serve_names forward_headers;
    serve_headers upstream_headers;
} serve_route;

/* The process: its listeners, workers, limits, logs and metrics (the SETTINGS_GLOBAL rows of
 * cmd_serve_settings.c), and its routes. */
typedef struct serve_config {
    settings_addr listen;
    settings_addr admin; /* --admin-listen: /metrics and the dashboard move there when .set */
    char *upstream_ca;
    int http_engine; /* tc_client_engine */
    uint64_t upstream_connections;
    uint64_t max_connections;
    uint64_t workers; /* 0 until the flags are read: then the online CPUs */
    uint64_t drain_timeout_ms;
    uint64_t header_timeout_ms;
    uint64_t idle_timeout_ms;
    uint64_t shutdown_delay_ms;
    char *access_log_path; /* --access-log as given: "-", "off" or a file */
    FILE *access_log;
    int access_log_format; /* TC_ACCESS_LOG_TEXT or _JSON */
    serve_route *routes;   /* one today (serve_run.route) */
    size_t nroutes;
    atomic_size_t conn_count;
    atomic_int ready; /* 1 until the first SIGTERM/SIGINT: every listener's /readyz */
    serve_metrics metrics;
    serve_stats *stats; /* the dashboard's history: one shard per worker, then the admin's */
} serve_config;

/* A worker's scratch storage for the upstream request of an attempt endpoint request: rebuilt
 * for each request, kept from one to the next (the hedge copies what it needs). */
typedef struct serve_forward {
    tc__buf url; /* the upstream URL with the client's query */
    tc_header *headers;
    size_t headers_cap, nheaders;
    char *strings; /* forwarded values, each NUL-terminated */
    size_t strings_cap, need, used;
} serve_forward;

typedef struct serve_worker {
    serve_config *cfg;
    serve_route *route; /* the route its requests take (the one route today) */
    tc_server *srv;
    tc_client *client;
    tc_metrics_shard *shard;
    uint64_t queue_waits_seen; /* client's queued count already added to the metric */
    uint64_t stale_retries_seen;
    tc_batcher *batcher;           /* coalesces /api/metadata lookups */
    uint64_t dedup_seen;           /* batcher's dedup hits already added to the metric */
    tc_server_stats rejected_seen; /* the server's rejections already added to the metric */
    serve_stats_shard *stats;
    uv_timer_t tick; /* publishes the pool's use (dashboard) and the rejections (metrics) */
    int tick_open;
    int admin; /* the --admin-listen listener's (it has no client and no batcher) */
    serve_forward fwd;
} serve_worker;

/* One /api/... endpoint request in flight. */
typedef struct serve_call {
    serve_worker *sw;
    tc_request *req;
    tc_future *work; /* the hedge, or for /api/metadata the batched lookup within the deadline */
    endpoint ep;
    uint64_t timeout_ms;
    char id[TC_ID_MAX + 1]; /* /api/metadata only */
} serve_call;

/* ---- cmd_serve_api.c ---- */

/* Answers an error before any attempt (and counts it). The attempt endpoints say so in
 * X-Tailcut-Attempts: 0, like every answer of theirs. */
void serve_respond_error(serve_worker *sw, tc_request *req, endpoint ep, int status,
                         const char *code, const char *message);

/* Reads the request's `timeout` parameter into *timeout_ms: the value asked for, else
 * --max-timeout (or, when required, a 400). Returns 0, or -1 once it has answered 400. */
int serve_call_timeout(serve_worker *sw, tc_request *req, endpoint ep, int required,
                       uint64_t *timeout_ms);

/* A new call for the request, its work not started yet. Returns NULL once it has answered 503
 * overloaded. */
serve_call *serve_call_new(serve_worker *sw, tc_request *req, endpoint ep, uint64_t timeout_ms);

/* The call's work has started: count it in flight, cancel it if the client leaves, and run done
 * when it ends (done finishes the request and frees the call with serve_call_free). */
void serve_call_watch(serve_call *call, tc_future_cb done);
void serve_call_free(serve_call *call);

/* /api/smart, /api/first, /api/all and /api/within-timeout. */
void serve_handle_attempts(serve_worker *sw, tc_request *req, endpoint ep);

/* ---- cmd_serve_forward.c ---- */

/* The parsers of --forward-header NAME (field: serve_names), --upstream-header 'Name: value' /
 * @FILE and the key upstream_headers_file (field: serve_headers): each adds to the list, or
 * fills e and returns -1 (settings_check_fn). */
int serve_forward_header_add(const setting *s, const char *name, void *field, settings_error *e);
int serve_upstream_header_add(const setting *s, const char *value, void *field, settings_error *e);
int serve_upstream_header_file(const setting *s, const char *path, void *field, settings_error *e);
void serve_names_free(void *field);
void serve_headers_free(void *field);
/* After the last setting: a name both forwarded and set by --upstream-header is only set. */
void serve_forward_finish(serve_route *route);

void serve_forward_init(serve_forward *fw, const serve_route *route);
void serve_forward_free(serve_forward *fw);
/* Fills creq->url, ->headers and ->nheaders for every attempt of req: the upstream URL with the
 * client's query (tc__forward_url), then the --upstream-header headers, the forwarded request
 * headers and X-Request-Id: request_id (none when empty). They point into fw and route, valid
 * until the next call on fw; the hedge copies them and numbers each attempt
 * (X-Tailcut-Attempt). Returns 0, TC_ETOOLARGE or TC_ENOMEM. */
int serve_forward_build(serve_forward *fw, const serve_route *route, const tc_request *req,
                        tc_str request_id, tc_client_request *creq);

/* ---- cmd_serve_metadata.c ---- */

/* The worker's batcher for /api/metadata lookups, sending to --metadata-upstream. */
int serve_metadata_batcher_new(serve_worker *sw, uv_loop_t *loop);
void serve_handle_metadata(serve_worker *sw, tc_request *req);

/* ---- cmd_serve.c ---- */

/* Every request of a serve listener (main or admin) comes here and is routed. */
void serve_handle(tc_request *req, void *data);

/* ---- cmd_serve_dashboard.c ---- */

void serve_handle_dashboard(serve_worker *sw, tc_request *req);
void serve_handle_stats(serve_worker *sw, tc_request *req);
/* Starts the worker's tick that publishes its upstream pool (serve_count_pool) and its
 * server's rejected connections; stop closes it. */
void serve_tick_start(serve_worker *sw, uv_loop_t *loop);
void serve_tick_stop(serve_worker *sw);

/* The --admin-listen listener: its own thread and loop, open until serve_admin_stop. */
typedef struct serve_admin serve_admin;
/* Returns 0 once listening (and announced), else prints the one-line listen error and returns
 * a TC_E* code. */
int serve_admin_start(serve_config *cfg, serve_admin **out);
void serve_admin_stop(serve_admin *a);

/* ---- cmd_serve_metrics.c ---- */

/* Creates the dashboard's history (cfg->stats) for cfg->workers. Returns 0 or a TC_E* code. */
int serve_stats_define(serve_config *cfg);
/* Defines every metric family and series of the process. Returns 0 or a TC_E* code. */
int serve_metrics_define(serve_metrics *m);
/* Counts a finished request: by endpoint and status, and its latency (if ready_ns != 0). */
void serve_count_request(serve_worker *sw, endpoint ep, int status, uint64_t ready_ns);
/* Adds the connections the worker's server rejected since the last call (on its tick). */
void serve_count_rejections(serve_worker *sw);
/* The hedge's observer (tc_hedge_policy.observe, data = the serve_worker). */
void serve_count_attempts(const tc_hedge_result *r, void *data);
/* Publishes the worker's upstream pool: its use to the dashboard, and what its client counted
 * since the last call (queue waits, stale-connection re-sends) to the metrics. */
void serve_count_pool(serve_worker *sw);
void serve_handle_metrics(serve_worker *sw, tc_request *req);

#endif /* TAILCUT_APP_CMD_SERVE_H */
