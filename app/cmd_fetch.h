/*
 * tailcut fetch, inside: the input reader that app/cmd_fetch_input.c implements for
 * app/cmd_fetch.c.
 *
 * The input file (or stdin) is read by one thread into a small bounded queue of
 * FETCH_QUEUE_CAP lines; when the queue is full the thread waits, and when the loop finds it
 * empty, the loop is woken by the reader's uv_async once more lines are in.
 */
#ifndef TAILCUT_APP_CMD_FETCH_H
#define TAILCUT_APP_CMD_FETCH_H

#include <pthread.h>
#include <stdatomic.h>

#include <uv.h>

#include "tailcut/fetch.h"

#define FETCH_CMD "fetch"

#define FETCH_MAX_LINE 8192      /* an input line longer than this is one error result */
#define FETCH_QUEUE_CAP 1024     /* lines read ahead of the requests */
#define FETCH_READ_CHUNK 65536   /* bytes per read(2) of the input */
#define FETCH_LONG_LINE_SHOWN 64 /* bytes of an over-long line kept for its "url" */

typedef struct fetch_reader {
    int fd;
    int close_fd;
    int is_regular;
    int count_total; /* count the URLs of a regular file first, for the progress bar */
    const char *name;
    pthread_t thread;
    int thread_started;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    tc_fetch_input items[FETCH_QUEUE_CAP]; /* a ring */
    size_t head, count;
    int eof;          /* no more items will come */
    int read_errno;   /* why reading stopped early, 0 at a clean end */
    int stop;         /* the loop wants the thread gone */
    int loop_waiting; /* the loop saw the queue empty: wake it with the async */
    int thread_waiting;
    int wake[2]; /* a pipe that breaks the thread's poll() on stop */
    uv_async_t async;
    int async_ready;
    atomic_ullong total; /* URLs counted in a regular file */
    atomic_int total_known;
} fetch_reader;

/* Opens the input named by -i ('-' = stdin). Returns the reader, or NULL with a message. */
fetch_reader *fetch_reader_open(const char *name);

/* Starts the thread; wake(async) runs on the loop when lines come after the loop found the queue
 * empty (async->data = data). Returns 0 or -1 (the async is set up either way). */
int fetch_reader_start(fetch_reader *rd, uv_loop_t *loop, uv_async_cb wake, void *data);

/* The next input line: TC_FETCH_NEXT_URL with *in filled, TC_FETCH_NEXT_END at the end, or
 * TC_FETCH_NEXT_WAIT (the wake callback runs when there is more). */
tc_fetch_next fetch_reader_next(fetch_reader *rd, tc_fetch_input *in);

/* Stops the thread (if running), frees the queued lines and closes the async with closed. */
void fetch_reader_stop(fetch_reader *rd, uv_close_cb closed);

/* After fetch_reader_stop and the close of the async. NULL is fine. */
void fetch_reader_free(fetch_reader *rd);

#endif /* TAILCUT_APP_CMD_FETCH_H */
