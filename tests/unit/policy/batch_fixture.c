/*
 * The batcher tests' fixture (batch_fixture.h). Compiled once into the folder's fixture library;
 * only the bfx_ names are shared.
 */
#include "batch_fixture.h"

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

void bfx_answer(tc_batch *batch)
{
    for (size_t i = 0; i < tc_batch_size(batch); i++) {
        size_t len;
        const char *k = tc_batch_key(batch, i, &len);
        char buf[256];
        int n = snprintf(buf, sizeof(buf), "v:%s", k);
        assert_int_equal(tc_batch_resolve_bytes(batch, i, buf, (size_t)n), 0);
    }
    tc_batch_done(batch);
}

void bfx_dispatch(tc_batch *batch, void *data)
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
        bfx_answer(batch);
        return;
    }
    if (h->mode == FAIL_NOW) {
        tc_batch_fail(batch, TC_ECONNREFUSED, "cannot even start");
        return;
    }
    assert_true(h->nheld < MAX_HELD);
    h->held[h->nheld++] = batch;
}

tc_batch *bfx_take_held(harness *h)
{
    assert_true(h->nheld > 0);
    tc_batch *batch = h->held[0];
    memmove(h->held, h->held + 1, (h->nheld - 1) * sizeof(h->held[0]));
    h->nheld--;
    return batch;
}

void bfx_answer_held(harness *h)
{
    while (h->nheld > 0)
        bfx_answer(bfx_take_held(h));
}

void bfx_on_closed(tc_batcher *b, void *data)
{
    harness *h = data;
    h->closed++;
}

int bfx_setup_with(void **state, size_t max_batch, uint64_t max_wait_ms, size_t max_in_flight)
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
    cfg.dispatch = bfx_dispatch;
    cfg.data = h;
    if (tc_batcher_new(&h->b, &h->loop, &cfg) != 0) {
        uv_loop_close(&h->loop);
        free(h);
        return -1;
    }
    *state = h;
    return 0;
}

int bfx_setup(void **state)
{
    return bfx_setup_with(state, 3, 10000, 16);
}

int bfx_teardown(void **state)
{
    harness *h = *state;
    if (h->b != NULL)
        tc_batcher_close(h->b, bfx_on_closed, h);
    while (h->nheld > 0)
        tc_batch_fail(bfx_take_held(h), TC_ECANCELED, "test over");
    int alive = uv_run(&h->loop, UV_RUN_DEFAULT);
    int closed = uv_loop_close(&h->loop);
    int ok = alive == 0 && closed == 0 && (h->b == NULL || h->closed == 1);
    if (!ok)
        print_error("teardown: uv_run=%d uv_loop_close=%d closed=%d\n", alive, closed, h->closed);
    free(h);
    return ok ? 0 : -1;
}

tc_future *bfx_submit(harness *h, const char *key)
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

void bfx_assert_value(const tc_future *f, const char *want)
{
    assert_string_equal(bytes_of(f)->data, want);
}

tc_batcher_stats bfx_stats(const harness *h)
{
    tc_batcher_stats st;
    tc_batcher_get_stats(h->b, &st);
    return st;
}

void bfx_run_for(harness *h, uint64_t ms)
{
    tc_future *s = NULL;
    assert_int_equal(tc_sleep(&s, &h->loop, ms), 0);
    while (!tc_future_done(s))
        uv_run(&h->loop, UV_RUN_ONCE);
    tc_future_unref(s);
}
