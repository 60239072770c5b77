/*
 * The reference-counted string table of table.h.
 */
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/hash.h"
#include "base/table.h"

tc__table_entry *tc__table_find(const tc__table *t, const char *key)
{
    if (t->nbuckets == 0)
        return NULL;
    uint32_t h = tc__fnv1a_str(TC__FNV1A_INIT, key);
    for (tc__table_entry *e = t->buckets[h & (t->nbuckets - 1)]; e; e = e->next)
        if (e->hash == h && strcmp(e->key, key) == 0)
            return e;
    return NULL;
}

static int grow(tc__table *t)
{
    size_t nb = t->nbuckets ? t->nbuckets * 2 : 16;
    tc__table_entry **b = tc__calloc(nb, sizeof(tc__table_entry *));
    if (b == NULL)
        return -1;
    for (size_t i = 0; i < t->nbuckets; i++) {
        tc__table_entry *e = t->buckets[i];
        while (e != NULL) {
            tc__table_entry *next = e->next;
            e->next = b[e->hash & (nb - 1)];
            b[e->hash & (nb - 1)] = e;
            e = next;
        }
    }
    tc__free(t->buckets);
    t->buckets = b;
    t->nbuckets = nb;
    return 0;
}

tc__table_entry *tc__table_ref(tc__table *t, const char *key, size_t size, int *created)
{
    if (created != NULL)
        *created = 0;
    tc__table_entry *e = tc__table_find(t, key);
    if (e != NULL) {
        e->refs++;
        return e;
    }
    if (t->count >= t->nbuckets && grow(t) != 0)
        return NULL;
    size_t klen = strlen(key);
    e = tc__calloc(1, size + klen + 1);
    if (e == NULL)
        return NULL;
    char *k = (char *)e + size;
    memcpy(k, key, klen + 1);
    e->key = k;
    e->hash = tc__fnv1a_str(TC__FNV1A_INIT, key);
    e->refs = 1;
    e->next = t->buckets[e->hash & (t->nbuckets - 1)];
    t->buckets[e->hash & (t->nbuckets - 1)] = e;
    t->count++;
    if (created != NULL)
        *created = 1;
    return e;
}

int tc__table_unref(tc__table *t, tc__table_entry *e)
{
    if (e == NULL || --e->refs > 0)
        return 0;
    tc__table_entry **pp = &t->buckets[e->hash & (t->nbuckets - 1)];
    /* e was put in this chain by tc__table_ref, so the walk reaches it. */
    while (*pp != e)
        pp = &(*pp)->next;
    *pp = e->next;
    t->count--;
    tc__free(e);
    return 1;
}

void tc__table_free(tc__table *t)
{
    tc__free(t->buckets);
    tc__table_init(t);
}
