/*
 * Unit tests for src/core/future.c: the future state machine, its reference counting and callback
 * rules, and cancellation.
 */
#include "future_fixture.h"

/* ---- the future itself ---------------------------------------------------------------------- */

static void test_fulfill_value_and_release(void **state)
{
    int freed = 0;
    tc_future *f = ffx_fut_new();
    assert_int_equal(tc_future_state_of(f), TC_FUTURE_PENDING);
    assert_int_equal(tc_future_done(f), 0);
    assert_null(tc_future_value(f));
    assert_string_equal(tc_future_message(f), "");
    assert_int_equal(tc_future_fulfill(f, ffx_box_new(7, &freed), ffx_box_free), 0);
    assert_int_equal(tc_future_state_of(f), TC_FUTURE_FULFILLED);
    assert_int_equal(tc_future_done(f), 1);
    assert_int_equal(ffx_box_value(f), 7);
    assert_int_equal(tc_future_error(f), 0);
    assert_string_equal(tc_future_message(f), "");
    /* a second completion is refused and its value released at once */
    assert_int_equal(tc_future_fulfill(f, ffx_box_new(8, &freed), ffx_box_free), TC_EINVAL);
    assert_int_equal(freed, 1);
    assert_int_equal(tc_future_reject(f, TC_EIO, "late"), TC_EINVAL);
    assert_int_equal(tc_future_cancel(f), 0);
    assert_int_equal(tc_future_state_of(f), TC_FUTURE_FULFILLED);
    assert_int_equal(ffx_box_value(f), 7);
    tc_future_ref(f);
    tc_future_unref(f);
    assert_int_equal(freed, 1);
    tc_future_unref(f);
    assert_int_equal(freed, 2);
    tc_future_unref(NULL);
}

static void test_reject_messages(void **state)
{
    tc_future *f = ffx_fut_new();
    assert_int_equal(tc_future_reject(f, TC_ECONNRESET, "peer hung up"), 0);
    assert_int_equal(tc_future_state_of(f), TC_FUTURE_REJECTED);
    assert_int_equal(tc_future_error(f), TC_ECONNRESET);
    assert_string_equal(tc_future_message(f), "peer hung up");
    assert_null(tc_future_value(f));
    int freed = 0;
    assert_int_equal(tc_future_fulfill(f, ffx_box_new(1, &freed), ffx_box_free), TC_EINVAL);
    assert_int_equal(freed, 1);
    tc_future_unref(f);

    f = ffx_fut_new();
    assert_int_equal(tc_future_reject(f, TC_ETIMEDOUT, NULL), 0);
    assert_string_equal(tc_future_message(f), tc_strerror(TC_ETIMEDOUT));
    tc_future_unref(f);

    /* the message is copied: the caller's buffer may change afterwards */
    char buf[32];
    strcpy(buf, "original");
    f = ffx_fut_new();
    assert_int_equal(tc_future_reject(f, TC_EIO, buf), 0);
    strcpy(buf, "changed");
    assert_string_equal(tc_future_message(f), "original");
    tc_future_unref(f);

    /* long messages are truncated to 511 bytes */
    char *big = malloc(4000);
    assert_non_null(big);
    memset(big, 'x', 3999);
    big[3999] = '\0';
    f = ffx_fut_new();
    assert_int_equal(tc_future_reject(f, TC_EPROTO, big), 0);
    assert_int_equal(strlen(tc_future_message(f)), 511);
    assert_memory_equal(tc_future_message(f), big, 511);
    tc_future_unref(f);
    free(big);

    /* a non-error code is reported, but the future is still rejected (with TC_EINVAL) so its
     * callbacks fire */
    rec r = {0};
    f = ffx_fut_new();
    assert_int_equal(tc_future_on_done(f, ffx_rec_cb, &r), 0);
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
    tc_future *f = ffx_fut_new();
    assert_int_equal(tc_future_reject(f, TC_EIO, msg), 0);
    assert_int_equal(strlen(tc_future_message(f)), 510);
    tc_future_unref(f);
}

static void test_invalid_arguments(void **state)
{
    uv_loop_t *loop = *state;
    tc_future *out = NULL;
    tc_future *f = ffx_fut_new();
    tc_future *arr[2] = {f, NULL};
    assert_int_equal(tc_future_new(NULL), TC_EINVAL);
    assert_int_equal(tc_future_on_done(f, NULL, NULL), TC_EINVAL);
    assert_int_equal(tc_future_off_done(f, ffx_rec_cb, NULL), TC_EINVAL);
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
    ffx_loop_drain(loop);
}

static void test_callbacks_in_order_exactly_once(void **state)
{
    int seq = 0;
    rec a = {.seq = &seq}, b = {.seq = &seq}, c = {.seq = &seq}, late = {.seq = &seq};
    tc_future *f = ffx_fut_new();
    assert_int_equal(tc_future_on_done(f, ffx_rec_cb, &a), 0);
    assert_int_equal(tc_future_on_done(f, ffx_rec_cb, &b), 0);
    assert_int_equal(tc_future_on_done(f, ffx_rec_cb, &c), 0);
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
    assert_int_equal(tc_future_on_done(f, ffx_rec_cb, &late), 0);
    assert_int_equal(late.calls, 1);
    assert_int_equal(late.state, TC_FUTURE_REJECTED);
    assert_int_equal(tc_future_cancel(f), 0);
    assert_int_equal(a.calls + b.calls + c.calls + late.calls, 4);
    /* nothing left to remove after firing */
    assert_int_equal(tc_future_off_done(f, ffx_rec_cb, &a), TC_EINVAL);
    tc_future_unref(f);
}

static void test_many_callbacks_and_removal(void **state)
{
    enum { N = 100 };
    int seq = 0;
    rec r[N];
    memset(r, 0, sizeof(r));
    tc_future *f = ffx_fut_new();
    for (int i = 0; i < N; i++) {
        r[i].seq = &seq;
        assert_int_equal(tc_future_on_done(f, ffx_rec_cb, &r[i]), 0);
    }
    /* remove every third, including inline slots */
    for (int i = 0; i < N; i += 3)
        assert_int_equal(tc_future_off_done(f, ffx_rec_cb, &r[i]), 0);
    assert_int_equal(tc_future_off_done(f, ffx_rec_cb, &r[0]), TC_EINVAL);
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
    tc_future *f = ffx_fut_new();
    assert_int_equal(tc_future_on_done(f, ffx_rec_cb, &r), 0);
    assert_int_equal(tc_future_on_done(f, ffx_rec_cb, &r), 0);
    assert_int_equal(tc_future_off_done(f, ffx_rec_cb, &r), 0); /* removes one of the two */
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
    m->rc = tc_future_off_done(f, ffx_rec_cb, m->victim);
}

static void test_off_done_during_callbacks(void **state)
{
    rec victim = {0}, after = {0};
    remover m = {.victim = &victim};
    tc_future *f = ffx_fut_new();
    assert_int_equal(tc_future_on_done(f, remover_cb, &m), 0);
    assert_int_equal(tc_future_on_done(f, ffx_rec_cb, &victim), 0);
    assert_int_equal(tc_future_on_done(f, ffx_rec_cb, &after), 0);
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
    assert_int_equal(tc_future_on_done(f, ffx_rec_cb, r), 0);
    assert_int_equal(r->calls, 1); /* fired at once: f is done */
}

static void test_on_done_inside_callback(void **state)
{
    rec added = {0};
    tc_future *f = ffx_fut_new();
    assert_int_equal(tc_future_on_done(f, adder_cb, &added), 0);
    assert_int_equal(tc_future_fulfill(f, NULL, NULL), 0);
    assert_int_equal(added.calls, 1);
    tc_future_unref(f);
}

static void test_drop_last_reference_inside_callback(void **state)
{
    int freed = 0, calls = 0;
    rec after = {0};
    tc_future *f = ffx_fut_new();
    assert_int_equal(tc_future_on_done(f, ffx_unref_cb, &calls), 0);
    assert_int_equal(tc_future_on_done(f, ffx_rec_cb, &after), 0);
    /* the caller's reference now belongs to ffx_unref_cb */
    assert_int_equal(tc_future_fulfill(f, ffx_box_new(3, &freed), ffx_box_free), 0);
    assert_int_equal(calls, 1);
    assert_int_equal(after.calls, 1); /* the later callback still ran on a live future */
    assert_int_equal(freed, 1);       /* and the future went away with its value */

    /* same, with a callback registered after completion */
    calls = 0;
    f = ffx_fut_new();
    assert_int_equal(tc_future_cancel(f), 1);
    assert_int_equal(tc_future_on_done(f, ffx_unref_cb, &calls), 0);
    assert_int_equal(calls, 1);
}

/* ---- cancellation --------------------------------------------------------------------------- */

/* A new future with the cancel hook h and the recorder r, cancelled. */
static tc_future *cancel_hooked(hook_rec *h, rec *r)
{
    tc_future *f = ffx_fut_new();
    tc_future_set_cancel_hook(f, ffx_hook_cb, h);
    assert_int_equal(tc_future_on_done(f, ffx_rec_cb, r), 0);
    assert_int_equal(tc_future_cancel(f), 1);
    return f;
}

static void test_cancel_runs_hook_then_callbacks(void **state)
{
    rec r = {0};
    hook_rec h = {.r = &r};
    tc_future *f = cancel_hooked(&h, &r);
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
    tc_future *f = ffx_fut_new();
    tc_future_set_cancel_hook(f, ffx_hook_cb, &h);
    assert_int_equal(tc_future_fulfill(f, NULL, NULL), 0);
    assert_int_equal(tc_future_cancel(f), 0);
    assert_int_equal(h.calls, 0);
    tc_future_unref(f);

    f = ffx_fut_new();
    tc_future_set_cancel_hook(f, ffx_hook_cb, &h);
    tc_future_set_cancel_hook(f, NULL, NULL);
    assert_int_equal(tc_future_cancel(f), 1);
    assert_int_equal(h.calls, 0);
    tc_future_unref(f);

    /* a later hook replaces the earlier one */
    hook_rec h2 = {0};
    f = ffx_fut_new();
    tc_future_set_cancel_hook(f, ffx_hook_cb, &h);
    tc_future_set_cancel_hook(f, ffx_hook_cb, &h2);
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
    tc_future *f = cancel_hooked(&h, &r);
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
    tc_future *f = ffx_fut_new();
    tc_future *prod = tc_future_ref(f);
    assert_int_equal(tc_future_cancel(f), 1);
    tc_future_unref(f); /* the consumer goes away */
    assert_int_equal(tc_future_fulfill(prod, ffx_box_new(1, &freed), ffx_box_free), TC_ECANCELED);
    assert_int_equal(freed, 1);
    assert_int_equal(tc_future_reject(prod, TC_EIO, "x"), TC_ECANCELED);
    assert_int_equal(tc_future_state_of(prod), TC_FUTURE_CANCELLED);
    tc_future_unref(prod);
}

static void test_hook_drops_producer_reference(void **state)
{
    /* the producer's reference is the only one: the hook drops it mid-cancel */
    rec r = {0};
    tc_future *f = ffx_fut_new();
    hook_rec h = {.producer_ref = f, .r = &r};
    tc_future *consumer = tc_future_ref(f);
    tc_future_set_cancel_hook(f, ffx_hook_cb, &h);
    assert_int_equal(tc_future_on_done(f, ffx_rec_cb, &r), 0);
    tc_future_unref(consumer); /* now only the producer holds f (and the callback) */
    assert_int_equal(tc_future_cancel(f), 1);
    assert_int_equal(h.calls, 1);
    assert_int_equal(r.calls, 1);
    /* f is gone now; LSan/ASan check that */
}

static void test_cancel_inside_done_callback(void **state)
{
    int freed = 0;
    rec ra = {0}, rb = {0};
    tc_future *a = ffx_fut_new(), *b = ffx_fut_new();
    assert_int_equal(tc_future_on_done(a, ffx_cancel_other_cb, &b), 0);
    assert_int_equal(tc_future_on_done(a, ffx_rec_cb, &ra), 0);
    assert_int_equal(tc_future_on_done(b, ffx_rec_cb, &rb), 0);
    assert_int_equal(tc_future_fulfill(a, NULL, NULL), 0);
    assert_int_equal(tc_future_state_of(b), TC_FUTURE_CANCELLED);
    assert_int_equal(rb.calls, 1);
    assert_int_equal(ra.calls, 1);
    /* the producer of b completes later: refused, value freed */
    assert_int_equal(tc_future_fulfill(b, ffx_box_new(1, &freed), ffx_box_free), TC_ECANCELED);
    assert_int_equal(freed, 1);

    /* cancelling the very future whose callback runs is a no-op */
    rec rc_ = {0};
    tc_future *c = ffx_fut_new();
    tc_future *self = c;
    assert_int_equal(tc_future_on_done(c, ffx_cancel_other_cb, &self), 0);
    assert_int_equal(tc_future_on_done(c, ffx_rec_cb, &rc_), 0);
    assert_int_equal(tc_future_reject(c, TC_EIO, NULL), 0);
    assert_int_equal(tc_future_state_of(c), TC_FUTURE_REJECTED);
    assert_int_equal(rc_.calls, 1);
    tc_future_unref(a);
    tc_future_unref(b);
    tc_future_unref(c);
}

/* ---- main ----------------------------------------------------------------------------------- */

int main(void)
{
    alarm(120); /* watchdog: a hung loop fails the test instead of blocking CI */
    const struct CMUnitTest tests[] = {
        FFX_LOOP_TEST(test_fulfill_value_and_release),
        FFX_LOOP_TEST(test_reject_messages),
        FFX_LOOP_TEST(test_truncation_keeps_utf8_whole),
        FFX_LOOP_TEST(test_invalid_arguments),
        FFX_LOOP_TEST(test_callbacks_in_order_exactly_once),
        FFX_LOOP_TEST(test_many_callbacks_and_removal),
        FFX_LOOP_TEST(test_same_callback_registered_twice),
        FFX_LOOP_TEST(test_off_done_during_callbacks),
        FFX_LOOP_TEST(test_on_done_inside_callback),
        FFX_LOOP_TEST(test_drop_last_reference_inside_callback),
        FFX_LOOP_TEST(test_cancel_runs_hook_then_callbacks),
        FFX_LOOP_TEST(test_hook_not_called_when_completed_or_removed),
        FFX_LOOP_TEST(test_complete_inside_cancel_hook),
        FFX_LOOP_TEST(test_complete_after_cancel),
        FFX_LOOP_TEST(test_hook_drops_producer_reference),
        FFX_LOOP_TEST(test_cancel_inside_done_callback),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
