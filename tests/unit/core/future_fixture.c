/*
 * The future tests' fixture (future_fixture.h). Compiled once into the folder's fixture library;
 * only the ffx_ names are shared.
 */
#include "future_fixture.h"

void ffx_box_free(void *value)
{
    box *b = value;
    (*b->freed)++;
    free(b);
}

box *ffx_box_new(int v, int *freed)
{
    box *b = malloc(sizeof(*b));
    assert_non_null(b);
    b->v = v;
    b->freed = freed;
    return b;
}

int ffx_box_value(const tc_future *f)
{
    const box *b = tc_future_value(f);
    assert_non_null(b);
    return b->v;
}

tc_future *ffx_fut_new(void)
{
    tc_future *f = NULL;
    assert_int_equal(tc_future_new(&f), 0);
    assert_non_null(f);
    return f;
}

int ffx_loop_setup(void **state)
{
    uv_loop_t *loop = malloc(sizeof(*loop));
    if (loop == NULL || uv_loop_init(loop) != 0) {
        free(loop);
        return -1;
    }
    *state = loop;
    return 0;
}

int ffx_loop_teardown(void **state)
{
    uv_loop_t *loop = *state;
    int alive = uv_run(loop, UV_RUN_DEFAULT);
    int closed = uv_loop_close(loop);
    if (alive != 0 || closed != 0) {
        print_error("loop not finished: uv_run=%d uv_loop_close=%d\n", alive, closed);
        return -1; /* the loop is leaked on purpose: it still has handles */
    }
    free(loop);
    return 0;
}

void ffx_loop_drain(uv_loop_t *loop)
{
    assert_int_equal(uv_run(loop, UV_RUN_DEFAULT), 0);
}

void ffx_rec_cb(tc_future *f, void *data)
{
    rec *r = data;
    if (r->calls < REC_MAX)
        r->order[r->calls] = r->seq != NULL ? (*r->seq)++ : r->calls;
    r->calls++;
    r->state = tc_future_state_of(f);
    r->err = tc_future_error(f);
}

void ffx_unref_cb(tc_future *f, void *data)
{
    int *calls = data;
    (*calls)++;
    tc_future_unref(f);
}

void ffx_hook_cb(tc_future *f, void *data)
{
    hook_rec *h = data;
    h->calls++;
    h->state_seen = tc_future_state_of(f);
    h->cbs_seen = h->r != NULL ? h->r->calls : 0;
    if (h->freed != NULL) /* the producer completes inside its own cancel hook */
        h->fulfill_rc = tc_future_fulfill(f, ffx_box_new(9, h->freed), ffx_box_free);
    if (h->producer_ref != NULL) {
        tc_future *p = h->producer_ref;
        h->producer_ref = NULL;
        tc_future_unref(p);
    }
}

void ffx_cancel_other_cb(tc_future *f, void *data)
{
    tc_future **other = data;
    tc_future_cancel(*other);
}

static void producer_fire(tc_future *s, void *data)
{
    producer *p = data;
    if (tc_future_state_of(s) == TC_FUTURE_FULFILLED) {
        p->completed = 1;
        if (p->err == 0)
            p->complete_rc = tc_future_fulfill(p->f, ffx_box_new(p->v, p->freed), ffx_box_free);
        else
            p->complete_rc = tc_future_reject(p->f, p->err, "producer failed");
    }
    tc_future *f = p->f;
    p->f = NULL;
    p->sleep = NULL;
    tc_future_unref(s);
    tc_future_unref(f);
}

static void producer_cancel(tc_future *f, void *data)
{
    producer *p = data;
    p->hook_calls++;
    tc_future_cancel(p->sleep); /* producer_fire then drops the producer's references */
}

tc_future *ffx_producer_start(producer *p, uv_loop_t *loop, uint64_t ms, int v, int err, int *freed)
{
    memset(p, 0, sizeof(*p));
    p->v = v;
    p->err = err;
    p->freed = freed;
    tc_future *f = ffx_fut_new();
    p->f = tc_future_ref(f);
    assert_int_equal(tc_sleep(&p->sleep, loop, ms), 0);
    assert_int_equal(tc_future_on_done(p->sleep, producer_fire, p), 0);
    tc_future_set_cancel_hook(f, producer_cancel, p);
    return f;
}

void ffx_stamp_cb(tc_future *f, void *data)
{
    stamp *s = data;
    uv_update_time(s->loop);
    s->at = uv_now(s->loop);
    s->calls++;
    s->state = tc_future_state_of(f);
}

void ffx_cancel_target_cb(tc_future *f, void *data)
{
    tc_future_cancel((tc_future *)data);
}

void ffx_report_cb(tc_future *f, size_t index, int timed_out, void *data)
{
    reports *r = data;
    assert_true(r->n < 16);
    r->index[r->n] = index;
    r->timed_out[r->n] = timed_out;
    r->state[r->n] = tc_future_state_of(f);
    r->n++;
    if (r->n == 1 && r->cancel_on_first != NULL)
        tc_future_cancel(r->cancel_on_first);
}
