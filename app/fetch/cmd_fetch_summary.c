/*
 * tailcut fetch: the summary (see cmd_fetch.h). Every figure comes from counters and a
 * fixed-size log-linear latency histogram fed one result at a time, never from a list of
 * results, so a million URLs cost the summary nothing more than ten. The text on stderr and the
 * --summary-json object are two renderings of the same fetch_summary and fetch_run.
 */
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cmd_fetch.h"
#include "tailcut/error.h"

void fetch_summary_init(fetch_summary *s)
{
    memset(s, 0, sizeof(*s));
    tc__hist_init(&s->hist);
}

void fetch_summary_add(fetch_summary *s, const tc_fetch_result *r)
{
    s->results++;
    if (r->error == 0 && r->status >= 200 && r->status <= 399)
        s->ok++;
    else
        s->failed++;
    if (r->error != 0)
        s->no_response++;
    if (r->status == 0 || (r->status >= 100 && r->status < FETCH_NSTATUS))
        s->status_counts[r->status]++;
    else
        s->status_other++;
    if (r->error < 0 && -r->error < FETCH_NERRORS)
        s->error_counts[-r->error]++;
    if (r->attempts > 0 && r->error != TC_EURL) /* bad URLs are not requests */
        tc__hist_record(&s->hist, (uint64_t)(r->ms * 1000.0 + 0.5));
}

static double per_second(const fetch_summary *s, const fetch_run *run)
{
    return run->secs > 0 ? (double)s->results / run->secs : 0.0;
}

static double pct_ms(const fetch_summary *s, double p)
{
    return (double)tc__hist_percentile(&s->hist, p) / 1000.0;
}

static const char *signal_name(int signum)
{
    return signum == SIGINT ? "SIGINT" : signum == SIGTERM ? "SIGTERM" : "signal";
}

void fetch_summary_print(FILE *out, const fetch_summary *s, const fetch_run *run)
{
    (void)fprintf(out, "tailcut fetch: summary\n");
    (void)fprintf(out, "  requests: %llu in %.3f s (%.1f requests/s)\n",
                  (unsigned long long)s->results, run->secs, per_second(s, run));
    (void)fprintf(out, "  ok: %llu\n", (unsigned long long)s->ok);
    (void)fprintf(out, "  failed: %llu (no response: %llu)\n", (unsigned long long)s->failed,
                  (unsigned long long)s->no_response);
    (void)fprintf(out, "  retries: %llu\n", (unsigned long long)run->stats.retries);
    (void)fprintf(out, "  latency ms: p50 %.3f, p90 %.3f, p99 %.3f, max %.3f\n", pct_ms(s, 50),
                  pct_ms(s, 90), pct_ms(s, 99), pct_ms(s, 100));
    (void)fprintf(out, "  status:");
    int any = 0;
    for (int st = 100; st < FETCH_NSTATUS; st++) {
        if (s->status_counts[st]) {
            (void)fprintf(out, " %d=%llu", st, (unsigned long long)s->status_counts[st]);
            any = 1;
        }
    }
    if (s->status_counts[0]) {
        (void)fprintf(out, " none=%llu", (unsigned long long)s->status_counts[0]);
        any = 1;
    }
    if (s->status_other) {
        (void)fprintf(out, " other=%llu", (unsigned long long)s->status_other);
        any = 1;
    }
    (void)fprintf(out, "%s\n", any ? "" : " -");
    if (s->no_response) {
        (void)fprintf(out, "  errors:");
        for (int e = 1; e < FETCH_NERRORS; e++)
            if (s->error_counts[e])
                (void)fprintf(out, " %s=%llu", tc_err_name(-e),
                              (unsigned long long)s->error_counts[e]);
        (void)fprintf(out, "\n");
    }
    if (run->signum)
        (void)fprintf(out, "  interrupted: %llu not finished (cancelled or held back)\n",
                      (unsigned long long)run->stats.cancelled);
}

/* Appends printf-formatted text; the pieces here are short numbers and names. */
__attribute__((format(printf, 2, 3))) static int put(tc__buf *b, const char *fmt, ...)
{
    char tmp[160];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(tmp))
        return TC_ENOMEM;
    return tc__buf_append(b, tmp, (size_t)n);
}

#define PUT(...)                                                                                   \
    do {                                                                                           \
        if (put(b, __VA_ARGS__) != 0)                                                              \
            return TC_ENOMEM;                                                                      \
    } while (0)

int fetch_summary_json(tc__buf *b, const fetch_summary *s, const fetch_run *run)
{
    PUT("{\"requests\":%llu,\"ok\":%llu,\"failed\":%llu,\"no_response\":%llu",
        (unsigned long long)s->results, (unsigned long long)s->ok, (unsigned long long)s->failed,
        (unsigned long long)s->no_response);
    PUT(",\"attempts\":%llu,\"retries\":%llu", (unsigned long long)run->stats.attempts,
        (unsigned long long)run->stats.retries);
    PUT(",\"duration_s\":%.3f,\"requests_per_s\":%.3f", run->secs, per_second(s, run));
    if (run->rate > 0)
        PUT(",\"rate\":%.6g", run->rate);
    else
        PUT(",\"rate\":null");
    PUT(",\"concurrency\":%zu", run->concurrency);
    PUT(",\"latency_ms\":{\"samples\":%llu", (unsigned long long)s->hist.count);
    if (s->hist.count > 0)
        PUT(",\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,\"max\":%.3f}", pct_ms(s, 50), pct_ms(s, 90),
            pct_ms(s, 99), pct_ms(s, 100));
    else
        PUT(",\"p50\":null,\"p90\":null,\"p99\":null,\"max\":null}");
    PUT(",\"status\":{");
    const char *sep = "";
    for (int st = 0; st < FETCH_NSTATUS; st++) {
        if (s->status_counts[st]) {
            PUT("%s\"%d\":%llu", sep, st, (unsigned long long)s->status_counts[st]);
            sep = ",";
        }
    }
    PUT("},\"status_other\":%llu,\"errors\":{", (unsigned long long)s->status_other);
    sep = "";
    for (int e = 1; e < FETCH_NERRORS; e++) {
        if (s->error_counts[e]) {
            PUT("%s\"%s\":%llu", sep, tc_err_name(-e), (unsigned long long)s->error_counts[e]);
            sep = ",";
        }
    }
    PUT("}");
    if (run->signum)
        PUT(",\"interrupted\":\"%s\"", signal_name(run->signum));
    else
        PUT(",\"interrupted\":null");
    PUT(",\"not_finished\":%llu,\"exit_status\":%d}\n", (unsigned long long)run->stats.cancelled,
        run->exit_status);
    return 0;
}
