/*
 * The replica set (see include/tailcut/replica.h for the contract: the score, the samples, the
 * states, the choice).
 *
 * The one idea: everything a choice needs is a few numbers per replica, read under one short
 * lock, and nothing runs in the background. Time moves only when a caller says what time it is:
 * every call first brings the set up to now (ejections whose time is up become probing, and, at
 * most every TC_REPLICA_CHECK_MS, the latency check), and the decay of an average toward the
 * lowest of the set is not applied step by step but read in closed form from the replica's last
 * sample, so a replica that gets no attempt (because it is slow) still looks better and better
 * with no one touching it, and is tried again once it reads as well as the others.
 *
 * Slots: a replica is a slot in one array, its id the slot's index. A removed replica keeps its
 * slot until its last attempt in flight has reported, so a report always finds what it counts;
 * then the slot is free for the next replica added, and the caller's data is released.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "base/alloc.h"
#include "base/rng.h"
#include "tailcut/json.h"
#include "tailcut/replica.h"

#define INITIAL_SLOTS 4

typedef struct replica {
    char *label;
    void *data;
    int used;    /* the slot holds a replica: in the set, or removed with attempts in flight */
    int present; /* in the set */
    tc_replica_state state;
    int has_avg;
    int slow; /* above the latency threshold at the last check, since slow_since_ms */
    double avg_ms;
    uint64_t sample_ms; /* time of the last sample */
    uint64_t until_ms;  /* EJECTED: when it becomes probing */
    uint64_t slow_since_ms;
    unsigned in_flight;
    unsigned failures; /* consecutive */
    unsigned times_ejected;
    uint64_t attempts[TC_REPLICA_RESULT_COUNT];
    uint64_t ejections[TC_REPLICA_REASON_COUNT];
    uint64_t panics;
} replica;

struct tc_replica_set {
    uv_mutex_t lock;
    tc_replica_config cfg;
    replica *slots;
    size_t nslots;    /* allocated */
    size_t high;      /* slots [high, nslots) have never been used */
    size_t present;   /* replicas in the set */
    size_t out;       /* of those, ejected or probing: what the cap counts */
    size_t in_flight; /* over every slot */
    uint64_t latest_ms;
    uint64_t wake_ms;  /* the earliest end of an ejection; UINT64_MAX when none */
    uint64_t check_ms; /* when the latency check runs next */
    uint64_t panics;
    tc__rng rng;
};

/* What a choice compares, computed once per call: the lowest stored average of the set. */
typedef struct floor_avg {
    int has;
    double ms;
} floor_avg;

static const char *const state_names[TC_REPLICA_STATE_COUNT] = {"available", "ejected", "probing"};
static const char *const result_names[TC_REPLICA_RESULT_COUNT] = {"success", "failure", "cancelled",
                                                                  "not_sent"};
static const char *const reason_names[TC_REPLICA_REASON_COUNT] = {"failures", "latency"};

const char *tc_replica_state_name(tc_replica_state state)
{
    return (unsigned)state < TC_REPLICA_STATE_COUNT ? state_names[state] : "unknown";
}

const char *tc_replica_result_name(tc_replica_result result)
{
    return (unsigned)result < TC_REPLICA_RESULT_COUNT ? result_names[result] : "unknown";
}

const char *tc_replica_reason_name(tc_replica_reason reason)
{
    return (unsigned)reason < TC_REPLICA_REASON_COUNT ? reason_names[reason] : "unknown";
}

tc_replica_result tc_replica_classify_status(int status)
{
    return status == 429 || (status >= 500 && status <= 599) ? TC_REPLICA_FAILURE
                                                             : TC_REPLICA_SUCCESS;
}

tc_replica_result tc_replica_classify_json(const tc_response *resp, void *data)
{
    (void)data;
    if (resp->status == 200 && !tc_json_valid(resp->body, resp->body_len))
        return TC_REPLICA_FAILURE;
    return tc_replica_classify_status(resp->status);
}

/* ---- the set -------------------------------------------------------------------------------- */

void tc_replica_config_init(tc_replica_config *cfg)
{
    if (cfg == NULL)
        return;
    memset(cfg, 0, sizeof(*cfg));
    cfg->eject_failures = 5;
    cfg->eject_latency_factor = 5;
    cfg->max_ejected_pct = 50;
}

static int config_ok(const tc_replica_config *cfg)
{
    double f = cfg->eject_latency_factor;
    return cfg->eject_failures >= 1 && cfg->eject_failures <= 1000 &&
           (f == 0 || (f >= 1.5 && f <= 100)) && cfg->max_ejected_pct <= 100;
}

int tc_replica_set_new(tc_replica_set **out, const tc_replica_config *cfg)
{
    tc_replica_config defaults;
    if (out == NULL)
        return TC_EINVAL;
    *out = NULL;
    if (cfg == NULL) {
        tc_replica_config_init(&defaults);
        cfg = &defaults;
    }
    if (!config_ok(cfg))
        return TC_EINVAL;
    tc_replica_set *set = tc__calloc(1, sizeof(*set));
    if (set == NULL)
        return TC_ENOMEM;
    if (uv_mutex_init(&set->lock) != 0) {
        tc__free(set);
        return TC_ENOMEM;
    }
    set->cfg = *cfg;
    set->wake_ms = UINT64_MAX;
    tc__rng_seed(&set->rng, cfg->seed);
    *out = set;
    return 0;
}

/* Empties a slot; returns the data the caller's release gets (outside the lock). */
static void *slot_clear(replica *rp)
{
    void *data = rp->data;
    tc__free(rp->label);
    memset(rp, 0, sizeof(*rp));
    return data;
}

static void release(const tc_replica_set *set, void *data)
{
    if (set->cfg.release != NULL)
        set->cfg.release(data);
}

void tc_replica_set_free(tc_replica_set *set)
{
    if (set == NULL)
        return;
    for (size_t i = 0; i < set->high; i++)
        if (set->slots[i].used)
            release(set, slot_clear(&set->slots[i]));
    tc__free(set->slots);
    uv_mutex_destroy(&set->lock);
    tc__free(set);
}

/* A time earlier than the latest seen counts as the latest. Lock held. */
static uint64_t clock_at(tc_replica_set *set, uint64_t now_ms)
{
    if (now_ms > set->latest_ms)
        set->latest_ms = now_ms;
    return set->latest_ms;
}

int tc_replica_add(tc_replica_set *set, const char *label, void *data, unsigned *id)
{
    if (set == NULL || label == NULL || id == NULL)
        return TC_EINVAL;
    size_t len = strlen(label);
    if (len == 0 || len > TC_REPLICA_LABEL_MAX)
        return TC_EINVAL;
    char *copy = tc__strdup(label);
    if (copy == NULL)
        return TC_ENOMEM;
    int err = 0;
    uv_mutex_lock(&set->lock);
    size_t i = 0;
    while (i < set->high && set->slots[i].used)
        i++;
    if (i == set->nslots) {
        size_t n = set->nslots ? set->nslots * 2 : INITIAL_SLOTS;
        if (n > TC_REPLICA_MAX)
            n = TC_REPLICA_MAX;
        replica *grown = n > set->nslots ? tc__realloc(set->slots, n * sizeof(*grown)) : NULL;
        if (grown == NULL) {
            err = n > set->nslots ? TC_ENOMEM : TC_EBUSY;
        } else {
            memset(grown + set->nslots, 0, (n - set->nslots) * sizeof(*grown));
            set->slots = grown;
            set->nslots = n;
        }
    }
    if (err == 0) {
        replica *rp = &set->slots[i];
        memset(rp, 0, sizeof(*rp));
        rp->label = copy;
        rp->data = data;
        rp->used = 1;
        rp->present = 1;
        rp->state = TC_REPLICA_AVAILABLE;
        if (i == set->high)
            set->high++;
        set->present++;
        *id = (unsigned)i;
    }
    uv_mutex_unlock(&set->lock);
    if (err != 0)
        tc__free(copy);
    return err;
}

/* The replica in the set with this id, or NULL. Lock held. */
static replica *present_at(tc_replica_set *set, unsigned id)
{
    if (id >= set->high || !set->slots[id].present)
        return NULL;
    return &set->slots[id];
}

int tc_replica_remove(tc_replica_set *set, unsigned id)
{
    if (set == NULL)
        return TC_EINVAL;
    void *gone = NULL;
    int freed = 0;
    uv_mutex_lock(&set->lock);
    replica *rp = present_at(set, id);
    if (rp == NULL) {
        uv_mutex_unlock(&set->lock);
        return TC_EINVAL;
    }
    rp->present = 0;
    set->present--;
    if (rp->state != TC_REPLICA_AVAILABLE)
        set->out--;
    rp->state = TC_REPLICA_AVAILABLE;
    if (rp->in_flight == 0) {
        gone = slot_clear(rp);
        freed = 1;
    }
    uv_mutex_unlock(&set->lock);
    if (freed)
        release(set, gone);
    return 0;
}

int tc_replica_find(tc_replica_set *set, const char *label, unsigned *id)
{
    if (set == NULL || label == NULL || id == NULL)
        return TC_EINVAL;
    int err = TC_EMISSING;
    uv_mutex_lock(&set->lock);
    for (size_t i = 0; i < set->high; i++) {
        if (set->slots[i].present && strcmp(set->slots[i].label, label) == 0) {
            *id = (unsigned)i;
            err = 0;
            break;
        }
    }
    uv_mutex_unlock(&set->lock);
    return err;
}

size_t tc_replica_count(tc_replica_set *set)
{
    if (set == NULL)
        return 0;
    uv_mutex_lock(&set->lock);
    size_t n = set->present;
    uv_mutex_unlock(&set->lock);
    return n;
}

/* ---- the score ------------------------------------------------------------------------------ */

/* The lowest stored average of the replicas in the set. Lock held. */
static floor_avg lowest_average(const tc_replica_set *set)
{
    floor_avg low = {0, 0};
    for (size_t i = 0; i < set->high; i++) {
        const replica *rp = &set->slots[i];
        if (rp->present && rp->has_avg && (!low.has || rp->avg_ms < low.ms)) {
            low.has = 1;
            low.ms = rp->avg_ms;
        }
    }
    return low;
}

/* exp(-dt / tau) for the time since a sample. */
static double decay_weight(uint64_t now_ms, uint64_t since_ms)
{
    if (now_ms <= since_ms)
        return 1;
    return exp(-(double)(now_ms - since_ms) / TC_REPLICA_TAU_MS);
}

/* avg(now): the stored average decayed toward the lowest of the set since its last sample; with
 * no average, the lowest (0 when none). */
static double read_average(const replica *rp, floor_avg low, uint64_t now_ms)
{
    if (!rp->has_avg)
        return low.has ? low.ms : 0;
    if (!low.has || rp->avg_ms <= low.ms)
        return rp->avg_ms;
    return low.ms + (rp->avg_ms - low.ms) * decay_weight(now_ms, rp->sample_ms);
}

static double score(const replica *rp, floor_avg low, uint64_t now_ms)
{
    return read_average(rp, low, now_ms) * (double)(rp->in_flight + 1);
}

/* One sample of s ms at now (the peak-sensitive average). */
static void sample(replica *rp, floor_avg low, uint64_t now_ms, double s)
{
    if (rp->has_avg) {
        double e = read_average(rp, low, now_ms);
        rp->avg_ms = s > e ? s : s + (e - s) * decay_weight(now_ms, rp->sample_ms);
    } else {
        rp->avg_ms = s;
        rp->has_avg = 1;
    }
    rp->sample_ms = now_ms;
}

/* ---- states --------------------------------------------------------------------------------- */

/* Ejects rp for reason if the cap allows (a probing replica is already counted by it). Returns
 * 1 if it did. Lock held. */
static int eject(tc_replica_set *set, replica *rp, tc_replica_reason reason, uint64_t now_ms)
{
    if (set->present <= 1)
        return 0;
    if (rp->state == TC_REPLICA_AVAILABLE) {
        if (set->out >= (size_t)set->cfg.max_ejected_pct * set->present / 100)
            return 0;
        set->out++;
    }
    rp->state = TC_REPLICA_EJECTED;
    rp->times_ejected++;
    uint64_t ms = (uint64_t)TC_REPLICA_EJECT_MS * rp->times_ejected;
    rp->until_ms = now_ms + (ms < TC_REPLICA_EJECT_MAX_MS ? ms : TC_REPLICA_EJECT_MAX_MS);
    if (rp->until_ms < set->wake_ms)
        set->wake_ms = rp->until_ms;
    rp->ejections[reason]++;
    rp->failures = 0;
    rp->slow = 0;
    return 1;
}

/* Ejections whose time is up end: those replicas are probing. Lock held. */
static void wake_ejected(tc_replica_set *set, uint64_t now_ms)
{
    set->wake_ms = UINT64_MAX;
    for (size_t i = 0; i < set->high; i++) {
        replica *rp = &set->slots[i];
        if (!rp->present || rp->state != TC_REPLICA_EJECTED)
            continue;
        if (rp->until_ms <= now_ms) {
            rp->state = TC_REPLICA_PROBING;
            rp->until_ms = 0;
        } else if (rp->until_ms < set->wake_ms) {
            set->wake_ms = rp->until_ms;
        }
    }
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Ejects the available replicas whose average has stayed above F x the median of the available
 * ones for TC_REPLICA_SLOW_MS. Lock held. */
static void check_latency(tc_replica_set *set, uint64_t now_ms)
{
    double avgs[TC_REPLICA_MAX];
    size_t k = 0;
    floor_avg low = lowest_average(set);
    int on = set->present >= TC_REPLICA_SLOW_MIN;
    for (size_t i = 0; on && i < set->high; i++) {
        const replica *rp = &set->slots[i];
        if (rp->present && rp->state == TC_REPLICA_AVAILABLE && rp->has_avg)
            avgs[k++] = read_average(rp, low, now_ms);
    }
    double median = 0;
    if (k > 0) {
        qsort(avgs, k, sizeof(avgs[0]), cmp_double);
        median = k % 2 ? avgs[k / 2] : (avgs[k / 2 - 1] + avgs[k / 2]) / 2;
    }
    double threshold = set->cfg.eject_latency_factor * median;
    for (size_t i = 0; i < set->high; i++) {
        replica *rp = &set->slots[i];
        if (!on || k == 0 || !rp->present || rp->state != TC_REPLICA_AVAILABLE || !rp->has_avg ||
            read_average(rp, low, now_ms) <= threshold) {
            rp->slow = 0;
            continue;
        }
        if (!rp->slow) {
            rp->slow = 1;
            rp->slow_since_ms = now_ms;
        } else if (now_ms - rp->slow_since_ms >= TC_REPLICA_SLOW_MS) {
            (void)eject(set, rp, TC_REPLICA_REASON_LATENCY, now_ms); /* the cap may say no */
        }
    }
}

/* Brings the set up to now: expired ejections, then the latency check when it is due. Returns
 * now as the set counts it. Lock held. */
static uint64_t advance(tc_replica_set *set, uint64_t now_ms)
{
    uint64_t now = clock_at(set, now_ms);
    if (now >= set->wake_ms)
        wake_ejected(set, now);
    if (set->cfg.eject_latency_factor > 0 && now >= set->check_ms) {
        set->check_ms = now + TC_REPLICA_CHECK_MS;
        check_latency(set, now);
    }
    return now;
}

/* ---- choosing ------------------------------------------------------------------------------- */

static int eligible(const replica *rp)
{
    return rp->present && (rp->state == TC_REPLICA_AVAILABLE ||
                           (rp->state == TC_REPLICA_PROBING && rp->in_flight == 0));
}

/* The ids a choice is made among: the eligible replicas, or in panic every replica of the set.
 * Returns how many (0: the set is empty). Lock held. */
static size_t candidates(const tc_replica_set *set, unsigned *ids, int *panic)
{
    size_t n = 0;
    for (size_t i = 0; i < set->high; i++)
        if (eligible(&set->slots[i]))
            ids[n++] = (unsigned)i;
    *panic = n == 0;
    if (n > 0)
        return n;
    for (size_t i = 0; i < set->high; i++)
        if (set->slots[i].present)
            ids[n++] = (unsigned)i;
    return n;
}

/* Counts the chosen attempt in flight and fills *out. Lock held. */
static void take(tc_replica_set *set, unsigned id, int panic, tc_replica_choice *out)
{
    replica *rp = &set->slots[id];
    rp->in_flight++;
    set->in_flight++;
    if (panic) {
        rp->panics++;
        set->panics++;
    }
    out->id = id;
    out->data = rp->data;
    out->panic = panic;
}

/* Power of two choices: two distinct draws among the n candidates, the lower score wins (the
 * first drawn on a tie). Lock held. */
static unsigned pick_p2c(tc_replica_set *set, const unsigned *ids, size_t n, uint64_t now)
{
    if (n == 1)
        return ids[0];
    size_t a = (size_t)tc__rng_below(&set->rng, n);
    size_t b = (size_t)tc__rng_below(&set->rng, n - 1);
    if (b >= a)
        b++; /* the second draw skips the first's index */
    floor_avg low = lowest_average(set);
    return score(&set->slots[ids[b]], low, now) < score(&set->slots[ids[a]], low, now) ? ids[b]
                                                                                       : ids[a];
}

static int was_tried(unsigned id, const unsigned *tried, size_t ntried)
{
    for (size_t i = 0; i < ntried; i++)
        if (tried[i] == id)
            return 1;
    return 0;
}

/* The lowest score among the candidates not tried, or among all of them when each was tried.
 * Ties are drawn evenly: the k-th equal score replaces the pick with probability 1/k. Lock
 * held. */
static unsigned pick_untried(tc_replica_set *set, const unsigned *ids, size_t n, uint64_t now,
                             const unsigned *tried, size_t ntried)
{
    floor_avg low = lowest_average(set);
    int found = 0;
    unsigned pick = ids[0];
    for (int pass = 0; pass < 2 && !found; pass++) {
        double best = 0;
        uint64_t ties = 0;
        for (size_t i = 0; i < n; i++) {
            if (pass == 0 && was_tried(ids[i], tried, ntried))
                continue;
            double sc = score(&set->slots[ids[i]], low, now);
            if (!found || sc < best) {
                found = 1;
                best = sc;
                pick = ids[i];
                ties = 1;
            } else if (sc == best && tc__rng_below(&set->rng, ++ties) == 0) {
                pick = ids[i];
            }
        }
    }
    return pick;
}

/* A choice at now_ms: the first attempt's (first) or a later one's (after tried). */
static int choose(tc_replica_set *set, uint64_t now_ms, int first, const unsigned *tried,
                  size_t ntried, tc_replica_choice *out)
{
    unsigned ids[TC_REPLICA_MAX];
    int panic = 0;
    uv_mutex_lock(&set->lock);
    uint64_t now = advance(set, now_ms);
    size_t n = candidates(set, ids, &panic);
    if (n > 0) {
        unsigned pick =
            first ? pick_p2c(set, ids, n, now) : pick_untried(set, ids, n, now, tried, ntried);
        take(set, pick, panic, out);
    }
    uv_mutex_unlock(&set->lock);
    return n > 0 ? 0 : TC_EMISSING;
}

int tc_replica_choose_first(tc_replica_set *set, uint64_t now_ms, tc_replica_choice *out)
{
    if (set == NULL || out == NULL)
        return TC_EINVAL;
    return choose(set, now_ms, 1, NULL, 0, out);
}

int tc_replica_choose_extra(tc_replica_set *set, uint64_t now_ms, const unsigned *tried,
                            size_t ntried, tc_replica_choice *out)
{
    if (set == NULL || out == NULL || (tried == NULL && ntried > 0))
        return TC_EINVAL;
    return choose(set, now_ms, 0, tried, ntried, out);
}

/* ---- reporting ------------------------------------------------------------------------------ */

/* The sample an end makes (see the header), or a negative value for none. Lock held. */
static double sample_of(const replica *rp, floor_avg low, uint64_t now_ms, tc_replica_result result,
                        double x)
{
    double e = rp->has_avg ? read_average(rp, low, now_ms) : 0;
    switch (result) {
    case TC_REPLICA_SUCCESS:
        return x;
    case TC_REPLICA_FAILURE:
        return rp->has_avg && e > x ? e : x;
    case TC_REPLICA_CANCELLED:
        return !rp->has_avg || x > e ? x : -1;
    default:
        return -1;
    }
}

int tc_replica_done(tc_replica_set *set, unsigned id, tc_replica_result result, uint64_t elapsed_us,
                    uint64_t now_ms)
{
    if (set == NULL || (unsigned)result >= TC_REPLICA_RESULT_COUNT)
        return TC_EINVAL;
    void *gone = NULL;
    int freed = 0;
    uv_mutex_lock(&set->lock);
    if (id >= set->high || !set->slots[id].used || set->slots[id].in_flight == 0) {
        uv_mutex_unlock(&set->lock);
        return TC_EINVAL;
    }
    uint64_t now = advance(set, now_ms);
    replica *rp = &set->slots[id];
    rp->in_flight--;
    set->in_flight--;
    rp->attempts[result]++;
    if (rp->present) {
        floor_avg low = lowest_average(set);
        double s = sample_of(rp, low, now, result, (double)elapsed_us / 1000);
        if (s >= 0)
            sample(rp, low, now, s);
        if (result == TC_REPLICA_SUCCESS) {
            rp->failures = 0;
            if (rp->state == TC_REPLICA_PROBING) {
                rp->state = TC_REPLICA_AVAILABLE;
                set->out--;
            }
        } else if (result == TC_REPLICA_FAILURE) {
            /* A probe that fails ejects again at once; an available replica after N in a row. */
            int out =
                rp->state == TC_REPLICA_PROBING ||
                (rp->state == TC_REPLICA_AVAILABLE && ++rp->failures >= set->cfg.eject_failures);
            if (out)
                (void)eject(set, rp, TC_REPLICA_REASON_FAILURES, now);
        }
    } else if (rp->in_flight == 0) {
        gone = slot_clear(rp); /* removed, and this was its last attempt */
        freed = 1;
    }
    uv_mutex_unlock(&set->lock);
    if (freed)
        release(set, gone);
    return 0;
}

/* ---- snapshot ------------------------------------------------------------------------------- */

size_t tc_replica_snapshot(tc_replica_set *set, uint64_t now_ms, tc_replica_info *out, size_t cap,
                           tc_replica_totals *totals)
{
    if (totals != NULL)
        memset(totals, 0, sizeof(*totals));
    if (set == NULL)
        return 0;
    size_t n = 0;
    uv_mutex_lock(&set->lock);
    uint64_t now = advance(set, now_ms);
    floor_avg low = lowest_average(set);
    for (size_t i = 0; i < set->high; i++) {
        const replica *rp = &set->slots[i];
        if (!rp->present)
            continue;
        if (totals != NULL)
            totals->states[rp->state]++;
        if (out != NULL && n < cap) {
            tc_replica_info *info = &out[n];
            memset(info, 0, sizeof(*info));
            info->id = (unsigned)i;
            memcpy(info->label, rp->label, strlen(rp->label) + 1);
            info->state = rp->state;
            info->has_average = rp->has_avg;
            info->average_ms = read_average(rp, low, now);
            info->score = score(rp, low, now);
            info->in_flight = rp->in_flight;
            memcpy(info->attempts, rp->attempts, sizeof(info->attempts));
            memcpy(info->ejections, rp->ejections, sizeof(info->ejections));
            info->panics = rp->panics;
            info->ejected_until_ms = rp->state == TC_REPLICA_EJECTED ? rp->until_ms : 0;
        }
        n++;
    }
    if (totals != NULL) {
        totals->replicas = n;
        totals->in_flight = set->in_flight;
        totals->panics = set->panics;
    }
    uv_mutex_unlock(&set->lock);
    return n;
}
