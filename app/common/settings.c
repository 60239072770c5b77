/*
 * The settings tables at work (settings.h says what a row declares and how a front end uses it):
 * the value parsers behind each type, which never print, and the command line, --help and man
 * page built from a table.
 *
 * "Strict" values: the whole string must be the value (no sign, no blanks, no unit suffix), and
 * a value out of range is an error, never clamped.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <uv.h>

#include "cli.h"
#include "http/forward_internal.h" /* tc__url_redact */
#include "settings.h"
#include "tailcut/client.h"
#include "tailcut/hedge.h"
#include "tailcut/server.h"

const settings_word settings_http_engines[] = {
    {"native", TC_CLIENT_ENGINE_NATIVE}, {"curl", TC_CLIENT_ENGINE_CURL}, {NULL, 0}};
const settings_word settings_access_log_formats[] = {
    {"text", TC_ACCESS_LOG_TEXT}, {"json", TC_ACCESS_LOG_JSON}, {NULL, 0}};

/* ---- errors --------------------------------------------------------------------------------- */

int settings_invalid(settings_error *e, const char *shown, const char *why_fmt, ...)
{
    va_list ap;
    e->shown = shown;
    e->message[0] = '\0';
    va_start(ap, why_fmt);
    (void)vsnprintf(e->why, sizeof(e->why), why_fmt, ap);
    va_end(ap);
    return -1;
}

int settings_failed(settings_error *e, const char *why, const char *message_fmt, ...)
{
    va_list ap;
    e->shown = NULL;
    (void)snprintf(e->why, sizeof(e->why), "%s", why);
    va_start(ap, message_fmt);
    (void)vsnprintf(e->message, sizeof(e->message), message_fmt, ap);
    va_end(ap);
    return -1;
}

const char *settings_flag(const setting *s, char *buf, size_t size)
{
    if (s->name != NULL)
        (void)snprintf(buf, size, "--%s", s->name);
    else if (s->letter != 0)
        (void)snprintf(buf, size, "-%c", s->letter);
    else
        (void)snprintf(buf, size, "%s", s->key != NULL ? s->key : "?");
    return buf;
}

const char *settings_message(const setting *s, settings_error *e)
{
    if (e->message[0] == '\0') {
        char flag[64];
        (void)snprintf(e->message, sizeof(e->message), "invalid value '%s' for %s: %s",
                       e->shown != NULL ? e->shown : "", settings_flag(s, flag, sizeof(flag)),
                       e->why);
    }
    return e->message;
}

/* ---- the value parsers ---------------------------------------------------------------------- */

int settings_parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *out, settings_error *e)
{
    uint64_t v = 0;
    if (*s == '\0')
        return settings_invalid(e, s, "expected a whole number");
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return settings_invalid(e, s, "expected a whole number");
        unsigned digit = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - digit) / 10)
            return settings_invalid(e, s, "too large");
        v = v * 10 + digit;
    }
    if (v < min || v > max)
        return settings_invalid(e, s, "must be %llu to %llu", (unsigned long long)min,
                                (unsigned long long)max);
    *out = v;
    return 0;
}

int settings_parse_addr(const char *s, settings_addr *out, settings_error *e)
{
    const char *colon = strrchr(s, ':');
    const char *h = s;
    size_t hlen;
    if (colon == NULL)
        return settings_invalid(e, s, "expected HOST:PORT");
    hlen = (size_t)(colon - s);
    int bracketed = hlen >= 2 && s[0] == '[' && s[hlen - 1] == ']';
    if (bracketed) {
        h = s + 1;
        hlen -= 2;
    }
    if (hlen == 0 || hlen >= sizeof(out->host))
        return settings_invalid(e, s, "expected HOST:PORT");
    uint64_t port = 0;
    if (settings_parse_uint(colon + 1, 0, 65535, &port, e) != 0)
        return -1; /* the message quotes the port */
    char host[sizeof(out->host)];
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    if (!bracketed && strcmp(host, "localhost") == 0)
        (void)snprintf(host, sizeof(host), "127.0.0.1");
    /* The listener binds an address, never a name: a name is a bad value here, not a failure
     * to listen later (brackets hold an IPv6 address only). */
    unsigned char addr[16];
    if ((bracketed || uv_inet_pton(AF_INET, host, addr) != 0) &&
        uv_inet_pton(AF_INET6, host, addr) != 0)
        return settings_invalid(e, s, "HOST must be an IP address (127.0.0.1, [::1]) or localhost");
    memcpy(out->host, host, sizeof(host));
    out->port = (int)port;
    out->set = 1;
    return 0;
}

int settings_parse_delay(const char *s, uint64_t min, uint64_t max, settings_delay *out,
                         settings_error *e)
{
    if (*s != 'p') {
        uint64_t ms;
        if (settings_parse_uint(s, min, max, &ms, e) != 0)
            return -1;
        out->ms = ms;
        out->percentile_tenths = 0;
        return 0;
    }
    /* pNN or pNN.N: exactly two digits, then optionally '.' and exactly one */
    const char *p = s + 1;
    int ok = p[0] >= '5' && p[0] <= '9' && p[1] >= '0' && p[1] <= '9';
    unsigned tenths = ok ? (unsigned)(p[0] - '0') * 100 + (unsigned)(p[1] - '0') * 10 : 0;
    if (ok && p[2] == '.') {
        ok = p[3] >= '0' && p[3] <= '9' && p[4] == '\0';
        tenths += ok ? (unsigned)(p[3] - '0') : 0;
    } else {
        ok = ok && p[2] == '\0';
    }
    if (!ok)
        return settings_invalid(e, s,
                                "expected MS or pNN, NN from 50 to 99.9 with at most one decimal "
                                "(p95, p99, p99.9)");
    out->percentile_tenths = tenths;
    return 0;
}

int settings_parse_percent(const char *s, uint64_t *percent_e6, settings_error *e)
{
    if (strcmp(s, "off") == 0) {
        *percent_e6 = 0;
        return 0;
    }
    if (tc_hedge_budget_parse(s, percent_e6) != 0)
        return settings_invalid(e, s,
                                "expected a percentage above 0 and up to 100, digits[.digits] "
                                "(at most 6 decimals), or off");
    return 0;
}

int settings_parse_url(const char *s, settings_error *e)
{
    const char *rest = NULL;
    if (strncmp(s, "http://", 7) == 0)
        rest = s + 7;
    else if (strncmp(s, "https://", 8) == 0)
        rest = s + 8;
    if (rest == NULL || *rest == '\0' || *rest == '/' || strpbrk(s, " \t\r\n") != NULL)
        /* a URL may carry credentials: shown redacted, as everywhere */
        return settings_invalid(e, tc__url_redact(s, e->buf, sizeof(e->buf)),
                                "expected an http:// or https:// URL");
    return 0;
}

static int parse_word(const setting *s, const char *value, int *out, settings_error *e)
{
    size_t n = 0;
    for (const settings_word *w = s->words; w->word != NULL; w++, n++) {
        if (strcmp(value, w->word) == 0) {
            *out = w->value;
            return 0;
        }
    }
    /* "expected A or B", "expected A, B or C" */
    char list[256];
    size_t len = 0;
    for (size_t i = 0; i < n && len < sizeof(list); i++)
        len += (size_t)snprintf(list + len, sizeof(list) - len, "%s%s",
                                i == 0       ? ""
                                : i + 1 == n ? " or "
                                             : ", ",
                                s->words[i].word);
    return settings_invalid(e, value, "expected %s", list);
}

int settings_open_access_log(const char *value, FILE **out, settings_error *e)
{
    if (strcmp(value, "off") == 0) {
        *out = NULL;
    } else if (strcmp(value, "-") == 0) {
        *out = stdout;
    } else if (settings_check_access_log(NULL, value, NULL, e) != 0) {
        return -1;
    } else if ((*out = fopen(value, "a")) == NULL) {
        return settings_invalid(e, value, "cannot open it for appending: %s",
                                uv_strerror(uv_translate_sys_error(errno)));
    }
    return 0;
}

int settings_check_access_log(const setting *s, const char *value, void *field, settings_error *e)
{
    (void)s;
    (void)field;
    if (*value == '\0')
        return settings_invalid(e, value, "expected -, a file or off");
    return 0;
}

/* ---- one row -------------------------------------------------------------------------------- */

static void *field_of(const setting *s, const settings_target *to)
{
    char *base = s->scope == SETTINGS_ROUTE ? to->route : to->global;
    return base != NULL && s->size > 0 ? base + s->offset : NULL;
}

static int store_uint(const setting *s, void *field, uint64_t v)
{
    if (s->size == sizeof(uint64_t)) {
        memcpy(field, &v, sizeof(uint64_t));
    } else if (s->size == sizeof(unsigned) && v <= UINT32_MAX) {
        unsigned u = (unsigned)v;
        memcpy(field, &u, sizeof(u));
    } else {
        return -1; /* a table bug, caught by its unit test */
    }
    return 0;
}

/* Replaces the own copy in a char * field. */
static int store_text(void *field, const char *value, settings_error *e)
{
    char **slot = field;
    char *copy = strdup(value);
    if (copy == NULL)
        return settings_failed(e, "out of memory", "out of memory");
    free(*slot);
    *slot = copy;
    return 0;
}

/* Adds an own copy of value to the settings_list in field. */
static int add_to_list(const setting *s, void *field, const char *value, settings_error *e)
{
    settings_list *list = field;
    char flag[64];
    if (list->n == SETTINGS_LIST_MAX)
        return settings_failed(e, "too many values", "too many %s values (at most %d)",
                               settings_flag(s, flag, sizeof(flag)), SETTINGS_LIST_MAX);
    char **grown = realloc(list->v, (list->n + 1) * sizeof(*grown));
    if (grown == NULL)
        return settings_failed(e, "out of memory", "out of memory");
    list->v = grown;
    if ((grown[list->n] = strdup(value)) == NULL)
        return settings_failed(e, "out of memory", "out of memory");
    list->n++;
    return 0;
}

/* Adds v to the settings_uints in field. */
static int add_to_uints(const setting *s, void *field, uint64_t v, settings_error *e)
{
    settings_uints *list = field;
    char flag[64];
    if (list->n == SETTINGS_LIST_MAX)
        return settings_failed(e, "too many values", "too many %s values (at most %d)",
                               settings_flag(s, flag, sizeof(flag)), SETTINGS_LIST_MAX);
    uint64_t *grown = realloc(list->v, (list->n + 1) * sizeof(*grown));
    if (grown == NULL)
        return settings_failed(e, "out of memory", "out of memory");
    list->v = grown;
    list->v[list->n++] = v;
    return 0;
}

static void free_list(settings_list *list)
{
    for (size_t i = 0; i < list->n; i++)
        free(list->v[i]);
    free(list->v);
    list->v = NULL;
    list->n = 0;
}

static int set_uint(const setting *s, const char *value, void *field, settings_error *e)
{
    uint64_t v = 0;
    if (settings_parse_uint(value, s->min, s->max, &v, e) != 0)
        return -1;
    if (s->flags & SETTINGS_REPEATABLE)
        return add_to_uints(s, field, v, e);
    if (store_uint(s, field, v) != 0)
        return settings_failed(e, "internal", "internal: field of the wrong size");
    return 0;
}

static int set_word(const setting *s, const char *value, void *field, settings_error *e)
{
    int v = 0;
    if (s->size != sizeof(int))
        return settings_failed(e, "internal", "internal: field of the wrong size");
    if (parse_word(s, value, &v, e) != 0)
        return -1;
    memcpy(field, &v, sizeof(v));
    return 0;
}

/* The types whose value is a struct or a number parsed whole: parsed into a copy of the field,
 * which is stored only when the value is good. */
static int set_value(const setting *s, const char *value, void *field, settings_error *e)
{
    union {
        settings_addr addr;
        settings_delay delay;
        uint64_t percent_e6;
        int on;
    } v;
    memcpy(&v, field, s->size < sizeof(v) ? s->size : sizeof(v));
    int err = 0;
    if (s->type == SETTINGS_ADDR)
        err = settings_parse_addr(value, &v.addr, e);
    else if (s->type == SETTINGS_DELAY)
        err = settings_parse_delay(value, s->min, s->max, &v.delay, e);
    else if (s->type == SETTINGS_PERCENT)
        err = settings_parse_percent(value, &v.percent_e6, e);
    else if (s->type == SETTINGS_BOOL && strcmp(value, "true") == 0)
        v.on = 1;
    else if (s->type == SETTINGS_BOOL && strcmp(value, "false") == 0)
        v.on = 0;
    else if (s->type == SETTINGS_BOOL)
        err = settings_invalid(e, value, "expected true or false");
    else /* SETTINGS_SWITCH */
        v.on = (int)s->min;
    if (err == 0)
        memcpy(field, &v, s->size < sizeof(v) ? s->size : sizeof(v));
    return err;
}

int settings_set(const setting *s, const char *value, const settings_target *to, settings_error *e)
{
    void *field = field_of(s, to);
    if (field == NULL && s->type != SETTINGS_HELP && s->type != SETTINGS_SECTION)
        return settings_failed(e, "not settable here", "internal: no field for this setting");
    switch (s->type) {
    case SETTINGS_UINT:
        return set_uint(s, value, field, e);
    case SETTINGS_WORD:
        return set_word(s, value, field, e);
    case SETTINGS_URL:
        if (settings_parse_url(value, e) != 0)
            return -1;
        return s->flags & SETTINGS_REPEATABLE ? add_to_list(s, field, value, e)
                                              : store_text(field, value, e);
    case SETTINGS_TEXT:
        if (s->check != NULL && s->check(s, value, NULL, e) != 0)
            return -1;
        return s->flags & SETTINGS_REPEATABLE ? add_to_list(s, field, value, e)
                                              : store_text(field, value, e);
    case SETTINGS_ADDR:
    case SETTINGS_DELAY:
    case SETTINGS_PERCENT:
    case SETTINGS_SWITCH:
    case SETTINGS_BOOL:
        return set_value(s, value, field, e);
    case SETTINGS_CUSTOM:
        return s->check(s, value, field, e);
    case SETTINGS_HELP:
    case SETTINGS_SECTION:
        return 0;
    }
    return settings_failed(e, "internal", "internal: unknown type");
}

int settings_set_default(const setting *s, const char *def, const settings_target *to,
                         settings_error *e)
{
    if (!(s->flags & SETTINGS_REPEATABLE))
        return settings_set(s, def, to, e);
    settings_clear(s, to);
    for (const char *p = def; *p != '\0';) { /* "429, 500, 502": one value each */
        size_t n = strcspn(p, ",");
        char item[256];
        if (n >= sizeof(item))
            return settings_failed(e, "internal", "internal: a default item too long");
        memcpy(item, p, n);
        item[n] = '\0';
        if (settings_set(s, item, to, e) != 0)
            return -1;
        p += n;
        p += strspn(p, ", ");
    }
    return 0;
}

int settings_defaults(const settings_table *t, const settings_target *to, const setting **bad,
                      settings_error *e)
{
    for (size_t i = 0; i < t->nrows; i++) {
        const setting *s = &t->rows[i];
        if (s->def == NULL || (s->flags & SETTINGS_DEFAULT_TEXT) || field_of(s, to) == NULL)
            continue;
        if (settings_set_default(s, s->def, to, e) != 0) {
            *bad = s;
            return -1;
        }
    }
    return 0;
}

void settings_clear(const setting *s, const settings_target *to)
{
    void *field = field_of(s, to);
    if (field == NULL)
        return;
    if (s->type == SETTINGS_UINT && (s->flags & SETTINGS_REPEATABLE)) {
        settings_uints *list = field;
        free(list->v);
        list->v = NULL;
        list->n = 0;
    } else if ((s->type == SETTINGS_URL || s->type == SETTINGS_TEXT) &&
               (s->flags & SETTINGS_REPEATABLE)) {
        free_list(field);
    } else if (s->type == SETTINGS_TEXT || s->type == SETTINGS_URL) {
        char **slot = field;
        free(*slot);
        *slot = NULL;
    } else if (s->type == SETTINGS_CUSTOM && s->release != NULL) {
        s->release(field);
    }
}

void settings_free(const settings_table *t, const settings_target *to)
{
    for (size_t i = 0; i < t->nrows; i++)
        settings_clear(&t->rows[i], to);
}

const setting *settings_find_key(const settings_table *t, const char *key)
{
    for (size_t i = 0; i < t->nrows; i++)
        if (t->rows[i].key != NULL && strcmp(t->rows[i].key, key) == 0)
            return &t->rows[i];
    return NULL;
}

const setting *settings_find(const settings_table *t, const char *name)
{
    for (size_t i = 0; i < t->nrows; i++)
        if (t->rows[i].name != NULL && strcmp(t->rows[i].name, name) == 0)
            return &t->rows[i];
    return NULL;
}

size_t settings_index(const settings_table *t, const setting *s)
{
    return (size_t)(s - t->rows);
}

/* ---- the command line ----------------------------------------------------------------------- */

/* The walker's rows: one per row that has a flag, its id the row's index + 1. */
static size_t cli_rows(const settings_table *t, cli_option *opts)
{
    size_t n = 0;
    for (size_t i = 0; i < t->nrows && i < SETTINGS_MAX_ROWS; i++) {
        const setting *s = &t->rows[i];
        if (s->name == NULL && s->letter == 0)
            continue; /* a config-file key only */
        opts[n].name = s->name;
        opts[n].short_name = s->letter;
        opts[n].id = (int)i + 1;
        opts[n].flags = (s->type == SETTINGS_SWITCH || s->type == SETTINGS_HELP ? 0 : CLI_VALUE) |
                        (s->flags & SETTINGS_REPEATABLE ? CLI_REPEATABLE : 0);
        opts[n].value = s->placeholder;
        opts[n].help = s->help;
        n++;
    }
    return n;
}

int settings_cli_parse(const settings_table *t, int argc, char **argv, const settings_target *to,
                       settings_operand_fn operand, void *data, uint64_t *given)
{
    cli_option opts[SETTINGS_MAX_ROWS];
    size_t nopts = cli_rows(t, opts);
    cli_parser p;
    const char *val;
    int id;
    cli_parser_init(&p, t->cmd, opts, nopts, argc, argv);
    while ((id = cli_next(&p, &val)) != CLI_END) {
        if (id == CLI_ERROR)
            return SETTINGS_CLI_BAD; /* the walker has said why */
        if (id == CLI_OPERAND) {
            if (operand == NULL) {
                cli_error(t->cmd, "unexpected argument '%s'", val);
                return SETTINGS_CLI_BAD;
            }
            if (operand(data, val) != 0)
                return SETTINGS_CLI_BAD;
            continue;
        }
        const setting *s = &t->rows[id - 1];
        if (s->type == SETTINGS_HELP)
            return SETTINGS_CLI_HELP;
        settings_error e;
        if (settings_set(s, val != NULL ? val : "", to, &e) != 0) {
            cli_error(t->cmd, "%s", settings_message(s, &e));
            return SETTINGS_CLI_BAD;
        }
        if (given != NULL)
            *given |= (uint64_t)1 << (id - 1);
    }
    return SETTINGS_CLI_OK;
}

int settings_read_cli(const settings_table *t, int argc, char **argv, const settings_target *to,
                      const settings_cli *cli)
{
    const setting *bad = NULL;
    settings_error e;
    if (settings_defaults(t, to, &bad, &e) != 0) {
        cli_error(t->cmd, "internal: a bad default: %s", settings_message(bad, &e));
        return CLI_EXIT_FAILURE;
    }
    switch (settings_cli_parse(t, argc, argv, to, cli->operand, cli->data, cli->given)) {
    case SETTINGS_CLI_HELP:
        cli->usage(stdout);
        return CLI_EXIT_OK;
    case SETTINGS_CLI_BAD:
        return CLI_EXIT_USAGE;
    default:
        return -1;
    }
}

void settings_cli_error(const settings_table *t, const char *name, settings_error *e)
{
    cli_error(t->cmd, "%s", settings_message(settings_find(t, name), e));
}

/* The row's help with its default: "text [300]", or the default on a line of its own when the
 * help ends with '\n'. */
static void help_with_default(const setting *s, char *buf, size_t size)
{
    size_t len = strlen(s->help);
    if (s->def == NULL)
        (void)snprintf(buf, size, "%s", s->help);
    else if (len > 0 && s->help[len - 1] == '\n')
        (void)snprintf(buf, size, "%s[%s]", s->help, s->def);
    else
        (void)snprintf(buf, size, "%s [%s]", s->help, s->def);
}

void settings_print_help(FILE *out, const settings_table *t)
{
    cli_option opts[SETTINGS_MAX_ROWS];
    size_t nopts = cli_rows(t, opts);
    for (size_t k = 0; k < nopts; k++) {
        char help[1024];
        help_with_default(&t->rows[opts[k].id - 1], help, sizeof(help));
        opts[k].help = help;
        cli_print_option(out, &opts[k]);
    }
    cli_print_rules(out);
}

/* ---- the man page --------------------------------------------------------------------------- */

/* Writes text as roff: '-' becomes \- (unless already escaped), and '\n' stays a line break. A
 * plain-text line (from a help text) that would start with a control character gets \& first. */
static void man_text(FILE *out, const char *text, int plain)
{
    int line_start = 1;
    for (const char *p = text; *p != '\0'; p++) {
        if (plain && line_start && (*p == '.' || *p == '\''))
            (void)fputs("\\&", out);
        line_start = *p == '\n';
        if (*p == '-' && (p == text || p[-1] != '\\'))
            (void)fputs("\\-", out);
        else
            (void)fputc(*p, out);
    }
}

/* A placeholder in roff: upper-case words (HOST, MS) in italics, what is typed as it stands
 * (native, p, -, @) in bold, the separators (: | ') as they are. */
static void man_placeholder(FILE *out, const char *ph)
{
    for (const char *p = ph; *p != '\0';) {
        size_t n = 0;
        if ((*p >= 'A' && *p <= 'Z') || *p == '_') {
            while ((p[n] >= 'A' && p[n] <= 'Z') || (p[n] >= '0' && p[n] <= '9') || p[n] == '_')
                n++;
            (void)fprintf(out, "\\fI%.*s\\fR", (int)n, p);
        } else if (*p >= 'a' && *p <= 'z') {
            while (p[n] >= 'a' && p[n] <= 'z')
                n++;
            (void)fprintf(out, "\\fB%.*s\\fR", (int)n, p);
        } else {
            n = 1;
            if (*p == '-')
                (void)fputs("\\fB\\-\\fR", out);
            else if (*p == '@')
                (void)fputs("\\fB@\\fR", out);
            else if (*p == '\\')
                (void)fputs("\\e", out);
            else
                (void)fputc(*p, out);
        }
        p += n;
    }
}

static void man_entry(FILE *out, const setting *s)
{
    (void)fputs(".TP\n", out);
    if (s->letter != 0)
        (void)fprintf(out, "\\fB\\-%c\\fR%s", s->letter, s->name != NULL ? ", " : "");
    if (s->name != NULL) {
        (void)fputs("\\fB\\-\\-", out);
        man_text(out, s->name, 0);
        (void)fputs("\\fR", out);
    }
    if (s->type != SETTINGS_SWITCH && s->type != SETTINGS_HELP && s->placeholder != NULL) {
        (void)fputc(' ', out);
        man_placeholder(out, s->placeholder);
    }
    (void)fputc('\n', out);
    if (s->man != NULL) {
        man_text(out, s->man, 0);
    } else { /* the help's lines, joined into one sentence */
        char text[1024];
        size_t n = 0;
        for (const char *p = s->help; *p != '\0' && n + 1 < sizeof(text); p++)
            text[n++] = *p == '\n' ? ' ' : *p;
        while (n > 0 && text[n - 1] == ' ')
            n--;
        text[n] = '\0';
        if (n > 0)
            text[0] = (char)(text[0] >= 'a' && text[0] <= 'z' ? text[0] - 'a' + 'A' : text[0]);
        man_text(out, text, 1);
        (void)fputs(n > 0 && text[n - 1] != '.' ? ".\n" : "\n", out);
    }
    if (s->man != NULL && s->man[0] != '\0' && s->man[strlen(s->man) - 1] != '\n')
        (void)fputc('\n', out);
    if (s->flags & SETTINGS_REPEATABLE)
        (void)fputs("Repeatable.\n", out);
    if (s->def != NULL) {
        char def[512];
        size_t n = 0;
        for (const char *p = s->def; *p != '\0' && n + 1 < sizeof(def); p++)
            def[n++] = *p == '\n' ? ' ' : *p;
        def[n] = '\0';
        (void)fputc('[', out);
        man_text(out, def, 0);
        (void)fputs("]\n", out);
    }
}

void settings_print_man(FILE *out, const settings_table *t)
{
    for (size_t i = 0; i < t->nrows; i++)
        if (t->rows[i].name != NULL || t->rows[i].letter != 0)
            man_entry(out, &t->rows[i]);
}
