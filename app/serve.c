/*
 * tailcut serve: the smart API service (CONTRACT §1).
 *
 * Each worker thread gets its own loop, its own listening socket on the shared port and its own
 * per-worker state; serve_handle() routes a request to the endpoint that answers it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "commands.h"
#include "runtime.h"
#include "tailcut/batch.h"
#include "tailcut/client.h"
#include "tailcut/hedge.h"
#include "tailcut/json.h"
#include "tailcut/metrics.h"
#include "tailcut/server.h"
#include "tailcut/upstream.h"
#include "tailcut/url.h"

/* Largest /metrics text we render. */
#define SERVE_MAX_METRICS_TEXT (4 * 1024 * 1024)

/* Endpoints, for routing and metric labels. */
typedef enum endpoint {
    EP_SMART = 0,
    EP_FIRST,
    EP_ALL,
    EP_WITHIN,
    EP_METADATA,
    EP_HEALTHZ,
    EP_METRICS,
    EP_OTHER,
    EP_COUNT
} endpoint;

static const char *const endpoint_names[EP_COUNT] = {
    "smart", "first", "all", "within_timeout", "metadata", "healthz", "metrics", "other",
};

/* Metric family ids, filled once at start-up. */
typedef struct serve_metrics {
    tc_metrics_registry *reg;
    uint32_t requests, duration, attempts, hedges, hedge_wins, in_flight, queue_waits;
    uint32_t stale_retries;
    uint32_t hedges_denied, attempt_duration; /* adaptive hedging (CONTRACT §4) */
    uint32_t batches, batch_size, batch_keys, batch_dedup, batch_wait; /* /api/metadata */
    uint32_t duration_series[EP_COUNT];
    uint32_t outcome_series[TC_OUTCOME_COUNT];
    uint32_t attempt_duration_series[TC_OUTCOME_COUNT];
} serve_metrics;

typedef struct serve_config {
    char host[64];
    int port;
    char *upstream;
    char *metadata_upstream;
    const char *upstream_ca;
    int http_engine; /* tc_client_engine */
    uint64_t hedge_delay_ms;
    uint64_t hedge_extra;
    /* Adaptive hedging (CONTRACT §4): --hedge-delay pNN (percentile in tenths, 0 = a fixed
     * delay), --hedge-delay-fallback and --hedge-budget (0 = off). The delay source and the
     * budget are one object each for the whole process, shared by every worker. */
    unsigned hedge_percentile_tenths;
    uint64_t hedge_fallback_ms;
    uint64_t hedge_budget_e6;
    tc_hedge_adaptive *adaptive;
    tc_hedge_budget *budget;
    uint64_t max_timeout_ms;
    uint64_t upstream_connections;
    uint64_t batch_max;
    uint64_t batch_wait_ms;
    uint64_t max_connections;
    uint64_t max_body;
    uint64_t workers;
    uint64_t drain_timeout_ms;
    uint64_t header_timeout_ms;
    uint64_t idle_timeout_ms;
    FILE *access_log;
    atomic_size_t conn_count;
    serve_metrics metrics;
} serve_config;

typedef struct serve_worker {
    serve_config *cfg;
    tc_server *srv;
    tc_client *client;
    tc_metrics_shard *shard;
    uint64_t queue_waits_seen; /* client's queued count already added to the metric */
    uint64_t stale_retries_seen;
    tc_batcher *batcher; /* coalesces /api/metadata lookups */
    uint64_t dedup_seen; /* batcher's dedup hits already added to the metric */
} serve_worker;

/* One /api/... endpoint request in flight. */
typedef struct api_call {
    serve_worker *sw;
    tc_request *req;
    tc_future *work; /* the hedge, or for /api/metadata the batched lookup within the deadline */
    endpoint ep;
    uint64_t timeout_ms;
    char id[TC_ID_MAX + 1]; /* /api/metadata only */
} api_call;

static const char serve_usage[] =
    "usage: tailcut serve [OPTIONS]\n"
    "\n"
    "The smart API service: hedged and fan-out calls to a slow, flaky upstream.\n"
    "\n"
    "options (defaults in brackets):\n";

/* ---- endpoints ------------------------------------------------------------------------------ */

static int str_eq(tc_str s, const char *lit)
{
    size_t n = strlen(lit);
    return s.len == n && memcmp(s.base, lit, n) == 0;
}

/* Counts a finished request: by endpoint and status, and its latency. */
static void count_request(serve_worker *sw, endpoint ep, int status, uint64_t ready_ns)
{
    serve_metrics *m = &sw->cfg->metrics;
    char code[8];
    (void)snprintf(code, sizeof(code), "%d", status);
    const char *values[2] = {endpoint_names[ep], code};
    uint32_t series;
    tc_metrics_series_lookup(sw->shard, m->requests, values, &series);
    tc_metrics_counter_add(sw->shard, m->requests, series, 1);
    if (ready_ns != 0)
        tc_metrics_histogram_observe(sw->shard, m->duration, m->duration_series[ep],
                                     (double)(uv_hrtime() - ready_ns) / 1e9);
}

/* Errors answered before any attempt. The /api/... attempt endpoints say so in
 * X-Tailcut-Attempts: 0, like every answer of theirs. */
static void respond_error(serve_worker *sw, tc_request *req, endpoint ep, int status,
                          const char *code, const char *message)
{
    static const tc_server_header no_attempts = {"X-Tailcut-Attempts", "0"};
    int attempt_endpoint = ep == EP_SMART || ep == EP_FIRST || ep == EP_ALL || ep == EP_WITHIN;
    count_request(sw, ep, status, tc_request_ready_ns(req));
    tc_request_respond_error_with(req, status, code, message, &no_attempts,
                                  attempt_endpoint ? 1 : 0);
}

/* Growable output buffer for response bodies; bounded by what the upstream bodies allow. */
typedef struct outbuf {
    char *p;
    size_t len, cap;
    int failed;
} outbuf;

static void out_put(outbuf *b, const char *s, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *np = realloc(b->p, cap);
        if (np == NULL) {
            b->failed = 1;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

#define out_lit(b, lit) out_put((b), (lit), sizeof(lit) - 1)

/* The hedge's observer: adds the attempt outcomes of a finished hedge to the metrics, also when
 * it was cancelled because the client left. */
static void count_attempts(const tc_hedge_result *r, void *data)
{
    serve_worker *sw = data;
    serve_metrics *m = &sw->cfg->metrics;
    for (unsigned i = 0; i < r->nattempts; i++) {
        const tc_hedge_attempt *a = &r->attempts[i];
        tc_metrics_counter_add(sw->shard, m->attempts, m->outcome_series[a->outcome], 1);
        if (a->ended_ns >= a->started_ns)
            tc_metrics_histogram_observe(sw->shard, m->attempt_duration,
                                         m->attempt_duration_series[a->outcome],
                                         (double)(a->ended_ns - a->started_ns) / 1e9);
    }
    if (r->denied > 0)
        tc_metrics_counter_add(sw->shard, m->hedges_denied, TC_METRICS_SERIES_DEFAULT, r->denied);
    if (r->hedge_fired)
        tc_metrics_counter_add(sw->shard, m->hedges, TC_METRICS_SERIES_DEFAULT, 1);
    if (r->winner >= 0 && r->attempts[r->winner].hedged)
        tc_metrics_counter_add(sw->shard, m->hedge_wins, TC_METRICS_SERIES_DEFAULT, 1);
    tc_client_stats cs;
    tc_client_get_stats(sw->client, &cs);
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

static void api_call_free(api_call *call)
{
    tc_metrics_gauge_add(call->sw->shard, call->sw->cfg->metrics.in_flight,
                         TC_METRICS_SERIES_DEFAULT, -1);
    tc_future_unref(call->work);
    free(call);
}

static void on_client_gone(tc_request *req, void *data)
{
    api_call *call = data;
    tc_future_cancel(call->work); /* its done callback runs now and finishes the request */
}

/* The call's work has started: count it in flight, cancel it if the client leaves, and run done
 * when it ends (done finishes the request and frees the call). */
static void api_call_watch(api_call *call, tc_future_cb done)
{
    serve_worker *sw = call->sw;
    tc_metrics_gauge_add(sw->shard, sw->cfg->metrics.in_flight, TC_METRICS_SERIES_DEFAULT, 1);
    tc_request_on_abort(call->req, on_client_gone, call);
    if (tc_future_on_done(call->work, done, call) != 0) {
        tc_future_cancel(call->work);
        tc_request_on_abort(call->req, NULL, NULL);
        respond_error(sw, call->req, call->ep, 503, "overloaded", "out of memory");
        api_call_free(call);
    }
}

/* The hedge ended: answer per endpoint (CONTRACT §1), count, free. */
static void on_hedge_done(tc_future *f, void *data)
{
    api_call *call = data;
    serve_worker *sw = call->sw;
    tc_request *req = call->req;
    uint64_t ready_ns = tc_request_ready_ns(req);

    if (tc_future_state_of(f) != TC_FUTURE_FULFILLED) {
        /* Cancelled: the client went away. Nothing to send. */
        count_request(sw, call->ep, 499, ready_ns);
        tc_request_drop(req, 0);
        api_call_free(call);
        return;
    }
    const tc_hedge_result *r = tc_future_value(f);
    char attempts[16];
    (void)snprintf(attempts, sizeof(attempts), "%u", r->nattempts);
    tc_server_header hdr = {"X-Tailcut-Attempts", attempts};
    outbuf body = {0};
    int status = 200;

    if (r->error == TC_ETIMEDOUT) {
        status = 504;
        char msg[128];
        (void)snprintf(msg, sizeof(msg), "%s within %llu ms",
                       call->ep == EP_ALL ? "not every attempt finished" : "no successful answer",
                       (unsigned long long)call->timeout_ms);
        out_lit(&body, "{\"success\":false,\"error\":\"timeout\",\"message\":\"");
        out_put(&body, msg, strlen(msg));
        out_lit(&body, "\"}");
    } else if (r->error == TC_EALLFAILED) {
        status = 502;
        out_lit(&body, "{\"success\":false,\"error\":\"upstream_failed\",\"message\":\"every "
                       "upstream attempt failed\",\"attempts\":");
        out_put(&body, attempts, strlen(attempts));
        out_lit(&body, "}");
    } else if (call->ep == EP_SMART || call->ep == EP_FIRST) {
        const tc_response *win = tc_hedge_response(r, (unsigned)r->winner);
        out_lit(&body, "{\"success\":true,\"response\":");
        out_put(&body, win->body, win->body_len);
        out_lit(&body, "}");
    } else {
        out_lit(&body, "[");
        for (unsigned k = 0; k < r->nsuccesses; k++) {
            const tc_response *resp = tc_hedge_response(r, r->successes[k]);
            if (k > 0)
                out_lit(&body, ",");
            out_put(&body, resp->body, resp->body_len);
        }
        out_lit(&body, "]");
    }
    if (body.failed) {
        respond_error(sw, req, call->ep, 503, "overloaded", "out of memory");
    } else {
        count_request(sw, call->ep, status, ready_ns);
        tc_request_respond(req, status, "application/json", &hdr, 1, body.p, body.len);
    }
    free(body.p);
    api_call_free(call);
}

static void handle_api(serve_worker *sw, tc_request *req, endpoint ep)
{
    serve_config *cfg = sw->cfg;
    tc_str query = tc_request_query(req);
    uint64_t timeout_ms = cfg->max_timeout_ms;
    int present = 0;
    const char *why = NULL;
    if (tc_query_timeout(query.base, query.len, cfg->max_timeout_ms, &timeout_ms, &present, &why) !=
        0) {
        respond_error(sw, req, ep, 400, "bad_request", why);
        return;
    }
    if (!present && ep == EP_WITHIN) {
        respond_error(sw, req, ep, 400, "bad_request", "timeout is required on this endpoint");
        return;
    }
    if (!present)
        timeout_ms = cfg->max_timeout_ms;

    tc_hedge_policy policy;
    tc_hedge_policy_init(&policy);
    policy.deadline_ms = tc_request_ready_ms(req) + timeout_ms;
    policy.observe = count_attempts;
    policy.observe_data = sw;
    switch (ep) {
    case EP_SMART:
        policy.extra = (unsigned)cfg->hedge_extra;
        policy.hedge_delay_ms = cfg->hedge_delay_ms;
        policy.staggered = cfg->adaptive != NULL; /* pNN: extra k at k x delay */
        policy.adaptive = cfg->adaptive;
        policy.budget = cfg->budget;
        break;
    case EP_FIRST:
        policy.initial = 3;
        policy.extra = 0;
        break;
    case EP_ALL:
        policy.mode = TC_HEDGE_ALL;
        policy.initial = 3;
        policy.extra = 0;
        break;
    default:
        policy.mode = TC_HEDGE_DEADLINE;
        policy.initial = 3;
        policy.extra = 0;
        break;
    }
    api_call *call = calloc(1, sizeof(*call));
    if (call == NULL) {
        respond_error(sw, req, ep, 503, "overloaded", "out of memory");
        return;
    }
    call->sw = sw;
    call->req = req;
    call->ep = ep;
    call->timeout_ms = timeout_ms;
    tc_client_request creq = {.url = cfg->upstream, .max_body = cfg->max_body};
    int err = tc_hedge_start(&call->work, sw->client, &creq, &policy);
    if (err != 0) {
        free(call);
        respond_error(sw, req, ep, 503, "overloaded", tc_strerror(err));
        return;
    }
    api_call_watch(call, on_hedge_done);
}

/* ---- /api/metadata/ID: batched lookups (CONTRACT §1 "Batched lookups") ------------------------
 *
 * Each worker has one tc_batcher. A lookup submits its ID and waits on the batcher's future
 * wrapped in tc_with_timeout() for what is left of its own deadline, so time spent collecting
 * or queued behind the in-flight cap counts. The dispatch makes one GET <metadata-upstream>?id=..
 * per batch with the worker's client, checks the answer once and resolves each ID with a copy of
 * its results[ID] bytes, shared by every waiter of that ID. A client that leaves only cancels
 * its own wait; the batch goes on for the others.
 */

#define METADATA_PREFIX "/api/metadata/"

/* One GET /api/metadata/ID waiting for its batch. */
/* The upstream answered the batch's call (or failed): settle every ID of the batch. Messages are
 * fixed text (no quotes or backslashes): they end up in JSON bodies as they are. */
static void on_meta_response(tc_future *f, void *data)
{
    tc_batch *batch = data;
    char msg[128];
    if (tc_future_state_of(f) != TC_FUTURE_FULFILLED) {
        int err = tc_future_error(f);
        (void)snprintf(msg, sizeof(msg), "the metadata upstream call failed: %s", tc_strerror(err));
        tc_batch_fail(batch, err, msg);
        return;
    }
    const tc_response *resp = tc_future_value(f);
    const char *results = NULL;
    size_t results_len = 0;
    if (resp->status != 200) {
        (void)snprintf(msg, sizeof(msg), "the metadata upstream answered HTTP %d", resp->status);
        tc_batch_fail(batch, TC_EHTTP, msg);
        return;
    }
    if (!tc_json_valid(resp->body, resp->body_len)) {
        tc_batch_fail(batch, TC_EPROTO, "the metadata upstream answered invalid JSON");
        return;
    }
    if (tc_json_object_get(resp->body, resp->body_len, "results", 7, &results, &results_len) != 0 ||
        results[0] != '{') {
        tc_batch_fail(batch, TC_EPROTO, "the metadata upstream answer has no results object");
        return;
    }
    for (size_t i = 0; i < tc_batch_size(batch); i++) {
        size_t key_len;
        const char *key = tc_batch_key(batch, i, &key_len);
        const char *val;
        size_t val_len;
        if (tc_json_object_get(results, results_len, key, key_len, &val, &val_len) != 0)
            continue; /* absent: tc_batch_done() makes it TC_EMISSING -> 404 */
        if (tc_batch_resolve_bytes(batch, i, val, val_len) != 0)
            tc_batch_reject_key(batch, i, TC_ENOMEM, "out of memory");
    }
    tc_batch_done(batch);
}

/* The batcher's dispatch: one upstream GET with every distinct ID of the batch. */
static void metadata_dispatch(tc_batch *batch, void *data)
{
    serve_worker *sw = data;
    serve_config *cfg = sw->cfg;
    serve_metrics *m = &cfg->metrics;
    size_t n = tc_batch_size(batch);
    tc_metrics_counter_add(sw->shard, m->batches, TC_METRICS_SERIES_DEFAULT, 1);
    tc_metrics_counter_add(sw->shard, m->batch_keys, TC_METRICS_SERIES_DEFAULT, n);
    tc_metrics_histogram_observe(sw->shard, m->batch_size, TC_METRICS_SERIES_DEFAULT, (double)n);
    tc_metrics_histogram_observe(sw->shard, m->batch_wait, TC_METRICS_SERIES_DEFAULT,
                                 tc_batch_wait_ms(batch) / 1e3);

    /* "?id=" or "&id=" plus each ID percent-encoded (at most 3 bytes per byte). */
    size_t base_len = strlen(cfg->metadata_upstream);
    size_t cap = base_len + n * (4 + 3 * TC_ID_MAX) + 1;
    char *url = malloc(cap);
    if (url == NULL) {
        tc_batch_fail(batch, TC_ENOMEM, "out of memory");
        return;
    }
    memcpy(url, cfg->metadata_upstream, base_len);
    size_t len = base_len;
    char sep = strchr(cfg->metadata_upstream, '?') != NULL ? '&' : '?';
    for (size_t i = 0; i < n; i++) {
        size_t key_len;
        const char *key = tc_batch_key(batch, i, &key_len);
        url[len++] = sep;
        sep = '&';
        memcpy(url + len, "id=", 3);
        len += 3;
        long enc = tc_url_encode(key, key_len, url + len, cap - len);
        if (enc < 0) {
            free(url);
            tc_batch_fail(batch, TC_EURL, "cannot encode an ID");
            return;
        }
        len += (size_t)enc;
    }
    url[len] = '\0';
    tc_client_request creq = {
        .url = url, .timeout_ms = cfg->max_timeout_ms, .max_body = (size_t)cfg->max_body};
    tc_future *f = NULL;
    int err = tc_client_request_start(&f, sw->client, &creq);
    free(url); /* the client keeps its own copy */
    if (err != 0) {
        char msg[128];
        (void)snprintf(msg, sizeof(msg), "the metadata upstream call failed: %s", tc_strerror(err));
        tc_batch_fail(batch, err, msg);
        return;
    }
    if (tc_future_on_done(f, on_meta_response, batch) != 0) {
        tc_future_cancel(f);
        tc_batch_fail(batch, TC_ENOMEM, "out of memory");
    }
    tc_future_unref(f); /* the registration holds the future until the answer */
}

/* The lookup ended: answer with results[ID], 404, 502, 504, or nothing if the client left. */
static void on_meta_done(tc_future *f, void *data)
{
    api_call *call = data;
    serve_worker *sw = call->sw;
    tc_request *req = call->req;
    char msg[256];

    if (tc_future_state_of(f) == TC_FUTURE_FULFILLED) {
        const tc_batch_bytes *v = tc_future_value(f);
        count_request(sw, EP_METADATA, 200, tc_request_ready_ns(req));
        tc_request_respond(req, 200, "application/json", NULL, 0, v->data, v->len);
    } else if (tc_future_state_of(f) == TC_FUTURE_CANCELLED) {
        if (tc_request_aborted(req)) {
            count_request(sw, EP_METADATA, 499, tc_request_ready_ns(req));
            tc_request_drop(req, 0);
        } else {
            /* the batcher was closed under the lookup: the worker is stopping */
            respond_error(sw, req, EP_METADATA, 503, "shutting_down", "the server is stopping");
        }
    } else {
        int err = tc_future_error(f);
        if (err == TC_ETIMEDOUT) {
            (void)snprintf(msg, sizeof(msg), "no answer for ID %s within %llu ms", call->id,
                           (unsigned long long)call->timeout_ms);
            respond_error(sw, req, EP_METADATA, 504, "timeout", msg);
        } else if (err == TC_EMISSING) {
            (void)snprintf(msg, sizeof(msg), "no metadata for ID %s", call->id);
            respond_error(sw, req, EP_METADATA, 404, "not_found", msg);
        } else if (err == TC_ECLOSED || err == TC_ECANCELED) {
            /* the batcher or the upstream client was closed under the lookup: stopping */
            respond_error(sw, req, EP_METADATA, 503, "shutting_down", "the server is stopping");
        } else {
            /* the batch's upstream call failed; like the other endpoints' 502, with "attempts" */
            char body[512];
            int blen =
                snprintf(body, sizeof(body),
                         "{\"success\":false,\"error\":\"upstream_failed\",\"message\":\"%s\","
                         "\"attempts\":1}",
                         tc_future_message(f));
            count_request(sw, EP_METADATA, 502, tc_request_ready_ns(req));
            tc_request_respond(req, 502, "application/json", NULL, 0, body,
                               blen > 0 && (size_t)blen < sizeof(body) ? (size_t)blen : 0);
        }
    }
    api_call_free(call);
}

static void handle_metadata(serve_worker *sw, tc_request *req)
{
    serve_config *cfg = sw->cfg;
    if (cfg->metadata_upstream == NULL) {
        respond_error(sw, req, EP_METADATA, 404, "not_found",
                      "metadata lookups are off: start tailcut serve with --metadata-upstream URL");
        return;
    }
    tc_str path = tc_request_path(req);
    tc_str query = tc_request_query(req);
    uint64_t timeout_ms = cfg->max_timeout_ms;
    int present = 0;
    const char *why = NULL;
    if (tc_query_timeout(query.base, query.len, cfg->max_timeout_ms, &timeout_ms, &present, &why) !=
        0) {
        respond_error(sw, req, EP_METADATA, 400, "bad_request", why);
        return;
    }
    if (!present)
        timeout_ms = cfg->max_timeout_ms;

    char id[TC_ID_MAX + 1];
    size_t prefix = sizeof(METADATA_PREFIX) - 1;
    long id_len = tc_url_decode(path.base + prefix, path.len - prefix, id, sizeof(id), 0);
    if (id_len < 0 || !tc_id_valid(id, (size_t)id_len)) {
        respond_error(sw, req, EP_METADATA, 400, "bad_request",
                      "IDs are 1 to 128 characters of [A-Za-z0-9_.-] (after percent-decoding)");
        return;
    }

    /* The deadline counts from the moment the request was fully read. */
    uv_loop_t *loop = tc_request_loop(req);
    uint64_t deadline = tc_request_ready_ms(req) + timeout_ms;
    uint64_t now = uv_now(loop);
    if (now >= deadline) {
        char msg[256];
        (void)snprintf(msg, sizeof(msg), "no answer for ID %s within %llu ms", id,
                       (unsigned long long)timeout_ms);
        respond_error(sw, req, EP_METADATA, 504, "timeout", msg);
        return;
    }
    api_call *call = calloc(1, sizeof(*call));
    if (call == NULL) {
        respond_error(sw, req, EP_METADATA, 503, "overloaded", "out of memory");
        return;
    }
    call->sw = sw;
    call->req = req;
    call->ep = EP_METADATA;
    call->timeout_ms = timeout_ms;
    memcpy(call->id, id, (size_t)id_len + 1);

    tc_future *inner = NULL;
    int err = tc_batcher_submit(&inner, sw->batcher, id, (size_t)id_len);
    if (err != 0) {
        free(call);
        if (err == TC_ECLOSED)
            respond_error(sw, req, EP_METADATA, 503, "shutting_down", "the server is stopping");
        else
            respond_error(sw, req, EP_METADATA, 503, "overloaded",
                          err == TC_EBUSY ? "too many metadata batches waiting" : tc_strerror(err));
        return;
    }
    tc_batcher_stats bs;
    tc_batcher_get_stats(sw->batcher, &bs);
    if (bs.dedup_hits > sw->dedup_seen) {
        tc_metrics_counter_add(sw->shard, cfg->metrics.batch_dedup, TC_METRICS_SERIES_DEFAULT,
                               bs.dedup_hits - sw->dedup_seen);
        sw->dedup_seen = bs.dedup_hits;
    }
    err = tc_with_timeout(&call->work, loop, inner, deadline - now);
    if (err != 0) {
        tc_future_cancel(inner);
        tc_future_unref(inner);
        free(call);
        respond_error(sw, req, EP_METADATA, 503, "overloaded", tc_strerror(err));
        return;
    }
    tc_future_unref(inner); /* the timeout wrapper holds it */
    api_call_watch(call, on_meta_done);
}

/* The hedge delay in force, in seconds: the percentile estimate (or its fallback) for pNN, else
 * the fixed --hedge-delay. A gauge the registry cannot hold (its gauges are whole numbers summed
 * over workers, and this one is a fraction shared by all), so it is rendered here. */
#define HEDGE_DELAY_GAUGE_MAX 256

static size_t render_hedge_delay(const serve_config *cfg, char *buf, size_t cap)
{
    uint64_t ms = cfg->adaptive != NULL
                      ? tc_hedge_adaptive_delay_ms(cfg->adaptive, uv_hrtime() / 1000000)
                      : cfg->hedge_delay_ms;
    int n = snprintf(buf, cap,
                     "# HELP tailcut_hedge_delay_seconds The /api/smart hedge delay in force\n"
                     "# TYPE tailcut_hedge_delay_seconds gauge\n"
                     "tailcut_hedge_delay_seconds %.3f\n",
                     (double)ms / 1000.0);
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

static void handle_metrics(serve_worker *sw, tc_request *req)
{
    char *text = NULL;
    size_t len = 0;
    count_request(sw, EP_METRICS, 200, tc_request_ready_ns(req));
    if (tc_metrics_render(sw->cfg->metrics.reg, (size_t)SERVE_MAX_METRICS_TEXT, &text, &len) != 0) {
        respond_error(sw, req, EP_METRICS, 503, "overloaded", "metrics unavailable");
        return;
    }
    char *all = realloc(text, len + HEDGE_DELAY_GAUGE_MAX);
    if (all == NULL) {
        free(text);
        respond_error(sw, req, EP_METRICS, 503, "overloaded", "out of memory");
        return;
    }
    len += render_hedge_delay(sw->cfg, all + len, HEDGE_DELAY_GAUGE_MAX);
    tc_request_respond(req, 200, "text/plain; version=0.0.4", NULL, 0, all, len);
    free(all);
}

static const struct route {
    const char *path;
    endpoint ep;
} routes[] = {
    {"/api/smart", EP_SMART},           {"/api/first", EP_FIRST}, {"/api/all", EP_ALL},
    {"/api/within-timeout", EP_WITHIN}, {"/healthz", EP_HEALTHZ}, {"/metrics", EP_METRICS},
};

static void serve_handle(tc_request *req, void *data)
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
    if (ep == EP_OTHER && path.len >= sizeof(METADATA_PREFIX) - 1 &&
        memcmp(path.base, METADATA_PREFIX, sizeof(METADATA_PREFIX) - 1) == 0)
        ep = EP_METADATA; /* /api/metadata/ID */
    if (ep == EP_OTHER) {
        respond_error(sw, req, ep, 404, "not_found", "no such endpoint");
        return;
    }
    if (!str_eq(method, "GET") && !str_eq(method, "HEAD")) {
        respond_error(sw, req, ep, 405, "method_not_allowed", "only GET and HEAD are allowed");
        return;
    }
    switch (ep) {
    case EP_HEALTHZ:
        count_request(sw, ep, 200, tc_request_ready_ns(req));
        tc_request_respond_json(req, 200, "{\"status\":\"ok\"}");
        break;
    case EP_METRICS:
        handle_metrics(sw, req);
        break;
    case EP_METADATA:
        handle_metadata(sw, req);
        break;
    default:
        handle_api(sw, req, ep);
        break;
    }
}

/* ---- metrics definitions -------------------------------------------------------------------- */

static int define_metrics(serve_metrics *m)
{
    static const char *const ep_label[] = {"endpoint"};
    static const char *const ep_status_labels[] = {"endpoint", "status"};
    static const char *const outcome_label[] = {"outcome"};
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
         "GETs sent once more because their pooled connection died before any answer byte", NULL, 0,
         NULL, 0, 0},
        {TC_METRIC_COUNTER, "tailcut_hedges_denied_total",
         "Extra /api/smart attempts the hedge budget denied", NULL, 0, NULL, 0, 0},
        {TC_METRIC_HISTOGRAM, "tailcut_upstream_attempt_duration_seconds",
         "Upstream attempt latency, from firing to its end, by outcome", outcome_label, 1,
         attempt_buckets, sizeof(attempt_buckets) / sizeof(attempt_buckets[0]), 0},
    };
    uint32_t *ids[] = {&m->requests,      &m->duration,      &m->attempts,        &m->hedges,
                       &m->hedge_wins,    &m->in_flight,     &m->queue_waits,     &m->batches,
                       &m->batch_size,    &m->batch_keys,    &m->batch_dedup,     &m->batch_wait,
                       &m->stale_retries, &m->hedges_denied, &m->attempt_duration};
    if (tc_metrics_registry_new(&m->reg) != 0)
        return TC_ENOMEM;
    for (size_t i = 0; i < sizeof(defs) / sizeof(defs[0]); i++) {
        int err = tc_metrics_family_define(m->reg, &defs[i], ids[i]);
        if (err != 0)
            return err;
    }
    for (int e = 0; e < EP_COUNT; e++) {
        const char *v[1] = {endpoint_names[e]};
        int err = tc_metrics_series_define(m->reg, m->duration, v, &m->duration_series[e]);
        if (err != 0)
            return err;
    }
    for (int o = 0; o < TC_OUTCOME_COUNT; o++) {
        const char *v[1] = {tc_attempt_outcome_name((tc_attempt_outcome)o)};
        int err = tc_metrics_series_define(m->reg, m->attempts, v, &m->outcome_series[o]);
        if (err == 0)
            err = tc_metrics_series_define(m->reg, m->attempt_duration, v,
                                           &m->attempt_duration_series[o]);
        if (err != 0)
            return err;
    }
    return 0;
}

/* ---- workers -------------------------------------------------------------------------------- */

/* The runtime's data pointer is this bundle: runtime config first, so the hooks can reach both. */
typedef struct serve_run {
    tc_runtime_config rc;
    serve_config cfg;
} serve_run;

/* The worker's batcher for /api/metadata lookups, sending to --metadata-upstream. */
static int metadata_batcher_new(serve_worker *sw, uv_loop_t *loop)
{
    tc_batcher_config bc;
    tc_batcher_config_init(&bc);
    bc.max_batch = (size_t)sw->cfg->batch_max;
    bc.max_wait_ms = sw->cfg->batch_wait_ms;
    bc.max_key_len = TC_ID_MAX;
    bc.dispatch = metadata_dispatch;
    bc.data = sw;
    return tc_batcher_new(&sw->batcher, loop, &bc);
}

static int serve_worker_start(tc_runtime_worker *w, void *data)
{
    serve_run *run = data;
    serve_config *cfg = &run->cfg;
    serve_worker *sw = calloc(1, sizeof(*sw));
    if (sw == NULL)
        return TC_ENOMEM;
    sw->cfg = cfg;
    tc_client_config cc;
    tc_client_config_init(&cc);
    cc.max_connections = (size_t)cfg->upstream_connections;
    cc.max_body = (size_t)cfg->max_body;
    cc.ca_file = cfg->upstream_ca;
    cc.engine = (tc_client_engine)cfg->http_engine;
    int err = tc_metrics_shard_new(cfg->metrics.reg, &sw->shard);
    if (err == 0)
        err = tc_client_new(&sw->client, w->loop, &cc);
    if (err != 0) {
        free(sw);
        return err;
    }
    w->state = sw;
    if (cfg->metadata_upstream != NULL) { /* else lookups are off: no batcher */
        err = metadata_batcher_new(sw, w->loop);
        if (err != 0) {
            tc_client_close(sw->client, NULL, NULL);
            sw->client = NULL;
            return err;
        }
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
    sc.header_timeout_ms = cfg->header_timeout_ms;
    sc.idle_timeout_ms = cfg->idle_timeout_ms;
    sc.handler = serve_handle;
    sc.handler_data = sw;
    err = tc_server_new(&sw->srv, w->loop, &sc);
    if (err != 0) {
        if (sw->batcher != NULL)
            tc_batcher_close(sw->batcher, NULL, NULL);
        sw->batcher = NULL;
        tc_client_close(sw->client, NULL, NULL);
        sw->client = NULL;
        return err;
    }
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

static void serve_worker_drain(tc_runtime_worker *w, void *data)
{
    serve_worker *sw = w->state;
    if (sw != NULL && sw->srv != NULL)
        tc_server_drain(sw->srv, on_server_drained, sw);
}

static void serve_worker_stop(tc_runtime_worker *w, void *data)
{
    serve_worker *sw = w->state;
    if (sw == NULL)
        return;
    if (sw->srv != NULL)
        tc_server_close(sw->srv, on_server_closed, sw);
    close_client(sw);
}

static void serve_worker_cleanup(tc_runtime_worker *w, void *data)
{
    serve_worker *sw = w->state;
    if (sw == NULL)
        return;
    serve_worker_stop(w, data);
    uv_run(w->loop, UV_RUN_DEFAULT);
    free(sw);
    w->state = NULL;
}

/* ---- flags ---------------------------------------------------------------------------------- */

/* ---- the embedded simulated upstream ----------------------------------------------------------
 */

/* With no --upstream, a `tailcut upstream --profile exponea` runs in-process on its own thread
 * and loop, on a free loopback port, so that `make run` works with no setup. */
typedef struct embedded {
    uv_thread_t thread;
    uv_loop_t loop;
    uv_async_t stop;
    uv_sem_t ready;
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
    e->err = tc_upstream_new(&e->u, &e->loop, &uc);
    if (e->err == 0) {
        e->port = tc_upstream_port(e->u);
        uv_async_init(&e->loop, &e->stop, on_embedded_stop);
        e->stop.data = e;
    }
    uv_sem_post(&e->ready);
    uv_run(&e->loop, UV_RUN_DEFAULT);
    uv_loop_close(&e->loop);
}

static int embedded_start(embedded *e)
{
    if (uv_loop_init(&e->loop) != 0)
        return TC_EIO;
    uv_sem_init(&e->ready, 0);
    if (uv_thread_create(&e->thread, embedded_main, e) != 0) {
        uv_loop_close(&e->loop);
        uv_sem_destroy(&e->ready);
        return TC_EIO;
    }
    uv_sem_wait(&e->ready);
    uv_sem_destroy(&e->ready);
    if (e->err != 0)
        uv_thread_join(&e->thread);
    return e->err;
}

static void embedded_stop(embedded *e)
{
    uv_async_send(&e->stop);
    uv_thread_join(&e->thread);
}

/* ---- flags ---------------------------------------------------------------------------------- */

enum {
    OPT_HELP = 1,
    OPT_LISTEN,
    OPT_UPSTREAM,
    OPT_METADATA_UPSTREAM,
    OPT_UPSTREAM_CA,
    OPT_HTTP_ENGINE,
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
    OPT_HEADER_TIMEOUT,
    OPT_IDLE_TIMEOUT,
};

static const cli_option serve_options[] = {
    {"listen", 0, OPT_LISTEN, CLI_VALUE, "HOST:PORT",
     "address to listen on; port 0 picks a free port [127.0.0.1:8080]"},
    {"upstream", 0, OPT_UPSTREAM, CLI_VALUE, "URL",
     "the URL each attempt GETs [embedded simulator's /api/work]"},
    {"metadata-upstream", 0, OPT_METADATA_UPSTREAM, CLI_VALUE, "URL",
     "batch lookups go here [embedded simulator's /api/metadata\n"
     "without --upstream; else none: /api/metadata answers 404]"},
    {"upstream-ca", 0, OPT_UPSTREAM_CA, CLI_VALUE, "FILE",
     "PEM CA bundle to verify an https upstream [system store]"},
    {"http-engine", 0, OPT_HTTP_ENGINE, CLI_VALUE, "native|curl",
     "client engine for http:// upstreams (https:// always uses libcurl) [native]"},
    {"hedge-delay", 0, OPT_HEDGE_DELAY, CLI_VALUE, "MS|pNN",
     "/api/smart fires the extra attempts after MS, all at once;\n"
     "or pNN (p50..p99.9): extra k at k x the NNth percentile of\n"
     "recent attempt latencies (about the last 10 s) [300]"},
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
    {"access-log", 0, OPT_ACCESS_LOG, CLI_VALUE, "-|FILE|off", "one line per request [-]"},
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
        cli_error(cmd, "invalid value '%s' for %s: expected an http:// or https:// URL", value,
                  flag);
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
    serve_run *run = calloc(1, sizeof(*run));
    if (run == NULL)
        return TC_EXIT_FAILURE;
    serve_config *cfg = &run->cfg;
    (void)snprintf(cfg->host, sizeof(cfg->host), "127.0.0.1");
    cfg->port = 8080;
    cfg->max_connections = 10000;
    cfg->max_body = 1048576;
    cfg->workers = tc_runtime_cpus();
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
    atomic_init(&cfg->conn_count, 0);

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
    if (cli_open_access_log(cmd, access_log, &cfg->access_log) != 0)
        goto out;

    if (define_metrics(&cfg->metrics) != 0 || start_hedging(cfg) != 0) {
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

    run->rc.nworkers = (unsigned)cfg->workers;
    run->rc.drain_timeout_ms = cfg->drain_timeout_ms;
    run->rc.start = serve_worker_start;
    run->rc.drain = serve_worker_drain;
    run->rc.stop = serve_worker_stop;
    run->rc.cleanup = serve_worker_cleanup;
    run->rc.data = run;
    (void)snprintf(run->rc.listen_host, sizeof(run->rc.listen_host), "%s", cfg->host);
    run->rc.listen_port = cfg->port;
    status = tc_runtime_run(&run->rc);
out:
    if (emb_running)
        embedded_stop(&emb);
    if (cfg->access_log != NULL && cfg->access_log != stdout)
        (void)fclose(cfg->access_log); /* at exit: nowhere left to report a failed flush */
    tc_metrics_registry_free(cfg->metrics.reg);
    tc_hedge_adaptive_free(cfg->adaptive);
    tc_hedge_budget_free(cfg->budget);
    free(cfg->upstream);
    free(cfg->metadata_upstream);
    free(run);
    return status;
}
