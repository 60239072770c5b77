#!/usr/bin/env python3
"""`tailcut serve` against an https:// upstream (`--upstream-ca`).

Makes a throw-away CA (and an unrelated second CA) and a server certificate for IP 127.0.0.1
with the openssl CLI in a temp dir, serves HTTPS from a Python http.server + ssl on 127.0.0.1
port 0 in a thread (GET answers 200 {"ok":true}), and checks that:
  - with --upstream-ca CA.pem, /api/smart, /api/first and /api/all succeed through TLS;
  - with no --upstream-ca (system store) or an unrelated CA, every attempt fails: 502 with
    "attempts":3, counted as outcome connect_error in /metrics, and no request reaches the
    handler;
  - an unreadable --upstream-ca file is a bad flag value (exit 2, one line naming it).
"""
import json
import os
import shutil
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import tchelpers as th  # noqa: E402
from smart_fixture import Metrics, request  # noqa: E402

BODY = th.TLS_BODY
TLSServer = th.TLSServer


class HttpsUpstream(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = th.tls_dir("tailcut-https-", "other")
        cls.httpd = TLSServer(th.tls_server_context(cls.dir))
        cls.url = "https://127.0.0.1:%d/" % cls.httpd.server_address[1]
        cls.thread = th.serve_in_thread(cls.httpd)

    @classmethod
    def tearDownClass(cls):
        th.stop_server(cls.httpd, cls.thread)
        shutil.rmtree(cls.dir, ignore_errors=True)

    def path(self, name):
        return os.path.join(self.dir, name)

    def serve(self, *args):
        # --metadata-upstream set too, so no embedded simulator starts.
        return th.Proc("serve", "--workers", "1", "--upstream", self.url,
                       "--metadata-upstream", self.url, "--access-log", "off", *args)

    def requests_seen(self):
        with self.httpd.lock:
            return len(self.httpd.paths)

    def handshake_failures(self):
        with self.httpd.lock:
            return self.httpd.handshake_failures

    def test_trusted_ca_succeeds(self):
        # A hedge delay no TLS handshake reaches, even under a loaded sanitizer build: smart makes
        # exactly one attempt.
        with self.serve("--upstream-ca", self.path("ca.pem"), "--hedge-delay", "20000") as srv:
            before = Metrics(srv.port)
            seen = self.requests_seen()
            r = request(srv.port, "GET", "/api/smart?timeout=10000")
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.headers.get("content-type"), "application/json")
            self.assertEqual(r.headers.get("x-tailcut-attempts"), "1")
            self.assertEqual(r.body, b'{"success":true,"response":' + BODY + b"}")
            r = request(srv.port, "GET", "/api/first?timeout=10000")
            self.assertEqual((r.status, r.body), (200, b'{"success":true,"response":'
                                                  + BODY + b"}"), r)
            r = request(srv.port, "GET", "/api/all?timeout=10000")
            self.assertEqual((r.status, r.body), (200, b"[" + b",".join([BODY] * 3) + b"]"), r)
            # /api/first's two losers are cancelled at once when the winner is known: each may or
            # may not have reached the server by then (its handshake can still be under way).
            self.assertIn(self.requests_seen() - seen, range(1 + 1 + 3, 1 + 3 + 3 + 1))
            with self.httpd.lock:
                self.assertEqual(set(self.httpd.paths[seen:]), {"/"})
            after = Metrics(srv.port)
            ok = after.delta(before, "tailcut_upstream_attempts_total", outcome="success")
            # /api/first's two losers may have finished or been cancelled: 5 to 7 successes.
            cancelled = after.delta(before, "tailcut_upstream_attempts_total",
                                    outcome="cancelled")
            self.assertGreaterEqual(ok, 5)
            self.assertEqual(ok + cancelled, 7)
            self.assertEqual(after.delta(before, "tailcut_upstream_attempts_total",
                                         outcome="connect_error"), 0)

    def check_untrusted(self, *args):
        with self.serve(*args) as srv:
            before = Metrics(srv.port)
            seen = self.requests_seen()
            fails = self.handshake_failures()
            r = request(srv.port, "GET", "/api/smart?timeout=10000")
            self.assertEqual(r.status, 502, r)
            self.assertEqual(r.headers.get("content-type"), "application/json")
            self.assertEqual(r.headers.get("x-tailcut-attempts"), "3")
            doc = json.loads(r.body)
            self.assertEqual((doc["success"], doc["error"], doc["attempts"]),
                             (False, "upstream_failed", 3), r)
            after = Metrics(srv.port)
            self.assertEqual(after.delta(before, "tailcut_upstream_attempts_total",
                                         outcome="connect_error"), 3)
            self.assertEqual(after.delta(before, "tailcut_upstream_attempts_total",
                                         outcome="success"), 0)
            self.assertEqual(after.delta(before, "tailcut_requests_total", endpoint="smart",
                                         status="502"), 1)
            self.assertEqual(self.requests_seen(), seen, "a request got past a failed handshake")
            # ... and the attempts did reach the server: three handshakes were refused.
            self.assertTrue(th.wait_for(lambda: self.handshake_failures() - fails >= 3,
                                        5 * th.SLOW), self.handshake_failures() - fails)

    def test_system_store_rejects_throwaway_ca(self):
        self.check_untrusted()

    def test_unrelated_ca_rejects(self):
        self.check_untrusted("--upstream-ca", self.path("other.pem"))

    def test_unreadable_ca_file_is_a_bad_flag(self):
        missing = self.path("no-such-ca.pem")
        out = subprocess.run([th.Proc.bin(), "serve", "--listen", "127.0.0.1:0",
                              "--upstream", self.url, "--upstream-ca", missing],
                             capture_output=True, text=True, timeout=30 * th.SLOW)
        self.assertEqual(out.returncode, 2, out.stderr)
        lines = out.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, out.stderr)
        self.assertIn("upstream-ca", lines[0])


if __name__ == "__main__":
    watchdog = th.Watchdog(120 * th.SLOW)
    unittest.main(verbosity=2)
