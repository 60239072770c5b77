/*
 * FNV-1a, 32 bits: the one string hash of tailcut (the table's buckets, the metrics shards, the
 * batcher's keys). Not for anything an attacker can aim at a fixed table size without a seed:
 * callers that hash client input start from a per-object seed (TC__FNV1A_INIT ^ seed).
 */
#ifndef TAILCUT_BASE_HASH_H
#define TAILCUT_BASE_HASH_H

#include <stddef.h>
#include <stdint.h>

#define TC__FNV1A_INIT 2166136261u

/* h extended by the bytes p[0..n). */
static inline uint32_t tc__fnv1a(uint32_t h, const void *p, size_t n)
{
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ s[i]) * 16777619u;
    return h;
}

/* h extended by the bytes of the NUL-terminated s. */
static inline uint32_t tc__fnv1a_str(uint32_t h, const char *s)
{
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

#endif /* TAILCUT_BASE_HASH_H */
