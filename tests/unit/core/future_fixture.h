/*
 * Shared fixture of the tests of src/core/future.c (test_future_*.c): a loop per test in *state
 * (loop_setup/loop_teardown), callback records, tracked values, cancel hooks and timed
 * producers.
 *
 * Every test owns a uv loop and ends with loop_finish(): uv_run to completion, then
 * uv_loop_close() == 0, so a timer handle left open fails the test. Values are tracked boxes
 * whose free function counts, so a value freed twice or never is caught (besides ASan/LSan).
 */
#ifndef TC_TEST_FUTURE_FIXTURE_H
#define TC_TEST_FUTURE_FIXTURE_H
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include <uv.h>

#include "tailcut/future.h"

/* ---- helpers -------------------------------------------------------------------------------- */

/* A value that counts its own release in a counter owned by the test. */
typedef struct box {
    int v;
    int *freed;
} box;

static inline void box_free(void *value)
{
    box *b = value;
    (*b->freed)++;
    free(b);
}

static inline box *box_new(int v, int *freed)
{
    box *b = malloc(sizeof(*b));
    assert_non_null(b);
    b->v = v;
    b->freed = freed;
    return b;
}

static inline int box_value(const tc_future *f)
{
    const box *b = tc_future_value(f);
    assert_non_null(b);
    return b->v;
}

static inline tc_future *fut_new(void)
{
    tc_future *f = NULL;
    assert_int_equal(tc_future_new(&f), 0);
    assert_non_null(f);
    return f;
}

/* Every test gets its own loop in *state. The teardown runs it until nothing is left and checks
 * that it closes, so a handle left open (or a timer keeping the loop alive) fails the test. */
static inline int loop_setup(void **state)
{
    uv_loop_t *loop = malloc(sizeof(*loop));
    if (loop == NULL || uv_loop_init(loop) != 0) {
        free(loop);
        return -1;
    }
    *state = loop;
    return 0;
}

static inline int loop_teardown(void **state)
{
    uv_loop_t *loop = *state;
    int alive = uv_run(loop, UV_RUN_DEFAULT);
    int closed = uv_loop_close(loop);
    if (alive != 0 || closed != 0) {
        print_error("loop not finished: uv_run=%d uv_loop_close=%d\n", alive, closed);
        return -1; /* the loop is leaked on purpose: it still has handles */
    }
    free(loop);
    return 0;
}

/* Runs the loop until nothing is left (the teardown checks that it closes). */
static inline void loop_drain(uv_loop_t *loop)
{
    assert_int_equal(uv_run(loop, UV_RUN_DEFAULT), 0);
}

/* Records every callback invocation: how many, with which state, in which order. */
#define REC_MAX 64
typedef struct rec {
    int calls;
    tc_future_state state;
    int err;
    int order[REC_MAX];
    int *seq; /* shared sequence counter, for ordering across records */
    int tag;
} rec;

static inline void rec_cb(tc_future *f, void *data)
{
    rec *r = data;
    if (r->calls < REC_MAX)
        r->order[r->calls] = r->seq != NULL ? (*r->seq)++ : r->calls;
    r->calls++;
    r->state = tc_future_state_of(f);
    r->err = tc_future_error(f);
}

/* Drops a reference to the future it is called for. */
static inline void unref_cb(tc_future *f, void *data)
{
    int *calls = data;
    (*calls)++;
    tc_future_unref(f);
}

typedef struct hook_rec {
    int calls;
    int fulfill_rc;
    int *freed;
    tc_future_state state_seen;
    int cbs_seen; /* the done callbacks had not fired yet when the hook ran */
    rec *r;
    tc_future *producer_ref; /* dropped by the hook */
} hook_rec;

static inline void hook_cb(tc_future *f, void *data)
{
    hook_rec *h = data;
    h->calls++;
    h->state_seen = tc_future_state_of(f);
    h->cbs_seen = h->r != NULL ? h->r->calls : 0;
    if (h->freed != NULL) /* the producer completes inside its own cancel hook */
        h->fulfill_rc = tc_future_fulfill(f, box_new(9, h->freed), box_free);
    if (h->producer_ref != NULL) {
        tc_future *p = h->producer_ref;
        h->producer_ref = NULL;
        tc_future_unref(p);
    }
}

/* Cancels another future from a done callback. */
static inline void cancel_other_cb(tc_future *f, void *data)
{
    tc_future **other = data;
    tc_future_cancel(*other);
}
/* ---- timed producers ------------------------------------------------------------------------ */

/* A producer like an HTTP attempt: completes its future after ms on the loop (fulfils with a box
 * of v, or rejects with err), holds its own reference until then, and stops when cancelled. */
typedef struct producer {
    tc_future *f;     /* the producer's reference */
    tc_future *sleep; /* its timer */
    int v;
    int err;
    int *freed;
    int hook_calls;
    int complete_rc;
    int completed;
} producer;

static inline void producer_fire(tc_future *s, void *data)
{
    producer *p = data;
    if (tc_future_state_of(s) == TC_FUTURE_FULFILLED) {
        p->completed = 1;
        if (p->err == 0)
            p->complete_rc = tc_future_fulfill(p->f, box_new(p->v, p->freed), box_free);
        else
            p->complete_rc = tc_future_reject(p->f, p->err, "producer failed");
    }
    tc_future *f = p->f;
    p->f = NULL;
    p->sleep = NULL;
    tc_future_unref(s);
    tc_future_unref(f);
}

static inline void producer_cancel(tc_future *f, void *data)
{
    producer *p = data;
    p->hook_calls++;
    tc_future_cancel(p->sleep); /* producer_fire then drops the producer's references */
}

/* Returns the consumer's reference to the producer's future. */
static inline tc_future *producer_start(producer *p, uv_loop_t *loop, uint64_t ms, int v, int err,
                                        int *freed)
{
    memset(p, 0, sizeof(*p));
    p->v = v;
    p->err = err;
    p->freed = freed;
    tc_future *f = fut_new();
    p->f = tc_future_ref(f);
    assert_int_equal(tc_sleep(&p->sleep, loop, ms), 0);
    assert_int_equal(tc_future_on_done(p->sleep, producer_fire, p), 0);
    tc_future_set_cancel_hook(f, producer_cancel, p);
    return f;
}

#define LONG_MS (10u * 60u * 1000u) /* never reached: a test would hit the watchdog first */

/* Records the loop time at which a future completed. */
typedef struct stamp {
    uv_loop_t *loop;
    uint64_t at;
    int calls;
    tc_future_state state;
} stamp;

static inline void stamp_cb(tc_future *f, void *data)
{
    stamp *s = data;
    uv_update_time(s->loop);
    s->at = uv_now(s->loop);
    s->calls++;
    s->state = tc_future_state_of(f);
}

static inline void cancel_target_cb(tc_future *f, void *data)
{
    tc_future_cancel((tc_future *)data);
}

typedef struct reports {
    int n;
    size_t index[16];
    int timed_out[16];
    tc_future_state state[16];
    tc_future *cancel_on_first; /* if set, the first report cancels it */
} reports;

static inline void report_cb(tc_future *f, size_t index, int timed_out, void *data)
{
    reports *r = data;
    assert_true(r->n < 16);
    r->index[r->n] = index;
    r->timed_out[r->n] = timed_out;
    r->state[r->n] = tc_future_state_of(f);
    r->n++;
    if (r->n == 1 && r->cancel_on_first != NULL)
        tc_future_cancel(r->cancel_on_first);
}

#endif /* TC_TEST_FUTURE_FIXTURE_H */
