/*
 * Prometheus metrics with per-worker shards (see include/tailcut/metrics.h for the contract).
 *
 * The one idea: every cell has exactly one writer, the worker that owns the shard, so a write
 * is `store(load(cell) + n)` with relaxed atomics (plain moves on x86-64 and arm64, no lock
 * prefix, no contention), and the renderer, the only other party, just loads. All memory a
 * worker will ever write is allocated when its shard is made: cells for every fixed, dynamic and
 * overflow series, the label-value slots of the dynamic series, and a small open-addressing
 * hash from label values to series ids. A dynamic series is published to the renderer by
 * writing its values into the next slot and then release-storing the slot count; the renderer
 * acquire-loads the count and reads only slots below it. Rendering sums shards cell by cell and
 * merges dynamic series with equal label values across shards after sorting them.
 */
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/hash.h"
#include "metrics_internal.h"
#include "tailcut/metrics.h"

/* ---- definitions ---------------------------------------------------------------------------- */

static int valid_metric_name(const char *s)
{
    if (!s || !*s)
        return 0;
    for (size_t i = 0; s[i]; i++) {
        char ch = s[i];
        int ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_' || ch == ':' ||
                 (i > 0 && ch >= '0' && ch <= '9');
        if (!ok)
            return 0;
    }
    return 1;
}

static int valid_label_name(const char *s)
{
    if (!s || !*s || strncmp(s, "__", 2) == 0)
        return 0;
    for (size_t i = 0; s[i]; i++) {
        char ch = s[i];
        int ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_' ||
                 (i > 0 && ch >= '0' && ch <= '9');
        if (!ok)
            return 0;
    }
    return 1;
}

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *copy = tc__malloc(n);
    if (copy)
        memcpy(copy, s, n);
    return copy;
}

static void family_clear(struct family *fam)
{
    tc__free(fam->name);
    tc__free(fam->help);
    for (size_t i = 0; i < fam->n_labels; i++)
        tc__free(fam->labels[i]);
    if (fam->fixed) {
        for (size_t i = 0; i < (size_t)fam->n_fixed * fam->n_labels; i++)
            tc__free(fam->fixed[i]);
        tc__free(fam->fixed);
    }
}

static void shard_free(tc_metrics_shard *sh);

int tc_metrics_registry_new(tc_metrics_registry **out)
{
    tc_metrics_registry *reg = tc__calloc(1, sizeof *reg);
    if (!reg)
        return TC_ENOMEM;
    if (pthread_mutex_init(&reg->mu, NULL) != 0) {
        tc__free(reg);
        return TC_ENOMEM;
    }
    *out = reg;
    return 0;
}

void tc_metrics_registry_free(tc_metrics_registry *reg)
{
    if (!reg)
        return;
    for (size_t i = 0; i < reg->n_shards; i++)
        shard_free(reg->shards[i]);
    tc__free(reg->shards);
    for (uint32_t i = 0; i < reg->n_fams; i++)
        family_clear(&reg->fams[i]);
    tc__free(reg->fams);
    pthread_mutex_destroy(&reg->mu);
    tc__free(reg);
}

static int check_def(const tc_metrics_registry *reg, const tc_metrics_family_def *def)
{
    if (!def || !valid_metric_name(def->name))
        return TC_EINVAL;
    if (def->type != TC_METRIC_COUNTER && def->type != TC_METRIC_GAUGE &&
        def->type != TC_METRIC_HISTOGRAM)
        return TC_EINVAL;
    if (def->n_labels > TC_METRICS_MAX_LABELS || (def->n_labels && !def->label_names))
        return TC_EINVAL;
    for (size_t i = 0; i < def->n_labels; i++) {
        if (!valid_label_name(def->label_names[i]))
            return TC_EINVAL;
        if (def->type == TC_METRIC_HISTOGRAM && strcmp(def->label_names[i], "le") == 0)
            return TC_EINVAL;
        for (size_t j = 0; j < i; j++)
            if (strcmp(def->label_names[i], def->label_names[j]) == 0)
                return TC_EINVAL;
    }
    if (def->type == TC_METRIC_HISTOGRAM) {
        if (def->n_buckets < 1 || def->n_buckets > TC_METRICS_MAX_BUCKETS || !def->buckets)
            return TC_EINVAL;
        for (size_t i = 0; i < def->n_buckets; i++) {
            if (!isfinite(def->buckets[i]) || (i > 0 && !(def->buckets[i] > def->buckets[i - 1])))
                return TC_EINVAL;
        }
    } else if (def->n_buckets != 0) {
        return TC_EINVAL;
    }
    if (def->max_dynamic > TC_METRICS_MAX_DYNAMIC || (def->max_dynamic && def->n_labels == 0))
        return TC_EINVAL;
    for (uint32_t i = 0; i < reg->n_fams; i++)
        if (strcmp(reg->fams[i].name, def->name) == 0)
            return TC_EINVAL;
    return 0;
}

int tc_metrics_family_define(tc_metrics_registry *reg, const tc_metrics_family_def *def,
                             uint32_t *family_id)
{
    int rc = 0;
    pthread_mutex_lock(&reg->mu);
    if (reg->frozen) {
        rc = TC_EBUSY;
        goto out;
    }
    rc = check_def(reg, def);
    if (rc < 0)
        goto out;
    if (reg->n_fams == reg->cap_fams) {
        uint32_t cap = reg->cap_fams ? reg->cap_fams * 2 : 8;
        struct family *fams = tc__realloc(reg->fams, cap * sizeof *fams);
        if (!fams) {
            rc = TC_ENOMEM;
            goto out;
        }
        reg->fams = fams;
        reg->cap_fams = cap;
    }
    struct family *fam = &reg->fams[reg->n_fams];
    memset(fam, 0, sizeof *fam);
    fam->type = def->type;
    fam->name = dup_str(def->name);
    fam->help = dup_str(def->help ? def->help : "");
    int nomem = !fam->name || !fam->help;
    for (size_t i = 0; i < def->n_labels; i++) {
        fam->labels[i] = dup_str(def->label_names[i]);
        fam->n_labels = i + 1;
        nomem |= !fam->labels[i];
    }
    if (nomem) {
        family_clear(fam);
        rc = TC_ENOMEM;
        goto out;
    }
    if (def->type == TC_METRIC_HISTOGRAM) {
        memcpy(fam->bounds, def->buckets, def->n_buckets * sizeof(double));
        fam->n_bounds = def->n_buckets;
        fam->width = (uint32_t)def->n_buckets + 2;
    } else {
        fam->width = 1;
    }
    fam->max_dynamic = def->max_dynamic;
    fam->n_fixed = def->n_labels == 0 ? 1 : 0; /* the unlabelled family's one series */
    *family_id = reg->n_fams++;
out:
    pthread_mutex_unlock(&reg->mu);
    return rc;
}

static int row_equals(const struct family *fam, uint32_t row, const char *const *values)
{
    for (size_t k = 0; k < fam->n_labels; k++)
        if (strcmp(fam->fixed[(size_t)row * fam->n_labels + k], values[k]) != 0)
            return 0;
    return 1;
}

static int all_overflow(const char *const *values, size_t n)
{
    for (size_t k = 0; k < n; k++)
        if (strcmp(values[k], TC_METRICS_OVERFLOW_VALUE) != 0)
            return 0;
    return 1;
}

int tc_metrics_series_define(tc_metrics_registry *reg, uint32_t family_id,
                             const char *const *values, uint32_t *series_id)
{
    int rc = 0;
    pthread_mutex_lock(&reg->mu);
    if (reg->frozen) {
        rc = TC_EBUSY;
        goto out;
    }
    if (family_id >= reg->n_fams || !values) {
        rc = TC_EINVAL;
        goto out;
    }
    struct family *fam = &reg->fams[family_id];
    if (fam->n_labels == 0) {
        rc = TC_EINVAL;
        goto out;
    }
    for (size_t k = 0; k < fam->n_labels; k++) {
        if (!values[k]) {
            rc = TC_EINVAL;
            goto out;
        }
    }
    if (all_overflow(values, fam->n_labels)) { /* reserved for the overflow series */
        rc = TC_EINVAL;
        goto out;
    }
    for (uint32_t i = 0; i < fam->n_fixed; i++) {
        if (row_equals(fam, i, values)) {
            rc = TC_EINVAL;
            goto out;
        }
    }
    if (fam->n_fixed == fam->cap_fixed) {
        uint32_t cap = fam->cap_fixed ? fam->cap_fixed * 2 : 8;
        char **fixed = tc__realloc(fam->fixed, (size_t)cap * fam->n_labels * sizeof *fixed);
        if (!fixed) {
            rc = TC_ENOMEM;
            goto out;
        }
        fam->fixed = fixed;
        fam->cap_fixed = cap;
    }
    char **row = fam->fixed + (size_t)fam->n_fixed * fam->n_labels;
    for (size_t k = 0; k < fam->n_labels; k++) {
        row[k] = dup_str(values[k]);
        if (!row[k]) {
            while (k-- > 0)
                tc__free(row[k]);
            rc = TC_ENOMEM;
            goto out;
        }
    }
    *series_id = fam->n_fixed++;
out:
    pthread_mutex_unlock(&reg->mu);
    return rc;
}

/* ---- shards --------------------------------------------------------------------------------- */

static uint32_t hash_values(const char *const *values, size_t n)
{
    static const unsigned char sep = 0xff; /* between values: ("ab","c") != ("a","bc") */
    uint32_t hash = TC__FNV1A_INIT;
    for (size_t k = 0; k < n; k++)
        hash = tc__fnv1a(tc__fnv1a_str(hash, values[k]), &sep, 1);
    return hash;
}

static int series_equals(const struct family *fam, const struct shard_family *sf, uint32_t id,
                         const char *const *values)
{
    if (id < fam->n_fixed)
        return row_equals(fam, id, values);
    for (size_t k = 0; k < fam->n_labels; k++)
        if (strcmp(slot_value(sf, fam->n_labels, id - fam->n_fixed, k), values[k]) != 0)
            return 0;
    return 1;
}

static void shard_free(tc_metrics_shard *sh)
{
    if (!sh)
        return;
    for (uint32_t i = 0; i < sh->n_fams; i++) {
        tc__free(sh->fams[i].cells);
        tc__free(sh->fams[i].values);
        tc__free(sh->fams[i].table);
    }
    tc__free(sh);
}

static int shard_family_init(struct shard_family *sf, const struct family *fam)
{
    uint32_t n_series = fam->n_fixed + fam->max_dynamic + (fam->max_dynamic ? 1 : 0);
    size_t n_cells = (size_t)n_series * fam->width;
    sf->type = fam->type;
    sf->width = fam->width;
    sf->n_fixed = fam->n_fixed;
    sf->max_dynamic = fam->max_dynamic;
    sf->bounds = fam->bounds;
    sf->n_bounds = fam->n_bounds;
    atomic_init(&sf->n_dynamic, 0);
    /* Each shard's cells are their own cache-line-aligned block: no false sharing. */
    size_t bytes = (n_cells * sizeof(uint64_t) + 63) / 64 * 64;
    sf->cells = aligned_alloc(64, bytes ? bytes : 64);
    if (!sf->cells)
        return TC_ENOMEM;
    for (size_t i = 0; i < n_cells; i++)
        atomic_init(&sf->cells[i], 0);
    if (fam->max_dynamic) {
        sf->values = tc__calloc((size_t)fam->max_dynamic * fam->n_labels, TC_METRICS_VALUE_MAX);
        if (!sf->values)
            return TC_ENOMEM;
    }
    if (fam->n_labels) {
        uint32_t size = 2;
        while (size < 2 * (fam->n_fixed + fam->max_dynamic))
            size *= 2;
        sf->table = tc__calloc(size, sizeof *sf->table);
        if (!sf->table)
            return TC_ENOMEM;
        sf->mask = size - 1;
        for (uint32_t id = 0; id < fam->n_fixed; id++) {
            const char *const *row = (const char *const *)fam->fixed + (size_t)id * fam->n_labels;
            uint32_t i = hash_values(row, fam->n_labels) & sf->mask;
            while (sf->table[i])
                i = (i + 1) & sf->mask;
            sf->table[i] = id + 1;
        }
    }
    return 0;
}

int tc_metrics_shard_new(tc_metrics_registry *reg, tc_metrics_shard **out)
{
    int rc = 0;
    pthread_mutex_lock(&reg->mu);
    tc_metrics_shard *sh =
        tc__calloc(1, sizeof *sh + (size_t)reg->n_fams * sizeof(struct shard_family));
    if (!sh) {
        rc = TC_ENOMEM;
        goto out;
    }
    sh->reg = reg;
    sh->n_fams = reg->n_fams;
    for (uint32_t i = 0; i < reg->n_fams; i++) {
        rc = shard_family_init(&sh->fams[i], &reg->fams[i]);
        if (rc < 0)
            goto fail;
    }
    if (reg->n_shards == reg->cap_shards) {
        size_t cap = reg->cap_shards ? reg->cap_shards * 2 : 8;
        tc_metrics_shard **shards = tc__realloc(reg->shards, cap * sizeof(tc_metrics_shard *));
        if (!shards) {
            rc = TC_ENOMEM;
            goto fail;
        }
        reg->shards = shards;
        reg->cap_shards = cap;
    }
    reg->shards[reg->n_shards++] = sh;
    reg->frozen = 1;
    *out = sh;
    goto out;
fail:
    shard_free(sh);
out:
    pthread_mutex_unlock(&reg->mu);
    return rc;
}

int tc_metrics_series_lookup(tc_metrics_shard *shard, uint32_t family_id, const char *const *values,
                             uint32_t *series_id)
{
    *series_id = TC_METRICS_SERIES_INVALID;
    if (family_id >= shard->n_fams)
        return TC_EINVAL;
    const struct family *fam = &shard->reg->fams[family_id];
    struct shard_family *sf = &shard->fams[family_id];
    if (fam->n_labels == 0) {
        *series_id = TC_METRICS_SERIES_DEFAULT;
        return 0;
    }
    if (!values)
        return TC_EINVAL;
    int too_long = 0;
    for (size_t k = 0; k < fam->n_labels; k++) {
        if (!values[k])
            return TC_EINVAL;
        too_long |= strnlen(values[k], TC_METRICS_VALUE_MAX) >= TC_METRICS_VALUE_MAX;
    }

    uint32_t i = hash_values(values, fam->n_labels) & sf->mask;
    for (; sf->table[i]; i = (i + 1) & sf->mask) {
        uint32_t id = sf->table[i] - 1;
        if (series_equals(fam, sf, id, values)) {
            *series_id = id;
            return 0;
        }
    }
    if (fam->max_dynamic == 0)
        return TC_EINVAL;
    uint32_t overflow = fam->n_fixed + fam->max_dynamic;
    *series_id = overflow;
    if (all_overflow(values, fam->n_labels))
        return 0;
    if (too_long)
        return TC_ETOOLARGE;
    uint32_t n = atomic_load_explicit(&sf->n_dynamic, memory_order_relaxed);
    if (n == fam->max_dynamic)
        return TC_EBUSY;
    for (size_t k = 0; k < fam->n_labels; k++)
        strcpy(slot_value(sf, fam->n_labels, n, k), values[k]);
    sf->table[i] = fam->n_fixed + n + 1;
    atomic_store_explicit(&sf->n_dynamic, n + 1, memory_order_release);
    *series_id = fam->n_fixed + n;
    return 0;
}

/* ---- hot-path writes ------------------------------------------------------------------------ */

/* The series' first cell, or NULL for an invalid id. Ids of dynamic series not handed out yet
 * are invalid too, so a write can never land in a series the renderer cannot see. */
static inline _Atomic uint64_t *series_cells(tc_metrics_shard *sh, uint32_t family_id,
                                             uint32_t series_id, tc_metric_type type)
{
    if (family_id >= sh->n_fams)
        return NULL;
    struct shard_family *sf = &sh->fams[family_id];
    if (sf->type != type)
        return NULL;
    if (series_id >= sf->n_fixed) {
        uint32_t dyn = series_id - sf->n_fixed;
        if (sf->max_dynamic == 0 ||
            (dyn != sf->max_dynamic &&
             dyn >= atomic_load_explicit(&sf->n_dynamic, memory_order_relaxed)))
            return NULL;
    }
    return sf->cells + (size_t)series_id * sf->width;
}

/* Single writer: a relaxed load and store, never a read-modify-write. */
static inline void cell_add(_Atomic uint64_t *cells, uint64_t n)
{
    atomic_store_explicit(cells, atomic_load_explicit(cells, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

void tc_metrics_counter_add(tc_metrics_shard *shard, uint32_t family_id, uint32_t series_id,
                            uint64_t n)
{
    _Atomic uint64_t *cells = series_cells(shard, family_id, series_id, TC_METRIC_COUNTER);
    if (cells)
        cell_add(cells, n);
}

void tc_metrics_gauge_add(tc_metrics_shard *shard, uint32_t family_id, uint32_t series_id,
                          int64_t delta)
{
    _Atomic uint64_t *cells = series_cells(shard, family_id, series_id, TC_METRIC_GAUGE);
    if (cells)
        cell_add(cells, (uint64_t)delta); /* two's complement wrap-around adds negatives */
}

void tc_metrics_gauge_set(tc_metrics_shard *shard, uint32_t family_id, uint32_t series_id,
                          int64_t value)
{
    _Atomic uint64_t *cells = series_cells(shard, family_id, series_id, TC_METRIC_GAUGE);
    if (cells)
        atomic_store_explicit(cells, (uint64_t)value, memory_order_relaxed);
}

void tc_metrics_histogram_observe(tc_metrics_shard *shard, uint32_t family_id, uint32_t series_id,
                                  double value)
{
    _Atomic uint64_t *cells = series_cells(shard, family_id, series_id, TC_METRIC_HISTOGRAM);
    if (!cells || isnan(value))
        return;
    const struct shard_family *sf = &shard->fams[family_id];
    size_t lo = 0, hi = sf->n_bounds; /* first bound >= value, n_bounds meaning +Inf */
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (value <= sf->bounds[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    cell_add(&cells[lo], 1);
    _Atomic uint64_t *sum = &cells[sf->n_bounds + 1];
    uint64_t bits = atomic_load_explicit(sum, memory_order_relaxed);
    double sum_d;
    memcpy(&sum_d, &bits, sizeof sum_d);
    sum_d += value;
    memcpy(&bits, &sum_d, sizeof sum_d);
    atomic_store_explicit(sum, bits, memory_order_relaxed);
}
