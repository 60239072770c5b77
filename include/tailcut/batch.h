/*
 * A coalescing request batcher on a caller-supplied uv loop ("DataLoader" for C).
 *
 * Callers submit keys one at a time and get a future of that key's value. The batcher gathers
 * the keys into a batch and hands the batch to a user-supplied dispatch function, which looks
 * them all up in one go (one HTTP call, one SQL query, ...) and resolves each key. Nothing here
 * knows about HTTP: keys are byte strings, values are whatever the dispatcher produces.
 *
 * When a batch goes out. A batch is *collecting* from its first key on. It is dispatched when it
 * holds max_batch distinct keys (at once, inside the tc_batcher_submit() that added the last
 * one; the next key starts a new batch) or max_wait_ms after its first key, whichever is first.
 * Identical keys within one collecting batch are sent once; every waiter gets the result.
 * Keys are not coalesced across batches: a key submitted while an earlier batch with the same
 * key is already out goes into the collecting batch.
 *
 * In-flight cap. At most max_in_flight batches are out (dispatched and not yet finished with
 * tc_batch_done()/tc_batch_fail()). A batch ready beyond that waits in a FIFO queue and goes out
 * as soon as an earlier one finishes. Timeouts are the caller's: wrap the future from
 * tc_batcher_submit() with tc_with_timeout() (or cancel it yourself); since that clock starts at
 * submit, time spent collecting and queued counts toward it.
 *
 * Leaving. A waiter whose future is cancelled (by tc_with_timeout on expiry, or by the caller)
 * leaves at once; the batch still completes for the others. When a batch is about to be
 * dispatched, keys without any waiter left are not handed to the dispatcher, and a batch with
 * no waiter left at all is dropped without a dispatch (also while queued). A key whose waiters
 * left still counts toward max_batch of its collecting batch.
 *
 * Values and ownership. A value is shared by every waiter of its key (no copies): it is
 * allocated with tc_batch_value_alloc() (or tc_batch_resolve_bytes() does it) and carries a
 * reference count. Each waiter's future holds one reference and drops it when the future is
 * freed; tc_future_value() of that future is the value pointer itself. Treat a shared value as
 * read-only; take tc_batch_value_ref() to keep it beyond the future's life. The count is not
 * atomic: values belong to the loop's thread.
 *
 * Dispatch protocol. dispatch(batch, data) runs on the loop thread and owns `batch` until it
 * calls exactly one of tc_batch_done() or tc_batch_fail(), now or later from any callback on the
 * loop. Before that it may resolve or reject keys one by one (waiters are answered at that
 * moment). tc_batch_done(): every key left unresolved rejects with TC_EMISSING ("missing").
 * tc_batch_fail(err, msg): every key left unresolved rejects with err and msg. After either
 * call the batch pointer is invalid. Waiter callbacks run synchronously inside these calls and
 * inside tc_batcher_submit() (a full batch with a synchronous dispatcher resolves there); they
 * may submit more keys, cancel waiters and close the batcher.
 *
 * Everything runs on one loop thread; nothing is thread-safe; there is no global state.
 */
#ifndef TAILCUT_BATCH_H
#define TAILCUT_BATCH_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "tailcut/error.h"
#include "tailcut/future.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TC_BATCH_DEFAULT_MAX_BATCH 50
#define TC_BATCH_DEFAULT_MAX_WAIT_MS 10
#define TC_BATCH_DEFAULT_MAX_IN_FLIGHT 16
#define TC_BATCH_DEFAULT_MAX_QUEUED 1024
#define TC_BATCH_DEFAULT_MAX_KEY 1024
/* Hard upper limits on the configuration. */
#define TC_BATCH_MAX_BATCH_LIMIT 1000000
#define TC_BATCH_MAX_KEY_LIMIT (64 * 1024)

typedef struct tc_batcher tc_batcher;
typedef struct tc_batch tc_batch;

/* Called with a batch to look up; see "Dispatch protocol" above. data is the config's data. */
typedef void (*tc_batch_dispatch_fn)(tc_batch *batch, void *data);

typedef struct tc_batcher_config {
    size_t max_batch;     /* distinct keys that make a batch full, 1..1000000 [50] */
    uint64_t max_wait_ms; /* longest a batch collects after its first key; 0 = next loop
                           * iteration [10] */
    size_t max_in_flight; /* batches out at once; 0 = no cap [16] */
    size_t max_queued;    /* batches waiting for the cap before submit says TC_EBUSY; 0 = no
                           * limit [1024] */
    size_t max_key_len;   /* longest key in bytes, 0..65536 [1024] */
    tc_batch_dispatch_fn dispatch; /* required */
    void *data;                    /* passed to dispatch */
} tc_batcher_config;

/* Fills cfg with the defaults in brackets above (dispatch and data NULL). */
void tc_batcher_config_init(tc_batcher_config *cfg);

/* Creates a batcher on loop. cfg is copied. Returns 0, TC_EINVAL (NULL argument, no dispatch,
 * a value out of range), TC_ENOMEM. */
int tc_batcher_new(tc_batcher **out, uv_loop_t *loop, const tc_batcher_config *cfg);

/* Closes the batcher: submit fails with TC_ECLOSED from now on; the waiters of the collecting
 * batch and of queued batches are cancelled at once (their futures become CANCELLED, no
 * dispatch happens for them). Batches already dispatched stay the dispatcher's: the batcher
 * waits until each is finished with tc_batch_done()/tc_batch_fail() (a dispatcher built on a
 * tc_client finishes them when the client is closed). Then close_cb (may be NULL) runs from the
 * loop and the batcher is freed. Calling it again does nothing. */
typedef void (*tc_batcher_close_cb)(tc_batcher *b, void *data);
void tc_batcher_close(tc_batcher *b, tc_batcher_close_cb close_cb, void *data);

/* Submits key[0..key_len) (copied). On 0, *out is a future (one reference for the caller) that
 * fulfils with the key's shared value (see above; NULL if the dispatcher resolved it with NULL)
 * or rejects with the dispatcher's per-key error, TC_EMISSING, or the batch's failure; it is
 * CANCELLED if the batcher is closed before the batch goes out. It may already be done when
 * this returns (a full batch with a synchronous dispatcher). Cancelling it makes this waiter
 * leave (see "Leaving").
 * Returns 0, or TC_EINVAL (NULL out/b, NULL key with key_len > 0), TC_ETOOLARGE (key over
 * max_key_len), TC_EBUSY (max_queued batches are waiting), TC_ECLOSED, TC_ENOMEM; then no
 * future. */
int tc_batcher_submit(tc_future **out, tc_batcher *b, const void *key, size_t key_len);

/* Sends the collecting batch now (or queues it behind the cap) without waiting for max_wait_ms.
 * Does nothing when no batch is collecting. */
void tc_batcher_flush(tc_batcher *b);

uv_loop_t *tc_batcher_loop(const tc_batcher *b);
void *tc_batcher_data(const tc_batcher *b); /* the config's data */

/* Counters for metrics and tests; cumulative since tc_batcher_new unless marked "now". */
typedef struct tc_batcher_stats {
    uint64_t submitted;       /* successful tc_batcher_submit() calls */
    uint64_t dedup_hits;      /* submits whose key was already in the collecting batch */
    uint64_t batches_sent;    /* dispatch calls */
    uint64_t keys_sent;       /* keys handed to dispatch, summed over batches */
    uint64_t batches_full;    /* batches closed because max_batch distinct keys were in */
    uint64_t batches_timed;   /* batches closed by max_wait_ms */
    uint64_t batches_queued;  /* batches that had to wait for the in-flight cap */
    uint64_t batches_dropped; /* batches with no waiter left, never dispatched */
    uint64_t batches_failed;  /* batches finished with tc_batch_fail() */
    uint64_t waiters_left;    /* waiters cancelled before their key was settled */
    uint64_t keys_missing;    /* keys left unresolved at tc_batch_done() */
    size_t largest_batch;     /* the most keys handed to one dispatch */
    size_t in_flight;         /* now: dispatched, not finished */
    size_t queued;            /* now: waiting for the cap */
    size_t collecting;        /* now: distinct keys in the collecting batch */
} tc_batcher_stats;

void tc_batcher_get_stats(const tc_batcher *b, tc_batcher_stats *out);

/* ---- the dispatcher's side ------------------------------------------------------------------ */

/* Keys in the batch, 1 or more. Key i is 0 <= i < tc_batch_size(), in first-submitted order,
 * each distinct key once. */
size_t tc_batch_size(const tc_batch *batch);

/* Key i: a NUL-terminated copy (the NUL is not counted in *len; len may be NULL), valid until
 * the batch is finished. NULL if i is out of range. */
const char *tc_batch_key(const tc_batch *batch, size_t i, size_t *len);

/* Waiters still waiting for key i right now (0 once it is settled or all of them left). */
size_t tc_batch_waiters(const tc_batch *batch, size_t i);

tc_batcher *tc_batch_batcher(const tc_batch *batch);

/* Milliseconds from the batch's first submit to its dispatch (collecting plus queued): the
 * longest any of its keys waited in the batcher before going out. */
double tc_batch_wait_ms(const tc_batch *batch);

/* Resolves key i with value: NULL, or a pointer from tc_batch_value_alloc(). The caller's
 * reference to value passes to the batch in every case (on error it is dropped). Each waiter
 * of the key is fulfilled now. Returns 0, or TC_EINVAL (i out of range, key already settled). */
int tc_batch_resolve(tc_batch *batch, size_t i, void *value);

/* Resolves key i with a copy of data[0..len) as a shared tc_batch_bytes value.
 * Returns 0, TC_EINVAL as tc_batch_resolve, or TC_ENOMEM (the key stays unresolved). */
int tc_batch_resolve_bytes(tc_batch *batch, size_t i, const void *data, size_t len);

/* Rejects every waiter of key i with err (a negative TC_E* code) and message (copied; NULL means
 * tc_strerror(err)). Returns 0 or TC_EINVAL (i out of range, already settled). */
int tc_batch_reject_key(tc_batch *batch, size_t i, int err, const char *message);

/* Finishes the batch; keys not settled reject with TC_EMISSING, message "missing: no result
 * for this key". The batch pointer is invalid afterwards. */
void tc_batch_done(tc_batch *batch);

/* Finishes the batch as failed; keys not settled reject with err and message (as
 * tc_batch_reject_key). The batch pointer is invalid afterwards. */
void tc_batch_fail(tc_batch *batch, int err, const char *message);

/* ---- shared values -------------------------------------------------------------------------- */

/* Allocates size bytes (zeroed, aligned for any type) with a hidden reference count of 1.
 * dispose (may be NULL) runs on the value when the last reference goes, before the memory is
 * freed: use it to release what the value points to. Returns NULL when out of memory. */
void *tc_batch_value_alloc(size_t size, tc_free_fn dispose);

/* Adds a reference to a value from tc_batch_value_alloc(); returns it. NULL is a no-op. */
void *tc_batch_value_ref(void *value);

/* Drops a reference; the last one disposes and frees the value. NULL is a no-op. This is also
 * the free function of every waiter future's value. */
void tc_batch_value_unref(void *value);

/* The value made by tc_batch_resolve_bytes(): len bytes of data, followed by a NUL. */
typedef struct tc_batch_bytes {
    size_t len;
    char data[];
} tc_batch_bytes;

#ifdef __cplusplus
}
#endif
#endif /* TAILCUT_BATCH_H */
