/*
 * Tests for the client's side of replicas (src/client*.c), on both engines: a request that names
 * the address to connect to (connect_to) reaches that address while the URL's host stays the
 * Host header; each address has its own pool and its own per-host slots (libcurl's connection
 * cache included: CURLOPT_CONNECT_TO); tc_client_retire_origin closes an address's idle
 * connections at once and its busy ones after their request. Two test servers listen on the
 * same port, on 127.0.0.1 and 127.0.0.2 (or ::1), so only the address tells them apart.
 */
#include "client_fixture.h"

/* t->s2 on ip at t->s's port; 0 when this machine cannot (the test then says so and passes). */
static int second_server(tctx *t, const char *ip)
{
    int err = cfx_srv_start_at(&t->s2, &t->loop, ip, t->s.port);
    if (err != 0)
        print_message("skipped: cannot listen on %s port %d (%s)\n", ip, t->s.port,
                      uv_strerror(err));
    return err == 0;
}

/* "http://replica.test:PORT/path": a name that never resolves, so a request can only arrive
 * through its connect_to. */
static const char *replica_url(tctx *t, const char *path)
{
    snprintf(t->url, sizeof(t->url), "http://replica.test:%d%s", t->s.port, path);
    return t->url;
}

static tc_future *get_via(tctx *t, const char *path, const char *addr)
{
    tc_client_request req;
    memset(&req, 0, sizeof(req));
    req.url = replica_url(t, path);
    req.connect_to = addr;
    tc_future *f = NULL;
    assert_int_equal(tc_client_request_start(&f, t->client, &req), 0);
    return f;
}

/* One request of path (/host...) through addr, answered by the server named want, with the
 * URL's Host and path. */
static void expect_path_via(tctx *t, const char *path, const char *addr, const char *want)
{
    tc_future *f = get_via(t, path, addr);
    const tc_response *r = cfx_expect_response(t, f, 200);
    char body[300];
    snprintf(body, sizeof(body), "%s|replica.test:%d|%s", want, t->s.port, path);
    assert_string_equal(r->body, body);
    tc_future_unref(f);
}

static void expect_answer_via(tctx *t, const char *addr, const char *want)
{
    expect_path_via(t, "/host", addr, want);
}

static void test_connect_to_reaches_the_address(void **state)
{
    (void)state;
    tctx *t = cfx_new(NULL);
    if (second_server(t, "127.0.0.2")) {
        for (int i = 0; i < 3; i++) {
            expect_answer_via(t, "127.0.0.1", "127.0.0.1");
            expect_answer_via(t, "127.0.0.2", "127.0.0.2");
        }
        /* One pool per address, each reused: libcurl's cache never hands one address's
         * connection to the other's requests either. */
        assert_int_equal(t->s.conns_total, 1);
        assert_int_equal(t->s2.conns_total, 1);
        assert_int_equal(t->s.requests, 3);
        assert_int_equal(t->s2.requests, 3);
        /* The same origin without connect_to is a third pool (its own host, resolved). */
        tc_future *f = cfx_get(t, &t->s, "/host", 0);
        const tc_response *r = cfx_expect_response(t, f, 200);
        char body[300];
        snprintf(body, sizeof(body), "127.0.0.1|127.0.0.1:%d|/host", t->s.port);
        assert_string_equal(r->body, body);
        tc_future_unref(f);
        assert_int_equal(t->s.conns_total, 2);
    }
    /* Not a numeric address: refused before anything starts. */
    static const char *const bad[] = {"localhost",  "1.2.3",      "::1%lo", "",
                                      "[127.0.0.1", "1.2.3.4:80", "[::1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        tc_client_request req;
        memset(&req, 0, sizeof(req));
        req.url = replica_url(t, "/ok");
        req.connect_to = bad[i];
        tc_future *f = NULL;
        assert_int_equal(tc_client_request_start(&f, t->client, &req), TC_EINVAL);
        assert_null(f);
        assert_int_equal(tc_client_retire_origin(t->client, req.url, bad[i]), TC_EINVAL);
    }
    cfx_expect_stats_settled(t);
    cfx_finish(t);
}

/* IPv6, however the address is written (brackets, zeros spelled out): one pool. */
static void test_connect_to_ipv6(void **state)
{
    (void)state;
    tctx *t = cfx_new(NULL);
    if (second_server(t, "::1")) {
        expect_answer_via(t, "::1", "::1");
        expect_answer_via(t, "[::1]", "::1");
        expect_answer_via(t, "0:0:0:0:0:0:0:1", "::1");
        assert_int_equal(t->s2.conns_total, 1);
        assert_int_equal(t->s.requests, 0);
    }
    cfx_finish(t);
}

/* max_per_host 1: one request at a time per address, the two addresses side by side. */
static void test_per_host_slots_per_address(void **state)
{
    (void)state;
    tctx *t = cfx_new_pool(0, 1);
    if (second_server(t, "127.0.0.2")) {
        int active = 0, active_max = 0;
        t->s.shared_active = t->s2.shared_active = &active;
        t->s.shared_active_max = t->s2.shared_active_max = &active_max;
        tc_future *f[4];
        for (int i = 0; i < 4; i++)
            f[i] = get_via(t, "/delay?ms=150", i % 2 ? "127.0.0.2" : "127.0.0.1");
        for (int i = 0; i < 4; i++) {
            const tc_response *r = cfx_expect_response(t, f[i], 200);
            assert_string_equal(r->body, "late");
            tc_future_unref(f[i]);
        }
        assert_int_equal(t->s.active_max, 1);
        assert_int_equal(t->s2.active_max, 1);
        assert_int_equal(active_max, 2);
    }
    cfx_expect_stats_settled(t);
    cfx_finish(t);
}

/* Idle connections of a retired address close at once; the other address's stay; a later
 * request to the retired one opens a new connection. */
static void test_retire_closes_idle_at_once(void **state)
{
    (void)state;
    tctx *t = cfx_new(NULL);
    if (second_server(t, "127.0.0.2")) {
        expect_answer_via(t, "127.0.0.1", "127.0.0.1");
        expect_answer_via(t, "127.0.0.2", "127.0.0.2");
        tc_client_stats st;
        tc_client_get_stats(t->client, &st);
        assert_int_equal(st.open_connections, 2);
        assert_int_equal(
            tc_client_retire_origin(t->client, replica_url(t, "/any?path=1"), "127.0.0.2"), 0);
        if (cfx_engine != TC_CLIENT_ENGINE_CURL) {
            tc_client_get_stats(t->client, &st); /* native: out of the books at once */
            assert_int_equal(st.open_connections, 1);
        }
        assert_true(cfx_run_until_flag(t, &t->s2.peer_closed, 2000));
        cfx_run_for(t, 50);
        assert_int_equal(t->s.peer_closed, 0);
        expect_answer_via(t, "127.0.0.1", "127.0.0.1");
        assert_int_equal(t->s.conns_total, 1); /* still the first connection */
        expect_answer_via(t, "127.0.0.2", "127.0.0.2");
        assert_int_equal(t->s2.conns_total, 2); /* a new one */
        /* An address with no pool, and the URL's own host: nothing to do, no error. */
        assert_int_equal(tc_client_retire_origin(t->client, replica_url(t, "/"), "127.0.0.3"), 0);
        assert_int_equal(tc_client_retire_origin(t->client, replica_url(t, "/"), NULL), 0);
        assert_int_equal(tc_client_retire_origin(t->client, "nope://x", NULL), TC_EURL);
        assert_int_equal(tc_client_retire_origin(NULL, replica_url(t, "/"), NULL), TC_EINVAL);
        cfx_run_for(t, 50);
        assert_int_equal(t->s.peer_closed, 0);
        assert_int_equal(t->s2.peer_closed, 1);
    }
    cfx_expect_stats_settled(t);
    cfx_finish(t);
}

/* A busy connection of a retired address finishes its request (the answer arrives whole), then
 * closes instead of going back to the pool. */
static void test_retire_closes_busy_after_its_request(void **state)
{
    (void)state;
    tctx *t = cfx_new(NULL);
    if (second_server(t, "127.0.0.2")) {
        expect_answer_via(t, "127.0.0.2", "127.0.0.2");
        tc_future *f = get_via(t, "/delay?ms=150", "127.0.0.2");
        tc_future *g = get_via(t, "/delay?ms=150", "127.0.0.1");
        cfx_run_for(t, 50);
        assert_int_equal(t->s2.active, 1);
        assert_int_equal(tc_client_retire_origin(t->client, replica_url(t, "/"), "127.0.0.2"), 0);
        cfx_run_for(t, 20);
        assert_int_equal(t->s2.peer_closed, 0); /* not while its request runs */
        const tc_response *r = cfx_expect_response(t, f, 200);
        assert_string_equal(r->body, "late");
        tc_future_unref(f);
        assert_true(cfx_run_until_flag(t, &t->s2.peer_closed, 2000));
        assert_int_equal(t->s2.peer_reset, 0); /* a close in good order */
        r = cfx_expect_response(t, g, 200);
        tc_future_unref(g);
        cfx_run_for(t, 50);
        assert_int_equal(t->s.peer_closed, 0); /* the other address keeps its connection */
        expect_answer_via(t, "127.0.0.1", "127.0.0.1");
        assert_int_equal(t->s.conns_total, 1);
        expect_answer_via(t, "127.0.0.2", "127.0.0.2");
        assert_int_equal(t->s2.conns_total, 2);
    }
    cfx_expect_stats_settled(t);
    cfx_finish(t);
}

/* More URLs and addresses in turn than the client keeps parsed (TC__CLIENT_URL_CACHE): each
 * request still goes to its own address with its own target and Host, and each address keeps
 * its one pooled connection. */
static void test_many_urls_in_turn(void **state)
{
    (void)state;
    tctx *t = cfx_new(NULL);
    if (second_server(t, "127.0.0.2")) {
        for (int round = 0; round < 3; round++) {
            for (int k = 0; k < 13; k++) {
                char path[32];
                snprintf(path, sizeof(path), "/host?k=%d", k % 7);
                const char *addr = k % 2 ? "127.0.0.2" : "127.0.0.1";
                expect_path_via(t, path, addr, addr);
            }
        }
        assert_int_equal(t->s.conns_total, 1);
        assert_int_equal(t->s2.conns_total, 1);
    }
    cfx_expect_stats_settled(t);
    cfx_finish(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_connect_to_reaches_the_address),
        cmocka_unit_test(test_connect_to_ipv6),
        cmocka_unit_test(test_per_host_slots_per_address),
        cmocka_unit_test(test_retire_closes_idle_at_once),
        cmocka_unit_test(test_retire_closes_busy_after_its_request),
        cmocka_unit_test(test_many_urls_in_turn),
    };
    return cfx_run_on_both_engines(tests, sizeof(tests) / sizeof(tests[0]));
}
