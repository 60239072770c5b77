/*
 * Unit tests for src/server/access_log.c: the access-log time stamp, the text format's escaping,
 * and whole lines in both formats (json lines are parsed back with jansson, field by field),
 * including the worst case: the longest target and id, every byte escaped, fit the server's
 * line buffer without growing it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "server/access_log.h"
#include "base/buf.h"
#include "tailcut/server.h"

static void test_time(void **state)
{
    (void)state;
    char t[TC__LOG_TIME_LEN + 1] = {0};
    tc__log_time(t, 0, 0);
    assert_string_equal(t, "1970-01-01T00:00:00.000Z");
    tc__log_time(t, 1764915792, 345);
    assert_string_equal(t, "2025-12-05T06:23:12.345Z");
    tc__log_time(t, 951782400 + 86399, 7); /* a leap day's last second */
    assert_string_equal(t, "2000-02-29T23:59:59.007Z");
    tc__log_time(t, 1764915792, 999);
    assert_string_equal(t, "2025-12-05T06:23:12.999Z");
}

/* Escapes s[0..len) into a fresh buffer and compares with want. */
static void expect_escape(const char *s, size_t len, const char *want)
{
    tc__buf b;
    tc__buf_init(&b, NULL, 0, 1 << 16);
    assert_int_equal(tc__log_escape_text(&b, s, len), 0);
    assert_string_equal(tc__buf_cstr(&b), want);
    tc__buf_reset(&b);
}

static void test_escape_text(void **state)
{
    (void)state;
    expect_escape("", 0, "");
    expect_escape("/api/smart?timeout=100", 22, "/api/smart?timeout=100");
    expect_escape("a\"b\\c", 5, "a\\x22b\\x5cc");
    expect_escape("x y", 3, "x\\x20y");
    expect_escape("\x01\xff\x7f\x80\t\r\n", 7, "\\x01\\xff\\x7f\\x80\\x09\\x0d\\x0a");
    expect_escape("\x00z", 2, "\\x00z");
    /* every visible byte but '"' and '\\' stays as it is */
    char visible[94];
    char want[200];
    size_t n = 0, w = 0;
    for (int ch = 0x21; ch <= 0x7E; ch++) {
        visible[n++] = (char)ch;
        if (ch == '"')
            w += (size_t)snprintf(want + w, sizeof(want) - w, "\\x22");
        else if (ch == '\\')
            w += (size_t)snprintf(want + w, sizeof(want) - w, "\\x5c");
        else
            want[w++] = (char)ch;
    }
    want[w] = '\0';
    expect_escape(visible, n, want);
}

static void fill_entry(tc__log_entry *e, const char *target, size_t target_len)
{
    memset(e, 0, sizeof(*e));
    e->time = "2025-12-05T06:23:12.345Z";
    e->client = "::1";
    e->client_len = 3;
    e->method = "GET";
    e->target = target;
    e->target_len = target_len;
    e->http_major = 1;
    e->http_minor = 1;
    e->status = 200;
    e->bytes = 187;
    e->duration_us = 412833;
    e->attempts = 3;
    e->request_id = "req-7";
    e->request_id_len = 5;
}

static char *format_line(int format, const tc__log_entry *e)
{
    static char store[TC__LOG_LINE_MAX];
    tc__buf b;
    tc__buf_init(&b, store, sizeof(store), sizeof(store) - 1);
    assert_int_equal(tc__log_format(&b, format, e), 0);
    assert_ptr_equal(b.data, store); /* never grew */
    return tc__buf_cstr(&b);
}

static void test_text_line(void **state)
{
    (void)state;
    tc__log_entry e;
    fill_entry(&e, "/api/smart?timeout=100&user=42", 30);
    assert_string_equal(format_line(TC_ACCESS_LOG_TEXT, &e),
                        "2025-12-05T06:23:12.345Z ::1 \"GET /api/smart?timeout=100&user=42 "
                        "HTTP/1.1\" 200 187 412833 3 req-7\n");
    /* what does not apply: attempts, duration, the request line, the client */
    e.attempts = -1;
    e.http_minor = 0;
    assert_string_equal(format_line(TC_ACCESS_LOG_TEXT, &e),
                        "2025-12-05T06:23:12.345Z ::1 \"GET /api/smart?timeout=100&user=42 "
                        "HTTP/1.0\" 200 187 412833 - req-7\n");
    e.method = NULL;
    e.target = NULL;
    e.client = NULL;
    e.duration_us = -1;
    e.status = 400;
    e.attempts = 0;
    assert_string_equal(format_line(TC_ACCESS_LOG_TEXT, &e),
                        "2025-12-05T06:23:12.345Z - \"- - -\" 400 187 - 0 req-7\n");
    /* a hostile target and id stay on one line of space-separated fields */
    static const char hostile[] = "/a\"b\\c d\x01\xff%20";
    fill_entry(&e, hostile, sizeof(hostile) - 1);
    e.request_id = "x\"y\\z";
    e.request_id_len = 5;
    assert_string_equal(format_line(TC_ACCESS_LOG_TEXT, &e),
                        "2025-12-05T06:23:12.345Z ::1 \"GET /a\\x22b\\x5cc\\x20d\\x01\\xff%20 "
                        "HTTP/1.1\" 200 187 412833 3 x\\x22y\\x5cz\n");
}

/* Parses a json line (one object, then exactly one '\n'). */
/* A json line parsed: its ten fields, and "replica" with access_log_replica. */
static json_t *parse_line_of(const char *line, size_t fields)
{
    size_t n = strlen(line);
    assert_true(n > 2);
    assert_int_equal(line[n - 1], '\n');
    assert_null(memchr(line, '\n', n - 1));
    json_error_t err;
    json_t *o = json_loadb(line, n - 1, 0, &err);
    if (o == NULL)
        fail_msg("not JSON: %s (%s)", line, err.text);
    assert_true(json_is_object(o));
    assert_int_equal(json_object_size(o), fields);
    return o;
}

static json_t *parse_line(const char *line)
{
    return parse_line_of(line, 10);
}

static const char *jstr(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    assert_non_null(v);
    return json_string_value(v);
}

static void test_json_line(void **state)
{
    (void)state;
    tc__log_entry e;
    fill_entry(&e, "/api/smart?timeout=100", 22);
    json_t *o = parse_line(format_line(TC_ACCESS_LOG_JSON, &e));
    assert_string_equal(jstr(o, "time"), "2025-12-05T06:23:12.345Z");
    assert_string_equal(jstr(o, "client"), "::1");
    assert_string_equal(jstr(o, "method"), "GET");
    assert_string_equal(jstr(o, "target"), "/api/smart?timeout=100");
    assert_string_equal(jstr(o, "protocol"), "HTTP/1.1");
    assert_int_equal(json_integer_value(json_object_get(o, "status")), 200);
    assert_int_equal(json_integer_value(json_object_get(o, "bytes")), 187);
    assert_int_equal(json_integer_value(json_object_get(o, "duration_us")), 412833);
    assert_int_equal(json_integer_value(json_object_get(o, "attempts")), 3);
    assert_string_equal(jstr(o, "request_id"), "req-7");
    json_decref(o);

    e.method = NULL;
    e.client = NULL;
    e.duration_us = -1;
    e.attempts = -1;
    e.request_id_len = 0;
    o = parse_line(format_line(TC_ACCESS_LOG_JSON, &e));
    static const char *const nulls[] = {"client",      "method",   "target",    "protocol",
                                        "duration_us", "attempts", "request_id"};
    for (size_t i = 0; i < sizeof(nulls) / sizeof(nulls[0]); i++)
        assert_true(json_is_null(json_object_get(o, nulls[i])));
    json_decref(o);

    /* hostile: quotes, backslash, a control byte, a byte that is not UTF-8 (U+FFFD) */
    static const char hostile[] = "/a\"b\\c d\x01\xff%20";
    fill_entry(&e, hostile, sizeof(hostile) - 1);
    const char *line = format_line(TC_ACCESS_LOG_JSON, &e);
    assert_non_null(strstr(line, "\"target\":\"/a\\\"b\\\\c d\\u0001\\ufffd%20\""));
    o = parse_line(line);
    assert_string_equal(jstr(o, "target"), "/a\"b\\c d\x01\xef\xbf\xbd%20");
    json_decref(o);
}

/* access_log_replica: json lines end with "replica" (null when none); text lines never change. */
static void test_replica_field(void **state)
{
    (void)state;
    tc__log_entry e;
    fill_entry(&e, "/api/smart", 10);
    char text[1024];
    (void)snprintf(text, sizeof(text), "%s", format_line(TC_ACCESS_LOG_TEXT, &e));
    assert_null(strstr(format_line(TC_ACCESS_LOG_JSON, &e), "replica"));
    e.with_replica = 1;
    e.replica = "http://[::1]:8000";
    assert_string_equal(format_line(TC_ACCESS_LOG_TEXT, &e), text);
    const char *line = format_line(TC_ACCESS_LOG_JSON, &e);
    assert_non_null(strstr(line, ",\"request_id\":\"req-7\",\"replica\":\"http://[::1]:8000\"}\n"));
    json_t *o = parse_line_of(line, 11);
    assert_string_equal(jstr(o, "replica"), "http://[::1]:8000");
    json_decref(o);
    e.replica = NULL;
    o = parse_line_of(format_line(TC_ACCESS_LOG_JSON, &e), 11);
    assert_true(json_is_null(json_object_get(o, "replica")));
    json_decref(o);
}

/* The longest target and id, every byte of them escaped, fit TC__LOG_LINE_MAX in both formats. */
static void test_worst_case_fits(void **state)
{
    (void)state;
    static char target[TC__LOG_TARGET_MAX];
    static char id[TC_REQUEST_ID_MAX];
    memset(target, 0x01, sizeof(target));
    memset(id, 0xff, sizeof(id));
    tc__log_entry e;
    fill_entry(&e, target, sizeof(target));
    e.request_id = id;
    e.request_id_len = sizeof(id);
    e.client = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255";
    e.client_len = strlen(e.client);
    e.method = "PROPPATCH";
    e.bytes = UINT64_MAX;
    e.duration_us = INT64_MAX;
    e.attempts = INT64_MAX;
    static char replica[TC__LOG_REPLICA_MAX + 10];
    memset(replica, 0x01, sizeof(replica) - 1);
    e.with_replica = 1;
    e.replica = replica;
    size_t n = strlen(format_line(TC_ACCESS_LOG_TEXT, &e));
    assert_true(n > 4 * sizeof(target));
    n = strlen(format_line(TC_ACCESS_LOG_JSON, &e));
    assert_true(n > 6 * sizeof(target));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_time),          cmocka_unit_test(test_escape_text),
        cmocka_unit_test(test_text_line),     cmocka_unit_test(test_json_line),
        cmocka_unit_test(test_replica_field), cmocka_unit_test(test_worst_case_fits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
