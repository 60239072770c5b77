/*
 * Futures and asyncio-style combinators (gather, wait, as_completed, first_success, with_timeout,
 * sleep, call_later) on a caller-supplied uv loop.
 *
 * The one idea: completion is a synchronous state change followed by a callback sweep, and
 * every party that can be called back owns a reference. A future's state moves from PENDING
 * exactly once; the sweep then runs each registered callback with its slot already cleared, so
 * re-entrant calls (cancel inside a callback, complete inside a cancel hook, dropping the last
 * reference inside a callback) see a consistent future and can never fire a slot twice. The
 * sweep itself holds a reference, so nothing is freed under it.
 *
 * The combinators are in future_comb.c. They share one state object (struct comb) with one input
 * (struct comb_input) per input future: the callback registration on it plus a reference to it. The
 * comb is refcounted: one reference while it is active, one while its timer handle is open (dropped
 * in the uv_close callback, never earlier), and short guard references while it runs user-visible
 * code. When a combinator is done (its condition held, its timer fired or its future was cancelled)
 * it "finishes": it detaches every input that has not fired, closes its timer, completes its future
 * and drops its references, so nothing keeps the loop alive afterwards.
 *
 * Allocation: a future is one malloc; its first TC__FUTURE_INLINE_CBS callbacks live inside it.
 * A rejection message is copied (at most TC__FUTURE_MESSAGE_MAX bytes with the NUL); a NULL
 * message and cancellation use the static tc_strerror() text and allocate nothing. A combinator
 * is one malloc for its state and inputs, plus its result value where it has one.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "future_internal.h"
#include "tailcut/future.h"

/* Callback slots stored inside the future before it needs a heap array. */
#define TC__FUTURE_INLINE_CBS 2

enum future_origin { ORIGIN_PLAIN = 0, ORIGIN_FIRST_SUCCESS };

struct cb_slot {
    tc_future_cb cb;
    void *data;
};

struct tc_future {
    uint32_t refs;
    uint8_t state;     /* tc_future_state */
    uint8_t origin;    /* enum future_origin */
    uint8_t msg_owned; /* message was malloc'd by us */
    uint8_t sweeping;  /* callbacks are being fired; slots must not move */
    uint32_t ncb;      /* slots in use (some may be cleared during the sweep) */
    uint32_t extra_cap;
    int err;
    long index; /* tc_first_success_index() */
    void *value;
    tc_free_fn free_value;
    tc_future *borrowed_from; /* keeps a borrowed value alive */
    const char *message;
    tc_future_cb cancel_hook;
    void *cancel_data;
    struct cb_slot inline_cbs[TC__FUTURE_INLINE_CBS];
    struct cb_slot *extra_cbs; /* slots ncb >= TC__FUTURE_INLINE_CBS */
};

/* ---- the future itself ---------------------------------------------------------------------- */

int tc_future_new(tc_future **out)
{
    if (out == NULL)
        return TC_EINVAL;
    tc_future *f = tc__calloc(1, sizeof(*f));
    if (f == NULL)
        return TC_ENOMEM;
    f->refs = 1;
    f->state = TC_FUTURE_PENDING;
    f->index = -1;
    *out = f;
    return 0;
}

tc_future *tc_future_ref(tc_future *f)
{
    if (f != NULL)
        f->refs++;
    return f;
}

static void future_free(tc_future *f)
{
    if (f->state == TC_FUTURE_FULFILLED && f->free_value != NULL && f->value != NULL)
        f->free_value(f->value);
    if (f->msg_owned)
        tc__free((char *)f->message);
    tc__free(f->extra_cbs);
    tc_future *borrowed = f->borrowed_from;
    tc__free(f);
    tc_future_unref(borrowed);
}

void tc_future_unref(tc_future *f)
{
    if (f == NULL)
        return;
    if (--f->refs == 0)
        future_free(f);
}

static struct cb_slot *slot_at(tc_future *f, uint32_t i)
{
    return i < TC__FUTURE_INLINE_CBS ? &f->inline_cbs[i] : &f->extra_cbs[i - TC__FUTURE_INLINE_CBS];
}

/* Fires every registered callback of a future that has just left PENDING, in registration
 * order. Each slot is cleared before its callback runs, and each registration's reference is
 * dropped after it. New registrations on a done future fire at once and never land here. */
static void future_sweep(tc_future *f)
{
    f->refs++;
    f->sweeping = 1;
    for (uint32_t i = 0; i < f->ncb; i++) {
        struct cb_slot *slot = slot_at(f, i);
        tc_future_cb cb = slot->cb;
        if (cb == NULL)
            continue; /* removed by tc_future_off_done() during the sweep */
        void *data = slot->data;
        slot->cb = NULL;
        /* lands in what tc_future_on_done registered (docs/internals/request-path.md lists those
         * of a request: on_hedge_attempt_done, on_hedge_done, on_meta_response, ...) */
        cb(f, data);
        f->refs--; /* the registration's; our own keeps f alive */
    }
    f->sweeping = 0;
    f->ncb = 0;
    tc__free(f->extra_cbs);
    f->extra_cbs = NULL;
    f->extra_cap = 0;
    tc_future_unref(f);
}

int tc_future_fulfill(tc_future *f, void *value, tc_free_fn free_value)
{
    if (f == NULL || f->state != TC_FUTURE_PENDING) {
        if (free_value != NULL && value != NULL)
            free_value(value);
        if (f == NULL)
            return TC_EINVAL;
        return f->state == TC_FUTURE_CANCELLED ? TC_ECANCELED : TC_EINVAL;
    }
    f->value = value;
    f->free_value = free_value;
    f->state = TC_FUTURE_FULFILLED;
    f->cancel_hook = NULL;
    future_sweep(f);
    return 0;
}

/* Fulfils f with src's value, borrowed: f keeps src alive instead of owning the value. */
int tc__future_fulfill_borrowed(tc_future *f, tc_future *src)
{
    if (f->state != TC_FUTURE_PENDING)
        return f->state == TC_FUTURE_CANCELLED ? TC_ECANCELED : TC_EINVAL;
    f->borrowed_from = tc_future_ref(src);
    f->value = src->value;
    f->free_value = NULL;
    f->state = TC_FUTURE_FULFILLED;
    f->cancel_hook = NULL;
    future_sweep(f);
    return 0;
}

/* Copies at most TC__FUTURE_MESSAGE_MAX - 1 bytes of message, cutting on a UTF-8 boundary.
 * Returns NULL when out of memory. */
static char *message_copy(const char *message)
{
    size_t len = strnlen(message, TC__FUTURE_MESSAGE_MAX);
    if (len >= TC__FUTURE_MESSAGE_MAX) {
        len = TC__FUTURE_MESSAGE_MAX - 1;
        while (len > 0 && ((unsigned char)message[len] & 0xC0) == 0x80)
            len--; /* do not split a multi-byte character */
    }
    char *copy = tc__malloc(len + 1);
    if (copy == NULL)
        return NULL;
    memcpy(copy, message, len);
    copy[len] = '\0';
    return copy;
}

/* A code that is not a TC_E* error (0 or positive) is a producer bug; the future is still
 * rejected, with TC_EINVAL, so that its callbacks fire and nobody waits forever. */
int tc_future_reject(tc_future *f, int err, const char *message)
{
    if (f == NULL)
        return TC_EINVAL;
    if (f->state != TC_FUTURE_PENDING)
        return f->state == TC_FUTURE_CANCELLED ? TC_ECANCELED : TC_EINVAL;
    int rc = 0;
    if (err >= 0) {
        err = TC_EINVAL;
        rc = TC_EINVAL;
    }
    f->message = tc_strerror(err);
    if (message != NULL) {
        char *copy = message_copy(message);
        if (copy != NULL) {
            f->message = copy;
            f->msg_owned = 1;
        } else {
            rc = TC_ENOMEM;
        }
    }
    f->err = err;
    f->state = TC_FUTURE_REJECTED;
    f->cancel_hook = NULL;
    future_sweep(f);
    return rc;
}

int tc_future_cancel(tc_future *f)
{
    if (f == NULL || f->state != TC_FUTURE_PENDING)
        return 0;
    f->state = TC_FUTURE_CANCELLED;
    f->err = TC_ECANCELED;
    f->message = tc_strerror(TC_ECANCELED);
    tc_future_cb hook = f->cancel_hook;
    void *hook_data = f->cancel_data;
    f->cancel_hook = NULL;
    f->cancel_data = NULL;
    f->refs++; /* the hook may drop the producer's reference */
    /* the producer's hook: client.c req_cancel_hook, hedge.c on_hedge_cancel, batch.c
     * waiter_on_cancel, future_comb.c comb_on_cancel */
    if (hook != NULL)
        hook(f, hook_data);
    future_sweep(f);
    /* Our guard reference (taken above) kept f alive through the sweep; this drops it. */
    // NOLINTNEXTLINE(clang-analyzer-unix.Malloc)
    tc_future_unref(f);
    return 1;
}

void tc_future_set_cancel_hook(tc_future *f, tc_future_cb hook, void *data)
{
    if (f == NULL || f->state != TC_FUTURE_PENDING)
        return; /* a done future never calls its hook: keep no stale pointer */
    f->cancel_hook = hook;
    f->cancel_data = hook == NULL ? NULL : data;
}

int tc_future_on_done(tc_future *f, tc_future_cb cb, void *data)
{
    if (f == NULL || cb == NULL)
        return TC_EINVAL;
    if (f->state != TC_FUTURE_PENDING) {
        f->refs++;
        cb(f, data);
        tc_future_unref(f);
        return 0;
    }
    if (f->ncb >= TC__FUTURE_INLINE_CBS && f->ncb - TC__FUTURE_INLINE_CBS == f->extra_cap) {
        uint32_t cap = f->extra_cap == 0 ? 4 : f->extra_cap * 2;
        if (cap <= f->extra_cap)
            return TC_ENOMEM;
        struct cb_slot *grown = tc__realloc(f->extra_cbs, cap * sizeof(*grown));
        if (grown == NULL)
            return TC_ENOMEM;
        f->extra_cbs = grown;
        f->extra_cap = cap;
    }
    struct cb_slot *slot = slot_at(f, f->ncb++);
    slot->cb = cb;
    slot->data = data;
    f->refs++;
    return 0;
}

int tc_future_off_done(tc_future *f, tc_future_cb cb, void *data)
{
    if (f == NULL || cb == NULL)
        return TC_EINVAL;
    for (uint32_t i = 0; i < f->ncb; i++) {
        struct cb_slot *slot = slot_at(f, i);
        if (slot->cb != cb || slot->data != data)
            continue;
        if (f->sweeping) {
            slot->cb = NULL; /* the sweep skips it; slots must not move under it */
        } else {
            for (uint32_t j = i + 1; j < f->ncb; j++)
                *slot_at(f, j - 1) = *slot_at(f, j);
            f->ncb--;
        }
        tc_future_unref(f); /* may free f: touch nothing after this */
        return 0;
    }
    return TC_EINVAL;
}

tc_future_state tc_future_state_of(const tc_future *f)
{
    return f == NULL ? TC_FUTURE_PENDING : (tc_future_state)f->state;
}

int tc_future_done(const tc_future *f)
{
    return f != NULL && f->state != TC_FUTURE_PENDING;
}

void *tc_future_value(const tc_future *f)
{
    return f != NULL && f->state == TC_FUTURE_FULFILLED ? f->value : NULL;
}

int tc_future_error(const tc_future *f)
{
    if (f == NULL)
        return 0;
    return f->state == TC_FUTURE_REJECTED || f->state == TC_FUTURE_CANCELLED ? f->err : 0;
}

const char *tc_future_message(const tc_future *f)
{
    if (f == NULL || f->message == NULL)
        return "";
    return f->state == TC_FUTURE_REJECTED || f->state == TC_FUTURE_CANCELLED ? f->message : "";
}

long tc_first_success_index(const tc_future *out)
{
    if (out == NULL || out->origin != ORIGIN_FIRST_SUCCESS || out->state != TC_FUTURE_FULFILLED)
        return -1;
    return out->index;
}

/* Completes dst the way src completed: same value (borrowed), same error, or cancelled. */
void tc__future_mirror(tc_future *dst, tc_future *src)
{
    switch ((tc_future_state)src->state) {
    case TC_FUTURE_FULFILLED:
        tc__future_fulfill_borrowed(dst, src);
        break;
    case TC_FUTURE_REJECTED:
        tc_future_reject(dst, src->err, tc_future_message(src));
        break;
    case TC_FUTURE_CANCELLED:
        tc_future_cancel(dst);
        break;
    case TC_FUTURE_PENDING:
        break;
    }
}

void tc__future_mark_first_success(tc_future *f, long index)
{
    f->origin = ORIGIN_FIRST_SUCCESS;
    f->index = index;
}
