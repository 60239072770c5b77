/*
 * HTTP/1.1 server on libuv and http-parser.
 *
 * The one idea: every connection keeps its requests in a FIFO in arrival order, and a response
 * leaves only from the head of that FIFO. A handler may finish requests in any order and at any
 * time; finishing marks the request, and tc__srv_flush_responses() writes every finished request at
 * the head. That single rule gives in-order pipelining, lets protocol errors (400, 413, 431, ...)
 * queue behind earlier answers like any response, and makes "close after this response" a
 * property of one queue entry.
 *
 * Memory: bytes are read into one buffer per server (the loop is single-threaded and each read
 * is parsed before the next), so an idle connection costs only its handles. A request copies
 * what it needs (target, headers, body) into its own storage, inline up to TC__SRV_REQ_INLINE
 * bytes. Every growth is bounded by max_uri, max_headers and max_body.
 *
 * Closing: after a final response the server sends FIN (uv_shutdown) and keeps reading and
 * discarding for up to TC__SRV_LINGER_MS, so that a client still sending does not turn our answer
 * into a TCP reset ("lingering close").
 *
 * Files, like nginx's ngx_http_request.c family: this one holds the listener and the server
 * object; server_conn.c the connections (reading, the timer, writing, closing); server_request.c
 * a request's storage, parsing and response; server_stream.c requests taken at their head,
 * streamed bodies both ways and their back-pressure; server_log.c the request id, the client's
 * address and the access-log line (formatted by access_log.c). server_internal.h is what they
 * share.
 */
#include <errno.h>
#include <http_parser.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "base/alloc.h"
#include "server_internal.h"

/* ---- small helpers -------------------------------------------------------------------------- */

void tc_server_config_init(tc_server_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->host = "127.0.0.1";
    cfg->max_body = (size_t)TC_SERVER_DEFAULT_MAX_BODY;
    cfg->max_uri = (size_t)TC_SERVER_MAX_URI;
    cfg->max_headers = (size_t)TC_SERVER_MAX_HEADERS;
    cfg->header_timeout_ms = TC_SERVER_HEADER_TIMEOUT_MS;
    cfg->idle_timeout_ms = TC_SERVER_IDLE_TIMEOUT_MS;
    cfg->body_timeout_ms = TC_SERVER_BODY_TIMEOUT_MS;
}

const char *tc_http_reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 205:
        return "Reset Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 413:
        return "Payload Too Large";
    case 414:
        return "URI Too Long";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 499:
        return "Client Closed Request";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    }
    return "Unknown";
}

void tc__srv_update_time(tc_server *srv)
{
    time_t now = time(NULL);
    struct tm tm;
    if (now == srv->date_time)
        return;
    srv->date_time = now;
    gmtime_r(&now, &tm);
    srv->date_len =
        strftime(srv->date, sizeof(srv->date), "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
}

/* ---- the server ----------------------------------------------------------------------------- */

static void on_tick(uv_timer_t *t)
{
    tc_server *srv = t->data;
    tc__srv_update_time(srv);
    if (srv->cfg.access_log != NULL)
        (void)fflush(srv->cfg.access_log); /* best effort, as each line */
}

static int server_bind(tc_server *srv)
{
    struct sockaddr_storage ss;
    int family = AF_INET;
    if (uv_ip4_addr(srv->host, srv->port, (struct sockaddr_in *)&ss) != 0) {
        if (uv_ip6_addr(srv->host, srv->port, (struct sockaddr_in6 *)&ss) != 0)
            return TC_EINVAL;
        family = AF_INET6;
    }
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return tc_err_from_uv(uv_translate_sys_error(errno));
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (srv->cfg.reuseport)
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    socklen_t sl = family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
    if (bind(fd, (struct sockaddr *)&ss, sl) != 0) {
        /* The caller reports why, in the system's words (EADDRINUSE, EADDRNOTAVAIL, EACCES). */
        int saved = errno;
        close(fd);
        return tc_err_from_uv(uv_translate_sys_error(saved));
    }
    int err = uv_tcp_open(&srv->listener, fd);
    if (err != 0) {
        close(fd);
        return tc_err_from_uv(err);
    }
    /* each connection lands in server_conn.c tc__srv_on_connection */
    err = uv_listen((uv_stream_t *)&srv->listener, TC__SRV_LISTEN_BACKLOG, tc__srv_on_connection);
    if (err != 0)
        return tc_err_from_uv(err);
    sl = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0)
        return TC_EIO;
    srv->port = ntohs(family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                        : ((struct sockaddr_in6 *)&ss)->sin6_port);
    return 0;
}

/* libuv runs close callbacks in no promised order, so the server is freed only once its own
 * handles and every connection are gone. */
void tc__srv_maybe_free(tc_server *srv)
{
    /* Requests handed to the handler refer to the server until they are finished. */
    if (!srv->closing || srv->handles > 0 || srv->nconns > 0 || srv->inflight > 0)
        return;
    tc__link *l;
    while ((l = tc__list_first(&srv->free_reqs)) != NULL) {
        tc__list_remove(l);
        tc__free(tc__container_of(l, tc_request, link));
    }
    if (srv->close_cb != NULL)
        srv->close_cb(srv, srv->close_data);
    tc__free(srv);
}

static void on_server_handle_closed(uv_handle_t *h)
{
    tc_server *srv = h->data;
    srv->handles--;
    tc__srv_maybe_free(srv);
}

int tc_server_new(tc_server **out, uv_loop_t *loop, const tc_server_config *cfg)
{
    if (out == NULL || loop == NULL || cfg == NULL || cfg->handler == NULL)
        return TC_EINVAL;
    if (cfg->host != NULL && strlen(cfg->host) >= sizeof(((tc_server *)0)->host))
        return TC_EINVAL;
    tc__srv_parser_init();
    tc_server *srv = tc__calloc(1, sizeof(*srv));
    if (srv == NULL)
        return TC_ENOMEM;
    srv->loop = loop;
    srv->cfg = *cfg;
    tc__list_init(&srv->conns);
    tc__list_init(&srv->free_reqs);
    tc__list_init(&srv->posted);
    /* fits: the length was checked above */
    (void)snprintf(srv->host, sizeof(srv->host), "%s", cfg->host ? cfg->host : "127.0.0.1");
    srv->cfg.host = srv->host;
    srv->port = cfg->port;
    atomic_init(&srv->own_count, 0);
    srv->conn_count = cfg->conn_count != NULL ? cfg->conn_count : &srv->own_count;
    atomic_init(&srv->own_ready, 1);
    srv->ready = cfg->ready != NULL ? cfg->ready : &srv->own_ready;
    tc__srv_update_time(srv);
    tc__rng_seed(&srv->rng, tc__srv_id_seed(srv));
    uv_tcp_init(loop, &srv->listener);
    uv_timer_init(loop, &srv->tick);
    uv_idle_init(loop, &srv->post);
    srv->listener.data = srv;
    srv->tick.data = srv;
    srv->post.data = srv;
    srv->handles = 3;
    int err = server_bind(srv);
    if (err != 0) {
        srv->closing = 1;
        uv_close((uv_handle_t *)&srv->listener, on_server_handle_closed);
        uv_close((uv_handle_t *)&srv->tick, on_server_handle_closed);
        uv_close((uv_handle_t *)&srv->post, on_server_handle_closed);
        return err;
    }
    srv->listening = 1;
    uv_timer_start(&srv->tick, on_tick, 1000, 1000);
    uv_unref((uv_handle_t *)&srv->tick);
    *out = srv;
    return 0;
}

int tc_server_port(const tc_server *srv)
{
    return srv->port;
}

void tc_server_set_ready(tc_server *srv, int ready)
{
    atomic_store_explicit(srv->ready, ready ? 1 : 0, memory_order_relaxed);
}

void tc_server_set_max_connections(tc_server *srv, size_t max_connections)
{
    srv->cfg.max_connections = max_connections;
}

void tc_server_set_max_body(tc_server *srv, size_t max_body)
{
    srv->cfg.max_body = max_body;
}

void tc_server_set_access_log(tc_server *srv, FILE *log, int format)
{
    if (srv->cfg.access_log != NULL && srv->cfg.access_log != log)
        (void)fflush(srv->cfg.access_log); /* its lines so far, before the caller may close it */
    srv->cfg.access_log = log;
    srv->cfg.access_log_format = format;
}

size_t tc_server_connections(const tc_server *srv)
{
    return srv->nconns;
}

size_t tc_server_requests_in_flight(const tc_server *srv)
{
    return srv->inflight;
}

void tc_server_get_stats(const tc_server *srv, tc_server_stats *out)
{
    *out = srv->stats;
}

static void server_stop_listening(tc_server *srv)
{
    if (!srv->listening)
        return;
    srv->listening = 0;
    uv_close((uv_handle_t *)&srv->listener, on_server_handle_closed);
}

/* While draining: once nothing is in flight, every connection closes gracefully; once none is
 * left, the drained callback runs (once). */
void tc__srv_check_drained(tc_server *srv)
{
    if (!srv->draining || srv->closing)
        return;
    if (srv->inflight == 0) {
        for (tc__link *l = srv->conns.next; l != &srv->conns; l = l->next) {
            tc__srv_conn *c = tc__container_of(l, tc__srv_conn, link);
            if (!c->closing && !c->want_close && tc__list_empty(&c->queue) && !c->in_dispatch) {
                c->want_close = 1;
                tc__srv_conn_read_off(c);
                tc__srv_conn_maybe_finish_close(c);
            }
        }
    }
    if (srv->nconns == 0 && srv->drained_cb != NULL) {
        tc_server_cb cb = srv->drained_cb;
        srv->drained_cb = NULL;
        cb(srv, srv->drained_data);
    }
}

void tc_server_drain(tc_server *srv, tc_server_cb drained_cb, void *data)
{
    if (srv->draining || srv->closing)
        return;
    srv->draining = 1;
    srv->drained_cb = drained_cb;
    srv->drained_data = data;
    server_stop_listening(srv);
    tc__srv_check_drained(srv);
}

void tc_server_close(tc_server *srv, tc_server_cb close_cb, void *data)
{
    if (srv->closing)
        return;
    srv->closing = 1;
    srv->close_cb = close_cb;
    srv->close_data = data;
    server_stop_listening(srv);
    for (tc__link *l = srv->conns.next; l != &srv->conns; l = l->next)
        tc__srv_conn_close(tc__container_of(l, tc__srv_conn, link));
    if (srv->cfg.access_log != NULL)
        (void)fflush(srv->cfg.access_log); /* best effort, as each line */
    uv_close((uv_handle_t *)&srv->tick, on_server_handle_closed);
    uv_close((uv_handle_t *)&srv->post, on_server_handle_closed);
}
