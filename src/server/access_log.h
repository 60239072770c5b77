/*
 * The access-log line, as pure functions (the server fills an entry and writes the line; the
 * unit tests call these directly). Two formats, both one line per request:
 *
 *   text: TIME CLIENT "METHOD TARGET HTTP/x.y" STATUS BYTES DURATION_US ATTEMPTS REQUEST_ID
 *   json: {"time":...,"client":...,"method":...,"target":...,"protocol":...,"status":N,
 *          "bytes":N,"duration_us":N,"attempts":N,"request_id":...[,"replica":...]}
 *
 * A field that does not apply is `-` in text and null in json. In text, '"', '\\' and every byte
 * outside 0x21-0x7E of TARGET and REQUEST_ID are written as \xHH (two lowercase hex digits), so
 * a line always splits on spaces and quotes; json strings go through tc__json_write_str. Internal.
 */
#ifndef TAILCUT_ACCESS_LOG_H
#define TAILCUT_ACCESS_LOG_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "base/buf.h"

/* Bytes of the target a line shows; a longer one (only with a max_uri above 8 KiB) is cut. */
#define TC__LOG_TARGET_MAX 8192
/* Bytes of the replica a line shows (a replica label is shorter: TC_REPLICA_LABEL_MAX). */
#define TC__LOG_REPLICA_MAX 512
/* Room for any line: every target, id and replica byte escaped to six bytes (json's \u00XX),
 * plus the other fields. */
#define TC__LOG_LINE_MAX (6 * (TC__LOG_TARGET_MAX + 128 + TC__LOG_REPLICA_MAX) + 1024)
/* "2026-11-21T16:57:44.123Z" */
#define TC__LOG_TIME_LEN 24

typedef struct tc__log_entry {
    const char *time;   /* TC__LOG_TIME_LEN bytes */
    const char *client; /* NULL: does not apply */
    size_t client_len;
    const char *method; /* NUL-terminated; NULL when the request line was not read */
    const char *target; /* NULL with method */
    size_t target_len;
    int http_major, http_minor; /* the protocol; ignored when method is NULL */
    int status;
    uint64_t bytes;
    int64_t duration_us; /* < 0: does not apply */
    int64_t attempts;    /* < 0: does not apply */
    const char *request_id;
    size_t request_id_len; /* 0: does not apply */
    int with_replica;      /* json: end with "replica" (text: never) */
    const char *replica;   /* NUL-terminated; NULL: null */
} tc__log_entry;

/* Writes the UTC time sec + ms/1000 as "YYYY-MM-DDTHH:MM:SS.mmmZ" (TC__LOG_TIME_LEN bytes, no
 * NUL) into dst. */
void tc__log_time(char *dst, time_t sec, unsigned ms);

/* Appends s[0..len) with the text format's escaping ('"', '\\' and bytes outside 0x21-0x7E as
 * \xHH). Returns 0 or the tc__buf_append error. */
int tc__log_escape_text(tc__buf *b, const char *s, size_t len);

/* Appends one whole line, '\n' included, in format (TC_ACCESS_LOG_TEXT or _JSON). Returns 0 or
 * the tc__buf_append error (a buffer of TC__LOG_LINE_MAX always has room). */
int tc__log_format(tc__buf *b, int format, const tc__log_entry *e);

#endif /* TAILCUT_ACCESS_LOG_H */
