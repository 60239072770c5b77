/*
 * tailcut serve: what the upstreams receive besides the configured URL. The client's query (but
 * `timeout`) goes after the upstream URL's own query, the request headers named by
 * --forward-header and the id of the request go along, and --upstream-header adds the operator's
 * headers (credentials) to every call of both upstreams. An upstream URL printed anywhere
 * goes through tc__url_redact() first (src/http/forward_internal.h).
 *
 * The one idea: an attempt endpoint request is built once, into per-worker scratch storage that
 * is reused from request to request, and the hedge copies it once (into one allocation) for all
 * of its attempts; the hedge adds X-Tailcut-Attempt: N to each attempt itself, after dropping any
 * the list would hold. A request that forwards nothing keeps the configured URL string as it is.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cmd_serve.h"

/* Caps on the configuration: the headers of --upstream-header, and one @FILE's size. */
#define UPSTREAM_HEADERS_MAX 100
#define UPSTREAM_HEADER_FILE_MAX ((size_t)64 * 1024)
/* Longest X-Request-Id sent as received. */

/* ---- settings ------------------------------------------------------------------------------- */

static int name_in(const serve_names *names, const char *name)
{
    for (size_t i = 0; i < names->n; i++)
        if (strcasecmp(names->v[i], name) == 0)
            return 1;
    return 0;
}

static int out_of_memory(settings_error *e)
{
    return settings_failed(e, "out of memory", "out of memory");
}

int serve_forward_header_add(const setting *s, const char *name, void *field, settings_error *e)
{
    serve_names *names = field;
    size_t len = strlen(name);
    (void)s;
    if (!tc__header_name_ok(name, len))
        return settings_invalid(e, name, "expected a header name");
    if (tc__header_never_forwarded(name, len))
        return settings_invalid(e, name, "%s is never forwarded", name);
    /* X-Request-Id always goes along (taken or generated); a name given twice once. */
    if (strcasecmp(name, "X-Request-Id") == 0 || name_in(names, name))
        return 0;
    char **grown = realloc(names->v, (names->n + 1) * sizeof(*grown));
    if (grown == NULL)
        return out_of_memory(e);
    names->v = grown;
    if ((grown[names->n] = strdup(name)) == NULL)
        return out_of_memory(e);
    names->n++;
    return 0;
}

static int is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* A bad header of --upstream-header: "invalid --upstream-header: WHY", or for a line of @FILE
 * "invalid --upstream-header file 'F' line N: WHY". Values are secrets: no message shows one. */
static int bad_header(const setting *s, const char *where, settings_error *e, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int bad_header(const setting *s, const char *where, settings_error *e, const char *fmt, ...)
{
    char why[256], flag[64];
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    char standalone[sizeof(why) + 96];
    (void)snprintf(standalone, sizeof(standalone), "%s%s%s", where + (*where == ' '),
                   *where != '\0' ? ": " : "", why);
    return settings_failed(e, standalone, "invalid %s%s: %s", settings_flag(s, flag, sizeof(flag)),
                           where, why);
}

/* One "Name: value" (line[0..len)) into headers. where is "" for the flag's own value or
 * " file 'F' line N" for a line of @FILE. */
static int add_upstream_header(const setting *s, serve_headers *headers, const char *where,
                               const char *line, size_t len, settings_error *e)
{
    size_t nlen, vlen;
    const char *v, *why;
    char flag[64];
    if (tc__header_line_parse(line, len, &nlen, &v, &vlen, &why) != 0)
        return bad_header(s, where, e, "%s", why);
    if (tc__header_never_forwarded(line, nlen) ||
        (nlen == 12 && strncasecmp(line, "X-Request-Id", 12) == 0))
        return bad_header(s, where, e, "tailcut sets %.*s itself", (int)nlen, line);
    if (headers->n == UPSTREAM_HEADERS_MAX)
        return settings_failed(e, "too many headers", "too many %s headers (at most %d)",
                               settings_flag(s, flag, sizeof(flag)), UPSTREAM_HEADERS_MAX);
    tc_header *grown = realloc(headers->v, (headers->n + 1) * sizeof(*grown));
    if (grown == NULL)
        return out_of_memory(e);
    headers->v = grown;
    char *name = strndup(line, nlen), *value = strndup(v, vlen);
    if (name == NULL || value == NULL) {
        free(name);
        free(value);
        return out_of_memory(e);
    }
    grown[headers->n].name = name;
    grown[headers->n].value = value;
    headers->n++;
    return 0;
}

/* "FLAG file 'F' ...": a whole message about the file, and the reason alone. */
static int bad_file(const setting *s, const char *path, const char *what, settings_error *e)
{
    char flag[64], why[SETTINGS_WHY_MAX];
    settings_flag(s, flag, sizeof(flag));
    if (strcmp(what, "cannot read") == 0) {
        (void)snprintf(why, sizeof(why), "cannot read file '%s'", path);
        return settings_failed(e, why, "cannot read %s file '%s'", flag, path);
    }
    (void)snprintf(why, sizeof(why), "file '%s' %s", path, what);
    return settings_failed(e, why, "%s file '%s' %s", flag, path, what);
}

/* @FILE: one header a line (white space before it ignored); blank lines and lines whose first
 * non-blank character is '#' are skipped, a CR before the LF is dropped. */
int serve_upstream_header_file(const setting *s, const char *path, void *field, settings_error *e)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return bad_file(s, path, "cannot read", e);
    char *text = malloc(UPSTREAM_HEADER_FILE_MAX + 1);
    size_t n = text != NULL ? fread(text, 1, UPSTREAM_HEADER_FILE_MAX + 1, f) : 0;
    int failed = text == NULL || ferror(f);
    (void)fclose(f);
    int status = -1;
    if (failed) {
        bad_file(s, path, "cannot read", e);
    } else if (n > UPSTREAM_HEADER_FILE_MAX) {
        char over[64];
        (void)snprintf(over, sizeof(over), "is over %zu bytes", UPSTREAM_HEADER_FILE_MAX);
        bad_file(s, path, over, e);
    } else if (memchr(text, '\0', n) != NULL) {
        bad_file(s, path, "holds a NUL byte", e);
    } else {
        status = 0;
        unsigned lineno = 0;
        for (size_t i = 0; i < n && status == 0;) {
            const char *nl = memchr(text + i, '\n', n - i);
            size_t end = nl != NULL ? (size_t)(nl - text) : n, len = end - i;
            const char *line = text + i;
            lineno++;
            i = end + 1;
            if (len > 0 && line[len - 1] == '\r')
                len--;
            size_t lead = 0;
            while (lead < len && is_ows(line[lead]))
                lead++;
            if (lead == len || line[lead] == '#')
                continue;
            char where[64 + 32];
            (void)snprintf(where, sizeof(where), " file '%.64s' line %u", path, lineno);
            status = add_upstream_header(s, field, where, line + lead, len - lead, e);
        }
    }
    free(text);
    return status;
}

int serve_upstream_header_add(const setting *s, const char *value, void *field, settings_error *e)
{
    if (value[0] == '@')
        return serve_upstream_header_file(s, value + 1, field, e);
    return add_upstream_header(s, field, "", value, strlen(value), e);
}

void serve_forward_finish(serve_route *route)
{
    /* A header --upstream-header sets is never also forwarded: the configured value wins. */
    serve_names *fwd = &route->forward_headers;
    size_t kept = 0;
    for (size_t i = 0; i < fwd->n; i++) {
        int configured = 0;
        for (size_t k = 0; k < route->upstream_headers.n; k++)
            if (strcasecmp(fwd->v[i], route->upstream_headers.v[k].name) == 0)
                configured = 1;
        if (configured)
            free(fwd->v[i]);
        else
            fwd->v[kept++] = fwd->v[i];
    }
    fwd->n = kept;
}

void serve_names_free(void *field)
{
    serve_names *names = field;
    for (size_t i = 0; i < names->n; i++)
        free(names->v[i]);
    free(names->v);
    names->v = NULL;
    names->n = 0;
}

void serve_headers_free(void *field)
{
    serve_headers *headers = field;
    for (size_t i = 0; i < headers->n; i++) {
        free((char *)headers->v[i].name);
        free((char *)headers->v[i].value);
    }
    free(headers->v);
    headers->v = NULL;
    headers->n = 0;
}

/* ---- per request ---------------------------------------------------------------------------- */

void serve_forward_init(serve_forward *fw, const serve_route *route)
{
    memset(fw, 0, sizeof(*fw));
    /* Every byte of the client's query may become %HH. */
    tc__buf_init(&fw->url, NULL, 0, route->url_max + 3 * (size_t)TC_SERVER_MAX_URI + 16);
}

void serve_forward_free(serve_forward *fw)
{
    tc__buf_reset(&fw->url);
    free(fw->headers);
    free(fw->strings);
    memset(fw, 0, sizeof(*fw));
}

/* 1 if one of the request's Connection headers lists name (it then belongs to the hop). */
static int connection_lists(const tc_request *req, const char *name)
{
    size_t pos = 0;
    tc_str v;
    size_t nlen = strlen(name);
    while (tc_request_header_next(req, "Connection", &pos, &v))
        if (tc__header_list_has(v.base, v.len, name, nlen))
            return 1;
    return 0;
}

/* Calls fn for each request header occurrence that is forwarded, in configuration order and,
 * for one name, in the order received. Returns the count. */
typedef void (*forward_fn)(serve_forward *fw, const char *name, tc_str value);

static size_t each_forwarded(serve_forward *fw, const serve_route *route, const tc_request *req,
                             forward_fn fn)
{
    size_t count = 0;
    for (size_t i = 0; i < route->forward_headers.n; i++) {
        const char *name = route->forward_headers.v[i];
        size_t pos = 0;
        tc_str v;
        if (connection_lists(req, name))
            continue;
        while (tc_request_header_next(req, name, &pos, &v)) {
            if (!tc__header_value_ok(v.base, v.len))
                continue; /* CR, LF or NUL: dropped */
            fn(fw, name, v);
            count++;
        }
    }
    return count;
}

static void measure(serve_forward *fw, const char *name, tc_str value)
{
    fw->need += value.len + 1;
}

/* Copies value, NUL-terminated, into fw->strings (sized by measure()) and lists the header. */
static void add(serve_forward *fw, const char *name, tc_str value)
{
    char *s = fw->strings + fw->used;
    memcpy(s, value.base, value.len);
    s[value.len] = '\0';
    fw->used += value.len + 1;
    fw->headers[fw->nheaders].name = name;
    fw->headers[fw->nheaders].value = s;
    fw->nheaders++;
}

/* Grows the scratch arrays to n headers and need string bytes (kept for the next requests).
 * Returns 0 or -1. */
static int reserve(serve_forward *fw, size_t n, size_t need)
{
    if (n > fw->headers_cap) {
        tc_header *grown = realloc(fw->headers, n * sizeof(*grown));
        if (grown == NULL)
            return -1;
        fw->headers = grown;
        fw->headers_cap = n;
    }
    if (need > fw->strings_cap) {
        char *grown = realloc(fw->strings, need);
        if (grown == NULL)
            return -1;
        fw->strings = grown;
        fw->strings_cap = need;
    }
    return 0;
}

int serve_forward_build(serve_forward *fw, const serve_route *route, const tc_request *req,
                        tc_str request_id, tc_client_request *creq)
{
    /* The URL: the configured one, plus the client's query when it adds anything. */
    tc_str query = tc_request_query(req);
    const char *upstream = route->upstreams.v[0];
    creq->url = upstream;
    if (query.len > 0) {
        fw->url.len = 0;
        long added = tc__forward_url(&fw->url, upstream, query.base, query.len);
        if (added < 0)
            return (int)added;
        if (added > 0)
            creq->url = tc__buf_cstr(&fw->url);
    }

    /* The headers: --upstream-header, the forwarded ones, X-Request-Id. */
    fw->need = request_id.len + 1;
    const serve_headers *configured = &route->upstream_headers;
    size_t nfwd = each_forwarded(fw, route, req, measure);
    size_t nheaders = configured->n + nfwd + 1;
    if (reserve(fw, nheaders, fw->need) != 0)
        return TC_ENOMEM;
    fw->nheaders = 0;
    fw->used = 0;
    if (configured->n > 0)
        memcpy(fw->headers, configured->v, configured->n * sizeof(*configured->v));
    fw->nheaders = configured->n;
    (void)each_forwarded(fw, route, req, add);
    if (request_id.len > 0)
        add(fw, "X-Request-Id", request_id);
    creq->headers = fw->headers;
    creq->nheaders = fw->nheaders;
    return 0;
}
