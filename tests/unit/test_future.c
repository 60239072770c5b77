/*
 * Unit tests for src/future.c: the future state machine, its reference counting and callback
 * rules, and every combinator, on a real uv loop where timers are involved.
 *
 * Every test owns a uv loop and ends with loop_finish(): uv_run to completion, then
 * uv_loop_close() == 0, so a timer handle left open fails the test. Values are tracked boxes
 * whose free function counts, so a value freed twice or never is caught (besides ASan/LSan).
 */
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

static void box_free(void *value)
{
    box *b = value;
    (*b->freed)++;
    free(b);
}

static box *box_new(int v, int *freed)
{
    box *b = malloc(sizeof(*b));
    assert_non_null(b);
    b->v = v;
    b->freed = freed;
    return b;
}

static int box_value(const tc_future *f)
{
    const box *b = tc_future_value(f);
    assert_non_null(b);
    return b->v;
}

static tc_future *fut_new(void)
{
    tc_future *f = NULL;
    assert_int_equal(tc_future_new(&f), 0);
    assert_non_null(f);
    return f;
}

/* Every test gets its own loop in *state. The teardown runs it until nothing is left and checks
 * that it closes, so a handle left open (or a timer keeping the loop alive) fails the test. */
static int loop_setup(void **state)
{
    uv_loop_t *loop = malloc(sizeof(*loop));
    if (loop == NULL || uv_loop_init(loop) != 0) {
        free(loop);
        return -1;
    }
    *state = loop;
    return 0;
}

static int loop_teardown(void **state)
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
static void loop_drain(uv_loop_t *loop)
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

static void rec_cb(tc_future *f, void *data)
{
    rec *r = data;
    if (r->calls < REC_MAX)
        r->order[r->calls] = r->seq != NULL ? (*r->seq)++ : r->calls;
    r->calls++;
    r->state = tc_future_state_of(f);
    r->err = tc_future_error(f);
}

/* ---- the future itself ---------------------------------------------------------------------- */

static void test_fulfill_value_and_release(void **state)
{
    int freed = 0;
    tc_future *f = fut_new();
    assert_int_equal(tc_future_state_of(f), TC_FUTURE_PENDING);
    assert_int_equal(tc_future_done(f), 0);
    assert_null(tc_future_value(f));
    assert_string_equal(tc_future_message(f), "");
    assert_int_equal(tc_future_fulfill(f, box_new(7, &freed), box_free), 0);
    assert_int_equal(tc_future_state_of(f), TC_FUTURE_FULFILLED);
    assert_int_equal(tc_future_done(f), 1);
    assert_int_equal(box_value(f), 7);
    assert_int_equal(tc_future_error(f), 0);
    assert_string_equal(tc_future_message(f), "");
    /* a second completion is refused and its value released at once */
    assert_int_equal(tc_future_fulfill(f, box_new(8, &freed), box_free), TC_EINVAL);
    assert_int_equal(freed, 1);
    assert_int_equal(tc_future_reject(f, TC_EIO, "late"), TC_EINVAL);
    assert_int_equal(tc_future_cancel(f), 0);
    assert_int_equal(tc_future_state_of(f), TC_FUTURE_FULFILLED);
    assert_int_equal(box_value(f), 7);
    tc_future_ref(f);
    tc_future_unref(f);
    assert_int_equal(freed, 1);
    tc_future_unref(f);
    assert_int_equal(freed, 2);
    tc_future_unref(NULL);
}

static void test_reject_messages(void **state)
{
    tc_future *f = fut_new();
    assert_int_equal(tc_future_reject(f, TC_ECONNRESET, "peer hung up"), 0);
    assert_int_equal(tc_future_state_of(f), TC_FUTURE_REJECTED);
    assert_int_equal(tc_future_error(f), TC_ECONNRESET);
    assert_string_equal(tc_future_message(f), "peer hung up");
    assert_null(tc_future_value(f));
    int freed = 0;
    assert_int_equal(tc_future_fulfill(f, box_new(1, &freed), box_free), TC_EINVAL);
    assert_int_equal(freed, 1);
    tc_future_unref(f);

    f = fut_new();
    assert_int_equal(tc_future_reject(f, TC_ETIMEDOUT, NULL), 0);
    assert_string_equal(tc_future_message(f), tc_strerror(TC_ETIMEDOUT));
    tc_future_unref(f);

    /* the message is copied: the caller's buffer may change afterwards */
    char buf[32];
    strcpy(buf, "original");
    f = fut_new();
    assert_int_equal(tc_future_reject(f, TC_EIO, buf), 0);
    strcpy(buf, "changed");
    assert_string_equal(tc_future_message(f), "original");
    tc_future_unref(f);

    /* long messages are truncated to 511 bytes */
    char *big = malloc(4000);
    assert_non_null(big);
    memset(big, 'x', 3999);
    big[3999] = '\0';
    f = fut_new();
    assert_int_equal(tc_future_reject(f, TC_EPROTO, big), 0);
    assert_int_equal(strlen(tc_future_message(f)), 511);
    assert_memory_equal(tc_future_message(f), big, 511);
    tc_future_unref(f);
    free(big);

    /* a non-error code is reported, but the future is still rejected (with TC_EINVAL) so its
     * callbacks fire */
    rec r = {0};
    f = fut_new();
    assert_int_equal(tc_future_on_done(f, rec_cb, &r), 0);
    assert_int_equal(tc_future_reject(f, 5, "bad code"), TC_EINVAL);
    assert_int_equal(r.calls, 1);
    assert_int_equal(tc_future_state_of(f), TC_FUTURE_REJECTED);
    assert_int_equal(tc_future_error(f), TC_EINVAL);
    assert_string_equal(tc_future_message(f), "bad code");
    tc_future_unref(f);
}

static void test_truncation_keeps_utf8_whole(void **state)
{
    /* 510 ASCII bytes then a 3-byte character: it does not fit in 511 and must go whole */
    char msg[600];
    memset(msg, 'a', 510);
    memcpy(msg + 510, "\xe2\x82\xac tail", 9);
    msg[519] = '\0';
    tc_future *f = fut_new();
    assert_int_equal(tc_future_reject(f, TC_EIO, msg), 0);
    assert_int_equal(strlen(tc_future_message(f)), 510);
    tc_future_unref(f);
}

static void test_invalid_arguments(void **state)
{
    uv_loop_t *loop = *state;
    tc_future *out = NULL;
    tc_future *f = fut_new();
    tc_future *arr[2] = {f, NULL};
    assert_int_equal(tc_future_new(NULL), TC_EINVAL);
    assert_int_equal(tc_future_on_done(f, NULL, NULL), TC_EINVAL);
    assert_int_equal(tc_future_off_done(f, rec_cb, NULL), TC_EINVAL);
    assert_int_equal(tc_gather(NULL, arr, 1, 0), TC_EINVAL);
    assert_int_equal(tc_gather(&out, NULL, 1, 0), TC_EINVAL);
    assert_int_equal(tc_gather(&out, arr, 2, 0), TC_EINVAL);
    assert_int_equal(tc_gather(&out, arr, 1, 0x80), TC_EINVAL);
    assert_int_equal(tc_wait(&out, NULL, arr, 1, TC_ALL_COMPLETED, -1), TC_EINVAL);
    assert_int_equal(tc_wait(&out, loop, arr, 2, TC_ALL_COMPLETED, -1), TC_EINVAL);
    assert_int_equal(tc_wait(&out, loop, arr, 1, (tc_wait_mode)9, -1), TC_EINVAL);
    assert_int_equal(tc_as_completed(&out, loop, arr, 1, -1, NULL, NULL), TC_EINVAL);
    assert_int_equal(tc_first_success(&out, arr, 2), TC_EINVAL);
    assert_int_equal(tc_with_timeout(&out, loop, NULL, 10), TC_EINVAL);
    assert_int_equal(tc_with_timeout(&out, NULL, f, 10), TC_EINVAL);
    assert_int_equal(tc_sleep(NULL, loop, 10), TC_EINVAL);
    assert_int_equal(tc_call_later(&out, loop, 10, NULL, NULL), TC_EINVAL);
    assert_null(out);
    assert_int_equal(tc_first_success_index(f), -1);
    /* the failed calls left no callback behind on f */
    assert_int_equal(tc_future_fulfill(f, NULL, NULL), 0);
    tc_future_unref(f);
    loop_drain(loop);
}

static void test_callbacks_in_order_exactly_once(void **state)
{
    int seq = 0;
    rec a = {.seq = &seq}, b = {.seq = &seq}, c = {.seq = &seq}, late = {.seq = &seq};
    tc_future *f = fut_new();
    assert_int_equal(tc_future_on_done(f, rec_cb, &a), 0);
    assert_int_equal(tc_future_on_done(f, rec_cb, &b), 0);
    assert_int_equal(tc_future_on_done(f, rec_cb, &c), 0);
    assert_int_equal(a.calls + b.calls + c.calls, 0);
    assert_int_equal(tc_future_reject(f, TC_EIO, NULL), 0);
    assert_int_equal(a.calls, 1);
    assert_int_equal(b.calls, 1);
    assert_int_equal(c.calls, 1);
    assert_int_equal(a.order[0], 0);
    assert_int_equal(b.order[0], 1);
    assert_int_equal(c.order[0], 2);
    assert_int_equal(b.state, TC_FUTURE_REJECTED);
    assert_int_equal(b.err, TC_EIO);
    /* added after completion: fires at once, exactly once */
    assert_int_equal(tc_future_on_done(f, rec_cb, &late), 0);
    assert_int_equal(late.calls, 1);
    assert_int_equal(late.state, TC_FUTURE_REJECTED);
    assert_int_equal(tc_future_cancel(f), 0);
    assert_int_equal(a.calls + b.calls + c.calls + late.calls, 4);
    /* nothing left to remove after firing */
    assert_int_equal(tc_future_off_done(f, rec_cb, &a), TC_EINVAL);
    tc_future_unref(f);
}

static void test_many_callbacks_and_removal(void **state)
{
    enum { N = 100 };
    int seq = 0;
    rec r[N];
    memset(r, 0, sizeof(r));
    tc_future *f = fut_new();
    for (int i = 0; i < N; i++) {
        r[i].seq = &seq;
        assert_int_equal(tc_future_on_done(f, rec_cb, &r[i]), 0);
    }
    /* remove every third, including inline slots */
    for (int i = 0; i < N; i += 3)
        assert_int_equal(tc_future_off_done(f, rec_cb, &r[i]), 0);
    assert_int_equal(tc_future_off_done(f, rec_cb, &r[0]), TC_EINVAL);
    /* the callbacks' references do not keep f alive past completion */
    assert_int_equal(tc_future_fulfill(f, NULL, NULL), 0);
    int expect = 0;
    for (int i = 0; i < N; i++) {
        if (i % 3 == 0) {
            assert_int_equal(r[i].calls, 0);
        } else {
            assert_int_equal(r[i].calls, 1);
            assert_int_equal(r[i].order[0], expect++);
        }
    }
    tc_future_unref(f);
}

static void test_same_callback_registered_twice(void **state)
{
    rec r = {0};
    tc_future *f = fut_new();
    assert_int_equal(tc_future_on_done(f, rec_cb, &r), 0);
    assert_int_equal(tc_future_on_done(f, rec_cb, &r), 0);
    assert_int_equal(tc_future_off_done(f, rec_cb, &r), 0); /* removes one of the two */
    assert_int_equal(tc_future_fulfill(f, NULL, NULL), 0);
    assert_int_equal(r.calls, 1);
    tc_future_unref(f);
}

/* A callback that removes another, not yet fired registration of the same future. */
typedef struct remover {
    rec *victim;
    int calls;
    int rc;
} remover;

static void remover_cb(tc_future *f, void *data)
{
    remover *m = data;
    m->calls++;
    m->rc = tc_future_off_done(f, rec_cb, m->victim);
}

static void test_off_done_during_callbacks(void **state)
{
    rec victim = {0}, after = {0};
    remover m = {.victim = &victim};
    tc_future *f = fut_new();
    assert_int_equal(tc_future_on_done(f, remover_cb, &m), 0);
    assert_int_equal(tc_future_on_done(f, rec_cb, &victim), 0);
    assert_int_equal(tc_future_on_done(f, rec_cb, &after), 0);
    assert_int_equal(tc_future_fulfill(f, NULL, NULL), 0);
    assert_int_equal(m.calls, 1);
    assert_int_equal(m.rc, 0);
    assert_int_equal(victim.calls, 0);
    assert_int_equal(after.calls, 1);
    tc_future_unref(f);
}

/* A callback that registers another callback on the future that is completing. */
static void adder_cb(tc_future *f, void *data)
{
    rec *r = data;
    assert_int_equal(tc_future_on_done(f, rec_cb, r), 0);
    assert_int_equal(r->calls, 1); /* fired at once: f is done */
}

static void test_on_done_inside_callback(void **state)
{
    rec added = {0};
    tc_future *f = fut_new();
    assert_int_equal(tc_future_on_done(f, adder_cb, &added), 0);
    assert_int_equal(tc_future_fulfill(f, NULL, NULL), 0);
    assert_int_equal(added.calls, 1);
    tc_future_unref(f);
}

/* Drops a reference to the future it is called for. */
static void unref_cb(tc_future *f, void *data)
{
    int *calls = data;
    (*calls)++;
    tc_future_unref(f);
}

static void test_drop_last_reference_inside_callback(void **state)
{
    int freed = 0, calls = 0;
    rec after = {0};
    tc_future *f = fut_new();
    assert_int_equal(tc_future_on_done(f, unref_cb, &calls), 0);
    assert_int_equal(tc_future_on_done(f, rec_cb, &after), 0);
    /* the caller's reference now belongs to unref_cb */
    assert_int_equal(tc_future_fulfill(f, box_new(3, &freed), box_free), 0);
    assert_int_equal(calls, 1);
    assert_int_equal(after.calls, 1); /* the later callback still ran on a live future */
    assert_int_equal(freed, 1);       /* and the future went away with its value */

    /* same, with a callback registered after completion */
    calls = 0;
    f = fut_new();
    assert_int_equal(tc_future_cancel(f), 1);
    assert_int_equal(tc_future_on_done(f, unref_cb, &calls), 0);
    assert_int_equal(calls, 1);
}

/* ---- cancellation --------------------------------------------------------------------------- */

typedef struct hook_rec {
    int calls;
    int fulfill_rc;
    int *freed;
    tc_future_state state_seen;
    int cbs_seen; /* the done callbacks had not fired yet when the hook ran */
    rec *r;
    tc_future *producer_ref; /* dropped by the hook */
} hook_rec;

static void hook_cb(tc_future *f, void *data)
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

static void test_cancel_runs_hook_then_callbacks(void **state)
{
    rec r = {0};
    hook_rec h = {.r = &r};
    tc_future *f = fut_new();
    tc_future_set_cancel_hook(f, hook_cb, &h);
    assert_int_equal(tc_future_on_done(f, rec_cb, &r), 0);
    assert_int_equal(tc_future_cancel(f), 1);
    assert_int_equal(h.calls, 1);
    assert_int_equal(h.state_seen, TC_FUTURE_CANCELLED);
    assert_int_equal(h.cbs_seen, 0);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.state, TC_FUTURE_CANCELLED);
    assert_int_equal(tc_future_error(f), TC_ECANCELED);
    assert_string_equal(tc_future_message(f), tc_strerror(TC_ECANCELED));
    assert_int_equal(tc_future_cancel(f), 0);
    assert_int_equal(h.calls, 1);
    assert_int_equal(r.calls, 1);
    tc_future_unref(f);
}

static void test_hook_not_called_when_completed_or_removed(void **state)
{
    hook_rec h = {0};
    tc_future *f = fut_new();
    tc_future_set_cancel_hook(f, hook_cb, &h);
    assert_int_equal(tc_future_fulfill(f, NULL, NULL), 0);
    assert_int_equal(tc_future_cancel(f), 0);
    assert_int_equal(h.calls, 0);
    tc_future_unref(f);

    f = fut_new();
    tc_future_set_cancel_hook(f, hook_cb, &h);
    tc_future_set_cancel_hook(f, NULL, NULL);
    assert_int_equal(tc_future_cancel(f), 1);
    assert_int_equal(h.calls, 0);
    tc_future_unref(f);

    /* a later hook replaces the earlier one */
    hook_rec h2 = {0};
    f = fut_new();
    tc_future_set_cancel_hook(f, hook_cb, &h);
    tc_future_set_cancel_hook(f, hook_cb, &h2);
    assert_int_equal(tc_future_cancel(f), 1);
    assert_int_equal(h.calls, 0);
    assert_int_equal(h2.calls, 1);
    tc_future_unref(f);
}

static void test_complete_inside_cancel_hook(void **state)
{
    int freed = 0;
    rec r = {0};
    hook_rec h = {.freed = &freed, .r = &r};
    tc_future *f = fut_new();
    tc_future_set_cancel_hook(f, hook_cb, &h);
    assert_int_equal(tc_future_on_done(f, rec_cb, &r), 0);
    assert_int_equal(tc_future_cancel(f), 1);
    assert_int_equal(h.calls, 1);
    assert_int_equal(h.fulfill_rc, TC_ECANCELED);
    assert_int_equal(freed, 1); /* released at once, not kept */
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.state, TC_FUTURE_CANCELLED);
    assert_null(tc_future_value(f));
    tc_future_unref(f);
    assert_int_equal(freed, 1);
}

static void test_complete_after_cancel(void **state)
{
    int freed = 0;
    tc_future *f = fut_new();
    tc_future *producer = tc_future_ref(f);
    assert_int_equal(tc_future_cancel(f), 1);
    tc_future_unref(f); /* the consumer goes away */
    assert_int_equal(tc_future_fulfill(producer, box_new(1, &freed), box_free), TC_ECANCELED);
    assert_int_equal(freed, 1);
    assert_int_equal(tc_future_reject(producer, TC_EIO, "x"), TC_ECANCELED);
    assert_int_equal(tc_future_state_of(producer), TC_FUTURE_CANCELLED);
    tc_future_unref(producer);
}

static void test_hook_drops_producer_reference(void **state)
{
    /* the producer's reference is the only one: the hook drops it mid-cancel */
    rec r = {0};
    tc_future *f = fut_new();
    hook_rec h = {.producer_ref = f, .r = &r};
    tc_future *consumer = tc_future_ref(f);
    tc_future_set_cancel_hook(f, hook_cb, &h);
    assert_int_equal(tc_future_on_done(f, rec_cb, &r), 0);
    tc_future_unref(consumer); /* now only the producer holds f (and the callback) */
    assert_int_equal(tc_future_cancel(f), 1);
    assert_int_equal(h.calls, 1);
    assert_int_equal(r.calls, 1);
    /* f is gone now; LSan/ASan check that */
}

/* Cancels another future from a done callback. */
static void cancel_other_cb(tc_future *f, void *data)
{
    tc_future **other = data;
    tc_future_cancel(*other);
}

static void test_cancel_inside_done_callback(void **state)
{
    int freed = 0;
    rec ra = {0}, rb = {0};
    tc_future *a = fut_new(), *b = fut_new();
    assert_int_equal(tc_future_on_done(a, cancel_other_cb, &b), 0);
    assert_int_equal(tc_future_on_done(a, rec_cb, &ra), 0);
    assert_int_equal(tc_future_on_done(b, rec_cb, &rb), 0);
    assert_int_equal(tc_future_fulfill(a, NULL, NULL), 0);
    assert_int_equal(tc_future_state_of(b), TC_FUTURE_CANCELLED);
    assert_int_equal(rb.calls, 1);
    assert_int_equal(ra.calls, 1);
    /* the producer of b completes later: refused, value freed */
    assert_int_equal(tc_future_fulfill(b, box_new(1, &freed), box_free), TC_ECANCELED);
    assert_int_equal(freed, 1);

    /* cancelling the very future whose callback runs is a no-op */
    rec rc_ = {0};
    tc_future *c = fut_new();
    tc_future *self = c;
    assert_int_equal(tc_future_on_done(c, cancel_other_cb, &self), 0);
    assert_int_equal(tc_future_on_done(c, rec_cb, &rc_), 0);
    assert_int_equal(tc_future_reject(c, TC_EIO, NULL), 0);
    assert_int_equal(tc_future_state_of(c), TC_FUTURE_REJECTED);
    assert_int_equal(rc_.calls, 1);
    tc_future_unref(a);
    tc_future_unref(b);
    tc_future_unref(c);
}

/* ---- gather --------------------------------------------------------------------------------- */

static void test_gather_empty(void **state)
{
    tc_future *g = NULL;
    assert_int_equal(tc_gather(&g, NULL, 0, 0), 0);
    assert_int_equal(tc_future_state_of(g), TC_FUTURE_FULFILLED);
    const tc_gather_result *res = tc_future_value(g);
    assert_non_null(res);
    assert_int_equal(res->n, 0);
    tc_future_unref(g);
}

static void test_gather_values_in_input_order(void **state)
{
    int freed = 0;
    rec r = {0};
    tc_future *in[3] = {fut_new(), fut_new(), fut_new()};
    tc_future *g = NULL;
    assert_int_equal(tc_gather(&g, in, 3, 0), 0);
    assert_int_equal(tc_future_on_done(g, rec_cb, &r), 0);
    /* complete in reverse order */
    assert_int_equal(tc_future_fulfill(in[2], box_new(2, &freed), box_free), 0);
    assert_int_equal(tc_future_fulfill(in[1], box_new(1, &freed), box_free), 0);
    assert_int_equal(r.calls, 0);
    assert_int_equal(tc_future_state_of(g), TC_FUTURE_PENDING);
    assert_int_equal(tc_future_fulfill(in[0], box_new(0, &freed), box_free), 0);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.state, TC_FUTURE_FULFILLED);
    /* the caller drops its input references; the result keeps them */
    for (int i = 0; i < 3; i++)
        tc_future_unref(in[i]);
    const tc_gather_result *res = tc_future_value(g);
    assert_int_equal(res->n, 3);
    for (int i = 0; i < 3; i++)
        assert_int_equal(box_value(res->futures[i]), i);
    assert_int_equal(freed, 0);
    tc_future_unref(g);
    assert_int_equal(freed, 3);
}

static void test_gather_first_rejection(void **state)
{
    int freed = 0;
    rec r = {0};
    tc_future *in[3] = {fut_new(), fut_new(), fut_new()};
    tc_future *g = NULL;
    assert_int_equal(tc_gather(&g, in, 3, 0), 0);
    assert_int_equal(tc_future_on_done(g, rec_cb, &r), 0);
    assert_int_equal(tc_future_fulfill(in[0], box_new(0, &freed), box_free), 0);
    assert_int_equal(tc_future_reject(in[1], TC_ECONNREFUSED, "no listener"), 0);
    assert_int_equal(r.calls, 1);
    assert_int_equal(tc_future_state_of(g), TC_FUTURE_REJECTED);
    assert_int_equal(tc_future_error(g), TC_ECONNREFUSED);
    assert_string_equal(tc_future_message(g), "no listener");
    /* the others keep running: not cancelled, and can still complete */
    assert_int_equal(tc_future_state_of(in[2]), TC_FUTURE_PENDING);
    assert_int_equal(tc_future_reject(in[2], TC_EIO, NULL), 0);
    assert_int_equal(r.calls, 1);
    assert_int_equal(tc_future_error(g), TC_ECONNREFUSED);
    for (int i = 0; i < 3; i++)
        tc_future_unref(in[i]);
    tc_future_unref(g);
    assert_int_equal(freed, 1);
}

static void test_gather_cancelled_input_rejects(void **state)
{
    tc_future *in[2] = {fut_new(), fut_new()};
    tc_future *g = NULL;
    assert_int_equal(tc_gather(&g, in, 2, 0), 0);
    assert_int_equal(tc_future_cancel(in[1]), 1);
    assert_int_equal(tc_future_state_of(g), TC_FUTURE_REJECTED);
    assert_int_equal(tc_future_error(g), TC_ECANCELED);
    assert_int_equal(tc_future_state_of(in[0]), TC_FUTURE_PENDING);
    tc_future_unref(g);
    assert_int_equal(tc_future_fulfill(in[0], NULL, NULL), 0);
    tc_future_unref(in[0]);
    tc_future_unref(in[1]);
}

static void test_gather_return_exceptions(void **state)
{
    int freed = 0;
    tc_future *in[3] = {fut_new(), fut_new(), fut_new()};
    tc_future *g = NULL;
    assert_int_equal(tc_gather(&g, in, 3, TC_GATHER_RETURN_EXCEPTIONS), 0);
    assert_int_equal(tc_future_reject(in[0], TC_EHTTP, "503"), 0);
    assert_int_equal(tc_future_cancel(in[2]), 1);
    assert_int_equal(tc_future_state_of(g), TC_FUTURE_PENDING);
    assert_int_equal(tc_future_fulfill(in[1], box_new(1, &freed), box_free), 0);
    assert_int_equal(tc_future_state_of(g), TC_FUTURE_FULFILLED);
    const tc_gather_result *res = tc_future_value(g);
    assert_int_equal(res->n, 3);
    assert_ptr_equal(res->futures[0], in[0]);
    assert_int_equal(tc_future_error(res->futures[0]), TC_EHTTP);
    assert_string_equal(tc_future_message(res->futures[0]), "503");
    assert_int_equal(box_value(res->futures[1]), 1);
    assert_int_equal(tc_future_state_of(res->futures[2]), TC_FUTURE_CANCELLED);
    for (int i = 0; i < 3; i++)
        tc_future_unref(in[i]);
    tc_future_unref(g);
    assert_int_equal(freed, 1);
}

static void test_gather_cancel_cancels_unfinished(void **state)
{
    int freed = 0;
    hook_rec h = {0};
    tc_future *in[3] = {fut_new(), fut_new(), fut_new()};
    tc_future_set_cancel_hook(in[2], hook_cb, &h);
    tc_future *g = NULL;
    assert_int_equal(tc_gather(&g, in, 3, 0), 0);
    assert_int_equal(tc_future_fulfill(in[0], box_new(0, &freed), box_free), 0);
    assert_int_equal(tc_future_cancel(g), 1);
    assert_int_equal(tc_future_state_of(g), TC_FUTURE_CANCELLED);
    assert_int_equal(tc_future_state_of(in[0]), TC_FUTURE_FULFILLED);
    assert_int_equal(tc_future_state_of(in[1]), TC_FUTURE_CANCELLED);
    assert_int_equal(tc_future_state_of(in[2]), TC_FUTURE_CANCELLED);
    assert_int_equal(h.calls, 1);
    tc_future_unref(g);
    for (int i = 0; i < 3; i++)
        tc_future_unref(in[i]);
    assert_int_equal(freed, 1);
}

static void test_gather_already_done_inputs(void **state)
{
    int freed = 0;
    tc_future *in[2] = {fut_new(), fut_new()};
    assert_int_equal(tc_future_fulfill(in[0], box_new(10, &freed), box_free), 0);
    assert_int_equal(tc_future_fulfill(in[1], box_new(11, &freed), box_free), 0);
    tc_future *g = NULL;
    assert_int_equal(tc_gather(&g, in, 2, 0), 0);
    assert_int_equal(tc_future_state_of(g), TC_FUTURE_FULFILLED);
    const tc_gather_result *res = tc_future_value(g);
    assert_int_equal(box_value(res->futures[1]), 11);
    tc_future_unref(in[0]);
    tc_future_unref(in[1]);
    tc_future_unref(g);
    assert_int_equal(freed, 2);

    /* an already rejected input rejects at once */
    in[0] = fut_new();
    in[1] = fut_new();
    assert_int_equal(tc_future_reject(in[1], TC_EDNS, "nx"), 0);
    assert_int_equal(tc_gather(&g, in, 2, 0), 0);
    assert_int_equal(tc_future_error(g), TC_EDNS);
    assert_int_equal(tc_future_state_of(in[0]), TC_FUTURE_PENDING);
    tc_future_unref(g);
    tc_future_unref(in[0]);
    tc_future_unref(in[1]);
}

static void test_gather_of_gathers(void **state)
{
    int freed = 0;
    tc_future *leaf[4];
    for (int i = 0; i < 4; i++)
        leaf[i] = fut_new();
    tc_future *mid[2] = {NULL, NULL}, *top = NULL;
    assert_int_equal(tc_gather(&mid[0], leaf, 2, 0), 0);
    assert_int_equal(tc_gather(&mid[1], leaf + 2, 2, 0), 0);
    assert_int_equal(tc_gather(&top, mid, 2, 0), 0);
    for (int i = 0; i < 4; i++)
        tc_future_unref(leaf[i]);
    tc_future_unref(mid[0]);
    tc_future_unref(mid[1]);
    /* only the combinators hold the leaves now; cancelling the top reaches all of them */
    assert_int_equal(tc_future_state_of(top), TC_FUTURE_PENDING);
    assert_int_equal(tc_future_cancel(top), 1);
    assert_int_equal(tc_future_state_of(top), TC_FUTURE_CANCELLED);
    tc_future_unref(top);

    /* and a successful tree */
    for (int i = 0; i < 4; i++)
        leaf[i] = fut_new();
    assert_int_equal(tc_gather(&mid[0], leaf, 2, 0), 0);
    assert_int_equal(tc_gather(&mid[1], leaf + 2, 2, 0), 0);
    assert_int_equal(tc_gather(&top, mid, 2, 0), 0);
    for (int i = 3; i >= 0; i--)
        assert_int_equal(tc_future_fulfill(leaf[i], box_new(i, &freed), box_free), 0);
    assert_int_equal(tc_future_state_of(top), TC_FUTURE_FULFILLED);
    const tc_gather_result *t = tc_future_value(top);
    assert_int_equal(t->n, 2);
    for (int m = 0; m < 2; m++) {
        const tc_gather_result *inner = tc_future_value(t->futures[m]);
        assert_int_equal(inner->n, 2);
        assert_int_equal(box_value(inner->futures[0]), 2 * m);
        assert_int_equal(box_value(inner->futures[1]), 2 * m + 1);
    }
    for (int i = 0; i < 4; i++)
        tc_future_unref(leaf[i]);
    tc_future_unref(mid[0]);
    tc_future_unref(mid[1]);
    assert_int_equal(freed, 0);
    tc_future_unref(top);
    assert_int_equal(freed, 4);
}

static void test_gather_100k_no_leak(void **state)
{
    enum { N = 100000 };
    int freed = 0;
    tc_future **in = malloc(N * sizeof(*in));
    assert_non_null(in);
    for (size_t i = 0; i < N; i++)
        in[i] = fut_new();
    tc_future *g = NULL;
    assert_int_equal(tc_gather(&g, in, N, 0), 0);
    for (size_t i = 0; i < N; i++) {
        assert_int_equal(tc_future_fulfill(in[i], box_new((int)i, &freed), box_free), 0);
        tc_future_unref(in[i]);
    }
    assert_int_equal(tc_future_state_of(g), TC_FUTURE_FULFILLED);
    const tc_gather_result *res = tc_future_value(g);
    assert_int_equal(res->n, N);
    for (size_t i = 0; i < N; i += 9973)
        assert_int_equal(box_value(res->futures[i]), (int)i);
    assert_int_equal(box_value(res->futures[N - 1]), N - 1);
    assert_int_equal(freed, 0);
    tc_future_unref(g);
    assert_int_equal(freed, N);
    free(in);
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

static void producer_fire(tc_future *s, void *data)
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

static void producer_cancel(tc_future *f, void *data)
{
    producer *p = data;
    p->hook_calls++;
    tc_future_cancel(p->sleep); /* producer_fire then drops the producer's references */
}

/* Returns the consumer's reference to the producer's future. */
static tc_future *producer_start(producer *p, uv_loop_t *loop, uint64_t ms, int v, int err,
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

static void stamp_cb(tc_future *f, void *data)
{
    stamp *s = data;
    uv_update_time(s->loop);
    s->at = uv_now(s->loop);
    s->calls++;
    s->state = tc_future_state_of(f);
}

/* ---- sleep ---------------------------------------------------------------------------------- */

static void test_sleep_fulfils_after_delay(void **state)
{
    uv_loop_t *loop = *state;
    uv_update_time(loop);
    uint64_t t0 = uv_now(loop);
    stamp st = {.loop = loop};
    tc_future *s = NULL;
    assert_int_equal(tc_sleep(&s, loop, 30), 0);
    assert_int_equal(tc_future_on_done(s, stamp_cb, &st), 0);
    assert_int_equal(tc_future_state_of(s), TC_FUTURE_PENDING);
    tc_future_unref(s); /* the timer keeps the sleep alive */
    loop_drain(loop);
    assert_int_equal(st.calls, 1);
    assert_int_equal(st.state, TC_FUTURE_FULFILLED);
    assert_true(st.at - t0 >= 29);
}

static void test_sleep_zero_is_deferred(void **state)
{
    uv_loop_t *loop = *state;
    stamp st = {.loop = loop};
    tc_future *s = NULL;
    assert_int_equal(tc_sleep(&s, loop, 0), 0);
    assert_int_equal(tc_future_on_done(s, stamp_cb, &st), 0);
    assert_int_equal(st.calls, 0);
    loop_drain(loop);
    assert_int_equal(st.calls, 1);
    assert_int_equal(tc_future_state_of(s), TC_FUTURE_FULFILLED);
    assert_null(tc_future_value(s));
    tc_future_unref(s);
}

static void test_sleep_cancel_releases_loop(void **state)
{
    uv_loop_t *loop = *state;
    uv_update_time(loop);
    uint64_t t0 = uv_now(loop);
    stamp st = {.loop = loop};
    tc_future *s = NULL;
    assert_int_equal(tc_sleep(&s, loop, LONG_MS), 0);
    assert_int_equal(tc_future_on_done(s, stamp_cb, &st), 0);
    assert_int_equal(tc_future_cancel(s), 1);
    assert_int_equal(st.calls, 1);
    assert_int_equal(st.state, TC_FUTURE_CANCELLED);
    tc_future_unref(s);
    loop_drain(loop); /* returns at once: the timer is closed, nothing keeps the loop */
    uv_update_time(loop);
    assert_true(uv_now(loop) - t0 < 60000);
}

/* ---- call_later ----------------------------------------------------------------------------- */

typedef struct starter {
    uv_loop_t *loop;
    int calls;
    int rc;            /* returned by start when < 0 */
    uint64_t inner_ms; /* 0: an already fulfilled inner future */
    int inner_err;
    int *freed;
    producer prod;
    uint64_t at;
    tc_future **cancel_out; /* if set, start cancels this future first */
} starter;

static int starter_fn(void *data, tc_future **inner)
{
    starter *s = data;
    s->calls++;
    uv_update_time(s->loop);
    s->at = uv_now(s->loop);
    if (s->cancel_out != NULL)
        tc_future_cancel(*s->cancel_out);
    if (s->rc < 0)
        return s->rc;
    if (s->inner_ms == 0) {
        *inner = fut_new();
        assert_int_equal(tc_future_fulfill(*inner, box_new(42, s->freed), box_free), 0);
    } else {
        *inner = producer_start(&s->prod, s->loop, s->inner_ms, 43, s->inner_err, s->freed);
    }
    return 0;
}

static void test_call_later_delays_start(void **state)
{
    int freed = 0;
    uv_loop_t *loop = *state;
    uv_update_time(loop);
    uint64_t t0 = uv_now(loop);
    starter s = {.loop = loop, .freed = &freed};
    tc_future *f = NULL;
    assert_int_equal(tc_call_later(&f, loop, 25, starter_fn, &s), 0);
    assert_int_equal(s.calls, 0);
    loop_drain(loop);
    assert_int_equal(s.calls, 1);
    assert_true(s.at - t0 >= 24);
    assert_int_equal(tc_future_state_of(f), TC_FUTURE_FULFILLED);
    assert_int_equal(box_value(f), 42); /* borrowed from the inner future */
    assert_int_equal(freed, 0);
    tc_future_unref(f);
    assert_int_equal(freed, 1);
}

static void test_call_later_zero_is_deferred_and_mirrors(void **state)
{
    int freed = 0;
    uv_loop_t *loop = *state;
    starter s = {.loop = loop, .freed = &freed, .inner_ms = 10, .inner_err = TC_EHTTP};
    tc_future *f = NULL;
    assert_int_equal(tc_call_later(&f, loop, 0, starter_fn, &s), 0);
    assert_int_equal(s.calls, 0);
    loop_drain(loop);
    assert_int_equal(s.calls, 1);
    assert_int_equal(tc_future_state_of(f), TC_FUTURE_REJECTED);
    assert_int_equal(tc_future_error(f), TC_EHTTP);
    assert_string_equal(tc_future_message(f), "producer failed");
    tc_future_unref(f);
}

static void test_call_later_cancel_before_start(void **state)
{
    uv_loop_t *loop = *state;
    starter s = {.loop = loop};
    tc_future *f = NULL;
    assert_int_equal(tc_call_later(&f, loop, LONG_MS, starter_fn, &s), 0);
    assert_int_equal(tc_future_cancel(f), 1);
    loop_drain(loop);
    assert_int_equal(s.calls, 0);
    assert_int_equal(tc_future_state_of(f), TC_FUTURE_CANCELLED);
    tc_future_unref(f);
}

static void cancel_target_cb(tc_future *f, void *data)
{
    tc_future_cancel((tc_future *)data);
}

static void test_call_later_cancel_after_start(void **state)
{
    int freed = 0;
    uv_loop_t *loop = *state;
    starter s = {.loop = loop, .freed = &freed, .inner_ms = LONG_MS};
    tc_future *f = NULL, *t = NULL;
    assert_int_equal(tc_call_later(&f, loop, 5, starter_fn, &s), 0);
    assert_int_equal(tc_sleep(&t, loop, 40), 0);
    assert_int_equal(tc_future_on_done(t, cancel_target_cb, f), 0);
    loop_drain(loop);
    assert_int_equal(s.calls, 1);
    assert_int_equal(s.prod.hook_calls, 1); /* the inner operation was cancelled */
    assert_int_equal(s.prod.completed, 0);
    assert_int_equal(tc_future_state_of(f), TC_FUTURE_CANCELLED);
    tc_future_unref(f);
    tc_future_unref(t);
    assert_int_equal(freed, 0);
}

static void test_call_later_start_error(void **state)
{
    uv_loop_t *loop = *state;
    starter s = {.loop = loop, .rc = TC_EBUSY};
    tc_future *f = NULL;
    assert_int_equal(tc_call_later(&f, loop, 1, starter_fn, &s), 0);
    loop_drain(loop);
    assert_int_equal(s.calls, 1);
    assert_int_equal(tc_future_state_of(f), TC_FUTURE_REJECTED);
    assert_int_equal(tc_future_error(f), TC_EBUSY);
    tc_future_unref(f);
}

static void test_call_later_start_cancels_own_future(void **state)
{
    int freed = 0;
    uv_loop_t *loop = *state;
    tc_future *f = NULL;
    starter s = {.loop = loop, .freed = &freed, .inner_ms = LONG_MS, .cancel_out = &f};
    assert_int_equal(tc_call_later(&f, loop, 1, starter_fn, &s), 0);
    loop_drain(loop);
    assert_int_equal(s.calls, 1);
    assert_int_equal(s.prod.hook_calls, 1); /* the unwanted inner future was cancelled */
    assert_int_equal(tc_future_state_of(f), TC_FUTURE_CANCELLED);
    tc_future_unref(f);
}

/* ---- with_timeout --------------------------------------------------------------------------- */

static void test_with_timeout_inner_first(void **state)
{
    int freed = 0;
    uv_loop_t *loop = *state;
    producer p;
    tc_future *in = producer_start(&p, loop, 10, 5, 0, &freed);
    tc_future *w = NULL;
    assert_int_equal(tc_with_timeout(&w, loop, in, 60000), 0);
    tc_future_unref(in); /* w keeps it */
    loop_drain(loop);    /* ends long before 60 s: the timer is closed on completion */
    assert_int_equal(tc_future_state_of(w), TC_FUTURE_FULFILLED);
    assert_int_equal(box_value(w), 5);
    assert_int_equal(p.hook_calls, 0);
    assert_int_equal(freed, 0);
    tc_future_unref(w);
    assert_int_equal(freed, 1);
}

static void test_with_timeout_expires(void **state)
{
    int freed = 0;
    uv_loop_t *loop = *state;
    uv_update_time(loop);
    uint64_t t0 = uv_now(loop);
    stamp st = {.loop = loop};
    producer p;
    tc_future *in = producer_start(&p, loop, LONG_MS, 5, 0, &freed);
    tc_future *w = NULL;
    assert_int_equal(tc_with_timeout(&w, loop, in, 30), 0);
    assert_int_equal(tc_future_on_done(w, stamp_cb, &st), 0);
    loop_drain(loop);
    assert_int_equal(st.calls, 1);
    assert_true(st.at - t0 >= 29);
    assert_int_equal(tc_future_state_of(w), TC_FUTURE_REJECTED);
    assert_int_equal(tc_future_error(w), TC_ETIMEDOUT);
    assert_int_equal(tc_future_state_of(in), TC_FUTURE_CANCELLED);
    assert_int_equal(p.hook_calls, 1);
    tc_future_unref(in);
    tc_future_unref(w);
    assert_int_equal(freed, 0);
}

static void test_with_timeout_cancel_and_mirror(void **state)
{
    uv_loop_t *loop = *state;
    int freed = 0;
    /* cancelling the outer future cancels the inner one */
    producer p;
    tc_future *in = producer_start(&p, loop, LONG_MS, 5, 0, &freed);
    tc_future *w = NULL;
    assert_int_equal(tc_with_timeout(&w, loop, in, LONG_MS), 0);
    assert_int_equal(tc_future_cancel(w), 1);
    assert_int_equal(p.hook_calls, 1);
    assert_int_equal(tc_future_state_of(in), TC_FUTURE_CANCELLED);
    tc_future_unref(w);
    tc_future_unref(in);

    /* an inner rejection is mirrored, code and message */
    in = fut_new();
    assert_int_equal(tc_with_timeout(&w, loop, in, LONG_MS), 0);
    assert_int_equal(tc_future_reject(in, TC_ETLS, "bad certificate"), 0);
    assert_int_equal(tc_future_error(w), TC_ETLS);
    assert_string_equal(tc_future_message(w), "bad certificate");
    tc_future_unref(w);
    tc_future_unref(in);

    /* an inner cancellation cancels the outer future */
    in = fut_new();
    assert_int_equal(tc_with_timeout(&w, loop, in, LONG_MS), 0);
    assert_int_equal(tc_future_cancel(in), 1);
    assert_int_equal(tc_future_state_of(w), TC_FUTURE_CANCELLED);
    tc_future_unref(w);
    tc_future_unref(in);

    /* an inner future already done is mirrored at once, without a timer */
    in = fut_new();
    assert_int_equal(tc_future_fulfill(in, box_new(8, &freed), box_free), 0);
    assert_int_equal(tc_with_timeout(&w, loop, in, LONG_MS), 0);
    assert_int_equal(box_value(w), 8);
    tc_future_unref(in);
    tc_future_unref(w);
    assert_int_equal(freed, 1);
    loop_drain(loop);
}

static void test_with_timeout_inner_completes_in_hook(void **state)
{
    int freed = 0;
    uv_loop_t *loop = *state;
    hook_rec h = {.freed = &freed};
    tc_future *in = fut_new();
    tc_future_set_cancel_hook(in, hook_cb, &h);
    tc_future *w = NULL;
    assert_int_equal(tc_with_timeout(&w, loop, in, 0), 0);
    loop_drain(loop);
    assert_int_equal(h.calls, 1);
    assert_int_equal(h.fulfill_rc, TC_ECANCELED);
    assert_int_equal(freed, 1);
    assert_int_equal(tc_future_error(w), TC_ETIMEDOUT);
    tc_future_unref(w);
    tc_future_unref(in);
}

/* ---- wait ----------------------------------------------------------------------------------- */

static void test_wait_empty(void **state)
{
    uv_loop_t *loop = *state;
    tc_wait_mode modes[3] = {TC_FIRST_COMPLETED, TC_FIRST_EXCEPTION, TC_ALL_COMPLETED};
    for (int m = 0; m < 3; m++) {
        tc_future *w = NULL;
        assert_int_equal(tc_wait(&w, loop, NULL, 0, modes[m], 10), 0);
        assert_int_equal(tc_future_state_of(w), TC_FUTURE_FULFILLED);
        const tc_wait_result *r = tc_future_value(w);
        assert_int_equal(r->ndone, 0);
        assert_int_equal(r->npending, 0);
        tc_future_unref(w);
    }
    loop_drain(loop);
}

static void test_wait_first_completed(void **state)
{
    int freed = 0;
    uv_loop_t *loop = *state;
    producer p[3];
    tc_future *in[3];
    in[0] = producer_start(&p[0], loop, LONG_MS, 0, 0, &freed);
    in[1] = producer_start(&p[1], loop, 10, 1, 0, &freed);
    in[2] = producer_start(&p[2], loop, LONG_MS, 2, 0, &freed);
    tc_future *w = NULL;
    assert_int_equal(tc_wait(&w, loop, in, 3, TC_FIRST_COMPLETED, -1), 0);
    /* when the wait is done, stop the slow producers ourselves: wait cancels nothing */
    assert_int_equal(uv_run(loop, UV_RUN_ONCE) >= 0, 1);
    while (!tc_future_done(w))
        uv_run(loop, UV_RUN_ONCE);
    const tc_wait_result *r = tc_future_value(w);
    assert_int_equal(r->ndone, 1);
    assert_ptr_equal(r->done[0], in[1]);
    assert_int_equal(r->npending, 2);
    assert_ptr_equal(r->pending[0], in[0]);
    assert_ptr_equal(r->pending[1], in[2]);
    assert_int_equal(tc_future_state_of(in[0]), TC_FUTURE_PENDING);
    assert_int_equal(tc_future_state_of(in[2]), TC_FUTURE_PENDING);
    assert_int_equal(p[0].hook_calls + p[2].hook_calls, 0);
    tc_future_cancel(in[0]);
    tc_future_cancel(in[2]);
    for (int i = 0; i < 3; i++)
        tc_future_unref(in[i]);
    tc_future_unref(w);
    loop_drain(loop);
    assert_int_equal(freed, 1);
}

static void test_wait_first_exception(void **state)
{
    uv_loop_t *loop = *state;
    tc_future *in[4] = {fut_new(), fut_new(), fut_new(), fut_new()};
    tc_future *w = NULL;
    assert_int_equal(tc_wait(&w, loop, in, 4, TC_FIRST_EXCEPTION, -1), 0);
    assert_int_equal(tc_future_cancel(in[3]), 1); /* a cancellation is not an exception */
    assert_int_equal(tc_future_fulfill(in[0], NULL, NULL), 0);
    assert_int_equal(tc_future_state_of(w), TC_FUTURE_PENDING);
    assert_int_equal(tc_future_reject(in[2], TC_EIO, NULL), 0);
    assert_int_equal(tc_future_state_of(w), TC_FUTURE_FULFILLED);
    const tc_wait_result *r = tc_future_value(w);
    assert_int_equal(r->ndone, 3);
    assert_ptr_equal(r->done[0], in[3]); /* completion order */
    assert_ptr_equal(r->done[1], in[0]);
    assert_ptr_equal(r->done[2], in[2]);
    assert_int_equal(r->npending, 1);
    assert_ptr_equal(r->pending[0], in[1]);
    assert_int_equal(tc_future_state_of(in[1]), TC_FUTURE_PENDING);
    /* the wait is detached: completing the rest later changes nothing */
    assert_int_equal(tc_future_fulfill(in[1], NULL, NULL), 0);
    assert_int_equal(r->npending, 1);
    for (int i = 0; i < 4; i++)
        tc_future_unref(in[i]);
    tc_future_unref(w);

    /* with no rejection at all it waits for everything */
    in[0] = fut_new();
    in[1] = fut_new();
    assert_int_equal(tc_wait(&w, loop, in, 2, TC_FIRST_EXCEPTION, -1), 0);
    assert_int_equal(tc_future_fulfill(in[1], NULL, NULL), 0);
    assert_int_equal(tc_future_state_of(w), TC_FUTURE_PENDING);
    assert_int_equal(tc_future_cancel(in[0]), 1);
    assert_int_equal(tc_future_state_of(w), TC_FUTURE_FULFILLED);
    r = tc_future_value(w);
    assert_int_equal(r->ndone, 2);
    assert_int_equal(r->npending, 0);
    tc_future_unref(in[0]);
    tc_future_unref(in[1]);
    tc_future_unref(w);
    loop_drain(loop);
}

static void test_wait_all_completed(void **state)
{
    uv_loop_t *loop = *state;
    tc_future *in[3] = {fut_new(), fut_new(), fut_new()};
    tc_future *w = NULL;
    assert_int_equal(tc_wait(&w, loop, in, 3, TC_ALL_COMPLETED, 60000), 0);
    assert_int_equal(tc_future_reject(in[1], TC_EIO, NULL), 0);
    assert_int_equal(tc_future_fulfill(in[2], NULL, NULL), 0);
    assert_int_equal(tc_future_state_of(w), TC_FUTURE_PENDING);
    assert_int_equal(tc_future_cancel(in[0]), 1);
    assert_int_equal(tc_future_state_of(w), TC_FUTURE_FULFILLED);
    const tc_wait_result *r = tc_future_value(w);
    assert_int_equal(r->ndone, 3);
    assert_ptr_equal(r->done[0], in[1]);
    assert_ptr_equal(r->done[1], in[2]);
    assert_ptr_equal(r->done[2], in[0]);
    assert_int_equal(r->npending, 0);
    for (int i = 0; i < 3; i++)
        tc_future_unref(in[i]);
    /* the result keeps its futures alive */
    assert_int_equal(tc_future_state_of(r->done[0]), TC_FUTURE_REJECTED);
    tc_future_unref(w);
    loop_drain(loop); /* the 60 s timer was closed when the wait completed */
}

static void test_wait_timeout_cancels_nothing(void **state)
{
    uv_loop_t *loop = *state;
    uv_update_time(loop);
    uint64_t t0 = uv_now(loop);
    stamp st = {.loop = loop};
    hook_rec h = {0};
    tc_future *in[2] = {fut_new(), fut_new()};
    tc_future_set_cancel_hook(in[0], hook_cb, &h);
    tc_future *w = NULL;
    assert_int_equal(tc_future_fulfill(in[1], NULL, NULL), 0);
    assert_int_equal(tc_wait(&w, loop, in, 2, TC_ALL_COMPLETED, 30), 0);
    assert_int_equal(tc_future_on_done(w, stamp_cb, &st), 0);
    loop_drain(loop);
    assert_int_equal(st.calls, 1);
    assert_true(st.at - t0 >= 29);
    const tc_wait_result *r = tc_future_value(w);
    assert_int_equal(r->ndone, 1);
    assert_ptr_equal(r->done[0], in[1]);
    assert_int_equal(r->npending, 1);
    assert_ptr_equal(r->pending[0], in[0]);
    assert_int_equal(tc_future_state_of(in[0]), TC_FUTURE_PENDING);
    assert_int_equal(h.calls, 0);
    tc_future_set_cancel_hook(in[0], NULL, NULL);
    tc_future_unref(in[0]);
    tc_future_unref(in[1]);
    tc_future_unref(w);
}

static void test_wait_cancel_only_stops_waiting(void **state)
{
    uv_loop_t *loop = *state;
    hook_rec h = {0};
    tc_future *in[2] = {fut_new(), fut_new()};
    tc_future_set_cancel_hook(in[0], hook_cb, &h);
    tc_future *w = NULL;
    assert_int_equal(tc_wait(&w, loop, in, 2, TC_ALL_COMPLETED, LONG_MS), 0);
    assert_int_equal(tc_future_cancel(w), 1);
    assert_int_equal(h.calls, 0);
    assert_int_equal(tc_future_state_of(in[0]), TC_FUTURE_PENDING);
    assert_int_equal(tc_future_state_of(in[1]), TC_FUTURE_PENDING);
    assert_int_equal(tc_future_fulfill(in[0], NULL, NULL), 0);
    assert_int_equal(tc_future_fulfill(in[1], NULL, NULL), 0);
    assert_int_equal(tc_future_state_of(w), TC_FUTURE_CANCELLED);
    tc_future_unref(w);
    tc_future_unref(in[0]);
    tc_future_unref(in[1]);
    loop_drain(loop); /* the long timer is gone */
}

static void test_wait_already_done_inputs(void **state)
{
    uv_loop_t *loop = *state;
    tc_future *in[3] = {fut_new(), fut_new(), fut_new()};
    assert_int_equal(tc_future_fulfill(in[0], NULL, NULL), 0);
    assert_int_equal(tc_future_reject(in[2], TC_EIO, NULL), 0);
    tc_future *w = NULL;
    assert_int_equal(tc_wait(&w, loop, in, 3, TC_FIRST_COMPLETED, -1), 0);
    assert_int_equal(tc_future_state_of(w), TC_FUTURE_FULFILLED);
    const tc_wait_result *r = tc_future_value(w);
    assert_int_equal(r->ndone, 2); /* every input already done is in the done set */
    assert_ptr_equal(r->done[0], in[0]);
    assert_ptr_equal(r->done[1], in[2]);
    assert_int_equal(r->npending, 1);
    assert_ptr_equal(r->pending[0], in[1]);
    tc_future_unref(w);
    for (int i = 0; i < 3; i++)
        tc_future_unref(in[i]);
    loop_drain(loop);
}

/* ---- as_completed --------------------------------------------------------------------------- */

typedef struct reports {
    int n;
    size_t index[16];
    int timed_out[16];
    tc_future_state state[16];
    tc_future *cancel_on_first; /* if set, the first report cancels it */
} reports;

static void report_cb(tc_future *f, size_t index, int timed_out, void *data)
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

static void test_as_completed_empty(void **state)
{
    uv_loop_t *loop = *state;
    reports rp = {0};
    tc_future *a = NULL;
    assert_int_equal(tc_as_completed(&a, loop, NULL, 0, 10, report_cb, &rp), 0);
    assert_int_equal(tc_future_state_of(a), TC_FUTURE_FULFILLED);
    assert_int_equal(rp.n, 0);
    tc_future_unref(a);
    loop_drain(loop);
}

static void test_as_completed_in_completion_order(void **state)
{
    uv_loop_t *loop = *state;
    reports rp = {0};
    rec done = {0};
    tc_future *in[3] = {fut_new(), fut_new(), fut_new()};
    tc_future *a = NULL;
    assert_int_equal(tc_as_completed(&a, loop, in, 3, 60000, report_cb, &rp), 0);
    assert_int_equal(tc_future_on_done(a, rec_cb, &done), 0);
    assert_int_equal(tc_future_fulfill(in[2], NULL, NULL), 0);
    assert_int_equal(tc_future_reject(in[0], TC_EIO, NULL), 0);
    assert_int_equal(done.calls, 0);
    assert_int_equal(tc_future_cancel(in[1]), 1);
    assert_int_equal(done.calls, 1);
    assert_int_equal(done.state, TC_FUTURE_FULFILLED);
    assert_int_equal(rp.n, 3);
    size_t want[3] = {2, 0, 1};
    tc_future_state want_state[3] = {TC_FUTURE_FULFILLED, TC_FUTURE_REJECTED, TC_FUTURE_CANCELLED};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(rp.index[i], want[i]);
        assert_int_equal(rp.timed_out[i], 0);
        assert_int_equal(rp.state[i], want_state[i]);
    }
    for (int i = 0; i < 3; i++)
        tc_future_unref(in[i]);
    tc_future_unref(a);
    loop_drain(loop);
}

static void test_as_completed_timeout(void **state)
{
    int freed = 0;
    uv_loop_t *loop = *state;
    reports rp = {0};
    producer p[3];
    tc_future *in[3];
    in[0] = producer_start(&p[0], loop, LONG_MS, 0, 0, &freed);
    in[1] = producer_start(&p[1], loop, 5, 1, 0, &freed);
    in[2] = producer_start(&p[2], loop, LONG_MS, 2, 0, &freed);
    tc_future *a = NULL;
    assert_int_equal(tc_as_completed(&a, loop, in, 3, 60, report_cb, &rp), 0);
    while (!tc_future_done(a))
        uv_run(loop, UV_RUN_ONCE);
    assert_int_equal(tc_future_state_of(a), TC_FUTURE_REJECTED);
    assert_int_equal(tc_future_error(a), TC_ETIMEDOUT);
    assert_int_equal(rp.n, 3);
    assert_int_equal(rp.index[0], 1);
    assert_int_equal(rp.timed_out[0], 0);
    assert_int_equal(rp.index[1], 0); /* the rest in input order */
    assert_int_equal(rp.timed_out[1], 1);
    assert_int_equal(rp.state[1], TC_FUTURE_PENDING);
    assert_int_equal(rp.index[2], 2);
    assert_int_equal(rp.timed_out[2], 1);
    /* timed out is not cancelled */
    assert_int_equal(tc_future_state_of(in[0]), TC_FUTURE_PENDING);
    assert_int_equal(tc_future_state_of(in[2]), TC_FUTURE_PENDING);
    assert_int_equal(p[0].hook_calls + p[2].hook_calls, 0);
    tc_future_cancel(in[0]);
    tc_future_cancel(in[2]);
    for (int i = 0; i < 3; i++)
        tc_future_unref(in[i]);
    tc_future_unref(a);
    loop_drain(loop);
    assert_int_equal(freed, 1);
}

static void test_as_completed_cancel_stops_reports(void **state)
{
    uv_loop_t *loop = *state;
    reports rp = {0};
    tc_future *in[3] = {fut_new(), fut_new(), fut_new()};
    tc_future *a = NULL;
    assert_int_equal(tc_as_completed(&a, loop, in, 3, LONG_MS, report_cb, &rp), 0);
    rp.cancel_on_first = a;
    assert_int_equal(tc_future_fulfill(in[1], NULL, NULL), 0);
    assert_int_equal(rp.n, 1);
    assert_int_equal(tc_future_state_of(a), TC_FUTURE_CANCELLED);
    assert_int_equal(tc_future_fulfill(in[0], NULL, NULL), 0);
    assert_int_equal(rp.n, 1);
    assert_int_equal(tc_future_state_of(in[2]), TC_FUTURE_PENDING); /* not cancelled */
    for (int i = 0; i < 3; i++)
        tc_future_unref(in[i]);
    tc_future_unref(a);
    loop_drain(loop);
}

static void test_as_completed_already_done(void **state)
{
    uv_loop_t *loop = *state;
    reports rp = {0};
    tc_future *in[3] = {fut_new(), fut_new(), fut_new()};
    assert_int_equal(tc_future_fulfill(in[2], NULL, NULL), 0);
    assert_int_equal(tc_future_reject(in[0], TC_EIO, NULL), 0);
    tc_future *a = NULL;
    assert_int_equal(tc_as_completed(&a, loop, in, 3, -1, report_cb, &rp), 0);
    assert_int_equal(rp.n, 2);
    assert_int_equal(rp.index[0], 0);
    assert_int_equal(rp.index[1], 2);
    assert_int_equal(tc_future_state_of(a), TC_FUTURE_PENDING);
    assert_int_equal(tc_future_fulfill(in[1], NULL, NULL), 0);
    assert_int_equal(rp.n, 3);
    assert_int_equal(rp.index[2], 1);
    assert_int_equal(tc_future_state_of(a), TC_FUTURE_FULFILLED);
    for (int i = 0; i < 3; i++)
        tc_future_unref(in[i]);
    tc_future_unref(a);
    loop_drain(loop);
}

/* ---- first_success -------------------------------------------------------------------------- */

static void test_first_success_empty(void **state)
{
    tc_future *f = NULL;
    assert_int_equal(tc_first_success(&f, NULL, 0), 0);
    assert_int_equal(tc_future_state_of(f), TC_FUTURE_REJECTED);
    assert_int_equal(tc_future_error(f), TC_EALLFAILED);
    assert_int_equal(tc_first_success_index(f), -1);
    tc_future_unref(f);
}

static void test_first_success_winner_cancels_rest(void **state)
{
    int freed = 0;
    hook_rec h = {0};
    tc_future *in[3] = {fut_new(), fut_new(), fut_new()};
    tc_future_set_cancel_hook(in[1], hook_cb, &h);
    tc_future *f = NULL;
    assert_int_equal(tc_first_success(&f, in, 3), 0);
    assert_int_equal(tc_first_success_index(f), -1);
    assert_int_equal(tc_future_reject(in[0], TC_ECONNRESET, NULL), 0);
    assert_int_equal(tc_future_state_of(f), TC_FUTURE_PENDING);
    assert_int_equal(tc_future_fulfill(in[2], box_new(2, &freed), box_free), 0);
    assert_int_equal(tc_future_state_of(f), TC_FUTURE_FULFILLED);
    assert_int_equal(tc_first_success_index(f), 2);
    assert_int_equal(box_value(f), 2);
    assert_int_equal(h.calls, 1);
    assert_int_equal(tc_future_state_of(in[1]), TC_FUTURE_CANCELLED);
    assert_int_equal(tc_future_state_of(in[0]), TC_FUTURE_REJECTED);
    for (int i = 0; i < 3; i++)
        tc_future_unref(in[i]);
    assert_int_equal(freed, 0); /* borrowed: the winner lives as long as f */
    tc_future_unref(f);
    assert_int_equal(freed, 1);
}

static void test_first_success_all_failed(void **state)
{
    tc_future *in[3] = {fut_new(), fut_new(), fut_new()};
    tc_future *f = NULL;
    assert_int_equal(tc_first_success(&f, in, 3), 0);
    assert_int_equal(tc_future_reject(in[2], TC_ETIMEDOUT, NULL), 0);
    assert_int_equal(tc_future_cancel(in[0]), 1);
    assert_int_equal(tc_future_state_of(f), TC_FUTURE_PENDING);
    assert_int_equal(tc_future_reject(in[1], TC_EHTTP, "status 503"), 0);
    assert_int_equal(tc_future_state_of(f), TC_FUTURE_REJECTED);
    assert_int_equal(tc_future_error(f), TC_EALLFAILED);
    const char *msg = tc_future_message(f);
    assert_non_null(strstr(msg, "[0] ECANCELED"));
    assert_non_null(strstr(msg, "[1] EHTTP: status 503"));
    assert_non_null(strstr(msg, "[2] ETIMEDOUT"));
    assert_int_equal(tc_first_success_index(f), -1);
    for (int i = 0; i < 3; i++)
        tc_future_unref(in[i]);
    tc_future_unref(f);
}

static void test_first_success_message_bounded(void **state)
{
    enum { N = 64 };
    char big[400];
    memset(big, 'm', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    tc_future *in[N];
    for (int i = 0; i < N; i++)
        in[i] = fut_new();
    tc_future *f = NULL;
    assert_int_equal(tc_first_success(&f, in, N), 0);
    for (int i = 0; i < N; i++)
        assert_int_equal(tc_future_reject(in[i], TC_EIO, big), 0);
    assert_int_equal(tc_future_error(f), TC_EALLFAILED);
    assert_true(strlen(tc_future_message(f)) < 512);
    for (int i = 0; i < N; i++)
        tc_future_unref(in[i]);
    tc_future_unref(f);
}

static void test_first_success_cancel_cancels_all(void **state)
{
    tc_future *in[2] = {fut_new(), fut_new()};
    tc_future *f = NULL;
    assert_int_equal(tc_first_success(&f, in, 2), 0);
    assert_int_equal(tc_future_cancel(f), 1);
    assert_int_equal(tc_future_state_of(in[0]), TC_FUTURE_CANCELLED);
    assert_int_equal(tc_future_state_of(in[1]), TC_FUTURE_CANCELLED);
    tc_future_unref(f);
    tc_future_unref(in[0]);
    tc_future_unref(in[1]);
}

static void test_first_success_already_fulfilled(void **state)
{
    int freed = 0;
    tc_future *in[3] = {fut_new(), fut_new(), fut_new()};
    assert_int_equal(tc_future_reject(in[0], TC_EIO, NULL), 0);
    assert_int_equal(tc_future_fulfill(in[1], box_new(1, &freed), box_free), 0);
    tc_future *f = NULL;
    assert_int_equal(tc_first_success(&f, in, 3), 0);
    assert_int_equal(tc_first_success_index(f), 1);
    assert_int_equal(tc_future_state_of(in[2]), TC_FUTURE_CANCELLED);
    for (int i = 0; i < 3; i++)
        tc_future_unref(in[i]);
    tc_future_unref(f);
    assert_int_equal(freed, 1);
}

static void test_first_success_of_with_timeouts(void **state)
{
    int freed = 0;
    uv_loop_t *loop = *state;
    producer p[3];
    tc_future *raw[3], *wt[3];
    raw[0] = producer_start(&p[0], loop, LONG_MS, 0, 0, &freed); /* times out */
    raw[1] = producer_start(&p[1], loop, 60, 1, 0, &freed);      /* wins */
    raw[2] = producer_start(&p[2], loop, LONG_MS, 2, 0, &freed); /* cancelled by the win */
    assert_int_equal(tc_with_timeout(&wt[0], loop, raw[0], 10), 0);
    assert_int_equal(tc_with_timeout(&wt[1], loop, raw[1], 60000), 0);
    assert_int_equal(tc_with_timeout(&wt[2], loop, raw[2], LONG_MS), 0);
    tc_future *f = NULL;
    assert_int_equal(tc_first_success(&f, wt, 3), 0);
    for (int i = 0; i < 3; i++) {
        tc_future_unref(raw[i]);
        tc_future_unref(wt[i]);
    }
    loop_drain(loop);
    assert_int_equal(tc_future_state_of(f), TC_FUTURE_FULFILLED);
    assert_int_equal(tc_first_success_index(f), 1);
    assert_int_equal(box_value(f), 1);    /* borrowed through two levels */
    assert_int_equal(p[0].hook_calls, 1); /* cancelled by its timeout */
    assert_int_equal(p[1].hook_calls, 0);
    assert_int_equal(p[2].hook_calls, 1); /* cancelled by first_success */
    tc_future_unref(f);
    assert_int_equal(freed, 1);

    /* every with_timeout expires: the aggregate lists the timeouts */
    for (int i = 0; i < 2; i++) {
        raw[i] = producer_start(&p[i], loop, LONG_MS, i, 0, &freed);
        assert_int_equal(tc_with_timeout(&wt[i], loop, raw[i], 5 + 10 * (uint64_t)i), 0);
    }
    assert_int_equal(tc_first_success(&f, wt, 2), 0);
    loop_drain(loop);
    assert_int_equal(tc_future_error(f), TC_EALLFAILED);
    assert_non_null(strstr(tc_future_message(f), "[1] ETIMEDOUT"));
    for (int i = 0; i < 2; i++) {
        assert_int_equal(p[i].hook_calls, 1);
        tc_future_unref(raw[i]);
        tc_future_unref(wt[i]);
    }
    tc_future_unref(f);
}

/* ---- combinator races and lifetimes --------------------------------------------------------- */

static void test_gather_cancel_with_synchronous_hook(void **state)
{
    int freed = 0;
    hook_rec h = {.freed = &freed};
    tc_future *in[2] = {fut_new(), fut_new()};
    tc_future_set_cancel_hook(in[0], hook_cb, &h);
    tc_future *g = NULL;
    assert_int_equal(tc_gather(&g, in, 2, 0), 0);
    assert_int_equal(tc_future_cancel(g), 1);
    assert_int_equal(h.calls, 1);
    assert_int_equal(h.fulfill_rc, TC_ECANCELED);
    assert_int_equal(freed, 1);
    assert_int_equal(tc_future_state_of(in[0]), TC_FUTURE_CANCELLED);
    assert_int_equal(tc_future_state_of(in[1]), TC_FUTURE_CANCELLED);
    assert_int_equal(tc_future_state_of(g), TC_FUTURE_CANCELLED);
    tc_future_unref(g);
    tc_future_unref(in[0]);
    tc_future_unref(in[1]);
}

static void test_drop_combinator_reference_in_its_callback(void **state)
{
    int freed = 0, calls = 0;
    uv_loop_t *loop = *state;
    tc_future *in[2] = {fut_new(), fut_new()};
    tc_future *g = NULL;
    assert_int_equal(tc_gather(&g, in, 2, 0), 0);
    assert_int_equal(tc_future_on_done(g, unref_cb, &calls), 0); /* takes our reference */
    tc_future_unref(in[0]);
    assert_int_equal(tc_future_fulfill(in[0], box_new(0, &freed), box_free), 0);
    assert_int_equal(tc_future_fulfill(in[1], box_new(1, &freed), box_free), 0);
    assert_int_equal(calls, 1);
    assert_int_equal(freed, 1); /* in[0] went with the gather; in[1] is still ours */
    tc_future_unref(in[1]);
    assert_int_equal(freed, 2);

    /* the same for a timer-driven combinator */
    calls = 0;
    tc_future *s = NULL;
    assert_int_equal(tc_sleep(&s, loop, 1), 0);
    assert_int_equal(tc_future_on_done(s, unref_cb, &calls), 0);
    loop_drain(loop);
    assert_int_equal(calls, 1);
}

static void test_drop_combinator_before_completion(void **state)
{
    int freed = 0;
    uv_loop_t *loop = *state;
    producer p[2];
    tc_future *in[2];
    in[0] = producer_start(&p[0], loop, 5, 0, 0, &freed);
    in[1] = producer_start(&p[1], loop, 10, 1, TC_EIO, &freed);
    tc_future *g = NULL, *w = NULL, *a = NULL, *fs = NULL, *wt = NULL;
    reports rp = {0};
    assert_int_equal(tc_gather(&g, in, 2, TC_GATHER_RETURN_EXCEPTIONS), 0);
    assert_int_equal(tc_wait(&w, loop, in, 2, TC_ALL_COMPLETED, 60000), 0);
    assert_int_equal(tc_as_completed(&a, loop, in, 2, 60000, report_cb, &rp), 0);
    assert_int_equal(tc_first_success(&fs, in + 1, 1), 0); /* in[1] fails: nothing to cancel */
    assert_int_equal(tc_with_timeout(&wt, loop, in[1], 60000), 0);
    tc_future *all[5] = {g, w, a, fs, wt};
    for (int i = 0; i < 5; i++)
        tc_future_unref(all[i]);
    tc_future_unref(in[0]);
    tc_future_unref(in[1]);
    loop_drain(loop); /* nothing leaks, no handle stays open */
    assert_int_equal(rp.n, 2);
    assert_int_equal(p[0].completed + p[1].completed, 2);
    assert_int_equal(freed, 1);
}

/* ---- more races and edges ------------------------------------------------------------------- */

/* A cancel hook that fulfils another future (a sibling), racing a combinator's cancellation. */
typedef struct sibling_hook {
    tc_future *sibling;
    int *freed;
    int rc;
    int calls;
} sibling_hook;

static void sibling_hook_cb(tc_future *f, void *data)
{
    sibling_hook *h = data;
    h->calls++;
    h->rc = tc_future_fulfill(h->sibling, box_new(1, h->freed), box_free);
}

static void test_gather_cancel_hook_completes_sibling(void **state)
{
    int freed = 0;
    tc_future *in[3] = {fut_new(), fut_new(), fut_new()};
    sibling_hook h = {.sibling = in[1], .freed = &freed};
    tc_future_set_cancel_hook(in[0], sibling_hook_cb, &h);
    tc_future *g = NULL;
    assert_int_equal(tc_gather(&g, in, 3, 0), 0);
    assert_int_equal(tc_future_cancel(g), 1);
    assert_int_equal(h.calls, 1);
    assert_int_equal(h.rc, 0); /* in[1] was still pending when in[0]'s hook ran */
    assert_int_equal(tc_future_state_of(in[0]), TC_FUTURE_CANCELLED);
    assert_int_equal(tc_future_state_of(in[1]), TC_FUTURE_FULFILLED);
    assert_int_equal(tc_future_state_of(in[2]), TC_FUTURE_CANCELLED);
    assert_int_equal(tc_future_state_of(g), TC_FUTURE_CANCELLED);
    tc_future_unref(g);
    for (int i = 0; i < 3; i++)
        tc_future_unref(in[i]);
    assert_int_equal(freed, 1);
}

static void test_first_success_loser_cancels_winner_future(void **state)
{
    /* while first_success cancels a loser, the loser's hook cancels the first_success future */
    int freed = 0;
    tc_future *in[2] = {fut_new(), fut_new()};
    tc_future *f = NULL;
    assert_int_equal(tc_first_success(&f, in, 2), 0);
    tc_future_set_cancel_hook(in[1], cancel_target_cb, f);
    assert_int_equal(tc_future_fulfill(in[0], box_new(0, &freed), box_free), 0);
    assert_int_equal(tc_future_state_of(in[1]), TC_FUTURE_CANCELLED);
    assert_int_equal(tc_future_state_of(f), TC_FUTURE_CANCELLED);
    assert_int_equal(tc_first_success_index(f), -1);
    assert_null(tc_future_value(f));
    tc_future_unref(f);
    tc_future_unref(in[0]);
    assert_int_equal(freed, 1);
    tc_future_unref(in[1]);
}

static void test_cancel_combinator_in_its_own_callback(void **state)
{
    tc_future *in[1] = {fut_new()};
    tc_future *g = NULL;
    assert_int_equal(tc_gather(&g, in, 1, 0), 0);
    tc_future *self = g;
    rec r = {0};
    assert_int_equal(tc_future_on_done(g, cancel_other_cb, &self), 0);
    assert_int_equal(tc_future_on_done(g, rec_cb, &r), 0);
    assert_int_equal(tc_future_fulfill(in[0], NULL, NULL), 0);
    assert_int_equal(tc_future_state_of(g), TC_FUTURE_FULFILLED); /* done: the cancel was a no-op */
    assert_int_equal(r.calls, 1);
    tc_future_unref(g);
    tc_future_unref(in[0]);
}

static void test_gather_same_future_twice(void **state)
{
    int freed = 0;
    tc_future *f = fut_new();
    tc_future *in[2] = {f, f};
    tc_future *g = NULL;
    assert_int_equal(tc_gather(&g, in, 2, 0), 0);
    assert_int_equal(tc_future_fulfill(f, box_new(4, &freed), box_free), 0);
    assert_int_equal(tc_future_state_of(g), TC_FUTURE_FULFILLED);
    const tc_gather_result *res = tc_future_value(g);
    assert_ptr_equal(res->futures[0], f);
    assert_ptr_equal(res->futures[1], f);
    tc_future_unref(f);
    assert_int_equal(box_value(res->futures[1]), 4);
    tc_future_unref(g);
    assert_int_equal(freed, 1);
}

/* A report callback that completes another input from inside the report. */
typedef struct chain_reports {
    reports r;
    tc_future *next;
} chain_reports;

static void chain_report_cb(tc_future *f, size_t index, int timed_out, void *data)
{
    chain_reports *c = data;
    report_cb(f, index, timed_out, &c->r);
    if (c->next != NULL) {
        tc_future *n = c->next;
        c->next = NULL;
        assert_int_equal(tc_future_fulfill(n, NULL, NULL), 0);
    }
}

static void test_as_completed_reentrant_completion(void **state)
{
    uv_loop_t *loop = *state;
    rec done = {0};
    tc_future *in[2] = {fut_new(), fut_new()};
    chain_reports c = {.next = in[0]};
    tc_future *a = NULL;
    assert_int_equal(tc_as_completed(&a, loop, in, 2, 60000, chain_report_cb, &c), 0);
    assert_int_equal(tc_future_on_done(a, rec_cb, &done), 0);
    assert_int_equal(tc_future_fulfill(in[1], NULL, NULL), 0);
    assert_int_equal(c.r.n, 2);
    assert_int_equal(c.r.index[0], 1);
    assert_int_equal(c.r.index[1], 0);
    assert_int_equal(done.calls, 1);
    assert_int_equal(done.state, TC_FUTURE_FULFILLED);
    tc_future_unref(in[0]);
    tc_future_unref(in[1]);
    tc_future_unref(a);
    loop_drain(loop);
}

static void test_as_completed_cancel_during_timeout_reports(void **state)
{
    uv_loop_t *loop = *state;
    reports rp = {0};
    tc_future *in[3] = {fut_new(), fut_new(), fut_new()};
    tc_future *a = NULL;
    assert_int_equal(tc_as_completed(&a, loop, in, 3, 5, report_cb, &rp), 0);
    rp.cancel_on_first = a;
    loop_drain(loop);
    assert_int_equal(rp.n, 1); /* the first timed-out report cancelled: no more reports */
    assert_int_equal(rp.index[0], 0);
    assert_int_equal(rp.timed_out[0], 1);
    assert_int_equal(tc_future_state_of(a), TC_FUTURE_CANCELLED);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(tc_future_state_of(in[i]), TC_FUTURE_PENDING);
        tc_future_unref(in[i]);
    }
    tc_future_unref(a);
}

static void test_wait_timeout_zero(void **state)
{
    uv_loop_t *loop = *state;
    tc_future *in[1] = {fut_new()};
    tc_future *w = NULL;
    assert_int_equal(tc_wait(&w, loop, in, 1, TC_FIRST_COMPLETED, 0), 0);
    assert_int_equal(tc_future_state_of(w), TC_FUTURE_PENDING); /* never synchronous */
    loop_drain(loop);
    const tc_wait_result *r = tc_future_value(w);
    assert_int_equal(r->ndone, 0);
    assert_int_equal(r->npending, 1);
    assert_int_equal(tc_future_state_of(in[0]), TC_FUTURE_PENDING);
    tc_future_unref(in[0]);
    tc_future_unref(w);
}

static int start_null_inner(void *data, tc_future **inner)
{
    (*(int *)data)++;
    *inner = NULL;
    return 0;
}

static int start_rejected_inner(void *data, tc_future **inner)
{
    (*(int *)data)++;
    int rc = tc_future_new(inner);
    if (rc == 0)
        tc_future_reject(*inner, TC_EURL, "bad target");
    return rc;
}

static void test_call_later_inner_edge_cases(void **state)
{
    uv_loop_t *loop = *state;
    int calls = 0;
    tc_future *a = NULL, *b = NULL;
    assert_int_equal(tc_call_later(&a, loop, 0, start_null_inner, &calls), 0);
    assert_int_equal(tc_call_later(&b, loop, 1, start_rejected_inner, &calls), 0);
    loop_drain(loop);
    assert_int_equal(calls, 2);
    assert_int_equal(tc_future_error(a), TC_EINVAL);
    assert_int_equal(tc_future_error(b), TC_EURL);
    assert_string_equal(tc_future_message(b), "bad target");
    tc_future_unref(a);
    tc_future_unref(b);
}

static void test_deep_with_timeout_chain(void **state)
{
    enum { DEPTH = 200 };
    uv_loop_t *loop = *state;
    int freed = 0;
    /* a chain that succeeds: the value is borrowed through every level */
    tc_future *leaf = fut_new(), *cur = tc_future_ref(leaf);
    for (int i = 0; i < DEPTH; i++) {
        tc_future *next = NULL;
        assert_int_equal(tc_with_timeout(&next, loop, cur, 60000), 0);
        tc_future_unref(cur);
        cur = next;
    }
    assert_int_equal(tc_future_fulfill(leaf, box_new(77, &freed), box_free), 0);
    tc_future_unref(leaf);
    assert_int_equal(box_value(cur), 77);
    tc_future_unref(cur);
    assert_int_equal(freed, 1);

    /* a chain cancelled from the top reaches the producer at the bottom */
    hook_rec h = {0};
    leaf = fut_new();
    tc_future_set_cancel_hook(leaf, hook_cb, &h);
    cur = tc_future_ref(leaf);
    for (int i = 0; i < DEPTH; i++) {
        tc_future *next = NULL;
        assert_int_equal(tc_with_timeout(&next, loop, cur, LONG_MS), 0);
        tc_future_unref(cur);
        cur = next;
    }
    assert_int_equal(tc_future_cancel(cur), 1);
    assert_int_equal(h.calls, 1);
    assert_int_equal(tc_future_state_of(leaf), TC_FUTURE_CANCELLED);
    tc_future_unref(cur);
    tc_future_unref(leaf);
    loop_drain(loop); /* 400 timers closed */
}

static void test_unref_everything_inside_gather_callback(void **state)
{
    /* callbacks drop the last references to the gather and to its inputs while it completes */
    int freed = 0, calls = 0;
    tc_future *in[2] = {fut_new(), fut_new()};
    tc_future *g = NULL;
    assert_int_equal(tc_gather(&g, in, 2, 0), 0);
    assert_int_equal(tc_future_fulfill(in[0], box_new(0, &freed), box_free), 0);
    tc_future_unref(in[0]);
    assert_int_equal(tc_future_on_done(g, unref_cb, &calls), 0);     /* takes our gather ref */
    assert_int_equal(tc_future_on_done(in[1], unref_cb, &calls), 0); /* takes our in[1] ref */
    assert_int_equal(tc_future_fulfill(in[1], box_new(1, &freed), box_free), 0);
    assert_int_equal(calls, 2);
    assert_int_equal(freed, 2); /* everything went away */
}

/* A cancel hook that registers a done-callback on the future being cancelled. */
static void hook_adds_callback(tc_future *f, void *data)
{
    rec *r = data;
    assert_int_equal(tc_future_on_done(f, rec_cb, r), 0);
    assert_int_equal(r->calls, 1); /* already cancelled: fires at once */
}

static void test_callback_added_inside_cancel_hook(void **state)
{
    int seq = 0;
    rec early = {.seq = &seq}, in_hook = {.seq = &seq};
    tc_future *f = fut_new();
    assert_int_equal(tc_future_on_done(f, rec_cb, &early), 0);
    tc_future_set_cancel_hook(f, hook_adds_callback, &in_hook);
    assert_int_equal(tc_future_cancel(f), 1);
    assert_int_equal(in_hook.calls, 1);
    assert_int_equal(early.calls, 1);
    assert_int_equal(in_hook.state, TC_FUTURE_CANCELLED);
    assert_int_equal(early.state, TC_FUTURE_CANCELLED);
    tc_future_unref(f);
}

/* ---- main ----------------------------------------------------------------------------------- */

int main(void)
{
    alarm(120); /* watchdog: a hung loop fails the test instead of blocking CI */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_fulfill_value_and_release, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_reject_messages, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_truncation_keeps_utf8_whole, loop_setup,
                                        loop_teardown),
        cmocka_unit_test_setup_teardown(test_invalid_arguments, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_callbacks_in_order_exactly_once, loop_setup,
                                        loop_teardown),
        cmocka_unit_test_setup_teardown(test_many_callbacks_and_removal, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_same_callback_registered_twice, loop_setup,
                                        loop_teardown),
        cmocka_unit_test_setup_teardown(test_off_done_during_callbacks, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_on_done_inside_callback, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_drop_last_reference_inside_callback, loop_setup,
                                        loop_teardown),
        cmocka_unit_test_setup_teardown(test_cancel_runs_hook_then_callbacks, loop_setup,
                                        loop_teardown),
        cmocka_unit_test_setup_teardown(test_hook_not_called_when_completed_or_removed, loop_setup,
                                        loop_teardown),
        cmocka_unit_test_setup_teardown(test_complete_inside_cancel_hook, loop_setup,
                                        loop_teardown),
        cmocka_unit_test_setup_teardown(test_complete_after_cancel, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_hook_drops_producer_reference, loop_setup,
                                        loop_teardown),
        cmocka_unit_test_setup_teardown(test_cancel_inside_done_callback, loop_setup,
                                        loop_teardown),
        cmocka_unit_test_setup_teardown(test_gather_empty, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_gather_values_in_input_order, loop_setup,
                                        loop_teardown),
        cmocka_unit_test_setup_teardown(test_gather_first_rejection, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_gather_cancelled_input_rejects, loop_setup,
                                        loop_teardown),
        cmocka_unit_test_setup_teardown(test_gather_return_exceptions, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_gather_cancel_cancels_unfinished, loop_setup,
                                        loop_teardown),
        cmocka_unit_test_setup_teardown(test_gather_already_done_inputs, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_gather_of_gathers, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_gather_100k_no_leak, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_sleep_fulfils_after_delay, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_sleep_zero_is_deferred, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_sleep_cancel_releases_loop, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_call_later_delays_start, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_call_later_zero_is_deferred_and_mirrors, loop_setup,
                                        loop_teardown),
        cmocka_unit_test_setup_teardown(test_call_later_cancel_before_start, loop_setup,
                                        loop_teardown),
        cmocka_unit_test_setup_teardown(test_call_later_cancel_after_start, loop_setup,
                                        loop_teardown),
        cmocka_unit_test_setup_teardown(test_call_later_start_error, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_call_later_start_cancels_own_future, loop_setup,
                                        loop_teardown),
        cmocka_unit_test_setup_teardown(test_with_timeout_inner_first, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_with_timeout_expires, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_with_timeout_cancel_and_mirror, loop_setup,
                                        loop_teardown),
        cmocka_unit_test_setup_teardown(test_with_timeout_inner_completes_in_hook, loop_setup,
                                        loop_teardown),
        cmocka_unit_test_setup_teardown(test_wait_empty, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_wait_first_completed, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_wait_first_exception, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_wait_all_completed, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_wait_timeout_cancels_nothing, loop_setup,
                                        loop_teardown),
        cmocka_unit_test_setup_teardown(test_wait_cancel_only_stops_waiting, loop_setup,
                                        loop_teardown),
        cmocka_unit_test_setup_teardown(test_wait_already_done_inputs, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_as_completed_empty, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_as_completed_in_completion_order, loop_setup,
                                        loop_teardown),
        cmocka_unit_test_setup_teardown(test_as_completed_timeout, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_as_completed_cancel_stops_reports, loop_setup,
                                        loop_teardown),
        cmocka_unit_test_setup_teardown(test_as_completed_already_done, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_first_success_empty, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_first_success_winner_cancels_rest, loop_setup,
                                        loop_teardown),
        cmocka_unit_test_setup_teardown(test_first_success_all_failed, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_first_success_message_bounded, loop_setup,
                                        loop_teardown),
        cmocka_unit_test_setup_teardown(test_first_success_cancel_cancels_all, loop_setup,
                                        loop_teardown),
        cmocka_unit_test_setup_teardown(test_first_success_already_fulfilled, loop_setup,
                                        loop_teardown),
        cmocka_unit_test_setup_teardown(test_first_success_of_with_timeouts, loop_setup,
                                        loop_teardown),
        cmocka_unit_test_setup_teardown(test_gather_cancel_with_synchronous_hook, loop_setup,
                                        loop_teardown),
        cmocka_unit_test_setup_teardown(test_drop_combinator_reference_in_its_callback, loop_setup,
                                        loop_teardown),
        cmocka_unit_test_setup_teardown(test_drop_combinator_before_completion, loop_setup,
                                        loop_teardown),
        cmocka_unit_test_setup_teardown(test_gather_cancel_hook_completes_sibling, loop_setup,
                                        loop_teardown),
        cmocka_unit_test_setup_teardown(test_first_success_loser_cancels_winner_future, loop_setup,
                                        loop_teardown),
        cmocka_unit_test_setup_teardown(test_cancel_combinator_in_its_own_callback, loop_setup,
                                        loop_teardown),
        cmocka_unit_test_setup_teardown(test_gather_same_future_twice, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_as_completed_reentrant_completion, loop_setup,
                                        loop_teardown),
        cmocka_unit_test_setup_teardown(test_as_completed_cancel_during_timeout_reports, loop_setup,
                                        loop_teardown),
        cmocka_unit_test_setup_teardown(test_wait_timeout_zero, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_call_later_inner_edge_cases, loop_setup,
                                        loop_teardown),
        cmocka_unit_test_setup_teardown(test_deep_with_timeout_chain, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_unref_everything_inside_gather_callback, loop_setup,
                                        loop_teardown),
        cmocka_unit_test_setup_teardown(test_callback_added_inside_cancel_hook, loop_setup,
                                        loop_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
