/*
 * batch_example: coalescing lookups with tc_batcher (see docs/batch.md).
 *
 * Six lookups of four keys (one of them unknown) are submitted at once. The batcher sends one
 * batch of four distinct keys to a dispatcher that answers after 5 ms from a small table, as a
 * database or an HTTP API would. Every waiter of a key gets the same shared value; the unknown
 * key is rejected with TC_EMISSING because the dispatcher left it unresolved. One lookup is
 * wrapped in tc_with_timeout(): it leaves when its deadline passes, the others still get their
 * answer.
 *
 *   build/example_batch_example
 */
#include <stdio.h>
#include <string.h>

#include <uv.h>

#include "tailcut/batch.h"
#include "tailcut/future.h"

static const char *const table[][2] = {
    {"ada", "{\"name\":\"Ada Lovelace\"}"},
    {"alan", "{\"name\":\"Alan Turing\"}"},
    {"grace", "{\"name\":\"Grace Hopper\"}"},
};

/* The "backend": answers a batch 5 ms after it was sent. */
typedef struct backend {
    uv_timer_t timer;
    tc_batch *batch;
    int calls;
} backend;

static void on_backend_answer(uv_timer_t *t)
{
    backend *be = t->data;
    tc_batch *batch = be->batch;
    be->batch = NULL;
    for (size_t i = 0; i < tc_batch_size(batch); i++) {
        const char *key = tc_batch_key(batch, i, NULL);
        for (size_t k = 0; k < sizeof(table) / sizeof(table[0]); k++)
            if (strcmp(key, table[k][0]) == 0)
                tc_batch_resolve_bytes(batch, i, table[k][1], strlen(table[k][1]));
    }
    tc_batch_done(batch); /* keys left unresolved reject with TC_EMISSING */
}

/* The dispatch function: owns the batch until tc_batch_done() / tc_batch_fail(). */
static void dispatch(tc_batch *batch, void *data)
{
    backend *be = data;
    be->calls++;
    printf("dispatch #%d:", be->calls);
    for (size_t i = 0; i < tc_batch_size(batch); i++)
        printf(" %s", tc_batch_key(batch, i, NULL));
    printf("\n");
    be->batch = batch;
    uv_timer_start(&be->timer, on_backend_answer, 5, 0);
}

static void on_lookup(tc_future *f, void *data)
{
    const char *key = data;
    if (tc_future_state_of(f) == TC_FUTURE_FULFILLED) {
        const tc_batch_bytes *v = tc_future_value(f);
        printf("%-6s -> %s (value %p)\n", key, v->data, (const void *)v);
    } else {
        printf("%-6s -> error %s: %s\n", key, tc_err_name(tc_future_error(f)),
               tc_future_message(f));
    }
}

int main(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    backend be = {.batch = NULL, .calls = 0};
    uv_timer_init(&loop, &be.timer);
    be.timer.data = &be;

    tc_batcher_config cfg;
    tc_batcher_config_init(&cfg); /* 50 keys or 10 ms, 16 batches in flight */
    cfg.dispatch = dispatch;
    cfg.data = &be;
    tc_batcher *b = NULL;
    if (tc_batcher_new(&b, &loop, &cfg) != 0)
        return 1;

    static const char *const keys[] = {"ada", "alan", "ada", "nobody", "grace", "ada"};
    tc_future *futures[6];
    for (size_t i = 0; i < 6; i++) {
        if (tc_batcher_submit(&futures[i], b, keys[i], strlen(keys[i])) != 0)
            return 1;
        tc_future_on_done(futures[i], on_lookup, (void *)keys[i]);
    }
    /* A caller with a 1 ms deadline: it leaves before the answer (after 10 ms + 5 ms). */
    tc_future *impatient = NULL, *timed = NULL;
    tc_batcher_submit(&impatient, b, "alan", 4);
    tc_with_timeout(&timed, &loop, impatient, 1);
    tc_future_on_done(timed, on_lookup, "alan(1ms)");

    while (be.calls == 0 || be.batch != NULL)
        uv_run(&loop, UV_RUN_ONCE);

    tc_batcher_stats st;
    tc_batcher_get_stats(b, &st);
    printf("submitted %llu, batches %llu, keys sent %llu, dedup hits %llu, left %llu\n",
           (unsigned long long)st.submitted, (unsigned long long)st.batches_sent,
           (unsigned long long)st.keys_sent, (unsigned long long)st.dedup_hits,
           (unsigned long long)st.waiters_left);

    for (size_t i = 0; i < 6; i++)
        tc_future_unref(futures[i]); /* the last reference to a value frees it */
    tc_future_unref(impatient);
    tc_future_unref(timed);
    tc_batcher_close(b, NULL, NULL);
    uv_close((uv_handle_t *)&be.timer, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    return uv_loop_close(&loop) == 0 ? 0 : 1;
}
