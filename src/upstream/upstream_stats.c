/*
 * The simulator's observation endpoints: GET /stats (what arrived, when, and what each request
 * got) and GET /api/metadata (IDs answered at once, under a token bucket, each call recorded for
 * /stats). See upstream.c for the simulator itself.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "base/alloc.h"
#include "tailcut/url.h"
#include "upstream_internal.h"

/* ---- /stats -------------------------------------------------------------------------------- */

/* per_second: one object per second of the last TC_UPSTREAM_PER_SECOND (since the start or the
 * last /reset), oldest first: {"second":S,"1":N,"2":N,...,"none":N}, zero counts left out. */
static json_t *per_second_json(tc_upstream *u)
{
    json_t *list = json_array();
    uint64_t now = uv_hrtime();
    uint64_t last = now > u->ps_base_ns ? (now - u->ps_base_ns) / 1000000000u : 0;
    uint64_t first = last + 1 > TC_UPSTREAM_PER_SECOND ? last + 1 - TC_UPSTREAM_PER_SECOND : 0;
    int bad = list == NULL;
    for (uint64_t sec = first; !bad && sec <= last; sec++) {
        size_t slot = sec % TC_UPSTREAM_PER_SECOND;
        json_t *obj = json_pack("{s:I}", "second", (json_int_t)sec);
        bad |= obj == NULL;
        for (unsigned a = 0; !bad && u->ps_second[slot] == sec + 1 && a <= TC_UPSTREAM_MAX_ATTEMPT;
             a++) {
            char key[8];
            if (u->ps_counts[slot][a] == 0)
                continue;
            (void)snprintf(key, sizeof(key), "%u", a);
            bad |= json_object_set_new(obj, a == 0 ? "none" : key,
                                       json_integer((json_int_t)u->ps_counts[slot][a]));
        }
        bad |= json_array_append_new(list, obj);
    }
    if (bad) {
        json_decref(list);
        return NULL;
    }
    return list;
}

json_t *tc__up_stats_json(tc_upstream *u)
{
    json_t *obj = json_object();
    json_t *outcomes = json_object();
    json_t *arrivals = json_array();
    json_t *ids = json_array();
    int bad = obj == NULL || outcomes == NULL || arrivals == NULL || ids == NULL;

    for (int i = 0; !bad && i < TC__UP_OUT_COUNT; i++)
        bad |= json_object_set_new(outcomes, tc__up_outcome_names[i],
                                   json_integer((json_int_t)u->outcomes[i]));
    for (size_t i = 0; !bad && i < u->arr_len; i++) {
        uint64_t us = u->arrivals_us[(u->arr_head + i) % TC_UPSTREAM_MAX_ARRIVALS];
        bad |= json_array_append_new(arrivals, json_real((double)us / 1000.0));
    }
    for (size_t i = 0; !bad && i < u->calls_len; i++) {
        const tc__up_meta_call *call =
            &u->calls[(u->calls_head + i) % TC_UPSTREAM_MAX_METADATA_CALLS];
        json_t *list = json_array();
        const char *p = call->ids;
        bad |= list == NULL;
        for (uint32_t k = 0; !bad && k < call->n; k++) {
            bad |= json_array_append_new(list, json_string(p));
            p += strlen(p) + 1;
        }
        bad |= json_array_append_new(ids, list);
    }
    if (!bad) {
        bad |=
            json_object_set_new(obj, "work_requests", json_integer((json_int_t)u->work_requests));
        bad |= json_object_set_new(obj, "in_flight", json_integer((json_int_t)u->in_flight));
        bad |=
            json_object_set_new(obj, "client_aborts", json_integer((json_int_t)u->client_aborts));
        bad |=
            json_object_set_new(obj, "metadata_calls", json_integer((json_int_t)u->metadata_calls));
        bad |= json_object_set_new(obj, "metadata_rejected",
                                   json_integer((json_int_t)u->metadata_rejected));
        bad |= json_object_set_new(obj, "metadata_calls_forgotten",
                                   json_integer((json_int_t)u->calls_forgotten));
        bad |= json_object_set_new(obj, "arrivals_forgotten",
                                   json_integer((json_int_t)u->arrivals_forgotten));
        bad |= json_object_set_new(obj, "scenario_pending", json_integer((json_int_t)u->q_len));
        bad |= json_object_set_new(obj, "profile", json_string(u->profile_text));
        if (u->dealer.profile.kind == TC_PROFILE_PAUSE) /* the phase in force, given or drawn */
            bad |= json_object_set_new(obj, "pause_phase_ms",
                                       json_integer((json_int_t)u->dealer.phase_ms));
        /* As a string: JSON numbers lose precision above 2^53 in most readers. */
        char seed[24];
        (void)snprintf(seed, sizeof(seed), "%llu", (unsigned long long)u->seed); /* 20 digits fit */
        bad |= json_object_set_new(obj, "seed", json_string(seed));
        bad |= json_object_set(obj, "outcomes", outcomes);
        bad |= json_object_set(obj, "metadata_ids", ids);
        bad |= json_object_set(obj, "arrivals_ms", arrivals);
        bad |= json_object_set_new(obj, "per_second", per_second_json(u));
    }
    json_decref(outcomes);
    json_decref(arrivals);
    json_decref(ids);
    if (bad) {
        json_decref(obj);
        return NULL;
    }
    return obj;
}

/* ---- /api/metadata ------------------------------------------------------------------------- */

/* Refills the bucket and takes one token. Returns 1 if the call may go ahead. */
static int metadata_admit(tc_upstream *u)
{
    if (u->metadata_rate == 0)
        return 1;
    uint64_t now = uv_hrtime();
    double rate = (double)u->metadata_rate;
    u->tokens += (double)(now - u->tokens_ns) / 1e9 * rate;
    if (u->tokens > rate)
        u->tokens = rate;
    u->tokens_ns = now;
    if (u->tokens < 1.0)
        return 0;
    u->tokens -= 1.0;
    return 1;
}

/* Keeps ids (takes ownership) in the bounded call history, forgetting the oldest calls first. */
static void record_call(tc_upstream *u, char *ids, size_t bytes, uint32_t n)
{
    if (bytes > (size_t)TC_UPSTREAM_MAX_METADATA_BYTES) {
        tc__free(ids);
        u->calls_forgotten++;
        return;
    }
    while (u->calls_len == TC_UPSTREAM_MAX_METADATA_CALLS ||
           u->calls_bytes + bytes > (size_t)TC_UPSTREAM_MAX_METADATA_BYTES) {
        tc__up_meta_call *old = &u->calls[u->calls_head];
        u->calls_bytes -= old->bytes;
        tc__free(old->ids);
        u->calls_head = (u->calls_head + 1) % TC_UPSTREAM_MAX_METADATA_CALLS;
        u->calls_len--;
        u->calls_forgotten++;
    }
    tc__up_meta_call *call =
        &u->calls[(u->calls_head + u->calls_len) % TC_UPSTREAM_MAX_METADATA_CALLS];
    call->ids = ids;
    call->bytes = bytes;
    call->n = n;
    u->calls_len++;
    u->calls_bytes += bytes;
}

/* GET /api/metadata?id=...: decodes and validates every id (400 naming the first bad one), then
 * applies the rate limit (429), records the IDs and answers an object for each ID not starting
 * with "missing". Calls refused with 400 or 429 are not recorded. */
void tc__up_handle_metadata(tc_upstream *u, tc_request *r)
{
    tc_str q = tc_request_query(r);
    tc_query_iter it;
    const char *name, *value;
    size_t name_len, value_len;
    char msg[TC__UP_MESSAGE_MAX];
    /* Decoded IDs, NUL-separated: decoding never lengthens, so the query's size is enough. */
    char *ids = tc__malloc(q.len + 1);
    size_t used = 0;
    uint32_t n = 0;

    if (ids == NULL) {
        tc__up_send_error(r, 503, "overloaded", "out of memory", NULL, 0);
        return;
    }
    tc_query_iter_init(&it, q.base, q.len);
    while (tc_query_next(&it, &name, &name_len, &value, &value_len)) {
        char pname[TC__UP_PARAM_NAME_MAX + 1];
        long len = tc_url_decode(name, name_len, pname, sizeof(pname), 1);
        if (len == TC_EINVAL) {
            tc__free(ids);
            tc__up_send_error(r, 400, "bad_request",
                              "malformed percent-encoding in a parameter name", NULL, 0);
            return;
        }
        if (len < 0 || strcmp(pname, "id") != 0)
            continue; /* other parameters are ignored */
        len = tc_url_decode(value, value_len, ids + used, q.len + 1 - used, 1);
        if (len < 0 || len > TC_ID_MAX || !tc_id_valid(ids + used, (size_t)len)) {
            char shown[TC__UP_PRINTABLE_MAX + 1];
            tc__up_printable(value, value_len, shown, sizeof(shown));
            (void)snprintf(msg, sizeof(msg),
                           "invalid id #%u \"%s\": IDs are 1 to 128 characters of [A-Za-z0-9_.-]",
                           (unsigned)n + 1, shown);
            tc__free(ids);
            tc__up_send_error(r, 400, "bad_request", msg, NULL, 0);
            return;
        }
        used += (size_t)len + 1;
        n++;
    }
    if (n == 0) {
        tc__free(ids);
        tc__up_send_error(r, 400, "bad_request",
                          "missing id parameter (GET /api/metadata?id=A&id=B)", NULL, 0);
        return;
    }
    if (!metadata_admit(u)) {
        const tc_server_header h = {"Retry-After", "1"};
        tc__free(ids);
        u->metadata_rejected++;
        (void)snprintf(msg, sizeof(msg), "over the rate limit of %llu calls per second",
                       (unsigned long long)u->metadata_rate);
        tc__up_send_error(r, 429, "rate_limited", msg, &h, 1);
        return;
    }

    json_t *results = json_object();
    int bad = results == NULL;
    const char *p = ids;
    for (uint32_t k = 0; !bad && k < n; k++, p += strlen(p) + 1) {
        if (strncmp(p, "missing", 7) == 0)
            continue;
        char item[TC_ID_MAX + 8];
        (void)snprintf(item, sizeof(item), "item %s", p); /* fits: ids are at most TC_ID_MAX */
        bad |= json_object_set_new(results, p, json_pack("{s:s,s:s}", "id", p, "name", item));
    }
    if (bad) {
        json_decref(results);
        tc__free(ids);
        tc__up_send_error(r, 503, "overloaded", "out of memory", NULL, 0);
        return;
    }
    u->metadata_calls++;
    record_call(u, ids, used, n);
    tc__up_send_json(r, 200, json_pack("{s:o}", "results", results));
}
