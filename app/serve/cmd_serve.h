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
 *   cmd_serve_config.c    the routes: a configuration (from the flags, or from --config FILE),
 *                         matching a path to its route, carrying a route's state over a reload,
 *                         and SIGHUP's reload handed to every worker
 *
 *   cmd_serve_settings.c  the settings table: every flag and file key, its range, default and help
 *
 * One serve_config for the process; one serve_conf for the routes in force (immutable, reference
 * counted: a reload makes a new one, and a request keeps the one it started with), holding one
 * serve_route per route (without --config one, `/api/`, from the flags); one serve_worker per
 * worker thread (its own loop, server, upstream client, metrics shard and batchers); nothing on
 * the request path is shared between workers but each route's hedge delay source, budget and
 * replica sets, which are thread-safe.
 */
#ifndef TAILCUT_APP_CMD_SERVE_H
#define TAILCUT_APP_CMD_SERVE_H

#include <stdint.h>
#include <stdio.h>

#include "cmd_serve_proxy.h"
#include "cmd_serve_stats.h"
#include "common/settings.h"
#include "common/settings_file.h"
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
    EP_PROXY, /* a kind: proxy route's request */
    EP_OTHER,
    EP_COUNT
} endpoint;

/* A kind: api route's lookups: every path with its prefix and this after it. */
#define SERVE_METADATA_PATH "metadata/"

/* A route's kind (serve_route.kind); a row's .kinds holds SERVE_KIND_BIT of those it fits. */
enum { SERVE_KIND_API = 0, SERVE_KIND_PROXY = 1 };
#define SERVE_KIND_BIT(kind) (1u << (kind))
extern const settings_word serve_kind_words[]; /* api, proxy */

/* A default that differs by kind (a proxy hedges within a budget by default): the route key's
 * text as a user types it, parsed by its row like any value. The list ends with key NULL. */
typedef struct serve_kind_default {
    int kind;
    const char *key;
    const char *def;
} serve_kind_default;
extern const serve_kind_default serve_kind_defaults[];

/* The most routes a configuration holds. */
#define SERVE_MAX_ROUTES 256

/* Metric family ids, filled once at start-up. */
typedef struct serve_metrics {
    tc_metrics_registry *reg;
    uint32_t requests, duration, attempts, hedges, hedge_wins, in_flight, queue_waits;
    uint32_t stale_retries;
    uint32_t hedges_denied, attempt_duration;                          /* adaptive hedging */
    uint32_t batches, batch_size, batch_keys, batch_dedup, batch_wait; /* /api/metadata */
    uint32_t conns_rejected, rejected_no_memory, rejected_over_limit;  /* and its two series */
    uint32_t proxy_unhedged;                                           /* {route, reason} */
    uint32_t duration_series[EP_COUNT];
    uint32_t outcome_series[TC_OUTCOME_COUNT];
    uint32_t attempt_duration_series[TC_OUTCOME_COUNT];
    _Atomic uint64_t reloads_ok, reloads_error; /* tailcut_config_reloads_total (main thread) */
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

/* A route's hedging figures for the dashboard's route table (with --config only): every
 * worker adds to the totals (relaxed atomics), worker 0's tick samples them once a second, and
 * /dashboard/stats shows the last complete second and the totals. Kept with the route's state
 * across a reload (cmd_serve_dashboard.c). */
enum {
    SERVE_FIG_REQUESTS = 0, /* the requests its budget counts ({prefix}smart) */
    SERVE_FIG_FIRED,        /* requests whose hedges were fired */
    SERVE_FIG_WON,          /* requests won by a hedged attempt */
    SERVE_FIG_DENIED,       /* extra attempts the budget denied */
    SERVE_FIG_EXTRA,        /* extra attempts sent */
    SERVE_FIG_COUNT
};
typedef struct serve_figures {
    _Atomic uint64_t total[SERVE_FIG_COUNT];
    uv_mutex_t lock;      /* guards the samples */
    uint64_t sampled_sec; /* the second of cur, + 1; 0: none yet */
    uint64_t prev[SERVE_FIG_COUNT], cur[SERVE_FIG_COUNT];
} serve_figures;

/* What a route keeps across a reload when its name and upstreams (and discovery and ejection)
 * are unchanged: its replica sets, over its own copies of the URL lists; reference counted by
 * the routes that use it (cmd_serve_config.c). */
typedef struct serve_route_state serve_route_state;
/* The route's delay source (pNN) and budget, kept across a reload while their settings are the
 * same; reference counted likewise. */
typedef struct serve_hedging serve_hedging;

/* A route: where its requests go and how they are hedged, batched and bounded (the
 * SETTINGS_ROUTE rows of cmd_serve_settings.c). Without a configuration file there is exactly
 * one, `/api/`, made from the flags. Read-only once its configuration is in force. */
typedef struct serve_route {
    char *prefix; /* starts with '/'; a prefix ending in '/' matches what starts with it */
    size_t prefix_len;
    int kind;            /* SERVE_KIND_API or _PROXY */
    char *name;          /* the `route` label: the file's name, else the prefix */
    unsigned index;      /* its place in the configuration */
    uint64_t timeout_ms; /* a request's deadline without `timeout`; 0: max_timeout_ms */
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
    serve_figures *figures;   /* the state's */
    serve_route_state *state; /* owns replicas, metadata_replicas and figures */
    serve_hedging *hedging;   /* owns adaptive and budget */
    serve_proxy_conf proxy;   /* kind: proxy's own keys (cmd_serve_proxy.h) */
} serve_route;

/* A worker's share of a configuration: its batcher for each route's lookups (made at the first
 * one) and the calls it has in flight on the configuration. Only that worker touches it. */
typedef struct serve_worker serve_worker;
typedef struct serve_trace serve_trace;
typedef struct serve_meta_slot {
    tc_batcher *batcher;
    serve_worker *sw;
    const serve_route *route;
    uint64_t dedup_seen; /* the batcher's dedup hits already added to the metric */
} serve_meta_slot;

/* A worker's upstream client, shared by its shares of the configurations that have the same
 * client settings (http_engine, upstream_connections): a reload that changes them gives the
 * worker a new client for the requests that start after it, and the old one is closed once the
 * last of its configurations has no call left on that worker (cmd_serve_config.c). */
typedef struct serve_client serve_client;

typedef struct serve_conf_share {
    size_t calls;
    serve_meta_slot *meta; /* one per route */
    serve_client *client;  /* the client its calls use; NULL once given back */
} serve_conf_share;

/* The access log of a configuration: shared by the configurations that name the same log (a
 * reload that keeps access_log keeps its FILE), the last reference closes it (stdout never). */
typedef struct serve_log {
    atomic_uint refs;
    FILE *file; /* NULL: off */
    char *path; /* the value: "-", "off" or the file */
} serve_log;

/* The routes in force: immutable once built, reference counted (the process holds one reference
 * on the current configuration, each worker one on the one it serves with, each request in
 * flight one on the one it started with). */
typedef struct serve_conf {
    atomic_uint refs;
    serve_route *routes; /* in the file's order */
    size_t nroutes;
    int from_file; /* --config: the metrics and the json access log name the route */
    struct serve_config *cfg;
    serve_conf_share *shares; /* one per worker, and the admin listener's last */
    size_t nshares;
    /* With --config: the text of each global key in the file (NULL: not there), by row, so that
     * a reload can tell what changed. */
    char *global_text[SETTINGS_MAX_ROWS];
    /* The global settings a reload may change, as this configuration has them (the command
     * line's win over the file's): each worker applies them when it takes the configuration,
     * for the connections it accepts and the requests that start from then on. */
    uint64_t max_connections;
    uint64_t max_body; /* the listener's: the largest route's (each route checks its own) */
    uint64_t upstream_connections;
    int http_engine;
    serve_log *log;
    int log_format;
} serve_conf;

/* The process: its listeners, workers, limits, logs and metrics (the SETTINGS_GLOBAL rows of
 * cmd_serve_settings.c), and its routes. */
typedef struct serve_config {
    settings_addr listen;
    settings_addr admin; /* --admin-listen: /metrics and the dashboard move there when .set */
    char *upstream_ca;
    int http_engine; /* tc_client_engine */
    uint64_t upstream_connections;
    uint64_t max_body; /* at start: the largest route's (the admin listener's limit) */
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
    FILE *access_log;      /* opened at start, then handed to the first configuration's log */
    int access_log_format; /* TC_ACCESS_LOG_TEXT or _JSON */
    char *config_path;     /* --config FILE, or NULL */
    int check;             /* --check: validate and exit */
    serve_route *routes;   /* the first configuration's (start-up: replica sets, discovery) */
    size_t nroutes;
    uv_mutex_t conf_lock;      /* guards conf and the workers' reload handles */
    serve_conf *conf;          /* the configuration new requests take; one reference */
    serve_worker **reloadable; /* the workers (and the admin listener) a reload reaches */
    size_t nreloadable;
    int with_route_label; /* --config: the metric families carry `route` */
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

struct serve_worker {
    serve_config *cfg;
    serve_conf *conf;      /* the configuration it serves new requests with; one reference */
    serve_conf **retiring; /* earlier ones its calls still use; a reference each */
    size_t nretiring;
    uv_async_t reload; /* a new configuration is in force: take it */
    int reload_open;
    uv_loop_t *loop;
    tc_server *srv;
    tc_client *client; /* the client of conf (its share's): what new requests use */
    tc_metrics_shard *shard;
    uint64_t queue_waits_seen; /* client's queued count already added to the metric */
    uint64_t stale_retries_seen;
    tc_server_stats rejected_seen; /* the server's rejections already added to the metric */
    serve_stats_shard *stats;
    uv_timer_t tick; /* publishes the pool's use (dashboard) and the rejections (metrics) */
    int tick_open;
    unsigned index; /* the worker's, for its mailbox */
    int mailbox_open;
    int admin; /* the --admin-listen listener's (it has no client and no batcher) */
    serve_forward fwd;
    /* Without the route label: each endpoint's last status and its series of the request
     * counter, so that a run of one status (nearly every request) skips the lookup by label
     * text. status 0: none yet. */
    struct {
        int status;
        uint32_t series;
    } requests_memo[EP_COUNT];
    serve_trace *trace; /* TAILCUT_TRACE's, or NULL (cmd_serve_trace.c) */
};

/* One /api/... endpoint request in flight. */
typedef struct serve_call {
    serve_worker *sw;
    serve_conf *conf;         /* the configuration it started with: one reference */
    const serve_route *route; /* in conf */
    tc_request *req;
    tc_future *work; /* the hedge, or for /api/metadata the batched lookup within the deadline */
    endpoint ep;
    uint64_t timeout_ms;
    uint64_t trace;         /* its record in sw->trace, or 0 */
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
    /* A kind: proxy request: each replica's URL is tc__proxy_url's (its path, then the request's
     * target less the first strip_len bytes of its path), built for every URL. */
    int proxy;
    const char *strip;
    size_t strip_len;
} serve_call;

/* ---- cmd_serve_api.c ---- */

/* Answers an error before any attempt (and counts it). The attempt endpoints say so in
 * X-Tailcut-Attempts: 0, like every answer of theirs. */
void serve_respond_error(serve_worker *sw, const serve_route *route, tc_request *req, endpoint ep,
                         int status, const char *code, const char *message);

/* The client's X-Tailcut-Timeout-Ms (CONTRACT section 8): the rules of the `timeout` parameter,
 * so given at most once. Returns 0 and sets *present (and *timeout_ms when present), or TC_EINVAL
 * with the 400's message in *why. */
int serve_timeout_header(tc_request *req, uint64_t max_ms, uint64_t *timeout_ms, int *present,
                         const char **why);

/* Reads the request's `timeout` parameter, else its X-Tailcut-Timeout-Ms header, into
 * *timeout_ms: the value asked for, else the route's timeout_ms (or, when required, a 400).
 * Returns 0, or -1 once it has answered 400. */
int serve_call_timeout(serve_worker *sw, const serve_route *route, tc_request *req, endpoint ep,
                       int required, uint64_t *timeout_ms);

/* A new call for the request, its work not started yet. Returns NULL once it has answered 503
 * overloaded. */
serve_call *serve_call_new(serve_worker *sw, const serve_route *route, tc_request *req, endpoint ep,
                           uint64_t timeout_ms);

/* The call's work has started: count it in flight, cancel it if the client leaves, and run done
 * when it ends (done finishes the request and frees the call with serve_call_free). */
void serve_call_watch(serve_call *call, tc_future_cb done);
/* Counts the call in flight (the gauge and the dashboard) until serve_call_free; what
 * serve_call_watch does first, for a caller that watches its work itself (the proxy). */
void serve_call_count_in_flight(serve_call *call);
void serve_call_free(serve_call *call);
/* Frees a call whose work never started (nothing counted it in flight). */
void serve_call_abandon(serve_call *call);

/* /api/smart, /api/first, /api/all and /api/within-timeout. */
void serve_handle_attempts(serve_worker *sw, const serve_route *route, tc_request *req,
                           endpoint ep);

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

void serve_forward_init(serve_forward *fw);
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

/* The route's state: its own copies of the URL lists and its sets over them, its upstreams'
 * and its metadata upstreams' when it has any, with one replica per URL (with discovery, per URL
 * whose host is an address: names get theirs from cmd_serve_discovery.c); route->state, its
 * replicas and metadata_replicas are set. Returns 0 or a TC_E* code. */
int serve_route_state_new(serve_route *route);
/* 1 if st can serve route after a reload: the same name, URL lists, discovery and ejection. */
int serve_route_state_fits(const serve_route_state *st, const serve_route *route);
/* route takes st (one more reference) and its sets. */
void serve_route_state_adopt(serve_route *route, serve_route_state *st);
void serve_route_state_ref(serve_route_state *st);
/* Drops a reference; the last frees the sets (nothing uses them any more). NULL is fine. */
void serve_route_state_unref(serve_route_state *st);
/* The state's sets, for discovery (which watches them while the process runs). */
serve_replicas *serve_route_state_set(serve_route_state *st, int metadata);

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

/* /metrics: the replica families of the routes' sets (CONTRACT section 7; with_route: each
 * series names its route first), appended to b. Returns 0 or the tc__buf error. */
int serve_replicas_metrics(const serve_route *routes, size_t nroutes, int with_route, tc__buf *b);
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

/* {prefix}metadata/ID: through the worker's batcher for the route (made at its first lookup). */
void serve_handle_metadata(serve_worker *sw, const serve_route *route, tc_request *req);
/* Closes a worker's batchers of a configuration (on the worker's thread). */
void serve_metadata_close(serve_conf_share *share, size_t nroutes);

/* ---- cmd_serve.c ---- */

/* Every request of a serve listener (main or admin) comes here and is routed. */
void serve_handle(tc_request *req, void *data);

/* Where a kind: proxy route's requests go (cmd_serve_proxy.h declares what the proxy exports). */
void serve_route_proxy(serve_worker *sw, const serve_route *route, tc_request *req);

/* ---- cmd_serve_config.c ---- */

/* The route of path (as received, not percent-decoded: path[0..len)): the longest prefix that
 * matches (a prefix ending in '/' matches every path that starts with it; another matches
 * itself and what follows it after a '/'), or NULL. Any thread; conf is immutable. */
const serve_route *serve_route_match(const serve_conf *conf, const char *path, size_t len);

void serve_conf_ref(serve_conf *conf);
/* Drops a reference; the last frees the configuration (its routes drop their states). */
void serve_conf_unref(serve_conf *conf);

/* The configuration of the flags: one route `/api/` (kind api) that takes over route's settings
 * (route is zeroed). Returns 0 or TC_ENOMEM. */
int serve_conf_from_flags(serve_config *cfg, serve_route *route, serve_conf **out);

/* Reads cfg->config_path into a new configuration, and its global keys into globals (whose
 * command-line values, argv, are applied again over the file's: the flags win). Binds and
 * resolves nothing. Returns 0, or -1 with e's message (a one-line error, without "tailcut: "). */
int serve_conf_load(serve_config *cfg, serve_config *globals, int argc, char **argv,
                    serve_conf **out, settings_file_error *e);

/* Makes each route's state (replica sets) and hedging, taking them over from old's routes where
 * they fit (old may be NULL). Returns 0 or a TC_E* code. */
int serve_conf_start(serve_conf *conf, const serve_conf *old);

/* The worker's share of its configuration (its batchers, its calls in flight). */
serve_conf_share *serve_conf_share_of(serve_worker *sw, serve_conf *conf);

/* The settings a reload may change, for conf: the listener's from globals (max_connections,
 * access_log_format, the largest route's body), the client's (http_engine,
 * upstream_connections), and the access log: current's when it names the same one, else
 * globals->access_log_path opened (on the main thread). Returns 0, or -1 with e's message. */
int serve_conf_globals(serve_conf *conf, const serve_config *globals, const serve_conf *current,
                       settings_error *e);
/* The start's: the log the process opened (cfg->access_log) becomes conf's. */
int serve_conf_globals_first(serve_conf *conf, serve_config *cfg);
void serve_log_unref(serve_log *log);

/* On the worker's thread: gives its share of conf a client, the one of the configuration it
 * serves with when the client settings are the same, else a new one (sw->client then). Returns
 * 0 or a TC_E* code (a worker that has one keeps using it). */
int serve_conf_client(serve_worker *sw, serve_conf *conf);
/* At the worker's end: every configuration it holds gives its client back (closing them). */
void serve_conf_clients_close(serve_worker *sw);

/* On the worker's thread: registers it for reloads (its uv_async on loop) / closes that. */
int serve_reload_open(serve_worker *sw, uv_loop_t *loop);
void serve_reload_close(serve_worker *sw);
/* A request's hold on the configuration it starts with (at its head, on the worker's thread):
 * take returns the worker's configuration in force with one reference and one call counted;
 * give, when the request ends, drops both (a configuration no longer in force whose last call
 * this was lets the worker's batchers of it go). The request's route stays valid in between. */
serve_conf *serve_conf_take(serve_worker *sw);
void serve_conf_give(serve_worker *sw, serve_conf *conf);
/* A call of the worker on conf has ended: a configuration no longer in force whose last call
 * this was lets its batchers go. */
void serve_conf_call_done(serve_worker *sw, serve_conf *conf);
/* On the main thread, at SIGHUP: reads the file again; a valid one becomes the configuration
 * in force and every worker takes it; an invalid one changes nothing. Prints the stderr line
 * and counts tailcut_config_reloads_total. argc/argv: the command line, which wins. */
void serve_reload(serve_config *cfg, int argc, char **argv, uint64_t given);

/* ---- cmd_serve_dashboard.c ---- */

void serve_handle_dashboard(serve_worker *sw, tc_request *req);
void serve_handle_stats(serve_worker *sw, tc_request *req);
/* A route's figures: made with its state (0 or TC_ENOMEM), freed with it. */
int serve_figures_init(serve_figures *f);
void serve_figures_destroy(serve_figures *f);
/* Adds n to a figure of route (with --config; a route's own requests only). */
void serve_figures_add(serve_worker *sw, const serve_route *route, int fig, uint64_t n);
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
/* Defines every metric family and series of the process (with_route: the route label first on
 * the per-request, hedge, budget and replica families). Returns 0 or a TC_E* code. */
int serve_metrics_define(serve_metrics *m, int with_route);
/* Counts a finished request: by endpoint and status (and with --config its route: NULL for
 * tailcut's own paths and unmatched requests), and its latency (if ready_ns != 0). */
void serve_count_request(serve_worker *sw, const serve_route *route, endpoint ep, int status,
                         uint64_t ready_ns);
/* The series of a family for a route's request (with --config the route's name is its first
 * label): fixed is the series without --config. */
uint32_t serve_series(serve_worker *sw, uint32_t family, const serve_route *route,
                      const char *value, uint32_t fixed);
/* Adds the connections the worker's server rejected since the last call (on its tick). */
void serve_count_rejections(serve_worker *sw);
/* The hedge's observer (tc_hedge_policy.observe, data = the serve_call). */
void serve_count_attempts(const tc_hedge_result *r, void *data);
/* Publishes the worker's upstream pool: its use to the dashboard, and what its client counted
 * since the last call (queue waits, stale-connection re-sends) to the metrics. */
void serve_count_pool(serve_worker *sw);
void serve_handle_metrics(serve_worker *sw, tc_request *req);

/* ---- cmd_serve_trace.c ---- */

/* NULL unless TAILCUT_TRACE is set; then the trace of the worker's loop, dumped to
 * TAILCUT_TRACE.<worker> by serve_trace_close. */
serve_trace *serve_trace_open(uv_loop_t *loop, unsigned worker);
/* A record for an attempt-endpoint request just read; its id (0 without a trace). */
uint64_t serve_trace_read(serve_trace *t, const tc_request *req, uint64_t deadline_ms);
void serve_trace_done(serve_trace *t, uint64_t id);
void serve_trace_written(serve_trace *t, uint64_t id, int status);
/* Closes the trace's loop handles (the loop then runs them out), then writes and frees it. */
void serve_trace_stop(serve_trace *t);
void serve_trace_close(serve_trace *t);

#endif /* TAILCUT_APP_CMD_SERVE_H */
