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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/cli.h"
#include "cmd_serve.h"

/* Caps on the configuration: the headers of --upstream-header, and one @FILE's size. */
#define UPSTREAM_HEADERS_MAX 100
#define UPSTREAM_HEADER_FILE_MAX ((size_t)64 * 1024)
/* Longest X-Request-Id sent as received. */

/* ---- flags ---------------------------------------------------------------------------------- */

static int name_in(char **names, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcasecmp(names[i], name) == 0)
            return 1;
    return 0;
}

int serve_forward_header_flag(serve_config *cfg, const char *cmd, const char *name)
{
    size_t len = strlen(name);
    if (!tc__header_name_ok(name, len)) {
        cli_error(cmd, "invalid value '%s' for --forward-header: expected a header name", name);
        return -1;
    }
    if (tc__header_never_forwarded(name, len)) {
        cli_error(cmd, "invalid value '%s' for --forward-header: %s is never forwarded", name,
                  name);
        return -1;
    }
    /* X-Request-Id always goes along (taken or generated); a name given twice once. */
    if (strcasecmp(name, "X-Request-Id") == 0 ||
        name_in(cfg->forward_headers, cfg->nforward_headers, name))
        return 0;
    char **grown = realloc(cfg->forward_headers, (cfg->nforward_headers + 1) * sizeof(*grown));
    if (grown == NULL)
        return -1;
    cfg->forward_headers = grown;
    if ((grown[cfg->nforward_headers] = strdup(name)) == NULL)
        return -1;
    cfg->nforward_headers++;
    return 0;
}

static int is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* One "Name: value" (line[0..len)) into cfg->upstream_headers. where is "" for the flag's own
 * value or " file 'F' line N" for a line of @FILE. Values are secrets: no message shows one. */
static int add_upstream_header(serve_config *cfg, const char *cmd, const char *where,
                               const char *line, size_t len)
{
    size_t nlen, vlen;
    const char *v, *why;
    if (tc__header_line_parse(line, len, &nlen, &v, &vlen, &why) != 0) {
        cli_error(cmd, "invalid --upstream-header%s: %s", where, why);
        return -1;
    }
    if (tc__header_never_forwarded(line, nlen) ||
        (nlen == 12 && strncasecmp(line, "X-Request-Id", 12) == 0)) {
        cli_error(cmd, "invalid --upstream-header%s: tailcut sets %.*s itself", where, (int)nlen,
                  line);
        return -1;
    }
    if (cfg->nupstream_headers == UPSTREAM_HEADERS_MAX) {
        cli_error(cmd, "too many --upstream-header headers (at most %d)", UPSTREAM_HEADERS_MAX);
        return -1;
    }
    tc_header *grown =
        realloc(cfg->upstream_headers, (cfg->nupstream_headers + 1) * sizeof(*grown));
    if (grown == NULL)
        return -1;
    cfg->upstream_headers = grown;
    char *name = strndup(line, nlen), *value = strndup(v, vlen);
    if (name == NULL || value == NULL) {
        free(name);
        free(value);
        return -1;
    }
    grown[cfg->nupstream_headers].name = name;
    grown[cfg->nupstream_headers].value = value;
    cfg->nupstream_headers++;
    return 0;
}

/* @FILE: one header a line (white space before it ignored); blank lines and lines whose first
 * non-blank character is '#' are skipped, a CR before the LF is dropped. */
static int add_upstream_header_file(serve_config *cfg, const char *cmd, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        cli_error(cmd, "cannot read --upstream-header file '%s'", path);
        return -1;
    }
    char *text = malloc(UPSTREAM_HEADER_FILE_MAX + 1);
    size_t n = text != NULL ? fread(text, 1, UPSTREAM_HEADER_FILE_MAX + 1, f) : 0;
    int failed = text == NULL || ferror(f);
    (void)fclose(f);
    int status = -1;
    if (failed) {
        cli_error(cmd, "cannot read --upstream-header file '%s'", path);
    } else if (n > UPSTREAM_HEADER_FILE_MAX) {
        cli_error(cmd, "--upstream-header file '%s' is over %zu bytes", path,
                  UPSTREAM_HEADER_FILE_MAX);
    } else if (memchr(text, '\0', n) != NULL) {
        cli_error(cmd, "--upstream-header file '%s' holds a NUL byte", path);
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
            status = add_upstream_header(cfg, cmd, where, line + lead, len - lead);
        }
    }
    free(text);
    return status;
}

int serve_upstream_header_flag(serve_config *cfg, const char *cmd, const char *value)
{
    if (value[0] == '@')
        return add_upstream_header_file(cfg, cmd, value + 1);
    return add_upstream_header(cfg, cmd, "", value, strlen(value));
}

int serve_forward_finish_flags(serve_config *cfg)
{
    /* A header --upstream-header sets is never also forwarded: the configured value wins. */
    size_t kept = 0;
    for (size_t i = 0; i < cfg->nforward_headers; i++) {
        int configured = 0;
        for (size_t k = 0; k < cfg->nupstream_headers; k++)
            if (strcasecmp(cfg->forward_headers[i], cfg->upstream_headers[k].name) == 0)
                configured = 1;
        if (configured)
            free(cfg->forward_headers[i]);
        else
            cfg->forward_headers[kept++] = cfg->forward_headers[i];
    }
    cfg->nforward_headers = kept;
    return 0;
}

void serve_forward_free_config(serve_config *cfg)
{
    for (size_t i = 0; i < cfg->nforward_headers; i++)
        free(cfg->forward_headers[i]);
    free(cfg->forward_headers);
    for (size_t i = 0; i < cfg->nupstream_headers; i++) {
        free((char *)cfg->upstream_headers[i].name);
        free((char *)cfg->upstream_headers[i].value);
    }
    free(cfg->upstream_headers);
    cfg->forward_headers = NULL;
    cfg->upstream_headers = NULL;
    cfg->nforward_headers = cfg->nupstream_headers = 0;
}

/* ---- per request ---------------------------------------------------------------------------- */

void serve_forward_init(serve_forward *fw, const serve_config *cfg)
{
    memset(fw, 0, sizeof(*fw));
    /* Every byte of the client's query may become %HH. */
    tc__buf_init(&fw->url, NULL, 0, strlen(cfg->upstream) + 3 * (size_t)TC_SERVER_MAX_URI + 16);
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

static size_t each_forwarded(serve_forward *fw, const serve_config *cfg, const tc_request *req,
                             forward_fn fn)
{
    size_t count = 0;
    for (size_t i = 0; i < cfg->nforward_headers; i++) {
        const char *name = cfg->forward_headers[i];
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

int serve_forward_build(serve_forward *fw, const serve_config *cfg, const tc_request *req,
                        tc_str request_id, tc_client_request *creq)
{
    /* The URL: the configured one, plus the client's query when it adds anything. */
    tc_str query = tc_request_query(req);
    creq->url = cfg->upstream;
    if (query.len > 0) {
        fw->url.len = 0;
        long added = tc__forward_url(&fw->url, cfg->upstream, query.base, query.len);
        if (added < 0)
            return (int)added;
        if (added > 0)
            creq->url = tc__buf_cstr(&fw->url);
    }

    /* The headers: --upstream-header, the forwarded ones, X-Request-Id. */
    fw->need = request_id.len + 1;
    size_t nfwd = each_forwarded(fw, cfg, req, measure);
    size_t nheaders = cfg->nupstream_headers + nfwd + 1;
    if (reserve(fw, nheaders, fw->need) != 0)
        return TC_ENOMEM;
    fw->nheaders = 0;
    fw->used = 0;
    if (cfg->nupstream_headers > 0)
        memcpy(fw->headers, cfg->upstream_headers,
               cfg->nupstream_headers * sizeof(*cfg->upstream_headers));
    fw->nheaders = cfg->nupstream_headers;
    (void)each_forwarded(fw, cfg, req, add);
    if (request_id.len > 0)
        add(fw, "X-Request-Id", request_id);
    creq->headers = fw->headers;
    creq->nheaders = fw->nheaders;
    return 0;
}
