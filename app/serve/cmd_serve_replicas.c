/*
 * tailcut serve: the replicas of each upstream (CONTRACT section 7). A route has one
 * tc_replica_set for its --upstream URLs and one for its --metadata-upstream URLs, shared by
 * every worker; the set chooses the replica of every attempt and hears how each ended
 * (src/policy/replica.c), and this file aims each attempt at its replica and reports the sets to
 * the operator (/metrics, /dashboard/stats).
 *
 * The one idea: a request is built once, for the route's first URL (cmd_serve_forward.c), and the
 * hedge copies it once; the prepare hook only changes what differs for the replica chosen. A
 * replica of the first URL (every discovered address of it too) keeps the request's URL and gets
 * its connect_to address; a replica with a URL of its own gets that URL with the client's query
 * merged in, built the first time the request needs it and reused by its later attempts.
 *
 * Lifetimes: a replica's data (serve_replica) is shared and reference counted. The set holds one
 * reference and drops it when it is done with the replica (removed, last attempt reported); when
 * the access log names replicas, each request holds one per attempt it sent there, until it
 * ends, because the log line names the winner's replica after the set may have let it go.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "base/clock.h"
#include "base/hash.h"
#include "base/json_write.h"
#include "cmd_serve.h"

/* ---- one replica ---------------------------------------------------------------------------- */

void serve_replica_ref(serve_replica *rep)
{
    atomic_fetch_add_explicit(&rep->refs, 1, memory_order_relaxed);
}

void serve_replica_unref(void *data)
{
    serve_replica *rep = data;
    if (rep != NULL && atomic_fetch_sub_explicit(&rep->refs, 1, memory_order_acq_rel) == 1)
        free(rep);
}

int serve_replica_label(const char *url, const char *connect_to, char *out, size_t cap)
{
    int https = 0;
    const char *why = NULL;
    char origin[TC_REPLICA_LABEL_MAX + 1];
    if (tc_url_origin(url, origin, sizeof(origin), &https, &why) != 0) {
        /* Not a URL libcurl reads (its attempts fail as connect errors): named by what stands
         * before its path, without userinfo (the redacted form says "***@" for it). */
        char redacted[TC_REPLICA_LABEL_MAX + 1];
        tc__url_redact(url, redacted, sizeof(redacted));
        char *host = strstr(redacted, "://");
        size_t scheme = host != NULL ? (size_t)(host - redacted) : 0;
        host = host != NULL ? host + 3 : redacted;
        if (strncmp(host, "***@", 4) == 0)
            host += 4;
        (void)snprintf(out, cap, "%.*s://%.*s", (int)scheme, redacted, (int)strcspn(host, "/?#"),
                       host);
        return 0;
    }
    if (connect_to == NULL) {
        (void)snprintf(out, cap, "%s", origin);
        return 0;
    }
    /* scheme://ADDRESS:port: the origin's port after its last ':' */
    const char *colon = strrchr(origin, ':');
    int v6 = strchr(connect_to, ':') != NULL;
    int n = snprintf(out, cap, "%s://%s%s%s%s", https ? "https" : "http", v6 ? "[" : "", connect_to,
                     v6 ? "]" : "", colon != NULL ? colon : "");
    return n > 0 && (size_t)n < cap ? 0 : TC_ETOOLARGE;
}

int serve_replica_new(serve_replica **out, unsigned url_index, const char *url,
                      const char *connect_to)
{
    char label[TC_REPLICA_LABEL_MAX + 1];
    int err = serve_replica_label(url, connect_to, label, sizeof(label));
    if (err != 0)
        return err;
    size_t ulen = strlen(url) + 1, alen = connect_to != NULL ? strlen(connect_to) + 1 : 0,
           llen = strlen(label) + 1;
    serve_replica *rep = malloc(sizeof(*rep) + ulen + alen + llen);
    if (rep == NULL)
        return TC_ENOMEM;
    char *p = (char *)(rep + 1);
    atomic_init(&rep->refs, 1);
    rep->url_index = url_index;
    rep->url = memcpy(p, url, ulen);
    p += ulen;
    rep->connect_to = alen > 0 ? memcpy(p, connect_to, alen) : NULL;
    p += alen;
    rep->label = memcpy(p, label, llen);
    *out = rep;
    return 0;
}

/* ---- the sets ------------------------------------------------------------------------------- */

/* The dashboard's attempts/s and success ratio: once a second (worker 0's tick) the set's
 * counters are sampled; a snapshot reports what happened between the last two samples, so every
 * snapshot taken in one second shows the same figures, as the dashboard's other "last second"
 * figures do. A sample keeps each replica's counters by id, with its label's hash (a removed
 * replica's id may go to a new one). */
typedef struct rate_sample {
    uint64_t sec; /* the second it was taken in, + 1; 0: none */
    uint64_t at_ms;
    uint32_t label_hash[TC_REPLICA_MAX]; /* 0: no replica of that id */
    uint64_t attempts[TC_REPLICA_MAX], successes[TC_REPLICA_MAX], failures[TC_REPLICA_MAX];
} rate_sample;

struct serve_rates {
    uv_mutex_t lock;
    rate_sample prev, cur;
    tc_replica_info *scratch; /* the tick's snapshot (one thread: worker 0's) */
};

static int replicas_new(serve_replicas **out, const char *name, const settings_list *urls,
                        const serve_route *route)
{
    serve_replicas *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return TC_ENOMEM;
    r->name = name;
    r->urls = urls;
    atomic_init(&r->dns_failures, 0);
    tc_replica_config rc;
    tc_replica_config_init(&rc);
    rc.eject_failures = route->eject_failures;
    rc.eject_latency_factor = route->eject_latency_factor;
    rc.max_ejected_pct = route->max_ejected_pct;
    rc.seed = uv_hrtime(); /* the draws need not repeat from one run to the next */
    rc.release = serve_replica_unref;
    int err = tc_replica_set_new(&r->set, &rc);
    if (err == 0) {
        r->rates = calloc(1, sizeof(*r->rates));
        if (r->rates != NULL)
            r->rates->scratch = malloc(TC_REPLICA_MAX * sizeof(*r->rates->scratch));
        if (r->rates == NULL || r->rates->scratch == NULL || uv_mutex_init(&r->rates->lock) != 0) {
            if (r->rates != NULL)
                free(r->rates->scratch);
            free(r->rates);
            r->rates = NULL;
            err = TC_ENOMEM;
        }
    }
    /* Each URL is a replica, but a name that discovery resolves: its addresses are added by
     * cmd_serve_discovery.c as they come. */
    for (size_t i = 0; err == 0 && i < urls->n; i++) {
        if (route->discovery == SERVE_DISCOVERY_DNS && serve_url_needs_resolving(urls->v[i]))
            continue;
        serve_replica *rep = NULL;
        unsigned id;
        err = serve_replica_new(&rep, (unsigned)i, urls->v[i], NULL);
        if (err == 0 && (err = tc_replica_add(r->set, rep->label, rep, &id)) != 0)
            serve_replica_unref(rep);
    }
    *out = r;
    return err;
}

static void replicas_free(serve_replicas *r)
{
    if (r == NULL)
        return;
    tc_replica_set_free(r->set);
    if (r->rates != NULL) {
        uv_mutex_destroy(&r->rates->lock);
        free(r->rates->scratch);
    }
    free(r->rates);
    free(r);
}

int serve_replicas_start(serve_route *route)
{
    const settings_list *lists[2] = {&route->upstreams, &route->metadata_upstreams};
    route->url_max = 0;
    for (int k = 0; k < 2; k++)
        for (size_t i = 0; i < lists[k]->n; i++)
            if (strlen(lists[k]->v[i]) > route->url_max)
                route->url_max = strlen(lists[k]->v[i]);
    int err = replicas_new(&route->replicas, "upstream", &route->upstreams, route);
    if (err == 0 && route->metadata_upstreams.n > 0)
        err =
            replicas_new(&route->metadata_replicas, "metadata", &route->metadata_upstreams, route);
    return err;
}

void serve_replicas_free(serve_route *route)
{
    replicas_free(route->replicas);
    replicas_free(route->metadata_replicas);
    route->replicas = route->metadata_replicas = NULL;
}

/* ---- aiming an attempt ---------------------------------------------------------------------- */

/* The URL of rep for call's request: its own URL with the client's query merged (the forwarding
 * rules of cmd_serve_forward.c), built once per URL per request. NULL on TC_ENOMEM or
 * TC_ETOOLARGE (in *err). */
static const char *call_url(serve_call *call, const serve_replica *rep, int *err)
{
    for (unsigned i = 0; i < call->nbuilt; i++)
        if (call->built[i].url_index == rep->url_index)
            return call->built[i].at == SIZE_MAX ? rep->url : call->urls.data + call->built[i].at;
    if (call->nbuilt == TC_HEDGE_MAX_ATTEMPTS) {
        *err = TC_ENOMEM; /* never: a request has at most that many attempts */
        return NULL;
    }
    tc_str query = tc_request_query(call->req);
    size_t at = call->urls.len, where = SIZE_MAX; /* SIZE_MAX: the replica's URL as it is */
    long added = query.len > 0 ? tc__forward_url(&call->urls, rep->url, query.base, query.len) : 0;
    if (added == 0)
        call->urls.len = at; /* nothing forwarded: the URL as configured will do */
    else if (added > 0)
        added = tc__buf_append(&call->urls, "", 1); /* its NUL: the next URL follows */
    if (added < 0) {
        call->urls.len = at;
        *err = (int)added;
        return NULL;
    }
    if (call->urls.len > at)
        where = at;
    call->built[call->nbuilt].url_index = rep->url_index;
    call->built[call->nbuilt++].at = where;
    return where == SIZE_MAX ? rep->url : call->urls.data + where;
}

int serve_attempt_prepare(void *data, unsigned id, void *replica_data, tc_client_request *req)
{
    serve_call *call = data;
    serve_replica *rep = replica_data;
    (void)id;
    if (call->sw->cfg->log_replica && call->nsent < TC_HEDGE_MAX_ATTEMPTS) {
        serve_replica_ref(rep); /* the access log may name it after the set let it go */
        call->sent[call->nsent++] = rep;
    }
    req->connect_to = rep->connect_to;
    if (rep->url_index == 0)
        return 0; /* the request was built for the first URL: req->url is its URL already */
    int err = 0;
    const char *url = call_url(call, rep, &err);
    if (url == NULL)
        return err;
    req->url = url;
    return 0;
}

const char *serve_call_replica(const serve_call *call, const tc_hedge_result *r)
{
    int answered = r->winner >= 0 ? r->winner : r->nsuccesses > 0 ? (int)r->successes[0] : -1;
    if (answered < 0 || r->attempts[answered].replica < 0)
        return NULL;
    /* The prepare hook ran once for each attempt that got a replica, in firing order. */
    unsigned k = 0;
    for (int i = 0; i < answered; i++)
        k += r->attempts[i].replica >= 0;
    return k < call->nsent ? call->sent[k]->label : NULL;
}

void serve_call_release(serve_call *call)
{
    for (unsigned i = 0; i < call->nsent; i++)
        serve_replica_unref(call->sent[i]);
    call->nsent = 0;
    call->nbuilt = 0;
    tc__buf_reset(&call->urls);
}

/* ---- what the operator sees ----------------------------------------------------------------- */

/* Every replica of a set, read at once (NULL on TC_ENOMEM). */
static tc_replica_info *snapshot(const serve_replicas *r, size_t *n, tc_replica_totals *totals)
{
    tc_replica_info *info = malloc(TC_REPLICA_MAX * sizeof(*info));
    if (info == NULL)
        return NULL;
    *n = tc_replica_snapshot(r->set, tc__now_ms(), info, TC_REPLICA_MAX, totals);
    if (*n > TC_REPLICA_MAX)
        *n = TC_REPLICA_MAX;
    return info;
}

typedef struct text {
    tc__buf *b;
    int err;
} text;

static void add(text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void add(text *t, const char *fmt, ...)
{
    char line[2 * TC_REPLICA_LABEL_MAX + 256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (t->err == 0)
        t->err = n < 0 || (size_t)n >= sizeof(line) ? TC_ETOOLARGE
                                                    : tc__buf_append(t->b, line, (size_t)n);
}

/* A label as a Prometheus label value: '\', '"' and newlines escaped (labels are URL parts, which
 * hold none of these, but a bad URL's may). */
static const char *label_value(const char *label, char *out, size_t cap)
{
    size_t n = 0;
    for (const char *p = label; *p != '\0' && n + 3 < cap; p++) {
        if (*p == '\\' || *p == '"' || *p == '\n') {
            out[n++] = '\\';
            out[n++] = *p == '\n' ? 'n' : *p;
        } else {
            out[n++] = *p;
        }
    }
    out[n] = '\0';
    return out;
}

/* Two replicas with one label (one origin named by two URLs with different paths, or two names
 * resolving to one address) are one series: their counters and in-flight counts add up, their
 * latency is the higher average. Merges into info[0..*n) in place, keeping the first's place. */
static void merge_labels(tc_replica_info *info, size_t *n)
{
    size_t kept = 0;
    for (size_t i = 0; i < *n; i++) {
        size_t j = 0;
        while (j < kept && strcmp(info[j].label, info[i].label) != 0)
            j++;
        if (j == kept) {
            if (kept != i)
                info[kept] = info[i];
            kept++;
            continue;
        }
        for (int k = 0; k < TC_REPLICA_RESULT_COUNT; k++)
            info[j].attempts[k] += info[i].attempts[k];
        for (int k = 0; k < TC_REPLICA_REASON_COUNT; k++)
            info[j].ejections[k] += info[i].ejections[k];
        info[j].in_flight += info[i].in_flight;
        if (info[i].average_ms > info[j].average_ms)
            info[j].average_ms = info[i].average_ms;
    }
    *n = kept;
}

static const serve_replicas *route_set(const serve_route *route, int k)
{
    return k == 0 ? route->replicas : route->metadata_replicas;
}

/* The per-replica families: each one's series for replica x of set (lv: its label, escaped). */
static void series_attempts(text *t, const char *set, const char *lv, const tc_replica_info *x)
{
    for (int o = 0; o < TC_REPLICA_RESULT_COUNT; o++)
        add(t,
            "tailcut_upstream_replica_attempts_total{set=\"%s\",replica=\"%s\",outcome=\"%s\"} "
            "%llu\n",
            set, lv, tc_replica_result_name((tc_replica_result)o),
            (unsigned long long)x->attempts[o]);
}

static void series_ejections(text *t, const char *set, const char *lv, const tc_replica_info *x)
{
    for (int e = 0; e < TC_REPLICA_REASON_COUNT; e++)
        add(t,
            "tailcut_upstream_replica_ejections_total{set=\"%s\",replica=\"%s\",reason=\"%s\"} "
            "%llu\n",
            set, lv, tc_replica_reason_name((tc_replica_reason)e),
            (unsigned long long)x->ejections[e]);
}

static void series_latency(text *t, const char *set, const char *lv, const tc_replica_info *x)
{
    add(t, "tailcut_upstream_replica_latency_seconds{set=\"%s\",replica=\"%s\"} %.6f\n", set, lv,
        x->average_ms / 1000.0);
}

static void series_in_flight(text *t, const char *set, const char *lv, const tc_replica_info *x)
{
    add(t, "tailcut_upstream_replica_in_flight{set=\"%s\",replica=\"%s\"} %u\n", set, lv,
        x->in_flight);
}

static const struct replica_family {
    const char *head;
    void (*series)(text *t, const char *set, const char *lv, const tc_replica_info *x);
} replica_families[] = {
    {"# HELP tailcut_upstream_replica_attempts_total Attempts each replica got, by how they ended "
     "(cancelled: another won; not_sent: never left)\n"
     "# TYPE tailcut_upstream_replica_attempts_total counter\n",
     series_attempts},
    {"# HELP tailcut_upstream_replica_ejections_total Times each replica was ejected, by reason\n"
     "# TYPE tailcut_upstream_replica_ejections_total counter\n",
     series_ejections},
    {"# HELP tailcut_upstream_replica_latency_seconds Each replica's average attempt latency, the "
     "one its choice reads (peak-sensitive, 10 s time constant)\n"
     "# TYPE tailcut_upstream_replica_latency_seconds gauge\n",
     series_latency},
    {"# HELP tailcut_upstream_replica_in_flight Attempts in flight at each replica\n"
     "# TYPE tailcut_upstream_replica_in_flight gauge\n",
     series_in_flight},
};

/* A counter with one series per set (those read: info[k] != NULL); help is "name text". */
static void set_counter(text *t, const serve_route *route, tc_replica_info *const *info,
                        const char *help, const uint64_t *values)
{
    int name_len = (int)strcspn(help, " ");
    add(t, "# HELP %s\n# TYPE %.*s counter\n", help, name_len, help);
    for (int k = 0; k < 2; k++)
        if (info[k] != NULL)
            add(t, "%.*s{set=\"%s\"} %llu\n", name_len, help, route_set(route, k)->name,
                (unsigned long long)values[k]);
}

int serve_replicas_metrics(const serve_route *route, tc__buf *b)
{
    text t = {b, 0};
    tc_replica_info *info[2] = {NULL, NULL};
    tc_replica_totals totals[2];
    memset(totals, 0, sizeof(totals));
    size_t n[2] = {0, 0};
    for (int k = 0; k < 2; k++) {
        if (route_set(route, k) == NULL)
            continue;
        if ((info[k] = snapshot(route_set(route, k), &n[k], &totals[k])) == NULL)
            t.err = TC_ENOMEM;
        else
            merge_labels(info[k], &n[k]);
    }
    add(&t, "# HELP tailcut_upstream_replicas Replicas by state, per set\n"
            "# TYPE tailcut_upstream_replicas gauge\n");
    for (int k = 0; k < 2; k++)
        for (int s = 0; info[k] != NULL && s < TC_REPLICA_STATE_COUNT; s++)
            add(&t, "tailcut_upstream_replicas{set=\"%s\",state=\"%s\"} %zu\n",
                route_set(route, k)->name, tc_replica_state_name((tc_replica_state)s),
                totals[k].states[s]);
    char lv[2 * TC_REPLICA_LABEL_MAX + 1];
    for (size_t f = 0; f < sizeof(replica_families) / sizeof(replica_families[0]); f++) {
        add(&t, "%s", replica_families[f].head);
        for (int k = 0; k < 2; k++)
            for (size_t i = 0; i < n[k]; i++)
                replica_families[f].series(&t, route_set(route, k)->name,
                                           label_value(info[k][i].label, lv, sizeof(lv)),
                                           &info[k][i]);
    }
    uint64_t panics[2] = {0, 0}, dns[2] = {0, 0};
    for (int k = 0; k < 2; k++) {
        if (info[k] == NULL)
            continue;
        panics[k] = totals[k].panics;
        dns[k] = atomic_load(&route_set(route, k)->dns_failures);
    }
    set_counter(&t, route, info,
                "tailcut_upstream_panic_total Attempts sent while no replica was eligible (to an "
                "ejected one)",
                panics);
    set_counter(&t, route, info,
                "tailcut_dns_failures_total Resolutions of an upstream name that failed or came "
                "back empty (the last good replicas were kept)",
                dns);
    free(info[0]);
    free(info[1]);
    return t.err;
}

static uint64_t total_attempts(const tc_replica_info *info)
{
    uint64_t n = 0;
    for (int k = 0; k < TC_REPLICA_RESULT_COUNT; k++)
        n += info->attempts[k];
    return n;
}

static uint32_t label_hash(const char *label)
{
    return tc__fnv1a_str(TC__FNV1A_INIT, label) | 1; /* never 0: "none" */
}

/* Samples r's counters for second sec, unless it has a sample of that second already. */
static void rates_tick(serve_replicas *r, uint64_t sec)
{
    serve_rates *rt = r->rates;
    uv_mutex_lock(&rt->lock);
    int due = rt->cur.sec != sec + 1;
    uv_mutex_unlock(&rt->lock);
    if (!due)
        return;
    size_t n = tc_replica_snapshot(r->set, tc__now_ms(), rt->scratch, TC_REPLICA_MAX, NULL);
    if (n > TC_REPLICA_MAX)
        n = TC_REPLICA_MAX;
    uv_mutex_lock(&rt->lock);
    rt->prev = rt->cur;
    rt->cur.sec = sec + 1;
    rt->cur.at_ms = tc__now_ms();
    memset(rt->cur.label_hash, 0, sizeof(rt->cur.label_hash));
    for (size_t i = 0; i < n; i++) {
        const tc_replica_info *x = &rt->scratch[i];
        rt->cur.label_hash[x->id] = label_hash(x->label);
        rt->cur.attempts[x->id] = total_attempts(x);
        rt->cur.successes[x->id] = x->attempts[TC_REPLICA_SUCCESS];
        rt->cur.failures[x->id] = x->attempts[TC_REPLICA_FAILURE];
    }
    uv_mutex_unlock(&rt->lock);
}

void serve_replicas_tick(const serve_route *route, uint64_t sec)
{
    for (int k = 0; k < 2; k++)
        if (route_set(route, k) != NULL)
            rates_tick((serve_replicas *)route_set(route, k), sec);
}

static void put_number(text *t, double v, int has, const char *fmt)
{
    if (has)
        add(t, fmt, v);
    else
        add(t, "null");
}

/* Replica x's attempts/s and success ratio between the last two samples: null for a replica
 * the newer one does not know (added since), 0 counts in the older one for a replica added
 * between them (a replica's counters start at 0). */
static void put_rates(text *t, const serve_rates *rt, const tc_replica_info *x)
{
    const rate_sample *p = &rt->prev, *c = &rt->cur;
    unsigned id = x->id;
    uint32_t hash = label_hash(x->label);
    int known = p->sec != 0 && c->label_hash[id] == hash && c->at_ms > p->at_ms;
    int both = known && p->label_hash[id] == hash;
    uint64_t a = known ? c->attempts[id] - (both ? p->attempts[id] : 0) : 0;
    uint64_t ok = known ? c->successes[id] - (both ? p->successes[id] : 0) : 0;
    uint64_t bad = known ? c->failures[id] - (both ? p->failures[id] : 0) : 0;
    add(t, ",\"attempts_per_s\":");
    put_number(t, known ? (double)a * 1000 / (double)(c->at_ms - p->at_ms) : 0, known, "%.2f");
    add(t, ",\"success_ratio\":"); /* cancelled attempts say nothing either way */
    put_number(t, ok + bad > 0 ? (double)ok / (double)(ok + bad) : 0, ok + bad > 0, "%.4f");
}

/* One set's replicas for /dashboard/stats, appended to the "replicas" list. */
static void stats_set(text *t, serve_replicas *r, int *first, tc_replica_totals *totals)
{
    size_t n = 0;
    tc_replica_info *info = snapshot(r, &n, totals);
    if (info == NULL) {
        t->err = TC_ENOMEM;
        return;
    }
    uv_mutex_lock(&r->rates->lock);
    for (size_t i = 0; i < n && t->err == 0; i++) {
        const tc_replica_info *x = &info[i];
        add(t, "%s{\"set\":\"%s\",\"id\":%u,\"replica\":", *first ? "" : ",", r->name, x->id);
        if (t->err == 0)
            t->err = tc__json_write_str(t->b, x->label, strlen(x->label));
        add(t, ",\"state\":\"%s\"", tc_replica_state_name(x->state));
        put_rates(t, r->rates, x);
        add(t, ",\"average_ms\":");
        put_number(t, x->average_ms, x->has_average, "%.3f");
        add(t, ",\"in_flight\":%u}", x->in_flight);
        *first = 0;
    }
    uv_mutex_unlock(&r->rates->lock);
    free(info);
}

int serve_replicas_stats(const serve_route *route, tc__buf *b)
{
    text t = {b, 0};
    tc_replica_totals totals[2];
    memset(totals, 0, sizeof(totals));
    int first = 1;
    add(&t, ",\"replicas\":[");
    for (int k = 0; k < 2; k++)
        if (route_set(route, k) != NULL)
            stats_set(&t, (serve_replicas *)route_set(route, k), &first, &totals[k]);
    add(&t, "],\"replica_sets\":{");
    for (int k = 0; k < 2; k++) {
        const serve_replicas *r = route_set(route, k);
        add(&t, "%s\"%s\":", k > 0 ? "," : "", k == 0 ? "upstream" : "metadata");
        if (r == NULL) {
            add(&t, "null");
            continue;
        }
        add(&t,
            "{\"available\":%zu,\"ejected\":%zu,\"probing\":%zu,\"panics\":%llu,"
            "\"dns_failures\":%llu}",
            totals[k].states[TC_REPLICA_AVAILABLE], totals[k].states[TC_REPLICA_EJECTED],
            totals[k].states[TC_REPLICA_PROBING], (unsigned long long)totals[k].panics,
            (unsigned long long)atomic_load(&r->dns_failures));
    }
    add(&t, "}");
    return t.err;
}

size_t serve_replicas_pools(const serve_route *route)
{
    size_t pools = 0;
    tc_replica_info *info[2] = {NULL, NULL};
    size_t n[2] = {0, 0};
    for (int k = 0; k < 2; k++)
        if (route_set(route, k) != NULL)
            info[k] = snapshot(route_set(route, k), &n[k], NULL);
    /* one pool per label: a label is an origin and address */
    for (int k = 0; k < 2; k++) {
        for (size_t i = 0; info[k] != NULL && i < n[k]; i++) {
            int seen = 0;
            for (int k2 = 0; k2 <= k && !seen; k2++)
                for (size_t j = 0; info[k2] != NULL && j < (k2 == k ? i : n[k2]) && !seen; j++)
                    seen = strcmp(info[k2][j].label, info[k][i].label) == 0;
            pools += !seen;
        }
    }
    free(info[0]);
    free(info[1]);
    return pools;
}
