/*
 * An intrusive doubly linked list with a sentinel head (the shape of libuv's queue.h and
 * nginx's ngx_queue_t), and container_of to get from a member back to its structure.
 *
 * A node is a tc__link inside the structure it links; the list never allocates. An unlinked
 * node points at itself, so removing a node twice is harmless.
 */
#ifndef TAILCUT_BASE_LIST_H
#define TAILCUT_BASE_LIST_H

#include <stddef.h>

#define tc__container_of(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

typedef struct tc__link {
    struct tc__link *prev, *next;
} tc__link;

static inline void tc__list_init(tc__link *head)
{
    head->prev = head->next = head;
}

static inline int tc__list_empty(const tc__link *head)
{
    return head->next == head;
}

static inline void tc__list_push_back(tc__link *head, tc__link *l)
{
    l->prev = head->prev;
    l->next = head;
    head->prev->next = l;
    head->prev = l;
}

static inline void tc__list_remove(tc__link *l)
{
    l->prev->next = l->next;
    l->next->prev = l->prev;
    l->prev = l->next = l;
}

/* Puts to in from's place: in from's list (to links where from did), or, when from is a list's
 * head, as the head of the same nodes. from is left unlinked (an empty head). For a head whose
 * structure moves: copy into the new place, then replace the old one, whose memory is still
 * valid (tc__list_init(to) would lose the nodes, and a plain copy leaves them pointing back at
 * the old place). */
static inline void tc__list_replace(tc__link *from, tc__link *to)
{
    if (from->next == from) {
        tc__list_init(to);
        return;
    }
    to->next = from->next;
    to->prev = from->prev;
    to->next->prev = to;
    to->prev->next = to;
    tc__list_init(from);
}

/* The first node, or NULL when empty. */
static inline tc__link *tc__list_first(const tc__link *head)
{
    return head->next == head ? NULL : head->next;
}

/* The last node, or NULL when empty. */
static inline tc__link *tc__list_last(const tc__link *head)
{
    return head->prev == head ? NULL : head->prev;
}

#endif /* TAILCUT_BASE_LIST_H */
