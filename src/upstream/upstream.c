/*
 * The simulated slow, flaky upstream (`tailcut upstream`, and the one `tailcut serve` embeds).
 *
 * Every /api/work request is decided the moment it arrives: the next queued scenario step if
 * there is one, else one draw from the profile. The decision is a *step*: wait delay_ms, then
 * respond (status, body), hang (TC_UPSTREAM_HANG_MS of silence, then FIN) or reset (RST). A step
 * due at once is carried out at once; any other waits on one uv timer owned by a small `work`
 * record hung on the request. So the one idea is: a held request costs one timer and a few
 * hundred bytes, never a thread or a sleep, and a client that leaves early frees both at once
 * through the server's abort callback.
 *
 * Stalls (the pause profile) stop the whole simulator, as a garbage-collection pause stops a
 * process: nothing is answered during one. A step's delay counts only time outside the stalls
 * (tc__up_stalls_due() turns it into a due time), so work in progress halts and resumes; every
 * other request that arrives during a stall is parked, in arrival order, until it ends.
 *
 * The decisions themselves (profiles, exponea's deck, scenario steps, the seeded generator) are
 * pure code in upstream_plan.c; this file is the HTTP side.
 *
 * Nothing here is process-global: serve embeds one of these on its own loop.
 */
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "base/alloc.h"
#include "base/list.h"
#include "base/rng.h"
#include "tailcut/server.h"
#include "tailcut/upstream.h"
#include "tailcut/url.h"
#include "upstream_internal.h"
#include "upstream_plan.h"

/* A held /api/work request: lives from its arrival until its timer's close callback. */
typedef struct work {
    uv_timer_t timer;
    tc_upstream *u;
    tc_request *r; /* NULL once the request is finished */
    tc__up_step s;
    tc__up_outcome out;
    uint64_t due_us; /* when the delay ends, on the clock of now_us() */
    int hanging;     /* the delay is over and the hang's silence has begun */
} work;

/* A request (not GET /api/work) that arrived during a stall, waiting for its end. */
typedef struct parked {
    tc__link link; /* in tc_upstream.parked */
    tc_upstream *u;
    tc_request *r;
    uint64_t release_us; /* the end of its stall */
} parked;

/* ---- small helpers ------------------------------------------------------------------------- */

static int str_eq(tc_str s, const char *lit)
{
    size_t n = strlen(lit);
    return s.len == n && memcmp(s.base, lit, n) == 0;
}

/* Sends {"success":false,"error":code,"message":message} with optional extra headers. Unlike
 * tc_request_respond_error() this keeps the connection: these are application-level errors. */
void tc__up_send_error(tc_request *r, int status, const char *code, const char *message,
                       const tc_server_header *headers, size_t nheaders)
{
    json_t *obj = json_pack("{s:b,s:s,s:s}", "success", 0, "error", code, "message", message);
    if (obj == NULL) {
        /* The message is not valid UTF-8 (say, a parser's excerpt cut inside a character):
         * answer with a printable copy rather than not at all. */
        char shown[TC__UP_MESSAGE_MAX];
        tc__up_printable(message, strlen(message), shown, sizeof(shown));
        obj = json_pack("{s:b,s:s,s:s}", "success", 0, "error", code, "message", shown);
    }
    char *text = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
    json_decref(obj);
    if (text == NULL) {
        tc_request_drop(r, 0);
        return;
    }
    tc_request_respond(r, status, "application/json", headers, nheaders, text, strlen(text));
    tc__free(text);
}

void tc__up_send_json(tc_request *r, int status, json_t *obj)
{
    char *text = obj ? json_dumps(obj, JSON_COMPACT | JSON_REAL_PRECISION(12)) : NULL;
    json_decref(obj);
    if (text == NULL) {
        tc__up_send_error(r, 500, "internal", "out of memory", NULL, 0);
        return;
    }
    tc_request_respond(r, status, "application/json", NULL, 0, text, strlen(text));
    tc__free(text);
}

static void method_not_allowed(tc_request *r, const char *allow)
{
    const tc_server_header h = {"Allow", allow};
    tc__up_send_error(r, 405, "method_not_allowed", "method not allowed", &h, 1);
}

static int is_get(tc_request *r)
{
    tc_str m = tc_request_method(r);
    return str_eq(m, "GET") || str_eq(m, "HEAD");
}

static int is_post(tc_request *r)
{
    return str_eq(tc_request_method(r), "POST");
}

/* ---- time ---------------------------------------------------------------------------------- */

/* The clock of due times and stalls: uv_hrtime() in microseconds. */
static uint64_t now_us(void)
{
    return uv_hrtime() / 1000;
}

/* Starts t to call cb once now_us() has reached due_us, never earlier: uv_now() is the same clock
 * in whole milliseconds, rounded down, so the timer aims at the next whole millisecond. */
static void timer_start_at(tc_upstream *u, uv_timer_t *t, uv_timer_cb cb, uint64_t due_us)
{
    uint64_t due_ms = due_us / 1000 + (due_us % 1000 != 0);
    uv_update_time(u->loop);
    uint64_t now_ms = uv_now(u->loop);
    uv_timer_start(t, cb, due_ms > now_ms ? due_ms - now_ms : 0, 0);
}

/* The stalls of the profile in force, on now_us()'s clock. */
static void stalls_update(tc_upstream *u)
{
    u->stalls = tc__up_dealer_stalls(&u->dealer, u->epoch_offset_us);
}

/* ---- /api/work ----------------------------------------------------------------------------- */

/* The request's X-Tailcut-Attempt value, 1..TC_UPSTREAM_MAX_ATTEMPT, or 0 for none or any other
 * value. */
static unsigned attempt_of(tc_request *r)
{
    tc_str v;
    unsigned n = 0;
    if (tc_request_header(r, "X-Tailcut-Attempt", &v) != 1 || v.len == 0 || v.len > 2)
        return 0;
    for (size_t i = 0; i < v.len; i++) {
        if (v.base[i] < '0' || v.base[i] > '9')
            return 0;
        n = n * 10 + (unsigned)(v.base[i] - '0');
    }
    return n <= TC_UPSTREAM_MAX_ATTEMPT ? n : 0;
}

static void count_per_second(tc_upstream *u, tc_request *r, uint64_t now_ns)
{
    uint64_t second = now_ns > u->ps_base_ns ? (now_ns - u->ps_base_ns) / 1000000000u : 0;
    size_t slot = second % TC_UPSTREAM_PER_SECOND;
    if (u->ps_second[slot] != second + 1) {
        u->ps_second[slot] = second + 1;
        memset(u->ps_counts[slot], 0, sizeof(u->ps_counts[slot]));
    }
    u->ps_counts[slot][attempt_of(r)]++;
}

static void record_arrival(tc_upstream *u, tc_request *r)
{
    uint64_t now = tc_request_ready_ns(r);
    count_per_second(u, r, now);
    uint64_t us = now > u->base_ns ? (now - u->base_ns) / 1000 : 0;
    if (u->arr_len == TC_UPSTREAM_MAX_ARRIVALS) {
        u->arr_head = (u->arr_head + 1) % TC_UPSTREAM_MAX_ARRIVALS;
        u->arr_len--;
        u->arrivals_forgotten++;
    }
    u->arrivals_us[(u->arr_head + u->arr_len) % TC_UPSTREAM_MAX_ARRIVALS] = us;
    u->arr_len++;
}

/* Answers a respond step now. */
static void respond_step(tc_request *r, const tc__up_step *st, tc__up_outcome out)
{
    char buf[96];
    const char *body = st->body;
    size_t len = st->body_len;
    const tc_server_header h = {"X-Tailcut-Outcome", tc__up_outcome_names[out]};

    if (body == NULL) {
        unsigned long long ms = (unsigned long long)st->delay_ms;
        int n;
        if (out == TC__UP_OUT_INVALID_JSON) /* a truncated object: not JSON */
            n = snprintf(buf, sizeof(buf), "{\"time\": %llu", ms);
        else /* the default body, {"time": MS}, whatever the status */
            n = snprintf(buf, sizeof(buf), "{\"time\": %llu}", ms);
        body = buf;
        len = (size_t)n;
    }
    tc_request_respond(r, st->status, "application/json", &h, 1, body, len);
}

static void upstream_maybe_finish_close(tc_upstream *u);

static void on_work_closed(uv_handle_t *h)
{
    work *wk = tc__container_of(h, work, timer);
    tc_upstream *u = wk->u;
    tc__free(wk->s.body);
    tc__free(wk);
    u->live_timers--;
    upstream_maybe_finish_close(u);
}

/* The request is finished (answered, dropped or aborted): release the timer and the record. */
static void work_done(work *wk)
{
    wk->r = NULL;
    wk->u->in_flight--;
    uv_timer_stop(&wk->timer);
    uv_close((uv_handle_t *)&wk->timer, on_work_closed);
}

/* The client left while its request was held: count it, finish the request (which now only
 * frees it) and release the timer at once. Not counted while the simulator itself is closing. */
static void on_work_abort(tc_request *r, void *data)
{
    work *wk = data;
    if (!wk->u->closing)
        wk->u->client_aborts++;
    tc_request_drop(r, 0); /* only frees it now: the client is gone */
    work_done(wk);
}

static void on_work_timer(uv_timer_t *t);

/* A hang's delay is over: TC_UPSTREAM_HANG_MS of silence, then the close, which (an answer of
 * sorts) waits for the end of a stall it would fall in. */
static void start_hang(work *wk)
{
    uint64_t end = tc__up_stalls_due(&wk->u->stalls, wk->due_us + TC_UPSTREAM_HANG_MS * 1000ULL, 0);
    wk->hanging = 1;
    timer_start_at(wk->u, &wk->timer, on_work_timer, end);
}

/* The delay (or, for a hang, the silence after it) is over: carry out the step. A hang's first
 * expiry only starts its TC_UPSTREAM_HANG_MS of silence. */
static void on_work_timer(uv_timer_t *t)
{
    work *wk = tc__container_of(t, work, timer);
    tc_request *r = wk->r;

    if (wk->s.act == TC__UP_HANG && !wk->hanging) {
        start_hang(wk);
        return;
    }
    tc_request_on_abort(r, NULL, NULL);
    switch (wk->s.act) {
    case TC__UP_RESPOND:
        respond_step(r, &wk->s, wk->out);
        break;
    case TC__UP_HANG:
        tc_request_drop(r, 0);
        break;
    case TC__UP_RESET:
        tc_request_drop(r, 1);
        break;
    }
    work_done(wk);
}

/* GET /api/work: decide now (queued step, else a profile draw), then answer at once when it is
 * due already, or hold the request on a timer. The delay counts from the arrival, outside the
 * stalls. Finishes r exactly once, now or from on_work_timer / on_work_abort. */
static void handle_work(tc_upstream *u, tc_request *r)
{
    tc__up_step s;
    tc__up_outcome out;

    u->work_requests++;
    record_arrival(u, r);
    if (u->q_len > 0) {
        s = u->q[u->q_head];
        u->q_head = (u->q_head + 1) % u->q_cap;
        u->q_len--;
        out = TC__UP_OUT_SCENARIO;
    } else {
        tc__up_draw(&u->dealer, &s, &out);
    }
    u->outcomes[out]++;

    uint64_t due_us =
        tc__up_stalls_due(&u->stalls, tc_request_ready_ns(r) / 1000, s.delay_ms * 1000);
    if (due_us <= now_us() && s.act != TC__UP_HANG) {
        if (s.act == TC__UP_RESPOND)
            respond_step(r, &s, out);
        else
            tc_request_drop(r, 1);
        tc__free(s.body);
        return;
    }

    work *wk = tc__calloc(1, sizeof(*wk));
    if (wk == NULL) {
        tc__free(s.body);
        tc__up_send_error(r, 503, "overloaded", "out of memory", NULL, 0);
        return;
    }
    wk->u = u;
    wk->r = r;
    wk->s = s;
    wk->out = out;
    wk->due_us = due_us;
    uv_timer_init(u->loop, &wk->timer);
    u->live_timers++;
    u->in_flight++;
    tc_request_on_abort(r, on_work_abort, wk);
    if (s.act == TC__UP_HANG && due_us <= now_us())
        start_hang(wk);
    else
        timer_start_at(u, &wk->timer, on_work_timer, due_us);
}

/* ---- /scenario and /reset ------------------------------------------------------------------ */

static int queue_reserve(tc_upstream *u, size_t more)
{
    size_t need = u->q_len + more;
    if (need <= u->q_cap)
        return 0;
    size_t cap = u->q_cap ? u->q_cap : 16;
    while (cap < need)
        cap *= 2;
    tc__up_step *st = tc__malloc(cap * sizeof(*st));
    if (st == NULL)
        return -1;
    /* q_len <= q_cap: the loop runs only when q_cap > 0. */
    for (size_t i = 0; i < u->q_len; i++)
        // NOLINTNEXTLINE(clang-analyzer-core.DivideZero)
        st[i] = u->q[(u->q_head + i) % u->q_cap];
    tc__free(u->q);
    u->q = st;
    u->q_cap = cap;
    u->q_head = 0;
    return 0;
}

static void queue_clear(tc_upstream *u)
{
    for (size_t i = 0; i < u->q_len; i++)
        tc__free(u->q[(u->q_head + i) % u->q_cap].body);
    u->q_head = 0;
    u->q_len = 0;
}

/* POST /scenario: every step is validated into a private array first and the queue is touched
 * only when all are good, so a 400 leaves it exactly as it was. Clears arrivals_ms. */
static void handle_scenario(tc_upstream *u, tc_request *r)
{
    tc_str body = tc_request_body(r);
    json_error_t err;
    char msg[TC__UP_MESSAGE_MAX];
    json_t *root = json_loadb(body.base, body.len, JSON_REJECT_DUPLICATES, &err);
    tc__up_step *steps = NULL;
    size_t n = 0;

    if (root == NULL) {
        (void)snprintf(msg, sizeof(msg), "malformed JSON at line %d column %d: %s", err.line,
                       err.column, err.text);
        tc__up_send_error(r, 400, "bad_request", msg, NULL, 0);
        return;
    }
    if (!json_is_array(root)) {
        json_decref(root);
        tc__up_send_error(r, 400, "bad_request", "expected a JSON array of steps", NULL, 0);
        return;
    }
    n = json_array_size(root);
    if (n > TC_UPSTREAM_MAX_STEPS - u->q_len) {
        json_decref(root);
        (void)snprintf(msg, sizeof(msg), "too many steps: at most %d may wait in the queue",
                       TC_UPSTREAM_MAX_STEPS);
        tc__up_send_error(r, 400, "bad_request", msg, NULL, 0);
        return;
    }
    steps = tc__calloc(n ? n : 1, sizeof(*steps));
    if (steps == NULL || queue_reserve(u, n) != 0) {
        json_decref(root);
        tc__free(steps);
        tc__up_send_error(r, 503, "overloaded", "out of memory", NULL, 0);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        if (tc__up_step_parse(json_array_get(root, i), i, &steps[i], msg, sizeof(msg)) != 0) {
            json_decref(root);
            tc__up_steps_free(steps, i);
            tc__up_send_error(r, 400, "bad_request", msg, NULL, 0);
            return;
        }
    }
    json_decref(root);

    for (size_t i = 0; i < n; i++)
        u->q[(u->q_head + u->q_len + i) % u->q_cap] = steps[i];
    u->q_len += n;
    tc__free(steps);
    u->arr_head = 0;
    u->arr_len = 0;
    u->arrivals_forgotten = 0;
    u->base_ns = uv_hrtime();
    tc__up_send_json(
        r, 200, json_pack("{s:I,s:I}", "queued", (json_int_t)n, "pending", (json_int_t)u->q_len));
}

/* POST /profile {"profile":"P"}: switches the profile at once; 400 and no change on a bad one. */
static void handle_profile(tc_upstream *u, tc_request *r)
{
    tc_str body = tc_request_body(r);
    json_error_t err;
    char msg[TC__UP_MESSAGE_MAX];
    tc_upstream_profile p;
    const char *why = NULL;
    json_t *root = json_loadb(body.base, body.len, JSON_REJECT_DUPLICATES, &err);
    json_t *v = json_is_object(root) ? json_object_get(root, "profile") : NULL;
    const char *text = json_string_value(v);

    if (root == NULL) {
        (void)snprintf(msg, sizeof(msg), "malformed JSON at line %d column %d: %s", err.line,
                       err.column, err.text);
        tc__up_send_error(r, 400, "bad_request", msg, NULL, 0);
        return;
    }
    if (text == NULL || json_object_size(root) != 1) {
        json_decref(root);
        tc__up_send_error(r, 400, "bad_request", "expected {\"profile\":\"P\"}", NULL, 0);
        return;
    }
    if (tc_upstream_profile_parse(text, &p, &why) != 0) {
        char shown[TC__UP_PRINTABLE_MAX + 1];
        tc__up_printable(text, strlen(text), shown, sizeof(shown));
        (void)snprintf(msg, sizeof(msg), "invalid profile \"%s\": %s", shown, why);
        json_decref(root);
        tc__up_send_error(r, 400, "bad_request", msg, NULL, 0);
        return;
    }
    char *copy = tc__strdup(text);
    json_decref(root);
    if (copy == NULL) {
        tc__up_send_error(r, 503, "overloaded", "out of memory", NULL, 0);
        return;
    }
    tc__free(u->profile_text);
    u->profile_text = copy;
    tc__up_dealer_set(&u->dealer, &p); /* exponea starts a fresh deck */
    stalls_update(u);
    tc__up_send_json(r, 200, json_pack("{s:s}", "profile", u->profile_text));
}

static void calls_clear(tc_upstream *u)
{
    for (size_t i = 0; i < u->calls_len; i++)
        tc__free(u->calls[(u->calls_head + i) % TC_UPSTREAM_MAX_METADATA_CALLS].ids);
    u->calls_head = 0;
    u->calls_len = 0;
    u->calls_bytes = 0;
    u->calls_forgotten = 0;
}

static void handle_reset(tc_upstream *u, tc_request *r)
{
    queue_clear(u);
    calls_clear(u);
    u->work_requests = 0;
    u->client_aborts = 0;
    u->metadata_calls = 0;
    u->metadata_rejected = 0;
    memset(u->outcomes, 0, sizeof(u->outcomes));
    u->arr_head = 0;
    u->arr_len = 0;
    u->arrivals_forgotten = 0;
    u->base_ns = uv_hrtime();
    u->ps_base_ns = u->base_ns;
    memset(u->ps_second, 0, sizeof(u->ps_second));
    u->tokens = (double)u->metadata_rate;
    tc__up_send_json(r, 200, json_pack("{s:b}", "reset", 1));
}

/* ---- the handler and the object ------------------------------------------------------------ */

/* Every endpoint but GET /api/work (which on_request() sends to handle_work() itself). */
static void route(tc_upstream *u, tc_request *r)
{
    tc_str path = tc_request_path(r);

    if (str_eq(path, "/api/work")) {
        method_not_allowed(r, "GET, HEAD");
    } else if (str_eq(path, "/api/metadata")) {
        if (is_get(r))
            tc__up_handle_metadata(u, r);
        else
            method_not_allowed(r, "GET, HEAD");
    } else if (str_eq(path, "/stats")) {
        if (is_get(r))
            tc__up_send_json(r, 200, tc__up_stats_json(u));
        else
            method_not_allowed(r, "GET, HEAD");
    } else if (str_eq(path, "/scenario")) {
        if (is_post(r))
            handle_scenario(u, r);
        else
            method_not_allowed(r, "POST");
    } else if (str_eq(path, "/profile")) {
        if (is_post(r))
            handle_profile(u, r);
        else
            method_not_allowed(r, "POST");
    } else if (str_eq(path, "/reset")) {
        if (is_post(r))
            handle_reset(u, r);
        else
            method_not_allowed(r, "POST");
    } else {
        tc__up_send_error(r, 404, "not_found", "no such endpoint", NULL, 0);
    }
}

/* ---- stalls: parked requests --------------------------------------------------------------- */

static void on_parked_abort(tc_request *r, void *data)
{
    parked *pk = data;
    tc__list_remove(&pk->link);
    tc__free(pk);
    tc_request_drop(r, 0); /* only frees it now: the client is gone */
}

/* A stall is over: hands the requests parked until then to the handler, in arrival order. Those
 * parked for a later stall (the loop ran late) wait for theirs. */
static void on_stall_end(uv_timer_t *t)
{
    tc_upstream *u = tc__container_of(t, tc_upstream, stall_timer);
    uint64_t now = now_us();
    tc__link *l;
    while ((l = tc__list_first(&u->parked)) != NULL) {
        parked *pk = tc__container_of(l, parked, link);
        if (pk->release_us > now) {
            timer_start_at(u, &u->stall_timer, on_stall_end, pk->release_us);
            return;
        }
        tc_request *r = pk->r;
        tc__list_remove(l);
        tc__free(pk);
        tc_request_on_abort(r, NULL, NULL);
        route(u, r);
    }
}

/* Holds r until release_us, the end of the stall it arrived in; answers 503 when out of memory. */
static void park(tc_upstream *u, tc_request *r, uint64_t release_us)
{
    parked *pk = tc__calloc(1, sizeof(*pk));
    if (pk == NULL) {
        tc__up_send_error(r, 503, "overloaded", "out of memory", NULL, 0);
        return;
    }
    pk->u = u;
    pk->r = r;
    pk->release_us = release_us;
    if (tc__list_empty(&u->parked))
        timer_start_at(u, &u->stall_timer, on_stall_end, release_us);
    tc__list_push_back(&u->parked, &pk->link);
    tc_request_on_abort(r, on_parked_abort, pk);
}

static void on_request(tc_request *r, void *data)
{
    tc_upstream *u = data;

    if (str_eq(tc_request_path(r), "/api/work") && is_get(r)) {
        handle_work(u, r); /* its due time counts the stalls */
        return;
    }
    uint64_t release_us = tc__up_stalls_due(&u->stalls, tc_request_ready_ns(r) / 1000, 0);
    if (release_us > now_us())
        park(u, r, release_us);
    else
        route(u, r);
}

void tc_upstream_config_init(tc_upstream_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->host = "127.0.0.1";
    cfg->profile = "exponea";
    cfg->max_body = (size_t)TC_SERVER_DEFAULT_MAX_BODY;
}

/* How far the Unix epoch's clock is ahead of now_us()'s, so that stalls keep to the wall clock's
 * periods (0 when the wall clock cannot be read or reads before the boot). */
static uint64_t epoch_offset_us(void)
{
    uv_timeval64_t tv;
    uint64_t mono = now_us();
    if (uv_gettimeofday(&tv) != 0 || tv.tv_sec < 0)
        return 0;
    uint64_t wall = (uint64_t)tv.tv_sec * 1000000 + (uint64_t)tv.tv_usec;
    return wall > mono ? wall - mono : 0;
}

static void upstream_free(tc_upstream *u)
{
    queue_clear(u);
    calls_clear(u);
    tc__free(u->q);
    tc__free(u->calls);
    tc__free(u->arrivals_us);
    tc__free(u->profile_text);
    tc__free(u);
}

int tc_upstream_new(tc_upstream **out, uv_loop_t *loop, const tc_upstream_config *cfg)
{
    tc_upstream_profile profile;
    tc_server_config scfg;
    const char *text = cfg->profile ? cfg->profile : "exponea";
    int rc;

    if (out == NULL || loop == NULL || tc_upstream_profile_parse(text, &profile, NULL) != 0)
        return TC_EINVAL;
    tc_upstream *u = tc__calloc(1, sizeof(*u));
    if (u == NULL)
        return TC_ENOMEM;
    u->loop = loop;
    u->profile_text = tc__strdup(text);
    u->arrivals_us = tc__malloc(TC_UPSTREAM_MAX_ARRIVALS * sizeof(*u->arrivals_us));
    u->calls = tc__calloc(TC_UPSTREAM_MAX_METADATA_CALLS, sizeof(*u->calls));
    if (u->profile_text == NULL || u->arrivals_us == NULL || u->calls == NULL) {
        upstream_free(u);
        return TC_ENOMEM;
    }
    if (cfg->seed_set) {
        u->seed = cfg->seed;
    } else {
        uint64_t mix = uv_hrtime() ^ (uint64_t)(uintptr_t)u;
        u->seed = tc__splitmix64(&mix);
    }
    tc__up_dealer_init(&u->dealer, &profile, u->seed);
    u->metadata_rate = cfg->metadata_rate;
    u->tokens = (double)cfg->metadata_rate;
    u->tokens_ns = uv_hrtime();
    u->base_ns = uv_hrtime();
    u->ps_base_ns = u->base_ns;
    u->epoch_offset_us = epoch_offset_us();
    stalls_update(u);
    tc__list_init(&u->parked);

    tc_server_config_init(&scfg);
    scfg.host = cfg->host ? cfg->host : "127.0.0.1";
    scfg.port = cfg->port;
    scfg.reuseport = cfg->reuseport;
    scfg.max_connections = cfg->max_connections;
    if (cfg->max_body)
        scfg.max_body = cfg->max_body;
    scfg.access_log = cfg->access_log;
    scfg.access_log_format = cfg->access_log_format;
    scfg.handler = on_request;
    scfg.handler_data = u;
    rc = tc_server_new(&u->srv, loop, &scfg);
    if (rc != 0) {
        upstream_free(u);
        return rc;
    }
    uv_timer_init(loop, &u->stall_timer);
    u->live_timers = 1;
    *out = u;
    return 0;
}

int tc_upstream_port(const tc_upstream *u)
{
    return u->srv ? tc_server_port(u->srv) : -1;
}

uint64_t tc_upstream_seed(const tc_upstream *u)
{
    return u->seed;
}

static void on_server_drained(tc_server *srv, void *data)
{
    tc_upstream *u = data;
    tc_upstream_cb cb = u->drained_cb;
    u->drained_cb = NULL;
    if (cb)
        cb(u, u->drained_data);
}

void tc_upstream_drain(tc_upstream *u, tc_upstream_cb drained_cb, void *data)
{
    if (u->closing || u->srv == NULL)
        return;
    u->drained_cb = drained_cb;
    u->drained_data = data;
    tc_server_drain(u->srv, on_server_drained, u);
}

static void upstream_maybe_finish_close(tc_upstream *u)
{
    if (!u->closing || u->srv != NULL || u->live_timers != 0)
        return;
    if (u->close_cb)
        u->close_cb(u, u->close_data);
    upstream_free(u);
}

static void on_server_closed(tc_server *srv, void *data)
{
    tc_upstream *u = data;
    u->srv = NULL;
    upstream_maybe_finish_close(u);
}

static void on_stall_timer_closed(uv_handle_t *h)
{
    tc_upstream *u = tc__container_of(h, tc_upstream, stall_timer);
    u->live_timers--;
    upstream_maybe_finish_close(u);
}

void tc_upstream_close(tc_upstream *u, tc_upstream_cb close_cb, void *data)
{
    if (u->closing)
        return;
    u->closing = 1;
    u->close_cb = close_cb;
    u->close_data = data;
    /* Closing the server drops the parked requests too (their abort callbacks free them). */
    uv_close((uv_handle_t *)&u->stall_timer, on_stall_timer_closed);
    tc_server_close(u->srv, on_server_closed, u);
}
