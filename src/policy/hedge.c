/*
 * Hedged requests on tc_client futures.
 *
 * The one idea: a hedge is a small state machine driven by three kinds of events (an attempt
 * finished, the hedge delay, the deadline), and every one of them goes through
 * hedge_check(), which decides whether to fire extra attempts, to finish, or to wait.
 * hedge_finish() is the only exit: it cancels what still runs, closes the timer, records latencies
 * for an adaptive policy and hands the result to the hedge's future. Attempts are client
 * futures; cancelling one aborts its transfer.
 *
 * Extras are *decided* one at a time by decide_extras(): each one either fires or, when the
 * budget says no, is dropped for good. The seed schedule decides every extra at once (at the
 * delay, or when everything fired so far has failed); the staggered one decides extra k at
 * k x delay, or at once when nothing is in flight. A hedge with nothing in flight whose extras
 * were all denied has nothing left to wait for, and hedge_check() ends it.
 *
 * Replicas: with a replica set, fire() asks the set for each attempt's replica just before the
 * attempt starts (the first by power of two choices, every later one among the replicas this
 * hedge has not tried) and lets the caller's prepare hook aim the request at it. Each attempt's
 * end goes to the set exactly once: from its done callback (cancellation runs it too), or from
 * fire() when it could not start. The slot keeps the replica id, so the report never depends on
 * where the result lives by then.
 *
 * Timer: the hedge delay and the deadline share one uv timer, armed for whichever is due first
 * (timer_arm()), so a request costs one timer init and close, not two. on_hedge_timer() handles
 * what is due in the order two timers would fire: the earlier first, the deadline on a tie.
 *
 * Lifetime: the hedge state holds that uv timer, so it is freed only after its close callback,
 * which hedge_finish() or the cancel hook start. The result is a separate allocation
 * that becomes the future's value (and holds a reference to every attempt's future, so responses
 * stay readable for as long as the caller holds the hedge's future).
 */
#include <stdlib.h>
#include <string.h>

#include <strings.h>

#include "base/alloc.h"
#include "base/clock.h"
#include "base/fmt.h"
#include "client/request_copy.h"
#include "tailcut/hedge.h"
#include "tailcut/json.h"

#define ATTEMPT_HEADER "X-Tailcut-Attempt"

/* Attempts get this much more time than the hedge's own deadline, so that the deadline timer,
 * not the client's timeout, decides when a hedge has run out of time. */
#define TC__HEDGE_ATTEMPT_SLACK_MS 1000

/* hedge_due or deadline_due when there is nothing to wait for. */
#define NO_DUE UINT64_MAX

typedef struct hedge hedge;

typedef struct attempt_slot {
    hedge *hg;
    unsigned index;
    int replica; /* the attempt's replica, or -1: kept here, the result may have moved on */
} attempt_slot;

struct hedge {
    tc_future *out;
    tc_client *client;
    uv_loop_t *loop;
    tc_hedge_policy policy;
    tc_client_request req; /* url and method point into strings[] below */
    tc_header *headers;
    tc_hedge_result *result;
    uv_timer_t timer;        /* due at the earlier of hedge_due and deadline_due */
    uint64_t hedge_due;      /* loop time the next extra is decided, or NO_DUE */
    uint64_t deadline_due;   /* loop time of policy.deadline_ms, or NO_DUE */
    unsigned done;           /* attempts that have ended */
    int finished;            /* hedge_finish() or cancel ran */
    int firing;              /* inside fire(): checks wait until it returns */
    unsigned extras_decided; /* extras fired or denied so far */
    int extras_stopped;      /* an extra was denied with nothing in flight: no more extras */
    uint64_t start_ms;       /* when the first attempt fired: the clock rounded up */
    attempt_slot slots[TC_HEDGE_MAX_ATTEMPTS];
    char *strings; /* copies of url, method, header names and values, body */
};

static const char *const outcome_names[TC_OUTCOME_COUNT] = {
    [TC_OUTCOME_PENDING] = "pending",
    [TC_OUTCOME_SUCCESS] = "success",
    [TC_OUTCOME_HTTP_STATUS] = "http_status",
    [TC_OUTCOME_INVALID_JSON] = "invalid_json",
    [TC_OUTCOME_TOO_LARGE] = "too_large",
    [TC_OUTCOME_CONNECT_ERROR] = "connect_error",
    [TC_OUTCOME_RESET] = "reset",
    [TC_OUTCOME_TIMEOUT] = "timeout",
    [TC_OUTCOME_CANCELLED] = "cancelled",
    [TC_OUTCOME_OTHER] = "other",
};

const char *tc_attempt_outcome_name(tc_attempt_outcome outcome)
{
    return (unsigned)outcome < TC_OUTCOME_COUNT ? outcome_names[outcome] : "other";
}

tc_attempt_outcome tc_hedge_judge_json(const tc_response *resp, void *data)
{
    (void)data;
    if (resp->status != 200)
        return TC_OUTCOME_HTTP_STATUS;
    return tc_json_valid(resp->body, resp->body_len) ? TC_OUTCOME_SUCCESS : TC_OUTCOME_INVALID_JSON;
}

tc_attempt_outcome tc_hedge_judge_head(const tc_response *resp, void *data)
{
    const tc_hedge_statuses *failing = data;
    for (size_t i = 0; failing != NULL && i < failing->n; i++)
        if (resp->status == failing->v[i])
            return TC_OUTCOME_HTTP_STATUS;
    return TC_OUTCOME_SUCCESS;
}

void tc_hedge_policy_init(tc_hedge_policy *pol)
{
    memset(pol, 0, sizeof(*pol));
    pol->mode = TC_HEDGE_FIRST;
    pol->initial = 1;
    pol->extra = 2;
    pol->hedge_delay_ms = 300;
    pol->hedge_on_failure = 1;
}

int tc_hedge_result_replica(const tc_hedge_result *res)
{
    if (res == NULL)
        return -1;
    if (res->winner >= 0)
        return res->attempts[res->winner].replica;
    return res->nsuccesses > 0 ? res->attempts[res->successes[0]].replica : -1;
}

const tc_response *tc_hedge_response(const tc_hedge_result *res, unsigned i)
{
    if (i >= res->nattempts || res->attempts[i].response == NULL)
        return NULL;
    if (tc_future_state_of(res->attempts[i].response) != TC_FUTURE_FULFILLED)
        return NULL;
    return tc_future_value(res->attempts[i].response);
}

static void result_free(void *value)
{
    tc_hedge_result *res = value;
    for (unsigned i = 0; i < res->nattempts; i++)
        tc_future_unref(res->attempts[i].response);
    tc__free(res);
}

static tc_attempt_outcome outcome_of_error(int err)
{
    switch (err) {
    case TC_ECONNREFUSED:
    case TC_EDNS:
    case TC_ETLS:
    case TC_EURL:
        return TC_OUTCOME_CONNECT_ERROR;
    case TC_ECONNRESET:
    case TC_ESTALE:
        return TC_OUTCOME_RESET;
    case TC_ETIMEDOUT:
        return TC_OUTCOME_TIMEOUT;
    case TC_ETOOLARGE:
        return TC_OUTCOME_TOO_LARGE;
    case TC_ECANCELED:
        return TC_OUTCOME_CANCELLED;
    default:
        return TC_OUTCOME_OTHER;
    }
}

/* ---- replicas ------------------------------------------------------------------------------- */

/* How an attempt ended, as the replica set counts it (replica.h: CONTRACT section 7's list). A
 * status the judge refused is a failure only when it is 5xx or 429. */
static tc_replica_result replica_result(tc_attempt_outcome outcome, tc_future *f, int at_head)
{
    switch (outcome) {
    case TC_OUTCOME_SUCCESS:
        return TC_REPLICA_SUCCESS;
    case TC_OUTCOME_CANCELLED:
        return TC_REPLICA_CANCELLED;
    case TC_OUTCOME_HTTP_STATUS:
        /* head mode: the judge held the route's failure statuses, and they are failures */
        if (!at_head && f != NULL && tc_future_state_of(f) == TC_FUTURE_FULFILLED)
            return tc_replica_classify_status(((const tc_response *)tc_future_value(f))->status);
        return TC_REPLICA_FAILURE;
    default:
        return TC_REPLICA_FAILURE;
    }
}

/* Head mode: ends the transfer of attempt i's streamed response (answered, body unread). */
static void response_abort(tc_hedge_result *res, int i)
{
    if (i < 0)
        return;
    tc_future *f = res->attempts[i].response;
    if (f != NULL && tc_future_state_of(f) == TC_FUTURE_FULFILLED)
        tc_response_abort(tc_future_value(f));
}

/* Tells the set how slot's attempt ended; once per attempt that a choice counted. */
static void replica_report(hedge *hg, attempt_slot *slot, tc_replica_result result,
                           const tc_hedge_attempt *a)
{
    if (slot->replica < 0)
        return;
    uint64_t elapsed_ns =
        a != NULL && a->ended_ns > a->started_ns ? a->ended_ns - a->started_ns : 0;
    (void)tc_replica_done(hg->policy.replicas, (unsigned)slot->replica, result, elapsed_ns / 1000,
                          tc__now_ms());
    slot->replica = -1;
}

/* Chooses attempt i's replica (the first by power of two choices, any later one among those the
 * hedge has not tried first) and lets the caller fill *req for it. Returns 0, or the error that
 * fails the attempt unsent: TC_ECONNREFUSED for an empty set (as a replica that cannot be
 * reached), the prepare hook's error (the choice is then reported NOT_SENT). */
static int replica_choose(hedge *hg, unsigned i, tc_client_request *req)
{
    tc_hedge_attempt *a = &hg->result->attempts[i];
    tc_replica_choice choice;
    unsigned tried[TC_HEDGE_MAX_ATTEMPTS];
    size_t ntried = 0;
    for (unsigned k = 0; k < i; k++)
        if (hg->result->attempts[k].replica >= 0)
            tried[ntried++] = (unsigned)hg->result->attempts[k].replica;
    int err =
        i == 0 ? tc_replica_choose_first(hg->policy.replicas, tc__now_ms(), &choice)
               : tc_replica_choose_extra(hg->policy.replicas, tc__now_ms(), tried, ntried, &choice);
    if (err != 0)
        return TC_ECONNREFUSED;
    a->replica = (int)choice.id;
    a->panic = choice.panic;
    hg->slots[i].replica = (int)choice.id;
    if (hg->policy.prepare == NULL)
        return 0;
    err = hg->policy.prepare(hg->policy.prepare_data, choice.id, choice.data, req);
    if (err != 0)
        replica_report(hg, &hg->slots[i], TC_REPLICA_NOT_SENT, NULL);
    return err;
}

/* ---- lifetime ------------------------------------------------------------------------------- */

static void hedge_free(hedge *hg)
{
    if (hg->result != NULL)
        result_free(hg->result);
    tc_future_unref(hg->out);
    tc__free(hg->strings);
    tc__free(hg->headers);
    tc__free(hg);
}

static void on_hedge_timer_closed(uv_handle_t *handle)
{
    hedge_free(handle->data);
}

/* Cancels every attempt still running and closes the timer. Each cancellation runs that
 * attempt's done callback at once, which records it as cancelled. In head mode, every answered
 * attempt but keep (the winner, or the last failed one for the caller to pass on) has its
 * transfer ended too. */
static void hedge_wind_down(hedge *hg, int keep)
{
    tc_hedge_result *res = hg->result;
    hg->finished = 1;
    for (unsigned i = 0; i < res->nattempts; i++) {
        tc_future *f = res->attempts[i].response;
        if (f != NULL && !tc_future_done(f))
            tc_future_cancel(f);
        else if (hg->policy.at_head && (int)i != keep)
            response_abort(res, (int)i);
    }
    if (res->last_failed != keep)
        res->last_failed = -1;
    uv_close((uv_handle_t *)&hg->timer, on_hedge_timer_closed);
}

static void observe(hedge *hg, const tc_hedge_result *res)
{
    /* lands in app/serve/cmd_serve_metrics.c serve_count_attempts */
    if (hg->policy.observe != NULL)
        hg->policy.observe(res, hg->policy.observe_data);
}

/* Feeds an adaptive policy's estimator: each success at its latency, and, when a
 * winner is known, each attempt cancelled for it at its elapsed time, as censored (a lower
 * bound: dropping them would hide exactly the slow attempts and pull the delay down, reading
 * them as latencies would pull it onto the moments of cancellation). Failures never. */
static void record_latencies(hedge *hg, const tc_hedge_result *res)
{
    if (hg->policy.adaptive == NULL)
        return;
    uint64_t now_ms = tc__now_ms();
    for (unsigned i = 0; i < res->nattempts; i++) {
        const tc_hedge_attempt *a = &res->attempts[i];
        if (a->ended_ns < a->started_ns)
            continue;
        uint64_t us = (a->ended_ns - a->started_ns) / 1000;
        if (a->outcome == TC_OUTCOME_SUCCESS)
            tc_hedge_adaptive_record(hg->policy.adaptive, now_ms, us);
        else if (a->outcome == TC_OUTCOME_CANCELLED && res->winner >= 0)
            tc_hedge_adaptive_record_censored(hg->policy.adaptive, now_ms, us);
    }
}

static void hedge_finish(hedge *hg, int error)
{
    tc_hedge_result *res = hg->result;
    if (hg->finished || res == NULL)
        return;
    hedge_wind_down(hg, res->winner >= 0 ? res->winner : res->last_failed);
    hg->result = NULL;
    res->error = error;
    record_latencies(hg, res);
    observe(hg, res);
    /* fires the caller's registration: app/serve/cmd_serve_api.c on_hedge_done */
    tc_future_fulfill(hg->out, res, result_free);
}

static void on_hedge_cancel(tc_future *f, void *data)
{
    hedge *hg = data;
    if (!hg->finished) {
        hedge_wind_down(hg, -1);
        hg->result->error = TC_ECANCELED;
        observe(hg, hg->result);
    }
}

/* ---- attempts ------------------------------------------------------------------------------- */

static void hedge_check(hedge *hg);
static void on_hedge_timer(uv_timer_t *t);

/* Sets the loop time the next extra is due: due, but never before now (as a timer started for 0
 * ms), or NO_DUE. */
static void set_hedge_due(hedge *hg, uint64_t due)
{
    uint64_t now = uv_now(hg->loop);
    hg->hedge_due = due != NO_DUE && due < now ? now : due;
}

/* Arms the timer for the earlier of the hedge delay and the deadline, or stops it. */
static void timer_arm(hedge *hg)
{
    uint64_t due = hg->hedge_due < hg->deadline_due ? hg->hedge_due : hg->deadline_due;
    if (due == NO_DUE) {
        uv_timer_stop(&hg->timer);
        return;
    }
    uint64_t now = uv_now(hg->loop);
    uv_timer_start(&hg->timer, on_hedge_timer, due > now ? due - now : 0, 0);
}

static void on_hedge_attempt_done(tc_future *f, void *data)
{
    attempt_slot *slot = data;
    hedge *hg = slot->hg;
    tc_hedge_result *res = hg->result;
    tc_hedge_attempt *a;
    if (res == NULL) /* finished: the result went to the future; record there */
        res = tc_future_value(hg->out);
    if (res == NULL) {
        replica_report(hg, slot, TC_REPLICA_NOT_SENT, NULL);
        return;
    }
    a = &res->attempts[slot->index];
    a->ended_ns = uv_hrtime();
    hg->done++;
    switch (tc_future_state_of(f)) {
    case TC_FUTURE_FULFILLED: {
        /* tailcut serve sets no judge: tc_hedge_judge_json above */
        tc_hedge_judge_fn judge = hg->policy.judge ? hg->policy.judge : tc_hedge_judge_json;
        a->outcome = judge(tc_future_value(f), hg->policy.judge_data);
        break;
    }
    case TC_FUTURE_REJECTED:
        a->outcome = outcome_of_error(tc_future_error(f));
        break;
    default:
        a->outcome = TC_OUTCOME_CANCELLED;
        break;
    }
    replica_report(hg, slot, replica_result(a->outcome, f, hg->policy.at_head), a);
    if (hg->finished) {
        if (hg->policy.at_head)
            response_abort(res, (int)slot->index); /* a head after the end: nobody reads it */
        return;
    }
    if (hg->policy.at_head && a->outcome == TC_OUTCOME_HTTP_STATUS) {
        /* the newest failed head is the one passed on if all fail: the older one can go */
        response_abort(res, res->last_failed);
        res->last_failed = (int)slot->index;
    }
    if (a->outcome == TC_OUTCOME_SUCCESS) {
        res->successes[res->nsuccesses++] = slot->index;
        if (hg->policy.mode == TC_HEDGE_FIRST) {
            res->winner = (int)slot->index;
            hedge_finish(hg, 0);
            return;
        }
    }
    if (!hg->firing)
        hedge_check(hg);
}

static void fire(hedge *hg, unsigned n, int hedged)
{
    tc_hedge_result *res = hg->result;
    uint64_t now = uv_now(hg->loop);
    tc_client_request req = hg->req;
    char number[TC__FMT_U64_MAX + 1];
    /* copy_request() left one header slot free at the end for the attempt's number. */
    hg->headers[req.nheaders].name = ATTEMPT_HEADER;
    hg->headers[req.nheaders].value = number;
    req.nheaders++;
    if (hg->policy.deadline_ms > 0) {
        uint64_t left = hg->policy.deadline_ms > now ? hg->policy.deadline_ms - now : 0;
        req.timeout_ms = left + TC__HEDGE_ATTEMPT_SLACK_MS;
    }
    hg->firing = 1;
    for (unsigned k = 0; k < n && !hg->finished; k++) {
        unsigned i = res->nattempts++;
        tc_hedge_attempt *a = &res->attempts[i];
        tc_client_request areq = req; /* what the prepare hook may change for this attempt */
        number[tc__fmt_u64(number, i + 1)] = '\0';
        a->hedged = hedged;
        a->replica = -1;
        a->started_ns = uv_hrtime();
        hg->slots[i].hg = hg;
        hg->slots[i].index = i;
        hg->slots[i].replica = -1;
        int err = hg->policy.replicas != NULL ? replica_choose(hg, i, &areq) : 0;
        if (err == 0)
            err = tc_client_request_start(&a->response, hg->client, &areq);
        if (err != 0) {
            a->response = NULL;
            a->outcome = outcome_of_error(err);
            a->ended_ns = a->started_ns;
            replica_report(hg, &hg->slots[i], TC_REPLICA_NOT_SENT, a);
            hg->done++;
            continue;
        }
        /* fires from client.c tc__creq_succeed / tc__creq_fail, or the cancel in hedge_wind_down */
        if (tc_future_on_done(a->response, on_hedge_attempt_done, &hg->slots[i]) != 0) {
            tc_future_cancel(a->response);
            a->outcome = TC_OUTCOME_OTHER;
            replica_report(hg, &hg->slots[i], TC_REPLICA_NOT_SENT, a);
            hg->done++;
        }
    }
    hg->firing = 0;
}

static unsigned extras_left(const hedge *hg)
{
    return hg->extras_stopped ? 0 : hg->policy.extra - hg->extras_decided;
}

/* Decides up to n more extras: each fires, or is denied by the budget and dropped. Returns how
 * many fired. The staggered schedule's timer is set for the next one still to come. */
static unsigned decide_extras(hedge *hg, unsigned n)
{
    unsigned fired = 0;
    for (unsigned k = 0; k < n && extras_left(hg) > 0 && !hg->finished; k++) {
        hg->extras_decided++;
        if (hg->policy.budget != NULL &&
            !tc_hedge_budget_try_extra(hg->policy.budget, tc__now_ms())) {
            hg->result->denied++;
            continue;
        }
        hg->result->hedge_fired = 1;
        fire(hg, 1, 1);
        fired++;
    }
    if (hg->finished)
        return fired;
    if (hg->policy.staggered && extras_left(hg) > 0)
        set_hedge_due(hg, hg->start_ms + (uint64_t)(hg->extras_decided + 1) * hg->result->delay_ms);
    else
        hg->hedge_due = NO_DUE;
    timer_arm(hg);
    return fired;
}

/* Decides what happens next after any event. */
static void hedge_check(hedge *hg)
{
    tc_hedge_result *res = hg->result;
    while (!hg->finished) {
        if (hg->done < res->nattempts)
            return; /* something still runs: wait for it, the hedge timer or the deadline */
        /* Every attempt fired so far has ended. */
        if (extras_left(hg) > 0 && res->nsuccesses == 0 &&
            (hg->policy.hedge_on_failure || hg->policy.staggered)) {
            if (decide_extras(hg, hg->policy.staggered ? 1 : extras_left(hg)) == 0)
                hg->extras_stopped = 1; /* denied with nothing in flight: nothing to wait for */
            continue;                   /* the extra attempts may all have failed synchronously */
        }
        if (extras_left(hg) > 0 && res->nsuccesses == 0)
            return; /* the hedge timer will fire them */
        if (hg->policy.mode == TC_HEDGE_DEADLINE)
            hedge_finish(hg, 0);
        else
            hedge_finish(hg, res->nsuccesses > 0 ? 0 : TC_EALLFAILED);
        return; /* finished: hg->result now belongs to the output future */
    }
}

/* The timer: the extras when the delay is due first, then the deadline when it is due too. */
static void on_hedge_timer(uv_timer_t *t)
{
    hedge *hg = t->data;
    uint64_t now = uv_now(hg->loop);
    if (hg->finished)
        return;
    if (hg->hedge_due < hg->deadline_due && hg->hedge_due <= now) {
        hg->hedge_due = NO_DUE;
        decide_extras(hg, hg->policy.staggered ? 1 : extras_left(hg)); /* re-arms the timer */
        hedge_check(hg);
        if (hg->finished)
            return;
    }
    if (hg->deadline_due <= now)
        hedge_finish(hg, hg->policy.mode == TC_HEDGE_DEADLINE ? 0 : TC_ETIMEDOUT);
}

/* ---- start ---------------------------------------------------------------------------------- */

/* Copies the request into allocations owned by the hedge, with one header slot free at the end
 * and without any X-Tailcut-Attempt of the caller's: the hedge numbers its attempts itself.
 * Nor does the client re-send an attempt on its own: each send is an attempt the policy counts,
 * numbers and reacts to, so a stale pooled connection is that attempt's failure. */
static int copy_request(hedge *hg, const tc_client_request *req)
{
    int err = tc__request_copy(&hg->req, req, 1, ATTEMPT_HEADER, &hg->strings, &hg->headers);
    hg->req.resend_stale = 0;
    return err;
}

int tc_hedge_start(tc_future **out, tc_client *client, const tc_client_request *req,
                   const tc_hedge_policy *policy)
{
    if (out == NULL || client == NULL || req == NULL || req->url == NULL || policy == NULL ||
        policy->initial == 0 || policy->initial + policy->extra > TC_HEDGE_MAX_ATTEMPTS)
        return TC_EINVAL;
    hedge *hg = tc__calloc(1, sizeof(*hg));
    if (hg == NULL)
        return TC_ENOMEM;
    hg->result = tc__calloc(1, sizeof(*hg->result));
    if (hg->result == NULL || copy_request(hg, req) != 0 || tc_future_new(&hg->out) != 0) {
        hedge_free(hg);
        return TC_ENOMEM;
    }
    hg->result->winner = -1;
    hg->result->last_failed = -1;
    hg->req.stream_response = policy->at_head;
    hg->client = client;
    hg->policy = *policy;
    hg->loop = tc_client_loop(client);
    uv_timer_init(hg->loop, &hg->timer);
    hg->timer.data = hg;
    tc_future_set_cancel_hook(hg->out, on_hedge_cancel, hg); /* run by tc_future_cancel */

    /* The caller gets its own reference; the hedge keeps one until its timer has closed. */
    *out = tc_future_ref(hg->out);
    uint64_t now = uv_now(hg->loop);
    hg->deadline_due = NO_DUE;
    if (policy->deadline_ms > 0)
        hg->deadline_due = policy->deadline_ms > now ? policy->deadline_ms : now;
    /* The delay counts from now rounded up, so no extra attempt fires before it has passed. */
    hg->start_ms = tc__now_ms_up();
    hg->result->delay_ms = policy->hedge_delay_ms;
    if (policy->adaptive != NULL)
        hg->result->delay_ms = tc_hedge_adaptive_delay_ms(policy->adaptive, tc__now_ms());
    if (policy->budget != NULL)
        tc_hedge_budget_admit(policy->budget, tc__now_ms());
    set_hedge_due(hg, policy->extra > 0 ? hg->start_ms + hg->result->delay_ms : NO_DUE);
    timer_arm(hg);
    fire(hg, policy->initial, 0);
    hedge_check(hg);
    return 0;
}
