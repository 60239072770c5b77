/*
 * The reference-counted string table of table.h.
 */
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/hash.h"
#include "base/table.h"

tc__table_entry *tc__table_find(const tc__table *tab, const char *key)
{
    if (tab->nbuckets == 0)
        return NULL;
    uint32_t hash = tc__fnv1a_str(TC__FNV1A_INIT, key);
    for (tc__table_entry *e = tab->buckets[hash & (tab->nbuckets - 1)]; e; e = e->next)
        if (e->hash == hash && strcmp(e->key, key) == 0)
            return e;
    return NULL;
}

static int grow(tc__table *tab)
{
    size_t nb = tab->nbuckets ? tab->nbuckets * 2 : 16;
    tc__table_entry **buckets = tc__calloc(nb, sizeof(tc__table_entry *));
    if (buckets == NULL)
        return -1;
    for (size_t i = 0; i < tab->nbuckets; i++) {
        tc__table_entry *e = tab->buckets[i];
        while (e != NULL) {
            tc__table_entry *next = e->next;
            e->next = buckets[e->hash & (nb - 1)];
            buckets[e->hash & (nb - 1)] = e;
            e = next;
        }
    }
    tc__free(tab->buckets);
    tab->buckets = buckets;
    tab->nbuckets = nb;
    return 0;
}

tc__table_entry *tc__table_ref(tc__table *tab, const char *key, size_t size, int *created)
{
    if (created != NULL)
        *created = 0;
    tc__table_entry *e = tc__table_find(tab, key);
    if (e != NULL) {
        e->refs++;
        return e;
    }
    if (tab->count >= tab->nbuckets && grow(tab) != 0)
        return NULL;
    size_t klen = strlen(key);
    e = tc__calloc(1, size + klen + 1);
    if (e == NULL)
        return NULL;
    char *kp = (char *)e + size;
    memcpy(kp, key, klen + 1);
    e->key = kp;
    e->hash = tc__fnv1a_str(TC__FNV1A_INIT, key);
    e->refs = 1;
    e->next = tab->buckets[e->hash & (tab->nbuckets - 1)];
    tab->buckets[e->hash & (tab->nbuckets - 1)] = e;
    tab->count++;
    if (created != NULL)
        *created = 1;
    return e;
}

int tc__table_unref(tc__table *tab, tc__table_entry *e)
{
    if (e == NULL || --e->refs > 0)
        return 0;
    tc__table_entry **pp = &tab->buckets[e->hash & (tab->nbuckets - 1)];
    /* e was put in this chain by tc__table_ref, so the walk reaches it. */
    while (*pp != e)
        pp = &(*pp)->next;
    *pp = e->next;
    tab->count--;
    tc__free(e);
    return 1;
}

void tc__table_free(tc__table *tab)
{
    tc__free(tab->buckets);
    tc__table_init(tab);
}
