/*
 * tailcut serve: the four attempt endpoints, and the call every /api/... request becomes.
 *
 * /api/smart hedges (extra attempts after a fixed or percentile delay, within the budget),
 * /api/first races three attempts, /api/all waits for all three, /api/within-timeout gathers
 * what three attempts answer before the deadline. Each is one tc_hedge with its own policy; the
 * hedge's result becomes the answer. A client that leaves cancels the hedge.
 */
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/fmt.h"
#include "cmd_serve.h"
#include "http/proxy_internal.h"

void serve_respond_error(serve_worker *sw, const serve_route *route, tc_request *req, endpoint ep,
                         int status, const char *code, const char *message)
{
    static const tc_server_header no_attempts = {"X-Tailcut-Attempts", "0"};
    int attempt_endpoint = ep == EP_SMART || ep == EP_FIRST || ep == EP_ALL || ep == EP_WITHIN;
    serve_count_request(sw, route, ep, status, tc_request_ready_ns(req));
    if (sw->conf->from_file)
        tc_request_set_route(req, route != NULL ? route->name : "");
    if (attempt_endpoint)
        tc_request_set_attempts(req, 0);
    tc_request_respond_error_with(req, status, code, message, &no_attempts,
                                  attempt_endpoint ? 1 : 0);
}

int serve_timeout_header(tc_request *req, uint64_t max_ms, uint64_t *timeout_ms, int *present,
                         const char **why)
{
    size_t pos = 0;
    tc_str v, again;
    *present = tc_request_header_next(req, "X-Tailcut-Timeout-Ms", &pos, &v);
    if (!*present)
        return 0;
    if (tc_request_header_next(req, "X-Tailcut-Timeout-Ms", &pos, &again)) {
        *why = "X-Tailcut-Timeout-Ms is given more than once";
        return TC_EINVAL;
    }
    return tc__proxy_timeout_header(v.base, v.len, max_ms, timeout_ms, why);
}

int serve_call_timeout(serve_worker *sw, const serve_route *route, tc_request *req, endpoint ep,
                       int required, uint64_t *timeout_ms)
{
    uint64_t max_ms = route->max_timeout_ms;
    tc_str query = tc_request_query(req);
    int present = 0;
    const char *why = NULL;
    *timeout_ms = max_ms;
    if (tc_query_timeout(query.base, query.len, max_ms, timeout_ms, &present, &why) != 0) {
        serve_respond_error(sw, route, req, ep, 400, "bad_request", why);
        return -1;
    }
    /* the header asks only when the parameter does not: the parameter wins */
    if (!present && serve_timeout_header(req, max_ms, timeout_ms, &present, &why) != 0) {
        serve_respond_error(sw, route, req, ep, 400, "bad_request", why);
        return -1;
    }
    if (!present && required) {
        serve_respond_error(sw, route, req, ep, 400, "bad_request",
                            "timeout is required on this endpoint");
        return -1;
    }
    if (!present)
        *timeout_ms = route->timeout_ms != 0 ? route->timeout_ms : max_ms;
    return 0;
}

serve_call *serve_call_new(serve_worker *sw, const serve_route *route, tc_request *req, endpoint ep,
                           uint64_t timeout_ms)
{
    /* tc__calloc: glibc's calloc skips the per-thread cache (src/base/alloc.c) */
    serve_call *call = tc__calloc(1, sizeof(*call));
    if (call == NULL) {
        serve_respond_error(sw, route, req, ep, 503, "overloaded", "out of memory");
        return NULL;
    }
    call->sw = sw;
    /* The configuration it started with, to its end, whatever a reload does meanwhile. */
    call->conf = serve_conf_take(sw);
    call->route = route;
    call->req = req;
    call->ep = ep;
    call->timeout_ms = timeout_ms;
    /* the replicas' own URLs with the client's query: each may grow by 3 bytes a query byte */
    tc__buf_init(&call->urls, NULL, 0,
                 TC_HEDGE_MAX_ATTEMPTS * (route->url_max + 3 * (size_t)TC_SERVER_MAX_URI + 16));
    return call;
}

/* Gives back what serve_call_new took (its configuration), without the in-flight counts. */
static void call_end(serve_call *call)
{
    serve_worker *sw = call->sw;
    serve_conf *conf = call->conf;
    serve_call_release(call);
    tc__free(call);
    serve_conf_give(sw, conf);
}

void serve_call_abandon(serve_call *call)
{
    call_end(call);
}

void serve_call_free(serve_call *call)
{
    serve_metrics *m = &call->sw->cfg->metrics;
    tc_metrics_gauge_add(
        call->sw->shard, m->in_flight,
        serve_series(call->sw, m->in_flight, call->route, NULL, TC_METRICS_SERIES_DEFAULT), -1);
    serve_stats_in_flight(call->sw->stats, -1);
    tc_future_unref(call->work);
    call_end(call);
}

static void on_client_gone(tc_request *req, void *data)
{
    serve_call *call = data;
    /* runs hedge.c on_hedge_cancel (or future_comb.c comb_on_cancel), then the done callback,
     * which finishes the request */
    tc_future_cancel(call->work);
}

void serve_call_count_in_flight(serve_call *call)
{
    serve_worker *sw = call->sw;
    serve_metrics *m = &sw->cfg->metrics;
    tc_metrics_gauge_add(
        sw->shard, m->in_flight,
        serve_series(sw, m->in_flight, call->route, NULL, TC_METRICS_SERIES_DEFAULT), 1);
    serve_stats_in_flight(sw->stats, 1);
}

void serve_call_watch(serve_call *call, tc_future_cb done)
{
    serve_worker *sw = call->sw;
    serve_call_count_in_flight(call);
    /* fires from src/server/server_conn.c tc__srv_conn_close when the client leaves */
    tc_request_on_abort(call->req, on_client_gone, call);
    /* done: on_hedge_done or cmd_serve_metadata.c on_meta_done; fires from src/policy/hedge.c
     * hedge_finish, the cancel below, or (metadata) the tc_with_timeout wrapper completing */
    if (tc_future_on_done(call->work, done, call) != 0) {
        tc_future_cancel(call->work);
        tc_request_on_abort(call->req, NULL, NULL);
        serve_respond_error(sw, call->route, call->req, call->ep, 503, "overloaded",
                            "out of memory");
        serve_call_free(call);
    }
}

/* Bodies up to this size are written on the stack. */
#define SERVE_SMALL_BODY 2048

/* A body written in two passes over the same code: the first (p == NULL) only counts its
 * length, the second writes into exactly that many bytes. No buffer grows. */
typedef struct body_writer {
    char *p;
    size_t len;
} body_writer;

static void put(body_writer *w, const char *s, size_t n)
{
    if (w->p != NULL)
        memcpy(w->p + w->len, s, n);
    w->len += n;
}

/* The answer's body for a hedge result (an upstream body goes in byte for byte); returns the
 * status. attempts holds the number of attempts in decimal (attempts_len digits). */
static int write_body(body_writer *w, const serve_call *call, const tc_hedge_result *r,
                      const char *attempts, size_t attempts_len)
{
    if (r->error == TC_ETIMEDOUT) {
        char ms[TC__FMT_U64_MAX];
        put(w, TC__LIT("{\"success\":false,\"error\":\"timeout\",\"message\":\""));
        if (call->ep == EP_ALL)
            put(w, TC__LIT("not every attempt finished"));
        else
            put(w, TC__LIT("no successful answer"));
        put(w, TC__LIT(" within "));
        put(w, ms, tc__fmt_u64(ms, call->timeout_ms));
        put(w, TC__LIT(" ms\"}"));
        return 504;
    }
    if (r->error == TC_EALLFAILED) {
        put(w, TC__LIT("{\"success\":false,\"error\":\"upstream_failed\",\"message\":\"every "
                       "upstream attempt failed\",\"attempts\":"));
        put(w, attempts, attempts_len);
        put(w, TC__LIT("}"));
        return 502;
    }
    if (call->ep == EP_SMART || call->ep == EP_FIRST) {
        const tc_response *win = tc_hedge_response(r, (unsigned)r->winner);
        put(w, TC__LIT("{\"success\":true,\"response\":"));
        put(w, win->body, win->body_len);
        put(w, TC__LIT("}"));
        return 200;
    }
    put(w, TC__LIT("["));
    for (unsigned k = 0; k < r->nsuccesses; k++) {
        const tc_response *resp = tc_hedge_response(r, r->successes[k]);
        if (k > 0)
            put(w, TC__LIT(","));
        put(w, resp->body, resp->body_len);
    }
    put(w, TC__LIT("]"));
    return 200;
}

/* The hedge ended: answer as the endpoint does, count, free. */
static void on_hedge_done(tc_future *f, void *data)
{
    serve_call *call = data;
    serve_worker *sw = call->sw;
    tc_request *req = call->req;
    uint64_t ready_ns = tc_request_ready_ns(req);

    serve_trace_done(sw->trace, call->trace);
    if (tc_future_state_of(f) != TC_FUTURE_FULFILLED) {
        /* Cancelled: the client went away. Nothing to send. */
        serve_count_request(sw, call->route, call->ep, 499, ready_ns);
        tc_request_drop(req, 0);
        serve_call_free(call);
        return;
    }
    const tc_hedge_result *r = tc_future_value(f);
    tc_request_set_attempts(req, r->nattempts);
    if (sw->cfg->log_replica)
        tc_request_set_replica(req, serve_call_replica(call, r)); /* valid until serve_call_free */
    char attempts[TC__FMT_U64_MAX + 1];
    size_t attempts_len = tc__fmt_u64(attempts, r->nattempts);
    attempts[attempts_len] = '\0';
    tc_server_header hdr = {"X-Tailcut-Attempts", attempts};

    /* A small body is written on the stack (tc_request_respond copies it): most are. */
    char small[SERVE_SMALL_BODY];
    body_writer body = {NULL, 0};
    (void)write_body(&body, call, r, attempts, attempts_len);
    body.p = body.len < sizeof(small) ? small : malloc(body.len + 1);
    if (body.p == NULL) {
        serve_respond_error(sw, call->route, req, call->ep, 503, "overloaded", "out of memory");
    } else {
        body.len = 0;
        int status = write_body(&body, call, r, attempts, attempts_len);
        serve_count_request(sw, call->route, call->ep, status, ready_ns);
        tc_request_respond(req, status, "application/json", &hdr, 1, body.p, body.len);
        serve_trace_written(sw->trace, call->trace, status);
    }
    if (body.p != small)
        free(body.p);
    serve_call_free(call);
}

void serve_handle_attempts(serve_worker *sw, const serve_route *route, tc_request *req, endpoint ep)
{
    uint64_t timeout_ms;
    if (serve_call_timeout(sw, route, req, ep, ep == EP_WITHIN, &timeout_ms) != 0)
        return;

    tc_hedge_policy policy;
    tc_hedge_policy_init(&policy);
    policy.deadline_ms = tc_request_ready_ms(req) + timeout_ms;
    policy.observe = serve_count_attempts; /* called from src/policy/hedge.c observe */
    policy.replicas = route->replicas->set;
    policy.prepare = serve_attempt_prepare; /* called from src/policy/hedge.c replica_choose */
    switch (ep) {
    case EP_SMART:
        policy.extra = (unsigned)route->hedge_extra;
        policy.hedge_delay_ms = route->hedge_delay.ms;
        policy.staggered = route->adaptive != NULL; /* pNN: extra k at k x delay */
        policy.adaptive = route->adaptive;
        policy.budget = route->budget;
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
    serve_call *call = serve_call_new(sw, route, req, ep, timeout_ms);
    if (call == NULL)
        return;
    if (sw->conf->from_file)
        tc_request_set_route(req, route->name);
    call->trace = serve_trace_read(sw->trace, req, policy.deadline_ms);
    policy.prepare_data = call;
    policy.observe_data = call;
    /* Built for the first URL; serve_attempt_prepare aims each attempt at its replica. */
    tc_client_request creq = {.url = route->upstreams.v[0], .max_body = route->max_body};
    /* The id the upstream sees as X-Request-Id (the one place that picks it). */
    tc_str request_id = tc_request_id(req);
    int err = serve_forward_build(&sw->fwd, route, req, request_id, &creq);
    if (err == 0)
        err = tc_hedge_start(&call->work, sw->client, &creq, &policy);
    if (err != 0) {
        serve_call_abandon(call);
        serve_respond_error(sw, route, req, ep, 503, "overloaded", tc_strerror(err));
        return;
    }
    serve_call_watch(call, on_hedge_done);
}
