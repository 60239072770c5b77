/*
 * A scriptable simulated slow, flaky upstream (`tailcut upstream`) on a caller-supplied uv loop.
 *
 * `tailcut upstream` runs one of these on its own; `tailcut serve` embeds one in-process on its
 * own loop as the default upstream. Everything lives in the tc_upstream object (random state,
 * counters, scenario queue), so any number of them can run on any number of loops at once.
 *
 * Endpoints: GET /api/work (answers per the profile, or per the next queued scenario step),
 * POST /scenario, POST /profile, POST /reset, GET /stats, GET /api/metadata?id=... (see
 * docs/upstream.md).
 * Delays are uv timers, never sleeps: thousands of delayed answers wait on one loop at once.
 */
#ifndef TAILCUT_UPSTREAM_H
#define TAILCUT_UPSTREAM_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <uv.h>

#include "tailcut/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A hang holds the connection with no response this long, then closes it (FIN). */
#define TC_UPSTREAM_HANG_MS 10000
/* Largest delay a profile parameter or a scenario step may ask for (one hour). */
#define TC_UPSTREAM_MAX_DELAY_MS 3600000
/* Scenario steps waiting in the queue at most; a POST that would exceed it gets 400. */
#define TC_UPSTREAM_MAX_STEPS 100000
/* /stats keeps the arrival times of the last this many /api/work requests... */
#define TC_UPSTREAM_MAX_ARRIVALS 100000
/* ...their counts per second by X-Tailcut-Attempt value for this many seconds, values 1 to
 * TC_UPSTREAM_MAX_ATTEMPT each counted apart ("none" for any other or none), */
#define TC_UPSTREAM_PER_SECOND 600
#define TC_UPSTREAM_MAX_ATTEMPT 16
/* ...and the ID lists of the last this many /api/metadata calls, */
#define TC_UPSTREAM_MAX_METADATA_CALLS 10000
/* ...holding at most this many bytes of IDs in all (older calls are forgotten first). */
#define TC_UPSTREAM_MAX_METADATA_BYTES (4 * 1024 * 1024)

typedef enum tc_upstream_profile_kind {
    TC_PROFILE_EXPONEA,   /* delay uniform 100..600 ms; per 11 draws: 1 hang, 1 invalid JSON,
                             1 status 500, 8 good answers */
    TC_PROFILE_FIXED,     /* a = MS */
    TC_PROFILE_UNIFORM,   /* a = LO, b = HI (ms, inclusive) */
    TC_PROFILE_LOGNORMAL, /* a = MEDIAN_MS, b = SIGMA */
    TC_PROFILE_STRAGGLER, /* a = FAST_MS, b = SLOW_MS, c = P (probability of SLOW_MS) */
    TC_PROFILE_MIX,       /* a = LO, b = HI, d = SLOW_LO, e = SLOW_HI, c = P (probability of a
                             delay uniform in SLOW_LO..SLOW_HI, else uniform in LO..HI) */
    TC_PROFILE_PAUSE      /* a = LO, b = HI (work uniform in LO..HI ms), d = PAUSE_MS,
                             e = PERIOD_MS, c = PHASE_MS or -1 for a phase the simulator draws
                             from its seeded generator; see docs/upstream.md ("Stalls") */
} tc_upstream_profile_kind;

typedef struct tc_upstream_profile {
    tc_upstream_profile_kind kind;
    double a, b, c, d, e;
} tc_upstream_profile;

/* Parses a --profile value: `exponea`, `fixed:MS`, `uniform:LO:HI`, `lognormal:MEDIAN_MS:SIGMA`,
 * `straggler:FAST_MS:SLOW_MS:P`, `mix:LO:HI:SLOW_LO:SLOW_HI:P`,
 * `pause:LO:HI:PAUSE_MS:PERIOD_MS[:PHASE_MS]`. Milliseconds are whole numbers
 * 0..TC_UPSTREAM_MAX_DELAY_MS (MEDIAN_MS may have a fraction); SIGMA is a decimal number 0..10;
 * P a decimal number 0..1; LO must not exceed HI (nor SLOW_LO SLOW_HI); PAUSE_MS and PHASE_MS
 * must be below PERIOD_MS. Numbers are ASCII digits with at most one '.', no sign, no exponent.
 * Returns 0 and fills *out (out may be NULL to only validate), or TC_EINVAL with a static one-line
 * reason in *why (why may be NULL). */
int tc_upstream_profile_parse(const char *s, tc_upstream_profile *out, const char **why);

typedef struct tc_upstream_config {
    const char *host;       /* IPv4 or IPv6 literal ["127.0.0.1"] */
    int port;               /* 0 = a free port [0] */
    int reuseport;          /* bind with SO_REUSEPORT [0] */
    const char *profile;    /* a --profile string ["exponea"] */
    uint64_t seed;          /* PRNG seed, used when seed_set is 1 */
    int seed_set;           /* 0 = seed from the clock [0]; see tc_upstream_seed() */
    uint64_t metadata_rate; /* /api/metadata calls per second before 429; 0 = unlimited [0] */
    size_t max_body;        /* request body limit [TC_SERVER_DEFAULT_MAX_BODY] */
    size_t max_connections; /* 0 = no cap [0] */
    FILE *access_log;       /* one line per request, see server.h; NULL = off [NULL] */
    int access_log_format;  /* TC_ACCESS_LOG_TEXT or _JSON (server.h) [TEXT] */
} tc_upstream_config;

typedef struct tc_upstream tc_upstream;

void tc_upstream_config_init(tc_upstream_config *cfg);

/* Creates a simulator on loop and starts listening. cfg is copied (strings too); the access log
 * FILE stays the caller's and must outlive the simulator. Returns 0 and sets *out, or TC_EINVAL
 * (bad profile or config), TC_ENOMEM, or the bind errors of tc_server_new(). */
int tc_upstream_new(tc_upstream **out, uv_loop_t *loop, const tc_upstream_config *cfg);

/* The port actually bound (useful with port 0). */
int tc_upstream_port(const tc_upstream *u);

/* The seed in use (the configured one, or the one drawn from the clock). Also in /stats. */
uint64_t tc_upstream_seed(const tc_upstream *u);

/* Stops accepting; requests in flight are answered when their delays end (hangs still take
 * TC_UPSTREAM_HANG_MS). drained_cb (may be NULL) runs once no connection is left; the simulator
 * must still be closed with tc_upstream_close() afterwards. */
typedef void (*tc_upstream_cb)(tc_upstream *u, void *data);
void tc_upstream_drain(tc_upstream *u, tc_upstream_cb drained_cb, void *data);

/* Closes every connection at once (pending requests are dropped and their timers stopped), then
 * calls close_cb (may be NULL) once every handle is closed; u is freed right after close_cb
 * returns. A second call while closing does nothing (its close_cb is never called), as for
 * tc_server_close(). */
void tc_upstream_close(tc_upstream *u, tc_upstream_cb close_cb, void *data);

#ifdef __cplusplus
}
#endif
#endif /* TAILCUT_UPSTREAM_H */
