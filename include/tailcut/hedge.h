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
 *
 * Every attempt carries the request header `X-Tailcut-Attempt: N` (1 for the first attempt fired,
 * 2, 3... in firing order), so an upstream can tell hedges apart; a caller's header of that name
 * is replaced.
 *
 * Adaptive hedging adds three objects that any C program can use on its own:
 *
 *   tc_latency         a decaying latency estimator that takes censored records (attempts
 *                      cancelled while still running) and reads them as lower bounds: the
 *                      product-limit (Kaplan-Meier) estimate, or a lower confidence bound of it,
 *                      over a fixed-size log-linear histogram ring (TC_LATENCY_SLICES slices of
 *                      TC_LATENCY_SLICE_MS, decaying with time constant TC_LATENCY_DECAY_MS),
 *                      answers at most 1/64 above the quantile's values and never below them,
 *                      O(1) record, one pass over the buckets per query, no allocation after
 *                      creation. One owner thread.
 *   tc_hedge_adaptive  the percentile delay in force: one estimator, the warm-up count and the
 *                      fallback, behind a short mutex, so one object serves every worker of a
 *                      process.
 *   tc_hedge_budget    the extra-load budget: an extra attempt may fire at t only if the extras
 *                      fired in (t - 1 s, t], itself included, number at most
 *                      floor(PCT x R / 100) + 1, R being the hedges started in (t - 1 s, t].
 *                      Exact on a millisecond clock; one object per process behind a short
 *                      mutex, shared by every worker.
 *
 * A policy with `staggered` set fires extra attempt k (k = 1..extra) k x delay after the first,
 * and fires the next one at once whenever nothing is in flight; without it (the seed policy) all
 * extras fire together at the delay, or as soon as every attempt so far has failed. With a
 * budget, each extra is checked as it would fire; a denied one is dropped, never fired later, and
 * a hedge with nothing in flight whose next extra is denied ends at once (TC_EALLFAILED).
 *
 * Head mode (policy.at_head, the transparent proxy's): every attempt streams its response
 * (stream_response) and *answers at its final response head*: the judge sees the head (status
 * and headers; the body is empty and still to come), the first head the judge accepts wins at
 * once (the others are cancelled), and a refused head is a failed attempt, which the policy
 * reacts to as to any failure, and which the replica set counts as a FAILURE whatever its status
 * (the judge holds the caller's failure statuses: tc_hedge_judge_head). The winner's body is the
 * caller's to read (tc_response_read_body on the winner's response), for as long as it holds the
 * hedge's future; its latency (for the adaptive delay and the replica's average) is its time to
 * head. The last attempt that failed with a head is kept unread (result.last_failed) so the
 * caller can pass it on when every attempt fails; every other answered attempt's transfer is
 * aborted (tc_response_abort) as soon as it is not needed: a failed head when a later one
 * replaces it, and every response but the winner's when the hedge ends with one.
 *
 * Replicas (tailcut/replica.h). A policy with a replica set sends each attempt to a replica the
 * set chooses: the first attempt by power of two choices, every later one (the other initial
 * attempts included) to the best replica the hedge has not tried yet. The policy's `prepare`
 * hook fills each attempt's request for its replica (URL, connect address) just before it
 * starts. Each attempt's end is reported to the set exactly once, cancellation included, with
 * its elapsed time and its class: SUCCESS (the judge said so, or a status other than 5xx and 429
 * that the judge refused), FAILURE (5xx, 429, invalid JSON, a body over the limit, refused,
 * reset, stale, DNS, TLS, timeout, malformed), CANCELLED, or NOT_SENT (never reached the
 * replica: the attempt could not be started). The result names each attempt's replica. The
 * budget, the delay and the schedule are the same with or without a set.
 */
#ifndef TAILCUT_HEDGE_H
#define TAILCUT_HEDGE_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "tailcut/client.h"
#include "tailcut/future.h"
#include "tailcut/replica.h"

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

/* Head mode's judge: data is a tc_hedge_statuses; a status in it is TC_OUTCOME_HTTP_STATUS
 * (failed), any other status TC_OUTCOME_SUCCESS (it is the upstream's answer). data NULL: no
 * status fails. */
typedef struct tc_hedge_statuses {
    const int *v;
    size_t n;
} tc_hedge_statuses;
tc_attempt_outcome tc_hedge_judge_head(const tc_response *resp, void *data);

/* ---- the latency estimator ------------------------------------------------------------------- */

/* The window is TC_LATENCY_SLICES slices of TC_LATENCY_SLICE_MS: the current slice and the nine
 * before it, so nothing older than 10 s counts (the horizon). Inside it, a record weighs
 * exp(-k x TC_LATENCY_SLICE_MS / TC_LATENCY_DECAY_MS) when its slice is k slices old (0 for the
 * current one): an exponential decay of time constant 4 s, in steps of a slice, cut at the
 * horizon. Why these numbers (a step of the latencies shows at the percentile within about a
 * second, and is forgotten within 10 s; noise moves the percentile less than a 5 s window
 * would): docs/hedge.md, "The window". */
#define TC_LATENCY_SLICES 10
#define TC_LATENCY_SLICE_MS 1000
#define TC_LATENCY_DECAY_MS 4000
/* Values are microseconds; larger ones are counted as this (about 71 minutes). */
#define TC_LATENCY_MAX_US UINT64_C(4294967295)

/* What tc_latency_quantile answered (both are >= 0; errors are negative). */
#define TC_LATENCY_QUANTILE 0 /* the product-limit q-quantile, or its lower bound */
#define TC_LATENCY_LARGEST                                                                         \
    1 /* the estimate never falls to the bound: the largest value recorded                         \
       */
/* The largest z tc_latency_quantile takes (a bound 10 standard errors wide is already no
 * estimate at all). */
#define TC_LATENCY_MAX_Z 10.0

typedef struct tc_latency tc_latency;

/* Creates an estimator with an empty window. All its memory (about 150 KiB) is allocated here and
 * nothing more ever is. Returns 0, TC_EINVAL (out NULL), TC_ENOMEM. */
int tc_latency_new(tc_latency **out);

/* Frees e (NULL is fine). */
void tc_latency_free(tc_latency *e);

/* Counts one finished value (microseconds: a latency known exactly) at time now_ms (any
 * monotonic millisecond clock, the same for every call on e; a time earlier than the latest seen
 * counts as the latest). O(1): an index from the value's leading bit, a few increments, and,
 * once per slice, forgetting the slices that left the window. Not thread-safe: one owner, or a
 * lock around it (tc_hedge_adaptive). */
void tc_latency_record(tc_latency *e, uint64_t now_ms, uint64_t value_us);

/* Counts one censored value: something still running after value_us (an attempt cancelled at
 * that elapsed time), whose own latency is larger by an unknown amount. It is never read as a
 * latency: it only stops counting among the records still running above its value. Same clock,
 * cost and threading as tc_latency_record. */
void tc_latency_record_censored(tc_latency *e, uint64_t now_ms, uint64_t value_us);

/* Records of both kinds in the window as of now_ms (unweighted). */
uint64_t tc_latency_count(tc_latency *e, uint64_t now_ms);

/* The q-quantile (0 < q <= 1) of the window as of now_ms, by the product-limit (Kaplan-Meier)
 * estimate of the weighted records, read as a lower confidence bound z standard errors wide
 * (z = 0: the estimate itself). Walking the values upwards, S(t) is the product over the finished
 * values v <= t of 1 - d(v) / n(v), where d(v) is the weight finished at v and n(v) the weight of
 * every record, of either kind, at or above v; its variance is Greenwood's,
 * S(t)^2 x sum over v <= t of d(v) / (n(v) (n(v) - d(v))), with the weights scaled to sum to the
 * window's effective count (sum w)^2 / sum w^2, so SE(t) is about sqrt(S (1 - S) / n_eff) when
 * nothing is censored. The answer is the smallest finished value t where
 * S(t) <= 1 - q + z x SE(t). With z = 0, no censored record and equal weights it is the nearest
 * rank, the value of rank ceil(q x n). A censored record of the same value as a finished one is
 * still at risk when the finished one ends (the usual convention). docs/hedge.md, "The bound",
 * says why the bound and how wide.
 *
 * Resolution: values are read at their bucket (a bucket spans at most 1/64 of its lower bound;
 * each value under 64 us has its own), and ties are taken at that resolution: a censored record
 * counts as still running through the whole of its bucket. The answer is the top of the bucket
 * (the largest value it holds) where the rule above, applied to the records with each censored
 * value raised to the top of its bucket, first holds: never below the quantile (or bound) of
 * those records and less than 1/64 above it (exact under 64 us); never below the same quantile
 * of the raw records either (raising a censored value only keeps it at risk longer, which raises
 * both S and the bound's reach).
 *
 * Returns TC_LATENCY_QUANTILE with *value_us the quantile; TC_LATENCY_LARGEST when the rule never
 * holds (the slowest records were censored: the quantile lies above them, unknown), with
 * *value_us the top of the bucket of the largest value recorded in the window; TC_EINVAL (q out of
 * range, z not in 0..TC_LATENCY_MAX_Z, value_us NULL); TC_EMISSING (the window is empty). One pass
 * over the non-empty buckets, each summed over the slices: a few thousand steps, whatever the
 * number of records. */
int tc_latency_quantile(tc_latency *e, uint64_t now_ms, double q, double z, uint64_t *value_us);

/* ---- the percentile delay ----------------------------------------------------------------------
 */

/* Attempts recorded (per process) before the percentile is trusted. */
#define TC_HEDGE_WARMUP 100
/* The delay is re-estimated at least this often. */
#define TC_HEDGE_REFRESH_MS 250
/* The percentile delay is the lower confidence bound this many standard errors wide (one-sided
 * 97.7%): docs/hedge.md, "The bound". */
#define TC_HEDGE_Z 2.0

typedef struct tc_hedge_adaptive_config {
    double percentile;    /* 50 to 99.9, e.g. 99 for p99 [99] */
    uint64_t fallback_ms; /* the delay during warm-up and while the window is empty [300] */
    uint64_t max_ms;      /* the delay never exceeds this (and is never under 1 ms) [60000] */
    uint64_t warmup;      /* attempts recorded since creation before the percentile applies [100] */
    double z;             /* the percentile is read as its lower bound z standard errors wide,
                           * 0 to TC_LATENCY_MAX_Z; 0 is the estimate itself [TC_HEDGE_Z] */
} tc_hedge_adaptive_config;

typedef struct tc_hedge_adaptive tc_hedge_adaptive;

void tc_hedge_adaptive_config_init(tc_hedge_adaptive_config *cfg);

/* Creates the delay source. Thread-safe: every call below takes one short uv_mutex_t (a record
 * is a histogram increment inside it), so one object serves all the workers of a process, and
 * its warm-up count is the process's. Returns 0, TC_EINVAL (bad percentile or z, or max_ms 0),
 * TC_ENOMEM. */
int tc_hedge_adaptive_new(tc_hedge_adaptive **out, const tc_hedge_adaptive_config *cfg);

/* Frees a (NULL is fine) once no thread uses it. */
void tc_hedge_adaptive_free(tc_hedge_adaptive *a);

/* Records one attempt that answered, at its latency (microseconds), at now_ms (one monotonic
 * clock for all callers, e.g. uv_hrtime() / 1000000): a finished value (tc_latency_record).
 * tc_hedge_start() calls this itself for its policy's `adaptive`, for each success. */
void tc_hedge_adaptive_record(tc_hedge_adaptive *a, uint64_t now_ms, uint64_t latency_us);

/* Records one attempt cancelled after elapsed_us because another won: a censored value
 * (tc_latency_record_censored), a lower bound of a latency nobody saw end. Same clock as above.
 * tc_hedge_start() calls this itself for each attempt it cancels for a winner. */
void tc_hedge_adaptive_record_censored(tc_hedge_adaptive *a, uint64_t now_ms, uint64_t elapsed_us);

/* The delay in force at now_ms, in milliseconds: the fallback until `warmup` attempts (of both
 * kinds) have been recorded and whenever the window is empty; else tc_latency_quantile's answer
 * for the percentile and the config's z: the lower bound of the product-limit percentile, or the
 * largest value recorded when the records cannot reach it, rounded UP to a whole millisecond, so
 * never below a latency of the percentile's bucket and less than 1/64 + 1 ms above the bound.
 * Re-estimated when TC_HEDGE_REFRESH_MS have passed since the last estimate; always within
 * [1, max_ms]. */
uint64_t tc_hedge_adaptive_delay_ms(tc_hedge_adaptive *a, uint64_t now_ms);

/* Attempts recorded since creation, both kinds. */
uint64_t tc_hedge_adaptive_recorded(tc_hedge_adaptive *a);

/* ---- the budget --------------------------------------------------------------------------------
 */

/* 100% in the budget's fixed-point unit: a percentage is held in millionths of a percent. */
#define TC_HEDGE_BUDGET_SCALE UINT64_C(1000000)

typedef struct tc_hedge_budget tc_hedge_budget;

/* Parses a --hedge-budget value: digits[.digits] with at most 6 decimals, 0 < PCT <= 100. Returns
 * 0 and sets *out to PCT x TC_HEDGE_BUDGET_SCALE, or TC_EINVAL. */
int tc_hedge_budget_parse(const char *text, uint64_t *out);

/* Creates a budget of percent_e6 / TC_HEDGE_BUDGET_SCALE percent (1 to 100 x SCALE). Thread-safe:
 * each call takes one short uv_mutex_t. Returns 0, TC_EINVAL, TC_ENOMEM. */
int tc_hedge_budget_new(tc_hedge_budget **out, uint64_t percent_e6);

/* Frees b (NULL is fine) once no thread uses it. */
void tc_hedge_budget_free(tc_hedge_budget *b);

/* Counts one request (R) at now_ms. Times are on one monotonic millisecond clock for all
 * callers (e.g. uv_hrtime() / 1000000); a time earlier than the latest seen counts as the
 * latest. tc_hedge_start() calls this itself for a policy with a budget. */
void tc_hedge_budget_admit(tc_hedge_budget *b, uint64_t now_ms);

/* Asks for one extra attempt at now_ms: returns 1 and counts it if the extras in
 * (now - 1 s, now], this one included, stay within floor(PCT x R / 100) + 1; else returns 0 and
 * counts a denial. */
int tc_hedge_budget_try_extra(tc_hedge_budget *b, uint64_t now_ms);

/* Extra attempts denied since creation. */
uint64_t tc_hedge_budget_denied(tc_hedge_budget *b);

/* ---- the hedge ---------------------------------------------------------------------------------
 */

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
    /* Adaptive hedging; all off by default. */
    int staggered;               /* extra k is due k x delay after the first attempt [0] */
    tc_hedge_adaptive *adaptive; /* the delay comes from here, read when the hedge starts, and
                                  * the hedge records into it as it ends: each success at its
                                  * latency, each attempt cancelled because another won at its
                                  * elapsed time, as censored; failures never
                                  * [NULL: hedge_delay_ms] */
    tc_hedge_budget *budget;     /* counts this hedge as a request and checks every extra [NULL] */
    /* Replicas; off by default (every attempt is the request as given). */
    tc_replica_set *replicas;      /* chooses each attempt's replica and hears how it ended
                                    * [NULL]; an empty set fails the attempt as a connect error */
    tc_replica_prepare_fn prepare; /* fills each attempt's request for its replica; called on
                                    * the loop just before the attempt starts, with a copy of
                                    * the request it may change [NULL: the request as given] */
    void *prepare_data;
    /* Head mode (above): attempts answer at their response head [0]. */
    int at_head;
} tc_hedge_policy;

/* Fills p with the smart defaults above: FIRST, 1 + 2 after 300 ms, hedge on failure. */
void tc_hedge_policy_init(tc_hedge_policy *p);

typedef struct tc_hedge_attempt {
    tc_future *response; /* the client's future; its value is a tc_response * when fulfilled */
    tc_attempt_outcome outcome;
    int hedged;          /* 1 if fired by the hedge */
    uint64_t started_ns; /* uv_hrtime() */
    uint64_t ended_ns;
    int replica; /* the id of its replica; -1 without a replica set, or when none was chosen */
    int panic;   /* 1 if its replica was chosen in panic (no replica was eligible) */
} tc_hedge_attempt;

/* The value of a finished hedge's future. Owned by the future. */
typedef struct tc_hedge_result {
    int error; /* 0, TC_ETIMEDOUT or TC_EALLFAILED (see the modes above); TC_ECANCELED only as
                * seen by policy.observe when the hedge was cancelled */
    unsigned nattempts;  /* attempts fired */
    int hedge_fired;     /* 1 if at least one extra attempt was fired */
    unsigned denied;     /* extra attempts the budget denied */
    uint64_t delay_ms;   /* the hedge delay this hedge used */
    int winner;          /* TC_HEDGE_FIRST: index of the winning attempt, else -1 */
    unsigned nsuccesses; /* successes, in completion order: */
    unsigned successes[TC_HEDGE_MAX_ATTEMPTS];
    tc_hedge_attempt attempts[TC_HEDGE_MAX_ATTEMPTS];
    /* Head mode: the last attempt that failed with a response head, its body unread and its
     * transfer kept for the caller (tc_response_read_body), else -1; -1 once a winner is known. */
    int last_failed;
} tc_hedge_result;

/* The response of attempt i (NULL unless it was answered). */
const tc_response *tc_hedge_response(const tc_hedge_result *r, unsigned i);

/* The replica that answered: the winner's (TC_HEDGE_FIRST), else the first successful attempt's
 * (TC_HEDGE_ALL, TC_HEDGE_DEADLINE); -1 when there is none or the policy had no replica set.
 * The access log's "replica". */
int tc_hedge_result_replica(const tc_hedge_result *r);

/* Starts a hedge of req on client under policy. req is copied (URL and headers included).
 * Every attempt is sent once: req.resend_stale is ignored, so an attempt whose reused connection
 * dies fails (TC_OUTCOME_RESET) and the policy sees it, instead of the client sending it again.
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
