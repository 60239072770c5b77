/*
 * Unit tests for src/core/json.c: a randomized property test of the validator and the readers, on
 * generated and mutated documents, with jansson as the oracle.
 */
#include "json_fixture.h"

/* ---- randomized: generated documents, jansson as the oracle ------------------------------- */

typedef struct rng {
    uint64_t s;
} rng;

static uint64_t next(rng *r)
{
    /* xorshift64* */
    r->s ^= r->s >> 12;
    r->s ^= r->s << 25;
    r->s ^= r->s >> 27;
    return r->s * 0x2545F4914F6CDD1Dull;
}

static unsigned below(rng *r, unsigned n)
{
    return (unsigned)(next(r) % n);
}

typedef struct sbuf {
    char *p;
    size_t len, cap;
} sbuf;

static void put(sbuf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void puts_(sbuf *b, const char *s)
{
    put(b, s, strlen(s));
}

static void gen_ws(rng *r, sbuf *b)
{
    static const char *ws[] = {"", "", "", " ", "\n", "\t", "\r\n  "};
    puts_(b, ws[below(r, 7)]);
}

/* A random valid string. No lone surrogate escapes and no \u0000, so jansson accepts it too
 * (also as an object key). */
static void gen_string(rng *r, sbuf *b)
{
    static const char *pieces[] = {"a",
                                   "Z",
                                   "0",
                                   " ",
                                   "\\\"",
                                   "\\\\",
                                   "\\/",
                                   "\\b\\f\\n\\r\\t",
                                   "\\u0041",
                                   "\\u00e9",
                                   "\\uFFFD",
                                   "\\uD83D\\uDE00",
                                   "\xc3\xa9",
                                   "\xe2\x82\xac",
                                   "\xf0\x9f\x98\x80",
                                   "\x7f",
                                   "long-enough-to-use-the-fast-path",
                                   "{",
                                   "]",
                                   ",",
                                   ":"};
    put(b, "\"", 1);
    unsigned n = below(r, 6);
    for (unsigned i = 0; i < n; i++)
        puts_(b, pieces[below(r, sizeof pieces / sizeof pieces[0])]);
    put(b, "\"", 1);
}

static void gen_number(rng *r, sbuf *b)
{
    char tmp[64];
    int k = 0;
    if (below(r, 3) == 0)
        tmp[k++] = '-';
    if (below(r, 4) == 0) {
        tmp[k++] = '0';
    } else {
        unsigned digits = 1 + below(r, 9); /* stays within jansson's integer range */
        tmp[k++] = (char)('1' + below(r, 9));
        for (unsigned i = 1; i < digits; i++)
            tmp[k++] = (char)('0' + below(r, 10));
    }
    if (below(r, 3) == 0) {
        tmp[k++] = '.';
        unsigned digits = 1 + below(r, 4);
        for (unsigned i = 0; i < digits; i++)
            tmp[k++] = (char)('0' + below(r, 10));
    }
    if (below(r, 4) == 0) {
        tmp[k++] = below(r, 2) ? 'e' : 'E';
        unsigned s = below(r, 3);
        if (s)
            tmp[k++] = s == 1 ? '+' : '-';
        tmp[k++] = (char)('0' + below(r, 10));
        if (below(r, 2))
            tmp[k++] = (char)('0' + below(r, 10));
    }
    put(b, tmp, (size_t)k);
}

static void gen_value(rng *r, sbuf *b, int depth)
{
    unsigned kind = below(r, depth > 6 ? 6 : 8);
    switch (kind) {
    case 0:
        puts_(b, "true");
        break;
    case 1:
        puts_(b, "false");
        break;
    case 2:
        puts_(b, "null");
        break;
    case 3:
    case 4:
        gen_number(r, b);
        break;
    case 5:
        gen_string(r, b);
        break;
    default: { /* 6: an array, 7: an object, of up to four members */
        int object = kind == 7;
        put(b, object ? "{" : "[", 1);
        unsigned n = below(r, 5);
        for (unsigned i = 0; i < n; i++) {
            if (i)
                put(b, ",", 1);
            gen_ws(r, b);
            if (object) {
                gen_string(r, b);
                gen_ws(r, b);
                put(b, ":", 1);
                gen_ws(r, b);
            }
            gen_value(r, b, depth + 1);
            gen_ws(r, b);
        }
        gen_ws(r, b);
        put(b, object ? "}" : "]", 1);
        break;
    }
    }
}

/* Rejections by jansson that are not rejections by RFC 8259 (see json.h): number overflow, lone
 * surrogate escapes, \u0000 in a key. */
static int jansson_only_rejection(const json_error_t *e)
{
    return json_error_code(e) == json_error_numeric_overflow ||
           strstr(e->text, "invalid Unicode '\\u") != NULL ||
           strstr(e->text, "NUL byte in object key") != NULL;
}

static void mutate(rng *r, sbuf *b)
{
    static const char interesting[] = "{}[]\",:\\ \t\n0123456789-+.eEtfnu\x00\x1f\x7f\x80\xbf\xc0"
                                      "\xc3\xe2\xed\xf0\xf4\xff";
    unsigned op = below(r, 6);
    size_t pos = b->len ? below(r, (unsigned)b->len + 1) : 0;
    char c = below(r, 4) ? interesting[below(r, sizeof interesting - 1)] : (char)below(r, 256);
    switch (op) {
    case 0: /* replace */
        if (pos < b->len)
            b->p[pos] = c;
        break;
    case 1: { /* insert */
        put(b, "", 0);
        put(b, " ", 1);
        memmove(b->p + pos + 1, b->p + pos, b->len - 1 - pos);
        b->p[pos] = c;
        break;
    }
    case 2: /* delete */
        if (pos < b->len) {
            memmove(b->p + pos, b->p + pos + 1, b->len - pos - 1);
            b->len--;
        }
        break;
    case 3: /* truncate */
        b->len = pos;
        break;
    case 4: { /* duplicate a short span */
        size_t n = b->len - pos < 8 ? b->len - pos : 8;
        char tmp[8];
        memcpy(tmp, b->p + pos, n);
        size_t old = b->len;
        put(b, tmp, n);
        memmove(b->p + pos + n, b->p + pos, old - pos);
        memcpy(b->p + pos, tmp, n);
        break;
    }
    default: { /* insert a multi-byte token */
        static const char *tok[] = {"\\u",  "\\uD800", "\\uDC00", "\\u0000", "e+", "00",
                                    "true", "[]",      "{}",      "\"\"",    ",",  "\xed\xa0\x80"};
        const char *t = tok[below(r, sizeof tok / sizeof tok[0])];
        size_t n = strlen(t), old = b->len;
        put(b, t, n);
        memmove(b->p + pos + n, b->p + pos, old - pos);
        memcpy(b->p + pos, t, n);
        break;
    }
    }
}

static void test_random_vs_jansson(void **state)
{
    (void)state;
    uint64_t seed = 0x7a11c07ull;
    const char *env = getenv("TC_TEST_SEED");
    if (env)
        seed = strtoull(env, NULL, 0);
    rng r = {seed ? seed : 1};
    printf("# seed %llu (set TC_TEST_SEED to replay)\n", (unsigned long long)seed);

    unsigned generated = 0, mutated_valid = 0, mutated_invalid = 0, divergent = 0;
    for (int round = 0; round < 4000; round++) {
        sbuf b = {0};
        gen_ws(&r, &b);
        gen_value(&r, &b, 0);
        gen_ws(&r, &b);
        json_error_t err;

        /* Generated documents are valid for both. */
        json_t *j = json_loadb(b.p, b.len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
        if (!j)
            fail_msg("jansson rejects generated '%s': %s", b.p, err.text);
        if (!jfx_valid_n(b.p, b.len))
            fail_msg("rejects generated '%s'", b.p);
        generated++;

        /* For generated objects: every member jansson sees is found, and its raw range parses
         * to an equal value. (Generated keys may repeat; jansson keeps the last, as we do.) */
        if (json_is_object(j)) {
            const char *key;
            json_t *v;
            json_object_foreach(j, key, v)
            {
                const char *raw;
                size_t rl;
                assert_int_equal(tc_json_object_get(b.p, b.len, key, strlen(key), &raw, &rl), 0);
                json_t *again = json_loadb(raw, rl, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
                assert_non_null(again);
                assert_true(json_equal(again, v));
                json_decref(again);
            }
        }
        json_decref(j);

        /* A few mutations each; compare wherever jansson's verdict is RFC 8259's. */
        for (int m = 0; m < 5; m++) {
            mutate(&r, &b);
            int ours = jfx_valid_n(b.p ? b.p : "", b.len);
            j = json_loadb(b.p ? b.p : "", b.len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
            if (j && !ours && memchr(b.p, '\0', b.len) != NULL) {
                /* jansson takes a raw NUL after a complete value as the end of input ("1\0"
                 * loads); RFC 8259 has no such rule. */
                divergent++;
                json_decref(j);
            } else if (j) {
                if (!ours)
                    fail_msg("jansson accepts, we reject: '%.*s'", (int)b.len, b.p);
                mutated_valid++;
                json_decref(j);
            } else if (ours) {
                if (!jansson_only_rejection(&err))
                    fail_msg("we accept, jansson rejects ('%s'): '%.*s'", err.text, (int)b.len,
                             b.p);
                divergent++;
            } else {
                mutated_invalid++;
            }
            /* The readers stay within the buffer whatever it holds. */
            const char *raw;
            size_t rl;
            if (tc_json_object_get(b.p ? b.p : "", b.len, "a", 1, &raw, &rl) == 0)
                assert_true(raw >= b.p && raw + rl <= b.p + b.len);
        }
        free(b.p);
    }
    printf("# generated %u, mutated valid %u, invalid %u, valid only by RFC 8259 %u\n", generated,
           mutated_valid, mutated_invalid, divergent);
    /* The mutations must exercise both verdicts substantially. */
    assert_true(mutated_valid > 1000);
    assert_true(mutated_invalid > 1000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_vs_jansson),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
