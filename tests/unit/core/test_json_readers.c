/*
 * Unit tests for src/core/json.c: the raw readers (tc_json_iter, tc_json_object_get,
 * tc_json_key_equal).
 */
#include "json_fixture.h"

/* ---- readers ------------------------------------------------------------------------------ */

static void expect_get(const char *doc, const char *key, size_t key_len, const char *want)
{
    const char *val = NULL;
    size_t vl = 0;
    assert_int_equal(tc_json_valid(doc, strlen(doc)), 1);
    int r = tc_json_object_get(doc, strlen(doc), key, key_len, &val, &vl);
    if (r != 0)
        fail_msg("get '%.*s' in %s: %s", (int)key_len, key, doc, tc_err_name(r));
    assert_true(val >= doc && val + vl <= doc + strlen(doc));
    if (vl != strlen(want) || memcmp(val, want, vl) != 0)
        fail_msg("get '%.*s' in %s: got '%.*s', want '%s'", (int)key_len, key, doc, (int)vl, val,
                 want);
}

static void test_object_get(void **state)
{
    (void)state;
    const char *doc = "{\"a\":1,\"b\":[1,{\"c\":\"}\"}],\"c\":\"x\\\"y\",\"d\":{\"e\":{}},"
                      "\"t\":true,\"f\":false,\"n\":null,\"x\":-1.5e3,\"s\":\"\"}";
    expect_get(doc, "a", 1, "1");
    expect_get(doc, "b", 1, "[1,{\"c\":\"}\"}]");
    expect_get(doc, "c", 1, "\"x\\\"y\"");
    expect_get(doc, "d", 1, "{\"e\":{}}");
    expect_get(doc, "t", 1, "true");
    expect_get(doc, "f", 1, "false");
    expect_get(doc, "n", 1, "null");
    expect_get(doc, "x", 1, "-1.5e3");
    expect_get(doc, "s", 1, "\"\"");

    const char *val = (const char *)0x1;
    size_t vl = 99;
    assert_int_equal(tc_json_object_get(doc, strlen(doc), "e", 1, &val, &vl), TC_EMISSING);
    assert_int_equal(tc_json_object_get(doc, strlen(doc), "zz", 2, &val, &vl), TC_EMISSING);
    assert_int_equal(tc_json_object_get(doc, strlen(doc), "", 0, &val, &vl), TC_EMISSING);
    assert_true(val == (const char *)0x1 && vl == 99); /* untouched on error */

    /* Whitespace everywhere; the value range excludes it. */
    expect_get(" \n{ \"a\" :\t1 , \"b\" : [ 2 ] }\r\n", "b", 1, "[ 2 ]");
    expect_get(" { \"a\" : 1 } ", "a", 1, "1");
    /* Escaped keys are compared unescaped. */
    expect_get("{\"a\\u0062\":1}", "ab", 2, "1");
    expect_get("{\"\\u00e9\":2}", "\xc3\xa9", 2, "2");
    expect_get("{\"\\ud83d\\ude00\":3}", "\xf0\x9f\x98\x80", 4, "3");
    expect_get("{\"a\\/b\":4,\"a/b\":5}", "a/b", 3, "5");
    expect_get("{\"\\n\\t\\\"\\\\\":6}", "\n\t\"\\", 4, "6");
    expect_get("{\"\\u0000\":7}", "\0", 1, "7");
    expect_get("{\"\":8}", "", 0, "8");
    /* Duplicates: the last wins. */
    expect_get("{\"k\":1,\"k\":2,\"j\":0,\"k\":3}", "k", 1, "3");
    /* Only the top level is searched. */
    assert_int_equal(tc_json_object_get("{\"x\":{\"a\":1}}", 13, "a", 1, &val, &vl), TC_EMISSING);
    assert_int_equal(tc_json_object_get("{}", 2, "a", 1, &val, &vl), TC_EMISSING);
    /* Not an object. */
    assert_int_equal(tc_json_object_get("[1]", 3, "a", 1, &val, &vl), TC_EINVAL);
    assert_int_equal(tc_json_object_get("\"a\"", 3, "a", 1, &val, &vl), TC_EINVAL);
    assert_int_equal(tc_json_object_get("", 0, "a", 1, &val, &vl), TC_EINVAL);
    assert_int_equal(tc_json_object_get(NULL, 0, "a", 1, &val, &vl), TC_EINVAL);
    assert_int_equal(tc_json_object_get("  ", 2, "a", 1, &val, &vl), TC_EINVAL);
    /* Not valid after all: an error, not a crash. */
    assert_int_equal(tc_json_object_get("{\"a\":1", 6, "a", 1, &val, &vl), TC_EPROTO);
    assert_int_equal(tc_json_object_get("{\"a\":", 5, "a", 1, &val, &vl), TC_EPROTO);
    assert_int_equal(tc_json_object_get("{\"a\" 1}", 7, "a", 1, &val, &vl), TC_EPROTO);
    assert_int_equal(tc_json_object_get("{\"a\":[1}", 8, "a", 1, &val, &vl), TC_EPROTO);
    assert_int_equal(tc_json_object_get("{\"a\\", 4, "a", 1, &val, &vl), TC_EPROTO);
    assert_int_equal(tc_json_object_get("{1:2}", 5, "a", 1, &val, &vl), TC_EPROTO);
}

static void test_iter(void **state)
{
    (void)state;
    const char *doc = "{ \"a\":1, \"b\\n\" : {\"x\":[]} ,\"a\":\"2\" }";
    tc_json_iter it;
    tc_json_member m;
    assert_int_equal(tc_json_iter_init(&it, doc, strlen(doc)), 0);
    assert_int_equal(tc_json_iter_next(&it, &m), 1);
    assert_int_equal(m.key_len, 1);
    assert_memory_equal(m.key, "a", 1);
    assert_int_equal(m.value_len, 1);
    assert_memory_equal(m.value, "1", 1);
    assert_int_equal(tc_json_iter_next(&it, &m), 1);
    assert_int_equal(m.key_len, 3);
    assert_memory_equal(m.key, "b\\n", 3); /* raw, still escaped */
    assert_true(tc_json_key_equal(m.key, m.key_len, "b\n", 2));
    assert_int_equal(m.value_len, 8);
    assert_memory_equal(m.value, "{\"x\":[]}", 8);
    assert_int_equal(tc_json_iter_next(&it, &m), 1);
    assert_int_equal(m.value_len, 3);
    assert_memory_equal(m.value, "\"2\"", 3);
    assert_int_equal(tc_json_iter_next(&it, &m), 0);
    assert_int_equal(tc_json_iter_next(&it, &m), 0); /* stays at the end */

    assert_int_equal(tc_json_iter_init(&it, "{}", 2), 0);
    assert_int_equal(tc_json_iter_next(&it, &m), 0);
    assert_int_equal(tc_json_iter_init(&it, " { } ", 5), 0);
    assert_int_equal(tc_json_iter_next(&it, &m), 0);
    assert_int_equal(tc_json_iter_init(&it, "[]", 2), TC_EINVAL);
    assert_int_equal(tc_json_iter_next(&it, &m), 0);
    assert_int_equal(tc_json_iter_init(&it, "{\"a\":1 \"b\":2}", 13), 0);
    assert_int_equal(tc_json_iter_next(&it, &m), 1);
    assert_int_equal(tc_json_iter_next(&it, &m), TC_EPROTO);
    assert_int_equal(tc_json_iter_next(&it, &m), 0);
}

static void test_iter_value_ranges_are_valid_json(void **state)
{
    (void)state;
    /* Each value range is exactly one JSON text: nothing cut off, nothing extra. */
    const char *doc = "{\"b\":{\"x\":[]},\"c\":[\"]\",\"[\",{\"}\":\"{\"}],\"d\":\"\\\\\"}";
    tc_json_iter it;
    tc_json_member m;
    int n = 0;
    assert_int_equal(tc_json_iter_init(&it, doc, strlen(doc)), 0);
    while (tc_json_iter_next(&it, &m) == 1) {
        assert_int_equal(tc_json_valid(m.value, m.value_len), 1);
        assert_int_equal(tc_json_valid(m.value, m.value_len + 1), 0); /* nothing left out */
        n++;
    }
    assert_int_equal(n, 3);
}

static void test_key_equal(void **state)
{
    (void)state;
    assert_true(tc_json_key_equal("abc", 3, "abc", 3));
    assert_false(tc_json_key_equal("abc", 3, "abd", 3));
    assert_false(tc_json_key_equal("abc", 3, "ab", 2));
    assert_false(tc_json_key_equal("ab", 2, "abc", 3));
    assert_true(tc_json_key_equal("", 0, "", 0));
    assert_true(tc_json_key_equal("a\\nb", 4, "a\nb", 3));
    assert_true(tc_json_key_equal("\\u0041\\u00C9", 12, "A\xc3\x89", 3));
    assert_true(tc_json_key_equal("\\u20ac", 6, "\xe2\x82\xac", 3));
    assert_true(tc_json_key_equal("\\uD83D\\uDE00", 12, "\xf0\x9f\x98\x80", 4));
    /* Lone surrogates compare as their generalised UTF-8 bytes, which valid keys never hold. */
    assert_true(tc_json_key_equal("\\uD800", 6, "\xed\xa0\x80", 3));
    assert_true(tc_json_key_equal("\\uD800\\u0041", 12,
                                  "\xed\xa0\x80"
                                  "A",
                                  4));
    assert_false(tc_json_key_equal("\\uD800", 6, "", 0));
    /* Malformed escapes never compare equal, and nothing is read past raw_len. */
    assert_false(tc_json_key_equal("\\x", 2, "x", 1));
    assert_false(tc_json_key_equal("\\", 1, "\\", 1));
    assert_false(tc_json_key_equal("\\u12", 4, "\x12", 1));
    assert_false(tc_json_key_equal("\\u0041", 5, "A", 1));
    assert_false(tc_json_key_equal("\\uZZZZ", 6, "?", 1));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_object_get),
        cmocka_unit_test(test_iter),
        cmocka_unit_test(test_iter_value_ranges_are_valid_json),
        cmocka_unit_test(test_key_equal),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
