/*
 * Prometheus metrics for a multi-threaded server with nothing shared and mutable on the request
 * path.
 *
 * Three objects:
 * - A registry (tc_metrics_registry) holds the metric *families*: counters, gauges and
 *   histograms, each with a name, help text, a fixed list of label names and, for histograms,
 *   fixed bucket bounds. Families and their fixed label-value sets ("series") are defined once at
 *   start-up; after the first shard exists the definitions are frozen.
 * - Each worker thread gets its own shard (tc_metrics_shard): one zeroed block of cells for every
 *   series of every family. Only the shard's owner writes it, so an increment is a relaxed atomic
 *   load, an add and a relaxed atomic store: no lock, no read-modify-write instruction, no
 *   allocation, no shared cache line.
 * - tc_metrics_render() runs on any thread at any time, sums every shard and prints the
 *   Prometheus text exposition format 0.0.4.
 *
 * Series ids. Writers name a series by (family id, series id), two small integers:
 * - A family without labels has exactly one series, TC_METRICS_SERIES_DEFAULT (0).
 * - A family with labels has the fixed series declared with tc_metrics_series_define(), numbered
 *   0, 1, 2 ... in declaration order; these ids are the same in every shard.
 * - A family may also allow up to `max_dynamic` further label-value sets that are only known at
 *   run time (e.g. status codes per endpoint). tc_metrics_series_lookup() maps a set of values to
 *   a series id in one shard, creating the series on first use (copying the values into
 *   preallocated storage: no allocation even then). Dynamic ids are per shard: cache them per
 *   worker, never pass one to another shard. The cap counts distinct dynamic sets per shard;
 *   beyond it, and for a value longer than TC_METRICS_VALUE_MAX - 1 bytes, lookup hands out the
 *   family's *overflow series*, rendered with every label value set to TC_METRICS_OVERFLOW_VALUE,
 *   so totals stay exact and the overflow is visible. Rendering merges equal label sets across
 *   shards, so a family shows at most n_fixed + max_dynamic * shards + 1 series (in practice every
 *   worker sees the same few sets).
 *
 * Values. Counters are uint64_t and only go up. Gauges are int64_t; each shard holds its own
 * contribution and the rendered value is the sum over shards, so "in flight" is gauge_add(+1) /
 * gauge_add(-1) on the worker's shard, and gauge_set() sets this shard's part only. Histograms
 * take double observations: a value lands in the first bucket whose upper bound `le` is >= it
 * (bounds are inclusive, as in Prometheus), else in +Inf; NaN observations are ignored.
 *
 * Thread rules (who may call what):
 * - registry_new, family_define, series_define: one thread, at start-up, before any shard.
 * - shard_new: any thread, at any time (it takes the registry's mutex, as render does).
 * - series_lookup, counter_add, gauge_add, gauge_set, histogram_observe: only the thread that
 *   owns the shard (one writer per shard; ownership may be handed over with proper
 *   synchronisation, e.g. a thread join).
 * - render: any thread, concurrently with the writers and with other renders. A render sees each
 *   cell at some moment during the render; a histogram's _count is computed from its buckets,
 *   so `le="+Inf"` always equals _count, but _sum may include an observation the buckets do not
 *   yet show (or vice versa).
 * - registry_free: once every writer and renderer has stopped. It frees the shards too.
 *
 * Invalid ids (unknown family, series out of range, or a family of the wrong type) make the
 * write functions do nothing: they sit on the hot path and return void.
 */
#ifndef TAILCUT_METRICS_H
#define TAILCUT_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "tailcut/error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TC_METRICS_MAX_LABELS 4     /* label names per family */
#define TC_METRICS_MAX_BUCKETS 32   /* finite histogram bounds (+Inf is implicit) */
#define TC_METRICS_MAX_DYNAMIC 1024 /* upper limit for a family's max_dynamic */
#define TC_METRICS_VALUE_MAX 64     /* bytes per dynamic label value, including the NUL */
#define TC_METRICS_OVERFLOW_VALUE "_overflow"
#define TC_METRICS_SERIES_DEFAULT 0u /* the one series of a family without labels */
#define TC_METRICS_SERIES_INVALID UINT32_MAX

typedef struct tc_metrics_registry tc_metrics_registry;
typedef struct tc_metrics_shard tc_metrics_shard;

typedef enum tc_metric_type {
    TC_METRIC_COUNTER,
    TC_METRIC_GAUGE,
    TC_METRIC_HISTOGRAM,
} tc_metric_type;

/* A family definition. Every string and array is copied by tc_metrics_family_define(); the
 * caller keeps ownership of its own. The field order stays as it is (positional initialisers
 * rely on it): 8 bytes of padding in a struct read once per family at start-up do not matter. */
// NOLINTNEXTLINE(clang-analyzer-optin.performance.Padding)
typedef struct tc_metrics_family_def {
    tc_metric_type type;
    const char *name;               /* [a-zA-Z_:][a-zA-Z0-9_:]* */
    const char *help;               /* any text; backslashes and newlines are escaped on output */
    const char *const *label_names; /* n_labels names, [a-zA-Z_][a-zA-Z0-9_]*, not "__..." */
    size_t n_labels;                /* 0..TC_METRICS_MAX_LABELS */
    const double *buckets;          /* histograms: finite, strictly increasing upper bounds */
    size_t n_buckets;               /* histograms: 1..TC_METRICS_MAX_BUCKETS; else 0 */
    uint32_t max_dynamic;           /* 0..TC_METRICS_MAX_DYNAMIC; needs n_labels > 0 */
} tc_metrics_family_def;

/* Creates an empty registry. Returns 0 and sets *out, or TC_ENOMEM. */
int tc_metrics_registry_new(tc_metrics_registry **out);

/* Frees the registry and every shard made from it. NULL is a no-op. See the thread rules. */
void tc_metrics_registry_free(tc_metrics_registry *reg);

/* Adds a family; its id (0, 1, 2 ... in definition order) goes to *family_id. Returns 0,
 * TC_EINVAL for a bad or duplicate name, a bad label name (or "le" on a histogram), bad buckets,
 * or limits exceeded; TC_EBUSY once a shard exists; TC_ENOMEM. */
int tc_metrics_family_define(tc_metrics_registry *reg, const tc_metrics_family_def *def,
                             uint32_t *family_id);

/* Declares a fixed series of a labelled family: values[0..n_labels) (copied; any UTF-8 text,
 * escaped on output). Fixed series are always rendered, also while zero. Returns 0 and sets
 * *series_id; TC_EINVAL for an unknown or unlabelled family, a NULL value or a set already
 * declared; TC_EBUSY once a shard exists; TC_ENOMEM. */
int tc_metrics_series_define(tc_metrics_registry *reg, uint32_t family_id,
                             const char *const *values, uint32_t *series_id);

/* Creates a shard for one writer thread and freezes the definitions. The registry owns the
 * shard (freed by tc_metrics_registry_free; its counts stay in the totals). Returns 0 and sets
 * *out, or TC_ENOMEM. */
int tc_metrics_shard_new(tc_metrics_registry *reg, tc_metrics_shard **out);

/* Maps values[0..n_labels) to a series id of this shard: a fixed series if one has these values,
 * else this shard's dynamic series for them, created on first use. Owner thread only; never
 * allocates. Returns 0 with a series id in *series_id; or, with the family's overflow series in
 * *series_id, TC_EBUSY when the shard already holds max_dynamic dynamic sets, TC_ETOOLARGE when a
 * value does not fit TC_METRICS_VALUE_MAX; or TC_EINVAL (unknown family, NULL values, or values
 * not fixed in a family without dynamic series) with *series_id = TC_METRICS_SERIES_INVALID. */
int tc_metrics_series_lookup(tc_metrics_shard *shard, uint32_t family_id, const char *const *values,
                             uint32_t *series_id);

/* Hot-path writes; owner thread only; no locks, no allocation. Invalid ids do nothing. */
void tc_metrics_counter_add(tc_metrics_shard *shard, uint32_t family_id, uint32_t series_id,
                            uint64_t n);
void tc_metrics_gauge_add(tc_metrics_shard *shard, uint32_t family_id, uint32_t series_id,
                          int64_t delta);
void tc_metrics_gauge_set(tc_metrics_shard *shard, uint32_t family_id, uint32_t series_id,
                          int64_t value);
void tc_metrics_histogram_observe(tc_metrics_shard *shard, uint32_t family_id, uint32_t series_id,
                                  double value);

/* Renders every family, summed over all shards, in the Prometheus text format 0.0.4: for each
 * family in definition order "# HELP", "# TYPE", then its series (fixed ones in declaration
 * order, then the dynamic and overflow ones sorted by label values); histograms as cumulative
 * _bucket{le="..."} lines ending with le="+Inf", then _sum and _count. On 0, *out is a new
 * NUL-terminated buffer the caller frees with free(), and *out_len its length (without the NUL).
 * Returns TC_ETOOLARGE if the text would exceed max_len bytes, or TC_ENOMEM; *out is then
 * untouched. Any thread, any time. */
int tc_metrics_render(tc_metrics_registry *reg, size_t max_len, char **out, size_t *out_len);

#ifdef __cplusplus
}
#endif
#endif /* TAILCUT_METRICS_H */
