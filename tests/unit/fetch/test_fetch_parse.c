/*
 * Tests for the pure parsers behind `tailcut fetch`'s options (src/fetch/fetch_parse.c: -H and
 * --rate; the header rules themselves are src/http/forward.c's, tested in test_forward.c), and the
 * checks tc_fetch_new() makes of the request it is given (method, headers, body, rate).
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <uv.h>

#include "fetch/fetch_internal.h"
#include "http/forward_internal.h"
#include "tailcut/fetch.h"

static void header_ok(const char *arg, const char *name, const char *value)
{
    size_t nlen = 99, vlen = 99;
    const char *v = NULL, *why = NULL;
    assert_int_equal(tc__header_line_parse(arg, strlen(arg), &nlen, &v, &vlen, &why), 0);
    assert_int_equal(nlen, strlen(name));
    assert_memory_equal(arg, name, nlen);
    assert_int_equal(vlen, strlen(value));
    assert_memory_equal(v, value, vlen);
}

static void header_bad(const char *arg)
{
    size_t nlen = 0, vlen = 0;
    const char *v = NULL, *why = NULL;
    assert_int_equal(
        tc__header_line_parse(arg, arg != NULL ? strlen(arg) : 0, &nlen, &v, &vlen, &why),
        TC_EINVAL);
    assert_non_null(why);
}

static void test_header_parse(void **state)
{
    (void)state;
    header_ok("X-A: 1", "X-A", "1");
    header_ok("X-A:1", "X-A", "1");
    header_ok("X-A: \t two  words \t", "X-A", "two  words");
    header_ok("X-Empty:", "X-Empty", "");
    header_ok("X-Empty:   ", "X-Empty", "");
    header_ok("Authorization: Bearer a:b:c", "Authorization", "Bearer a:b:c"); /* first ':' */
    header_ok("!#$%&'*+-.^_`|~09az: v", "!#$%&'*+-.^_`|~09az", "v");
    header_ok("X: caf\xc3\xa9", "X", "caf\xc3\xa9"); /* obs-text is a value's business */
    header_ok("X: a\tb", "X", "a\tb");
    header_bad("");
    header_bad("no colon");
    header_bad(": value");
    header_bad("X A: v");
    header_bad("X-A : v");
    header_bad(" X-A: v");
    header_bad("X(A): v");
    header_bad("X/A: v");
    header_bad("caf\xc3\xa9: v");
    header_bad("X: a\r\nInjected: 1");
    header_bad("X: a\nb");
    header_bad("X: a\rb");
    header_bad(NULL);
}

static void rate_ok(const char *s, double want)
{
    double r = -1;
    const char *why = NULL;
    assert_int_equal(tc__fetch_rate_parse(s, &r, &why), 0);
    assert_true(fabs(r - want) < 1e-9 * want);
}

static void rate_bad(const char *s)
{
    double r = 42;
    const char *why = NULL;
    assert_int_equal(tc__fetch_rate_parse(s, &r, &why), TC_EINVAL);
    assert_non_null(why);
    assert_true(r == 42); /* untouched */
}

static void test_rate_parse(void **state)
{
    (void)state;
    rate_ok("1", 1);
    rate_ok("100", 100);
    rate_ok("0.5", 0.5);
    rate_ok("2.25", 2.25);
    rate_ok("007", 7);
    rate_ok("0.001", 0.001);
    rate_ok("1000000", 1000000);
    rate_ok("999999.999", 999999.999);
    rate_bad(NULL);
    rate_bad("");
    rate_bad("0");
    rate_bad("0.0");
    rate_bad("000");
    rate_bad("-1");
    rate_bad("+1");
    rate_bad(".5");
    rate_bad("5.");
    rate_bad("1.2.3");
    rate_bad("1e3");
    rate_bad("0x10");
    rate_bad(" 5");
    rate_bad("5 ");
    rate_bad("1,5");
    rate_bad("inf");
    rate_bad("nan");
    rate_bad("1000000.1");
    rate_bad("99999999999999999999");
}

static tc_fetch_next no_source(void *data, tc_fetch_input *in)
{
    (void)data;
    (void)in;
    return TC_FETCH_NEXT_END;
}

static void no_result(tc_fetch *f, const tc_fetch_result *r, void *data)
{
    (void)f;
    (void)r;
    (void)data;
}

static void no_done(tc_fetch *f, int status, void *data)
{
    (void)f;
    (void)status;
    (void)data;
}

static void on_closed(tc_fetch *f, void *data)
{
    (void)f;
    (*(int *)data)++;
}

/* tc_fetch_new on cfg: its return code; a fetch it made is closed again. */
static int try_new(uv_loop_t *loop, const tc_fetch_config *cfg)
{
    tc_fetch *f = NULL;
    int closed = 0;
    int rc = tc_fetch_new(&f, loop, cfg, no_source, no_result, no_done, NULL);
    if (rc == 0) {
        tc_fetch_close(f, on_closed, &closed);
        assert_int_equal(uv_run(loop, UV_RUN_DEFAULT), 0);
        assert_int_equal(closed, 1);
    } else {
        assert_null(f);
    }
    return rc;
}

static void test_fetch_new_checks_the_request(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    tc_fetch_config cfg;
    tc_fetch_config_init(&cfg);
    assert_null(cfg.method);
    assert_true(cfg.rate == 0);

    /* A request tc_fetch_new takes, and copies: the caller's buffers may go at once after. */
    char method[] = "PATCH", name[] = "X-A", value[] = "v", body[] = {'a', '\0', 'b'};
    tc_header hs[2] = {{name, value}, {"X-Empty", ""}};
    cfg.method = method;
    cfg.headers = hs;
    cfg.nheaders = 2;
    cfg.body = body;
    cfg.body_len = sizeof(body);
    cfg.rate = 0.5;
    cfg.retry_all = 1;
    cfg.insecure = 1;
    assert_int_equal(try_new(&loop, &cfg), 0);
    cfg.body_len = 0; /* an empty body is a body */
    assert_int_equal(try_new(&loop, &cfg), 0);

    tc_fetch_config bad = cfg;
    bad.method = "G T";
    assert_int_equal(try_new(&loop, &bad), TC_EINVAL);
    bad.method = "";
    assert_int_equal(try_new(&loop, &bad), TC_EINVAL);
    bad = cfg;
    tc_header crlf[1] = {{"X", "a\r\nY: b"}};
    bad.headers = crlf;
    bad.nheaders = 1;
    assert_int_equal(try_new(&loop, &bad), TC_EINVAL);
    tc_header noname[1] = {{"", "v"}};
    bad.headers = noname;
    assert_int_equal(try_new(&loop, &bad), TC_EINVAL);
    tc_header nullvalue[1] = {{"X", NULL}};
    bad.headers = nullvalue;
    assert_int_equal(try_new(&loop, &bad), TC_EINVAL);
    bad.headers = NULL; /* nheaders 1 with no array */
    assert_int_equal(try_new(&loop, &bad), TC_EINVAL);
    bad = cfg;
    bad.body = NULL;
    bad.body_len = 3;
    assert_int_equal(try_new(&loop, &bad), TC_EINVAL);
    bad = cfg;
    bad.rate = -1;
    assert_int_equal(try_new(&loop, &bad), TC_EINVAL);
    bad.rate = NAN;
    assert_int_equal(try_new(&loop, &bad), TC_EINVAL);
    bad.rate = INFINITY;
    assert_int_equal(try_new(&loop, &bad), TC_EINVAL);
    bad.rate = TC_FETCH_MAX_RATE * 2;
    assert_int_equal(try_new(&loop, &bad), TC_EINVAL);

    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header_parse),
        cmocka_unit_test(test_rate_parse),
        cmocka_unit_test(test_fetch_new_checks_the_request),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
