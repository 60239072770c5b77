/*
 * A string-keyed, reference-counted hash table (the idea of redis dict.c and curl lib/hash.c,
 * cut down to what tailcut needs): tc__table_ref() finds the entry for a key or creates it, and
 * takes a reference; tc__table_unref() drops one and frees the entry with the last. An entry is
 * the caller's own structure, whose first member is a tc__table_entry, followed by room the
 * table allocates for the key. Chained buckets, power-of-two sized, grown at load 1.
 */
#ifndef TAILCUT_BASE_TABLE_H
#define TAILCUT_BASE_TABLE_H

#include <stddef.h>
#include <stdint.h>

typedef struct tc__table_entry {
    struct tc__table_entry *next;
    uint32_t hash;
    size_t refs;
    const char *key; /* NUL-terminated, stored right after the caller's structure */
} tc__table_entry;

typedef struct tc__table {
    tc__table_entry **buckets;
    size_t nbuckets, count;
} tc__table;

static inline void tc__table_init(tc__table *tab)
{
    tab->buckets = NULL;
    tab->nbuckets = tab->count = 0;
}

/* The entry for key, or NULL. Takes no reference. */
tc__table_entry *tc__table_find(const tc__table *tab, const char *key);

/* The entry for key with one more reference. A new one is `size` bytes (the caller's structure,
 * size >= sizeof(tc__table_entry)) plus the key, zeroed but for its header, with refs = 1;
 * *created (may be NULL) says which. NULL on ENOMEM. */
tc__table_entry *tc__table_ref(tc__table *tab, const char *key, size_t size, int *created);

/* Drops one reference; frees the entry (a plain free) with the last. Returns 1 if freed. */
int tc__table_unref(tc__table *tab, tc__table_entry *e);

/* Frees the bucket array; every entry must be gone. */
void tc__table_free(tc__table *tab);

#endif /* TAILCUT_BASE_TABLE_H */
