/*
 * Unit tests for app/common/settings.c, the one table of settings (issue 21): every default
 * parses and is in range, the value parsers give each error message word for word (and a reason a
 * config file can use on its own), a repeatable setting takes each value, a single-valued one
 * takes the last, and --help and the man page show the table's defaults.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/settings.h"

/* ---- a table of every type --------------------------------------------------------------------
 */

typedef struct names {
    char *v[8];
    size_t n;
} names;

typedef struct test_global {
    uint64_t count;
    unsigned small;
    int engine;
    char *text;
    char *url;
    settings_addr addr;
    int on;
    uint64_t cpus; /* a default that is not a value */
} test_global;

typedef struct test_route {
    settings_delay delay;
    uint64_t budget_e6;
    names tags;
} test_route;

static int check_not_x(const setting *s, const char *value, void *field, settings_error *e)
{
    (void)s;
    (void)field;
    return strcmp(value, "x") == 0 ? settings_invalid(e, value, "x is not allowed") : 0;
}

static int add_tag(const setting *s, const char *value, void *field, settings_error *e)
{
    names *tags = field;
    char flag[64];
    if (tags->n == 8)
        return settings_failed(e, "too many tags", "too many %s tags (at most 8)",
                               settings_flag(s, flag, sizeof(flag)));
    if ((tags->v[tags->n] = strdup(value)) == NULL)
        return settings_failed(e, "out of memory", "out of memory");
    tags->n++;
    return 0;
}

static void free_tags(void *field)
{
    names *tags = field;
    for (size_t i = 0; i < tags->n; i++)
        free(tags->v[i]);
    tags->n = 0;
}

static const settings_word engines[] = {{"native", 1}, {"curl", 2}, {"other", 3}, {NULL, 0}};

#define G(m) .scope = SETTINGS_GLOBAL, SETTINGS_FIELD(test_global, m)
#define R(m) .scope = SETTINGS_ROUTE, SETTINGS_FIELD(test_route, m)

static const setting test_rows[] = {
    {.name = "count",
     .letter = 'c',
     .key = "count",
     .type = SETTINGS_UINT,
     .min = 1,
     .max = 500,
     .def = "300",
     .placeholder = "N",
     .help = "how many",
     G(count)},
    {.name = "small",
     .key = "small",
     .type = SETTINGS_UINT,
     .min = 0,
     .max = 15,
     .def = "2",
     .placeholder = "N",
     .help = "a small one\n",
     G(small)},
    {.name = "engine",
     .key = "engine",
     .type = SETTINGS_WORD,
     .words = engines,
     .def = "native",
     .placeholder = "native|curl|other",
     .help = "which engine",
     G(engine)},
    {.name = "text",
     .type = SETTINGS_TEXT,
     .check = check_not_x,
     .def = "-",
     .placeholder = "TEXT",
     .help = "some text",
     G(text)},
    {.name = "url",
     .key = "urls",
     .type = SETTINGS_URL,
     .def = "built in",
     .flags = SETTINGS_DEFAULT_TEXT,
     .placeholder = "URL",
     .help = "where to",
     G(url)},
    {.name = "addr",
     .type = SETTINGS_ADDR,
     .def = "127.0.0.1:8080",
     .placeholder = "HOST:PORT",
     .help = "where to listen",
     .man = "Where to listen; see\n.BR --url .",
     G(addr)},
    {.name = "on", .type = SETTINGS_SWITCH, .min = 7, .help = "switch it on", G(on)},
    {.name = "cpus",
     .type = SETTINGS_UINT,
     .min = 1,
     .max = 64,
     .def = "online CPUs",
     .flags = SETTINGS_DEFAULT_TEXT,
     .placeholder = "N",
     .help = "threads",
     G(cpus)},
    {.name = "delay",
     .key = "hedge.delay",
     .type = SETTINGS_DELAY,
     .min = 0,
     .max = 3600000,
     .def = "300",
     .placeholder = "MS|pNN",
     .help = "when",
     R(delay)},
    {.name = "budget",
     .key = "hedge.budget_percent",
     .type = SETTINGS_PERCENT,
     .def = "off",
     .flags = SETTINGS_DEFAULT_TEXT,
     .placeholder = "PCT",
     .help = "how much more",
     R(budget_e6)},
    {.name = "tag",
     .letter = 't',
     .key = "tags",
     .type = SETTINGS_CUSTOM,
     .check = add_tag,
     .release = free_tags,
     .flags = SETTINGS_REPEATABLE,
     .placeholder = "NAME",
     .help = "a tag",
     R(tags)},
    {.key = "file_only",
     .type = SETTINGS_UINT,
     .min = 0,
     .max = 9,
     .def = "1",
     .placeholder = "N",
     .help = "in a file only",
     G(on)},
    {SETTINGS_ROW_HELP, .help = "this text"},
};
static const settings_table test_table = {"test", test_rows,
                                          sizeof(test_rows) / sizeof(test_rows[0])};

typedef struct fixture {
    test_global g;
    test_route r;
    settings_target to;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->to.global = &f->g;
    f->to.route = &f->r;
    const setting *bad = NULL;
    settings_error e;
    assert_int_equal(settings_defaults(&test_table, &f->to, &bad, &e), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    settings_free(&test_table, &f->to);
    assert_null(f->g.text);
    assert_null(f->g.url);
    free(f);
    return 0;
}

/* Runs the command line over the fixture: returns what settings_cli_parse returned. */
static int cli(fixture *f, uint64_t *given, const char *first, ...)
{
    char *argv[16] = {"test"};
    int argc = 1;
    va_list ap;
    va_start(ap, first);
    for (const char *a = first; a != NULL; a = va_arg(ap, const char *))
        argv[argc++] = (char *)a;
    va_end(ap);
    return settings_cli_parse(&test_table, argc, argv, &f->to, NULL, NULL, given);
}

/* The command-line message for value given to the row named name (empty when it parses). */
static const char *message(const settings_table *t, const char *name, const char *value,
                           const settings_target *to, settings_error *e)
{
    const setting *s = settings_find(t, name);
    if (s == NULL && name[0] == '-') /* a letter */
        for (size_t i = 0; i < t->nrows && s == NULL; i++)
            if (t->rows[i].letter == name[1])
                s = &t->rows[i];
    assert_non_null(s);
    if (settings_set(s, value, to, e) == 0)
        return "";
    return settings_message(s, e);
}

static void test_defaults_are_parsed(void **state)
{
    fixture *f = *state;
    assert_int_equal(f->g.count, 300);
    assert_int_equal(f->g.small, 2);
    assert_int_equal(f->g.engine, 1);
    assert_string_equal(f->g.text, "-");
    assert_null(f->g.url);               /* "built in" is not a value */
    assert_int_equal(f->g.cpus, 0);      /* nor is "online CPUs": the command fills it in */
    assert_int_equal(f->r.budget_e6, 0); /* nor "off" */
    assert_string_equal(f->g.addr.host, "127.0.0.1");
    assert_int_equal(f->g.addr.port, 8080);
    assert_int_equal(f->g.addr.set, 1);
    assert_int_equal(f->r.delay.ms, 300);
    assert_int_equal(f->r.delay.percentile_tenths, 0);
    assert_int_equal(f->g.on, 1); /* the file-only row's default lands too */

    /* A target with only the route: only route rows are touched. */
    test_route r2;
    memset(&r2, 0, sizeof(r2));
    settings_target only_route = {NULL, &r2};
    const setting *bad = NULL;
    settings_error e;
    assert_int_equal(settings_defaults(&test_table, &only_route, &bad, &e), 0);
    assert_int_equal(r2.delay.ms, 300);
    settings_free(&test_table, &only_route);
}

static void test_a_bad_default_is_reported(void **state)
{
    (void)state;
    static const setting rows[] = {
        {.name = "n",
         .type = SETTINGS_UINT,
         .min = 1,
         .max = 10,
         .def = "11",
         .placeholder = "N",
         .help = "n",
         SETTINGS_FIELD(test_global, count)},
    };
    static const settings_table t = {"test", rows, 1};
    test_global g;
    memset(&g, 0, sizeof(g));
    settings_target to = {&g, NULL};
    const setting *bad = NULL;
    settings_error e;
    assert_int_equal(settings_defaults(&t, &to, &bad, &e), -1);
    assert_ptr_equal(bad, &rows[0]);
    assert_string_equal(settings_message(bad, &e),
                        "invalid value '11' for --n: must be from 1 to 10");
}

/* Each message word for word, and a reason that stands alone after "KEY: " in a file's error. */
static void test_every_message(void **state)
{
    fixture *f = *state;
    settings_error e;
    static const struct {
        const char *name, *value, *message, *why;
    } cases[] = {
        {"count", "", "invalid value '' for --count: expected a whole number",
         "expected a whole number"},
        {"count", "12a", "invalid value '12a' for --count: expected a whole number", NULL},
        {"count", "-1", "invalid value '-1' for --count: expected a whole number", NULL},
        {"count", " 1", "invalid value ' 1' for --count: expected a whole number", NULL},
        {"count", "99999999999999999999",
         "invalid value '99999999999999999999' for --count: too large", "too large"},
        {"count", "0", "invalid value '0' for --count: must be from 1 to 500",
         "must be from 1 to 500"},
        {"count", "501", "invalid value '501' for --count: must be from 1 to 500", NULL},
        {"small", "16", "invalid value '16' for --small: must be from 0 to 15",
         "must be from 0 to 15"},
        {"engine", "x", "invalid value 'x' for --engine: expected native, curl or other",
         "expected native, curl or other"},
        {"text", "x", "invalid value 'x' for --text: x is not allowed", "x is not allowed"},
        {"url", "ftp://user:pw@h/x?q=1",
         "invalid value 'ftp://***@h/x?***' for --url: expected an http:// or https:// URL",
         "expected an http:// or https:// URL"},
        {"url", "http://", "invalid value 'http://' for --url: expected an http:// or https:// URL",
         NULL},
        {"url", "http:///x",
         "invalid value 'http:///x' for --url: expected an http:// or https:// URL", NULL},
        {"url", "http://a b",
         "invalid value 'http://a b' for --url: expected an http:// or https:// URL", NULL},
        {"addr", "x", "invalid value 'x' for --addr: expected HOST:PORT", "expected HOST:PORT"},
        {"addr", "1.2.3.4:99999", "invalid value '99999' for --addr: must be from 0 to 65535",
         NULL},
        {"addr", "1.2.3.4:", "invalid value '' for --addr: expected a whole number", NULL},
        {"addr", "foo:80",
         "invalid value 'foo:80' for --addr: HOST must be an IP address (127.0.0.1, [::1]) or "
         "localhost",
         NULL},
        {"delay", "3600001", "invalid value '3600001' for --delay: must be from 0 to 3600000",
         NULL},
        {"delay", "p49",
         "invalid value 'p49' for --delay: expected MS or pNN, NN from 50 to 99.9 with at most one "
         "decimal (p95, p99, p99.9)",
         NULL},
        {"delay", "p99.95",
         "invalid value 'p99.95' for --delay: expected MS or pNN, NN from 50 to 99.9 with at most "
         "one decimal (p95, p99, p99.9)",
         NULL},
        {"delay", "x", "invalid value 'x' for --delay: expected a whole number", NULL},
        {"budget", "0",
         "invalid value '0' for --budget: expected a percentage above 0 and up to 100, "
         "digits[.digits] (at most 6 decimals)",
         NULL},
        {"budget", "off",
         "invalid value 'off' for --budget: expected a percentage above 0 and up to 100, "
         "digits[.digits] (at most 6 decimals)",
         NULL},
        {"budget", "101",
         "invalid value '101' for --budget: expected a percentage above 0 and up to 100, "
         "digits[.digits] (at most 6 decimals)",
         NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        test_global before = f->g;
        const char *got = message(&test_table, cases[i].name, cases[i].value, &f->to, &e);
        if (strcmp(got, cases[i].message) != 0)
            fail_msg("%s %s: got \"%s\"", cases[i].name, cases[i].value, got);
        if (cases[i].why != NULL)
            assert_string_equal(e.why, cases[i].why);
        /* a bad value leaves the field as it was */
        assert_int_equal(f->g.count, before.count);
        assert_ptr_equal(f->g.text, before.text);
        assert_int_equal(f->g.addr.port, before.addr.port);
    }
    /* A message of another shape is the row's own, whole; the file front end uses why. */
    for (int i = 0; i < 8; i++)
        assert_string_equal(message(&test_table, "tag", "a", &f->to, &e), "");
    assert_string_equal(message(&test_table, "tag", "a", &f->to, &e),
                        "too many --tag tags (at most 8)");
    assert_string_equal(e.why, "too many tags");
}

/* The parsers that accept: pNN keeps the fixed ms, addresses, words. */
static void test_good_values(void **state)
{
    fixture *f = *state;
    settings_error e;
    assert_string_equal(message(&test_table, "delay", "p99.9", &f->to, &e), "");
    assert_int_equal(f->r.delay.percentile_tenths, 999);
    assert_int_equal(f->r.delay.ms, 300);
    assert_string_equal(message(&test_table, "delay", "p50", &f->to, &e), "");
    assert_int_equal(f->r.delay.percentile_tenths, 500);
    assert_string_equal(message(&test_table, "delay", "0", &f->to, &e), "");
    assert_int_equal(f->r.delay.ms, 0);
    assert_int_equal(f->r.delay.percentile_tenths, 0);
    assert_string_equal(message(&test_table, "budget", "12.5", &f->to, &e), "");
    assert_int_equal(f->r.budget_e6, 12500000);
    assert_string_equal(message(&test_table, "engine", "other", &f->to, &e), "");
    assert_int_equal(f->g.engine, 3);
    assert_string_equal(message(&test_table, "addr", "localhost:9", &f->to, &e), "");
    assert_string_equal(f->g.addr.host, "127.0.0.1");
    assert_string_equal(message(&test_table, "addr", "[::1]:0", &f->to, &e), "");
    assert_string_equal(f->g.addr.host, "::1");
    assert_int_equal(f->g.addr.port, 0);
    assert_string_equal(message(&test_table, "small", "15", &f->to, &e), "");
    assert_int_equal(f->g.small, 15);
}

/* A single-valued setting given twice takes the last value (and frees the first: LSan). */
static void test_last_value_wins(void **state)
{
    fixture *f = *state;
    uint64_t given = 0;
    assert_int_equal(cli(f, &given, "--count", "5", "-c7", "--count=9", "--url", "http://a/1",
                         "--url=https://b/2", "--text", "one", "--text=two", NULL),
                     SETTINGS_CLI_OK);
    assert_int_equal(f->g.count, 9);
    assert_string_equal(f->g.url, "https://b/2");
    assert_string_equal(f->g.text, "two");
    const setting *count = settings_find(&test_table, "count");
    const setting *url = settings_find(&test_table, "url");
    assert_true(given & ((uint64_t)1 << settings_index(&test_table, count)));
    assert_true(given & ((uint64_t)1 << settings_index(&test_table, url)));
    assert_false(given &
                 ((uint64_t)1 << settings_index(&test_table, settings_find(&test_table, "small"))));
    /* a bad value stops the parse: the settings before it are in, the one after is not */
    assert_int_equal(cli(f, NULL, "--small", "3", "--count", "0", "--small", "4", NULL),
                     SETTINGS_CLI_BAD);
    assert_int_equal(f->g.small, 3);
    assert_int_equal(f->g.count, 9);
}

/* A repeatable setting takes each value, in order; a switch stores its value. */
static void test_repeatable_and_switch(void **state)
{
    fixture *f = *state;
    assert_int_equal(cli(f, NULL, "--tag", "a", "-tb", "--tag=c", "--on", NULL), SETTINGS_CLI_OK);
    assert_int_equal(f->r.tags.n, 3);
    assert_string_equal(f->r.tags.v[0], "a");
    assert_string_equal(f->r.tags.v[1], "b");
    assert_string_equal(f->r.tags.v[2], "c");
    assert_int_equal(f->g.on, 7);
    assert_int_equal(cli(f, NULL, "--on=1", NULL), SETTINGS_CLI_BAD); /* takes no value */
}

static int count_operands(void *data, const char *arg)
{
    (void)arg;
    (*(int *)data)++;
    return strcmp(arg, "bad") == 0 ? -1 : 0;
}

static void test_operands_help_and_file_only_keys(void **state)
{
    fixture *f = *state;
    char *argv[] = {"test", "a", "--count", "4", "b", "--", "--count", NULL};
    int n = 0;
    assert_int_equal(settings_cli_parse(&test_table, 7, argv, &f->to, count_operands, &n, NULL),
                     SETTINGS_CLI_OK);
    assert_int_equal(n, 3);
    assert_int_equal(f->g.count, 4);
    char *bad[] = {"test", "bad", NULL};
    assert_int_equal(settings_cli_parse(&test_table, 2, bad, &f->to, count_operands, &n, NULL),
                     SETTINGS_CLI_BAD);
    assert_int_equal(cli(f, NULL, "operand", NULL), SETTINGS_CLI_BAD); /* none expected */
    /* --help stops the parse at once: what follows is not read */
    assert_int_equal(cli(f, NULL, "-h", "--count", "0", NULL), SETTINGS_CLI_HELP);
    assert_int_equal(cli(f, NULL, "--small", "5", "--help", NULL), SETTINGS_CLI_HELP);
    assert_int_equal(f->g.small, 5);
    /* A row with a key and no flag is for a configuration file only. */
    assert_int_equal(cli(f, NULL, "--file_only", "3", NULL), SETTINGS_CLI_BAD);
    const setting *s = settings_find_key(&test_table, "file_only");
    assert_non_null(s);
    settings_error e;
    assert_int_equal(settings_set(s, "3", &f->to, &e), 0);
    assert_int_equal(f->g.on, 3);
    assert_ptr_equal(settings_find_key(&test_table, "hedge.delay"),
                     settings_find(&test_table, "delay"));
    assert_null(settings_find_key(&test_table, "nope"));
    char flag[64];
    assert_string_equal(settings_flag(s, flag, sizeof(flag)), "file_only");
}

/* Reads what print wrote into a string (freed by the caller). */
static char *printed(void (*print)(FILE *, const settings_table *), const settings_table *t)
{
    FILE *out = tmpfile();
    assert_non_null(out);
    print(out, t);
    long len = ftell(out);
    assert_true(len > 0);
    char *text = calloc(1, (size_t)len + 1);
    assert_non_null(text);
    rewind(out);
    assert_int_equal(fread(text, 1, (size_t)len, out), (size_t)len);
    (void)fclose(out);
    return text;
}

static void test_help_shows_the_defaults(void **state)
{
    (void)state;
    char *help = printed(settings_print_help, &test_table);
    assert_non_null(strstr(help, "  -c, --count N              how many [300]\n"));
    assert_non_null(strstr(help, "      --small N              a small one\n"
                                 "                             [2]\n"));
    assert_non_null(strstr(help, "      --url URL              where to [built in]\n"));
    assert_non_null(strstr(help, "      --on                   switch it on\n"));
    assert_non_null(strstr(help, "  -t, --tag NAME             a tag (repeatable)\n"));
    assert_non_null(strstr(help, "  -h, --help                 this text\n"));
    assert_non_null(strstr(help, "last value"));
    assert_null(strstr(help, "file_only")); /* no flag: not on the command line */
    free(help);
}

static void test_man_shows_the_defaults(void **state)
{
    (void)state;
    char *man = printed(settings_print_man, &test_table);
    assert_non_null(
        strstr(man, ".TP\n\\fB\\-c\\fR, \\fB\\-\\-count\\fR \\fIN\\fR\nHow many.\n[300]\n"));
    assert_non_null(strstr(man, ".TP\n\\fB\\-\\-addr\\fR \\fIHOST\\fR:\\fIPORT\\fR\n"
                                "Where to listen; see\n.BR \\-\\-url .\n[127.0.0.1:8080]\n"));
    assert_non_null(
        strstr(man, "\\fB\\-\\-engine\\fR \\fBnative\\fR|\\fBcurl\\fR|\\fBother\\fR\n"));
    assert_non_null(strstr(man, "\\fB\\-\\-delay\\fR \\fIMS\\fR|\\fBp\\fR\\fINN\\fR\n"));
    assert_non_null(strstr(man, "A tag.\nRepeatable.\n"));
    assert_non_null(strstr(man, "[built in]\n"));
    assert_non_null(strstr(man, "\\fB\\-\\-on\\fR\nSwitch it on.\n.TP\n"));
    assert_null(strstr(man, "file_only"));
    free(man);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_defaults_are_parsed, setup, teardown),
        cmocka_unit_test(test_a_bad_default_is_reported),
        cmocka_unit_test_setup_teardown(test_every_message, setup, teardown),
        cmocka_unit_test_setup_teardown(test_good_values, setup, teardown),
        cmocka_unit_test_setup_teardown(test_last_value_wins, setup, teardown),
        cmocka_unit_test_setup_teardown(test_repeatable_and_switch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_operands_help_and_file_only_keys, setup, teardown),
        cmocka_unit_test(test_help_shows_the_defaults),
        cmocka_unit_test(test_man_shows_the_defaults),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
