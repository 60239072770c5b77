/*
 * Unit tests for src/policy/batch.c: what triggers a batch (size, time, flush), deduplication,
 * per-key results and errors, whole-batch failure, and waiters that leave. The harness is
 * batch_fixture.h.
 */
#include "batch_fixture.h"

/* ---- tests ---------------------------------------------------------------------------------- */

static void test_config_and_arguments(void **state)
{
    harness *h = *state;
    tc_batcher_config cfg;
    tc_batcher_config_init(&cfg);
    assert_int_equal(cfg.max_batch, 50);
    assert_int_equal(cfg.max_wait_ms, 10);
    assert_int_equal(cfg.max_in_flight, 16);
    tc_batcher *b = NULL;
    assert_int_equal(tc_batcher_new(&b, &h->loop, &cfg), TC_EINVAL); /* no dispatch */
    cfg.dispatch = bfx_dispatch;
    cfg.max_batch = 0;
    assert_int_equal(tc_batcher_new(&b, &h->loop, &cfg), TC_EINVAL);
    assert_int_equal(tc_batcher_new(NULL, &h->loop, &cfg), TC_EINVAL);
    assert_null(b);

    tc_future *f = NULL;
    char big[TC_BATCH_DEFAULT_MAX_KEY + 1];
    memset(big, 'k', sizeof(big));
    assert_int_equal(tc_batcher_submit(&f, h->b, big, sizeof(big)), TC_ETOOLARGE);
    assert_int_equal(tc_batcher_submit(&f, h->b, NULL, 1), TC_EINVAL);
    assert_int_equal(tc_batcher_submit(NULL, h->b, "a", 1), TC_EINVAL);
    assert_null(f);
    assert_int_equal(bfx_stats(h).submitted, 0);
    /* The longest key is fine, and the empty key is a key like any other. */
    assert_int_equal(tc_batcher_submit(&f, h->b, big, sizeof(big) - 1), 0);
    tc_future *e = NULL;
    assert_int_equal(tc_batcher_submit(&e, h->b, "", 0), 0);
    tc_batcher_flush(h->b);
    assert_int_equal(h->dispatches, 1);
    tc_batch *batch = bfx_take_held(h);
    assert_int_equal(tc_batch_size(batch), 2);
    size_t len = 1;
    assert_string_equal(tc_batch_key(batch, 1, &len), "");
    assert_int_equal(len, 0);
    assert_null(tc_batch_key(batch, 2, NULL));
    assert_int_equal(tc_batch_resolve(batch, 7, NULL), TC_EINVAL);
    assert_int_equal(tc_batch_resolve(batch, 1, NULL), 0);
    assert_int_equal(tc_batch_resolve(batch, 1, NULL), TC_EINVAL); /* already settled */
    assert_int_equal(tc_batch_reject_key(batch, 1, TC_EIO, NULL), TC_EINVAL);
    tc_batch_done(batch);
    assert_int_equal(tc_future_state_of(e), TC_FUTURE_FULFILLED);
    assert_null(tc_future_value(e));
    assert_int_equal(tc_future_error(f), TC_EMISSING);
    tc_future_unref(f);
    tc_future_unref(e);
}

static void test_size_trigger(void **state)
{
    harness *h = *state; /* max_batch 3, max_wait 10 s */
    tc_future *f[7];
    const char *keys[7] = {"a", "b", "c", "d", "e", "f", "g"};
    for (int i = 0; i < 7; i++) {
        f[i] = bfx_submit(h, keys[i]);
        /* A full batch goes out inside the submit that filled it. */
        assert_int_equal(h->dispatches, (size_t)(i + 1) / 3);
    }
    assert_string_equal(h->keys_seen, "a,b,c;d,e,f;");
    tc_batcher_stats st = bfx_stats(h);
    assert_int_equal(st.batches_full, 2);
    assert_int_equal(st.batches_sent, 2);
    assert_int_equal(st.in_flight, 2);
    assert_int_equal(st.collecting, 1);
    /* The 7th key's batch is not sent by the loop turning: its 10 s wait has not passed. */
    bfx_run_for(h, 30);
    assert_int_equal(h->dispatches, 2);
    tc_batcher_flush(h->b);
    assert_string_equal(h->keys_seen, "a,b,c;d,e,f;g;");

    while (h->nheld > 0) {
        tc_batch *batch = bfx_take_held(h);
        assert_int_equal(tc_batch_waiters(batch, 0), 1);
        bfx_answer(batch);
    }
    for (int i = 0; i < 7; i++) {
        char want[8];
        snprintf(want, sizeof(want), "v:%s", keys[i]);
        bfx_assert_value(f[i], want);
        tc_future_unref(f[i]);
    }
    st = bfx_stats(h);
    assert_int_equal(st.keys_sent, 7);
    assert_int_equal(st.largest_batch, 3);
    assert_int_equal(st.in_flight, 0);
    assert_int_equal(st.batches_failed, 0);
    assert_int_equal(st.keys_missing, 0);
}

static int setup_defaults(void **state)
{
    return bfx_setup_with(state, 50, 10, 16);
}

/* The defaults: 50 distinct keys make a batch at once; fewer go out after 10 ms. */
static void test_defaults_50_keys_or_10_ms(void **state)
{
    harness *h = *state;
    tc_future *f[120];
    char key[16];
    for (int i = 0; i < 120; i++) {
        snprintf(key, sizeof(key), "id%d", i);
        f[i] = bfx_submit(h, key);
    }
    assert_int_equal(h->dispatches, 2);
    assert_int_equal(h->sizes[0], 50);
    assert_int_equal(h->sizes[1], 50);
    uint64_t t0 = uv_hrtime();
    while (h->dispatches < 3)
        uv_run(&h->loop, UV_RUN_ONCE);
    double waited_ms = (double)(uv_hrtime() - t0) / 1e6;
    assert_int_equal(h->sizes[2], 20);
    assert_true(waited_ms >= 8.0);   /* 10 ms less timer granularity */
    assert_true(waited_ms < 2000.0); /* generous: a loaded machine */
    bfx_answer_held(h);
    for (int i = 0; i < 120; i++) {
        snprintf(key, sizeof(key), "v:id%d", i);
        bfx_assert_value(f[i], key);
        tc_future_unref(f[i]);
    }
    assert_int_equal(bfx_stats(h).batches_timed, 1);
}

static int setup_wait_40(void **state)
{
    return bfx_setup_with(state, 50, 40, 16);
}

static void test_time_trigger(void **state)
{
    harness *h = *state; /* max_wait 40 ms */
    uint64_t t0 = uv_hrtime();
    tc_future *a = bfx_submit(h, "a");
    bfx_run_for(h, 15);
    tc_future *b = bfx_submit(h, "b"); /* joins the batch: the clock started at "a" */
    assert_int_equal(h->dispatches, 0);
    while (h->dispatches == 0)
        uv_run(&h->loop, UV_RUN_ONCE);
    double waited_ms = (double)(h->first_dispatch_ns - t0) / 1e6;
    assert_true(waited_ms >= 38.0);
    assert_true(waited_ms < 3000.0);
    assert_string_equal(h->keys_seen, "a,b;");
    tc_batch *batch = bfx_take_held(h);
    assert_true(tc_batch_wait_ms(batch) >= 38.0);
    assert_true(tc_batch_wait_ms(batch) <= waited_ms + 1.0);
    bfx_answer(batch);
    bfx_assert_value(a, "v:a");
    bfx_assert_value(b, "v:b");
    tc_future_unref(a);
    tc_future_unref(b);
    tc_batcher_stats st = bfx_stats(h);
    assert_int_equal(st.batches_timed, 1);
    assert_int_equal(st.batches_full, 0);
}

/* A value whose release is counted. */
typedef struct counted {
    int *disposed;
    char text[16];
} counted;

static void counted_dispose(void *value)
{
    counted *c = value;
    (*c->disposed)++;
}

static void test_dedup_shares_one_value(void **state)
{
    harness *h = *state; /* max_batch 3 */
    tc_future *a1 = bfx_submit(h, "a");
    tc_future *b1 = bfx_submit(h, "b");
    tc_future *a2 = bfx_submit(h, "a");
    tc_future *a3 = bfx_submit(h, "a");
    assert_int_equal(h->dispatches, 0); /* duplicates do not fill the batch */
    tc_future *c1 = bfx_submit(h, "c");
    assert_int_equal(h->dispatches, 1);
    assert_string_equal(h->keys_seen, "a,b,c;");
    tc_batcher_stats st = bfx_stats(h);
    assert_int_equal(st.submitted, 5);
    assert_int_equal(st.dedup_hits, 2);
    assert_int_equal(st.keys_sent, 3);

    tc_batch *batch = bfx_take_held(h);
    assert_int_equal(tc_batch_waiters(batch, 0), 3);
    assert_int_equal(tc_batch_waiters(batch, 1), 1);
    int disposed = 0;
    counted *v = tc_batch_value_alloc(sizeof(*v), counted_dispose);
    assert_non_null(v);
    v->disposed = &disposed;
    snprintf(v->text, sizeof(v->text), "shared");
    assert_int_equal(tc_batch_resolve(batch, 0, v), 0);
    assert_int_equal(tc_batch_waiters(batch, 0), 0);
    /* Every waiter of "a" sees the very same value. */
    assert_ptr_equal(tc_future_value(a1), v);
    assert_ptr_equal(tc_future_value(a2), v);
    assert_ptr_equal(tc_future_value(a3), v);
    tc_batch_resolve_bytes(batch, 1, "B", 1);
    tc_batch_resolve_bytes(batch, 2, "C", 1);
    tc_batch_done(batch);
    bfx_assert_value(b1, "B");
    bfx_assert_value(c1, "C");

    /* The value lives while any waiter's future does, and as long as an extra reference. */
    tc_batch_value_ref(v);
    tc_future_unref(a1);
    tc_future_unref(a2);
    tc_future_unref(a3);
    assert_int_equal(disposed, 0);
    assert_string_equal(v->text, "shared");
    tc_batch_value_unref(v);
    assert_int_equal(disposed, 1);
    tc_future_unref(b1);
    tc_future_unref(c1);

    /* Across batches keys are not merged: a new batch asks again. */
    tc_future *a4 = bfx_submit(h, "a");
    tc_batcher_flush(h->b);
    assert_string_equal(h->keys_seen, "a,b,c;a;");
    batch = bfx_take_held(h);
    tc_batch_resolve_bytes(batch, 0, "again", 5);
    tc_batch_done(batch);
    bfx_assert_value(a4, "again");
    tc_future_unref(a4);
}

static void test_per_key_errors_and_missing(void **state)
{
    harness *h = *state;
    tc_future *a = bfx_submit(h, "a");
    tc_future *b = bfx_submit(h, "b");
    tc_future *b2 = bfx_submit(h, "b");
    tc_future *c = bfx_submit(h, "c");
    tc_batch *batch = bfx_take_held(h);
    assert_int_equal(tc_batch_reject_key(batch, 1, TC_EHTTP, "b is forbidden"), 0);
    assert_int_equal(tc_future_error(b), TC_EHTTP);
    assert_string_equal(tc_future_message(b), "b is forbidden");
    assert_int_equal(tc_future_error(b2), TC_EHTTP);
    assert_int_equal(tc_batch_resolve_bytes(batch, 2, "{\"c\":1}", 7), 0);
    tc_batch_done(batch); /* "a" was never resolved */
    assert_int_equal(tc_future_state_of(a), TC_FUTURE_REJECTED);
    assert_int_equal(tc_future_error(a), TC_EMISSING);
    assert_non_null(strstr(tc_future_message(a), "missing"));
    bfx_assert_value(c, "{\"c\":1}");
    tc_batcher_stats st = bfx_stats(h);
    assert_int_equal(st.keys_missing, 1);
    assert_int_equal(st.batches_failed, 0);
    tc_future_unref(a);
    tc_future_unref(b);
    tc_future_unref(b2);
    tc_future_unref(c);
}

static void test_whole_batch_failure(void **state)
{
    harness *h = *state;
    tc_future *a = bfx_submit(h, "a");
    tc_future *a2 = bfx_submit(h, "a");
    tc_future *b = bfx_submit(h, "b");
    tc_future *c = bfx_submit(h, "c");
    tc_batch *first = bfx_take_held(h);
    tc_future *d = bfx_submit(h, "d"); /* the next batch */
    tc_batcher_flush(h->b);
    tc_batch *second = bfx_take_held(h);

    tc_batch_fail(first, TC_EHTTP, "upstream answered 500");
    tc_future *failed[] = {a, a2, b, c};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(tc_future_state_of(failed[i]), TC_FUTURE_REJECTED);
        assert_int_equal(tc_future_error(failed[i]), TC_EHTTP);
        assert_string_equal(tc_future_message(failed[i]), "upstream answered 500");
        tc_future_unref(failed[i]);
    }
    assert_false(tc_future_done(d)); /* the other batch is not touched */
    bfx_answer(second);
    bfx_assert_value(d, "v:d");
    tc_future_unref(d);
    tc_batcher_stats st = bfx_stats(h);
    assert_int_equal(st.batches_failed, 1);
    assert_int_equal(st.keys_missing, 0);
    assert_int_equal(st.in_flight, 0);
}

static void test_failure_after_partial_resolution(void **state)
{
    harness *h = *state;
    tc_future *a = bfx_submit(h, "a");
    tc_future *b = bfx_submit(h, "b");
    tc_batcher_flush(h->b);
    tc_batch *batch = bfx_take_held(h);
    tc_batch_resolve_bytes(batch, 0, "A", 1);
    tc_batch_fail(batch, TC_ECONNRESET, NULL);
    bfx_assert_value(a, "A"); /* already answered: stays answered */
    assert_int_equal(tc_future_error(b), TC_ECONNRESET);
    assert_string_equal(tc_future_message(b), tc_strerror(TC_ECONNRESET));
    tc_future_unref(a);
    tc_future_unref(b);
}

static void test_cancel_one_waiter(void **state)
{
    harness *h = *state;
    tc_future *a1 = bfx_submit(h, "a");
    tc_future *a2 = bfx_submit(h, "a");
    tc_future *b = bfx_submit(h, "b");
    tc_future *gone = bfx_submit(h, "gone");
    assert_int_equal(h->dispatches, 1); /* a, b, gone */
    tc_batch *batch = bfx_take_held(h);
    /* Before dispatch: a key whose only waiter left is not sent. */
    tc_future *x = bfx_submit(h, "x");
    tc_future *y = bfx_submit(h, "y");
    assert_int_equal(tc_future_cancel(x), 1);
    tc_batcher_flush(h->b);
    assert_string_equal(h->keys_seen, "a,b,gone;y;");
    tc_batch *second = bfx_take_held(h);

    /* After dispatch: the waiter leaves, the batch goes on for the others. */
    assert_int_equal(tc_future_cancel(a1), 1);
    assert_int_equal(tc_future_cancel(gone), 1);
    assert_int_equal(tc_batch_waiters(batch, 0), 1);
    assert_int_equal(tc_batch_waiters(batch, 2), 0);
    bfx_answer(batch);
    assert_int_equal(tc_future_state_of(a1), TC_FUTURE_CANCELLED);
    assert_int_equal(tc_future_state_of(gone), TC_FUTURE_CANCELLED);
    bfx_assert_value(a2, "v:a");
    bfx_assert_value(b, "v:b");
    bfx_answer(second);
    bfx_assert_value(y, "v:y");
    assert_int_equal(bfx_stats(h).waiters_left, 3);

    /* A batch whose every waiter left is never dispatched at all. */
    tc_future *z = bfx_submit(h, "z");
    tc_future_cancel(z);
    tc_batcher_flush(h->b);
    assert_int_equal(h->dispatches, 2);
    assert_int_equal(bfx_stats(h).batches_dropped, 1);

    tc_future *all[] = {a1, a2, b, gone, x, y, z};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        tc_future_unref(all[i]);
}

int main(void)
{
    alarm(120); /* watchdog: a hung loop fails the test instead of blocking CI */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_config_and_arguments, bfx_setup, bfx_teardown),
        cmocka_unit_test_setup_teardown(test_size_trigger, bfx_setup, bfx_teardown),
        cmocka_unit_test_setup_teardown(test_defaults_50_keys_or_10_ms, setup_defaults,
                                        bfx_teardown),
        cmocka_unit_test_setup_teardown(test_time_trigger, setup_wait_40, bfx_teardown),
        cmocka_unit_test_setup_teardown(test_dedup_shares_one_value, bfx_setup, bfx_teardown),
        cmocka_unit_test_setup_teardown(test_per_key_errors_and_missing, bfx_setup, bfx_teardown),
        cmocka_unit_test_setup_teardown(test_whole_batch_failure, bfx_setup, bfx_teardown),
        cmocka_unit_test_setup_teardown(test_failure_after_partial_resolution, bfx_setup,
                                        bfx_teardown),
        cmocka_unit_test_setup_teardown(test_cancel_one_waiter, bfx_setup, bfx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
