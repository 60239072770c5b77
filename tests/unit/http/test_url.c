/*
 * Unit tests for src/http/url.c: query iteration, percent-decoding and -encoding, tc_query_get, the
 * serve endpoints' timeout rule (every accepted and refused form, and their percent-encoded
 * twins) and the ID rule.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tailcut/url.h"

/* ---- query iteration ---------------------------------------------------------------------- */

typedef struct pair {
    const char *name;
    const char *value;
} pair;

/* Iterates q and checks the raw pairs against want (terminated by a NULL name). */
static void check_pairs(const char *q, const pair *want)
{
    tc_query_iter it;
    const char *n, *v;
    size_t nl, vl;
    size_t k = 0;
    tc_query_iter_init(&it, q, strlen(q));
    while (tc_query_next(&it, &n, &nl, &v, &vl)) {
        assert_non_null(want[k].name);
        assert_int_equal(nl, strlen(want[k].name));
        assert_memory_equal(n, want[k].name, nl);
        assert_int_equal(vl, strlen(want[k].value));
        if (vl)
            assert_memory_equal(v, want[k].value, vl);
        k++;
    }
    assert_null(want[k].name);
    /* Stays at the end. */
    assert_int_equal(tc_query_next(&it, &n, &nl, &v, &vl), 0);
}

static void test_iter_basic(void **state)
{
    (void)state;
    check_pairs("a=1&b=2", (const pair[]){{"a", "1"}, {"b", "2"}, {NULL, NULL}});
    check_pairs("", (const pair[]){{NULL, NULL}});
    check_pairs("&&&", (const pair[]){{NULL, NULL}});
    check_pairs("a=1&&b=2", (const pair[]){{"a", "1"}, {"b", "2"}, {NULL, NULL}});
    check_pairs("&a=1&", (const pair[]){{"a", "1"}, {NULL, NULL}});
    check_pairs("flag&x=", (const pair[]){{"flag", ""}, {"x", ""}, {NULL, NULL}});
    check_pairs("=v", (const pair[]){{"", "v"}, {NULL, NULL}});
    check_pairs("a==b", (const pair[]){{"a", "=b"}, {NULL, NULL}});
    check_pairs("a=%20+x&b", (const pair[]){{"a", "%20+x"}, {"b", ""}, {NULL, NULL}});
}

static void test_iter_not_nul_terminated(void **state)
{
    (void)state;
    /* Only the first 3 bytes are the query; the rest must never be looked at. */
    const char buf[] = "a=1&b=2";
    tc_query_iter it;
    const char *n, *v;
    size_t nl, vl;
    tc_query_iter_init(&it, buf, 3);
    assert_int_equal(tc_query_next(&it, &n, &nl, &v, &vl), 1);
    assert_int_equal(nl, 1);
    assert_int_equal(vl, 1);
    assert_int_equal(v[0], '1');
    assert_int_equal(tc_query_next(&it, &n, &nl, &v, &vl), 0);

    /* A heap copy with no terminator lets ASan catch any read past the end. */
    char *heap = malloc(5);
    assert_non_null(heap);
    memcpy(heap, "x=abc", 5);
    tc_query_iter_init(&it, heap, 5);
    assert_int_equal(tc_query_next(&it, &n, &nl, &v, &vl), 1);
    assert_int_equal(vl, 3);
    assert_int_equal(tc_query_next(&it, &n, &nl, &v, &vl), 0);
    free(heap);
}

/* ---- decode / encode ---------------------------------------------------------------------- */

static long dec(const char *s, char *out, size_t size, int qm)
{
    return tc_url_decode(s, strlen(s), out, size, qm);
}

/* s decodes (qm: '+' is a space) to the text want, NUL-terminated. */
static void expect_decoded(const char *s, int qm, const char *want)
{
    char out[64];
    assert_int_equal(dec(s, out, sizeof out, qm), strlen(want));
    assert_string_equal(out, want);
}

static void test_decode(void **state)
{
    (void)state;
    char out[64];
    expect_decoded("abc", 1, "abc");
    expect_decoded("", 1, "");
    expect_decoded("%41%62%2f%2F", 1, "Ab//");
    expect_decoded("a+b", 1, "a b");
    expect_decoded("a+b", 0, "a+b");
    expect_decoded("%2B", 1, "+");
    expect_decoded("%25%32%30", 1, "%20"); /* no double decoding */
    assert_int_equal(dec("%ff%FE", out, sizeof out, 0), 2);
    assert_int_equal((unsigned char)out[0], 0xff);
    assert_int_equal((unsigned char)out[1], 0xfe);

    /* Bad escapes and NULs. */
    assert_int_equal(dec("%", out, sizeof out, 1), TC_EINVAL);
    assert_int_equal(dec("%4", out, sizeof out, 1), TC_EINVAL);
    assert_int_equal(dec("ab%4", out, sizeof out, 1), TC_EINVAL);
    assert_int_equal(dec("%zz", out, sizeof out, 1), TC_EINVAL);
    assert_int_equal(dec("%g0", out, sizeof out, 1), TC_EINVAL);
    assert_int_equal(dec("%0g", out, sizeof out, 1), TC_EINVAL);
    assert_int_equal(dec("% 1", out, sizeof out, 1), TC_EINVAL);
    assert_int_equal(dec("a%00b", out, sizeof out, 1), TC_EINVAL);
    assert_int_equal(tc_url_decode("a\0b", 3, out, sizeof out, 1), TC_EINVAL);

    /* "%4" followed by bytes beyond len must not be read as "%41". */
    assert_int_equal(tc_url_decode("%41", 2, out, sizeof out, 1), TC_EINVAL);
}

static void test_decode_sizes(void **state)
{
    (void)state;
    char out[8];
    memset(out, 'X', sizeof out);
    /* "abcd" needs 5 bytes with the NUL. */
    assert_int_equal(dec("abcd", out, 4, 1), TC_ETOOLARGE);
    assert_int_equal(dec("abcd", out, 5, 1), 4);
    assert_string_equal(out, "abcd");
    assert_int_equal(out[5], 'X');
    assert_int_equal(dec("%41%41%41%41", out, 5, 1), 4);
    assert_int_equal(dec("%41%41%41%41%41", out, 5, 1), TC_ETOOLARGE);
    assert_int_equal(dec("", out, 1, 1), 0);
    assert_int_equal(dec("", NULL, 0, 1), TC_ETOOLARGE);
    assert_int_equal(dec("a", out, 0, 1), TC_ETOOLARGE);
}

static void test_encode(void **state)
{
    (void)state;
    char out[64];
    const char *unreserved = "AZaz09-._~";
    assert_int_equal(tc_url_encode(unreserved, strlen(unreserved), out, sizeof out), 10);
    assert_string_equal(out, unreserved);
    assert_int_equal(tc_url_encode("a b&c=d/+%", 10, out, sizeof out), 22);
    assert_string_equal(out, "a%20b%26c%3Dd%2F%2B%25");
    assert_int_equal(tc_url_encode("\xff\x00", 2, out, sizeof out), 6);
    assert_string_equal(out, "%FF%00");
    assert_int_equal(tc_url_encode("", 0, out, 1), 0);
    assert_string_equal(out, "");

    /* Exact fit and one short. */
    assert_int_equal(tc_url_encode("a/", 2, out, 5), 4);
    assert_string_equal(out, "a%2F");
    assert_int_equal(tc_url_encode("a/", 2, out, 4), TC_ETOOLARGE);
    assert_int_equal(tc_url_encode("", 0, NULL, 0), TC_ETOOLARGE);
}

static void test_encode_decode_roundtrip(void **state)
{
    (void)state;
    char src[256], enc[1024], back[256];
    /* Every byte value except NUL, which decoding refuses by design. */
    for (int i = 1; i < 256; i++)
        src[i - 1] = (char)i;
    long e = tc_url_encode(src, 255, enc, sizeof enc);
    assert_true(e > 255);
    assert_int_equal((size_t)e, strlen(enc));
    for (long i = 0; i < e; i++) /* output is only unreserved characters and escapes */
        assert_non_null(
            strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~%", enc[i]));
    assert_int_equal(tc_url_decode(enc, (size_t)e, back, sizeof back, 1), 255);
    assert_memory_equal(back, src, 255);

    srand(12345);
    for (int round = 0; round < 2000; round++) {
        size_t n = (size_t)(rand() % 40);
        for (size_t i = 0; i < n; i++)
            src[i] = (char)(1 + rand() % 255);
        e = tc_url_encode(src, n, enc, sizeof enc);
        assert_true(e >= (long)n);
        assert_int_equal(tc_url_decode(enc, (size_t)e, back, sizeof back, 1), (long)n);
        assert_memory_equal(back, src, n);
    }
}

/* ---- tc_query_get ------------------------------------------------------------------------- */

static long get(const char *q, const char *name, char *out, size_t size)
{
    return tc_query_get(q, strlen(q), name, out, size);
}

static void test_query_get(void **state)
{
    (void)state;
    char v[32];
    assert_int_equal(get("a=1&b=2", "b", v, sizeof v), 1);
    assert_string_equal(v, "2");
    assert_int_equal(get("a=1&b=2", "c", v, sizeof v), 0);
    assert_int_equal(get("", "a", v, sizeof v), 0);
    assert_int_equal(get("id=x&id=y&id=z", "id", v, sizeof v), 3);
    assert_string_equal(v, "x"); /* first value */
    assert_int_equal(get("%69d=A%20B&i%64=2", "id", v, sizeof v), 2);
    assert_string_equal(v, "A B");
    assert_int_equal(get("my+name=x", "my name", v, sizeof v), 1);
    assert_string_equal(v, "x");
    assert_int_equal(get("flag", "flag", v, sizeof v), 1);
    assert_string_equal(v, "");
    assert_int_equal(get("ab=1", "a", v, sizeof v), 0);   /* prefix is not a match */
    assert_int_equal(get("a=1", "ab", v, sizeof v), 0);   /* nor the other way */
    assert_int_equal(get("A=1", "a", v, sizeof v), 0);    /* case-sensitive */
    assert_int_equal(get("%6=1", "a", v, sizeof v), 0);   /* bad escape in a name: no match */
    assert_int_equal(get("a%00=1", "a", v, sizeof v), 0); /* encoded NUL: no match */
    assert_int_equal(get("a=%zz", "a", v, sizeof v), TC_EINVAL);
    assert_int_equal(get("a=%zz&a=1", "a", v, sizeof v), TC_EINVAL); /* first value counts */
    assert_int_equal(get("a=1&a=%zz", "a", v, sizeof v), 2);
    assert_string_equal(v, "1");
    assert_int_equal(get("a=0123456789", "a", v, 5), TC_ETOOLARGE);
    assert_int_equal(get("a=1&a=2", "a", NULL, 0), 2); /* count only */
}

/* ---- the timeout rule --------------------------------------------------------------------- */

#define MAX_TIMEOUT 60000

/* Runs the rule on q and returns its result; *ms is set to 777 before the call. */
static int tmo(const char *q, uint64_t *ms, int *present, const char **why)
{
    *ms = 777;
    *present = -1;
    *why = "untouched";
    return tc_query_timeout(q, strlen(q), MAX_TIMEOUT, ms, present, why);
}

static void expect_ok(const char *q, uint64_t want)
{
    uint64_t ms;
    int present;
    const char *why;
    int r = tmo(q, &ms, &present, &why);
    if (r != 0)
        fail_msg("query '%s' rejected: %s", q, why ? why : "(null)");
    assert_int_equal(present, 1);
    assert_int_equal(ms, want);
    assert_null(why);
}

static void expect_bad(const char *q)
{
    uint64_t ms;
    int present;
    const char *why;
    int r = tmo(q, &ms, &present, &why);
    if (r != TC_EINVAL)
        fail_msg("query '%s' accepted (ms=%llu)", q, (unsigned long long)ms);
    assert_int_equal(present, 1);
    assert_non_null(why);
    assert_true(strstr(why, "timeout") != NULL);
    assert_int_equal(ms, 777); /* untouched on error */
}

static void test_timeout_valid(void **state)
{
    (void)state;
    expect_ok("timeout=10", 10);
    expect_ok("timeout=1", 1);
    expect_ok("timeout=60000", 60000);
    expect_ok("timeout=010", 10); /* ASCII digits only; leading zeros are still digits */
    expect_ok("timeout=00000000000000000000000000000000000001", 1);
    expect_ok("a=b&timeout=250&c", 250);
    expect_ok("timeout=%31%30", 10);
    expect_ok("%74imeout=5", 5);
    expect_ok("timeou%74=5", 5);
    expect_ok("%74%69%6D%65%6f%75%74=%36%30%30%30%30", 60000);
    expect_ok("&&timeout=7&&", 7);
    expect_ok("timeouts=1&timeout=3&xtimeout=2&Timeout=1", 3); /* only the exact name counts */
}

static void test_timeout_invalid_forms(void **state)
{
    (void)state;
    /* Zero, negative, fractional, non-numeric, empty, a unit, a space or sign, over the cap,
     * given twice. */
    expect_bad("timeout=0");
    expect_bad("timeout=-5");
    expect_bad("timeout=1.5");
    expect_bad("timeout=abc");
    expect_bad("timeout=");
    expect_bad("timeout");
    expect_bad("timeout=10ms");
    expect_bad("timeout=%2010"); /* " 10" */
    expect_bad("timeout=+10");   /* '+' decodes to a space in a query: " 10" */
    expect_bad("timeout=%2B10"); /* "+10" */
    expect_bad("timeout=60001"); /* too large */
    expect_bad("timeout=10&timeout=10");
    expect_bad("timeout=10&timeout=20");
    /* More. */
    expect_bad("timeout=00");
    expect_bad("timeout=000000000000000000000000000");
    expect_bad("timeout=10%20");
    expect_bad("timeout=10+");
    expect_bad("timeout=1e3");
    expect_bad("timeout=0x10");
    expect_bad("timeout=%31%30ms");
    expect_bad("timeout=%3"); /* bad escape */
    expect_bad("timeout=%zz");
    expect_bad("timeout=1%00");      /* encoded NUL */
    expect_bad("timeout=%EF%BC%91"); /* FULLWIDTH DIGIT ONE is not ASCII */
    expect_bad("timeout=\xd9\xa1");  /* ARABIC-INDIC DIGIT ONE */
    expect_bad("timeout=1,000");
    expect_bad("timeout=10\t");
    expect_bad("timeout=-0");
    expect_bad("timeout==10");
    expect_bad("timeout=18446744073709551615"); /* UINT64_MAX */
    expect_bad("timeout=18446744073709551616"); /* UINT64_MAX + 1 */
    expect_bad("timeout=99999999999999999999999999999999999999999999999999");
    /* Repeated under different spellings of the name. */
    expect_bad("timeout=10&%74imeout=10");
    expect_bad("timeout=10&timeout");
    expect_bad("timeout=&timeout=10");
    expect_bad("timeout=10&a=1&timeout=10&timeout=10");
}

static void test_timeout_huge_digit_string(void **state)
{
    (void)state;
    /* 100 000 digits: must neither overflow nor be accepted. */
    size_t n = 100000;
    char *q = malloc(8 + n + 1);
    assert_non_null(q);
    memcpy(q, "timeout=", 8);
    memset(q + 8, '9', n);
    q[8 + n] = '\0';
    expect_bad(q);
    /* Zeros followed by a small value is a small value. */
    memset(q + 8, '0', n);
    q[8 + n - 1] = '5';
    expect_ok(q, 5);
    /* Huge with a non-digit at the very end: still rejected. */
    memset(q + 8, '9', n);
    q[8 + n - 1] = 'x';
    expect_bad(q);
    free(q);
}

static void test_timeout_absent(void **state)
{
    (void)state;
    const char *qs[] = {"", "a=1", "timeoutx=5", "time+out=5", "&&", "%zz=1", "xtimeout=1"};
    for (size_t i = 0; i < sizeof qs / sizeof qs[0]; i++) {
        uint64_t ms;
        int present;
        const char *why;
        assert_int_equal(tmo(qs[i], &ms, &present, &why), 0);
        assert_int_equal(present, 0);
        assert_int_equal(ms, 777);
        assert_null(why);
    }
}

static void test_timeout_limits(void **state)
{
    (void)state;
    uint64_t ms = 0;
    int present = 0;
    const char *why = NULL;
    /* max = 1: only "1". */
    assert_int_equal(tc_query_timeout("timeout=1", 9, 1, &ms, &present, &why), 0);
    assert_int_equal(ms, 1);
    assert_int_equal(tc_query_timeout("timeout=2", 9, 1, &ms, &present, &why), TC_EINVAL);
    /* max = 0: nothing is valid. */
    assert_int_equal(tc_query_timeout("timeout=1", 9, 0, &ms, &present, &why), TC_EINVAL);
    /* max = UINT64_MAX: the largest value is accepted, one more is not, and nothing overflows. */
    const char *q = "timeout=18446744073709551615";
    assert_int_equal(tc_query_timeout(q, strlen(q), UINT64_MAX, &ms, &present, &why), 0);
    assert_true(ms == UINT64_MAX);
    q = "timeout=18446744073709551616";
    assert_int_equal(tc_query_timeout(q, strlen(q), UINT64_MAX, &ms, &present, &why), TC_EINVAL);
    q = "timeout=184467440737095516150";
    assert_int_equal(tc_query_timeout(q, strlen(q), UINT64_MAX, &ms, &present, &why), TC_EINVAL);
    /* Optional outputs may be NULL. */
    assert_int_equal(tc_query_timeout("timeout=5", 9, 10, &ms, NULL, NULL), 0);
    assert_int_equal(ms, 5);
    assert_int_equal(tc_query_timeout("timeout=x", 9, 10, &ms, NULL, NULL), TC_EINVAL);
    /* Only the first len bytes are the query. */
    assert_int_equal(tc_query_timeout("timeout=12", 9, 100, &ms, &present, &why), 0);
    assert_int_equal(ms, 1);
}

static void test_timeout_messages(void **state)
{
    (void)state;
    uint64_t ms;
    int present;
    const char *w1, *w2, *w3;
    assert_int_equal(tmo("timeout=abc", &ms, &present, &w1), TC_EINVAL);
    assert_int_equal(tmo("timeout=0", &ms, &present, &w2), TC_EINVAL);
    assert_int_equal(tmo("timeout=1&timeout=1", &ms, &present, &w3), TC_EINVAL);
    assert_string_equal(w1, "timeout must be a whole number of milliseconds");
    assert_true(strstr(w2, "range") != NULL);
    assert_true(strstr(w3, "once") != NULL);
}

/* ---- IDs ---------------------------------------------------------------------------------- */

static int idv(const char *s)
{
    return tc_id_valid(s, strlen(s));
}

static void test_id_valid(void **state)
{
    (void)state;
    assert_true(idv("a"));
    assert_true(idv("A-z_0.9"));
    assert_true(idv("..."));
    assert_true(idv("-"));
    assert_false(idv(""));
    assert_false(idv("a b"));
    assert_false(idv("a/b"));
    assert_false(idv("a%20"));
    assert_false(idv("a+b"));
    assert_false(idv("é"));
    assert_false(idv("a~"));
    assert_false(tc_id_valid("a\0b", 3));

    char id[TC_ID_MAX + 2];
    memset(id, 'x', sizeof id);
    assert_true(tc_id_valid(id, TC_ID_MAX));
    assert_false(tc_id_valid(id, TC_ID_MAX + 1));
    assert_true(tc_id_valid(id, 1));

    /* Every byte alone. */
    for (int c = 0; c < 256; c++) {
        char b = (char)c;
        int want = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                   c == '_' || c == '.' || c == '-';
        assert_int_equal(tc_id_valid(&b, 1), want);
    }
}

/* One origin parser serves the client's pool and fetch's per-host caps, and its key is the peer
 * libcurl really connects to, however the URL spells it (issue 11): a host spelled differently
 * must not dodge a per-host cap. */
static void test_origin(void **state)
{
    (void)state;
    static const struct {
        const char *url, *key;
        int https;
    } ok[] = {
        /* the forms of the issue: libcurl decodes and normalises these before it connects */
        {"http://exa%6dple.com/", "http://example.com:80", 0},
        {"http://0x7f.1/", "http://127.0.0.1:80", 0},
        {"http://Example.COM/a?b", "http://example.com:80", 0},
        {"HTTPS://h:0443/", "https://h:443", 1},
        {"HtTp://H", "http://h:80", 0},
        {"http://user:pw@h:8080", "http://h:8080", 0},
        {"http://user@h/", "http://h:80", 0},
        {"http://[::1]:9000/x", "http://[::1]:9000", 0},
        {"http://[0:0::1]/", "http://[::1]:80", 0},
        {"http://[::FFFF:127.0.0.1]/", "http://[::ffff:127.0.0.1]:80", 0},
        {"http://a:b@[::1]:9/", "http://[::1]:9", 0},
        {"http://[fe80::1%25eth0]:81/", "http://[fe80::1%eth0]:81", 0},
        {"https://h#frag", "https://h:443", 1},
        {"http://h?x=1", "http://h:80", 0},
        {"http://h:/", "http://h:80", 0},
        /* default port, explicit or implicit: one origin */
        {"http://example.com:80/", "http://example.com:80", 0},
        {"https://example.com:443/", "https://example.com:443", 1},
        {"http://example.com:443/", "http://example.com:443", 0},
        /* percent-encoded host */
        {"http://%65XAMPLE.com/", "http://example.com:80", 0},
        /* a trailing dot is the same DNS name */
        {"http://example.com./", "http://example.com:80", 0},
        /* IPv4 short, octal, hex and single-number forms all reach 127.0.0.1 */
        {"http://127.1/", "http://127.0.0.1:80", 0},
        {"http://0177.0.0.1/", "http://127.0.0.1:80", 0},
        {"http://0x7f.0x0.0x0.0x1:8080/", "http://127.0.0.1:8080", 0},
        {"http://2130706433/", "http://127.0.0.1:80", 0},
        {"http://h:070/", "http://h:70", 0},
    };
    static const char *const bad[] = {
        "h/x",
        "ftp://h/",
        "http:///x",
        "http:/h/",
        "http:h",
        "http://h:0/",
        "http://h:70000",
        "http://h:65536/",
        "http://h:8a/",
        "http://[::1/x",
        "http://[::1]x/",
        "http://a@b@c.com/",
        "http://ex%20ample.com/",
        "http://ex ample.com/",
        "http://exa%2Fmple.com/",
        "http://h\\x/",
        "",
    };
    char key[64];
    const char *why = NULL;
    int https = -1;
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        print_message("%s\n", ok[i].url);
        assert_int_equal(tc_url_origin(ok[i].url, key, sizeof(key), &https, &why), 0);
        assert_string_equal(key, ok[i].key);
        assert_int_equal(https, ok[i].https);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        print_message("%s\n", bad[i]);
        why = NULL;
        assert_int_equal(tc_url_origin(bad[i], key, sizeof(key), &https, &why), TC_EURL);
        assert_non_null(why);
    }
    /* room for the longest port is needed: 4 + 3 + 8 + 7 bytes */
    assert_int_equal(tc_url_origin("http://abcdefgh/", key, 21, &https, &why), TC_EURL);
    assert_int_equal(tc_url_origin("http://abcdefgh/", key, 22, &https, &why), 0);
    assert_string_equal(key, "http://abcdefgh:80");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_iter_basic),
        cmocka_unit_test(test_iter_not_nul_terminated),
        cmocka_unit_test(test_decode),
        cmocka_unit_test(test_decode_sizes),
        cmocka_unit_test(test_encode),
        cmocka_unit_test(test_encode_decode_roundtrip),
        cmocka_unit_test(test_query_get),
        cmocka_unit_test(test_timeout_valid),
        cmocka_unit_test(test_timeout_invalid_forms),
        cmocka_unit_test(test_timeout_huge_digit_string),
        cmocka_unit_test(test_timeout_absent),
        cmocka_unit_test(test_timeout_limits),
        cmocka_unit_test(test_timeout_messages),
        cmocka_unit_test(test_id_valid),
        cmocka_unit_test(test_origin),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
