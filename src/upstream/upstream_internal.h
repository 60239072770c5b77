/*
 * What the simulator's HTTP side shares between upstream.c (the handler, /api/work, /scenario,
 * /profile, /reset and the object) and upstream_stats.c (the observation endpoints: /stats and
 * /api/metadata). Internal: never installed.
 */
#ifndef TAILCUT_UPSTREAM_INTERNAL_H
#define TAILCUT_UPSTREAM_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <uv.h>

#include "base/list.h"
#include "tailcut/server.h"
#include "tailcut/upstream.h"
#include "upstream_plan.h"

/* Longest query parameter name compared against "id" (longer names are simply not "id"). */
#define TC__UP_PARAM_NAME_MAX 16
/* Longest error message we build. */
#define TC__UP_MESSAGE_MAX 256

/* IDs of one /api/metadata call: n NUL-terminated strings back to back in ids. */
typedef struct tc__up_meta_call {
    char *ids;
    size_t bytes;
    uint32_t n;
} tc__up_meta_call;

struct tc_upstream {
    uv_loop_t *loop;
    tc_server *srv;       /* NULL once closed */
    tc__up_dealer dealer; /* the profile, its generator and exponea's deck */
    char *profile_text;
    uint64_t seed;

    /* Token bucket for /api/metadata: up to metadata_rate calls, refilled at that rate. */
    uint64_t metadata_rate;
    double tokens;
    uint64_t tokens_ns;

    /* Scenario queue: a ring of q_cap steps, q_len of them from q_head on. */
    tc__up_step *q;
    size_t q_head, q_len, q_cap;

    /* Counters (cleared by POST /reset). */
    uint64_t work_requests, client_aborts, metadata_calls, metadata_rejected;
    uint64_t outcomes[TC__UP_OUT_COUNT];
    size_t in_flight;

    /* Arrival times in microseconds since base_ns: a ring of TC_UPSTREAM_MAX_ARRIVALS. */
    uint64_t base_ns;
    uint64_t *arrivals_us;
    size_t arr_head, arr_len;
    uint64_t arrivals_forgotten;

    /* /api/work arrivals per second since ps_base_ns by X-Tailcut-Attempt value (index 0: none
     * or not 1..TC_UPSTREAM_MAX_ATTEMPT): a ring of TC_UPSTREAM_PER_SECOND seconds; a slot holds
     * second ps_second[slot] - 1 (0: never used). */
    uint64_t ps_base_ns;
    uint64_t ps_second[TC_UPSTREAM_PER_SECOND];
    uint32_t ps_counts[TC_UPSTREAM_PER_SECOND][TC_UPSTREAM_MAX_ATTEMPT + 1];

    /* ID lists of metadata calls: a ring of TC_UPSTREAM_MAX_METADATA_CALLS. */
    tc__up_meta_call *calls;
    size_t calls_head, calls_len, calls_bytes;
    uint64_t calls_forgotten;

    /* The pause profile's stalls on the uv_hrtime() clock in microseconds (period 0: none), and
     * that clock's distance to the Unix epoch's, read once at start. */
    tc__up_stalls stalls;
    uint64_t epoch_offset_us;
    /* Requests other than GET /api/work that arrived during a stall, in arrival order, and the
     * timer that hands them to the handler when it ends (see upstream.c, "Stalls"). */
    tc__link parked;
    uv_timer_t stall_timer;

    size_t live_timers; /* timers not closed yet: one per work record, and the stall timer */
    int closing;
    tc_upstream_cb drained_cb, close_cb;
    void *drained_data, *close_data;
};

/* Sends {"success":false,"error":code,"message":message} with optional extra headers. Unlike
 * tc_request_respond_error() this keeps the connection: these are application-level errors. */
void tc__up_send_error(tc_request *r, int status, const char *code, const char *message,
                       const tc_server_header *headers, size_t nheaders);
/* Sends o (whose reference it takes; NULL: 500) as a 200-style JSON answer with status. */
void tc__up_send_json(tc_request *r, int status, json_t *obj);

/* GET /stats: the counters, arrivals, per-second counts and metadata calls (NULL on ENOMEM). */
json_t *tc__up_stats_json(tc_upstream *u);
/* GET /api/metadata?id=...: answered at once, under the token bucket. */
void tc__up_handle_metadata(tc_upstream *u, tc_request *r);

#endif /* TAILCUT_UPSTREAM_INTERNAL_H */
