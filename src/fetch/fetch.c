/*
 * The engine behind `tailcut fetch`: thousands of requests at once over one pooled tc_client, fed
 * from a pull source and reported exactly once each, in completion or in input order.
 *
 * The one idea that makes it work: a fixed array of request records is the only place where a
 * URL can live, and the source is asked for a URL only when a record is free. Memory is then
 * bounded by the array (the concurrency cap, plus TC_FETCH_ORDER_SLACK in input order), not by
 * the input. In input order the array is a ring indexed by input position: the record for item
 * s is reqs[s % window], free exactly when everything before s - window has been reported, so a
 * slow head of the line stops the reading rather than growing a reorder buffer.
 *
 * Per-host caps are the client pool's (the one place that admits requests): a URL whose host is
 * full waits in the client's queue, and asks that its timeout start only when a connection is
 * free for it (timeout_from_admit). All starts happen in pump(), which is guarded against
 * re-entrance, because an attempt can fail synchronously (a bad URL) and its result callback
 * may call back into us (resume, stop).
 *
 * Open loop (cfg.rate): the pump holds at most one item taken from the source ahead of its
 * scheduled time (so that the end of the input is seen at once, not one interval late), starts it
 * when that time has come (a uv timer wakes the pump), and its clock starts at the scheduled
 * time, whatever it waited for after it (a free slot under the concurrency cap). Nothing else is
 * queued ahead, so the schedule costs no memory.
 *
 * Lifetimes: a record holds its attempt's future (the caller's reference) while running and,
 * once finished, until its result has been reported, so that the message and body it reports
 * are borrowed from the future rather than copied.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/alloc.h"
#include "base/list.h"
#include "base/rng.h"
#include "client/request_copy.h"
#include "fetch_internal.h"
#include "http/forward_internal.h" /* the header rules */
#include "tailcut/client.h"
#include "tailcut/fetch.h"
#include "tailcut/url.h"
#include "tailcut/future.h"

#define FETCH_RETRY_AFTER_BUF 128 /* longest Retry-After value we look at */

enum { REQ_FREE = 0, REQ_TAKEN, REQ_RUNNING, REQ_WAITING, REQ_FINISHED, REQ_REPORTING };

typedef struct fetch_req fetch_req;

struct fetch_req {
    tc_fetch *fetch;
    tc__link link; /* in free_list while free */
    uint64_t seq;
    char *url;
    tc_future *future; /* the running attempt; the final one while FINISHED */
    uv_timer_t timer;  /* retry wait */
    int timer_ready;
    int state;
    unsigned attempts;
    uint64_t start_ns;
    /* The result, once FINISHED. */
    int status;
    int error;
    const char *message;
    double ms;
};

struct tc_fetch {
    uv_loop_t *loop;
    tc_client *client;
    tc_fetch_config cfg;
    tc_fetch_source_fn source;
    tc_fetch_result_fn on_result;
    tc_fetch_done_fn on_done;
    void *data;

    fetch_req *reqs;
    size_t window;
    tc__link free_list; /* completion order only; the latest freed last */
    uint64_t next_seq;  /* the next input position to take */
    uint64_t head_seq;  /* input order: the next position to report */
    size_t active;

    uv_timer_t done_timer;
    tc__rng rng; /* jitter */

    tc_client_request req; /* every attempt's request but its url; cfg's pointers go here */
    char *request_copy;    /* method, header names and values, body */
    tc_header *headers;
    int retry_method; /* cfg.method may be retried */

    uv_timer_t rate_timer;  /* open loop: wakes the pump when the next request is due */
    uint64_t rate_base_ns;  /* tc_fetch_start() */
    uint64_t scheduled;     /* requests started on the schedule so far */
    tc_fetch_input pending; /* the next item, taken from the source before it is due */
    int has_pending;

    int started, source_waiting, source_ended, stopping;
    int pumping, again, emitting;
    int done_scheduled, done_fired;
    int closing;
    size_t open_handles; /* uv handles and the client, not yet through their close callbacks */
    tc_fetch_close_cb close_cb;
    void *close_data;
    tc_fetch_stats stats;
};

static void pump(tc_fetch *fe);

void tc_fetch_config_init(tc_fetch_config *cfg)
{
    if (cfg == NULL)
        return;
    memset(cfg, 0, sizeof(*cfg));
    cfg->concurrency = TC_FETCH_DEFAULT_CONCURRENCY;
    cfg->per_host = 0;
    cfg->timeout_ms = TC_FETCH_DEFAULT_TIMEOUT_MS;
    cfg->retries = 0;
    cfg->backoff_base_ms = TC_FETCH_DEFAULT_BACKOFF_BASE_MS;
    cfg->backoff_max_ms = TC_FETCH_DEFAULT_BACKOFF_MAX_MS;
    cfg->retry_after_max_ms = TC_FETCH_DEFAULT_RETRY_AFTER_MAX_MS;
    cfg->order = TC_FETCH_COMPLETION;
    cfg->max_body = (size_t)TC_FETCH_DEFAULT_MAX_BODY;
    cfg->seed = 0;
}

/* ---- random jitter -------------------------------------------------------------------------- */

/* Retry n (from 1) waits base*2^(n-1), capped, then jittered down by up to half. */
static uint64_t backoff_ms(tc_fetch *fe, unsigned n)
{
    uint64_t delay = fe->cfg.backoff_base_ms;
    for (unsigned i = 1; i < n && delay < fe->cfg.backoff_max_ms; i++)
        delay *= 2;
    if (delay > fe->cfg.backoff_max_ms)
        delay = fe->cfg.backoff_max_ms;
    return delay - tc__rng_below(&fe->rng, delay / 2 + 1);
}

/* ---- records -------------------------------------------------------------------------------- */

static int has_room(const tc_fetch *fe)
{
    if (fe->active >= fe->cfg.concurrency)
        return 0;
    if (fe->cfg.order == TC_FETCH_INPUT)
        return fe->next_seq - fe->head_seq < fe->window;
    return !tc__list_empty(&fe->free_list);
}

static fetch_req *record_take(tc_fetch *fe)
{
    fetch_req *r;
    if (fe->cfg.order == TC_FETCH_INPUT) {
        r = &fe->reqs[fe->next_seq % fe->window];
    } else {
        tc__link *l = tc__list_last(&fe->free_list);
        tc__list_remove(l);
        r = tc__container_of(l, fetch_req, link);
    }
    r->seq = fe->next_seq++;
    r->attempts = 0;
    r->start_ns = 0;
    r->status = 0;
    r->error = 0;
    r->message = "";
    r->ms = 0;
    return r;
}

static void record_release(tc_fetch *fe, fetch_req *r)
{
    tc__free(r->url);
    r->url = NULL;
    if (r->future != NULL) {
        tc_future *f = r->future;
        r->future = NULL;
        tc_future_unref(f);
    }
    r->state = REQ_FREE;
    if (fe->cfg.order == TC_FETCH_COMPLETION) {
        tc__list_push_back(&fe->free_list, &r->link);
    }
}

/* ---- reporting ------------------------------------------------------------------------------ */

static void report(tc_fetch *fe, fetch_req *r)
{
    tc_fetch_result res;
    const tc_response *resp = NULL;
    if (r->future != NULL && tc_future_state_of(r->future) == TC_FUTURE_FULFILLED)
        resp = tc_future_value(r->future);
    res.index = r->seq;
    res.url = r->url;
    res.status = r->status;
    res.error = r->error;
    res.message = r->message ? r->message : "";
    res.ms = r->ms;
    res.bytes = resp ? resp->body_len : 0;
    res.body = resp ? resp->body : NULL;
    res.attempts = r->attempts;
    r->state = REQ_REPORTING; /* tc_fetch_stop() from the callback leaves it to us */
    fe->stats.reported++;
    fe->on_result(fe, &res, fe->data);
    record_release(fe, r);
}

/* Input order: reports the head of the line and every finished result right behind it. */
static void emit_ready(tc_fetch *fe)
{
    if (fe->emitting)
        return;
    fe->emitting = 1;
    while (!fe->stopping && fe->head_seq < fe->next_seq) {
        fetch_req *r = &fe->reqs[fe->head_seq % fe->window];
        if (r->state != REQ_FINISHED)
            break;
        fe->stats.held--;
        report(fe, r);
        fe->head_seq++;
    }
    fe->emitting = 0;
}

static void maybe_done(tc_fetch *fe);

/* r is over (a response, an error, or an input error): frees its slots and reports it, now or
 * once everything before it has been reported. */
static void record_finish(tc_fetch *fe, fetch_req *r, int status, int error, const char *message)
{
    r->state = REQ_FINISHED;
    r->status = status;
    r->error = error;
    r->message = message;
    r->ms = r->start_ns ? (double)(uv_hrtime() - r->start_ns) / 1e6 : 0.0;
    fe->active--;
    if (fe->cfg.order == TC_FETCH_COMPLETION) {
        report(fe, r);
    } else {
        fe->stats.held++;
        if (fe->stats.held > fe->stats.peak_held)
            fe->stats.peak_held = fe->stats.held;
        emit_ready(fe);
    }
    pump(fe);
}

/* Drops r without reporting it (tc_fetch_stop). */
static void record_cancel(tc_fetch *fe, fetch_req *r)
{
    if (r->state == REQ_FINISHED) {
        fe->stats.held--;
    } else {
        fe->active--;
    }
    fe->stats.cancelled++;
    record_release(fe, r);
}

/* ---- attempts ------------------------------------------------------------------------------- */

static int retryable(int status, int error)
{
    if (error == 0)
        return status == 429 || (status >= 500 && status <= 599);
    return error == TC_ECONNREFUSED || error == TC_ECONNRESET || error == TC_ESTALE ||
           error == TC_ETIMEDOUT || error == TC_EIO;
}

static void attempt_start(tc_fetch *fe, fetch_req *r);

static void on_retry_timer(uv_timer_t *t)
{
    fetch_req *r = t->data;
    r->state = REQ_RUNNING;
    attempt_start(r->fetch, r);
}

static void on_fetch_attempt_done(tc_future *f, void *data)
{
    fetch_req *r = data;
    tc_fetch *fe = r->fetch;
    tc_future_state st = tc_future_state_of(f);
    if (st == TC_FUTURE_CANCELLED || fe->stopping) {
        record_cancel(fe, r); /* drops r->future, which is f */
        return;
    }
    int status = 0, error = 0;
    const tc_response *resp = NULL;
    if (st == TC_FUTURE_FULFILLED) {
        resp = tc_future_value(f);
        status = resp->status;
    } else {
        error = tc_future_error(f);
    }
    if (fe->retry_method && r->attempts <= fe->cfg.retries && retryable(status, error)) {
        uint64_t delay = backoff_ms(fe, r->attempts);
        char ra[FETCH_RETRY_AFTER_BUF];
        long n;
        uint64_t ra_ms;
        if (status == 429 && (n = tc_response_header(resp, "Retry-After", ra, sizeof(ra))) >= 0 &&
            (size_t)n < sizeof(ra) &&
            tc__retry_after_parse(ra, time(NULL), fe->cfg.retry_after_max_ms, &ra_ms) == 0) {
            /* The server's word, plus up to 10% so that a crowd told the same does not return
             * in the same millisecond. */
            delay = ra_ms + tc__rng_below(&fe->rng, ra_ms / 10 + 1);
        }
        int rc = 0;
        if (!r->timer_ready) {
            rc = uv_timer_init(fe->loop, &r->timer);
            if (rc == 0) {
                r->timer.data = r;
                r->timer_ready = 1;
            }
        }
        if (rc == 0)
            rc = uv_timer_start(&r->timer, on_retry_timer, delay, 0);
        if (rc == 0) {
            r->future = NULL;
            tc_future_unref(f);
            r->state = REQ_WAITING;
            return;
        }
        /* No timer: report this attempt's outcome as the final one. */
    }
    record_finish(fe, r, status, error, error ? tc_future_message(f) : "");
}

/* Starts one attempt of r, which holds its slots. May finish r (record_finish) before returning. */
static void attempt_start(tc_fetch *fe, fetch_req *r)
{
    tc_client_request q = fe->req;
    q.url = r->url;
    q.timeout_ms = fe->cfg.timeout_ms;
    q.max_body = fe->cfg.max_body;
    q.timeout_from_admit = 1; /* waiting for a per-host slot is not the server's slowness */
    if (r->attempts == 0 &&
        r->start_ns == 0) /* with a rate, record_admit() set the scheduled time */
        r->start_ns = uv_hrtime();
    r->attempts++;
    fe->stats.attempts++;
    if (r->attempts > 1)
        fe->stats.retries++;
    r->state = REQ_RUNNING;
    tc_future *f = NULL;
    int rc = tc_client_request_start(&f, fe->client, &q);
    if (rc != 0) {
        record_finish(fe, r, 0, rc, tc_strerror(rc));
        return;
    }
    r->future = f;
    rc = tc_future_on_done(f, on_fetch_attempt_done, r); /* fires at once for a rejected URL */
    if (rc != 0) {
        r->future = NULL;
        tc_future_cancel(f);
        tc_future_unref(f);
        record_finish(fe, r, 0, rc, tc_strerror(rc));
    }
}

/* ---- the pump ------------------------------------------------------------------------------- */

/* Takes one item from the source into r and starts it, or finishes it. due is the scheduled
 * time of the next request (cfg.rate), which an item rejected before any request leaves free. */
static void record_admit(tc_fetch *fe, fetch_req *r, tc_fetch_input *in, uint64_t due)
{
    r->url = in->url;
    r->state = REQ_TAKEN;
    fe->active++;
    fe->stats.taken++;
    if (r->url == NULL) {
        record_finish(fe, r, 0, TC_EINVAL, "no URL");
        return;
    }
    if (in->error != 0) {
        record_finish(fe, r, 0, in->error, in->message ? in->message : tc_strerror(in->error));
        return;
    }
    if (fe->cfg.rate > 0) {
        r->start_ns = due;
        fe->scheduled++;
    }
    attempt_start(fe, r);
}

static void on_rate_timer(uv_timer_t *t)
{
    pump(t->data);
}

/* Open loop: 1 with *due set when the next request's time has come; else 0, with the timer set
 * to wake the pump then. uv timers count whole milliseconds from the loop's cached time, so the
 * wake-up may come a little early: the pump then simply sets the timer again. */
static int rate_due(tc_fetch *fe, uint64_t *due)
{
    double offset = (double)fe->scheduled * 1e9 / fe->cfg.rate;
    *due = offset < 1e19 ? fe->rate_base_ns + (uint64_t)offset : UINT64_MAX;
    uint64_t now = uv_hrtime();
    if (now >= *due)
        return 1;
    uint64_t wait_ms = (*due - now + 999999) / 1000000;
    uv_timer_start(&fe->rate_timer, on_rate_timer, wait_ms, 0);
    return 0;
}

/* Takes new items while there is room. Re-entrant calls only ask the running one to go round
 * again. */
static void pump(tc_fetch *fe)
{
    if (fe->pumping) {
        fe->again = 1;
        return;
    }
    fe->pumping = 1;
    do {
        fe->again = 0;
        while (!fe->stopping && fe->started && has_room(fe) &&
               (fe->has_pending || (!fe->source_ended && !fe->source_waiting))) {
            tc_fetch_input in = {NULL, 0, NULL};
            if (fe->has_pending) {
                in = fe->pending;
                fe->has_pending = 0;
            } else {
                tc_fetch_next n = fe->source(fe->data, &in);
                if (n == TC_FETCH_NEXT_WAIT) {
                    fe->source_waiting = 1;
                    break;
                }
                if (n != TC_FETCH_NEXT_URL) {
                    fe->source_ended = 1;
                    break;
                }
            }
            uint64_t due = 0;
            if (fe->cfg.rate > 0 && in.url != NULL && in.error == 0 && !rate_due(fe, &due)) {
                fe->pending = in; /* taken early, so that the end of the input is seen at once */
                fe->has_pending = 1;
                break;
            }
            record_admit(fe, record_take(fe), &in, due);
        }
    } while (fe->again && !fe->stopping);
    fe->pumping = 0;
    maybe_done(fe);
}

/* ---- done, stop, close ---------------------------------------------------------------------- */

static void on_done_timer(uv_timer_t *t)
{
    tc_fetch *fe = t->data;
    if (fe->done_fired)
        return;
    fe->done_fired = 1;
    fe->on_done(fe, fe->stopping ? TC_ECANCELED : 0, fe->data);
}

static void maybe_done(tc_fetch *fe)
{
    if (fe->done_scheduled || fe->done_fired || fe->closing)
        return;
    int over = fe->stopping || (fe->started && fe->source_ended && fe->active == 0 &&
                                fe->stats.held == 0 && !fe->pumping && !fe->emitting);
    if (!over)
        return;
    fe->done_scheduled = 1;
    uv_timer_start(&fe->done_timer, on_done_timer, 0, 0);
}

/* Cancels and drops everything taken and not reported. */
static void stop_all(tc_fetch *fe)
{
    fe->stopping = 1;
    uv_timer_stop(&fe->rate_timer);
    if (fe->has_pending) {
        tc__free(fe->pending.url);
        fe->has_pending = 0;
    }
    for (size_t i = 0; i < fe->window; i++) {
        fetch_req *r = &fe->reqs[i];
        switch (r->state) {
        case REQ_RUNNING:
            if (!tc_future_cancel(r->future)) /* fires on_fetch_attempt_done, which drops r */
                record_cancel(fe, r);         /* cannot happen: done futures were handled */
            break;
        case REQ_WAITING:
            uv_timer_stop(&r->timer);
            record_cancel(fe, r);
            break;
        case REQ_TAKEN:
        case REQ_FINISHED:
            record_cancel(fe, r);
            break;
        default: /* FREE, or REPORTING: the reporter releases it */
            break;
        }
    }
}

void tc_fetch_stop(tc_fetch *fe)
{
    if (fe == NULL || fe->stopping)
        return;
    stop_all(fe);
    maybe_done(fe);
}

/* The request every URL gets, as cfg describes it: 1 when the client would send it. */
static int request_valid(const tc_fetch_config *cfg)
{
    if (cfg->method != NULL && !tc__header_name_ok(cfg->method, strlen(cfg->method)))
        return 0;
    if ((cfg->nheaders > 0 && cfg->headers == NULL) ||
        cfg->nheaders > SIZE_MAX / 4 / sizeof(tc_header))
        return 0;
    for (size_t i = 0; i < cfg->nheaders; i++) {
        const tc_header *hd = &cfg->headers[i];
        if (hd->name == NULL || !tc__header_name_ok(hd->name, strlen(hd->name)) ||
            hd->value == NULL || !tc__header_value_ok(hd->value, strlen(hd->value)))
            return 0;
    }
    if ((cfg->body == NULL && cfg->body_len > 0) || cfg->body_len > SIZE_MAX / 4)
        return 0;
    return cfg->rate >= 0 && cfg->rate <= TC_FETCH_MAX_RATE; /* NaN fails both */
}

static int method_is(const char *m, const char *name)
{
    return strcmp(m, name) == 0;
}

/* Keeps a copy of cfg's method, headers and body as the request every URL gets. Returns 0 or
 * TC_ENOMEM. */
static int request_keep(tc_fetch *fe)
{
    tc_fetch_config *cfg = &fe->cfg;
    tc_client_request q;
    memset(&q, 0, sizeof(q));
    q.method = cfg->method != NULL ? cfg->method : "GET";
    q.headers = cfg->headers;
    q.nheaders = cfg->nheaders;
    q.body = cfg->body;
    q.body_len = cfg->body_len;
    q.resend_stale = 1; /* not an attempt anyone counts: a stale pooled connection is no failure */
    if (tc__request_copy(&fe->req, &q, 0, NULL, &fe->request_copy, &fe->headers) != 0)
        return TC_ENOMEM;
    cfg->method = fe->req.method; /* nothing of the caller's is kept */
    cfg->headers = fe->req.headers;
    cfg->body = fe->req.body;
    fe->retry_method = cfg->retry_all || method_is(cfg->method, "GET") ||
                       method_is(cfg->method, "HEAD") || method_is(cfg->method, "PUT") ||
                       method_is(cfg->method, "DELETE") || method_is(cfg->method, "OPTIONS");
    return 0;
}

static void fetch_free(tc_fetch *fe)
{
    tc__free(fe->headers);
    tc__free(fe->request_copy);
    tc__free(fe->reqs);
    tc__free(fe);
}

int tc_fetch_new(tc_fetch **out, uv_loop_t *loop, const tc_fetch_config *cfg,
                 tc_fetch_source_fn source, tc_fetch_result_fn on_result, tc_fetch_done_fn on_done,
                 void *data)
{
    if (out == NULL || loop == NULL || source == NULL || on_result == NULL || on_done == NULL)
        return TC_EINVAL;
    *out = NULL;
    tc_fetch *fe = tc__calloc(1, sizeof(*fe));
    if (fe == NULL)
        return TC_ENOMEM;
    if (cfg != NULL)
        fe->cfg = *cfg;
    else
        tc_fetch_config_init(&fe->cfg);
    if (fe->cfg.concurrency == 0 || fe->cfg.concurrency > SIZE_MAX / 2 / sizeof(fetch_req) ||
        (fe->cfg.order != TC_FETCH_COMPLETION && fe->cfg.order != TC_FETCH_INPUT) ||
        !request_valid(&fe->cfg)) {
        tc__free(fe);
        return TC_EINVAL;
    }
    if (request_keep(fe) != 0) {
        fetch_free(fe);
        return TC_ENOMEM;
    }
    if (fe->cfg.max_body == 0)
        fe->cfg.max_body = (size_t)TC_FETCH_DEFAULT_MAX_BODY;
    if (fe->cfg.backoff_max_ms < fe->cfg.backoff_base_ms)
        fe->cfg.backoff_max_ms = fe->cfg.backoff_base_ms;
    fe->loop = loop;
    fe->source = source;
    fe->on_result = on_result;
    fe->on_done = on_done;
    fe->data = data;
    tc__rng_seed(&fe->rng, fe->cfg.seed ? fe->cfg.seed : (uv_hrtime() ^ (uint64_t)(uintptr_t)fe));
    fe->window = fe->cfg.concurrency + (fe->cfg.order == TC_FETCH_INPUT ? TC_FETCH_ORDER_SLACK : 0);
    fe->reqs = tc__calloc(fe->window, sizeof(*fe->reqs));
    if (fe->reqs == NULL) {
        fetch_free(fe);
        return TC_ENOMEM;
    }
    tc__list_init(&fe->free_list);
    for (size_t i = fe->window; i-- > 0;) { /* reqs[0] is taken first */
        fe->reqs[i].fetch = fe;
        tc__list_init(&fe->reqs[i].link);
        if (fe->cfg.order == TC_FETCH_COMPLETION)
            tc__list_push_back(&fe->free_list, &fe->reqs[i].link);
    }
    tc_client_config ccfg;
    tc_client_config_init(&ccfg);
    ccfg.max_connections = fe->cfg.concurrency;
    ccfg.max_per_host = fe->cfg.per_host;
    ccfg.timeout_ms = fe->cfg.timeout_ms;
    ccfg.max_body = fe->cfg.max_body;
    ccfg.engine = fe->cfg.http_engine;
    ccfg.ca_file = fe->cfg.ca_file; /* the client keeps its own copy */
    ccfg.insecure = fe->cfg.insecure;
    if (ccfg.connect_timeout_ms > fe->cfg.timeout_ms && fe->cfg.timeout_ms > 0)
        ccfg.connect_timeout_ms = fe->cfg.timeout_ms;
    fe->cfg.ca_file = NULL; /* the caller's string: not ours to keep */
    int rc = tc_client_new(&fe->client, loop, &ccfg);
    if (rc != 0) {
        fetch_free(fe);
        return rc;
    }
    uv_timer_init(loop, &fe->done_timer); /* cannot fail for a timer */
    fe->done_timer.data = fe;
    uv_timer_init(loop, &fe->rate_timer);
    fe->rate_timer.data = fe;
    *out = fe;
    return 0;
}

int tc_fetch_start(tc_fetch *fe)
{
    if (fe == NULL || fe->started || fe->stopping)
        return TC_EINVAL;
    fe->started = 1;
    fe->rate_base_ns = uv_hrtime();
    pump(fe);
    return 0;
}

void tc_fetch_resume(tc_fetch *fe)
{
    if (fe == NULL || fe->stopping || fe->closing)
        return;
    fe->source_waiting = 0;
    if (fe->started)
        pump(fe);
}

void tc_fetch_get_stats(const tc_fetch *fe, tc_fetch_stats *out)
{
    if (out == NULL)
        return;
    if (fe == NULL) {
        memset(out, 0, sizeof(*out));
        return;
    }
    *out = fe->stats;
    out->active = fe->active;
}

static void close_step(tc_fetch *fe)
{
    if (--fe->open_handles > 0)
        return;
    if (fe->close_cb != NULL)
        fe->close_cb(fe, fe->close_data);
    fetch_free(fe);
}

static void on_fetch_timer_closed(uv_handle_t *h)
{
    close_step(h->data);
}

static void on_req_timer_closed(uv_handle_t *h)
{
    close_step(((fetch_req *)h->data)->fetch);
}

static void on_client_closed(tc_client *cl, void *data)
{
    (void)cl;
    close_step(data);
}

void tc_fetch_close(tc_fetch *fe, tc_fetch_close_cb close_cb, void *data)
{
    if (fe == NULL || fe->closing)
        return;
    fe->close_cb = close_cb;
    fe->close_data = data;
    fe->done_fired = 1; /* no on_done from here on */
    if (!fe->stopping)
        stop_all(fe);
    fe->closing = 1;
    fe->open_handles = 1; /* released below, after everything is asked to close */
    uv_timer_stop(&fe->done_timer);
    fe->open_handles++;
    uv_close((uv_handle_t *)&fe->done_timer, on_fetch_timer_closed);
    uv_timer_stop(&fe->rate_timer);
    fe->open_handles++;
    uv_close((uv_handle_t *)&fe->rate_timer, on_fetch_timer_closed);
    for (size_t i = 0; i < fe->window; i++) {
        if (fe->reqs[i].timer_ready) {
            fe->open_handles++;
            uv_close((uv_handle_t *)&fe->reqs[i].timer, on_req_timer_closed);
        }
    }
    fe->open_handles++;
    tc_client_close(fe->client, on_client_closed, fe);
    close_step(fe);
}
