/*
 * tailcut serve: the dashboard's history ring and its JSON snapshot (GET /dashboard/stats).
 *
 * One serve_stats for the process holds one shard per writer thread (each worker, plus the admin
 * listener's thread). A shard is a ring of per-second slots; only the shard's owner writes it,
 * with relaxed atomic loads and stores (no lock, no read-modify-write, no allocation), exactly
 * as the metrics shards do. A slot is reused for a new second by its owner: it marks the slot
 * invalid, zeroes it, then stamps it with the new second (a sequence lock). A snapshot, on any
 * thread, reads each wanted second's slot in every shard and keeps it only if the stamp was the
 * wanted second before and after the copy; a slot that holds another second is a second with no
 * traffic from that shard. Taking a snapshot therefore never blocks or slows a writer.
 *
 * Seconds are whole seconds of the process's monotonic clock (serve_stats_now_sec()); the
 * recording functions take the second from the caller, so the unit tests drive time themselves.
 *
 * Latency is kept per second in a fixed log-linear histogram of microseconds: values below 8 us
 * exactly, above that 8 buckets per power of two (each 1/8 of its octave wide, so a percentile,
 * reported as its bucket's midpoint, is within 1/16 = 6.25% of the true value), up to 2^32 us
 * (about 71 minutes; longer values land in the last bucket).
 */
#ifndef TAILCUT_APP_CMD_SERVE_STATS_H
#define TAILCUT_APP_CMD_SERVE_STATS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "tailcut/hedge.h"

#define SERVE_STATS_WINDOW 300 /* complete seconds a snapshot shows */
/* Window, the second being written, and one more: a writer that has moved on to a new second
 * while a snapshot runs only ever reuses a slot older than the snapshot's window. */
#define SERVE_STATS_SLOTS (SERVE_STATS_WINDOW + 2)
#define SERVE_STATS_MAX_ENDPOINTS 12
#define SERVE_STATS_LAT_BUCKETS 240
#define SERVE_STATS_NO_VALUE UINT64_MAX

/* Statuses counted one by one; any other status is counted as "other" (index SERVE_STATS_N_STATUS
 * - 1, code 0). */
#define SERVE_STATS_N_STATUS 16
extern const int serve_stats_status_codes[SERVE_STATS_N_STATUS];

/* What one second holds, summed (a snapshot's copy: plain integers). */
typedef struct serve_stats_second {
    uint32_t requests[SERVE_STATS_MAX_ENDPOINTS][SERVE_STATS_N_STATUS];
    uint32_t latency[SERVE_STATS_LAT_BUCKETS]; /* /api/... requests, microseconds */
    uint32_t attempts[TC_OUTCOME_COUNT];
    uint32_t hedges_fired, hedge_wins, hedges_denied, extra_attempts;
} serve_stats_second;

typedef struct serve_stats_shard serve_stats_shard;
typedef struct serve_stats serve_stats;

/* nshards writer shards; endpoint names (labels in the JSON, kept by pointer: string literals),
 * n_endpoints <= SERVE_STATS_MAX_ENDPOINTS; endpoint 0 is the one a hedge budget counts
 * (/api/smart). Returns 0 and sets *out, or TC_EINVAL / TC_ENOMEM. */
int serve_stats_new(serve_stats **out, unsigned nshards, const char *const *endpoint_names,
                    unsigned n_endpoints);
void serve_stats_free(serve_stats *st);
serve_stats_shard *serve_stats_shard_at(serve_stats *st, unsigned i);

/* The second now, on the process's monotonic clock (0 at serve_stats_new). */
uint64_t serve_stats_now_sec(const serve_stats *st);

/* The same second for a uv_hrtime() reading the caller already has. */
uint64_t serve_stats_sec_at(const serve_stats *st, uint64_t now_ns);

/* ---- writers: the shard's owner thread only ---- */

/* A request answered in second sec with status; latency_us goes into the latency histogram
 * unless it is SERVE_STATS_NO_VALUE (the caller decides which endpoints the chart shows). */
void serve_stats_request(serve_stats_shard *sh, uint64_t sec, unsigned ep, int status,
                         uint64_t latency_us);
/* A finished hedge's attempts by outcome, its hedges fired/won/denied and its extra attempts. */
void serve_stats_hedge(serve_stats_shard *sh, uint64_t sec, const tc_hedge_result *r);
/* Gauges this shard contributes: requests in flight (+1/-1), upstream pool use. */
void serve_stats_in_flight(serve_stats_shard *sh, int64_t delta);
void serve_stats_pool(serve_stats_shard *sh, uint64_t open, uint64_t busy);

/* ---- readers: any thread, any time ---- */

/* Sums every shard's seconds [end - SERVE_STATS_WINDOW, end) into out[0..SERVE_STATS_WINDOW),
 * oldest first. A second two behind the process's clock is settled: it is summed once, then read
 * from a cache, so a snapshot sums only the newest seconds of every shard. */
void serve_stats_collect(serve_stats *st, uint64_t end, serve_stats_second *out);

/* The q-quantile (0 < q <= 1, nearest rank) of a latency histogram in microseconds, as its
 * bucket's midpoint; SERVE_STATS_NO_VALUE when it is empty. */
uint64_t serve_stats_percentile_us(const uint32_t *hist, double q);
/* The histogram bucket of a latency and the bucket's bounds [lo, hi) (for tests and docs). */
unsigned serve_stats_lat_bucket(uint64_t us);
void serve_stats_lat_bounds(unsigned bucket, uint64_t *lo, uint64_t *hi);

/* What a snapshot shows besides the history: the gauges of the moment. */
typedef struct serve_stats_now {
    uint64_t time_ms; /* wall clock */
    uint64_t hedge_delay_ms;
    unsigned hedge_percentile_tenths; /* 0: a fixed delay */
    uint64_t hedge_budget_e6;         /* 0: no budget */
    uint64_t connections;
    uint64_t pool_max;
    unsigned workers;
    /* JSON members (",\"name\":value...") the snapshot ends with, or NULL: the replicas */
    const char *extra;
    size_t extra_len;
} serve_stats_now;

/* The largest snapshot: more (a great many routes and replicas) is answered 503. */
#define SERVE_STATS_MAX_JSON ((size_t)4 * 1024 * 1024)

/* The most the replicas' members may take: 2 sets of TC_REPLICA_MAX replicas. */
#define SERVE_STATS_MAX_REPLICAS_JSON ((size_t)2 * 256 * 1024)

/* A route's hedging counts (the dashboard's route table): the requests its budget counts, the
 * requests whose hedges fired, won by a hedge, the extra attempts denied and sent. */
typedef struct serve_stats_hedging {
    uint64_t requests, fired, won, denied, extra;
} serve_stats_hedging;

/* One route of the snapshot's "routes" (with --config). */
typedef struct serve_stats_route {
    const char *name, *prefix, *kind;
    uint64_t hedge_delay_ms;
    unsigned hedge_percentile_tenths; /* 0: a fixed delay */
    uint64_t hedge_budget_e6;         /* 0: no budget */
    serve_stats_hedging last;         /* the last complete second */
    serve_stats_hedging total;        /* since the route began (its state: kept by reloads) */
    uint64_t pool_max;
    const char *extra; /* its replicas' JSON members (",\"replicas\":..."), or NULL */
    size_t extra_len;
} serve_stats_route;

/* Appends the route's JSON object (see docs/dashboard.md) to b. Returns 0 or the tc__buf error. */
int serve_stats_route_json(tc__buf *b, const serve_stats_route *r);

/* Renders the snapshot JSON (see docs/dashboard.md) for the window ending before second end,
 * with the next sequence number. On 0, *out is a NUL-terminated buffer to free() and *out_len
 * its length. Returns TC_ENOMEM or TC_ETOOLARGE otherwise. */
int serve_stats_json(serve_stats *st, uint64_t end, const serve_stats_now *now, char **out,
                     size_t *out_len);

#endif /* TAILCUT_APP_CMD_SERVE_STATS_H */
