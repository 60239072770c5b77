/*
 * Strict parsing of command-line values. "Strict" means the whole string must be the value: no
 * sign, no blanks, no unit suffix; a value out of range is an error, never clamped.
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

void cli_bad_option(const char *cmd, const char *arg)
{
    cli_error(cmd, "unknown option or missing value: '%s' (see 'tailcut %s --help')", arg, cmd);
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
    if (hlen >= 2 && s[0] == '[' && s[hlen - 1] == ']') {
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
    if (strcmp(host, "localhost") == 0)
        (void)snprintf(host, hostlen, "127.0.0.1"); /* fits: hostlen > strlen("localhost") */
    *port = (int)p;
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
    } else {
        *out = fopen(value, "a");
        if (*out == NULL) {
            cli_error(cmd, "cannot open access log '%s'", value);
            return -1;
        }
    }
    return 0;
}

int cli_flag_is(const char *arg, const char *name, const char **inline_value)
{
    size_t n = strlen(name);
    if (strncmp(arg, name, n) != 0)
        return 0;
    if (arg[n] == '\0') {
        *inline_value = NULL;
        return 1;
    }
    if (name[1] != '-') { /* -cVALUE */
        *inline_value = arg + n;
        return 1;
    }
    if (arg[n] == '=') {
        *inline_value = arg + n + 1;
        return 1;
    }
    return 0;
}

const char *cli_take_option(const char *cmd, const char *const *names, size_t n, int argc,
                            char **argv, int *i, const char **value)
{
    const char *arg = argv[*i];
    for (size_t k = 0; k < n; k++) {
        if (!cli_flag_is(arg, names[k], value))
            continue;
        if (*value == NULL) {
            if (*i + 1 >= argc)
                break;
            *value = argv[++*i];
        }
        return names[k];
    }
    cli_bad_option(cmd, arg);
    return NULL;
}
