/*
 * The JSON string writer for text tailcut writes itself (error messages, URLs and messages in
 * fetch's result lines): the output is always valid JSON, because bytes that are not valid UTF-8
 * become U+FFFD. Never for upstream payloads, which pass through byte for byte.
 */
#ifndef TAILCUT_BASE_JSON_WRITE_H
#define TAILCUT_BASE_JSON_WRITE_H

#include <stddef.h>

#include "base/buf.h"

/* Length of the valid UTF-8 sequence (shortest form, no surrogates, at most U+10FFFF) that
 * starts at s, of at most n > 0 bytes; 0 if there is none. */
size_t tc__utf8_len(const unsigned char *s, size_t n);

/* Appends s[0..len) as a JSON string literal, quotes included: '"', '\\' and control bytes
 * escaped (\n \r \t \b \f, others \u00XX), invalid UTF-8 bytes as \ufffd one by one. Returns 0,
 * or TC_ETOOLARGE / TC_ENOMEM from tc__buf_append, with part of the literal then appended. */
int tc__json_write_str(tc__buf *b, const char *s, size_t len);

#endif /* TAILCUT_BASE_JSON_WRITE_H */
