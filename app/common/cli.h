/*
 * Command-line helpers shared by the subcommands: strict number and address parsing with the
 * one-line error messages every subcommand uses (bad flag or value: one line on stderr, exit
 * status 2).
 */
#ifndef TAILCUT_APP_CLI_H
#define TAILCUT_APP_CLI_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define TC_EXIT_OK 0
#define TC_EXIT_FAILURE 1
#define TC_EXIT_USAGE 2

typedef int (*cmd_fn)(int argc, char **argv);

/* Parses s as a whole decimal number in [min, max]: ASCII digits only, no sign, no spaces.
 * On failure prints "tailcut CMD: invalid value 'S' for FLAG: ..." and returns -1. */
int cli_parse_u64(const char *cmd, const char *flag, const char *s, uint64_t min, uint64_t max,
                  uint64_t *out);

/* Parses HOST:PORT or [V6HOST]:PORT, port 0..65535; HOST is an IPv4 or IPv6 address, or
 * localhost (127.0.0.1), never another name. Returns 0 or -1 with a message. */
int cli_parse_listen(const char *cmd, const char *flag, const char *s, char *host, size_t hostlen,
                     int *port);

/* Prints "tailcut CMD: MESSAGE" on stderr. */
void cli_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Parses --http-engine: "native" or "curl". Returns 0 or -1 with a message. The
 * value is an int holding a tc_client_engine, so that this header needs no library header. */
int cli_parse_http_engine(const char *cmd, const char *value, int *engine);

/* Parses --hedge-delay: MS, a whole number 0..3600000, sets *ms and
 * *percentile_tenths = 0; or pNN[.N], NN from 50 to 99.9 with at most one decimal, sets
 * *percentile_tenths (500..999). Returns 0 or -1 with a message naming the flag. */
int cli_parse_hedge_delay(const char *cmd, const char *value, uint64_t *ms,
                          unsigned *percentile_tenths);

/* Parses --hedge-budget PCT: digits[.digits], 0 < PCT <= 100, at most 6 decimals;
 * sets *percent_e6 to PCT in millionths of a percent. Returns 0 or -1 with a message. */
int cli_parse_hedge_budget(const char *cmd, const char *value, uint64_t *percent_e6);

/* Opens the access log named by a flag value: "-" is stdout, "off" none (NULL), else FILE opened
 * for appending. Returns 0 or -1 with a message. */
int cli_open_access_log(const char *cmd, const char *value, FILE **out);

/* Parses --access-log-format: "text" or "json" (TC_ACCESS_LOG_TEXT / _JSON). Returns 0 or -1
 * with a message. */
int cli_parse_access_log_format(const char *cmd, const char *value, int *format);

/*
 * The one option parser of every subcommand. A subcommand describes its
 * options in a table; the parser matches each argument against the table by its whole name, so
 * no spelling is an abbreviation of another and a new row can never make an old spelling
 * ambiguous. `--name=VALUE` and `--name VALUE` are the same, short names take `-xVALUE` or
 * `-x VALUE`, `--` ends the options, and a lone `-` is an operand. Every occurrence is handed to
 * the caller in order, so a single-valued flag given twice ends with its last value, and a
 * CLI_REPEATABLE one sees each.
 */
enum {
    CLI_VALUE = 1u << 0,      /* takes a value */
    CLI_REPEATABLE = 1u << 1, /* each occurrence adds a value (said so in --help) */
};

typedef struct cli_option {
    const char *name;  /* long name without the dashes, or NULL */
    char short_name;   /* the letter of -x, or 0 */
    int id;            /* what cli_next() returns for it: > 0 */
    unsigned flags;    /* CLI_VALUE, CLI_REPEATABLE */
    const char *value; /* the value's placeholder in --help, e.g. "MS" */
    const char *help;  /* one line or more ('\n' between lines), [default] at the end */
} cli_option;

/* What cli_next() returns besides an option's id. */
enum { CLI_END = 0, CLI_OPERAND = -1, CLI_ERROR = -2 };

typedef struct cli_parser {
    const char *cmd;
    const cli_option *opts;
    size_t nopts;
    int argc;
    char **argv;
    int next;          /* index of the next argument */
    int only_operands; /* after "--" */
} cli_parser;

/* Sets up a parser over argv[1..argc) (argv[0] is the subcommand's name). */
void cli_parser_init(cli_parser *p, const char *cmd, const cli_option *opts, size_t nopts, int argc,
                     char **argv);

/* The next argument: an option's id with *value set to its value (NULL for a flag without one),
 * CLI_OPERAND with *value the argument, CLI_END when none is left, or CLI_ERROR after a one-line
 * message naming the option (unknown, missing value, value given to a flag that takes none). */
int cli_next(cli_parser *p, const char **value);

/* Prints one option as a --help line or more: "  -c, --concurrency N    help" (" (repeatable)"
 * after a CLI_REPEATABLE one's help). */
void cli_print_option(FILE *out, const cli_option *o);

/* Prints the parsing rules that close every --help (last value wins, and so on). */
void cli_print_rules(FILE *out);

/* Prints the options (cli_print_option each), then the rules. */
void cli_print_options(FILE *out, const cli_option *opts, size_t nopts);

#endif /* TAILCUT_APP_CLI_H */
