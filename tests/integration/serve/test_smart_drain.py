#!/usr/bin/env python3
"""Integration tests of `tailcut serve`'s drain on SIGTERM with requests in flight against a
slow upstream, and of a second signal during the drain. Helpers: smart_fixture.py.
"""
import os
import signal
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import tchelpers as th  # noqa: E402
from smart_fixture import (  # noqa: E402
    Upstream, serve, HANG, wrapped)


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
