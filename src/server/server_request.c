/*
 * A request of the server (see server.c for the design): its storage (inline up to
 * TC__SRV_REQ_INLINE bytes, bounded by max_uri, max_headers and max_body), the http-parser
 * callbacks that fill it, the response it builds when the handler finishes it, and its accessors.
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
#include "base/buf.h"
#include "base/fmt.h"
#include "base/json_write.h"
#include "server_internal.h"

/* ---- request storage ------------------------------------------------------------------------ */

tc_request *tc__srv_request_new(tc__srv_conn *c)
{
    tc_server *srv = c->srv;
    tc_request *r;
    tc__link *l = tc__list_last(&srv->free_reqs);
    if (l != NULL) {
        tc__list_remove(l);
        srv->nfree_reqs--;
        r = tc__container_of(l, tc_request, link);
    } else if ((r = tc__malloc(sizeof(*r))) == NULL) {
        return NULL;
    }
    memset(r, 0, offsetof(tc_request, inline_hdrs));
    tc__list_init(&r->link);
    r->conn = c;
    r->srv = c->srv;
    r->buf = r->inline_buf;
    r->cap = sizeof(r->inline_buf);
    r->hdrs = r->inline_hdrs;
    r->hdrs_cap = TC__SRV_REQ_INLINE_HEADERS;
    r->client_len = c->client_len;
    memcpy(r->client, c->client, c->client_len);
    return r;
}

void tc__srv_request_free(tc_request *r)
{
    tc_server *srv = r->srv;
    if (r->streamed)
        tc__srv_stream_free(r);
    if (r->buf != r->inline_buf)
        tc__free(r->buf);
    if (r->hdrs != r->inline_hdrs)
        tc__free(r->hdrs);
    if (r->resp != NULL)
        tc__free(r->resp - offsetof(tc__srv_write, data));
    if (srv->nfree_reqs < TC__SRV_REQ_FREELIST && !srv->closing) {
        tc__list_push_back(&srv->free_reqs, &r->link);
        srv->nfree_reqs++;
    } else {
        tc__free(r);
    }
}

/* Appends bytes to the request's storage; the caller has checked the limits already. */
static int request_append(tc_request *r, const char *at, size_t len)
{
    if (r->len + len > r->cap) {
        size_t cap = r->cap * 2;
        while (cap < r->len + len)
            cap *= 2;
        int was_inline = r->buf == r->inline_buf;
        char *nb = was_inline ? tc__malloc(cap) : tc__realloc(r->buf, cap);
        if (nb == NULL)
            return TC_ENOMEM;
        if (was_inline)
            memcpy(nb, r->buf, r->len);
        r->buf = nb;
        r->cap = cap;
    }
    memcpy(r->buf + r->len, at, len);
    r->len += len;
    return 0;
}

/* ---- parser callbacks ----------------------------------------------------------------------- */

static int fail(tc__srv_conn *c, int status)
{
    c->err_status = status;
    return -1;
}

/* Stores parsed bytes in r; out of memory turns into 503 overloaded. */
static int request_store(tc__srv_conn *c, tc_request *r, const char *at, size_t len)
{
    return request_append(r, at, len) == 0 ? 0 : fail(c, 503);
}

static int on_request_begin(http_parser *hp)
{
    tc__srv_conn *c = hp->data;
    c->cur = tc__srv_request_new(c);
    if (c->cur == NULL)
        return fail(c, 503);
    if (c->phase != TC__SRV_READING) {
        c->phase = TC__SRV_READING;
        tc__srv_conn_timer_start(c, c->srv->cfg.header_timeout_ms);
    }
    return 0;
}

static int on_request_url(http_parser *hp, const char *at, size_t len)
{
    tc__srv_conn *c = hp->data;
    tc_request *r = c->cur;
    if (r->target_len + len > c->srv->cfg.max_uri)
        return fail(c, 414);
    if (r->target_len == 0)
        r->target_off = (uint32_t)r->len;
    r->target_len += (uint32_t)len;
    return request_store(c, r, at, len);
}

/* The request line has been read whole: what the access log shows of it. */
static void request_line_done(http_parser *hp, tc_request *r)
{
    if (r->line_done)
        return;
    r->line_done = 1;
    r->method = (unsigned char)hp->method;
    r->http_major = (unsigned char)hp->http_major;
    r->http_minor = (unsigned char)hp->http_minor;
}

static int header_bytes_add(tc__srv_conn *c, tc_request *r, size_t len)
{
    r->header_bytes += len;
    return r->header_bytes > c->srv->cfg.max_headers ? fail(c, 431) : 0;
}

static int on_request_header_field(http_parser *hp, const char *at, size_t len)
{
    tc__srv_conn *c = hp->data;
    tc_request *r = c->cur;
    request_line_done(hp, r);
    if (header_bytes_add(c, r, len) != 0)
        return -1;
    if (r->nhdrs == 0 || r->last_was_value) {
        if (r->nhdrs == TC__SRV_MAX_HEADER_COUNT)
            return fail(c, 431);
        if (r->nhdrs == r->hdrs_cap) {
            unsigned cap = r->hdrs_cap > 0 ? r->hdrs_cap * 2 : TC__SRV_REQ_INLINE_HEADERS;
            tc__srv_hdr *nh = tc__malloc(cap * sizeof(*nh));
            if (nh == NULL)
                return fail(c, 503);
            memcpy(nh, r->hdrs, r->nhdrs * sizeof(*nh));
            if (r->hdrs != r->inline_hdrs)
                tc__free(r->hdrs);
            r->hdrs = nh;
            r->hdrs_cap = cap;
        }
        tc__srv_hdr *hd = &r->hdrs[r->nhdrs++];
        hd->name_off = (uint32_t)r->len;
        hd->name_len = 0;
        hd->value_off = 0;
        hd->value_len = 0;
        r->last_was_value = 0;
    }
    r->hdrs[r->nhdrs - 1].name_len += (uint32_t)len;
    return request_store(c, r, at, len);
}

static int on_request_header_value(http_parser *hp, const char *at, size_t len)
{
    tc__srv_conn *c = hp->data;
    tc_request *r = c->cur;
    if (header_bytes_add(c, r, len) != 0)
        return -1;
    tc__srv_hdr *hd = &r->hdrs[r->nhdrs - 1];
    if (!r->last_was_value) {
        hd->value_off = (uint32_t)r->len;
        r->last_was_value = 1;
    }
    hd->value_len += (uint32_t)len;
    return request_store(c, r, at, len);
}

static int on_request_headers_complete(http_parser *hp)
{
    tc__srv_conn *c = hp->data;
    tc_request *r = c->cur;
    request_line_done(hp, r);
    tc__srv_request_id_init(r);
    if (c->srv->cfg.head_filter != NULL && tc__srv_stream_take(c, hp, r))
        return 0;
    if ((hp->flags & F_CONTENTLENGTH) && hp->content_length > c->srv->cfg.max_body)
        return fail(c, 413);
    r->keep_alive = http_should_keep_alive(hp) ? 1 : 0;
    r->body_off = r->len;
    tc_str expect;
    if (tc__list_empty(&c->queue) && c->writes == 0 && tc_request_header(r, "Expect", &expect) &&
        expect.len == 12 && strncasecmp(expect.base, "100-continue", 12) == 0) {
        /* Nothing else is queued, so an interim answer cannot overtake a response. */
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        uv_buf_t b = uv_buf_init((char *)cont, sizeof(cont) - 1);
        uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    }
    return 0;
}

static int on_request_body(http_parser *hp, const char *at, size_t len)
{
    tc__srv_conn *c = hp->data;
    tc_request *r = c->cur;
    if (r->body_len + len > c->srv->cfg.max_body)
        return fail(c, 413);
    r->body_len += len;
    return request_store(c, r, at, len);
}

static inline void request_split_target(tc_request *r)
{
    const char *target = r->buf + r->target_off;
    uint32_t i = 0, n = r->target_len;
    while (i < n && target[i] != '?' && target[i] != '#')
        i++;
    r->path_len = i;
    r->query_off = r->target_off + i;
    r->query_len = 0;
    if (i < n && target[i] == '?') {
        uint32_t q = i + 1, e = q;
        while (e < n && target[e] != '#')
            e++;
        r->query_off = r->target_off + q;
        r->query_len = e - q;
    }
}

static int on_request_complete(http_parser *hp)
{
    tc__srv_conn *c = hp->data;
    tc_request *r = c->cur;
    c->cur = NULL;
    request_split_target(r);
    tc__srv_mark_ready(r, c->srv->loop); /* the deadline counts from now */
    if (hp->upgrade)
        r->keep_alive = 0; /* what follows is not HTTP/1.1: answer, then close */
    tc__srv_queue_push(c, r);
    c->phase = TC__SRV_BUSY;
    uv_timer_stop(&c->timer);
    if (c->queued >= TC_SERVER_MAX_PIPELINE)
        http_parser_pause(hp, 1);
    return 0;
}

void tc__srv_request_split_target(tc_request *r)
{
    request_split_target(r);
}

http_parser_settings tc__srv_parser_settings, tc__srv_stream_parser_settings;
static uv_once_t parser_settings_once = UV_ONCE_INIT;

static void parser_settings_init(void)
{
    http_parser_settings_init(&tc__srv_parser_settings);
    tc__srv_parser_settings.on_message_begin = on_request_begin;
    tc__srv_parser_settings.on_url = on_request_url;
    tc__srv_parser_settings.on_header_field = on_request_header_field;
    tc__srv_parser_settings.on_header_value = on_request_header_value;
    tc__srv_parser_settings.on_headers_complete = on_request_headers_complete;
    tc__srv_parser_settings.on_body = on_request_body;
    tc__srv_parser_settings.on_message_complete = on_request_complete;
    tc__srv_stream_settings(&tc__srv_stream_parser_settings);
}

void tc__srv_parser_init(void)
{
    uv_once(&parser_settings_once, parser_settings_init);
}

static size_t append_str(char *dst, const char *s, size_t n)
{
    memcpy(dst, s, n);
    return n;
}

/* What may follow a response's head (RFC 9110). A 1xx, 204 or 304 never has content (§6.4.1):
 * no body bytes, no Content-Length (a 304's would have to be the length of the 200 it stands
 * for, which the server does not know, §8.6) and no Content-Type. A 205 has none either, said
 * with Content-Length: 0 (§15.3.6). An answer to HEAD states the Content-Length a GET would
 * get and sends no body (§9.3.2). */
typedef enum response_body {
    BODY_SENT,
    BODY_HEAD_ONLY, /* HEAD: Content-Length of the body, no bytes */
    BODY_EMPTY,     /* 205: Content-Length: 0 */
    BODY_NONE,      /* 1xx, 204, 304: no Content-Length, no Content-Type */
} response_body;

static response_body request_response_body(const tc_request *r, int status)
{
    if (status < 200 || status == 204 || status == 304)
        return BODY_NONE;
    if (status == 205)
        return BODY_EMPTY;
    return r->line_done && r->method == HTTP_HEAD ? BODY_HEAD_ONLY : BODY_SENT;
}

/* The size of a head, line by line as head_write writes it (nginx's header filter sizes its
 * buffer the same way, sizeof("...") - 1 per fixed part). Static, so that it is inlined on the
 * response path; tc__srv_head_size is the same for the unit test. */
static inline size_t head_size(tc__srv_head *head)
{
    head->reason_len = strlen(head->reason);
    size_t n = sizeof("HTTP/1.1 ") - 1 + tc__fmt_u64_len((unsigned)head->status) + 1 +
               head->reason_len + sizeof("\r\n") - 1;
    n += head->date_len;
    if (head->content_type != NULL) {
        head->content_type_len = strlen(head->content_type);
        n += sizeof("Content-Type: ") - 1 + head->content_type_len + sizeof("\r\n") - 1;
    }
    if (head->has_length)
        n += sizeof("Content-Length: ") - 1 + tc__fmt_u64_len(head->content_length) +
             sizeof("\r\n") - 1;
    else if (head->chunked)
        n += sizeof("Transfer-Encoding: chunked\r\n") - 1;
    n += head->close ? sizeof("Connection: close\r\n") - 1
                     : sizeof("Connection: keep-alive\r\n") - 1;
    n += sizeof("X-Request-Id: ") - 1 + head->id_len + sizeof("\r\n") - 1;
    for (size_t i = 0; i < head->nheaders; i++) {
        size_t name_len = strlen(head->headers[i].name), value_len = strlen(head->headers[i].value);
        if (i < TC__SRV_HEAD_KEEP_LENS) {
            head->name_len[i] = name_len;
            head->value_len[i] = value_len;
        }
        n += name_len + sizeof(": ") - 1 + value_len + sizeof("\r\n") - 1;
    }
    return n + sizeof("\r\n") - 1;
}

static inline size_t head_write(char *dst, const tc__srv_head *head)
{
    char *p = dst;
    p += append_str(p, TC__LIT("HTTP/1.1 "));
    p += tc__fmt_u64(p, (unsigned)head->status);
    *p++ = ' ';
    p += append_str(p, head->reason, head->reason_len);
    p += append_str(p, TC__LIT("\r\n"));
    p += append_str(p, head->date, head->date_len);
    if (head->content_type != NULL) {
        p += append_str(p, TC__LIT("Content-Type: "));
        p += append_str(p, head->content_type, head->content_type_len);
        p += append_str(p, TC__LIT("\r\n"));
    }
    if (head->has_length) {
        p += append_str(p, TC__LIT("Content-Length: "));
        p += tc__fmt_u64(p, head->content_length);
        p += append_str(p, TC__LIT("\r\n"));
    } else if (head->chunked) {
        p += append_str(p, TC__LIT("Transfer-Encoding: chunked\r\n"));
    }
    p += head->close ? append_str(p, TC__LIT("Connection: close\r\n"))
                     : append_str(p, TC__LIT("Connection: keep-alive\r\n"));
    p += append_str(p, TC__LIT("X-Request-Id: "));
    p += append_str(p, head->id, head->id_len);
    p += append_str(p, TC__LIT("\r\n"));
    for (size_t i = 0; i < head->nheaders; i++) {
        const tc_server_header *hd = &head->headers[i];
        int kept = i < TC__SRV_HEAD_KEEP_LENS;
        p += append_str(p, hd->name, kept ? head->name_len[i] : strlen(hd->name));
        p += append_str(p, TC__LIT(": "));
        p += append_str(p, hd->value, kept ? head->value_len[i] : strlen(hd->value));
        p += append_str(p, TC__LIT("\r\n"));
    }
    p += append_str(p, TC__LIT("\r\n"));
    return (size_t)(p - dst);
}

size_t tc__srv_head_size(tc__srv_head *head)
{
    return head_size(head);
}

size_t tc__srv_head_write(char *dst, const tc__srv_head *head)
{
    return head_write(dst, head);
}

/* What every head shares: the status line, Date, Connection, the id and the handler's headers;
 * the caller sets the framing (content type, length or chunks). Field by field: an initializer
 * would zero the kept lengths too, on every response. Returns whether the connection closes
 * after this answer (also when the caller says it must: close). */
static inline int request_head_init(tc_request *r, tc__srv_head *head, int status,
                                    const tc_server_header *headers, size_t nheaders, int close)
{
    tc_server *srv = r->srv;
    if (r->id_len == 0)
        tc__srv_request_id_generate(r);
    tc__srv_update_time(srv);
    /* A 1xx is no final answer: the client would wait on for one, so the connection closes. */
    close = close || !r->keep_alive || r->close_after || srv->draining || srv->closing ||
            !tc__srv_ready(srv) || status < 200;
    head->status = status;
    head->reason = tc_http_reason(status);
    head->chunked = 0;
    head->close = close;
    head->date = srv->date;
    head->date_len = srv->date_len;
    head->id = r->id;
    head->id_len = r->id_len;
    head->headers = headers;
    head->nheaders = nheaders;
    return close;
}

/* Builds the whole response into one buffer laid out as a tc__srv_write, so that flushing needs no
 * further allocation. */
static int request_build_response(tc_request *r, int status, const char *content_type,
                                  const tc_server_header *headers, size_t nheaders,
                                  const char *body, size_t body_len)
{
    response_body kind = request_response_body(r, status);
    if (kind == BODY_EMPTY)
        body_len = 0;
    tc__srv_head head;
    /* A streamed request body not read to its end leaves the connection unusable. */
    int close = request_head_init(r, &head, status, headers, nheaders, r->body_pending);
    head.content_type = kind == BODY_NONE ? NULL : content_type;
    head.has_length = kind != BODY_NONE;
    head.content_length = body_len;
    size_t body_sent = kind == BODY_SENT ? body_len : 0;
    size_t head_len = head_size(&head);
    tc__srv_write *w = tc__malloc(sizeof(tc__srv_write) + head_len + body_sent);
    if (w == NULL)
        return TC_ENOMEM;
    r->close_after = close ? 1 : 0;
    head_write(w->data, &head);
    if (body_sent > 0)
        memcpy(w->data + head_len, body, body_sent);
    r->resp = w->data;
    r->resp_len = head_len + body_sent;
    r->status = status;
    return 0;
}

tc__srv_write *tc__srv_head_build(tc_request *r, int status, const char *content_type,
                                  const tc_server_header *headers, size_t nheaders,
                                  int64_t content_length)
{
    response_body kind = request_response_body(r, status);
    int known = content_length >= 0;
    /* An unknown length is framed by chunks for an HTTP/1.1 client; an HTTP/1.0 one cannot read
     * chunks, so its body ends when the connection closes. */
    int http11 = r->http_major > 1 || (r->http_major == 1 && r->http_minor >= 1);
    int until_close = kind == BODY_SENT && !known && !http11;
    tc__srv_head head;
    /* A body still coming may yet be read to its end: if not, the connection closes after the
     * response all the same (tc__srv_stream_finish). */
    int close = request_head_init(r, &head, status, headers, nheaders, until_close);
    head.content_type = kind == BODY_NONE ? NULL : content_type;
    head.has_length =
        kind == BODY_EMPTY || ((kind == BODY_SENT || kind == BODY_HEAD_ONLY) && known);
    head.content_length = kind == BODY_EMPTY ? 0 : (uint64_t)(known ? content_length : 0);
    head.chunked = kind == BODY_SENT && !known && http11;
    size_t head_len = head_size(&head);
    tc__srv_write *w = tc__malloc(sizeof(tc__srv_write) + head_len);
    if (w == NULL)
        return NULL;
    w->len = head_write(w->data, &head);
    w->next = NULL;
    r->close_after = close ? 1 : 0;
    r->chunked = head.chunked ? 1 : 0;
    r->until_close = until_close ? 1 : 0;
    r->has_length = kind == BODY_SENT && known;
    r->no_body = kind != BODY_SENT;
    r->st.resp_left = r->has_length ? (uint64_t)content_length : 0;
    r->status = status;
    return w;
}

/* Common end of every request: bookkeeping, access log, then the queue decides what to send. */
static inline void request_finish(tc_request *r)
{
    tc_server *srv = r->srv;
    tc__srv_conn *c = r->conn;
    r->finished = 1;
    if (r->dispatched)
        srv->inflight--;
    if (r->streamed)
        tc__srv_stream_finish(r); /* its callbacks get TC_ECANCELED */
    tc__srv_access_log(r);
    if (c == NULL) {
        if (!r->notifying) /* else the closing connection frees it once its callbacks return */
            tc__srv_request_free(r);
    } else if (!c->in_dispatch) {
        tc__srv_conn_settle(c);
    }
    if (srv->closing)
        tc__srv_maybe_free(srv);
    else if (srv->draining && srv->inflight == 0)
        tc__srv_check_drained(srv);
}

void tc__srv_request_finish(tc_request *r)
{
    request_finish(r);
}

int tc_request_respond(tc_request *r, int status, const char *content_type,
                       const tc_server_header *headers, size_t nheaders, const char *body,
                       size_t body_len)
{
    if (r == NULL || r->finished || r->head_sent)
        return TC_EINVAL;
    if (r->conn == NULL) {
        r->status = status;
        request_finish(r);
        return 0;
    }
    int err = request_build_response(r, status, content_type, headers, nheaders, body, body_len);
    if (err != 0) {
        r->drop = 1;
        r->status = 500;
    }
    request_finish(r);
    return err;
}

int tc_request_respond_json(tc_request *r, int status, const char *json)
{
    return tc_request_respond(r, status, "application/json", NULL, 0, json, strlen(json));
}

/* Copies at most max bytes of s into dst, cutting at a UTF-8 character boundary. */
static void copy_utf8_prefix(char *dst, const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n > max) {
        n = max;
        while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
            n--; /* s[n] continues a character: cut before that character starts */
    }
    memcpy(dst, s, n);
    dst[n] = '\0';
}

int tc_request_respond_error(tc_request *r, int status, const char *code, const char *message)
{
    return tc_request_respond_error_with(r, status, code, message, NULL, 0);
}

int tc_request_respond_error_with(tc_request *r, int status, const char *code, const char *message,
                                  const tc_server_header *headers, size_t nheaders)
{
    /* Room for the worst case (every byte of the message escaped as \ufffd), so an error answer
     * never allocates: 503 overloaded must go out when memory has run out. */
    char store[6 * TC_SERVER_MAX_ERROR_MESSAGE + 128];
    char msg[TC_SERVER_MAX_ERROR_MESSAGE + 1];
    tc__buf body;
    if (r == NULL || r->finished)
        return TC_EINVAL;
    copy_utf8_prefix(msg, message != NULL ? message : tc_http_reason(status),
                     TC_SERVER_MAX_ERROR_MESSAGE);
    tc__buf_init(&body, store, sizeof(store), sizeof(store) - 1);
    int rc = tc__buf_append(&body, TC__LIT("{\"success\":false,\"error\":\""));
    if (rc == 0)
        rc = tc__buf_append(&body, code, strlen(code));
    if (rc == 0)
        rc = tc__buf_append(&body, TC__LIT("\",\"message\":"));
    if (rc == 0)
        rc = tc__json_write_str(&body, msg, strlen(msg));
    if (rc == 0)
        rc = tc__buf_append(&body, TC__LIT("}"));
    if (rc != 0)
        return rc; /* a code longer than any tailcut uses */
    tc_server_header extra[6];
    size_t nextra = 0;
    for (size_t i = 0; i < nheaders && i < 4; i++)
        extra[nextra++] = headers[i];
    if (status == 503 || status == 429)
        extra[nextra++] = (tc_server_header){"Retry-After", "1"};
    if (status == 405)
        extra[nextra++] = (tc_server_header){"Allow", "GET, HEAD"};
    if (status == 400 || status == 408 || status == 413 || status == 414 || status == 431)
        r->close_after = 1;
    return tc_request_respond(r, status, "application/json", extra, nextra, body.data, body.len);
}

void tc_request_drop(tc_request *r, int reset)
{
    if (r == NULL || r->finished)
        return;
    r->drop = 1;
    r->reset = reset ? 1 : 0;
    r->status = 0;
    request_finish(r);
}

/* ---- request accessors ---------------------------------------------------------------------- */

tc_str tc_request_method(const tc_request *r)
{
    const char *m = http_method_str((enum http_method)r->method);
    return (tc_str){m, strlen(m)};
}

tc_str tc_request_target(const tc_request *r)
{
    return (tc_str){r->buf + r->target_off, r->target_len};
}

tc_str tc_request_path(const tc_request *r)
{
    return (tc_str){r->buf + r->target_off, r->path_len};
}

tc_str tc_request_query(const tc_request *r)
{
    return (tc_str){r->buf + r->query_off, r->query_len};
}

tc_str tc_request_body(const tc_request *r)
{
    return (tc_str){r->buf + r->body_off, r->body_len};
}

int tc_request_header_next(const tc_request *r, const char *name, size_t *pos, tc_str *value)
{
    size_t n = strlen(name);
    for (size_t i = *pos; i < r->nhdrs; i++) {
        const tc__srv_hdr *hd = &r->hdrs[i];
        if (hd->name_len == n && strncasecmp(r->buf + hd->name_off, name, n) == 0) {
            value->base = r->buf + hd->value_off;
            value->len = hd->value_len;
            *pos = i + 1;
            return 1;
        }
    }
    *pos = r->nhdrs;
    return 0;
}

size_t tc_request_header_count(const tc_request *r)
{
    return r->nhdrs;
}

int tc_request_header_at(const tc_request *r, size_t i, tc_str *name, tc_str *value)
{
    if (i >= r->nhdrs)
        return 0;
    const tc__srv_hdr *hd = &r->hdrs[i];
    name->base = r->buf + hd->name_off;
    name->len = hd->name_len;
    value->base = r->buf + hd->value_off;
    value->len = hd->value_len;
    return 1;
}

int tc_request_header(const tc_request *r, const char *name, tc_str *value)
{
    size_t pos = 0;
    return tc_request_header_next(r, name, &pos, value);
}

int tc_request_is_head(const tc_request *r)
{
    return r->method == HTTP_HEAD;
}

uv_loop_t *tc_request_loop(const tc_request *r)
{
    return r->srv->loop;
}

tc_server *tc_request_server(const tc_request *r)
{
    return r->srv;
}

uint64_t tc_request_ready_ms(const tc_request *r)
{
    return r->ready_ms;
}

uint64_t tc_request_ready_ns(const tc_request *r)
{
    return r->ready_ns;
}

int tc_request_aborted(const tc_request *r)
{
    return r->aborted;
}

void tc_request_on_abort(tc_request *r, tc_request_abort_cb cb, void *data)
{
    r->abort_cb = cb;
    r->abort_data = data;
}

void tc_request_set_data(tc_request *r, void *data)
{
    r->user = data;
}

void *tc_request_data(const tc_request *r)
{
    return r->user;
}
