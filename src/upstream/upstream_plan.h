/*
 * The simulator's decisions, apart from its HTTP side (src/upstream/upstream.c): every /api/work
 * request gets one *step* -- wait delay_ms, then respond (status, body), hang or reset -- either
 * the next queued scenario step or one draw from the profile.
 *
 * Determinism: a dealer owns a private tc__rng seeded with --seed; each decision consumes a fixed
 * number of draws per profile kind, so the same seed and arrival order give the same steps.
 * exponea deals its outcomes from a shuffled deck of TC__UP_DECK (8 good, 1 hang, 1 invalid
 * JSON, 1 status 500), so every run of TC__UP_DECK draws holds exactly one of each failure.
 *
 * Stalls (the pause profile): the whole simulator stops at a regular period, as a process does
 * in a garbage-collection pause. tc__up_stalls_due() is the one piece of arithmetic behind it:
 * when a piece of work is done if its clock runs only outside the stalls.
 */
#ifndef TAILCUT_UPSTREAM_PLAN_H
#define TAILCUT_UPSTREAM_PLAN_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "base/rng.h"
#include "tailcut/upstream.h"

/* Cards in exponea's deck. */
#define TC__UP_DECK 11
/* Most bytes of client input quoted in an error message. */
#define TC__UP_PRINTABLE_MAX 40

typedef enum tc__up_action { TC__UP_RESPOND, TC__UP_HANG, TC__UP_RESET } tc__up_action;

/* What the decision was, for X-Tailcut-Outcome and the /stats counters. */
typedef enum tc__up_outcome {
    TC__UP_OUT_OK,
    TC__UP_OUT_INVALID_JSON,
    TC__UP_OUT_ERROR,
    TC__UP_OUT_HANG,
    TC__UP_OUT_SCENARIO,
    TC__UP_OUT_COUNT
} tc__up_outcome;

/* Their names, as in X-Tailcut-Outcome and /stats. */
extern const char *const tc__up_outcome_names[TC__UP_OUT_COUNT];

/* One decision. body == NULL means the default body for the status and outcome. */
typedef struct tc__up_step {
    uint64_t delay_ms;
    tc__up_action act;
    int status;
    char *body;
    size_t body_len;
} tc__up_step;

/* A profile with its generator and exponea's deck. */
typedef struct tc__up_dealer {
    tc_upstream_profile profile;
    tc__rng rng;
    uint8_t deck[TC__UP_DECK];
    unsigned deck_pos;
    uint64_t phase_ms; /* pause: PHASE_MS, given or drawn when the profile was set */
} tc__up_dealer;

/* Starts dealing p, the generator seeded with seed. A pause profile without PHASE_MS draws its
 * phase now (one draw, uniform in 0..PERIOD_MS - 1). */
void tc__up_dealer_init(tc__up_dealer *d, const tc_upstream_profile *prof, uint64_t seed);

/* Switches to p (POST /profile); the generator goes on, exponea starts a fresh deck, a pause
 * profile without PHASE_MS draws its phase as tc__up_dealer_init() does. */
void tc__up_dealer_set(tc__up_dealer *d, const tc_upstream_profile *prof);

/* Stalls on one clock, in any unit (the same for every field and argument): the intervals
 * [k x period + phase, k x period + phase + pause) for every integer k, start included, end not.
 * period 0 means no stalls; otherwise pause < period and phase < period. */
typedef struct tc__up_stalls {
    uint64_t pause, period, phase;
} tc__up_stalls;

/* The stalls of the dealer's profile in microseconds on a clock that reads epoch_offset_us less
 * than the Unix epoch's (the periods count from the epoch, so simulators on machines with the same
 * time keep their phases apart exactly); period 0 for every profile but pause. */
tc__up_stalls tc__up_dealer_stalls(const tc__up_dealer *d, uint64_t epoch_offset_us);

/* When work units of non-stalled time have passed since t: the time d >= t at which the clock,
 * counting only outside the stalls, has run work units since t. Work that ends just as a stall
 * begins is done at the stall's start; work 0 is done at t, or at the end of the stall t falls
 * in (a request arriving during a stall starts when it ends). Never fails: every argument is
 * valid (the result saturates at UINT64_MAX). */
uint64_t tc__up_stalls_due(const tc__up_stalls *s, uint64_t t, uint64_t work);

/* One profile decision into *s (no body) and *out. Consumes a fixed number of draws per kind. */
void tc__up_draw(tc__up_dealer *d, tc__up_step *st, tc__up_outcome *out);

/* Validates one scenario step object (the index-th, for messages) into *s, which then owns its
 * body. Returns 0, or -1 with a message in msg[0..msglen) and nothing left allocated. */
int tc__up_step_parse(json_t *obj, size_t index, tc__up_step *st, char *msg, size_t msglen);

/* Frees n steps' bodies and the array. */
void tc__up_steps_free(tc__up_step *steps, size_t n);

/* Copies up to dst_size - 1 bytes of src for an error message, with anything but printable ASCII
 * (and '"' and '\\') replaced by '?', so the message is safe whatever the client sent. */
void tc__up_printable(const char *src, size_t len, char *dst, size_t dst_size);

#endif /* TAILCUT_UPSTREAM_PLAN_H */
