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

int tc__fetch_result_json(tc__buf *b, const tc_fetch_result *r, int with_body)
{
    const char *url = r->url ? r->url : "";
    if (tc__buf_append(b, TC__LIT("{\"url\":")) != 0 ||
        tc__json_write_str(b, url, strlen(url)) != 0)
        return TC_ENOMEM;
    /* The numbers by hand: this runs once per URL, and printf's float path is not cheap. */
    char num[128], *o = num;
    double ms = r->ms > 0 ? r->ms : 0;
    uint64_t us = ms < 1e15 ? (uint64_t)(ms * 1000.0 + 0.5) : (uint64_t)1e18;
    memcpy(o, ",\"status\":", 10);
    o += 10;
    if (r->status < 0) {
        *o++ = '-';
        o += tc__fmt_u64(o, (uint64_t)(-(int64_t)r->status));
    } else {
        o += tc__fmt_u64(o, (uint64_t)r->status);
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
    o += tc__fmt_u64(o, (uint64_t)r->bytes);
    memcpy(o, ",\"error\":", 9);
    o += 9;
    if (tc__buf_append(b, num, (size_t)(o - num)) != 0)
        return TC_ENOMEM;
    if (r->error == 0) {
        if (tc__buf_append(b, TC__LIT("null")) != 0)
            return TC_ENOMEM;
    } else {
        const char *m = r->message && *r->message ? r->message : tc_strerror(r->error);
        if (tc__json_write_str(b, m, strlen(m)) != 0)
            return TC_ENOMEM;
    }
    if (with_body) {
        if (tc__buf_append(b, TC__LIT(",\"body\":")) != 0)
            return TC_ENOMEM;
        int rc =
            r->body ? tc__json_write_str(b, r->body, r->bytes) : tc__buf_append(b, TC__LIT("null"));
        if (rc != 0)
            return TC_ENOMEM;
    }
    return tc__buf_append(b, TC__LIT("}\n"));
}

/* ---- latency histogram ---------------------------------------------------------------------- */

void tc__hist_init(tc__hist *h)
{
    memset(h, 0, sizeof(*h));
}

void tc__hist_record(tc__hist *h, uint64_t us)
{
    if (h->count == 0 || us < h->min)
        h->min = us;
    if (us > h->max)
        h->max = us;
    h->count++;
    h->buckets[tc__loglin_index(us, TC__HIST_SUB_BITS, TC__HIST_MAX_BITS)]++;
}

uint64_t tc__hist_percentile(const tc__hist *h, double p)
{
    if (h->count == 0)
        return 0;
    if (p >= 100)
        return h->max;
    if (p < 0)
        p = 0;
    uint64_t rank = tc__loglin_rank(p / 100.0, h->count);
    uint64_t seen = 0;
    for (size_t i = 0; i < TC__HIST_BUCKETS; i++) {
        seen += h->buckets[i];
        if (seen >= rank) {
            uint64_t low, width;
            tc__loglin_bucket(i, TC__HIST_SUB_BITS, &low, &width);
            uint64_t v = low + width / 2;
            if (v < h->min)
                v = h->min;
            if (v > h->max)
                v = h->max;
            return v;
        }
    }
    return h->max;
}
