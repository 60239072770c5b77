/*
 * tailcut serve --upstream-discovery dns: replicas that follow a name's addresses (CONTRACT
 * section 7). Every upstream URL whose host is a DNS name is watched: resolved through the
 * system resolver (uv_getaddrinfo: A and AAAA, /etc/hosts included, so a Kubernetes headless
 * Service or Consul's DNS interface works as it is), and again every --dns-refresh. Each address
 * is one replica of the URL's set, labelled with the address and reached through the client's
 * connect_to, so the Host header and TLS name stay the URL's host.
 *
 * The one idea: resolution never runs on a serving loop. One thread of its own resolves every
 * name and changes the sets (they are thread-safe); the only thing it asks of the workers is to
 * close the connections of a replica that left, which each worker's client must do on its own
 * loop: a mailbox per worker (a uv_async_t and a list under one lock) carries the request there.
 *
 * The rules: an address that appears is added; one that disappears is removed (no new attempts;
 * the attempts in flight finish, and its connections close as they end); a failed or empty
 * resolution changes nothing and is counted (tailcut_dns_failures_total). A name whose first
 * resolution fails is said on stderr once and tried every second until it resolves; serve starts
 * anyway, and attempts meanwhile find no replica and fail as connect errors.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "cmd_serve.h"
#include "common/runtime.h"

/* A name whose first resolution failed is tried again this often, until it resolves. */
#define DISCOVERY_RETRY_MS 1000
/* serve waits this long at most for the first resolutions before it starts anyway. */
#define DISCOVERY_FIRST_WAIT_MS 5000
/* The longest host name (RFC 1035), and an address as text. */
#define HOST_MAX 256
#define ADDR_MAX 64

typedef struct address {
    char text[ADDR_MAX];
    unsigned id; /* its replica in the set */
} address;

/* One URL whose host is a name. */
typedef struct watch {
    serve_discovery *d;
    serve_replicas *set;
    unsigned url_index;
    const char *url; /* the route's */
    char host[HOST_MAX];
    uint64_t refresh_ms;
    uv_getaddrinfo_t req;
    uv_timer_t timer;
    int resolving;
    int answered;                /* its first resolution has ended */
    int resolved;                /* once a resolution gave addresses */
    int said_failure, said_full; /* the stderr lines, once each */
    address *addrs;              /* the addresses in the set now */
    size_t naddrs;
} watch;

struct serve_discovery {
    rt_thread th;
    uv_async_t stop;
    uv_timer_t first_wait;
    serve_config *cfg;
    watch *watches;
    size_t nwatches;
    size_t first_pending; /* watches whose first resolution has not ended */
    int ready;            /* rt_thread_ready was called */
    int stopping;
    int err;
};

/* ---- names ---------------------------------------------------------------------------------- */

/* The host of url as its origin names it (lower-cased, without brackets), in host[HOST_MAX].
 * Returns 0, or -1 when url has no host libcurl reads. */
static int url_host(const char *url, char *host)
{
    char origin[TC_REPLICA_LABEL_MAX + 1];
    int https;
    const char *why;
    if (tc_url_origin(url, origin, sizeof(origin), &https, &why) != 0)
        return -1;
    const char *h = strstr(origin, "://") + 3;
    const char *colon = strrchr(h, ':');
    size_t n = (size_t)(colon - h);
    if (n >= 2 && h[0] == '[') {
        h++;
        n -= 2;
    }
    if (n >= HOST_MAX)
        return -1;
    memcpy(host, h, n);
    host[n] = '\0';
    return 0;
}

int serve_url_needs_resolving(const char *url)
{
    char host[HOST_MAX];
    unsigned char addr[16];
    return url_host(url, host) == 0 && uv_inet_pton(AF_INET, host, addr) != 0 &&
           uv_inet_pton(AF_INET6, host, addr) != 0 && strchr(host, '%') == NULL;
}

/* ---- mailboxes ------------------------------------------------------------------------------ */

typedef struct retire_item {
    char *url;
    char *connect_to;
} retire_item;

typedef struct mailbox {
    uv_async_t async;
    int open;
    serve_worker *sw;
    retire_item *items;
    size_t n, cap;
} mailbox;

struct serve_mailboxes {
    uv_mutex_t lock;
    mailbox *boxes;
    size_t n;
};

static void items_free(retire_item *items, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(items[i].url);
        free(items[i].connect_to);
    }
    free(items);
}

int serve_mailboxes_new(serve_config *cfg)
{
    struct serve_mailboxes *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return TC_ENOMEM;
    m->n = (size_t)cfg->workers;
    m->boxes = calloc(m->n, sizeof(*m->boxes));
    if (m->boxes == NULL || uv_mutex_init(&m->lock) != 0) {
        free(m->boxes);
        free(m);
        return TC_ENOMEM;
    }
    cfg->mailboxes = m;
    return 0;
}

void serve_mailboxes_free(serve_config *cfg)
{
    struct serve_mailboxes *m = cfg->mailboxes;
    if (m == NULL)
        return;
    for (size_t i = 0; i < m->n; i++)
        items_free(m->boxes[i].items, m->boxes[i].n);
    uv_mutex_destroy(&m->lock);
    free(m->boxes);
    free(m);
    cfg->mailboxes = NULL;
}

/* On the worker's loop: its client lets the replicas in the mailbox go. */
static void on_mail(uv_async_t *a)
{
    mailbox *box = a->data;
    struct serve_mailboxes *m = box->sw->cfg->mailboxes;
    uv_mutex_lock(&m->lock);
    retire_item *items = box->items;
    size_t n = box->n;
    box->items = NULL;
    box->n = box->cap = 0;
    uv_mutex_unlock(&m->lock);
    for (size_t i = 0; i < n; i++)
        if (box->sw->client != NULL)
            (void)tc_client_retire_origin(box->sw->client, items[i].url, items[i].connect_to);
    items_free(items, n);
}

void serve_mailbox_open(serve_worker *sw, uv_loop_t *loop)
{
    struct serve_mailboxes *m = sw->cfg->mailboxes;
    if (m == NULL || sw->index >= m->n)
        return;
    mailbox *box = &m->boxes[sw->index];
    box->sw = sw;
    uv_async_init(loop, &box->async, on_mail);
    box->async.data = box;
    uv_unref((uv_handle_t *)&box->async); /* never what keeps a draining worker alive */
    uv_mutex_lock(&m->lock);
    box->open = 1;
    uv_mutex_unlock(&m->lock);
    sw->mailbox_open = 1;
}

void serve_mailbox_close(serve_worker *sw)
{
    struct serve_mailboxes *m = sw->cfg->mailboxes;
    if (!sw->mailbox_open)
        return;
    sw->mailbox_open = 0;
    mailbox *box = &m->boxes[sw->index];
    /* under the lock: no uv_async_send reaches a closing handle */
    uv_mutex_lock(&m->lock);
    box->open = 0;
    uv_close((uv_handle_t *)&box->async, NULL);
    uv_mutex_unlock(&m->lock);
}

int serve_mailboxes_retire(serve_config *cfg, const char *url, const char *connect_to)
{
    struct serve_mailboxes *m = cfg->mailboxes;
    int err = 0;
    if (m == NULL)
        return 0;
    uv_mutex_lock(&m->lock);
    for (size_t i = 0; i < m->n; i++) {
        mailbox *box = &m->boxes[i];
        if (!box->open)
            continue;
        if (box->n == box->cap) {
            size_t cap = box->cap > 0 ? 2 * box->cap : 4;
            retire_item *grown = realloc(box->items, cap * sizeof(*grown));
            if (grown == NULL) {
                err = TC_ENOMEM;
                continue;
            }
            box->items = grown;
            box->cap = cap;
        }
        retire_item *it = &box->items[box->n];
        it->url = strdup(url);
        it->connect_to = connect_to != NULL ? strdup(connect_to) : NULL;
        if (it->url == NULL || (connect_to != NULL && it->connect_to == NULL)) {
            free(it->url);
            free(it->connect_to);
            err = TC_ENOMEM;
            continue;
        }
        box->n++;
        uv_async_send(&box->async);
    }
    uv_mutex_unlock(&m->lock);
    return err;
}

/* ---- resolving ------------------------------------------------------------------------------ */

static void resolve(watch *w);

static void on_watch_timer(uv_timer_t *t)
{
    resolve(t->data);
}

/* The first resolution of every name has ended (or serve waited long enough): serve starts. */
static void first_done(serve_discovery *d)
{
    if (d->ready)
        return;
    d->ready = 1;
    uv_timer_stop(&d->first_wait);
    rt_thread_ready(&d->th);
}

static void on_first_wait(uv_timer_t *t)
{
    first_done(t->data);
}

static const char *flag_of(const watch *w)
{
    return w->set == w->d->cfg->routes[0].metadata_replicas ? "--metadata-upstream" : "--upstream";
}

/* The resolution's addresses, as text, once each, in the order given (IPv6 link-local ones,
 * which need a zone, left out). Returns how many, at most cap. */
static size_t addresses_of(const struct addrinfo *res, char (*out)[ADDR_MAX], size_t cap)
{
    size_t n = 0;
    for (const struct addrinfo *ai = res; ai != NULL && n < cap; ai = ai->ai_next) {
        char text[ADDR_MAX];
        if (ai->ai_family == AF_INET)
            uv_ip4_name((const struct sockaddr_in *)ai->ai_addr, text, sizeof(text));
        else if (ai->ai_family == AF_INET6 &&
                 ((const struct sockaddr_in6 *)ai->ai_addr)->sin6_scope_id == 0)
            uv_ip6_name((const struct sockaddr_in6 *)ai->ai_addr, text, sizeof(text));
        else
            continue;
        size_t k = 0;
        while (k < n && strcmp(out[k], text) != 0)
            k++;
        if (k == n)
            memcpy(out[n++], text, sizeof(text));
    }
    return n;
}

/* Brings the set in step with the addresses found: the gone ones out (and their connections
 * closed on every worker), the new ones in. */
static void apply(watch *w, char (*found)[ADDR_MAX], size_t nfound)
{
    size_t kept = 0;
    for (size_t i = 0; i < w->naddrs; i++) {
        size_t k = 0;
        while (k < nfound && strcmp(found[k], w->addrs[i].text) != 0)
            k++;
        if (k < nfound) {
            w->addrs[kept++] = w->addrs[i];
            found[k][0] = '\0'; /* known: not new */
            continue;
        }
        (void)tc_replica_remove(w->set->set, w->addrs[i].id);
        (void)serve_mailboxes_retire(w->d->cfg, w->url, w->addrs[i].text);
    }
    w->naddrs = kept;
    for (size_t k = 0; k < nfound; k++) {
        if (found[k][0] == '\0')
            continue;
        serve_replica *rep = NULL;
        unsigned id = 0;
        int err = serve_replica_new(&rep, w->url_index, w->url, found[k]);
        if (err == 0 && (err = tc_replica_add(w->set->set, rep->label, rep, &id)) != 0)
            serve_replica_unref(rep);
        if (err != 0) {
            if (!w->said_full)
                (void)fprintf(stderr, "tailcut: %s: address %s not added: %s\n", w->host, found[k],
                              err == TC_EBUSY ? "too many replicas" : tc_strerror(err));
            w->said_full = 1;
            continue;
        }
        memcpy(w->addrs[w->naddrs].text, found[k], ADDR_MAX);
        w->addrs[w->naddrs++].id = id;
    }
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    watch *w = req->data;
    serve_discovery *d = w->d;
    w->resolving = 0;
    if (status == UV_ECANCELED || d->stopping) {
        uv_freeaddrinfo(res);
        return;
    }
    char(*found)[ADDR_MAX] = malloc(TC_REPLICA_MAX * sizeof(*found));
    size_t nfound = status == 0 && found != NULL ? addresses_of(res, found, TC_REPLICA_MAX) : 0;
    uv_freeaddrinfo(res);
    if (nfound == 0) {
        atomic_fetch_add(&w->set->dns_failures, 1);
        if (!w->resolved && !w->said_failure) {
            (void)fprintf(stderr,
                          "tailcut: cannot resolve %s (%s): %s; serving anyway, trying again "
                          "every second\n",
                          w->host, flag_of(w),
                          status != 0 ? uv_strerror(status) : "no IPv4 or IPv6 address");
            w->said_failure = 1;
        }
    } else {
        if (!w->resolved && w->said_failure)
            (void)fprintf(stderr, "tailcut: %s resolved: %zu replicas\n", w->host, nfound);
        w->resolved = 1;
        apply(w, found, nfound);
    }
    free(found);
    if (!w->answered) {
        w->answered = 1;
        if (--d->first_pending == 0)
            first_done(d);
    }
    uv_timer_start(&w->timer, on_watch_timer, w->resolved ? w->refresh_ms : DISCOVERY_RETRY_MS, 0);
}

static void resolve(watch *w)
{
    struct addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC; /* A and AAAA */
    hints.ai_socktype = SOCK_STREAM;
    w->req.data = w;
    int err = uv_getaddrinfo(&w->d->th.loop, &w->req, on_resolved, w->host, NULL, &hints);
    if (err != 0) /* counted and retried like a failed resolution */
        on_resolved(&w->req, err, NULL);
    else
        w->resolving = 1;
}

/* ---- the thread ----------------------------------------------------------------------------- */

static void on_discovery_stop(uv_async_t *a)
{
    serve_discovery *d = a->data;
    d->stopping = 1;
    for (size_t i = 0; i < d->nwatches; i++) {
        if (d->watches[i].resolving)
            (void)uv_cancel((uv_req_t *)&d->watches[i].req);
        uv_close((uv_handle_t *)&d->watches[i].timer, NULL);
    }
    uv_close((uv_handle_t *)&d->first_wait, NULL);
    uv_close((uv_handle_t *)&d->stop, NULL);
}

static void discovery_main(void *arg)
{
    serve_discovery *d = arg;
    uv_loop_t *loop = &d->th.loop;
    uv_async_init(loop, &d->stop, on_discovery_stop);
    d->stop.data = d;
    uv_timer_init(loop, &d->first_wait);
    d->first_wait.data = d;
    uv_timer_start(&d->first_wait, on_first_wait, DISCOVERY_FIRST_WAIT_MS, 0);
    d->first_pending = d->nwatches;
    for (size_t i = 0; i < d->nwatches; i++) {
        uv_timer_init(loop, &d->watches[i].timer);
        d->watches[i].timer.data = &d->watches[i];
    }
    for (size_t i = 0; i < d->nwatches; i++)
        resolve(&d->watches[i]);
    uv_run(loop, UV_RUN_DEFAULT);
    first_done(d); /* stopped before the first resolutions ended: never leave start waiting */
    uv_loop_close(loop);
}

/* Adds a watch for every URL of r whose host is a name. Returns 0 or TC_ENOMEM. */
static int watch_set(serve_discovery *d, serve_replicas *r, const serve_route *route)
{
    for (size_t i = 0; r != NULL && i < r->urls->n; i++) {
        const char *url = r->urls->v[i];
        if (!serve_url_needs_resolving(url))
            continue;
        watch *grown = realloc(d->watches, (d->nwatches + 1) * sizeof(*grown));
        if (grown == NULL)
            return TC_ENOMEM;
        d->watches = grown;
        watch *w = &grown[d->nwatches];
        memset(w, 0, sizeof(*w));
        w->d = d;
        w->set = r;
        w->url_index = (unsigned)i;
        w->url = url;
        w->refresh_ms = route->dns_refresh_ms;
        (void)url_host(url, w->host);
        if ((w->addrs = calloc(TC_REPLICA_MAX, sizeof(*w->addrs))) == NULL)
            return TC_ENOMEM;
        d->nwatches++;
    }
    return 0;
}

static void discovery_free(serve_discovery *d)
{
    for (size_t i = 0; i < d->nwatches; i++)
        free(d->watches[i].addrs);
    free(d->watches);
    free(d);
}

int serve_discovery_start(serve_config *cfg)
{
    serve_route *route = &cfg->routes[0];
    if (route->discovery != SERVE_DISCOVERY_DNS)
        return 0;
    serve_discovery *d = calloc(1, sizeof(*d));
    if (d == NULL)
        return TC_ENOMEM;
    d->cfg = cfg;
    int err = watch_set(d, route->replicas, route);
    if (err == 0)
        err = watch_set(d, route->metadata_replicas, route);
    if (err == 0 && d->nwatches > 0)
        err = serve_mailboxes_new(cfg);
    if (err == 0 && d->nwatches > 0)
        err = rt_thread_start(&d->th, discovery_main, d);
    if (err != 0 || d->nwatches == 0) {
        discovery_free(d);
        return err;
    }
    cfg->discovery = d;
    return 0;
}

void serve_discovery_stop(serve_config *cfg)
{
    serve_discovery *d = cfg->discovery;
    if (d == NULL)
        return;
    uv_async_send(&d->stop);
    uv_thread_join(&d->th.thread);
    discovery_free(d);
    cfg->discovery = NULL;
}
