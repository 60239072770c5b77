/*
 * tailcut fetch: the request every URL gets (see cmd_fetch.h), from -X, -H, -d and --cacert.
 *
 * Each is checked while the options are read, with the same tests the client applies to every
 * request (the header rules of src/http/forward.c), so a value the command accepts is one the
 * client sends, and a bad one is exit 2 with one line naming the flag before anything has been
 * sent. Files named by -d @FILE and --cacert are opened now too: an unreadable one is a bad option,
 * not one error per URL.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cli.h"
#include "cmd_fetch.h"
#include "http/forward_internal.h" /* src/: the client's header rules */

#define CMD FETCH_CMD
#define READ_STEP 65536
#define TOO_LARGE "larger than 16 MiB (16777216 bytes)"
#define SHOWN_MAX 200 /* bytes of a bad value quoted in its message */
#define SHOWN_SIZE (SHOWN_MAX + 8)
_Static_assert(sizeof(((settings_error *)0)->buf) >= SHOWN_SIZE, "room for a quoted value");

/* A bad value as it may be quoted in a one-line message: control bytes (a CR or LF meant to
 * smuggle a header in) written as \xHH, cut at SHOWN_MAX bytes. */
static const char *shown(const char *val, char *buf, size_t size)
{
    size_t o = 0;
    for (const char *p = val; *p && o + 5 < size; p++) {
        unsigned char c = (unsigned char)*p;
        if (o >= SHOWN_MAX) {
            memcpy(buf + o, "...", 3);
            o += 3;
            break;
        }
        if (c < 0x20 || c == 0x7f)
            o += (size_t)snprintf(buf + o, size - o, "\\x%02X", c);
        else
            buf[o++] = (char)c;
    }
    buf[o] = '\0';
    return buf;
}

int fetch_check_method(const setting *s, const char *val, void *field, settings_error *e)
{
    (void)s;
    (void)field;
    if (tc__header_name_ok(val, strlen(val)))
        return 0;
    return settings_invalid(e, shown(val, e->buf, SHOWN_SIZE),
                            "a method is an HTTP token (letters, digits and "
                            "!#$%%&'*+-.^_`|~), such as GET or POST");
}

int fetch_header_add(const setting *s, const char *val, void *field, settings_error *e)
{
    fetch_headers *headers = field;
    size_t nlen, vlen;
    const char *v, *why;
    (void)s;
    if (tc__header_line_parse(val, strlen(val), &nlen, &v, &vlen, &why) != 0)
        return settings_invalid(e, shown(val, e->buf, SHOWN_SIZE), "%s", why);
    if ((nlen == 14 && strncasecmp(val, "Content-Length", nlen) == 0) ||
        (nlen == 17 && strncasecmp(val, "Transfer-Encoding", nlen) == 0))
        return settings_invalid(e, shown(val, e->buf, SHOWN_SIZE),
                                "%.*s is set from -d, not by hand", (int)nlen, val);
    tc_header *grown = realloc(headers->v, (headers->n + 1) * sizeof(*grown));
    char *copy = grown != NULL ? malloc(nlen + 1 + vlen + 1) : NULL;
    if (grown != NULL)
        headers->v = grown;
    if (copy == NULL)
        return settings_failed(e, "out of memory", "out of memory");
    memcpy(copy, val, nlen);
    copy[nlen] = '\0';
    memcpy(copy + nlen + 1, v, vlen);
    copy[nlen + 1 + vlen] = '\0';
    headers->v[headers->n].name = copy;
    headers->v[headers->n].value = copy + nlen + 1;
    headers->n++;
    return 0;
}

void fetch_headers_free(void *field)
{
    fetch_headers *headers = field;
    for (size_t i = 0; i < headers->n; i++)
        free((char *)(uintptr_t)headers->v[i].name); /* the value lives in the same block */
    free(headers->v);
    headers->v = NULL;
    headers->n = 0;
}

/* Opens name for reading, refusing a directory and a regular file larger than max. Returns the
 * descriptor, or -1 with *why. */
static int open_readable(const char *name, off_t max, const char **why)
{
    struct stat st;
    if (*name == '\0') {
        *why = "no file name";
        return -1;
    }
    int fd = open(name, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        *why = strerror(errno);
        return -1;
    }
    if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
        *why = strerror(EISDIR);
        (void)close(fd);
        return -1;
    }
    if (max > 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > max) {
        *why = TOO_LARGE;
        (void)close(fd);
        return -1;
    }
    return fd;
}

int fetch_read_data_file(const char *name, char **body, size_t *len)
{
    const char *why = NULL;
    size_t cap = 0, n = 0;
    char *buf = NULL;
    int fd = open_readable(name, (off_t)FETCH_MAX_DATA_FILE, &why);
    while (fd >= 0) { /* a pipe or a file that grows is checked as it is read */
        if (n == cap) {
            cap = cap == 0 ? READ_STEP : cap * 2; /* geometric: a 16 MiB file is 9 reallocs */
            char *nb = realloc(buf, cap);
            if (nb == NULL) {
                why = "out of memory";
                break;
            }
            buf = nb;
        }
        ssize_t got = read(fd, buf + n, cap - n);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            why = strerror(errno);
            break;
        }
        if (got == 0) { /* the end: the whole file is in */
            (void)close(fd);
            *body = buf != NULL ? buf : malloc(1); /* an empty file is an empty body */
            *len = n;
            if (*body != NULL)
                return 0;
            cli_error(CMD, "out of memory");
            return -1;
        }
        n += (size_t)got;
        if (n > FETCH_MAX_DATA_FILE) {
            why = TOO_LARGE;
            break;
        }
    }
    if (fd >= 0)
        (void)close(fd);
    free(buf);
    cli_error(CMD, "cannot read -d file '%s': %s", name, why);
    return -1;
}

int fetch_check_cacert(const setting *s, const char *name, void *field, settings_error *e)
{
    const char *why = NULL;
    (void)field;
    int fd = open_readable(name, 0, &why);
    if (fd < 0) {
        char standalone[SETTINGS_WHY_MAX], flag[64];
        (void)snprintf(standalone, sizeof(standalone), "cannot read file '%s': %s", name, why);
        return settings_failed(e, standalone, "cannot read %s file '%s': %s",
                               settings_flag(s, flag, sizeof(flag)), name, why);
    }
    (void)close(fd);
    return 0;
}
