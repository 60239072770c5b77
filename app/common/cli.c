/*
 * The command line of every subcommand: one table-driven argument walker. It matches names
 * whole, so a table can grow without making any existing spelling ambiguous. The values are
 * settings.c's to parse.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

void cli_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    (void)fprintf(stderr, "tailcut %s: ", cmd);
    va_start(ap, fmt);
    (void)vfprintf(stderr, fmt, ap);
    va_end(ap);
    (void)fputc('\n', stderr);
}

/* ---- the option parser ---------------------------------------------------------------------- */

void cli_parser_init(cli_parser *p, const char *cmd, const cli_option *opts, size_t nopts, int argc,
                     char **argv)
{
    memset(p, 0, sizeof(*p));
    p->cmd = cmd;
    p->opts = opts;
    p->nopts = nopts;
    p->argc = argc;
    p->argv = argv;
    p->next = 1;
}

static const cli_option *find_long(const cli_parser *p, const char *name, size_t len)
{
    for (size_t k = 0; k < p->nopts; k++) {
        const char *n = p->opts[k].name;
        if (n != NULL && strlen(n) == len && memcmp(n, name, len) == 0)
            return &p->opts[k];
    }
    return NULL;
}

static const cli_option *find_short(const cli_parser *p, char c)
{
    for (size_t k = 0; k < p->nopts; k++) {
        if (p->opts[k].short_name != 0 && p->opts[k].short_name == c)
            return &p->opts[k];
    }
    return NULL;
}

int cli_next(cli_parser *p, const char **value)
{
    *value = NULL;
    if (p->next < p->argc && !p->only_operands && strcmp(p->argv[p->next], "--") == 0) {
        p->only_operands = 1;
        p->next++;
    }
    if (p->next >= p->argc)
        return CLI_END;
    const char *arg = p->argv[p->next++];
    if (p->only_operands || arg[0] != '-' || arg[1] == '\0') {
        *value = arg;
        return CLI_OPERAND;
    }

    const cli_option *o;
    const char *attached = NULL; /* the value in --name=VALUE or -xVALUE */
    char shown[64];              /* the option as the user wrote it, without its value */
    if (arg[1] == '-') {
        const char *name = arg + 2;
        const char *eq = strchr(name, '=');
        size_t len = eq != NULL ? (size_t)(eq - name) : strlen(name);
        (void)snprintf(shown, sizeof(shown), "--%.*s", (int)len, name); /* may truncate: a name */
        o = find_long(p, name, len);
        if (eq != NULL)
            attached = eq + 1;
    } else {
        (void)snprintf(shown, sizeof(shown), "-%c", arg[1]);
        o = find_short(p, arg[1]);
        if (arg[2] != '\0')
            attached = arg + 2;
    }
    if (o == NULL) {
        cli_error(p->cmd, "unknown option '%s' (see 'tailcut %s --help')", shown, p->cmd);
        return CLI_ERROR;
    }
    if (!(o->flags & CLI_VALUE)) {
        if (attached != NULL) {
            cli_error(p->cmd, "option '%s' takes no value", shown);
            return CLI_ERROR;
        }
        return o->id;
    }
    if (attached == NULL) {
        if (p->next >= p->argc) {
            cli_error(p->cmd, "option '%s' needs a value (see 'tailcut %s --help')", shown, p->cmd);
            return CLI_ERROR;
        }
        attached = p->argv[p->next++];
    }
    *value = attached;
    return o->id;
}

void cli_print_option(FILE *out, const cli_option *o)
{
    enum { HELP_COLUMN = 29 };
    char left[64];
    size_t n = 0;
    /* "-c, --concurrency N", "-i FILE", "    --per-host N": long names line up */
    if (o->short_name != 0)
        n += (size_t)snprintf(left, sizeof(left), "-%c%s", o->short_name, o->name ? ", " : "");
    else
        n += (size_t)snprintf(left, sizeof(left), "    ");
    if (o->name != NULL && n < sizeof(left))
        n += (size_t)snprintf(left + n, sizeof(left) - n, "--%s", o->name);
    if ((o->flags & CLI_VALUE) && n < sizeof(left))
        (void)snprintf(left + n, sizeof(left) - n, " %s", o->value);
    int width = fprintf(out, "  %s", left);
    for (const char *h = o->help; *h != '\0';) {
        const char *nl = strchr(h, '\n');
        int len = nl != NULL ? (int)(nl - h) : (int)strlen(h);
        if (width >= HELP_COLUMN) {
            (void)fputc('\n', out);
            width = 0;
        }
        (void)fprintf(out, "%*s%.*s", HELP_COLUMN - width, "", len, h);
        width = HELP_COLUMN + len;
        h += len;
        if (*h == '\n')
            h++;
    }
    (void)fprintf(out, "%s\n", o->flags & CLI_REPEATABLE ? " (repeatable)" : "");
}

void cli_print_rules(FILE *out)
{
    (void)fprintf(out,
                  "\nA flag given twice takes its last value, except one marked (repeatable),\n"
                  "which takes each. Long names are never abbreviated. --name=VALUE is the same\n"
                  "as --name VALUE, and -- ends the options.\n");
}

void cli_print_options(FILE *out, const cli_option *opts, size_t nopts)
{
    for (size_t k = 0; k < nopts; k++)
        cli_print_option(out, &opts[k]);
    cli_print_rules(out);
}
