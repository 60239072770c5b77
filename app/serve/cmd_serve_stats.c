/*
 * tailcut serve: the dashboard's history ring (per-second slots per writer shard) and the
 * snapshot that sums it. The design and the thread rules are in cmd_serve_stats.h.
 */
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "base/buf.h"
#include "base/fmt.h"
#include "base/json_write.h"
#include "base/loglin.h"
#include "cmd_serve_stats.h"

/* The latency histogram's buckets (cmd_serve_stats.h): exact below 8 us, 8 a power of two, up to
 * 2^32 us. */
#define LAT_SUB_BITS 3
#define LAT_MAX_BITS 32
_Static_assert(TC__LOGLIN_BUCKETS(LAT_SUB_BITS, LAT_MAX_BITS) == SERVE_STATS_LAT_BUCKETS,
               "SERVE_STATS_LAT_BUCKETS matches the bucket layout");

const int serve_stats_status_codes[SERVE_STATS_N_STATUS] = {200, 400, 404, 405, 408, 413, 414, 429,
                                                            431, 499, 500, 502, 503, 504, 505, 0};

/* One second of one shard. Every counter is written by the owner only. */
typedef struct stats_slot {
    _Atomic uint64_t stamp; /* second held + 1; 0 while being reset, or never used */
    _Atomic uint32_t requests[SERVE_STATS_MAX_ENDPOINTS][SERVE_STATS_N_STATUS];
    _Atomic uint32_t latency[SERVE_STATS_LAT_BUCKETS];
    _Atomic uint32_t attempts[TC_OUTCOME_COUNT];
    _Atomic uint32_t hedges_fired, hedge_wins, hedges_denied, extra_attempts;
} stats_slot;

struct serve_stats_shard {
    stats_slot slots[SERVE_STATS_SLOTS];
    _Atomic int64_t in_flight;
    _Atomic uint64_t pool_open, pool_busy;
};

/* The seconds already summed over the shards that can no longer change (see collect), so that a
 * snapshot sums only the newest ones: without it every poll read the whole window of every shard
 * (about 300 x 1.8 KB per worker) on the loop that answers it. */
typedef struct merged_cache {
    uv_mutex_t lock;                              /* taken with trylock: never waited for */
    uint64_t stamp[SERVE_STATS_SLOTS];            /* sec + 1 of what merged[] holds, 0 = none */
    serve_stats_second merged[SERVE_STATS_SLOTS]; /* at sec % SERVE_STATS_SLOTS */
} merged_cache;

struct serve_stats {
    uint64_t start_ns;
    _Atomic uint64_t seq;
    unsigned nshards;
    unsigned n_endpoints;
    const char *const *endpoint_names;
    serve_stats_shard **shards;
    merged_cache *cache;
};

int serve_stats_new(serve_stats **out, unsigned nshards, const char *const *endpoint_names,
                    unsigned n_endpoints)
{
    if (nshards == 0 || n_endpoints == 0 || n_endpoints > SERVE_STATS_MAX_ENDPOINTS)
        return TC_EINVAL;
    serve_stats *st = calloc(1, sizeof(*st));
    if (st == NULL)
        return TC_ENOMEM;
    st->shards = calloc(nshards, sizeof(serve_stats_shard *));
    if (st->shards == NULL) {
        free(st);
        return TC_ENOMEM;
    }
    st->nshards = nshards;
    st->cache = calloc(1, sizeof(*st->cache)); /* pages touched only as seconds are merged */
    if (st->cache == NULL || uv_mutex_init(&st->cache->lock) != 0) {
        free(st->cache);
        st->cache = NULL;
        serve_stats_free(st);
        return TC_ENOMEM;
    }
    for (unsigned i = 0; i < nshards; i++) {
        /* calloc: zero is a valid state for every atomic here (stamp 0 = unused slot), and the
         * pages of seconds never written are never touched */
        st->shards[i] = calloc(1, sizeof(serve_stats_shard));
        if (st->shards[i] == NULL) {
            serve_stats_free(st);
            return TC_ENOMEM;
        }
    }
    st->start_ns = uv_hrtime();
    st->n_endpoints = n_endpoints;
    st->endpoint_names = endpoint_names;
    atomic_init(&st->seq, 0);
    *out = st;
    return 0;
}

void serve_stats_free(serve_stats *st)
{
    if (st == NULL)
        return;
    for (unsigned i = 0; i < st->nshards; i++)
        free(st->shards[i]);
    free(st->shards);
    if (st->cache != NULL)
        uv_mutex_destroy(&st->cache->lock);
    free(st->cache);
    free(st);
}

serve_stats_shard *serve_stats_shard_at(serve_stats *st, unsigned i)
{
    return i < st->nshards ? st->shards[i] : NULL;
}

uint64_t serve_stats_now_sec(const serve_stats *st)
{
    return serve_stats_sec_at(st, uv_hrtime());
}

uint64_t serve_stats_sec_at(const serve_stats *st, uint64_t now_ns)
{
    return (now_ns - st->start_ns) / 1000000000u;
}

/* ---- writers -------------------------------------------------------------------------------- */

/* Owner-only increment: the owner is the only writer, so load + store is enough, and a reader
 * sees either value. */
#define BUMP(cell, n)                                                                              \
    atomic_store_explicit(&(cell), atomic_load_explicit(&(cell), memory_order_relaxed) + (n),      \
                          memory_order_relaxed)

/* The slot of second sec, reset first if it still holds an older second. */
static stats_slot *slot_for(serve_stats_shard *sh, uint64_t sec)
{
    stats_slot *s = &sh->slots[sec % SERVE_STATS_SLOTS];
    uint64_t want = sec + 1;
    if (atomic_load_explicit(&s->stamp, memory_order_relaxed) == want)
        return s;
    /* The sequence lock's write side: invalid, then zeroed, then the new stamp. */
    atomic_store_explicit(&s->stamp, 0, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    for (size_t e = 0; e < SERVE_STATS_MAX_ENDPOINTS; e++)
        for (size_t k = 0; k < SERVE_STATS_N_STATUS; k++)
            atomic_store_explicit(&s->requests[e][k], 0, memory_order_relaxed);
    for (size_t b = 0; b < SERVE_STATS_LAT_BUCKETS; b++)
        atomic_store_explicit(&s->latency[b], 0, memory_order_relaxed);
    for (size_t o = 0; o < TC_OUTCOME_COUNT; o++)
        atomic_store_explicit(&s->attempts[o], 0, memory_order_relaxed);
    atomic_store_explicit(&s->hedges_fired, 0, memory_order_relaxed);
    atomic_store_explicit(&s->hedge_wins, 0, memory_order_relaxed);
    atomic_store_explicit(&s->hedges_denied, 0, memory_order_relaxed);
    atomic_store_explicit(&s->extra_attempts, 0, memory_order_relaxed);
    atomic_store_explicit(&s->stamp, want, memory_order_release);
    return s;
}

static unsigned status_index(int status)
{
    for (unsigned i = 0; i + 1 < SERVE_STATS_N_STATUS; i++)
        if (serve_stats_status_codes[i] == status)
            return i;
    return SERVE_STATS_N_STATUS - 1;
}

unsigned serve_stats_lat_bucket(uint64_t us)
{
    return (unsigned)tc__loglin_index(us, LAT_SUB_BITS, LAT_MAX_BITS);
}

void serve_stats_lat_bounds(unsigned bucket, uint64_t *lo, uint64_t *hi)
{
    uint64_t width;
    tc__loglin_bucket(bucket, LAT_SUB_BITS, lo, &width);
    *hi = *lo + width;
}

void serve_stats_request(serve_stats_shard *sh, uint64_t sec, unsigned ep, int status,
                         uint64_t latency_us)
{
    if (sh == NULL || ep >= SERVE_STATS_MAX_ENDPOINTS)
        return;
    stats_slot *s = slot_for(sh, sec);
    BUMP(s->requests[ep][status_index(status)], 1);
    if (latency_us != SERVE_STATS_NO_VALUE)
        BUMP(s->latency[serve_stats_lat_bucket(latency_us)], 1);
}

void serve_stats_hedge(serve_stats_shard *sh, uint64_t sec, const tc_hedge_result *r)
{
    if (sh == NULL)
        return;
    stats_slot *s = slot_for(sh, sec);
    uint32_t extra = 0;
    for (unsigned i = 0; i < r->nattempts; i++) {
        if ((unsigned)r->attempts[i].outcome < TC_OUTCOME_COUNT)
            BUMP(s->attempts[r->attempts[i].outcome], 1);
        extra += r->attempts[i].hedged ? 1 : 0;
    }
    if (r->hedge_fired)
        BUMP(s->hedges_fired, 1);
    if (r->winner >= 0 && r->attempts[r->winner].hedged)
        BUMP(s->hedge_wins, 1);
    if (r->denied > 0)
        BUMP(s->hedges_denied, r->denied);
    if (extra > 0)
        BUMP(s->extra_attempts, extra);
}

void serve_stats_in_flight(serve_stats_shard *sh, int64_t delta)
{
    if (sh != NULL)
        BUMP(sh->in_flight, delta);
}

void serve_stats_pool(serve_stats_shard *sh, uint64_t open, uint64_t busy)
{
    if (sh == NULL)
        return;
    atomic_store_explicit(&sh->pool_open, open, memory_order_relaxed);
    atomic_store_explicit(&sh->pool_busy, busy, memory_order_relaxed);
}

/* ---- readers -------------------------------------------------------------------------------- */

#define ADD(dst, cell) ((dst) += atomic_load_explicit(&(cell), memory_order_relaxed))

/* Adds slot s to out if it holds second sec from before the copy to after it (the sequence
 * lock's read side); a slot being reset or reused meanwhile is left out: it held no traffic of
 * sec any more. */
static void add_slot(serve_stats_second *out, const stats_slot *s, uint64_t sec)
{
    serve_stats_second tmp;
    if (atomic_load_explicit(&s->stamp, memory_order_acquire) != sec + 1)
        return;
    memset(&tmp, 0, sizeof(tmp));
    for (size_t e = 0; e < SERVE_STATS_MAX_ENDPOINTS; e++)
        for (size_t k = 0; k < SERVE_STATS_N_STATUS; k++)
            ADD(tmp.requests[e][k], s->requests[e][k]);
    for (size_t b = 0; b < SERVE_STATS_LAT_BUCKETS; b++)
        ADD(tmp.latency[b], s->latency[b]);
    for (size_t o = 0; o < TC_OUTCOME_COUNT; o++)
        ADD(tmp.attempts[o], s->attempts[o]);
    ADD(tmp.hedges_fired, s->hedges_fired);
    ADD(tmp.hedge_wins, s->hedge_wins);
    ADD(tmp.hedges_denied, s->hedges_denied);
    ADD(tmp.extra_attempts, s->extra_attempts);
    atomic_thread_fence(memory_order_acquire);
    if (atomic_load_explicit(&s->stamp, memory_order_relaxed) != sec + 1)
        return;
    for (size_t e = 0; e < SERVE_STATS_MAX_ENDPOINTS; e++)
        for (size_t k = 0; k < SERVE_STATS_N_STATUS; k++)
            out->requests[e][k] += tmp.requests[e][k];
    for (size_t b = 0; b < SERVE_STATS_LAT_BUCKETS; b++)
        out->latency[b] += tmp.latency[b];
    for (size_t o = 0; o < TC_OUTCOME_COUNT; o++)
        out->attempts[o] += tmp.attempts[o];
    out->hedges_fired += tmp.hedges_fired;
    out->hedge_wins += tmp.hedge_wins;
    out->hedges_denied += tmp.hedges_denied;
    out->extra_attempts += tmp.extra_attempts;
}

/* A second is settled once the process's clock is two seconds past it: a writer records into the
 * second it read from the clock a moment before, never one that ended a whole second ago. Its
 * sum is then kept in the cache and never read from the shards again. The cache is used only when
 * its lock is free at once (two pages polled at the same moment: the second one sums afresh), so
 * a snapshot never waits for another. */
void serve_stats_collect(serve_stats *st, uint64_t end, serve_stats_second *out)
{
    memset(out, 0, sizeof(*out) * SERVE_STATS_WINDOW);
    uint64_t now = serve_stats_now_sec(st);
    merged_cache *c = uv_mutex_trylock(&st->cache->lock) == 0 ? st->cache : NULL;
    for (unsigned i = 0; i < SERVE_STATS_WINDOW; i++) {
        if (end < SERVE_STATS_WINDOW - i)
            continue; /* before the process started */
        uint64_t sec = end - (SERVE_STATS_WINDOW - i);
        size_t at = sec % SERVE_STATS_SLOTS;
        if (c != NULL && c->stamp[at] == sec + 1) {
            out[i] = c->merged[at];
            continue;
        }
        for (unsigned k = 0; k < st->nshards; k++)
            add_slot(&out[i], &st->shards[k]->slots[at], sec);
        if (c != NULL && sec + 2 <= now) {
            c->merged[at] = out[i];
            c->stamp[at] = sec + 1;
        }
    }
    if (c != NULL)
        uv_mutex_unlock(&c->lock);
}

uint64_t serve_stats_percentile_us(const uint32_t *hist, double q)
{
    uint64_t total = 0;
    for (size_t b = 0; b < SERVE_STATS_LAT_BUCKETS; b++)
        total += hist[b];
    if (total == 0)
        return SERVE_STATS_NO_VALUE;
    /* nearest rank: the smallest value with at least ceil(q x total) values at or below it */
    uint64_t rank = tc__loglin_rank(q, total);
    uint64_t seen = 0;
    for (unsigned b = 0; b < SERVE_STATS_LAT_BUCKETS; b++) {
        seen += hist[b];
        if (seen >= rank) {
            uint64_t lo, hi;
            serve_stats_lat_bounds(b, &lo, &hi);
            return b < 8 ? lo : lo + (hi - lo) / 2;
        }
    }
    return SERVE_STATS_NO_VALUE; /* not reached */
}

/* ---- the JSON ------------------------------------------------------------------------------- */

typedef struct out {
    tc__buf buf;
    int err;
} out;

static void put(out *o, const char *s)
{
    if (o->err == 0)
        o->err = tc__buf_append(&o->buf, s, strlen(s));
}

static void put_u64(out *o, uint64_t v)
{
    char num[TC__FMT_U64_MAX];
    size_t n = tc__fmt_u64(num, v);
    if (o->err == 0)
        o->err = tc__buf_append(&o->buf, num, n);
}

/* Microseconds as milliseconds with three decimals, or null. */
static void put_ms(out *o, uint64_t us)
{
    if (us == SERVE_STATS_NO_VALUE) {
        put(o, "null");
        return;
    }
    char frac[4] = {(char)('0' + us / 100 % 10), (char)('0' + us / 10 % 10), (char)('0' + us % 10),
                    '\0'};
    put_u64(o, us / 1000);
    put(o, ".");
    put(o, frac);
}

/* A percentage in millionths of a percent (the budget's unit), as a decimal number. */
static void put_e6(out *o, uint64_t v)
{
    char frac[7];
    uint64_t f = v % TC_HEDGE_BUDGET_SCALE;
    for (int i = 5; i >= 0; i--) {
        frac[i] = (char)('0' + f % 10);
        f /= 10;
    }
    int end = 6;
    while (end > 0 && frac[end - 1] == '0')
        end--; /* 12.5, not 12.500000; a whole number without a point */
    frac[end] = '\0';
    put_u64(o, v / TC_HEDGE_BUDGET_SCALE);
    if (end > 0) {
        put(o, ".");
        put(o, frac);
    }
}

static void put_key(out *o, const char *key)
{
    put(o, "\"");
    put(o, key);
    put(o, "\":");
}

/* Per-second values of one counter, read by get(second), as a JSON array. */
typedef uint64_t (*second_get)(const serve_stats_second *s, const void *arg);

static void put_series(out *o, const serve_stats_second *h, second_get get, const void *arg)
{
    put(o, "[");
    for (unsigned i = 0; i < SERVE_STATS_WINDOW; i++) {
        if (i > 0)
            put(o, ",");
        put_u64(o, get(&h[i], arg));
    }
    put(o, "]");
}

static uint64_t window_sum(const serve_stats_second *h, second_get get, const void *arg)
{
    uint64_t n = 0;
    for (unsigned i = 0; i < SERVE_STATS_WINDOW; i++)
        n += get(&h[i], arg);
    return n;
}

typedef struct req_key {
    unsigned ep, status;
} req_key;

static uint64_t get_requests(const serve_stats_second *s, const void *arg)
{
    const req_key *k = arg;
    return s->requests[k->ep][k->status];
}

static uint64_t get_attempts(const serve_stats_second *s, const void *arg)
{
    return s->attempts[*(const unsigned *)arg];
}

static uint64_t get_latency_count(const serve_stats_second *s, const void *arg)
{
    uint64_t n = 0;
    for (size_t b = 0; b < SERVE_STATS_LAT_BUCKETS; b++)
        n += s->latency[b];
    return n;
}

/* Hedge counters by byte offset into serve_stats_second. */
static uint64_t get_field(const serve_stats_second *s, const void *arg)
{
    return *(const uint32_t *)((const char *)s + *(const size_t *)arg);
}

static const struct {
    const char *name;
    size_t off;
} hedge_fields[] = {
    {"fired", offsetof(serve_stats_second, hedges_fired)},
    {"won", offsetof(serve_stats_second, hedge_wins)},
    {"denied", offsetof(serve_stats_second, hedges_denied)},
    {"extra_attempts", offsetof(serve_stats_second, extra_attempts)},
};

static const struct {
    const char *name;
    double q;
} quantiles[] = {{"p50", 0.5}, {"p90", 0.9}, {"p99", 0.99}, {"p999", 0.999}};

#define NQ (sizeof(quantiles) / sizeof(quantiles[0]))
#define NHEDGE (sizeof(hedge_fields) / sizeof(hedge_fields[0]))

/* "requests": the endpoint/status pairs with any request in the window, each with its count
 * (window) or its per-second values (history). */
static void put_requests(out *o, const serve_stats *st, const serve_stats_second *h, int history)
{
    int first = 1;
    put(o, "[");
    for (unsigned e = 0; e < st->n_endpoints; e++) {
        for (unsigned k = 0; k < SERVE_STATS_N_STATUS; k++) {
            req_key key = {e, k};
            uint64_t n = window_sum(h, get_requests, &key);
            if (n == 0)
                continue;
            put(o, first ? "{\"endpoint\":\"" : ",{\"endpoint\":\"");
            first = 0;
            put(o, st->endpoint_names[e]);
            put(o, "\",\"status\":");
            if (serve_stats_status_codes[k] == 0)
                put(o, "\"other\"");
            else
                put_u64(o, (uint64_t)serve_stats_status_codes[k]);
            if (history) {
                put(o, ",\"per_second\":");
                put_series(o, h, get_requests, &key);
            } else {
                put(o, ",\"count\":");
                put_u64(o, n);
            }
            put(o, "}");
        }
    }
    put(o, "]");
}

/* A counter's window total, or with history its per-second values. */
static void put_counter(out *o, const serve_stats_second *h, second_get get, const void *arg,
                        int history)
{
    if (history)
        put_series(o, h, get, arg);
    else
        put_u64(o, window_sum(h, get, arg));
}

/* ,"attempts":{OUTCOME:...},"hedges":{fired:...,...}: totals, or with history per second. */
static void put_attempts_hedges(out *o, const serve_stats_second *h, int history)
{
    put(o, ",\"attempts\":{");
    for (unsigned a = TC_OUTCOME_SUCCESS; a < TC_OUTCOME_COUNT; a++) {
        if (a > TC_OUTCOME_SUCCESS)
            put(o, ",");
        put_key(o, tc_attempt_outcome_name((tc_attempt_outcome)a));
        put_counter(o, h, get_attempts, &a, history);
    }
    put(o, "},\"hedges\":{");
    for (size_t f = 0; f < NHEDGE; f++) {
        if (f > 0)
            put(o, ",");
        put_key(o, hedge_fields[f].name);
        put_counter(o, h, get_field, &hedge_fields[f].off, history);
    }
    put(o, "}");
}

static void put_window(out *o, const serve_stats *st, const serve_stats_second *h)
{
    uint32_t *merged = calloc(SERVE_STATS_LAT_BUCKETS, sizeof(*merged));
    uint64_t total = 0, lat_count = 0;
    if (merged == NULL) {
        o->err = TC_ENOMEM;
        return;
    }
    for (unsigned i = 0; i < SERVE_STATS_WINDOW; i++) {
        for (size_t b = 0; b < SERVE_STATS_LAT_BUCKETS; b++) {
            merged[b] += h[i].latency[b];
            lat_count += h[i].latency[b];
        }
        for (unsigned e = 0; e < st->n_endpoints; e++)
            for (unsigned k = 0; k < SERVE_STATS_N_STATUS; k++)
                total += h[i].requests[e][k];
    }
    put(o, "\"window\":{\"requests_total\":");
    put_u64(o, total);
    put(o, ",\"requests\":");
    put_requests(o, st, h, 0);
    put_attempts_hedges(o, h, 0);
    put(o, ",\"latency_ms\":{\"count\":");
    put_u64(o, lat_count);
    for (size_t q = 0; q < NQ; q++) {
        put(o, ",");
        put_key(o, quantiles[q].name);
        put_ms(o, serve_stats_percentile_us(merged, quantiles[q].q));
    }
    put(o, "}}");
    free(merged);
}

static void put_history(out *o, const serve_stats *st, const serve_stats_second *h)
{
    put(o, "\"history\":{\"requests\":");
    put_requests(o, st, h, 1);
    put_attempts_hedges(o, h, 1);
    put(o, ",\"latency_ms\":{\"count\":");
    put_series(o, h, get_latency_count, NULL);
    for (size_t q = 0; q < NQ; q++) {
        put(o, ",");
        put_key(o, quantiles[q].name);
        put(o, "[");
        for (unsigned i = 0; i < SERVE_STATS_WINDOW; i++) {
            if (i > 0)
                put(o, ",");
            put_ms(o, serve_stats_percentile_us(h[i].latency, quantiles[q].q));
        }
        put(o, "]");
    }
    put(o, "}}");
}

/* "fixed", or "pNN" / "pNN.N" for a percentile delay. */
static void put_delay_mode(out *o, unsigned tenths)
{
    if (tenths == 0) {
        put(o, "\"fixed\"");
        return;
    }
    char frac[2] = {(char)('0' + tenths % 10), '\0'};
    put(o, "\"p");
    put_u64(o, tenths / 10);
    if (frac[0] != '0') {
        put(o, ".");
        put(o, frac);
    }
    put(o, "\"");
}

/* The budget of the last complete second: extras fired against floor(PCT x R / 100) + 1, where R
 * counts the requests it applies to; null when there is none. */
static void put_budget(out *o, uint64_t budget_e6, uint64_t requests, uint64_t extra,
                       uint64_t denied)
{
    if (budget_e6 == 0) {
        put(o, "null");
        return;
    }
    put(o, "{\"percent\":");
    put_e6(o, budget_e6);
    put(o, ",\"smart_requests\":");
    put_u64(o, requests);
    put(o, ",\"extra_attempts\":");
    put_u64(o, extra);
    put(o, ",\"allowed\":");
    put_u64(o, budget_e6 * requests / (100 * TC_HEDGE_BUDGET_SCALE) + 1);
    put(o, ",\"denied\":");
    put_u64(o, denied);
    put(o, "}");
}

static void put_now(out *o, const serve_stats *st, const serve_stats_now *now,
                    const serve_stats_second *last)
{
    int64_t in_flight = 0;
    uint64_t open = 0, busy = 0;
    for (unsigned k = 0; k < st->nshards; k++) {
        in_flight += atomic_load_explicit(&st->shards[k]->in_flight, memory_order_relaxed);
        open += atomic_load_explicit(&st->shards[k]->pool_open, memory_order_relaxed);
        busy += atomic_load_explicit(&st->shards[k]->pool_busy, memory_order_relaxed);
    }
    put(o, "\"now\":{\"in_flight\":");
    put_u64(o, in_flight > 0 ? (uint64_t)in_flight : 0);
    put(o, ",\"connections\":");
    put_u64(o, now->connections);
    put(o, ",\"hedge_delay_ms\":");
    put_u64(o, now->hedge_delay_ms);
    put(o, ",\"hedge_delay_mode\":");
    put_delay_mode(o, now->hedge_percentile_tenths);
    put(o, ",\"budget\":");
    /* R: endpoint 0 (/api/smart, the one the budget applies to) */
    uint64_t smart = 0;
    for (unsigned k = 0; k < SERVE_STATS_N_STATUS; k++)
        smart += last->requests[0][k];
    put_budget(o, now->hedge_budget_e6, smart, last->extra_attempts, last->hedges_denied);
    put(o, ",\"pool\":{\"open\":");
    put_u64(o, open);
    put(o, ",\"busy\":");
    put_u64(o, busy);
    put(o, ",\"max\":");
    put_u64(o, now->pool_max);
    put(o, "}}");
}

static void put_hedging(out *o, const serve_stats_hedging *h)
{
    put(o, "{\"fired\":");
    put_u64(o, h->fired);
    put(o, ",\"won\":");
    put_u64(o, h->won);
    put(o, ",\"denied\":");
    put_u64(o, h->denied);
    put(o, ",\"extra_attempts\":");
    put_u64(o, h->extra);
    put(o, "}");
}

static void put_json_str(out *o, const char *s)
{
    if (o->err == 0)
        o->err = tc__json_write_str(&o->buf, s, strlen(s));
}

int serve_stats_route_json(tc__buf *b, const serve_stats_route *r)
{
    out o = {.buf = *b, .err = 0};
    put(&o, "{\"name\":");
    put_json_str(&o, r->name);
    put(&o, ",\"prefix\":");
    put_json_str(&o, r->prefix);
    put(&o, ",\"kind\":");
    put_json_str(&o, r->kind);
    put(&o, ",\"hedge_delay_ms\":");
    put_u64(&o, r->hedge_delay_ms);
    put(&o, ",\"hedge_delay_mode\":");
    put_delay_mode(&o, r->hedge_percentile_tenths);
    put(&o, ",\"hedges\":");
    put_hedging(&o, &r->last);
    put(&o, ",\"hedges_total\":");
    put_hedging(&o, &r->total);
    put(&o, ",\"budget\":");
    put_budget(&o, r->hedge_budget_e6, r->last.requests, r->last.extra, r->last.denied);
    put(&o, ",\"pool_max\":");
    put_u64(&o, r->pool_max);
    if (r->extra != NULL && o.err == 0)
        o.err = tc__buf_append(&o.buf, r->extra, r->extra_len);
    put(&o, "}");
    *b = o.buf;
    return o.err;
}

int serve_stats_json(serve_stats *st, uint64_t end, const serve_stats_now *now, char **out_text,
                     size_t *out_len)
{
    serve_stats_second *h = malloc(sizeof(*h) * SERVE_STATS_WINDOW);
    if (h == NULL)
        return TC_ENOMEM;
    serve_stats_collect(st, end, h);
    out o = {.err = 0};
    tc__buf_init(&o.buf, NULL, 0, SERVE_STATS_MAX_JSON);
    put(&o, "{\"version\":1,\"seq\":");
    put_u64(&o, atomic_fetch_add(&st->seq, 1) + 1);
    put(&o, ",\"time_ms\":");
    put_u64(&o, now->time_ms);
    put(&o, ",\"uptime_s\":");
    put_u64(&o, end);
    put(&o, ",\"window_s\":");
    put_u64(&o, SERVE_STATS_WINDOW);
    put(&o, ",\"workers\":");
    put_u64(&o, now->workers);
    put(&o, ",");
    put_now(&o, st, now, &h[SERVE_STATS_WINDOW - 1]);
    put(&o, ",");
    put_window(&o, st, h);
    put(&o, ",");
    put_history(&o, st, h);
    if (now->extra != NULL && o.err == 0)
        o.err = tc__buf_append(&o.buf, now->extra, now->extra_len);
    put(&o, "}");
    free(h);
    if (o.err != 0) {
        tc__buf_reset(&o.buf);
        return o.err;
    }
    *out_len = o.buf.len;
    tc__buf_cstr(&o.buf);
    *out_text = o.buf.data;
    return 0;
}
