/*
 * The failing-allocation harness (nghttp2's failmalloc idea): each scenario runs once with no
 * failure to record its outcome, then again for every N = 1, 2, ... with the Nth allocation of
 * the library failing (src/base/alloc.h), until a run no longer reaches an Nth allocation. Every
 * run must end, with the loop closed cleanly (uv_loop_close() == 0), and its outcome may differ
 * from the clean run's only by TC_ENOMEM: a call that returns TC_ENOMEM, or a future that
 * rejects with it. Leaks are LSan's to find (the sanitizer tree of `make test`).
 *
 * Scenarios: futures and every combinator; jansson parsing and writing a text; the batcher with
 * a dispatcher that settles keys; two requests and two streams (a response read as it arrives, a
 * request body written as it goes) on the client's native engine, and the same on its
 * libcurl engine (libcurl allocates through the hook too, so N walks libcurl's allocations; see
 * test_client_curl for a libcurl bug and how the walk survives it); a hedge (two attempts); the
 * replica set (add, choose, report, remove, snapshot); a hedge across two replicas and one call
 * through a set (every choice reported, whatever failed); the
 * server answering two connections in turn, where a failure must be answered 503 "overloaded" (or,
 * when not even that can be built, the connection closed at once), never crash, leak or hang,
 * and never keep the next connection from being served; the same with a streamed request (a
 * chunked body with 100-continue, read in pieces) answered by a streamed chunked response, where
 * a failure may also cut the response short (it must never look complete); the simulator
 * (tailcut upstream) doing the same in a stall of its pause profile, where the first request is
 * parked until it ends.
 *
 * The countdown is per thread, so the loopback server that the client and hedge scenarios talk
 * to runs on a thread of its own and never fails.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <uv.h>

#include "base/alloc.h"
#include "tailcut/batch.h"
#include "tailcut/client.h"
#include "tailcut/future.h"
#include "tailcut/hedge.h"
#include "tailcut/json.h"
#include "tailcut/replica.h"
#include "tailcut/server.h"
#include "tailcut/upstream.h"

/* More allocations than any scenario makes: a run that still fails at this N is a runaway. */
#define MAX_N 2000
/* A run that takes longer than this has hung: some callback never fired. */
#define RUN_WATCHDOG_MS 10000

/* What one run ended with: a code per numbered step (0, a TC_E* code, or an outcome the
 * scenario names); steps a run did not reach (an earlier one failed) are not set. */
#define MAX_STEPS 32
typedef struct outcome {
    int set[MAX_STEPS];
    int code[MAX_STEPS];
} outcome;

static void record(outcome *o, int step, int code)
{
    assert_true(step >= 0 && step < MAX_STEPS);
    o->set[step] = 1;
    o->code[step] = code;
}

typedef void (*scenario_fn)(outcome *o);

static int code_in(int code, const int *codes)
{
    for (; codes != NULL && *codes != 0; codes++)
        if (*codes == code)
            return 1;
    return 0;
}

static void on_watchdog(uv_timer_t *t)
{
    fail_msg("a run hung (a callback never fired)");
}

static void watchdog_start(uv_loop_t *loop, uv_timer_t *t)
{
    assert_int_equal(uv_timer_init(loop, t), 0);
    assert_int_equal(uv_timer_start(t, on_watchdog, RUN_WATCHDOG_MS, 0), 0);
    uv_unref((uv_handle_t *)t);
}

static void close_all(uv_loop_t *loop, uv_timer_t *watchdog)
{
    uv_close((uv_handle_t *)watchdog, NULL);
    assert_int_equal(uv_run(loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(loop), 0);
}

/* Runs s clean, then with the Nth allocation failing for every N on its path. A step may differ
 * from the clean run only by TC_ENOMEM, or by one of the codes in `also` (0-terminated, may be
 * NULL): the codes a library under test reports for want of memory in its own words. */
/* Where a walk starts, and where it reports its progress (see test_client_curl). */
static unsigned long walk_from = 1;
static int walk_progress_fd = -1;
typedef struct walk_progress {
    unsigned long n; /* the N being run */
    int enomem_seen; /* some earlier N gave TC_ENOMEM */
} walk_progress;

static void run_failing_also(const char *name, scenario_fn s, const int *also)
{
    outcome clean = {0};
    tc__alloc_fail_nth(0);
    s(&clean);
    unsigned long n;
    int enomem_seen = 0;
    for (n = walk_from; n < MAX_N; n++) {
        if (walk_progress_fd >= 0) {
            walk_progress p = {n, enomem_seen};
            assert_int_equal(pwrite(walk_progress_fd, &p, sizeof(p), 0), sizeof(p));
        }
        outcome o = {0};
        tc__alloc_fail_nth(n);
        s(&o);
        int hit = tc__alloc_failed();
        tc__alloc_fail_nth(0);
        if (!hit)
            break; /* the path has fewer than n allocations: done */
        for (int i = 0; i < MAX_STEPS; i++) {
            if (!o.set[i])
                continue;
            if (!clean.set[i])
                fail_msg("%s, allocation %lu failing: step %d ran, not in the clean run", name, n,
                         i);
            if (o.code[i] == clean.code[i])
                continue;
            if (o.code[i] == TC_ENOMEM) {
                enomem_seen = 1;
                continue;
            }
            if (code_in(o.code[i], also))
                continue;
            fail_msg("%s, allocation %lu failing: step %d gave %d (%s), clean run %d", name, n, i,
                     o.code[i], tc_strerror(o.code[i]), clean.code[i]);
        }
    }
    assert_true(n > walk_from && n < MAX_N); /* the path allocates, and the walk ended */
    if (walk_progress_fd >= 0) {
        walk_progress p = {n, enomem_seen};
        assert_int_equal(pwrite(walk_progress_fd, &p, sizeof(p), 0), sizeof(p));
    } else
        assert_true(enomem_seen);
    print_message("%s: %lu allocations on the path, each failed once\n", name, n - 1);
}

static void run_failing(const char *name, scenario_fn s)
{
    run_failing_also(name, s, NULL);
}

/* The code a finished future stands for: 0 fulfilled, its error otherwise. */
static int future_code(tc_future *f)
{
    switch (tc_future_state_of(f)) {
    case TC_FUTURE_FULFILLED:
        return 0;
    case TC_FUTURE_REJECTED:
        return tc_future_error(f);
    case TC_FUTURE_CANCELLED:
        return TC_ECANCELED;
    default:
        fail_msg("a future is still pending after its loop ran out");
    }
    return 0;
}

/* A call's return code, recorded as step `step`; returned for chaining. */
static int step_rc(outcome *o, int step, int rc)
{
    record(o, step, rc);
    return rc;
}

/* Runs loop until f is done; a loop with nothing left to do while f is pending is a hang. */
static void run_until_done(uv_loop_t *loop, tc_future *f)
{
    while (!tc_future_done(f))
        if (uv_run(loop, UV_RUN_ONCE) == 0 && !tc_future_done(f))
            fail_msg("a future is pending on a loop with nothing left to do");
}

/* ---- futures and combinators ---------------------------------------------------------------- */

static void on_done_count(tc_future *f, void *data)
{
    ++*(int *)data;
}

static int later_start(void *data, tc_future **inner)
{
    return tc_sleep(inner, data, 1);
}

static void as_completed_cb(tc_future *f, size_t index, int timed_out, void *data) {}

static void scenario_future(outcome *o)
{
    uv_loop_t loop;
    uv_timer_t watchdog;
    assert_int_equal(uv_loop_init(&loop), 0);
    watchdog_start(&loop, &watchdog);

    enum { NIN = 3, NOUT = 7 };
    tc_future *in[NIN] = {NULL}, *out[NOUT] = {NULL};
    int calls = 0;
    for (int i = 0; i < NIN; i++)
        if (step_rc(o, i, tc_future_new(&in[i])) != 0)
            goto done;
    /* a third callback needs the heap array */
    for (int i = 0; i < 3; i++)
        if (step_rc(o, 3 + i, tc_future_on_done(in[0], on_done_count, &calls)) != 0)
            goto done;
    if (step_rc(o, 6, tc_gather(&out[0], in, NIN, 0)) == 0 &&
        step_rc(o, 7, tc_gather(&out[1], in, NIN, TC_GATHER_RETURN_EXCEPTIONS)) == 0 &&
        step_rc(o, 8, tc_wait(&out[2], &loop, in, NIN, TC_ALL_COMPLETED, 5000)) == 0 &&
        step_rc(o, 9, tc_first_success(&out[3], in, NIN)) == 0 &&
        step_rc(o, 10, tc_with_timeout(&out[4], &loop, in[2], 5000)) == 0 &&
        step_rc(o, 11, tc_as_completed(&out[5], &loop, in, NIN, 5000, as_completed_cb, NULL)) == 0)
        (void)step_rc(o, 12, tc_call_later(&out[6], &loop, 1, later_start, &loop));
    record(o, 13, tc_future_reject(in[1], TC_EIO, "a message that is copied"));
    record(o, 14, tc_future_fulfill(in[2], NULL, NULL));
    /* not recorded: in[0] is cancelled by tc_first_success when that exists, fulfilled if not */
    (void)tc_future_fulfill(in[0], NULL, NULL);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    for (int i = 0; i < NOUT; i++)
        if (out[i] != NULL)
            record(o, 16 + i, future_code(out[i]));
    record(o, 16 + NOUT, tc_future_error(in[1]));
    record(o, 17 + NOUT, calls);
done:
    for (int i = 0; i < NOUT; i++)
        if (out[i] != NULL)
            tc_future_unref(out[i]);
    for (int i = 0; i < NIN; i++)
        if (in[i] != NULL) {
            (void)tc_future_cancel(in[i]);
            tc_future_unref(in[i]);
        }
    close_all(&loop, &watchdog);
}

static void test_future(void **state)
{
    run_failing("future", scenario_future);
}

/* ---- jansson (through the library's hook since load: src/base/alloc.c) --------------------- */

/* jansson 2.14 has a defect here: when an allocation fails while json_dumps() writes an object's
 * key, it can return a text with part of that key missing instead of NULL. Such a text is not
 * JSON, so whoever checks what it sends (tc_json_valid) can tell; the walk counts these and
 * prints the count. Any other difference fails. */
static unsigned long jansson_corrupt;

#define JANSSON_TEXT "{\"steps\":[{\"status\":503,\"delay_ms\":10},\"x\"]}"

static void scenario_jansson(outcome *o)
{
    json_error_t e;
    json_t *v = json_loads(JANSSON_TEXT, 0, &e);
    /* the text is valid (the clean run parses it): jansson fails only for want of memory, though
     * its error code does not always say so */
    record(o, 0, v != NULL ? 0 : TC_ENOMEM);
    if (v == NULL)
        return;
    char *text = json_dumps(v, JSON_COMPACT);
    int code = text == NULL ? TC_ENOMEM : 0;
    if (text != NULL && strcmp(text, JANSSON_TEXT) != 0) {
        if (tc_json_valid(text, strlen(text)))
            fail_msg("json_dumps wrote other JSON: %s", text);
        jansson_corrupt++;
        code = TC_ENOMEM;
    }
    record(o, 1, code);
    free(text);
    json_decref(v);
}

static void test_jansson(void **state)
{
    run_failing("jansson", scenario_jansson);
    if (jansson_corrupt > 0)
        print_message("jansson: json_dumps returned a cut text, not NULL, %lu times (its defect)\n",
                      jansson_corrupt);
}

/* ---- batcher -------------------------------------------------------------------------------- */

static void dispatch(tc_batch *batch, void *data)
{
    for (size_t i = 0; i < tc_batch_size(batch); i++) {
        size_t len;
        const char *key = tc_batch_key(batch, i, &len);
        if (key[0] == 'm')
            continue; /* left unsettled: TC_EMISSING */
        int rc = tc_batch_resolve_bytes(batch, i, key, len);
        if (rc != 0)
            assert_int_equal(tc_batch_reject_key(batch, i, rc, NULL), 0);
    }
    tc_batch_done(batch);
}

static void scenario_batch(outcome *o)
{
    uv_loop_t loop;
    uv_timer_t watchdog;
    assert_int_equal(uv_loop_init(&loop), 0);
    watchdog_start(&loop, &watchdog);
    tc_batcher_config cfg;
    tc_batcher_config_init(&cfg);
    cfg.dispatch = dispatch;
    cfg.max_batch = 3;
    tc_batcher *b = NULL;
    static const char *const keys[] = {"a", "bb", "a", "missing", "c", "dd"};
    enum { NKEYS = sizeof(keys) / sizeof(keys[0]) };
    tc_future *f[NKEYS] = {NULL};
    if (step_rc(o, 0, tc_batcher_new(&b, &loop, &cfg)) == 0) {
        for (size_t i = 0; i < NKEYS; i++)
            (void)step_rc(o, 1 + (int)i, tc_batcher_submit(&f[i], b, keys[i], strlen(keys[i])));
        assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
        for (size_t i = 0; i < NKEYS; i++)
            if (f[i] != NULL) {
                record(o, 1 + NKEYS + (int)i, future_code(f[i]));
                tc_future_unref(f[i]);
            }
        tc_batcher_close(b, NULL, NULL);
    }
    close_all(&loop, &watchdog);
}

static void test_batch(void **state)
{
    run_failing("batch", scenario_batch);
}

/* ---- replica set ---------------------------------------------------------------------------- */

static void scenario_replica(outcome *o)
{
    tc_replica_set *set = NULL;
    if (step_rc(o, 0, tc_replica_set_new(&set, NULL)) != 0)
        return;
    static const char *const labels[] = {"http://10.0.0.1:80", "http://10.0.0.2:80",
                                         "http://[::1]:8000", "http://10.0.0.9:80"};
    unsigned ids[4];
    int added = 0;
    for (int i = 0; i < 3; i++)
        added += step_rc(o, 1 + i, tc_replica_add(set, labels[i], NULL, &ids[i])) == 0;
    if (added == 3) { /* the choices depend on who is in: only a full set is compared */
        tc_replica_choice first, extra;
        (void)step_rc(o, 4, tc_replica_choose_first(set, 1, &first));
        (void)step_rc(o, 5, tc_replica_choose_extra(set, 1, &first.id, 1, &extra));
        record(o, 6, (int)extra.id);
        (void)step_rc(o, 7, tc_replica_done(set, first.id, TC_REPLICA_SUCCESS, 1000, 2));
        (void)step_rc(o, 8, tc_replica_remove(set, extra.id));
        (void)step_rc(o, 9, tc_replica_done(set, extra.id, TC_REPLICA_CANCELLED, 1000, 2));
        tc_replica_totals tot;
        size_t n = tc_replica_snapshot(set, 3, NULL, 0, &tot);
        if (step_rc(o, 10, tc_replica_add(set, labels[3], NULL, &ids[3])) == 0)
            record(o, 11, (int)tc_replica_snapshot(set, 3, NULL, 0, &tot));
        else
            assert_int_equal(tc_replica_snapshot(set, 3, NULL, 0, &tot), n); /* unchanged */
        assert_int_equal(tot.in_flight, 0);
    }
    tc_replica_set_free(set);
}

static void test_replica(void **state)
{
    run_failing("replica set", scenario_replica);
}

/* ---- the loopback upstream (a thread of its own, never failing) ----------------------------- */

typedef struct upstream {
    pthread_t thread;
    uv_loop_t loop;
    uv_async_t stop;
    tc_server *srv;
    uv_sem_t ready;
    int port;
} upstream;

static void upstream_handler(tc_request *req, void *data)
{
    tc_str body = tc_request_body(req);
    char json[64];
    if (body.len > 0) /* a request body (the client's streamed one): how much came */
        (void)snprintf(json, sizeof(json), "{\"n\":%zu}", body.len);
    (void)tc_request_respond_json(req, 200, body.len > 0 ? json : "{\"ok\":true}");
}

static void upstream_on_stop(uv_async_t *a)
{
    upstream *u = a->data;
    tc_server_close(u->srv, NULL, NULL);
    uv_close((uv_handle_t *)a, NULL);
}

static void *upstream_main(void *arg)
{
    upstream *u = arg;
    tc_server_config cfg;
    tc_server_config_init(&cfg);
    cfg.handler = upstream_handler;
    if (uv_loop_init(&u->loop) != 0 || tc_server_new(&u->srv, &u->loop, &cfg) != 0)
        abort();
    u->port = tc_server_port(u->srv);
    u->stop.data = u;
    if (uv_async_init(&u->loop, &u->stop, upstream_on_stop) != 0)
        abort();
    uv_sem_post(&u->ready);
    (void)uv_run(&u->loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&u->loop) != 0)
        abort();
    return NULL;
}

static upstream the_upstream;

static int upstream_start(void **state)
{
    assert_int_equal(uv_sem_init(&the_upstream.ready, 0), 0);
    assert_int_equal(pthread_create(&the_upstream.thread, NULL, upstream_main, &the_upstream), 0);
    uv_sem_wait(&the_upstream.ready);
    uv_sem_destroy(&the_upstream.ready);
    return 0;
}

static int upstream_stop(void **state)
{
    assert_int_equal(uv_async_send(&the_upstream.stop), 0);
    assert_int_equal(pthread_join(the_upstream.thread, NULL), 0);
    return 0;
}

/* ---- client (native engine) ----------------------------------------------------------------- */

/* A streamed response's reader: the bytes and the end it was told. */
typedef struct stream_reader {
    char text[64];
    size_t len;
    int ends, status;
} stream_reader;

static void on_stream_body(tc_response *resp, int status, const char *data, size_t len, void *arg)
{
    stream_reader *sr = arg;
    (void)resp;
    if (len == 0) {
        sr->ends++;
        sr->status = status;
    } else if (sr->len + len < sizeof(sr->text)) {
        memcpy(sr->text + sr->len, data, len);
        sr->len += len;
    }
}

/* Waits for the streamed response of f and reads its body; records the future as step, the read
 * as step + 1 and the body's end as step + 2; the body when it ends well must be want. */
static void stream_read(outcome *o, int step, uv_loop_t *loop, tc_future *f, const char *want)
{
    run_until_done(loop, f);
    int code = future_code(f);
    record(o, step, code);
    if (code != 0)
        return;
    tc_response *r = tc_future_value(f);
    assert_int_equal(r->status, 200);
    stream_reader sr = {.status = 1};
    if (step_rc(o, step + 1, tc_response_read_body(r, on_stream_body, &sr)) != 0)
        return;
    while (sr.ends == 0)
        if (uv_run(loop, UV_RUN_ONCE) == 0 && sr.ends == 0)
            fail_msg("a streamed body never ended");
    assert_int_equal(sr.ends, 1);
    record(o, step + 2, sr.status);
    if (sr.status == 0)
        assert_true(sr.len == strlen(want) && memcmp(sr.text, want, sr.len) == 0);
}

/* Two streams: a GET whose response is read as it arrives (into a hold first: nobody reads it
 * until the head is in), and a POST whose body is written before and after it starts, chunked,
 * and whose response streams too. */
static void client_streams(outcome *o, uv_loop_t *loop, tc_client *c, const char *url)
{
    tc_client_request get = {.url = url, .stream_response = 1};
    tc_future *f = NULL;
    if (step_rc(o, 5, tc_client_request_start(&f, c, &get)) == 0) {
        stream_read(o, 6, loop, f, "{\"ok\":true}");
        tc_future_unref(f);
    }
    tc_client_body *b = NULL;
    if (step_rc(o, 9, tc_client_body_new(&b, c, TC_CLIENT_LENGTH_UNKNOWN)) != 0)
        return;
    (void)step_rc(o, 10, tc_client_body_write(b, "12345", 5));
    tc_client_request post = {.url = url, .method = "POST", .body_source = b, .stream_response = 1};
    if (step_rc(o, 11, tc_client_request_start(&f, c, &post)) == 0) {
        /* A request that failed at once (for want of memory) refuses its body: TC_ECLOSED, for
         * the reason its future gives. */
        int rc = tc_client_body_write(b, "67890", 5);
        record(o, 12, rc == TC_ECLOSED && tc_future_done(f) ? future_code(f) : rc);
        rc = tc_client_body_end(b);
        record(o, 13, rc == TC_ECLOSED && tc_future_done(f) ? future_code(f) : rc);
        /* A failed write leaves fewer bytes: the answer says how many came. */
        char want[32];
        (void)snprintf(want, sizeof(want), "{\"n\":%d}",
                       (o->code[10] == 0 ? 5 : 0) + (o->code[12] == 0 ? 5 : 0));
        stream_read(o, 14, loop, f, want);
        tc_future_unref(f);
    }
    tc_client_body_free(b);
}

static void scenario_client_on(outcome *o, tc_client_engine engine)
{
    uv_loop_t loop;
    uv_timer_t watchdog;
    assert_int_equal(uv_loop_init(&loop), 0);
    watchdog_start(&loop, &watchdog);
    char url[64];
    (void)snprintf(url, sizeof(url), "http://127.0.0.1:%d/x?y=1", the_upstream.port);
    tc_client_config cfg;
    tc_client_config_init(&cfg);
    cfg.engine = engine;
    tc_client *c = NULL;
    if (step_rc(o, 0, tc_client_new(&c, &loop, &cfg)) == 0) {
        static const tc_header h[] = {{"X-One", "1"}};
        tc_client_request req = {.url = url, .headers = h, .nheaders = 1};
        tc_future *f[2] = {NULL, NULL};
        for (int i = 0; i < 2; i++) /* the second one reuses the pooled connection */
            if (step_rc(o, 1 + 2 * i, tc_client_request_start(&f[i], c, &req)) == 0) {
                run_until_done(&loop, f[i]);
                int code = future_code(f[i]);
                if (code == 0) {
                    const tc_response *r = tc_future_value(f[i]);
                    assert_int_equal(r->status, 200);
                    assert_string_equal(r->body, "{\"ok\":true}");
                }
                record(o, 2 + 2 * i, code);
                tc_future_unref(f[i]);
            }
        client_streams(o, &loop, c, url);
        tc_client_close(c, NULL, NULL);
    }
    close_all(&loop, &watchdog);
}

static void scenario_client(outcome *o)
{
    scenario_client_on(o, TC_CLIENT_ENGINE_NATIVE);
}

static void test_client(void **state)
{
    run_failing("client", scenario_client);
}

/* libcurl allocates through the same hook (curl_global_init_mem), so here N walks libcurl's
 * allocations too: setting libcurl up, the easy handle, the URL, the connection and its cache. */
static void scenario_client_curl(outcome *o)
{
    scenario_client_on(o, TC_CLIENT_ENGINE_CURL);
}

/* libcurl (7.88) says "could not resolve host" (TC_EDNS) when an allocation fails while it
 * resolves the host, a numeric address included, and "could not connect" (TC_ECONNREFUSED) when
 * one fails while it connects. The request still ends cleanly, and these are its errors. */
static const int curl_also[] = {TC_EDNS, TC_ECONNREFUSED, 0};

/* The walk itself, in a process of its own (see test_client_curl). */
static void test_client_curl_walk(void **state)
{
    (void)signal(SIGFPE, SIG_DFL); /* a crash must end this process, not be caught by cmocka */
    run_failing_also("client (libcurl)", scenario_client_curl, curl_also);
}

/* libcurl 7.88 has a bug on this path: when the allocation that adds a transfer to a socket's
 * transfer hash fails inside curl_multi_socket_action, libcurl answers CURLM_OUT_OF_MEMORY (the
 * request fails cleanly with TC_ENOMEM) but leaves that socket's hash destroyed with zero slots,
 * and its next call divides by the slot count: SIGFPE inside libcurl. tailcut cannot avoid it
 * (the allocator is the only thing it gives libcurl), so the walk runs in a child process that
 * this test restarts after such a crash, from the next N. A crash other than SIGFPE, a child
 * that fails, or more crashes than MAX_CURL_CRASHES fail the test, and the Ns that crashed are
 * printed. */
#define MAX_CURL_CRASHES 16

extern char **environ;

static pid_t spawn_walk(unsigned long from, int progress_fd)
{
    char from_var[64], fd_var[64], asan_var[512];
    (void)snprintf(from_var, sizeof(from_var), "TC_FAILMALLOC_CURL_FROM=%lu", from);
    (void)snprintf(fd_var, sizeof(fd_var), "TC_FAILMALLOC_PROGRESS_FD=%d", progress_fd);
    const char *asan = getenv("ASAN_OPTIONS");
    (void)snprintf(asan_var, sizeof(asan_var), "ASAN_OPTIONS=%s%shandle_sigfpe=0", asan ? asan : "",
                   asan && asan[0] ? ":" : "");
    size_t n = 0;
    while (environ[n] != NULL)
        n++;
    char **env = calloc(n + 4, sizeof(*env));
    assert_non_null(env);
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], "ASAN_OPTIONS=", 13) != 0)
            env[k++] = environ[i];
    env[k++] = from_var;
    env[k++] = fd_var;
    env[k++] = asan_var;
    char *argv[] = {"test_failmalloc", NULL};
    pid_t pid;
    assert_int_equal(posix_spawn(&pid, "/proc/self/exe", NULL, NULL, argv, env), 0);
    free(env);
    return pid;
}

static void test_client_curl(void **state)
{
    FILE *tmp = tmpfile();
    assert_non_null(tmp);
    int fd = fileno(tmp);
    unsigned long from = 1;
    int crashes = 0, enomem_seen = 0;
    char crashed[256] = "";
    for (;;) {
        pid_t pid = spawn_walk(from, fd);
        int st;
        assert_int_equal(waitpid(pid, &st, 0), pid);
        walk_progress p = {0, 0};
        assert_int_equal(pread(fd, &p, sizeof(p), 0), sizeof(p));
        enomem_seen |= p.enomem_seen;
        if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
            break;
        if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGFPE)
            fail_msg("the libcurl walk from allocation %lu failed (status 0x%x)", from, st);
        if (++crashes > MAX_CURL_CRASHES)
            fail_msg("libcurl crashed more than %d times", MAX_CURL_CRASHES);
        assert_true(p.n >= from);
        size_t len = strlen(crashed);
        (void)snprintf(crashed + len, sizeof(crashed) - len, "%s%lu", len ? ", " : "", p.n);
        from = p.n + 1;
    }
    (void)fclose(tmp);
    assert_true(enomem_seen);
    if (crashes > 0)
        print_message("client (libcurl): libcurl's SIGFPE (its bug, see the test) with allocation "
                      "%s failing\n",
                      crashed);
}

/* ---- hedge ---------------------------------------------------------------------------------- */

static void scenario_hedge(outcome *o)
{
    uv_loop_t loop;
    uv_timer_t watchdog;
    assert_int_equal(uv_loop_init(&loop), 0);
    watchdog_start(&loop, &watchdog);
    char url[64];
    (void)snprintf(url, sizeof(url), "http://127.0.0.1:%d/api/work", the_upstream.port);
    tc_client_config cfg;
    tc_client_config_init(&cfg);
    cfg.engine = TC_CLIENT_ENGINE_NATIVE;
    tc_client *c = NULL;
    if (step_rc(o, 0, tc_client_new(&c, &loop, &cfg)) == 0) {
        tc_client_request req = {.url = url};
        tc_hedge_policy p;
        tc_hedge_policy_init(&p);
        p.mode = TC_HEDGE_ALL; /* both attempts run to the end: the same path every time */
        p.initial = 2;
        p.extra = 0;
        tc_future *f = NULL;
        if (step_rc(o, 1, tc_hedge_start(&f, c, &req, &p)) == 0) {
            run_until_done(&loop, f);
            int code = future_code(f);
            record(o, 2, code);
            if (code == 0) {
                const tc_hedge_result *r = tc_future_value(f);
                /* an attempt that failed for want of memory shows as TC_ENOMEM, nothing else */
                record(o, 3, (int)r->nattempts);
                for (unsigned i = 0; i < r->nattempts; i++)
                    record(o, 4 + (int)i,
                           r->attempts[i].response ? future_code(r->attempts[i].response)
                                                   : TC_ENOMEM);
            }
            tc_future_unref(f);
        }
        tc_client_close(c, NULL, NULL);
    }
    close_all(&loop, &watchdog);
}

static void test_hedge(void **state)
{
    run_failing("hedge", scenario_hedge);
}

/* ---- hedge across replicas, and one call through a set -------------------------------------- */

/* The replicas' data is the URL each attempt goes to (the same upstream, by two names). */
static int prepare_url(void *data, unsigned replica_id, void *replica_data, tc_client_request *req)
{
    (void)data;
    (void)replica_id;
    req->url = replica_data;
    req->connect_to = "127.0.0.1";
    return 0;
}

static void scenario_replicas_on(outcome *o, int call)
{
    uv_loop_t loop;
    uv_timer_t watchdog;
    assert_int_equal(uv_loop_init(&loop), 0);
    watchdog_start(&loop, &watchdog);
    char url[2][64];
    (void)snprintf(url[0], sizeof(url[0]), "http://one.test:%d/api/work", the_upstream.port);
    (void)snprintf(url[1], sizeof(url[1]), "http://two.test:%d/api/work", the_upstream.port);
    tc_client_config cfg;
    tc_client_config_init(&cfg);
    cfg.engine = TC_CLIENT_ENGINE_NATIVE;
    tc_client *c = NULL;
    tc_replica_set *set = NULL;
    unsigned ids[2];
    if (step_rc(o, 0, tc_client_new(&c, &loop, &cfg)) == 0 &&
        step_rc(o, 1, tc_replica_set_new(&set, NULL)) == 0 &&
        step_rc(o, 2, tc_replica_add(set, "one", url[0], &ids[0])) == 0 &&
        step_rc(o, 3, tc_replica_add(set, "two", url[1], &ids[1])) == 0) {
        tc_client_request req = {.url = "http://unused.test/"};
        tc_future *f = NULL;
        if (call) {
            tc_replica_call how = {.set = set, .prepare = prepare_url};
            if (step_rc(o, 4, tc_replica_request_start(&f, c, &req, &how)) == 0) {
                run_until_done(&loop, f);
                record(o, 5, future_code(f));
                tc_future_unref(f);
            }
        } else {
            tc_hedge_policy p;
            tc_hedge_policy_init(&p);
            p.mode = TC_HEDGE_ALL;
            p.initial = 2;
            p.extra = 0;
            p.replicas = set;
            p.prepare = prepare_url;
            if (step_rc(o, 4, tc_hedge_start(&f, c, &req, &p)) == 0) {
                run_until_done(&loop, f);
                int code = future_code(f);
                record(o, 5, code);
                if (code == 0) {
                    const tc_hedge_result *r = tc_future_value(f);
                    record(o, 6, (int)r->nattempts);
                    for (unsigned i = 0; i < r->nattempts; i++) {
                        record(o, 7 + 2 * (int)i,
                               r->attempts[i].response ? future_code(r->attempts[i].response)
                                                       : TC_ENOMEM);
                        record(o, 8 + 2 * (int)i, r->attempts[i].replica);
                    }
                }
                tc_future_unref(f);
            }
        }
        tc_replica_totals tot;
        (void)tc_replica_snapshot(set, 0, NULL, 0, &tot);
        assert_int_equal(tot.in_flight, 0); /* every choice reported, whatever failed */
    }
    if (c != NULL)
        tc_client_close(c, NULL, NULL);
    close_all(&loop, &watchdog);
    tc_replica_set_free(set);
}

static void scenario_hedge_replicas(outcome *o)
{
    scenario_replicas_on(o, 0);
}

static void scenario_replica_call(outcome *o)
{
    scenario_replicas_on(o, 1);
}

static void test_hedge_replicas(void **state)
{
    run_failing("hedge across replicas", scenario_hedge_replicas);
    run_failing("a call through a replica set", scenario_replica_call);
}

/* ---- server --------------------------------------------------------------------------------- */

/* A blocking HTTP client on a thread of its own (its allocations are not the server's). */
/* The probe: two connections one after the other, each sending one request and reading to the
 * end. A connection the server cannot serve must be answered 503 or closed (FIN or RST) at
 * once: one left hanging until the probe's receive timeout is a failure, and so is a second
 * connection that is not served normally after it (the listener must go on accepting). */
#define PROBE_CONNECTIONS 2
/* How long a probe waits for an answer or a close: both connections' waits fit within the
 * run's watchdog, so a hanging connection is named as such. */
#define PROBE_WAIT_S 4

typedef struct probe_conn {
    char resp[4096];
    size_t len;
    int err; /* errno of the read that ended it: 0 at EOF, ECONNRESET, EAGAIN when it timed out */
} probe_conn;

typedef struct probe {
    pthread_t thread;
    int port;
    const char *request; /* NULL: a GET with a header longer than a request's inline storage */
    probe_conn conn[PROBE_CONNECTIONS];
} probe;

static void probe_one(int port, const char *request, probe_conn *pc)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {.tv_sec = PROBE_WAIT_S};
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    pc->err = -1;
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
        /* a header longer than the request's inline storage: the storage grows */
        char rq[4096];
        int len = request != NULL
                      ? snprintf(rq, sizeof(rq), "%s", request)
                      : snprintf(rq, sizeof(rq),
                                 "GET /a/b?c=d HTTP/1.1\r\nHost: x\r\nX-Long: %01500d\r\n"
                                 "Connection: close\r\n\r\n",
                                 7);
        /* a write refused because the server has closed already is a close too */
        if (write(fd, rq, (size_t)len) != (ssize_t)len) {
            pc->err = errno;
        } else {
            ssize_t n = 0;
            while (pc->len < sizeof(pc->resp) - 1 &&
                   (n = read(fd, pc->resp + pc->len, sizeof(pc->resp) - 1 - pc->len)) > 0)
                pc->len += (size_t)n;
            pc->err = n < 0 ? errno : 0; /* n > 0: the buffer is full, an answer is there */
        }
    }
    if (fd >= 0)
        close(fd);
    pc->resp[pc->len] = '\0';
}

static void *probe_main(void *arg)
{
    probe *p = arg;
    for (int i = 0; i < PROBE_CONNECTIONS; i++)
        probe_one(p->port, p->request, &p->conn[i]);
    return NULL;
}

static void server_handler(tc_request *req, void *data)
{
    tc_server_header h = {"X-Handled", "yes"};
    (void)tc_request_respond(req, 200, "text/plain", &h, 1, "hello", 5);
}

static tc_server_stats probe_stats; /* the server's, when the probe was done */
static int refused_runs;            /* runs in which a connection was refused for want of memory */

static void on_probe_done(uv_async_t *a)
{
    uv_close((uv_handle_t *)a, NULL);
    tc_server_get_stats(a->data, &probe_stats);
    tc_server_close(a->data, NULL, NULL);
}

static uv_async_t *probe_async;

static void *probe_and_signal(void *arg)
{
    probe_main(arg);
    uv_async_send(probe_async);
    return NULL;
}

/* What connection i of the probe got: ok_status (its head "HTTP/1.1 <ok_status> ", its answer
 * holding ok_text), returned as such; TC_ENOMEM for 503 overloaded, or for a connection closed
 * with no answer (not even a 503 could be built). */
static int probe_outcome(const probe_conn *pc, int i, int ok_status, const char *ok_text)
{
    char head[16];
    (void)snprintf(head, sizeof(head), "HTTP/1.1 %d ", ok_status);
    if (strncmp(pc->resp, head, strlen(head)) == 0) {
        assert_non_null(strstr(pc->resp, ok_text));
        return ok_status;
    }
    if (strncmp(pc->resp, "HTTP/1.1 503 ", 13) == 0) {
        assert_non_null(strstr(pc->resp, "\"error\":\"overloaded\""));
        return TC_ENOMEM; /* the server's way of saying it */
    }
    if (pc->len != 0)
        fail_msg("connection %d: unexpected answer: %s", i + 1, pc->resp);
    if (pc->err == EAGAIN || pc->err == EWOULDBLOCK)
        fail_msg("connection %d: neither answered nor closed within %d s", i + 1, PROBE_WAIT_S);
    if (pc->err != 0 && pc->err != ECONNRESET && pc->err != EPIPE)
        fail_msg("connection %d: %s", i + 1, strerror(pc->err));
    return TC_ENOMEM;
}

/* Runs the probe on a thread against p->port while loop runs; on_done runs on the loop (with
 * done->data = data) once the probe is over, and must leave the loop with nothing to do. */
static void probe_run(probe *p, uv_loop_t *loop, uv_async_t *done, uv_async_cb on_done, void *data)
{
    assert_int_equal(uv_async_init(loop, done, on_done), 0);
    done->data = data;
    probe_async = done;
    assert_int_equal(pthread_create(&p->thread, NULL, probe_and_signal, p), 0);
    assert_int_equal(uv_run(loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(pthread_join(p->thread, NULL), 0);
}

/* Records what each connection got as steps 1, 2, ... (see probe_outcome()); a connection that
 * failed must not keep the next one from being served. */
static void probe_record(outcome *o, const probe *p, int ok_status, const char *ok_text)
{
    int prev = ok_status;
    for (int i = 0; i < PROBE_CONNECTIONS; i++) {
        int got = probe_outcome(&p->conn[i], i, ok_status, ok_text);
        if (prev != ok_status && got != ok_status)
            fail_msg("connection %d was not served after connection %d failed", i + 1, i);
        record(o, 1 + i, got);
        prev = got;
    }
}

/* The server scenarios' frame: a server of cfg on its own loop (step 0), the probe's
 * connections sending request (NULL: the probe's own), then check reads what they got. */
static void server_scenario(outcome *o, const tc_server_config *cfg, const char *request,
                            void (*check)(outcome *o, probe *p))
{
    uv_loop_t loop;
    uv_timer_t watchdog;
    uv_async_t done;
    assert_int_equal(uv_loop_init(&loop), 0);
    watchdog_start(&loop, &watchdog);
    tc_server *srv = NULL;
    if (step_rc(o, 0, tc_server_new(&srv, &loop, cfg)) == 0) {
        probe p = {.port = tc_server_port(srv), .request = request};
        probe_run(&p, &loop, &done, on_probe_done, srv);
        check(o, &p);
    }
    close_all(&loop, &watchdog);
}

static void server_check(outcome *o, probe *p)
{
    probe_record(o, p, 200, "\r\n\r\nhello");
    int unanswered = 0;
    for (int i = 0; i < PROBE_CONNECTIONS; i++)
        unanswered += p->conn[i].len == 0;
    /* a refused connection is one closed with no answer, and it is counted */
    assert_true(probe_stats.rejected_no_memory <= (uint64_t)unanswered);
    assert_int_equal(probe_stats.rejected_over_limit, 0);
    refused_runs += probe_stats.rejected_no_memory > 0;
}

/* Steps: 0 the server, 1 and 2 the probe's connections. */
static void scenario_server(outcome *o)
{
    tc_server_config cfg;
    tc_server_config_init(&cfg);
    cfg.handler = server_handler;
    server_scenario(o, &cfg, NULL, server_check);
}

static void test_server(void **state)
{
    run_failing("server", scenario_server);
    /* one N per connection fails the connection's own allocation: it was refused and counted */
    assert_int_equal(refused_runs, PROBE_CONNECTIONS);
}

/* ---- server, streaming ----------------------------------------------------------------------- */

static const char stream_request[] =
    "POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n"
    "Connection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
/* The body of the answer, as the handler writes it: the request's body back, in two chunks. */
static const char stream_answer[] = "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";

static char stream_body[64];
static size_t stream_len;

static int stream_every_request(tc_request *req, void *data)
{
    return 1;
}

/* 1 to go on after a call of the streamed answer; else the request is finished (TC_ENOMEM
 * finished it, and TC_ECANCELED leaves it to be). */
static int stream_went(tc_request *req, int rc)
{
    if (rc == TC_ECANCELED)
        tc_request_abort(req);
    return rc == 0;
}

static void stream_on_body(tc_request *req, int status, const char *data, size_t len, void *arg)
{
    if (len > 0) {
        if (stream_len + len <= sizeof(stream_body))
            memcpy(stream_body + stream_len, data, len);
        stream_len += len;
        return;
    }
    if (status != 0) { /* the client is gone (a close for want of memory): finishing frees it */
        tc_request_abort(req);
        return;
    }
    size_t half = stream_len / 2;
    if (stream_went(req, tc_request_respond_head(req, 200, "text/plain", NULL, 0,
                                                 TC_SERVER_LENGTH_UNKNOWN)) &&
        stream_went(req, tc_request_write(req, stream_body, half)) &&
        stream_went(req, tc_request_write(req, stream_body + half, stream_len - half)))
        (void)tc_request_end(req); /* TC_ENOMEM: cut, and finished all the same */
}

static void stream_handler(tc_request *req, void *data)
{
    stream_len = 0;
    int rc = tc_request_read_body(req, sizeof(stream_body), stream_on_body, NULL);
    if (rc != 0) /* the 100 Continue could not be queued */
        (void)tc_request_respond_error(req, 503, "overloaded", "out of memory");
}

/* What connection i of the probe got for the streamed request: 200 with the whole answer; or
 * TC_ENOMEM for a 503, a connection closed with no answer, or an answer cut short (never
 * complete-looking). A 100 Continue may come first. */
static int probe_stream_outcome(const probe_conn *pc, int i)
{
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    const char *p = pc->resp;
    if (strncmp(p, cont, sizeof(cont) - 1) == 0)
        p += sizeof(cont) - 1;
    if (strncmp(p, "HTTP/1.1 200 ", 13) == 0) {
        const char *body = strstr(p, "\r\n\r\n");
        assert_non_null(body);
        assert_non_null(strstr(p, "Transfer-Encoding: chunked\r\n"));
        body += 4;
        if (strcmp(body, stream_answer) == 0)
            return 200;
        if (strncmp(body, stream_answer, strlen(body)) != 0)
            fail_msg("connection %d: a streamed answer with a wrong body: %s", i + 1, body);
        return TC_ENOMEM; /* cut short: the last chunk is missing */
    }
    if (*p == '\0' && p != pc->resp)
        return TC_ENOMEM; /* a 100, then the close */
    return probe_outcome(pc, i, 200, stream_answer);
}

/* Steps: 0 the server, 1 and 2 the probe's connections. */
static void server_stream_check(outcome *o, probe *p)
{
    for (int i = 0; i < PROBE_CONNECTIONS; i++)
        record(o, 1 + i, probe_stream_outcome(&p->conn[i], i));
    if (!tc__alloc_failed()) /* the clean run: both answered in full */
        assert_true(o->code[1] == 200 && o->code[2] == 200);
}

static void scenario_server_stream(outcome *o)
{
    tc_server_config cfg;
    tc_server_config_init(&cfg);
    cfg.handler = stream_handler;
    cfg.head_filter = stream_every_request;
    server_scenario(o, &cfg, stream_request, server_stream_check);
}

static void test_server_stream(void **state)
{
    run_failing("server, streaming", scenario_server_stream);
}

/* ---- the simulator in a stall ---------------------------------------------------------------- */

/* The stall the simulator starts in: long enough for the probe's first request to arrive in it,
 * short enough for a walk of every allocation on the path. */
#define STALL_MS 100

static void on_upstream_probe_done(uv_async_t *a)
{
    uv_close((uv_handle_t *)a, NULL);
    tc_upstream_close(a->data, NULL, NULL);
}

/* Steps: 0 the simulator, 1 and 2 the probe's connections (404: its path is no endpoint). The
 * profile's phase puts the wall clock at the start of a stall, so the first request is parked
 * until the stall ends (an allocation of its own); the second comes after it. */
static void scenario_upstream(outcome *o)
{
    uv_loop_t loop;
    uv_timer_t watchdog;
    uv_async_t done;
    uv_timeval64_t tv;
    char profile[64];
    assert_int_equal(uv_loop_init(&loop), 0);
    watchdog_start(&loop, &watchdog);
    assert_int_equal(uv_gettimeofday(&tv), 0);
    (void)snprintf(profile, sizeof(profile), "pause:0:0:%d:3600000:%lld", STALL_MS,
                   (long long)((tv.tv_sec * 1000 + tv.tv_usec / 1000) % 3600000));
    tc_upstream_config cfg;
    tc_upstream_config_init(&cfg);
    cfg.profile = profile;
    cfg.seed_set = 1;
    tc_upstream *u = NULL;
    if (step_rc(o, 0, tc_upstream_new(&u, &loop, &cfg)) == 0) {
        probe p = {.port = tc_upstream_port(u)};
        probe_run(&p, &loop, &done, on_upstream_probe_done, u);
        probe_record(o, &p, 404, "\"error\":\"not_found\"");
    }
    close_all(&loop, &watchdog);
}

static void test_upstream(void **state)
{
    run_failing("upstream", scenario_upstream);
}

int main(void)
{
    const char *from = getenv("TC_FAILMALLOC_CURL_FROM");
    if (from != NULL) { /* a child of test_client_curl */
        walk_from = strtoul(from, NULL, 10);
        walk_progress_fd = atoi(getenv("TC_FAILMALLOC_PROGRESS_FD"));
        const struct CMUnitTest walk[] = {cmocka_unit_test(test_client_curl_walk)};
        return cmocka_run_group_tests_name("libcurl walk", walk, upstream_start, upstream_stop);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_future),   cmocka_unit_test(test_jansson),
        cmocka_unit_test(test_batch),    cmocka_unit_test(test_replica),
        cmocka_unit_test(test_server),   cmocka_unit_test(test_server_stream),
        cmocka_unit_test(test_upstream),
    };
    const struct CMUnitTest net_tests[] = {
        cmocka_unit_test(test_client),
        cmocka_unit_test(test_client_curl),
        cmocka_unit_test(test_hedge),
        cmocka_unit_test(test_hedge_replicas),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    failed += cmocka_run_group_tests_name("loopback", net_tests, upstream_start, upstream_stop);
    return failed;
}
