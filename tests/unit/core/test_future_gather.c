/*
 * Unit tests for src/core/future.c: gather, sleep and call_later.
 */
#include "future_fixture.h"

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

/* A gather of the n inputs (no flags) whose completion r records. */
static tc_future *gather_recorded(tc_future **in, size_t n, rec *r)
{
    tc_future *g = NULL;
    assert_int_equal(tc_gather(&g, in, n, 0), 0);
    assert_int_equal(tc_future_on_done(g, ffx_rec_cb, r), 0);
    return g;
}

static void test_gather_values_in_input_order(void **state)
{
    int freed = 0;
    rec r = {0};
    tc_future *in[3] = {ffx_fut_new(), ffx_fut_new(), ffx_fut_new()};
    tc_future *g = gather_recorded(in, 3, &r);
    /* complete in reverse order */
    assert_int_equal(tc_future_fulfill(in[2], ffx_box_new(2, &freed), ffx_box_free), 0);
    assert_int_equal(tc_future_fulfill(in[1], ffx_box_new(1, &freed), ffx_box_free), 0);
    assert_int_equal(r.calls, 0);
    assert_int_equal(tc_future_state_of(g), TC_FUTURE_PENDING);
    assert_int_equal(tc_future_fulfill(in[0], ffx_box_new(0, &freed), ffx_box_free), 0);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.state, TC_FUTURE_FULFILLED);
    /* the caller drops its input references; the result keeps them */
    for (int i = 0; i < 3; i++)
        tc_future_unref(in[i]);
    const tc_gather_result *res = tc_future_value(g);
    assert_int_equal(res->n, 3);
    for (int i = 0; i < 3; i++)
        assert_int_equal(ffx_box_value(res->futures[i]), i);
    assert_int_equal(freed, 0);
    tc_future_unref(g);
    assert_int_equal(freed, 3);
}

static void test_gather_first_rejection(void **state)
{
    int freed = 0;
    rec r = {0};
    tc_future *in[3] = {ffx_fut_new(), ffx_fut_new(), ffx_fut_new()};
    tc_future *g = gather_recorded(in, 3, &r);
    assert_int_equal(tc_future_fulfill(in[0], ffx_box_new(0, &freed), ffx_box_free), 0);
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
    tc_future *in[2] = {ffx_fut_new(), ffx_fut_new()};
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
    tc_future *in[3] = {ffx_fut_new(), ffx_fut_new(), ffx_fut_new()};
    tc_future *g = NULL;
    assert_int_equal(tc_gather(&g, in, 3, TC_GATHER_RETURN_EXCEPTIONS), 0);
    assert_int_equal(tc_future_reject(in[0], TC_EHTTP, "503"), 0);
    assert_int_equal(tc_future_cancel(in[2]), 1);
    assert_int_equal(tc_future_state_of(g), TC_FUTURE_PENDING);
    assert_int_equal(tc_future_fulfill(in[1], ffx_box_new(1, &freed), ffx_box_free), 0);
    assert_int_equal(tc_future_state_of(g), TC_FUTURE_FULFILLED);
    const tc_gather_result *res = tc_future_value(g);
    assert_int_equal(res->n, 3);
    assert_ptr_equal(res->futures[0], in[0]);
    assert_int_equal(tc_future_error(res->futures[0]), TC_EHTTP);
    assert_string_equal(tc_future_message(res->futures[0]), "503");
    assert_int_equal(ffx_box_value(res->futures[1]), 1);
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
    tc_future *in[3] = {ffx_fut_new(), ffx_fut_new(), ffx_fut_new()};
    tc_future_set_cancel_hook(in[2], ffx_hook_cb, &h);
    tc_future *g = NULL;
    assert_int_equal(tc_gather(&g, in, 3, 0), 0);
    assert_int_equal(tc_future_fulfill(in[0], ffx_box_new(0, &freed), ffx_box_free), 0);
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
    tc_future *in[2] = {ffx_fut_new(), ffx_fut_new()};
    assert_int_equal(tc_future_fulfill(in[0], ffx_box_new(10, &freed), ffx_box_free), 0);
    assert_int_equal(tc_future_fulfill(in[1], ffx_box_new(11, &freed), ffx_box_free), 0);
    tc_future *g = NULL;
    assert_int_equal(tc_gather(&g, in, 2, 0), 0);
    assert_int_equal(tc_future_state_of(g), TC_FUTURE_FULFILLED);
    const tc_gather_result *res = tc_future_value(g);
    assert_int_equal(ffx_box_value(res->futures[1]), 11);
    tc_future_unref(in[0]);
    tc_future_unref(in[1]);
    tc_future_unref(g);
    assert_int_equal(freed, 2);

    /* an already rejected input rejects at once */
    in[0] = ffx_fut_new();
    in[1] = ffx_fut_new();
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
        leaf[i] = ffx_fut_new();
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
        leaf[i] = ffx_fut_new();
    assert_int_equal(tc_gather(&mid[0], leaf, 2, 0), 0);
    assert_int_equal(tc_gather(&mid[1], leaf + 2, 2, 0), 0);
    assert_int_equal(tc_gather(&top, mid, 2, 0), 0);
    for (int i = 3; i >= 0; i--)
        assert_int_equal(tc_future_fulfill(leaf[i], ffx_box_new(i, &freed), ffx_box_free), 0);
    assert_int_equal(tc_future_state_of(top), TC_FUTURE_FULFILLED);
    const tc_gather_result *t = tc_future_value(top);
    assert_int_equal(t->n, 2);
    for (int m = 0; m < 2; m++) {
        const tc_gather_result *inner = tc_future_value(t->futures[m]);
        assert_int_equal(inner->n, 2);
        assert_int_equal(ffx_box_value(inner->futures[0]), 2 * m);
        assert_int_equal(ffx_box_value(inner->futures[1]), 2 * m + 1);
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
        in[i] = ffx_fut_new();
    tc_future *g = NULL;
    assert_int_equal(tc_gather(&g, in, N, 0), 0);
    for (size_t i = 0; i < N; i++) {
        assert_int_equal(tc_future_fulfill(in[i], ffx_box_new((int)i, &freed), ffx_box_free), 0);
        tc_future_unref(in[i]);
    }
    assert_int_equal(tc_future_state_of(g), TC_FUTURE_FULFILLED);
    const tc_gather_result *res = tc_future_value(g);
    assert_int_equal(res->n, N);
    for (size_t i = 0; i < N; i += 9973)
        assert_int_equal(ffx_box_value(res->futures[i]), (int)i);
    assert_int_equal(ffx_box_value(res->futures[N - 1]), N - 1);
    assert_int_equal(freed, 0);
    tc_future_unref(g);
    assert_int_equal(freed, N);
    free(in);
}

/* ---- sleep ---------------------------------------------------------------------------------- */

/* A sleep of ms whose completion st records. */
static tc_future *sleep_stamped(uv_loop_t *loop, uint64_t ms, stamp *st)
{
    tc_future *s = NULL;
    assert_int_equal(tc_sleep(&s, loop, ms), 0);
    assert_int_equal(tc_future_on_done(s, ffx_stamp_cb, st), 0);
    return s;
}

static void test_sleep_fulfils_after_delay(void **state)
{
    uv_loop_t *loop = *state;
    uv_update_time(loop);
    uint64_t t0 = uv_now(loop);
    stamp st = {.loop = loop};
    tc_future *s = sleep_stamped(loop, 30, &st);
    assert_int_equal(tc_future_state_of(s), TC_FUTURE_PENDING);
    tc_future_unref(s); /* the timer keeps the sleep alive */
    ffx_loop_drain(loop);
    assert_int_equal(st.calls, 1);
    assert_int_equal(st.state, TC_FUTURE_FULFILLED);
    assert_true(st.at - t0 >= 29);
}

static void test_sleep_zero_is_deferred(void **state)
{
    uv_loop_t *loop = *state;
    stamp st = {.loop = loop};
    tc_future *s = sleep_stamped(loop, 0, &st);
    assert_int_equal(st.calls, 0);
    ffx_loop_drain(loop);
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
    tc_future *s = sleep_stamped(loop, LONG_MS, &st);
    assert_int_equal(tc_future_cancel(s), 1);
    assert_int_equal(st.calls, 1);
    assert_int_equal(st.state, TC_FUTURE_CANCELLED);
    tc_future_unref(s);
    ffx_loop_drain(loop); /* returns at once: the timer is closed, nothing keeps the loop */
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
        *inner = ffx_fut_new();
        assert_int_equal(tc_future_fulfill(*inner, ffx_box_new(42, s->freed), ffx_box_free), 0);
    } else {
        *inner = ffx_producer_start(&s->prod, s->loop, s->inner_ms, 43, s->inner_err, s->freed);
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
    ffx_loop_drain(loop);
    assert_int_equal(s.calls, 1);
    assert_true(s.at - t0 >= 24);
    assert_int_equal(tc_future_state_of(f), TC_FUTURE_FULFILLED);
    assert_int_equal(ffx_box_value(f), 42); /* borrowed from the inner future */
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
    ffx_loop_drain(loop);
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
    ffx_loop_drain(loop);
    assert_int_equal(s.calls, 0);
    assert_int_equal(tc_future_state_of(f), TC_FUTURE_CANCELLED);
    tc_future_unref(f);
}

static void test_call_later_cancel_after_start(void **state)
{
    int freed = 0;
    uv_loop_t *loop = *state;
    starter s = {.loop = loop, .freed = &freed, .inner_ms = LONG_MS};
    tc_future *f = NULL, *t = NULL;
    assert_int_equal(tc_call_later(&f, loop, 5, starter_fn, &s), 0);
    assert_int_equal(tc_sleep(&t, loop, 40), 0);
    assert_int_equal(tc_future_on_done(t, ffx_cancel_target_cb, f), 0);
    ffx_loop_drain(loop);
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
    ffx_loop_drain(loop);
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
    ffx_loop_drain(loop);
    assert_int_equal(s.calls, 1);
    assert_int_equal(s.prod.hook_calls, 1); /* the unwanted inner future was cancelled */
    assert_int_equal(tc_future_state_of(f), TC_FUTURE_CANCELLED);
    tc_future_unref(f);
}

/* ---- main ----------------------------------------------------------------------------------- */

int main(void)
{
    alarm(120); /* watchdog: a hung loop fails the test instead of blocking CI */
    const struct CMUnitTest tests[] = {
        FFX_LOOP_TEST(test_gather_empty),
        FFX_LOOP_TEST(test_gather_values_in_input_order),
        FFX_LOOP_TEST(test_gather_first_rejection),
        FFX_LOOP_TEST(test_gather_cancelled_input_rejects),
        FFX_LOOP_TEST(test_gather_return_exceptions),
        FFX_LOOP_TEST(test_gather_cancel_cancels_unfinished),
        FFX_LOOP_TEST(test_gather_already_done_inputs),
        FFX_LOOP_TEST(test_gather_of_gathers),
        FFX_LOOP_TEST(test_gather_100k_no_leak),
        FFX_LOOP_TEST(test_sleep_fulfils_after_delay),
        FFX_LOOP_TEST(test_sleep_zero_is_deferred),
        FFX_LOOP_TEST(test_sleep_cancel_releases_loop),
        FFX_LOOP_TEST(test_call_later_delays_start),
        FFX_LOOP_TEST(test_call_later_zero_is_deferred_and_mirrors),
        FFX_LOOP_TEST(test_call_later_cancel_before_start),
        FFX_LOOP_TEST(test_call_later_cancel_after_start),
        FFX_LOOP_TEST(test_call_later_start_error),
        FFX_LOOP_TEST(test_call_later_start_cancels_own_future),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
