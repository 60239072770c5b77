/*
 * The rules of the transparent proxy (CONTRACT section 8) as pure functions: where a request
 * goes on a replica, which of its headers go on and which tailcut adds, which requests may be
 * hedged, and which upstream response headers reach the client. Private to the library and the
 * tailcut program (app/serve/cmd_serve_proxy.c is their one user; not installed).
 *
 * The one idea: everything works on byte ranges ({pointer, length}) of what the server and the
 * client already hold, so a request's rules cost no copy; the only bytes made are the upstream
 * URL and the X-Forwarded-For value, each in the caller's bounded tc__buf.
 */
#ifndef TAILCUT_PROXY_INTERNAL_H
#define TAILCUT_PROXY_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"

/* A header field: byte ranges, not NUL-terminated. */
typedef struct tc__field {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
} tc__field;

/* ---- the upstream target ---------------------------------------------------------------------
 */

/* 1 if the path path[0..len) (the request's, as received, up to '?') holds no dot segment: no
 * segment between '/'s (or at the end) is "." or "..", each dot also written %2e or %2E. 0 if it
 * does: the request is then answered 400, so that no request can leave the replica's base path
 * (a replica that resolves "/base/../admin" would otherwise see "/admin"). */
int tc__proxy_path_ok(const char *path, size_t len);

/* Appends to out the URL an attempt of the request target target[0..len) (origin form:
 * "/path?query" as received) goes to on the replica at replica_url: the replica's scheme, host
 * and port, its path without a trailing '/', then the request's path, less strip[0..strip_len)
 * at its front when strip_len > 0 (the route's prefix without its trailing '/': "/p/x" becomes
 * "/x", "/p" becomes "/"), then the request's '?' and query byte for byte. The replica URL's own
 * query and fragment are not used, nor is the target's fragment. Returns 0; TC_EINVAL (the
 * target does not start with '/', holds a dot segment, or does not start with strip); TC_EURL
 * (replica_url has no "scheme://"); TC_ETOOLARGE (past out's max) or TC_ENOMEM: out then holds
 * a partial URL. */
int tc__proxy_url(tc__buf *out, const char *replica_url, const char *target, size_t len,
                  const char *strip, size_t strip_len);

/* ---- the request's headers -------------------------------------------------------------------
 */

typedef struct tc__proxy_request_in {
    const tc__field *fields; /* the client's header fields, in the order received */
    size_t nfields;
    const tc__field *added; /* the route's upstream_headers, in their order */
    size_t nadded;
    const char *client_addr; /* the client's address, appended to X-Forwarded-For ("": none) */
    size_t client_addr_len;
    const char *request_id; /* X-Request-Id for the upstream (the request's id) */
    size_t request_id_len;
    const char *proto; /* X-Forwarded-Proto: the scheme the client used ("http") */
    int preserve_host; /* 1: the client's Host goes on; 0: the client sets the replica's */
} tc__proxy_request_in;

/* 1 if the client's header name[0..len) is never passed on to an upstream: the hop-by-hop
 * fields (Connection, Keep-Alive, TE, Trailer, Transfer-Encoding, Upgrade, Proxy-*, and every
 * name a Connection field of in lists), Content-Length (the body is framed again), Expect
 * (tailcut answers it), Host unless in->preserve_host, the fields tailcut sets itself
 * (X-Forwarded-For, which it appends to, X-Forwarded-Proto, X-Forwarded-Host, X-Request-Id and
 * every X-Tailcut-*) and every name of in->added. Case-insensitive. */
int tc__proxy_request_drops(const tc__proxy_request_in *in, const char *name, size_t len);

/* The upstream request's headers, less the two that differ per attempt (X-Tailcut-Attempt,
 * X-Tailcut-Timeout-Ms): the client's fields that tc__proxy_request_drops() keeps, in their
 * order, then X-Forwarded-For (the client's values joined with ", ", then the client's
 * address), X-Forwarded-Proto, X-Forwarded-Host (the client's Host, when it sent one),
 * X-Request-Id, then the route's added headers. X-Forwarded-For's value is written into xff
 * (reset first) and the field points into it: out is valid while xff and in's ranges are.
 * Writes at most cap fields into out and sets *nout. Returns 0; TC_ETOOLARGE (more than cap
 * fields, or xff past its max) or TC_ENOMEM. */
int tc__proxy_request_headers(const tc__proxy_request_in *in, tc__buf *xff, tc__field *out,
                              size_t cap, size_t *nout);

/* The client's X-Tailcut-Timeout-Ms value[0..len): the rules of the `timeout` query parameter
 * (ASCII digits only, 1 to max_ms), without percent-decoding. Returns 0 and sets *timeout_ms, or
 * TC_EINVAL with the 400's message in *why. */
int tc__proxy_timeout_header(const char *value, size_t len, uint64_t max_ms, uint64_t *timeout_ms,
                             const char **why);

/* ---- which requests are hedged ---------------------------------------------------------------
 */

typedef enum tc__proxy_hedge {
    TC__PROXY_HEDGED = 0,
    TC__PROXY_UNHEDGED_METHOD,        /* a method not in hedge_methods, without a usable key */
    TC__PROXY_UNHEDGED_BODY_TOO_LARGE /* a body over body_replay_limit_bytes */
} tc__proxy_hedge;

/* The metric label of an unhedged reason: "method", "body_too_large" ("" for HEDGED). */
const char *tc__proxy_unhedged_name(tc__proxy_hedge reason);

/* Whether a request may be hedged: its method method[0..len) is one of methods[0..nmethods)
 * (exact, case-sensitive: methods are tokens), or it carries an Idempotency-Key (has_key) and
 * the route hedges on one (key_switch); and its body fits replay_limit: body_len is its length
 * when known (a Content-Length, 0 for none), or -1 for a chunked body still to come (then only
 * the method decides here; the caller applies the limit as the body arrives). The method is
 * checked first: a POST with a large body is unhedged for its method. */
tc__proxy_hedge tc__proxy_hedge_rule(const char *method, size_t len, const char *const *methods,
                                     size_t nmethods, int has_key, int key_switch, int64_t body_len,
                                     uint64_t replay_limit);

/* ---- the response's headers ------------------------------------------------------------------
 */

/* 1 if the upstream response header name[0..len) is not passed on to the client: the
 * hop-by-hop fields (as for requests, with the names the response's own Connection fields
 * list: fields[0..nfields) is its whole head), the framing the server writes again
 * (Content-Length, Transfer-Encoding), the fields the server sets itself (Date, X-Request-Id)
 * and X-Tailcut-Attempts, which tailcut sets. */
int tc__proxy_response_drops(const tc__field *fields, size_t nfields, const char *name, size_t len);

#endif /* TAILCUT_PROXY_INTERNAL_H */
