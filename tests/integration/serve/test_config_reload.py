#!/usr/bin/env python3
"""`tailcut serve --config FILE`: the global keys a reload changes (CONTRACT section 8: every
global key but listen, admin_listen and workers applies to new connections and requests), each
under a steady load that must lose no request: access_log_format text -> json (the next request's
line is json, the earlier lines stay text), access_log moved to another file, max_connections
lowered (the next connection over it gets 503 overloaded), http_engine and upstream_connections
switched (requests are still answered, now on the connections of a new client, and the old
client's connections close once nothing uses them), a route's max_body_bytes raised past the
largest at start. A route with discovery: dns added by reload is still refused, with its message.

Timing: bounds are generous (stretched under sanitizers by th.SLOW) and nothing asserts speed.
"""
import http.server
import json
import os
import re
import signal
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import tchelpers as th  # noqa: E402


class _Recording(th.QuietHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the client's pooled connections last

    def do_GET(self):
        up = self.server
        with up.lock:
            up.ports.append(self.client_address[1])
        self.send_body(200, b'{"ok":true}')

    def finish(self):
        up = self.server
        with up.lock:
            up.closed.append(self.client_address[1])
        try:
            super().finish()
        except OSError:
            pass  # an attempt cancelled by a reset


class RecordingUpstream(http.server.ThreadingHTTPServer):
    """Answers every GET 200 JSON and records the client port of each request and of each
    connection that closed."""
    daemon_threads = True
    block_on_close = False

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Recording)
        self.port = self.server_address[1]
        self.lock = threading.Lock()
        self.ports, self.closed = [], []
        self.thread = th.serve_in_thread(self)

    def handle_error(self, request, client_address):
        pass  # an attempt tailcut cancelled (a reset): not the test's business

    def seen(self):
        with self.lock:
            return list(self.ports), list(self.closed)

    def stop(self):
        th.stop_server(self, self.thread)


class Load:
    """A tiny load generator: `threads` loops of GET path until stopped (bounded in count and
    time); every answer that is not 200, and every connection error, is a failure."""

    def __init__(self, port, path="/api/smart", threads=3):
        self.port, self.path = port, path
        self.failures, self.done = [], 0
        self.lock = threading.Lock()
        self.stop_ev = threading.Event()
        self.threads = [threading.Thread(target=self.loop) for _ in range(threads)]
        for t in self.threads:
            t.start()

    def loop(self):
        deadline = time.monotonic() + 90 * th.SLOW
        while not self.stop_ev.is_set() and time.monotonic() < deadline and self.done < 50000:
            try:
                st, _, body = th.http_request(self.port, "GET", self.path, timeout=10 * th.SLOW)
                bad = None if st == 200 else (st, body)
            except OSError as e:
                bad = repr(e)
            with self.lock:
                self.done += 1
                if bad is not None:
                    self.failures.append(bad)

    def stop(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join(30 * th.SLOW)
        return self.failures, self.done


class ReloadGlobalsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dog = th.Watchdog(300 * th.SLOW)
        cls.tmp = tempfile.TemporaryDirectory(prefix="tailcut-reload-")

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()
        cls.dog.cancel()

    def path(self, name):
        return os.path.join(self.tmp.name, name)

    def write(self, name, text):
        with open(self.path(name), "w") as f:
            f.write(text)
        return self.path(name)

    def reload(self, s, name, text, n):
        """Writes the file, sends SIGHUP and waits for the n-th `configuration reloaded` line."""
        self.write(name, text)
        s.proc.send_signal(signal.SIGHUP)
        self.assertTrue(th.wait_for(
            lambda: s.stderr_text().count("configuration reloaded") >= n, 10 * th.SLOW),
            s.stderr_text())
        self.assertNotIn("not reloaded", s.stderr_text())

    def marked(self, port, mark):
        """One request whose target carries mark; returns its status."""
        return th.http_request(port, "GET", "/api/smart?mark=" + mark, timeout=10 * th.SLOW)[0]

    def line_of(self, log, mark):
        """The access-log line of the request marked mark, once it is written (the log is
        flushed once a second), else None."""
        found = []

        def look():
            try:
                with open(log) as f:
                    found[:] = [x for x in f.read().splitlines() if "mark=" + mark in x]
            except FileNotFoundError:
                return False
            return bool(found)
        th.wait_for(look, 10 * th.SLOW)
        return found[0] if found else None

    def test_log_format_and_file_change_on_reload(self):
        up = RecordingUpstream()
        log1, log2 = self.path("one.log"), self.path("two.log")
        conf = ("access_log: %s\naccess_log_format: %s\n"
                "routes:\n  - {prefix: /api/, kind: api, upstreams: ['http://127.0.0.1:%d/w']}\n")
        try:
            path = self.write("log.yaml", conf % (log1, "text", up.port))
            with th.Proc("serve", "--config", path, "--workers", "2") as s:
                load = Load(s.port)
                self.assertEqual(self.marked(s.port, "before"), 200)
                text = self.line_of(log1, "before")
                self.assertIsNotNone(text)
                self.assertIn('"GET /api/smart?mark=before HTTP/1.1" 200 ', text)
                self.reload(s, "log.yaml", conf % (log1, "json", up.port), 1)
                self.assertEqual(self.marked(s.port, "after"), 200)
                line = self.line_of(log1, "after")
                self.assertIsNotNone(line)
                j = json.loads(line)  # the next request's line is json
                self.assertEqual((j["target"], j["status"], j["route"]),
                                 ("/api/smart?mark=after", 200, "/api/"))
                # the line written before the reload stays as it was
                self.assertEqual(self.line_of(log1, "before"), text)
                # another file: the next request's line goes there, none to the old one
                self.reload(s, "log.yaml", conf % (log2, "json", up.port), 2)
                self.assertEqual(self.marked(s.port, "moved"), 200)
                self.assertEqual(json.loads(self.line_of(log2, "moved"))["status"], 200)
                failures, done = load.stop()
                self.assertEqual(failures, [])
                self.assertGreater(done, 10)
                _, m = self.metrics(s.port)
                self.assertEqual(th.metric(m, "tailcut_config_reloads_total", result="ok"), 2)
            with open(log1) as f:
                self.assertNotIn("mark=moved", f.read())
            # every line of the load is whole, text or json, never cut or mixed
            text_re = re.compile(r'^\S+ \S+ "GET \S+ HTTP/1\.1" \d{3} \d+ \d+ \S+ [0-9a-f]{32}$')
            for log in (log1, log2):
                with open(log) as f:
                    for x in f.read().splitlines():
                        if x.startswith("{"):
                            self.assertIn("status", json.loads(x))
                        else:
                            self.assertRegex(x, text_re)
        finally:
            up.stop()

    def metrics(self, port):
        st, _, body = th.http_request(port, "GET", "/metrics", timeout=10 * th.SLOW)
        self.assertEqual(st, 200)
        return body.decode(), th.parse_metrics(body.decode())

    def test_max_connections_lowered_on_reload(self):
        up = RecordingUpstream()
        conf = ("access_log: off\nmax_connections: %d\n"
                "routes:\n  - {prefix: /api/, kind: api, upstreams: ['http://127.0.0.1:%d/w']}\n")
        held, cap = [], 8
        try:
            path = self.write("conns.yaml", conf % (100, up.port))
            with th.Proc("serve", "--config", path, "--workers", "2") as s:
                load = Load(s.port, threads=2)  # within the new cap too: no request may fail
                time.sleep(0.2)
                self.reload(s, "conns.yaml", conf % (cap, up.port), 1)
                time.sleep(0.2)
                failures, _ = load.stop()
                self.assertEqual(failures, [])
                # cap kept-alive connections, each answered once: the cap is full (a connection
                # of the load the server has not seen close yet may still count: retried)
                deadline = time.monotonic() + 10 * th.SLOW
                while len(held) < cap and time.monotonic() < deadline:
                    c = th.connect(s.port, timeout=10 * th.SLOW)
                    c.sendall(b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n")
                    if th.read_response(c)[0] == 200:
                        held.append(c)
                    else:
                        c.close()
                        time.sleep(0.05)
                self.assertEqual(len(held), cap)
                c = th.connect(s.port, timeout=10 * th.SLOW)
                held.append(c)
                st, _, body = th.read_response(c)
                self.assertEqual(st, 503)
                self.assertIn(b"overloaded", body)
                # one goes: the next connection is served
                for c in held:
                    c.close()
                held = []
                self.assertTrue(th.wait_for(
                    lambda: th.http_request(s.port, "GET", "/healthz")[0] == 200, 10 * th.SLOW))
                # counted on the workers' tick
                self.assertTrue(th.wait_for(lambda: th.metric(
                    self.metrics(s.port)[1], "tailcut_connections_rejected_total",
                    reason="max_connections") >= 1, 10 * th.SLOW))
        finally:
            for c in held:
                c.close()
            up.stop()

    def test_http_engine_switched_on_reload(self):
        up = RecordingUpstream()
        conf = ("access_log: off\nhttp_engine: %s\nupstream_connections: %d\n"
                "routes:\n  - {prefix: /api/, kind: api, upstreams: ['http://127.0.0.1:%d/w']}\n")
        try:
            path = self.write("engine.yaml", conf % ("native", 4, up.port))
            with th.Proc("serve", "--config", path, "--workers", "2") as s:
                load = Load(s.port)
                self.assertTrue(th.wait_for(lambda: len(up.seen()[0]) >= 20, 20 * th.SLOW))
                before, _ = up.seen()
                self.reload(s, "engine.yaml", conf % ("curl", 4, up.port), 1)
                time.sleep(0.5)
                self.reload(s, "engine.yaml", conf % ("curl", 2, up.port), 2)
                time.sleep(0.5)
                failures, done = load.stop()
                self.assertEqual(failures, [])
                self.assertEqual(self.marked(s.port, "x"), 200)
                ports, closed = up.seen()
                # the requests after the switch came on connections of a new client ...
                self.assertTrue(set(ports[len(before):]) - set(before))
                # ... and the old client's connections were closed once nothing used them
                self.assertTrue(th.wait_for(
                    lambda: set(before) <= set(up.seen()[1]), 10 * th.SLOW), up.seen())
        finally:
            up.stop()

    def test_route_body_limit_raised_on_reload(self):
        up = RecordingUpstream()
        conf = ("access_log: off\nroutes:\n  - {prefix: /api/, kind: api, max_body_bytes: %d,\n"
                "     upstreams: ['http://127.0.0.1:%d/w']}\n")
        try:
            path = self.write("body.yaml", conf % (100, up.port))
            with th.Proc("serve", "--config", path) as s:
                body = b"x" * 1000
                st = th.http_request(s.port, "GET", "/api/first", body=body)[0]
                self.assertEqual(st, 413)
                self.reload(s, "body.yaml", conf % (4096, up.port), 1)
                self.assertEqual(th.http_request(s.port, "GET", "/api/first", body=body)[0], 200)
        finally:
            up.stop()

    def test_discovery_added_on_reload_is_refused(self):
        up = RecordingUpstream()
        route = "  - {prefix: /api/, kind: api, upstreams: ['http://127.0.0.1:%d/w']}\n" % up.port
        try:
            path = self.write("dns.yaml", "routes:\n" + route)
            with th.Proc("serve", "--config", path, "--access-log", "off") as s:
                self.write("dns.yaml", "routes:\n" + route +
                           "  - {prefix: /d/, kind: api, discovery: dns,\n"
                           "     upstreams: ['http://localhost:%d/w']}\n" % up.port)
                s.proc.send_signal(signal.SIGHUP)
                self.assertTrue(th.wait_for(lambda: "not reloaded" in s.stderr_text(),
                                            10 * th.SLOW))
                self.assertIn("tailcut: configuration not reloaded: %s: routes[1].discovery: a "
                              "route with discovery: dns cannot be added or changed on reload "
                              "(restart tailcut)\n" % path, s.stderr_text())
                self.assertEqual(th.http_request(s.port, "GET", "/api/first")[0], 200)
        finally:
            up.stop()


if __name__ == "__main__":
    unittest.main(verbosity=2)
