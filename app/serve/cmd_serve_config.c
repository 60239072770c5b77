/*
 * tailcut serve: its routes (CONTRACT section 8). A configuration (serve_conf) is the list of
 * routes in force: made from the flags (one route, `/api/`, kind api), or read from --config FILE
 * through the settings table (app/common/settings_file.c reads the YAML; each route's keys are the
 * route rows of cmd_serve_settings.c).
 *
 * The one idea: a configuration never changes once it is in force. A reload (SIGHUP) reads and
 * checks the file on the main thread, builds a whole new configuration beside the old one, and
 * hands it to every worker through a uv_async; each worker swaps its pointer between two
 * callbacks of its loop. A request takes a reference on the configuration it started with (its
 * serve_call holds it) and keeps it to its end, so the old one goes when its last request ends.
 * What must outlive a configuration (a route's replica sets, its hedge delay source and budget)
 * is reference counted on its own and carried into the new one when the route is unchanged.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd_serve.h"
#include "common/commands.h"
#include "common/settings_file.h"

/* ---- matching -------------------------------------------------------------------------------- */

const serve_route *serve_route_match(const serve_conf *conf, const char *path, size_t len)
{
    const serve_route *best = NULL;
    for (size_t i = 0; i < conf->nroutes; i++) {
        const serve_route *r = &conf->routes[i];
        size_t n = r->prefix_len;
        if (len < n || memcmp(path, r->prefix, n) != 0)
            continue;
        /* "/p" matches "/p" and "/p/...", never "/px" */
        if (r->prefix[n - 1] != '/' && len > n && path[n] != '/')
            continue;
        if (best == NULL || n > best->prefix_len)
            best = r;
    }
    return best;
}

/* ---- hedging: the delay source and the budget of a route ------------------------------------- */

struct serve_hedging {
    atomic_uint refs;
    tc_hedge_adaptive *adaptive;
    tc_hedge_budget *budget;
    unsigned percentile_tenths; /* what they were made for */
    uint64_t fallback_ms, max_ms, budget_e6;
};

static void hedging_unref(serve_hedging *h)
{
    if (h == NULL || atomic_fetch_sub(&h->refs, 1) != 1)
        return;
    tc_hedge_adaptive_free(h->adaptive);
    tc_hedge_budget_free(h->budget);
    free(h);
}

static int hedging_fits(const serve_hedging *h, const serve_route *r)
{
    return h->percentile_tenths == r->hedge_delay.percentile_tenths &&
           h->fallback_ms == r->hedge_fallback_ms && h->max_ms == r->max_timeout_ms &&
           h->budget_e6 == r->hedge_budget_e6;
}

static void hedging_adopt(serve_route *r, serve_hedging *h)
{
    atomic_fetch_add(&h->refs, 1);
    r->hedging = h;
    r->adaptive = h->adaptive;
    r->budget = h->budget;
}

/* The route's one delay source (for pNN) and one budget, handed to every worker's hedges. */
static int hedging_new(serve_route *r)
{
    serve_hedging *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return TC_ENOMEM;
    atomic_init(&h->refs, 0);
    h->percentile_tenths = r->hedge_delay.percentile_tenths;
    h->fallback_ms = r->hedge_fallback_ms;
    h->max_ms = r->max_timeout_ms;
    h->budget_e6 = r->hedge_budget_e6;
    int err = 0;
    if (h->percentile_tenths != 0) {
        tc_hedge_adaptive_config ac;
        tc_hedge_adaptive_config_init(&ac);
        ac.percentile = (double)h->percentile_tenths / 10.0;
        ac.fallback_ms = h->fallback_ms;
        ac.max_ms = h->max_ms;
        err = tc_hedge_adaptive_new(&h->adaptive, &ac);
    }
    if (err == 0 && h->budget_e6 != 0)
        err = tc_hedge_budget_new(&h->budget, h->budget_e6);
    if (err != 0) {
        tc_hedge_adaptive_free(h->adaptive);
        free(h);
        return err;
    }
    hedging_adopt(r, h);
    return 0;
}

/* ---- configurations ------------------------------------------------------------------------- */

static void routes_free(serve_route *routes, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        settings_target to = {NULL, &routes[i]};
        settings_free(&serve_settings, &to);
        serve_route_state_unref(routes[i].state);
        hedging_unref(routes[i].hedging);
    }
    free(routes);
}

static void conf_free(serve_conf *conf)
{
    routes_free(conf->routes, conf->nroutes);
    serve_log_unref(conf->log);
    for (size_t i = 0; i < conf->nshares; i++)
        free(conf->shares[i].meta);
    free(conf->shares);
    for (size_t i = 0; i < SETTINGS_MAX_ROWS; i++)
        free(conf->global_text[i]);
    free(conf);
}

void serve_conf_ref(serve_conf *conf)
{
    atomic_fetch_add(&conf->refs, 1);
}

void serve_conf_unref(serve_conf *conf)
{
    if (conf != NULL && atomic_fetch_sub(&conf->refs, 1) == 1)
        conf_free(conf);
}

static serve_conf *conf_new(serve_config *cfg, size_t nroutes)
{
    serve_conf *conf = calloc(1, sizeof(*conf));
    if (conf == NULL)
        return NULL;
    atomic_init(&conf->refs, 1);
    conf->cfg = cfg;
    conf->routes = calloc(nroutes, sizeof(*conf->routes));
    conf->nroutes = nroutes;
    if (conf->routes == NULL) {
        free(conf);
        return NULL;
    }
    return conf;
}

/* A worker's share of conf: its batchers and calls. The workers and the admin listener each have
 * one, made with the configuration (a share is only ever touched by its own worker). */
static int shares_new(serve_conf *conf)
{
    conf->nshares = (size_t)conf->cfg->workers + 1;
    conf->shares = calloc(conf->nshares, sizeof(*conf->shares));
    if (conf->shares == NULL)
        return TC_ENOMEM;
    for (size_t i = 0; i < conf->nshares; i++)
        if ((conf->shares[i].meta = calloc(conf->nroutes, sizeof(serve_meta_slot))) == NULL)
            return TC_ENOMEM;
    return 0;
}

serve_conf_share *serve_conf_share_of(serve_worker *sw, serve_conf *conf)
{
    size_t i = sw->admin ? conf->nshares - 1 : sw->index;
    return &conf->shares[i < conf->nshares ? i : conf->nshares - 1];
}

/* What every route needs once its settings are read: its label and prefix length. */
static int route_finish(serve_route *r)
{
    r->prefix_len = strlen(r->prefix);
    if (r->name == NULL && (r->name = strdup(r->prefix)) == NULL)
        return TC_ENOMEM;
    serve_forward_finish(r);
    serve_proxy_conf_finish(&r->proxy);
    return 0;
}

int serve_conf_from_flags(serve_config *cfg, serve_route *route, serve_conf **out)
{
    serve_conf *conf = conf_new(cfg, 1);
    if (conf == NULL)
        return TC_ENOMEM;
    serve_route *r = &conf->routes[0];
    *r = *route; /* takes over what the flags' route owns */
    memset(route, 0, sizeof(*route));
    r->kind = SERVE_KIND_API;
    int err = (r->prefix = strdup("/api/")) == NULL ? TC_ENOMEM : route_finish(r);
    if (err != 0) {
        conf_free(conf);
        return err;
    }
    *out = conf;
    return 0;
}

int serve_conf_start(serve_conf *conf, const serve_conf *old)
{
    if (shares_new(conf) != 0)
        return TC_ENOMEM;
    for (size_t i = 0; i < conf->nroutes; i++) {
        serve_route *r = &conf->routes[i];
        const serve_route *was = NULL;
        for (size_t k = 0; old != NULL && k < old->nroutes && was == NULL; k++)
            if (serve_route_state_fits(old->routes[k].state, r))
                was = &old->routes[k];
        int err = 0;
        if (was != NULL)
            serve_route_state_adopt(r, was->state);
        else
            err = serve_route_state_new(r);
        if (err == 0 && was != NULL && hedging_fits(was->hedging, r))
            hedging_adopt(r, was->hedging);
        else if (err == 0)
            err = hedging_new(r);
        if (err != 0)
            return err;
    }
    return 0;
}

/* ---- the settings a reload may change ----------------------------------------------------- */

void serve_log_unref(serve_log *log)
{
    if (log == NULL || atomic_fetch_sub(&log->refs, 1) != 1)
        return;
    if (log->file != NULL && log->file != stdout)
        (void)fclose(log->file); /* the last line written: nowhere left to report a failed flush */
    free(log->path);
    free(log);
}

/* Takes file (closed if there is no memory for the rest). */
static serve_log *log_new(FILE *file, const char *path)
{
    serve_log *log = calloc(1, sizeof(*log));
    if (log != NULL && (log->path = strdup(path)) == NULL) {
        free(log);
        log = NULL;
    }
    if (log == NULL) {
        if (file != NULL && file != stdout)
            (void)fclose(file);
        return NULL;
    }
    atomic_init(&log->refs, 1);
    log->file = file;
    return log;
}

/* The listener's body limit: the largest route's (each route checks its own). A proxy route's
 * requests are streamed with their own limit, max_request_body_bytes; one handled whole (a
 * reload between its head and its turn) is still bounded by the listener's. */
static uint64_t largest_body(const serve_conf *conf)
{
    uint64_t max = 0;
    for (size_t i = 0; i < conf->nroutes; i++) {
        const serve_route *r = &conf->routes[i];
        uint64_t body = r->kind == SERVE_KIND_PROXY ? r->proxy.max_request_body_bytes : r->max_body;
        if (body > max)
            max = body;
    }
    return max;
}

static void globals_copy(serve_conf *conf, const serve_config *g)
{
    conf->max_connections = g->max_connections;
    conf->max_body = largest_body(conf);
    conf->upstream_connections = g->upstream_connections;
    conf->http_engine = g->http_engine;
    conf->log_format = g->access_log_format;
}

int serve_conf_globals(serve_conf *conf, const serve_config *globals, const serve_conf *current,
                       settings_error *e)
{
    globals_copy(conf, globals);
    const char *path = globals->access_log_path;
    if (current != NULL && current->log != NULL && strcmp(current->log->path, path) == 0) {
        /* the same log: its FILE goes on (a reload never reopens it; SIGUSR1 does) */
        atomic_fetch_add(&current->log->refs, 1);
        conf->log = current->log;
        return 0;
    }
    FILE *file = NULL;
    if (settings_open_access_log(path, &file, e) != 0)
        return -1;
    if ((conf->log = log_new(file, path)) == NULL)
        return settings_invalid(e, path, "out of memory");
    return 0;
}

int serve_conf_globals_first(serve_conf *conf, serve_config *cfg)
{
    globals_copy(conf, cfg);
    conf->log = log_new(cfg->access_log, cfg->access_log_path);
    cfg->access_log = NULL; /* the configuration's now (or closed): a reload may close it */
    return conf->log != NULL ? 0 : TC_ENOMEM;
}

/* ---- a worker's upstream client ---------------------------------------------------------------
 */

struct serve_client {
    tc_client *client;
    size_t users; /* the worker's shares that use it (only the worker touches it) */
    int engine;   /* its settings */
    uint64_t connections;
};

static void client_give(serve_conf_share *share)
{
    serve_client *c = share->client;
    share->client = NULL;
    if (c == NULL || --c->users > 0)
        return;
    /* the configurations that used it have no call left on this worker: nothing is in flight
     * on it but what their batchers sent, which the close cancels (the batchers are closed) */
    tc_client_close(c->client, NULL, NULL);
    free(c);
}

/* A new client with conf's settings. --upstream-connections is per replica: each replica
 * (origin and address) is a pool of its own in the client; the total only has to let every
 * pool fill. */
static serve_client *client_new(serve_worker *sw, const serve_conf *conf, int *err)
{
    serve_config *cfg = sw->cfg;
    serve_client *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        *err = TC_ENOMEM;
        return NULL;
    }
    tc_client_config cc;
    tc_client_config_init(&cc);
    cc.max_per_host = (size_t)conf->upstream_connections;
    cc.max_connections = (size_t)conf->upstream_connections * cfg->client_pools;
    cc.max_body = (size_t)conf->max_body; /* each request sets its route's */
    cc.ca_file = cfg->upstream_ca;
    cc.engine = (tc_client_engine)conf->http_engine;
    if ((*err = tc_client_new(&c->client, sw->loop, &cc)) != 0) {
        free(c);
        return NULL;
    }
    c->engine = conf->http_engine;
    c->connections = conf->upstream_connections;
    return c;
}

int serve_conf_client(serve_worker *sw, serve_conf *conf)
{
    serve_conf_share *share = serve_conf_share_of(sw, conf);
    serve_client *now =
        sw->conf != NULL && sw->conf != conf ? serve_conf_share_of(sw, sw->conf)->client : NULL;
    int err = 0;
    serve_client *c = now;
    if (now == NULL || now->engine != conf->http_engine ||
        now->connections != conf->upstream_connections) {
        c = client_new(sw, conf, &err);
        if (c == NULL && now == NULL)
            return err;
        if (c == NULL) /* the old settings go on rather than no client at all */
            c = now;
    }
    if (c != now && now != NULL) {
        /* what the old client counted so far goes into the metrics; the new one counts from 0 */
        serve_count_pool(sw);
        sw->queue_waits_seen = 0;
        sw->stale_retries_seen = 0;
    }
    c->users++;
    share->client = c;
    sw->client = c->client;
    return err;
}

void serve_conf_clients_close(serve_worker *sw)
{
    if (sw->conf != NULL)
        client_give(serve_conf_share_of(sw, sw->conf));
    for (size_t i = 0; i < sw->nretiring; i++)
        client_give(serve_conf_share_of(sw, sw->retiring[i]));
    sw->client = NULL;
}

/* ---- reading the file ----------------------------------------------------------------------- */

typedef struct loading {
    const char *file;
    serve_config *cfg;
    serve_conf *conf;
    const settings_node *top;
} loading;

/* The mark of a route's key's value (for a check across keys), else the route's own. */
static settings_mark value_mark(const settings_node *route, const char *key)
{
    const settings_pair *p = settings_node_get(route, key);
    return p != NULL ? p->value->mark : route->mark;
}

static int read_route(loading *ld, size_t i, const settings_node *item, settings_file_error *e)
{
    serve_route *r = &ld->conf->routes[i];
    settings_target to = {NULL, r};
    char path[32], where[64];
    (void)snprintf(path, sizeof(path), "routes[%zu]", i);
    if (item->kind != SETTINGS_NODE_MAP)
        return settings_file_fail(e, ld->file, item->mark, path, "expected a mapping, not %s",
                                  item->kind == SETTINGS_NODE_LIST ? "a list" : "text");
    const setting *bad = NULL;
    settings_error se;
    if (settings_defaults(&serve_settings, &to, &bad, &se) != 0)
        return settings_file_fail(e, ld->file, item->mark, path, "internal: a bad default");
    /* The kind first: it decides which keys the route takes and some of their defaults. */
    const settings_pair *kind = settings_node_get(item, "kind");
    if (kind != NULL && kind->value->kind == SETTINGS_NODE_SCALAR) {
        (void)snprintf(where, sizeof(where), "%s.kind", path);
        if (settings_set(settings_find_key(&serve_settings, "kind"), kind->value->text, &to, &se) !=
            0)
            return settings_file_fail(e, ld->file, kind->value->mark, where, "%s", se.why);
    }
    for (const serve_kind_default *d = serve_kind_defaults; d->key != NULL; d++)
        if (d->kind == r->kind &&
            settings_set_default(settings_find_key(&serve_settings, d->key), d->def, &to, &se) != 0)
            return settings_file_fail(e, ld->file, item->mark, path, "internal: a bad default");
    settings_file_scope sc = {ld->file, path, SETTINGS_ROUTE, SERVE_KIND_BIT(r->kind), NULL,
                              NULL,     NULL};
    if (settings_file_apply(&serve_settings, item, &sc, &to, e) != 0)
        return -1;
    if (r->kind == SERVE_KIND_API && r->prefix[strlen(r->prefix) - 1] != '/') {
        (void)snprintf(where, sizeof(where), "%s.prefix", path);
        return settings_file_fail(e, ld->file, value_mark(item, "prefix"), where,
                                  "a kind: api prefix must end in /");
    }
    if (r->timeout_ms > r->max_timeout_ms) {
        (void)snprintf(where, sizeof(where), "%s.timeout_ms", path);
        return settings_file_fail(e, ld->file, value_mark(item, "timeout_ms"), where,
                                  "must be at most max_timeout_ms (%llu)",
                                  (unsigned long long)r->max_timeout_ms);
    }
    if (route_finish(r) != 0)
        return settings_file_fail(e, ld->file, item->mark, path, "out of memory");
    return 0;
}

/* Two routes may not share a prefix, nor a name (their metrics would mix). */
static int check_routes(loading *ld, const settings_node *list, settings_file_error *e)
{
    for (size_t i = 0; i < ld->conf->nroutes; i++) {
        const serve_route *r = &ld->conf->routes[i];
        for (size_t k = 0; k < i; k++) {
            const serve_route *o = &ld->conf->routes[k];
            const char *key = strcmp(r->prefix, o->prefix) == 0 ? "prefix"
                              : strcmp(r->name, o->name) == 0   ? "name"
                                                                : NULL;
            if (key == NULL)
                continue;
            char where[64];
            (void)snprintf(where, sizeof(where), "routes[%zu].%s", i, key);
            settings_mark at = settings_node_get(list->items[i], key) != NULL
                                   ? value_mark(list->items[i], key)
                                   : value_mark(list->items[i], "prefix");
            return settings_file_fail(e, ld->file, at, where, "the same %s as routes[%zu]", key, k);
        }
    }
    return 0;
}

/* The `routes` key's value: a list of mappings, each one route. */
static int on_routes(void *data, const setting *row, const settings_pair *entry,
                     settings_file_error *e)
{
    loading *ld = data;
    const settings_node *v = entry->value;
    (void)row;
    if (v->kind != SETTINGS_NODE_LIST)
        return settings_file_fail(e, ld->file, v->mark, "routes", "expected a list, not %s",
                                  v->kind == SETTINGS_NODE_MAP ? "a mapping" : "text");
    if (v->n == 0 || v->n > SERVE_MAX_ROUTES)
        return settings_file_fail(e, ld->file, v->mark, "routes", "expected 1 to %d routes",
                                  SERVE_MAX_ROUTES);
    if (ld->conf != NULL)
        return 0; /* checked once */
    if ((ld->conf = conf_new(ld->cfg, v->n)) == NULL)
        return settings_file_fail(e, ld->file, v->mark, "routes", "out of memory");
    for (size_t i = 0; i < v->n; i++)
        if (read_route(ld, i, v->items[i], e) != 0)
            return -1;
    return check_routes(ld, v, e);
}

/* Keeps the text of each global key the file sets, for the next reload to compare. */
static int keep_global_text(serve_conf *conf, const settings_node *top)
{
    for (size_t i = 0; i < top->n; i++) {
        const setting *s = settings_find_key(&serve_settings, top->pairs[i].key);
        const settings_node *v = top->pairs[i].value;
        if (s == NULL || s->scope != SETTINGS_GLOBAL || v->kind != SETTINGS_NODE_SCALAR)
            continue;
        size_t k = settings_index(&serve_settings, s);
        free(conf->global_text[k]);
        if ((conf->global_text[k] = strdup(v->text)) == NULL)
            return TC_ENOMEM;
    }
    return 0;
}

int serve_conf_load(serve_config *cfg, serve_config *globals, int argc, char **argv,
                    serve_conf **out, settings_file_error *e)
{
    /* a copy: the command line applied again below replaces cfg->config_path when globals is cfg */
    char *file = strdup(cfg->config_path);
    settings_node *top = NULL;
    *out = NULL;
    if (file == NULL) {
        (void)snprintf(e->message, sizeof(e->message), "out of memory");
        return -1;
    }
    if (settings_file_load(file, &top, e) != 0) {
        free(file);
        return -1;
    }
    loading ld = {file, cfg, NULL, top};
    settings_file_scope sc = {file, "", SETTINGS_GLOBAL, 0, on_routes, &ld, NULL};
    settings_target to = {globals, NULL};
    settings_mark start = {1, 1};
    int rc = settings_file_apply(&serve_settings, top, &sc, &to, e);
    /* The flags win over the file: the command line once more, over the file's values (it was
     * read without error before, so it reads the same now). */
    if (rc == 0 &&
        settings_cli_parse(&serve_settings, argc, argv, &to, NULL, NULL, NULL) != SETTINGS_CLI_OK)
        rc = settings_file_fail(e, file, start, NULL, "the command line no longer reads");
    if (rc == 0 && keep_global_text(ld.conf, top) != 0)
        rc = settings_file_fail(e, file, start, NULL, "out of memory");
    settings_node_free(top);
    free(file);
    if (rc != 0) {
        if (ld.conf != NULL)
            conf_free(ld.conf);
        return -1;
    }
    ld.conf->from_file = 1;
    *out = ld.conf;
    return 0;
}

/* ---- reload --------------------------------------------------------------------------------- */

/* On the worker's loop: the configuration in force changed; new requests take it, and the one
 * the worker had stays until its calls on it have ended. */
static void on_reload(uv_async_t *a)
{
    serve_worker *sw = a->data;
    serve_config *cfg = sw->cfg;
    uv_mutex_lock(&cfg->conf_lock);
    serve_conf *next = cfg->conf;
    serve_conf_ref(next);
    uv_mutex_unlock(&cfg->conf_lock);
    serve_conf *old = sw->conf;
    if (old == next) {
        serve_conf_unref(old);
        return;
    }
    /* The listener's settings for what it accepts and hands over from now on (a request handed
     * over before keeps its log: old holds it until that request ends). */
    if (sw->srv != NULL && !sw->admin) {
        tc_server_set_max_connections(sw->srv, (size_t)next->max_connections);
        tc_server_set_max_body(sw->srv, (size_t)next->max_body);
    }
    if (sw->srv != NULL)
        tc_server_set_access_log(sw->srv, next->log->file, next->log_format);
    if (!sw->admin && serve_conf_client(sw, next) != 0)
        (void)fprintf(stderr,
                      "tailcut: worker %u: no new upstream client for the reloaded "
                      "configuration: it keeps the one it has\n",
                      sw->index);
    sw->conf = next;
    serve_conf **grown = realloc(sw->retiring, (sw->nretiring + 1) * sizeof(serve_conf *));
    if (grown == NULL) {
        /* no room to wait for its calls: its batchers close now (their lookups answer 503) */
        serve_metadata_close(serve_conf_share_of(sw, old), old->nroutes);
        client_give(serve_conf_share_of(sw, old));
        serve_conf_unref(old);
        return;
    }
    sw->retiring = grown;
    grown[sw->nretiring++] = old;
    serve_conf_call_done(sw, old);
}

serve_conf *serve_conf_take(serve_worker *sw)
{
    serve_conf_ref(sw->conf);
    serve_conf_share_of(sw, sw->conf)->calls++;
    return sw->conf;
}

void serve_conf_give(serve_worker *sw, serve_conf *conf)
{
    serve_conf_share_of(sw, conf)->calls--;
    serve_conf_call_done(sw, conf);
    serve_conf_unref(conf);
}

void serve_conf_call_done(serve_worker *sw, serve_conf *conf)
{
    if (conf == sw->conf || serve_conf_share_of(sw, conf)->calls > 0)
        return;
    for (size_t i = 0; i < sw->nretiring; i++) {
        if (sw->retiring[i] != conf)
            continue;
        serve_metadata_close(serve_conf_share_of(sw, conf), conf->nroutes);
        client_give(serve_conf_share_of(sw, conf));
        sw->retiring[i] = sw->retiring[--sw->nretiring];
        serve_conf_unref(conf);
        return;
    }
}

int serve_reload_open(serve_worker *sw, uv_loop_t *loop)
{
    serve_config *cfg = sw->cfg;
    size_t slot = sw->admin ? (size_t)cfg->workers : sw->index;
    if (cfg->reloadable == NULL || slot > cfg->workers)
        return 0;
    if (uv_async_init(loop, &sw->reload, on_reload) != 0)
        return TC_EIO;
    sw->reload.data = sw;
    uv_unref((uv_handle_t *)&sw->reload); /* never what keeps a draining worker alive */
    uv_mutex_lock(&cfg->conf_lock);
    cfg->reloadable[slot] = sw;
    sw->reload_open = 1;
    uv_mutex_unlock(&cfg->conf_lock);
    return 0;
}

void serve_reload_close(serve_worker *sw)
{
    serve_config *cfg = sw->cfg;
    if (!sw->reload_open)
        return;
    size_t slot = sw->admin ? (size_t)cfg->workers : sw->index;
    /* under the lock: no uv_async_send reaches a closing handle */
    uv_mutex_lock(&cfg->conf_lock);
    cfg->reloadable[slot] = NULL;
    sw->reload_open = 0;
    uv_close((uv_handle_t *)&sw->reload, NULL);
    uv_mutex_unlock(&cfg->conf_lock);
}

/* What a reload cannot change: the listeners and the workers (unless the command line sets
 * them: then the file's value is ignored), and a route with discovery: dns that was not there
 * at start (the resolver thread watches the sets it was started with). Every other global key
 * applies to what starts after the reload (serve_conf_globals, on_reload). Returns 0, or -1 with
 * e's message naming the key. */
static int check_fixed(const serve_config *cfg, const serve_conf *old, const serve_conf *next,
                       uint64_t given, settings_file_error *e)
{
    static const char *const fixed[] = {"listen", "admin_listen", "workers"};
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
        const setting *s = settings_find_key(&serve_settings, fixed[i]);
        size_t k = settings_index(&serve_settings, s);
        const char *was = old->global_text[k], *now = next->global_text[k];
        if (given & ((uint64_t)1 << k))
            continue;
        if ((was == NULL) != (now == NULL) || (was != NULL && strcmp(was, now) != 0)) {
            (void)snprintf(e->message, sizeof(e->message),
                           "%s: %s: cannot change on reload (restart tailcut to change it)",
                           cfg->config_path, fixed[i]);
            return -1;
        }
    }
    for (size_t i = 0; i < next->nroutes; i++) {
        const serve_route *r = &next->routes[i];
        if (r->discovery == SERVE_DISCOVERY_DNS) {
            int kept = 0;
            for (size_t k = 0; k < old->nroutes && !kept; k++)
                kept = serve_route_state_fits(old->routes[k].state, r);
            if (!kept) {
                (void)snprintf(e->message, sizeof(e->message),
                               "%s: routes[%zu].discovery: a route with discovery: dns cannot be "
                               "added or changed on reload (restart tailcut)",
                               cfg->config_path, i);
                return -1;
            }
        }
    }
    return 0;
}

static void count_reload(serve_config *cfg, int ok)
{
    serve_metrics *m = &cfg->metrics;
    atomic_fetch_add(ok ? &m->reloads_ok : &m->reloads_error, 1);
}

void serve_reload(serve_config *cfg, int argc, char **argv, uint64_t given)
{
    serve_config globals;
    memset(&globals, 0, sizeof(globals));
    settings_target to = {&globals, NULL};
    const setting *bad = NULL;
    settings_error se;
    settings_file_error e;
    serve_conf *next = NULL;
    int rc = settings_defaults(&serve_settings, &to, &bad, &se);
    if (rc != 0)
        (void)snprintf(e.message, sizeof(e.message), "internal: a bad default");
    if (rc == 0)
        rc = serve_conf_load(cfg, &globals, argc, argv, &next, &e);
    if (rc == 0)
        rc = check_fixed(cfg, cfg->conf, next, given, &e);
    if (rc == 0 && serve_conf_globals(next, &globals, cfg->conf, &se) != 0) {
        (void)snprintf(e.message, sizeof(e.message), "%s: access_log: %s", cfg->config_path,
                       se.why);
        rc = -1;
    }
    if (rc == 0 && serve_conf_start(next, cfg->conf) != 0) {
        (void)snprintf(e.message, sizeof(e.message), "out of memory");
        rc = -1;
    }
    if (rc != 0) {
        serve_conf_unref(next);
        settings_free(&serve_settings, &to);
        (void)fprintf(stderr, "tailcut: configuration not reloaded: %s\n", e.message);
        count_reload(cfg, 0);
        return;
    }
    /* What applies at once: the drain's timings (the runtime reads them at the signal). */
    cfg->drain_timeout_ms = globals.drain_timeout_ms;
    cfg->shutdown_delay_ms = globals.shutdown_delay_ms;
    settings_free(&serve_settings, &to);
    uv_mutex_lock(&cfg->conf_lock);
    serve_conf *old = cfg->conf;
    cfg->conf = next;
    for (size_t i = 0; i <= cfg->workers; i++)
        if (cfg->reloadable[i] != NULL)
            uv_async_send(&cfg->reloadable[i]->reload);
    uv_mutex_unlock(&cfg->conf_lock);
    serve_conf_unref(old);
    (void)fprintf(stderr, "tailcut: configuration reloaded: %zu route%s\n", next->nroutes,
                  next->nroutes == 1 ? "" : "s");
    count_reload(cfg, 1);
}
