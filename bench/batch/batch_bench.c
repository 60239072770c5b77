/*
 * batch_bench: benchmarks for the coalescing batcher (src/policy/batch.c), in process and over
 * HTTP.
 *
 *   batch_bench inproc [-n KEYS] [-b MAX_BATCH] [-d DISTINCT] [-v]
 *       submits KEYS keys (DISTINCT different ones, cycled; default all distinct) to a batcher
 *       whose dispatch resolves every key at once, inside the dispatch call; each caller
 *       registers a done-callback that reads the value and drops its future. Keys are formatted
 *       beforehand, so the clock covers only the batcher and the futures. -v resolves with a
 *       small shared value (tc_batch_resolve_bytes) instead of NULL. Prints keys per second.
 *   batch_bench http HOST PORT [-p PATH_PREFIX] [-n REQUESTS] [-d DISTINCT] [-s SEQUENTIAL]
 *       opens REQUESTS connections first, then writes on each, in one loop iteration,
 *       GET PATH_PREFIX + "id-<i % DISTINCT>" [/api/metadata/], and prints the latency
 *       percentiles (request written -> whole response read) and the status counts. With -s,
 *       one keep-alive connection sends SEQUENTIAL requests one after the other instead.
 *
 * Output lines are "key=value" so that bench/batch/run can pick them up.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "tailcut/batch.h"
#include "tailcut/future.h"

/* ---- in process ----------------------------------------------------------------------------- */

typedef struct inproc {
    int with_values;
    size_t answered;
    size_t bad;
} inproc;

static void resolve_now(tc_batch *batch, void *data)
{
    inproc *ip = data;
    size_t n = tc_batch_size(batch);
    for (size_t i = 0; i < n; i++) {
        if (ip->with_values) {
            size_t len;
            const char *k = tc_batch_key(batch, i, &len);
            tc_batch_resolve_bytes(batch, i, k, len);
        } else {
            tc_batch_resolve(batch, i, NULL);
        }
    }
    tc_batch_done(batch);
}

static void on_key_done(tc_future *f, void *data)
{
    inproc *ip = data;
    if (tc_future_state_of(f) == TC_FUTURE_FULFILLED)
        ip->answered++;
    else
        ip->bad++;
    tc_future_unref(f);
}

/* Room for one key "key-N": 4 + the 20 digits of the largest size_t + NUL. */
#define KEY_SLOT 25

static int run_inproc(size_t nkeys, size_t max_batch, size_t distinct, int with_values)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    inproc ip = {with_values, 0, 0};
    tc_batcher_config cfg;
    tc_batcher_config_init(&cfg);
    cfg.max_batch = max_batch;
    cfg.dispatch = resolve_now;
    cfg.data = &ip;
    tc_batcher *b = NULL;
    if (tc_batcher_new(&b, &loop, &cfg) != 0)
        return 1;
    char *keys = malloc(distinct * KEY_SLOT);
    if (keys == NULL)
        return 1;
    for (size_t i = 0; i < distinct; i++)
        snprintf(keys + i * KEY_SLOT, KEY_SLOT, "key-%zu", i);

    uint64_t t0 = uv_hrtime();
    for (size_t i = 0; i < nkeys; i++) {
        const char *k = keys + (i % distinct) * KEY_SLOT;
        tc_future *f = NULL;
        if (tc_batcher_submit(&f, b, k, strlen(k)) != 0 || tc_future_on_done(f, on_key_done, &ip))
            return 1;
    }
    tc_batcher_flush(b);
    uv_run(&loop, UV_RUN_NOWAIT);
    double secs = (double)(uv_hrtime() - t0) / 1e9;

    tc_batcher_stats st;
    tc_batcher_get_stats(b, &st);
    tc_batcher_close(b, NULL, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    free(keys);
    printf("keys=%zu\nanswered=%zu\nfailed=%zu\nbatches=%llu\ndedup_hits=%llu\n", nkeys,
           ip.answered, ip.bad, (unsigned long long)st.batches_sent,
           (unsigned long long)st.dedup_hits);
    printf("seconds=%.3f\nkeys_per_sec=%.0f\n", secs, (double)nkeys / secs);
    return ip.answered == nkeys ? 0 : 1;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(const double *v, size_t n, double p)
{
    size_t i = (size_t)(p / 100.0 * (double)(n - 1) + 0.5);
    return v[i < n ? i : n - 1];
}

/* ---- over HTTP ------------------------------------------------------------------------------ */

/* A raw HTTP/1.1 load generator on libuv: connections are opened first, then every request is
 * written in one loop iteration, so the server sees a true burst and each latency is the time
 * from writing the request to reading the whole response (no connect, no client-side queue). */

#define CONNECT_AT_ONCE 256      /* connects in progress at a time (stay under the backlog) */
#define MAX_RESPONSE (64 * 1024) /* bytes of one response we accept */

typedef struct load load;

typedef struct conn {
    uv_tcp_t tcp;
    uv_connect_t creq;
    load *ld;
    size_t idx;
    uint64_t t0;
    char *buf;
    size_t len;
    int connected;
    int finished;
} conn;

struct load {
    uv_loop_t *loop;
    struct sockaddr_in addr;
    conn *conns;
    size_t n, nconnected, nconnecting, nstarted, ndone, nfailed;
    const char *prefix;
    size_t distinct;
    size_t seq_left; /* sequential mode: requests still to send on conns[0] */
    size_t seq_i;
    double *lat_ms;
    size_t nlat, lat_cap;
    size_t status[600];
};

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *out)
{
    conn *c = h->data;
    if (c->buf == NULL)
        c->buf = malloc(MAX_RESPONSE);
    out->base = c->buf == NULL ? NULL : c->buf + c->len;
    out->len = c->buf == NULL ? 0 : MAX_RESPONSE - c->len;
}

static int send_request(conn *c, size_t id);

/* 1 when buf holds one complete response; sets *status. */
static int response_complete(const char *buf, size_t len, int *status)
{
    const char *end = memmem(buf, len, "\r\n\r\n", 4);
    if (end == NULL)
        return 0;
    size_t head = (size_t)(end - buf) + 4;
    const char *cl = memmem(buf, head, "Content-Length:", 15);
    if (cl == NULL)
        cl = memmem(buf, head, "content-length:", 15);
    size_t body = cl != NULL ? strtoul(cl + 15, NULL, 10) : 0;
    if (len < head + body)
        return 0;
    *status = len > 12 ? atoi(buf + 9) : 0;
    return 1;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    conn *c = s->data;
    load *ld = c->ld;
    int status = 0;
    if (nread < 0 || (nread == 0 && buf->base == NULL)) {
        if (nread == 0)
            return;
        if (!c->finished) {
            c->finished = 1;
            ld->nfailed++;
            ld->ndone++;
        }
        uv_read_stop(s);
        return;
    }
    c->len += (size_t)nread;
    if (!response_complete(c->buf, c->len, &status)) {
        if (c->len == MAX_RESPONSE) {
            c->finished = 1;
            ld->nfailed++;
            ld->ndone++;
            uv_read_stop(s);
        }
        return;
    }
    if (ld->nlat < ld->lat_cap)
        ld->lat_ms[ld->nlat++] = (double)(uv_hrtime() - c->t0) / 1e6;
    if (status >= 0 && status < 600)
        ld->status[status]++;
    c->len = 0;
    if (ld->seq_left > 0) {
        ld->seq_left--;
        if (send_request(c, ld->seq_i++) == 0)
            return;
    }
    c->finished = 1;
    ld->ndone++;
    uv_read_stop(s);
}

static int send_request(conn *c, size_t id)
{
    load *ld = c->ld;
    char req[512];
    int n = snprintf(req, sizeof(req), "GET %sid-%zu HTTP/1.1\r\nHost: bench\r\n\r\n", ld->prefix,
                     id % ld->distinct);
    uv_buf_t b = uv_buf_init(req, (unsigned)n);
    c->t0 = uv_hrtime();
    /* Requests are small: a fresh socket's buffer always takes them whole. */
    return uv_try_write((uv_stream_t *)&c->tcp, &b, 1) == n ? 0 : -1;
}

static void connect_more(load *ld);

static void on_connect(uv_connect_t *req, int status)
{
    conn *c = req->data;
    load *ld = c->ld;
    ld->nconnecting--;
    if (status == 0) {
        c->connected = 1;
        ld->nconnected++;
    } else {
        fprintf(stderr, "connect: %s\n", uv_strerror(status));
        c->finished = 1;
        ld->nfailed++;
        ld->ndone++;
    }
    connect_more(ld);
}

static void connect_more(load *ld)
{
    while (ld->nstarted < ld->n && ld->nconnecting < CONNECT_AT_ONCE) {
        conn *c = &ld->conns[ld->nstarted];
        c->ld = ld;
        c->idx = ld->nstarted++;
        uv_tcp_init(ld->loop, &c->tcp);
        c->tcp.data = c;
        c->creq.data = c;
        ld->nconnecting++;
        uv_tcp_connect(&c->creq, &c->tcp, (const struct sockaddr *)&ld->addr, on_connect);
    }
}

/* n connections, one request each, all written at once; or with seq > 0, one connection that
 * sends seq requests one after the other (keep-alive). */
static int run_http(const char *host, int port, const char *prefix, size_t n, size_t distinct,
                    size_t seq)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    load ld;
    memset(&ld, 0, sizeof(ld));
    ld.loop = &loop;
    ld.prefix = prefix;
    ld.distinct = distinct;
    if (seq > 0) {
        n = 1;
        ld.seq_left = seq - 1;
        ld.seq_i = 1;
    }
    size_t nconns = n, nlat = seq > 0 ? seq : n;
    ld.n = nconns;
    ld.lat_cap = nlat;
    ld.lat_ms = calloc(nlat, sizeof(double));
    ld.conns = calloc(nconns, sizeof(conn));
    if (ld.lat_ms == NULL || ld.conns == NULL || uv_ip4_addr(host, port, &ld.addr) != 0)
        return 1;
    connect_more(&ld);
    while (ld.nconnected + ld.nfailed < nconns)
        uv_run(&loop, UV_RUN_ONCE);

    uint64_t t0 = uv_hrtime();
    for (size_t i = 0; i < nconns; i++) {
        conn *c = &ld.conns[i];
        if (!c->connected)
            continue;
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
        if (send_request(c, i) != 0) {
            c->finished = 1;
            ld.nfailed++;
            ld.ndone++;
            uv_read_stop((uv_stream_t *)&c->tcp);
        }
    }
    double write_ms = (double)(uv_hrtime() - t0) / 1e6;
    while (ld.ndone < nconns)
        uv_run(&loop, UV_RUN_ONCE);
    double secs = (double)(uv_hrtime() - t0) / 1e9;
    for (size_t i = 0; i < nconns; i++) {
        if (!uv_is_closing((uv_handle_t *)&ld.conns[i].tcp))
            uv_close((uv_handle_t *)&ld.conns[i].tcp, NULL);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);

    qsort(ld.lat_ms, ld.nlat, sizeof(double), cmp_double);
    printf("requests=%zu\nwrite_all_ms=%.2f\nseconds=%.3f\n", nlat, write_ms, secs);
    if (ld.nlat > 0)
        printf("p50_ms=%.2f\np90_ms=%.2f\np99_ms=%.2f\nmax_ms=%.2f\n", pct(ld.lat_ms, ld.nlat, 50),
               pct(ld.lat_ms, ld.nlat, 90), pct(ld.lat_ms, ld.nlat, 99), ld.lat_ms[ld.nlat - 1]);
    printf("failed=%zu\n", ld.nfailed);
    for (int s = 0; s < 600; s++)
        if (ld.status[s] > 0)
            printf("status_%d=%zu\n", s, ld.status[s]);
    for (size_t i = 0; i < nconns; i++)
        free(ld.conns[i].buf);
    free(ld.conns);
    free(ld.lat_ms);
    return 0;
}

static size_t opt_size(int argc, char **argv, const char *flag, size_t dflt)
{
    for (int i = 2; i + 1 < argc; i++)
        if (strcmp(argv[i], flag) == 0)
            return (size_t)strtoull(argv[i + 1], NULL, 10);
    return dflt;
}

static int has_flag(int argc, char **argv, const char *flag)
{
    for (int i = 2; i < argc; i++)
        if (strcmp(argv[i], flag) == 0)
            return 1;
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "inproc") == 0) {
        size_t n = opt_size(argc, argv, "-n", 5000000);
        size_t d = opt_size(argc, argv, "-d", n);
        return run_inproc(n, opt_size(argc, argv, "-b", 50), d ? d : 1, has_flag(argc, argv, "-v"));
    }
    if (argc >= 4 && strcmp(argv[1], "http") == 0) {
        size_t n = opt_size(argc, argv, "-n", 5000);
        size_t d = opt_size(argc, argv, "-d", n);
        const char *prefix = "/api/metadata/";
        for (int i = 4; i + 1 < argc; i++)
            if (strcmp(argv[i], "-p") == 0)
                prefix = argv[i + 1];
        return run_http(argv[2], atoi(argv[3]), prefix, n ? n : 1, d ? d : 1,
                        opt_size(argc, argv, "-s", 0));
    }
    fprintf(stderr,
            "usage: batch_bench inproc [-n KEYS] [-b MAX_BATCH] [-d DISTINCT] [-v]\n"
            "       batch_bench http HOST PORT [-p PATH_PREFIX] [-n REQUESTS] [-d DISTINCT] "
            "[-s SEQUENTIAL]\n");
    return 2;
}
