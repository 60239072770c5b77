/*
 * Hedged requests ("The Tail at Scale"): send the same request again when the first answer is
 * slow or bad, take the first good answer, cancel the rest, and never run past a deadline.
 *
 * A hedge runs on the loop of the tc_client it is given. It fires `initial` attempts at once;
 * after `hedge_delay_ms` with no success (or as soon as every attempt fired so far has failed,
 * when hedge_on_failure is set) it fires `extra` more, once. What ends it depends on the mode:
 *
 *   TC_HEDGE_FIRST     the first successful attempt wins; the others are cancelled at once.
 *                      Ends with TC_ETIMEDOUT at the deadline, TC_EALLFAILED when every attempt
 *                      that can be fired has failed.
 *   TC_HEDGE_ALL       waits for every attempt. Ends with TC_ETIMEDOUT if the deadline comes
 *                      first, else with the successes (TC_EALLFAILED if there are none).
 *   TC_HEDGE_DEADLINE  waits for every attempt or the deadline, whichever is first, and ends
 *                      with the successes so far (possibly none); never an error.
 *
 * Whatever ends the hedge, every attempt still running is cancelled at that moment (its
 * transfer aborted) and the hedge's timers are stopped, so nothing is left running.
 */
#ifndef TAILCUT_HEDGE_H
#define TAILCUT_HEDGE_H

#include <stddef.h>
#include <stdint.h>

#include "tailcut/client.h"
#include "tailcut/future.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TC_HEDGE_MAX_ATTEMPTS 16

typedef enum tc_hedge_mode { TC_HEDGE_FIRST = 0, TC_HEDGE_ALL, TC_HEDGE_DEADLINE } tc_hedge_mode;

/* How one attempt ended. */
typedef enum tc_attempt_outcome {
    TC_OUTCOME_PENDING = 0,
    TC_OUTCOME_SUCCESS,
    TC_OUTCOME_HTTP_STATUS,   /* answered, but not with status 200 */
    TC_OUTCOME_INVALID_JSON,  /* 200, body not valid JSON */
    TC_OUTCOME_TOO_LARGE,     /* body over the limit */
    TC_OUTCOME_CONNECT_ERROR, /* refused, DNS, TLS, bad URL */
    TC_OUTCOME_RESET,         /* connection reset or closed mid-response */
    TC_OUTCOME_TIMEOUT,
    TC_OUTCOME_CANCELLED, /* cancelled because the hedge ended first */
    TC_OUTCOME_OTHER,
    TC_OUTCOME_COUNT
} tc_attempt_outcome;

/* Metric label of an outcome: "success", "http_status", "invalid_json", ... */
const char *tc_attempt_outcome_name(tc_attempt_outcome outcome);

/* Decides whether a response is a success. Returns TC_OUTCOME_SUCCESS or the failure outcome. */
typedef tc_attempt_outcome (*tc_hedge_judge_fn)(const tc_response *resp, void *data);

/* The default judge: status 200 and a body that is one valid JSON text (RFC 8259). The body
 * limit is the request's max_body, enforced by the client. */
tc_attempt_outcome tc_hedge_judge_json(const tc_response *resp, void *data);

struct tc_hedge_result;

typedef struct tc_hedge_policy {
    tc_hedge_mode mode;
    unsigned initial;        /* attempts fired at once [1] */
    unsigned extra;          /* attempts fired by the hedge [2]; 0 = never hedge */
    uint64_t hedge_delay_ms; /* [300] */
    int hedge_on_failure;    /* hedge as soon as every attempt fired so far failed [1] */
    uint64_t deadline_ms;    /* absolute, on the loop's uv_now() clock; 0 = none */
    tc_hedge_judge_fn judge; /* NULL = tc_hedge_judge_json */
    void *judge_data;
    /* Called once when the hedge ends, however it ends (cancellation included), with every
     * attempt's outcome final and before the future's callbacks run: the one place to count
     * attempts. May be NULL. */
    void (*observe)(const struct tc_hedge_result *result, void *data);
    void *observe_data;
} tc_hedge_policy;

/* Fills p with the smart defaults above: FIRST, 1 + 2 after 300 ms, hedge on failure. */
void tc_hedge_policy_init(tc_hedge_policy *p);

typedef struct tc_hedge_attempt {
    tc_future *response; /* the client's future; its value is a tc_response * when fulfilled */
    tc_attempt_outcome outcome;
    int hedged;          /* 1 if fired by the hedge */
    uint64_t started_ns; /* uv_hrtime() */
    uint64_t ended_ns;
} tc_hedge_attempt;

/* The value of a finished hedge's future. Owned by the future. */
typedef struct tc_hedge_result {
    int error; /* 0, TC_ETIMEDOUT or TC_EALLFAILED (see the modes above); TC_ECANCELED only as
                * seen by policy.observe when the hedge was cancelled */
    unsigned nattempts;  /* attempts fired */
    int hedge_fired;     /* 1 if the extra attempts were fired */
    int winner;          /* TC_HEDGE_FIRST: index of the winning attempt, else -1 */
    unsigned nsuccesses; /* successes, in completion order: */
    unsigned successes[TC_HEDGE_MAX_ATTEMPTS];
    tc_hedge_attempt attempts[TC_HEDGE_MAX_ATTEMPTS];
} tc_hedge_result;

/* The response of attempt i (NULL unless it was answered). */
const tc_response *tc_hedge_response(const tc_hedge_result *r, unsigned i);

/* Starts a hedge of req on client under policy. req is copied (URL and headers included).
 * *out fulfils with a tc_hedge_result in every case but cancellation; cancelling it (for example
 * because the caller's client went away) cancels every attempt and stops the timers.
 * Returns 0, TC_EINVAL (initial == 0, initial + extra > TC_HEDGE_MAX_ATTEMPTS, ...), TC_ENOMEM;
 * then no future. */
int tc_hedge_start(tc_future **out, tc_client *client, const tc_client_request *req,
                   const tc_hedge_policy *policy);

#ifdef __cplusplus
}
#endif
#endif /* TAILCUT_HEDGE_H */
