/*
 * Command-line helpers shared by the subcommands: strict number and address parsing with the
 * one-line error messages of CONTRACT §0 (bad flag or value: message on stderr, exit status 2).
 */
#ifndef TAILCUT_APP_CLI_H
#define TAILCUT_APP_CLI_H

#include <stddef.h>
#include <stdint.h>

#define TC_EXIT_OK 0
#define TC_EXIT_FAILURE 1
#define TC_EXIT_USAGE 2

typedef int (*tc_command_fn)(int argc, char **argv);

/* Parses s as a whole decimal number in [min, max]: ASCII digits only, no sign, no spaces.
 * On failure prints "tailcut CMD: invalid value 'S' for FLAG: ..." and returns -1. */
int cli_parse_u64(const char *cmd, const char *flag, const char *s, uint64_t min, uint64_t max,
                  uint64_t *out);

/* Parses HOST:PORT or [V6HOST]:PORT, port 0..65535. Returns 0 or -1 with a message. */
int cli_parse_listen(const char *cmd, const char *flag, const char *s, char *host, size_t hostlen,
                     int *port);

/* Prints "tailcut CMD: MESSAGE" on stderr. */
void cli_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Reports an unknown option or a missing value the same way getopt_long does, in one line. */
void cli_bad_option(const char *cmd, const char *arg);

/* Opens the access log named by a flag value: "-" is stdout, "off" none (NULL), else FILE opened
 * for appending. Returns 0 or -1 with a message. */
#include <stdio.h>
int cli_open_access_log(const char *cmd, const char *value, FILE **out);

/* 1 if arg is the option name: exactly, or with an attached value ("--name=V" for long names,
 * "-nV" for short ones), which goes to *inline_value (else NULL). */
int cli_flag_is(const char *arg, const char *name, const char **inline_value);

/* Takes the option at argv[*i], which must be one of names[0..n) and have a value, attached or
 * as the next argument (then *i advances past it). Returns the matched name with *value set, or
 * NULL after a one-line usage message when it is no such option or its value is missing. */
const char *cli_take_option(const char *cmd, const char *const *names, size_t n, int argc,
                            char **argv, int *i, const char **value);

#endif /* TAILCUT_APP_CLI_H */
