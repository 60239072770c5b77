/*
 * What each /api/work request of the simulator gets (see upstream_plan.h): the --profile parser,
 * the draws from a profile with exponea's deck, and the scenario step parser. Pure code: no I/O,
 * no loop, no clock, so tests/unit/upstream/test_upstream.c drives it directly.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "upstream_plan.h"

/* Longest --profile string accepted. */
#define PROFILE_MAX 128
/* exponea's parameters. */
#define EXPONEA_MIN_MS 100
#define EXPONEA_MAX_MS 600
/* Largest lognormal SIGMA (keeps exp() finite and the draws meaningful). */
#define SIGMA_MAX 10.0

const char *const tc__up_outcome_names[TC__UP_OUT_COUNT] = {"ok", "invalid_json", "error", "hang",
                                                            "scenario"};

void tc__up_printable(const char *src, size_t len, char *dst, size_t dst_size)
{
    size_t n = len < dst_size - 1 ? len : dst_size - 1;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)src[i];
        dst[i] = (ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\') ? (char)ch : '?';
    }
    dst[n] = '\0';
}

/* A number: ASCII digits, then optionally '.' and more digits; nothing else. */
static int parse_decimal(const char *s, int allow_fraction, double *out)
{
    const char *p = s;
    size_t digits = 0;
    while (*p >= '0' && *p <= '9') {
        p++;
        digits++;
    }
    if (digits == 0)
        return -1;
    if (*p == '.') {
        if (!allow_fraction)
            return -1;
        p++;
        size_t frac = 0;
        while (*p >= '0' && *p <= '9') {
            p++;
            frac++;
        }
        if (frac == 0)
            return -1;
    }
    if (*p != '\0' || digits > 15)
        return -1;
    *out = strtod(s, NULL);
    return 0;
}

static int parse_ms(const char *s, int allow_fraction, double *out)
{
    return parse_decimal(s, allow_fraction, out) == 0 && *out <= TC_UPSTREAM_MAX_DELAY_MS ? 0 : -1;
}

#define PROFILE_FAIL(msg)                                                                          \
    do {                                                                                           \
        if (why)                                                                                   \
            *why = (msg);                                                                          \
        return TC_EINVAL;                                                                          \
    } while (0)

int tc_upstream_profile_parse(const char *s, tc_upstream_profile *out, const char **why)
{
    char buf[PROFILE_MAX + 1];
    char *field[6];
    size_t nfields = 0;
    tc_upstream_profile p = {0};

    if (s == NULL || strlen(s) > PROFILE_MAX)
        PROFILE_FAIL("profile missing or too long");
    strcpy(buf, s);
    field[nfields++] = buf;
    for (char *ch = buf; *ch; ch++) {
        if (*ch == ':') {
            if (nfields == 6)
                PROFILE_FAIL("too many ':'-separated parameters");
            *ch = '\0';
            field[nfields++] = ch + 1;
        }
    }

    if (strcmp(field[0], "exponea") == 0) {
        if (nfields != 1)
            PROFILE_FAIL("exponea takes no parameters");
        p.kind = TC_PROFILE_EXPONEA;
    } else if (strcmp(field[0], "fixed") == 0) {
        if (nfields != 2)
            PROFILE_FAIL("expected fixed:MS");
        if (parse_ms(field[1], 0, &p.a) != 0)
            PROFILE_FAIL("fixed:MS needs MS a whole number of milliseconds up to 3600000");
        p.kind = TC_PROFILE_FIXED;
    } else if (strcmp(field[0], "uniform") == 0) {
        if (nfields != 3)
            PROFILE_FAIL("expected uniform:LO:HI");
        if (parse_ms(field[1], 0, &p.a) != 0 || parse_ms(field[2], 0, &p.b) != 0)
            PROFILE_FAIL("uniform:LO:HI needs whole numbers of milliseconds up to 3600000");
        if (p.a > p.b)
            PROFILE_FAIL("uniform:LO:HI needs LO <= HI");
        p.kind = TC_PROFILE_UNIFORM;
    } else if (strcmp(field[0], "lognormal") == 0) {
        if (nfields != 3)
            PROFILE_FAIL("expected lognormal:MEDIAN_MS:SIGMA");
        if (parse_ms(field[1], 1, &p.a) != 0)
            PROFILE_FAIL("lognormal:MEDIAN_MS:SIGMA needs MEDIAN_MS a number of milliseconds up "
                         "to 3600000");
        if (parse_decimal(field[2], 1, &p.b) != 0 || p.b > SIGMA_MAX)
            PROFILE_FAIL("lognormal:MEDIAN_MS:SIGMA needs SIGMA a number from 0 to 10");
        p.kind = TC_PROFILE_LOGNORMAL;
    } else if (strcmp(field[0], "straggler") == 0) {
        if (nfields != 4)
            PROFILE_FAIL("expected straggler:FAST_MS:SLOW_MS:P");
        if (parse_ms(field[1], 0, &p.a) != 0 || parse_ms(field[2], 0, &p.b) != 0)
            PROFILE_FAIL("straggler:FAST_MS:SLOW_MS:P needs whole numbers of milliseconds up to "
                         "3600000");
        if (parse_decimal(field[3], 1, &p.c) != 0 || p.c > 1.0)
            PROFILE_FAIL("straggler:FAST_MS:SLOW_MS:P needs P a number from 0 to 1");
        p.kind = TC_PROFILE_STRAGGLER;
    } else if (strcmp(field[0], "mix") == 0) {
        if (nfields != 6)
            PROFILE_FAIL("expected mix:LO:HI:SLOW_LO:SLOW_HI:P");
        if (parse_ms(field[1], 0, &p.a) != 0 || parse_ms(field[2], 0, &p.b) != 0 ||
            parse_ms(field[3], 0, &p.d) != 0 || parse_ms(field[4], 0, &p.e) != 0)
            PROFILE_FAIL("mix:LO:HI:SLOW_LO:SLOW_HI:P needs whole numbers of milliseconds up to "
                         "3600000");
        if (p.a > p.b || p.d > p.e)
            PROFILE_FAIL("mix:LO:HI:SLOW_LO:SLOW_HI:P needs LO <= HI and SLOW_LO <= SLOW_HI");
        if (parse_decimal(field[5], 1, &p.c) != 0 || p.c > 1.0)
            PROFILE_FAIL("mix:LO:HI:SLOW_LO:SLOW_HI:P needs P a number from 0 to 1");
        p.kind = TC_PROFILE_MIX;
    } else if (strcmp(field[0], "pause") == 0) {
        if (nfields != 5 && nfields != 6)
            PROFILE_FAIL("expected pause:LO:HI:PAUSE_MS:PERIOD_MS[:PHASE_MS]");
        p.c = -1; /* no PHASE_MS: the dealer draws one */
        if (parse_ms(field[1], 0, &p.a) != 0 || parse_ms(field[2], 0, &p.b) != 0 ||
            parse_ms(field[3], 0, &p.d) != 0 || parse_ms(field[4], 0, &p.e) != 0 ||
            (nfields == 6 && parse_ms(field[5], 0, &p.c) != 0))
            PROFILE_FAIL("pause:LO:HI:PAUSE_MS:PERIOD_MS[:PHASE_MS] needs whole numbers of "
                         "milliseconds up to 3600000");
        if (p.a > p.b)
            PROFILE_FAIL("pause:LO:HI:PAUSE_MS:PERIOD_MS[:PHASE_MS] needs LO <= HI");
        if (p.d >= p.e || p.c >= p.e)
            PROFILE_FAIL("pause:LO:HI:PAUSE_MS:PERIOD_MS[:PHASE_MS] needs PAUSE_MS and PHASE_MS "
                         "below PERIOD_MS");
        p.kind = TC_PROFILE_PAUSE;
    } else {
        PROFILE_FAIL("unknown profile (expected exponea, fixed:MS, uniform:LO:HI, "
                     "lognormal:MEDIAN_MS:SIGMA, straggler:FAST_MS:SLOW_MS:P, "
                     "mix:LO:HI:SLOW_LO:SLOW_HI:P or pause:LO:HI:PAUSE_MS:PERIOD_MS[:PHASE_MS])");
    }
    if (out)
        *out = p;
    return 0;
}

static void deck_shuffle(tc__up_dealer *d)
{
    /* 8 good, then one of each failure; Fisher-Yates with exactly 10 draws. */
    for (unsigned i = 0; i < TC__UP_DECK; i++)
        d->deck[i] = TC__UP_OUT_OK;
    d->deck[8] = TC__UP_OUT_HANG;
    d->deck[9] = TC__UP_OUT_INVALID_JSON;
    d->deck[10] = TC__UP_OUT_ERROR;
    for (unsigned i = TC__UP_DECK - 1; i > 0; i--) {
        unsigned j = (unsigned)tc__rng_below(&d->rng, (uint64_t)i + 1);
        uint8_t t = d->deck[i];
        d->deck[i] = d->deck[j];
        d->deck[j] = t;
    }
}

/* A pause profile's phase: the one given, or one draw. */
static void take_phase(tc__up_dealer *d)
{
    const tc_upstream_profile *prof = &d->profile;
    if (prof->kind != TC_PROFILE_PAUSE)
        d->phase_ms = 0;
    else if (prof->c >= 0)
        d->phase_ms = (uint64_t)prof->c;
    else
        d->phase_ms = tc__rng_below(&d->rng, (uint64_t)prof->e);
}

void tc__up_dealer_init(tc__up_dealer *d, const tc_upstream_profile *prof, uint64_t seed)
{
    memset(d, 0, sizeof(*d));
    d->profile = *prof;
    tc__rng_seed(&d->rng, seed);
    take_phase(d);
}

void tc__up_dealer_set(tc__up_dealer *d, const tc_upstream_profile *prof)
{
    d->profile = *prof;
    d->deck_pos = 0;
    take_phase(d);
}

void tc__up_draw(tc__up_dealer *d, tc__up_step *st, tc__up_outcome *out)
{
    const tc_upstream_profile *prof = &d->profile;
    double ms = 0;

    memset(st, 0, sizeof(*st));
    st->act = TC__UP_RESPOND;
    st->status = 200;
    *out = TC__UP_OUT_OK;
    switch (prof->kind) {
    case TC_PROFILE_EXPONEA:
        if (d->deck_pos == 0)
            deck_shuffle(d);
        *out = (tc__up_outcome)d->deck[d->deck_pos];
        d->deck_pos = (d->deck_pos + 1) % TC__UP_DECK;
        ms = (double)(EXPONEA_MIN_MS + tc__rng_below(&d->rng, EXPONEA_MAX_MS - EXPONEA_MIN_MS + 1));
        if (*out == TC__UP_OUT_HANG)
            st->act = TC__UP_HANG;
        else if (*out == TC__UP_OUT_ERROR)
            st->status = 500;
        break;
    case TC_PROFILE_FIXED:
        ms = prof->a;
        break;
    case TC_PROFILE_UNIFORM:
    case TC_PROFILE_PAUSE: /* the work; tc__up_stalls_due() says when it is done */
        ms = prof->a + (double)tc__rng_below(&d->rng, (uint64_t)(prof->b - prof->a) + 1);
        break;
    case TC_PROFILE_LOGNORMAL: {
        double u1 = 1.0 - tc__rng_unit(&d->rng); /* (0, 1]: log() stays finite */
        double u2 = tc__rng_unit(&d->rng);
        double z = sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
        ms = prof->a * exp(prof->b * z);
        break;
    }
    case TC_PROFILE_STRAGGLER:
        ms = tc__rng_unit(&d->rng) < prof->c ? prof->b : prof->a;
        break;
    case TC_PROFILE_MIX: {
        /* Two draws whichever band is picked, so every decision consumes the same number. */
        int slow = tc__rng_unit(&d->rng) < prof->c;
        uint64_t r = tc__rng_next(&d->rng);
        double lo = slow ? prof->d : prof->a, hi = slow ? prof->e : prof->b;
        ms = lo + (double)(r % ((uint64_t)(hi - lo) + 1));
        break;
    }
    }
    if (!(ms >= 0))
        ms = 0;
    if (ms > TC_UPSTREAM_MAX_DELAY_MS)
        ms = TC_UPSTREAM_MAX_DELAY_MS;
    st->delay_ms = (uint64_t)llround(ms);
}

/* ---- stalls -------------------------------------------------------------------------------- */

static uint64_t add_sat(uint64_t a, uint64_t b)
{
    return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

static uint64_t mul_sat(uint64_t a, uint64_t b)
{
    return b != 0 && a > UINT64_MAX / b ? UINT64_MAX : a * b;
}

tc__up_stalls tc__up_dealer_stalls(const tc__up_dealer *d, uint64_t epoch_offset_us)
{
    tc__up_stalls s = {0, 0, 0};
    if (d->profile.kind != TC_PROFILE_PAUSE)
        return s;
    s.period = (uint64_t)d->profile.e * 1000;
    s.pause = (uint64_t)d->profile.d * 1000;
    /* A stall starts where (clock + offset) % period == phase, i.e. clock % period == this. */
    s.phase = (d->phase_ms * 1000 + s.period - epoch_offset_us % s.period) % s.period;
    return s;
}

uint64_t tc__up_stalls_due(const tc__up_stalls *s, uint64_t t, uint64_t work)
{
    if (s->period == 0 || s->pause == 0)
        return add_sat(t, work);
    uint64_t period = s->period, pause = s->pause, run = period - pause;
    /* Where t is in its period, counted from the start of the period's stall. */
    uint64_t pos = (t % period + period - s->phase) % period;
    if (pos < pause) { /* in a stall: the work starts as it ends */
        t = add_sat(t, pause - pos);
        pos = pause;
    }
    uint64_t left = period - pos; /* running time before the next stall */
    if (work <= left)
        return add_sat(t, work);
    /* Past the next stall, then whole running stretches of run units, each followed by a stall;
     * work that fills its last stretch exactly is done as the stall after it begins. */
    work -= left;
    t = add_sat(t, left + pause);
    uint64_t n = work / run, rem = work % run;
    if (rem == 0)
        return add_sat(t, add_sat(mul_sat(n - 1, period), run));
    return add_sat(t, add_sat(mul_sat(n, period), rem));
}

/* ---- scenario steps ------------------------------------------------------------------------ */

void tc__up_steps_free(tc__up_step *steps, size_t n)
{
    for (size_t i = 0; i < n; i++)
        tc__free(steps[i].body);
    tc__free(steps);
}

int tc__up_step_parse(json_t *obj, size_t index, tc__up_step *st, char *msg, size_t msglen)
{
    const char *key;
    json_t *v;

    memset(st, 0, sizeof(*st));
    st->act = TC__UP_RESPOND;
    st->status = 200;
    if (!json_is_object(obj)) {
        (void)snprintf(msg, msglen, "step %zu: expected an object", index);
        return -1;
    }
    json_object_foreach(obj, key, v)
    {
        if (strcmp(key, "delay_ms") == 0) {
            if (!json_is_integer(v) || json_integer_value(v) < 0 ||
                json_integer_value(v) > TC_UPSTREAM_MAX_DELAY_MS) {
                (void)snprintf(
                    msg, msglen,
                    "step %zu: delay_ms must be a whole number of milliseconds from 0 to %d", index,
                    TC_UPSTREAM_MAX_DELAY_MS);
                goto fail;
            }
            st->delay_ms = (uint64_t)json_integer_value(v);
        } else if (strcmp(key, "action") == 0) {
            const char *action = json_string_value(v);
            if (action != NULL && strcmp(action, "respond") == 0) {
                st->act = TC__UP_RESPOND;
            } else if (action != NULL && strcmp(action, "hang") == 0) {
                st->act = TC__UP_HANG;
            } else if (action != NULL && strcmp(action, "reset") == 0) {
                st->act = TC__UP_RESET;
            } else {
                char shown[TC__UP_PRINTABLE_MAX + 1];
                tc__up_printable(action ? action : "(not a string)",
                                 strlen(action ? action : "(not a string)"), shown, sizeof(shown));
                (void)snprintf(msg, msglen,
                               "step %zu: unknown action \"%s\" (expected \"respond\", \"hang\" or "
                               "\"reset\")",
                               index, shown);
                goto fail;
            }
        } else if (strcmp(key, "status") == 0) {
            /* 1xx is informational, never a final response: such a step is refused (400). */
            if (!json_is_integer(v) || json_integer_value(v) < 200 || json_integer_value(v) > 599) {
                (void)snprintf(msg, msglen,
                               "step %zu: status must be a whole number from 200 to 599", index);
                goto fail;
            }
            st->status = (int)json_integer_value(v);
        } else if (strcmp(key, "body") == 0) {
            if (!json_is_string(v)) {
                (void)snprintf(msg, msglen, "step %zu: body must be a string", index);
                goto fail;
            }
            size_t n = json_string_length(v);
            st->body = tc__malloc(n + 1); /* once: duplicate keys are rejected by the parser */
            if (st->body == NULL) {
                (void)snprintf(msg, msglen, "out of memory");
                goto fail;
            }
            memcpy(st->body, json_string_value(v), n);
            st->body[n] = '\0';
            st->body_len = n;
        } else {
            char shown[TC__UP_PRINTABLE_MAX + 1];
            tc__up_printable(key, strlen(key), shown, sizeof(shown));
            (void)snprintf(msg, msglen, "step %zu: unknown field \"%s\"", index, shown);
            goto fail;
        }
    }
    return 0;
fail:
    tc__free(st->body);
    st->body = NULL;
    return -1;
}
