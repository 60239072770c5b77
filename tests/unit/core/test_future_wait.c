/*
 * Unit tests for src/core/future.c: with_timeout, wait, as_completed and first_success.
 */
#include "future_fixture.h"

/* ---- with_timeout --------------------------------------------------------------------------- */

static void test_with_timeout_inner_first(void **state)
{
    int freed = 0;
    uv_loop_t *loop = *state;
    producer p;
    tc_future *in = ffx_producer_start(&p, loop, 10, 5, 0, &freed);
    tc_future *w = NULL;
    assert_int_equal(tc_with_timeout(&w, loop, in, 60000), 0);
    tc_future_unref(in);  /* w keeps it */
    ffx_loop_drain(loop); /* ends long before 60 s: the timer is closed on completion */
    assert_int_equal(tc_future_state_of(w), TC_FUTURE_FULFILLED);
    assert_int_equal(ffx_box_value(w), 5);
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
    tc_future *in = ffx_producer_start(&p, loop, LONG_MS, 5, 0, &freed);
    tc_future *w = NULL;
    assert_int_equal(tc_with_timeout(&w, loop, in, 30), 0);
    assert_int_equal(tc_future_on_done(w, ffx_stamp_cb, &st), 0);
    ffx_loop_drain(loop);
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
    tc_future *in = ffx_producer_start(&p, loop, LONG_MS, 5, 0, &freed);
    tc_future *w = NULL;
    assert_int_equal(tc_with_timeout(&w, loop, in, LONG_MS), 0);
    assert_int_equal(tc_future_cancel(w), 1);
    assert_int_equal(p.hook_calls, 1);
    assert_int_equal(tc_future_state_of(in), TC_FUTURE_CANCELLED);
    tc_future_unref(w);
    tc_future_unref(in);

    /* an inner rejection is mirrored, code and message */
    in = ffx_fut_new();
    assert_int_equal(tc_with_timeout(&w, loop, in, LONG_MS), 0);
    assert_int_equal(tc_future_reject(in, TC_ETLS, "bad certificate"), 0);
    assert_int_equal(tc_future_error(w), TC_ETLS);
    assert_string_equal(tc_future_message(w), "bad certificate");
    tc_future_unref(w);
    tc_future_unref(in);

    /* an inner cancellation cancels the outer future */
    in = ffx_fut_new();
    assert_int_equal(tc_with_timeout(&w, loop, in, LONG_MS), 0);
    assert_int_equal(tc_future_cancel(in), 1);
    assert_int_equal(tc_future_state_of(w), TC_FUTURE_CANCELLED);
    tc_future_unref(w);
    tc_future_unref(in);

    /* an inner future already done is mirrored at once, without a timer */
    in = ffx_fut_new();
    assert_int_equal(tc_future_fulfill(in, ffx_box_new(8, &freed), ffx_box_free), 0);
    assert_int_equal(tc_with_timeout(&w, loop, in, LONG_MS), 0);
    assert_int_equal(ffx_box_value(w), 8);
    tc_future_unref(in);
    tc_future_unref(w);
    assert_int_equal(freed, 1);
    ffx_loop_drain(loop);
}

static void test_with_timeout_inner_completes_in_hook(void **state)
{
    int freed = 0;
    uv_loop_t *loop = *state;
    hook_rec h = {.freed = &freed};
    tc_future *in = ffx_fut_new();
    tc_future_set_cancel_hook(in, ffx_hook_cb, &h);
    tc_future *w = NULL;
    assert_int_equal(tc_with_timeout(&w, loop, in, 0), 0);
    ffx_loop_drain(loop);
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
    ffx_loop_drain(loop);
}

/* Three producers of 0, 1, 2: the middle one completes after fast_ms, the others never. */
static void start_one_fast(uv_loop_t *loop, producer p[3], tc_future *in[3], uint64_t fast_ms,
                           int *freed)
{
    in[0] = ffx_producer_start(&p[0], loop, LONG_MS, 0, 0, freed);
    in[1] = ffx_producer_start(&p[1], loop, fast_ms, 1, 0, freed);
    in[2] = ffx_producer_start(&p[2], loop, LONG_MS, 2, 0, freed);
}

/* After start_one_fast and a combinator that cancels nothing: the slow two are still pending
 * and were never cancelled. Stops them, drops every reference (the combinator's, out, too) and
 * checks that only the fast one made a value. */
static void stop_the_slow_ones(uv_loop_t *loop, producer p[3], tc_future *in[3], tc_future *out,
                               const int *freed)
{
    assert_int_equal(tc_future_state_of(in[0]), TC_FUTURE_PENDING);
    assert_int_equal(tc_future_state_of(in[2]), TC_FUTURE_PENDING);
    assert_int_equal(p[0].hook_calls + p[2].hook_calls, 0);
    tc_future_cancel(in[0]);
    tc_future_cancel(in[2]);
    for (int i = 0; i < 3; i++)
        tc_future_unref(in[i]);
    tc_future_unref(out);
    ffx_loop_drain(loop);
    assert_int_equal(*freed, 1);
}

static void test_wait_first_completed(void **state)
{
    int freed = 0;
    uv_loop_t *loop = *state;
    producer p[3];
    tc_future *in[3];
    start_one_fast(loop, p, in, 10, &freed);
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
    stop_the_slow_ones(loop, p, in, w, &freed);
}

static void test_wait_first_exception(void **state)
{
    uv_loop_t *loop = *state;
    tc_future *in[4] = {ffx_fut_new(), ffx_fut_new(), ffx_fut_new(), ffx_fut_new()};
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
    in[0] = ffx_fut_new();
    in[1] = ffx_fut_new();
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
    ffx_loop_drain(loop);
}

static void test_wait_all_completed(void **state)
{
    uv_loop_t *loop = *state;
    tc_future *in[3] = {ffx_fut_new(), ffx_fut_new(), ffx_fut_new()};
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
    ffx_loop_drain(loop); /* the 60 s timer was closed when the wait completed */
}

static void test_wait_timeout_cancels_nothing(void **state)
{
    uv_loop_t *loop = *state;
    uv_update_time(loop);
    uint64_t t0 = uv_now(loop);
    stamp st = {.loop = loop};
    hook_rec h = {0};
    tc_future *in[2] = {ffx_fut_new(), ffx_fut_new()};
    tc_future_set_cancel_hook(in[0], ffx_hook_cb, &h);
    tc_future *w = NULL;
    assert_int_equal(tc_future_fulfill(in[1], NULL, NULL), 0);
    assert_int_equal(tc_wait(&w, loop, in, 2, TC_ALL_COMPLETED, 30), 0);
    assert_int_equal(tc_future_on_done(w, ffx_stamp_cb, &st), 0);
    ffx_loop_drain(loop);
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
    tc_future *in[2] = {ffx_fut_new(), ffx_fut_new()};
    tc_future_set_cancel_hook(in[0], ffx_hook_cb, &h);
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
    ffx_loop_drain(loop); /* the long timer is gone */
}

static void test_wait_already_done_inputs(void **state)
{
    uv_loop_t *loop = *state;
    tc_future *in[3] = {ffx_fut_new(), ffx_fut_new(), ffx_fut_new()};
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
    ffx_loop_drain(loop);
}

/* ---- as_completed --------------------------------------------------------------------------- */
static void test_as_completed_empty(void **state)
{
    uv_loop_t *loop = *state;
    reports rp = {0};
    tc_future *a = NULL;
    assert_int_equal(tc_as_completed(&a, loop, NULL, 0, 10, ffx_report_cb, &rp), 0);
    assert_int_equal(tc_future_state_of(a), TC_FUTURE_FULFILLED);
    assert_int_equal(rp.n, 0);
    tc_future_unref(a);
    ffx_loop_drain(loop);
}

static void test_as_completed_in_completion_order(void **state)
{
    uv_loop_t *loop = *state;
    reports rp = {0};
    rec done = {0};
    tc_future *in[3] = {ffx_fut_new(), ffx_fut_new(), ffx_fut_new()};
    tc_future *a = NULL;
    assert_int_equal(tc_as_completed(&a, loop, in, 3, 60000, ffx_report_cb, &rp), 0);
    assert_int_equal(tc_future_on_done(a, ffx_rec_cb, &done), 0);
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
    ffx_loop_drain(loop);
}

static void test_as_completed_timeout(void **state)
{
    int freed = 0;
    uv_loop_t *loop = *state;
    reports rp = {0};
    producer p[3];
    tc_future *in[3];
    start_one_fast(loop, p, in, 5, &freed);
    tc_future *a = NULL;
    assert_int_equal(tc_as_completed(&a, loop, in, 3, 60, ffx_report_cb, &rp), 0);
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
    stop_the_slow_ones(loop, p, in, a, &freed);
}

static void test_as_completed_cancel_stops_reports(void **state)
{
    uv_loop_t *loop = *state;
    reports rp = {0};
    tc_future *in[3] = {ffx_fut_new(), ffx_fut_new(), ffx_fut_new()};
    tc_future *a = NULL;
    assert_int_equal(tc_as_completed(&a, loop, in, 3, LONG_MS, ffx_report_cb, &rp), 0);
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
    ffx_loop_drain(loop);
}

static void test_as_completed_already_done(void **state)
{
    uv_loop_t *loop = *state;
    reports rp = {0};
    tc_future *in[3] = {ffx_fut_new(), ffx_fut_new(), ffx_fut_new()};
    assert_int_equal(tc_future_fulfill(in[2], NULL, NULL), 0);
    assert_int_equal(tc_future_reject(in[0], TC_EIO, NULL), 0);
    tc_future *a = NULL;
    assert_int_equal(tc_as_completed(&a, loop, in, 3, -1, ffx_report_cb, &rp), 0);
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
    ffx_loop_drain(loop);
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
    tc_future *in[3] = {ffx_fut_new(), ffx_fut_new(), ffx_fut_new()};
    tc_future_set_cancel_hook(in[1], ffx_hook_cb, &h);
    tc_future *f = NULL;
    assert_int_equal(tc_first_success(&f, in, 3), 0);
    assert_int_equal(tc_first_success_index(f), -1);
    assert_int_equal(tc_future_reject(in[0], TC_ECONNRESET, NULL), 0);
    assert_int_equal(tc_future_state_of(f), TC_FUTURE_PENDING);
    assert_int_equal(tc_future_fulfill(in[2], ffx_box_new(2, &freed), ffx_box_free), 0);
    assert_int_equal(tc_future_state_of(f), TC_FUTURE_FULFILLED);
    assert_int_equal(tc_first_success_index(f), 2);
    assert_int_equal(ffx_box_value(f), 2);
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
    tc_future *in[3] = {ffx_fut_new(), ffx_fut_new(), ffx_fut_new()};
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
        in[i] = ffx_fut_new();
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
    tc_future *in[2] = {ffx_fut_new(), ffx_fut_new()};
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
    tc_future *in[3] = {ffx_fut_new(), ffx_fut_new(), ffx_fut_new()};
    assert_int_equal(tc_future_reject(in[0], TC_EIO, NULL), 0);
    assert_int_equal(tc_future_fulfill(in[1], ffx_box_new(1, &freed), ffx_box_free), 0);
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
    raw[0] = ffx_producer_start(&p[0], loop, LONG_MS, 0, 0, &freed); /* times out */
    raw[1] = ffx_producer_start(&p[1], loop, 60, 1, 0, &freed);      /* wins */
    raw[2] = ffx_producer_start(&p[2], loop, LONG_MS, 2, 0, &freed); /* cancelled by the win */
    assert_int_equal(tc_with_timeout(&wt[0], loop, raw[0], 10), 0);
    assert_int_equal(tc_with_timeout(&wt[1], loop, raw[1], 60000), 0);
    assert_int_equal(tc_with_timeout(&wt[2], loop, raw[2], LONG_MS), 0);
    tc_future *f = NULL;
    assert_int_equal(tc_first_success(&f, wt, 3), 0);
    for (int i = 0; i < 3; i++) {
        tc_future_unref(raw[i]);
        tc_future_unref(wt[i]);
    }
    ffx_loop_drain(loop);
    assert_int_equal(tc_future_state_of(f), TC_FUTURE_FULFILLED);
    assert_int_equal(tc_first_success_index(f), 1);
    assert_int_equal(ffx_box_value(f), 1); /* borrowed through two levels */
    assert_int_equal(p[0].hook_calls, 1);  /* cancelled by its timeout */
    assert_int_equal(p[1].hook_calls, 0);
    assert_int_equal(p[2].hook_calls, 1); /* cancelled by first_success */
    tc_future_unref(f);
    assert_int_equal(freed, 1);

    /* every with_timeout expires: the aggregate lists the timeouts */
    for (int i = 0; i < 2; i++) {
        raw[i] = ffx_producer_start(&p[i], loop, LONG_MS, i, 0, &freed);
        assert_int_equal(tc_with_timeout(&wt[i], loop, raw[i], 5 + 10 * (uint64_t)i), 0);
    }
    assert_int_equal(tc_first_success(&f, wt, 2), 0);
    ffx_loop_drain(loop);
    assert_int_equal(tc_future_error(f), TC_EALLFAILED);
    assert_non_null(strstr(tc_future_message(f), "[1] ETIMEDOUT"));
    for (int i = 0; i < 2; i++) {
        assert_int_equal(p[i].hook_calls, 1);
        tc_future_unref(raw[i]);
        tc_future_unref(wt[i]);
    }
    tc_future_unref(f);
}

/* ---- main ----------------------------------------------------------------------------------- */

int main(void)
{
    alarm(120); /* watchdog: a hung loop fails the test instead of blocking CI */
    const struct CMUnitTest tests[] = {
        FFX_LOOP_TEST(test_with_timeout_inner_first),
        FFX_LOOP_TEST(test_with_timeout_expires),
        FFX_LOOP_TEST(test_with_timeout_cancel_and_mirror),
        FFX_LOOP_TEST(test_with_timeout_inner_completes_in_hook),
        FFX_LOOP_TEST(test_wait_empty),
        FFX_LOOP_TEST(test_wait_first_completed),
        FFX_LOOP_TEST(test_wait_first_exception),
        FFX_LOOP_TEST(test_wait_all_completed),
        FFX_LOOP_TEST(test_wait_timeout_cancels_nothing),
        FFX_LOOP_TEST(test_wait_cancel_only_stops_waiting),
        FFX_LOOP_TEST(test_wait_already_done_inputs),
        FFX_LOOP_TEST(test_as_completed_empty),
        FFX_LOOP_TEST(test_as_completed_in_completion_order),
        FFX_LOOP_TEST(test_as_completed_timeout),
        FFX_LOOP_TEST(test_as_completed_cancel_stops_reports),
        FFX_LOOP_TEST(test_as_completed_already_done),
        FFX_LOOP_TEST(test_first_success_empty),
        FFX_LOOP_TEST(test_first_success_winner_cancels_rest),
        FFX_LOOP_TEST(test_first_success_all_failed),
        FFX_LOOP_TEST(test_first_success_message_bounded),
        FFX_LOOP_TEST(test_first_success_cancel_cancels_all),
        FFX_LOOP_TEST(test_first_success_already_fulfilled),
        FFX_LOOP_TEST(test_first_success_of_with_timeouts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
