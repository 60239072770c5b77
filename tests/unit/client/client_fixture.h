/*
 * Shared fixture of the tests of the pooled HTTP client (test_client_*.c): a small raw libuv
 * HTTP/1.1 server that runs on the test's loop, on 127.0.0.1 port 0. The request path tells the
 * server how to misbehave on that connection: answer normally (Content-Length or chunked),
 * answer late, reset before or mid-body, send garbage, send a huge body, trickle bytes, hold
 * forever, stream a body of any size and framing as fast as the client reads it, stall, read a
 * request body of any size and framing as it arrives (and echo it back at once) (the paths are
 * listed in client_fixture.c, sc_route and sc_body_start). The server counts connections
 * (open, peak, total), requests being answered (and their peak) and connections the client
 * closed, so pool caps, keep-alive reuse and cancellation are checked from the server's side.
 *
 * Every test runs its own loop under a watchdog and ends with tc_client_close, the server's
 * close and uv_loop_close(loop) == 0 (cfx_finish). Each test file runs its suite twice
 * (cfx_run_on_both_engines): once on the native HTTP/1.1 engine, once with every request forced
 * onto libcurl (TC_CLIENT_ENGINE_CURL); cfx_engine says which.
 *
 * Compiled once into the folder's fixture library (CMakeLists.txt); every name is cfx_.
 */
#ifndef TC_TEST_CLIENT_FIXTURE_H
#define TC_TEST_CLIENT_FIXTURE_H
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "base/list.h"
#include "tailcut/client.h"
#include "tailcut/future.h"

/* ---- the test server ------------------------------------------------------------------------ */

struct sconn; /* one accepted connection (client_fixture.c) */

typedef struct srv {
    uv_loop_t *loop;
    uv_tcp_t listener;
    int port;
    int open_handles;
    int conns_open, conns_max, conns_total;
    int active, active_max, requests;
    int *shared_active, *shared_active_max; /* optional: counted across two servers */
    int peer_closed;                        /* connections closed by the client */
    int peer_reset;                         /* of those, closed with a reset */
    int partial_sent;                       /* /slow-body sent its first bytes */
    size_t huge_streamed;
    int next_id;
    struct sconn *conns;
    char last_method[16];
    char last_xtest[64];
    char last_host[256];  /* the Host header of the last request */
    char last_head[2048]; /* the last request's head, as received */
    char name[64];        /* the address it listens on: /host answers "NAME|HOST|TARGET" */
    size_t body_bytes;    /* request body bytes /sink and /echo-stream read */
    int bodies_done;      /* request bodies they read to their end */
} srv;

/* Starts a server on 127.0.0.1 port 0 (s->port) on loop; cfx_finish closes t->s and t->s2. */
void cfx_srv_start(srv *s, uv_loop_t *loop);

/* Starts a server on ip (IPv4 or IPv6 text) and port (0: any). Returns 0, or the uv error of
 * the bind or listen (the address is not on this machine, the port is taken), s then unused. */
int cfx_srv_start_at(srv *s, uv_loop_t *loop, const char *ip, int port);

/* ---- the test context ----------------------------------------------------------------------- */

typedef struct tctx {
    uv_loop_t loop;
    uv_timer_t tick; /* keeps UV_RUN_ONCE waking up; also the watchdog clock */
    uint64_t started_ms;
    srv s, s2;
    tc_client *client;
    int client_closed;
    char url[256];
} tctx;

/* The engine of the group being run (cfx_run_on_both_engines sets it). */
extern tc_client_engine cfx_engine;

/* A loop, the server t->s, and a client made from given (NULL: the defaults) on cfx_engine. */
tctx *cfx_new(const tc_client_config *given);

/* cfx_new with the default config but for the pool's caps: max_connections (0: the default)
 * and max_per_host (0: none, the default). */
tctx *cfx_new_pool(size_t max_connections, size_t max_per_host);

/* Closes client and servers, runs the loop dry and checks that nothing is left; frees t. */
void cfx_finish(tctx *t);

/* "http://127.0.0.1:<port of s><path>", in t's buffer (valid until the next call). */
const char *cfx_url(tctx *t, srv *s, const char *path);

/* Runs the loop until the counter reaches n or limit_ms pass; returns the counter. */
int cfx_run_until_count(tctx *t, const int *counter, int n, uint64_t limit_ms);

/* Runs the loop until the counter *flag is nonzero or limit_ms pass; returns it. */
int cfx_run_until_flag(tctx *t, const int *flag, uint64_t limit_ms);

/* Runs the loop until f is done or limit_ms pass; returns tc_future_done(f). */
int cfx_run_until_done(tctx *t, tc_future *f, uint64_t limit_ms);

/* Runs the loop for ms milliseconds. */
void cfx_run_for(tctx *t, uint64_t ms);

/* The close callback of t->client (data is t): counts t->client_closed. */
void cfx_on_client_closed(tc_client *c, void *data);

/* Starts a GET of path on s with an optional per-request timeout. */
tc_future *cfx_get(tctx *t, srv *s, const char *path, uint64_t timeout_ms);

/* Waits for f and checks that it is a response with this status; returns it. */
const tc_response *cfx_expect_response(tctx *t, tc_future *f, int status);

/* Waits for f and checks that it failed with err and a message. */
void cfx_expect_error(tctx *t, tc_future *f, int err);

/* Nothing in flight, and every started request ended one way or another. */
void cfx_expect_stats_settled(tctx *t);

/* A TCP socket bound to 127.0.0.1 port 0 (the address in *addr), listening with backlog, or
 * only bound when backlog < 0 (a port where nothing listens once it is closed). */
int cfx_loopback_socket(int backlog, struct sockaddr_in *addr);

/* The bytes /stream sends (and a test writes): byte k of a body is 'a' + k % 26. Fills dst
 * with n of them from offset; cfx_pattern_check says whether p holds them. */
void cfx_pattern(char *dst, size_t offset, size_t n);
int cfx_pattern_check(const char *p, size_t offset, size_t n);

/* Milliseconds since start_ns (a uv_hrtime() value). */
double cfx_elapsed_ms(uint64_t start_ns);

/* Runs the n tests twice, on the native engine and on libcurl; returns the failures. */
int cfx_run_on_both_engines(const struct CMUnitTest *tests, size_t n);

#endif /* TC_TEST_CLIENT_FIXTURE_H */
