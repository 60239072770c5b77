/*
 * What the server records about a request (see server.c for the design): its id (X-Request-Id
 * taken or drawn), the client's address, and the access-log line written when it finishes. The
 * line itself is formatted by access_log.c; this file fills the entry and writes it.
 *
 * Writing: the line is formatted in the server's own buffer (no allocation) and written with one
 * fwrite. Workers of one process share one FILE, whose lock keeps each line whole; the FILE is
 * flushed once a second by the server's tick and at close, so under load a line costs no system
 * call of its own.
 */
#include <errno.h>
#include <http_parser.h>
#include <netinet/in.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "server_internal.h"

/* ---- request id ----------------------------------------------------------------------------- */

void tc__srv_request_id_generate(tc_request *r)
{
    static const char hex[] = "0123456789abcdef";
    uint64_t v[2] = {tc__rng_next(&r->srv->rng), tc__rng_next(&r->srv->rng)};
    for (size_t i = 0; i < 16; i++) { /* a byte, two digits: every answer carries one */
        unsigned b = (unsigned)(v[i / 8] >> (8 * (i % 8))) & 0xffu;
        r->id[2 * i] = hex[b >> 4];
        r->id[2 * i + 1] = hex[b & 15];
    }
    r->id_len = 32;
}

static int is_blank(char ch)
{
    return ch == ' ' || ch == '\t';
}

void tc__srv_request_id_init(tc_request *r)
{
    static const char name[] = "X-Request-Id";
    const tc__srv_hdr *found = NULL;
    for (unsigned i = 0; i < r->nhdrs; i++) {
        const tc__srv_hdr *hd = &r->hdrs[i];
        if (hd->name_len == sizeof(name) - 1 &&
            strncasecmp(r->buf + hd->name_off, name, sizeof(name) - 1) == 0) {
            if (found != NULL) { /* two of them: which one the client meant is unknown */
                found = NULL;
                break;
            }
            found = hd;
        }
    }
    if (found != NULL) {
        const char *v = r->buf + found->value_off;
        size_t len = found->value_len;
        while (len > 0 && is_blank(*v)) {
            v++;
            len--;
        }
        while (len > 0 && is_blank(v[len - 1]))
            len--;
        int ok = len >= 1 && len <= TC_REQUEST_ID_MAX;
        for (size_t i = 0; ok && i < len; i++)
            ok = (unsigned char)v[i] >= 0x21 && (unsigned char)v[i] <= 0x7E;
        if (ok) {
            memcpy(r->id, v, len);
            r->id_len = (unsigned char)len;
            return;
        }
    }
    tc__srv_request_id_generate(r);
}

tc_str tc_request_id(const tc_request *r)
{
    return (tc_str){r->id, r->id_len};
}

void tc_request_set_attempts(tc_request *r, unsigned attempts)
{
    r->attempts = attempts;
    r->attempts_set = 1;
}

void tc_request_set_replica(tc_request *r, const char *label)
{
    r->replica = label;
}

/* ---- client address ------------------------------------------------------------------------- */

void tc__srv_conn_client(tc__srv_conn *c)
{
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    int rc = uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len);
    if (rc == 0 && ss.ss_family == AF_INET)
        rc = uv_ip4_name((struct sockaddr_in *)&ss, c->client, sizeof(c->client));
    else if (rc == 0 && ss.ss_family == AF_INET6)
        rc = uv_ip6_name((struct sockaddr_in6 *)&ss, c->client, sizeof(c->client));
    else
        rc = -1;
    c->client_len = rc == 0 ? (unsigned char)strlen(c->client) : 0;
}

/* ---- the access log ------------------------------------------------------------------------- */

/* The line's time: now, to the millisecond; the date part is redone once a second. */
static const char *log_time(tc_server *srv)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    unsigned ms = (unsigned)(ts.tv_nsec / 1000000);
    if (ts.tv_sec != srv->log_sec) {
        srv->log_sec = ts.tv_sec;
        tc__log_time(srv->log_time, ts.tv_sec, ms);
    } else {
        srv->log_time[20] = (char)('0' + ms / 100);
        srv->log_time[21] = (char)('0' + ms / 10 % 10);
        srv->log_time[22] = (char)('0' + ms % 10);
    }
    return srv->log_time;
}

void tc__srv_access_log(tc_request *r)
{
    tc_server *srv = r->srv;
    FILE *log = srv->cfg.access_log;
    if (log == NULL)
        return;
    tc__log_entry e;
    memset(&e, 0, sizeof(e));
    e.time = log_time(srv);
    if (r->client_len > 0) {
        e.client = r->client;
        e.client_len = r->client_len;
    }
    if (r->line_done) {
        e.method = http_method_str((enum http_method)r->method);
        e.target = r->buf + r->target_off;
        e.target_len = r->target_len > TC__LOG_TARGET_MAX ? TC__LOG_TARGET_MAX : r->target_len;
        e.http_major = r->http_major;
        e.http_minor = r->http_minor;
    }
    /* 499: the client left first; 444: finished with no answer at all (nginx's marks). */
    e.status = r->aborted ? 499 : r->drop ? 444 : r->status;
    e.bytes = r->resp_len;
    e.duration_us = r->ready_ns ? (int64_t)((uv_hrtime() - r->ready_ns) / 1000) : -1;
    e.attempts = r->attempts_set ? (int64_t)r->attempts : -1;
    e.request_id = r->id;
    e.request_id_len = r->id_len;
    e.with_replica = srv->cfg.access_log_replica;
    e.replica = r->replica;
    tc__buf b;
    tc__buf_init(&b, srv->log_line, sizeof(srv->log_line), sizeof(srv->log_line) - 1);
    if (tc__log_format(&b, srv->cfg.access_log_format, &e) == 0)
        /* the access log is best effort: a full disk must not fail requests */
        (void)fwrite(b.data, 1, b.len, log);
}

/* The seed of a server's request ids: the kernel's random pool; the clock and the server's
 * address only if that fails (a very old kernel or a seccomp filter). */
uint64_t tc__srv_id_seed(const tc_server *srv)
{
    uint64_t seed;
    if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) == (ssize_t)sizeof(seed))
        return seed;
    return uv_hrtime() ^ ((uint64_t)(uintptr_t)srv << 16) ^ (uint64_t)getpid();
}
