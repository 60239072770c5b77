/*
 * The command line's argument walker, shared by the subcommands, and the one-line error every
 * subcommand prints (bad flag or value: one line on stderr, exit status 2). The rows it walks are
 * made from each subcommand's settings table (settings.h), which also parses the values.
 */
#ifndef TAILCUT_APP_CLI_H
#define TAILCUT_APP_CLI_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define CLI_EXIT_OK 0
#define CLI_EXIT_FAILURE 1
#define CLI_EXIT_USAGE 2

typedef int (*cmd_fn)(int argc, char **argv);

/* Prints "tailcut CMD: MESSAGE" on stderr. */
void cli_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * The one argument walker of every subcommand. settings_cli_parse() hands it one row per flag of
 * a settings table; it matches each argument against the table by its whole name, so
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
