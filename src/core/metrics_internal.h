/*
 * What metrics.c (definitions, shards, hot-path writes) and metrics_render.c (the Prometheus
 * text) share: the registry, its families and the shards' layout. Internal: never installed.
 */
#ifndef TAILCUT_METRICS_INTERNAL_H
#define TAILCUT_METRICS_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "tailcut/metrics.h"

/* A family as defined; immutable once the first shard exists. */
struct family {
    tc_metric_type type;
    char *name;
    char *help;
    char *labels[TC_METRICS_MAX_LABELS];
    size_t n_labels;
    double bounds[TC_METRICS_MAX_BUCKETS];
    size_t n_bounds;
    uint32_t max_dynamic;
    char **fixed; /* n_fixed rows of n_labels values */
    uint32_t n_fixed, cap_fixed;
    uint32_t width; /* cells per series: 1, or n_bounds + 2 for a histogram */
};

struct tc_metrics_registry {
    pthread_mutex_t mu; /* guards shards/frozen against render and shard_new; never hot */
    struct family *fams;
    uint32_t n_fams, cap_fams;
    tc_metrics_shard **shards;
    size_t n_shards, cap_shards;
    int frozen;
};

/* One family's part of one shard. Series ids: [0, n_fixed) fixed, [n_fixed, n_fixed +
 * max_dynamic) dynamic in order of first use, n_fixed + max_dynamic the overflow series (only
 * when max_dynamic > 0). */
struct shard_family {
    _Atomic uint64_t *cells; /* n_series * width, written only by the owner */
    tc_metric_type type;
    uint32_t width;
    uint32_t n_fixed;
    uint32_t max_dynamic;
    _Atomic uint32_t n_dynamic; /* release-stored after a new slot's values are written */
    const double *bounds;       /* the registry's (immutable) */
    size_t n_bounds;
    char *values;    /* max_dynamic * n_labels slots of TC_METRICS_VALUE_MAX bytes */
    uint32_t *table; /* series id + 1, 0 = empty */
    uint32_t mask;
};

struct tc_metrics_shard {
    tc_metrics_registry *reg;
    uint32_t n_fams;
    struct shard_family fams[];
};

/* The value of label k of dynamic series dyn. */
static inline char *slot_value(const struct shard_family *sf, size_t n_labels, uint32_t dyn,
                               size_t k)
{
    return sf->values + ((size_t)dyn * n_labels + k) * TC_METRICS_VALUE_MAX;
}

#endif /* TAILCUT_METRICS_INTERNAL_H */
