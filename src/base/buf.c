/*
 * The bounded buffer of buf.h.
 */
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "tailcut/error.h"

void tc__buf_init(tc__buf *b, char *storage, size_t cap, size_t max)
{
    b->data = storage;
    b->cap = storage ? cap : 0;
    b->len = 0;
    b->max = max;
    b->first = storage;
    b->first_cap = b->cap;
}

int tc__buf_append_grow(tc__buf *b, const void *p, size_t n)
{
    if (n > b->max - b->len)
        return TC_ETOOLARGE;
    if (b->len + n + 1 > b->cap) {
        size_t ncap = b->cap ? b->cap : 64;
        while (ncap < b->len + n + 1)
            ncap *= 2;
        char *nd;
        if (b->data == b->first) {
            nd = tc__malloc(ncap);
            if (nd != NULL && b->len > 0)
                memcpy(nd, b->data, b->len);
        } else {
            nd = tc__realloc(b->data, ncap);
        }
        if (nd == NULL)
            return TC_ENOMEM;
        b->data = nd;
        b->cap = ncap;
    }
    if (n > 0)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

char *tc__buf_cstr(tc__buf *b)
{
    if (b->data == NULL)
        return (char *)"";
    b->data[b->len] = '\0';
    return b->data;
}

void tc__buf_reset(tc__buf *b)
{
    if (b->data != b->first)
        tc__free(b->data);
    b->data = b->first;
    b->cap = b->first_cap;
    b->len = 0;
}
