/*
 * Query strings, percent-encoding and the contract's strict parameter rules (CONTRACT §1).
 *
 * Everything here works on byte ranges and caller buffers and never allocates. The one idea:
 * parameter names are compared *after* decoding, one decoded byte at a time, so a name spelled
 * "%74imeout" or "timeou%74" is the same parameter as "timeout" without ever needing a buffer
 * for the decoded name; and the timeout value is checked digit by digit while it is decoded,
 * saturating above the limit, so a ten-thousand-digit value cannot overflow anything.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "tailcut/url.h"

/* Value of one hex digit, or -1. */
static int hex_val(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decodes the byte at src[*i] (advancing *i past it, and past an escape). Returns the decoded
 * byte (0..255), or TC_EINVAL for a bad escape or a NUL (raw or encoded): a NUL can never be
 * part of a parameter we accept, and it would silently truncate the NUL-terminated output. */
static int decode_one(const char *src, size_t len, size_t *i, int query_mode)
{
    unsigned char c = (unsigned char)src[*i];
    if (c == '%') {
        if (len - *i < 3)
            return TC_EINVAL;
        int hi = hex_val((unsigned char)src[*i + 1]);
        int lo = hex_val((unsigned char)src[*i + 2]);
        if (hi < 0 || lo < 0)
            return TC_EINVAL;
        *i += 3;
        c = (unsigned char)(hi << 4 | lo);
        return c == 0 ? TC_EINVAL : c;
    }
    *i += 1;
    if (c == '+' && query_mode)
        return ' ';
    return c == 0 ? TC_EINVAL : c;
}

void tc_query_iter_init(tc_query_iter *it, const char *query, size_t len)
{
    it->p = query;
    it->end = query + len;
}

int tc_query_next(tc_query_iter *it, const char **name, size_t *name_len, const char **value,
                  size_t *value_len)
{
    while (it->p < it->end) {
        const char *start = it->p;
        const char *amp = memchr(start, '&', (size_t)(it->end - start));
        const char *stop = amp ? amp : it->end;
        it->p = amp ? amp + 1 : it->end;
        if (stop == start)
            continue; /* empty pair: "a=1&&b=2", a leading or trailing '&' */
        const char *eq = memchr(start, '=', (size_t)(stop - start));
        *name = start;
        if (eq) {
            *name_len = (size_t)(eq - start);
            *value = eq + 1;
            *value_len = (size_t)(stop - eq - 1);
        } else {
            *name_len = (size_t)(stop - start);
            *value = stop;
            *value_len = 0;
        }
        return 1;
    }
    return 0;
}

long tc_url_decode(const char *src, size_t len, char *dst, size_t dst_size, int query_mode)
{
    size_t i = 0, n = 0;
    while (i < len) {
        int c = decode_one(src, len, &i, query_mode);
        if (c < 0)
            return c;
        if (n + 1 >= dst_size)
            return TC_ETOOLARGE;
        dst[n++] = (char)c;
    }
    if (dst_size == 0)
        return TC_ETOOLARGE;
    dst[n] = '\0';
    return (long)n;
}

long tc_url_encode(const char *src, size_t len, char *dst, size_t dst_size)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)src[i];
        int keep = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                   c == '-' || c == '.' || c == '_' || c == '~';
        size_t need = keep ? 1 : 3;
        if (n + need >= dst_size)
            return TC_ETOOLARGE;
        if (keep) {
            dst[n++] = (char)c;
        } else {
            dst[n++] = '%';
            dst[n++] = hex[c >> 4];
            dst[n++] = hex[c & 15];
        }
    }
    if (dst_size == 0)
        return TC_ETOOLARGE;
    dst[n] = '\0';
    return (long)n;
}

/* 1 if the raw (encoded) name decodes, in query mode, to exactly the NUL-terminated `want`.
 * A name with a bad escape decodes to nothing and so matches nothing. */
static int name_equals(const char *raw, size_t raw_len, const char *want)
{
    size_t i = 0, k = 0;
    while (i < raw_len) {
        int c = decode_one(raw, raw_len, &i, 1);
        if (c < 0 || want[k] == '\0' || (unsigned char)want[k] != c)
            return 0;
        k++;
    }
    return want[k] == '\0';
}

long tc_query_get(const char *query, size_t len, const char *name, char *value, size_t value_size)
{
    tc_query_iter it;
    const char *n, *v, *first = NULL;
    size_t nl, vl, first_len = 0;
    long count = 0;

    tc_query_iter_init(&it, query, len);
    while (tc_query_next(&it, &n, &nl, &v, &vl)) {
        if (!name_equals(n, nl, name))
            continue;
        if (count++ == 0) {
            first = v;
            first_len = vl;
        }
    }
    if (count > 0 && value != NULL) {
        long r = tc_url_decode(first, first_len, value, value_size, 1);
        if (r < 0)
            return r;
    }
    return count;
}

int tc_query_timeout(const char *query, size_t len, uint64_t max_ms, uint64_t *timeout_ms,
                     int *present, const char **why)
{
    static const char not_number[] = "timeout must be a whole number of milliseconds";
    static const char out_of_range[] = "timeout is out of range (1 to --max-timeout milliseconds)";
    static const char repeated[] = "timeout must be given at most once";
    tc_query_iter it;
    const char *n, *v, *first = NULL;
    size_t nl, vl, first_len = 0;
    int count = 0;

    tc_query_iter_init(&it, query, len);
    while (tc_query_next(&it, &n, &nl, &v, &vl)) {
        if (!name_equals(n, nl, "timeout"))
            continue;
        if (count++ == 0) {
            first = v;
            first_len = vl;
        }
    }
    if (present)
        *present = count > 0;
    if (why)
        *why = NULL;
    if (count == 0)
        return 0;
    if (count > 1) {
        if (why)
            *why = repeated;
        return TC_EINVAL;
    }

    /* Decode and check in one pass. `value` saturates at max_ms + 1 (or stays put when max_ms
     * is UINT64_MAX and the next digit would overflow) so no input can overflow it. */
    uint64_t value = 0;
    int too_large = 0;
    size_t i = 0;
    if (first_len == 0) {
        if (why)
            *why = not_number;
        return TC_EINVAL;
    }
    while (i < first_len) {
        int c = decode_one(first, first_len, &i, 1);
        if (c < '0' || c > '9') {
            if (why)
                *why = not_number;
            return TC_EINVAL;
        }
        if (too_large)
            continue;
        uint64_t d = (uint64_t)(c - '0');
        if (value > (UINT64_MAX - d) / 10) {
            too_large = 1;
            continue;
        }
        value = value * 10 + d;
        if (value > max_ms)
            too_large = 1;
    }
    if (too_large || value < 1) {
        if (why)
            *why = out_of_range;
        return TC_EINVAL;
    }
    *timeout_ms = value;
    return 0;
}

int tc_id_valid(const char *id, size_t len)
{
    if (len < 1 || len > TC_ID_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)id[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == '-'))
            return 0;
    }
    return 1;
}

/* The client pools connections by this key and fetch counts per-host caps by it, so there is
 * exactly one parser. */
int tc_url_origin(const char *url, char *key, size_t keycap, int *https, const char **why)
{
    const char *p = url;
    while ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
           *p == '+' || *p == '-' || *p == '.')
        p++;
    size_t slen = (size_t)(p - url);
    if (strncmp(p, "://", 3) != 0) {
        *why = "not an absolute http:// or https:// URL";
        return TC_EURL;
    }
    if (slen == 4 && strncasecmp(url, "http", 4) == 0)
        *https = 0;
    else if (slen == 5 && strncasecmp(url, "https", 5) == 0)
        *https = 1;
    else {
        *why = "unsupported URL scheme (only http and https)";
        return TC_EURL;
    }
    const char *a = p + 3;
    const char *end = a + strcspn(a, "/?#");
    for (const char *q = a; q < end; q++)
        if (*q == '@')
            a = q + 1;
    const char *host = a, *host_end, *port = NULL;
    if (*a == '[') {
        const char *rb = memchr(a, ']', (size_t)(end - a));
        if (rb == NULL) {
            *why = "unterminated IPv6 address in URL";
            return TC_EURL;
        }
        host_end = rb + 1;
        if (host_end < end && *host_end == ':')
            port = host_end + 1;
        else if (host_end != end) {
            *why = "junk after IPv6 address in URL";
            return TC_EURL;
        }
    } else {
        host_end = a;
        while (host_end < end && *host_end != ':')
            host_end++;
        if (host_end < end)
            port = host_end + 1;
    }
    if (host_end == host) {
        *why = "URL has no host";
        return TC_EURL;
    }
    unsigned long portnum = *https ? 443 : 80;
    if (port != NULL && port < end) {
        portnum = 0;
        for (const char *q = port; q < end; q++) {
            if (*q < '0' || *q > '9' || portnum > 65535) {
                *why = "bad port number in URL";
                return TC_EURL;
            }
            portnum = portnum * 10 + (unsigned long)(*q - '0');
        }
        if (portnum == 0 || portnum > 65535) {
            *why = "bad port number in URL";
            return TC_EURL;
        }
    }
    size_t hlen = (size_t)(host_end - host);
    if (slen + 3 + hlen + 7 > keycap) {
        *why = "URL host too long";
        return TC_EURL;
    }
    char *k = key;
    for (size_t i = 0; i < slen; i++)
        *k++ = (char)((url[i] >= 'A' && url[i] <= 'Z') ? url[i] + 32 : url[i]);
    /* Not terminated yet: the snprintf() below ends the key. */
    // NOLINTNEXTLINE(bugprone-not-null-terminated-result)
    memcpy(k, "://", 3);
    k += 3;
    for (size_t i = 0; i < hlen; i++) {
        char ch = host[i];
        if ((unsigned char)ch <= ' ') {
            *why = "control character or space in URL host";
            return TC_EURL;
        }
        *k++ = (char)((ch >= 'A' && ch <= 'Z') ? ch + 32 : ch);
    }
    (void)snprintf(k, 7, ":%lu", portnum); /* fits: port <= 65535, room checked above */
    return 0;
}
