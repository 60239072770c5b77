/*
 * The client tests' fixture (client_fixture.h): the misbehaving test server and the test
 * context. Compiled once into the folder's fixture library; only the cfx_ names are shared.
 */
#include "client_fixture.h"

#define SRV_INPUT_MAX 65536         /* request bytes buffered per connection */
#define HUGE_STREAM_MAX (64u << 20) /* the streaming server stops here whatever happens */
#define HUGE_PIECE 16384

/* ---- the test server ------------------------------------------------------------------------ */

typedef struct sconn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    srv *s;
    struct sconn *prev, *next;
    int id;
    int handles; /* uv handles still open */
    int closing;
    int answering; /* a request is being answered; further input waits */
    int trickle_left;
    int served;    /* requests answered on this connection */
    int die_reset; /* /die-on-reuse: kill it with a reset, not a close */
    int rejected;  /* not HTTP: answered 400, ignoring the rest */
    size_t streamed;
    size_t stream_total; /* /stream: the body's length */
    int stream_chunked;  /* /stream: chunked, else Content-Length (or close-delimited) */
    int stream_close;    /* /stream: close-delimited */
    /* A request body read as it arrives (/sink, /echo-stream): its framing and progress. */
    int body_mode;    /* 0 none, else BODY_SINK or BODY_ECHO */
    int body_chunked; /* chunked, else body_left is the Content-Length left */
    int chunk_state;  /* CH_* */
    size_t body_left; /* Content-Length, or the current chunk's data, left */
    size_t body_total;
    uint32_t body_sum;
    int line_len;   /* bytes of the current chunk-size or trailer line */
    int early;      /* /sink-early: answered before the body was read */
    int reset_seen; /* the client's reset was counted */
    uv_timer_t *pause_timer;
    size_t len;
    char buf[SRV_INPUT_MAX];
} sconn;

enum { BODY_SINK = 1, BODY_ECHO = 2 };
enum { CH_SIZE = 0, CH_EXT, CH_DATA, CH_DATA_CR, CH_DATA_LF, CH_TRAILER };

enum after_write {
    AFTER_NONE,
    AFTER_DONE,
    AFTER_CLOSE,
    AFTER_RESET,
    AFTER_STREAM,
    AFTER_PARTIAL,
    AFTER_PATTERN
};

typedef struct swrite {
    uv_write_t req;
    sconn *sc;
    int after;
    char data[];
} swrite;

static void sc_process(sconn *sc);
static void sc_pause_closed(uv_handle_t *h);

static void srv_handle_closed(uv_handle_t *h)
{
    srv *s = h->data;
    s->open_handles--;
}

static void sc_handle_closed(uv_handle_t *h)
{
    sconn *sc = h->data;
    srv *s = sc->s;
    s->open_handles--;
    if (--sc->handles > 0)
        return;
    if (sc->prev)
        sc->prev->next = sc->next;
    else
        s->conns = sc->next;
    if (sc->next)
        sc->next->prev = sc->prev;
    free(sc);
}

static void sc_request_done(sconn *sc)
{
    if (!sc->answering)
        return;
    sc->answering = 0;
    sc->s->active--;
    if (sc->s->shared_active)
        (*sc->s->shared_active)--;
}

static void sc_close(sconn *sc, int reset)
{
    if (sc->closing)
        return;
    sc->closing = 1;
    if (sc->pause_timer != NULL) {
        uv_close((uv_handle_t *)sc->pause_timer, sc_pause_closed);
        sc->pause_timer = NULL;
    }
    sc_request_done(sc);
    sc->s->conns_open--;
    uv_timer_stop(&sc->timer);
    if (reset)
        uv_tcp_close_reset(&sc->tcp, sc_handle_closed);
    else
        uv_close((uv_handle_t *)&sc->tcp, sc_handle_closed);
    uv_close((uv_handle_t *)&sc->timer, sc_handle_closed);
}

static void sc_stream_more(sconn *sc);
static void sc_pattern_more(sconn *sc);

static void sc_written(uv_write_t *req, int status)
{
    swrite *w = tc__container_of(req, swrite, req);
    sconn *sc = w->sc;
    int after = w->after;
    free(w);
    if (status == UV_ECONNRESET && !sc->reset_seen) {
        /* The client reset the connection while this server wrote to it: the write hears it
         * first, and the read after that sees only the end. */
        sc->reset_seen = 1;
        sc->s->peer_reset++;
    }
    if (status < 0 || sc->closing)
        return;
    switch (after) {
    case AFTER_DONE:
        sc_request_done(sc);
        sc_process(sc);
        break;
    case AFTER_CLOSE:
        sc_close(sc, 0);
        break;
    case AFTER_RESET:
        sc_close(sc, 1);
        break;
    case AFTER_STREAM:
        sc_stream_more(sc);
        break;
    case AFTER_PARTIAL:
        sc->s->partial_sent++;
        break;
    case AFTER_PATTERN:
        sc_pattern_more(sc);
        break;
    default:
        break;
    }
}

static void sc_write(sconn *sc, const char *data, size_t len, int after)
{
    swrite *w = malloc(sizeof(*w) + len);
    assert_non_null(w);
    memcpy(w->data, data, len);
    w->sc = sc;
    w->after = after;
    uv_buf_t b = uv_buf_init(w->data, (unsigned)len);
    if (uv_write(&w->req, (uv_stream_t *)&sc->tcp, &b, 1, sc_written) != 0) {
        free(w);
        sc_close(sc, 0);
    }
}

static void sc_printf(sconn *sc, int after, const char *fmt, ...)
{
    char tmp[8192];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    assert_true(n > 0 && (size_t)n < sizeof(tmp));
    sc_write(sc, tmp, (size_t)n, after);
}

/* A complete keep-alive response with a Content-Length body. */
static void sc_respond(sconn *sc, int status, const char *body, size_t body_len)
{
    char head[512];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d X\r\nContent-Type: text/plain\r\nX-Conn: %d\r\n"
                     "Content-Length: %zu\r\n\r\n",
                     status, sc->id, body_len);
    char *all = malloc((size_t)n + body_len);
    assert_non_null(all);
    memcpy(all, head, (size_t)n);
    memcpy(all + n, body, body_len);
    sc_write(sc, all, (size_t)n + body_len, AFTER_DONE);
    free(all);
}

static long query_num(const char *path, const char *name, long dflt)
{
    const char *q = strchr(path, '?');
    size_t nlen = strlen(name);
    while (q != NULL) {
        q++;
        if (strncmp(q, name, nlen) == 0 && q[nlen] == '=')
            return strtol(q + nlen + 1, NULL, 10);
        q = strchr(q, '&');
    }
    return dflt;
}

static void sc_on_delay(uv_timer_t *t)
{
    sconn *sc = t->data;
    sc_respond(sc, 200, "late", 4);
}

static void sc_on_die(uv_timer_t *t)
{
    sconn *sc = t->data;
    sc_close(sc, sc->die_reset);
}

static void sc_on_close_idle(uv_timer_t *t)
{
    sconn *sc = t->data;
    sc_close(sc, 0); /* the idle keep-alive connection, as a server's idle timeout does */
}

static void sc_on_trickle(uv_timer_t *t)
{
    sconn *sc = t->data;
    sc_write(sc, "t", 1, --sc->trickle_left == 0 ? AFTER_DONE : AFTER_NONE);
    if (sc->trickle_left == 0)
        uv_timer_stop(t);
}

static void sc_stream_more(sconn *sc)
{
    if (sc->streamed >= HUGE_STREAM_MAX) {
        sc_write(sc, "0\r\n\r\n", 5, AFTER_DONE);
        return;
    }
    static char piece[HUGE_PIECE + 32];
    int n = snprintf(piece, sizeof(piece), "%x\r\n", HUGE_PIECE);
    memset(piece + n, 'h', HUGE_PIECE);
    memcpy(piece + n + HUGE_PIECE, "\r\n", 2);
    sc->streamed += HUGE_PIECE;
    sc->s->huge_streamed += HUGE_PIECE;
    sc_write(sc, piece, (size_t)n + HUGE_PIECE + 2, AFTER_STREAM);
}

/* /stream: the next piece of the pattern body (cfx_pattern), written when the last one is out,
 * so that the server goes exactly as fast as the client reads. */
static void sc_pattern_more(sconn *sc)
{
    size_t left = sc->stream_total - sc->streamed;
    if (left == 0) {
        if (sc->stream_close)
            sc_close(sc, 0);
        else if (sc->stream_chunked)
            sc_write(sc, "0\r\n\r\n", 5, AFTER_DONE);
        else
            sc_request_done(sc), sc_process(sc);
        return;
    }
    static char piece[HUGE_PIECE + 32];
    size_t n = left < HUGE_PIECE ? left : HUGE_PIECE;
    int k = sc->stream_chunked ? snprintf(piece, sizeof(piece), "%zx\r\n", n) : 0;
    cfx_pattern(piece + k, sc->streamed, n);
    size_t len = (size_t)k + n;
    if (sc->stream_chunked) {
        memcpy(piece + len, "\r\n", 2);
        len += 2;
    }
    sc->streamed += n;
    sc->s->huge_streamed += n;
    sc_write(sc, piece, len, AFTER_PATTERN);
}

static void sc_on_pattern_start(uv_timer_t *t)
{
    sc_pattern_more(t->data);
}

/* ---- request bodies read as they arrive ------------------------------------------------------ */

static void sc_body_piece(sconn *sc, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        sc->body_sum = sc->body_sum * 31 + (unsigned char)p[i];
    sc->body_total += n;
    sc->s->body_bytes += n;
    if (sc->body_mode == BODY_ECHO && n > 0) {
        char line[24];
        int k = snprintf(line, sizeof(line), "%zx\r\n", n);
        sc_write(sc, line, (size_t)k, AFTER_NONE);
        sc_write(sc, p, n, AFTER_NONE);
        sc_write(sc, "\r\n", 2, AFTER_NONE);
    }
}

static void sc_body_done(sconn *sc)
{
    srv *s = sc->s;
    int mode = sc->body_mode;
    sc->body_mode = 0;
    s->bodies_done++;
    if (mode == BODY_ECHO) {
        sc_write(sc, "0\r\n\r\n", 5, AFTER_DONE);
        return;
    }
    if (sc->early) { /* answered already */
        sc_request_done(sc);
        return;
    }
    char b[64];
    int n = snprintf(b, sizeof(b), "n=%zu sum=%u", sc->body_total, sc->body_sum);
    sc_respond(sc, 200, b, (size_t)n);
}

/* Consumes request body bytes from the buffer by its framing; what follows the body stays for
 * the next request. Returns 1 when the body has ended. */
static int sc_body_consume(sconn *sc)
{
    size_t at = 0;
    int done = 0;
    while (at < sc->len && !done) {
        char ch = sc->buf[at];
        if (!sc->body_chunked) {
            size_t n = sc->len - at < sc->body_left ? sc->len - at : sc->body_left;
            sc_body_piece(sc, sc->buf + at, n);
            at += n;
            sc->body_left -= n;
            done = sc->body_left == 0;
            continue;
        }
        switch (sc->chunk_state) {
        case CH_SIZE:
        case CH_EXT:
            at++;
            if (ch == '\n') {
                sc->chunk_state = sc->body_left > 0 ? CH_DATA : CH_TRAILER;
                sc->line_len = 0;
            } else if (ch == ';' || ch == ' ' || ch == '\r') {
                sc->chunk_state = CH_EXT;
            } else if (sc->chunk_state == CH_SIZE) {
                int v = (ch >= '0' && ch <= '9') ? ch - '0' : (ch | 0x20) - 'a' + 10;
                assert_true(v >= 0 && v < 16);
                sc->body_left = sc->body_left * 16 + (size_t)v;
            }
            break;
        case CH_DATA: {
            size_t n = sc->len - at < sc->body_left ? sc->len - at : sc->body_left;
            sc_body_piece(sc, sc->buf + at, n);
            at += n;
            sc->body_left -= n;
            if (sc->body_left == 0)
                sc->chunk_state = CH_DATA_CR;
            break;
        }
        case CH_DATA_CR:
        case CH_DATA_LF:
            at++;
            if (ch == '\n')
                sc->chunk_state = CH_SIZE;
            break;
        case CH_TRAILER: /* lines up to an empty one */
            at++;
            if (ch == '\n') {
                done = sc->line_len == 0;
                sc->line_len = 0;
            } else if (ch != '\r') {
                sc->line_len++;
            }
            break;
        default:
            break;
        }
    }
    memmove(sc->buf, sc->buf + at, sc->len - at);
    sc->len -= at;
    return done;
}

static void sc_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b);
static void sc_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b);

static void sc_body(sconn *sc)
{
    if (sc->pause_timer != NULL)
        return; /* /sink?pause_ms: not reading yet */
    if (sc_body_consume(sc)) {
        sc_body_done(sc);
        sc_process(sc);
    }
}

static void sc_pause_closed(uv_handle_t *h)
{
    free(h);
}

static void sc_on_resume(uv_timer_t *t)
{
    sconn *sc = t->data;
    uv_close((uv_handle_t *)t, sc_pause_closed);
    sc->pause_timer = NULL;
    if (sc->closing)
        return;
    assert_int_equal(uv_read_start((uv_stream_t *)&sc->tcp, sc_alloc, sc_read), 0);
    sc_body(sc);
}

/* Starts reading a request body as it arrives: /sink answers its length and checksum at its end,
 * /echo-stream sends each piece back as a chunk at once; /sink?pause_ms=N reads nothing of it
 * for N ms first; /sink-early answers before reading it, then reads and drops it. */
static void sc_body_start(sconn *sc, const char *path, const char *head, size_t hlen)
{
    const char *te = strstr(head, "\r\nTransfer-Encoding: chunked");
    const char *cl = strcasestr(head, "\r\nContent-Length:");
    sc->body_chunked = te != NULL && te < head + hlen;
    sc->body_left = sc->body_chunked || cl == NULL ? 0 : (size_t)strtoul(cl + 18, NULL, 10);
    sc->chunk_state = CH_SIZE;
    sc->line_len = 0;
    sc->body_total = 0;
    sc->body_sum = 0;
    sc->body_mode = strncmp(path, "/echo-stream", 12) == 0 ? BODY_ECHO : BODY_SINK;
    if (sc->body_mode == BODY_ECHO)
        sc_printf(sc, AFTER_NONE, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    sc->early = strncmp(path, "/sink-early", 11) == 0;
    if (sc->early) /* the body is read and dropped afterwards */
        sc_printf(sc, AFTER_NONE, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nearly");
    long pause_ms = query_num(path, "pause_ms", 0);
    if (pause_ms > 0) {
        uv_read_stop((uv_stream_t *)&sc->tcp);
        sc->pause_timer = malloc(sizeof(uv_timer_t));
        assert_non_null(sc->pause_timer);
        assert_int_equal(uv_timer_init(sc->s->loop, sc->pause_timer), 0);
        sc->pause_timer->data = sc;
        assert_int_equal(uv_timer_start(sc->pause_timer, sc_on_resume, (uint64_t)pause_ms, 0), 0);
    }
    if (!sc->body_chunked && sc->body_left == 0) {
        sc_body_done(sc);
        return;
    }
    sc_body(sc);
}

/* Answers one request according to its path. */
static void sc_route(sconn *sc, const char *method, const char *path, const char *body,
                     size_t body_len)
{
    if (strncmp(path, "/stream", 7) == 0 && (path[7] == '\0' || path[7] == '?')) {
        /* ?n=BYTES of the pattern body; &chunked=1, or &close=1 (until the close), else with
         * Content-Length; &delay=MS between the head and the body */
        sc->stream_total = (size_t)query_num(path, "n", 1000);
        sc->stream_chunked = query_num(path, "chunked", 0) != 0;
        sc->stream_close = query_num(path, "close", 0) != 0;
        sc->streamed = 0;
        if (sc->stream_chunked)
            sc_printf(sc, AFTER_NONE,
                      "HTTP/1.1 200 OK\r\nX-Conn: %d\r\nTransfer-Encoding: chunked\r\n\r\n",
                      sc->id);
        else if (sc->stream_close)
            sc_printf(sc, AFTER_NONE, "HTTP/1.1 200 OK\r\nX-Conn: %d\r\nConnection: close\r\n\r\n",
                      sc->id);
        else
            sc_printf(sc, AFTER_NONE,
                      "HTTP/1.1 200 OK\r\nX-Conn: %d\r\nX-Two: a\r\nX-Two: b\r\n"
                      "Content-Length: %zu\r\n\r\n",
                      sc->id, sc->stream_total);
        long delay = query_num(path, "delay", 0);
        if (strcmp(method, "HEAD") == 0) /* the head alone */
            sc_request_done(sc), sc_process(sc);
        else if (delay > 0)
            uv_timer_start(&sc->timer, sc_on_pattern_start, (uint64_t)delay, 0);
        else
            sc_pattern_more(sc);
    } else if (strcmp(path, "/no-content") == 0) {
        sc_printf(sc, AFTER_DONE, "HTTP/1.1 204 No Content\r\n\r\n");
    } else if (strcmp(path, "/not-modified") == 0) {
        sc_printf(sc, AFTER_DONE, "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n");
    } else if (strcmp(path, "/stall") == 0) {
        /* a head and the start of a body, then nothing */
        sc_printf(sc, AFTER_NONE, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nstart");
    } else if (strcmp(path, "/cut-chunked") == 0) {
        sc_printf(sc, AFTER_CLOSE,
                  "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n");
    } else if (strcmp(path, "/bad-chunk") == 0) {
        sc_printf(sc, AFTER_CLOSE,
                  "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\nzz\r\n");
    } else if (strncmp(path, "/ok", 3) == 0) {
        long n = query_num(path, "n", -1);
        if (n < 0) {
            sc_respond(sc, 200, "ok", 2);
        } else {
            char *b = malloc((size_t)n + 1);
            assert_non_null(b);
            memset(b, 'x', (size_t)n);
            sc_respond(sc, 200, b, (size_t)n);
            free(b);
        }
    } else if (strncmp(path, "/status", 7) == 0) {
        sc_respond(sc, (int)query_num(path, "code", 200), "status", 6);
    } else if (strcmp(path, "/chunked") == 0) {
        sc_printf(sc, AFTER_DONE,
                  "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                  "3\r\nhel\r\n3\r\nlo \r\n5\r\nworld\r\n0\r\nX-Trailer: t\r\n\r\n");
    } else if (strncmp(path, "/delay", 6) == 0) {
        uv_timer_start(&sc->timer, sc_on_delay, (uint64_t)query_num(path, "ms", 100), 0);
    } else if (strcmp(path, "/reset") == 0) {
        sc_close(sc, 1);
    } else if (strcmp(path, "/reset-mid") == 0 || strcmp(path, "/close-mid") == 0) {
        char b[1100];
        int n = snprintf(b, sizeof(b), "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n");
        memset(b + n, 'm', 1000);
        sc_write(sc, b, (size_t)n + 1000, path[1] == 'r' ? AFTER_RESET : AFTER_CLOSE);
    } else if (strcmp(path, "/garbage") == 0) {
        sc_printf(sc, AFTER_CLOSE, "this is not http at all\r\n\r\n");
    } else if (strcmp(path, "/badstatus") == 0) {
        sc_printf(sc, AFTER_CLOSE, "HTTP/1.1 2x0 What\r\nContent-Length: 0\r\n\r\n");
    } else if (strcmp(path, "/huge") == 0) {
        sc_printf(sc, AFTER_NONE, "HTTP/1.1 200 OK\r\nContent-Length: 104857600\r\n\r\n");
    } else if (strcmp(path, "/huge-chunked") == 0) {
        sc_printf(sc, AFTER_STREAM,
                  "HTTP/1.1 200 OK\r\nX-Conn: %d\r\nTransfer-Encoding: chunked\r\n\r\n", sc->id);
    } else if (strcmp(path, "/bigheaders") == 0) {
        static char big[120 * 1024];
        size_t n = (size_t)snprintf(big, sizeof(big), "HTTP/1.1 200 OK\r\n");
        for (int i = 0; i < 100; i++) {
            n += (size_t)snprintf(big + n, sizeof(big) - n, "X-Filler-%03d: ", i);
            memset(big + n, 'f', 1000);
            n += 1000;
            memcpy(big + n, "\r\n", 2);
            n += 2;
        }
        n += (size_t)snprintf(big + n, sizeof(big) - n, "Content-Length: 2\r\n\r\nok");
        sc_write(sc, big, n, AFTER_DONE);
    } else if (strcmp(path, "/trickle") == 0) {
        sc->trickle_left = 100;
        sc_printf(sc, AFTER_NONE, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n");
        uv_timer_start(&sc->timer, sc_on_trickle, 20, 20);
    } else if (strcmp(path, "/hold") == 0) {
        /* never answer */
    } else if (strcmp(path, "/slow-body") == 0) {
        sc_printf(sc, AFTER_PARTIAL, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789");
    } else if (strcmp(path, "/echo") == 0) {
        char b[4096];
        int n =
            snprintf(b, sizeof(b), "%s|%.*s|%s", method, (int)body_len, body, sc->s->last_xtest);
        sc_respond(sc, 200, b, (size_t)n);
    } else if (strcmp(path, "/partial-head") == 0) {
        sc_printf(sc, AFTER_PARTIAL, "HTTP/1.1 200 OK\r\nContent-Le");
    } else if (strcmp(path, "/close-idle") == 0) {
        sc_respond(sc, 200, "bye soon", 8);
        uv_timer_start(&sc->timer, sc_on_close_idle, 30, 0);
    } else if (strcmp(path, "/interim") == 0) {
        sc_printf(sc, AFTER_DONE,
                  "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n"
                  "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal");
    } else if (strcmp(path, "/close") == 0) {
        sc_printf(sc, AFTER_CLOSE,
                  "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\nbye");
    } else if (strcmp(path, "/keep-alive-1s") == 0) {
        /* announces a 1 s idle timeout: the client closes first, after 500 ms idle */
        sc_printf(sc, AFTER_DONE,
                  "HTTP/1.1 200 OK\r\nKeep-Alive: timeout=1, max=100\r\nContent-Length: 2\r\n"
                  "\r\nka");
    } else if (strcmp(path, "/http10") == 0) {
        sc_printf(sc, AFTER_CLOSE, "HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\nold!");
    } else if (strcmp(path, "/eof-body") == 0) {
        sc_printf(sc, AFTER_CLOSE, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil eof");
    } else if (strcmp(path, "/chunked-ext") == 0) {
        sc_printf(
            sc, AFTER_DONE,
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            "4;name=value;x\r\nab\r\n\r\n2 ; q=\"s\"\r\ncd\r\n0\r\nX-T1: a\r\nX-T2: b\r\n\r\n");
    } else if (strncmp(path, "/die-on-reuse", 13) == 0) {
        /* Answers the first request of a connection; a later one kills the connection unanswered
         * (closed, or reset with ?reset=1), at once or ?ms=N after it arrived. */
        sc->die_reset = query_num(path, "reset", 0) != 0;
        long ms = query_num(path, "ms", 0);
        if (sc->served == 1)
            sc_respond(sc, 200, "first", 5);
        else if (ms > 0)
            uv_timer_start(&sc->timer, sc_on_die, (uint64_t)ms, 0);
        else
            sc_close(sc, sc->die_reset); /* as a server that timed the idle connection out now */
    } else if (strncmp(path, "/host", 5) == 0 && (path[5] == '\0' || path[5] == '?')) {
        /* which server answered, the Host header it got, and the request target */
        char b[1400];
        int n = snprintf(b, sizeof(b), "%s|%s|%s", sc->s->name, sc->s->last_host, path);
        sc_respond(sc, 200, b, (size_t)n);
    } else if (strcmp(path, "/redirect") == 0) {
        sc_printf(sc, AFTER_DONE,
                  "HTTP/1.1 302 Found\r\nLocation: /ok\r\nContent-Length: 0\r\n\r\n");
    } else {
        sc_respond(sc, 404, "nope", 4);
    }
}

static const char *find_header(const char *head, size_t hlen, const char *name)
{
    size_t nlen = strlen(name);
    for (const char *p = head; p && p < head + hlen; p = strstr(p, "\r\n")) {
        p += (p == head) ? 0 : 2;
        if (strncasecmp(p, name, nlen) == 0 && p[nlen] == ':')
            return p + nlen + 1;
    }
    return NULL;
}

/* Parses and answers buffered requests, one at a time. */
static void sc_process(sconn *sc)
{
    srv *s = sc->s;
    while (!sc->answering && !sc->closing && sc->body_mode == 0) {
        char *end = memmem(sc->buf, sc->len, "\r\n\r\n", 4);
        if (end == NULL)
            return;
        size_t hlen = (size_t)(end - sc->buf) + 4;
        const char *cl = find_header(sc->buf, hlen, "content-length");
        size_t body_len = cl ? (size_t)strtoul(cl, NULL, 10) : 0;
        char first[1100];
        (void)sscanf(sc->buf, "%*15s %1023s", first);
        int streams = strncmp(first, "/sink", 5) == 0 || strncmp(first, "/echo-stream", 12) == 0;
        if (!streams && sc->len < hlen + body_len)
            return;
        char method[16] = "", path[1024] = "", body[2048] = "";
        sscanf(sc->buf, "%15s %1023s", method, path);
        size_t keep = hlen < sizeof(s->last_head) - 1 ? hlen : sizeof(s->last_head) - 1;
        memcpy(s->last_head, sc->buf, keep);
        s->last_head[keep] = '\0';
        if (strncmp(path, "/sink", 5) == 0 || strncmp(path, "/echo-stream", 12) == 0) {
            /* a body read as it arrives, whatever its size and framing */
            snprintf(s->last_method, sizeof(s->last_method), "%s", method);
            char head[4096];
            size_t hk = hlen < sizeof(head) - 1 ? hlen : sizeof(head) - 1;
            memcpy(head, sc->buf, hk);
            head[hk] = '\0';
            memmove(sc->buf, sc->buf + hlen, sc->len - hlen);
            sc->len -= hlen;
            sc->answering = 1;
            sc->served++;
            s->requests++;
            if (++s->active > s->active_max)
                s->active_max = s->active;
            sc_body_start(sc, path, head, hk);
            continue;
        }
        const char *xt = find_header(sc->buf, hlen, "x-test");
        s->last_xtest[0] = '\0';
        if (xt)
            sscanf(xt, " %63[^\r\n]", s->last_xtest);
        const char *host = find_header(sc->buf, hlen, "host");
        s->last_host[0] = '\0';
        if (host)
            sscanf(host, " %255[^\r\n]", s->last_host);
        snprintf(s->last_method, sizeof(s->last_method), "%s", method);
        size_t bl = body_len < sizeof(body) ? body_len : sizeof(body) - 1;
        memcpy(body, sc->buf + hlen, bl);
        memmove(sc->buf, sc->buf + hlen + body_len, sc->len - hlen - body_len);
        sc->len -= hlen + body_len;

        sc->answering = 1;
        sc->served++;
        s->requests++;
        if (++s->active > s->active_max)
            s->active_max = s->active;
        if (s->shared_active && ++*s->shared_active > *s->shared_active_max)
            *s->shared_active_max = *s->shared_active;
        sc_route(sc, method, path, body, bl);
    }
}

static void sc_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    sconn *sc = h->data;
    (void)suggested;
    *b = uv_buf_init(sc->buf + sc->len, (unsigned)(sizeof(sc->buf) - sc->len));
}

static void sc_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b)
{
    sconn *sc = st->data;
    (void)b;
    if (nread < 0) {
        if (!sc->closing) {
            sc->s->peer_closed++;
            if (nread == UV_ECONNRESET && !sc->reset_seen)
                sc->s->peer_reset++;
            sc_close(sc, 0);
        }
        return;
    }
    sc->len += (size_t)nread;
    if (sc->rejected)
        return;
    if (sc->body_mode != 0) {
        sc_body(sc);
        return;
    }
    if (sc->len > 0 && (unsigned char)sc->buf[0] == 0x16 && !sc->answering) {
        /* A TLS ClientHello on this plain port: answer like a real HTTP server would. */
        sc->rejected = 1;
        sc_printf(sc, AFTER_CLOSE, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        return;
    }
    if (sc->len >= 12 && strncmp(sc->buf, "POST /early ", 12) == 0 &&
        memmem(sc->buf, sc->len, "\r\n\r\n", 4) != NULL) {
        /* Answers as soon as the head is in, then stops reading: the client's body write
         * stays pending while the answer arrives. */
        sc->s->requests++;
        sc->rejected = 1;
        uv_read_stop((uv_stream_t *)&sc->tcp);
        sc_printf(sc, AFTER_NONE, "HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\n\r\n");
        return;
    }
    sc_process(sc);
    if (sc->len == sizeof(sc->buf) && sc->body_mode == 0 && !sc->closing)
        sc_close(sc, 1); /* a request that does not fit */
}

static void srv_on_connection(uv_stream_t *l, int status)
{
    srv *s = l->data;
    assert_int_equal(status, 0);
    sconn *sc = calloc(1, sizeof(*sc));
    assert_non_null(sc);
    sc->s = s;
    sc->id = ++s->next_id;
    assert_int_equal(uv_tcp_init(s->loop, &sc->tcp), 0);
    assert_int_equal(uv_timer_init(s->loop, &sc->timer), 0);
    sc->tcp.data = sc;
    sc->timer.data = sc;
    sc->handles = 2;
    s->open_handles += 2;
    sc->next = s->conns;
    if (s->conns)
        s->conns->prev = sc;
    s->conns = sc;
    assert_int_equal(uv_accept(l, (uv_stream_t *)&sc->tcp), 0);
    uv_tcp_nodelay(&sc->tcp, 1);
    s->conns_total++;
    if (++s->conns_open > s->conns_max)
        s->conns_max = s->conns_open;
    assert_int_equal(uv_read_start((uv_stream_t *)&sc->tcp, sc_alloc, sc_read), 0);
}

int cfx_srv_start_at(srv *s, uv_loop_t *loop, const char *ip, int port)
{
    memset(s, 0, sizeof(*s));
    struct sockaddr_storage a;
    if (uv_ip4_addr(ip, port, (struct sockaddr_in *)&a) != 0 &&
        uv_ip6_addr(ip, port, (struct sockaddr_in6 *)&a) != 0)
        return UV_EINVAL;
    assert_int_equal(uv_tcp_init(loop, &s->listener), 0);
    s->listener.data = s;
    int err = uv_tcp_bind(&s->listener, (const struct sockaddr *)&a, 0);
    if (err == 0)
        err = uv_listen((uv_stream_t *)&s->listener, 1024, srv_on_connection);
    if (err != 0) {
        /* not started: closed here, and s stays as if it never was (cfx_finish skips it) */
        uv_close((uv_handle_t *)&s->listener, NULL);
        uv_run(loop, UV_RUN_NOWAIT);
        memset(s, 0, sizeof(*s));
        return err;
    }
    s->loop = loop;
    s->open_handles = 1;
    snprintf(s->name, sizeof(s->name), "%s", ip);
    struct sockaddr_storage got;
    int len = sizeof(got);
    assert_int_equal(uv_tcp_getsockname(&s->listener, (struct sockaddr *)&got, &len), 0);
    s->port = ntohs(((struct sockaddr_in *)&got)->sin_port); /* the same offset in sin6 */
    return 0;
}

void cfx_srv_start(srv *s, uv_loop_t *loop)
{
    assert_int_equal(cfx_srv_start_at(s, loop, "127.0.0.1", 0), 0);
}

static void srv_close(srv *s)
{
    if (s->loop == NULL)
        return;
    uv_close((uv_handle_t *)&s->listener, srv_handle_closed);
    for (sconn *sc = s->conns; sc; sc = sc->next)
        sc_close(sc, 0);
}

/* ---- the test context ----------------------------------------------------------------------- */

static void on_tick(uv_timer_t *t)
{
    (void)t;
}

tc_client_engine cfx_engine = TC_CLIENT_ENGINE_AUTO;

tctx *cfx_new(const tc_client_config *given)
{
    tc_client_config cfg;
    if (given != NULL)
        cfg = *given;
    else
        tc_client_config_init(&cfg);
    cfg.engine = cfx_engine;
    tctx *t = calloc(1, sizeof(*t));
    assert_non_null(t);
    assert_int_equal(uv_loop_init(&t->loop), 0);
    assert_int_equal(uv_timer_init(&t->loop, &t->tick), 0);
    assert_int_equal(uv_timer_start(&t->tick, on_tick, 20, 20), 0);
    t->started_ms = uv_now(&t->loop);
    cfx_srv_start(&t->s, &t->loop);
    assert_int_equal(tc_client_new(&t->client, &t->loop, &cfg), 0);
    return t;
}

tctx *cfx_new_pool(size_t max_connections, size_t max_per_host)
{
    tc_client_config cfg;
    tc_client_config_init(&cfg);
    if (max_connections > 0)
        cfg.max_connections = max_connections;
    cfg.max_per_host = max_per_host;
    return cfx_new(&cfg);
}

const char *cfx_url(tctx *t, srv *s, const char *path)
{
    snprintf(t->url, sizeof(t->url), "http://127.0.0.1:%d%s", s->port, path);
    return t->url;
}

int cfx_run_until_count(tctx *t, const int *counter, int n, uint64_t limit_ms)
{
    uint64_t start = uv_hrtime();
    while (*counter < n && cfx_elapsed_ms(start) < (double)limit_ms)
        uv_run(&t->loop, UV_RUN_ONCE);
    return *counter;
}

int cfx_run_until_flag(tctx *t, const int *flag, uint64_t limit_ms)
{
    return cfx_run_until_count(t, flag, 1, limit_ms);
}

int cfx_run_until_done(tctx *t, tc_future *f, uint64_t limit_ms)
{
    uint64_t start = uv_hrtime();
    while (!tc_future_done(f) && cfx_elapsed_ms(start) < (double)limit_ms)
        uv_run(&t->loop, UV_RUN_ONCE);
    return tc_future_done(f);
}

void cfx_run_for(tctx *t, uint64_t ms)
{
    uint64_t start = uv_hrtime();
    while (cfx_elapsed_ms(start) < (double)ms)
        uv_run(&t->loop, UV_RUN_ONCE);
}

void cfx_on_client_closed(tc_client *c, void *data)
{
    tctx *t = data;
    assert_ptr_equal(c, t->client);
    t->client_closed++;
}

void cfx_finish(tctx *t)
{
    if (t->client != NULL && !t->client_closed)
        tc_client_close(t->client, cfx_on_client_closed, t);
    srv_close(&t->s);
    srv_close(&t->s2);
    uv_close((uv_handle_t *)&t->tick, NULL);
    uint64_t start = uv_hrtime();
    while (uv_run(&t->loop, UV_RUN_NOWAIT) != 0 && cfx_elapsed_ms(start) < 10000)
        uv_run(&t->loop, UV_RUN_ONCE);
    assert_int_equal(t->client_closed, 1);
    assert_int_equal(t->s.open_handles, 0);
    assert_int_equal(t->s2.open_handles, 0);
    assert_int_equal(uv_loop_close(&t->loop), 0);
    free(t);
}

tc_future *cfx_get(tctx *t, srv *s, const char *path, uint64_t timeout_ms)
{
    tc_client_request req;
    memset(&req, 0, sizeof(req));
    req.url = cfx_url(t, s, path);
    req.timeout_ms = timeout_ms;
    tc_future *f = NULL;
    assert_int_equal(tc_client_request_start(&f, t->client, &req), 0);
    assert_non_null(f);
    return f;
}

const tc_response *cfx_expect_response(tctx *t, tc_future *f, int status)
{
    assert_true(cfx_run_until_done(t, f, 10000));
    if (tc_future_state_of(f) != TC_FUTURE_FULFILLED)
        fail_msg("expected a response, got %s: %s", tc_err_name(tc_future_error(f)),
                 tc_future_message(f));
    const tc_response *r = tc_future_value(f);
    assert_non_null(r);
    assert_int_equal(r->status, status);
    return r;
}

void cfx_expect_error(tctx *t, tc_future *f, int err)
{
    assert_true(cfx_run_until_done(t, f, 10000));
    if (tc_future_state_of(f) != TC_FUTURE_REJECTED || tc_future_error(f) != err)
        fail_msg("expected %s, got state %d %s: %s", tc_err_name(err), tc_future_state_of(f),
                 tc_err_name(tc_future_error(f)), tc_future_message(f));
    assert_true(strlen(tc_future_message(f)) > 0);
}

void cfx_expect_stats_settled(tctx *t)
{
    tc_client_stats st;
    tc_client_get_stats(t->client, &st);
    assert_int_equal(st.in_flight, 0);
    assert_int_equal(st.started, st.completed + st.failed + st.cancelled);
}

int cfx_loopback_socket(int backlog, struct sockaddr_in *addr)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    memset(addr, 0, sizeof(*addr));
    addr->sin_family = AF_INET;
    addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)addr, sizeof(*addr)), 0);
    if (backlog >= 0)
        assert_int_equal(listen(fd, backlog), 0);
    socklen_t alen = sizeof(*addr);
    assert_int_equal(getsockname(fd, (struct sockaddr *)addr, &alen), 0);
    return fd;
}

void cfx_pattern(char *dst, size_t offset, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = (char)('a' + (offset + i) % 26);
}

int cfx_pattern_check(const char *p, size_t offset, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != (char)('a' + (offset + i) % 26))
            return 0;
    return 1;
}

double cfx_elapsed_ms(uint64_t start_ns)
{
    return (double)(uv_hrtime() - start_ns) / 1e6;
}

int cfx_run_on_both_engines(const struct CMUnitTest *tests, size_t n)
{
    static const struct {
        const char *banner, *group;
        tc_client_engine engine;
    } runs[] = {{"== native HTTP/1.1 engine\n", "native", TC_CLIENT_ENGINE_AUTO},
                {"== libcurl engine\n", "curl", TC_CLIENT_ENGINE_CURL}};
    int failed = 0;
    for (size_t i = 0; i < sizeof(runs) / sizeof(runs[0]); i++) {
        print_message("%s", runs[i].banner);
        cfx_engine = runs[i].engine;
        /* what cmocka_run_group_tests_name expands to, for an array passed by pointer */
        failed += _cmocka_run_group_tests(runs[i].group, tests, n, NULL, NULL);
    }
    return failed;
}
