/*
 * Shared fixture of the tests of src/core/future.c (test_future_*.c): a loop per test in *state
 * (ffx_loop_setup/ffx_loop_teardown), callback records, tracked values, cancel hooks and timed
 * producers.
 *
 * Every test owns a uv loop and ends with ffx_loop_teardown(): uv_run to completion, then
 * uv_loop_close() == 0, so a timer handle left open fails the test. Values are tracked boxes
 * whose free function counts, so a value freed twice or never is caught (besides ASan/LSan).
 *
 * Compiled once into the folder's fixture library (CMakeLists.txt); every name is ffx_.
 */
#ifndef TC_TEST_FUTURE_FIXTURE_H
#define TC_TEST_FUTURE_FIXTURE_H
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include <uv.h>

#include "tailcut/future.h"

/* ---- helpers -------------------------------------------------------------------------------- */

/* A value that counts its own release in a counter owned by the test. */
typedef struct box {
    int v;
    int *freed;
} box;

/* A box of v whose release counts in *freed; ffx_box_free is its free function. */
box *ffx_box_new(int v, int *freed);
void ffx_box_free(void *value);

/* The v of the box f was fulfilled with. */
int ffx_box_value(const tc_future *f);

/* A new pending future (asserts that it was made). */
tc_future *ffx_fut_new(void);

/* Every test gets its own loop in *state. The teardown runs it until nothing is left and checks
 * that it closes, so a handle left open (or a timer keeping the loop alive) fails the test. */
int ffx_loop_setup(void **state);

int ffx_loop_teardown(void **state);

/* A test entry with its own loop in *state (ffx_loop_setup and ffx_loop_teardown). */
#define FFX_LOOP_TEST(test) cmocka_unit_test_setup_teardown(test, ffx_loop_setup, ffx_loop_teardown)

/* Runs the loop until nothing is left (the teardown checks that it closes). */
void ffx_loop_drain(uv_loop_t *loop);

/* Records every callback invocation: how many, with which state, in which order. */
#define REC_MAX 64
typedef struct rec {
    int calls;
    tc_future_state state;
    int err;
    int order[REC_MAX];
    int *seq; /* shared sequence counter, for ordering across records */
    int tag;
} rec;

/* A done callback that records into the rec at data. */
void ffx_rec_cb(tc_future *f, void *data);

/* Drops a reference to the future it is called for. */
void ffx_unref_cb(tc_future *f, void *data);

typedef struct hook_rec {
    int calls;
    int fulfill_rc;
    int *freed;
    tc_future_state state_seen;
    int cbs_seen; /* the done callbacks had not fired yet when the hook ran */
    rec *r;
    tc_future *producer_ref; /* dropped by the hook */
} hook_rec;

/* A cancel hook that records into the hook_rec at data (and does what its fields ask). */
void ffx_hook_cb(tc_future *f, void *data);

/* Cancels another future from a done callback. */
void ffx_cancel_other_cb(tc_future *f, void *data);

/* ---- timed producers ------------------------------------------------------------------------ */

/* A producer like an HTTP attempt: completes its future after ms on the loop (fulfils with a box
 * of v, or rejects with err), holds its own reference until then, and stops when cancelled. */
typedef struct producer {
    tc_future *f;     /* the producer's reference */
    tc_future *sleep; /* its timer */
    int v;
    int err;
    int *freed;
    int hook_calls;
    int complete_rc;
    int completed;
} producer;

/* Returns the consumer's reference to the producer's future. */
tc_future *ffx_producer_start(producer *p, uv_loop_t *loop, uint64_t ms, int v, int err,
                              int *freed);

#define LONG_MS (10u * 60u * 1000u) /* never reached: a test would hit the watchdog first */

/* Records the loop time at which a future completed. */
typedef struct stamp {
    uv_loop_t *loop;
    uint64_t at;
    int calls;
    tc_future_state state;
} stamp;

void ffx_stamp_cb(tc_future *f, void *data);

/* A done callback that cancels the future at data. */
void ffx_cancel_target_cb(tc_future *f, void *data);

/* The reports of tc_as_completed, in order. */
typedef struct reports {
    int n;
    size_t index[16];
    int timed_out[16];
    tc_future_state state[16];
    tc_future *cancel_on_first; /* if set, the first report cancels it */
} reports;

/* The report callback of tc_as_completed: records into the reports at data. */
void ffx_report_cb(tc_future *f, size_t index, int timed_out, void *data);

#endif /* TC_TEST_FUTURE_FIXTURE_H */
