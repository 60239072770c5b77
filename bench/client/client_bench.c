/*
 * client_bench: load and memory benchmarks for the pooled HTTP client (src/client/client.c).
 *
 *   client_bench throughput URL [-c N] [-d SECONDS] [-e native|curl]
 *       keeps N requests in flight (each completion starts the next one) for SECONDS on a
 *       client with max_connections = N, then prints requests/s and latency percentiles.
 *   client_bench memory URL [-c N] [-p POOL] [-e native|curl]
 *       starts N requests at once against a slow server and reports (peak RSS - baseline RSS)
 *       / N, the heap growth per request, and the heap per idle pooled connection once all are
 *       done. POOL is max_connections: N (default) puts every request on its own connection;
 *       the client's default (1024) queues the rest.
 *   client_bench serve-delay PORT_FILE [-m MS] [-l SECONDS] [-s 1]
 *       a tiny keep-alive HTTP/1.1 server on 127.0.0.1 port 0 that answers every request after
 *       MS milliseconds; writes its port to PORT_FILE; exits after SECONDS (default 120). Run it
 *       as its own process so that its memory is not counted by `memory`. With -s 1 it is
 *       stuck: it never notices a client leaving (see `stuck` below).
 * -e picks the client's engine (TC_CLIENT_ENGINE_NATIVE, the default, or _CURL).
 *
 * Output lines are "key=value" so that bench/client/run can pick them up.
 */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <uv.h>

#include "tailcut/client.h"
#include "tailcut/future.h"

#define MAX_LATENCIES (4u << 20)

static long status_kb(const char *key)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    size_t klen = strlen(key);
    while (f && fgets(line, sizeof(line), f))
        if (strncmp(line, key, klen) == 0 && line[klen] == ':')
            v = strtol(line + klen + 1, NULL, 10);
    if (f)
        fclose(f);
    return v;
}

static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* ---- throughput ------------------------------------------------------------------------------ */

typedef struct load {
    tc_client *client;
    const char *url;
    uint64_t end_ns;
    uint64_t ok, errors;
    long inflight;
    double *lat;
    size_t nlat;
    char first_error[256];
} load;

static void load_start(load *ld);

static void load_done(tc_future *f, void *data)
{
    load *ld = data;
    ld->inflight--;
    if (tc_future_state_of(f) == TC_FUTURE_FULFILLED &&
        ((const tc_response *)tc_future_value(f))->status == 200) {
        ld->ok++;
        if (ld->nlat < MAX_LATENCIES)
            ld->lat[ld->nlat++] = ((const tc_response *)tc_future_value(f))->total_ms;
    } else {
        if (ld->errors++ == 0)
            snprintf(ld->first_error, sizeof(ld->first_error), "%s", tc_future_message(f));
    }
    tc_future_unref(f);
    if (uv_hrtime() < ld->end_ns)
        load_start(ld);
}

static void load_start(load *ld)
{
    tc_future *f = NULL;
    if (tc_client_get(&f, ld->client, ld->url) != 0 || tc_future_on_done(f, load_done, ld) != 0) {
        fprintf(stderr, "client_bench: could not start a request\n");
        exit(1);
    }
    ld->inflight++;
}

static tc_client_engine g_engine = TC_CLIENT_ENGINE_AUTO; /* -e native|curl */

static int run_throughput(const char *url, int conc, double seconds)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    tc_client_config cfg;
    tc_client_config_init(&cfg);
    cfg.max_connections = (size_t)conc;
    cfg.engine = g_engine;
    load ld = {.url = url};
    ld.lat = malloc(MAX_LATENCIES * sizeof(double));
    if (ld.lat == NULL || tc_client_new(&ld.client, &loop, &cfg) != 0)
        return 1;
    uint64_t start = uv_hrtime();
    ld.end_ns = start + (uint64_t)(seconds * 1e9);
    for (int i = 0; i < conc; i++)
        load_start(&ld);
    uv_run(&loop, UV_RUN_DEFAULT);
    double elapsed = (double)(uv_hrtime() - start) / 1e9;
    tc_client_stats st;
    tc_client_get_stats(ld.client, &st);
    tc_client_close(ld.client, NULL, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    int closed = uv_loop_close(&loop);
    qsort(ld.lat, ld.nlat, sizeof(double), cmp_double);
    double p50 = ld.nlat ? ld.lat[ld.nlat / 2] : 0, p99 = ld.nlat ? ld.lat[ld.nlat * 99 / 100] : 0;
    printf("requests=%llu errors=%llu seconds=%.2f\n", (unsigned long long)ld.ok,
           (unsigned long long)ld.errors, elapsed);
    printf("requests_per_sec=%.0f\n", (double)ld.ok / elapsed);
    printf("latency_p50_ms=%.3f latency_p99_ms=%.3f\n", p50, p99);
    printf("connections_open_at_end=%zu\n", st.open_connections);
    if (ld.errors)
        printf("first_error=%s\n", ld.first_error);
    free(ld.lat);
    return closed == 0 && ld.errors == 0 ? 0 : 1;
}

/* ---- memory ---------------------------------------------------------------------------------- */

typedef struct mem {
    long done, ok;
    char first_error[256];
} mem;

static void mem_done(tc_future *f, void *data)
{
    mem *m = data;
    m->done++;
    if (tc_future_state_of(f) == TC_FUTURE_FULFILLED &&
        ((const tc_response *)tc_future_value(f))->status == 200)
        m->ok++;
    else if (m->first_error[0] == '\0')
        snprintf(m->first_error, sizeof(m->first_error), "%s", tc_future_message(f));
}

static int run_memory(const char *url, int n, int pool)
{
    raise_fd_limit();
    uv_loop_t loop;
    uv_loop_init(&loop);
    tc_client_config cfg;
    tc_client_config_init(&cfg);
    cfg.max_connections = (size_t)(pool > 0 ? pool : n);
    cfg.engine = g_engine;
    cfg.timeout_ms = 60000;
    tc_client *client = NULL;
    tc_future **fs = calloc((size_t)n, sizeof(*fs));
    if (fs == NULL || tc_client_new(&client, &loop, &cfg) != 0)
        return 1;
    mem m = {0};
    long baseline = status_kb("VmRSS");
    size_t heap_base = mallinfo2().uordblks, heap_peak = 0;
    uint64_t start = uv_hrtime();
    for (int i = 0; i < n; i++) {
        if (tc_client_get(&fs[i], client, url) != 0 || tc_future_on_done(fs[i], mem_done, &m))
            return 1;
    }
    size_t heap_started = mallinfo2().uordblks;
    /* Run until every request is in flight, sample the heap, then let them finish. */
    for (int i = 0; i < 200 && m.done == 0; i++) {
        uv_run(&loop, UV_RUN_ONCE);
        size_t h = mallinfo2().uordblks;
        if (h > heap_peak)
            heap_peak = h;
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    double elapsed = (double)(uv_hrtime() - start) / 1e9;
    long peak = status_kb("VmHWM");
    for (int i = 0; i < n; i++)
        tc_future_unref(fs[i]);
    free(fs);
    /* Every request is done and freed: what is left on the heap is the idle pool. */
    tc_client_stats st;
    tc_client_get_stats(client, &st);
    size_t heap_idle = mallinfo2().uordblks;
    tc_client_close(client, NULL, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    int closed = uv_loop_close(&loop);
    printf("concurrent=%d max_connections=%zu ok=%ld seconds=%.2f\n", n, cfg.max_connections, m.ok,
           elapsed);
    if (st.open_connections > 0)
        printf("heap_bytes_per_idle_connection=%.0f (%zu idle connections)\n",
               (double)(heap_idle > heap_base ? heap_idle - heap_base : 0) /
                   (double)st.open_connections,
               st.open_connections);
    printf("baseline_rss_kb=%ld peak_rss_kb=%ld\n", baseline, peak);
    printf("bytes_per_request=%.0f\n", (double)(peak - baseline) * 1024.0 / n);
    printf("heap_bytes_per_request=%.0f (of which before any I/O: %.0f)\n",
           (double)(heap_peak - heap_base) / n, (double)(heap_started - heap_base) / n);
    if (m.first_error[0])
        printf("first_error=%s\n", m.first_error);
    return closed == 0 && m.ok == n ? 0 : 1;
}

/* ---- delaying server ------------------------------------------------------------------------- */

static const char RESPONSE[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                               "Content-Length: 11\r\n\r\n{\"time\": 1}";
static uint64_t delay_ms = 1000;
/* -s 1: a stuck server, as bench/smart's deadline row needs: it never notices that a client
 * left. A FIN or a reset changes nothing until the delay is over, when it answers (into the
 * void) and only then closes. A client that closes aborted connections with a FIN is left with
 * them in FIN_WAIT2 and then TIME_WAIT, holding ephemeral ports. */
static int stuck = 0;

typedef struct dconn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    int handles;
    int gone;    /* stuck: the client left while requests were held */
    int match;   /* how much of "\r\n\r\n" was seen */
    int pending; /* requests waiting for their answer */
    char buf[4096];
} dconn;

static void d_closed(uv_handle_t *h)
{
    dconn *c = h->data;
    if (--c->handles == 0)
        free(c);
}

static void d_close(dconn *c)
{
    if (!uv_is_closing((uv_handle_t *)&c->tcp)) {
        uv_close((uv_handle_t *)&c->tcp, d_closed);
        uv_close((uv_handle_t *)&c->timer, d_closed);
    }
}

static void d_written(uv_write_t *w, int status)
{
    (void)status;
    free(w);
}

static void d_answer(uv_timer_t *t)
{
    dconn *c = t->data;
    for (; c->pending > 0; c->pending--) {
        uv_write_t *w = malloc(sizeof(*w));
        uv_buf_t b = uv_buf_init((char *)RESPONSE, sizeof(RESPONSE) - 1);
        if (w == NULL || uv_write(w, (uv_stream_t *)&c->tcp, &b, 1, d_written) != 0) {
            free(w);
            d_close(c);
            return;
        }
    }
    if (c->gone)
        d_close(c);
}

static void d_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b)
{
    dconn *c = h->data;
    (void)sz;
    *b = uv_buf_init(c->buf, sizeof(c->buf));
}

static void d_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    dconn *c = s->data;
    if (n < 0) {
        if (stuck && c->pending > 0) {
            uv_read_stop(s);
            c->gone = 1;
            return;
        }
        d_close(c);
        return;
    }
    static const char end[] = "\r\n\r\n";
    for (ssize_t i = 0; i < n; i++) {
        c->match = b->base[i] == end[c->match] ? c->match + 1 : (b->base[i] == '\r');
        if (c->match == 4) {
            c->match = 0;
            if (c->pending++ == 0)
                uv_timer_start(&c->timer, d_answer, delay_ms, 0);
        }
    }
}

static void d_accept(uv_stream_t *l, int status)
{
    if (status < 0)
        return;
    dconn *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return;
    uv_tcp_init(l->loop, &c->tcp);
    uv_timer_init(l->loop, &c->timer);
    c->tcp.data = c->timer.data = c;
    c->handles = 2;
    if (uv_accept(l, (uv_stream_t *)&c->tcp) != 0 ||
        uv_read_start((uv_stream_t *)&c->tcp, d_alloc, d_read) != 0)
        d_close(c);
}

static void d_lifetime(uv_timer_t *t)
{
    (void)t;
    exit(0); /* a benchmark helper never outlives its run */
}

static int run_serve_delay(const char *port_file, uint64_t lifetime_s)
{
    raise_fd_limit();
    uv_loop_t *loop = uv_default_loop();
    static uv_tcp_t listener;
    static uv_timer_t lifetime;
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    uv_tcp_init(loop, &listener);
    if (uv_tcp_bind(&listener, (const struct sockaddr *)&a, 0) != 0 ||
        uv_listen((uv_stream_t *)&listener, 8192, d_accept) != 0)
        return 1;
    int len = sizeof(a);
    uv_tcp_getsockname(&listener, (struct sockaddr *)&a, &len);
    FILE *f = fopen(port_file, "w");
    if (f == NULL)
        return 1;
    fprintf(f, "%d\n", ntohs(a.sin_port));
    fclose(f);
    uv_timer_init(loop, &lifetime);
    uv_timer_start(&lifetime, d_lifetime, lifetime_s * 1000, 0);
    return uv_run(loop, UV_RUN_DEFAULT);
}

/* ---- main ------------------------------------------------------------------------------------ */

static void usage(void)
{
    fprintf(stderr,
            "usage: client_bench throughput URL [-c N] [-d SECONDS] [-e native|curl]\n"
            "       client_bench memory URL [-c N] [-p POOL] [-e native|curl]\n"
            "       client_bench serve-delay PORT_FILE [-m MS] [-l SECONDS] [-s 1 (stuck)]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    if (argc < 3)
        usage();
    int conc = 0, pool = 0;
    double seconds = 10, lifetime = 120;
    for (int i = 3; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "-c") == 0)
            conc = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "-p") == 0)
            pool = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "-d") == 0)
            seconds = atof(argv[i + 1]);
        else if (strcmp(argv[i], "-m") == 0)
            delay_ms = strtoull(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "-l") == 0)
            lifetime = atof(argv[i + 1]);
        else if (strcmp(argv[i], "-s") == 0)
            stuck = atoi(argv[i + 1]) != 0;
        else if (strcmp(argv[i], "-e") == 0)
            g_engine =
                strcmp(argv[i + 1], "curl") == 0 ? TC_CLIENT_ENGINE_CURL : TC_CLIENT_ENGINE_NATIVE;
        else
            usage();
    }
    if (strcmp(argv[1], "throughput") == 0)
        return run_throughput(argv[2], conc > 0 ? conc : 64, seconds);
    if (strcmp(argv[1], "memory") == 0)
        return run_memory(argv[2], conc > 0 ? conc : 5000, pool);
    if (strcmp(argv[1], "serve-delay") == 0)
        return run_serve_delay(argv[2], (uint64_t)lifetime);
    usage();
    return 2;
}
