/*
 * The coalescing batcher (see include/tailcut/batch.h for the contract).
 *
 * The one idea: a batch is a small hash set of distinct keys, each key with a list of waiter
 * nodes, and a waiter node is both the producer's reference to one caller's future and that
 * future's cancel hook. Settling a key walks its list, unlinking each node *before* completing
 * its future, so a callback that cancels a sibling waiter (or submits, or closes the batcher)
 * always finds the lists consistent. Nothing is freed under a running loop over a batch: code
 * that iterates a batch holds it (holds > 0), and a batch that dies meanwhile is released by the
 * last holder.
 *
 * Life of a batch: COLLECTING (the batcher's `current`, its timer running) -> QUEUED (waiting
 * for the in-flight cap, FIFO) -> OUT (the dispatcher owns it) -> DEAD. A batch with no waiter
 * left is dropped on its way out (or while queued) and never dispatched. One finished batch is
 * kept as a spare, with its arrays, so that steady traffic allocates no batch structures.
 *
 * Memory per key: one waiter node and one future per submit, the key bytes once per distinct
 * key in the batch's key arena, and one shared value per distinct key. Keys are bounded by
 * max_key_len, batches by max_batch keys, the queue by max_queued batches.
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/hash.h"
#include "base/list.h"
#include "tailcut/batch.h"

/* Starting sizes of a batch's arrays; they double up to what max_batch needs. */
#define BATCH_INITIAL_ENTRIES 16
#define BATCH_INITIAL_KEY_BYTES 256

static const char missing_message[] = "missing: no result for this key";

typedef struct waiter {
    tc_future *f; /* the producer's reference */
    tc_batch *batch;
    tc__link link; /* in its entry's waiters */
    uint32_t idx;  /* entry index in batch->entries */
} waiter;

typedef struct entry {
    size_t key_off; /* into batch->keys; the key is followed by a NUL */
    size_t key_len;
    uint32_t hash;
    uint32_t nwaiters;
    int settled;
    tc__link waiters; /* FIFO; moves with entries[] (batch_grow_entries relinks it) */
} entry;

enum batch_state { BATCH_COLLECTING = 0, BATCH_QUEUED, BATCH_OUT, BATCH_DEAD };

struct tc_batch {
    tc_batcher *batcher;
    enum batch_state state;
    entry *entries;
    size_t nentries, entries_cap;
    uint32_t *table;   /* open addressing: 0 = empty, else entry index + 1 */
    size_t table_size; /* a power of two, at least twice nentries */
    char *keys;
    size_t keys_len, keys_cap;
    uint32_t *order; /* entries handed to dispatch: key i is entries[order[i]]; entries_cap long */
    size_t n;
    size_t live;                /* waiters still waiting, over all entries */
    unsigned holds;             /* frames iterating this batch; a DEAD batch is released at 0 */
    uint64_t first_ns, sent_ns; /* uv_hrtime() of the first submit and of the dispatch */
    tc__link qlink;             /* in the batcher's queue while QUEUED */
};

struct tc_batcher {
    uv_loop_t *loop;
    tc_batcher_config cfg;
    uv_timer_t timer; /* max_wait_ms of the collecting batch */
    tc_batch *current;
    tc__link queue; /* QUEUED batches, FIFO */
    tc_batch *spare;
    tc_batcher_stats st;
    uint32_t seed;
    int closing;
    int close_started; /* the timer handle is being closed */
    int pumping;
    tc_batcher_close_cb close_cb;
    void *close_data;
};

/* ---- shared values -------------------------------------------------------------------------- */

typedef union value_hdr {
    struct {
        size_t refs;
        tc_free_fn dispose;
    } h;
    max_align_t align; /* the value that follows is aligned for any type */
} value_hdr;

void *tc_batch_value_alloc(size_t size, tc_free_fn dispose)
{
    if (size > SIZE_MAX - sizeof(value_hdr))
        return NULL;
    value_hdr *hdr = tc__calloc(1, sizeof(value_hdr) + size);
    if (hdr == NULL)
        return NULL;
    hdr->h.refs = 1;
    hdr->h.dispose = dispose;
    return hdr + 1;
}

void *tc_batch_value_ref(void *value)
{
    if (value != NULL)
        ((value_hdr *)value - 1)->h.refs++;
    return value;
}

void tc_batch_value_unref(void *value)
{
    if (value == NULL)
        return;
    value_hdr *hdr = (value_hdr *)value - 1;
    if (--hdr->h.refs > 0)
        return;
    if (hdr->h.dispose != NULL)
        hdr->h.dispose(value);
    tc__free(hdr);
}

/* ---- batches -------------------------------------------------------------------------------- */

static uint32_t key_hash(uint32_t seed, const unsigned char *p, size_t len)
{
    return tc__fnv1a(TC__FNV1A_INIT ^ seed, p, len); /* seeded per batcher */
}

static void batch_free(tc_batch *bt)
{
    tc__free(bt->entries);
    tc__free(bt->table);
    tc__free(bt->keys);
    tc__free(bt->order);
    tc__free(bt);
}

/* A fresh batch in COLLECTING state: the spare one if there is one. NULL when out of memory. */
static tc_batch *batch_new(tc_batcher *br)
{
    tc_batch *bt = br->spare;
    if (bt != NULL) {
        br->spare = NULL;
    } else {
        bt = tc__calloc(1, sizeof(*bt));
        if (bt == NULL)
            return NULL;
        bt->entries_cap =
            br->cfg.max_batch < BATCH_INITIAL_ENTRIES ? br->cfg.max_batch : BATCH_INITIAL_ENTRIES;
        bt->table_size = 4;
        while (bt->table_size < 2 * bt->entries_cap)
            bt->table_size *= 2;
        bt->keys_cap = BATCH_INITIAL_KEY_BYTES;
        bt->entries = tc__malloc(bt->entries_cap * sizeof(*bt->entries));
        bt->order = tc__malloc(bt->entries_cap * sizeof(*bt->order));
        bt->table = tc__calloc(bt->table_size, sizeof(*bt->table));
        bt->keys = tc__malloc(bt->keys_cap);
        if (bt->entries == NULL || bt->order == NULL || bt->table == NULL || bt->keys == NULL) {
            batch_free(bt);
            return NULL;
        }
    }
    bt->batcher = br;
    bt->state = BATCH_COLLECTING;
    tc__list_init(&bt->qlink);
    return bt;
}

/* Frees a DEAD batch nobody holds, or keeps it (emptied) as the batcher's spare. */
static void batch_release(tc_batch *bt)
{
    tc_batcher *br = bt->batcher;
    if (bt->holds > 0)
        return; /* the last holder releases it */
    if (br->spare != NULL || br->closing) {
        batch_free(bt);
        return;
    }
    if (bt->nentries > 0)
        memset(bt->table, 0, bt->table_size * sizeof(*bt->table));
    bt->nentries = 0;
    bt->keys_len = 0;
    bt->n = 0;
    bt->live = 0;
    br->spare = bt;
}

static void batch_hold(tc_batch *bt)
{
    bt->holds++;
}

static void batch_unhold(tc_batch *bt)
{
    if (--bt->holds == 0 && bt->state == BATCH_DEAD)
        batch_release(bt);
}

/* Doubles the hash table and re-inserts every entry. Returns 0 or TC_ENOMEM. */
static int batch_grow_table(tc_batch *bt)
{
    size_t size = bt->table_size * 2;
    uint32_t *table = tc__calloc(size, sizeof(*table));
    if (table == NULL)
        return TC_ENOMEM;
    for (size_t i = 0; i < bt->nentries; i++) {
        size_t pos = bt->entries[i].hash & (size - 1);
        while (table[pos] != 0)
            pos = (pos + 1) & (size - 1);
        table[pos] = (uint32_t)i + 1;
    }
    tc__free(bt->table);
    bt->table = table;
    bt->table_size = size;
    return 0;
}

/* Doubles entries[] (and order[] with it). Each entry heads a list of waiters, so the entries
 * move to a new array while the old one is still there to unlink from, not by realloc. Returns 0
 * or TC_ENOMEM (the batch is unchanged then, order[] merely bigger than needed). */
static int batch_grow_entries(tc_batch *bt)
{
    size_t cap = bt->entries_cap > 0 ? bt->entries_cap * 2 : BATCH_INITIAL_ENTRIES;
    uint32_t *order = tc__realloc(bt->order, cap * sizeof(*order));
    if (order == NULL)
        return TC_ENOMEM;
    bt->order = order;
    entry *grown = tc__malloc(cap * sizeof(*grown));
    if (grown == NULL)
        return TC_ENOMEM;
    for (size_t i = 0; i < bt->nentries; i++) {
        grown[i] = bt->entries[i];
        tc__list_replace(&bt->entries[i].waiters, &grown[i].waiters);
    }
    tc__free(bt->entries);
    bt->entries = grown;
    bt->entries_cap = cap;
    return 0;
}

/* Finds key in the batch or adds it as a new entry (*added = 1). Returns the entry index or
 * TC_ENOMEM (the batch is unchanged then). */
static long batch_find_or_add(tc_batch *bt, const void *key, size_t len, uint32_t hash, int *added)
{
    if ((bt->nentries + 1) * 2 > bt->table_size && batch_grow_table(bt) != 0)
        return TC_ENOMEM;
    size_t mask = bt->table_size - 1;
    size_t pos = hash & mask;
    for (uint32_t slot; (slot = bt->table[pos]) != 0; pos = (pos + 1) & mask) {
        const entry *e = &bt->entries[slot - 1];
        if (e->hash == hash && e->key_len == len &&
            (len == 0 || memcmp(bt->keys + e->key_off, key, len) == 0)) {
            *added = 0;
            return (long)(slot - 1);
        }
    }
    if (bt->nentries == bt->entries_cap && batch_grow_entries(bt) != 0)
        return TC_ENOMEM;
    if (bt->keys_cap - bt->keys_len < len + 1) {
        size_t cap = bt->keys_cap * 2;
        while (cap - bt->keys_len < len + 1)
            cap *= 2;
        char *grown = tc__realloc(bt->keys, cap);
        if (grown == NULL)
            return TC_ENOMEM;
        bt->keys = grown;
        bt->keys_cap = cap;
    }
    entry *e = &bt->entries[bt->nentries];
    e->key_off = bt->keys_len;
    e->key_len = len;
    e->hash = hash;
    e->nwaiters = 0;
    e->settled = 0;
    tc__list_init(&e->waiters);
    if (len > 0)
        memcpy(bt->keys + bt->keys_len, key, len);
    bt->keys[bt->keys_len + len] = '\0';
    bt->keys_len += len + 1;
    bt->table[pos] = (uint32_t)bt->nentries + 1;
    *added = 1;
    return (long)bt->nentries++;
}

static void waiter_unlink(entry *e, waiter *wt)
{
    tc__list_remove(&wt->link);
    e->nwaiters--;
}

/* The first waiter of e, or NULL. */
static waiter *waiter_first(const entry *e)
{
    tc__link *l = tc__list_first(&e->waiters);
    return l != NULL ? tc__container_of(l, waiter, link) : NULL;
}

/* ---- the queue and dispatching -------------------------------------------------------------- */

static void queue_push(tc_batcher *br, tc_batch *bt)
{
    bt->state = BATCH_QUEUED;
    tc__list_push_back(&br->queue, &bt->qlink);
    br->st.queued++;
}

static void queue_remove(tc_batcher *br, tc_batch *bt)
{
    tc__list_remove(&bt->qlink);
    br->st.queued--;
}

/* The oldest queued batch, or NULL. */
static tc_batch *queue_first(const tc_batcher *br)
{
    tc__link *l = tc__list_first(&br->queue);
    return l != NULL ? tc__container_of(l, tc_batch, qlink) : NULL;
}

static int at_cap(const tc_batcher *br)
{
    return br->cfg.max_in_flight != 0 && br->st.in_flight >= br->cfg.max_in_flight;
}

static void batch_drop(tc_batch *bt)
{
    bt->state = BATCH_DEAD;
    bt->batcher->st.batches_dropped++;
    batch_release(bt);
}

/* Hands a batch with waiters to the dispatcher. bt may be gone when this returns. */
static void batch_send(tc_batcher *br, tc_batch *bt)
{
    size_t n = 0; /* order[] has room for every entry: it grows with entries[] */
    for (size_t i = 0; i < bt->nentries; i++) {
        if (bt->entries[i].nwaiters > 0)
            bt->order[n++] = (uint32_t)i;
        else
            bt->entries[i].settled = 1; /* everyone left: not sent */
    }
    bt->n = n;
    bt->state = BATCH_OUT;
    bt->sent_ns = uv_hrtime();
    br->st.in_flight++;
    br->st.batches_sent++;
    br->st.keys_sent += n;
    if (n > br->st.largest_batch)
        br->st.largest_batch = n;
    /* lands in app/serve/cmd_serve_metadata.c metadata_dispatch */
    br->cfg.dispatch(bt, br->cfg.data);
}

/* Sends queued batches while the cap allows. Re-entrant calls (a synchronous dispatcher that
 * finishes its batch inside dispatch) return at once; the outer loop carries on. */
static void queue_pump(tc_batcher *br)
{
    if (br->pumping)
        return;
    br->pumping = 1;
    tc_batch *bt;
    while (!at_cap(br) && (bt = queue_first(br)) != NULL) {
        /* A dropped batch was unlinked first, so the queue never holds one batch_drop() freed. */
        // NOLINTNEXTLINE(clang-analyzer-unix.Malloc)
        queue_remove(br, bt);
        if (bt->live == 0)
            batch_drop(bt);
        else
            batch_send(br, bt);
    }
    br->pumping = 0;
}

/* A batch is ready (full, timed out or flushed): send it, queue it, or drop it if empty. */
static void batch_ready(tc_batcher *br, tc_batch *bt)
{
    if (bt->live == 0) {
        batch_drop(bt);
    } else if (!tc__list_empty(&br->queue) || at_cap(br)) {
        queue_push(br, bt);
        br->st.batches_queued++;
    } else {
        batch_send(br, bt);
    }
}

/* Ends the collecting phase of the current batch. */
static void close_collecting(tc_batcher *br)
{
    tc_batch *bt = br->current;
    if (bt == NULL)
        return;
    br->current = NULL;
    uv_timer_stop(&br->timer);
    batch_ready(br, bt);
}

static void on_batcher_timer(uv_timer_t *timer)
{
    tc_batcher *br = timer->data;
    if (br->current == NULL)
        return;
    br->st.batches_timed++;
    close_collecting(br);
}

static void on_batcher_timer_closed(uv_handle_t *h)
{
    tc_batcher *br = h->data;
    if (br->close_cb != NULL)
        br->close_cb(br, br->close_data);
    if (br->spare != NULL)
        batch_free(br->spare);
    tc__free(br);
}

static void batcher_maybe_finish_close(tc_batcher *br)
{
    if (!br->closing || br->close_started || br->st.in_flight > 0)
        return;
    br->close_started = 1;
    uv_close((uv_handle_t *)&br->timer, on_batcher_timer_closed);
}

/* ---- waiters -------------------------------------------------------------------------------- */

/* Cancel hook of a waiter's future: the waiter leaves its key. */
static void waiter_on_cancel(tc_future *f, void *data)
{
    waiter *wt = data;
    tc_batch *bt = wt->batch;
    tc_batcher *br = bt->batcher;
    waiter_unlink(&bt->entries[wt->idx], wt);
    bt->live--;
    br->st.waiters_left++;
    tc__free(wt);
    tc_future_unref(f); /* the producer's reference; tc_future_cancel holds its own */
    if (bt->state == BATCH_QUEUED && bt->live == 0) {
        queue_remove(br, bt);
        batch_drop(bt);
    }
}

/* Cancels every waiter of a batch that will never go out (the batcher is closing). */
static void batch_cancel_all(tc_batch *bt)
{
    bt->state = BATCH_DEAD;
    bt->batcher->st.batches_dropped++;
    batch_hold(bt);
    for (size_t i = 0; i < bt->nentries; i++) {
        waiter *wt;
        while ((wt = waiter_first(&bt->entries[i])) != NULL)
            tc_future_cancel(wt->f); /* the hook unlinks and frees wt */
    }
    batch_unhold(bt);
}

/* Settles entry e: fulfils each waiter with value (a reference each) or rejects it with err.
 * Consumes the caller's reference to value. */
static void entry_settle(tc_batch *bt, entry *e, int err, const char *message, void *value)
{
    e->settled = 1;
    batch_hold(bt);
    waiter *wt;
    while ((wt = waiter_first(e)) != NULL) {
        waiter_unlink(e, wt);
        bt->live--;
        tc_future *f = wt->f;
        tc__free(wt);
        /* fires the waiter's registrations: in serve, future_comb.c input_on_done (with_timeout) */
        if (err == 0)
            tc_future_fulfill(f, tc_batch_value_ref(value),
                              value != NULL ? tc_batch_value_unref : NULL);
        else
            tc_future_reject(f, err, message);
        tc_future_unref(f);
    }
    tc_batch_value_unref(value);
    batch_unhold(bt);
}

/* ---- the batcher ---------------------------------------------------------------------------- */

void tc_batcher_config_init(tc_batcher_config *cfg)
{
    if (cfg == NULL)
        return;
    memset(cfg, 0, sizeof(*cfg));
    cfg->max_batch = TC_BATCH_DEFAULT_MAX_BATCH;
    cfg->max_wait_ms = TC_BATCH_DEFAULT_MAX_WAIT_MS;
    cfg->max_in_flight = TC_BATCH_DEFAULT_MAX_IN_FLIGHT;
    cfg->max_queued = TC_BATCH_DEFAULT_MAX_QUEUED;
    cfg->max_key_len = TC_BATCH_DEFAULT_MAX_KEY;
}

int tc_batcher_new(tc_batcher **out, uv_loop_t *loop, const tc_batcher_config *cfg)
{
    if (out == NULL || loop == NULL || cfg == NULL || cfg->dispatch == NULL ||
        cfg->max_batch == 0 || cfg->max_batch > TC_BATCH_MAX_BATCH_LIMIT ||
        cfg->max_key_len > (size_t)TC_BATCH_MAX_KEY_LIMIT)
        return TC_EINVAL;
    tc_batcher *br = tc__calloc(1, sizeof(*br));
    if (br == NULL)
        return TC_ENOMEM;
    br->loop = loop;
    br->cfg = *cfg;
    tc__list_init(&br->queue);
    int rc = uv_timer_init(loop, &br->timer);
    if (rc != 0) {
        tc__free(br);
        return tc_err_from_uv(rc);
    }
    br->timer.data = br;
    br->seed = (uint32_t)(uv_hrtime() ^ (uint64_t)(uintptr_t)br ^ ((uint64_t)(uintptr_t)br >> 32));
    *out = br;
    return 0;
}

void tc_batcher_close(tc_batcher *br, tc_batcher_close_cb close_cb, void *data)
{
    if (br == NULL || br->closing)
        return;
    br->closing = 1;
    br->close_cb = close_cb;
    br->close_data = data;
    tc_batch *bt = br->current;
    br->current = NULL;
    uv_timer_stop(&br->timer);
    if (bt != NULL)
        batch_cancel_all(bt);
    while ((bt = queue_first(br)) != NULL) {
        /* bt is unlinked before batch_cancel_all() may free it: the queue never holds a freed
         * batch. */
        // NOLINTNEXTLINE(clang-analyzer-unix.Malloc)
        queue_remove(br, bt);
        batch_cancel_all(bt);
    }
    batcher_maybe_finish_close(br);
}

int tc_batcher_submit(tc_future **out, tc_batcher *br, const void *key, size_t key_len)
{
    if (out == NULL || br == NULL || (key == NULL && key_len > 0))
        return TC_EINVAL;
    if (br->closing)
        return TC_ECLOSED;
    if (key_len > br->cfg.max_key_len)
        return TC_ETOOLARGE;
    if (br->cfg.max_queued != 0 && br->st.queued >= br->cfg.max_queued)
        return TC_EBUSY;

    waiter *wt = tc__malloc(sizeof(*wt));
    tc_future *f = NULL;
    if (wt == NULL || tc_future_new(&f) != 0) {
        tc__free(wt);
        return TC_ENOMEM;
    }
    tc_batch *bt = br->current;
    int fresh = bt == NULL;
    if (fresh && (bt = batch_new(br)) == NULL) {
        tc__free(wt);
        tc_future_unref(f);
        return TC_ENOMEM;
    }
    int added = 0;
    long idx = batch_find_or_add(bt, key, key_len, key_hash(br->seed, key, key_len), &added);
    if (idx < 0) {
        tc__free(wt);
        tc_future_unref(f);
        if (fresh) {
            bt->state = BATCH_DEAD;
            batch_release(bt);
        }
        return TC_ENOMEM;
    }
    if (fresh) {
        br->current = bt;
        bt->first_ns = uv_hrtime();
        uv_update_time(br->loop); /* "max_wait after the first key", not after the loop woke */
        uv_timer_start(&br->timer, on_batcher_timer, br->cfg.max_wait_ms, 0);
    }
    entry *e = &bt->entries[idx];
    wt->f = tc_future_ref(f);
    wt->batch = bt;
    wt->idx = (uint32_t)idx;
    tc__list_push_back(&e->waiters, &wt->link);
    e->nwaiters++;
    bt->live++;
    tc_future_set_cancel_hook(f, waiter_on_cancel, wt);
    br->st.submitted++;
    if (!added)
        br->st.dedup_hits++;
    *out = f;
    if (added && bt->nentries >= br->cfg.max_batch) {
        br->st.batches_full++;
        close_collecting(br); /* may dispatch, and even settle f, right here */
    }
    return 0;
}

void tc_batcher_flush(tc_batcher *br)
{
    if (br != NULL)
        close_collecting(br);
}

uv_loop_t *tc_batcher_loop(const tc_batcher *br)
{
    return br == NULL ? NULL : br->loop;
}

void *tc_batcher_data(const tc_batcher *br)
{
    return br == NULL ? NULL : br->cfg.data;
}

void tc_batcher_get_stats(const tc_batcher *br, tc_batcher_stats *out)
{
    if (br == NULL || out == NULL)
        return;
    *out = br->st;
    out->collecting = br->current != NULL ? br->current->nentries : 0;
}

/* ---- the dispatcher's side ------------------------------------------------------------------ */

size_t tc_batch_size(const tc_batch *batch)
{
    return batch == NULL ? 0 : batch->n;
}

const char *tc_batch_key(const tc_batch *batch, size_t i, size_t *len)
{
    if (batch == NULL || i >= batch->n)
        return NULL;
    const entry *e = &batch->entries[batch->order[i]];
    if (len != NULL)
        *len = e->key_len;
    return batch->keys + e->key_off;
}

size_t tc_batch_waiters(const tc_batch *batch, size_t i)
{
    if (batch == NULL || i >= batch->n)
        return 0;
    return batch->entries[batch->order[i]].nwaiters;
}

tc_batcher *tc_batch_batcher(const tc_batch *batch)
{
    return batch == NULL ? NULL : batch->batcher;
}

double tc_batch_wait_ms(const tc_batch *batch)
{
    if (batch == NULL || batch->state != BATCH_OUT)
        return 0;
    return (double)(batch->sent_ns - batch->first_ns) / 1e6;
}

/* Entry i of a batch that is out, or NULL when i is out of range or the key is settled. */
static entry *open_entry(tc_batch *batch, size_t i)
{
    if (batch == NULL || batch->state != BATCH_OUT || i >= batch->n)
        return NULL;
    entry *e = &batch->entries[batch->order[i]];
    return e->settled ? NULL : e;
}

int tc_batch_resolve(tc_batch *batch, size_t i, void *value)
{
    entry *e = open_entry(batch, i);
    if (e == NULL) {
        tc_batch_value_unref(value);
        return TC_EINVAL;
    }
    entry_settle(batch, e, 0, NULL, value);
    return 0;
}

int tc_batch_resolve_bytes(tc_batch *batch, size_t i, const void *data, size_t len)
{
    entry *e = open_entry(batch, i);
    if (e == NULL || (data == NULL && len > 0))
        return TC_EINVAL;
    if (len > SIZE_MAX - sizeof(tc_batch_bytes) - 1)
        return TC_ENOMEM;
    tc_batch_bytes *v = tc_batch_value_alloc(sizeof(tc_batch_bytes) + len + 1, NULL);
    if (v == NULL)
        return TC_ENOMEM;
    v->len = len;
    if (len > 0)
        memcpy(v->data, data, len);
    v->data[len] = '\0';
    entry_settle(batch, e, 0, NULL, v);
    return 0;
}

int tc_batch_reject_key(tc_batch *batch, size_t i, int err, const char *message)
{
    entry *e = open_entry(batch, i);
    if (e == NULL)
        return TC_EINVAL;
    entry_settle(batch, e, err < 0 ? err : TC_EINVAL, message, NULL);
    return 0;
}

/* Settles what is left with err, ends the batch, lets queued batches go and completes a close. */
static void batch_finish(tc_batch *batch, int err, const char *message, int failed)
{
    if (batch == NULL || batch->state != BATCH_OUT)
        return;
    tc_batcher *br = batch->batcher;
    batch_hold(batch);
    for (size_t i = 0; i < batch->n; i++) {
        entry *e = &batch->entries[batch->order[i]];
        if (e->settled)
            continue;
        if (!failed)
            br->st.keys_missing++;
        entry_settle(batch, e, err, message, NULL);
        if (batch->state != BATCH_OUT)
            break; /* finished again from a waiter's callback: that call settled the rest */
    }
    if (batch->state == BATCH_OUT) {
        batch->state = BATCH_DEAD;
        br->st.in_flight--;
        if (failed)
            br->st.batches_failed++;
    }
    batch_unhold(batch);
    queue_pump(br);
    batcher_maybe_finish_close(br);
}

void tc_batch_done(tc_batch *batch)
{
    batch_finish(batch, TC_EMISSING, missing_message, 0);
}

void tc_batch_fail(tc_batch *batch, int err, const char *message)
{
    batch_finish(batch, err < 0 ? err : TC_EINVAL, message, 1);
}
