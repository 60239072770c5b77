/*
 * A replica set: the copies of one service, and which copy gets each attempt.
 *
 * "The Tail at Scale" sends the extra attempt to *another* replica, because most slowness sticks
 * to one machine for a while (a garbage-collection pause, a noisy neighbour, a hot shard): a
 * second try on the same one often waits just as long. A tc_replica_set knows the replicas of one
 * service and chooses one for every attempt; the caller reports how each attempt ended. Any C
 * program can use it on its own; tc_hedge_start() uses it for a policy with `replicas` set, and
 * tc_replica_request_start() sends one call through it.
 *
 * The invariants, before the mechanics:
 *   - An extra attempt never goes to a replica its request has tried while an untried one is
 *     eligible.
 *   - A replica that is failing, or much slower than the others, stops getting attempts, but
 *     never more than max_ejected_pct percent of the set at once and never the only replica;
 *     and one that was slow is tried again once it may have recovered.
 *   - When no replica is eligible, attempts still go somewhere (panic), never nowhere.
 *   - Every attempt a choice counts in flight is uncounted exactly once, by the caller's report.
 *
 * The score. Each replica has an *average*: a peak-sensitive moving average of its attempts'
 * latency (milliseconds), with time constant TC_REPLICA_TAU_MS (tau). Let A be a replica's stored
 * average, t its last sample's time, and L the lowest stored average of the replicas in the set
 * (those added and not removed). At time now its average *as read* is
 *
 *     avg(now) = L + (A - L) x exp(-(now - t) / tau)   when A > L,   else A,
 *
 * so a replica with no sample decays toward the lowest average of the set, continuously from its
 * last sample and with the same tau ("for a while" is: since its last sample; a replica sampled
 * every few milliseconds hardly moves). A replica with no average yet reads as L, or as 0 when no
 * replica of the set has an average. Its *score* is avg(now) x (its attempts in flight + 1);
 * lower is better.
 *
 * Samples. A report at time now with elapsed time x (ms) makes one sample s, or none:
 *   SUCCESS     s = x
 *   FAILURE     s = max(x, avg(now)) (x when there is no average): a fast failure never makes a
 *               replica look faster
 *   CANCELLED   s = x when there is no average or x > avg(now); otherwise no sample
 *   NOT_SENT    no sample
 * With no average, A becomes s. Otherwise, with e = avg(now) and w = exp(-(now - t) / tau):
 * s > e replaces it at once (A = s); s <= e moves it toward s: A = s + (e - s) x w. Either way t
 * becomes now.
 *
 * States. AVAILABLE, EJECTED (no attempts) or PROBING (at most one attempt at a time). *Eligible*:
 * the available replicas and the probing ones with no attempt in flight.
 *   - Ejection on failures: eject_failures consecutive FAILUREs eject an available replica
 *     (reason FAILURES). A SUCCESS resets the count; CANCELLED and NOT_SENT leave it as it is.
 *   - Ejection on latency (eject_latency_factor F > 0, and at least TC_REPLICA_SLOW_MIN replicas
 *     in the set): an available replica whose avg(now) stays above F x the median avg(now) of the
 *     available replicas that have an average, for TC_REPLICA_SLOW_MS, is ejected (reason
 *     LATENCY). The median of k values is the middle one (k odd) or the mean of the two middle
 *     ones (k even). The check runs on the set's calls, at most every TC_REPLICA_CHECK_MS, so
 *     "stays above" is sampled at that resolution.
 *   - An ejection lasts TC_REPLICA_EJECT_MS x the times this replica has been ejected, at most
 *     TC_REPLICA_EJECT_MAX_MS; then the replica is PROBING. A probing replica's first SUCCESS
 *     makes it AVAILABLE; a FAILURE ejects it again (reason FAILURES); CANCELLED and NOT_SENT
 *     leave it probing. A SUCCESS of an attempt that reached an EJECTED replica (chosen in panic,
 *     or in flight when it was ejected) does not end the ejection.
 *   - The cap: ejected and probing replicas together never exceed
 *     floor(max_ejected_pct x n / 100), n the replicas in the set (0 %: never eject). An ejection
 *     the cap forbids does not happen (a failing replica is ejected on a later failure once the
 *     cap allows). A set of one replica never ejects it.
 *
 * Choosing. The first attempt of a request: two distinct eligible replicas drawn at random (one
 * when only one is eligible), the lower score wins, a tie goes to the first drawn (power of two
 * choices). Any later attempt of the same request (the caller passes the ids it has tried): the
 * lowest score among the eligible replicas not tried, or when every eligible one was tried,
 * among all eligible ones; ties are broken at random. Panic: with no eligible replica, the same
 * rules run over every replica of the set as if it were available, and the choice says so.
 * Choosing counts the attempt in flight on its replica; the caller must report that attempt's end
 * exactly once (tc_replica_done), whatever happens to it.
 *
 * Threads and time. Every call takes one short uv_mutex_t, so one set serves every worker of a
 * process and replicas can be added and removed from any thread while attempts run. Times are
 * milliseconds on one monotonic clock for every caller (e.g. uv_hrtime() / 1000000; tests pass a
 * fake one); a time earlier than the latest seen counts as the latest. The draws come from a
 * PRNG seeded from the config: the same seed and the same calls give the same choices.
 */
#ifndef TAILCUT_REPLICA_H
#define TAILCUT_REPLICA_H

#include <stddef.h>
#include <stdint.h>

#include "tailcut/client.h"
#include "tailcut/error.h"
#include "tailcut/future.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Replicas a set holds at once, counting removed ones whose attempts are still in flight. */
#define TC_REPLICA_MAX 256
/* The longest label in bytes (the NUL not counted): "https://" a 253-byte name and ":65535". */
#define TC_REPLICA_LABEL_MAX 320
/* The time constant of the average and of its decay toward the lowest average of the set. */
#define TC_REPLICA_TAU_MS 10000
/* An ejection lasts this long times the times the replica has been ejected, at most the max. */
#define TC_REPLICA_EJECT_MS 10000
#define TC_REPLICA_EJECT_MAX_MS 300000
/* Latency ejection: the average stays above F x the median this long, ... */
#define TC_REPLICA_SLOW_MS 2000
/* ... in a set of at least this many replicas, checked at most this often. */
#define TC_REPLICA_SLOW_MIN 3
#define TC_REPLICA_CHECK_MS 100

typedef enum tc_replica_state {
    TC_REPLICA_AVAILABLE = 0,
    TC_REPLICA_EJECTED,
    TC_REPLICA_PROBING,
    TC_REPLICA_STATE_COUNT
} tc_replica_state;

/* How an attempt ended, as the set sees it. The caller classifies (tc_replica_classify_status,
 * tc_replica_classify_json; the hedge does it itself): CONTRACT section 7 counts as FAILURE a
 * refused or reset connection, a connect timeout, a status 500-599 or 429 and, where the caller
 * checks bodies, an invalid or oversized body; other statuses (4xx included: the client's doing)
 * are SUCCESS; an attempt stopped because its request no longer needed it is CANCELLED. NOT_SENT:
 * the attempt never reached the replica for a reason of the caller's own (its allocation failed,
 * the client was closing): it leaves the in-flight count and is counted as not_sent, and makes
 * no sample and no change of state. */
typedef enum tc_replica_result {
    TC_REPLICA_SUCCESS = 0,
    TC_REPLICA_FAILURE,
    TC_REPLICA_CANCELLED,
    TC_REPLICA_NOT_SENT,
    TC_REPLICA_RESULT_COUNT
} tc_replica_result;

typedef enum tc_replica_reason {
    TC_REPLICA_REASON_FAILURES = 0,
    TC_REPLICA_REASON_LATENCY,
    TC_REPLICA_REASON_COUNT
} tc_replica_reason;

/* Metric labels: "available", "ejected", "probing"; "success", "failure", "cancelled",
 * "not_sent"; "failures", "latency". "unknown" for a value out of range. */
const char *tc_replica_state_name(tc_replica_state state);
const char *tc_replica_result_name(tc_replica_result result);
const char *tc_replica_reason_name(tc_replica_reason reason);

/* ---- the set ------------------------------------------------------------------------------- */

typedef struct tc_replica_set tc_replica_set;

typedef struct tc_replica_config {
    unsigned eject_failures;     /* consecutive failures that eject, 1..1000 [5] */
    double eject_latency_factor; /* F, 1.5..100, or 0 = no ejection on latency [5] */
    unsigned max_ejected_pct;    /* 0..100 [50] */
    uint64_t seed;               /* of the draws [0] */
    /* Called once for each replica's data when the set is done with it: after the replica was
     * removed and its last attempt reported, or by tc_replica_set_free. Runs on the thread of
     * that call, outside the set's lock. May be NULL. */
    void (*release)(void *data);
} tc_replica_config;

/* Fills cfg with the defaults in brackets above. */
void tc_replica_config_init(tc_replica_config *cfg);

/* Creates an empty set (cfg NULL: the defaults; copied). Returns 0, TC_EINVAL (out NULL, a value
 * out of range), TC_ENOMEM. */
int tc_replica_set_new(tc_replica_set **out, const tc_replica_config *cfg);

/* Frees set (NULL is fine) once no thread uses it and no attempt of it is in flight; releases
 * every replica's data that was not released before. */
void tc_replica_set_free(tc_replica_set *set);

/* Adds a replica, AVAILABLE, with no average. label (copied) names it in snapshots: the metric
 * label, e.g. "http://10.0.0.7:8000"; labels need not be unique. data is the caller's (its URL,
 * its address...), handed back by every choice of this replica and to cfg.release at the end.
 * *id is a small integer (below TC_REPLICA_MAX), stable while the replica is in the set; the id
 * of a removed replica may be given to a later one once its last attempt has been reported.
 * Returns 0, TC_EINVAL (NULL argument, label empty or longer than TC_REPLICA_LABEL_MAX),
 * TC_EBUSY (TC_REPLICA_MAX replicas held), TC_ENOMEM; then the set is unchanged and data is
 * still the caller's. */
int tc_replica_add(tc_replica_set *set, const char *label, void *data, unsigned *id);

/* Removes replica id: no choice returns it from now on; its attempts in flight still report
 * (tc_replica_done), and its data is released after the last of them (at once if none). An
 * ejected or probing replica leaves the cap's count. Returns 0, TC_EINVAL (no such replica in
 * the set). */
int tc_replica_remove(tc_replica_set *set, unsigned id);

/* The id of the first replica in the set (by id) labelled label. Returns 0, TC_EINVAL (NULL
 * argument), TC_EMISSING (none). */
int tc_replica_find(tc_replica_set *set, const char *label, unsigned *id);

/* Replicas in the set (added and not removed). */
size_t tc_replica_count(tc_replica_set *set);

/* ---- choosing and reporting ----------------------------------------------------------------- */

typedef struct tc_replica_choice {
    unsigned id;
    void *data; /* the replica's data: valid at least until this attempt is reported */
    int panic;  /* 1 if no replica was eligible (the caller counts it, e.g. as
                 * tailcut_upstream_panic_total; the set counts it too) */
} tc_replica_choice;

/* Chooses the replica of a request's first attempt (power of two choices) at now_ms, and counts
 * the attempt in flight there. Returns 0 and fills *out, TC_EINVAL (NULL argument), TC_EMISSING
 * (the set is empty; nothing is counted). */
int tc_replica_choose_first(tc_replica_set *set, uint64_t now_ms, tc_replica_choice *out);

/* Chooses the replica of a later attempt of the same request: tried[0..ntried) are the ids its
 * earlier attempts went to (duplicates and removed ids are fine). Counts the attempt in flight.
 * Returns 0 and fills *out, TC_EINVAL (NULL argument, tried NULL with ntried > 0), TC_EMISSING
 * (the set is empty). */
int tc_replica_choose_extra(tc_replica_set *set, uint64_t now_ms, const unsigned *tried,
                            size_t ntried, tc_replica_choice *out);

/* Reports the end of an attempt on replica id that a choice counted: how it ended, its elapsed
 * time from its start (microseconds), at now_ms. Samples, counts and state changes as above.
 * Exactly once per choice. Returns 0, TC_EINVAL (set NULL, result out of range, or id has no
 * attempt in flight: nothing changes). */
int tc_replica_done(tc_replica_set *set, unsigned id, tc_replica_result result, uint64_t elapsed_us,
                    uint64_t now_ms);

/* ---- metrics and the dashboard ------------------------------------------------------------- */

/* One replica, as tc_replica_snapshot saw it. */
typedef struct tc_replica_info {
    unsigned id;
    char label[TC_REPLICA_LABEL_MAX + 1];
    tc_replica_state state;
    int has_average;
    double average_ms; /* avg(now) as the score reads it; with no average, what it reads as */
    double score;      /* average_ms x (in_flight + 1) */
    unsigned in_flight;
    uint64_t attempts[TC_REPLICA_RESULT_COUNT];  /* reports since added, by result */
    uint64_t ejections[TC_REPLICA_REASON_COUNT]; /* since added, by reason */
    uint64_t panics;                             /* attempts it got in panic */
    uint64_t ejected_until_ms;                   /* EJECTED: when it starts probing; else 0 */
} tc_replica_info;

/* The whole set. */
typedef struct tc_replica_totals {
    size_t replicas;                       /* in the set */
    size_t states[TC_REPLICA_STATE_COUNT]; /* replicas by state (every state, 0 included) */
    size_t in_flight;                      /* attempts in flight, removed replicas' included */
    uint64_t panics;                       /* attempts chosen in panic since creation */
} tc_replica_totals;

/* Reads the set at now_ms (expired ejections become probing first, as for any call): fills
 * out[0..min(cap, n)) with the n replicas in the set, by id, and *totals (may be NULL). One
 * consistent view, taken under the lock. Returns n (so cap 0 asks how many); 0 for set NULL. */
size_t tc_replica_snapshot(tc_replica_set *set, uint64_t now_ms, tc_replica_info *out, size_t cap,
                           tc_replica_totals *totals);

/* ---- classifying an answer ------------------------------------------------------------------ */

/* An answered attempt by its status: 500-599 and 429 are FAILURE, everything else SUCCESS. */
tc_replica_result tc_replica_classify_status(int status);

/* An answered attempt of a JSON API (kind api, metadata calls): FAILURE for 500-599 and 429, and
 * for a 200 whose body is not one valid JSON text (RFC 8259); SUCCESS otherwise. data unused. */
tc_replica_result tc_replica_classify_json(const tc_response *resp, void *data);

/* ---- sending through a set ------------------------------------------------------------------ */

/* Fills an attempt's request for the replica chosen for it: typically req->url (the replica's
 * URL) and req->connect_to (its address, see client.h), leaving the rest as given. The strings
 * it sets must stay valid until the attempt has started (the client copies them as it starts),
 * e.g. in the caller's per-request state, cached per replica. replica_data is the replica's data
 * (tc_replica_add). Returns 0, or a TC_E* code that fails this attempt without sending it. */
typedef int (*tc_replica_prepare_fn)(void *data, unsigned replica_id, void *replica_data,
                                     tc_client_request *req);

/* How tc_replica_request_start sends. */
typedef struct tc_replica_call {
    tc_replica_set *set;           /* required */
    tc_replica_prepare_fn prepare; /* NULL: every send is the request as given */
    void *prepare_data;
    /* Classifies an answer for the set [NULL: tc_replica_classify_json]. */
    tc_replica_result (*classify)(const tc_response *resp, void *data);
    void *classify_data;
} tc_replica_call;

/* Sends req (copied, URL and headers included) once, to a replica chosen as a first attempt, and
 * reports its end to the set (transport errors are FAILURE, TC_ECANCELED is CANCELLED, an answer
 * goes through classify). The one exception, for calls that are not attempts (CONTRACT section
 * 1's batched metadata calls): when a GET or HEAD fails with TC_ESTALE (a reused connection
 * closed or reset before any byte of the answer), it is sent once more, to a replica chosen as an
 * extra attempt (so another one when there is one), and that send asks for the client's own
 * stale-connection re-send (resend_stale), so a second stale connection costs one more send on
 * a fresh connection rather than the call. The stale send is reported as a FAILURE (a reset).
 * The first send never uses the client's re-send, whatever req.resend_stale says: the call
 * decides where the second send goes. Other methods are never sent twice.
 * *out mirrors the last send: it fulfils with its tc_response (borrowed: valid while *out is
 * referenced) or rejects with its error and message. A send that cannot start rejects it too:
 * TC_ECONNREFUSED ("no replica") when the set is empty, the prepare hook's error, the client's
 * (TC_ENOMEM, TC_ECLOSED, TC_EINVAL); *out may be done when this returns. Cancelling *out
 * cancels the send in flight (reported CANCELLED); closing the client cancels *out. Returns 0,
 * TC_EINVAL (NULL argument or url, no set), TC_ENOMEM (the call itself); then no future and
 * nothing counted. */
int tc_replica_request_start(tc_future **out, tc_client *client, const tc_client_request *req,
                             const tc_replica_call *call);

#ifdef __cplusplus
}
#endif
#endif /* TAILCUT_REPLICA_H */
