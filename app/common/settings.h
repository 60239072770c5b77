/*
 * The settings of every subcommand, each declared once, as redis declares its configuration in
 * src/config.c: one table per subcommand (app/serve/cmd_serve_settings.c,
 * app/fetch/cmd_fetch_settings.c, app/upstream/cmd_upstream_settings.c), one row per setting.
 * A row says everything about its setting: the flag's names, its configuration-file key, where
 * its value lands (a field of the process-wide struct or of a route's), its type and range, its
 * default, its help line and its man-page paragraph. Everything else reads the table: the
 * command line (settings_cli_parse, over cli.c's argument walker), --help (settings_print_help),
 * the man pages' OPTIONS lists (settings_print_man, spliced into docs/man/ by `make man`) and the
 * defaults (settings_defaults).
 *
 * The one idea: a default is written as the text a user would type ("300", "127.0.0.1:8080") and
 * is parsed at start-up by the very parser that parses a user's value, so a default can never
 * disagree with its own range or be written twice. A default that is not a value ("online CPUs",
 * "the embedded simulator") is marked SETTINGS_DEFAULT_TEXT: shown in brackets, never parsed; the
 * field then starts zero and the command fills it in (a NULL URL means the embedded simulator).
 *
 * Parsers never print. A bad value gives a settings_error: `why` is a reason that stands on its
 * own ("must be 0 to 15") and `shown` the value as a message may quote it (a URL redacted, a
 * header escaped), so each front end words the message its own way:
 *
 *   command line:  tailcut serve: invalid value '16' for --hedge-extra: must be 0 to 15
 *   config file:   tailcut: FILE:12:5: routes[1].hedge.extra: must be 0 to 15
 *
 * (settings_error.message holds the whole command-line message for the few rows whose message
 * has another shape, e.g. "cannot read --upstream-ca file 'F'"; a file front end uses `why`.)
 *
 * A second front end (the YAML file of `serve --config`, issue 23) plugs in like this:
 *   1. zero a serve_config and, per route, a serve_route; settings_defaults() on each (a target
 *      with only .global set fills the global rows; with only .route, the route rows);
 *   2. for each scalar, settings_find_key(table, "hedge.extra") gives the row (its scope says
 *      whether the key may stand at the top or in a route); settings_set(row, text, target, &e);
 *      on failure print "FILE:L:C: KEY: " and e.why. A key whose value is a list ("upstreams",
 *      "forward_headers") calls settings_set once per item, as a repeatable flag does;
 *   3. the command line's settings win: settings_cli_parse() reports the rows it was given in
 *      *given (bit i for row i), and a route row given on the command line with --config is the
 *      exit-2 error of CONTRACT section 8;
 *   4. settings_free() on every target when done.
 * No second parser, no second list of names, ranges or defaults.
 */
#ifndef TAILCUT_APP_SETTINGS_H
#define TAILCUT_APP_SETTINGS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Where a row's field is: in the struct for the whole process, or in one route's. */
typedef enum settings_scope { SETTINGS_GLOBAL = 0, SETTINGS_ROUTE } settings_scope;

typedef enum settings_type {
    SETTINGS_UINT,    /* a whole number in [min, max]: uint64_t, size_t or unsigned field */
    SETTINGS_WORD,    /* one of words[]: int field (the word's value) */
    SETTINGS_TEXT,    /* text, checked by check (if any): char * field, an own copy */
    SETTINGS_URL,     /* an http:// or https:// URL with a host: char * field, an own copy;
                       * SETTINGS_REPEATABLE: a settings_list field, each value added */
    SETTINGS_ADDR,    /* HOST:PORT, HOST an IP address or localhost: settings_addr field */
    SETTINGS_DELAY,   /* MS in [min, max], or pNN[.N] (p50..p99.9): settings_delay field */
    SETTINGS_PERCENT, /* digits[.digits], 0 < PCT <= 100: uint64_t field, millionths of % */
    SETTINGS_SWITCH,  /* takes no value; stores min in an int field */
    SETTINGS_BOOL,    /* true or false (a file key: a flag is a SWITCH): int field, 1 or 0 */
    SETTINGS_CUSTOM,  /* check parses the value into the field; release frees it */
    SETTINGS_HELP,    /* --help: no field; the command line stops and says so */
    SETTINGS_SECTION, /* a file key whose value is a list of mappings, each read by the front
                       * end against the rows of another scope (serve's `routes`): no field */
} settings_type;
/* A SETTINGS_REPEATABLE row of type UINT keeps every value in a settings_uints field (a list of
 * statuses), of type TEXT (each checked by check, if any) or URL in a settings_list field (a list
 * of words or URLs); CUSTOM rows keep their own list. In a file, a repeatable row's value is a
 * list, and each item is one value. */

/* Row flags. */
enum {
    SETTINGS_REPEATABLE = 1u << 0,   /* each occurrence adds (said so in --help and man) */
    SETTINGS_DEFAULT_TEXT = 1u << 1, /* def describes a default that is not a value */
    SETTINGS_REQUIRED = 1u << 2,     /* a file's mapping must hold this key */
};

typedef struct settings_addr {
    char host[64];
    int port;
    int set; /* 1 once a value was stored */
} settings_addr;

typedef struct settings_delay {
    uint64_t ms;                /* a fixed delay */
    unsigned percentile_tenths; /* pNN: 500..999; 0 = the fixed ms */
} settings_delay;

/* The values of a repeatable SETTINGS_URL row, in the order given: own copies. */
typedef struct settings_list {
    char **v;
    size_t n;
} settings_list;

/* The values of a repeatable SETTINGS_UINT row, in the order given. */
typedef struct settings_uints {
    uint64_t *v;
    size_t n;
} settings_uints;

/* The most values a settings_list takes (a flag repeated more is a bad value). */
#define SETTINGS_LIST_MAX 256

typedef struct settings_word {
    const char *word;
    int value;
} settings_word;

#define SETTINGS_WHY_MAX 1024
#define SETTINGS_MESSAGE_MAX 5120 /* room for a file name of PATH_MAX */

typedef struct settings_error {
    const char *shown;                  /* the bad value as it may be quoted */
    char why[SETTINGS_WHY_MAX];         /* why it is bad, standing on its own */
    char message[SETTINGS_MESSAGE_MAX]; /* "": the usual shape; else the whole CLI message */
    char buf[256];                      /* where shown points when the value was rewritten */
} settings_error;

typedef struct setting setting;

/* Parses value into field (a row's own parser: SETTINGS_CUSTOM, or a SETTINGS_TEXT check with
 * field NULL). Returns 0, or -1 with e filled (settings_invalid / settings_failed). */
typedef int (*settings_check_fn)(const setting *s, const char *value, void *field,
                                 settings_error *e);
typedef void (*settings_release_fn)(void *field);

struct setting {
    const char *name;  /* the long flag without its dashes, or NULL: none */
    const char *key;   /* the config-file key ("hedge.extra"), or NULL: command line only */
    uint64_t min, max; /* UINT and DELAY's range; SWITCH stores min */
    const settings_word *words;  /* WORD: NULL-terminated */
    const char *def;             /* the default as a user types it, or NULL: none */
    const char *placeholder;     /* the value in --help and man: "MS", "HOST:PORT" */
    const char *help;            /* --help: lines split by '\n'; a last '\n' puts the
                                  * [default] on a line of its own */
    const char *man;             /* the man page's paragraph: roff, with '-' written plain (it
                                  * becomes \-); NULL: the help text */
    settings_check_fn check;     /* CUSTOM: the parser; TEXT: an optional check */
    settings_release_fn release; /* CUSTOM: frees what check kept, or NULL */
    size_t offset, size;         /* the field, in the scope's struct */
    settings_scope scope;        /* the struct offset is in */
    settings_type type;
    unsigned flags; /* SETTINGS_REPEATABLE, SETTINGS_DEFAULT_TEXT, SETTINGS_REQUIRED */
    unsigned kinds; /* a route row: the kinds of route (a command's bits) that take its file
                     * key; 0: every kind */
    char letter;    /* the short flag's letter, or 0 */
};

/* A field's place, for a row's initialiser: SETTINGS_FIELD(serve_route, batch_max). */
#define SETTINGS_FIELD(type, member)                                                               \
    .offset = offsetof(type, member), .size = sizeof(((type *)0)->member)

/* The most rows a table may hold (the *given bitmask has one bit per row). */
#define SETTINGS_MAX_ROWS 64

typedef struct settings_table {
    const char *cmd; /* "serve": the command line's messages say "tailcut serve: ..." */
    const setting *rows;
    size_t nrows;
} settings_table;

/* The structs a table's fields are in. NULL skips that scope's rows. Both start zeroed. */
typedef struct settings_target {
    void *global;
    void *route;
} settings_target;

/* ---- the parsers, for any front end -------------------------------------------------------- */

/* Parses value for s and stores it in s's field in to (a single-valued setting replaces what
 * was there, a repeatable one adds). Returns 0, or -1 with e filled and the field unchanged. */
int settings_set(const setting *s, const char *value, const settings_target *to, settings_error *e);

/* Stores the default of every row of to's scopes that has one (and is a value). Returns 0, or
 * -1 with *bad the row whose default did not parse (a bug in the table: its unit test fails). */
int settings_defaults(const settings_table *t, const settings_target *to, const setting **bad,
                      settings_error *e);

/* Stores def (a default as a user types it) in s's field, as settings_defaults does: a repeatable
 * row's list is emptied first and def is its values separated by ", ". Returns 0 or -1. */
int settings_set_default(const setting *s, const char *def, const settings_target *to,
                         settings_error *e);

/* Frees what s's field in to owns and zeroes it (a list becomes empty). */
void settings_clear(const setting *s, const settings_target *to);

/* Frees what the fields of to's scopes own (copies of text and URLs, lists) and zeroes them. */
void settings_free(const settings_table *t, const settings_target *to);

/* The row whose config-file key is key, or NULL. */
const setting *settings_find_key(const settings_table *t, const char *key);

/* The row whose long flag is name (without dashes), or NULL. */
const setting *settings_find(const settings_table *t, const char *name);

/* The row's flag as a message names it: "--hedge-extra", or "-X" when it has no long name. */
const char *settings_flag(const setting *s, char *buf, size_t size);

/* Fills e for a value of the usual shape ("invalid value 'SHOWN' for FLAG: WHY"). Returns -1. */
int settings_invalid(settings_error *e, const char *shown, const char *why_fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Fills e with why and a whole command-line message of another shape. Returns -1. */
int settings_failed(settings_error *e, const char *why, const char *message_fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The command-line message for e from row s (without the "tailcut CMD: " prefix). */
const char *settings_message(const setting *s, settings_error *e);

/* The value parsers behind the types, also usable alone. Each returns 0 or -1 with e filled. */
int settings_parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *out,
                        settings_error *e);
int settings_parse_addr(const char *s, settings_addr *out, settings_error *e);
int settings_parse_delay(const char *s, uint64_t min, uint64_t max, settings_delay *out,
                         settings_error *e);
/* digits[.digits], 0 < PCT <= 100, or off (0). */
int settings_parse_percent(const char *s, uint64_t *percent_e6, settings_error *e);
int settings_parse_url(const char *s, settings_error *e);

/* Opens the access log a value names: "-" is stdout, "off" none (NULL), else FILE opened for
 * appending. Returns 0 or -1 with e filled. */
int settings_open_access_log(const char *value, FILE **out, settings_error *e);

/* A SETTINGS_TEXT check: the value is not empty ("expected -, a file or off"). */
int settings_check_access_log(const setting *s, const char *value, void *field, settings_error *e);

/* ---- the command line ---------------------------------------------------------------------- */

enum { SETTINGS_CLI_OK = 0, SETTINGS_CLI_HELP = 1, SETTINGS_CLI_BAD = 2 };

/* What an operand (an argument that is no option) becomes: 0, or -1 after a one-line message. */
typedef int (*settings_operand_fn)(void *data, const char *arg);

/* Reads argv[1..argc) against t into to: each option's value through settings_set, in order (so
 * the last value of a single-valued flag wins). operand may be NULL: an operand is then "unexpected
 * argument". Prints the one-line message of the first bad option or value on stderr and returns
 * SETTINGS_CLI_BAD; returns SETTINGS_CLI_HELP at --help (nothing after it is read), else
 * SETTINGS_CLI_OK. given (may be NULL) gets bit i for each row i given. */
int settings_cli_parse(const settings_table *t, int argc, char **argv, const settings_target *to,
                       settings_operand_fn operand, void *data, uint64_t *given);

/* How a subcommand reads its command line (settings_read_cli). */
typedef struct settings_cli {
    void (*usage)(FILE *out);    /* prints the whole --help (calling settings_print_help) */
    settings_operand_fn operand; /* NULL: no operand is expected */
    void *data;                  /* operand's */
    uint64_t *given;             /* may be NULL */
} settings_cli;

/* The start of every subcommand: the defaults of to's scopes, then the command line. Returns -1
 * to go on, else the exit status: 0 after --help (usage printed), 2 after a bad option or value
 * (said on stderr), 1 when a default of the table does not parse (a bug its unit test catches). */
int settings_read_cli(const settings_table *t, int argc, char **argv, const settings_target *to,
                      const settings_cli *cli);

/* Prints "tailcut CMD: " and the command-line message for e, a bad value of the flag name (for a
 * value checked after the command line, such as the access log's file). */
void settings_cli_error(const settings_table *t, const char *name, settings_error *e);

/* The index of row s in t, for *given. */
size_t settings_index(const settings_table *t, const setting *s);

/* The option lines of --help, each row's default in brackets, then the parsing rules. */
void settings_print_help(FILE *out, const settings_table *t);

/* The OPTIONS list of the man page (roff: one .TP entry a row), each default in brackets. */
void settings_print_man(FILE *out, const settings_table *t);

/* ---- rows more than one subcommand has, written once ----------------------------------------
 * Each expands to what the row is everywhere: name, type, range, default, placeholder. A table
 * adds the rest: {SETTINGS_ROW_DRAIN_TIMEOUT, .help = "...", SETTINGS_FIELD(app, drain_ms)}. */

extern const settings_word settings_http_engines[];       /* native, curl */
extern const settings_word settings_access_log_formats[]; /* text, json */

/* The longest time any setting in milliseconds may be: an hour. */
#define SETTINGS_MAX_MS 3600000

#define SETTINGS_ROW_DRAIN_TIMEOUT                                                                 \
    .name = "drain-timeout", .type = SETTINGS_UINT, .min = 0, .max = SETTINGS_MAX_MS,              \
    .def = "10000", .placeholder = "MS"
#define SETTINGS_ROW_ACCESS_LOG                                                                    \
    .name = "access-log", .type = SETTINGS_TEXT, .check = settings_check_access_log, .def = "-",   \
    .placeholder = "-|FILE|off"
#define SETTINGS_ROW_ACCESS_LOG_FORMAT                                                             \
    .name = "access-log-format", .type = SETTINGS_WORD, .words = settings_access_log_formats,      \
    .def = "text", .placeholder = "text|json"
#define SETTINGS_ROW_HTTP_ENGINE                                                                   \
    .name = "http-engine", .type = SETTINGS_WORD, .words = settings_http_engines, .def = "native", \
    .placeholder = "native|curl"
#define SETTINGS_ROW_HELP .name = "help", .letter = 'h', .type = SETTINGS_HELP

/* A number written once, for a default that follows a library's: SETTINGS_STR(TC_X) is "10000". */
#define SETTINGS_STR_(x) #x
#define SETTINGS_STR(x) SETTINGS_STR_(x)

#endif /* TAILCUT_APP_SETTINGS_H */
