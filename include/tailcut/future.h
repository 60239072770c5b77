/*
 * Futures and asyncio-style combinators on a caller-supplied uv loop.
 *
 * A future is PENDING, then exactly once FULFILLED (with a value), REJECTED (with a TC_E* code
 * and a message) or CANCELLED. Everything here runs on one uv loop thread; nothing is
 * thread-safe and nothing blocks.
 *
 * Ownership and lifetime (read this first):
 * - Futures are reference counted. tc_future_new() and every combinator return a future holding
 *   one reference that belongs to the caller; drop it with tc_future_unref().
 * - A registered done-callback holds a reference until it has fired or been removed, so a
 *   future never disappears under a pending callback. A producer (an HTTP transfer, a timer)
 *   holds its own reference until it has completed the future or seen it cancelled.
 * - A combinator holds a reference to each input future until the combinator is done with it;
 *   the caller keeps its own references and drops them whenever it likes.
 * - Values: tc_future_fulfill() passes ownership of the value to the future; it is released
 *   with the given free function when the last reference goes. Values of combinator futures are
 *   documented per combinator; "borrowed" means the value belongs to an input future, which the
 *   combinator future keeps alive for as long as it lives itself.
 *
 * Callbacks: tc_future_on_done() callbacks run synchronously, in registration order, at the
 * moment the future completes, or immediately inside tc_future_on_done() if it already has.
 * Each registration fires exactly once unless removed first with tc_future_off_done(). A callback
 * may add callbacks, cancel or complete other futures and drop references, including its own.
 *
 * Cancellation: tc_future_cancel() on a pending future marks it CANCELLED, then calls the
 * producer's cancel hook (exactly once; for an HTTP attempt it aborts the transfer), then fires
 * the callbacks. A producer that completes a future after it was cancelled (even from inside
 * the cancel hook) gets TC_ECANCELED back and its value is released at once, so racing
 * completion against cancellation never leaks and never fires callbacks twice.
 */
#ifndef TAILCUT_FUTURE_H
#define TAILCUT_FUTURE_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "tailcut/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tc_future tc_future;

typedef enum tc_future_state {
    TC_FUTURE_PENDING = 0,
    TC_FUTURE_FULFILLED,
    TC_FUTURE_REJECTED,
    TC_FUTURE_CANCELLED
} tc_future_state;

typedef void (*tc_future_cb)(tc_future *f, void *data);
typedef void (*tc_free_fn)(void *value);

/* ---- the future itself ---------------------------------------------------------------------- */

/* Creates a pending future with one reference owned by the caller.
 * Returns 0, or TC_EINVAL (out is NULL), TC_ENOMEM. */
int tc_future_new(tc_future **out);

tc_future *tc_future_ref(tc_future *f);
/* Drops one reference; the last one releases the value and frees the future. NULL is a no-op. */
void tc_future_unref(tc_future *f);

/* Fulfils a pending future. The future owns value from this call on, even on error: if the
 * future is no longer pending, value is released with free_value at once.
 * Returns 0, TC_ECANCELED (it was cancelled), TC_EINVAL (already fulfilled or rejected). */
int tc_future_fulfill(tc_future *f, void *value, tc_free_fn free_value);

/* Rejects a pending future with err (a TC_E* code) and a message (copied; NULL means
 * tc_strerror(err)). Returns 0, TC_ECANCELED, TC_EINVAL as for tc_future_fulfill; on TC_ENOMEM
 * from copying the message the future is still rejected, with tc_strerror(err). */
int tc_future_reject(tc_future *f, int err, const char *message);

/* Requests cancellation. Returns 1 if the future was pending and is now CANCELLED (the cancel
 * hook has run and the callbacks have fired when this returns), 0 if it was already done. */
int tc_future_cancel(tc_future *f);

/* Installs the producer's cancel hook, called at most once, only if the future is cancelled
 * while pending. Replaces an earlier hook. hook may be NULL to remove it. */
void tc_future_set_cancel_hook(tc_future *f, tc_future_cb hook, void *data);

/* Registers cb to run once when f completes (at once if it already has).
 * Returns 0 or TC_ENOMEM (cb will then never run). */
int tc_future_on_done(tc_future *f, tc_future_cb cb, void *data);

/* Removes the first registration of (cb, data) that has not fired yet.
 * Returns 0, or TC_EINVAL if there is none. */
int tc_future_off_done(tc_future *f, tc_future_cb cb, void *data);

tc_future_state tc_future_state_of(const tc_future *f);
int tc_future_done(const tc_future *f); /* 1 unless PENDING */

/* The value of a FULFILLED future (NULL otherwise). Valid while the caller holds a reference. */
void *tc_future_value(const tc_future *f);

/* The error of a REJECTED (the code given) or CANCELLED (TC_ECANCELED) future; 0 otherwise. */
int tc_future_error(const tc_future *f);

/* The message of a REJECTED or CANCELLED future ("" otherwise). Valid while referenced. */
const char *tc_future_message(const tc_future *f);

/* ---- combinators ---------------------------------------------------------------------------- */

/* asyncio.gather. */
#define TC_GATHER_RETURN_EXCEPTIONS 1u

typedef struct tc_gather_result {
    size_t n;
    tc_future **futures; /* the inputs, in input order; inspect each one's state and value */
} tc_gather_result;

/* Fulfils, once every input is done, with a tc_gather_result (owned by the gather future).
 * Without TC_GATHER_RETURN_EXCEPTIONS the first rejected or cancelled input rejects the gather
 * with that input's error and message, and the other inputs keep running. With it, rejected and
 * cancelled inputs are collected in the result like fulfilled ones. Cancelling the gather cancels
 * every input not yet done. n == 0 fulfils at once with an empty result.
 * Returns 0, TC_EINVAL, TC_ENOMEM. */
int tc_gather(tc_future **out, tc_future *const *futures, size_t n, unsigned flags);

/* asyncio.wait. */
typedef enum tc_wait_mode {
    TC_FIRST_COMPLETED = 0,
    TC_FIRST_EXCEPTION, /* first rejected (not cancelled) input, or all done */
    TC_ALL_COMPLETED
} tc_wait_mode;

typedef struct tc_wait_result {
    size_t ndone;
    tc_future **done; /* in completion order */
    size_t npending;
    tc_future **pending; /* in input order */
} tc_wait_result;

/* Fulfils with a tc_wait_result (owned by the wait future, which references every future in
 * it) when the mode's condition holds or timeout_ms passes (timeout_ms < 0: no timeout). A
 * timeout is not an error: the result simply has pending futures. Cancels nothing, ever;
 * cancelling the wait future only stops waiting. n == 0 fulfils at once with empty sets.
 * Returns 0, TC_EINVAL, TC_ENOMEM. */
int tc_wait(tc_future **out, uv_loop_t *loop, tc_future *const *futures, size_t n,
            tc_wait_mode mode, int64_t timeout_ms);

/* asyncio.as_completed. cb runs once per input: in completion order with timed_out = 0, or,
 * when timeout_ms (>= 0) passes first, once for each input still pending, in input order, with
 * timed_out = 1; those inputs are not cancelled. index is the input's position.
 * The returned future fulfils (value NULL) after the last cb if every input completed in time,
 * and rejects with TC_ETIMEDOUT after the timed-out reports otherwise. Cancelling it stops
 * further reports. Returns 0, TC_EINVAL, TC_ENOMEM. */
typedef void (*tc_as_completed_cb)(tc_future *f, size_t index, int timed_out, void *data);
int tc_as_completed(tc_future **out, uv_loop_t *loop, tc_future *const *futures, size_t n,
                    int64_t timeout_ms, tc_as_completed_cb cb, void *data);

/* Fulfils with the value of the first input to fulfil (borrowed from it) and cancels the others.
 * Rejects with TC_EALLFAILED only when every input was rejected or cancelled (message lists
 * each input's error; n == 0 rejects at once). Cancelling it cancels every input.
 * tc_first_success_index() tells which input won. Returns 0, TC_EINVAL, TC_ENOMEM. */
int tc_first_success(tc_future **out, tc_future *const *futures, size_t n);
/* The winning input's index, or -1 if the future did not come from tc_first_success or has not
 * been fulfilled. */
long tc_first_success_index(const tc_future *out);

/* asyncio.wait_for: mirrors inner (same value, borrowed; same error; cancelled if inner is).
 * If timeout_ms passes first, inner is cancelled and the future rejects with TC_ETIMEDOUT.
 * Cancelling the returned future cancels inner. Returns 0, TC_EINVAL, TC_ENOMEM. */
int tc_with_timeout(tc_future **out, uv_loop_t *loop, tc_future *inner, uint64_t timeout_ms);

/* Fulfils (value NULL) after ms milliseconds on loop's timers. Cancelling stops the timer.
 * Returns 0, TC_EINVAL, TC_ENOMEM. */
int tc_sleep(tc_future **out, uv_loop_t *loop, uint64_t ms);

/* Delayed start: after ms milliseconds, calls start(data, &inner); the returned future then
 * mirrors inner as tc_with_timeout does (without a timeout). If start returns an error the future
 * rejects with it. Cancelling before the delay means start is never called; after, it cancels
 * inner. ms == 0 still defers start to the next loop iteration.
 * Returns 0, TC_EINVAL, TC_ENOMEM. */
typedef int (*tc_start_fn)(void *data, tc_future **inner);
int tc_call_later(tc_future **out, uv_loop_t *loop, uint64_t ms, tc_start_fn start, void *data);

#ifdef __cplusplus
}
#endif
#endif /* TAILCUT_FUTURE_H */
