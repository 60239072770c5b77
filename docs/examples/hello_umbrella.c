/*
 * hello_umbrella: a server and a client of tailcut on one loop, with one include.
 *
 * Starts a tc_server on 127.0.0.1 port 0 that answers every request with {"hello":"world"},
 * GETs it once with a tc_client, prints the answer, closes both and the loop. Exit status 0 if
 * the answer came, 1 otherwise. Everything it uses comes from <tailcut/tailcut.h>.
 */
#include <stdio.h>

#include "tailcut/tailcut.h"

typedef struct hello {
    tc_server *srv;
    tc_client *client;
    int status; /* exit status */
} hello;

static void on_request(tc_request *req, void *data)
{
    (void)data;
    tc_request_respond_json(req, 200, "{\"hello\":\"world\"}");
}

static void on_answer(tc_future *f, void *data)
{
    hello *h = data;
    if (tc_future_state_of(f) == TC_FUTURE_FULFILLED) {
        const tc_response *resp = tc_future_value(f);
        printf("status=%d body=%s\n", resp->status, resp->body);
        h->status = resp->status == 200 ? 0 : 1;
    } else {
        printf("error=%s\n", tc_strerror(tc_future_error(f)));
    }
    /* Done: close both; the loop ends once their handles are gone. */
    tc_client_close(h->client, NULL, NULL);
    tc_server_close(h->srv, NULL, NULL);
}

int main(void)
{
    uv_loop_t loop;
    hello h = {NULL, NULL, 1};
    if (uv_loop_init(&loop) != 0)
        return 1;

    tc_server_config sc;
    tc_server_config_init(&sc); /* 127.0.0.1, port 0 */
    sc.handler = on_request;
    int err = tc_server_new(&h.srv, &loop, &sc);
    if (err == 0) {
        tc_client_config cc;
        tc_client_config_init(&cc);
        err = tc_client_new(&h.client, &loop, &cc);
        if (err != 0)
            tc_server_close(h.srv, NULL, NULL);
    }
    if (err == 0) {
        char url[64];
        (void)snprintf(url, sizeof(url), "http://127.0.0.1:%d/", tc_server_port(h.srv));
        tc_future *f = NULL;
        err = tc_client_get(&f, h.client, url);
        if (err == 0) {
            err = tc_future_on_done(f, on_answer, &h);
            if (err != 0)
                tc_future_cancel(f);
            tc_future_unref(f);
        }
        if (err != 0) { /* on_answer will not run: close both here */
            tc_client_close(h.client, NULL, NULL);
            tc_server_close(h.srv, NULL, NULL);
        }
    }
    if (err != 0)
        (void)fprintf(stderr, "hello_umbrella: %s\n", tc_strerror(err));
    uv_run(&loop, UV_RUN_DEFAULT);
    return uv_loop_close(&loop) == 0 ? h.status : 1;
}
