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
 *   cmd_serve_replicas.c  each upstream's replicas: the set, aiming each attempt at its replica,
 *                         their metrics and dashboard figures
 *   cmd_serve_discovery.c --upstream-discovery dns: the thread that resolves the names and keeps
 *                         the sets in step, and the retiring of a gone replica's connections
 *
 *   cmd_serve_settings.c  the settings table: every flag, its range, default and help
 *
 * One serve_config for the process, one serve_route per route (one today, from the flags), one
 * serve_worker per worker thread (its own loop, server, upstream client, metrics shard and
 * batcher); nothing on the request path is shared between workers but the route's hedge delay
 * source, budget and replica sets, which are thread-safe.
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
#include "tailcut/replica.h"
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

/* --upstream-discovery. */
enum { SERVE_DISCOVERY_OFF = 0, SERVE_DISCOVERY_DNS = 1 };

/* One replica (the data of its tc_replica_set entry): what an attempt to it needs. Shared by
 * every worker and reference counted: the set holds one reference, and each request that sent
 * an attempt to it holds one more until it ends, so its label can still be logged after the set
 * let it go (tc_replica_config.release runs once its last attempt has reported). One
 * allocation; the strings follow the struct. */
typedef struct serve_replica {
    atomic_uint refs;
    unsigned url_index;     /* its URL's place in the route's list: replicas discovered from one
                             * URL share it (and the URL a request builds for it) */
    const char *url;        /* the URL its attempts GET (before the client's query) */
    const char *connect_to; /* the resolved address, or NULL: the URL's host is connected to */
    const char *label;      /* scheme://host:port, or scheme://ADDRESS:port when discovered */
} serve_replica;

void serve_replica_ref(serve_replica *rep);
void serve_replica_unref(void *rep); /* a tc_replica_config.release */

/* The replicas of one upstream of a route (its --upstream or its --metadata-upstream URLs): the
 * set, shared by every worker of the process, and what is read from it for the operator. */
typedef struct serve_rates serve_rates;
typedef struct serve_discovery serve_discovery;
typedef struct serve_replicas {
    const char *name; /* "upstream" or "metadata": the metrics' `set` label */
    tc_replica_set *set;
    const settings_list *urls;     /* the route's, which outlives the set */
    _Atomic uint64_t dns_failures; /* resolutions that failed or came back empty */
    serve_rates *rates;            /* the dashboard's attempts/s (cmd_serve_replicas.c) */
} serve_replicas;

/* A route: where its requests go and how they are hedged, batched and bounded (the
 * SETTINGS_ROUTE rows of cmd_serve_settings.c). Without a configuration file there is exactly
 * one, made from the flags; each worker reaches it through serve_worker.route. */
typedef struct serve_route {
    /* Each URL is one replica (with discovery, one per address its name resolves to). */
    settings_list upstreams;          /* the embedded simulator's /api/work when none is given */
    settings_list metadata_upstreams; /* where batched lookups go; none: lookups are off */
    int discovery;                    /* SERVE_DISCOVERY_OFF or _DNS */
    uint64_t dns_refresh_ms;
    unsigned eject_failures;     /* tc_replica_config's three */
    double eject_latency_factor; /* 0: off */
    unsigned max_ejected_pct;
    serve_replicas *replicas;          /* the upstreams' set */
    serve_replicas *metadata_replicas; /* NULL when lookups are off */
    size_t url_max;                    /* the longest URL of both lists */
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
    int log_replica; /* json access-log lines carry "replica": the attempts go to replicas */
    size_t
        client_pools; /* pools a worker's client may hold: its total is this x the per-pool cap */
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
    serve_discovery *discovery;        /* --upstream-discovery dns: the resolver thread, or NULL */
    struct serve_mailboxes *mailboxes; /* how discovery reaches each worker's client */
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
    unsigned index; /* the worker's, for its mailbox */
    int mailbox_open;
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
    /* The attempt endpoints: the replica of each attempt that reached one, in firing order
     * (referenced; only when the access log names replicas), and the URLs built for them, once
     * per URL (cmd_serve_replicas.c). */
    serve_replica *sent[TC_HEDGE_MAX_ATTEMPTS];
    unsigned nsent;
    struct {
        unsigned url_index;
        size_t at; /* in urls, or SIZE_MAX: the replica's own URL as it is */
    } built[TC_HEDGE_MAX_ATTEMPTS];
    unsigned nbuilt;
    tc__buf urls;
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
/* Fills creq->url, ->headers and ->nheaders for every attempt of req: the route's first
 * upstream URL with the client's query (tc__forward_url; serve_attempt_prepare gives a replica
 * of another URL its own), then the --upstream-header headers, the forwarded request headers
 * and X-Request-Id: request_id (none when empty). They point into fw and route, valid until the
 * next call on fw; the hedge copies them and numbers each attempt (X-Tailcut-Attempt). Returns
 * 0, TC_ETOOLARGE or TC_ENOMEM. */
int serve_forward_build(serve_forward *fw, const serve_route *route, const tc_request *req,
                        tc_str request_id, tc_client_request *creq);

/* ---- cmd_serve_replicas.c ---- */

extern const settings_word serve_discovery_words[]; /* off, dns */
/* --eject-latency-factor: a decimal from 1.5 to 100, or off (0), into a double field. */
int serve_latency_factor_parse(const setting *s, const char *value, void *field, settings_error *e);

/* The replica label of url: tc_url_origin()'s scheme://host:port, or with connect_to (a
 * resolved address) in place of the host, "http://[::1]:8000" for IPv6; never userinfo, path
 * or query. Returns 0 or TC_ETOOLARGE. */
int serve_replica_label(const char *url, const char *connect_to, char *out, size_t cap);
/* A replica for url (connect_to: its address, or NULL), one reference held by the caller.
 * Returns 0, TC_ENOMEM or TC_ETOOLARGE. */
int serve_replica_new(serve_replica **out, unsigned url_index, const char *url,
                      const char *connect_to);

/* The route's sets: its upstreams', and its metadata upstreams' when it has any, with one
 * replica per URL (with discovery, per URL whose host is an address: names get theirs from
 * cmd_serve_discovery.c). Returns 0 or a TC_E* code. */
int serve_replicas_start(serve_route *route);
/* Once nothing uses the sets (the workers and discovery have ended). */
void serve_replicas_free(serve_route *route);

/* The hedge's prepare hook (src/policy/hedge.c fire), data the serve_call: aims an attempt at
 * its replica (its URL, built once per request, and its address) and, when the access log names
 * replicas (cfg->log_replica), keeps a reference on it for the log line. */
int serve_attempt_prepare(void *data, unsigned id, void *replica_data, tc_client_request *req);
/* The label of the replica that answered r (the winner's; for all and within-timeout the first
 * success's), or NULL (also when the log does not name replicas). Valid until
 * serve_call_release. */
const char *serve_call_replica(const serve_call *call, const tc_hedge_result *r);
/* Gives back what the call holds: its replica references and built URLs. */
void serve_call_release(serve_call *call);

/* /metrics: the replica families of the route's sets (CONTRACT section 7), appended to b.
 * Returns 0 or the tc__buf error. */
int serve_replicas_metrics(const serve_route *route, tc__buf *b);
/* Once a second (worker 0's tick, second sec of the dashboard's clock): samples every set's
 * counters, from which /dashboard/stats gives each replica's attempts/s and success ratio. */
void serve_replicas_tick(const serve_route *route, uint64_t sec);
/* /dashboard/stats: the members ,"replicas":[...],"replica_sets":{...} appended to b. */
int serve_replicas_stats(const serve_route *route, tc__buf *b);
/* Upstream connection pools the route's replicas make now (one per label: one origin and
 * address), each of --upstream-connections per worker. */
size_t serve_replicas_pools(const serve_route *route);

/* ---- cmd_serve_discovery.c ---- */

/* 1 if url's host is a DNS name (not an IP address): --upstream-discovery dns resolves it. */
int serve_url_needs_resolving(const char *url);
/* With any route on --upstream-discovery dns: starts the resolver thread and returns once every
 * name had its first resolution (a name that failed is said on stderr and retried every second
 * meanwhile). Returns 0 or a TC_E* code. */
int serve_discovery_start(serve_config *cfg);
/* Stops the thread (cfg->discovery NULL is fine). */
void serve_discovery_stop(serve_config *cfg);

/* Each worker's mailbox: how a replica that left reaches every worker's client (its
 * connections close: tc_client_retire_origin on the worker's loop). */
int serve_mailboxes_new(serve_config *cfg);
void serve_mailboxes_free(serve_config *cfg);
/* On the worker's thread: opens its mailbox on loop (unreferenced: it never keeps a draining
 * worker alive) / closes it (no-op when not open). */
void serve_mailbox_open(serve_worker *sw, uv_loop_t *loop);
void serve_mailbox_close(serve_worker *sw);
/* From any thread: every open mailbox gets (url, connect_to) to retire. Returns 0 or TC_ENOMEM
 * (some worker keeps that replica's idle connections until they close by themselves). */
int serve_mailboxes_retire(serve_config *cfg, const char *url, const char *connect_to);

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
