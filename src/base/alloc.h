/*
 * The one allocation hook of the library: everything under src/ allocates through these, so a
 * test can make the Nth allocation fail (nghttp2's failmalloc idea) and check that the library
 * answers TC_ENOMEM, or 503 overloaded, and leaks nothing. They are malloc & co. otherwise, so
 * memory from one may be released with the other (the program frees what the library returns
 * with free()).
 *
 * The countdown is per thread: a test arms it on the thread that runs its loop, and the worker
 * threads of a server are never affected.
 *
 * jansson and libcurl allocate through the same hook, so a failing N reaches them too: jansson's
 * allocator (json_set_alloc_funcs) is set once when the library is loaded (a constructor in
 * alloc.c), and libcurl's (curl_global_init_mem) where the client's libcurl engine initialises
 * libcurl. (If the program initialised libcurl first, libcurl keeps the program's allocator.)
 * libuv's allocations are not counted: libuv aborts on some internal allocation failures, so
 * uv_replace_allocator would test libuv rather than tailcut.
 */
#ifndef TAILCUT_BASE_ALLOC_H
#define TAILCUT_BASE_ALLOC_H

#include <stddef.h>

void *tc__malloc(size_t n);
void *tc__calloc(size_t count, size_t size);
void *tc__realloc(void *p, size_t n);
void tc__free(void *p);
char *tc__strdup(const char *s);

/* Test hook: the nth allocation from now on this thread fails (1 = the next one), and every one
 * after it succeeds again; n = 0 disarms. */
void tc__alloc_fail_nth(unsigned long n);

/* Test hook: the nth allocation from now on this thread fails, and so does every one after it
 * until tc__alloc_fail_nth(0) disarms (memory that stays short, not one failure). */
void tc__alloc_fail_from(unsigned long n);

/* 1 once the armed failure has happened (and until the next tc__alloc_fail_nth). */
int tc__alloc_failed(void);

#endif /* TAILCUT_BASE_ALLOC_H */
