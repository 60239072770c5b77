/*
 * Unit tests for app/common/settings.c, the one table of settings (issue 21), and for the three
 * real tables of the program (serve, upstream, fetch): every default parses and is in range, the
 * value parsers give each error message word for word (and a reason a config file can use on its
 * own), a repeatable setting takes each value, a single-valued one takes the last, --help and the
 * man page show the table's defaults, and nothing is declared twice.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/commands.h"
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
    settings_list mirrors;
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
    {.name = "mirror",
     .key = "mirrors",
     .type = SETTINGS_URL,
     .flags = SETTINGS_REPEATABLE,
     .placeholder = "URL",
     .help = "one more copy",
     R(mirrors)},
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
    assert_string_equal(settings_message(bad, &e), "invalid value '11' for --n: must be 1 to 10");
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
        {"count", "0", "invalid value '0' for --count: must be 1 to 500", "must be 1 to 500"},
        {"count", "501", "invalid value '501' for --count: must be 1 to 500", NULL},
        {"small", "16", "invalid value '16' for --small: must be 0 to 15", "must be 0 to 15"},
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
        {"addr", "1.2.3.4:99999", "invalid value '99999' for --addr: must be 0 to 65535", NULL},
        {"addr", "1.2.3.4:", "invalid value '' for --addr: expected a whole number", NULL},
        {"addr", "foo:80",
         "invalid value 'foo:80' for --addr: HOST must be an IP address (127.0.0.1, [::1]) or "
         "localhost",
         NULL},
        {"delay", "3600001", "invalid value '3600001' for --delay: must be 0 to 3600000", NULL},
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
         "digits[.digits] (at most 6 decimals), or off",
         NULL},
        {"budget", "101",
         "invalid value '101' for --budget: expected a percentage above 0 and up to 100, "
         "digits[.digits] (at most 6 decimals), or off",
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

    /* a repeatable URL keeps every value in a list, each one checked (a bad one is not added) */
    assert_int_equal(cli(f, NULL, "--mirror", "http://a/1", "--mirror=https://b:8443/2?k=v", NULL),
                     SETTINGS_CLI_OK);
    assert_int_equal(cli(f, NULL, "--mirror", "ftp://c/", NULL), SETTINGS_CLI_BAD);
    assert_int_equal(f->r.mirrors.n, 2);
    assert_string_equal(f->r.mirrors.v[0], "http://a/1");
    assert_string_equal(f->r.mirrors.v[1], "https://b:8443/2?k=v");
    settings_error e;
    assert_string_equal(message(&test_table, "mirror", "http:///x", &f->to, &e),
                        "invalid value 'http:///x' for --mirror: expected an http:// or https:// "
                        "URL");
    /* at most SETTINGS_LIST_MAX values */
    for (size_t i = f->r.mirrors.n; i < SETTINGS_LIST_MAX; i++)
        assert_int_equal(
            settings_set(settings_find(&test_table, "mirror"), "http://m/", &f->to, &e), 0);
    assert_string_equal(message(&test_table, "mirror", "http://m/", &f->to, &e),
                        "too many --mirror values (at most 256)");
    assert_int_equal(f->r.mirrors.n, SETTINGS_LIST_MAX);
    settings_free(&test_table, &f->to);
    assert_int_equal(f->r.mirrors.n, 0);
    assert_null(f->r.mirrors.v);
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

static int usage_calls;

static void count_usage(FILE *out)
{
    (void)out;
    usage_calls++;
}

/* A subcommand's start: defaults, then the command line; -1 to go on, else the exit status. */
static void test_read_cli(void **state)
{
    (void)state;
    static const struct {
        const char *arg;
        int status, usages;
    } cases[] = {{"--count=7", -1, 0}, {"--help", 0, 1}, {"--count=0", 2, 0}, {"--nope", 2, 0}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        test_global g;
        test_route r;
        memset(&g, 0, sizeof(g));
        memset(&r, 0, sizeof(r));
        settings_target to = {&g, &r};
        uint64_t given = 0;
        settings_cli cli = {count_usage, NULL, NULL, &given};
        char *argv[] = {"test", (char *)cases[i].arg, NULL};
        usage_calls = 0;
        assert_int_equal(settings_read_cli(&test_table, 2, argv, &to, &cli), cases[i].status);
        assert_int_equal(usage_calls, cases[i].usages);
        assert_int_equal(r.delay.ms, 300); /* the defaults came first */
        assert_int_equal(g.count, cases[i].status == -1 ? 7 : 300);
        assert_int_equal(given != 0, cases[i].status == -1);
        settings_free(&test_table, &to);
    }
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

/* ---- the program's tables ------------------------------------------------------------------- */

static const settings_table *const tables[] = {&serve_settings, &upstream_settings,
                                               &fetch_settings};

/* Zeroed room for every field of t in scope (the structs themselves are private to their
 * subcommand): the largest offset + size of its rows. */
static void *room_for(const settings_table *t, settings_scope scope)
{
    size_t size = 0;
    for (size_t i = 0; i < t->nrows; i++)
        if (t->rows[i].scope == scope && t->rows[i].offset + t->rows[i].size > size)
            size = t->rows[i].offset + t->rows[i].size;
    return size > 0 ? calloc(1, size + 64) : NULL;
}

/* The size a row's type stores, or 0 when its row says (UINT: 4 or 8, CUSTOM: its own). */
static size_t type_size(const setting *s)
{
    if ((s->type == SETTINGS_URL || s->type == SETTINGS_TEXT) && (s->flags & SETTINGS_REPEATABLE))
        return sizeof(settings_list);
    switch (s->type) {
    case SETTINGS_WORD:
    case SETTINGS_SWITCH:
    case SETTINGS_BOOL:
        return sizeof(int);
    case SETTINGS_TEXT:
    case SETTINGS_URL:
        return sizeof(char *);
    case SETTINGS_ADDR:
        return sizeof(settings_addr);
    case SETTINGS_DELAY:
        return sizeof(settings_delay);
    case SETTINGS_PERCENT:
        return sizeof(uint64_t);
    default:
        return 0;
    }
}

/* Every row of every table: its default parses (so it is within its range), its field has the
 * size its type stores, names, letters and keys are unique, and the default is written once: in
 * the row, never again in its help or man text. */
static void test_every_table_row(void **state)
{
    (void)state;
    for (size_t k = 0; k < sizeof(tables) / sizeof(tables[0]); k++) {
        const settings_table *t = tables[k];
        assert_true(t->nrows <= SETTINGS_MAX_ROWS);
        settings_target to = {room_for(t, SETTINGS_GLOBAL), room_for(t, SETTINGS_ROUTE)};
        const setting *bad = NULL;
        settings_error e;
        if (settings_defaults(t, &to, &bad, &e) != 0)
            fail_msg("%s: the default of %s does not parse: %s", t->cmd, bad->name,
                     settings_message(bad, &e));
        int helps = 0;
        for (size_t i = 0; i < t->nrows; i++) {
            const setting *s = &t->rows[i];
            char flag[64];
            settings_flag(s, flag, sizeof(flag));
            assert_true(s->name != NULL || s->letter != 0 || s->key != NULL);
            assert_non_null(s->help);
            helps += s->type == SETTINGS_HELP;
            if (s->type == SETTINGS_UINT && (s->flags & SETTINGS_REPEATABLE)) {
                assert_int_equal(s->size, sizeof(settings_uints));
            } else if (s->type == SETTINGS_UINT) {
                assert_true(s->size == sizeof(uint64_t) || s->size == sizeof(unsigned));
                assert_true(s->min <= s->max);
                if (s->size == sizeof(unsigned))
                    assert_true(s->max <= UINT32_MAX);
            } else if (s->type == SETTINGS_CUSTOM) {
                assert_non_null(s->check);
            } else if (s->type != SETTINGS_HELP && s->size != type_size(s)) {
                fail_msg("%s %s: a field of %zu bytes", t->cmd, flag, s->size);
            }
            if (s->type == SETTINGS_WORD)
                assert_non_null(s->words);
            if (s->type != SETTINGS_SWITCH && s->type != SETTINGS_HELP &&
                s->type != SETTINGS_SECTION)
                assert_non_null(s->placeholder);
            if (s->def != NULL) {
                char written[512];
                (void)snprintf(written, sizeof(written), "[%s]", s->def);
                if (strstr(s->help, written) != NULL ||
                    (s->man != NULL && strstr(s->man, written) != NULL))
                    fail_msg("%s %s: its default is written again in its text", t->cmd, flag);
            }
            for (size_t j = 0; j < i; j++) {
                const setting *o = &t->rows[j];
                if (s->name != NULL && o->name != NULL)
                    assert_string_not_equal(s->name, o->name);
                if (s->letter != 0)
                    assert_int_not_equal(s->letter, o->letter);
                if (s->key != NULL && o->key != NULL && s->type != SETTINGS_CUSTOM)
                    assert_string_not_equal(s->key, o->key);
            }
        }
        assert_int_equal(helps, 1);
        settings_free(t, &to);
        free(to.global);
        free(to.route);
    }
}

/* Messages of the program's own rows that are not of a generic type. */
static void test_program_messages(void **state)
{
    (void)state;
    const settings_table *t = &serve_settings;
    settings_target to = {room_for(t, SETTINGS_GLOBAL), room_for(t, SETTINGS_ROUTE)};
    settings_error e;
    assert_string_equal(message(t, "hedge-extra", "16", &to, &e),
                        "invalid value '16' for --hedge-extra: must be 0 to 15");
    assert_string_equal(e.why, "must be 0 to 15"); /* routes[1].hedge.extra: ... */
    assert_string_equal(message(t, "forward-header", "Host", &to, &e),
                        "invalid value 'Host' for --forward-header: Host is never forwarded");
    assert_string_equal(message(t, "upstream-header", "Host: x", &to, &e),
                        "invalid --upstream-header: tailcut sets Host itself");
    assert_string_equal(e.why, "tailcut sets Host itself");
    assert_string_equal(message(t, "upstream-header", "no colon", &to, &e),
                        "invalid --upstream-header: expected 'Name: value'");
    assert_string_equal(message(t, "upstream-header", "@/nonexistent/h", &to, &e),
                        "cannot read --upstream-header file '/nonexistent/h'");
    assert_string_equal(e.why, "cannot read file '/nonexistent/h'");
    assert_string_equal(message(t, "upstream-ca", "/nonexistent/ca", &to, &e),
                        "cannot read --upstream-ca file '/nonexistent/ca'");
    assert_string_equal(message(t, "access-log-format", "xml", &to, &e),
                        "invalid value 'xml' for --access-log-format: expected text or json");
    assert_string_equal(message(t, "http-engine", "", &to, &e),
                        "invalid value '' for --http-engine: expected native or curl");
    assert_string_equal(message(t, "access-log", "", &to, &e),
                        "invalid value '' for --access-log: expected -, a file or off");
    /* the replica rows (CONTRACT section 7) */
    static const char *const bad_factors[] = {"1.4", "100.1", "0",    "1e1", "-2", "+5", " 5",
                                              "5.",  ".5",    "5..1", "abc", "",   "on", "OFF"};
    for (size_t i = 0; i < sizeof(bad_factors) / sizeof(bad_factors[0]); i++) {
        char want[256];
        (void)snprintf(want, sizeof(want),
                       "invalid value '%s' for --eject-latency-factor: expected a decimal from "
                       "1.5 to 100, or off",
                       bad_factors[i]);
        assert_string_equal(message(t, "eject-latency-factor", bad_factors[i], &to, &e), want);
    }
    static const struct {
        const char *text;
        double value;
    } factors[] = {{"1.5", 1.5}, {"100", 100}, {"2.25", 2.25}, {"5", 5}, {"off", 0}};
    const setting *factor = settings_find(t, "eject-latency-factor");
    for (size_t i = 0; i < sizeof(factors) / sizeof(factors[0]); i++) {
        double v = -1;
        assert_int_equal(factor->check(factor, factors[i].text, &v, &e), 0);
        assert_true(v == factors[i].value);
    }
    assert_string_equal(message(t, "upstream-discovery", "srv", &to, &e),
                        "invalid value 'srv' for --upstream-discovery: expected off or dns");
    assert_string_equal(message(t, "dns-refresh", "999", &to, &e),
                        "invalid value '999' for --dns-refresh: must be 1000 to 3600000");
    assert_string_equal(message(t, "eject-failures", "0", &to, &e),
                        "invalid value '0' for --eject-failures: must be 1 to 1000");
    assert_string_equal(message(t, "max-ejected", "101", &to, &e),
                        "invalid value '101' for --max-ejected: must be 0 to 100");
    assert_string_equal(message(t, "upstream", "ftp://x/", &to, &e),
                        "invalid value 'ftp://x/' for --upstream: expected an http:// or https:// "
                        "URL");
    /* the file form of upstream_headers has a key and no flag */
    const setting *file = settings_find_key(t, "upstream_headers_file");
    assert_non_null(file);
    assert_null(file->name);
    assert_int_equal(settings_set(file, "/nonexistent/h", &to, &e), -1);
    assert_string_equal(e.why, "cannot read file '/nonexistent/h'");
    settings_free(t, &to);
    free(to.global);
    free(to.route);

    t = &fetch_settings;
    to = (settings_target){room_for(t, SETTINGS_GLOBAL), NULL};
    assert_string_equal(message(t, "-X", "a b", &to, &e),
                        "invalid value 'a b' for -X: a method is an HTTP token (letters, digits "
                        "and !#$%&'*+-.^_`|~), such as GET or POST");
    assert_string_equal(message(t, "-H", "a\r\nb: c", &to, &e),
                        "invalid value 'a\\x0D\\x0Ab: c' for -H: the header name is not an HTTP "
                        "token (letters, digits and !#$%&'*+-.^_`|~)");
    assert_string_equal(message(t, "-H", "Content-Length: 1", &to, &e),
                        "invalid value 'Content-Length: 1' for -H: Content-Length is set from -d, "
                        "not by hand");
    assert_string_equal(message(t, "-o", "", &to, &e),
                        "invalid value '' for -o: expected a file name");
    assert_string_equal(message(t, "-i", "", &to, &e),
                        "invalid value '' for -i: expected a file name or -");
    assert_string_equal(message(t, "cacert", "", &to, &e),
                        "cannot read --cacert file '': no file name");
    assert_string_equal(message(t, "order", "x", &to, &e),
                        "invalid value 'x' for --order: expected completion or input");
    assert_string_equal(message(t, "-c", "0", &to, &e),
                        "invalid value '0' for --concurrency: must be 1 to 100000");
    assert_string_equal(message(t, "-H", "A: 1", &to, &e), "");
    assert_string_equal(message(t, "-H", "B: 2", &to, &e), ""); /* repeatable: both kept */
    settings_free(t, &to);
    free(to.global);

    t = &upstream_settings;
    to = (settings_target){room_for(t, SETTINGS_GLOBAL), NULL};
    assert_string_equal(message(t, "profile", "fixed:x", &to, &e),
                        "invalid value 'fixed:x' for --profile: fixed:MS needs MS a whole number "
                        "of milliseconds up to 3600000");
    assert_string_equal(message(t, "seed", "-1", &to, &e),
                        "invalid value '-1' for --seed: expected a whole number");
    settings_free(t, &to);
    free(to.global);
}

/* The help of every table shows each default as the table has it. */
static void test_program_help_shows_the_table(void **state)
{
    (void)state;
    char *help = printed(settings_print_help, &serve_settings);
    assert_non_null(
        strstr(help, "      --hedge-extra N        extra attempts fired by the hedge [2]\n"));
    assert_non_null(strstr(help, "[online CPUs]"));
    assert_non_null(strstr(help, "--forward-header NAME"));
    assert_non_null(strstr(help, "hop-by-hop ones (repeatable)\n"));
    assert_non_null(strstr(help, "first byte\n                             [10000]\n"));
    free(help);
    help = printed(settings_print_help, &fetch_settings);
    assert_non_null(strstr(help, "  -c, --concurrency N        requests at once [100]\n"));
    assert_non_null(strstr(help, "no progress bar [a bar when stderr is a terminal]\n"));
    free(help);
    help = printed(settings_print_help, &upstream_settings);
    assert_non_null(strstr(help, "port 0 picks one [127.0.0.1:9000]\n"));
    free(help);
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
        cmocka_unit_test(test_read_cli),
        cmocka_unit_test(test_help_shows_the_defaults),
        cmocka_unit_test(test_man_shows_the_defaults),
        cmocka_unit_test(test_every_table_row),
        cmocka_unit_test(test_program_messages),
        cmocka_unit_test(test_program_help_shows_the_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
