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

int fetch_check_method(const char *val)
{
    char buf[SHOWN_MAX + 8];
    if (tc__header_name_ok(val, strlen(val)))
        return 0;
    cli_error(CMD,
              "invalid value '%s' for -X: a method is an HTTP token (letters, digits and "
              "!#$%%&'*+-.^_`|~), such as GET or POST",
              shown(val, buf, sizeof(buf)));
    return -1;
}

int fetch_header_add(tc_header *headers, size_t *n, const char *val)
{
    size_t nlen, vlen;
    const char *v, *why;
    char buf[SHOWN_MAX + 8];
    if (tc__header_line_parse(val, strlen(val), &nlen, &v, &vlen, &why) != 0) {
        cli_error(CMD, "invalid value '%s' for -H: %s", shown(val, buf, sizeof(buf)), why);
        return -1;
    }
    if ((nlen == 14 && strncasecmp(val, "Content-Length", nlen) == 0) ||
        (nlen == 17 && strncasecmp(val, "Transfer-Encoding", nlen) == 0)) {
        cli_error(CMD, "invalid value '%s' for -H: %.*s is set from -d, not by hand",
                  shown(val, buf, sizeof(buf)), (int)nlen, val);
        return -1;
    }
    char *copy = malloc(nlen + 1 + vlen + 1);
    if (copy == NULL) {
        cli_error(CMD, "out of memory");
        return -1;
    }
    memcpy(copy, val, nlen);
    copy[nlen] = '\0';
    memcpy(copy + nlen + 1, v, vlen);
    copy[nlen + 1 + vlen] = '\0';
    headers[*n].name = copy;
    headers[*n].value = copy + nlen + 1;
    (*n)++;
    return 0;
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

int fetch_check_cacert(const char *name)
{
    const char *why = NULL;
    int fd = open_readable(name, 0, &why);
    if (fd < 0) {
        cli_error(CMD, "cannot read --cacert file '%s': %s", name, why);
        return -1;
    }
    (void)close(fd);
    return 0;
}
