/*
 * libFuzzer target: the configuration file of `serve --config` (app/common/settings_file.c) read
 * against serve's settings table, as serve_conf_load reads it: the YAML reader (libyaml's events
 * into a bounded tree), then settings_file_apply() with the global rows and, for each item of
 * `routes`, the route rows.
 *
 * The one idea: whatever the bytes, the reader either gives a tree whose top is a mapping or one
 * error message of one line that starts with the file's name and a position; the walk over the
 * table does the same; and everything is freed (LSan) whichever way it ends.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/settings_file.h"
#include "loopback.h" /* FZ_CHECK */
#include "common/commands.h"
#include "serve/cmd_serve.h"

#define FILE_NAME "fuzz.yaml"

static void check_message(const settings_file_error *e)
{
    FZ_CHECK(strncmp(e->message, FILE_NAME ":", sizeof(FILE_NAME)) == 0, "no file:line:col");
    FZ_CHECK(strchr(e->message, '\n') == NULL, "a message of more than one line");
}

typedef struct routes {
    serve_route r[4];
    size_t n;
} routes;

/* The routes' list: each mapping read with the route rows, as cmd_serve_config.c does. */
static int on_routes(void *data, const setting *row, const settings_pair *entry,
                     settings_file_error *e)
{
    routes *rs = data;
    (void)row;
    const settings_node *v = entry->value;
    if (v->kind != SETTINGS_NODE_LIST)
        return settings_file_fail(e, FILE_NAME, v->mark, "routes", "expected a list");
    for (size_t i = 0; i < v->n && rs->n < 4; i++) {
        serve_route *r = &rs->r[rs->n++];
        settings_target to = {NULL, r};
        const setting *bad = NULL;
        settings_error se;
        FZ_CHECK(settings_defaults(&serve_settings, &to, &bad, &se) == 0, "a bad default");
        settings_file_scope sc = {FILE_NAME, "routes[0]", SETTINGS_ROUTE, 0, NULL, NULL, NULL};
        if (settings_file_apply(&serve_settings, v->items[i], &sc, &to, e) != 0)
            return -1;
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    settings_node *top = NULL;
    settings_file_error e;
    if (settings_file_parse(FILE_NAME, (const char *)data, size, &top, &e) != 0) {
        FZ_CHECK(top == NULL, "a tree and an error");
        check_message(&e);
        return 0;
    }
    FZ_CHECK(top != NULL && top->kind == SETTINGS_NODE_MAP, "the top is not a mapping");
    serve_config globals;
    memset(&globals, 0, sizeof(globals));
    routes rs;
    memset(&rs, 0, sizeof(rs));
    settings_target to = {&globals, NULL};
    settings_file_scope sc = {FILE_NAME, "", SETTINGS_GLOBAL, 0, on_routes, &rs, NULL};
    if (settings_file_apply(&serve_settings, top, &sc, &to, &e) != 0)
        check_message(&e);
    settings_free(&serve_settings, &to);
    for (size_t i = 0; i < rs.n; i++) {
        settings_target rt = {NULL, &rs.r[i]};
        settings_free(&serve_settings, &rt);
    }
    settings_node_free(top);
    return 0;
}
