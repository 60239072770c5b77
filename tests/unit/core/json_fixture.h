/*
 * Shared fixture of the tests of src/core/json.c (test_json_*.c): validation of exact-size heap
 * copies, so ASan flags any read past the length.
 *
 * Compiled once into the folder's fixture library (CMakeLists.txt); every name is jfx_.
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
int jfx_valid_n(const char *s, size_t n);

int jfx_valid(const char *s);

/* Fail the test, naming the input, unless it is valid (or invalid). */
void jfx_expect_valid(const char *s);
void jfx_expect_invalid_n(const char *s, size_t n);
void jfx_expect_invalid(const char *s);

/* jfx_expect_valid (valid 1) or jfx_expect_invalid (valid 0) on each of the n inputs. */
void jfx_expect_each(const char *const *inputs, size_t n, int valid);
#define JFX_EXPECT_ALL_VALID(inputs)                                                               \
    jfx_expect_each((inputs), sizeof(inputs) / sizeof(*(inputs)), 1)
#define JFX_EXPECT_ALL_INVALID(inputs)                                                             \
    jfx_expect_each((inputs), sizeof(inputs) / sizeof(*(inputs)), 0)

#endif /* TC_TEST_JSON_FIXTURE_H */
