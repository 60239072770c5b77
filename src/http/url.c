/*
 * Query strings, percent-encoding and the strict rules for the serve endpoints' parameters.
 *
 * Everything here works on byte ranges and caller buffers and never allocates, except
 * tc_url_origin(), which asks libcurl's URL parser (see there). The one idea:
 * parameter names are compared *after* decoding, one decoded byte at a time, so a name spelled
 * "%74imeout" or "timeou%74" is the same parameter as "timeout" without ever needing a buffer
 * for the decoded name; and the timeout value is checked digit by digit while it is decoded,
 * saturating above the limit, so a ten-thousand-digit value cannot overflow anything.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "base/fmt.h"
#include "forward_internal.h"
#include "tailcut/url.h"

/* Value of one hex digit, or -1. */
/* Decodes the byte at src[*i] (advancing *i past it, and past an escape). Returns the decoded
 * byte (0..255), or TC_EINVAL for a bad escape or a NUL (raw or encoded): a NUL can never be
 * part of a parameter we accept, and it would silently truncate the NUL-terminated output. */
static int decode_one(const char *src, size_t len, size_t *i, int query_mode)
{
    unsigned char ch = (unsigned char)src[*i];
    if (ch == '%') {
        if (len - *i < 3)
            return TC_EINVAL;
        int hi = tc__hex_value((unsigned char)src[*i + 1]);
        int lo = tc__hex_value((unsigned char)src[*i + 2]);
        if (hi < 0 || lo < 0)
            return TC_EINVAL;
        *i += 3;
        ch = (unsigned char)(hi << 4 | lo);
        return ch == 0 ? TC_EINVAL : ch;
    }
    *i += 1;
    if (ch == '+' && query_mode)
        return ' ';
    return ch == 0 ? TC_EINVAL : ch;
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
        int ch = decode_one(src, len, &i, query_mode);
        if (ch < 0)
            return ch;
        if (n + 1 >= dst_size)
            return TC_ETOOLARGE;
        dst[n++] = (char)ch;
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
        unsigned char ch = (unsigned char)src[i];
        int keep = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
                   (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' || ch == '_' || ch == '~';
        size_t need = keep ? 1 : 3;
        if (n + need >= dst_size)
            return TC_ETOOLARGE;
        if (keep) {
            dst[n++] = (char)ch;
        } else {
            dst[n++] = '%';
            dst[n++] = hex[ch >> 4];
            dst[n++] = hex[ch & 15];
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
        int ch = decode_one(raw, raw_len, &i, 1);
        if (ch < 0 || want[k] == '\0' || (unsigned char)want[k] != ch)
            return 0;
        k++;
    }
    return want[k] == '\0';
}

/* How many pairs of query[0..len) are named name (decoded), and the raw value of the first of
 * them in *first (NULL and 0 when none). */
static long query_find(const char *query, size_t len, const char *name, const char **first,
                       size_t *first_len)
{
    tc_query_iter it;
    const char *key, *val;
    size_t key_len, val_len;
    long count = 0;
    *first = NULL;
    *first_len = 0;
    tc_query_iter_init(&it, query, len);
    while (tc_query_next(&it, &key, &key_len, &val, &val_len)) {
        if (!name_equals(key, key_len, name))
            continue;
        if (count++ == 0) {
            *first = val;
            *first_len = val_len;
        }
    }
    return count;
}

long tc_query_get(const char *query, size_t len, const char *name, char *value, size_t value_size)
{
    const char *first;
    size_t first_len;
    long count = query_find(query, len, name, &first, &first_len);
    if (count > 0 && value != NULL) {
        long rc = tc_url_decode(first, first_len, value, value_size, 1);
        if (rc < 0)
            return rc;
    }
    return count;
}

int tc__ms_value(const char *s, size_t len, int decode, uint64_t max_ms, uint64_t *ms)
{
    /* Decode and check in one pass. `value` saturates at max_ms + 1 (or stays put when max_ms
     * is UINT64_MAX and the next digit would overflow) so no input can overflow it. */
    uint64_t value = 0;
    int too_large = 0;
    size_t i = 0;
    if (len == 0)
        return TC_EINVAL;
    while (i < len) {
        int ch = decode ? decode_one(s, len, &i, 1) : (unsigned char)s[i++];
        if (ch < '0' || ch > '9')
            return TC_EINVAL;
        if (too_large)
            continue;
        uint64_t digit = (uint64_t)(ch - '0');
        if (value > (UINT64_MAX - digit) / 10) {
            too_large = 1;
            continue;
        }
        value = value * 10 + digit;
        if (value > max_ms)
            too_large = 1;
    }
    if (too_large || value < 1)
        return TC_ETOOLARGE;
    *ms = value;
    return 0;
}

int tc_query_timeout(const char *query, size_t len, uint64_t max_ms, uint64_t *timeout_ms,
                     int *present, const char **why)
{
    static const char not_number[] = "timeout must be a whole number of milliseconds";
    static const char out_of_range[] = "timeout is out of range (1 to --max-timeout milliseconds)";
    static const char repeated[] = "timeout must be given at most once";
    const char *first;
    size_t first_len;
    long count = query_find(query, len, "timeout", &first, &first_len);
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
    int err = tc__ms_value(first, first_len, 1, max_ms, timeout_ms);
    if (err != 0) {
        if (why)
            *why = err == TC_ETOOLARGE ? out_of_range : not_number;
        return TC_EINVAL;
    }
    return 0;
}

int tc_id_valid(const char *id, size_t len)
{
    if (len < 1 || len > TC_ID_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)id[i];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '.' || ch == '-'))
            return 0;
    }
    return 1;
}

/* Lower-cases s[0..n) into out. */
static void copy_lower(char *out, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = (char)((s[i] >= 'A' && s[i] <= 'Z') ? s[i] + ('a' - 'A') : s[i]);
}

static int origin_fail(CURLU *cu, const char **why, const char *reason)
{
    curl_url_cleanup(cu);
    *why = reason;
    return TC_EURL;
}

/* The client pools connections by this key and fetch counts per-host caps by it, so it must name
 * the peer libcurl really connects to, however the URL spells it: libcurl's own parser decides
 * (it decodes a percent-encoded host, normalises 0x7f.1 to 127.0.0.1 and [0:0::1] to [::1], and
 * rejects a host it would not connect to). On top of it we are stricter, never looser: only
 * "http://" and "https://" with a host right after the slashes, never port 0. */
int tc_url_origin(const char *url, char *key, size_t keycap, int *https, const char **why)
{
    const char *p = url;
    while ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
           *p == '+' || *p == '-' || *p == '.')
        p++;
    if (strncmp(p, "://", 3) != 0) {
        *why = "not an absolute http:// or https:// URL";
        return TC_EURL;
    }
    if (p[3] == '/' || p[3] == '\\') { /* libcurl would take "http:///h" as host h */
        *why = "URL has no host";
        return TC_EURL;
    }
    CURLU *cu = curl_url();
    if (cu == NULL)
        return TC_ENOMEM;
    CURLUcode code = curl_url_set(cu, CURLUPART_URL, url, 0);
    if (code == CURLUE_OUT_OF_MEMORY) {
        curl_url_cleanup(cu);
        return TC_ENOMEM;
    }
    if (code == CURLUE_BAD_PORT_NUMBER)
        return origin_fail(cu, why, "bad port number in URL");
    if (code == CURLUE_BAD_IPV6)
        return origin_fail(cu, why, "bad IPv6 address in URL");
    if (code == CURLUE_BAD_HOSTNAME || code == CURLUE_NO_HOST)
        return origin_fail(cu, why, "bad host name in URL");
    if (code != CURLUE_OK)
        return origin_fail(cu, why, "malformed URL");

    char *scheme = NULL, *host = NULL, *port = NULL, *zone = NULL;
    int err = TC_EURL;
    *why = NULL;
    if (curl_url_get(cu, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(cu, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
        curl_url_get(cu, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) != CURLUE_OK) {
        err = TC_ENOMEM; /* the URL parsed: what is left to fail is memory */
        goto out;
    }
    /* absent for most hosts */
    if (curl_url_get(cu, CURLUPART_ZONEID, &zone, 0) == CURLUE_OUT_OF_MEMORY) {
        err = TC_ENOMEM;
        goto out;
    }
    if (strcasecmp(scheme, "http") == 0)
        *https = 0;
    else if (strcasecmp(scheme, "https") == 0)
        *https = 1;
    else {
        *why = "unsupported URL scheme (only http and https)";
        goto out;
    }
    size_t hlen = strlen(host);
    if (hlen == 0) {
        *why = "URL has no host";
        goto out;
    }
    /* "example.com." is the same DNS name as "example.com" */
    if (hlen > 1 && host[hlen - 1] == '.' && host[0] != '[')
        hlen--;
    if (strcmp(port, "0") == 0) {
        *why = "bad port number in URL";
        goto out;
    }
    size_t slen = strlen(scheme), zlen = zone != NULL ? strlen(zone) + 1 : 0;
    if (slen + 3 + hlen + zlen + 7 > keycap) {
        *why = "URL host too long";
        goto out;
    }
    /* Fits: measured above, and the port is at most "65535". */
    copy_lower(key, scheme, slen);
    char *kp = key + slen;
    *kp++ = ':';
    *kp++ = '/';
    *kp++ = '/';
    if (zone != NULL) { /* "[fe80::1]" + "%eth0" -> "[fe80::1%eth0]" */
        copy_lower(kp, host, hlen - 1);
        kp += hlen - 1;
        *kp++ = '%';
        memcpy(kp, zone, zlen - 1);
        kp += zlen - 1;
        *kp++ = ']';
    } else {
        copy_lower(kp, host, hlen);
        kp += hlen;
    }
    (void)snprintf(kp, 7, ":%s", port);
    err = 0;
out:
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_free(zone);
    curl_url_cleanup(cu);
    return err;
}

/* ---- forwarding (forward_internal.h) -------------------------------------------------------- */

/* 1 if raw names x[0..xl) and y[0..yl) decode (query mode) to the same bytes. When either holds
 * a bad escape the two are compared as they are, byte for byte. */
static int names_equal_raw(const char *x, size_t xl, const char *y, size_t yl)
{
    /* Without an escape or a '+' on either side, decoding changes nothing: compare the bytes
     * (the usual case, asked once per client parameter). */
    if (memchr(x, '%', xl) == NULL && memchr(x, '+', xl) == NULL && memchr(y, '%', yl) == NULL &&
        memchr(y, '+', yl) == NULL)
        return xl == yl && memcmp(x, y, xl) == 0;
    size_t i = 0, k = 0;
    while (i < xl && k < yl) {
        int cx = decode_one(x, xl, &i, 1);
        int cy = decode_one(y, yl, &k, 1);
        if (cx < 0 || cy < 0)
            return xl == yl && memcmp(x, y, xl) == 0;
        if (cx != cy)
            return 0;
    }
    return i == xl && k == yl;
}

/* 1 if the raw query q[0..qlen) has a pair named name[0..len). */
static int query_has(const char *q, size_t qlen, const char *name, size_t len)
{
    tc_query_iter it;
    const char *key, *val;
    size_t key_len, val_len;
    tc_query_iter_init(&it, q, qlen);
    while (tc_query_next(&it, &key, &key_len, &val, &val_len))
        if (names_equal_raw(key, key_len, name, len))
            return 1;
    return 0;
}

/* 1 for a byte RFC 3986 allows in a query as it is: unreserved, sub-delims, ':', '@', '/', '?',
 * and '%' (escapes pass through as the client wrote them). */
static int query_byte_ok(unsigned char ch)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
           strchr("-._~!$&'()*+,;=:@/?%", ch) != NULL;
}

/* Appends raw[0..len) to out, with %HH for each byte query_byte_ok() refuses. */
static int append_query_bytes(tc__buf *out, const char *raw, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t i = 0;
    while (i < len) {
        size_t run = i;
        while (run < len && raw[run] != '\0' && query_byte_ok((unsigned char)raw[run]))
            run++;
        int err = tc__buf_append(out, raw + i, run - i);
        if (err != 0 || run == len)
            return err;
        unsigned char ch = (unsigned char)raw[run];
        char esc[3] = {'%', hex[ch >> 4], hex[ch & 15]};
        err = tc__buf_append(out, esc, sizeof(esc));
        if (err != 0)
            return err;
        i = run + 1;
    }
    return 0;
}

long tc__forward_url(tc__buf *out, const char *upstream, const char *query, size_t query_len)
{
    size_t ulen = strlen(upstream);
    const char *hash = memchr(upstream, '#', ulen);
    size_t base_len = hash != NULL ? (size_t)(hash - upstream) : ulen;
    const char *qmark = memchr(upstream, '?', base_len);
    const char *uq = qmark != NULL ? qmark + 1 : upstream + base_len;
    size_t uq_len = (size_t)(upstream + base_len - uq);

    int err = tc__buf_append(out, upstream, base_len);
    /* The first pair added needs '?' (no query yet) or '&' (after a query that does not already
     * end in one); "http://h/p?" needs nothing. */
    char sep = qmark == NULL ? '?' : (uq_len > 0 && uq[uq_len - 1] != '&' ? '&' : 0);
    long forwarded = 0;
    tc_query_iter it;
    const char *key, *val;
    size_t key_len, val_len;
    tc_query_iter_init(&it, query, query_len);
    while (err == 0 && tc_query_next(&it, &key, &key_len, &val, &val_len)) {
        if (names_equal_raw(key, key_len, "timeout", 7) || query_has(uq, uq_len, key, key_len))
            continue;
        if (sep != 0)
            err = tc__buf_append(out, &sep, 1);
        sep = '&';
        /* the pair as sent: the name, and "=value" when it had an '=' */
        size_t pair_len = val > key + key_len ? (size_t)(val + val_len - key) : key_len;
        if (err == 0)
            err = append_query_bytes(out, key, pair_len);
        forwarded++;
    }
    if (err == 0 && hash != NULL)
        err = tc__buf_append(out, hash, ulen - base_len);
    return err != 0 ? err : forwarded;
}

/* Appends s[0..n) to out[*len..cap - 1), as much as fits. */
static void redact_put(char *out, size_t cap, size_t *len, const char *s, size_t n)
{
    size_t room = cap - 1 - *len;
    if (n > room)
        n = room;
    memcpy(out + *len, s, n);
    *len += n;
}

const char *tc__url_redact(const char *url, char *out, size_t cap)
{
    if (cap == 0)
        return out;
    size_t len = 0, ulen = strlen(url);
    /* A "://" counts as the scheme's end only before any '/', '?', '#' or '@': the one in
     * "u:p@host/?next=http://x" belongs to the query, and the userinfo before it is redacted. */
    const char *auth = strstr(url, "://");
    auth = auth != NULL && auth <= url + strcspn(url, "/?#@") ? auth + 3 : url;
    size_t auth_end = (size_t)(auth - url) + strcspn(auth, "/?#");
    size_t rest_end = strcspn(url, "?#");
    if (rest_end < auth_end) /* "a?b@c": no authority to speak of */
        auth_end = rest_end;
    const char *at = NULL;
    for (const char *p = auth; p < url + auth_end; p++)
        if (*p == '@')
            at = p; /* the last '@' ends the userinfo ("u:p@ss@host") */
    redact_put(out, cap, &len, url, (size_t)(auth - url));
    if (at != NULL) {
        redact_put(out, cap, &len, TC__LIT("***"));
        auth = at;
    }
    size_t path_end = (size_t)(auth - url) + strcspn(auth, "?#");
    redact_put(out, cap, &len, auth, path_end - (size_t)(auth - url));
    if (path_end < ulen && url[path_end] == '?')
        redact_put(out, cap, &len, TC__LIT("?***"));
    out[len] = '\0';
    return out;
}
