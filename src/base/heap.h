/*
 * A binary min-heap of nodes keyed by a uint64_t (deadlines, in practice), intrusive like
 * libuv's heap-inl.h: the node lives inside its owner and remembers its own index, so removal
 * of any node is O(log n) without a search. The array of node pointers grows on push (the only
 * allocation) and is freed by tc__heap_free.
 */
#ifndef TAILCUT_BASE_HEAP_H
#define TAILCUT_BASE_HEAP_H

#include <stddef.h>
#include <stdint.h>

#define TC__HEAP_NONE SIZE_MAX /* index of a node that is not in a heap */

typedef struct tc__heap_node {
    uint64_t key;
    size_t idx; /* TC__HEAP_NONE when not in a heap */
} tc__heap_node;

typedef struct tc__heap {
    tc__heap_node **v;
    size_t len, cap;
} tc__heap;

static inline void tc__heap_init(tc__heap *heap)
{
    heap->v = NULL;
    heap->len = heap->cap = 0;
}

static inline void tc__heap_node_init(tc__heap_node *node)
{
    node->key = 0;
    node->idx = TC__HEAP_NONE;
}

/* The node with the smallest key, or NULL when empty. */
tc__heap_node *tc__heap_min(const tc__heap *heap);

/* Adds node with its key already set. Returns 0 or TC_ENOMEM (then node is not in the heap). */
int tc__heap_push(tc__heap *heap, tc__heap_node *node);

/* Removes node if it is in the heap; a no-op otherwise. */
void tc__heap_remove(tc__heap *heap, tc__heap_node *node);

/* Frees the array (the nodes belong to their owners). */
void tc__heap_free(tc__heap *heap);

#endif /* TAILCUT_BASE_HEAP_H */
