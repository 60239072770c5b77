/*
 * The renderer of metrics.h: sums every shard cell by cell, merges dynamic series with equal
 * label values across shards after sorting them, and prints the Prometheus text exposition
 * format 0.0.4 into a bounded buffer. See metrics.c for the layout it reads.
 */
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "base/fmt.h"
#include "metrics_internal.h"
#include "tailcut/metrics.h"

static const char *const overflow_values[TC_METRICS_MAX_LABELS] = {
    TC_METRICS_OVERFLOW_VALUE, TC_METRICS_OVERFLOW_VALUE, TC_METRICS_OVERFLOW_VALUE,
    TC_METRICS_OVERFLOW_VALUE};

/* ---- rendering ------------------------------------------------------------------------------ */

/* The document under construction; the first error sticks and stops all further output. */
typedef struct outbuf {
    tc__buf buf;
    int err;
} outbuf;

static void out_put(outbuf *b, const char *s, size_t n)
{
    if (!b->err)
        b->err = tc__buf_append(&b->buf, s, n);
}

static void out_str(outbuf *b, const char *s)
{
    out_put(b, s, strlen(s));
}

static void out_fmt(outbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void out_fmt(outbuf *b, const char *fmt, ...)
{
    char tmp[64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n < sizeof tmp)
        out_put(b, tmp, (size_t)n);
    else if (!b->err)
        b->err = TC_EINVAL; /* all our formats are short numbers */
}

/* Escapes for label values (backslash, quote, newline) or, with quote = 0, for HELP text
 * (backslash, newline). */
static void out_escaped(outbuf *b, const char *s, int quote)
{
    const char *run = s;
    for (; *s; s++) {
        const char *rep = NULL;
        if (*s == '\\')
            rep = "\\\\";
        else if (*s == '\n')
            rep = "\\n";
        else if (*s == '"' && quote)
            rep = "\\\"";
        if (rep) {
            out_put(b, run, (size_t)(s - run));
            out_str(b, rep);
            run = s + 1;
        }
    }
    out_put(b, run, (size_t)(s - run));
}

/* The shortest %g text (at least 6 significant digits allowed, so 10 prints as "10", not
 * "1e+01") that reads back as exactly v; Prometheus spellings for the rest. More digits never
 * break the round trip, so the first precision from 6 up that works is the answer. */
static void format_double(double v, char out[40])
{
    if (isnan(v)) {
        strcpy(out, "NaN");
        return;
    }
    if (isinf(v)) {
        strcpy(out, v > 0 ? "+Inf" : "-Inf");
        return;
    }
    for (int prec = 6; prec <= 17; prec++) {
        (void)snprintf(out, 40, "%.*g", prec, v); /* at most 24 bytes: fits */
        if (strtod(out, NULL) == v)
            return;
    }
}

/* name{l1="v1",...[,le="x"]} */
static void out_series_name(outbuf *b, const struct family *fam, const char *suffix,
                            const char *const *values, const char *le)
{
    out_str(b, fam->name);
    out_str(b, suffix);
    if (fam->n_labels == 0 && !le)
        return;
    out_put(b, TC__LIT("{"));
    for (size_t k = 0; k < fam->n_labels; k++) {
        if (k)
            out_put(b, TC__LIT(","));
        out_str(b, fam->labels[k]);
        out_put(b, TC__LIT("=\""));
        out_escaped(b, values[k], 1);
        out_put(b, TC__LIT("\""));
    }
    if (le) {
        if (fam->n_labels)
            out_put(b, TC__LIT(","));
        out_str(b, "le=\"");
        out_str(b, le);
        out_put(b, TC__LIT("\""));
    }
    out_put(b, TC__LIT("}"));
}

/* Sums of one series' cells over shards; sum_d is the histogram sum. */
typedef struct acc {
    uint64_t cells[TC_METRICS_MAX_BUCKETS + 1];
    double sum_d;
} acc;

static void acc_add(acc *ac, const struct family *fam, const struct shard_family *sf, uint32_t id)
{
    const _Atomic uint64_t *cells = sf->cells + (size_t)id * sf->width;
    size_t n = fam->type == TC_METRIC_HISTOGRAM ? fam->n_bounds + 1 : 1;
    for (size_t i = 0; i < n; i++)
        ac->cells[i] += atomic_load_explicit(&cells[i], memory_order_relaxed);
    if (fam->type == TC_METRIC_HISTOGRAM) {
        uint64_t bits = atomic_load_explicit(&cells[fam->n_bounds + 1], memory_order_relaxed);
        double sum_d;
        memcpy(&sum_d, &bits, sizeof sum_d);
        ac->sum_d += sum_d;
    }
}

static void out_series(outbuf *b, const struct family *fam, const char *const *values,
                       const acc *ac)
{
    char num[40];
    switch (fam->type) {
    case TC_METRIC_COUNTER:
        out_series_name(b, fam, "", values, NULL);
        out_fmt(b, " %llu\n", (unsigned long long)ac->cells[0]);
        break;
    case TC_METRIC_GAUGE:
        out_series_name(b, fam, "", values, NULL);
        out_fmt(b, " %lld\n", (long long)(int64_t)ac->cells[0]);
        break;
    case TC_METRIC_HISTOGRAM: {
        uint64_t cum = 0;
        for (size_t i = 0; i <= fam->n_bounds; i++) {
            cum += ac->cells[i];
            if (i < fam->n_bounds)
                format_double(fam->bounds[i], num);
            else
                strcpy(num, "+Inf");
            out_series_name(b, fam, "_bucket", values, num);
            out_fmt(b, " %llu\n", (unsigned long long)cum);
        }
        format_double(ac->sum_d, num);
        out_series_name(b, fam, "_sum", values, NULL);
        out_put(b, TC__LIT(" "));
        out_str(b, num);
        out_put(b, TC__LIT("\n"));
        out_series_name(b, fam, "_count", values, NULL);
        out_fmt(b, " %llu\n", (unsigned long long)cum);
        break;
    }
    }
}

/* A dynamic or overflow series of one shard, for sorting and merging across shards. */
typedef struct dyn_entry {
    const char *values[TC_METRICS_MAX_LABELS];
    size_t n_labels;
    const struct shard_family *sf;
    uint32_t id;
} dyn_entry;

static int dyn_cmp(const void *lhs, const void *rhs)
{
    const dyn_entry *x = lhs, *y = rhs;
    for (size_t k = 0; k < x->n_labels; k++) {
        int cmp = strcmp(x->values[k], y->values[k]);
        if (cmp)
            return cmp;
    }
    return 0;
}

static int any_nonzero(const struct family *fam, const struct shard_family *sf, uint32_t id)
{
    const _Atomic uint64_t *cells = sf->cells + (size_t)id * sf->width;
    size_t n = fam->type == TC_METRIC_HISTOGRAM ? fam->n_bounds + 1 : 1;
    for (size_t i = 0; i < n; i++)
        if (atomic_load_explicit(&cells[i], memory_order_relaxed))
            return 1;
    return 0;
}

static void render_family(outbuf *b, tc_metrics_registry *reg, uint32_t fi, dyn_entry *entries)
{
    static const char *type_names[] = {"counter", "gauge", "histogram"};
    const struct family *fam = &reg->fams[fi];

    out_str(b, "# HELP ");
    out_str(b, fam->name);
    out_put(b, TC__LIT(" "));
    out_escaped(b, fam->help, 0);
    out_str(b, "\n# TYPE ");
    out_str(b, fam->name);
    out_put(b, TC__LIT(" "));
    out_str(b, type_names[fam->type]);
    out_put(b, TC__LIT("\n"));

    for (uint32_t id = 0; id < fam->n_fixed; id++) {
        acc a;
        memset(&a, 0, sizeof a);
        for (size_t si = 0; si < reg->n_shards; si++)
            acc_add(&a, fam, &reg->shards[si]->fams[fi], id);
        out_series(b, fam,
                   fam->n_labels ? (const char *const *)fam->fixed + (size_t)id * fam->n_labels
                                 : NULL,
                   &a);
    }
    if (!fam->max_dynamic || entries == NULL)
        return; /* entries is NULL only while there are no shards, so no dynamic series */

    size_t n = 0;
    for (size_t si = 0; si < reg->n_shards; si++) {
        const struct shard_family *sf = &reg->shards[si]->fams[fi];
        uint32_t nd = atomic_load_explicit(&sf->n_dynamic, memory_order_acquire);
        for (uint32_t di = 0; di < nd; di++) {
            dyn_entry *e = &entries[n++];
            for (size_t k = 0; k < fam->n_labels; k++)
                e->values[k] = slot_value(sf, fam->n_labels, di, k);
            e->n_labels = fam->n_labels;
            e->sf = sf;
            e->id = fam->n_fixed + di;
        }
        uint32_t overflow = fam->n_fixed + fam->max_dynamic;
        if (any_nonzero(fam, sf, overflow)) {
            dyn_entry *e = &entries[n++];
            memcpy(e->values, overflow_values, sizeof e->values);
            e->n_labels = fam->n_labels;
            e->sf = sf;
            e->id = overflow;
        }
    }
    if (n == 0)
        return;
    qsort(entries, n, sizeof *entries, dyn_cmp);
    for (size_t i = 0; i < n;) {
        acc a;
        memset(&a, 0, sizeof a);
        size_t j = i;
        for (; j < n && dyn_cmp(&entries[i], &entries[j]) == 0; j++)
            acc_add(&a, fam, entries[j].sf, entries[j].id);
        out_series(b, fam, entries[i].values, &a);
        i = j;
    }
}

int tc_metrics_render(tc_metrics_registry *reg, size_t max_len, char **out, size_t *out_len)
{
    outbuf b = {.err = 0};
    tc__buf_init(&b.buf, NULL, 0, max_len);
    pthread_mutex_lock(&reg->mu);
    size_t max_entries = 0;
    for (uint32_t i = 0; i < reg->n_fams; i++) {
        size_t need = reg->n_shards * ((size_t)reg->fams[i].max_dynamic + 1);
        if (need > max_entries)
            max_entries = need;
    }
    dyn_entry *entries = NULL;
    if (max_entries) {
        entries = tc__malloc(max_entries * sizeof *entries);
        if (!entries)
            b.err = TC_ENOMEM;
    }
    for (uint32_t i = 0; i < reg->n_fams && !b.err; i++)
        render_family(&b, reg, i, entries);
    pthread_mutex_unlock(&reg->mu);
    tc__free(entries);
    out_put(&b, "", 0); /* an empty document still gets storage */
    if (b.err) {
        tc__buf_reset(&b.buf);
        return b.err;
    }
    *out_len = b.buf.len;
    *out = tc__buf_cstr(&b.buf);
    return 0;
}
