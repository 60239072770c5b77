/*
 * Query strings, percent-encoding and the contract's strict parameter rules.
 *
 * All functions work on byte ranges (not NUL-terminated input) and never allocate; output goes
 * into caller-supplied buffers with explicit sizes.
 */
#ifndef TAILCUT_URL_H
#define TAILCUT_URL_H

#include <stddef.h>
#include <stdint.h>

#include "tailcut/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Iterates over the name=value pairs of a raw query string (the part after '?'), split on '&'.
 * Empty pairs ("a=1&&b=2") are skipped; a pair without '=' has an empty value. */
typedef struct tc_query_iter {
    const char *p;
    const char *end;
} tc_query_iter;

void tc_query_iter_init(tc_query_iter *it, const char *query, size_t len);

/* Next pair, raw (still percent-encoded). Returns 1 and sets the ranges, or 0 at the end. */
int tc_query_next(tc_query_iter *it, const char **name, size_t *name_len, const char **value,
                  size_t *value_len);

/* Percent-decodes src into dst (dst_size bytes, NUL-terminated on success). In query mode '+'
 * decodes to a space. Returns the decoded length, TC_EINVAL for a bad escape ("%4", "%zz") or an
 * encoded NUL, or TC_ETOOLARGE if it does not fit. */
long tc_url_decode(const char *src, size_t len, char *dst, size_t dst_size, int query_mode);

/* Percent-encodes src for use as a query value (unreserved characters A-Z a-z 0-9 - . _ ~ stay).
 * Returns the encoded length (dst NUL-terminated) or TC_ETOOLARGE. */
long tc_url_encode(const char *src, size_t len, char *dst, size_t dst_size);

/* Finds the parameter `name` in a raw query, comparing decoded names. Returns the number of times
 * it occurs (0, 1, 2, ...) and, when it occurs at least once, decodes the first value into
 * value (value_size bytes); returns TC_EINVAL / TC_ETOOLARGE if that value cannot be decoded. */
long tc_query_get(const char *query, size_t len, const char *name, char *value, size_t value_size);

/* The serve endpoints' `timeout` rule: parameter given at most once, after
 * percent-decoding ASCII digits only, value 1..max_ms. Returns 0 and sets *timeout_ms (or
 * *present = 0 when absent, leaving *timeout_ms alone), or TC_EINVAL with a static message in
 * *why (e.g. "timeout must be a whole number of milliseconds"). */
int tc_query_timeout(const char *query, size_t len, uint64_t max_ms, uint64_t *timeout_ms,
                     int *present, const char **why);

/* The origin of an http(s) URL as a pool key: "scheme://host:port", the peer libcurl connects to
 * for this URL, as libcurl's own URL parser (curl_url()) reads it: percent-encoded hosts decoded,
 * IPv4 short, octal and hex forms normalised, IPv6 compressed, lower-cased, one trailing dot
 * dropped, the default port filled in. Returns 0 and sets *https; TC_ENOMEM; or TC_EURL with a
 * static reason in *why (not absolute, other scheme, no host, a host libcurl rejects such as
 * "a@b@c.com", bad port or port 0, bad IPv6 literal, or keycap too small: it must hold scheme,
 * "://" and host plus 7 bytes, room for the longest ":65535" and the NUL). */
int tc_url_origin(const char *url, char *key, size_t keycap, int *https, const char **why);

/* The contract's ID rule: 1 to 128 characters of [A-Za-z0-9_.-]. Returns 1 if valid. */
#define TC_ID_MAX 128
int tc_id_valid(const char *id, size_t len);

#ifdef __cplusplus
}
#endif
#endif /* TAILCUT_URL_H */
