/*
 * Shared fixture of the tests of src/policy/batch.c (test_batch_*.c): a harness with its own uv
 * loop, a dispatcher that holds the batches it receives (so the test decides when and how each one
 * ends) or answers synchronously inside dispatch, and values counted on release.
 *
 * Every test owns a uv loop and ends by running it to completion and checking
 * uv_loop_close() == 0. Values are counted on release, so a value freed twice or never is caught
 * besides ASan/LSan.
 *
 * Compiled once into the folder's fixture library (CMakeLists.txt); every name is bfx_.
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

/* Resolves every key of batch with the bytes "v:<key>" and finishes it. */
void bfx_answer(tc_batch *batch);

/* bfx_answer on every held batch, oldest first (answering one may let a queued one out). */
void bfx_answer_held(harness *h);

/* The harness's dispatcher (data is the harness): notes the keys, then holds the batch,
 * resolves it (RESOLVE_NOW) or fails it (FAIL_NOW) at once, as h->mode says. */
void bfx_dispatch(tc_batch *batch, void *data);

/* Removes and returns the oldest held batch. */
tc_batch *bfx_take_held(harness *h);

/* The batcher's close callback (data is the harness): counts h->closed. */
void bfx_on_closed(tc_batcher *b, void *data);

/* cmocka setups: a harness in *state whose batcher has these limits (bfx_setup: 3 keys, 10 s,
 * 16 in flight). */
int bfx_setup_with(void **state, size_t max_batch, uint64_t max_wait_ms, size_t max_in_flight);

int bfx_setup(void **state);

/* Closes the batcher (finishing any held batch as failed), runs the loop dry, and checks that
 * the close callback ran once and the loop closes. */
int bfx_teardown(void **state);

/* Submits key (asserting that it was taken); returns the waiter's future. */
tc_future *bfx_submit(harness *h, const char *key);

/* f was fulfilled with the bytes of want (NUL-terminated). */
void bfx_assert_value(const tc_future *f, const char *want);

tc_batcher_stats bfx_stats(const harness *h);

/* Runs the loop for about ms milliseconds (the batcher's timers run meanwhile). */
void bfx_run_for(harness *h, uint64_t ms);

#endif /* TC_TEST_BATCH_FIXTURE_H */
