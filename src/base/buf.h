/*
 * A growable byte buffer with a hard maximum (curl's dynbuf idea): it may start in storage the
 * owner provides (an inline array, so that small contents cost no allocation), moves to the heap
 * when it outgrows it, and refuses to grow past `max` with TC_ETOOLARGE. One byte is always kept
 * free after the contents, so a NUL can be written there.
 */
#ifndef TAILCUT_BASE_BUF_H
#define TAILCUT_BASE_BUF_H

#include <stddef.h>
#include <string.h>

typedef struct tc__buf {
    char *data;
    size_t len, cap;
    size_t max;  /* contents never exceed this many bytes */
    char *first; /* the owner's initial storage (not freed), or NULL */
    size_t first_cap;
} tc__buf;

/* Starts empty in storage[0..cap) (storage may be NULL with cap 0). */
void tc__buf_init(tc__buf *b, char *storage, size_t cap, size_t max);

/* tc__buf_append when the bytes do not fit in the storage it has: grows it (or refuses). */
int tc__buf_append_grow(tc__buf *b, const void *p, size_t n);

/* Appends n bytes. Returns 0, TC_ETOOLARGE (len + n > max; nothing appended) or TC_ENOMEM.
 * Inline: a request's access-log line, upstream head and answer are built from a few dozen
 * short appends that nearly always fit, each then a compare and a copy the compiler sizes. */
static inline int tc__buf_append(tc__buf *b, const void *p, size_t n)
{
    if (n >= b->cap - b->len || n > b->max - b->len)
        return tc__buf_append_grow(b, p, n);
    if (n > 0)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

/* Writes a NUL after the contents (there is always room) and returns data; an empty buffer
 * that never had storage returns a read-only "". */
char *tc__buf_cstr(tc__buf *b);

/* Frees heap storage and empties the buffer (back in its initial storage). */
void tc__buf_reset(tc__buf *b);

#endif /* TAILCUT_BASE_BUF_H */
