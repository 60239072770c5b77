/*
 * Unit tests for forward_internal.h: the client's query merged into the upstream URL
 * (tc__forward_url), the header rules (names, values, the never-forwarded list, Connection
 * lists) and URL redaction (tc__url_redact).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/alloc.h"
#include "http/forward_internal.h"
#include "tailcut/error.h"

/* ---- tc__forward_url ------------------------------------------------------------------------ */

/* Merges query into upstream and checks the URL and the count forwarded. */
static void check_merge(const char *upstream, const char *query, const char *want, long count)
{
    tc__buf b;
    tc__buf_init(&b, NULL, 0, 1 << 20);
    long r = tc__forward_url(&b, upstream, query, strlen(query));
    assert_int_equal(r, count);
    assert_string_equal(tc__buf_cstr(&b), want);
    tc__buf_reset(&b);
}

static void test_merge_order_and_timeout(void **state)
{
    (void)state;
    check_merge("http://h/p", "b=2&a=1&timeout=50&c", "http://h/p?b=2&a=1&c", 3);
    /* timeout however spelled; repeated names all go, in order */
    check_merge("http://h/p", "%74imeout=5&timeou%74=6&x=1&x=2", "http://h/p?x=1&x=2", 2);
    /* empty pairs are skipped, an empty value kept as sent */
    check_merge("http://h/p", "&&a=&&b&", "http://h/p?a=&b", 2);
    /* nothing to add: the URL as it is */
    check_merge("http://h/p?k=v", "", "http://h/p?k=v", 0);
    check_merge("http://h/p?k=v", "timeout=9", "http://h/p?k=v", 0);
}

static void test_merge_configured_wins(void **state)
{
    (void)state;
    check_merge("http://h/p?key=s&fixed=1", "fixed=evil&a=1&key=x", "http://h/p?key=s&fixed=1&a=1",
                1);
    /* compared after decoding, both sides ('+' is a space) */
    check_merge("http://h/p?my%20key=s", "my+key=x&%6Dy%20key=y&my_key=z",
                "http://h/p?my%20key=s&my_key=z", 1);
    /* a bad escape is compared byte for byte */
    check_merge("http://h/p?a%zz=1", "a%zz=2&a%zy=3", "http://h/p?a%zz=1&a%zy=3", 1);
    /* separators: a query that ends in '&' or is empty gets none */
    check_merge("http://h/p?k=v&", "a=1", "http://h/p?k=v&a=1", 1);
    check_merge("http://h/p?", "a=1", "http://h/p?a=1", 1);
    check_merge("http://h", "a=1", "http://h?a=1", 1);
}

static void test_merge_hostile(void **state)
{
    (void)state;
    /* escapes stay as sent; '/', '?', '@', ':' are query bytes */
    check_merge("http://h/p", "u=http://evil/x?y@z&crlf=%0D%0AHost:%20e&h=%23f",
                "http://h/p?u=http://evil/x?y@z&crlf=%0D%0AHost:%20e&h=%23f", 3);
    /* bytes that may not stand in a query are escaped: the fragment, space, controls, 8-bit */
    check_merge("http://h/p", "a=#x y\r\n\"<>\\^`{|}\x7f\xff",
                "http://h/p?a=%23x%20y%0D%0A%22%3C%3E%5C%5E%60%7B%7C%7D%7F%FF", 1);
    /* the upstream's fragment stays last, the query goes before it */
    check_merge("http://h/p?k=v#frag", "a=1", "http://h/p?k=v&a=1#frag", 1);
    check_merge("http://h/p#f?x=1", "x=2", "http://h/p?x=2#f?x=1", 1);
    /* an encoded NUL stays encoded; a raw one is escaped */
    const char nul[] = "a=%00&b=\0c";
    tc__buf b;
    tc__buf_init(&b, NULL, 0, 1024);
    assert_int_equal(tc__forward_url(&b, "http://h/", nul, sizeof(nul) - 1), 2);
    assert_string_equal(tc__buf_cstr(&b), "http://h/?a=%00&b=%00c");
    tc__buf_reset(&b);
}

static void test_merge_host_never_changes(void **state)
{
    (void)state;
    static const char *const queries[] = {
        "x=@evil.com", "@evil.com/", "/../../etc", "#/evil", "?@evil:80/", "%2F%2Fevil", "\\\\evil",
    };
    for (size_t i = 0; i < sizeof(queries) / sizeof(queries[0]); i++) {
        tc__buf b;
        tc__buf_init(&b, NULL, 0, 1024);
        assert_true(tc__forward_url(&b, "http://up:8/api/work", queries[i], strlen(queries[i])) >=
                    0);
        const char *u = tc__buf_cstr(&b);
        assert_memory_equal(u, "http://up:8/api/work?", 21);
        assert_null(strchr(u, '#'));
        tc__buf_reset(&b);
    }
}

static void test_merge_limits(void **state)
{
    (void)state;
    /* past the buffer's max: TC_ETOOLARGE, never a write beyond it */
    tc__buf b;
    tc__buf_init(&b, NULL, 0, 20);
    assert_int_equal(tc__forward_url(&b, "http://h/p", "aaaa=bbbbbbbbbbbbbbbbb", 22), TC_ETOOLARGE);
    tc__buf_reset(&b);
    /* an 8 KiB query of 4 KiB pairs */
    size_t n = 8 * 1024;
    char *q = malloc(n);
    assert_non_null(q);
    for (size_t i = 0; i < n; i += 2) {
        q[i] = 'a';
        q[i + 1] = '&';
    }
    tc__buf_init(&b, NULL, 0, 3 * n + 64);
    assert_int_equal(tc__forward_url(&b, "http://h/?a=1", q, n), 0); /* every pair is "a" */
    tc__buf_reset(&b);
    q[0] = 'b';
    assert_int_equal(tc__forward_url(&b, "http://h/?a=1", q, n), 1);
    assert_string_equal(tc__buf_cstr(&b), "http://h/?a=1&b");
    tc__buf_reset(&b);
    free(q);
    /* a failed allocation is TC_ENOMEM */
    tc__buf_init(&b, NULL, 0, 1024);
    tc__alloc_fail_nth(1);
    assert_int_equal(tc__forward_url(&b, "http://h/p", "a=1", 3), TC_ENOMEM);
    tc__alloc_fail_nth(0);
    tc__buf_reset(&b);
}

/* ---- headers -------------------------------------------------------------------------------- */

#define NAME_OK(s) tc__header_name_ok((s), strlen(s))
#define NEVER(s) tc__header_never_forwarded((s), strlen(s))

static void test_header_names_and_values(void **state)
{
    (void)state;
    assert_true(NAME_OK("X-Request-Id"));
    assert_true(NAME_OK("a!#$%&'*+-.^_`|~9"));
    assert_false(NAME_OK(""));
    assert_false(NAME_OK("Bad Name"));
    assert_false(NAME_OK("X:Y"));
    assert_false(NAME_OK("X\r\nY"));
    assert_false(NAME_OK("\xc3\xa9"));
    assert_false(tc__header_name_ok("a\0b", 3));
    assert_true(tc__header_value_ok("", 0));
    assert_true(tc__header_value_ok("Bearer x y\t\x80", 12));
    assert_false(tc__header_value_ok("a\rb", 3));
    assert_false(tc__header_value_ok("a\nb", 3));
    assert_false(tc__header_value_ok("a\0b", 3));
}

static void test_never_forwarded(void **state)
{
    (void)state;
    static const char *const never[] = {
        "Host",
        "host",
        "Content-Length",
        "Transfer-Encoding",
        "connection",
        "Keep-Alive",
        "TE",
        "Trailer",
        "Upgrade",
        "Proxy-Authorization",
        "proxy-connection",
        "X-Tailcut-Attempt",
    };
    for (size_t i = 0; i < sizeof(never) / sizeof(never[0]); i++)
        assert_true(NEVER(never[i]));
    static const char *const fine[] = {
        "Authorization", "X-Request-Id", "Accept", "Hosts", "TEx", "Proxy", "X-Tailcut-Attempts",
    };
    for (size_t i = 0; i < sizeof(fine) / sizeof(fine[0]); i++)
        assert_false(NEVER(fine[i]));
}

static void test_connection_list(void **state)
{
    (void)state;
    const char *v = "close ,\tX-Secret, ,keep-alive";
    assert_true(tc__header_list_has(v, strlen(v), "x-secret", 8));
    assert_true(tc__header_list_has(v, strlen(v), "Keep-Alive", 10));
    assert_true(tc__header_list_has(v, strlen(v), "close", 5));
    assert_false(tc__header_list_has(v, strlen(v), "X-Secre", 7));
    assert_false(tc__header_list_has(v, strlen(v), "", 0));
    assert_false(tc__header_list_has("", 0, "close", 5));
}

/* ---- redaction ------------------------------------------------------------------------------ */

static void check_redact(const char *url, const char *want)
{
    char out[256];
    assert_ptr_equal(tc__url_redact(url, out, sizeof(out)), out);
    assert_string_equal(out, want);
    assert_true(strlen(out) < TC__URL_REDACT_CAP(url));
}

static void test_redact(void **state)
{
    (void)state;
    check_redact("https://user:pass@api.example:8443/v1/x?key=secret&b=2",
                 "https://***@api.example:8443/v1/x?***");
    check_redact("http://u:p@ss@h/p", "http://***@h/p");
    check_redact("http://h/p?token=s#frag", "http://h/p?***");
    check_redact("http://h/p#frag", "http://h/p");
    check_redact("http://tok@h", "http://***@h");
    check_redact("http://h:80", "http://h:80");
    check_redact("http://h/a@b?c", "http://h/a@b?***"); /* '@' in the path is no userinfo */
    check_redact("http://h?u@x", "http://h?***");
    check_redact("user:pass@host/x?k=v", "***@host/x?***"); /* no scheme: redacted anyway */
    /* a "://" in the query is not the scheme's: the userinfo before it still goes */
    check_redact("u:pw@host/p?next=http://x", "***@host/p?***");
    check_redact("u:pw@host?next=http://x", "***@host?***");
    check_redact("http://u:pw@host/p?next=http://v:w@x", "http://***@host/p?***");
    check_redact("", "");
}

static void test_redact_cut(void **state)
{
    (void)state;
    char out[12];
    memset(out, 'Z', sizeof(out));
    tc__url_redact("http://user:pass@host/long/path?x", out, sizeof(out));
    assert_string_equal(out, "http://***@");
    char one[1] = {'Z'};
    tc__url_redact("http://u:p@h", one, 1);
    assert_int_equal(one[0], '\0');
    tc__url_redact("http://u:p@h", one, 0); /* no room at all: nothing written */
    assert_int_equal(one[0], '\0');
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_merge_order_and_timeout),
        cmocka_unit_test(test_merge_configured_wins),
        cmocka_unit_test(test_merge_hostile),
        cmocka_unit_test(test_merge_host_never_changes),
        cmocka_unit_test(test_merge_limits),
        cmocka_unit_test(test_header_names_and_values),
        cmocka_unit_test(test_never_forwarded),
        cmocka_unit_test(test_connection_list),
        cmocka_unit_test(test_redact),
        cmocka_unit_test(test_redact_cut),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
