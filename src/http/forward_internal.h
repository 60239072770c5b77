/*
 * What a reverse proxy may pass on: the client's query merged into the upstream URL, which
 * request headers may be forwarded, and upstream URLs made safe to print. Private to the library
 * and the tailcut program (app/ includes it through the src/ include directory; not installed).
 *
 * The URL functions live in src/http/url.c (they share its one-byte-at-a-time percent-decoding),
 * the header rules in src/http/forward.c. None of them allocates except through the caller's
 * tc__buf.
 */
#ifndef TAILCUT_FORWARD_INTERNAL_H
#define TAILCUT_FORWARD_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "base/buf.h"

/* ---- URLs (src/http/url.c) ---- */

/* Appends to out the upstream URL with the client's query parameters added to its query.
 * Every pair of query (the raw client query, after '?', not decoded) is appended in the order
 * received, as received, except: empty pairs; the pair(s) named `timeout`; and the pairs whose
 * name the upstream URL's own query already has (it wins). Names are compared after
 * percent-decoding ('+' is a space), so "%74imeout" is `timeout`; a name with a bad escape is
 * compared byte for byte. A byte that may not stand in a URL query (controls, space, '"', '#',
 * '<', '>', '[', '\', ']', '^', '`', '{', '|', '}', 0x7F and above) is written as %HH; every
 * other byte, '%' included, is copied, so an escape the client sent stays exactly as sent.
 * Everything added goes after the upstream URL's '?' and before its '#fragment' (if any), so the
 * scheme, host, port and path can never change.
 * Returns the number of pairs forwarded (0: out holds the upstream URL unchanged), or
 * TC_ETOOLARGE (past out's max) or TC_ENOMEM; out then holds a partial URL. */
long tc__forward_url(tc__buf *out, const char *upstream, const char *query, size_t query_len);

/* A whole number of milliseconds s[0..len): ASCII digits only (percent-decoded first when decode
 * is set: a query parameter's value), 1 to max_ms. Returns 0 and sets *ms; TC_EINVAL (empty, or
 * not digits); TC_ETOOLARGE (0 or over max_ms). Never overflows, whatever the length. */
int tc__ms_value(const char *s, size_t len, int decode, uint64_t max_ms, uint64_t *ms);

/* A cap for tc__url_redact() that never cuts the URL. */
#define TC__URL_REDACT_CAP(url) (strlen(url) + 8)

/* Copies url into out (cap bytes, always NUL-terminated when cap > 0; cut to fit) with what may
 * hold secrets taken out: the userinfo ("user:pass@") becomes "***@", the query becomes "?***"
 * and a fragment is dropped. Scheme, host, port and path stay, so the line still says where the
 * calls go ("u:p@api.example/v1?key=s" after the scheme becomes "***@api.example/v1?***").
 * Works on any string (a malformed URL is redacted as well as it can be); returns out, so it can
 * stand in a printf argument list. */
const char *tc__url_redact(const char *url, char *out, size_t cap);

/* ---- headers (src/http/forward.c) ---- */

/* 1 if name[0..len) is an RFC 9110 token (a valid field name): 1 or more of
 * !#$%&'*+-.^_`|~ digits and letters. */
int tc__header_name_ok(const char *name, size_t len);

/* 1 if value[0..len) holds no CR, LF or NUL (what could end the line or the string early). */
int tc__header_value_ok(const char *value, size_t len);

/* Splits a header line 'Name: value' (line[0..len), as -H and --upstream-header take it): the name
 * is what comes before the first ':' and must be an RFC 9110 token; the value is the rest without
 * leading and trailing spaces and tabs (it may be empty) and must hold no CR, LF or NUL. Returns 0
 * with name_len, *value and value_len set (the value points into line), or TC_EINVAL with *why
 * saying what is wrong. */
int tc__header_line_parse(const char *line, size_t len, size_t *name_len, const char **value,
                          size_t *value_len, const char **why);

/* 1 for a header a proxy never forwards from its client whatever it is told: Host,
 * Content-Length, Transfer-Encoding, Connection, Keep-Alive, TE, Trailer, Upgrade, Proxy-*, and
 * X-Tailcut-Attempt (tailcut numbers the attempts itself). Case-insensitive. */
int tc__header_never_forwarded(const char *name, size_t len);

/* 1 if the comma-separated token list list[0..len) (a Connection header value: "close, X-A")
 * names name[0..name_len), case-insensitively, whitespace around the items ignored. */
int tc__header_list_has(const char *list, size_t len, const char *name, size_t name_len);

#endif /* TAILCUT_FORWARD_INTERNAL_H */
