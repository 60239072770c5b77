/*
 * A strict RFC 8259 JSON validator and a raw top-level object reader, for upstream bodies.
 *
 * Nothing here allocates or builds a tree. tc_json_valid() decides, in one pass over the bytes,
 * whether a buffer is exactly one JSON text (an upstream attempt counts as successful only if
 * its body is one).
 * tc_json_object_get() and tc_json_iter then pick byte ranges out of a buffer already known valid,
 * so an upstream's `results[ID]` can be passed on byte for byte without re-serialising it.
 *
 * What "valid" means here, precisely:
 * - The whole buffer is one value (any value, also a bare scalar such as `3` or `"x"`), with
 *   optional whitespace (space, tab, LF, CR only) around it. An empty buffer is invalid. A UTF-8
 *   byte order mark is invalid (RFC 8259 §8.1: senders MUST NOT add one).
 * - Numbers follow the grammar exactly: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
 *   Magnitude is not checked (`1e999` and a 400-digit integer are valid JSON).
 * - Strings: no raw bytes below 0x20; escapes are \" \\ \/ \b \f \n \r \t and \uXXXX (hex in
 *   either case); raw bytes must be well-formed UTF-8 (RFC 3629: no overlong forms, no encoded
 *   surrogates U+D800..U+DFFF, nothing above U+10FFFF).
 * - \u escapes: any four hex digits are accepted, including \u0000 and lone or mis-ordered
 *   surrogate escapes such as "\uDEAD". This is deliberate: the RFC 8259 grammar allows them
 *   (§7, and §8.2 says so explicitly), the contract defines success as "valid JSON (RFC 8259)",
 *   and tailcut only passes these bytes through. (jansson, for one, rejects them.)
 * - Duplicate object member names are valid (the RFC says SHOULD be unique, not MUST).
 * - Nesting deeper than TC_JSON_MAX_DEPTH arrays/objects is invalid. The validator is iterative
 *   with a fixed 64-byte stack of container kinds, so no input can exhaust the C stack.
 */
#ifndef TAILCUT_JSON_H
#define TAILCUT_JSON_H

#include <stddef.h>

#include "tailcut/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Maximum nesting of arrays and objects: `[[1]]` has depth 2. TC_JSON_MAX_DEPTH levels are valid,
 * one more is not. A multiple of 8. */
#define TC_JSON_MAX_DEPTH 512

/* 1 if buf[0..len) is exactly one valid JSON text (see the rules above), else 0. buf need not be
 * NUL-terminated and is never read beyond len; buf may be NULL when len is 0. Thread-safe. */
int tc_json_valid(const char *buf, size_t len);

/* 1 if the raw contents of a JSON string (the bytes between its quotes, escapes still in place,
 * as given by tc_json_iter_next) unescape to exactly key[0..key_len). \uXXXX escapes are compared
 * as the UTF-8 they stand for (a surrogate pair as one 4-byte sequence; a lone surrogate as its
 * 3-byte generalised UTF-8 form, which no valid UTF-8 key can equal). Never reads outside the
 * ranges; a malformed escape compares unequal. */
int tc_json_key_equal(const char *raw, size_t raw_len, const char *key, size_t key_len);

/* One member of an object: the key's raw contents (between the quotes, still escaped) and the
 * value's raw bytes (for a string value, including its quotes; for a container, from its opening
 * to its closing bracket). All ranges point into the caller's buffer. */
typedef struct tc_json_member {
    const char *key;
    size_t key_len;
    const char *value;
    size_t value_len;
} tc_json_member;

/* Iterates over the members of the top-level object of a buffer. */
typedef struct tc_json_iter {
    const char *p;
    const char *end;
    int state; /* internal: 0 before the first member, 1 between members, 2 done */
} tc_json_iter;

/* Starts iterating buf[0..len), which the caller has already checked with tc_json_valid().
 * Returns 0, or TC_EINVAL if the top-level value is not an object (e.g. an array or a scalar). */
int tc_json_iter_init(tc_json_iter *it, const char *buf, size_t len);

/* The next member, in document order (duplicates included). Returns 1 and fills *m, 0 after the
 * last member, or TC_EPROTO if the buffer turns out not to be valid JSON after all (the iterator
 * skips values without fully validating them, but never reads outside the buffer whatever the
 * input). */
int tc_json_iter_next(tc_json_iter *it, tc_json_member *m);

/* Finds the member `key` (key_len bytes, compared with tc_json_key_equal) of the top-level object
 * of buf[0..len), a buffer already checked with tc_json_valid(). With duplicate keys the LAST one
 * wins, as in jansson, JavaScript's JSON.parse and Python's json. Sets *val / *val_len to the
 * value's raw bytes inside buf (see tc_json_member) and returns 0; returns TC_EMISSING if there
 * is no such member, TC_EINVAL if the top-level value is not an object, TC_EPROTO if the buffer
 * is not valid JSON after all (never reading outside it). *val / *val_len are set only on 0. */
int tc_json_object_get(const char *buf, size_t len, const char *key, size_t key_len,
                       const char **val, size_t *val_len);

#ifdef __cplusplus
}
#endif
#endif /* TAILCUT_JSON_H */
