/*
 * Helpers of `tailcut fetch` that are not part of the library's API: the JSON result line, the
 * latency histogram of the summary, the Retry-After parser and the parser of --rate.
 * Internal (never installed); the program (app/) and the unit tests include it through the src/
 * include directory.
 */
#ifndef TAILCUT_FETCH_INTERNAL_H
#define TAILCUT_FETCH_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "base/buf.h"
#include "base/loglin.h"
#include "tailcut/fetch.h"

/* Appends r as one JSON line, newline included:
 *   {"url":U,"status":N,"ms":N.NNN,"bytes":N,"error":null|TEXT}
 * with ,"body":TEXT|null before the closing brace when with_body is 1. Strings go through
 * tc__json_write_str (invalid UTF-8 bytes become U+FFFD, so the line is always valid JSON).
 * Returns 0, or TC_ENOMEM when b cannot take the whole line (part of it is then in b). */
int tc__fetch_result_json(tc__buf *b, const tc_fetch_result *res, int with_body);

/* Parses a Retry-After value: delay-seconds (digits only) or an HTTP-date (IMF-fixdate, RFC 850
 * or asctime form), relative to now (Unix seconds). A date in the past gives 0. The result is
 * capped at max_ms. Returns 0 and sets *ms, or TC_EINVAL. */
int tc__retry_after_parse(const char *value, time_t now, uint64_t max_ms, uint64_t *ms);

/* A log-linear histogram of microsecond values: exact below 128 us, then 128 buckets per power
 * of two (under 0.8% relative error), up to 2^40 us (about 12 days; larger values land in the
 * last bucket). A value type of fixed size (~35 KB): no allocation, no array of samples. */
#define TC__HIST_SUB_BITS 7
#define TC__HIST_MAX_BITS 40
#define TC__HIST_BUCKETS                                                                           \
    TC__LOGLIN_BUCKETS(TC__HIST_SUB_BITS, TC__HIST_MAX_BITS) /* base/loglin.h */

typedef struct tc__hist {
    uint64_t count;
    uint64_t min, max; /* exact */
    uint64_t buckets[TC__HIST_BUCKETS];
} tc__hist;

void tc__hist_init(tc__hist *hist);
void tc__hist_record(tc__hist *hist, uint64_t us);
/* The value at percentile p (0..100): the midpoint of the bucket holding the sample of that
 * rank, clamped to [min, max]; 0 when empty. p >= 100 gives max. */
uint64_t tc__hist_percentile(const tc__hist *hist, double p);

/* Parses --rate: a decimal number, digits with at most one '.' followed by at least one digit
 * ("100", "0.5", "2.25"; no sign, exponent or spaces), greater than 0 and at most
 * TC_FETCH_MAX_RATE. Returns 0 with *rate set, or TC_EINVAL with *why. */
int tc__fetch_rate_parse(const char *s, double *rate, const char **why);

#endif /* TAILCUT_FETCH_INTERNAL_H */
