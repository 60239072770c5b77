/*
 * The configuration file's reader and its walk over a settings table (settings_file.h says what
 * each does). libyaml parses; the reader only keeps a tree with marks, within its limits, and
 * the walk lets the table's own parsers read every value, so a key in the file and its flag
 * share one declaration, one range and one message.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>
#include <yaml.h>

#include "base/alloc.h"
#include "settings_file.h"

/* The longest key path a message shows ("routes[12].hedge.budget_percent" and more). */
#define PATH_MAX_LEN 256

int settings_file_fail(settings_file_error *e, const char *file, settings_mark at, const char *path,
                       const char *why_fmt, ...)
{
    char why[SETTINGS_WHY_MAX];
    va_list ap;
    va_start(ap, why_fmt);
    (void)vsnprintf(why, sizeof(why), why_fmt, ap);
    va_end(ap);
    if (path != NULL && path[0] != '\0')
        (void)snprintf(e->message, sizeof(e->message), "%s:%u:%u: %s: %s", file, at.line, at.col,
                       path, why);
    else
        (void)snprintf(e->message, sizeof(e->message), "%s:%u:%u: %s", file, at.line, at.col, why);
    /* One line, whatever a key or a value held (a quoted key may hold a line break). */
    for (char *p = e->message; *p != '\0'; p++)
        if ((unsigned char)*p < 0x20)
            *p = '?';
    return -1;
}

/* ---- the tree ------------------------------------------------------------------------------- */

void settings_node_free(settings_node *n)
{
    if (n == NULL)
        return;
    for (size_t i = 0; n->kind == SETTINGS_NODE_LIST && i < n->n; i++)
        settings_node_free(n->items[i]);
    for (size_t i = 0; n->kind == SETTINGS_NODE_MAP && i < n->n; i++) {
        tc__free(n->pairs[i].key);
        settings_node_free(n->pairs[i].value);
    }
    tc__free(n->items);
    tc__free(n->pairs);
    tc__free(n->text);
    tc__free(n);
}

const settings_pair *settings_node_get(const settings_node *map, const char *key)
{
    for (size_t i = 0; map != NULL && map->kind == SETTINGS_NODE_MAP && i < map->n; i++)
        if (strcmp(map->pairs[i].key, key) == 0)
            return &map->pairs[i];
    return NULL;
}

/* ---- the reader ----------------------------------------------------------------------------- */

typedef struct reader {
    const char *file;
    settings_file_error *e;
    settings_node *root;
    settings_node *stack[SETTINGS_FILE_MAX_DEPTH];
    size_t depth;
    size_t nodes;
    int documents;
} reader;

static settings_mark mark_of(yaml_mark_t m)
{
    settings_mark at = {(unsigned)m.line + 1, (unsigned)m.column + 1};
    return at;
}

static int out_of_memory(reader *r, yaml_mark_t at)
{
    return settings_file_fail(r->e, r->file, mark_of(at), NULL, "out of memory");
}

/* A map expects a key when it has no entry yet or its last entry has its value. */
static int expects_key(const settings_node *map)
{
    return map->n == 0 || map->pairs[map->n - 1].value != NULL;
}

/* Hangs node under the container on top of the stack (or makes it the root). A mapping's key
 * must be a scalar: its text becomes the entry's key and the node goes. On failure node is
 * freed. */
static int attach(reader *r, settings_node *node, yaml_mark_t at)
{
    if (++r->nodes > SETTINGS_FILE_MAX_NODES) {
        settings_node_free(node);
        return settings_file_fail(r->e, r->file, mark_of(at), NULL, "too many values (at most %d)",
                                  SETTINGS_FILE_MAX_NODES);
    }
    if (r->depth == 0) {
        r->root = node;
        return 0;
    }
    settings_node *parent = r->stack[r->depth - 1];
    if (parent->kind == SETTINGS_NODE_LIST) {
        settings_node **grown =
            tc__realloc(parent->items, (parent->n + 1) * sizeof(settings_node *));
        if (grown == NULL) {
            settings_node_free(node);
            return out_of_memory(r, at);
        }
        parent->items = grown;
        grown[parent->n++] = node;
        return 0;
    }
    if (!expects_key(parent)) {
        parent->pairs[parent->n - 1].value = node;
        return 0;
    }
    if (node->kind != SETTINGS_NODE_SCALAR) {
        settings_node_free(node);
        return settings_file_fail(r->e, r->file, mark_of(at), NULL,
                                  "a key must be plain text, not a list or a mapping");
    }
    settings_pair *grown = tc__realloc(parent->pairs, (parent->n + 1) * sizeof(*grown));
    if (grown == NULL) {
        settings_node_free(node);
        return out_of_memory(r, at);
    }
    parent->pairs = grown;
    grown[parent->n].key = node->text;
    grown[parent->n].key_mark = node->mark;
    grown[parent->n].value = NULL;
    parent->n++;
    node->text = NULL;
    settings_node_free(node);
    return 0;
}

static settings_node *node_new(settings_node_kind kind, yaml_mark_t at)
{
    settings_node *n = tc__calloc(1, sizeof(*n));
    if (n != NULL) {
        n->kind = kind;
        n->mark = mark_of(at);
    }
    return n;
}

/* What the reader refuses on any node: an anchor (aliases are refused where they appear) and
 * an explicit tag, which would change how the value reads. */
static int plain_node(reader *r, const yaml_event_t *ev, const yaml_char_t *anchor,
                      const yaml_char_t *tag)
{
    if (anchor != NULL)
        return settings_file_fail(r->e, r->file, mark_of(ev->start_mark), NULL,
                                  "anchors and aliases are not supported");
    if (tag != NULL)
        return settings_file_fail(r->e, r->file, mark_of(ev->start_mark), NULL,
                                  "tags (%s) are not supported: write the value, quoted if need be",
                                  (const char *)tag);
    return 0;
}

static int on_scalar(reader *r, const yaml_event_t *ev)
{
    const yaml_char_t *v = ev->data.scalar.value;
    size_t len = ev->data.scalar.length;
    if (plain_node(r, ev, ev->data.scalar.anchor, ev->data.scalar.tag) != 0)
        return -1;
    if (len > SETTINGS_FILE_MAX_SCALAR)
        return settings_file_fail(r->e, r->file, mark_of(ev->start_mark), NULL,
                                  "a value longer than %d bytes", SETTINGS_FILE_MAX_SCALAR);
    if (memchr(v, '\0', len) != NULL)
        return settings_file_fail(r->e, r->file, mark_of(ev->start_mark), NULL,
                                  "a value holds a NUL byte");
    settings_node *n = node_new(SETTINGS_NODE_SCALAR, ev->start_mark);
    if (n == NULL || (n->text = tc__malloc(len + 1)) == NULL) {
        tc__free(n);
        return out_of_memory(r, ev->start_mark);
    }
    memcpy(n->text, v, len);
    n->text[len] = '\0';
    n->len = len;
    return attach(r, n, ev->start_mark);
}

static int on_start(reader *r, const yaml_event_t *ev, settings_node_kind kind)
{
    const yaml_char_t *anchor =
        kind == SETTINGS_NODE_MAP ? ev->data.mapping_start.anchor : ev->data.sequence_start.anchor;
    const yaml_char_t *tag =
        kind == SETTINGS_NODE_MAP ? ev->data.mapping_start.tag : ev->data.sequence_start.tag;
    if (plain_node(r, ev, anchor, tag) != 0)
        return -1;
    if (r->depth == SETTINGS_FILE_MAX_DEPTH)
        return settings_file_fail(r->e, r->file, mark_of(ev->start_mark), NULL,
                                  "nested deeper than %d levels", SETTINGS_FILE_MAX_DEPTH);
    settings_node *n = node_new(kind, ev->start_mark);
    if (n == NULL)
        return out_of_memory(r, ev->start_mark);
    if (attach(r, n, ev->start_mark) != 0)
        return -1;
    r->stack[r->depth++] = n;
    return 0;
}

/* One event into the tree. Returns 1 at the end of the stream, 0 to go on, -1 on an error. */
static int on_event(reader *r, const yaml_event_t *ev)
{
    switch (ev->type) {
    case YAML_STREAM_END_EVENT:
        return 1;
    case YAML_DOCUMENT_START_EVENT:
        if (++r->documents > 1)
            return settings_file_fail(r->e, r->file, mark_of(ev->start_mark), NULL,
                                      "more than one document: a configuration is one");
        return 0;
    case YAML_ALIAS_EVENT:
        return settings_file_fail(r->e, r->file, mark_of(ev->start_mark), NULL,
                                  "anchors and aliases are not supported");
    case YAML_SCALAR_EVENT:
        return on_scalar(r, ev);
    case YAML_SEQUENCE_START_EVENT:
        return on_start(r, ev, SETTINGS_NODE_LIST);
    case YAML_MAPPING_START_EVENT:
        return on_start(r, ev, SETTINGS_NODE_MAP);
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT:
        r->depth--;
        return 0;
    default: /* stream start, document end, nothing */
        return 0;
    }
}

/* libyaml's own words for a syntax error, at its mark. */
static int syntax_error(reader *r, const yaml_parser_t *p)
{
    if (p->error == YAML_MEMORY_ERROR)
        return settings_file_fail(r->e, r->file, mark_of(p->problem_mark), NULL, "out of memory");
    const char *problem = p->problem != NULL ? p->problem : "not YAML";
    if (p->context != NULL)
        return settings_file_fail(r->e, r->file, mark_of(p->problem_mark), NULL, "%s %s", problem,
                                  p->context);
    return settings_file_fail(r->e, r->file, mark_of(p->problem_mark), NULL, "%s", problem);
}

int settings_file_parse(const char *file, const char *text, size_t len, settings_node **out,
                        settings_file_error *e)
{
    reader r;
    memset(&r, 0, sizeof(r));
    r.file = file;
    r.e = e;
    *out = NULL;
    settings_mark start = {1, 1};
    if (len > SETTINGS_FILE_MAX_BYTES)
        return settings_file_fail(e, file, start, NULL, "larger than %zu bytes",
                                  SETTINGS_FILE_MAX_BYTES);
    yaml_parser_t p;
    if (yaml_parser_initialize(&p) == 0)
        return settings_file_fail(e, file, start, NULL, "out of memory");
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    int rc = 0;
    while (rc == 0) {
        yaml_event_t ev;
        if (yaml_parser_parse(&p, &ev) == 0) {
            rc = syntax_error(&r, &p);
            break;
        }
        rc = on_event(&r, &ev);
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&p);
    if (rc < 0) {
        settings_node_free(r.root);
        return -1;
    }
    if (r.root == NULL || r.root->kind != SETTINGS_NODE_MAP) {
        settings_mark at = r.root != NULL ? r.root->mark : start;
        settings_node_free(r.root);
        return settings_file_fail(e, file, at, NULL,
                                  "expected a mapping of settings (key: value) at the top");
    }
    *out = r.root;
    return 0;
}

int settings_file_load(const char *path, settings_node **out, settings_file_error *e)
{
    settings_mark start = {1, 1};
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        (void)snprintf(e->message, sizeof(e->message), "cannot read %s: %s", path,
                       uv_strerror(uv_translate_sys_error(errno)));
        return -1;
    }
    char *text = tc__malloc(SETTINGS_FILE_MAX_BYTES + 1);
    if (text == NULL) {
        (void)fclose(f);
        return settings_file_fail(e, path, start, NULL, "out of memory");
    }
    size_t len = fread(text, 1, (size_t)SETTINGS_FILE_MAX_BYTES + 1, f);
    int failed = ferror(f);
    int err = errno;
    (void)fclose(f);
    int rc;
    if (failed) /* a directory, an I/O error */
        rc = -1, (void)snprintf(e->message, sizeof(e->message), "cannot read %s: %s", path,
                                uv_strerror(uv_translate_sys_error(err)));
    else
        rc = settings_file_parse(path, text, len, out, e);
    tc__free(text);
    return rc;
}

/* ---- applying a mapping to a table ---------------------------------------------------------- */

typedef struct walk {
    const settings_table *t;
    const settings_file_scope *sc;
    const settings_target *to;
    settings_file_error *e;
    uint64_t seen;
} walk;

static const char *node_kind_name(const settings_node *n)
{
    return n->kind == SETTINGS_NODE_MAP    ? "a mapping"
           : n->kind == SETTINGS_NODE_LIST ? "a list"
                                           : "text";
}

static int row_here(const walk *w, const setting *s)
{
    return s->key != NULL && s->scope == w->sc->scope &&
           (s->kinds == 0 || w->sc->kind == 0 || (s->kinds & w->sc->kind) != 0);
}

/* The row of this scope whose key is key, or NULL. */
static const setting *find_row(const walk *w, const char *key)
{
    for (size_t i = 0; i < w->t->nrows; i++)
        if (row_here(w, &w->t->rows[i]) && strcmp(w->t->rows[i].key, key) == 0)
            return &w->t->rows[i];
    return NULL;
}

/* 1 if some row of this scope has a key under group ("hedge" holds "hedge.extra"). */
static int is_group(const walk *w, const char *group)
{
    size_t n = strlen(group);
    for (size_t i = 0; i < w->t->nrows; i++) {
        const setting *s = &w->t->rows[i];
        if (row_here(w, s) && strncmp(s->key, group, n) == 0 && s->key[n] == '.')
            return 1;
    }
    return 0;
}

/* Why a key that no row of this scope takes is unknown, in the words a user can act on. */
static const char *unknown_why(const walk *w, const char *key)
{
    const setting *s = settings_find_key(w->t, key);
    if (s == NULL)
        return "unknown key";
    if (s->scope != w->sc->scope)
        return s->scope == SETTINGS_ROUTE ? "unknown key here (a route's key: it goes in a route)"
                                          : "unknown key here (a global key: it goes at the top)";
    return "unknown key for this kind of route";
}

static int value_error(walk *w, const settings_node *at, const char *path, settings_error *se)
{
    return settings_file_fail(w->e, w->sc->file, at->mark, path, "%s", se->why);
}

/* A repeatable row: its value is a list, each item one value; the list replaces the default. */
static int apply_list(walk *w, const setting *s, const settings_pair *p, const char *path)
{
    const settings_node *v = p->value;
    if (v->kind != SETTINGS_NODE_LIST)
        return settings_file_fail(w->e, w->sc->file, v->mark, path, "expected a list, not %s",
                                  node_kind_name(v));
    if (v->n == 0 && (s->flags & SETTINGS_REQUIRED))
        return settings_file_fail(w->e, w->sc->file, v->mark, path, "expected at least one value");
    settings_clear(s, w->to);
    for (size_t i = 0; i < v->n; i++) {
        char item[PATH_MAX_LEN + 24];
        (void)snprintf(item, sizeof(item), "%.*s[%zu]", PATH_MAX_LEN, path, i);
        const settings_node *it = v->items[i];
        if (it->kind != SETTINGS_NODE_SCALAR)
            return settings_file_fail(w->e, w->sc->file, it->mark, item, "expected text, not %s",
                                      node_kind_name(it));
        settings_error se;
        if (settings_set(s, it->text, w->to, &se) != 0)
            return value_error(w, it, item, &se);
    }
    return 0;
}

static int apply_map(walk *w, const settings_node *map, const char *path, const char *group);

static int apply_pair(walk *w, const settings_pair *p, const char *path, const char *group)
{
    char key[PATH_MAX_LEN], where[PATH_MAX_LEN];
    (void)snprintf(key, sizeof(key), "%s%s", group, p->key);
    (void)snprintf(where, sizeof(where), "%s%s%s", path, path[0] != '\0' ? "." : "", p->key);
    const settings_node *v = p->value;
    const setting *s = find_row(w, key);
    if (s == NULL && is_group(w, key)) {
        if (v->kind != SETTINGS_NODE_MAP)
            return settings_file_fail(w->e, w->sc->file, v->mark, where,
                                      "expected a mapping, not %s", node_kind_name(v));
        char sub[PATH_MAX_LEN + 2];
        (void)snprintf(sub, sizeof(sub), "%s.", key);
        return apply_map(w, v, where, sub);
    }
    if (s == NULL)
        return settings_file_fail(w->e, w->sc->file, p->key_mark, where, "%s", unknown_why(w, key));
    size_t index = settings_index(w->t, s);
    if (index < 64)
        w->seen |= (uint64_t)1 << index;
    if (s->type == SETTINGS_SECTION) {
        if (w->sc->section == NULL)
            return settings_file_fail(w->e, w->sc->file, p->key_mark, where, "unknown key");
        return w->sc->section(w->sc->data, s, p, w->e);
    }
    if (s->flags & SETTINGS_REPEATABLE)
        return apply_list(w, s, p, where);
    if (v->kind != SETTINGS_NODE_SCALAR)
        return settings_file_fail(w->e, w->sc->file, v->mark, where, "expected a value, not %s",
                                  node_kind_name(v));
    settings_error se;
    if (settings_set(s, v->text, w->to, &se) != 0)
        return value_error(w, v, where, &se);
    return 0;
}

static int apply_map(walk *w, const settings_node *map, const char *path, const char *group)
{
    for (size_t i = 0; i < map->n; i++) {
        const settings_pair *p = &map->pairs[i];
        for (size_t k = 0; k < i; k++) {
            if (strcmp(map->pairs[k].key, p->key) == 0) {
                char where[PATH_MAX_LEN];
                (void)snprintf(where, sizeof(where), "%s%s%s", path, path[0] != '\0' ? "." : "",
                               p->key);
                return settings_file_fail(w->e, w->sc->file, p->key_mark, where,
                                          "duplicate key (first at line %u)",
                                          map->pairs[k].key_mark.line);
            }
        }
        if (apply_pair(w, p, path, group) != 0)
            return -1;
    }
    return 0;
}

int settings_file_apply(const settings_table *t, const settings_node *map,
                        const settings_file_scope *sc, const settings_target *to,
                        settings_file_error *e)
{
    walk w = {t, sc, to, e, 0};
    if (map->kind != SETTINGS_NODE_MAP)
        return settings_file_fail(e, sc->file, map->mark, sc->path, "expected a mapping, not %s",
                                  node_kind_name(map));
    if (apply_map(&w, map, sc->path, "") != 0)
        return -1;
    for (size_t i = 0; i < t->nrows && i < 64; i++) {
        const setting *s = &t->rows[i];
        if ((s->flags & SETTINGS_REQUIRED) && row_here(&w, s) && !(w.seen & ((uint64_t)1 << i)))
            return settings_file_fail(e, sc->file, map->mark, sc->path, "missing key '%s'", s->key);
    }
    if (sc->seen != NULL)
        *sc->seen = w.seen;
    return 0;
}
