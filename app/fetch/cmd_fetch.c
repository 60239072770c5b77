/*
 * `tailcut fetch`: many requests at once, one JSON line per URL as results arrive.
 *
 * The fetching itself is src/fetch/fetch.c (tc_fetch, on its own tc_client). This file is the
 * command around it: flags, the request every URL gets (-X, -H, -d), the input, the output
 * stream, the progress bar, Ctrl-C and SIGTERM; the summary is cmd_fetch_summary.c.
 *
 * The one idea that makes it work: tc_fetch *pulls* URLs, so input is read only as fast as
 * requests finish. The input file (or stdin) is read by one reader thread (cmd_fetch_input.c)
 * into a small bounded queue (FETCH_QUEUE_CAP lines); when the queue is full the thread simply
 * waits, and when the queue is empty the loop is woken by a uv_async. A slow pipe, a terminal or a
 * huge regular file all look the same to the loop, which never blocks on input, and a million URLs
 * cost no more memory than a hundred.
 *
 * Every file an option names (-i, -d @FILE, --cacert, -o, --summary-json) is opened while the
 * options are read, before any request, so a bad one is exit 2 and nothing has been sent.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <uv.h>

#include "common/cli.h"
#include "cmd_fetch.h"
#include "common/commands.h"

#define CMD FETCH_CMD
#define EXIT_SOME_FAILED 3
#define EXIT_SIGNALLED(signum) (128 + (signum)) /* 130 for SIGINT, 143 for SIGTERM */

#define FETCH_OUT_BUFFER 65536 /* output stream buffer */
#define FETCH_PROGRESS_MS 100  /* progress bar redraws at most 10 times a second */
#define FETCH_BAR_WIDTH 24

/* ---- the command ---------------------------------------------------------------------------- */

typedef struct app {
    uv_loop_t loop;
    tc_fetch *fetch;
    fetch_options opt; /* opt.cfg is the fetch's */

    const char **urls; /* from the arguments */
    size_t nurls, next_url;
    fetch_reader *rd; /* -i */

    FILE *out;
    int out_flush_each_turn; /* a pipe or socket: flush once per loop iteration */
    int out_is_tty;
    int dirty;
    tc__buf line;
    int write_failed;

    int progress;
    int bar_visible;
    uv_timer_t progress_timer;
    uv_signal_t sigint, sigterm;
    uv_prepare_t flusher;

    uint64_t start_ns, end_ns;
    int interrupted; /* the first SIGINT or SIGTERM, else 0 */
    int done_status;
    tc_fetch_stats stats; /* taken when the fetch is over, for the summary */

    fetch_summary sum;
    FILE *summary_json; /* --summary-json, opened at start */

    /* The body every URL gets. */
    char *body; /* -d: malloc'd (a file's bytes, or a copy of DATA) */
    size_t body_len;
} app;

static void usage(FILE *out)
{
    (void)fprintf(
        out, "usage: tailcut fetch [OPTIONS] [URL...]\n"
             "\n"
             "Request many URLs concurrently over a connection pool; one JSON line per URL as\n"
             "results arrive: {\"url\":..,\"status\":N,\"ms\":N,\"bytes\":N,\"error\":null|TEXT}\n"
             "(status 0 when there was no HTTP response). A summary goes to stderr at the end.\n"
             "\n"
             "options:\n");
    settings_print_help(out, &fetch_settings);
    (void)fprintf(out,
                  "\n"
                  "exit status: 0 every URL got a 2xx or 3xx, 3 some did not, 2 bad options or an\n"
                  "unreadable file (-i, -d @FILE, --cacert), 1 a runtime failure (output), 130\n"
                  "interrupted (Ctrl-C), 143 terminated (SIGTERM); the summary then covers what\n"
                  "finished.\n"
                  "See docs/fetch.md.\n");
}

static tc_fetch_next source_next(void *data, tc_fetch_input *in)
{
    app *a = data;
    if (a->next_url < a->nurls) {
        in->url = strdup(a->urls[a->next_url++]);
        if (in->url == NULL)
            in->error = TC_ENOMEM;
        return TC_FETCH_NEXT_URL;
    }
    if (a->rd == NULL)
        return TC_FETCH_NEXT_END;
    return fetch_reader_next(a->rd, in);
}

static void on_async(uv_async_t *h)
{
    app *a = h->data;
    if (a->fetch != NULL)
        tc_fetch_resume(a->fetch);
}

static void bar_clear(app *a)
{
    if (a->bar_visible) {
        (void)fputs("\r\033[K", stderr);
        a->bar_visible = 0;
    }
}

static void on_result(tc_fetch *f, const tc_fetch_result *r, void *data)
{
    app *a = data;
    (void)f;
    fetch_summary_add(&a->sum, r);

    a->line.len = 0;
    if (tc__fetch_result_json(&a->line, r, a->opt.with_body) != 0) {
        a->write_failed = ENOMEM;
        return;
    }
    if (a->out_is_tty)
        bar_clear(a);
    if (fwrite(a->line.data, 1, a->line.len, a->out) != a->line.len && !a->write_failed)
        a->write_failed = errno ? errno : EIO;
    a->dirty = 1;
}

/* Before the loop blocks: results written this turn go out now, in one write. */
static void on_prepare(uv_prepare_t *h)
{
    app *a = h->data;
    if (!a->dirty)
        return;
    a->dirty = 0;
    if (a->out_flush_each_turn && fflush(a->out) != 0 && !a->write_failed)
        a->write_failed = errno ? errno : EIO;
    if (a->write_failed && !a->interrupted && a->fetch != NULL)
        tc_fetch_stop(a->fetch); /* nowhere to write: stop (exit 1) */
}

static void fmt_duration(char *buf, size_t n, double secs)
{
    if (secs < 0 || secs > 359999)
        (void)snprintf(buf, n, "--:--");
    else if (secs >= 3600)
        (void)snprintf(buf, n, "%d:%02d:%02d", (int)secs / 3600, ((int)secs / 60) % 60,
                       (int)secs % 60);
    else
        (void)snprintf(buf, n, "%d:%02d", (int)secs / 60, (int)secs % 60);
}

static void draw_progress(app *a)
{
    char line[256];
    double elapsed = (double)(uv_hrtime() - a->start_ns) / 1e9;
    double rate = elapsed > 0 ? (double)a->sum.results / elapsed : 0;
    uint64_t total = 0;
    int known = a->rd == NULL || atomic_load(&a->rd->total_known) == 1;
    if (known)
        total = a->nurls + (a->rd ? atomic_load(&a->rd->total) : 0);
    int n;
    if (known && total > 0) {
        double frac = (double)a->sum.results / (double)total;
        if (frac > 1)
            frac = 1;
        char bar[FETCH_BAR_WIDTH + 1];
        int fill = (int)(frac * FETCH_BAR_WIDTH);
        for (int i = 0; i < FETCH_BAR_WIDTH; i++)
            bar[i] = i < fill ? '#' : '-';
        bar[FETCH_BAR_WIDTH] = '\0';
        char eta[32];
        fmt_duration(
            eta, sizeof(eta),
            rate > 0 ? (double)(total - (a->sum.results < total ? a->sum.results : total)) / rate
                     : -1);
        n = snprintf(line, sizeof(line),
                     "\r[%s] %llu/%llu %3.0f%% | %.0f req/s | ETA %s | %llu failed\033[K", bar,
                     (unsigned long long)a->sum.results, (unsigned long long)total, frac * 100,
                     rate, eta, (unsigned long long)a->sum.failed);
    } else {
        n = snprintf(line, sizeof(line), "\r%llu done | %.0f req/s | %llu failed\033[K",
                     (unsigned long long)a->sum.results, rate, (unsigned long long)a->sum.failed);
    }
    if (n > 0) {
        (void)fwrite(line, 1, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1, stderr);
        a->bar_visible = 1;
    }
}

static void on_progress(uv_timer_t *t)
{
    app *a = t->data;
    if (a->out_is_tty)
        (void)fflush(a->out); /* lines first, then the bar under them */
    draw_progress(a);
}

/* SIGINT and SIGTERM alike: the first stops the run, which still ends with its summary; a second
 * exits at once. The exit status is 128 + the signal's number, as a shell reports it. */
static void on_signal(uv_signal_t *s, int signum)
{
    app *a = s->data;
    if (a->interrupted) {
        bar_clear(a);
        (void)fputs("tailcut fetch: interrupted again, exiting at once\n", stderr);
        (void)fflush(a->out); /* best effort: exiting at once */
        _exit(EXIT_SIGNALLED(signum));
    }
    a->interrupted = signum;
    if (a->fetch != NULL)
        tc_fetch_stop(a->fetch);
}

static void on_handle_closed(uv_handle_t *h)
{
    (void)h;
}

static void on_fetch_closed(tc_fetch *f, void *data)
{
    app *a = data;
    (void)f;
    a->fetch = NULL;
}

static void on_done(tc_fetch *f, int status, void *data)
{
    app *a = data;
    a->end_ns = uv_hrtime();
    a->done_status = status;
    tc_fetch_get_stats(f, &a->stats);
    fetch_reader_stop(a->rd, on_handle_closed);
    if (a->progress) {
        uv_timer_stop(&a->progress_timer);
        draw_progress(a); /* the final count */
    }
    uv_close((uv_handle_t *)&a->progress_timer, on_handle_closed);
    uv_close((uv_handle_t *)&a->flusher, on_handle_closed);
    /* The signals stay watched until the loop ends, so a second one still exits at once. */
    uv_unref((uv_handle_t *)&a->sigint);
    uv_unref((uv_handle_t *)&a->sigterm);
    tc_fetch_close(f, on_fetch_closed, a);
}
/* An operand is a URL. */
static int add_url(void *data, const char *arg)
{
    app *a = data;
    a->urls[a->nurls++] = arg;
    return 0;
}

/* The body of -d (the last one wins, and only its file is read) and the method it implies, then
 * -X and -H, into the fetch's config. Returns -1 to go on, else the exit status. */
static int set_request(app *a)
{
    fetch_options *o = &a->opt;
    const char *data = o->data;
    if (data != NULL) {
        if (data[0] == '@') {
            if (fetch_read_data_file(data + 1, &a->body, &a->body_len) != 0)
                return CLI_EXIT_USAGE;
        } else if ((a->body = strdup(data)) == NULL) {
            cli_error(CMD, "out of memory");
            return CLI_EXIT_FAILURE;
        } else {
            a->body_len = strlen(data);
        }
        o->cfg.body = a->body;
        o->cfg.body_len = a->body_len;
    }
    o->cfg.method = o->method != NULL ? o->method : data != NULL ? "POST" : NULL;
    o->cfg.headers = o->headers.v;
    o->cfg.nheaders = o->headers.n;
    return -1;
}

/* The defaults, then the options. Returns -1 to go on, else the exit status. */
static int read_settings(app *a, int argc, char **argv)
{
    settings_target to = {&a->opt, NULL};
    settings_cli cli = {usage, add_url, a, NULL};
    tc_fetch_config_init(&a->opt.cfg);
    int status = settings_read_cli(&fetch_settings, argc, argv, &to, &cli);
    if (status >= 0)
        return status;
    if (a->nurls == 0 && a->opt.input == NULL) {
        cli_error(CMD, "no URLs: give them as arguments or with -i FILE (see 'tailcut fetch "
                       "--help')");
        return CLI_EXIT_USAGE;
    }
    return set_request(a);
}

/* One socket per transfer: let the process have as many descriptors as it is allowed. */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* The summary on stderr and, with --summary-json, in its file. Returns 0, or -1 when the JSON
 * could not be written (said on stderr). */
static int report_summary(app *a, int exit_status)
{
    fetch_run run;
    memset(&run, 0, sizeof(run));
    run.secs = (double)(a->end_ns - a->start_ns) / 1e9;
    run.stats = a->stats;
    run.signum = a->interrupted;
    run.rate = a->opt.cfg.rate;
    run.concurrency = a->opt.cfg.concurrency;
    run.exit_status = exit_status;
    bar_clear(a);
    fetch_summary_print(stderr, &a->sum, &run);
    if (a->summary_json == NULL)
        return 0;
    tc__buf b;
    tc__buf_init(&b, NULL, 0, SIZE_MAX);
    int err = fetch_summary_json(&b, &a->sum, &run) != 0 ? ENOMEM : 0;
    if (err == 0 && fwrite(b.data, 1, b.len, a->summary_json) != b.len)
        err = errno ? errno : EIO;
    if (fclose(a->summary_json) != 0 && err == 0)
        err = errno ? errno : EIO;
    a->summary_json = NULL;
    tc__buf_reset(&b);
    if (err != 0) {
        cli_error(CMD, "cannot write --summary-json file '%s': %s", a->opt.summary_json,
                  strerror(err));
        return -1;
    }
    return 0;
}

static void app_free(app *a)
{
    if (a == NULL)
        return;
    settings_target opt = {&a->opt, NULL};
    settings_free(&fetch_settings, &opt);
    free(a->body);
    free(a->urls);
    free(a);
}

/* Opens every file the options name, before any request, so a bad one is exit 2 and nothing has
 * been sent: -i, -o, --summary-json. Returns -1 to go on, else the exit status. */
static int open_files(app *a)
{
    const fetch_options *o = &a->opt;
    if (o->input != NULL && (a->rd = fetch_reader_open(o->input)) == NULL)
        return CLI_EXIT_USAGE;
    a->out = stdout;
    if (o->output != NULL && strcmp(o->output, "-") != 0) {
        a->out = fopen(o->output, "w");
        if (a->out == NULL) {
            cli_error(CMD, "cannot open output file '%s': %s", o->output, strerror(errno));
            return CLI_EXIT_USAGE;
        }
    }
    if (o->summary_json != NULL && (a->summary_json = fopen(o->summary_json, "w")) == NULL) {
        cli_error(CMD, "cannot open --summary-json file '%s': %s", o->summary_json,
                  strerror(errno));
        return CLI_EXIT_USAGE;
    }
    struct stat st;
    a->out_is_tty = isatty(fileno(a->out));
    a->out_flush_each_turn = !a->out_is_tty && fstat(fileno(a->out), &st) == 0 &&
                             (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode));
    /* On failure the stream keeps its default buffering, which is also correct. */
    (void)setvbuf(a->out, NULL, a->out_is_tty ? _IOLBF : _IOFBF, FETCH_OUT_BUFFER);
    a->progress = o->progress == FETCH_PROGRESS_AUTO ? isatty(STDERR_FILENO)
                                                     : o->progress == FETCH_PROGRESS_ON;
    if (a->rd != NULL)
        a->rd->count_total = a->progress;
    return -1;
}

/* A loop with the fetch, its progress timer, its flusher and its signal watchers, started.
 * Returns 0, or -1 after a message (the loop is closed again). */
static int start_fetch(app *a)
{
    if (uv_loop_init(&a->loop) != 0) {
        cli_error(CMD, "cannot create an event loop");
        return -1;
    }
    int rc = tc_fetch_new(&a->fetch, &a->loop, &a->opt.cfg, source_next, on_result, on_done, a);
    if (rc != 0) {
        cli_error(CMD, "cannot start: %s", tc_strerror(rc));
        uv_run(&a->loop, UV_RUN_DEFAULT);
        uv_loop_close(&a->loop);
        return -1;
    }
    uv_timer_init(&a->loop, &a->progress_timer);
    a->progress_timer.data = a;
    uv_prepare_init(&a->loop, &a->flusher);
    a->flusher.data = a;
    uv_prepare_start(&a->flusher, on_prepare);
    uv_signal_init(&a->loop, &a->sigint);
    uv_signal_init(&a->loop, &a->sigterm);
    a->sigint.data = a->sigterm.data = a;
    uv_signal_start(&a->sigint, on_signal, SIGINT);
    uv_signal_start(&a->sigterm, on_signal, SIGTERM);
    if (a->rd != NULL) {
        if (fetch_reader_start(a->rd, &a->loop, on_async, a) != 0) {
            cli_error(CMD, "cannot start the input reader thread");
            tc_fetch_stop(a->fetch);
        }
    }
    a->start_ns = uv_hrtime();
    if (a->progress)
        uv_timer_start(&a->progress_timer, on_progress, FETCH_PROGRESS_MS, FETCH_PROGRESS_MS);
    tc_fetch_start(a->fetch);
    return 0;
}

/* After the run (the fetch has closed; only the signal watchers are left): the exit status, the
 * summary and the last messages, then the loop closed. Returns the exit status. */
static int finish_run(app *a)
{
    int status;
    if (fflush(a->out) != 0 && !a->write_failed)
        a->write_failed = errno ? errno : EIO;
    int read_errno = a->rd ? a->rd->read_errno : 0;
    if (a->interrupted)
        status = EXIT_SIGNALLED(a->interrupted);
    else if (a->write_failed)
        status = CLI_EXIT_FAILURE;
    else if (read_errno)
        status = CLI_EXIT_USAGE;
    else if (a->sum.failed > 0)
        status = EXIT_SOME_FAILED;
    else
        status = CLI_EXIT_OK;
    if (report_summary(a, status) != 0 && !a->interrupted)
        status = CLI_EXIT_FAILURE;
    if (a->write_failed)
        cli_error(CMD, "cannot write the output: %s", strerror(a->write_failed));
    if (read_errno)
        cli_error(CMD, "cannot read input file '%s': %s", a->opt.input, strerror(read_errno));
    uv_close((uv_handle_t *)&a->sigint, on_handle_closed);
    uv_close((uv_handle_t *)&a->sigterm, on_handle_closed);
    uv_run(&a->loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&a->loop) != 0)
        cli_error(CMD, "internal: event loop still busy at exit");
    return status;
}

static void close_files(app *a)
{
    /* After a run the output was flushed, and checked, before the summary: nothing is left. */
    if (a->out != NULL && a->out != stdout)
        (void)fclose(a->out);
    else if (a->out == stdout)
        (void)fflush(stdout);
    if (a->summary_json != NULL) /* not reached the end: nothing to write */
        (void)fclose(a->summary_json);
    fetch_reader_free(a->rd);
}

int cmd_fetch(int argc, char **argv)
{
    app *a = calloc(1, sizeof(*a));
    if (a == NULL || (a->urls = calloc((size_t)argc + 1, sizeof(*a->urls))) == NULL) {
        cli_error(CMD, "out of memory");
        app_free(a);
        return CLI_EXIT_FAILURE;
    }
    fetch_summary_init(&a->sum);
    tc__buf_init(&a->line, NULL, 0, SIZE_MAX); /* one line per result: no bound of its own */
    int status = read_settings(a, argc, argv);
    if (status < 0)
        status = open_files(a);
    if (status < 0) {
        raise_fd_limit();
        status = CLI_EXIT_FAILURE;
        if (start_fetch(a) == 0) {
            uv_run(&a->loop, UV_RUN_DEFAULT);
            status = finish_run(a);
        }
    }
    close_files(a);
    tc__buf_reset(&a->line);
    app_free(a);
    return status;
}
