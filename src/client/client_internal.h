/*
 * What the public client (client.c) shares with its two engines: the native HTTP/1.1 engine
 * (client_native.c) and the libcurl glue (client_curl.c). Not installed.
 *
 * The split: client.c owns every request's life outside the wire (admission into the pool, the
 * FIFO queue, the deadline heap, stats, completion of futures); an engine owns the wire (sockets,
 * protocol). client.c decides which engine carries a request when it starts, admits it when a
 * connection slot is free, and then calls the engine's start. The engine reports back exactly
 * once with tc__creq_succeed or tc__creq_fail, unless client.c aborted it first with the
 * engine's abort (cancellation, deadline, close), after which the engine never reports.
 */
#ifndef TAILCUT_CLIENT_INTERNAL_H
#define TAILCUT_CLIENT_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "base/buf.h"
#include "base/clock.h"
#include "base/heap.h"
#include "base/list.h"
#include "base/table.h"
#include "http/h1_parse.h"
#include "tailcut/client.h"
#include "tailcut/version.h"

/* Limits on what the network can make us store. */
#define TC__CLIENT_MAX_HEADER_BYTES TC__H1_MAX_HEADER_BYTES /* response header block */
#define TC__CLIENT_MAX_HOST_KEY 512 /* "scheme://host:port" of one URL -> TC_EURL */
/* The longest text of a numeric address (an IPv6 one, NUL included, as INET6_ADDRSTRLEN). */
#define TC__CLIENT_ADDR_TEXT 46
/* A pool's key: the URL's origin, then " " and the address it connects to, if it names one. */
#define TC__CLIENT_MAX_ORIGIN_KEY (TC__CLIENT_MAX_HOST_KEY + TC__CLIENT_ADDR_TEXT)

/* Memory and speed trade-offs. */
#define TC__CLIENT_INLINE_BYTES 512 /* response bytes kept inside the request allocation */
/* A streamed response's body bytes held for its reader: one socket read of the native engine
 * (TC__NATIVE_READ_BUFFER), several of libcurl's write callbacks. */
#define TC__CLIENT_STREAM_HOLD ((size_t)TC_RESPONSE_HELD_MAX)
/* A larger request body goes to libcurl: a libuv buffer's length is an unsigned int. */
#define TC__CLIENT_NATIVE_MAX_REQUEST_BODY ((size_t)1 << 30)

typedef struct tc__curl tc__curl;     /* client_curl.c */
typedef struct tc__native tc__native; /* client_native.c */
typedef struct tc__conn tc__conn;     /* client_native.c */

enum { TC__REQ_NEW = 0, TC__REQ_QUEUED, TC__REQ_RUNNING };
enum { TC__ENGINE_NATIVE = 1, TC__ENGINE_CURL = 2 };

/* One origin ("scheme://host:port", or "scheme://host:port ADDRESS" for the requests that name
 * the address to connect to: one pool per replica): the pool's unit of admission. Lives while
 * requests (queued or running), connections or a DNS lookup name it. */
typedef struct tc__origin {
    tc__table_entry entry; /* first: the key is the origin */
    size_t slots;          /* running requests that hold a connection slot */
    int multiplex;         /* curl: answered over HTTP/2, so requests share connections */
    /* Bumped by tc_client_retire_origin: a connection opened under an older generation is not
     * kept once its request ends. */
    unsigned gen;
    /* native engine */
    tc__link idle;      /* idle connections, least recently used first */
    tc__link resolving; /* connections waiting for the DNS answer */
    struct sockaddr_storage *addrs;
    size_t naddrs;
    uint64_t addrs_expire_ms; /* the DNS answer is used until then */
    int resolving_now;
    char host[256]; /* for the resolver: without brackets */
    int port;
} tc__origin;

/* What a streamed request has beyond a plain one (client_stream.c): the reader of its response
 * body and the source of its request body. Allocated only for requests that stream, so that a
 * plain request stays one small allocation. */
typedef struct tc__stream {
    struct tc__creq *r;
    int stream_resp;  /* the caller asked for stream_response */
    int head;         /* the head was reported: the future is fulfilled, r->future is NULL */
    int wire_done;    /* the engine is done with the request: its end is known */
    int reading;      /* tc_response_read_body was called */
    int paused;       /* the reader paused */
    int ended;        /* the reader was told the end (or there was none to tell) */
    int end_status;   /* the end, once wire_done */
    int in_cb;        /* user callbacks running on this request right now */
    int free_pending; /* the future's value was released during one: freed when they return */
    int kicked;       /* in client->kicked */
    tc_response_body_cb cb;
    void *arg;
    tc__buf hold;      /* body bytes received that the reader has not taken */
    uint64_t body_len; /* libcurl: body bytes received */
    uint64_t idle_ms;  /* body_idle_timeout_ms */
    uint64_t last_io_ms;
    tc__link kick;  /* in client->kicked while there is work for the loop */
    tc__link slink; /* in client->streams from its head until its reader is told the end */
    char msg[224];  /* the end's error message */
    /* libcurl */
    int curl_status;    /* the status of the head being read */
    int curl_head;      /* the final head's blank line went by */
    int curl_notified;  /* in the engine's notify list */
    int recv_paused;    /* the write callback returned CURL_WRITEFUNC_PAUSE */
    int send_paused;    /* the read callback returned CURL_READFUNC_PAUSE */
    tc__link curl_link; /* in the engine's notify list */
    /* the request body */
    tc_client_body *body;
} tc__stream;

/* A request body the caller writes into (tc_client_body_new). */
struct tc_client_body {
    tc_client *client;   /* NULL once the client closed */
    struct tc__creq *r;  /* the request it feeds, while that runs */
    int64_t length;      /* or TC_CLIENT_LENGTH_UNKNOWN: chunked */
    uint64_t written;    /* bytes the caller wrote */
    tc__buf queued;      /* written, not yet handed to the socket (native) or to libcurl */
    size_t queued_off;   /* libcurl: bytes of queued it has read */
    tc__buf flying;      /* native: the bytes of the write in flight */
    char chunk_line[20]; /* native: the chunk-size line of the write in flight */
    int used;            /* a request took it */
    int ended;           /* tc_client_body_end */
    int end_out;         /* native: the last chunk was handed to the socket */
    int aborted;
    int closed; /* its request ended, or its client closed: nothing more is wanted */
    int freed;  /* the caller let go (tc_client_body_free) */
    int busy;   /* inside tc_client_body_abort: not destroyed until it returns */
    tc_client_body_writable_cb cb;
    void *arg;
    size_t threshold;
    int kicked;
    tc__link kick; /* in client->kicked_bodies */
    tc__link link; /* in client->bodies */
};

/* One request. The first member is the public response, so the allocation is the future's
 * value on success. */
typedef struct tc__creq {
    tc_response resp;
    tc_client *client;
    tc_future *future; /* the producer's reference while running; NULL once completed */
    tc__origin *origin;
    tc__link link;         /* in client->queue or client->running */
    tc__heap_node timeout; /* key: the deadline in ms of the uv clock, 0 = none */
    int state;             /* TC__REQ_* */
    int engine;            /* TC__ENGINE_* */
    int holds_slot;
    int https;
    int resend_stale;  /* the caller asked for the stale-connection re-send, and a GET or HEAD */
    int stale_retried; /* it was re-sent */
    int queue_free;    /* queue time does not count toward the timeout */
    uint64_t timeout_ms;
    uint64_t start_ns, admit_ns;
    size_t max_body;
    const char *method;
    const char *url;
    const char *body;
    size_t body_len;
    const char *connect_to;       /* the address to connect to (canonical text), or NULL */
    const tc_header *req_headers; /* valid only during tc_client_request_start */
    size_t req_nheaders;
    tc__buf out; /* response bytes: [header block] NUL [body], NUL after */
    /* native engine */
    tc__conn *conn;
    tc__h1 h1;
    char *head; /* the request head, written once per connection attempt */
    size_t head_len;
    /* curl engine */
    void *easy;         /* tc__easy while in curl */
    tc__link curl_link; /* in the engine's running list */
    struct curl_slist *curl_headers;
    struct curl_slist *curl_connect_to; /* CURLOPT_CONNECT_TO for connect_to */
    int curl_fd;                        /* the socket its transfer last used, or -1 */
    int curl_fail;
    unsigned curl_sends;
    int no_default_headers;
    tc__stream *st; /* a streamed request's state, or NULL */
    char inline_buf[TC__CLIENT_INLINE_BYTES];
    char strings[]; /* url, method, request body and head */
} tc__creq;

/* URLs (each with the address it connects to) whose parsed parts a client keeps: a few services'
 * replicas, each with its own URL, are sent to in turn, and parsing a URL (libcurl's parser)
 * costs more than a whole pooled request. */
#define TC__CLIENT_URL_CACHE 8

/* The parsed parts of a URL a client saw, for one connect address (or none). */
typedef struct tc__url_cache {
    char *url;                                 /* NULL: an empty entry */
    char connect_to[TC__CLIENT_ADDR_TEXT + 2]; /* as the caller wrote it; "" for none */
    char addr[TC__CLIENT_ADDR_TEXT];           /* its canonical text; "" for none */
    char key[TC__CLIENT_MAX_ORIGIN_KEY];       /* the pool's: origin, then " ADDRESS" if any */
    int https;
    int userinfo;  /* the URL names a user: libcurl sends it as Basic authentication */
    char *target;  /* path and query for the request line */
    char *host;    /* Host header value */
    uint64_t used; /* when it was last used, on the client's own count: the oldest goes */
} tc__url_cache;

struct tc_client {
    uv_loop_t *loop;
    tc_client_config cfg;
    char *ca_file;

    tc__link queue;   /* TC__REQ_QUEUED, FIFO */
    tc__link running; /* TC__REQ_RUNNING */
    size_t slots_used;

    tc__heap deadlines;
    uv_timer_t deadline_timer;
    tc__table origins;
    tc__url_cache url_cache[TC__CLIENT_URL_CACHE];
    unsigned url_cache_last; /* the entry used last: looked at first */
    uint64_t url_cache_clock;

    tc__native *native; /* created on first use */
    tc__curl *curl;     /* created on first use */

    tc__link streams;       /* streamed responses whose reader has not been told the end */
    tc__link bodies;        /* every tc_client_body of this client not yet freed */
    tc__link kicked;        /* streamed requests with work for the loop (their reader) */
    tc__link kicked_bodies; /* bodies with a writable callback due */
    uv_idle_t kick;         /* runs that work, on the next loop turn */

    tc_client_stats stats;
    int pumping;    /* inside pump_queue */
    int pump_again; /* something changed while pumping: go round once more */
    int closing;
    size_t open_handles; /* uv handles of ours not yet through their close callback */
    tc_client_close_cb close_cb;
    void *close_data;
};

/* ---- client.c, for the engines ---- */

/* The engine finished r with a response in r->out: the header block, a NUL at body_off - 1,
 * then the body. A streamed response whose head was reported ends its body well instead. */
void tc__creq_succeed(tc__creq *r, int status, int http_version, size_t body_off);

/* The engine finished r with an error; msg may be NULL (tc_strerror then). A streamed response
 * whose head was reported ends its body with the error instead. */
void tc__creq_fail(tc__creq *r, int err, const char *msg);

/* r is done with the wire (after its head): out of the lists, its slot given back, the queue
 * served. Returns 1 if r was freed meanwhile (by a callback the queue ran). */
int tc__creq_wind_up(tc__creq *r);

/* Frees r (not the future's business any more). */
void tc__creq_free(tc__creq *r);

/* The future's value destructor of every response (client.c). */
void tc__creq_response_free(void *value);

/* Moves r's deadline to at_ms (0: none). Returns 0, or TC_ENOMEM when r had none and the heap
 * could not grow (it is then left without one). */
int tc__creq_rekey(tc__creq *r, uint64_t at_ms);

/* The client's loop turn for streams (client_stream.c): starts the kick handle. */
void tc__client_kick_start(tc_client *cl);
/* Stops the kick handle once nothing waits for it: an idle handle left running costs the loop a
 * turn that polls for nothing. */
void tc__client_kick_settle(tc_client *cl);

/* ---- client_stream.c ---- */

/* At request start: the stream state of a request that streams (r->st), its body source
 * bound. Returns 0, TC_EINVAL (a bad body_source), TC_ENOMEM. */
int tc__stream_prepare(tc__creq *r, const tc_client_request *req);
/* The request could not start after all: its body source is free for another. */
void tc__stream_unprepare(tc__creq *r);
/* The request's wire side is gone (retire): its body source takes nothing more. */
void tc__stream_unbind(tc__creq *r);
/* Frees what r->st holds (creq_free). */
void tc__stream_free(tc__creq *r);
/* The final head of a streamed response is in r->out (head block, NUL at body_off - 1): the
 * future fulfils. Returns 0 if r is still the engine's, 1 if it was taken away meanwhile
 * (aborted or freed: the engine must not touch it). */
int tc__stream_head(tc__creq *r, int status, int version, size_t body_off, int framing,
                    int64_t content_length);
/* What tc__stream_data returns. */
enum { TC__STREAM_READ = 0, TC__STREAM_STOP = 1, TC__STREAM_GONE = 2 };
/* n body bytes arrived (fresh: just now, from the wire; p may be r->st->hold's own contents):
 * delivered to the reader now when it reads, else held. Returns TC__STREAM_READ (go on
 * reading), TC__STREAM_STOP (stop reading until the stream is resumed), TC__STREAM_GONE (r was
 * aborted or freed meanwhile), or TC_ENOMEM (the bytes could not be held: fail the request). */
int tc__stream_data(tc__creq *r, const char *p, size_t n, int fresh);
/* The body ended (the wire is wound up): tells the reader now or when it can hear it. */
void tc__stream_end(tc__creq *r, int err, const char *msg);
/* r's deadline came while its body streams: returns 1 if the idle timeout is not yet due (the
 * deadline was set again), 0 if it is. */
int tc__stream_deadline(tc__creq *r, uint64_t now_ms);
/* The future let r's response go: a running stream is aborted. Returns 1 if r may be freed now,
 * 0 if a callback on it is running (freed when that returns). */
int tc__stream_value_released(tc__creq *r);
/* The client closes: r's stream is aborted. */
void tc__stream_close(tc__creq *r);
/* The client closes: its bodies take nothing more. */
void tc__stream_close_bodies(tc_client *cl);
/* The kick handle: the reader work and writable callbacks that wait for the loop. */
void tc__stream_on_kick(tc_client *cl);
/* A body's writable callback, when it is due (from loop callbacks only). */
void tc__body_check_writable(tc_client_body *body);
/* Queues the body's writable check (or r's reader work) for the loop. */
void tc__body_kick(tc_client_body *body);
void tc__stream_kick(tc__creq *r);

/* A uv handle of an engine has closed (counts toward the client's own close). */
void tc__client_handle_closed(tc_client *cl);

/* Origin references for engines that keep an origin beyond its requests. */
void tc__origin_ref(tc_client *cl, tc__origin *o);
void tc__origin_unref(tc_client *cl, tc__origin *o);

/* ---- client_native.c ---- */

/* r's reader paused, or wants more: stop or start reading its connection. */
void tc__native_stream_pause(tc__creq *r);
void tc__native_stream_resume(tc__creq *r);
/* r's body has queued bytes or its end to send: sends them if r's connection is ready. */
void tc__native_body_flush(tc__creq *r);

/* Starts r (admitted, holding a slot) on a pooled or new connection. Returns 0 or an error after
 * which r is unchanged. */
int tc__native_start(tc__creq *r);
/* Takes r off its connection and resets that connection; r is not reported. */
void tc__native_abort(tc__creq *r);
/* Closes every idle connection; running ones were aborted before. Freed when the last closes. */
void tc__native_close(tc_client *cl);
/* o was retired (its generation bumped): its idle connections close now. */
void tc__native_retire(tc_client *cl, tc__origin *o);
/* The request head of req (method already defaulted): written into dst[0, cap) when it fits
 * (a scratch buffer: nearly every head is written once), else only counted; returns its size.
 * tc__native_head_build then writes one that did not fit into dst, which has that many bytes
 * (inside the request's own allocation). */
#define TC__NATIVE_HEAD_SCRATCH 1024
size_t tc__native_head_try(const tc_client_request *req, const char *method,
                           const tc__url_cache *uc, char *dst, size_t cap);
void tc__native_head_build(const tc_client_request *req, const char *method,
                           const tc__url_cache *uc, char *dst);

/* ---- client_curl.c ---- */

int tc__curl_prepare(tc__creq *r); /* at request start: header list */
int tc__curl_start(tc__creq *r);
void tc__curl_abort(tc__creq *r);
/* From the loop: r's reader wants more, or its body has bytes: unpause the transfer. */
void tc__curl_stream_resume(tc__creq *r);
void tc__curl_release(tc__creq *r); /* frees what tc__curl_prepare made */
void tc__curl_close(tc_client *cl);
/* o was retired: the idle connections curl keeps for it are shut down now (curl drops them as
 * dead when it next looks), those in use when their transfer ends. */
void tc__curl_retire(tc_client *cl, tc__origin *o);

#endif /* TAILCUT_CLIENT_INTERNAL_H */
