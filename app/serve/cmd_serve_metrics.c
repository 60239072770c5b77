/*
 * tailcut serve: the metric families and what each request adds to them, and GET /metrics.
 *
 * The families are defined once at start-up in one registry; each worker adds to its own shard,
 * and /metrics renders the sum of all shards plus the hedge delay in force.
 */
#include <stdio.h>
#include <stdlib.h>

#include "base/clock.h"
#include "base/fmt.h"
#include "cmd_serve.h"

/* Largest /metrics text we render. */
#define SERVE_MAX_METRICS_TEXT (4 * 1024 * 1024)

static const char *const endpoint_names[EP_COUNT] = {
    "smart",     "first",           "all",   "within_timeout", "metadata", "healthz", "metrics",
    "dashboard", "dashboard_stats", "proxy", "other",
};

int serve_stats_define(serve_config *cfg)
{
    /* a shard per worker, and one for the admin listener's thread */
    return serve_stats_new(&cfg->stats, (unsigned)cfg->workers + 1, endpoint_names, EP_COUNT);
}

uint32_t serve_series(serve_worker *sw, uint32_t family, const serve_route *route,
                      const char *value, uint32_t fixed)
{
    if (!sw->cfg->with_route_label)
        return fixed;
    const char *values[2] = {route != NULL ? route->name : "", value};
    uint32_t series;
    (void)tc_metrics_series_lookup(sw->shard, family, values, &series);
    return series;
}

/* Counts a finished request: by endpoint and status, and its latency. */
void serve_count_request(serve_worker *sw, const serve_route *route, endpoint ep, int status,
                         uint64_t ready_ns)
{
    serve_metrics *m = &sw->cfg->metrics;
    uint32_t series;
    if (!sw->cfg->with_route_label && status > 0 && sw->requests_memo[ep].status == status) {
        series = sw->requests_memo[ep].series;
    } else {
        char code[TC__FMT_U64_MAX + 1];
        code[tc__fmt_u64(code, status < 0 ? 0 : (uint64_t)status)] = '\0';
        const char *values[3] = {endpoint_names[ep], code, NULL};
        if (sw->cfg->with_route_label) {
            values[0] = route != NULL ? route->name : "";
            values[1] = endpoint_names[ep];
            values[2] = code;
        }
        /* a series, once there, keeps its id in this worker's shard for good */
        if (tc_metrics_series_lookup(sw->shard, m->requests, values, &series) == 0 &&
            !sw->cfg->with_route_label && status > 0) {
            sw->requests_memo[ep].status = status;
            sw->requests_memo[ep].series = series;
        }
    }
    tc_metrics_counter_add(sw->shard, m->requests, series, 1);
    uint64_t now_ns = uv_hrtime();
    if (ready_ns != 0)
        tc_metrics_histogram_observe(
            sw->shard, m->duration,
            serve_series(sw, m->duration, route, endpoint_names[ep], m->duration_series[ep]),
            (double)(now_ns - ready_ns) / 1e9);
    if (ep == EP_SMART)
        serve_figures_add(sw, route, SERVE_FIG_REQUESTS, 1);
    /* The dashboard's history leaves out the dashboard's own polling; its latency chart shows
     * the /api/... requests. */
    if (ep == EP_DASHBOARD || ep == EP_STATS)
        return;
    int api =
        ep == EP_SMART || ep == EP_FIRST || ep == EP_ALL || ep == EP_WITHIN || ep == EP_METADATA;
    serve_stats_request(sw->stats, serve_stats_sec_at(sw->cfg->stats, now_ns), (unsigned)ep, status,
                        api && ready_ns != 0 && now_ns >= ready_ns ? (now_ns - ready_ns) / 1000
                                                                   : SERVE_STATS_NO_VALUE);
}

/* The hedge's observer: adds the attempt outcomes of a finished hedge to the metrics, also when
 * it was cancelled because the client left. */
void serve_count_attempts(const tc_hedge_result *r, void *data)
{
    serve_call *call = data;
    serve_worker *sw = call->sw;
    const serve_route *route = call->route;
    serve_metrics *m = &sw->cfg->metrics;
    for (unsigned i = 0; i < r->nattempts; i++) {
        const tc_hedge_attempt *a = &r->attempts[i];
        const char *outcome = tc_attempt_outcome_name(a->outcome);
        tc_metrics_counter_add(
            sw->shard, m->attempts,
            serve_series(sw, m->attempts, route, outcome, m->outcome_series[a->outcome]), 1);
        if (a->ended_ns >= a->started_ns)
            tc_metrics_histogram_observe(sw->shard, m->attempt_duration,
                                         serve_series(sw, m->attempt_duration, route, outcome,
                                                      m->attempt_duration_series[a->outcome]),
                                         (double)(a->ended_ns - a->started_ns) / 1e9);
    }
    unsigned extra = 0;
    for (unsigned i = 0; i < r->nattempts; i++)
        extra += r->attempts[i].hedged ? 1 : 0;
    serve_figures_add(sw, route, SERVE_FIG_EXTRA, extra);
    serve_figures_add(sw, route, SERVE_FIG_DENIED, r->denied);
    serve_figures_add(sw, route, SERVE_FIG_FIRED, r->hedge_fired ? 1 : 0);
    serve_figures_add(sw, route, SERVE_FIG_WON, r->winner >= 0 && r->attempts[r->winner].hedged);
    if (r->denied > 0)
        tc_metrics_counter_add(
            sw->shard, m->hedges_denied,
            serve_series(sw, m->hedges_denied, route, NULL, TC_METRICS_SERIES_DEFAULT), r->denied);
    if (r->hedge_fired)
        tc_metrics_counter_add(sw->shard, m->hedges,
                               serve_series(sw, m->hedges, route, NULL, TC_METRICS_SERIES_DEFAULT),
                               1);
    if (r->winner >= 0 && r->attempts[r->winner].hedged)
        tc_metrics_counter_add(
            sw->shard, m->hedge_wins,
            serve_series(sw, m->hedge_wins, route, NULL, TC_METRICS_SERIES_DEFAULT), 1);
    serve_stats_hedge(sw->stats, serve_stats_now_sec(sw->cfg->stats), r);
    serve_count_pool(sw);
}

void serve_count_pool(serve_worker *sw)
{
    serve_metrics *m = &sw->cfg->metrics;
    if (sw->client == NULL) {
        serve_stats_pool(sw->stats, 0, 0);
        return;
    }
    tc_client_stats cs;
    tc_client_get_stats(sw->client, &cs);
    serve_stats_pool(sw->stats, cs.open_connections, cs.in_flight);
    if (cs.queued > sw->queue_waits_seen) {
        tc_metrics_counter_add(sw->shard, m->queue_waits, TC_METRICS_SERIES_DEFAULT,
                               cs.queued - sw->queue_waits_seen);
        sw->queue_waits_seen = cs.queued;
    }
    if (cs.stale_retries > sw->stale_retries_seen) {
        tc_metrics_counter_add(sw->shard, m->stale_retries, TC_METRICS_SERIES_DEFAULT,
                               cs.stale_retries - sw->stale_retries_seen);
        sw->stale_retries_seen = cs.stale_retries;
    }
}

void serve_count_rejections(serve_worker *sw)
{
    if (sw->srv == NULL)
        return;
    serve_metrics *m = &sw->cfg->metrics;
    tc_server_stats st;
    tc_server_get_stats(sw->srv, &st);
    tc_metrics_counter_add(sw->shard, m->conns_rejected, m->rejected_no_memory,
                           st.rejected_no_memory - sw->rejected_seen.rejected_no_memory);
    tc_metrics_counter_add(sw->shard, m->conns_rejected, m->rejected_over_limit,
                           st.rejected_over_limit - sw->rejected_seen.rejected_over_limit);
    sw->rejected_seen = st;
}

/* The hedge delay in force, in seconds: the percentile estimate (or its fallback) for pNN, else
 * the fixed --hedge-delay; with --config one series per route. A gauge the registry cannot hold
 * (its gauges are whole numbers summed over workers, and this one is a fraction shared by all),
 * so it is rendered here, as are the reloads (counted on the main thread, which has no shard). */
static int render_own(const serve_config *cfg, const serve_conf *conf, tc__buf *b)
{
    char line[512];
    int err = 0;
#define ADD(...)                                                                                   \
    do {                                                                                           \
        int n_ = snprintf(line, sizeof(line), __VA_ARGS__);                                        \
        if (err == 0 && n_ > 0)                                                                    \
            err = tc__buf_append(b, line, (size_t)n_ < sizeof(line) ? (size_t)n_ : 0);             \
    } while (0)
    ADD("# HELP tailcut_hedge_delay_seconds The /api/smart hedge delay in force\n"
        "# TYPE tailcut_hedge_delay_seconds gauge\n");
    for (size_t i = 0; i < conf->nroutes; i++) {
        const serve_route *route = &conf->routes[i];
        uint64_t ms = route->adaptive != NULL
                          ? tc_hedge_adaptive_delay_ms(route->adaptive, tc__now_ms())
                          : route->hedge_delay.ms;
        if (cfg->with_route_label)
            ADD("tailcut_hedge_delay_seconds{route=\"%s\"} %.3f\n", route->name,
                (double)ms / 1000.0);
        else
            ADD("tailcut_hedge_delay_seconds %.3f\n", (double)ms / 1000.0);
    }
    if (cfg->with_route_label)
        ADD("# HELP tailcut_config_reloads_total Configuration reloads (SIGHUP), by result\n"
            "# TYPE tailcut_config_reloads_total counter\n"
            "tailcut_config_reloads_total{result=\"ok\"} %llu\n"
            "tailcut_config_reloads_total{result=\"error\"} %llu\n",
            (unsigned long long)atomic_load(&cfg->metrics.reloads_ok),
            (unsigned long long)atomic_load(&cfg->metrics.reloads_error));
#undef ADD
    return err;
}

void serve_handle_metrics(serve_worker *sw, tc_request *req)
{
    char *text = NULL;
    size_t len = 0;
    serve_count_request(sw, NULL, EP_METRICS, 200, tc_request_ready_ns(req));
    if (tc_metrics_render(sw->cfg->metrics.reg, (size_t)SERVE_MAX_METRICS_TEXT, &text, &len) != 0) {
        serve_respond_error(sw, NULL, req, EP_METRICS, 503, "overloaded", "metrics unavailable");
        return;
    }
    /* The hedge delays, the reloads and the replica sets are the process's, read once here (not
     * per worker shard). */
    tc__buf b;
    tc__buf_init(&b, text, len + 1, (size_t)SERVE_MAX_METRICS_TEXT);
    b.len = len;
    const serve_conf *conf = sw->conf;
    if (render_own(sw->cfg, conf, &b) == 0 &&
        serve_replicas_metrics(conf->routes, conf->nroutes, sw->cfg->with_route_label, &b) == 0)
        tc_request_respond(req, 200, "text/plain; version=0.0.4", NULL, 0, b.data, b.len);
    else
        serve_respond_error(sw, NULL, req, EP_METRICS, 503, "overloaded", "out of memory");
    tc__buf_reset(&b);
    free(text);
}

int serve_metrics_define(serve_metrics *m, int with_route)
{
    static const char *const ep_label[] = {"endpoint"};
    static const char *const ep_status_labels[] = {"endpoint", "status"};
    static const char *const outcome_label[] = {"outcome"};
    /* With --config: the route first (its values are the routes' names, which a reload may
     * change: dynamic series only). */
    static const char *const route_label[] = {"route"};
    static const char *const route_ep_label[] = {"route", "endpoint"};
    static const char *const route_ep_status_labels[] = {"route", "endpoint", "status"};
    static const char *const route_outcome_label[] = {"route", "outcome"};
    static const char *const reason_label[] = {"reason"};
    static const char *const route_reason_labels[] = {"route", "reason"};
    static const double latency_buckets[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.4,
                                             0.5,   0.75, 1,     2.5,  5,   10,  30,  60};
    static const double attempt_buckets[] = {
        0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15,
        0.2,   0.3,    0.5,   0.75, 1,     1.5,  2,     3,    5,    10,   30,    60};
    static const double batch_size_buckets[] = {1, 2, 5, 10, 20, 30, 40, 50, 100, 200, 500, 1000};
    static const double batch_wait_buckets[] = {0.001, 0.002, 0.005, 0.008, 0.01, 0.011,
                                                0.012, 0.015, 0.02,  0.05,  0.1,  0.25,
                                                0.5,   1,     2.5,   5,     10,   60};
    tc_metrics_family_def defs[] = {
        {TC_METRIC_COUNTER, "tailcut_requests_total", "Requests answered, by endpoint and status",
         ep_status_labels, 2, NULL, 0, 128},
        {TC_METRIC_HISTOGRAM, "tailcut_request_duration_seconds",
         "Time from a request fully read to its answer", ep_label, 1, latency_buckets,
         sizeof(latency_buckets) / sizeof(latency_buckets[0]), 0},
        {TC_METRIC_COUNTER, "tailcut_upstream_attempts_total", "Upstream attempts, by outcome",
         outcome_label, 1, NULL, 0, 0},
        {TC_METRIC_COUNTER, "tailcut_hedges_fired_total",
         "Requests whose extra (hedged) attempts were fired", NULL, 0, NULL, 0, 0},
        {TC_METRIC_COUNTER, "tailcut_hedge_wins_total", "Requests won by a hedged attempt", NULL, 0,
         NULL, 0, 0},
        {TC_METRIC_GAUGE, "tailcut_requests_in_flight", "API requests waiting for the upstream",
         NULL, 0, NULL, 0, 0},
        {TC_METRIC_COUNTER, "tailcut_upstream_pool_queue_waits_total",
         "Upstream attempts that waited for a pooled connection", NULL, 0, NULL, 0, 0},
        {TC_METRIC_COUNTER, "tailcut_metadata_batches_total",
         "Batched metadata calls sent to the metadata upstream", NULL, 0, NULL, 0, 0},
        {TC_METRIC_HISTOGRAM, "tailcut_metadata_batch_size", "Distinct IDs per batched call", NULL,
         0, batch_size_buckets, sizeof(batch_size_buckets) / sizeof(batch_size_buckets[0]), 0},
        {TC_METRIC_COUNTER, "tailcut_metadata_batch_keys_total",
         "IDs sent in batched calls (its rate is keys per second)", NULL, 0, NULL, 0, 0},
        {TC_METRIC_COUNTER, "tailcut_metadata_dedup_hits_total",
         "Lookups that joined an ID already waiting in the same batch", NULL, 0, NULL, 0, 0},
        {TC_METRIC_HISTOGRAM, "tailcut_metadata_batch_wait_seconds",
         "Time from a batch's first ID to its upstream call (the longest any of its IDs waited)",
         NULL, 0, batch_wait_buckets, sizeof(batch_wait_buckets) / sizeof(batch_wait_buckets[0]),
         0},
        {TC_METRIC_COUNTER, "tailcut_upstream_stale_retries_total",
         "Batched metadata calls sent once more because their pooled connection died before any "
         "answer byte (an attempt never is: that is a failed attempt)",
         NULL, 0, NULL, 0, 0},
        {TC_METRIC_COUNTER, "tailcut_hedges_denied_total",
         "Extra /api/smart attempts the hedge budget denied", NULL, 0, NULL, 0, 0},
        {TC_METRIC_HISTOGRAM, "tailcut_upstream_attempt_duration_seconds",
         "Upstream attempt latency, from firing to its end, by outcome", outcome_label, 1,
         attempt_buckets, sizeof(attempt_buckets) / sizeof(attempt_buckets[0]), 0},
        {TC_METRIC_COUNTER, "tailcut_connections_rejected_total",
         "Client connections closed as soon as accepted, by reason: out_of_memory (no memory for "
         "it: closed with no answer), max_connections (answered 503 overloaded)",
         reason_label, 1, NULL, 0, 0},
        {TC_METRIC_COUNTER, "tailcut_proxy_unhedged_total",
         "kind: proxy requests sent once, unhedged, by route and reason (method: not a method "
         "that hedges, without a usable Idempotency-Key; body_too_large: over the replay limit)",
         route_reason_labels, 2, NULL, 0, 512},
    };
    uint32_t *ids[] = {&m->requests,       &m->duration,      &m->attempts,
                       &m->hedges,         &m->hedge_wins,    &m->in_flight,
                       &m->queue_waits,    &m->batches,       &m->batch_size,
                       &m->batch_keys,     &m->batch_dedup,   &m->batch_wait,
                       &m->stale_retries,  &m->hedges_denied, &m->attempt_duration,
                       &m->conns_rejected, &m->proxy_unhedged};
    if (with_route) {
        /* requests, duration, attempts, hedges, wins, in flight, the metadata batches, denied
         * and attempt duration by route */
        static const struct {
            size_t def;
            const char *const *labels;
            size_t n;
        } routed[] = {{0, route_ep_status_labels, 3},
                      {1, route_ep_label, 2},
                      {2, route_outcome_label, 2},
                      {3, route_label, 1},
                      {4, route_label, 1},
                      {5, route_label, 1},
                      {7, route_label, 1},
                      {8, route_label, 1},
                      {9, route_label, 1},
                      {10, route_label, 1},
                      {11, route_label, 1},
                      {13, route_label, 1},
                      {14, route_outcome_label, 2}};
        for (size_t i = 0; i < sizeof(routed) / sizeof(routed[0]); i++) {
            defs[routed[i].def].label_names = routed[i].labels;
            defs[routed[i].def].n_labels = routed[i].n;
            defs[routed[i].def].max_dynamic = TC_METRICS_MAX_DYNAMIC;
        }
    }
    atomic_init(&m->reloads_ok, 0);
    atomic_init(&m->reloads_error, 0);
    if (tc_metrics_registry_new(&m->reg) != 0)
        return TC_ENOMEM;
    /* Without --config there is no kind: proxy route, and the metrics are exactly as before
     * routes came (CONTRACT section 8): no proxy family (the last one), no proxy series. */
    size_t ndefs = sizeof(defs) / sizeof(defs[0]) - (with_route ? 0 : 1);
    for (size_t i = 0; i < ndefs; i++) {
        int err = tc_metrics_family_define(m->reg, &defs[i], ids[i]);
        if (err != 0)
            return err;
    }
    for (int e = 0; e < EP_COUNT && !with_route; e++) {
        if (e == EP_PROXY)
            continue;
        const char *v[1] = {endpoint_names[e]};
        int err = tc_metrics_series_define(m->reg, m->duration, v, &m->duration_series[e]);
        if (err != 0)
            return err;
    }
    for (int o = 0; o < TC_OUTCOME_COUNT && !with_route; o++) {
        const char *v[1] = {tc_attempt_outcome_name((tc_attempt_outcome)o)};
        int err = tc_metrics_series_define(m->reg, m->attempts, v, &m->outcome_series[o]);
        if (err == 0)
            err = tc_metrics_series_define(m->reg, m->attempt_duration, v,
                                           &m->attempt_duration_series[o]);
        if (err != 0)
            return err;
    }
    const char *no_memory[1] = {"out_of_memory"}, *over_limit[1] = {"max_connections"};
    int err =
        tc_metrics_series_define(m->reg, m->conns_rejected, no_memory, &m->rejected_no_memory);
    if (err == 0)
        err = tc_metrics_series_define(m->reg, m->conns_rejected, over_limit,
                                       &m->rejected_over_limit);
    return err;
}
