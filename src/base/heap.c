/*
 * The min-heap of heap.h: an array of node pointers, each node holding its index.
 */
#include <stdlib.h>

#include "base/alloc.h"
#include "base/heap.h"
#include "tailcut/error.h"

static void set(tc__heap *heap, size_t i, tc__heap_node *node)
{
    heap->v[i] = node;
    node->idx = i;
}

static void sift_up(tc__heap *heap, size_t i)
{
    tc__heap_node *node = heap->v[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (heap->v[parent]->key <= node->key)
            break;
        set(heap, i, heap->v[parent]);
        i = parent;
    }
    set(heap, i, node);
}

static void sift_down(tc__heap *heap, size_t i)
{
    tc__heap_node *node = heap->v[i];
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= heap->len)
            break;
        if (child + 1 < heap->len && heap->v[child + 1]->key < heap->v[child]->key)
            child++;
        if (node->key <= heap->v[child]->key)
            break;
        set(heap, i, heap->v[child]);
        i = child;
    }
    set(heap, i, node);
}

tc__heap_node *tc__heap_min(const tc__heap *heap)
{
    return heap->len ? heap->v[0] : NULL;
}

int tc__heap_push(tc__heap *heap, tc__heap_node *node)
{
    if (heap->len == heap->cap) {
        size_t ncap = heap->cap ? heap->cap * 2 : 64;
        tc__heap_node **v = tc__realloc(heap->v, ncap * sizeof(tc__heap_node *));
        if (v == NULL)
            return TC_ENOMEM;
        heap->v = v;
        heap->cap = ncap;
    }
    set(heap, heap->len++, node);
    sift_up(heap, node->idx);
    return 0;
}

void tc__heap_remove(tc__heap *heap, tc__heap_node *node)
{
    size_t i = node->idx;
    if (i == TC__HEAP_NONE || i >= heap->len || heap->v[i] != node)
        return;
    node->idx = TC__HEAP_NONE;
    heap->len--;
    if (i == heap->len)
        return;
    set(heap, i, heap->v[heap->len]);
    sift_down(heap, i);
    sift_up(heap, i);
}

void tc__heap_free(tc__heap *heap)
{
    tc__free(heap->v);
    tc__heap_init(heap);
}
