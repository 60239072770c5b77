#!/usr/bin/env python3
"""Integration tests of `tailcut serve`'s /api/first, /api/all and /api/within-timeout, what
counts as a successful attempt, cancellation, and the metrics, headers and methods of the API,
driven by scripted `tailcut upstream` scenarios (docs/upstream.md). The servers and helpers are
smart_fixture.py's, as for test_smart.py (see there for how a case reads its attempts).
"""
import json
import os
import socket
import struct
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import tchelpers as th  # noqa: E402
from smart_fixture import (  # noqa: E402
    EARLY, HEDGE_DELAY, MAX_BODY, SLACK, request, Metrics, step, HANG, wrapped, SmartBase)


class ModesApi(SmartBase):
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



if __name__ == "__main__":
    watchdog = th.Watchdog(180 * th.SLOW)
    unittest.main(verbosity=2)
