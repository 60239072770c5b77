/*
 * hedge_load: an open-loop HTTP load generator on libtailcut, for bench/hedge/.
 *
 *   hedge_load --url URL --rate N --requests N [--connections N] [--timeout MS] [--out FILE]
 *              [--seconds FILE]
 *
 * Request i is scheduled at i / rate seconds after the start, whatever happened to the ones
 * before it: a 1 ms timer starts every request whose time has come. Its latency counts from its
 * scheduled time, not from when it was sent, so a stalled server shows up as latency and not as
 * a lower rate (a closed-loop tool such as wrk hides exactly that). Requests that find every
 * connection busy wait in the client's queue, and that wait counts too.
 *
 * Prints one line: requests, ok (status 200), failed, the rate they were sent at, and latency
 * percentiles of the ok requests (p50 p90 p99 p99.9 p99.99 max, in ms). --out writes every ok
 * latency in microseconds, one a line, in completion order (for CDF plots). --seconds writes one
 * line per second of the schedule, "SECOND OK FAILED", counting each request in the second it
 * was scheduled in (when a failure began and ended, e.g. around a replica's kill).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "tailcut/client.h"

typedef struct load {
    uv_loop_t *loop;
    tc_client *client;
    uv_timer_t tick;
    const char *url;
    uint64_t rate, total, timeout_ms;
    uint64_t started, finished, ok, failed;
    uint64_t t0_ns, last_start_ns;
    uint32_t *lat_us; /* ok latencies, in completion order */
    uint64_t nseconds;
    uint64_t (*per_second)[2]; /* ok and failed by the second each request was scheduled in */
} load;

typedef struct call {
    load *ld;
    uint64_t scheduled_ns;
} call;

static void on_done(tc_future *f, void *data)
{
    call *c = data;
    load *ld = c->ld;
    uint64_t us = (uv_hrtime() - c->scheduled_ns) / 1000;
    uint64_t second = (c->scheduled_ns - ld->t0_ns) / 1000000000u;
    int ok = tc_future_state_of(f) == TC_FUTURE_FULFILLED &&
             ((const tc_response *)tc_future_value(f))->status == 200;
    if (ok)
        ld->lat_us[ld->ok++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
    else
        ld->failed++;
    ld->per_second[second < ld->nseconds ? second : ld->nseconds - 1][ok ? 0 : 1]++;
    ld->finished++;
    tc_future_unref(f);
    free(c);
    if (ld->finished == ld->total)
        tc_client_close(ld->client, NULL, NULL);
}

static void on_tick(uv_timer_t *t)
{
    load *ld = t->data;
    uint64_t now = uv_hrtime();
    uint64_t due = (now - ld->t0_ns) / 1000 * ld->rate / 1000000 + 1;
    if (due > ld->total)
        due = ld->total;
    for (; ld->started < due; ld->started++) {
        call *c = malloc(sizeof(*c));
        tc_future *f = NULL;
        tc_client_request req = {.url = ld->url, .timeout_ms = ld->timeout_ms};
        if (c == NULL) {
            ld->failed++;
            ld->finished++;
            ld->per_second[ld->nseconds - 1][1]++; /* no schedule to place it by */
            continue;
        }
        c->ld = ld;
        c->scheduled_ns = ld->t0_ns + ld->started * 1000000000ull / ld->rate;
        if (tc_client_request_start(&f, ld->client, &req) != 0 ||
            tc_future_on_done(f, on_done, c) != 0) {
            if (f != NULL)
                tc_future_cancel(f);
            ld->failed++;
            ld->finished++;
            ld->per_second[(c->scheduled_ns - ld->t0_ns) / 1000000000u][1]++;
            free(c);
        }
    }
    if (ld->started == ld->total) {
        ld->last_start_ns = now;
        uv_timer_stop(t);
        uv_close((uv_handle_t *)t, NULL);
        if (ld->finished == ld->total)
            tc_client_close(ld->client, NULL, NULL);
    }
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile, in ms. */
static double pct_ms(const uint32_t *sorted, uint64_t n, double p)
{
    if (n == 0)
        return 0;
    uint64_t rank = (uint64_t)((double)n * p / 100.0 + 0.999999);
    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    return sorted[rank - 1] / 1000.0;
}

/* --out: every ok latency in microseconds, one a line, in completion order. */
static void write_latencies(FILE *f, const load *ld)
{
    for (uint64_t i = 0; i < ld->ok; i++)
        fprintf(f, "%u\n", ld->lat_us[i]);
}

/* --seconds: "SECOND OK FAILED" for every second of the schedule. */
static void write_seconds(FILE *f, const load *ld)
{
    for (uint64_t i = 0; i < ld->nseconds; i++)
        fprintf(f, "%llu %llu %llu\n", (unsigned long long)i,
                (unsigned long long)ld->per_second[i][0], (unsigned long long)ld->per_second[i][1]);
}

/* Writes path with emit(); returns 0, or -1 after saying why on stderr. */
static int write_file(const char *path, const load *ld, void (*emit)(FILE *, const load *))
{
    FILE *f = fopen(path, "w");
    if (f != NULL) {
        emit(f, ld);
        if (fclose(f) == 0)
            return 0;
    }
    fprintf(stderr, "hedge_load: cannot write %s\n", path);
    return -1;
}

static int usage(void)
{
    fprintf(stderr, "usage: hedge_load --url URL --rate N --requests N [--connections N] "
                    "[--timeout MS] [--out FILE] [--seconds FILE]\n");
    return 2;
}

int main(int argc, char **argv)
{
    load ld;
    const char *out = NULL, *seconds = NULL;
    uint64_t connections = 4096;
    memset(&ld, 0, sizeof(ld));
    ld.timeout_ms = 30000;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        char *end = NULL;
        unsigned long long n = strtoull(v, &end, 10);
        int numeric = end != v && *end == '\0';
        if (strcmp(k, "--url") == 0)
            ld.url = v;
        else if (strcmp(k, "--out") == 0)
            out = v;
        else if (strcmp(k, "--seconds") == 0)
            seconds = v;
        else if (strcmp(k, "--rate") == 0 && numeric)
            ld.rate = n;
        else if (strcmp(k, "--requests") == 0 && numeric)
            ld.total = n;
        else if (strcmp(k, "--connections") == 0 && numeric)
            connections = n;
        else if (strcmp(k, "--timeout") == 0 && numeric)
            ld.timeout_ms = n;
        else
            return usage();
    }
    if ((argc - 1) % 2 != 0 || ld.url == NULL || ld.rate == 0 || ld.rate > 1000000 ||
        ld.total == 0 || ld.total > 100000000 || connections == 0)
        return usage();

    ld.lat_us = malloc(ld.total * sizeof(*ld.lat_us));
    ld.nseconds = (ld.total - 1) / ld.rate + 1;
    ld.per_second = calloc(ld.nseconds, sizeof(*ld.per_second));
    tc_client_config cc;
    tc_client_config_init(&cc);
    cc.max_connections = (size_t)connections;
    ld.loop = uv_default_loop();
    if (ld.lat_us == NULL || ld.per_second == NULL ||
        tc_client_new(&ld.client, ld.loop, &cc) != 0) {
        fprintf(stderr, "hedge_load: cannot set up\n");
        return 1;
    }
    uv_timer_init(ld.loop, &ld.tick);
    ld.tick.data = &ld;
    ld.t0_ns = uv_hrtime();
    uv_timer_start(&ld.tick, on_tick, 0, 1);
    uv_run(ld.loop, UV_RUN_DEFAULT);
    double secs = (double)(ld.last_start_ns - ld.t0_ns) / 1e9;
    (void)uv_loop_close(ld.loop);

    if ((out != NULL && write_file(out, &ld, write_latencies) != 0) ||
        (seconds != NULL && write_file(seconds, &ld, write_seconds) != 0))
        return 1;
    qsort(ld.lat_us, ld.ok, sizeof(*ld.lat_us), cmp_u32);
    printf("requests=%llu ok=%llu failed=%llu rate=%.1f p50=%.2f p90=%.2f p99=%.2f p99.9=%.2f "
           "p99.99=%.2f max=%.2f\n",
           (unsigned long long)ld.total, (unsigned long long)ld.ok, (unsigned long long)ld.failed,
           (double)ld.total / secs, pct_ms(ld.lat_us, ld.ok, 50), pct_ms(ld.lat_us, ld.ok, 90),
           pct_ms(ld.lat_us, ld.ok, 99), pct_ms(ld.lat_us, ld.ok, 99.9),
           pct_ms(ld.lat_us, ld.ok, 99.99), ld.ok ? ld.lat_us[ld.ok - 1] / 1000.0 : 0.0);
    free(ld.lat_us);
    free(ld.per_second);
    return 0;
}
