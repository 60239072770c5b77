/*
 * The pooled, non-blocking HTTP client: admission, queue, deadlines and completion, for both
 * engines (client_native.c speaks HTTP/1.1 itself, client_curl.c drives libcurl).
 *
 * The one idea that makes it work: this file is the only place that admits a request onto the
 * wire. A request enters its engine only when a connection slot is free for it, in total
 * (max_connections) and for its origin (max_per_host); otherwise it waits in one FIFO queue.
 * Every request's whole deadline, queue time included unless it asks otherwise, is kept by one
 * min-heap behind one uv_timer, whatever the engine: libcurl 7.88 does not time out transfers in
 * its own pending list, and the native engine need not keep a timer per request.
 *
 * Lifetimes: a request is one allocation (tc__creq) whose first member is the public
 * tc_response, and whose inline buffer usually holds the whole response, so a typical request
 * costs one malloc. On success the allocation is handed to the future as its value; on failure
 * or cancellation it is freed at once.
 *
 * Re-entrancy: futures complete only after the request is out of every list and the queue has
 * been pumped, because a user callback may call back into this client (start, cancel, close).
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "base/alloc.h"
#include "client_internal.h"
#include "http/forward_internal.h"
#include "tailcut/url.h"

/* A queued request with less time than this left is not started: it could not be answered, and
 * requests that expire together (a running one and one queued behind it, whose deadlines a
 * millisecond tick may split) then all report where they really were. */
#define TC__CLIENT_ADMIT_MIN_MS 5

static void pump_queue(tc_client *cl);
static void client_maybe_finish_close(tc_client *cl);

static double ns_to_ms(uint64_t ns)
{
    return (double)ns / 1e6;
}

void tc_client_config_init(tc_client_config *cfg)
{
    if (cfg == NULL)
        return;
    memset(cfg, 0, sizeof(*cfg));
    cfg->max_connections = TC_CLIENT_DEFAULT_MAX_CONNECTIONS;
    cfg->max_per_host = 0;
    cfg->timeout_ms = TC_CLIENT_DEFAULT_TIMEOUT_MS;
    cfg->connect_timeout_ms = TC_CLIENT_DEFAULT_CONNECT_TIMEOUT_MS;
    cfg->max_body = (size_t)TC_CLIENT_DEFAULT_MAX_BODY;
    cfg->http2 = 1;
    cfg->engine = TC_CLIENT_ENGINE_AUTO;
}

/* ---- deadlines ------------------------------------------------------------------------------ */

static void on_client_deadline(uv_timer_t *t);

/* Arms the deadline timer for the earliest deadline. Cheap enough to call after every change. */
static void deadline_rearm(tc_client *cl)
{
    if (cl->closing)
        return;
    tc__heap_node *node = tc__heap_min(&cl->deadlines);
    if (node == NULL) {
        uv_timer_stop(&cl->deadline_timer); /* an armed timer would keep the loop alive */
        return;
    }
    uint64_t now = uv_now(cl->loop);
    uv_timer_start(&cl->deadline_timer, on_client_deadline, node->key > now ? node->key - now : 0,
                   0);
}

static int deadline_set(tc_client *cl, tc__creq *r, uint64_t from_ms)
{
    if (r->timeout_ms == 0)
        return 0;
    r->timeout.key = from_ms + r->timeout_ms;
    int err = tc__heap_push(&cl->deadlines, &r->timeout);
    if (err == 0 && tc__heap_min(&cl->deadlines) == &r->timeout)
        deadline_rearm(cl);
    return err;
}

int tc__creq_rekey(tc__creq *r, uint64_t at_ms)
{
    tc_client *cl = r->client;
    int had = r->timeout.idx != TC__HEAP_NONE;
    tc__heap_remove(&cl->deadlines, &r->timeout);
    if (at_ms == 0)
        return 0;
    r->timeout.key = at_ms;
    /* A node just removed leaves room for itself: only a request with no deadline can fail. */
    int err = tc__heap_push(&cl->deadlines, &r->timeout);
    if (err == 0 && (!had || tc__heap_min(&cl->deadlines) == &r->timeout))
        deadline_rearm(cl);
    return err;
}

/* ---- origins -------------------------------------------------------------------------------- */

void tc__origin_ref(tc_client *cl, tc__origin *o)
{
    (void)cl;
    o->entry.refs++;
}

void tc__origin_unref(tc_client *cl, tc__origin *o)
{
    if (o == NULL)
        return;
    if (o->entry.refs == 1)
        tc__free(o->addrs);
    tc__table_unref(&cl->origins, &o->entry);
}

/* A request for o may take a connection slot now. Origins known to multiplex (HTTP/2 over
 * libcurl) need no slot; curl's own caps bound their connections. */
static int can_admit(const tc_client *cl, const tc__origin *o)
{
    if (o->multiplex)
        return 1;
    if (cl->slots_used >= cl->cfg.max_connections)
        return 0;
    return cl->cfg.max_per_host == 0 || o->slots < cl->cfg.max_per_host;
}

/* ---- request lifecycle ---------------------------------------------------------------------- */

static void creq_free(tc__creq *r)
{
    if (r->st != NULL)
        tc__stream_free(r);
    tc__buf_reset(&r->out);
    tc__free(r);
}

void tc__creq_free(tc__creq *r)
{
    creq_free(r);
}

/* The future's last reference went: a response still streaming is aborted first. */
void tc__creq_response_free(void *value)
{
    tc__creq *r = tc__container_of(value, tc__creq, resp);
    if (r->st != NULL && !tc__stream_value_released(r))
        return; /* a callback on it is running: freed when it returns */
    creq_free(r);
}

/* Takes r out of the queue or out of its engine (which drops its connection), gives back its
 * connection slot and clears its deadline. Leaves r->future and r->origin alone. */
static void detach(tc__creq *r)
{
    tc_client *cl = r->client;
    tc__heap_remove(&cl->deadlines, &r->timeout);
    if (tc__heap_min(&cl->deadlines) == NULL)
        uv_timer_stop(&cl->deadline_timer); /* an armed timer would keep the loop alive */
    /* A removed head leaves the timer early, and on_client_deadline re-arms: no restart needed
     * here. */
    if (r->state == TC__REQ_QUEUED) {
        tc__list_remove(&r->link);
    } else if (r->state == TC__REQ_RUNNING) {
        tc__list_remove(&r->link);
        if (r->engine == TC__ENGINE_NATIVE)
            tc__native_abort(r);
        else
            tc__curl_abort(r);
        if (r->holds_slot) {
            r->holds_slot = 0;
            cl->slots_used--;
            r->origin->slots--;
        }
    }
    r->state = TC__REQ_NEW;
}

/* Drops everything the wire side still holds; the allocation itself stays (it may be the
 * future's value). */
static void retire(tc__creq *r)
{
    tc_client *cl = r->client;
    if (r->engine == TC__ENGINE_CURL)
        tc__curl_release(r);
    if (r->st != NULL)
        tc__stream_unbind(r);
    tc__origin_unref(cl, r->origin);
    r->origin = NULL;
    if (cl->stats.in_flight > 0)
        cl->stats.in_flight--;
}

/* Takes r out of everything, lets queued requests take the freed slot first (FIFO), and returns
 * the producer's reference to its future, which the caller completes. */
static tc_future *creq_finish(tc__creq *r)
{
    tc_client *cl = r->client;
    tc_future *f = r->future;
    detach(r);
    retire(r);
    r->future = NULL;
    tc_future_set_cancel_hook(f, NULL, NULL);
    pump_queue(cl);
    return f;
}

int tc__creq_wind_up(tc__creq *r)
{
    tc_client *cl = r->client;
    tc__stream *st = r->st;
    st->wire_done = 1;
    detach(r);
    retire(r);
    /* The queue's callbacks may release this response: freed once they are done. */
    st->in_cb++;
    pump_queue(cl);
    st->in_cb--;
    if (st->free_pending && st->in_cb == 0) {
        creq_free(r);
        return 1;
    }
    return 0;
}

void tc__creq_fail(tc__creq *r, int err, const char *msg)
{
    /* Callers take r from the running list, the queue or the deadline heap, and detach() unlinks
     * r from all three before it is freed, so r is never one freed on an earlier turn. */
    // NOLINTNEXTLINE(clang-analyzer-unix.Malloc)
    tc_client *cl = r->client;
    if (r->st != NULL && r->st->head) { /* the future is done: the body ends with err */
        if (!tc__creq_wind_up(r))
            tc__stream_end(r, err, msg);
        return;
    }
    tc_future *f = creq_finish(r);
    /* fires hedge.c on_hedge_attempt_done, or cmd_serve_metadata.c on_meta_response */
    if (tc_future_reject(f, err, msg) == TC_ECANCELED)
        cl->stats.cancelled++;
    else
        cl->stats.failed++;
    creq_free(r);
    tc_future_unref(f);
}

void tc__creq_succeed(tc__creq *r, int status, int http_version, size_t body_off)
{
    tc_client *cl = r->client;
    if (r->st != NULL && r->st->head) { /* the body of a streamed response is complete */
        if (!tc__creq_wind_up(r))
            tc__stream_end(r, 0, NULL);
        return;
    }
    char *buf = tc__buf_cstr(&r->out);
    r->resp.status = status;
    r->resp.http_version = http_version;
    r->resp.headers = buf;
    r->resp.headers_len = body_off > 0 ? body_off - 1 : 0;
    r->resp.body = buf + body_off;
    r->resp.body_len = r->out.len - body_off;
    r->resp.queued_ms = ns_to_ms(r->admit_ns - r->start_ns);
    r->resp.total_ms = ns_to_ms(uv_hrtime() - r->start_ns);
    if (http_version == 20)
        r->origin->multiplex = 1;
    tc_future *f = creq_finish(r);
    /* fires hedge.c on_hedge_attempt_done, or cmd_serve_metadata.c on_meta_response */
    if (tc_future_fulfill(f, &r->resp, tc__creq_response_free) == TC_ECANCELED)
        cl->stats.cancelled++; /* cancelled by a callback run from pump_queue; r is freed */
    else
        cl->stats.completed++;
    tc_future_unref(f);
}

/* The future was cancelled: abort at once and free everything. Runs inside tc_future_cancel. */
static void req_cancel_hook(tc_future *f, void *data)
{
    tc__creq *r = data;
    tc_client *cl = r->client;
    detach(r);
    retire(r);
    r->future = NULL;
    cl->stats.cancelled++;
    creq_free(r);
    tc_future_unref(f);
    pump_queue(cl);
}

/* Puts r on the wire now. Returns 0, or an error after which r is unchanged (TC__REQ_NEW). */
static int creq_admit(tc__creq *r)
{
    tc_client *cl = r->client;
    r->state = TC__REQ_RUNNING;
    tc__list_push_back(&cl->running, &r->link);
    if (!r->origin->multiplex) {
        r->holds_slot = 1;
        cl->slots_used++;
        r->origin->slots++;
    }
    r->admit_ns = uv_hrtime();
    int err = 0;
    if (r->queue_free)
        err = deadline_set(cl, r, tc__now_ms());
    if (err == 0) /* the engine: client_native.c, or client_curl.c (https, --http-engine curl) */
        err = r->engine == TC__ENGINE_NATIVE ? tc__native_start(r) : tc__curl_start(r);
    if (err != 0)
        detach(r); /* the engine left r alone: its abort finds nothing to abort */
    return err;
}

/* Admits queued requests, oldest first, while connection slots allow. A request whose origin is
 * at its per-host cap is skipped (it keeps its place); others behind it may go. Never runs
 * nested: a request that fails to start is reported from here, and what its callbacks change
 * (a finished request pumps again) only asks this loop to go round once more. */
static void pump_queue(tc_client *cl)
{
    if (cl->pumping) {
        cl->pump_again = 1;
        return;
    }
    cl->pumping = 1;
    do {
        cl->pump_again = 0;
        for (tc__link *l = cl->queue.next; l != &cl->queue && !cl->closing;) {
            if (cl->slots_used >= cl->cfg.max_connections)
                break; /* nothing without a slot can go until one frees */
            tc__creq *r = tc__container_of(l, tc__creq, link);
            /* A request that failed was unlinked before it was freed, and the loop then breaks
             * and reads the queue afresh: l is never a freed node. */
            // NOLINTNEXTLINE(clang-analyzer-unix.Malloc)
            l = l->next;
            if (!can_admit(cl, r->origin))
                continue;
            if (r->timeout.idx != TC__HEAP_NONE &&
                r->timeout.key <= tc__now_ms() + TC__CLIENT_ADMIT_MIN_MS)
                continue; /* (nearly) expired: the deadline timer fails it next */
            tc__list_remove(&r->link);
            r->state = TC__REQ_NEW;
            int err = creq_admit(r);
            if (err != 0) {
                /* Its callbacks may change the queue: read it afresh. */
                tc__creq_fail(r, err, NULL);
                cl->pump_again = 1;
                break;
            }
        }
    } while (cl->pump_again && !cl->closing);
    cl->pumping = 0;
}

/* The deadline timer: every request whose deadline has come fails with TC_ETIMEDOUT, wherever
 * it is (queued, connecting, mid-body). */
static void on_client_deadline(uv_timer_t *t)
{
    tc_client *cl = tc__container_of(t, tc_client, deadline_timer);
    uint64_t now = tc__now_ms();
    tc__heap_node *node;
    /* tc__creq_fail() takes r off the heap (detach) before freeing it: the head is always a
     * live request. */
    while (!cl->closing && (node = tc__heap_min(&cl->deadlines)) != NULL && node->key <= now) {
        tc__creq *r = tc__container_of(node, tc__creq, timeout);
        if (r->st != NULL && r->st->head) { /* a streamed body: its idle timeout */
            if (!tc__stream_deadline(r, now)) {
                char msg[160];
                (void)snprintf(msg, sizeof(msg), "%s: no body byte within %llu ms",
                               tc_strerror(TC_ETIMEDOUT), (unsigned long long)r->st->idle_ms);
                tc__creq_fail(r, TC_ETIMEDOUT, msg);
            }
            continue;
        }
        char msg[160];
        (void)snprintf(msg, sizeof(msg), "%s: no response within %llu ms%s",
                       tc_strerror(TC_ETIMEDOUT), (unsigned long long)r->timeout_ms,
                       r->state == TC__REQ_QUEUED ? " (still queued for a connection)" : "");
        tc__creq_fail(r, TC_ETIMEDOUT, msg);
    }
    deadline_rearm(cl);
}

/* ---- public API ----------------------------------------------------------------------------- */

void tc__client_handle_closed(tc_client *cl)
{
    cl->open_handles--;
    client_maybe_finish_close(cl);
}

static void on_client_handle_closed(uv_handle_t *h)
{
    tc__client_handle_closed(h->data);
}

static void on_client_kick(uv_idle_t *h)
{
    tc_client *cl = h->data;
    tc__stream_on_kick(cl);
    tc__client_kick_settle(cl);
}

void tc__client_kick_settle(tc_client *cl)
{
    if (tc__list_empty(&cl->kicked) && tc__list_empty(&cl->kicked_bodies))
        uv_idle_stop(&cl->kick);
}

void tc__client_kick_start(tc_client *cl)
{
    if (!cl->closing)
        (void)uv_idle_start(&cl->kick, on_client_kick); /* cannot fail: the handle is ours */
}

int tc_client_new(tc_client **out, uv_loop_t *loop, const tc_client_config *cfg)
{
    if (out == NULL || loop == NULL)
        return TC_EINVAL;
    *out = NULL;
    tc_client *cl = tc__calloc(1, sizeof(*cl));
    if (cl == NULL)
        return TC_ENOMEM;
    if (cfg != NULL)
        cl->cfg = *cfg;
    else
        tc_client_config_init(&cl->cfg);
    if (cl->cfg.max_connections == 0)
        cl->cfg.max_connections = TC_CLIENT_DEFAULT_MAX_CONNECTIONS;
    if (cl->cfg.max_body == 0)
        cl->cfg.max_body = (size_t)TC_CLIENT_DEFAULT_MAX_BODY;
    if (cl->cfg.max_connections > LONG_MAX || cl->cfg.max_per_host > LONG_MAX ||
        cl->cfg.connect_timeout_ms > LONG_MAX || cl->cfg.engine < TC_CLIENT_ENGINE_AUTO ||
        cl->cfg.engine > TC_CLIENT_ENGINE_CURL) {
        tc__free(cl);
        return TC_EINVAL;
    }
    cl->loop = loop;
    tc__list_init(&cl->queue);
    tc__list_init(&cl->running);
    tc__list_init(&cl->streams);
    tc__list_init(&cl->bodies);
    tc__list_init(&cl->kicked);
    tc__list_init(&cl->kicked_bodies);
    tc__heap_init(&cl->deadlines);
    tc__table_init(&cl->origins);
    if (cl->cfg.ca_file != NULL) {
        cl->ca_file = tc__strdup(cl->cfg.ca_file);
        if (cl->ca_file == NULL) {
            tc__free(cl);
            return TC_ENOMEM;
        }
    }
    cl->cfg.ca_file = cl->ca_file;
    if (uv_timer_init(loop, &cl->deadline_timer) != 0) {
        tc__free(cl->ca_file);
        tc__free(cl);
        return TC_EIO;
    }
    cl->deadline_timer.data = cl;
    cl->open_handles++;
    (void)uv_idle_init(loop, &cl->kick); /* cannot fail */
    cl->kick.data = cl;
    cl->open_handles++;
    *out = cl;
    return 0;
}

/* A header name is an RFC 9110 token; a value holds no CR, LF (or NUL: it is a C string). */
static int header_ok(const char *s, int is_name)
{
    if (s == NULL)
        return 0;
    /* a value is a C string, so no NUL inside: one pass finds its end or a CR or LF */
    return is_name ? tc__header_name_ok(s, strlen(s)) : s[strcspn(s, "\r\n")] == '\0';
}

/* A method is a token too. */
static int method_ok(const char *m)
{
    return tc__header_name_ok(m, strlen(m));
}

/* The canonical text of a numeric IPv4 or IPv6 address (an IPv6 one may come in brackets; no
 * zone) into buf (TC__CLIENT_ADDR_TEXT bytes), so that one address is one pool however it was
 * written. Returns 0 or TC_EINVAL. */
static int address_canonical(const char *s, char *buf)
{
    char tmp[TC__CLIENT_ADDR_TEXT];
    unsigned char bin[16];
    size_t n = strlen(s);
    if (n >= 2 && s[0] == '[' && s[n - 1] == ']') {
        s++;
        n -= 2;
    }
    if (n == 0 || n >= sizeof(tmp) || memchr(s, '%', n) != NULL)
        return TC_EINVAL;
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    if (uv_inet_pton(AF_INET, tmp, bin) == 0)
        return uv_inet_ntop(AF_INET, bin, buf, TC__CLIENT_ADDR_TEXT) == 0 ? 0 : TC_EINVAL;
    if (uv_inet_pton(AF_INET6, tmp, bin) == 0)
        return uv_inet_ntop(AF_INET6, bin, buf, TC__CLIENT_ADDR_TEXT) == 0 ? 0 : TC_EINVAL;
    return TC_EINVAL;
}

static void url_cache_clear(tc__url_cache *uc)
{
    tc__free(uc->url);
    tc__free(uc->target);
    tc__free(uc->host);
    memset(uc, 0, sizeof(*uc));
}

/* The entry of url through connect_to, or NULL. The entry used last is looked at first: most
 * clients send to one URL, or to a few in turn. */
static tc__url_cache *url_cache_find(tc_client *cl, const char *url, const char *connect_to)
{
    for (unsigned k = 0; k < TC__CLIENT_URL_CACHE; k++) {
        unsigned i = (cl->url_cache_last + k) % TC__CLIENT_URL_CACHE;
        tc__url_cache *uc = &cl->url_cache[i];
        if (uc->url != NULL && strcmp(uc->url, url) == 0 &&
            strcmp(uc->connect_to, connect_to ? connect_to : "") == 0) {
            cl->url_cache_last = i;
            return uc;
        }
    }
    return NULL;
}

/* The entry a new URL takes: an empty one, else the one used longest ago (emptied). */
static tc__url_cache *url_cache_victim(tc_client *cl)
{
    tc__url_cache *oldest = &cl->url_cache[0];
    for (unsigned i = 0; i < TC__CLIENT_URL_CACHE && oldest->url != NULL; i++)
        if (cl->url_cache[i].url == NULL || cl->url_cache[i].used < oldest->used)
            oldest = &cl->url_cache[i];
    url_cache_clear(oldest);
    cl->url_cache_last = (unsigned)(oldest - cl->url_cache);
    return oldest;
}

/* Parses url into uc: the origin key, scheme, request target and Host value (libcurl's own URL
 * parser, so both engines see the same URL). Returns 0 or TC_EURL (with *why) or TC_ENOMEM,
 * uc then left empty. */
static int url_parse(tc__url_cache *uc, const char *url, const char **why)
{
    int https = 0;
    int err = tc_url_origin(url, uc->key, TC__CLIENT_MAX_HOST_KEY, &https, why);
    if (err != 0)
        return err == TC_ENOMEM ? TC_ENOMEM : TC_EURL;
    CURLU *cu = curl_url();
    if (cu == NULL)
        return TC_ENOMEM;
    char *path = NULL, *query = NULL, *host = NULL, *port = NULL, *user = NULL;
    /* tc_url_origin() has accepted the URL with the same parser: what is left to fail is memory
     * (a query and a port are there only when the URL names them). */
    err = TC_ENOMEM;
    if (curl_url_set(cu, CURLUPART_URL, url, 0) != CURLUE_OK ||
        curl_url_get(cu, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
        curl_url_get(cu, CURLUPART_PATH, &path, 0) != CURLUE_OK ||
        curl_url_get(cu, CURLUPART_QUERY, &query, 0) == CURLUE_OUT_OF_MEMORY ||
        curl_url_get(cu, CURLUPART_PORT, &port, 0) == CURLUE_OUT_OF_MEMORY ||
        curl_url_get(cu, CURLUPART_USER, &user, 0) == CURLUE_OUT_OF_MEMORY)
        goto done;
    size_t tlen = strlen(path) + (query ? strlen(query) + 1 : 0) + 2;
    size_t hlen = strlen(host) + (port ? strlen(port) + 1 : 0) + 1;
    uc->target = tc__malloc(tlen);
    uc->host = tc__malloc(hlen);
    uc->url = tc__strdup(url);
    if (uc->target == NULL || uc->host == NULL || uc->url == NULL) {
        url_cache_clear(uc);
        goto done;
    }
    (void)snprintf(uc->target, tlen, "%s%s%s%s", path[0] == '/' ? "" : "/", path, query ? "?" : "",
                   query ? query : "");
    int default_port = port != NULL && strcmp(port, https ? "443" : "80") == 0;
    (void)snprintf(uc->host, hlen, "%s%s%s", host, port && !default_port ? ":" : "",
                   port && !default_port ? port : "");
    uc->https = https;
    uc->userinfo = user != NULL;
    err = 0;
done:
    curl_free(path);
    curl_free(query);
    curl_free(host);
    curl_free(port);
    curl_free(user);
    curl_url_cleanup(cu);
    return err;
}

/* The parts of url reached through connect_to (NULL: its own host), from the cache or parsed
 * afresh. Returns 0, TC_EINVAL (connect_to is not a numeric address), TC_EURL (with *why),
 * TC_ENOMEM. */
static int url_parts(tc_client *cl, const char *url, const char *connect_to,
                     const tc__url_cache **out, const char **why)
{
    tc__url_cache *uc = url_cache_find(cl, url, connect_to);
    if (uc == NULL) {
        char addr[TC__CLIENT_ADDR_TEXT] = "";
        if (connect_to != NULL && (strlen(connect_to) >= sizeof(uc->connect_to) ||
                                   address_canonical(connect_to, addr) != 0))
            return TC_EINVAL;
        uc = url_cache_victim(cl);
        int err = url_parse(uc, url, why);
        if (err != 0)
            return err;
        if (connect_to != NULL) {
            memcpy(uc->connect_to, connect_to, strlen(connect_to) + 1);
            memcpy(uc->addr, addr, sizeof(addr));
            size_t klen = strlen(uc->key);
            (void)snprintf(uc->key + klen, sizeof(uc->key) - klen, " %s", addr);
        }
    }
    uc->used = ++cl->url_cache_clock;
    *out = uc;
    return 0;
}

int tc_client_request_start(tc_future **out, tc_client *cl, const tc_client_request *req)
{
    if (out == NULL || cl == NULL || req == NULL || req->url == NULL)
        return TC_EINVAL;
    *out = NULL;
    if (cl->closing)
        return TC_ECLOSED;
    const char *method = req->method ? req->method : "GET";
    if (!method_ok(method) || (req->nheaders > 0 && req->headers == NULL) ||
        (req->body == NULL && req->body_len > 0) || (req->body_source != NULL && req->body != NULL))
        return TC_EINVAL;
    for (size_t i = 0; i < req->nheaders; i++)
        if (!header_ok(req->headers[i].name, 1) || !header_ok(req->headers[i].value, 0))
            return TC_EINVAL;
    size_t url_len = strlen(req->url), method_len = strlen(method);
    size_t body_len = req->body ? req->body_len : 0;
    if (url_len > SIZE_MAX / 8 || body_len > SIZE_MAX / 8)
        return TC_EINVAL;

    tc_future *f = NULL;
    int err = tc_future_new(&f);
    if (err != 0)
        return err;

    const tc__url_cache *uc = NULL;
    const char *why = NULL;
    err = url_parts(cl, req->url, req->connect_to, &uc, &why);
    if (err == TC_ENOMEM || err == TC_EINVAL) {
        tc_future_unref(f);
        return err;
    }
    if (err != 0) {
        char msg[200];
        (void)snprintf(msg, sizeof(msg), "%s: %s", tc_strerror(TC_EURL), why);
        cl->stats.started++;
        cl->stats.failed++;
        tc_future_reject(f, TC_EURL, msg);
        *out = f;
        return 0;
    }
    /* What the native engine does not do goes to libcurl, explicitly: TLS, redirects, credentials
     * in the URL (Basic authentication), and bodies too large for one libuv buffer. */
    size_t addr_len = uc->addr[0] != '\0' ? strlen(uc->addr) + 1 : 0;
    int native = !uc->https && !uc->userinfo && cl->cfg.engine != TC_CLIENT_ENGINE_CURL &&
                 !cl->cfg.follow_redirects && body_len <= TC__CLIENT_NATIVE_MAX_REQUEST_BODY;
    char head[TC__NATIVE_HEAD_SCRATCH];
    size_t head_size = native ? tc__native_head_try(req, method, uc, head, sizeof(head)) : 0;

    tc__creq *r =
        tc__malloc(sizeof(*r) + url_len + 1 + method_len + 1 + body_len + 1 + addr_len + head_size);
    if (r == NULL) {
        tc_future_unref(f);
        return TC_ENOMEM;
    }
    memset(r, 0, sizeof(*r));
    char *p = r->strings;
    memcpy(p, req->url, url_len + 1);
    r->url = p;
    p += url_len + 1;
    memcpy(p, method, method_len + 1);
    r->method = p;
    p += method_len + 1;
    if (req->body != NULL) {
        memcpy(p, req->body, body_len);
        p[body_len] = '\0';
        r->body = p;
        r->body_len = body_len;
    }
    p += body_len + 1;
    if (addr_len > 0) {
        memcpy(p, uc->addr, addr_len);
        r->connect_to = p;
        p += addr_len;
    }
    r->client = cl;
    r->engine = native ? TC__ENGINE_NATIVE : TC__ENGINE_CURL;
    r->https = uc->https;
    /* A body the caller streams is gone once sent: such a request cannot be sent again. */
    r->resend_stale = req->resend_stale != 0 && req->body_source == NULL &&
                      (strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0);
    r->queue_free = req->timeout_from_admit != 0;
    r->no_default_headers = req->no_default_headers != 0;
    r->req_headers = req->headers;
    r->req_nheaders = req->nheaders;
    tc__heap_node_init(&r->timeout);
    tc__buf_init(&r->out, r->inline_buf, sizeof(r->inline_buf), SIZE_MAX / 2);
    r->max_body = req->max_body ? req->max_body : cl->cfg.max_body;
    r->timeout_ms = req->timeout_ms ? req->timeout_ms : cl->cfg.timeout_ms;
    r->start_ns = uv_hrtime();
    tc__list_init(&r->link);
    if (req->stream_response || req->body_source != NULL)
        err = tc__stream_prepare(r, req);
    if (err == 0 && native) {
        r->head = p;
        if (head_size <= sizeof(head))
            memcpy(p, head, head_size);
        else
            tc__native_head_build(req, method, uc, p);
        r->head_len = head_size;
    } else if (err == 0) {
        err = tc__curl_prepare(r);
    }
    r->req_headers = NULL; /* the caller's array is not ours to keep */
    r->req_nheaders = 0;
    if (err == 0) {
        int created = 0;
        r->origin =
            (tc__origin *)tc__table_ref(&cl->origins, uc->key, sizeof(tc__origin), &created);
        if (r->origin == NULL) {
            err = TC_ENOMEM;
        } else if (created) {
            tc__list_init(&r->origin->idle);
            tc__list_init(&r->origin->resolving);
        }
    }
    /* From the real clock, not uv_now(): the loop's cached time can be milliseconds stale late
     * in a loop iteration, which would make the request expire early. */
    if (err == 0 && !r->queue_free)
        err = deadline_set(cl, r, tc__now_ms());
    if (err != 0) {
        if (r->engine == TC__ENGINE_CURL)
            tc__curl_release(r);
        if (r->st != NULL)
            tc__stream_unprepare(r);
        tc__origin_unref(cl, r->origin);
        creq_free(r);
        tc_future_unref(f);
        return err;
    }

    r->future = tc_future_ref(f); /* the producer's reference */
    /* run by tc_future_cancel(f): the hedge's hedge_wind_down, or a caller giving up */
    tc_future_set_cancel_hook(f, req_cancel_hook, r);
    cl->stats.started++;
    cl->stats.in_flight++;
    *out = f;

    if (can_admit(cl, r->origin)) {
        err = creq_admit(r);
        if (err != 0)
            tc__creq_fail(r, err, NULL);
    } else {
        r->state = TC__REQ_QUEUED;
        tc__list_push_back(&cl->queue, &r->link);
        cl->stats.queued++;
    }
    return 0;
}

int tc_client_get(tc_future **out, tc_client *client, const char *url)
{
    tc_client_request req;
    memset(&req, 0, sizeof(req));
    req.url = url;
    return tc_client_request_start(out, client, &req);
}

void tc_client_get_stats(const tc_client *client, tc_client_stats *out)
{
    if (out == NULL)
        return;
    if (client == NULL) {
        memset(out, 0, sizeof(*out));
        return;
    }
    *out = client->stats;
}

long tc_response_header(const tc_response *resp, const char *name, char *buf, size_t buflen)
{
    if (resp == NULL || resp->headers == NULL || name == NULL)
        return TC_RESPONSE_HEADER_ABSENT;
    size_t nlen = strlen(name);
    const char *p = resp->headers, *end = resp->headers + resp->headers_len;
    const char *eol = memchr(p, '\n', (size_t)(end - p)); /* skip the status line */
    p = eol ? eol + 1 : end;
    while (p < end) {
        eol = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = eol ? eol : end;
        if ((size_t)(line_end - p) > nlen && p[nlen] == ':' && strncasecmp(p, name, nlen) == 0) {
            const char *v = p + nlen + 1, *ve = line_end;
            while (v < ve && (*v == ' ' || *v == '\t'))
                v++;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            size_t vlen = (size_t)(ve - v);
            if (buf != NULL && buflen > 0) {
                size_t n = vlen < buflen - 1 ? vlen : buflen - 1;
                memcpy(buf, v, n);
                buf[n] = '\0';
            }
            return (long)vlen;
        }
        p = eol ? eol + 1 : end;
    }
    return TC_RESPONSE_HEADER_ABSENT;
}

int tc_client_retire_origin(tc_client *cl, const char *url, const char *connect_to)
{
    if (cl == NULL || url == NULL)
        return TC_EINVAL;
    const tc__url_cache *uc = NULL;
    const char *why = NULL;
    int err = url_parts(cl, url, connect_to, &uc, &why);
    if (err != 0)
        return err;
    tc__origin *o = (tc__origin *)tc__table_find(&cl->origins, uc->key);
    if (o == NULL)
        return 0; /* nothing of it is left */
    o->gen++;
    if (cl->native != NULL)
        tc__native_retire(cl, o);
    if (cl->curl != NULL)
        tc__curl_retire(cl, o);
    return 0;
}

uv_loop_t *tc_client_loop(const tc_client *client)
{
    return client->loop;
}

/* ---- closing -------------------------------------------------------------------------------- */

static void client_maybe_finish_close(tc_client *cl)
{
    if (!cl->closing || cl->open_handles > 0 || cl->native != NULL || cl->curl != NULL)
        return;
    if (cl->close_cb != NULL)
        cl->close_cb(cl, cl->close_data);
    tc__heap_free(&cl->deadlines);
    tc__table_free(&cl->origins);
    for (unsigned i = 0; i < TC__CLIENT_URL_CACHE; i++)
        url_cache_clear(&cl->url_cache[i]);
    tc__free(cl->ca_file);
    tc__free(cl);
}

void tc_client_close(tc_client *cl, tc_client_close_cb close_cb, void *data)
{
    if (cl == NULL || cl->closing)
        return;
    cl->close_cb = close_cb;
    cl->close_data = data;
    /* Cancel everything while the engines are alive; pump_queue admits nothing once closing. */
    cl->closing = 1;
    /* Streamed bodies first: their futures are done, their readers are told TC_ECANCELED. */
    while (!tc__list_empty(&cl->streams))
        tc__stream_close(tc__container_of(cl->streams.next, tc__stream, slink)->r);
    tc__link *lists[2] = {&cl->queue, &cl->running};
    for (int i = 0; i < 2; i++) {
        while (!tc__list_empty(lists[i])) {
            tc__creq *r = tc__container_of(lists[i]->next, tc__creq, link);
            /* Both branches unlink r before freeing it (the cancel hook or detach()), so the list
             * head is always live. */
            // NOLINTNEXTLINE(clang-analyzer-unix.Malloc)
            tc_future *f = r->future;
            if (!tc_future_cancel(f)) {
                /* Cannot happen (completion detaches first); never spin on it. */
                detach(r);
                retire(r);
                r->future = NULL;
                creq_free(r);
                tc_future_unref(f);
            }
        }
    }
    cl->open_handles++; /* held while the engines close, so that none finishes the close early */
    if (cl->native != NULL)
        tc__native_close(cl);
    if (cl->curl != NULL)
        tc__curl_close(cl);
    tc__stream_close_bodies(cl);
    uv_timer_stop(&cl->deadline_timer);
    uv_close((uv_handle_t *)&cl->deadline_timer, on_client_handle_closed);
    uv_idle_stop(&cl->kick);
    uv_close((uv_handle_t *)&cl->kick, on_client_handle_closed);
    tc__client_handle_closed(cl);
}
