/*
 * tailcut serve: GET /api/metadata/ID, batched lookups.
 *
 * Each worker has one tc_batcher. A lookup submits its ID and waits on the batcher's future
 * wrapped in tc_with_timeout() for what is left of its own deadline, so time spent collecting
 * or queued behind the in-flight cap counts. The dispatch makes one GET <metadata-upstream>?id=..
 * per batch with the worker's client, to a replica the route's metadata set chooses, checks the
 * answer once and resolves each ID with a copy of its results[ID] bytes, shared by every waiter
 * of that ID. A client that leaves only cancels its own wait; the batch goes on for the others.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd_serve.h"
#include "tailcut/json.h"

/* One batch's upstream call, through the route's metadata set (tc_replica_request_start): it
 * goes to a replica chosen for it, and once more, to another replica when there is one, if a
 * reused connection dies under it before any answer byte (CONTRACT section 1). The prepare hook
 * writes the batch's URL for the replica of each send, once per URL. */
typedef struct meta_call {
    serve_worker *sw;
    tc_batch *batch;
    unsigned sends;
    long url_index; /* the URL url holds: its replicas' url_index, -1 for none yet */
    char *url;
} meta_call;

/* <base>?id=A&id=B... (or &id=... when base has a query), each distinct ID of the batch
 * percent-encoded, in *out (malloc'd). Returns 0, TC_ENOMEM or TC_EURL. */
static int batch_url(const tc_batch *batch, const char *base, char **out)
{
    /* "?id=" or "&id=" plus each ID percent-encoded (at most 3 bytes per byte). */
    size_t n = tc_batch_size(batch), base_len = strlen(base);
    size_t cap = base_len + n * (4 + 3 * TC_ID_MAX) + 1;
    char *url = malloc(cap);
    if (url == NULL)
        return TC_ENOMEM;
    memcpy(url, base, base_len);
    size_t len = base_len;
    char sep = strchr(base, '?') != NULL ? '&' : '?';
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
            return TC_EURL;
        }
        len += (size_t)enc;
    }
    url[len] = '\0';
    *out = url;
    return 0;
}

/* The prepare hook of the batch's call: called from src/policy/replica.c for each send. */
static int meta_prepare(void *data, unsigned id, void *replica_data, tc_client_request *req)
{
    meta_call *mc = data;
    serve_replica *rep = replica_data;
    (void)id;
    if (mc->sends++ > 0) /* the first died on a reused connection before any answer byte */
        tc_metrics_counter_add(mc->sw->shard, mc->sw->cfg->metrics.stale_retries,
                               TC_METRICS_SERIES_DEFAULT, 1);
    if (mc->url_index != (long)rep->url_index) {
        char *url = NULL;
        int err = batch_url(mc->batch, rep->url, &url);
        if (err != 0)
            return err;
        free(mc->url);
        mc->url = url;
        mc->url_index = (long)rep->url_index;
    }
    req->url = mc->url;
    req->connect_to = rep->connect_to;
    return 0;
}

/* The upstream answered the batch's call (or failed): settle every ID of the batch. Messages are
 * fixed text (no quotes or backslashes): they end up in JSON bodies as they are. */
static void on_meta_response(tc_future *f, void *data)
{
    meta_call *mc = data;
    tc_batch *batch = mc->batch;
    char msg[128];
    free(mc->url);
    free(mc);
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
    const serve_route *route = sw->route;
    serve_metrics *m = &sw->cfg->metrics;
    size_t n = tc_batch_size(batch);
    tc_metrics_counter_add(sw->shard, m->batches, TC_METRICS_SERIES_DEFAULT, 1);
    tc_metrics_counter_add(sw->shard, m->batch_keys, TC_METRICS_SERIES_DEFAULT, n);
    tc_metrics_histogram_observe(sw->shard, m->batch_size, TC_METRICS_SERIES_DEFAULT, (double)n);
    tc_metrics_histogram_observe(sw->shard, m->batch_wait, TC_METRICS_SERIES_DEFAULT,
                                 tc_batch_wait_ms(batch) / 1e3);

    meta_call *mc = calloc(1, sizeof(*mc));
    if (mc == NULL) {
        tc_batch_fail(batch, TC_ENOMEM, "out of memory");
        return;
    }
    mc->sw = sw;
    mc->batch = batch;
    mc->url_index = -1;
    /* A batched call is not an attempt (nothing counts or numbers it): a reused connection that
     * dies before its answer costs the batch a re-send, not a 502 for every waiting client. The
     * URL is each send's replica's (meta_prepare). */
    tc_client_request creq = {.url = route->metadata_upstreams.v[0],
                              .headers = route->upstream_headers.v,
                              .nheaders = route->upstream_headers.n,
                              .timeout_ms = route->max_timeout_ms,
                              .max_body = (size_t)route->max_body,
                              .resend_stale = 1};
    tc_replica_call call = {
        .set = route->metadata_replicas->set, .prepare = meta_prepare, .prepare_data = mc};
    tc_future *f = NULL;
    int err = tc_replica_request_start(&f, sw->client, &creq, &call);
    if (err != 0) {
        free(mc->url);
        free(mc);
        char msg[128];
        (void)snprintf(msg, sizeof(msg), "the metadata upstream call failed: %s", tc_strerror(err));
        tc_batch_fail(batch, err, msg);
        return;
    }
    /* fires from src/policy/replica.c once the last send has ended */
    if (tc_future_on_done(f, on_meta_response, mc) != 0) {
        tc_future_cancel(f);
        free(mc->url);
        free(mc);
        tc_batch_fail(batch, TC_ENOMEM, "out of memory");
    }
    tc_future_unref(f); /* the registration holds the future until the answer */
}

/* The lookup ended: answer with results[ID], 404, 502, 504, or nothing if the client left. */
static void on_meta_done(tc_future *f, void *data)
{
    serve_call *call = data;
    serve_worker *sw = call->sw;
    tc_request *req = call->req;
    char msg[256];

    if (tc_future_state_of(f) == TC_FUTURE_FULFILLED) {
        const tc_batch_bytes *v = tc_future_value(f);
        serve_count_request(sw, EP_METADATA, 200, tc_request_ready_ns(req));
        tc_request_respond(req, 200, "application/json", NULL, 0, v->data, v->len);
    } else if (tc_future_state_of(f) == TC_FUTURE_CANCELLED) {
        if (tc_request_aborted(req)) {
            serve_count_request(sw, EP_METADATA, 499, tc_request_ready_ns(req));
            tc_request_drop(req, 0);
        } else {
            /* the batcher was closed under the lookup: the worker is stopping */
            serve_respond_error(sw, req, EP_METADATA, 503, "shutting_down",
                                "the server is stopping");
        }
    } else {
        int err = tc_future_error(f);
        if (err == TC_ETIMEDOUT) {
            (void)snprintf(msg, sizeof(msg), "no answer for ID %s within %llu ms", call->id,
                           (unsigned long long)call->timeout_ms);
            serve_respond_error(sw, req, EP_METADATA, 504, "timeout", msg);
        } else if (err == TC_EMISSING) {
            (void)snprintf(msg, sizeof(msg), "no metadata for ID %s", call->id);
            serve_respond_error(sw, req, EP_METADATA, 404, "not_found", msg);
        } else if (err == TC_ECLOSED || err == TC_ECANCELED) {
            /* the batcher or the upstream client was closed under the lookup: stopping */
            serve_respond_error(sw, req, EP_METADATA, 503, "shutting_down",
                                "the server is stopping");
        } else {
            /* the batch's upstream call failed; like the other endpoints' 502, with "attempts" */
            char body[512];
            int blen =
                snprintf(body, sizeof(body),
                         "{\"success\":false,\"error\":\"upstream_failed\",\"message\":\"%s\","
                         "\"attempts\":1}",
                         tc_future_message(f));
            serve_count_request(sw, EP_METADATA, 502, tc_request_ready_ns(req));
            tc_request_respond(req, 502, "application/json", NULL, 0, body,
                               blen > 0 && (size_t)blen < sizeof(body) ? (size_t)blen : 0);
        }
    }
    serve_call_free(call);
}

void serve_handle_metadata(serve_worker *sw, tc_request *req)
{
    if (sw->route->metadata_replicas == NULL) {
        serve_respond_error(
            sw, req, EP_METADATA, 404, "not_found",
            "metadata lookups are off: start tailcut serve with --metadata-upstream URL");
        return;
    }
    tc_str path = tc_request_path(req);
    uint64_t timeout_ms;
    if (serve_call_timeout(sw, req, EP_METADATA, 0, &timeout_ms) != 0)
        return;

    char id[TC_ID_MAX + 1];
    size_t prefix = sizeof(SERVE_METADATA_PREFIX) - 1;
    long id_len = tc_url_decode(path.base + prefix, path.len - prefix, id, sizeof(id), 0);
    if (id_len < 0 || !tc_id_valid(id, (size_t)id_len)) {
        serve_respond_error(
            sw, req, EP_METADATA, 400, "bad_request",
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
        serve_respond_error(sw, req, EP_METADATA, 504, "timeout", msg);
        return;
    }
    serve_call *call = serve_call_new(sw, req, EP_METADATA, timeout_ms);
    if (call == NULL)
        return;
    memcpy(call->id, id, (size_t)id_len + 1);

    tc_future *inner = NULL;
    int err = tc_batcher_submit(&inner, sw->batcher, id, (size_t)id_len);
    if (err != 0) {
        free(call);
        if (err == TC_ECLOSED)
            serve_respond_error(sw, req, EP_METADATA, 503, "shutting_down",
                                "the server is stopping");
        else
            serve_respond_error(sw, req, EP_METADATA, 503, "overloaded",
                                err == TC_EBUSY ? "too many metadata batches waiting"
                                                : tc_strerror(err));
        return;
    }
    tc_batcher_stats bs;
    tc_batcher_get_stats(sw->batcher, &bs);
    if (bs.dedup_hits > sw->dedup_seen) {
        tc_metrics_counter_add(sw->shard, sw->cfg->metrics.batch_dedup, TC_METRICS_SERIES_DEFAULT,
                               bs.dedup_hits - sw->dedup_seen);
        sw->dedup_seen = bs.dedup_hits;
    }
    err = tc_with_timeout(&call->work, loop, inner, deadline - now);
    if (err != 0) {
        tc_future_cancel(inner);
        tc_future_unref(inner);
        free(call);
        serve_respond_error(sw, req, EP_METADATA, 503, "overloaded", tc_strerror(err));
        return;
    }
    tc_future_unref(inner); /* the timeout wrapper holds it */
    serve_call_watch(call, on_meta_done);
}

int serve_metadata_batcher_new(serve_worker *sw, uv_loop_t *loop)
{
    tc_batcher_config bc;
    tc_batcher_config_init(&bc);
    bc.max_batch = (size_t)sw->route->batch_max;
    bc.max_wait_ms = sw->route->batch_wait_ms;
    bc.max_key_len = TC_ID_MAX;
    bc.dispatch = metadata_dispatch; /* called from src/policy/batch.c batch_send */
    bc.data = sw;
    return tc_batcher_new(&sw->batcher, loop, &bc);
}
