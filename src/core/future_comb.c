/*
 * The combinators of future.h (gather, wait, as_completed, first_success, with_timeout, sleep,
 * call_later), built on the futures of future.c; see there for the design (struct comb, links,
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

struct link {
    struct comb *c;
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
    struct link links[];
};

static void comb_unref(struct comb *c)
{
    if (--c->refs == 0)
        tc__free(c);
}

static void comb_on_timer_closed(uv_handle_t *h)
{
    comb_unref(h->data);
}

static void comb_close_timer(struct comb *c)
{
    if (!c->timer_open)
        return;
    c->timer_open = false;
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, comb_on_timer_closed);
}

static void link_on_done(tc_future *f, void *data);
static void comb_on_cancel(tc_future *out, void *data);

/* Allocates a comb with n links to futures (each referenced) and its output future, which gets
 * the comb's cancel hook. The comb holds its "active" reference; the caller owns the other
 * reference to *outp, which is stored only later. */
static int comb_new(struct comb **cp, enum comb_kind kind, tc_future *const *futures, size_t n)
{
    if (n > (SIZE_MAX - sizeof(struct comb)) / sizeof(struct link))
        return TC_ENOMEM;
    struct comb *c = tc__calloc(1, sizeof(*c) + n * sizeof(struct link));
    if (c == NULL)
        return TC_ENOMEM;
    int rc = tc_future_new(&c->out);
    if (rc < 0) {
        tc__free(c);
        return rc;
    }
    c->refs = 1;
    c->kind = (uint8_t)kind;
    c->n = n;
    for (size_t i = 0; i < n; i++) {
        c->links[i].c = c;
        c->links[i].f = futures != NULL ? tc_future_ref(futures[i]) : NULL;
    }
    tc_future_set_cancel_hook(c->out, comb_on_cancel, c);
    *cp = c;
    return 0;
}

/* Registers link_on_done on every pending input. On TC_ENOMEM undoes what it did. Nothing
 * fires during this: only pending inputs are registered. */
static int comb_attach_pending(struct comb *c)
{
    for (size_t i = 0; i < c->n; i++) {
        struct link *l = &c->links[i];
        if (tc_future_done(l->f))
            continue;
        if (tc_future_on_done(l->f, link_on_done, l) < 0) {
            for (size_t j = 0; j < i; j++) {
                if (c->links[j].attached) {
                    c->links[j].attached = false;
                    tc_future_off_done(c->links[j].f, link_on_done, &c->links[j]);
                }
            }
            return TC_ENOMEM;
        }
        l->attached = true;
    }
    return 0;
}

/* Undoes comb_new for a comb that was never exposed: nothing has fired. */
static void comb_discard(struct comb *c)
{
    for (size_t i = 0; i < c->n; i++)
        tc_future_unref(c->links[i].f);
    tc_future_set_cancel_hook(c->out, NULL, NULL);
    tc_future_unref(c->out);
    comb_unref(c);
}

/* First step of finishing: from here on the comb ignores every event. Detaches all links that
 * have not fired and closes the timer; keeps the input references and c->out so the caller can
 * still complete c->out from them. The caller holds a guard reference. */
static void comb_stop(struct comb *c)
{
    c->finished = true;
    for (size_t i = 0; i < c->n; i++) {
        struct link *l = &c->links[i];
        if (l->attached) {
            l->attached = false;
            tc_future_off_done(l->f, link_on_done, l);
        }
    }
    comb_close_timer(c);
}

/* Last step of finishing: drops the references to the inputs and to the output future, and the
 * active reference. The caller still holds a guard reference. */
static void comb_release(struct comb *c)
{
    for (size_t i = 0; i < c->n; i++) {
        tc_future *f = c->links[i].f;
        c->links[i].f = NULL;
        tc_future_unref(f);
    }
    tc_future *out = c->out;
    c->out = NULL;
    /* The comb's own reference to out, dropped just below, kept out alive through the sweep of
     * the completion the caller made. */
    // NOLINTNEXTLINE(clang-analyzer-unix.Malloc)
    tc_future_set_cancel_hook(out, NULL, NULL);
    tc_future_unref(out);
    /* The active reference. The caller's guard keeps c alive, so this never frees; saying so
     * with a plain decrement also keeps GCC 12 from seeing a conditional free before the
     * caller's own comb_unref(). */
    c->refs--;
}

static void cancel_pending_inputs(struct comb *c)
{
    for (size_t i = 0; i < c->n; i++) {
        if (c->links[i].f != NULL && !tc_future_done(c->links[i].f))
            tc_future_cancel(c->links[i].f);
    }
}

static int comb_start_timer(struct comb *c, uv_loop_t *loop, uint64_t ms, uv_timer_cb cb)
{
    int rc = uv_timer_init(loop, &c->timer);
    if (rc < 0)
        return tc_err_from_uv(rc);
    c->timer.data = c;
    c->timer_open = true;
    c->refs++; /* dropped in comb_on_timer_closed */
    rc = uv_timer_start(&c->timer, cb, ms, 0);
    if (rc < 0) {
        comb_close_timer(c);
        return tc_err_from_uv(rc);
    }
    return 0;
}

/* ---- gather --------------------------------------------------------------------------------- */

static void gather_result_free(void *value)
{
    tc_gather_result *r = value;
    for (size_t i = 0; i < r->n; i++)
        tc_future_unref(r->futures[i]);
    tc__free(r);
}

static void gather_finish(struct comb *c, tc_future *failed)
{
    comb_stop(c);
    if (failed != NULL) {
        tc_future_reject(c->out, tc_future_error(failed), tc_future_message(failed));
    } else {
        tc_gather_result *r = tc__malloc(sizeof(*r) + c->n * sizeof(tc_future *));
        if (r == NULL) {
            tc_future_reject(c->out, TC_ENOMEM, NULL);
        } else {
            r->n = c->n;
            r->futures = (tc_future **)(r + 1);
            for (size_t i = 0; i < c->n; i++)
                r->futures[i] = tc_future_ref(c->links[i].f);
            tc_future_fulfill(c->out, r, gather_result_free);
        }
    }
    comb_release(c);
}

static void gather_on_input(struct comb *c, struct link *l)
{
    tc_future_state st = tc_future_state_of(l->f);
    if (st != TC_FUTURE_FULFILLED && !(c->flags & TC_GATHER_RETURN_EXCEPTIONS)) {
        gather_finish(c, l->f);
        return;
    }
    if (c->nseen == c->n)
        gather_finish(c, NULL);
}

/* ---- wait ----------------------------------------------------------------------------------- */

static void wait_result_free(void *value)
{
    tc_wait_result *r = value;
    for (size_t i = 0; i < r->ndone; i++)
        tc_future_unref(r->done[i]);
    for (size_t i = 0; i < r->npending; i++)
        tc_future_unref(r->pending[i]);
    tc__free(r);
}

static void wait_finish(struct comb *c)
{
    comb_stop(c);
    tc_wait_result *r = tc__malloc(sizeof(*r) + c->n * sizeof(tc_future *));
    if (r == NULL) {
        tc_future_reject(c->out, TC_ENOMEM, NULL);
    } else {
        tc_future **slots = (tc_future **)(r + 1);
        r->ndone = c->nseen;
        r->done = slots;
        r->npending = c->n - c->nseen;
        r->pending = slots + c->nseen;
        size_t np = 0;
        for (size_t i = 0; i < c->n; i++) {
            struct link *l = &c->links[i];
            if (l->seen)
                r->done[l->rank] = tc_future_ref(l->f);
            else
                r->pending[np++] = tc_future_ref(l->f);
        }
        tc_future_fulfill(c->out, r, wait_result_free);
    }
    comb_release(c);
}

static bool wait_condition_holds(struct comb *c, const struct link *latest)
{
    if (c->nseen == c->n)
        return true;
    switch (c->mode) {
    case TC_FIRST_COMPLETED:
        return c->nseen > 0;
    case TC_FIRST_EXCEPTION:
        return latest != NULL && tc_future_state_of(latest->f) == TC_FUTURE_REJECTED;
    case TC_ALL_COMPLETED:
        break;
    }
    return false;
}

static void wait_on_input(struct comb *c, struct link *l)
{
    if (wait_condition_holds(c, l))
        wait_finish(c);
}

/* ---- as_completed --------------------------------------------------------------------------- */

static void as_completed_on_input(struct comb *c, struct link *l)
{
    c->report(l->f, (size_t)(l - c->links), 0, c->data);
    if (c->finished)
        return; /* the report cancelled the as_completed future */
    if (c->nseen == c->n) {
        comb_stop(c);
        tc_future_fulfill(c->out, NULL, NULL);
        comb_release(c);
    }
}

/* ---- first_success -------------------------------------------------------------------------- */

static void first_finish_all_failed(struct comb *c)
{
    char msg[TC__FUTURE_MESSAGE_MAX];
    size_t len = (size_t)snprintf(msg, sizeof(msg), "%s:", tc_strerror(TC_EALLFAILED));
    for (size_t i = 0; i < c->n && len < sizeof(msg); i++) {
        const struct link *l = &c->links[i];
        int w = snprintf(msg + len, sizeof(msg) - len, "%s [%zu] %s: %s", i == 0 ? "" : ";", i,
                         tc_err_name(tc_future_error(l->f)), tc_future_message(l->f));
        if (w < 0)
            break;
        len += (size_t)w;
    }
    tc_future_reject(c->out, TC_EALLFAILED, msg);
}

static void first_on_input(struct comb *c, struct link *l)
{
    if (tc_future_state_of(l->f) == TC_FUTURE_FULFILLED) {
        comb_stop(c);
        cancel_pending_inputs(c);
        tc__future_mark_first_success(c->out, (long)(l - c->links));
        tc__future_fulfill_borrowed(c->out, l->f);
        comb_release(c);
    } else if (c->nseen == c->n) {
        comb_stop(c);
        first_finish_all_failed(c);
        comb_release(c);
    }
}

/* ---- with_timeout and call_later (mirror one inner future) ---------------------------------- */

static void mirror_on_input(struct comb *c, struct link *l)
{
    comb_stop(c);
    tc__future_mirror(c->out, l->f);
    comb_release(c);
}

static void timeout_on_timer(uv_timer_t *t)
{
    struct comb *c = t->data;
    if (c->finished)
        return;
    c->refs++;
    comb_stop(c);
    cancel_pending_inputs(c);
    tc_future_reject(c->out, TC_ETIMEDOUT, NULL);
    comb_release(c);
    comb_unref(c);
}

/* ---- dispatch ------------------------------------------------------------------------------- */

/* Handles one input's completion: records it, then lets the combinator decide. */
static void comb_on_input(struct comb *c, struct link *l)
{
    if (c->finished || l->seen)
        return;
    l->seen = true;
    l->rank = c->nseen++;
    c->refs++; /* finishing drops the active reference under us */
    switch ((enum comb_kind)c->kind) {
    case COMB_GATHER:
        gather_on_input(c, l);
        break;
    case COMB_WAIT:
        wait_on_input(c, l);
        break;
    case COMB_AS_COMPLETED:
        as_completed_on_input(c, l);
        break;
    case COMB_FIRST:
        first_on_input(c, l);
        break;
    case COMB_TIMEOUT:
    case COMB_LATER:
        mirror_on_input(c, l);
        break;
    case COMB_SLEEP:
        break; /* has no inputs */
    }
    comb_unref(c);
}

static void link_on_done(tc_future *f, void *data)
{
    struct link *l = data;
    l->attached = false;
    comb_on_input(l->c, l);
}

/* The output future was cancelled: stop, and cancel the inputs where the combinator says so. */
static void comb_on_cancel(tc_future *out, void *data)
{
    struct comb *c = data;
    if (c->finished)
        return;
    c->refs++;
    comb_stop(c);
    switch ((enum comb_kind)c->kind) {
    case COMB_GATHER:
    case COMB_FIRST:
    case COMB_TIMEOUT:
    case COMB_LATER:
        cancel_pending_inputs(c);
        break;
    case COMB_WAIT:
    case COMB_AS_COMPLETED:
    case COMB_SLEEP:
        break; /* these never cancel their inputs */
    }
    comb_release(c);
    comb_unref(c);
}

/* Hands the output to the caller, then handles inputs that were already done, in input order.
 * The caller has attached the pending inputs. Takes a guard reference the caller drops. */
static void comb_expose(struct comb *c, tc_future **out)
{
    *out = tc_future_ref(c->out); /* the caller's reference; the comb keeps its own */
    c->refs++;
    /* The guard reference just taken keeps c alive through comb_on_input(). */
    // NOLINTNEXTLINE(clang-analyzer-unix.Malloc)
    for (size_t i = 0; i < c->n && !c->finished; i++) {
        struct link *l = &c->links[i];
        if (!l->attached && !l->seen && tc_future_done(l->f))
            comb_on_input(c, l);
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
    struct comb *c = NULL;
    if (rc == 0)
        rc = comb_new(&c, COMB_GATHER, futures, n);
    if (rc == 0 && (rc = comb_attach_pending(c)) < 0)
        comb_discard(c);
    if (rc != 0)
        return rc;
    c->flags = flags;
    comb_expose(c, out);
    if (!c->finished && c->n == 0)
        gather_finish(c, NULL);
    comb_unref(c);
    return 0;
}

static void wait_on_timer(uv_timer_t *t)
{
    struct comb *c = t->data;
    if (c->finished)
        return;
    c->refs++;
    wait_finish(c);
    comb_unref(c);
}

int tc_wait(tc_future **out, uv_loop_t *loop, tc_future *const *futures, size_t n,
            tc_wait_mode mode, int64_t timeout_ms)
{
    if (out == NULL || loop == NULL ||
        (mode != TC_FIRST_COMPLETED && mode != TC_FIRST_EXCEPTION && mode != TC_ALL_COMPLETED))
        return TC_EINVAL;
    int rc = check_inputs(futures, n);
    struct comb *c = NULL;
    if (rc == 0)
        rc = comb_new(&c, COMB_WAIT, futures, n);
    if (rc != 0)
        return rc;
    c->mode = mode;
    /* Every input already done belongs in the done set, so record them all before deciding. */
    bool holds = false;
    for (size_t i = 0; i < n; i++) {
        struct link *l = &c->links[i];
        if (tc_future_done(l->f)) {
            l->seen = true;
            l->rank = c->nseen++;
            holds = holds || wait_condition_holds(c, l);
        }
    }
    holds = holds || wait_condition_holds(c, NULL);
    if (!holds) {
        if ((rc = comb_attach_pending(c)) == 0 && timeout_ms >= 0)
            rc = comb_start_timer(c, loop, (uint64_t)timeout_ms, wait_on_timer);
        if (rc < 0) {
            comb_stop(c);
            comb_discard(c);
            return rc;
        }
    }
    comb_expose(c, out);
    if (holds)
        wait_finish(c);
    comb_unref(c);
    return 0;
}

static void as_completed_on_timer(uv_timer_t *t)
{
    struct comb *c = t->data;
    if (c->finished)
        return;
    c->refs++;
    comb_stop(c);
    tc_future *out = c->out;
    for (size_t i = 0; i < c->n; i++) {
        if (tc_future_state_of(out) == TC_FUTURE_CANCELLED)
            break; /* a report cancelled the as_completed future: stop reporting */
        if (!c->links[i].seen)
            c->report(c->links[i].f, i, 1, c->data);
    }
    tc_future_reject(out, TC_ETIMEDOUT, NULL);
    comb_release(c);
    comb_unref(c);
}

int tc_as_completed(tc_future **out, uv_loop_t *loop, tc_future *const *futures, size_t n,
                    int64_t timeout_ms, tc_as_completed_cb cb, void *data)
{
    if (out == NULL || loop == NULL || cb == NULL)
        return TC_EINVAL;
    int rc = check_inputs(futures, n);
    struct comb *c = NULL;
    if (rc == 0)
        rc = comb_new(&c, COMB_AS_COMPLETED, futures, n);
    if (rc != 0)
        return rc;
    c->report = cb;
    c->data = data;
    bool all_done = true;
    for (size_t i = 0; i < n; i++)
        all_done = all_done && tc_future_done(futures[i]);
    if (!all_done) {
        if ((rc = comb_attach_pending(c)) == 0 && timeout_ms >= 0)
            rc = comb_start_timer(c, loop, (uint64_t)timeout_ms, as_completed_on_timer);
        if (rc < 0) {
            comb_stop(c);
            comb_discard(c);
            return rc;
        }
    }
    comb_expose(c, out);
    if (!c->finished && c->n == 0) {
        comb_stop(c);
        tc_future_fulfill(c->out, NULL, NULL);
        comb_release(c);
    }
    comb_unref(c);
    return 0;
}

int tc_first_success(tc_future **out, tc_future *const *futures, size_t n)
{
    if (out == NULL)
        return TC_EINVAL;
    int rc = check_inputs(futures, n);
    struct comb *c = NULL;
    if (rc == 0)
        rc = comb_new(&c, COMB_FIRST, futures, n);
    if (rc == 0 && (rc = comb_attach_pending(c)) < 0)
        comb_discard(c);
    if (rc != 0)
        return rc;
    comb_expose(c, out);
    if (!c->finished && c->n == 0) {
        comb_stop(c);
        tc_future_reject(c->out, TC_EALLFAILED, "every attempt failed: no inputs");
        comb_release(c);
    }
    comb_unref(c);
    return 0;
}

int tc_with_timeout(tc_future **out, uv_loop_t *loop, tc_future *inner, uint64_t timeout_ms)
{
    if (out == NULL || loop == NULL || inner == NULL)
        return TC_EINVAL;
    struct comb *c = NULL;
    int rc = comb_new(&c, COMB_TIMEOUT, &inner, 1);
    if (rc < 0)
        return rc;
    if (!tc_future_done(inner)) {
        if ((rc = comb_attach_pending(c)) == 0)
            rc = comb_start_timer(c, loop, timeout_ms, timeout_on_timer);
        if (rc < 0) {
            comb_stop(c);
            comb_discard(c);
            return rc;
        }
    }
    comb_expose(c, out);
    comb_unref(c);
    return 0;
}

static void sleep_on_timer(uv_timer_t *t)
{
    struct comb *c = t->data;
    if (c->finished)
        return;
    c->refs++;
    comb_stop(c);
    tc_future_fulfill(c->out, NULL, NULL);
    comb_release(c);
    comb_unref(c);
}

int tc_sleep(tc_future **out, uv_loop_t *loop, uint64_t ms)
{
    if (out == NULL || loop == NULL)
        return TC_EINVAL;
    struct comb *c = NULL;
    int rc = comb_new(&c, COMB_SLEEP, NULL, 0);
    if (rc < 0)
        return rc;
    if ((rc = comb_start_timer(c, loop, ms, sleep_on_timer)) < 0) {
        comb_stop(c);
        comb_discard(c);
        return rc;
    }
    comb_expose(c, out);
    comb_unref(c);
    return 0;
}

/* The delay has passed: close the timer, start the inner operation and mirror it. The comb has
 * one link, empty until start() gives it the inner future (whose reference passes to us). */
static void later_on_timer(uv_timer_t *t)
{
    struct comb *c = t->data;
    if (c->finished)
        return;
    c->refs++;
    comb_close_timer(c);
    tc_future *inner = NULL;
    int rc = c->start(c->data, &inner);
    if (c->finished) {
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
        comb_stop(c);
        tc_future_reject(c->out, rc < 0 ? rc : TC_EINVAL, NULL);
        comb_release(c);
    } else {
        struct link *l = &c->links[0];
        l->f = inner;
        if (!tc_future_done(inner) && tc_future_on_done(inner, link_on_done, l) == 0) {
            l->attached = true;
        } else if (!tc_future_done(inner)) {
            comb_stop(c);
            tc_future_cancel(inner);
            tc_future_reject(c->out, TC_ENOMEM, NULL);
            comb_release(c);
        } else {
            comb_on_input(c, l);
        }
    }
    /* Drops the guard reference taken at the top, which kept c alive until here. */
    // NOLINTNEXTLINE(clang-analyzer-unix.Malloc)
    comb_unref(c);
}

int tc_call_later(tc_future **out, uv_loop_t *loop, uint64_t ms, tc_start_fn start, void *data)
{
    if (out == NULL || loop == NULL || start == NULL)
        return TC_EINVAL;
    struct comb *c = NULL;
    int rc = comb_new(&c, COMB_LATER, NULL, 1);
    if (rc < 0)
        return rc;
    c->start = start;
    c->data = data;
    if ((rc = comb_start_timer(c, loop, ms, later_on_timer)) < 0) {
        comb_stop(c);
        comb_discard(c);
        return rc;
    }
    *out = tc_future_ref(c->out); /* links[0] stays empty until the timer fires */
    return 0;
}
