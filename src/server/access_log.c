/*
 * The access-log line (see access_log.h): formatting only, no I/O, no allocation beyond what
 * the caller's tc__buf does (the server hands it a buffer with room for any line).
 */
#include <string.h>

#include "access_log.h"
#include "base/bytes.h"
#include "base/fmt.h"
#include "base/json_write.h"
#include "tailcut/server.h"

static const char hex_digits[] = "0123456789abcdef";

static void put2(char *dst, unsigned v)
{
    dst[0] = (char)('0' + v / 10 % 10);
    dst[1] = (char)('0' + v % 10);
}

void tc__log_time(char *dst, time_t sec, unsigned ms)
{
    struct tm tm;
    gmtime_r(&sec, &tm);
    unsigned year = (unsigned)(tm.tm_year + 1900) % 10000;
    put2(dst, year / 100);
    put2(dst + 2, year % 100);
    dst[4] = '-';
    put2(dst + 5, (unsigned)tm.tm_mon + 1);
    dst[7] = '-';
    put2(dst + 8, (unsigned)tm.tm_mday);
    dst[10] = 'T';
    put2(dst + 11, (unsigned)tm.tm_hour);
    dst[13] = ':';
    put2(dst + 14, (unsigned)tm.tm_min);
    dst[16] = ':';
    put2(dst + 17, (unsigned)tm.tm_sec);
    dst[19] = '.';
    ms %= 1000;
    dst[20] = (char)('0' + ms / 100);
    put2(dst + 21, ms % 100);
    dst[23] = 'Z';
}

int tc__log_escape_text(tc__buf *b, const char *s, size_t len)
{
    size_t from = 0; /* the first byte not yet appended */
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (tc__byte_class[ch] & TC__BYTE_PLAIN)
            continue;
        char esc[4] = {'\\', 'x', hex_digits[ch >> 4], hex_digits[ch & 15]};
        int rc = tc__buf_append(b, s + from, i - from);
        if (rc == 0)
            rc = tc__buf_append(b, esc, sizeof(esc));
        if (rc != 0)
            return rc;
        from = i + 1;
    }
    return tc__buf_append(b, s + from, len - from);
}

static int append_u64(tc__buf *b, uint64_t v)
{
    char num[TC__FMT_U64_MAX];
    return tc__buf_append(b, num, tc__fmt_u64(num, v));
}

/* A number, or the "does not apply" mark when v < 0. */
static int append_opt(tc__buf *b, int64_t v, const char *none, size_t none_len)
{
    return v < 0 ? tc__buf_append(b, none, none_len) : append_u64(b, (uint64_t)v);
}

/* "HTTP/x.y" into dst, which starts with "HTTP/" (room for two numbers more); returns the
 * length. */
static size_t format_protocol(char *dst, const tc__log_entry *e)
{
    size_t n = 5 + tc__fmt_u64(dst + 5, (uint64_t)e->http_major);
    dst[n++] = '.';
    return n + tc__fmt_u64(dst + n, (uint64_t)e->http_minor);
}

static int format_text(tc__buf *b, const tc__log_entry *e)
{
    char proto[8 + 2 * TC__FMT_U64_MAX] = "HTTP/";
    int rc = tc__buf_append(b, e->time, TC__LOG_TIME_LEN);
    if (rc == 0)
        rc = tc__buf_append(b, TC__LIT(" "));
    if (rc == 0)
        rc = e->client != NULL ? tc__log_escape_text(b, e->client, e->client_len)
                               : tc__buf_append(b, TC__LIT("-"));
    if (rc == 0 && e->method != NULL) {
        rc = tc__buf_append(b, TC__LIT(" \""));
        if (rc == 0)
            rc = tc__log_escape_text(b, e->method, strlen(e->method));
        if (rc == 0)
            rc = tc__buf_append(b, TC__LIT(" "));
        if (rc == 0)
            rc = tc__log_escape_text(b, e->target, e->target_len);
        if (rc == 0)
            rc = tc__buf_append(b, TC__LIT(" "));
        if (rc == 0)
            rc = tc__buf_append(b, proto, format_protocol(proto, e));
        if (rc == 0)
            rc = tc__buf_append(b, TC__LIT("\" "));
    } else if (rc == 0) {
        rc = tc__buf_append(b, TC__LIT(" \"- - -\" "));
    }
    if (rc == 0)
        rc = append_u64(b, (uint64_t)(e->status < 0 ? 0 : e->status));
    if (rc == 0)
        rc = tc__buf_append(b, TC__LIT(" "));
    if (rc == 0)
        rc = append_u64(b, e->bytes);
    if (rc == 0)
        rc = tc__buf_append(b, TC__LIT(" "));
    if (rc == 0)
        rc = append_opt(b, e->duration_us, TC__LIT("-"));
    if (rc == 0)
        rc = tc__buf_append(b, TC__LIT(" "));
    if (rc == 0)
        rc = append_opt(b, e->attempts, TC__LIT("-"));
    if (rc == 0)
        rc = tc__buf_append(b, TC__LIT(" "));
    if (rc == 0)
        rc = e->request_id_len > 0 ? tc__log_escape_text(b, e->request_id, e->request_id_len)
                                   : tc__buf_append(b, TC__LIT("-"));
    if (rc == 0)
        rc = tc__buf_append(b, TC__LIT("\n"));
    return rc;
}

/* A JSON string, or null when s is NULL. */
static int json_str_or_null(tc__buf *b, const char *s, size_t len)
{
    return s != NULL ? tc__json_write_str(b, s, len) : tc__buf_append(b, TC__LIT("null"));
}

static int format_json(tc__buf *b, const tc__log_entry *e)
{
    char proto[8 + 2 * TC__FMT_U64_MAX] = "HTTP/";
    int has_line = e->method != NULL;
    int rc = tc__buf_append(b, TC__LIT("{\"time\":\""));
    if (rc == 0)
        rc = tc__buf_append(b, e->time, TC__LOG_TIME_LEN);
    if (rc == 0)
        rc = tc__buf_append(b, TC__LIT("\",\"client\":"));
    if (rc == 0)
        rc = json_str_or_null(b, e->client, e->client_len);
    if (rc == 0)
        rc = tc__buf_append(b, TC__LIT(",\"method\":"));
    if (rc == 0)
        rc = json_str_or_null(b, e->method, has_line ? strlen(e->method) : 0);
    if (rc == 0)
        rc = tc__buf_append(b, TC__LIT(",\"target\":"));
    if (rc == 0)
        rc = json_str_or_null(b, has_line ? e->target : NULL, e->target_len);
    if (rc == 0)
        rc = tc__buf_append(b, TC__LIT(",\"protocol\":"));
    if (rc == 0)
        rc = has_line ? json_str_or_null(b, proto, format_protocol(proto, e))
                      : tc__buf_append(b, TC__LIT("null"));
    if (rc == 0)
        rc = tc__buf_append(b, TC__LIT(",\"status\":"));
    if (rc == 0)
        rc = append_u64(b, (uint64_t)(e->status < 0 ? 0 : e->status));
    if (rc == 0)
        rc = tc__buf_append(b, TC__LIT(",\"bytes\":"));
    if (rc == 0)
        rc = append_u64(b, e->bytes);
    if (rc == 0)
        rc = tc__buf_append(b, TC__LIT(",\"duration_us\":"));
    if (rc == 0)
        rc = append_opt(b, e->duration_us, TC__LIT("null"));
    if (rc == 0)
        rc = tc__buf_append(b, TC__LIT(",\"attempts\":"));
    if (rc == 0)
        rc = append_opt(b, e->attempts, TC__LIT("null"));
    if (rc == 0)
        rc = tc__buf_append(b, TC__LIT(",\"request_id\":"));
    if (rc == 0)
        rc = json_str_or_null(b, e->request_id_len > 0 ? e->request_id : NULL, e->request_id_len);
    if (rc == 0 && e->with_route) {
        size_t len = e->route != NULL ? strlen(e->route) : 0;
        rc = tc__buf_append(b, TC__LIT(",\"route\":"));
        if (rc == 0)
            rc = json_str_or_null(b, e->route != NULL ? e->route : "",
                                  len > TC__LOG_ROUTE_MAX ? TC__LOG_ROUTE_MAX : len);
    }
    if (rc == 0 && e->with_replica) {
        size_t len = e->replica != NULL ? strlen(e->replica) : 0;
        rc = tc__buf_append(b, TC__LIT(",\"replica\":"));
        if (rc == 0)
            rc = json_str_or_null(b, e->replica,
                                  len > TC__LOG_REPLICA_MAX ? TC__LOG_REPLICA_MAX : len);
    }
    if (rc == 0)
        rc = tc__buf_append(b, TC__LIT("}\n"));
    return rc;
}

int tc__log_format(tc__buf *b, int format, const tc__log_entry *e)
{
    return format == TC_ACCESS_LOG_JSON ? format_json(b, e) : format_text(b, e);
}
