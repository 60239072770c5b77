/*
 * Unit tests for src/policy/batch.c: the in-flight cap and its queue, the queue limit, closing,
 * zero wait, and a dispatcher that fails synchronously. The harness is batch_fixture.h.
 */
#include "batch_fixture.h"

static int setup_cap(void **state)
{
    return bfx_setup_with(state, 1, 10000, 2); /* every key is a batch; two out at once */
}

static void test_in_flight_cap_queues_fifo(void **state)
{
    harness *h = *state;
    tc_future *f[5];
    const char *keys[5] = {"k0", "k1", "k2", "k3", "k4"};
    for (int i = 0; i < 5; i++)
        f[i] = bfx_submit(h, keys[i]);
    assert_int_equal(h->dispatches, 2);
    tc_batcher_stats st = bfx_stats(h);
    assert_int_equal(st.in_flight, 2);
    assert_int_equal(st.queued, 3);
    assert_int_equal(st.batches_queued, 3);

    /* Finishing one lets exactly one queued batch out, oldest first. */
    bfx_answer(bfx_take_held(h));
    assert_int_equal(h->dispatches, 3);
    assert_string_equal(h->keys_seen, "k0;k1;k2;");
    tc_batch_fail(bfx_take_held(h), TC_EIO, "k1 failed"); /* a failure frees a slot too */
    assert_int_equal(h->dispatches, 4);
    bfx_answer_held(h);
    assert_string_equal(h->keys_seen, "k0;k1;k2;k3;k4;");
    bfx_assert_value(f[0], "v:k0");
    assert_int_equal(tc_future_error(f[1]), TC_EIO);
    for (int i = 2; i < 5; i++) {
        char want[8];
        snprintf(want, sizeof(want), "v:%s", keys[i]);
        bfx_assert_value(f[i], want);
    }
    for (int i = 0; i < 5; i++)
        tc_future_unref(f[i]);
    st = bfx_stats(h);
    assert_int_equal(st.queued, 0);
    assert_int_equal(st.in_flight, 0);
}

/* Time spent queued behind the cap counts toward the caller's own timeout. */
static void test_queued_time_counts_toward_timeout(void **state)
{
    harness *h = *state; /* max_batch 1, cap 2 */
    tc_future *busy0 = bfx_submit(h, "busy0");
    tc_future *busy1 = bfx_submit(h, "busy1");
    assert_int_equal(h->dispatches, 2);

    uint64_t t0 = uv_hrtime();
    tc_future *inner = bfx_submit(h, "late"); /* queued */
    tc_future *keep = bfx_submit(h, "kept");  /* queued, no timeout */
    assert_int_equal(bfx_stats(h).queued, 2);
    tc_future *timed = NULL;
    assert_int_equal(tc_with_timeout(&timed, &h->loop, inner, 50), 0);
    while (!tc_future_done(timed))
        uv_run(&h->loop, UV_RUN_ONCE);
    double waited_ms = (double)(uv_hrtime() - t0) / 1e6;
    assert_int_equal(tc_future_error(timed), TC_ETIMEDOUT);
    assert_int_equal(tc_future_state_of(inner), TC_FUTURE_CANCELLED);
    assert_true(waited_ms >= 48.0 && waited_ms < 3000.0);
    /* Its batch had nobody left: dropped from the queue, never dispatched. */
    tc_batcher_stats st = bfx_stats(h);
    assert_int_equal(st.queued, 1);
    assert_int_equal(st.batches_dropped, 1);
    assert_int_equal(st.waiters_left, 1);

    bfx_answer(bfx_take_held(h));
    assert_string_equal(h->keys_seen, "busy0;busy1;kept;");
    bfx_answer_held(h);
    bfx_assert_value(keep, "v:kept");
    bfx_assert_value(busy1, "v:busy1");
    tc_future *all[] = {busy0, busy1, inner, keep, timed};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        tc_future_unref(all[i]);
}

static int setup_small_queue(void **state)
{
    int rc = bfx_setup_with(state, 1, 10000, 1);
    if (rc == 0) {
        /* Rebuild with max_queued 2. */
        harness *h = *state;
        tc_batcher_close(h->b, NULL, NULL);
        uv_run(&h->loop, UV_RUN_DEFAULT);
        tc_batcher_config cfg;
        tc_batcher_config_init(&cfg);
        cfg.max_batch = 1;
        cfg.max_in_flight = 1;
        cfg.max_queued = 2;
        cfg.dispatch = bfx_dispatch;
        cfg.data = h;
        rc = tc_batcher_new(&h->b, &h->loop, &cfg);
    }
    return rc;
}

static void test_queue_limit_says_busy(void **state)
{
    harness *h = *state;
    tc_future *f[3];
    f[0] = bfx_submit(h, "a"); /* out */
    f[1] = bfx_submit(h, "b"); /* queued */
    f[2] = bfx_submit(h, "c"); /* queued */
    tc_future *no = NULL;
    assert_int_equal(tc_batcher_submit(&no, h->b, "d", 1), TC_EBUSY);
    assert_null(no);
    bfx_answer_held(h);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(tc_future_state_of(f[i]), TC_FUTURE_FULFILLED);
        tc_future_unref(f[i]);
    }
}

static void test_close_cancels_unsent_and_waits_for_out(void **state)
{
    harness *h = *state; /* max_batch 3, cap 16 */
    tc_future *out[3] = {bfx_submit(h, "a"), bfx_submit(h, "b"), bfx_submit(h, "c")};
    tc_future *pending = bfx_submit(h, "d");
    tc_batch *batch = bfx_take_held(h);
    tc_batcher_close(h->b, bfx_on_closed, h);
    assert_int_equal(tc_future_state_of(pending), TC_FUTURE_CANCELLED);
    tc_future *no = NULL;
    assert_int_equal(tc_batcher_submit(&no, h->b, "e", 1), TC_ECLOSED);
    tc_batcher_close(h->b, bfx_on_closed, h); /* again: nothing */
    /* The batch that is out is still the dispatcher's; the close waits for it. */
    uv_run(&h->loop, UV_RUN_NOWAIT);
    assert_int_equal(h->closed, 0);
    bfx_answer(batch);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(tc_future_state_of(out[i]), TC_FUTURE_FULFILLED);
        tc_future_unref(out[i]);
    }
    tc_future_unref(pending);
    uv_run(&h->loop, UV_RUN_DEFAULT);
    assert_int_equal(h->closed, 1);
    h->b = NULL; /* freed: the teardown must not touch it */
}

static int setup_wait_0(void **state)
{
    return bfx_setup_with(state, 50, 0, 0); /* next loop iteration; no in-flight cap */
}

static void test_zero_wait_goes_next_iteration_and_no_cap(void **state)
{
    harness *h = *state;
    tc_future *a = bfx_submit(h, "a");
    tc_future *b = bfx_submit(h, "b");
    assert_int_equal(h->dispatches, 0); /* never inside submit when not full */
    uv_run(&h->loop, UV_RUN_NOWAIT);
    assert_int_equal(h->dispatches, 1);
    assert_string_equal(h->keys_seen, "a,b;");
    /* No cap: twenty batches out at once, none queued. */
    tc_future *f[20];
    char key[8];
    for (int i = 0; i < 20; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        f[i] = bfx_submit(h, key);
        tc_batcher_flush(h->b);
    }
    tc_batcher_stats st = bfx_stats(h);
    assert_int_equal(st.in_flight, 21);
    assert_int_equal(st.batches_queued, 0);
    bfx_answer_held(h);
    bfx_assert_value(a, "v:a");
    bfx_assert_value(b, "v:b");
    for (int i = 0; i < 20; i++) {
        snprintf(key, sizeof(key), "v:k%d", i);
        bfx_assert_value(f[i], key);
        tc_future_unref(f[i]);
    }
    tc_future_unref(a);
    tc_future_unref(b);
}

/* A dispatcher that fails inside dispatch: the waiters learn it inside the submit. */
static void test_dispatch_fails_synchronously(void **state)
{
    harness *h = *state; /* max_batch 3 */
    h->mode = FAIL_NOW;
    tc_future *a = bfx_submit(h, "a");
    tc_future *b = bfx_submit(h, "b");
    tc_future *c = bfx_submit(h, "c");
    tc_future *f[] = {a, b, c};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(tc_future_error(f[i]), TC_ECONNREFUSED);
        assert_string_equal(tc_future_message(f[i]), "cannot even start");
        tc_future_unref(f[i]);
    }
    tc_batcher_stats st = bfx_stats(h);
    assert_int_equal(st.batches_failed, 1);
    assert_int_equal(st.in_flight, 0);
    h->mode = HOLD; /* the batcher goes on */
    tc_future *d = bfx_submit(h, "d");
    tc_batcher_flush(h->b);
    bfx_answer(bfx_take_held(h));
    bfx_assert_value(d, "v:d");
    tc_future_unref(d);
}

int main(void)
{
    alarm(120); /* watchdog: a hung loop fails the test instead of blocking CI */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_in_flight_cap_queues_fifo, setup_cap, bfx_teardown),
        cmocka_unit_test_setup_teardown(test_queued_time_counts_toward_timeout, setup_cap,
                                        bfx_teardown),
        cmocka_unit_test_setup_teardown(test_queue_limit_says_busy, setup_small_queue,
                                        bfx_teardown),
        cmocka_unit_test_setup_teardown(test_close_cancels_unsent_and_waits_for_out, bfx_setup,
                                        bfx_teardown),
        cmocka_unit_test_setup_teardown(test_zero_wait_goes_next_iteration_and_no_cap, setup_wait_0,
                                        bfx_teardown),
        cmocka_unit_test_setup_teardown(test_dispatch_fails_synchronously, bfx_setup, bfx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
