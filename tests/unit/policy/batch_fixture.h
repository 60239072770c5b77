/*
 * Shared fixture of the tests of src/policy/batch.c (test_batch_*.c): a harness with its own uv
 * loop, a dispatcher that holds the batches it receives (so the test decides when and how each one
 * ends) or answers synchronously inside dispatch, and values counted on release.
 *
 * Every test owns a uv loop and ends by running it to completion and checking
 * uv_loop_close() == 0. Values are counted on release, so a value freed twice or never is caught
 * besides ASan/LSan.
 */
#ifndef TC_TEST_BATCH_FIXTURE_H
#define TC_TEST_BATCH_FIXTURE_H
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
static inline void note_keys(harness *h, tc_batch *batch)
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
static inline void resolve_all(tc_batch *batch)
{
    for (size_t i = 0; i < tc_batch_size(batch); i++) {
        size_t len;
        const char *k = tc_batch_key(batch, i, &len);
        char buf[256];
        int n = snprintf(buf, sizeof(buf), "v:%s", k);
        assert_int_equal(tc_batch_resolve_bytes(batch, i, buf, (size_t)n), 0);
    }
}

static inline void dispatch(tc_batch *batch, void *data)
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
static inline tc_batch *take_held(harness *h)
{
    assert_true(h->nheld > 0);
    tc_batch *batch = h->held[0];
    memmove(h->held, h->held + 1, (h->nheld - 1) * sizeof(h->held[0]));
    h->nheld--;
    return batch;
}

static inline void on_closed(tc_batcher *b, void *data)
{
    harness *h = data;
    h->closed++;
}

static inline int setup_with(void **state, size_t max_batch, uint64_t max_wait_ms,
                             size_t max_in_flight)
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

static inline int setup(void **state)
{
    return setup_with(state, 3, 10000, 16);
}

/* Closes the batcher (finishing any held batch as failed), runs the loop dry, and checks that
 * the close callback ran once and the loop closes. */
static inline int teardown(void **state)
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

static inline tc_future *submit(harness *h, const char *key)
{
    tc_future *f = NULL;
    assert_int_equal(tc_batcher_submit(&f, h->b, key, strlen(key)), 0);
    assert_non_null(f);
    return f;
}

static inline const tc_batch_bytes *bytes_of(const tc_future *f)
{
    assert_int_equal(tc_future_state_of(f), TC_FUTURE_FULFILLED);
    const tc_batch_bytes *v = tc_future_value(f);
    assert_non_null(v);
    assert_int_equal(v->data[v->len], '\0');
    return v;
}

static inline void assert_value(const tc_future *f, const char *want)
{
    assert_string_equal(bytes_of(f)->data, want);
}

static inline tc_batcher_stats stats(const harness *h)
{
    tc_batcher_stats st;
    tc_batcher_get_stats(h->b, &st);
    return st;
}

/* Runs the loop for about ms milliseconds (the batcher's timers run meanwhile). */
static inline void run_for(harness *h, uint64_t ms)
{
    tc_future *s = NULL;
    assert_int_equal(tc_sleep(&s, &h->loop, ms), 0);
    while (!tc_future_done(s))
        uv_run(&h->loop, UV_RUN_ONCE);
    tc_future_unref(s);
}

#endif /* TC_TEST_BATCH_FIXTURE_H */
