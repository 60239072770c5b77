/*
 * What `tailcut fetch` reports (fetch_internal.h): one JSON line per result and the latency
 * histogram behind its summary. Strings go through the base JSON writer, so every line is valid
 * JSON whatever the URL, message or body held.
 */
#include <stdint.h>
#include <string.h>

#include "base/fmt.h"
#include "base/json_write.h"
#include "base/loglin.h"
#include "fetch_internal.h"
#include "tailcut/error.h"

/* ---- result lines --------------------------------------------------------------------------- */

int tc__fetch_result_json(tc__buf *b, const tc_fetch_result *res, int with_body)
{
    const char *url = res->url ? res->url : "";
    if (tc__buf_append(b, TC__LIT("{\"url\":")) != 0 ||
        tc__json_write_str(b, url, strlen(url)) != 0)
        return TC_ENOMEM;
    /* The numbers by hand: this runs once per URL, and printf's float path is not cheap. */
    char num[128], *o = num;
    double ms = res->ms > 0 ? res->ms : 0;
    uint64_t us = ms < 1e15 ? (uint64_t)(ms * 1000.0 + 0.5) : (uint64_t)1e18;
    memcpy(o, ",\"status\":", 10);
    o += 10;
    if (res->status < 0) {
        *o++ = '-';
        o += tc__fmt_u64(o, (uint64_t)(-(int64_t)res->status));
    } else {
        o += tc__fmt_u64(o, (uint64_t)res->status);
    }
    memcpy(o, ",\"ms\":", 6);
    o += 6;
    o += tc__fmt_u64(o, us / 1000);
    *o++ = '.';
    o[0] = (char)('0' + (us / 100) % 10);
    o[1] = (char)('0' + (us / 10) % 10);
    o[2] = (char)('0' + us % 10);
    o += 3;
    memcpy(o, ",\"bytes\":", 9);
    o += 9;
    o += tc__fmt_u64(o, (uint64_t)res->bytes);
    memcpy(o, ",\"error\":", 9);
    o += 9;
    if (tc__buf_append(b, num, (size_t)(o - num)) != 0)
        return TC_ENOMEM;
    if (res->error == 0) {
        if (tc__buf_append(b, TC__LIT("null")) != 0)
            return TC_ENOMEM;
    } else {
        const char *msg = res->message && *res->message ? res->message : tc_strerror(res->error);
        if (tc__json_write_str(b, msg, strlen(msg)) != 0)
            return TC_ENOMEM;
    }
    if (with_body) {
        if (tc__buf_append(b, TC__LIT(",\"body\":")) != 0)
            return TC_ENOMEM;
        int rc = res->body ? tc__json_write_str(b, res->body, res->bytes)
                           : tc__buf_append(b, TC__LIT("null"));
        if (rc != 0)
            return TC_ENOMEM;
    }
    return tc__buf_append(b, TC__LIT("}\n"));
}

/* ---- latency histogram ---------------------------------------------------------------------- */

void tc__hist_init(tc__hist *hist)
{
    memset(hist, 0, sizeof(*hist));
}

void tc__hist_record(tc__hist *hist, uint64_t us)
{
    if (hist->count == 0 || us < hist->min)
        hist->min = us;
    if (us > hist->max)
        hist->max = us;
    hist->count++;
    hist->buckets[tc__loglin_index(us, TC__HIST_SUB_BITS, TC__HIST_MAX_BITS)]++;
}

uint64_t tc__hist_percentile(const tc__hist *hist, double quantile)
{
    if (hist->count == 0)
        return 0;
    if (quantile >= 100)
        return hist->max;
    if (quantile < 0)
        quantile = 0;
    uint64_t rank = tc__loglin_rank(quantile / 100.0, hist->count);
    uint64_t seen = 0;
    for (size_t i = 0; i < TC__HIST_BUCKETS; i++) {
        seen += hist->buckets[i];
        if (seen >= rank) {
            uint64_t low, width;
            tc__loglin_bucket(i, TC__HIST_SUB_BITS, &low, &width);
            uint64_t v = low + width / 2;
            if (v < hist->min)
                v = hist->min;
            if (v > hist->max)
                v = hist->max;
            return v;
        }
    }
    return hist->max;
}
