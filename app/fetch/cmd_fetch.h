/*
 * tailcut fetch, inside: what app/fetch/cmd_fetch.c uses from its two neighbours.
 *
 * The input reader (app/fetch/cmd_fetch_input.c): the input file (or stdin) is read by one thread
 * into a small bounded queue of FETCH_QUEUE_CAP lines; when the queue is full the thread waits, and
 * when the loop finds it empty, the loop is woken by the reader's uv_async once more lines are in.
 *
 * The options (app/fetch/cmd_fetch_settings.c): every flag once, in the settings table.
 *
 * The request (app/fetch/cmd_fetch_request.c): -X, -H, -d and --cacert, checked as they are read.
 *
 * The summary (app/fetch/cmd_fetch_summary.c): counters and a fixed-size latency histogram fed one
 * result at a time, printed as text on stderr and, with --summary-json, as one JSON object.
 */
#ifndef TAILCUT_APP_CMD_FETCH_H
#define TAILCUT_APP_CMD_FETCH_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>

#include <uv.h>

#include "common/settings.h"
#include "fetch/fetch_internal.h" /* src/: the result line and the histogram */
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

/* ---- the options (cmd_fetch_settings.c declares each) ---------------------------------------- */

enum { FETCH_PROGRESS_AUTO = 0, FETCH_PROGRESS_ON, FETCH_PROGRESS_OFF };

typedef struct fetch_headers {
    tc_header *v;
    size_t n;
} fetch_headers;

/* What the options set: the tc_fetch_config itself, and what the command does around it. */
typedef struct fetch_options {
    tc_fetch_config cfg;   /* for tc_fetch_new; -X, -H and -d join it after the options */
    char *method;          /* -X; NULL: GET, or POST with -d */
    fetch_headers headers; /* -H */
    char *data;            /* -d DATA or @FILE, read once the options are all in */
    char *input;           /* -i */
    char *output;          /* -o */
    char *summary_json;    /* --summary-json */
    int with_body;         /* --body */
    int progress;          /* FETCH_PROGRESS_*: --progress, --no-progress */
} fetch_options;

/* ---- the request ---------------------------------------------------------------------------- */

#define FETCH_MAX_DATA_FILE ((size_t)16 * 1024 * 1024) /* -d @FILE: every transfer holds a copy */

/* -X: 0, or -1 with e filled when val is not an HTTP token (a settings_check_fn). */
int fetch_check_method(const setting *s, const char *val, void *field, settings_error *e);

/* -H 'Name: value': appends a copy to the fetch_headers field (name and value in one malloc'd
 * block, freed through name). Returns 0, or -1 with e filled. */
int fetch_header_add(const setting *s, const char *val, void *field, settings_error *e);
void fetch_headers_free(void *field);

/* -d @FILE: the whole file, verbatim, at most FETCH_MAX_DATA_FILE bytes, into *body (malloc'd)
 * and *len. Returns 0, or -1 with a message naming the flag. */
int fetch_read_data_file(const char *name, char **body, size_t *len);

/* --cacert: 0 when the file can be opened for reading (and is not a directory), else -1 with e
 * filled. */
int fetch_check_cacert(const setting *s, const char *name, void *field, settings_error *e);

/* ---- the summary ---------------------------------------------------------------------------- */

#define FETCH_NSTATUS 600 /* statuses 0 (no response) and 100..599; others counted apart */
#define FETCH_NERRORS 32  /* errors by -code */

typedef struct fetch_summary {
    uint64_t results, ok, failed, no_response;
    uint64_t status_counts[FETCH_NSTATUS];
    uint64_t status_other;
    uint64_t error_counts[FETCH_NERRORS];
    tc__hist hist;
} fetch_summary;

/* How the run went, beside the per-result figures. */
typedef struct fetch_run {
    double secs;          /* start to the end of the fetch */
    tc_fetch_stats stats; /* taken when the fetch was over */
    int signum;           /* SIGINT or SIGTERM that ended the run, else 0 */
    double rate;          /* --rate, 0 = none */
    size_t concurrency;
    int exit_status;
} fetch_run;

void fetch_summary_init(fetch_summary *s);

/* Counts one result (r as the fetch reported it). */
void fetch_summary_add(fetch_summary *s, const tc_fetch_result *r);

/* The text summary, several lines. */
void fetch_summary_print(FILE *out, const fetch_summary *s, const fetch_run *run);

/* The same figures as one JSON object and a newline (docs/fetch.md lists the fields). Returns 0
 * or TC_ENOMEM. */
int fetch_summary_json(tc__buf *b, const fetch_summary *s, const fetch_run *run);

#endif /* TAILCUT_APP_CMD_FETCH_H */
