/*
 * Log-linear histogram buckets, shared by every latency histogram (fetch's summary, the
 * dashboard's per-second history): values below 2^sub_bits are exact, then each power of two
 * [2^e, 2^(e+1)) is cut into 2^sub_bits equal buckets, up to 2^max_bits (larger values land in
 * the last bucket). A bucket is at most 1/2^sub_bits of its value wide, so its midpoint is within
 * 1/2^(sub_bits+1) of any value in it. The callers keep the counts (plain or atomic) themselves.
 */
#ifndef TAILCUT_BASE_LOGLIN_H
#define TAILCUT_BASE_LOGLIN_H

#include <stddef.h>
#include <stdint.h>

/* Buckets for (sub_bits, max_bits). */
#define TC__LOGLIN_BUCKETS(sub_bits, max_bits) (((max_bits) - (sub_bits) + 1) << (sub_bits))

/* The bucket of v. */
static inline size_t tc__loglin_index(uint64_t v, unsigned sub_bits, unsigned max_bits)
{
    uint64_t sub_count = UINT64_C(1) << sub_bits;
    if (v < sub_count)
        return (size_t)v;
    if (v >= (UINT64_C(1) << max_bits))
        return (size_t)TC__LOGLIN_BUCKETS(sub_bits, max_bits) - 1;
    unsigned e = 63u - (unsigned)__builtin_clzll(v); /* sub_bits .. max_bits - 1 */
    uint64_t sub = v >> (e - sub_bits);              /* sub_count .. 2 * sub_count - 1 */
    return (size_t)(e - sub_bits) * (size_t)sub_count + (size_t)sub;
}

/* The smallest value of bucket i and the bucket's width. */
static inline void tc__loglin_bucket(size_t i, unsigned sub_bits, uint64_t *low, uint64_t *width)
{
    size_t sub_count = (size_t)1 << sub_bits;
    if (i < sub_count) {
        *low = i;
        *width = 1;
        return;
    }
    unsigned e = (unsigned)(i / sub_count) + sub_bits - 1;
    uint64_t sub = (uint64_t)(i % sub_count) + sub_count;
    *low = sub << (e - sub_bits);
    *width = UINT64_C(1) << (e - sub_bits);
}

/* The nearest rank of fraction q (0..1) of count samples: ceil(q x count), at least 1. */
static inline uint64_t tc__loglin_rank(double q, uint64_t count)
{
    double want = q * (double)count;
    uint64_t rank = (uint64_t)want;
    if ((double)rank < want)
        rank++;
    return rank == 0 ? 1 : rank;
}

#endif /* TAILCUT_BASE_LOGLIN_H */
