/*
 * A stuck upstream for the deadline benchmark: it accepts every connection, reads a request,
 * and answers it only after a fixed delay (default 3 s), like a server whose backend hangs. It
 * never notices that a client left: a client's FIN or reset changes nothing until the delay is
 * over, when it writes (into the void) and closes. That is what makes aborted connections
 * expensive for the client when it closes them with a FIN: its side waits in FIN_WAIT2 and then
 * TIME_WAIT, holding an ephemeral port.
 *
 *   stuck_upstream PORT_FILE [DELAY_MS]   listens on 127.0.0.1:0 and writes the port to PORT_FILE
 *
 * Runs until killed. Loopback only.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#define STUCK_INPUT_MAX 8192 /* request bytes kept per connection; more is ignored */

static const char ANSWER[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             "Content-Length: 15\r\n\r\n{\"stuck\": true}";
static uint64_t delay_ms = 3000;

typedef struct sconn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_write_t write;
    size_t len;
    int handles;
    int waiting; /* a request is being held */
    char buf[STUCK_INPUT_MAX];
} sconn;

static void on_closed(uv_handle_t *h)
{
    sconn *c = h->data;
    if (--c->handles == 0)
        free(c);
}

static void sconn_close(sconn *c)
{
    if (uv_is_closing((uv_handle_t *)&c->tcp))
        return;
    uv_close((uv_handle_t *)&c->tcp, on_closed);
    uv_close((uv_handle_t *)&c->timer, on_closed);
}

static void on_written(uv_write_t *w, int status)
{
    sconn *c = w->data;
    c->waiting = 0;
    if (status < 0)
        sconn_close(c);
}

static void on_timer(uv_timer_t *t)
{
    sconn *c = t->data;
    uv_buf_t b = uv_buf_init((char *)ANSWER, sizeof(ANSWER) - 1);
    c->write.data = c;
    if (uv_write(&c->write, (uv_stream_t *)&c->tcp, &b, 1, on_written) != 0)
        sconn_close(c);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    sconn *c = h->data;
    (void)suggested;
    if (c->len >= sizeof(c->buf))
        c->len = 0; /* never store more than a request's worth */
    *b = uv_buf_init(c->buf + c->len, (unsigned)(sizeof(c->buf) - c->len));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    sconn *c = s->data;
    (void)b;
    if (n < 0) {
        /* The client left: a stuck server does not notice. It stops reading and keeps the
         * socket until its timer fires (or closes now if nothing is being held). */
        uv_read_stop(s);
        if (!c->waiting)
            sconn_close(c);
        return;
    }
    c->len += (size_t)n;
    if (!c->waiting && memmem(c->buf, c->len, "\r\n\r\n", 4) != NULL) {
        c->len = 0;
        c->waiting = 1;
        uv_timer_start(&c->timer, on_timer, delay_ms, 0);
    }
}

static void on_connection(uv_stream_t *l, int status)
{
    if (status < 0)
        return;
    sconn *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return;
    uv_tcp_init(l->loop, &c->tcp);
    uv_timer_init(l->loop, &c->timer);
    c->tcp.data = c->timer.data = c;
    c->handles = 2;
    if (uv_accept(l, (uv_stream_t *)&c->tcp) != 0 ||
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0)
        sconn_close(c);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: stuck_upstream PORT_FILE [DELAY_MS]\n");
        return 2;
    }
    if (argc > 2)
        delay_ms = strtoull(argv[2], NULL, 10);
    uv_loop_t *loop = uv_default_loop();
    uv_tcp_t server;
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    uv_tcp_init(loop, &server);
    if (uv_tcp_bind(&server, (const struct sockaddr *)&a, 0) != 0 ||
        uv_listen((uv_stream_t *)&server, 4096, on_connection) != 0) {
        fprintf(stderr, "stuck_upstream: cannot listen\n");
        return 1;
    }
    struct sockaddr_in got;
    int len = sizeof(got);
    uv_tcp_getsockname(&server, (struct sockaddr *)&got, &len);
    FILE *f = fopen(argv[1], "w");
    if (f == NULL)
        return 1;
    fprintf(f, "%d\n", ntohs(got.sin_port));
    fclose(f);
    return uv_run(loop, UV_RUN_DEFAULT);
}
