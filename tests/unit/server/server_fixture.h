/*
 * Shared fixture of the tests of the HTTP/1.1 server (test_server_*.c), driven over real
 * loopback sockets.
 *
 * The one idea of the harness: the server runs on a uv loop in the test's own thread, and a
 * client thread talks to it with plain blocking sockets, so what is checked is exactly the bytes
 * a client sees on the wire (order, headers, bodies, FIN versus RST). The two threads meet only
 * through atomics: the client raises numbered events (uv_async_t) that a test-specific callback
 * handles on the loop, the loop publishes a "stage" number the client waits for, and the client
 * marks itself done. Once the client is done and every loop-side condition the test asked for has
 * been reached, the server is closed and the loop runs to completion; every test then asserts
 * uv_loop_close() == 0 and that the close callback ran exactly once.
 *
 * cmocka's assertions are not thread-safe, so the client thread never calls them: CHECK()
 * records the first failure (line, expression, values) and returns from the client function, and
 * the test thread fails with that message after joining. Each test arms alarm() as a watchdog,
 * and every client socket has receive/send timeouts so a missing answer fails instead of hanging.
 *
 * Compiled once into the folder's fixture library (CMakeLists.txt); every name is sfx_.
 */
#ifndef TC_TEST_SERVER_FIXTURE_H
#define TC_TEST_SERVER_FIXTURE_H
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include <jansson.h>
#include <uv.h>

#include "tailcut/server.h"

#define MAX_REQS 64
#define MAX_FDS 16

/* ---- the fixture: one loop, one server, one client thread ------------------------------------ */

/* What the handler saw of one request, copied out (the request itself may be gone later). */
typedef struct seen {
    char method[16];
    char target[512];
    char path[512];
    char query[512];
    char hval[128]; /* X-Test-Header, looked up in mixed case */
    char body[256];
    char multi[64]; /* every X-Multi value, in order, each followed by '|' */
    char all[256];  /* every header as "Name=value|", in order (tc_request_header_at) */
    size_t query_len, body_len;
    int has_h, has_missing, has_empty, empty_len, is_head;
} seen;

typedef struct fixture fixture;
typedef void (*client_fn)(fixture *fx);
typedef void (*event_fn)(fixture *fx, int ev);

struct fixture {
    uv_loop_t loop;
    tc_server *srv;
    tc_server_config cfg;
    int port;
    uv_async_t async;
    pthread_t thread;
    client_fn client;
    event_fn on_event;
    atomic_int events_sent;
    int events_seen;
    atomic_int client_done;
    atomic_int stage; /* published by the loop, awaited by the client */
    int loop_pending; /* loop-side conditions the test still waits for */
    int finished;
    int closed;       /* server close callbacks */
    char fail[512];   /* first client-side failure */
    int fds[MAX_FDS]; /* client sockets, closed when the client returns */
    int nfds;

    /* handler-side records */
    tc_request *reqs[MAX_REQS];
    seen seen[MAX_REQS];
    int nreqs;
    int aborts;
    int abort_other;
    int respond_ret[MAX_REQS];
    int drained;
    void *t; /* per-test state */
};

/* Loop, config with defaults, the async, the watchdog; the test adjusts fx->cfg (and sets
 * fx->on_event, fx->t) and then calls sfx_run(). */
void sfx_init(fixture *fx, tc_handler_fn handler);

/* Starts the server of fx->cfg on port 0 (fx->port), runs the client against it until both
 * sides are done, then checks the teardown. loop_pending: how many times the test's loop side
 * calls sfx_loop_done before the end. */
void sfx_run(fixture *fx, client_fn client, int loop_pending);

/* sfx_init and sfx_run, for a test that keeps the default config. */
void sfx_serve(fixture *fx, tc_handler_fn handler, client_fn client, int loop_pending);

/* n requests reached the handler and every answer it gave was accepted (respond_ret 0). */
void sfx_expect_answered(const fixture *fx, int n);

/* A loop-side condition the test waits for has been reached. */
void sfx_loop_done(fixture *fx);

/* Closes the server (once); fx->closed counts the close callback. */
void sfx_close_server(fixture *fx);

/* The main of a server test file: SIGPIPE ignored, TC_TEST_FILTER=pattern runs only the matching
 * tests (cmocka wildcards), then the group. */
#define SFX_RUN_TESTS(tests) sfx_run_tests((tests), sizeof(tests) / sizeof((tests)[0]))
int sfx_run_tests(const struct CMUnitTest *tests, size_t n);

/* ---- client-side helpers (client thread only: no cmocka here) -------------------------------- */

/* Records the first client-side failure (what CHECK calls). */
void sfx_client_fail(fixture *fx, int line, const char *fmt, ...);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            sfx_client_fail(fx, __LINE__, "%s (errno %d)", #cond, errno);                          \
            return;                                                                                \
        }                                                                                          \
    } while (0)

#define CHECK_INT(a, b)                                                                            \
    do {                                                                                           \
        long long a_ = (long long)(a), b_ = (long long)(b);                                        \
        if (a_ != b_) {                                                                            \
            sfx_client_fail(fx, __LINE__, "%s == %s: %lld != %lld", #a, #b, a_, b_);               \
            return;                                                                                \
        }                                                                                          \
    } while (0)

#define CHECK_STR(a, b)                                                                            \
    do {                                                                                           \
        const char *a_ = (a), *b_ = (b);                                                           \
        if (a_ == NULL || strcmp(a_, b_) != 0) {                                                   \
            sfx_client_fail(fx, __LINE__, "%s == %s: \"%s\" != \"%s\"", #a, #b,                    \
                            a_ != NULL ? a_ : "(null)", b_);                                       \
            return;                                                                                \
        }                                                                                          \
    } while (0)

/* Waits (up to 10 s) until the loop has published stage; 1 if it did. */
int sfx_stage_wait(fixture *fx, int stage);

/* Raises the next numbered event on the loop (handled by fx->on_event). */
void sfx_client_event(fixture *fx);

/* CLOCK_MONOTONIC in milliseconds. */
double sfx_now_ms(void);

/* One client connection, with what was read and not consumed yet. */
typedef struct cli {
    fixture *fx;
    int fd;
    char buf[65536];
    size_t len;
} cli;

/* Connects to the server; returns 0 or -errno. The socket is closed when the client returns. */
int sfx_cli_connect(fixture *fx, cli *c);

void sfx_cli_close(cli *c);

/* Sends all of data; 0, or -1 on error. */
int sfx_cli_send(cli *c, const char *data, size_t len);
int sfx_cli_sends(cli *c, const char *s);

/* Reads more bytes into the buffer: >0 bytes, 0 on EOF, -1 on error (errno set). */
ssize_t sfx_cli_fill(cli *c);

typedef struct resp {
    int status;
    char line[128];  /* status line without CRLF */
    char head[4096]; /* header lines, CRLF-separated, NUL-terminated */
    char body[8192]; /* NUL-terminated: a longer body is an error */
    size_t body_len;
} resp;

/* Value of a response header (case-insensitive name) copied into out; 1 if found. */
int sfx_resp_header(const resp *r, const char *name, char *out, size_t cap);

/* How many times the header appears. */
int sfx_resp_header_count(const resp *r, const char *name);

/* Reads one response, its body NUL-terminated in r->body. head_request: the response has no
 * body whatever Content-Length says.
 * Returns 1 for a response, 0 for a clean EOF before any byte, -1 otherwise (errno set). */
int sfx_cli_read_response(cli *c, resp *r, int head_request);

/* Reads a response head (status line and headers) into r, and leaves what follows it (body bytes,
 * or the next response) in c's buffer. Returns 1, 0 for a clean EOF before any byte, -1 otherwise
 * (errno set). */
int sfx_cli_read_head(cli *c, resp *r);

/* Where a streamed body's bytes go as they are read: sink(data, len, arg). */
typedef void (*sfx_sink)(const char *data, size_t len, void *arg);

/* Reads a chunked body that follows the head read by sfx_cli_read_head: each chunk's bytes go to
 * sink (NULL: into r->body, whose size bounds them; r->body_len counts them either way). Returns
 * 1 when the last chunk and the end of the trailers were read, 0 when the connection ended first
 * (an incomplete body: *err as in sfx_cli_read_eof), -1 on bad framing or an error. */
int sfx_cli_read_chunked(cli *c, resp *r, sfx_sink sink, void *arg, int *err);

/* 1 if not a byte arrives on c within ms (and none is buffered). */
int sfx_cli_quiet(cli *c, int ms);

/* Reads until the server closes. Returns the bytes seen before (buffered ones included) and sets
 * *err to 0 for a clean EOF or to the errno of the failed read (ECONNRESET for a reset). */
size_t sfx_cli_read_eof(cli *c, int *err);

/* Like sfx_cli_read_eof, keeping up to cap bytes (buffered ones first) in out. */
size_t sfx_cli_read_eof_into(cli *c, char *out, size_t cap, int *err);

/* 1 if the body is the contract's error object with this code and a string message (copied into
 * message when not NULL). */
int sfx_error_body_ok(const resp *r, const char *code, char *message, size_t cap);

/* 1 for "Sun, 06 Nov 1994 08:49:37 GMT" (RFC 9110 IMF-fixdate). */
int sfx_date_ok(const char *d);

/* Checks the common shape of a server-made error: status, JSON error body, close, then EOF. */
#define CHECK_ERROR_AND_CLOSE(c, status_, code)                                                    \
    do {                                                                                           \
        resp r_;                                                                                   \
        CHECK_INT(sfx_cli_read_response((c), &r_, 0), 1);                                          \
        CHECK_INT(r_.status, (status_));                                                           \
        CHECK(sfx_error_body_ok(&r_, (code), NULL, 0));                                            \
        CHECK_HEADER(&r_, "Content-Type", "application/json");                                     \
        CHECK_HEADER(&r_, "Connection", "close");                                                  \
        CHECK_CLOSED((c), 0);                                                                      \
    } while (0)

/* The server closes c: no byte more, and a clean close (err_ 0) or a reset (ECONNRESET). */
#define CHECK_CLOSED(c, err_)                                                                      \
    do {                                                                                           \
        int e_ = -1;                                                                               \
        CHECK_INT(sfx_cli_read_eof((c), &e_), 0);                                                  \
        CHECK_INT(e_, (err_));                                                                     \
    } while (0)

/* The response r has the header name, with the value want. */
#define CHECK_HEADER(r, name, want)                                                                \
    do {                                                                                           \
        char h_[256];                                                                              \
        CHECK(sfx_resp_header((r), (name), h_, sizeof(h_)));                                       \
        CHECK_STR(h_, (want));                                                                     \
    } while (0)

/* ---- loop-side helpers ---------------------------------------------------------------------- */

/* 1 if s holds exactly the bytes of lit. */
int sfx_str_eq(tc_str s, const char *lit);

/* Copies what the request shows through the accessors into fx->seen and keeps the pointer in
 * fx->reqs; returns its index. */
int sfx_record(fixture *fx, tc_request *req);

/* Runs fn(fx, arg) after ms on the loop, from a timer that closes itself. */
typedef void (*later_fn)(fixture *fx, void *arg);
void sfx_later(fixture *fx, uint64_t ms, later_fn fn, void *arg);

/* Handler: answers 200 text/plain with the target as body, or with the request body for /echo. */
void sfx_handler_echo(tc_request *req, void *data);

/* Handler: answers 200 with no body (for servers whose answers a test does not read). */
void sfx_handler_noop(tc_request *req, void *data);

/* A close or drain callback that counts in the int at data. */
void sfx_on_closed_count(tc_server *srv, void *data);

#endif /* TC_TEST_SERVER_FIXTURE_H */
