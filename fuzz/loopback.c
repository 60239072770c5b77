/*
 * The loopback client and response checker shared by the network fuzz targets (see loopback.h).
 *
 * Everything runs on one process-wide loop that the targets' servers share. A client is an
 * ordinary uv_tcp_t, so the bytes travel through the kernel's real TCP path exactly as a remote
 * client's would; fz_run_nowait() lets the harness detect when the exchange has gone quiet.
 */
#include <string.h>
#include <strings.h>

#include "loopback.h"

unsigned long fz_progress;

static uv_loop_t loop_storage;
static int loop_ready;
static uv_timer_t guard; /* bounds fz_run_once() */

uv_loop_t *fz_loop(void)
{
    if (!loop_ready) {
        FZ_CHECK(uv_loop_init(&loop_storage) == 0, "uv_loop_init");
        uv_timer_init(&loop_storage, &guard);
        uv_unref((uv_handle_t *)&guard);
        loop_ready = 1;
    }
    return &loop_storage;
}

uint64_t fz_now_ms(void)
{
    return uv_hrtime() / 1000000u;
}

int fz_run_nowait(void)
{
    unsigned long before = fz_progress;
    uv_run(fz_loop(), UV_RUN_NOWAIT);
    return fz_progress != before;
}

static void on_guard(uv_timer_t *t)
{
    (void)t;
}

void fz_run_once(uint64_t max_ms)
{
    uv_loop_t *loop = fz_loop();
    /* A referenced guard timer makes UV_RUN_ONCE return within max_ms even if nothing happens. */
    uv_ref((uv_handle_t *)&guard);
    uv_timer_start(&guard, on_guard, max_ms, 0);
    uv_run(loop, UV_RUN_ONCE);
    uv_timer_stop(&guard);
    uv_unref((uv_handle_t *)&guard);
}

/* ---- the client ------------------------------------------------------------------------------ */

static void on_connect(uv_connect_t *req, int status)
{
    fz_conn *c = req->data;
    c->connected = status == 0 ? 1 : -1;
    fz_progress++;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    fz_conn *c = h->data;
    (void)suggested;
    if (c->rx_cap - c->rx_len < 16384 && c->rx_cap < FZ_RX_MAX) {
        size_t cap = c->rx_cap ? c->rx_cap * 2 : 65536;
        if (cap > FZ_RX_MAX)
            cap = FZ_RX_MAX;
        char *p = realloc(c->rx, cap);
        FZ_CHECK(p != NULL, "out of memory");
        c->rx = p;
        c->rx_cap = cap;
    }
    if (c->rx_len < c->rx_cap) {
        *buf = uv_buf_init(c->rx + c->rx_len, (unsigned)(c->rx_cap - c->rx_len));
    } else {
        static char sink[16384]; /* over FZ_RX_MAX: count and discard */
        *buf = uv_buf_init(sink, sizeof(sink));
    }
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    fz_conn *c = s->data;
    if (nread == 0)
        return;
    fz_progress++;
    if (nread < 0) {
        c->eof = 1;
        c->reset = nread != UV_EOF;
        uv_read_stop(s);
        return;
    }
    if (c->rx != NULL && buf->base == c->rx + c->rx_len)
        c->rx_len += (size_t)nread;
    else
        c->rx_dropped += (size_t)nread;
}

void fz_conn_open(fz_conn *c, int port)
{
    memset(c, 0, sizeof(*c));
    struct sockaddr_in addr;
    uv_ip4_addr("127.0.0.1", port, &addr);
    uv_tcp_init(fz_loop(), &c->tcp);
    c->tcp.data = c;
    c->connect_req.data = c;
    FZ_CHECK(uv_tcp_connect(&c->connect_req, &c->tcp, (const struct sockaddr *)&addr, on_connect) ==
                 0,
             "uv_tcp_connect");
    uint64_t deadline = fz_now_ms() + 5000;
    while (c->connected == 0 && fz_now_ms() < deadline)
        fz_run_once(10);
    FZ_CHECK(c->connected == 1, "loopback connect to port %d failed", port);
    uv_tcp_nodelay(&c->tcp, 1);
    FZ_CHECK(uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0, "uv_read_start");
}

static void on_write(uv_write_t *req, int status)
{
    fz_conn *c = req->data;
    c->writes--;
    if (status != 0)
        c->write_failed = 1;
    fz_progress++;
}

void fz_conn_write(fz_conn *c, int slot, const char *p, size_t n)
{
    uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
    c->write_req[slot].data = c;
    if (uv_write(&c->write_req[slot], (uv_stream_t *)&c->tcp, &b, 1, on_write) == 0)
        c->writes++;
    else
        c->write_failed = 1;
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    (void)req;
    (void)status;
    fz_progress++;
}

void fz_conn_shutdown(fz_conn *c)
{
    c->shutdown_req.data = c;
    uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, on_shutdown);
}

static void on_closed(uv_handle_t *h)
{
    fz_conn *c = h->data;
    c->closed = 1;
    fz_progress++;
}

void fz_conn_close(fz_conn *c)
{
    uv_close((uv_handle_t *)&c->tcp, on_closed);
    uint64_t deadline = fz_now_ms() + 5000;
    while (!c->closed && fz_now_ms() < deadline)
        fz_run_once(10);
    FZ_CHECK(c->closed, "client handle did not close");
    free(c->rx);
    c->rx = NULL;
    c->rx_len = c->rx_cap = 0;
}

/* ---- response parsing ------------------------------------------------------------------------ */

static const char *find(const char *p, size_t len, const char *needle)
{
    size_t n = strlen(needle);
    for (size_t i = 0; i + n <= len; i++)
        if (memcmp(p + i, needle, n) == 0)
            return p + i;
    return NULL;
}

long fz_response_header(const fz_response *r, const char *name, const char **value)
{
    size_t nl = strlen(name);
    const char *p = r->headers, *end = r->headers + r->headers_len;
    while (p < end) {
        const char *eol = find(p, (size_t)(end - p), "\r\n");
        if (eol == NULL)
            eol = end;
        if ((size_t)(eol - p) > nl + 1 && memcmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (v < eol && *v == ' ')
                v++;
            *value = v;
            return (long)(eol - v);
        }
        p = eol + 2;
    }
    return -1;
}

static int count_header(const char *h, size_t len, const char *name)
{
    size_t nl = strlen(name);
    int n = 0;
    const char *p = h, *end = h + len;
    while (p < end) {
        const char *eol = find(p, (size_t)(end - p), "\r\n");
        if (eol == NULL)
            eol = end;
        if ((size_t)(eol - p) > nl && strncasecmp(p, name, nl) == 0 && p[nl] == ':')
            n++;
        p = eol + 2;
    }
    return n;
}

/* Decodes the chunked body at p[0..left) into a scratch buffer (the body of r); returns the bytes
 * it took, or 0 with r->truncated when they end inside it. Aborts on framing our server never
 * writes. */
static size_t parse_chunked(const char *p, size_t left, fz_response *r)
{
    static char *scratch;
    static size_t scratch_cap;
    size_t at = 0, n = 0;
    for (;;) {
        const char *eol = find(p + at, left - at, "\r\n");
        if (eol == NULL) {
            r->truncated = 1;
            return 0;
        }
        size_t digits = (size_t)(eol - (p + at)), size = 0;
        FZ_CHECK(digits > 0 && digits <= 16, "a chunk size of %zu digits", digits);
        FZ_CHECK(digits == 1 || p[at] != '0', "a chunk size with a leading zero");
        for (size_t i = 0; i < digits; i++) {
            char ch = p[at + i];
            FZ_CHECK((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f'),
                     "a chunk size that is not lowercase hex: %.*s", (int)digits, p + at);
            size = size * 16 + (size_t)(ch <= '9' ? ch - '0' : ch - 'a' + 10);
        }
        at += digits + 2;
        if (size == 0) { /* the last chunk: no trailers, the empty line */
            if (left - at < 2) {
                r->truncated = 1;
                return 0;
            }
            FZ_CHECK(memcmp(p + at, "\r\n", 2) == 0, "trailers or junk after the last chunk");
            r->body = scratch;
            r->content_length = n;
            return at + 2;
        }
        if (left - at < size + 2) {
            r->truncated = 1;
            return 0;
        }
        FZ_CHECK(memcmp(p + at + size, "\r\n", 2) == 0, "a chunk not followed by CRLF");
        if (n + size > scratch_cap) {
            size_t cap = scratch_cap ? scratch_cap : 4096;
            while (cap < n + size)
                cap *= 2;
            char *s = realloc(scratch, cap);
            FZ_CHECK(s != NULL, "out of memory");
            scratch = s;
            scratch_cap = cap;
        }
        memcpy(scratch + n, p + at, size);
        n += size;
        at += size + 2;
    }
}

int fz_parse_response(const char *buf, size_t len, size_t *pos, int flags, fz_response *r)
{
    static const char interim[] = "HTTP/1.1 100 Continue\r\n\r\n";
    int expect_body = (flags & FZ_BODY) != 0;
    memset(r, 0, sizeof(*r));
    if (*pos >= len)
        return 0;
    const char *p = buf + *pos;
    size_t left = len - *pos;

    /* The status line: "HTTP/1.1 " + 3 digits + " " + reason + CRLF. */
    size_t pre = left < 9 ? left : 9;
    FZ_CHECK(memcmp(p, "HTTP/1.1 ", pre) == 0, "response does not start with \"HTTP/1.1 \": %.*s",
             (int)(left < 40 ? left : 40), p);
    const char *hend = find(p, left, "\r\n\r\n");
    if (hend == NULL) {
        for (size_t i = 9; i < left && i < 12; i++)
            FZ_CHECK(p[i] >= '0' && p[i] <= '9', "status is not 3 digits");
        r->truncated = 1;
        *pos = len;
        return 1;
    }
    FZ_CHECK(hend - p >= 13, "status line too short");
    for (int i = 9; i < 12; i++)
        FZ_CHECK(p[i] >= '0' && p[i] <= '9', "status is not 3 digits: %.*s", 20, p);
    FZ_CHECK(p[9] >= '1' && p[9] <= '5', "status class out of range: %.*s", 12, p);
    FZ_CHECK(p[12] == ' ', "no space after the status");
    r->status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
    const char *sl_end = find(p, (size_t)(hend + 2 - p), "\r\n");
    FZ_CHECK(sl_end > p + 13, "empty reason phrase");
    for (const char *q = p; q < hend; q++)
        FZ_CHECK(*q != '\0' && (*q != '\n' || q[-1] == '\r') && (*q != '\r' || q[1] == '\n'),
                 "bare CR, bare LF or NUL in the response head");

    if (r->status == 100) {
        FZ_CHECK(left >= sizeof(interim) - 1 && memcmp(p, interim, sizeof(interim) - 1) == 0,
                 "a 100 response other than the bare interim one: %.*s", 60, p);
        r->is_interim = 1;
        *pos += sizeof(interim) - 1;
        return 1;
    }
    r->headers = sl_end + 2;
    r->headers_len = (size_t)(hend + 2 - r->headers); /* keeps the last header's CRLF */
    /* RFC 9110 §6.4.1, §8.6: these never have content, so no Content-Length either */
    r->no_content = r->status < 200 || r->status == 204 || r->status == 304;
    int lengths = count_header(r->headers, r->headers_len, "Content-Length");
    int te = count_header(r->headers, r->headers_len, "Transfer-Encoding");
    int streamed = (flags & FZ_STREAMED) && !r->no_content && lengths == 0;
    FZ_CHECK(te == 0 || (streamed && expect_body && te == 1),
             "a Transfer-Encoding where no chunked body can be");
    FZ_CHECK(streamed || lengths == (r->no_content ? 0 : 1), "%s Content-Length on a %d",
             r->no_content ? "a" : "not exactly one", r->status);
    FZ_CHECK(!r->no_content || count_header(r->headers, r->headers_len, "Content-Type") == 0,
             "a Content-Type on a %d", r->status);
    FZ_CHECK(count_header(r->headers, r->headers_len, "Connection") == 1,
             "not exactly one Connection header");
    FZ_CHECK(count_header(r->headers, r->headers_len, "Date") == 1, "not exactly one Date header");

    const char *v;
    long vl = r->no_content || streamed ? 1 : fz_response_header(r, "Content-Length", &v);
    if (r->no_content || streamed)
        v = "0";
    FZ_CHECK(vl > 0 && vl < 12, "bad Content-Length length");
    size_t cl = 0;
    for (long i = 0; i < vl; i++) {
        FZ_CHECK(v[i] >= '0' && v[i] <= '9', "Content-Length is not a number");
        cl = cl * 10 + (size_t)(v[i] - '0');
    }
    FZ_CHECK(vl == 1 || v[0] != '0', "Content-Length with a leading zero");
    FZ_CHECK(r->status != 205 || cl == 0, "a 205 with content");
    r->content_length = cl;
    vl = fz_response_header(r, "Connection", &v);
    FZ_CHECK((vl == 5 && memcmp(v, "close", 5) == 0) ||
                 (vl == 10 && memcmp(v, "keep-alive", 10) == 0),
             "Connection is neither close nor keep-alive");
    r->close = vl == 5;

    size_t head_len = (size_t)(hend + 4 - p);
    size_t body_len = expect_body ? cl : 0;
    r->body = hend + 4;
    if (streamed && expect_body && te == 1) {
        FZ_CHECK(fz_response_header(r, "Transfer-Encoding", &v) == 7 &&
                     memcmp(v, "chunked", 7) == 0,
                 "a Transfer-Encoding other than chunked");
        r->chunked = 1;
        size_t used = parse_chunked(hend + 4, left - head_len, r);
        *pos = r->truncated ? len : *pos + head_len + used;
        return 1;
    }
    if (streamed && expect_body) {
        FZ_CHECK(r->close, "a body with no length on a connection that stays open");
        r->until_close = 1;
        r->content_length = left - head_len;
        *pos = len;
        return 1;
    }
    if (left < head_len + body_len) {
        r->truncated = 1;
        *pos = len;
        return 1;
    }
    *pos += head_len + body_len;
    return 1;
}

/* ---- text ---------------------------------------------------------------------------------- */

int fz_utf8_valid(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        size_t k;
        unsigned cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            k = 1, cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            k = 2, cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            k = 3, cp = c & 0x07;
        } else {
            return 0;
        }
        if (n - i <= k)
            return 0;
        for (size_t j = 1; j <= k; j++) {
            unsigned char d = (unsigned char)s[i + j];
            if ((d & 0xC0) != 0x80)
                return 0;
            cp = cp << 6 | (d & 0x3F);
        }
        if ((k == 2 && cp < 0x800) || (k == 3 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += k + 1;
    }
    return 1;
}
