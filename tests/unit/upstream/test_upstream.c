/*
 * Unit tests for the simulator's decisions (src/upstream/upstream_plan.c) and its object
 * (src/upstream/upstream.c):
 * - --profile parsing: every kind, its bounds and the reasons given for bad values;
 * - exponea's deck: every run of 11 draws holds exactly one hang, one invalid JSON and one 500,
 *   whatever the seed, and a profile switch starts a fresh deck;
 * - seeded reproducibility: fixed sequences for fixed seeds (the draws `--seed` gave before the
 *   generator moved to src/base/rng.c), the same seed twice, different seeds;
 * - the pause profile: its parameters, its phase (given, or drawn from the seed), the stalls on
 *   the epoch-anchored clock, and the due-time arithmetic against a tick-by-tick reference;
 * - scenario step parsing: defaults, every field, every rejection, no leak on failure;
 * - the object: the seed in use, close twice, nothing left on the loop.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>
#include <uv.h>

#include "tailcut/upstream.h"
#include "upstream/upstream_plan.h"

/* ---- profiles ------------------------------------------------------------------------------- */

static void test_profile_parse_valid(void **state)
{
    (void)state;
    tc_upstream_profile p;
    assert_int_equal(tc_upstream_profile_parse("exponea", &p, NULL), 0);
    assert_int_equal(p.kind, TC_PROFILE_EXPONEA);
    assert_int_equal(tc_upstream_profile_parse("fixed:250", &p, NULL), 0);
    assert_int_equal(p.kind, TC_PROFILE_FIXED);
    assert_true(p.a == 250.0);
    assert_int_equal(tc_upstream_profile_parse("uniform:5:5", &p, NULL), 0);
    assert_int_equal(p.kind, TC_PROFILE_UNIFORM);
    assert_true(p.a == 5.0 && p.b == 5.0);
    assert_int_equal(tc_upstream_profile_parse("lognormal:120.5:0.75", &p, NULL), 0);
    assert_int_equal(p.kind, TC_PROFILE_LOGNORMAL);
    assert_true(p.a == 120.5 && p.b == 0.75);
    assert_int_equal(tc_upstream_profile_parse("straggler:10:3600000:1", &p, NULL), 0);
    assert_int_equal(p.kind, TC_PROFILE_STRAGGLER);
    assert_true(p.a == 10.0 && p.b == 3600000.0 && p.c == 1.0);
    assert_int_equal(tc_upstream_profile_parse("mix:10:20:200:300:0.25", &p, NULL), 0);
    assert_int_equal(p.kind, TC_PROFILE_MIX);
    assert_true(p.a == 10.0 && p.b == 20.0 && p.d == 200.0 && p.e == 300.0 && p.c == 0.25);
    assert_int_equal(tc_upstream_profile_parse("pause:10:30:200:2000", &p, NULL), 0);
    assert_int_equal(p.kind, TC_PROFILE_PAUSE);
    assert_true(p.a == 10.0 && p.b == 30.0 && p.d == 200.0 && p.e == 2000.0 && p.c == -1.0);
    assert_int_equal(tc_upstream_profile_parse("pause:0:0:0:1:0", &p, NULL), 0);
    assert_true(p.a == 0.0 && p.d == 0.0 && p.e == 1.0 && p.c == 0.0);
    assert_int_equal(tc_upstream_profile_parse("pause:5:5:3599999:3600000:3599999", &p, NULL), 0);
    assert_true(p.d == 3599999.0 && p.e == 3600000.0 && p.c == 3599999.0);
    /* out may be NULL: validation only */
    assert_int_equal(tc_upstream_profile_parse("fixed:0", NULL, NULL), 0);
}

static void test_profile_parse_invalid(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "exponea:1",
        "fixed",
        "fixed:-1",
        "fixed:1.5",
        "fixed:3600001",
        "fixed:1e3",
        "fixed: 1",
        "uniform:5:1",
        "uniform:1",
        "lognormal:100:10.5",
        "lognormal:100",
        "straggler:1:2:1.5",
        "mix:10:20:300:200:0.5",
        "mix:1:2:3:4:5:6",
        "gaussian:1",
        "fixed:0000000000000001",
        "uniformly:1:2",
        "fixed:1:",
        "pause",
        "pause:10:30:200",
        "pause:10:30:200:2000:0:1",
        "pause:30:10:200:2000",
        "pause:10:30:2000:2000",
        "pause:10:30:2001:2000",
        "pause:10:30:200:2000:2000",
        "pause:10:30:200:2000:",
        "pause:10:30:200:0",
        "pause:10:30:200:3600001",
        "pause:10:30:1.5:2000",
        "pause:10:30:-1:2000",
        "pause:10:30:200:2000:-5",
    };
    char longer[200];
    memset(longer, '1', sizeof(longer) - 1);
    longer[sizeof(longer) - 1] = '\0';
    memcpy(longer, "fixed:", 6);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *why = NULL;
        tc_upstream_profile p = {.kind = TC_PROFILE_FIXED, .a = 77};
        if (tc_upstream_profile_parse(bad[i], &p, &why) != TC_EINVAL)
            fail_msg("accepted \"%s\"", bad[i]);
        assert_non_null(why);
        assert_true(strlen(why) > 0);
        assert_true(p.a == 77); /* *out untouched on failure */
    }
    assert_int_equal(tc_upstream_profile_parse(longer, NULL, NULL), TC_EINVAL);
    assert_int_equal(tc_upstream_profile_parse(NULL, NULL, NULL), TC_EINVAL);
}

/* ---- exponea's deck ------------------------------------------------------------------------- */

static tc_upstream_profile parsed(const char *text)
{
    tc_upstream_profile p;
    assert_int_equal(tc_upstream_profile_parse(text, &p, NULL), 0);
    return p;
}

/* The first n draws of a dealer of profile seeded with seed: their delays, and outcomes. */
static void draws(const char *profile, uint64_t seed, uint64_t *ms, tc__up_outcome *outs, size_t n)
{
    tc_upstream_profile p = parsed(profile);
    tc__up_dealer d;
    tc__up_dealer_init(&d, &p, seed);
    for (size_t i = 0; i < n; i++) {
        tc__up_step s;
        tc__up_outcome out;
        tc__up_draw(&d, &s, &out);
        ms[i] = s.delay_ms;
        if (outs != NULL)
            outs[i] = out;
    }
}

static void test_exponea_deck(void **state)
{
    (void)state;
    tc_upstream_profile p = parsed("exponea");
    for (uint64_t seed = 0; seed < 50; seed++) {
        tc__up_dealer d;
        tc__up_dealer_init(&d, &p, seed);
        for (int deck = 0; deck < 40; deck++) {
            unsigned count[TC__UP_OUT_COUNT] = {0};
            for (int k = 0; k < TC__UP_DECK; k++) {
                tc__up_step s;
                tc__up_outcome out;
                tc__up_draw(&d, &s, &out);
                count[out]++;
                assert_true(s.delay_ms >= 100 && s.delay_ms <= 600);
                assert_null(s.body);
                switch (out) {
                case TC__UP_OUT_HANG:
                    assert_int_equal(s.act, TC__UP_HANG);
                    break;
                case TC__UP_OUT_ERROR:
                    assert_int_equal(s.act, TC__UP_RESPOND);
                    assert_int_equal(s.status, 500);
                    break;
                default:
                    assert_int_equal(s.act, TC__UP_RESPOND);
                    assert_int_equal(s.status, 200);
                }
            }
            assert_int_equal(count[TC__UP_OUT_OK], 8);
            assert_int_equal(count[TC__UP_OUT_HANG], 1);
            assert_int_equal(count[TC__UP_OUT_INVALID_JSON], 1);
            assert_int_equal(count[TC__UP_OUT_ERROR], 1);
            assert_int_equal(count[TC__UP_OUT_SCENARIO], 0);
        }
    }
}

/* The decks are shuffled: over many seeds, the hang is not always in the same place. */
static void test_exponea_deck_shuffled(void **state)
{
    (void)state;
    unsigned hang_at[TC__UP_DECK] = {0};
    for (uint64_t seed = 0; seed < 1100; seed++) {
        uint64_t ms[TC__UP_DECK];
        tc__up_outcome out[TC__UP_DECK];
        draws("exponea", seed, ms, out, TC__UP_DECK);
        for (int k = 0; k < TC__UP_DECK; k++)
            if (out[k] == TC__UP_OUT_HANG)
                hang_at[k]++;
    }
    for (int k = 0; k < TC__UP_DECK; k++) /* 100 expected at each place */
        assert_true(hang_at[k] > 40 && hang_at[k] < 180);
}

/* POST /profile: switching back to exponea mid-deck starts a whole new deck of 11. */
static void test_profile_switch_fresh_deck(void **state)
{
    (void)state;
    tc_upstream_profile ex = parsed("exponea"), fixed = parsed("fixed:5");
    tc__up_dealer d;
    tc__up_dealer_init(&d, &ex, 99);
    for (int round = 0; round < 20; round++) {
        tc__up_step s;
        tc__up_outcome out;
        for (int k = 0; k < 1 + round % 10; k++) /* leave the deck part used */
            tc__up_draw(&d, &s, &out);
        tc__up_dealer_set(&d, &fixed);
        tc__up_draw(&d, &s, &out);
        assert_int_equal(out, TC__UP_OUT_OK);
        assert_int_equal(s.delay_ms, 5);
        tc__up_dealer_set(&d, &ex);
        unsigned count[TC__UP_OUT_COUNT] = {0};
        for (int k = 0; k < TC__UP_DECK; k++) {
            tc__up_draw(&d, &s, &out);
            count[out]++;
        }
        assert_int_equal(count[TC__UP_OUT_HANG], 1);
        assert_int_equal(count[TC__UP_OUT_INVALID_JSON], 1);
        assert_int_equal(count[TC__UP_OUT_ERROR], 1);
    }
}

/* ---- seeded reproducibility ----------------------------------------------------------------- */

/* The sequences --seed gave before the generator moved into src/base/ (xoshiro256** seeded
 * through splitmix64): a change here changes every seeded run and its tests. */
static void test_seeded_sequences(void **state)
{
    (void)state;
    uint64_t ms[11];
    tc__up_outcome out[11];

    static const uint64_t uniform42[8] = {221, 104, 124, 226, 168, 236, 204, 236};
    draws("uniform:50:250", 42, ms, NULL, 8);
    assert_memory_equal(ms, uniform42, sizeof(uniform42));

    static const uint64_t exponea7[11] = {201, 119, 331, 555, 463, 477, 350, 133, 185, 266, 185};
    static const tc__up_outcome exponea7_out[11] = {
        TC__UP_OUT_OK, TC__UP_OUT_OK,   TC__UP_OUT_INVALID_JSON, TC__UP_OUT_OK,    TC__UP_OUT_OK,
        TC__UP_OUT_OK, TC__UP_OUT_HANG, TC__UP_OUT_OK,           TC__UP_OUT_ERROR, TC__UP_OUT_OK,
        TC__UP_OUT_OK};
    draws("exponea", 7, ms, out, 11);
    assert_memory_equal(ms, exponea7, sizeof(exponea7));
    assert_memory_equal(out, exponea7_out, sizeof(exponea7_out));

    static const uint64_t mix3[6] = {14, 204, 19, 267, 10, 18};
    draws("mix:10:20:200:300:0.25", 3, ms, NULL, 6);
    assert_memory_equal(ms, mix3, sizeof(mix3));

    tc__rng r;
    tc__rng_seed(&r, 0);
    assert_true(tc__rng_next(&r) == 0x99ec5f36cb75f2b4ULL);
}

static void test_same_seed_same_draws(void **state)
{
    (void)state;
    static const char *const profiles[] = {"exponea", "uniform:0:3600000", "lognormal:100:1.5",
                                           "straggler:10:900:0.1", "mix:1:5:100:2000:0.3"};
    enum { N = 500 };
    uint64_t *a = malloc(N * sizeof(*a)), *b = malloc(N * sizeof(*b));
    assert_non_null(a);
    assert_non_null(b);
    for (size_t i = 0; i < sizeof(profiles) / sizeof(profiles[0]); i++) {
        draws(profiles[i], 12345, a, NULL, N);
        draws(profiles[i], 12345, b, NULL, N);
        assert_memory_equal(a, b, N * sizeof(*a));
        for (size_t k = 0; k < N; k++)
            assert_true(a[k] <= TC_UPSTREAM_MAX_DELAY_MS);
        draws(profiles[i], 12346, b, NULL, N);
        assert_memory_not_equal(a, b, N * sizeof(*a));
    }
    free(a);
    free(b);
}

/* Each decision takes a fixed number of draws, whichever way it goes: a straggler's fast and slow
 * answers keep the generator in step with a uniform one that draws once per decision. */
static void test_fixed_draws_per_decision(void **state)
{
    (void)state;
    tc_upstream_profile s = parsed("straggler:1:2:0.5"), f = parsed("fixed:7");
    tc__up_dealer a, b;
    tc__up_dealer_init(&a, &s, 5);
    tc__up_dealer_init(&b, &s, 5);
    tc__up_step st;
    tc__up_outcome out;
    for (int i = 0; i < 100; i++)
        tc__up_draw(&a, &st, &out);
    /* fixed draws nothing: switching to it and back leaves b 100 decisions behind a's stream */
    tc__up_dealer_set(&b, &f);
    for (int i = 0; i < 50; i++) {
        tc__up_draw(&b, &st, &out);
        assert_int_equal(st.delay_ms, 7);
    }
    tc__up_dealer_set(&b, &s);
    for (int i = 0; i < 100; i++)
        tc__up_draw(&b, &st, &out);
    for (int i = 0; i < 50; i++) {
        tc__up_step sa, sb;
        tc__up_draw(&a, &sa, &out);
        tc__up_draw(&b, &sb, &out);
        assert_int_equal(sa.delay_ms, sb.delay_ms);
    }
}

/* ---- the pause profile ---------------------------------------------------------------------- */

static void test_pause_reasons(void **state)
{
    (void)state;
    static const struct {
        const char *text, *want;
    } bad[] = {
        {"pause:10:30:200", "expected pause:LO:HI:PAUSE_MS:PERIOD_MS[:PHASE_MS]"},
        {"pause:30:10:200:2000", "pause:LO:HI:PAUSE_MS:PERIOD_MS[:PHASE_MS] needs LO <= HI"},
        {"pause:10:30:2000:2000", "pause:LO:HI:PAUSE_MS:PERIOD_MS[:PHASE_MS] needs PAUSE_MS and "
                                  "PHASE_MS below PERIOD_MS"},
        {"pause:10:30:200:2000:2000", "pause:LO:HI:PAUSE_MS:PERIOD_MS[:PHASE_MS] needs PAUSE_MS "
                                      "and PHASE_MS below PERIOD_MS"},
        {"pause:10:30:x:2000", "pause:LO:HI:PAUSE_MS:PERIOD_MS[:PHASE_MS] needs whole numbers of "
                               "milliseconds up to 3600000"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *why = NULL;
        assert_int_equal(tc_upstream_profile_parse(bad[i].text, NULL, &why), TC_EINVAL);
        assert_string_equal(why, bad[i].want);
    }
    const char *why = NULL;
    assert_int_equal(tc_upstream_profile_parse("gc:1", NULL, &why), TC_EINVAL);
    assert_non_null(strstr(why, "pause:LO:HI:PAUSE_MS:PERIOD_MS[:PHASE_MS]"));
}

/* Work is uniform in LO..HI with one draw per decision, as uniform's (the same stream). */
static void test_pause_work_draws(void **state)
{
    (void)state;
    enum { N = 300 };
    uint64_t a[N], b[N];
    draws("pause:10:30:200:2000:0", 77, a, NULL, N);
    draws("uniform:10:30", 77, b, NULL, N);
    assert_memory_equal(a, b, sizeof(a));
}

/* Without PHASE_MS the phase is one draw when the profile is set: the same for the same seed,
 * spread over the period across seeds, and a POST /profile draws afresh. With it, it is as given
 * and takes no draw. */
static void test_pause_phase(void **state)
{
    (void)state;
    tc_upstream_profile drawn = parsed("pause:10:30:200:2000"),
                        given = parsed("pause:10:30:200:2000:667");
    tc__up_dealer d, e;
    unsigned quarter[4] = {0};
    for (uint64_t seed = 0; seed < 400; seed++) {
        tc__up_dealer_init(&d, &drawn, seed);
        tc__up_dealer_init(&e, &drawn, seed);
        assert_true(d.phase_ms < 2000);
        assert_true(d.phase_ms == e.phase_ms);
        quarter[d.phase_ms / 500]++;
    }
    for (int q = 0; q < 4; q++) /* 100 expected in each quarter */
        assert_true(quarter[q] > 50 && quarter[q] < 150);

    tc__up_dealer_init(&d, &given, 5);
    assert_true(d.phase_ms == 667);
    tc_upstream_profile uniform = parsed("uniform:10:30"), fixed = parsed("fixed:5");
    tc__up_dealer_init(&e, &uniform, 5);
    tc__up_step sd, se;
    tc__up_outcome out;
    tc__up_draw(&d, &sd, &out); /* no draw went to the phase */
    tc__up_draw(&e, &se, &out);
    assert_int_equal(sd.delay_ms, se.delay_ms);

    int moved = 0;
    for (int i = 0; i < 20; i++) {
        uint64_t before = d.phase_ms;
        tc__up_dealer_set(&d, &drawn);
        assert_true(d.phase_ms < 2000);
        moved += d.phase_ms != before;
    }
    assert_true(moved >= 15);
    tc__up_dealer_set(&d, &fixed);
    tc__up_stalls none = tc__up_dealer_stalls(&d, 123456789);
    assert_true(none.period == 0);
}

/* Stall of the reference: is tick x inside one? */
static int ref_stalled(const tc__up_stalls *s, uint64_t x)
{
    return s->period != 0 && (x % s->period + s->period - s->phase) % s->period < s->pause;
}

/* The due time straight from the definition, one tick at a time: the work advances by a tick
 * for every tick [x, x + 1) outside the stalls; work 0 waits for the first tick outside. */
static uint64_t ref_due(const tc__up_stalls *s, uint64_t t, uint64_t work)
{
    uint64_t x = t;
    if (work == 0) {
        while (ref_stalled(s, x))
            x++;
        return x;
    }
    for (uint64_t done = 0; done < work; x++)
        done += !ref_stalled(s, x);
    return x;
}

/* The stalls on the epoch-anchored clock: a stall starts where (clock + offset) % period is the
 * phase, whatever the offset. */
static void test_pause_stalls_on_the_epoch(void **state)
{
    (void)state;
    static const uint64_t offsets[] = {0, 1, 1999999, 2000000, 1733520000123456ULL};
    tc_upstream_profile p = parsed("pause:10:30:200:2000:667");
    tc__up_dealer d;
    tc__up_dealer_init(&d, &p, 1);
    for (size_t i = 0; i < sizeof(offsets) / sizeof(offsets[0]); i++) {
        tc__up_stalls s = tc__up_dealer_stalls(&d, offsets[i]);
        assert_true(s.period == 2000000 && s.pause == 200000 && s.phase < s.period);
        /* the clock value c where c + offset is 667 ms into a period */
        uint64_t c = 10 * s.period + (667000 + s.period - offsets[i] % s.period) % s.period;
        assert_true((c + offsets[i]) % s.period == 667000);
        assert_false(ref_stalled(&s, c - 1));
        assert_true(ref_stalled(&s, c));
        assert_true(ref_stalled(&s, c + 199999));
        assert_false(ref_stalled(&s, c + 200000));
        assert_true(tc__up_stalls_due(&s, c, 0) == c + 200000);
        assert_true(tc__up_stalls_due(&s, c - 5, 5) == c); /* done as the stall begins */
        assert_true(tc__up_stalls_due(&s, c - 5, 6) == c + 200001);
    }
}

/* Worked examples (ms): stalls [0, 200) + k x 2000 (pause 200, period 2000, phase 0). */
static void test_pause_due_examples(void **state)
{
    (void)state;
    const tc__up_stalls s = {.pause = 200, .period = 2000, .phase = 0};
    static const struct {
        uint64_t t, work, due;
    } ex[] = {
        {500, 20, 520},     /* no stall in between */
        {1990, 20, 2210},   /* 10 before the stall, 10 after it */
        {1980, 20, 2000},   /* done just as the stall begins */
        {1981, 20, 2201},   /* one unit after it */
        {2000, 20, 2220},   /* arrives as a stall begins: all of it after the stall */
        {2100, 20, 2220},   /* arrives during a stall: starts at its end */
        {2199, 0, 2200},    /* nothing to do, but nothing leaves during a stall */
        {2200, 0, 2200},    /* the stall is over */
        {2200, 1800, 4000}, /* one whole running stretch: done as the next stall begins */
        {2200, 1801, 4201}, /* one unit more */
        {300, 5300, 6000},  /* three stretches, 1700 + 1800 + 1800: done as the 4th stall begins */
        {300, 5400, 6300},  /* 100 more, after that stall */
        {4000, 3600, 8000}, /* from a stall's start: two stretches after it, to the 3rd stall */
        {1999, 1, 2000},    /* the last unit before the stall */
        {100, 0, 200},      /* first stall of the clock */
        {0, 1, 201},        /* t = 0 is a stall's start */
    };
    for (size_t i = 0; i < sizeof(ex) / sizeof(ex[0]); i++) {
        uint64_t got = tc__up_stalls_due(&s, ex[i].t, ex[i].work);
        if (got != ex[i].due)
            fail_msg("t %llu work %llu: due %llu, expected %llu", (unsigned long long)ex[i].t,
                     (unsigned long long)ex[i].work, (unsigned long long)got,
                     (unsigned long long)ex[i].due);
        assert_true(got == ref_due(&s, ex[i].t, ex[i].work));
    }
    /* no stalls: period 0, or a pause of 0 */
    const tc__up_stalls none = {0, 0, 0}, zero = {.pause = 0, .period = 10, .phase = 3};
    assert_true(tc__up_stalls_due(&none, 77, 5) == 82);
    assert_true(tc__up_stalls_due(&zero, 77, 5) == 82);
    assert_true(tc__up_stalls_due(&zero, 77, 0) == 77);
    /* saturates rather than wrapping */
    assert_true(tc__up_stalls_due(&s, UINT64_MAX - 5, 100) == UINT64_MAX);
    assert_true(tc__up_stalls_due(&none, UINT64_MAX - 5, 100) == UINT64_MAX);
    const tc__up_stalls slow = {.pause = 3599999, .period = 3600000, .phase = 0};
    assert_true(tc__up_stalls_due(&slow, 0, UINT64_MAX / 2) == UINT64_MAX);
}

/* Against the reference over random stalls, arrivals and work, with the edges of the period
 * (a stall's first and last tick, its end, the last tick before one) drawn often, and the
 * extremes of the parameters (no pause, one running tick per period, phase at either end). */
static void test_pause_due_reference(void **state)
{
    (void)state;
    tc__rng rng;
    tc__rng_seed(&rng, 2222);
    for (int round = 0; round < 20000; round++) {
        tc__up_stalls s;
        s.period = 1 + tc__rng_below(&rng, 60);
        switch (round % 5) {
        case 0:
            s.pause = 0;
            break;
        case 1:
            s.pause = s.period - 1; /* one running tick per period */
            break;
        default:
            s.pause = tc__rng_below(&rng, s.period);
        }
        s.phase = round % 7 == 0 ? s.period - 1 : tc__rng_below(&rng, s.period);
        uint64_t base = round % 3 == 0 ? (1ULL << 40) + tc__rng_below(&rng, 1000)
                                       : tc__rng_below(&rng, 4 * s.period);
        uint64_t t;
        switch (round % 4) { /* a stall's first tick, last tick, its end, or anywhere */
        case 0:
            t = base - base % s.period + s.phase;
            break;
        case 1:
            t = base - base % s.period + s.phase + (s.pause ? s.pause - 1 : 0);
            break;
        case 2:
            t = base - base % s.period + s.phase + s.pause;
            break;
        default:
            t = base;
        }
        uint64_t work = round % 6 == 0 ? (s.period - s.pause) * tc__rng_below(&rng, 4)
                                       : tc__rng_below(&rng, 5 * s.period);
        uint64_t want = ref_due(&s, t, work), got = tc__up_stalls_due(&s, t, work);
        if (got != want)
            fail_msg("pause %llu period %llu phase %llu, t %llu work %llu: due %llu, reference "
                     "%llu",
                     (unsigned long long)s.pause, (unsigned long long)s.period,
                     (unsigned long long)s.phase, (unsigned long long)t, (unsigned long long)work,
                     (unsigned long long)got, (unsigned long long)want);
    }
}

/* ---- scenario steps ------------------------------------------------------------------------- */

static int parse_text(const char *text, tc__up_step *s, char *msg, size_t msglen)
{
    json_error_t err;
    json_t *j = json_loads(text, JSON_DECODE_ANY, &err);
    assert_non_null(j);
    int rc = tc__up_step_parse(j, 3, s, msg, msglen);
    json_decref(j);
    return rc;
}

static void test_step_parse(void **state)
{
    (void)state;
    tc__up_step s;
    char msg[256];

    assert_int_equal(parse_text("{}", &s, msg, sizeof(msg)), 0);
    assert_int_equal(s.delay_ms, 0);
    assert_int_equal(s.act, TC__UP_RESPOND);
    assert_int_equal(s.status, 200);
    assert_null(s.body);

    assert_int_equal(parse_text("{\"delay_ms\":3600000,\"action\":\"hang\"}", &s, msg, sizeof(msg)),
                     0);
    assert_int_equal(s.delay_ms, 3600000);
    assert_int_equal(s.act, TC__UP_HANG);
    assert_int_equal(parse_text("{\"action\":\"reset\"}", &s, msg, sizeof(msg)), 0);
    assert_int_equal(s.act, TC__UP_RESET);

    assert_int_equal(parse_text("{\"status\":503,\"body\":\"a\\tb\"}", &s, msg, sizeof(msg)), 0);
    assert_int_equal(s.status, 503);
    assert_int_equal(s.body_len, 3);
    assert_memory_equal(s.body, "a\tb", 4);
    tc__up_step *arr = malloc(sizeof(*arr));
    assert_non_null(arr);
    arr[0] = s;
    tc__up_steps_free(arr, 1);

    static const struct {
        const char *text, *want;
    } bad[] = {
        {"[]", "step 3: expected an object"},
        {"{\"delay_ms\":-1}", "step 3: delay_ms must be"},
        {"{\"delay_ms\":3600001}", "step 3: delay_ms must be"},
        {"{\"delay_ms\":1.5}", "step 3: delay_ms must be"},
        {"{\"action\":\"explode\"}", "step 3: unknown action \"explode\""},
        {"{\"action\":7}", "step 3: unknown action \"(not a string)\""},
        {"{\"status\":199}", "step 3: status must be"},
        {"{\"status\":600}", "step 3: status must be"},
        {"{\"body\":1}", "step 3: body must be a string"},
        {"{\"body\":\"x\",\"bogus\":1}", "step 3: unknown field \"bogus\""},
        {"{\"a\\u0001\\\"\":1}", "step 3: unknown field \"a??\""},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        msg[0] = '\0';
        if (parse_text(bad[i].text, &s, msg, sizeof(msg)) != -1)
            fail_msg("accepted %s", bad[i].text);
        if (strncmp(msg, bad[i].want, strlen(bad[i].want)) != 0)
            fail_msg("%s: message \"%s\", wanted \"%s...\"", bad[i].text, msg, bad[i].want);
        assert_null(s.body); /* nothing left allocated (LSan checks the rest) */
    }
}

static void test_printable(void **state)
{
    (void)state;
    char out[8];
    tc__up_printable("ab\"\\\n\x80z", 7, out, sizeof(out));
    assert_string_equal(out, "ab????z");
    tc__up_printable("abcdefghij", 10, out, sizeof(out));
    assert_string_equal(out, "abcdefg");
}

/* ---- the object ----------------------------------------------------------------------------- */

static void on_closed(tc_upstream *u, void *data)
{
    (void)u;
    ++*(int *)data;
}

static void test_object_seed_and_close(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    tc_upstream_config cfg;
    tc_upstream_config_init(&cfg);
    cfg.profile = "uniform:1:2";
    cfg.seed = 424242;
    cfg.seed_set = 1;
    tc_upstream *u;
    assert_int_equal(tc_upstream_new(&u, &loop, &cfg), 0);
    assert_true(tc_upstream_port(u) > 0);
    assert_true(tc_upstream_seed(u) == 424242);
    int closed = 0, closed_again = 0;
    tc_upstream_close(u, on_closed, &closed);
    tc_upstream_close(u, on_closed, &closed_again); /* a no-op: its callback never runs */
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(closed, 1);
    assert_int_equal(closed_again, 0);

    cfg.profile = "nonsense";
    assert_int_equal(tc_upstream_new(&u, &loop, &cfg), TC_EINVAL);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_profile_parse_valid),
        cmocka_unit_test(test_profile_parse_invalid),
        cmocka_unit_test(test_exponea_deck),
        cmocka_unit_test(test_exponea_deck_shuffled),
        cmocka_unit_test(test_profile_switch_fresh_deck),
        cmocka_unit_test(test_seeded_sequences),
        cmocka_unit_test(test_same_seed_same_draws),
        cmocka_unit_test(test_fixed_draws_per_decision),
        cmocka_unit_test(test_pause_reasons),
        cmocka_unit_test(test_pause_work_draws),
        cmocka_unit_test(test_pause_phase),
        cmocka_unit_test(test_pause_stalls_on_the_epoch),
        cmocka_unit_test(test_pause_due_examples),
        cmocka_unit_test(test_pause_due_reference),
        cmocka_unit_test(test_step_parse),
        cmocka_unit_test(test_printable),
        cmocka_unit_test(test_object_seed_and_close),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
