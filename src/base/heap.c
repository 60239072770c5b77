/*
 * The min-heap of heap.h: an array of node pointers, each node holding its index.
 */
#include <stdlib.h>

#include "base/alloc.h"
#include "base/heap.h"
#include "tailcut/error.h"

static void set(tc__heap *h, size_t i, tc__heap_node *n)
{
    h->v[i] = n;
    n->idx = i;
}

static void sift_up(tc__heap *h, size_t i)
{
    tc__heap_node *n = h->v[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (h->v[parent]->key <= n->key)
            break;
        set(h, i, h->v[parent]);
        i = parent;
    }
    set(h, i, n);
}

static void sift_down(tc__heap *h, size_t i)
{
    tc__heap_node *n = h->v[i];
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= h->len)
            break;
        if (child + 1 < h->len && h->v[child + 1]->key < h->v[child]->key)
            child++;
        if (n->key <= h->v[child]->key)
            break;
        set(h, i, h->v[child]);
        i = child;
    }
    set(h, i, n);
}

tc__heap_node *tc__heap_min(const tc__heap *h)
{
    return h->len ? h->v[0] : NULL;
}

int tc__heap_push(tc__heap *h, tc__heap_node *n)
{
    if (h->len == h->cap) {
        size_t ncap = h->cap ? h->cap * 2 : 64;
        tc__heap_node **v = tc__realloc(h->v, ncap * sizeof(tc__heap_node *));
        if (v == NULL)
            return TC_ENOMEM;
        h->v = v;
        h->cap = ncap;
    }
    set(h, h->len++, n);
    sift_up(h, n->idx);
    return 0;
}

void tc__heap_remove(tc__heap *h, tc__heap_node *n)
{
    size_t i = n->idx;
    if (i == TC__HEAP_NONE || i >= h->len || h->v[i] != n)
        return;
    n->idx = TC__HEAP_NONE;
    h->len--;
    if (i == h->len)
        return;
    set(h, i, h->v[h->len]);
    sift_down(h, i);
    sift_up(h, i);
}

void tc__heap_free(tc__heap *h)
{
    tc__free(h->v);
    tc__heap_init(h);
}
