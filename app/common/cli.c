/*
 * The command line of every subcommand: one table-driven option parser, and strict parsing of
 * the values. The parser matches names whole, so a table can grow without making any existing
 * spelling ambiguous. "Strict" values mean the whole string must be the value: no sign, no
 * blanks, no unit suffix; a value out of range is an error, never clamped.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <uv.h>

#include "tailcut/client.h"
#include "tailcut/hedge.h"
#include "tailcut/server.h"
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

int cli_parse_u64(const char *cmd, const char *flag, const char *s, uint64_t min, uint64_t max,
                  uint64_t *out)
{
    uint64_t v = 0;
    if (s == NULL || *s == '\0') {
        cli_error(cmd, "invalid value '' for %s: expected a whole number", flag);
        return -1;
    }
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9') {
            cli_error(cmd, "invalid value '%s' for %s: expected a whole number", s, flag);
            return -1;
        }
        unsigned digit = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - digit) / 10) {
            cli_error(cmd, "invalid value '%s' for %s: too large", s, flag);
            return -1;
        }
        v = v * 10 + digit;
    }
    if (v < min || v > max) {
        cli_error(cmd, "invalid value '%s' for %s: must be from %llu to %llu", s, flag,
                  (unsigned long long)min, (unsigned long long)max);
        return -1;
    }
    *out = v;
    return 0;
}

int cli_parse_listen(const char *cmd, const char *flag, const char *s, char *host, size_t hostlen,
                     int *port)
{
    const char *colon = strrchr(s, ':');
    const char *h = s;
    size_t hlen;
    if (colon == NULL) {
        cli_error(cmd, "invalid value '%s' for %s: expected HOST:PORT", s, flag);
        return -1;
    }
    hlen = (size_t)(colon - s);
    int bracketed = hlen >= 2 && s[0] == '[' && s[hlen - 1] == ']';
    if (bracketed) {
        h = s + 1;
        hlen -= 2;
    }
    if (hlen == 0 || hlen >= hostlen) {
        cli_error(cmd, "invalid value '%s' for %s: expected HOST:PORT", s, flag);
        return -1;
    }
    uint64_t p;
    if (cli_parse_u64(cmd, flag, colon + 1, 0, 65535, &p) != 0)
        return -1;
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    if (!bracketed && strcmp(host, "localhost") == 0)
        (void)snprintf(host, hostlen, "127.0.0.1"); /* fits: hostlen > strlen("localhost") */
    /* The listener binds an address, never a name: a name is a bad value here, not a failure
     * to listen later (brackets hold an IPv6 address only). */
    unsigned char addr[16];
    if ((bracketed || uv_inet_pton(AF_INET, host, addr) != 0) &&
        uv_inet_pton(AF_INET6, host, addr) != 0) {
        cli_error(cmd,
                  "invalid value '%s' for %s: HOST must be an IP address (127.0.0.1, [::1]) or "
                  "localhost",
                  s, flag);
        return -1;
    }
    *port = (int)p;
    return 0;
}

int cli_parse_http_engine(const char *cmd, const char *value, int *engine)
{
    if (strcmp(value, "native") == 0) {
        *engine = TC_CLIENT_ENGINE_NATIVE;
        return 0;
    }
    if (strcmp(value, "curl") == 0) {
        *engine = TC_CLIENT_ENGINE_CURL;
        return 0;
    }
    cli_error(cmd, "invalid value '%s' for --http-engine: expected native or curl", value);
    return -1;
}

int cli_parse_hedge_delay(const char *cmd, const char *value, uint64_t *ms,
                          unsigned *percentile_tenths)
{
    const char *p = value;
    if (*p != 'p') {
        if (cli_parse_u64(cmd, "--hedge-delay", value, 0, 3600000, ms) != 0)
            return -1;
        *percentile_tenths = 0;
        return 0;
    }
    /* pNN or pNN.N: exactly two digits, then optionally '.' and exactly one */
    p++;
    int ok = p[0] >= '5' && p[0] <= '9' && p[1] >= '0' && p[1] <= '9';
    unsigned tenths = ok ? (unsigned)(p[0] - '0') * 100 + (unsigned)(p[1] - '0') * 10 : 0;
    if (ok && p[2] == '.') {
        ok = p[3] >= '0' && p[3] <= '9' && p[4] == '\0';
        tenths += ok ? (unsigned)(p[3] - '0') : 0;
    } else {
        ok = ok && p[2] == '\0';
    }
    if (!ok) {
        cli_error(cmd,
                  "invalid value '%s' for --hedge-delay: expected MS or pNN, NN from 50 to 99.9 "
                  "with at most one decimal (p95, p99, p99.9)",
                  value);
        return -1;
    }
    *percentile_tenths = tenths;
    return 0;
}

int cli_parse_hedge_budget(const char *cmd, const char *value, uint64_t *percent_e6)
{
    if (tc_hedge_budget_parse(value, percent_e6) != 0) {
        cli_error(cmd,
                  "invalid value '%s' for --hedge-budget: expected a percentage above 0 and up to "
                  "100, digits[.digits] (at most 6 decimals)",
                  value);
        return -1;
    }
    return 0;
}

/* Opens the access log named by a flag value: "-" is stdout, "off" none, else a file appended to.
 * Returns 0 or -1 with a message. */
int cli_open_access_log(const char *cmd, const char *value, FILE **out)
{
    if (strcmp(value, "off") == 0) {
        *out = NULL;
    } else if (strcmp(value, "-") == 0) {
        *out = stdout;
    } else if (*value == '\0') {
        cli_error(cmd, "invalid value '' for --access-log: expected -, a file or off");
        return -1;
    } else {
        *out = fopen(value, "a");
        if (*out == NULL) {
            cli_error(cmd, "invalid value '%s' for --access-log: cannot open it for appending: %s",
                      value, uv_strerror(uv_translate_sys_error(errno)));
            return -1;
        }
    }
    return 0;
}

int cli_parse_access_log_format(const char *cmd, const char *value, int *format)
{
    if (strcmp(value, "text") == 0) {
        *format = TC_ACCESS_LOG_TEXT;
        return 0;
    }
    if (strcmp(value, "json") == 0) {
        *format = TC_ACCESS_LOG_JSON;
        return 0;
    }
    cli_error(cmd, "invalid value '%s' for --access-log-format: expected text or json", value);
    return -1;
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
