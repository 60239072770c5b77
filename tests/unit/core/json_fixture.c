/*
 * The JSON tests' fixture (json_fixture.h). Compiled once into the folder's fixture library;
 * only the jfx_ names are shared.
 */
#include "json_fixture.h"

int jfx_valid_n(const char *s, size_t n)
{
    char *copy = malloc(n ? n : 1);
    assert_non_null(copy);
    memcpy(copy, s, n);
    int r = tc_json_valid(copy, n);
    free(copy);
    return r;
}

int jfx_valid(const char *s)
{
    return jfx_valid_n(s, strlen(s));
}

void jfx_expect_valid(const char *s)
{
    if (!jfx_valid(s))
        fail_msg("expected valid: '%s'", s);
}

void jfx_expect_invalid_n(const char *s, size_t n)
{
    if (jfx_valid_n(s, n))
        fail_msg("expected invalid: '%.*s' (%zu bytes)", (int)n, s, n);
}

void jfx_expect_invalid(const char *s)
{
    jfx_expect_invalid_n(s, strlen(s));
}

void jfx_expect_each(const char *const *inputs, size_t n, int valid)
{
    for (size_t i = 0; i < n; i++) {
        if (valid)
            jfx_expect_valid(inputs[i]);
        else
            jfx_expect_invalid(inputs[i]);
    }
}
