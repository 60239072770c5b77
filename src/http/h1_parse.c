/*
 * The response reader of h1_parse.h over http-parser.
 *
 * http-parser hands out the head in pieces (status text, header names and values, each possibly
 * split across reads); we rebuild the header block from them rather than keeping the raw bytes,
 * so that the body can follow it in the same buffer without a copy of the read buffer. The
 * parser is paused at the end of a final response, which leaves any bytes after it unparsed and
 * countable.
 */
#include <string.h>
#include <strings.h>

#include "base/fmt.h"
#include "h1_parse.h"
#include "tailcut/error.h"

static tc__h1 *of(http_parser *hp)
{
    return hp->data;
}

/* Stops the parser from inside a callback, for reason err. */
static int stop(tc__h1 *h1, tc__h1_status err)
{
    h1->err = err;
    return -1;
}

static int response_put(tc__h1 *h1, const char *p, size_t n)
{
    int rc = tc__buf_append(h1->out, p, n);
    if (rc == TC_ETOOLARGE)
        return stop(h1, TC__H1_HEADERS_TOO_LARGE);
    if (rc != 0)
        return stop(h1, TC__H1_NOMEM);
    return 0;
}

/* Head bytes go through here: they count toward the header block's limit. */
static int response_put_head(tc__h1 *h1, const char *p, size_t n)
{
    if (h1->out->len + n > TC__H1_MAX_HEADER_BYTES)
        return stop(h1, TC__H1_HEADERS_TOO_LARGE);
    h1->line_len += n;
    if (h1->line_len > TC__H1_MAX_LINE)
        return stop(h1, TC__H1_LINE_TOO_LONG);
    return response_put(h1, p, n);
}

static int status_line(tc__h1 *h1)
{
    if (h1->status_written)
        return 0;
    h1->status_written = 1;
    char s[32];
    http_parser *hp = &h1->parser;
    int n = 0;
    s[n++] = 'H', s[n++] = 'T', s[n++] = 'T', s[n++] = 'P', s[n++] = '/';
    s[n++] = (char)('0' + hp->http_major % 10);
    s[n++] = '.';
    s[n++] = (char)('0' + hp->http_minor % 10);
    s[n++] = ' ';
    unsigned st = hp->status_code % 1000;
    s[n++] = (char)('0' + st / 100);
    s[n++] = (char)('0' + st / 10 % 10);
    s[n++] = (char)('0' + st % 10);
    s[n++] = ' ';
    h1->line_len = 0;
    return response_put_head(h1, s, (size_t)n);
}

static int on_response_status(http_parser *hp, const char *at, size_t len)
{
    tc__h1 *h1 = of(hp);
    if (status_line(h1) != 0)
        return -1;
    return response_put_head(h1, at, len);
}

/* The Keep-Alive value being read (if it is) ends where out ends now. */
static void keep_alive_end(tc__h1 *h1)
{
    if (!h1->in_keep_alive)
        return;
    h1->keep_alive_len = h1->out->len - h1->keep_alive_off;
    h1->in_keep_alive = 0;
}

static int on_response_header_field(http_parser *hp, const char *at, size_t len)
{
    tc__h1 *h1 = of(hp);
    if (h1->body_off != 0)
        return 0; /* a trailer: read and dropped */
    if (status_line(h1) != 0)
        return -1;
    if (h1->last != 1) {
        keep_alive_end(h1);
        h1->line_len = 0;
        if (response_put_head(h1, TC__LIT("\r\n")) != 0)
            return -1;
        h1->line_len = 0;
        h1->name_off = h1->out->len;
    }
    h1->last = 1;
    return response_put_head(h1, at, len);
}

static int on_response_header_value(http_parser *hp, const char *at, size_t len)
{
    tc__h1 *h1 = of(hp);
    if (h1->body_off != 0)
        return 0;
    if (h1->last != 2) {
        /* the name is whole now, however many pieces it came in */
        const char *name = h1->out->data + h1->name_off;
        int keep_alive = h1->keep_alive_off == 0 && h1->out->len - h1->name_off == 10 &&
                         strncasecmp(name, "keep-alive", 10) == 0;
        if (response_put_head(h1, TC__LIT(": ")) != 0)
            return -1;
        if (keep_alive) {
            h1->keep_alive_off = h1->out->len;
            h1->in_keep_alive = 1;
        }
    }
    h1->last = 2;
    return response_put_head(h1, at, len);
}

static int on_response_headers_complete(http_parser *hp)
{
    tc__h1 *h1 = of(hp);
    if (status_line(h1) != 0)
        return -1;
    keep_alive_end(h1);
    h1->line_len = 0;
    if (response_put_head(h1, TC__LIT("\r\n\r\n")) != 0 || response_put(h1, "", 1) != 0)
        return -1;
    h1->body_off = h1->out->len;
    if (hp->status_code == 101)
        return stop(h1, TC__H1_SWITCHING_PROTOCOLS);
    if (hp->status_code >= 100 && hp->status_code < 200)
        return 0; /* interim: no body; dropped when complete */
    int no_body = h1->head_only || hp->status_code == 204 || hp->status_code == 304;
    if (!no_body && (hp->flags & F_CONTENTLENGTH) && hp->content_length > h1->max_body)
        return stop(h1, TC__H1_BODY_TOO_LARGE); /* refused at its head, which is not taken */
    h1->head_done = 1;
    h1->status = (int)hp->status_code;
    h1->version = hp->http_major == 1 && hp->http_minor == 0 ? 10 : 11;
    if (no_body) {
        h1->framing = TC__H1_FRAMING_NONE;
        return 1; /* no body whatever the headers say (RFC 9112 section 6.3) */
    }
    if (hp->flags & F_CHUNKED) {
        h1->framing = TC__H1_FRAMING_CHUNKED;
    } else if (hp->flags & F_CONTENTLENGTH) {
        h1->framing = TC__H1_FRAMING_LENGTH;
        h1->content_length = (long long)hp->content_length;
    } else {
        h1->framing = TC__H1_FRAMING_CLOSE; /* a response with neither: until the close */
    }
    return 0;
}

static int on_response_body(http_parser *hp, const char *at, size_t len)
{
    tc__h1 *h1 = of(hp);
    if (len > h1->max_body - (h1->out->len - h1->body_off))
        return stop(h1, TC__H1_BODY_TOO_LARGE);
    return response_put(h1, at, len);
}

/* Stream mode's on_body (its own callback, so that the other mode's path stays as it was): a
 * piece of body, counted against max_body (out holds only the head). The first piece of a feed
 * is only pointed at; a second one gathers both in the spill buffer. */
static int on_stream_body(http_parser *hp, const char *at, size_t len)
{
    tc__h1 *h1 = of(hp);
    if (len > h1->max_body - h1->body_len)
        return stop(h1, TC__H1_BODY_TOO_LARGE);
    h1->body_len += len;
    if (h1->span_len == 0 && h1->spill->len == 0) {
        h1->span = at;
        h1->span_len = len;
        return 0;
    }
    int rc = 0;
    if (h1->span_len > 0) {
        rc = tc__buf_append(h1->spill, h1->span, h1->span_len);
        h1->span_len = 0;
    }
    if (rc == 0)
        rc = tc__buf_append(h1->spill, at, len);
    if (rc == TC_ENOMEM)
        return stop(h1, TC__H1_NOMEM);
    /* The caller's spill holds one read's bytes (its limit is a read's size): more cannot be. */
    return rc == 0 ? 0 : stop(h1, TC__H1_BODY_TOO_LARGE);
}

static void restart_head(tc__h1 *h1)
{
    h1->out->len = 0;
    h1->body_off = 0;
    h1->line_len = 0;
    h1->last = 0;
    h1->status_written = 0;
    h1->keep_alive_off = 0;
    h1->keep_alive_len = 0;
    h1->in_keep_alive = 0;
}

static int on_response_message_complete(http_parser *hp)
{
    tc__h1 *h1 = of(hp);
    if (hp->status_code >= 100 && hp->status_code < 200) {
        restart_head(h1); /* the final response follows on the same connection */
        return 0;
    }
    h1->done = 1;
    h1->keep_alive = http_should_keep_alive(hp) != 0;
    http_parser_pause(hp, 1);
    return 0;
}

static const http_parser_settings settings = {
    .on_status = on_response_status,
    .on_header_field = on_response_header_field,
    .on_header_value = on_response_header_value,
    .on_headers_complete = on_response_headers_complete,
    .on_body = on_response_body,
    .on_message_complete = on_response_message_complete,
};

static const http_parser_settings stream_settings = {
    .on_status = on_response_status,
    .on_header_field = on_response_header_field,
    .on_header_value = on_response_header_value,
    .on_headers_complete = on_response_headers_complete,
    .on_body = on_stream_body,
    .on_message_complete = on_response_message_complete,
};

void tc__h1_init(tc__h1 *h1, tc__buf *out, size_t max_body, int head_only)
{
    memset(h1, 0, sizeof(*h1));
    http_parser_init(&h1->parser, HTTP_RESPONSE);
    h1->parser.data = h1;
    h1->settings = &settings;
    h1->out = out;
    h1->max_body = max_body;
    h1->head_only = head_only;
}

void tc__h1_stream(tc__h1 *h1, tc__buf *spill)
{
    h1->spill = spill;
    h1->settings = &stream_settings;
}

void tc__h1_body(const tc__h1 *h1, const char **p, size_t *n)
{
    if (h1->span_len > 0) {
        *p = h1->span;
        *n = h1->span_len;
    } else if (h1->spill != NULL && h1->spill->len > 0) {
        *p = h1->spill->data;
        *n = h1->spill->len;
    } else {
        *p = NULL;
        *n = 0;
    }
}

static tc__h1_status result(const tc__h1 *h1)
{
    if (h1->err != 0)
        return h1->err;
    if (h1->done)
        return TC__H1_DONE;
    if (HTTP_PARSER_ERRNO(&h1->parser) != HPE_OK)
        return TC__H1_INVALID;
    return TC__H1_MORE;
}

tc__h1_status tc__h1_feed(tc__h1 *h1, const char *data, size_t n, size_t *extra)
{
    *extra = 0;
    h1->span_len = 0; /* the last feed's bytes are the caller's again */
    if (h1->done)
        return TC__H1_DONE; /* never parse past a final response */
    if (h1->err != 0 || (HTTP_PARSER_ERRNO(&h1->parser) != HPE_OK))
        return result(h1);
    h1->received += n;
    size_t used = http_parser_execute(&h1->parser, h1->settings, data, n);
    tc__h1_status rc = result(h1);
    if (rc == TC__H1_DONE)
        *extra = n - used;
    return rc;
}

tc__h1_status tc__h1_eof(tc__h1 *h1)
{
    h1->span_len = 0;
    if (h1->done)
        return TC__H1_DONE;
    if (h1->err == 0 && HTTP_PARSER_ERRNO(&h1->parser) == HPE_OK && h1->body_off != 0) {
        /* The end of a close-delimited body completes it; in any other state it is an error,
         * which we report as the cut-short response it is. */
        (void)http_parser_execute(&h1->parser, h1->settings, NULL, 0);
        if (h1->done)
            return TC__H1_DONE;
        if (h1->err != 0)
            return h1->err;
    }
    return h1->received == 0 ? TC__H1_CLOSED_BEFORE_ANY : TC__H1_CLOSED_INCOMPLETE;
}

const char *tc__h1_why(const tc__h1 *h1, tc__h1_status status)
{
    switch (status) {
    case TC__H1_MORE:
    case TC__H1_DONE:
        break;
    case TC__H1_INVALID:
        return http_errno_description(HTTP_PARSER_ERRNO(&h1->parser));
    case TC__H1_HEADERS_TOO_LARGE:
        return "response headers too large";
    case TC__H1_LINE_TOO_LONG:
        return "response header line too long";
    case TC__H1_SWITCHING_PROTOCOLS:
        return "unexpected 101 Switching Protocols";
    case TC__H1_BODY_TOO_LARGE:
        return "body too large";
    case TC__H1_NOMEM:
        return "out of memory";
    case TC__H1_CLOSED_BEFORE_ANY:
        return "connection closed before any response byte";
    case TC__H1_CLOSED_INCOMPLETE:
        return "connection closed before the response was complete";
    }
    return "invalid response";
}
