#!/usr/bin/env python3
"""Integration tests of the smart API of `tailcut serve` (docs/serve.md): /api/smart's hedging
policy and the timeout parameter, driven by scripted `tailcut upstream` scenarios
(docs/upstream.md). /api/first, /api/all, /api/within-timeout and the rest of the API are in
test_smart_modes.py, drain in test_smart_drain.py; the servers and helpers in smart_fixture.py.

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
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import tchelpers as th  # noqa: E402
from smart_fixture import (  # noqa: E402
    EARLY, HEDGE_DELAY, SLACK, request, Metrics, serve, step, HANG, RESET, wrapped, SmartBase)


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
    # after reading the request, as a server that timed it out at that moment does): the attempt
    # failed, and is never sent once more behind the policy's back (CONTRACT section 1). With no
    # extra attempts to fire, that is a 502 after one attempt, and the upstream saw one request.
    # test_attempt_once.py has the same with hedges, on both engines.
    def test_reset_on_reused_connection_is_a_failed_attempt(self):
        with serve(self.up.port, "--hedge-extra", "0") as srv:
            before = Metrics(srv.port)
            for i in range(5):
                self.up.reset()
                # One success leaves an idle keep-alive connection in the pool.
                self.assert_api(request(srv.port, "GET", "/api/smart?timeout=5000"), 200, 1)
                self.up.reset()
                self.up.scenario([RESET, step(0, '{"resent":true}')])
                r = request(srv.port, "GET", "/api/smart?timeout=5000")
                self.assert_upstream_failed(r, 1)
                time.sleep(0.1)  # a copy sent on a fresh connection would have arrived by now
                s = self.up.stats()
                self.assertEqual((s["work_requests"], s["scenario_pending"]), (1, 1),
                                 "try %d: %r" % (i, s))
            after = Metrics(srv.port)
            self.assertEqual(after.delta(before, "tailcut_upstream_stale_retries_total"), 0)
            self.assertEqual(after.delta(before, "tailcut_upstream_attempts_total",
                                         outcome="reset"), 5)

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



if __name__ == "__main__":
    watchdog = th.Watchdog(180 * th.SLOW)
    unittest.main(verbosity=2)
