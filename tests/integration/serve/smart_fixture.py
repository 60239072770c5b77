"""Shared fixture of the integration tests of the smart API (test_smart*.py): scripted
`tailcut upstream` processes, a `tailcut serve` pointing at them, one-request helpers and the
base class that starts both for a whole class and resets the upstream before each case.

Timing: lower bounds are the semantics (a hedge is never fired before --hedge-delay, a deadline
never passes early) and are exact up to libuv's millisecond timer granularity; upper bounds are
generous and stretched under sanitizers (th.SLOW). Nothing asserts speed.
"""
import json
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
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
        cls.srv = th.start_in_front(cls.up.kill, lambda: serve(cls.up.port, *cls.serve_args))
        # Warm-up: one pooled upstream connection, and the first-request costs paid.
        r = request(cls.srv.port, "GET", "/api/smart?timeout=5000")
        assert r.status == 200, r

    @classmethod
    def tearDownClass(cls):
        th.stop_in_front(cls.srv, lambda: cls.up.stop(expect=0))

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
