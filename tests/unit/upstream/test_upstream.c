/*
 * Unit tests for the simulator's decisions (src/upstream/upstream_plan.c) and its object
 * (src/upstream/upstream.c):
 * - --profile parsing: every kind, its bounds and the reasons given for bad values;
 * - exponea's deck: every run of 11 draws holds exactly one hang, one invalid JSON and one 500,
 *   whatever the seed, and a profile switch starts a fresh deck;
 * - seeded reproducibility: fixed sequences for fixed seeds (the draws `--seed` gave before the
 *   generator moved to src/base/rng.c), the same seed twice, different seeds;
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
        cmocka_unit_test(test_step_parse),
        cmocka_unit_test(test_printable),
        cmocka_unit_test(test_object_seed_and_close),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
