/*
 * tailcut serve: the transparent hedging proxy (kind: proxy routes; cmd_serve_proxy.h).
 *
 * A request reads top to bottom in its order of events (nginx's upstream module reads the same
 * way): the head (rules, deadline, which requests hedge), the request body (buffered for a hedged
 * request, else piped to its one attempt), the hedge (src/policy/hedge.c in head mode: the first
 * acceptable response head wins), the winner's head and body streamed to the client, and the end.
 *
 * The one idea is back-pressure at both ends, so that a request holds bounded memory whatever its
 * bodies: the client's body is paused while its attempt has SERVE_PROXY_WRITE_HIGH unsent, and
 * the upstream's body while the client has as much unwritten; each resumes once its side is down
 * to SERVE_PROXY_WRITE_LOW.
 *
 * Lifetime: a proxy_req lives from the head to the last of its callbacks. Every library call that
 * finishes something (the request, the hedge, a transfer, a body source) runs the callbacks it
 * owes from inside itself, so px_close() marks the request closing first (every callback then
 * returns at once), finishes what still runs and frees it all in one place.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/buf.h"
#include "base/fmt.h"
#include "cmd_serve.h"
#include "http/proxy_internal.h"

/* Headers an attempt or a response carries at most, and their bytes. */
#define PX_MAX_FIELDS 256
/* A request's headers that px_headers() sorts on its stack; more take an allocation. */
#define PX_STACK_FIELDS 32

void serve_proxy_conf_finish(serve_proxy_conf *pc)
{
    size_t n =
        pc->failure_statuses.n < SETTINGS_LIST_MAX ? pc->failure_statuses.n : SETTINGS_LIST_MAX;
    for (size_t i = 0; i < n; i++)
        pc->failing_v[i] = (int)pc->failure_statuses.v[i];
    pc->failing.v = pc->failing_v;
    pc->failing.n = n;
}

typedef struct proxy_req {
    serve_worker *sw;
    const serve_route *route;
    tc_request *req;
    serve_call *call;  /* the replicas' URLs and references, in flight; call->work: the hedge */
    tc_client *client; /* the worker's at the head: its configuration's (a hedged request starts
                        * once its body is read, maybe after a reload gave the worker another) */
    uint64_t timeout_ms, deadline_ms;
    tc__proxy_hedge hedged;
    uint64_t ready_ns;      /* the request's, for its metrics once it is finished */
    int closing;            /* px_close() runs: every callback returns at once */
    int starting;           /* the hedge is being started or its body source cut: its end waits */
    int early;              /* ... and it ended meanwhile: px_started() takes it up */
    int head_sent;          /* the response head went to the client */
    int status;             /* the status sent (the metrics' and the access log's) */
    tc__buf body;           /* a hedged request's body, whole */
    tc_client_body *source; /* a once-only attempt's body, as it arrives */
    tc_response *resp;      /* the response being streamed or read */
    tc__buf failed;         /* the last failed response's body, to pass on */
    /* the attempt's headers, with attempt[] and the strings in the same allocation; attempt[]
     * has two spare slots (the hedge's X-Tailcut-Attempt, then X-Tailcut-Timeout-Ms) */
    tc_header *headers, *attempt;
    size_t nheaders;
    char *strings;
    char timeout_value[24];
    char method[32];
    /* the response head for the client, out_strings in the same allocation */
    tc_server_header *out;
    size_t nout;
    char *out_strings;
} proxy_req;

/* ---- the end -------------------------------------------------------------------------------- */

/* Counts the request's end and marks px closing: every callback returns at once from now on,
 * and the client's leaving is no longer heard (the caller finishes the request next, which may
 * free it). */
static void px_closing(proxy_req *px, int status)
{
    px->closing = 1;
    tc_request_on_abort(px->req, NULL, NULL);
    serve_count_request(px->sw, px->route, EP_PROXY, status, px->ready_ns);
}

/* After px_closing() and the request's end: ends everything still running, then frees px. */
static void px_close(proxy_req *px)
{
    if (px->call->work != NULL && !tc_future_done(px->call->work))
        tc_future_cancel(px->call->work);
    if (px->resp != NULL)
        tc_response_abort(px->resp);
    tc_client_body_free(px->source);
    serve_call_free(px->call); /* drops the hedge, and with it every transfer */
    tc__buf_reset(&px->body);
    tc__buf_reset(&px->failed);
    free(px->headers); /* with attempt and strings */
    free(px->out);     /* with out_strings */
    free(px);
}

/* Answers an error of the proxy's own (JSON, as every tailcut error) and closes px. */
static void px_error(proxy_req *px, int status, const char *code, const char *message,
                     unsigned attempts)
{
    char n[16];
    (void)snprintf(n, sizeof(n), "%u", attempts);
    tc_server_header hdr = {"X-Tailcut-Attempts", n};
    tc_request_set_attempts(px->req, attempts);
    px_closing(px, status);
    tc_request_respond_error_with(px->req, status, code, message, &hdr, 1);
    px_close(px);
}

/* Every attempt failed and no failed answer can be passed on: 502 upstream_failed, whose body
 * adds "attempts":N (CONTRACT section 1), as on the api endpoints. */
static void px_all_failed(proxy_req *px, unsigned attempts)
{
    char n[16], body[128];
    (void)snprintf(n, sizeof(n), "%u", attempts);
    int len = snprintf(body, sizeof(body),
                       "{\"success\":false,\"error\":\"upstream_failed\",\"message\":\"every "
                       "upstream attempt failed\",\"attempts\":%u}",
                       attempts);
    tc_server_header hdr = {"X-Tailcut-Attempts", n};
    tc_request_set_attempts(px->req, attempts);
    px_closing(px, 502);
    tc_request_respond(px->req, 502, "application/json", &hdr, 1, body, (size_t)len);
    px_close(px);
}

/* The client left: every attempt is cancelled and the request logged 499. */
static void px_on_client_gone(tc_request *req, void *data)
{
    proxy_req *px = data;
    (void)req;
    if (px->closing)
        return;
    px_closing(px, 499);
    if (px->head_sent)
        tc_request_end(px->req); /* only finishes it: the log says 499 */
    else
        tc_request_drop(px->req, 0);
    px_close(px);
}

/* ---- the response --------------------------------------------------------------------------- */

/* Builds the client's head from resp's: its fields less the ones the proxy does not pass on,
 * then X-Tailcut-Attempts. Returns 0 or TC_ENOMEM / TC_ETOOLARGE. */
static int px_head(proxy_req *px, const tc_response *resp, unsigned attempts)
{
    tc__field fields[PX_MAX_FIELDS];
    size_t n = 0, pos = 0, bytes = 32;
    tc_response_field f;
    while (tc_response_header_next(resp, &pos, &f)) {
        if (n == PX_MAX_FIELDS)
            return TC_ETOOLARGE;
        fields[n++] = (tc__field){f.name, f.name_len, f.value, f.value_len};
        bytes += f.name_len + f.value_len + 2;
    }
    px->out = malloc((n + 1) * sizeof(*px->out) + bytes);
    if (px->out == NULL)
        return TC_ENOMEM;
    px->out_strings = (char *)(px->out + n + 1);
    char *p = px->out_strings;
    for (size_t i = 0; i < n; i++) {
        if (tc__proxy_response_drops(fields, n, fields[i].name, fields[i].name_len))
            continue;
        px->out[px->nout].name = p;
        memcpy(p, fields[i].name, fields[i].name_len);
        p += fields[i].name_len;
        *p++ = '\0';
        px->out[px->nout++].value = p;
        memcpy(p, fields[i].value, fields[i].value_len);
        p += fields[i].value_len;
        *p++ = '\0';
    }
    p[tc__fmt_u64(p, attempts)] = '\0';
    px->out[px->nout].name = "X-Tailcut-Attempts";
    px->out[px->nout++].value = p;
    return 0;
}

/* The length the client's head announces: the upstream's, when it framed the body by length
 * (for HEAD, the Content-Length it stated); else unknown (chunked, or close-delimited for
 * HTTP/1.0 clients). */
static int64_t px_length(const proxy_req *px, const tc_response *resp)
{
    if (resp->framing == TC_BODY_LENGTH)
        return resp->content_length;
    char buf[24];
    if (tc_request_is_head(px->req) &&
        tc_response_header(resp, "Content-Length", buf, sizeof(buf)) > 0) {
        char *end = NULL;
        long long v = strtoll(buf, &end, 10);
        if (end != buf && *end == '\0' && v >= 0)
            return v;
    }
    return resp->framing == TC_BODY_NONE ? 0 : TC_SERVER_LENGTH_UNKNOWN;
}

/* The client took enough of what waited: read the upstream again. */
static void px_on_writable(tc_request *req, int status, void *arg)
{
    proxy_req *px = arg;
    (void)req;
    if (px->closing || status != 0)
        return;
    tc_response_body_resume(px->resp);
}

static void px_on_upstream_body(tc_response *resp, int status, const char *data, size_t len,
                                void *arg)
{
    proxy_req *px = arg;
    (void)resp;
    if (px->closing)
        return;
    if (len > 0) {
        int err = tc_request_write(px->req, data, len);
        if (err != 0) {
            px_on_client_gone(px->req, px); /* gone, or the response broke: nothing more goes */
            return;
        }
        if (tc_request_write_pending(px->req) > SERVE_PROXY_WRITE_HIGH &&
            tc_request_on_writable(px->req, SERVE_PROXY_WRITE_LOW, px_on_writable, px) == 0)
            tc_response_body_pause(px->resp);
        return;
    }
    px_closing(px, status == 0 ? px->status : 502);
    if (status == 0)
        tc_request_end(px->req);
    else
        tc_request_abort(px->req); /* cut or stalled: the client must not see a whole body */
    px->resp = NULL;               /* ended: nothing to abort */
    px_close(px);
}

/* The winner: its head now, its body as it arrives. */
static void px_stream(proxy_req *px, tc_response *resp, unsigned attempts)
{
    if (px_head(px, resp, attempts) != 0) {
        px_error(px, 503, "overloaded", "out of memory", attempts);
        return;
    }
    px->status = resp->status;
    int err = tc_request_respond_head(px->req, resp->status, NULL, px->out, px->nout,
                                      px_length(px, resp));
    if (err == TC_ENOMEM) { /* the request is finished, its connection closed */
        px_closing(px, 503);
        px_close(px);
        return;
    }
    if (err != 0) {
        px_on_client_gone(px->req, px);
        return;
    }
    px->head_sent = 1;
    px->resp = resp;
    if (tc_response_read_body(resp, px_on_upstream_body, px) != 0) {
        px_closing(px, 502);
        tc_request_abort(px->req);
        px->resp = NULL;
        px_close(px);
    }
}

/* Every attempt failed and the last one had a head: its body, if it is small, then it goes to
 * the client whole; else 502. */
static void px_on_failed_body(tc_response *resp, int status, const char *data, size_t len,
                              void *arg)
{
    proxy_req *px = arg;
    const tc_hedge_result *r = tc_future_value(px->call->work);
    if (px->closing)
        return;
    if (len > 0) {
        if (tc__buf_append(&px->failed, data, len) == 0)
            return;
        status = TC_ETOOLARGE;
    }
    px->resp = status == 0 ? NULL : px->resp;
    if (status != 0 || px_head(px, resp, r->nattempts) != 0) {
        px_all_failed(px, r->nattempts);
        return;
    }
    px_closing(px, resp->status);
    tc_request_respond(px->req, resp->status, NULL, px->out, px->nout, px->failed.data,
                       px->failed.len);
    px_close(px);
}

static void px_on_hedge_done(tc_future *f, void *data)
{
    proxy_req *px = data;
    if (px->closing)
        return;
    if (px->starting) { /* it ended as it started: the starter takes it up when it is done */
        px->early = 1;
        return;
    }
    if (tc_future_state_of(f) != TC_FUTURE_FULFILLED) {
        px_on_client_gone(px->req, px);
        return;
    }
    const tc_hedge_result *r = tc_future_value(f);
    tc_request_set_attempts(px->req, r->nattempts);
    if (px->sw->cfg->log_replica)
        tc_request_set_replica(px->req, serve_call_replica(px->call, r));
    if (r->error == 0) {
        px_stream(px, (tc_response *)tc_hedge_response(r, (unsigned)r->winner), r->nattempts);
        return;
    }
    if (r->error == TC_ETIMEDOUT) {
        char msg[96];
        (void)snprintf(msg, sizeof(msg), "no response head within %llu ms",
                       (unsigned long long)px->timeout_ms);
        px_error(px, 504, "timeout", msg, r->nattempts);
        return;
    }
    if (r->last_failed >= 0) {
        px->resp = (tc_response *)tc_hedge_response(r, (unsigned)r->last_failed);
        tc__buf_init(&px->failed, NULL, 0, SERVE_PROXY_FAILED_BODY_MAX);
        if (tc_response_read_body(px->resp, px_on_failed_body, px) == 0)
            return;
        px->resp = NULL;
    }
    px_all_failed(px, r->nattempts);
}

/* ---- the attempts --------------------------------------------------------------------------- */

/* The hedge's prepare hook: the replica's URL and address (as for /api/smart), and the time left
 * of the request's deadline as X-Tailcut-Timeout-Ms, so the upstream can give up in time. */
static int px_prepare(void *data, unsigned id, void *replica_data, tc_client_request *creq)
{
    proxy_req *px = data;
    int err = serve_attempt_prepare(px->call, id, replica_data, creq);
    if (err != 0)
        return err;
    /* The deadline counts from the read moment rounded up (tc_request_ready_ms), which the
     * loop's clock, rounded down, may not have reached yet: never say more than the timeout. */
    uint64_t now = uv_now(tc_request_loop(px->req));
    uint64_t ready = tc_request_ready_ms(px->req);
    if (now < ready)
        now = ready;
    uint64_t left = px->deadline_ms > now ? px->deadline_ms - now : 1;
    px->timeout_value[tc__fmt_u64(px->timeout_value, left)] = '\0';
    memcpy(px->attempt, creq->headers, creq->nheaders * sizeof(tc_header));
    px->attempt[creq->nheaders].name = "X-Tailcut-Timeout-Ms";
    px->attempt[creq->nheaders].value = px->timeout_value;
    creq->headers = px->attempt;
    creq->nheaders++;
    return 0;
}

/* Starts the hedge: with the buffered body, or the body source; extras only when hedged. Runs
 * between px_begin() and px_started(), so a hedge that ends at once is answered by the latter.
 * Returns 0 or a TC_E* code. */
static int px_start(proxy_req *px)
{
    const serve_route *route = px->route;
    const serve_proxy_conf *pc = &route->proxy;
    tc_hedge_policy policy;
    tc_hedge_policy_init(&policy);
    policy.at_head = 1;
    policy.judge = tc_hedge_judge_head;
    policy.judge_data = (void *)&pc->failing;
    policy.deadline_ms = px->deadline_ms;
    policy.observe = serve_count_attempts;
    policy.observe_data = px->call;
    policy.replicas = route->replicas->set;
    policy.prepare = px_prepare;
    policy.prepare_data = px;
    policy.adaptive = route->adaptive;
    policy.extra = 0;
    if (px->hedged == TC__PROXY_HEDGED) {
        policy.extra = (unsigned)route->hedge_extra;
        policy.hedge_delay_ms = route->hedge_delay.ms;
        policy.staggered = route->adaptive != NULL;
        policy.budget = route->budget; /* R: the requests that may hedge */
    }
    tc_client_request creq = {.url = route->upstreams.v[0],
                              .method = px->method,
                              .headers = px->headers,
                              .nheaders = px->nheaders,
                              .max_body = SIZE_MAX,
                              .no_default_headers = 1,
                              .body_idle_timeout_ms = pc->body_idle_timeout_ms,
                              .body_source = px->source};
    if (px->source == NULL && px->body.len > 0) {
        creq.body = px->body.data;
        creq.body_len = px->body.len;
    }
    int err = tc_hedge_start(&px->call->work, px->client, &creq, &policy);
    if (err == 0)
        err = tc_future_on_done(px->call->work, px_on_hedge_done, px);
    return err;
}

static void px_begin(proxy_req *px)
{
    px->starting = 1;
}

/* The end of a start: answers its error (413 for TC_ETOOLARGE, else 503), or a hedge that ended
 * meanwhile. px may be freed when it returns. */
static void px_started(proxy_req *px, int err)
{
    px->starting = 0;
    if (err == TC_ETOOLARGE)
        px_error(px, 413, "too_large", "the request body is over max_request_body_bytes", 0);
    else if (err != 0)
        px_error(px, 503, "overloaded", tc_strerror(err), 0);
    else if (px->early)
        px_on_hedge_done(px->call->work, px);
}

/* ---- the request body ----------------------------------------------------------------------- */

static void px_count_unhedged(proxy_req *px)
{
    serve_metrics *m = &px->sw->cfg->metrics;
    const char *values[2] = {px->route->name != NULL ? px->route->name : "",
                             tc__proxy_unhedged_name(px->hedged)};
    uint32_t series;
    if (tc_metrics_series_lookup(px->sw->shard, m->proxy_unhedged, values, &series) == 0)
        tc_metrics_counter_add(px->sw->shard, m->proxy_unhedged, series, 1);
}

/* The attempt took enough of the body: read the client again. */
static void px_on_source_writable(tc_client_body *body, int status, void *arg)
{
    proxy_req *px = arg;
    (void)body;
    if (px->closing || status != 0)
        return;
    tc_request_body_resume(px->req);
}

/* A once-only attempt with the body as it comes (what was buffered first), between px_begin()
 * and px_started(). Returns 0 or a TC_E* code. */
static int px_start_streamed(proxy_req *px, int64_t length)
{
    int err =
        tc_client_body_new(&px->source, px->client, length > 0 ? length : TC_CLIENT_LENGTH_UNKNOWN);
    if (err == 0 && px->body.len > 0)
        err = tc_client_body_write(px->source, px->body.data, px->body.len);
    if (err != 0)
        return err == TC_ETOOLARGE ? TC_ENOMEM : err;
    tc__buf_reset(&px->body);
    return px_start(px);
}

static void px_on_body(tc_request *req, int status, const char *data, size_t len, void *arg)
{
    proxy_req *px = arg;
    if (px->closing)
        return;
    if (len > 0 && px->source == NULL) {
        if (tc__buf_append(&px->body, data, len) == 0)
            return;
        /* past the replay limit (a chunked body): sent once, as it comes */
        px->hedged = TC__PROXY_UNHEDGED_BODY_TOO_LARGE;
        px_count_unhedged(px);
        px_begin(px);
        int err = px_start_streamed(px, TC_CLIENT_LENGTH_UNKNOWN);
        if (err != 0 || px->early) {
            px_started(px, err);
            return;
        }
        px->starting = 0;
    }
    if (len > 0) {
        int err = tc_client_body_write(px->source, data, len);
        if (err == 0 && tc_client_body_pending(px->source) > SERVE_PROXY_WRITE_HIGH &&
            tc_client_body_on_writable(px->source, SERVE_PROXY_WRITE_LOW, px_on_source_writable,
                                       px) == 0)
            tc_request_body_pause(req);
        /* an error: the attempt has ended (its answer, or its failure, comes from the hedge) */
        return;
    }
    if (status == 0) {
        if (px->source != NULL) {
            (void)tc_client_body_end(px->source);
            return;
        }
        px_begin(px);
        px_started(px, px_start(px));
        return;
    }
    if (status == TC_ECANCELED)
        return; /* the client left: the abort callback follows */
    /* too large, malformed, or stalled: the attempt is cut (the upstream sees a reset); the
     * hedge that ends with it is not answered: this is */
    px->starting = 1;
    if (px->source != NULL)
        tc_client_body_abort(px->source);
    if (px->head_sent) {
        px_closing(px, 499);
        tc_request_abort(req);
        px_close(px);
    } else if (status == TC_ETOOLARGE) {
        px_error(px, 413, "too_large", "the request body is over max_request_body_bytes", 0);
    } else {
        px_error(px, 400, "bad_request", "the request body could not be read", 0);
    }
}

/* ---- the head ------------------------------------------------------------------------------- */

/* The attempt's headers (proxy_rules.c), as NUL-terminated copies. Returns 0 or a TC_E* code. */
static int px_headers(proxy_req *px)
{
    const serve_route *route = px->route;
    size_t nfields = tc_request_header_count(px->req);
    size_t nadded = route->upstream_headers.n, cap = nfields + nadded + 4;
    tc__field fields_on_stack[PX_STACK_FIELDS], out_on_stack[PX_STACK_FIELDS];
    int small = cap <= PX_STACK_FIELDS;
    tc__field *fields = small ? fields_on_stack : calloc(nfields + nadded + 1, sizeof(*fields));
    tc__field *out = small ? out_on_stack : calloc(cap, sizeof(*out));
    tc__buf xff;
    tc__buf_init(&xff, NULL, 0, (size_t)TC_SERVER_MAX_HEADERS);
    int err = fields != NULL && out != NULL ? 0 : TC_ENOMEM;
    for (size_t i = 0; i < nfields && err == 0; i++) {
        tc_str name, value;
        (void)tc_request_header_at(px->req, i, &name, &value);
        fields[i] = (tc__field){name.base, name.len, value.base, value.len};
    }
    tc__field *added = fields + nfields;
    for (size_t i = 0; i < nadded && err == 0; i++) {
        const tc_header *h = &route->upstream_headers.v[i];
        added[i] = (tc__field){h->name, strlen(h->name), h->value, strlen(h->value)};
    }
    tc_str addr = tc_request_client_addr(px->req), id = tc_request_id(px->req);
    tc__proxy_request_in in = {.fields = fields,
                               .nfields = nfields,
                               .added = added,
                               .nadded = nadded,
                               .client_addr = addr.base,
                               .client_addr_len = addr.len,
                               .request_id = id.base,
                               .request_id_len = id.len,
                               .proto = "http",
                               .preserve_host = route->proxy.preserve_host};
    size_t n = 0, bytes = 0;
    if (err == 0)
        err = tc__proxy_request_headers(&in, &xff, out, cap, &n);
    for (size_t i = 0; i < n; i++)
        bytes += out[i].name_len + out[i].value_len + 2;
    if (err == 0) {
        px->headers = malloc((n + 1 + n + 3) * sizeof(tc_header) + bytes + 1);
        if (px->headers == NULL) {
            err = TC_ENOMEM;
        } else {
            px->attempt = px->headers + n + 1;
            px->strings = (char *)(px->attempt + n + 3);
        }
    }
    char *p = px->strings;
    for (size_t i = 0; i < n && err == 0; i++) {
        px->headers[i].name = p;
        memcpy(p, out[i].name, out[i].name_len);
        p += out[i].name_len;
        *p++ = '\0';
        px->headers[i].value = p;
        memcpy(p, out[i].value, out[i].value_len);
        p += out[i].value_len;
        *p++ = '\0';
    }
    px->nheaders = err == 0 ? n : 0;
    tc__buf_reset(&xff);
    if (!small) {
        free(fields);
        free(out);
    }
    return err;
}

/* The rules of the head that answer before any attempt: Upgrade 501, dot segments 400,
 * X-Tailcut-Timeout-Ms 400, a stated body over the limit 413. Returns 0 to go on. */
static int px_check_head(serve_worker *sw, const serve_route *route, tc_request *req,
                         uint64_t *timeout_ms)
{
    tc_str v, path = tc_request_path(req);
    const char *why = NULL;
    int status = 0, present = 0;
    const char *code = "bad_request";
    *timeout_ms = route->timeout_ms > 0 ? route->timeout_ms : route->max_timeout_ms;
    if (tc_request_header(req, "Upgrade", &v)) {
        status = 501;
        code = "not_implemented";
        why = "Upgrade is not supported by the proxy";
    } else if (!tc__proxy_path_ok(path.base, path.len)) {
        status = 400;
        why = "the path holds a dot segment";
    } else if (serve_timeout_header(req, route->max_timeout_ms, timeout_ms, &present, &why) != 0) {
        status = 400;
    } else if (tc_request_body_length(req) > 0 &&
               (uint64_t)tc_request_body_length(req) > route->proxy.max_request_body_bytes) {
        status = 413;
        code = "too_large";
        why = "the request body is over max_request_body_bytes";
    }
    if (status == 0)
        return 0;
    serve_respond_error(sw, route, req, EP_PROXY, status, code, why);
    return -1;
}

void serve_handle_proxy(serve_worker *sw, const serve_route *route, tc_request *req)
{
    const serve_proxy_conf *pc = &route->proxy;
    uint64_t timeout_ms;
    tc_request_set_route(req, route->name);
    if (px_check_head(sw, route, req, &timeout_ms) != 0)
        return;
    tc_str method = tc_request_method(req), key;
    proxy_req *px = calloc(1, sizeof(*px));
    if (px == NULL) {
        serve_respond_error(sw, route, req, EP_PROXY, 503, "overloaded", "out of memory");
        return;
    }
    serve_call *call = serve_call_new(sw, route, req, EP_PROXY, timeout_ms);
    if (call == NULL) { /* answered 503 */
        free(px);
        return;
    }
    px->sw = sw;
    px->route = route;
    px->req = req;
    px->ready_ns = tc_request_ready_ns(req);
    px->call = call;
    px->client = sw->client;
    call->proxy = 1;
    call->strip = route->prefix;
    call->strip_len = 0;
    if (pc->strip_prefix && route->prefix_len > 0)
        call->strip_len = route->prefix_len - (route->prefix[route->prefix_len - 1] == '/');
    px->timeout_ms = timeout_ms;
    px->deadline_ms = tc_request_ready_ms(req) + timeout_ms;
    if (method.len < sizeof(px->method))
        memcpy(px->method, method.base, method.len); /* px is zeroed: NUL-terminated */
    serve_call_count_in_flight(call);
    tc_request_on_abort(req, px_on_client_gone, px);
    int streaming = tc_request_is_streaming(req);
    int64_t length = streaming ? tc_request_body_length(req) : (int64_t)tc_request_body(req).len;
    px->hedged =
        tc__proxy_hedge_rule(method.base, method.len, (const char *const *)pc->hedge_methods.v,
                             pc->hedge_methods.n, tc_request_header(req, "Idempotency-Key", &key),
                             pc->hedge_idempotency_key, length, pc->body_replay_limit_bytes);
    if (px->hedged != TC__PROXY_HEDGED)
        px_count_unhedged(px);
    tc__buf_init(&px->body, NULL, 0,
                 px->hedged == TC__PROXY_HEDGED ? (size_t)pc->body_replay_limit_bytes : 0);
    if (method.len >= sizeof(px->method) || px_headers(px) != 0) {
        px_error(px, method.len >= sizeof(px->method) ? 400 : 503,
                 method.len >= sizeof(px->method) ? "bad_request" : "overloaded",
                 method.len >= sizeof(px->method) ? "the method is too long"
                                                  : "the request headers could not be built",
                 0);
        return;
    }
    if (!streaming) {
        /* handled whole: a body over the replay limit goes once, from a source */
        tc_str body = tc_request_body(req);
        px_begin(px);
        if (body.len == 0 || tc__buf_append(&px->body, body.base, body.len) == 0) {
            px_started(px, px_start(px));
            return;
        }
        int err = px_start_streamed(px, (int64_t)body.len);
        if (err == 0 && !px->early) {
            (void)tc_client_body_write(px->source, body.base, body.len);
            (void)tc_client_body_end(px->source);
        }
        px_started(px, err);
        return;
    }
    px_begin(px);
    if (length == 0) {
        px_started(px, px_start(px));
        return;
    }
    int err = px->hedged != TC__PROXY_HEDGED ? px_start_streamed(px, length) : 0;
    if (err == 0 && !px->early &&
        tc_request_read_body(req, pc->max_request_body_bytes, px_on_body, px) != 0) {
        if (px->source != NULL)
            tc_client_body_abort(px->source);
        err = TC_ETOOLARGE;
    }
    px_started(px, err);
}
