/*
 * tailcut fetch: the input reader thread (see cmd_fetch.h).
 *
 * tc_fetch pulls URLs, so input is read only as fast as requests finish: a slow pipe, a terminal
 * or a huge regular file all look the same to the loop, which never blocks on input, and a
 * million URLs cost no more memory than a hundred.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cli.h"
#include "cmd_fetch.h"

static int is_blank(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

/* Queues one item. Returns 0, or -1 when the loop asked the thread to stop. */
static int reader_push(fetch_reader *rd, tc_fetch_input *it)
{
    int notify = 0;
    pthread_mutex_lock(&rd->mu);
    if (rd->count == FETCH_QUEUE_CAP) {
        rd->thread_waiting = 1;
        while (rd->thread_waiting && !rd->stop)
            pthread_cond_wait(&rd->cond, &rd->mu);
        rd->thread_waiting = 0;
    }
    if (rd->stop) {
        pthread_mutex_unlock(&rd->mu);
        free(it->url);
        return -1;
    }
    rd->items[(rd->head + rd->count) % FETCH_QUEUE_CAP] = *it;
    rd->count++;
    if (rd->loop_waiting) {
        rd->loop_waiting = 0;
        notify = 1;
    }
    pthread_mutex_unlock(&rd->mu);
    if (notify)
        uv_async_send(&rd->async);
    return 0;
}

/* One input line (no newline), of which the first len bytes are kept; overflow says the line
 * was longer than FETCH_MAX_LINE. Blank lines and # comments are skipped. */
static int reader_line(fetch_reader *rd, char *line, size_t len, int overflow)
{
    size_t a = 0, b = len;
    while (a < b && is_blank((unsigned char)line[a]))
        a++;
    while (b > a && is_blank((unsigned char)line[b - 1]))
        b--;
    if (a == b && !overflow)
        return 0;
    if (a < b && line[a] == '#')
        return 0;
    if (a == b) /* an over-long line of blanks */
        return 0;
    tc_fetch_input it = {NULL, 0, NULL};
    size_t n = b - a;
    if (overflow) {
        n = n < FETCH_LONG_LINE_SHOWN ? n : FETCH_LONG_LINE_SHOWN;
        it.error = TC_EURL;
        it.message = "input line longer than 8192 bytes";
    } else if (memchr(line + a, '\0', n) != NULL) {
        it.error = TC_EURL;
        it.message = "input line contains a NUL byte";
    }
    it.url = malloc(n + 4);
    if (it.url == NULL)
        return -1;
    memcpy(it.url, line + a, n);
    if (overflow)
        memcpy(it.url + n, "...", 3), n += 3;
    it.url[n] = '\0';
    return reader_push(rd, &it);
}

/* Counts the URL lines from the current offset to the end by the rules of reader_line(),
 * without moving the offset (pread). */
static void reader_count(fetch_reader *rd, char *buf)
{
    off_t off = lseek(rd->fd, 0, SEEK_CUR);
    if (off < 0)
        return;
    uint64_t n = 0;
    int seen = 0, comment = 0;
    for (;;) {
        ssize_t got = pread(rd->fd, buf, FETCH_READ_CHUNK, off);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            break;
        off += got;
        for (ssize_t i = 0; i < got; i++) {
            unsigned char c = (unsigned char)buf[i];
            if (c == '\n') {
                n += seen && !comment;
                seen = comment = 0;
            } else if (!seen && !is_blank(c)) {
                seen = 1;
                comment = c == '#';
            }
        }
        pthread_mutex_lock(&rd->mu);
        int stop = rd->stop;
        pthread_mutex_unlock(&rd->mu);
        if (stop)
            return;
    }
    n += seen && !comment;
    atomic_store(&rd->total, n);
    atomic_store(&rd->total_known, 1);
}

static void *reader_main(void *arg)
{
    fetch_reader *rd = arg;
    char *buf = malloc(FETCH_READ_CHUNK);
    char *line = malloc(FETCH_MAX_LINE + 1);
    size_t llen = 0;
    int overflow = 0, err = 0;
    if (buf == NULL || line == NULL) {
        err = ENOMEM;
        goto out;
    }
    if (rd->count_total && rd->is_regular)
        reader_count(rd, buf);
    for (;;) {
        if (!rd->is_regular) {
            struct pollfd p[2] = {{rd->fd, POLLIN, 0}, {rd->wake[0], POLLIN, 0}};
            if (poll(p, 2, -1) < 0) {
                if (errno == EINTR)
                    continue;
                err = errno;
                break;
            }
            if (p[1].revents)
                break; /* stop */
        }
        pthread_mutex_lock(&rd->mu);
        int stop = rd->stop;
        pthread_mutex_unlock(&rd->mu);
        if (stop)
            break;
        ssize_t got = read(rd->fd, buf, FETCH_READ_CHUNK);
        if (got < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            err = errno;
            break;
        }
        if (got == 0) {
            if (llen > 0 || overflow)
                reader_line(rd, line, llen, overflow);
            break;
        }
        char *p = buf, *end = buf + got;
        while (p < end) {
            char *nl = memchr(p, '\n', (size_t)(end - p));
            char *seg_end = nl ? nl : end;
            size_t seg = (size_t)(seg_end - p);
            if (llen + seg > FETCH_MAX_LINE) {
                size_t fit = FETCH_MAX_LINE - llen;
                memcpy(line + llen, p, fit);
                llen += fit;
                overflow = 1;
            } else {
                memcpy(line + llen, p, seg);
                llen += seg;
            }
            if (nl == NULL)
                break;
            if (reader_line(rd, line, llen, overflow) != 0)
                goto out;
            llen = 0;
            overflow = 0;
            p = nl + 1;
        }
    }
out:
    free(buf);
    free(line);
    pthread_mutex_lock(&rd->mu);
    rd->eof = 1;
    rd->read_errno = err;
    int notify = rd->loop_waiting;
    rd->loop_waiting = 0;
    pthread_mutex_unlock(&rd->mu);
    if (notify)
        uv_async_send(&rd->async);
    return NULL;
}

int fetch_reader_start(fetch_reader *rd, uv_loop_t *loop, uv_async_cb wake, void *data)
{
    uv_async_init(loop, &rd->async, wake);
    rd->async.data = data;
    rd->async_ready = 1;
    if (pthread_create(&rd->thread, NULL, reader_main, rd) != 0)
        return -1;
    rd->thread_started = 1;
    return 0;
}

tc_fetch_next fetch_reader_next(fetch_reader *rd, tc_fetch_input *in)
{
    tc_fetch_next n;
    pthread_mutex_lock(&rd->mu);
    if (rd->count > 0) {
        *in = rd->items[rd->head];
        rd->head = (rd->head + 1) % FETCH_QUEUE_CAP;
        rd->count--;
        /* Wake the reader only at half empty, so that it refills in bulk rather than one
         * context switch per URL. */
        if (rd->thread_waiting && rd->count <= FETCH_QUEUE_CAP / 2) {
            rd->thread_waiting = 0;
            pthread_cond_signal(&rd->cond);
        }
        n = TC_FETCH_NEXT_URL;
    } else if (rd->eof) {
        n = TC_FETCH_NEXT_END;
    } else {
        rd->loop_waiting = 1;
        n = TC_FETCH_NEXT_WAIT;
    }
    pthread_mutex_unlock(&rd->mu);
    return n;
}

void fetch_reader_stop(fetch_reader *rd, uv_close_cb closed)
{
    if (rd == NULL)
        return;
    if (rd->thread_started) {
        pthread_mutex_lock(&rd->mu);
        rd->stop = 1;
        pthread_cond_broadcast(&rd->cond);
        pthread_mutex_unlock(&rd->mu);
        ssize_t w = write(rd->wake[1], "x", 1);
        (void)w;
        pthread_join(rd->thread, NULL);
        rd->thread_started = 0;
    }
    while (rd->count > 0) {
        free(rd->items[rd->head].url);
        rd->head = (rd->head + 1) % FETCH_QUEUE_CAP;
        rd->count--;
    }
    if (rd->async_ready) {
        uv_close((uv_handle_t *)&rd->async, closed);
        rd->async_ready = 0;
    }
}

void fetch_reader_free(fetch_reader *rd)
{
    if (rd == NULL)
        return;
    if (rd->close_fd)
        close(rd->fd);
    if (rd->wake[0] >= 0)
        close(rd->wake[0]);
    if (rd->wake[1] >= 0)
        close(rd->wake[1]);
    pthread_mutex_destroy(&rd->mu);
    pthread_cond_destroy(&rd->cond);
    free(rd);
}

fetch_reader *fetch_reader_open(const char *name)
{
    fetch_reader *rd = calloc(1, sizeof(*rd));
    if (rd == NULL) {
        cli_error(FETCH_CMD, "out of memory");
        return NULL;
    }
    rd->name = name;
    rd->wake[0] = rd->wake[1] = -1;
    pthread_mutex_init(&rd->mu, NULL);
    pthread_cond_init(&rd->cond, NULL);
    if (strcmp(name, "-") == 0) {
        rd->fd = STDIN_FILENO;
    } else {
        rd->fd = open(name, O_RDONLY | O_CLOEXEC);
        if (rd->fd < 0) {
            cli_error(FETCH_CMD, "cannot read input file '%s': %s", name, strerror(errno));
            fetch_reader_free(rd);
            return NULL;
        }
        rd->close_fd = 1;
    }
    struct stat st;
    if (fstat(rd->fd, &st) != 0) {
        cli_error(FETCH_CMD, "cannot read input file '%s': %s", name, strerror(errno));
        fetch_reader_free(rd);
        return NULL;
    }
    if (S_ISDIR(st.st_mode)) {
        cli_error(FETCH_CMD, "cannot read input file '%s': %s", name, strerror(EISDIR));
        fetch_reader_free(rd);
        return NULL;
    }
    rd->is_regular = S_ISREG(st.st_mode);
    if (pipe2(rd->wake, O_CLOEXEC) != 0) {
        cli_error(FETCH_CMD, "cannot create a pipe: %s", strerror(errno));
        fetch_reader_free(rd);
        return NULL;
    }
    return rd;
}
