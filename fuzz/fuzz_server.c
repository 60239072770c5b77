/*
 * libFuzzer target: the HTTP request path of src/server/server.c, over real loopback TCP.
 *
 * One tc_server runs on the process-wide loop of loopback.c (created on the first input, port 0).
 * Each input opens a fresh connection, writes its bytes (in one write or two), half-closes or
 * keeps the connection open, runs the loop until the exchange is over, and then checks what came
 * back against what the handler did. The one idea: the handler keeps a log of every request it
 * was handed and how it finished it (status and body, drop, abort), so the bytes on the wire can
 * be checked exactly against that log: responses in the same order, each with the status and
 * body the handler gave, no response after a drop or a "Connection: close", at most one extra
 * response (the server's own 400/408/413/414/431/503) after the last handled request.
 *
 * Input layout: 4 control bytes, then the bytes sent to the server.
 *   [0] mode:  'K' keep the connection open until the exchange is quiet, then close it;
 *              'T' keep it open and wait for the server to close it (header/idle timeouts);
 *              anything else: half-close (FIN) right after the writes.
 *   [1] split: '0'..'9' splits the bytes at that tenth of their length ('0': one write);
 *              any other byte splits at (byte % (length + 1)).
 *   [2] seed:  picks the handler's action for paths it does not know, and the timer delays.
 *   [3] ignored (seeds put a space or newline there).
 * The handler acts on the request path: /now echoes the body, /json answers JSON, /later answers
 * from a 0-2 ms timer, /drop and /rst drop the request (FIN or RST), /err?s=NNN&m=MSG answers
 * tc_request_respond_error, /big answers 70000 bytes, /empty answers 204, 205 or 304 (by seed)
 * with a body that must not be sent; other paths pick one of these by seed.
 *
 * Paths under /s are taken at their head (cfg.head_filter) and streamed: /secho answers at once
 * with a head of unknown length (chunked, or up to the close for HTTP/1.0) and writes each piece
 * of the body back as it arrives, /slen reads the body whole and answers with a known length in
 * two writes, /spause does the same pausing at every piece (resumed from a 0-2 ms timer), /sfirst
 * answers before reading anything, /scut writes a piece and cuts the response (tc_request_abort);
 * other /s paths pick one of these by seed. A body error (over MAX_BODY, malformed, stalled) is
 * answered 413, 400 or 408 when no head was written, else the response is cut; a cut must never
 * look complete.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "loopback.h"
#include "tailcut/json.h"
#include "tailcut/server.h"
#include "tailcut/url.h"

#define PREFIX 4
#define MAX_BODY 4096
#define MAX_URI 1024
#define MAX_HEADERS 2048
#define HEADER_TIMEOUT_MS 20
#define IDLE_TIMEOUT_MS 20
#define BODY_TIMEOUT_MS 20
#define BIG_LEN 70000
#define MAX_BIG_PER_INPUT 4
/* An input whose exchange is not over by then is a hang (a bug): the handler never waits longer
 * than 2 ms, and the server's own timers are HEADER_TIMEOUT_MS / IDLE_TIMEOUT_MS. */
#define INPUT_DEADLINE_MS 3000
/* After the client closed, the server must let go of the connection within this (it is closed
 * at once on EOF; only a slow machine makes it take more than a few ms)... */
#define RELEASE_MS 1000
/* ...and with FUZZ_KNOWN_BUGS set, a connection still held after this is a known bug. */
#define HELD_TOLERATED_MS 5

typedef enum action {
    A_NOW,
    A_JSON,
    A_LATER,
    A_DROP,
    A_RST,
    A_ERR,
    A_BIG,
    A_EMPTY,
    A_COUNT
} action;

/* What the handler did with one request, in dispatch order. */
typedef struct record {
    int status;   /* > 0: answered with it; -1: dropped; 0: not finished yet */
    int head;     /* a HEAD request: no body on the wire */
    int is_error; /* answered with tc_request_respond_error: a JSON error body */
    int aborted;  /* the server reported the client gone before the answer */
    int streamed; /* answered with tc_request_respond_head: any framing */
    int cut;      /* ... and cut (tc_request_abort, or ended short): never complete-looking */
    char *body;   /* expected body (owned), unless is_error */
    size_t body_len;
    char *err_code; /* is_error: code and message given */
    char *err_msg;
} record;

typedef struct later {
    uv_timer_t timer;
    tc_request *req;
    size_t idx;
} later;

static struct {
    tc_server *srv;
    int port;
    uint8_t seed;
    record *recs;
    size_t nrecs, cap;
    int timers; /* later records whose timer handle is not closed yet */
    int bigs;
    unsigned long held; /* inputs after which the server held the connection (tolerated) */
} g;

static char big_body[BIG_LEN];

static char *dup_bytes(const char *p, size_t n)
{
    char *d = malloc(n + 1);
    FZ_CHECK(d != NULL, "out of memory");
    if (n > 0)
        memcpy(d, p, n);
    d[n] = '\0';
    return d;
}

static record *rec(size_t i)
{
    return &g.recs[i];
}

/* Finishes request i with a plain response and logs it. */
static void answer(tc_request *req, size_t i, int status, const char *ctype, const char *body,
                   size_t len)
{
    record *r = rec(i);
    r->status = status;
    r->body = dup_bytes(body, len);
    r->body_len = len;
    int aborted = tc_request_aborted(req);
    int err = tc_request_respond(req, status, ctype, NULL, 0, body, len);
    FZ_CHECK(err == 0 || aborted, "tc_request_respond failed: %d", err);
}

static void answer_error(tc_request *req, size_t i, int status, const char *code, const char *msg)
{
    record *r = rec(i);
    r->status = status;
    r->is_error = 1;
    r->err_code = dup_bytes(code, strlen(code));
    r->err_msg = dup_bytes(msg, strlen(msg));
    FZ_CHECK(tc_request_respond_error(req, status, code, msg) == 0 || tc_request_aborted(req),
             "tc_request_respond_error failed");
}

static void drop(tc_request *req, size_t i, int reset)
{
    rec(i)->status = -1;
    tc_request_drop(req, reset);
}

static size_t req_index(tc_request *req)
{
    return (size_t)(uintptr_t)tc_request_data(req) - 1;
}

/* ---- the handler ----------------------------------------------------------------------------- */

static void echo(tc_request *req, size_t i)
{
    tc_str body = tc_request_body(req);
    answer(req, i, 200, "application/octet-stream", body.base, body.len);
}

static void on_later_closed(uv_handle_t *h)
{
    later *l = h->data;
    free(l);
    g.timers--;
    fz_progress++;
}

static void on_later(uv_timer_t *t)
{
    later *l = t->data;
    fz_progress++;
    if (l->req != NULL) {
        echo(l->req, l->idx);
        l->req = NULL;
    }
    uv_close((uv_handle_t *)&l->timer, on_later_closed);
}

/* The client went away: half the time finish at once (the timer then only closes), else let
 * the timer finish the request later, which must then only free it. */
static void on_abort(tc_request *req, void *data)
{
    later *l = data;
    fz_progress++;
    FZ_CHECK(tc_request_aborted(req), "abort callback but tc_request_aborted() == 0");
    rec(l->idx)->aborted = 1;
    if (g.seed & 0x10) {
        drop(req, l->idx, 0);
        l->req = NULL;
    }
}

static void start_later(tc_request *req, size_t i)
{
    later *l = calloc(1, sizeof(*l));
    FZ_CHECK(l != NULL, "out of memory");
    l->req = req;
    l->idx = i;
    uv_timer_init(fz_loop(), &l->timer);
    l->timer.data = l;
    g.timers++;
    uv_timer_start(&l->timer, on_later, (g.seed + i) % 3, 0);
    tc_request_on_abort(req, on_abort, l);
}

static int path_is(tc_str path, const char *lit)
{
    size_t n = strlen(lit);
    return path.len == n && memcmp(path.base, lit, n) == 0;
}

/* Accessor invariants that hold for every request the server hands out. */
static void check_request(tc_request *req)
{
    tc_str method = tc_request_method(req);
    tc_str target = tc_request_target(req);
    tc_str path = tc_request_path(req);
    tc_str query = tc_request_query(req);
    tc_str body = tc_request_body(req);
    FZ_CHECK(method.len > 0, "empty method");
    FZ_CHECK(target.len > 0 && target.len <= MAX_URI, "target length %zu", target.len);
    FZ_CHECK(path.base == target.base && path.len <= target.len, "path is not a prefix");
    FZ_CHECK(memchr(path.base, '?', path.len) == NULL && memchr(path.base, '#', path.len) == NULL,
             "path holds '?' or '#'");
    if (query.len > 0) {
        FZ_CHECK(query.base == path.base + path.len + 1 && path.base[path.len] == '?',
                 "query does not follow '?'");
        FZ_CHECK(query.base + query.len <= target.base + target.len, "query outside the target");
        FZ_CHECK(memchr(query.base, '#', query.len) == NULL, "query holds '#'");
    }
    FZ_CHECK(body.len <= MAX_BODY, "body over max_body: %zu", body.len);
    FZ_CHECK(tc_request_is_head(req) == (method.len == 4 && memcmp(method.base, "HEAD", 4) == 0),
             "tc_request_is_head disagrees with the method");
    FZ_CHECK(!tc_request_aborted(req), "a new request is already aborted");
    FZ_CHECK(tc_request_loop(req) == fz_loop() && tc_request_server(req) == g.srv,
             "loop/server accessors");
    tc_str v;
    if (tc_request_header(req, "content-length", &v)) {
        FZ_CHECK(v.base != NULL, "header value with a NULL base");
    }
    uint64_t ms;
    int present;
    const char *why;
    if (tc_query_timeout(query.base, query.len, 60000, &ms, &present, &why) != 0)
        FZ_CHECK(why != NULL, "timeout rejected without a reason");
}

/* ---- streamed requests (paths under /s) --------------------------------------------------- */

typedef enum saction { S_ECHO, S_LEN, S_PAUSE, S_FIRST, S_CUT, S_COUNT } saction;

/* A streamed request being read: freed once the request is finished and its timer closed. */
typedef struct stream {
    uv_timer_t timer; /* S_PAUSE: resumes the paused body; open until the request is finished */
    tc_request *req;  /* NULL once finished */
    size_t idx;
    saction a;
    int refs;   /* the request's, and the timer's while it runs */
    char *body; /* what was read (S_LEN, S_PAUSE) */
    size_t len;
} stream;

static int head_filter(tc_request *req, void *data)
{
    (void)data;
    tc_str path = tc_request_path(req);
    return path.len >= 2 && memcmp(path.base, "/s", 2) == 0;
}

static void stream_unref(stream *st)
{
    if (--st->refs == 0) {
        free(st->body);
        free(st);
    }
}

static void on_stream_timer_closed(uv_handle_t *h)
{
    stream *st = h->data;
    g.timers--;
    fz_progress++;
    stream_unref(st);
}

static void on_stream_resume(uv_timer_t *t)
{
    stream *st = t->data;
    fz_progress++;
    tc_request_body_resume(st->req);
}

static void append(char **buf, size_t *len, const char *p, size_t n)
{
    char *b = realloc(*buf, *len + n + 1);
    FZ_CHECK(b != NULL, "out of memory");
    memcpy(b + *len, p, n);
    *buf = b;
    *len += n;
}

/* A body error before any head: the contract's answers. */
static void answer_body_error(tc_request *req, size_t i, int status)
{
    if (status == TC_ETOOLARGE)
        answer_error(req, i, 413, "too_large", "body over the limit");
    else if (status == TC_ETIMEDOUT)
        answer_error(req, i, 408, "timeout", "body stalled");
    else
        answer_error(req, i, 400, "bad_request", "malformed body");
}

/* Streams body[0..len) back with a known length, in two writes. */
static void answer_streamed(tc_request *req, size_t i, const char *body, size_t len)
{
    record *r = rec(i);
    r->status = 200;
    r->streamed = 1;
    r->body = dup_bytes(body, len);
    r->body_len = len;
    FZ_CHECK(tc_request_respond_head(req, 200, "application/octet-stream", NULL, 0, (int64_t)len) ==
                 0,
             "tc_request_respond_head failed");
    body = r->body; /* never NULL */
    FZ_CHECK(tc_request_write(req, body, len / 2) == 0 &&
                 tc_request_write(req, body + len / 2, len - len / 2) == 0 &&
                 tc_request_end(req) == 0,
             "a streamed answer failed");
}

static void on_stream_body(tc_request *req, int status, const char *data, size_t len, void *arg)
{
    stream *st = arg;
    record *r = rec(st->idx);
    fz_progress++;
    if (len > 0) {
        FZ_CHECK(status == 0, "bytes with a status");
        if (st->a == S_ECHO) {
            if (!r->head)
                append(&r->body, &r->body_len, data, len);
            FZ_CHECK(tc_request_write(req, data, len) == 0, "tc_request_write failed");
            return;
        }
        append(&st->body, &st->len, data, len);
        FZ_CHECK(st->len <= MAX_BODY, "more body than the limit");
        if (st->a == S_PAUSE) {
            tc_request_body_pause(req);
            uv_timer_start(&st->timer, on_stream_resume, (g.seed + st->len) % 3, 0);
        }
        return;
    }
    st->req = NULL; /* every branch finishes the request */
    if (st->a == S_PAUSE)
        uv_close((uv_handle_t *)&st->timer, on_stream_timer_closed);
    if (status == TC_ECANCELED) {
        FZ_CHECK(tc_request_aborted(req), "TC_ECANCELED but the client is there");
        r->aborted = 1;
        tc_request_abort(req);
    } else if (st->a == S_ECHO) {
        r->cut = status != 0;
        if (status != 0)
            tc_request_abort(req);
        else
            FZ_CHECK(tc_request_end(req) == 0, "tc_request_end failed");
    } else if (status != 0) {
        answer_body_error(req, st->idx, status);
    } else if (st->a == S_LEN) {
        answer_streamed(req, st->idx, st->body, st->len);
    } else {
        answer(req, st->idx, 200, "application/octet-stream", st->body, st->len);
    }
    stream_unref(st);
}

static void on_stream_request(tc_request *req, size_t i)
{
    record *r = rec(i);
    tc_str path = tc_request_path(req);
    saction a;
    if (path_is(path, "/secho"))
        a = S_ECHO;
    else if (path_is(path, "/slen"))
        a = S_LEN;
    else if (path_is(path, "/spause"))
        a = S_PAUSE;
    else if (path_is(path, "/sfirst"))
        a = S_FIRST;
    else if (path_is(path, "/scut"))
        a = S_CUT;
    else
        a = (saction)((g.seed + i) % S_COUNT);
    if (a == S_FIRST) {
        answer(req, i, 200, "text/plain", "first", 5);
        return;
    }
    if (a == S_CUT) {
        /* a known length that is never reached, or none: either way cut */
        int64_t len = (g.seed & 1) && !r->head ? 100 : TC_SERVER_LENGTH_UNKNOWN;
        r->status = 200;
        r->streamed = 1;
        r->cut = 1;
        FZ_CHECK(tc_request_respond_head(req, 200, "text/plain", NULL, 0, len) == 0,
                 "tc_request_respond_head failed");
        FZ_CHECK(tc_request_write(req, "cut", 3) == 0, "tc_request_write failed");
        if (!r->head)
            append(&r->body, &r->body_len, "cut", 3);
        tc_request_abort(req);
        return;
    }
    stream *st = calloc(1, sizeof(*st));
    FZ_CHECK(st != NULL, "out of memory");
    st->req = req;
    st->idx = i;
    st->a = a;
    st->refs = 1;
    if (a == S_PAUSE) {
        uv_timer_init(fz_loop(), &st->timer);
        st->timer.data = st;
        st->refs++;
        g.timers++;
    }
    if (a == S_ECHO) {
        r->status = 200;
        r->streamed = 1;
        FZ_CHECK(tc_request_respond_head(req, 200, "application/octet-stream", NULL, 0,
                                         TC_SERVER_LENGTH_UNKNOWN) == 0,
                 "tc_request_respond_head failed");
    }
    int rc = tc_request_read_body(req, MAX_BODY, on_stream_body, st);
    if (rc == 0)
        return;
    FZ_CHECK(rc == TC_ETOOLARGE, "tc_request_read_body: %d", rc);
    if (a == S_PAUSE)
        uv_close((uv_handle_t *)&st->timer, on_stream_timer_closed);
    if (a == S_ECHO) {
        r->cut = 1;
        tc_request_abort(req);
    } else {
        answer_body_error(req, i, rc);
    }
    stream_unref(st);
}

static void on_request(tc_request *req, void *data)
{
    (void)data;
    fz_progress++;
    check_request(req);
    if (g.nrecs == g.cap) {
        size_t cap = g.cap ? g.cap * 2 : 16;
        record *n = realloc(g.recs, cap * sizeof(*n));
        FZ_CHECK(n != NULL, "out of memory");
        g.recs = n;
        g.cap = cap;
    }
    size_t i = g.nrecs++;
    memset(rec(i), 0, sizeof(record));
    rec(i)->head = tc_request_is_head(req);
    tc_request_set_data(req, (void *)(uintptr_t)(i + 1));
    FZ_CHECK(req_index(req) == i, "request data slot");
    if (tc_request_is_streaming(req)) {
        on_stream_request(req, i);
        return;
    }

    tc_str path = tc_request_path(req);
    action a;
    if (path_is(path, "/now"))
        a = A_NOW;
    else if (path_is(path, "/json"))
        a = A_JSON;
    else if (path_is(path, "/later"))
        a = A_LATER;
    else if (path_is(path, "/drop"))
        a = A_DROP;
    else if (path_is(path, "/rst"))
        a = A_RST;
    else if (path_is(path, "/err"))
        a = A_ERR;
    else if (path_is(path, "/big"))
        a = A_BIG;
    else if (path_is(path, "/empty"))
        a = A_EMPTY;
    else {
        static const action by_seed[8] = {A_NOW, A_LATER, A_NOW, A_LATER,
                                          A_ERR, A_JSON,  A_NOW, A_DROP};
        a = by_seed[(g.seed + i) % 8];
    }
    if (a == A_BIG && g.bigs++ >= MAX_BIG_PER_INPUT)
        a = A_NOW;

    switch (a) {
    case A_NOW:
        echo(req, i);
        break;
    case A_JSON:
        answer(req, i, 200, "application/json", "{\"ok\":true}", 11);
        break;
    case A_LATER:
        start_later(req, i);
        break;
    case A_DROP:
        drop(req, i, 0);
        break;
    case A_RST:
        drop(req, i, 1);
        break;
    case A_BIG:
        answer(req, i, 200, "text/plain", big_body, sizeof(big_body));
        break;
    case A_EMPTY: {
        static const int no_content[3] = {204, 304, 205};
        answer(req, i, no_content[(g.seed + i) % 3], "text/plain", "not sent", 8);
        break;
    }
    case A_ERR:
    default: {
        tc_str q = tc_request_query(req);
        char sbuf[8], mbuf[2048];
        int status = 400;
        if (tc_query_get(q.base, q.len, "s", sbuf, sizeof(sbuf)) > 0)
            status = atoi(sbuf);
        if (status < 400 || status > 599)
            status = 400 + (status < 0 ? -status : status) % 200;
        const char *msg = "fuzzed";
        /* The message API takes UTF-8 text: give it the decoded m=, if it is that. */
        long n = tc_query_get(q.base, q.len, "m", mbuf, sizeof(mbuf));
        if (n > 0 && fz_utf8_valid(mbuf, strlen(mbuf)))
            msg = mbuf;
        answer_error(req, i, status, "fuzz_error", msg);
        break;
    }
    }
}

/* ---- checking the bytes that came back ------------------------------------------------------- */

/* How fz_parse_response reads the answer to record i (past the records: the server's own). */
static int parse_flags(size_t i)
{
    if (i >= g.nrecs)
        return FZ_BODY;
    return (rec(i)->head ? 0 : FZ_BODY) | (rec(i)->streamed ? FZ_STREAMED : 0);
}

static int is_server_error(int status)
{
    return status == 400 || status == 408 || status == 413 || status == 414 || status == 431 ||
           status == 503;
}

/* The error body must be the contract's JSON object, its message the given one cut to at most
 * TC_SERVER_MAX_ERROR_MESSAGE bytes at a character boundary. */
static void check_error_body(const fz_response *r, const record *rc)
{
    FZ_CHECK(tc_json_valid(r->body, r->content_length), "error body is not valid JSON: %.*s",
             (int)r->content_length, r->body);
    json_error_t err;
    json_t *o = json_loadb(r->body, r->content_length, 0, &err);
    FZ_CHECK(o != NULL, "jansson rejects the error body: %s", err.text);
    FZ_CHECK(json_is_false(json_object_get(o, "success")), "success is not false");
    const char *code = json_string_value(json_object_get(o, "error"));
    const char *msg = json_string_value(json_object_get(o, "message"));
    FZ_CHECK(code != NULL && msg != NULL, "error or message missing");
    if (rc != NULL) {
        FZ_CHECK(strcmp(code, rc->err_code) == 0, "error code %s, expected %s", code, rc->err_code);
        size_t ml = strlen(msg), gl = strlen(rc->err_msg);
        FZ_CHECK(ml <= TC_SERVER_MAX_ERROR_MESSAGE && ml <= gl && memcmp(msg, rc->err_msg, ml) == 0,
                 "message is not a prefix of the one given");
        FZ_CHECK(ml == gl || ml + 3 >= TC_SERVER_MAX_ERROR_MESSAGE,
                 "message cut too short: %zu of %zu bytes", ml, gl);
    }
    json_decref(o);
}

/* K mode: 1 once every answer the handler gave so far is on our side (up to a drop or a
 * "Connection: close", which must then also have closed), so a loaded machine that delays
 * loopback delivery cannot make a quiet loop look like a missing answer. */
static int settled(const fz_conn *c)
{
    size_t pos = 0, i = 0;
    fz_response r;
    while (i < g.nrecs && rec(i)->status > 0 && !rec(i)->aborted) {
        if (!fz_parse_response(c->rx, c->rx_len, &pos, parse_flags(i), &r) || r.truncated)
            return 0;
        if (r.is_interim)
            continue;
        if (r.close || r.until_close)
            return c->eof;
        i++;
    }
    return 1;
}

static void check_exchange(const fz_conn *c, const uint8_t *data, size_t len, char mode)
{
    size_t lines = 0;
    for (size_t k = 0; k < len; k++)
        lines += data[k] == '\n' || data[k] == '\r';
    FZ_CHECK(g.nrecs <= lines, "%zu requests handled from an input with %zu line ends", g.nrecs,
             lines);

    int may_truncate = mode != 'K' && mode != 'T';
    for (size_t i = 0; i < g.nrecs; i++)
        may_truncate |= rec(i)->status == -1; /* a drop (RST) may cut what is still in flight */

    size_t pos = 0, i = 0, finals = 0;
    int closed = 0;
    fz_response r;
    while (1) {
        int expect_body = i < g.nrecs ? !rec(i)->head : 1;
        size_t start = pos;
        if (!fz_parse_response(c->rx, c->rx_len, &pos, parse_flags(i), &r))
            break;
        if (i >= g.nrecs && r.truncated && c->eof) {
            /* The server's own answer (431, 413...) to a request the handler never saw may answer
             * a HEAD: its Content-Length is then announced and no body follows. */
            size_t again = start;
            fz_response head;
            if (fz_parse_response(c->rx, c->rx_len, &again, 0, &head) && !head.truncated &&
                again == c->rx_len) {
                r = head;
                pos = again;
                expect_body = 0;
            }
        }
        FZ_CHECK(!closed, "bytes after a \"Connection: close\" response");
        if (r.is_interim)
            continue;
        finals++;
        int cut = i < g.nrecs && rec(i)->cut;
        /* A cut never looks complete: no last chunk, or a short length. (A body up to the close
         * is cut with a reset, which libuv's client may report as EOF when it comes after data,
         * on POLLHUP: test_server_stream checks that one with a plain socket.) */
        if (cut && expect_body && !r.no_content && !r.until_close)
            FZ_CHECK(r.truncated, "response %zu was cut but looks complete", i);
        FZ_CHECK(!r.truncated || may_truncate || cut || c->rx_dropped > 0,
                 "truncated response (status %d) on a connection closed in an orderly way",
                 r.status);
        FZ_CHECK(!r.until_close || c->eof, "a body up to the close, and the connection is open");
        if (i < g.nrecs) {
            const record *rc = rec(i);
            FZ_CHECK(rc->status == r.status,
                     "response %zu has status %d, the handler gave %d (-1: dropped, 0: not yet)", i,
                     r.status, rc->status);
            /* 204, 304 and 205 carry none of the handler's body (RFC 9110) */
            size_t body_len = r.no_content || r.status == 205 ? 0 : rc->body_len;
            if (!r.truncated && expect_body && !(cut && r.until_close)) {
                if (rc->is_error) {
                    check_error_body(&r, rc);
                } else {
                    FZ_CHECK(r.content_length == body_len &&
                                 (body_len == 0 || memcmp(r.body, rc->body, body_len) == 0),
                             "response %zu: body differs from the handler's (%zu vs %zu bytes)", i,
                             r.content_length, body_len);
                }
            }
            if (!r.truncated && !expect_body)
                FZ_CHECK(rc->is_error || r.content_length == body_len,
                         "HEAD response announces %zu bytes, the handler gave %zu",
                         r.content_length, body_len);
        } else {
            FZ_CHECK(i == g.nrecs, "more responses than requests");
            FZ_CHECK(is_server_error(r.status), "the server's own response has status %d",
                     r.status);
            FZ_CHECK(r.close, "the server's own %d response does not close", r.status);
            if (!r.truncated && expect_body)
                check_error_body(&r, NULL);
        }
        if (r.truncated)
            break;
        closed = r.close;
        i++;
        if (r.until_close)
            break; /* the rest of the bytes was its body */
    }
    FZ_CHECK(finals <= lines + 1, "%zu responses to an input with %zu line ends", finals, lines);
    if (getenv("FUZZ_VERBOSE") != NULL)
        fprintf(stderr, "  mode %c: %zu requests handled, %zu responses, %zu bytes back%s%s\n",
                mode, g.nrecs, finals, c->rx_len, c->eof ? ", server closed" : "",
                c->reset ? " (reset)" : "");
    if (mode == 'K' || mode == 'T') {
        /* The connection stayed open from our side, so every answer given before the first drop,
         * cut or close must be on the wire. */
        int ok = i >= g.nrecs || closed || rec(i)->status == -1 || rec(i)->aborted || rec(i)->cut ||
                 (i > 0 && (rec(i - 1)->status == -1 || rec(i - 1)->cut));
        FZ_CHECK(ok, "response %zu of %zu (status %d) is missing", i, g.nrecs, rec(i)->status);
        if (closed)
            FZ_CHECK(c->eof, "\"Connection: close\" sent but the connection stays open");
    }
}

/* ---- the target ------------------------------------------------------------------------------ */

static void report_held(void);

static void setup(void)
{
    memset(big_body, 'b', sizeof(big_body));
    for (size_t k = 0; k < sizeof(big_body); k += 1000)
        big_body[k] = (char)('0' + k / 1000 % 10);
    tc_server_config cfg;
    tc_server_config_init(&cfg);
    cfg.host = "127.0.0.1";
    cfg.port = 0;
    cfg.max_body = MAX_BODY;
    cfg.max_uri = MAX_URI;
    cfg.max_headers = MAX_HEADERS;
    cfg.header_timeout_ms = HEADER_TIMEOUT_MS;
    cfg.idle_timeout_ms = IDLE_TIMEOUT_MS;
    cfg.body_timeout_ms = BODY_TIMEOUT_MS;
    cfg.handler = on_request;
    cfg.head_filter = head_filter;
    FZ_CHECK(tc_server_new(&g.srv, fz_loop(), &cfg) == 0, "tc_server_new");
    g.port = tc_server_port(g.srv);
    static int registered;
    if (!registered++)
        atexit(report_held);
}

static void on_server_closed(tc_server *srv, void *data)
{
    (void)srv;
    *(int *)data = 1;
}

/* FUZZ_KNOWN_BUGS: a server that keeps a connection after the client closed is a known,
 * reported bug; rather than stop the run, close that server and start a fresh one. */
static void restart_server(void)
{
    static unsigned long held;
    if (held++ == 0)
        fprintf(stderr, "fuzz_server: the server held a connection after the client closed "
                        "(tolerated: FUZZ_KNOWN_BUGS is set; counted at exit)\n");
    int closed = 0;
    tc_server_close(g.srv, on_server_closed, &closed);
    uint64_t deadline = fz_now_ms() + 5000;
    while (!closed) {
        FZ_CHECK(fz_now_ms() < deadline, "tc_server_close did not finish");
        fz_run_once(1);
    }
    g.srv = NULL;
    g.held = held;
}

static void report_held(void)
{
    if (g.held > 0)
        fprintf(stderr,
                "fuzz_server: %lu input(s) left a connection held after the client closed\n",
                g.held);
}

static void reset_records(void)
{
    for (size_t i = 0; i < g.nrecs; i++) {
        free(g.recs[i].body);
        free(g.recs[i].err_code);
        free(g.recs[i].err_msg);
    }
    free(g.recs);
    g.recs = NULL;
    g.nrecs = g.cap = 0;
    g.bigs = 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < PREFIX)
        return 0;
    if (g.srv == NULL)
        setup();
    char mode = (char)data[0];
    size_t len = size - PREFIX;
    const char *bytes = (const char *)data + PREFIX;
    size_t split =
        data[1] >= '0' && data[1] <= '9' ? len * (size_t)(data[1] - '0') / 10 : data[1] % (len + 1);
    g.seed = data[2];

    uint64_t t0 = uv_hrtime();
    fz_conn c;
    fz_conn_open(&c, g.port);
    if (split > 0 && split < len) {
        fz_conn_write(&c, 0, bytes, split);
        fz_run_nowait(); /* let the server see the first part on its own */
        fz_run_nowait();
        fz_conn_write(&c, 1, bytes + split, len - split);
    } else if (len > 0) {
        fz_conn_write(&c, 0, bytes, len);
    }
    if (mode != 'K' && mode != 'T')
        fz_conn_shutdown(&c);

    uint64_t deadline = fz_now_ms() + INPUT_DEADLINE_MS;
    int quiet = 0;
    while (!c.eof) {
        if (fz_run_nowait()) {
            quiet = 0;
            continue;
        }
        if (mode == 'K' && c.writes == 0 && g.timers == 0 &&
            tc_server_requests_in_flight(g.srv) == 0 && ++quiet >= 3) {
            if (settled(&c))
                break;
            fz_run_once(1); /* bytes still in the kernel: wait for them */
        }
        if (g.timers > 0 || mode != 'K')
            fz_run_once(1);
        FZ_CHECK(fz_now_ms() < deadline, "exchange not over after %d ms (mode %c, %zu requests)",
                 INPUT_DEADLINE_MS, mode, g.nrecs);
    }
    check_exchange(&c, (const uint8_t *)bytes, len, mode);

    /* Let every late answer happen before our side closes, so that what follows does not
     * depend on which timer wins. */
    while (g.timers > 0) {
        FZ_CHECK(fz_now_ms() < deadline, "handler timers still pending");
        fz_run_once(1);
    }

    /* Close our side; the server must then release the connection and every request at once
     * (it reads until EOF even while lingering). */
    fz_conn_close(&c);
    int tolerate = FZ_KNOWN_BUGS();
    uint64_t release_by = fz_now_ms() + (tolerate ? HELD_TOLERATED_MS : RELEASE_MS);
    while (tc_server_connections(g.srv) > 0 || tc_server_requests_in_flight(g.srv) > 0) {
        if (fz_now_ms() >= release_by && tolerate) {
            restart_server();
            break;
        }
        FZ_CHECK(fz_now_ms() < release_by,
                 "server still holds %zu connection(s) / %zu request(s) %d ms after the client "
                 "closed",
                 tc_server_connections(g.srv), tc_server_requests_in_flight(g.srv), RELEASE_MS);
        fz_run_once(1);
    }
    if (getenv("FUZZ_VERBOSE") != NULL)
        fprintf(stderr, "  %.2f ms\n", (double)(uv_hrtime() - t0) / 1e6);
    reset_records();
    return 0;
}
