/*
 * Text written and read by hand where printf and strtol would cost too much per request
 * (response heads, access-log and fetch's result lines, JSON answers, percent-escapes): a string
 * literal with its length, decimal numbers, hexadecimal digits.
 */
#ifndef TAILCUT_BASE_FMT_H
#define TAILCUT_BASE_FMT_H

#include <stddef.h>
#include <stdint.h>

/* A string literal and its length, as two arguments: tc__buf_append(b, TC__LIT("null")). The
 * length is counted by the compiler, never by hand. Only for a literal (sizeof of a pointer
 * would be wrong, and an array's size counts its whole storage). */
#define TC__LIT(s) ("" s ""), (sizeof(s) - 1)

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

/* The number of digits tc__fmt_u64 writes for v. */
static inline size_t tc__fmt_u64_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 10) {
        v /= 10;
        n++;
    }
    return n;
}

/* The value of one hexadecimal digit (either case), or -1 for any other byte. */
static inline int tc__hex_value(unsigned char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    ch |= 0x20; /* ASCII letters to lower case; no other byte lands on a..f */
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    return -1;
}

#endif /* TAILCUT_BASE_FMT_H */
