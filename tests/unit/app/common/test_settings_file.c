/*
 * Unit tests for app/common/settings_file.c, the configuration file's reader and its walk over a
 * settings table (issue 23): the tree and its marks, every limit of the reader, what it refuses
 * (anchors, aliases, tags, a second document, a top that is no mapping), and every error of the
 * walk word for word with its position (CONTRACT section 8: the key's for unknown and duplicate
 * keys, the value's for a wrong type or value, the mapping's for a missing key); lists replace a
 * default, a section hands its list back, a kind leaves rows out; failing allocations.
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
#include "common/settings_file.h"

typedef struct t_global {
    uint64_t count;
    int on;
    settings_uints statuses;
    settings_list words;
    int sections;
} t_global;

typedef struct t_route {
    uint64_t extra;
    char *name;
} t_route;

#define G(member) .scope = SETTINGS_GLOBAL, SETTINGS_FIELD(t_global, member)
#define R(member) .scope = SETTINGS_ROUTE, SETTINGS_FIELD(t_route, member)

static const setting rows[] = {
    {.key = "count", .type = SETTINGS_UINT, .min = 1, .max = 500, .def = "300", G(count)},
    {.key = "on", .type = SETTINGS_BOOL, .def = "false", G(on)},
    {.key = "statuses",
     .type = SETTINGS_UINT,
     .min = 100,
     .max = 599,
     .def = "429, 500, 502",
     .flags = SETTINGS_REPEATABLE,
     G(statuses)},
    {.key = "words", .type = SETTINGS_TEXT, .flags = SETTINGS_REPEATABLE, G(words)},
    {.key = "items",
     .type = SETTINGS_SECTION,
     .flags = SETTINGS_REQUIRED,
     .scope = SETTINGS_GLOBAL},
    {.key = "hedge.extra", .type = SETTINGS_UINT, .min = 0, .max = 15, .def = "2", R(extra)},
    {.key = "name", .type = SETTINGS_TEXT, .flags = SETTINGS_REQUIRED, .kinds = 1, R(name)},
};
static const settings_table table = {"test", rows, sizeof(rows) / sizeof(rows[0])};

typedef struct fixture {
    t_global g;
    t_route r[4];
    settings_file_error e;
    settings_node *top;
    unsigned kind;
} fixture;

static int on_items(void *data, const setting *row, const settings_pair *entry,
                    settings_file_error *e)
{
    fixture *f = data;
    (void)row;
    const settings_node *v = entry->value;
    f->g.sections++;
    if (v->kind != SETTINGS_NODE_LIST)
        return settings_file_fail(e, "F", v->mark, "items", "expected a list");
    for (size_t i = 0; i < v->n && i < 4; i++) {
        char path[16];
        (void)snprintf(path, sizeof(path), "items[%zu]", i);
        settings_target to = {NULL, &f->r[i]};
        settings_file_scope sc = {"F", path, SETTINGS_ROUTE, f->kind, NULL, NULL, NULL};
        if (settings_file_apply(&table, v->items[i], &sc, &to, e) != 0)
            return -1;
    }
    return 0;
}

static void release(fixture *f)
{
    settings_target to = {&f->g, NULL};
    settings_free(&table, &to);
    for (int i = 0; i < 4; i++) {
        settings_target rt = {NULL, &f->r[i]};
        settings_free(&table, &rt);
    }
    settings_node_free(f->top);
    memset(f, 0, sizeof(*f));
}

/* Reads text and applies it: 0, or -1 with f->e. */
static int load(fixture *f, const char *text)
{
    release(f);
    f->kind = 1;
    const setting *bad = NULL;
    settings_error se;
    settings_target to = {&f->g, NULL};
    assert_int_equal(settings_defaults(&table, &to, &bad, &se), 0);
    for (int i = 0; i < 4; i++) {
        settings_target rt = {NULL, &f->r[i]};
        assert_int_equal(settings_defaults(&table, &rt, &bad, &se), 0);
    }
    if (settings_file_parse("F", text, strlen(text), &f->top, &f->e) != 0)
        return -1;
    settings_file_scope sc = {"F", "", SETTINGS_GLOBAL, 0, on_items, f, NULL};
    return settings_file_apply(&table, f->top, &sc, &to, &f->e);
}

static int setup(void **state)
{
    *state = calloc(1, sizeof(fixture));
    return *state == NULL;
}

static int teardown(void **state)
{
    release(*state);
    free(*state);
    return 0;
}

static void test_good_file(void **state)
{
    fixture *f = *state;
    assert_int_equal(load(f, "count: 0012\n"
                             "on: true\n"
                             "statuses: [503]\n"
                             "words: [GET, 'off', \"a b\"]\n"
                             "items:\n"
                             "  - name: x\n"
                             "    hedge: {extra: 15}\n"
                             "  - {name: y}\n"),
                     0);
    assert_int_equal(f->g.count, 12); /* digits, read by the row: never octal */
    assert_int_equal(f->g.on, 1);
    assert_int_equal(f->g.statuses.n, 1); /* the list replaced the default */
    assert_int_equal(f->g.statuses.v[0], 503);
    assert_int_equal(f->g.words.n, 3);
    assert_string_equal(f->g.words.v[1], "off");
    assert_string_equal(f->g.words.v[2], "a b");
    assert_int_equal(f->g.sections, 1);
    assert_int_equal(f->r[0].extra, 15);
    assert_string_equal(f->r[0].name, "x");
    assert_int_equal(f->r[1].extra, 2); /* the default */
    assert_string_equal(f->r[1].name, "y");
    /* the tree's marks: line and column from 1 */
    const settings_pair *p = settings_node_get(f->top, "items");
    assert_non_null(p);
    assert_int_equal(p->key_mark.line, 5);
    assert_int_equal(p->key_mark.col, 1);
    assert_int_equal(p->value->items[1]->mark.line, 8);
    assert_int_equal(p->value->items[1]->mark.col, 5);
    assert_null(settings_node_get(f->top, "none"));
    /* the default list when the file says nothing */
    assert_int_equal(load(f, "items: []\n"), 0);
    assert_int_equal(f->g.statuses.n, 3);
    assert_int_equal(f->g.statuses.v[2], 502);
}

static void test_errors(void **state)
{
    fixture *f = *state;
    static const struct {
        const char *text, *message;
    } cases[] = {
        {"count: 501\nitems: []\n", "F:1:8: count: must be 1 to 500"},
        {"count: 1\ncount: 2\nitems: []\n", "F:2:1: count: duplicate key (first at line 1)"},
        {"cont: 1\nitems: []\n", "F:1:1: cont: unknown key"},
        {"name: x\nitems: []\n",
         "F:1:1: name: unknown key here (a route's key: it goes in a route)"},
        {"items:\n  - {name: x, count: 1}\n",
         "F:2:15: items[0].count: unknown key here (a global key: it goes at the top)"},
        {"on: yes\nitems: []\n", "F:1:5: on: expected true or false"},
        {"count: [1]\nitems: []\n", "F:1:8: count: expected a value, not a list"},
        {"count: {a: 1}\nitems: []\n", "F:1:8: count: expected a value, not a mapping"},
        {"statuses: 500\nitems: []\n", "F:1:11: statuses: expected a list, not text"},
        {"statuses: [500, 600]\nitems: []\n", "F:1:17: statuses[1]: must be 100 to 599"},
        {"statuses: [[500]]\nitems: []\n", "F:1:12: statuses[0]: expected text, not a list"},
        {"count: 1\n", "F:1:1: missing key 'items'"},
        {"items:\n  - hedge: {extra: 1}\n", "F:2:5: items[0]: missing key 'name'"},
        {"items:\n  - name: x\n    hedge: {extra: 16}\n",
         "F:3:20: items[0].hedge.extra: must be 0 to 15"},
        {"items:\n  - name: x\n    hedge: 1\n",
         "F:3:12: items[0].hedge: expected a mapping, not text"},
        {"items:\n  - name: x\n    hedge: {extr: 1}\n", "F:3:13: items[0].hedge.extr: unknown key"},
        {"items:\n  - name: x\n    hedge: {extra: 1, extra: 2}\n",
         "F:3:23: items[0].hedge.extra: duplicate key (first at line 3)"},
        {"items: 1\n", "F:1:8: items: expected a list"},
        {"\"a\\nb\": 1\nitems: []\n", "F:1:1: a?b: unknown key"}, /* one line */
        {"count: &x 1\nitems: []\n", "F:1:8: anchors and aliases are not supported"},
        {"a: &x 1\nb: *x\n", "F:1:4: anchors and aliases are not supported"},
        {"count: !!int 1\n", "F:1:8: tags (tag:yaml.org,2002:int) are not supported: write the "
                             "value, quoted if need be"},
        {"count: 1\n---\ncount: 2\n", "F:2:1: more than one document: a configuration is one"},
        {"", "F:1:1: expected a mapping of settings (key: value) at the top"},
        {"- a\n", "F:1:1: expected a mapping of settings (key: value) at the top"},
        {"just text\n", "F:1:1: expected a mapping of settings (key: value) at the top"},
        {"[1]: 2\n", "F:1:1: a key must be plain text, not a list or a mapping"},
        {"count: [1\n", "F:2:1: did not find expected ',' or ']' while parsing a flow sequence"},
    };
    int wrong = 0;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (load(f, cases[i].text) == 0)
            fail_msg("no error for %s", cases[i].text);
        if (strcmp(f->e.message, cases[i].message) != 0) {
            print_error("got '%s', want '%s'\n", f->e.message, cases[i].message);
            wrong++;
        }
    }
    assert_int_equal(wrong, 0);
}

/* A row whose .kinds leaves the route's kind out is unknown there. */
static void test_kinds(void **state)
{
    fixture *f = *state;
    release(f);
    const setting *bad = NULL;
    settings_error se;
    settings_target rt = {NULL, &f->r[0]};
    assert_int_equal(settings_defaults(&table, &rt, &bad, &se), 0);
    const char *text = "name: x\nhedge: {extra: 1}\n";
    assert_int_equal(settings_file_parse("F", text, strlen(text), &f->top, &f->e), 0);
    settings_file_scope sc = {"F", "r", SETTINGS_ROUTE, 2, NULL, NULL, NULL};
    assert_int_equal(settings_file_apply(&table, f->top, &sc, &rt, &f->e), -1);
    assert_string_equal(f->e.message, "F:1:1: r.name: unknown key for this kind of route");
}

static void test_limits(void **state)
{
    fixture *f = *state;
    settings_node *top = NULL;
    settings_file_error e;
    /* nesting */
    char deep[128] = "a: ";
    for (int i = 0; i < SETTINGS_FILE_MAX_DEPTH; i++)
        strcat(deep, "[");
    assert_int_equal(settings_file_parse("F", deep, strlen(deep), &top, &e), -1);
    assert_string_equal(e.message, "F:1:19: nested deeper than 16 levels");
    /* a scalar too long */
    size_t n = SETTINGS_FILE_MAX_SCALAR + 16;
    char *big = malloc(n + 1);
    assert_non_null(big);
    memcpy(big, "a: ", 3);
    memset(big + 3, 'x', n - 3);
    big[n] = '\0';
    assert_int_equal(settings_file_parse("F", big, n, &top, &e), -1);
    assert_string_equal(e.message, "F:1:4: a value longer than 8192 bytes");
    /* too many nodes */
    size_t cap = 4 * (size_t)SETTINGS_FILE_MAX_NODES + 16, len = 0;
    char *many = realloc(big, cap);
    assert_non_null(many);
    len += (size_t)snprintf(many, cap, "a: [");
    for (int i = 0; i < SETTINGS_FILE_MAX_NODES; i++)
        len += (size_t)snprintf(many + len, cap - len, "1,");
    len += (size_t)snprintf(many + len, cap - len, "1]");
    assert_int_equal(settings_file_parse("F", many, len, &top, &e), -1);
    assert_non_null(strstr(e.message, "too many values (at most 20000)"));
    free(many);
    /* the file's size */
    char *huge = calloc(1, (size_t)SETTINGS_FILE_MAX_BYTES + 2);
    assert_non_null(huge);
    memset(huge, '#', (size_t)SETTINGS_FILE_MAX_BYTES + 1);
    assert_int_equal(settings_file_parse("F", huge, (size_t)SETTINGS_FILE_MAX_BYTES + 1, &top, &e),
                     -1);
    assert_string_equal(e.message, "F:1:1: larger than 1048576 bytes");
    free(huge);
    /* a NUL inside a scalar */
    static const char nul[] = "a: \"x\\0y\"\n";
    assert_int_equal(settings_file_parse("F", nul, sizeof(nul) - 1, &top, &e), -1);
    assert_string_equal(e.message, "F:1:4: a value holds a NUL byte");
    (void)f;
}

static void test_load_file(void **state)
{
    (void)state;
    settings_node *top = NULL;
    settings_file_error e;
    assert_int_equal(settings_file_load("/nonexistent/tailcut.yaml", &top, &e), -1);
    assert_string_equal(e.message,
                        "cannot read /nonexistent/tailcut.yaml: no such file or directory");
    assert_int_equal(settings_file_load("/", &top, &e), -1);
    assert_non_null(strstr(e.message, "cannot read /: "));
    char path[] = "/tmp/tailcut-settings-file-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *out = fdopen(fd, "w");
    assert_non_null(out);
    (void)fputs("items: []\n", out);
    (void)fclose(out);
    assert_int_equal(settings_file_load(path, &top, &e), 0);
    assert_non_null(settings_node_get(top, "items"));
    settings_node_free(top);
    (void)remove(path);
}

/* Every allocation of the reader may fail: the read then fails with a message and frees all
 * (LSan), and a read that succeeds is whole. */
static void test_failing_allocations(void **state)
{
    (void)state;
    static const char text[] =
        "count: 3\nitems:\n  - {name: x, hedge: {extra: 1}}\n  - {name: y}\n";
    int failed = 0;
    for (unsigned long n = 1; n < 300; n++) {
        fixture f;
        memset(&f, 0, sizeof(f));
        tc__alloc_fail_nth(n);
        int rc = load(&f, text);
        int hit = tc__alloc_failed();
        tc__alloc_fail_nth(0);
        if (hit) {
            failed++;
            assert_int_equal(rc, -1);
            assert_non_null(strstr(f.e.message, "out of memory"));
        } else {
            assert_int_equal(rc, 0);
            assert_string_equal(f.r[1].name, "y");
        }
        release(&f);
        if (!hit)
            break;
    }
    assert_true(failed > 10);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_good_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kinds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_limits, setup, teardown),
        cmocka_unit_test(test_load_file),
        cmocka_unit_test(test_failing_allocations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
