/*
 * Unit tests for the replica set (src/policy/replica.c), all on a fake clock:
 * - the score against a reference written from the contract in replica.h (sample by sample, the
 *   decay toward the lowest average, a replica with no average), over random sequences and
 *   adversarial scripts, with a few values worked out by hand to anchor the reference itself;
 * - the choice: an extra attempt never goes to a tried replica while an untried one is eligible,
 *   and goes to the lowest score; the power-of-two-choices distribution (the better of two wins,
 *   never the same replica twice in one draw); only eligible replicas;
 * - ejection on failures and on latency, probing, readmission, the cap, panic, a single replica;
 * - adding, removing (attempts in flight still report, data released once), ids, errors;
 * - several threads choosing and reporting while others add and remove.
 */
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <uv.h>

#include "base/rng.h"
#include "tailcut/replica.h"

/* ---- helpers -------------------------------------------------------------------------------- */

static tc_replica_set *set_new(unsigned failures, double factor, unsigned pct, uint64_t seed)
{
    tc_replica_config cfg;
    tc_replica_config_init(&cfg);
    cfg.eject_failures = failures;
    cfg.eject_latency_factor = factor;
    cfg.max_ejected_pct = pct;
    cfg.seed = seed;
    tc_replica_set *set = NULL;
    assert_int_equal(tc_replica_set_new(&set, &cfg), 0);
    return set;
}

static unsigned add(tc_replica_set *set, const char *label)
{
    unsigned id = 99999;
    assert_int_equal(tc_replica_add(set, label, NULL, &id), 0);
    return id;
}

/* The ids in the set (by id), and their number. */
static size_t ids_of(tc_replica_set *set, unsigned *ids)
{
    tc_replica_info info[16];
    size_t n = tc_replica_snapshot(set, 0, info, 16, NULL);
    assert_true(n <= 16);
    for (size_t i = 0; i < n; i++)
        ids[i] = info[i].id;
    return n;
}

/* Counts an attempt on target: an extra choice with every other replica tried picks the only
 * untried one (target must be eligible). */
static void take_on(tc_replica_set *set, unsigned target, uint64_t now)
{
    unsigned ids[16], tried[16];
    size_t n = ids_of(set, ids), k = 0;
    for (size_t i = 0; i < n; i++)
        if (ids[i] != target)
            tried[k++] = ids[i];
    tc_replica_choice c;
    assert_int_equal(tc_replica_choose_extra(set, now, tried, k, &c), 0);
    assert_int_equal(c.id, target);
}

/* One attempt on target that ends at once with result and elapsed ms. */
static void attempt(tc_replica_set *set, unsigned target, uint64_t now, tc_replica_result result,
                    double ms)
{
    take_on(set, target, now);
    assert_int_equal(tc_replica_done(set, target, result, (uint64_t)llround(ms * 1000), now), 0);
}

static tc_replica_info info_of(tc_replica_set *set, unsigned id, uint64_t now)
{
    tc_replica_info info[16];
    size_t n = tc_replica_snapshot(set, now, info, 16, NULL);
    for (size_t i = 0; i < n; i++)
        if (info[i].id == id)
            return info[i];
    fail_msg("replica %u is not in the set", id);
    return info[0];
}

static void assert_near(double got, double want, const char *what)
{
    if (fabs(got - want) > 1e-9 * fmax(1, fabs(want)))
        fail_msg("%s: got %.12g, want %.12g", what, got, want);
}

/* ---- the reference: the score, from the contract text ---------------------------------------- */

#define REF_MAX 32
#define TAU 10000.0

typedef struct ref_replica {
    int present;
    int has;
    double avg;
    uint64_t t;
    unsigned in_flight;
} ref_replica;

typedef struct ref_set {
    ref_replica r[REF_MAX];
    uint64_t latest;
} ref_set;

/* "a time earlier than the latest seen counts as the latest" */
static uint64_t ref_now(ref_set *m, uint64_t now)
{
    if (now > m->latest)
        m->latest = now;
    return m->latest;
}

/* L: the lowest stored average of the replicas in the set. */
static int ref_lowest(const ref_set *m, double *low)
{
    int has = 0;
    for (int i = 0; i < REF_MAX; i++) {
        const ref_replica *r = &m->r[i];
        if (r->present && r->has && (!has || r->avg < *low)) {
            *low = r->avg;
            has = 1;
        }
    }
    return has;
}

/* avg(now) = L + (A - L) x exp(-(now - t) / tau) when A > L, else A; no average: L, or 0. */
static double ref_read(const ref_set *m, int i, uint64_t now)
{
    double low = 0;
    int has_low = ref_lowest(m, &low);
    const ref_replica *r = &m->r[i];
    if (!r->has)
        return has_low ? low : 0;
    if (has_low && r->avg > low)
        return low + (r->avg - low) * exp(-(double)(now - r->t) / TAU);
    return r->avg;
}

static double ref_score(const ref_set *m, int i, uint64_t now)
{
    return ref_read(m, i, now) * (m->r[i].in_flight + 1);
}

/* A report with elapsed time x ms: its sample, then the peak-sensitive update. */
static void ref_report(ref_set *m, int i, tc_replica_result result, double x, uint64_t now)
{
    ref_replica *r = &m->r[i];
    r->in_flight--;
    if (!r->present)
        return;
    double e = ref_read(m, i, now), s;
    if (result == TC_REPLICA_SUCCESS)
        s = x;
    else if (result == TC_REPLICA_FAILURE)
        s = r->has ? fmax(x, e) : x;
    else if (result == TC_REPLICA_CANCELLED && (!r->has || x > e))
        s = x;
    else
        return; /* no sample */
    if (!r->has) {
        r->avg = s;
        r->has = 1;
    } else if (s > e) {
        r->avg = s;
    } else {
        r->avg = s + (e - s) * exp(-(double)(now - r->t) / TAU);
    }
    r->t = now;
}

/* Every replica of the set reads as the reference says, at now. */
static void check_against(tc_replica_set *set, ref_set *m, uint64_t now)
{
    tc_replica_info info[REF_MAX];
    size_t n = tc_replica_snapshot(set, now, info, REF_MAX, NULL);
    size_t present = 0;
    for (int i = 0; i < REF_MAX; i++)
        present += m->r[i].present;
    assert_int_equal(n, present);
    uint64_t t = ref_now(m, now);
    for (size_t k = 0; k < n; k++) {
        int i = (int)info[k].id;
        assert_true(i < REF_MAX && m->r[i].present);
        assert_int_equal(info[k].has_average, m->r[i].has);
        assert_int_equal(info[k].in_flight, m->r[i].in_flight);
        assert_near(info[k].average_ms, ref_read(m, i, t), "average");
        assert_near(info[k].score, ref_score(m, i, t), "score");
    }
}

/* An attempt counted on whichever replica the set chooses; returns its id. */
static unsigned ref_choose(tc_replica_set *set, ref_set *m, tc__rng *rng, uint64_t now)
{
    tc_replica_choice c;
    unsigned tried[REF_MAX];
    size_t ntried = 0;
    for (unsigned i = 0; i < REF_MAX; i++)
        if (m->r[i].present && tc__rng_below(rng, 3) == 0)
            tried[ntried++] = i;
    if (tc__rng_below(rng, 2) == 0)
        assert_int_equal(tc_replica_choose_first(set, now, &c), 0);
    else
        assert_int_equal(tc_replica_choose_extra(set, now, tried, ntried, &c), 0);
    assert_true(c.id < REF_MAX && m->r[c.id].present);
    assert_int_equal(c.panic, 0);
    m->r[c.id].in_flight++;
    return c.id;
}

/* Slots the set holds: replicas in it, and removed ones with attempts in flight. */
static int slots_held(const ref_set *m)
{
    int n = 0;
    for (int i = 0; i < REF_MAX; i++)
        n += m->r[i].present || m->r[i].in_flight > 0;
    return n;
}

/* An elapsed time in microseconds: mostly ordinary, sometimes 0, sometimes huge. */
static uint64_t random_elapsed_us(tc__rng *rng)
{
    switch (tc__rng_below(rng, 6)) {
    case 0:
        return 0;
    case 1:
        return tc__rng_below(rng, 1000);
    case 2:
        return (uint64_t)exp(tc__rng_unit(rng) * log(1e10)); /* up to about 3 hours */
    default:
        return 1000 + tc__rng_below(rng, 300000);
    }
}

/* The clock: mostly forward by small steps, sometimes not at all, sometimes a long silence, and
 * sometimes a caller whose reading is behind (it counts as the latest). */
static uint64_t random_time(tc__rng *rng, uint64_t *clock)
{
    switch (tc__rng_below(rng, 8)) {
    case 0:
    case 1:
        return *clock;
    case 2:
        return *clock > 500 ? *clock - tc__rng_below(rng, 500) : *clock;
    case 3:
        *clock += 2000 + tc__rng_below(rng, 60000);
        return *clock;
    default:
        *clock += tc__rng_below(rng, 200);
        return *clock;
    }
}

static void test_score_random_sequences(void **state)
{
    (void)state;
    tc__rng rng;
    tc__rng_seed(&rng, 22);
    for (int seq = 0; seq < 40; seq++) {
        /* No ejection (cap 0): the score alone. */
        tc_replica_set *set = set_new(5, 0, 0, (uint64_t)seq);
        ref_set m;
        memset(&m, 0, sizeof(m));
        uint64_t clock = 1000 + tc__rng_below(&rng, 100000);
        unsigned open_ids[4096];
        size_t nopen = 0;
        int replicas = 2 + (int)tc__rng_below(&rng, 4);
        for (int i = 0; i < replicas; i++) {
            unsigned id = add(set, "r");
            m.r[id].present = 1;
        }
        for (int step = 0; step < 1500; step++) {
            uint64_t now = random_time(&rng, &clock);
            unsigned op = (unsigned)tc__rng_below(&rng, 100);
            if (op < 45 && nopen < 4096) {
                open_ids[nopen++] = ref_choose(set, &m, &rng, now);
            } else if (op < 92 && nopen > 0) {
                size_t k = (size_t)tc__rng_below(&rng, nopen);
                unsigned id = open_ids[k];
                open_ids[k] = open_ids[--nopen];
                tc_replica_result res = (tc_replica_result)tc__rng_below(&rng, 4);
                uint64_t us = random_elapsed_us(&rng);
                assert_int_equal(tc_replica_done(set, id, res, us, now), 0);
                ref_report(&m, (int)id, res, (double)us / 1000, ref_now(&m, now));
                if (!m.r[id].present && m.r[id].in_flight == 0)
                    memset(&m.r[id], 0, sizeof(m.r[id])); /* its slot is free again */
            } else if (op < 96) {
                unsigned ids[16];
                size_t n = ids_of(set, ids);
                if (n > 1) {
                    unsigned id = ids[tc__rng_below(&rng, n)];
                    assert_int_equal(tc_replica_remove(set, id), 0);
                    m.r[id].present = 0;
                    if (m.r[id].in_flight == 0)
                        memset(&m.r[id], 0, sizeof(m.r[id]));
                }
            } else if (tc_replica_count(set) < 8 && slots_held(&m) < REF_MAX - 8) {
                unsigned id = add(set, "r");
                assert_true(id < REF_MAX);
                assert_int_equal(m.r[id].in_flight, 0); /* never a slot still counted */
                memset(&m.r[id], 0, sizeof(m.r[id]));
                m.r[id].present = 1;
            }
            check_against(set, &m, now);
        }
        for (size_t k = 0; k < nopen; k++)
            assert_int_equal(tc_replica_done(set, open_ids[k], TC_REPLICA_NOT_SENT, 0, clock), 0);
        tc_replica_totals tot;
        (void)tc_replica_snapshot(set, clock, NULL, 0, &tot);
        assert_int_equal(tot.in_flight, 0);
        tc_replica_set_free(set);
    }
}

/* One step of a script: an attempt on replica `who` (an index into the script's ids) at time t
 * ending with result and ms; who < 0 removes replica -who - 1. */
typedef struct step {
    uint64_t t;
    int who;
    tc_replica_result result;
    double ms;
} step;

static void run_script(const step *steps, size_t n, int replicas)
{
    tc_replica_set *set = set_new(5, 0, 0, 1);
    ref_set m;
    memset(&m, 0, sizeof(m));
    unsigned ids[8];
    for (int i = 0; i < replicas; i++) {
        ids[i] = add(set, "r");
        m.r[ids[i]].present = 1;
    }
    for (size_t k = 0; k < n; k++) {
        const step *s = &steps[k];
        if (s->who < 0) {
            unsigned id = ids[-s->who - 1];
            assert_int_equal(tc_replica_remove(set, id), 0);
            m.r[id].present = 0;
        } else {
            unsigned id = ids[s->who];
            take_on(set, id, s->t);
            m.r[id].in_flight++;
            check_against(set, &m, s->t); /* the attempt in flight weighs in the score */
            uint64_t us = (uint64_t)llround(s->ms * 1000);
            assert_int_equal(tc_replica_done(set, id, s->result, us, s->t), 0);
            ref_report(&m, (int)id, s->result, (double)us / 1000, ref_now(&m, s->t));
        }
        check_against(set, &m, s->t);
    }
    /* Long after the last step: everything has decayed to the lowest average. */
    check_against(set, &m, steps[n - 1].t + 600000);
    tc_replica_set_free(set);
}

static void test_score_adversarial_scripts(void **state)
{
    (void)state;
#define S TC_REPLICA_SUCCESS
#define F TC_REPLICA_FAILURE
#define C TC_REPLICA_CANCELLED
    /* Samples at the same millisecond: a lower one does not move the average at all. */
    static const step same_ms[] = {
        {1000, 0, S, 100}, {1000, 0, S, 1}, {1000, 0, S, 1}, {1000, 0, S, 200}, {1000, 0, S, 0}};
    /* A spike, then silence, then slow decreases: each moves by 1 - exp(-dt / tau). */
    static const step spike[] = {{0, 0, S, 10},      {10, 0, S, 5000},   {70000, 0, S, 10},
                                 {70001, 0, S, 10},  {80001, 0, S, 10},  {80001, 1, S, 3},
                                 {3600000, 0, S, 1}, {3600000, 1, S, 2}, {3600001, 1, S, 3}};
    /* Failures never make a replica look faster; cancellations only make it look slower. */
    static const step fail_cancel[] = {{0, 0, S, 50},    {0, 1, S, 5},       {1000, 0, F, 1},
                                       {1000, 0, C, 10}, {2000, 0, C, 900},  {2000, 1, F, 700},
                                       {5000, 1, C, 1},  {9000, 2, C, 3},    {9000, 2, F, 0},
                                       {9001, 2, C, 2},  {20000, 0, F, 0.5}, {20000, 2, S, 0}};
    /* A replica with no average reads as the lowest of the set; removing the lowest one raises
     * what the others decay toward. */
    static const step floor_moves[] = {{0, 0, S, 10},      {0, 1, S, 300},    {5000, 2, C, 1},
                                       {6000, -1, S, 0},   {6000, 1, S, 300}, {40000, 2, S, 50},
                                       {90000, 1, F, 0.1}, {90000, 2, C, 1}};
    /* Huge values and time jumps. */
    static const step huge[] = {
        {0, 0, S, 1e7},           {1, 1, S, 0.001},        {2, 0, F, 0},
        {86400000, 0, S, 1},      {86400000, 1, S, 1e8},   {86400001, 0, C, 1e9},
        {172800000, 1, S, 0.001}, {172800000, 0, S, 0.001}};
#undef S
#undef F
#undef C
    run_script(same_ms, sizeof(same_ms) / sizeof(same_ms[0]), 1);
    run_script(spike, sizeof(spike) / sizeof(spike[0]), 2);
    run_script(fail_cancel, sizeof(fail_cancel) / sizeof(fail_cancel[0]), 3);
    run_script(floor_moves, sizeof(floor_moves) / sizeof(floor_moves[0]), 3);
    run_script(huge, sizeof(huge) / sizeof(huge[0]), 2);
}

/* A few values worked out by hand, so that the reference itself is anchored to the contract. */
static void test_score_by_hand(void **state)
{
    (void)state;
    tc_replica_set *set = set_new(5, 0, 0, 1);
    unsigned a = add(set, "a"), b = add(set, "b");
    /* No average anywhere: everything reads 0. */
    assert_near(info_of(set, a, 0).average_ms, 0, "no averages");
    attempt(set, a, 0, TC_REPLICA_SUCCESS, 100);
    /* b has no average: it reads as the lowest of the set, a's 100. */
    assert_near(info_of(set, b, 0).average_ms, 100, "b reads as the floor");
    attempt(set, b, 0, TC_REPLICA_SUCCESS, 10);
    /* 10 s later a has decayed toward 10 by e^-1: 10 + 90/e. */
    assert_near(info_of(set, a, 10000).average_ms, 10 + 90 * exp(-1), "decay");
    /* A sample of 10 at 10 s: from 10 + 90/e toward 10 by 1 - 1/e: 10 + 90/e^2. */
    attempt(set, a, 10000, TC_REPLICA_SUCCESS, 10);
    assert_near(info_of(set, a, 10000).average_ms, 10 + 90 * exp(-2), "sample below");
    /* A higher sample replaces it at once. */
    attempt(set, a, 10000, TC_REPLICA_SUCCESS, 500);
    assert_near(info_of(set, a, 10000).average_ms, 500, "peak");
    /* Two attempts in flight triple the score. */
    take_on(set, a, 10000);
    take_on(set, a, 10000);
    assert_near(info_of(set, a, 10000).score, 1500, "score");
    assert_int_equal(tc_replica_done(set, a, TC_REPLICA_NOT_SENT, 0, 10000), 0);
    assert_int_equal(tc_replica_done(set, a, TC_REPLICA_NOT_SENT, 0, 10000), 0);
    /* A failure after 1 ms counts as the average: no faster. */
    attempt(set, a, 10000, TC_REPLICA_FAILURE, 1);
    assert_near(info_of(set, a, 10000).average_ms, 500, "failure");
    tc_replica_set_free(set);
}

/* ---- the choice ----------------------------------------------------------------------------- */

static int info_eligible(const tc_replica_info *in)
{
    return in->state == TC_REPLICA_AVAILABLE ||
           (in->state == TC_REPLICA_PROBING && in->in_flight == 0);
}

/* Random averages, in-flight counts and states (ejected, probing with and without an attempt in
 * flight); for random tried sets, the extra choice goes to the lowest score among the eligible
 * untried replicas, and only when none is left among the eligible tried ones. */
static void test_choice_extra_untried_first(void **state)
{
    (void)state;
    tc__rng rng;
    tc__rng_seed(&rng, 7);
    for (int round = 0; round < 200; round++) {
        tc_replica_set *set = set_new(1, 0, 100, (uint64_t)round);
        unsigned n = 2 + (unsigned)tc__rng_below(&rng, 6), ids[8];
        uint64_t now = 100000;
        for (unsigned i = 0; i < n; i++) {
            ids[i] = add(set, "r");
            if (tc__rng_below(&rng, 4) != 0)
                attempt(set, ids[i], now, TC_REPLICA_SUCCESS, 1 + (double)tc__rng_below(&rng, 50));
        }
        /* Some ejected at the start: probing 10 s later. Then some ejected again. */
        for (unsigned i = 0; i < n; i++)
            if (tc__rng_below(&rng, 4) == 0 && tc_replica_count(set) > 1)
                attempt(set, ids[i], now, TC_REPLICA_FAILURE, 1);
        now += TC_REPLICA_EJECT_MS;
        unsigned held = 0;
        for (unsigned i = 0; i < n; i++) {
            tc_replica_info in = info_of(set, ids[i], now);
            if (in.state == TC_REPLICA_AVAILABLE && tc__rng_below(&rng, 5) == 0)
                attempt(set, ids[i], now, TC_REPLICA_FAILURE, 1);
            else if (info_eligible(&in) && tc__rng_below(&rng, 3) == 0) {
                take_on(set, ids[i], now); /* in flight: probing ones are then not eligible */
                held |= 1u << i;
            }
        }
        for (int q = 0; q < 30; q++) {
            unsigned tried[8];
            size_t ntried = 0;
            for (unsigned i = 0; i < n; i++)
                if (tc__rng_below(&rng, 2) == 0)
                    tried[ntried++] = ids[i];
            tc_replica_info info[8];
            size_t k = tc_replica_snapshot(set, now, info, 8, NULL);
            double best_untried = INFINITY, best_any = INFINITY;
            for (size_t j = 0; j < k; j++) {
                if (!info_eligible(&info[j]))
                    continue;
                int was = 0;
                for (size_t t = 0; t < ntried; t++)
                    was |= tried[t] == info[j].id;
                if (!was)
                    best_untried = fmin(best_untried, info[j].score);
                best_any = fmin(best_any, info[j].score);
            }
            tc_replica_choice c;
            assert_int_equal(tc_replica_choose_extra(set, now, tried, ntried, &c), 0);
            tc_replica_info got = {0};
            for (size_t j = 0; j < k; j++)
                if (info[j].id == c.id)
                    got = info[j];
            int was = 0;
            for (size_t t = 0; t < ntried; t++)
                was |= tried[t] == c.id;
            if (best_any == INFINITY) {
                assert_int_equal(c.panic, 1); /* nothing eligible */
            } else {
                assert_int_equal(c.panic, 0);
                assert_true(info_eligible(&got));
                if (best_untried < INFINITY) {
                    assert_false(was);
                    assert_true(got.score == best_untried);
                } else {
                    assert_true(got.score == best_any);
                }
            }
            assert_int_equal(tc_replica_done(set, c.id, TC_REPLICA_NOT_SENT, 0, now), 0);
        }
        for (unsigned i = 0; i < n; i++)
            if (held & (1u << i))
                assert_int_equal(tc_replica_done(set, ids[i], TC_REPLICA_NOT_SENT, 0, now), 0);
        tc_replica_set_free(set);
    }
}

/* Equal scores: extra choices spread over the tied replicas instead of piling on one. */
static void test_choice_ties_spread(void **state)
{
    (void)state;
    tc_replica_set *set = set_new(5, 0, 50, 3);
    unsigned counts[3] = {0};
    for (int i = 0; i < 3; i++)
        add(set, "r");
    for (int i = 0; i < 3000; i++) {
        tc_replica_choice c;
        assert_int_equal(tc_replica_choose_extra(set, 1, NULL, 0, &c), 0);
        counts[c.id]++;
        assert_int_equal(tc_replica_done(set, c.id, TC_REPLICA_NOT_SENT, 0, 1), 0);
    }
    for (int i = 0; i < 3; i++)
        assert_true(counts[i] > 800 && counts[i] < 1200);
    tc_replica_set_free(set);
}

/* Power of two choices: over many draws among scores a < b < c, the better of each pair wins:
 * a 2/3 of the time, b 1/3, c never; with two replicas the worse never wins (two distinct
 * draws); replicas that are not eligible are never drawn. */
static void test_p2c_distribution(void **state)
{
    (void)state;
    enum { DRAWS = 30000 };
    tc_replica_set *set = set_new(1, 0, 100, 11);
    unsigned a = add(set, "a"), b = add(set, "b"), c = add(set, "c");
    attempt(set, a, 0, TC_REPLICA_SUCCESS, 10);
    attempt(set, b, 0, TC_REPLICA_SUCCESS, 20);
    attempt(set, c, 0, TC_REPLICA_SUCCESS, 30);
    unsigned counts[3] = {0};
    for (int i = 0; i < DRAWS; i++) {
        tc_replica_choice ch;
        assert_int_equal(tc_replica_choose_first(set, 0, &ch), 0);
        counts[ch.id]++;
        assert_int_equal(tc_replica_done(set, ch.id, TC_REPLICA_NOT_SENT, 0, 0), 0);
    }
    assert_true(fabs((double)counts[a] / DRAWS - 2.0 / 3) < 0.02);
    assert_true(fabs((double)counts[b] / DRAWS - 1.0 / 3) < 0.02);
    assert_int_equal(counts[c], 0);

    /* a ejected (one failure ejects; the cap allows it): b and c only, b always. */
    attempt(set, a, 0, TC_REPLICA_FAILURE, 1);
    assert_int_equal(info_of(set, a, 0).state, TC_REPLICA_EJECTED);
    memset(counts, 0, sizeof(counts));
    for (int i = 0; i < 2000; i++) {
        tc_replica_choice ch;
        assert_int_equal(tc_replica_choose_first(set, 0, &ch), 0);
        counts[ch.id]++;
        assert_int_equal(tc_replica_done(set, ch.id, TC_REPLICA_NOT_SENT, 0, 0), 0);
    }
    assert_int_equal(counts[a], 0);
    assert_int_equal(counts[b], 2000);
    tc_replica_set_free(set);

    /* Equal scores: an even split (the tie goes to the first of two random draws). */
    set = set_new(5, 0, 50, 12);
    a = add(set, "a");
    b = add(set, "b");
    memset(counts, 0, sizeof(counts));
    for (int i = 0; i < DRAWS; i++) {
        tc_replica_choice ch;
        assert_int_equal(tc_replica_choose_first(set, 0, &ch), 0);
        counts[ch.id]++;
        assert_int_equal(tc_replica_done(set, ch.id, TC_REPLICA_NOT_SENT, 0, 0), 0);
    }
    assert_true(fabs((double)counts[a] / DRAWS - 0.5) < 0.02);
    /* In flight counts: an attempt held on a makes b win every draw (score 2 x 10 > 1 x 10). */
    attempt(set, a, 0, TC_REPLICA_SUCCESS, 10);
    attempt(set, b, 0, TC_REPLICA_SUCCESS, 10);
    take_on(set, a, 0);
    for (int i = 0; i < 1000; i++) {
        tc_replica_choice ch;
        assert_int_equal(tc_replica_choose_first(set, 0, &ch), 0);
        assert_int_equal(ch.id, b);
        assert_int_equal(tc_replica_done(set, ch.id, TC_REPLICA_NOT_SENT, 0, 0), 0);
    }
    assert_int_equal(tc_replica_done(set, a, TC_REPLICA_NOT_SENT, 0, 0), 0);
    tc_replica_set_free(set);
}

/* ---- ejection, probing, readmission, the cap, panic ------------------------------------------ */

static void test_eject_on_failures_probe_readmit(void **state)
{
    (void)state;
    tc_replica_set *set = set_new(3, 0, 50, 5);
    unsigned a = add(set, "a"), b = add(set, "b"), c = add(set, "c");
    uint64_t t = 1000;
    /* Two failures, a success, two failures: the count starts again, no ejection. */
    attempt(set, a, t, TC_REPLICA_FAILURE, 5);
    attempt(set, a, t, TC_REPLICA_FAILURE, 5);
    attempt(set, a, t, TC_REPLICA_SUCCESS, 5);
    attempt(set, a, t, TC_REPLICA_FAILURE, 5);
    attempt(set, a, t, TC_REPLICA_CANCELLED, 5); /* neither: the count stays */
    attempt(set, a, t, TC_REPLICA_FAILURE, 5);
    assert_int_equal(info_of(set, a, t).state, TC_REPLICA_AVAILABLE);
    /* The third in a row ejects it for 10 s. */
    attempt(set, a, t, TC_REPLICA_FAILURE, 5);
    tc_replica_info in = info_of(set, a, t);
    assert_int_equal(in.state, TC_REPLICA_EJECTED);
    assert_int_equal(in.ejections[TC_REPLICA_REASON_FAILURES], 1);
    assert_int_equal(in.ejected_until_ms, t + TC_REPLICA_EJECT_MS);
    for (int i = 0; i < 500; i++) {
        tc_replica_choice ch;
        assert_int_equal(tc_replica_choose_extra(set, t + 5000, &b, 1, &ch), 0);
        assert_int_equal(ch.id, c); /* never a, even when b was tried */
        assert_int_equal(tc_replica_done(set, ch.id, TC_REPLICA_NOT_SENT, 0, t + 5000), 0);
    }
    /* Still ejected a millisecond before the end, probing at it. */
    assert_int_equal(info_of(set, a, t + TC_REPLICA_EJECT_MS - 1).state, TC_REPLICA_EJECTED);
    assert_int_equal(info_of(set, a, t + TC_REPLICA_EJECT_MS).state, TC_REPLICA_PROBING);
    t += TC_REPLICA_EJECT_MS;
    /* Probing: one attempt at a time. With the probe in flight, a is not eligible. */
    take_on(set, a, t);
    for (int i = 0; i < 200; i++) {
        tc_replica_choice ch;
        unsigned tried[2] = {b, c};
        assert_int_equal(tc_replica_choose_extra(set, t, tried, 2, &ch), 0);
        assert_true(ch.id != a);
        assert_int_equal(tc_replica_done(set, ch.id, TC_REPLICA_NOT_SENT, 0, t), 0);
    }
    /* A cancelled probe leaves it probing; a failed one ejects it again, for 2 x 10 s. */
    assert_int_equal(tc_replica_done(set, a, TC_REPLICA_CANCELLED, 1000, t), 0);
    assert_int_equal(info_of(set, a, t).state, TC_REPLICA_PROBING);
    attempt(set, a, t, TC_REPLICA_FAILURE, 5);
    in = info_of(set, a, t);
    assert_int_equal(in.state, TC_REPLICA_EJECTED);
    assert_int_equal(in.ejections[TC_REPLICA_REASON_FAILURES], 2);
    assert_int_equal(in.ejected_until_ms, t + 2 * TC_REPLICA_EJECT_MS);
    t += 2 * TC_REPLICA_EJECT_MS;
    assert_int_equal(info_of(set, a, t).state, TC_REPLICA_PROBING);
    /* The first success readmits it; failures count from zero again. */
    attempt(set, a, t, TC_REPLICA_SUCCESS, 5);
    assert_int_equal(info_of(set, a, t).state, TC_REPLICA_AVAILABLE);
    attempt(set, a, t, TC_REPLICA_FAILURE, 5);
    attempt(set, a, t, TC_REPLICA_FAILURE, 5);
    assert_int_equal(info_of(set, a, t).state, TC_REPLICA_AVAILABLE);
    /* The third ejection lasts 30 s; the duration stops growing at TC_REPLICA_EJECT_MAX_MS. */
    attempt(set, a, t, TC_REPLICA_FAILURE, 5);
    assert_int_equal(info_of(set, a, t).ejected_until_ms, t + 3 * TC_REPLICA_EJECT_MS);
    for (int k = 4; k <= 40; k++) {
        t = info_of(set, a, t).ejected_until_ms;
        assert_int_equal(info_of(set, a, t).state, TC_REPLICA_PROBING);
        attempt(set, a, t, TC_REPLICA_FAILURE, 5);
        uint64_t want = (uint64_t)k * TC_REPLICA_EJECT_MS;
        if (want > TC_REPLICA_EJECT_MAX_MS)
            want = TC_REPLICA_EJECT_MAX_MS;
        assert_int_equal(info_of(set, a, t).ejected_until_ms, t + want);
    }
    tc_replica_totals tot;
    (void)tc_replica_snapshot(set, t, NULL, 0, &tot);
    assert_int_equal(tot.states[TC_REPLICA_EJECTED], 1);
    assert_int_equal(tot.states[TC_REPLICA_AVAILABLE], 2);
    assert_int_equal(tot.states[TC_REPLICA_PROBING], 0);
    assert_int_equal(tot.in_flight, 0);
    tc_replica_set_free(set);
}

/* At most floor(PCT x n / 100) replicas ejected or probing at once; 0 % never ejects; a single
 * replica never. */
static void test_max_ejected_and_single(void **state)
{
    (void)state;
    tc_replica_set *set = set_new(1, 0, 50, 5); /* 4 replicas: at most 2 out */
    unsigned r[4];
    for (int i = 0; i < 4; i++)
        r[i] = add(set, "r");
    uint64_t t = 0;
    attempt(set, r[0], t, TC_REPLICA_FAILURE, 1);
    attempt(set, r[1], t, TC_REPLICA_FAILURE, 1);
    attempt(set, r[2], t, TC_REPLICA_FAILURE, 1); /* the cap says no */
    attempt(set, r[2], t, TC_REPLICA_FAILURE, 1);
    assert_int_equal(info_of(set, r[0], t).state, TC_REPLICA_EJECTED);
    assert_int_equal(info_of(set, r[1], t).state, TC_REPLICA_EJECTED);
    assert_int_equal(info_of(set, r[2], t).state, TC_REPLICA_AVAILABLE);
    /* Probing still counts toward the cap. */
    t += TC_REPLICA_EJECT_MS;
    assert_int_equal(info_of(set, r[0], t).state, TC_REPLICA_PROBING);
    attempt(set, r[2], t, TC_REPLICA_FAILURE, 1);
    assert_int_equal(info_of(set, r[2], t).state, TC_REPLICA_AVAILABLE);
    /* A probing replica that fails is ejected again whatever the cap (it is counted already). */
    attempt(set, r[0], t, TC_REPLICA_FAILURE, 1);
    assert_int_equal(info_of(set, r[0], t).state, TC_REPLICA_EJECTED);
    /* Readmitting r1 frees a place: r2's next failure ejects it. */
    attempt(set, r[1], t, TC_REPLICA_SUCCESS, 1);
    attempt(set, r[2], t, TC_REPLICA_FAILURE, 1);
    assert_int_equal(info_of(set, r[2], t).state, TC_REPLICA_EJECTED);
    /* Removing an ejected replica gives its place back. */
    assert_int_equal(tc_replica_remove(set, r[0]), 0);
    tc_replica_totals tot;
    (void)tc_replica_snapshot(set, t, NULL, 0, &tot);
    assert_int_equal(tot.replicas, 3);
    assert_int_equal(tot.states[TC_REPLICA_EJECTED], 1); /* 3 x 50 % = 1: r2 */
    attempt(set, r[1], t, TC_REPLICA_FAILURE, 1);
    assert_int_equal(info_of(set, r[1], t).state, TC_REPLICA_AVAILABLE);
    tc_replica_set_free(set);

    set = set_new(1, 0, 0, 5); /* 0 %: never */
    for (int i = 0; i < 3; i++)
        r[i] = add(set, "r");
    for (int i = 0; i < 50; i++)
        attempt(set, r[i % 3], 0, TC_REPLICA_FAILURE, 1);
    (void)tc_replica_snapshot(set, 0, NULL, 0, &tot);
    assert_int_equal(tot.states[TC_REPLICA_AVAILABLE], 3);
    tc_replica_set_free(set);

    set = set_new(1, 5, 100, 5); /* one replica, the most eager settings: never ejected */
    r[0] = add(set, "only");
    for (int i = 0; i < 100; i++) {
        tc_replica_choice ch;
        assert_int_equal(tc_replica_choose_first(set, (uint64_t)i * 1000, &ch), 0);
        assert_int_equal(ch.id, r[0]);
        assert_int_equal(ch.panic, 0);
        assert_int_equal(tc_replica_done(set, r[0], TC_REPLICA_FAILURE, 1000, (uint64_t)i * 1000),
                         0);
    }
    assert_int_equal(info_of(set, r[0], 100000).state, TC_REPLICA_AVAILABLE);
    tc_replica_set_free(set);
}

/* With no eligible replica, attempts still go to one (first and extra), flagged and counted as
 * panic; a probing replica with its probe in flight is not eligible either. */
static void test_panic(void **state)
{
    (void)state;
    tc_replica_set *set = set_new(1, 0, 100, 9);
    unsigned a = add(set, "a"), b = add(set, "b");
    attempt(set, a, 0, TC_REPLICA_FAILURE, 1);
    attempt(set, b, 0, TC_REPLICA_FAILURE, 1);
    unsigned seen[2] = {0};
    for (int i = 0; i < 400; i++) {
        tc_replica_choice ch;
        if (i % 2)
            assert_int_equal(tc_replica_choose_first(set, 5000, &ch), 0);
        else
            assert_int_equal(tc_replica_choose_extra(set, 5000, &a, 1, &ch), 0);
        assert_int_equal(ch.panic, 1);
        seen[ch.id]++;
        /* a panic success does not end an ejection */
        assert_int_equal(tc_replica_done(set, ch.id, TC_REPLICA_SUCCESS, 1000, 5000), 0);
    }
    assert_true(seen[a] > 0 && seen[b] > 0);
    tc_replica_totals tot;
    tc_replica_info info[2];
    (void)tc_replica_snapshot(set, 5000, info, 2, &tot);
    assert_int_equal(tot.panics, 400);
    assert_int_equal(info[0].panics + info[1].panics, 400);
    assert_int_equal(tot.states[TC_REPLICA_EJECTED], 2);
    /* Both probing at 10 s; with both probes in flight there is no eligible one again. */
    take_on(set, a, 10000);
    take_on(set, b, 10000);
    tc_replica_choice ch;
    assert_int_equal(tc_replica_choose_first(set, 10000, &ch), 0);
    assert_int_equal(ch.panic, 1);
    assert_int_equal(tc_replica_done(set, ch.id, TC_REPLICA_NOT_SENT, 0, 10000), 0);
    assert_int_equal(tc_replica_done(set, a, TC_REPLICA_SUCCESS, 1000, 10000), 0);
    assert_int_equal(tc_replica_choose_first(set, 10000, &ch), 0);
    assert_int_equal(ch.panic, 0);
    assert_int_equal(ch.id, a);
    assert_int_equal(tc_replica_done(set, ch.id, TC_REPLICA_NOT_SENT, 0, 10000), 0);
    assert_int_equal(tc_replica_done(set, b, TC_REPLICA_NOT_SENT, 0, 10000), 0);
    tc_replica_set_free(set);
}

/* Latency: an available replica whose average stays above F x the median for 2 s is ejected
 * (with at least 3 replicas); one that comes back under it in time, or a set of two, is not. */
static void test_eject_on_latency(void **state)
{
    (void)state;
    tc_replica_set *set = set_new(5, 5, 50, 2);
    unsigned a = add(set, "a"), b = add(set, "b"), c = add(set, "c");
    uint64_t t = 0;
    attempt(set, a, t, TC_REPLICA_SUCCESS, 10);
    attempt(set, b, t, TC_REPLICA_SUCCESS, 12);
    attempt(set, c, t, TC_REPLICA_SUCCESS, 200); /* above 5 x the median 12 */
    /* Calls every 100 ms keep it measured; it reads 10 + 190 x e^(-t/10 s): still over 60 at
     * 2 s. Ejected between 2 s and 2.1 s after it was first seen slow (the checks' spacing). */
    for (t = 0; t < 1900; t += 100)
        assert_int_equal(info_of(set, c, t).state, TC_REPLICA_AVAILABLE);
    for (; t <= 2200 && info_of(set, c, t).state == TC_REPLICA_AVAILABLE; t += 100)
        ;
    assert_true(t >= 2000 && t <= 2200);
    tc_replica_info in = info_of(set, c, t);
    assert_int_equal(in.state, TC_REPLICA_EJECTED);
    assert_int_equal(in.ejections[TC_REPLICA_REASON_LATENCY], 1);
    assert_int_equal(in.ejections[TC_REPLICA_REASON_FAILURES], 0);
    tc_replica_set_free(set);

    /* Slow for a second, then no longer (the others slowed down: the median went up): the
     * slow timer stops, never ejected. */
    set = set_new(5, 5, 50, 2);
    a = add(set, "a");
    b = add(set, "b");
    c = add(set, "c");
    attempt(set, a, 0, TC_REPLICA_SUCCESS, 10);
    attempt(set, b, 0, TC_REPLICA_SUCCESS, 10);
    attempt(set, c, 0, TC_REPLICA_SUCCESS, 100);
    for (t = 0; t < 1000; t += 100)
        assert_int_equal(info_of(set, c, t).state, TC_REPLICA_AVAILABLE);
    attempt(set, a, t, TC_REPLICA_SUCCESS, 30);
    attempt(set, b, t, TC_REPLICA_SUCCESS, 30);
    for (; t <= 6000; t += 100)
        assert_int_equal(info_of(set, c, t).state, TC_REPLICA_AVAILABLE);
    /* And slow again (a new peak): ejected 2 s from then, not from the first time. */
    attempt(set, c, t, TC_REPLICA_SUCCESS, 1000);
    uint64_t again = t;
    for (; t < again + 2000; t += 100)
        assert_int_equal(info_of(set, c, t).state, TC_REPLICA_AVAILABLE);
    for (; t <= again + 2300 && info_of(set, c, t).state == TC_REPLICA_AVAILABLE; t += 100)
        ;
    assert_int_equal(info_of(set, c, t).ejections[TC_REPLICA_REASON_LATENCY], 1);
    tc_replica_set_free(set);

    /* Two replicas: never on latency. Off (F = 0): never either. */
    for (int k = 0; k < 2; k++) {
        set = set_new(5, k == 0 ? 5 : 0, 100, 2);
        a = add(set, "a");
        b = add(set, "b");
        if (k == 1)
            add(set, "c");
        attempt(set, a, 0, TC_REPLICA_SUCCESS, 1);
        attempt(set, b, 0, TC_REPLICA_SUCCESS, 100000);
        for (t = 0; t <= 5000; t += 100)
            assert_int_equal(info_of(set, b, t).state, TC_REPLICA_AVAILABLE);
        tc_replica_set_free(set);
    }
}

/* A slow replica that stops getting attempts is tried again once its average has decayed toward
 * the others': with the fast ones loaded, the first choice goes back to it. */
static void test_recovery_by_decay(void **state)
{
    (void)state;
    tc_replica_set *set = set_new(5, 0, 50, 4);
    unsigned a = add(set, "a"), b = add(set, "b");
    attempt(set, a, 0, TC_REPLICA_SUCCESS, 10);
    attempt(set, b, 0, TC_REPLICA_SUCCESS, 1000);
    take_on(set, a, 0); /* a: score 20; b: 1000 */
    tc_replica_choice ch;
    assert_int_equal(tc_replica_choose_first(set, 1000, &ch), 0);
    assert_int_equal(ch.id, a);
    assert_int_equal(tc_replica_done(set, ch.id, TC_REPLICA_NOT_SENT, 0, 1000), 0);
    /* b reads 10 + 990 e^(-t/10 s): under 20 after about 46 s. */
    assert_int_equal(tc_replica_choose_first(set, 45000, &ch), 0);
    assert_int_equal(ch.id, a);
    assert_int_equal(tc_replica_done(set, ch.id, TC_REPLICA_NOT_SENT, 0, 45000), 0);
    assert_int_equal(tc_replica_choose_first(set, 47000, &ch), 0);
    assert_int_equal(ch.id, b);
    assert_int_equal(tc_replica_done(set, ch.id, TC_REPLICA_NOT_SENT, 0, 47000), 0);
    assert_int_equal(tc_replica_done(set, a, TC_REPLICA_NOT_SENT, 0, 47000), 0);
    tc_replica_set_free(set);
}

/* ---- the set's bookkeeping ------------------------------------------------------------------ */

static int released[8];

static void on_release(void *data)
{
    released[(int)(intptr_t)data]++;
}

static void test_add_remove_ids_and_errors(void **state)
{
    (void)state;
    memset(released, 0, sizeof(released));
    tc_replica_config cfg;
    tc_replica_config_init(&cfg);
    assert_int_equal(cfg.eject_failures, 5);
    assert_true(cfg.eject_latency_factor == 5);
    assert_int_equal(cfg.max_ejected_pct, 50);
    cfg.release = on_release;
    tc_replica_set *set = NULL;
    tc_replica_config bad = cfg;
    bad.eject_failures = 0;
    assert_int_equal(tc_replica_set_new(&set, &bad), TC_EINVAL);
    bad = cfg;
    bad.eject_latency_factor = 1.4;
    assert_int_equal(tc_replica_set_new(&set, &bad), TC_EINVAL);
    bad = cfg;
    bad.max_ejected_pct = 101;
    assert_int_equal(tc_replica_set_new(&set, &bad), TC_EINVAL);
    assert_int_equal(tc_replica_set_new(NULL, &cfg), TC_EINVAL);
    assert_int_equal(tc_replica_set_new(&set, &cfg), 0);

    tc_replica_choice ch;
    assert_int_equal(tc_replica_choose_first(set, 0, &ch), TC_EMISSING);
    assert_int_equal(tc_replica_choose_extra(set, 0, NULL, 0, &ch), TC_EMISSING);
    assert_int_equal(tc_replica_choose_extra(set, 0, NULL, 1, &ch), TC_EINVAL);
    unsigned id0, id1, id2, id;
    char longest[TC_REPLICA_LABEL_MAX + 2];
    memset(longest, 'h', sizeof(longest));
    longest[TC_REPLICA_LABEL_MAX + 1] = '\0';
    assert_int_equal(tc_replica_add(set, longest, NULL, &id), TC_EINVAL);
    longest[TC_REPLICA_LABEL_MAX] = '\0';
    assert_int_equal(tc_replica_add(set, "", NULL, &id), TC_EINVAL);
    assert_int_equal(tc_replica_add(set, "http://10.0.0.1:80", (void *)(intptr_t)0, &id0), 0);
    assert_int_equal(tc_replica_add(set, "http://[::1]:8000", (void *)(intptr_t)1, &id1), 0);
    assert_int_equal(tc_replica_add(set, longest, (void *)(intptr_t)2, &id2), 0);
    assert_true(id0 != id1 && id1 != id2 && id0 != id2);
    assert_int_equal(tc_replica_count(set), 3);
    assert_int_equal(tc_replica_find(set, "http://[::1]:8000", &id), 0);
    assert_int_equal(id, id1);
    assert_int_equal(tc_replica_find(set, "http://nope:1", &id), TC_EMISSING);
    assert_int_equal(tc_replica_done(set, id0, TC_REPLICA_SUCCESS, 1, 0), TC_EINVAL); /* none */
    assert_int_equal(tc_replica_done(set, 77, TC_REPLICA_SUCCESS, 1, 0), TC_EINVAL);
    assert_int_equal(tc_replica_done(set, id0, TC_REPLICA_RESULT_COUNT, 1, 0), TC_EINVAL);
    tc_replica_info info[3];
    assert_int_equal(tc_replica_snapshot(set, 0, info, 3, NULL), 3);
    assert_string_equal(info[2].label, longest);
    assert_string_equal(info[1].label, "http://[::1]:8000");

    /* Removed with an attempt in flight: no more choices, the report still counts, the data is
     * released once, after it. */
    take_on(set, id1, 0);
    assert_int_equal(tc_replica_remove(set, id1), 0);
    assert_int_equal(tc_replica_remove(set, id1), TC_EINVAL);
    assert_int_equal(released[1], 0);
    assert_int_equal(tc_replica_count(set), 2);
    assert_int_equal(tc_replica_find(set, "http://[::1]:8000", &id), TC_EMISSING);
    for (int i = 0; i < 100; i++) {
        assert_int_equal(tc_replica_choose_first(set, 0, &ch), 0);
        assert_true(ch.id != id1);
        assert_int_equal(tc_replica_done(set, ch.id, TC_REPLICA_NOT_SENT, 0, 0), 0);
    }
    /* Its slot is not given to a newcomer while the report is due. */
    assert_int_equal(tc_replica_add(set, "new", (void *)(intptr_t)3, &id), 0);
    assert_true(id != id1);
    tc_replica_totals tot;
    (void)tc_replica_snapshot(set, 0, NULL, 0, &tot);
    assert_int_equal(tot.in_flight, 1);
    assert_int_equal(tc_replica_done(set, id1, TC_REPLICA_SUCCESS, 1000, 0), 0);
    assert_int_equal(released[1], 1);
    assert_int_equal(tc_replica_done(set, id1, TC_REPLICA_SUCCESS, 1000, 0), TC_EINVAL);
    /* Now it is. Removing one with nothing in flight releases at once. */
    unsigned again;
    assert_int_equal(tc_replica_add(set, "again", (void *)(intptr_t)4, &again), 0);
    assert_int_equal(again, id1);
    assert_int_equal(tc_replica_remove(set, id0), 0);
    assert_int_equal(released[0], 1);
    tc_replica_set_free(set); /* releases the rest, once each */
    assert_int_equal(released[0], 1);
    assert_int_equal(released[1], 1);
    assert_int_equal(released[2], 1);
    assert_int_equal(released[3], 1);
    assert_int_equal(released[4], 1);

    /* TC_REPLICA_MAX replicas, then TC_EBUSY; the names of the enums. */
    set = set_new(5, 5, 50, 0);
    for (int i = 0; i < TC_REPLICA_MAX; i++)
        assert_int_equal(tc_replica_add(set, "r", NULL, &id), 0);
    assert_int_equal(tc_replica_add(set, "r", NULL, &id), TC_EBUSY);
    assert_int_equal(tc_replica_remove(set, 17), 0);
    assert_int_equal(tc_replica_add(set, "r", NULL, &id), 0);
    assert_int_equal(id, 17);
    tc_replica_set_free(set);
    assert_string_equal(tc_replica_state_name(TC_REPLICA_PROBING), "probing");
    assert_string_equal(tc_replica_result_name(TC_REPLICA_CANCELLED), "cancelled");
    assert_string_equal(tc_replica_reason_name(TC_REPLICA_REASON_LATENCY), "latency");
    assert_string_equal(tc_replica_state_name((tc_replica_state)9), "unknown");
    assert_int_equal(tc_replica_classify_status(429), TC_REPLICA_FAILURE);
    assert_int_equal(tc_replica_classify_status(503), TC_REPLICA_FAILURE);
    assert_int_equal(tc_replica_classify_status(404), TC_REPLICA_SUCCESS);
    assert_int_equal(tc_replica_classify_status(200), TC_REPLICA_SUCCESS);
    tc_response resp = {.status = 200, .body = "{\"a\":1}", .body_len = 7};
    assert_int_equal(tc_replica_classify_json(&resp, NULL), TC_REPLICA_SUCCESS);
    resp.body = "{\"a\":";
    resp.body_len = 5;
    assert_int_equal(tc_replica_classify_json(&resp, NULL), TC_REPLICA_FAILURE);
    resp.status = 404; /* not JSON, but the client's doing */
    assert_int_equal(tc_replica_classify_json(&resp, NULL), TC_REPLICA_SUCCESS);
}

/* ---- threads -------------------------------------------------------------------------------- */

typedef struct worker {
    tc_replica_set *set;
    uv_thread_t thread;
    uint64_t seed;
    uint64_t chosen;
} worker;

static void worker_main(void *arg)
{
    worker *w = arg;
    tc__rng rng;
    tc__rng_seed(&rng, w->seed);
    for (int i = 0; i < 20000; i++) {
        tc_replica_choice ch[3];
        unsigned tried[3];
        size_t n = 1 + (size_t)tc__rng_below(&rng, 3);
        for (size_t k = 0; k < n; k++) {
            int err = k == 0 ? tc_replica_choose_first(w->set, (uint64_t)i, &ch[k])
                             : tc_replica_choose_extra(w->set, (uint64_t)i, tried, k, &ch[k]);
            if (err != 0)
                abort();
            tried[k] = ch[k].id;
            w->chosen++;
        }
        for (size_t k = 0; k < n; k++)
            if (tc_replica_done(w->set, ch[k].id, (tc_replica_result)tc__rng_below(&rng, 4),
                                tc__rng_below(&rng, 50000), (uint64_t)i) != 0)
                abort();
    }
}

/* Four threads choosing and reporting while a fifth adds and removes replicas: every choice is
 * reported once, nothing stays in flight, no report is refused (ASan/TSan-free under the lock). */
static void test_threads(void **state)
{
    (void)state;
    tc_replica_set *set = set_new(3, 5, 50, 1);
    for (int i = 0; i < 4; i++)
        add(set, "base");
    worker w[4];
    for (int i = 0; i < 4; i++) {
        memset(&w[i], 0, sizeof(w[i]));
        w[i].set = set;
        w[i].seed = (uint64_t)i + 1;
        assert_int_equal(uv_thread_create(&w[i].thread, worker_main, &w[i]), 0);
    }
    for (int i = 0; i < 2000; i++) {
        unsigned id;
        assert_int_equal(tc_replica_add(set, "churn", NULL, &id), 0);
        assert_int_equal(tc_replica_remove(set, id), 0);
    }
    uint64_t chosen = 0;
    for (int i = 0; i < 4; i++) {
        assert_int_equal(uv_thread_join(&w[i].thread), 0);
        chosen += w[i].chosen;
    }
    tc_replica_totals tot;
    tc_replica_info info[4];
    assert_int_equal(tc_replica_snapshot(set, 20000, info, 4, &tot), 4);
    assert_int_equal(tot.in_flight, 0);
    uint64_t reported = 0;
    for (int i = 0; i < 4; i++)
        for (int k = 0; k < TC_REPLICA_RESULT_COUNT; k++)
            reported += info[i].attempts[k];
    assert_true(reported <= chosen); /* the rest went to churned replicas, gone with them */
    assert_true(reported > chosen / 2);
    tc_replica_set_free(set);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_score_by_hand),
        cmocka_unit_test(test_score_random_sequences),
        cmocka_unit_test(test_score_adversarial_scripts),
        cmocka_unit_test(test_choice_extra_untried_first),
        cmocka_unit_test(test_choice_ties_spread),
        cmocka_unit_test(test_p2c_distribution),
        cmocka_unit_test(test_eject_on_failures_probe_readmit),
        cmocka_unit_test(test_max_ejected_and_single),
        cmocka_unit_test(test_panic),
        cmocka_unit_test(test_eject_on_latency),
        cmocka_unit_test(test_recovery_by_decay),
        cmocka_unit_test(test_add_remove_ids_and_errors),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
