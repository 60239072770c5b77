/*
 * tailcut serve: the live dashboard. GET /dashboard answers the page (app/serve/dashboard/, inlined
 * and embedded at build time by cmake/embed_dashboard.cmake, with its Content-Security-Policy); GET
 * /dashboard/stats answers the JSON snapshot of cmd_serve_stats.c; --admin-listen runs a listener
 * of its own, on its own thread, for /metrics, the dashboard and the health checks.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "base/clock.h"
#include "cmd_serve.h"
#include "common/runtime.h"

/* Generated from app/serve/dashboard/ (build tree: generated/dashboard_page.c). */
extern const unsigned char serve_dashboard_page[];
extern const size_t serve_dashboard_page_len;
extern const char serve_dashboard_csp[];

/* How often each worker publishes its upstream pool's use and its server's rejections. */
#define SERVE_TICK_MS 500

void serve_handle_dashboard(serve_worker *sw, tc_request *req)
{
    const tc_server_header headers[] = {
        {"Content-Security-Policy", serve_dashboard_csp},
        {"X-Content-Type-Options", "nosniff"},
        {"Referrer-Policy", "no-referrer"},
        {"Cache-Control", "no-store"},
    };
    serve_count_request(sw, EP_DASHBOARD, 200, tc_request_ready_ns(req));
    tc_request_respond(req, 200, "text/html; charset=utf-8", headers,
                       sizeof(headers) / sizeof(headers[0]), (const char *)serve_dashboard_page,
                       serve_dashboard_page_len);
}

static uint64_t wall_ms(void)
{
    struct timeval tv;
    (void)gettimeofday(&tv, NULL);
    return (uint64_t)tv.tv_sec * 1000u + (uint64_t)tv.tv_usec / 1000u;
}

void serve_handle_stats(serve_worker *sw, tc_request *req)
{
    static const tc_server_header headers[] = {{"Cache-Control", "no-store"}};
    serve_config *cfg = sw->cfg;
    const serve_route *route = sw->route;
    serve_stats_now now;
    memset(&now, 0, sizeof(now));
    now.time_ms = wall_ms();
    now.hedge_delay_ms = route->adaptive != NULL
                             ? tc_hedge_adaptive_delay_ms(route->adaptive, tc__now_ms())
                             : route->hedge_delay.ms;
    now.hedge_percentile_tenths = route->hedge_delay.percentile_tenths;
    now.hedge_budget_e6 = route->budget != NULL ? route->hedge_budget_e6 : 0;
    now.connections = atomic_load(&cfg->conn_count);
    /* each replica (origin and address) is a pool of --upstream-connections per worker */
    now.pool_max = cfg->upstream_connections * serve_replicas_pools(route) * cfg->workers;
    now.workers = (unsigned)cfg->workers;
    char *json = NULL;
    size_t len = 0;
    tc__buf replicas;
    tc__buf_init(&replicas, NULL, 0, SERVE_STATS_MAX_REPLICAS_JSON);
    int err = serve_replicas_stats(route, &replicas);
    now.extra = replicas.data;
    now.extra_len = replicas.len;
    if (err == 0)
        err = serve_stats_json(cfg->stats, serve_stats_now_sec(cfg->stats), &now, &json, &len);
    tc__buf_reset(&replicas);
    if (err != 0) {
        serve_respond_error(sw, req, EP_STATS, 503, "overloaded", "out of memory");
        return;
    }
    serve_count_request(sw, EP_STATS, 200, tc_request_ready_ns(req));
    tc_request_respond(req, 200, "application/json", headers, 1, json, len);
    free(json);
}

/* ---- the tick ------------------------------------------------------------------------------- */

/* Also what brings the metadata calls' stale-connection re-sends into the metrics: nothing else
 * reads the client's counters after a batched call. Worker 0's samples the replica sets (one
 * sample a second for the process). */
static void on_tick(uv_timer_t *t)
{
    serve_worker *sw = t->data;
    serve_count_rejections(sw);
    serve_count_pool(sw);
    if (sw->index == 0 && !sw->admin)
        serve_replicas_tick(sw->route, serve_stats_now_sec(sw->cfg->stats));
}

void serve_tick_start(serve_worker *sw, uv_loop_t *loop)
{
    uv_timer_init(loop, &sw->tick);
    sw->tick.data = sw;
    sw->tick_open = 1;
    uv_timer_start(&sw->tick, on_tick, SERVE_TICK_MS, SERVE_TICK_MS);
    uv_unref((uv_handle_t *)&sw->tick); /* never what keeps a draining worker alive */
}

void serve_tick_stop(serve_worker *sw)
{
    if (!sw->tick_open)
        return;
    sw->tick_open = 0;
    uv_close((uv_handle_t *)&sw->tick, NULL);
}

/* ---- --admin-listen ------------------------------------------------------------------------- */

struct serve_admin {
    rt_thread th;
    uv_async_t stop;
    serve_worker sw;
    int err;
};

static void on_admin_closed(tc_server *srv, void *data)
{
    serve_admin *a = data;
    a->sw.srv = NULL;
}

static void on_admin_stop(uv_async_t *h)
{
    serve_admin *a = h->data;
    if (a->sw.srv != NULL)
        tc_server_close(a->sw.srv, on_admin_closed, a);
    serve_tick_stop(&a->sw);
    uv_close((uv_handle_t *)&a->stop, NULL);
}

static void admin_main(void *arg)
{
    serve_admin *a = arg;
    serve_config *cfg = a->sw.cfg;
    tc_server_config sc;
    tc_server_config_init(&sc);
    sc.host = cfg->admin.host;
    sc.port = cfg->admin.port;
    /* its own small cap: a full main listener must not lock the operator out */
    sc.max_connections = 64;
    sc.max_body = a->sw.route->max_body;
    sc.access_log = cfg->access_log;
    sc.access_log_format = cfg->access_log_format;
    sc.access_log_replica = cfg->log_replica; /* one shape of line for the whole log */
    sc.ready_path = "/readyz"; /* the process's one readiness, as on the main listener */
    sc.ready = &cfg->ready;
    sc.header_timeout_ms = cfg->header_timeout_ms;
    sc.idle_timeout_ms = cfg->idle_timeout_ms;
    sc.handler = serve_handle;
    sc.handler_data = &a->sw;
    a->err = tc_metrics_shard_new(cfg->metrics.reg, &a->sw.shard);
    if (a->err == 0)
        a->err = tc_server_new(&a->sw.srv, &a->th.loop, &sc);
    if (a->err == 0) {
        uv_async_init(&a->th.loop, &a->stop, on_admin_stop);
        a->stop.data = a;
        serve_tick_start(&a->sw, &a->th.loop); /* its rejected connections count too */
    }
    rt_thread_ready(&a->th);
    uv_run(&a->th.loop, UV_RUN_DEFAULT);
    uv_loop_close(&a->th.loop);
}

int serve_admin_start(serve_config *cfg, serve_admin **out)
{
    serve_admin *a = calloc(1, sizeof(*a));
    if (a == NULL)
        return TC_ENOMEM;
    a->sw.cfg = cfg;
    a->sw.route = &cfg->routes[0]; /* its /metrics and dashboard show the route's hedging */
    a->sw.admin = 1;
    a->sw.stats = serve_stats_shard_at(cfg->stats, (unsigned)cfg->workers);
    int err = rt_thread_start(&a->th, admin_main, a);
    if (err == 0 && a->err != 0) {
        uv_thread_join(&a->th.thread);
        err = a->err;
    }
    if (err != 0) { /* word for word the runtime's line for --listen */
        (void)fprintf(stderr, "tailcut: cannot listen on %s:%d: %s\n", cfg->admin.host,
                      cfg->admin.port, tc_strerror(err));
        free(a);
        return err;
    }
    int v6 = strchr(cfg->admin.host, ':') != NULL;
    (void)fprintf(stderr, "tailcut: admin listening on http://%s%s%s:%d\n", v6 ? "[" : "",
                  cfg->admin.host, v6 ? "]" : "", tc_server_port(a->sw.srv));
    *out = a;
    return 0;
}

void serve_admin_stop(serve_admin *a)
{
    if (a == NULL)
        return;
    uv_async_send(&a->stop);
    uv_thread_join(&a->th.thread);
    free(a);
}
