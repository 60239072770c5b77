/*
 * The engine behind `tailcut fetch`: thousands of GETs at once over one pooled tc_client, fed
 * from a pull source and reported exactly once each, in completion or in input order.
 *
 * The one idea that makes it work: a fixed array of request records is the only place where a
 * URL can live, and the source is asked for a URL only when a record is free. Memory is then
 * bounded by the array (the concurrency cap, plus TC_FETCH_ORDER_SLACK in input order), not by
 * the input. In input order the array is a ring indexed by input position: the record for item
 * s is reqs[s % window], free exactly when everything before s - window has been reported, so a
 * slow head of the line stops the reading rather than growing a reorder buffer.
 *
 * Per-host caps are our own accounting (the client's cap would queue, and queue time counts
 * toward the client's timeout): a URL whose host is full is parked on its host's FIFO and
 * started when a request to that host finishes. All starts happen in pump(), which is guarded
 * against re-entrance, because an attempt can fail synchronously (a bad URL) and its result
 * callback may call back into us (resume, stop).
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

#include "tailcut/client.h"
#include "tailcut/fetch.h"
#include "tailcut/url.h"
#include "tailcut/future.h"

#define FETCH_MAX_HOST_KEY 512 /* "scheme://host:port" longer than this: no per-host accounting */
#define FETCH_RETRY_AFTER_BUF 128 /* longest Retry-After value we look at */

enum { REQ_FREE = 0, REQ_PARKED, REQ_RUNNING, REQ_WAITING, REQ_FINISHED, REQ_REPORTING };

typedef struct fetch_req fetch_req;

/* One scheme://host:port under a per-host cap. Lives while records name it (refs) or it sits in
 * the ready list. */
typedef struct fetch_host {
    struct fetch_host *hnext;
    struct fetch_host *ready_next;
    uint32_t hash;
    int in_ready;
    size_t refs;    /* records naming this host: parked, running or waiting to retry */
    size_t running; /* of those, the ones holding a slot (running or waiting to retry) */
    fetch_req *park_head, *park_tail;
    char key[];
} fetch_host;

struct fetch_req {
    tc_fetch *f;
    fetch_req *next; /* free list or host park list */
    uint64_t seq;
    char *url;
    fetch_host *host;
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
    fetch_req *free_list; /* completion order only */
    uint64_t next_seq;    /* the next input position to take */
    uint64_t head_seq;    /* input order: the next position to report */
    size_t active;

    fetch_host **hosts;
    size_t nbuckets, nhosts;
    fetch_host *ready_head, *ready_tail; /* hosts with parked requests and a free slot */

    uv_timer_t done_timer;
    uint64_t rng;

    int started, source_waiting, source_ended, stopping;
    int pumping, again, emitting;
    int done_scheduled, done_fired;
    int closing;
    size_t open_handles; /* uv handles and the client, not yet through their close callbacks */
    tc_fetch_close_cb close_cb;
    void *close_data;
    tc_fetch_stats stats;
};

static void pump(tc_fetch *f);

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

/* ---- random jitter (xorshift64*) ----------------------------------------------------------- */

static uint64_t rng_next(tc_fetch *f)
{
    uint64_t x = f->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    f->rng = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* Retry n (from 1) waits base*2^(n-1), capped, then jittered down by up to half. */
static uint64_t backoff_ms(tc_fetch *f, unsigned n)
{
    uint64_t d = f->cfg.backoff_base_ms;
    for (unsigned i = 1; i < n && d < f->cfg.backoff_max_ms; i++)
        d *= 2;
    if (d > f->cfg.backoff_max_ms)
        d = f->cfg.backoff_max_ms;
    return d - rng_next(f) % (d / 2 + 1);
}

/* ---- hosts ---------------------------------------------------------------------------------- */

static uint32_t hash_str(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

/* Finds or creates the host for key and takes a reference. NULL on ENOMEM. */
static fetch_host *host_ref(tc_fetch *f, const char *key)
{
    uint32_t h = hash_str(key);
    if (f->nbuckets) {
        for (fetch_host *x = f->hosts[h & (f->nbuckets - 1)]; x; x = x->hnext) {
            if (x->hash == h && strcmp(x->key, key) == 0) {
                x->refs++;
                return x;
            }
        }
    }
    if (f->nhosts >= f->nbuckets) {
        size_t nb = f->nbuckets ? f->nbuckets * 2 : 16;
        fetch_host **t = calloc(nb, sizeof(fetch_host *));
        if (t == NULL)
            return NULL;
        for (size_t i = 0; i < f->nbuckets; i++) {
            fetch_host *x = f->hosts[i];
            while (x) {
                fetch_host *next = x->hnext;
                x->hnext = t[x->hash & (nb - 1)];
                t[x->hash & (nb - 1)] = x;
                x = next;
            }
        }
        free(f->hosts);
        f->hosts = t;
        f->nbuckets = nb;
    }
    size_t klen = strlen(key);
    fetch_host *x = calloc(1, sizeof(*x) + klen + 1);
    if (x == NULL)
        return NULL;
    memcpy(x->key, key, klen + 1);
    x->hash = h;
    x->refs = 1;
    x->hnext = f->hosts[h & (f->nbuckets - 1)];
    f->hosts[h & (f->nbuckets - 1)] = x;
    f->nhosts++;
    return x;
}

static void host_free_if_unused(tc_fetch *f, fetch_host *x)
{
    if (x->refs > 0 || x->in_ready)
        return;
    fetch_host **pp = &f->hosts[x->hash & (f->nbuckets - 1)];
    /* host_ref() put x in this chain, so the walk reaches it before the end. */
    // NOLINTNEXTLINE(clang-analyzer-core.NullDereference)
    while (*pp != x)
        pp = &(*pp)->hnext;
    *pp = x->hnext;
    f->nhosts--;
    free(x);
}

/* x has parked requests and a free slot: let pump() start them. */
static void host_make_ready(tc_fetch *f, fetch_host *x)
{
    if (x->in_ready)
        return;
    x->in_ready = 1;
    x->ready_next = NULL;
    if (f->ready_tail)
        f->ready_tail->ready_next = x;
    else
        f->ready_head = x;
    f->ready_tail = x;
    f->again = 1;
}

/* r no longer holds its host slot (if it held one) nor names its host. */
static void host_release(tc_fetch *f, fetch_req *r, int held_slot)
{
    fetch_host *x = r->host;
    if (x == NULL)
        return;
    r->host = NULL;
    if (held_slot)
        x->running--;
    x->refs--;
    if (x->park_head != NULL && x->running < f->cfg.per_host && !f->stopping)
        host_make_ready(f, x);
    host_free_if_unused(f, x);
}

/* ---- records -------------------------------------------------------------------------------- */

static int has_room(const tc_fetch *f)
{
    if (f->active >= f->cfg.concurrency)
        return 0;
    if (f->cfg.order == TC_FETCH_INPUT)
        return f->next_seq - f->head_seq < f->window;
    return f->free_list != NULL;
}

static fetch_req *record_take(tc_fetch *f)
{
    fetch_req *r;
    if (f->cfg.order == TC_FETCH_INPUT) {
        r = &f->reqs[f->next_seq % f->window];
    } else {
        r = f->free_list;
        f->free_list = r->next;
    }
    r->next = NULL;
    r->seq = f->next_seq++;
    r->attempts = 0;
    r->start_ns = 0;
    r->status = 0;
    r->error = 0;
    r->message = "";
    r->ms = 0;
    return r;
}

static void record_release(tc_fetch *f, fetch_req *r)
{
    free(r->url);
    r->url = NULL;
    if (r->future != NULL) {
        tc_future *fut = r->future;
        r->future = NULL;
        tc_future_unref(fut);
    }
    r->state = REQ_FREE;
    if (f->cfg.order == TC_FETCH_COMPLETION) {
        r->next = f->free_list;
        f->free_list = r;
    }
}

/* ---- reporting ------------------------------------------------------------------------------ */

static void report(tc_fetch *f, fetch_req *r)
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
    f->stats.reported++;
    f->on_result(f, &res, f->data);
    record_release(f, r);
}

/* Input order: reports the head of the line and every finished result right behind it. */
static void emit_ready(tc_fetch *f)
{
    if (f->emitting)
        return;
    f->emitting = 1;
    while (!f->stopping && f->head_seq < f->next_seq) {
        fetch_req *r = &f->reqs[f->head_seq % f->window];
        if (r->state != REQ_FINISHED)
            break;
        f->stats.held--;
        report(f, r);
        f->head_seq++;
    }
    f->emitting = 0;
}

static void maybe_done(tc_fetch *f);

/* r is over (a response, an error, or an input error): frees its slots and reports it, now or
 * once everything before it has been reported. */
static void finish(tc_fetch *f, fetch_req *r, int status, int error, const char *message)
{
    int held_slot = r->state == REQ_RUNNING || r->state == REQ_WAITING;
    r->state = REQ_FINISHED;
    r->status = status;
    r->error = error;
    r->message = message;
    r->ms = r->start_ns ? (double)(uv_hrtime() - r->start_ns) / 1e6 : 0.0;
    host_release(f, r, held_slot);
    f->active--;
    if (f->cfg.order == TC_FETCH_COMPLETION) {
        report(f, r);
    } else {
        f->stats.held++;
        if (f->stats.held > f->stats.peak_held)
            f->stats.peak_held = f->stats.held;
        emit_ready(f);
    }
    pump(f);
}

/* Drops r without reporting it (tc_fetch_stop). */
static void record_cancel(tc_fetch *f, fetch_req *r)
{
    if (r->state == REQ_FINISHED) {
        f->stats.held--;
    } else {
        host_release(f, r, r->state == REQ_RUNNING || r->state == REQ_WAITING);
        f->active--;
    }
    f->stats.cancelled++;
    record_release(f, r);
}

/* ---- attempts ------------------------------------------------------------------------------- */

static int retryable(int status, int error)
{
    if (error == 0)
        return status == 429 || (status >= 500 && status <= 599);
    return error == TC_ECONNREFUSED || error == TC_ECONNRESET || error == TC_ETIMEDOUT ||
           error == TC_EIO;
}

static void attempt_start(tc_fetch *f, fetch_req *r);

static void on_retry_timer(uv_timer_t *t)
{
    fetch_req *r = t->data;
    r->state = REQ_RUNNING;
    attempt_start(r->f, r);
}

static void on_attempt_done(tc_future *fut, void *data)
{
    fetch_req *r = data;
    tc_fetch *f = r->f;
    tc_future_state st = tc_future_state_of(fut);
    if (st == TC_FUTURE_CANCELLED || f->stopping) {
        record_cancel(f, r); /* drops r->future, which is fut */
        return;
    }
    int status = 0, error = 0;
    const tc_response *resp = NULL;
    if (st == TC_FUTURE_FULFILLED) {
        resp = tc_future_value(fut);
        status = resp->status;
    } else {
        error = tc_future_error(fut);
    }
    if (r->attempts <= f->cfg.retries && retryable(status, error)) {
        uint64_t delay = backoff_ms(f, r->attempts);
        char ra[FETCH_RETRY_AFTER_BUF];
        long n;
        uint64_t ra_ms;
        if (status == 429 && (n = tc_response_header(resp, "Retry-After", ra, sizeof(ra))) >= 0 &&
            (size_t)n < sizeof(ra) &&
            tc_retry_after_parse(ra, time(NULL), f->cfg.retry_after_max_ms, &ra_ms) == 0) {
            /* The server's word, plus up to 10% so that a crowd told the same does not return
             * in the same millisecond. */
            delay = ra_ms + rng_next(f) % (ra_ms / 10 + 1);
        }
        int rc = 0;
        if (!r->timer_ready) {
            rc = uv_timer_init(f->loop, &r->timer);
            if (rc == 0) {
                r->timer.data = r;
                r->timer_ready = 1;
            }
        }
        if (rc == 0)
            rc = uv_timer_start(&r->timer, on_retry_timer, delay, 0);
        if (rc == 0) {
            r->future = NULL;
            tc_future_unref(fut);
            r->state = REQ_WAITING;
            return;
        }
        /* No timer: report this attempt's outcome as the final one. */
    }
    finish(f, r, status, error, error ? tc_future_message(fut) : "");
}

/* Starts one attempt of r, which holds its slots. May finish r before returning. */
static void attempt_start(tc_fetch *f, fetch_req *r)
{
    tc_client_request q;
    memset(&q, 0, sizeof(q));
    q.url = r->url;
    q.timeout_ms = f->cfg.timeout_ms;
    q.max_body = f->cfg.max_body;
    if (r->attempts == 0)
        r->start_ns = uv_hrtime();
    r->attempts++;
    f->stats.attempts++;
    if (r->attempts > 1)
        f->stats.retries++;
    r->state = REQ_RUNNING;
    tc_future *fut = NULL;
    int rc = tc_client_request_start(&fut, f->client, &q);
    if (rc != 0) {
        finish(f, r, 0, rc, tc_strerror(rc));
        return;
    }
    r->future = fut;
    rc = tc_future_on_done(fut, on_attempt_done, r); /* fires at once for a rejected URL */
    if (rc != 0) {
        r->future = NULL;
        tc_future_cancel(fut);
        tc_future_unref(fut);
        finish(f, r, 0, rc, tc_strerror(rc));
    }
}

/* ---- the pump ------------------------------------------------------------------------------- */

/* Takes one item from the source into r and starts it, parks it, or finishes it. */
static void admit(tc_fetch *f, fetch_req *r, tc_fetch_input *in)
{
    r->url = in->url;
    r->state = REQ_PARKED; /* not yet holding a slot */
    f->active++;
    f->stats.taken++;
    if (r->url == NULL) {
        finish(f, r, 0, TC_EINVAL, "no URL");
        return;
    }
    if (in->error != 0) {
        finish(f, r, 0, in->error, in->message ? in->message : tc_strerror(in->error));
        return;
    }
    if (f->cfg.per_host > 0) {
        char key[FETCH_MAX_HOST_KEY];
        int https;
        const char *why;
        int err = tc_url_origin(r->url, key, sizeof(key), &https, &why);
        if (err == TC_ENOMEM) {
            finish(f, r, 0, TC_ENOMEM, tc_strerror(TC_ENOMEM));
            return;
        }
        if (err == 0) {
            fetch_host *x = host_ref(f, key);
            if (x == NULL) {
                finish(f, r, 0, TC_ENOMEM, tc_strerror(TC_ENOMEM));
                return;
            }
            r->host = x;
            if (x->running >= f->cfg.per_host || x->park_head != NULL) {
                if (x->park_tail)
                    x->park_tail->next = r;
                else
                    x->park_head = r;
                x->park_tail = r;
                if (x->running < f->cfg.per_host)
                    host_make_ready(f, x);
                return;
            }
            x->running++;
        }
    }
    attempt_start(f, r);
}

/* Starts parked requests whose host has a free slot, then takes new items while there is room.
 * Re-entrant calls only ask the running one to go round again. */
static void pump(tc_fetch *f)
{
    if (f->pumping) {
        f->again = 1;
        return;
    }
    f->pumping = 1;
    do {
        f->again = 0;
        while (!f->stopping && f->ready_head != NULL) {
            fetch_host *x = f->ready_head;
            f->ready_head = x->ready_next;
            if (f->ready_head == NULL)
                f->ready_tail = NULL;
            x->in_ready = 0;
            x->refs++; /* keep x while its requests may finish under us */
            while (!f->stopping && x->park_head != NULL && x->running < f->cfg.per_host) {
                fetch_req *r = x->park_head;
                x->park_head = r->next;
                if (x->park_head == NULL)
                    x->park_tail = NULL;
                r->next = NULL;
                x->running++;
                attempt_start(f, r);
            }
            x->refs--;
            host_free_if_unused(f, x);
        }
        while (!f->stopping && f->started && !f->source_ended && !f->source_waiting &&
               has_room(f)) {
            tc_fetch_input in = {NULL, 0, NULL};
            tc_fetch_next n = f->source(f->data, &in);
            if (n == TC_FETCH_NEXT_WAIT) {
                f->source_waiting = 1;
                break;
            }
            if (n != TC_FETCH_NEXT_URL) {
                f->source_ended = 1;
                break;
            }
            admit(f, record_take(f), &in);
        }
    } while (f->again && !f->stopping);
    f->pumping = 0;
    maybe_done(f);
}

/* ---- done, stop, close ---------------------------------------------------------------------- */

static void on_done_timer(uv_timer_t *t)
{
    tc_fetch *f = t->data;
    if (f->done_fired)
        return;
    f->done_fired = 1;
    f->on_done(f, f->stopping ? TC_ECANCELED : 0, f->data);
}

static void maybe_done(tc_fetch *f)
{
    if (f->done_scheduled || f->done_fired || f->closing)
        return;
    int over = f->stopping || (f->started && f->source_ended && f->active == 0 &&
                               f->stats.held == 0 && !f->pumping && !f->emitting);
    if (!over)
        return;
    f->done_scheduled = 1;
    uv_timer_start(&f->done_timer, on_done_timer, 0, 0);
}

/* Cancels and drops everything taken and not reported. */
static void stop_all(tc_fetch *f)
{
    f->stopping = 1;
    for (fetch_host *x = f->ready_head; x != NULL;) {
        fetch_host *next = x->ready_next;
        x->in_ready = 0;
        x->ready_next = NULL;
        x = next;
    }
    f->ready_head = f->ready_tail = NULL;
    for (size_t i = 0; i < f->nbuckets; i++)
        for (fetch_host *x = f->hosts[i]; x; x = x->hnext)
            x->park_head = x->park_tail = NULL;
    for (size_t i = 0; i < f->window; i++) {
        fetch_req *r = &f->reqs[i];
        switch (r->state) {
        case REQ_RUNNING:
            if (!tc_future_cancel(r->future)) /* fires on_attempt_done, which drops r */
                record_cancel(f, r);          /* cannot happen: done futures were handled */
            break;
        case REQ_WAITING:
            uv_timer_stop(&r->timer);
            record_cancel(f, r);
            break;
        case REQ_PARKED:
        case REQ_FINISHED:
            record_cancel(f, r);
            break;
        default: /* FREE, or REPORTING: the reporter releases it */
            break;
        }
    }
}

void tc_fetch_stop(tc_fetch *f)
{
    if (f == NULL || f->stopping)
        return;
    stop_all(f);
    maybe_done(f);
}

int tc_fetch_new(tc_fetch **out, uv_loop_t *loop, const tc_fetch_config *cfg,
                 tc_fetch_source_fn source, tc_fetch_result_fn on_result, tc_fetch_done_fn on_done,
                 void *data)
{
    if (out == NULL || loop == NULL || source == NULL || on_result == NULL || on_done == NULL)
        return TC_EINVAL;
    *out = NULL;
    tc_fetch *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return TC_ENOMEM;
    if (cfg != NULL)
        f->cfg = *cfg;
    else
        tc_fetch_config_init(&f->cfg);
    if (f->cfg.concurrency == 0 || f->cfg.concurrency > SIZE_MAX / 2 / sizeof(fetch_req) ||
        (f->cfg.order != TC_FETCH_COMPLETION && f->cfg.order != TC_FETCH_INPUT)) {
        free(f);
        return TC_EINVAL;
    }
    if (f->cfg.max_body == 0)
        f->cfg.max_body = (size_t)TC_FETCH_DEFAULT_MAX_BODY;
    if (f->cfg.backoff_max_ms < f->cfg.backoff_base_ms)
        f->cfg.backoff_max_ms = f->cfg.backoff_base_ms;
    f->loop = loop;
    f->source = source;
    f->on_result = on_result;
    f->on_done = on_done;
    f->data = data;
    f->rng = f->cfg.seed ? f->cfg.seed : (uv_hrtime() ^ (uint64_t)(uintptr_t)f);
    if (f->rng == 0)
        f->rng = 0x9E3779B97F4A7C15ULL;
    f->window = f->cfg.concurrency + (f->cfg.order == TC_FETCH_INPUT ? TC_FETCH_ORDER_SLACK : 0);
    f->reqs = calloc(f->window, sizeof(*f->reqs));
    if (f->reqs == NULL) {
        free(f);
        return TC_ENOMEM;
    }
    for (size_t i = f->window; i-- > 0;) {
        f->reqs[i].f = f;
        if (f->cfg.order == TC_FETCH_COMPLETION) {
            f->reqs[i].next = f->free_list;
            f->free_list = &f->reqs[i];
        }
    }
    tc_client_config ccfg;
    tc_client_config_init(&ccfg);
    ccfg.max_connections = f->cfg.concurrency;
    ccfg.max_per_host = f->cfg.per_host;
    ccfg.timeout_ms = f->cfg.timeout_ms;
    ccfg.max_body = f->cfg.max_body;
    if (ccfg.connect_timeout_ms > f->cfg.timeout_ms && f->cfg.timeout_ms > 0)
        ccfg.connect_timeout_ms = f->cfg.timeout_ms;
    int rc = tc_client_new(&f->client, loop, &ccfg);
    if (rc != 0) {
        free(f->reqs);
        free(f);
        return rc;
    }
    uv_timer_init(loop, &f->done_timer); /* cannot fail for a timer */
    f->done_timer.data = f;
    *out = f;
    return 0;
}

int tc_fetch_start(tc_fetch *f)
{
    if (f == NULL || f->started || f->stopping)
        return TC_EINVAL;
    f->started = 1;
    pump(f);
    return 0;
}

void tc_fetch_resume(tc_fetch *f)
{
    if (f == NULL || f->stopping || f->closing)
        return;
    f->source_waiting = 0;
    if (f->started)
        pump(f);
}

void tc_fetch_get_stats(const tc_fetch *f, tc_fetch_stats *out)
{
    if (out == NULL)
        return;
    if (f == NULL) {
        memset(out, 0, sizeof(*out));
        return;
    }
    *out = f->stats;
    out->active = f->active;
}

static void close_step(tc_fetch *f)
{
    if (--f->open_handles > 0)
        return;
    if (f->close_cb != NULL)
        f->close_cb(f, f->close_data);
    for (size_t i = 0; i < f->nbuckets; i++) {
        while (f->hosts[i] != NULL) { /* none should be left; never leak one */
            fetch_host *x = f->hosts[i];
            f->hosts[i] = x->hnext;
            free(x);
        }
    }
    free(f->hosts);
    free(f->reqs);
    free(f);
}

static void on_done_timer_closed(uv_handle_t *h)
{
    close_step(h->data);
}

static void on_req_timer_closed(uv_handle_t *h)
{
    close_step(((fetch_req *)h->data)->f);
}

static void on_client_closed(tc_client *c, void *data)
{
    (void)c;
    close_step(data);
}

void tc_fetch_close(tc_fetch *f, tc_fetch_close_cb close_cb, void *data)
{
    if (f == NULL || f->closing)
        return;
    f->close_cb = close_cb;
    f->close_data = data;
    f->done_fired = 1; /* no on_done from here on */
    if (!f->stopping)
        stop_all(f);
    f->closing = 1;
    f->open_handles = 1; /* released below, after everything is asked to close */
    uv_timer_stop(&f->done_timer);
    f->open_handles++;
    uv_close((uv_handle_t *)&f->done_timer, on_done_timer_closed);
    for (size_t i = 0; i < f->window; i++) {
        if (f->reqs[i].timer_ready) {
            f->open_handles++;
            uv_close((uv_handle_t *)&f->reqs[i].timer, on_req_timer_closed);
        }
    }
    f->open_handles++;
    tc_client_close(f->client, on_client_closed, f);
    close_step(f);
}

/* ---- JSON output ---------------------------------------------------------------------------- */

static int buf_reserve(tc_fetch_buf *b, size_t more)
{
    if (b->len + more <= b->cap)
        return 0;
    size_t ncap = b->cap ? b->cap : 256;
    while (ncap < b->len + more) {
        if (ncap > SIZE_MAX / 2)
            return TC_ENOMEM;
        ncap *= 2;
    }
    char *nb = realloc(b->base, ncap);
    if (nb == NULL)
        return TC_ENOMEM;
    b->base = nb;
    b->cap = ncap;
    return 0;
}

static int buf_add(tc_fetch_buf *b, const char *s, size_t n)
{
    if (buf_reserve(b, n) != 0)
        return TC_ENOMEM;
    memcpy(b->base + b->len, s, n);
    b->len += n;
    return 0;
}

/* Length of the valid UTF-8 sequence at s (at most n bytes), or 0 if it is not one. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    uint32_t cp, min;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
        cp = c & 0x1F;
        min = 0x80;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        cp = c & 0x0F;
        min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        cp = c & 0x07;
        min = 0x10000;
    } else {
        return 0;
    }
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return len;
}

int tc_fetch_json_string(tc_fetch_buf *b, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    /* Worst case: every byte becomes \ufffd (6 bytes), plus the quotes. */
    if (len > (SIZE_MAX - 2) / 6 || buf_reserve(b, len * 6 + 2) != 0)
        return TC_ENOMEM;
    char *o = b->base + b->len;
    const unsigned char *p = (const unsigned char *)s, *end = p + len;
    *o++ = '"';
    while (p < end) {
        unsigned char c = *p;
        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
            *o++ = (char)c;
            p++;
            continue;
        }
        if (c < 0x80) {
            *o++ = '\\';
            switch (c) {
            case '"':
                *o++ = '"';
                break;
            case '\\':
                *o++ = '\\';
                break;
            case '\n':
                *o++ = 'n';
                break;
            case '\r':
                *o++ = 'r';
                break;
            case '\t':
                *o++ = 't';
                break;
            case '\b':
                *o++ = 'b';
                break;
            case '\f':
                *o++ = 'f';
                break;
            default:
                *o++ = 'u';
                *o++ = '0';
                *o++ = '0';
                *o++ = hex[c >> 4];
                *o++ = hex[c & 15];
            }
            p++;
            continue;
        }
        size_t n = utf8_len(p, (size_t)(end - p));
        if (n == 0) {
            /* o fills a byte buffer, not a C string */
            // NOLINTNEXTLINE(bugprone-not-null-terminated-result)
            memcpy(o, "\\ufffd", 6);
            o += 6;
            p++;
        } else {
            memcpy(o, p, n);
            o += n;
            p += n;
        }
    }
    *o++ = '"';
    b->len = (size_t)(o - b->base);
    return 0;
}

/* Writes v in decimal at o; returns the number of digits. */
static size_t put_u64(char *o, uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    for (size_t i = 0; i < n; i++)
        o[i] = tmp[n - 1 - i];
    return n;
}

int tc_fetch_result_json(tc_fetch_buf *b, const tc_fetch_result *r, int with_body)
{
    const char *url = r->url ? r->url : "";
    if (buf_add(b, "{\"url\":", 7) != 0 || tc_fetch_json_string(b, url, strlen(url)) != 0)
        return TC_ENOMEM;
    /* The numbers by hand: this runs once per URL, and printf's float path is not cheap. */
    char num[128], *o = num;
    double ms = r->ms > 0 ? r->ms : 0;
    uint64_t us = ms < 1e15 ? (uint64_t)(ms * 1000.0 + 0.5) : (uint64_t)1e18;
    memcpy(o, ",\"status\":", 10);
    o += 10;
    if (r->status < 0) {
        *o++ = '-';
        o += put_u64(o, (uint64_t)(-(int64_t)r->status));
    } else {
        o += put_u64(o, (uint64_t)r->status);
    }
    memcpy(o, ",\"ms\":", 6);
    o += 6;
    o += put_u64(o, us / 1000);
    *o++ = '.';
    o[0] = (char)('0' + (us / 100) % 10);
    o[1] = (char)('0' + (us / 10) % 10);
    o[2] = (char)('0' + us % 10);
    o += 3;
    memcpy(o, ",\"bytes\":", 9);
    o += 9;
    o += put_u64(o, (uint64_t)r->bytes);
    memcpy(o, ",\"error\":", 9);
    o += 9;
    if (buf_add(b, num, (size_t)(o - num)) != 0)
        return TC_ENOMEM;
    if (r->error == 0) {
        if (buf_add(b, "null", 4) != 0)
            return TC_ENOMEM;
    } else {
        const char *m = r->message && *r->message ? r->message : tc_strerror(r->error);
        if (tc_fetch_json_string(b, m, strlen(m)) != 0)
            return TC_ENOMEM;
    }
    if (with_body) {
        if (buf_add(b, ",\"body\":", 8) != 0)
            return TC_ENOMEM;
        int rc = r->body ? tc_fetch_json_string(b, r->body, r->bytes) : buf_add(b, "null", 4);
        if (rc != 0)
            return TC_ENOMEM;
    }
    return buf_add(b, "}\n", 2);
}

/* ---- Retry-After ---------------------------------------------------------------------------- */

static int month_index(const char *m)
{
    static const char names[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    if (strlen(m) != 3)
        return -1;
    for (int i = 0; i < 12; i++)
        if (strncmp(names + (size_t)3 * i, m, 3) == 0)
            return i;
    return -1;
}

/* Parses the three HTTP-date forms of RFC 9110 §5.6.7 into Unix seconds. */
static int http_date_parse(const char *s, time_t *out)
{
    char wd[16], mon[8];
    int d, y, H, M, S, n = -1;
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    if (sscanf(s, "%3[A-Za-z], %2d %3[A-Za-z] %4d %2d:%2d:%2d GMT%n", wd, &d, mon, &y, &H, &M, &S,
               &n) == 7 &&
        n > 0 && s[n] == '\0') { // NOLINT(bugprone-branch-clone): no fix-up, as for asctime
        /* IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT */
    } else if (n = -1, sscanf(s, "%15[A-Za-z], %2d-%3[A-Za-z]-%2d %2d:%2d:%2d GMT%n", wd, &d, mon,
                              &y, &H, &M, &S, &n) == 7 &&
                           n > 0 && s[n] == '\0') {
        /* RFC 850: Sunday, 06-Nov-94 08:49:37 GMT; two-digit years: 70..99 are 19xx */
        y += y < 70 ? 2000 : 1900;
    } else if (n = -1, sscanf(s, "%3[A-Za-z] %3[A-Za-z] %2d %2d:%2d:%2d %4d%n", wd, mon, &d, &H, &M,
                              &S, &y, &n) == 7 &&
                           n > 0 && s[n] == '\0') {
        /* asctime: Sun Nov  6 08:49:37 1994 */
    } else {
        return TC_EINVAL;
    }
    int m = month_index(mon);
    if (m < 0 || d < 1 || d > 31 || y < 1970 || y > 9999 || H > 23 || M > 59 || S > 60 || H < 0 ||
        M < 0 || S < 0)
        return TC_EINVAL;
    tm.tm_year = y - 1900;
    tm.tm_mon = m;
    tm.tm_mday = d;
    tm.tm_hour = H;
    tm.tm_min = M;
    tm.tm_sec = S;
    time_t t = timegm(&tm);
    if (t == (time_t)-1)
        return TC_EINVAL;
    *out = t;
    return 0;
}

int tc_retry_after_parse(const char *value, time_t now, uint64_t max_ms, uint64_t *ms)
{
    if (value == NULL || ms == NULL)
        return TC_EINVAL;
    while (*value == ' ' || *value == '\t')
        value++;
    size_t len = strlen(value);
    while (len > 0 && (value[len - 1] == ' ' || value[len - 1] == '\t'))
        len--;
    if (len == 0 || len >= 64)
        return TC_EINVAL;
    char v[64];
    memcpy(v, value, len);
    v[len] = '\0';
    uint64_t out;
    if (v[0] >= '0' && v[0] <= '9') {
        uint64_t secs = 0;
        for (size_t i = 0; i < len; i++) {
            if (v[i] < '0' || v[i] > '9')
                return TC_EINVAL;
            if (secs < UINT64_MAX / 10000)
                secs = secs * 10 + (uint64_t)(v[i] - '0');
        }
        out = secs >= UINT64_MAX / 1000 ? UINT64_MAX : secs * 1000;
    } else {
        time_t t;
        if (http_date_parse(v, &t) != 0)
            return TC_EINVAL;
        out = t > now ? (uint64_t)(t - now) * 1000 : 0;
    }
    *ms = out < max_ms ? out : max_ms;
    return 0;
}

/* ---- latency histogram ---------------------------------------------------------------------- */

#define HIST_SUB (1u << TC_HIST_SUB_BITS)

static size_t hist_index(uint64_t v)
{
    if (v < HIST_SUB)
        return (size_t)v;
    if (v >= (1ULL << TC_HIST_MAX_BITS))
        return TC_HIST_BUCKETS - 1;
    unsigned e = 63u - (unsigned)__builtin_clzll(v); /* TC_HIST_SUB_BITS .. MAX_BITS-1 */
    uint64_t sub = v >> (e - TC_HIST_SUB_BITS);      /* HIST_SUB .. 2*HIST_SUB-1 */
    return (size_t)(e - TC_HIST_SUB_BITS) * HIST_SUB + (size_t)sub;
}

/* The smallest value of bucket i and the bucket's width. */
static void hist_bucket(size_t i, uint64_t *low, uint64_t *width)
{
    if (i < HIST_SUB) {
        *low = i;
        *width = 1;
        return;
    }
    unsigned e = (unsigned)(i / HIST_SUB) + TC_HIST_SUB_BITS - 1;
    uint64_t sub = (uint64_t)(i % HIST_SUB) + HIST_SUB;
    *low = sub << (e - TC_HIST_SUB_BITS);
    *width = 1ULL << (e - TC_HIST_SUB_BITS);
}

void tc_hist_init(tc_hist *h)
{
    memset(h, 0, sizeof(*h));
}

void tc_hist_record(tc_hist *h, uint64_t us)
{
    if (h->count == 0 || us < h->min)
        h->min = us;
    if (us > h->max)
        h->max = us;
    h->count++;
    h->buckets[hist_index(us)]++;
}

uint64_t tc_hist_percentile(const tc_hist *h, double p)
{
    if (h->count == 0)
        return 0;
    if (p >= 100)
        return h->max;
    if (p < 0)
        p = 0;
    /* The rank of the sample at p: ceil(p/100 * count), at least 1. */
    double want = p / 100.0 * (double)h->count;
    uint64_t rank = (uint64_t)want;
    if ((double)rank < want)
        rank++;
    if (rank == 0)
        rank = 1;
    uint64_t seen = 0;
    for (size_t i = 0; i < TC_HIST_BUCKETS; i++) {
        seen += h->buckets[i];
        if (seen >= rank) {
            uint64_t low, width;
            hist_bucket(i, &low, &width);
            uint64_t v = low + width / 2;
            if (v < h->min)
                v = h->min;
            if (v > h->max)
                v = h->max;
            return v;
        }
    }
    return h->max;
}
