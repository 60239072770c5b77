/*
 * The allocation hook of alloc.h: a per-thread countdown in front of the C allocator.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "base/alloc.h"

static _Thread_local unsigned long fail_in; /* 0: not armed; 1: the next allocation fails */
static _Thread_local int fail_rest;         /* every allocation after that one fails too */
static _Thread_local int failed;

/* 1 if this allocation is one to fail. */
static int should_fail(void)
{
    if (fail_in == 0)
        return 0;
    if (fail_in > 1) {
        fail_in--;
        return 0;
    }
    if (!fail_rest)
        fail_in = 0;
    failed = 1;
    return 1;
}

void *tc__malloc(size_t n)
{
    return should_fail() ? NULL : malloc(n);
}

/* Out of line on purpose: GCC folds a memset of zeroes right after a malloc of that size back
 * into calloc, which tc__calloc avoids. */
__attribute__((noinline)) static void *zeroed(void *p, size_t n)
{
    return p != NULL ? memset(p, 0, n) : NULL;
}

/* malloc and a memset rather than calloc: glibc's calloc (2.36) skips the per-thread cache
 * and takes the arena's path on every call, several hundred instructions where malloc's cache
 * hit costs a few dozen; the hot path allocates a few small zeroed blocks a request. */
void *tc__calloc(size_t count, size_t size)
{
    if (should_fail())
        return NULL;
    if (size != 0 && count > SIZE_MAX / size)
        return NULL;
    size_t n = count * size;
    return zeroed(malloc(n + (n == 0)), n); /* calloc(0, ...) gives a block too, as glibc's */
}

void *tc__realloc(void *p, size_t n)
{
    return should_fail() ? NULL : realloc(p, n);
}

void tc__free(void *p)
{
    free(p);
}

char *tc__strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *copy = tc__malloc(n);
    if (copy != NULL)
        memcpy(copy, s, n);
    return copy;
}

void tc__alloc_fail_nth(unsigned long n)
{
    fail_in = n;
    fail_rest = 0;
    failed = 0;
}

void tc__alloc_fail_from(unsigned long n)
{
    fail_in = n;
    fail_rest = n != 0;
    failed = 0;
}

int tc__alloc_failed(void)
{
    return failed;
}

/* jansson's allocator is process-wide and must be set before anything allocates through it, so
 * it is set when the library is loaded, before main() and before any thread exists. The hook is
 * malloc & co. unless a test arms it, so a program that uses jansson on its own sees no change. */
__attribute__((constructor)) static void tc__alloc_jansson(void)
{
    json_set_alloc_funcs(tc__malloc, tc__free);
}
