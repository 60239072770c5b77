/*
 * Unit tests for app/common/cli.c's option parser, the one every subcommand uses (issue 11): whole
 * names only, both value spellings, short options, the last value wins, `--` and `-`, and the
 * guarantee that adding a row to a table never changes how an existing spelling parses.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/cli.h"
#include "common/settings.h"

enum {
    O_HELP = 1,
    O_CONCURRENCY,
    O_PER_HOST,
    O_BODY,
    O_HEADER,
    O_INPUT,
    O_PROGRESS,
    O_NO_PROGRESS
};

static const cli_option table[] = {
    {"concurrency", 'c', O_CONCURRENCY, CLI_VALUE, "N", "requests at once [100]"},
    {"per-host", 0, O_PER_HOST, CLI_VALUE, "N", "per host [0]"},
    {"body", 0, O_BODY, 0, NULL, "include the body"},
    {"header", 'H', O_HEADER, CLI_VALUE | CLI_REPEATABLE, "'NAME: VALUE'", "add a header"},
    {NULL, 'i', O_INPUT, CLI_VALUE, "FILE", "read URLs from FILE"},
    {"progress", 0, O_PROGRESS, 0, NULL, "progress bar"},
    {"no-progress", 0, O_NO_PROGRESS, 0, NULL, "no progress bar"},
    {"help", 'h', O_HELP, 0, NULL, "this text"},
};
#define NTABLE (sizeof(table) / sizeof(table[0]))

/* Parses argv (NULL-terminated, argv[0] is the command) with opts and writes one line per result
 * into out: "ID=VALUE", "ID" for a flag, "arg=VALUE" for an operand, "error" (and stops). */
static void parse(const cli_option *opts, size_t nopts, const char *const *args, char *out,
                  size_t outlen)
{
    char *argv[32];
    int argc = 0;
    while (args[argc] != NULL) {
        argv[argc] = (char *)args[argc];
        argc++;
    }
    cli_parser p;
    cli_parser_init(&p, "test", opts, nopts, argc, argv);
    size_t n = 0;
    out[0] = '\0';
    for (;;) {
        const char *v;
        int id = cli_next(&p, &v);
        if (id == CLI_END)
            break;
        if (id == CLI_ERROR) {
            n += (size_t)snprintf(out + n, outlen - n, "error;");
            break;
        }
        if (id == CLI_OPERAND)
            n += (size_t)snprintf(out + n, outlen - n, "arg=%s;", v);
        else if (v != NULL)
            n += (size_t)snprintf(out + n, outlen - n, "%d=%s;", id, v);
        else
            n += (size_t)snprintf(out + n, outlen - n, "%d;", id);
        assert_true(n < outlen);
    }
}

#define EXPECT(want, ...)                                                                          \
    do {                                                                                           \
        const char *const args_[] = {"test", __VA_ARGS__, NULL};                                   \
        char got_[512];                                                                            \
        parse(table, NTABLE, args_, got_, sizeof(got_));                                           \
        assert_string_equal(got_, want);                                                           \
    } while (0)

static void test_value_spellings(void **state)
{
    EXPECT("2=5;", "--concurrency=5");
    EXPECT("2=5;", "--concurrency", "5");
    EXPECT("2=5;", "-c5");
    EXPECT("2=5;", "-c", "5");
    EXPECT("2=;", "--concurrency=");        /* an empty value is the option's to judge */
    EXPECT("2=-5;", "--concurrency", "-5"); /* a value may start with '-' */
    EXPECT("2=a=b;", "--concurrency=a=b");
    EXPECT("6=f;", "-i", "f");
    EXPECT("4;7;8;", "--body", "--progress", "--no-progress");
}

static void test_full_names_only(void **state)
{
    EXPECT("error;", "--conc=5");
    EXPECT("error;", "--conc", "5");
    EXPECT("error;", "--concurrenc=5");
    EXPECT("error;", "--concurrencyy=5");
    EXPECT("error;", "--per");
    EXPECT("error;", "--prog");
    EXPECT("error;", "--no");
    EXPECT("error;", "--Body");
    EXPECT("error;", "--i", "f"); /* a short name is not a long one */
    EXPECT("error;", "-x");
    EXPECT("", "--"); /* ends the options, and none follow */
    /* an error stops the parse: what follows is not looked at */
    EXPECT("4;error;", "--body", "--bogus", "--body");
}

static void test_values_missing_or_unwanted(void **state)
{
    EXPECT("error;", "--concurrency");
    EXPECT("error;", "-c");
    EXPECT("error;", "--body=1");
    EXPECT("error;", "--body=");
    EXPECT("error;", "-hx");
}

static void test_every_occurrence_in_order(void **state)
{
    /* the caller stores each value as it comes, so the last one wins */
    EXPECT("2=1;2=2;2=3;", "-c", "1", "--concurrency=2", "-c3");
    EXPECT("5=A: 1;5=B: 2;", "-H", "A: 1", "--header", "B: 2");
    EXPECT("7;8;", "--progress", "--no-progress");
}

static void test_operands(void **state)
{
    EXPECT("arg=a;4;arg=b;", "a", "--body", "b");
    EXPECT("arg=-;", "-");
    EXPECT("4;arg=--body;arg=-c;arg=--;", "--body", "--", "--body", "-c", "--");
    EXPECT("2=--;", "--concurrency", "--"); /* a value, not the end of options */
}

/* Adding a row never changes how an existing spelling parses, whatever its name: exact matching
 * leaves nothing to be ambiguous. */
static void test_new_row_changes_nothing(void **state)
{
    cli_option bigger[NTABLE + 3];
    memcpy(bigger, table, sizeof(table));
    bigger[NTABLE] = (cli_option){"concurrency-limit", 0, 100, CLI_VALUE, "N", "new"};
    bigger[NTABLE + 1] = (cli_option){"conc", 0, 101, 0, NULL, "new"};
    bigger[NTABLE + 2] = (cli_option){"http-engine", 0, 102, CLI_VALUE, "native|curl", "new"};
    static const char *const cases[][4] = {
        {"test", "--concurrency=5", NULL},
        {"test", "--concurrency", "7", NULL},
        {"test", "-c", "9", NULL},
        {"test", "--progress", "x", NULL},
        {"test", "--concurrency-limit=1", NULL},
        {"test", "--http-engine=curl", NULL},
    };
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        char before[256], after[256];
        parse(table, NTABLE, cases[k], before, sizeof(before));
        parse(bigger, NTABLE + 3, cases[k], after, sizeof(after));
        if (strcmp(before, "error;") != 0)
            assert_string_equal(before, after);
    }
    char got[256];
    static const char *const engine[] = {"test", "--http-engine", "native", NULL};
    parse(bigger, NTABLE + 3, engine, got, sizeof(got));
    assert_string_equal(got, "102=native;");
}

static void test_help_text(void **state)
{
    FILE *f = tmpfile();
    assert_non_null(f);
    cli_print_options(f, table, NTABLE);
    long len = ftell(f);
    assert_true(len > 0);
    char *text = calloc(1, (size_t)len + 1);
    assert_non_null(text);
    rewind(f);
    assert_int_equal(fread(text, 1, (size_t)len, f), (size_t)len);
    (void)fclose(f);
    assert_non_null(strstr(text, "  -c, --concurrency N "));
    assert_non_null(strstr(text, "      --per-host N "));
    assert_non_null(strstr(text, "  -i FILE "));
    assert_non_null(strstr(text, "add a header (repeatable)\n"));
    assert_null(strstr(text, "per host [0] (repeatable)"));
    assert_non_null(strstr(text, "last value"));
    free(text);
}

/* HOST:PORT values (--listen, --admin-listen): the host is an address, never a name, so a name
 * is a bad value at once rather than a failure to listen later. */
static void test_listen_values(void **state)
{
    static const struct {
        const char *value, *host;
        int port;
    } good[] = {
        {"127.0.0.1:8080", "127.0.0.1", 8080}, {"0.0.0.0:0", "0.0.0.0", 0},
        {"localhost:9000", "127.0.0.1", 9000}, {"[::1]:80", "::1", 80},
        {"[::]:65535", "::", 65535},           {"::1:80", "::1", 80},
        {"[fe80::1%lo]:80", "fe80::1%lo", 80},
    };
    static const char *const bad[] = {
        "foo:80",        "example.com:80", "localhost.:80", "256.1.1.1:80",    "1.2.3:80",
        "[foo]:80",      "[127.0.0.1]:80", "[localhost]:0", "127.0.0.1",       ":80",
        "[]:80",         "127.0.0.1:",     "127.0.0.1:-1",  "127.0.0.1:65536", "127.0.0.1: 80",
        " 127.0.0.1:80",
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        settings_addr a = {"", -1, 0};
        settings_error e;
        assert_int_equal(settings_parse_addr(good[i].value, &a, &e), 0);
        assert_string_equal(a.host, good[i].host);
        assert_int_equal(a.port, good[i].port);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        settings_addr a = {"", -1, 0};
        settings_error e;
        if (settings_parse_addr(bad[i], &a, &e) != -1)
            fail_msg("'%s' was taken as %s port %d", bad[i], a.host, a.port);
        assert_int_equal(a.port, -1);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_value_spellings),
        cmocka_unit_test(test_full_names_only),
        cmocka_unit_test(test_values_missing_or_unwanted),
        cmocka_unit_test(test_every_occurrence_in_order),
        cmocka_unit_test(test_operands),
        cmocka_unit_test(test_new_row_changes_nothing),
        cmocka_unit_test(test_help_text),
        cmocka_unit_test(test_listen_values),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
