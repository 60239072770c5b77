/*
 * The combinators of future.h (gather, wait, as_completed, first_success, with_timeout, sleep,
 * call_later), built on the futures of future.c; see there for the design (struct comb, inputs,
 * references).
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "future_internal.h"
#include "tailcut/future.h"

/* ---- combinator state ----------------------------------------------------------------------- */

enum comb_kind {
    COMB_GATHER,
    COMB_WAIT,
    COMB_AS_COMPLETED,
    COMB_FIRST,
    COMB_TIMEOUT,
    COMB_SLEEP,
    COMB_LATER
};

struct comb;

struct comb_input {
    struct comb *comb;
    tc_future *f;  /* one reference, dropped when the comb finishes */
    size_t rank;   /* tc_wait: position in completion order */
    bool attached; /* our callback is registered on f and has not fired */
    bool seen;     /* f's completion has been handled */
};

struct comb {
    uint32_t refs;
    uint8_t kind;
    bool finished;   /* detached and (being) completed: ignore everything */
    bool timer_open; /* timer handle initialised and not yet closed */
    unsigned flags;  /* tc_gather flags */
    tc_wait_mode mode;
    tc_future *out; /* one reference until the comb finishes */
    uv_timer_t timer;
    size_t n;
    size_t nseen;
    tc_as_completed_cb report;
    tc_start_fn start;
    void *data;
    struct comb_input inputs[];
};

static void comb_unref(struct comb *comb)
{
    if (--comb->refs == 0)
        tc__free(comb);
}

static void comb_on_timer_closed(uv_handle_t *h)
{
    comb_unref(h->data);
}

static void comb_close_timer(struct comb *comb)
{
    if (!comb->timer_open)
        return;
    comb->timer_open = false;
    uv_timer_stop(&comb->timer);
    uv_close((uv_handle_t *)&comb->timer, comb_on_timer_closed);
}

static void input_on_done(tc_future *f, void *data);
static void comb_on_cancel(tc_future *out, void *data);

/* Allocates a comb with n inputs to futures (each referenced) and its output future, which gets
 * the comb's cancel hook. The comb holds its "active" reference; the caller owns the other
 * reference to *outp, which is stored only later. */
static int comb_new(struct comb **out, enum comb_kind kind, tc_future *const *futures, size_t n)
{
    if (n > (SIZE_MAX - sizeof(struct comb)) / sizeof(struct comb_input))
        return TC_ENOMEM;
    struct comb *comb = tc__calloc(1, sizeof(*comb) + n * sizeof(struct comb_input));
    if (comb == NULL)
        return TC_ENOMEM;
    int rc = tc_future_new(&comb->out);
    if (rc < 0) {
        tc__free(comb);
        return rc;
    }
    comb->refs = 1;
    comb->kind = (uint8_t)kind;
    comb->n = n;
    for (size_t i = 0; i < n; i++) {
        comb->inputs[i].comb = comb;
        comb->inputs[i].f = futures != NULL ? tc_future_ref(futures[i]) : NULL;
    }
    tc_future_set_cancel_hook(comb->out, comb_on_cancel, comb);
    *out = comb;
    return 0;
}

/* Registers input_on_done on every pending input. On TC_ENOMEM undoes what it did. Nothing
 * fires during this: only pending inputs are registered. */
static int comb_attach_pending(struct comb *comb)
{
    for (size_t i = 0; i < comb->n; i++) {
        struct comb_input *in = &comb->inputs[i];
        if (tc_future_done(in->f))
            continue;
        if (tc_future_on_done(in->f, input_on_done, in) < 0) {
            for (size_t j = 0; j < i; j++) {
                if (comb->inputs[j].attached) {
                    comb->inputs[j].attached = false;
                    tc_future_off_done(comb->inputs[j].f, input_on_done, &comb->inputs[j]);
                }
            }
            return TC_ENOMEM;
        }
        in->attached = true;
    }
    return 0;
}

/* Undoes comb_new for a comb that was never exposed: nothing has fired. */
static void comb_discard(struct comb *comb)
{
    for (size_t i = 0; i < comb->n; i++)
        tc_future_unref(comb->inputs[i].f);
    tc_future_set_cancel_hook(comb->out, NULL, NULL);
    tc_future_unref(comb->out);
    comb_unref(comb);
}

/* First step of finishing: from here on the comb ignores every event. Detaches all inputs that
 * have not fired and closes the timer; keeps the input references and comb->out so the caller can
 * still complete comb->out from them. The caller holds a guard reference. */
static void comb_stop(struct comb *comb)
{
    comb->finished = true;
    for (size_t i = 0; i < comb->n; i++) {
        struct comb_input *in = &comb->inputs[i];
        if (in->attached) {
            in->attached = false;
            tc_future_off_done(in->f, input_on_done, in);
        }
    }
    comb_close_timer(comb);
}

/* Last step of finishing: drops the references to the inputs and to the output future, and the
 * active reference. The caller still holds a guard reference. */
static void comb_release(struct comb *comb)
{
    for (size_t i = 0; i < comb->n; i++) {
        tc_future *f = comb->inputs[i].f;
        comb->inputs[i].f = NULL;
        tc_future_unref(f);
    }
    tc_future *out = comb->out;
    comb->out = NULL;
    /* The comb's own reference to out, dropped just below, kept out alive through the sweep of
     * the completion the caller made. */
    // NOLINTNEXTLINE(clang-analyzer-unix.Malloc)
    tc_future_set_cancel_hook(out, NULL, NULL);
    tc_future_unref(out);
    /* The active reference. The caller's guard keeps comb alive, so this never frees; saying so
     * with a plain decrement also keeps GCC 12 from seeing a conditional free before the
     * caller's own comb_unref(). */
    comb->refs--;
}

static void cancel_pending_inputs(struct comb *comb)
{
    for (size_t i = 0; i < comb->n; i++) {
        if (comb->inputs[i].f != NULL && !tc_future_done(comb->inputs[i].f))
            tc_future_cancel(comb->inputs[i].f);
    }
}

static int comb_start_timer(struct comb *comb, uv_loop_t *loop, uint64_t ms, uv_timer_cb cb)
{
    int rc = uv_timer_init(loop, &comb->timer);
    if (rc < 0)
        return tc_err_from_uv(rc);
    comb->timer.data = comb;
    comb->timer_open = true;
    comb->refs++; /* dropped in comb_on_timer_closed */
    rc = uv_timer_start(&comb->timer, cb, ms, 0);
    if (rc < 0) {
        comb_close_timer(comb);
        return tc_err_from_uv(rc);
    }
    return 0;
}

/* Arms a new comb: registers its pending inputs (when attach) and starts its timer for ms (when
 * timed). On failure the comb is undone, never exposed, and the error returned. */
static int comb_arm(struct comb *comb, bool attach, uv_loop_t *loop, bool timed, uint64_t ms,
                    uv_timer_cb cb)
{
    int rc = attach ? comb_attach_pending(comb) : 0;
    if (rc == 0 && timed)
        rc = comb_start_timer(comb, loop, ms, cb);
    if (rc < 0) {
        comb_stop(comb);
        comb_discard(comb);
    }
    return rc;
}

/* The comb a timer callback fires for, with a guard reference the callback drops; NULL once the
 * comb has finished (the timer is closing). */
static struct comb *comb_of_timer(uv_timer_t *t)
{
    struct comb *comb = t->data;
    if (comb->finished)
        return NULL;
    comb->refs++;
    return comb;
}

/* Finishes comb: its output fulfilled with no value (err 0) or rejected with err. */
static void comb_settle(struct comb *comb, int err, const char *message)
{
    comb_stop(comb);
    if (err == 0)
        tc_future_fulfill(comb->out, NULL, NULL);
    else
        tc_future_reject(comb->out, err, message);
    comb_release(comb);
}

/* ---- gather --------------------------------------------------------------------------------- */

static void gather_result_free(void *value)
{
    tc_gather_result *res = value;
    for (size_t i = 0; i < res->n; i++)
        tc_future_unref(res->futures[i]);
    tc__free(res);
}

static void gather_finish(struct comb *comb, tc_future *failed)
{
    comb_stop(comb);
    if (failed != NULL) {
        tc_future_reject(comb->out, tc_future_error(failed), tc_future_message(failed));
    } else {
        tc_gather_result *res = tc__malloc(sizeof(*res) + comb->n * sizeof(tc_future *));
        if (res == NULL) {
            tc_future_reject(comb->out, TC_ENOMEM, NULL);
        } else {
            res->n = comb->n;
            res->futures = (tc_future **)(res + 1);
            for (size_t i = 0; i < comb->n; i++)
                res->futures[i] = tc_future_ref(comb->inputs[i].f);
            tc_future_fulfill(comb->out, res, gather_result_free);
        }
    }
    comb_release(comb);
}

static void gather_on_input(struct comb *comb, struct comb_input *in)
{
    tc_future_state st = tc_future_state_of(in->f);
    if (st != TC_FUTURE_FULFILLED && !(comb->flags & TC_GATHER_RETURN_EXCEPTIONS)) {
        gather_finish(comb, in->f);
        return;
    }
    if (comb->nseen == comb->n)
        gather_finish(comb, NULL);
}

/* ---- wait ----------------------------------------------------------------------------------- */

static void wait_result_free(void *value)
{
    tc_wait_result *res = value;
    for (size_t i = 0; i < res->ndone; i++)
        tc_future_unref(res->done[i]);
    for (size_t i = 0; i < res->npending; i++)
        tc_future_unref(res->pending[i]);
    tc__free(res);
}

static void wait_finish(struct comb *comb)
{
    comb_stop(comb);
    tc_wait_result *res = tc__malloc(sizeof(*res) + comb->n * sizeof(tc_future *));
    if (res == NULL) {
        tc_future_reject(comb->out, TC_ENOMEM, NULL);
    } else {
        tc_future **slots = (tc_future **)(res + 1);
        res->ndone = comb->nseen;
        res->done = slots;
        res->npending = comb->n - comb->nseen;
        res->pending = slots + comb->nseen;
        size_t np = 0;
        for (size_t i = 0; i < comb->n; i++) {
            struct comb_input *in = &comb->inputs[i];
            if (in->seen)
                res->done[in->rank] = tc_future_ref(in->f);
            else
                res->pending[np++] = tc_future_ref(in->f);
        }
        tc_future_fulfill(comb->out, res, wait_result_free);
    }
    comb_release(comb);
}

static bool wait_condition_holds(struct comb *comb, const struct comb_input *latest)
{
    if (comb->nseen == comb->n)
        return true;
    switch (comb->mode) {
    case TC_FIRST_COMPLETED:
        return comb->nseen > 0;
    case TC_FIRST_EXCEPTION:
        return latest != NULL && tc_future_state_of(latest->f) == TC_FUTURE_REJECTED;
    case TC_ALL_COMPLETED:
        break;
    }
    return false;
}

static void wait_on_input(struct comb *comb, struct comb_input *in)
{
    if (wait_condition_holds(comb, in))
        wait_finish(comb);
}

/* ---- as_completed --------------------------------------------------------------------------- */

static void as_completed_on_input(struct comb *comb, struct comb_input *in)
{
    comb->report(in->f, (size_t)(in - comb->inputs), 0, comb->data);
    if (comb->finished)
        return; /* the report cancelled the as_completed future */
    if (comb->nseen == comb->n) {
        comb_stop(comb);
        tc_future_fulfill(comb->out, NULL, NULL);
        comb_release(comb);
    }
}

/* ---- first_success -------------------------------------------------------------------------- */

static void first_finish_all_failed(struct comb *comb)
{
    char msg[TC__FUTURE_MESSAGE_MAX];
    size_t len = (size_t)snprintf(msg, sizeof(msg), "%s:", tc_strerror(TC_EALLFAILED));
    for (size_t i = 0; i < comb->n && len < sizeof(msg); i++) {
        const struct comb_input *in = &comb->inputs[i];
        int n = snprintf(msg + len, sizeof(msg) - len, "%s [%zu] %s: %s", i == 0 ? "" : ";", i,
                         tc_err_name(tc_future_error(in->f)), tc_future_message(in->f));
        if (n < 0)
            break;
        len += (size_t)n;
    }
    tc_future_reject(comb->out, TC_EALLFAILED, msg);
}

static void first_on_input(struct comb *comb, struct comb_input *in)
{
    if (tc_future_state_of(in->f) == TC_FUTURE_FULFILLED) {
        comb_stop(comb);
        cancel_pending_inputs(comb);
        tc__future_mark_first_success(comb->out, (long)(in - comb->inputs));
        tc__future_fulfill_borrowed(comb->out, in->f);
        comb_release(comb);
    } else if (comb->nseen == comb->n) {
        comb_stop(comb);
        first_finish_all_failed(comb);
        comb_release(comb);
    }
}

/* ---- with_timeout and call_later (mirror one inner future) ---------------------------------- */

static void mirror_on_input(struct comb *comb, struct comb_input *in)
{
    comb_stop(comb);
    /* fires out's registrations: for a metadata lookup, cmd_serve_metadata.c on_meta_done */
    tc__future_mirror(comb->out, in->f);
    comb_release(comb);
}

static void timeout_on_timer(uv_timer_t *t)
{
    struct comb *comb = comb_of_timer(t);
    if (comb == NULL)
        return;
    comb_stop(comb);
    cancel_pending_inputs(comb);
    tc_future_reject(comb->out, TC_ETIMEDOUT, NULL); /* as in mirror_on_input */
    comb_release(comb);
    comb_unref(comb);
}

/* ---- dispatch ------------------------------------------------------------------------------- */

/* Handles one input's completion: records it, then lets the combinator decide. */
static void comb_on_input(struct comb *comb, struct comb_input *in)
{
    if (comb->finished || in->seen)
        return;
    in->seen = true;
    in->rank = comb->nseen++;
    comb->refs++; /* finishing drops the active reference under us */
    switch ((enum comb_kind)comb->kind) {
    case COMB_GATHER:
        gather_on_input(comb, in);
        break;
    case COMB_WAIT:
        wait_on_input(comb, in);
        break;
    case COMB_AS_COMPLETED:
        as_completed_on_input(comb, in);
        break;
    case COMB_FIRST:
        first_on_input(comb, in);
        break;
    case COMB_TIMEOUT:
    case COMB_LATER:
        mirror_on_input(comb, in);
        break;
    case COMB_SLEEP:
        break; /* has no inputs */
    }
    comb_unref(comb);
}

static void input_on_done(tc_future *f, void *data)
{
    struct comb_input *in = data;
    in->attached = false;
    comb_on_input(in->comb, in);
}

/* The output future was cancelled: stop, and cancel the inputs where the combinator says so. */
static void comb_on_cancel(tc_future *out, void *data)
{
    struct comb *comb = data;
    if (comb->finished)
        return;
    comb->refs++;
    comb_stop(comb);
    switch ((enum comb_kind)comb->kind) {
    case COMB_GATHER:
    case COMB_FIRST:
    case COMB_TIMEOUT:
    case COMB_LATER:
        cancel_pending_inputs(comb);
        break;
    case COMB_WAIT:
    case COMB_AS_COMPLETED:
    case COMB_SLEEP:
        break; /* these never cancel their inputs */
    }
    comb_release(comb);
    comb_unref(comb);
}

/* Hands the output to the caller, then handles inputs that were already done, in input order.
 * The caller has attached the pending inputs. Takes a guard reference the caller drops. */
static void comb_expose(struct comb *comb, tc_future **out)
{
    *out = tc_future_ref(comb->out); /* the caller's reference; the comb keeps its own */
    comb->refs++;
    /* The guard reference just taken keeps comb alive through comb_on_input(). */
    // NOLINTNEXTLINE(clang-analyzer-unix.Malloc)
    for (size_t i = 0; i < comb->n && !comb->finished; i++) {
        struct comb_input *in = &comb->inputs[i];
        if (!in->attached && !in->seen && tc_future_done(in->f))
            comb_on_input(comb, in);
    }
}

static int check_inputs(tc_future *const *futures, size_t n)
{
    if (n > 0 && futures == NULL)
        return TC_EINVAL;
    for (size_t i = 0; i < n; i++) {
        if (futures[i] == NULL)
            return TC_EINVAL;
    }
    return 0;
}

/* ---- public combinators --------------------------------------------------------------------- */

int tc_gather(tc_future **out, tc_future *const *futures, size_t n, unsigned flags)
{
    if (out == NULL || (flags & ~TC_GATHER_RETURN_EXCEPTIONS) != 0)
        return TC_EINVAL;
    int rc = check_inputs(futures, n);
    struct comb *comb = NULL;
    if (rc == 0)
        rc = comb_new(&comb, COMB_GATHER, futures, n);
    if (rc == 0)
        rc = comb_arm(comb, true, NULL, false, 0, NULL);
    if (rc != 0)
        return rc;
    comb->flags = flags;
    comb_expose(comb, out);
    if (!comb->finished && comb->n == 0)
        gather_finish(comb, NULL);
    comb_unref(comb);
    return 0;
}

static void wait_on_timer(uv_timer_t *t)
{
    struct comb *comb = comb_of_timer(t);
    if (comb == NULL)
        return;
    wait_finish(comb);
    comb_unref(comb);
}

int tc_wait(tc_future **out, uv_loop_t *loop, tc_future *const *futures, size_t n,
            tc_wait_mode mode, int64_t timeout_ms)
{
    if (out == NULL || loop == NULL ||
        (mode != TC_FIRST_COMPLETED && mode != TC_FIRST_EXCEPTION && mode != TC_ALL_COMPLETED))
        return TC_EINVAL;
    int rc = check_inputs(futures, n);
    struct comb *comb = NULL;
    if (rc == 0)
        rc = comb_new(&comb, COMB_WAIT, futures, n);
    if (rc != 0)
        return rc;
    comb->mode = mode;
    /* Every input already done belongs in the done set, so record them all before deciding. */
    bool holds = false;
    for (size_t i = 0; i < n; i++) {
        struct comb_input *in = &comb->inputs[i];
        if (tc_future_done(in->f)) {
            in->seen = true;
            in->rank = comb->nseen++;
            holds = holds || wait_condition_holds(comb, in);
        }
    }
    holds = holds || wait_condition_holds(comb, NULL);
    if (!holds &&
        (rc = comb_arm(comb, true, loop, timeout_ms >= 0, (uint64_t)timeout_ms, wait_on_timer)) < 0)
        return rc;
    comb_expose(comb, out);
    if (holds)
        wait_finish(comb);
    comb_unref(comb);
    return 0;
}

static void as_completed_on_timer(uv_timer_t *t)
{
    struct comb *comb = comb_of_timer(t);
    if (comb == NULL)
        return;
    comb_stop(comb);
    tc_future *out = comb->out;
    for (size_t i = 0; i < comb->n; i++) {
        if (tc_future_state_of(out) == TC_FUTURE_CANCELLED)
            break; /* a report cancelled the as_completed future: stop reporting */
        if (!comb->inputs[i].seen)
            comb->report(comb->inputs[i].f, i, 1, comb->data);
    }
    tc_future_reject(out, TC_ETIMEDOUT, NULL);
    comb_release(comb);
    comb_unref(comb);
}

int tc_as_completed(tc_future **out, uv_loop_t *loop, tc_future *const *futures, size_t n,
                    int64_t timeout_ms, tc_as_completed_cb cb, void *data)
{
    if (out == NULL || loop == NULL || cb == NULL)
        return TC_EINVAL;
    int rc = check_inputs(futures, n);
    struct comb *comb = NULL;
    if (rc == 0)
        rc = comb_new(&comb, COMB_AS_COMPLETED, futures, n);
    if (rc != 0)
        return rc;
    comb->report = cb;
    comb->data = data;
    bool all_done = true;
    for (size_t i = 0; i < n; i++)
        all_done = all_done && tc_future_done(futures[i]);
    if (!all_done && (rc = comb_arm(comb, true, loop, timeout_ms >= 0, (uint64_t)timeout_ms,
                                    as_completed_on_timer)) < 0)
        return rc;
    comb_expose(comb, out);
    if (!comb->finished && comb->n == 0)
        comb_settle(comb, 0, NULL);
    comb_unref(comb);
    return 0;
}

int tc_first_success(tc_future **out, tc_future *const *futures, size_t n)
{
    if (out == NULL)
        return TC_EINVAL;
    int rc = check_inputs(futures, n);
    struct comb *comb = NULL;
    if (rc == 0)
        rc = comb_new(&comb, COMB_FIRST, futures, n);
    if (rc == 0)
        rc = comb_arm(comb, true, NULL, false, 0, NULL);
    if (rc != 0)
        return rc;
    comb_expose(comb, out);
    if (!comb->finished && comb->n == 0)
        comb_settle(comb, TC_EALLFAILED, "every attempt failed: no inputs");
    comb_unref(comb);
    return 0;
}

int tc_with_timeout(tc_future **out, uv_loop_t *loop, tc_future *inner, uint64_t timeout_ms)
{
    if (out == NULL || loop == NULL || inner == NULL)
        return TC_EINVAL;
    struct comb *comb = NULL;
    int rc = comb_new(&comb, COMB_TIMEOUT, &inner, 1);
    if (rc < 0)
        return rc;
    if (!tc_future_done(inner) &&
        (rc = comb_arm(comb, true, loop, true, timeout_ms, timeout_on_timer)) < 0)
        return rc;
    comb_expose(comb, out);
    comb_unref(comb);
    return 0;
}

static void sleep_on_timer(uv_timer_t *t)
{
    struct comb *comb = comb_of_timer(t);
    if (comb == NULL)
        return;
    comb_settle(comb, 0, NULL);
    comb_unref(comb);
}

int tc_sleep(tc_future **out, uv_loop_t *loop, uint64_t ms)
{
    if (out == NULL || loop == NULL)
        return TC_EINVAL;
    struct comb *comb = NULL;
    int rc = comb_new(&comb, COMB_SLEEP, NULL, 0);
    if (rc < 0)
        return rc;
    if ((rc = comb_arm(comb, false, loop, true, ms, sleep_on_timer)) < 0)
        return rc;
    comb_expose(comb, out);
    comb_unref(comb);
    return 0;
}

/* The delay has passed: close the timer, start the inner operation and mirror it. The comb has
 * one input, empty until start() gives it the inner future (whose reference passes to us). */
static void later_on_timer(uv_timer_t *t)
{
    struct comb *comb = comb_of_timer(t);
    if (comb == NULL)
        return;
    comb_close_timer(comb);
    tc_future *inner = NULL;
    int rc = comb->start(comb->data, &inner);
    if (comb->finished) {
        /* start() cancelled our future; the inner operation is not wanted any more */
        if (rc == 0 && inner != NULL) {
            tc_future_cancel(inner);
            /* start() handed us this reference; cancelling never drops it. */
            // NOLINTNEXTLINE(clang-analyzer-unix.Malloc)
            tc_future_unref(inner);
        }
    } else if (rc < 0 || inner == NULL) {
        if (rc == 0)
            tc_future_unref(inner);
        comb_settle(comb, rc < 0 ? rc : TC_EINVAL, NULL);
    } else {
        struct comb_input *in = &comb->inputs[0];
        in->f = inner;
        if (!tc_future_done(inner) && tc_future_on_done(inner, input_on_done, in) == 0) {
            in->attached = true;
        } else if (!tc_future_done(inner)) {
            comb_stop(comb);
            tc_future_cancel(inner);
            tc_future_reject(comb->out, TC_ENOMEM, NULL);
            comb_release(comb);
        } else {
            comb_on_input(comb, in);
        }
    }
    /* Drops the guard reference taken at the top, which kept comb alive until here. */
    // NOLINTNEXTLINE(clang-analyzer-unix.Malloc)
    comb_unref(comb);
}

int tc_call_later(tc_future **out, uv_loop_t *loop, uint64_t ms, tc_start_fn start, void *data)
{
    if (out == NULL || loop == NULL || start == NULL)
        return TC_EINVAL;
    struct comb *comb = NULL;
    int rc = comb_new(&comb, COMB_LATER, NULL, 1);
    if (rc < 0)
        return rc;
    comb->start = start;
    comb->data = data;
    if ((rc = comb_arm(comb, false, loop, true, ms, later_on_timer)) < 0)
        return rc;
    *out = tc_future_ref(comb->out); /* inputs[0] stays empty until the timer fires */
    return 0;
}
