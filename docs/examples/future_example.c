/*
 * A hedged request in miniature, with tailcut futures.
 *
 * Three simulated replicas answer after 40, 5 and 300 ms; the one at 5 ms answers with an error.
 * Each attempt gets a 100 ms deadline (tc_with_timeout) and tc_first_success takes the first
 * attempt that succeeds and cancels the others. A fake_request is a producer written the way a
 * real one (an HTTP transfer) is: it owns a reference to its future until it completes it or sees
 * it cancelled, and its cancel hook stops the work. The program exits 0 once the loop has
 * nothing left to run and closes cleanly.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "tailcut/future.h"

/* A simulated request: a timer that completes its future. */
typedef struct fake_request {
    uv_timer_t timer;
    tc_future *future; /* the producer's reference */
    const char *answer;
    int fail;
} fake_request;

static void fake_request_closed(uv_handle_t *h)
{
    free(h->data); /* freed only once libuv is done with the handle */
}

static void fake_request_finish(fake_request *r)
{
    tc_future *f = r->future;
    r->future = NULL;
    uv_close((uv_handle_t *)&r->timer, fake_request_closed);
    tc_future_unref(f);
}

static void fake_request_fire(uv_timer_t *t)
{
    fake_request *r = t->data;
    char *body = NULL;
    if (r->fail)
        tc_future_reject(r->future, TC_EHTTP, "status 503");
    else if ((body = strdup(r->answer)) == NULL)
        tc_future_reject(r->future, TC_ENOMEM, NULL);
    else
        tc_future_fulfill(r->future, body, free); /* the future owns body from here */
    fake_request_finish(r);
}

static void fake_request_cancel(tc_future *f, void *data)
{
    fake_request *r = data;
    printf("  cancelled: %s\n", r->answer);
    fake_request_finish(r); /* stop the work and drop the producer's reference */
}

/* Starts a request that answers after delay_ms. The caller gets one reference to *out. */
static int fake_request_start(tc_future **out, uv_loop_t *loop, uint64_t delay_ms,
                              const char *answer, int fail)
{
    fake_request *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return TC_ENOMEM;
    int rc = tc_future_new(&r->future);
    if (rc < 0) {
        free(r);
        return rc;
    }
    r->answer = answer;
    r->fail = fail;
    uv_timer_init(loop, &r->timer);
    r->timer.data = r;
    uv_timer_start(&r->timer, fake_request_fire, delay_ms, 0);
    tc_future_set_cancel_hook(r->future, fake_request_cancel, r);
    *out = tc_future_ref(r->future);
    return 0;
}

static void on_winner(tc_future *f, void *data)
{
    int *exit_code = data;
    if (tc_future_state_of(f) == TC_FUTURE_FULFILLED) {
        printf("winner: replica %ld said \"%s\"\n", tc_first_success_index(f),
               (const char *)tc_future_value(f));
        *exit_code = 0;
    } else {
        printf("all failed: %s\n", tc_future_message(f));
    }
}

int main(void)
{
    uv_loop_t loop;
    if (uv_loop_init(&loop) != 0)
        return 1;

    const uint64_t delays[3] = {40, 5, 300};
    const char *answers[3] = {"hello from replica 0", "replica 1 is overloaded",
                              "hello from replica 2"};
    tc_future *attempts[3] = {NULL, NULL, NULL};
    int exit_code = 1;

    for (int i = 0; i < 3; i++) {
        tc_future *request = NULL;
        if (fake_request_start(&request, &loop, delays[i], answers[i], i == 1) < 0)
            return 1;
        /* each attempt gets its own deadline; on expiry the request is cancelled */
        int rc = tc_with_timeout(&attempts[i], &loop, request, 100);
        tc_future_unref(request); /* the with_timeout future keeps it alive */
        if (rc < 0)
            return 1;
    }

    tc_future *winner = NULL;
    if (tc_first_success(&winner, attempts, 3) < 0)
        return 1;
    for (int i = 0; i < 3; i++)
        tc_future_unref(attempts[i]); /* first_success holds what it needs */
    if (tc_future_on_done(winner, on_winner, &exit_code) < 0)
        return 1;

    uv_run(&loop, UV_RUN_DEFAULT); /* returns once every timer is closed */
    tc_future_unref(winner);       /* releases the winner's body */
    if (uv_loop_close(&loop) != 0) {
        fprintf(stderr, "a handle was left open\n");
        return 1;
    }
    return exit_code;
}
