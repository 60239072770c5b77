/*
 * Unit tests for proxy_internal.h: the transparent proxy's rules (CONTRACT section 8): the
 * upstream URL (replica path, strip_prefix, query byte for byte), dot segments, which request
 * headers go on and which tailcut adds, X-Tailcut-Timeout-Ms, which requests are hedged, and
 * which response headers reach the client.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cmocka.h>

#include "http/proxy_internal.h"
#include "tailcut/error.h"

#define F(n, v)                                                                                    \
    {                                                                                              \
        n, sizeof(n) - 1, v, sizeof(v) - 1                                                         \
    }

/* ---- the upstream URL ---------------------------------------------------------------------- */

static void check_url(const char *replica, const char *target, const char *strip, const char *want)
{
    tc__buf b;
    tc__buf_init(&b, NULL, 0, 1 << 16);
    int err = tc__proxy_url(&b, replica, target, strlen(target), strip, strip ? strlen(strip) : 0);
    assert_int_equal(err, 0);
    assert_string_equal(tc__buf_cstr(&b), want);
    tc__buf_reset(&b);
}

static void check_url_error(const char *replica, const char *target, const char *strip, int want)
{
    tc__buf b;
    tc__buf_init(&b, NULL, 0, 1 << 16);
    int err = tc__proxy_url(&b, replica, target, strlen(target), strip, strip ? strlen(strip) : 0);
    assert_int_equal(err, want);
    tc__buf_reset(&b);
}

static void test_url_paths(void **state)
{
    (void)state;
    /* the replica's path without its trailing '/', then the request's path */
    check_url("http://h:81/base/", "/v1/items/42", NULL, "http://h:81/base/v1/items/42");
    check_url("http://h:81/base", "/v1/items/42", NULL, "http://h:81/base/v1/items/42");
    check_url("http://h:81", "/v1", NULL, "http://h:81/v1");
    check_url("http://h:81/", "/", NULL, "http://h:81/");
    check_url("https://[::1]:8443/b", "/x/", NULL, "https://[::1]:8443/b/x/");
    /* the replica's query and fragment are not used */
    check_url("http://h/b?key=1#f", "/x", NULL, "http://h/b/x");
    check_url("http://h?key=1", "/x", NULL, "http://h/x");
}

static void test_url_query_bytes(void **state)
{
    (void)state;
    /* byte for byte, escapes and odd bytes as received; an empty query keeps its '?' */
    check_url("http://h/b", "/x?a=1&b=%2F&&c=%zz+d", NULL, "http://h/b/x?a=1&b=%2F&&c=%zz+d");
    check_url("http://h/b", "/x?", NULL, "http://h/b/x?");
    check_url("http://h/b", "/x?timeout=5", NULL, "http://h/b/x?timeout=5");
    /* no fragment ever goes upstream */
    check_url("http://h/b", "/x?q=1#frag", NULL, "http://h/b/x?q=1");
    check_url("http://h/b", "/x#frag?no", NULL, "http://h/b/x");
}

static void test_url_strip_prefix(void **state)
{
    (void)state;
    check_url("http://h/b", "/p/x", "/p", "http://h/b/x");
    check_url("http://h/b", "/p", "/p", "http://h/b/");
    check_url("http://h/b", "/p/", "/p", "http://h/b/");
    check_url("http://h/b", "/p?q=1", "/p", "http://h/b/?q=1");
    check_url("http://h", "/p/x/y?z", "/p", "http://h/x/y?z");
    /* the target must start with the prefix, as the route matched */
    check_url_error("http://h", "/q/x", "/p", TC_EINVAL);
    check_url_error("http://h", "/px", "/p", TC_EINVAL);
}

static void test_url_errors(void **state)
{
    (void)state;
    check_url_error("h/b", "/x", NULL, TC_EURL);
    check_url_error("http://h/b", "x", NULL, TC_EINVAL);
    check_url_error("http://h/b", "", NULL, TC_EINVAL);
    check_url_error("http://h/b", "/a/../b", NULL, TC_EINVAL);
    /* past the buffer's max: TC_ETOOLARGE */
    tc__buf b;
    tc__buf_init(&b, NULL, 0, 12);
    assert_int_equal(tc__proxy_url(&b, "http://h/base", "/xyz", 4, NULL, 0), TC_ETOOLARGE);
    tc__buf_reset(&b);
}

static void test_dot_segments(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "/.",     "/..",    "/./x",    "/../x",   "/a/./b",  "/a/../b",   "/a/..",
        "/%2e/x", "/%2E/x", "/%2e%2e", "/.%2e/x", "/%2E./x", "/a/%2e%2E",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(tc__proxy_path_ok(bad[i], strlen(bad[i])), 0);
    static const char *const good[] = {
        "/",     "/a",        "/a/b/",        "/.well-known/x", "/a/...",
        "/a/.b", "/a/b.",     "/%2e%2e%2e",   "/%2ex",          "/a%2e/b",
        "//x",   "/%2f..%2f", "/%252e%252e/",
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        assert_int_equal(tc__proxy_path_ok(good[i], strlen(good[i])), 1);
    /* a dot segment before the query is caught when the whole target is given */
    check_url_error("http://h", "/a/..?q", NULL, TC_EINVAL);
    check_url_error("http://h", "/a/%2e?q", NULL, TC_EINVAL);
    /* dots after '?' are the query's business */
    check_url("http://h", "/a?/../x", NULL, "http://h/a?/../x");
}

/* ---- request headers ----------------------------------------------------------------------- */

/* How many fields of out are named name (case-insensitive). */
static int count_named(const tc__field *out, size_t n, const char *name)
{
    int c = 0;
    for (size_t i = 0; i < n; i++)
        if (out[i].name_len == strlen(name) && strncasecmp(out[i].name, name, out[i].name_len) == 0)
            c++;
    return c;
}

/* The value of the first field of out named name, in buf; NULL when there is none. */
static const char *value_of(const tc__field *out, size_t n, const char *name, char *buf, size_t cap)
{
    for (size_t i = 0; i < n; i++)
        if (out[i].name_len == strlen(name) &&
            strncasecmp(out[i].name, name, out[i].name_len) == 0) {
            (void)snprintf(buf, cap, "%.*s", (int)out[i].value_len, out[i].value);
            return buf;
        }
    return NULL;
}

static void test_request_headers_hop_by_hop(void **state)
{
    (void)state;
    static const tc__field client[] = {
        F("Host", "api.example:8080"),
        F("Accept", "*/*"),
        F("Connection", "keep-alive, X-Secret, x-other"),
        F("Keep-Alive", "timeout=5"),
        F("TE", "trailers"),
        F("Trailer", "X-T"),
        F("Transfer-Encoding", "chunked"),
        F("Upgrade", "h2c"),
        F("Proxy-Authorization", "Basic x"),
        F("proxy-connection", "keep-alive"),
        F("X-Secret", "s"),
        F("X-Other", "o"),
        F("Content-Length", "12"),
        F("Expect", "100-continue"),
        F("Authorization", "Bearer t"),
        F("X-Custom", "a"),
        F("X-Custom", "b"),
    };
    tc__proxy_request_in in = {.fields = client,
                               .nfields = sizeof(client) / sizeof(client[0]),
                               .client_addr = "10.0.0.7",
                               .client_addr_len = 8,
                               .request_id = "rid-1",
                               .request_id_len = 5,
                               .proto = "http"};
    tc__field out[32];
    size_t n = 0;
    tc__buf xff;
    tc__buf_init(&xff, NULL, 0, 4096);
    assert_int_equal(tc__proxy_request_headers(&in, &xff, out, 32, &n), 0);
    /* passed on, in order: Accept, Authorization, X-Custom twice; then tailcut's */
    assert_int_equal(n, 4 + 4);
    assert_string_equal(out[0].name, "Accept");
    assert_string_equal(out[1].name, "Authorization");
    assert_memory_equal(out[2].value, "a", 1);
    assert_memory_equal(out[3].value, "b", 1);
    static const char *const gone[] = {"Host",
                                       "Connection",
                                       "Keep-Alive",
                                       "TE",
                                       "Trailer",
                                       "Transfer-Encoding",
                                       "Upgrade",
                                       "X-Secret",
                                       "X-Other",
                                       "Content-Length",
                                       "Expect",
                                       "Proxy-Authorization",
                                       "proxy-connection"};
    for (size_t i = 0; i < sizeof(gone) / sizeof(gone[0]); i++)
        assert_int_equal(count_named(out, n, gone[i]), 0);
    char buf[128];
    assert_string_equal(value_of(out, n, "X-Forwarded-For", buf, sizeof(buf)), "10.0.0.7");
    assert_string_equal(value_of(out, n, "X-Forwarded-Proto", buf, sizeof(buf)), "http");
    assert_string_equal(value_of(out, n, "X-Forwarded-Host", buf, sizeof(buf)), "api.example:8080");
    assert_string_equal(value_of(out, n, "X-Request-Id", buf, sizeof(buf)), "rid-1");
    tc__buf_reset(&xff);
}

static void test_request_headers_replaced(void **state)
{
    (void)state;
    static const tc__field client[] = {
        F("X-Forwarded-For", "1.1.1.1"),
        F("X-Forwarded-Proto", "https"),
        F("X-Forwarded-Host", "evil"),
        F("X-Forwarded-For", "2.2.2.2, 3.3.3.3"),
        F("X-Tailcut-Attempt", "9"),
        F("x-tailcut-timeout-ms", "99999"),
        F("X-Tailcut-Anything", "z"),
        F("X-Request-Id", "client-id"),
        F("X-Env", "prod"),
        F("Host", "front"),
        F("X-Kept", "k"),
    };
    static const tc__field added[] = {F("X-Env", "test"), F("Authorization", "Bearer route")};
    tc__proxy_request_in in = {.fields = client,
                               .nfields = sizeof(client) / sizeof(client[0]),
                               .added = added,
                               .nadded = 2,
                               .client_addr = "::1",
                               .client_addr_len = 3,
                               .request_id = "client-id",
                               .request_id_len = 9,
                               .proto = "http",
                               .preserve_host = 1};
    tc__field out[32];
    size_t n = 0;
    tc__buf xff;
    tc__buf_init(&xff, NULL, 0, 4096);
    assert_int_equal(tc__proxy_request_headers(&in, &xff, out, 32, &n), 0);
    char buf[128];
    /* appended to what the client sent, every line of it in order */
    assert_string_equal(value_of(out, n, "X-Forwarded-For", buf, sizeof(buf)),
                        "1.1.1.1, 2.2.2.2, 3.3.3.3, ::1");
    assert_int_equal(count_named(out, n, "X-Forwarded-For"), 1);
    assert_string_equal(value_of(out, n, "X-Forwarded-Proto", buf, sizeof(buf)), "http");
    assert_int_equal(count_named(out, n, "X-Forwarded-Proto"), 1);
    /* preserve_host: the client's Host goes on, and is X-Forwarded-Host */
    assert_string_equal(value_of(out, n, "Host", buf, sizeof(buf)), "front");
    assert_string_equal(value_of(out, n, "X-Forwarded-Host", buf, sizeof(buf)), "front");
    assert_int_equal(count_named(out, n, "X-Forwarded-Host"), 1);
    /* the client's X-Tailcut-* never; the route's X-Env wins over the client's */
    assert_int_equal(count_named(out, n, "X-Tailcut-Attempt"), 0);
    assert_int_equal(count_named(out, n, "X-Tailcut-Timeout-Ms"), 0);
    assert_int_equal(count_named(out, n, "X-Tailcut-Anything"), 0);
    assert_int_equal(count_named(out, n, "X-Env"), 1);
    assert_string_equal(value_of(out, n, "X-Env", buf, sizeof(buf)), "test");
    assert_string_equal(value_of(out, n, "Authorization", buf, sizeof(buf)), "Bearer route");
    assert_int_equal(count_named(out, n, "X-Request-Id"), 1);
    assert_string_equal(value_of(out, n, "X-Kept", buf, sizeof(buf)), "k");
    /* the route's headers come last, in their order */
    assert_string_equal(out[n - 2].name, "X-Env");
    assert_string_equal(out[n - 1].name, "Authorization");
    tc__buf_reset(&xff);
}

static void test_request_headers_limits(void **state)
{
    (void)state;
    static const tc__field client[] = {F("A", "1"), F("B", "2"), F("C", "3")};
    tc__proxy_request_in in = {
        .fields = client, .nfields = 3, .proto = "http", .request_id = "", .client_addr = ""};
    tc__field out[8];
    size_t n = 99;
    tc__buf xff;
    tc__buf_init(&xff, NULL, 0, 64);
    /* no address, no Host, no id: only X-Forwarded-Proto is added */
    assert_int_equal(tc__proxy_request_headers(&in, &xff, out, 8, &n), 0);
    assert_int_equal(n, 4);
    assert_int_equal(count_named(out, n, "X-Forwarded-For"), 0);
    assert_int_equal(count_named(out, n, "X-Forwarded-Host"), 0);
    /* too few slots */
    assert_int_equal(tc__proxy_request_headers(&in, &xff, out, 3, &n), TC_ETOOLARGE);
    assert_int_equal(n, 0);
    /* an X-Forwarded-For past its buffer's max */
    static const tc__field long_xff[] = {
        F("X-Forwarded-For", "1111111111, 2222222222, 3333333333, 4444444444, 5555555555, 66666")};
    in.fields = long_xff;
    in.nfields = 1;
    in.client_addr = "127.0.0.1";
    in.client_addr_len = 9;
    assert_int_equal(tc__proxy_request_headers(&in, &xff, out, 8, &n), TC_ETOOLARGE);
    tc__buf_reset(&xff);
}

static void test_timeout_header(void **state)
{
    (void)state;
    uint64_t ms = 0;
    const char *why = NULL;
    assert_int_equal(tc__proxy_timeout_header("250", 3, 60000, &ms, &why), 0);
    assert_int_equal(ms, 250);
    assert_int_equal(tc__proxy_timeout_header("60000", 5, 60000, &ms, &why), 0);
    assert_int_equal(ms, 60000);
    static const char *const bad[] = {"0",     "-5",   "1.5", "abc",
                                      "",      "10ms", " 10", "+10",
                                      "60001", "%31",  "1e3", "99999999999999999999999"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        why = NULL;
        assert_int_equal(tc__proxy_timeout_header(bad[i], strlen(bad[i]), 60000, &ms, &why),
                         TC_EINVAL);
        assert_non_null(why);
        assert_non_null(strstr(why, "X-Tailcut-Timeout-Ms"));
    }
    assert_non_null(strstr((tc__proxy_timeout_header("0", 1, 9, &ms, &why), why), "range"));
    assert_non_null(strstr((tc__proxy_timeout_header("x", 1, 9, &ms, &why), why), "whole"));
}

static void test_hedge_rule(void **state)
{
    (void)state;
    static const char *const methods[] = {"GET", "HEAD", "OPTIONS"};
    assert_int_equal(tc__proxy_hedge_rule("GET", 3, methods, 3, 0, 0, 0, 65536), TC__PROXY_HEDGED);
    assert_int_equal(tc__proxy_hedge_rule("OPTIONS", 7, methods, 3, 0, 0, 0, 65536),
                     TC__PROXY_HEDGED);
    assert_int_equal(tc__proxy_hedge_rule("POST", 4, methods, 3, 0, 0, 10, 65536),
                     TC__PROXY_UNHEDGED_METHOD);
    /* methods are case-sensitive tokens */
    assert_int_equal(tc__proxy_hedge_rule("get", 3, methods, 3, 0, 0, 0, 65536),
                     TC__PROXY_UNHEDGED_METHOD);
    /* an Idempotency-Key counts only with the switch */
    assert_int_equal(tc__proxy_hedge_rule("POST", 4, methods, 3, 1, 0, 10, 65536),
                     TC__PROXY_UNHEDGED_METHOD);
    assert_int_equal(tc__proxy_hedge_rule("POST", 4, methods, 3, 1, 1, 10, 65536),
                     TC__PROXY_HEDGED);
    assert_int_equal(tc__proxy_hedge_rule("GET", 3, methods, 3, 0, 1, 0, 65536), TC__PROXY_HEDGED);
    /* the body: at the limit is fine, one byte over is not; unknown (chunked) is decided later */
    assert_int_equal(tc__proxy_hedge_rule("POST", 4, methods, 3, 1, 1, 65536, 65536),
                     TC__PROXY_HEDGED);
    assert_int_equal(tc__proxy_hedge_rule("POST", 4, methods, 3, 1, 1, 65537, 65536),
                     TC__PROXY_UNHEDGED_BODY_TOO_LARGE);
    assert_int_equal(tc__proxy_hedge_rule("POST", 4, methods, 3, 1, 1, -1, 65536),
                     TC__PROXY_HEDGED);
    /* the method first */
    assert_int_equal(tc__proxy_hedge_rule("PUT", 3, methods, 3, 0, 0, 1 << 20, 65536),
                     TC__PROXY_UNHEDGED_METHOD);
    /* no method list: only keys */
    assert_int_equal(tc__proxy_hedge_rule("GET", 3, NULL, 0, 0, 0, 0, 65536),
                     TC__PROXY_UNHEDGED_METHOD);
    assert_string_equal(tc__proxy_unhedged_name(TC__PROXY_UNHEDGED_METHOD), "method");
    assert_string_equal(tc__proxy_unhedged_name(TC__PROXY_UNHEDGED_BODY_TOO_LARGE),
                        "body_too_large");
    assert_string_equal(tc__proxy_unhedged_name(TC__PROXY_HEDGED), "");
}

static void test_response_headers(void **state)
{
    (void)state;
    static const tc__field head[] = {
        F("Content-Type", "application/json"),
        F("Content-Length", "12"),
        F("Transfer-Encoding", "chunked"),
        F("Connection", "close, X-Hop"),
        F("Keep-Alive", "timeout=5"),
        F("X-Hop", "1"),
        F("Date", "Mon"),
        F("X-Request-Id", "up"),
        F("X-Tailcut-Attempts", "7"),
        F("Proxy-Authenticate", "Basic"),
        F("Set-Cookie", "a=1"),
        F("Cache-Control", "no-store"),
        F("ETag", "\"x\""),
    };
    size_t n = sizeof(head) / sizeof(head[0]);
    int kept[sizeof(head) / sizeof(head[0])];
    for (size_t i = 0; i < n; i++)
        kept[i] = !tc__proxy_response_drops(head, n, head[i].name, head[i].name_len);
    static const int want[] = {1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1};
    assert_memory_equal(kept, want, sizeof(want));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_url_paths),
        cmocka_unit_test(test_url_query_bytes),
        cmocka_unit_test(test_url_strip_prefix),
        cmocka_unit_test(test_url_errors),
        cmocka_unit_test(test_dot_segments),
        cmocka_unit_test(test_request_headers_hop_by_hop),
        cmocka_unit_test(test_request_headers_replaced),
        cmocka_unit_test(test_request_headers_limits),
        cmocka_unit_test(test_timeout_header),
        cmocka_unit_test(test_hedge_rule),
        cmocka_unit_test(test_response_headers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
