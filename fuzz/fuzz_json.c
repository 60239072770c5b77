/*
 * libFuzzer target: the handling of upstream response bodies: the strict validator
 * (tc_json_valid), the raw readers (tc_json_iter, tc_json_object_get, tc_json_key_equal) and
 * the hedge's default judge (tc_hedge_judge_json) on a synthetic tc_response.
 *
 * Input layout: the first 2 bytes choose the status (200 for three values in four, else
 * 100..599), the rest is the body. The one idea: jansson is an independent oracle. Wherever
 * both are defined they must agree on validity; the documented differences (json.h, and
 * tests/unit/core/test_json_random.c's jansson_only_rejection) are the only ones allowed: jansson
 * rejects number overflow, lone surrogate escapes and \u0000 in keys, which RFC 8259 allows; it
 * accepts a raw NUL after a complete value, and nesting deeper than TC_JSON_MAX_DEPTH. Every byte
 * range the readers return must lie inside the buffer and, for a valid document, parse (with
 * jansson) to the same value jansson finds under that key. All buffers are exact-size heap copies,
 * so a read one byte past the end is an ASan report.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "loopback.h" /* FZ_CHECK */
#include "tailcut/client.h"
#include "tailcut/hedge.h"
#include "tailcut/json.h"

#define JFLAGS (JSON_DECODE_ANY | JSON_ALLOW_NUL)

static char *copy(const char *p, size_t n)
{
    char *c = malloc(n ? n : 1);
    FZ_CHECK(c != NULL, "out of memory");
    if (n > 0)
        memcpy(c, p, n);
    return c;
}

static int valid_copy(const char *p, size_t n)
{
    char *c = copy(p, n);
    int v = tc_json_valid(c, n);
    free(c);
    return v;
}

static int jansson_only_rejection(const json_error_t *e)
{
    return json_error_code(e) == json_error_numeric_overflow ||
           strstr(e->text, "invalid Unicode '\\u") != NULL ||
           strstr(e->text, "NUL byte in object key") != NULL;
}

/* Nesting depth of a jansson value: `[[1]]` is 2, a scalar 0. */
static size_t depth(json_t *v)
{
    size_t d = 0;
    if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++) {
            size_t k = depth(json_array_get(v, i));
            d = k > d ? k : d;
        }
        return d + 1;
    }
    if (json_is_object(v)) {
        const char *key;
        json_t *m;
        json_object_foreach(v, key, m)
        {
            size_t k = depth(m);
            d = k > d ? k : d;
        }
        return d + 1;
    }
    return 0;
}

static void check_inside(const char *buf, size_t len, const char *p, size_t n, const char *what)
{
    FZ_CHECK(p >= buf && n <= len && p - buf <= (ptrdiff_t)(len - n), "%s range outside the buffer",
             what);
}

/* The readers on a buffer that may be anything: they stay inside it and return documented
 * codes. */
static void readers_anywhere(const char *buf, size_t len)
{
    const char *v;
    size_t vl;
    int r = tc_json_object_get(buf, len, "a", 1, &v, &vl);
    FZ_CHECK(r == 0 || r == TC_EMISSING || r == TC_EINVAL || r == TC_EPROTO, "object_get: %d", r);
    if (r == 0)
        check_inside(buf, len, v, vl, "object_get value");
    tc_json_iter it;
    if (tc_json_iter_init(&it, buf, len) != 0)
        return;
    tc_json_member m;
    size_t steps = 0;
    while ((r = tc_json_iter_next(&it, &m)) == 1) {
        check_inside(buf, len, m.key, m.key_len, "member key");
        check_inside(buf, len, m.value, m.value_len, "member value");
        FZ_CHECK(++steps <= len, "iterator does not advance");
    }
    FZ_CHECK(r == 0 || r == TC_EPROTO, "iter_next: %d", r);
}

/* A valid top-level object: members, keys and values checked against jansson. */
static void readers_on_valid(const char *buf, size_t len, json_t *j)
{
    tc_json_iter it;
    int r = tc_json_iter_init(&it, buf, len);
    const char *v;
    size_t vl;
    if (j != NULL && !json_is_object(j)) {
        FZ_CHECK(r == TC_EINVAL, "iter_init on a non-object: %d", r);
        FZ_CHECK(tc_json_object_get(buf, len, "a", 1, &v, &vl) == TC_EINVAL,
                 "object_get on a non-object");
        return;
    }
    if (r != 0)
        return; /* not an object (jansson had no opinion) */
    tc_json_member m;
    size_t members = 0;
    while ((r = tc_json_iter_next(&it, &m)) == 1) {
        members++;
        check_inside(buf, len, m.key, m.key_len, "member key");
        check_inside(buf, len, m.value, m.value_len, "member value");
        FZ_CHECK(m.value_len > 0 && valid_copy(m.value, m.value_len),
                 "member value is not valid JSON");
        /* The key's raw bytes inside quotes form a valid JSON string. */
        char *q = malloc(m.key_len + 2);
        FZ_CHECK(q != NULL, "out of memory");
        q[0] = '"';
        memcpy(q + 1, m.key, m.key_len);
        q[m.key_len + 1] = '"';
        FZ_CHECK(tc_json_valid(q, m.key_len + 2), "member key is not a JSON string");
        free(q);
    }
    FZ_CHECK(r == 0, "iter_next on a valid object: %d", r);
    if (j == NULL)
        return;
    FZ_CHECK(json_object_size(j) <= members, "jansson sees %zu members, we %zu",
             json_object_size(j), members);
    const char *key;
    json_t *jv;
    json_object_foreach(j, key, jv)
    {
        size_t kl = strlen(key);
        FZ_CHECK(tc_json_object_get(buf, len, key, kl, &v, &vl) == 0, "key \"%s\" not found", key);
        check_inside(buf, len, v, vl, "object_get value");
        json_error_t err;
        json_t *again = json_loadb(v, vl, JFLAGS, &err);
        FZ_CHECK(again != NULL && json_equal(again, jv),
                 "the value under \"%s\" differs from jansson's", key);
        json_decref(again);
    }
}

/* tc_json_key_equal(raw, key): raw is a string's inside; key what jansson unescapes it to. */
static void check_key_equal(const char *raw, size_t raw_len)
{
    if (memchr(raw, '\\', raw_len) == NULL && memchr(raw, '"', raw_len) == NULL) {
        char *k = copy(raw, raw_len);
        FZ_CHECK(tc_json_key_equal(raw, raw_len, k, raw_len) == 1, "plain key unequal to itself");
        if (raw_len > 0)
            FZ_CHECK(tc_json_key_equal(raw, raw_len, k, raw_len - 1) == 0, "prefix compares equal");
        free(k);
    }
    char *q = malloc(raw_len + 2);
    FZ_CHECK(q != NULL, "out of memory");
    q[0] = '"';
    memcpy(q + 1, raw, raw_len);
    q[raw_len + 1] = '"';
    json_error_t err;
    json_t *s = json_loadb(q, raw_len + 2, JFLAGS, &err);
    if (s != NULL && json_is_string(s)) {
        size_t n = json_string_length(s);
        char *k = copy(json_string_value(s), n);
        FZ_CHECK(tc_json_key_equal(raw, raw_len, k, n) == 1,
                 "key_equal disagrees with jansson's unescaping");
        free(k);
    }
    json_decref(s);
    free(q);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    unsigned sel = (unsigned)data[0] << 8 | data[1];
    int status = sel % 4 != 0 ? 200 : 100 + (int)(sel / 4 % 500);
    size_t len = size - 2;
    char *body = copy((const char *)data + 2, len);

    int ours = tc_json_valid(body, len);
    FZ_CHECK(ours == 0 || ours == 1, "tc_json_valid returned %d", ours);

    /* The hedge's judge on the same bytes. */
    tc_response resp;
    memset(&resp, 0, sizeof(resp));
    resp.status = status;
    resp.http_version = 11;
    resp.body = body;
    resp.body_len = len;
    tc_attempt_outcome o = tc_hedge_judge_json(&resp, NULL);
    tc_attempt_outcome want = status != 200 ? TC_OUTCOME_HTTP_STATUS
                              : ours        ? TC_OUTCOME_SUCCESS
                                            : TC_OUTCOME_INVALID_JSON;
    FZ_CHECK(o == want, "judge says %s for status %d, valid %d", tc_attempt_outcome_name(o), status,
             ours);

    /* jansson as the oracle. */
    json_error_t err;
    json_t *j = json_loadb(body, len, JFLAGS, &err);
    if (j != NULL && !ours) {
        FZ_CHECK(memchr(body, '\0', len) != NULL || depth(j) > TC_JSON_MAX_DEPTH,
                 "jansson accepts what we reject (%zu bytes)", len);
        json_decref(j);
        j = NULL;
    } else if (j == NULL && ours) {
        FZ_CHECK(jansson_only_rejection(&err),
                 "we accept what jansson rejects: %s (line %d col %d)", err.text, err.line,
                 err.column);
    }

    if (ours)
        readers_on_valid(body, len, j);
    else
        readers_anywhere(body, len);
    json_decref(j);

    /* The key comparison: the body's first half as a string's raw inside. */
    check_key_equal(body, len / 2);
    free(body);
    return 0;
}
