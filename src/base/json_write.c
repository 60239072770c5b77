/*
 * The JSON string writer of json_write.h: plain runs are appended in one piece, so text that
 * needs no escaping costs one copy.
 */
#include <stdint.h>
#include <string.h>

#include "base/fmt.h"
#include "base/json_write.h"

size_t tc__utf8_len(const unsigned char *s, size_t n)
{
    unsigned char ch = s[0];
    size_t len;
    uint32_t cp, min;
    if (ch < 0x80)
        return 1;
    if (ch >= 0xC2 && ch <= 0xDF) {
        len = 2;
        cp = ch & 0x1F;
        min = 0x80;
    } else if (ch >= 0xE0 && ch <= 0xEF) {
        len = 3;
        cp = ch & 0x0F;
        min = 0x800;
    } else if (ch >= 0xF0 && ch <= 0xF4) {
        len = 4;
        cp = ch & 0x07;
        min = 0x10000;
    } else {
        return 0;
    }
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return len;
}

/* The escape for c (< 0x80, not plain) into e; returns its length. */
static size_t escape_ascii(unsigned char ch, char e[6])
{
    static const char hex[] = "0123456789abcdef";
    e[0] = '\\';
    switch (ch) {
    case '"':
    case '\\':
        e[1] = (char)ch;
        return 2;
    case '\n':
        e[1] = 'n';
        return 2;
    case '\r':
        e[1] = 'r';
        return 2;
    case '\t':
        e[1] = 't';
        return 2;
    case '\b':
        e[1] = 'b';
        return 2;
    case '\f':
        e[1] = 'f';
        return 2;
    default:
        e[1] = 'u';
        e[2] = '0';
        e[3] = '0';
        e[4] = hex[ch >> 4];
        e[5] = hex[ch & 15];
        return 6;
    }
}

int tc__json_write_str(tc__buf *b, const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + len, *run = p;
    int rc = tc__buf_append(b, TC__LIT("\""));
    while (rc == 0 && p < end) {
        unsigned char ch = *p;
        if (ch >= 0x20 && ch < 0x80 && ch != '"' && ch != '\\') {
            p++;
            continue;
        }
        size_t n = ch < 0x80 ? 0 : tc__utf8_len(p, (size_t)(end - p));
        if (n > 0) { /* a valid multi-byte character: part of the run */
            p += n;
            continue;
        }
        char e[6];
        size_t elen = ch < 0x80 ? escape_ascii(ch, e) : 6;
        if (ch >= 0x80) {
            /* e is a byte array, not a C string */
            // NOLINTNEXTLINE(bugprone-not-null-terminated-result)
            memcpy(e, "\\ufffd", 6);
        }
        rc = tc__buf_append(b, run, (size_t)(p - run));
        if (rc == 0)
            rc = tc__buf_append(b, e, elen);
        run = ++p;
    }
    if (rc == 0)
        rc = tc__buf_append(b, run, (size_t)(p - run));
    if (rc == 0)
        rc = tc__buf_append(b, TC__LIT("\""));
    return rc;
}
