/*
 * Which request headers a reverse proxy may pass on to its upstream (see forward_internal.h).
 *
 * The rules are RFC 9110's: a field name is a token, a value never holds CR, LF or NUL, and the
 * hop-by-hop fields (Connection, the fields Connection lists, Keep-Alive, TE, Trailer, Upgrade,
 * Proxy-*) and the framing fields (Host, Content-Length, Transfer-Encoding) belong to one
 * connection, never to the next. All of it works on byte ranges and never allocates.
 */
#include <string.h>
#include <strings.h>

#include "base/bytes.h"
#include "forward_internal.h"
#include "tailcut/error.h"

int tc__header_name_ok(const char *name, size_t len)
{
    if (len == 0)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!(tc__byte_class[(unsigned char)name[i]] & TC__BYTE_TCHAR))
            return 0;
    return 1;
}

int tc__header_value_ok(const char *value, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (value[i] == '\r' || value[i] == '\n' || value[i] == '\0')
            return 0;
    return 1;
}

static int is_ows(char ch)
{
    return ch == ' ' || ch == '\t';
}

int tc__header_line_parse(const char *arg, size_t len, size_t *name_len, const char **value,
                          size_t *value_len, const char **why)
{
    const char *colon = arg != NULL ? memchr(arg, ':', len) : NULL;
    if (colon == NULL) {
        *why = "expected 'Name: value'";
        return TC_EINVAL;
    }
    size_t n = (size_t)(colon - arg);
    if (n == 0) {
        *why = "the header name is empty";
        return TC_EINVAL;
    }
    if (!tc__header_name_ok(arg, n)) {
        *why = "the header name is not an HTTP token (letters, digits and !#$%&'*+-.^_`|~)";
        return TC_EINVAL;
    }
    const char *v = colon + 1, *end = arg + len;
    while (v < end && is_ows(*v))
        v++;
    while (end > v && is_ows(end[-1]))
        end--;
    if (!tc__header_value_ok(v, (size_t)(end - v))) {
        *why = "the header value holds a CR, LF or NUL";
        return TC_EINVAL;
    }
    *name_len = n;
    *value = v;
    *value_len = (size_t)(end - v);
    return 0;
}

static int header_name_equals(const char *name, size_t len, const char *lit)
{
    return strlen(lit) == len && strncasecmp(name, lit, len) == 0;
}

int tc__header_never_forwarded(const char *name, size_t len)
{
    static const char *const never[] = {
        "Host", "Content-Length", "Transfer-Encoding", "Connection",        "Keep-Alive",
        "TE",   "Trailer",        "Upgrade",           "X-Tailcut-Attempt",
    };
    for (size_t i = 0; i < sizeof(never) / sizeof(never[0]); i++)
        if (header_name_equals(name, len, never[i]))
            return 1;
    return len >= 6 && strncasecmp(name, "Proxy-", 6) == 0;
}

int tc__header_list_has(const char *list, size_t len, const char *name, size_t name_len)
{
    size_t i = 0;
    while (i < len) {
        const char *comma = memchr(list + i, ',', len - i);
        size_t end = comma != NULL ? (size_t)(comma - list) : len;
        size_t from = i, to = end;
        while (from < to && is_ows(list[from]))
            from++;
        while (to > from && is_ows(list[to - 1]))
            to--;
        if (name_len > 0 && to - from == name_len && strncasecmp(list + from, name, name_len) == 0)
            return 1;
        i = end + 1;
    }
    return 0;
}
