#!/usr/bin/env python3
"""Integration tests of the smart API of `tailcut serve` (docs/serve.md, issue 5), driven by
scripted `tailcut upstream` scenarios (docs/upstream.md).

One `tailcut upstream --profile fixed:5` and one `tailcut serve --workers 1` pointing at its
/api/work run for the whole SmartApi class. Before each case the upstream is reset (counters,
queue) and the case queues its own steps with POST /scenario, which also zeroes arrivals_ms, so
each case can read from /stats exactly how many attempts arrived, when, and how many were
cancelled (client_aborts). Steps of attempts fired together are consumed in arrival order, which
is not the firing order, so such steps carry distinct bodies and the tests identify a winner by
its body, never by its position.

Timing: lower bounds are the semantics (a hedge is never fired before --hedge-delay, a deadline
never passes early) and are exact up to libuv's millisecond timer granularity; upper bounds are
generous and stretched under sanitizers (th.SLOW). Nothing asserts speed.
"""
import json
import os
import signal
import socket
import struct
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tchelpers as th  # noqa: E402

# libuv timers count whole milliseconds of (cached) loop time: a deadline may fire this early.
EARLY = 0.003
HEDGE_DELAY = 0.300
MAX_BODY = 4096
# Slack for "soon" (a response, a cancellation reaching the upstream, a hedge after its timer).
SLACK = 0.5 * th.SLOW


def request(port, method, path, timeout=15 * th.SLOW):
    """One request on a fresh connection; elapsed counts from the moment the request is sent."""
    with th.connect(port, timeout) as s:
        raw = "%s %s HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n" % (method, path)
        t0 = time.monotonic()
        s.sendall(raw.encode())
        st, hdrs, body = th.read_response(s, head=(method == "HEAD"))
        return th.Resp(st, hdrs, body, time.monotonic() - t0)


class Metrics:
    def __init__(self, port):
        r = request(port, "GET", "/metrics")
        assert r.status == 200, r
        assert r.headers.get("content-type") == "text/plain; version=0.0.4", r.headers
        self.values = th.parse_metrics(r.body.decode())

    def get(self, name, **labels):
        return th.metric(self.values, name, **labels)

    def delta(self, before, name, **labels):
        return self.get(name, **labels) - before.get(name, **labels)


class Upstream(th.Proc):
    def __init__(self, *args):
        super().__init__("upstream", "--access-log", "off", *args)

    def req(self, method, path, body=None):
        st, hdrs, data = th.http_request(self.port, method, path, body,
                                         {"Content-Type": "application/json"} if body else None,
                                         10 * th.SLOW)
        return th.Resp(st, hdrs, data, 0)

    def stats(self):
        r = self.req("GET", "/stats")
        assert r.status == 200, r
        return r.json()

    def stats_when(self, pred, timeout=SLACK * 4):
        last = {}

        def probe():
            last["s"] = self.stats()
            return pred(last["s"])

        th.wait_for(probe, timeout)
        return last["s"]

    def scenario(self, steps):
        """Queues steps; returns the monotonic time the answer arrived (arrivals_ms counts from
        a moment no later than this)."""
        r = self.req("POST", "/scenario", json.dumps(steps, ensure_ascii=False).encode())
        assert r.status == 200, r
        return time.monotonic()

    def reset(self):
        s = self.stats_when(lambda s: s["in_flight"] == 0, 15 * th.SLOW)
        assert s["in_flight"] == 0, "upstream still holds requests: %r" % s
        r = self.req("POST", "/reset")
        assert r.status == 200, r


def serve(upstream_port, *args):
    base = "http://127.0.0.1:%d" % upstream_port
    return th.Proc("serve", "--workers", "1", "--upstream", base + "/api/work",
                   "--metadata-upstream", base + "/api/metadata", "--access-log", "off", *args)


def step(delay_ms=0, body=None, status=None, action=None):
    s = {"delay_ms": delay_ms}
    if body is not None:
        s["body"] = body
    if status is not None:
        s["status"] = status
    if action is not None:
        s["action"] = action
    return s


HANG = {"action": "hang"}
RESET = {"action": "reset"}


def wrapped(raw):
    """The 200 body of smart/first for an upstream body (bytes or str)."""
    if isinstance(raw, str):
        raw = raw.encode()
    return b'{"success":true,"response":' + raw + b"}"


class SmartBase(th.ErrorAsserts, unittest.TestCase):
    upstream_args = ("--profile", "fixed:5")
    serve_args = ("--max-body", str(MAX_BODY))

    @classmethod
    def setUpClass(cls):
        cls.up = Upstream(*cls.upstream_args)
        try:
            cls.srv = serve(cls.up.port, *cls.serve_args)
        except BaseException:
            cls.up.kill()
            raise
        # Warm-up: one pooled upstream connection, and the first-request costs paid.
        r = request(cls.srv.port, "GET", "/api/smart?timeout=5000")
        assert r.status == 200, r

    @classmethod
    def tearDownClass(cls):
        try:
            cls.srv.stop(expect=0)
        finally:
            cls.up.stop(expect=0)

    def setUp(self):
        self.up.reset()

    # ---- helpers ---------------------------------------------------------------------------

    def get(self, path):
        return request(self.srv.port, "GET", path)

    def assert_api(self, r, status, attempts=None):
        """Status, Content-Type and X-Tailcut-Attempts of an /api/* response."""
        self.assertEqual(r.status, status, r)
        self.assertEqual(r.headers.get("content-type"), "application/json", r)
        self.assertIn("x-tailcut-attempts", r.headers, r)
        self.assertRegex(r.headers["x-tailcut-attempts"], r"^[0-9]+$")
        if attempts is not None:
            self.assertEqual(int(r.headers["x-tailcut-attempts"]), attempts, r)

    def settled(self, work_requests, client_aborts):
        """Waits for the upstream to see exactly this many requests and aborts and hold
        nothing; asserts it."""
        want = (work_requests, client_aborts, 0)
        s = self.up.stats_when(
            lambda s: (s["work_requests"], s["client_aborts"], s["in_flight"]) == want)
        self.assertEqual((s["work_requests"], s["client_aborts"], s["in_flight"]), want, s)
        return s


class SmartApi(SmartBase):
    # ---- /api/smart: the hedging policy ---------------------------------------------------

    def test_success_inside_hedge_delay_fires_one_attempt(self):
        body = '{"id":"only"}'
        self.up.scenario([step(150, body)])
        r = self.get("/api/smart?timeout=5000")
        self.assert_api(r, 200, 1)
        self.assertEqual(r.body, wrapped(body))
        self.assertGreaterEqual(r.elapsed, 0.150 - EARLY)
        # Past the hedge delay and 500 ms more: still the one attempt, nothing cancelled.
        time.sleep(0.5)
        s = self.up.stats()
        self.assertEqual((s["work_requests"], s["client_aborts"], s["in_flight"]), (1, 0, 0), s)

    def test_slow_first_attempt_brings_two_more_at_hedge_delay(self):
        t_post = self.up.scenario([step(1000, '{"n":"first"}'), step(100, '{"n":"hedge-a"}'),
                                   step(1500, '{"n":"hedge-b"}')])
        t_send = time.monotonic()
        r = self.get("/api/smart?timeout=5000")
        self.assert_api(r, 200, 3)
        self.assertEqual(r.body, wrapped('{"n":"hedge-a"}'))
        self.assertGreaterEqual(r.elapsed, HEDGE_DELAY + 0.100 - EARLY)
        s = self.settled(3, 2)  # the slow first and the other hedge were cancelled
        arr = s["arrivals_ms"]
        self.assertEqual(len(arr), 3, s)
        # Not before the hedge delay: against the first arrival, and (exactly) against the
        # moment the request was sent, which is no earlier than the upstream's zero + offset.
        floor_ms = (t_send - t_post) * 1000 + HEDGE_DELAY * 1000 - EARLY * 1000
        for a in arr[1:]:
            self.assertGreaterEqual(a - arr[0], 290, arr)
            self.assertGreaterEqual(a, floor_ms, arr)
            self.assertLess(a - arr[0], 300 + 150 * th.SLOW, arr)
        # Fired only once: nothing more arrives later.
        time.sleep(0.3)
        self.assertEqual(self.up.stats()["work_requests"], 3)

    def test_failing_first_attempt_hedges_at_once(self):
        # The winning hedge answers after 100 ms, so the other one has surely arrived by then
        # (a loser cancelled before it reached the upstream would not show in arrivals_ms).
        self.up.scenario([step(50, '{"err":1}', status=500), step(100, '{"h":"a"}'),
                          step(2000, '{"h":"b"}')])
        r = self.get("/api/smart?timeout=5000")
        self.assert_api(r, 200, 3)
        self.assertEqual(r.body, wrapped('{"h":"a"}'))
        s = self.settled(3, 1)
        arr = s["arrivals_ms"]
        for a in arr[1:]:
            self.assertGreaterEqual(a - arr[0], 50 - 2, arr)  # after the failure, not before
            self.assertLess(a - arr[0], 250, arr)  # well before the 300 ms hedge delay

    def test_first_attempt_reset_hedges_at_once(self):
        # A fresh serve, so that no attempt rides a reused connection (see
        # test_reset_on_reused_connection_is_a_failed_attempt).
        with serve(self.up.port) as srv:
            before = Metrics(srv.port)
            self.up.scenario([step(30, action="reset"), step(100, '{"h":1}'),
                              step(2000, '{"h":2}')])
            r = request(srv.port, "GET", "/api/smart?timeout=5000")
            self.assert_api(r, 200, 3)
            self.assertEqual(r.body, wrapped('{"h":1}'))
            arr = self.settled(3, 1)["arrivals_ms"]
            self.assertGreaterEqual(min(arr[1:]) - arr[0], 30 - 2, arr)
            self.assertLess(max(arr) - arr[0], 250, arr)
            after = Metrics(srv.port)
            self.assertEqual(after.delta(before, "tailcut_upstream_attempts_total",
                                         outcome="reset"), 1)

    def test_resets_on_fresh_connections_fail_502(self):
        with serve(self.up.port) as srv:
            before = Metrics(srv.port)
            self.up.scenario([RESET, RESET, RESET, step(0, '{"retried":true}')])
            r = request(srv.port, "GET", "/api/first?timeout=5000")
            self.assert_upstream_failed(r, 3)
            self.settled(3, 0)
            self.assertEqual(Metrics(srv.port).delta(before, "tailcut_upstream_attempts_total",
                                                     outcome="reset"), 3)

    # A pooled keep-alive connection that dies before any answer byte (the server reset it
    # after reading the request, as a server that timed it out at that moment does): the GET is
    # sent once more on a fresh connection (RFC 9110 section 9.2.2). That is the same attempt,
    # counted in tailcut_upstream_stale_retries_total, never a second attempt or a hedge.
    def test_reset_on_reused_connection_is_retried_once_fresh(self):
        with serve(self.up.port, "--hedge-extra", "0") as srv:
            before = Metrics(srv.port)
            for i in range(5):
                self.up.reset()
                # One success leaves an idle keep-alive connection in the pool.
                self.assert_api(request(srv.port, "GET", "/api/smart?timeout=5000"), 200, 1)
                self.up.reset()
                self.up.scenario([RESET, step(0, '{"retried":true}')])
                r = request(srv.port, "GET", "/api/smart?timeout=5000")
                got = (r.status, r.headers.get("x-tailcut-attempts"),
                       self.up.stats()["work_requests"])
                self.assertEqual(got, (200, "1", 2), "try %d: %r" % (i, r))
                self.assertEqual(r.body, wrapped('{"retried":true}'))
            after = Metrics(srv.port)
            self.assertEqual(after.delta(before, "tailcut_upstream_stale_retries_total"), 5)
            self.assertEqual(after.delta(before, "tailcut_upstream_attempts_total",
                                         outcome="reset"), 0)

    def test_curl_engine_carries_the_same_api(self):
        # --http-engine curl: the same answers, attempts and cancellations as the native engine.
        with serve(self.up.port, "--http-engine", "curl") as srv:
            self.up.scenario([HANG, step(100, '{"e":"curl"}'), step(3000, '{"late":true}')])
            r = request(srv.port, "GET", "/api/first?timeout=5000")
            self.assert_api(r, 200, 3)
            self.assertEqual(r.body, wrapped('{"e":"curl"}'))
            self.settled(3, 2)  # the hanging and the late attempt were aborted

    def test_hedge_wins_when_first_hangs(self):
        winner = '{"winner" :  "hedge" ,"x":[1 ,2]}'
        before = Metrics(self.srv.port)
        self.up.scenario([HANG, step(100, winner), step(3000, '{"late":true}')])
        r = self.get("/api/smart?timeout=5000")
        self.assert_api(r, 200, 3)
        self.assertEqual(r.body, wrapped(winner))
        self.assertGreaterEqual(r.elapsed, HEDGE_DELAY + 0.100 - EARLY)
        self.settled(3, 2)  # the hang and the slow hedge were cancelled
        after = Metrics(self.srv.port)
        self.assertEqual(after.delta(before, "tailcut_hedges_fired_total"), 1)
        self.assertEqual(after.delta(before, "tailcut_hedge_wins_total"), 1)
        self.assertEqual(after.delta(before, "tailcut_upstream_attempts_total",
                                     outcome="success"), 1)
        self.assertEqual(after.delta(before, "tailcut_upstream_attempts_total",
                                     outcome="cancelled"), 2)
        self.assertEqual(after.get("tailcut_requests_in_flight"), 0)

    def test_first_attempt_wins_after_hedges_fired(self):
        before = Metrics(self.srv.port)
        self.up.scenario([step(400, '{"who":"first"}'), step(1000, '{"who":"hedge"}'),
                          step(1000, '{"who":"hedge"}')])
        r = self.get("/api/smart?timeout=5000")
        self.assert_api(r, 200, 3)
        self.assertEqual(r.body, wrapped('{"who":"first"}'))
        self.assertGreaterEqual(r.elapsed, 0.400 - EARLY)
        self.assertLess(r.elapsed, 1.0)  # did not wait for the hedges
        self.settled(3, 2)
        after = Metrics(self.srv.port)
        self.assertEqual(after.delta(before, "tailcut_hedges_fired_total"), 1)
        self.assertEqual(after.delta(before, "tailcut_hedge_wins_total"), 0)

    def test_smart_timeout_before_hedge_delay_is_504(self):
        self.up.scenario([HANG, HANG, HANG])
        r = self.get("/api/smart?timeout=200")
        self.assert_error(r, 504, "timeout", 1)
        self.assertGreaterEqual(r.elapsed, 0.200 - EARLY)
        self.assertLess(r.elapsed, 0.300 if not th.SANITIZED else 0.200 + SLACK)
        self.settled(1, 1)
        time.sleep(0.3)  # past the hedge delay: the hedge died with the request
        self.assertEqual(self.up.stats()["work_requests"], 1)

    def test_smart_timeout_after_hedges_is_504(self):
        self.up.scenario([HANG, HANG, HANG])
        r = self.get("/api/smart?timeout=450")
        self.assert_error(r, 504, "timeout", 3)
        self.assertGreaterEqual(r.elapsed, 0.450 - EARLY)
        self.assertLess(r.elapsed, 0.450 + SLACK)
        self.settled(3, 3)

    def test_smart_all_attempts_fail_502(self):
        before = Metrics(self.srv.port)
        self.up.scenario([step(20, '{"e":1}', status=500), step(0, "busy", status=503),
                          step(0, "{]")])
        r = self.get("/api/smart?timeout=5000")
        self.assert_upstream_failed(r, 3)
        self.assertLess(r.elapsed, HEDGE_DELAY + SLACK)
        self.settled(3, 0)
        after = Metrics(self.srv.port)
        self.assertEqual(after.delta(before, "tailcut_upstream_attempts_total",
                                     outcome="http_status"), 2)
        self.assertEqual(after.delta(before, "tailcut_upstream_attempts_total",
                                     outcome="invalid_json"), 1)
        self.assertEqual(after.delta(before, "tailcut_requests_total", endpoint="smart",
                                     status="502"), 1)

    def test_smart_hedge_extra_zero(self):
        """--hedge-extra 0 and --hedge-delay 100: never more than the one attempt."""
        with serve(self.up.port, "--hedge-extra", "0", "--hedge-delay", "100") as srv:
            self.up.scenario([step(300, '{"one":1}')])
            r = request(srv.port, "GET", "/api/smart?timeout=5000")
            self.assert_api(r, 200, 1)
            self.assertEqual(r.body, wrapped('{"one":1}'))
            self.up.scenario([step(0, "no", status=500)])
            r = request(srv.port, "GET", "/api/smart?timeout=5000")
            self.assert_upstream_failed(r, 1)
            self.assertEqual(self.up.stats()["work_requests"], 2)

    def test_smart_custom_hedge_delay_and_extra(self):
        with serve(self.up.port, "--hedge-extra", "4", "--hedge-delay", "100") as srv:
            self.up.scenario([HANG, step(200, '{"k":0}')] + [step(3000, "{}")] * 3)
            r = request(srv.port, "GET", "/api/smart?timeout=5000")
            self.assert_api(r, 200, 5)
            self.assertEqual(r.body, wrapped('{"k":0}'))
            arr = self.settled(5, 4)["arrivals_ms"]
            # Not before 100 ms: arrivals count from the scenario's POST, which the request
            # follows. (Against the first arrival the gap can shrink when a loaded machine
            # delays that first connect more than the hedges' own, as seen under load.)
            for a in arr[1:]:
                self.assertGreaterEqual(a, 100 - 10, arr)

    # ---- timeout parameter ------------------------------------------------------------------

    BAD_TIMEOUTS = ("timeout=0", "timeout=-5", "timeout=1.5", "timeout=abc", "timeout=",
                    "timeout", "timeout=10ms", "timeout=%2010", "timeout=%2B10", "timeout=+10",
                    "timeout=60001", "timeout=99999999999999999999999999", "timeout=5&timeout=5",
                    "timeout=5&time%6Fut=5", "timeout=0x10", "timeout=1e3", "timeout=%31%30%00")

    def test_bad_timeout_is_400(self):
        for ep in ("smart", "first", "all", "within-timeout"):
            for q in self.BAD_TIMEOUTS:
                with self.subTest(ep=ep, q=q):
                    r = self.get("/api/%s?%s" % (ep, q))
                    self.assertEqual(r.status, 400, r)
                    self.assertEqual(r.headers.get("content-type"), "application/json")
                    doc = r.json()
                    self.assertEqual((doc["success"], doc["error"]), (False, "bad_request"), r)
                    self.assertIsInstance(doc["message"], str)
        self.assertEqual(self.up.stats()["work_requests"], 0)

    def test_good_timeout_forms(self):
        for q in ("timeout=60000", "timeout=1000", "timeout=%31%30%30%30", "timeout=00500"):
            with self.subTest(q=q):
                r = self.get("/api/smart?" + q)
                self.assert_api(r, 200, 1)
                self.assertEqual(r.body, wrapped('{"time": 5}'))

    def test_missing_timeout(self):
        r = self.get("/api/within-timeout")
        self.assertEqual(r.status, 400, r)
        self.assertEqual(r.json()["error"], "bad_request")
        self.assertEqual(self.up.stats()["work_requests"], 0)
        for ep, n in (("smart", 1), ("first", 3)):
            r = self.get("/api/" + ep)
            self.assert_api(r, 200, n)
            self.assertEqual(r.body, wrapped('{"time": 5}'))
        r = self.get("/api/all")
        self.assert_api(r, 200, 3)
        self.assertEqual(r.body, b'[{"time": 5},{"time": 5},{"time": 5}]')

    def test_missing_timeout_is_bounded_by_max_timeout(self):
        with serve(self.up.port, "--max-timeout", "400") as srv:
            r = request(srv.port, "GET", "/api/smart?timeout=401")
            self.assertEqual((r.status, r.json()["error"]), (400, "bad_request"), r)
            self.up.scenario([HANG, HANG, HANG])
            r = request(srv.port, "GET", "/api/smart")
            self.assert_error(r, 504, "timeout", 3)
            self.assertGreaterEqual(r.elapsed, 0.400 - EARLY)
            self.assertLess(r.elapsed, 0.400 + SLACK * 2)
            self.settled(3, 3)

    # ---- /api/first -----------------------------------------------------------------------

    def test_first_fires_three_at_once(self):
        self.up.scenario([step(300, '{"r":3}'), step(100, '{"r":1}'), step(200, '{"r":2}')])
        r = self.get("/api/first?timeout=5000")
        self.assert_api(r, 200, 3)
        self.assertEqual(r.body, wrapped('{"r":1}'))
        self.assertGreaterEqual(r.elapsed, 0.100 - EARLY)
        arr = self.settled(3, 2)["arrivals_ms"]  # the two slower ones were cancelled
        self.assertLess(max(arr) - min(arr), 100 * th.SLOW, arr)

    def test_first_skips_failures(self):
        self.up.scenario([step(0, '{"x":', status=200), step(0, "{}", status=500),
                          step(50, '{"ok" : true}')])
        r = self.get("/api/first?timeout=5000")
        self.assert_api(r, 200, 3)
        self.assertEqual(r.body, wrapped('{"ok" : true}'))
        self.settled(3, 0)

    def test_first_all_fail_502(self):
        self.up.scenario([step(0, '{"a":'), step(10, '{"a":1}', status=500),
                          step(20, "[1]", status=302)])
        r = self.get("/api/first?timeout=5000")
        self.assert_upstream_failed(r, 3)
        self.settled(3, 0)

    def test_first_timeout_504(self):
        self.up.scenario([HANG, HANG, step(2000, '{"late":1}')])
        r = self.get("/api/first?timeout=150")
        self.assert_error(r, 504, "timeout", 3)
        self.assertGreaterEqual(r.elapsed, 0.150 - EARLY)
        self.assertLess(r.elapsed, 0.150 + SLACK)
        self.settled(3, 3)

    # ---- /api/all -------------------------------------------------------------------------

    def test_all_waits_for_all_in_completion_order(self):
        self.up.scenario([step(300, '{"k":"C"}'), step(100, '{"k":"A"}'),
                          step(200, '{"k":"B"}')])
        r = self.get("/api/all?timeout=5000")
        self.assert_api(r, 200, 3)
        self.assertEqual(r.body, b'[{"k":"A"},{"k":"B"},{"k":"C"}]')
        self.assertGreaterEqual(r.elapsed, 0.300 - EARLY)
        self.settled(3, 0)

    def test_all_leaves_out_failures(self):
        self.up.scenario([step(50, '{"k":"A"}'), step(100, '{"k":"X"}', status=500),
                          step(150, '[ "B" ]')])
        r = self.get("/api/all?timeout=5000")
        self.assert_api(r, 200, 3)
        self.assertEqual(r.body, b'[{"k":"A"},[ "B" ]]')
        self.assertGreaterEqual(r.elapsed, 0.150 - EARLY)

    def test_all_504_when_one_hangs_past_deadline(self):
        self.up.scenario([step(20, '{"k":"A"}'), HANG, step(20, '{"k":"B"}')])
        r = self.get("/api/all?timeout=300")
        self.assert_error(r, 504, "timeout", 3)
        self.assertGreaterEqual(r.elapsed, 0.300 - EARLY)
        self.assertLess(r.elapsed, 0.300 + SLACK)
        self.settled(3, 1)

    def test_all_502_when_none_succeeded(self):
        self.up.scenario([step(0, "nope", status=404), step(30, '{"t":'),
                          step(10, "{}", status=204)])
        r = self.get("/api/all?timeout=5000")
        self.assert_upstream_failed(r, 3)
        self.settled(3, 0)

    # ---- /api/within-timeout -------------------------------------------------------------

    def test_within_timeout_returns_what_succeeded_before_deadline(self):
        self.up.scenario([step(50, '{"k":"A"}'), HANG, step(120, '{"k":"B"}')])
        r = self.get("/api/within-timeout?timeout=400")
        self.assert_api(r, 200, 3)
        self.assertEqual(r.body, b'[{"k":"A"},{"k":"B"}]')
        self.assertGreaterEqual(r.elapsed, 0.400 - EARLY)
        self.assertLess(r.elapsed, 0.400 + SLACK)
        self.settled(3, 1)

    def test_within_timeout_excludes_late_success(self):
        self.up.scenario([step(30, '{"k":"A"}'), step(900, '{"k":"late"}'),
                          step(10, "x", status=500)])
        r = self.get("/api/within-timeout?timeout=300")
        self.assert_api(r, 200, 3)
        self.assertEqual(r.body, b'[{"k":"A"}]')
        self.assertGreaterEqual(r.elapsed, 0.300 - EARLY)
        self.settled(3, 1)

    def test_within_timeout_none_is_empty_array(self):
        self.up.scenario([HANG, HANG, HANG])
        r = self.get("/api/within-timeout?timeout=200")
        self.assert_api(r, 200, 3)
        self.assertEqual(r.json(), [])
        self.assertGreaterEqual(r.elapsed, 0.200 - EARLY)
        self.settled(3, 3)
        # Every attempt failing fast: [] at once, never 502.
        self.up.scenario([step(0, "x", status=500), step(0, "{}", status=429),
                          step(0, '{"a"')])
        r = self.get("/api/within-timeout?timeout=5000")
        self.assert_api(r, 200, 3)
        self.assertEqual(r.json(), [])
        self.assertLess(r.elapsed, SLACK * 2)

    def test_within_timeout_all_done_before_deadline(self):
        self.up.scenario([step(20, '{"k":1}'), step(60, '{"k":2}'), step(100, '{"k":3}')])
        r = self.get("/api/within-timeout?timeout=10000")
        self.assert_api(r, 200, 3)
        self.assertEqual(r.body, b'[{"k":1},{"k":2},{"k":3}]')
        self.assertGreaterEqual(r.elapsed, 0.100 - EARLY)
        self.assertLess(r.elapsed, 0.100 + SLACK * 2)  # did not wait for the deadline

    # ---- what counts as a success -------------------------------------------------------

    ODD_BODIES = ('{ "a" : [1, 2.50e3, "\\u00e9"] }', '\n  [true, false,null ]\t',
                  '"just a string"', "-0.5e-3", '{"\u00e9":"\u65e5\u672c","n":1E+2}',
                  '{"e":"\\"\\\\\\/\\b\\f\\n\\r\\t\\ud83d\\ude00"}', "{}", "[]")

    def test_upstream_json_passes_through_byte_for_byte(self):
        for raw in self.ODD_BODIES:
            with self.subTest(raw=raw):
                self.up.reset()
                # The same step twice: once read straight from the upstream, once through serve.
                self.up.scenario([step(0, raw), step(0, raw)])
                direct = self.up.req("GET", "/api/work")
                self.assertEqual(direct.status, 200)
                self.assertEqual(direct.body, raw.encode())
                r = self.get("/api/smart?timeout=5000")
                self.assert_api(r, 200, 1)
                self.assertEqual(r.body, wrapped(direct.body))
                json.loads(r.body)  # and the whole answer is JSON

    def test_passthrough_in_arrays(self):
        raw = '{ "a" : [1, 2.50e3, "\\u00e9"] }'
        self.up.scenario([step(0, raw), step(50, raw), step(100, raw)])
        r = self.get("/api/all?timeout=5000")
        self.assert_api(r, 200, 3)
        self.assertEqual(r.body, ("[%s,%s,%s]" % (raw, raw, raw)).encode())

    def test_invalid_json_too_large_and_non_200_are_failures(self):
        big = '"' + "x" * (MAX_BODY - 1) + '"'  # MAX_BODY + 1 bytes of valid JSON
        self.assertEqual(len(big), MAX_BODY + 1)
        before = Metrics(self.srv.port)
        self.up.scenario([step(0, big), step(0, '{"time": 5'), step(0, '{"ok":true}',
                                                                   status=201)])
        r = self.get("/api/first?timeout=5000")
        self.assert_upstream_failed(r, 3)
        self.settled(3, 0)
        after = Metrics(self.srv.port)
        for outcome in ("too_large", "invalid_json", "http_status"):
            self.assertEqual(after.delta(before, "tailcut_upstream_attempts_total",
                                         outcome=outcome), 1, outcome)
        self.assertEqual(after.delta(before, "tailcut_upstream_attempts_total",
                                     outcome="success"), 0)

    def test_body_at_max_body_is_a_success(self):
        exact = '"' + "y" * (MAX_BODY - 2) + '"'
        self.assertEqual(len(exact), MAX_BODY)
        self.up.scenario([step(0, exact)])
        r = self.get("/api/smart?timeout=5000")
        self.assert_api(r, 200, 1)
        self.assertEqual(r.body, wrapped(exact))

    def test_more_invalid_bodies_fail(self):
        bad = ["", " ", "{'a':1}", '{"a":1}}', '{"a":1} x', "[1,]", "01", "NaN", "tru",
               '"\x01"', '{"a" 1}', "[1 2]", '"\\x"', '{"a":1,}', "{} {}"]
        for raw in bad:
            with self.subTest(raw=raw):
                self.up.reset()
                self.up.scenario([step(0, raw), step(0, raw), step(0, raw)])
                r = self.get("/api/first?timeout=5000")
                self.assert_upstream_failed(r, 3)

    def test_smart_recovers_from_failed_first_attempt(self):
        self.up.scenario([step(0, '{"x": [1, 2'), step(0, '{"good":1}'), step(0, "[]",
                                                                              status=500)])
        r = self.get("/api/smart?timeout=5000")
        self.assert_api(r, 200, 3)
        self.assertEqual(r.body, wrapped('{"good":1}'))

    # ---- cancellation -------------------------------------------------------------------

    def _abandon(self, path, wait_pred, rst=False):
        """Sends path, waits until wait_pred(stats), then closes the connection."""
        s = th.connect(self.srv.port, 10)
        try:
            s.sendall(("GET %s HTTP/1.1\r\nHost: test\r\n\r\n" % path).encode())
            st = self.up.stats_when(wait_pred)
            self.assertTrue(wait_pred(st), st)
            if rst:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        finally:
            s.close()

    def test_client_disconnect_cancels_all_attempts(self):
        before = Metrics(self.srv.port)
        self.up.scenario([HANG, HANG, HANG])
        self._abandon("/api/smart?timeout=20000", lambda s: s["in_flight"] == 3)
        self.settled(3, 3)
        after = Metrics(self.srv.port)
        self.assertEqual(after.get("tailcut_requests_in_flight"), 0)
        self.assertEqual(after.delta(before, "tailcut_requests_total", endpoint="smart",
                                     status="200"), 0)

    def test_client_disconnect_before_hedge_stops_the_hedge(self):
        self.up.scenario([HANG, step(0, "{}"), step(0, "{}")])
        self._abandon("/api/smart?timeout=20000", lambda s: s["in_flight"] == 1)
        self.settled(1, 1)
        time.sleep(HEDGE_DELAY + 0.2)
        self.settled(1, 1)

    def test_client_reset_cancels_fan_out(self):
        for ep in ("first", "all", "within-timeout"):
            with self.subTest(ep=ep):
                self.up.reset()
                self.up.scenario([HANG, HANG, step(20000, "{}")])
                self._abandon("/api/%s?timeout=20000" % ep, lambda s: s["in_flight"] == 3,
                              rst=True)
                self.settled(3, 3)
        self.assertEqual(Metrics(self.srv.port).get("tailcut_requests_in_flight"), 0)

    # ---- metrics, headers, methods ------------------------------------------------------

    def test_metrics_count_what_happened(self):
        before = Metrics(self.srv.port)
        self.up.scenario([step(0, '{"a":1}')])                                 # smart 200, 1
        self.assert_api(self.get("/api/smart?timeout=5000"), 200, 1)
        self.settled(1, 0)
        self.up.reset()
        self.up.scenario([HANG, step(100, '{"b":1}'), step(5000, "{}")])       # smart 200 hedge
        self.assert_api(self.get("/api/smart?timeout=5000"), 200, 3)
        self.settled(3, 2)
        self.up.reset()
        self.up.scenario([step(0, "x", status=500)] * 3)                       # first 502
        self.assert_upstream_failed(self.get("/api/first?timeout=5000"), 3)
        self.assertEqual(self.get("/api/within-timeout").status, 400)         # within 400
        self.assertEqual(self.get("/api/smart?timeout=abc").status, 400)      # smart 400
        self.settled(3, 0)
        self.up.reset()
        self.up.scenario([step(0, "[1]"), step(0, "[2]"), step(0, '{"c"')])     # all 200
        self.assert_api(self.get("/api/all?timeout=5000"), 200, 3)
        self.settled(3, 0)
        self.up.reset()
        self.up.scenario([HANG] * 3)                                           # all 504
        self.assert_error(self.get("/api/all?timeout=100"), 504, "timeout", 3)
        self.settled(3, 3)
        self.assertEqual(request(self.srv.port, "GET", "/healthz").status, 200)
        after = Metrics(self.srv.port)

        def d(name, **labels):
            return after.delta(before, name, **labels)

        self.assertEqual(d("tailcut_requests_total", endpoint="smart", status="200"), 2)
        self.assertEqual(d("tailcut_requests_total", endpoint="smart", status="400"), 1)
        self.assertEqual(d("tailcut_requests_total", endpoint="first", status="502"), 1)
        self.assertEqual(d("tailcut_requests_total", endpoint="within_timeout", status="400"), 1)
        self.assertEqual(d("tailcut_requests_total", endpoint="all", status="200"), 1)
        self.assertEqual(d("tailcut_requests_total", endpoint="all", status="504"), 1)
        self.assertEqual(d("tailcut_requests_total", endpoint="healthz", status="200"), 1)
        self.assertEqual(d("tailcut_requests_total", endpoint="metrics", status="200"), 1)
        # attempts: smart 1 + 3, first 3, all 3 + 3 = 13
        self.assertEqual(d("tailcut_upstream_attempts_total", outcome="success"), 1 + 1 + 2)
        self.assertEqual(d("tailcut_upstream_attempts_total", outcome="http_status"), 3)
        self.assertEqual(d("tailcut_upstream_attempts_total", outcome="invalid_json"), 1)
        self.assertEqual(d("tailcut_upstream_attempts_total", outcome="cancelled"), 2 + 3)
        total = sum(v for (name, _), v in after.values.items()
                    if name == "tailcut_upstream_attempts_total")
        total -= sum(v for (name, _), v in before.values.items()
                     if name == "tailcut_upstream_attempts_total")
        self.assertEqual(total, 13)
        self.assertEqual(d("tailcut_hedges_fired_total"), 1)
        self.assertEqual(d("tailcut_hedge_wins_total"), 1)
        self.assertEqual(after.get("tailcut_requests_in_flight"), 0)
        # Every answered smart request is in the latency histogram (2 x 200, 1 x 400).
        self.assertEqual(d("tailcut_request_duration_seconds_count", endpoint="smart"), 3)

    def test_api_errors_carry_json_content_type(self):
        for path in ("/api/smart?timeout=x", "/api/within-timeout"):
            r = self.get(path)
            self.assertEqual(r.status, 400, r)
            self.assertEqual(r.headers.get("content-type"), "application/json")
        r = request(self.srv.port, "POST", "/api/smart")
        self.assertEqual(r.headers.get("content-type"), "application/json")

    # docs/serve.md: every response on the /api/* attempt endpoints carries X-Tailcut-Attempts,
    # also 400 and 405 answered before any attempt (0).
    def test_api_errors_carry_attempts_header(self):
        got = {}
        for method, path in (("GET", "/api/smart?timeout=x"), ("GET", "/api/within-timeout"),
                             ("GET", "/api/all?timeout=0"), ("POST", "/api/first")):
            got[method + " " + path] = request(self.srv.port, method,
                                               path).headers.get("x-tailcut-attempts")
        self.assertEqual(set(got.values()), {"0"}, got)

    def test_post_is_405(self):
        for method in ("POST", "PUT", "DELETE"):
            for ep in ("smart", "first", "all", "within-timeout"):
                with self.subTest(method=method, ep=ep):
                    r = request(self.srv.port, method, "/api/%s?timeout=1000" % ep)
                    self.assertEqual(r.status, 405, r)
                    doc = r.json()
                    self.assertEqual((doc["success"], doc["error"]),
                                     (False, "method_not_allowed"))
                    self.assertIn("GET", [m.strip() for m in r.headers.get("allow", "").split(",")])
        self.assertEqual(self.up.stats()["work_requests"], 0)


class Drain(unittest.TestCase):
    """SIGTERM with requests in flight against a slow upstream (fixed:500)."""

    @classmethod
    def setUpClass(cls):
        cls.up = Upstream("--profile", "fixed:500")

    @classmethod
    def tearDownClass(cls):
        cls.up.stop(expect=0)

    def setUp(self):
        self.up.reset()

    def _send(self, port, n, path):
        socks = []
        for _ in range(n):
            s = th.connect(port, 15 * th.SLOW)
            s.sendall(("GET %s HTTP/1.1\r\nHost: test\r\n\r\n" % path).encode())
            socks.append(s)
        return socks

    def test_drain_answers_every_request_in_flight(self):
        srv = serve(self.up.port)
        try:
            socks = self._send(srv.port, 4, "/api/smart?timeout=10000")
            st = self.up.stats_when(lambda s: s["in_flight"] >= 4)
            self.assertGreaterEqual(st["in_flight"], 4, st)
            t_term = time.monotonic()
            srv.proc.send_signal(signal.SIGTERM)
            for s in socks:
                with s:
                    status, hdrs, body = th.read_response(s)
                    self.assertEqual(status, 200, body)
                    self.assertEqual(body, wrapped('{"time": 500}'))
                    self.assertEqual(hdrs.get("content-type"), "application/json")
                    self.assertEqual(hdrs.get("x-tailcut-attempts"), "3")
            self.assertEqual(srv.proc.wait(10 * th.SLOW), 0, srv.stderr_text())
            self.assertLess(time.monotonic() - t_term, 0.5 + 5 * th.SLOW)
        finally:
            srv.kill()

    def test_second_signal_exits_1_at_once(self):
        srv = serve(self.up.port, "--drain-timeout", "30000")
        try:
            self.up.scenario([HANG, HANG, HANG])
            socks = self._send(srv.port, 1, "/api/smart?timeout=20000")
            st = self.up.stats_when(lambda s: s["in_flight"] >= 1)
            self.assertGreaterEqual(st["in_flight"], 1, st)
            srv.proc.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            self.assertIsNone(srv.proc.poll(), "exited before the drain finished")
            t0 = time.monotonic()
            srv.proc.send_signal(signal.SIGTERM)
            self.assertEqual(srv.proc.wait(10 * th.SLOW), 1, srv.stderr_text())
            self.assertLess(time.monotonic() - t0, 2 * th.SLOW)
            for s in socks:
                s.close()
            # The upstream sees its held requests end (cancelled or dropped with the process).
            st = self.up.stats_when(lambda s: s["in_flight"] == 0, 5 * th.SLOW)
            self.assertEqual(st["in_flight"], 0, st)
        finally:
            srv.kill()


if __name__ == "__main__":
    watchdog = th.Watchdog(180 * th.SLOW)
    unittest.main(verbosity=2)
