/*
 * Decimal numbers written by hand where printf would cost too much per request (response
 * headers, fetch's result lines).
 */
#ifndef TAILCUT_BASE_FMT_H
#define TAILCUT_BASE_FMT_H

#include <stddef.h>
#include <stdint.h>

/* Room for any uint64_t in decimal. */
#define TC__FMT_U64_MAX 20

/* Writes v in decimal at dst (no NUL; room for TC__FMT_U64_MAX bytes); returns the digits. */
static inline size_t tc__fmt_u64(char *dst, uint64_t v)
{
    char tmp[TC__FMT_U64_MAX];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    for (size_t i = 0; i < n; i++)
        dst[i] = tmp[n - 1 - i];
    return n;
}

#endif /* TAILCUT_BASE_FMT_H */
