/*
 * Unit tests for src/core/future.c: combinator races, lifetimes and edges.
 */
#include "future_fixture.h"

/* ---- combinator races and lifetimes --------------------------------------------------------- */

static void test_gather_cancel_with_synchronous_hook(void **state)
{
    int freed = 0;
    hook_rec h = {.freed = &freed};
    tc_future *in[2] = {ffx_fut_new(), ffx_fut_new()};
    tc_future_set_cancel_hook(in[0], ffx_hook_cb, &h);
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
    tc_future *in[2] = {ffx_fut_new(), ffx_fut_new()};
    tc_future *g = NULL;
    assert_int_equal(tc_gather(&g, in, 2, 0), 0);
    assert_int_equal(tc_future_on_done(g, ffx_unref_cb, &calls), 0); /* takes our reference */
    tc_future_unref(in[0]);
    assert_int_equal(tc_future_fulfill(in[0], ffx_box_new(0, &freed), ffx_box_free), 0);
    assert_int_equal(tc_future_fulfill(in[1], ffx_box_new(1, &freed), ffx_box_free), 0);
    assert_int_equal(calls, 1);
    assert_int_equal(freed, 1); /* in[0] went with the gather; in[1] is still ours */
    tc_future_unref(in[1]);
    assert_int_equal(freed, 2);

    /* the same for a timer-driven combinator */
    calls = 0;
    tc_future *s = NULL;
    assert_int_equal(tc_sleep(&s, loop, 1), 0);
    assert_int_equal(tc_future_on_done(s, ffx_unref_cb, &calls), 0);
    ffx_loop_drain(loop);
    assert_int_equal(calls, 1);
}

static void test_drop_combinator_before_completion(void **state)
{
    int freed = 0;
    uv_loop_t *loop = *state;
    producer p[2];
    tc_future *in[2];
    in[0] = ffx_producer_start(&p[0], loop, 5, 0, 0, &freed);
    in[1] = ffx_producer_start(&p[1], loop, 10, 1, TC_EIO, &freed);
    tc_future *g = NULL, *w = NULL, *a = NULL, *fs = NULL, *wt = NULL;
    reports rp = {0};
    assert_int_equal(tc_gather(&g, in, 2, TC_GATHER_RETURN_EXCEPTIONS), 0);
    assert_int_equal(tc_wait(&w, loop, in, 2, TC_ALL_COMPLETED, 60000), 0);
    assert_int_equal(tc_as_completed(&a, loop, in, 2, 60000, ffx_report_cb, &rp), 0);
    assert_int_equal(tc_first_success(&fs, in + 1, 1), 0); /* in[1] fails: nothing to cancel */
    assert_int_equal(tc_with_timeout(&wt, loop, in[1], 60000), 0);
    tc_future *all[5] = {g, w, a, fs, wt};
    for (int i = 0; i < 5; i++)
        tc_future_unref(all[i]);
    tc_future_unref(in[0]);
    tc_future_unref(in[1]);
    ffx_loop_drain(loop); /* nothing leaks, no handle stays open */
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
    h->rc = tc_future_fulfill(h->sibling, ffx_box_new(1, h->freed), ffx_box_free);
}

static void test_gather_cancel_hook_completes_sibling(void **state)
{
    int freed = 0;
    tc_future *in[3] = {ffx_fut_new(), ffx_fut_new(), ffx_fut_new()};
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
    tc_future *in[2] = {ffx_fut_new(), ffx_fut_new()};
    tc_future *f = NULL;
    assert_int_equal(tc_first_success(&f, in, 2), 0);
    tc_future_set_cancel_hook(in[1], ffx_cancel_target_cb, f);
    assert_int_equal(tc_future_fulfill(in[0], ffx_box_new(0, &freed), ffx_box_free), 0);
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
    tc_future *in[1] = {ffx_fut_new()};
    tc_future *g = NULL;
    assert_int_equal(tc_gather(&g, in, 1, 0), 0);
    tc_future *self = g;
    rec r = {0};
    assert_int_equal(tc_future_on_done(g, ffx_cancel_other_cb, &self), 0);
    assert_int_equal(tc_future_on_done(g, ffx_rec_cb, &r), 0);
    assert_int_equal(tc_future_fulfill(in[0], NULL, NULL), 0);
    assert_int_equal(tc_future_state_of(g), TC_FUTURE_FULFILLED); /* done: the cancel was a no-op */
    assert_int_equal(r.calls, 1);
    tc_future_unref(g);
    tc_future_unref(in[0]);
}

static void test_gather_same_future_twice(void **state)
{
    int freed = 0;
    tc_future *f = ffx_fut_new();
    tc_future *in[2] = {f, f};
    tc_future *g = NULL;
    assert_int_equal(tc_gather(&g, in, 2, 0), 0);
    assert_int_equal(tc_future_fulfill(f, ffx_box_new(4, &freed), ffx_box_free), 0);
    assert_int_equal(tc_future_state_of(g), TC_FUTURE_FULFILLED);
    const tc_gather_result *res = tc_future_value(g);
    assert_ptr_equal(res->futures[0], f);
    assert_ptr_equal(res->futures[1], f);
    tc_future_unref(f);
    assert_int_equal(ffx_box_value(res->futures[1]), 4);
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
    ffx_report_cb(f, index, timed_out, &c->r);
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
    tc_future *in[2] = {ffx_fut_new(), ffx_fut_new()};
    chain_reports c = {.next = in[0]};
    tc_future *a = NULL;
    assert_int_equal(tc_as_completed(&a, loop, in, 2, 60000, chain_report_cb, &c), 0);
    assert_int_equal(tc_future_on_done(a, ffx_rec_cb, &done), 0);
    assert_int_equal(tc_future_fulfill(in[1], NULL, NULL), 0);
    assert_int_equal(c.r.n, 2);
    assert_int_equal(c.r.index[0], 1);
    assert_int_equal(c.r.index[1], 0);
    assert_int_equal(done.calls, 1);
    assert_int_equal(done.state, TC_FUTURE_FULFILLED);
    tc_future_unref(in[0]);
    tc_future_unref(in[1]);
    tc_future_unref(a);
    ffx_loop_drain(loop);
}

static void test_as_completed_cancel_during_timeout_reports(void **state)
{
    uv_loop_t *loop = *state;
    reports rp = {0};
    tc_future *in[3] = {ffx_fut_new(), ffx_fut_new(), ffx_fut_new()};
    tc_future *a = NULL;
    assert_int_equal(tc_as_completed(&a, loop, in, 3, 5, ffx_report_cb, &rp), 0);
    rp.cancel_on_first = a;
    ffx_loop_drain(loop);
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
    tc_future *in[1] = {ffx_fut_new()};
    tc_future *w = NULL;
    assert_int_equal(tc_wait(&w, loop, in, 1, TC_FIRST_COMPLETED, 0), 0);
    assert_int_equal(tc_future_state_of(w), TC_FUTURE_PENDING); /* never synchronous */
    ffx_loop_drain(loop);
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
    ffx_loop_drain(loop);
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
    tc_future *leaf = ffx_fut_new(), *cur = tc_future_ref(leaf);
    for (int i = 0; i < DEPTH; i++) {
        tc_future *next = NULL;
        assert_int_equal(tc_with_timeout(&next, loop, cur, 60000), 0);
        tc_future_unref(cur);
        cur = next;
    }
    assert_int_equal(tc_future_fulfill(leaf, ffx_box_new(77, &freed), ffx_box_free), 0);
    tc_future_unref(leaf);
    assert_int_equal(ffx_box_value(cur), 77);
    tc_future_unref(cur);
    assert_int_equal(freed, 1);

    /* a chain cancelled from the top reaches the producer at the bottom */
    hook_rec h = {0};
    leaf = ffx_fut_new();
    tc_future_set_cancel_hook(leaf, ffx_hook_cb, &h);
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
    ffx_loop_drain(loop); /* 400 timers closed */
}

static void test_unref_everything_inside_gather_callback(void **state)
{
    /* callbacks drop the last references to the gather and to its inputs while it completes */
    int freed = 0, calls = 0;
    tc_future *in[2] = {ffx_fut_new(), ffx_fut_new()};
    tc_future *g = NULL;
    assert_int_equal(tc_gather(&g, in, 2, 0), 0);
    assert_int_equal(tc_future_fulfill(in[0], ffx_box_new(0, &freed), ffx_box_free), 0);
    tc_future_unref(in[0]);
    assert_int_equal(tc_future_on_done(g, ffx_unref_cb, &calls), 0);     /* takes our gather ref */
    assert_int_equal(tc_future_on_done(in[1], ffx_unref_cb, &calls), 0); /* takes our in[1] ref */
    assert_int_equal(tc_future_fulfill(in[1], ffx_box_new(1, &freed), ffx_box_free), 0);
    assert_int_equal(calls, 2);
    assert_int_equal(freed, 2); /* everything went away */
}

/* A cancel hook that registers a done-callback on the future being cancelled. */
static void hook_adds_callback(tc_future *f, void *data)
{
    rec *r = data;
    assert_int_equal(tc_future_on_done(f, ffx_rec_cb, r), 0);
    assert_int_equal(r->calls, 1); /* already cancelled: fires at once */
}

static void test_callback_added_inside_cancel_hook(void **state)
{
    int seq = 0;
    rec early = {.seq = &seq}, in_hook = {.seq = &seq};
    tc_future *f = ffx_fut_new();
    assert_int_equal(tc_future_on_done(f, ffx_rec_cb, &early), 0);
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
        FFX_LOOP_TEST(test_gather_cancel_with_synchronous_hook),
        FFX_LOOP_TEST(test_drop_combinator_reference_in_its_callback),
        FFX_LOOP_TEST(test_drop_combinator_before_completion),
        FFX_LOOP_TEST(test_gather_cancel_hook_completes_sibling),
        FFX_LOOP_TEST(test_first_success_loser_cancels_winner_future),
        FFX_LOOP_TEST(test_cancel_combinator_in_its_own_callback),
        FFX_LOOP_TEST(test_gather_same_future_twice),
        FFX_LOOP_TEST(test_as_completed_reentrant_completion),
        FFX_LOOP_TEST(test_as_completed_cancel_during_timeout_reports),
        FFX_LOOP_TEST(test_wait_timeout_zero),
        FFX_LOOP_TEST(test_call_later_inner_edge_cases),
        FFX_LOOP_TEST(test_deep_with_timeout_chain),
        FFX_LOOP_TEST(test_unref_everything_inside_gather_callback),
        FFX_LOOP_TEST(test_callback_added_inside_cancel_hook),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
