/*
 * Unit tests for src/policy/batch.c: callbacks that re-enter the batcher, and 100,000 keys without
 * a leak. The harness is batch_fixture.h.
 */
#include "batch_fixture.h"

/* ---- re-entrancy ---------------------------------------------------------------------------- */

typedef struct reentry {
    harness *h;
    tc_future *sibling;
    tc_future *spawned;
    int fired;
} reentry;

/* On the first answer: cancel a sibling waiter of the same key and submit a new key. */
static void on_reentrant_done(tc_future *f, void *data)
{
    reentry *r = data;
    r->fired++;
    if (r->sibling != NULL)
        tc_future_cancel(r->sibling);
    if (r->spawned == NULL)
        assert_int_equal(tc_batcher_submit(&r->spawned, r->h->b, "spawned", 7), 0);
}

static void test_callbacks_reenter(void **state)
{
    harness *h = *state; /* max_batch 3 */
    h->mode = RESOLVE_NOW;
    tc_future *a1 = bfx_submit(h, "a");
    tc_future *a2 = bfx_submit(h, "a");
    tc_future *a3 = bfx_submit(h, "a");
    reentry r = {h, a2, NULL, 0};
    assert_int_equal(tc_future_on_done(a1, on_reentrant_done, &r), 0);
    tc_future *b = bfx_submit(h, "b");
    tc_future *c = bfx_submit(h, "c"); /* full: dispatched and resolved inside this submit */
    assert_int_equal(tc_future_state_of(c), TC_FUTURE_FULFILLED);
    assert_int_equal(r.fired, 1);
    bfx_assert_value(a1, "v:a");
    assert_int_equal(tc_future_state_of(a2), TC_FUTURE_CANCELLED);
    bfx_assert_value(a3, "v:a");
    bfx_assert_value(b, "v:b");
    assert_non_null(r.spawned);
    assert_false(tc_future_done(r.spawned));
    tc_batcher_flush(h->b);
    bfx_assert_value(r.spawned, "v:spawned");
    tc_future *all[] = {a1, a2, a3, b, c, r.spawned};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        tc_future_unref(all[i]);
}

static void close_in_callback(tc_future *f, void *data)
{
    harness *h = data;
    tc_batcher_close(h->b, bfx_on_closed, h);
}

static void test_close_from_waiter_callback(void **state)
{
    harness *h = *state;
    h->mode = RESOLVE_NOW;
    tc_future *a = bfx_submit(h, "a");
    tc_future *b = bfx_submit(h, "b");
    assert_int_equal(tc_future_on_done(a, close_in_callback, h), 0);
    tc_future *c = bfx_submit(h, "c"); /* resolves a -> closes the batcher mid-batch */
    tc_future *d = NULL;
    assert_int_equal(tc_batcher_submit(&d, h->b, "d", 1), TC_ECLOSED);
    bfx_assert_value(b, "v:b");
    bfx_assert_value(c, "v:c");
    uv_run(&h->loop, UV_RUN_DEFAULT);
    assert_int_equal(h->closed, 1);
    h->b = NULL;
    tc_future_unref(a);
    tc_future_unref(b);
    tc_future_unref(c);
}

/* ---- volume --------------------------------------------------------------------------------- */

#define VOLUME 100000

typedef struct volume {
    size_t ok;
    size_t bad;
} volume;

static void on_volume_done(tc_future *f, void *data)
{
    volume *v = data;
    const tc_batch_bytes *val = tc_future_value(f);
    if (val != NULL && val->len > 2 && memcmp(val->data, "v:", 2) == 0)
        v->ok++;
    else
        v->bad++;
    tc_future_unref(f); /* the caller's reference: the future goes with its callback */
}

static int setup_volume(void **state)
{
    return bfx_setup_with(state, 50, 5, 4);
}

static void test_100k_keys_no_leak(void **state)
{
    harness *h = *state;
    volume v = {0, 0};
    char key[32];
    /* Half are answered inside submit (synchronous dispatcher), half by the loop's timers and
     * held batches; every 10th key repeats the one before it. */
    for (int round = 0; round < 2; round++) {
        h->mode = round == 0 ? RESOLVE_NOW : HOLD;
        for (int i = 0; i < VOLUME / 2; i++) {
            int id = round * VOLUME + (i % 10 == 9 ? i - 1 : i);
            snprintf(key, sizeof(key), "key-%d", id);
            tc_future *f = NULL;
            assert_int_equal(tc_batcher_submit(&f, h->b, key, strlen(key)), 0);
            assert_int_equal(tc_future_on_done(f, on_volume_done, &v), 0);
            if (h->mode == HOLD && h->nheld == 4)
                bfx_answer_held(h);
        }
        tc_batcher_flush(h->b);
        bfx_answer_held(h);
        uv_run(&h->loop, UV_RUN_NOWAIT);
    }
    assert_int_equal(v.ok, VOLUME);
    assert_int_equal(v.bad, 0);
    tc_batcher_stats st = bfx_stats(h);
    assert_int_equal(st.submitted, VOLUME);
    assert_int_equal(st.dedup_hits + st.keys_sent, VOLUME);
    /* Every 10th key repeats the one before, which is in the same batch unless that one filled
     * its batch: at most one lost hit per batch sent. */
    assert_true(st.dedup_hits <= VOLUME / 10);
    assert_true(st.dedup_hits + st.batches_sent >= VOLUME / 10);
    assert_int_equal(st.in_flight, 0);
    assert_int_equal(st.queued, 0);
    assert_true(st.largest_batch <= 50);
}

int main(void)
{
    alarm(120); /* watchdog: a hung loop fails the test instead of blocking CI */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_callbacks_reenter, bfx_setup, bfx_teardown),
        cmocka_unit_test_setup_teardown(test_close_from_waiter_callback, bfx_setup, bfx_teardown),
        cmocka_unit_test_setup_teardown(test_100k_keys_no_leak, setup_volume, bfx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
