/*
 * tailcut serve: the deadline trace (TAILCUT_TRACE=PATH), a measuring aid for deadlines under a
 * burst (bench/smart/deadline).
 *
 * Off unless the variable is set, and then one ring of records per worker, written to
 * PATH.<worker> when the worker ends. A record follows one attempt-endpoint request: when it was
 * read, how long the loop had been busy in that turn before reading it, its deadline, when its
 * hedge ended (on_hedge_done: the deadline timer's callback, after the attempts' cancellation),
 * and when its answer was in the socket. A turn is seen from two loop handles: a prepare
 * (just before the loop blocks for I/O) and a check (just after the I/O callbacks); with the
 * loop's idle-time metric they give the moment the poll returned, so a record says how long the
 * request sat behind the turn's earlier work, and which answer of its turn it was.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd_serve.h"

#define TRACE_RECORDS (1u << 17) /* the newest this many per worker: a 60 s burst run at most */

typedef struct trace_record {
    uint64_t ready_ns;    /* the request was fully read */
    uint64_t io_lag_ns;   /* ready_ns minus the moment the turn's poll returned */
    uint64_t timers_ns;   /* that turn's work before its poll (timers, closes) */
    uint64_t due_ns;      /* the deadline, as the loop's millisecond clock holds it */
    uint64_t done_ns;     /* the hedge ended (on_hedge_done) */
    uint64_t turn_ns;     /* the turn that ended it began (the previous turn's check) */
    uint64_t written_ns;  /* the answer was handed to the socket */
    uint32_t turn_answer; /* the how-many-th answer of its turn */
    uint32_t status;
} trace_record;

struct serve_trace {
    char *path;
    uv_loop_t *loop;
    uv_prepare_t prepare;
    uv_check_t check;
    int stopped;            /* the handles are closing (a worker's stop may run twice) */
    uint64_t turn_start_ns; /* the previous turn's check */
    uint64_t prepare_ns;    /* this turn's prepare */
    uint64_t idle_at_poll;  /* uv_metrics_idle_time() at the prepare */
    uint64_t timers_ns;     /* this turn's prepare minus the previous check */
    uint32_t answers_in_turn;
    uint64_t next; /* records taken, ever; the slot is next % TRACE_RECORDS */
    trace_record *records;
};

static void on_prepare(uv_prepare_t *p)
{
    serve_trace *t = p->data;
    t->prepare_ns = uv_hrtime();
    t->idle_at_poll = uv_metrics_idle_time(t->loop);
    t->timers_ns = t->turn_start_ns != 0 ? t->prepare_ns - t->turn_start_ns : 0;
}

static void on_check(uv_check_t *c)
{
    serve_trace *t = c->data;
    t->turn_start_ns = uv_hrtime();
    t->answers_in_turn = 0;
}

serve_trace *serve_trace_open(uv_loop_t *loop, unsigned worker)
{
    const char *base = getenv("TAILCUT_TRACE");
    if (base == NULL || *base == '\0')
        return NULL;
    serve_trace *t = calloc(1, sizeof(*t));
    size_t n = strlen(base) + 16;
    char *path = malloc(n);
    trace_record *records = calloc(TRACE_RECORDS, sizeof(*records));
    if (t == NULL || path == NULL || records == NULL) {
        free(t);
        free(path);
        free(records);
        return NULL; /* a measuring aid: without memory, no trace */
    }
    (void)snprintf(path, n, "%s.%u", base, worker);
    t->path = path;
    t->records = records;
    t->loop = loop;
    (void)uv_loop_configure(loop, UV_METRICS_IDLE_TIME);
    uv_prepare_init(loop, &t->prepare);
    uv_check_init(loop, &t->check);
    t->prepare.data = t;
    t->check.data = t;
    uv_prepare_start(&t->prepare, on_prepare);
    uv_check_start(&t->check, on_check);
    return t;
}

static trace_record *record_at(serve_trace *t, uint64_t id)
{
    if (t == NULL || id == 0 || t->next - id >= TRACE_RECORDS)
        return NULL; /* none, or overwritten since */
    return &t->records[(id - 1) % TRACE_RECORDS];
}

uint64_t serve_trace_read(serve_trace *t, const tc_request *req, uint64_t deadline_ms)
{
    if (t == NULL)
        return 0;
    uint64_t id = ++t->next;
    trace_record *r = record_at(t, id);
    uint64_t idle = uv_metrics_idle_time(t->loop) - t->idle_at_poll;
    uint64_t poll_returned = t->prepare_ns + idle;
    *r = (trace_record){0};
    r->ready_ns = tc_request_ready_ns(req);
    r->io_lag_ns = r->ready_ns > poll_returned ? r->ready_ns - poll_returned : 0;
    r->timers_ns = t->timers_ns;
    r->due_ns = deadline_ms * 1000000u;
    return id;
}

void serve_trace_done(serve_trace *t, uint64_t id)
{
    trace_record *r = record_at(t, id);
    if (r != NULL) {
        r->done_ns = uv_hrtime();
        r->turn_ns = t->turn_start_ns;
        r->turn_answer = ++t->answers_in_turn;
    }
}

void serve_trace_written(serve_trace *t, uint64_t id, int status)
{
    trace_record *r = record_at(t, id);
    if (r != NULL) {
        r->written_ns = uv_hrtime();
        r->status = (uint32_t)status;
    }
}

void serve_trace_stop(serve_trace *t)
{
    if (t == NULL || t->stopped)
        return;
    t->stopped = 1;
    uv_close((uv_handle_t *)&t->prepare, NULL);
    uv_close((uv_handle_t *)&t->check, NULL);
}

/* Writes the records (one line each, nanoseconds) and frees the trace; after its handles
 * have closed. */
void serve_trace_close(serve_trace *t)
{
    if (t == NULL)
        return;
    FILE *f = fopen(t->path, "w");
    if (f != NULL) {
        uint64_t first = t->next > TRACE_RECORDS ? t->next - TRACE_RECORDS + 1 : 1;
        (void)fprintf(f, "ready_ns io_lag_ns timers_ns due_ns done_ns turn_ns written_ns "
                         "turn_answer status\n");
        for (uint64_t id = first; id <= t->next; id++) {
            const trace_record *r = record_at(t, id);
            (void)fprintf(f, "%llu %llu %llu %llu %llu %llu %llu %u %u\n",
                          (unsigned long long)r->ready_ns, (unsigned long long)r->io_lag_ns,
                          (unsigned long long)r->timers_ns, (unsigned long long)r->due_ns,
                          (unsigned long long)r->done_ns, (unsigned long long)r->turn_ns,
                          (unsigned long long)r->written_ns, r->turn_answer, r->status);
        }
        (void)fclose(f);
    }
    free(t->records);
    free(t->path);
    free(t);
}
