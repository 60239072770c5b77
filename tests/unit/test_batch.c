/*
 * Unit tests for src/batch.c: what triggers a batch (size, time, flush), deduplication, per-key
 * results and errors, whole-batch failure, waiters that leave, the in-flight cap and its queue,
 * closing, re-entrant callbacks, and 100,000 keys without a leak.
 *
 * Every test owns a uv loop and ends by running it to completion and checking
 * uv_loop_close() == 0. The dispatcher under test either holds the batches it receives (so the
 * test decides when and how each one ends) or answers synchronously inside dispatch. Values are
 * counted on release, so a value freed twice or never is caught besides ASan/LSan.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include <uv.h>

#include "tailcut/batch.h"
#include "tailcut/future.h"

/* ---- harness -------------------------------------------------------------------------------- */

#define MAX_HELD 64
#define MAX_KEYS_SEEN 4096

enum mode { HOLD = 0, RESOLVE_NOW, FAIL_NOW };

typedef struct harness {
    uv_loop_t loop;
    tc_batcher *b;
    enum mode mode;
    tc_batch *held[MAX_HELD];
    size_t nheld;
    size_t dispatches;
    size_t sizes[MAX_HELD]; /* size of each dispatch, while fewer than MAX_HELD */
    char keys_seen[MAX_KEYS_SEEN];
    size_t keys_seen_len;
    uint64_t first_dispatch_ns;
    int closed;
} harness;

/* Appends "k1,k2,...;" for each dispatch, so tests can compare what was sent. */
static void note_keys(harness *h, tc_batch *batch)
{
    for (size_t i = 0; i < tc_batch_size(batch); i++) {
        size_t len = 0;
        const char *k = tc_batch_key(batch, i, &len);
        assert_non_null(k);
        assert_int_equal(strlen(k), len);
        if (h->keys_seen_len + len + 2 < MAX_KEYS_SEEN) {
            memcpy(h->keys_seen + h->keys_seen_len, k, len);
            h->keys_seen_len += len;
            h->keys_seen[h->keys_seen_len++] = i + 1 < tc_batch_size(batch) ? ',' : ';';
            h->keys_seen[h->keys_seen_len] = '\0';
        }
    }
}

/* Resolves every key with the bytes "v:<key>". */
static void resolve_all(tc_batch *batch)
{
    for (size_t i = 0; i < tc_batch_size(batch); i++) {
        size_t len;
        const char *k = tc_batch_key(batch, i, &len);
        char buf[256];
        int n = snprintf(buf, sizeof(buf), "v:%s", k);
        assert_int_equal(tc_batch_resolve_bytes(batch, i, buf, (size_t)n), 0);
    }
}

static void dispatch(tc_batch *batch, void *data)
{
    harness *h = data;
    assert_ptr_equal(tc_batch_batcher(batch), h->b);
    assert_true(tc_batch_size(batch) > 0);
    if (h->dispatches == 0)
        h->first_dispatch_ns = uv_hrtime();
    if (h->dispatches < MAX_HELD)
        h->sizes[h->dispatches] = tc_batch_size(batch);
    h->dispatches++;
    note_keys(h, batch);
    if (h->mode == RESOLVE_NOW) {
        resolve_all(batch);
        tc_batch_done(batch);
        return;
    }
    if (h->mode == FAIL_NOW) {
        tc_batch_fail(batch, TC_ECONNREFUSED, "cannot even start");
        return;
    }
    assert_true(h->nheld < MAX_HELD);
    h->held[h->nheld++] = batch;
}

/* Removes and returns the oldest held batch. */
static tc_batch *take_held(harness *h)
{
    assert_true(h->nheld > 0);
    tc_batch *batch = h->held[0];
    memmove(h->held, h->held + 1, (h->nheld - 1) * sizeof(h->held[0]));
    h->nheld--;
    return batch;
}

static void on_closed(tc_batcher *b, void *data)
{
    harness *h = data;
    h->closed++;
}

static int setup_with(void **state, size_t max_batch, uint64_t max_wait_ms, size_t max_in_flight)
{
    harness *h = calloc(1, sizeof(*h));
    if (h == NULL || uv_loop_init(&h->loop) != 0) {
        free(h);
        return -1;
    }
    tc_batcher_config cfg;
    tc_batcher_config_init(&cfg);
    cfg.max_batch = max_batch;
    cfg.max_wait_ms = max_wait_ms;
    cfg.max_in_flight = max_in_flight;
    cfg.dispatch = dispatch;
    cfg.data = h;
    if (tc_batcher_new(&h->b, &h->loop, &cfg) != 0) {
        uv_loop_close(&h->loop);
        free(h);
        return -1;
    }
    *state = h;
    return 0;
}

static int setup(void **state)
{
    return setup_with(state, 3, 10000, 16);
}

/* Closes the batcher (finishing any held batch as failed), runs the loop dry, and checks that
 * the close callback ran once and the loop closes. */
static int teardown(void **state)
{
    harness *h = *state;
    if (h->b != NULL)
        tc_batcher_close(h->b, on_closed, h);
    while (h->nheld > 0)
        tc_batch_fail(take_held(h), TC_ECANCELED, "test over");
    int alive = uv_run(&h->loop, UV_RUN_DEFAULT);
    int closed = uv_loop_close(&h->loop);
    int ok = alive == 0 && closed == 0 && (h->b == NULL || h->closed == 1);
    if (!ok)
        print_error("teardown: uv_run=%d uv_loop_close=%d closed=%d\n", alive, closed, h->closed);
    free(h);
    return ok ? 0 : -1;
}

static tc_future *submit(harness *h, const char *key)
{
    tc_future *f = NULL;
    assert_int_equal(tc_batcher_submit(&f, h->b, key, strlen(key)), 0);
    assert_non_null(f);
    return f;
}

static const tc_batch_bytes *bytes_of(const tc_future *f)
{
    assert_int_equal(tc_future_state_of(f), TC_FUTURE_FULFILLED);
    const tc_batch_bytes *v = tc_future_value(f);
    assert_non_null(v);
    assert_int_equal(v->data[v->len], '\0');
    return v;
}

static void assert_value(const tc_future *f, const char *want)
{
    assert_string_equal(bytes_of(f)->data, want);
}

static tc_batcher_stats stats(const harness *h)
{
    tc_batcher_stats st;
    tc_batcher_get_stats(h->b, &st);
    return st;
}

/* Runs the loop for about ms milliseconds (the batcher's timers run meanwhile). */
static void run_for(harness *h, uint64_t ms)
{
    tc_future *s = NULL;
    assert_int_equal(tc_sleep(&s, &h->loop, ms), 0);
    while (!tc_future_done(s))
        uv_run(&h->loop, UV_RUN_ONCE);
    tc_future_unref(s);
}

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
    cfg.dispatch = dispatch;
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
    assert_int_equal(stats(h).submitted, 0);
    /* The longest key is fine, and the empty key is a key like any other. */
    assert_int_equal(tc_batcher_submit(&f, h->b, big, sizeof(big) - 1), 0);
    tc_future *e = NULL;
    assert_int_equal(tc_batcher_submit(&e, h->b, "", 0), 0);
    tc_batcher_flush(h->b);
    assert_int_equal(h->dispatches, 1);
    tc_batch *batch = take_held(h);
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
        f[i] = submit(h, keys[i]);
        /* A full batch goes out inside the submit that filled it. */
        assert_int_equal(h->dispatches, (size_t)(i + 1) / 3);
    }
    assert_string_equal(h->keys_seen, "a,b,c;d,e,f;");
    tc_batcher_stats st = stats(h);
    assert_int_equal(st.batches_full, 2);
    assert_int_equal(st.batches_sent, 2);
    assert_int_equal(st.in_flight, 2);
    assert_int_equal(st.collecting, 1);
    /* The 7th key's batch is not sent by the loop turning: its 10 s wait has not passed. */
    run_for(h, 30);
    assert_int_equal(h->dispatches, 2);
    tc_batcher_flush(h->b);
    assert_string_equal(h->keys_seen, "a,b,c;d,e,f;g;");

    while (h->nheld > 0) {
        tc_batch *batch = take_held(h);
        assert_int_equal(tc_batch_waiters(batch, 0), 1);
        resolve_all(batch);
        tc_batch_done(batch);
    }
    for (int i = 0; i < 7; i++) {
        char want[8];
        snprintf(want, sizeof(want), "v:%s", keys[i]);
        assert_value(f[i], want);
        tc_future_unref(f[i]);
    }
    st = stats(h);
    assert_int_equal(st.keys_sent, 7);
    assert_int_equal(st.largest_batch, 3);
    assert_int_equal(st.in_flight, 0);
    assert_int_equal(st.batches_failed, 0);
    assert_int_equal(st.keys_missing, 0);
}

static int setup_defaults(void **state)
{
    return setup_with(state, 50, 10, 16);
}

/* The defaults: 50 distinct keys make a batch at once; fewer go out after 10 ms. */
static void test_defaults_50_keys_or_10_ms(void **state)
{
    harness *h = *state;
    tc_future *f[120];
    char key[16];
    for (int i = 0; i < 120; i++) {
        snprintf(key, sizeof(key), "id%d", i);
        f[i] = submit(h, key);
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
    while (h->nheld > 0) {
        tc_batch *batch = take_held(h);
        resolve_all(batch);
        tc_batch_done(batch);
    }
    for (int i = 0; i < 120; i++) {
        snprintf(key, sizeof(key), "v:id%d", i);
        assert_value(f[i], key);
        tc_future_unref(f[i]);
    }
    assert_int_equal(stats(h).batches_timed, 1);
}

static int setup_wait_40(void **state)
{
    return setup_with(state, 50, 40, 16);
}

static void test_time_trigger(void **state)
{
    harness *h = *state; /* max_wait 40 ms */
    uint64_t t0 = uv_hrtime();
    tc_future *a = submit(h, "a");
    run_for(h, 15);
    tc_future *b = submit(h, "b"); /* joins the batch: the clock started at "a" */
    assert_int_equal(h->dispatches, 0);
    while (h->dispatches == 0)
        uv_run(&h->loop, UV_RUN_ONCE);
    double waited_ms = (double)(h->first_dispatch_ns - t0) / 1e6;
    assert_true(waited_ms >= 38.0);
    assert_true(waited_ms < 3000.0);
    assert_string_equal(h->keys_seen, "a,b;");
    tc_batch *batch = take_held(h);
    assert_true(tc_batch_wait_ms(batch) >= 38.0);
    assert_true(tc_batch_wait_ms(batch) <= waited_ms + 1.0);
    resolve_all(batch);
    tc_batch_done(batch);
    assert_value(a, "v:a");
    assert_value(b, "v:b");
    tc_future_unref(a);
    tc_future_unref(b);
    tc_batcher_stats st = stats(h);
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
    tc_future *a1 = submit(h, "a");
    tc_future *b1 = submit(h, "b");
    tc_future *a2 = submit(h, "a");
    tc_future *a3 = submit(h, "a");
    assert_int_equal(h->dispatches, 0); /* duplicates do not fill the batch */
    tc_future *c1 = submit(h, "c");
    assert_int_equal(h->dispatches, 1);
    assert_string_equal(h->keys_seen, "a,b,c;");
    tc_batcher_stats st = stats(h);
    assert_int_equal(st.submitted, 5);
    assert_int_equal(st.dedup_hits, 2);
    assert_int_equal(st.keys_sent, 3);

    tc_batch *batch = take_held(h);
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
    assert_value(b1, "B");
    assert_value(c1, "C");

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
    tc_future *a4 = submit(h, "a");
    tc_batcher_flush(h->b);
    assert_string_equal(h->keys_seen, "a,b,c;a;");
    batch = take_held(h);
    tc_batch_resolve_bytes(batch, 0, "again", 5);
    tc_batch_done(batch);
    assert_value(a4, "again");
    tc_future_unref(a4);
}

static void test_per_key_errors_and_missing(void **state)
{
    harness *h = *state;
    tc_future *a = submit(h, "a");
    tc_future *b = submit(h, "b");
    tc_future *b2 = submit(h, "b");
    tc_future *c = submit(h, "c");
    tc_batch *batch = take_held(h);
    assert_int_equal(tc_batch_reject_key(batch, 1, TC_EHTTP, "b is forbidden"), 0);
    assert_int_equal(tc_future_error(b), TC_EHTTP);
    assert_string_equal(tc_future_message(b), "b is forbidden");
    assert_int_equal(tc_future_error(b2), TC_EHTTP);
    assert_int_equal(tc_batch_resolve_bytes(batch, 2, "{\"c\":1}", 7), 0);
    tc_batch_done(batch); /* "a" was never resolved */
    assert_int_equal(tc_future_state_of(a), TC_FUTURE_REJECTED);
    assert_int_equal(tc_future_error(a), TC_EMISSING);
    assert_non_null(strstr(tc_future_message(a), "missing"));
    assert_value(c, "{\"c\":1}");
    tc_batcher_stats st = stats(h);
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
    tc_future *a = submit(h, "a");
    tc_future *a2 = submit(h, "a");
    tc_future *b = submit(h, "b");
    tc_future *c = submit(h, "c");
    tc_batch *first = take_held(h);
    tc_future *d = submit(h, "d"); /* the next batch */
    tc_batcher_flush(h->b);
    tc_batch *second = take_held(h);

    tc_batch_fail(first, TC_EHTTP, "upstream answered 500");
    tc_future *failed[] = {a, a2, b, c};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(tc_future_state_of(failed[i]), TC_FUTURE_REJECTED);
        assert_int_equal(tc_future_error(failed[i]), TC_EHTTP);
        assert_string_equal(tc_future_message(failed[i]), "upstream answered 500");
        tc_future_unref(failed[i]);
    }
    assert_false(tc_future_done(d)); /* the other batch is not touched */
    resolve_all(second);
    tc_batch_done(second);
    assert_value(d, "v:d");
    tc_future_unref(d);
    tc_batcher_stats st = stats(h);
    assert_int_equal(st.batches_failed, 1);
    assert_int_equal(st.keys_missing, 0);
    assert_int_equal(st.in_flight, 0);
}

static void test_failure_after_partial_resolution(void **state)
{
    harness *h = *state;
    tc_future *a = submit(h, "a");
    tc_future *b = submit(h, "b");
    tc_batcher_flush(h->b);
    tc_batch *batch = take_held(h);
    tc_batch_resolve_bytes(batch, 0, "A", 1);
    tc_batch_fail(batch, TC_ECONNRESET, NULL);
    assert_value(a, "A"); /* already answered: stays answered */
    assert_int_equal(tc_future_error(b), TC_ECONNRESET);
    assert_string_equal(tc_future_message(b), tc_strerror(TC_ECONNRESET));
    tc_future_unref(a);
    tc_future_unref(b);
}

static void test_cancel_one_waiter(void **state)
{
    harness *h = *state;
    tc_future *a1 = submit(h, "a");
    tc_future *a2 = submit(h, "a");
    tc_future *b = submit(h, "b");
    tc_future *gone = submit(h, "gone");
    assert_int_equal(h->dispatches, 1); /* a, b, gone */
    tc_batch *batch = take_held(h);
    /* Before dispatch: a key whose only waiter left is not sent. */
    tc_future *x = submit(h, "x");
    tc_future *y = submit(h, "y");
    assert_int_equal(tc_future_cancel(x), 1);
    tc_batcher_flush(h->b);
    assert_string_equal(h->keys_seen, "a,b,gone;y;");
    tc_batch *second = take_held(h);

    /* After dispatch: the waiter leaves, the batch goes on for the others. */
    assert_int_equal(tc_future_cancel(a1), 1);
    assert_int_equal(tc_future_cancel(gone), 1);
    assert_int_equal(tc_batch_waiters(batch, 0), 1);
    assert_int_equal(tc_batch_waiters(batch, 2), 0);
    resolve_all(batch);
    tc_batch_done(batch);
    assert_int_equal(tc_future_state_of(a1), TC_FUTURE_CANCELLED);
    assert_int_equal(tc_future_state_of(gone), TC_FUTURE_CANCELLED);
    assert_value(a2, "v:a");
    assert_value(b, "v:b");
    resolve_all(second);
    tc_batch_done(second);
    assert_value(y, "v:y");
    assert_int_equal(stats(h).waiters_left, 3);

    /* A batch whose every waiter left is never dispatched at all. */
    tc_future *z = submit(h, "z");
    tc_future_cancel(z);
    tc_batcher_flush(h->b);
    assert_int_equal(h->dispatches, 2);
    assert_int_equal(stats(h).batches_dropped, 1);

    tc_future *all[] = {a1, a2, b, gone, x, y, z};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        tc_future_unref(all[i]);
}

static int setup_cap(void **state)
{
    return setup_with(state, 1, 10000, 2); /* every key is a batch; two out at once */
}

static void test_in_flight_cap_queues_fifo(void **state)
{
    harness *h = *state;
    tc_future *f[5];
    const char *keys[5] = {"k0", "k1", "k2", "k3", "k4"};
    for (int i = 0; i < 5; i++)
        f[i] = submit(h, keys[i]);
    assert_int_equal(h->dispatches, 2);
    tc_batcher_stats st = stats(h);
    assert_int_equal(st.in_flight, 2);
    assert_int_equal(st.queued, 3);
    assert_int_equal(st.batches_queued, 3);

    /* Finishing one lets exactly one queued batch out, oldest first. */
    tc_batch *b0 = take_held(h);
    resolve_all(b0);
    tc_batch_done(b0);
    assert_int_equal(h->dispatches, 3);
    assert_string_equal(h->keys_seen, "k0;k1;k2;");
    tc_batch_fail(take_held(h), TC_EIO, "k1 failed"); /* a failure frees a slot too */
    assert_int_equal(h->dispatches, 4);
    while (h->nheld > 0) {
        tc_batch *batch = take_held(h);
        resolve_all(batch);
        tc_batch_done(batch);
    }
    assert_string_equal(h->keys_seen, "k0;k1;k2;k3;k4;");
    assert_value(f[0], "v:k0");
    assert_int_equal(tc_future_error(f[1]), TC_EIO);
    for (int i = 2; i < 5; i++) {
        char want[8];
        snprintf(want, sizeof(want), "v:%s", keys[i]);
        assert_value(f[i], want);
    }
    for (int i = 0; i < 5; i++)
        tc_future_unref(f[i]);
    st = stats(h);
    assert_int_equal(st.queued, 0);
    assert_int_equal(st.in_flight, 0);
}

/* Time spent queued behind the cap counts toward the caller's own timeout. */
static void test_queued_time_counts_toward_timeout(void **state)
{
    harness *h = *state; /* max_batch 1, cap 2 */
    tc_future *busy0 = submit(h, "busy0");
    tc_future *busy1 = submit(h, "busy1");
    assert_int_equal(h->dispatches, 2);

    uint64_t t0 = uv_hrtime();
    tc_future *inner = submit(h, "late"); /* queued */
    tc_future *keep = submit(h, "kept");  /* queued, no timeout */
    assert_int_equal(stats(h).queued, 2);
    tc_future *timed = NULL;
    assert_int_equal(tc_with_timeout(&timed, &h->loop, inner, 50), 0);
    while (!tc_future_done(timed))
        uv_run(&h->loop, UV_RUN_ONCE);
    double waited_ms = (double)(uv_hrtime() - t0) / 1e6;
    assert_int_equal(tc_future_error(timed), TC_ETIMEDOUT);
    assert_int_equal(tc_future_state_of(inner), TC_FUTURE_CANCELLED);
    assert_true(waited_ms >= 48.0 && waited_ms < 3000.0);
    /* Its batch had nobody left: dropped from the queue, never dispatched. */
    tc_batcher_stats st = stats(h);
    assert_int_equal(st.queued, 1);
    assert_int_equal(st.batches_dropped, 1);
    assert_int_equal(st.waiters_left, 1);

    tc_batch *b0 = take_held(h);
    resolve_all(b0);
    tc_batch_done(b0);
    assert_string_equal(h->keys_seen, "busy0;busy1;kept;");
    while (h->nheld > 0) {
        tc_batch *batch = take_held(h);
        resolve_all(batch);
        tc_batch_done(batch);
    }
    assert_value(keep, "v:kept");
    assert_value(busy1, "v:busy1");
    tc_future *all[] = {busy0, busy1, inner, keep, timed};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        tc_future_unref(all[i]);
}

static int setup_small_queue(void **state)
{
    int rc = setup_with(state, 1, 10000, 1);
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
        cfg.dispatch = dispatch;
        cfg.data = h;
        rc = tc_batcher_new(&h->b, &h->loop, &cfg);
    }
    return rc;
}

static void test_queue_limit_says_busy(void **state)
{
    harness *h = *state;
    tc_future *f[3];
    f[0] = submit(h, "a"); /* out */
    f[1] = submit(h, "b"); /* queued */
    f[2] = submit(h, "c"); /* queued */
    tc_future *no = NULL;
    assert_int_equal(tc_batcher_submit(&no, h->b, "d", 1), TC_EBUSY);
    assert_null(no);
    while (h->nheld > 0) {
        tc_batch *batch = take_held(h);
        resolve_all(batch);
        tc_batch_done(batch);
    }
    for (int i = 0; i < 3; i++) {
        assert_int_equal(tc_future_state_of(f[i]), TC_FUTURE_FULFILLED);
        tc_future_unref(f[i]);
    }
}

static void test_close_cancels_unsent_and_waits_for_out(void **state)
{
    harness *h = *state; /* max_batch 3, cap 16 */
    tc_future *out[3] = {submit(h, "a"), submit(h, "b"), submit(h, "c")};
    tc_future *pending = submit(h, "d");
    tc_batch *batch = take_held(h);
    tc_batcher_close(h->b, on_closed, h);
    assert_int_equal(tc_future_state_of(pending), TC_FUTURE_CANCELLED);
    tc_future *no = NULL;
    assert_int_equal(tc_batcher_submit(&no, h->b, "e", 1), TC_ECLOSED);
    tc_batcher_close(h->b, on_closed, h); /* again: nothing */
    /* The batch that is out is still the dispatcher's; the close waits for it. */
    uv_run(&h->loop, UV_RUN_NOWAIT);
    assert_int_equal(h->closed, 0);
    resolve_all(batch);
    tc_batch_done(batch);
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
    return setup_with(state, 50, 0, 0); /* next loop iteration; no in-flight cap */
}

static void test_zero_wait_goes_next_iteration_and_no_cap(void **state)
{
    harness *h = *state;
    tc_future *a = submit(h, "a");
    tc_future *b = submit(h, "b");
    assert_int_equal(h->dispatches, 0); /* never inside submit when not full */
    uv_run(&h->loop, UV_RUN_NOWAIT);
    assert_int_equal(h->dispatches, 1);
    assert_string_equal(h->keys_seen, "a,b;");
    /* No cap: twenty batches out at once, none queued. */
    tc_future *f[20];
    char key[8];
    for (int i = 0; i < 20; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        f[i] = submit(h, key);
        tc_batcher_flush(h->b);
    }
    tc_batcher_stats st = stats(h);
    assert_int_equal(st.in_flight, 21);
    assert_int_equal(st.batches_queued, 0);
    while (h->nheld > 0) {
        tc_batch *batch = take_held(h);
        resolve_all(batch);
        tc_batch_done(batch);
    }
    assert_value(a, "v:a");
    assert_value(b, "v:b");
    for (int i = 0; i < 20; i++) {
        snprintf(key, sizeof(key), "v:k%d", i);
        assert_value(f[i], key);
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
    tc_future *a = submit(h, "a");
    tc_future *b = submit(h, "b");
    tc_future *c = submit(h, "c");
    tc_future *f[] = {a, b, c};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(tc_future_error(f[i]), TC_ECONNREFUSED);
        assert_string_equal(tc_future_message(f[i]), "cannot even start");
        tc_future_unref(f[i]);
    }
    tc_batcher_stats st = stats(h);
    assert_int_equal(st.batches_failed, 1);
    assert_int_equal(st.in_flight, 0);
    h->mode = HOLD; /* the batcher goes on */
    tc_future *d = submit(h, "d");
    tc_batcher_flush(h->b);
    tc_batch *batch = take_held(h);
    resolve_all(batch);
    tc_batch_done(batch);
    assert_value(d, "v:d");
    tc_future_unref(d);
}

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
    tc_future *a1 = submit(h, "a");
    tc_future *a2 = submit(h, "a");
    tc_future *a3 = submit(h, "a");
    reentry r = {h, a2, NULL, 0};
    assert_int_equal(tc_future_on_done(a1, on_reentrant_done, &r), 0);
    tc_future *b = submit(h, "b");
    tc_future *c = submit(h, "c"); /* full: dispatched and resolved inside this submit */
    assert_int_equal(tc_future_state_of(c), TC_FUTURE_FULFILLED);
    assert_int_equal(r.fired, 1);
    assert_value(a1, "v:a");
    assert_int_equal(tc_future_state_of(a2), TC_FUTURE_CANCELLED);
    assert_value(a3, "v:a");
    assert_value(b, "v:b");
    assert_non_null(r.spawned);
    assert_false(tc_future_done(r.spawned));
    tc_batcher_flush(h->b);
    assert_value(r.spawned, "v:spawned");
    tc_future *all[] = {a1, a2, a3, b, c, r.spawned};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        tc_future_unref(all[i]);
}

static void close_in_callback(tc_future *f, void *data)
{
    harness *h = data;
    tc_batcher_close(h->b, on_closed, h);
}

static void test_close_from_waiter_callback(void **state)
{
    harness *h = *state;
    h->mode = RESOLVE_NOW;
    tc_future *a = submit(h, "a");
    tc_future *b = submit(h, "b");
    assert_int_equal(tc_future_on_done(a, close_in_callback, h), 0);
    tc_future *c = submit(h, "c"); /* resolves a -> closes the batcher mid-batch */
    tc_future *d = NULL;
    assert_int_equal(tc_batcher_submit(&d, h->b, "d", 1), TC_ECLOSED);
    assert_value(b, "v:b");
    assert_value(c, "v:c");
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
    return setup_with(state, 50, 5, 4);
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
            if (h->mode == HOLD && h->nheld == 4) {
                while (h->nheld > 0) {
                    tc_batch *batch = take_held(h);
                    resolve_all(batch);
                    tc_batch_done(batch);
                }
            }
        }
        tc_batcher_flush(h->b);
        while (h->nheld > 0) {
            tc_batch *batch = take_held(h);
            resolve_all(batch);
            tc_batch_done(batch);
        }
        uv_run(&h->loop, UV_RUN_NOWAIT);
    }
    assert_int_equal(v.ok, VOLUME);
    assert_int_equal(v.bad, 0);
    tc_batcher_stats st = stats(h);
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
        cmocka_unit_test_setup_teardown(test_config_and_arguments, setup, teardown),
        cmocka_unit_test_setup_teardown(test_size_trigger, setup, teardown),
        cmocka_unit_test_setup_teardown(test_defaults_50_keys_or_10_ms, setup_defaults, teardown),
        cmocka_unit_test_setup_teardown(test_time_trigger, setup_wait_40, teardown),
        cmocka_unit_test_setup_teardown(test_dedup_shares_one_value, setup, teardown),
        cmocka_unit_test_setup_teardown(test_per_key_errors_and_missing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_whole_batch_failure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failure_after_partial_resolution, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_one_waiter, setup, teardown),
        cmocka_unit_test_setup_teardown(test_in_flight_cap_queues_fifo, setup_cap, teardown),
        cmocka_unit_test_setup_teardown(test_queued_time_counts_toward_timeout, setup_cap,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_queue_limit_says_busy, setup_small_queue, teardown),
        cmocka_unit_test_setup_teardown(test_close_cancels_unsent_and_waits_for_out, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_zero_wait_goes_next_iteration_and_no_cap, setup_wait_0,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_dispatch_fails_synchronously, setup, teardown),
        cmocka_unit_test_setup_teardown(test_callbacks_reenter, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_from_waiter_callback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_100k_keys_no_leak, setup_volume, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
