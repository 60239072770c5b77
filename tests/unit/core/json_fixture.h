/*
 * Shared fixture of the tests of src/core/json.c (test_json_*.c): validation of exact-size heap
 * copies, so ASan flags any read past the length.
 */
#ifndef TC_TEST_JSON_FIXTURE_H
#define TC_TEST_JSON_FIXTURE_H
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "tailcut/json.h"

/* Validates an exact-size heap copy, so ASan flags any read past len. */
static inline int valid_n(const char *s, size_t n)
{
    char *copy = malloc(n ? n : 1);
    assert_non_null(copy);
    memcpy(copy, s, n);
    int r = tc_json_valid(copy, n);
    free(copy);
    return r;
}

static inline int valid(const char *s)
{
    return valid_n(s, strlen(s));
}

static inline void expect_valid(const char *s)
{
    if (!valid(s))
        fail_msg("expected valid: '%s'", s);
}

static inline void expect_invalid_n(const char *s, size_t n)
{
    if (valid_n(s, n))
        fail_msg("expected invalid: '%.*s' (%zu bytes)", (int)n, s, n);
}

static inline void expect_invalid(const char *s)
{
    expect_invalid_n(s, strlen(s));
}

#endif /* TC_TEST_JSON_FIXTURE_H */
