/*
 * Unit tests for src/core/json.c: the strict validator (grammar, strings, UTF-8, numbers, depth,
 * truncation, inputs placed flush against a guard page).
 */
#include "json_fixture.h"

/* ---- grammar ------------------------------------------------------------------------------ */

static void test_literals_and_whitespace(void **state)
{
    (void)state;
    const char *ok[] = {"true", "false", "null", " true", "null ", " \t\n\r1\r\n\t ", "\"\"",
                        "[]",   "{}",    "[ ]",  "{ }",   "[\n]",  "{\r\n}"};
    JFX_EXPECT_ALL_VALID(ok);
    const char *bad[] = {"",
                         " ",
                         "\t\n",
                         "t",
                         "tru",
                         "True",
                         "nul",
                         "nulll",
                         "truex",
                         "true1",
                         "truefalse",
                         "true false",
                         "fals",
                         "NULL",
                         "\f1",
                         "\v1",
                         "\xa0"
                         "1",
                         "\xef\xbb\xbf"
                         "1",
                         "\xef\xbb\xbf{}",
                         "'a'",
                         "undefined",
                         "/**/1",
                         "1//",
                         "#"};
    JFX_EXPECT_ALL_INVALID(bad);
    jfx_expect_invalid_n("1\0", 2);
    jfx_expect_invalid_n("\0", 1);
    jfx_expect_invalid_n("[\0]", 3);
    assert_int_equal(tc_json_valid(NULL, 0), 0);
}

static void test_numbers(void **state)
{
    (void)state;
    const char *ok[] = {"0",
                        "-0",
                        "1",
                        "-1",
                        "10",
                        "1.5",
                        "-1.5",
                        "0.5",
                        "1e5",
                        "1E5",
                        "1e+5",
                        "1e-5",
                        "0e0",
                        "-0.0e-0",
                        "1E+05",
                        "0.000",
                        "9.99",
                        "123456789012345678901234567890",
                        "1.0e400",
                        "-1e-400",
                        "[0,-0,1.5e3]",
                        "{\"a\":-0.0}",
                        "[1e1]",
                        "7 "};
    JFX_EXPECT_ALL_VALID(ok);
    const char *bad[] = {
        "01",    "-01", "00",   "+1",   "1.",    ".5",   "-",        "-a",         "1e",
        "1e+",   "1e-", "1.e5", "0x10", "1_000", "NaN",  "Infinity", "-Infinity",  "1.5.5",
        "1e5e5", "- 1", "1 2",  "1,",   "[01]",  "[1.]", "[-]",      "{\"a\":1.}", "1e5.5",
        "1E",    "-.5", "--1",  "1-",   "0.e",   "[1e]", "1ee5",     "1e+-5",      "\xd9\xa1"};
    JFX_EXPECT_ALL_INVALID(bad);
}

static void test_structure(void **state)
{
    (void)state;
    const char *ok[] = {"[1,2]",           "{\"a\":1}",
                        "{\"a\":{}}",      "[[],[]]",
                        "[{},{\"a\":[]}]", "{\"a\":1,\"a\":2}",
                        "{\"\":\"\"}",     "[null,true]",
                        " [ 1 , 2 ] ",     "{ \"a\" : [ { } ] , \"b\" : null }",
                        "[\"]\"]",         "{\"}\":\"{\"}"};
    JFX_EXPECT_ALL_VALID(ok);
    const char *bad[] = {
        "[1,]",       "[,1]",       "[1 2]",      "{\"a\"}",    "{\"a\":}",
        "{\"a\":1,}", "{,\"a\":1}", "{1:1}",      "{\"a\" 1}",  "{\"a\":1 \"b\":2}",
        "[}",         "{]",         "]",          "}",          "[",
        "{",          "{\"a\":1]",  "[1}",        "[][]",       "{}{}",
        "[]]",        "[[]",        "{\"a\"::1}", "{a:1}",      "{'a':1}",
        "[,]",        ",",          ":",          "{:1}",       "{\"a\":1,,\"b\":2}",
        "[1,,2]",     "{\"a\",1}",  "[1:2]",      "{\"a\":1}}", "\"a\" \"b\""};
    JFX_EXPECT_ALL_INVALID(bad);
}

/* ---- strings and UTF-8 -------------------------------------------------------------------- */

static void test_string_escapes(void **state)
{
    (void)state;
    const char *ok[] = {
        "\"\\\"\"",           "\"\\\\\"",           "\"\\/\"",     "\"\\b\\f\\n\\r\\t\"",
        "\"\\u0041\"",        "\"\\u00e9\\u00E9\"", "\"\\uFFFF\"", "\"\\u0000\"",
        "\"\\uD83D\\uDE00\"", "\"\\uD800\"",        "\"\\uDEAD\"", "\"\\uDC00\\uD800\"",
        "\"a\\u0041b\"",      "\"\x7f\"",           "\"/\"",       "\"'\""};
    JFX_EXPECT_ALL_VALID(ok);
    const char *bad[] = {"\"\\x\"", "\"\\u12\"", "\"\\u12G4\"", "\"\\U1234\"", "\"\\'\"",
                         "\"\\\"",  "\"\\",      "\"abc",       "\"\\u\"",     "\"\\u 123\"",
                         "\"\\a\"", "\"\\0\"",   "\"\\v\"",     "\"\\u+123\"", "\"\\uD8\"",
                         "\"\\-\"", "\"\\ \"",   "\"\\u004\"",  "abc\"",       "\""};
    JFX_EXPECT_ALL_INVALID(bad);
    /* Every raw control byte is rejected inside a string, and after a backslash. */
    for (int c = 0; c < 0x20; c++) {
        char s[4] = {'"', (char)c, '"', 0};
        jfx_expect_invalid_n(s, 3);
        char e[5] = {'"', '\\', (char)c, '"', 0};
        jfx_expect_invalid_n(e, 4);
    }
}

/* A reference decoder for one UTF-8 sequence, written from the definition (code point range,
 * shortest form, no surrogates), not from the RFC 3629 table the validator uses. Returns the
 * length of a well-formed sequence at s, or 0. */
static size_t ref_utf8(const uint8_t *s, size_t n)
{
    if (n == 0 || s[0] < 0x80)
        return 0;
    size_t len;
    uint32_t cp;
    if ((s[0] & 0xE0) == 0xC0) {
        len = 2;
        cp = s[0] & 0x1F;
    } else if ((s[0] & 0xF0) == 0xE0) {
        len = 3;
        cp = s[0] & 0x0F;
    } else if ((s[0] & 0xF8) == 0xF0) {
        len = 4;
        cp = s[0] & 0x07;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3F);
    }
    uint32_t min = len == 2 ? 0x80 : len == 3 ? 0x800 : 0x10000;
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return len;
}

static void test_utf8_boundaries(void **state)
{
    (void)state;
    const char *ok[] = {"\"\xc2\x80\"",
                        "\"\xdf\xbf\"",
                        "\"\xe0\xa0\x80\"",
                        "\"\xed\x9f\xbf\"",
                        "\"\xee\x80\x80\"",
                        "\"\xef\xbf\xbf\"",
                        "\"\xf0\x90\x80\x80\"",
                        "\"\xf4\x8f\xbf\xbf\"",
                        "\"h\xc3\xa9llo \xe2\x82\xac\"",
                        "{\"\xf0\x9f\x98\x80\":\"\xf0\x9f\x98\x80\"}"};
    JFX_EXPECT_ALL_VALID(ok);
    const char *bad[] = {"\"\xc0\x80\"",
                         "\"\xc1\xbf\"",
                         "\"\xe0\x9f\xbf\"",
                         "\"\xed\xa0\x80\"",
                         "\"\xed\xbf\xbf\"",
                         "\"\xf0\x8f\xbf\xbf\"",
                         "\"\xf4\x90\x80\x80\"",
                         "\"\xf5\x80\x80\x80\"",
                         "\"\xff\"",
                         "\"\xfe\"",
                         "\"\x80\"",
                         "\"\xbf\"",
                         "\"\xe2\x82\"",
                         "\"\xc2\"",
                         "\"\xc2\x41\"",
                         "\"\xe2\x82\x41\"",
                         "\"\xf0\x9f\x98\"",
                         "\"\xf0\x9f\x98\x41\"",
                         "\"\xc2\xc2\x80\"",
                         "\xc3\xa9",
                         "[\xc3\xa9]",
                         "\"\xf8\x88\x80\x80\x80\"",
                         "\"\xe0\x80\xaf\""};
    JFX_EXPECT_ALL_INVALID(bad);
    /* A multi-byte sequence cut by the end of the buffer (no closing quote either). */
    jfx_expect_invalid_n("\"\xe2\x82\xac\"", 3);
}

/* Every 1- and 2-byte sequence, and every 3- and 4-byte sequence over a set of interesting
 * bytes, agrees with the reference decoder. */
static void test_utf8_exhaustive(void **state)
{
    (void)state;
    char s[8];
    s[0] = '"';
    for (int a = 0x80; a < 0x100; a++) {
        for (int b = 0; b < 0x100; b++) {
            uint8_t seq[2] = {(uint8_t)a, (uint8_t)b};
            s[1] = (char)a;
            s[2] = (char)b;
            s[3] = '"';
            /* Either a 2-byte sequence, or a 1-byte one that can never be valid, or a lead
             * whose sequence the closing quote cuts short. */
            int want = ref_utf8(seq, 2) == 2;
            assert_int_equal(tc_json_valid(s, 4), want);
        }
    }
    const uint8_t interesting[] = {0x00, 0x22, 0x41, 0x7f, 0x80, 0x81, 0x8f, 0x90, 0x9f, 0xa0, 0xbf,
                                   0xc0, 0xc2, 0xdf, 0xe0, 0xed, 0xef, 0xf0, 0xf4, 0xf5, 0xff};
    const size_t ni = sizeof interesting;
    for (int a = 0xc0; a < 0x100; a++) {
        for (size_t i = 0; i < 0x100; i++) {
            for (size_t j = 0; j < ni; j++) {
                for (size_t k = 0; k <= ni; k++) {
                    uint8_t seq[4] = {(uint8_t)a, (uint8_t)i, interesting[j],
                                      k < ni ? interesting[k] : 0x80};
                    size_t n = (a >= 0xf0) ? 4 : 3;
                    if (n == 3 && k > 0)
                        break;
                    s[1] = (char)seq[0];
                    s[2] = (char)seq[1];
                    s[3] = (char)seq[2];
                    s[4] = (char)seq[3];
                    s[n + 1] = '"';
                    /* Valid iff the whole n bytes form exactly one sequence, or form valid
                     * shorter sequences followed by ASCII (e.g. C2 80 41). Decide with the
                     * reference decoder over the bytes. */
                    int want = 1;
                    size_t pos = 0;
                    while (pos < n) {
                        uint8_t c = seq[pos];
                        if (c < 0x80) {
                            if (c < 0x20 || c == '"' || c == '\\') {
                                want = 0;
                                break;
                            }
                            pos++;
                            continue;
                        }
                        size_t l = ref_utf8(seq + pos, n - pos);
                        if (!l) {
                            want = 0;
                            break;
                        }
                        pos += l;
                    }
                    if (tc_json_valid(s, n + 2) != want)
                        fail_msg("bytes %02x %02x %02x %02x (n=%zu): want %d", seq[0], seq[1],
                                 seq[2], seq[3], n, want);
                }
            }
        }
    }
}

/* The 8-byte fast path must stop at every byte that needs attention, wherever it sits. */
static void test_string_fast_path(void **state)
{
    (void)state;
    char s[48];
    for (size_t len = 1; len <= 40; len++) {
        for (size_t pos = 0; pos < len; pos++) {
            for (int b = 0; b < 256; b++) {
                s[0] = '"';
                memset(s + 1, 'a', len);
                s[1 + pos] = (char)b;
                s[1 + len] = '"';
                int want = b >= 0x20 && b < 0x80 && b != '"' && b != '\\';
                if (tc_json_valid(s, len + 2) != want)
                    fail_msg("len %zu pos %zu byte %02x: want %d", len, pos, b, want);
            }
        }
    }
}

/* ---- depth -------------------------------------------------------------------------------- */

/* Builds n nested arrays around `1` into a new buffer; *out_len gets its length. */
static char *nested_arrays(size_t n, size_t *out_len)
{
    char *s = malloc(2 * n + 1);
    assert_non_null(s);
    memset(s, '[', n);
    s[n] = '1';
    memset(s + n + 1, ']', n);
    *out_len = 2 * n + 1;
    return s;
}

static char *nested_objects(size_t n, size_t *out_len)
{
    /* {"a":{"a":...1...}} */
    char *s = malloc(5 * n + 1 + n);
    assert_non_null(s);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        memcpy(s + k, "{\"a\":", 5);
        k += 5;
    }
    s[k++] = '1';
    memset(s + k, '}', n);
    k += n;
    *out_len = k;
    return s;
}

static void test_depth_limit(void **state)
{
    (void)state;
    size_t len;
    char *s;
    s = nested_arrays(TC_JSON_MAX_DEPTH, &len);
    assert_int_equal(jfx_valid_n(s, len), 1);
    free(s);
    s = nested_arrays(TC_JSON_MAX_DEPTH + 1, &len);
    assert_int_equal(jfx_valid_n(s, len), 0);
    free(s);
    s = nested_objects(TC_JSON_MAX_DEPTH, &len);
    assert_int_equal(jfx_valid_n(s, len), 1);
    free(s);
    s = nested_objects(TC_JSON_MAX_DEPTH + 1, &len);
    assert_int_equal(jfx_valid_n(s, len), 0);
    free(s);
    /* Empty containers at the limit count too. */
    s = nested_arrays(TC_JSON_MAX_DEPTH, &len);
    memmove(s + TC_JSON_MAX_DEPTH, s + TC_JSON_MAX_DEPTH + 1, TC_JSON_MAX_DEPTH);
    assert_int_equal(jfx_valid_n(s, len - 1), 1);
    free(s);

    /* Two siblings each 511 deep inside one array: depth 512, valid; going back up and down
     * again reuses the bit stack correctly. */
    size_t l1;
    char *a = nested_arrays(TC_JSON_MAX_DEPTH - 1, &l1);
    char *doc = malloc(2 * l1 + 3);
    assert_non_null(doc);
    doc[0] = '[';
    memcpy(doc + 1, a, l1);
    doc[1 + l1] = ',';
    memcpy(doc + 2 + l1, a, l1);
    doc[2 + 2 * l1] = ']';
    assert_int_equal(jfx_valid_n(doc, 2 * l1 + 3), 1);
    free(doc);
    free(a);

    /* A million open brackets, closed or not: rejected without recursion. */
    s = nested_arrays(1000000, &len);
    assert_int_equal(tc_json_valid(s, len), 0);
    assert_int_equal(tc_json_valid(s, 1000000), 0);
    free(s);
}

/* Random mixes of objects and arrays at full depth: the closing brackets must match the bit
 * stack at every level, and one wrong closing bracket anywhere is caught. */
static void test_depth_mixed_kinds(void **state)
{
    (void)state;
    unsigned seed = 7;
    char *s = malloc(TC_JSON_MAX_DEPTH * 6 + 2);
    uint8_t kinds[TC_JSON_MAX_DEPTH];
    assert_non_null(s);
    for (int round = 0; round < 200; round++) {
        size_t depth = 1 + (size_t)(rand_r(&seed) % TC_JSON_MAX_DEPTH);
        size_t k = 0;
        for (size_t i = 0; i < depth; i++) {
            kinds[i] = (uint8_t)(rand_r(&seed) & 1);
            if (kinds[i]) {
                memcpy(s + k, "{\"k\":", 5);
                k += 5;
            } else {
                s[k++] = '[';
            }
        }
        s[k++] = '0';
        size_t close_start = k;
        for (size_t i = depth; i-- > 0;)
            s[k++] = kinds[i] ? '}' : ']';
        assert_int_equal(jfx_valid_n(s, k), 1);
        size_t flip = close_start + (size_t)rand_r(&seed) % depth;
        s[flip] = s[flip] == '}' ? ']' : '}';
        assert_int_equal(jfx_valid_n(s, k), 0);
    }
    free(s);
}

/* ---- truncation and guard pages ----------------------------------------------------------- */

static const char *const corpus[] = {
    "{\"results\":{\"A\":{\"time\":123},\"B\":[1,2,3],\"C\":\"x\\\"y\"}}",
    "[true,false,null,-1.5e-3,\"\\u00e9\\uD83D\\uDE00\",{\"\":[]}]",
    "{\"time\": 412}",
    "\"h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80 and a long tail to use the 8-byte path\"",
    "  {\"a\" : [ { \"b\" : { } } , [ ] , \"\\/\\\\\\b\\f\\n\\r\\t\" ] }  ",
    "[[[[[[[[[[\"deep\"]]]]]]]]]]",
    "{\"nums\":[0,-0,0.5,10,1e10,1E+2,2e-2,123456789]}",
};

/* Every proper prefix of a container/string document is invalid (an incomplete value). */
static void test_truncated(void **state)
{
    (void)state;
    for (size_t d = 0; d < sizeof corpus / sizeof corpus[0]; d++) {
        size_t n = strlen(corpus[d]);
        assert_int_equal(jfx_valid_n(corpus[d], n), 1);
        /* Trailing whitespace aside, the document ends at its last non-space byte. */
        size_t last = n;
        while (last > 0 && corpus[d][last - 1] == ' ')
            last--;
        for (size_t k = 0; k < last; k++)
            if (jfx_valid_n(corpus[d], k))
                fail_msg("prefix of %zu bytes of doc %zu accepted", k, d);
    }
}

/* Each prefix of each corpus document is placed to end exactly at a PROT_NONE page: any read
 * past len, even by the 8-byte string path, faults. */
static void test_guard_page(void **state)
{
    (void)state;
    long page = sysconf(_SC_PAGESIZE);
    char *map =
        mmap(NULL, (size_t)page * 2, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(map != MAP_FAILED);
    assert_int_equal(mprotect(map + page, (size_t)page, PROT_NONE), 0);
    for (size_t d = 0; d < sizeof corpus / sizeof corpus[0]; d++) {
        size_t n = strlen(corpus[d]);
        for (size_t k = 0; k <= n; k++) {
            char *at = map + page - k;
            memcpy(at, corpus[d], k);
            int v = tc_json_valid(at, k);
            assert_int_equal(v, jfx_valid_n(corpus[d], k));
            const char *val;
            size_t vl;
            int r = tc_json_object_get(at, k, "results", 7, &val, &vl);
            assert_true(r == 0 || r == TC_EMISSING || r == TC_EINVAL || r == TC_EPROTO);
            if (r == 0)
                assert_true(val >= at && val + vl <= at + k);
        }
    }
    munmap(map, (size_t)page * 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_literals_and_whitespace),
        cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_structure),
        cmocka_unit_test(test_string_escapes),
        cmocka_unit_test(test_utf8_boundaries),
        cmocka_unit_test(test_utf8_exhaustive),
        cmocka_unit_test(test_string_fast_path),
        cmocka_unit_test(test_depth_limit),
        cmocka_unit_test(test_depth_mixed_kinds),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_guard_page),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
