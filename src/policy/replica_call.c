/*
 * One call through a replica set (tc_replica_request_start, include/tailcut/replica.h): the
 * batched metadata calls of tailcut serve, and any caller that wants one answer from some copy
 * of a service rather than a hedge.
 *
 * The one idea: a call is at most two sends, each a client request to a replica the set chose,
 * each reported to the set exactly once as it ends; the caller's future mirrors the last one.
 * A second send happens only when the first died on a stale pooled connection (TC_ESTALE)
 * before any byte of its answer: the request then certainly did no harm there, and most likely
 * never reached the application, so it goes to another replica rather than failing the call.
 */
#include <string.h>

#include "base/alloc.h"
#include "base/clock.h"
#include "client/request_copy.h"
#include "core/future_internal.h"
#include "tailcut/replica.h"

#define CALL_MAX_SENDS 2

typedef struct rcall {
    tc_future *out; /* the caller's future; the call holds a reference until it ends */
    tc_client *client;
    tc_replica_call how;
    tc_client_request req; /* the caller's, copied: strings and headers below */
    char *strings;
    tc_header *headers;
    tc_future *send; /* the send in flight (a reference), or the last one */
    int replica;     /* its replica until reported, then -1 */
    uint64_t started_ns;
    unsigned tried[CALL_MAX_SENDS];
    size_t ntried;
} rcall;

static void rcall_free(rcall *rc)
{
    tc_future_unref(rc->send);
    tc_future_unref(rc->out);
    tc__free(rc->strings);
    tc__free(rc->headers);
    tc__free(rc);
}

/* Tells the set how the send ended; once per choice. */
static void report(rcall *rc, tc_replica_result result)
{
    if (rc->replica < 0)
        return;
    uint64_t elapsed_us = (uv_hrtime() - rc->started_ns) / 1000;
    (void)tc_replica_done(rc->how.set, (unsigned)rc->replica, result, elapsed_us, tc__now_ms());
    rc->replica = -1;
}

static tc_replica_result result_of(const rcall *rc, tc_future *f)
{
    switch (tc_future_state_of(f)) {
    case TC_FUTURE_FULFILLED:
        if (rc->how.classify != NULL)
            return rc->how.classify(tc_future_value(f), rc->how.classify_data);
        return tc_replica_classify_json(tc_future_value(f), NULL);
    case TC_FUTURE_REJECTED:
        return tc_future_error(f) == TC_ECANCELED ? TC_REPLICA_CANCELLED : TC_REPLICA_FAILURE;
    default:
        return TC_REPLICA_CANCELLED;
    }
}

/* A GET or HEAD: what may go twice (as the client's own stale re-send). */
static int idempotent(const tc_client_request *req)
{
    return req->method == NULL || strcmp(req->method, "GET") == 0 ||
           strcmp(req->method, "HEAD") == 0;
}

static void call_send(rcall *rc);

static void on_send_done(tc_future *f, void *data)
{
    rcall *rc = data;
    report(rc, result_of(rc, f));
    if (tc_future_done(rc->out)) { /* the caller cancelled: this send was cancelled for it */
        rcall_free(rc);
        return;
    }
    if (tc_future_state_of(f) == TC_FUTURE_REJECTED && tc_future_error(f) == TC_ESTALE &&
        rc->ntried < CALL_MAX_SENDS && idempotent(&rc->req)) {
        tc_future_unref(rc->send); /* the registration keeps f alive until this returns */
        rc->send = NULL;
        call_send(rc);
        return;
    }
    tc__future_mirror(rc->out, f);
    rcall_free(rc);
}

/* The caller cancelled its future: cancel the send, whose callback reports it and ends. */
static void on_out_cancel(tc_future *f, void *data)
{
    rcall *rc = data;
    (void)f;
    if (rc->send != NULL && !tc_future_done(rc->send))
        tc_future_cancel(rc->send);
}

/* Chooses a replica (the first send as a first attempt, the second as an extra one), lets the
 * caller fill the request for it, and starts it. A send that cannot start ends the call. */
static void call_send(rcall *rc)
{
    tc_replica_choice choice;
    int first = rc->ntried == 0;
    int err =
        first ? tc_replica_choose_first(rc->how.set, tc__now_ms(), &choice)
              : tc_replica_choose_extra(rc->how.set, tc__now_ms(), rc->tried, rc->ntried, &choice);
    if (err != 0) {
        tc_future_set_cancel_hook(rc->out, NULL, NULL);
        (void)tc_future_reject(rc->out, TC_ECONNREFUSED, "connection refused: no replica");
        rcall_free(rc);
        return;
    }
    rc->replica = (int)choice.id;
    rc->tried[rc->ntried++] = choice.id;
    tc_client_request req = rc->req;
    /* The first send never re-sends by itself (the call picks the next replica); the second may,
     * on a fresh connection to its replica. */
    req.resend_stale = !first;
    err = rc->how.prepare != NULL
              ? rc->how.prepare(rc->how.prepare_data, choice.id, choice.data, &req)
              : 0;
    rc->started_ns = uv_hrtime();
    if (err == 0)
        err = tc_client_request_start(&rc->send, rc->client, &req);
    if (err == 0 && tc_future_on_done(rc->send, on_send_done, rc) != 0) {
        tc_future_cancel(rc->send); /* unregistered: reported below, not by its callback */
        err = TC_ENOMEM;
    }
    if (err != 0) {
        report(rc, TC_REPLICA_NOT_SENT);
        tc_future_set_cancel_hook(rc->out, NULL, NULL);
        (void)tc_future_reject(rc->out, err, NULL);
        rcall_free(rc);
    }
}

int tc_replica_request_start(tc_future **out, tc_client *client, const tc_client_request *req,
                             const tc_replica_call *call)
{
    if (out == NULL || client == NULL || req == NULL || req->url == NULL || call == NULL ||
        call->set == NULL)
        return TC_EINVAL;
    *out = NULL;
    rcall *rc = tc__calloc(1, sizeof(*rc));
    if (rc == NULL)
        return TC_ENOMEM;
    rc->replica = -1;
    if (tc__request_copy(&rc->req, req, 0, NULL, &rc->strings, &rc->headers) != 0 ||
        tc_future_new(&rc->out) != 0) {
        rcall_free(rc);
        return TC_ENOMEM;
    }
    rc->client = client;
    rc->how = *call;
    tc_future_set_cancel_hook(rc->out, on_out_cancel, rc);
    *out = tc_future_ref(rc->out); /* the caller's; the call keeps its own until it ends */
    call_send(rc);
    return 0;
}
