/*
 * libFuzzer target: the query-string and parameter parsers of src/http/url.c (tc_query_next,
 * tc_query_get, tc_query_timeout, tc_url_decode, tc_url_encode, tc_id_valid).
 *
 * The whole input is used as a raw query string, as an encoded value and as an ID candidate.
 * The one idea: each function is checked against a second, deliberately naive computation of
 * the same answer built from the other functions and from the contract's wording (count the
 * `timeout` pairs by decoding every name; decide "1..max, digits only" on the decoded text as a
 * decimal string), plus round trips (encode then decode gives the input back) and exact-size
 * output buffers, so that any one-byte overflow is an ASan report.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "loopback.h" /* FZ_CHECK */
#include "tailcut/url.h"

static char *xmalloc(size_t n)
{
    char *p = malloc(n ? n : 1);
    FZ_CHECK(p != NULL, "out of memory");
    return p;
}

/* Decodes into an exact-size heap buffer of dst_size bytes; returns the result and, on success,
 * the buffer (else NULL). */
static long decode(const char *src, size_t len, size_t dst_size, int query_mode, char **out)
{
    char *dst = xmalloc(dst_size);
    long r = tc_url_decode(src, len, dst_size ? dst : NULL, dst_size, query_mode);
    if (r < 0) {
        free(dst);
        *out = NULL;
    } else {
        *out = dst;
    }
    return r;
}

static int unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

/* decode() edge checks: the result fits exactly in r + 1 bytes and not in r. */
static void check_decode(const char *src, size_t len, int mode)
{
    char *d;
    long r = decode(src, len, len + 1, mode, &d);
    FZ_CHECK(r == TC_EINVAL || r >= 0, "decode of %zu bytes returned %ld", len, r);
    if (r < 0) {
        /* A bad escape or a NUL: it is rejected whatever the room. */
        char *d2;
        FZ_CHECK(decode(src, len, 2 * len + 8, mode, &d2) == TC_EINVAL, "verdict depends on room");
        return;
    }
    FZ_CHECK((size_t)r <= len && d[r] == '\0', "decoded length %ld of %zu bytes", r, len);
    FZ_CHECK(memchr(d, '\0', (size_t)r) == NULL, "a NUL inside the decoded text");
    size_t escapes = 0;
    for (size_t i = 0; i < len; i++)
        escapes += src[i] == '%';
    FZ_CHECK((size_t)r == len - 2 * escapes, "length %ld, %zu escapes in %zu bytes", r, escapes,
             len);

    char *tight;
    FZ_CHECK(decode(src, len, (size_t)r, mode, &tight) == TC_ETOOLARGE, "fits without its NUL");
    FZ_CHECK(decode(src, len, (size_t)r + 1, mode, &tight) == r &&
                 memcmp(tight, d, (size_t)r + 1) == 0,
             "exact room gives a different result");
    free(tight);

    /* Round trip: encoding the decoded text and decoding that again gives it back, in both
     * modes (the encoder escapes '+'). */
    char *e = xmalloc(3 * (size_t)r + 1);
    long el = tc_url_encode(d, (size_t)r, e, 3 * (size_t)r + 1);
    FZ_CHECK(el >= r && el <= 3 * r, "encoded length %ld of %ld bytes", el, r);
    for (long i = 0; i < el; i++) {
        unsigned char c = (unsigned char)e[i];
        if (c == '%') {
            FZ_CHECK(i + 2 < el && strchr("0123456789ABCDEF", e[i + 1]) && e[i + 1] &&
                         strchr("0123456789ABCDEF", e[i + 2]) && e[i + 2],
                     "bad escape in the encoder's output");
            i += 2;
        } else {
            FZ_CHECK(unreserved(c), "encoder left byte 0x%02x unescaped", c);
        }
    }
    for (int m = 0; m < 2; m++) {
        char *back;
        long bl = decode(e, (size_t)el, (size_t)el + 1, m, &back);
        FZ_CHECK(bl == r && memcmp(back, d, (size_t)r) == 0, "decode(encode(x)) != x (mode %d)", m);
        free(back);
    }
    FZ_CHECK(tc_url_encode(d, (size_t)r, e, (size_t)el) == TC_ETOOLARGE, "encode fits without NUL");
    free(e);
    free(d);
}

/* encode(input) then decode gives the input back, unless it holds a NUL (never accepted). */
static void check_encode(const char *src, size_t len)
{
    size_t cap = 3 * len + 1;
    char *e = xmalloc(cap);
    long el = tc_url_encode(src, len, e, cap);
    FZ_CHECK(el >= 0 && (size_t)el <= 3 * len && e[el] == '\0', "encode returned %ld", el);
    char *back;
    long bl = decode(e, (size_t)el, (size_t)el + 1, 1, &back);
    if (memchr(src, '\0', len) != NULL) {
        FZ_CHECK(bl == TC_EINVAL, "an encoded NUL was accepted");
    } else {
        FZ_CHECK(bl == (long)len && memcmp(back, src, len) == 0, "decode(encode(x)) != x");
        free(back);
    }
    free(e);
}

/* The naive reference: how often `name` occurs, and the first value's raw range. */
static long ref_count(const char *q, size_t len, const char *name, const char **first,
                      size_t *first_len)
{
    tc_query_iter it;
    const char *n, *v;
    size_t nl, vl;
    long count = 0;
    tc_query_iter_init(&it, q, len);
    while (tc_query_next(&it, &n, &nl, &v, &vl)) {
        FZ_CHECK(n >= q && n + nl <= q + len && v >= q && v + vl <= q + len,
                 "pair outside the query");
        FZ_CHECK(nl > 0 || vl > 0 || (v > n), "an empty pair was returned");
        FZ_CHECK(memchr(n, '&', nl) == NULL && memchr(n, '=', nl) == NULL, "bad name range");
        FZ_CHECK(memchr(v, '&', vl) == NULL, "'&' inside a value");
        char *d;
        long dl = decode(n, nl, nl + 1, 1, &d);
        if (dl >= 0) {
            if ((size_t)dl == strlen(name) && memcmp(d, name, (size_t)dl) == 0) {
                if (count == 0) {
                    *first = v;
                    *first_len = vl;
                }
                count++;
            }
            free(d);
        }
    }
    return count;
}

static void check_query_get(const char *q, size_t len, const char *name)
{
    const char *first = NULL;
    size_t first_len = 0;
    long count = ref_count(q, len, name, &first, &first_len);
    FZ_CHECK(tc_query_get(q, len, name, NULL, 0) == count, "count differs for %s", name);
    if (count == 0)
        return;
    char *want;
    long wl = decode(first, first_len, first_len + 1, 1, &want);
    char *got = xmalloc(first_len + 1);
    long r = tc_query_get(q, len, name, got, first_len + 1);
    if (wl < 0) {
        FZ_CHECK(r == wl, "undecodable value: %ld, expected %ld", r, wl);
    } else {
        FZ_CHECK(r == count && memcmp(got, want, (size_t)wl + 1) == 0, "value of %s differs", name);
        /* One byte short of the decoded value plus its NUL: TC_ETOOLARGE, no overflow. */
        char *small = xmalloc((size_t)wl);
        FZ_CHECK(tc_query_get(q, len, name, small, (size_t)wl) == TC_ETOOLARGE,
                 "value fits without its NUL");
        free(small);
        free(want);
    }
    free(got);
}

/* Compares two decimal digit strings by value (leading zeros allowed). */
static int dec_cmp(const char *a, size_t al, const char *b, size_t bl)
{
    while (al > 0 && *a == '0')
        a++, al--;
    while (bl > 0 && *b == '0')
        b++, bl--;
    if (al != bl)
        return al < bl ? -1 : 1;
    int c = memcmp(a, b, al);
    return c < 0 ? -1 : c > 0;
}

static void check_timeout(const char *q, size_t len, uint64_t max_ms)
{
    const char *first = NULL;
    size_t first_len = 0;
    long count = ref_count(q, len, "timeout", &first, &first_len);
    uint64_t ms = 777777;
    int present = -1;
    const char *why = "unset";
    int r = tc_query_timeout(q, len, max_ms, &ms, &present, &why);
    FZ_CHECK(present == (count > 0), "present=%d with %ld timeout parameters", present, count);
    if (count == 0) {
        FZ_CHECK(r == 0 && ms == 777777 && why == NULL, "absent timeout: r=%d", r);
        return;
    }
    if (count > 1) {
        FZ_CHECK(r == TC_EINVAL && why != NULL && ms == 777777, "repeated timeout accepted");
        return;
    }
    /* Exactly once: the decoded text must be 1+ ASCII digits with a value in 1..max_ms. */
    char *d;
    long dl = decode(first, first_len, first_len + 1, 1, &d);
    int digits = dl > 0;
    for (long i = 0; digits && i < dl; i++)
        digits = d[i] >= '0' && d[i] <= '9';
    int ok = 0;
    if (digits) {
        char maxs[24];
        int ml = snprintf(maxs, sizeof(maxs), "%llu", (unsigned long long)max_ms);
        ok = dec_cmp(d, (size_t)dl, "0", 1) > 0 && dec_cmp(d, (size_t)dl, maxs, (size_t)ml) <= 0;
    }
    if (ok) {
        FZ_CHECK(r == 0 && why == NULL, "valid timeout rejected: %s", why ? why : "(null)");
        uint64_t v = 0;
        for (long i = 0; i < dl; i++)
            v = v * 10 + (uint64_t)(d[i] - '0');
        FZ_CHECK(ms == v && v >= 1 && v <= max_ms, "timeout %llu, expected %llu",
                 (unsigned long long)ms, (unsigned long long)v);
        /* The brief's invariant, through the public getter: the value is all digits. */
        char buf[64];
        char *big = dl >= (long)sizeof(buf) ? xmalloc((size_t)dl + 1) : buf;
        FZ_CHECK(tc_query_get(q, len, "timeout", big, (size_t)dl + 1) == 1, "getter disagrees");
        for (long i = 0; i < dl; i++)
            FZ_CHECK(big[i] >= '0' && big[i] <= '9', "accepted timeout has a non-digit");
        if (big != buf)
            free(big);
    } else {
        FZ_CHECK(r == TC_EINVAL && why != NULL && ms == 777777,
                 "invalid timeout accepted (r=%d, ms=%llu)", r, (unsigned long long)ms);
    }
    free(d);
}

static void check_id(const char *s, size_t len)
{
    int want = len >= 1 && len <= TC_ID_MAX;
    for (size_t i = 0; want && i < len; i++)
        want = unreserved((unsigned char)s[i]) && s[i] != '~';
    FZ_CHECK(tc_id_valid(s, len) == want, "tc_id_valid(%zu bytes) != %d", len, want);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* An exact-size copy that is not NUL-terminated: the functions take byte ranges. */
    char *q = xmalloc(size);
    if (size > 0)
        memcpy(q, data, size);

    check_decode(q, size, 0);
    check_decode(q, size, 1);
    check_encode(q, size);
    check_id(q, size);
    check_query_get(q, size, "id");
    check_query_get(q, size, "timeout");
    check_query_get(q, size, "");
    static const uint64_t limits[] = {1,         9, 10, 30000, 60000, 4294967296ull, UINT64_MAX - 1,
                                      UINT64_MAX};
    for (size_t i = 0; i < sizeof(limits) / sizeof(limits[0]); i++)
        check_timeout(q, size, limits[i]);
    free(q);
    return 0;
}
