/*
 * The transparent proxy's rules (see proxy_internal.h; CONTRACT section 8).
 *
 * A proxy's headers come in two kinds: those that describe one connection (hop-by-hop: RFC 9110
 * section 7.6.1, and whatever a Connection field names) and those that describe the message.
 * Only the second kind crosses tailcut, and of those, the ones tailcut writes itself (framing,
 * forwarding, ids, its own X-Tailcut-*) are replaced rather than passed on, so a client can never
 * make an upstream believe something tailcut did not say.
 */
#include <string.h>
#include <strings.h>

#include "forward_internal.h"
#include "proxy_internal.h"
#include "tailcut/error.h"

static int name_is(const char *name, size_t len, const char *lit)
{
    size_t n = strlen(lit);
    return n == len && strncasecmp(name, lit, len) == 0;
}

static int name_starts(const char *name, size_t len, const char *lit)
{
    size_t n = strlen(lit);
    return len >= n && strncasecmp(name, lit, n) == 0;
}

/* RFC 9110 7.6.1, and Transfer-Encoding, which frames one connection's message. */
static int hop_by_hop(const char *name, size_t len)
{
    return name_is(name, len, "Connection") || name_is(name, len, "Keep-Alive") ||
           name_is(name, len, "TE") || name_is(name, len, "Trailer") ||
           name_is(name, len, "Transfer-Encoding") || name_is(name, len, "Upgrade") ||
           name_starts(name, len, "Proxy-");
}

/* 1 if a Connection field among fields[0..n) lists name. */
static int connection_lists(const tc__field *fields, size_t n, const char *name, size_t len)
{
    for (size_t i = 0; i < n; i++)
        if (name_is(fields[i].name, fields[i].name_len, "Connection") &&
            tc__header_list_has(fields[i].value, fields[i].value_len, name, len))
            return 1;
    return 0;
}

/* ---- the upstream target ------------------------------------------------------------------- */

/* 1 if seg[0..len) is "." or "..", a dot also written %2e / %2E. */
static int dot_segment(const char *seg, size_t len)
{
    size_t dots = 0, i = 0;
    while (i < len) {
        if (seg[i] == '.') {
            i++;
        } else if (len - i >= 3 && seg[i] == '%' && seg[i + 1] == '2' &&
                   (seg[i + 2] == 'e' || seg[i + 2] == 'E')) {
            i += 3;
        } else {
            return 0;
        }
        dots++;
    }
    return dots == 1 || dots == 2;
}

int tc__proxy_path_ok(const char *path, size_t len)
{
    size_t i = 0;
    while (i <= len) {
        const char *slash = i < len ? memchr(path + i, '/', len - i) : NULL;
        size_t end = slash != NULL ? (size_t)(slash - path) : len;
        if (dot_segment(path + i, end - i))
            return 0;
        i = end + 1;
    }
    return 1;
}

int tc__proxy_url(tc__buf *out, const char *replica_url, const char *target, size_t len,
                  const char *strip, size_t strip_len)
{
    const char *scheme_end = strstr(replica_url, "://");
    if (scheme_end == NULL)
        return TC_EURL;
    /* The replica: its authority ends at the first '/', '?' or '#'; its path at '?' or '#'. */
    const char *authority = scheme_end + 3;
    size_t origin_len = (size_t)(authority - replica_url) + strcspn(authority, "/?#");
    const char *rpath = replica_url + origin_len;
    size_t rpath_len = strcspn(rpath, "?#");
    if (rpath_len > 0 && rpath[rpath_len - 1] == '/')
        rpath_len--;
    /* The request: origin form, its path up to '?' or '#', its query up to '#'. */
    if (len == 0 || target[0] != '/')
        return TC_EINVAL;
    size_t path_len = 0;
    while (path_len < len && target[path_len] != '?' && target[path_len] != '#')
        path_len++;
    if (!tc__proxy_path_ok(target, path_len))
        return TC_EINVAL;
    const char *query = target + path_len;
    size_t query_len = 0;
    if (path_len < len && target[path_len] == '?') {
        const char *hash = memchr(query, '#', len - path_len);
        query_len = hash != NULL ? (size_t)(hash - query) : len - path_len;
    }
    const char *path = target;
    if (strip_len > 0) {
        /* the route matched: the path is the prefix itself, or the prefix and a '/' */
        if (path_len < strip_len || memcmp(path, strip, strip_len) != 0 ||
            (path_len > strip_len && path[strip_len] != '/'))
            return TC_EINVAL;
        path += strip_len;
        path_len -= strip_len;
    }
    int err = tc__buf_append(out, replica_url, origin_len);
    if (err == 0)
        err = tc__buf_append(out, rpath, rpath_len);
    if (err == 0)
        err = path_len > 0 ? tc__buf_append(out, path, path_len) : tc__buf_append(out, "/", 1);
    if (err == 0)
        err = tc__buf_append(out, query, query_len);
    return err;
}

/* ---- the request's headers ----------------------------------------------------------------- */

int tc__proxy_request_drops(const tc__proxy_request_in *in, const char *name, size_t len)
{
    if (hop_by_hop(name, len) || name_is(name, len, "Content-Length") ||
        name_is(name, len, "Expect") || name_is(name, len, "X-Forwarded-For") ||
        name_is(name, len, "X-Forwarded-Proto") || name_is(name, len, "X-Forwarded-Host") ||
        name_is(name, len, "X-Request-Id") || name_starts(name, len, "X-Tailcut-"))
        return 1;
    if (name_is(name, len, "Host"))
        return !in->preserve_host;
    for (size_t i = 0; i < in->nadded; i++)
        if (in->added[i].name_len == len && strncasecmp(name, in->added[i].name, len) == 0)
            return 1;
    return connection_lists(in->fields, in->nfields, name, len);
}

static int put_field(tc__field *out, size_t cap, size_t *n, const char *name, const char *value,
                     size_t value_len)
{
    if (*n >= cap)
        return TC_ETOOLARGE;
    out[*n] = (tc__field){name, strlen(name), value, value_len};
    (*n)++;
    return 0;
}

/* X-Forwarded-For: the client's own values, in order, joined with ", ", then its address. */
static int forwarded_for(const tc__proxy_request_in *in, tc__buf *xff)
{
    int err = 0;
    for (size_t i = 0; i < in->nfields && err == 0; i++) {
        const tc__field *f = &in->fields[i];
        if (!name_is(f->name, f->name_len, "X-Forwarded-For") || f->value_len == 0)
            continue;
        if (xff->len > 0)
            err = tc__buf_append(xff, ", ", 2);
        if (err == 0)
            err = tc__buf_append(xff, f->value, f->value_len);
    }
    if (err == 0 && in->client_addr_len > 0) {
        if (xff->len > 0)
            err = tc__buf_append(xff, ", ", 2);
        if (err == 0)
            err = tc__buf_append(xff, in->client_addr, in->client_addr_len);
    }
    return err;
}

int tc__proxy_request_headers(const tc__proxy_request_in *in, tc__buf *xff, tc__field *out,
                              size_t cap, size_t *nout)
{
    size_t n = 0;
    const tc__field *host = NULL;
    *nout = 0;
    tc__buf_reset(xff);
    int err = forwarded_for(in, xff);
    for (size_t i = 0; i < in->nfields && err == 0; i++) {
        const tc__field *f = &in->fields[i];
        if (host == NULL && name_is(f->name, f->name_len, "Host"))
            host = f;
        if (tc__proxy_request_drops(in, f->name, f->name_len))
            continue;
        if (n >= cap)
            return TC_ETOOLARGE;
        out[n++] = *f;
    }
    if (err == 0 && xff->len > 0)
        err = put_field(out, cap, &n, "X-Forwarded-For", xff->data, xff->len);
    if (err == 0)
        err = put_field(out, cap, &n, "X-Forwarded-Proto", in->proto, strlen(in->proto));
    if (err == 0 && host != NULL)
        err = put_field(out, cap, &n, "X-Forwarded-Host", host->value, host->value_len);
    if (err == 0 && in->request_id_len > 0)
        err = put_field(out, cap, &n, "X-Request-Id", in->request_id, in->request_id_len);
    for (size_t i = 0; i < in->nadded && err == 0; i++) {
        if (n >= cap)
            return TC_ETOOLARGE;
        out[n++] = in->added[i];
    }
    if (err == 0)
        *nout = n;
    return err;
}

int tc__proxy_timeout_header(const char *value, size_t len, uint64_t max_ms, uint64_t *timeout_ms,
                             const char **why)
{
    int err = tc__ms_value(value, len, 0, max_ms, timeout_ms);
    if (err == TC_ETOOLARGE)
        *why = "X-Tailcut-Timeout-Ms is out of range (1 to max_timeout_ms milliseconds)";
    else if (err != 0)
        *why = "X-Tailcut-Timeout-Ms must be a whole number of milliseconds";
    return err == 0 ? 0 : TC_EINVAL;
}

/* ---- which requests are hedged ------------------------------------------------------------- */

const char *tc__proxy_unhedged_name(tc__proxy_hedge reason)
{
    switch (reason) {
    case TC__PROXY_UNHEDGED_METHOD:
        return "method";
    case TC__PROXY_UNHEDGED_BODY_TOO_LARGE:
        return "body_too_large";
    default:
        return "";
    }
}

tc__proxy_hedge tc__proxy_hedge_rule(const char *method, size_t len, const char *const *methods,
                                     size_t nmethods, int has_key, int key_switch, int64_t body_len,
                                     uint64_t replay_limit)
{
    int safe = has_key && key_switch;
    for (size_t i = 0; i < nmethods && !safe; i++)
        safe = strlen(methods[i]) == len && memcmp(methods[i], method, len) == 0;
    if (!safe)
        return TC__PROXY_UNHEDGED_METHOD;
    if (body_len >= 0 && (uint64_t)body_len > replay_limit)
        return TC__PROXY_UNHEDGED_BODY_TOO_LARGE;
    return TC__PROXY_HEDGED;
}

/* ---- the response's headers ---------------------------------------------------------------- */

int tc__proxy_response_drops(const tc__field *fields, size_t nfields, const char *name, size_t len)
{
    return hop_by_hop(name, len) || name_is(name, len, "Content-Length") ||
           name_is(name, len, "Date") || name_is(name, len, "X-Request-Id") ||
           name_is(name, len, "X-Tailcut-Attempts") || connection_lists(fields, nfields, name, len);
}
