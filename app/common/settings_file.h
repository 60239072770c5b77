/*
 * The configuration file: the second front end of the settings tables (settings.h, issue 23).
 *
 * Two steps. The reader turns a YAML file into a small tree of nodes, each with its line and
 * column: libyaml's event parser (yaml_parser_parse) gives every event a mark, and the reader
 * keeps only what a configuration needs: mappings, sequences and scalars as text. It is bounded
 * (file size, depth, node count, scalar length) and refuses what would make the file mean more
 * than it shows: aliases and anchors, tags, more than one document. Scalars stay text: YAML's
 * implicit typing never runs, so `access_log: off` is the word off and each key's own parser
 * (the table's) reads its value.
 *
 * Then settings_file_apply() reads a mapping node against a table: each key finds its row
 * (settings_find_key; a group such as `hedge:` holds the rows "hedge.*"), each scalar goes through
 * settings_set, a repeatable row takes a list (each item one value, replacing the default), and a
 * SETTINGS_SECTION row hands its list of mappings back to the caller. Errors carry the position
 * CONTRACT section 8 asks for: the key's for an unknown or a duplicate key (the second one), the
 * value's for a wrong type or a bad value, the mapping's for a missing key.
 */
#ifndef TAILCUT_APP_SETTINGS_FILE_H
#define TAILCUT_APP_SETTINGS_FILE_H

#include <stddef.h>
#include <stdint.h>

#include "settings.h"

/* The reader's limits: a file past one of them is an error that names it. */
#define SETTINGS_FILE_MAX_BYTES ((size_t)1024 * 1024)
#define SETTINGS_FILE_MAX_DEPTH 16
#define SETTINGS_FILE_MAX_NODES 20000
#define SETTINGS_FILE_MAX_SCALAR 8192

typedef enum settings_node_kind {
    SETTINGS_NODE_SCALAR = 0,
    SETTINGS_NODE_LIST,
    SETTINGS_NODE_MAP,
} settings_node_kind;

typedef struct settings_mark {
    unsigned line, col; /* from 1 */
} settings_mark;

typedef struct settings_node settings_node;

/* A mapping's entry: its key (a scalar's text) and where the key stands, and its value. */
typedef struct settings_pair {
    char *key;
    settings_mark key_mark;
    settings_node *value;
} settings_pair;

struct settings_node {
    settings_node_kind kind;
    settings_mark mark; /* where the node starts */
    char *text;         /* a scalar's text (NUL-terminated; the reader refuses a NUL in it) */
    size_t len;
    settings_node **items; /* a list's items */
    settings_pair *pairs;  /* a mapping's entries, in the file's order */
    size_t n;
};

/* The first error of a file: "FILE:L:C: KEY: WHY" (no KEY for a syntax error). */
typedef struct settings_file_error {
    char message[SETTINGS_MESSAGE_MAX];
} settings_file_error;

/* Reads the YAML text of file into a tree (*out, freed with settings_node_free): one document
 * whose top is a mapping. Returns 0, or -1 with e's message (file names the file in it). */
int settings_file_parse(const char *file, const char *text, size_t len, settings_node **out,
                        settings_file_error *e);

/* Reads the file at path (at most SETTINGS_FILE_MAX_BYTES) and parses it. Returns 0 or -1. */
int settings_file_load(const char *path, settings_node **out, settings_file_error *e);

void settings_node_free(settings_node *n);

/* The entry of map whose key is key, or NULL. */
const settings_pair *settings_node_get(const settings_node *map, const char *key);

/* Fills e with "FILE:L:C: PATH: WHY" (PATH may be NULL or ""). Returns -1. */
int settings_file_fail(settings_file_error *e, const char *file, settings_mark at, const char *path,
                       const char *why_fmt, ...) __attribute__((format(printf, 5, 6)));

/* What settings_file_apply reads a mapping for. */
typedef struct settings_file_scope {
    const char *file;     /* for the messages */
    const char *path;     /* the mapping's own key path ("routes[1]"), "" at the top */
    settings_scope scope; /* the rows whose keys it may hold */
    unsigned kind;        /* a route's kind bit: a row whose .kinds leaves it out is unknown */
    /* A SETTINGS_SECTION row's value (its key's entry): the caller reads it. Returns 0, or -1
     * with e filled. NULL: a section key is unknown here. */
    int (*section)(void *data, const setting *row, const settings_pair *entry,
                   settings_file_error *e);
    void *data;
    uint64_t *seen; /* may be NULL: bit i for each row i the mapping set */
} settings_file_scope;

/* Applies every key of map (a mapping node) to to, through t's rows of sc->scope (and kind).
 * Every row of that scope marked SETTINGS_REQUIRED must be there. Returns 0, or -1 with e's
 * message: the first bad key or value, by CONTRACT section 8's position rules. */
int settings_file_apply(const settings_table *t, const settings_node *map,
                        const settings_file_scope *sc, const settings_target *to,
                        settings_file_error *e);

#endif /* TAILCUT_APP_SETTINGS_FILE_H */
